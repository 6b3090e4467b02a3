//! `Window`: appends the values of window function calls that share one `PARTITION BY` to
//! every input row (`f(…) OVER (PARTITION BY p ORDER BY o [frame])`); the rows themselves
//! pass through, so a key of the input is a key of the output.
//!
//! Delta rule (recompute the touched partitions): with K = the partition keys of the rows the
//! change window touches, Δ Win(A) = Win(A|K) − Win(before(A)|K), before(A)|K =
//! consolidate(A|K − ΔA|K). A row's window values depend only on the rows of its partition,
//! so every partition outside K yields the same rows before and after. Without PARTITION BY
//! the whole input is one partition and any change recomputes it: O(|A|). Cost otherwise:
//! O(rows of A in the touched partitions · log) — the partitions are read through the same
//! semi join on the keys as an aggregate's groups (`restrict`).
//!
//! Determinism: both terms are evaluated separately, so a call whose value depends on how
//! PostgreSQL orders rows that tie in the window's ORDER BY (`row_number`, `lag`, a ROWS
//! frame…) would take one order in the new term and maybe another in the old one, and the
//! difference would not be the change. Such calls ([`WindowCall::tie_broken`]) order the
//! ties by every input column after the window's own keys — one of the orders the query
//! allows, the same in every evaluation, FULL refreshes included (they render the same
//! tree). Calls whose value depends only on peer groups (`rank`, RANGE and GROUPS frames)
//! keep the ORDER BY as written; calls that would pick one row among peers in a RANGE frame
//! are refused by the planner.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::ordering::{compare_key, tie_breakers};
use super::{bx, recompute_touched, AggCall, ColType, EvalContext, Operator, SortKey};
use crate::error::EngineError;
use crate::expr::eval::{eval, EvalError};
use crate::expr::Expr;
use crate::render::{
    col_ref, each_copy, expr::render_expr, quote_ident, select_cols, Fragment, SqlWriter,
};
use crate::value::{Row, Value};
use crate::zset::ZSet;

/// The unit of a window frame's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameUnits {
    Rows,
    Range,
    Groups,
}

/// One end of a window frame; offsets are non-negative integer constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameBound {
    UnboundedPreceding,
    Preceding(i64),
    CurrentRow,
    Following(i64),
    UnboundedFollowing,
}

impl FrameBound {
    fn sql(self) -> String {
        match self {
            FrameBound::UnboundedPreceding => "UNBOUNDED PRECEDING".into(),
            FrameBound::Preceding(n) => format!("{n} PRECEDING"),
            FrameBound::CurrentRow => "CURRENT ROW".into(),
            FrameBound::Following(n) => format!("{n} FOLLOWING"),
            FrameBound::UnboundedFollowing => "UNBOUNDED FOLLOWING".into(),
        }
    }
}

/// A window frame (`ROWS BETWEEN … AND …`); no EXCLUDE clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub units: FrameUnits,
    pub start: FrameBound,
    pub end: FrameBound,
}

impl Frame {
    /// PostgreSQL's default frame: `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`
    /// (the whole partition when the window has no ORDER BY: every row is a peer).
    pub const DEFAULT: Frame = Frame {
        units: FrameUnits::Range,
        start: FrameBound::UnboundedPreceding,
        end: FrameBound::CurrentRow,
    };

    /// The whole partition, whatever the order.
    pub const WHOLE: Frame = Frame {
        units: FrameUnits::Rows,
        start: FrameBound::UnboundedPreceding,
        end: FrameBound::UnboundedFollowing,
    };

    fn sql(self) -> String {
        let units = match self.units {
            FrameUnits::Rows => "ROWS",
            FrameUnits::Range => "RANGE",
            FrameUnits::Groups => "GROUPS",
        };
        format!(
            "{units} BETWEEN {} AND {}",
            self.start.sql(),
            self.end.sql()
        )
    }
}

/// The function of a window call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowFunc {
    RowNumber,
    Rank,
    DenseRank,
    PercentRank,
    CumeDist,
    /// `ntile(n)`: `args[0]` is the bucket count.
    Ntile,
    /// `lag(x [, offset [, default]])`.
    Lag,
    /// `lead(x [, offset [, default]])`.
    Lead,
    FirstValue,
    LastValue,
    /// `nth_value(x, n)`.
    NthValue,
    /// An aggregate used as a window function (`sum(x) OVER (…)`), with its arguments,
    /// FILTER and result type in the call.
    Aggregate(Box<AggCall>),
}

impl WindowFunc {
    /// The function's name, an aggregate's included.
    pub fn name(&self) -> &str {
        match self {
            WindowFunc::RowNumber => "row_number",
            WindowFunc::Rank => "rank",
            WindowFunc::DenseRank => "dense_rank",
            WindowFunc::PercentRank => "percent_rank",
            WindowFunc::CumeDist => "cume_dist",
            WindowFunc::Ntile => "ntile",
            WindowFunc::Lag => "lag",
            WindowFunc::Lead => "lead",
            WindowFunc::FirstValue => "first_value",
            WindowFunc::LastValue => "last_value",
            WindowFunc::NthValue => "nth_value",
            WindowFunc::Aggregate(agg) => agg.func.name(),
        }
    }

    /// Whether the function reads a frame (value functions and aggregates) rather than the
    /// partition's order only.
    pub fn uses_frame(&self) -> bool {
        matches!(
            self,
            WindowFunc::FirstValue
                | WindowFunc::LastValue
                | WindowFunc::NthValue
                | WindowFunc::Aggregate(_)
        )
    }

    /// Whether the value depends only on peer groups (rows tying in the ORDER BY get the
    /// same value): the rank family.
    fn peer_based(&self) -> bool {
        matches!(
            self,
            WindowFunc::Rank
                | WindowFunc::DenseRank
                | WindowFunc::PercentRank
                | WindowFunc::CumeDist
        )
    }
}

/// One window call of a `Window` operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCall {
    pub func: WindowFunc,
    /// The arguments of the non-aggregate functions (an aggregate's are in its `AggCall`).
    pub args: Vec<Expr>,
    /// The window's ORDER BY.
    pub order_by: Vec<SortKey>,
    /// The frame of a frame-reading function (`Frame::DEFAULT` when none is written).
    pub frame: Frame,
    pub ty: ColType,
}

impl WindowCall {
    /// The frame the call is evaluated with: without ORDER BY every row is a peer of every
    /// other, so a RANGE or GROUPS frame is the whole partition.
    pub fn effective_frame(&self) -> Frame {
        if self.order_by.is_empty() && self.frame.units != FrameUnits::Rows {
            Frame::WHOLE
        } else {
            self.frame
        }
    }

    /// Whether the value depends on the order of rows that tie in the window's ORDER BY,
    /// so that the call is rendered with the input's columns as tie-breakers: functions of
    /// a row's position, and frame functions over a ROWS frame — except an aggregate that
    /// ignores order over the whole partition. RANGE and GROUPS frames are made of peer
    /// groups, which tie-breakers would split.
    pub fn tie_broken(&self) -> bool {
        if self.func.peer_based() {
            return false;
        }
        if !self.func.uses_frame() {
            return true;
        }
        let frame = self.effective_frame();
        if frame.units != FrameUnits::Rows {
            return false;
        }
        match &self.func {
            WindowFunc::Aggregate(agg) => frame != Frame::WHOLE || agg.order_sensitive(),
            _ => true,
        }
    }
}

/// `SELECT input.*, call_1 OVER (…), … FROM input`: one PARTITION BY for all calls, each
/// call with its own ORDER BY and frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub input: Box<Operator>,
    pub partition_by: Vec<Expr>,
    pub partition_types: Vec<ColType>,
    pub calls: Vec<WindowCall>,
}

/// The peer group of every row of a sorted partition: rows tying in every ORDER BY value
/// (`keys[i]` for row i) share a group.
fn peer_groups(keys: &[Row], order: &[SortKey]) -> Vec<usize> {
    let mut groups = Vec::with_capacity(keys.len());
    let mut g = 0;
    for i in 0..keys.len() {
        if i > 0 {
            let same = order
                .iter()
                .enumerate()
                .all(|(k, key)| compare_key(&keys[i - 1][k], &keys[i][k], key) == Ordering::Equal);
            if !same {
                g += 1;
            }
        }
        groups.push(g);
    }
    groups
}

fn int_arg(call: &WindowCall, i: usize, row: &Row, default: i64) -> Result<Option<i64>, EvalError> {
    match call.args.get(i) {
        None => Ok(Some(default)),
        Some(e) => match eval(e, row)? {
            Value::Int(n) => Ok(Some(n)),
            Value::Null => Ok(None),
            _ => Err(EvalError::InvalidInput("window function offset".into())),
        },
    }
}

impl Window {
    pub fn columns(&self) -> Vec<ColType> {
        let mut cols = self.input.columns();
        cols.extend(self.calls.iter().map(|c| c.ty.clone()));
        cols
    }

    fn with_input(&self, input: Operator) -> Operator {
        Operator::Window(Window {
            input: bx(input),
            ..self.clone()
        })
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        if !input.is_positive() {
            return Err(EvalError::Unsupported(
                "window over a non-positive Z-set".into(),
            ));
        }
        // Every copy of a row, numbered: copies are identical, so the `j`th copy in one
        // call's order is paired with the `j`th in another's.
        let mut partitions: BTreeMap<Row, Vec<(&Row, i64)>> = BTreeMap::new();
        for (row, w) in input.iter() {
            let key = self
                .partition_by
                .iter()
                .map(|k| eval(k, row))
                .collect::<Result<Row, _>>()?;
            let part = partitions.entry(key).or_default();
            for copy in 0..w {
                part.push((row, copy));
            }
        }
        let mut out = ZSet::new();
        for (_, entries) in partitions {
            let mut values: Vec<Row> = vec![Vec::new(); entries.len()];
            for call in &self.calls {
                let keys: Vec<Row> = entries
                    .iter()
                    .map(|(row, _)| {
                        call.order_by
                            .iter()
                            .map(|k| eval(&k.expr, row))
                            .collect::<Result<Row, _>>()
                    })
                    .collect::<Result<_, _>>()?;
                // The call's keys, then the whole row: the tie-breaking order of `tie_broken`.
                let mut order: Vec<usize> = (0..entries.len()).collect();
                order.sort_by(|&a, &b| {
                    for (k, key) in call.order_by.iter().enumerate() {
                        let o = compare_key(&keys[a][k], &keys[b][k], key);
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    entries[a].cmp(&entries[b])
                });
                let sorted_keys: Vec<Row> = order.iter().map(|&i| keys[i].clone()).collect();
                let rows: Vec<&Row> = order.iter().map(|&i| entries[i].0).collect();
                let peers = peer_groups(&sorted_keys, &call.order_by);
                let computed = call_values(call, &rows, &peers)?;
                for (pos, v) in computed.into_iter().enumerate() {
                    values[order[pos]].push(v);
                }
            }
            for ((row, _), extra) in entries.iter().zip(values) {
                let mut r = (*row).clone();
                r.extend(extra);
                out.add(r, 1);
            }
        }
        Ok(out)
    }
}

/// The frame of row `i` of a sorted partition of `n` rows as a range of positions (possibly
/// empty).
fn frame_range(
    frame: Frame,
    i: usize,
    n: usize,
    peers: &[usize],
) -> Result<std::ops::Range<usize>, EvalError> {
    let to_usize = |x: i64| usize::try_from(x.max(0)).unwrap_or(usize::MAX);
    let group_start = |g: usize| peers.iter().position(|p| *p == g).unwrap_or(n);
    let group_end = |g: usize| peers.iter().rposition(|p| *p == g).map_or(0, |p| p + 1);
    let last_group = peers.last().copied().unwrap_or(0);
    let start = match (frame.units, frame.start) {
        (_, FrameBound::UnboundedPreceding) => 0,
        (FrameUnits::Rows, FrameBound::Preceding(k)) => i.saturating_sub(to_usize(k)),
        (FrameUnits::Rows, FrameBound::CurrentRow) => i,
        (FrameUnits::Rows, FrameBound::Following(k)) => i.saturating_add(to_usize(k)).min(n),
        (FrameUnits::Range | FrameUnits::Groups, FrameBound::CurrentRow) => group_start(peers[i]),
        (FrameUnits::Groups, FrameBound::Preceding(k)) => {
            group_start(peers[i].saturating_sub(to_usize(k)))
        }
        (FrameUnits::Groups, FrameBound::Following(k)) => {
            let g = peers[i].saturating_add(to_usize(k));
            if g > last_group {
                n
            } else {
                group_start(g)
            }
        }
        (_, FrameBound::UnboundedFollowing) => n,
        (FrameUnits::Range, _) => {
            return Err(EvalError::Unsupported("RANGE frame with an offset".into()))
        }
    };
    let end = match (frame.units, frame.end) {
        (_, FrameBound::UnboundedFollowing) => n,
        (FrameUnits::Rows, FrameBound::Preceding(k)) => {
            let k = to_usize(k);
            if k > i {
                0
            } else {
                i - k + 1
            }
        }
        (FrameUnits::Rows, FrameBound::CurrentRow) => i + 1,
        (FrameUnits::Rows, FrameBound::Following(k)) => {
            i.saturating_add(to_usize(k)).saturating_add(1).min(n)
        }
        (FrameUnits::Range | FrameUnits::Groups, FrameBound::CurrentRow) => group_end(peers[i]),
        (FrameUnits::Groups, FrameBound::Preceding(k)) => {
            let k = to_usize(k);
            if k > peers[i] {
                0
            } else {
                group_end(peers[i] - k)
            }
        }
        (FrameUnits::Groups, FrameBound::Following(k)) => {
            group_end(peers[i].saturating_add(to_usize(k)).min(last_group))
        }
        (_, FrameBound::UnboundedPreceding) => 0,
        (FrameUnits::Range, _) => {
            return Err(EvalError::Unsupported("RANGE frame with an offset".into()))
        }
    };
    Ok(start..end.max(start))
}

/// The values of `call` for the rows of one partition, sorted in the call's order.
fn call_values(call: &WindowCall, rows: &[&Row], peers: &[usize]) -> Result<Vec<Value>, EvalError> {
    let n = rows.len();
    let count = i64::try_from(n).map_err(|_| EvalError::Overflow)?;
    let pos = |i: usize| i64::try_from(i).unwrap_or(i64::MAX);
    let mut out = Vec::with_capacity(n);
    let frame = call.effective_frame();
    for i in 0..n {
        let row = rows[i];
        let group_first = peers.iter().position(|p| *p == peers[i]).unwrap_or(i);
        let group_last = peers.iter().rposition(|p| *p == peers[i]).unwrap_or(i);
        let v = match &call.func {
            WindowFunc::RowNumber => Value::Int(pos(i) + 1),
            WindowFunc::Rank => Value::Int(pos(group_first) + 1),
            WindowFunc::DenseRank => Value::Int(pos(peers[i]) + 1),
            #[allow(clippy::cast_precision_loss)]
            WindowFunc::PercentRank => Value::float(if n <= 1 {
                0.0
            } else {
                pos(group_first) as f64 / (count - 1) as f64
            }),
            #[allow(clippy::cast_precision_loss)]
            WindowFunc::CumeDist => Value::float((pos(group_last) + 1) as f64 / count as f64),
            WindowFunc::Ntile => match int_arg(call, 0, row, 1)? {
                None => Value::Null,
                Some(b) if b <= 0 => {
                    return Err(EvalError::InvalidInput(
                        "argument of ntile must be greater than zero".into(),
                    ))
                }
                Some(b) => {
                    // PostgreSQL: the first n % b buckets get one row more.
                    let per = count / b;
                    let extra = count % b;
                    let i = pos(i);
                    let big = extra * (per + 1);
                    Value::Int(if i < big {
                        i / (per + 1) + 1
                    } else {
                        extra + (i - big) / per.max(1) + 1
                    })
                }
            },
            WindowFunc::Lag | WindowFunc::Lead => match int_arg(call, 1, row, 1)? {
                None => Value::Null,
                Some(off) => {
                    let target = if call.func == WindowFunc::Lag {
                        pos(i) - off
                    } else {
                        pos(i) + off
                    };
                    match usize::try_from(target).ok().filter(|t| *t < n) {
                        Some(t) => eval(&call.args[0], rows[t])?,
                        None => match call.args.get(2) {
                            Some(d) => eval(d, row)?,
                            None => Value::Null,
                        },
                    }
                }
            },
            WindowFunc::FirstValue | WindowFunc::LastValue | WindowFunc::NthValue => {
                let range = frame_range(frame, i, n, peers)?;
                let pick = match call.func {
                    WindowFunc::FirstValue => Some(range.start),
                    WindowFunc::LastValue => range.end.checked_sub(1),
                    _ => match int_arg(call, 1, row, 1)? {
                        None => None,
                        Some(k) if k <= 0 => {
                            return Err(EvalError::InvalidInput(
                                "argument of nth_value must be greater than zero".into(),
                            ))
                        }
                        Some(k) => usize::try_from(k - 1).ok().map(|k| range.start + k),
                    },
                };
                match pick.filter(|p| range.contains(p)) {
                    Some(p) => eval(&call.args[0], rows[p])?,
                    None => Value::Null,
                }
            }
            WindowFunc::Aggregate(agg) => {
                let range = frame_range(frame, i, n, peers)?;
                let in_frame: Vec<(&Row, i64)> = rows[range].iter().map(|r| (*r, 1)).collect();
                agg.compute(&in_frame)?
            }
        };
        out.push(v);
    }
    Ok(out)
}

impl Window {
    pub fn delta(&self) -> Result<Operator, EngineError> {
        recompute_touched(
            (*self.input).clone(),
            &self.partition_by,
            &self.partition_types,
            |input| self.with_input(input),
        )
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let s = quote_ident("s");
        let arity = self.input.arity();
        // One row per copy: a window numbers and counts copies.
        let from = each_copy(w, &self.input)?;
        let r = |e: &Expr| render_expr(e, &|i| col_ref("s", i));
        let partition = if self.partition_by.is_empty() {
            String::new()
        } else {
            let keys: Vec<String> = self.partition_by.iter().map(&r).collect();
            format!("PARTITION BY {}", keys.join(", "))
        };
        let ties = tie_breakers(&self.input.columns());
        let mut cols = select_cols("s", arity, 0);
        for (j, call) in self.calls.iter().enumerate() {
            let mut keys: Vec<String> = call.order_by.iter().map(|k| k.sql(&r)).collect();
            if call.tie_broken() {
                keys.extend(ties.iter().cloned());
            }
            let mut spec = partition.clone();
            if !keys.is_empty() {
                if !spec.is_empty() {
                    spec.push(' ');
                }
                spec.push_str(&format!("ORDER BY {}", keys.join(", ")));
            }
            if call.func.uses_frame() {
                // Written out: a tie-broken ORDER BY would turn the default frame (all peers)
                // into a running one.
                spec.push(' ');
                spec.push_str(&call.effective_frame().sql());
            }
            let f = match &call.func {
                WindowFunc::Aggregate(agg) => super::aggregate::render_agg(agg, false),
                other => {
                    let args: Vec<String> = call.args.iter().map(&r).collect();
                    format!("{}({})", other.name(), args.join(", "))
                }
            };
            cols.push(format!(
                "CAST({f} OVER ({spec}) AS {}) AS {}",
                call.ty.ty.sql(),
                crate::render::col_name(arity + j)
            ));
        }
        Ok(Fragment {
            sql: format!("SELECT {} FROM {from} AS {s}", cols.join(", ")),
            weighted: false,
        })
    }
}
