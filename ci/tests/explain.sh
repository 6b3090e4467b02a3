#!/usr/bin/env bash
# pgtrickle.explain_stream_table against a live server: every format for stream tables of
# several shapes (keyed join, grouped, set operation, FULL fallback, IMMEDIATE); the JSON parses
# (PostgreSQL's jsonb input) with EXPLAIN's shape; the DOT output renders with graphviz's `dot`;
# verbose lists the statements a refresh runs, and the indexes listed exist.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-explain
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
command -v dot >/dev/null || die "graphviz's dot is missing: run ci/setup"
"$PG" start "$CLUSTER" >/dev/null
svg=$(mktemp)
fresh_db explain
q >/dev/null <<'SQL'
CREATE TABLE o (id int PRIMARY KEY, c int NOT NULL, amount int NOT NULL);
CREATE TABLE c (id int PRIMARY KEY, region text NOT NULL);
INSERT INTO c SELECT g, 'r' || g % 3 FROM generate_series(1, 10) g;
INSERT INTO o SELECT g, 1 + g % 10, g FROM generate_series(1, 100) g;
SELECT pgtrickle.create_stream_table('joined', 'SELECT o.id, o.amount, c.region FROM o JOIN c ON c.id = o.c');
SELECT pgtrickle.create_stream_table('"By Region"', 'SELECT c.region, count(*) AS n, sum(o.amount) AS total, max(o.amount) AS top FROM o JOIN c ON c.id = o.c GROUP BY c.region');
SELECT pgtrickle.create_stream_table('totals', 'SELECT c, count(*) AS n, sum(amount) AS s FROM o GROUP BY c');
SELECT pgtrickle.create_stream_table('last_region', 'SELECT o.c, max(c.region) AS region FROM o JOIN c ON c.id = o.c GROUP BY o.c');
SELECT pgtrickle.create_stream_table('regions', 'SELECT region FROM c EXCEPT SELECT region FROM c WHERE id > 5');
SELECT pgtrickle.create_stream_table('limited', 'SELECT id FROM o ORDER BY id OFFSET 3');
SELECT pgtrickle.create_stream_table('topped', 'SELECT id FROM o ORDER BY id DESC LIMIT 3');
SELECT pgtrickle.create_stream_table('imm', 'SELECT id, amount FROM o WHERE amount > 50', refresh_mode => 'IMMEDIATE');
SQL
for st in joined '"By Region"' totals regions limited topped imm; do
  lit=$(q -c "SELECT quote_literal('$st')" 2>/dev/null || printf "'%s'" "$st")
  text=$(q -c "SELECT pgtrickle.explain_stream_table($lit)")
  head -1 <<<"$text" | grep -q "^Stream table " || die "$st text: $text"
  json=$(q -c "SELECT pgtrickle.explain_stream_table($lit, 'json')")
  expect_eq "SELECT jsonb_typeof((\$j\$${json}\$j\$::jsonb)->0->'Plan'->'Node Type')" string
  expect_eq "SELECT (\$j\$${json}\$j\$::jsonb)->0->>'Stream Table' = (SELECT format('%I.%I', pgt_schema, pgt_name) FROM pgtrickle.pgt_stream_tables WHERE pgt_relid = $lit::regclass)" t
  q -c "SELECT pgtrickle.explain_stream_table($lit, 'dot')" | dot -Tsvg >"$svg" 2>&1 \
    || die "$st: dot refused the output: $(cat "$svg")"
  grep -q "<svg" "$svg" || die "$st: no SVG"
  checks=$((checks + 2))
done
# What each shape shows.
expect_eq "SELECT pgtrickle.explain_stream_table('joined') LIKE '%Join%bilinear%'" t
expect_eq "SELECT pgtrickle.explain_stream_table('\"By Region\"') LIKE '%Aggregate%MIN/MAX in place, a group rescanned only when a deletion reaches its extreme%'" t
expect_eq "SELECT pgtrickle.explain_stream_table('last_region') LIKE '%Aggregate%recompute the touched groups%'" t
expect_eq "SELECT pgtrickle.explain_stream_table('regions') LIKE '%SetOp%counting per row%'" t
expect_eq "SELECT pgtrickle.explain_stream_table('limited') LIKE '%FULL because: not differentiable: LIMIT%'" t
expect_eq "SELECT pgtrickle.explain_stream_table('topped') LIKE '%TopK%keep the boundary%'" t
expect_eq "SELECT pgtrickle.explain_stream_table('imm') LIKE 'Stream table public.imm: IMMEDIATE%'" t
# The indexes it lists exist: the storage's and the change buffers'.
expect_eq "SELECT count(*) >= 3 FROM jsonb_array_elements_text((pgtrickle.explain_stream_table('joined', 'json')::jsonb)->0->'Indexes') i
           WHERE to_regclass(split_part(i, ':', 1)) IS NOT NULL" t
# Verbose: the statements of a refresh (of a grouped stream table: with its counting statement).
v=$(q -c "SELECT pgtrickle.explain_stream_table('totals', verbose => true)")
for step in "full:" "delta table:" "fill:" "counts (with subscriptions):" "apply" "clear:"; do
  grep -qF "  $step" <<<"$v" || die "verbose lacks $step: $v"
  checks=$((checks + 1))
done
expect_eq "SELECT jsonb_array_length((pgtrickle.explain_stream_table('limited', 'json', true)::jsonb)->0->'Statements')" 2
# Errors.
expect_error 22023 "SELECT pgtrickle.explain_stream_table('joined', 'yaml')"
expect_error 42P01 "SELECT pgtrickle.explain_stream_table('o')"
expect_error 22004 "SELECT pgtrickle.explain_stream_table('joined', NULL)"
q -c "CREATE ROLE explain_nobody" >/dev/null
expect_error 42501 "SET ROLE explain_nobody; SELECT pgtrickle.explain_stream_table('joined')"
q -c "GRANT SELECT ON joined TO explain_nobody" >/dev/null
expect_eq "SET ROLE explain_nobody; SELECT pgtrickle.explain_stream_table('joined') LIKE 'Stream table public.joined: %'" t
q -c "DROP OWNED BY explain_nobody" -c "DROP ROLE explain_nobody" >/dev/null
echo "explain: $checks checks passed"
