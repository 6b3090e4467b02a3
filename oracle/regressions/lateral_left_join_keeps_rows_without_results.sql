-- pg_trickle oracle fixture: LEFT JOIN LATERAL … ON true rendered as a CROSS JOIN
-- status: FIXED (FlatMap renders outer calls as LEFT JOIN LATERAL … ON true); ci/test reruns it
-- and it must pass.
-- found by: ci/oracle --seed 2 --case 0 on a build that drops the padding (a mutation check).
-- failure: oracle: diff_lat_series_outer differs from its query: 0 extra rows, 1 missing rows
-- (P0001): a row for which generate_series returned nothing lost its NULL-padded row.
-- replay: ci/oracle --replay <this file>, or psql -v ON_ERROR_STOP=1 -f <this file> in an empty database of a server that preloads pg_trickle
-- steps:
--   Write(Insert { table: b, rows: [[Some(1), Some(0), None, Some(0)]] })
CREATE EXTENSION pg_trickle;
CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean);
CREATE TABLE b (id int PRIMARY KEY, k int, w bigint, ts timestamp);
CREATE TABLE n (k int, x int);
CREATE TABLE m (k bigint, y numeric, s text);
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
SELECT pgtrickle.create_stream_table('diff_lat_series_outer', $q$SELECT b.id, g.x, g.o FROM b LEFT JOIN LATERAL generate_series(1, b.w % 4) WITH ORDINALITY AS g(x, o) ON true$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_lat_series_outer', $q$SELECT b.id, g.x, g.o FROM b LEFT JOIN LATERAL generate_series(1, b.w % 4) WITH ORDINALITY AS g(x, o) ON true$q$, schedule => '2d', refresh_mode => 'FULL');
INSERT INTO b VALUES (1, 0, NULL, timestamp '2026-01-01 00:00') ON CONFLICT DO NOTHING;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgtrickle.refresh_stream_table('diff_lat_series_outer');
SELECT pgtrickle.refresh_stream_table('full_lat_series_outer');
DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN SELECT count(*) INTO extra_rows_ FROM (SELECT id, x, o FROM diff_lat_series_outer EXCEPT ALL (SELECT b.id, g.x, g.o FROM b LEFT JOIN LATERAL generate_series(1, b.w % 4) WITH ORDINALITY AS g(x, o) ON true)) AS extra_; SELECT count(*) INTO missing_rows_ FROM ((SELECT b.id, g.x, g.o FROM b LEFT JOIN LATERAL generate_series(1, b.w % 4) WITH ORDINALITY AS g(x, o) ON true) EXCEPT ALL SELECT id, x, o FROM diff_lat_series_outer) AS missing_; IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION 'oracle: diff_lat_series_outer differs from its query: % extra rows, % missing rows', extra_rows_, missing_rows_; END IF; END $oracle$;
