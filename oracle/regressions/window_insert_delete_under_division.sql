-- pg_trickle oracle fixture: a row inserted and deleted again within one change window, under
-- an expression that fails on it (10 / 0)
-- status: FIXED (consolidated change windows, CHANGELOG [Unreleased]); ci/test reruns it and it
-- must pass: the window nets the row out before any expression sees it, as a FULL refresh does.
CREATE EXTENSION pg_trickle;
CREATE TABLE t (id int PRIMARY KEY, d int);
INSERT INTO t VALUES (1, 2), (2, 5);
SELECT pgtrickle.create_stream_table('diff_div', $q$SELECT id, 10 / d AS q FROM t$q$, schedule => '2d', refresh_mode => 'DIFFERENTIAL');
INSERT INTO t VALUES (3, 0);
UPDATE t SET d = 1 WHERE id = 1;
DELETE FROM t WHERE id = 3;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgtrickle.refresh_stream_table('diff_div');
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT id, q FROM diff_div EXCEPT ALL (SELECT id, 10 / d AS q FROM t)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((SELECT id, 10 / d AS q FROM t) EXCEPT ALL SELECT id, q FROM diff_div) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: diff_div differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
COMMIT;
