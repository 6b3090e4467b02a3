-- query: SELECT k, x FROM a ORDER BY x DESC, k LIMIT 3
-- identity: Key { columns: ["k"] }
-- full
WITH "__pgt_d1" AS (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1" FROM (SELECT "t"."k" AS "c0", "t"."x" AS "c1" FROM "public"."a" AS "t") AS "s" ORDER BY "s"."c1" DESC, "s"."c0", "s"."c0", "s"."c1" LIMIT 3)
SELECT "s"."c0" AS "k", "s"."c1" AS "x" FROM (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1" FROM (SELECT * FROM "__pgt_d1") AS "s") AS "s"
-- delta
WITH "__pgt_d1" AS (SELECT "d"."k" AS "c0", "d"."x" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."k", "d"."x" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0),
"__pgt_d2" AS (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1" FROM (SELECT "t"."k" AS "c0", "t"."x" AS "c1" FROM "public"."a" AS "t") AS "s" ORDER BY "s"."c1" DESC, "s"."c0", "s"."c0", "s"."c1" LIMIT 3 + (SELECT COALESCE(SUM(GREATEST("d"."__pgt_weight", 0)), 0) FROM (SELECT * FROM "__pgt_d1") AS "d")),
"__pgt_d3" AS (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1" FROM (SELECT * FROM "__pgt_d2") AS "s" ORDER BY "s"."c1" DESC, "s"."c0", "s"."c0", "s"."c1" LIMIT 3),
"__pgt_d4" AS (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1", (- "s"."__pgt_weight") AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d1") AS "s"),
"__pgt_d5" AS (SELECT "s".* FROM ((SELECT "s".*, CAST(1 AS int8) AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d2") AS "s") UNION ALL (SELECT * FROM "__pgt_d4")) AS "s"),
"__pgt_d6" AS (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1", CAST(SUM("s"."__pgt_weight") AS int8) AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d5") AS "s" GROUP BY "s"."c0", "s"."c1" HAVING SUM("s"."__pgt_weight") <> 0),
"__pgt_d7" AS (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1" FROM (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1" FROM (SELECT * FROM "__pgt_d6") AS "s" CROSS JOIN LATERAL generate_series(1, "s"."__pgt_weight") AS "g") AS "s" ORDER BY "s"."c1" DESC, "s"."c0", "s"."c0", "s"."c1" LIMIT 3),
"__pgt_d8" AS (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1", CAST(-1 AS int8) AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d7") AS "s"),
"__pgt_d9" AS (SELECT "s".* FROM ((SELECT "s".*, CAST(1 AS int8) AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d3") AS "s") UNION ALL (SELECT * FROM "__pgt_d8")) AS "s")
SELECT "s"."c0" AS "k", "s"."c1" AS "x", CAST(SUM("s"."__pgt_weight") AS int8) AS "__pgt_weight" FROM (SELECT "s"."c0" AS "c0", "s"."c1" AS "c1", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d9") AS "s") AS "s" GROUP BY "s"."c0", "s"."c1" HAVING SUM("s"."__pgt_weight") <> 0
-- apply
MERGE INTO "public"."st" AS "t" USING (SELECT DISTINCT ON ("d"."k") * FROM "__pgt_delta" AS "d" ORDER BY "d"."k", "d"."__pgt_weight" DESC) AS "d" ON "t"."k" = "d"."k" WHEN MATCHED AND "d"."__pgt_weight" < 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "x" = "d"."x" WHEN NOT MATCHED AND "d"."__pgt_weight" > 0 THEN INSERT ("k", "x") VALUES ("d"."k", "d"."x")
