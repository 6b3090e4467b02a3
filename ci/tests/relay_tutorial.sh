#!/usr/bin/env bash
# docs/tutorials/OUTBOX_RELAY_KAFKA.md, run as written: every ```sh block between its
# relay-tutorial:begin and relay-tutorial:end markers, in order, in one bash shell at the
# repository's root (with the relay's debug build), then what the tutorial says it shows is
# checked in the output: the configuration is valid, three envelopes reach the (mock) Kafka
# topic, the relay stops with status 0, the inbox takes three messages once and dead-letters
# the bad ones, and the stream table over the inbox counts them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
doc="$ROOT/docs/tutorials/OUTBOX_RELAY_KAFKA.md"
cargo build -q -p pg_trickle_relay
script=$(mktemp)
out=$(mktemp)
trap 'rm -f "$script" "$out"; "$PG" destroy relay >/dev/null 2>&1 || true' EXIT
{
  echo 'set -euo pipefail'
  awk '/^<!-- relay-tutorial:begin/ { on = 1 } /^<!-- relay-tutorial:end -->/ { on = 0 }
       on && /^```sh$/ { code = 1; next } code && /^```$/ { code = 0; print ""; next } code { print }' "$doc"
} >"$script"
[ "$(grep -c . "$script")" -gt 20 ] || die "no tutorial blocks found in $doc"
(cd "$ROOT" && BIN="$CARGO_TARGET_DIR/debug" bash "$script") >"$out" 2>&1 || {
  cat "$out" >&2
  die "the tutorial's commands failed"
}
want() {
  grep -qE "$1" "$out" || { cat "$out" >&2; die "the tutorial's output lacks /$1/"; }
  checks=$((checks + 1))
}
want 'relay.toml is valid: 1 pipeline\(s\), 1 sink\(s\)'
want '"state":"idle"'
want '"seq": 3, .*"deleted": \[\{"total": 20.00, "customer": "bob", "n_orders": 1\}\]'
want 'pgtrickle_relay_messages_delivered_total\{pipeline="order_totals".*\} 3$'
want 'relay exit status 0'
want 'inserted \| +3'
want 'duplicate \| +3'
want 'manual-1 +\| the payload lacks required key\(s\): v, seq, dedup_key, stream_table'
want 'manual-2 +\| the payload is not valid JSON'
want 'delta \| 3'
echo "relay_tutorial: $checks checks passed"
