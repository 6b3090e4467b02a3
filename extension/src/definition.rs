//! A defining query as PostgreSQL understands it: checked by PostgreSQL itself (a throwaway
//! temp view), with the tables it reads, the columns of those it depends on, its result
//! columns and its analysed form (`nodeToString` of PostgreSQL's parse analysis), which names
//! relations by OID and columns by number and so survives renames: [`deparse`] renders it
//! with today's names. Also the per-source dependency records and the storage-shape check
//! that DDL following (source_ddl.rs) and reinitialisation rely on.

use std::ffi::{CStr, CString};

use engine::render::{quote_ident, quote_literal};
use pgrx::prelude::*;

use crate::error::{required, PgTrickleError};

/// What PostgreSQL made of a defining query.
#[derive(Debug, Clone)]
pub struct Definition {
    /// Tables (and partitioned tables) it reads, directly or through views, ascending OID.
    pub sources: Vec<pg_sys::Oid>,
    /// Per source (same order), the column numbers PostgreSQL records the query depends on.
    pub read: Vec<Vec<i16>>,
    /// Result columns: name and type (`format_type` with the typmod), in order.
    pub columns: Vec<(String, String)>,
    /// The analysed query (`nodeToString` of PostgreSQL's parse analysis, before rewriting).
    pub tree: String,
}

/// Checks `query` with PostgreSQL (so a bad query fails with PostgreSQL's own error and
/// SQLSTATE) and describes it. Names resolve with the current search_path.
pub fn probe(query: &str) -> Result<Definition, PgTrickleError> {
    let tree = analyse(query)?;
    let view = engine::names::PROBE_VIEW;
    crate::storage::drop_temp(view, "VIEW")?;
    Spi::run(&format!(
        "CREATE TEMP VIEW {view} AS {}",
        crate::stream_table::enclosed(query)
    ))?;
    let view_oid = crate::refresh::cache::temp_relid(view).ok_or_else(|| {
        PgTrickleError::Internal(format!("temp view {view} vanished after creation"))
    })?;
    let deps: Vec<(pg_sys::Oid, Vec<i16>)> = Spi::connect(|client| {
        client
            .select(
                // Through views to their tables, recursively: a view's rule depends on what
                // the view reads (writes reach the stream table through those tables).
                "WITH RECURSIVE dep(relid, attnum) AS ( \
                   SELECT d.refobjid, d.refobjsubid FROM pg_catalog.pg_depend d \
                   JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
                   WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass \
                   AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                   AND r.ev_class = $1::pg_catalog.oid AND d.refobjid <> r.ev_class \
                 UNION \
                   SELECT d.refobjid, d.refobjsubid FROM dep \
                   JOIN pg_catalog.pg_class v ON v.oid = dep.relid AND v.relkind = 'v' \
                   JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid \
                   JOIN pg_catalog.pg_depend d ON d.objid = r.oid \
                   AND d.classid = 'pg_catalog.pg_rewrite'::regclass \
                   AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> v.oid) \
                 SELECT dep.relid, coalesce(array_agg(DISTINCT dep.attnum::int2) \
                   FILTER (WHERE dep.attnum > 0), '{}') \
                 FROM dep JOIN pg_catalog.pg_class c ON c.oid = dep.relid \
                 WHERE c.relkind IN ('r', 'p') GROUP BY dep.relid ORDER BY dep.relid",
                None,
                &[view_oid.into()],
            )?
            .map(|row| {
                let oid = row
                    .get::<pg_sys::Oid>(1)?
                    .ok_or(pgrx::spi::Error::NoTupleTable)?;
                Ok((oid, row.get::<Vec<i16>>(2)?.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    let columns: Vec<(String, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT attname::text, format_type(atttypid, atttypmod) \
                 FROM pg_catalog.pg_attribute \
                 WHERE attrelid = $1::pg_catalog.oid AND attnum > 0 \
                 ORDER BY attnum",
                None,
                &[view_oid.into()],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    Spi::run(&format!("DROP VIEW pg_temp.{view}"))?;
    let (sources, read) = deps.into_iter().unzip();
    Ok(Definition {
        sources,
        read,
        columns,
        tree,
    })
}

/// PostgreSQL's parse analysis of `query` in its text form (relations by OID, columns by
/// number, `*` expanded), from one parse of the text. A text that is not exactly one SELECT
/// statement (VALUES and WITH … SELECT included) is refused (42601) here, before it is
/// spliced into any statement: a text with balanced parentheses could otherwise carry a
/// second statement into the wrapper (`SELECT id FROM q); CREATE TABLE pwned AS (SELECT 1`).
/// Syntax and analysis errors are PostgreSQL's own, with their positions in the user's text.
/// (Not a view's rule: in PostgreSQL 15 that also names the view itself, which is gone once
/// the probe is dropped.)
fn analyse(query: &str) -> Result<String, PgTrickleError> {
    let query = analysed(query)?;
    // SAFETY: `query` is a Query node from `analysed`, in the current memory context;
    // `nodeToString` returns a palloc'd C string, copied out at once.
    unsafe {
        let out = pg_sys::nodeToString(query.cast::<std::ffi::c_void>().cast_const());
        Ok(CStr::from_ptr(out).to_string_lossy().into_owned())
    }
}

/// PostgreSQL's parse analysis of `text`, which must be exactly one SELECT statement
/// (42601 otherwise, see [`analyse`]); the Query is allocated in the current memory context.
/// Errors of the query itself are PostgreSQL's own ERRORs.
pub fn analysed(text: &str) -> Result<*mut pg_sys::Query, PgTrickleError> {
    let text = CString::new(text)
        .map_err(|_| PgTrickleError::Internal("a defining query contains a NUL byte".into()))?;
    // SAFETY: `pg_parse_query` and `parse_analyze_fixedparams` read the NUL-terminated text,
    // which outlives both calls, and allocate their results in the current memory context
    // (errors are raised as ERRORs); the statement is used only once the list is known to hold
    // exactly one non-null RawStmt whose `stmt` is a SelectStmt.
    unsafe {
        let raw = pgrx::PgList::<pg_sys::RawStmt>::from_pg(pg_sys::pg_parse_query(text.as_ptr()));
        let stmt = match (raw.len(), raw.head()) {
            (1, Some(stmt))
                if !stmt.is_null()
                    && !(*stmt).stmt.is_null()
                    && (*(*stmt).stmt).type_ == pg_sys::NodeTag::T_SelectStmt =>
            {
                stmt
            }
            (1, _) => {
                return Err(PgTrickleError::NotOneSelect {
                    found: "a statement of another kind".into(),
                })
            }
            (n, _) => {
                return Err(PgTrickleError::NotOneSelect {
                    found: format!("{n} statements"),
                })
            }
        };
        Ok(pg_sys::parse_analyze_fixedparams(
            stmt,
            text.as_ptr(),
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        ))
    }
}

/// The Query of a stored analysed query (the text form written by [`analyse`]), in the
/// current memory context.
fn stored_query(tree: &str) -> Result<*mut pg_sys::Query, PgTrickleError> {
    let text = CString::new(tree)
        .map_err(|_| PgTrickleError::Internal("a query tree contains a NUL byte".into()))?;
    // SAFETY: `stringToNode` parses the text form written by `nodeToString` into nodes
    // allocated in the current memory context, raising an ERROR on malformed input; the
    // result is checked to be a Query before it is returned as one.
    unsafe {
        let node = pg_sys::stringToNode(text.as_ptr()).cast::<pg_sys::Node>();
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_Query {
            return Err(PgTrickleError::Internal(
                "a stored query tree does not hold a query".into(),
            ));
        }
        Ok(node.cast::<pg_sys::Query>())
    }
}

/// Every relation OID an analysed query names (`:relid N` of its range table entries, in
/// `nodeToString`'s stable text form), including those PostgreSQL records no dependency on.
pub fn relation_oids(tree: &str) -> Vec<u32> {
    let mut out: Vec<u32> = tree
        .split(":relid ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        })
        .filter(|o| *o != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// What in an analysed query (from [`probe`]) PostgreSQL does not consider IMMUTABLE — a
/// STABLE or VOLATILE function or operator, an SQL value function (`CURRENT_DATE`,
/// `CURRENT_USER`), a cast through a type's text form that depends on settings — named for
/// the user; `None` when everything in it is IMMUTABLE. PostgreSQL's own rule
/// (`contain_mutable_functions`, as for index expressions) over the whole query, subqueries
/// included: such a query may give another result at the next refresh for the same rows, so
/// it cannot be maintained from its changes.
pub fn not_immutable(tree: &str) -> Result<Option<String>, PgTrickleError> {
    let query = stored_query(tree)?;
    // SAFETY: `query` is a Query node from `stored_query`; `contain_mutable_functions` only
    // reads the tree (a Query is walked with `query_tree_walker`).
    let mutable = unsafe { pg_sys::contain_mutable_functions(query.cast::<pg_sys::Node>()) };
    if !mutable {
        return Ok(None);
    }
    // Name the culprit: the functions of FuncExpr (`:funcid`), operators (`:opfuncid`),
    // aggregates and window functions, in the order they appear.
    for key in [":funcid ", ":opfuncid ", ":aggfnoid ", ":winfnoid "] {
        for rest in tree.split(key).skip(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let Some(oid) = digits.parse::<u32>().ok().filter(|o| *o != 0) else {
                continue;
            };
            let oid = pg_sys::Oid::from(oid);
            // SAFETY: `func_volatile` and `get_func_name` look the OID up in the syscache
            // (the analysed query names existing functions); `get_func_name` returns NULL or
            // a palloc'd C string, copied out at once.
            let (volatility, name) = unsafe {
                let v = pg_sys::func_volatile(oid) as u8;
                let n = pg_sys::get_func_name(oid);
                let n = (!n.is_null()).then(|| CStr::from_ptr(n).to_string_lossy().into_owned());
                (v, n)
            };
            let kind = match volatility {
                b's' => "STABLE",
                b'v' => "VOLATILE",
                _ => continue,
            };
            // SAFETY: as above, a syscache lookup of an existing function.
            let what = match unsafe { pg_sys::get_func_prokind(oid) } as u8 {
                b'a' => "aggregate",
                b'w' => "window function",
                _ if key == ":opfuncid " => "operator function",
                _ => "function",
            };
            let name = name.unwrap_or_else(|| oid.to_u32().to_string());
            return Ok(Some(format!("{what} {name}() is {kind}")));
        }
    }
    Ok(Some(if tree.contains("{SQLVALUEFUNCTION") {
        "CURRENT_DATE, CURRENT_USER or another SQL value function is not IMMUTABLE".to_string()
    } else if tree.contains("{NEXTVALUEEXPR") {
        "a sequence's next value is VOLATILE".to_string()
    } else if tree.contains("{COERCEVIAIO") {
        "a cast through the text form of a type is not IMMUTABLE (it depends on settings)"
            .to_string()
    } else {
        "an expression PostgreSQL does not consider IMMUTABLE".to_string()
    }))
}

/// Renders an analysed query (from [`probe`]) as SQL with the names its relations and
/// columns have now, as `pg_get_viewdef` does for a view: relations outside the current
/// search_path come out schema-qualified, an output column keeps its name (`s.val AS v`), and
/// `*` stays the columns it stood for when the query was analysed. Fails (with PostgreSQL's
/// error) when a relation it names no longer exists.
pub fn deparse(tree: &str) -> Result<String, PgTrickleError> {
    let query = stored_query(tree)?;
    // SAFETY: `query` is a Query node from `stored_query`, which `pg_get_querydef` reads; the
    // returned C string is palloc'd and copied out before the context can go away.
    let sql = unsafe {
        let out = pg_sys::pg_get_querydef(query, false);
        CStr::from_ptr(out).to_string_lossy().into_owned()
    };
    Ok(sql.trim().trim_end_matches(';').trim().to_string())
}

/// Records that stream table `id` reads `source`: the columns its delta captures
/// (`capture`, names) and the snapshot of every column it depends on — the `read` numbers
/// from [`probe`] plus the captured ones — with their names and types now, and the source's
/// name as the current search_path renders it.
pub fn record_dependency(
    id: i64,
    source: pg_sys::Oid,
    read: &[i16],
    capture: &[String],
) -> Result<(), PgTrickleError> {
    let oid = source.to_u32();
    let attnums: Vec<String> = read.iter().map(i16::to_string).collect();
    let columns = format!(
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = {oid} AND a.attnum > 0 \
           AND NOT a.attisdropped \
           AND (a.attnum = ANY (ARRAY[{attnums}]::int2[]) OR a.attname = ANY ({capture}))",
        capture = name_array(capture),
        attnums = attnums.join(", "),
    );
    // The source's name as the stream table's search_path renders it (the caller's).
    Spi::run(&format!(
        "INSERT INTO pgtrickle.pgt_dependencies (pgt_id, source_relid, columns_used, \
           read_attnums, read_names, source_name, source_filenode) \
         SELECT {id}, {oid}, {capture}, \
           coalesce(array_agg(a.attnum ORDER BY a.attnum), '{{}}'), \
           coalesce(array_agg(a.attname ORDER BY a.attnum), '{{}}'), \
           {oid}::regclass::text, pg_catalog.pg_relation_filenode({oid}) {columns}",
        capture = name_array(capture),
    ))?;
    canonical(|| {
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_dependencies SET read_types = (SELECT \
               coalesce(array_agg({SNAPSHOT_TYPE} ORDER BY a.attnum), '{{}}') {columns}) \
             WHERE pgt_id = {id} AND source_relid = {oid}"
        ))?;
        Ok(())
    })
}

/// SQL for the type of attribute `a` as the snapshots record it: `format_type` with the
/// typmod, and the collation when it is not the type's default (a collation change alters
/// comparisons, MIN/MAX and grouping). Evaluated under a fixed search_path (see
/// [`canonical`]) so that a type outside `pg_catalog` is always schema-qualified, whoever asks.
const SNAPSHOT_TYPE: &str = "format_type(a.atttypid, a.atttypmod) || coalesce((\
    SELECT ' COLLATE ' || quote_ident(n.nspname) || '.' || quote_ident(co.collname) \
    FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace n ON n.oid = co.collnamespace \
    JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid \
    WHERE co.oid = a.attcollation AND a.attcollation <> ty.typcollation), '')";

/// Runs `f` with `search_path = pg_catalog`, so that type names come out the same in every
/// session and in the event trigger (whose functions run with their own search_path).
fn canonical<R>(f: impl FnOnce() -> Result<R, PgTrickleError>) -> Result<R, PgTrickleError> {
    crate::settings::with_search_path("pg_catalog", f)
}

/// `ARRAY[...]::name[]` of quoted literals.
pub fn name_array(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| quote_literal(n)).collect();
    format!("ARRAY[{}]::name[]", quoted.join(", "))
}

/// A stream table's dependency on one source, as last recorded.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub source: pg_sys::Oid,
    /// The columns its delta captures (names as of the snapshot).
    pub columns_used: Vec<String>,
    /// The source's file when the snapshot was taken: a table rewrite (ALTER COLUMN … TYPE
    /// … USING, a volatile default) changes values without any trigger firing.
    pub source_filenode: Option<pg_sys::Oid>,
    pub read_attnums: Vec<i16>,
    pub read_names: Vec<String>,
    pub read_types: Vec<String>,
    pub source_name: Option<String>,
}

/// The recorded dependencies of stream table `id`, by source OID.
pub fn dependencies(id: i64) -> Result<Vec<Dependency>, PgTrickleError> {
    let sql = format!(
        "SELECT source_relid, read_attnums, read_names::text[], \
         read_types, source_name, columns_used::text[], source_filenode \
         FROM pgtrickle.pgt_dependencies WHERE pgt_id = {id} \
         ORDER BY source_relid"
    );
    let deps = Spi::connect(|client| {
        client
            .select(&sql, None, &[])?
            .map(|row| {
                let column = |c: &str| format!("pgt_dependencies.{c}");
                Ok(Dependency {
                    source: required(row.get::<pg_sys::Oid>(1)?, &column("source_relid"))?,
                    read_attnums: required(row.get::<Vec<i16>>(2)?, &column("read_attnums"))?,
                    read_names: required(row.get::<Vec<String>>(3)?, &column("read_names"))?,
                    read_types: required(row.get::<Vec<String>>(4)?, &column("read_types"))?,
                    source_name: row.get::<String>(5)?,
                    columns_used: required(row.get::<Vec<String>>(6)?, &column("columns_used"))?,
                    source_filenode: row.get::<pg_sys::Oid>(7)?,
                })
            })
            .collect::<Result<Vec<_>, PgTrickleError>>()
    })?;
    for d in &deps {
        if d.read_attnums.len() != d.read_names.len() || d.read_attnums.len() != d.read_types.len()
        {
            return Err(PgTrickleError::Internal(format!(
                "pgt_dependencies of stream table {id} on {}: read_attnums, read_names and \
                 read_types must have one entry per column",
                d.source.to_u32()
            )));
        }
    }
    Ok(deps)
}

/// A relation's live column: name and type as the snapshots record it (`SNAPSHOT_TYPE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub attnum: i16,
    pub name: String,
    pub type_sql: String,
}

/// The live (not dropped) columns of `rel`, by number.
pub fn attributes(rel: pg_sys::Oid) -> Result<Vec<Attribute>, PgTrickleError> {
    let sql = format!(
        "SELECT a.attnum, a.attname::text, {SNAPSHOT_TYPE} \
         FROM pg_catalog.pg_attribute a WHERE a.attrelid = {} AND a.attnum > 0 \
         AND NOT a.attisdropped ORDER BY a.attnum",
        rel.to_u32()
    );
    canonical(|| {
        Ok(Spi::connect(|client| {
            client
                .select(&sql, None, &[])?
                .map(|row| {
                    Ok(Attribute {
                        attnum: row.get::<i16>(1)?.unwrap_or(0),
                        name: row.get::<String>(2)?.unwrap_or_default(),
                        type_sql: row.get::<String>(3)?.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })?)
    })
}

/// `rel` as the current search_path renders it (`regclass` output), or None when it is gone.
pub fn relation_name(rel: pg_sys::Oid) -> Result<Option<String>, PgTrickleError> {
    Ok(Spi::get_one::<String>(&format!(
        "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = {}",
        rel.to_u32()
    ))?)
}

/// How a storage table's columns differ from `want` (name and type, in order), or None when
/// they are the same. Types are compared as resolved type OIDs (`want` types are SQL type
/// names, resolved with `to_regtype`); a type binary-coercible to the storage's counts as the
/// same, and with `modifiers` the type modifiers must match too.
pub fn storage_difference(
    storage: pg_sys::Oid,
    want: &[(String, String)],
    modifiers: bool,
) -> Result<Option<ShapeDifference>, PgTrickleError> {
    let have: Vec<(String, u32, String)> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT attname::text, atttypid::int8, format_type(atttypid, atttypmod) \
                     FROM pg_catalog.pg_attribute WHERE attrelid = {} AND attnum > 0 \
                     AND NOT attisdropped ORDER BY attnum",
                    storage.to_u32()
                ),
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<i64>(2)?
                        .and_then(|t| u32::try_from(t).ok())
                        .unwrap_or(0),
                    row.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    let names_have: Vec<&str> = have.iter().map(|h| h.0.as_str()).collect();
    let names_want: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
    if names_have != names_want {
        return Ok(Some(ShapeDifference::Columns {
            have: names_have.join(", "),
            want: names_want.join(", "),
        }));
    }
    let mut retyped = Vec::new();
    for ((name, have_oid, have_sql), (_, want_sql)) in have.iter().zip(want) {
        let resolved = Spi::connect(|client| {
            let t = client.select(
                &format!(
                    "SELECT t::oid::int8, format_type(t::oid, NULL) FROM to_regtype({}) AS t",
                    quote_literal(want_sql)
                ),
                None,
                &[],
            )?;
            let Some(row) = t.into_iter().next() else {
                return Ok(None);
            };
            Ok::<_, pgrx::spi::Error>(match (row.get::<i64>(1)?, row.get::<String>(2)?) {
                (Some(oid), Some(shown)) => u32::try_from(oid).ok().map(|o| (o, shown)),
                _ => None,
            })
        })?;
        let (want_oid, want_shown) = resolved.ok_or_else(|| {
            PgTrickleError::Internal(format!("type {want_sql} of column {name} does not resolve"))
        })?;
        // A binary-coercible difference (text and varchar, say) changes no value: the
        // storage still holds the result as it is.
        let coercible = want_oid == *have_oid
            || Spi::get_one::<bool>(&format!(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_cast WHERE castsource = {want_oid} \
                 AND casttarget = {have_oid} AND castmethod = 'b')"
            ))?
            .unwrap_or(false);
        // A length, precision or scale (varchar(10) → varchar(20)) is part of the type: a
        // value that fits the new one may not fit the storage's. Compared when asked (a
        // source column's type changed, a rebuild): the engine does not always carry
        // modifiers through expressions, so a rename alone must not count as a change.
        let same_modifier = !modifiers || type_modifier(want_sql) == type_modifier(have_sql);
        if !coercible || !same_modifier {
            retyped.push(Retyped {
                column: name.clone(),
                have: have_sql.clone(),
                want: if type_modifier(want_sql).is_some() {
                    want_sql.clone()
                } else {
                    want_shown
                },
            });
        }
    }
    Ok(if retyped.is_empty() {
        None
    } else {
        Some(ShapeDifference::Types(retyped))
    })
}

/// The modifier of a type's SQL (`10` of `character varying(10)`, `10,2` of `numeric(10, 2)`,
/// `3` of `timestamp(3) without time zone`), without spaces; None when it has none.
fn type_modifier(type_sql: &str) -> Option<String> {
    let open = type_sql.find('(')?;
    let close = type_sql[open..].find(')')? + open;
    Some(
        type_sql[open + 1..close]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    )
}

/// A storage column whose type differs from the one the query now produces.
#[derive(Debug, Clone)]
pub struct Retyped {
    pub column: String,
    pub have: String,
    pub want: String,
}

/// How a query's result no longer fits its storage table.
#[derive(Debug, Clone)]
pub enum ShapeDifference {
    /// Different column names or order.
    Columns { have: String, want: String },
    /// Same columns, some of another type.
    Types(Vec<Retyped>),
    /// The result's row identity no longer matches the storage's unique index: `keyed` is
    /// whether the result now has a key of NOT NULL columns (a unique index), the storage
    /// having the other.
    Identity { keyed: bool },
}

/// How the storage's identity index differs from the one `plan` lays out (a unique index on a
/// key of NOT NULL columns, or none: a bag, DISTINCT or nullable key), or None when it fits.
/// A bag stored in a table with a unique index would fail on its first duplicate.
pub fn identity_difference(
    storage: pg_sys::Oid,
    plan: &engine::Plan,
) -> Result<Option<ShapeDifference>, PgTrickleError> {
    let keyed = engine::program::unique_storage(plan);
    let unique = Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index WHERE indrelid = {} AND indisunique)",
        storage.to_u32()
    ))?
    .unwrap_or(false);
    Ok((keyed != unique).then_some(ShapeDifference::Identity { keyed }))
}

impl std::fmt::Display for ShapeDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShapeDifference::Columns { have, want } => write!(
                f,
                "its result would have the columns ({want}), its storage has ({have})"
            ),
            ShapeDifference::Identity { keyed: false } => f.write_str(
                "its result would have no key (it may repeat rows), its storage has a unique key",
            ),
            ShapeDifference::Identity { keyed: true } => {
                f.write_str("its result would have a key, its storage has no unique index for it")
            }
            ShapeDifference::Types(cols) => {
                let parts: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        format!(
                            "column {} would be {} (the storage has {})",
                            quote_ident(&c.column),
                            c.want,
                            c.have
                        )
                    })
                    .collect();
                write!(f, "{}", parts.join(", "))
            }
        }
    }
}

/// PostgreSQL's first OID for user objects: anything below is a system object.
const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// Refuses relations that cannot be sources: materialized views and foreign tables (their
/// changes fire no trigger here), temporary tables (gone with their session, and
/// invisible to the scheduler), unlogged tables (a crash empties them without any trigger
/// firing, so their stream tables would silently keep the lost rows), pg_trickle's own
/// catalog and buffers, and system catalogs (no triggers fire on their writes; PostgreSQL
/// records no dependencies on them, so they are found in the analysed query).
pub fn check_sources(def: &Definition) -> Result<(), PgTrickleError> {
    let mut relations: Vec<pg_sys::Oid> = def.sources.clone();
    relations.extend(relation_oids(&def.tree).into_iter().map(pg_sys::Oid::from));
    check_relations(&relations)
}

/// The views a query reads (by name), which the engine does not expand: a stream table
/// reading one is maintained FULL (its tables are captured, through the view).
pub fn views_read(def: &Definition) -> Result<Vec<String>, PgTrickleError> {
    let oids: Vec<String> = relation_oids(&def.tree)
        .iter()
        .map(u32::to_string)
        .collect();
    if oids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT oid::regclass::text FROM pg_catalog.pg_class \
                     WHERE oid IN ({}) AND relkind = 'v' ORDER BY 1",
                    oids.join(", ")
                ),
                None,
                &[],
            )?
            .filter_map(|row| row.get::<String>(1).transpose())
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?)
}

/// Whether `rel` is the storage of a shadow build (shadow.rs).
fn is_shadow_storage(rel: pg_sys::Oid) -> Result<bool, PgTrickleError> {
    crate::roles::as_extension(|| {
        Ok(Spi::get_one::<bool>(&format!(
            "SELECT EXISTS (SELECT FROM pgtrickle.pgt_stream_tables \
             WHERE pgt_relid = {} AND shadow_of IS NOT NULL)",
            rel.to_u32()
        ))?
        .unwrap_or(false))
    })
}

/// Why a new defining query for the stream table with storage `relid` would make stream
/// tables read each other (which scheduling and maintenance exclude): the path by which its
/// sources read `relid`, directly or through other stream tables; None when they do not.
pub fn cycle_through(
    relid: pg_sys::Oid,
    def: &Definition,
) -> Result<Option<String>, PgTrickleError> {
    let sources: Vec<String> = def.sources.iter().map(|s| s.to_u32().to_string()).collect();
    if sources.is_empty() {
        return Ok(None);
    }
    let through = crate::roles::as_extension(|| {
        Ok(Spi::get_one::<String>(&format!(
            "WITH RECURSIVE reads(relid, path) AS ( \
                 SELECT r, ARRAY[r] FROM unnest(ARRAY[{}]::oid[]) AS r \
               UNION \
                 SELECT d.source_relid, reads.path || d.source_relid \
                   FROM reads JOIN pgtrickle.pgt_stream_tables s ON s.pgt_relid = reads.relid \
                   JOIN pgtrickle.pgt_dependencies d ON d.pgt_id = s.pgt_id \
                  WHERE NOT d.source_relid = ANY (reads.path)) \
             SELECT (SELECT array_to_string(ARRAY(SELECT p::regclass::text FROM unnest(path) p), ' -> ') \
                       FROM reads WHERE relid = {} LIMIT 1)",
            sources.join(", "),
            relid.to_u32()
        ))?)
    })?;
    Ok(through.map(|path| format!("the new query would read the stream table itself ({path})")))
}

fn check_relations(sources: &[pg_sys::Oid]) -> Result<(), PgTrickleError> {
    for s in sources {
        let row = Spi::connect(|client| {
            let t = client.select(
                &format!(
                    "SELECT c.oid::regclass::text, c.relpersistence::text, n.nspname::text, \
                     c.relkind::text \
                     FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.oid = {}",
                    s.to_u32()
                ),
                None,
                &[],
            )?;
            let Some(r) = t.into_iter().next() else {
                return Ok(None);
            };
            Ok::<_, pgrx::spi::Error>(Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            )))
        })?;
        let Some((relation, persistence, schema, kind)) = row else {
            continue;
        };
        let what = if kind == "m" {
            Some(
                "a materialized view (REFRESH MATERIALIZED VIEW fires no trigger, so its \
                 changes could not be seen)",
            )
        } else if kind == "f" {
            Some("a foreign table (changes made on its server cannot be seen)")
        } else if !matches!(kind.as_str(), "r" | "p" | "v") {
            Some("neither a table nor a view")
        } else if persistence == "t" {
            Some("a temporary table")
        } else if persistence == "u" {
            Some("an unlogged table (a crash empties it without its stream tables knowing)")
        } else if schema == "pgtrickle" || schema == "pgtrickle_changes" {
            Some("part of pg_trickle's own catalog")
        } else if is_shadow_storage(*s)? {
            Some("a shadow build's table, which pg_trickle replaces or drops when the build ends")
        } else if s.to_u32() < FIRST_NORMAL_OBJECT_ID
            || schema == "pg_catalog"
            || schema == "information_schema"
        {
            Some("a system catalog")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(PgTrickleError::UnsupportedSource {
                relation,
                what: what.into(),
            });
        }
    }
    Ok(())
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[pg_test]
    fn analysed_query_is_rendered_with_todays_names() {
        Spi::run("CREATE TABLE t (id int PRIMARY KEY, v int, w text)").unwrap();
        let def = probe("SELECT v, count(*) AS n FROM t WHERE w LIKE 'a%' GROUP BY v").unwrap();
        assert_eq!(
            def.read,
            vec![vec![2, 3]],
            "the columns the query reads, by number"
        );
        Spi::run("ALTER TABLE t RENAME COLUMN v TO val").unwrap();
        Spi::run("ALTER TABLE t RENAME TO t2").unwrap();
        let sql = deparse(&def.tree).unwrap();
        let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            one_line,
            "SELECT val AS v, count(*) AS n FROM t2 WHERE (w ~~ 'a%'::text) GROUP BY val"
        );
    }

    #[pg_test]
    fn select_star_stays_the_columns_it_meant() {
        Spi::run("CREATE TABLE t (id int PRIMARY KEY, v int)").unwrap();
        let def = probe("SELECT * FROM t").unwrap();
        Spi::run("ALTER TABLE t ADD COLUMN w int").unwrap();
        let sql = deparse(&def.tree).unwrap();
        assert_eq!(
            sql.split_whitespace().collect::<Vec<_>>().join(" "),
            "SELECT id, v FROM t"
        );
    }

    #[pg_test]
    fn relation_oids_include_system_catalogs() {
        let def = probe("SELECT relname FROM pg_catalog.pg_class").unwrap();
        assert!(
            def.sources.is_empty(),
            "no pg_depend entries on pinned catalogs"
        );
        assert_eq!(
            relation_oids(&def.tree),
            vec![pg_sys::RelationRelationId.to_u32()]
        );
    }
}
