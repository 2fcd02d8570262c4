#!/usr/bin/env bash
# The README's first command: starts the whole hub with demo data on a fresh machine.
# Installs the broker once (cached), starts it, prepares the database and the development
# secrets, builds and runs `passerelle up --demo`.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
"$REPO_ROOT/infra/broker.sh" start
"$REPO_ROOT/infra/db-setup.sh"
"$REPO_ROOT/infra/dev-secrets.sh"
"$REPO_ROOT/infra/web-assets.sh"
say "building passerelle (the first build takes a few minutes)"
cargo build --bin passerelle
"$REPO_ROOT/infra/dev-pki.sh"
exec "$REPO_ROOT/target/debug/passerelle" --config "$REPO_ROOT/infra/dev/passerelle.toml" up --demo "$@"
