//! Z-sets: finite maps from rows to `i64` weights, the algebra every spec computes in.
//!
//! Insert is weight +1, delete is −1, an update is −old +new. A `ZSet` is always consolidated:
//! weights of equal rows are summed and rows whose weight reaches zero are dropped, so two
//! Z-sets are equal exactly when they denote the same multiset change.

use std::collections::BTreeMap;

/// A consolidated Z-set over rows of type `R`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZSet<R: Ord> {
    weights: BTreeMap<R, i64>,
}

impl<R: Ord> Default for ZSet<R> {
    fn default() -> Self {
        Self {
            weights: BTreeMap::new(),
        }
    }
}

impl<R: Ord + Clone> ZSet<R> {
    /// The empty Z-set.
    pub fn new() -> Self {
        Self {
            weights: BTreeMap::new(),
        }
    }

    /// Adds `weight` to `row`, dropping the row when its weight becomes zero.
    pub fn add(&mut self, row: R, weight: i64) {
        if weight == 0 {
            return;
        }
        let w = self.weights.entry(row.clone()).or_insert(0);
        *w += weight;
        if *w == 0 {
            self.weights.remove(&row);
        }
    }

    /// The weight of `row` (zero when absent).
    pub fn weight(&self, row: &R) -> i64 {
        self.weights.get(row).copied().unwrap_or(0)
    }

    /// Whether every weight is zero.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The rows with non-zero weight, in row order.
    pub fn iter(&self) -> impl Iterator<Item = (&R, i64)> {
        self.weights.iter().map(|(r, w)| (r, *w))
    }

    /// `self + other`.
    pub fn plus(&self, other: &Self) -> Self {
        let mut sum = self.clone();
        for (r, w) in other.iter() {
            sum.add(r.clone(), w);
        }
        sum
    }

    /// `self − other`.
    pub fn minus(&self, other: &Self) -> Self {
        let mut diff = self.clone();
        for (r, w) in other.iter() {
            diff.add(r.clone(), -w);
        }
        diff
    }

    /// Keeps the rows satisfying `keep` (a linear operator: filter).
    pub fn filter(&self, keep: impl Fn(&R) -> bool) -> Self {
        let mut out = Self::new();
        for (r, w) in self.iter() {
            if keep(r) {
                out.add(r.clone(), w);
            }
        }
        out
    }

    /// Equi-join on `key`: each pair of rows with equal keys yields `pair(a, b)` with weight
    /// `weight(a) · weight(b)` (join is bilinear: weights multiply).
    pub fn join<S, K, O>(
        &self,
        other: &ZSet<S>,
        key_self: impl Fn(&R) -> K,
        key_other: impl Fn(&S) -> K,
        pair: impl Fn(&R, &S) -> O,
    ) -> ZSet<O>
    where
        S: Ord + Clone,
        K: Eq,
        O: Ord + Clone,
    {
        let mut out = ZSet::new();
        for (a, wa) in self.iter() {
            for (b, wb) in other.iter() {
                if key_self(a) == key_other(b) {
                    out.add(pair(a, b), wa * wb);
                }
            }
        }
        out
    }
}

impl<R: Ord + Clone> FromIterator<(R, i64)> for ZSet<R> {
    fn from_iter<I: IntoIterator<Item = (R, i64)>>(iter: I) -> Self {
        let mut z = Self::new();
        for (r, w) in iter {
            z.add(r, w);
        }
        z
    }
}

#[cfg(test)]
mod tests {
    use super::ZSet;

    #[test]
    fn insert_then_delete_consolidates_to_empty() {
        let mut z = ZSet::new();
        z.add(7u8, 1);
        z.add(7u8, -1);
        assert!(z.is_empty());
        assert_eq!(z, ZSet::new());
    }

    #[test]
    fn join_multiplies_weights() {
        let a: ZSet<u8> = [(1, 2), (2, -1)].into_iter().collect();
        let b: ZSet<u8> = [(1, 3), (2, 5)].into_iter().collect();
        let j = a.join(&b, |x| *x, |y| *y, |x, y| (*x, *y));
        assert_eq!(j.weight(&(1, 1)), 6);
        assert_eq!(j.weight(&(2, 2)), -5);
    }
}
