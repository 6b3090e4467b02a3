//! `Distinct`: one copy of every row present (SELECT DISTINCT; NULLs equal).
//! Delta rule (counting): DISTINCT is the aggregate grouping by every column with no
//! aggregate functions, so Δ Distinct(A) = Δ Aggregate(A, keys = all columns): for the rows
//! the window touches, +[m_after > 0] − [m_before > 0], with m_before computed from
//! m_after − ΔA. At the root of a stream table the engine keeps the count `__pgt_count`
//! instead (see `plan`). Cost: O(|ΔA|) lookups of the touched rows in A.

use super::{Aggregate, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::expr::Expr;
use crate::render::{col_ref, quote_ident, select_cols, weight_ref, Fragment, SqlWriter};
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distinct {
    pub input: Box<Operator>,
}

impl Distinct {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        if !input.is_positive() {
            return Err(EvalError::Unsupported(
                "DISTINCT over a non-positive Z-set".into(),
            ));
        }
        Ok(ZSet::from_rows(input.iter().map(|(r, _)| r.clone())))
    }

    /// The equivalent aggregate (group by every column, no aggregate functions).
    pub fn as_aggregate(&self) -> Aggregate {
        let n = self.input.arity();
        Aggregate {
            input: self.input.clone(),
            keys: (0..n).map(Expr::Column).collect(),
            aggs: Vec::new(),
            key_types: self.input.columns(),
        }
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        self.as_aggregate().delta()
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let n = self.input.arity();
        let s = quote_ident("s");
        let sql = if input.weighted {
            let group: Vec<String> = (0..n).map(|i| col_ref("s", i)).collect();
            format!(
                "SELECT {} FROM ({}) AS {s} GROUP BY {} HAVING SUM({}) > 0",
                select_cols("s", n, 0).join(", "),
                input.sql,
                group.join(", "),
                weight_ref("s")
            )
        } else {
            format!("SELECT DISTINCT {s}.* FROM ({}) AS {s}", input.sql)
        };
        Ok(Fragment {
            sql,
            weighted: false,
        })
    }
}
