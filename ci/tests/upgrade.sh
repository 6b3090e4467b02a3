#!/usr/bin/env bash
# The upgrade from the previous release (0.34.0, rebuilt from its frozen commit by
# ci/old-release) to this build, in a private copy of PostgreSQL 15 (so the installed build
# every other test uses stays in place):
# - 0.34.0 installed; stream tables of every maintained shape created with data, then more
#   writes left unrefreshed (pending changes in the buffers);
# - this build installed over it, the server restarted: the scheduler leaves the database
#   alone until ALTER EXTENSION pg_trickle UPDATE (it says why in the log);
# - after the update: extversion and pgtrickle.version() are this release, the catalog rows
#   are what they were (a frozen fixture, the new columns at their defaults), every stream
#   table converges to its query with the pending changes, keeps converging under more
#   writes (scheduled, manual, IMMEDIATE), and new features work on the upgraded catalog;
# - the upgraded extension's objects equal a fresh install's (functions with their bodies and
#   settings, tables and columns, constraints, indexes, triggers, policies, event triggers).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-upgrade
OLD=0.34.0
NEW=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' "$ROOT/Cargo.toml")

rc=0
old_dir=$("$ROOT/ci/old-release" "$OLD") || rc=$?
if [ "$rc" -eq 3 ]; then
  echo "upgrade: SKIPPED — this clone lacks release $OLD's commit (clone with history to run it)"
  exit 0
fi
[ "$rc" -eq 0 ] || die "ci/old-release $OLD failed"

# A private PostgreSQL: the Debian installation copied under target/ (PostgreSQL finds its
# share and lib directories relative to its binaries), with 0.34.0's files installed.
private="$ROOT/target/pg15-upgrade"
rm -rf "$private"
mkdir -p "$private/usr/lib/postgresql" "$private/usr/share/postgresql"
cp -a /usr/lib/postgresql/15 "$private/usr/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$private/usr/share/postgresql/"
lib="$private/usr/lib/postgresql/15/lib"
ext="$private/usr/share/postgresql/15/extension"
rm -f "$lib/pg_trickle.so" "$ext"/pg_trickle*
cp "$old_dir/pg_trickle.so" "$lib/"
cp "$old_dir/pg_trickle.control" "$old_dir/pg_trickle--$OLD.sql" "$ext/"
export PG_TRICKLE_PG_BIN="$private/usr/lib/postgresql/15/bin"
export PG_TRICKLE_PG_BASE="$ROOT/target/pg-upgrade"
PG="$ROOT/ci/pg"
cleanup() { [ -n "${KEEP:-}" ] || { "$PG" destroy "$CLUSTER" >/dev/null 2>&1; rm -rf "$private"; }; }
trap cleanup EXIT
"$PG" destroy "$CLUSTER" >/dev/null 2>&1 || true
"$PG" start "$CLUSTER" >/dev/null
"$PG" psql "$CLUSTER" -Atq -c "ALTER SYSTEM SET pg_trickle.scheduler_interval_ms = 100" \
  -c "SELECT pg_reload_conf()" >/dev/null
fresh_db up
expect_eq "SELECT extversion FROM pg_extension WHERE extname = 'pg_trickle'" "$OLD"

# Every maintained shape, with data, in each mode the old release has.
declare -A Q=(
  [agg]='SELECT g, count(*) AS n, sum(v) AS s FROM src GROUP BY g'
  [flt]='SELECT id, v FROM src WHERE v % 3 = 0'
  [jn]='SELECT s.id, d.label FROM src s JOIN dim d ON d.g = s.g'
  [mx]='SELECT g, max(v) AS hi, min(v) AS lo FROM src GROUP BY g'
  [mxh]='SELECT max(v) AS hi, min(v) AS lo FROM src GROUP BY g'
  [bag]='SELECT g FROM src UNION ALL SELECT g FROM dim'
  [dst]='SELECT DISTINCT g FROM src'
  [fullq]="SELECT g, string_agg(v::text, '-' ORDER BY v) AS vs FROM src GROUP BY g"
  [imm]='SELECT g, count(*) AS n FROM src GROUP BY g'
  [down]='SELECT g, n FROM agg WHERE n > 3'
)
declare -A MODE=([agg]=DIFFERENTIAL [flt]=DIFFERENTIAL [jn]=DIFFERENTIAL [mx]=AUTO [mxh]=AUTO
  [bag]=AUTO [dst]=AUTO [fullq]=FULL [imm]=IMMEDIATE [down]=DIFFERENTIAL)
ORDER=(agg flt jn mx mxh bag dst fullq imm down)
q <<'SQL' >/dev/null
CREATE TABLE src (id int PRIMARY KEY, g int NOT NULL, v int NOT NULL);
CREATE TABLE dim (g int PRIMARY KEY, label text NOT NULL);
INSERT INTO src SELECT i, i % 7, (i * 13) % 101 FROM generate_series(1, 2000) i;
INSERT INTO dim SELECT i, 'g' || i FROM generate_series(0, 5) i;
SQL
for st in "${ORDER[@]}"; do
  q -c "SELECT pgtrickle.create_stream_table('$st', \$q\$${Q[$st]}\$q\$, schedule => '1h', refresh_mode => '${MODE[$st]}')" >/dev/null
done
# Pending changes: written under 0.34.0, refreshed only after the upgrade.
q <<'SQL' >/dev/null
INSERT INTO src SELECT i, i % 9, i % 50 FROM generate_series(2001, 2300) i;
UPDATE src SET v = v + 1 WHERE id % 10 = 0;
DELETE FROM src WHERE id % 17 = 0;
UPDATE dim SET label = label || '!' WHERE g = 2;
SQL
# A view over SELECT * of a stream table whose hidden key column (__pgt_id_0, 0.34.0's layout
# for a group key left out of the result) this release no longer keeps.
q -c "CREATE VIEW mxh_all AS SELECT * FROM mxh" >/dev/null
catalog_sql="SELECT pgt_name, defining_query, refresh_mode, effective_mode, storage_layout, status,
                    schedule, is_populated, search_path
               FROM pgtrickle.pgt_stream_tables ORDER BY pgt_name"
before=$(q -c "$catalog_sql")
# What 0.34.0 made of them: the frozen fixture (a change here is a change of the old release's
# behaviour or of this test, never of this build).
fixture="$ROOT/ci/tests/fixtures/upgrade-$OLD-catalog.txt"
[ "$before" = "$(cat "$fixture")" ] || die "0.34.0's catalog differs from $fixture:
$(diff <(echo "$before") "$fixture")"
checks=$((checks + 1))
# A stream table created while the session had a temp schema: 0.34.0 stored pg_temp_N in its
# search_path, which the upgrade drops.
q -c "SET search_path = public, pg_temp" -c "CREATE TEMP TABLE scratch (x int)" -c "SELECT pgtrickle.create_stream_table('tmpq', 'SELECT g FROM dim', schedule => '1h')" >/dev/null
expect_eq "SELECT search_path ~ 'pg_temp_[0-9]' FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'tmpq'" t
# Queries 0.34.0 maintained FULL only (an ORDER BY … LIMIT, a window function), in AUTO mode.
declare -A NEWQ=(
  [ranked]='SELECT id, g, rank() OVER (PARTITION BY g ORDER BY v) AS r FROM src'
  [topn]='SELECT id, v FROM src ORDER BY v DESC, id LIMIT 5'
)
for st in ranked topn; do
  q -c "SELECT pgtrickle.create_stream_table('$st', \$q\$${NEWQ[$st]}\$q\$, schedule => '1h')" >/dev/null
done
expect_eq "SELECT string_agg(pgt_name || ':' || effective_mode, ',' ORDER BY pgt_name) FROM pgtrickle.pgt_stream_tables WHERE pgt_name IN ('ranked', 'topn')" \
  "ranked:FULL,topn:FULL"
ranked_line=$(q -c "$catalog_sql" | grep '^ranked|')
topn_line=$(q -c "$catalog_sql" | grep '^topn|')
buffered=$(q -c "SELECT sum(n) FROM (SELECT (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM pgtrickle_changes.%I', relname), false, true, '')))[1]::text::int AS n
                 FROM pg_class WHERE relnamespace = 'pgtrickle_changes'::regnamespace AND relkind = 'r') x")
[ "${buffered:-0}" -gt 0 ] || die "no pending changes before the upgrade"

# This build over it: the installed files of ci/install.
cp "$(/usr/lib/postgresql/15/bin/pg_config --pkglibdir)/pg_trickle.so" "$lib/pg_trickle.so.new"
mv "$lib/pg_trickle.so.new" "$lib/pg_trickle.so"
cp /usr/share/postgresql/15/extension/pg_trickle.control \
   /usr/share/postgresql/15/extension/pg_trickle--*.sql "$ext/"
"$PG" start "$CLUSTER" >/dev/null # restarts: the library changed
log="$PG_TRICKLE_PG_BASE/$CLUSTER.log"
deadline=$(( $(date +%s) + 30 ))
until grep -q "database [0-9]* has pg_trickle $OLD, the library is $NEW" "$log" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || die "the scheduler did not say it waits for the update (log: $log)"
  sleep 0.5
done
checks=$((checks + 1))
expect_eq "SELECT extversion FROM pg_extension WHERE extname = 'pg_trickle'" "$OLD"
q -c "ALTER EXTENSION pg_trickle UPDATE" >/dev/null
expect_eq "SELECT extversion = pgtrickle.version(), extversion FROM pg_extension WHERE extname = 'pg_trickle'" "t|$NEW"
# The catalog as it was, new columns at their defaults; pg_temp_N gone from search_path.
expect_eq "$catalog_sql" "$before
$ranked_line
tmpq|SELECT g FROM dim|AUTO|DIFFERENTIAL|plan|ACTIVE|1h|t|pg_catalog, public, pg_temp
$topn_line"
expect_eq "SELECT count(*) FROM pgtrickle.pgt_stream_tables WHERE search_path ~ 'pg_temp_[0-9]'" 0
# Capture moved to the C trigger function: every source's four triggers call it, those of the
# IMMEDIATE stream table's sources with 'maintain'; no 0.34 capture function is left.
expect_eq "SELECT count(*), count(*) FILTER (WHERE t.tgfoid = 'pgtrickle.capture_changes()'::regprocedure),
                  count(*) FILTER (WHERE t.tgnargs = 1 AND EXISTS (SELECT FROM pgtrickle.pgt_dependencies d
                    JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
                    WHERE d.source_relid = t.tgrelid AND s.effective_mode = 'IMMEDIATE'))
                     = count(*) FILTER (WHERE EXISTS (SELECT FROM pgtrickle.pgt_dependencies d
                    JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
                    WHERE d.source_relid = t.tgrelid AND s.effective_mode = 'IMMEDIATE'))
             FROM pg_trigger t WHERE t.tgname LIKE '\\_\\_pgt\\_capture\\_%'" \
  "$(q -c "SELECT 4 * count(DISTINCT source_relid) FROM pgtrickle.pgt_dependencies")|$(q -c "SELECT 4 * count(DISTINCT source_relid) FROM pgtrickle.pgt_dependencies")|t"
expect_eq "SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgtrickle_changes'::regnamespace" 0
q -c "SELECT pgtrickle.drop_stream_table('tmpq')" >/dev/null
expect_eq "SELECT count(*) FROM pgtrickle.pgt_stream_tables WHERE in_shadow_build OR shadow_of IS NOT NULL
             OR shadow_table_name IS NOT NULL" 0
# pg_dump's manifest holds every stream table after the update.
expect_eq "SELECT string_agg(pgt_name || ':' || refresh_mode, ',' ORDER BY pgt_name) FROM pgtrickle.pgt_dump_manifest" \
  "$(q -c "SELECT string_agg(pgt_name || ':' || refresh_mode, ',' ORDER BY pgt_name) FROM pgtrickle.pgt_stream_tables")"
# DDL on a source before the first refresh after the update: the MIN/MAX stream tables,
# whose hidden columns this release lays out differently, follow it (their next refresh
# changes the storage) instead of waiting for reinitialisation.
q -c "ALTER TABLE src ADD COLUMN note text" >/dev/null
expect_eq "SELECT string_agg(pgt_name || ':' || status, ',' ORDER BY pgt_name) FROM pgtrickle.pgt_stream_tables WHERE pgt_name IN ('mx', 'mxh')" \
  "mx:ACTIVE,mxh:ACTIVE"
# mxh's __pgt_id_0 cannot go while the view reads it: the refresh says so (2BP01) and
# changes nothing; without the view it goes.
expect_error 2BP01 "SELECT pgtrickle.refresh_stream_table('mxh')"
out=$(q -c "SELECT pgtrickle.refresh_stream_table('mxh')" 2>&1 || true)
grep -q 'needs its hidden columns __pgt_id_0 dropped' <<<"$out" && grep -q 'view mxh_all' <<<"$out" \
  || die "the refresh of mxh does not name the column and the view: $out"
checks=$((checks + 1))
q -c "DROP VIEW mxh_all" >/dev/null
# A new defining query for mx before its first refresh: the rebuild brings the hidden columns
# in line while the storage is empty, then loads it.
Q[mx]='SELECT g, max(v) AS hi, min(v) AS lo FROM src WHERE v IS NOT NULL GROUP BY g'
q -c "SELECT pgtrickle.alter_stream_table('mx', query => \$q\$${Q[mx]}\$q\$)" >/dev/null
expect_eq "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'mx'::regclass AND attnum > 0 AND NOT attisdropped" \
  "g,hi,lo,__pgt_count,__pgt_ext_0,__pgt_ext_1"
# Every stream table converges, the pending changes included (IMMEDIATE already is).
for st in "${ORDER[@]}"; do
  [ "$st" = imm ] || q -c "SELECT pgtrickle.refresh_stream_table('$st')" >/dev/null
  same_as_query "$st" "${Q[$st]}"
done
# The LIMIT and window stream tables: still refreshed FULL after the update, right all along
# (their storage was made for FULL refreshes only, which ALTER refuses to change in place);
# created again, this release maintains them DIFFERENTIAL (docs/UPGRADING.md).
for st in ranked topn; do
  q -c "SELECT pgtrickle.refresh_stream_table('$st')" >/dev/null
  same_as_query "$st" "${NEWQ[$st]}"
done
expect_eq "SELECT string_agg(pgt_name || ':' || effective_mode, ',' ORDER BY pgt_name) FROM pgtrickle.pgt_stream_tables WHERE pgt_name IN ('ranked', 'topn')" \
  "ranked:FULL,topn:FULL"
for st in ranked topn; do
  expect_error 0A000 "SELECT pgtrickle.alter_stream_table('$st', refresh_mode => 'DIFFERENTIAL')"
  q -c "SELECT pgtrickle.drop_stream_table('$st')" \
    -c "SELECT pgtrickle.create_stream_table('$st', \$q\$${NEWQ[$st]}\$q\$, schedule => '1h')" >/dev/null
  same_as_query "$st" "${NEWQ[$st]}"
done
q -c "UPDATE src SET v = v + 200 WHERE id IN (5, 6)" -c "DELETE FROM src WHERE id = 7" >/dev/null
for st in ranked topn; do
  q -c "SELECT pgtrickle.refresh_stream_table('$st')" >/dev/null
  same_as_query "$st" "${NEWQ[$st]}"
done
expect_eq "SELECT string_agg(s.pgt_name || ':' || s.effective_mode || ':' || h.action, ',' ORDER BY s.pgt_name)
             FROM pgtrickle.pgt_stream_tables s, pgtrickle.get_refresh_history(s.pgt_name, 1) h
            WHERE s.pgt_name IN ('ranked', 'topn')" \
  "ranked:DIFFERENTIAL:DIFFERENTIAL,topn:DIFFERENTIAL:DIFFERENTIAL"
# Both have this release's hidden columns and their identity index; the first refresh said why.
expect_eq "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'mxh'::regclass AND attnum > 0 AND NOT attisdropped" \
  "hi,lo,__pgt_grp_0,__pgt_count,__pgt_ext_0,__pgt_ext_1"
expect_eq "SELECT pg_get_indexdef(indexrelid) ~ 'UNIQUE INDEX .* \\(__pgt_grp_0\\)' FROM pg_index WHERE indrelid = 'mxh'::regclass" t
expect_eq "SELECT count(*) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
             WHERE s.pgt_name IN ('mx', 'mxh') AND h.action = 'FULL'
               AND pgtrickle.fallback_class(h.reason) = 'storage_layout'" 1
# More writes, maintained by the scheduler (a short schedule now), by hand and IMMEDIATE.
q -c "SELECT pgtrickle.alter_stream_table(name, schedule => '1s') FROM pgtrickle.pgt_status() WHERE refresh_mode <> 'IMMEDIATE'" >/dev/null
q <<'SQL' >/dev/null
INSERT INTO src SELECT i, i % 5, i % 77 FROM generate_series(3001, 3400) i;
DELETE FROM src WHERE id % 23 = 1;
UPDATE src SET g = g + 1 WHERE id % 31 = 0;
DELETE FROM dim WHERE g = 4;
SQL
for st in "${ORDER[@]}"; do
  eventually 60 "$(diff_sql "$st" "${Q[$st]}")" 0
done
expect_eq "SELECT count(*) FROM pgtrickle.pgt_status() WHERE status <> 'ACTIVE'" 0
# This release's features on the upgraded catalog.
q -c "SELECT pgtrickle.subscribe('agg', 'agg_up')" >/dev/null
expect_eq "SELECT count(*) FROM pgtrickle.list_subscriptions()" 1
q -c "SELECT pgtrickle.alter_stream_table('flt', query => 'SELECT id, v FROM src WHERE v % 3 = 1')" >/dev/null
same_as_query flt 'SELECT id, v FROM src WHERE v % 3 = 1'
expect_eq "SELECT count(*) > 0 FROM pgtrickle.metrics() WHERE metric = 'pgtrickle_refreshes_total'" t

# The upgraded extension's objects equal a fresh install's.
objects_sql=$(cat <<'SQL'
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pg_trickle'),
members AS (SELECT d.classid, d.objid FROM pg_depend d, ext
             WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
SELECT 'function ' || p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid))
  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
UNION ALL
SELECT 'aggregate ' || p.oid::regprocedure::text
  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid WHERE p.prokind = 'a'
UNION ALL
SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relkind::text || ' ' || c.relrowsecurity::text
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
UNION ALL
SELECT 'column ' || c.oid::regclass::text || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '') || ' ' || a.attidentity::text
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
UNION ALL
SELECT 'constraint ' || c.oid::regclass::text || ' ' || pg_get_constraintdef(k.oid)
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
  JOIN pg_constraint k ON k.conrelid = c.oid
UNION ALL
SELECT 'index ' || c.oid::regclass::text || ' ' || regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \S+ ON', 'INDEX ON')
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
  JOIN pg_index i ON i.indrelid = c.oid
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
  JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.polrelid::regclass::text || ' ' || p.polname || ' ' || p.polcmd::text || ' '
       || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
  FROM pg_policy p JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = p.polrelid
UNION ALL
SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent::text || ' ' || e.evtfoid::regproc::text || ' '
       || coalesce(array_to_string(e.evttags, ','), '')
  FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
UNION ALL
SELECT 'acl ' || c.oid::regclass::text || ' ' || coalesce(c.relacl::text, '')
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
UNION ALL
SELECT 'function acl ' || p.oid::regprocedure::text || ' ' || coalesce(p.proacl::text, '')
  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
UNION ALL
SELECT 'comment on ' || c.oid::regclass::text || ' ' || coalesce(obj_description(c.oid, 'pg_class'), '')
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
UNION ALL
SELECT 'comment on ' || p.oid::regprocedure::text || ' ' || coalesce(obj_description(p.oid, 'pg_proc'), '')
  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
UNION ALL
SELECT 'view ' || c.oid::regclass::text || ' ' || pg_get_viewdef(c.oid)
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid WHERE c.relkind = 'v'
UNION ALL
SELECT 'force rls ' || c.oid::regclass::text || ' ' || c.relforcerowsecurity::text
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
UNION ALL
SELECT 'policy detail ' || p.polrelid::regclass::text || ' ' || p.polname || ' ' || p.polpermissive::text
       || ' ' || p.polroles::text || ' ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
  FROM pg_policy p JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = p.polrelid
UNION ALL
SELECT 'trigger enabled ' || t.tgrelid::regclass::text || ' ' || t.tgname || ' ' || t.tgenabled::text
  FROM pg_trigger t JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = t.tgrelid
 WHERE NOT t.tgisinternal
UNION ALL
SELECT 'event trigger enabled ' || e.evtname || ' ' || e.evtenabled::text
  FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
UNION ALL
SELECT 'config ' || c.oid::regclass::text
  FROM pg_extension e, unnest(e.extconfig) AS x(c) JOIN pg_class c ON c.oid = x.c WHERE e.extname = 'pg_trickle'
ORDER BY 1
SQL
)
upgraded=$(q -c "$objects_sql")
fresh_db fresh
installed=$(q -c "$objects_sql")
if [ "$upgraded" != "$installed" ]; then
  diff <(echo "$installed") <(echo "$upgraded") | head -60 >&2
  die "the upgraded extension differs from a fresh install (< fresh, > upgraded)"
fi
checks=$((checks + 1))
echo "upgrade: $OLD -> $NEW, $(wc -l <<<"$installed") extension objects equal to a fresh install; $checks checks passed"
