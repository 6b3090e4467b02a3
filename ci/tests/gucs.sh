#!/usr/bin/env bash
# docs/CONFIGURATION.md's GUC table is what the code defines (ci/gucs --check against a
# server that preloads the installed library), and the check fails on a stale table.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-gucs
[ -n "${KEEP:-}" ] || trap '"$PG" destroy "$CLUSTER" >/dev/null; rm -rf "$copy"' EXIT
copy=$(mktemp -d)
"$ROOT/ci/gucs" --check --cluster "$CLUSTER"
checks=$((checks + 1))
# A stale copy (one GUC's default changed) is refused.
mkdir -p "$copy/ci" "$copy/docs"
cp "$ROOT/ci/gucs" "$ROOT/ci/lib.sh" "$ROOT/ci/pg" "$copy/ci/"
sed 's/| `pg_trickle.max_workers` | integer | `4` |/| `pg_trickle.max_workers` | integer | `5` |/' \
  "$ROOT/docs/CONFIGURATION.md" >"$copy/docs/CONFIGURATION.md"
cmp -s "$ROOT/docs/CONFIGURATION.md" "$copy/docs/CONFIGURATION.md" && die "the stale copy is not stale"
if PG_TRICKLE_PG_BASE="$PG_BASE" "$copy/ci/gucs" --check --cluster "$CLUSTER" >/dev/null 2>&1; then
  die "ci/gucs --check accepted a stale table"
fi
checks=$((checks + 1))
echo "gucs: $checks checks passed"
