//! Stream table storage: the table users read, created from the plan's storage columns (user
//! columns, then hidden `__pgt_` columns), and guarded so that only refreshes write it.

// `ErrorReport` is pgrx's error type at the SQL boundary (it carries the SQLSTATE); it is
// returned once per call, so its size does not matter here.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicBool, Ordering};

use engine::render::{qualified, quote_ident};
use engine::Plan;
use pgrx::heap_tuple::PgHeapTuple;
use pgrx::prelude::*;
use pgrx::WhoAllocated;

use crate::error::PgTrickleError;
use pgrx::pg_sys::panic::ErrorReport;

/// Set while this backend applies a refresh to a storage table; the guard trigger lets writes
/// through only then. A process-local flag cannot be set from SQL, unlike a GUC.
static APPLYING: AtomicBool = AtomicBool::new(false);

/// Holds the "applying" permission for as long as it lives (also while unwinding from an
/// error, so the flag never stays set).
pub struct ApplyGuard(bool);

impl ApplyGuard {
    pub fn new() -> Self {
        ApplyGuard(APPLYING.swap(true, Ordering::Relaxed))
    }
}

impl Drop for ApplyGuard {
    fn drop(&mut self) {
        APPLYING.store(self.0, Ordering::Relaxed);
    }
}

/// Statement-level BEFORE trigger on every storage table: refuses INSERT, UPDATE, DELETE and
/// TRUNCATE that do not come from a refresh (SQLSTATE 42809).
#[pg_trigger]
fn guard_storage<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, impl WhoAllocated>>, PgHeapTupleError> {
    if !APPLYING.load(Ordering::Relaxed) {
        let name = trigger.table_name().unwrap_or_default();
        // Raised here rather than returned: pgrx reports a trigger's Err as an internal error.
        ErrorReport::from(PgTrickleError::DirectWrite(name)).report(PgLogLevel::ERROR);
    }
    Ok(trigger.new())
}

/// Creates the storage table `schema.name` for a differentiable plan (its storage columns) and
/// installs the write guard. Hidden columns are named `__pgt_…`; an index on the identity keeps
/// the apply step proportional to the change.
pub fn create_for_plan(schema: &str, name: &str, plan: &Plan) -> Result<(), PgTrickleError> {
    for statement in engine::storage_ddl(plan, &engine::RelName::new(schema, name)) {
        Spi::run(&statement)?;
    }
    install_guard(&qualified(schema, name))
}

/// Creates the storage table for a query maintained only by FULL refresh: exactly the query's
/// columns (PostgreSQL derives names and types).
pub fn create_for_query(schema: &str, name: &str, query: &str) -> Result<(), PgTrickleError> {
    let table = qualified(schema, name);
    Spi::run(&format!(
        "CREATE TABLE {table} AS {} WITH NO DATA",
        crate::stream_table::enclosed(query)
    ))?;
    install_guard(&table)
}

fn install_guard(table: &str) -> Result<(), PgTrickleError> {
    Spi::run(&format!(
        "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} \
         FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.guard_storage()",
        engine::names::GUARD_TRIGGER
    ))?;
    Ok(())
}

/// 42P07 when the qualified, quoted name `table` is taken by any relation (the storage of a
/// new stream table or shadow goes there).
pub fn ensure_free(table: &str) -> Result<(), PgTrickleError> {
    let taken = Spi::get_one::<bool>(&format!(
        "SELECT pg_catalog.to_regclass({}) IS NOT NULL",
        engine::render::quote_literal(table)
    ))?
    .unwrap_or(false);
    if taken {
        return Err(PgTrickleError::AlreadyExists(table.to_string()));
    }
    Ok(())
}

/// Drops the session's temporary relation `name` (a TABLE or VIEW) if it exists, checked first
/// so that no NOTICE reaches the client.
pub fn drop_temp(name: &str, kind: &str) -> Result<(), PgTrickleError> {
    let rel = format!("pg_temp.{}", quote_ident(name));
    let exists = Spi::get_one::<bool>(&format!(
        "SELECT to_regclass({}) IS NOT NULL",
        engine::render::quote_literal(&rel)
    ))?
    .unwrap_or(false);
    if exists {
        Spi::run(&format!("DROP {kind} {rel}"))?;
    }
    Ok(())
}
