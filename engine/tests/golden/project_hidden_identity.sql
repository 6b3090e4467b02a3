-- query: SELECT x + 1 AS y FROM a
-- identity: Key { columns: ["__pgt_id_0"] }
-- full
SELECT "s"."c0" AS "y", "s"."c1" AS "__pgt_id_0" FROM (SELECT ("s"."c1" + 1) AS "c0", "s"."c0" AS "c1" FROM (SELECT "t"."k" AS "c0", "t"."x" AS "c1" FROM "public"."a" AS "t") AS "s") AS "s"
-- delta
WITH "__pgt_d1" AS (SELECT "d"."k" AS "c0", "d"."x" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."k", "d"."x" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0)
SELECT "s"."c0" AS "y", "s"."c1" AS "__pgt_id_0", CAST(SUM("s"."__pgt_weight") AS int8) AS "__pgt_weight" FROM (SELECT ("s"."c1" + 1) AS "c0", "s"."c0" AS "c1", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d1") AS "s") AS "s" GROUP BY "s"."c0", "s"."c1" HAVING SUM("s"."__pgt_weight") <> 0
-- apply
MERGE INTO "public"."st" AS "t" USING (SELECT DISTINCT ON ("d"."__pgt_id_0") * FROM "__pgt_delta" AS "d" ORDER BY "d"."__pgt_id_0", "d"."__pgt_weight" DESC) AS "d" ON "t"."__pgt_id_0" = "d"."__pgt_id_0" WHEN MATCHED AND "d"."__pgt_weight" < 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "y" = "d"."y" WHEN NOT MATCHED AND "d"."__pgt_weight" > 0 THEN INSERT ("y", "__pgt_id_0") VALUES ("d"."y", "d"."__pgt_id_0")
