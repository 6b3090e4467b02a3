//! `SemiJoin`: keeps left rows (with their weights) by the total weight of the right rows
//! their condition matches (TRUE only; NULL keys never match): `Positive` (Σ > 0: EXISTS,
//! IN), `NonPositive` (Σ ≤ 0: NOT EXISTS, anti join; NOT IN is an anti join on
//! `(x = y) IS NOT FALSE`), `Any` (some matching row present, whatever its weight).
//! Weighted right inputs make `Positive`/`NonPositive` test existence in `B_after − ΔB`, the
//! pre-change state, without materialising it.
//! Delta rule (linear in A for a fixed B; B's effect recomputed for affected left rows):
//! Δ(A ⋉ B) = (A|K ⋉ B) − (A|K ⋉ B_before) + (ΔA ⋉ B_before), where A|K = A ⋉_Any ΔB are
//! the post-change left rows matching a changed right row, and B_before = B ⊎ −ΔB.
//! Cost: O(|ΔA| + |rows of A matching ΔB|) existence probes, each an index lookup in B plus
//! a scan of ΔB.

use super::{bx, narrow, EvalContext, Negate, Operator, UnionAll};
use crate::error::EngineError;
use crate::expr::eval::{eval, is_true, EvalError};
use crate::expr::Expr;
use crate::render::{col_ref, expr::render_expr, quote_ident, weight_ref, Fragment, SqlWriter};
use crate::zset::ZSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemiMode {
    Positive,
    NonPositive,
    Any,
}

/// `left ⋉ right ON on`; `on` sees the left columns then the right columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemiJoin {
    pub left: Box<Operator>,
    pub right: Box<Operator>,
    pub on: Expr,
    pub mode: SemiMode,
}

impl SemiJoin {
    fn with(&self, left: Operator, right: Operator, mode: SemiMode) -> Operator {
        Operator::SemiJoin(SemiJoin {
            left: bx(left),
            right: bx(right),
            on: self.on.clone(),
            mode,
        })
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let (left, right) = (self.left.eval(ctx)?, self.right.eval(ctx)?);
        let mut out = ZSet::new();
        for (l, wl) in left.iter() {
            let mut total: i64 = 0;
            let mut any = false;
            for (r, wr) in right.iter() {
                let row: Vec<_> = l.iter().chain(r.iter()).cloned().collect();
                if is_true(&eval(&self.on, &row)?) {
                    any = true;
                    total = total.checked_add(wr).ok_or(EvalError::Overflow)?;
                }
            }
            let keep = match self.mode {
                SemiMode::Positive => total > 0,
                SemiMode::NonPositive => total <= 0,
                SemiMode::Any => any,
            };
            if keep {
                out.add(l.clone(), wl);
            }
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        if self.mode == SemiMode::Any {
            return Err(EngineError::internal(
                "SemiJoin Any appears only in delta plans",
            ));
        }
        let (a, b) = ((*self.left).clone(), (*self.right).clone());
        let (da, db) = (a.delta()?, b.delta()?);
        let b_before = Operator::UnionAll(UnionAll {
            inputs: vec![
                b.clone(),
                Operator::Negate(Negate {
                    input: bx(db.clone()),
                }),
            ],
        });
        let affected = self.with(a, db, SemiMode::Any);
        // Against B itself (unweighted: an EXISTS, which PostgreSQL turns into a join), an
        // aggregate in B is computed for the probing rows' keys only (`narrow`). Against
        // B − ΔB (weighted: a correlated sum per probing row) PostgreSQL already pushes the
        // correlation into the aggregate's group key, and a narrowing set would be scanned
        // once per row.
        let b_affected = narrow(b, &affected, &self.on, true);
        Ok(Operator::UnionAll(UnionAll {
            inputs: vec![
                self.with(affected.clone(), b_affected, self.mode),
                Operator::Negate(Negate {
                    input: bx(self.with(affected, b_before.clone(), self.mode)),
                }),
                self.with(da, b_before, self.mode),
            ],
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let left = w.input(&self.left)?;
        let right = w.input(&self.right)?;
        let la = self.left.arity();
        let on = render_expr(&self.on, &|i| {
            if i < la {
                col_ref("l", i)
            } else {
                col_ref("r", i - la)
            }
        });
        let (l, r) = (quote_ident("l"), quote_ident("r"));
        let exists = format!("EXISTS (SELECT 1 FROM ({}) AS {r} WHERE {on})", right.sql);
        let sum = || {
            format!(
                "(SELECT COALESCE(SUM({}), 0) FROM ({}) AS {r} WHERE {on})",
                weight_ref("r"),
                right.sql
            )
        };
        let test = match (self.mode, right.weighted) {
            (SemiMode::Any, _) | (SemiMode::Positive, false) => exists,
            (SemiMode::NonPositive, false) => format!("NOT {exists}"),
            (SemiMode::Positive, true) => format!("{} > 0", sum()),
            (SemiMode::NonPositive, true) => format!("{} <= 0", sum()),
        };
        Ok(Fragment {
            sql: format!("SELECT {l}.* FROM ({}) AS {l} WHERE {test}", left.sql),
            weighted: left.weighted,
        })
    }
}
