-- pg_trickle oracle fixture: a TRUNCATE after a write that empties a HAVING group fails the refresh
-- status: FIXED (the delta reads no buffer row when its window holds a TRUNCATE or paused
-- marker: the marker gate is a one-time filter of every buffer scan, evaluated before any
-- expression over the window's rows); ci/test reruns it and it must pass.
-- found by: ci/oracle --iterations 50000 --seed 20261121, case 8 (group nopk2, family
-- agg_bag_join), shrunk from 247 to 7 steps by the oracle, then minimised by hand.
-- failure: refresh diff_avg_having: division by zero (22012). The window holds the update
-- (x 2 -> 0, so sum(x) > 1 stops holding) and then a TRUNCATE; the refresh should run FULL
-- ("a source table was truncated") and store nothing, as the FULL twin does. Without the
-- HAVING, without the TRUNCATE, or with count(*) instead of avg(x), it passes; a keyed source
-- (id int PRIMARY KEY) fails the same way. In that run it also hit agg_join3 (pk3, HAVING
-- sum(b.w) > 5 with avg(b.w); cases 67 and 247): 3 of 261 cases, every one with a TRUNCATE;
-- and with --seed 2 --group pk2 --group pk3, 3 of 284 cases, all agg_join3 (case 15 shrank to
-- 7 steps: c(2,'p') a(1,2) b(11,2,w 14) refreshed, then UPDATE b SET w = 0, TRUNCATE b).
CREATE EXTENSION pg_trickle;
CREATE TABLE n (k int, x int);
INSERT INTO n VALUES (3, 2);
SELECT pgtrickle.create_stream_table('diff_avg_having', $q$SELECT k, avg(x) AS ax FROM n GROUP BY k HAVING sum(x) > 1$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_avg_having', $q$SELECT k, avg(x) AS ax FROM n GROUP BY k HAVING sum(x) > 1$q$, schedule => '2d', refresh_mode => 'FULL');
UPDATE n SET x = 0 WHERE k = 3;
TRUNCATE n;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgtrickle.refresh_stream_table('diff_avg_having');
SELECT pgtrickle.refresh_stream_table('full_avg_having');
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT k, ax FROM diff_avg_having EXCEPT ALL (SELECT k, avg(x) AS ax FROM n GROUP BY k HAVING sum(x) > 1)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((SELECT k, avg(x) AS ax FROM n GROUP BY k HAVING sum(x) > 1) EXCEPT ALL SELECT k, ax FROM diff_avg_having) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: diff_avg_having differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
COMMIT;
