//! The operator tree: relational operators over Z-sets, one per file under `operator/`, each
//! with its Z-set semantics (`eval`), its delta rule (`delta`) and its SQL (`render`).
//! Invariants: `eval` is the executable specification — PostgreSQL bag semantics when inputs
//! are positive; `delta(op)` evaluated over the post-change database equals
//! `eval(op, after) - eval(op, before)` (checked by the property tests in `tests/`).

pub mod aggregate;
pub mod consolidate;
pub mod delta_scan;
pub mod distinct;
pub mod filter;
pub mod flat_map;
pub mod join;
pub mod negate;
pub mod ordering;
pub mod project;
pub mod recursive;
pub mod repeat;
pub mod scan;
pub mod semi_join;
pub mod set_op;
pub mod support;
pub mod top_k;
pub mod union_all;
pub mod window;

use std::collections::BTreeMap;

pub use aggregate::{AggCall, AggFunc, Aggregate, SortKey};
pub use consolidate::Consolidate;
pub use delta_scan::DeltaScan;
pub use distinct::Distinct;
pub use filter::Filter;
pub use flat_map::FlatMap;
pub use join::{Join, JoinKind};
pub use negate::Negate;
pub use project::Project;
pub use recursive::Recursive;
pub use repeat::Repeat;
pub use scan::{Scan, TableRef};
pub use semi_join::{SemiJoin, SemiMode};
pub use set_op::{SetOp, SetOpKind};
pub use support::Support;
pub use top_k::TopK;
pub use union_all::UnionAll;
pub use window::{Frame, FrameBound, FrameUnits, Window, WindowCall, WindowFunc};

use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::render::{Fragment, SqlWriter};
use crate::types::SqlType;
use crate::zset::ZSet;

/// The type and nullability of one output column of an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColType {
    pub ty: SqlType,
    pub nullable: bool,
}

impl ColType {
    pub fn new(ty: SqlType, nullable: bool) -> Self {
        ColType { ty, nullable }
    }
}

/// Table states for evaluation: table id → Z-set of full table rows (all columns, in catalog
/// order).
pub type Tables = BTreeMap<u32, ZSet>;

/// What `eval` reads: the post-change state of every table and the change window's deltas.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    pub current: &'a Tables,
    pub deltas: &'a Tables,
}

/// A node of the operator tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    Scan(Scan),
    DeltaScan(DeltaScan),
    Filter(Filter),
    Project(Project),
    Join(Join),
    SemiJoin(SemiJoin),
    Aggregate(Aggregate),
    Distinct(Distinct),
    UnionAll(UnionAll),
    Negate(Negate),
    SetOp(SetOp),
    Repeat(Repeat),
    Consolidate(Consolidate),
    Support(Support),
    Window(Window),
    TopK(TopK),
    FlatMap(FlatMap),
    Recursive(Recursive),
}

impl Operator {
    /// The output columns.
    pub fn columns(&self) -> Vec<ColType> {
        match self {
            Operator::Scan(o) => o.columns(),
            Operator::DeltaScan(o) => o.scan.columns(),
            Operator::Filter(o) => o.input.columns(),
            Operator::Project(o) => o.types.clone(),
            Operator::Join(o) => o.columns(),
            Operator::SemiJoin(o) => o.left.columns(),
            Operator::Aggregate(o) => o.columns(),
            Operator::Distinct(o) => o.input.columns(),
            Operator::UnionAll(o) => o.columns(),
            Operator::Negate(o) => o.input.columns(),
            Operator::SetOp(o) => o.left.columns(),
            Operator::Repeat(o) => o.input.columns(),
            Operator::Consolidate(o) => o.input.columns(),
            Operator::Support(o) => o.input.columns(),
            Operator::Window(o) => o.columns(),
            Operator::TopK(o) => o.columns(),
            Operator::FlatMap(o) => o.columns(),
            Operator::Recursive(o) => o.columns(),
        }
    }

    pub fn arity(&self) -> usize {
        self.columns().len()
    }

    /// Direct inputs, left to right.
    pub fn children(&self) -> Vec<&Operator> {
        match self {
            Operator::Scan(_) | Operator::DeltaScan(_) => vec![],
            Operator::Filter(o) => vec![&o.input],
            Operator::Project(o) => vec![&o.input],
            Operator::Join(o) => vec![&o.left, &o.right],
            Operator::SemiJoin(o) => vec![&o.left, &o.right],
            Operator::Aggregate(o) => vec![&o.input],
            Operator::Distinct(o) => vec![&o.input],
            Operator::UnionAll(o) => o.inputs.iter().collect(),
            Operator::Negate(o) => vec![&o.input],
            Operator::SetOp(o) => vec![&o.left, &o.right],
            Operator::Repeat(o) => vec![&o.input],
            Operator::Consolidate(o) => vec![&o.input],
            Operator::Support(o) => vec![&o.input],
            Operator::Window(o) => vec![&o.input],
            Operator::FlatMap(o) => vec![&o.input],
            Operator::Recursive(o) => vec![&o.base, &o.step],
            Operator::TopK(o) => {
                let mut c = vec![o.input.as_ref()];
                c.extend(o.widen_by.as_deref());
                c
            }
        }
    }

    /// A short name for explain output.
    pub fn name(&self) -> &'static str {
        match self {
            Operator::Scan(_) => "Scan",
            Operator::DeltaScan(_) => "DeltaScan",
            Operator::Filter(_) => "Filter",
            Operator::Project(_) => "Project",
            Operator::Join(_) => "Join",
            Operator::SemiJoin(_) => "SemiJoin",
            Operator::Aggregate(_) => "Aggregate",
            Operator::Distinct(_) => "Distinct",
            Operator::UnionAll(_) => "UnionAll",
            Operator::Negate(_) => "Negate",
            Operator::SetOp(_) => "SetOp",
            Operator::Repeat(_) => "Repeat",
            Operator::Consolidate(_) => "Consolidate",
            Operator::Support(_) => "Support",
            Operator::Window(_) => "Window",
            Operator::TopK(_) => "TopK",
            Operator::FlatMap(_) => "FlatMap",
            Operator::Recursive(_) => "Recursive",
        }
    }

    /// Evaluates the operator over Z-sets (the executable specification).
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        match self {
            Operator::Scan(o) => o.eval(ctx),
            Operator::DeltaScan(o) => o.eval(ctx),
            Operator::Filter(o) => o.eval(ctx),
            Operator::Project(o) => o.eval(ctx),
            Operator::Join(o) => o.eval(ctx),
            Operator::SemiJoin(o) => o.eval(ctx),
            Operator::Aggregate(o) => o.eval(ctx),
            Operator::Distinct(o) => o.eval(ctx),
            Operator::UnionAll(o) => o.eval(ctx),
            Operator::Negate(o) => o.eval(ctx),
            Operator::SetOp(o) => o.eval(ctx),
            Operator::Repeat(o) => o.eval(ctx),
            Operator::Consolidate(o) => o.eval(ctx),
            Operator::Support(o) => o.eval(ctx),
            Operator::Window(o) => o.eval(ctx),
            Operator::TopK(o) => o.eval(ctx),
            Operator::FlatMap(o) => o.eval(ctx),
            Operator::Recursive(o) => o.eval(ctx),
        }
    }

    /// The delta of this operator as an operator tree over post-change states (`Scan`) and
    /// change windows (`DeltaScan`): `eval(delta) = eval(self, after) - eval(self, before)`.
    pub fn delta(&self) -> Result<Operator, EngineError> {
        match self {
            Operator::Scan(o) => Ok(o.delta()),
            Operator::Filter(o) => o.delta(),
            Operator::Project(o) => o.delta(),
            Operator::Join(o) => o.delta(),
            Operator::SemiJoin(o) => o.delta(),
            Operator::Aggregate(o) => o.delta(),
            Operator::Distinct(o) => o.delta(),
            Operator::UnionAll(o) => o.delta(),
            Operator::Negate(o) => o.delta(),
            Operator::SetOp(o) => o.delta(),
            Operator::Repeat(o) => o.delta(),
            Operator::Consolidate(o) => o.delta(),
            Operator::Window(o) => o.delta(),
            Operator::TopK(o) => o.delta(),
            Operator::FlatMap(o) => o.delta(),
            Operator::Recursive(o) => o.delta(),
            Operator::DeltaScan(_) | Operator::Support(_) => Err(EngineError::internal(format!(
                "{} appears only in delta plans and has no delta itself",
                self.name()
            ))),
        }
    }

    /// Renders the operator as one SQL `SELECT` producing columns `c0..cN` (and
    /// `__pgt_weight` when the fragment is weighted).
    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        match self {
            Operator::Scan(o) => Ok(o.render(w)),
            Operator::DeltaScan(o) => o.render(w),
            Operator::Filter(o) => o.render(w),
            Operator::Project(o) => o.render(w),
            Operator::Join(o) => o.render(w),
            Operator::SemiJoin(o) => o.render(w),
            Operator::Aggregate(o) => o.render(w),
            Operator::Distinct(o) => o.render(w),
            Operator::UnionAll(o) => o.render(w),
            Operator::Negate(o) => o.render(w),
            Operator::SetOp(o) => o.render(w),
            Operator::Repeat(o) => o.render(w),
            Operator::Consolidate(o) => o.render(w),
            Operator::Support(o) => o.render(w),
            Operator::Window(o) => o.render(w),
            Operator::TopK(o) => o.render(w),
            Operator::FlatMap(o) => o.render(w),
            Operator::Recursive(o) => o.render(w),
        }
    }

    /// Whether the operator reads a change window somewhere below.
    pub fn contains_delta(&self) -> bool {
        matches!(self, Operator::DeltaScan(_)) || self.children().iter().any(|c| c.contains_delta())
    }

    /// Whether the operator's output size is bounded by the change window (times join
    /// fan-out), so that materialising it once is cheap. Full-table operators are not.
    pub fn is_delta_driven(&self) -> bool {
        match self {
            Operator::DeltaScan(_) => true,
            Operator::Scan(_) => false,
            Operator::Join(o) => o.left.is_delta_driven() || o.right.is_delta_driven(),
            Operator::SemiJoin(o) => {
                o.left.is_delta_driven() || (o.mode == SemiMode::Any && o.right.is_delta_driven())
            }
            Operator::UnionAll(o) => o.inputs.iter().all(|i| i.is_delta_driven()),
            Operator::SetOp(_) => false,
            // Its delta is a statement of its own, at the root of a plan.
            Operator::Recursive(o) => o.delta,
            // At most offset + limit rows (plus the change window's insertions).
            Operator::TopK(_) => true,
            Operator::Aggregate(o) => !o.keys.is_empty() && o.input.is_delta_driven(),
            Operator::Filter(_)
            | Operator::Project(_)
            | Operator::Distinct(_)
            | Operator::Negate(_)
            | Operator::Repeat(_)
            | Operator::Consolidate(_)
            | Operator::Support(_)
            | Operator::Window(_)
            | Operator::FlatMap(_) => self.children().iter().all(|c| c.is_delta_driven()),
        }
    }

    /// Every table scanned (current state or change window), with ids deduplicated.
    pub fn tables(&self, out: &mut BTreeMap<u32, TableRef>) {
        match self {
            Operator::Scan(s) => {
                out.insert(s.table.id, s.table.clone());
            }
            Operator::DeltaScan(d) => {
                out.insert(d.scan.table.id, d.scan.table.clone());
            }
            _ => self.children().iter().for_each(|c| c.tables(out)),
        }
    }
}

/// `Box::new` shorthand for building trees.
pub(crate) fn bx(op: Operator) -> Box<Operator> {
    Box::new(op)
}

/// Restricts `input` to rows whose `keys` appear in the (unweighted, duplicate-free) key set
/// `keys_set`: a semi join on `key_i IS NOT DISTINCT FROM k_i`. PostgreSQL can neither hash
/// nor index `IS NOT DISTINCT FROM` (a nested loop over input × key set), so the semi join is
/// written with `=` where both sides are NOT NULL, and a key that may be NULL splits `input` in
/// two disjoint parts, UNION ALL: rows whose nullable keys are all non-NULL match with `=`
/// (hash or index semi join; a key-set row holding NULL cannot match them anyway), and rows
/// with a NULL key match NULL-safely (for a single key: "the key set holds NULL", evaluated
/// once). Every row is in exactly one part, so the result is the same bag.
pub(crate) fn restrict(
    input: Operator,
    keys: &[crate::expr::Expr],
    key_types: &[ColType],
    keys_set: Operator,
) -> Operator {
    use crate::expr::{BinOp, Expr};
    let arity = input.arity();
    let input_cols = input.columns();
    let nullable: Vec<bool> = keys
        .iter()
        .zip(key_types)
        .map(|(k, kt)| kt.nullable || crate::expr::nullable(k, &input_cols))
        .collect();
    let eq = |i: usize, k: &Expr| Expr::binary(BinOp::Eq, k.clone(), Expr::Column(arity + i));
    let semi = |input: Operator, keys_set: Operator, on: Expr| {
        Operator::SemiJoin(SemiJoin {
            left: bx(input),
            right: bx(keys_set),
            on,
            mode: SemiMode::Positive,
        })
    };
    let all_eq = Expr::and_all(keys.iter().enumerate().map(|(i, k)| eq(i, k)).collect());
    if !nullable.contains(&true) {
        return semi(input, keys_set, all_eq);
    }
    let is_null = |k: &Expr, negated: bool| Expr::IsNull {
        arg: Box::new(k.clone()),
        negated,
    };
    let nullable_keys: Vec<&Expr> = keys
        .iter()
        .zip(&nullable)
        .filter(|(_, n)| **n)
        .map(|(k, _)| k)
        .collect();
    let no_null = Expr::and_all(nullable_keys.iter().map(|k| is_null(k, true)).collect());
    let some_null = nullable_keys
        .iter()
        .map(|k| is_null(k, false))
        .reduce(|a, b| Expr::binary(BinOp::Or, a, b))
        .unwrap_or_else(|| Expr::bool(false));
    let null_safe = if keys.len() == 1 {
        // The row's only key is NULL: it matches iff the key set holds NULL.
        is_null(&Expr::Column(arity), false)
    } else {
        Expr::and_all(
            keys.iter()
                .enumerate()
                .zip(&nullable)
                .map(|((i, k), n)| {
                    if *n {
                        Expr::not_distinct(k.clone(), Expr::Column(arity + i))
                    } else {
                        eq(i, k)
                    }
                })
                .collect(),
        )
    };
    let part = |predicate: Expr| {
        Operator::Filter(Filter {
            input: bx(input.clone()),
            predicate,
        })
    };
    Operator::UnionAll(UnionAll {
        inputs: vec![
            semi(part(no_null), keys_set.clone(), all_eq),
            semi(part(some_null), keys_set, null_safe),
        ],
    })
}

/// `target` narrowed to the rows that can satisfy join condition `on` with a row of `driver`,
/// when `driver` is bounded by the change window and `on` equates some of `driver`'s columns
/// with output columns of `target` that are group keys of an aggregate in it (through
/// projections of columns and filters): that aggregate's input is restricted to the driver's
/// distinct values of those columns ([`restrict`]). PostgreSQL pushes no join key into a
/// `GROUP BY` subquery, so `ΔL ⋈ Agg(R)` would aggregate all of R for a handful of delta rows
/// (TPC-H Q17's `avg(l_quantity)` per part over all of lineitem). Every group keeps all its
/// rows, so the groups that can match are unchanged and the join's result is the same; other
/// targets are returned as they are. Column positions: `on` reads the left input then the
/// right one; `driver_left` says which side `driver` is.
pub(crate) fn narrow(
    target: Operator,
    driver: &Operator,
    on: &crate::expr::Expr,
    driver_left: bool,
) -> Operator {
    use crate::expr::{BinOp, Expr};
    if !driver.is_delta_driven() || target.is_delta_driven() {
        return target;
    }
    let la = if driver_left {
        driver.arity()
    } else {
        target.arity()
    };
    let mut parts = Vec::new();
    let mut stack = vec![on];
    while let Some(e) = stack.pop() {
        match e {
            Expr::Binary {
                op: BinOp::And,
                left,
                right,
            } => {
                stack.push(right);
                stack.push(left);
            }
            Expr::Binary {
                op: BinOp::Eq,
                left,
                right,
            } => {
                if let (Expr::Column(a), Expr::Column(b)) = (left.as_ref(), right.as_ref()) {
                    let (l, r) = if a < b { (*a, *b) } else { (*b, *a) };
                    if l < la && r >= la {
                        // (driver column, target column)
                        parts.push(if driver_left {
                            (l, r - la)
                        } else {
                            (r - la, l)
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return target;
    }
    let driver_cols = driver.columns();
    let keys_set = Operator::Support(Support {
        input: bx(Operator::Project(Project {
            input: bx(Operator::Support(Support {
                input: bx(driver.clone()),
            })),
            exprs: parts.iter().map(|(d, _)| Expr::Column(*d)).collect(),
            types: parts.iter().map(|(d, _)| driver_cols[*d].clone()).collect(),
        })),
    });
    let cols: Vec<usize> = parts.iter().map(|(_, t)| *t).collect();
    narrowed(&target, &cols, keys_set).unwrap_or(target)
}

/// `op` with the input of the aggregate whose group keys its output columns `cols` are
/// restricted to the rows whose keys are in `keys_set`; `None` when `cols` do not reach group
/// keys through column projections and filters.
fn narrowed(op: &Operator, cols: &[usize], keys_set: Operator) -> Option<Operator> {
    use crate::expr::Expr;
    match op {
        Operator::Aggregate(a) if !a.keys.is_empty() && cols.iter().all(|c| *c < a.keys.len()) => {
            let keys: Vec<Expr> = cols.iter().map(|c| a.keys[*c].clone()).collect();
            let types: Vec<ColType> = cols.iter().map(|c| a.key_types[*c].clone()).collect();
            Some(Operator::Aggregate(Aggregate {
                input: bx(restrict((*a.input).clone(), &keys, &types, keys_set)),
                keys: a.keys.clone(),
                aggs: a.aggs.clone(),
                key_types: a.key_types.clone(),
            }))
        }
        Operator::Project(p) => {
            let inner: Option<Vec<usize>> = cols
                .iter()
                .map(|c| match p.exprs.get(*c) {
                    Some(Expr::Column(i)) => Some(*i),
                    _ => None,
                })
                .collect();
            Some(Operator::Project(Project {
                input: bx(narrowed(&p.input, &inner?, keys_set)?),
                exprs: p.exprs.clone(),
                types: p.types.clone(),
            }))
        }
        Operator::Filter(f) => Some(Operator::Filter(Filter {
            input: bx(narrowed(&f.input, cols, keys_set)?),
            predicate: f.predicate.clone(),
        })),
        _ => None,
    }
}

/// The delta of an operator whose output rows each depend only on the input rows sharing
/// their `keys` (an aggregate's groups, a window's partitions): with K the keys of the rows the
/// change window touches, Δ op(A) = op(A|K) − op(before(A)|K), `op` being `rebuild` over an
/// input. Without keys every row depends on all of them: any change recomputes the whole input.
/// The touched rows are taken first, then their keys: projecting the delta before taking its
/// support would let −(k, 1) and +(k, 2) cancel into "k untouched".
pub(crate) fn recompute_touched(
    input: Operator,
    keys: &[crate::expr::Expr],
    key_types: &[ColType],
    rebuild: impl Fn(Operator) -> Operator,
) -> Result<Operator, EngineError> {
    let di = input.delta()?;
    let (touched_after, touched_delta) = if keys.is_empty() {
        let touched = Operator::SemiJoin(SemiJoin {
            left: bx(input),
            right: bx(di.clone()),
            on: crate::expr::Expr::bool(true),
            mode: SemiMode::Any,
        });
        (touched, di)
    } else {
        let keys_set = Operator::Support(Support {
            input: bx(Operator::Project(Project {
                input: bx(Operator::Support(Support {
                    input: bx(di.clone()),
                })),
                exprs: keys.to_vec(),
                types: key_types.to_vec(),
            })),
        });
        (
            restrict(input, keys, key_types, keys_set.clone()),
            restrict(di, keys, key_types, keys_set),
        )
    };
    let new = rebuild(touched_after.clone());
    let old = rebuild(before_state(touched_after, touched_delta));
    Ok(Operator::UnionAll(UnionAll {
        inputs: vec![new, Operator::Negate(Negate { input: bx(old) })],
    }))
}

/// `before(op)` restricted by `restrict_fn`: the pre-change state, computed as the
/// consolidation of `after - delta` (docs/CORRECTNESS.md §2; no pre-state tables needed). Cost: one pass
/// over the restricted post-change rows plus the restricted delta.
pub(crate) fn before_state(after: Operator, delta: Operator) -> Operator {
    Operator::Consolidate(Consolidate {
        input: bx(Operator::UnionAll(UnionAll {
            inputs: vec![after, Operator::Negate(Negate { input: bx(delta) })],
        })),
    })
}
