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
use super::scope::{Scope, ScopeRel};
use super::{fold, object_name, Planner};
use crate::error::{EngineError, Reason};
use crate::expr::Expr;
use crate::operator::{bx, ColType, FlatMap, Operator};
use crate::types::SqlType;

/// Placeholders of the select list's set-returning call: `Column(SRF_BASE + j)`.
pub const SRF_BASE: usize = 1 << 52;

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
