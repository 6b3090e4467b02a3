//! Background workers (docs/SCHEDULING.md). The *launcher* (registered from
//! `shared_preload_libraries`) is the only permanent one. It keeps the registry of databases
//! in shared memory (shared.rs) in step with `pg_database` and starts a database's
//! *scheduler* when that database is due, into a slot of the pool of `pg_trickle.max_workers`.
//! A scheduler ticks (scheduler.rs), prunes the history, records when it is wanted next, and
//! stays resident while no other database waits for a slot; otherwise it leaves after its tick
//! and the databases take turns. With `pg_trickle.max_parallel_refreshes` above 1 it hands
//! due stream tables to *refresh workers* from the same pool, a stream table only after the
//! stream tables it reads. A database without the extension or without scheduled stream
//! tables is looked at once, then costs nothing until a change to what it schedules asks for
//! service at commit (the catalog trigger of scheduling.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;

use crate::scheduler;
use crate::shared::{self, Kind, Missing};
use crate::{config, txn};

/// Rows history pruning deletes per transaction.
pub const PRUNE_BATCH_ROWS: i64 = 10_000;
/// The `backend_type`s of the workers (pg_stat_activity).
pub(crate) const SCHEDULER_TYPE: &str = "pg_trickle scheduler";
pub(crate) const REFRESH_TYPE: &str = "pg_trickle refresh";
/// How often the launcher reads `pg_database`.
const LIST_EVERY: Duration = Duration::from_secs(1);
/// A cause of starvation warned about is warned about again after it has been gone this long.
const WARN_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// How long database DDL keeps schedulers out of its database.
pub(crate) const DDL_PAUSE_MS: i64 = 6_000;

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (`die`, postgres.c), the C symbol itself:
    /// pgrx's `pg_sys::die` is a Rust wrapper, which a signal handler must not be.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// Registers the launcher; called from `_PG_init` while preloading.
pub(crate) fn register_launcher() {
    register_static(
        "pg_trickle launcher",
        "pg_trickle_launcher_main",
        Duration::from_secs(5),
    );
}

/// Registers a permanent worker (started once recovery has finished, restarted after
/// `restart` when it fails) that runs `function` of this library; `_PG_init` only.
pub(crate) fn register_static(name: &str, function: &str, restart: Duration) {
    BackgroundWorkerBuilder::new(name)
        .set_type(name)
        .set_function(function)
        .set_library("pg_trickle")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(restart))
        .load();
}

/// Applies a SIGHUP in a worker's main loop, outside any transaction.
pub(crate) fn reload_config_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: the documented way for a background worker to apply a SIGHUP: re-read the
        // configuration file in its own main loop, outside any transaction.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

fn max_workers() -> usize {
    usize::try_from(config::MAX_WORKERS.get())
        .unwrap_or(1)
        .max(1)
}

/// What keeps databases from their schedulers (the launcher warns once per cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    PoolFull,
    NoWorkerProcess,
    RegistryFull,
}

/// The launcher's main loop.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some("postgres"), None);
    shared::register_launcher();
    // When each cause was last seen: warned about when it appears, again only after it has
    // been gone for WARN_AGAIN_AFTER.
    let mut seen: BTreeMap<Cause, Instant> = BTreeMap::new();
    let mut listed: Option<Instant> = None;
    let mut registry_full = false;
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(250))) {
        reload_config_if_asked();
        if listed.is_none_or(|t| t.elapsed() >= LIST_EVERY) {
            listed = Some(Instant::now());
            match txn::in_transaction(list_databases) {
                Ok(oids) => registry_full = shared::sync_databases(&oids) > 0,
                Err(e) => log!("pg_trickle launcher: cannot list databases: {e}"),
            }
        }
        let now = shared::now_ms();
        shared::sweep_reservations(now);
        if config::ENABLED.get() {
            start_due(now);
        }
        let mut causes = starving_causes(now);
        if registry_full {
            causes.insert(Cause::RegistryFull);
        }
        seen.retain(|_, at| at.elapsed() < WARN_AGAIN_AFTER);
        for cause in causes {
            if seen.insert(cause, Instant::now()).is_none() {
                warn_once(cause);
            }
        }
    }
}

/// Why databases have waited for a scheduler for [`shared::REPORT_WAIT_MS`] or longer (taking
/// turns for a moment is no cause).
fn starving_causes(now: i64) -> BTreeSet<Cause> {
    shared::snapshot()
        .databases
        .iter()
        .filter(|d| d.oid != 0 && d.waiting_since_ms != 0)
        .filter(|d| now - d.waiting_since_ms >= shared::REPORT_WAIT_MS)
        .map(|d| match d.missing() {
            Missing::PoolFull => Cause::PoolFull,
            Missing::NoWorkerProcess | Missing::None => Cause::NoWorkerProcess,
        })
        .collect()
}

fn warn_once(cause: Cause) {
    match cause {
        Cause::PoolFull => warning!(
            "pg_trickle: databases have waited {} s or more for one of the {} workers of \
             pg_trickle.max_workers; raise it (and max_worker_processes) or lengthen schedules",
            shared::REPORT_WAIT_MS / 1000,
            max_workers()
        ),
        Cause::NoWorkerProcess => warning!(
            "pg_trickle: PostgreSQL has no free background worker slot for a scheduler \
             (max_worker_processes = {}); databases wait until one is free",
            // SAFETY: a plain integer GUC of the server.
            unsafe { pg_sys::max_worker_processes }
        ),
        Cause::RegistryFull => warning!(
            "pg_trickle: more than {} databases; the ones beyond are not scheduled",
            shared::MAX_DATABASES
        ),
    }
}

/// Starts the schedulers of the databases that are due, longest waiting first, as far as
/// the pool and PostgreSQL allow; the others are marked waiting, with the reason.
fn start_due(now: i64) {
    let snapshot = shared::snapshot();
    let mut wanting: Vec<(i64, u32)> = snapshot
        .databases
        .iter()
        .filter(|d| d.wants_scheduler(now))
        .map(|d| {
            let since = if d.waiting_since_ms != 0 {
                d.waiting_since_ms
            } else {
                d.next_due_ms
            };
            (since, d.oid)
        })
        .collect();
    wanting.sort_unstable();
    let mut waiting = false;
    for (_, oid) in wanting {
        let Some((index, generation)) = shared::reserve(Kind::Scheduler, oid, &[], max_workers())
        else {
            shared::note_waiting(oid, Missing::PoolFull, now);
            waiting = true;
            continue;
        };
        let builder = pool_worker(
            SCHEDULER_TYPE,
            "pg_trickle_scheduler_main",
            index,
            generation,
            oid,
        );
        if !start_worker(&builder) {
            shared::release(index, generation);
            shared::note_waiting(oid, Missing::NoWorkerProcess, now);
            waiting = true;
        }
    }
    if waiting {
        // Resident schedulers leave after their tick when someone waits.
        shared::wake_schedulers();
    }
}

fn list_databases() -> Result<Vec<u32>, crate::error::PgTrickleError> {
    Ok(Spi::connect(|client| {
        client
            .select(
                "SELECT oid FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate \
                 ORDER BY oid",
                None,
                &[],
            )?
            .filter_map(|row| row.get::<pg_sys::Oid>(1).transpose())
            .map(|r| r.map(|o| o.to_u32()))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?)
}

/// A pool worker's start: its database and slot, from `bgw_extra` (`"slot generation
/// database"`); None when the slot is not its own any more (it must exit). Connects to the
/// database.
fn start_pool_worker() -> Option<(u32, usize, u32)> {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // SIGTERM (shutdown, database DDL, pg_terminate_backend) ends a pool worker the way it
    // ends a backend: at the next interrupt check, also in the middle of a refresh, whose
    // transaction then aborts (its RUNNING history row is marked FAILED by the next tick).
    // SAFETY: installs PostgreSQL's own handler for backends, before any work starts.
    unsafe { pg_sys::pqsignal(libc::SIGTERM, Some(postgres_die)) };
    let parts: Vec<&str> = BackgroundWorker::get_extra().split(' ').collect();
    let field = |i: usize| parts.get(i).and_then(|p| p.parse::<i64>().ok());
    let (Some(index), Some(generation), Some(db)) = (field(0), field(1), field(2)) else {
        log!("pg_trickle: a worker started with malformed arguments");
        return None;
    };
    let (index, generation, db) = (
        usize::try_from(index).ok()?,
        u32::try_from(generation).ok()?,
        u32::try_from(db).ok()?,
    );
    if !shared::claim(index, generation) {
        return None;
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    Some((db, index, generation))
}

/// A database's scheduler: ticks until nothing is scheduled, another database waits for its
/// slot, or it is asked to stop.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_scheduler_main(_arg: pg_sys::Datum) {
    let Some((db, _, _)) = start_pool_worker() else {
        return;
    };
    // What refresh workers held at the last tick (None: no tick yet, recovery due).
    let mut held: Option<BTreeSet<i64>> = None;
    loop {
        pg_sys::check_for_interrupts!();
        reload_config_if_asked();
        match scheduler::extension_version() {
            Ok(Some(v)) if v == env!("CARGO_PKG_VERSION") => {}
            Ok(Some(v)) => {
                // The library was upgraded and the database's catalog not yet: its stream tables
                // wait for ALTER EXTENSION pg_trickle UPDATE (whose script asks for service).
                log!(
                    "pg_trickle scheduler: database {db} has pg_trickle {v}, the library is {}: \
                     nothing is refreshed until ALTER EXTENSION pg_trickle UPDATE",
                    env!("CARGO_PKG_VERSION")
                );
                shared::mark_idle(db);
                break;
            }
            _ => {
                shared::mark_idle(db);
                break;
            }
        }
        let now = shared::now_ms();
        shared::begin_tick(db);
        let (next, due) = match tick(db, &mut held) {
            Ok(r) => r,
            Err(e) => {
                log!("pg_trickle scheduler: {e}");
                (Some(now), 0)
            }
        };
        // Notifications that waited for their coalescing window (subscriptions.rs).
        let next = match crate::subscriptions::deliver_due() {
            Ok(Some(at)) => Some(next.map_or(at, |n| n.min(at))),
            Ok(None) => next,
            Err(e) => {
                // Looked at again next tick (an idle database's scheduler must not leave them).
                log!("pg_trickle scheduler: delivering notifications: {e}");
                Some(now)
            }
        };
        let every = i64::from(config::HISTORY_PRUNE_INTERVAL_SECONDS.get().max(1)) * 1000;
        if shared::take_prune(db, every, now) {
            prune();
        }
        let interval = i64::from(config::SCHEDULER_INTERVAL_MS.get().max(10));
        // Ticks of one database are at least an interval apart, whoever runs them; a
        // database whose stream tables are due rarely is still served for its pruning.
        let next = next.map(|t| t.min(now + every).max(now + interval));
        shared::record_tick(db, next, due, now);
        if next.is_none() || shared::others_waiting(db) {
            break;
        }
        let wait = Duration::from_millis(u64::try_from(interval).unwrap_or(1000));
        if !BackgroundWorker::wait_latch(Some(wait)) {
            break; // the postmaster died
        }
    }
}

/// One tick: refreshes what is due (upstream first); returns when the database is next due
/// (None: nothing is scheduled) and how many stream tables were due.
///
/// A due stream table waits when it, or a stream table it reads, is held by a refresh
/// worker or waits itself: a stream table always refreshes after the ones it reads, and never
/// twice at once. The rest run in this process, in order, when `max_parallel_refreshes` is 1
/// or only one is due. Otherwise they are *ready*: dealt round-robin into batches of at most
/// [`shared::BATCH`], one per refresh worker started while fewer than that many run and the
/// pool has a slot (a worker per refresh would spend more on starting than on refreshing).
/// When no worker can be had and none runs, the scheduler refreshes them itself, so a tick
/// always progresses; ready ones left over wait for the next tick. A worker's exit sets this
/// scheduler's latch (`bgw_notify_pid`), and the next tick hands out what it unblocked: a
/// slow stream table holds one worker, not the tick.
fn tick(
    db: u32,
    held: &mut Option<BTreeSet<i64>>,
) -> Result<(Option<i64>, usize), crate::error::PgTrickleError> {
    let mut busy = shared::refreshing(db);
    // A RUNNING history row can be orphaned only by a process that stopped: a scheduler
    // before this one (recovery at the first tick) or a refresh worker since the last tick
    // (what it held is not held any more). Otherwise there is nothing to look for.
    let released = held
        .as_ref()
        .is_none_or(|before| before.iter().any(|id| !busy.contains(id)));
    if released {
        match scheduler::recover_interrupted(&busy) {
            Ok(0) => {}
            Ok(n) => log!("pg_trickle scheduler: marked {n} interrupted refreshes FAILED"),
            Err(e) => log!("pg_trickle scheduler: recovery failed: {e}"),
        }
    }
    *held = Some(busy.clone());
    // Shadow builds that can no longer move on are rolled back (shadow.rs).
    if let Err(e) = crate::shadow::supervise() {
        log!("pg_trickle scheduler: looking at shadow builds: {e}");
    }
    let plan = scheduler::plan()?;
    if !config::ENABLED.get() || plan.due.is_empty() {
        return Ok((plan.next_due_ms, 0));
    }
    let parallel = usize::try_from(config::MAX_PARALLEL_REFRESHES.get())
        .unwrap_or(1)
        .max(1);
    let use_workers = parallel > 1 && plan.due.len() > 1;
    let mut ready = Vec::new();
    for c in &plan.due {
        pg_sys::check_for_interrupts!();
        let waits = busy.contains(&c.id) || c.upstream.iter().any(|u| busy.contains(u));
        if waits || use_workers {
            busy.insert(c.id);
            if !waits {
                ready.push(c.id);
            }
            continue;
        }
        scheduler::run_due(c.id)?;
    }
    if !ready.is_empty() {
        let running = shared::refresh_workers(db);
        let workers = parallel.saturating_sub(running).min(ready.len());
        let mut started = 0;
        for batch in deal(&ready, workers) {
            if !start_refresh_worker(db, &batch) {
                break;
            }
            started += 1;
        }
        if started == 0 && running == 0 {
            // Independent of each other (none reads another: it would have waited).
            for id in ready {
                pg_sys::check_for_interrupts!();
                scheduler::run_due(id)?;
            }
        }
    }
    // Also what was handed out just now (and what waits: looking once too often is cheap).
    *held = Some(busy);
    // The refreshes moved their stream tables' next due times.
    Ok((scheduler::plan()?.next_due_ms, plan.due.len()))
}

/// Deals `ready` round-robin into `workers` batches of at most [`shared::BATCH`] (what does
/// not fit waits for the next tick), so that neighbours in dependency order, often of one
/// size, go to different workers.
fn deal(ready: &[i64], workers: usize) -> Vec<Vec<i64>> {
    (0..workers.min(ready.len()))
        .map(|w| {
            ready
                .iter()
                .skip(w)
                .step_by(workers)
                .take(shared::BATCH)
                .copied()
                .collect()
        })
        .collect()
}

/// The registration of a pool worker of type `kind` running `function` in database `db`,
/// in slot `index` of `generation` (what [`start_pool_worker`] reads back); never restarted.
fn pool_worker(
    kind: &str,
    function: &str,
    index: usize,
    generation: u32,
    db: u32,
) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new(&format!("{kind} {db}"))
        .set_type(kind)
        .set_function(function)
        .set_library("pg_trickle")
        .enable_spi_access()
        .set_extra(&format!("{index} {generation} {db}"))
        .set_restart_time(None)
}

/// Starts a background worker from `builder` without keeping a handle (none is needed: the
/// pool slot tracks the worker, and `bgw_notify_pid` reports its exit). False when
/// PostgreSQL has no free background worker slot.
fn start_worker(builder: &BackgroundWorkerBuilder) -> bool {
    let mut bgw: pg_sys::BackgroundWorker = builder.into();
    // SAFETY: `bgw` is a complete registration; a NULL handle asks PostgreSQL not to allocate
    // one (RegisterDynamicBackgroundWorker allows it).
    unsafe { pg_sys::RegisterDynamicBackgroundWorker(&mut bgw, std::ptr::null_mut()) }
}

/// Starts a refresh worker for the stream tables `batch` of `db`, if the pool and
/// PostgreSQL allow.
fn start_refresh_worker(db: u32, batch: &[i64]) -> bool {
    let Some((index, generation)) = shared::reserve(Kind::Refresh, db, batch, max_workers()) else {
        return false;
    };
    // SAFETY: set once at process start.
    let me = unsafe { pg_sys::MyProcPid };
    let builder = pool_worker(
        REFRESH_TYPE,
        "pg_trickle_refresh_main",
        index,
        generation,
        db,
    )
    .set_notify_pid(me);
    if start_worker(&builder) {
        return true;
    }
    shared::release(index, generation);
    false
}

/// A refresh worker: refreshes the stream tables of its batch in order, as the scheduler
/// would, and exits.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_refresh_main(_arg: pg_sys::Datum) {
    let Some((_, index, generation)) = start_pool_worker() else {
        return;
    };
    for (done, id) in shared::batch(index, generation).into_iter().enumerate() {
        pg_sys::check_for_interrupts!();
        if let Err(e) = scheduler::run_due(id) {
            log!("pg_trickle refresh worker: {e}");
        }
        // Its downstream may be handed out from now on.
        shared::batch_progress(index, generation, done + 1);
    }
}

/// Deletes expired history in batches of `PRUNE_BATCH_ROWS`, one transaction each (a
/// SIGTERM ends it between or inside batches); logs what it did.
fn prune() {
    let days = config::HISTORY_RETENTION_DAYS.get();
    let (mut total, mut batches) = (0i64, 0u32);
    // Bounded: a pass deletes at most 10,000 batches (100M rows) before yielding.
    for _ in 0..10_000 {
        pg_sys::check_for_interrupts!();
        let deleted = txn::in_transaction(|| {
            Ok(Spi::get_one::<i64>(&format!(
                "WITH gone AS (DELETE FROM pgtrickle.pgt_refresh_history WHERE refresh_id IN \
                   (SELECT refresh_id FROM pgtrickle.pgt_refresh_history \
                     WHERE start_time < now() - make_interval(days => {days}) \
                     ORDER BY start_time LIMIT {PRUNE_BATCH_ROWS}) RETURNING 1) \
                 SELECT count(*) FROM gone"
            ))?
            .unwrap_or(0))
        });
        match deleted {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                batches += 1;
                if n < PRUNE_BATCH_ROWS {
                    break;
                }
            }
            Err(e) => {
                log!("pg_trickle history pruning: {e}");
                break;
            }
        }
    }
    if total > 0 {
        log!("pg_trickle history pruning: deleted {total} rows in {batches} batches");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_stream_tables_are_dealt_round_robin_in_bounded_batches() {
        assert_eq!(deal(&[1, 2, 3, 4, 5], 2), vec![vec![1, 3, 5], vec![2, 4]]);
        assert_eq!(deal(&[7], 3), vec![vec![7]], "no empty batch");
        assert!(deal(&[1, 2], 0).is_empty());
        let many: Vec<i64> = (0..100).collect();
        let batches = deal(&many, 2);
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|b| b.len() == shared::BATCH));
        let mut dealt: Vec<i64> = batches.concat();
        dealt.sort_unstable();
        dealt.dedup();
        assert_eq!(dealt.len(), 2 * shared::BATCH, "nothing dealt twice");
    }
}
