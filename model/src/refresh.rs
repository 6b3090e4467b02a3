//! Refresh protocol: writer transactions take change ids from a sequence and commit out of id
//! order (or abort); capture triggers append their changes, tagged with the writer's xid, to one
//! change buffer shared by two stream tables; each refresh consumes the rows past its frontier
//! and reads the source; cleanup deletes buffer rows every dependent has consumed.
//!
//! Checks INV-1 (stream table = query at the refresh snapshot), INV-2 (no change consumed twice
//! or lost) and INV-3 (cleanup only after all dependents consumed). With [`Frontier::Snapshot`]
//! and [`SourceRead::RefreshSnapshot`] all three hold; with [`Frontier::IdRange`] the checker
//! finds the lost change; with [`SourceRead::LatestCommitted`] it finds the join stream table
//! counting a change that its frontier has not consumed yet.
//!
//! A refresh is two steps: it begins (takes its snapshot S_new) and later finishes (consumes the
//! buffer rows, reads the source, applies, commits its frontier); writers, cleanup and the other
//! stream table's refresh interleave between them. Under MVCC everything the refresh reads
//! through S_new is fixed when S_new is taken, so the finish step evaluates against S_new; buffer
//! rows are physically deleted by cleanup in this spec, which is conservative (a refresh would
//! still see them in S_new) and INV-3 shows cleanup never deletes a row a refresh still needs.

use crate::zset::ZSet;
use stateright::{Model, Property};

/// Number of stream tables reading the shared change buffer.
pub const STREAM_TABLES: usize = 2;

/// How a refresh decides which buffer rows it has not consumed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frontier {
    /// pg_trickle's design: the frontier is the snapshot of the previous refresh; a refresh
    /// consumes the rows whose xid is visible in its new snapshot and not in the previous one.
    Snapshot,
    /// The naive design: the frontier is the largest change id consumed so far; a refresh consumes
    /// the ids in `(last_max, current_max]`, `current_max` being the largest id it can see.
    IdRange,
}

/// Which snapshot a refresh reads the source tables in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceRead {
    /// pg_trickle's design: the snapshot whose visibility defines the consumed rows (one
    /// REPEATABLE READ snapshot for the whole refresh).
    RefreshSnapshot,
    /// The naive design: a READ COMMITTED statement snapshot taken when the source is read,
    /// which may include commits the buffer read did not.
    LatestCommitted,
}

/// Sizes and protocol variant of the refresh spec.
#[derive(Clone, Debug)]
pub struct RefreshModel {
    /// Writer transactions (each may run concurrently with every other); at most 8.
    pub txns: u8,
    /// Row writes per transaction (each takes one change id).
    pub writes_max: u8,
    /// Distinct row values a writer may insert (`0..values`).
    pub values: u8,
    /// The frontier the refreshes use.
    pub frontier: Frontier,
    /// The snapshot the refreshes read the source in.
    pub source_read: SourceRead,
}

/// Where a writer transaction is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    /// Running (it has an xid once it wrote).
    Open,
    /// Committed: its changes are visible to every later snapshot.
    Committed,
    /// Rolled back: its changes are visible to no snapshot.
    Aborted,
}

/// One writer transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Txn {
    /// Life-cycle position.
    pub status: TxnStatus,
    /// Writes made so far.
    pub writes: u8,
}

/// A captured change: one row of the change buffer (and, through `xid`, of the source's history).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    /// Change id drawn from the buffer's sequence when the trigger fired.
    pub id: u8,
    /// The writing transaction (`pg_current_xact_id()`).
    pub xid: u8,
    /// The source row.
    pub row: u8,
    /// +1 insert, −1 delete.
    pub weight: i8,
    /// Still in the change buffer (cleanup clears it; the change stays in the source's history).
    pub in_buffer: bool,
}

/// One stream table and its refresh bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamTable {
    /// Its stored rows.
    pub contents: ZSet<Vec<u8>>,
    /// Snapshot of a refresh that has begun and not finished (bit per committed xid).
    pub refreshing: Option<u8>,
    /// Committed-transaction set (bit per xid) of the snapshot its last refresh ran in: the
    /// frontier itself under [`Frontier::Snapshot`], bookkeeping for the invariants otherwise.
    pub snapshot: u8,
    /// Largest change id consumed: the frontier under [`Frontier::IdRange`] (0 = none).
    pub last_max: u8,
    /// Change ids consumed so far (bit per id).
    pub consumed: u64,
    /// Set when a refresh consumed a change id it had consumed before.
    pub consumed_twice: bool,
}

/// The whole system: writers, buffer, source history, stream tables.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefreshState {
    /// Writer transactions, indexed by xid.
    pub txns: Vec<Txn>,
    /// Next value of the change-id sequence (ids start at 1).
    pub next_id: u8,
    /// Every change of a transaction that has not aborted, in id order.
    pub changes: Vec<Change>,
    /// Committed transactions (bit per xid).
    pub committed: u8,
    /// The stream tables sharing the buffer.
    pub stream_tables: [StreamTable; STREAM_TABLES],
    /// Transactions that were open holding a lower change id than one a refresh consumed.
    pub overtaken: u8,
}

/// A step of the refresh spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RefreshAction {
    /// Transaction `txn` inserts (`weight` +1) or deletes one of its own rows (−1); the capture
    /// trigger takes the next change id.
    Write {
        /// Writing transaction.
        txn: u8,
        /// Row value.
        row: u8,
        /// +1 or −1.
        weight: i8,
    },
    /// The transaction commits.
    Commit(u8),
    /// The transaction rolls back.
    Abort(u8),
    /// A refresh of stream table `i` begins: it takes its snapshot.
    BeginRefresh(u8),
    /// The refresh of stream table `i` consumes, reads the source, applies and commits.
    FinishRefresh(u8),
    /// Buffer cleanup deletes the rows every stream table has consumed.
    Cleanup,
}

/// Whether a transaction's changes are visible in a snapshot (a committed-xid set).
fn visible(xid: u8, snapshot: u8) -> bool {
    snapshot & (1 << xid) != 0
}

/// `R ⋈ S` on the row value, output rows `[v, v]`.
fn self_join(r: &ZSet<u8>, s: &ZSet<u8>) -> ZSet<Vec<u8>> {
    r.join(s, |v| *v, |v| *v, |a, b| vec![*a, *b])
}

/// The defining query of stream table `st` over the source: ST 0 is `SELECT v FROM src`
/// (linear), ST 1 is `SELECT a.v, b.v FROM src a JOIN src b USING (v)` (bilinear).
pub fn query(st: usize, src: &ZSet<u8>) -> ZSet<Vec<u8>> {
    match st {
        0 => src.iter().map(|(v, w)| (vec![*v], w)).collect(),
        _ => self_join(src, src),
    }
}

/// The change of `query(st)` given the source change `delta` and the post-change source `post`
/// (INV-4 rule): linear for ST 0, `ΔA⋈A' + A'⋈ΔA − ΔA⋈ΔA` for ST 1.
fn query_delta(st: usize, delta: &ZSet<u8>, post: &ZSet<u8>) -> ZSet<Vec<u8>> {
    match st {
        0 => query(0, delta),
        _ => self_join(delta, post)
            .plus(&self_join(post, delta))
            .minus(&self_join(delta, delta)),
    }
}

impl RefreshState {
    /// The source table as a snapshot sees it.
    pub fn source_in(&self, snapshot: u8) -> ZSet<u8> {
        self.changes
            .iter()
            .filter(|c| visible(c.xid, snapshot))
            .map(|c| (c.row, i64::from(c.weight)))
            .collect()
    }

    /// A transaction's own net rows (what it may delete).
    fn own_rows(&self, txn: u8) -> ZSet<u8> {
        self.changes
            .iter()
            .filter(|c| c.xid == txn)
            .map(|c| (c.row, i64::from(c.weight)))
            .collect()
    }

    fn ended(&self) -> bool {
        self.txns.iter().all(|t| t.status != TxnStatus::Open)
    }
}

impl RefreshModel {
    /// The buffer rows a refresh of `st` in `snapshot` consumes, and its new `last_max`.
    fn rows_to_consume(&self, s: &RefreshState, st: usize, snapshot: u8) -> (Vec<usize>, u8) {
        let table = &s.stream_tables[st];
        let readable = |c: &Change| c.in_buffer && visible(c.xid, snapshot);
        match self.frontier {
            Frontier::Snapshot => {
                let rows = s.changes.iter().enumerate();
                let picked = rows
                    .filter(|(_, c)| readable(c) && !visible(c.xid, table.snapshot))
                    .map(|(i, _)| i)
                    .collect();
                (picked, table.last_max)
            }
            Frontier::IdRange => {
                let current_max = s
                    .changes
                    .iter()
                    .filter(|c| readable(c))
                    .map(|c| c.id)
                    .fold(table.last_max, u8::max);
                let rows = s.changes.iter().enumerate();
                let picked = rows
                    .filter(|(_, c)| readable(c) && c.id > table.last_max && c.id <= current_max)
                    .map(|(i, _)| i)
                    .collect();
                (picked, current_max)
            }
        }
    }

    fn finish_refresh(&self, s: &mut RefreshState, st: usize, snapshot: u8) {
        let (picked, last_max) = self.rows_to_consume(s, st, snapshot);
        let mut delta = ZSet::new();
        let mut max_consumed = 0;
        for &i in &picked {
            let c = &s.changes[i];
            delta.add(c.row, i64::from(c.weight));
            max_consumed = max_consumed.max(c.id);
            let table = &mut s.stream_tables[st];
            if table.consumed & (1 << c.id) != 0 {
                table.consumed_twice = true;
            }
            table.consumed |= 1 << c.id;
        }
        let source = match self.source_read {
            SourceRead::RefreshSnapshot => s.source_in(snapshot),
            SourceRead::LatestCommitted => s.source_in(s.committed),
        };
        let table = &mut s.stream_tables[st];
        table.contents = table.contents.plus(&query_delta(st, &delta, &source));
        table.snapshot = snapshot;
        table.last_max = last_max;
        table.refreshing = None;
        // Bookkeeping for the reachability property: writers not yet committed in the snapshot
        // that hold a lower id than one this refresh consumed.
        for (xid, txn) in (0u8..).zip(&s.txns) {
            let holds_lower = s
                .changes
                .iter()
                .any(|c| c.xid == xid && c.id < max_consumed);
            if txn.status != TxnStatus::Aborted && !visible(xid, snapshot) && holds_lower {
                s.overtaken |= 1 << xid;
            }
        }
    }

    fn cleanup(&self, s: &mut RefreshState) {
        let tables = &s.stream_tables;
        let all_seen = tables.iter().fold(u8::MAX, |m, t| m & t.snapshot);
        let min_last_max = tables.iter().map(|t| t.last_max).min().unwrap_or(0);
        let committed = s.committed;
        for c in s.changes.iter_mut().filter(|c| c.in_buffer) {
            let consumed_by_all = match self.frontier {
                Frontier::Snapshot => visible(c.xid, all_seen),
                // `DELETE … WHERE change_id <= min(last_max)` sees only committed rows.
                Frontier::IdRange => visible(c.xid, committed) && c.id <= min_last_max,
            };
            if consumed_by_all {
                c.in_buffer = false;
            }
        }
    }
}

impl Model for RefreshModel {
    type State = RefreshState;
    type Action = RefreshAction;

    fn init_states(&self) -> Vec<Self::State> {
        assert!(self.txns <= 8, "xids are bits of a u8");
        assert!(u32::from(self.txns) * u32::from(self.writes_max) < 64);
        let empty = StreamTable {
            contents: ZSet::new(),
            refreshing: None,
            snapshot: 0,
            last_max: 0,
            consumed: 0,
            consumed_twice: false,
        };
        let txn = Txn {
            status: TxnStatus::Open,
            writes: 0,
        };
        vec![RefreshState {
            txns: vec![txn; usize::from(self.txns)],
            next_id: 1,
            changes: Vec::new(),
            committed: 0,
            stream_tables: [empty.clone(), empty],
            overtaken: 0,
        }]
    }

    fn actions(&self, s: &Self::State, actions: &mut Vec<Self::Action>) {
        for (xid, t) in (0u8..).zip(&s.txns) {
            if t.status != TxnStatus::Open {
                continue;
            }
            if t.writes < self.writes_max {
                let own = s.own_rows(xid);
                for row in 0..self.values {
                    actions.push(RefreshAction::Write {
                        txn: xid,
                        row,
                        weight: 1,
                    });
                    if own.weight(&row) > 0 {
                        actions.push(RefreshAction::Write {
                            txn: xid,
                            row,
                            weight: -1,
                        });
                    }
                }
            }
            // A transaction that never wrote has no xid and nothing to commit.
            if t.writes > 0 {
                actions.push(RefreshAction::Commit(xid));
                actions.push(RefreshAction::Abort(xid));
            }
        }
        for (st, table) in (0u8..).zip(&s.stream_tables) {
            actions.push(match table.refreshing {
                None => RefreshAction::BeginRefresh(st),
                Some(_) => RefreshAction::FinishRefresh(st),
            });
        }
        actions.push(RefreshAction::Cleanup);
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let mut s = last.clone();
        match action {
            RefreshAction::Write { txn, row, weight } => {
                s.txns[usize::from(txn)].writes += 1;
                s.changes.push(Change {
                    id: s.next_id,
                    xid: txn,
                    row,
                    weight,
                    in_buffer: true,
                });
                s.next_id += 1;
            }
            RefreshAction::Commit(txn) => {
                s.txns[usize::from(txn)].status = TxnStatus::Committed;
                s.committed |= 1 << txn;
            }
            RefreshAction::Abort(txn) => {
                // The rolled-back rows are invisible to every snapshot; drop them outright.
                s.txns[usize::from(txn)].status = TxnStatus::Aborted;
                s.changes.retain(|c| c.xid != txn);
            }
            RefreshAction::BeginRefresh(st) => {
                s.stream_tables[usize::from(st)].refreshing = Some(s.committed);
            }
            RefreshAction::FinishRefresh(st) => {
                let st = usize::from(st);
                if let Some(snapshot) = s.stream_tables[st].refreshing {
                    self.finish_refresh(&mut s, st, snapshot);
                }
            }
            RefreshAction::Cleanup => self.cleanup(&mut s),
        }
        (s != *last).then_some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(INV_1, |_, s: &RefreshState| {
                s.stream_tables
                    .iter()
                    .enumerate()
                    .all(|(st, table)| table.contents == query(st, &s.source_in(table.snapshot)))
            }),
            Property::always(INV_2, |_, s: &RefreshState| {
                s.stream_tables.iter().all(|table| {
                    !table.consumed_twice
                        && s.changes.iter().all(|c| {
                            let consumed = table.consumed & (1 << c.id) != 0;
                            consumed == visible(c.xid, table.snapshot)
                        })
                })
            }),
            Property::always(INV_3, |_, s: &RefreshState| {
                s.changes.iter().filter(|c| !c.in_buffer).all(|c| {
                    let consumed = |t: &StreamTable| t.consumed & (1 << c.id) != 0;
                    s.stream_tables.iter().all(consumed)
                })
            }),
            Property::sometimes(OVERTAKEN_COMMIT, |_, s: &RefreshState| {
                // An overtaken transaction is in some later refresh snapshot: it committed after
                // a refresh consumed a higher id, and was refreshed afterwards.
                s.stream_tables
                    .iter()
                    .any(|t| t.snapshot & s.overtaken != 0)
            }),
            Property::sometimes(BUFFER_DRAINS, |_, s: &RefreshState| {
                s.ended() && !s.changes.is_empty() && s.changes.iter().all(|c| !c.in_buffer)
            }),
        ]
    }
}

/// INV-1 property name.
pub const INV_1: &str = "INV-1 stream table equals its query in the refresh snapshot";
/// INV-2 property name.
pub const INV_2: &str = "INV-2 every visible change consumed exactly once";
/// INV-3 property name.
pub const INV_3: &str = "INV-3 cleanup deletes only rows every dependent consumed";
/// Reachability: the out-of-order commit the frontier exists for.
pub const OVERTAKEN_COMMIT: &str =
    "a refresh overtakes an open lower-id transaction that later commits and is refreshed";
/// Reachability: cleanup empties the buffer.
pub const BUFFER_DRAINS: &str = "the buffer drains once every writer has ended";
