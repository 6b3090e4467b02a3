//! `Repeat`: multiplies each row's weight by a non-negative count computed from the row
//! (rows whose count is NULL or ≤ 0 vanish) — how INTERSECT ALL / EXCEPT ALL emit
//! `min(m, n)` / `m − n` copies. Linear because the count depends only on the row:
//! Δ Repeat(A) = Repeat(ΔA). Cost: O(|ΔA|).

use super::{bx, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::{eval, EvalError};
use crate::expr::Expr;
use crate::render::{
    col_ref, expr::render_expr, quote_ident, select_cols, weight_ref, Fragment, SqlWriter, WEIGHT,
};
use crate::value::Value;
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    pub input: Box<Operator>,
    /// An integer expression over the input row.
    pub count: Expr,
}

impl Repeat {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        let mut out = ZSet::new();
        for (row, w) in input.iter() {
            if let Value::Int(n) = eval(&self.count, row)? {
                if n > 0 {
                    out.add(row.clone(), w.checked_mul(n).ok_or(EvalError::Overflow)?);
                }
            }
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        Ok(Operator::Repeat(Repeat {
            input: bx(self.input.delta()?),
            count: self.count.clone(),
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let count = render_expr(&self.count, &|i| col_ref("s", i));
        let mut cols = select_cols("s", self.input.arity(), 0);
        let weight = if input.weighted {
            format!("({} * CAST({count} AS int8))", weight_ref("s"))
        } else {
            format!("CAST({count} AS int8)")
        };
        cols.push(format!("{weight} AS {}", quote_ident(WEIGHT)));
        Ok(Fragment {
            sql: format!(
                "SELECT {} FROM ({}) AS {} WHERE {count} > 0",
                cols.join(", "),
                input.sql,
                quote_ident("s")
            ),
            weighted: true,
        })
    }
}
