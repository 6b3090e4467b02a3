//! In-memory model of a stream table's storage and of the three statements the renderer
//! emits (full, delta, apply), over Z-sets. It is the executable specification the property
//! tests hold the maintenance strategies to: apply(full(before), delta) = full(after), and
//! full(state) holds exactly the defining query's rows (INV-1; docs/CORRECTNESS.md §2).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::expr::eval::{compare, eval, is_true, EvalError};
use crate::operator::{AggFunc, EvalContext, Tables};
use crate::plan::{Aux, Grouped, Maintenance, Plan};
use crate::render::apply::{has_extremes, user_expr};
use crate::value::{Row, Value};
use crate::zset::{Weight, ZSet};

/// Storage rows (user columns then hidden columns), each with weight 1.
pub type Storage = ZSet;

fn no_deltas() -> Tables {
    Tables::new()
}

fn opaque() -> EvalError {
    EvalError::Unsupported("plan without differential maintenance".into())
}

/// The storage content after a FULL refresh at `tables`.
pub fn full(plan: &Plan, tables: &Tables) -> Result<Storage, EvalError> {
    let empty = no_deltas();
    let ctx = EvalContext {
        current: tables,
        deltas: &empty,
    };
    match &plan.maintenance {
        Maintenance::Opaque => Err(opaque()),
        Maintenance::Keyed { root, .. } | Maintenance::Bag { root } => root.eval(ctx),
        Maintenance::Grouped(g) => {
            let aux = aux_groups(g, &g.input.eval(ctx)?, true)?;
            let mut out = ZSet::new();
            for (key, values) in aux {
                out.add(storage_row(plan, g, &key, &values)?, 1);
            }
            Ok(out)
        }
    }
}

/// The rows of the delta relation (`delta_query_sql`) for a change window, with `storage`
/// the stream table's contents before it. Keyed plans: storage rows weighted ±1. Grouped
/// plans: `keys ++ aux deltas`, weight 1, and with MIN/MAX kept in place the extremes'
/// candidates (or rescanned values) and the rescan flag last.
pub fn delta(
    plan: &Plan,
    storage: &Storage,
    after: &Tables,
    deltas: &Tables,
) -> Result<ZSet, EvalError> {
    let ctx = EvalContext {
        current: after,
        deltas,
    };
    let unsupported = |e: crate::error::EngineError| EvalError::Unsupported(e.to_string());
    match &plan.maintenance {
        Maintenance::Opaque => Err(opaque()),
        Maintenance::Keyed { root, .. } | Maintenance::Bag { root } => {
            root.delta().map_err(unsupported)?.eval(ctx)
        }
        Maintenance::Grouped(g) => {
            let d = g.input.delta().map_err(unsupported)?.eval(ctx)?;
            let extremes = has_extremes(g);
            let stored = if extremes {
                stored_groups(plan, g, storage)
            } else {
                BTreeMap::new()
            };
            let after_rows = if extremes {
                Some(g.input.eval(EvalContext {
                    current: after,
                    deltas: &no_deltas(),
                })?)
            } else {
                None
            };
            let deleted = deleted_extremes(g, &d)?;
            let mut out = ZSet::new();
            for (mut key, mut values) in aux_groups(g, &d, false)? {
                if let Some(rows) = &after_rows {
                    let old = stored.get(&key);
                    let reached = g.aux.iter().enumerate().any(|(i, a)| {
                        let Aux::Extreme(j) = a else { return false };
                        let del = deleted.get(&key).map_or(&Value::Null, |v| &v[i]);
                        let ext = old.map_or(&Value::Null, |o| &o[i]);
                        !del.is_null()
                            && (ext.is_null() || {
                                let c = compare(del, ext);
                                c == Some(Ordering::Equal) || c == Some(wanted(&g.aggs[*j].func))
                            })
                    });
                    // A rescanned group takes its extremes from its rows after the change; one
                    // with no row left keeps the candidates (its count deletes it).
                    let rescanned = if reached {
                        let group = group_rows(g, rows, &key)?;
                        if group.is_empty() && !g.keys.is_empty() {
                            false
                        } else {
                            let fresh = aux_groups(g, &group, true)?;
                            let fresh = fresh.get(&key).cloned().unwrap_or_default();
                            for (i, a) in g.aux.iter().enumerate() {
                                if matches!(a, Aux::Extreme(_)) {
                                    values[i] = fresh.get(i).cloned().unwrap_or(Value::Null);
                                }
                            }
                            true
                        }
                    } else {
                        false
                    };
                    values.push(Value::Bool(rescanned));
                }
                key.extend(values);
                out.add(key, 1);
            }
            Ok(out)
        }
    }
}

/// The order an extreme wins by: `Less` for MIN, `Greater` for MAX.
fn wanted(func: &AggFunc) -> Ordering {
    if *func == AggFunc::Min {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// The winner of two values of an extreme (NULL loses, as in `least`/`greatest`).
fn extreme_of(func: &AggFunc, a: &Value, b: &Value) -> Value {
    match (a.is_null(), b.is_null()) {
        (true, _) => b.clone(),
        (_, true) => a.clone(),
        _ if compare(b, a) == Some(wanted(func)) => b.clone(),
        _ => a.clone(),
    }
}

/// The aux values of each group the storage holds, by group key.
fn stored_groups(plan: &Plan, g: &Grouped, storage: &Storage) -> BTreeMap<Row, Vec<Value>> {
    let aux_start = plan.columns.len() + plan.hidden.len() - g.aux.len();
    storage
        .iter()
        .map(|(row, _)| {
            let key: Row = g.key_storage.iter().map(|p| row[*p].clone()).collect();
            (key, row[aux_start..].to_vec())
        })
        .collect()
}

/// The group key of `row` in `g`.
fn group_key(g: &Grouped, row: &Row) -> Result<Row, EvalError> {
    g.keys.iter().map(|k| eval(k, row)).collect()
}

/// The rows of `input` in group `key` (keys compared NULL-safely).
fn group_rows(g: &Grouped, input: &ZSet, key: &[Value]) -> Result<ZSet, EvalError> {
    let mut out = ZSet::new();
    for (row, w) in input.iter() {
        let k = group_key(g, row)?;
        if k == key {
            out.add(row.clone(), w);
        }
    }
    Ok(out)
}

/// Per group of delta `d`, at each aux position: for MIN/MAX kept in place, the extreme of the
/// values deleted (negative weight, counted); NULL elsewhere.
fn deleted_extremes(g: &Grouped, d: &ZSet) -> Result<BTreeMap<Row, Vec<Value>>, EvalError> {
    let mut out: BTreeMap<Row, Vec<Value>> = BTreeMap::new();
    for (row, w) in d.iter() {
        if w >= 0 {
            continue;
        }
        let key = group_key(g, row)?;
        let entry = out
            .entry(key)
            .or_insert_with(|| vec![Value::Null; g.aux.len()]);
        for (i, a) in g.aux.iter().enumerate() {
            if let Aux::Extreme(j) = a {
                if let Some(v) = counted_value(g, *j, row)? {
                    entry[i] = extreme_of(&g.aggs[*j].func, &entry[i], &v);
                }
            }
        }
    }
    Ok(out)
}

/// Applies a delta (as produced by `delta`) to `storage`, as the MERGE/UPDATE statements do.
pub fn apply(plan: &Plan, storage: &Storage, delta: &ZSet) -> Result<Storage, EvalError> {
    match &plan.maintenance {
        Maintenance::Opaque => Err(opaque()),
        // Bag storage holds each row as often as its weight: delete `-w` copies (all must
        // be there) or insert `w`.
        Maintenance::Bag { .. } => {
            let mut out = storage.clone();
            for (row, w) in delta.iter() {
                if w < 0 && storage.weight(row) < -w {
                    return Err(EvalError::InvalidInput(
                        "a bag delta deletes more copies than the storage holds".into(),
                    ));
                }
                out.add(row.clone(), w);
            }
            Ok(out)
        }
        Maintenance::Keyed { key, .. } => {
            let all = plan.storage_columns();
            // MERGE compares NOT NULL key columns with `=`: a NULL there never matches, which
            // this model reproduces by giving such rows a unique, unmatchable identity.
            let mut unmatchable = 0i64;
            let mut id = |r: &Row| {
                let broken = key.iter().any(|k| !all[*k].nullable && r[*k].is_null());
                let mut v: Row = key.iter().map(|k| r[*k].clone()).collect();
                if broken {
                    unmatchable += 1;
                    v.push(Value::Int(unmatchable));
                }
                v
            };
            // DISTINCT ON (identity) ORDER BY weight DESC: the insertion wins over the deletion.
            let mut chosen: BTreeMap<Row, (Row, Weight)> = BTreeMap::new();
            for (row, w) in delta.iter() {
                let entry = chosen.entry(id(row)).or_insert((row.clone(), w));
                if w > entry.1 {
                    *entry = (row.clone(), w);
                }
            }
            let mut by_id: BTreeMap<Row, Row> =
                storage.iter().map(|(r, _)| (id(r), r.clone())).collect();
            for (k, (row, w)) in chosen {
                if w < 0 {
                    by_id.remove(&k);
                } else if w > 0 {
                    by_id.insert(k, row);
                }
            }
            Ok(ZSet::from_rows(by_id.into_values()))
        }
        Maintenance::Grouped(g) => {
            let nk = g.keys.len();
            let extremes = has_extremes(g);
            let mut groups = stored_groups(plan, g, storage);
            for (row, _) in delta.iter() {
                let (key, d) = row.split_at(nk);
                let (d, rescanned) = if extremes {
                    let (d, flag) = d.split_at(d.len() - 1);
                    (d, flag[0] == Value::Bool(true))
                } else {
                    (d, false)
                };
                if key
                    .iter()
                    .zip(&g.key_types)
                    .any(|(v, t)| v.is_null() && !t.nullable)
                {
                    // MERGE matches NOT NULL keys with `=`, under which NULL matches nothing.
                    return Err(EvalError::InvalidInput(
                        "NULL in a key declared NOT NULL".into(),
                    ));
                }
                let new = match groups.get(key) {
                    Some(old) => {
                        let mut new = add_aux(g, old, d)?;
                        if rescanned {
                            for (i, a) in g.aux.iter().enumerate() {
                                if matches!(a, Aux::Extreme(_)) {
                                    new[i] = d[i].clone();
                                }
                            }
                        }
                        new
                    }
                    None => d.to_vec(),
                };
                let count = match new.first() {
                    Some(Value::Int(c)) => *c,
                    _ => 0,
                };
                if count > 0 || nk == 0 {
                    groups.insert(key.to_vec(), new);
                } else {
                    groups.remove(key);
                }
            }
            let mut out = ZSet::new();
            for (key, values) in groups {
                out.add(storage_row(plan, g, &key, &values)?, 1);
            }
            Ok(out)
        }
    }
}

/// The defining query's result as the storage holds it: the user columns of every storage
/// row (a bag's copies are rows of the storage, each counted).
pub fn visible(plan: &Plan, storage: &Storage) -> ZSet {
    let n = plan.columns.len();
    let mut out = ZSet::new();
    for (row, w) in storage.iter() {
        out.add(row[..n].to_vec(), w);
    }
    out
}

/// Aux values combined: counts and sums add, extremes keep the winner.
fn add_aux(g: &Grouped, old: &[Value], d: &[Value]) -> Result<Vec<Value>, EvalError> {
    old.iter()
        .zip(d)
        .zip(&g.aux)
        .map(|((a, b), aux)| match (aux, a, b) {
            (Aux::Extreme(j), _, _) => Ok(extreme_of(&g.aggs[*j].func, a, b)),
            (_, Value::Int(x), Value::Int(y)) => {
                x.checked_add(*y).map(Value::Int).ok_or(EvalError::Overflow)
            }
            (_, Value::Float(x), Value::Float(y)) => Ok(Value::float(x.get() + y.get())),
            #[allow(clippy::cast_precision_loss)]
            (_, Value::Float(x), Value::Int(y)) | (_, Value::Int(y), Value::Float(x)) => {
                Ok(Value::float(x.get() + *y as f64))
            }
            _ => Err(EvalError::InvalidInput("aux column".into())),
        })
        .collect()
}

fn storage_row(plan: &Plan, g: &Grouped, key: &[Value], aux: &[Value]) -> Result<Row, EvalError> {
    let base: Row = key.iter().chain(aux.iter()).cloned().collect();
    let mut row = Vec::new();
    for i in 0..plan.columns.len() {
        row.push(eval(&user_expr(g, i), &base)?);
    }
    for (k, p) in g.key_storage.iter().enumerate() {
        if *p >= plan.columns.len() {
            row.push(key[k].clone());
        }
    }
    row.extend(aux.iter().cloned());
    Ok(row)
}

/// Aux values per group of a Z-set (weights multiply every contribution). With `positive`,
/// a scalar aggregate always has its one group.
fn aux_groups(
    g: &Grouped,
    input: &ZSet,
    positive: bool,
) -> Result<BTreeMap<Row, Vec<Value>>, EvalError> {
    let mut groups: BTreeMap<Row, Vec<Value>> = BTreeMap::new();
    let zero = || -> Vec<Value> {
        g.aux
            .iter()
            .map(|a| match a {
                Aux::SumOf(j) if is_float(g, *j) => Value::float(0.0),
                Aux::Extreme(_) => Value::Null,
                _ => Value::Int(0),
            })
            .collect()
    };
    if g.keys.is_empty() && positive {
        groups.insert(Vec::new(), zero());
    }
    for (row, w) in input.iter() {
        let key = group_key(g, row)?;
        let contribution = g
            .aux
            .iter()
            .map(|a| aux_contribution(g, a, row, w))
            .collect::<Result<Vec<_>, _>>()?;
        let entry = groups.entry(key).or_insert_with(zero);
        *entry = add_aux(g, entry, &contribution)?;
    }
    if g.keys.is_empty() && !positive {
        groups.entry(Vec::new()).or_insert_with(zero);
    }
    Ok(groups)
}

fn is_float(g: &Grouped, j: usize) -> bool {
    g.aggs[j].arg_type.as_ref().is_some_and(|t| {
        matches!(
            t.class(),
            crate::types::TypeClass::Float4 | crate::types::TypeClass::Float8
        )
    })
}

/// The value aggregate `j` counts for `row`: none when its FILTER fails or its argument is
/// NULL (COUNT(*) counts 1).
fn counted_value(g: &Grouped, j: usize, row: &Row) -> Result<Option<Value>, EvalError> {
    let agg = &g.aggs[j];
    if let Some(f) = &agg.filter {
        if !is_true(&eval(f, row)?) {
            return Ok(None);
        }
    }
    match agg.args.first() {
        Some(x) if agg.func != AggFunc::CountStar => {
            let v = eval(x, row)?;
            Ok((!v.is_null()).then_some(v))
        }
        _ => Ok(Some(Value::Int(1))),
    }
}

/// What `row` with weight `w` adds to aux column `a`: its weight to counts, its value times
/// its weight to sums; an inserted (w > 0) value is a candidate extreme.
fn aux_contribution(g: &Grouped, a: &Aux, row: &Row, w: Weight) -> Result<Value, EvalError> {
    let counted = |j: usize| counted_value(g, j, row);
    Ok(match a {
        Aux::Extreme(j) => match counted(*j)? {
            Some(v) if w > 0 => v,
            _ => Value::Null,
        },
        Aux::Count => Value::Int(w),
        Aux::CountOf(j) => Value::Int(if counted(*j)?.is_some() { w } else { 0 }),
        Aux::TrueOf(j) => Value::Int(if counted(*j)? == Some(Value::Bool(true)) {
            w
        } else {
            0
        }),
        Aux::SumOf(j) => match counted(*j)? {
            Some(Value::Int(x)) => Value::Int(x.checked_mul(w).ok_or(EvalError::Overflow)?),
            #[allow(clippy::cast_precision_loss)]
            Some(Value::Float(x)) => Value::float(x.get() * w as f64),
            Some(_) => return Err(EvalError::InvalidInput("sum argument".into())),
            None if is_float(g, *j) => Value::float(0.0),
            None => Value::Int(0),
        },
    })
}
