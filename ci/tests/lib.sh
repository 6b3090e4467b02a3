# ci/tests/lib.sh — helpers for the psql-driven integration tests (sourced).
# Each test gets its own database in the cluster named by $CLUSTER.
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
PG="$ROOT/ci/pg"
checks=0

# psql against $DB, tuples only, stop on error.
q() { "$PG" psql "$CLUSTER" -d "$DB" -X -Atq -v ON_ERROR_STOP=1 "$@"; }

fresh_db() {
  DB=$1
  "$PG" psql "$CLUSTER" -Atq -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\""
  q -c 'CREATE EXTENSION pg_trickle'
}

# Keeps the background scheduler away from 'calculated' stream tables in $CLUSTER, for tests
# whose refreshes are all manual (a concurrent scheduled refresh would race with them).
manual_refresh_only() {
  "$PG" psql "$CLUSTER" -q -c "ALTER SYSTEM SET pg_trickle.default_schedule_seconds = 86400" \
    -c "SELECT pg_reload_conf()" >/dev/null
}

die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# expect_eq SQL WANT — the query's output (tuples only, | separated) equals WANT.
expect_eq() {
  local got
  got=$(q -c "$1" 2>&1) || die "$1 failed: $got"
  [ "$got" = "$2" ] || die "$1
  want: $2
  got:  $got"
  checks=$((checks + 1))
}

# expect_error SQLSTATE SQL — the statement fails with that SQLSTATE.
expect_error() {
  local out
  out=$(q -v VERBOSITY=verbose -c "$2" 2>&1) && die "$2 succeeded, want SQLSTATE $1"
  grep -q "ERROR:  $1:" <<<"$out" || die "$2: want SQLSTATE $1, got: $out"
  checks=$((checks + 1))
}

# expect_notice TEXT SQL... — running the statements prints a NOTICE containing TEXT.
expect_notice() {
  local want=$1 out
  shift
  out=$(q "${@/#/-c}" 2>&1) || die "$* failed: $out"
  grep -qF "NOTICE:  $want" <<<"$out" || die "$*: want NOTICE '$want', got: $out"
  checks=$((checks + 1))
}

# no_notice SQL... — the statements print no NOTICE at all.
no_notice() {
  local out
  out=$(q "${@/#/-c}" 2>&1) || die "$* failed: $out"
  if grep -q "NOTICE" <<<"$out"; then die "$*: unexpected notice: $out"; fi
  checks=$((checks + 1))
}

# same_as_query ST QUERY — the stream table's user columns equal QUERY as multisets.
same_as_query() {
  local cols
  cols=$(q -c "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
               WHERE attrelid = '$1'::regclass AND attnum > 0 AND NOT attisdropped
               AND attname NOT LIKE '\_\_pgt\_%'")
  expect_eq "SELECT (SELECT count(*) FROM (SELECT $cols FROM $1 EXCEPT ALL ($2)) x)
             + (SELECT count(*) FROM (($2) EXCEPT ALL SELECT $cols FROM $1) y)" 0
}

# eventually SECONDS SQL WANT — polls until the query returns WANT (generous deadlines: the
# machines are shared; never assert durations).
eventually() {
  local deadline=$(( $(date +%s) + $1 )) got
  while :; do
    got=$(q -c "$2" 2>&1 || true)
    [ "$got" = "$3" ] && { checks=$((checks + 1)); return 0; }
    [ "$(date +%s)" -lt "$deadline" ] || die "after ${1}s: $2
  want: $3
  got:  $got"
    sleep 0.5
  done
}

# diff_sql ST QUERY — SQL counting rows in which the stream table and QUERY differ.
diff_sql() {
  local cols
  cols=$(q -c "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
               WHERE attrelid = '$1'::regclass AND attnum > 0 AND NOT attisdropped
               AND attname NOT LIKE '\_\_pgt\_%'")
  printf 'SELECT (SELECT count(*) FROM (SELECT %s FROM %s EXCEPT ALL (%s)) x) + (SELECT count(*) FROM ((%s) EXCEPT ALL SELECT %s FROM %s) y)' \
    "$cols" "$1" "$2" "$2" "$cols" "$1"
}

# free_port — a port nothing listens on, from a range clear of ci/pg's clusters (15432…) and
# of the ephemeral ports (32768…), which client connections in TIME-WAIT may hold.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# wait_port PORT — waits (up to 10 s) until something listens on the port.
wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $1"
}
