#!/usr/bin/env bash
# The INSEE commune list the hub's territories come from (npm @etalab/decoupage-administratif,
# pinned in services/domain/reference/communes/package-lock.json). Without argument: installs the
# package, which the test comparing services/domain/reference/communes.csv with it reads (instant
# when already installed). With --build: also regenerates the table from it; do this after
# bumping the pinned version (a new millésime of the Code officiel géographique), then review
# the diff and commit it (docs/territories.md).
source "$(dirname "$0")/lib.sh"
dir="$REPO_ROOT/services/domain/reference/communes"
package="@etalab/decoupage-administratif"
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["packages"]["node_modules/'"$package"'"]["version"])' "$dir/package-lock.json")
have=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$dir/node_modules/$package/package.json" 2>/dev/null || true)
if [ "$want" != "$have" ] || [ ! -f "$dir/node_modules/$package/data/communes.json" ]; then
  command -v npm >/dev/null 2>&1 || { say "npm is missing: install Node.js (Debian package nodejs) to fetch the commune list"; exit 1; }
  say "installing the commune list $package $want (npm) into services/domain/reference/communes/node_modules"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
if [ "${1:-}" = "--build" ]; then
  python3 "$dir/build.py"
fi
