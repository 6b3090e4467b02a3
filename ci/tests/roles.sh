#!/usr/bin/env bash
# Stream tables for ordinary roles (issue 23). Roles: alice (owner), bob (reader), eve
# (stranger), dave (owns shared source tables), carol (another owner), wendy (only writes a
# source). Checked: an ordinary role creates, refreshes, alters and drops its own stream tables
# and owns their storage; others cannot act on them (42501) nor see their catalog rows, query
# text, history or change buffers; a reader granted SELECT sees the one it may read; every
# refresh — manual, IMMEDIATE inside another role's write, scheduled — runs as the owner (its
# row-level security applies, so such a source is maintained FULL, with the reason); a revoked
# privilege puts the stream table in ERROR with 42501; a query's function cannot create a temp
# table during a refresh (security-restricted operation); ALTER TABLE … OWNER TO hands a stream
# table over; an owner reads only the buffer columns its own stream tables read, and loses them
# when its stream table is dropped (also by a plain DROP TABLE).
set -euo pipefail
trap 'echo "roles.sh: line $LINENO failed" >&2' ERR
. "$(dirname "$0")/lib.sh"
CLUSTER=test-roles
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
"$PG" start "$CLUSTER" >/dev/null
"$PG" psql "$CLUSTER" -q -c "ALTER SYSTEM SET pg_trickle.scheduler_interval_ms = 200" -c "SELECT pg_reload_conf()" >/dev/null
fresh_db roles

# as ROLE SQL — runs SQL as ROLE (SET ROLE in the same session).
as() { local r=$1; shift; q -c "SET ROLE $r" -c "$*"; }
# as_eq ROLE SQL WANT / as_error ROLE SQLSTATE SQL — expect_eq and expect_error as ROLE.
as_eq() { expect_eq "SET ROLE $1; $2" "$3"; }
as_error() { expect_error "$2" "SET ROLE $1; $3"; }

q <<'SQL'
SET client_min_messages = warning;
DROP ROLE IF EXISTS alice, bob, eve, dave, carol, wendy;
CREATE ROLE alice; CREATE ROLE bob; CREATE ROLE eve; CREATE ROLE dave; CREATE ROLE carol;
CREATE ROLE wendy;
CREATE SCHEMA app AUTHORIZATION alice;
CREATE SCHEMA shared AUTHORIZATION dave;
GRANT USAGE ON SCHEMA app TO bob, eve, wendy;
GRANT USAGE ON SCHEMA shared TO alice, carol;
GRANT USAGE, CREATE ON SCHEMA app TO carol;
SQL

# --- an ordinary role creates and owns stream tables; others may not act on them ------------
as alice "
CREATE TABLE app.orders (id int PRIMARY KEY, cust text NOT NULL, amount int NOT NULL);
INSERT INTO app.orders SELECT g, 'c' || (g % 3), g FROM generate_series(1, 30) g;
SELECT pgtrickle.create_stream_table('app.totals',
  'SELECT cust, sum(amount) AS s, count(*) AS n FROM app.orders GROUP BY cust',
  refresh_mode => 'DIFFERENTIAL');
SELECT pgtrickle.create_stream_table('app.big', 'SELECT id, amount FROM app.orders WHERE amount > 20',
  refresh_mode => 'IMMEDIATE');
GRANT SELECT ON app.totals TO bob;
GRANT INSERT, UPDATE, DELETE, SELECT (id) ON app.orders TO wendy;" >/dev/null
TOTALS='SELECT cust, sum(amount) AS s, count(*) AS n FROM app.orders GROUP BY cust'
expect_eq "SELECT string_agg(tableowner, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'app' AND tablename IN ('totals', 'big')" "alice,alice"
as alice "INSERT INTO app.orders VALUES (100, 'c1', 5); SELECT pgtrickle.refresh_stream_table('app.totals')" >/dev/null
expect_eq "$(diff_sql app.totals "$TOTALS")" 0
as_eq alice "SELECT action FROM pgtrickle.get_refresh_history('app.totals', 1)" DIFFERENTIAL
as_eq alice "SELECT string_agg(name, ',' ORDER BY name) FROM pgtrickle.pgt_status()" "app.big,app.totals"
as alice "SELECT pgtrickle.alter_stream_table('app.totals', schedule => '1h')" >/dev/null
for r in bob eve; do
  as_error $r 42501 "SELECT pgtrickle.refresh_stream_table('app.totals')"
  as_error $r 42501 "SELECT pgtrickle.alter_stream_table('app.totals', status => 'SUSPENDED')"
  as_error $r 42501 "SELECT pgtrickle.drop_stream_table('app.totals')"
  as_error $r 42501 "SELECT count(*) FROM pgtrickle_changes.changes_$(q -c "SELECT 'app.orders'::regclass::oid")"
done
# A reader sees the stream table it may read, and nothing else; a stranger sees nothing.
as_eq bob "SELECT count(*) FROM app.totals" 3
as_eq bob "SELECT string_agg(format('%I.%I', pgt_schema, pgt_name), ',') FROM pgtrickle.pgt_stream_tables" "app.totals"
as_eq bob "SELECT count(*) > 0 FROM pgtrickle.get_refresh_history('app.totals')" t
as_eq eve "SELECT count(*) FROM pgtrickle.pgt_stream_tables" 0
as_eq eve "SELECT count(*) FROM pgtrickle.pgt_dependencies" 0
as_eq eve "SELECT count(*) FROM pgtrickle.pgt_refresh_history" 0
as_eq eve "SELECT count(*) FROM pgtrickle.pgt_capture_columns" 0
as_eq eve "SELECT count(*) FROM pgtrickle.pgt_status()" 0
as_error eve 42P01 "SELECT * FROM pgtrickle.get_refresh_history('app.totals')"
# A stranger cannot create a stream table over what it may not read (nothing is left behind).
as_error eve 42501 "SELECT pgtrickle.create_stream_table('public.peek', 'SELECT id FROM app.orders')"
expect_eq "SELECT to_regclass('public.peek') IS NULL AND (SELECT count(*) FROM pgtrickle.pgt_stream_tables) = 2" t

# --- IMMEDIATE maintenance inside another role's write runs as the owner ----------------------
# wendy may write app.orders (and read its id, for WHERE) but read neither its other columns,
# nor the stream table, nor the buffer.
as wendy "INSERT INTO app.orders VALUES (200, 'c2', 50), (201, 'c0', 1); UPDATE app.orders SET amount = 99 WHERE id = 5; DELETE FROM app.orders WHERE id = 30" >/dev/null
expect_eq "$(diff_sql app.big 'SELECT id, amount FROM app.orders WHERE amount > 20')" 0
as_error wendy 42501 "SELECT count(*) FROM app.big"

# --- a query's code runs in a security-restricted operation -----------------------------------
as alice "CREATE FUNCTION app.plant() RETURNS int LANGUAGE plpgsql VOLATILE AS
  \$\$BEGIN CREATE TEMP TABLE IF NOT EXISTS planted (x int); RETURN 1; END\$\$" >/dev/null
out=$(q -v VERBOSITY=verbose -c "SET ROLE alice" -c "SELECT pgtrickle.create_stream_table('app.planted', 'SELECT id, app.plant() AS p FROM app.orders', refresh_mode => 'FULL')" 2>&1) && die "a refresh created a temp table: $out"
grep -q "ERROR:  42501: cannot create temporary table within security-restricted operation" <<<"$out" || die "want 42501 for the temp table, got: $out"
checks=$((checks + 1))

# --- row-level security of a source applies to the owner: FULL, manual and scheduled ---------
q <<'SQL' >/dev/null
SET ROLE dave;
CREATE TABLE shared.notes (id int PRIMARY KEY, reader name NOT NULL, body text NOT NULL);
ALTER TABLE shared.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON shared.notes USING (reader = current_user);
INSERT INTO shared.notes VALUES (1, 'alice', 'a1'), (2, 'carol', 'c1'), (3, 'alice', 'a2');
GRANT SELECT ON shared.notes TO alice, carol;
SQL
as_error alice 0A000 "SELECT pgtrickle.create_stream_table('app.notes', 'SELECT id, body FROM shared.notes', refresh_mode => 'DIFFERENTIAL')"
out=$(q -c "SET ROLE alice" -c "SELECT pgtrickle.create_stream_table('app.notes', 'SELECT id, body FROM shared.notes', schedule => '1s')" 2>&1)
grep -qF 'row-level security of shared.notes applies to its owner, role "alice"' <<<"$out" || die "want the RLS reason in a NOTICE, got: $out"
checks=$((checks + 1))
as_eq alice "SELECT effective_mode FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'notes'" FULL
as_eq alice "SELECT string_agg(body, ',' ORDER BY id) FROM app.notes" "a1,a2"
# The scheduler (a superuser's worker, which row-level security would not restrict) refreshes
# it as alice: carol's new note never shows.
q -c "SET ROLE dave" -c "INSERT INTO shared.notes VALUES (4, 'alice', 'a3'), (5, 'carol', 'c2')" >/dev/null
eventually 60 "SET ROLE alice; SELECT string_agg(body, ',' ORDER BY id) FROM app.notes" "a1,a2,a3"

# --- a revoked privilege: 42501 by hand, ERROR from the scheduler ----------------------------
q <<'SQL' >/dev/null
SET ROLE dave;
CREATE TABLE shared.items (id int PRIMARY KEY, a int NOT NULL, secret text NOT NULL);
INSERT INTO shared.items SELECT g, g, 's' || g FROM generate_series(1, 10) g;
GRANT SELECT (id, a) ON shared.items TO alice;
GRANT SELECT ON shared.items TO carol;
SQL
as alice "SELECT pgtrickle.create_stream_table('app.items_a', 'SELECT id, a FROM shared.items WHERE a > 2', refresh_mode => 'DIFFERENTIAL', schedule => '1s')" >/dev/null
as carol "SELECT pgtrickle.create_stream_table('app.items_s', 'SELECT id, secret FROM shared.items', refresh_mode => 'DIFFERENTIAL', schedule => '1h')" >/dev/null
# alice created hers with column privileges only; she reads her columns of the buffer, not the
# column captured for carol's.
BUF="pgtrickle_changes.changes_$(q -c "SELECT 'shared.items'::regclass::oid")"
q -c "SET ROLE dave" -c "INSERT INTO shared.items VALUES (11, 11, 's11')" >/dev/null
eventually 60 "SET ROLE alice; SELECT count(*) FROM app.items_a" 9
as_eq alice "SELECT count(*) > 0 FROM (SELECT id, a, __pgt_op FROM $BUF) b" t
as_error alice 42501 "SELECT secret FROM $BUF"
as_error bob 42501 "SELECT id FROM $BUF"
q -c "SET ROLE dave" -c "REVOKE SELECT (a) ON shared.items FROM alice" -c "UPDATE shared.items SET a = a + 1 WHERE id = 1" >/dev/null
as_error alice 42501 "SELECT pgtrickle.refresh_stream_table('app.items_a')"
out=$(q -c "SET ROLE alice" -c "SELECT pgtrickle.refresh_stream_table('app.items_a')" 2>&1 || true)
grep -qF 'permission denied for table shared.items' <<<"$out" || die "want the table in the error, got: $out"
checks=$((checks + 1))
eventually 60 "SET ROLE alice; SELECT status || ' ' || (last_error LIKE '%permission denied for table shared.items%') FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'items_a'" "ERROR true"
eventually 30 "SET ROLE alice; SELECT error_sqlstate FROM pgtrickle.get_refresh_history('app.items_a', 1)" 42501
# IMMEDIATE: the same revoked privilege fails the writing statement with 42501 and the
# message, raised by the capture trigger as the refresh raised it (not as an internal error).
q <<'SQL' >/dev/null
SET ROLE dave;
CREATE TABLE shared.imm (id int PRIMARY KEY, v int NOT NULL);
GRANT SELECT ON shared.imm TO alice;
SQL
as alice "SELECT pgtrickle.create_stream_table('app.imm', 'SELECT id, v FROM shared.imm', refresh_mode => 'IMMEDIATE')" >/dev/null
q -c "SET ROLE dave" -c "REVOKE SELECT ON shared.imm FROM alice" >/dev/null
as_error dave 42501 "INSERT INTO shared.imm VALUES (1, 1)"
out=$(q -c "SET ROLE dave" -c "INSERT INTO shared.imm VALUES (1, 1)" 2>&1 || true)
grep -qF 'permission denied for table shared.imm' <<<"$out" || die "want the table in the IMMEDIATE error, got: $out"
checks=$((checks + 1))
# carol's stream table on the same source is unaffected.
q -c "SET ROLE carol" -c "SELECT pgtrickle.refresh_stream_table('app.items_s')" >/dev/null
expect_eq "$(diff_sql app.items_s 'SELECT id, secret FROM shared.items')" 0
# A plain DROP TABLE of carol's storage takes her buffer grant with it; alice's stays.
expect_eq "SELECT has_column_privilege('carol', '$BUF', 'secret', 'SELECT')" t
q -c "SET ROLE carol" -c "DROP TABLE app.items_s" >/dev/null
expect_eq "SELECT has_column_privilege('carol', '$BUF', 'secret', 'SELECT'), has_column_privilege('carol', '$BUF', '__pgt_op', 'SELECT'), has_column_privilege('alice', '$BUF', 'a', 'SELECT')" "f|f|t"

# --- ALTER TABLE … OWNER TO hands a stream table over ------------------------------------------
q -c "GRANT SELECT ON app.orders TO carol" -c "ALTER TABLE app.totals OWNER TO carol" >/dev/null
as_error alice 42501 "SELECT pgtrickle.refresh_stream_table('app.totals')"
as alice "INSERT INTO app.orders VALUES (300, 'c0', 7)" >/dev/null
as carol "SELECT pgtrickle.refresh_stream_table('app.totals')" >/dev/null
as_eq carol "SELECT action FROM pgtrickle.get_refresh_history('app.totals', 1)" DIFFERENTIAL
expect_eq "$(diff_sql app.totals "$TOTALS")" 0
as_eq alice "SELECT count(*) FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'totals'" 0
as carol "SELECT pgtrickle.drop_stream_table('app.totals')" >/dev/null
expect_eq "SELECT to_regclass('app.totals') IS NULL" t

# --- one SELECT: a text carrying a second statement runs nothing ------------------------------
out=$(q -v VERBOSITY=verbose -c "SET ROLE alice" -c "SELECT pgtrickle.create_stream_table('app.x', 'SELECT id FROM app.orders); CREATE TABLE IF NOT EXISTS app.pwned AS (SELECT 1')" 2>&1) && die "accepted two statements: $out"
grep -q "ERROR:  42601" <<<"$out" || die "want 42601, got: $out"
if grep -q "NOTICE" <<<"$out"; then die "the second statement ran: $out"; fi
expect_eq "SELECT to_regclass('app.pwned') IS NULL AND to_regclass('app.x') IS NULL" t
checks=$((checks + 1))

echo "roles: $checks passed, 0 failed"
