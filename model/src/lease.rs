//! Refresh leases: schedulers on different nodes take a per-stream-table lease row
//! with `INSERT … ON CONFLICT DO NOTHING` and a TTL, refresh, and apply; clocks are skewed by a
//! bounded amount, any scheduler may pause at any point (time passes while it takes no step)
//! and may restart, losing its memory but not its lease row.
//!
//! Checks INV-6: no refresh is applied by a holder whose lease was taken over. Every acquisition
//! increments the stream table's fencing epoch; with [`Fencing::Epoch`] the applying transaction
//! checks that the epoch is still its own and rolls back otherwise. With [`Fencing::ClockOnly`]
//! the holder only checks its own clock before sending the apply, and the checker finds a stale
//! holder applying (through clock skew, or through a pause between the check and the commit).
//! Consequence checked alongside: a stream table never goes back to an older source version.
//!
//! Time is discrete and global (`now`); scheduler `i` reads `now + skew[i]`, `skew[0] = 0` and
//! the others range over `-skew_max..=skew_max` (only relative skew matters). The lease row's
//! expiry is written and compared in the clock of the scheduler doing it, as it would be when
//! schedulers pass their own timestamps.

use stateright::{Model, Property};

/// What the applying transaction checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fencing {
    /// pg_trickle's design: the apply commits only if the stream table's fencing epoch still
    /// equals the one the holder acquired.
    Epoch,
    /// The naive design: the holder checks its lease has not expired by its own clock, then
    /// applies unconditionally.
    ClockOnly,
}

/// Sizes and variant of the lease spec.
#[derive(Clone, Debug)]
pub struct LeaseModel {
    /// Scheduler processes (on different nodes).
    pub schedulers: u8,
    /// Stream tables, one lease row each.
    pub stream_tables: u8,
    /// Lease time-to-live, in ticks of the acquirer's clock.
    pub ttl: i8,
    /// Bound on the clock skew of any scheduler relative to scheduler 0.
    pub skew_max: i8,
    /// Last tick of global time.
    pub time_max: i8,
    /// Writes to the sources (each makes a new source version).
    pub writes_max: u8,
    /// Acquisitions per stream table (bounds the epoch).
    pub acquisitions_max: u8,
    /// The applying transaction's check.
    pub fencing: Fencing,
}

/// The lease row of one stream table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseRow {
    /// The scheduler that inserted it.
    pub holder: u8,
    /// Expiry, in the holder's clock.
    pub expires_at: i8,
    /// The fencing epoch the holder acquired.
    pub epoch: u8,
}

/// What a scheduler is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Holds no lease (or forgot it by restarting).
    Idle,
    /// Holds the lease of `st` with `epoch`, expiring at `expires_at` in its clock.
    Holding {
        /// Stream table.
        st: u8,
        /// Epoch acquired.
        epoch: u8,
        /// Expiry in its own clock.
        expires_at: i8,
    },
    /// Has read the sources at `version` and computed the refresh.
    Computed {
        /// Stream table.
        st: u8,
        /// Epoch acquired.
        epoch: u8,
        /// Expiry in its own clock.
        expires_at: i8,
        /// Source version read.
        version: u8,
    },
    /// Checked its clock and sent the applying transaction, which has not committed yet.
    Applying {
        /// Stream table.
        st: u8,
        /// Epoch acquired.
        epoch: u8,
        /// Source version read.
        version: u8,
    },
}

/// Global time, clocks, lease rows, epochs, stream tables and schedulers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseState {
    /// Global time.
    pub now: i8,
    /// Clock skew of each scheduler.
    pub skew: Vec<i8>,
    /// Each scheduler's phase.
    pub phases: Vec<Phase>,
    /// Lease row per stream table.
    pub leases: Vec<Option<LeaseRow>>,
    /// Fencing epoch per stream table (incremented by every acquisition).
    pub epochs: Vec<u8>,
    /// Current source version.
    pub source_version: u8,
    /// Source version each stream table was last refreshed to (`None`: never refreshed).
    pub applied: Vec<Option<u8>>,
    /// A refresh was applied by a holder whose lease had been taken over.
    pub stale_apply: bool,
    /// A refresh moved a stream table back to an older source version.
    pub regressed: bool,
    /// An apply was rolled back by the epoch check (reachability).
    pub fenced_off: bool,
    /// Stream tables (bit each) whose live lease row belongs to a holder that restarted.
    pub orphaned: u8,
    /// A lease row left by a restarted holder was taken over (reachability).
    pub orphan_taken_over: bool,
}

/// A step of the lease spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeaseAction {
    /// Global time advances one tick.
    Tick,
    /// A source write makes a new source version.
    Write,
    /// Scheduler `0` tries to take the lease of stream table `1`.
    Acquire(u8, u8),
    /// Scheduler reads the sources and computes the refresh.
    Compute(u8),
    /// Scheduler checks its clock and sends the apply (or gives up if its lease has expired).
    SendApply(u8),
    /// The applying transaction commits (and deletes the lease row it holds).
    CommitApply(u8),
    /// Scheduler process restarts: forgets everything, its lease row stays until it expires.
    Restart(u8),
}

impl LeaseState {
    fn clock(&self, scheduler: usize) -> i8 {
        self.now + self.skew[scheduler]
    }
}

impl LeaseModel {
    /// `DELETE … WHERE expires_at <= $my_now; INSERT … ON CONFLICT DO NOTHING`, bumping the
    /// epoch, in one transaction. `None` when a live row is in the way.
    fn acquire(&self, s: &LeaseState, i: usize, st: usize) -> Option<LeaseState> {
        if s.epochs[st] >= self.acquisitions_max {
            return None;
        }
        let now = s.clock(i);
        if s.leases[st]
            .as_ref()
            .is_some_and(|row| row.expires_at > now)
        {
            return None;
        }
        let mut next = s.clone();
        if next.orphaned & (1 << st) != 0 {
            next.orphan_taken_over = true;
            next.orphaned &= !(1 << st);
        }
        next.epochs[st] += 1;
        let epoch = next.epochs[st];
        let expires_at = now + self.ttl;
        next.leases[st] = Some(LeaseRow {
            holder: i as u8,
            expires_at,
            epoch,
        });
        next.phases[i] = Phase::Holding {
            st: st as u8,
            epoch,
            expires_at,
        };
        Some(next)
    }

    fn commit_apply(&self, s: &mut LeaseState, i: usize, st: usize, epoch: u8, version: u8) {
        let current = s.epochs[st] == epoch;
        s.phases[i] = Phase::Idle;
        if self.fencing == Fencing::Epoch && !current {
            // The check runs inside the applying transaction: roll back, apply nothing.
            s.fenced_off = true;
            return;
        }
        if !current {
            s.stale_apply = true;
        }
        if s.applied[st].is_some_and(|v| v > version) {
            s.regressed = true;
        }
        s.applied[st] = Some(version);
        // Release in the same transaction, only the row this holder inserted.
        if s.leases[st].as_ref().is_some_and(|row| row.epoch == epoch) {
            s.leases[st] = None;
            s.orphaned &= !(1 << st);
        }
    }
}

impl Model for LeaseModel {
    type State = LeaseState;
    type Action = LeaseAction;

    fn init_states(&self) -> Vec<Self::State> {
        let n = usize::from(self.schedulers);
        let tables = usize::from(self.stream_tables);
        let mut skews: Vec<Vec<i8>> = vec![vec![0]];
        for _ in 1..n {
            skews = skews
                .into_iter()
                .flat_map(|prefix| {
                    (-self.skew_max..=self.skew_max).map(move |k| {
                        let mut v = prefix.clone();
                        v.push(k);
                        v
                    })
                })
                .collect();
        }
        skews
            .into_iter()
            .map(|skew| LeaseState {
                now: 0,
                skew,
                phases: vec![Phase::Idle; n],
                leases: vec![None; tables],
                epochs: vec![0; tables],
                source_version: 0,
                applied: vec![None; tables],
                stale_apply: false,
                regressed: false,
                fenced_off: false,
                orphaned: 0,
                orphan_taken_over: false,
            })
            .collect()
    }

    fn actions(&self, s: &Self::State, actions: &mut Vec<Self::Action>) {
        if s.now < self.time_max {
            actions.push(LeaseAction::Tick);
        }
        if s.source_version < self.writes_max {
            actions.push(LeaseAction::Write);
        }
        for (i, phase) in (0u8..).zip(&s.phases) {
            match phase {
                Phase::Idle => {
                    for st in 0..self.stream_tables {
                        actions.push(LeaseAction::Acquire(i, st));
                    }
                }
                Phase::Holding { .. } => actions.push(LeaseAction::Compute(i)),
                Phase::Computed { .. } => actions.push(LeaseAction::SendApply(i)),
                Phase::Applying { .. } => actions.push(LeaseAction::CommitApply(i)),
            }
            if *phase != Phase::Idle {
                actions.push(LeaseAction::Restart(i));
            }
        }
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let mut s = last.clone();
        match action {
            LeaseAction::Tick => s.now += 1,
            LeaseAction::Write => s.source_version += 1,
            LeaseAction::Acquire(i, st) => {
                return self.acquire(last, usize::from(i), usize::from(st));
            }
            LeaseAction::Compute(i) => {
                let i = usize::from(i);
                if let Phase::Holding {
                    st,
                    epoch,
                    expires_at,
                } = s.phases[i]
                {
                    let version = s.source_version;
                    s.phases[i] = Phase::Computed {
                        st,
                        epoch,
                        expires_at,
                        version,
                    };
                }
            }
            LeaseAction::SendApply(i) => {
                let i = usize::from(i);
                if let Phase::Computed {
                    st,
                    epoch,
                    expires_at,
                    version,
                } = s.phases[i]
                {
                    s.phases[i] = if s.clock(i) < expires_at {
                        Phase::Applying { st, epoch, version }
                    } else {
                        Phase::Idle
                    };
                }
            }
            LeaseAction::CommitApply(i) => {
                let i = usize::from(i);
                if let Phase::Applying { st, epoch, version } = s.phases[i] {
                    self.commit_apply(&mut s, i, usize::from(st), epoch, version);
                }
            }
            LeaseAction::Restart(i) => {
                let i = usize::from(i);
                let held = match s.phases[i] {
                    Phase::Holding { st, epoch, .. }
                    | Phase::Computed { st, epoch, .. }
                    | Phase::Applying { st, epoch, .. } => Some((st, epoch)),
                    Phase::Idle => None,
                };
                if let Some((st, epoch)) = held {
                    let live = s.leases[usize::from(st)].as_ref();
                    if live.is_some_and(|row| row.epoch == epoch) {
                        s.orphaned |= 1 << st;
                    }
                }
                s.phases[i] = Phase::Idle;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(INV_6, |_, s: &LeaseState| !s.stale_apply),
            Property::always(NO_REGRESSION, |_, s: &LeaseState| !s.regressed),
            Property::sometimes(EVERY_TABLE_REFRESHED, |_, s: &LeaseState| {
                s.applied.iter().all(Option::is_some)
            }),
            Property::sometimes(TAKEOVER_AFTER_PAUSE, |_, s: &LeaseState| {
                // Someone holds an epoch beyond the one an in-flight or finished holder has.
                s.phases.iter().any(|p| match p {
                    Phase::Computed { st, epoch, .. } | Phase::Applying { st, epoch, .. } => {
                        s.epochs[usize::from(*st)] > *epoch
                    }
                    Phase::Idle | Phase::Holding { .. } => false,
                })
            }),
        ];
        properties.push(Property::sometimes(
            RESTART_TAKEOVER,
            |_, s: &LeaseState| s.orphan_taken_over,
        ));
        if self.fencing == Fencing::Epoch {
            properties.push(Property::sometimes(FENCED_OFF, |_, s: &LeaseState| {
                s.fenced_off
            }));
        }
        properties
    }
}

/// INV-6 property name.
pub const INV_6: &str = "INV-6 no refresh applied by a holder whose lease was taken over";
/// Consequence of INV-6: a stale holder cannot overwrite a newer refresh.
pub const NO_REGRESSION: &str = "INV-6 stream table never goes back to an older source version";
/// Liveness as reachability: every stream table gets refreshed.
pub const EVERY_TABLE_REFRESHED: &str = "every stream table gets refreshed";
/// Reachability: a holder is mid-refresh while its lease has been taken over.
pub const TAKEOVER_AFTER_PAUSE: &str =
    "a holder pauses past its lease mid-refresh and is taken over";
/// Reachability (fencing): the epoch check rolls back a stale holder's apply.
pub const FENCED_OFF: &str = "the epoch check rolls back the apply of a holder taken over";
/// Reachability: a scheduler restarts while holding a lease, and its row is taken over.
pub const RESTART_TAKEOVER: &str =
    "a lease row left by a restarted holder expires and is taken over";
