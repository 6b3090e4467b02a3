//! `TopK`: `ORDER BY keys LIMIT limit OFFSET offset` — the rows ranked `offset + 1` to
//! `offset + limit` when every copy of every row is ranked by the keys, ties then ordered by
//! the whole row (every input column): one of the orders the query allows, the same in every
//! evaluation and in every FULL refresh (they render the same tree), so that the two terms of
//! a delta agree on the rows that tie at the boundary. Rows of non-positive weight are not
//! ranked (the before-state term below subtracts rows that may lie outside the slice it reads).
//!
//! Delta rule (keep the boundary): with L = offset + limit and d the rows the change window
//! inserts (its positive weight),
//! Δ TopK(A) = TopK(Top_{L+d}(A)) − TopK(consolidate(Top_{L+d}(A) − ΔA)),
//! where TopK(Top_{L+d}(A)) = TopK(A) because the top L + d rows hold the top L.
//! The before state's top L is read from the after state's top L + d: a row ranked r after the
//! change was ranked at least r − d before it (at most d inserted rows were ahead of it), so
//! every row of the before state's top L that is still in A is in the after state's top L + d;
//! the rows the change deleted come back from −ΔA, the rows it inserted leave with it. Cost:
//! one top-N read of A, materialised — O(L + d) rows through an index on the keys, one sorted
//! pass without one (A itself recomputed when it is an aggregate: nothing it does not need). When nothing in the top
//! L + d changes, both terms are equal and the delta is empty.

use std::cmp::Ordering;

use super::ordering::{compare_key, tie_breakers};
use super::{before_state, bx, ColType, EvalContext, Negate, Operator, SortKey, UnionAll};
use crate::error::EngineError;
use crate::expr::eval::{eval, EvalError};
use crate::render::{
    col_name, col_ref, each_copy, expr::render_expr, quote_ident, weight_ref, Fragment, SqlWriter,
};
use crate::value::Row;
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopK {
    pub input: Box<Operator>,
    pub order_by: Vec<SortKey>,
    pub offset: i64,
    pub limit: i64,
    /// Widens the limit by the positive weight of this operator's output (the change window
    /// of the input, in the before-state term of the delta).
    pub widen_by: Option<Box<Operator>>,
}

impl TopK {
    pub fn columns(&self) -> Vec<ColType> {
        self.input.columns()
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        let mut limit = self.limit;
        if let Some(w) = &self.widen_by {
            let inserted: i64 = w.eval(ctx)?.iter().map(|(_, w)| w.max(0)).sum();
            limit = limit.checked_add(inserted).ok_or(EvalError::Overflow)?;
        }
        let mut rows: Vec<(&Row, Row, i64)> = Vec::new();
        for (row, w) in input.iter() {
            if w <= 0 {
                continue;
            }
            let keys = self
                .order_by
                .iter()
                .map(|k| eval(&k.expr, row))
                .collect::<Result<Row, _>>()?;
            rows.push((row, keys, w));
        }
        rows.sort_by(|a, b| {
            for (k, key) in self.order_by.iter().enumerate() {
                let o = compare_key(&a.1[k], &b.1[k], key);
                if o != Ordering::Equal {
                    return o;
                }
            }
            a.0.cmp(b.0)
        });
        // Ranks are counted over copies: a row of weight w takes w consecutive ranks.
        let (first, last) = (self.offset, self.offset.saturating_add(limit));
        let mut out = ZSet::new();
        let mut rank: i64 = 0;
        for (row, _, w) in rows {
            let (lo, hi) = (rank, rank + w);
            let taken = hi.min(last) - lo.max(first);
            if taken > 0 {
                out.add(row.clone(), taken);
            }
            rank = hi;
            if rank >= last {
                break;
            }
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        let input = (*self.input).clone();
        let di = input.delta()?;
        // The top L + d rows of A, read once (materialised): both terms take theirs from it.
        let slice = Operator::TopK(TopK {
            input: bx(input),
            order_by: self.order_by.clone(),
            offset: 0,
            limit: self.offset.saturating_add(self.limit),
            widen_by: Some(bx(di.clone())),
        });
        let after = Operator::TopK(TopK {
            input: bx(slice.clone()),
            ..self.clone()
        });
        let before = Operator::TopK(TopK {
            input: bx(before_state(slice, di)),
            ..self.clone()
        });
        Ok(Operator::UnionAll(UnionAll {
            inputs: vec![after, Operator::Negate(Negate { input: bx(before) })],
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let s = quote_ident("s");
        let arity = self.input.arity();
        // One row per copy; rows of non-positive weight yield none.
        let from = each_copy(w, &self.input)?;
        let mut keys: Vec<String> = self
            .order_by
            .iter()
            .map(|k| k.sql(&|e| render_expr(e, &|i| col_ref("s", i))))
            .collect();
        keys.extend(tie_breakers(&self.input.columns()));
        let mut limit = self.limit.to_string();
        if let Some(widen) = &self.widen_by {
            let d = w.input(widen)?;
            let inserted = if d.weighted {
                format!("GREATEST({}, 0)", weight_ref("d"))
            } else {
                "1".to_string()
            };
            limit = format!(
                "{limit} + (SELECT COALESCE(SUM({inserted}), 0) FROM ({}) AS {})",
                d.sql,
                quote_ident("d")
            );
        }
        let offset = if self.offset > 0 {
            format!(" OFFSET {}", self.offset)
        } else {
            String::new()
        };
        let cols: Vec<String> = (0..arity)
            .map(|i| format!("{} AS {}", col_ref("s", i), col_name(i)))
            .collect();
        Ok(Fragment {
            sql: format!(
                "SELECT {} FROM {from} AS {s} ORDER BY {} LIMIT {limit}{offset}",
                cols.join(", "),
                keys.join(", ")
            ),
            weighted: false,
        })
    }
}
