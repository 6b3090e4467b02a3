#!/usr/bin/env bash
# ci/bench in a tiny configuration (1,000 rows, one repetition, the installed build): it runs
# every suite and prints its report. Nothing about time is asserted — the machines are shared.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=bench-smoke
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
out=$("$ROOT/ci/bench" --quick --no-install --sizes 1000 --reps 1 --cluster "$CLUSTER" 2>&1) \
  || die "ci/bench failed: $out"
for want in '## FULL vs DIFFERENTIAL refresh' '## Refresh with no changes' \
            '## Change capture overhead' '## IMMEDIATE maintenance' '## Targets'; do
  grep -qF "$want" <<<"$out" || die "no '$want' in the report: $out"
  checks=$((checks + 1))
done
# One row per shape and change rate, each with a FULL/DIFF ratio.
rows=$(grep -cE '^\| [a-z3+-]+ \| 1K \| [0-9.]+ % \| [0-9.]+ \| [0-9.]+ \| [0-9.]+×' <<<"$out" || true)
[ "$rows" = 18 ] || die "want 18 refresh rows, got $rows: $out"
checks=$((checks + 1))
echo "bench_smoke: $checks checks passed"
