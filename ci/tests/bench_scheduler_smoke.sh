#!/usr/bin/env bash
# ci/bench-scheduler in a tiny configuration (20 stream tables, 5-second phases, the installed
# build): it runs and prints its report, and every stream table converged to its query after
# the writes. Nothing about time is asserted — the machines are shared.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=bench-sched-smoke
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null' EXIT
out=$("$ROOT/ci/bench-scheduler" --counts 20 --seconds 5 --no-install --cluster "$CLUSTER" 2>&1) \
  || die "ci/bench-scheduler failed: $out"
grep -qF '## Scheduler at scale' <<<"$out" || die "no report: $out"
checks=$((checks + 1))
# One row: 20 stream tables, all DIFFERENTIAL, figures for both phases, all converged.
grep -qE '^\| 20 \| 20/20 \| [0-9]+ \| [0-9.]+ \| [0-9]+ \| [0-9.]+ \| [0-9]+ \| [0-9]+ \| [0-9]+ \| 20/20 \|$' <<<"$out" \
  || die "want a row for 20 stream tables, all converged: $out"
checks=$((checks + 1))
echo "bench_scheduler_smoke: $checks checks passed"
