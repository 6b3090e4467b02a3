//! Random operator trees over the test tables (`db.rs`), built from a recursive recipe so
//! that every column reference is within its input's arity.

#![allow(dead_code)]

use engine::expr::{BinOp, Expr};
use engine::operator::scan::ScanColumn;
use engine::operator::{
    AggCall, AggFunc, Aggregate, Distinct, Filter, Join, JoinKind, Project, Scan, SemiJoin,
    SemiMode, SetOp, SetOpKind, TableRef, UnionAll,
};
use engine::{ColType, Operator, SqlType};
use proptest::prelude::*;

use super::db;

#[derive(Debug, Clone)]
pub enum Recipe {
    Scan(u8),
    Filter(Box<Recipe>, u8, u8, u8),
    Project(Box<Recipe>, Vec<u8>),
    Join(u8, Box<Recipe>, Box<Recipe>, u8, u8, bool),
    Semi(u8, Box<Recipe>, Box<Recipe>, u8, u8),
    Agg(Box<Recipe>, Option<u8>, Vec<(u8, u8)>),
    Distinct(Box<Recipe>),
    Union(Box<Recipe>, Box<Recipe>, u8, u8),
    SetOp(u8, Box<Recipe>, Box<Recipe>, u8, u8),
}

pub fn recipe(depth: u32) -> impl Strategy<Value = Recipe> {
    let leaf = (0u8..4).prop_map(Recipe::Scan);
    leaf.prop_recursive(depth, 12, 2, |inner| {
        let b = move || inner.clone().prop_map(Box::new);
        prop_oneof![
            (b(), any::<u8>(), 0u8..5, any::<u8>())
                .prop_map(|(r, c, k, v)| Recipe::Filter(r, c, k, v)),
            (b(), prop::collection::vec(any::<u8>(), 1..3))
                .prop_map(|(r, cols)| Recipe::Project(r, cols)),
            (
                0u8..4,
                b(),
                b(),
                any::<u8>(),
                any::<u8>(),
                prop::bool::weighted(0.2)
            )
                .prop_map(|(k, l, r, lc, rc, lt)| Recipe::Join(k, l, r, lc, rc, lt)),
            (0u8..3, b(), b(), any::<u8>(), any::<u8>())
                .prop_map(|(m, l, r, lc, rc)| Recipe::Semi(m, l, r, lc, rc)),
            (
                b(),
                prop::option::of(any::<u8>()),
                prop::collection::vec((0u8..7, any::<u8>()), 0..3)
            )
                .prop_map(|(r, k, aggs)| Recipe::Agg(r, k, aggs)),
            b().prop_map(Recipe::Distinct),
            (b(), b(), any::<u8>(), any::<u8>())
                .prop_map(|(l, r, lc, rc)| Recipe::Union(l, r, lc, rc)),
            (0u8..4, b(), b(), any::<u8>(), any::<u8>())
                .prop_map(|(k, l, r, lc, rc)| Recipe::SetOp(k, l, r, lc, rc)),
        ]
    })
}

fn int4(nullable: bool) -> ColType {
    ColType::new(SqlType::int4(), nullable)
}

pub fn scan(table: u32) -> Operator {
    let names: &[&str] = match table {
        db::A => &["k", "x", "g"],
        db::B => &["k", "y", "g"],
        db::C => &["k", "z"],
        _ => &["v", "w"],
    };
    let name = match table {
        db::A => "a",
        db::B => "b",
        db::C => "c",
        _ => "d",
    };
    Operator::Scan(Scan {
        table: TableRef {
            id: table,
            schema: "public".into(),
            name: name.into(),
        },
        columns: names
            .iter()
            .enumerate()
            .map(|(i, n)| ScanColumn {
                index: i,
                name: (*n).into(),
                ty: int4(!(table != db::D && i == 0)),
            })
            .collect(),
    })
}

fn pick(c: u8, arity: usize) -> usize {
    usize::from(c) % arity.max(1)
}

/// One column of `op` (its `c`-th modulo arity), as a single-column projection.
fn single(op: Operator, c: u8) -> Operator {
    let n = op.arity();
    Project::columns_of(op, &[pick(c, n)])
}

pub fn build(r: &Recipe) -> Operator {
    match r {
        Recipe::Scan(t) => scan([db::A, db::B, db::C, db::D][usize::from(*t % 4)]),
        Recipe::Filter(input, c, kind, v) => {
            let input = build(input);
            let col = Expr::Column(pick(*c, input.arity()));
            let val = Expr::int(i64::from(*v % 4));
            let predicate = match kind {
                0 => Expr::binary(BinOp::Gt, col, val),
                1 => Expr::IsNull {
                    arg: Box::new(col),
                    negated: *v % 2 == 0,
                },
                2 => Expr::binary(BinOp::Eq, col, val),
                3 => Expr::Not(Box::new(Expr::binary(BinOp::Lt, col, val))),
                _ => Expr::binary(
                    BinOp::Or,
                    Expr::binary(BinOp::Eq, col.clone(), val),
                    Expr::binary(BinOp::Eq, col, Expr::Column(pick(v / 4, input.arity()))),
                ),
            };
            Operator::Filter(Filter {
                input: Box::new(input),
                predicate,
            })
        }
        Recipe::Project(input, cols) => {
            let input = build(input);
            let n = input.arity();
            let idx: Vec<usize> = cols.iter().map(|c| pick(*c, n)).collect();
            if cols.len() == 2 && cols[1] % 3 == 0 {
                // An arithmetic column: first + second.
                let types = vec![int4(true)];
                let e = Expr::binary(BinOp::Plus, Expr::Column(idx[0]), Expr::Column(idx[1]));
                return Operator::Project(Project {
                    input: Box::new(input),
                    exprs: vec![e],
                    types,
                });
            }
            Project::columns_of(input, &idx)
        }
        Recipe::Join(kind, l, r, lc, rc, lt) => {
            let (l, r) = (build(l), build(r));
            let (la, ra) = (l.arity(), r.arity());
            let op = if *lt { BinOp::Lt } else { BinOp::Eq };
            let on = Expr::binary(
                op,
                Expr::Column(pick(*lc, la)),
                Expr::Column(la + pick(*rc, ra)),
            );
            let kind = [
                JoinKind::Inner,
                JoinKind::Left,
                JoinKind::Right,
                JoinKind::Full,
            ][usize::from(*kind % 4)];
            Operator::Join(Join {
                kind,
                left: Box::new(l),
                right: Box::new(r),
                on,
            })
        }
        Recipe::Semi(mode, l, r, lc, rc) => {
            let (l, r) = (build(l), build(r));
            let la = l.arity();
            let eq = Expr::binary(
                BinOp::Eq,
                Expr::Column(pick(*lc, la)),
                Expr::Column(la + pick(*rc, r.arity())),
            );
            let (on, mode) = match mode {
                0 => (eq, SemiMode::Positive),
                1 => (eq, SemiMode::NonPositive),
                // NOT IN: anti join on (x = y) IS NOT FALSE.
                _ => (
                    Expr::IsBool {
                        arg: Box::new(eq),
                        value: false,
                        negated: true,
                    },
                    SemiMode::NonPositive,
                ),
            };
            Operator::SemiJoin(SemiJoin {
                left: Box::new(l),
                right: Box::new(r),
                on,
                mode,
            })
        }
        Recipe::Agg(input, key, aggs) => {
            let input = build(input);
            let n = input.arity();
            let cols = input.columns();
            let keys: Vec<Expr> = key.iter().map(|k| Expr::Column(pick(*k, n))).collect();
            let key_types = key.iter().map(|k| cols[pick(*k, n)].clone()).collect();
            // At least one output column, so that parents can reference column 0.
            let default = [(0u8, 0u8)];
            let aggs = if key.is_none() && aggs.is_empty() {
                &default[..]
            } else {
                &aggs[..]
            };
            let aggs = aggs
                .iter()
                .map(|(f, c)| {
                    let arg = Expr::Column(pick(*c, n));
                    let (func, ty) = match f {
                        0 => (AggFunc::CountStar, ColType::new(SqlType::int8(), false)),
                        1 => (AggFunc::Count, ColType::new(SqlType::int8(), false)),
                        2 => (AggFunc::Sum, ColType::new(SqlType::int8(), true)),
                        3 => (AggFunc::Min, int4(true)),
                        4 => (AggFunc::Max, int4(true)),
                        5 => (AggFunc::Avg, ColType::new(SqlType::numeric(), true)),
                        _ => (AggFunc::Sum, ColType::new(SqlType::int8(), true)),
                    };
                    AggCall {
                        args: if func == AggFunc::CountStar {
                            vec![]
                        } else {
                            vec![arg.clone()]
                        },
                        distinct: *f == 6,
                        filter: (c % 3 == 0).then(|| Expr::binary(BinOp::Gt, arg, Expr::int(0))),
                        order_by: vec![],
                        within_group: false,
                        arg_type: Some(SqlType::int4()),
                        func,
                        ty,
                    }
                })
                .collect();
            Operator::Aggregate(Aggregate {
                input: Box::new(input),
                keys,
                aggs,
                key_types,
            })
        }
        Recipe::Distinct(input) => Operator::Distinct(Distinct {
            input: Box::new(build(input)),
        }),
        Recipe::Union(l, r, lc, rc) => Operator::UnionAll(UnionAll {
            inputs: vec![single(build(l), *lc), single(build(r), *rc)],
        }),
        Recipe::SetOp(kind, l, r, lc, rc) => Operator::SetOp(SetOp {
            kind: if kind % 2 == 0 {
                SetOpKind::Intersect
            } else {
                SetOpKind::Except
            },
            all: *kind >= 2,
            left: Box::new(single(build(l), *lc)),
            right: Box::new(single(build(r), *rc)),
        }),
    }
}
