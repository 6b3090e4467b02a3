//! A stream table's catalog record (`pgtrickle.pgt_stream_tables`) and how to find one by the
//! name a user gives (`schema.table`, or unqualified through the search_path).

use pgrx::prelude::*;

use crate::error::{required, PgTrickleError};
use crate::frontier::Frontier;
use engine::render::qualified;

/// An enum stored as text in a catalog column with a CHECK constraint: parsed once when the row
/// is loaded, a value outside the constraint being a broken invariant, not a default.
macro_rules! catalog_enum {
    ($(#[$doc:meta])* $name:ident, $column:literal { $($variant:ident = $sql:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The value as the catalog stores it.
            pub fn as_sql(self) -> &'static str {
                match self { $($name::$variant => $sql),+ }
            }

            /// Parses a catalog value (exact spelling).
            pub fn from_catalog(value: &str) -> Result<Self, PgTrickleError> {
                match value {
                    $($sql => Ok($name::$variant),)+
                    other => Err(PgTrickleError::Internal(format!(
                        "pgt_stream_tables.{} holds {other:?}, outside its CHECK constraint",
                        $column
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_sql())
            }
        }
    };
}

catalog_enum!(
    /// The refresh mode a user asked for.
    RequestedMode, "refresh_mode" {
        Auto = "AUTO", Differential = "DIFFERENTIAL", Full = "FULL", Immediate = "IMMEDIATE",
    }
);
catalog_enum!(
    /// How a stream table is maintained (what AUTO resolved to).
    Mode, "effective_mode" { Differential = "DIFFERENTIAL", Full = "FULL", Immediate = "IMMEDIATE" }
);
catalog_enum!(
    /// The storage's shape: the engine's layout (user and hidden columns; the mode can switch
    /// between FULL and DIFFERENTIAL), or the plain query result (FULL only).
    Layout, "storage_layout" { Plan = "plan", Query = "query" }
);
catalog_enum!(
    /// A stream table's status.
    Status, "status" {
        Active = "ACTIVE", Suspended = "SUSPENDED", Error = "ERROR", NeedsReinit = "NEEDS_REINIT",
    }
);

impl Mode {
    /// DIFFERENTIAL or IMMEDIATE: maintained from the change buffers.
    pub fn incremental(self) -> bool {
        matches!(self, Mode::Differential | Mode::Immediate)
    }
}

impl RequestedMode {
    /// A user's spelling of a mode (any case, surrounding blanks ignored); 22023 otherwise.
    pub fn parse(mode: &str) -> Result<Self, PgTrickleError> {
        Self::from_catalog(mode.trim().to_ascii_uppercase().as_str()).map_err(|_| {
            PgTrickleError::InvalidParameter {
                param: "refresh_mode",
                value: mode.to_string(),
                hint: "Valid refresh modes are AUTO, DIFFERENTIAL, FULL and IMMEDIATE.".into(),
            }
        })
    }
}

/// The columns of `pgt_stream_tables` the refresh needs.
#[derive(Debug, Clone)]
pub struct StreamTable {
    pub id: i64,
    pub schema: String,
    pub name: String,
    pub query: String,
    pub effective_mode: Mode,
    pub storage_layout: Layout,
    pub is_populated: bool,
    pub frontier: Option<Frontier>,
    pub needs_full_reason: Option<String>,
    /// The search_path at creation; the defining query's names resolve with it.
    pub search_path: String,
    pub status: Status,
    /// The mode the user asked for.
    pub refresh_mode: RequestedMode,
    /// The analysed defining query (definition.rs), when recorded.
    pub query_tree: Option<String>,
    /// The storage table's OID.
    pub relid: pg_sys::Oid,
    pub last_error: Option<String>,
    /// The owner of the storage table when the row was loaded (refreshes read it again).
    pub owner: pg_sys::Oid,
    /// Why the query is not maintained incrementally, whatever mode was asked (None when it
    /// can be): every refresh FULL by its mode records it in the history.
    pub full_reason: Option<String>,
    /// A shadow build of a new defining query runs for this stream table (shadow.rs).
    pub in_shadow_build: bool,
    /// On a shadow's own row: the stream table it is built for.
    pub shadow_of: Option<i64>,
}

impl StreamTable {
    /// `"schema"."name"`, always quoted (also the form used in NOTICEs).
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// A user's defining query as it is spliced into a statement of ours: in parentheses, on lines
/// of its own, so that a trailing `-- comment` cannot swallow what follows and `SELECT …;
/// <another statement>` is a syntax error instead of a second statement run by the caller.
/// (create_stream_table stores the text trimmed of trailing semicolons.)
pub fn enclosed(query: &str) -> String {
    format!("(\n{query}\n)")
}

/// Splits a user-given name into (schema, relation) with PostgreSQL's rules (those of
/// `parse_ident`): quoted parts keep their case, unquoted ones fold to lower case. An
/// unqualified name gets `None` for the schema; anything else is 42602.
pub fn parse_name(name: &str) -> Result<(Option<String>, String), PgTrickleError> {
    let parts = engine::render::split_qualified_name(name)
        .ok_or_else(|| PgTrickleError::InvalidName(name.to_string()))?;
    match parts.as_slice() {
        [rel] => Ok((None, rel.clone())),
        [schema, rel] => Ok((Some(schema.clone()), rel.clone())),
        _ => Err(PgTrickleError::InvalidName(name.to_string())),
    }
}

const COLUMNS: &str = "pgt_id, pgt_schema::text, pgt_name::text, defining_query, \
    effective_mode, storage_layout, is_populated, frontier_snapshot::text, frontier_xid::text, \
    frontier_seq, needs_full_reason, search_path, status, refresh_mode, query_tree, pgt_relid, \
    last_error, (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = pgt_relid), \
    full_reason, in_shadow_build, shadow_of";

/// Finds the stream table a user named; `lock` takes its catalog row FOR UPDATE, which
/// serialises refreshes, alters and drops of one stream table. 42P01 when there is none.
/// The name is resolved as the caller, with the caller's search_path; the catalog is read as
/// the extension's owner (FOR UPDATE needs its privileges).
pub fn find(name: &str, lock: bool) -> Result<StreamTable, PgTrickleError> {
    let (schema, rel) = parse_name(name)?;
    let target = match &schema {
        Some(s) => qualified(s, &rel),
        None => engine::render::quote_ident(&rel),
    };
    let lookup = || -> Result<Option<StreamTable>, PgTrickleError> {
        match resolve(&target)? {
            Some(relid) => {
                crate::roles::as_extension(|| load("pgt_relid", i64::from(relid.to_u32()), lock))
            }
            None => Ok(None),
        }
    };
    let mut found = lookup()?;
    if found.is_none() {
        // A shadow build's swap may have given the name another table after it was resolved
        // (the row locked meanwhile then holds the new OID): once more with the catalog as
        // committed now.
        // SAFETY: processes pending invalidation messages, as any lock acquisition does.
        unsafe { pg_sys::AcceptInvalidationMessages() };
        found = lookup()?;
    }
    found.ok_or_else(|| PgTrickleError::UnknownStreamTable(name.to_string()))
}

/// The relation a qualified, quoted name resolves to with the current search_path (as
/// `to_regclass` does, without a statement), or `None`.
fn resolve(target: &str) -> Result<Option<pg_sys::Oid>, PgTrickleError> {
    let name = std::ffi::CString::new(target)
        .map_err(|_| PgTrickleError::InvalidName(target.to_string()))?;
    // SAFETY: `name` is NUL-terminated and was built from quoted identifiers (valid syntax);
    // the lookup takes no lock and, with RVR_MISSING_OK, returns InvalidOid for a missing
    // schema or relation instead of raising an error.
    let relid = unsafe {
        let names = pg_sys::stringToQualifiedNameList(name.as_ptr());
        let rv = pg_sys::makeRangeVarFromNameList(names);
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    Ok((relid != pg_sys::InvalidOid).then_some(relid))
}

/// Loads a stream table by catalog id (the scheduler's way), optionally FOR UPDATE; `None`
/// when it was dropped meanwhile.
pub fn find_by_id(id: i64, lock: bool) -> Result<Option<StreamTable>, PgTrickleError> {
    crate::roles::as_extension(|| load("pgt_id", id, lock))
}

/// The row whose `column` (`pgt_id` or `pgt_relid`) is `value`, by a statement prepared once
/// per session (IMMEDIATE maintenance loads a row per write). The NOT NULL columns must be
/// present and every enum column inside its CHECK constraint, else an error naming the broken
/// invariant (never a default).
fn load(column: &str, value: i64, lock: bool) -> Result<Option<StreamTable>, PgTrickleError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM pgtrickle.pgt_stream_tables WHERE {column} = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let stmt = crate::refresh::cache::statement(&sql, &[crate::refresh::cache::INT8])?;
    let nn = |c: &str| format!("pgt_stream_tables.{c} (where {column} = {value})");
    // A read-write statement: pgrx runs a `select` read-only while the transaction has no
    // xid yet, and SELECT … FOR UPDATE is refused read-only.
    Spi::connect_mut(|client| -> Result<Option<StreamTable>, PgTrickleError> {
        let table = client.update(&*stmt, None, &[value.into()])?;
        let Some(row) = table.into_iter().next() else {
            return Ok(None);
        };
        let frontier = match (row.get(8)?, row.get(9)?, row.get(10)?) {
            (Some(snapshot), Some(xid), Some(seq)) => Some(Frontier { snapshot, xid, seq }),
            (None, None, None) => None,
            _ => {
                return Err(PgTrickleError::Internal(format!(
                    "INV-2: the frontier of the stream table where {column} = {value} is \
                     partly NULL"
                )))
            }
        };
        let text = |i: usize, c: &str| -> Result<String, PgTrickleError> {
            required(row.get::<String>(i)?, &nn(c))
        };
        Ok(Some(StreamTable {
            id: required(row.get(1)?, &nn("pgt_id"))?,
            schema: text(2, "pgt_schema")?,
            name: text(3, "pgt_name")?,
            query: text(4, "defining_query")?,
            effective_mode: Mode::from_catalog(&text(5, "effective_mode")?)?,
            storage_layout: Layout::from_catalog(&text(6, "storage_layout")?)?,
            is_populated: required(row.get(7)?, &nn("is_populated"))?,
            frontier,
            needs_full_reason: row.get(11)?,
            search_path: text(12, "search_path")?,
            status: Status::from_catalog(&text(13, "status")?)?,
            refresh_mode: RequestedMode::from_catalog(&text(14, "refresh_mode")?)?,
            query_tree: row.get(15)?,
            relid: required(row.get(16)?, &nn("pgt_relid"))?,
            last_error: row.get(17)?,
            // INV-12: a stream table's owner is its storage table's.
            owner: row.get(18)?.ok_or_else(|| {
                PgTrickleError::Internal(format!(
                    "INV-12: the stream table where {column} = {value} has no storage table, \
                     hence no owner"
                ))
            })?,
            full_reason: row.get(19)?,
            in_shadow_build: required(row.get(20)?, &nn("in_shadow_build"))?,
            shadow_of: row.get(21)?,
        }))
    })
}

/// The source tables (OIDs) a stream table depends on, with the buffer names.
pub fn sources(id: i64) -> Result<Vec<pg_sys::Oid>, PgTrickleError> {
    let sql = format!(
        "SELECT source_relid FROM pgtrickle.pgt_dependencies WHERE pgt_id = {id} \
         ORDER BY source_relid"
    );
    Ok(Spi::connect(|client| {
        client
            .select(&sql, None, &[])?
            .filter_map(|row| row.get::<pg_sys::Oid>(1).transpose())
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?)
}
