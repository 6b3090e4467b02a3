//! Fuzzes the Z-set algebra every delta rule is stated in: consolidation is a group
//! homomorphism from bags of weighted rows (concatenation) to Z-sets (plus), negation is its
//! inverse, and no stored row ever has weight zero.
#![no_main]

use arbitrary::Arbitrary;
use engine::{consolidate, Row, Value, ZSet};
use libfuzzer_sys::fuzz_target;

/// A small-domain cell, so that equal rows are frequent and weights cancel.
#[derive(Debug, Arbitrary)]
enum Cell {
    Null,
    Int(u8),
    Text(bool),
}

#[derive(Debug, Arbitrary)]
struct Input {
    left: Vec<(Vec<Cell>, i8)>,
    right: Vec<(Vec<Cell>, i8)>,
}

fn row(cells: &[Cell]) -> Row {
    cells
        .iter()
        .take(3)
        .map(|c| match c {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::Int(i64::from(*i % 4)),
            Cell::Text(b) => Value::text(if *b { "a" } else { "a " }),
        })
        .collect()
}

fn bag(items: &[(Vec<Cell>, i8)]) -> Vec<(Row, i64)> {
    items
        .iter()
        .take(64)
        .map(|(c, w)| (row(c), i64::from(*w)))
        .collect()
}

fuzz_target!(|input: Input| {
    let (l, r) = (bag(&input.left), bag(&input.right));
    let a = consolidate(l.clone());
    let b = consolidate(r.clone());
    let both = consolidate(l.into_iter().chain(r));
    assert_eq!(
        both,
        a.plus(&b),
        "consolidate(l ++ r) == consolidate(l) + consolidate(r)"
    );
    assert_eq!(a.plus(&b), b.plus(&a), "plus commutes");
    assert!(a.minus(&a).is_empty(), "a - a == 0");
    assert_eq!(a.negate().negate(), a, "negation is an involution");
    assert!(
        both.iter().all(|(_, w)| w != 0),
        "no zero weights are stored"
    );
    assert_eq!(a.plus(&ZSet::new()), a, "0 is the identity");
});
