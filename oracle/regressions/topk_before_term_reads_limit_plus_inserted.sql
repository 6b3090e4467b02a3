-- pg_trickle oracle fixture: ORDER BY … LIMIT whose before-state term read only the top limit
-- rows of the after state
-- status: FIXED (the before term reads the top limit + inserted rows, TopK); ci/test reruns it
-- and it must pass.
-- found by: ci/oracle --seed 5 --case 0 on a build that does not widen the slice (a mutation
-- check of the rule).
-- failure: oracle: diff_topk_distinct differs from its query: 1 extra rows, 0 missing rows
-- (P0001): a row pushed out of the top by an insertion was never deleted.
-- replay: ci/oracle --replay <this file>, or psql -v ON_ERROR_STOP=1 -f <this file> in an empty database of a server that preloads pg_trickle
-- steps:
--   Write(Insert { table: b, rows: [[Some(1), Some(1), Some(0), Some(0)]] })
--   Write(Insert { table: a, rows: [[Some(1), Some(0), Some(0), Some(0), Some(0)]] })
CREATE EXTENSION pg_trickle;
CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean);
CREATE TABLE b (id int PRIMARY KEY, k int, w bigint, ts timestamp);
CREATE TABLE n (k int, x int);
CREATE TABLE m (k bigint, y numeric, s text);
INSERT INTO b VALUES (2, 2, 0, timestamp '2026-01-01 00:00'), (3, 0, 0, timestamp '2026-01-01 00:00'), (4, 3, 0, timestamp '2026-01-01 00:00') ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
SELECT pgtrickle.create_stream_table('diff_topk_distinct', $q$SELECT DISTINCT k FROM b ORDER BY k NULLS FIRST LIMIT 3$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_topk_distinct', $q$SELECT DISTINCT k FROM b ORDER BY k NULLS FIRST LIMIT 3$q$, schedule => '2d', refresh_mode => 'FULL');
INSERT INTO b VALUES (1, 1, 0, timestamp '2026-01-01 00:00') ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgtrickle.refresh_stream_table('diff_topk_distinct');
SELECT pgtrickle.refresh_stream_table('full_topk_distinct');
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT k FROM diff_topk_distinct EXCEPT ALL (SELECT DISTINCT k FROM b ORDER BY k NULLS FIRST LIMIT 3)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((SELECT DISTINCT k FROM b ORDER BY k NULLS FIRST LIMIT 3) EXCEPT ALL SELECT k FROM diff_topk_distinct) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: diff_topk_distinct differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
