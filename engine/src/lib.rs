//! pg_trickle's differential engine: parses a defining query, builds an operator tree over
//! Z-sets, derives delta plans and renders deterministic SQL. Pure Rust: no pgrx, no I/O, no
//! clock. Invariant upheld crate-wide: for every differentiable plan, the delta plan evaluated
//! over the post-change state equals recompute-after minus recompute-before (DESIGN §3).
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
