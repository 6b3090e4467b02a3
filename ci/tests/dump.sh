#!/usr/bin/env bash
# pg_trickle_dump: the SQL it writes recreates every stream table of a database in another
# one — same defining query, search_path, schedule, requested mode, status, owner, grants and
# subscriptions, a stream table after the ones it reads — and the recreated stream tables
# hold their queries' results and keep being maintained. Restoring into a database where the
# stream tables exist fails as a whole (one transaction).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-dump
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || "$PG" destroy "$CLUSTER" >/dev/null; rm -rf "$work"' EXIT
cargo build -q -p pg_trickle_dump --bin pg_trickle_dump
dump_bin="$CARGO_TARGET_DIR/debug/pg_trickle_dump"
"$PG" start "$CLUSTER" >/dev/null
manual_refresh_only
"$PG" psql "$CLUSTER" -q -c "SET client_min_messages = warning" \
  -c "DROP ROLE IF EXISTS dump_alice" -c "DROP ROLE IF EXISTS dump_bob" \
  -c "CREATE ROLE dump_alice" -c "CREATE ROLE dump_bob"

# The sources, the same in both databases.
sources() {
  q >/dev/null <<'SQL'
CREATE SCHEMA shop;
GRANT USAGE, CREATE ON SCHEMA shop, public TO dump_alice;
CREATE TABLE shop.orders (id int PRIMARY KEY, customer int NOT NULL, amount int NOT NULL);
CREATE TABLE public.customers (id int PRIMARY KEY, region text NOT NULL);
INSERT INTO public.customers SELECT g, 'r' || g % 3 FROM generate_series(1, 20) g;
INSERT INTO shop.orders SELECT g, 1 + g % 20, g FROM generate_series(1, 300) g;
GRANT SELECT ON shop.orders, public.customers TO dump_alice;
SQL
}

fresh_db dump_src
sources
q >/dev/null <<'SQL'
SET search_path = shop, public;
-- by_customer resolves orders through the search_path shop, public
SELECT pgtrickle.create_stream_table('by_customer', 'SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer', schedule => '5m', refresh_mode => 'DIFFERENTIAL');
RESET search_path;
-- reads by_customer: created after it
SELECT pgtrickle.create_stream_table('public."By Region"', 'SELECT c.region, sum(b.total) AS total FROM shop.by_customer b JOIN customers c ON c.id = b.customer GROUP BY c.region');
SET ROLE dump_alice;
SELECT pgtrickle.create_stream_table('alice_big', 'SELECT id, amount FROM shop.orders WHERE amount > 250', refresh_mode => 'FULL', schedule => '1h');
GRANT SELECT ON alice_big TO dump_bob;
RESET ROLE;
SELECT pgtrickle.create_stream_table('paused', 'SELECT id FROM customers WHERE region = ''r1''', schedule => '10s');
SELECT pgtrickle.alter_stream_table('paused', status => 'SUSPENDED');
SELECT pgtrickle.subscribe('public."By Region"', 'region changes');
SQL
"$dump_bin" --dbname "$("$PG" url "$CLUSTER" dump_src)" --file "$work/dump.sql" 2>"$work/dump.err" \
  || die "pg_trickle_dump failed: $(cat "$work/dump.err")"
grep -q "4 stream table(s) of database dump_src" "$work/dump.err" || die "$(cat "$work/dump.err")"
checks=$((checks + 1))
# Dependency order: By Region after by_customer.
first=$(grep -nx -- '-- "shop"."by_customer"' "$work/dump.sql" | cut -d: -f1)
second=$(grep -nx -- '-- "public"."By Region"' "$work/dump.sql" | cut -d: -f1)
[ -n "$first" ] && [ -n "$second" ] || die "headers missing: $(cat "$work/dump.sql")"
[ "$first" -lt "$second" ] || die "By Region is created before by_customer"
checks=$((checks + 1))

catalog="SELECT format('%I.%I', s.pgt_schema, s.pgt_name), s.defining_query, s.search_path,
                s.schedule, s.refresh_mode, s.effective_mode, s.status,
                pg_get_userbyid(c.relowner), c.relacl::text,
                (SELECT string_agg(channel, ',') FROM pgtrickle.pgt_subscriptions b
                  WHERE b.pgt_schema = s.pgt_schema AND b.pgt_name = s.pgt_name)
           FROM pgtrickle.pgt_stream_tables s JOIN pg_class c ON c.oid = s.pgt_relid ORDER BY 1"
want=$(q -c "$catalog")

fresh_db dump_dst
sources
"$PG" psql "$CLUSTER" -d dump_dst -X -q -v ON_ERROR_STOP=1 -f "$work/dump.sql" >"$work/restore.log" 2>&1 \
  || die "restore failed: $(cat "$work/restore.log")"
expect_eq "$catalog" "$want"
for st in shop.by_customer 'public."By Region"' public.alice_big public.paused; do
  query=$(q -c "SELECT defining_query FROM pgtrickle.pgt_stream_tables WHERE pgt_relid = '$st'::regclass")
  sp=$(q -c "SELECT search_path FROM pgtrickle.pgt_stream_tables WHERE pgt_relid = '$st'::regclass")
  expect_eq "SET search_path = $sp; $(diff_sql "$st" "$query")" 0
done
# Still maintained: a write, refreshes in dependency order, DIFFERENTIAL where it was.
q -c "INSERT INTO shop.orders VALUES (1000, 3, 7)" -c "UPDATE customers SET region = 'r9' WHERE id = 3" \
  -c "SELECT pgtrickle.refresh_stream_table('shop.by_customer')" \
  -c "SELECT pgtrickle.refresh_stream_table('public.\"By Region\"')" >/dev/null
expect_eq "SELECT action FROM pgtrickle.get_refresh_history('shop.by_customer', 1)" DIFFERENTIAL
same_as_query 'public."By Region"' "SELECT c.region, sum(b.total) AS total FROM shop.by_customer b JOIN customers c ON c.id = b.customer GROUP BY c.region"
# A second restore fails as a whole: nothing added, nothing changed.
if "$PG" psql "$CLUSTER" -d dump_dst -X -q -v ON_ERROR_STOP=1 -f "$work/dump.sql" >"$work/again.log" 2>&1; then
  die "restoring over existing stream tables succeeded"
fi
grep -q 'ERROR:' "$work/again.log" || die "no error: $(cat "$work/again.log")"
expect_eq "SELECT count(*) FROM pgtrickle.pgt_stream_tables" 4
checks=$((checks + 1))
# A database without the extension is refused with a message.
if "$dump_bin" --dbname "$("$PG" url "$CLUSTER" postgres)" >/dev/null 2>"$work/none.err"; then
  die "dumped a database without pg_trickle"
fi
grep -q "has no pg_trickle extension" "$work/none.err" || die "$(cat "$work/none.err")"
checks=$((checks + 1))
"$PG" psql "$CLUSTER" -q -c "SET client_min_messages = warning" \
  -c "DROP DATABASE dump_src WITH (FORCE)" -c "DROP DATABASE dump_dst WITH (FORCE)" \
  -c "DROP ROLE dump_alice" -c "DROP ROLE dump_bob"
echo "dump: $checks checks passed"
