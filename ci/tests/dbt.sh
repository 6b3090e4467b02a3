#!/usr/bin/env bash
# The dbt package (dbt/): its integration project against a local cluster with dbt-core and
# dbt-postgres from PyPI (ci/setup installs them into ~/.cache/pg_trickle/venv).
# - dbt run creates the models as stream tables with their configured schedule and mode, one
#   reading the other, equal to their queries;
# - a changed model and dbt run again: the stream table is altered in place (same id), a
#   changed schedule too; dbt run without changes changes nothing;
# - dbt test passes on the stream tables;
# - dbt run --full-refresh drops and creates them again (new ids);
# - the stream tables keep being maintained between runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-dbt
venv="${XDG_CACHE_HOME:-$HOME/.cache}/pg_trickle/venv"
[ -x "$venv/bin/dbt" ] || die "dbt is not installed in $venv (run ci/setup)"
work=$(mktemp -d)
cleanup() { [ -n "${KEEP:-}" ] || "$PG" destroy "$CLUSTER" >/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$PG" start "$CLUSTER" >/dev/null
fresh_db dbt
q <<'SQL' >/dev/null
CREATE TABLE orders (id int PRIMARY KEY, region text NOT NULL, amount numeric NOT NULL);
INSERT INTO orders SELECT i, 'r' || (i % 5), i * 1.5 FROM generate_series(1, 200) i;
SQL
# The project is copied (dbt writes target/ and dbt_packages/ into it); the package is the
# repository's dbt/ directory, linked by dbt deps.
cp -r "$ROOT/dbt/integration_tests" "$work/project"
sed -i "s|local: ../|local: $ROOT/dbt|" "$work/project/packages.yml"
cat >"$work/profiles.yml" <<YML
pg_trickle_integration_tests:
  target: test
  outputs:
    test:
      type: postgres
      host: 127.0.0.1
      port: $("$PG" port "$CLUSTER")
      user: postgres
      password: ""
      dbname: dbt
      schema: analytics
      threads: 1
YML
export DBT_PROFILES_DIR="$work" DBT_SEND_ANONYMOUS_USAGE_STATS=false DBT_VERSION_CHECK=false
dbt() { (cd "$work/project" && "$venv/bin/dbt" --no-use-colors "$@") >"$work/dbt.log" 2>&1 ||
          die "dbt $* failed: $(tail -30 "$work/dbt.log")"; }
dbt deps
dbt run
R='SELECT region, count(*) AS orders, sum(amount) AS revenue FROM orders GROUP BY region'
B="SELECT region, revenue FROM ($R) t WHERE orders > 2"
expect_eq "SELECT pgt_name, schedule, refresh_mode, effective_mode FROM pgtrickle.pgt_stream_tables
            WHERE pgt_schema = 'analytics' ORDER BY 1" "big_regions|calculated|AUTO|DIFFERENTIAL
region_totals|1s|DIFFERENTIAL|DIFFERENTIAL
tagged|5s|AUTO|DIFFERENTIAL"
expect_eq "SELECT DISTINCT marker FROM analytics.tagged" "\$pgt_0\$ and 'quoted'"
same_as_query analytics.region_totals "$R"
same_as_query analytics.big_regions "$B"
ids() { q -c "SELECT string_agg(pgt_id::text, ',' ORDER BY pgt_name) FROM pgtrickle.pgt_stream_tables WHERE pgt_schema = 'analytics'"; }
first=$(ids)
# Maintained between runs (the scheduler; big_regions on its calculated schedule).
q -c "INSERT INTO orders SELECT i, 'r' || (i % 7), i FROM generate_series(201, 260) i" >/dev/null
eventually 30 "$(diff_sql analytics.region_totals "$R")" 0
eventually 30 "$(diff_sql analytics.big_regions "$B")" 0
# Nothing changed: nothing altered.
dbt run
expect_eq "SELECT count(*) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
            WHERE s.pgt_schema = 'analytics' AND h.reason = 'the defining query changed'" 0
# A changed model (same columns) and a changed schedule: altered in place.
cat >"$work/project/models/region_totals.sql" <<'SQL'
{{ config(materialized='stream_table', schedule='2s', refresh_mode='DIFFERENTIAL') }}
SELECT region, count(*) AS orders, sum(amount) AS revenue
  FROM {{ source('shop', 'orders') }}
 WHERE amount > 10
 GROUP BY region
SQL
dbt run
R2='SELECT region, count(*) AS orders, sum(amount) AS revenue FROM orders WHERE amount > 10 GROUP BY region'
B2="SELECT region, revenue FROM ($R2) t WHERE orders > 2"
expect_eq "$(printf "SELECT '%s' = '%s'" "$(ids)" "$first")" t
expect_eq "SELECT schedule, defining_query LIKE '%amount > 10%' FROM pgtrickle.pgt_stream_tables
            WHERE pgt_schema = 'analytics' AND pgt_name = 'region_totals'" "2s|t"
same_as_query analytics.region_totals "$R2"
eventually 30 "$(diff_sql analytics.big_regions "$B2")" 0
dbt test
grep -q "Completed successfully" "$work/dbt.log" || die "dbt test did not pass: $(tail -20 "$work/dbt.log")"
checks=$((checks + 1))
# --full-refresh: dropped and created again.
dbt run --full-refresh
[ "$(ids)" != "$first" ] || die "dbt run --full-refresh kept the stream tables"
checks=$((checks + 1))
same_as_query analytics.region_totals "$R2"
same_as_query analytics.big_regions "$B2"
echo "dbt: $("$venv/bin/dbt" --version 2>/dev/null | awk '/installed:/{print $3; exit}') — $checks checks passed"
