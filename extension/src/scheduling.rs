//! What backends see of the scheduler: `pgtrickle.scheduler_status()` (every database the
//! launcher knows), the problem, if any, that keeps this database's stream tables from being
//! refreshed on schedule (`pgt_status()`'s `scheduler_problem`, and a WARNING from
//! `create_stream_table`), and the request for service at the commit of a change to what a
//! database schedules (a trigger on the catalog).

use pgrx::heap_tuple::PgHeapTuple;
use pgrx::prelude::*;
use pgrx::{register_xact_callback, AllocatedByPostgres, PgXactCallbackEvent};

use crate::config;
use crate::shared::{self, Database, DbState, Missing, Shared};

fn my_database() -> u32 {
    // SAFETY: set when the backend connected to its database; constant afterwards.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// At commit of the current transaction, asks the launcher to run this database's scheduler
/// now (the change it made, a new stream table or a new schedule, is visible then).
pub(crate) fn request_at_commit() {
    if !shared::available() {
        return;
    }
    let db = my_database();
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        shared::request_service(db)
    });
}

/// Row-level AFTER trigger on `pgtrickle.pgt_stream_tables` (INSERT, and UPDATE of schedule,
/// status or mode): whatever changed what this database schedules — a stream table created,
/// altered, resumed, rebuilt from NEEDS_REINIT, or a catalog restored — the database's
/// scheduler looks at it at commit, also when it was idle. Refreshes do not fire it (they
/// update other columns). Row-level, not statement-level: an `INSERT … RETURNING` run through
/// SPI with a row limit (as `create_stream_table` does) stops before the statement's end, and
/// PostgreSQL then never fires its statement-level AFTER triggers.
#[pg_trigger]
fn request_scheduler<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    request_at_commit();
    Ok(None)
}

extension_sql!(
    r#"
CREATE TRIGGER pgt_request_scheduler
    AFTER INSERT OR UPDATE OF schedule, status, refresh_mode, effective_mode
    ON pgtrickle.pgt_stream_tables
    FOR EACH ROW EXECUTE FUNCTION pgtrickle.request_scheduler();
"#,
    name = "request_scheduler_trigger",
    requires = ["catalog_tables", request_scheduler]
);

fn max_worker_processes() -> i32 {
    // SAFETY: a plain integer GUC of the server.
    unsafe { pg_sys::max_worker_processes }
}

/// Why `db`'s scheduler cannot run now, if something keeps it from doing so: it has waited
/// [`shared::REPORT_WAIT_MS`] or more for a worker. With `creating`, other databases waiting
/// that long count too (the new stream table's database may not have asked for one yet).
fn problem_in(s: &Shared, db: u32, now: i64, creating: bool) -> Option<String> {
    if !config::ENABLED.get() {
        return Some("pg_trickle.enabled is off".into());
    }
    if s.launcher_pid == 0 || !shared::launcher_alive() {
        return Some("the pg_trickle launcher is not running".into());
    }
    // A database not registered yet is added by the launcher within a second, or at the
    // commit that asks for service; only a full registry keeps it out.
    let d = match s.database(db) {
        Some(d) => *d,
        None if s.databases.iter().any(|d| d.oid == 0) => Database::unregistered(db),
        None => {
            return Some(format!(
                "this database is not registered: the launcher serves at most {} databases",
                shared::MAX_DATABASES
            ))
        }
    };
    if d.paused_until_ms > now {
        return Some("paused while database-level DDL runs".into());
    }
    // A database that has not asked for a scheduler yet (a stream table being created) is
    // told when others starve: it will too.
    let starving = |d: &Database| {
        d.waiting_since_ms != 0 && now - d.waiting_since_ms >= shared::REPORT_WAIT_MS
    };
    let starved = if starving(&d) {
        Some((d.missing(), now - d.waiting_since_ms))
    } else if creating && d.scheduler_slot < 0 {
        s.databases
            .iter()
            .find(|o| o.oid != 0 && starving(o))
            .map(|o| (o.missing(), 0))
    } else {
        None
    };
    if let Some((missing, waited)) = starved {
        let why = match missing {
            Missing::PoolFull => format!(
                "all {} workers of pg_trickle.max_workers are busy",
                config::MAX_WORKERS.get()
            ),
            Missing::NoWorkerProcess | Missing::None => format!(
                "PostgreSQL has no free background worker slot (max_worker_processes = {})",
                max_worker_processes()
            ),
        };
        return Some(format!("no scheduler for {} s: {why}", waited / 1000));
    }
    None
}

/// Why this database's stream tables are not being refreshed on schedule now, or NULL when
/// nothing stands in the way.
#[pg_extern(volatile, parallel_safe)]
fn scheduler_problem() -> Option<String> {
    if !shared::available() {
        return Some("pg_trickle is not in shared_preload_libraries".into());
    }
    problem_in(&shared::snapshot(), my_database(), shared::now_ms(), false)
}

/// Called by `create_stream_table` for a scheduled stream table: a WARNING when no
/// scheduler can serve this database now (the stream table is created all the same).
pub fn warn_if_unserved(name: &str) {
    if !shared::available() {
        return;
    }
    if let Some(p) = problem_in(&shared::snapshot(), my_database(), shared::now_ms(), true) {
        warning!("stream table {name} will not be refreshed on its schedule for now: {p}");
    }
}

fn timestamp(ms: i64) -> Option<TimestampWithTimeZone> {
    if ms <= 0 || ms == i64::MAX {
        return None;
    }
    // Unix epoch milliseconds to PostgreSQL's microseconds since 2000-01-01.
    let pg_epoch_ms = 946_684_800_000_i64;
    TimestampWithTimeZone::try_from((ms - pg_epoch_ms) * 1000).ok()
}

fn database_name(oid: u32) -> Option<String> {
    // SAFETY: a syscache lookup; returns NULL for a database that does not exist, else a
    // palloc'd NUL-terminated string.
    unsafe {
        let p = pg_sys::get_database_name(pg_sys::Oid::from(oid));
        if p.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

type StatusRow = (
    Option<String>,
    String,
    Option<i32>,
    i32,
    Option<TimestampWithTimeZone>,
    i64,
    Option<TimestampWithTimeZone>,
    i32,
    Option<TimestampWithTimeZone>,
    Option<String>,
);

/// One row per database the launcher knows: its state (`unknown`: not looked at yet,
/// `serving`: has scheduled stream tables, `idle`: nothing to schedule), its scheduler's pid,
/// its running refresh workers, the last tick, how many ticks it had since the server
/// started, when it is due next, how many stream tables
/// were due at the last tick, since when it has waited for a worker, and why it has none
/// when it should.
// The row type is spelled out for pgrx's SQL generation, which needs the column names here.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn scheduler_status() -> TableIterator<
    'static,
    (
        name!(database, Option<String>),
        name!(state, String),
        name!(scheduler_pid, Option<i32>),
        name!(refresh_workers, i32),
        name!(last_tick, Option<TimestampWithTimeZone>),
        name!(ticks, i64),
        name!(next_due, Option<TimestampWithTimeZone>),
        name!(queue_length, i32),
        name!(waiting_since, Option<TimestampWithTimeZone>),
        name!(problem, Option<String>),
    ),
> {
    if !shared::available() {
        return TableIterator::new(Vec::<StatusRow>::new());
    }
    let s = shared::snapshot();
    let now = shared::now_ms();
    let mut rows: Vec<StatusRow> = Vec::new();
    for d in s.databases.iter().filter(|d| d.oid != 0) {
        let Some(name) = database_name(d.oid) else {
            continue;
        };
        let pid = usize::try_from(d.scheduler_slot)
            .ok()
            .and_then(|i| s.slots.get(i))
            .filter(|slot| slot.running())
            .map(|slot| slot.pid);
        let refreshing = s.refresh_slots(d.oid).count();
        let state = match d.state() {
            DbState::Unknown => "unknown",
            DbState::Serving => "serving",
            DbState::Idle => "idle",
        };
        let problem = if d.state() == DbState::Idle {
            None
        } else {
            problem_in(&s, d.oid, now, false)
        };
        rows.push((
            Some(name),
            state.to_string(),
            pid,
            i32::try_from(refreshing).unwrap_or(i32::MAX),
            timestamp(d.last_tick_ms),
            d.ticks,
            timestamp(d.next_due_ms),
            d.queue_len,
            timestamp(d.waiting_since_ms),
            problem,
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    TableIterator::new(rows)
}
