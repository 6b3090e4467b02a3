//! `SetOp`: INTERSECT [ALL] and EXCEPT [ALL] with bag semantics (rows compared with NULLs
//! equal): multiplicities min(m, n), [m > 0 ∧ n > 0], max(m − n, 0), [m > 0 ∧ n = 0].
//! (UNION is DISTINCT over UNION ALL.)
//! Delta rule (counting): the set operation is a function of the per-row counts
//! (m, n) = Aggregate(tag(A) ⊎ tag(B)) grouped by the full row, followed by a Filter or a
//! Repeat; its delta is the aggregate's delta (recompute the touched rows' counts) pushed
//! through the linear Filter/Repeat. Cost: O(|ΔA| + |ΔB|) lookups of touched rows in A and B.

use super::{
    bx, AggCall, AggFunc, Aggregate, ColType, EvalContext, Filter, Operator, Project, Repeat,
    UnionAll,
};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::expr::{BinOp, Expr};
use crate::render::{quote_ident, Fragment, SqlWriter};
use crate::types::SqlType;
use crate::zset::ZSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOpKind {
    Intersect,
    Except,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOp {
    pub kind: SetOpKind,
    pub all: bool,
    pub left: Box<Operator>,
    pub right: Box<Operator>,
}

impl SetOp {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let (left, right) = (self.left.eval(ctx)?, self.right.eval(ctx)?);
        if !left.is_positive() || !right.is_positive() {
            return Err(EvalError::Unsupported(
                "set operation over a non-positive Z-set".into(),
            ));
        }
        let mut out = ZSet::new();
        for (row, m) in left.iter() {
            let n = right.weight(row);
            let k = match (self.kind, self.all) {
                (SetOpKind::Intersect, true) => m.min(n),
                (SetOpKind::Intersect, false) => i64::from(n > 0),
                (SetOpKind::Except, true) => (m - n).max(0),
                (SetOpKind::Except, false) => i64::from(n == 0),
            };
            out.add(row.clone(), k);
        }
        Ok(out)
    }

    /// The set operation as counts per row followed by a linear operator.
    pub fn lower(&self) -> Operator {
        let n = self.left.arity();
        let cols = UnionAll {
            inputs: vec![(*self.left).clone(), (*self.right).clone()],
        }
        .columns();
        let count_ty = ColType::new(SqlType::int8(), false);
        let tagged = |input: &Operator, tag: i64| {
            let mut exprs: Vec<Expr> = (0..n).map(Expr::Column).collect();
            exprs.push(Expr::int(tag));
            let mut types = cols.clone();
            types.push(ColType::new(SqlType::int4(), false));
            Operator::Project(Project {
                input: bx(input.clone()),
                exprs,
                types,
            })
        };
        let count_of = |tag: i64| AggCall {
            func: AggFunc::CountStar,
            args: vec![],
            distinct: false,
            filter: Some(Expr::binary(BinOp::Eq, Expr::Column(n), Expr::int(tag))),
            order_by: vec![],
            within_group: false,
            arg_type: None,
            ty: count_ty.clone(),
        };
        let counts = Operator::Aggregate(Aggregate {
            input: bx(Operator::UnionAll(UnionAll {
                inputs: vec![tagged(&self.left, 1), tagged(&self.right, 2)],
            })),
            keys: (0..n).map(Expr::Column).collect(),
            aggs: vec![count_of(1), count_of(2)],
            key_types: cols.clone(),
        });
        let (m, k) = (Expr::Column(n), Expr::Column(n + 1));
        let positive = |e: Expr| Expr::binary(BinOp::Gt, e, Expr::int(0));
        let body = match (self.kind, self.all) {
            (SetOpKind::Intersect, true) => Operator::Repeat(Repeat {
                input: bx(counts),
                count: Expr::Extremum {
                    greatest: false,
                    args: vec![m, k],
                },
            }),
            (SetOpKind::Except, true) => Operator::Repeat(Repeat {
                input: bx(counts),
                count: Expr::binary(BinOp::Minus, m, k),
            }),
            (SetOpKind::Intersect, false) => Operator::Filter(Filter {
                input: bx(counts),
                predicate: Expr::binary(BinOp::And, positive(m), positive(k)),
            }),
            (SetOpKind::Except, false) => Operator::Filter(Filter {
                input: bx(counts),
                predicate: Expr::binary(
                    BinOp::And,
                    positive(m),
                    Expr::binary(BinOp::Eq, k, Expr::int(0)),
                ),
            }),
        };
        Project::columns_of(body, &(0..n).collect::<Vec<_>>())
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        self.lower().delta()
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let left = w.input(&self.left)?;
        let right = w.input(&self.right)?;
        if left.weighted || right.weighted {
            return Err(EngineError::internal("set operation over weighted inputs"));
        }
        let op = match self.kind {
            SetOpKind::Intersect => "INTERSECT",
            SetOpKind::Except => "EXCEPT",
        };
        let s = quote_ident("s");
        Ok(Fragment {
            sql: format!(
                "SELECT {s}.* FROM (({}) {op}{} ({})) AS {s}",
                left.sql,
                if self.all { " ALL" } else { "" },
                right.sql
            ),
            weighted: false,
        })
    }
}
