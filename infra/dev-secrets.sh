#!/usr/bin/env bash
# Creates development secrets (subject-key pepper, master key) under var/secrets if missing.
# Production: provide your own files (or PASSERELLE__SECRETS__*_HEX), from a vault or a KMS.
source "$(dirname "$0")/lib.sh"
dir="$VAR_DIR/secrets"
mkdir -p "$dir"; chmod 700 "$dir"
for name in pepper master.key; do
  if [ ! -s "$dir/$name" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$name")
    say "created development secret $dir/$name"
  fi
done
