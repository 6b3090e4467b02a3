#!/usr/bin/env bash
# Shadow builds: alter_stream_table(name, query => …, shadow_build => true), driven by the
# scheduler (docs/SHADOW_BUILDS.md).
# - Refusals before anything is written: the feature flag, shadow_build without a query, a
#   new query that drops a column a dependent stream table reads (42P16, naming it), a view
#   on the stream table, IMMEDIATE; nothing is left behind.
# - TEST-SHA1: a reader loop on the stream table and a writer loop on its source run while a
#   shadow build of a new shape (an added column) runs and swaps in: no reader errors, the
#   longest reader wait is printed, and afterwards the stream table equals the new query, its
#   dependent equals its own, grants and subscriptions stayed, the shadow is gone.
# - TEST-SHA2: a new query that fails on the data (division by zero) rolls back: the live
#   stream table is untouched and still maintained, the status says rolled_back with the error.
# - A second ALTER during a build gets 55006; the shadow refuses direct use (55000); dropping
#   the shadow cancels the build; dropping the stream table drops its shadow;
#   pg_trickle.shadow_timeout rolls back a build that does not finish.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-shadow
dir=$(mktemp -d)
pids=()
cleanup() {
  touch "$dir/stop"
  for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || "$PG" destroy "$CLUSTER" >/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
"$PG" start "$CLUSTER" >/dev/null
set_gucs() {
  local args=() kv
  for kv in "$@"; do args+=(-c "ALTER SYSTEM SET ${kv%%=*} = '${kv#*=}'"); done
  "$PG" psql "$CLUSTER" -Atq "${args[@]}" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1.5 # the scheduler reloads at its next tick
}
set_gucs pg_trickle.scheduler_interval_ms=100 pg_trickle.shadow_refresh_throttle_ms=200 \
  pg_trickle.shadow_build_enabled=on pg_trickle.shadow_timeout=600
fresh_db shadow
"$PG" psql "$CLUSTER" -Atq -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS shadow_reader" -c "CREATE ROLE shadow_reader LOGIN"

Q1='SELECT g, count(*) AS n, sum(v) AS s FROM src GROUP BY g'
Q2='SELECT g, count(*) AS n, sum(v) AS s, max(v) AS top FROM src GROUP BY g'
QD='SELECT g, n FROM agg WHERE n > 5'
q <<SQL >/dev/null
CREATE TABLE src (id int PRIMARY KEY, g int NOT NULL, v int NOT NULL);
INSERT INTO src SELECT i, i % 50, i % 997 FROM generate_series(1, 20000) i;
SELECT pgtrickle.create_stream_table('agg', '$Q1', schedule => '1s', refresh_mode => 'DIFFERENTIAL');
SELECT pgtrickle.create_stream_table('dep', '$QD', schedule => '1s', refresh_mode => 'DIFFERENTIAL');
GRANT SELECT ON agg TO shadow_reader;
SELECT pgtrickle.subscribe('agg', 'agg_changes');
SQL
status() { q -c "SELECT phase FROM pgtrickle.view_evolution_status('agg')"; }
nothing_left() {
  expect_eq "SELECT to_regclass('__pgt_shadow_agg') IS NULL,
                    (SELECT count(*) FROM pgtrickle.pgt_stream_tables WHERE shadow_of IS NOT NULL),
                    (SELECT in_shadow_build FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'agg')" \
    "t|0|f"
}

# --- refusals, before anything is written
expect_error 55000 "SET pg_trickle.shadow_build_enabled = off;
  SELECT pgtrickle.alter_stream_table('agg', query => '$Q2', shadow_build => true)"
expect_error 22023 "SELECT pgtrickle.alter_stream_table('agg', schedule => '2s', shadow_build => true)"
expect_error 22004 "SELECT pgtrickle.alter_stream_table('agg', query => '$Q2', shadow_build => NULL)"
out=$(q -v VERBOSITY=verbose -c "SELECT pgtrickle.alter_stream_table('agg', query => 'SELECT g, sum(v) AS s FROM src GROUP BY g', shadow_build => true)" 2>&1) &&
  die "a new query without the column a dependent reads was accepted"
grep -q 'ERROR:  42P16: .*would break stream table "public"."dep": it reads column "n"' <<<"$out" ||
  die "want 42P16 naming the dependent, got: $out"
checks=$((checks + 1))
q -c "CREATE VIEW agg_view AS SELECT * FROM agg"
expect_error 0A000 "SELECT pgtrickle.alter_stream_table('agg', query => '$Q2', shadow_build => true)"
q -c "DROP VIEW agg_view"
expect_error 0A000 "SELECT pgtrickle.alter_stream_table('agg', query => '$Q2', refresh_mode => 'IMMEDIATE', shadow_build => true)"
expect_error 42703 "SELECT pgtrickle.alter_stream_table('agg', query => 'SELECT nope FROM src', shadow_build => true)"
nothing_left
expect_eq "SELECT count(*) FROM pgtrickle.view_evolution_status('agg')" 0

# --- TEST-SHA1: readers and writers throughout a shadow build of a new shape
reader() {
  local t0 t1
  while [ ! -e "$dir/stop" ]; do
    t0=$(date +%s%N)
    if ! "$PG" psql "$CLUSTER" -d "$DB" -X -Atq -U shadow_reader \
         -c "SELECT count(*), sum(n) FROM agg" >/dev/null 2>>"$dir/reader_errors"; then
      echo "error at $(date +%T.%N)" >>"$dir/reader_errors"
    fi
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 )) >>"$dir/reader_ms"
  done
}
writer() {
  local i=0
  while [ ! -e "$dir/stop" ]; do
    i=$((i + 1))
    q -c "INSERT INTO src VALUES ($((100000 + i)), $((i % 60)), $((i * 7 % 1000)));
          UPDATE src SET v = v + 1 WHERE id = $(( (i * 37) % 20000 + 1 ));
          DELETE FROM src WHERE id = $(( (i * 91) % 20000 + 1 ));" >/dev/null 2>>"$dir/writer_errors" ||
      echo "error at $(date +%T.%N)" >>"$dir/writer_errors"
    echo x >>"$dir/writes"
  done
}
: >"$dir/reader_errors" >"$dir/writer_errors" >"$dir/reader_ms" >"$dir/writes"
rm -f "$dir/stop"
reader & pids+=($!)
reader & pids+=($!)
writer & pids+=($!)
sleep 2
before_id=$(q -c "SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'agg'")
expect_notice "shadow build of stream table \"public\".\"agg\" started in \"public\".\"__pgt_shadow_agg\"" \
  "SELECT pgtrickle.alter_stream_table('agg', query => '$Q2', shadow_build => true)"
eventually 120 "SELECT phase FROM pgtrickle.view_evolution_status('agg')" done
sleep 2 # readers and writers keep going on the new table
touch "$dir/stop"
for p in "${pids[@]}"; do wait "$p"; done
pids=()
[ ! -s "$dir/reader_errors" ] || die "readers failed during the shadow build: $(head -20 "$dir/reader_errors")"
[ ! -s "$dir/writer_errors" ] || die "writers failed during the shadow build: $(head -20 "$dir/writer_errors")"
checks=$((checks + 2))
reads=$(wc -l <"$dir/reader_ms")
longest=$(sort -n "$dir/reader_ms" | tail -1)
[ "$reads" -gt 10 ] || die "the readers ran only $reads queries"
printf 'TEST-SHA1: %s reads (0 failed), longest %s ms; %s writes (0 failed); status: %s\n' \
  "$reads" "$longest" "$(wc -l <"$dir/writes")" \
  "$(q -c "SELECT format('rows_built %s, catch-up refreshes %s, swap held the lock %s ms',
                        rows_built, catch_up_refreshes, round(swap_lock_ms::numeric, 1))
             FROM pgtrickle.view_evolution_status('agg')")"
# After the swap: the same stream table (id, name, grants, subscription) with the new query.
expect_eq "SELECT pgt_id, defining_query = '$Q2', in_shadow_build, shadow_table_name IS NULL, status
             FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'agg'" "$before_id|t|f|t|ACTIVE"
nothing_left
expect_eq "SELECT has_table_privilege('shadow_reader', 'agg', 'SELECT')" t
# The storage's indexes carry the stream table's name, not the shadow's.
expect_eq "SELECT count(*) FILTER (WHERE indexname LIKE '\_\_pgt\_shadow%'), count(*) > 0
             FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'agg'" "0|t"
expect_eq "SELECT count(*) FROM pgtrickle.list_subscriptions() WHERE channel = 'agg_changes'" 1
expect_eq "SELECT error IS NULL, rows_built > 0, lag IS NULL, finished_at IS NOT NULL
             FROM pgtrickle.view_evolution_status('agg')" "t|t|t|t"
# The build's refreshes are in the stream table's history.
expect_eq "SELECT count(*) > 0 FROM pgtrickle.get_refresh_history('agg', 1000)
            WHERE reason = 'the stream table is not populated yet'" t
q -c "SELECT pgtrickle.refresh_stream_table('agg')" >/dev/null
same_as_query agg "$Q2"
q -c "SELECT pgtrickle.refresh_stream_table('dep')" >/dev/null
same_as_query dep "$QD"
# Both keep being maintained by the scheduler.
q -c "INSERT INTO src SELECT i, 7, 5 FROM generate_series(300001, 300100) i" >/dev/null
eventually 30 "$(diff_sql agg "$Q2")" 0
eventually 30 "$(diff_sql dep "$QD")" 0
# No capture is left on the retired storage: the buffers are those of src and the new agg.
expect_eq "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgtrickle_changes'::regnamespace
             AND relkind = 'r' AND relname ~ '^changes_'
             AND substr(relname, 9)::oid NOT IN ('src'::regclass, 'agg'::regclass)" 0

# --- TEST-SHA2: a new query that fails on the data rolls back
Q3='SELECT g, count(*) AS n, sum(v) AS s, max(1000 / (v - 500)) AS top FROM src GROUP BY g'
q -c "SELECT pgtrickle.alter_stream_table('agg', query => '$Q3', shadow_build => true)" >/dev/null
eventually 60 "SELECT phase FROM pgtrickle.view_evolution_status('agg')" rolled_back
expect_eq "SELECT error ~ 'division by zero', finished_at IS NOT NULL FROM pgtrickle.view_evolution_status('agg')" "t|t"
expect_eq "SELECT defining_query = '$Q2', status FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'agg'" "t|ACTIVE"
nothing_left
q -c "UPDATE src SET v = v + 3 WHERE g = 7" >/dev/null
eventually 30 "$(diff_sql agg "$Q2")" 0
eventually 30 "$(diff_sql dep "$QD")" 0

# --- The swap is one notification to subscribers (no writes meanwhile: nothing else is)
q -c "SELECT pgtrickle.subscribe('agg', 'swap_only')" >/dev/null
q -c "SELECT pgtrickle.alter_stream_table('agg', query => '$Q1', shadow_build => true)" >/dev/null
eventually 60 "SELECT phase FROM pgtrickle.view_evolution_status('agg')" done
eventually 30 "SELECT refreshes_notified + pending_refreshes FROM pgtrickle.list_subscriptions()
                WHERE channel = 'swap_only'" 1
same_as_query agg "$Q1"

# --- A FULL new query swaps when nothing changed since its last refresh (no recompute
# under the lock); here the sources are quiet.
QF="SELECT g, count(*) AS n, string_agg(v::text, '-' ORDER BY v) AS vs FROM src GROUP BY g"
q -c "SELECT pgtrickle.alter_stream_table('agg', query => \$q\$$QF\$q\$, refresh_mode => 'FULL', shadow_build => true)" >/dev/null
eventually 60 "SELECT phase FROM pgtrickle.view_evolution_status('agg')" done
expect_eq "SELECT effective_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'agg'" FULL
same_as_query agg "$QF"
q -c "SELECT pgtrickle.alter_stream_table('agg', query => '$Q1', refresh_mode => 'DIFFERENTIAL', shadow_build => true)" >/dev/null
eventually 60 "SELECT phase FROM pgtrickle.view_evolution_status('agg')" done
same_as_query agg "$Q1"

# --- A shadow whose new source is dropped during the build (it goes to NEEDS_REINIT and is
# never run again) is rolled back by the scheduler's supervision.
set_gucs pg_trickle.shadow_refresh_throttle_ms=600000
q -c "CREATE TABLE extra (g int PRIMARY KEY, w int)" -c "INSERT INTO extra SELECT g, g FROM generate_series(0, 60) g" >/dev/null
q -c "SELECT pgtrickle.alter_stream_table('agg', query => 'SELECT s.g, count(*) AS n, sum(e.w) AS s FROM src s JOIN extra e ON e.g = s.g GROUP BY s.g', shadow_build => true)" >/dev/null
q -c "DROP TABLE extra" >/dev/null 2>&1
eventually 30 "SELECT phase, error ~ 'extra' FROM pgtrickle.view_evolution_status('agg')" "rolled_back|t"
nothing_left
same_as_query agg "$Q1"

# --- Cancelling: dropping the shadow table; dropping the stream table
q -c "SELECT pgtrickle.alter_stream_table('agg', query => '$Q2', shadow_build => true)" >/dev/null
eventually 30 "SELECT to_regclass('__pgt_shadow_agg') IS NOT NULL AND phase = 'building'
                 FROM pgtrickle.view_evolution_status('agg')" t
# During the build (it waits for the throttle): a second change of the query or the mode is
# refused, the shadow is pg_trickle's.
expect_error 55006 "SELECT pgtrickle.alter_stream_table('agg', query => '$Q1', shadow_build => true)"
expect_error 55006 "SELECT pgtrickle.alter_stream_table('agg', query => '$Q1')"
expect_error 55006 "SELECT pgtrickle.alter_stream_table('agg', refresh_mode => 'FULL')"
expect_error 55000 "SELECT pgtrickle.refresh_stream_table('__pgt_shadow_agg')"
expect_error 55000 "SELECT pgtrickle.drop_stream_table('__pgt_shadow_agg')"
expect_eq "SELECT in_shadow_build, shadow_table_name FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'agg'" \
  't|"public"."__pgt_shadow_agg"'
expect_eq "SELECT count(*) FROM pgtrickle.pgt_status() WHERE name LIKE '%shadow%'" 0
q -c "DROP TABLE __pgt_shadow_agg"
expect_eq "SELECT phase, error FROM pgtrickle.view_evolution_status('agg')" "rolled_back|the shadow table was dropped"
nothing_left
# Two ALTERs at once: the second waits for the first's transaction, then gets 55006.
q -c "BEGIN" -c "SELECT pgtrickle.alter_stream_table('agg', query => '$Q1', shadow_build => true)" \
  -c "SELECT pg_sleep(2)" -c "COMMIT" >/dev/null 2>&1 &
first=$!
sleep 0.7
expect_error 55006 "SELECT pgtrickle.alter_stream_table('agg', query => '$Q1', shadow_build => true)"
wait "$first" || die "the first of two concurrent ALTERs failed"
q -c "SELECT pgtrickle.drop_stream_table('dep')" >/dev/null
q -c "SELECT pgtrickle.drop_stream_table('agg')" >/dev/null
expect_eq "SELECT to_regclass('__pgt_shadow_agg') IS NULL, (SELECT count(*) FROM pgtrickle.pgt_stream_tables),
                  (SELECT count(*) FROM pgtrickle.pgt_shadow_builds),
                  (SELECT count(*) FROM pg_class WHERE relnamespace = 'pgtrickle_changes'::regnamespace AND relkind = 'r')" \
  "t|0|0|0"

# --- pg_trickle.shadow_timeout: a build not swapped in in time rolls back
set_gucs pg_trickle.shadow_refresh_throttle_ms=3000 pg_trickle.shadow_timeout=1
q -c "SELECT pgtrickle.create_stream_table('agg', '$Q1', refresh_mode => 'DIFFERENTIAL')" >/dev/null
q -c "SELECT pgtrickle.alter_stream_table('agg', query => '$Q2', shadow_build => true)" >/dev/null
eventually 60 "SELECT phase FROM pgtrickle.view_evolution_status('agg')" rolled_back
expect_eq "SELECT error ~ '^it was not swapped in within pg_trickle.shadow_timeout \(1 s\)'
             FROM pgtrickle.view_evolution_status('agg')" t
nothing_left
echo "shadow: $checks checks passed"
