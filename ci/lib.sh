# ci/lib.sh — shared settings for the ci/ scripts (sourced, not run).
# The cargo target dir lives outside the clone so that a fresh clone (CI) reuses earlier builds.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pg_trickle/target}"
# PG_TRICKLE_PG_BIN: another PostgreSQL 15 installation's bin directory (the upgrade test uses
# a private copy).
PG_BIN="${PG_TRICKLE_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_CONFIG="$PG_BIN/pg_config"
# Throwaway clusters live under the clone's target/ (git-ignored), owned by `postgres`.
PG_BASE="${PG_TRICKLE_PG_BASE:-$ROOT/target/pg}"
export PG_BIN PG_CONFIG PG_BASE ROOT
