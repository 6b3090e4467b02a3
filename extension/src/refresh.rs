//! The refresh executor: FULL (replace the contents from the defining query) and DIFFERENTIAL
//! (the engine's delta over the change window, materialised once, applied on the identity).
//! INV-1: the change window and the source reads happen in one statement, hence one snapshot,
//! and that statement also yields the new frontier; INV-2: the window is exactly the buffer
//! rows that statement sees and the previous frontier did not consume (frontier.rs).
//! Cost: a refresh whose window is empty is one probe statement plus bookkeeping; otherwise
//! the delta and apply statements are prepared once per session and stream table (cache.rs),
//! so a small change is not dominated by planning.

pub(crate) mod cache;

use std::ffi::CString;
use std::rc::Rc;

use engine::render::quote_literal;
use engine::{names, Plan, ProgramInput, RelName};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::cdc;
use crate::config;
use crate::error::PgTrickleError;
use crate::frontier::{self, Frontier};
use crate::pgcatalog::PgCatalog;
use crate::roles;
use crate::settings::with_settings;
use crate::storage::{self, ApplyGuard};
use crate::stream_table::{self, Layout, Mode, RequestedMode, StreamTable};
use crate::subscriptions;
use cache::{DiffState, BOOL, INT8, OID, TEXT};

/// What a refresh did (`pgt_refresh_history.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Full,
    Differential,
    NoData,
}

impl Action {
    pub fn as_sql(self) -> &'static str {
        match self {
            Action::Full => "FULL",
            Action::Differential => "DIFFERENTIAL",
            Action::NoData => "NO_DATA",
        }
    }
}

/// What a refresh did, for the history row and the caller.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    pub reason: Option<String>,
    pub rows_inserted: Option<i64>,
    pub rows_deleted: Option<i64>,
    pub delta_rows: Option<i64>,
    /// Change-buffer rows in the window, when counted for the estimate.
    pub changes: Option<i64>,
    /// AUTO's estimate and what was chosen (engine/src/cost.rs).
    pub choice: Option<String>,
}

/// Refreshes `st` (whose catalog row the caller holds FOR UPDATE) and records the frontier,
/// the history row and buffer cleanup. `history` is a RUNNING history row to complete (the
/// scheduler writes one first, in its own transaction); without it a row is inserted.
/// Runs as the extension's owner; what reads the user's query or writes the storage runs as
/// the stream table's owner (roles.rs).
pub fn refresh(st: &StreamTable, history: Option<i64>) -> Result<Outcome, PgTrickleError> {
    roles::as_extension(|| refresh_inner(st, history))
}

/// A stream table's sources as one refresh sees them.
struct Sources {
    /// When the refresh started (for the history row).
    start: String,
    /// Source table OIDs, ascending (the buffers are read in this order).
    oids: Vec<pg_sys::Oid>,
    /// The sources that still exist, as a `LOCK TABLE` list.
    lock_names: Option<String>,
    /// The stream table's owner (its storage table's, loaded with its row): the refresh reads
    /// and writes as it.
    owner: pg_sys::Oid,
    /// The first source (as regclass text) of a DIFFERENTIAL or IMMEDIATE stream table whose
    /// columns the owner may no longer all read. (A FULL refresh runs the query itself as the
    /// owner, so PostgreSQL checks it, through views too.)
    denied: Option<String>,
    /// Sources whose buffer the owner cannot read all of (the window columns and the columns
    /// its delta reads): it was just created, changed mode or owner. Granted before reading.
    ungranted: Vec<pg_sys::Oid>,
}

fn oids(values: Vec<i64>) -> Vec<pg_sys::Oid> {
    values
        .into_iter()
        .filter_map(|o| u32::try_from(o).ok())
        .map(pg_sys::Oid::from)
        .collect()
}

/// Parameters: `$1` the stream table's id, `$2` its owner, `$3` whether it is maintained
/// from the buffers (the source privilege check is for those only).
fn sources_of(st: &StreamTable) -> Result<Sources, PgTrickleError> {
    let meta = quote_literal(&format!("{{{}}}", names::BUFFER_META.join(",")));
    let buffer_prefix = quote_literal(&format!("{}.changes_", names::BUFFER_SCHEMA));
    debug_assert_eq!(
        names::buffer_table(7),
        "changes_7",
        "the prefix below names buffers"
    );
    let stmt = cache::statement(
        &format!(
            "SELECT clock_timestamp()::text, \
           coalesce(array_agg(d.source_relid::int8 ORDER BY d.source_relid), '{{}}'), \
           string_agg((SELECT c.oid::regclass::text FROM pg_catalog.pg_class c \
                       WHERE c.oid = d.source_relid), ', ' ORDER BY d.source_relid), \
           (array_agg(d.source_relid::regclass::text ORDER BY d.source_relid) FILTER ( \
              WHERE $3 AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = d.source_relid) \
                AND NOT CASE WHEN cardinality(d.read_attnums) = 0 \
                  THEN has_any_column_privilege($2, d.source_relid, 'SELECT') \
                  ELSE NOT EXISTS (SELECT FROM unnest(d.read_attnums) a WHERE NOT \
                    has_column_privilege($2, d.source_relid, a, 'SELECT')) \
                  END))[1], \
           coalesce(array_agg(d.source_relid::int8) FILTER ( \
              WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = d.source_relid) \
                AND EXISTS (SELECT FROM unnest(d.columns_used || {meta}::name[]) u \
                  LEFT JOIN pg_catalog.pg_attribute a ON a.attname = u AND NOT a.attisdropped \
                   AND a.attrelid = to_regclass({buffer_prefix} || d.source_relid) \
                  WHERE a.attnum IS NULL OR NOT has_column_privilege( \
                    $2, a.attrelid, a.attnum, 'SELECT'))), '{{}}') \
         FROM pgtrickle.pgt_dependencies d WHERE d.pgt_id = $1"
        ),
        &[INT8, OID, BOOL],
    )?;
    let args = [
        st.id.into(),
        st.owner.into(),
        st.effective_mode.incremental().into(),
    ];
    Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
        let row = client.update(&*stmt, None, &args)?.first();
        Ok(Sources {
            start: row.get(1)?.unwrap_or_default(),
            oids: oids(row.get(2)?.unwrap_or_default()),
            lock_names: row.get(3)?,
            owner: st.owner,
            denied: row.get(4)?,
            ungranted: oids(row.get(5)?.unwrap_or_default()),
        })
    })
    .map_err(PgTrickleError::from)
}

impl Sources {
    /// 42501 when the owner may no longer read a source; grants the owner read access to the
    /// buffers it lacks it on (cdc.rs).
    fn check_access(&self, st: &StreamTable) -> Result<(), PgTrickleError> {
        if let Some(relation) = &self.denied {
            return Err(PgTrickleError::ReadDenied {
                relation: relation.clone(),
                role: roles::name_of(self.owner),
                stream_table: st.qualified(),
            });
        }
        for source in &self.ungranted {
            cdc::grant_readers(*source)?;
        }
        Ok(())
    }

    /// The first source whose row-level security applies to the owner (a DIFFERENTIAL refresh
    /// reads the change buffers, which hold every row: it would bypass the policies).
    fn row_security(&self) -> Result<Option<String>, PgTrickleError> {
        match self
            .oids
            .iter()
            .find(|s| roles::row_security_applies(**s, self.owner))
        {
            Some(s) => Ok(Some(
                crate::definition::relation_name(*s)?.unwrap_or_else(|| s.to_u32().to_string()),
            )),
            None => Ok(None),
        }
    }
}

fn refresh_inner(st: &StreamTable, history: Option<i64>) -> Result<Outcome, PgTrickleError> {
    let src = sources_of(st)?;
    src.check_access(st)?;
    // ACCESS SHARE on the sources for the rest of the transaction: no TRUNCATE or table
    // rewrite can slip in between the checks below and the reads of the refresh.
    if let Some(names) = &src.lock_names {
        Spi::run(&format!("LOCK TABLE {names} IN ACCESS SHARE MODE"))?;
    }
    let buffers: Vec<String> = src.oids.iter().map(|s| cdc::buffer_name(*s)).collect();
    // A subscribed stream table counts the rows each refresh inserts and deletes (for the
    // notification), also where that costs a statement (FULL, grouped deltas).
    let subscribed = subscriptions::subscribed(st)?;
    let everything: Vec<pg_sys::Oid> = src.oids.clone();
    let (outcome, frontier, to_clean) = match full_reason(st, &src)? {
        Some(reason) => {
            let (o, f) = full(st, src.owner, &buffers, reason, subscribed)?;
            (o, f, everything)
        }
        None => {
            let old = st.frontier.as_ref().ok_or_else(|| {
                PgTrickleError::Internal("differential refresh without frontier".into())
            })?;
            let p = probe(&src.oids, &buffers, old)?;
            if p.rewritten {
                let reason = "a source table was truncated or rewritten after this \
                              transaction's snapshot";
                let (o, f) = full(st, src.owner, &buffers, Some(reason.into()), subscribed)?;
                (o, f, everything)
            } else if !p.changed.iter().any(|c| *c) {
                // Nothing in the window: the delta is empty whatever the sources hold, and the
                // probe's snapshot consumed exactly what the previous frontier did plus nothing.
                (no_data(), p.frontier, Vec::new())
            } else {
                let est = estimate(st, &src, &buffers, old)?;
                let (mut o, f, clean) = match est.as_ref().filter(|e| e.full_instead) {
                    // AUTO: a FULL refresh is estimated to cost less than this window's delta.
                    Some(e) => {
                        let (o, f) =
                            full(st, src.owner, &buffers, Some(e.choice.clone()), subscribed)?;
                        (o, f, everything)
                    }
                    None => match differential(st, &src, &buffers, old, subscribed)? {
                        Diff::Applied(o, f) => {
                            // Only buffers this refresh consumed rows of can have become
                            // garbage.
                            let changed: Vec<pg_sys::Oid> = src
                                .oids
                                .iter()
                                .zip(&p.changed)
                                .filter(|(_, c)| **c)
                                .map(|(s, _)| *s)
                                .collect();
                            (o, f, changed)
                        }
                        Diff::MustRunFull(reason) => {
                            let (o, f) = full(st, src.owner, &buffers, Some(reason), subscribed)?;
                            (o, f, everything)
                        }
                    },
                };
                if let Some(e) = est {
                    o.changes = Some(e.changes);
                    // Not when the refresh had to run otherwise (a TRUNCATE in the window).
                    if e.full_instead == (o.action == Action::Full) {
                        o.choice = Some(e.choice);
                    }
                }
                (o, f, clean)
            }
        }
    };
    if let (Some(reason), true) = (&outcome.reason, outcome.action == Action::Full) {
        if st.effective_mode != Mode::Full {
            pgrx::notice!(
                "stream table {} using FULL refresh: {}",
                st.qualified(),
                reason
            );
        }
    }
    let refresh_id = record(st, &outcome, &frontier, &src.start, history)?;
    if subscribed {
        notify_subscribers(st, &outcome, refresh_id)?;
    }
    match (outcome.action, &st.frontier) {
        (Action::Full, _) | (_, None) => {
            for s in &to_clean {
                cdc::cleanup(*s)?;
            }
        }
        (_, Some(old)) => cleanup_window(&to_clean, old)?,
    }
    Ok(outcome)
}

/// What the estimate before a refresh decided.
struct Chosen {
    /// Change-buffer rows in the window (counted up to one more than the sources' rows).
    changes: i64,
    /// AUTO runs FULL instead of DIFFERENTIAL.
    full_instead: bool,
    /// The estimate and the choice, for the history.
    choice: String,
}

/// AUTO's estimate before a refresh with a non-empty change window (engine::cost), for a
/// stream table maintained DIFFERENTIAL (`None` for IMMEDIATE ones): whether AUTO runs FULL
/// instead, and the text the history records. A stream table whose mode is DIFFERENTIAL keeps
/// it; the estimate is recorded with it.
fn estimate(
    st: &StreamTable,
    src: &Sources,
    buffers: &[String],
    old: &Frontier,
) -> Result<Option<Chosen>, PgTrickleError> {
    if st.effective_mode != Mode::Differential || buffers.is_empty() {
        return Ok(None);
    }
    // The sources' rows (statistics: reltuples lags behind bulk loads until ANALYZE, the live
    // count behind the latest commits), the latest FULL durations and DIFFERENTIAL samples (a
    // delta that changed no row is recorded NO_DATA, with its count: it cost as much).
    let history = cache::statement(
        "SELECT (SELECT coalesce(sum(greatest(c.reltuples::float8, \
                   coalesce(pg_stat_get_live_tuples(c.oid), 0)::float8)), 0) \
                   FROM pg_catalog.pg_class c WHERE c.oid = ANY ($2::oid[])), \
                (SELECT coalesce(array_agg(f.ms ORDER BY f.start_time DESC, f.refresh_id DESC), '{}') \
                   FROM (SELECT h.start_time, h.refresh_id, \
                                extract(epoch FROM h.end_time - h.start_time)::float8 * 1000 AS ms \
                           FROM pgtrickle.pgt_refresh_history h WHERE h.pgt_id = $1 \
                            AND h.status = 'COMPLETED' AND h.action = 'FULL' AND h.end_time IS NOT NULL \
                          ORDER BY h.start_time DESC, h.refresh_id DESC LIMIT $3) f), \
                d.changes, d.ms \
           FROM (SELECT coalesce(array_agg(x.changes ORDER BY x.start_time DESC, x.refresh_id DESC), '{}') AS changes, \
                        coalesce(array_agg(x.ms ORDER BY x.start_time DESC, x.refresh_id DESC), '{}') AS ms \
                   FROM (SELECT h.start_time, h.refresh_id, h.changes, \
                                extract(epoch FROM h.end_time - h.start_time)::float8 * 1000 AS ms \
                           FROM pgtrickle.pgt_refresh_history h \
                          WHERE h.pgt_id = $1 AND h.status = 'COMPLETED' \
                            AND h.action IN ('DIFFERENTIAL', 'NO_DATA') \
                            AND h.changes >= $4 AND h.end_time IS NOT NULL \
                          ORDER BY h.start_time DESC, h.refresh_id DESC LIMIT $3 * 4) x) d",
        &[INT8, TEXT, INT8, INT8],
    )?;
    let oids: Vec<String> = src.oids.iter().map(|o| o.to_u32().to_string()).collect();
    let samples = i64::try_from(engine::cost::SAMPLES).unwrap_or(5);
    let (source_rows, full_ms, diff_changes, diff_ms) =
        Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
            let row = client
                .update(
                    &*history,
                    None,
                    &[
                        st.id.into(),
                        format!("{{{}}}", oids.join(",")).into(),
                        samples.into(),
                        engine::cost::MIN_SAMPLE_CHANGES.into(),
                    ],
                )?
                .first();
            Ok((
                row.get::<f64>(1)?,
                row.get::<Vec<f64>>(2)?,
                row.get::<Vec<i64>>(3)?,
                row.get::<Vec<f64>>(4)?,
            ))
        })?;
    let source_rows = crate::error::required(source_rows, "sum of the sources' rows")?;
    // The window's rows, counted through the buffers' xid index up to one more than the
    // sources hold (beyond that FULL wins whatever the history says).
    #[allow(clippy::cast_possible_truncation)]
    let cap = (source_rows.max(1_000.0) as i64).saturating_add(1);
    let window = window_params();
    let op = names::BUFFER_OP;
    let counts: Vec<String> = buffers
        .iter()
        .map(|b| {
            format!(
                "(SELECT count(*) FROM (SELECT FROM {b} WHERE {window} AND {op} IN ('I', 'D') \
                 LIMIT $4) AS __pgt_w)"
            )
        })
        .collect();
    let count = cache::statement(
        &format!("SELECT {}", counts.join(" + ")),
        &[
            FRONTIER_TYPES[0],
            FRONTIER_TYPES[1],
            FRONTIER_TYPES[2],
            INT8,
        ],
    )?;
    let [a, b, c] = frontier_args(old)?;
    let changes = with_settings(&[(c"enable_seqscan", c"off")], || {
        Ok(Spi::connect_mut(|client| {
            client
                .update(&*count, None, &[a, b, c, cap.into()])?
                .first()
                .get_one::<i64>()
        })?)
    })?;
    let changes = crate::error::required(changes, "count of the change window")?;
    let e = engine::cost::estimate(&engine::cost::CostInput {
        changes,
        source_rows,
        full_ms: full_ms.unwrap_or_default(),
        diff: diff_changes
            .unwrap_or_default()
            .into_iter()
            .zip(diff_ms.unwrap_or_default())
            .map(|(changes, ms)| engine::cost::DiffSample { changes, ms })
            .collect(),
        ratio: config::auto_full_change_ratio(),
    });
    let full = if e.full { "FULL" } else { "DIFFERENTIAL" };
    let (full_instead, choice) = match st.refresh_mode {
        RequestedMode::Auto if config::auto_cost_model() => {
            (e.full, format!("AUTO chose {full}: {}", e.why))
        }
        RequestedMode::Auto => (
            false,
            format!(
                "DIFFERENTIAL (pg_trickle.auto_cost_model is off; the estimate prefers {full}): {}",
                e.why
            ),
        ),
        _ => (
            false,
            format!(
                "DIFFERENTIAL by its mode (AUTO would choose {full}): {}",
                e.why
            ),
        ),
    };
    Ok(Some(Chosen {
        changes,
        full_instead,
        choice,
    }))
}

/// Deletes the consumed rows of the buffers a differential refresh read. Only rows of its
/// change window can have become consumed by every dependent through this refresh, and those
/// lie at or above the window's lower bound in the buffer's xid index: the delete walks that
/// index range (sequential scans are switched off for it, whatever the buffer's statistics
/// say) instead of every row deleted before and not yet vacuumed.
fn cleanup_window(sources: &[pg_sys::Oid], old: &Frontier) -> Result<(), PgTrickleError> {
    if sources.is_empty() {
        return Ok(());
    }
    let args = frontier_args(old)?;
    let bound = format!("b.{} >= least(pg_snapshot_xmin($1), $2)", names::BUFFER_XID);
    with_settings(&[(c"enable_seqscan", c"off")], || {
        for s in sources {
            let stmt = cache::statement(&cdc::cleanup_sql(*s, &bound), &FRONTIER_TYPES[..2])?;
            Spi::connect_mut(|client| client.update(&*stmt, None, &args[..2]).map(|_| ()))?;
        }
        Ok(())
    })
}

fn no_data() -> Outcome {
    Outcome {
        action: Action::NoData,
        reason: None,
        rows_inserted: None,
        rows_deleted: None,
        delta_rows: Some(0),
        changes: None,
        choice: None,
    }
}

/// What the probe of a differential refresh found.
struct Probe {
    /// A source was truncated or rewritten after this transaction's snapshot.
    rewritten: bool,
    /// Per buffer (in source order): whether its change window holds any row.
    changed: Vec<bool>,
    /// The probe statement's frontier (the new frontier when nothing changed).
    frontier: Frontier,
}

/// The previous frontier as parameters `$1` (`pg_snapshot`), `$2` (`xid8`), `$3` (seq) of a
/// prepared statement (see [`frontier_args`]).
fn window_params() -> String {
    frontier::window_sql("", "$1", "$2", "$3")
}

/// Parameter types of statements reading the change window.
const FRONTIER_TYPES: [pgrx::pg_sys::PgOid; 3] = [
    pgrx::pg_sys::PgOid::Custom(pg_sys::PG_SNAPSHOTOID),
    pgrx::pg_sys::PgOid::Custom(pg_sys::XID8OID),
    INT8,
];

/// The previous frontier as typed parameters: a `pg_snapshot` and an `xid8` datum parsed once
/// here, so that the statement neither casts text per row nor needs sub-plans to cast once.
fn frontier_args(old: &Frontier) -> Result<[DatumWithOid<'static>; 3], PgTrickleError> {
    Ok([
        typed_datum(pg_sys::PG_SNAPSHOTOID, &old.snapshot)?,
        typed_datum(pg_sys::XID8OID, &old.xid)?,
        old.seq.into(),
    ])
}

/// A datum of type `ty` read from its text form by the type's input function (which raises
/// an ERROR on malformed input).
fn typed_datum(ty: pg_sys::Oid, text: &str) -> Result<DatumWithOid<'static>, PgTrickleError> {
    let text = CString::new(text)
        .map_err(|_| PgTrickleError::Internal("frontier contains a NUL byte".into()))?;
    let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
    // SAFETY: `ty` is a built-in type with an input function; the text is NUL-terminated and
    // outlives the call; the result is allocated in the current memory context, which lives
    // until the statement using it has run.
    let datum = unsafe {
        pg_sys::getTypeInputInfo(ty, &mut input, &mut ioparam);
        pg_sys::OidInputFunctionCall(input, text.as_ptr().cast_mut(), ioparam, -1)
    };
    // SAFETY: the datum was just produced by the input function of `ty`.
    Ok(unsafe { DatumWithOid::new(datum, ty) })
}

/// Boolean SQL: buffer `buffer`'s change window (parameters `$1`..`$3`, see [`frontier_args`])
/// holds a row, optionally restricted by `and` (` AND …`). The first window row in `__pgt_xid`
/// order, not EXISTS: PostgreSQL plans EXISTS for its first row and so prefers a sequential
/// scan, which walks every dead row a big cleanup left behind; this walks the buffer's xid
/// index from the window's lower bound.
fn window_row_exists(buffer: &str, and: &str) -> String {
    let xid = names::BUFFER_XID;
    format!(
        "(SELECT {xid} FROM {buffer} WHERE {}{and} ORDER BY {xid} LIMIT 1) IS NOT NULL",
        window_params()
    )
}

/// Whether any of `buffers` holds a row the previous frontier `old` did not consume (the
/// scheduler's "did a source change?" for a stream table on a 'calculated' schedule).
pub(crate) fn window_has_rows(buffers: &[String], old: &Frontier) -> Result<bool, PgTrickleError> {
    if buffers.is_empty() {
        return Ok(false);
    }
    let exists: Vec<String> = buffers.iter().map(|b| window_row_exists(b, "")).collect();
    let stmt = cache::statement(&format!("SELECT {}", exists.join(" OR ")), &FRONTIER_TYPES)?;
    let args = frontier_args(old)?;
    Ok(Spi::connect_mut(|client| {
        client
            .update(&*stmt, None, &args)?
            .first()
            .get_one::<bool>()
    })?
    .unwrap_or(false))
}

/// One statement, after the sources are locked: whether a source was rewritten after this
/// transaction's snapshot (TRUNCATE is not MVCC-safe: a snapshot taken before it commits reads
/// the table as empty while the TRUNCATE marker stays invisible to it; the snapshot's copy of
/// `pg_class` still shows the old file while the catalog cache shows the new one, and under
/// READ COMMITTED this statement's fresh snapshot sees the marker instead), which change
/// windows hold rows, and this statement's frontier.
fn probe(
    sources: &[pg_sys::Oid],
    buffers: &[String],
    old: &Frontier,
) -> Result<Probe, PgTrickleError> {
    let rewritten = if sources.is_empty() {
        "false".to_string()
    } else {
        let oids: Vec<String> = sources.iter().map(|s| s.to_u32().to_string()).collect();
        format!(
            "coalesce((SELECT bool_or(c.relfilenode <> pg_relation_filenode(c.oid)) \
             FROM pg_catalog.pg_class c WHERE c.oid IN ({}) AND c.relkind = 'r'), false)",
            oids.join(", ")
        )
    };
    let exists: Vec<String> = buffers.iter().map(|b| window_row_exists(b, "")).collect();
    let sql = format!(
        "SELECT {rewritten}, ARRAY[{}]::bool[], {}",
        exists.join(", "),
        frontier::capture_sql(buffers)
    );
    let stmt = cache::statement(&sql, &FRONTIER_TYPES)?;
    let args = frontier_args(old)?;
    let (rewritten, changed, (snapshot, xid, seq)) =
        Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
            let row = client.update(&*stmt, None, &args)?.first();
            Ok((
                row.get::<bool>(1)?,
                row.get::<Vec<bool>>(2)?,
                (
                    row.get::<String>(3)?,
                    row.get::<String>(4)?,
                    row.get::<i64>(5)?,
                ),
            ))
        })?;
    let changed = changed.unwrap_or_default();
    debug_assert_eq!(changed.len(), buffers.len(), "one window flag per buffer");
    Ok(Probe {
        rewritten: rewritten.ok_or_else(|| {
            PgTrickleError::Internal("the refresh probe returned no rewrite flag".into())
        })?,
        changed,
        frontier: Frontier::returned(snapshot, xid, seq)?,
    })
}

/// Populates a new stream table (its first FULL refresh, no notice) and records it.
pub fn initial_load(st: &StreamTable) -> Result<Outcome, PgTrickleError> {
    load(st, "initial load")
}

/// A FULL refresh of `st` recorded with `reason` (a first load or a reinitialisation).
pub fn load(st: &StreamTable, reason: &str) -> Result<Outcome, PgTrickleError> {
    roles::as_extension(|| load_inner(st, reason))
}

fn load_inner(st: &StreamTable, reason: &str) -> Result<Outcome, PgTrickleError> {
    let src = sources_of(st)?;
    src.check_access(st)?;
    let buffers: Vec<String> = src.oids.iter().map(|s| cdc::buffer_name(*s)).collect();
    let subscribed = subscriptions::subscribed(st)?;
    let (outcome, frontier) = full(st, src.owner, &buffers, Some(reason.into()), subscribed)?;
    let refresh_id = record(st, &outcome, &frontier, &src.start, None)?;
    if subscribed {
        notify_subscribers(st, &outcome, refresh_id)?;
    }
    Ok(outcome)
}

/// Queues the notification of a refresh of subscribed `st` (none when it applied nothing).
fn notify_subscribers(
    st: &StreamTable,
    outcome: &Outcome,
    refresh_id: Option<i64>,
) -> Result<(), PgTrickleError> {
    if outcome.action == Action::NoData {
        return Ok(());
    }
    // Counted by every refresh of a subscribed stream table that applied something.
    let counted = |n: Option<i64>| {
        n.ok_or_else(|| {
            PgTrickleError::Internal(format!(
                "a {} refresh of subscribed stream table {} did not count its rows",
                outcome.action.as_sql(),
                st.qualified()
            ))
        })
    };
    subscriptions::queue(
        st,
        refresh_id,
        counted(outcome.rows_inserted)?,
        counted(outcome.rows_deleted)?,
    )
}

/// Why this cycle must run FULL before looking at the change window, if it must. A stream
/// table FULL by its mode gives the reason its query is not maintained incrementally (none
/// when the query could be); the refresh says so in a NOTICE only when it falls back from an
/// incremental mode.
fn full_reason(st: &StreamTable, src: &Sources) -> Result<Option<Option<String>>, PgTrickleError> {
    if st.effective_mode == Mode::Full {
        // FULL by its mode: no NOTICE, but the history says why.
        return Ok(Some(st.full_reason.clone()));
    }
    if let Some(source) = src.row_security()? {
        return Ok(Some(Some(format!(
            "row-level security of {source} applies to the owner, role \"{}\"",
            roles::name_of(src.owner)
        ))));
    }
    let reason = if config::force_full_refresh() {
        "pg_trickle.force_full_refresh is on".to_string()
    } else if !st.is_populated {
        "the stream table is not populated yet".to_string()
    } else if let Some(r) = &st.needs_full_reason {
        r.clone()
    } else if st.frontier.is_none() {
        "no previous frontier".to_string()
    } else {
        return Ok(None);
    };
    Ok(Some(Some(reason)))
}

/// Plans the defining query of a stream table with a plan-based storage layout.
pub fn plan_of(st: &StreamTable) -> Result<Plan, PgTrickleError> {
    Ok(engine::plan(&st.query, &PgCatalog)?)
}

/// The statements a refresh of `st` runs, as `(step, sql)` in order (for
/// `explain_stream_table(…, verbose => true)`): the FULL statement, and for an incremental
/// stream table the delta table, its fill over the change window, the counting of a grouped
/// delta, the apply statements and the clearing. `$1`…`$3` are the previous frontier.
pub fn statements(st: &StreamTable) -> Result<Vec<(String, String)>, PgTrickleError> {
    // In OID order, as a refresh reads them.
    let sources = stream_table::sources(st.id)?;
    let buffers: Vec<String> = sources.iter().map(|s| cdc::buffer_name(*s)).collect();
    if st.storage_layout == Layout::Query {
        let ins = names::INSERTED;
        return Ok(vec![
            ("truncate".into(), format!("TRUNCATE {}", st.qualified())),
            (
                "full".into(),
                format!(
                    "WITH {ins} AS (INSERT INTO {} SELECT * FROM {} AS {} RETURNING 1) \
                     SELECT (SELECT count(*) FROM {ins}), {}",
                    st.qualified(),
                    crate::stream_table::enclosed(&st.query),
                    names::QUERY_ALIAS,
                    frontier::capture_sql(&buffers)
                ),
            ),
        ]);
    }
    let plan = plan_of(st)?;
    let program = engine::program(&plan, &program_input(st, &sources, &buffers))?;
    let mut out = vec![
        (
            "truncate".to_string(),
            format!("TRUNCATE {}", st.qualified()),
        ),
        ("full".to_string(), program.full),
    ];
    if let (true, Some(d)) = (st.effective_mode.incremental(), program.differential) {
        out.push(("delta table".into(), d.table_ddl));
        out.push(("fill".into(), d.fill));
        if let Some(c) = d.counts {
            out.push(("counts (with subscriptions)".into(), c));
        }
        let n = d.apply.len();
        for (i, a) in d.apply.into_iter().enumerate() {
            let step = if n == 1 {
                "apply".to_string()
            } else {
                format!("apply {}", i + 1)
            };
            out.push((step, a));
        }
        out.push(("clear".into(), d.clear));
    }
    Ok(out)
}

fn storage_rel(st: &StreamTable) -> RelName {
    RelName::new(&st.schema, &st.name)
}

/// FULL: empty the storage and insert the defining query's rows, in one statement that also
/// yields the frontier (so the next DIFFERENTIAL window starts exactly here).
/// `count_deleted`: count the rows the refresh replaces (for a subscription's notification).
fn full(
    st: &StreamTable,
    owner: pg_sys::Oid,
    buffers: &[String],
    reason: Option<String>,
    count_deleted: bool,
) -> Result<(Outcome, Frontier), PgTrickleError> {
    roles::as_owner(owner, &st.search_path, true, || {
        full_as_owner(st, buffers, reason, count_deleted)
    })
}

fn full_as_owner(
    st: &StreamTable,
    buffers: &[String],
    reason: Option<String>,
    count_deleted: bool,
) -> Result<(Outcome, Frontier), PgTrickleError> {
    let frontier_sql = frontier::capture_sql(buffers);
    let plan = match st.storage_layout {
        Layout::Plan => Some(plan_of(st)?),
        Layout::Query => None,
    };
    let sql = if let Some(plan) = &plan {
        engine::full_statement(plan, &storage_rel(st), &frontier_sql)?
    } else {
        // The plain query result (FULL only): the extension's own statement.
        let ins = names::INSERTED;
        format!(
            "WITH {ins} AS (INSERT INTO {} SELECT * FROM {} AS {} RETURNING 1) \
             SELECT (SELECT count(*) FROM {ins}), {frontier_sql}",
            st.qualified(),
            crate::stream_table::enclosed(&st.query),
            names::QUERY_ALIAS
        )
    };
    let deleted = if count_deleted {
        let n = Spi::get_one::<i64>(&format!("SELECT count(*) FROM {}", st.qualified()))?;
        Some(crate::error::required(n, "count(*)")?)
    } else {
        None
    };
    let _guard = ApplyGuard::new();
    Spi::run(&format!("TRUNCATE {}", st.qualified()))?;
    // A storage made by a build that kept this query with other hidden columns is brought in
    // line while it is empty (the statement above fills every hidden column of the plan).
    let mut reason = reason;
    if let Some(plan) = &plan {
        let diff = match storage::hidden_layout(st.relid, plan)? {
            storage::HiddenLayout::Same => None,
            storage::HiddenLayout::Alignable(diff) => Some(diff),
            storage::HiddenLayout::Conflicting(diff) => {
                return Err(PgTrickleError::CannotReinit {
                    name: st.qualified(),
                    reason: format!(
                        "{}, and a unique index of its storage is on other columns than its \
                         rows' identity now",
                        diff.what()
                    ),
                })
            }
        };
        if let Some(diff) = diff {
            storage::align_hidden(st.relid, &storage_rel(st), plan, &diff)?;
            let changed = diff.to_string();
            if reason.as_deref() != Some(changed.as_str()) {
                pgrx::notice!("stream table {}: {changed}", st.qualified());
            }
            reason = Some(match reason {
                Some(r) if r != changed => format!("{r}; {changed}"),
                _ => changed,
            });
        }
    }
    let (n, frontier) = run_with_frontier(&sql)?;
    let outcome = Outcome {
        action: Action::Full,
        reason,
        rows_inserted: Some(n),
        rows_deleted: deleted,
        delta_rows: None,
        changes: None,
        choice: None,
    };
    Ok((outcome, frontier))
}

enum Diff {
    Applied(Outcome, Frontier),
    MustRunFull(String),
}

/// A temp table with more dead rows than this is truncated instead of emptied with DELETE:
/// dead rows are still read by the next refreshes' scans of it, and a TRUNCATE (a new file)
/// makes PostgreSQL re-plan the statements that read it, so neither may happen too often.
const TRUNCATE_AFTER_DEAD_ROWS: i64 = 8_000;

/// DIFFERENTIAL: materialise the consolidated delta of the change window into a temp table in
/// one statement (which also yields the frontier and any TRUNCATE/paused markers in the
/// window), then apply it with the engine's statements. Both are prepared once per session.
/// `count`: the rows applied must be counted (a grouped delta counts them with a statement of
/// its own).
fn differential(
    st: &StreamTable,
    src: &Sources,
    buffers: &[String],
    old: &Frontier,
    count: bool,
) -> Result<Diff, PgTrickleError> {
    roles::as_owner(src.owner, &st.search_path, false, || {
        let mut watched: Vec<u32> = src.oids.iter().map(|o| o.to_u32()).collect();
        watched.push(st.relid.to_u32());
        // Looked up as the owner: the temp table and the statements are the owner's.
        let state = match cache::diff_state(st.id, &st.query, &st.search_path, &watched) {
            Some(state) => state,
            None => {
                let plan = roles::restricted(|| plan_of(st))?;
                // Storage made for other hidden columns: the FULL refresh changes it.
                match storage::hidden_layout(st.relid, &plan)? {
                    storage::HiddenLayout::Same => {}
                    storage::HiddenLayout::Alignable(diff)
                    | storage::HiddenLayout::Conflicting(diff) => {
                        return Ok(Diff::MustRunFull(diff.to_string()));
                    }
                }
                let state = Rc::new(build_diff_state(st, &plan, &src.oids, buffers, watched)?);
                cache::store_diff_state(st.id, state.clone());
                state
            }
        };
        roles::restricted(|| run_delta(&state, old, count))
    })
}

/// Runs the prepared delta of `state` over the change window after `old` and applies it (as
/// the owner, in a security-restricted operation).
fn run_delta(state: &DiffState, old: &Frontier, count: bool) -> Result<Diff, PgTrickleError> {
    let args = frontier_args(old)?;
    let (delta_rows, mut inserted, mut deleted, (snapshot, xid, seq), markers) =
        Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
            let row = client.update(&state.delta, None, &args)?.first();
            Ok((
                row.get::<i64>(1)?,
                row.get::<i64>(2)?,
                row.get::<i64>(3)?,
                (
                    row.get::<String>(4)?,
                    row.get::<String>(5)?,
                    row.get::<i64>(6)?,
                ),
                row.get::<String>(7)?,
            ))
        })?;
    let frontier = Frontier::returned(snapshot, xid, seq)?;
    // count(*) is never NULL: its absence is a broken program contract (engine/src/program.rs).
    let delta_rows = delta_rows.ok_or_else(|| {
        PgTrickleError::Internal("the delta statement returned no row count".into())
    })?;
    // The shape of the delta as it is about to be applied: weighted (keyed) deltas count the
    // rows they insert and delete — each delta row weighs at least 1 either way — grouped ones
    // do not.
    debug_assert_eq!(state.weighted, inserted.is_some() && deleted.is_some());
    debug_assert!(
        !state.weighted || inserted.unwrap_or(0) + deleted.unwrap_or(0) >= delta_rows,
        "a weighted delta of {delta_rows} rows inserts {inserted:?} and deletes {deleted:?}"
    );
    if let Some(m) = markers {
        clear_temp(state, delta_rows)?;
        let reason = if m.contains('T') {
            "a source table was truncated"
        } else {
            "change capture was paused or disabled while a source was written"
        };
        return Ok(Diff::MustRunFull(reason.into()));
    }
    if delta_rows > 0 {
        if let (true, Some(counts)) = (count, &state.counts) {
            let (i, d) = Spi::connect(|client| -> Result<_, pgrx::spi::Error> {
                let row = client.select(counts, None, &[])?.first();
                Ok((row.get::<i64>(1)?, row.get::<i64>(2)?))
            })?;
            debug_assert!(
                i.is_some() && d.is_some(),
                "coalesce(sum(…), 0) is never NULL"
            );
            (inserted, deleted) = (i, d);
        }
        let _guard = ApplyGuard::new();
        for stmt in &state.apply {
            Spi::connect_mut(|client| client.update(stmt, None, &[]).map(|_| ()))?;
        }
        clear_temp(state, delta_rows)?;
    }
    let outcome = Outcome {
        action: if delta_rows == 0 {
            Action::NoData
        } else {
            Action::Differential
        },
        reason: None,
        rows_inserted: inserted,
        rows_deleted: deleted,
        delta_rows: Some(delta_rows),
        changes: None,
        choice: None,
    };
    Ok(Diff::Applied(outcome, frontier))
}

/// Empties the delta temp table after use (a refresh later in the same transaction reuses
/// it): DELETE while its dead rows are few, TRUNCATE otherwise.
fn clear_temp(state: &DiffState, rows: i64) -> Result<(), PgTrickleError> {
    if rows == 0 {
        return Ok(());
    }
    let dead = state.dead_rows.get().saturating_add(rows);
    if dead > TRUNCATE_AFTER_DEAD_ROWS {
        Spi::run(&format!(
            "TRUNCATE {}",
            RelName::new("pg_temp", &state.temp_name).sql()
        ))?;
        state.dead_rows.set(0);
    } else {
        Spi::connect_mut(|client| client.update(&state.clear, None, &[]).map(|_| ()))?;
        state.dead_rows.set(dead);
    }
    Ok(())
}

/// The extension's inputs to the engine's program of `st`: the storage, the delta table of
/// this role, each buffer's change window (parameters `$1`..`$3`, see [`frontier_args`]) and
/// the frontier and marker columns its statements also return.
fn program_input(st: &StreamTable, sources: &[pg_sys::Oid], buffers: &[String]) -> ProgramInput {
    let window = window_params();
    // A window holding a TRUNCATE or paused-capture marker is refreshed FULL; its rows are
    // then not a faithful delta (a TRUNCATE deletes rows it does not list), so the delta reads
    // no row at all rather than compute on them (an average over a group the lost deletes
    // would have emptied divides by zero). Same statement, same snapshot as the marker check.
    // Ordered by the buffer's xid index so that the check reads the window's rows, not every
    // dead row of the buffer (NOT EXISTS would be planned as a sequential scan).
    let op = names::BUFFER_OP;
    let gate: String = buffers
        .iter()
        .map(|b| {
            format!(
                " AND NOT {}",
                window_row_exists(b, &format!(" AND {op} IN ('T', 'P')"))
            )
        })
        .collect();
    let markers = if buffers.is_empty() {
        "NULL::text".to_string()
    } else {
        let parts: Vec<String> = buffers
            .iter()
            .map(|b| format!("SELECT {op} FROM {b} WHERE {window} AND {op} IN ('T', 'P')"))
            .collect();
        format!(
            "(SELECT string_agg(DISTINCT {op}::text, '') FROM ({}) AS __pgt_m)",
            parts.join(" UNION ALL ")
        )
    };
    let frontier = frontier::capture_sql(buffers);
    ProgramInput {
        storage: storage_rel(st),
        delta_table: RelName::new("pg_temp", &names::delta_table(st.id, cache::current_user())),
        window: sources
            .iter()
            .map(|s| (s.to_u32(), format!("{window} AND {op} IN ('I', 'D'){gate}")))
            .collect(),
        full_extra: frontier.clone(),
        delta_extra: format!("{frontier}, {markers}"),
    }
}

/// Plans the stream table, (re)creates its delta temp table and prepares the engine's delta
/// and apply statements. Runs once per session and stream table, and again after a source or
/// the storage table changed.
fn build_diff_state(
    st: &StreamTable,
    plan: &Plan,
    sources: &[pg_sys::Oid],
    buffers: &[String],
    watched: Vec<u32>,
) -> Result<DiffState, PgTrickleError> {
    let input = program_input(st, sources, buffers);
    let program = roles::restricted(|| Ok(engine::program(plan, &input)?))?;
    let Some(diff) = program.differential else {
        return Err(PgTrickleError::Internal(format!(
            "a differential refresh of {} whose plan has no differential program",
            st.qualified()
        )));
    };
    // Per user too: a temp table belongs to the role that created it (the owner, here).
    // Created outside the security-restricted operation, which refuses temp tables; it runs
    // no user code: CREATE TABLE AS … WITH NO DATA only analyses its query (PostgreSQL neither
    // plans nor executes it). Lifted also when this refresh is nested in another's
    // restricted apply.
    let temp_name = input.delta_table.name.clone();
    roles::lifted(|| {
        crate::storage::drop_temp(&temp_name, "TABLE")?;
        Spi::run(&diff.table_ddl)?;
        Ok(())
    })?;
    let temp_oid = cache::temp_relid(&temp_name).ok_or_else(|| {
        PgTrickleError::Internal(format!("temp table {temp_name} vanished after creation"))
    })?;
    debug_assert_eq!(
        diff.weighted,
        weight_column(temp_oid)?,
        "the delta table has a weight column exactly when the program says its rows are weighted"
    );
    roles::restricted(|| {
        Ok(DiffState {
            query: st.query.clone(),
            search_path: st.search_path.clone(),
            watched,
            temp_name,
            temp_oid,
            delta: cache::prepare(&diff.fill, &FRONTIER_TYPES)?,
            apply: diff
                .apply
                .iter()
                .map(|sql| cache::prepare(sql, &[]))
                .collect::<Result<Vec<_>, _>>()?,
            clear: cache::prepare(&diff.clear, &[])?,
            counts: diff
                .counts
                .as_deref()
                .map(|sql| cache::prepare(sql, &[]))
                .transpose()?,
            weighted: diff.weighted,
            dead_rows: std::cell::Cell::new(0),
        })
    })
}

/// Whether the temp table `relid` has the weight column (for a debug assertion).
fn weight_column(relid: pg_sys::Oid) -> Result<bool, PgTrickleError> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = $1 \
         AND attname = $2 AND NOT attisdropped)",
        &[relid.into(), names::WEIGHT.into()],
    )?
    .unwrap_or(false))
}

fn run_with_frontier(sql: &str) -> Result<(i64, Frontier), PgTrickleError> {
    let (n, (snapshot, xid, seq)) = Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
        let row = client.update(sql, None, &[])?.first();
        Ok((
            row.get::<i64>(1)?,
            (
                row.get::<String>(2)?,
                row.get::<String>(3)?,
                row.get::<i64>(4)?,
            ),
        ))
    })?;
    let n = n.ok_or_else(|| {
        PgTrickleError::Internal("the FULL statement returned no row count".into())
    })?;
    Ok((n, Frontier::returned(snapshot, xid, seq)?))
}

/// Stores the new frontier and refresh time, and writes the history row; returns its id.
/// IMMEDIATE maintenance runs once per writing statement, so only its FULL refreshes are
/// recorded (`None` otherwise).
fn record(
    st: &StreamTable,
    outcome: &Outcome,
    frontier: &Frontier,
    start: &str,
    history: Option<i64>,
) -> Result<Option<i64>, PgTrickleError> {
    let set_frontier = cache::statement(
        "UPDATE pgtrickle.pgt_stream_tables SET frontier_snapshot = $1::pg_snapshot, \
         frontier_xid = $2::xid8, frontier_seq = $3, last_refresh_at = now(), \
         is_populated = true, needs_full_reason = NULL, last_error = NULL, \
         consecutive_errors = 0, next_retry_at = NULL WHERE pgt_id = $4",
        &[TEXT, TEXT, INT8, INT8],
    )?;
    Spi::connect_mut(|client| {
        client
            .update(
                &*set_frontier,
                None,
                &[
                    frontier.snapshot.as_str().into(),
                    frontier.xid.as_str().into(),
                    frontier.seq.into(),
                    st.id.into(),
                ],
            )
            .map(|_| ())
    })?;
    if st.effective_mode == Mode::Immediate && outcome.action != Action::Full && history.is_none() {
        return Ok(None);
    }
    let (sql, last) = match history {
        Some(id) => (
            "UPDATE pgtrickle.pgt_refresh_history SET end_time = clock_timestamp(), \
             action = $1, status = 'COMPLETED', reason = $2, rows_inserted = $3, \
             rows_deleted = $4, delta_rows = $5, changes = $7, choice = $8 WHERE refresh_id = $6",
            id,
        ),
        None => (
            "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, start_time, end_time, action, \
             status, reason, rows_inserted, rows_deleted, delta_rows, changes, choice) \
             VALUES ($6, $9::timestamptz, clock_timestamp(), $1, 'COMPLETED', $2, $3, $4, $5, \
             $7, $8) RETURNING refresh_id",
            st.id,
        ),
    };
    let mut types = vec![TEXT, TEXT, INT8, INT8, INT8, INT8, INT8, TEXT];
    let mut args: Vec<pgrx::datum::DatumWithOid> = vec![
        outcome.action.as_sql().into(),
        outcome.reason.as_deref().into(),
        outcome.rows_inserted.into(),
        outcome.rows_deleted.into(),
        outcome.delta_rows.into(),
        last.into(),
        outcome.changes.into(),
        outcome.choice.as_deref().into(),
    ];
    if history.is_none() {
        types.push(TEXT);
        args.push(start.into());
    }
    let stmt = cache::statement(sql, &types)?;
    match history {
        Some(id) => {
            Spi::connect_mut(|client| client.update(&*stmt, None, &args).map(|_| ()))?;
            Ok(Some(id))
        }
        None => {
            let id = Spi::connect_mut(|client| {
                client.update(&*stmt, None, &args)?.first().get::<i64>(1)
            })?;
            Ok(Some(crate::error::required(
                id,
                "pgt_refresh_history.refresh_id",
            )?))
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
#[allow(clippy::unwrap_used)]
mod tests {
    use pgrx::prelude::*;

    /// Rows in which stream table `st` (columns k, v) and `query` differ, both ways.
    fn differences(st: &str, query: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT (SELECT count(*) FROM (SELECT k, v FROM {st} EXCEPT ALL ({query})) x) \
             + (SELECT count(*) FROM (({query}) EXCEPT ALL SELECT k, v FROM {st}) y)"
        ))
        .unwrap()
        .unwrap()
    }

    fn refresh(st: &str) -> String {
        Spi::run(&format!("SELECT pgtrickle.refresh_stream_table('{st}')")).unwrap();
        Spi::get_one::<String>(&format!(
            "SELECT action FROM pgtrickle.get_refresh_history('{st}', 1)"
        ))
        .unwrap()
        .unwrap()
    }

    fn source_and_stream_table(src: &str, st: &str, query: &str) {
        Spi::run(&format!(
            "CREATE TABLE {src} (k int PRIMARY KEY, v int NOT NULL, w text)"
        ))
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO {src} SELECT g, g, 'x' FROM generate_series(1, 50) g"
        ))
        .unwrap();
        Spi::run(&format!(
            "SELECT pgtrickle.create_stream_table('{st}', '{query}', \
             refresh_mode => 'DIFFERENTIAL')"
        ))
        .unwrap();
    }

    /// The prepared statements of a session follow DDL on the source: after a column is
    /// added, another dropped and a NOT NULL removed, the next refresh is planned again.
    #[pg_test]
    fn prepared_refresh_follows_source_ddl() {
        let q = "SELECT k, v FROM src WHERE v % 2 = 0";
        source_and_stream_table("src", "st", q);
        Spi::run("UPDATE src SET v = v + 1 WHERE k <= 10").unwrap();
        assert_eq!(refresh("st"), "DIFFERENTIAL");
        Spi::run("ALTER TABLE src ADD COLUMN extra int DEFAULT 7").unwrap();
        Spi::run("ALTER TABLE src DROP COLUMN w").unwrap();
        Spi::run("ALTER TABLE src ALTER COLUMN v DROP NOT NULL").unwrap();
        Spi::run("INSERT INTO src (k, v) VALUES (100, 100), (101, NULL)").unwrap();
        Spi::run("DELETE FROM src WHERE k = 2").unwrap();
        assert_eq!(refresh("st"), "DIFFERENTIAL");
        assert_eq!(differences("st", q), 0);
    }

    /// A refresh with an empty change window records NO_DATA and moves the frontier, also
    /// after rows the same transaction wrote and already consumed.
    #[pg_test]
    fn empty_window_is_no_data_and_later_changes_still_arrive() {
        let q = "SELECT k, v FROM src WHERE v > 10";
        source_and_stream_table("src", "st", q);
        assert_eq!(refresh("st"), "NO_DATA");
        Spi::run("INSERT INTO src VALUES (60, 60, 'y')").unwrap();
        assert_eq!(refresh("st"), "DIFFERENTIAL");
        assert_eq!(refresh("st"), "NO_DATA");
        Spi::run("UPDATE src SET v = 0 WHERE k = 60").unwrap();
        assert_eq!(refresh("st"), "DIFFERENTIAL");
        assert_eq!(differences("st", q), 0);
    }

    /// The delta temp table is reused: dropped behind the refresh's back, it is created again.
    #[pg_test]
    fn refresh_recreates_a_dropped_delta_table() {
        let q = "SELECT k, v FROM src";
        source_and_stream_table("src", "st", q);
        Spi::run("INSERT INTO src VALUES (70, 70, 'y')").unwrap();
        assert_eq!(refresh("st"), "DIFFERENTIAL");
        Spi::run(
            "DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.oid::regclass AS t FROM pg_class c \
             WHERE c.relnamespace = pg_my_temp_schema() AND c.relname LIKE '\\_\\_pgt\\_delta\\_%' \
             LOOP EXECUTE format('DROP TABLE %s', r.t); END LOOP; END $$",
        )
        .unwrap();
        Spi::run("DELETE FROM src WHERE k = 70").unwrap();
        assert_eq!(refresh("st"), "DIFFERENTIAL");
        assert_eq!(differences("st", q), 0);
    }

    /// A subtransaction that created the delta table rolls back; the next refresh notices.
    #[pg_test]
    fn refresh_after_rolled_back_subtransaction() {
        let q = "SELECT k, v FROM src";
        source_and_stream_table("src", "st", q);
        Spi::run(
            "DO $$ BEGIN \
               BEGIN \
                 INSERT INTO src VALUES (80, 80, 'y'); \
                 PERFORM pgtrickle.refresh_stream_table('st'); \
                 RAISE EXCEPTION 'undo'; \
               EXCEPTION WHEN raise_exception THEN NULL; \
               END; \
             END $$",
        )
        .unwrap();
        Spi::run("INSERT INTO src VALUES (81, 81, 'y')").unwrap();
        assert_eq!(refresh("st"), "DIFFERENTIAL");
        assert_eq!(differences("st", q), 0);
    }

    /// Many refreshes in one transaction (as IMMEDIATE maintenance does): the delta table is
    /// emptied after each, and truncated once its dead rows pile up.
    #[pg_test]
    fn many_refreshes_in_one_transaction() {
        let q = "SELECT k, v FROM src";
        source_and_stream_table("src", "st", q);
        for i in 0..5 {
            let base = 1000 + i * 3000;
            Spi::run(&format!(
                "INSERT INTO src SELECT g, g, 'z' FROM generate_series({base}, {}) g",
                base + 2999
            ))
            .unwrap();
            assert_eq!(refresh("st"), "DIFFERENTIAL");
            Spi::run(&format!("UPDATE src SET v = v + 1 WHERE k % 7 = {i}")).unwrap();
            assert_eq!(refresh("st"), "DIFFERENTIAL");
            assert_eq!(differences("st", q), 0);
        }
    }
}
