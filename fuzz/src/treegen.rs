//! Random operator trees over the integer tables `a`, `b`, `c`, `d`, built top-down from the
//! fuzzer's bytes so that every column reference is within its input's arity. Only the
//! operators a defining query can produce are generated (no `Negate`, which would make
//! inputs non-positive: `eval` is PostgreSQL's bag semantics only on positive Z-sets).

use arbitrary::{Result, Unstructured};
use engine::expr::{BinOp, Expr};
use engine::operator::scan::ScanColumn;
use engine::operator::{
    AggCall, AggFunc, Aggregate, Consolidate, Distinct, Filter, Frame, FrameBound, FrameUnits,
    Join, JoinKind, Project, Repeat, Scan, SemiJoin, SemiMode, SetOp, SetOpKind, SortKey, TableRef,
    TopK, UnionAll, Window, WindowCall, WindowFunc,
};
use engine::{ColType, Operator, SqlType};

use crate::schema::TableSpec;

/// Bounds: nesting depth of the tree, the number of operator nodes, and the number of joins
/// (each join multiplies the rows evaluated: a 16-way join of <> conditions over a dozen rows
/// per table exhausted libFuzzer's 2 GB, corpus file regress-oom-join-fanout).
pub const DEPTH_MAX: u32 = 4;
pub const NODES_MAX: u32 = 12;
pub const JOINS_MAX: u32 = 3;

fn int4(nullable: bool) -> ColType {
    ColType::new(SqlType::int4(), nullable)
}

/// A scan of every column of `t` (integer tables only).
pub fn scan(t: &TableSpec) -> Operator {
    Operator::Scan(Scan {
        table: TableRef {
            id: t.id,
            schema: "public".into(),
            name: t.name.into(),
        },
        columns: t
            .columns
            .iter()
            .enumerate()
            .map(|(i, (n, _, nullable, _))| ScanColumn {
                index: i,
                name: (*n).into(),
                ty: int4(*nullable),
            })
            .collect(),
    })
}

/// Tree builder state: the tables to scan and the node budget left.
pub struct TreeGen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    tables: Vec<&'static TableSpec>,
    nodes: u32,
    joins: u32,
}

/// A random tree over `tables` (which must have integer columns only).
pub fn tree(u: &mut Unstructured<'_>, tables: Vec<&'static TableSpec>) -> Result<Operator> {
    let mut g = TreeGen {
        u,
        tables,
        nodes: 0,
        joins: 0,
    };
    g.node(DEPTH_MAX)
}

impl TreeGen<'_, '_> {
    fn col(&mut self, arity: usize) -> Result<usize> {
        self.u.choose_index(arity.max(1))
    }

    fn small(&mut self) -> Result<Expr> {
        Ok(match self.u.int_in_range(0u8..=4)? {
            4 => Expr::null_of(&SqlType::int4()),
            n => Expr::int(i64::from(n)),
        })
    }

    /// A predicate over a row of `arity` columns.
    fn predicate(&mut self, arity: usize, depth: u32) -> Result<Expr> {
        let c = Expr::Column(self.col(arity)?);
        let max = if depth == 0 { 5 } else { 7 };
        Ok(match self.u.int_in_range(0..=max)? {
            0 => Expr::binary(BinOp::Gt, c, self.small()?),
            1 => Expr::binary(BinOp::Eq, c, self.small()?),
            2 => Expr::IsNull {
                arg: Box::new(c),
                negated: self.u.arbitrary()?,
            },
            3 => Expr::binary(BinOp::LtEq, c, Expr::Column(self.col(arity)?)),
            4 => Expr::IsDistinct {
                left: Box::new(c),
                right: Box::new(self.small()?),
                negated: self.u.arbitrary()?,
            },
            5 => Expr::Not(Box::new(Expr::binary(BinOp::Lt, c, self.small()?))),
            6 => Expr::binary(
                BinOp::Or,
                self.predicate(arity, depth - 1)?,
                self.predicate(arity, depth - 1)?,
            ),
            _ => Expr::binary(
                BinOp::And,
                self.predicate(arity, depth - 1)?,
                self.predicate(arity, depth - 1)?,
            ),
        })
    }

    /// One column of `op` as a single-column projection (set operations need equal arity).
    fn single(&mut self, op: Operator) -> Result<Operator> {
        let c = self.col(op.arity())?;
        Ok(Project::columns_of(op, &[c]))
    }

    fn leaf(&mut self) -> Result<Operator> {
        let t = *self.u.choose(&self.tables)?;
        Ok(scan(t))
    }

    fn node(&mut self, depth: u32) -> Result<Operator> {
        if depth == 0 || self.nodes >= NODES_MAX || self.u.ratio(1, 4)? {
            return self.leaf();
        }
        self.nodes += 1;
        let d = depth - 1;
        Ok(match self.u.int_in_range(0u8..=12)? {
            11 => self.window(d)?,
            12 => {
                let input = self.node(d)?;
                let order_by = vec![self.sort_key(input.arity())?];
                Operator::TopK(TopK {
                    input: Box::new(input),
                    order_by,
                    offset: self.u.int_in_range(0..=2)?,
                    limit: self.u.int_in_range(1..=4)?,
                    widen_by: None,
                })
            }
            0 => {
                let input = self.node(d)?;
                let predicate = self.predicate(input.arity(), 1)?;
                Operator::Filter(Filter {
                    input: Box::new(input),
                    predicate,
                })
            }
            1 => self.project(d)?,
            2 | 3 if self.joins < JOINS_MAX => {
                self.joins += 1;
                self.join(d)?
            }
            4 => self.semi_join(d)?,
            5 | 6 => self.aggregate(d)?,
            7 => Operator::Distinct(Distinct {
                input: Box::new(self.node(d)?),
            }),
            8 => {
                let n = self.u.int_in_range(2..=3)?;
                let mut inputs = Vec::new();
                for _ in 0..n {
                    let i = self.node(d)?;
                    inputs.push(self.single(i)?);
                }
                Operator::UnionAll(UnionAll { inputs })
            }
            9 => {
                let (l, r) = (self.node(d)?, self.node(d)?);
                Operator::SetOp(SetOp {
                    kind: *self.u.choose(&[SetOpKind::Intersect, SetOpKind::Except])?,
                    all: self.u.arbitrary()?,
                    left: Box::new(self.single(l)?),
                    right: Box::new(self.single(r)?),
                })
            }
            2 | 3 => self.leaf()?,
            _ => {
                let input = self.node(d)?;
                let c = self.col(input.arity())?;
                if self.u.arbitrary()? {
                    // A row-dependent, non-negative copy count (NULL and ≤ 0 drop the row).
                    Operator::Repeat(Repeat {
                        input: Box::new(input),
                        count: Expr::Column(c),
                    })
                } else {
                    Operator::Consolidate(Consolidate {
                        input: Box::new(input),
                    })
                }
            }
        })
    }

    fn sort_key(&mut self, arity: usize) -> Result<SortKey> {
        Ok(SortKey {
            expr: Expr::Column(self.col(arity)?),
            desc: self.u.arbitrary()?,
            nulls_first: *self.u.choose(&[None, Some(true), Some(false)])?,
        })
    }

    /// A window of one or two calls, with or without a partition key.
    fn window(&mut self, d: u32) -> Result<Operator> {
        let input = self.node(d)?;
        let n = input.arity();
        let cols = input.columns();
        let (partition_by, partition_types) = if self.u.arbitrary()? {
            let c = self.col(n)?;
            (vec![Expr::Column(c)], vec![cols[c].clone()])
        } else {
            (Vec::new(), Vec::new())
        };
        let mut calls = Vec::new();
        for _ in 0..self.u.int_in_range(1..=2)? {
            let order_by = vec![self.sort_key(n)?];
            let arg = self.col(n)?;
            let call = match self.u.int_in_range(0u8..=4)? {
                0 => WindowCall {
                    func: WindowFunc::RowNumber,
                    args: Vec::new(),
                    order_by,
                    frame: Frame::DEFAULT,
                    ty: ColType::new(SqlType::int8(), false),
                },
                1 => WindowCall {
                    func: WindowFunc::Rank,
                    args: Vec::new(),
                    order_by,
                    frame: Frame::DEFAULT,
                    ty: ColType::new(SqlType::int8(), false),
                },
                2 => WindowCall {
                    func: WindowFunc::DenseRank,
                    args: Vec::new(),
                    order_by,
                    frame: Frame::DEFAULT,
                    ty: ColType::new(SqlType::int8(), false),
                },
                3 => WindowCall {
                    func: WindowFunc::Lag,
                    args: vec![Expr::Column(arg)],
                    order_by,
                    frame: Frame::DEFAULT,
                    ty: ColType::new(cols[arg].ty.clone(), true),
                },
                _ => WindowCall {
                    func: WindowFunc::FirstValue,
                    args: vec![Expr::Column(arg)],
                    order_by,
                    frame: Frame {
                        units: FrameUnits::Rows,
                        start: FrameBound::Preceding(1),
                        end: FrameBound::CurrentRow,
                    },
                    ty: ColType::new(cols[arg].ty.clone(), true),
                },
            };
            calls.push(call);
        }
        Ok(Operator::Window(Window {
            input: Box::new(input),
            partition_by,
            partition_types,
            calls,
        }))
    }

    fn project(&mut self, d: u32) -> Result<Operator> {
        let input = self.node(d)?;
        let n = input.arity();
        if self.u.arbitrary()? {
            let cols = (0..self.u.int_in_range(1..=3)?)
                .map(|_| self.col(n))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Project::columns_of(input, &cols));
        }
        let (a, b) = (Expr::Column(self.col(n)?), Expr::Column(self.col(n)?));
        let e = match self.u.int_in_range(0u8..=3)? {
            0 => Expr::binary(BinOp::Plus, a, b),
            1 => Expr::Coalesce(vec![a, Expr::int(0)]),
            2 => Expr::Case {
                operand: None,
                whens: vec![(Expr::binary(BinOp::Gt, a.clone(), Expr::int(1)), a)],
                otherwise: Some(Box::new(b)),
            },
            _ => Expr::Extremum {
                greatest: self.u.arbitrary()?,
                args: vec![a, b],
            },
        };
        // Column 0 passes through with its own type; the computed column may be NULL.
        let first = input.columns()[0].clone();
        Ok(Operator::Project(Project {
            input: Box::new(input),
            exprs: vec![Expr::Column(0), e],
            types: vec![first, int4(true)],
        }))
    }

    fn join(&mut self, d: u32) -> Result<Operator> {
        let (l, r) = (self.node(d)?, self.node(d)?);
        let (la, ra) = (l.arity(), r.arity());
        let op = *self
            .u
            .choose(&[BinOp::Eq, BinOp::Eq, BinOp::Lt, BinOp::NotEq])?;
        let mut on = Expr::binary(
            op,
            Expr::Column(self.col(la)?),
            Expr::Column(la + self.col(ra)?),
        );
        if self.u.ratio(1, 4)? {
            let extra = Expr::binary(BinOp::Gt, Expr::Column(la + self.col(ra)?), self.small()?);
            on = Expr::binary(BinOp::And, on, extra);
        }
        let kind = *self.u.choose(&[
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
        ])?;
        Ok(Operator::Join(Join {
            kind,
            left: Box::new(l),
            right: Box::new(r),
            on,
        }))
    }

    fn semi_join(&mut self, d: u32) -> Result<Operator> {
        let (l, r) = (self.node(d)?, self.node(d)?);
        let la = l.arity();
        let eq = Expr::binary(
            BinOp::Eq,
            Expr::Column(self.col(la)?),
            Expr::Column(la + self.col(r.arity())?),
        );
        // `SemiMode::Any` appears only in delta plans, never in a query's tree.
        let (on, mode) = match self.u.int_in_range(0u8..=2)? {
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
        Ok(Operator::SemiJoin(SemiJoin {
            left: Box::new(l),
            right: Box::new(r),
            on,
            mode,
        }))
    }

    fn aggregate(&mut self, d: u32) -> Result<Operator> {
        let input = self.node(d)?;
        let n = input.arity();
        let cols = input.columns();
        let keys: Vec<usize> = (0..self.u.int_in_range(0..=2)?)
            .map(|_| self.col(n))
            .collect::<Result<_>>()?;
        let mut aggs = Vec::new();
        let count = self
            .u
            .int_in_range(if keys.is_empty() { 1 } else { 0 }..=3)?;
        for _ in 0..count {
            aggs.push(self.agg_call(n)?);
        }
        Ok(Operator::Aggregate(Aggregate {
            input: Box::new(input),
            keys: keys.iter().map(|k| Expr::Column(*k)).collect(),
            key_types: keys.iter().map(|k| cols[*k].clone()).collect(),
            aggs,
        }))
    }

    fn agg_call(&mut self, n: usize) -> Result<AggCall> {
        let arg = Expr::Column(self.col(n)?);
        let (func, ty, args, arg_type) = match self.u.int_in_range(0u8..=7)? {
            0 => (
                AggFunc::CountStar,
                ColType::new(SqlType::int8(), false),
                vec![],
                None,
            ),
            1 => (
                AggFunc::Count,
                ColType::new(SqlType::int8(), false),
                vec![arg],
                Some(SqlType::int4()),
            ),
            2 => (
                AggFunc::Sum,
                ColType::new(SqlType::int8(), true),
                vec![arg],
                Some(SqlType::int4()),
            ),
            3 => (
                AggFunc::Avg,
                ColType::new(SqlType::numeric(), true),
                vec![arg],
                Some(SqlType::int4()),
            ),
            4 => (AggFunc::Min, int4(true), vec![arg], Some(SqlType::int4())),
            5 => (AggFunc::Max, int4(true), vec![arg], Some(SqlType::int4())),
            6 => {
                let b = Expr::binary(BinOp::Gt, arg, Expr::int(1));
                (
                    AggFunc::BoolAnd,
                    ColType::new(SqlType::bool(), true),
                    vec![b],
                    Some(SqlType::bool()),
                )
            }
            _ => {
                let b = Expr::binary(BinOp::Eq, arg, Expr::int(0));
                (
                    AggFunc::BoolOr,
                    ColType::new(SqlType::bool(), true),
                    vec![b],
                    Some(SqlType::bool()),
                )
            }
        };
        let distinct = func != AggFunc::CountStar && self.u.ratio(1, 5)?;
        let filter = if self.u.ratio(1, 4)? {
            Some(self.predicate(n, 0)?)
        } else {
            None
        };
        Ok(AggCall {
            func,
            args,
            distinct,
            filter,
            order_by: vec![],
            within_group: false,
            arg_type,
            ty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::scenario;
    use crate::schema;
    use crate::sqlgen::tests::bytes;
    use engine::operator::EvalContext;

    fn int_tables() -> Vec<&'static TableSpec> {
        schema::TABLES
            .iter()
            .filter(|t| t.id <= schema::D)
            .collect()
    }

    #[test]
    fn generated_trees_have_delta_plans_and_evaluate_on_generated_databases() {
        let mut evaluated = 0;
        for seed in 0..300 {
            let data = bytes(seed, 768);
            let mut u = Unstructured::new(&data);
            let t = tree(&mut u, int_tables()).unwrap();
            let s = scenario(&mut u, &int_tables()).unwrap();
            if let Err(e) = t.delta() {
                panic!("{e}: {t:#?}");
            }
            let empty = engine::Tables::new();
            let ctx = EvalContext {
                current: &s.after,
                deltas: &empty,
            };
            evaluated += usize::from(t.eval(ctx).is_ok());
        }
        assert!(evaluated >= 290, "{evaluated}/300 evaluated");
    }
}
