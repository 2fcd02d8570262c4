#!/usr/bin/env bash
# Installs the State's design system (npm @gouvfr/dsfr, pinned in services/web/package-lock.json)
# that the hub serves to the console itself (no CDN). Its install script asks for a project
# configuration the hub does not use: --ignore-scripts. Instant when already installed.
source "$(dirname "$0")/lib.sh"
web="$REPO_ROOT/services/web"
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["packages"]["node_modules/@gouvfr/dsfr"]["version"])' "$web/package-lock.json")
have=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$web/node_modules/@gouvfr/dsfr/package.json" 2>/dev/null || true)
if [ "$want" = "$have" ] && [ -f "$web/node_modules/@gouvfr/dsfr/dist/dsfr.min.css" ]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { say "npm is missing: install Node.js (Debian package nodejs) to fetch the DSFR"; exit 1; }
say "installing the DSFR $want (npm) into services/web/node_modules"
(cd "$web" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
