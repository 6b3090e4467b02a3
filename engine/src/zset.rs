//! Z-sets: relations as maps from rows to integer weights, the algebra every delta rule is
//! stated in (docs/CORRECTNESS.md §2). Invariant: a `ZSet` is always consolidated — no row is stored with
//! weight 0 — so two Z-sets are equal exactly when they denote the same relation change.

use std::collections::btree_map::{self, BTreeMap};

use crate::value::Row;

/// The multiplicity of a row: positive for presence/insertion, negative for deletion.
pub type Weight = i64;

/// A consolidated Z-set of rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZSet {
    rows: BTreeMap<Row, Weight>,
}

/// Sums the weights of equal rows and drops rows whose weight sums to zero.
pub fn consolidate<I: IntoIterator<Item = (Row, Weight)>>(rows: I) -> ZSet {
    let mut z = ZSet::new();
    for (row, weight) in rows {
        z.add(row, weight);
    }
    z
}

impl ZSet {
    pub fn new() -> Self {
        ZSet::default()
    }

    /// A bag (every listed row once, duplicates add up).
    pub fn from_rows<I: IntoIterator<Item = Row>>(rows: I) -> Self {
        consolidate(rows.into_iter().map(|r| (r, 1)))
    }

    /// Adds `weight` to `row`, removing the entry when it reaches zero.
    pub fn add(&mut self, row: Row, weight: Weight) {
        if weight == 0 {
            return;
        }
        match self.rows.entry(row) {
            btree_map::Entry::Vacant(v) => {
                v.insert(weight);
            }
            btree_map::Entry::Occupied(mut o) => {
                let sum = o.get().saturating_add(weight);
                if sum == 0 {
                    o.remove();
                } else {
                    *o.get_mut() = sum;
                }
            }
        }
    }

    pub fn weight(&self, row: &Row) -> Weight {
        self.rows.get(row).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Row, Weight)> {
        self.rows.iter().map(|(r, w)| (r, *w))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether every weight is positive, i.e. the Z-set is a bag (a table state).
    pub fn is_positive(&self) -> bool {
        self.rows.values().all(|w| *w > 0)
    }

    /// `self + other`.
    pub fn plus(&self, other: &ZSet) -> ZSet {
        let mut out = self.clone();
        for (row, w) in other.iter() {
            out.add(row.clone(), w);
        }
        out
    }

    /// `-self`.
    pub fn negate(&self) -> ZSet {
        ZSet {
            rows: self.rows.iter().map(|(r, w)| (r.clone(), -w)).collect(),
        }
    }

    /// `self - other`.
    pub fn minus(&self, other: &ZSet) -> ZSet {
        self.plus(&other.negate())
    }

    /// Applies `f` to every row, keeping weights (a linear map).
    pub fn map_rows<F: FnMut(&Row) -> Row>(&self, mut f: F) -> ZSet {
        consolidate(self.iter().map(|(r, w)| (f(r), w)))
    }
}

impl FromIterator<(Row, Weight)> for ZSet {
    fn from_iter<T: IntoIterator<Item = (Row, Weight)>>(iter: T) -> Self {
        consolidate(iter)
    }
}
