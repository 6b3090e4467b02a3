//! Row identity of an operator's output: the columns that are a key of it, derived from the
//! sources' primary keys through the operators (`unique_key`). The planner asks it (a window
//! over rows without a key refuses some forms) and so does the choice of maintenance (`plan`).

use std::collections::BTreeMap;

use crate::catalog::TableInfo;
use crate::expr::Expr;
use crate::operator::{JoinKind, Operator};

/// Exact row identity of an operator's output (positions), when one exists.
pub(crate) fn unique_key(op: &Operator, tables: &BTreeMap<u32, TableInfo>) -> Option<Vec<usize>> {
    match op {
        Operator::Scan(s) => {
            let ids = tables.get(&s.table.id)?.identity_columns()?;
            ids.iter()
                .map(|i| s.columns.iter().position(|c| c.index == *i))
                .collect()
        }
        Operator::Filter(f) => unique_key(&f.input, tables),
        Operator::Consolidate(c) => unique_key(&c.input, tables),
        Operator::Project(p) => unique_key(&p.input, tables)?
            .iter()
            .map(|k| p.exprs.iter().position(|e| *e == Expr::Column(*k)))
            .collect(),
        Operator::Join(j) => {
            let mut l = unique_key(&j.left, tables)?;
            let r = unique_key(&j.right, tables)?;
            // Where nothing matches, a FULL JOIN yields a left-padded and a right-padded row
            // (two rows from two scalar aggregates). The pair of keys tells those apart only
            // if one side's key has a column that side never leaves NULL: padded rows hold
            // NULL there. (LEFT/RIGHT pad a row only when it has no match, so the pair of keys
            // stays unique.)
            if j.kind == JoinKind::Full
                && !never_null_in(&j.left, &l)
                && !never_null_in(&j.right, &r)
            {
                return None;
            }
            let la = j.left.arity();
            l.extend(r.iter().map(|k| k + la));
            Some(l)
        }
        Operator::SemiJoin(s) => unique_key(&s.left, tables),
        // A window appends columns to every row of its input.
        Operator::Window(w) => unique_key(&w.input, tables),
        Operator::TopK(t) => unique_key(&t.input, tables),
        // WITH ORDINALITY numbers each input row's results: with the input's key, a key.
        Operator::FlatMap(f) if f.ordinality => {
            let mut key = unique_key(&f.input, tables)?;
            key.push(f.input.arity() + f.types.len() - 1);
            Some(key)
        }
        Operator::Aggregate(a) => Some((0..a.keys.len()).collect()),
        Operator::Distinct(d) => Some((0..d.input.arity()).collect()),
        Operator::SetOp(s) if !s.all => Some((0..s.left.arity()).collect()),
        _ => None,
    }
}

/// Whether one of the `key` columns of `op`'s output is never NULL.
fn never_null_in(op: &Operator, key: &[usize]) -> bool {
    let columns = op.columns();
    key.iter()
        .any(|k| columns.get(*k).is_some_and(|c| !c.nullable))
}
