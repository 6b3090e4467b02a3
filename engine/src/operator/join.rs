//! `Join`: inner and outer joins on a three-valued condition (NULL keys never match).
//! Delta rules, with A, B the post-change states (INV-4; docs/CORRECTNESS.md §2):
//! - inner (bilinear): Δ(A ⋈ B) = ΔA ⋈ B + A ⋈ ΔB − ΔA ⋈ ΔB; weights multiply, n-way joins
//!   apply the rule recursively. Cost: O(|ΔA|·fan-out into B + |ΔB|·fan-out into A),
//!   with index lookups on the join keys.
//! - outer: A ⟕ B = (A ⋈ B) ⊎ pad(A ▷ B), where ▷ is the anti join (`SemiJoin` with
//!   `NonPositive`); the delta is the sum of the inner-join delta and the anti-join delta
//!   (see `semi_join`). RIGHT is the mirror, FULL adds both padded anti joins. Cost: the
//!   inner cost plus O(rows of A matching ΔB + |ΔA|) existence lookups.

use super::{
    bx, narrow, ColType, EvalContext, Negate, Operator, Project, SemiJoin, SemiMode, UnionAll,
};
use crate::error::EngineError;
use crate::expr::eval::{eval, is_true, EvalError};
use crate::expr::Expr;
use crate::render::{
    col_name, col_ref, expr::render_expr, quote_ident, weight_ref, Fragment, SqlWriter, WEIGHT,
};
use crate::value::{Row, Value};
use crate::zset::ZSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    pub fn sql(self) -> &'static str {
        match self {
            JoinKind::Inner => "INNER JOIN",
            JoinKind::Left => "LEFT JOIN",
            JoinKind::Right => "RIGHT JOIN",
            JoinKind::Full => "FULL JOIN",
        }
    }
}

/// `left <kind> JOIN right ON on`; `on` sees the left columns then the right columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub kind: JoinKind,
    pub left: Box<Operator>,
    pub right: Box<Operator>,
    pub on: Expr,
}

fn concat(l: &Row, r: &Row) -> Row {
    l.iter().chain(r.iter()).cloned().collect()
}

impl Join {
    pub fn inner(left: Operator, right: Operator, on: Expr) -> Operator {
        Operator::Join(Join {
            kind: JoinKind::Inner,
            left: bx(left),
            right: bx(right),
            on,
        })
    }

    pub fn columns(&self) -> Vec<ColType> {
        let nullable_left = matches!(self.kind, JoinKind::Right | JoinKind::Full);
        let nullable_right = matches!(self.kind, JoinKind::Left | JoinKind::Full);
        let pad = |cols: Vec<ColType>, pad: bool| {
            cols.into_iter()
                .map(move |c| ColType::new(c.ty, c.nullable || pad))
        };
        pad(self.left.columns(), nullable_left)
            .chain(pad(self.right.columns(), nullable_right))
            .collect()
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let (left, right) = (self.left.eval(ctx)?, self.right.eval(ctx)?);
        let outer = self.kind != JoinKind::Inner;
        if outer && !(left.is_positive() && right.is_positive()) {
            return Err(EvalError::Unsupported(
                "outer join over a non-positive Z-set".into(),
            ));
        }
        let mut out = ZSet::new();
        let mut right_matched = vec![false; right.len()];
        let left_nulls: Row = vec![Value::Null; self.left.arity()];
        let right_nulls: Row = vec![Value::Null; self.right.arity()];
        for (l, wl) in left.iter() {
            let mut matched = false;
            for (j, (r, wr)) in right.iter().enumerate() {
                let row = concat(l, r);
                if is_true(&eval(&self.on, &row)?) {
                    matched = true;
                    right_matched[j] = true;
                    out.add(row, wl.checked_mul(wr).ok_or(EvalError::Overflow)?);
                }
            }
            if !matched && matches!(self.kind, JoinKind::Left | JoinKind::Full) {
                out.add(concat(l, &right_nulls), wl);
            }
        }
        if matches!(self.kind, JoinKind::Right | JoinKind::Full) {
            for (j, (r, wr)) in right.iter().enumerate() {
                if !right_matched[j] {
                    out.add(concat(&left_nulls, r), wr);
                }
            }
        }
        Ok(out)
    }

    /// The outer join written as inner join plus padded anti joins.
    pub fn lower_outer(&self) -> Operator {
        let (la, ra) = (self.left.arity(), self.right.arity());
        let (lcols, rcols) = (self.left.columns(), self.right.columns());
        let mut parts = vec![Join::inner(
            (*self.left).clone(),
            (*self.right).clone(),
            self.on.clone(),
        )];
        let nullable = |c: &ColType| ColType::new(c.ty.clone(), true);
        if matches!(self.kind, JoinKind::Left | JoinKind::Full) {
            let anti = Operator::SemiJoin(SemiJoin {
                left: self.left.clone(),
                right: self.right.clone(),
                on: self.on.clone(),
                mode: SemiMode::NonPositive,
            });
            let mut exprs: Vec<Expr> = (0..la).map(Expr::Column).collect();
            exprs.extend(rcols.iter().map(|c| Expr::null_of(&c.ty)));
            let mut types = lcols.clone();
            types.extend(rcols.iter().map(nullable));
            parts.push(Operator::Project(Project {
                input: bx(anti),
                exprs,
                types,
            }));
        }
        if matches!(self.kind, JoinKind::Right | JoinKind::Full) {
            // The condition with the right input first: left column i → ra + i, right j → j.
            let flipped = self
                .on
                .map_columns(&|i| if i < la { ra + i } else { i - la });
            let anti = Operator::SemiJoin(SemiJoin {
                left: self.right.clone(),
                right: self.left.clone(),
                on: flipped,
                mode: SemiMode::NonPositive,
            });
            let mut exprs: Vec<Expr> = lcols.iter().map(|c| Expr::null_of(&c.ty)).collect();
            exprs.extend((0..ra).map(Expr::Column));
            let mut types: Vec<ColType> = lcols.iter().map(nullable).collect();
            types.extend(rcols.iter().cloned());
            parts.push(Operator::Project(Project {
                input: bx(anti),
                exprs,
                types,
            }));
        }
        Operator::UnionAll(UnionAll { inputs: parts })
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        if self.kind != JoinKind::Inner {
            return self.lower_outer().delta();
        }
        let (da, db) = (self.left.delta()?, self.right.delta()?);
        let (a, b) = ((*self.left).clone(), (*self.right).clone());
        // An aggregate on the full side is computed for the delta's join keys only.
        let b = narrow(b, &da, &self.on, true);
        let a = narrow(a, &db, &self.on, false);
        Ok(Operator::UnionAll(UnionAll {
            inputs: vec![
                Join::inner(da.clone(), b, self.on.clone()),
                Join::inner(a, db.clone(), self.on.clone()),
                Operator::Negate(Negate {
                    input: bx(Join::inner(da, db, self.on.clone())),
                }),
            ],
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let left = w.input(&self.left)?;
        let right = w.input(&self.right)?;
        if self.kind != JoinKind::Inner && (left.weighted || right.weighted) {
            return Err(EngineError::internal("outer join over weighted inputs"));
        }
        let la = self.left.arity();
        let mut cols: Vec<String> = (0..la)
            .map(|i| format!("{} AS {}", col_ref("l", i), col_name(i)))
            .collect();
        cols.extend(
            (0..self.right.arity()).map(|i| format!("{} AS {}", col_ref("r", i), col_name(la + i))),
        );
        let weight = match (left.weighted, right.weighted) {
            (true, true) => Some(format!("({} * {})", weight_ref("l"), weight_ref("r"))),
            (true, false) => Some(weight_ref("l")),
            (false, true) => Some(weight_ref("r")),
            (false, false) => None,
        };
        if let Some(wt) = &weight {
            cols.push(format!("{wt} AS {}", quote_ident(WEIGHT)));
        }
        let on = render_expr(&self.on, &|i| {
            if i < la {
                col_ref("l", i)
            } else {
                col_ref("r", i - la)
            }
        });
        Ok(Fragment {
            sql: format!(
                "SELECT {} FROM ({}) AS {} {} ({}) AS {} ON {on}",
                cols.join(", "),
                left.sql,
                quote_ident("l"),
                self.kind.sql(),
                right.sql,
                quote_ident("r")
            ),
            weighted: weight.is_some(),
        })
    }
}
