#!/usr/bin/env bash
# Issues development credentials under var/pki if missing: a CA, the hub's server certificate
# (localhost), and one client certificate per institution of infra/dev/institutions.toml (its
# common name is the institution's id). Production: certificates from a real PKI.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
if [ ! -s "$VAR_DIR/pki/ca.pem" ] || [ ! -s "$VAR_DIR/pki/oidc-dev-jwks.json" ] || [ "${1:-}" = "--renew" ]; then
  cargo build --quiet --bin passerelle
  "$REPO_ROOT/target/debug/passerelle" --config "$REPO_ROOT/infra/dev/passerelle.toml" dev pki --out "$VAR_DIR/pki"
fi
