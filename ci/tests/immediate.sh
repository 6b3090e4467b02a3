#!/usr/bin/env bash
# IMMEDIATE mode: the stream table equals its defining query after every statement, also with
# several sessions writing both sides of a join at once (pgbench, many rounds, READ COMMITTED
# and REPEATABLE READ with retries of serialization failures: INV-5); TRUNCATE of a source
# repopulates; switching modes works both ways.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-imm
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
"$PG" start "$CLUSTER" >/dev/null
fresh_db imm
q <<'SQL'
CREATE TABLE acc (id int PRIMARY KEY, branch int NOT NULL, bal int NOT NULL);
CREATE TABLE br (id int PRIMARY KEY, region text NOT NULL);
INSERT INTO br SELECT g, 'r' || (g % 3) FROM generate_series(1, 10) g;
INSERT INTO acc SELECT g, 1 + g % 10, g FROM generate_series(1, 200) g;
SELECT pgtrickle.create_stream_table('by_region', 'SELECT b.region, count(*) AS n, sum(a.bal) AS total FROM acc a JOIN br b ON b.id = a.branch GROUP BY b.region', refresh_mode => 'IMMEDIATE');
SELECT pgtrickle.create_stream_table('acc_region', 'SELECT a.id, a.bal, b.region FROM acc a JOIN br b ON b.id = a.branch', refresh_mode => 'IMMEDIATE');
SQL
AGG='SELECT b.region, count(*) AS n, sum(a.bal) AS total FROM acc a JOIN br b ON b.id = a.branch GROUP BY b.region'
ROWS='SELECT a.id, a.bal, b.region FROM acc a JOIN br b ON b.id = a.branch'
both_match() {
  expect_eq "$(diff_sql by_region "$AGG")" 0
  expect_eq "$(diff_sql acc_region "$ROWS")" 0
}
both_match
# After every statement, with no refresh called.
while IFS= read -r stmt; do
  q -c "$stmt"
  both_match
done <<'SQL'
INSERT INTO acc VALUES (1000, 3, 50)
UPDATE acc SET bal = bal + 1 WHERE id % 7 = 0
UPDATE acc SET branch = 4 WHERE branch = 5
DELETE FROM br WHERE id = 4
INSERT INTO br VALUES (4, 'r9'), (11, 'r1')
UPDATE br SET region = 'r0' WHERE id IN (1, 2)
UPDATE acc SET id = id + 5000 WHERE id < 20
DELETE FROM acc WHERE bal > 150
BEGIN; DELETE FROM acc WHERE branch = 2; DELETE FROM br WHERE id = 2; COMMIT
BEGIN; INSERT INTO acc VALUES (2000, 11, 1); DELETE FROM acc WHERE id = 2000; COMMIT
SQL
# TRUNCATE of a source repopulates (here: to empty, then back).
expect_notice 'stream table "public"."by_region" using FULL refresh: a source table was truncated' "TRUNCATE br"
both_match
q -c "INSERT INTO br SELECT g, 'r' || (g % 3) FROM generate_series(1, 12) g"
both_match
# Concurrent writers on both sides of the join (INV-5), several rounds.
dir=$(mktemp -d)
cat >"$dir/acc_upsert.sql" <<'SQL'
\set id random(1, 300)
\set b random(1, 12)
INSERT INTO acc VALUES (:id, :b, 1) ON CONFLICT (id) DO UPDATE SET bal = acc.bal + 1, branch = :b;
SQL
cat >"$dir/acc_delete.sql" <<'SQL'
\set id random(1, 300)
DELETE FROM acc WHERE id = :id;
SQL
cat >"$dir/br_update.sql" <<'SQL'
\set id random(1, 12)
\set r random(0, 3)
UPDATE br SET region = 'r' || :r WHERE id = :id;
SQL
cat >"$dir/br_churn.sql" <<'SQL'
\set id random(13, 16)
DELETE FROM br WHERE id = :id;
INSERT INTO br VALUES (:id, 'r1') ON CONFLICT DO NOTHING;
SQL
port=$("$PG" port "$CLUSTER")
bench() {
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 4 -j 2 -t 120 "$@" \
    -f "$dir/acc_upsert.sql" -f "$dir/acc_delete.sql" -f "$dir/br_update.sql" -f "$dir/br_churn.sql" imm \
    >"$dir/out" 2>&1 || { cat "$dir/out"; die "pgbench failed"; }
  grep -E '^number of (transactions actually processed|failed|transactions retried)' "$dir/out" || true
}
for round in 1 2 3; do
  bench
  both_match
done
# REPEATABLE READ writers: a writer whose snapshot predates another's maintenance fails with
# 40001 rather than applying a stale delta; pgbench retries it.
q -c "ALTER DATABASE imm SET default_transaction_isolation = 'repeatable read'"
for round in 1 2; do
  bench --max-tries=1000
  both_match
done
q -c "ALTER DATABASE imm RESET default_transaction_isolation"
rm -rf "$dir"
# Switching modes both ways.
q -c "SELECT pgtrickle.alter_stream_table('by_region', refresh_mode => 'DIFFERENTIAL')"
q -c "UPDATE acc SET bal = bal + 100 WHERE id % 3 = 0"
expect_eq "$(diff_sql acc_region "$ROWS")" 0
q -c "SELECT pgtrickle.refresh_stream_table('by_region')"
both_match
q -c "UPDATE acc SET bal = bal - 1"
q -c "SELECT pgtrickle.alter_stream_table('by_region', refresh_mode => 'IMMEDIATE')"
both_match
q -c "DELETE FROM acc WHERE id % 5 = 0"
both_match
expect_eq "SELECT string_agg(effective_mode, ',' ORDER BY pgt_id) FROM pgtrickle.pgt_stream_tables" "IMMEDIATE,IMMEDIATE"
echo "immediate: $checks passed, 0 failed"
