#!/usr/bin/env bash
# Installs the Kafka-compatible broker tansu once, into a cache outside the repository
# (about 10 minutes on a 2-core machine the first time; instant afterwards).
source "$(dirname "$0")/lib.sh"
if [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  exit 0
fi
say "installing tansu $TANSU_VERSION into $TANSU_ROOT (one time, about 10 minutes; log: $PASSERELLE_CACHE/tansu-install.log)"
mkdir -p "$PASSERELLE_CACHE"
# --locked: without it tansu 0.6 does not compile; libsql,dynostore: its storage engines.
if ! cargo install tansu --version "=$TANSU_VERSION" --locked --features libsql,dynostore \
     --root "$TANSU_ROOT" >"$PASSERELLE_CACHE/tansu-install.log" 2>&1; then
  tail -20 "$PASSERELLE_CACHE/tansu-install.log" >&2
  say "tansu failed to install; see $PASSERELLE_CACHE/tansu-install.log"
  exit 1
fi
say "tansu installed"
