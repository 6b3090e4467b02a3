//! One SELECT block → operator tree: FROM (tables, derived tables, CTE references, joins),
//! WHERE (through `conditions`: conjuncts pushed into inner joins, semi and anti joins,
//! decorrelated subqueries), GROUP BY with aggregates and HAVING (their scalar subqueries
//! joined after the aggregate), the select list and DISTINCT.
//! Invariant: an aggregate query's select list and HAVING see the groups only: a column
//! outside GROUP BY and aggregates is an error (42803), also inside a subquery there.

use std::collections::BTreeSet;

use sqlparser::ast;

use super::conditions::{
    conjuncts, has_subquery, item_expr, join_back, nested, shift_rels, Deferred, DeferredScope,
    SQ_BASE,
};
use super::expr::AGG_BASE;
use super::lateral::{expand_srf, place_srf, table_function};
use super::scope::{Scope, ScopeRel};
use super::window::{first_per_partition, place_windows, WIN_BASE};
use super::{fold, object_name, rename, Planned, Planner};
use crate::error::{EngineError, Reason};
use crate::expr::Expr;
use crate::operator::{
    bx, AggCall, Aggregate, ColType, Distinct, Filter, Join, JoinKind, Operator, Project, SortKey,
    TopK,
};

fn unsupported(construct: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::Construct {
        construct: construct.to_string(),
    })
}

pub(crate) fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(id) => fold(id),
        ast::Expr::CompoundIdentifier(ids) => ids.last().map(fold).unwrap_or_default(),
        ast::Expr::Function(f) => object_name(&f.name)
            .ok()
            .and_then(|p| p.last().cloned())
            .unwrap_or_default(),
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => output_name(expr),
        // PostgreSQL names a scalar subquery's column after the subquery's own column.
        ast::Expr::Subquery(q) => match q.body.as_ref() {
            ast::SetExpr::Select(s) => match s.projection.as_slice() {
                [ast::SelectItem::ExprWithAlias { alias, .. }] => fold(alias),
                [ast::SelectItem::UnnamedExpr(e)] => output_name(e),
                _ => "?column?".to_string(),
            },
            _ => "?column?".to_string(),
        },
        ast::Expr::Exists { negated: false, .. } => "exists".to_string(),
        ast::Expr::Case { .. } => "case".to_string(),
        _ => "?column?".to_string(),
    }
}

impl Planner<'_> {
    pub(crate) fn select(&mut self, s: &ast::Select) -> Result<Planned, EngineError> {
        let query_order = self.query_order.take().unwrap_or_default();
        let query_limit = self.query_limit.take();
        if s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || s.qualify.is_some()
            || !s.connect_by.is_empty()
        {
            return Err(unsupported("this SELECT clause"));
        }
        let branch = self.grouping_branch.take();
        if branch.is_some() && query_limit.is_some() {
            return Err(EngineError::NotDifferentiable(Reason::LimitOrOffset {
                detail: "grouping sets".to_string(),
            }));
        }
        if branch.is_some() && matches!(s.distinct, Some(ast::Distinct::On(_))) {
            return Err(EngineError::NotDifferentiable(Reason::DistinctOn {
                detail: "grouping sets".to_string(),
            }));
        }
        let (mut op, rels) = self.from(&s.from)?;
        let scope = self.scope_of(rels);
        // One branch of a grouping-sets query: its left-out grouping expressions are NULL.
        let nulled;
        let s = match &branch {
            Some(b) => {
                nulled = self.null_left_out(s, b, &scope)?;
                &nulled
            }
            None => s,
        };
        let marks = self.scalars.len();
        let outer_deferred = self.deferred.take();
        let mut base = None;
        if let Some(selection) = &s.selection {
            let mut parts = Vec::new();
            conjuncts(selection, &mut parts);
            let (filtered, rows) = self.where_conjuncts_base(op, &scope, &parts)?;
            op = filtered;
            base = rows;
        }
        let group_exprs = match &s.group_by {
            // ROLLUP (…), CUBE (…) and GROUPING SETS (…) parse as expressions of the list.
            ast::GroupByExpr::Expressions(exprs, modifiers)
                if modifiers.is_empty()
                    && !exprs.iter().any(|e| {
                        matches!(
                            e,
                            ast::Expr::Rollup(_) | ast::Expr::Cube(_) | ast::Expr::GroupingSets(_)
                        )
                    }) =>
            {
                exprs
            }
            // Grouping sets reach here only in forms `grouping` does not expand.
            _ => {
                return Err(EngineError::NotDifferentiable(Reason::GroupingSets {
                    detail: "this GROUP BY form".to_string(),
                }))
            }
        };
        let projection: Vec<ast::SelectItem> = s
            .projection
            .iter()
            .map(|item| self.counted_item(item, &scope))
            .collect();
        let having_expr = s.having.as_ref().map(|h| self.counted(h, &scope));
        let aggregate_query = !group_exprs.is_empty()
            || s.having.is_some()
            || projection
                .iter()
                .filter_map(item_expr)
                .any(|e| nested(e).aggregate);
        if aggregate_query {
            // Scalar subqueries of the select list and HAVING see the groups: they are joined
            // after the aggregate on group keys (placeholders until then).
            self.deferred = Some(DeferredScope {
                input: op.clone(),
                list: Vec::new(),
            });
        } else {
            let subqueries: Vec<ast::Query> = projection
                .iter()
                .filter_map(item_expr)
                .flat_map(|e| nested(e).scalars)
                .collect();
            if !subqueries.is_empty() {
                let base = base.unwrap_or_else(|| op.clone());
                for q in &subqueries {
                    op = self.attach_scalar(op, &base, &scope, q)?;
                }
            }
        }
        let mut aggs: Vec<AggCall> = Vec::new();
        let mut items: Vec<(Expr, ColType, String)> = Vec::new();
        // Window calls are collected from the select list only.
        let outer_named = std::mem::replace(&mut self.named_windows, s.named_window.clone());
        let outer_windows = self.windows.replace(Vec::new());
        let outer_srfs = self.srfs.replace(Vec::new());
        let listed = projection
            .iter()
            .try_for_each(|item| self.select_item(item, &scope, &mut aggs, &mut items));
        let windows = std::mem::replace(&mut self.windows, outer_windows).unwrap_or_default();
        self.named_windows = outer_named;
        let srfs = std::mem::replace(&mut self.srfs, outer_srfs).unwrap_or_default();
        if !srfs.is_empty() && branch.is_some() {
            return Err(EngineError::NotDifferentiable(Reason::GroupingSets {
                detail: "set-returning functions".to_string(),
            }));
        }
        listed?;
        if !windows.is_empty() && branch.is_some() {
            return Err(EngineError::NotDifferentiable(Reason::GroupingSets {
                detail: "window functions".to_string(),
            }));
        }
        let distinct_on = match &s.distinct {
            Some(ast::Distinct::On(exprs)) => {
                Some(self.distinct_on_keys(exprs, &query_order, &scope, &mut aggs, &items)?)
            }
            _ => None,
        };
        let top_order = match query_limit {
            Some(_) => Some(self.order_keys(&query_order, &scope, &mut aggs, &items, "LIMIT")?),
            None => None,
        };
        let mut having = having_expr
            .as_ref()
            .map(|h| self.expr(h, &scope, &mut Some(&mut aggs)))
            .transpose()?;
        let deferred = std::mem::replace(&mut self.deferred, outer_deferred)
            .map(|d| d.list)
            .unwrap_or_default();
        let mut grouped_by: Option<Vec<Expr>> = None;
        if aggregate_query || !aggs.is_empty() {
            let mut keys: Vec<(Expr, ColType)> = Vec::new();
            for g in group_exprs {
                keys.push(self.group_key(g, &scope, &items)?);
            }
            if keys.iter().any(|(k, _)| contains_subquery_value(k)) {
                // GROUP BY naming a select item that is a scalar subquery.
                return Err(EngineError::NotDifferentiable(Reason::SubqueryInExpression));
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
                keys: key_exprs.clone(),
                aggs,
            });
            for (k, d) in deferred.into_iter().enumerate() {
                let (joined, value) = join_deferred(op, d, &key_exprs)?;
                op = joined;
                let substitute = |e: &Expr| {
                    e.transform(&mut |x| match x {
                        Expr::Column(c) if *c == SQ_BASE + k => Some(value.clone()),
                        _ => None,
                    })
                };
                for item in &mut items {
                    item.0 = substitute(&item.0);
                }
                if let Some(h) = &mut having {
                    h.0 = substitute(&h.0);
                }
            }
            if let Some((pred, _)) = having {
                op = Operator::Filter(Filter {
                    input: bx(op),
                    predicate: pred,
                });
            }
            grouped_by = Some(key_exprs);
        }
        // Window functions see the groups (after HAVING); DISTINCT ON is one more window.
        let rewrite = |e: &Expr| match &grouped_by {
            Some(keys) => post_aggregate(e, keys),
            None => Ok(e.clone()),
        };
        let mut placed = Vec::new();
        if !windows.is_empty() {
            let (windowed, at) = self.windowed(op, windows, &rewrite)?;
            op = windowed;
            placed = at;
            for item in &mut items {
                item.0 = place_windows(&item.0, &placed);
            }
        }
        let rewrite = |e: &Expr| rewrite(e).map(|x| place_windows(&x, &placed));
        // A set-returning call of the select list: after the windows, before DISTINCT ON,
        // ORDER BY and LIMIT, which see its rows.
        let (expanded, srf_value) = expand_srf(op, srfs, &rewrite)?;
        op = expanded;
        let rewrite = |e: &Expr| {
            rewrite(e).map(|x| match &srf_value {
                Some(v) => place_srf(&x, v),
                None => x,
            })
        };
        if let Some(v) = &srf_value {
            for item in &mut items {
                item.0 = place_srf(&item.0, v);
            }
        }
        if let Some((keys, order)) = distinct_on {
            op = first_per_partition(op, keys, order, &rewrite)?;
        }
        let distinct = matches!(s.distinct, Some(ast::Distinct::Distinct));
        let rewrite_key = |k: &SortKey| -> Result<SortKey, EngineError> {
            Ok(SortKey {
                expr: rewrite(&k.expr)?,
                ..k.clone()
            })
        };
        let top = match (query_limit, top_order) {
            (Some((offset, limit)), Some(order)) => {
                let order: Vec<SortKey> =
                    order.iter().map(rewrite_key).collect::<Result<_, _>>()?;
                Some((offset, limit, order))
            }
            _ => None,
        };
        // ORDER BY … LIMIT: over the rows before the select list, or, with DISTINCT, over its
        // output (whose columns ORDER BY must name).
        let mut top_after = None;
        if let Some((offset, limit, order)) = top {
            if distinct {
                top_after = Some((offset, limit, order));
            } else {
                op = Operator::TopK(TopK {
                    input: bx(op),
                    order_by: order,
                    offset,
                    limit,
                    widen_by: None,
                });
            }
        }
        self.scalars.truncate(marks);
        let names: Vec<String> = items.iter().map(|i| i.2.clone()).collect();
        op = Operator::Project(Project {
            input: bx(op),
            exprs: items.iter().map(|i| i.0.clone()).collect(),
            types: items.iter().map(|i| i.1.clone()).collect(),
        });
        if distinct {
            op = Operator::Distinct(Distinct { input: bx(op) });
        }
        if let Some((offset, limit, order)) = top_after {
            let exprs = match &op {
                Operator::Distinct(d) => match d.input.as_ref() {
                    Operator::Project(p) => p.exprs.clone(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let mut keys = Vec::new();
            for k in order {
                let Some(position) = exprs.iter().position(|e| *e == k.expr) else {
                    return Err(EngineError::NotDifferentiable(Reason::LimitOrOffset {
                        detail: "SELECT DISTINCT ordered by an expression outside its select list"
                            .to_string(),
                    }));
                };
                keys.push(SortKey {
                    expr: Expr::Column(position),
                    ..k
                });
            }
            op = Operator::TopK(TopK {
                input: bx(op),
                order_by: keys,
                offset,
                limit,
                widen_by: None,
            });
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
        if let Some(item) = super::select_item_at(g, items, "GROUP BY") {
            return item;
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

    pub(crate) fn from(
        &mut self,
        from: &[ast::TableWithJoins],
    ) -> Result<(Operator, Vec<ScopeRel>), EngineError> {
        let mut acc: Option<(Operator, Vec<ScopeRel>)> = None;
        for twj in from {
            if let ast::TableFactor::Derived {
                lateral: true,
                subquery,
                alias,
                ..
            } = &twj.relation
            {
                let (Some((left, mut lrels)), true) = (acc.take(), twj.joins.is_empty()) else {
                    return Err(EngineError::NotDifferentiable(
                        Reason::LateralOrTableFunction,
                    ));
                };
                let (op, rel) =
                    self.lateral_subquery(left, &lrels, subquery, alias.as_ref(), false, None)?;
                lrels.push(rel);
                acc = Some((op, lrels));
                continue;
            }
            if let Some(tf) = table_function(&twj.relation) {
                let tf = tf?;
                let (Some((left, mut lrels)), true) = (acc.take(), twj.joins.is_empty()) else {
                    return Err(EngineError::NotDifferentiable(
                        Reason::LateralOrTableFunction,
                    ));
                };
                let (op, rel) = self.flat_map(left, &lrels, &tf, false)?;
                lrels.push(rel);
                acc = Some((op, lrels));
                continue;
            }
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
            if let ast::TableFactor::Derived {
                lateral: true,
                subquery,
                alias,
                ..
            } = &join.relation
            {
                let (outer, on) = lateral_join(&join.join_operator)?;
                let (next, rel) =
                    self.lateral_subquery(op, &rels, subquery, alias.as_ref(), outer, on)?;
                op = next;
                rels.push(rel);
                continue;
            }
            if let Some(tf) = table_function(&join.relation) {
                let tf = tf?;
                // A function's rows are joined as a flat map: LEFT only with ON true.
                let (outer, on) = match lateral_join(&join.join_operator)? {
                    (true, Some(ast::Expr::Value(v)))
                        if matches!(v.value, ast::Value::Boolean(true)) =>
                    {
                        (true, None)
                    }
                    (true, _) => {
                        return Err(EngineError::NotDifferentiable(
                            Reason::LateralOrTableFunction,
                        ))
                    }
                    inner => inner,
                };
                let (flat, rel) = self.flat_map(op, &rels, &tf, outer)?;
                op = flat;
                rels.push(rel);
                if let Some(e) = on {
                    let scope = self.scope_of(rels.clone());
                    let mut parts = Vec::new();
                    conjuncts(e, &mut parts);
                    op = self.where_conjuncts(op, &scope, &parts)?;
                }
                continue;
            }
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
            // An inner join's ON is a filter of the joined rows: its conjuncts with subqueries
            // are planned as WHERE's are, after the join (an outer join's cannot be).
            let mut with_subqueries = Vec::new();
            let on = match constraint {
                None => Expr::bool(true),
                Some(ast::JoinConstraint::On(e)) => {
                    let mut parts = Vec::new();
                    conjuncts(e, &mut parts);
                    let (deeper, plain): (Vec<ast::Expr>, Vec<ast::Expr>) =
                        parts.into_iter().partition(has_subquery);
                    if !deeper.is_empty() && kind != JoinKind::Inner {
                        return Err(EngineError::NotDifferentiable(Reason::SubqueryInExpression));
                    }
                    with_subqueries = deeper;
                    let scope = self.scope_of(rels.clone());
                    let mut on = Vec::new();
                    for part in &plain {
                        on.push(self.expr(part, &scope, &mut None)?.0);
                    }
                    Expr::and_all(on)
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
            if !with_subqueries.is_empty() {
                let scope = self.scope_of(rels.clone());
                op = self.where_conjuncts(op, &scope, &with_subqueries)?;
            }
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

    /// A select item with its EXISTS / IN rewritten, keeping PostgreSQL's column name.
    fn counted_item(&mut self, item: &ast::SelectItem, scope: &Scope) -> ast::SelectItem {
        match item {
            ast::SelectItem::UnnamedExpr(e) => {
                let rewritten = self.counted(e, scope);
                if rewritten == *e {
                    return item.clone();
                }
                let name = output_name(e);
                ast::SelectItem::ExprWithAlias {
                    expr: rewritten,
                    alias: ast::Ident::with_quote('"', name),
                }
            }
            ast::SelectItem::ExprWithAlias { expr, alias } => ast::SelectItem::ExprWithAlias {
                expr: self.counted(expr, scope),
                alias: alias.clone(),
            },
            other => other.clone(),
        }
    }
}

fn contains_subquery_value(e: &Expr) -> bool {
    let mut found = false;
    e.visit(&mut |x| {
        if let Expr::Column(c) = x {
            found |= (SQ_BASE..AGG_BASE).contains(c);
        }
    });
    found
}

fn contains_agg(e: &Expr) -> bool {
    let mut found = false;
    e.visit(&mut |x| {
        if let Expr::Column(c) = x {
            found |= (AGG_BASE..WIN_BASE).contains(c);
        }
    });
    found
}

/// Joins deferred subquery `d` to the aggregate `op` (whose first columns are the group
/// keys `keys`): its correlation's outer sides and its value's outer references become group
/// keys (42803 otherwise, as PostgreSQL reports a subquery using an ungrouped column); returns
/// the join and the value over its row.
fn join_deferred(
    op: Operator,
    d: Deferred,
    keys: &[Expr],
) -> Result<(Operator, Expr), EngineError> {
    let at = op.arity();
    let la = d.la;
    // The subquery's own columns go to a band post_aggregate keeps, then after `at`.
    let band = SQ_BASE + (1 << 32);
    let lifted = d.value.map_columns(&|c| {
        if c >= la && c < AGG_BASE {
            band + (c - la)
        } else {
            c
        }
    });
    let value = post_aggregate(&lifted, keys)?.map_columns(&|c| {
        if (band..AGG_BASE).contains(&c) {
            at + (c - band)
        } else {
            c
        }
    });
    let outer: Vec<Expr> = d
        .keys
        .iter()
        .map(|k| post_aggregate(k, keys))
        .collect::<Result<_, _>>()?;
    let joined = join_back(op, d.op, outer, d.null_safe);
    Ok((joined, value))
}

/// Rewrites an expression over input rows into one over `keys ++ aggregates`.
fn post_aggregate(e: &Expr, keys: &[Expr]) -> Result<Expr, EngineError> {
    let mut error = None;
    let out = e.transform(&mut |x| {
        if let Some(i) = keys.iter().position(|k| k == x) {
            return Some(Expr::Column(i));
        }
        match x {
            // A window call, placed after the aggregate.
            Expr::Column(c) if *c >= WIN_BASE => Some(x.clone()),
            Expr::Column(c) if *c >= AGG_BASE => Some(Expr::Column(keys.len() + (c - AGG_BASE))),
            // A deferred scalar subquery's value, joined after the aggregate.
            Expr::Column(c) if (SQ_BASE..AGG_BASE).contains(c) => Some(x.clone()),
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

/// How a LATERAL item (a subquery or a set-returning function) is joined: `(outer, ON)` for
/// CROSS JOIN, `[INNER] JOIN … ON` and `LEFT [OUTER] JOIN … ON`; any other join is refused.
fn lateral_join(op: &ast::JoinOperator) -> Result<(bool, Option<&ast::Expr>), EngineError> {
    use ast::JoinOperator as J;
    match op {
        J::CrossJoin(ast::JoinConstraint::None) => Ok((false, None)),
        J::Join(ast::JoinConstraint::On(e)) | J::Inner(ast::JoinConstraint::On(e)) => {
            Ok((false, Some(e)))
        }
        J::Left(ast::JoinConstraint::On(e)) | J::LeftOuter(ast::JoinConstraint::On(e)) => {
            Ok((true, Some(e)))
        }
        _ => Err(EngineError::NotDifferentiable(
            Reason::LateralOrTableFunction,
        )),
    }
}
