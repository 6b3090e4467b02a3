#!/usr/bin/env bash
# The Prometheus endpoint and the monitoring kit against real components: a cluster with
# pg_trickle.metrics_port set serves /metrics; its figures are those of pgtrickle.pgt_metrics
# in each database with the extension (labelled by database); `promtool check metrics` accepts
# the exposition; Debian's Prometheus server scrapes the endpoint and its HTTP API returns the
# series; the alert rules pass `promtool check rules` and their unit tests; the Grafana
# dashboard and the alert rules name only metrics the endpoint exports.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-metrics
work=$(mktemp -d)
prom_pid=""
cleanup() {
  [ -z "$prom_pid" ] || kill "$prom_pid" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || "$PG" destroy "$CLUSTER" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
command -v promtool >/dev/null && command -v prometheus >/dev/null \
  || die "prometheus and promtool are missing: run ci/setup"

# --- the monitoring kit alone -----------------------------------------------------------------
alerts="$ROOT/monitoring/grafana/alerts"
promtool check rules "$alerts/pg_trickle.yml" >/dev/null || die "promtool check rules failed"
(cd "$alerts" && promtool test rules pg_trickle_test.yml) >/dev/null || die "promtool test rules failed"
checks=$((checks + 2))

# --- no endpoint unless asked -------------------------------------------------------------------
"$PG" destroy "$CLUSTER" >/dev/null 2>&1 || true
"$PG" start "$CLUSTER" >/dev/null
DB=postgres
expect_eq "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_trickle metrics'" 0
mport=$(free_port)
"$PG" psql "$CLUSTER" -q -c "ALTER SYSTEM SET pg_trickle.metrics_port = $mport" \
  -c "ALTER SYSTEM SET pg_trickle.scheduler_interval_ms = 200"
"$PG" stop "$CLUSTER" >/dev/null
"$PG" start "$CLUSTER" >/dev/null
eventually 30 "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_trickle metrics'" 1
url="http://127.0.0.1:$mport/metrics"

# --- a workload in two databases; a third has no extension --------------------------------------
"$PG" psql "$CLUSTER" -q -c "DROP DATABASE IF EXISTS plain" -c "CREATE DATABASE plain"
fresh_db other
q -c "CREATE TABLE s (id int PRIMARY KEY, v int)" \
  -c "INSERT INTO s VALUES (1, 1)" \
  -c "SELECT pgtrickle.create_stream_table('copy', 'SELECT id, v FROM s', schedule => '1h')" >/dev/null
fresh_db metrics
q >/dev/null <<'SQL'
CREATE TABLE t (id int PRIMARY KEY, g int NOT NULL, v int NOT NULL);
INSERT INTO t SELECT i, i % 5, i FROM generate_series(1, 200) i;
SELECT pgtrickle.create_stream_table('agg', 'SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g', schedule => '1h');
SELECT pgtrickle.create_stream_table('"Odd Name"', 'SELECT id, random() AS r FROM t WHERE id < 10', schedule => '1h');
SELECT pgtrickle.create_stream_table('ratio', 'SELECT id, 100 / v AS r FROM t', schedule => '1s');
SELECT pgtrickle.subscribe('agg', 'agg_changes');
SQL
for i in 1 2 3; do
  q -c "UPDATE t SET v = v + 1 WHERE id <= $((i * 10))" -c "SELECT pgtrickle.refresh_stream_table('agg')" \
    -c "SELECT pgtrickle.refresh_stream_table('\"Odd Name\"')" >/dev/null 2>&1
done
q -c "SET pg_trickle.force_full_refresh = on" -c "SELECT pgtrickle.refresh_stream_table('agg')" >/dev/null 2>&1
# A division by zero makes the scheduled refreshes of ratio fail (FAILED history rows).
q -c "UPDATE t SET v = 0 WHERE id = 7"
eventually 60 "SELECT count(*) > 0 FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'ratio' AND h.status = 'FAILED'" t
# Pending changes in the buffer of t: agg and "Odd Name" have not consumed this write.
q -c "INSERT INTO t VALUES (1000, 1, 1), (1001, 2, 2)"

# --- the endpoint -------------------------------------------------------------------------------
scrape="$work/scrape.txt"
headers=$(curl -sS -D - -o "$scrape" "$url") || die "curl $url failed"
grep -q "^HTTP/1.1 200" <<<"$headers" || die "status: $headers"
grep -qi "^Content-Type: text/plain; version=0.0.4" <<<"$headers" || die "content type: $headers"
promtool check metrics <"$scrape" >"$work/lint.txt" 2>&1 || die "promtool check metrics: $(cat "$work/lint.txt")"
checks=$((checks + 3))
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/nothing")" = 404 ] || die "no 404"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url")" = 405 ] || die "no 405"
checks=$((checks + 2))

has() { grep -qF -- "$1" "$scrape" || die "the scrape lacks: $1"; checks=$((checks + 1)); }
lacks() { if grep -qF -- "$1" "$scrape"; then die "the scrape has: $1"; fi; checks=$((checks + 1)); }
# Counters equal to what the history and the catalog say.
diff_n=$(q -c "SELECT count(*) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'agg' AND h.action = 'DIFFERENTIAL' AND h.status = 'COMPLETED'")
[ "$diff_n" -ge 3 ] || die "agg had $diff_n differential refreshes"
has "pgtrickle_refreshes_total{database=\"metrics\",stream_table=\"public.agg\",action=\"DIFFERENTIAL\",status=\"COMPLETED\"} $diff_n"
has "pgtrickle_refresh_duration_seconds_count{database=\"metrics\",stream_table=\"public.agg\",action=\"DIFFERENTIAL\"} $diff_n"
has "pgtrickle_refresh_duration_seconds_bucket{database=\"metrics\",stream_table=\"public.agg\",action=\"DIFFERENTIAL\",le=\"+Inf\"} $diff_n"
has "pgtrickle_full_fallbacks_total{database=\"metrics\",stream_table=\"public.agg\",reason=\"force_full_refresh\"} 1"
has "pgtrickle_full_fallbacks_total{database=\"metrics\",stream_table=\"public.\\\"Odd Name\\\"\",reason=\"not_differentiable\"} 3"
failed=$(q -c "SELECT count(*) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'ratio' AND h.status = 'FAILED'")
grep -qE "^pgtrickle_refresh_errors_total\{database=\"metrics\",stream_table=\"public.ratio\"\} [1-9]" "$scrape" \
  || die "no errors of ratio: $(grep refresh_errors "$scrape")"
checks=$((checks + 1))
has "pgtrickle_notifications_sent_total{database=\"metrics\",stream_table=\"public.agg\",channel=\"agg_changes\"}"
has "pgtrickle_change_buffer_rows{database=\"metrics\",source=\"t\"}"
has "pgtrickle_stream_table_info{database=\"metrics\",stream_table=\"public.agg\",refresh_mode=\"AUTO\",effective_mode=\"DIFFERENTIAL\",status=\"ACTIVE\"} 1"
has "pgtrickle_schedule_seconds{database=\"metrics\",stream_table=\"public.agg\"} 3600"
has "pgtrickle_stream_table_info{database=\"other\",stream_table=\"public.copy\""
has "pgtrickle_scrape_database_up{database=\"metrics\"} 1"
has "pgtrickle_scrape_database_up{database=\"other\"} 1"
lacks "{database=\"plain\",stream_table"
lacks "pgtrickle_scrape_database_up{database=\"plain\"}"
# The scheduler's figures once, whichever databases report them.
[ "$(grep -c '^pgtrickle_worker_slots{state="total"} 4$' "$scrape")" = 1 ] || die "worker slots: $(grep worker_slots "$scrape")"
checks=$((checks + 1))
# The change buffer's depth is its row count (at least the two rows written after the last
# refreshes), the same in the view and in the scrape.
buffer_rows=$(q -c "SELECT count(*) FROM pgtrickle_changes.\"changes_$(q -c "SELECT 't'::regclass::oid")\"")
[ "$buffer_rows" -ge 2 ] || die "change buffer rows $buffer_rows"
expect_eq "SELECT value::bigint FROM pgtrickle.pgt_metrics WHERE metric = 'pgtrickle_change_buffer_rows' AND labels = '{source,t}'" "$buffer_rows"
has "pgtrickle_change_buffer_rows{database=\"metrics\",source=\"t\"} $buffer_rows"

# Every counter and histogram sample of the view is in the scrape, with the database label.
q -c "SELECT metric || '{database=\"metrics\",' || (
          SELECT string_agg(labels[2 * i - 1] || '=\"' || replace(labels[2 * i], '\"', '\\\"') || '\"', ',' ORDER BY i)
            FROM generate_series(1, cardinality(labels) / 2) i) || '} ' || value
        FROM pgtrickle.pgt_metrics
       WHERE scope = 'database' AND (metric LIKE '%\\_total' OR metric LIKE 'pgtrickle\\_refresh\\_duration%')" >"$work/view.txt"
[ "$(wc -l <"$work/view.txt")" -ge 20 ] || die "the view has few counter samples: $(cat "$work/view.txt")"
while IFS= read -r line; do
  grep -qxF -- "$line" "$scrape" || die "the view's sample is not in the scrape: $line"
done <"$work/view.txt"
checks=$((checks + 1))

# A role that owns and may read no stream table sees none of them in the view.
q -c "DROP ROLE IF EXISTS metrics_nobody" -c "CREATE ROLE metrics_nobody"
expect_eq "SET ROLE metrics_nobody; SELECT count(*) FROM pgtrickle.pgt_metrics WHERE labels[1] IN ('stream_table', 'source'); RESET ROLE" 0
q -c "DROP ROLE metrics_nobody"

# --- Debian's Prometheus scrapes the endpoint -------------------------------------------------
pport=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $alerts/pg_trickle.yml
scrape_configs:
  - job_name: pg_trickle
    static_configs:
      - targets: ['127.0.0.1:$mport']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$pport" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
api() { curl -s --get "http://127.0.0.1:$pport/api/v1/$1" --data-urlencode "query=$2"; }
want="pgtrickle_refreshes_total{database=\"metrics\",stream_table=\"public.agg\",action=\"DIFFERENTIAL\",status=\"COMPLETED\"}"
deadline=$(( $(date +%s) + 60 ))
until api query "$want" | grep -q "\"value\":\[[0-9.]*,\"$diff_n\"\]"; do
  [ "$(date +%s)" -lt "$deadline" ] || die "Prometheus did not return $want = $diff_n: $(api query "$want"); targets: $(curl -s "http://127.0.0.1:$pport/api/v1/targets"); log: $(tail -5 "$work/prometheus.log")"
  sleep 1
done
checks=$((checks + 1))
# The target is up, the rules loaded, and a p99 over the histogram evaluates.
api query 'up{job="pg_trickle"}' | grep -q '"value":\[[0-9.]*,"1"\]' || die "target not up"
curl -s "http://127.0.0.1:$pport/api/v1/rules" | grep -q '"name":"PgTrickleRefreshLatencyHigh"' || die "rules not loaded"
api query 'histogram_quantile(0.99, sum by (le) (pgtrickle_refresh_duration_seconds_bucket{stream_table="public.agg"}))' \
  | grep -q '"resultType":"vector","result":\[{' || die "no p99 series"
checks=$((checks + 3))

# --- the dashboard and the rules name only exported metrics -------------------------------------
grep '^# TYPE ' "$scrape" | awk '{print $3, $4}' >"$work/families.txt"
[ "$(wc -l <"$work/families.txt")" -ge 15 ] || die "few families: $(cat "$work/families.txt")"
# unexported FILE... — the metrics the files name that the endpoint does not export.
unexported() {
  local m b base
  for m in $(cat "$@" | grep -o 'pgtrickle_[a-z_]*' | sort -u); do
    base=$m
    for b in "${m%_bucket}" "${m%_sum}" "${m%_count}"; do
      if [ "$b" != "$m" ] && grep -qx "$b histogram" "$work/families.txt"; then base=$b; fi
    done
    grep -q "^$base " "$work/families.txt" || echo "$m"
  done
}
named=$(cat "$ROOT/monitoring/grafana/pg_trickle.json" "$alerts/pg_trickle.yml" | grep -o 'pgtrickle_[a-z_]*' | sort -u)
[ -n "$named" ] || die "the dashboard names no metric"
missing=$(unexported "$ROOT/monitoring/grafana/pg_trickle.json" "$alerts/pg_trickle.yml")
[ -z "$missing" ] || die "monitoring/ names metrics the endpoint does not export: $missing"
checks=$((checks + 1))
# The check is not vacuous: a dashboard with a misspelt metric is caught.
sed 's/pgtrickle_change_buffer_rows/pgtrickle_change_buffer_size/' \
  "$ROOT/monitoring/grafana/pg_trickle.json" >"$work/misspelt.json"
[ "$(unexported "$work/misspelt.json")" = pgtrickle_change_buffer_size ] \
  || die "a misspelt metric was not caught: $(unexported "$work/misspelt.json")"
checks=$((checks + 1))
echo "metrics: $checks checks passed ($(wc -w <<<"$named") metrics named by monitoring/, all exported)"
