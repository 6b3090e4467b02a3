//! `Project`: computes output columns from each input row (weights carried unchanged, equal
//! output rows add up). Delta rule (linear): Δ π(A) = π(ΔA). Cost: O(|ΔA|).

use super::{bx, ColType, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::{eval, EvalError};
use crate::expr::Expr;
use crate::render::{
    col_name, col_ref, expr::render_expr, quote_ident, weight_ref, Fragment, SqlWriter, WEIGHT,
};
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub input: Box<Operator>,
    pub exprs: Vec<Expr>,
    pub types: Vec<ColType>,
}

impl Project {
    /// A projection whose types are inferred from the input (column references keep their
    /// type; other expressions must come with explicit types via the struct literal).
    pub fn columns_of(input: Operator, cols: &[usize]) -> Operator {
        let in_types = input.columns();
        let types = cols
            .iter()
            .filter_map(|&i| in_types.get(i).cloned())
            .collect();
        Operator::Project(Project {
            input: bx(input),
            exprs: cols.iter().map(|&i| Expr::Column(i)).collect(),
            types,
        })
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        let mut out = ZSet::new();
        for (row, w) in input.iter() {
            let projected = self
                .exprs
                .iter()
                .map(|e| eval(e, row))
                .collect::<Result<Vec<_>, _>>()?;
            out.add(projected, w);
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        Ok(Operator::Project(Project {
            input: bx(self.input.delta()?),
            exprs: self.exprs.clone(),
            types: self.types.clone(),
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let mut cols: Vec<String> = self
            .exprs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                format!(
                    "{} AS {}",
                    render_expr(e, &|c| col_ref("s", c)),
                    col_name(i)
                )
            })
            .collect();
        if input.weighted {
            cols.push(format!("{} AS {}", weight_ref("s"), quote_ident(WEIGHT)));
        }
        Ok(Fragment {
            sql: format!(
                "SELECT {} FROM ({}) AS {}",
                cols.join(", "),
                input.sql,
                quote_ident("s")
            ),
            weighted: input.weighted,
        })
    }
}
