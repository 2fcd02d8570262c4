#!/usr/bin/env bash
# Creates development secrets under var/secrets if missing: the subject-key pepper, and the
# directory of root keys (the hub writes the first root key there; an erasure rotates it).
# Production: provide your own files (or PASSERELLE__SECRETS__*_HEX), from a vault or a KMS.
source "$(dirname "$0")/lib.sh"
dir="$VAR_DIR/secrets"
mkdir -p "$dir"; chmod 700 "$dir"
mkdir -p "$dir/root-keys"; chmod 700 "$dir/root-keys"
for name in pepper; do
  if [ ! -s "$dir/$name" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$name")
    say "created development secret $dir/$name"
  fi
done
