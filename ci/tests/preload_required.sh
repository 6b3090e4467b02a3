#!/usr/bin/env bash
# CREATE EXTENSION pg_trickle in a server that did not preload the library must fail with
# SQLSTATE 55000 and a hint naming shared_preload_libraries; with preloading it must succeed and
# report the crate version.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
pg="$ROOT/ci/pg"
trap '"$pg" destroy test-nopreload test-preload >/dev/null' EXIT

"$pg" start test-nopreload --no-preload >/dev/null
out=$("$pg" psql test-nopreload -v VERBOSITY=verbose -c 'CREATE EXTENSION pg_trickle' 2>&1 || true)
echo "$out"
grep -q 'ERROR:  55000: pg_trickle must be loaded via shared_preload_libraries' <<<"$out"
grep -q 'HINT:  Add pg_trickle to shared_preload_libraries' <<<"$out"
# Nothing half-created.
left=$("$pg" psql test-nopreload -Atc "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgtrickle%'")
[ "$left" = 0 ] || { echo "schemas left behind: $left"; exit 1; }

"$pg" start test-preload >/dev/null
v=$("$pg" psql test-preload -Atc 'CREATE EXTENSION pg_trickle' -c 'SELECT pgtrickle.version()' | tail -n 1)
want=$(awk -F'"' '/^version/{print $2; exit}' "$ROOT/Cargo.toml")
[ "$v" = "$want" ] || { echo "version() = '$v', want '$want'"; exit 1; }
echo "preload check ok (version $v)"
