#!/usr/bin/env bash
# Subscriptions, heard by a real LISTEN client (a psql session of its own that polls, so that
# psql prints what arrived):
# - TEST-SUB1: exactly one notification per non-empty refresh (manual, scheduled, IMMEDIATE
#   with one per transaction, FULL), with the counts of the delta applied (checked against the
#   stream table's contents before and after); none for an empty refresh, none for a rolled
#   back one.
# - TEST-SUB2: a storm of 200 refreshes with pg_trickle.notify_coalesce_ms = 250 yields at most
#   one notification per window and subscription, and their counts add up to every refresh's
#   (checked against the contents), the last ones delivered by the scheduler.
# - A NOTIFY queue "too full" (pg_trickle.notify_queue_max_percent = 0) delays, never fails a
#   refresh nor drops a notification; pg_dump keeps the subscriptions.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-sub
dir=$(mktemp -d)
listener=
cleanup() {
  touch "$dir/stop"
  [ -z "$listener" ] || wait "$listener" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || "$PG" destroy "$CLUSTER" >/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
"$PG" start "$CLUSTER" >/dev/null
set_guc() {
  "$PG" psql "$CLUSTER" -Atq -c "ALTER SYSTEM SET $1 = $2" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 2 # the scheduler reloads at its next tick (every second)
}
set_guc pg_trickle.notify_coalesce_ms 0
fresh_db sub

# The listener: LISTENs on the channels given, then runs a trivial query every 50 ms until
# $dir/stop exists; psql prints each notification as it receives it.
listen() {
  rm -f "$dir/stop" "$dir/heard"
  {
    for c in "$@" marker; do printf 'LISTEN "%s";\n' "$c"; done
    while [ ! -e "$dir/stop" ]; do echo 'SELECT 1;'; sleep 0.05; done
  } | "$PG" psql "$CLUSTER" -d "$DB" -X -Atq >"$dir/heard" 2>&1 &
  listener=$!
  # Listening once a marker sent now arrives.
  sync_listener
}
marks=0
# Every notification committed before this call has reached the listener when it returns
# (notifications arrive in commit order; the marker is the last).
sync_listener() {
  marks=$((marks + 1))
  local deadline=$(( $(date +%s) + 30 ))
  while ! grep -q "\"marker\" with payload \"$marks\"" "$dir/heard" 2>/dev/null; do
    q -c "SELECT pg_notify('marker', '$marks')" >/dev/null
    [ "$(date +%s)" -lt "$deadline" ] || die "the listener never heard marker $marks: $(cat "$dir/heard")"
    sleep 0.2
  done
}
# heard CHANNEL — the payloads received on CHANNEL so far, one per line.
heard() {
  grep -o "Asynchronous notification \"$1\" with payload \".*\" received" "$dir/heard" |
    sed -e 's/^[^{]*//' -e 's/" received$//' || true
}
# field JSON KEY — a number (or null) from a payload.
field() { sed -n "s/.*\"$2\" : \([0-9a-z]*\).*/\1/p" <<<"$1"; }

q >/dev/null <<'SQL'
CREATE TABLE src (id int PRIMARY KEY, g int NOT NULL, v int NOT NULL);
INSERT INTO src SELECT i, i % 5, i FROM generate_series(1, 100) i;
SELECT pgtrickle.create_stream_table('keyed', 'SELECT id, g, v FROM src WHERE v % 2 = 0', schedule => '1h');
SELECT pgtrickle.create_stream_table('"By Group"', 'SELECT g, count(*) AS n, sum(v) AS s FROM src GROUP BY g', schedule => '1h');
SELECT pgtrickle.create_stream_table('full_st', 'SELECT g, max(v) AS m FROM src GROUP BY g', schedule => '1h', refresh_mode => 'FULL');
CREATE TABLE imm_src (id int PRIMARY KEY, v int NOT NULL);
SELECT pgtrickle.create_stream_table('imm', 'SELECT id, v FROM imm_src', refresh_mode => 'IMMEDIATE');
CREATE TABLE sched_src (id int PRIMARY KEY, v int NOT NULL);
SELECT pgtrickle.create_stream_table('sched', 'SELECT id, v FROM sched_src', schedule => '1s');
SELECT pgtrickle.subscribe('keyed', 'keyed');
SELECT pgtrickle.subscribe('"By Group"', 'By Group');
SELECT pgtrickle.subscribe('full_st', 'full');
SELECT pgtrickle.subscribe('imm', 'imm');
SELECT pgtrickle.subscribe('sched', 'sched');
CREATE TABLE nsrc (id int PRIMARY KEY, k int, v int);
INSERT INTO nsrc SELECT i, nullif(i % 4, 0), i FROM generate_series(1, 20) i;
SELECT pgtrickle.create_stream_table('by_k', 'SELECT k, count(*) AS n, sum(v) AS s FROM nsrc GROUP BY k', schedule => '1h');
SELECT pgtrickle.create_stream_table('total', 'SELECT count(*) AS n, sum(v) AS s FROM nsrc', schedule => '1h');
SELECT pgtrickle.subscribe('by_k', 'by_k');
SELECT pgtrickle.subscribe('total', 'total');
SQL
listen keyed 'By Group' full imm sched by_k total

# check_refresh ST CHANNEL SQL... — snapshots ST, runs the statements (a refresh among them),
# and expects exactly one new notification on CHANNEL whose counts are the rows the stream
# table gained and lost (with REPLACE=1, a FULL refresh: every row removed and written; with
# WANT="I D", the sums of several statements' deltas, whose difference is the rows gained).
check_refresh() {
  local st=$1 ch=$2 before after want_ins want_del n payload
  shift 2
  q -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS snap" -c "CREATE TABLE snap AS SELECT * FROM $st"
  before=$(heard "$ch" | wc -l)
  for s in "$@"; do q -c "$s" >/dev/null; done
  sync_listener
  if [ -n "${WANT:-}" ]; then
    read -r want_ins want_del <<<"$WANT"
    [ $((want_ins - want_del)) -eq $(q -c "SELECT (SELECT count(*) FROM $st) - (SELECT count(*) FROM snap)") ] \
      || die "$st: $WANT do not add up to the rows gained"
  elif [ -n "${REPLACE:-}" ]; then
    want_ins=$(q -c "SELECT count(*) FROM $st")
    want_del=$(q -c "SELECT count(*) FROM snap")
  else
    want_ins=$(q -c "SELECT count(*) FROM (SELECT * FROM $st EXCEPT ALL SELECT * FROM snap) x")
    want_del=$(q -c "SELECT count(*) FROM (SELECT * FROM snap EXCEPT ALL SELECT * FROM $st) x")
  fi
  after=$(heard "$ch" | wc -l)
  n=$((after - before))
  [ "$n" -eq 1 ] || die "$st: want one notification on $ch, got $n: $(heard "$ch")"
  payload=$(heard "$ch" | tail -1)
  [ "$(field "$payload" inserted_count)" = "$want_ins" ] || die "$st: inserted $want_ins, notified $payload"
  [ "$(field "$payload" deleted_count)" = "$want_del" ] || die "$st: deleted $want_del, notified $payload"
  checks=$((checks + 3))
}
# no_notification CHANNEL SQL... — the statements send nothing on CHANNEL.
no_notification() {
  local ch=$1 before
  shift
  before=$(heard "$ch" | wc -l)
  for s in "$@"; do q -c "$s" >/dev/null 2>&1 || true; done
  sync_listener
  [ "$(heard "$ch" | wc -l)" -eq "$before" ] || die "unexpected notification on $ch after: $*"
  checks=$((checks + 1))
}

# TEST-SUB1, manual refreshes: keyed and grouped deltas, with inserts, updates and deletes.
check_refresh keyed keyed "INSERT INTO src VALUES (200, 1, 200), (201, 2, 201)" \
  "SELECT pgtrickle.refresh_stream_table('keyed')"
check_refresh keyed keyed "UPDATE src SET v = v + 2 WHERE id BETWEEN 10 AND 19" \
  "DELETE FROM src WHERE id BETWEEN 30 AND 35" "SELECT pgtrickle.refresh_stream_table('keyed')"
check_refresh '"By Group"' 'By Group' "SELECT pgtrickle.refresh_stream_table('\"By Group\"')"
check_refresh '"By Group"' 'By Group' "DELETE FROM src WHERE g = 4" \
  "SELECT pgtrickle.refresh_stream_table('\"By Group\"')"
check_refresh '"By Group"' 'By Group' "INSERT INTO src VALUES (300, 4, 1)" \
  "UPDATE src SET v = v + 1 WHERE id = 1" "SELECT pgtrickle.refresh_stream_table('\"By Group\"')"
# Group keys that may be NULL (the NULL group changed, emptied, born again), and a scalar
# aggregate (its single row replaced, also when every source row goes).
check_refresh by_k by_k "UPDATE nsrc SET v = v + 1 WHERE k IS NULL OR k = 1" \
  "INSERT INTO nsrc VALUES (100, 7, 1)" "SELECT pgtrickle.refresh_stream_table('by_k')"
check_refresh by_k by_k "DELETE FROM nsrc WHERE k IS NULL" "SELECT pgtrickle.refresh_stream_table('by_k')"
check_refresh by_k by_k "INSERT INTO nsrc VALUES (101, NULL, 5)" "SELECT pgtrickle.refresh_stream_table('by_k')"
check_refresh total total "DELETE FROM nsrc WHERE id < 50" "SELECT pgtrickle.refresh_stream_table('total')"
check_refresh total total "DELETE FROM nsrc" "SELECT pgtrickle.refresh_stream_table('total')"
# The payload names the stream table as a user would write it, with the refresh's id.
payload=$(heard 'By Group' | tail -1)
grep -qF '"name" : "public.\"By Group\""' <<<"$payload" || die "name in $payload"
expect_eq "SELECT max(refresh_id) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'By Group'" \
  "$(field "$payload" refresh_id)"
# FULL: every row replaced (the counts say so, whatever changed).
REPLACE=1 check_refresh full_st full "INSERT INTO src VALUES (301, 2, 1000)" "SELECT pgtrickle.refresh_stream_table('full_st')"
# Empty refreshes send nothing (keyed first takes what the statements above changed);
# neither does a rolled-back refresh.
check_refresh keyed keyed "SELECT pgtrickle.refresh_stream_table('keyed')"
check_refresh '"By Group"' 'By Group' "SELECT pgtrickle.refresh_stream_table('\"By Group\"')"
no_notification keyed "SELECT pgtrickle.refresh_stream_table('keyed')"
no_notification 'By Group' "SELECT pgtrickle.refresh_stream_table('\"By Group\"')"
no_notification keyed "BEGIN; INSERT INTO src VALUES (400, 1, 400); SELECT pgtrickle.refresh_stream_table('keyed'); ROLLBACK;"
expect_eq "SELECT count(*) FROM keyed WHERE id = 400" 0
expect_eq "SELECT count(*) FROM pgtrickle.pgt_notify_pending" 0
# IMMEDIATE: one notification per transaction, with the sums of its statements' deltas
# (10 rows in; 3 out and in again; 1 out).
WANT="13 4" check_refresh imm imm "BEGIN; INSERT INTO imm_src SELECT g, g FROM generate_series(1, 10) g; UPDATE imm_src SET v = 0 WHERE id <= 3; DELETE FROM imm_src WHERE id = 10; COMMIT;"
check_refresh imm imm "INSERT INTO imm_src VALUES (50, 50)"
no_notification imm "BEGIN; INSERT INTO imm_src VALUES (60, 60); ROLLBACK;"
# Scheduled refreshes notify from the scheduler's transaction.
q -c "INSERT INTO sched_src SELECT g, g FROM generate_series(1, 7) g"
eventually 30 "SELECT count(*) FROM sched" 7
sync_listener
[ "$(heard sched | wc -l)" -eq 1 ] || die "want one notification for the scheduled refresh: $(heard sched)"
[ "$(field "$(heard sched)" inserted_count)" = 7 ] || die "scheduled: $(heard sched)"
checks=$((checks + 2))

# A full NOTIFY queue (as far as pg_trickle.notify_queue_max_percent says): the refresh
# commits with a WARNING and the notification waits, to be sent by the scheduler once the
# queue has room again.
set_guc pg_trickle.notify_queue_max_percent 0
before=$(heard keyed | wc -l)
out=$(q -c "INSERT INTO src VALUES (500, 1, 500)" -c "SELECT pgtrickle.refresh_stream_table('keyed')" 2>&1)
grep -q "WARNING:  pg_trickle did not notify channel \"keyed\" of stream table \"public\".\"keyed\": the NOTIFY queue" <<<"$out" \
  || die "want the queue WARNING, got: $out"
expect_eq "SELECT count(*) FROM keyed WHERE id = 500" 1
expect_eq "SELECT pending_refreshes, pending_inserted FROM pgtrickle.list_subscriptions() WHERE channel = 'keyed'" "1|1"
set_guc pg_trickle.notify_queue_max_percent 50
eventually 30 "SELECT pending_refreshes FROM pgtrickle.list_subscriptions() WHERE channel = 'keyed'" 0
sync_listener
[ "$(heard keyed | wc -l)" -eq $((before + 1)) ] || die "the delayed notification: $(heard keyed)"
checks=$((checks + 1))

# TEST-SUB2: a storm of 200 refreshes (each inserting one row and updating another) with a
# window of 250 ms, on two channels of one stream table.
set_guc pg_trickle.notify_coalesce_ms 250
q -c "SELECT pgtrickle.subscribe('keyed', 'second')"
touch "$dir/stop"; wait "$listener"
listen keyed second
rows0=$(q -c "SELECT count(*) FROM keyed")
h0=$(q -c "SELECT max(refresh_id) FROM pgtrickle.pgt_refresh_history")
start=$(date +%s%N)
{
  for i in $(seq 1 200); do
    echo "INSERT INTO src VALUES ($((1000 + i)), 1, $((2 * (1000 + i))));"
    # The row the previous refresh inserted (first: id 2, also in keyed): one row out, one in.
    echo "UPDATE src SET v = v + 2 WHERE id = $([ "$i" -eq 1 ] && echo 2 || echo $((999 + i)));"
    echo "SELECT pgtrickle.refresh_stream_table('keyed');"
    echo "SELECT pg_sleep(0.005);"
  done
} | q >/dev/null
storm_ms=$(( ($(date +%s%N) - start) / 1000000 ))
eventually 30 "SELECT sum(pending_refreshes) FROM pgtrickle.list_subscriptions() WHERE stream_table = 'public.keyed'" 0
sync_listener
total_ms=$(( ($(date +%s%N) - start) / 1000000 ))
rows1=$(q -c "SELECT count(*) FROM keyed")
refreshes=$(q -c "SELECT count(*) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
                  WHERE s.pgt_name = 'keyed' AND h.action = 'DIFFERENTIAL' AND h.refresh_id > $h0")
for ch in keyed second; do
  n=$(heard "$ch" | wc -l)
  ins=0 del=0 merged=0
  while IFS= read -r p; do
    ins=$((ins + $(field "$p" inserted_count)))
    del=$((del + $(field "$p" deleted_count)))
    merged=$((merged + $(field "$p" refreshes)))
  done < <(heard "$ch")
  # One per window at most: the first at once, then one per 250 ms (+1 for the last partial).
  max=$(( total_ms / 250 + 1 ))
  [ "$n" -le "$max" ] || die "$ch: $n notifications in $total_ms ms, want at most $max"
  [ "$n" -ge 2 ] || die "$ch: $n notifications for 200 refreshes over $storm_ms ms"
  [ "$merged" -eq 200 ] || die "$ch: notifications cover $merged refreshes, want 200"
  [ $((ins - del)) -eq $((rows1 - rows0)) ] || die "$ch: inserted $ins - deleted $del != $((rows1 - rows0)) rows gained"
  [ "$ins" -eq 400 ] && [ "$del" -eq 200 ] || die "$ch: counts $ins/$del, want 400/200"
  checks=$((checks + 5))
  echo "  $ch: 200 refreshes in $storm_ms ms -> $n notifications (at most $max), +$ins -$del"
done
[ "$refreshes" -eq 200 ] || die "want 200 differential refreshes, got $refreshes"
expect_eq "SELECT count(*) FROM pgtrickle.pgt_notify_pending" 0

# SERIALIZABLE: nothing is sent at commit (write skew between serializable transactions on
# the subscription tables); the scheduler sends it.
before=$(heard second | wc -l)
q -c "BEGIN ISOLATION LEVEL SERIALIZABLE; INSERT INTO src VALUES (5000, 1, 10000); SELECT pgtrickle.refresh_stream_table('keyed'); COMMIT;" >/dev/null
eventually 30 "SELECT sum(pending_refreshes) FROM pgtrickle.list_subscriptions() WHERE stream_table = 'public.keyed'" 0
sync_listener
[ "$(heard second | wc -l)" -eq $((before + 1)) ] || die "serializable: $(heard second | tail -2)"
checks=$((checks + 1))

# pg_dump keeps the subscriptions (an extension configuration table).
"$PG" psql "$CLUSTER" -Atq -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS sub_restored" -c "CREATE DATABASE sub_restored"
port=$("$PG" port "$CLUSTER")
"$PG_BIN/pg_dump" -h 127.0.0.1 -p "$port" -U postgres -d sub | psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d sub_restored >/dev/null 2>&1
got=$("$PG" psql "$CLUSTER" -d sub_restored -Atq -c "SELECT string_agg(format('%s.%s:%s', pgt_schema, pgt_name, channel), ',' ORDER BY pgt_name, channel) FROM pgtrickle.pgt_subscriptions")
[ "$got" = "public.By Group:By Group,public.by_k:by_k,public.full_st:full,public.imm:imm,public.keyed:keyed,public.keyed:second,public.sched:sched,public.total:total" ] \
  || die "restored subscriptions: $got"
checks=$((checks + 1))
# A stream table created again under its name takes its subscriptions over, and says so.
out=$("$PG" psql "$CLUSTER" -d sub_restored -Atq -v ON_ERROR_STOP=1 -c "DROP TABLE keyed" \
  -c "SELECT pgtrickle.create_stream_table('keyed', 'SELECT id, g, v FROM src WHERE v % 2 = 0', schedule => '1h')" 2>&1)
grep -qF 'NOTICE:  stream table "public"."keyed" has 2 subscriptions already (restored with the catalog): keyed, second' <<<"$out" \
  || die "adoption NOTICE: $out"
checks=$((checks + 1))
"$PG" psql "$CLUSTER" -Atq -c "DROP DATABASE sub_restored WITH (FORCE)"

# A database whose only stream table is IMMEDIATE has no scheduler running: the commit that
# leaves a notification pending (its window open) asks for one, which delivers it.
touch "$dir/stop"; wait "$listener"
fresh_db sub_idle
q >/dev/null <<'SQL'
CREATE TABLE t (id int PRIMARY KEY);
SELECT pgtrickle.create_stream_table('only_imm', 'SELECT id FROM t', refresh_mode => 'IMMEDIATE');
SELECT pgtrickle.subscribe('only_imm', 'idle');
SQL
listen idle
q -c "INSERT INTO t VALUES (1)" -c "INSERT INTO t VALUES (2)" -c "INSERT INTO t VALUES (3)"
eventually 30 "SELECT pending_refreshes, notifications_sent, refreshes_notified FROM pgtrickle.list_subscriptions()" "0|2|3"
sync_listener
[ "$(heard idle | wc -l)" -eq 2 ] || die "idle database: $(heard idle)"
checks=$((checks + 1))

echo "subscriptions: $checks checks passed"
