//! `Support`: the set of rows present in a Z-set, each with weight 1 — used for the keys a
//! change window touches. In SQL it is `SELECT DISTINCT` over the (unconsolidated) delta, a
//! superset of the rows with non-zero net weight; every use tolerates a superset because
//! untouched keys contribute `new − old = 0`. Appears only in delta plans. Cost: O(|Δ|).

use super::{EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::render::{quote_ident, select_cols, Fragment, SqlWriter};
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    pub input: Box<Operator>,
}

impl Support {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        Ok(ZSet::from_rows(input.iter().map(|(r, _)| r.clone())))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let n = self.input.arity();
        let s = quote_ident("s");
        let sql = if n == 0 {
            format!("SELECT FROM ({}) AS {s} LIMIT 1", input.sql)
        } else {
            format!(
                "SELECT DISTINCT {} FROM ({}) AS {s}",
                select_cols("s", n, 0).join(", "),
                input.sql
            )
        };
        Ok(Fragment {
            sql,
            weighted: false,
        })
    }
}
