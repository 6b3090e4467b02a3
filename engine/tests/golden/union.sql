-- query: SELECT v FROM d UNION SELECT y FROM b
-- identity: Multiplicity { count_column: "__pgt_count" }
-- full
SELECT "g"."v" AS "v", "g"."__pgt_count" AS "__pgt_count" FROM (SELECT "s"."c0" AS "v", count(*) AS "__pgt_count" FROM (SELECT "s".* FROM ((SELECT "s"."c0" AS "c0" FROM (SELECT "t"."v" AS "c0" FROM "public"."d" AS "t") AS "s") UNION ALL (SELECT "s"."c1" AS "c0" FROM (SELECT "t"."k" AS "c0", "t"."y" AS "c1" FROM "public"."b" AS "t") AS "s")) AS "s") AS "s" GROUP BY "s"."c0") AS "g"
-- delta
WITH "__pgt_d1" AS (SELECT "d"."v" AS "c0", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16387" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."v" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0),
"__pgt_d2" AS (SELECT "s"."c0" AS "c0", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d1") AS "s"),
"__pgt_d3" AS (SELECT "d"."k" AS "c0", "d"."y" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16385" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."k", "d"."y" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0),
"__pgt_d4" AS (SELECT "s"."c1" AS "c0", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d3") AS "s")
SELECT "s"."c0" AS "v", CAST(COALESCE(SUM("s"."__pgt_weight"), 0) AS int8) AS "__pgt_count" FROM (SELECT "s".* FROM ((SELECT * FROM "__pgt_d2") UNION ALL (SELECT * FROM "__pgt_d4")) AS "s") AS "s" GROUP BY "s"."c0"
-- apply
MERGE INTO "public"."st" AS "t" USING (SELECT * FROM "__pgt_delta" AS "d" WHERE "d"."v" IS NOT NULL) AS "d" ON "t"."v" = "d"."v" WHEN MATCHED AND "t"."__pgt_count" + "d"."__pgt_count" <= 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "__pgt_count" = ("t"."__pgt_count" + "d"."__pgt_count") WHEN NOT MATCHED AND "d"."__pgt_count" > 0 THEN INSERT ("v", "__pgt_count") VALUES ("d"."v", "d"."__pgt_count");
MERGE INTO "public"."st" AS "t" USING (SELECT * FROM "__pgt_delta" AS "d" WHERE ("d"."v" IS NULL)) AS "d" ON ("t"."v" = "d"."v" OR ("t"."v" IS NULL AND "d"."v" IS NULL)) WHEN MATCHED AND "t"."__pgt_count" + "d"."__pgt_count" <= 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "__pgt_count" = ("t"."__pgt_count" + "d"."__pgt_count") WHEN NOT MATCHED AND "d"."__pgt_count" > 0 THEN INSERT ("v", "__pgt_count") VALUES ("d"."v", "d"."__pgt_count")
