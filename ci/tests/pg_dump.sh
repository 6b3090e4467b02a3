#!/usr/bin/env bash
# pg_dump and pg_restore of a database with stream tables into a fresh cluster (restore.rs):
# pg_restore runs without an error; pgtrickle.restore_stream_tables() makes every stream table
# (every maintained shape and mode, one reading another, one suspended) a stream table again
# with its query, schedule, mode, status, owner, grants and subscriptions, equal to its query,
# upstream first; no capture of the dumped database is left; and they keep being maintained
# (scheduled, by hand, IMMEDIATE). The manifest follows the catalog (create, alter, drop).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
A=test-pgdump-a B=test-pgdump-b
dir=$(mktemp -d)
cleanup() { [ -n "${KEEP:-}" ] || "$PG" destroy "$A" "$B" >/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"$PG" start "$A" "$B" >/dev/null
for c in "$A" "$B"; do
  "$PG" psql "$c" -Atq -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS dump_owner" \
    -c "DROP ROLE IF EXISTS dump_reader" -c "CREATE ROLE dump_owner LOGIN" -c "CREATE ROLE dump_reader LOGIN"
done
CLUSTER=$A
fresh_db shop
declare -A Q=(
  [agg]='SELECT g, count(*) AS n, sum(v) AS s FROM src GROUP BY g'
  [flt]='SELECT id, v FROM src WHERE v % 3 = 0'
  [jn]='SELECT s.id, d.label FROM src s JOIN dim d ON d.g = s.g'
  [bag]='SELECT g FROM src UNION ALL SELECT g FROM dim'
  [fullq]="SELECT g, string_agg(v::text, '-' ORDER BY v) AS vs FROM src GROUP BY g"
  [imm]='SELECT g, count(*) AS n FROM src GROUP BY g'
  [down]='SELECT g, n FROM agg WHERE n > 3'
  [a_top]='SELECT g, n FROM z_base WHERE n > 1'
  [z_base]='SELECT v % 10 AS g, count(*) AS n FROM src GROUP BY v % 10'
)
declare -A MODE=([agg]=DIFFERENTIAL [flt]=DIFFERENTIAL [jn]=AUTO [bag]=AUTO [fullq]=FULL
  [imm]=IMMEDIATE [down]=DIFFERENTIAL [z_base]=DIFFERENTIAL [a_top]=DIFFERENTIAL)
# a_top reads z_base: by name it sorts before it, and must be restored after it.
ORDER=(agg flt jn bag fullq imm down z_base a_top)
q <<'SQL' >/dev/null
CREATE TABLE src (id int PRIMARY KEY, g int NOT NULL, v int NOT NULL);
CREATE TABLE dim (g int PRIMARY KEY, label text NOT NULL);
INSERT INTO src SELECT i, i % 7, (i * 13) % 101 FROM generate_series(1, 1500) i;
INSERT INTO dim SELECT i, 'g' || i FROM generate_series(0, 5) i;
GRANT SELECT ON src, dim TO dump_owner;
GRANT CREATE ON SCHEMA public TO dump_owner;
SQL
# flt is dump_owner's: created by it (a restore creates every stream table as its owner).
for st in "${ORDER[@]}"; do
  role=postgres
  [ "$st" = flt ] && role=dump_owner
  q -c "SET ROLE $role" -c "SELECT pgtrickle.create_stream_table('$st', \$q\$${Q[$st]}\$q\$, schedule => '1s', refresh_mode => '${MODE[$st]}')" >/dev/null
done
# The manifest follows the catalog: a dropped one goes, an altered one changes.
q -c "SELECT pgtrickle.create_stream_table('gone', 'SELECT id FROM src')" >/dev/null
q -c "SELECT pgtrickle.drop_stream_table('gone')" >/dev/null
q -c "SELECT pgtrickle.alter_stream_table('agg', schedule => '2s')" >/dev/null
q -c "SELECT pgtrickle.alter_stream_table('bag', status => 'SUSPENDED')" >/dev/null
q -c "GRANT SELECT ON agg TO dump_reader" -c "SET ROLE dump_owner" -c "GRANT SELECT ON flt TO dump_reader" -c "RESET ROLE" \
  -c "SELECT pgtrickle.subscribe('agg', 'agg_changes')" >/dev/null
manifest="SELECT pgt_name, schedule, refresh_mode, status FROM pgtrickle.pgt_dump_manifest ORDER BY 1"
catalog="SELECT pgt_name, schedule, refresh_mode, status FROM pgtrickle.pgt_stream_tables ORDER BY 1"
expect_eq "$manifest" "$(q -c "$catalog")"
# Changes still pending at the dump.
q -c "INSERT INTO src SELECT i, i % 9, i % 50 FROM generate_series(1501, 1700) i" >/dev/null
port_a=$("$PG" port "$A") port_b=$("$PG" port "$B")
"$PG_BIN/pg_dump" -h 127.0.0.1 -p "$port_a" -U postgres -d shop -Fc -f "$dir/shop.dump"

CLUSTER=$B
"$PG" psql "$B" -Atq -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shop" -c "CREATE DATABASE shop"
DB=shop
"$PG_BIN/pg_restore" -h 127.0.0.1 -p "$port_b" -U postgres -d shop --exit-on-error "$dir/shop.dump" 2>"$dir/restore.err" ||
  die "pg_restore failed: $(cat "$dir/restore.err")"
checks=$((checks + 1))
expect_eq "SELECT count(*) FROM pgtrickle.pgt_stream_tables" 0
restored=$(q -c "SELECT string_agg(stream_table || ' ' || action, ', ' ORDER BY stream_table) FROM pgtrickle.restore_stream_tables()")
# Upstream first (the order restore_stream_tables created them in): agg before down, and
# z_base before a_top, which sorts first by name; a_top reads the stream table z_base.
expect_eq "SELECT (SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'agg')
                  < (SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'down'),
                  (SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'z_base')
                  < (SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'a_top'),
                  (SELECT status FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'a_top')" "t|t|ACTIVE"
expect_eq "$catalog" "$(CLUSTER=$A DB=shop q -c "$catalog")"
expect_eq "$manifest" "$(CLUSTER=$A DB=shop q -c "$manifest")"
expect_eq "SELECT pg_get_userbyid(relowner), has_table_privilege('dump_reader', 'agg', 'SELECT'),
                  has_table_privilege('dump_reader', 'flt', 'SELECT'), has_table_privilege('dump_reader', 'jn', 'SELECT')
             FROM pg_class WHERE oid = 'flt'::regclass" "dump_owner|t|t|f"
expect_eq "SELECT stream_table, channel FROM pgtrickle.list_subscriptions()" 'public.agg|agg_changes'
# Only the capture of this database's sources is left (the dump's went).
expect_eq "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgtrickle_changes'::regnamespace AND relkind = 'r'
             AND substr(relname, 9)::oid NOT IN (SELECT source_relid FROM pgtrickle.pgt_dependencies)" 0
expect_eq "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '\_\_pgt\_capture%'
             AND tgrelid NOT IN (SELECT source_relid FROM pgtrickle.pgt_dependencies)" 0
for st in "${ORDER[@]}"; do
  same_as_query "$st" "${Q[$st]}"
done
# Maintained: scheduled (bag is suspended: by hand), IMMEDIATE.
q <<'SQL' >/dev/null
INSERT INTO src SELECT i, i % 5, i % 77 FROM generate_series(3001, 3300) i;
DELETE FROM src WHERE id % 23 = 1;
UPDATE dim SET label = label || '!' WHERE g = 2;
SQL
q -c "SELECT pgtrickle.refresh_stream_table('bag')" >/dev/null
for st in "${ORDER[@]}"; do
  eventually 60 "$(diff_sql "$st" "${Q[$st]}")" 0
done
# A table of a manifest row's name that is not a stream table's restored storage (no guard
# trigger) is never dropped: refused, nothing changed.
q -c "SELECT pgtrickle.drop_stream_table('down')" -c "CREATE TABLE down (x int)" \
  -c "INSERT INTO pgtrickle.pgt_dump_manifest VALUES ('public', 'down', 'SELECT 1 AS one', 'pg_catalog, public, pg_temp', '1s', 'AUTO', 'ACTIVE')" >/dev/null
expect_error 42P07 "SELECT * FROM pgtrickle.restore_stream_tables()"
expect_eq "SELECT count(*) FROM down" 0
q -c "DROP TABLE down" -c "DELETE FROM pgtrickle.pgt_dump_manifest WHERE pgt_name = 'down'" >/dev/null
# Nothing left to restore: a second call does nothing.
expect_eq "SELECT count(*) FROM pgtrickle.restore_stream_tables()" 0
echo "pg_dump: restored $restored; $checks checks passed"
