//! Named claims for the change-window edge cases docs/CORRECTNESS.md §2–§4 call out, each checked as
//! "incremental maintenance equals FULL refresh" on a hand-built scenario.
#![allow(clippy::unwrap_used)]

#[path = "support/db.rs"]
mod db;

use engine::{maintain, plan, Tables, Value, ZSet};

fn row(vals: &[Option<i64>]) -> Vec<Value> {
    vals.iter()
        .map(|v| v.map_or(Value::Null, Value::Int))
        .collect()
}

/// Builds before/after/delta from `before` rows and (table, row, weight) changes.
fn scenario(
    before: &[(u32, &[Option<i64>])],
    changes: &[(u32, &[Option<i64>], i64)],
) -> (Tables, Tables, Tables) {
    let mut b = Tables::new();
    let mut d = Tables::new();
    for id in [db::A, db::B, db::C, db::D] {
        b.insert(id, ZSet::new());
        d.insert(id, ZSet::new());
    }
    for (t, r) in before {
        b.get_mut(t).unwrap().add(row(r), 1);
    }
    for (t, r, w) in changes {
        d.get_mut(t).unwrap().add(row(r), *w);
    }
    let mut a = b.clone();
    for (t, z) in &d {
        *a.get_mut(t).unwrap() = a[t].plus(z);
        assert!(a[t].is_positive(), "scenario deletes a missing row");
    }
    (b, a, d)
}

fn assert_incremental_equals_full(sql: &str, s: &(Tables, Tables, Tables)) {
    let p = plan(sql, &db::catalog()).unwrap();
    let before = maintain::full(&p, &s.0).unwrap();
    let delta = maintain::delta(&p, &before, &s.1, &s.2).unwrap();
    assert_eq!(
        maintain::apply(&p, &before, &delta).unwrap(),
        maintain::full(&p, &s.1).unwrap(),
        "{sql}"
    );
}

const JOIN: &str = "SELECT a.k, b.k AS bk, a.x, b.y FROM a JOIN b ON a.g = b.g";
const JOIN_AGG: &str =
    "SELECT a.g, count(*) AS n, sum(b.y) AS s FROM a JOIN b ON a.g = b.g GROUP BY a.g";

#[test]
fn join_delta_matches_full_after_simultaneous_delete_on_both_sides() {
    let s = scenario(
        &[
            (db::A, &[Some(1), Some(5), Some(1)]),
            (db::B, &[Some(1), Some(7), Some(1)]),
        ],
        &[
            (db::A, &[Some(1), Some(5), Some(1)], -1),
            (db::B, &[Some(1), Some(7), Some(1)], -1),
        ],
    );
    assert_incremental_equals_full(JOIN, &s);
    assert_incremental_equals_full(JOIN_AGG, &s);
}

#[test]
fn insert_then_delete_of_one_row_in_one_window_changes_nothing() {
    // The buffer holds +r and −r; consolidated, the window is empty.
    let s = scenario(&[(db::B, &[Some(1), Some(7), Some(1)])], &[]);
    assert_incremental_equals_full(JOIN, &s);
    assert_incremental_equals_full(JOIN_AGG, &s);
}

#[test]
fn update_changing_join_key_and_primary_key_moves_the_row() {
    let s = scenario(
        &[
            (db::A, &[Some(1), Some(5), Some(1)]),
            (db::B, &[Some(1), Some(7), Some(1)]),
            (db::B, &[Some(2), Some(8), Some(2)]),
        ],
        &[
            (db::A, &[Some(1), Some(5), Some(1)], -1),
            (db::A, &[Some(9), Some(5), Some(2)], 1),
        ],
    );
    assert_incremental_equals_full(JOIN, &s);
    assert_incremental_equals_full(JOIN_AGG, &s);
    assert_incremental_equals_full("SELECT a.k, a.x, b.y FROM a LEFT JOIN b ON a.g = b.g", &s);
}

#[test]
fn null_join_keys_never_match() {
    let s = scenario(
        &[(db::A, &[Some(1), Some(5), None])],
        &[(db::B, &[Some(1), Some(7), None], 1)],
    );
    let p = plan(JOIN, &db::catalog()).unwrap();
    assert!(maintain::full(&p, &s.1).unwrap().is_empty());
    assert_incremental_equals_full(JOIN, &s);
    assert_incremental_equals_full("SELECT a.k, b.k AS bk FROM a FULL JOIN b ON a.g = b.g", &s);
}

#[test]
fn not_in_with_a_null_in_the_subquery_is_never_true() {
    let sql = "SELECT k FROM a WHERE x NOT IN (SELECT y FROM b)";
    let s = scenario(
        &[
            (db::A, &[Some(1), Some(5), Some(1)]),
            (db::B, &[Some(1), Some(7), Some(1)]),
        ],
        &[(db::B, &[Some(2), None, Some(1)], 1)],
    );
    let p = plan(sql, &db::catalog()).unwrap();
    assert_eq!(maintain::full(&p, &s.0).unwrap().len(), 1);
    assert!(maintain::full(&p, &s.1).unwrap().is_empty());
    assert_incremental_equals_full(sql, &s);
}

#[test]
fn emptied_group_disappears_and_scalar_aggregate_keeps_its_row() {
    let s = scenario(
        &[(db::A, &[Some(1), Some(5), Some(3)])],
        &[(db::A, &[Some(1), Some(5), Some(3)], -1)],
    );
    let grouped = "SELECT g, count(*) AS n, sum(x) AS s FROM a GROUP BY g";
    let p = plan(grouped, &db::catalog()).unwrap();
    assert!(maintain::full(&p, &s.1).unwrap().is_empty());
    assert_incremental_equals_full(grouped, &s);
    let scalar = "SELECT count(*) AS n, sum(x) AS s, min(x) AS m FROM a";
    assert_incremental_equals_full(scalar, &s);
    assert_incremental_equals_full("SELECT count(*) AS n, sum(x) AS s FROM a", &s);
    let p = plan(scalar, &db::catalog()).unwrap();
    let full = maintain::visible(&p, &maintain::full(&p, &s.1).unwrap());
    let rows: Vec<_> = full.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(rows, vec![vec![Value::Int(0), Value::Null, Value::Null]]);
}

/// A FULL JOIN where nothing matches yields a left-padded and a right-padded row. With two
/// scalar aggregates (no key on either side) or two GROUP BYs of nullable columns (their NULL
/// groups pad to the same pair of keys), the pair of side keys is no identity: the plan must
/// not be keyed on it (found by the operator_delta fuzz target, which then kept one row).
#[test]
fn full_join_without_a_never_null_key_column_keeps_both_padded_rows() {
    let s = scenario(
        &[(db::A, &[Some(1), Some(1), Some(1)])],
        &[
            (db::A, &[Some(2), Some(0), None], 1),
            (db::A, &[Some(3), Some(5), None], 1),
        ],
    );
    let scalar = "SELECT l.m AS lo, r.m AS hi FROM (SELECT min(x) AS m FROM a) AS l \
                  FULL JOIN (SELECT max(x) AS m FROM a) AS r ON l.m = r.m";
    let p = plan(scalar, &db::catalog()).unwrap();
    assert!(!matches!(
        p.identity,
        engine::Identity::Single | engine::Identity::Key { .. }
    ));
    assert_eq!(
        maintain::visible(&p, &maintain::full(&p, &s.1).unwrap()).len(),
        2
    );
    assert_incremental_equals_full(scalar, &s);
    // The NULL group of each side: (NULL, 1, NULL, NULL) and (NULL, NULL, NULL, 1).
    let grouped = "SELECT l.g, l.n, r.g AS rg, r.n AS rn \
                   FROM (SELECT g, count(*) AS n FROM a GROUP BY g) AS l \
                   FULL JOIN (SELECT g, count(*) AS n FROM b GROUP BY g) AS r ON l.g = r.g";
    let s = scenario(
        &[(db::A, &[Some(1), Some(1), Some(1)])],
        &[
            (db::A, &[Some(2), Some(0), None], 1),
            (db::B, &[Some(1), Some(0), None], 1),
        ],
    );
    let p = plan(grouped, &db::catalog()).unwrap();
    assert!(!matches!(p.identity, engine::Identity::Key { .. }));
    assert_incremental_equals_full(grouped, &s);
    // Primary keys are never NULL: padded rows differ there, the join stays keyed.
    let keyed = "SELECT a.k, b.k AS bk FROM a FULL JOIN b ON a.g = b.g";
    let p = plan(keyed, &db::catalog()).unwrap();
    assert!(matches!(p.identity, engine::Identity::Key { .. }));
}

#[test]
fn untyped_literal_output_column_is_text_and_maintained() {
    // PostgreSQL types `'a' AS tag` text in a select list; the plan does too (its storage
    // column is text, which has equality), so the query stays differentiable.
    for sql in [
        "SELECT k, 'a' AS tag FROM a",
        "SELECT DISTINCT g, 'x' AS tag FROM a",
    ] {
        let p = plan(sql, &db::catalog()).unwrap();
        assert!(p.is_differential(), "{sql}: {:?}", p.differentiability);
        let tag = p
            .storage_columns()
            .into_iter()
            .find(|c| c.name == "tag")
            .unwrap();
        assert_eq!(tag.type_name, "text", "{sql}");
        let s = scenario(
            &[(db::A, &[Some(1), Some(5), Some(1)])],
            &[(db::A, &[Some(2), Some(6), Some(2)], 1)],
        );
        assert_incremental_equals_full(sql, &s);
    }
}
