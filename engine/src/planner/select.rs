//! One SELECT block → operator tree: FROM (tables, derived tables, CTE references, joins),
//! WHERE (conjuncts pushed into inner joins; top-level [NOT] EXISTS / [NOT] IN subqueries as
//! semi and anti joins), GROUP BY with aggregates and HAVING, the select list and DISTINCT.
//! Invariants: a predicate is pushed only through inner joins (never into an outer join's
//! input); NOT IN is planned as an anti join on `(x = y) IS NOT FALSE`, which keeps its NULL
//! semantics (never true when the subquery yields a NULL).

use std::collections::BTreeSet;

use sqlparser::ast;

use super::expr::AGG_BASE;
use super::scope::{Scope, ScopeRel};
use super::{fold, object_name, rename, Planned, Planner};
use crate::error::{EngineError, Reason};
use crate::expr::{BinOp, Expr, Literal};
use crate::operator::{
    bx, AggCall, Aggregate, ColType, Distinct, Filter, Join, JoinKind, Operator, Project, SemiJoin,
    SemiMode,
};

fn unsupported(construct: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::Construct {
        construct: construct.to_string(),
    })
}

/// Splits a condition into its top-level AND conjuncts.
fn conjuncts(e: &ast::Expr, out: &mut Vec<ast::Expr>) {
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

fn shift_rels(rels: Vec<ScopeRel>, offset: usize) -> Vec<ScopeRel> {
    rels.into_iter()
        .map(|mut r| {
            r.offset += offset;
            r
        })
        .collect()
}

fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(id) => fold(id),
        ast::Expr::CompoundIdentifier(ids) => ids.last().map(fold).unwrap_or_default(),
        ast::Expr::Function(f) => object_name(&f.name)
            .ok()
            .and_then(|p| p.last().cloned())
            .unwrap_or_default(),
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => output_name(expr),
        ast::Expr::Case { .. } => "case".to_string(),
        _ => "?column?".to_string(),
    }
}

/// A subquery conjunct of WHERE, planned as a semi or anti join.
enum SubqueryConjunct<'q> {
    Exists(&'q ast::Query, bool),
    In(&'q ast::Expr, &'q ast::Query, bool),
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
    pub(crate) fn select(&mut self, s: &ast::Select) -> Result<Planned, EngineError> {
        if matches!(s.distinct, Some(ast::Distinct::On(_))) {
            return Err(EngineError::NotDifferentiable(Reason::DistinctOn));
        }
        if s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || s.qualify.is_some()
            || !s.named_window.is_empty()
            || !s.connect_by.is_empty()
        {
            return Err(unsupported("this SELECT clause"));
        }
        let (mut op, rels) = self.from(&s.from)?;
        let scope = Scope::single(rels);
        if let Some(selection) = &s.selection {
            let mut parts = Vec::new();
            conjuncts(selection, &mut parts);
            let mut semis = Vec::new();
            for part in &parts {
                match subquery_conjunct(part) {
                    Some(sub) => semis.push(sub),
                    None => {
                        let (pred, _) = self.expr(part, &scope, &mut None)?;
                        op = push_filter(op, pred);
                    }
                }
            }
            for sub in semis {
                op = self.semi_join(op, &scope, sub)?;
            }
        }
        let mut aggs: Vec<AggCall> = Vec::new();
        let mut items: Vec<(Expr, ColType, String)> = Vec::new();
        for item in &s.projection {
            self.select_item(item, &scope, &mut aggs, &mut items)?;
        }
        let group_exprs = match &s.group_by {
            ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
            _ => return Err(EngineError::NotDifferentiable(Reason::GroupingSets)),
        };
        let mut having = s
            .having
            .as_ref()
            .map(|h| self.expr(h, &scope, &mut Some(&mut aggs)))
            .transpose()?;
        if !aggs.is_empty() || !group_exprs.is_empty() || having.is_some() {
            let mut keys: Vec<(Expr, ColType)> = Vec::new();
            for g in group_exprs {
                keys.push(self.group_key(g, &scope, &items)?);
            }
            if keys.iter().any(|(k, _)| contains_agg(k)) {
                return Err(EngineError::Grouping {
                    message: "aggregate functions are not allowed in GROUP BY".into(),
                });
            }
            let key_exprs: Vec<Expr> = keys.iter().map(|k| k.0.clone()).collect();
            for item in &mut items {
                item.0 = post_aggregate(&item.0, &key_exprs)?;
            }
            if let Some(h) = &mut having {
                h.0 = post_aggregate(&h.0, &key_exprs)?;
            }
            op = Operator::Aggregate(Aggregate {
                input: bx(op),
                key_types: keys.iter().map(|k| k.1.clone()).collect(),
                keys: key_exprs,
                aggs,
            });
            if let Some((pred, _)) = having {
                op = Operator::Filter(Filter {
                    input: bx(op),
                    predicate: pred,
                });
            }
        }
        let names: Vec<String> = items.iter().map(|i| i.2.clone()).collect();
        op = Operator::Project(Project {
            input: bx(op),
            exprs: items.iter().map(|i| i.0.clone()).collect(),
            types: items.iter().map(|i| i.1.clone()).collect(),
        });
        if matches!(s.distinct, Some(ast::Distinct::Distinct)) {
            op = Operator::Distinct(Distinct { input: bx(op) });
        }
        Ok(Planned { op, names })
    }

    fn select_item(
        &mut self,
        item: &ast::SelectItem,
        scope: &Scope,
        aggs: &mut Vec<AggCall>,
        items: &mut Vec<(Expr, ColType, String)>,
    ) -> Result<(), EngineError> {
        match item {
            ast::SelectItem::UnnamedExpr(e) => {
                let (x, t) = self.expr(e, scope, &mut Some(aggs))?;
                items.push((x, t, output_name(e)));
            }
            ast::SelectItem::ExprWithAlias { expr, alias } => {
                let (x, t) = self.expr(expr, scope, &mut Some(aggs))?;
                items.push((x, t, fold(alias)));
            }
            ast::SelectItem::Wildcard(opts) | ast::SelectItem::QualifiedWildcard(_, opts)
                if opts.opt_exclude.is_none()
                    && opts.opt_except.is_none()
                    && opts.opt_replace.is_none()
                    && opts.opt_rename.is_none() =>
            {
                let only = match item {
                    ast::SelectItem::QualifiedWildcard(
                        ast::SelectItemQualifiedWildcardKind::ObjectName(n),
                        _,
                    ) => Some(object_name(n)?.last().cloned().unwrap_or_default()),
                    ast::SelectItem::QualifiedWildcard(..) => {
                        return Err(unsupported("this wildcard"))
                    }
                    _ => None,
                };
                let rels: Vec<ScopeRel> = scope
                    .innermost()
                    .iter()
                    .filter(|r| only.as_ref().is_none_or(|o| *o == r.alias))
                    .cloned()
                    .collect();
                if rels.is_empty() {
                    return Err(EngineError::UndefinedTable {
                        name: only.unwrap_or_else(|| "*".into()),
                    });
                }
                for rel in rels {
                    for (i, (name, ty)) in rel.columns.iter().enumerate() {
                        if let Some(t) = rel.table {
                            self.seen.entry(t).or_default().insert(name.clone());
                        }
                        items.push((Expr::Column(rel.offset + i), ty.clone(), name.clone()));
                    }
                }
            }
            _ => return Err(unsupported("this select item")),
        }
        Ok(())
    }

    /// A GROUP BY item: an output ordinal, an output alias, or an input expression.
    fn group_key(
        &mut self,
        g: &ast::Expr,
        scope: &Scope,
        items: &[(Expr, ColType, String)],
    ) -> Result<(Expr, ColType), EngineError> {
        if let ast::Expr::Value(v) = g {
            if let ast::Value::Number(n, _) = &v.value {
                let pos: usize = n.parse().unwrap_or(0);
                return items
                    .get(pos.wrapping_sub(1))
                    .map(|i| (i.0.clone(), i.1.clone()))
                    .ok_or_else(|| EngineError::InvalidDefiningQuery {
                        message: format!("GROUP BY position {n} is not in select list"),
                    });
            }
        }
        match self.expr(g, scope, &mut None) {
            Err(EngineError::UndefinedColumn { name }) => {
                match items.iter().find(|i| i.2 == name) {
                    Some(i) => Ok((i.0.clone(), i.1.clone())),
                    None => Err(EngineError::UndefinedColumn { name }),
                }
            }
            other => other,
        }
    }

    fn from(
        &mut self,
        from: &[ast::TableWithJoins],
    ) -> Result<(Operator, Vec<ScopeRel>), EngineError> {
        let mut acc: Option<(Operator, Vec<ScopeRel>)> = None;
        for twj in from {
            let (op, rels) = self.table_with_joins(twj)?;
            acc = Some(match acc {
                None => (op, rels),
                Some((left, mut lrels)) => {
                    let la = left.arity();
                    lrels.extend(shift_rels(rels, la));
                    (Join::inner(left, op, Expr::bool(true)), lrels)
                }
            });
        }
        let (op, rels) = acc.ok_or_else(|| unsupported("SELECT without FROM"))?;
        let mut aliases = BTreeSet::new();
        for r in &rels {
            if !aliases.insert(r.alias.clone()) {
                return Err(EngineError::DuplicateAlias {
                    name: r.alias.clone(),
                });
            }
        }
        Ok((op, rels))
    }

    fn table_with_joins(
        &mut self,
        twj: &ast::TableWithJoins,
    ) -> Result<(Operator, Vec<ScopeRel>), EngineError> {
        let (mut op, mut rels) = self.factor(&twj.relation)?;
        for join in &twj.joins {
            let (right, rrels) = self.factor(&join.relation)?;
            let la = op.arity();
            let left_rels = rels.len();
            rels.extend(shift_rels(rrels, la));
            use ast::JoinOperator as J;
            let (kind, constraint) = match &join.join_operator {
                J::Join(c) | J::Inner(c) => (JoinKind::Inner, Some(c)),
                J::Left(c) | J::LeftOuter(c) => (JoinKind::Left, Some(c)),
                J::Right(c) | J::RightOuter(c) => (JoinKind::Right, Some(c)),
                J::FullOuter(c) => (JoinKind::Full, Some(c)),
                J::CrossJoin(ast::JoinConstraint::None) => (JoinKind::Inner, None),
                _ => return Err(unsupported("this join type")),
            };
            let on = match constraint {
                None => Expr::bool(true),
                Some(ast::JoinConstraint::On(e)) => {
                    self.expr(e, &Scope::single(rels.clone()), &mut None)?.0
                }
                Some(ast::JoinConstraint::None) => Expr::bool(true),
                Some(_) => return Err(unsupported("JOIN … USING and NATURAL JOIN")),
            };
            // The side(s) an outer join pads with NULLs become nullable for everything above.
            let padded = match kind {
                JoinKind::Inner => 0..0,
                JoinKind::Left => left_rels..rels.len(),
                JoinKind::Right => 0..left_rels,
                JoinKind::Full => 0..rels.len(),
            };
            for rel in &mut rels[padded] {
                rel.columns.iter_mut().for_each(|c| c.1.nullable = true);
            }
            op = Operator::Join(Join {
                kind,
                left: bx(op),
                right: bx(right),
                on,
            });
        }
        Ok((op, rels))
    }

    fn factor(&mut self, tf: &ast::TableFactor) -> Result<(Operator, Vec<ScopeRel>), EngineError> {
        let (mut planned, table, alias, default_alias) = match tf {
            ast::TableFactor::Table {
                name,
                alias,
                args: None,
                with_hints,
                version: None,
                partitions,
                with_ordinality: false,
                json_path: None,
                sample: None,
                index_hints,
                ..
            } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
                // Every clause of the table reference is matched above: one the engine does not
                // model (TABLESAMPLE, …) must reach the fallback arm and make the query not
                // differentiable, never be dropped silently.
                let (planned, table) = self.relation(name)?;
                let default = object_name(name)?.last().cloned().unwrap_or_default();
                (planned, table, alias, default)
            }
            ast::TableFactor::Derived {
                lateral: false,
                subquery,
                alias,
                ..
            } => {
                let planned = self.query(subquery)?;
                let default = alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default();
                (planned, None, alias, default)
            }
            ast::TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } => return self.table_with_joins(table_with_joins),
            ast::TableFactor::Table {
                sample: Some(_), ..
            } => {
                // A sample is not repeatable: no refresh can match a later evaluation.
                return Err(EngineError::NotDifferentiable(Reason::Construct {
                    construct: "TABLESAMPLE".to_string(),
                }));
            }
            _ => {
                return Err(EngineError::NotDifferentiable(
                    Reason::LateralOrTableFunction,
                ))
            }
        };
        if let Some(a) = alias {
            rename(&mut planned, a)?;
        }
        let types = planned.op.columns();
        let rel = ScopeRel {
            alias: alias.as_ref().map_or(default_alias, |a| fold(&a.name)),
            table,
            columns: planned.names.iter().cloned().zip(types).collect(),
            offset: 0,
        };
        Ok((planned.op, vec![rel]))
    }

    fn semi_join(
        &mut self,
        left: Operator,
        scope: &Scope,
        sub: SubqueryConjunct<'_>,
    ) -> Result<Operator, EngineError> {
        let (query, negated) = match &sub {
            SubqueryConjunct::Exists(q, n) | SubqueryConjunct::In(_, q, n) => (*q, *n),
        };
        let select = match query.body.as_ref() {
            ast::SetExpr::Select(s)
                if query.with.is_none()
                    && query.limit_clause.is_none()
                    && query.fetch.is_none()
                    && s.distinct.is_none()
                    && s.having.is_none()
                    && matches!(&s.group_by, ast::GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty()) =>
            {
                s
            }
            _ => return Err(EngineError::NotDifferentiable(Reason::SubqueryInExpression)),
        };
        let la = left.arity();
        let (right, rrels) = self.from(&select.from)?;
        let mut levels = scope.levels.clone();
        levels.push(shift_rels(rrels, la));
        let inner = Scope { levels };
        let mut conds = Vec::new();
        if let Some(w) = &select.selection {
            conds.push(self.expr(w, &inner, &mut None)?.0);
        }
        if let SubqueryConjunct::In(x, _, _) = &sub {
            let item = match select.projection.as_slice() {
                [ast::SelectItem::UnnamedExpr(e)]
                | [ast::SelectItem::ExprWithAlias { expr: e, .. }] => e,
                _ => {
                    return Err(EngineError::Syntax {
                        message: "subquery has too many columns".into(),
                    })
                }
            };
            let (xv, _) = self.expr(x, scope, &mut None)?;
            let (yv, _) = self.expr(item, &inner, &mut None)?;
            let eq = Expr::binary(BinOp::Eq, xv, yv);
            conds.push(if negated {
                // x NOT IN (…) is false or NULL as soon as one row has x = y TRUE or NULL.
                Expr::IsBool {
                    arg: Box::new(eq),
                    value: false,
                    negated: true,
                }
            } else {
                eq
            });
        }
        Ok(Operator::SemiJoin(SemiJoin {
            left: bx(left),
            right: bx(right),
            on: Expr::and_all(conds),
            mode: if negated {
                SemiMode::NonPositive
            } else {
                SemiMode::Positive
            },
        }))
    }
}

fn contains_agg(e: &Expr) -> bool {
    let mut found = false;
    e.visit(&mut |x| {
        if let Expr::Column(c) = x {
            found |= *c >= AGG_BASE;
        }
    });
    found
}

/// Rewrites an expression over input rows into one over `keys ++ aggregates`.
fn post_aggregate(e: &Expr, keys: &[Expr]) -> Result<Expr, EngineError> {
    let mut error = None;
    let out = e.transform(&mut |x| {
        if let Some(i) = keys.iter().position(|k| k == x) {
            return Some(Expr::Column(i));
        }
        match x {
            Expr::Column(c) if *c >= AGG_BASE => Some(Expr::Column(keys.len() + (c - AGG_BASE))),
            Expr::Column(_) => {
                error = Some(EngineError::Grouping {
                    message: "column must appear in the GROUP BY clause or be used in an aggregate function".into(),
                });
                Some(x.clone())
            }
            _ => None,
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
