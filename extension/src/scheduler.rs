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
struct Candidate {
    id: i64,
    schedule: String,
    /// Stream tables this one reads.
    upstream: Vec<i64>,
}

/// Marks history rows a crash or shutdown left RUNNING as FAILED (run once at start).
pub fn recover_interrupted() -> Result<u64, PgTrickleError> {
    txn::in_transaction(|| {
        let n = Spi::get_one::<i64>(
            "WITH f AS (UPDATE pgtrickle.pgt_refresh_history SET status = 'FAILED', \
             end_time = clock_timestamp(), error_message = \
             'interrupted: the server stopped or the refresh was killed' \
             WHERE status = 'RUNNING' RETURNING 1) SELECT count(*) FROM f",
        )?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    })
}

/// Whether the extension is (still) installed in this database.
pub fn extension_installed() -> Result<bool, PgTrickleError> {
    txn::in_transaction(|| {
        Ok(Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_trickle')",
        )?
        .unwrap_or(false))
    })
}

/// Runs one tick. Errors of single refreshes are recorded, not returned; an error here means
/// the catalog itself could not be read.
pub fn tick() -> Result<(), PgTrickleError> {
    if !config::ENABLED.get() {
        return Ok(());
    }
    let candidates = txn::in_transaction(load_candidates)?;
    for c in order(&candidates) {
        match txn::in_transaction(|| is_due(c))? {
            Due::No => continue,
            Due::NothingChanged => {
                txn::in_transaction(|| note_unchanged(c.id))?;
                continue;
            }
            Due::Yes => {}
        }
        let history = txn::in_transaction(|| start_history(c.id))?;
        let result = txn::in_transaction(|| {
            let timeout = config::REFRESH_LOCK_TIMEOUT_MS.get();
            Spi::run(&format!("SET LOCAL lock_timeout = {timeout}"))?;
            match stream_table::find_by_id(c.id, true)? {
                Some(st) => refresh::refresh(&st, Some(history)).map(|_| ()),
                None => Ok(()),
            }
        });
        if let Err(e) = result {
            txn::in_transaction(|| record_failure(c.id, history, &e))?;
        }
    }
    Ok(())
}

fn load_candidates() -> Result<Vec<Candidate>, PgTrickleError> {
    let sql = "SELECT s.pgt_id, s.schedule, \
                 coalesce(array_agg(u.pgt_id) FILTER (WHERE u.pgt_id IS NOT NULL), '{}') \
               FROM pgtrickle.pgt_stream_tables s \
               LEFT JOIN pgtrickle.pgt_dependencies d ON d.pgt_id = s.pgt_id \
               LEFT JOIN pgtrickle.pgt_stream_tables u ON u.pgt_relid = d.source_relid \
               WHERE s.status = 'ACTIVE' AND s.effective_mode <> 'IMMEDIATE' \
                 AND (s.next_retry_at IS NULL OR s.next_retry_at <= now()) \
               GROUP BY s.pgt_id, s.schedule ORDER BY s.pgt_id";
    Spi::connect(|client| {
        client
            .select(sql, None, &[])?
            .map(|row| {
                Ok(Candidate {
                    id: required(row.get::<i64>(1)?, "pgt_stream_tables.pgt_id")?,
                    schedule: required(row.get::<String>(2)?, "pgt_stream_tables.schedule")?,
                    // array_agg over no upstream stream table is NULL: none.
                    upstream: row.get::<Vec<i64>>(3)?.unwrap_or_default(),
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
enum Due {
    No,
    Yes,
    /// Its schedule says now, but none of its sources changed since its last refresh.
    NothingChanged,
}

fn is_due(c: &Candidate) -> Result<Due, PgTrickleError> {
    let Some(st) = stream_table::find_by_id(c.id, false)? else {
        return Ok(Due::No);
    };
    let since = Spi::get_one::<i64>(&format!(
        "SELECT extract(epoch FROM coalesce(last_refresh_at, created_at))::int8 \
         FROM pgtrickle.pgt_stream_tables WHERE pgt_id = {}",
        c.id
    ))?
    .unwrap_or(0);
    let now = Spi::get_one::<i64>("SELECT extract(epoch FROM now())::int8")?.unwrap_or(0);
    let parsed = schedule::parse(&c.schedule);
    let scheduled = match &parsed {
        Ok(Schedule::Every { seconds }) => {
            now - since >= i64::try_from(*seconds).unwrap_or(i64::MAX)
        }
        Ok(Schedule::Cron(cron)) => cron.fires_between(since, now),
        Ok(Schedule::Calculated) => {
            now - since >= i64::from(config::DEFAULT_SCHEDULE_SECONDS.get())
        }
        // Refused at create/alter time; a hand-edited catalog row is not refreshed.
        Err(_) => false,
    };
    if !scheduled {
        return Ok(Due::No);
    }
    if !st.is_populated || st.needs_full_reason.is_some() || st.frontier.is_none() {
        return Ok(Due::Yes);
    }
    // 'calculated' means "when a source changed". A FULL stream table on a duration or cron
    // schedule may read what capture cannot see (views, volatile functions), so it refreshes
    // whenever its schedule says so; differential ones read captured tables only.
    let always = st.effective_mode == crate::stream_table::Mode::Full
        && !matches!(parsed, Ok(Schedule::Calculated));
    if always || has_pending_changes(&st)? {
        Ok(Due::Yes)
    } else {
        Ok(Due::NothingChanged)
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
        }
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
