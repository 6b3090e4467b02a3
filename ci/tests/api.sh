#!/usr/bin/env bash
# The SQL API end to end in a preloaded cluster: every function's happy path, each error path by
# SQLSTATE, the NOTICEs of FULL fallbacks, refresh history, the storage write guard, and DROP
# handling. Correctness under random and concurrent writes is the oracle's job (ci/oracle).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-api
trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
"$PG" start "$CLUSTER" >/dev/null
manual_refresh_only
fresh_db api

q <<'SQL'
CREATE TABLE "Order Items" (id int PRIMARY KEY, "select" text, qty int, cust int);
CREATE TABLE customers (id int PRIMARY KEY, region text);
CREATE SCHEMA s2;
INSERT INTO customers VALUES (1, 'eu'), (2, 'us');
INSERT INTO "Order Items" SELECT g, 'i' || g, g % 4, 1 + g % 2 FROM generate_series(1, 10) g;
SQL

# --- create_stream_table ------------------------------------------------------------------
JQ='SELECT c.region, count(*) AS n, sum(o.qty) AS q FROM "Order Items" o JOIN customers c ON c.id = o.cust GROUP BY c.region'
no_notice "SELECT pgtrickle.create_stream_table('totals', \$q\$$JQ\$q\$)"
expect_eq "SELECT refresh_mode, effective_mode, status, schedule, is_populated FROM pgtrickle.pgt_status() WHERE name = 'public.totals'" \
  "AUTO|DIFFERENTIAL|ACTIVE|calculated|t"
same_as_query totals "$JQ"
# Quoted names, schema-qualified target, explicit mode and schedule.
q -c "SELECT pgtrickle.create_stream_table('s2.\"Big Items\"', 'SELECT id, \"select\" FROM \"Order Items\" WHERE qty > 1', schedule => '5m', refresh_mode => 'DIFFERENTIAL')"
expect_eq "SELECT count(*) FROM s2.\"Big Items\"" "$(q -c 'SELECT count(*) FROM "Order Items" WHERE qty > 1')"
q -c "SELECT pgtrickle.create_stream_table('full_items', 'SELECT cust, count(*) AS n FROM \"Order Items\" GROUP BY cust', refresh_mode => 'full')"
expect_eq "SELECT effective_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'full_items'" "FULL"
# AUTO falls back to FULL with a NOTICE saying why; DIFFERENTIAL refuses the same query.
expect_notice 'stream table "public"."rnd" using FULL refresh: not differentiable: ' \
  "SELECT pgtrickle.create_stream_table('rnd', 'SELECT id, random() AS r FROM customers')"
expect_eq "SELECT effective_mode, full_reason IS NOT NULL FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'rnd'" "FULL|t"
expect_error 0A000 "SELECT pgtrickle.create_stream_table('rnd2', 'SELECT id FROM customers OFFSET 1', refresh_mode => 'DIFFERENTIAL')"
expect_error 0A000 "SELECT pgtrickle.create_stream_table('imm', 'SELECT id FROM customers OFFSET 1', refresh_mode => 'IMMEDIATE')"
expect_error 22023 "SELECT pgtrickle.create_stream_table('bad', 'SELECT id FROM customers', refresh_mode => 'SOMETIMES')"
expect_error 22023 "SELECT pgtrickle.create_stream_table('bad', 'SELECT id FROM customers', schedule => 'every now and then')"
expect_error 42601 "SELECT pgtrickle.create_stream_table('bad', 'SELEC id FROM customers')"
expect_error 42P01 "SELECT pgtrickle.create_stream_table('bad', 'SELECT id FROM no_such_table')"
expect_error 42703 "SELECT pgtrickle.create_stream_table('bad', 'SELECT nope FROM customers')"
expect_error 42P07 "SELECT pgtrickle.create_stream_table('customers', 'SELECT id FROM customers')"
expect_error 42602 "SELECT pgtrickle.create_stream_table('a.b.c.d', 'SELECT id FROM customers')"
expect_error 25000 "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pgtrickle.create_stream_table('rr', 'SELECT id FROM customers'); COMMIT"
# A failed create leaves nothing behind.
expect_eq "SELECT count(*) FROM pg_class WHERE relname IN ('bad', 'rnd2', 'imm', 'rr')" "0"
# initialize => false: empty until the first refresh, which says why it runs FULL.
q -c "SELECT pgtrickle.create_stream_table('lazy', 'SELECT id, region FROM customers', schedule => '1d', initialize => false)"
expect_eq "SELECT count(*), bool_or(is_populated) FROM lazy, pgtrickle.pgt_stream_tables WHERE pgt_name = 'lazy'" "0|"
expect_notice 'stream table "public"."lazy" using FULL refresh: the stream table is not populated yet' \
  "SELECT pgtrickle.refresh_stream_table('lazy')"
same_as_query lazy "SELECT id, region FROM customers"

# --- refresh_stream_table -----------------------------------------------------------------
q <<'SQL'
INSERT INTO "Order Items" VALUES (11, 'x', 7, 2), (12, 'y', 1, 3);
INSERT INTO customers VALUES (3, 'apac');
DELETE FROM "Order Items" WHERE id IN (1, 2);
UPDATE customers SET region = 'emea' WHERE id = 1;
SQL
no_notice "SELECT pgtrickle.refresh_stream_table('totals')"
same_as_query totals "$JQ"
expect_eq "SELECT action, rows_inserted IS NULL, delta_rows > 0 FROM pgtrickle.get_refresh_history('totals', 1)" "DIFFERENTIAL|t|t"
no_notice "SELECT pgtrickle.refresh_stream_table('s2.\"Big Items\"')"
expect_eq "SELECT action, rows_inserted, rows_deleted FROM pgtrickle.get_refresh_history('s2.\"Big Items\"', 1)" "DIFFERENTIAL|1|1"
no_notice "SELECT pgtrickle.refresh_stream_table('totals')"
expect_eq "SELECT action FROM pgtrickle.get_refresh_history('totals', 1)" "NO_DATA"
# Regression: rows inserted and deleted again within one window never reach the query's
# expressions (the delta is consolidated first), so 10 / 0 is never evaluated.
q -c "CREATE TABLE dz (id int PRIMARY KEY, d int)" -c "INSERT INTO dz VALUES (1, 1)" \
  -c "SELECT pgtrickle.create_stream_table('dzq', 'SELECT id, 10 / d AS q FROM dz')"
q -c "INSERT INTO dz VALUES (2, 0)" -c "DELETE FROM dz WHERE id = 2" \
  -c "UPDATE dz SET d = 0 WHERE id = 1" -c "UPDATE dz SET d = 5 WHERE id = 1"
no_notice "SELECT pgtrickle.refresh_stream_table('dzq')"
same_as_query dzq 'SELECT id, 10 / d AS q FROM dz'
q -c "SELECT pgtrickle.drop_stream_table('dzq')" -c "DROP TABLE dz"
# Unqualified names resolve through the search_path.
q -c "SET search_path = s2, public; SELECT pgtrickle.refresh_stream_table('\"Big Items\"')"
expect_error 42P01 "SELECT pgtrickle.refresh_stream_table('nope')"
expect_error 42P01 "SELECT pgtrickle.refresh_stream_table('customers')"
# TRUNCATE of a source: the next refresh runs FULL and says why.
q -c 'TRUNCATE "Order Items"' -c "INSERT INTO \"Order Items\" VALUES (20, 'z', 2, 1)"
expect_notice 'stream table "public"."totals" using FULL refresh: a source table was truncated' \
  "SELECT pgtrickle.refresh_stream_table('totals')"
same_as_query totals "$JQ"
expect_eq "SELECT action, reason FROM pgtrickle.get_refresh_history('totals', 1)" "FULL|a source table was truncated"
# Paused capture never leaves a silently wrong stream table.
q -c "SET pg_trickle.cdc_paused = on; INSERT INTO \"Order Items\" VALUES (21, 'p', 3, 2)"
expect_eq "SELECT count(*) FROM pgtrickle_changes.changes_$(q -c "SELECT '\"Order Items\"'::regclass::oid") WHERE __pgt_op = 'P'" "1"
expect_notice 'stream table "public"."totals" using FULL refresh: change capture was paused or disabled' \
  "SELECT pgtrickle.refresh_stream_table('totals')"
same_as_query totals "$JQ"
q -c "SET pg_trickle.enabled = off; DELETE FROM \"Order Items\" WHERE id = 21"
expect_notice 'stream table "public"."totals" using FULL refresh: change capture was paused or disabled' \
  "SELECT pgtrickle.refresh_stream_table('totals')"
same_as_query totals "$JQ"
# force_full_refresh overrides every stream table's mode while set.
expect_notice 'stream table "public"."totals" using FULL refresh: pg_trickle.force_full_refresh is on' \
  "SET pg_trickle.force_full_refresh = on" "SELECT pgtrickle.refresh_stream_table('totals')"
# A FULL-mode stream table refreshes FULL without a notice.
no_notice "SELECT pgtrickle.refresh_stream_table('full_items')"
same_as_query full_items 'SELECT cust, count(*) AS n FROM "Order Items" GROUP BY cust'

# --- storage is written only by refreshes -------------------------------------------------
expect_error 42809 "INSERT INTO totals (region) VALUES ('x')"
expect_error 42809 "UPDATE totals SET n = 0"
expect_error 42809 "DELETE FROM totals"
expect_error 42809 "TRUNCATE totals"
# Change buffers are not readable by ordinary roles.
q -c "CREATE ROLE pgt_reader LOGIN"
expect_eq "SELECT has_schema_privilege('pgt_reader', 'pgtrickle_changes', 'USAGE')" "f"

# --- alter_stream_table --------------------------------------------------------------------
q -c "SELECT pgtrickle.alter_stream_table('totals', schedule => '1h30m', status => 'suspended')"
expect_eq "SELECT schedule, status FROM pgtrickle.pgt_status() WHERE name = 'public.totals'" "1h30m|SUSPENDED"
q -c "SELECT pgtrickle.alter_stream_table('totals', status => 'ACTIVE')"
expect_error 22023 "SELECT pgtrickle.alter_stream_table('totals', schedule => '5 parsecs')"
expect_error 22023 "SELECT pgtrickle.alter_stream_table('totals', status => 'ERROR')"
expect_error 22023 "SELECT pgtrickle.alter_stream_table('totals', refresh_mode => 'OFTEN')"
expect_error 42P01 "SELECT pgtrickle.alter_stream_table('nope', schedule => '1m')"
expect_error 0A000 "SELECT pgtrickle.alter_stream_table('rnd', refresh_mode => 'DIFFERENTIAL')"
# FULL -> DIFFERENTIAL: one FULL refresh (buffers lacked the columns), then differential.
q -c "SELECT pgtrickle.alter_stream_table('full_items', refresh_mode => 'DIFFERENTIAL')"
q -c "INSERT INTO \"Order Items\" VALUES (30, 'm', 1, 2)"
expect_notice 'stream table "public"."full_items" using FULL refresh: the refresh mode changed to DIFFERENTIAL' \
  "SELECT pgtrickle.refresh_stream_table('full_items')"
q -c "DELETE FROM \"Order Items\" WHERE id = 30"
no_notice "SELECT pgtrickle.refresh_stream_table('full_items')"
expect_eq "SELECT action FROM pgtrickle.get_refresh_history('full_items', 1)" "DIFFERENTIAL"
same_as_query full_items 'SELECT cust, count(*) AS n FROM "Order Items" GROUP BY cust'
q -c "SELECT pgtrickle.alter_stream_table('full_items', refresh_mode => 'FULL')"
expect_eq "SELECT effective_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'full_items'" "FULL"

# --- history and status ---------------------------------------------------------------------
expect_eq "SELECT count(*) > 5, bool_and(status = 'COMPLETED'), bool_and(end_time >= start_time) FROM pgtrickle.get_refresh_history('totals', 100)" "t|t|t"
expect_eq "SELECT count(*) FROM pgtrickle.get_refresh_history('totals', 2)" "2"
expect_error 42P01 "SELECT * FROM pgtrickle.get_refresh_history('nope')"
expect_error 22023 "SELECT * FROM pgtrickle.get_refresh_history('totals', -1)"
expect_eq "SELECT count(*) FROM pgtrickle.pgt_status()" "$(q -c 'SELECT count(*) FROM pgtrickle.pgt_stream_tables')"

# --- drop_stream_table and DROP TABLE -----------------------------------------------------
OI=$(q -c "SELECT '\"Order Items\"'::regclass::oid")
q -c "SELECT pgtrickle.drop_stream_table('full_items')"
expect_eq "SELECT to_regclass('full_items') IS NULL, count(*) FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'full_items'" "t|0"
# "Order Items" is still read by totals and "Big Items": its capture stays.
expect_eq "SELECT to_regclass('pgtrickle_changes.changes_$OI') IS NOT NULL" "t"
expect_error 42P01 "SELECT pgtrickle.drop_stream_table('full_items')"
q -c "SELECT pgtrickle.drop_stream_table('s2.\"Big Items\"')"
# Dropping the storage table directly forgets the stream table; the last reader of a source
# takes its capture with it.
q -c "DROP TABLE totals"
expect_eq "SELECT count(*) FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'totals'" "0"
expect_eq "SELECT to_regclass('pgtrickle_changes.changes_$OI') IS NULL, count(*) FROM pg_trigger WHERE tgrelid = $OI AND tgname LIKE '\_\_pgt%'" "t|0"
# Dropping a source puts its dependents in NEEDS_REINIT and removes its buffer.
CU=$(q -c "SELECT 'customers'::regclass::oid")
q -c "DROP TABLE customers"
expect_eq "SELECT status, last_error FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'lazy'" "NEEDS_REINIT|source table public.customers was dropped"
expect_eq "SELECT to_regclass('pgtrickle_changes.changes_$CU') IS NULL" "t"
q -c "SELECT pgtrickle.drop_stream_table('lazy')" -c "SELECT pgtrickle.drop_stream_table('rnd')"
expect_eq "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgtrickle_changes'::regnamespace AND relkind = 'r'" "0"
q -c "DROP EXTENSION pg_trickle"
# Everything goes with the extension; like any extension's control-file schema, the empty
# schema pgtrickle itself stays (CREATE EXTENSION reuses it).
expect_eq "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgtrickle_changes'" "0"
expect_eq "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgtrickle'::regnamespace" "0"
q -c "CREATE EXTENSION pg_trickle"

echo "api: $checks passed, 0 failed"
