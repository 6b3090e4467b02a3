#!/usr/bin/env bash
# Packaging: ci/package's tarball holds the library, the control file, the install script and
# every upgrade script (and META.json), and installed into a private copy of PostgreSQL it
# works (CREATE EXTENSION, a stream table refreshed, version() = the package's version); the
# Dockerfile passes hadolint (no Docker engine here: it is linted, not built); META.json is
# PGXN's meta-spec 1.0.0 with the required keys.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLUSTER=test-package
NEW=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' "$ROOT/Cargo.toml")
venv="${XDG_CACHE_HOME:-$HOME/.cache}/pg_trickle/venv"
[ -x "$venv/bin/hadolint" ] || die "hadolint is not installed in $venv (run ci/setup)"

out=$("$ROOT/ci/package" --debug | awk '{print $1}')
[ -f "$out" ] || die "ci/package wrote no tarball"
listing=$(tar -tzf "$out")
for f in usr/lib/postgresql/15/lib/pg_trickle.so usr/share/postgresql/15/extension/pg_trickle.control \
         "usr/share/postgresql/15/extension/pg_trickle--$NEW.sql" usr/share/doc/pg_trickle/META.json; do
  grep -qx "./$f" <<<"$listing" || die "the package lacks $f"
  checks=$((checks + 1))
done
for up in "$ROOT"/extension/sql/pg_trickle--*--*.sql; do
  grep -qx "./usr/share/postgresql/15/extension/$(basename "$up")" <<<"$listing" ||
    die "the package lacks $(basename "$up")"
  checks=$((checks + 1))
done

# Installed from the tarball alone into a private PostgreSQL (no pg_trickle files before).
private="$ROOT/target/pg15-package"
rm -rf "$private"
mkdir -p "$private/usr/lib/postgresql" "$private/usr/share/postgresql"
cp -a /usr/lib/postgresql/15 "$private/usr/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$private/usr/share/postgresql/"
rm -f "$private/usr/lib/postgresql/15/lib/pg_trickle.so" "$private/usr/share/postgresql/15/extension"/pg_trickle*
tar -C "$private" -xzf "$out"
export PG_TRICKLE_PG_BIN="$private/usr/lib/postgresql/15/bin" PG_TRICKLE_PG_BASE="$ROOT/target/pg-package"
PG="$ROOT/ci/pg"
cleanup() { [ -n "${KEEP:-}" ] || { "$PG" destroy "$CLUSTER" >/dev/null 2>&1; rm -rf "$private"; }; }
trap cleanup EXIT
"$PG" start "$CLUSTER" >/dev/null
fresh_db pkg
expect_eq "SELECT extversion = pgtrickle.version(), extversion FROM pg_extension WHERE extname = 'pg_trickle'" "t|$NEW"
q -c "CREATE TABLE t (id int PRIMARY KEY, v int)" -c "INSERT INTO t SELECT i, i % 4 FROM generate_series(1, 50) i" \
  -c "SELECT pgtrickle.create_stream_table('s', 'SELECT v, count(*) AS n FROM t GROUP BY v', schedule => '1s')" >/dev/null
q -c "INSERT INTO t VALUES (51, 9)" >/dev/null
eventually 30 "$(diff_sql s 'SELECT v, count(*) AS n FROM t GROUP BY v')" 0

"$venv/bin/hadolint" "$ROOT/Dockerfile" || die "hadolint found problems in the Dockerfile"
checks=$((checks + 1))
python3 - "$ROOT/META.json" <<'PY' || die "META.json is not a valid PGXN meta-spec 1.0.0 document"
import json, sys
m = json.load(open(sys.argv[1]))
for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
    assert key in m, key
assert m["meta-spec"]["version"] == "1.0.0"
for ext in m["provides"].values():
    assert "file" in ext and "version" in ext
PY
checks=$((checks + 1))
echo "package: $(basename "$out") ($(du -h "$out" | cut -f1)), installed and working; $checks checks passed"
