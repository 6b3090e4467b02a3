//! Random databases and change windows for the property tests: three keyed tables `a`, `b`,
//! `c` (`k` primary key, two nullable int columns) and a bag table `d` (no key, duplicates),
//! with small value domains so that joins match, groups collide and NULL keys occur.

#![allow(dead_code)]

use engine::{MemoryCatalog, Tables, Value, ZSet};
use proptest::prelude::*;

pub const A: u32 = 16384;
pub const B: u32 = 16385;
pub const C: u32 = 16386;
pub const D: u32 = 16387;

/// The catalog of the test tables (ids above).
pub fn catalog() -> MemoryCatalog {
    let mut cat = MemoryCatalog::new();
    cat.add_table(
        "public",
        "a",
        &[
            ("k", "int4", false),
            ("x", "int4", true),
            ("g", "int4", true),
        ],
        &["k"],
    );
    cat.add_table(
        "public",
        "b",
        &[
            ("k", "int4", false),
            ("y", "int4", true),
            ("g", "int4", true),
        ],
        &["k"],
    );
    cat.add_table(
        "public",
        "c",
        &[("k", "int4", false), ("z", "int4", true)],
        &["k"],
    );
    cat.add_table(
        "public",
        "d",
        &[("v", "int4", true), ("w", "int4", true)],
        &[],
    );
    cat
}

pub fn arity(table: u32) -> usize {
    match table {
        C | D => 2,
        _ => 3,
    }
}

fn keyed(table: u32) -> bool {
    table != D
}

/// A value from a tiny domain: NULL or 0..=3.
fn small(v: u8) -> Value {
    match v % 5 {
        0 => Value::Null,
        n => Value::Int(i64::from(n) - 1),
    }
}

/// One generated operation of a change window.
#[derive(Debug, Clone)]
pub struct Op {
    table: u8,
    kind: u8,
    pick: u8,
    values: [u8; 3],
}

pub fn op() -> impl Strategy<Value = Op> {
    (0u8..4, 0u8..4, any::<u8>(), any::<[u8; 3]>()).prop_map(|(table, kind, pick, values)| Op {
        table,
        kind,
        pick,
        values,
    })
}

/// Before state, after state and the change window Δ = after − before.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub before: Tables,
    pub after: Tables,
    pub delta: Tables,
    pub ops: Vec<Op>,
}

fn table_id(t: u8) -> u32 {
    [A, B, C, D][usize::from(t % 4)]
}

fn make_row(table: u32, key: i64, values: [u8; 3]) -> Vec<Value> {
    let mut row = Vec::new();
    if keyed(table) {
        row.push(Value::Int(key));
        row.extend(values.iter().take(arity(table) - 1).map(|v| small(*v)));
    } else {
        row.extend(values.iter().take(arity(table)).map(|v| small(*v)));
    }
    row
}

fn rows_of(z: &ZSet) -> Vec<Vec<Value>> {
    z.iter()
        .flat_map(|(r, w)| std::iter::repeat_n(r.clone(), usize::try_from(w).unwrap_or(0)))
        .collect()
}

fn free_key(z: &ZSet, pick: u8) -> i64 {
    let used: Vec<i64> = z
        .iter()
        .filter_map(|(r, _)| match r.first() {
            Some(Value::Int(k)) => Some(*k),
            _ => None,
        })
        .collect();
    let mut k = i64::from(pick % 8);
    while used.contains(&k) {
        k += 1;
    }
    k
}

/// Applies one operation to `tables`, recording it in `delta`.
fn apply(tables: &mut Tables, delta: &mut Tables, op: &Op) {
    let id = table_id(op.table);
    let z = tables.entry(id).or_default();
    let rows = rows_of(z);
    let d = delta.entry(id).or_default();
    let existing = (!rows.is_empty()).then(|| rows[usize::from(op.pick) % rows.len()].clone());
    match (op.kind, existing) {
        (0, _) | (_, None) => {
            let row = make_row(id, free_key(z, op.pick), op.values);
            z.add(row.clone(), 1);
            d.add(row, 1);
        }
        (1, Some(old)) => {
            z.add(old.clone(), -1);
            d.add(old, -1);
        }
        (2, Some(old)) => {
            // Update of non-key columns.
            let key = match old.first() {
                Some(Value::Int(k)) => *k,
                _ => 0,
            };
            let new = make_row(id, key, op.values);
            z.add(old.clone(), -1);
            d.add(old, -1);
            z.add(new.clone(), 1);
            d.add(new, 1);
        }
        (_, Some(old)) => {
            // Update that changes the primary key (and values).
            z.add(old.clone(), -1);
            d.add(old, -1);
            let new = make_row(id, free_key(z, op.pick.wrapping_add(3)), op.values);
            z.add(new.clone(), 1);
            d.add(new, 1);
        }
    }
}

/// A random database (built by inserts) and a random change window over it.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(op(), 0..10),
        prop::collection::vec(op(), 0..6),
    )
        .prop_map(|(init, window)| {
            let mut before = Tables::new();
            let mut scratch = Tables::new();
            for o in &init {
                let mut insert_or_delete = o.clone();
                insert_or_delete.kind = if o.kind == 1 { 1 } else { 0 };
                apply(&mut before, &mut scratch, &insert_or_delete);
            }
            for id in [A, B, C, D] {
                before.entry(id).or_default();
            }
            let mut after = before.clone();
            let mut delta = Tables::new();
            for o in &window {
                apply(&mut after, &mut delta, o);
            }
            for id in [A, B, C, D] {
                delta.entry(id).or_default();
            }
            Scenario {
                before,
                after,
                delta,
                ops: window,
            }
        })
}

/// Proptest cases per property: 1,000 unless PROPTEST_CASES says otherwise.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Proptest configuration; failing seeds go to `engine/proptest-regressions/<file>` (cargo
/// runs integration tests from the package directory).
pub fn config(file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(file),
        )),
        ..ProptestConfig::default()
    }
}
