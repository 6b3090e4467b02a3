#!/usr/bin/env bash
# Database-level DDL is not blocked by pg_trickle's workers. A database's scheduler stays
# connected while it has scheduled stream tables and no other database waits for its pool
# slot, and DROP DATABASE, ALTER DATABASE
# … RENAME TO and CREATE DATABASE … TEMPLATE refuse to run while other sessions are connected
# (55006 after five seconds of waiting). A ProcessUtility hook asks the workers of the named
# database to exit first; the launcher brings them back (after a six-second pause) where the
# database still exists. No WITH (FORCE) anywhere below. Also: a session holding advisory locks
# does not keep the workers out of a database.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-dbddl
trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
"$PG" start "$CLUSTER" >/dev/null
fresh_db ddl_src
q <<'SQL'
CREATE TABLE t (id int PRIMARY KEY, v int);
INSERT INTO t VALUES (1, 10);
SELECT pgtrickle.create_stream_table('s', 'SELECT id, v FROM t', schedule => '1s');
SQL
# From the maintenance database: which pg_trickle workers are connected where.
workers_in() {
  "$PG" psql "$CLUSTER" -XAtq -c "SELECT count(*) FROM pg_stat_activity
    WHERE datname = '$1' AND backend_type IN ('pg_trickle scheduler', 'pg_trickle refresh')"
}
admin() { "$PG" psql "$CLUSTER" -XAtq -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$1" 2>&1; }
# wait_workers DB N — polls (generously: shared machines) until N workers are connected to DB.
wait_workers() {
  local deadline=$(( $(date +%s) + 60 ))
  until [ "$(workers_in "$1")" = "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || die "want $2 pg_trickle workers in $1, have $(workers_in "$1")"
    sleep 0.5
  done
  checks=$((checks + 1))
}

wait_workers ddl_src 1
# Any role may take advisory locks: holding the keys the workers once used must not keep them
# out. Stop them while a session holds those locks; they come back.
DB=ddl_src q -c "SELECT pg_advisory_lock(1885828210, 1), pg_advisory_lock(1885828210, 2), pg_sleep(600)" >/dev/null 2>&1 &
locker=$!
sleep 1
admin "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'ddl_src'
       AND backend_type IN ('pg_trickle scheduler', 'pg_trickle refresh')" >/dev/null
wait_workers ddl_src 1
kill "$locker" 2>/dev/null || true
admin "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'ddl_src'
       AND query LIKE '%pg_advisory_lock(1885828210%' AND pid <> pg_backend_pid()" >/dev/null
wait "$locker" 2>/dev/null || true
out=$(admin "CREATE DATABASE ddl_copy TEMPLATE ddl_src") || die "CREATE DATABASE … TEMPLATE: $out"
checks=$((checks + 1))
DB=ddl_copy expect_eq "SELECT count(*) FROM s" 1

wait_workers ddl_src 1
out=$(admin "ALTER DATABASE ddl_src RENAME TO ddl_renamed") || die "ALTER DATABASE … RENAME: $out"
checks=$((checks + 1))
# The workers come back in the renamed database, and its stream table follows its source.
wait_workers ddl_renamed 1
DB=ddl_renamed q -c "INSERT INTO t VALUES (2, 20)"
DB=ddl_renamed eventually 60 "SELECT count(*) FROM s" 2

wait_workers ddl_copy 1
out=$(admin "DROP DATABASE ddl_copy") || die "DROP DATABASE: $out"
checks=$((checks + 1))
out=$(admin "DROP DATABASE ddl_renamed") || die "DROP DATABASE: $out"
checks=$((checks + 1))
expect_eq_admin() { [ "$(admin "$1")" = "$2" ] || die "$1: want $2, got $(admin "$1")"; checks=$((checks + 1)); }
expect_eq_admin "SELECT count(*) FROM pg_database WHERE datname LIKE 'ddl\_%'" 0
# Nothing of ours is left connected anywhere but the launcher's maintenance database.
expect_eq_admin "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_trickle%' AND datname <> 'postgres'" 0
echo "database_ddl: $checks checks passed"
