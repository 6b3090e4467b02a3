//! The three statements the extension runs: the full query (initial load, FULL refresh), the
//! delta query (one change window, consolidated) and the apply statements (MERGE keyed on
//! the identity, PostgreSQL 15 syntax, reading the materialised delta).
//! Invariants: the delta query's rows are consolidated (one row per storage row for keyed
//! plans, one per group for grouped plans), so MERGE never touches a target row twice; a
//! group is deleted exactly when its `__pgt_count` reaches 0; a scalar aggregate's single row
//! is only ever updated.

use super::expr::render_expr;
use super::{
    col_ref, key_match, qualified, quote_ident, weight_ref, DeltaSources, Fragment, SqlWriter,
    WEIGHT,
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
            let inner = aux_select(plan, g, &input, false);
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
/// the change of every aux column (`__pgt_count`, `__pgt_cnt_j`, `__pgt_sum_j`), and with
/// MIN/MAX kept in place their new candidates and the rescan flag ([`extremes_delta`], which
/// reads the stream table's storage `storage` as it is before the delta is applied).
pub fn delta_query_sql(
    plan: &Plan,
    sources: &DeltaSources,
    storage: &RelName,
) -> Result<String, EngineError> {
    match &plan.maintenance {
        Maintenance::Opaque => Err(not_differentiable(plan)),
        // A bag's delta has the same shape: one row per distinct row, its weight the net
        // number of copies gained (> 0) or lost (< 0).
        Maintenance::Keyed { root, .. } | Maintenance::Bag { root } => {
            let delta = root.delta()?;
            let mut w = SqlWriter::new(Some(sources));
            w.storage = Some(storage_columns(plan, storage));
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
            if !has_extremes(g) {
                let body = aux_select(plan, g, &f, false);
                return Ok(w.finish(&body));
            }
            let body = extremes_delta(plan, g, &f, &mut w, storage)?;
            Ok(w.finish(&body))
        }
    }
}

/// The storage's user columns as `"c0".."cN"`, a FROM item.
fn storage_columns(plan: &Plan, storage: &RelName) -> String {
    let cols: Vec<String> = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} AS {}", quote_ident(&c.name), super::col_name(i)))
        .collect();
    format!("(SELECT {} FROM {})", cols.join(", "), storage.sql())
}

/// Whether grouped plan `g` keeps MIN/MAX aggregates in place (`Aux::Extreme`).
pub(crate) fn has_extremes(g: &Grouped) -> bool {
    g.aux.iter().any(|a| matches!(a, Aux::Extreme(_)))
}

/// The SQL function that combines a stored extreme with a candidate (NULLs ignored), and the
/// comparison under which a deleted value may have been the stored extreme.
fn extreme_ops(func: &AggFunc) -> (&'static str, &'static str) {
    if *func == AggFunc::Min {
        ("least", "<=")
    } else {
        ("greatest", ">=")
    }
}

/// The delta of a grouped plan with MIN/MAX kept in place. Delta rule, per group and MIN
/// aggregate j (MAX mirrored), with m the stored minimum (NULL: no counted value, or no
/// stored group), I the values the window inserts and D those it deletes (weights' signs,
/// counted values only):
/// - D empty, or min(D) > m: m is still in the group, so the new minimum is least(m, min(I)),
///   computed by the apply without reading the sources;
/// - otherwise (min(D) <= m, or m NULL while D is not empty — an unconsolidated window can
///   delete and re-insert a value): the group is rescanned — its extremes are computed from
///   its rows after the change, found through a semi join on the group key (the group-key
///   index where there is one), once for all such groups.
///
/// So a group is read from the sources only when a deletion reached its extreme. The
/// statement: CTE `GROUP_DELTA` (aux changes, candidates min(I), and min(D) per group),
/// CTE `RESCANNED` (the groups whose stored extremes a deletion may have removed, found by
/// joining the storage), and the delta rows, each with `RESCAN` true when its extremes were
/// rescanned (then they replace the stored ones) — a rescanned group that has no row left has
/// no rescanned value and is deleted by its count.
fn extremes_delta(
    plan: &Plan,
    g: &Grouped,
    delta: &Fragment,
    w: &mut SqlWriter<'_>,
    storage: &RelName,
) -> Result<String, EngineError> {
    let q = quote_ident;
    let (d, t, r, s) = (q("d"), q("t"), q("r"), q("s"));
    let gd = q(crate::names::GROUP_DELTA);
    let rescanned = q(crate::names::RESCANNED);
    let rescan = q(crate::names::RESCAN);
    let key_names: Vec<String> = (0..g.keys.len()).map(|k| key_name(plan, g, k)).collect();
    let keys: Vec<(&String, bool)> = key_names
        .iter()
        .zip(&g.key_types)
        .map(|(n, kt)| (n, kt.nullable))
        .collect();
    w.cte(crate::names::GROUP_DELTA, aux_select(plan, g, delta, true));
    // The groups a deletion may have taken the stored extreme from.
    let reached: Vec<String> = g
        .aux
        .iter()
        .filter_map(|a| match a {
            Aux::Extreme(j) => {
                let (_, cmp) = extreme_ops(&g.aggs[*j].func);
                let ext = q(&aux_name(plan, g, a));
                let del = q(&crate::names::deleted_extreme(*j));
                Some(format!(
                    "({d}.{del} IS NOT NULL AND ({t}.{ext} IS NULL OR {d}.{del} {cmp} {t}.{ext}))"
                ))
            }
            _ => None,
        })
        .collect();
    let dkeys: Vec<String> = key_names.iter().map(|k| format!("{d}.{}", q(k))).collect();
    w.cte(
        crate::names::RESCANNED,
        format!(
            "SELECT {} FROM {gd} AS {d} LEFT JOIN {} AS {t} ON {} WHERE {}",
            dkeys.join(", "),
            storage.sql(),
            key_match(&keys, "t", "d", true),
            reached.join(" OR ")
        ),
    );
    // The rescanned groups' rows after the change.
    let after = w.input(&g.input)?;
    let key_sql = key_exprs(g);
    let from = if g.keys.is_empty() {
        format!(
            "({}) AS {s} WHERE EXISTS (SELECT FROM {rescanned})",
            after.sql
        )
    } else {
        let nullable: Vec<usize> = (0..g.keys.len())
            .filter(|k| g.key_types[*k].nullable)
            .collect();
        let names: Vec<String> = key_names.iter().map(|k| q(k)).collect();
        let matched = format!(
            "({}) IN (SELECT {} FROM {rescanned})",
            key_sql.join(", "),
            names.join(", ")
        );
        if nullable.is_empty() {
            format!("({}) AS {s} WHERE {matched}", after.sql)
        } else {
            // Rows whose nullable keys are all non-NULL match by `=` (hash or index semi
            // join); rows with a NULL key NULL-safely, a part skipped at once (one-time
            // filter) unless a rescanned group has a NULL key. Disjoint parts.
            let n = q("n");
            let no_null: Vec<String> = nullable
                .iter()
                .map(|k| format!("({}) IS NOT NULL", key_sql[*k]))
                .collect();
            let some_null: Vec<String> = nullable
                .iter()
                .map(|k| format!("({}) IS NULL", key_sql[*k]))
                .collect();
            let any_null: Vec<String> = nullable
                .iter()
                .map(|k| format!("{n}.{} IS NULL", q(&key_names[*k])))
                .collect();
            let same: Vec<String> = key_sql
                .iter()
                .zip(&key_names)
                .map(|(e, k)| format!("{n}.{} IS NOT DISTINCT FROM ({e})", q(k)))
                .collect();
            format!(
                "(SELECT * FROM ({a}) AS {s} WHERE {} AND {matched} \
                 UNION ALL SELECT * FROM ({a}) AS {s} WHERE ({}) \
                 AND EXISTS (SELECT FROM {rescanned} AS {n} WHERE {}) \
                 AND EXISTS (SELECT FROM {rescanned} AS {n} WHERE {})) AS {s}",
                no_null.join(" AND "),
                some_null.join(" OR "),
                any_null.join(" OR "),
                same.join(" AND "),
                a = after.sql
            )
        }
    };
    let mut cols: Vec<String> = key_sql
        .iter()
        .zip(&key_names)
        .map(|(e, k)| format!("{e} AS {}", q(k)))
        .collect();
    for a in &g.aux {
        if let Aux::Extreme(j) = a {
            cols.push(format!(
                "{} AS {}",
                extreme_agg(g, *j, after.weighted, false),
                q(&aux_name(plan, g, a))
            ));
        }
    }
    cols.push(format!("TRUE AS {rescan}"));
    let tail = if g.keys.is_empty() {
        // No GROUP BY: one row even over no input, wanted only when the group is rescanned.
        format!(" HAVING EXISTS (SELECT FROM {rescanned})")
    } else {
        format!(" GROUP BY {}", key_sql.join(", "))
    };
    let rescans = format!("SELECT {} FROM {from}{tail}", cols.join(", "));
    let mut out: Vec<String> = dkeys
        .iter()
        .zip(&key_names)
        .map(|(e, k)| format!("{e} AS {}", q(k)))
        .collect();
    for a in &g.aux {
        let n = q(&aux_name(plan, g, a));
        out.push(match a {
            Aux::Extreme(_) => {
                format!("CASE WHEN {r}.{rescan} THEN {r}.{n} ELSE {d}.{n} END AS {n}")
            }
            _ => format!("{d}.{n} AS {n}"),
        });
    }
    out.push(format!("({r}.{rescan} IS NOT NULL) AS {rescan}"));
    Ok(format!(
        "SELECT {} FROM {gd} AS {d} LEFT JOIN ({rescans}) AS {r} ON {}",
        out.join(", "),
        key_match(&keys, "r", "d", true)
    ))
}

/// The group keys of `g` over alias `"s"` (a bare integer cast: GROUP BY would read it as a
/// column position).
fn key_exprs(g: &Grouped) -> Vec<String> {
    let r = |e: &Expr| render_expr(e, &|i| col_ref("s", i));
    g.keys
        .iter()
        .enumerate()
        .map(|(k, key)| match key {
            Expr::Literal(Literal::Int(_) | Literal::Number(_)) => {
                format!("CAST({} AS {})", r(key), g.key_types[k].ty.sql())
            }
            _ => r(key),
        })
        .collect()
}

/// MIN/MAX aggregate `j` over alias `"s"`: of the values counted (FILTER passed, not NULL);
/// over a `weighted` input, of the rows inserted (weight > 0), or with `deleted` of the rows
/// deleted (weight < 0).
fn extreme_agg(g: &Grouped, j: usize, weighted: bool, deleted: bool) -> String {
    let agg = &g.aggs[j];
    let r = |e: &Expr| render_expr(e, &|i| col_ref("s", i));
    let arg = agg.args.first().map(r).unwrap_or_default();
    let mut conds: Vec<String> = agg.filter.iter().map(r).collect();
    if weighted {
        let sign = if deleted { "<" } else { ">" };
        conds.push(format!("{} {sign} 0", weight_ref("s")));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" FILTER (WHERE {})", conds.join(" AND "))
    };
    format!(
        "CAST({}({arg}){filter} AS {})",
        agg.func.name(),
        agg.ty.ty.sql()
    )
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
        key_match(keys, "t", "d", self == KeyPart::SomeNull)
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
                AggFunc::Min | AggFunc::Max => aux_col(&Aux::Extreme(j)),
                AggFunc::BoolAnd | AggFunc::BoolOr => {
                    let trues = aux_col(&Aux::TrueOf(j));
                    when_empty(if agg.func == AggFunc::BoolAnd {
                        Expr::binary(BinOp::Eq, trues, cnt.clone())
                    } else {
                        Expr::binary(BinOp::Gt, trues, Expr::int(0))
                    })
                }
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

/// `SELECT keys AS <identity names>, aux… FROM (input) AS "s" GROUP BY keys`; with
/// `deleted`, also the extreme of the values deleted for every MIN/MAX kept in place (over
/// a weighted delta).
fn aux_select(plan: &Plan, g: &Grouped, input: &Fragment, deleted: bool) -> String {
    let r = |e: &Expr| render_expr(e, &|i| col_ref("s", i));
    let w = weight_ref("s");
    let mut cols = Vec::new();
    let group = key_exprs(g);
    for (k, sql) in group.iter().enumerate() {
        cols.push(format!("{sql} AS {}", quote_ident(&key_name(plan, g, k))));
    }
    for a in &g.aux {
        let name = quote_ident(&aux_name(plan, g, a));
        let sql = match a {
            Aux::Count if input.weighted => format!("CAST(COALESCE(SUM({w}), 0) AS int8)"),
            Aux::Count => "count(*)".to_string(),
            Aux::CountOf(j) | Aux::TrueOf(j) => {
                let agg = &g.aggs[*j];
                let mut conds: Vec<String> = agg.filter.iter().map(r).collect();
                if agg.func != AggFunc::CountStar {
                    let test = if matches!(a, Aux::TrueOf(_)) {
                        "IS TRUE"
                    } else {
                        "IS NOT NULL"
                    };
                    conds.extend(agg.args.first().map(|x| format!("({} {test})", r(x))));
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
            Aux::Extreme(j) => extreme_agg(g, *j, input.weighted, false),
        };
        cols.push(format!("{sql} AS {name}"));
    }
    if deleted {
        for a in &g.aux {
            if let Aux::Extreme(j) = a {
                cols.push(format!(
                    "{} AS {}",
                    extreme_agg(g, *j, input.weighted, true),
                    quote_ident(&crate::names::deleted_extreme(*j))
                ));
            }
        }
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
    // The stored value after the delta: aux changes add; an extreme is replaced when its
    // group was rescanned, and otherwise combined with the delta's candidate.
    let new_aux = |a: &Aux| {
        let n = aux_name(plan, g, a);
        match a {
            Aux::Extreme(j) => format!(
                "CASE WHEN {} THEN {} ELSE {}({}, {}) END",
                col("d", crate::names::RESCAN),
                col("d", &n),
                extreme_ops(&g.aggs[*j].func).0,
                col("t", &n),
                col("d", &n)
            ),
            _ => format!("({} + {})", col("t", &n), col("d", &n)),
        }
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
