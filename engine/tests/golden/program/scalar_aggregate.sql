-- scalar_aggregate: SELECT count(*) AS n FROM a
-- storage
CREATE TABLE "public"."st" ("n" int8, "__pgt_count" int8)
-- full
WITH "__pgt_ins" AS (INSERT INTO "public"."st" ("n", "__pgt_count") SELECT "g"."__pgt_count" AS "n", "g"."__pgt_count" AS "__pgt_count" FROM (SELECT count(*) AS "__pgt_count" FROM (SELECT "t"."k" AS "c0" FROM "public"."a" AS "t") AS "s") AS "g" RETURNING 1) SELECT (SELECT count(*) FROM "__pgt_ins"), frontier()
-- delta table
CREATE TEMP TABLE "pg_temp"."__pgt_delta_1_10" AS SELECT CAST(COALESCE(SUM("s"."__pgt_weight"), 0) AS int8) AS "__pgt_count" FROM (SELECT "d"."k" AS "c0", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (false) GROUP BY "d"."k" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0) AS "s" WITH NO DATA
-- fill (weighted: false)
WITH "__pgt_ins" AS (INSERT INTO "pg_temp"."__pgt_delta_1_10" SELECT CAST(COALESCE(SUM("s"."__pgt_weight"), 0) AS int8) AS "__pgt_count" FROM (SELECT "d"."k" AS "c0", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (window_16384($1, $2, $3)) GROUP BY "d"."k" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0) AS "s" RETURNING 1) SELECT (SELECT count(*) FROM "__pgt_ins"), NULL::int8, NULL::int8, frontier(), markers()
-- counts
SELECT count(*)::int8, count(*)::int8 FROM "pg_temp"."__pgt_delta_1_10" AS "d" CROSS JOIN "public"."st" AS "t"
-- apply
UPDATE "public"."st" AS "t" SET "n" = ("t"."__pgt_count" + "d"."__pgt_count"), "__pgt_count" = ("t"."__pgt_count" + "d"."__pgt_count") FROM "pg_temp"."__pgt_delta_1_10" AS "d"
-- clear
DELETE FROM "pg_temp"."__pgt_delta_1_10"
-- capture 16384: k
