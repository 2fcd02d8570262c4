#!/usr/bin/env bash
# The fault campaign, outside CI (CI runs a 10-fault version: tests/tests/fault_campaign.rs):
#   infra/fault-campaign.sh [--faults N] [--persons N] [--workers N] [--seed N] [--logs DIR]
# Defaults: 100 faults, 400 persons, 2 projector workers; about 15 to 25 minutes here. It runs on
# private parts (its own PostgreSQL cluster started with pg_ctl, its own tansu broker, the hub
# and workers as processes) and kills or restarts them on a random schedule while institutions
# push and agents read; it prints the faults survived and exits 1 if any acknowledged event is
# missing or doubled in the read models, or if an answer was a server error other than
# UNAVAILABLE/503. docs/runbook.md reads its output.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
"$REPO_ROOT/infra/install-tansu.sh"
say "building the hub and the campaign"
cargo build --quiet --locked -p passerelle -p passerelle-e2e --bin passerelle --bin fault-campaign
export PASSERELLE_TANSU_BIN="$TANSU_BIN"
# The workers check every incremental fold against the full fold (docs/projector.md).
export PASSERELLE_FOLD_CHECK="${PASSERELLE_FOLD_CHECK:-1}"
exec "$REPO_ROOT/target/debug/fault-campaign" "$@"
