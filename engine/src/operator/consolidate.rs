//! `Consolidate`: sums the weights of equal rows and drops zero-weight rows. Semantically the
//! identity on Z-sets (the evaluator's Z-sets are always consolidated); in SQL it is the
//! GROUP BY that turns `after − Δ` into a proper pre-change bag before non-linear operators
//! read it. Delta rule: Δ Consolidate(A) = ΔA. Cost: O(|A|) hash aggregation.

use super::{bx, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::render::{
    col_ref, consolidated_select, quote_ident, select_cols, weight_ref, Fragment, SqlWriter,
};
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consolidate {
    pub input: Box<Operator>,
}

impl Consolidate {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        self.input.eval(ctx)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        Ok(Operator::Consolidate(Consolidate {
            input: bx(self.input.delta()?),
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        if !input.weighted {
            return Ok(input);
        }
        let n = self.input.arity();
        let group: Vec<String> = (0..n).map(|i| col_ref("s", i)).collect();
        Ok(Fragment {
            sql: consolidated_select(
                &select_cols("s", n, 0),
                &group,
                &format!("SUM({})", weight_ref("s")),
                &format!("({}) AS {}", input.sql, quote_ident("s")),
            ),
            weighted: true,
        })
    }
}
