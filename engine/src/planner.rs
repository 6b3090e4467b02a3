//! SQL text → operator tree: parsing (PostgreSQL dialect), CTEs, set operations and table
//! resolution; SELECT blocks are in `select`, WHERE conditions and subqueries in `conditions`,
//! expressions in `expr`.
//! Invariants: planning is deterministic; the second pass scans exactly the columns the first
//! pass saw referenced plus each table's identity columns, so change buffers carry every
//! column the delta plan reads.

mod conditions;
pub mod expr;
mod grouping;
mod lateral;
mod passthrough;
pub mod scope;
pub mod select;
pub mod window;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::catalog::{Catalog, FunctionKind, TableInfo};
use crate::error::{EngineError, Reason};
use crate::operator::recursive::REFERENCE_ID;
use crate::operator::scan::ScanColumn;
use crate::operator::{
    bx, ColType, Distinct, Operator, Recursive, Scan, SetOp, SetOpKind, TableRef, UnionAll,
};
use crate::types::SqlType;

/// An operator with the names of its output columns.
#[derive(Debug, Clone)]
pub struct Planned {
    pub op: Operator,
    pub names: Vec<String>,
}

pub(crate) struct Planner<'a> {
    pub(crate) catalog: &'a dyn Catalog,
    /// Columns to scan per table (second pass); `None` scans every column (first pass).
    prune: Option<BTreeMap<u32, BTreeSet<String>>>,
    /// Columns referenced so far, per table.
    pub(crate) seen: BTreeMap<u32, BTreeSet<String>>,
    ctes: Vec<(String, Planned)>,
    pub(crate) tables: BTreeMap<u32, TableInfo>,
    /// The levels of the queries enclosing the one being planned, moved into the outer band
    /// (`scope::OUTER_BASE`): a reference that resolves there is a correlation the planner
    /// does not decorrelate at that position, and is refused.
    pub(crate) outer: Vec<Vec<scope::ScopeRel>>,
    /// Scalar subqueries already joined to the operator being built, with their values.
    pub(crate) scalars: Vec<(ast::Query, expr::Typed)>,
    /// Scalar subqueries of an aggregate query's select list and HAVING, joined after the
    /// aggregate (`Some` only while those are planned).
    pub(crate) deferred: Option<conditions::DeferredScope>,
    /// The left sides of `x IN (…)` rewritten as counts, planned in the outer query
    /// (`names::outer_key`).
    pub(crate) outer_keys: Vec<expr::Typed>,
    /// While one branch of a grouping-sets query is planned: its set (`grouping`).
    pub(crate) grouping_branch: Option<grouping::Branch>,
    /// The window calls of the select list being planned (`Some` only while it is).
    pub(crate) windows: Option<Vec<window::PendingWindow>>,
    /// The set-returning calls of the select list being planned (`Some` only while it is).
    pub(crate) srfs: Option<Vec<lateral::PendingSrf>>,
    /// The `WINDOW name AS (…)` clause of the SELECT whose select list is being planned.
    pub(crate) named_windows: Vec<ast::NamedWindowDefinition>,
    /// The ORDER BY of the query whose body is the SELECT about to be planned (what
    /// `DISTINCT ON` keeps the first row of).
    pub(crate) query_order: Option<Vec<ast::OrderByExpr>>,
    /// The `(offset, limit)` of the query whose body is the SELECT about to be planned.
    pub(crate) query_limit: Option<(i64, i64)>,
}

/// The (schema, name) a call names, case-folded, with `pg_catalog` given as no schema; `None`
/// for a name of more than two parts.
pub(crate) fn call_name(f: &ast::Function) -> Option<(Option<String>, String)> {
    match object_name(&f.name).ok()?.as_slice() {
        [n] => Some((None, n.clone())),
        [s, n] if s == "pg_catalog" => Some((None, n.clone())),
        [s, n] => Some((Some(s.clone()), n.clone())),
        _ => None,
    }
}

/// The select item `e` names by position (`GROUP BY 1`, `ORDER BY 2`), if `e` is a number;
/// an error naming `clause` when no item has that position.
pub(crate) fn select_item_at(
    e: &ast::Expr,
    items: &[(crate::expr::Expr, ColType, String)],
    clause: &str,
) -> Option<Result<(crate::expr::Expr, ColType), EngineError>> {
    let ast::Expr::Value(v) = e else { return None };
    let ast::Value::Number(n, _) = &v.value else {
        return None;
    };
    let pos: usize = n.parse().unwrap_or(0);
    Some(
        items
            .get(pos.wrapping_sub(1))
            .map(|i| (i.0.clone(), i.1.clone()))
            .ok_or_else(|| EngineError::InvalidDefiningQuery {
                message: format!("{clause} position {n} is not in select list"),
            }),
    )
}

/// Case-folds an identifier as PostgreSQL does: unquoted names are lowercased.
pub(crate) fn fold(id: &ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

pub(crate) fn object_name(n: &ast::ObjectName) -> Result<Vec<String>, EngineError> {
    n.0.iter()
        .map(|p| match p {
            ast::ObjectNamePart::Identifier(id) => Ok(fold(id)),
            other => Err(EngineError::InvalidDefiningQuery {
                message: format!("unsupported name part {other}"),
            }),
        })
        .collect()
}

fn unsupported(construct: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::Construct {
        construct: construct.to_string(),
    })
}

/// Parses exactly one SELECT statement.
pub(crate) fn parse(sql: &str) -> Result<ast::Query, EngineError> {
    let mut statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| EngineError::Syntax {
            message: e.to_string(),
        })?;
    if statements.len() != 1 {
        return Err(EngineError::InvalidDefiningQuery {
            message: format!(
                "a defining query must be exactly one statement, got {}",
                statements.len()
            ),
        });
    }
    match statements.pop() {
        Some(ast::Statement::Query(q)) => Ok(*q),
        _ => Err(EngineError::InvalidDefiningQuery {
            message: "a defining query must be a SELECT".to_string(),
        }),
    }
}

/// The planned query, the tables it reads and the columns it uses per table.
pub(crate) struct Tree {
    pub planned: Planned,
    pub tables: BTreeMap<u32, TableInfo>,
    pub used: BTreeMap<u32, BTreeSet<String>>,
}

/// A table name as the planner asks for it: optional schema, name.
type TableName = (Option<String>, String);

/// The catalog both planning passes share: each table, expression type and function name is
/// looked up once per plan (the extension answers with SPI and parse analysis), the second
/// pass seeing exactly what the first saw.
struct Remembered<'a> {
    inner: &'a dyn Catalog,
    /// By (schema, name) as asked.
    tables: RefCell<BTreeMap<TableName, Option<TableInfo>>>,
    types: RefCell<BTreeMap<String, Option<String>>>,
    /// By (schema, name) as asked.
    functions: RefCell<BTreeMap<TableName, FunctionKind>>,
    /// By the FROM item's text.
    relations: RefCell<BTreeMap<String, Option<crate::catalog::Columns>>>,
}

/// The answer remembered under `key` in `cache`, or `ask`'s, remembered.
fn remember<K: Ord, V: Clone>(
    cache: &RefCell<BTreeMap<K, V>>,
    key: K,
    ask: impl FnOnce() -> V,
) -> V {
    if let Some(found) = cache.borrow().get(&key) {
        return found.clone();
    }
    let found = ask();
    cache.borrow_mut().insert(key, found.clone());
    found
}

impl<'a> Remembered<'a> {
    fn new(inner: &'a dyn Catalog) -> Self {
        Remembered {
            inner,
            tables: RefCell::new(BTreeMap::new()),
            types: RefCell::new(BTreeMap::new()),
            functions: RefCell::new(BTreeMap::new()),
            relations: RefCell::new(BTreeMap::new()),
        }
    }
}

impl Catalog for Remembered<'_> {
    fn resolve_table(&self, schema: Option<&str>, name: &str) -> Option<TableInfo> {
        let key = (schema.map(str::to_string), name.to_string());
        remember(&self.tables, key, || self.inner.resolve_table(schema, name))
    }

    fn function(&self, name: &str, arg_types: &[SqlType]) -> Option<crate::catalog::FunctionInfo> {
        self.inner.function(name, arg_types)
    }

    fn function_kind(&self, schema: Option<&str>, name: &str) -> FunctionKind {
        let key = (schema.map(str::to_string), name.to_string());
        remember(&self.functions, key, || {
            self.inner.function_kind(schema, name)
        })
    }

    fn expression_type(&self, sql: &str) -> Option<String> {
        remember(&self.types, sql.to_string(), || {
            self.inner.expression_type(sql)
        })
    }

    fn relation_columns(&self, sql: &str) -> Option<crate::catalog::Columns> {
        remember(&self.relations, sql.to_string(), || {
            self.inner.relation_columns(sql)
        })
    }

    fn has_equality(&self, ty: &SqlType) -> bool {
        self.inner.has_equality(ty)
    }
}

/// Plans `query` in two passes (see the module invariant).
pub(crate) fn plan_tree(query: &ast::Query, catalog: &dyn Catalog) -> Result<Tree, EngineError> {
    let remembered = Remembered::new(catalog);
    let catalog: &dyn Catalog = &remembered;
    let mut first = Planner::new(catalog, None);
    first.query(query)?;
    let mut used = first.seen;
    for (id, table) in &first.tables {
        let cols = used.entry(*id).or_default();
        for i in table.identity_columns().unwrap_or_default() {
            cols.insert(table.columns[i].name.clone());
        }
    }
    let mut second = Planner::new(catalog, Some(used.clone()));
    let planned = resolve_unknown_outputs(second.query(query)?);
    Ok(Tree {
        planned,
        tables: second.tables,
        used,
    })
}

/// PostgreSQL gives an output column that would have type unknown (an untyped string literal
/// in the select list, `SELECT id, 'a' AS tag`) type text (resolveTargetListUnknowns, since
/// PostgreSQL 10): so does the defining query's top projection here, by a cast, and its storage
/// column is text. (Untyped literals inside expressions are typed by their context already;
/// the branches of a set operation are typed together by its own rule.)
fn resolve_unknown_outputs(mut planned: Planned) -> Planned {
    fn top_projection(op: &mut Operator) -> Option<&mut crate::operator::Project> {
        match op {
            Operator::Project(p) => Some(p),
            Operator::Distinct(d) => top_projection(&mut d.input),
            Operator::TopK(t) => top_projection(&mut t.input),
            _ => None,
        }
    }
    if let Some(p) = top_projection(&mut planned.op) {
        for (e, t) in p.exprs.iter_mut().zip(p.types.iter_mut()) {
            if t.ty.is_unknown() {
                *e = crate::expr::Expr::Cast {
                    arg: Box::new(e.clone()),
                    ty: SqlType::text(),
                };
                t.ty = SqlType::text();
            }
        }
    }
    planned
}

impl<'a> Planner<'a> {
    fn new(catalog: &'a dyn Catalog, prune: Option<BTreeMap<u32, BTreeSet<String>>>) -> Self {
        Planner {
            catalog,
            prune,
            seen: BTreeMap::new(),
            ctes: Vec::new(),
            tables: BTreeMap::new(),
            outer: Vec::new(),
            scalars: Vec::new(),
            deferred: None,
            outer_keys: Vec::new(),
            grouping_branch: None,
            windows: None,
            srfs: None,
            named_windows: Vec::new(),
            query_order: None,
            query_limit: None,
        }
    }

    pub(crate) fn query(&mut self, q: &ast::Query) -> Result<Planned, EngineError> {
        let top = window::limit_of(q)?;
        if !q.locks.is_empty() || q.for_clause.is_some() || !q.pipe_operators.is_empty() {
            return Err(unsupported("FOR UPDATE/SHARE and pipe operators"));
        }
        // ORDER BY without LIMIT does not change the rows of a table: it is ignored.
        let depth = self.ctes.len();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = fold(&cte.alias.name);
                let planned = if with.recursive && refers_to(&cte.query, &name) {
                    self.recursive_cte(cte, &name)?
                } else {
                    let mut planned = self.query(&cte.query)?;
                    rename(&mut planned, &cte.alias)?;
                    planned
                };
                self.ctes.push((name, planned));
            }
        }
        let order = match &q.order_by {
            Some(ast::OrderBy {
                kind: ast::OrderByKind::Expressions(items),
                ..
            }) => items.clone(),
            Some(_) => return Err(unsupported("ORDER BY ALL")),
            None => Vec::new(),
        };
        let select_body = matches!(q.body.as_ref(), ast::SetExpr::Select(_));
        // A SELECT body applies its ORDER BY (DISTINCT ON) and LIMIT itself; any other body's
        // LIMIT orders its output columns.
        self.query_order = select_body.then(|| order.clone());
        self.query_limit = if select_body { top } else { None };
        let result = self.set_expr(&q.body).and_then(|planned| match top {
            Some((offset, limit)) if !select_body => {
                window::top_of_output(planned, &order, offset, limit)
            }
            _ => Ok(planned),
        });
        self.ctes.truncate(depth);
        result
    }

    /// `name AS (base UNION [ALL] step)` where `step` reads `name`: a `Recursive` whose step
    /// reads the CTE through a scan of `recursive::REFERENCE_ID`. The reference's columns have
    /// the base's types; a column is nullable when either term may give NULL there (planned
    /// again until that settles).
    fn recursive_cte(&mut self, cte: &ast::Cte, name: &str) -> Result<Planned, EngineError> {
        let refuse = |detail: &str| {
            EngineError::NotDifferentiable(Reason::RecursiveCte {
                detail: detail.to_string(),
            })
        };
        let q = &cte.query;
        if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() {
            return Err(refuse("with WITH, ORDER BY or LIMIT in its definition"));
        }
        let ast::SetExpr::SetOperation {
            left,
            op: ast::SetOperator::Union,
            set_quantifier,
            right,
        } = q.body.as_ref()
        else {
            return Err(refuse(
                "that is not a non-recursive term UNION [ALL] a recursive term",
            ));
        };
        let distinct = match set_quantifier {
            ast::SetQuantifier::All => false,
            ast::SetQuantifier::Distinct | ast::SetQuantifier::None => true,
            other => return Err(unsupported(&format!("set quantifier {other}"))),
        };
        let mut base = self.set_expr(left)?;
        rename(&mut base, &cte.alias)?;
        let mut types = base.op.columns();
        for _ in 0..=types.len() {
            let reference = Scan {
                table: TableRef {
                    id: REFERENCE_ID,
                    schema: String::new(),
                    name: name.to_string(),
                },
                columns: types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ScanColumn {
                        index: i,
                        name: format!("c{i}"),
                        ty: t.clone(),
                    })
                    .collect(),
            };
            self.ctes.push((
                name.to_string(),
                Planned {
                    op: Operator::Scan(reference.clone()),
                    names: base.names.clone(),
                },
            ));
            let step = self.set_expr(right);
            self.ctes.pop();
            let step = step?;
            if step.names.len() != base.names.len() {
                return Err(EngineError::Syntax {
                    message: "each UNION query must have the same number of columns".into(),
                });
            }
            let widened: Vec<ColType> = types
                .iter()
                .zip(step.op.columns())
                .map(|(b, s)| ColType::new(b.ty.clone(), b.nullable || s.nullable))
                .collect();
            if widened != types {
                types = widened;
                continue;
            }
            if !Recursive::admissible_step(&step.op) {
                return Err(refuse(
                    "whose recursive term is not made of joins, filters and projections of \
                     tables (it has an outer join, a subquery, an aggregate, DISTINCT, a \
                     window or a set operation other than UNION ALL)",
                ));
            }
            return Ok(Planned {
                op: Operator::Recursive(Recursive {
                    base: bx(base.op),
                    step: bx(step.op),
                    reference,
                    distinct,
                    delta: false,
                }),
                names: base.names,
            });
        }
        Err(EngineError::internal(
            "the nullability of a recursive CTE's columns did not settle",
        ))
    }

    fn set_expr(&mut self, body: &ast::SetExpr) -> Result<Planned, EngineError> {
        match body {
            ast::SetExpr::Select(s) => self.select_grouped(s),
            ast::SetExpr::Query(q) => self.query(q),
            ast::SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let l = self.set_expr(left)?;
                let r = self.set_expr(right)?;
                if l.names.len() != r.names.len() {
                    return Err(EngineError::Syntax {
                        message: format!("each {op} query must have the same number of columns"),
                    });
                }
                let all = match set_quantifier {
                    ast::SetQuantifier::All => true,
                    ast::SetQuantifier::Distinct | ast::SetQuantifier::None => false,
                    other => return Err(unsupported(&format!("set quantifier {other}"))),
                };
                let op = match op {
                    ast::SetOperator::Union => {
                        let union = Operator::UnionAll(UnionAll {
                            inputs: vec![l.op, r.op],
                        });
                        if all {
                            union
                        } else {
                            Operator::Distinct(Distinct { input: bx(union) })
                        }
                    }
                    ast::SetOperator::Intersect | ast::SetOperator::Except => {
                        Operator::SetOp(SetOp {
                            kind: if matches!(op, ast::SetOperator::Intersect) {
                                SetOpKind::Intersect
                            } else {
                                SetOpKind::Except
                            },
                            all,
                            left: bx(l.op),
                            right: bx(r.op),
                        })
                    }
                    other => return Err(unsupported(&format!("set operator {other}"))),
                };
                Ok(Planned { op, names: l.names })
            }
            ast::SetExpr::Values(_) => Err(unsupported("VALUES")),
            _ => Err(unsupported("this kind of query body")),
        }
    }

    /// A CTE (by unqualified name) or a catalog table.
    pub(crate) fn relation(
        &mut self,
        name: &ast::ObjectName,
    ) -> Result<(Planned, Option<u32>), EngineError> {
        let parts = object_name(name)?;
        if let [single] = parts.as_slice() {
            if let Some((_, planned)) = self.ctes.iter().rev().find(|(n, _)| n == single) {
                return Ok((planned.clone(), None));
            }
        }
        let (schema, table) = match parts.as_slice() {
            [t] => (None, t.as_str()),
            [s, t] => (Some(s.as_str()), t.as_str()),
            [_, s, t] => (Some(s.as_str()), t.as_str()),
            _ => {
                return Err(EngineError::InvalidDefiningQuery {
                    message: format!("improper relation name {name}"),
                })
            }
        };
        let info = self.catalog.resolve_table(schema, table).ok_or_else(|| {
            EngineError::UndefinedTable {
                name: parts.join("."),
            }
        })?;
        let id = info.id;
        let keep = |c: &str| match &self.prune {
            None => true,
            Some(p) => p.get(&id).is_some_and(|cols| cols.contains(c)),
        };
        let columns: Vec<ScanColumn> = info
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| keep(&c.name))
            .map(|(i, c)| ScanColumn {
                index: i,
                name: c.name.clone(),
                ty: ColType::new(SqlType::new(&c.type_name), c.nullable),
            })
            .collect();
        let names = columns.iter().map(|c| c.name.clone()).collect();
        let scan = Operator::Scan(Scan {
            table: TableRef {
                id,
                schema: info.schema.clone(),
                name: info.name.clone(),
            },
            columns,
        });
        self.tables.insert(id, info);
        Ok((Planned { op: scan, names }, Some(id)))
    }
}

/// Whether `query` reads a relation named `name` (unqualified): a CTE of `WITH RECURSIVE`
/// that does is recursive.
fn refers_to(query: &ast::Query, name: &str) -> bool {
    let found = ast::visit_relations(query, |rel| match object_name(rel).as_deref() {
        Ok([single]) if single == name => std::ops::ControlFlow::Break(()),
        _ => std::ops::ControlFlow::Continue(()),
    });
    found.is_break()
}

/// Applies a `name(col, …)` alias's column list.
pub(crate) fn rename(planned: &mut Planned, alias: &ast::TableAlias) -> Result<(), EngineError> {
    if alias.columns.len() > planned.names.len() {
        return Err(EngineError::InvalidDefiningQuery {
            message: format!(
                "table \"{}\" has {} columns available but {} columns specified",
                fold(&alias.name),
                planned.names.len(),
                alias.columns.len()
            ),
        });
    }
    for (i, c) in alias.columns.iter().enumerate() {
        planned.names[i] = fold(&c.name);
    }
    Ok(())
}
