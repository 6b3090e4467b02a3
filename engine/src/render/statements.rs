//! Rendering of whole operator trees as standalone queries. Invariant: the result is one
//! SQL query (CTEs first) whose columns are `"c0".."cN"` plus `"__pgt_weight"` when weighted.

use super::{DeltaSources, SqlWriter};
use crate::error::EngineError;
use crate::operator::Operator;

/// Renders `op` as a query; `sources` supplies change buffers for `DeltaScan`s.
/// Returns the SQL and whether it has a weight column.
pub fn operator_sql(
    op: &Operator,
    sources: Option<&DeltaSources>,
) -> Result<(String, bool), EngineError> {
    let mut w = SqlWriter::new(sources);
    let body = op.render(&mut w)?;
    Ok((w.finish(&body.sql), body.weighted))
}
