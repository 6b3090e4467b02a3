-- query: SELECT DISTINCT x FROM a
-- identity: Multiplicity { count_column: "__pgt_count" }
-- full
SELECT "g"."x" AS "x", "g"."__pgt_count" AS "__pgt_count" FROM (SELECT "s"."c0" AS "x", count(*) AS "__pgt_count" FROM (SELECT "s"."c1" AS "c0" FROM (SELECT "t"."k" AS "c0", "t"."x" AS "c1" FROM "public"."a" AS "t") AS "s") AS "s" GROUP BY "s"."c0") AS "g"
-- delta
WITH "__pgt_d1" AS (SELECT "d"."k" AS "c0", "d"."x" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."k", "d"."x" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0)
SELECT "s"."c0" AS "x", CAST(COALESCE(SUM("s"."__pgt_weight"), 0) AS int8) AS "__pgt_count" FROM (SELECT "s"."c1" AS "c0", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d1") AS "s") AS "s" GROUP BY "s"."c0"
-- apply
MERGE INTO "public"."st" AS "t" USING (SELECT * FROM "__pgt_delta" AS "d" WHERE "d"."x" IS NOT NULL) AS "d" ON "t"."x" = "d"."x" WHEN MATCHED AND "t"."__pgt_count" + "d"."__pgt_count" <= 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "__pgt_count" = ("t"."__pgt_count" + "d"."__pgt_count") WHEN NOT MATCHED AND "d"."__pgt_count" > 0 THEN INSERT ("x", "__pgt_count") VALUES ("d"."x", "d"."__pgt_count");
MERGE INTO "public"."st" AS "t" USING (SELECT * FROM "__pgt_delta" AS "d" WHERE ("d"."x" IS NULL)) AS "d" ON ("t"."x" = "d"."x" OR ("t"."x" IS NULL AND "d"."x" IS NULL)) WHEN MATCHED AND "t"."__pgt_count" + "d"."__pgt_count" <= 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "__pgt_count" = ("t"."__pgt_count" + "d"."__pgt_count") WHEN NOT MATCHED AND "d"."__pgt_count" > 0 THEN INSERT ("x", "__pgt_count") VALUES ("d"."x", "d"."__pgt_count")
