//! Whether the library was loaded through `shared_preload_libraries`, and the check that
//! refuses `CREATE EXTENSION` when it was not.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the postmaster while `shared_preload_libraries` is processed; inherited by every
/// backend it forks. A backend that loaded the library on demand sees `false`.
static LOADED_AT_STARTUP: AtomicBool = AtomicBool::new(false);

/// Records how the library was loaded. Called once from `_PG_init`.
pub(crate) fn record_load() {
    // SAFETY: `process_shared_preload_libraries_in_progress` is a plain global bool that
    // PostgreSQL sets in the postmaster around the preload phase; reading it from `_PG_init`
    // (which runs on the main thread of the loading process) is the documented use.
    let in_preload = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if in_preload {
        LOADED_AT_STARTUP.store(true, Ordering::Relaxed);
    }
}

/// True when this process inherited the library from the postmaster's preload.
pub(crate) fn loaded_at_startup() -> bool {
    LOADED_AT_STARTUP.load(Ordering::Relaxed)
}

/// Raises SQLSTATE 55000 (object_not_in_prerequisite_state) unless the library was preloaded.
/// Runs inside `CREATE EXTENSION pg_trickle`, which it aborts when the check fails.
#[pg_extern(volatile, parallel_unsafe)]
fn assert_preloaded() {
    if !loaded_at_startup() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_trickle must be loaded via shared_preload_libraries",
            function_name!(),
        )
        .set_detail(
            "Its background workers and shared state can only be set up when the server starts.",
        )
        .set_hint(
            "Add pg_trickle to shared_preload_libraries in postgresql.conf and restart the server.",
        )
        .report(PgLogLevel::ERROR);
    }
}
