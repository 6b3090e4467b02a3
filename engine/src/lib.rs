//! pg_trickle's differential engine: parses a defining query, builds an operator tree over
//! Z-sets, derives delta plans and renders deterministic SQL. Pure Rust: no pgrx, no I/O, no
//! clock. Invariant upheld crate-wide: for every differentiable plan, the delta plan evaluated
//! over the post-change state equals recompute-after minus recompute-before (docs/CORRECTNESS.md §2).
//!
//! How the extension uses it:
//! 1. `plan(query, &catalog)` → `Plan` (or an `EngineError` with `sqlstate()`); check
//!    `plan.differentiability`; create the storage table from `plan.storage_columns()` (or
//!    with `CREATE TABLE … AS full_query_sql(&plan) WITH NO DATA` for exact type modifiers);
//!    capture `plan.sources[i].columns` of every source in its change buffer.
//! 2. Initial load / FULL refresh: `INSERT INTO storage full_query_sql(&plan)`.
//! 3. DIFFERENTIAL refresh: materialise `delta_query_sql(&plan, &sources)` once (a temp
//!    table), then run `apply_sql(&plan, &storage, &delta)` in order.
//! 4. `explain(&plan, format)` for `explain_stream_table`.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod error;
pub mod explain;
pub mod expr;
pub mod maintain;
pub mod operator;
pub mod plan;
pub mod planner;
pub mod render;
pub mod types;
pub mod value;
pub mod zset;

pub use catalog::{Catalog, ColumnInfo, FunctionInfo, MemoryCatalog, TableInfo, Volatility};
pub use error::{EngineError, Reason};
pub use explain::{explain, ExplainFormat};
pub use operator::{ColType, EvalContext, Operator, Tables};
pub use plan::{plan, Differentiability, Identity, OutputColumn, Plan, SourceTable};
pub use render::apply::{apply_sql, delta_query_sql, full_query_sql, RelName};
pub use render::{ChangeBuffer, DeltaSources};
pub use types::SqlType;
pub use value::{Row, Value};
pub use zset::{consolidate, Weight, ZSet};

/// The engine's version, which the extension reports alongside its own.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
