//! `UnionAll`: the Z-set sum of its inputs (bag union; UNION ALL). Delta rule (linear):
//! Δ(A ⊎ B) = ΔA ⊎ ΔB. Cost: O(Σ|Δinput|).

use super::{ColType, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::render::{quote_ident, Fragment, SqlWriter, WEIGHT};
use crate::types::common_type;
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnionAll {
    pub inputs: Vec<Operator>,
}

impl UnionAll {
    pub fn columns(&self) -> Vec<ColType> {
        let per_input: Vec<Vec<ColType>> = self.inputs.iter().map(|i| i.columns()).collect();
        let arity = per_input.first().map_or(0, |c| c.len());
        (0..arity)
            .map(|c| {
                let types: Vec<_> = per_input.iter().filter_map(|cols| cols.get(c)).collect();
                ColType::new(
                    common_type(&types.iter().map(|t| t.ty.clone()).collect::<Vec<_>>()),
                    types.iter().any(|t| t.nullable),
                )
            })
            .collect()
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let mut out = ZSet::new();
        for input in &self.inputs {
            out = out.plus(&input.eval(ctx)?);
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        Ok(Operator::UnionAll(UnionAll {
            inputs: self
                .inputs
                .iter()
                .map(|i| i.delta())
                .collect::<Result<_, _>>()?,
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let fragments = self
            .inputs
            .iter()
            .map(|i| w.input(i))
            .collect::<Result<Vec<_>, _>>()?;
        let weighted = fragments.iter().any(|f| f.weighted);
        let s = quote_ident("s");
        let branches: Vec<String> = fragments
            .iter()
            .map(|f| {
                if weighted && !f.weighted {
                    format!(
                        "(SELECT {s}.*, CAST(1 AS int8) AS {} FROM ({}) AS {s})",
                        quote_ident(WEIGHT),
                        f.sql
                    )
                } else {
                    format!("({})", f.sql)
                }
            })
            .collect();
        Ok(Fragment {
            sql: format!(
                "SELECT {s}.* FROM ({}) AS {s}",
                branches.join(" UNION ALL ")
            ),
            weighted,
        })
    }
}
