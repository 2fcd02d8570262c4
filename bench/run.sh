#!/usr/bin/env bash
# Runs the benchmark on the local stack: a fresh tansu broker of its own (file storage, on the
# first free port from 19392, stopped at the end), a fresh database, the release build of the
# hub. Arguments go to `passerelle-bench run` (e.g. --households 20000 --api-persons 1000000).
# Prints a table and the JSON record, and adds the record to bench/history/.
source "$(dirname "$0")/../infra/lib.sh"
cd "$REPO_ROOT"
"$REPO_ROOT/infra/install-tansu.sh"
say "building the hub and the benchmark (release)"
cargo build --release --quiet --bin passerelle --bin passerelle-bench

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port="${PASSERELLE_BENCH_BROKER_PORT:-19392}"
while port_open "$port"; do port=$((port + 1)); done
broker_dir="$VAR_DIR/tansu-bench"
rm -rf "$broker_dir" && mkdir -p "$broker_dir"
(cd "$broker_dir" && exec "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "sqlite://tansu.db" >"$broker_dir/tansu.log" 2>&1) &
broker_pid=$!
trap 'kill "$broker_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do port_open "$port" && break; sleep 0.2; done
port_open "$port" || { say "the bench broker did not start; see $broker_dir/tansu.log"; exit 1; }
say "bench broker up on 127.0.0.1:$port (fresh storage in $broker_dir)"

"$REPO_ROOT/target/release/passerelle-bench" run --bootstrap "127.0.0.1:$port" "$@"
