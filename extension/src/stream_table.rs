//! A stream table's catalog record (`pgtrickle.pgt_stream_tables`) and how to find one by the
//! name a user gives (`schema.table`, or unqualified through the search_path).

use engine::render::quote_literal;
use pgrx::prelude::*;

use crate::error::PgTrickleError;
use crate::frontier::Frontier;
use engine::render::qualified;

/// The columns of `pgt_stream_tables` the refresh needs.
#[derive(Debug, Clone)]
pub struct StreamTable {
    pub id: i64,
    pub schema: String,
    pub name: String,
    pub query: String,
    pub effective_mode: String,
    pub storage_layout: String,
    pub is_populated: bool,
    pub frontier: Option<Frontier>,
    pub needs_full_reason: Option<String>,
    /// The search_path at creation; the defining query's names resolve with it.
    pub search_path: String,
    /// ACTIVE, SUSPENDED, ERROR or NEEDS_REINIT.
    pub status: String,
    /// The mode the user asked for (AUTO, DIFFERENTIAL, FULL, IMMEDIATE).
    pub refresh_mode: String,
    /// The analysed defining query (definition.rs), when recorded.
    pub query_tree: Option<String>,
    /// The storage table's OID.
    pub relid: pg_sys::Oid,
    pub last_error: Option<String>,
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
    last_error";

/// Finds the stream table a user named; `lock` takes its catalog row FOR UPDATE, which
/// serialises refreshes, alters and drops of one stream table. 42P01 when there is none.
pub fn find(name: &str, lock: bool) -> Result<StreamTable, PgTrickleError> {
    let (schema, rel) = parse_name(name)?;
    let target = match &schema {
        Some(s) => qualified(s, &rel),
        None => engine::render::quote_ident(&rel),
    };
    let filter = format!("pgt_relid = to_regclass({})", quote_literal(&target));
    load(&filter, lock)?.ok_or_else(|| PgTrickleError::UnknownStreamTable(name.to_string()))
}

/// Loads a stream table by catalog id (the scheduler's way), optionally FOR UPDATE; `None`
/// when it was dropped meanwhile.
pub fn find_by_id(id: i64, lock: bool) -> Result<Option<StreamTable>, PgTrickleError> {
    load(&format!("pgt_id = {id}"), lock)
}

fn load(filter: &str, lock: bool) -> Result<Option<StreamTable>, PgTrickleError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM pgtrickle.pgt_stream_tables WHERE {filter}{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    // A read-write statement: pgrx runs a `select` read-only while the transaction has no
    // xid yet, and SELECT … FOR UPDATE is refused read-only.
    Ok(Spi::connect_mut(
        |client| -> Result<Option<StreamTable>, pgrx::spi::Error> {
            let table = client.update(&sql, None, &[])?;
            let Some(row) = table.into_iter().next() else {
                return Ok(None);
            };
            let snapshot: Option<String> = row.get(8)?;
            let xid: Option<String> = row.get(9)?;
            let seq: Option<i64> = row.get(10)?;
            let frontier = match (snapshot, xid, seq) {
                (Some(snapshot), Some(xid), Some(seq)) => Some(Frontier { snapshot, xid, seq }),
                _ => None,
            };
            Ok(Some(StreamTable {
                id: row.get(1)?.unwrap_or_default(),
                schema: row.get(2)?.unwrap_or_default(),
                name: row.get(3)?.unwrap_or_default(),
                query: row.get(4)?.unwrap_or_default(),
                effective_mode: row.get(5)?.unwrap_or_default(),
                storage_layout: row.get(6)?.unwrap_or_default(),
                is_populated: row.get(7)?.unwrap_or_default(),
                frontier,
                needs_full_reason: row.get(11)?,
                search_path: row.get(12)?.unwrap_or_default(),
                status: row.get(13)?.unwrap_or_default(),
                refresh_mode: row.get(14)?.unwrap_or_default(),
                query_tree: row.get(15)?,
                relid: row.get(16)?.unwrap_or(pg_sys::InvalidOid),
                last_error: row.get(17)?,
            }))
        },
    )?)
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
