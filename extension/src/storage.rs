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

/// Set while this backend alters a storage itself — a shadow build's swap (shadow.rs) or a
/// change of hidden columns ([`align_hidden`]): the DDL event triggers leave that DDL to the
/// code doing it (a rename of a source would otherwise be followed into the defining queries
/// of the stream tables reading it). Process-local, so no SQL can set it.
static OWN_DDL: AtomicBool = AtomicBool::new(false);

/// Holds the "own DDL" flag for as long as it lives (also while unwinding).
pub(crate) struct OwnDdl(bool);

impl OwnDdl {
    pub(crate) fn new() -> Self {
        OwnDdl(OWN_DDL.swap(true, Ordering::Relaxed))
    }
}

impl Drop for OwnDdl {
    fn drop(&mut self) {
        OWN_DDL.store(self.0, Ordering::Relaxed);
    }
}

/// Whether this backend is altering a storage itself ([`OwnDdl`]).
pub(crate) fn own_ddl_in_progress() -> bool {
    OWN_DDL.load(Ordering::Relaxed)
}

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

/// How a storage's hidden columns differ from those `plan` maintains: a build of pg_trickle
/// that keeps a query with other hidden columns (MIN/MAX kept in place since 0.35.0, where
/// they recomputed their groups before) finds storages created by an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenDifference {
    /// Hidden columns of the storage the plan does not have.
    pub drop: Vec<String>,
    /// Hidden columns of the plan the storage does not have.
    pub add: Vec<engine::OutputColumn>,
}

impl HiddenDifference {
    /// `this build of pg_trickle maintains its query with other hidden columns (adds […],
    /// drops […])`.
    pub fn what(&self) -> String {
        let add: Vec<&str> = self.add.iter().map(|c| c.name.as_str()).collect();
        format!(
            "this build of pg_trickle maintains its query with other hidden columns (adds [{}], \
             drops [{}])",
            add.join(", "),
            self.drop.join(", ")
        )
    }
}

/// The reason a refresh that brings the storage in line records.
impl std::fmt::Display for HiddenDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the storage was changed and refreshed in full",
            self.what()
        )
    }
}

/// How the hidden (`__pgt_`) columns of a storage stand against those a plan maintains.
pub enum HiddenLayout {
    /// The same names.
    Same,
    /// Others, which [`align_hidden`] can bring in line: the storage's unique indexes that
    /// stay are on exactly the plan's row identity.
    Alignable(HiddenDifference),
    /// Others, and a unique index that would stay is on other columns than the plan's row
    /// identity (the storage needs to be created again).
    Conflicting(HiddenDifference),
}

/// How the hidden columns of storage `relid` stand against `plan`'s, by name.
pub fn hidden_layout(relid: pg_sys::Oid, plan: &Plan) -> Result<HiddenLayout, PgTrickleError> {
    let have: Vec<String> = hidden_columns(relid)?.into_iter().map(|(n, _)| n).collect();
    let drop: Vec<String> = have
        .iter()
        .filter(|h| !plan.hidden.iter().any(|c| c.name == **h))
        .cloned()
        .collect();
    let add: Vec<engine::OutputColumn> = plan
        .hidden
        .iter()
        .filter(|c| !have.contains(&c.name))
        .cloned()
        .collect();
    if drop.is_empty() && add.is_empty() {
        return Ok(HiddenLayout::Same);
    }
    let fit = unique_indexes_fit(relid, plan, &drop)?;
    let diff = HiddenDifference { drop, add };
    Ok(if fit {
        HiddenLayout::Alignable(diff)
    } else {
        HiddenLayout::Conflicting(diff)
    })
}

/// `plan`'s user columns followed by the hidden columns storage `relid` has now, as
/// `(name, type)`: what its storage must look like before [`align_hidden`].
pub fn user_columns_with_hidden_in_place(
    relid: pg_sys::Oid,
    plan: &Plan,
) -> Result<Vec<(String, String)>, PgTrickleError> {
    Ok(plan
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.type_name.clone()))
        .chain(hidden_columns(relid)?)
        .collect())
}

/// Brings the hidden columns of the emptied storage `relid` (named `storage`) in line with
/// `plan`: drops those it no longer maintains (with the indexes on them; 2BP01 when other
/// objects depend on them), adds the new ones after the others, and creates the plan's
/// identity index unless one of exactly its columns exists. The caller refreshes it in full
/// at once. The DDL event triggers leave this DDL alone.
pub fn align_hidden(
    relid: pg_sys::Oid,
    storage: &engine::RelName,
    plan: &Plan,
    diff: &HiddenDifference,
) -> Result<(), PgTrickleError> {
    // Objects that depend on a column to drop (views over `SELECT *` of the stream table):
    // PostgreSQL would refuse the drop; say why and what to do instead.
    if !diff.drop.is_empty() {
        let dependents = Spi::get_one_with_args::<String>(
            "SELECT string_agg(DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, 0), ', ') \
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a \
                 ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
              WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                AND d.refobjid = $1 AND a.attname = ANY ($2::text[]) AND d.deptype = 'n'",
            &[relid.into(), diff.drop.clone().into()],
        )?;
        if let Some(dependents) = dependents {
            return Err(PgTrickleError::HiddenColumnsInUse {
                name: storage.sql(),
                columns: diff.drop.join(", "),
                dependents,
            });
        }
    }
    let _own = OwnDdl::new();
    let strict = engine::program::unique_storage(plan);
    let identity = engine::program::identity_columns(plan);
    let mut clauses: Vec<String> = diff
        .drop
        .iter()
        .map(|c| format!("DROP COLUMN {}", quote_ident(c)))
        .collect();
    clauses.extend(diff.add.iter().map(|c| {
        format!(
            "ADD COLUMN {} {}{}",
            quote_ident(&c.name),
            c.type_name,
            if strict && identity.contains(&c.name.as_str()) {
                " NOT NULL"
            } else {
                ""
            }
        )
    }));
    Spi::run(&format!(
        "ALTER TABLE {} {}",
        storage.sql(),
        clauses.join(", ")
    ))?;
    if identity.is_empty() {
        return Ok(());
    }
    // An index of the identity's columns exactly, unique as the plan's would be, over plain
    // columns and the whole table.
    let indexed = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = $1 \
           AND i.indisunique = $3 AND i.indpred IS NULL AND i.indexprs IS NULL \
           AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) \
             = (SELECT array_agg(x ORDER BY x) FROM unnest($2::text[]) x))",
        &[relid.into(), identity.into(), strict.into()],
    )?
    .unwrap_or(false);
    if !indexed {
        // The identity index: storage_ddl's statement after the CREATE TABLE.
        if let Some(statement) = engine::program::storage_ddl(plan, storage).get(1) {
            Spi::run(statement)?;
        }
    }
    Ok(())
}

/// The hidden (`__pgt_`) columns of storage `relid` as `(name, type)`, in column order.
fn hidden_columns(relid: pg_sys::Oid) -> Result<Vec<(String, String)>, PgTrickleError> {
    Ok(Spi::connect(|client| {
        client
            .select(
                "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod) \
                   FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 \
                    AND NOT attisdropped AND starts_with(attname::text, $2) ORDER BY attnum",
                None,
                &[relid.into(), engine::names::HIDDEN_PREFIX.into()],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?)
}

/// Whether the unique indexes of storage `relid` that survive dropping the hidden columns
/// `drop` are all on exactly `plan`'s identity columns, when its storage is unique on them
/// (none may survive otherwise).
fn unique_indexes_fit(
    relid: pg_sys::Oid,
    plan: &Plan,
    drop: &[String],
) -> Result<bool, PgTrickleError> {
    let identity: Vec<&str> = if engine::program::unique_storage(plan) {
        engine::program::identity_columns(plan)
    } else {
        Vec::new()
    };
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT coalesce(bool_and(x.cols = (SELECT coalesce(array_agg(c ORDER BY c), '{}') \
                                            FROM unnest($2::text[]) c)), true) \
           FROM (SELECT array_agg(a.attname::text ORDER BY a.attname) AS cols \
                   FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a \
                     ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                  WHERE i.indrelid = $1 AND i.indisunique GROUP BY i.indexrelid) x \
          WHERE NOT (x.cols && $3::text[])",
        &[relid.into(), identity.into(), drop.to_vec().into()],
    )?
    .unwrap_or(false))
}
