//! The engine's `Catalog` over PostgreSQL's own catalog (SPI): tables, columns, types, primary
//! keys and unique indexes, resolved with the session's search_path like PostgreSQL does.

use engine::render::quote_literal;
use engine::{AggregateKind, Catalog, ColumnInfo, FunctionKind, TableInfo};
use pgrx::prelude::*;

/// Reads `pg_catalog` through SPI. Lookups that fail are reported as "no such table": the
/// query has already been checked by PostgreSQL itself (see api.rs), so the engine only learns
/// about tables that exist.
pub struct PgCatalog;

fn rows<T>(sql: &str, f: impl Fn(&pgrx::spi::SpiHeapTupleData) -> Option<T>) -> Vec<T> {
    Spi::connect(|client| match client.select(sql, None, &[]) {
        Ok(table) => table.filter_map(|row| f(&row)).collect(),
        Err(_) => Vec::new(),
    })
}

fn text(row: &pgrx::spi::SpiHeapTupleData, i: usize) -> Option<String> {
    row.get::<String>(i).ok().flatten()
}

impl PgCatalog {
    fn table_by_oid(&self, oid: u32) -> Option<TableInfo> {
        let head = rows(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = {oid} AND c.relkind IN ('r', 'p')"
            ),
            |r| Some((text(r, 1)?, text(r, 2)?)),
        );
        let (schema, name) = head.into_iter().next()?;
        let columns = rows(
            &format!(
                "SELECT attname::text, format_type(atttypid, atttypmod), NOT attnotnull \
                 FROM pg_catalog.pg_attribute WHERE attrelid = {oid} AND attnum > 0 \
                 AND NOT attisdropped ORDER BY attnum"
            ),
            |r| {
                Some(ColumnInfo {
                    name: text(r, 1)?,
                    type_name: text(r, 2)?,
                    nullable: r.get::<bool>(3).ok().flatten()?,
                })
            },
        );
        // Plain (non-partial, non-expression) unique indexes, primary key first.
        let indexes = rows(
            &format!(
                "SELECT i.indisprimary, array_agg(a.attname::text ORDER BY k.ord) \
                 FROM pg_catalog.pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = {oid} AND i.indisunique AND i.indpred IS NULL \
                 AND i.indexprs IS NULL AND i.indisvalid \
                 GROUP BY i.indexrelid, i.indisprimary ORDER BY i.indisprimary DESC, i.indexrelid"
            ),
            |r| {
                Some((
                    r.get::<bool>(1).ok().flatten()?,
                    r.get::<Vec<String>>(2).ok().flatten()?,
                ))
            },
        );
        let primary_key = indexes
            .iter()
            .find(|(primary, _)| *primary)
            .map(|(_, cols)| cols.clone())
            .unwrap_or_default();
        let unique_indexes = indexes
            .into_iter()
            .filter(|(primary, _)| !primary)
            .map(|(_, cols)| cols)
            .collect();
        Some(TableInfo {
            id: oid,
            schema,
            name,
            columns,
            primary_key,
            unique_indexes,
        })
    }
}

/// The output columns of `query` as (name, type: `format_type` with its modifier), by
/// PostgreSQL's parse analysis (nothing is planned or executed); `None` when `query` is not
/// one SELECT.
fn result_columns(query: &str) -> Option<engine::catalog::Columns> {
    let query = crate::definition::analysed(query).ok()?;
    // SAFETY: `query` is the Query of a SELECT (`analysed`), whose target list holds
    // TargetEntry nodes whose `expr` is an expression node, which `exprType`/`exprTypmod`
    // read, and whose `resname` (set for every output column) is a NUL-terminated string;
    // `format_type_with_typemod` returns a palloc'd C string. Both are copied out at once.
    unsafe {
        let targets = pgrx::PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
        let mut out = Vec::new();
        for entry in targets.iter_ptr() {
            if entry.is_null() || (*entry).resname.is_null() {
                return None;
            }
            let expr = (*entry).expr.cast::<pg_sys::Node>();
            let name = std::ffi::CStr::from_ptr((*entry).resname)
                .to_string_lossy()
                .into_owned();
            let ty =
                pg_sys::format_type_with_typemod(pg_sys::exprType(expr), pg_sys::exprTypmod(expr));
            out.push((
                name,
                std::ffi::CStr::from_ptr(ty).to_string_lossy().into_owned(),
            ));
        }
        Some(out)
    }
}

/// The type of the single result column of `query`; `None` unless it has exactly one.
fn result_type(query: &str) -> Option<String> {
    match result_columns(query)?.as_mut_slice() {
        [(_, ty)] => Some(std::mem::take(ty)),
        _ => None,
    }
}

impl Catalog for PgCatalog {
    /// PostgreSQL's parse analysis of `SELECT * FROM sql`, in a subtransaction (a FROM item it
    /// does not accept has no columns, and the planner refuses it).
    fn relation_columns(&self, sql: &str) -> Option<Vec<(String, String)>> {
        crate::txn::attempt(|| result_columns(&format!("SELECT * FROM {sql}")))
            .ok()
            .flatten()
    }

    /// PostgreSQL's parse analysis of `SELECT sql`, in a subtransaction: an expression the
    /// engine printed in a form PostgreSQL does not accept has no type (the engine then
    /// refuses it) instead of failing the statement.
    fn expression_type(&self, sql: &str) -> Option<String> {
        crate::txn::attempt(|| result_type(&format!("SELECT {sql}")))
            .ok()
            .flatten()
    }

    /// `pg_aggregate`'s kind and `pg_proc.proretset` of the functions named `name`: in
    /// `schema`, or else those the search_path makes visible (built-in and user-defined
    /// alike), in one statement.
    fn function_kind(&self, schema: Option<&str>, name: &str) -> FunctionKind {
        let place = match schema {
            Some(s) => format!(
                "p.pronamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = {})",
                quote_literal(s)
            ),
            None => "pg_catalog.pg_function_is_visible(p.oid)".to_string(),
        };
        let found = rows(
            &format!(
                "SELECT (SELECT min(a.aggkind::text) FROM pg_catalog.pg_aggregate a \
                         WHERE a.aggfnoid = ANY (array_agg(p.oid))), \
                        coalesce(bool_or(p.proretset), false) \
                   FROM pg_catalog.pg_proc p WHERE p.proname = {} AND {place}",
                quote_literal(name)
            ),
            |r| Some((text(r, 1), r.get::<bool>(2).ok().flatten().unwrap_or(false))),
        );
        let Some((aggkind, set_returning)) = found.into_iter().next() else {
            return FunctionKind::default();
        };
        FunctionKind {
            aggregate: match aggkind.as_deref() {
                Some("n") => Some(AggregateKind::Normal),
                Some("o") => Some(AggregateKind::OrderedSet),
                Some("h") => Some(AggregateKind::Hypothetical),
                _ => None,
            },
            set_returning,
        }
    }

    fn resolve_table(&self, schema: Option<&str>, name: &str) -> Option<TableInfo> {
        // Names arrive case-folded; quote them so PostgreSQL resolves exactly that name.
        let quoted = match schema {
            Some(s) => format!(
                "{}.{}",
                engine::render::quote_ident(s),
                engine::render::quote_ident(name)
            ),
            None => engine::render::quote_ident(name),
        };
        let oid = rows(
            &format!("SELECT to_regclass({})::oid::int8", quote_literal(&quoted)),
            |r| r.get::<i64>(1).ok().flatten(),
        )
        .into_iter()
        .next()?;
        self.table_by_oid(u32::try_from(oid).ok()?)
    }

    /// PostgreSQL's own answer: the type cache's equality operator, which exists for a domain
    /// when its base type has one, for an array when its element type has one and for a
    /// composite when every field has one (as `=` on arrays and records needs). A type name
    /// that does not resolve falls back to the engine's rule by name.
    fn has_equality(&self, ty: &engine::SqlType) -> bool {
        let oid = rows(
            &format!("SELECT to_regtype({})::oid::int8", quote_literal(ty.sql())),
            |r| r.get::<i64>(1).ok().flatten(),
        )
        .into_iter()
        .next()
        .and_then(|o| u32::try_from(o).ok())
        .filter(|o| *o != 0);
        let Some(oid) = oid else {
            return ty.has_equality();
        };
        // SAFETY: `lookup_type_cache` takes any type OID (here one `to_regtype` just resolved)
        // and returns a pointer into the backend-lifetime type cache, which is only read here;
        // it raises an ERROR only for a type that does not exist.
        unsafe {
            let entry =
                pg_sys::lookup_type_cache(pg_sys::Oid::from(oid), pg_sys::TYPECACHE_EQ_OPR as i32);
            !entry.is_null() && (*entry).eq_opr != pg_sys::InvalidOid
        }
    }
}
