//! IMMEDIATE maintenance of `ST = A ⋈ B`: writer 0 changes A, writer 1 changes B, and each
//! maintains ST inside its own transaction from its own delta and the other side as its
//! snapshot shows it (`ΔA ⋈ B_seen`, `A_seen ⋈ ΔB`).
//!
//! Checks INV-5: committed ST always equals the join of the committed sources. Unserialised
//! writers each miss the other's uncommitted delta and `ΔA⋈ΔB` is lost. Taking an exclusive lock
//! on ST before reading the other side, and reading in a snapshot taken after the lock (READ
//! COMMITTED), restores the invariant; so does REPEATABLE READ when a writer whose transaction
//! snapshot predates the other's commit fails with 40001. Reading the stale transaction snapshot
//! after the lock without that check loses the term again.

use crate::zset::ZSet;
use stateright::{Model, Property};

/// How concurrent IMMEDIATE writers are serialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Serialisation {
    /// READ COMMITTED, no lock: each maintenance statement reads the other side in a fresh
    /// snapshot, which cannot see the other writer's uncommitted delta.
    None,
    /// READ COMMITTED, exclusive lock on ST held to commit, other side read after the lock.
    Lock,
    /// REPEATABLE READ, lock; a writer whose transaction snapshot misses a commit made since it
    /// was taken fails with 40001 and rolls back.
    LockRepeatableRead,
    /// REPEATABLE READ, lock, no 40001 check: reads the other side in the stale snapshot.
    LockStaleSnapshot,
}

impl Serialisation {
    fn locks(self) -> bool {
        self != Serialisation::None
    }

    fn repeatable_read(self) -> bool {
        matches!(
            self,
            Serialisation::LockRepeatableRead | Serialisation::LockStaleSnapshot
        )
    }
}

/// Sizes and variant of the IMMEDIATE spec.
#[derive(Clone, Debug)]
pub struct ImmediateModel {
    /// Transactions each writer runs, one after the other.
    pub txns_per_writer: u8,
    /// Rows each source may hold (`0..rows`, a primary key); at most 8.
    pub rows: u8,
    /// Join key of row `r` is `r % keys`.
    pub keys: u8,
    /// The serialisation under test.
    pub serialisation: Serialisation,
}

/// Where a writer is in its current transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Between transactions.
    Idle,
    /// Wrote its source row (uncommitted); next it locks ST (if it locks) or maintains.
    Wrote,
    /// Holds the ST lock; next it maintains.
    Locked,
    /// Added its delta to ST (uncommitted); next it commits.
    Maintained,
}

/// One writer and its open transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Writer {
    /// Position in the transaction.
    pub step: Step,
    /// Transactions finished (committed or rolled back).
    pub txns_done: u8,
    /// The uncommitted change to its own source.
    pub delta: ZSet<u8>,
    /// The uncommitted change to ST.
    pub st_delta: ZSet<(u8, u8)>,
    /// Under REPEATABLE READ: commit count at the transaction snapshot, and the other side as
    /// that snapshot sees it.
    pub snapshot: Option<(u8, u8)>,
    /// Waited on the lock while the other writer committed (for reachability).
    pub waited: bool,
}

/// Committed sources and ST, and the two writers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImmediateState {
    /// Committed contents of A and B (bit per row).
    pub sources: [u8; 2],
    /// Committed contents of ST.
    pub st: ZSet<(u8, u8)>,
    /// Writer 0 (changes A) and writer 1 (changes B).
    pub writers: [Writer; 2],
    /// Who holds the ST lock.
    pub lock: Option<u8>,
    /// Commits so far (the snapshot clock for REPEATABLE READ).
    pub commits: u8,
    /// A writer that waited on the lock committed after the holder (reachability).
    pub serialised_commit: bool,
    /// A writer failed with 40001 (reachability).
    pub serialisation_failure: bool,
}

/// A step of a writer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImmediateAction {
    /// Writer inserts (`weight` +1) or deletes (−1) `row` of its source.
    Write {
        /// 0 writes A, 1 writes B.
        writer: u8,
        /// Row.
        row: u8,
        /// +1 or −1.
        weight: i8,
    },
    /// Writer takes the ST lock.
    Lock(u8),
    /// Writer reads the other side and adds its delta to ST.
    Maintain(u8),
    /// Writer commits.
    Commit(u8),
    /// Writer rolls back.
    Abort(u8),
}

fn bits(set: u8, rows: u8) -> ZSet<u8> {
    (0..rows)
        .filter(|r| set & (1 << r) != 0)
        .map(|r| (r, 1))
        .collect()
}

impl ImmediateModel {
    /// `A ⋈ B` with output rows `(a, b)`.
    fn join(&self, a: &ZSet<u8>, b: &ZSet<u8>) -> ZSet<(u8, u8)> {
        let keys = self.keys;
        a.join(b, |x| x % keys, |y| y % keys, |x, y| (*x, *y))
    }

    /// A writer's own source as it sees it: committed plus its uncommitted change.
    fn own_view(&self, s: &ImmediateState, w: usize) -> ZSet<u8> {
        bits(s.sources[w], self.rows).plus(&s.writers[w].delta)
    }

    fn maintain(&self, s: &mut ImmediateState, w: usize) {
        let other = 1 - w;
        // The other side, in the snapshot this statement reads: under REPEATABLE READ the
        // transaction's snapshot, under READ COMMITTED a fresh one (after the lock, if locked).
        let seen = match s.writers[w].snapshot {
            Some((_, set)) => bits(set, self.rows),
            None => bits(s.sources[other], self.rows),
        };
        let delta = &s.writers[w].delta;
        let st_delta = if w == 0 {
            self.join(delta, &seen)
        } else {
            self.join(&seen, delta)
        };
        let writer = &mut s.writers[w];
        writer.st_delta = writer.st_delta.plus(&st_delta);
        writer.step = Step::Maintained;
    }

    fn commit(&self, s: &mut ImmediateState, w: usize) {
        let mut set = s.sources[w];
        for (r, weight) in s.writers[w].delta.iter() {
            if weight > 0 {
                set |= 1 << r;
            } else {
                set &= !(1 << r);
            }
        }
        s.sources[w] = set;
        s.st = s.st.plus(&s.writers[w].st_delta);
        s.commits += 1;
        let other = 1 - w;
        // The other writer is blocked on the lock this commit releases.
        if s.lock == Some(w as u8) && s.writers[other].step == Step::Wrote {
            s.writers[other].waited = true;
        }
        if s.writers[w].waited {
            s.serialised_commit = true;
        }
        self.end(s, w);
    }

    fn end(&self, s: &mut ImmediateState, w: usize) {
        if s.lock == Some(w as u8) {
            s.lock = None;
        }
        let writer = &mut s.writers[w];
        writer.step = Step::Idle;
        writer.txns_done += 1;
        writer.delta = ZSet::new();
        writer.st_delta = ZSet::new();
        writer.snapshot = None;
        writer.waited = false;
    }
}

impl Model for ImmediateModel {
    type State = ImmediateState;
    type Action = ImmediateAction;

    fn init_states(&self) -> Vec<Self::State> {
        assert!(self.rows <= 8 && self.keys > 0);
        let writer = Writer {
            step: Step::Idle,
            txns_done: 0,
            delta: ZSet::new(),
            st_delta: ZSet::new(),
            snapshot: None,
            waited: false,
        };
        vec![ImmediateState {
            sources: [0, 0],
            st: ZSet::new(),
            writers: [writer.clone(), writer],
            lock: None,
            commits: 0,
            serialised_commit: false,
            serialisation_failure: false,
        }]
    }

    fn actions(&self, s: &Self::State, actions: &mut Vec<Self::Action>) {
        for (w, writer) in (0u8..).zip(&s.writers) {
            match writer.step {
                Step::Idle if writer.txns_done < self.txns_per_writer => {
                    let view = self.own_view(s, usize::from(w));
                    for row in 0..self.rows {
                        let weight = if view.weight(&row) > 0 { -1 } else { 1 };
                        actions.push(ImmediateAction::Write {
                            writer: w,
                            row,
                            weight,
                        });
                    }
                }
                Step::Idle => {}
                Step::Wrote if self.serialisation.locks() => {
                    if s.lock.is_none() {
                        actions.push(ImmediateAction::Lock(w));
                    }
                }
                Step::Wrote | Step::Locked => actions.push(ImmediateAction::Maintain(w)),
                Step::Maintained => actions.push(ImmediateAction::Commit(w)),
            }
            if writer.step != Step::Idle {
                actions.push(ImmediateAction::Abort(w));
            }
        }
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let mut s = last.clone();
        match action {
            ImmediateAction::Write {
                writer,
                row,
                weight,
            } => {
                let w = usize::from(writer);
                if self.serialisation.repeatable_read() {
                    // The transaction snapshot is taken by its first statement.
                    s.writers[w].snapshot = Some((s.commits, s.sources[1 - w]));
                }
                s.writers[w].delta.add(row, i64::from(weight));
                s.writers[w].step = Step::Wrote;
            }
            ImmediateAction::Lock(writer) => {
                let w = usize::from(writer);
                s.lock = Some(writer);
                s.writers[w].step = Step::Locked;
                let stale = s.writers[w].snapshot.is_some_and(|(c, _)| c != s.commits);
                if stale && self.serialisation == Serialisation::LockRepeatableRead {
                    // 40001: the snapshot cannot see maintenance committed while we waited.
                    s.serialisation_failure = true;
                    self.end(&mut s, w);
                }
            }
            ImmediateAction::Maintain(writer) => self.maintain(&mut s, usize::from(writer)),
            ImmediateAction::Commit(writer) => self.commit(&mut s, usize::from(writer)),
            ImmediateAction::Abort(writer) => self.end(&mut s, usize::from(writer)),
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(INV_5, |m: &ImmediateModel, s: &ImmediateState| {
                let a = bits(s.sources[0], m.rows);
                let b = bits(s.sources[1], m.rows);
                s.st == m.join(&a, &b)
            }),
            Property::sometimes(BOTH_COMMIT, |_, s: &ImmediateState| {
                s.writers.iter().all(|w| w.txns_done > 0) && !s.st.is_empty()
            }),
        ];
        match self.serialisation {
            Serialisation::Lock => properties.push(Property::sometimes(
                SERIALISED_COMMIT,
                |_, s: &ImmediateState| s.serialised_commit,
            )),
            Serialisation::LockRepeatableRead => properties.push(Property::sometimes(
                SERIALISATION_FAILURE,
                |_, s: &ImmediateState| s.serialisation_failure,
            )),
            Serialisation::None | Serialisation::LockStaleSnapshot => {}
        }
        properties
    }
}

/// INV-5 property name.
pub const INV_5: &str = "INV-5 committed stream table equals the join of committed sources";
/// Reachability: both writers finish transactions and the join is non-empty.
pub const BOTH_COMMIT: &str = "both writers commit and the join is non-empty";
/// Reachability (locking variants): a writer blocked on the lock commits after the holder.
pub const SERIALISED_COMMIT: &str = "a writer blocked on the stream-table lock commits after it";
/// Reachability (REPEATABLE READ): a writer whose snapshot missed the other's commit gets 40001.
pub const SERIALISATION_FAILURE: &str = "a writer with a stale snapshot fails with 40001";
