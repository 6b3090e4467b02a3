-- keyless_projection: SELECT x + 1 AS y FROM a
-- storage
CREATE TABLE "public"."st" ("y" int4, "__pgt_id_0" int4 NOT NULL);
CREATE UNIQUE INDEX ON "public"."st" ("__pgt_id_0")
-- full
WITH "__pgt_ins" AS (INSERT INTO "public"."st" ("y", "__pgt_id_0") SELECT "s"."c0" AS "y", "s"."c1" AS "__pgt_id_0" FROM (SELECT ("s"."c1" + 1) AS "c0", "s"."c0" AS "c1" FROM (SELECT "t"."k" AS "c0", "t"."x" AS "c1" FROM "public"."a" AS "t") AS "s") AS "s" RETURNING 1) SELECT (SELECT count(*) FROM "__pgt_ins"), frontier()
-- delta table
CREATE TEMP TABLE "pg_temp"."__pgt_delta_1_10" AS WITH "__pgt_d1" AS (SELECT "d"."k" AS "c0", "d"."x" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (false) GROUP BY "d"."k", "d"."x" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0)
SELECT "s"."c0" AS "y", "s"."c1" AS "__pgt_id_0", CAST(SUM("s"."__pgt_weight") AS int8) AS "__pgt_weight" FROM (SELECT ("s"."c1" + 1) AS "c0", "s"."c0" AS "c1", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d1") AS "s") AS "s" GROUP BY "s"."c0", "s"."c1" HAVING SUM("s"."__pgt_weight") <> 0 WITH NO DATA
-- fill (weighted: true)
WITH "__pgt_ins" AS (INSERT INTO "pg_temp"."__pgt_delta_1_10" WITH "__pgt_d1" AS (SELECT "d"."k" AS "c0", "d"."x" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (window_16384($1, $2, $3)) GROUP BY "d"."k", "d"."x" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0)
SELECT "s"."c0" AS "y", "s"."c1" AS "__pgt_id_0", CAST(SUM("s"."__pgt_weight") AS int8) AS "__pgt_weight" FROM (SELECT ("s"."c1" + 1) AS "c0", "s"."c0" AS "c1", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d1") AS "s") AS "s" GROUP BY "s"."c0", "s"."c1" HAVING SUM("s"."__pgt_weight") <> 0 RETURNING "__pgt_weight") SELECT (SELECT count(*) FROM "__pgt_ins"), (SELECT coalesce(sum("__pgt_weight") FILTER (WHERE "__pgt_weight" > 0), 0)::int8 FROM "__pgt_ins"), (SELECT coalesce(-sum("__pgt_weight") FILTER (WHERE "__pgt_weight" < 0), 0)::int8 FROM "__pgt_ins"), frontier(), markers()
-- counts
(counted by fill)
-- apply
MERGE INTO "public"."st" AS "t" USING (SELECT DISTINCT ON ("d"."__pgt_id_0") * FROM "pg_temp"."__pgt_delta_1_10" AS "d" ORDER BY "d"."__pgt_id_0", "d"."__pgt_weight" DESC) AS "d" ON "t"."__pgt_id_0" = "d"."__pgt_id_0" WHEN MATCHED AND "d"."__pgt_weight" < 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "y" = "d"."y" WHEN NOT MATCHED AND "d"."__pgt_weight" > 0 THEN INSERT ("y", "__pgt_id_0") VALUES ("d"."y", "d"."__pgt_id_0")
-- clear
DELETE FROM "pg_temp"."__pgt_delta_1_10"
-- capture 16384: k, x
