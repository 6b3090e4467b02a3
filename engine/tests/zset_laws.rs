//! Properties of the Z-set algebra: an abelian group under `plus`, consolidation drops zeros
//! and is independent of input order.

#[path = "support/db.rs"]
mod db;

use engine::{consolidate, Value, Weight, ZSet};
use proptest::prelude::*;

fn zset() -> impl Strategy<Value = ZSet> {
    prop::collection::vec((0i64..4, prop::option::of(0i64..3), -3i64..4), 0..8).prop_map(|rows| {
        consolidate(
            rows.into_iter()
                .map(|(a, b, w)| (vec![Value::Int(a), b.map_or(Value::Null, Value::Int)], w)),
        )
    })
}

proptest! {
    #![proptest_config(db::config("proptest-regressions/zset_laws.txt"))]

    #[test]
    fn zset_addition_is_associative_and_commutative(a in zset(), b in zset(), c in zset()) {
        prop_assert_eq!(a.plus(&b), b.plus(&a));
        prop_assert_eq!(a.plus(&b).plus(&c), a.plus(&b.plus(&c)));
    }

    #[test]
    fn zset_has_identity_and_inverses(a in zset()) {
        prop_assert_eq!(a.plus(&ZSet::new()), a.clone());
        prop_assert!(a.plus(&a.negate()).is_empty());
        prop_assert_eq!(a.negate().negate(), a.clone());
        prop_assert_eq!(a.minus(&a), ZSet::new());
    }

    #[test]
    fn consolidation_never_keeps_zero_weights_and_ignores_order(
        rows in prop::collection::vec((0i64..3, -2i64..3), 0..12)
    ) {
        let as_rows = |v: &[(i64, Weight)]| v.iter().map(|(r, w)| (vec![Value::Int(*r)], *w)).collect::<Vec<_>>();
        let z = consolidate(as_rows(&rows));
        prop_assert!(z.iter().all(|(_, w)| w != 0));
        let mut reversed = rows.clone();
        reversed.reverse();
        prop_assert_eq!(consolidate(as_rows(&reversed)), z.clone());
        for r in 0..3 {
            let expected: Weight = rows.iter().filter(|(x, _)| *x == r).map(|(_, w)| w).sum();
            prop_assert_eq!(z.weight(&vec![Value::Int(r)]), expected);
        }
    }

    #[test]
    fn null_rows_consolidate_with_null_rows(w1 in -3i64..4, w2 in -3i64..4) {
        // IS NOT DISTINCT FROM semantics: (NULL) and (NULL) are the same row in a Z-set.
        let z = consolidate(vec![(vec![Value::Null], w1), (vec![Value::Null], w2)]);
        prop_assert_eq!(z.weight(&vec![Value::Null]), w1 + w2);
    }
}
