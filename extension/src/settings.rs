//! Settings a piece of pg_trickle's work runs with, set for its duration and restored after
//! it (by the (sub)transaction's abort when it raises an error), as a function's SET clause
//! does, without an SQL round trip.

use std::ffi::{CStr, CString};

use pgrx::prelude::*;

use crate::error::PgTrickleError;

/// Runs `f` with the stream table's creation-time search_path (so its query means what it
/// meant at creation, whoever refreshes: a user, the scheduler, a capture trigger), with
/// standard-conforming strings (see [`with_standard_strings`]) and with
/// generic plans for prepared statements (their only parameters are the previous frontier,
/// whose value does not change which plan is best) and without JIT compilation (a delta
/// statement is large — a subquery per operator — and small; compiling it can take seconds
/// where running it takes milliseconds: 6.5 s against 0.1 s for two correlated scalar
/// subqueries over 60 rows), then restores them — what a function's
/// SET clause does, without an SQL round trip. On error the (sub)transaction's abort restores
/// them too.
pub(crate) fn with_search_path<R>(
    path: &str,
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    let path = CString::new(path)
        .map_err(|_| PgTrickleError::Internal("search_path contains a NUL byte".into()))?;
    with_settings(
        &[
            (c"search_path", path.as_c_str()),
            (c"plan_cache_mode", c"force_generic_plan"),
            (c"standard_conforming_strings", c"on"),
            (c"jit", c"off"),
        ],
        f,
    )
}

/// Runs `f` with `standard_conforming_strings = on`: every literal pg_trickle writes into SQL
/// is quoted for it (`quote_literal` doubles quotes, not backslashes), whatever the caller's
/// session says. Every SQL entry point runs inside it.
pub(crate) fn with_standard_strings<R>(
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    with_settings(&[(c"standard_conforming_strings", c"on")], f)
}

/// Runs `f` with the given settings, restored afterwards (by the (sub)transaction's abort if
/// `f` raises an error).
pub(crate) fn with_settings<R>(
    settings: &[(&CStr, &CStr)],
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    // SAFETY: opens a GUC nest level, as fmgr does before applying a function's SET clause.
    let level = unsafe { pg_sys::NewGUCNestLevel() };
    for (name, value) in settings {
        // SAFETY: valid NUL-terminated name and value; GUC_ACTION_SAVE records the old value
        // in the nest level opened above; a bad value raises an ERROR (elevel), which aborts.
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                PgLogLevel::ERROR as i32,
                false,
            );
        }
    }
    let result = f();
    // SAFETY: pops exactly the nest level opened above, restoring the saved values.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    result
}
