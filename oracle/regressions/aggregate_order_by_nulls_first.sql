-- pg_trickle oracle fixture: ORDER BY … NULLS FIRST inside an aggregate is dropped
-- status: FIXED (the NULLS placement of an ORDER BY inside an aggregate call is rendered as
-- written, engine SortKey); ci/test reruns it and it must pass.
-- found by: ci/oracle --seed 7 --case 4 on a build that drops the placement (a mutation check
-- of the fix); shrunk from 106 to 2 steps.
-- failure: oracle: diff_agg_ordered_bag differs from its query: 1 extra rows, 1 missing rows
-- (P0001): the recomputed group of array_agg(y ORDER BY y NULLS FIRST) put its NULL last.
-- replay: ci/oracle --replay <this file>, or psql -v ON_ERROR_STOP=1 -f <this file> in an empty database of a server that preloads pg_trickle
CREATE EXTENSION pg_trickle;
CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean);
CREATE TABLE b (id int PRIMARY KEY, k int, w bigint, ts timestamp);
CREATE TABLE n (k int, x int);
CREATE TABLE m (k bigint, y numeric, s text);
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
SELECT pgtrickle.create_stream_table('diff_agg_ordered_bag', $q$SELECT s, array_agg(y ORDER BY y NULLS FIRST) AS ay, array_agg(k ORDER BY k DESC NULLS LAST) AS ak FROM m GROUP BY s$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_agg_ordered_bag', $q$SELECT s, array_agg(y ORDER BY y NULLS FIRST) AS ay, array_agg(k ORDER BY k DESC NULLS LAST) AS ak FROM m GROUP BY s$q$, schedule => '2d', refresh_mode => 'FULL');
INSERT INTO m VALUES (0, 0.5, 'x'), (0, NULL, 'x');
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgtrickle.refresh_stream_table('diff_agg_ordered_bag');
SELECT pgtrickle.refresh_stream_table('full_agg_ordered_bag');
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT s, ay, ak FROM diff_agg_ordered_bag EXCEPT ALL (SELECT s, array_agg(y ORDER BY y NULLS FIRST) AS ay, array_agg(k ORDER BY k DESC NULLS LAST) AS ak FROM m GROUP BY s)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((SELECT s, array_agg(y ORDER BY y NULLS FIRST) AS ay, array_agg(k ORDER BY k DESC NULLS LAST) AS ak FROM m GROUP BY s) EXCEPT ALL SELECT s, ay, ak FROM diff_agg_ordered_bag) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: diff_agg_ordered_bag differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
