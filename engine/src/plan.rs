//! The plan of a stream table: its operator tree, storage columns (user-visible and hidden
//! `__pgt_` columns), row identity, sources and differentiability, and the choice of how the
//! storage is maintained.
//! Invariants: every storage row has an exact identity (key columns, a multiplicity row, or
//! the single row of a scalar aggregate) — never a hash; a plan that is not differentiable
//! carries a typed `Reason` and only supports the full query.

use std::collections::BTreeMap;

use crate::catalog::{Catalog, TableInfo};
use crate::error::{EngineError, Reason};
use crate::expr::Expr;
use crate::keys::unique_key;
use crate::operator::{AggCall, AggFunc, ColType, Operator, Project};
use crate::planner::{parse, plan_tree, Planned};
use crate::types::{sum_result, SqlType};

/// A storage column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    pub name: String,
    /// PostgreSQL type as SQL text (e.g. `int4`, `numeric`, `bpchar(3)`).
    pub type_name: String,
    pub nullable: bool,
}

/// How storage rows are identified (the MERGE key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Rows are unique on these storage columns; nullable ones match with IS NOT DISTINCT FROM.
    Key { columns: Vec<String> },
    /// A DISTINCT result: each row is stored once with the number of input rows behind it in
    /// `count_column`; the identity is every user column (IS NOT DISTINCT FROM).
    Multiplicity { count_column: String },
    /// A result that may repeat rows (a keyless source, UNION ALL, EXCEPT ALL, a join that
    /// duplicates): each row is stored as many times as the query returns it, with no hidden
    /// column; a row is found by its content (every user column, IS NOT DISTINCT FROM), and
    /// a delta removes or adds that many copies.
    Bag,
    /// Exactly one row (a scalar aggregate).
    Single,
    /// Not differentiable: the storage is the plain query result, refreshed in full.
    None,
}

/// Whether the plan can be maintained differentially.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Differentiability {
    Differential,
    NotDifferentiable(Reason),
}

/// A table the stream table reads, with the columns its change buffer must capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// One aux column of an algebraically maintained aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Aux {
    /// `__pgt_count`: rows in the group.
    Count,
    /// `__pgt_cnt_j`: rows counted by aggregate j (FILTER passed, argument not NULL).
    CountOf(usize),
    /// `__pgt_sum_j`: the sum of aggregate j's argument (0 when none).
    SumOf(usize),
    /// `__pgt_true_j`: the rows counted by `bool_and` / `bool_or` aggregate j whose value is
    /// TRUE. With `CountOf(j)`: `bool_and` is `true_j = cnt_j`, `bool_or` is `true_j > 0`
    /// (NULL when `cnt_j` is 0) — both additive, so a deletion needs no rescan.
    TrueOf(usize),
    /// `__pgt_ext_j`: the current value of MIN/MAX aggregate j (NULL when no row counts).
    /// Not additive: a delta carries the extreme of the values it inserts, or, for a group
    /// whose stored extreme a deleted value may have been (see `extreme_rule`), the value
    /// rescanned from the group's rows after the change.
    Extreme(usize),
}

/// Algebraic maintenance of `[Project] Aggregate(input)` (and of DISTINCT and bag results
/// as an aggregate keyed by every column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grouped {
    pub input: Operator,
    pub keys: Vec<Expr>,
    pub key_types: Vec<ColType>,
    pub aggs: Vec<AggCall>,
    /// User columns as expressions over `keys ++ aggregate results`.
    pub user: Vec<Expr>,
    /// Storage position of each key (a user column or a hidden `__pgt_grp_i`).
    pub key_storage: Vec<usize>,
    pub aux: Vec<Aux>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Maintenance {
    Opaque,
    /// `root` yields every storage column; rows are unique on `key` (storage positions).
    Keyed {
        root: Operator,
        key: Vec<usize>,
    },
    Grouped(Grouped),
    /// `root` yields the user columns of a bag result; storage rows are its rows with their
    /// multiplicity as physical copies.
    Bag {
        root: Operator,
    },
}

/// The plan of a defining query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The defining query's operator tree (user columns only); `None` when not modelled.
    pub tree: Option<Operator>,
    pub columns: Vec<OutputColumn>,
    pub hidden: Vec<OutputColumn>,
    pub identity: Identity,
    pub sources: Vec<SourceTable>,
    pub differentiability: Differentiability,
    pub(crate) maintenance: Maintenance,
    pub(crate) sql: String,
}

impl Plan {
    /// Every storage column: user columns then hidden ones.
    pub fn storage_columns(&self) -> Vec<OutputColumn> {
        self.columns
            .iter()
            .chain(self.hidden.iter())
            .cloned()
            .collect()
    }

    pub fn is_differential(&self) -> bool {
        self.differentiability == Differentiability::Differential
    }
}

fn column(name: &str, t: &ColType) -> OutputColumn {
    OutputColumn {
        name: name.to_string(),
        type_name: t.ty.sql().to_string(),
        nullable: t.nullable,
    }
}

/// Plans `sql` against `catalog`.
pub fn plan(sql: &str, catalog: &dyn Catalog) -> Result<Plan, EngineError> {
    let query = parse(sql)?;
    let tree = match plan_tree(&query, catalog) {
        Ok(tree) => tree,
        Err(EngineError::NotDifferentiable(reason)) => return Ok(opaque(sql, reason)),
        Err(e) => return Err(e),
    };
    let mut tree = tree;
    if let Err(reason) = place_recursion(&mut tree.planned.op) {
        return Ok(opaque(sql, reason));
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in &tree.planned.names {
        if name.starts_with(crate::names::HIDDEN_PREFIX) {
            return Err(EngineError::InvalidDefiningQuery {
                message: format!("column name \"{name}\" is reserved (prefix __pgt_)"),
            });
        }
        if !seen.insert(name.clone()) {
            return Err(EngineError::DuplicateColumn { name: name.clone() });
        }
    }
    let sources = tree
        .tables
        .values()
        .map(|t| SourceTable {
            id: t.id,
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns: t
                .columns
                .iter()
                .filter(|c| tree.used.get(&t.id).is_some_and(|u| u.contains(&c.name)))
                .map(|c| c.name.clone())
                .collect(),
        })
        .collect::<Vec<_>>();
    for s in &sources {
        if let Some(t) = tree.tables.get(&s.id) {
            for c in t.columns.iter().filter(|c| s.columns.contains(&c.name)) {
                if !catalog.has_equality(&SqlType::new(&c.type_name)) {
                    let reason = Reason::TypeWithoutEquality {
                        column: c.name.clone(),
                        type_name: c.type_name.clone(),
                    };
                    let mut p = opaque(sql, reason);
                    p.sources = sources.clone();
                    return Ok(p);
                }
            }
        }
    }
    // Deriving a join's delta visits the deltas of its sub-joins twice each (ΔA⋈B and
    // ΔA⋈ΔB), so planning and rendering cost 2^n in the n tables joined: 16 references took
    // 12 s, 24 more than 20 GiB in a debug build. Such a query is refreshed FULL; the 22 TPC-H
    // queries read at most 9.
    let references = table_references(&tree.planned.op);
    if references > MAX_TABLE_REFERENCES {
        let reason = Reason::TooManyTables {
            references,
            limit: MAX_TABLE_REFERENCES,
        };
        let mut p = opaque(sql, reason);
        p.sources = sources;
        return Ok(p);
    }
    let mut plan = maintain(tree.planned, &tree.tables)?;
    plan.sources = sources;
    plan.sql = sql.to_string();
    // Stored columns are matched by value when a delta is applied: each needs equality
    // (a json_agg result, a json[] or composite-of-json column have none).
    if plan.is_differential() {
        if let Some(c) = plan
            .storage_columns()
            .into_iter()
            .find(|c| !catalog.has_equality(&SqlType::new(&c.type_name)))
        {
            let reason = Reason::TypeWithoutEquality {
                column: c.name,
                type_name: c.type_name,
            };
            let mut p = opaque(sql, reason);
            p.sources = plan.sources;
            return Ok(p);
        }
        // Each delta rule reads its inputs' states more than once, so the delta statement
        // grows geometrically with outer joins and subqueries stacked on one another: past
        // the limit PostgreSQL needs minutes and gigabytes to plan it (a 1.4 MB statement of
        // three correlated subqueries exhausted the memory of a 24 GiB machine). Such a query
        // is refreshed FULL. The 22 TPC-H queries stay under 70 kB.
        let bytes = delta_statement_size(&plan)?;
        if bytes > DELTA_STATEMENT_LIMIT {
            let reason = Reason::DeltaTooLarge {
                kilobytes: bytes / 1024,
                limit: DELTA_STATEMENT_LIMIT / 1024,
            };
            let mut p = opaque(sql, reason);
            p.sources = plan.sources;
            return Ok(p);
        }
    }
    Ok(plan)
}

/// A recursion is maintained from its stored result, so only as the whole result: `op` is
/// the `Recursive` itself, or the projection of its columns in order, which is dropped.
/// Anywhere else (joined, filtered, aggregated, nested in another recursion) it is refused.
fn place_recursion(op: &mut Operator) -> Result<(), Reason> {
    fn contains(op: &Operator) -> bool {
        matches!(op, Operator::Recursive(_)) || op.children().into_iter().any(contains)
    }
    if let Operator::Project(p) = op {
        let identity = p.exprs.len() == p.input.arity()
            && p.exprs
                .iter()
                .enumerate()
                .all(|(i, e)| *e == Expr::Column(i));
        if identity && matches!(p.input.as_ref(), Operator::Recursive(_)) {
            *op = (*p.input).clone();
        }
    }
    let nested = match op {
        Operator::Recursive(r) => contains(&r.base) || contains(&r.step),
        other => contains(other),
    };
    if nested {
        return Err(Reason::RecursiveCte {
            detail: "that is not the whole result (select its columns in order: SELECT * \
                     FROM the CTE)"
                .to_string(),
        });
    }
    Ok(())
}

/// The most table references (scans, counting a table once per mention) a differential plan
/// may have.
pub const MAX_TABLE_REFERENCES: usize = 14;

/// The table references of an operator tree: its scan leaves.
fn table_references(op: &Operator) -> usize {
    match op {
        Operator::Scan(_) | Operator::DeltaScan(_) => 1,
        _ => op.children().into_iter().map(table_references).sum(),
    }
}

/// The largest delta statement a differential plan may have, in bytes.
pub const DELTA_STATEMENT_LIMIT: usize = 256 * 1024;

/// The length of `plan`'s delta statement, rendered over placeholder change buffers (their
/// names and predicates are as long as the extension's, within a few bytes per reference).
fn delta_statement_size(plan: &Plan) -> Result<usize, EngineError> {
    let mut sources = crate::render::DeltaSources::new();
    for s in &plan.sources {
        sources = sources.with(
            s.id,
            crate::render::ChangeBuffer {
                schema: crate::names::BUFFER_SCHEMA.to_string(),
                name: format!("changes_{}", s.id),
                predicate: "__pgt_seq > 0 AND __pgt_seq <= 0".to_string(),
            },
        );
    }
    let storage = crate::render::apply::RelName::new("public", "stream_table");
    Ok(crate::render::apply::delta_query_sql(plan, &sources, &storage)?.len())
}

fn opaque(sql: &str, reason: Reason) -> Plan {
    Plan {
        tree: None,
        columns: Vec::new(),
        hidden: Vec::new(),
        identity: Identity::None,
        sources: Vec::new(),
        differentiability: Differentiability::NotDifferentiable(reason),
        maintenance: Maintenance::Opaque,
        sql: sql.to_string(),
    }
}

/// Whether MIN/MAX aggregate `agg` can be kept in place: its values are ordered the same way
/// wherever they are compared (the stored extreme against a delta's), which holds for the
/// types without a collation; text is ordered by a collation the storage column may not carry,
/// so MIN/MAX over text recompute their touched groups. DISTINCT changes nothing for them.
pub(crate) fn extreme_in_place(agg: &AggCall) -> bool {
    use crate::types::TypeClass as T;
    matches!(agg.func, AggFunc::Min | AggFunc::Max)
        && agg.order_by.is_empty()
        && agg.args.len() == 1
        && agg.arg_type.as_ref().is_some_and(|t| {
            matches!(
                t.class(),
                T::Int2
                    | T::Int4
                    | T::Int8
                    | T::Numeric
                    | T::Float4
                    | T::Float8
                    | T::Date
                    | T::Timestamp
                    | T::Timestamptz
            )
        })
        && agg.arg_type.as_ref() == Some(&agg.ty.ty)
}

fn algebraic(agg: &AggCall) -> bool {
    extreme_in_place(agg)
        || !agg.distinct
            && agg.order_by.is_empty()
            && match agg.func {
                AggFunc::CountStar | AggFunc::Count | AggFunc::BoolAnd | AggFunc::BoolOr => true,
                AggFunc::Sum | AggFunc::Avg => agg
                    .arg_type
                    .as_ref()
                    .is_some_and(SqlType::is_numeric_family),
                _ => false,
            }
}

/// Chooses the maintenance strategy and lays out the storage columns.
fn maintain(planned: Planned, tables: &BTreeMap<u32, TableInfo>) -> Result<Plan, EngineError> {
    let Planned { op, names } = planned;
    let types = op.columns();
    let user_cols: Vec<OutputColumn> = names
        .iter()
        .zip(&types)
        .map(|(n, t)| column(n, t))
        .collect();
    // A recursion: a set keyed by every column (UNION) or a bag (UNION ALL).
    if let Operator::Recursive(r) = &op {
        if r.distinct {
            let key: Vec<usize> = (0..names.len()).collect();
            return Ok(keyed_plan(
                op.clone(),
                op,
                user_cols,
                Vec::new(),
                key,
                names,
            ));
        }
        return Ok(bag_plan(op, user_cols));
    }
    // DISTINCT: count the input's multiplicity per row.
    if let Operator::Distinct(d) = &op {
        let n = d.input.arity();
        let g = Grouped {
            input: (*d.input).clone(),
            keys: (0..n).map(Expr::Column).collect(),
            key_types: d.input.columns(),
            aggs: Vec::new(),
            user: (0..n).map(Expr::Column).collect(),
            key_storage: (0..n).collect(),
            aux: vec![Aux::Count],
        };
        return Ok(grouped_plan(op.clone(), user_cols, g));
    }
    // [Project] Aggregate with only COUNT/SUM/AVG and MIN/MAX kept in place: aux columns,
    // O(|Δ|) apply (MIN/MAX also rescan the groups whose extreme a deletion may have removed).
    if let Operator::Project(p) = &op {
        if let Operator::Aggregate(a) = p.input.as_ref() {
            if a.aggs.iter().all(algebraic) {
                let nk = a.keys.len();
                let key_storage: Vec<usize> = (0..nk)
                    .map(|k| p.exprs.iter().position(|e| *e == Expr::Column(k)))
                    .scan(names.len(), |next, found| {
                        Some(found.unwrap_or_else(|| {
                            *next += 1;
                            *next - 1
                        }))
                    })
                    .collect();
                let mut aux = vec![Aux::Count];
                for (j, agg) in a.aggs.iter().enumerate() {
                    match agg.func {
                        AggFunc::CountStar if agg.filter.is_none() => {}
                        AggFunc::CountStar | AggFunc::Count => aux.push(Aux::CountOf(j)),
                        AggFunc::Min | AggFunc::Max => aux.push(Aux::Extreme(j)),
                        AggFunc::BoolAnd | AggFunc::BoolOr => {
                            aux.push(Aux::CountOf(j));
                            aux.push(Aux::TrueOf(j));
                        }
                        _ => {
                            aux.push(Aux::SumOf(j));
                            aux.push(Aux::CountOf(j));
                        }
                    }
                }
                let g = Grouped {
                    input: (*a.input).clone(),
                    keys: a.keys.clone(),
                    key_types: a.key_types.clone(),
                    aggs: a.aggs.clone(),
                    user: p.exprs.clone(),
                    key_storage,
                    aux,
                };
                return Ok(grouped_plan(op.clone(), user_cols, g));
            }
        }
    }
    // A unique key among the output columns, or hidden `__pgt_id_i` columns carrying one.
    if let Some(key) = unique_key(&op, tables) {
        let columns = key.iter().map(|k| names[*k].clone()).collect();
        return Ok(keyed_plan(
            op.clone(),
            op,
            user_cols,
            Vec::new(),
            key,
            columns,
        ));
    }
    if let Operator::Project(p) = &op {
        if let Some(inner_key) = unique_key(&p.input, tables) {
            let in_types = p.input.columns();
            let mut exprs = p.exprs.clone();
            let mut col_types = p.types.clone();
            let mut hidden = Vec::new();
            let mut key = Vec::new();
            for (i, k) in inner_key.iter().enumerate() {
                let name = crate::names::hidden_id(i);
                let t = in_types
                    .get(*k)
                    .cloned()
                    .ok_or_else(|| EngineError::internal("key"))?;
                hidden.push(column(&name, &t));
                key.push(exprs.len());
                exprs.push(Expr::Column(*k));
                col_types.push(t);
            }
            let root = Operator::Project(Project {
                input: p.input.clone(),
                exprs,
                types: col_types,
            });
            let columns = hidden.iter().map(|h| h.name.clone()).collect();
            return Ok(keyed_plan(
                op.clone(),
                root,
                user_cols,
                hidden,
                key,
                columns,
            ));
        }
    }
    // A bag without identity: rows stored as the query returns them.
    Ok(bag_plan(op, user_cols))
}

/// A bag result: the rows of `root` stored as the query returns them, without identity.
fn bag_plan(root: Operator, columns: Vec<OutputColumn>) -> Plan {
    Plan {
        tree: Some(root.clone()),
        columns,
        hidden: Vec::new(),
        identity: Identity::Bag,
        sources: Vec::new(),
        differentiability: Differentiability::Differential,
        maintenance: Maintenance::Bag { root },
        sql: String::new(),
    }
}

fn keyed_plan(
    tree: Operator,
    root: Operator,
    columns: Vec<OutputColumn>,
    hidden: Vec<OutputColumn>,
    key: Vec<usize>,
    key_names: Vec<String>,
) -> Plan {
    let identity = if key.is_empty() {
        Identity::Single
    } else {
        Identity::Key { columns: key_names }
    };
    Plan {
        tree: Some(tree),
        columns,
        hidden,
        identity,
        sources: Vec::new(),
        differentiability: Differentiability::Differential,
        maintenance: Maintenance::Keyed { root, key },
        sql: String::new(),
    }
}

/// The name and type of aux column `a`.
pub(crate) fn aux_column(g: &Grouped, a: &Aux) -> OutputColumn {
    let int8 = ColType::new(SqlType::int8(), false);
    match a {
        Aux::Count => column(crate::names::COUNT, &int8),
        Aux::CountOf(j) => column(&crate::names::hidden_count_of(*j), &int8),
        Aux::TrueOf(j) => column(&crate::names::hidden_true_of(*j), &int8),
        Aux::SumOf(j) => {
            let arg = g.aggs[*j].arg_type.clone().unwrap_or_else(SqlType::numeric);
            column(
                &crate::names::hidden_sum(*j),
                &ColType::new(sum_result(&arg), false),
            )
        }
        Aux::Extreme(j) => column(
            &crate::names::hidden_extreme(*j),
            &ColType::new(g.aggs[*j].ty.ty.clone(), true),
        ),
    }
}

fn grouped_plan(tree: Operator, columns: Vec<OutputColumn>, g: Grouped) -> Plan {
    let mut hidden = Vec::new();
    for (k, pos) in g.key_storage.iter().enumerate() {
        if *pos >= columns.len() {
            hidden.push(column(&crate::names::hidden_group(k), &g.key_types[k]));
        }
    }
    hidden.extend(g.aux.iter().map(|a| aux_column(&g, a)));
    let identity = if g.keys.is_empty() {
        Identity::Single
    } else if g.aggs.is_empty()
        && g.user.len() == g.keys.len()
        && g.key_storage.iter().enumerate().all(|(i, p)| i == *p)
    {
        Identity::Multiplicity {
            count_column: crate::names::COUNT.to_string(),
        }
    } else {
        let all: Vec<OutputColumn> = columns.iter().chain(hidden.iter()).cloned().collect();
        Identity::Key {
            columns: g.key_storage.iter().map(|p| all[*p].name.clone()).collect(),
        }
    };
    Plan {
        tree: Some(tree),
        columns,
        hidden,
        identity,
        sources: Vec::new(),
        differentiability: Differentiability::Differential,
        maintenance: Maintenance::Grouped(g),
        sql: String::new(),
    }
}
