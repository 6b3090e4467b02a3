//! Conditions and subqueries: the conjuncts of a WHERE (pushed as deep as inner joins allow),
//! top-level [NOT] EXISTS / [NOT] IN as semi and anti joins, scalar subqueries decorrelated
//! into joins with aggregates, and EXISTS / IN inside expressions rewritten as counts.
//! Invariants: a predicate is pushed only through inner joins (never into an outer join's
//! input); NOT IN is planned as an anti join on `(x = y) IS NOT FALSE`, which keeps its NULL
//! semantics (never true when the subquery yields a NULL).
//!
//! Scalar subqueries (`attach_scalar`). A subquery without GROUP BY, HAVING, DISTINCT or
//! LIMIT is accepted. With an aggregate it yields exactly one row for every outer row; without
//! one only where its correlation is a unique key of its table (`covers_key`: at most one
//! row), aggregated by `min` (`single_value`). With the correlation
//! `o₁ = i₁ AND … AND oₙ = iₙ` (outer expressions oⱼ, inner expressions iⱼ) and the remaining
//! conditions W local to the subquery, `(SELECT f(agg) FROM R WHERE W AND o = i)` is
//! `L ⟕ Agg_{i}(σ_W R) ON o = k`, the value being `f` over the aggregate columns of the joined
//! row; where no group matches, the padded NULLs are the aggregates over no rows except for
//! COUNT, which is wrapped `COALESCE(count, 0)`. A NULL oⱼ matches no group, as `o = i` selects
//! no row. Uncorrelated (n = 0), `Agg_{}` always has exactly one row and the join is a cross
//! join. The rule is the left join's and the aggregate's (both in `operator`), composed.
//! Any other correlation — a condition such as `inner.x < outer.y`, an aggregate or a value
//! over outer columns — takes the general rule: with D = δ(π_O L), the distinct values of the
//! outer columns O the subquery reads, the subquery is `Agg_{O}(D ⋈_θ σ_W R)` (θ every
//! correlated condition, O's columns read from D) and is joined back on
//! `L.O IS NOT DISTINCT FROM D.O` (a NULL in O is a value of D like any other: θ decides what it
//! matches). The rules are those of the projection, DISTINCT, the join and the aggregate.
//! In an aggregate query's select list and HAVING a subquery is planned over the rows before
//! the aggregate and joined after it on group keys (`Deferred`, select.rs).
//! Refused: an outer reference from a subquery nested inside this one (the outer band,
//! `scope::OUTER_BASE`), an aggregate over the enclosing query's columns only.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{self, Visit, VisitMut, Visitor, VisitorMut};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::expr::{Typed, AGG_BASE};
use super::passthrough::is_aggregate_call;
use super::scope::{Scope, ScopeRel, OUTER_BASE};
use super::Planner;
use crate::error::{EngineError, Reason};
use crate::expr::{BinOp, Expr, Literal};
use crate::operator::{
    bx, AggCall, AggFunc, Aggregate, ColType, Distinct, Filter, Join, JoinKind, Operator, Project,
    SemiJoin, SemiMode,
};
use crate::types::{SqlType, TypeClass};

/// Deferred scalar subquery `k` is `Column(SQ_BASE + k)` until it is joined (below the
/// aggregate placeholders, `AGG_BASE`).
pub(crate) const SQ_BASE: usize = 1 << 36;

/// A scalar subquery's aggregate operator, the outer sides of its correlation, its value over
/// `outer row ++ keys ++ aggregates` with the value's type, and whether the join back compares
/// the keys NULL-safely (`IS NOT DISTINCT FROM`: the general rule's groups of outer values).
type ScalarParts = (Operator, Vec<Expr>, Expr, ColType, bool);

/// A scalar subquery of an aggregate query's select list or HAVING, planned over the rows
/// before the aggregate (arity `la`) and joined after it: its aggregate operator, the outer
/// sides of its correlation (over those rows: they must be group keys), its value over
/// `rows ++ subquery columns` and whether the join back is NULL-safe.
pub(crate) struct Deferred {
    pub(crate) op: Operator,
    pub(crate) keys: Vec<Expr>,
    pub(crate) value: Expr,
    pub(crate) null_safe: bool,
    pub(crate) la: usize,
}

/// The scalar subqueries deferred while an aggregate query's select list and HAVING are
/// planned, and the rows before the aggregate.
pub(crate) struct DeferredScope {
    pub(crate) input: Operator,
    pub(crate) list: Vec<Deferred>,
}

fn subquery_refused(what: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::SubqueryShape {
        what: what.to_string(),
    })
}

/// The levels of `levels` moved into the outer band.
fn band(levels: &[Vec<ScopeRel>]) -> Vec<Vec<ScopeRel>> {
    levels
        .iter()
        .map(|l| shift_rels(l.clone(), OUTER_BASE))
        .collect()
}

/// The scalar subqueries of an expression (not those inside another subquery) and whether it
/// calls an aggregate outside any subquery.
#[derive(Default)]
pub(crate) struct Nested {
    depth: usize,
    pub(crate) scalars: Vec<ast::Query>,
    pub(crate) aggregate: bool,
    /// An EXISTS or IN over a subquery.
    predicates: bool,
}

/// `x op ANY / ALL (SELECT …)`.
fn quantified(e: &ast::Expr) -> bool {
    matches!(e, ast::Expr::AnyOp { right, .. } | ast::Expr::AllOp { right, .. }
        if matches!(right.as_ref(), ast::Expr::Subquery(_)))
}

impl Nested {
    /// An EXISTS, IN or quantified comparison over a subquery.
    pub(crate) fn has_subquery_predicate(&self) -> bool {
        self.predicates
    }
}

impl Visitor for Nested {
    type Break = ();

    fn post_visit_expr(&mut self, e: &ast::Expr) -> ControlFlow<()> {
        if quantified(e) {
            self.depth -= 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, _: &ast::Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &ast::Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &ast::Expr) -> ControlFlow<()> {
        // `x op ANY (SELECT …)` is not a scalar subquery: its subquery is not collected (and
        // the expression is refused where it is planned).
        if quantified(e) {
            if self.depth == 0 {
                self.predicates = true;
            }
            self.depth += 1;
            return ControlFlow::Continue(());
        }
        if self.depth == 0 {
            match e {
                ast::Expr::Subquery(q) if !self.scalars.contains(q) => {
                    self.scalars.push((**q).clone())
                }
                ast::Expr::Function(f) if f.over.is_none() && is_aggregate_call(f) => {
                    self.aggregate = true
                }
                ast::Expr::Exists { .. } | ast::Expr::InSubquery { .. } => self.predicates = true,
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }
}

/// An expression written in SQL (the rewrites below build their pieces this way).
pub(crate) fn sql_expr(text: &str) -> Option<ast::Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// `(SELECT count(*) FROM … WHERE … [AND extra])` over the FROM and WHERE of plain `q`.
fn count_of(q: &ast::Query, extra: Option<ast::Expr>) -> Option<ast::Expr> {
    subquery_of(q, sql_expr("count(*)")?, extra)
}

/// `(SELECT item FROM … WHERE … [AND extra])` over the FROM and WHERE of plain `q`.
fn subquery_of(q: &ast::Query, item: ast::Expr, extra: Option<ast::Expr>) -> Option<ast::Expr> {
    let mut q = q.clone();
    let ast::SetExpr::Select(s) = q.body.as_mut() else {
        return None;
    };
    s.projection = vec![ast::SelectItem::UnnamedExpr(item)];
    s.selection = match (s.selection.take(), extra) {
        (Some(w), Some(x)) => Some(ast::Expr::BinaryOp {
            left: Box::new(ast::Expr::Nested(Box::new(w))),
            op: ast::BinaryOperator::And,
            right: Box::new(x),
        }),
        (w, x) => w.or(x),
    };
    Some(ast::Expr::Subquery(Box::new(q)))
}

fn compare(left: ast::Expr, op: ast::BinaryOperator, right: ast::Expr) -> ast::Expr {
    ast::Expr::BinaryOp {
        left: Box::new(left),
        op,
        right: Box::new(right),
    }
}

/// `[NOT] EXISTS (q)` and `x [NOT] IN (q)` over a plain subquery, as counts (scalar
/// subqueries, which are decorrelated): EXISTS is `count > 0`; IN keeps SQL's three values —
/// TRUE if a row has y = x, else NULL if the subquery has rows and x is NULL or a row has a
/// NULL y, else FALSE — as `CASE WHEN m > 0 THEN TRUE WHEN x IS NULL AND r > 0 THEN NULL
/// WHEN r = 2 THEN NULL ELSE FALSE END`, with m the count of rows where y = x and r one
/// subquery over the rows: 2 if one has a NULL y, else 1 if there are any, else 0 (two joins,
/// not three). `None` for other subqueries.
/// `inner_x` is `x` as the count's subquery sees it (`names::outer_key`).
fn counted_predicate(e: &ast::Expr, inner_x: Option<ast::Expr>) -> Option<ast::Expr> {
    let zero = || ast::Expr::value(ast::Value::Number("0".into(), false));
    if let Some(folded) = one_row_predicate(e) {
        return Some(folded);
    }
    match e {
        ast::Expr::Exists { subquery, negated } => {
            plain_select(subquery)?;
            let op = if *negated {
                ast::BinaryOperator::Eq
            } else {
                ast::BinaryOperator::Gt
            };
            Some(ast::Expr::Nested(Box::new(compare(
                count_of(subquery, None)?,
                op,
                zero(),
            ))))
        }
        ast::Expr::InSubquery {
            expr,
            subquery,
            negated,
        } => {
            let select = plain_select(subquery)?;
            let y = single_item(select).ok()?.clone();
            let x = ast::Expr::Nested(expr.clone());
            let y = ast::Expr::Nested(Box::new(y));
            let positive = |c: ast::Expr| compare(c, ast::BinaryOperator::Gt, zero());
            let matches = count_of(
                subquery,
                Some(compare(y.clone(), ast::BinaryOperator::Eq, inner_x?)),
            )?;
            let rows = subquery_of(
                subquery,
                sql_expr(&format!(
                    "CASE WHEN count(*) FILTER (WHERE ({y}) IS NULL) > 0 THEN 2 WHEN count(*) > 0 THEN 1 ELSE 0 END"
                ))?,
                None,
            )?;
            let two = ast::Expr::value(ast::Value::Number("2".into(), false));
            let (t, n, f) = (sql_expr("TRUE")?, sql_expr("NULL")?, sql_expr("FALSE")?);
            let when = |condition, result| ast::CaseWhen { condition, result };
            let case = ast::Expr::Case {
                case_token: ast::helpers::attached_token::AttachedToken::empty(),
                end_token: ast::helpers::attached_token::AttachedToken::empty(),
                operand: None,
                conditions: vec![
                    when(positive(matches), t),
                    when(
                        compare(
                            ast::Expr::IsNull(Box::new(x)),
                            ast::BinaryOperator::And,
                            positive(rows.clone()),
                        ),
                        n.clone(),
                    ),
                    when(compare(rows, ast::BinaryOperator::Eq, two), n),
                ],
                else_result: Some(Box::new(f)),
            };
            let case = ast::Expr::Nested(Box::new(case));
            Some(if *negated {
                ast::Expr::UnaryOp {
                    op: ast::UnaryOperator::Not,
                    expr: Box::new(case),
                }
            } else {
                case
            })
        }
        _ => None,
    }
}

/// EXISTS / IN over a plain subquery whose select list aggregates: it returns exactly one
/// row, so `EXISTS` is TRUE (NOT EXISTS FALSE) and `x IN (SELECT agg …)` is `x = (SELECT agg …)`
/// (NOT IN `x <> …`), three-valued alike. `None` for other predicates.
pub(crate) fn one_row_predicate(e: &ast::Expr) -> Option<ast::Expr> {
    let aggregated = |q: &ast::Query| {
        plain_select(q)
            .and_then(|s| single_item(s).ok())
            .is_some_and(|item| nested(item).aggregate)
    };
    match e {
        ast::Expr::Exists { subquery, negated } if aggregated(subquery) => {
            sql_expr(if *negated { "FALSE" } else { "TRUE" })
        }
        ast::Expr::InSubquery {
            expr,
            subquery,
            negated,
        } if aggregated(subquery) => Some(ast::Expr::Nested(Box::new(compare(
            ast::Expr::Nested(expr.clone()),
            if *negated {
                ast::BinaryOperator::NotEq
            } else {
                ast::BinaryOperator::Eq
            },
            ast::Expr::Subquery(subquery.clone()),
        )))),
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Not,
            expr,
        } => one_row_predicate(strip(expr)).map(|x| ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Not,
            expr: Box::new(x),
        }),
        ast::Expr::Nested(inner) => one_row_predicate(inner),
        _ => None,
    }
}

/// Rewrites the [NOT] EXISTS / [NOT] IN of an expression (not inside another subquery) that
/// `counted_predicate` can express; the left side of an IN is planned in `scope` (the query
/// the expression belongs to) and referred to from the subquery by `names::outer_key`.
struct Counted<'p, 'a, 's> {
    planner: &'p mut Planner<'a>,
    scope: &'s Scope,
    depth: usize,
}

impl VisitorMut for Counted<'_, '_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, _: &mut ast::Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &mut ast::Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<()> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        let counted_in = matches!(&*e, ast::Expr::InSubquery { subquery, .. }
            if plain_select(subquery).is_some())
            && one_row_predicate(e).is_none();
        let inner_x = match &*e {
            // Planned only for an IN that is counted (over a plain subquery that is not
            // folded by `one_row_predicate`).
            ast::Expr::InSubquery { expr, .. } if counted_in => {
                match self.planner.expr(expr, self.scope, &mut None) {
                    Ok(typed) => {
                        let keys = &mut self.planner.outer_keys;
                        keys.push(typed);
                        let name = crate::names::outer_key(keys.len() - 1);
                        Some(ast::Expr::Identifier(ast::Ident::with_quote('"', name)))
                    }
                    // Left as it is: refused where it is planned.
                    Err(_) => return ControlFlow::Continue(()),
                }
            }
            _ => None,
        };
        if let Some(rewritten) = counted_predicate(e, inner_x) {
            *e = rewritten;
        }
        ControlFlow::Continue(())
    }
}

pub(crate) fn nested(e: &ast::Expr) -> Nested {
    let mut n = Nested::default();
    let _ = e.visit(&mut n);
    n
}

pub(crate) fn item_expr(item: &ast::SelectItem) -> Option<&ast::Expr> {
    match item {
        ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// Whether a WHERE conjunct needs the subquery machinery (a semi join, a scalar subquery,
/// an EXISTS or IN inside an expression).
pub(crate) fn has_subquery(e: &ast::Expr) -> bool {
    let n = nested(e);
    subquery_conjunct(e).is_some() || !n.scalars.is_empty() || n.predicates
}

/// The SELECT of a subquery with neither WITH, LIMIT, DISTINCT, GROUP BY nor HAVING.
fn plain_select(q: &ast::Query) -> Option<&ast::Select> {
    match q.body.as_ref() {
        ast::SetExpr::Select(s)
            if q.with.is_none()
                && q.limit_clause.is_none()
                && q.fetch.is_none()
                && s.distinct.is_none()
                && s.having.is_none()
                && matches!(&s.group_by, ast::GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty()) =>
        {
            Some(s)
        }
        _ => None,
    }
}

fn single_item(select: &ast::Select) -> Result<&ast::Expr, EngineError> {
    // PostgreSQL has checked the query: a `*` here names one column.
    match select.projection.as_slice() {
        [item] => item_expr(item).ok_or_else(|| subquery_refused("with * in its select list")),
        _ => Err(EngineError::Syntax {
            message: "subquery must return only one column".into(),
        }),
    }
}

/// `(outer, inner)` when `l = r` has one side only over columns below `la` (the outer row)
/// and the other only over columns at or above it (the subquery's row).
fn correlation(l: &Expr, r: &Expr, la: usize) -> Option<(Expr, Expr)> {
    let side = |e: &Expr| {
        let mut cols = BTreeSet::new();
        e.columns(&mut cols);
        if cols.is_empty() {
            None
        } else if cols.iter().all(|c| *c < la) {
            Some(true)
        } else if cols.iter().all(|c| *c >= la) {
            Some(false)
        } else {
            None
        }
    };
    match (side(l)?, side(r)?) {
        (true, false) => Some((l.clone(), r.clone())),
        (false, true) => Some((r.clone(), l.clone())),
        _ => None,
    }
}

fn all_columns_at_least(e: &Expr, la: usize) -> bool {
    let mut cols = BTreeSet::new();
    e.columns(&mut cols);
    cols.iter().all(|c| *c >= la)
}

/// The aggregate call with its input columns moved down by `la`, or `None` when it reads a
/// column below `la` (of the outer query).
fn shift_call(call: &AggCall, la: usize) -> Option<AggCall> {
    let inner = call.args.iter().all(|a| all_columns_at_least(a, la))
        && call.filter.iter().all(|f| all_columns_at_least(f, la))
        && call
            .order_by
            .iter()
            .all(|k| all_columns_at_least(&k.expr, la));
    if !inner {
        return None;
    }
    let down = |e: &Expr| e.map_columns(&|c| c - la);
    Some(AggCall {
        args: call.args.iter().map(down).collect(),
        filter: call.filter.as_ref().map(down),
        order_by: call.order_by.iter().map(|k| k.map(down)).collect(),
        ..call.clone()
    })
}

/// Splits a condition into its top-level AND conjuncts.
pub(crate) fn conjuncts(e: &ast::Expr, out: &mut Vec<ast::Expr>) {
    match e {
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        ast::Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other.clone()),
    }
}

/// Adds `pred` to `op`, as deep as inner joins allow.
pub(crate) fn push_filter(op: Operator, pred: Expr) -> Operator {
    let mut cols = BTreeSet::new();
    pred.columns(&mut cols);
    match op {
        Operator::Join(mut j) if j.kind == JoinKind::Inner && !cols.is_empty() => {
            let la = j.left.arity();
            if cols.iter().all(|c| *c < la) {
                j.left = bx(push_filter(*j.left, pred));
            } else if cols.iter().all(|c| *c >= la) {
                j.right = bx(push_filter(*j.right, pred.map_columns(&|c| c - la)));
            } else {
                j.on = match j.on {
                    Expr::Literal(Literal::Bool(true)) => pred,
                    on => Expr::binary(BinOp::And, on, pred),
                };
            }
            Operator::Join(j)
        }
        Operator::Filter(f) => Operator::Filter(Filter {
            input: f.input,
            predicate: Expr::binary(BinOp::And, f.predicate, pred),
        }),
        other => Operator::Filter(Filter {
            input: bx(other),
            predicate: pred,
        }),
    }
}

pub(crate) fn shift_rels(rels: Vec<ScopeRel>, offset: usize) -> Vec<ScopeRel> {
    rels.into_iter()
        .map(|mut r| {
            r.offset += offset;
            r
        })
        .collect()
}

/// A subquery conjunct of WHERE, planned as a semi or anti join.
enum SubqueryConjunct<'q> {
    Exists(&'q ast::Query, bool),
    In(&'q ast::Expr, &'q ast::Query, bool),
}

impl<'q> SubqueryConjunct<'q> {
    /// The subquery, whether the predicate is negated, and the semi join mode that follows.
    fn parts(&self) -> (&'q ast::Query, bool, SemiMode) {
        let (q, negated) = match self {
            SubqueryConjunct::Exists(q, n) | SubqueryConjunct::In(_, q, n) => (*q, *n),
        };
        let mode = if negated {
            SemiMode::NonPositive
        } else {
            SemiMode::Positive
        };
        (q, negated, mode)
    }
}

fn subquery_conjunct(e: &ast::Expr) -> Option<SubqueryConjunct<'_>> {
    match e {
        ast::Expr::Exists { subquery, negated } => {
            Some(SubqueryConjunct::Exists(subquery, *negated))
        }
        ast::Expr::InSubquery {
            expr,
            subquery,
            negated,
        } => Some(SubqueryConjunct::In(expr, subquery, *negated)),
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Not,
            expr,
        } => match subquery_conjunct(strip(expr))? {
            SubqueryConjunct::Exists(q, n) => Some(SubqueryConjunct::Exists(q, !n)),
            SubqueryConjunct::In(x, q, n) => Some(SubqueryConjunct::In(x, q, !n)),
        },
        ast::Expr::Nested(inner) => subquery_conjunct(inner),
        _ => None,
    }
}

fn strip(e: &ast::Expr) -> &ast::Expr {
    match e {
        ast::Expr::Nested(inner) => strip(inner),
        other => other,
    }
}

impl Planner<'_> {
    /// `e` with its EXISTS / IN rewritten as counts (`Counted`).
    pub(crate) fn counted(&mut self, e: &ast::Expr, scope: &Scope) -> ast::Expr {
        let mut e = e.clone();
        let _ = VisitMut::visit(
            &mut e,
            &mut Counted {
                planner: self,
                scope,
                depth: 0,
            },
        );
        e
    }

    /// A scope whose innermost level is `rels`, inside the enclosing queries' outer band.
    pub(crate) fn scope_of(&self, rels: Vec<ScopeRel>) -> Scope {
        let mut levels = self.outer.clone();
        levels.push(rels);
        Scope { levels }
    }

    /// Runs `f` with `levels` as the enclosing queries' outer band.
    fn within<T>(
        &mut self,
        levels: &[Vec<ScopeRel>],
        f: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let saved = std::mem::replace(&mut self.outer, band(levels));
        let result = f(self);
        self.outer = saved;
        result
    }

    /// Applies the conjuncts of a WHERE to `op` (whose row the innermost level of `scope`
    /// describes): plain conditions first, pushed as deep as inner joins allow, then the
    /// semi and anti joins of [NOT] EXISTS / [NOT] IN, then the joins of scalar subqueries
    /// with the conditions that use them.
    pub(crate) fn where_conjuncts(
        &mut self,
        op: Operator,
        scope: &Scope,
        parts: &[ast::Expr],
    ) -> Result<Operator, EngineError> {
        Ok(self.where_conjuncts_base(op, scope, parts)?.0)
    }

    /// `where_conjuncts`, and the operator before the scalar subqueries' joins if there are
    /// any: its rows are the outer rows those subqueries read (the general rule's D is taken
    /// from it, so that a second subquery's D does not hold the first one's join).
    pub(crate) fn where_conjuncts_base(
        &mut self,
        mut op: Operator,
        scope: &Scope,
        parts: &[ast::Expr],
    ) -> Result<(Operator, Option<Operator>), EngineError> {
        let mut semis = Vec::new();
        let mut scalar = Vec::new();
        let mut folded = Vec::new();
        for part in parts {
            if let Some(one_row) = one_row_predicate(part) {
                folded.push(one_row);
            } else if let Some(sub) = subquery_conjunct(part) {
                semis.push(sub);
            } else if has_subquery(part) {
                scalar.push(part.clone());
            } else {
                let (pred, _) = self.expr(part, scope, &mut None)?;
                op = push_filter(op, pred);
            }
        }
        for sub in semis {
            op = self.semi_join(op, scope, sub)?;
        }
        scalar.extend(folded);
        if scalar.is_empty() {
            return Ok((op, None));
        }
        let base = op.clone();
        for part in &scalar {
            // EXISTS / IN inside an expression become counts (scalar subqueries).
            let part = self.counted(part, scope);
            let marks = self.scalars.len();
            for q in nested(&part).scalars {
                op = self.attach_scalar(op, &base, scope, &q)?;
            }
            let (pred, _) = self.expr(&part, scope, &mut None)?;
            self.scalars.truncate(marks);
            op = push_filter(op, pred);
        }
        Ok((op, Some(base)))
    }

    /// The value of scalar subquery `q`: joined already (`attach_scalar`), or deferred to
    /// after the aggregate of an aggregate query; anywhere else it is refused.
    pub(crate) fn scalar_value(
        &mut self,
        q: &ast::Query,
        scope: &Scope,
    ) -> Result<Typed, EngineError> {
        if let Some((_, typed)) = self.scalars.iter().rev().find(|(x, _)| x == q) {
            return Ok(typed.clone());
        }
        let Some(mut deferred) = self.deferred.take() else {
            return Err(EngineError::NotDifferentiable(Reason::SubqueryInExpression));
        };
        // Planned over the rows before the aggregate; joined after it on the group keys its
        // correlation reads (select.rs).
        let la = deferred.input.arity();
        let input = deferred.input.clone();
        let planned = self.scalar_parts(&input, la, scope, q);
        let result = planned.map(|(op, keys, value, ty, null_safe)| {
            deferred.list.push(Deferred {
                op,
                keys,
                value,
                null_safe,
                la,
            });
            (Expr::Column(SQ_BASE + deferred.list.len() - 1), ty)
        });
        self.deferred = Some(deferred);
        result
    }

    /// Joins scalar subquery `q` to `op` (see the module comment) and remembers its value.
    /// `base` holds the outer rows without the joins of other scalar subqueries (a superset
    /// of `op`'s rows: filters may come after it), over the same leading columns.
    pub(crate) fn attach_scalar(
        &mut self,
        op: Operator,
        base: &Operator,
        scope: &Scope,
        q: &ast::Query,
    ) -> Result<Operator, EngineError> {
        if self.scalars.iter().any(|(x, _)| x == q) {
            return Ok(op);
        }
        let la = op.arity();
        let (agg, keys, value, ty, null_safe) = self.scalar_parts(base, la, scope, q)?;
        self.scalars.push((q.clone(), (value, ty)));
        Ok(join_back(op, agg, keys, null_safe))
    }

    /// Scalar subquery `q` seen from a row of arity `la` described by `scope`: the aggregate
    /// over its FROM grouped by the inner sides of the correlation, the outer sides, and its
    /// value over `outer row ++ keys ++ aggregates`. `outer` holds the outer rows over the
    /// row's leading columns (the general rule's D is taken from it).
    fn scalar_parts(
        &mut self,
        outer: &Operator,
        la: usize,
        scope: &Scope,
        q: &ast::Query,
    ) -> Result<ScalarParts, EngineError> {
        // Values joined in enclosing contexts describe other rows: not visible inside.
        let saved = std::mem::take(&mut self.scalars);
        let result = self.scalar_parts_inner(outer, la, scope, q);
        self.scalars = saved;
        result
    }

    fn scalar_parts_inner(
        &mut self,
        outer: &Operator,
        la: usize,
        scope: &Scope,
        q: &ast::Query,
    ) -> Result<ScalarParts, EngineError> {
        let select = plain_select(q).ok_or_else(|| {
            subquery_refused("with WITH, GROUP BY, HAVING, DISTINCT, LIMIT or a set operation")
        })?;
        let item = single_item(select)?;
        let (mut right, rrels) = self.within(&scope.levels, |p| p.from(&select.from))?;
        let mut levels = scope.levels.clone();
        levels.push(shift_rels(rrels.clone(), la));
        let inner = Scope { levels };
        // Over the row `outer ++ inner` (inner from `la`): `outer = inner` pairs with the
        // inner side's type, and the other conditions that read the outer row.
        let mut pairs: Vec<(Expr, Expr, ColType)> = Vec::new();
        let mut mixed: Vec<Expr> = Vec::new();
        if let Some(w) = &select.selection {
            let mut parts = Vec::new();
            conjuncts(w, &mut parts);
            let mut deeper = Vec::new();
            for part in parts {
                if has_subquery(&part) {
                    deeper.push(part);
                    continue;
                }
                if let ast::Expr::BinaryOp {
                    left,
                    op: ast::BinaryOperator::Eq,
                    right: r,
                } = strip(&part)
                {
                    let (l, lt) = self.expr(left, &inner, &mut None)?;
                    let (rv, rt) = self.expr(r, &inner, &mut None)?;
                    if let Some((o, i)) = correlation(&l, &rv, la) {
                        let (oty, ity) = if all_columns_at_least(&l, la) {
                            (rt, lt)
                        } else {
                            (lt, rt)
                        };
                        // Grouping by the inner side is exact only where `=` between the two
                        // types is (int8 = float8 makes 2^53 equal to two different groups).
                        if lossless_equality(&oty.ty, &ity.ty) {
                            pairs.push((o, i, ity));
                            continue;
                        }
                    }
                }
                let (pred, _) = match self.expr(&part, &inner, &mut None) {
                    // An aggregate there can only be the enclosing query's (PostgreSQL's rule).
                    Err(EngineError::Grouping { .. }) if nested(&part).aggregate => {
                        return Err(subquery_refused(
                            "with an aggregate of the enclosing query in its WHERE",
                        ))
                    }
                    other => other?,
                };
                if all_columns_at_least(&pred, la) {
                    right = push_filter(right, pred.map_columns(&|c| c - la));
                } else {
                    mixed.push(pred);
                }
            }
            if !deeper.is_empty() {
                let nested_scope = Scope {
                    levels: {
                        let mut l = band(&scope.levels);
                        l.push(rrels);
                        l
                    },
                };
                right = self.where_conjuncts(right, &nested_scope, &deeper)?;
            }
        }
        let mut calls = Vec::new();
        let deferred = self.deferred.take();
        let planned = self.expr(item, &inner, &mut Some(&mut calls));
        self.deferred = deferred;
        let (value, vt) = planned?;
        let reads_outer = |e: &Expr| {
            let mut cols = BTreeSet::new();
            e.columns(&mut cols);
            cols.iter().any(|c| *c < la)
        };
        // An aggregate whose arguments read only the outer query's columns belongs to that query
        // (PostgreSQL evaluates it over the outer rows), not to this subquery.
        if calls.iter().any(|c| {
            let mut cols = BTreeSet::new();
            c.args
                .iter()
                .chain(c.filter.iter())
                .for_each(|e| e.columns(&mut cols));
            !cols.is_empty() && cols.iter().all(|col| *col < la)
        }) {
            return Err(subquery_refused(
                "with an aggregate of the enclosing query's columns only (it belongs to that query)",
            ));
        }
        if calls.is_empty() {
            // Without an aggregate the subquery may return several rows; maintained only where
            // its correlation equals a unique key of its one table, so that it returns at most
            // one (a check raising PostgreSQL's 21000 inside the delta would fire on the mixed
            // old/new rows the delta rules pair).
            let inner_pairs: Vec<Expr> = pairs
                .iter()
                .map(|(_, i, _)| i.map_columns(&|c| c - la))
                .collect();
            if !mixed.is_empty() || !self.covers_key(&right, &inner_pairs) {
                return Err(subquery_refused(
                    "without an aggregate whose correlation is not a key of its table (it may return more than one row)",
                ));
            }
        }
        let shifted: Option<Vec<AggCall>> = calls.iter().map(|c| shift_call(c, la)).collect();
        let general =
            !mixed.is_empty() || shifted.is_none() || (calls.is_empty() && reads_outer(&value));
        // The aggregate's input and keys, the outer sides of the join back, whether that join
        // compares NULL-safely, the aggregate calls over the input, and (no aggregate) the
        // select item over the input.
        let (input, keys, key_types, outer_keys, null_safe, calls, single) = match shifted {
            Some(calls) if !general => {
                let single = calls.is_empty().then(|| value.map_columns(&|c| c - la));
                let (outer_keys, keys, key_types) = pairs.into_iter().fold(
                    (Vec::new(), Vec::new(), Vec::new()),
                    |(mut o, mut k, mut t), (oe, ie, it)| {
                        o.push(oe);
                        k.push(ie.map_columns(&|c| c - la));
                        t.push(it);
                        (o, k, t)
                    },
                );
                (right, keys, key_types, outer_keys, false, calls, single)
            }
            _ => {
                // The general rule (see the module comment): the distinct outer values D the
                // subquery reads, joined to its rows on every correlated condition, grouped by D.
                let mut read = BTreeSet::new();
                let mut note = |e: &Expr| {
                    let mut cols = BTreeSet::new();
                    e.columns(&mut cols);
                    read.extend(cols.into_iter().filter(|c| *c < la));
                };
                mixed.iter().for_each(&mut note);
                pairs.iter().for_each(|(o, _, _)| note(o));
                for c in &calls {
                    c.args.iter().for_each(&mut note);
                    c.filter.iter().for_each(&mut note);
                    c.order_by.iter().for_each(|k| note(&k.expr));
                }
                if calls.is_empty() {
                    note(&value);
                }
                let read: Vec<usize> = read.into_iter().collect();
                let nd = read.len();
                let types = outer.columns();
                let d_types: Vec<ColType> = read.iter().map(|c| types[*c].clone()).collect();
                // One representative per group of equal outer values stands for all of them.
                if let Some(t) = d_types.iter().find(|t| !exact_type(&t.ty)) {
                    return Err(subquery_refused(&format!(
                    "correlated other than by outer = inner on an outer value of type {}, whose equal values can differ",
                    t.ty
                )));
                }
                let to_j = |e: &Expr| {
                    e.map_columns(&|c| {
                        if c < la {
                            let at = read.iter().position(|r| *r == c);
                            debug_assert!(at.is_some(), "outer column {c} read but not collected");
                            at.unwrap_or(c)
                        } else {
                            nd + (c - la)
                        }
                    })
                };
                let distinct = Operator::Distinct(Distinct {
                    input: bx(Operator::Project(Project {
                        input: bx(outer.clone()),
                        exprs: read.iter().map(|c| Expr::Column(*c)).collect(),
                        types: d_types.clone(),
                    })),
                });
                let mut on: Vec<Expr> = mixed.iter().map(to_j).collect();
                on.extend(
                    pairs
                        .iter()
                        .map(|(o, i, _)| Expr::binary(BinOp::Eq, to_j(o), to_j(i))),
                );
                let joined = Join::inner(distinct, right, Expr::and_all(on));
                let calls = calls
                    .iter()
                    .map(|c| AggCall {
                        args: c.args.iter().map(to_j).collect(),
                        filter: c.filter.as_ref().map(to_j),
                        order_by: c.order_by.iter().map(|k| k.map(to_j)).collect(),
                        ..c.clone()
                    })
                    .collect::<Vec<_>>();
                let keys = (0..nd).map(Expr::Column).collect();
                let outer_keys = read.iter().map(|c| Expr::Column(*c)).collect();
                let single = calls.is_empty().then(|| to_j(&value));
                (joined, keys, d_types, outer_keys, true, calls, single)
            }
        };
        let nk = keys.len();
        if let Some(item) = single {
            // No aggregate: at most one row per group (`covers_key`), its value by `min`.
            let (calls, value) = single_value(item, &vt, la + nk)?;
            let agg = Operator::Aggregate(Aggregate {
                input: bx(input),
                key_types,
                keys,
                aggs: calls,
            });
            return Ok((agg, outer_keys, value, ColType::new(vt.ty, true), null_safe));
        }
        let mut grouping = None;
        let value = value.transform(&mut |x| match x {
            Expr::Column(c) if *c >= AGG_BASE => {
                let j = c - AGG_BASE;
                let col = Expr::Column(la + nk + j);
                let count = matches!(calls[j].func, AggFunc::Count | AggFunc::CountStar);
                Some(if count && nk > 0 {
                    Expr::Coalesce(vec![col, Expr::int(0)])
                } else {
                    col
                })
            }
            Expr::Column(c) if *c >= la => {
                grouping = Some(EngineError::Grouping {
                    message: "column must appear in the GROUP BY clause or be used in an aggregate function".into(),
                });
                None
            }
            _ => None,
        });
        if let Some(e) = grouping {
            return Err(e);
        }
        let agg = Operator::Aggregate(Aggregate {
            input: bx(input),
            key_types,
            keys,
            aggs: calls,
        });
        Ok((agg, outer_keys, value, ColType::new(vt.ty, true), null_safe))
    }

    /// Whether `keys` (over `op`'s row) include every column of a unique key of the one table
    /// `op` scans, through filters: then at most one of its rows has given key values.
    fn covers_key(&self, op: &Operator, keys: &[Expr]) -> bool {
        let mut cur = op;
        while let Operator::Filter(f) = cur {
            cur = &f.input;
        }
        let Operator::Scan(scan) = cur else {
            return false;
        };
        let Some(ids) = self
            .tables
            .get(&scan.table.id)
            .and_then(|t| t.identity_columns())
        else {
            return false;
        };
        ids.iter().all(|i| {
            scan.columns
                .iter()
                .position(|c| c.index == *i)
                .is_some_and(|p| keys.contains(&Expr::Column(p)))
        })
    }

    fn semi_join(
        &mut self,
        left: Operator,
        scope: &Scope,
        sub: SubqueryConjunct<'_>,
    ) -> Result<Operator, EngineError> {
        let (query, _, mode) = sub.parts();
        let la = left.arity();
        let Some(select) = plain_select(query) else {
            return self.semi_join_uncorrelated(left, scope, sub);
        };
        let saved = std::mem::take(&mut self.scalars);
        let result = self.semi_join_plain(la, scope, select, &sub);
        self.scalars = saved;
        let (right, on) = result?;
        Ok(Operator::SemiJoin(SemiJoin {
            left: bx(left),
            right: bx(right),
            on,
            mode,
        }))
    }

    /// The right side and condition of a semi join over plain subquery `select`, seen from a
    /// left row of arity `la`.
    fn semi_join_plain(
        &mut self,
        la: usize,
        scope: &Scope,
        select: &ast::Select,
        sub: &SubqueryConjunct<'_>,
    ) -> Result<(Operator, Expr), EngineError> {
        let (_, negated, _) = sub.parts();
        let (mut right, rrels) = self.within(&scope.levels, |p| p.from(&select.from))?;
        let mut levels = scope.levels.clone();
        levels.push(shift_rels(rrels.clone(), la));
        let inner = Scope { levels };
        let mut conds = Vec::new();
        if let Some(w) = &select.selection {
            let mut parts = Vec::new();
            conjuncts(w, &mut parts);
            let (deeper, plain): (Vec<ast::Expr>, Vec<ast::Expr>) =
                parts.into_iter().partition(has_subquery);
            for part in &plain {
                conds.push(self.expr(part, &inner, &mut None)?.0);
            }
            if !deeper.is_empty() {
                // Subqueries inside the subquery: planned on its own rows, their references
                // to the outer query refused (outer band).
                let mut l = band(&scope.levels);
                l.push(rrels);
                right = self.where_conjuncts(right, &Scope { levels: l }, &deeper)?;
            }
        }
        if let SubqueryConjunct::In(x, _, _) = sub {
            let item = single_item(select)?;
            let (xv, _) = self.expr(x, scope, &mut None)?;
            let (yv, _) = self.expr(item, &inner, &mut None)?;
            conds.push(in_condition(xv, yv, negated));
        }
        Ok((right, Expr::and_all(conds)))
    }

    /// [NOT] EXISTS / [NOT] IN over a subquery with GROUP BY, HAVING, DISTINCT, WITH or a set
    /// operation: planned as a query of its own (references to the outer query refused) and
    /// semi-joined on the IN condition (EXISTS: on any row).
    fn semi_join_uncorrelated(
        &mut self,
        left: Operator,
        scope: &Scope,
        sub: SubqueryConjunct<'_>,
    ) -> Result<Operator, EngineError> {
        let (query, negated, mode) = sub.parts();
        let la = left.arity();
        let planned = self.within(&scope.levels, |p| p.query(query))?;
        let on = match &sub {
            SubqueryConjunct::Exists(..) => Expr::bool(true),
            SubqueryConjunct::In(x, _, _) => {
                if planned.names.len() != 1 {
                    return Err(EngineError::Syntax {
                        message: "subquery has too many columns".into(),
                    });
                }
                let (xv, _) = self.expr(x, scope, &mut None)?;
                in_condition(xv, Expr::Column(la), negated)
            }
        };
        Ok(Operator::SemiJoin(SemiJoin {
            left: bx(left),
            right: bx(planned.op),
            on,
            mode,
        }))
    }
}

/// The aggregate and value of a scalar subquery without an aggregate whose correlation covers
/// a unique key of its table (at most one row per group): `min(value)` (`bool_and` for
/// booleans), which over one row is that row's value, at `base` of the joined row; no group
/// (no row) gives NULL.
fn single_value(
    value: Expr,
    ty: &ColType,
    base: usize,
) -> Result<(Vec<AggCall>, Expr), EngineError> {
    let ordered = ty.ty.is_numeric_family()
        || ty.ty.is_string()
        || matches!(
            ty.ty.class(),
            TypeClass::Date | TypeClass::Timestamp | TypeClass::Timestamptz | TypeClass::Interval
        );
    let func = if ty.ty.class() == TypeClass::Bool {
        AggFunc::BoolAnd
    } else if ordered {
        AggFunc::Min
    } else {
        return Err(subquery_refused(&format!(
            "without an aggregate returning {}, a type the planner knows no ordering of",
            ty.ty
        )));
    };
    let only = AggCall {
        func,
        args: vec![value],
        distinct: false,
        filter: None,
        order_by: Vec::new(),
        within_group: false,
        arg_type: Some(ty.ty.clone()),
        ty: ColType::new(ty.ty.clone(), true),
    };
    Ok((vec![only], Expr::Column(base)))
}

/// Whether `=` between values of these types is as exact as grouping by the second: same type
/// class, or both integers/numeric, or both text/varchar.
fn lossless_equality(a: &SqlType, b: &SqlType) -> bool {
    use TypeClass as T;
    let exact_numbers = |c: T| matches!(c, T::Int2 | T::Int4 | T::Int8 | T::Numeric);
    let strings = |c: T| matches!(c, T::Text | T::Varchar);
    let (ca, cb) = (a.class(), b.class());
    (ca == cb && ca != T::Other && ca != T::NoEquality)
        || (exact_numbers(ca) && exact_numbers(cb))
        || (strings(ca) && strings(cb))
}

/// Whether equal values of this type are the same value (DISTINCT over it keeps every
/// distinguishable value: not so for numeric's scale, float's -0, bpchar's padding).
fn exact_type(t: &SqlType) -> bool {
    use TypeClass as T;
    matches!(
        t.class(),
        T::Int2
            | T::Int4
            | T::Int8
            | T::Text
            | T::Varchar
            | T::Date
            | T::Timestamp
            | T::Timestamptz
            | T::Bool
    )
}

/// `op ⟕ agg ON keys = agg's first columns` (NULL-safe for the general rule's groups); a
/// cross join when there are no keys (the aggregate has exactly one row).
pub(crate) fn join_back(op: Operator, agg: Operator, keys: Vec<Expr>, null_safe: bool) -> Operator {
    if keys.is_empty() {
        return Join::inner(op, agg, Expr::bool(true));
    }
    let at = op.arity();
    let on = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            if null_safe {
                Expr::not_distinct(k, Expr::Column(at + i))
            } else {
                Expr::binary(BinOp::Eq, k, Expr::Column(at + i))
            }
        })
        .collect();
    Operator::Join(Join {
        kind: JoinKind::Left,
        left: bx(op),
        right: bx(agg),
        on: Expr::and_all(on),
    })
}

/// The semi join condition of `x [NOT] IN (… y …)`.
fn in_condition(x: Expr, y: Expr, negated: bool) -> Expr {
    let eq = Expr::binary(BinOp::Eq, x, y);
    if negated {
        // x NOT IN (…) is false or NULL as soon as one row has x = y TRUE or NULL.
        Expr::IsBool {
            arg: Box::new(eq),
            value: false,
            negated: true,
        }
    } else {
        eq
    }
}
