//! Window function calls (`f(…) OVER (PARTITION BY … ORDER BY … [frame])`) and `DISTINCT ON`.
//!
//! A call in the select list becomes a placeholder `Column(WIN_BASE + j)`; once the
//! aggregate and HAVING (if any) are planned, the calls are grouped by their PARTITION BY and
//! ORDER BY into `Window` operators stacked over the input, and the placeholders become the
//! columns those append (`Planner::windowed`). `DISTINCT ON (d…) … ORDER BY d…, o…` is one
//! more window: `row_number() OVER (PARTITION BY d… ORDER BY o…) = 1` (`Planner::distinct_on`).
//!
//! A named window (`OVER w`, `OVER (w ORDER BY …)` with `WINDOW w AS (…)`) is resolved to its
//! specification first.
//!
//! What is refused (FULL in AUTO, 0A000 otherwise), each with its reason: a call outside the
//! select list, a frame offset that is no integer constant, `EXCLUDE`, a
//! window call inside another one or with a subquery, an aggregate with DISTINCT or ORDER BY
//! inside its call, `first_value` / `last_value` / `nth_value` whose RANGE or GROUPS frame
//! would pick one row among peers (the order of ties is not defined: a ROWS frame is), a
//! window function PostgreSQL has that the engine does not know, and windows in a
//! grouping-sets query.

use sqlparser::ast;

use super::conditions::has_subquery;
use super::expr::{aggregate_func, Typed};
use super::scope::Scope;
use super::Planner;
use crate::catalog::AggregateKind;
use crate::error::{EngineError, Reason};
use crate::expr::{BinOp, Expr};
use crate::operator::{
    bx, AggCall, AggFunc, ColType, Filter, Frame, FrameBound, FrameUnits, Operator, SortKey, TopK,
    Window, WindowCall, WindowFunc,
};
use crate::types::{common_type, SqlType};

/// Window call placeholders are `Column(WIN_BASE + j)` until `windowed` places the calls.
pub const WIN_BASE: usize = 1 << 48;

/// A window call of the select list, over the rows the window reads (the input, or the
/// aggregate's placeholders in an aggregate query).
#[derive(Debug, Clone)]
pub(crate) struct PendingWindow {
    pub(crate) partition_by: Vec<Typed>,
    pub(crate) call: WindowCall,
}

fn refuse(name: &str, detail: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::WindowFunction {
        name: name.to_string(),
        detail: detail.to_string(),
    })
}

/// A non-negative integer constant, as frame offsets and LIMIT counts must be here.
fn non_negative_int(e: &ast::Expr) -> Option<i64> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<i64>().ok().filter(|k| *k >= 0),
            _ => None,
        },
        _ => None,
    }
}

/// A frame offset: a non-negative integer constant.
fn offset(e: &ast::Expr, name: &str) -> Result<i64, EngineError> {
    non_negative_int(e).ok_or_else(|| {
        refuse(
            name,
            "a frame offset that is not a non-negative integer constant",
        )
    })
}

fn frame_bound(b: &ast::WindowFrameBound, name: &str) -> Result<FrameBound, EngineError> {
    Ok(match b {
        ast::WindowFrameBound::CurrentRow => FrameBound::CurrentRow,
        ast::WindowFrameBound::Preceding(None) => FrameBound::UnboundedPreceding,
        ast::WindowFrameBound::Following(None) => FrameBound::UnboundedFollowing,
        ast::WindowFrameBound::Preceding(Some(e)) => FrameBound::Preceding(offset(e, name)?),
        ast::WindowFrameBound::Following(Some(e)) => FrameBound::Following(offset(e, name)?),
    })
}

fn frame(f: Option<&ast::WindowFrame>, name: &str) -> Result<Frame, EngineError> {
    let Some(f) = f else {
        return Ok(Frame::DEFAULT);
    };
    let units = match f.units {
        ast::WindowFrameUnits::Rows => FrameUnits::Rows,
        ast::WindowFrameUnits::Range => FrameUnits::Range,
        ast::WindowFrameUnits::Groups => FrameUnits::Groups,
    };
    let start = frame_bound(&f.start_bound, name)?;
    let end = match &f.end_bound {
        Some(b) => frame_bound(b, name)?,
        None => FrameBound::CurrentRow,
    };
    Ok(Frame { units, start, end })
}

/// The frame `first_value` / `last_value` / `nth_value` is evaluated with. A RANGE or GROUPS
/// frame is made of peer groups, and which of several peers comes first is not defined; where
/// the frame always holds the current row and starts at the partition's first row (ends at
/// its last), `first_value` (`last_value`) is that row, which the equivalent ROWS frame names
/// under the window's tie-breaking order. Otherwise `None`.
fn value_frame(func: &WindowFunc, f: Frame, ordered: bool) -> Option<Frame> {
    if f.units == FrameUnits::Rows || !ordered {
        return Some(f);
    }
    let holds_current_after = |b: FrameBound| {
        matches!(
            b,
            FrameBound::CurrentRow | FrameBound::Following(_) | FrameBound::UnboundedFollowing
        )
    };
    let holds_current_before = |b: FrameBound| {
        matches!(
            b,
            FrameBound::CurrentRow | FrameBound::Preceding(_) | FrameBound::UnboundedPreceding
        )
    };
    match func {
        WindowFunc::FirstValue
            if f.start == FrameBound::UnboundedPreceding && holds_current_after(f.end) =>
        {
            Some(Frame {
                units: FrameUnits::Rows,
                start: FrameBound::UnboundedPreceding,
                end: FrameBound::CurrentRow,
            })
        }
        WindowFunc::LastValue
            if f.end == FrameBound::UnboundedFollowing && holds_current_before(f.start) =>
        {
            Some(Frame {
                units: FrameUnits::Rows,
                start: FrameBound::CurrentRow,
                end: FrameBound::UnboundedFollowing,
            })
        }
        _ => None,
    }
}

impl Planner<'_> {
    /// One window call of the select list; `aggs` collects the aggregates its arguments and
    /// keys read in an aggregate query.
    pub(crate) fn window_call(
        &mut self,
        f: &ast::Function,
        schema: Option<String>,
        name: String,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<Typed, EngineError> {
        let Some(over) = &f.over else {
            return Err(EngineError::internal("window_call without OVER"));
        };
        let spec = self.resolve_window(over, &name, 0)?;
        // Taken while the call is planned: a window call inside it is refused.
        let Some(mut pending) = self.windows.take() else {
            return Err(refuse(&name, "a window call outside the select list"));
        };
        let planned = self.window_parts(f, &spec, schema, &name, scope, aggs);
        let planned = planned.map(|p| {
            let ty = p.call.ty.clone();
            pending.push(p);
            (Expr::Column(WIN_BASE + pending.len() - 1), ty)
        });
        self.windows = Some(pending);
        planned
    }

    /// The window specification `over` names: its own, or a named window of the SELECT's
    /// WINDOW clause that it refers to (and may extend with ORDER BY and a frame, as PostgreSQL
    /// allows and checks).
    fn resolve_window(
        &self,
        over: &ast::WindowType,
        name: &str,
        depth: usize,
    ) -> Result<ast::WindowSpec, EngineError> {
        let lookup = |w: &ast::Ident| -> Result<ast::WindowSpec, EngineError> {
            let wanted = super::fold(w);
            let found = self
                .named_windows
                .iter()
                .find(|d| super::fold(&d.0) == wanted)
                .ok_or_else(|| EngineError::InvalidDefiningQuery {
                    message: format!("window \"{wanted}\" does not exist"),
                })?;
            if depth > self.named_windows.len() {
                return Err(refuse(name, "a circular WINDOW clause"));
            }
            match &found.1 {
                ast::NamedWindowExpr::WindowSpec(spec) => {
                    self.resolve_window(&ast::WindowType::WindowSpec(spec.clone()), name, depth + 1)
                }
                ast::NamedWindowExpr::NamedWindow(other) => self.resolve_window(
                    &ast::WindowType::NamedWindow(other.clone()),
                    name,
                    depth + 1,
                ),
            }
        };
        match over {
            ast::WindowType::NamedWindow(w) => lookup(w),
            ast::WindowType::WindowSpec(spec) => match &spec.window_name {
                None => Ok(spec.clone()),
                Some(w) => {
                    let base = lookup(w)?;
                    Ok(ast::WindowSpec {
                        window_name: None,
                        partition_by: base.partition_by,
                        order_by: if spec.order_by.is_empty() {
                            base.order_by
                        } else {
                            spec.order_by.clone()
                        },
                        window_frame: spec.window_frame.clone().or(base.window_frame),
                    })
                }
            },
        }
    }

    fn window_parts(
        &mut self,
        f: &ast::Function,
        spec: &ast::WindowSpec,
        schema: Option<String>,
        name: &str,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<PendingWindow, EngineError> {
        let mut asts: Vec<&ast::Expr> = spec.partition_by.iter().collect();
        asts.extend(spec.order_by.iter().map(|o| &o.expr));
        if let ast::FunctionArguments::List(list) = &f.args {
            asts.extend(list.args.iter().filter_map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => Some(x),
                _ => None,
            }));
        }
        asts.extend(f.filter.as_deref());
        if asts.iter().any(|e| has_subquery(e)) {
            return Err(refuse(name, "a subquery inside the call"));
        }
        if !f.within_group.is_empty() {
            return Err(refuse(name, "WITHIN GROUP"));
        }
        let mut partition_by = Vec::new();
        for p in &spec.partition_by {
            partition_by.push(self.expr(p, scope, aggs)?);
        }
        let mut order_by = Vec::new();
        for o in &spec.order_by {
            let (x, _) = self.expr(&o.expr, scope, aggs)?;
            let desc = match &o.options.sort {
                None | Some(ast::OrderBySort::Asc) => false,
                Some(ast::OrderBySort::Desc) => true,
                Some(ast::OrderBySort::Using(_)) => {
                    return Err(refuse(name, "ORDER BY … USING in its window"))
                }
            };
            order_by.push(SortKey {
                expr: x,
                desc,
                nulls_first: o.options.nulls_first,
            });
        }
        let ordered = !order_by.is_empty();
        let written = frame(spec.window_frame.as_ref(), name)?;
        let kind = self.catalog.function_kind(schema.as_deref(), name);
        let builtin = if schema.is_none() {
            match name {
                "row_number" => Some(WindowFunc::RowNumber),
                "rank" => Some(WindowFunc::Rank),
                "dense_rank" => Some(WindowFunc::DenseRank),
                "percent_rank" => Some(WindowFunc::PercentRank),
                "cume_dist" => Some(WindowFunc::CumeDist),
                "ntile" => Some(WindowFunc::Ntile),
                "lag" => Some(WindowFunc::Lag),
                "lead" => Some(WindowFunc::Lead),
                "first_value" => Some(WindowFunc::FirstValue),
                "last_value" => Some(WindowFunc::LastValue),
                "nth_value" => Some(WindowFunc::NthValue),
                _ => None,
            }
        } else {
            None
        };
        let call = if let Some(func) = builtin {
            if f.filter.is_some() {
                return Err(EngineError::InvalidDefiningQuery {
                    message: format!(
                        "FILTER is not implemented for non-aggregate window functions ({name})"
                    ),
                });
            }
            let (args, star, distinct, inner_order) = self.args(f, scope, aggs)?;
            if star || distinct || !inner_order.is_empty() {
                return Err(refuse(name, "DISTINCT, * or ORDER BY inside the call"));
            }
            let types: Vec<SqlType> = args.iter().map(|a| a.1.ty.clone()).collect();
            let arity_ok = match func {
                WindowFunc::RowNumber
                | WindowFunc::Rank
                | WindowFunc::DenseRank
                | WindowFunc::PercentRank
                | WindowFunc::CumeDist => args.is_empty(),
                WindowFunc::Ntile | WindowFunc::FirstValue | WindowFunc::LastValue => {
                    args.len() == 1
                }
                WindowFunc::NthValue => args.len() == 2,
                WindowFunc::Lag | WindowFunc::Lead => (1..=3).contains(&args.len()),
                WindowFunc::Aggregate(_) => false,
            };
            if !arity_ok {
                return Err(EngineError::UndefinedFunction {
                    name: format!("{name} with {} argument(s)", args.len()),
                });
            }
            let ty = match func {
                WindowFunc::RowNumber | WindowFunc::Rank | WindowFunc::DenseRank => {
                    ColType::new(SqlType::int8(), false)
                }
                WindowFunc::PercentRank | WindowFunc::CumeDist => {
                    ColType::new(SqlType::float8(), false)
                }
                WindowFunc::Ntile => ColType::new(SqlType::int4(), true),
                WindowFunc::Lag | WindowFunc::Lead if args.len() == 3 => {
                    ColType::new(common_type(&[types[0].clone(), types[2].clone()]), true)
                }
                _ => ColType::new(types[0].clone(), true),
            };
            let frame = if func.uses_frame() {
                value_frame(&func, written, ordered).ok_or_else(|| {
                    refuse(
                        name,
                        "a RANGE or GROUPS frame from which it picks one of several rows that tie in the window's ORDER BY (write a ROWS frame)",
                    )
                })?
            } else {
                Frame::DEFAULT
            };
            let mut exprs: Vec<Expr> = args.into_iter().map(|a| a.0).collect();
            if matches!(func, WindowFunc::Lag | WindowFunc::Lead) && exprs.len() == 3 {
                // The default is of the result's type.
                if types[2] != ty.ty {
                    exprs[2] = Expr::Cast {
                        arg: Box::new(exprs[2].clone()),
                        ty: ty.ty.clone(),
                    };
                }
            }
            WindowCall {
                func,
                args: exprs,
                order_by: order_by.clone(),
                frame,
                ty,
            }
        } else {
            let is_aggregate = (schema.is_none() && aggregate_func(name).is_some())
                || kind.aggregate == Some(AggregateKind::Normal);
            if !is_aggregate {
                return Err(refuse(name, "a window function the engine does not know"));
            }
            if let ast::FunctionArguments::List(list) = &f.args {
                if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                    return Err(refuse(name, "DISTINCT or ORDER BY inside the call"));
                }
            }
            let func = match (schema.is_none(), aggregate_func(name)) {
                (true, Some(func)) => func,
                _ => AggFunc::Other {
                    name: name.to_string(),
                    schema: schema.clone(),
                    duplicate_insensitive: false,
                },
            };
            // The aggregate as a GROUP BY would plan it, in a list of its own. Its arguments
            // see the rows the window reads; an aggregate of the query there
            // (`sum(sum(x)) OVER ()`) is not planned.
            let reads_aggregate = match &f.args {
                ast::FunctionArguments::List(list) => list.args.iter().any(|a| {
                    matches!(a, ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))
                        if super::conditions::nested(x).aggregate)
                }),
                _ => false,
            } || f
                .filter
                .as_deref()
                .is_some_and(|x| super::conditions::nested(x).aggregate);
            if reads_aggregate {
                return Err(refuse(
                    name,
                    "an aggregate of the query inside its arguments",
                ));
            }
            let mut own = Vec::new();
            let mut stripped = f.clone();
            stripped.over = None;
            self.aggregate(
                func,
                name.to_string(),
                &stripped,
                scope,
                &mut Some(&mut own),
            )?;
            let agg = own
                .pop()
                .ok_or_else(|| EngineError::internal("window aggregate not planned"))?;
            if agg.order_sensitive() {
                return Err(refuse(
                    name,
                    "an aggregate whose result depends on row order",
                ));
            }
            let ty = agg.ty.clone();
            WindowCall {
                func: WindowFunc::Aggregate(Box::new(agg)),
                args: Vec::new(),
                order_by: order_by.clone(),
                frame: written,
                ty,
            }
        };
        Ok(PendingWindow { partition_by, call })
    }

    /// Stacks the select list's window calls over `op` (one `Window` per PARTITION BY, in
    /// order of first appearance) and returns the expression replacing each
    /// placeholder. `rewrite` turns an expression over the query's input into one over `op`
    /// (the aggregate's output in an aggregate query).
    pub(crate) fn windowed(
        &self,
        op: Operator,
        pending: Vec<PendingWindow>,
        rewrite: &dyn Fn(&Expr) -> Result<Expr, EngineError>,
    ) -> Result<(Operator, Vec<Expr>), EngineError> {
        let mut op = op;
        let mut placed: Vec<Option<Expr>> = vec![None; pending.len()];
        let mut rest: Vec<(usize, PendingWindow)> = pending.into_iter().enumerate().collect();
        while let Some((_, first)) = rest.first().cloned() {
            let (same, other): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(_, p)| {
                p.partition_by
                    .iter()
                    .map(|t| &t.0)
                    .eq(first.partition_by.iter().map(|t| &t.0))
            });
            rest = other;
            // Over rows without a key, identical rows are told apart by nothing: two calls
            // numbering them in different orders would pair their values as PostgreSQL's
            // sorts happen to, which can differ between the terms of a delta.
            let numbered: Vec<&WindowCall> = same
                .iter()
                .map(|(_, p)| &p.call)
                .filter(|c| c.tie_broken())
                .collect();
            if let Some(other) = numbered.iter().find(|c| c.order_by != numbered[0].order_by) {
                if crate::keys::unique_key(&op, &self.tables).is_none() {
                    return Err(refuse(
                        other.func.name(),
                        "another call that numbers the rows of a keyless input in a different order",
                    ));
                }
            }
            let base = op.arity();
            let rw_key = |k: &SortKey| -> Result<SortKey, EngineError> {
                Ok(SortKey {
                    expr: rewrite(&k.expr)?,
                    ..k.clone()
                })
            };
            let mut calls = Vec::new();
            for (j, (index, p)) in same.iter().enumerate() {
                let mut call = p.call.clone();
                call.args = call.args.iter().map(rewrite).collect::<Result<_, _>>()?;
                call.order_by = call.order_by.iter().map(rw_key).collect::<Result<_, _>>()?;
                if let WindowFunc::Aggregate(a) = &mut call.func {
                    a.args = a.args.iter().map(rewrite).collect::<Result<_, _>>()?;
                    a.filter = a.filter.as_ref().map(rewrite).transpose()?;
                }
                placed[*index] = Some(Expr::Column(base + j));
                calls.push(call);
            }
            op = Operator::Window(Window {
                input: bx(op),
                partition_by: first
                    .partition_by
                    .iter()
                    .map(|t| rewrite(&t.0))
                    .collect::<Result<_, _>>()?,
                partition_types: first.partition_by.iter().map(|t| t.1.clone()).collect(),
                calls,
            });
        }
        let placed = placed
            .into_iter()
            .map(|p| p.ok_or_else(|| EngineError::internal("window call not placed")))
            .collect::<Result<_, _>>()?;
        Ok((op, placed))
    }
}

/// `DISTINCT ON (keys) … ORDER BY order` over `op`: the first row of every partition of
/// `keys`, under `order` and then the tie-breaking order of the input's columns (PostgreSQL
/// keeps an unspecified one of the rows that tie; this is one of them, the same in every
/// evaluation). `rewrite` turns the keys into expressions over `op`.
pub(crate) fn first_per_partition(
    op: Operator,
    keys: Vec<Typed>,
    order: Vec<SortKey>,
    rewrite: &dyn Fn(&Expr) -> Result<Expr, EngineError>,
) -> Result<Operator, EngineError> {
    let arity = op.arity();
    let window = Operator::Window(Window {
        input: bx(op),
        partition_by: keys
            .iter()
            .map(|k| rewrite(&k.0))
            .collect::<Result<_, _>>()?,
        partition_types: keys.iter().map(|k| k.1.clone()).collect(),
        calls: vec![WindowCall {
            func: WindowFunc::RowNumber,
            args: Vec::new(),
            order_by: order
                .iter()
                .map(|k| {
                    Ok(SortKey {
                        expr: rewrite(&k.expr)?,
                        ..k.clone()
                    })
                })
                .collect::<Result<_, EngineError>>()?,
            frame: Frame::DEFAULT,
            ty: ColType::new(SqlType::int8(), false),
        }],
    });
    Ok(Operator::Filter(Filter {
        input: bx(window),
        predicate: Expr::binary(BinOp::Eq, Expr::Column(arity), Expr::int(1)),
    }))
}

impl Planner<'_> {
    /// The keys of `DISTINCT ON (exprs)` and the ORDER BY that picks a partition's row: the
    /// query's ORDER BY without the keys themselves (constant within a partition). Each is
    /// an output column's position or name, or an expression of the input, as PostgreSQL
    /// resolves them.
    pub(crate) fn distinct_on_keys(
        &mut self,
        exprs: &[ast::Expr],
        order: &[ast::OrderByExpr],
        scope: &Scope,
        aggs: &mut Vec<AggCall>,
        items: &[(Expr, ColType, String)],
    ) -> Result<(Vec<Typed>, Vec<SortKey>), EngineError> {
        let mut keys = Vec::new();
        for e in exprs {
            keys.push(self.output_or_input(e, scope, aggs, items, "SELECT DISTINCT ON")?);
        }
        let sort: Vec<SortKey> = self
            .order_keys(order, scope, aggs, items, "DISTINCT ON")?
            .into_iter()
            .filter(|k| !keys.iter().any(|d| d.0 == k.expr))
            .collect();
        if keys
            .iter()
            .map(|k| &k.0)
            .chain(sort.iter().map(|k| &k.expr))
            .any(contains_window)
        {
            return Err(EngineError::NotDifferentiable(Reason::DistinctOn {
                detail: "a window function among its keys".to_string(),
            }));
        }
        Ok((keys, sort))
    }

    /// The query's ORDER BY as keys over the rows the select list reads (output columns by
    /// position or name, as PostgreSQL resolves them, or expressions of the input).
    pub(crate) fn order_keys(
        &mut self,
        order: &[ast::OrderByExpr],
        scope: &Scope,
        aggs: &mut Vec<AggCall>,
        items: &[(Expr, ColType, String)],
        what: &str,
    ) -> Result<Vec<SortKey>, EngineError> {
        let mut keys = Vec::new();
        for o in order {
            let (x, _) = self.output_or_input(&o.expr, scope, aggs, items, "ORDER BY")?;
            keys.push(sort_key(x, &o.options, what)?);
        }
        Ok(keys)
    }

    fn output_or_input(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        aggs: &mut Vec<AggCall>,
        items: &[(Expr, ColType, String)],
        clause: &str,
    ) -> Result<Typed, EngineError> {
        if let Some(item) = super::select_item_at(e, items, clause) {
            return item;
        }
        if let ast::Expr::Identifier(id) = e {
            let name = super::fold(id);
            let mut named = items.iter().filter(|i| i.2 == name);
            if let (Some(i), None) = (named.next(), named.next()) {
                return Ok((i.0.clone(), i.1.clone()));
            }
        }
        self.expr(e, scope, &mut Some(aggs))
    }
}

fn limit_refused(detail: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::LimitOrOffset {
        detail: detail.to_string(),
    })
}

/// A LIMIT or OFFSET count: a non-negative integer constant.
fn count(e: &ast::Expr) -> Result<i64, EngineError> {
    non_negative_int(e)
        .ok_or_else(|| limit_refused("a count that is not a non-negative integer constant"))
}

/// The `(offset, limit)` of a query's `LIMIT … OFFSET …` or `OFFSET … FETCH FIRST … ROWS
/// ONLY`; `None` without either (or with `LIMIT ALL` and no OFFSET). OFFSET without LIMIT is
/// refused: a top-level query keeps the rows after the first n of its order, which no bound
/// of the top rows describes.
pub(crate) fn limit_of(q: &ast::Query) -> Result<Option<(i64, i64)>, EngineError> {
    match bounds_of(q)? {
        Some((offset, Some(limit))) => Ok(Some((offset, limit))),
        Some((_, None)) => Err(limit_refused("an OFFSET but no LIMIT")),
        None => Ok(None),
    }
}

/// The `(offset, limit)` of a query's `LIMIT … OFFSET …` or `OFFSET … FETCH FIRST … ROWS
/// ONLY`, the limit `None` for `LIMIT ALL` or OFFSET alone; `None` without either. Counts are
/// non-negative integer constants.
pub(crate) fn bounds_of(q: &ast::Query) -> Result<Option<(i64, Option<i64>)>, EngineError> {
    let (limit, offset) = match &q.limit_clause {
        None => (None, None),
        Some(ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(limit_refused("BY"));
            }
            (limit.clone(), offset.as_ref().map(|o| o.value.clone()))
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => {
            (Some(limit.clone()), Some(offset.clone()))
        }
    };
    let limit =
        match (&q.fetch, limit) {
            (Some(_), Some(_)) => return Err(limit_refused("both LIMIT and FETCH")),
            (Some(f), None) => {
                if f.with_ties || f.percent {
                    return Err(limit_refused("WITH TIES or PERCENT"));
                }
                Some(f.quantity.clone().unwrap_or_else(|| {
                    ast::Expr::Value(ast::Value::Number("1".into(), false).into())
                }))
            }
            (None, l) => l,
        };
    // `LIMIT ALL` / `LIMIT NULL`: no limit.
    let limit =
        limit.filter(|l| !matches!(l, ast::Expr::Value(v) if matches!(v.value, ast::Value::Null)));
    let offset = offset.as_ref().map(count).transpose()?.unwrap_or(0);
    let limit = limit.as_ref().map(count).transpose()?;
    Ok((limit.is_some() || offset > 0).then_some((offset, limit)))
}

/// `planned` (a set operation, a parenthesised query…) under `ORDER BY order LIMIT limit
/// OFFSET offset`, each ORDER BY item an output column's position or name.
pub(crate) fn top_of_output(
    planned: super::Planned,
    order: &[ast::OrderByExpr],
    offset: i64,
    limit: i64,
) -> Result<super::Planned, EngineError> {
    let mut keys = Vec::new();
    for o in order {
        let position = match &o.expr {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => n.parse::<usize>().ok().and_then(|p| p.checked_sub(1)),
                _ => None,
            },
            ast::Expr::Identifier(id) => {
                let name = super::fold(id);
                planned.names.iter().position(|n| *n == name)
            }
            _ => None,
        };
        let Some(position) = position.filter(|p| *p < planned.names.len()) else {
            return Err(limit_refused(
                "an ORDER BY item that is not an output column",
            ));
        };
        keys.push(sort_key(Expr::Column(position), &o.options, "LIMIT")?);
    }
    Ok(super::Planned {
        op: Operator::TopK(TopK {
            input: bx(planned.op),
            order_by: keys,
            offset,
            limit,
            widen_by: None,
        }),
        names: planned.names,
    })
}

/// An ORDER BY key with its direction and NULLS placement; `USING` is refused.
fn sort_key(expr: Expr, options: &ast::OrderByOptions, what: &str) -> Result<SortKey, EngineError> {
    let desc = match &options.sort {
        None | Some(ast::OrderBySort::Asc) => false,
        Some(ast::OrderBySort::Desc) => true,
        Some(ast::OrderBySort::Using(_)) => {
            return Err(EngineError::NotDifferentiable(Reason::Construct {
                construct: format!("ORDER BY … USING with {what}"),
            }))
        }
    };
    Ok(SortKey {
        expr,
        desc,
        nulls_first: options.nulls_first,
    })
}

/// Replaces window placeholders in `e` by the expressions `windowed` placed them at.
pub(crate) fn place_windows(e: &Expr, placed: &[Expr]) -> Expr {
    e.transform(&mut |x| match x {
        Expr::Column(c) if *c >= WIN_BASE => placed.get(c - WIN_BASE).cloned(),
        _ => None,
    })
}

/// Whether `e` reads a window placeholder.
pub(crate) fn contains_window(e: &Expr) -> bool {
    let mut found = false;
    e.visit(&mut |x| {
        if let Expr::Column(c) = x {
            found |= (WIN_BASE..super::scope::SRF_BASE).contains(c);
        }
    });
    found
}
