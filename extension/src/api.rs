//! The SQL API in schema `pgtrickle`: create, alter, drop and refresh stream tables. Every
//! function returns `Result<_, ErrorReport>`, so each error reaches the client with its
//! SQLSTATE through the one conversion in error.rs.

// `ErrorReport` is pgrx's error type at the SQL boundary (it carries the SQLSTATE); it is
// returned once per call, so its size does not matter here.
#![allow(clippy::result_large_err)]

use engine::render::quote_literal;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::cdc;
use crate::definition;
use crate::error::{argument as required, PgTrickleError};
use crate::mode::{self, decide, plan_definition};
use crate::refresh;
use crate::schedule;
use crate::storage;
use crate::stream_table::{self, parse_name, Layout, Mode, RequestedMode, Status};
use engine::render::qualified;

fn check_schedule(s: &str) -> Result<(), PgTrickleError> {
    schedule::validate(s).map_err(|e| PgTrickleError::InvalidParameter {
        param: "schedule",
        value: e.0,
        hint: "Use 'calculated', a duration such as '30s', '5m' or '1h30m', or a cron \
               expression such as '*/5 * * * *' or '@hourly'."
            .into(),
    })
}

fn require_read_committed(what: &'static str) -> Result<(), PgTrickleError> {
    let iso = Spi::get_one::<String>("SELECT current_setting('transaction_isolation')")?
        .unwrap_or_default();
    if iso == "read committed" {
        Ok(())
    } else {
        Err(PgTrickleError::NeedsReadCommitted(what))
    }
}

/// Creates a stream table `name` defined by `query`, captures changes of its sources and (by
/// default) populates it.
/// No argument may be NULL (22004, naming it): a NULL is a mistake, not a request for the
/// default, which leaving the argument out gives.
#[pg_extern(volatile, parallel_unsafe)]
fn create_stream_table(
    name: Option<&str>,
    query: Option<&str>,
    schedule: default!(Option<&str>, "'calculated'"),
    refresh_mode: default!(Option<&str>, "'AUTO'"),
    initialize: default!(Option<bool>, true),
) -> Result<(), ErrorReport> {
    const F: &str = "create_stream_table";
    Ok(crate::settings::with_standard_strings(|| {
        create(
            required(F, "name", name)?,
            required(F, "query", query)?,
            required(F, "schedule", schedule)?,
            required(F, "refresh_mode", refresh_mode)?,
            required(F, "initialize", initialize)?,
        )
    })?)
}

/// The search_path a new stream table is stored with: the caller's schemas as they resolve
/// now (`$user` and missing schemas resolved away), with `pg_catalog` first and `pg_temp`
/// last — what PostgreSQL searches implicitly, made explicit so that no schema can shadow a
/// built-in name for pg_trickle's own statements and no session's temp table can shadow a
/// source (a refresh may run in another role's session: IMMEDIATE, the scheduler). An explicit
/// `pg_temp` in the caller's path is this session's temp schema (`pg_temp_4`) once it exists:
/// left out, as its name means another session's schema, or none, elsewhere.
fn stored_search_path() -> Result<String, PgTrickleError> {
    let schemas = Spi::get_one::<String>(
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s), ', ' ORDER BY o) \
         FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS x(s, o) \
         WHERE s OPERATOR(pg_catalog.<>) 'pg_catalog' \
           AND s OPERATOR(pg_catalog.<>) COALESCE((SELECT n.nspname::pg_catalog.text \
               FROM pg_catalog.pg_namespace n \
               WHERE n.oid OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()), '')",
    )?;
    Ok(match schemas {
        Some(s) => format!("pg_catalog, {s}, pg_temp"),
        None => "pg_catalog, pg_temp".to_string(),
    })
}

fn create(
    name: &str,
    query: &str,
    schedule: &str,
    refresh_mode: &str,
    initialize: bool,
) -> Result<(), PgTrickleError> {
    require_read_committed("create_stream_table()")?;
    let mode = RequestedMode::parse(refresh_mode)?;
    check_schedule(schedule)?;
    let (schema, rel) = parse_name(name)?;
    let schema = match schema {
        Some(s) => s,
        None => Spi::get_one::<String>("SELECT pg_catalog.current_schema()::pg_catalog.text")?
            .ok_or_else(|| PgTrickleError::Internal("no schema in search_path".into()))?,
    };
    let path = stored_search_path()?;
    // The query is analysed, planned and first run under the path it is stored with.
    crate::settings::with_search_path(&path, || {
        create_in(&schema, &rel, query, schedule, mode, initialize, &path)
    })
}

/// The caller creates the storage (so it owns it: CREATE on the schema is needed) after its
/// privileges on what the query reads are checked; the catalog and the capture are written as
/// the extension's owner.
fn create_in(
    schema: &str,
    rel: &str,
    query: &str,
    schedule: &str,
    mode: RequestedMode,
    initialize: bool,
    path: &str,
) -> Result<(), PgTrickleError> {
    let caller = crate::roles::current();
    let table = qualified(schema, rel);
    storage::ensure_free(&table)?;
    let query = normalized(query)?;
    let def = definition::probe(&query)?;
    definition::check_sources(&def)?;
    check_readable(&query)?;
    let decision = decide(&table, mode, plan_definition(&query, &def, caller)?)?;
    let layout = match &decision.plan {
        Some(plan) => {
            storage::create_for_plan(schema, rel, plan)?;
            Layout::Plan
        }
        None => {
            storage::create_for_query(schema, rel, &query)?;
            Layout::Query
        }
    };
    let st = crate::roles::as_extension_in(path, || {
        let id = Spi::get_one::<i64>(&format!(
            "INSERT INTO pgtrickle.pgt_stream_tables (pgt_relid, pgt_schema, pgt_name, \
             defining_query, query_tree, schedule, refresh_mode, effective_mode, full_reason, \
             storage_layout, search_path) \
             VALUES ({}::regclass, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}) \
             RETURNING pgt_id",
            quote_literal(&table),
            quote_literal(schema),
            quote_literal(rel),
            quote_literal(&query),
            quote_literal(&def.tree),
            quote_literal(schedule.trim()),
            quote_literal(mode.as_sql()),
            quote_literal(decision.effective_mode.as_sql()),
            decision
                .full_reason
                .as_deref()
                .map_or("NULL".into(), quote_literal),
            quote_literal(layout.as_sql()),
            quote_literal(path)
        ))?
        .ok_or_else(|| PgTrickleError::Internal("catalog insert returned no id".into()))?;
        // Capture first: CREATE TRIGGER waits for writers in flight, and the population below
        // then reads in a snapshot taken after every capture trigger exists
        // (docs/CORRECTNESS.md §4).
        mode::record_sources(id, &def, decision.plan.as_ref(), decision.effective_mode)?;
        stream_table::find_by_id(id, true)?.ok_or_else(|| {
            PgTrickleError::Internal(format!("stream table {table} vanished after creation"))
        })
    })?;
    let adopted = crate::subscriptions::channels(&st)?;
    if !adopted.is_empty() {
        pgrx::notice!(
            "stream table {} has {} subscriptions already (restored with the catalog): {}",
            table,
            adopted.len(),
            adopted.join(", ")
        );
    }
    // IMMEDIATE: populated now, whatever `initialize` says (every write maintains it).
    if initialize || decision.effective_mode == Mode::Immediate {
        refresh::initial_load(&st)?;
    }
    if decision.effective_mode != Mode::Immediate {
        crate::scheduling::warn_if_unserved(&table);
    }
    Ok(())
}

/// Creates and loads stream table `schema.rel` as pg_dump's manifest describes it (restore.rs),
/// as the caller, under the stored search_path `path`.
pub(crate) fn create_as_restored(
    schema: &str,
    rel: &str,
    query: &str,
    schedule: &str,
    mode: RequestedMode,
    path: &str,
) -> Result<(), PgTrickleError> {
    crate::settings::with_search_path(path, || {
        create_in(schema, rel, query, schedule, mode, true, path)
    })
}

/// A defining query as it is stored: trimmed, without a trailing semicolon; 42601 when
/// nothing is left.
fn normalized(query: &str) -> Result<String, PgTrickleError> {
    let query = query.trim().trim_end_matches(';').trim();
    if query.is_empty() {
        return Err(PgTrickleError::EmptyQuery);
    }
    Ok(query.to_string())
}

/// PostgreSQL's own privilege check of everything `query` reads (columns, views, and the
/// functions it calls), as the caller and without reading a row: 42501 names what the caller
/// may not read.
fn check_readable(query: &str) -> Result<(), PgTrickleError> {
    Spi::run(&format!(
        "SELECT FROM {} AS {} LIMIT 0",
        stream_table::enclosed(query),
        engine::names::QUERY_ALIAS
    ))?;
    Ok(())
}

/// The stream table a caller named, FOR UPDATE, after checking that the caller may act on it
/// as its owner (42501 otherwise).
pub(crate) fn owned(name: &str) -> Result<stream_table::StreamTable, PgTrickleError> {
    let caller = crate::roles::current();
    let st = stream_table::find(name, true)?;
    crate::roles::check_owner(caller, st.owner, &st.qualified())?;
    if let Some(of) = st.shadow_of {
        return Err(crate::shadow::is_shadow(&st, of)?);
    }
    Ok(st)
}

/// Refreshes a stream table now: DIFFERENTIAL over the changes since its last refresh, or FULL
/// when its mode says so or this cycle requires it (a NOTICE then says why).
#[pg_extern(volatile, parallel_unsafe)]
fn refresh_stream_table(name: Option<&str>) -> Result<(), ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let st = owned(required("refresh_stream_table", "name", name)?)?;
        if st.status == Status::NeedsReinit {
            crate::source_ddl::reinitialise(&st)
        } else {
            refresh::refresh(&st, None).map(|_| ())
        }
    })?)
}

/// Drops a stream table, its storage, and the change capture of sources nothing else reads.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_stream_table(name: Option<&str>) -> Result<(), ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        drop(required("drop_stream_table", "name", name)?)
    })?)
}

fn drop(name: &str) -> Result<(), PgTrickleError> {
    let st = owned(name)?;
    {
        // Its shadow first, as the caller (who may drop the owner's tables): its catalog row
        // would go with this one's by cascade, its storage would not.
        let shadow = crate::roles::as_extension(|| {
            Ok(Spi::get_one::<String>(&format!(
                "SELECT (SELECT c.oid::regclass::text FROM pgtrickle.pgt_stream_tables s \
                   JOIN pg_catalog.pg_class c ON c.oid = s.pgt_relid WHERE s.shadow_of = {})",
                st.id
            ))?)
        })?;
        if let Some(shadow) = shadow {
            Spi::run(&format!("DROP TABLE {shadow}"))?;
        }
    }
    crate::roles::as_extension(|| {
        let sources = stream_table::sources(st.id)?;
        Spi::run(&format!(
            "DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_id = {}",
            st.id
        ))?;
        Spi::run(&format!("DROP TABLE {}", st.qualified()))?;
        for temp in refresh::cache::forget(st.id) {
            crate::storage::drop_temp(&temp, "TABLE")?;
        }
        mode::release_sources(&sources)
    })
}

/// Changes a stream table's schedule, refresh mode, status (`ACTIVE` or `SUSPENDED`) or
/// defining query; with `shadow_build => true` the new query is built beside it in the
/// background and swapped in (shadow.rs). Arguments left NULL keep their value.
#[pg_extern(volatile, parallel_unsafe)]
fn alter_stream_table(
    name: Option<&str>,
    schedule: default!(Option<&str>, "NULL"),
    refresh_mode: default!(Option<&str>, "NULL"),
    status: default!(Option<&str>, "NULL"),
    query: default!(Option<&str>, "NULL"),
    shadow_build: default!(Option<bool>, "false"),
) -> Result<(), ErrorReport> {
    const F: &str = "alter_stream_table";
    Ok(crate::settings::with_standard_strings(|| {
        alter(
            required(F, "name", name)?,
            schedule,
            refresh_mode,
            status,
            query,
            required(F, "shadow_build", shadow_build)?,
        )
    })?)
}

fn alter(
    name: &str,
    schedule: Option<&str>,
    refresh_mode: Option<&str>,
    status: Option<&str>,
    query: Option<&str>,
    shadow_build: bool,
) -> Result<(), PgTrickleError> {
    if shadow_build && query.is_none() {
        return Err(PgTrickleError::InvalidParameter {
            param: "shadow_build",
            value: "true".into(),
            hint: "A shadow build builds a new defining query: give it as query => ….".into(),
        });
    }
    if query.is_some() {
        require_read_committed("alter_stream_table(query => …)")?;
    }
    let st = owned(name)?;
    // The query and the mode are the shadow build's until it ends.
    if st.in_shadow_build && (query.is_some() || refresh_mode.is_some()) {
        return Err(crate::shadow::in_progress(&st)?);
    }
    // A new query is also the way out of NEEDS_REINIT.
    if st.status == Status::NeedsReinit
        && query.is_none()
        && (status.is_some() || refresh_mode.is_some())
    {
        return Err(PgTrickleError::NeedsReinit {
            name: st.qualified(),
            reason: st.last_error.clone().unwrap_or_default(),
        });
    }
    let mut sets: Vec<String> = Vec::new();
    if let Some(s) = schedule {
        check_schedule(s)?;
        sets.push(format!("schedule = {}", quote_literal(s.trim())));
    }
    if let Some(s) = status {
        let upper = s.trim().to_ascii_uppercase();
        let status = match Status::from_catalog(&upper) {
            Ok(st @ (Status::Active | Status::Suspended)) => st,
            _ => {
                return Err(PgTrickleError::InvalidParameter {
                    param: "status",
                    value: upper,
                    hint: "Valid statuses are ACTIVE and SUSPENDED.".into(),
                })
            }
        };
        sets.push(format!("status = {}", quote_literal(status.as_sql())));
        if status == Status::Active {
            sets.push("consecutive_errors = 0".into());
        }
    }
    let mode = refresh_mode.map(RequestedMode::parse).transpose()?;
    if let Some(query) = query {
        // As create_stream_table, under the stored search_path; the rebuild decides the mode
        // and records the capture for it.
        let query = normalized(query)?;
        crate::settings::with_search_path(&st.search_path, || check_readable(&query))?;
        let mode = mode.unwrap_or(st.refresh_mode);
        if shadow_build {
            crate::shadow::start(&st, &query, mode)?;
        } else {
            crate::source_ddl::change_query(&st, &query, mode)?;
        }
    } else if let Some(mode) = &mode {
        sets.extend(change_mode(&st, *mode)?);
    }
    crate::roles::as_extension(|| {
        if !sets.is_empty() {
            Spi::run(&format!(
                "UPDATE pgtrickle.pgt_stream_tables SET {} WHERE pgt_id = {}",
                sets.join(", "),
                st.id
            ))?;
        }
        if mode.is_some() && query.is_none() {
            // Capture triggers maintain IMMEDIATE dependents: regenerate them for the new mode.
            for source in stream_table::sources(st.id)? {
                cdc::regenerate(source)?;
            }
            let now = stream_table::find_by_id(st.id, true)?;
            if let Some(now) = now.filter(|n| n.effective_mode == Mode::Immediate) {
                // Brought up to date at once: from now on every write maintains it.
                refresh::refresh(&now, None)?;
            }
        }
        Ok(())
    })
}

/// The catalog changes for a new refresh mode. Switching to DIFFERENTIAL or IMMEDIATE needs a
/// differentiable query and a plan-based storage layout; the buffers then start capturing the
/// columns the delta reads, and the next refresh runs FULL once when the stream table was
/// FULL, because rows captured so far lack those columns.
fn change_mode(
    st: &stream_table::StreamTable,
    mode: RequestedMode,
) -> Result<Vec<String>, PgTrickleError> {
    // Analysed and planned as the caller (who has the owner's privileges), for the owner.
    let planned = crate::settings::with_search_path(&st.search_path, || {
        plan_definition(&st.query, &definition::probe(&st.query)?, st.owner)
    })?;
    let decision = decide(&st.qualified(), mode, planned)?;
    let incremental = decision.effective_mode.incremental();
    if incremental && st.storage_layout != Layout::Plan {
        return Err(PgTrickleError::NotDifferentiable {
            name: st.qualified(),
            mode: decision.effective_mode.as_sql(),
            reason: "its storage was created for FULL refresh only; drop and recreate it".into(),
        });
    }
    let mut sets = vec![
        format!("refresh_mode = {}", quote_literal(mode.as_sql())),
        format!(
            "effective_mode = {}",
            quote_literal(decision.effective_mode.as_sql())
        ),
        format!(
            "full_reason = {}",
            decision
                .full_reason
                .as_deref()
                .map_or("NULL".into(), quote_literal)
        ),
    ];
    if incremental && st.effective_mode == Mode::Full {
        if let Some(plan) = &decision.plan {
            crate::roles::as_extension(|| {
                for s in &plan.sources {
                    Spi::run(&format!(
                        "UPDATE pgtrickle.pgt_dependencies SET columns_used = {} \
                         WHERE pgt_id = {} AND source_relid = {}",
                        definition::name_array(&s.columns),
                        st.id,
                        s.id
                    ))?;
                    cdc::ensure_capture(pg_sys::Oid::from(s.id), &s.columns)?;
                }
                Ok(())
            })?;
        }
        sets.push(format!(
            "needs_full_reason = {}",
            quote_literal(&format!(
                "the refresh mode changed to {}",
                decision.effective_mode
            ))
        ));
    }
    Ok(sets)
}

extension_sql!(
    r#"
CREATE FUNCTION pgtrickle.pgt_status()
RETURNS TABLE (name text, refresh_mode text, effective_mode text, status text, schedule text,
               is_populated boolean, last_refresh_at timestamptz, staleness interval,
               consecutive_errors integer, last_error text, full_reason text,
               scheduler_problem text, last_choice text)
LANGUAGE sql VOLATILE AS $$
    SELECT format('%I.%I', s.pgt_schema, s.pgt_name), s.refresh_mode, s.effective_mode,
           s.status, s.schedule, s.is_populated, s.last_refresh_at, now() - s.last_refresh_at,
           s.consecutive_errors, s.last_error, s.full_reason,
           CASE WHEN s.status = 'ACTIVE' AND s.effective_mode <> 'IMMEDIATE'
                THEN pgtrickle.scheduler_problem() END,
           (SELECT c.choice FROM (
                (SELECT h.choice, h.start_time FROM pgtrickle.pgt_refresh_history h
                  WHERE h.pgt_id = s.pgt_id AND h.status = 'COMPLETED' AND h.action = 'FULL'
                    AND h.choice IS NOT NULL ORDER BY h.start_time DESC LIMIT 1)
                UNION ALL
                (SELECT h.choice, h.start_time FROM pgtrickle.pgt_refresh_history h
                  WHERE h.pgt_id = s.pgt_id AND h.status = 'COMPLETED'
                    AND h.action IN ('DIFFERENTIAL', 'NO_DATA') AND h.changes IS NOT NULL
                    AND h.choice IS NOT NULL
                  ORDER BY h.start_time DESC LIMIT 1)) c
             ORDER BY c.start_time DESC LIMIT 1)
      FROM pgtrickle.pgt_stream_tables s WHERE s.shadow_of IS NULL ORDER BY 1
$$;
COMMENT ON FUNCTION pgtrickle.pgt_status() IS
    'One row per stream table: mode, status, last refresh, staleness, last error, what keeps the scheduler from refreshing it, and the latest refresh-mode estimate';

-- The id of the stream table a name resolves to. By schema and name, which a shadow build's
-- swap keeps: the OID it changes, and a name resolved just before a swap committed would miss
-- the catalog row read just after. The schema of an unqualified name is the first one of the
-- search_path holding a relation of that name (to_regclass, which reads the catalog caches).
CREATE FUNCTION pgtrickle.stream_table_id(name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    parts text[];
    sch text;
    id bigint;
BEGIN
    IF stream_table_id.name IS NULL THEN
        RAISE EXCEPTION 'argument "name" of stream_table_id() must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    -- The same name rule as the other functions (42602): PostgreSQL's identifier syntax, at
    -- most schema.table.
    BEGIN
        parts := parse_ident(stream_table_id.name);
        IF array_length(parts, 1) > 2 THEN
            RAISE EXCEPTION USING ERRCODE = '22023';
        END IF;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'invalid name syntax: "%"', stream_table_id.name
            USING ERRCODE = '42602';
    END;
    IF array_length(parts, 1) = 2 THEN
        sch := parts[1];
    ELSE
        SELECT x.s INTO sch
          FROM unnest(current_schemas(true)) WITH ORDINALITY AS x(s, o)
         WHERE to_regclass(format('%I.%I', x.s, parts[1])) IS NOT NULL
         ORDER BY x.o LIMIT 1;
    END IF;
    SELECT s.pgt_id INTO id FROM pgtrickle.pgt_stream_tables s
     WHERE s.pgt_schema = sch AND s.pgt_name = parts[array_length(parts, 1)];
    IF id IS NULL THEN
        RAISE EXCEPTION 'stream table "%" does not exist', stream_table_id.name
            USING ERRCODE = '42P01';
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION pgtrickle.stream_table_id(text) IS
    'The catalog id (pgt_id) of the stream table a name resolves to';

CREATE FUNCTION pgtrickle.get_refresh_history(name text, max_rows integer DEFAULT 20)
RETURNS TABLE (refresh_id bigint, start_time timestamptz, end_time timestamptz, action text,
               status text, reason text, rows_inserted bigint, rows_deleted bigint,
               delta_rows bigint, error_sqlstate text, error_message text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id bigint;
BEGIN
    IF get_refresh_history.name IS NULL THEN
        RAISE EXCEPTION 'argument "name" of get_refresh_history() must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    IF max_rows IS NULL THEN
        RAISE EXCEPTION 'argument "max_rows" of get_refresh_history() must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    id := pgtrickle.stream_table_id(get_refresh_history.name);
    IF max_rows < 0 THEN
        RAISE EXCEPTION 'max_rows must be zero or more' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT h.refresh_id, h.start_time, h.end_time, h.action, h.status, h.reason,
               h.rows_inserted, h.rows_deleted, h.delta_rows, h.error_sqlstate, h.error_message
          FROM pgtrickle.pgt_refresh_history h
         WHERE h.pgt_id = id ORDER BY h.refresh_id DESC LIMIT max_rows;
END
$$;

-- DROP TABLE of a stream table's storage forgets the stream table; DROP TABLE of a source
-- puts its dependents in NEEDS_REINIT (a refresh rebuilds them once the query works again). Either way, capture left without readers is removed.
-- SECURITY DEFINER: the role dropping a source or a storage table (its owner, say) may not
-- write the catalog or the buffers; an event trigger function cannot be called directly, and
-- it only acts on relations that were just dropped. Drops of anything else return at once.
CREATE FUNCTION pgtrickle.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on AS $$
DECLARE
    obj record;
    src oid;
    sh oid;
    touched oid[] := '{}';
BEGIN
    -- Only drops of stream tables and of their sources matter; this also keeps the drops
    -- below (and refreshes' temp tables) from doing the work again.
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() o
                    WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0
                      AND NOT o.is_temporary AND o.schema_name <> 'pgtrickle_changes'
                      AND (EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s
                                    WHERE s.pgt_relid = o.objid)
                           OR EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d
                                       WHERE d.source_relid = o.objid))) THEN
        RETURN;
    END IF;
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects()
               WHERE classid = 'pg_catalog.pg_class'::regclass AND objsubid = 0
    LOOP
        -- A shadow build's table dropped (by a user, which cancels the build, or by its
        -- rollback, which has recorded why): the build ends and its stream table is free.
        UPDATE pgtrickle.pgt_shadow_builds b
           SET phase = 'rolled_back', phase_changed_at = now(), finished_at = now(),
               error = coalesce(b.error, 'the shadow table was dropped')
          FROM pgtrickle.pgt_stream_tables s
         WHERE s.pgt_relid = obj.objid AND b.shadow_pgt_id = s.pgt_id
           AND b.phase NOT IN ('done', 'rolled_back');
        UPDATE pgtrickle.pgt_stream_tables l
           SET in_shadow_build = false, shadow_table_name = NULL
          FROM pgtrickle.pgt_stream_tables s
         WHERE s.pgt_relid = obj.objid AND l.pgt_id = s.shadow_of;
        -- A stream table dropped during a shadow build: its shadow goes too (its catalog row
        -- would go by cascade, its table not).
        FOR sh IN SELECT s.pgt_relid FROM pgtrickle.pgt_stream_tables s
                    JOIN pgtrickle.pgt_stream_tables l ON l.pgt_id = s.shadow_of
                   WHERE l.pgt_relid = obj.objid
        LOOP
            IF EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = sh) THEN
                EXECUTE format('DROP TABLE %s', sh::regclass);
            END IF;
        END LOOP;
        -- The sources of a dropped stream table: their buffer grants are synced below.
        touched := touched || ARRAY(SELECT d.source_relid FROM pgtrickle.pgt_dependencies d
                                      JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
                                     WHERE s.pgt_relid = obj.objid);
        DELETE FROM pgtrickle.pgt_stream_tables WHERE pgt_relid = obj.objid;
        UPDATE pgtrickle.pgt_stream_tables
           SET status = 'NEEDS_REINIT',
               last_error = format('source table %s was dropped', obj.object_identity)
         WHERE pgt_id IN (SELECT pgt_id FROM pgtrickle.pgt_dependencies
                           WHERE source_relid = obj.objid);
        DELETE FROM pgtrickle.pgt_dependencies WHERE source_relid = obj.objid;
    END LOOP;
    -- Buffers whose source nobody reads any more (or which no longer exists).
    FOR src IN SELECT substr(c.relname, 9)::oid FROM pg_catalog.pg_class c
                WHERE c.relnamespace = 'pgtrickle_changes'::regnamespace AND c.relkind = 'r'
                  AND c.relname ~ '^changes_[0-9]+$'
                  AND NOT EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d
                                   WHERE d.source_relid = substr(c.relname, 9)::oid)
    LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = src) THEN
            EXECUTE format('DROP TRIGGER IF EXISTS __pgt_capture_ins ON %s', src::regclass);
            EXECUTE format('DROP TRIGGER IF EXISTS __pgt_capture_upd ON %s', src::regclass);
            EXECUTE format('DROP TRIGGER IF EXISTS __pgt_capture_del ON %s', src::regclass);
            EXECUTE format('DROP TRIGGER IF EXISTS __pgt_capture_trunc ON %s', src::regclass);
        END IF;
        EXECUTE format('DROP FUNCTION IF EXISTS pgtrickle_changes.%I()', 'capture_' || src);
        EXECUTE format('DROP TABLE IF EXISTS pgtrickle_changes.%I', 'changes_' || src);
        DELETE FROM pgtrickle.pgt_capture_columns WHERE source_relid = src;
    END LOOP;
    -- Buffers still read: the dropped stream tables' owners lose their grants on them.
    FOREACH src IN ARRAY touched LOOP
        IF EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = src) THEN
            PERFORM pgtrickle.sync_buffer_readers(src);
        END IF;
    END LOOP;
END
$$;
CREATE EVENT TRIGGER pgt_sql_drop ON sql_drop EXECUTE FUNCTION pgtrickle.on_sql_drop();
"#,
    name = "status_history_and_drop_handling",
    requires = [
        "catalog_tables",
        "shadow_builds",
        scheduling::scheduler_problem
    ]
);
