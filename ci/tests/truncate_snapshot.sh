#!/usr/bin/env bash
# Regression (found by the oracle's concurrent mode, seed 9): TRUNCATE is not MVCC-safe, so a
# REPEATABLE READ refresh whose snapshot predates a committed TRUNCATE reads the source as empty
# while the TRUNCATE marker stays invisible to it. The refresh must notice and run FULL, and the
# stream table must equal the query in the refresh's own snapshot (INV-1).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-trunc
trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
"$PG" start "$CLUSTER" >/dev/null
manual_refresh_only
fresh_db trunc
q <<'SQL'
CREATE TABLE a (id int PRIMARY KEY, k int);
CREATE TABLE c (id int PRIMARY KEY, k int);
INSERT INTO a SELECT g, g % 3 FROM generate_series(1, 9) g;
INSERT INTO c SELECT g, g % 3 FROM generate_series(1, 6) g;
SELECT pgtrickle.create_stream_table('j', 'SELECT a.id AS aid, c.id AS cid FROM a JOIN c ON a.k = c.k');
SQL
out=$(mktemp)
# Session 1 takes its snapshot, session 2 truncates c and commits, session 1 refreshes.
coproc S1 { q -v VERBOSITY=terse >"$out" 2>&1; }
echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM a;" >&"${S1[1]}"
sleep 1
q -c "TRUNCATE c"
cat >&"${S1[1]}" <<'SQL'
SELECT pgtrickle.refresh_stream_table('j');
SELECT 'diff=' || ((SELECT count(*) FROM (SELECT aid, cid FROM j EXCEPT ALL SELECT a.id, c.id FROM a JOIN c ON a.k = c.k) x)
       + (SELECT count(*) FROM (SELECT a.id, c.id FROM a JOIN c ON a.k = c.k EXCEPT ALL SELECT aid, cid FROM j) y));
COMMIT;
SQL
exec {S1[1]}>&-
wait "$S1_PID"
cat "$out"
grep -q 'NOTICE:  stream table "public"."j" using FULL refresh: a source table was truncated or rewritten' "$out" \
  || die "no FULL fallback notice"
grep -qx 'diff=0' "$out" || die "stream table differs from its query in the refresh snapshot"
# The TRUNCATE marker is consumed by the next refresh, in a fresh snapshot.
expect_notice 'stream table "public"."j" using FULL refresh: a source table was truncated' \
  "SELECT pgtrickle.refresh_stream_table('j')"
same_as_query j 'SELECT a.id AS aid, c.id AS cid FROM a JOIN c ON a.k = c.k'
rm -f "$out"
echo "truncate_snapshot: $((checks + 2)) passed, 0 failed"
