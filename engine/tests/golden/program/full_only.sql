-- full_only: SELECT k, random() AS r FROM a
-- storage
CREATE TABLE "public"."st" ()
-- full
WITH "__pgt_ins" AS (INSERT INTO "public"."st" () SELECT k, random() AS r FROM a RETURNING 1) SELECT (SELECT count(*) FROM "__pgt_ins"), frontier()
-- no differential program
