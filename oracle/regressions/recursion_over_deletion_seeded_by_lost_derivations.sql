-- pg_trickle oracle fixture: a recursion's over-deletion that misses derivations lost with a deleted row
-- status: FIXED (the rows of Δ_T S(R) with a negative weight seed the over-deletion); ci/test
-- reruns it and it must pass.
-- found by: ci/oracle --seed 1 --case 0 on a build whose over-deletion is seeded by ΔB alone
-- (a mutation check); shrunk from 112 to 4 steps.
-- failure: oracle: imm_rec_two_sources differs from its query: 1 extra rows, 0 missing rows
-- (P0001): a row derived through the deleted b row stayed.
-- replay: ci/oracle --replay <this file>, or psql -v ON_ERROR_STOP=1 -f <this file> in an empty database of a server that preloads pg_trickle
-- steps:
--   Write(Insert { table: n, rows: [[Some(0), Some(0)]] })
--   WriteRefresh { write: Insert { table: b, rows: [[Some(3), Some(0), Some(0), Some(0)]] }, family: 0 }
--   Write(DeleteBoth { left: a, right: b, key: Some(0) })
--   Write(Insert { table: a, rows: [[Some(1), Some(0), Some(0), Some(0), Some(0)]] })
CREATE EXTENSION pg_trickle;
CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean);
CREATE TABLE b (id int PRIMARY KEY, k int, w bigint, ts timestamp);
CREATE TABLE n (k int, x int);
CREATE TABLE m (k bigint, y numeric, s text);
INSERT INTO a VALUES (1, 3, 0.0, 'p', false) ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
SELECT pgtrickle.create_stream_table('diff_rec_two_sources', $q$WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_rec_two_sources', $q$WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('imm_rec_two_sources', $q$WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r$q$, schedule => '2d', refresh_mode => 'IMMEDIATE');
INSERT INTO n VALUES (0, 0);
INSERT INTO b VALUES (3, 0, 0, timestamp '2026-01-01 00:00') ON CONFLICT DO NOTHING;
BEGIN;
DELETE FROM a WHERE k = 0;
DELETE FROM b WHERE k = 0;
COMMIT;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgtrickle.refresh_stream_table('diff_rec_two_sources');
SELECT pgtrickle.refresh_stream_table('full_rec_two_sources');
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT s, d FROM diff_rec_two_sources EXCEPT ALL (WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r) EXCEPT ALL SELECT s, d FROM diff_rec_two_sources) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: diff_rec_two_sources differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT s, d FROM full_rec_two_sources EXCEPT ALL (WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r) EXCEPT ALL SELECT s, d FROM full_rec_two_sources) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: full_rec_two_sources differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT s, d FROM imm_rec_two_sources EXCEPT ALL (WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r) EXCEPT ALL SELECT s, d FROM imm_rec_two_sources) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: imm_rec_two_sources differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
