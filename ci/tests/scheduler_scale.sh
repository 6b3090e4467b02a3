#!/usr/bin/env bash
# The scheduler at scale, on a cluster with PostgreSQL's default max_worker_processes = 8 and
# pg_trickle.max_workers = 4: twenty databases with a '1s' stream table each stay fresh
# (they take turns in the pool), databases without the extension are looked at once and then
# never again, until their first stream table; parallel refreshes (max_parallel_refreshes = 3) run independent stream tables at
# the same time and never a stream table together with one it reads, nor twice at once; a
# refresh worker killed with SIGKILL mid-refresh loses nothing; fifty databases created and
# dropped in a loop leave no worker and no error behind; and with no background worker slot to
# be had, scheduler_status(), pgt_status() and create_stream_table say so and the launcher
# warns once. Deadlines are generous; durations are never asserted.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-scale
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
"$PG" start "$CLUSTER" >/dev/null
admin() { "$PG" psql "$CLUSTER" -XAtq -v ON_ERROR_STOP=1 "$@"; }
restart() { "$PG" stop "$CLUSTER" >/dev/null; "$PG" start "$CLUSTER" >/dev/null; }
admin -c "ALTER SYSTEM SET max_worker_processes = 8" -c "ALTER SYSTEM SET pg_trickle.max_workers = 4" \
      -c "ALTER SYSTEM SET synchronous_commit = on" >/dev/null
restart
log="$PG_BASE/$CLUSTER.log"
# Checks in the maintenance database (no extension there).
expect_admin() { DB=postgres expect_eq "$@"; }
expect_admin "SHOW max_worker_processes" 8
# Status is read from a database with the extension (and no stream table).
fresh_db watch
st() { DB=watch "$@"; }

# --- twenty databases with the extension, five without ----------------------------------------
dbs=()
for i in $(seq -w 1 20); do dbs+=("many_$i"); done
for d in "${dbs[@]}"; do
  admin -c "CREATE DATABASE $d"
  DB=$d q <<'SQL'
CREATE EXTENSION pg_trickle;
CREATE TABLE t (id int PRIMARY KEY, v int);
INSERT INTO t VALUES (1, 1);
SELECT pgtrickle.create_stream_table('st', 'SELECT id, v FROM t', schedule => '1s');
SQL
done
for i in 1 2 3 4 5; do admin -c "CREATE DATABASE plain_$i"; done
# Two rounds of writes everywhere: every stream table follows each within the deadline.
for round in 2 3; do
  for d in "${dbs[@]}"; do DB=$d q -c "INSERT INTO t VALUES ($round, $round)"; done
  for d in "${dbs[@]}"; do DB=$d eventually 60 "SELECT count(*) FROM st" "$round"; done
done
st expect_eq "SELECT count(*) FROM pgtrickle.scheduler_status() WHERE database LIKE 'many\_%' AND state = 'serving'" 20
# Every database without the extension was looked at (idle) and is not looked at again.
st eventually 30 "SELECT count(*) FROM pgtrickle.scheduler_status() WHERE database LIKE 'plain\_%' AND state = 'idle'" 5
ticks=$(DB=watch q -c "SELECT string_agg(last_tick::text, ',' ORDER BY database) FROM pgtrickle.scheduler_status() WHERE database LIKE 'plain\_%'")
sleep 5
st expect_eq "SELECT string_agg(last_tick::text, ',' ORDER BY database) FROM pgtrickle.scheduler_status() WHERE database LIKE 'plain\_%'" "$ticks"
# A database looked at before it had the extension (idle) is served from the commit of its
# first stream table on.
admin -c "CREATE DATABASE late"
st eventually 30 "SELECT state FROM pgtrickle.scheduler_status() WHERE database = 'late'" idle
DB=late q <<'SQL'
CREATE EXTENSION pg_trickle;
CREATE TABLE t (id int PRIMARY KEY, v int);
SELECT pgtrickle.create_stream_table('st', 'SELECT id, v FROM t', schedule => '1s');
INSERT INTO t VALUES (1, 1);
SQL
DB=late eventually 60 "SELECT count(*) FROM st" 1
admin -c "DROP DATABASE late"
# The pool is never exceeded, and refreshed databases report no problem.
expect_admin "SELECT count(*) <= 4 FROM pg_stat_activity WHERE backend_type IN ('pg_trickle scheduler', 'pg_trickle refresh')" t
DB=many_01 expect_eq "SELECT count(*) FROM pgtrickle.pgt_status() WHERE scheduler_problem IS NOT NULL" 0
for d in "${dbs[@]}"; do admin -c "DROP DATABASE $d"; done
for i in 1 2 3 4 5; do admin -c "DROP DATABASE plain_$i"; done

# --- parallel refreshes honour the DAG ------------------------------------------------------------
admin -c "ALTER SYSTEM SET pg_trickle.max_parallel_refreshes = 3" -c "SELECT pg_reload_conf()" >/dev/null
fresh_db par
# slow_id sleeps 20 ms a row: a refresh of 50 changed rows takes about a second. Declared
# IMMUTABLE (it is, but for the time it takes) so the stream tables stay DIFFERENTIAL.
q <<'SQL'
CREATE FUNCTION slow_id(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
  $$ BEGIN PERFORM pg_sleep(0.02); RETURN x; END $$;
CREATE TABLE a (id int PRIMARY KEY, v int);
CREATE TABLE b (id int PRIMARY KEY, v int);
SELECT pgtrickle.create_stream_table('sa', 'SELECT id, slow_id(v) AS v FROM a', schedule => '1s');
SELECT pgtrickle.create_stream_table('sb', 'SELECT id, slow_id(v) AS v FROM b', schedule => '1s');
SELECT pgtrickle.create_stream_table('sa_sum', 'SELECT count(*) AS n, sum(v) AS s FROM sa', schedule => '1s');
SQL
expect_eq "SELECT string_agg(effective_mode, ',' ORDER BY pgt_id) FROM pgtrickle.pgt_stream_tables" "DIFFERENTIAL,DIFFERENTIAL,DIFFERENTIAL"
for k in 0 1 2; do
  q -c "INSERT INTO a SELECT x, x FROM generate_series($k * 50 + 1, $k * 50 + 50) x" \
    -c "INSERT INTO b SELECT x, x FROM generate_series($k * 50 + 1, $k * 50 + 50) x"
  eventually 60 "$(diff_sql sa_sum 'SELECT count(*) AS n, sum(v) AS s FROM a')" 0
  eventually 60 "$(diff_sql sb 'SELECT id, v FROM b')" 0
done
H="(SELECT s.pgt_name AS st, tstzrange(h.start_time, h.end_time) AS span
      FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
     WHERE h.action = 'DIFFERENTIAL' AND h.end_time IS NOT NULL)"
# Independent stream tables refreshed at the same time (by refresh workers) ...
expect_eq "SELECT count(*) > 0 FROM $H x, $H y WHERE x.st = 'sa' AND y.st = 'sb' AND x.span && y.span" t
# ... never a stream table while one it reads refreshes, and never one twice at once.
expect_eq "SELECT count(*) FROM $H x, $H y WHERE x.st = 'sa' AND y.st = 'sa_sum' AND x.span && y.span" 0
expect_eq "SELECT count(*) FROM $H x, $H y WHERE x.st = y.st AND x.span && y.span AND x.span <> y.span" 0

# --- SIGKILL of a refresh worker mid-refresh ---------------------------------------------------------
q -c "INSERT INTO a SELECT x, x FROM generate_series(1001, 1300) x" \
  -c "INSERT INTO b SELECT x, x FROM generate_series(1001, 1300) x"
eventually 60 "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'pg_trickle refresh' AND datname = 'par'" t
pid=$(admin -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_trickle refresh' AND datname = 'par' LIMIT 1")
[ -n "$pid" ] || die "no refresh worker found"
kill -9 "$pid"
# The postmaster reinitialises; the writes below go to the restarted server.
DB=par eventually 60 "SELECT 1" 1
q -c "UPDATE a SET v = v + 1 WHERE id % 7 = 0" -c "DELETE FROM b WHERE id % 5 = 0"
eventually 120 "$(diff_sql sa 'SELECT id, v FROM a')" 0
eventually 120 "$(diff_sql sb 'SELECT id, v FROM b')" 0
eventually 120 "$(diff_sql sa_sum 'SELECT count(*) AS n, sum(v) AS s FROM a')" 0
expect_eq "SELECT count(*) FROM pgtrickle.pgt_stream_tables WHERE status <> 'ACTIVE' OR effective_mode <> 'DIFFERENTIAL'" 0
grep -q "terminated by signal 9" "$log" || die "the refresh worker was not killed"
checks=$((checks + 1))
admin -c "DROP DATABASE par" -c "ALTER SYSTEM RESET pg_trickle.max_parallel_refreshes" -c "SELECT pg_reload_conf()" >/dev/null

# --- fifty databases created and dropped in a loop ------------------------------------------------------
errors_before=$(grep -c "ERROR" "$log" || true)
for i in $(seq 1 50); do
  admin -c "CREATE DATABASE churn_$i"
  DB=churn_$i q <<'SQL'
CREATE EXTENSION pg_trickle;
CREATE TABLE t (id int PRIMARY KEY);
SELECT pgtrickle.create_stream_table('st', 'SELECT id FROM t', schedule => '1s');
SQL
  # Every few rounds, long enough for its scheduler to be connected when DROP DATABASE runs.
  [ $((i % 5)) -ne 0 ] || sleep 1.5
  out=$(admin -c "DROP DATABASE churn_$i" 2>&1) || die "DROP DATABASE churn_$i: $out"
done
checks=$((checks + 1))
expect_admin "SELECT count(*) FROM pg_database WHERE datname LIKE 'churn\_%'" 0
st eventually 30 "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_trickle%' AND backend_type <> 'pg_trickle launcher'" 0
st eventually 30 "SELECT count(*) FROM pgtrickle.scheduler_status() WHERE database LIKE 'churn\_%'" 0
errors_after=$(grep -c "ERROR" "$log" || true)
[ "$errors_after" = "$errors_before" ] || die "the create/drop loop logged errors: $(grep ERROR "$log" | tail -5)"
checks=$((checks + 1))

# --- no background worker slot: reported, warned once ---------------------------------------------------
# Two slots: pg_trickle's launcher and PostgreSQL's logical replication launcher take both.
admin -c "ALTER SYSTEM SET max_worker_processes = 2" >/dev/null
restart
fresh_db starved
q -c "CREATE TABLE t (id int PRIMARY KEY)" -c "SELECT pgtrickle.create_stream_table('st', 'SELECT id FROM t', schedule => '1s')" >/dev/null
eventually 60 "SELECT problem LIKE 'no scheduler for % s: PostgreSQL has no free background worker slot (max_worker_processes = 2)' FROM pgtrickle.scheduler_status() WHERE database = 'starved'" t
expect_eq "SELECT scheduler_problem LIKE 'no scheduler for % s: PostgreSQL has no free background worker slot%' FROM pgtrickle.pgt_status()" t
out=$(q -c "SELECT pgtrickle.create_stream_table('st2', 'SELECT id FROM t', schedule => '1s')" 2>&1)
grep -q 'WARNING:  stream table "public"."st2" will not be refreshed on its schedule for now: no scheduler for' <<<"$out" \
  || die "create_stream_table did not warn: $out"
checks=$((checks + 1))
sleep 5
n=$(grep -c "PostgreSQL has no free background worker slot for a scheduler" "$log" || true)
[ "$n" = 1 ] || die "want the launcher's WARNING once, got $n"
checks=$((checks + 1))
# IMMEDIATE stream tables need no scheduler and report nothing.
q -c "SELECT pgtrickle.create_stream_table('st3', 'SELECT id FROM t', refresh_mode => 'IMMEDIATE')" >/dev/null
expect_eq "SELECT scheduler_problem IS NULL FROM pgtrickle.pgt_status() WHERE name = 'public.st3'" t

echo "scheduler_scale: $checks checks passed"
