//! `GROUP BY` with `ROLLUP`, `CUBE` and `GROUPING SETS`: planned as PostgreSQL defines them,
//! the `UNION ALL` of one `GROUP BY` per grouping set, in which the grouping expressions
//! outside the set are NULL (outside aggregate calls) and `GROUPING(a, b, …)` is the constant
//! bit mask of the arguments left out of the set (the first argument the most significant
//! bit).
//!
//! Delta rule: the result is `Q₁ ⊎ … ⊎ Qₙ` (one grouped query per set; `SELECT DISTINCT`
//! applies once, over the union), and `UNION ALL` is linear, so `Δ(Q₁ ⊎ … ⊎ Qₙ) = ΔQ₁ ⊎ … ⊎ ΔQₙ`: each branch is an ordinary grouped query,
//! maintained as one (its touched groups), and the stream table holds the bag of all their
//! rows (two sets can yield equal rows: `ROLLUP (a)` over a NULL `a` gives the group of NULL
//! and the grand total the same key).
//!
//! Refused (maintained FULL in AUTO): more than [`MAX_GROUPING_SETS`] sets, sets nested in
//! `GROUPING SETS`, `GROUP BY DISTINCT` / modifiers, subqueries in the select list or `HAVING`
//! (an outer reference inside one would have to be nulled too), and an empty grouping set in a
//! query without aggregates. A reference to a grouping expression written differently from
//! the `GROUP BY` (`t.a` for `a`) is not recognised as that expression: the branch then reads
//! a column outside its `GROUP BY`, which is refused (42803), never answered wrongly.

use std::ops::ControlFlow;

use super::conditions::{item_expr, nested, sql_expr};
use super::scope::Scope;
use super::{object_name, Planned, Planner};
use crate::error::{EngineError, Reason};
use crate::operator::{bx, Distinct, Operator, UnionAll};
use sqlparser::ast::{self, VisitMut, VisitorMut};

/// The most grouping sets one `GROUP BY` may expand to (`CUBE` of six expressions).
pub(crate) const MAX_GROUPING_SETS: usize = 64;

fn refused(detail: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::GroupingSets {
        detail: detail.to_string(),
    })
}

/// The grouping sets of a `GROUP BY` clause (the cross product of its items' sets, as
/// PostgreSQL combines them), or `None` when it has no `ROLLUP`, `CUBE` or `GROUPING SETS`.
pub(crate) fn grouping_sets(
    group_by: &ast::GroupByExpr,
) -> Result<Option<Vec<Vec<ast::Expr>>>, EngineError> {
    let ast::GroupByExpr::Expressions(items, modifiers) = group_by else {
        return Ok(None);
    };
    let is_set = |e: &ast::Expr| {
        matches!(
            e,
            ast::Expr::Rollup(_) | ast::Expr::Cube(_) | ast::Expr::GroupingSets(_)
        )
    };
    if !items.iter().any(is_set) {
        return Ok(None);
    }
    if !modifiers.is_empty() {
        return Err(refused("GROUP BY modifiers with grouping sets"));
    }
    let mut sets: Vec<Vec<ast::Expr>> = vec![Vec::new()];
    for item in items {
        let item_sets: Vec<Vec<ast::Expr>> = match item {
            ast::Expr::Rollup(lists) => (0..=lists.len())
                .rev()
                .map(|n| lists[..n].concat())
                .collect(),
            ast::Expr::Cube(lists) => {
                if lists.len() > 6 {
                    return Err(refused("CUBE of more than six grouping expressions"));
                }
                (0..(1u32 << lists.len()))
                    .rev()
                    .map(|mask| {
                        lists
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << (lists.len() - 1 - i)) != 0)
                            .flat_map(|(_, l)| l.iter().cloned())
                            .collect()
                    })
                    .collect()
            }
            ast::Expr::GroupingSets(lists) => {
                if lists.iter().flatten().any(is_set) {
                    return Err(refused("grouping sets nested in GROUPING SETS"));
                }
                lists.clone()
            }
            plain => vec![vec![plain.clone()]],
        };
        sets = sets
            .iter()
            .flat_map(|s| {
                item_sets.iter().map(move |t| {
                    let mut both = s.clone();
                    both.extend(t.iter().cloned());
                    both
                })
            })
            .collect();
        if sets.len() > MAX_GROUPING_SETS {
            return Err(refused(&format!(
                "more than {MAX_GROUPING_SETS} grouping sets"
            )));
        }
    }
    Ok(Some(sets))
}

/// The grouping set a branch of a grouping-sets query keeps, and every grouping expression.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub(crate) all: Vec<ast::Expr>,
    pub(crate) kept: Vec<ast::Expr>,
}

/// Rewrites the select list and `HAVING` of one branch: aggregate calls are set aside (their
/// arguments see the input rows, where nothing is nulled), the grouping expressions outside
/// the set become `nulls` (typed NULLs), `GROUPING(…)` becomes its constant.
struct Nulling<'p, 'c> {
    planner: &'p Planner<'c>,
    branch: &'p Branch,
    nulls: &'p [(ast::Expr, ast::Expr)],
    set_aside: Vec<ast::Expr>,
    error: Option<EngineError>,
}

const SET_ASIDE: &str = "__pgt_grouping_aggregate_";

impl VisitorMut for Nulling<'_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<()> {
        if let Some((_, null)) = self.nulls.iter().find(|(k, _)| k == e) {
            *e = null.clone();
            return ControlFlow::Continue(());
        }
        let ast::Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        if f.over.is_none() && self.planner.is_catalog_aggregate(f) {
            let placeholder = ast::Expr::Identifier(ast::Ident::new(format!(
                "{SET_ASIDE}{}",
                self.set_aside.len()
            )));
            self.set_aside.push(std::mem::replace(e, placeholder));
            return ControlFlow::Continue(());
        }
        let is_grouping = object_name(&f.name).is_ok_and(|p| p == ["grouping"]);
        if !is_grouping {
            return ControlFlow::Continue(());
        }
        let ast::FunctionArguments::List(list) = &f.args else {
            self.error = Some(refused("GROUPING without arguments"));
            return ControlFlow::Break(());
        };
        let mut mask: i64 = 0;
        for a in &list.args {
            let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) = a else {
                self.error = Some(refused("this GROUPING argument"));
                return ControlFlow::Break(());
            };
            if !self.branch.all.contains(x) {
                self.error = Some(EngineError::Grouping {
                    message: "arguments to GROUPING must be grouping expressions of the \
                              associated query level"
                        .to_string(),
                });
                return ControlFlow::Break(());
            }
            mask = (mask << 1) | i64::from(!self.branch.kept.contains(x));
        }
        *e = ast::Expr::value(ast::Value::Number(mask.to_string(), false));
        ControlFlow::Continue(())
    }
}

/// Puts the aggregate calls set aside by [`Nulling`] back in place.
struct Restore(Vec<ast::Expr>);

impl VisitorMut for Restore {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<()> {
        if let ast::Expr::Identifier(id) = e {
            if let Some(i) = id
                .value
                .strip_prefix(SET_ASIDE)
                .and_then(|n| n.parse::<usize>().ok())
            {
                if let Some(original) = self.0.get(i) {
                    *e = original.clone();
                }
            }
        }
        ControlFlow::Continue(())
    }
}

impl Planner<'_> {
    /// A SELECT whose `GROUP BY` has grouping sets: the `UNION ALL` of one branch per set (see
    /// the module comment); any other SELECT as it is.
    pub(crate) fn select_grouped(&mut self, s: &ast::Select) -> Result<Planned, EngineError> {
        let Some(sets) = grouping_sets(&s.group_by)? else {
            return self.select(s);
        };
        let list_and_having: Vec<&ast::Expr> = s
            .projection
            .iter()
            .filter_map(item_expr)
            .chain(s.having.iter())
            .collect();
        let found: Vec<_> = list_and_having.iter().map(|e| nested(e)).collect();
        if found
            .iter()
            .any(|n| !n.scalars.is_empty() || n.has_subquery_predicate())
        {
            return Err(refused(
                "a subquery in the select list or HAVING of grouping sets",
            ));
        }
        let aggregates = found.iter().any(|n| n.aggregate);
        if !aggregates && s.having.is_none() && sets.iter().any(Vec::is_empty) {
            return Err(refused(
                "an empty grouping set in a query without aggregates",
            ));
        }
        let mut all: Vec<ast::Expr> = Vec::new();
        for e in sets.iter().flatten() {
            if !all.contains(e) {
                all.push(e.clone());
            }
        }
        // DISTINCT applies to the whole result, across sets (the group of a NULL key and a
        // subtotal can be equal rows): not per branch, but once over their UNION ALL.
        // (DISTINCT ON stays on the branches, which refuse it.)
        let distinct = matches!(s.distinct, Some(ast::Distinct::Distinct));
        let mut branches: Vec<Planned> = Vec::new();
        for kept in sets {
            let mut branch = s.clone();
            if distinct {
                branch.distinct = None;
            }
            branch.group_by = ast::GroupByExpr::Expressions(kept.clone(), Vec::new());
            self.grouping_branch = Some(Branch {
                all: all.clone(),
                kept,
            });
            let planned = self.select(&branch);
            self.grouping_branch = None;
            branches.push(planned?);
        }
        let names = branches
            .first()
            .map(|b| b.names.clone())
            .ok_or_else(|| EngineError::internal("grouping sets without a set"))?;
        let union = Operator::UnionAll(UnionAll {
            inputs: branches.into_iter().map(|b| b.op).collect(),
        });
        let op = if distinct {
            Operator::Distinct(Distinct { input: bx(union) })
        } else {
            union
        };
        Ok(Planned { op, names })
    }

    /// The select list and `HAVING` of `s` for one grouping-sets branch (see [`Nulling`]); the
    /// grouping expressions left out are typed by planning them over the FROM scope.
    pub(crate) fn null_left_out(
        &mut self,
        s: &ast::Select,
        branch: &Branch,
        scope: &Scope,
    ) -> Result<ast::Select, EngineError> {
        let mut nulls = Vec::new();
        for key in branch.all.iter().filter(|k| !branch.kept.contains(k)) {
            let (_, ty) = self.expr(key, scope, &mut None)?;
            let sql = format!("CAST(NULL AS {})", ty.ty.sql());
            let null = sql_expr(&sql)
                .ok_or_else(|| EngineError::internal(format!("typed NULL {sql} does not parse")))?;
            nulls.push((key.clone(), null));
        }
        let mut out = s.clone();
        let mut nulling = Nulling {
            planner: self,
            branch,
            nulls: &nulls,
            set_aside: Vec::new(),
            error: None,
        };
        for item in &mut out.projection {
            if let ast::SelectItem::UnnamedExpr(e) = item {
                // The column keeps the name it had before the rewrite.
                let name = ast::Ident::new(super::select::output_name(e));
                let mut e2 = e.clone();
                let _ = e2.visit(&mut nulling);
                *item = ast::SelectItem::ExprWithAlias {
                    expr: e2,
                    alias: name,
                };
            } else if let ast::SelectItem::ExprWithAlias { expr, .. } = item {
                let _ = expr.visit(&mut nulling);
            }
        }
        if let Some(h) = &mut out.having {
            let _ = h.visit(&mut nulling);
        }
        if let Some(e) = nulling.error.take() {
            return Err(e);
        }
        let mut restore = Restore(nulling.set_aside);
        let _ = out.projection.visit(&mut restore);
        if let Some(h) = &mut out.having {
            let _ = h.visit(&mut restore);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(sql: &str) -> Vec<Vec<String>> {
        let q = super::super::parse(sql).unwrap();
        let ast::SetExpr::Select(s) = q.body.as_ref() else {
            panic!("not a select")
        };
        grouping_sets(&s.group_by)
            .unwrap()
            .unwrap()
            .iter()
            .map(|set| set.iter().map(|e| e.to_string()).collect())
            .collect()
    }

    #[test]
    fn rollup_cube_and_sets_expand_as_postgresql_combines_them() {
        assert_eq!(
            sets("SELECT 1 FROM t GROUP BY ROLLUP (a, b)"),
            [vec!["a", "b"], vec!["a"], vec![]]
        );
        assert_eq!(
            sets("SELECT 1 FROM t GROUP BY CUBE (a, b)"),
            [vec!["a", "b"], vec!["a"], vec!["b"], vec![]]
        );
        assert_eq!(
            sets("SELECT 1 FROM t GROUP BY c, GROUPING SETS ((a), (b, d), ())"),
            [vec!["c", "a"], vec!["c", "b", "d"], vec!["c"]]
        );
        assert_eq!(
            sets("SELECT 1 FROM t GROUP BY ROLLUP ((a, b), c)"),
            [vec!["a", "b", "c"], vec!["a", "b"], vec![]]
        );
        assert_eq!(
            sets("SELECT 1 FROM t GROUP BY ROLLUP (a), CUBE (b)").len(),
            4
        );
    }

    #[test]
    fn too_many_sets_are_refused() {
        let q = super::super::parse("SELECT 1 FROM t GROUP BY CUBE (a, b, c, d, e, f, g)").unwrap();
        let ast::SetExpr::Select(s) = q.body.as_ref() else {
            panic!("not a select")
        };
        assert!(grouping_sets(&s.group_by).is_err());
        let plain = super::super::parse("SELECT a FROM t GROUP BY a").unwrap();
        let ast::SetExpr::Select(s) = plain.body.as_ref() else {
            panic!("not a select")
        };
        assert!(grouping_sets(&s.group_by).unwrap().is_none());
    }
}
