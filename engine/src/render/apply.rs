//! The three statements the extension runs: the full query (initial load, FULL refresh), the
//! delta query (one change window, consolidated) and the apply statements (MERGE keyed on
//! the identity, PostgreSQL 15 syntax, reading the materialised delta).
//! Invariants: the delta query's rows are consolidated (one row per storage row for keyed
//! plans, one per group for grouped plans), so MERGE never touches a target row twice; a
//! group is deleted exactly when its `__pgt_count` reaches 0; a scalar aggregate's single row
//! is only ever updated.

use super::expr::render_expr;
use super::{
    col_ref, qualified, quote_ident, weight_ref, DeltaSources, Fragment, SqlWriter, WEIGHT,
};
use crate::error::EngineError;
use crate::expr::{BinOp, Expr, Literal};
use crate::operator::AggFunc;
use crate::plan::{Aux, Grouped, Maintenance, Plan};
use crate::types::{SqlType, TypeClass};

/// A relation name, quoted by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelName {
    pub schema: Option<String>,
    pub name: String,
}

impl RelName {
    pub fn new(schema: &str, name: &str) -> Self {
        RelName {
            schema: Some(schema.to_string()),
            name: name.to_string(),
        }
    }

    pub fn unqualified(name: &str) -> Self {
        RelName {
            schema: None,
            name: name.to_string(),
        }
    }

    pub fn sql(&self) -> String {
        match &self.schema {
            Some(s) => qualified(s, &self.name),
            None => quote_ident(&self.name),
        }
    }
}

fn not_differentiable(plan: &Plan) -> EngineError {
    match &plan.differentiability {
        crate::plan::Differentiability::NotDifferentiable(r) => {
            EngineError::NotDifferentiable(r.clone())
        }
        crate::plan::Differentiability::Differential => {
            EngineError::internal("differential plan without maintenance")
        }
    }
}

/// (a) The defining query producing every storage column (user then hidden), for the initial
/// load and FULL refresh: `INSERT INTO storage SELECT …`.
pub fn full_query_sql(plan: &Plan) -> Result<String, EngineError> {
    let names: Vec<String> = plan
        .storage_columns()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    match &plan.maintenance {
        Maintenance::Opaque => Ok(plan.sql.trim().trim_end_matches(';').to_string()),
        Maintenance::Keyed { root, .. } | Maintenance::Bag { root } => {
            let mut w = SqlWriter::new(None);
            let f = root.render(&mut w)?;
            if f.weighted {
                return Err(EngineError::internal("keyed root is weighted"));
            }
            let cols: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{} AS {}", col_ref("s", i), quote_ident(n)))
                .collect();
            let body = format!(
                "SELECT {} FROM ({}) AS {}",
                cols.join(", "),
                f.sql,
                quote_ident("s")
            );
            Ok(w.finish(&body))
        }
        Maintenance::Grouped(g) => {
            let mut w = SqlWriter::new(None);
            let input = g.input.render(&mut w)?;
            let inner = aux_select(plan, g, &input);
            let gref = |n: &str| format!("{}.{}", quote_ident("g"), quote_ident(n));
            let mut cols = Vec::new();
            for (i, n) in plan.columns.iter().enumerate() {
                let e = user_sql(plan, g, i, &|a| gref(&aux_name(plan, g, a)), &|k| {
                    gref(&key_name(plan, g, k))
                });
                cols.push(format!("{e} AS {}", quote_ident(&n.name)));
            }
            for h in &plan.hidden {
                cols.push(format!("{} AS {}", gref(&h.name), quote_ident(&h.name)));
            }
            let body = format!(
                "SELECT {} FROM ({inner}) AS {}",
                cols.join(", "),
                quote_ident("g")
            );
            Ok(w.finish(&body))
        }
    }
}

/// (b) The consolidated delta of one change window. Keyed plans: storage rows with
/// `__pgt_weight` (±1 after consolidation). Grouped plans: per group, the identity columns and
/// the change of every aux column (`__pgt_count`, `__pgt_cnt_j`, `__pgt_sum_j`).
pub fn delta_query_sql(plan: &Plan, sources: &DeltaSources) -> Result<String, EngineError> {
    match &plan.maintenance {
        Maintenance::Opaque => Err(not_differentiable(plan)),
        // A bag's delta has the same shape: one row per distinct row, its weight the net
        // number of copies gained (> 0) or lost (< 0).
        Maintenance::Keyed { root, .. } | Maintenance::Bag { root } => {
            let delta = root.delta()?;
            let mut w = SqlWriter::new(Some(sources));
            let f = delta.render(&mut w)?;
            let names: Vec<String> = plan
                .storage_columns()
                .iter()
                .map(|c| c.name.clone())
                .collect();
            let mut cols: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{} AS {}", col_ref("s", i), quote_ident(n)))
                .collect();
            let weight = if f.weighted {
                format!("SUM({})", weight_ref("s"))
            } else {
                "count(*)".to_string()
            };
            cols.push(format!("CAST({weight} AS int8) AS {}", quote_ident(WEIGHT)));
            let group: Vec<String> = (0..names.len()).map(|i| col_ref("s", i)).collect();
            let body = format!(
                "SELECT {} FROM ({}) AS {} GROUP BY {} HAVING {weight} <> 0",
                cols.join(", "),
                f.sql,
                quote_ident("s"),
                group.join(", ")
            );
            Ok(w.finish(&body))
        }
        Maintenance::Grouped(g) => {
            let delta = g.input.delta()?;
            let mut w = SqlWriter::new(Some(sources));
            let f = delta.render(&mut w)?;
            let body = aux_select(plan, g, &f);
            Ok(w.finish(&body))
        }
    }
}

/// (c) Statements applying the materialised delta `delta` (the rows of `delta_query_sql`) to
/// the storage table `storage`, in order, inside the refresh transaction.
pub fn apply_sql(
    plan: &Plan,
    storage: &RelName,
    delta: &RelName,
) -> Result<Vec<String>, EngineError> {
    let (t, d) = (quote_ident("t"), quote_ident("d"));
    let all = plan.storage_columns();
    match &plan.maintenance {
        Maintenance::Opaque => Err(not_differentiable(plan)),
        Maintenance::Keyed { key, .. } => {
            let key_names: Vec<String> = key.iter().map(|k| quote_ident(&all[*k].name)).collect();
            let keys: Vec<(&String, bool)> = key
                .iter()
                .map(|k| (&all[*k].name, all[*k].nullable))
                .collect();
            let updates: Vec<String> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| !key.contains(i))
                .map(|(_, c)| format!("{} = {d}.{}", quote_ident(&c.name), quote_ident(&c.name)))
                .collect();
            let update = if updates.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            let names: Vec<String> = all.iter().map(|c| quote_ident(&c.name)).collect();
            let values: Vec<String> = names.iter().map(|n| format!("{d}.{n}")).collect();
            let w = quote_ident(WEIGHT);
            let statement = |part: KeyPart| {
                let source = if key.is_empty() {
                    format!(
                        "(SELECT * FROM {} AS {d} ORDER BY {d}.{} DESC LIMIT 1)",
                        delta.sql(),
                        quote_ident(WEIGHT)
                    )
                } else {
                    let dk: Vec<String> = key_names.iter().map(|k| format!("{d}.{k}")).collect();
                    format!(
                        "(SELECT DISTINCT ON ({keys}) * FROM {} AS {d}{} ORDER BY {keys}, {d}.{} DESC)",
                        delta.sql(),
                        part.filter(&keys),
                        quote_ident(WEIGHT),
                        keys = dk.join(", ")
                    )
                };
                format!(
                    "MERGE INTO {} AS {t} USING {source} AS {d} ON {} \
                     WHEN MATCHED AND {d}.{w} < 0 THEN DELETE \
                     WHEN MATCHED THEN {update} \
                     WHEN NOT MATCHED AND {d}.{w} > 0 THEN INSERT ({}) VALUES ({})",
                    storage.sql(),
                    part.condition(&keys),
                    names.join(", "),
                    values.join(", ")
                )
            };
            Ok(KeyPart::parts(&keys).into_iter().map(statement).collect())
        }
        Maintenance::Grouped(g) => Ok(grouped_apply(plan, g, storage, delta)),
        Maintenance::Bag { .. } => Ok(bag_apply(plan, storage, delta)),
    }
}

/// The storage rows the apply statements of a grouped plan are about to insert and delete,
/// as `(inserted, deleted)`, counted before they run (PostgreSQL 15's MERGE returns no rows).
/// Each delta row is one group: a group in the storage is deleted by the apply (an updated
/// group counts as one row deleted and one inserted, as in a Z-set), and is inserted again
/// unless its `__pgt_count` reaches 0; a group not in the storage is inserted when its count
/// is positive. The matches are exactly the MERGE's ([`KeyPart`]). `None` for the other
/// maintenance kinds: keyed and bag deltas count their weights when they are filled.
pub fn grouped_counts_sql(plan: &Plan, storage: &RelName, delta: &RelName) -> Option<String> {
    let Maintenance::Grouped(g) = &plan.maintenance else {
        return None;
    };
    let (t, d) = (quote_ident("t"), quote_ident("d"));
    if g.keys.is_empty() {
        // A scalar aggregate's single row is only ever updated (by every non-empty delta).
        return Some(format!(
            "SELECT count(*)::int8, count(*)::int8 FROM {} AS {d} CROSS JOIN {} AS {t}",
            delta.sql(),
            storage.sql()
        ));
    }
    let count = quote_ident(crate::names::COUNT);
    let all = plan.storage_columns();
    let keys: Vec<(&String, bool)> = g
        .key_storage
        .iter()
        .enumerate()
        .map(|(k, p)| (&all[*p].name, g.key_types[k].nullable))
        .collect();
    let parts: Vec<String> = KeyPart::parts(&keys)
        .into_iter()
        .map(|part| {
            format!(
                "SELECT count(*) FILTER (WHERE CASE WHEN {t}.ctid IS NULL THEN {d}.{count} > 0 \
                 ELSE {t}.{count} + {d}.{count} > 0 END) AS i, count({t}.ctid) AS o \
                 FROM (SELECT * FROM {} AS {d}{}) AS {d} LEFT JOIN {} AS {t} ON {}",
                delta.sql(),
                part.filter(&keys),
                storage.sql(),
                part.condition(&keys)
            )
        })
        .collect();
    Some(format!(
        "SELECT coalesce(sum(i), 0)::int8, coalesce(sum(o), 0)::int8 FROM ({}) AS {}",
        parts.join(" UNION ALL "),
        quote_ident("c")
    ))
}

/// A bag's delta rows are distinct (grouped by every column), so each names the copies of one
/// row: `w < 0` deletes `-w` of them (any: they are equal), found through the storage's index
/// on every column by a LATERAL lookup limited to `-w` rows; then `w > 0` inserts `w` copies.
/// Two delta rows never match the same storage row. Nullable columns are matched as
/// [`KeyPart`] describes (plain `=` for the rows without NULLs).
fn bag_apply(plan: &Plan, storage: &RelName, delta: &RelName) -> Vec<String> {
    let (t, d, m, x) = (
        quote_ident("t"),
        quote_ident("d"),
        quote_ident("m"),
        quote_ident("x"),
    );
    let w = quote_ident(WEIGHT);
    let ctid = quote_ident(crate::names::CTID);
    let keys: Vec<(&String, bool)> = plan.columns.iter().map(|c| (&c.name, c.nullable)).collect();
    let mut out: Vec<String> = KeyPart::parts(&keys)
        .into_iter()
        .map(|part| {
            let only = match part.filter(&keys) {
                f if f.is_empty() => format!(" WHERE {d}.{w} < 0"),
                f => format!("{f} AND {d}.{w} < 0"),
            };
            format!(
                "DELETE FROM {st} AS {t} USING (SELECT {m}.ctid AS {ctid} FROM {} AS {d} \
                 CROSS JOIN LATERAL (SELECT {t}.ctid FROM {st} AS {t} WHERE {} LIMIT (- {d}.{w})) \
                 AS {m}{only}) AS {x} WHERE {t}.ctid = {x}.{ctid}",
                delta.sql(),
                part.condition(&keys),
                st = storage.sql(),
            )
        })
        .collect();
    let names: Vec<String> = plan.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let values: Vec<String> = names.iter().map(|n| format!("{d}.{n}")).collect();
    out.push(format!(
        "INSERT INTO {} ({}) SELECT {} FROM {} AS {d} \
         CROSS JOIN LATERAL pg_catalog.generate_series(1, {d}.{w}) WHERE {d}.{w} > 0",
        storage.sql(),
        names.join(", "),
        values.join(", "),
        delta.sql()
    ));
    out
}

/// Which delta rows one apply statement handles. Matching a nullable key with
/// `IS NOT DISTINCT FROM` cannot use an index (nor a hash or merge join): PostgreSQL would
/// compare every delta row with every storage row. So delta rows whose key has no NULL are
/// applied with plain `=` (index lookups on the storage's key index), and the rare rows with a
/// NULL in their key by a second statement whose condition `(t.k = d.k OR (t.k IS NULL AND
/// d.k IS NULL))` — the same matches as `IS NOT DISTINCT FROM` — can still use that index
/// (a BitmapOr of `k = …` and `k IS NULL`). The two sets of rows match disjoint storage rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyPart {
    /// The key has no nullable column: one statement, `=` everywhere.
    All,
    /// Delta rows whose nullable key columns are all NOT NULL: `=` everywhere.
    NoNull,
    /// Delta rows with a NULL in some key column: NULL-safe matching of nullable columns.
    SomeNull,
}

impl KeyPart {
    fn parts(keys: &[(&String, bool)]) -> Vec<KeyPart> {
        if keys.iter().any(|(_, nullable)| *nullable) {
            vec![KeyPart::NoNull, KeyPart::SomeNull]
        } else {
            vec![KeyPart::All]
        }
    }

    /// ` WHERE …` restricting the delta rows (`"d"` columns), or nothing.
    fn filter(self, keys: &[(&String, bool)]) -> String {
        let d = quote_ident("d");
        let nullable: Vec<String> = keys
            .iter()
            .filter(|(_, nullable)| *nullable)
            .map(|(n, _)| format!("{d}.{}", quote_ident(n)))
            .collect();
        match self {
            KeyPart::All => String::new(),
            KeyPart::NoNull => {
                let parts: Vec<String> = nullable
                    .iter()
                    .map(|c| format!("{c} IS NOT NULL"))
                    .collect();
                format!(" WHERE {}", parts.join(" AND "))
            }
            KeyPart::SomeNull => {
                let parts: Vec<String> = nullable.iter().map(|c| format!("{c} IS NULL")).collect();
                format!(" WHERE ({})", parts.join(" OR "))
            }
        }
    }

    /// The MERGE condition between storage `"t"` and delta `"d"` on the key columns.
    fn condition(self, keys: &[(&String, bool)]) -> String {
        let (t, d) = (quote_ident("t"), quote_ident("d"));
        let parts: Vec<String> = keys
            .iter()
            .map(|(n, nullable)| {
                let n = quote_ident(n);
                if *nullable && self == KeyPart::SomeNull {
                    format!("({t}.{n} = {d}.{n} OR ({t}.{n} IS NULL AND {d}.{n} IS NULL))")
                } else {
                    format!("{t}.{n} = {d}.{n}")
                }
            })
            .collect();
        if parts.is_empty() {
            "TRUE".to_string()
        } else {
            parts.join(" AND ")
        }
    }
}

fn key_name(plan: &Plan, g: &Grouped, k: usize) -> String {
    let all = plan.storage_columns();
    all.get(g.key_storage[k])
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn aux_name(_plan: &Plan, g: &Grouped, a: &Aux) -> String {
    crate::plan::aux_column(g, a).name
}

/// User column `i` as an expression over the row `keys ++ aux` (aux in `g.aux` order).
pub(crate) fn user_expr(g: &Grouped, i: usize) -> Expr {
    let nk = g.keys.len();
    let aux_col = |a: &Aux| Expr::Column(nk + g.aux.iter().position(|x| x == a).unwrap_or(0));
    let user = g
        .user
        .get(i)
        .cloned()
        .unwrap_or(Expr::Literal(Literal::Null));
    user.transform(&mut |e| match e {
        Expr::Column(c) if *c >= nk => g.aggs.get(c - nk).map(|agg| {
            let j = c - nk;
            let cnt = aux_col(&Aux::CountOf(j));
            let when_empty = |value: Expr| Expr::Case {
                operand: None,
                whens: vec![(
                    Expr::binary(BinOp::Eq, cnt.clone(), Expr::int(0)),
                    Expr::Literal(Literal::Null),
                )],
                otherwise: Some(Box::new(value)),
            };
            let cast = |x: Expr, ty: &SqlType| Expr::Cast {
                arg: Box::new(x),
                ty: ty.clone(),
            };
            match agg.func {
                AggFunc::CountStar if agg.filter.is_none() => aux_col(&Aux::Count),
                AggFunc::CountStar | AggFunc::Count => cnt.clone(),
                AggFunc::Sum => when_empty(cast(aux_col(&Aux::SumOf(j)), &agg.ty.ty)),
                _ => {
                    let float = agg.arg_type.as_ref().is_some_and(|t| {
                        matches!(t.class(), TypeClass::Float4 | TypeClass::Float8)
                    });
                    let num = if float {
                        SqlType::float8()
                    } else {
                        SqlType::numeric()
                    };
                    let quotient = Expr::binary(
                        BinOp::Divide,
                        cast(aux_col(&Aux::SumOf(j)), &num),
                        cnt.clone(),
                    );
                    when_empty(cast(quotient, &agg.ty.ty))
                }
            }
        }),
        _ => None,
    })
}

/// User column `i` as SQL, with aux values and keys written by the given functions.
fn user_sql(
    _plan: &Plan,
    g: &Grouped,
    i: usize,
    aux_ref: &dyn Fn(&Aux) -> String,
    key_ref: &dyn Fn(usize) -> String,
) -> String {
    let nk = g.keys.len();
    render_expr(&user_expr(g, i), &|c| {
        if c >= nk {
            g.aux.get(c - nk).map(aux_ref).unwrap_or_default()
        } else {
            key_ref(c)
        }
    })
}

/// `SELECT keys AS <identity names>, aux… FROM (input) AS "s" GROUP BY keys`.
fn aux_select(plan: &Plan, g: &Grouped, input: &Fragment) -> String {
    let r = |e: &Expr| render_expr(e, &|i| col_ref("s", i));
    let w = weight_ref("s");
    let mut cols = Vec::new();
    let mut group = Vec::new();
    for (k, key) in g.keys.iter().enumerate() {
        let sql = match key {
            Expr::Literal(Literal::Int(_) | Literal::Number(_)) => {
                format!("CAST({} AS {})", r(key), g.key_types[k].ty.sql())
            }
            _ => r(key),
        };
        cols.push(format!("{sql} AS {}", quote_ident(&key_name(plan, g, k))));
        group.push(sql);
    }
    for a in &g.aux {
        let name = quote_ident(&aux_name(plan, g, a));
        let sql = match a {
            Aux::Count if input.weighted => format!("CAST(COALESCE(SUM({w}), 0) AS int8)"),
            Aux::Count => "count(*)".to_string(),
            Aux::CountOf(j) => {
                let agg = &g.aggs[*j];
                let mut conds: Vec<String> = agg.filter.iter().map(r).collect();
                if agg.func != AggFunc::CountStar {
                    conds.extend(agg.args.first().map(|x| format!("({} IS NOT NULL)", r(x))));
                }
                let filter = format!(" FILTER (WHERE {})", conds.join(" AND "));
                if input.weighted {
                    format!("CAST(COALESCE(SUM({w}){filter}, 0) AS int8)")
                } else {
                    format!("count(*){filter}")
                }
            }
            Aux::SumOf(j) => {
                let agg = &g.aggs[*j];
                let arg = agg.args.first().map(r).unwrap_or_default();
                let filter = agg
                    .filter
                    .as_ref()
                    .map(|f| format!(" FILTER (WHERE {})", r(f)))
                    .unwrap_or_default();
                let ty = crate::plan::aux_column(g, a).type_name;
                let term = if input.weighted {
                    format!("{arg} * {w}")
                } else {
                    arg
                };
                format!("CAST(COALESCE(SUM({term}){filter}, 0) AS {ty})")
            }
        };
        cols.push(format!("{sql} AS {name}"));
    }
    let group_by = if group.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", group.join(", "))
    };
    format!(
        "SELECT {} FROM ({}) AS {}{group_by}",
        cols.join(", "),
        input.sql,
        quote_ident("s")
    )
}

fn grouped_apply(plan: &Plan, g: &Grouped, storage: &RelName, delta: &RelName) -> Vec<String> {
    let (t, d) = (quote_ident("t"), quote_ident("d"));
    let col = |alias: &str, n: &str| format!("{}.{}", quote_ident(alias), quote_ident(n));
    let new_aux = |a: &Aux| {
        let n = aux_name(plan, g, a);
        format!("({} + {})", col("t", &n), col("d", &n))
    };
    let is_key_col = |i: usize| g.key_storage.contains(&i);
    let mut sets = Vec::new();
    for (i, c) in plan.columns.iter().enumerate() {
        if !is_key_col(i) {
            let e = user_sql(plan, g, i, &new_aux, &|k| col("t", &key_name(plan, g, k)));
            sets.push(format!("{} = {e}", quote_ident(&c.name)));
        }
    }
    for a in &g.aux {
        sets.push(format!(
            "{} = {}",
            quote_ident(&aux_name(plan, g, a)),
            new_aux(a)
        ));
    }
    if g.keys.is_empty() {
        return vec![format!(
            "UPDATE {} AS {t} SET {} FROM {} AS {d}",
            storage.sql(),
            sets.join(", "),
            delta.sql()
        )];
    }
    let all = plan.storage_columns();
    let keys: Vec<(&String, bool)> = g
        .key_storage
        .iter()
        .enumerate()
        .map(|(k, p)| (&all[*p].name, g.key_types[k].nullable))
        .collect();
    let names: Vec<String> = all.iter().map(|c| quote_ident(&c.name)).collect();
    let mut values = Vec::new();
    for (i, c) in all.iter().enumerate() {
        if i < plan.columns.len() && !is_key_col(i) {
            values.push(user_sql(
                plan,
                g,
                i,
                &|a| col("d", &aux_name(plan, g, a)),
                &|k| col("d", &key_name(plan, g, k)),
            ));
        } else {
            values.push(col("d", &c.name));
        }
    }
    let count = quote_ident(crate::names::COUNT);
    KeyPart::parts(&keys)
        .into_iter()
        .map(|part| {
            let source = match part {
                KeyPart::All => delta.sql(),
                _ => format!(
                    "(SELECT * FROM {} AS {d}{})",
                    delta.sql(),
                    part.filter(&keys)
                ),
            };
            format!(
                "MERGE INTO {} AS {t} USING {source} AS {d} ON {} \
                 WHEN MATCHED AND {t}.{count} + {d}.{count} <= 0 THEN DELETE \
                 WHEN MATCHED THEN UPDATE SET {} \
                 WHEN NOT MATCHED AND {d}.{count} > 0 THEN INSERT ({}) VALUES ({})",
                storage.sql(),
                part.condition(&keys),
                sets.join(", "),
                names.join(", "),
                values.join(", ")
            )
        })
        .collect()
}
