-- pg_trickle oracle fixture: an IMMEDIATE stream table over an IMMEDIATE stream table
-- status: FIXED (the downstream maintenance, fired by the upstream's apply, which runs in a
-- security-restricted operation, created its delta temp table inside it; that one statement,
-- which runs no user code, now lifts the restriction); ci/test reruns it and it must pass.
-- found by: ci/oracle --seed 1 --case 5; shrunk from 11 to 1 steps
-- failure: INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING: cannot create temporary table within security-restricted operation (42501)
-- replayed in a fresh database: fails the same way
-- replay: ci/oracle --replay <this file>, or psql -v ON_ERROR_STOP=1 -f <this file> in an empty database of a server that preloads pg_trickle
-- steps:
--   Write(InsertDelete { table: a, row: [Some(1), Some(0), Some(0), Some(0), Some(0)] })
CREATE EXTENSION pg_trickle;
CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean);
CREATE TABLE b (id int PRIMARY KEY, k int, w bigint, ts timestamp);
CREATE TABLE n (k int, x int);
INSERT INTO b VALUES (1, 0, 0, timestamp '2026-01-01 00:00') ON CONFLICT DO NOTHING;
INSERT INTO a VALUES (2, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
SELECT pgtrickle.create_stream_table('diff_dag_agg_over_join_up', $q$SELECT a.id AS aid, b.id AS bid, a.k, b.w FROM a JOIN b ON a.k = b.k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_agg_over_join', $q$SELECT u.k, count(*) AS cnt, sum(u.w) AS sw, max(u.bid) AS mb FROM diff_dag_agg_over_join_up AS u GROUP BY u.k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_agg_over_join_up', $q$SELECT a.id AS aid, b.id AS bid, a.k, b.w FROM a JOIN b ON a.k = b.k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_agg_over_join', $q$SELECT u.k, count(*) AS cnt, sum(u.w) AS sw, max(u.bid) AS mb FROM full_dag_agg_over_join_up AS u GROUP BY u.k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('imm_dag_agg_over_join_up', $q$SELECT a.id AS aid, b.id AS bid, a.k, b.w FROM a JOIN b ON a.k = b.k$q$, schedule => '2d', refresh_mode => 'IMMEDIATE');
SELECT pgtrickle.create_stream_table('imm_dag_agg_over_join', $q$SELECT u.k, count(*) AS cnt, sum(u.w) AS sw, max(u.bid) AS mb FROM imm_dag_agg_over_join_up AS u GROUP BY u.k$q$, schedule => '2d', refresh_mode => 'IMMEDIATE');
SELECT pgtrickle.create_stream_table('diff_dag_join_over_filter_up', $q$SELECT id, k, v FROM a WHERE f IS NOT FALSE$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_join_over_filter', $q$SELECT u.id, b.id AS bid, u.v, b.w FROM diff_dag_join_over_filter_up AS u JOIN b ON u.k = b.k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_join_over_filter_up', $q$SELECT id, k, v FROM a WHERE f IS NOT FALSE$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_join_over_filter', $q$SELECT u.id, b.id AS bid, u.v, b.w FROM full_dag_join_over_filter_up AS u JOIN b ON u.k = b.k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('diff_dag_agg_over_semi_up', $q$SELECT a.id, a.k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_agg_over_semi', $q$SELECT u.k, count(*) AS cnt FROM diff_dag_agg_over_semi_up AS u GROUP BY u.k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_agg_over_semi_up', $q$SELECT a.id, a.k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_agg_over_semi', $q$SELECT u.k, count(*) AS cnt FROM full_dag_agg_over_semi_up AS u GROUP BY u.k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('diff_dag_count_over_distinct_up', $q$SELECT DISTINCT k FROM b$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_count_over_distinct', $q$SELECT count(*) AS cnt, min(u.k) AS mn FROM diff_dag_count_over_distinct_up AS u$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_count_over_distinct_up', $q$SELECT DISTINCT k FROM b$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_count_over_distinct', $q$SELECT count(*) AS cnt, min(u.k) AS mn FROM full_dag_count_over_distinct_up AS u$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('imm_dag_count_over_distinct_up', $q$SELECT DISTINCT k FROM b$q$, schedule => '2d', refresh_mode => 'IMMEDIATE');
SELECT pgtrickle.create_stream_table('imm_dag_count_over_distinct', $q$SELECT count(*) AS cnt, min(u.k) AS mn FROM imm_dag_count_over_distinct_up AS u$q$, schedule => '2d', refresh_mode => 'IMMEDIATE');
SELECT pgtrickle.create_stream_table('diff_dag_anti_join_on_upstream_up', $q$SELECT id, k FROM a WHERE v > 0$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_anti_join_on_upstream', $q$SELECT b.id FROM b WHERE NOT EXISTS (SELECT 1 FROM diff_dag_anti_join_on_upstream_up AS u WHERE u.k = b.k)$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_anti_join_on_upstream_up', $q$SELECT id, k FROM a WHERE v > 0$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_anti_join_on_upstream', $q$SELECT b.id FROM b WHERE NOT EXISTS (SELECT 1 FROM full_dag_anti_join_on_upstream_up AS u WHERE u.k = b.k)$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('diff_dag_agg_over_left_join_up', $q$SELECT a.id AS aid, b.id AS bid, b.w FROM a LEFT JOIN b ON a.k = b.k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_agg_over_left_join', $q$SELECT u.aid, count(u.bid) AS cnt, sum(u.w) AS sw FROM diff_dag_agg_over_left_join_up AS u GROUP BY u.aid$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_agg_over_left_join_up', $q$SELECT a.id AS aid, b.id AS bid, b.w FROM a LEFT JOIN b ON a.k = b.k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_agg_over_left_join', $q$SELECT u.aid, count(u.bid) AS cnt, sum(u.w) AS sw FROM full_dag_agg_over_left_join_up AS u GROUP BY u.aid$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('diff_dag_filter_over_agg_up', $q$SELECT k, count(*) AS cnt, sum(w) AS sw FROM b GROUP BY k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_filter_over_agg', $q$SELECT u.k, u.cnt FROM diff_dag_filter_over_agg_up AS u WHERE u.sw > 10$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_filter_over_agg_up', $q$SELECT k, count(*) AS cnt, sum(w) AS sw FROM b GROUP BY k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_filter_over_agg', $q$SELECT u.k, u.cnt FROM full_dag_filter_over_agg_up AS u WHERE u.sw > 10$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('diff_dag_join_over_bag_agg_up', $q$SELECT k, count(*) AS cnt, sum(x) AS sx FROM n GROUP BY k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_join_over_bag_agg', $q$SELECT a.id, u.cnt, u.sx FROM a JOIN diff_dag_join_over_bag_agg_up AS u ON u.k = a.k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_join_over_bag_agg_up', $q$SELECT k, count(*) AS cnt, sum(x) AS sx FROM n GROUP BY k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_join_over_bag_agg', $q$SELECT a.id, u.cnt, u.sx FROM a JOIN full_dag_join_over_bag_agg_up AS u ON u.k = a.k$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('diff_dag_bag_over_bag_up', $q$SELECT k, x FROM n WHERE x > 0$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('diff_dag_bag_over_bag', $q$SELECT u.k, count(*) AS cnt FROM diff_dag_bag_over_bag_up AS u GROUP BY u.k$q$, schedule => '2d', refresh_mode => 'AUTO');
SELECT pgtrickle.create_stream_table('full_dag_bag_over_bag_up', $q$SELECT k, x FROM n WHERE x > 0$q$, schedule => '2d', refresh_mode => 'FULL');
SELECT pgtrickle.create_stream_table('full_dag_bag_over_bag', $q$SELECT u.k, count(*) AS cnt FROM full_dag_bag_over_bag_up AS u GROUP BY u.k$q$, schedule => '2d', refresh_mode => 'FULL');
BEGIN;
INSERT INTO a VALUES (1, 0, 0.0, 'p', false) ON CONFLICT DO NOTHING;
