#!/usr/bin/env bash
# Regenerates the screenshots of every console page into docs/console/ (PNG): runs the console's
# browser test (tests/tests/console.rs) with PASSERELLE_SCREENSHOTS set, on the same stack as the
# test suite (infra/test.sh installs and starts what it needs).
source "$(dirname "$0")/lib.sh"
out="$REPO_ROOT/docs/console"
mkdir -p "$out"
PASSERELLE_SCREENSHOTS="$out" "$REPO_ROOT/infra/test.sh" -p passerelle-e2e --test console
say "screenshots in $out:"
ls "$out" >&2
