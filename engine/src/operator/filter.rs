//! `Filter`: keeps rows whose predicate is TRUE (NULL and FALSE reject: three-valued logic).
//! Delta rule (linear): Δ σ_p(A) = σ_p(ΔA). Cost: O(|ΔA|).

use super::{bx, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::{eval, is_true, EvalError};
use crate::expr::Expr;
use crate::render::{col_ref, expr::render_expr, quote_ident, Fragment, SqlWriter};
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub input: Box<Operator>,
    pub predicate: Expr,
}

impl Filter {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        let mut out = ZSet::new();
        for (row, w) in input.iter() {
            if is_true(&eval(&self.predicate, row)?) {
                out.add(row.clone(), w);
            }
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        Ok(Operator::Filter(Filter {
            input: bx(self.input.delta()?),
            predicate: self.predicate.clone(),
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let pred = render_expr(&self.predicate, &|i| col_ref("s", i));
        Ok(Fragment {
            sql: format!(
                "SELECT {s}.* FROM ({}) AS {s} WHERE {pred}",
                input.sql,
                s = quote_ident("s")
            ),
            weighted: input.weighted,
        })
    }
}
