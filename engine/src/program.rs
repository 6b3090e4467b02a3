//! The maintenance program of a plan: every statement the extension runs to create and maintain
//! a stream table with the engine's storage layout, as one typed value. The extension executes
//! and records; it builds no maintenance SQL of its own (golden tests: `tests/program.rs`).
//!
//! Row contracts the extension relies on (checked in debug builds where it runs them):
//! - [`Program::full`] ([`full_statement`]) returns one row: the number of rows inserted, then
//!   the caller's extra columns ([`ProgramInput::full_extra`]).
//! - [`DeltaProgram::fill`] returns one row: delta rows, rows inserted and rows deleted (NULL
//!   for grouped plans, whose delta rows are group changes), then the caller's extra columns.
//! - [`DeltaProgram::apply`] run in order after `fill`, then [`DeltaProgram::clear`].

use crate::error::EngineError;
use crate::names;
use crate::plan::{Identity, Maintenance, Plan};
use crate::render::apply::{
    apply_sql, delta_query_sql, full_query_sql, grouped_counts_sql, RelName,
};
use crate::render::{quote_ident, ChangeBuffer, DeltaSources};

/// What the program is rendered for.
#[derive(Debug, Clone)]
pub struct ProgramInput {
    /// The storage table.
    pub storage: RelName,
    /// The temporary table the delta is materialised in.
    pub delta_table: RelName,
    /// Per source table (by id), the predicate selecting a refresh's change window in its
    /// buffer (over the buffer's columns and the statement's parameters).
    pub window: Vec<(u32, String)>,
    /// SQL select-list items appended to the FULL statement's row (the frontier).
    pub full_extra: String,
    /// SQL select-list items appended to the delta statement's row (frontier, markers).
    pub delta_extra: String,
}

/// The columns of one source's change buffer a plan's delta reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub source: u32,
    pub columns: Vec<String>,
}

/// Every statement of a stream table with the engine's storage layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Creates the storage table and its identity index (the extension adds its write guard).
    pub storage_ddl: Vec<String>,
    /// Fills the (emptied) storage from the defining query.
    pub full: String,
    /// The differential part; `None` when the plan is maintained by FULL refresh only.
    pub differential: Option<DeltaProgram>,
    /// What each source's change buffer must capture for the delta (none without one).
    pub capture: Vec<Capture>,
}

/// The statements of a differential refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaProgram {
    /// Creates the (empty) delta table with the delta's columns and types:
    /// `CREATE TEMP TABLE … AS … WITH NO DATA`, which PostgreSQL analyses without planning or
    /// running the query.
    pub table_ddl: String,
    /// Materialises the consolidated delta of the change window in the delta table.
    pub fill: String,
    /// Whether delta rows carry a weight ([`names::WEIGHT`]: keyed plans) rather than
    /// group changes.
    pub weighted: bool,
    /// Apply the delta table to the storage, in order.
    pub apply: Vec<String>,
    /// Grouped plans: counts the storage rows `apply` is about to insert and delete, as
    /// `(inserted, deleted)`, run before it (weighted deltas count theirs in `fill`).
    pub counts: Option<String>,
    /// Empties the delta table.
    pub clear: String,
}

fn buffers(input: &ProgramInput, predicate: Option<&str>) -> DeltaSources {
    input
        .window
        .iter()
        .fold(DeltaSources::new(), |acc, (id, window)| {
            acc.with(
                *id,
                ChangeBuffer {
                    schema: names::BUFFER_SCHEMA.into(),
                    name: names::buffer_table(*id),
                    predicate: predicate.unwrap_or(window).to_string(),
                },
            )
        })
}

/// The storage columns that identify a row of `plan` (indexed), empty when none do.
pub fn identity_columns(plan: &Plan) -> Vec<&str> {
    match &plan.identity {
        Identity::Key { columns } => columns.iter().map(String::as_str).collect(),
        Identity::Multiplicity { .. } | Identity::Bag => {
            plan.columns.iter().map(|c| c.name.as_str()).collect()
        }
        Identity::Single | Identity::None => Vec::new(),
    }
}

/// Whether `plan`'s storage has a unique index: a key of NOT NULL columns. A bag, a DISTINCT
/// result and a key with a nullable column have a plain index (or none).
pub fn unique_storage(plan: &Plan) -> bool {
    let all = plan.storage_columns();
    let key = identity_columns(plan);
    matches!(plan.identity, Identity::Key { .. })
        && !key.is_empty()
        && key
            .iter()
            .all(|k| all.iter().any(|c| c.name == *k && !c.nullable))
}

/// The storage table of `plan` named `storage`: its columns (user then hidden), and an index on
/// the identity so that applying a delta is proportional to it. A key of NOT NULL columns is
/// NOT NULL + UNIQUE, so that stream tables reading this one find an exact row identity in
/// the catalog (and MERGE finds rows by index).
pub fn storage_ddl(plan: &Plan, storage: &RelName) -> Vec<String> {
    let all = plan.storage_columns();
    let key = identity_columns(plan);
    let strict_key = unique_storage(plan);
    let cols: Vec<String> = all
        .iter()
        .map(|c| {
            let not_null = strict_key && key.contains(&c.name.as_str());
            format!(
                "{} {}{}",
                quote_ident(&c.name),
                c.type_name,
                if not_null { " NOT NULL" } else { "" }
            )
        })
        .collect();
    let table = storage.sql();
    let mut ddl = vec![format!("CREATE TABLE {table} ({})", cols.join(", "))];
    let quoted: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    // PostgreSQL indexes at most 32 columns.
    if !quoted.is_empty() && quoted.len() <= 32 {
        ddl.push(format!(
            "CREATE {}INDEX ON {table} ({})",
            if strict_key { "UNIQUE " } else { "" },
            quoted.join(", ")
        ));
    }
    // A recursion's refresh reads its stored result by the columns its recursive term joins
    // on (the identity index, on every column in order, serves the first one).
    if let crate::plan::Maintenance::Keyed {
        root: crate::operator::Operator::Recursive(r),
        ..
    }
    | crate::plan::Maintenance::Bag {
        root: crate::operator::Operator::Recursive(r),
    } = &plan.maintenance
    {
        for c in r.probed_columns() {
            if c > 0 {
                ddl.push(format!(
                    "CREATE INDEX ON {table} ({})",
                    quote_ident(&plan.columns[c].name)
                ));
            }
        }
    }
    ddl
}

/// The FULL statement of [`Program::full`] alone (a FULL refresh needs nothing else): fills
/// the emptied `storage` from the defining query and returns the row count, then `extra`.
pub fn full_statement(
    plan: &Plan,
    storage: &RelName,
    extra_items: &str,
) -> Result<String, EngineError> {
    let columns: Vec<String> = plan
        .storage_columns()
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let inserted = quote_ident(names::INSERTED);
    Ok(format!(
        "WITH {inserted} AS (INSERT INTO {} ({}) {} RETURNING 1) \
         SELECT (SELECT count(*) FROM {inserted}){}",
        storage.sql(),
        columns.join(", "),
        full_query_sql(plan)?,
        extra(extra_items)
    ))
}

/// Renders the program of `plan` (see the module comment).
pub fn program(plan: &Plan, input: &ProgramInput) -> Result<Program, EngineError> {
    let full = full_statement(plan, &input.storage, &input.full_extra)?;
    let differential = if matches!(plan.maintenance, Maintenance::Opaque) {
        None
    } else {
        Some(delta_program(plan, input)?)
    };
    let capture = if differential.is_some() {
        capture(plan)
    } else {
        Vec::new()
    };
    Ok(Program {
        storage_ddl: storage_ddl(plan, &input.storage),
        full,
        differential,
        capture,
    })
}

/// What each source's change buffer must capture for `plan`'s delta: the columns of the
/// source its delta plan reads.
pub fn capture(plan: &Plan) -> Vec<Capture> {
    plan.sources
        .iter()
        .map(|s| Capture {
            source: s.id,
            columns: s.columns.clone(),
        })
        .collect()
}

fn extra(items: &str) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(", {items}")
    }
}

fn delta_program(plan: &Plan, input: &ProgramInput) -> Result<DeltaProgram, EngineError> {
    let delta = input.delta_table.sql();
    let weighted = matches!(
        plan.maintenance,
        Maintenance::Keyed { .. } | Maintenance::Bag { .. }
    );
    // The same query over no buffer rows gives the delta table its columns and types.
    let shape = delta_query_sql(plan, &buffers(input, Some("false")), &input.storage)?;
    let fill_sql = delta_query_sql(plan, &buffers(input, None), &input.storage)?;
    let inserted = quote_ident(names::INSERTED);
    let w = quote_ident(names::WEIGHT);
    let (returning, counts) = if weighted {
        (
            w.clone(),
            format!(
                "(SELECT coalesce(sum({w}) FILTER (WHERE {w} > 0), 0)::int8 FROM {inserted}), \
                 (SELECT coalesce(-sum({w}) FILTER (WHERE {w} < 0), 0)::int8 FROM {inserted})"
            ),
        )
    } else {
        ("1".to_string(), "NULL::int8, NULL::int8".to_string())
    };
    Ok(DeltaProgram {
        table_ddl: format!("CREATE TEMP TABLE {delta} AS {shape} WITH NO DATA"),
        fill: format!(
            "WITH {inserted} AS (INSERT INTO {delta} {fill_sql} RETURNING {returning}) \
             SELECT (SELECT count(*) FROM {inserted}), {counts}{}",
            extra(&input.delta_extra)
        ),
        weighted,
        apply: apply_sql(plan, &input.storage, &input.delta_table)?,
        counts: grouped_counts_sql(plan, &input.storage, &input.delta_table),
        clear: format!("DELETE FROM {delta}"),
    })
}
