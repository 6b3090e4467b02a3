//! One scheduler tick in one database: find the stream tables that are due, refresh them in
//! dependency order (upstream first, so a downstream stream table refreshed in the same tick
//! sees what its upstream just applied), each in its own transaction, and handle failures:
//! retryable ones (by SQLSTATE class) back off exponentially until
//! `pg_trickle.max_consecutive_errors`, permanent ones put the stream table in ERROR at once.

use std::collections::{BTreeMap, BTreeSet};

use engine::render::quote_literal;
use pgrx::prelude::*;

use crate::error::{classify_sqlstate, required, PgTrickleError, Retry};
use crate::schedule::{self, Schedule};
use crate::{cdc, config, refresh, stream_table, txn};

/// Longest backoff between retries of a failing stream table.
const BACKOFF_MAX_SECONDS: i64 = 300;

/// A stream table the scheduler may refresh this tick.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    schedule: String,
    /// Stream tables this one reads.
    pub upstream: Vec<i64>,
    /// Its last refresh (or its creation), milliseconds since the epoch.
    since: i64,
    /// When its backoff ends, milliseconds since the epoch (a failing stream table).
    retry_at: Option<i64>,
    /// A shadow build's shadow (shadow.rs): due every `pg_trickle.shadow_refresh_throttle_ms`
    /// whatever its schedule.
    shadow: bool,
}

/// The stream tables whose schedule says "now" (upstream first), and when the next one will
/// be due (None: nothing is scheduled in this database).
pub struct Plan {
    pub due: Vec<Candidate>,
    pub next_due_ms: Option<i64>,
}

/// Marks history rows left RUNNING by a refresh that is not running any more (the server
/// stopped, or its worker was killed or terminated) as FAILED; `held` are the stream tables
/// refresh workers of this database hold now. Only scheduled refreshes write RUNNING rows,
/// and the caller, this database's one scheduler, is not refreshing: every other RUNNING row
/// is an orphan.
pub fn recover_interrupted(held: &std::collections::BTreeSet<i64>) -> Result<u64, PgTrickleError> {
    let held: Vec<String> = held.iter().map(i64::to_string).collect();
    txn::in_transaction(|| {
        let n = Spi::get_one::<i64>(&format!(
            "WITH f AS (UPDATE pgtrickle.pgt_refresh_history SET status = 'FAILED', \
             end_time = clock_timestamp(), error_message = \
             'interrupted: the server stopped or the refresh was killed' \
             WHERE status = 'RUNNING' AND pgt_id <> ALL ('{{{}}}'::bigint[]) RETURNING 1) \
             SELECT count(*) FROM f",
            held.join(",")
        ))?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    })
}

/// The version of the extension installed in this database (None: not installed).
pub fn extension_version() -> Result<Option<String>, PgTrickleError> {
    txn::in_transaction(|| {
        Ok(Spi::get_one::<String>(
            "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_trickle')",
        )?)
    })
}

/// Reads the scheduled stream tables and says which are due now (one catalog query).
pub fn plan() -> Result<Plan, PgTrickleError> {
    txn::in_transaction(|| {
        let now = Spi::get_one::<i64>("SELECT floor(extract(epoch FROM now()) * 1000)::int8")?
            .ok_or_else(|| PgTrickleError::Internal("now() returned NULL".into()))?;
        let mut next: Option<i64> = None;
        let mut due = Vec::new();
        for c in load_candidates()? {
            let (is_due, at) = due_at(&c, now);
            next = Some(next.map_or(at, |n| n.min(at)));
            if is_due {
                due.push(c);
            }
        }
        let due = order(&due).into_iter().cloned().collect();
        Ok(Plan {
            due,
            next_due_ms: next,
        })
    })
}

/// Whether `c` is due at `now` (milliseconds since the epoch) by its schedule and backoff,
/// and when it is due (next), in milliseconds.
fn due_at(c: &Candidate, now: i64) -> (bool, i64) {
    if let Some(r) = c.retry_at.filter(|r| *r > now) {
        return (false, r);
    }
    if c.shadow {
        let throttle = i64::from(config::SHADOW_REFRESH_THROTTLE_MS.get().max(0));
        let at = c.since.saturating_add(throttle);
        return (now >= at, at);
    }
    let at = match schedule::parse(&c.schedule) {
        Ok(Schedule::Every { seconds }) => c.since.saturating_add(
            i64::try_from(seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        ),
        Ok(Schedule::Calculated) => c
            .since
            .saturating_add(i64::from(config::DEFAULT_SCHEDULE_SECONDS.get()) * 1000),
        // Cron fires on whole seconds; beyond the look-ahead horizon: ask again in a day.
        Ok(Schedule::Cron(cron)) => cron
            .next_fire(c.since.div_euclid(1000))
            .map_or(now + 86_400_000, |s| s.saturating_mul(1000)),
        // Refused at create/alter time; a hand-edited catalog row is never refreshed.
        Err(_) => return (false, i64::MAX),
    };
    (now >= at, at)
}

/// Refreshes one stream table its schedule calls due, in this process: decides whether its
/// sources changed, writes the RUNNING history row, refreshes, records a failure. Errors of
/// the refresh are recorded, not returned; an error here means the catalog could not be
/// read or written.
pub fn run_due(id: i64) -> Result<(), PgTrickleError> {
    let (due, shadow) = txn::in_transaction(|| is_due(id))?;
    match due {
        Due::No => {}
        Due::NothingChanged => txn::in_transaction(|| note_unchanged(id))?,
        Due::Yes => refresh_due(id)?,
    }
    // A shadow build moves on after each run of its shadow (a failure included).
    if shadow && !matches!(due, Due::No) {
        // Its errors are logged, not returned: the stream tables after it in this tick go on.
        if let Err(e) = crate::shadow::after_run(id) {
            log!("pg_trickle scheduler: shadow build of stream table {id}: {e}");
        }
    }
    Ok(())
}

/// Refreshes a due stream table with a RUNNING history row, recording a failure.
fn refresh_due(id: i64) -> Result<(), PgTrickleError> {
    let history = txn::in_transaction(|| start_history(id))?;
    let result = txn::in_transaction(|| {
        let timeout = config::REFRESH_LOCK_TIMEOUT_MS.get();
        Spi::run(&format!("SET LOCAL lock_timeout = {timeout}"))?;
        match stream_table::find_by_id(id, true)? {
            Some(st) => refresh::refresh(&st, Some(history)).map(|_| ()),
            None => Ok(()),
        }
    });
    if let Err(e) = result {
        txn::in_transaction(|| record_failure(id, history, &e))?;
    }
    Ok(())
}

fn load_candidates() -> Result<Vec<Candidate>, PgTrickleError> {
    let sql = "SELECT s.pgt_id, s.schedule, \
                 coalesce(array_agg(u.pgt_id) FILTER (WHERE u.pgt_id IS NOT NULL), '{}'), \
                 floor(extract(epoch FROM coalesce(s.last_refresh_at, s.created_at)) * 1000)::int8, \
                 ceil(extract(epoch FROM s.next_retry_at) * 1000)::int8, \
                 s.shadow_of IS NOT NULL \
               FROM pgtrickle.pgt_stream_tables s \
               LEFT JOIN pgtrickle.pgt_dependencies d ON d.pgt_id = s.pgt_id \
               LEFT JOIN pgtrickle.pgt_stream_tables u ON u.pgt_relid = d.source_relid \
               WHERE s.status = 'ACTIVE' AND s.effective_mode <> 'IMMEDIATE' \
               GROUP BY s.pgt_id ORDER BY s.pgt_id";
    Spi::connect(|client| {
        client
            .select(sql, None, &[])?
            .map(|row| {
                Ok(Candidate {
                    id: required(row.get::<i64>(1)?, "pgt_stream_tables.pgt_id")?,
                    schedule: required(row.get::<String>(2)?, "pgt_stream_tables.schedule")?,
                    // array_agg over no upstream stream table is NULL: none.
                    upstream: row.get::<Vec<i64>>(3)?.unwrap_or_default(),
                    since: required(row.get::<i64>(4)?, "pgt_stream_tables.created_at")?,
                    retry_at: row.get::<i64>(5)?,
                    shadow: required(row.get::<bool>(6)?, "shadow_of IS NOT NULL")?,
                })
            })
            .collect::<Result<Vec<_>, PgTrickleError>>()
    })
}

/// Topological order (upstream first; ties by id). Stream tables whose upstream is not a
/// candidate this tick are free; a cycle cannot be created, but would be ordered by id.
fn order(candidates: &[Candidate]) -> Vec<&Candidate> {
    let ids: BTreeSet<i64> = candidates.iter().map(|c| c.id).collect();
    let mut pending: BTreeMap<i64, usize> = BTreeMap::new();
    for c in candidates {
        let n = c
            .upstream
            .iter()
            .filter(|u| ids.contains(u) && **u != c.id)
            .count();
        pending.insert(c.id, n);
    }
    let mut out: Vec<&Candidate> = Vec::with_capacity(candidates.len());
    let mut done: BTreeSet<i64> = BTreeSet::new();
    while out.len() < candidates.len() {
        let next = candidates
            .iter()
            .find(|c| !done.contains(&c.id) && pending.get(&c.id).copied().unwrap_or(0) == 0)
            .or_else(|| candidates.iter().find(|c| !done.contains(&c.id)));
        let Some(next) = next else { break };
        done.insert(next.id);
        out.push(next);
        for c in candidates.iter().filter(|c| c.upstream.contains(&next.id)) {
            if let Some(p) = pending.get_mut(&c.id) {
                *p = p.saturating_sub(1);
            }
        }
    }
    out
}

/// Whether a candidate is to be refreshed now.
#[derive(Clone, Copy)]
enum Due {
    No,
    Yes,
    /// Its schedule says now, but none of its sources changed since its last refresh.
    NothingChanged,
}

/// Whether a stream table its schedule calls due is to be refreshed now: always when it
/// needs a FULL refresh, or is a FULL stream table on a duration or cron schedule (it may read
/// what capture cannot see: views, volatile functions); otherwise only when a source changed.
/// Also whether it is a shadow build's shadow.
fn is_due(id: i64) -> Result<(Due, bool), PgTrickleError> {
    let Some(st) = stream_table::find_by_id(id, false)? else {
        return Ok((Due::No, false));
    };
    let shadow = st.shadow_of.is_some();
    if st.status != stream_table::Status::Active {
        return Ok((Due::No, shadow));
    }
    if !st.is_populated || st.needs_full_reason.is_some() || st.frontier.is_none() {
        return Ok((Due::Yes, shadow));
    }
    let calculated = Spi::get_one::<bool>(&format!(
        "SELECT lower(btrim(schedule)) = 'calculated' FROM pgtrickle.pgt_stream_tables \
         WHERE pgt_id = {id}"
    ))?
    .unwrap_or(false);
    let always = st.effective_mode == crate::stream_table::Mode::Full && !calculated;
    if always || has_pending_changes(&st)? {
        Ok((Due::Yes, shadow))
    } else {
        Ok((Due::NothingChanged, shadow))
    }
}

/// A due stream table without changes is fresh as of now: no refresh, no history row.
fn note_unchanged(id: i64) -> Result<(), PgTrickleError> {
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = now() WHERE pgt_id = {id}"
    ))?;
    Ok(())
}

/// Whether any source buffer holds rows the stream table has not consumed.
fn has_pending_changes(st: &stream_table::StreamTable) -> Result<bool, PgTrickleError> {
    let Some(old) = &st.frontier else {
        return Ok(true);
    };
    let buffers: Vec<String> = stream_table::sources(st.id)?
        .into_iter()
        .map(cdc::buffer_name)
        .collect();
    refresh::window_has_rows(&buffers, old)
}

fn start_history(id: i64) -> Result<i64, PgTrickleError> {
    Spi::get_one::<i64>(&format!(
        "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, status) VALUES ({id}, 'RUNNING') \
         RETURNING refresh_id"
    ))?
    .ok_or_else(|| PgTrickleError::Internal("history insert returned no id".into()))
}

/// Records a failed scheduled refresh: the history row, the error on the stream table, the
/// backoff, and status ERROR for permanent errors or too many in a row.
fn record_failure(id: i64, history: i64, e: &PgTrickleError) -> Result<(), PgTrickleError> {
    let sqlstate = e.sqlstate();
    let message = e.to_string();
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_refresh_history SET status = 'FAILED', end_time = clock_timestamp(), \
         error_sqlstate = {}, error_message = {} WHERE refresh_id = {history}",
        quote_literal(&sqlstate),
        quote_literal(&message)
    ))?;
    let permanent = classify_sqlstate(&sqlstate) == Retry::Permanent;
    let max = config::MAX_CONSECUTIVE_ERRORS.get();
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_stream_tables SET consecutive_errors = consecutive_errors + 1, \
         last_error = {msg}, \
         next_retry_at = now() + make_interval(secs => least({BACKOFF_MAX_SECONDS}, \
           power(2, least(consecutive_errors, 20))::int8)), \
         status = CASE WHEN {permanent} OR consecutive_errors + 1 >= {max} THEN 'ERROR' \
                  ELSE status END \
         WHERE pgt_id = {id}",
        msg = quote_literal(&format!("{sqlstate}: {message}"))
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i64, upstream: &[i64]) -> Candidate {
        Candidate {
            id,
            schedule: "1s".into(),
            upstream: upstream.to_vec(),
            since: 0,
            retry_at: None,
            shadow: false,
        }
    }

    fn at(schedule: &str, since: i64, retry_at: Option<i64>) -> Candidate {
        Candidate {
            schedule: schedule.into(),
            since,
            retry_at,
            ..c(1, &[])
        }
    }

    #[test]
    fn due_times_follow_the_schedule_and_the_backoff() {
        // Milliseconds: a '30s' stream table refreshed at 100.250 s is due at 130.250 s.
        assert_eq!(due_at(&at("30s", 100_250, None), 130_249), (false, 130_250));
        assert_eq!(due_at(&at("30s", 100_250, None), 130_250), (true, 130_250));
        // Backing off: not before the retry time, whatever the schedule says.
        assert_eq!(
            due_at(&at("1s", 100_000, Some(200_500)), 200_499),
            (false, 200_500)
        );
        assert_eq!(
            due_at(&at("1s", 100_000, Some(200_500)), 200_500),
            (true, 101_000)
        );
        // Cron: at its next firing after the last refresh (2026-11-16 00:00 UTC + 5 min).
        let t0 = 20_773 * 86_400_000;
        assert_eq!(
            due_at(&at("*/5 * * * *", t0 + 400, None), t0 + 10_000),
            (false, t0 + 300_000)
        );
        assert_eq!(
            due_at(&at("*/5 * * * *", t0, None), t0 + 300_000),
            (true, t0 + 300_000)
        );
        assert!(!due_at(&at("not a schedule", 0, None), i64::MAX / 2).0);
    }

    #[test]
    fn upstream_stream_tables_come_first() {
        let cs = vec![c(1, &[3]), c(2, &[]), c(3, &[2]), c(4, &[1, 2])];
        let ids: Vec<i64> = order(&cs).iter().map(|c| c.id).collect();
        assert_eq!(ids, [2, 3, 1, 4]);
    }

    #[test]
    fn upstream_outside_this_tick_does_not_block() {
        let cs = vec![c(5, &[99]), c(6, &[5])];
        let ids: Vec<i64> = order(&cs).iter().map(|c| c.id).collect();
        assert_eq!(ids, [5, 6]);
    }
}
