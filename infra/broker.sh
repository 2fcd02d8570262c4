#!/usr/bin/env bash
# Starts (or stops) the local Kafka-compatible broker: tansu with durable SQLite file storage,
# listening and advertising on 127.0.0.1 (tansu is IPv4-only).
#   infra/broker.sh start|stop|status
source "$(dirname "$0")/lib.sh"
data="$VAR_DIR/tansu"
pidfile="$data/tansu.pid"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null; }

case "${1:-start}" in
  start)
    "$(dirname "$0")/install-tansu.sh"
    if running; then say "broker already running on 127.0.0.1:$BROKER_PORT"; exit 0; fi
    if port_open; then
      say "a broker already listens on 127.0.0.1:$BROKER_PORT (started from another checkout?): using it"
      exit 0
    fi
    mkdir -p "$data"
    # The sqlite path is taken relative to the working directory, so start from the data dir.
    # setsid: the broker is a daemon of its own, not killed with the terminal that started it.
    (cd "$data" && setsid nohup "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --storage-engine "sqlite://tansu.db" >"$data/tansu.log" 2>&1 & echo $! >"$pidfile")
    for _ in $(seq 1 100); do
      if port_open; then say "broker up on 127.0.0.1:$BROKER_PORT (data: $data)"; exit 0; fi
      sleep 0.2
    done
    say "broker did not open port $BROKER_PORT; see $data/tansu.log"; exit 1 ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; rm -f "$pidfile"; say "broker stopped"; else say "broker not running"; fi ;;
  status)
    if running; then say "broker running (pid $(cat "$pidfile"))"; else say "broker not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
