//! Expressions the engine does not model pass through as PostgreSQL text (`Expr::Sql`): the
//! parsed expression is printed with a hole in place of every column reference and aggregate
//! call, which are planned as usual, so column pruning, join pushdown and the GROUP BY
//! rewrite see them. PostgreSQL evaluates the rest.
//! Invariants: only deterministic expressions pass through — a function the engine knows to
//! be volatile or non-repeatable is refused here, and the extension refuses any defining
//! query in which PostgreSQL's own analysis finds a function that is not IMMUTABLE; a scalar
//! subquery inside such an expression is planned like a column (a hole), any other subquery
//! is refused (it would hide a source from the delta rules); the type of the expression is
//! PostgreSQL's (`Catalog::expression_type`) or, for the few forms whose type does not depend
//! on their arguments, known here — otherwise the expression is refused, never guessed.

use std::ops::ControlFlow;

use sqlparser::ast::{self, VisitMut, VisitorMut};

use super::expr::Typed;
use super::scope::Scope;
use super::{call_name, fold, Planner};
use crate::catalog::{
    builtin_function, builtin_function_kind, FunctionKind, Volatility, NON_REPEATABLE_FUNCTIONS,
};
use crate::error::{EngineError, Reason};
use crate::expr::Expr;
use crate::operator::{AggCall, ColType};
use crate::types::SqlType;

/// Hole `i` as a quoted identifier (`names::hole`; the reserved prefix is refused in the
/// expression itself, so the printed text holds no other).
fn hole(i: usize) -> ast::Ident {
    ast::Ident::with_quote('"', crate::names::hole(i))
}

struct Holes<'p, 'a, 's, 'g, 'v> {
    planner: &'p mut Planner<'a>,
    scope: &'s Scope,
    aggs: &'g mut Option<&'v mut Vec<AggCall>>,
    args: Vec<Typed>,
}

impl Holes<'_, '_, '_, '_, '_> {
    /// Plans `e` (a column reference or an aggregate call) and puts a hole in its place.
    fn fill(&mut self, e: &mut ast::Expr) -> ControlFlow<EngineError> {
        match self.planner.expr(e, self.scope, self.aggs) {
            Ok(typed) => {
                *e = ast::Expr::Identifier(hole(self.args.len()));
                self.args.push(typed);
                ControlFlow::Continue(())
            }
            Err(err) => ControlFlow::Break(err),
        }
    }
}

/// Whether `f` is an aggregate or window call (planned by the engine, not passed through).
/// Built-in aggregates and any call with FILTER or WITHIN GROUP are recognised by name and
/// form; a user-defined aggregate only through the catalog ([`Planner::is_catalog_aggregate`]).
pub(crate) fn is_aggregate_call(f: &ast::Function) -> bool {
    f.over.is_some()
        || f.filter.is_some()
        || !f.within_group.is_empty()
        || call_name(f)
            .is_some_and(|(s, n)| s.is_none() && builtin_function_kind(&n).aggregate.is_some())
}

impl Planner<'_> {
    /// What the catalog says of the function `f` calls.
    pub(crate) fn kind_of(&self, f: &ast::Function) -> FunctionKind {
        call_name(f)
            .map(|(s, n)| self.catalog.function_kind(s.as_deref(), &n))
            .unwrap_or_default()
    }

    /// Whether the catalog knows `f` as an aggregate (user-defined ones included).
    pub(crate) fn is_catalog_aggregate(&self, f: &ast::Function) -> bool {
        is_aggregate_call(f) || self.kind_of(f).aggregate.is_some()
    }
}

/// Refuses a call of a function the engine knows not to be repeatable between refreshes.
pub(crate) fn check_repeatable(f: &ast::Function) -> Result<(), EngineError> {
    let name = match f.name.0.last() {
        Some(ast::ObjectNamePart::Identifier(id)) => fold(id),
        _ => return Ok(()),
    };
    let volatile =
        builtin_function(&name, &[]).is_some_and(|i| i.volatility != Volatility::Immutable);
    if volatile || NON_REPEATABLE_FUNCTIONS.contains(&name.as_str()) {
        return Err(EngineError::NotDifferentiable(Reason::VolatileFunction {
            name,
        }));
    }
    Ok(())
}

impl VisitorMut for Holes<'_, '_, '_, '_, '_> {
    type Break = EngineError;

    /// A subquery left inside the expression (`ARRAY(SELECT …)`, `x = ANY (SELECT …)`, …)
    /// reads tables the delta rules would never see, and its names would be resolved here as
    /// the outer query's: refused. (A scalar subquery is planned and became a hole before.)
    fn pre_visit_query(&mut self, _: &mut ast::Query) -> ControlFlow<EngineError> {
        ControlFlow::Break(EngineError::NotDifferentiable(Reason::SubqueryInExpression))
    }

    fn pre_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<EngineError> {
        match e {
            ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) => self.fill(e),
            ast::Expr::Function(f) if self.planner.is_catalog_aggregate(f) => self.fill(e),
            ast::Expr::Function(f) => match check_repeatable(f) {
                Ok(()) if self.planner.kind_of(f).set_returning => ControlFlow::Break(
                    EngineError::NotDifferentiable(Reason::SetReturningFunction {
                        name: call_name(f).map(|(_, n)| n).unwrap_or_default(),
                    }),
                ),
                Ok(()) => ControlFlow::Continue(()),
                Err(err) => ControlFlow::Break(err),
            },
            // A scalar subquery is planned (decorrelated) and becomes a hole like a column.
            ast::Expr::Subquery(_) => self.fill(e),
            ast::Expr::Exists { .. } | ast::Expr::InSubquery { .. } => {
                ControlFlow::Break(EngineError::NotDifferentiable(Reason::SubqueryInExpression))
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// The type of the forms whose result type does not depend on their arguments (PostgreSQL
/// 15), for a catalog that cannot ask PostgreSQL.
fn known_type(e: &ast::Expr) -> Option<SqlType> {
    use ast::Expr as E;
    Some(match e {
        E::Extract { .. } => SqlType::numeric(),
        E::Substring { .. } | E::Trim { .. } | E::Overlay { .. } => SqlType::text(),
        E::Position { .. } => SqlType::int4(),
        E::Interval(_) => SqlType::new("interval"),
        E::Like { .. } | E::ILike { .. } | E::SimilarTo { .. } | E::RLike { .. } => SqlType::bool(),
        E::Nested(inner) => return known_type(inner),
        _ => return None,
    })
}

impl Planner<'_> {
    /// `e` as an `Expr::Sql` over holes for its columns and aggregates, typed by the
    /// catalog (see the module invariants).
    pub(crate) fn pass_through(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<Typed, EngineError> {
        let refused = || {
            EngineError::NotDifferentiable(Reason::Construct {
                construct: format!("expression {e}"),
            })
        };
        let original = e.to_string();
        if original.contains(crate::names::HIDDEN_PREFIX) {
            return Err(refused());
        }
        let mut printed = e.clone();
        let args = {
            let mut holes = Holes {
                planner: self,
                scope,
                aggs,
                args: Vec::new(),
            };
            if let ControlFlow::Break(err) = printed.visit(&mut holes) {
                return Err(err);
            }
            holes.args
        };
        let text = printed.to_string();
        let mut parts = Vec::with_capacity(args.len() + 1);
        let mut rest = text.as_str();
        for i in 0..args.len() {
            let h = hole(i).to_string();
            let (before, after) = rest.split_once(&h).ok_or_else(|| {
                EngineError::internal(format!("hole {i} of a passed-through expression"))
            })?;
            parts.push(before.to_string());
            rest = after;
        }
        parts.push(rest.to_string());
        // What PostgreSQL makes of it with NULLs of the holes' types.
        let mut probe = String::new();
        for (i, part) in parts.iter().enumerate() {
            probe.push_str(part);
            if let Some((_, t)) = args.get(i) {
                probe.push_str(&format!("(CAST(NULL AS {}))", t.ty.sql()));
            }
        }
        let ty = match self.catalog.expression_type(&probe) {
            Some(t) => SqlType::new(&t),
            None => known_type(e).ok_or_else(refused)?,
        };
        let (exprs, _types): (Vec<Expr>, Vec<ColType>) = args.into_iter().unzip();
        Ok((Expr::Sql { parts, args: exprs }, ColType::new(ty, true)))
    }
}
