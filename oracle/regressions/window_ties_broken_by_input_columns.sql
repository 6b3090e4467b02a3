-- pg_trickle oracle fixture: rows tying in DISTINCT ON's ORDER BY numbered differently by the two
-- terms of a delta
-- status: FIXED (calls that number rows break ties by every input column, INV-22); ci/test
-- reruns it and it must pass.
-- found by: ci/oracle --seed 3 --case 1 on a build without the tie-breakers (a mutation check
-- of them); shrunk from 202 to 2 steps.
-- failure: oracle: diff_distinct_on_join differs from its query: 1 extra rows, 0 missing rows
-- (P0001): the new term kept one tied row, the old term another, and both stayed stored.
-- replay: ci/oracle --replay <this file>, or psql -v ON_ERROR_STOP=1 -f <this file> in an empty database of a server that preloads pg_trickle
-- steps:
--   Write(Insert { table: a, rows: [[Some(1), Some(4), Some(0), Some(0), Some(0)]] })
--   Write(Insert { table: a, rows: [[Some(1), Some(0), Some(0), Some(0), Some(0)]] })
CREATE EXTENSION pg_trickle;
CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean);
CREATE TABLE b (id int PRIMARY KEY, k int, w bigint, ts timestamp);
CREATE TABLE n (k int, x int);
CREATE TABLE m (k bigint, y numeric, s text);
INSERT INTO a VALUES (12, 1, 0.0, 'p', false) ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (13, 1, 0.0, 'p', false), (2, 1, 0.0, 'p', false), (6, 4, 0.0, 'p', false) ON CONFLICT DO NOTHING;
INSERT INTO b VALUES (14, 4, 0, timestamp '2026-01-01 13:00') ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (3, 0, 0.0, 'p', false), (14, 4, 0.0, 'p', false), (4, 0, 0.0, 'p', false), (7, 2, 0.0, 'p', false) ON CONFLICT DO NOTHING;
INSERT INTO b VALUES (1, 0, 0, timestamp '2026-01-01 00:00') ON CONFLICT DO NOTHING;
SELECT pgtrickle.create_stream_table('diff_distinct_on_join', $q$SELECT DISTINCT ON (a.k) a.k, b.id AS bid, b.ts FROM a JOIN b ON a.k = b.k ORDER BY a.k, b.ts DESC, b.id$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_distinct_on_join', $q$SELECT DISTINCT ON (a.k) a.k, b.id AS bid, b.ts FROM a JOIN b ON a.k = b.k ORDER BY a.k, b.ts DESC, b.id$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('imm_distinct_on_join', $q$SELECT DISTINCT ON (a.k) a.k, b.id AS bid, b.ts FROM a JOIN b ON a.k = b.k ORDER BY a.k, b.ts DESC, b.id$q$, schedule => '2d', refresh_mode => 'IMMEDIATE');
INSERT INTO a VALUES (1, 4, 0.0, 'p', false) ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgtrickle.refresh_stream_table('diff_distinct_on_join');
SELECT pgtrickle.refresh_stream_table('full_distinct_on_join');
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT k, bid, ts FROM diff_distinct_on_join EXCEPT ALL (SELECT DISTINCT ON (a.k) a.k, b.id AS bid, b.ts FROM a JOIN b ON a.k = b.k ORDER BY a.k, b.ts DESC, b.id)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((SELECT DISTINCT ON (a.k) a.k, b.id AS bid, b.ts FROM a JOIN b ON a.k = b.k ORDER BY a.k, b.ts DESC, b.id) EXCEPT ALL SELECT k, bid, ts FROM diff_distinct_on_join) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: diff_distinct_on_join differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
