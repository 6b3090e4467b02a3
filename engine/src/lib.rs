//! pg_trickle's differential engine: parses a defining query, builds an operator tree over
//! Z-sets, derives delta plans and renders deterministic SQL. Pure Rust: no pgrx, no I/O, no
//! clock. Invariant upheld crate-wide: for every differentiable plan, the delta plan evaluated
//! over the post-change state equals recompute-after minus recompute-before (docs/CORRECTNESS.md §2).
//!
//! How the extension uses it:
//! 1. `plan(query, &catalog)` → `Plan` (or an `EngineError` with `sqlstate()`); check
//!    `plan.differentiability`.
//! 2. `program(&plan, &input)` → [`Program`]: every statement it runs for the stream table —
//!    the storage DDL, the FULL statement, the differential statements (delta table, fill,
//!    apply, clear) and what each source's buffer must capture. The extension executes them
//!    and records the outcome; [`names`] holds every name pg_trickle gives its own objects.
//! 3. `explain(&plan, format)` for `explain_stream_table`.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod cost;
pub mod error;
pub mod explain;
pub mod expr;
mod keys;
pub mod maintain;
pub mod names;
pub mod operator;
pub mod plan;
pub mod planner;
pub mod program;
pub mod render;
pub mod types;
pub mod value;
pub mod zset;

pub use catalog::{
    AggregateKind, Catalog, ColumnInfo, FunctionInfo, FunctionKind, MemoryCatalog, TableInfo,
    Volatility,
};
pub use error::{EngineError, Reason};
pub use explain::{explain, explain_stream_table, Annotations, ExplainFormat};
pub use operator::{ColType, EvalContext, Operator, Tables};
pub use plan::{plan, Differentiability, Identity, OutputColumn, Plan, SourceTable};
pub use program::{
    capture, full_statement, program, storage_ddl, Capture, DeltaProgram, Program, ProgramInput,
};
pub use render::apply::{apply_sql, delta_query_sql, full_query_sql, RelName};
pub use render::{ChangeBuffer, DeltaSources};
pub use types::SqlType;
pub use value::{Row, Value};
pub use zset::{consolidate, Weight, ZSet};

/// The engine's version, which the extension reports alongside its own.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
