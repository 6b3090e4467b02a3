//! The scheduler's shared memory: which databases pg_trickle serves, when each needs its
//! scheduler next, and the worker pool (`pg_trickle.max_workers` slots). Allocated once by the
//! postmaster (`shared_preload_libraries`), so its size is fixed: at most [`MAX_DATABASES`]
//! databases and [`MAX_POOL`] workers. Every access goes through one LWLock, held only for
//! reads and writes of these fields, never across SPI or a wait. Times are milliseconds since
//! the Unix epoch (the same clock in every process).
//!
//! Protocol (docs/SCHEDULING.md tells it for users):
//! - The launcher adds every database of `pg_database` as [`DbState::Unknown`]: it starts a
//!   scheduler there once, which finds out whether there is anything to schedule and records
//!   [`DbState::Serving`] with `next_due_ms`, or [`DbState::Idle`]. An idle database costs
//!   nothing until a backend asks for service at the commit of a change to what it schedules
//!   (the catalog trigger of scheduling.rs, [`request_service`]).
//! - A worker is started only into a slot reserved for it ([`reserve`]); it claims the slot
//!   when it runs ([`claim`]) and a `before_shmem_exit` callback frees it on every exit,
//!   normal or by error. A worker killed with SIGKILL makes the postmaster reinitialise all of
//!   shared memory, this included. A reservation whose worker never started is swept.
//! - A database has at most one scheduler (`Database::scheduler_slot`); the scheduler starts
//!   its parallel refresh workers into slots of the same pool.

use std::ffi::c_int;
use std::time::{SystemTime, UNIX_EPOCH};

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

/// Databases the registry can hold; more are reported (`scheduler_status`, a WARNING).
pub const MAX_DATABASES: usize = 256;
/// Hard upper bound of `pg_trickle.max_workers`.
pub const MAX_POOL: usize = 64;
/// A database waiting this long for a scheduler is reported (taking turns for a moment is
/// not): `scheduler_status()`, `pgt_status()`, the launcher's WARNING.
pub const REPORT_WAIT_MS: i64 = 5_000;
/// Stream tables one refresh worker is handed at most (a worker started per refresh would
/// spend more on starting than on refreshing).
pub const BATCH: usize = 32;
/// A reservation whose worker has not claimed it after this long is freed.
const RESERVATION_TIMEOUT_MS: i64 = 30_000;

/// What pg_trickle knows about one database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DbState {
    /// Not looked at yet: a scheduler will be started there once.
    Unknown = 1,
    /// Has scheduled stream tables; its scheduler is wanted at `next_due_ms`.
    Serving = 2,
    /// No extension, or nothing to schedule: no worker until a backend asks.
    Idle = 3,
}

/// Why a database that wants its scheduler has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Missing {
    None = 0,
    /// All `pg_trickle.max_workers` slots are in use.
    PoolFull = 1,
    /// PostgreSQL refused to start a background worker (`max_worker_processes`).
    NoWorkerProcess = 2,
}

impl Missing {
    fn from_u8(v: u8) -> Missing {
        match v {
            1 => Missing::PoolFull,
            2 => Missing::NoWorkerProcess,
            _ => Missing::None,
        }
    }
}

/// The kind of worker in a pool slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Scheduler = 1,
    Refresh = 2,
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Database {
    /// 0: a free entry.
    pub oid: u32,
    state: u8,
    missing: u8,
    /// The pool slot of its scheduler, or -1.
    pub scheduler_slot: i16,
    /// When its scheduler should run next; `i64::MAX`: nothing scheduled.
    pub next_due_ms: i64,
    /// Since when it has wanted a scheduler and not got one (0: not waiting).
    pub waiting_since_ms: i64,
    pub last_tick_ms: i64,
    pub last_prune_ms: i64,
    /// No scheduler before this (database DDL asked the workers to leave).
    pub paused_until_ms: i64,
    /// Stream tables due at the last tick.
    pub queue_len: i32,
    /// Ticks since the server started (wraps never in practice: 2^63).
    pub ticks: i64,
}

impl Database {
    const EMPTY: Database = Database {
        oid: 0,
        state: DbState::Unknown as u8,
        missing: Missing::None as u8,
        scheduler_slot: -1,
        // Not 0, which means "asked for at once" (record_tick keeps such a request).
        next_due_ms: i64::MAX,
        waiting_since_ms: 0,
        last_tick_ms: 0,
        last_prune_ms: 0,
        paused_until_ms: 0,
        queue_len: 0,
        ticks: 0,
    };

    /// What an entry for `oid` starts as (the launcher or a backend adds it).
    pub fn unregistered(oid: u32) -> Database {
        Database {
            oid,
            ..Database::EMPTY
        }
    }

    /// The outcome of a tick (see [`record_tick`]).
    fn record(&mut self, next_due_ms: Option<i64>, queue_len: usize, now: i64) {
        self.last_tick_ms = now;
        self.ticks = self.ticks.saturating_add(1);
        self.queue_len = i32::try_from(queue_len).unwrap_or(i32::MAX);
        if self.next_due_ms == 0 {
            // Asked for during the tick: looked at again at once.
            self.state = DbState::Unknown as u8;
            return;
        }
        match next_due_ms {
            Some(t) => {
                self.state = DbState::Serving as u8;
                self.next_due_ms = t;
            }
            None => {
                self.state = DbState::Idle as u8;
                self.next_due_ms = i64::MAX;
            }
        }
    }

    pub fn state(&self) -> DbState {
        match self.state {
            2 => DbState::Serving,
            3 => DbState::Idle,
            _ => DbState::Unknown,
        }
    }

    pub fn missing(&self) -> Missing {
        Missing::from_u8(self.missing)
    }

    /// Whether it wants a scheduler started now.
    pub fn wants_scheduler(&self, now: i64) -> bool {
        self.oid != 0
            && self.scheduler_slot < 0
            && self.paused_until_ms <= now
            && match self.state() {
                DbState::Unknown => true,
                DbState::Serving => self.next_due_ms <= now,
                DbState::Idle => false,
            }
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Slot {
    /// 0 free, 1 reserved (a worker is being started), 2 running.
    state: u8,
    kind: u8,
    /// Bumped at every reservation: a stale holder never frees a reused slot.
    pub generation: u32,
    pub pid: i32,
    pub db_oid: u32,
    /// The stream tables a refresh worker refreshes, in order: `batch[..batch_len]`, of which
    /// the first `batch_done` are done.
    batch: [i64; BATCH],
    batch_len: u8,
    batch_done: u8,
    pub since_ms: i64,
    /// The worker's PGPROC (shared memory), to set its latch.
    proc_addr: usize,
}

impl Slot {
    const FREE: Slot = Slot {
        state: 0,
        kind: 0,
        generation: 0,
        pid: 0,
        db_oid: 0,
        batch: [0; BATCH],
        batch_len: 0,
        batch_done: 0,
        since_ms: 0,
        proc_addr: 0,
    };

    pub fn in_use(&self) -> bool {
        self.state != 0
    }

    pub fn running(&self) -> bool {
        self.state == 2
    }

    pub fn kind(&self) -> Option<Kind> {
        match self.kind {
            1 => Some(Kind::Scheduler),
            2 => Some(Kind::Refresh),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Shared {
    pub launcher_pid: i32,
    launcher_proc: usize,
    pub databases: [Database; MAX_DATABASES],
    pub slots: [Slot; MAX_POOL],
}

impl Shared {
    pub const fn new() -> Shared {
        Shared {
            launcher_pid: 0,
            launcher_proc: 0,
            databases: [Database::EMPTY; MAX_DATABASES],
            slots: [Slot::FREE; MAX_POOL],
        }
    }

    pub fn database(&self, oid: u32) -> Option<&Database> {
        self.databases.iter().find(|d| d.oid == oid && oid != 0)
    }

    pub fn database_mut(&mut self, oid: u32) -> Option<&mut Database> {
        self.databases.iter_mut().find(|d| d.oid == oid && oid != 0)
    }

    /// The entry of `oid`, added as Unknown if absent; None when the registry is full.
    pub fn entry(&mut self, oid: u32) -> Option<&mut Database> {
        let index = match self.databases.iter().position(|d| d.oid == oid) {
            Some(i) => i,
            None => {
                let free = self.databases.iter().position(|d| d.oid == 0)?;
                self.databases[free] = Database {
                    oid,
                    ..Database::EMPTY
                };
                free
            }
        };
        Some(&mut self.databases[index])
    }

    /// The slots of `db`'s refresh workers (reserved or running).
    pub fn refresh_slots(&self, db: u32) -> impl Iterator<Item = &Slot> {
        self.slots
            .iter()
            .filter(move |s| s.in_use() && s.db_oid == db && s.kind() == Some(Kind::Refresh))
    }

    pub fn slots_in_use(&self) -> usize {
        self.slots.iter().filter(|s| s.in_use()).count()
    }

    /// Databases other than `oid` waiting for a scheduler.
    pub fn others_waiting(&self, oid: u32) -> bool {
        self.databases
            .iter()
            .any(|d| d.oid != 0 && d.oid != oid && d.waiting_since_ms != 0 && d.scheduler_slot < 0)
    }

    fn free_slot(&mut self, index: usize, generation: u32) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.generation != generation || !slot.in_use() {
            return;
        }
        let (kind, db) = (slot.kind(), slot.db_oid);
        *slot = Slot {
            generation,
            ..Slot::FREE
        };
        if kind == Some(Kind::Scheduler) {
            if let Some(d) = self.database_mut(db) {
                if d.scheduler_slot == index as i16 {
                    d.scheduler_slot = -1;
                }
            }
        }
    }
}

// SAFETY: `Shared` is plain old data (integers and arrays of integers, `repr(C)`), with no
// pointers into process-local memory: `launcher_proc`/`proc_addr` are addresses of PGPROC
// entries, which live in shared memory mapped at the same address in every backend.
unsafe impl PGRXSharedMemory for Shared {}

// SAFETY: the name is unique to pg_trickle.
pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"pg_trickle scheduler") };

/// Requests the shared memory; called from `_PG_init` while preloading.
// The macro tests features of PostgreSQL versions this crate does not declare.
#[allow(unexpected_cfgs)]
pub(crate) fn init() {
    pgrx::pg_shmem_init!(SHARED = Shared::new());
}

/// Whether the shared memory exists in this process (the library was preloaded).
pub fn available() -> bool {
    crate::preload::loaded_at_startup()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The address of this process's PGPROC.
fn my_proc() -> usize {
    // SAFETY: MyProc is set by InitProcess before any extension code runs in a backend or a
    // background worker and does not change afterwards.
    unsafe { pg_sys::MyProc as usize }
}

fn my_pid() -> i32 {
    // SAFETY: set once at process start.
    unsafe { pg_sys::MyProcPid }
}

/// Sets the latch of the process whose PGPROC is at `addr`, if it is still `pid`.
fn set_latch(addr: usize, pid: i32) {
    if addr == 0 || pid == 0 {
        return;
    }
    let proc = addr as *mut pg_sys::PGPROC;
    // SAFETY: `addr` is a PGPROC in the shared ProcArray (fixed at postmaster start, the same
    // address in every process); reading its pid and setting its latch are what PostgreSQL
    // itself does to wake another process. If the entry was reused, the pid check avoids
    // waking a stranger, and a spurious wake-up is harmless anyway.
    unsafe {
        if (*proc).pid == pid {
            pg_sys::SetLatch(&raw mut (*proc).procLatch);
        }
    }
}

/// The launcher announces itself (and wakes on [`wake_launcher`]).
pub fn register_launcher() {
    let mut s = SHARED.exclusive();
    s.launcher_pid = my_pid();
    s.launcher_proc = my_proc();
}

pub fn wake_launcher() {
    let (addr, pid) = {
        let s = SHARED.share();
        (s.launcher_proc, s.launcher_pid)
    };
    set_latch(addr, pid);
}

/// Whether the launcher process is alive.
pub fn launcher_alive() -> bool {
    let pid = SHARED.share().launcher_pid;
    // SAFETY: kill with signal 0 only checks that the process exists (same OS user).
    pid != 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Reserves a pool slot for a worker of `kind` in `db`, if fewer than `max_workers` are in
/// use: (index, generation). The caller starts the worker with both, or calls [`release`].
pub fn reserve(kind: Kind, db: u32, ids: &[i64], max_workers: usize) -> Option<(usize, u32)> {
    debug_assert!(
        ids.len() <= BATCH,
        "a refresh worker's batch holds at most {BATCH}"
    );
    debug_assert!(
        kind == Kind::Refresh || ids.is_empty(),
        "only refresh workers have a batch"
    );
    let mut batch = [0; BATCH];
    let len = ids.len().min(BATCH);
    batch[..len].copy_from_slice(&ids[..len]);
    let mut s = SHARED.exclusive();
    if s.slots_in_use() >= max_workers.min(MAX_POOL) {
        return None;
    }
    let index = s.slots.iter().position(|slot| !slot.in_use())?;
    let slot = &mut s.slots[index];
    let generation = slot.generation.wrapping_add(1);
    *slot = Slot {
        state: 1,
        kind: kind as u8,
        generation,
        pid: 0,
        db_oid: db,
        batch,
        batch_len: len as u8,
        batch_done: 0,
        since_ms: now_ms(),
        proc_addr: 0,
    };
    if kind == Kind::Scheduler {
        if let Some(d) = s.database_mut(db) {
            d.scheduler_slot = index as i16;
        }
    }
    Some((index, generation))
}

/// Frees a reservation whose worker could not be started.
pub fn release(index: usize, generation: u32) {
    SHARED.exclusive().free_slot(index, generation);
}

/// Called by a worker at start: takes its reserved slot and arranges for it to be freed when
/// the process exits. False when the slot is not ours any more (swept): the worker must exit.
pub fn claim(index: usize, generation: u32) -> bool {
    {
        let mut s = SHARED.exclusive();
        let Some(slot) = s.slots.get_mut(index) else {
            return false;
        };
        if slot.generation != generation || slot.state != 1 {
            return false;
        }
        slot.state = 2;
        slot.pid = my_pid();
        slot.proc_addr = my_proc();
        let (kind, db) = (slot.kind(), slot.db_oid);
        // A database waits until its scheduler runs, not until one is asked for.
        if kind == Some(Kind::Scheduler) {
            if let Some(d) = s.database_mut(db) {
                d.waiting_since_ms = 0;
                d.missing = Missing::None as u8;
            }
        }
    }
    let arg = (u64::from(generation) << 32) | index as u64;
    // SAFETY: registers a callback PostgreSQL runs at process exit (normal exit and FATAL
    // alike), with a plain integer argument.
    unsafe { pg_sys::before_shmem_exit(Some(on_worker_exit), pg_sys::Datum::from(arg)) };
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn on_worker_exit(_code: c_int, arg: pg_sys::Datum) {
    let arg = arg.value() as u64;
    let (index, generation) = ((arg & 0xffff_ffff) as usize, (arg >> 32) as u32);
    SHARED.exclusive().free_slot(index, generation);
    wake_launcher();
}

/// Frees reservations whose worker never claimed them (the postmaster could not fork, say).
pub fn sweep_reservations(now: i64) {
    let mut s = SHARED.exclusive();
    let stale: Vec<(usize, u32)> = s
        .slots
        .iter()
        .enumerate()
        .filter(|(_, slot)| slot.state == 1 && now - slot.since_ms > RESERVATION_TIMEOUT_MS)
        .map(|(i, slot)| (i, slot.generation))
        .collect();
    for (i, g) in stale {
        s.free_slot(i, g);
    }
}

/// Records that `db` wants a scheduler and cannot have one, for `why`.
pub fn note_waiting(db: u32, why: Missing, now: i64) {
    let mut s = SHARED.exclusive();
    if let Some(d) = s.database_mut(db) {
        if d.waiting_since_ms == 0 {
            d.waiting_since_ms = now;
        }
        d.missing = why as u8;
    }
}

/// The launcher's view of `pg_database`: adds new databases (Unknown), forgets dropped ones.
/// Returns how many databases did not fit.
pub fn sync_databases(oids: &[u32]) -> usize {
    let mut s = SHARED.exclusive();
    for d in s.databases.iter_mut() {
        if d.oid != 0 && !oids.contains(&d.oid) && d.scheduler_slot < 0 {
            *d = Database::EMPTY;
        }
    }
    oids.iter().filter(|oid| s.entry(**oid).is_none()).count()
}

/// At commit of a change to what `db` schedules: its scheduler runs at once (a resident one is
/// woken; otherwise the launcher starts one).
pub fn request_service(db: u32) {
    let scheduler = {
        let mut s = SHARED.exclusive();
        let Some(d) = s.entry(db) else {
            drop(s);
            wake_launcher();
            return;
        };
        if d.state() == DbState::Idle {
            d.state = DbState::Unknown as u8;
        }
        d.next_due_ms = 0;
        let slot = d.scheduler_slot;
        usize::try_from(slot)
            .ok()
            .and_then(|i| s.slots.get(i))
            .map(|slot| (slot.proc_addr, slot.pid))
    };
    if let Some((addr, pid)) = scheduler {
        set_latch(addr, pid);
    }
    wake_launcher();
}

/// Wakes every resident scheduler (so they see that another database waits, or a reload).
pub fn wake_schedulers() {
    let targets: Vec<(usize, i32)> = SHARED
        .share()
        .slots
        .iter()
        .filter(|s| s.running() && s.kind() == Some(Kind::Scheduler))
        .map(|s| (s.proc_addr, s.pid))
        .collect();
    for (addr, pid) in targets {
        set_latch(addr, pid);
    }
}

/// A scheduler starts a tick: a [`request_service`] from now on is seen by [`record_tick`].
pub fn begin_tick(db: u32) {
    if let Some(d) = SHARED.exclusive().database_mut(db) {
        d.next_due_ms = i64::MAX;
    }
}

/// A scheduler records the outcome of a tick: when it is wanted next (None: nothing is
/// scheduled), unless a request arrived during the tick, which keeps "at once".
pub fn record_tick(db: u32, next_due_ms: Option<i64>, queue_len: usize, now: i64) {
    if let Some(d) = SHARED.exclusive().database_mut(db) {
        d.record(next_due_ms, queue_len, now);
    }
}

/// Marks `db` idle (no extension there).
pub fn mark_idle(db: u32) {
    record_tick(db, None, 0, now_ms());
}

/// Keeps schedulers out of `db` for `ms` (database DDL needs it free of sessions).
pub fn pause(db: u32, ms: i64) {
    let mut s = SHARED.exclusive();
    if let Some(d) = s.database_mut(db) {
        d.paused_until_ms = now_ms() + ms;
    }
}

/// When `db`'s history was last pruned; records `now` if `every_ms` has passed since.
pub fn take_prune(db: u32, every_ms: i64, now: i64) -> bool {
    let mut s = SHARED.exclusive();
    match s.database_mut(db) {
        Some(d) if now - d.last_prune_ms >= every_ms => {
            d.last_prune_ms = now;
            true
        }
        _ => false,
    }
}

/// Refresh workers of `db` (reserved or running).
pub fn refresh_workers(db: u32) -> usize {
    SHARED.share().refresh_slots(db).count()
}

/// A refresh worker's batch (the stream tables it is to refresh, in order), once it has
/// claimed its slot.
pub fn batch(index: usize, generation: u32) -> Vec<i64> {
    let s = SHARED.share();
    match s.slots.get(index) {
        Some(slot) if slot.generation == generation && slot.running() => {
            slot.batch[..usize::from(slot.batch_len)].to_vec()
        }
        _ => Vec::new(),
    }
}

/// A refresh worker has finished the first `done` stream tables of its batch: they are no
/// longer held (a stream table reading one of them may be handed out).
pub fn batch_progress(index: usize, generation: u32, done: usize) {
    let mut s = SHARED.exclusive();
    if let Some(slot) = s.slots.get_mut(index) {
        if slot.generation == generation {
            slot.batch_done = u8::try_from(done).unwrap_or(u8::MAX).min(slot.batch_len);
        }
    }
}

/// The stream tables of `db` that refresh workers hold (reserved or running) and have not
/// finished.
pub fn refreshing(db: u32) -> std::collections::BTreeSet<i64> {
    SHARED
        .share()
        .refresh_slots(db)
        .flat_map(|s| s.batch[usize::from(s.batch_done)..usize::from(s.batch_len)].to_vec())
        .collect()
}

/// Whether a database other than `db` waits for a scheduler.
pub fn others_waiting(db: u32) -> bool {
    SHARED.share().others_waiting(db)
}

/// A copy of the whole state, for reporting.
pub fn snapshot() -> Shared {
    *SHARED.share()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_once_and_dropped_databases_forgotten() {
        let mut s = Shared::new();
        assert!(s.entry(5).is_some());
        assert!(s.entry(5).is_some());
        assert_eq!(s.databases.iter().filter(|d| d.oid == 5).count(), 1);
        assert!(s.database(5).is_some_and(|d| d.wants_scheduler(0)));
        assert!(s.database(6).is_none());
    }

    #[test]
    fn a_full_registry_refuses_new_entries() {
        let mut s = Shared::new();
        for oid in 1..=MAX_DATABASES as u32 {
            assert!(s.entry(oid).is_some());
        }
        assert!(s.entry(100_000).is_none());
        assert!(s.entry(1).is_some(), "an existing entry is still found");
    }

    #[test]
    fn a_stale_generation_does_not_free_a_reused_slot() {
        let mut s = Shared::new();
        s.slots[0] = Slot {
            state: 2,
            kind: Kind::Refresh as u8,
            generation: 7,
            ..Slot::FREE
        };
        s.free_slot(0, 6);
        assert!(s.slots[0].in_use());
        s.free_slot(0, 7);
        assert!(!s.slots[0].in_use());
        assert_eq!(
            s.slots[0].generation, 7,
            "the generation survives for the next reservation"
        );
    }

    #[test]
    fn freeing_a_scheduler_slot_detaches_its_database() {
        let mut s = Shared::new();
        if let Some(d) = s.entry(9) {
            d.scheduler_slot = 3;
        }
        s.slots[3] = Slot {
            state: 2,
            kind: Kind::Scheduler as u8,
            generation: 1,
            db_oid: 9,
            ..Slot::FREE
        };
        s.free_slot(3, 1);
        assert_eq!(s.database(9).map(|d| d.scheduler_slot), Some(-1));
    }

    #[test]
    fn a_new_entry_can_be_marked_idle_and_a_request_keeps_it_wanted() {
        let mut d = Database::unregistered(11);
        assert!(d.wants_scheduler(0), "a new database is looked at once");
        d.record(None, 0, 5);
        assert_eq!(
            d.state(),
            DbState::Idle,
            "a new database without stream tables goes idle"
        );
        assert!(!d.wants_scheduler(10));
        // A request for service (request_service) during a tick survives the tick's outcome.
        d.state = DbState::Unknown as u8;
        d.next_due_ms = 0;
        d.record(None, 0, 20);
        assert!(d.wants_scheduler(20));
        d.next_due_ms = i64::MAX; // begin_tick
        d.record(Some(1_000), 2, 30);
        assert_eq!(
            (d.state(), d.next_due_ms, d.queue_len),
            (DbState::Serving, 1_000, 2)
        );
        assert!(!d.wants_scheduler(999) && d.wants_scheduler(1_000));
    }

    #[test]
    fn idle_and_paused_databases_want_no_scheduler() {
        let mut d = Database {
            oid: 1,
            ..Database::EMPTY
        };
        assert!(d.wants_scheduler(10));
        d.paused_until_ms = 20;
        assert!(!d.wants_scheduler(10));
        d.paused_until_ms = 0;
        d.state = DbState::Idle as u8;
        assert!(!d.wants_scheduler(10));
        d.state = DbState::Serving as u8;
        d.next_due_ms = 11;
        assert!(!d.wants_scheduler(10));
        assert!(d.wants_scheduler(11));
    }
}
