//! Property: for every operator and random compositions of them, the delta plan evaluated
//! over the post-change database equals recompute-after minus recompute-before.

#[path = "support/db.rs"]
mod db;
#[path = "support/trees.rs"]
mod trees;

use engine::operator::{EvalContext, Operator};
use engine::ZSet;
use proptest::prelude::*;

fn check(query: &Operator, s: &db::Scenario) -> Result<(), TestCaseError> {
    let empty = engine::Tables::new();
    let eval_at = |tables| {
        query.eval(EvalContext {
            current: tables,
            deltas: &empty,
        })
    };
    let before = eval_at(&s.before).map_err(|e| TestCaseError::fail(format!("before: {e}")))?;
    let after = eval_at(&s.after).map_err(|e| TestCaseError::fail(format!("after: {e}")))?;
    let delta_plan = query
        .delta()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let delta = delta_plan
        .eval(EvalContext {
            current: &s.after,
            deltas: &s.delta,
        })
        .map_err(|e| TestCaseError::fail(format!("delta: {e}")))?;
    let expected: ZSet = after.minus(&before);
    prop_assert_eq!(delta, expected, "query {:#?}", query);
    Ok(())
}

proptest! {
    #![proptest_config(db::config("proptest-regressions/operator_delta.txt"))]

    #[test]
    fn single_operator_delta_equals_recompute_difference(r in trees::recipe(1), s in db::scenario()) {
        check(&trees::build(&r), &s)?;
    }

    #[test]
    fn composed_operators_delta_equals_recompute_difference(r in trees::recipe(3), s in db::scenario()) {
        check(&trees::build(&r), &s)?;
    }
}
