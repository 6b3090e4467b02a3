//! Transactions for background workers: run a closure in its own transaction, commit when it
//! succeeds, roll back when it returns an error or PostgreSQL raises one; and subtransactions
//! for probes inside any transaction ([`attempt`]). A raised error is
//! caught with its SQLSTATE so the caller can classify it by code.

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::error::PgTrickleError;

/// A caught PostgreSQL error (or panic) as an error of ours, its SQLSTATE kept.
fn caught(e: CaughtError) -> PgTrickleError {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => PgTrickleError::Spi {
            sqlstate: crate::error::code_to_sqlstate(r.sql_error_code()),
            message: r.message().to_string(),
            detail: r.detail().map(str::to_string),
        },
        CaughtError::RustPanic { ereport, .. } => {
            PgTrickleError::Internal(ereport.message().to_string())
        }
    }
}

/// Runs `f` in a new transaction (background workers only: no transaction may be open).
pub fn in_transaction<R>(
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    // SAFETY: called from a background worker's main loop between transactions, as
    // PostgreSQL's own workers do: start a transaction and push a snapshot for SPI.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let body = AssertUnwindSafe(move || -> Result<R, PgTrickleError> {
        let value = f()?;
        // SAFETY: the snapshot pushed above is still the active one; committing inside the
        // guarded closure means an error raised by COMMIT is caught like any other.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(value)
    });
    let result = PgTryBuilder::new(body)
        .catch_others(|e| Err(caught(e)))
        .execute();
    if result.is_err() {
        // SAFETY: pgrx copied and flushed the error state when it caught the error; what is
        // left is an aborted (or failed-to-commit) transaction, which this cleans up.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    result
}

/// Runs `f` in a subtransaction of the current transaction, as PL/pgSQL runs a block with an
/// EXCEPTION clause: its effects stay when it returns, and when PostgreSQL raises an error
/// inside it the subtransaction is rolled back and the error returned (its SQLSTATE kept), the
/// surrounding transaction intact. For probes whose failure is an answer, not an error.
pub fn attempt<R>(f: impl FnOnce() -> R) -> Result<R, PgTrickleError> {
    // SAFETY: the standard PostgreSQL sequence for an internal subtransaction (pl_exec.c's
    // exec_stmt_block): remember the memory context and resource owner, begin, switch back to
    // the caller's context so results outlive the subtransaction; on success release it, on
    // error (pgrx has copied and flushed the error state when it caught it) roll it back;
    // either way restore the context and resource owner.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let body = AssertUnwindSafe(move || Ok(f()));
        let result = PgTryBuilder::new(body)
            .catch_others(|e| Err(caught(e)))
            .execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result
    }
}
