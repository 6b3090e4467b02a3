//! Background workers. The *launcher* (registered from `shared_preload_libraries`) watches the
//! list of databases and starts, for each, a *scheduler* (refreshes due stream tables every
//! `pg_trickle.scheduler_interval_ms`) and a *history pruner* (deletes refresh history older
//! than `pg_trickle.history_retention_days`, in batches). Both exit at once in a database
//! without the extension; the launcher tries again after a pause. Each exits at once when
//! another worker of its kind is connected to its database, so that a relaunch never runs two
//! of a kind in one database. (Not an advisory lock: any role may take those and so keep the
//! scheduler out of a database.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;

use crate::{config, scheduler, txn};

/// How long the launcher waits before starting a worker again in a database where one
/// stopped (for example because the extension is not installed there).
const RELAUNCH_PAUSE: Duration = Duration::from_secs(5);
/// Rows the pruner deletes per transaction (plan A10).
pub const PRUNE_BATCH_ROWS: i64 = 10_000;
/// The `backend_type`s of the per-database workers (pg_stat_activity).
pub(crate) const SCHEDULER_TYPE: &str = "pg_trickle scheduler";
pub(crate) const PRUNER_TYPE: &str = "pg_trickle pruner";

/// Registers the launcher; called from `_PG_init` while preloading.
pub(crate) fn register_launcher() {
    BackgroundWorkerBuilder::new("pg_trickle launcher")
        .set_type("pg_trickle launcher")
        .set_function("pg_trickle_launcher_main")
        .set_library("pg_trickle")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn reload_config_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: the documented way for a background worker to apply a SIGHUP: re-read the
        // configuration file in its own main loop, outside any transaction.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

/// The launcher's main loop.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some("postgres"), None);
    let mut running: BTreeMap<u32, Vec<DynamicBackgroundWorker>> = BTreeMap::new();
    let mut paused: BTreeMap<u32, Instant> = BTreeMap::new();
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        reload_config_if_asked();
        running.retain(|db, workers| {
            let alive = workers.iter().all(|w| w.pid().is_ok());
            if !alive {
                paused.insert(*db, Instant::now());
            }
            alive
        });
        let databases = match txn::in_transaction(list_databases) {
            Ok(d) => d,
            Err(e) => {
                log!("pg_trickle launcher: cannot list databases: {e}");
                continue;
            }
        };
        for db in databases {
            let waiting = paused
                .get(&db)
                .is_some_and(|t| t.elapsed() < RELAUNCH_PAUSE);
            if running.contains_key(&db) || waiting {
                continue;
            }
            let mut workers = Vec::new();
            for (kind, function) in [
                (SCHEDULER_TYPE, "pg_trickle_scheduler_main"),
                (PRUNER_TYPE, "pg_trickle_pruner_main"),
            ] {
                let started = BackgroundWorkerBuilder::new(&format!("{kind} {db}"))
                    .set_type(kind)
                    .set_function(function)
                    .set_library("pg_trickle")
                    .enable_spi_access()
                    .set_extra(&db.to_string())
                    .set_restart_time(None)
                    .load_dynamic();
                match started {
                    Ok(w) => workers.push(w),
                    Err(_) => log!("pg_trickle launcher: no worker slot for database {db}"),
                }
            }
            if workers.len() == 2 {
                running.insert(db, workers);
            } else {
                for w in workers {
                    w.terminate();
                }
                paused.insert(db, Instant::now());
            }
        }
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

/// Connects a per-database worker; false when it should exit (no extension here, or another
/// worker of its kind is connected: two starting at once both exit, and the launcher starts
/// one again after its pause).
fn start_database_worker(kind: &str) -> bool {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db: u32 = BackgroundWorker::get_extra().parse().unwrap_or(0);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    if !matches!(scheduler::extension_installed(), Ok(true)) {
        return false;
    }
    matches!(
        txn::in_transaction(|| Ok(Spi::get_one::<bool>(&format!(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity \
             WHERE datid = {db} AND backend_type = '{kind}' AND pid <> pg_catalog.pg_backend_pid())"
        ))?)),
        Ok(Some(true))
    )
}

/// A database's scheduler: recovers history rows left RUNNING, then ticks.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_scheduler_main(_arg: pg_sys::Datum) {
    if !start_database_worker(SCHEDULER_TYPE) {
        return;
    }
    match scheduler::recover_interrupted() {
        Ok(0) => {}
        Ok(n) => log!("pg_trickle scheduler: marked {n} interrupted refreshes FAILED"),
        Err(e) => log!("pg_trickle scheduler: recovery failed: {e}"),
    }
    loop {
        let interval = Duration::from_millis(config::SCHEDULER_INTERVAL_MS.get().max(10) as u64);
        if !BackgroundWorker::wait_latch(Some(interval)) {
            break;
        }
        reload_config_if_asked();
        if !matches!(scheduler::extension_installed(), Ok(true)) {
            break;
        }
        if let Err(e) = scheduler::tick() {
            log!("pg_trickle scheduler: {e}");
        }
    }
}

/// A database's history pruner (plan A10).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_pruner_main(_arg: pg_sys::Datum) {
    if !start_database_worker(PRUNER_TYPE) {
        return;
    }
    let mut last = Instant::now();
    loop {
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
        reload_config_if_asked();
        let every = Duration::from_secs(config::HISTORY_PRUNE_INTERVAL_SECONDS.get().max(1) as u64);
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        if !matches!(scheduler::extension_installed(), Ok(true)) {
            break;
        }
        prune();
    }
}

/// Deletes expired history in batches of `PRUNE_BATCH_ROWS`, one transaction each, stopping
/// early on shutdown; logs what it did.
fn prune() {
    let days = config::HISTORY_RETENTION_DAYS.get();
    let (mut total, mut batches) = (0i64, 0u32);
    // Bounded: a pass deletes at most 10,000 batches (100M rows) before yielding.
    for _ in 0..10_000 {
        if BackgroundWorker::sigterm_received() {
            break;
        }
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
                log!("pg_trickle history pruner: {e}");
                break;
            }
        }
    }
    if total > 0 {
        log!("pg_trickle history pruner: deleted {total} rows in {batches} batches");
    }
}
