-- query: SELECT count(*) AS n, sum(x) AS s FROM a
-- identity: Single
-- full
SELECT "g"."__pgt_count" AS "n", CASE WHEN ("g"."__pgt_cnt_1" = 0) THEN NULL ELSE CAST("g"."__pgt_sum_1" AS int8) END AS "s", "g"."__pgt_count" AS "__pgt_count", "g"."__pgt_sum_1" AS "__pgt_sum_1", "g"."__pgt_cnt_1" AS "__pgt_cnt_1" FROM (SELECT count(*) AS "__pgt_count", CAST(COALESCE(SUM("s"."c1"), 0) AS int8) AS "__pgt_sum_1", count(*) FILTER (WHERE ("s"."c1" IS NOT NULL)) AS "__pgt_cnt_1" FROM (SELECT "t"."k" AS "c0", "t"."x" AS "c1" FROM "public"."a" AS "t") AS "s") AS "g"
-- delta
SELECT CAST(COALESCE(SUM("s"."__pgt_weight"), 0) AS int8) AS "__pgt_count", CAST(COALESCE(SUM("s"."c1" * "s"."__pgt_weight"), 0) AS int8) AS "__pgt_sum_1", CAST(COALESCE(SUM("s"."__pgt_weight") FILTER (WHERE ("s"."c1" IS NOT NULL)), 0) AS int8) AS "__pgt_cnt_1" FROM (SELECT "d"."k" AS "c0", "d"."x" AS "c1", CAST(CASE WHEN "d"."__pgt_op" = 'I' THEN 1 ELSE -1 END AS int8) AS "__pgt_weight" FROM "pgtrickle_changes"."changes_16384" AS "d" WHERE (pg_visible_in_snapshot("__pgt_xid", $1) AND NOT pg_visible_in_snapshot("__pgt_xid", $2))) AS "s"
-- apply
UPDATE "public"."st" AS "t" SET "n" = ("t"."__pgt_count" + "d"."__pgt_count"), "s" = CASE WHEN (("t"."__pgt_cnt_1" + "d"."__pgt_cnt_1") = 0) THEN NULL ELSE CAST(("t"."__pgt_sum_1" + "d"."__pgt_sum_1") AS int8) END, "__pgt_count" = ("t"."__pgt_count" + "d"."__pgt_count"), "__pgt_sum_1" = ("t"."__pgt_sum_1" + "d"."__pgt_sum_1"), "__pgt_cnt_1" = ("t"."__pgt_cnt_1" + "d"."__pgt_cnt_1") FROM "__pgt_delta" AS "d"
