#!/usr/bin/env bash
# The outbox, the inbox and the relay (relay/) against real servers started here on ports of
# their own: Debian's redis-server (append-only, fsync always) and nats-server (JetStream), a
# local HTTP server for webhooks (Python's), and librdkafka's built-in mock cluster standing
# in for Kafka (pg_trickle_relay_tools kafka-mock: a mock, not a Kafka broker).
# - Delivery: two churned stream tables (an aggregate, and a keyless bag whose large bodies go
#   by claim check; a TRUNCATE of the source makes FULL refreshes mid-way) relayed to every
#   sink. Each consumer's envelopes, deduplicated by key, are every message in sequence
#   order, and replaying them from an empty table gives the stream table's contents.
# - Crash: the relay is killed (-9) during churn and three times in the middle of a backlog
#   (webhook) and restarted; the Redis server is killed (-9) and restarted later: the relay's
#   reconnect backoff grows (logged), nothing is lost, copies are dropped by dedup key.
# - Backpressure: a stalled (SIGSTOPped) Redis with a backlog of 3,000 messages: the relay
#   keeps at most sink_max_inflight in flight and its memory stays flat (figures printed).
# - Bad input: malformed configuration, unknown ${ENV:VAR}, an unreachable sink, a message
#   larger than the sink takes: clear errors, nothing committed past what was delivered; the
#   secret of the configuration never appears in a log.
# - Inbox: idempotent ingestion, dead letters with reasons, a stream table over an inbox.
# - A short benchmark: messages per second per sink (ci/bench-relay runs a long one).
# RELAY_BENCH_ONLY=1 runs only the benchmark; RELAY_BENCH_MESSAGES (default 2000) sizes it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-relay
export PGOPTIONS="-c client_min_messages=warning"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || "$PG" destroy "$CLUSTER" >/dev/null
  [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
for c in redis-server nats-server python3; do
  command -v "$c" >/dev/null || die "$c is missing: run ci/setup"
done
check_py="$ROOT/ci/tests/relay_check.py"
profile=${RELAY_PROFILE:-debug}
if [ "$profile" = release ]; then
  cargo build -q --release -p pg_trickle_relay
else
  cargo build -q -p pg_trickle_relay
fi
bin="$CARGO_TARGET_DIR/$profile"
relay="$bin/pg_trickle_relay"
tools="$bin/pg_trickle_relay_tools"

"$PG" start "$CLUSTER" >/dev/null
fresh_db relay
url="host=127.0.0.1 port=$("$PG" port "$CLUSTER") dbname=relay user=postgres password=\${ENV:RELAY_TEST_SECRET}"
export RELAY_TEST_SECRET="s3cret-$RANDOM$RANDOM"

# --- servers ------------------------------------------------------------------------------------
redis_port=$(free_port)
mkdir -p "$work/redis"
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync always --dir "$work/redis" >>"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  wait_port "$redis_port"
}
start_redis
nats_port=$(free_port)
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$nats_port"
hook_port=$(free_port)
cat >"$work/hook.py" <<'EOF'
import http.server, sys, time
out = open(sys.argv[2], 'ab', buffering=0)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        if self.path.startswith('/slow'):
            time.sleep(0.02)
        out.write(body + b'\n')
        with open(sys.argv[2] + '.auth', 'w') as a:
            a.write(self.headers.get('Authorization', '') + '\n' + self.headers.get('Idempotency-Key', ''))
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
EOF
python3 "$work/hook.py" "$hook_port" "$work/hook.jsonl" 2>"$work/hook.log" &
pids+=($!)
wait_port "$hook_port"
"$tools" kafka-mock --topic agg --partitions 3 >"$work/kafka.out" 2>"$work/kafka.log" &
pids+=($!)
for i in $(seq 50); do grep -q bootstrap= "$work/kafka.out" && break; sleep 0.1; done
kafka=$(sed -n 's/^bootstrap=//p' "$work/kafka.out")
[ -n "$kafka" ] || die "the Kafka mock cluster did not start: $(cat "$work/kafka.log")"
metrics_port=$(free_port)

# relay_config FILE [SINK_TIMEOUT_MS MAX_INFLIGHT LEASE_SECONDS] — the header of a
# configuration; pipelines appended. A short lease: a relay killed -9 leaves its leases to
# expire before its successor takes them (a stopped one gives them up).
relay_config() {
  cat >"$1" <<EOF
[relay]
consumer_id = "relay-test"
metrics_listen = "127.0.0.1:$metrics_port"
poll_interval_ms = 50
sink_timeout_ms = ${2:-2000}
sink_max_inflight = ${3:-1000}
lease_seconds = ${4:-4}
log_level = "debug"

[postgres]
url = "$url"

[sinks.file]
type = "stdout"
path = "$work/stdout.jsonl"

[sinks.file_bag]
type = "stdout"
path = "$work/stdout_bag.jsonl"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:$hook_port/events"
headers = { Authorization = "Bearer \${ENV:RELAY_TEST_SECRET}" }

[sinks.redis]
type = "redis"
address = "127.0.0.1:$redis_port"
stream = "pgt:agg"

[sinks.redis_bag]
type = "redis"
address = "127.0.0.1:$redis_port"
stream = "pgt:bag"

[sinks.redis_bp]
type = "redis"
address = "127.0.0.1:$redis_port"
stream = "pgt:bp"

[sinks.nats]
type = "nats"
address = "127.0.0.1:$nats_port"
subject = "pgt.agg"
jetstream_stream = "PGT_AGG"

[sinks.kafka]
type = "kafka"
bootstrap_servers = "$kafka"
topic = "agg"
EOF
}
pipeline() { # FILE NAME STREAM_TABLE GROUP SINK
  printf '\n[[pipeline]]\nname = "%s"\nstream_table = "%s"\nconsumer_group = "%s"\nsink = "%s"\n' \
    "$2" "$3" "$4" "$5" >>"$1"
}
relay_pid=
qq() { q "$@" >/dev/null; }
start_relay() { # CONFIG LOG
  "$relay" --config "$1" >>"$2" 2>&1 &
  relay_pid=$!
  pids+=("$relay_pid")
  wait_port "$metrics_port"
}
stop_relay() {
  kill -TERM "$relay_pid"
  local rc=0
  wait "$relay_pid" || rc=$?
  [ "$rc" -eq 0 ] || die "the relay exited with $rc after SIGTERM"
}
metric() { # NAME PIPELINE
  curl -s "http://127.0.0.1:$metrics_port/metrics" | awk -v n="$1" -v p="pipeline=\"$2\"" \
    '$1 ~ "^"n"[{]" && index($1, p) { print $2 }'
}
all_consumed() { # wait until no consumer group lags
  eventually "${1:-120}" "SELECT count(*) FROM pgtrickle.outbox_status() WHERE lag > 0" 0
}
dump_claims() {
  q -c "SELECT json_build_object('outbox_id', outbox_id, 'seq', seq, 'payload', payload)
          FROM pgtrickle.pgt_outbox_payloads" >"$work/claims.jsonl"
}
dump_rows() { # ST COLUMNS FILE
  q -c "SELECT to_jsonb(x) FROM (SELECT $2 FROM $1) x" >"$3"
}
last_seq() { q -c "SELECT last_seq FROM pgtrickle.outbox_status() WHERE stream_table = 'public.$1' LIMIT 1"; }

# --- the benchmark: messages per second per sink --------------------------------------------------
bench() {
  local n=${RELAY_BENCH_MESSAGES:-2000} sink cfg t0 t1
  qq -c "CREATE TABLE bench_src (id int PRIMARY KEY, v text)"
  qq -c "SELECT pgtrickle.create_stream_table('bench', 'SELECT id, v FROM bench_src', refresh_mode => 'IMMEDIATE')"
  qq -c "SELECT pgtrickle.enable_outbox('bench')"
  for sink in file hook redis nats kafka; do
    qq -c "SELECT pgtrickle.create_consumer_group('bench', 'bench_$sink')"
  done
  # One message per statement: n single-row inserts.
  qq -c "DO \$\$ BEGIN FOR i IN 1..$n LOOP INSERT INTO bench_src VALUES (i, md5(i::text)); END LOOP; END \$\$"
  echo "relay benchmark ($profile build): $n messages of ~200 bytes per sink, sink_max_inflight 1000, batch 500"
  for sink in file hook redis nats kafka; do
    cfg="$work/bench_$sink.toml"
    relay_config "$cfg" 10000 1000 30
    pipeline "$cfg" "bench-$sink" public.bench "bench_$sink" "$sink"
    t0=$(date +%s.%N)
    start_relay "$cfg" "$work/bench.log"
    # The group's committed offset, read every 20 ms (the figure includes the relay's start).
    until [ "$(q -c "SELECT lag FROM pgtrickle.outbox_status() WHERE consumer_group = 'bench_$sink'")" = 0 ]; do
      sleep 0.02
      [ "$(date +%s)" -lt "${t0%.*}" ] || [ $(( $(date +%s) - ${t0%.*} )) -lt 600 ] || die "bench: $sink never caught up"
    done
    t1=$(date +%s.%N)
    stop_relay
    awk -v s="$sink" -v n="$n" -v a="$t0" -v b="$t1" \
      'BEGIN { printf "  %-8s %6d messages in %6.2f s: %8.0f messages/s (start-up included)\n", s, n, b - a, n / (b - a) }'
  done
}
if [ -n "${RELAY_BENCH_ONLY:-}" ]; then
  bench
  exit 0
fi

# --- delivery, crash and sink restart ---------------------------------------------------------------
q >/dev/null <<'SQL'
CREATE TABLE src (id int PRIMARY KEY, g int NOT NULL, v int);
SELECT pgtrickle.create_stream_table('agg',
  'SELECT g, count(*) AS n, sum(v) AS s, count(v) AS nv FROM src GROUP BY g',
  schedule => '1h', refresh_mode => 'DIFFERENTIAL');
SELECT pgtrickle.create_stream_table('bag',
  'SELECT g, v % 5 AS r FROM src WHERE v IS NOT NULL', schedule => '1h');
SELECT pgtrickle.enable_outbox('agg');
SELECT pgtrickle.enable_outbox('bag', inline_max_bytes => 300);
SQL
expect_error 42710 "SELECT pgtrickle.enable_outbox('agg')"
cfg="$work/relay.toml"
relay_config "$cfg"
pipeline "$cfg" agg-stdout public.agg stdout file
pipeline "$cfg" agg-hook public.agg hook hook
pipeline "$cfg" agg-redis public.agg redis redis
pipeline "$cfg" agg-nats public.agg nats nats
pipeline "$cfg" agg-kafka public.agg kafka kafka
pipeline "$cfg" bag-stdout public.bag stdout file_bag
pipeline "$cfg" bag-redis public.bag redis redis_bag
"$relay" --config "$cfg" --check >/dev/null || die "--check refused a valid configuration"
start_relay "$cfg" "$work/relay.log"
eventually 30 "SELECT count(*) FROM pgtrickle.pgt_outbox_groups" 7

churn() { # FROM TO — rounds of random writes, each followed by both refreshes
  local r
  for r in $(seq "$1" "$2"); do
    q -c "INSERT INTO src SELECT i, (random() * 6)::int,
            CASE WHEN random() < 0.15 THEN NULL ELSE (random() * 40)::int END
            FROM generate_series($r * 10, $r * 10 + 14) i ON CONFLICT (id) DO NOTHING" \
      -c "UPDATE src SET v = coalesce(v, 0) + 1 WHERE id % 7 = $r % 7" \
      -c "DELETE FROM src WHERE id % 11 = $r % 11 AND random() < 0.5"
    if [ "$r" -eq 15 ]; then
      # FULL refreshes: a truncate message, then every row.
      q -c "TRUNCATE src" -c "INSERT INTO src SELECT i, i % 6, i % 40 FROM generate_series(1, 40) i"
    fi
    q -c "SELECT pgtrickle.refresh_stream_table('agg')" -c "SELECT pgtrickle.refresh_stream_table('bag')" >/dev/null
  done
}
churn 1 10
# Kill the relay mid-stream, keep writing, start it again.
churn 11 22 &
churner=$!
sleep 1
kill -9 "$relay_pid"
wait "$churner"
start_relay "$cfg" "$work/relay.log"
# The killed relay's leases expire (lease_seconds), then the new one holds all seven.
churn 23 26
eventually 30 "SELECT count(*) FROM pgtrickle.outbox_status() WHERE lease_holder LIKE 'relay-test/$relay_pid.%'" 7
# Kill the Redis server, keep writing, start it again later: the relay backs off, reconnects.
kill -9 "$redis_pid"
churn 27 30
sleep 4
start_redis
churn 31 36
all_consumed 180
checks=$((checks + 1))
stop_relay
grep -q "SIGTERM: finishing" "$work/relay.log" || die "no graceful shutdown logged"

backoffs=$(grep 'pipeline agg-redis: sink redis' "$work/relay.log" | grep -o 'reconnecting in [0-9]* ms' | awk '{print $3}' | tr '\n' ' ')
echo "redis killed for ~5 s: the agg-redis pipeline's reconnect delays (ms): $backoffs"
[ "$(wc -w <<<"$backoffs")" -ge 3 ] || die "want at least 3 reconnect attempts, got: $backoffs"
awk '{ for (i = 2; i <= NF; i++) if ($i < $(i-1) * 1.2) exit 1 }' <<<"$backoffs" \
  || die "the backoff does not grow: $backoffs"
grep -q "pipeline agg-redis: reconnected to sink redis" "$work/relay.log" || die "no reconnect logged"
checks=$((checks + 2))

dump_claims
dump_rows agg "g, n, s, nv" "$work/agg.rows"
dump_rows bag "g, r" "$work/bag.rows"
[ "$(q -c "SELECT count(*) FROM bag")" -gt 0 ] || die "bag is empty"
la=$(last_seq agg)
lb=$(last_seq bag)
[ "$(q -c "SELECT count(*) FROM pgtrickle.pgt_outbox_payloads")" -gt 0 ] || die "no claim check was written"
python3 "$check_py" redis "$redis_port" pgt:agg >"$work/redis_agg.jsonl"
python3 "$check_py" redis "$redis_port" pgt:bag >"$work/redis_bag.jsonl"
python3 "$check_py" nats "$nats_port" PGT_AGG >"$work/nats_agg.jsonl"
"$tools" kafka-tail --bootstrap "$kafka" --topic agg --partitions 3 --idle-ms 2000 >"$work/kafka_agg.jsonl"
for c in "stdout:$work/stdout.jsonl" "webhook:$work/hook.jsonl" "redis:$work/redis_agg.jsonl" \
         "nats:$work/nats_agg.jsonl" "kafka:$work/kafka_agg.jsonl"; do
  python3 "$check_py" check "${c#*:}" "$work/claims.jsonl" "$work/agg.rows" public.agg 1 "$la" "agg via ${c%%:*}" \
    || die "agg via ${c%%:*}"
  checks=$((checks + 1))
done
for c in "stdout:$work/stdout_bag.jsonl" "redis:$work/redis_bag.jsonl"; do
  python3 "$check_py" check "${c#*:}" "$work/claims.jsonl" "$work/bag.rows" public.bag 1 "$lb" "bag via ${c%%:*}" \
    || die "bag via ${c%%:*}"
  checks=$((checks + 1))
done
grep -c '"op": "truncate"' "$work/stdout.jsonl" >/dev/null || die "no truncate message reached the consumer"
# The webhook got the interpolated secret as a header, and the dedup key as Idempotency-Key.
[ "$(head -1 "$work/hook.jsonl.auth")" = "Bearer $RELAY_TEST_SECRET" ] || die "the webhook's Authorization header"
sed -n 2p "$work/hook.jsonl.auth" | grep -Eq '^relay:[0-9]+:[0-9]+$' || die "the webhook's Idempotency-Key"
checks=$((checks + 3))

# --- a statement of 25,000 rows: messages of at most 10,000 rows ------------------------------------------
qq -c "CREATE TABLE src5 (id int PRIMARY KEY, v text)" \
  -c "SELECT pgtrickle.create_stream_table('wide', 'SELECT id, v FROM src5', refresh_mode => 'IMMEDIATE')" \
  -c "SELECT pgtrickle.enable_outbox('wide')" -c "SELECT pgtrickle.create_consumer_group('wide', 'wide')" \
  -c "INSERT INTO src5 SELECT i, md5(i::text) FROM generate_series(1, 25000) i" \
  -c "UPDATE src5 SET v = 'u' WHERE id <= 12000"
expect_eq "SELECT string_agg(deleted_count || '/' || inserted_count, ' ' ORDER BY seq) FROM pgtrickle.pgt_outbox m
             JOIN pgtrickle.pgt_outboxes o USING (outbox_id) JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
            WHERE s.pgt_name = 'wide'" "0/10000 0/10000 0/5000 10000/0 2000/0 0/10000 0/2000"
# By size: rows of ~1 kB in messages of at most 10 kB of row JSON (and 1,000 rows).
qq -c "CREATE TABLE src6 (id int PRIMARY KEY, v text)" \
  -c "SELECT pgtrickle.create_stream_table('fat', 'SELECT id, v FROM src6', refresh_mode => 'IMMEDIATE')" \
  -c "SELECT pgtrickle.enable_outbox('fat', max_message_rows => 1000, max_message_bytes => 10000)" \
  -c "INSERT INTO src6 SELECT i, repeat('f', 1000) FROM generate_series(1, 95) i"
expect_eq "SELECT count(*) >= 10, sum(inserted_count), max(inserted_count) <= 10,
                   max(payload_bytes) <= 10000 + 1100
              FROM pgtrickle.pgt_outbox m JOIN pgtrickle.pgt_outboxes o USING (outbox_id)
              JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'fat'" "t|95|t|t"
expect_error 22023 "SELECT pgtrickle.enable_outbox('fat', max_message_rows => 0)"
expect_error 22023 "SELECT pgtrickle.enable_outbox('fat', max_message_bytes => 200000000)"
cfg="$work/wide.toml"
relay_config "$cfg"
printf '\n[sinks.file_wide]\ntype = "stdout"\npath = "%s"\n' "$work/wide.jsonl" >>"$cfg"
pipeline "$cfg" wide public.wide wide file_wide
start_relay "$cfg" "$work/wide.log"
eventually 60 "SELECT lag FROM pgtrickle.outbox_status() WHERE consumer_group = 'wide'" 0
stop_relay
dump_claims
dump_rows wide "id, v" "$work/wide.rows"
python3 "$check_py" check "$work/wide.jsonl" "$work/claims.jsonl" "$work/wide.rows" public.wide 1 7 "wide via stdout" \
  || die "wide via stdout"
checks=$((checks + 1))

# --- a slow webhook (20 ms per POST) and a 1 s timeout: batches end at the timeout with what
# was acknowledged, committed, and the rest follows; no failure, no backoff ------------------------
qq -c "CREATE TABLE src7 (id int PRIMARY KEY, v text)" \
  -c "SELECT pgtrickle.create_stream_table('slow', 'SELECT id, v FROM src7', refresh_mode => 'IMMEDIATE')" \
  -c "SELECT pgtrickle.enable_outbox('slow')" -c "SELECT pgtrickle.create_consumer_group('slow', 'slow')" \
  -c "DO \$\$ BEGIN FOR i IN 1..200 LOOP INSERT INTO src7 VALUES (i, 's'); END LOOP; END \$\$"
cfg="$work/slow.toml"
relay_config "$cfg" 1000
printf '\n[sinks.hook_slow]\ntype = "webhook"\nurl = "http://127.0.0.1:%s/slow"\n' "$hook_port" >>"$cfg"
pipeline "$cfg" slow public.slow slow hook_slow
start_relay "$cfg" "$work/slow.log"
eventually 60 "SELECT lag FROM pgtrickle.outbox_status() WHERE consumer_group = 'slow'" 0
slow_failures=$(metric pgtrickle_relay_delivery_failures_total slow)
slow_polls=$(metric pgtrickle_relay_polls_total slow)
stop_relay
[ "$slow_failures" = 0 ] || die "a slow webhook counted $slow_failures failures"
[ "$slow_polls" -ge 3 ] || die "200 slow POSTs in one batch: the 1 s deadline did not cut it ($slow_polls polls)"
echo "slow webhook: 200 messages at 20 ms each, sink_timeout_ms 1000: $slow_polls polls, 0 failures"
checks=$((checks + 2))

# --- a crash in the middle of a backlog: the relay is killed while delivering ---------------------------
qq -c "CREATE TABLE src4 (id int PRIMARY KEY, v text)" \
  -c "SELECT pgtrickle.create_stream_table('crash', 'SELECT id, v FROM src4', refresh_mode => 'IMMEDIATE')" \
  -c "SELECT pgtrickle.enable_outbox('crash')" -c "SELECT pgtrickle.create_consumer_group('crash', 'crash')" \
  -c "DO \$\$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO src4 VALUES (i, md5(i::text)); END LOOP; END \$\$"
cfg="$work/crash.toml"
relay_config "$cfg"
pipeline "$cfg" crash public.crash crash hook
crashes=0
for attempt in 1 2 3; do
  start_relay "$cfg" "$work/crash.log"
  # Killed once it has committed some of the backlog and not all of it: mid-stream.
  for i in $(seq 200); do
    c=$(q -c "SELECT committed_seq FROM pgtrickle.outbox_status() WHERE consumer_group = 'crash'")
    [ "$c" -gt $((attempt * 300)) ] && break
    sleep 0.02
  done
  kill -9 "$relay_pid"
  wait "$relay_pid" 2>/dev/null || true
  [ "$c" -lt 3000 ] && crashes=$((crashes + 1))
done
start_relay "$cfg" "$work/crash.log"
eventually 120 "SELECT lag FROM pgtrickle.outbox_status() WHERE consumer_group = 'crash'" 0
stop_relay
[ "$crashes" -ge 1 ] || die "no kill landed mid-stream"
dump_rows crash "id, v" "$work/crash.rows"
echo "crash: the relay was killed -9 $crashes times in the middle of a 3000-message backlog to the webhook"
python3 "$check_py" check "$work/hook.jsonl" "$work/claims.jsonl" "$work/crash.rows" public.crash 1 3000 "crash via webhook" \
  || die "crash via webhook"
checks=$((checks + 2))

# --- backpressure: a stalled sink ----------------------------------------------------------------
q >/dev/null <<'SQL'
CREATE TABLE src2 (id int PRIMARY KEY, v text);
SELECT pgtrickle.create_stream_table('bp', 'SELECT id, v FROM src2', refresh_mode => 'IMMEDIATE');
SELECT pgtrickle.enable_outbox('bp');
SELECT pgtrickle.create_consumer_group('bp', 'bp');
DO $$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO src2 VALUES (i, repeat('p', 100)); END LOOP; END $$;
SQL
kill -STOP "$redis_pid"
cfg="$work/bp.toml"
relay_config "$cfg" 1500 50
pipeline "$cfg" bp public.bp bp redis_bp
start_relay "$cfg" "$work/bp.log"
sleep 1
rss0=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '$1 == "pgtrickle_relay_resident_memory_bytes" { print $2 }')
polls0=$(metric pgtrickle_relay_polls_total bp)
fails0=$(metric pgtrickle_relay_delivery_failures_total bp)
max_inflight=0
for i in $(seq 12); do
  f=$(metric pgtrickle_relay_inflight_messages bp)
  [ "${f:-0}" -le 50 ] || die "in flight $f > sink_max_inflight 50"
  [ "${f:-0}" -gt "$max_inflight" ] && max_inflight=$f
  sleep 0.5
done
rss1=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '$1 == "pgtrickle_relay_resident_memory_bytes" { print $2 }')
polls1=$(metric pgtrickle_relay_polls_total bp)
fails1=$(metric pgtrickle_relay_delivery_failures_total bp)
# Polling pauses while a window is in flight: one poll per failed (timed-out) window at most.
[ $((polls1 - polls0)) -le $((fails1 - fails0 + 1)) ] \
  || die "the relay polled $((polls1 - polls0)) times while $((fails1 - fails0)) windows failed"
committed=$(q -c "SELECT committed_seq FROM pgtrickle.outbox_status() WHERE consumer_group = 'bp'")
[ "$committed" -eq 0 ] || die "committed $committed while the sink was stalled"
kill -CONT "$redis_pid"
eventually 120 "SELECT lag FROM pgtrickle.outbox_status() WHERE consumer_group = 'bp'" 0
if command -v promtool >/dev/null; then
  curl -s "http://127.0.0.1:$metrics_port/metrics" | promtool check metrics >/dev/null 2>&1 \
    || die "promtool rejects the relay's /metrics: $(curl -s "http://127.0.0.1:$metrics_port/metrics" | promtool check metrics 2>&1 | head -5)"
  checks=$((checks + 1))
fi
peak=$(metric pgtrickle_relay_inflight_messages_peak bp)
failures=$(metric pgtrickle_relay_delivery_failures_total bp)
stop_relay
[ "$peak" -le 50 ] || die "in-flight peak $peak > 50"
echo "backpressure: 3000 messages pending, Redis stopped for 6 s: in flight at most $max_inflight sampled, peak $peak (sink_max_inflight 50), $failures timed-out batches redelivered; relay RSS $((rss0 / 1024)) KiB at the stall's start, $((rss1 / 1024)) KiB after 6 s"
[ "$rss1" -le $((rss0 + 8 * 1024 * 1024)) ] || die "the relay's memory grew by more than 8 MiB during the stall"
python3 "$check_py" redis "$redis_port" pgt:bp >"$work/redis_bp.jsonl"
dump_rows bp "id, v" "$work/bp.rows"
python3 "$check_py" check "$work/redis_bp.jsonl" "$work/claims.jsonl" "$work/bp.rows" public.bp 1 3000 "bp via redis after the stall" \
  || die "bp via redis"
checks=$((checks + 4))

# --- two relays with the same consumer_id fence each other ------------------------------------------
qq -c "SELECT pgtrickle.create_consumer_group('agg', 'twins')"
relay_config "$work/twin_a.toml"
pipeline "$work/twin_a.toml" twins public.agg twins file
sed "s/127.0.0.1:$metrics_port/127.0.0.1:$(free_port)/" "$work/twin_a.toml" >"$work/twin_b.toml"
start_relay "$work/twin_a.toml" "$work/twin_a.log"
a_pid=$relay_pid
eventually 20 "SELECT lease_holder LIKE 'relay-test/$a_pid.%' FROM pgtrickle.outbox_status() WHERE consumer_group = 'twins'" t
"$relay" --config "$work/twin_b.toml" >>"$work/twin_b.log" 2>&1 &
b_pid=$!
pids+=("$b_pid")
for i in $(seq 50); do grep -q "is leased by" "$work/twin_b.log" && break; sleep 0.1; done
grep -q "is leased by \"relay-test/$a_pid\." "$work/twin_b.log" || die "the second relay did not wait for the first's lease"
relay_pid=$a_pid
stop_relay # gives the lease up: the second takes it over at once, with a new epoch
grep -q "lease of consumer group \"twins\" given up" "$work/twin_a.log" || die "the first relay did not give its lease up"
eventually 20 "SELECT lease_holder LIKE 'relay-test/$b_pid.%' FROM pgtrickle.outbox_status() WHERE consumer_group = 'twins'" t
relay_pid=$b_pid
stop_relay
checks=$((checks + 2))

# --- bad input ----------------------------------------------------------------------------------------
printf '[postgres]\nurl = "x"\n[[pipeline]\nname = 1\n' >"$work/bad.toml"
out=$("$relay" --config "$work/bad.toml" 2>&1) && die "a malformed configuration was accepted"
grep -q "line 3" <<<"$out" || die "the parse error does not say where: $out"
relay_config "$work/unknown.toml"
pipeline "$work/unknown.toml" p public.agg g redis
sed -i 's/RELAY_TEST_SECRET}"$/RELAY_NO_SUCH_VARIABLE}"/' "$work/unknown.toml"
set +e; out=$("$relay" --config "$work/unknown.toml" 2>&1); rc=$?; set -e
[ "$rc" -eq 2 ] && grep -q "RELAY_NO_SUCH_VARIABLE" <<<"$out" || die "unknown variable: rc $rc, $out"
checks=$((checks + 2))
# An unreachable sink: the relay retries with backoff, is not ready, commits nothing.
qq -c "SELECT pgtrickle.create_consumer_group('agg', 'nowhere', start_at => 'earliest')"
cfg="$work/nowhere.toml"
relay_config "$cfg"
dead=$(free_port)
printf '\n[sinks.nowhere]\ntype = "redis"\naddress = "127.0.0.1:%s"\nstream = "x"\n' "$dead" >>"$cfg"
pipeline "$cfg" nowhere public.agg nowhere nowhere
start_relay "$cfg" "$work/nowhere.log"
sleep 3
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$metrics_port/ready")
[ "$code" = 503 ] || die "/ready answered $code with an unreachable sink"
grep -q "cannot connect: redis at 127.0.0.1:$dead" "$work/nowhere.log" || die "no connect error logged"
expect_eq "SELECT committed_seq FROM pgtrickle.outbox_status() WHERE consumer_group = 'nowhere'" 0
stop_relay
checks=$((checks + 2))
# A message larger than the sink takes (a NATS server with max_payload 1024): a clear error,
# nothing committed past it, the message still there.
small_port=$(free_port)
printf 'listen: "127.0.0.1:%s"\nmax_payload: 1024\n' "$small_port" >"$work/small.conf"
nats-server -c "$work/small.conf" >"$work/small.log" 2>&1 &
pids+=($!)
wait_port "$small_port"
qq -c "CREATE TABLE src3 (id int PRIMARY KEY, pad text)" \
  -c "SELECT pgtrickle.create_stream_table('big', 'SELECT id, pad FROM src3', refresh_mode => 'IMMEDIATE')" \
  -c "SELECT pgtrickle.enable_outbox('big')" \
  -c "SELECT pgtrickle.create_consumer_group('big', 'small')" \
  -c "INSERT INTO src3 VALUES (1, 'fits')" -c "INSERT INTO src3 VALUES (2, repeat('x', 3000))"
cfg="$work/small.toml"
relay_config "$cfg"
printf '\n[sinks.small]\ntype = "nats"\naddress = "127.0.0.1:%s"\nsubject = "pgt.big"\n' "$small_port" >>"$cfg"
pipeline "$cfg" big public.big small small
start_relay "$cfg" "$work/small_relay.log"
eventually 30 "SELECT committed_seq FROM pgtrickle.outbox_status() WHERE consumer_group = 'small'" 1
sleep 1
stop_relay
grep -q "message 2 is [0-9]* bytes, more than the sink takes (1024)" "$work/small_relay.log" \
  || die "no oversized-message error: $(tail -5 "$work/small_relay.log")"
expect_eq "SELECT committed_seq, lag FROM pgtrickle.outbox_status() WHERE consumer_group = 'small'" "1|1"
checks=$((checks + 1))
# The secret never reached a log (it was in the PostgreSQL URL and a webhook header).
if grep -rq "$RELAY_TEST_SECRET" "$work"/*.log; then die "a log holds the configuration's secret"; fi
checks=$((checks + 1))

# --- SQL errors of the outbox API ----------------------------------------------------------------------
churn 37 37 # messages the 'nowhere' group keeps for the groups below
expect_error 42704 "SELECT * FROM pgtrickle.poll_outbox('agg', 'no_such_group', 'c')"
expect_error 42710 "SELECT pgtrickle.create_consumer_group('agg', 'stdout')"
expect_error 42P01 "SELECT * FROM pgtrickle.poll_outbox('no_such_table', 'g', 'c')"
qq -c "CREATE TABLE nobox_src (id int PRIMARY KEY)" \
  -c "SELECT pgtrickle.create_stream_table('nobox', 'SELECT id FROM nobox_src', schedule => '1h')"
expect_error 55000 "SELECT * FROM pgtrickle.poll_outbox('nobox', 'g', 'c')"
expect_error 22023 "SELECT pgtrickle.enable_outbox('nobox', inline_max_bytes => -1)"
expect_error 22023 "SELECT pgtrickle.create_consumer_group('agg', 'x', start_at => 'middle')"
expect_error 22004 "SELECT pgtrickle.enable_outbox(NULL)"
# Leases: another consumer waits (55P03) until the lease expires, then takes it with a new
# epoch; the old holder's commit is fenced.
qq -c "SELECT pgtrickle.create_consumer_group('agg', 'lease')"
e1=$(q -c "SELECT max(lease_epoch) FROM pgtrickle.poll_outbox('agg', 'lease', 'one', 1, lease_seconds => 1)")
expect_error 55P03 "SELECT * FROM pgtrickle.poll_outbox('agg', 'lease', 'two', 1)"
sleep 1.2
e2=$(q -c "SELECT max(lease_epoch) FROM pgtrickle.poll_outbox('agg', 'lease', 'two', 1)")
[ "$e2" -eq $((e1 + 1)) ] || die "a new holder's epoch: $e1 then $e2"
expect_error 55P03 "SELECT pgtrickle.commit_outbox('agg', 'lease', 'one', $e1, 1)"
expect_eq "SELECT pgtrickle.commit_outbox('agg', 'lease', 'two', $e2, 1)" 1
# Roles: a role without SELECT on the stream table may not consume it; with SELECT it may.
qq -c "DROP ROLE IF EXISTS relay_reader" -c "CREATE ROLE relay_reader LOGIN" -c "GRANT USAGE ON SCHEMA public TO relay_reader"
expect_error 42501 "SET ROLE relay_reader; SELECT * FROM pgtrickle.poll_outbox('agg', 'lease', 'r')"
expect_error 42501 "SET ROLE relay_reader; SELECT pgtrickle.enable_outbox('nobox')"
qq -c "GRANT SELECT ON agg TO relay_reader"
expect_eq "SET ROLE relay_reader; SELECT pgtrickle.create_consumer_group('agg', 'reader'); SELECT count(*) > 0 FROM pgtrickle.poll_outbox('agg', 'reader', 'r')" "
t"
# A shadow build is refused while the outbox is there.
q -c "SET pg_trickle.shadow_build_enabled = on" >/dev/null
expect_error 0A000 "SET pg_trickle.shadow_build_enabled = on; SELECT pgtrickle.alter_stream_table('agg', query => 'SELECT g, count(*) AS n FROM src GROUP BY g', shadow_build => true)"
# disable_outbox removes its triggers, messages and groups.
qq -c "SELECT pgtrickle.disable_outbox('bag')"
expect_eq "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bag'::regclass AND tgname LIKE '__pgt_outbox%'" 0
expect_eq "SELECT count(*) FROM pgtrickle.outbox_status() WHERE stream_table = 'public.bag'" 0
# Dropping the stream table drops its outbox.
qq -c "SELECT pgtrickle.drop_stream_table('big')"
expect_eq "SELECT count(*) FROM pgtrickle.pgt_outboxes o JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'big'" 0

# --- inbox ---------------------------------------------------------------------------------------------
qq -c "SELECT pgtrickle.create_inbox('orders_in', max_payload_bytes => 200, required_keys => '{id,amount}')"
expect_eq "SELECT pgtrickle.inbox_ingest('orders_in', 'm1', '{\"id\": 1, \"amount\": 5}', 'test')" inserted
expect_eq "SELECT pgtrickle.inbox_ingest('orders_in', 'm1', '{\"id\": 1, \"amount\": 5}', 'test')" duplicate
expect_eq "SELECT pgtrickle.inbox_ingest('orders_in', 'm2', '{\"id\": 2}')" dead_letter
expect_eq "SELECT pgtrickle.inbox_ingest('orders_in', 'm3', 'not json')" dead_letter
expect_eq "SELECT pgtrickle.inbox_ingest('orders_in', NULL, '{\"id\": 3, \"amount\": 1}')" dead_letter
expect_eq "SELECT pgtrickle.inbox_ingest('orders_in', 'm4', '{\"id\": 4, \"amount\": \"$(printf 'x%.0s' $(seq 300))\"}')" dead_letter
expect_eq "SELECT string_agg(coalesce(dedup_key, '-') || ': ' || reason, '; ' ORDER BY id) FROM orders_in_dead_letter" \
  "m2: the payload lacks required key(s): amount; m3: the payload is not valid JSON: invalid input syntax for type json; -: the dedup key is missing; m4: the payload is 323 bytes long, more than max_payload_bytes (200)"
expect_error 42809 "SELECT pgtrickle.inbox_ingest('src', 'k', '{}')"
expect_error 42P07 "SELECT pgtrickle.create_inbox('orders_in')"
# A stream table over the inbox, maintained DIFFERENTIAL.
qq -c "SELECT pgtrickle.create_stream_table('inbox_totals',
        'SELECT count(*) AS n, sum((payload->>''amount'')::int) AS total FROM orders_in',
        schedule => '1h', refresh_mode => 'DIFFERENTIAL')"
q -c "SELECT pgtrickle.inbox_ingest('orders_in', 'm5', '{\"id\": 5, \"amount\": 7}')" >/dev/null
q -c "SELECT pgtrickle.inbox_ingest('orders_in', 'm5', '{\"id\": 5, \"amount\": 7}')" >/dev/null
qq -c "SELECT pgtrickle.refresh_stream_table('inbox_totals')"
expect_eq "SELECT n, total FROM inbox_totals" "2|12"
qq -c "SELECT pgtrickle.drop_stream_table('inbox_totals')" -c "SELECT pgtrickle.drop_inbox('orders_in')"
expect_eq "SELECT to_regclass('orders_in_dead_letter') IS NULL" t

bench
echo "relay: $checks checks passed"
