#!/usr/bin/env bash
# The background scheduler: a '1s' stream table follows writes on its own; a 3-level DAG of
# stream tables converges after writes at the bottom (differentially, upstream first); errors
# back off and end in status ERROR (permanent ones at once), and ACTIVE resumes; history
# pruning (by the scheduler) deletes in batches; a refresh killed mid-way leaves no RUNNING history row after a
# restart; a database gone idle is scheduled again when a rebuild reactivates its stream table.
# Deadlines are generous; durations are never asserted.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-sched
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
"$PG" start "$CLUSTER" >/dev/null
"$PG" psql "$CLUSTER" -q -c "ALTER SYSTEM SET pg_trickle.scheduler_interval_ms = 200" -c "SELECT pg_reload_conf()" >/dev/null
fresh_db sched

# --- a '1s' stream table follows writes -------------------------------------------------------
q <<'SQL'
CREATE TABLE t (id int PRIMARY KEY, g int NOT NULL, v int);
INSERT INTO t SELECT x, x % 4, x FROM generate_series(1, 100) x;
SELECT pgtrickle.create_stream_table('per_g', 'SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g', schedule => '1s');
INSERT INTO t VALUES (1000, 9, 1), (1001, 9, 2);
DELETE FROM t WHERE id <= 10;
SQL
eventually 60 "$(diff_sql per_g 'SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g')" 0
eventually 30 "SELECT bool_or(action = 'DIFFERENTIAL') FROM pgtrickle.get_refresh_history('per_g', 50)" t

# --- a 3-level DAG converges, every level differential ---------------------------------------
q <<'SQL'
SELECT pgtrickle.create_stream_table('big_g', 'SELECT g, n FROM per_g WHERE n > 20');
SELECT pgtrickle.create_stream_table('summary', 'SELECT count(*) AS groups, sum(n) AS total FROM big_g');
INSERT INTO t SELECT x, 7, x FROM generate_series(2000, 2030) x;
UPDATE t SET g = 8 WHERE g = 1;
SQL
expect_eq "SELECT string_agg(effective_mode, ',' ORDER BY pgt_id) FROM pgtrickle.pgt_stream_tables" "DIFFERENTIAL,DIFFERENTIAL,DIFFERENTIAL"
SUMMARY_Q='SELECT count(*) AS groups, sum(n) AS total FROM (SELECT g, count(*) AS n FROM t GROUP BY g HAVING count(*) > 20) x'
eventually 60 "$(diff_sql summary "$SUMMARY_Q")" 0
eventually 30 "SELECT bool_or(action = 'DIFFERENTIAL') FROM pgtrickle.get_refresh_history('summary', 50)" t

# --- a permanent error goes to ERROR at once; ACTIVE resumes ----------------------------------
q <<'SQL'
CREATE TABLE e (id int PRIMARY KEY, d int NOT NULL);
INSERT INTO e VALUES (1, 1), (2, 2);
SELECT pgtrickle.create_stream_table('ratio', 'SELECT id, 10 / d AS q FROM e', schedule => '1s');
INSERT INTO e VALUES (3, 0);
SQL
eventually 60 "SELECT status, consecutive_errors FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'ratio'" "ERROR|1"
expect_eq "SELECT status, error_sqlstate FROM pgtrickle.get_refresh_history('ratio', 1)" "FAILED|22012"
expect_eq "SELECT last_error LIKE '22012:%division by zero%' FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'ratio'" "t"
q -c "DELETE FROM e WHERE d = 0" -c "SELECT pgtrickle.alter_stream_table('ratio', status => 'ACTIVE')"
eventually 60 "$(diff_sql ratio 'SELECT id, 10 / d AS q FROM e')" 0
eventually 30 "SELECT status, consecutive_errors FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'ratio'" "ACTIVE|0"

# --- retryable errors back off, then ERROR after max_consecutive_errors ------------------------
"$PG" psql "$CLUSTER" -q -c "ALTER SYSTEM SET pg_trickle.refresh_lock_timeout_ms = 100" -c "SELECT pg_reload_conf()" >/dev/null
# Suspended while the change and the lock are put in place, so no refresh slips in between.
q -c "SELECT pgtrickle.alter_stream_table('ratio', status => 'SUSPENDED')" -c "INSERT INTO e VALUES (4, 4)"
locker_out=$(mktemp)
coproc LOCKER { q -v ON_ERROR_STOP=1 >"$locker_out" 2>&1; }
echo "BEGIN; LOCK TABLE e IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT;" >&"${LOCKER[1]}"
eventually 60 "SELECT count(*) FROM pg_locks WHERE relation = 'e'::regclass AND mode = 'AccessExclusiveLock' AND granted" 1
q -c "SELECT pgtrickle.alter_stream_table('ratio', status => 'ACTIVE')"
eventually 90 "SELECT status FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'ratio'" "ERROR"
expect_eq "SELECT consecutive_errors, last_error LIKE '55P03:%' FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'ratio'" "3|t"
# Three failures, each later than the one before by a growing backoff (1 s, then 2 s).
expect_eq "SELECT count(*), bool_and(error_sqlstate = '55P03') FROM (SELECT * FROM pgtrickle.get_refresh_history('ratio', 3)) h" "3|t"
expect_eq "SELECT (max(start_time) - min(start_time)) >= interval '3 seconds' FROM (SELECT * FROM pgtrickle.get_refresh_history('ratio', 3)) h" "t"
q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()" >/dev/null
if [ -n "${LOCKER[1]:-}" ]; then exec {LOCKER[1]}>&-; fi
wait "${LOCKER_PID:-}" 2>/dev/null || true
rm -f "$locker_out"
q -c "SELECT pgtrickle.alter_stream_table('ratio', status => 'ACTIVE')"
eventually 60 "$(diff_sql ratio 'SELECT id, 10 / d AS q FROM e')" 0

# --- history pruning deletes old rows in batches of 10,000 ----------------------------------------
ID=$(q -c "SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'per_g'")
q -c "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, start_time, end_time, action, status)
      SELECT $ID, now() - interval '30 days', now() - interval '30 days', 'NO_DATA', 'COMPLETED'
      FROM generate_series(1, 25000)"
"$PG" psql "$CLUSTER" -q -c "ALTER SYSTEM SET pg_trickle.history_prune_interval_seconds = 1" -c "SELECT pg_reload_conf()" >/dev/null
eventually 90 "SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE start_time < now() - interval '7 days'" 0
log="$PG_BASE/$CLUSTER.log"
eventually 30 "SELECT $(grep -c 'history pruning: deleted 25000 rows in 3 batches' "$log")" 1
expect_eq "SELECT count(*) > 0 FROM pgtrickle.pgt_refresh_history" "t"

# --- a refresh killed mid-way: after a restart no RUNNING rows, and it converges ---------------
# A crash test: commits must reach the WAL (ci/pg clusters run with synchronous_commit = off).
"$PG" psql "$CLUSTER" -q -c "ALTER SYSTEM SET synchronous_commit = on" -c "SELECT pg_reload_conf()" >/dev/null
q <<'SQL'
CREATE TABLE slow (id int PRIMARY KEY, v int);
INSERT INTO slow SELECT x, x FROM generate_series(1, 400) x;
SELECT pgtrickle.create_stream_table('slow_st', 'SELECT id, v FROM slow WHERE pg_sleep(0.05) IS NOT NULL', schedule => '1s');
SQL
eventually 60 "SELECT count(*) > 0 FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'slow_st' AND h.status = 'RUNNING'" t
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_trickle scheduler' AND datname = 'sched'")
[ -n "$pid" ] || die "no scheduler process found"
kill -9 "$pid"
sleep 2
"$PG" stop "$CLUSTER" >/dev/null
"$PG" start "$CLUSTER" >/dev/null
q -c "DELETE FROM slow WHERE id > 40"
# The killed refresh, and any the shutdown interrupted after the crash restart, end FAILED.
eventually 60 "SELECT count(*) FILTER (WHERE status = 'RUNNING' AND start_time < now() - interval '1 minute'), count(*) FILTER (WHERE error_message LIKE 'interrupted%') > 0 FROM pgtrickle.pgt_refresh_history" "0|t"
eventually 120 "$(diff_sql slow_st 'SELECT id, v FROM slow')" 0

# --- an idle database is served again whenever its catalog changes -----------------------------
# Its only stream table goes to NEEDS_REINIT: nothing is scheduled, the database goes idle.
# Rebuilt by refresh_stream_table (neither create nor alter), it must be scheduled again.
fresh_db lonely
q <<'SQL'
CREATE TABLE src (id int PRIMARY KEY, v int);
INSERT INTO src VALUES (1, 1);
SELECT pgtrickle.create_stream_table('st', 'SELECT id, v FROM src', schedule => '1s');
ALTER TABLE src DROP COLUMN v;
SQL
expect_eq "SELECT status FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'st'" NEEDS_REINIT
eventually 30 "SELECT state FROM pgtrickle.scheduler_status() WHERE database = 'lonely'" idle
q -c "ALTER TABLE src ADD COLUMN v int" -c "UPDATE src SET v = 1" -c "SELECT pgtrickle.refresh_stream_table('st')" >/dev/null
q -c "INSERT INTO src VALUES (2, 2)"
eventually 30 "$(diff_sql st 'SELECT id, v FROM src')" 0
expect_eq "SELECT state FROM pgtrickle.scheduler_status() WHERE database = 'lonely'" serving

echo "scheduler: $checks passed, 0 failed"
