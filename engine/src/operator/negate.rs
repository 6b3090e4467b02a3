//! `Negate`: multiplies every weight by −1 (Z-set group inverse). Delta rule (linear):
//! Δ(−A) = −ΔA. Cost: O(|ΔA|).

use super::{bx, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::render::{quote_ident, select_cols, weight_ref, Fragment, SqlWriter, WEIGHT};
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negate {
    pub input: Box<Operator>,
}

impl Negate {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        Ok(self.input.eval(ctx)?.negate())
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        Ok(Operator::Negate(Negate {
            input: bx(self.input.delta()?),
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let mut cols = select_cols("s", self.input.arity(), 0);
        let weight = if input.weighted {
            format!("(- {})", weight_ref("s"))
        } else {
            "CAST(-1 AS int8)".to_string()
        };
        cols.push(format!("{weight} AS {}", quote_ident(WEIGHT)));
        Ok(Fragment {
            sql: format!(
                "SELECT {} FROM ({}) AS {}",
                cols.join(", "),
                input.sql,
                quote_ident("s")
            ),
            weighted: true,
        })
    }
}
