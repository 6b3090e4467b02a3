//! Shadow builds: a stream table gets a new defining query without a moment in which it is
//! empty, locked for long, or wrong (`alter_stream_table(name, query => …, shadow_build =>
//! true)`, behind `pg_trickle.shadow_build_enabled`). docs/SHADOW_BUILDS.md is the user's
//! account; this is how it works.
//!
//! The shadow is a stream table of its own: a catalog row whose `shadow_of` names the stream
//! table it is built for, storage `__pgt_shadow_<name>` in the same schema with the same
//! owner, and dependencies and capture recorded like any stream table's. So each step reuses
//! the refresh machinery and its guarantees (snapshot frontier, INV-1..3):
//!
//! 1. **start** (the caller's transaction): the new query is analysed, planned and its mode
//!    decided under the stream table's stored search_path, as the caller; the shadow's storage,
//!    catalog row and capture are created, the stream table marked `in_shadow_build`, and a
//!    `pgt_shadow_builds` row written in phase `building`. Nothing else changes; refused
//!    before anything is written when the new result lacks a column a dependent stream table
//!    reads, when a view reads the stream table, for IMMEDIATE, and during another build.
//! 2. **building**: the scheduler's first refresh of the shadow is its FULL load, in a snapshot
//!    taken after its capture existed (the create's rule). It reads the sources only: the live
//!    stream table is neither locked nor written.
//! 3. **catching_up**: further refreshes of the shadow apply the change buffers differentially
//!    (FULL for a FULL query), at most one per `pg_trickle.shadow_refresh_throttle_ms`; the
//!    live stream table keeps being refreshed as before.
//! 4. **swapping**, after a catch-up refresh succeeded, in one transaction: both catalog rows
//!    FOR UPDATE (no refresh of either runs meanwhile); ACCESS EXCLUSIVE on the live storage
//!    (readers wait from here, bounded by `pg_trickle.refresh_lock_timeout_ms` for the lock;
//!    a timeout retries later); the shadow refreshed once more, so it holds the new query's
//!    result as of this transaction; the storages renamed (the live one to a retired name, the
//!    shadow to the live name, with the DDL event triggers told to stand aside); the live
//!    catalog row takes the shadow's query, mode, layout, frontier and dependencies (its id,
//!    name, schedule, subscriptions and history stay); grants copied; every stream table
//!    reading this one re-analysed against the new storage, its capture moved, its next
//!    refresh FULL; the retired storage dropped. Readers that waited re-resolve the name at
//!    commit and read the new table (PostgreSQL looks a name up again after waiting for a
//!    lock on a relation that was dropped meanwhile).
//! 5. **rolled_back**: a failed first load or permanent refresh error of the shadow, a swap
//!    that fails for another reason than a lock timeout, or `pg_trickle.shadow_timeout`
//!    reached: the shadow's storage is dropped (the drop event trigger forgets its row and its
//!    capture), the live stream table is untouched, and the error is recorded.
//!
//! Dropping the shadow's table cancels a build; dropping the stream table drops its shadow.

use std::time::Instant;

use engine::render::{qualified, quote_ident, quote_literal};
use pgrx::prelude::*;

use crate::error::{required, PgTrickleError, Retry};
use crate::stream_table::{self, Layout, Mode, RequestedMode, Status, StreamTable};
use crate::{config, definition, mode, refresh, storage, txn};

/// The storage prefix of a shadow.
const PREFIX: &str = "__pgt_shadow_";
/// PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;

/// Whether this backend is swapping a shadow build in, or otherwise altering a storage itself
/// (read by the DDL event triggers; see `storage::OwnDdl`).
#[pg_extern(volatile, parallel_unsafe)]
fn shadow_swap_in_progress() -> bool {
    crate::storage::own_ddl_in_progress()
}

/// The shadow storage name of stream table `name`: the prefix and the name, cut at a
/// character boundary to PostgreSQL's identifier length.
fn shadow_name(name: &str) -> String {
    let mut out = String::from(PREFIX);
    for c in name.chars() {
        if out.len() + c.len_utf8() > MAX_IDENT {
            break;
        }
        out.push(c);
    }
    out
}

/// Starts a shadow build of `st` (whose catalog row the caller holds FOR UPDATE, as its
/// owner) for the new defining `query` in `mode`. See the module comment, step 1.
pub(crate) fn start(
    st: &StreamTable,
    query: &str,
    mode: RequestedMode,
) -> Result<(), PgTrickleError> {
    let name = st.qualified();
    let refuse = |reason: &str| PgTrickleError::ShadowNotPossible {
        name: name.clone(),
        reason: reason.to_string(),
    };
    if !config::SHADOW_BUILD_ENABLED.get() {
        return Err(PgTrickleError::ShadowBuildsDisabled);
    }
    if st.in_shadow_build {
        return Err(in_progress(st)?);
    }
    if st.status == Status::NeedsReinit {
        return Err(refuse(
            "it needs reinitialisation, which a new query without shadow_build does at once",
        ));
    }
    if st.effective_mode == Mode::Immediate || mode == RequestedMode::Immediate {
        return Err(refuse(
            "IMMEDIATE stream tables are maintained by every write, which a shadow is not",
        ));
    }
    if let Some(reason) = storage_bound(st.relid)? {
        return Err(refuse(&reason));
    }
    if let Some(dependent) = immediate_dependent(st.relid)? {
        return Err(refuse(&format!(
            "stream table {dependent} reads it in IMMEDIATE mode, which no refresh would \
             bring up to the new contents"
        )));
    }
    let shadow = shadow_name(&st.name);
    let table = qualified(&st.schema, &shadow);
    storage::ensure_free(&table)?;
    // Analysed, planned and created under the stored search_path, as the caller (who owns
    // the stream table or has its owner's privileges): the storage is created as for
    // create_stream_table, then given to the stream table's owner.
    let (def, decision, layout) = crate::settings::with_search_path(&st.search_path, || {
        let def = definition::probe(query)?;
        definition::check_sources(&def)?;
        if let Some(reason) = definition::cycle_through(st.relid, &def)? {
            return Err(refuse(&reason));
        }
        let decision = mode::decide(&name, mode, mode::plan_definition(query, &def, st.owner)?)?;
        if decision.effective_mode == Mode::Immediate {
            return Err(refuse(
                "IMMEDIATE stream tables are maintained by every write, which a shadow is not",
            ));
        }
        let layout = match &decision.plan {
            Some(plan) => {
                storage::create_for_plan(&st.schema, &shadow, plan)?;
                Layout::Plan
            }
            None => {
                storage::create_for_query(&st.schema, &shadow, query)?;
                Layout::Query
            }
        };
        Ok((def, decision, layout))
    })?;
    if crate::roles::current() != st.owner {
        Spi::run(&format!(
            "ALTER TABLE {table} OWNER TO {}",
            quote_ident(&crate::roles::name_of(st.owner))
        ))?;
    }
    let shadow_relid =
        Spi::get_one::<pg_sys::Oid>(&format!("SELECT {}::regclass::oid", quote_literal(&table)))?
            .ok_or_else(|| PgTrickleError::Internal(format!("{table} vanished after creation")))?;
    check_dependents(st, shadow_relid)?;
    crate::roles::as_extension_in(&st.search_path, || {
        let id = Spi::get_one::<i64>(&format!(
            "INSERT INTO pgtrickle.pgt_stream_tables (pgt_relid, pgt_schema, pgt_name, \
             defining_query, query_tree, schedule, refresh_mode, effective_mode, full_reason, \
             storage_layout, search_path, shadow_of) \
             VALUES ({}, {}, {}, {}, {}, 'calculated', {}, {}, {}, {}, {}, {}) RETURNING pgt_id",
            shadow_relid.to_u32(),
            quote_literal(&st.schema),
            quote_literal(&shadow),
            quote_literal(query),
            quote_literal(&def.tree),
            quote_literal(mode.as_sql()),
            quote_literal(decision.effective_mode.as_sql()),
            decision
                .full_reason
                .as_deref()
                .map_or("NULL".into(), quote_literal),
            quote_literal(layout.as_sql()),
            quote_literal(&st.search_path),
            st.id
        ))?
        .ok_or_else(|| PgTrickleError::Internal("catalog insert returned no id".into()))?;
        mode::record_sources(id, &def, decision.plan.as_ref(), decision.effective_mode)?;
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_stream_tables SET in_shadow_build = true, \
             shadow_table_name = {} WHERE pgt_id = {}",
            quote_literal(&table),
            st.id
        ))?;
        Spi::run(&format!(
            "INSERT INTO pgtrickle.pgt_shadow_builds (pgt_id, shadow_pgt_id, shadow_table_name, \
             new_query, phase) VALUES ({}, {id}, {}, {}, 'building')",
            st.id,
            quote_literal(&table),
            quote_literal(query)
        ))?;
        Ok(())
    })?;
    crate::scheduling::request_at_commit();
    pgrx::notice!(
        "shadow build of stream table {name} started in {table}; \
         pgtrickle.view_evolution_status({}) follows it",
        quote_literal(&name)
    );
    crate::scheduling::warn_if_unserved(&name);
    Ok(())
}

/// The error for a second change of the query while `st`'s shadow build runs.
pub(crate) fn in_progress(st: &StreamTable) -> Result<PgTrickleError, PgTrickleError> {
    let shadow = Spi::get_one::<String>(&format!(
        "SELECT (SELECT shadow_table_name FROM pgtrickle.pgt_stream_tables WHERE pgt_id = {})",
        st.id
    ))?;
    Ok(PgTrickleError::ShadowBuildInProgress {
        name: st.qualified(),
        shadow: required(
            shadow,
            "pgt_stream_tables.shadow_table_name (in a shadow build)",
        )?,
    })
}

/// The error for an operation on a shadow's own storage.
pub(crate) fn is_shadow(st: &StreamTable, of: i64) -> Result<PgTrickleError, PgTrickleError> {
    let live = stream_table::find_by_id(of, false)?.ok_or_else(|| {
        PgTrickleError::Internal(format!("the shadow {} has no stream table", st.qualified()))
    })?;
    Ok(PgTrickleError::IsShadow {
        name: st.qualified(),
        of: live.qualified(),
    })
}

/// What ties the storage table `relid` to its OID, which the swap changes (the new storage
/// is another table): a view reading it (its dependency would refuse the drop of the old
/// storage), row-level security (the policies would not follow), a publication (its
/// subscribers would lose the table), an outbox (its triggers). None when nothing does.
fn storage_bound(relid: pg_sys::Oid) -> Result<Option<String>, PgTrickleError> {
    let r = relid.to_u32();
    Ok(Spi::get_one::<String>(&format!(
        "SELECT coalesce( \
           (SELECT 'view ' || r.ev_class::regclass::text || ' reads it, and the swap replaces \
                    its storage table' \
              FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
             WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass \
               AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = {r} \
               AND r.ev_class <> {r} ORDER BY 1 LIMIT 1), \
           (SELECT 'its storage has row-level security or policies, which the new storage \
                    would not have' FROM pg_catalog.pg_class c \
             WHERE c.oid = {r} AND (c.relrowsecurity OR EXISTS \
                   (SELECT FROM pg_catalog.pg_policy p WHERE p.polrelid = {r}))), \
           (SELECT 'it is in publication ' || pg_catalog.quote_ident(p.pubname) || \
                   ', which would lose the new storage' \
              FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p \
                ON p.oid = pr.prpubid WHERE pr.prrelid = {r} ORDER BY 1 LIMIT 1), \
           (SELECT 'it has an outbox, whose triggers the new storage would not have \
                    (pgtrickle.disable_outbox() removes it)' FROM pg_catalog.pg_trigger t \
             WHERE t.tgrelid = {r} AND t.tgname = '{}'))",
        engine::names::OUTBOX_TRIGGERS[0].0
    ))?)
}

/// An IMMEDIATE stream table reading the stream table with storage `relid`, if any: it is
/// maintained only by writes, and the swap writes nothing it would see.
fn immediate_dependent(relid: pg_sys::Oid) -> Result<Option<String>, PgTrickleError> {
    crate::roles::as_extension(|| {
        Ok(Spi::get_one::<String>(&format!(
            "SELECT (SELECT format('%I.%I', s.pgt_schema, s.pgt_name) \
               FROM pgtrickle.pgt_dependencies d JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
              WHERE d.source_relid = {} AND s.effective_mode = 'IMMEDIATE' \
              ORDER BY s.pgt_id LIMIT 1)",
            relid.to_u32()
        ))?)
    })
}

/// Refuses (42P16) a new storage `new` that lacks a column a stream table reading `st` reads,
/// or has it with another type: checked when the build starts and again at the swap.
fn check_dependents(st: &StreamTable, new: pg_sys::Oid) -> Result<(), PgTrickleError> {
    let have: Vec<(String, String)> = definition::attributes(new)?
        .into_iter()
        .map(|a| (a.name, a.type_sql))
        .collect();
    let reads: Vec<(String, Vec<String>, Vec<String>)> = crate::roles::as_extension(|| {
        Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT s.pgt_schema::text, s.pgt_name::text, d.read_names::text[], \
                         d.read_types FROM pgtrickle.pgt_dependencies d \
                         JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
                         WHERE d.source_relid = {} ORDER BY s.pgt_id",
                        st.relid.to_u32()
                    ),
                    None,
                    &[],
                )?
                .map(|r| {
                    Ok((
                        qualified(
                            &required(r.get::<String>(1)?, "pgt_stream_tables.pgt_schema")?,
                            &required(r.get::<String>(2)?, "pgt_stream_tables.pgt_name")?,
                        ),
                        required(r.get::<Vec<String>>(3)?, "pgt_dependencies.read_names")?,
                        required(r.get::<Vec<String>>(4)?, "pgt_dependencies.read_types")?,
                    ))
                })
                .collect::<Result<Vec<_>, PgTrickleError>>()
        })
    })?;
    for (dependent, names, types) in reads {
        for (col, ty) in names.iter().zip(&types) {
            let reason = match have.iter().find(|(n, _)| n == col) {
                None => format!(
                    "it reads column {}, which the new query does not return",
                    quote_ident(col)
                ),
                Some((_, t)) if t != ty => format!(
                    "it reads column {} as {ty}, which the new query returns as {t}",
                    quote_ident(col)
                ),
                Some(_) => continue,
            };
            return Err(PgTrickleError::BreaksDependent {
                name: st.qualified(),
                dependent,
                reason,
            });
        }
    }
    Ok(())
}

/// A running build, as the scheduler advances it.
struct Build {
    id: i64,
    live: i64,
    shadow: i64,
    phase: String,
    catch_ups: i32,
    expired: bool,
}

/// What the scheduler does next with a shadow build.
enum Step {
    Wait,
    Swap(Build),
    RollBack(Build, String),
}

/// Advances the build whose shadow is stream table `shadow` after the scheduler ran it (a
/// refresh, a failure, or a tick without changes): each decision and each swap in a
/// transaction of its own. Errors are the catalog's; the build's own are recorded on it.
pub(crate) fn after_run(shadow: i64) -> Result<(), PgTrickleError> {
    let result = match txn::in_transaction(|| next_step(shadow))? {
        Step::Wait => return Ok(()),
        Step::RollBack(b, reason) => txn::in_transaction(|| roll_back(&b, &reason)),
        Step::Swap(b) => match txn::in_transaction(|| swap(&b)) {
            Ok(()) => Ok(()),
            Err(e) if e.retry() == Retry::Retryable && !b.expired => txn::in_transaction(|| {
                // A lock wait that timed out (readers or a refresh held the live table), or
                // a FULL shadow whose sources changed since its last refresh: caught up again
                // and tried at a later run.
                log!(
                    "pg_trickle: the swap of shadow build {} is retried: {}: {e}",
                    b.id,
                    e.sqlstate()
                );
                set_phase(b.id, "catching_up", None)
            }),
            Err(e) => txn::in_transaction(|| {
                roll_back(&b, &format!("the swap failed: {}: {e}", e.sqlstate()))
            }),
        },
    };
    // This process's cached statements and delta table of the shadow are of no further use
    // once it was swapped in (the live stream table's id is another) or dropped.
    let ended = txn::in_transaction(|| {
        Ok(Spi::get_one::<bool>(&format!(
            "SELECT NOT EXISTS (SELECT FROM pgtrickle.pgt_stream_tables WHERE pgt_id = {shadow})"
        ))?
        .unwrap_or(false))
    })?;
    if ended {
        let temps = refresh::cache::forget(shadow);
        txn::in_transaction(|| {
            for t in &temps {
                storage::drop_temp(t, "TABLE")?;
            }
            Ok(())
        })?;
    }
    result
}

/// Rolls back the builds that can no longer move on their own: their shadow is not ACTIVE
/// (the scheduler runs only ACTIVE stream tables, and a shadow in NEEDS_REINIT or ERROR
/// would never be run again), its row is gone, or `pg_trickle.shadow_timeout` has passed.
/// Called by the scheduler at every tick; each rollback in a transaction of its own.
pub(crate) fn supervise() -> Result<(), PgTrickleError> {
    let timeout = config::SHADOW_TIMEOUT_SECONDS.get();
    let stuck: Vec<(Build, String)> = txn::in_transaction(|| {
        Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT b.build_id, b.pgt_id, b.shadow_pgt_id, b.phase, \
                                CASE WHEN s.pgt_id IS NULL THEN 'the shadow''s catalog row is gone' \
                                     WHEN now() - b.started_at > make_interval(secs => {timeout}) \
                                     THEN 'it was not swapped in within pg_trickle.shadow_timeout \
                                           ({timeout} s)' || coalesce('; last error: ' || s.last_error, '') \
                                     ELSE coalesce(s.last_error, 'the shadow went to status ' || s.status) END \
                           FROM pgtrickle.pgt_shadow_builds b \
                           LEFT JOIN pgtrickle.pgt_stream_tables s ON s.pgt_id = b.shadow_pgt_id \
                          WHERE b.phase IN ('building', 'catching_up', 'swapping') \
                            AND (s.pgt_id IS NULL OR s.status <> 'ACTIVE' \
                                 OR now() - b.started_at > make_interval(secs => {timeout})) \
                          ORDER BY b.build_id"
                    ),
                    None,
                    &[],
                )?
                .map(|r| {
                    let c = |n: &str| format!("pgt_shadow_builds.{n}");
                    Ok((
                        Build {
                            id: required(r.get::<i64>(1)?, &c("build_id"))?,
                            live: required(r.get::<i64>(2)?, &c("pgt_id"))?,
                            shadow: required(r.get::<i64>(3)?, &c("shadow_pgt_id"))?,
                            phase: required(r.get::<String>(4)?, &c("phase"))?,
                            catch_ups: 0,
                            expired: true,
                        },
                        required(r.get::<String>(5)?, "the reason of a stuck build")?,
                    ))
                })
                .collect::<Result<Vec<_>, PgTrickleError>>()
        })
    })?;
    for (b, reason) in stuck {
        if let Err(e) = txn::in_transaction(|| roll_back(&b, &reason)) {
            log!("pg_trickle: rolling back shadow build {} failed: {e}", b.id);
        }
    }
    Ok(())
}

fn set_phase(build: i64, phase: &str, error: Option<&str>) -> Result<(), PgTrickleError> {
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_shadow_builds SET phase = {}, phase_changed_at = now(), \
         error = coalesce({}, error) WHERE build_id = {build}",
        quote_literal(phase),
        error.map_or("NULL".into(), quote_literal)
    ))?;
    Ok(())
}

fn next_step(shadow: i64) -> Result<Step, PgTrickleError> {
    let timeout = config::SHADOW_TIMEOUT_SECONDS.get();
    let row = Spi::connect_mut(|client| {
        let t = client.update(
            &format!(
                "SELECT b.build_id, b.pgt_id, b.phase, b.catch_up_refreshes, \
                        now() - b.started_at > make_interval(secs => {timeout}), \
                        s.status, s.is_populated, s.consecutive_errors, s.last_error \
                   FROM pgtrickle.pgt_shadow_builds b \
                   JOIN pgtrickle.pgt_stream_tables s ON s.pgt_id = b.shadow_pgt_id \
                  WHERE b.shadow_pgt_id = {shadow} \
                    AND b.phase IN ('building', 'catching_up', 'swapping') \
                  FOR UPDATE OF b"
            ),
            None,
            &[],
        )?;
        let Some(r) = t.into_iter().next() else {
            return Ok::<_, PgTrickleError>(None);
        };
        let c = |n: &str| format!("pgt_shadow_builds.{n}");
        Ok(Some((
            Build {
                id: required(r.get::<i64>(1)?, &c("build_id"))?,
                live: required(r.get::<i64>(2)?, &c("pgt_id"))?,
                shadow,
                phase: required(r.get::<String>(3)?, &c("phase"))?,
                catch_ups: required(r.get::<i32>(4)?, &c("catch_up_refreshes"))?,
                expired: required(r.get::<bool>(5)?, "now() - started_at")?,
            },
            required(r.get::<String>(6)?, "pgt_stream_tables.status")?,
            required(r.get::<bool>(7)?, "pgt_stream_tables.is_populated")?,
            required(r.get::<i32>(8)?, "pgt_stream_tables.consecutive_errors")?,
            r.get::<String>(9)?,
        )))
    })?;
    let Some((b, status, populated, errors, last_error)) = row else {
        return Ok(Step::Wait);
    };
    if b.expired {
        return Ok(Step::RollBack(
            b,
            format!(
                "it was not swapped in within pg_trickle.shadow_timeout ({timeout} s){}",
                last_error.map_or(String::new(), |e| format!("; last error: {e}"))
            ),
        ));
    }
    if status != "ACTIVE" {
        // A permanent error or too many in a row (status ERROR), or a source gone
        // (NEEDS_REINIT): the new query does not work on these sources. A retryable failure
        // (a deadlock, a lock timeout) backs off and is tried again.
        let reason = last_error.unwrap_or_else(|| format!("the shadow went to status {status}"));
        return Ok(Step::RollBack(b, reason));
    }
    if errors > 0 || !populated {
        return Ok(Step::Wait); // a retryable failure backs off; or not loaded yet
    }
    if b.phase == "building" {
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_shadow_builds SET phase = 'catching_up', \
             phase_changed_at = now(), rows_built = (SELECT h.rows_inserted \
               FROM pgtrickle.pgt_refresh_history h WHERE h.pgt_id = {shadow} \
                AND h.status = 'COMPLETED' AND h.action = 'FULL' \
              ORDER BY h.refresh_id LIMIT 1) WHERE build_id = {}",
            b.id
        ))?;
        return Ok(Step::Wait);
    }
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_shadow_builds SET catch_up_refreshes = catch_up_refreshes + 1 \
         WHERE build_id = {}",
        b.id
    ))?;
    set_phase(b.id, "swapping", None)?;
    Ok(Step::Swap(Build {
        catch_ups: b.catch_ups + 1,
        ..b
    }))
}

/// Ends build `b` rolled back with `reason`: the stream table is free again and the shadow's
/// storage is dropped (the drop event trigger forgets its catalog row and capture).
fn roll_back(b: &Build, reason: &str) -> Result<(), PgTrickleError> {
    crate::roles::as_extension(|| {
        // Only a build still running (a user may have cancelled it, and started another,
        // since this one was looked at): its record ends, and the flag of the stream table
        // is cleared only while it still names this build's shadow.
        let running = Spi::get_one::<bool>(&format!(
            "WITH e AS (UPDATE pgtrickle.pgt_shadow_builds SET phase = 'rolled_back', \
               phase_changed_at = now(), finished_at = now(), error = {} \
              WHERE build_id = {} AND phase IN ('building', 'catching_up', 'swapping') \
              RETURNING 1) SELECT EXISTS (SELECT FROM e)",
            quote_literal(reason),
            b.id
        ))?
        .unwrap_or(false);
        if !running {
            return Ok(());
        }
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_stream_tables l SET in_shadow_build = false, \
             shadow_table_name = NULL WHERE l.pgt_id = {} \
             AND l.shadow_table_name = (SELECT b.shadow_table_name FROM pgtrickle.pgt_shadow_builds b \
                                         WHERE b.build_id = {})",
            b.live, b.id
        ))?;
        let table = Spi::get_one::<String>(&format!(
            "SELECT (SELECT c.oid::regclass::text FROM pgtrickle.pgt_stream_tables s \
               JOIN pg_catalog.pg_class c ON c.oid = s.pgt_relid WHERE s.pgt_id = {})",
            b.shadow
        ))?;
        if let Some(table) = table {
            Spi::run(&format!("DROP TABLE {table}"))?;
        }
        // The row goes with its storage (on_sql_drop); a row left without storage goes here.
        Spi::run(&format!(
            "DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_id = {}",
            b.shadow
        ))?;
        log!("pg_trickle: shadow build {} rolled back: {reason}", b.id);
        Ok(())
    })
}

/// Swaps the shadow of build `b` in (module comment, step 4). Any error rolls the whole
/// transaction back: the live stream table is then exactly as before.
fn swap(b: &Build) -> Result<(), PgTrickleError> {
    let timeout = config::REFRESH_LOCK_TIMEOUT_MS.get();
    Spi::run(&format!("SET LOCAL lock_timeout = {timeout}"))?;
    // Still this build's turn (not cancelled, not another build meanwhile).
    let current = Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT FROM pgtrickle.pgt_shadow_builds WHERE build_id = {} \
           AND shadow_pgt_id = {} AND phase = 'swapping' FOR UPDATE)",
        b.id, b.shadow
    ))?
    .unwrap_or(false);
    if !current {
        return Ok(());
    }
    let Some(live) = stream_table::find_by_id(b.live, true)? else {
        return Ok(());
    };
    let Some(shadow) = stream_table::find_by_id(b.shadow, true)? else {
        return Err(PgTrickleError::Internal(format!(
            "the shadow of stream table {} vanished during its build",
            live.qualified()
        )));
    };
    check_dependents(&live, shadow.relid)?;
    if let Some(dependent) = immediate_dependent(live.relid)? {
        return Err(PgTrickleError::ShadowNotPossible {
            name: live.qualified(),
            reason: format!("stream table {dependent} reads it in IMMEDIATE mode now"),
        });
    }
    if let Some(reason) = storage_bound(live.relid)? {
        return Err(PgTrickleError::ShadowNotPossible {
            name: live.qualified(),
            reason,
        });
    }
    // The storages' rows, counted before the lock (only refreshes write them, and both
    // catalog rows are held): the notification of the swap deletes the old ones and inserts
    // the new ones.
    let subscribed = crate::subscriptions::subscribed(&live)?;
    let before = if subscribed {
        Some((count(&live.qualified())?, count(&shadow.qualified())?))
    } else {
        None
    };
    let started = Instant::now();
    Spi::run(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        live.qualified()
    ))?;
    let locked = Instant::now();
    // The shadow as of this transaction. A differential shadow applies what arrived since
    // its last catch-up (little: one throttle interval). A FULL one would recompute
    // everything under the lock: it is swapped only when nothing arrived since its last
    // refresh, and otherwise retried after its next one.
    let applied = if shadow.effective_mode == Mode::Full {
        let old = shadow.frontier.as_ref().ok_or_else(|| {
            PgTrickleError::Internal("a FULL shadow without a frontier at its swap".into())
        })?;
        let buffers: Vec<String> = stream_table::sources(shadow.id)?
            .into_iter()
            .map(crate::cdc::buffer_name)
            .collect();
        if refresh::window_has_rows(&buffers, old)? {
            return Err(PgTrickleError::Spi {
                sqlstate: "40001".into(),
                message: "the sources of a FULL shadow changed since its last refresh".into(),
                detail: None,
            });
        }
        (0, 0)
    } else {
        let o = refresh::refresh(&shadow, None)?;
        (o.rows_inserted.unwrap_or(0), o.rows_deleted.unwrap_or(0))
    };
    let shadow = stream_table::find_by_id(b.shadow, true)?.ok_or_else(|| {
        PgTrickleError::Internal("the shadow vanished during its last refresh".into())
    })?;
    debug_assert!(
        shadow.is_populated && shadow.frontier.is_some(),
        "a shadow is swapped in only after a refresh recorded its frontier"
    );
    let counts = before.map(|(old_rows, new_rows)| (old_rows, new_rows + applied.0 - applied.1));
    let retired = format!("__pgt_retired_{}", live.id);
    {
        let _aside = crate::storage::OwnDdl::new();
        Spi::run(&format!(
            "ALTER TABLE {} RENAME TO {}",
            live.qualified(),
            quote_ident(&retired)
        ))?;
        let mut placed = shadow.qualified();
        if shadow.schema != live.schema {
            // The stream table moved to another schema during the build.
            Spi::run(&format!(
                "ALTER TABLE {placed} SET SCHEMA {}",
                quote_ident(&live.schema)
            ))?;
            placed = qualified(&live.schema, &shadow.name);
        }
        Spi::run(&format!(
            "ALTER TABLE {placed} RENAME TO {}",
            quote_ident(&live.name)
        ))?;
    }
    // The old storage's grants, on the new one (which has the stream table's name now).
    for g in crate::roles::table_grants(live.relid)? {
        Spi::run(&g.statement(&live.qualified()))?;
    }
    let old_sources = stream_table::sources(live.id)?;
    let dependents: Vec<i64> = crate::roles::as_extension(|| {
        Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT DISTINCT pgt_id FROM pgtrickle.pgt_dependencies \
                         WHERE source_relid = {} ORDER BY 1",
                        live.relid.to_u32()
                    ),
                    None,
                    &[],
                )?
                .map(|r| required(r.get::<i64>(1)?, "pgt_dependencies.pgt_id"))
                .collect()
        })
    })?;
    crate::roles::as_extension(|| {
        let (l, s) = (live.id, shadow.id);
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_refresh_history SET pgt_id = {l} WHERE pgt_id = {s}"
        ))?;
        Spi::run(&format!(
            "DELETE FROM pgtrickle.pgt_dependencies WHERE pgt_id = {l}"
        ))?;
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_dependencies SET pgt_id = {l} WHERE pgt_id = {s}"
        ))?;
        // The shadow's row gives up its storage first (pgt_relid is unique).
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_stream_tables SET pgt_relid = 0 WHERE pgt_id = {s}"
        ))?;
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_stream_tables l SET pgt_relid = {relid}, \
             defining_query = s.defining_query, query_tree = s.query_tree, \
             refresh_mode = s.refresh_mode, effective_mode = s.effective_mode, \
             full_reason = s.full_reason, storage_layout = s.storage_layout, \
             needs_full_reason = s.needs_full_reason, is_populated = s.is_populated, \
             frontier_snapshot = s.frontier_snapshot, frontier_xid = s.frontier_xid, \
             frontier_seq = s.frontier_seq, last_refresh_at = s.last_refresh_at, \
             last_error = NULL, consecutive_errors = 0, next_retry_at = NULL, \
             status = CASE l.status WHEN 'SUSPENDED' THEN 'SUSPENDED' ELSE 'ACTIVE' END, \
             in_shadow_build = false, shadow_table_name = NULL \
             FROM pgtrickle.pgt_stream_tables s WHERE l.pgt_id = {l} AND s.pgt_id = {s}",
            relid = shadow.relid.to_u32()
        ))?;
        Spi::run(&format!(
            "DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_id = {s}"
        ))?;
        Ok(())
    })?;
    // The stream tables reading this one read the new storage from now on.
    let reason = format!(
        "stream table {} it reads got a new defining query",
        live.qualified()
    );
    for id in dependents {
        if let Some(d) = stream_table::find_by_id(id, true)? {
            // One that cannot follow (its query no longer fits its storage, another of its
            // sources is gone) waits for its reinitialisation, as after source DDL; the
            // others and the swap go on.
            let followed = txn::attempt(|| crate::source_ddl::follow_replaced_source(&d, &reason));
            let error = match followed {
                Ok(Ok(())) => continue,
                Ok(Err(e)) | Err(e) => e,
            };
            crate::roles::as_extension(|| {
                Spi::run(&format!(
                    "UPDATE pgtrickle.pgt_stream_tables SET status = 'NEEDS_REINIT', \
                     last_error = {} WHERE pgt_id = {id}",
                    quote_literal(&format!("{reason}, and it could not follow: {error}"))
                ))?;
                Ok(())
            })?;
        }
    }
    crate::roles::as_extension(|| mode::release_sources(&old_sources))?;
    Spi::run(&format!("DROP TABLE {}", qualified(&live.schema, &retired)))?;
    rename_indexes(&live, &shadow)?;
    let now = stream_table::find_by_id(live.id, false)?.ok_or_else(|| {
        PgTrickleError::Internal(format!(
            "stream table {} vanished in its swap",
            live.qualified()
        ))
    })?;
    debug_assert!(
        now.relid == shadow.relid && now.query == shadow.query && !now.in_shadow_build,
        "after the swap the stream table is the shadow under the live name"
    );
    if let Some((before, after)) = counts {
        crate::roles::as_extension(|| crate::subscriptions::queue(&now, None, after, before))?;
    }
    let held_ms = locked.elapsed().as_secs_f64() * 1000.0;
    crate::roles::as_extension(|| {
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_shadow_builds SET phase = 'done', phase_changed_at = now(), \
             finished_at = now(), swap_lock_ms = {held_ms} WHERE build_id = {}",
            b.id
        ))?;
        Ok(())
    })?;
    log!(
        "pg_trickle: shadow build {} of stream table {} swapped in after {} catch-up refreshes \
         (lock waited {:.1} ms, held {:.1} ms before commit)",
        b.id,
        now.qualified(),
        b.catch_ups,
        (locked - started).as_secs_f64() * 1000.0,
        held_ms
    );
    Ok(())
}

/// Renames the indexes of the swapped-in storage that are named after the shadow (the
/// storage's own, created with it) after the stream table, as they were before; a name
/// another relation took meanwhile is left alone.
fn rename_indexes(live: &StreamTable, shadow: &StreamTable) -> Result<(), PgTrickleError> {
    let names: Vec<String> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT c.relname::text FROM pg_catalog.pg_index i \
                       JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
                      WHERE i.indrelid = {} ORDER BY 1",
                    shadow.relid.to_u32()
                ),
                None,
                &[],
            )?
            .filter_map(|r| r.get::<String>(1).transpose())
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    for name in names {
        let Some(rest) = name.strip_prefix(&shadow.name) else {
            continue;
        };
        let mut new = live.name.clone();
        for c in rest.chars() {
            if new.len() + c.len_utf8() > MAX_IDENT {
                break;
            }
            new.push(c);
        }
        let taken = Spi::get_one::<bool>(&format!(
            "SELECT pg_catalog.to_regclass({}) IS NOT NULL",
            quote_literal(&qualified(&live.schema, &new))
        ))?
        .unwrap_or(true);
        if !taken {
            Spi::run(&format!(
                "ALTER INDEX {} RENAME TO {}",
                qualified(&live.schema, &name),
                quote_ident(&new)
            ))?;
        }
    }
    Ok(())
}

fn count(table: &str) -> Result<i64, PgTrickleError> {
    Spi::get_one::<i64>(&format!("SELECT count(*) FROM {table}"))?
        .ok_or_else(|| PgTrickleError::Internal("count(*) returned NULL".into()))
}

extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION pgtrickle.shadow_swap_in_progress() FROM PUBLIC;

CREATE FUNCTION pgtrickle.view_evolution_status(name text)
RETURNS TABLE (phase text, shadow_table text, new_query text, rows_built bigint,
               lag interval, catch_up_refreshes integer, started_at timestamptz,
               finished_at timestamptz, swap_lock_ms double precision, error text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id bigint;
BEGIN
    IF view_evolution_status.name IS NULL THEN
        RAISE EXCEPTION 'argument "name" of view_evolution_status() must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    id := pgtrickle.stream_table_id(view_evolution_status.name);
    IF EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
                WHERE s.pgt_id = id AND s.shadow_of IS NOT NULL) THEN
        RAISE EXCEPTION '% is the shadow build of a stream table', view_evolution_status.name
            USING ERRCODE = '55000';
    END IF;
    -- The newest build; lag is how long ago the shadow last caught up (its start while it
    -- has not been loaded yet), while it runs.
    RETURN QUERY
        SELECT b.phase, b.shadow_table_name, b.new_query, b.rows_built,
               CASE WHEN b.finished_at IS NULL
                    THEN now() - coalesce(sh.last_refresh_at, b.started_at) END,
               b.catch_up_refreshes, b.started_at, b.finished_at, b.swap_lock_ms, b.error
          FROM pgtrickle.pgt_shadow_builds b
          LEFT JOIN pgtrickle.pgt_stream_tables sh ON sh.pgt_id = b.shadow_pgt_id
                                                   AND b.finished_at IS NULL
         WHERE b.pgt_id = id
         ORDER BY b.build_id DESC LIMIT 1;
END
$$;
COMMENT ON FUNCTION pgtrickle.view_evolution_status(text) IS
    'The newest shadow build of a stream table: phase (building, catching_up, swapping, done, rolled_back), rows built, lag, times, how long the swap held the lock, error';
"#,
    name = "shadow_builds",
    requires = ["catalog_tables", shadow_swap_in_progress]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_names_fit_an_identifier() {
        assert_eq!(shadow_name("orders"), "__pgt_shadow_orders");
        let long = "x".repeat(63);
        assert_eq!(shadow_name(&long).len(), MAX_IDENT);
        // Cut at a character boundary, never inside one.
        let wide = "é".repeat(40);
        let s = shadow_name(&wide);
        assert!(s.len() <= MAX_IDENT && s.is_char_boundary(s.len()));
        assert_eq!(s.len(), PREFIX.len() + 2 * 25);
    }
}
