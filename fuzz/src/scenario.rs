//! Random databases over the fixed catalog and one change window: a before state built by
//! inserts and deletes, then a window of inserts, deletes, updates of non-key columns and
//! updates of the key, recorded as a Z-set delta (an update is −old +new). Small value domains
//! make joins match, groups collide, NULLs appear and weights cancel.

use arbitrary::{Result, Unstructured};
use engine::{Row, Tables, Value, ZSet};

use crate::schema::{TableSpec, Ty};

/// Operations in the before state and in the change window.
const INIT_OPS_MAX: u32 = 12;
const WINDOW_OPS_MAX: u32 = 8;

/// Before and after states and the window Δ = after − before, every table present.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub before: Tables,
    pub after: Tables,
    pub delta: Tables,
}

fn value(u: &mut Unstructured<'_>, ty: Ty, nullable: bool) -> Result<Value> {
    if nullable && u.ratio(1, 5)? {
        return Ok(Value::Null);
    }
    Ok(match ty {
        Ty::Int | Ty::Num => Value::Int(i64::from(u.int_in_range(0u8..=3)?)),
        Ty::Text => Value::text(u.choose(&["a", "b", "", "a "])?),
        Ty::Bool => Value::Bool(u.arbitrary()?),
    })
}

fn key_of(row: &Row) -> Option<i64> {
    match row.first() {
        Some(Value::Int(k)) => Some(*k),
        _ => None,
    }
}

/// The smallest key at or above `from` that no row of `z` uses.
fn free_key(z: &ZSet, from: i64) -> i64 {
    let mut k = from;
    while z.iter().any(|(r, _)| key_of(r) == Some(k)) {
        k += 1;
    }
    k
}

fn new_row(u: &mut Unstructured<'_>, t: &TableSpec, key: i64) -> Result<Row> {
    let mut row = Vec::with_capacity(t.columns.len());
    for (i, (_, _, nullable, ty)) in t.columns.iter().enumerate() {
        if i == 0 && t.keyed {
            row.push(Value::Int(key));
        } else {
            row.push(value(u, *ty, *nullable)?);
        }
    }
    Ok(row)
}

/// Applies one random operation to `tables`, recording it in `delta`. `window` allows updates.
fn step(
    u: &mut Unstructured<'_>,
    specs: &[&TableSpec],
    tables: &mut Tables,
    delta: &mut Tables,
    window: bool,
) -> Result<()> {
    let t = *u.choose(specs)?;
    let z = tables.entry(t.id).or_default();
    let rows: Vec<Row> = z
        .iter()
        .flat_map(|(r, w)| std::iter::repeat_n(r.clone(), usize::try_from(w).unwrap_or(0)))
        .collect();
    let kind = u.int_in_range(0u8..=if window { 3 } else { 1 })?;
    let d = delta.entry(t.id).or_default();
    let existing = if rows.is_empty() {
        None
    } else {
        Some(rows[u.choose_index(rows.len())?].clone())
    };
    let start = i64::from(u.int_in_range(0u8..=7)?);
    match (kind, existing) {
        (0, _) | (_, None) => {
            let row = new_row(u, t, free_key(z, start))?;
            z.add(row.clone(), 1);
            d.add(row, 1);
        }
        (1, Some(old)) => {
            z.add(old.clone(), -1);
            d.add(old, -1);
        }
        (k, Some(old)) => {
            z.add(old.clone(), -1);
            d.add(old.clone(), -1);
            let key = if k == 2 {
                key_of(&old).unwrap_or(0)
            } else {
                free_key(z, start + 3)
            };
            let new = new_row(u, t, key)?;
            z.add(new.clone(), 1);
            d.add(new, 1);
        }
    }
    Ok(())
}

/// A random before state and change window over the tables `specs`.
pub fn scenario(u: &mut Unstructured<'_>, specs: &[&TableSpec]) -> Result<Scenario> {
    let mut before = Tables::new();
    let mut scratch = Tables::new();
    for _ in 0..u.int_in_range(0..=INIT_OPS_MAX)? {
        step(u, specs, &mut before, &mut scratch, false)?;
    }
    let mut after = before.clone();
    let mut delta = Tables::new();
    for _ in 0..u.int_in_range(0..=WINDOW_OPS_MAX)? {
        step(u, specs, &mut after, &mut delta, true)?;
    }
    for t in specs {
        before.entry(t.id).or_default();
        after.entry(t.id).or_default();
        delta.entry(t.id).or_default();
    }
    Ok(Scenario {
        before,
        after,
        delta,
    })
}
