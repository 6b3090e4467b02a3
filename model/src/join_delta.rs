//! Join delta rule over Z-sets, for 2- and 3-way inner equi-joins, with changes on every side in
//! one refresh window (the EC-01 shape: an insert-then-delete on one side colliding with a delete
//! on the other).
//!
//! Checks INV-4: the rule `Δ(A⋈B) = ΔA⋈B' + A'⋈ΔB − ΔA⋈ΔB` over the post-change states A', B'
//! (applied recursively for three relations: `(A⋈B)⋈C`) equals recompute-after minus
//! recompute-before. [`DeltaRule::NoCorrection`] drops the `ΔA⋈ΔB` term and the checker finds
//! the window where it double-counts.
//!
//! The states are the pre-window contents of every relation (all subsets of the row universe,
//! the initial states) and every sequence of inserts and deletes up to `changes_max` long; the
//! spec is an exhaustive enumeration, written as a stateright model so that it reads, runs and
//! reports like the others.

use crate::zset::ZSet;
use stateright::{Model, Property};

/// A join output row: the joined base rows, left to right.
pub type Tuple = Vec<u8>;

/// Which delta rule the refresh applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeltaRule {
    /// pg_trickle's rule: `ΔA⋈B' + A'⋈ΔB − ΔA⋈ΔB` over post-change states.
    Bilinear,
    /// The naive rule `ΔA⋈B' + A'⋈ΔB` over post-change states: counts `ΔA⋈ΔB` twice.
    NoCorrection,
}

/// Sizes and rule variant of the join delta spec.
#[derive(Clone, Debug)]
pub struct JoinDeltaModel {
    /// Joined relations: 2 or 3.
    pub relations: usize,
    /// Rows each relation may hold (`0..rows`, a primary key); at most 8.
    pub rows: u8,
    /// Join key of row `r` is `r % keys`.
    pub keys: u8,
    /// Inserts and deletes in the window, over all relations.
    pub changes_max: u8,
    /// The rule under test.
    pub rule: DeltaRule,
}

/// Pre-window contents, the window's changes so far, and what those changes were.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JoinDeltaState {
    /// Relation contents before the window (bit per row).
    pub before: Vec<u8>,
    /// Relation contents now, after the window's changes (bit per row).
    pub after: Vec<u8>,
    /// The window's changes per relation, unconsolidated in the buffer, a Z-set here.
    pub delta: Vec<ZSet<u8>>,
    /// Changes made in the window.
    pub changes: u8,
    /// Rows inserted in the window, per relation.
    pub inserted: Vec<u8>,
    /// Rows deleted in the window after being inserted in it, per relation.
    pub inserted_then_deleted: Vec<u8>,
    /// Rows deleted in the window, per relation.
    pub deleted: Vec<u8>,
}

/// A change in the window.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JoinDeltaAction {
    /// Insert `row` into relation `rel` (absent now).
    Insert {
        /// Relation index.
        rel: usize,
        /// Row.
        row: u8,
    },
    /// Delete `row` from relation `rel` (present now).
    Delete {
        /// Relation index.
        rel: usize,
        /// Row.
        row: u8,
    },
}

fn has(set: u8, row: u8) -> bool {
    set & (1 << row) != 0
}

impl JoinDeltaModel {
    fn key(&self, t: &Tuple) -> u8 {
        t[0] % self.keys
    }

    /// A relation (bit set of rows) as a Z-set of 1-tuples.
    fn relation(&self, set: u8) -> ZSet<Tuple> {
        (0..self.rows)
            .filter(|r| has(set, *r))
            .map(|r| (vec![r], 1))
            .collect()
    }

    fn lift(&self, z: &ZSet<u8>) -> ZSet<Tuple> {
        z.iter().map(|(r, w)| (vec![*r], w)).collect()
    }

    fn join(&self, a: &ZSet<Tuple>, b: &ZSet<Tuple>) -> ZSet<Tuple> {
        a.join(
            b,
            |t| self.key(t),
            |t| self.key(t),
            |x, y| x.iter().chain(y).copied().collect(),
        )
    }

    /// The left-deep join of all relations: `(R0 ⋈ R1) ⋈ R2`.
    fn recompute(&self, sets: &[u8]) -> ZSet<Tuple> {
        let mut acc = self.relation(sets[0]);
        for set in &sets[1..] {
            acc = self.join(&acc, &self.relation(*set));
        }
        acc
    }

    /// Δ(L⋈R) from the post-change states `l`, `r` and the deltas `dl`, `dr`.
    fn rule(
        &self,
        l: &ZSet<Tuple>,
        dl: &ZSet<Tuple>,
        r: &ZSet<Tuple>,
        dr: &ZSet<Tuple>,
    ) -> ZSet<Tuple> {
        let naive = self.join(dl, r).plus(&self.join(l, dr));
        match self.rule {
            DeltaRule::Bilinear => naive.minus(&self.join(dl, dr)),
            DeltaRule::NoCorrection => naive,
        }
    }

    /// The delta the refresh computes: the rule applied left-deep, each level using the
    /// post-change state and delta of the level below.
    pub fn incremental(&self, s: &JoinDeltaState) -> ZSet<Tuple> {
        let mut post = self.relation(s.after[0]);
        let mut delta = self.lift(&s.delta[0]);
        for rel in 1..self.relations {
            let r = self.relation(s.after[rel]);
            let dr = self.lift(&s.delta[rel]);
            delta = self.rule(&post, &delta, &r, &dr);
            post = self.join(&post, &r);
        }
        delta
    }

    /// Recompute-after minus recompute-before.
    pub fn expected(&self, s: &JoinDeltaState) -> ZSet<Tuple> {
        self.recompute(&s.after).minus(&self.recompute(&s.before))
    }

    /// The EC-01 shape: a row inserted and deleted again in relation `i` while relation `j`
    /// deleted a row with the same join key.
    fn ec01(&self, s: &JoinDeltaState) -> bool {
        let same_key = |a: u8, b: u8| a % self.keys == b % self.keys;
        (0..self.relations).any(|i| {
            (0..self.relations).filter(|j| *j != i).any(|j| {
                (0..self.rows).any(|a| {
                    has(s.inserted_then_deleted[i], a)
                        && (0..self.rows).any(|b| has(s.deleted[j], b) && same_key(a, b))
                })
            })
        })
    }
}

impl Model for JoinDeltaModel {
    type State = JoinDeltaState;
    type Action = JoinDeltaAction;

    fn init_states(&self) -> Vec<Self::State> {
        assert!((2..=3).contains(&self.relations), "2- or 3-way joins");
        assert!(self.rows <= 8 && self.keys > 0);
        let subsets = 1usize << self.rows;
        let mut states = Vec::new();
        for combo in 0..subsets.pow(self.relations as u32) {
            let mut before = Vec::new();
            let mut rest = combo;
            for _ in 0..self.relations {
                before.push((rest % subsets) as u8);
                rest /= subsets;
            }
            states.push(JoinDeltaState {
                after: before.clone(),
                before,
                delta: vec![ZSet::new(); self.relations],
                changes: 0,
                inserted: vec![0; self.relations],
                inserted_then_deleted: vec![0; self.relations],
                deleted: vec![0; self.relations],
            });
        }
        states
    }

    fn actions(&self, s: &Self::State, actions: &mut Vec<Self::Action>) {
        if s.changes >= self.changes_max {
            return;
        }
        for rel in 0..self.relations {
            for row in 0..self.rows {
                if has(s.after[rel], row) {
                    actions.push(JoinDeltaAction::Delete { rel, row });
                } else {
                    actions.push(JoinDeltaAction::Insert { rel, row });
                }
            }
        }
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let mut s = last.clone();
        s.changes += 1;
        match action {
            JoinDeltaAction::Insert { rel, row } => {
                s.after[rel] |= 1 << row;
                s.delta[rel].add(row, 1);
                s.inserted[rel] |= 1 << row;
            }
            JoinDeltaAction::Delete { rel, row } => {
                s.after[rel] &= !(1 << row);
                s.delta[rel].add(row, -1);
                s.deleted[rel] |= 1 << row;
                if has(s.inserted[rel], row) {
                    s.inserted_then_deleted[rel] |= 1 << row;
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(INV_4, |m: &JoinDeltaModel, s: &JoinDeltaState| {
                m.incremental(s) == m.expected(s)
            }),
            Property::sometimes(EC_01, |m: &JoinDeltaModel, s: &JoinDeltaState| m.ec01(s)),
            Property::sometimes(EVERY_SIDE, |_, s: &JoinDeltaState| {
                s.delta.iter().all(|d| !d.is_empty())
            }),
        ]
    }
}

/// INV-4 property name.
pub const INV_4: &str = "INV-4 join delta rule equals recompute-after minus recompute-before";
/// Reachability: the EC-01 window.
pub const EC_01: &str = "EC-01 insert-then-delete on one side meets a delete on another";
/// Reachability: every relation changes in the same window.
pub const EVERY_SIDE: &str = "every relation has a non-empty delta in one window";
