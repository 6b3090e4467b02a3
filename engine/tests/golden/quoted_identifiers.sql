-- query: SELECT "select", count(*) AS "Count" FROM "Order Items" GROUP BY "select"
-- identity: Key { columns: ["select"] }
-- full
SELECT "g"."select" AS "select", "g"."__pgt_count" AS "Count", "g"."__pgt_count" AS "__pgt_count" FROM (SELECT "s"."c1" AS "select", count(*) AS "__pgt_count" FROM (SELECT "t"."id" AS "c0", "t"."select" AS "c1" FROM "public"."Order Items" AS "t") AS "s" GROUP BY "s"."c1") AS "g"
-- delta
SELECT "s"."c1" AS "select", CAST(COALESCE(SUM("s"."__pgt_weight"), 0) AS int8) AS "__pgt_count" FROM (SELECT "d"."id" AS "c0", "d"."select" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16388" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."id", "d"."select" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0) AS "s" GROUP BY "s"."c1"
-- apply
MERGE INTO "public"."st" AS "t" USING "__pgt_delta" AS "d" ON "t"."select" IS NOT DISTINCT FROM "d"."select" WHEN MATCHED AND "t"."__pgt_count" + "d"."__pgt_count" <= 0 THEN DELETE WHEN MATCHED THEN UPDATE SET "Count" = ("t"."__pgt_count" + "d"."__pgt_count"), "__pgt_count" = ("t"."__pgt_count" + "d"."__pgt_count") WHEN NOT MATCHED AND "d"."__pgt_count" > 0 THEN INSERT ("select", "Count", "__pgt_count") VALUES ("d"."select", "d"."__pgt_count", "d"."__pgt_count")
