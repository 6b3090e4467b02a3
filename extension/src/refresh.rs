//! The refresh executor: FULL (replace the contents from the defining query) and DIFFERENTIAL
//! (the engine's delta over the change window, materialised once, applied on the identity).
//! INV-1: the change window and the source reads happen in one statement, hence one snapshot,
//! and that statement also yields the new frontier; INV-2: the window is exactly the buffer
//! rows that statement sees and the previous frontier did not consume (frontier.rs).

use engine::{ChangeBuffer, DeltaSources, Plan, RelName};
use pgrx::prelude::*;

use crate::cdc;
use crate::config;
use crate::error::PgTrickleError;
use crate::frontier::{self, Frontier};
use crate::pgcatalog::PgCatalog;
use crate::storage::ApplyGuard;
use crate::stream_table::{self, StreamTable};

/// What a refresh did, for the history row and the caller.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: &'static str,
    pub reason: Option<String>,
    pub rows_inserted: Option<i64>,
    pub rows_deleted: Option<i64>,
    pub delta_rows: Option<i64>,
}

/// Refreshes `st` (whose catalog row the caller holds FOR UPDATE) and records the frontier,
/// the history row and buffer cleanup. `history` is a RUNNING history row to complete (the
/// scheduler writes one first, in its own transaction); without it a row is inserted.
pub fn refresh(st: &StreamTable, history: Option<i64>) -> Result<Outcome, PgTrickleError> {
    with_search_path(&st.search_path, || refresh_inner(st, history))
}

/// Runs `f` with the stream table's creation-time search_path (so its query means what it
/// meant at creation, whoever refreshes: a user, the scheduler, a capture trigger), then
/// restores the caller's. On error the transaction is aborted, which restores it too.
pub(crate) fn with_search_path<R>(
    path: &str,
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    let saved =
        Spi::get_one::<String>("SELECT current_setting('search_path')")?.unwrap_or_default();
    let set = |p: &str| {
        Spi::run(&format!(
            "SELECT set_config('search_path', {}, true)",
            engine::render::quote_literal(p)
        ))
    };
    set(path)?;
    let result = f();
    set(&saved)?;
    result
}

fn refresh_inner(st: &StreamTable, history: Option<i64>) -> Result<Outcome, PgTrickleError> {
    let start = Spi::get_one::<String>("SELECT clock_timestamp()::text")?.unwrap_or_default();
    let sources = stream_table::sources(st.id)?;
    let buffers: Vec<String> = sources.iter().map(|s| cdc::buffer_name(*s)).collect();
    let rewritten = lock_sources(&sources)?;
    let reason = full_reason(st).or_else(|| {
        rewritten.then(|| {
            Some(
                "a source table was truncated or rewritten after this transaction's snapshot"
                    .to_string(),
            )
        })
    });
    let (outcome, frontier) = match reason {
        Some(reason) => full(st, &buffers, reason)?,
        None => match differential(st, &sources, &buffers)? {
            Diff::Applied(outcome, frontier) => (outcome, frontier),
            Diff::MustRunFull(reason) => full(st, &buffers, Some(reason))?,
        },
    };
    if let (Some(reason), true) = (&outcome.reason, outcome.action == "FULL") {
        if st.effective_mode != "FULL" {
            pgrx::notice!(
                "stream table {} using FULL refresh: {}",
                st.qualified(),
                reason
            );
        }
    }
    record(st, &outcome, &frontier, &start, history)?;
    for s in &sources {
        cdc::cleanup(*s)?;
    }
    Ok(outcome)
}

/// Locks the sources against TRUNCATE and table rewrites for the rest of the transaction and
/// tells whether one was rewritten after this transaction's snapshot. TRUNCATE is not MVCC-safe:
/// a snapshot taken before it commits reads the table as empty, while the TRUNCATE marker in
/// the buffer stays invisible to it, so a delta computed in that snapshot would miss the
/// deletion. The snapshot's copy of `pg_class` still shows the old file while the catalog
/// cache shows the new one; under READ COMMITTED the check's own fresh snapshot sees the
/// rewrite, and the marker then lands in the change window.
fn lock_sources(sources: &[pg_sys::Oid]) -> Result<bool, PgTrickleError> {
    if sources.is_empty() {
        return Ok(false);
    }
    let oids: Vec<String> = sources.iter().map(|s| s.to_u32().to_string()).collect();
    let names = Spi::get_one::<String>(&format!(
        "SELECT string_agg(oid::regclass::text, ', ') FROM pg_catalog.pg_class \
         WHERE oid IN ({})",
        oids.join(", ")
    ))?
    .unwrap_or_default();
    if !names.is_empty() {
        Spi::run(&format!("LOCK TABLE {names} IN ACCESS SHARE MODE"))?;
    }
    Ok(Spi::get_one::<bool>(&format!(
        "SELECT coalesce(bool_or(c.relfilenode <> pg_relation_filenode(c.oid)), false) \
         FROM pg_catalog.pg_class c WHERE c.oid IN ({}) AND c.relkind = 'r'",
        oids.join(", ")
    ))?
    .unwrap_or(false))
}

/// Populates a new stream table (its first FULL refresh, no notice) and records it.
pub fn initial_load(st: &StreamTable) -> Result<Outcome, PgTrickleError> {
    with_search_path(&st.search_path, || initial_load_inner(st))
}

fn initial_load_inner(st: &StreamTable) -> Result<Outcome, PgTrickleError> {
    let start = Spi::get_one::<String>("SELECT clock_timestamp()::text")?.unwrap_or_default();
    let sources = stream_table::sources(st.id)?;
    let buffers: Vec<String> = sources.iter().map(|s| cdc::buffer_name(*s)).collect();
    let (outcome, frontier) = full(st, &buffers, Some("initial load".into()))?;
    record(st, &outcome, &frontier, &start, None)?;
    Ok(outcome)
}

/// Why this cycle must run FULL before looking at the change window, if it must. `Some(None)`
/// is FULL by the stream table's own mode (no notice).
fn full_reason(st: &StreamTable) -> Option<Option<String>> {
    if st.effective_mode == "FULL" {
        return Some(None);
    }
    if config::force_full_refresh() {
        return Some(Some("pg_trickle.force_full_refresh is on".into()));
    }
    if !st.is_populated {
        return Some(Some("the stream table is not populated yet".into()));
    }
    if let Some(r) = &st.needs_full_reason {
        return Some(Some(r.clone()));
    }
    if st.frontier.is_none() {
        return Some(Some("no previous frontier".into()));
    }
    None
}

/// Plans the defining query of a stream table with a plan-based storage layout.
pub fn plan_of(st: &StreamTable) -> Result<Plan, PgTrickleError> {
    Ok(engine::plan(&st.query, &PgCatalog)?)
}

fn storage_rel(st: &StreamTable) -> RelName {
    RelName::new(&st.schema, &st.name)
}

/// FULL: empty the storage and insert the defining query's rows, in one statement that also
/// yields the frontier (so the next DIFFERENTIAL window starts exactly here).
fn full(
    st: &StreamTable,
    buffers: &[String],
    reason: Option<String>,
) -> Result<(Outcome, Frontier), PgTrickleError> {
    let (insert_sql, columns) = if st.storage_layout == "plan" {
        let plan = plan_of(st)?;
        let cols: Vec<String> = plan
            .storage_columns()
            .iter()
            .map(|c| engine::render::quote_ident(&c.name))
            .collect();
        (
            engine::full_query_sql(&plan)?,
            format!(" ({})", cols.join(", ")),
        )
    } else {
        (
            st.query.trim().trim_end_matches(';').to_string(),
            String::new(),
        )
    };
    let _guard = ApplyGuard::new();
    let target = st.qualified();
    Spi::run(&format!("TRUNCATE {target}"))?;
    let sql = format!(
        "WITH __pgt_ins AS (INSERT INTO {target}{columns} {insert_sql} RETURNING 1) \
         SELECT (SELECT count(*) FROM __pgt_ins), {}",
        frontier::capture_sql(buffers)
    );
    let (n, frontier) = run_with_frontier(&sql)?;
    let outcome = Outcome {
        action: "FULL",
        reason,
        rows_inserted: Some(n),
        rows_deleted: None,
        delta_rows: None,
    };
    Ok((outcome, frontier))
}

enum Diff {
    Applied(Outcome, Frontier),
    MustRunFull(String),
}

/// DIFFERENTIAL: materialise the consolidated delta of the change window into a temp table in
/// one statement (which also yields the frontier and any TRUNCATE/paused markers in the
/// window), then apply it with the engine's statements.
fn differential(
    st: &StreamTable,
    sources: &[pg_sys::Oid],
    buffers: &[String],
) -> Result<Diff, PgTrickleError> {
    let old = st
        .frontier
        .as_ref()
        .ok_or_else(|| PgTrickleError::Internal("differential refresh without frontier".into()))?;
    let plan = plan_of(st)?;
    let window = frontier::window_sql("", old);
    let mut delta_sources = DeltaSources::new();
    for s in sources {
        delta_sources = delta_sources.with(
            s.to_u32(),
            ChangeBuffer {
                schema: "pgtrickle_changes".into(),
                name: format!("changes_{}", s.to_u32()),
                predicate: format!("{window} AND __pgt_op IN ('I', 'D')"),
            },
        );
    }
    let delta_sql = engine::delta_query_sql(&plan, &delta_sources)?;
    let temp = format!("__pgt_delta_{}", st.id);
    let temp_rel = RelName::new("pg_temp", &temp);
    crate::storage::drop_temp(&temp, "TABLE")?;
    Spi::run(&format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS {delta_sql} WITH NO DATA",
        engine::render::quote_ident(&temp)
    ))?;
    let markers = if buffers.is_empty() {
        "NULL::text".to_string()
    } else {
        let parts: Vec<String> = buffers
            .iter()
            .map(|b| format!("SELECT __pgt_op FROM {b} WHERE {window} AND __pgt_op IN ('T', 'P')"))
            .collect();
        format!(
            "(SELECT string_agg(DISTINCT __pgt_op::text, '') FROM ({}) AS __pgt_m)",
            parts.join(" UNION ALL ")
        )
    };
    let sql = format!(
        "WITH __pgt_ins AS (INSERT INTO {} {delta_sql} RETURNING 1) \
         SELECT (SELECT count(*) FROM __pgt_ins), {}, {markers}",
        temp_rel.sql(),
        frontier::capture_sql(buffers)
    );
    let (delta_rows, frontier, markers) = run_delta(&sql)?;
    if let Some(m) = markers {
        Spi::run(&format!("DROP TABLE {}", temp_rel.sql()))?;
        let reason = if m.contains('T') {
            "a source table was truncated"
        } else {
            "change capture was paused or disabled while a source was written"
        };
        return Ok(Diff::MustRunFull(reason.into()));
    }
    let (inserted, deleted) = weight_counts(&temp_rel)?;
    if delta_rows > 0 {
        let _guard = ApplyGuard::new();
        for stmt in engine::apply_sql(&plan, &storage_rel(st), &temp_rel)? {
            Spi::run(&stmt)?;
        }
    }
    Spi::run(&format!("DROP TABLE {}", temp_rel.sql()))?;
    let outcome = Outcome {
        action: if delta_rows == 0 {
            "NO_DATA"
        } else {
            "DIFFERENTIAL"
        },
        reason: None,
        rows_inserted: inserted,
        rows_deleted: deleted,
        delta_rows: Some(delta_rows),
    };
    Ok(Diff::Applied(outcome, frontier))
}

/// Rows added and removed, for deltas that carry a `__pgt_weight` (row-keyed plans).
fn weight_counts(temp: &RelName) -> Result<(Option<i64>, Option<i64>), PgTrickleError> {
    let has_weight = Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = {}::regclass \
         AND attname = '__pgt_weight' AND NOT attisdropped)",
        engine::render::quote_literal(&temp.sql())
    ))?
    .unwrap_or(false);
    if !has_weight {
        return Ok((None, None));
    }
    let sql = format!(
        "SELECT coalesce(sum(__pgt_weight) FILTER (WHERE __pgt_weight > 0), 0)::int8, \
         coalesce(-sum(__pgt_weight) FILTER (WHERE __pgt_weight < 0), 0)::int8 FROM {}",
        temp.sql()
    );
    Ok(Spi::connect(|client| -> Result<_, pgrx::spi::Error> {
        let row = client.select(&sql, None, &[])?.first();
        Ok((row.get::<i64>(1)?, row.get::<i64>(2)?))
    })?)
}

fn run_with_frontier(sql: &str) -> Result<(i64, Frontier), PgTrickleError> {
    Ok(Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
        let row = client.update(sql, None, &[])?.first();
        Ok((
            row.get::<i64>(1)?.unwrap_or(0),
            Frontier {
                snapshot: row.get::<String>(2)?.unwrap_or_default(),
                xid: row.get::<String>(3)?.unwrap_or_default(),
                seq: row.get::<i64>(4)?.unwrap_or(0),
            },
        ))
    })?)
}

fn run_delta(sql: &str) -> Result<(i64, Frontier, Option<String>), PgTrickleError> {
    Ok(Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
        let row = client.update(sql, None, &[])?.first();
        Ok((
            row.get::<i64>(1)?.unwrap_or(0),
            Frontier {
                snapshot: row.get::<String>(2)?.unwrap_or_default(),
                xid: row.get::<String>(3)?.unwrap_or_default(),
                seq: row.get::<i64>(4)?.unwrap_or(0),
            },
            row.get::<String>(5)?,
        ))
    })?)
}

/// Stores the new frontier and refresh time, and writes the history row. IMMEDIATE
/// maintenance runs once per writing statement, so only its FULL refreshes are recorded.
fn record(
    st: &StreamTable,
    outcome: &Outcome,
    frontier: &Frontier,
    start: &str,
    history: Option<i64>,
) -> Result<(), PgTrickleError> {
    use engine::render::quote_literal as lit;
    let opt = |v: Option<i64>| v.map_or("NULL".to_string(), |n| n.to_string());
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_stream_tables SET frontier_snapshot = {}::pg_snapshot, \
         frontier_xid = {}::xid8, frontier_seq = {}, last_refresh_at = now(), \
         is_populated = true, needs_full_reason = NULL, last_error = NULL, \
         consecutive_errors = 0, next_retry_at = NULL WHERE pgt_id = {}",
        lit(&frontier.snapshot),
        lit(&frontier.xid),
        frontier.seq,
        st.id
    ))?;
    if st.effective_mode == "IMMEDIATE" && outcome.action != "FULL" && history.is_none() {
        return Ok(());
    }
    let (action, reason) = (
        lit(outcome.action),
        outcome.reason.as_deref().map_or("NULL".to_string(), lit),
    );
    let (ins, del, delta) = (
        opt(outcome.rows_inserted),
        opt(outcome.rows_deleted),
        opt(outcome.delta_rows),
    );
    match history {
        Some(id) => Spi::run(&format!(
            "UPDATE pgtrickle.pgt_refresh_history SET end_time = clock_timestamp(), \
             action = {action}, status = 'COMPLETED', reason = {reason}, rows_inserted = {ins}, \
             rows_deleted = {del}, delta_rows = {delta} WHERE refresh_id = {id}"
        ))?,
        None => Spi::run(&format!(
            "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, start_time, end_time, action, \
             status, reason, rows_inserted, rows_deleted, delta_rows) \
             VALUES ({}, {}::timestamptz, clock_timestamp(), {action}, 'COMPLETED', {reason}, \
             {ins}, {del}, {delta})",
            st.id,
            lit(start)
        ))?,
    }
    Ok(())
}
