//! Fuzzes the delta rules. Two structured inputs share the same random database and change
//! window (`scenario`): (a, first byte even) a random operator tree: its delta plan evaluated
//! over the post-change state and the window equals eval(after) − eval(before);
//! (b, first byte odd) a generated SELECT planned by the engine: maintaining its storage with
//! the in-memory delta and apply model gives exactly the FULL refresh, which holds the
//! query's rows (apply(full(before), delta) = full(after), visible(full(after)) = eval).
//! Evaluator errors (an expression the evaluator does not model) skip the input. Numbers
//! compare by value: the model sums numeric literals as floats, so an emptied sum aux column
//! is `0.0` incrementally and `0` after a FULL refresh — equal as PostgreSQL numerics.
#![no_main]

use arbitrary::Unstructured;
use engine::operator::{EvalContext, Operator};
use engine::{maintain, plan, Tables, Value, ZSet};
use libfuzzer_sys::fuzz_target;
use pg_trickle_fuzz::scenario::{scenario, Scenario};
use pg_trickle_fuzz::{schema, sqlgen, treegen};

fn int_tables() -> Vec<&'static schema::TableSpec> {
    [schema::A, schema::B, schema::C, schema::D]
        .iter()
        .filter_map(|id| schema::TABLES.iter().find(|t| t.id == *id))
        .collect()
}

fn check_tree(tree: &Operator, s: &Scenario) {
    let empty = Tables::new();
    let at = |tables| {
        tree.eval(EvalContext {
            current: tables,
            deltas: &empty,
        })
    };
    let (Ok(before), Ok(after)) = (at(&s.before), at(&s.after)) else {
        return;
    };
    let delta_plan = tree
        .delta()
        .unwrap_or_else(|e| panic!("no delta plan for {tree:#?}: {e}"));
    let Ok(delta) = delta_plan.eval(EvalContext {
        current: &s.after,
        deltas: &s.delta,
    }) else {
        return;
    };
    assert_eq!(
        delta,
        after.minus(&before),
        "delta != after - before for {tree:#?}\nscenario {s:#?}"
    );
}

/// `z` with integral floats as integers, so that numbers compare by value.
fn by_value(z: &ZSet) -> ZSet {
    z.map_rows(|row| {
        row.iter()
            .map(|v| match v {
                Value::Float(f) if f.get().fract() == 0.0 && f.get().abs() < 1e15 => {
                    Value::Int(f.get() as i64)
                }
                other => other.clone(),
            })
            .collect()
    })
}

fn check_query(sql: &str, s: &Scenario) {
    let Ok(p) = plan(sql, &schema::catalog()) else {
        return;
    };
    let Some(tree) = p.tree.as_ref().filter(|_| p.is_differential()) else {
        return;
    };
    let (Ok(before), Ok(after)) = (maintain::full(&p, &s.before), maintain::full(&p, &s.after))
    else {
        return;
    };
    let empty = Tables::new();
    if let Ok(expected) = tree.eval(EvalContext {
        current: &s.after,
        deltas: &empty,
    }) {
        assert_eq!(
            by_value(&maintain::visible(&p, &after)),
            by_value(&expected),
            "FULL refresh of {sql}\n{s:#?}"
        );
    }
    let Ok(delta) = maintain::delta(&p, &before, &s.after, &s.delta) else {
        return;
    };
    let applied = maintain::apply(&p, &before, &delta)
        .unwrap_or_else(|e| panic!("apply of {sql}: {e}\n{s:#?}"));
    assert_eq!(
        by_value(&applied),
        by_value(&after),
        "incremental maintenance of {sql}\n{s:#?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    if mode.is_multiple_of(2) {
        let Ok(tree) = treegen::tree(&mut u, int_tables()) else {
            return;
        };
        let Ok(s) = scenario(&mut u, &int_tables()) else {
            return;
        };
        check_tree(&tree, &s);
    } else {
        let Ok(sql) = sqlgen::query(&mut u, schema::evaluable()) else {
            return;
        };
        let Ok(s) = scenario(&mut u, &schema::evaluable()) else {
            return;
        };
        check_query(&sql, &s);
    }
});
