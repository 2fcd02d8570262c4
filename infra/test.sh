#!/usr/bin/env bash
# The README's second command: runs the full test suite against a real broker and PostgreSQL.
# Installs and starts what the tests need (broker, database, Python client for the Confluent
# interoperability check), then runs every test of the workspace.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
"$REPO_ROOT/infra/install-tansu.sh"
"$REPO_ROOT/infra/db-setup.sh"

# A broker of its own for the suite, with fresh storage each run: the tests create hundreds of
# topics, and a long-lived development broker slowed down by them (or by large imports) made
# the timing-sensitive crash and rebalance tests fail. Stopped when the suite ends.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
test_port="${PASSERELLE_TEST_BROKER_PORT:-19292}"
while port_open "$test_port"; do test_port=$((test_port + 1)); done
test_broker_dir="$VAR_DIR/tansu-test"
rm -rf "$test_broker_dir" && mkdir -p "$test_broker_dir"
(cd "$test_broker_dir" && exec "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$test_port" --advertised-listener-url "tcp://127.0.0.1:$test_port" \
    --storage-engine "sqlite://tansu.db" >"$test_broker_dir/tansu.log" 2>&1) &
test_broker_pid=$!
trap 'kill "$test_broker_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do port_open "$test_port" && break; sleep 0.2; done
port_open "$test_port" || { say "the test broker did not start; see $test_broker_dir/tansu.log"; exit 1; }
say "test broker up on 127.0.0.1:$test_port (fresh storage in $test_broker_dir)"

# Confluent's own Python client, to prove standard tools decode our topics; schemathesis for the
# OpenAPI document; Playwright and axe-core to drive the console in Debian's Chromium (Playwright
# cannot download its own browser here: the tests launch /usr/bin/chromium).
venv="$PASSERELLE_CACHE/venv"
if ! "$venv/bin/python" -c "import confluent_kafka, fastavro, httpx, schemathesis, playwright, axe_playwright_python" 2>/dev/null; then
  say "installing confluent-kafka, schemathesis, playwright and axe-playwright-python (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "confluent-kafka[avro]>=2.12" fastavro httpx attrs cachetools authlib "schemathesis>=4.3,<5" \
    "playwright>=1.49,<2" "axe-playwright-python>=0.1.4"
fi
if [ ! -x /usr/bin/chromium ]; then
  say "installing Debian's Chromium for the console's browser tests"
  as_root=""; [ "$(id -u)" = 0 ] || as_root="sudo"
  $as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { $as_root apt-get update -qq && $as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
fi
# The DSFR the hub serves to the console.
"$REPO_ROOT/infra/web-assets.sh"
# The INSEE commune list the commune table is checked against.
"$REPO_ROOT/infra/communes.sh"
export PASSERELLE_TEST_PYTHON="$venv/bin/python"
export PASSERELLE_TEST_BOOTSTRAP="127.0.0.1:$test_port"
export PASSERELLE_TEST_PG="$PG_URL_BASE"
export PASSERELLE_TANSU_BIN="$TANSU_BIN"
# Every fold that goes on from a stored dossier or household is folded again in full and
# compared; a difference stops the worker (docs/projector.md, "Incremental fold").
export PASSERELLE_FOLD_CHECK=1

# Ops files: Debian's promtool must accept the Prometheus configuration and the alert rules
# (the names they use are checked against the exported metrics by tests/tests/observability.rs).
if ! command -v promtool >/dev/null 2>&1; then
  say "installing promtool (Debian package prometheus)"
  as_root=""; [ "$(id -u)" = 0 ] || as_root="sudo"
  $as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { $as_root apt-get update -qq && $as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
promtool check config "$REPO_ROOT/infra/prometheus/prometheus.yml"
promtool check rules "$REPO_ROOT/infra/prometheus/alerts.yml"
# Each alert fires on the series it is for and stays silent on a healthy one.
promtool test rules "$REPO_ROOT/infra/prometheus/alerts_test.yml"

# Some tests run the hub as a separate process (to SIGKILL it): build the binary first.
cargo build --bin passerelle

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
