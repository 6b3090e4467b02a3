//! Set-returning functions: in FROM after the relations whose columns they read (`FROM t,
//! unnest(t.tags) AS u(tag)`, `CROSS JOIN LATERAL jsonb_each(t.doc)`, `LEFT JOIN LATERAL
//! generate_series(1, t.n) AS g ON true`, `WITH ORDINALITY`), and one in the select list
//! (`SELECT id, jsonb_array_elements(doc) AS e FROM t`). Each is a `FlatMap` over the rows to
//! its left, linear. The columns a function returns are PostgreSQL's (its parse analysis of
//! the call over typed NULLs, with the query's alias), except `generate_series` over integers,
//! which the engine types and evaluates itself.
//!
//! Refused (FULL in AUTO, 0A000 otherwise): a function in FROM that reads no column to its
//! left (its rows never change: nothing to maintain incrementally), LATERAL subqueries, a
//! join to a function other than CROSS, INNER (ON a condition) or LEFT … ON true, named
//! arguments, more than one set-returning function in a select list (PostgreSQL runs them in
//! lockstep), and one whose result is a record.

use sqlparser::ast;

use super::expr::Typed;
use super::scope::{Scope, ScopeRel, SRF_BASE};
use super::{fold, object_name, Planner};
use crate::error::{EngineError, Reason};
use crate::expr::Expr;
use crate::names;
use crate::operator::{bx, ColType, FlatMap, Operator};
use crate::types::SqlType;

/// A set-returning function in FROM, whichever way the parser spelled it.
pub(crate) struct TableFunction<'a> {
    schema: Option<String>,
    name: String,
    args: Vec<&'a ast::Expr>,
    ordinality: bool,
    alias: Option<&'a ast::TableAlias>,
}

fn refused() -> EngineError {
    EngineError::NotDifferentiable(Reason::LateralOrTableFunction)
}

fn unnamed(args: &[ast::FunctionArg]) -> Result<Vec<&ast::Expr>, EngineError> {
    args.iter()
        .map(|a| match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => Ok(x),
            _ => Err(refused()),
        })
        .collect()
}

/// The set-returning call `tf` is, if it is one.
pub(crate) fn table_function(
    tf: &ast::TableFactor,
) -> Option<Result<TableFunction<'_>, EngineError>> {
    let split = |n: &ast::ObjectName| -> Result<(Option<String>, String), EngineError> {
        match object_name(n)?.as_slice() {
            [n] => Ok((None, n.clone())),
            [s, n] if s == "pg_catalog" => Ok((None, n.clone())),
            [s, n] => Ok((Some(s.clone()), n.clone())),
            _ => Err(refused()),
        }
    };
    let built = match tf {
        ast::TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality,
            ..
        } => Ok(TableFunction {
            schema: None,
            name: "unnest".to_string(),
            args: array_exprs.iter().collect(),
            ordinality: *with_ordinality,
            alias: alias.as_ref(),
        }),
        ast::TableFactor::Function {
            name,
            args,
            with_ordinality,
            alias,
            ..
        } => split(name).and_then(|(schema, name)| {
            Ok(TableFunction {
                schema,
                name,
                args: unnamed(args)?,
                ordinality: *with_ordinality,
                alias: alias.as_ref(),
            })
        }),
        ast::TableFactor::Table {
            name,
            alias,
            args: Some(args),
            with_ordinality,
            ..
        } if args.settings.is_none() => split(name).and_then(|(schema, name)| {
            Ok(TableFunction {
                schema,
                name,
                args: unnamed(&args.args)?,
                ordinality: *with_ordinality,
                alias: alias.as_ref(),
            })
        }),
        _ => return None,
    };
    Some(built)
}

fn quoted_call_name(schema: Option<&str>, name: &str) -> String {
    use crate::render::quote_ident;
    match schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(name)),
        None => quote_ident(name),
    }
}

/// The type of `generate_series` over integer arguments, which the engine types itself (and its
/// in-memory evaluator runs): int8 when an argument is, int4 otherwise. `None` for any other
/// call, which PostgreSQL types.
fn integer_series(schema: Option<&str>, name: &str, args: &[Typed]) -> Option<SqlType> {
    let ints = schema.is_none()
        && name == "generate_series"
        && (2..=3).contains(&args.len())
        && args.iter().all(|a| a.1.ty.is_integer());
    ints.then(|| {
        if args.iter().any(|a| a.1.ty == SqlType::int8()) {
            SqlType::int8()
        } else {
            SqlType::int4()
        }
    })
}

/// The call over `CAST(NULL AS type)` of each argument's type: what PostgreSQL is asked to type.
fn typed_null_call(schema: Option<&str>, name: &str, args: &[Typed]) -> String {
    let casts: Vec<String> = args
        .iter()
        .map(|a| format!("CAST(NULL AS {})", a.1.ty.sql()))
        .collect();
    format!("{}({})", quoted_call_name(schema, name), casts.join(", "))
}

impl Planner<'_> {
    /// `op` (whose relations are `rels`) with the set-returning call `tf` applied to each of
    /// its rows; `outer` keeps rows the call returns nothing for. Returns the relation the
    /// call adds to the scope.
    pub(crate) fn flat_map(
        &mut self,
        op: Operator,
        rels: &[ScopeRel],
        tf: &TableFunction<'_>,
        outer: bool,
    ) -> Result<(Operator, ScopeRel), EngineError> {
        let scope = self.scope_of(rels.to_vec());
        let mut args: Vec<Typed> = Vec::new();
        for a in &tf.args {
            args.push(self.expr(a, &scope, &mut None)?);
        }
        let mut read = std::collections::BTreeSet::new();
        args.iter().for_each(|a| a.0.columns(&mut read));
        if read.is_empty() {
            // Constant rows: a join with a relation that never changes.
            return Err(refused());
        }
        let rel_alias = tf.alias.map_or_else(|| tf.name.clone(), |a| fold(&a.name));
        let aliased: Vec<String> = tf
            .alias
            .map(|a| a.columns.iter().map(|c| fold(&c.name)).collect())
            .unwrap_or_default();
        let series = integer_series(tf.schema.as_deref(), &tf.name, &args);
        let columns: Vec<(String, ColType)> = if let Some(ty) = series {
            let value_name = aliased
                .first()
                .cloned()
                .unwrap_or_else(|| rel_alias.clone());
            let mut cols = vec![(value_name, ColType::new(ty, outer))];
            if tf.ordinality {
                let name = aliased
                    .get(1)
                    .cloned()
                    .unwrap_or_else(|| "ordinality".into());
                cols.push((name, ColType::new(SqlType::int8(), outer)));
            }
            cols
        } else {
            let probe = format!(
                "{}{}{}",
                typed_null_call(tf.schema.as_deref(), &tf.name, &args),
                if tf.ordinality {
                    " WITH ORDINALITY"
                } else {
                    ""
                },
                tf.alias
                    .map(|a| {
                        // As written (a column definition list included), without `AS` twice.
                        let cols: Vec<String> = a.columns.iter().map(|c| c.to_string()).collect();
                        if cols.is_empty() {
                            format!(" AS {}", a.name)
                        } else {
                            format!(" AS {}({})", a.name, cols.join(", "))
                        }
                    })
                    .unwrap_or_default()
            );
            self.catalog
                .relation_columns(&probe)
                .ok_or_else(refused)?
                .into_iter()
                .map(|(n, t)| (n, ColType::new(SqlType::new(&t), true)))
                .collect()
        };
        let offset = op.arity();
        let flat = Operator::FlatMap(FlatMap {
            input: bx(op),
            name: tf.name.clone(),
            schema: tf.schema.clone(),
            args: args.into_iter().map(|a| a.0).collect(),
            ordinality: tf.ordinality,
            outer,
            types: columns.iter().map(|c| c.1.clone()).collect(),
        });
        let rel = ScopeRel {
            alias: rel_alias,
            table: None,
            columns,
            offset,
        };
        Ok((flat, rel))
    }

    /// A set-returning call of the select list: planned as its arguments and typed by
    /// PostgreSQL; the placeholder of its value.
    pub(crate) fn select_list_srf(
        &mut self,
        f: &ast::Function,
        schema: Option<String>,
        name: String,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<crate::operator::AggCall>>,
    ) -> Result<Typed, EngineError> {
        let srf_refused = |name: &str| {
            EngineError::NotDifferentiable(Reason::SetReturningFunction {
                name: name.to_string(),
            })
        };
        // Taken while its arguments are planned: a set-returning call inside is refused.
        let Some(mut pending) = self.srfs.take() else {
            return Err(srf_refused(&name));
        };
        let planned = (|| {
            if !super::expr::plain_arguments(f) || f.filter.is_some() || !f.within_group.is_empty()
            {
                return Err(srf_refused(&name));
            }
            let (args, _, _, _) = self.args(f, scope, aggs)?;
            let ty = match integer_series(schema.as_deref(), &name, &args) {
                Some(ty) => ty,
                None => {
                    let probe = typed_null_call(schema.as_deref(), &name, &args);
                    match self.catalog.expression_type(&probe) {
                        Some(t) if t != "record" => SqlType::new(&t),
                        _ => return Err(srf_refused(&name)),
                    }
                }
            };
            Ok(PendingSrf {
                name: name.clone(),
                schema: schema.clone(),
                args: args.into_iter().map(|a| a.0).collect(),
                ty: ColType::new(ty, true),
            })
        })();
        let result = planned.map(|p| {
            let ty = p.ty.clone();
            pending.push(p);
            (Expr::Column(SRF_BASE + pending.len() - 1), ty)
        });
        self.srfs = Some(pending);
        result
    }
}

/// A set-returning call of the select list, until `expand_srf` places it.
#[derive(Debug, Clone)]
pub(crate) struct PendingSrf {
    name: String,
    schema: Option<String>,
    args: Vec<Expr>,
    ty: ColType,
}

/// `op` with the select list's set-returning call applied to each row (`rewrite` turns its
/// arguments into expressions over `op`), and the expression of its value.
pub(crate) fn expand_srf(
    op: Operator,
    pending: Vec<PendingSrf>,
    rewrite: &dyn Fn(&Expr) -> Result<Expr, EngineError>,
) -> Result<(Operator, Option<Expr>), EngineError> {
    let mut pending = pending.into_iter();
    let Some(srf) = pending.next() else {
        return Ok((op, None));
    };
    if let Some(second) = pending.next() {
        // Several set-returning calls run in lockstep, padded to the longest: not a flat map.
        return Err(EngineError::NotDifferentiable(
            Reason::SetReturningFunction { name: second.name },
        ));
    }
    let at = op.arity();
    let flat = Operator::FlatMap(FlatMap {
        input: bx(op),
        name: srf.name,
        schema: srf.schema,
        args: srf.args.iter().map(rewrite).collect::<Result<_, _>>()?,
        ordinality: false,
        outer: false,
        types: vec![srf.ty],
    });
    Ok((flat, Some(Expr::Column(at))))
}

/// Replaces the set-returning placeholder in `e` by `value`.
pub(crate) fn place_srf(e: &Expr, value: &Expr) -> Expr {
    e.transform(&mut |x| match x {
        Expr::Column(c) if *c >= SRF_BASE => Some(value.clone()),
        _ => None,
    })
}

/// The relation names a FROM list introduces (aliases, or tables' last names).
fn from_aliases(from: &[ast::TableWithJoins], out: &mut Vec<String>) {
    fn factor(f: &ast::TableFactor, out: &mut Vec<String>) {
        match f {
            ast::TableFactor::Table { name, alias, .. } => match alias {
                Some(a) => out.push(fold(&a.name)),
                None => {
                    if let Some(last) = object_name(name).ok().and_then(|p| p.last().cloned()) {
                        out.push(last);
                    }
                }
            },
            ast::TableFactor::NestedJoin {
                table_with_joins, ..
            } => from_aliases(std::slice::from_ref(table_with_joins), out),
            other => {
                if let Some(a) = table_alias(other) {
                    out.push(fold(&a.name));
                }
            }
        }
    }
    for twj in from {
        factor(&twj.relation, out);
        for j in &twj.joins {
            factor(&j.relation, out);
        }
    }
}

fn table_alias(f: &ast::TableFactor) -> Option<&ast::TableAlias> {
    match f {
        ast::TableFactor::Derived { alias, .. }
        | ast::TableFactor::Function { alias, .. }
        | ast::TableFactor::UNNEST { alias, .. } => alias.as_ref(),
        _ => None,
    }
}

/// The relation qualifiers `e` names (`rel.col`, `schema.rel.col`), and whether it has an
/// unqualified column.
fn qualifiers(e: &ast::Expr) -> (Vec<String>, bool) {
    let mut quals = Vec::new();
    let mut bare = false;
    let _ = ast::visit_expressions(e, |x: &ast::Expr| {
        match x {
            ast::Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                quals.push(fold(&parts[parts.len() - 2]));
            }
            ast::Expr::Identifier(_) => bare = true,
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    (quals, bare)
}

impl Planner<'_> {
    /// A LATERAL subquery (`FROM o, LATERAL (SELECT … FROM t WHERE t.k = o.k …) AS x`,
    /// `[LEFT] JOIN LATERAL (…) AS x ON …`) decorrelated into a join. The subquery may read
    /// the relations to its left only through conjuncts `inner = outer` of its WHERE; those
    /// become the join's condition on the inner sides, which the subquery returns as hidden
    /// key columns, and everything the subquery does per outer row it does per key instead:
    /// DISTINCT and GROUP BY over its columns and the keys, ORDER BY … LIMIT/OFFSET as
    /// `row_number() OVER (PARTITION BY keys ORDER BY …)` kept within the bounds (a window and
    /// a filter, maintained as they are). Equal keys give equal rows, so joining each outer
    /// row to its key's rows is the lateral join.
    ///
    /// Refused (`LateralOrTableFunction`): an outer column anywhere else, a condition on it
    /// other than equality, an aggregate without GROUP BY (one row per outer row even when
    /// none match: the count bug), window functions, LIMIT without ORDER BY, set operations,
    /// WITH — and whatever the rewritten subquery fails to plan.
    pub(crate) fn lateral_subquery(
        &mut self,
        left: Operator,
        rels: &[ScopeRel],
        subquery: &ast::Query,
        alias: Option<&ast::TableAlias>,
        outer: bool,
        on: Option<&ast::Expr>,
    ) -> Result<(Operator, ScopeRel), EngineError> {
        let q = subquery;
        let ast::SetExpr::Select(s) = q.body.as_ref() else {
            return Err(refused());
        };
        if q.with.is_some()
            || !q.locks.is_empty()
            || q.for_clause.is_some()
            || matches!(s.distinct, Some(ast::Distinct::On(_)))
            || s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.qualify.is_some()
            || !s.named_window.is_empty()
            || s.prewhere.is_some()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
        {
            return Err(refused());
        }
        let group_by = match &s.group_by {
            ast::GroupByExpr::Expressions(g, mods) if mods.is_empty() => g.clone(),
            _ => return Err(refused()),
        };
        // Aggregates without GROUP BY, and window functions, would mean one thing per outer
        // row and another per key.
        let mut aggregate = false;
        let mut window = false;
        let _ = ast::visit_expressions(&s.projection, |x: &ast::Expr| {
            if let ast::Expr::Function(f) = x {
                window |= f.over.is_some();
                if let Some((schema, name)) = super::call_name(f) {
                    aggregate |= self
                        .catalog
                        .function_kind(schema.as_deref(), &name)
                        .aggregate
                        .is_some();
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        if window || (aggregate || s.having.is_some()) && group_by.is_empty() {
            return Err(refused());
        }
        let mut inner = Vec::new();
        from_aliases(&s.from, &mut inner);
        let is_outer = |a: &String| !inner.contains(a) && rels.iter().any(|r| &r.alias == a);
        let mut keys: Vec<(ast::Expr, ast::Expr)> = Vec::new();
        let mut rest = Vec::new();
        let mut parts = Vec::new();
        if let Some(w) = &s.selection {
            super::conditions::conjuncts(w, &mut parts);
        }
        for c in parts {
            let (quals, _) = qualifiers(&c);
            if !quals.iter().any(is_outer) {
                rest.push(c);
                continue;
            }
            let ast::Expr::BinaryOp {
                left: l,
                op: ast::BinaryOperator::Eq,
                right: r,
            } = &c
            else {
                return Err(refused());
            };
            let side = |e: &ast::Expr| {
                let (quals, bare) = qualifiers(e);
                let all_outer = !quals.is_empty() && !bare && quals.iter().all(is_outer);
                let none_outer = !quals.iter().any(is_outer);
                (all_outer, none_outer)
            };
            match (side(l), side(r)) {
                ((_, true), (true, _)) => keys.push(((**l).clone(), (**r).clone())),
                ((true, _), (_, true)) => keys.push(((**r).clone(), (**l).clone())),
                _ => return Err(refused()),
            }
        }
        // The subquery per key.
        let mut list: Vec<String> = s.projection.iter().map(|i| i.to_string()).collect();
        for (i, (k, _)) in keys.iter().enumerate() {
            list.push(format!("{k} AS {}", names::lateral_key(i)));
        }
        let from: Vec<String> = s.from.iter().map(|f| f.to_string()).collect();
        let selection = if rest.is_empty() {
            String::new()
        } else {
            let rest: Vec<String> = rest.iter().map(|c| format!("({c})")).collect();
            format!(" WHERE {}", rest.join(" AND "))
        };
        let mut grouping = String::new();
        if !group_by.is_empty() {
            let mut g: Vec<String> = group_by.iter().map(|e| e.to_string()).collect();
            g.extend(keys.iter().map(|(k, _)| k.to_string()));
            grouping = format!(" GROUP BY {}", g.join(", "));
            if let Some(h) = &s.having {
                grouping.push_str(&format!(" HAVING {h}"));
            }
        }
        let distinct = if s.distinct.is_some() {
            "DISTINCT "
        } else {
            ""
        };
        let limit = super::window::bounds_of(q)?;
        let order: Vec<String> = match &q.order_by {
            Some(ast::OrderBy {
                kind: ast::OrderByKind::Expressions(e),
                ..
            }) => e.iter().map(|o| o.to_string()).collect(),
            Some(_) => return Err(refused()),
            None => Vec::new(),
        };
        let sql = match limit {
            None => format!(
                "SELECT {distinct}{} FROM {}{selection}{grouping}",
                list.join(", "),
                from.join(", ")
            ),
            Some((offset, count)) => {
                if order.is_empty() || !distinct.is_empty() {
                    return Err(refused());
                }
                let partition = if keys.is_empty() {
                    String::new()
                } else {
                    let k: Vec<String> = keys.iter().map(|(k, _)| k.to_string()).collect();
                    format!("PARTITION BY {} ", k.join(", "))
                };
                let row = names::LATERAL_ROW;
                let upper = match count {
                    Some(n) => format!(" AND {row} <= {}", offset + n),
                    None => String::new(),
                };
                format!(
                    "SELECT * FROM (SELECT {}, row_number() OVER ({partition}ORDER BY {}) AS \
                     {row} FROM {}{selection}{grouping}) AS {} WHERE {row} > {offset}{upper}",
                    list.join(", "),
                    order.join(", "),
                    from.join(", "),
                    names::LATERAL_ALIAS
                )
            }
        };
        let rewritten = super::parse(&sql).map_err(|_| refused())?;
        let mut planned = self.query(&rewritten).map_err(|_| refused())?;
        let hidden = keys.len() + usize::from(limit.is_some());
        let users = planned.names.len().checked_sub(hidden).ok_or_else(|| {
            EngineError::internal("a decorrelated LATERAL subquery lost its key columns")
        })?;
        if let Some(a) = alias {
            if a.columns.len() > users {
                return Err(refused());
            }
            super::rename(&mut planned, a)?;
        }
        let name = alias
            .map(|a| fold(&a.name))
            .ok_or_else(|| EngineError::Syntax {
                message: "subquery in FROM must have an alias".into(),
            })?;
        let la = left.arity();
        let types = planned.op.columns();
        let mut all = ScopeRel {
            alias: name.clone(),
            table: None,
            columns: planned.names.iter().cloned().zip(types).collect(),
            offset: la,
        };
        if outer {
            all.columns.iter_mut().for_each(|c| c.1.nullable = true);
        }
        let mut visible = all.clone();
        visible.columns.truncate(users);
        let quoted = ast::Ident::with_quote('"', name);
        let mut conditions = Vec::new();
        let mut full_rels = rels.to_vec();
        full_rels.push(all);
        let scope = self.scope_of(full_rels);
        for (i, (_, o)) in keys.iter().enumerate() {
            let eq = ast::Expr::BinaryOp {
                left: Box::new(ast::Expr::CompoundIdentifier(vec![
                    quoted.clone(),
                    ast::Ident::new(names::lateral_key(i)),
                ])),
                op: ast::BinaryOperator::Eq,
                right: Box::new(o.clone()),
            };
            conditions.push(self.expr(&eq, &scope, &mut None)?.0);
        }
        if let Some(on) = on {
            if super::conditions::has_subquery(on) {
                return Err(EngineError::NotDifferentiable(Reason::SubqueryInExpression));
            }
            let mut user_rels = rels.to_vec();
            user_rels.push(visible.clone());
            let scope = self.scope_of(user_rels);
            conditions.push(self.expr(on, &scope, &mut None)?.0);
        }
        let op = Operator::Join(crate::operator::Join {
            kind: if outer {
                crate::operator::JoinKind::Left
            } else {
                crate::operator::JoinKind::Inner
            },
            left: bx(left),
            right: bx(planned.op),
            on: Expr::and_all(conditions),
        });
        Ok((op, visible))
    }
}
