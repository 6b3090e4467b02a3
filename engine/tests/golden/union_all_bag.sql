-- query: SELECT v FROM d UNION ALL SELECT x FROM a
-- identity: Bag
-- full
SELECT "s"."c0" AS "v" FROM (SELECT "s".* FROM ((SELECT "s"."c0" AS "c0" FROM (SELECT "t"."v" AS "c0" FROM "public"."d" AS "t") AS "s") UNION ALL (SELECT "s"."c1" AS "c0" FROM (SELECT "t"."k" AS "c0", "t"."x" AS "c1" FROM "public"."a" AS "t") AS "s")) AS "s") AS "s"
-- delta
WITH "__pgt_d1" AS (SELECT "d"."v" AS "c0", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16387" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."v" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0),
"__pgt_d2" AS (SELECT "s"."c0" AS "c0", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d1") AS "s"),
"__pgt_d3" AS (SELECT "d"."k" AS "c0", "d"."x" AS "c1", CAST(SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2)) GROUP BY "d"."k", "d"."x" HAVING SUM(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END) <> 0),
"__pgt_d4" AS (SELECT "s"."c1" AS "c0", "s"."__pgt_weight" AS "__pgt_weight" FROM (SELECT * FROM "__pgt_d3") AS "s")
SELECT "s"."c0" AS "v", CAST(SUM("s"."__pgt_weight") AS int8) AS "__pgt_weight" FROM (SELECT "s".* FROM ((SELECT * FROM "__pgt_d2") UNION ALL (SELECT * FROM "__pgt_d4")) AS "s") AS "s" GROUP BY "s"."c0" HAVING SUM("s"."__pgt_weight") <> 0
-- apply
DELETE FROM "public"."st" AS "t" USING (SELECT "m".ctid AS "__pgt_ctid" FROM "__pgt_delta" AS "d" CROSS JOIN LATERAL (SELECT "t".ctid FROM "public"."st" AS "t" WHERE "t"."v" = "d"."v" LIMIT (- "d"."__pgt_weight")) AS "m" WHERE "d"."v" IS NOT NULL AND "d"."__pgt_weight" < 0) AS "x" WHERE "t".ctid = "x"."__pgt_ctid";
DELETE FROM "public"."st" AS "t" USING (SELECT "m".ctid AS "__pgt_ctid" FROM "__pgt_delta" AS "d" CROSS JOIN LATERAL (SELECT "t".ctid FROM "public"."st" AS "t" WHERE ("t"."v" = "d"."v" OR ("t"."v" IS NULL AND "d"."v" IS NULL)) LIMIT (- "d"."__pgt_weight")) AS "m" WHERE ("d"."v" IS NULL) AND "d"."__pgt_weight" < 0) AS "x" WHERE "t".ctid = "x"."__pgt_ctid";
INSERT INTO "public"."st" ("v") SELECT "d"."v" FROM "__pgt_delta" AS "d" CROSS JOIN LATERAL pg_catalog.generate_series(1, "d"."__pgt_weight") WHERE "d"."__pgt_weight" > 0
