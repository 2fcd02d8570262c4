#!/usr/bin/env bash
# Fuzzes the hub's entry points with cargo-fuzz (libFuzzer, nightly), outside CI:
#   infra/fuzz.sh [RUNS] [TARGET...]      RUNS per target (default 1,000,000); all targets by default
# Targets (fuzz/fuzz_targets/): cnaf_flux, ft_csv, normalise, avro_envelope, jwt_habilitations.
# Each starts from the committed seeds (fuzz/corpus/<target>: the CNAF reader's is the test
# fixture, tests/fixtures/cnaf/RSABEM.xml); what it learns stays in var/fuzz/<target>. A crash stops the target, leaves its input
# in fuzz/artifacts/<target>/ and fails the script: make it a regression test (docs/fuzzing.md).
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
runs="${1:-1000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cnaf_flux ft_csv normalise avro_envelope jwt_habilitations)

rustup toolchain list | grep -q nightly || { say "the nightly toolchain is needed (rustup toolchain install nightly)"; exit 1; }
fuzz_root="$PASSERELLE_CACHE/cargo-fuzz"
if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
  say "installing cargo-fuzz into $fuzz_root (one time)"
  cargo install --quiet --locked --root "$fuzz_root" cargo-fuzz
fi
export PATH="$fuzz_root/bin:$PATH"

# The binary seeds (protobuf messages, framed Avro records, tokens) are committed; regenerate them
# with the test venv's Python when it is there.
if [ -x "$PASSERELLE_CACHE/venv/bin/python" ]; then
  "$PASSERELLE_CACHE/venv/bin/python" fuzz/seeds.py
fi

failed=0
summary=()
for target in "${targets[@]}"; do
  work="$VAR_DIR/fuzz/$target"
  mkdir -p "$work"
  seeds=("$REPO_ROOT/fuzz/corpus/$target")
  say "fuzzing $target: $runs runs"
  log="$VAR_DIR/fuzz/$target.log"
  # -rss_limit_mb: a reader that let a file fill memory is a crash; -timeout: so is a hang.
  if cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$work" "${seeds[@]}" -- \
      -runs="$runs" -rss_limit_mb=2048 -timeout=10 -max_len=262144 -print_final_stats=1 >"$log" 2>&1; then
    outcome="no crash"
  else
    outcome="CRASH (see $log and fuzz/artifacts/$target/)"
    failed=1
  fi
  executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  seconds=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  summary+=("$(printf '%-18s %10s executions in %5s s, corpus %5s inputs: %s' "$target" "${executed:-?}" "${seconds:-?}" "$corpus" "$outcome")")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
