//! The catalog tables of pg_trickle (schema `pgtrickle`): stream tables, their dependencies on
//! sources, and the refresh history, each row visible to the roles that own or may read its
//! stream table (row-level security). Created with the extension; the frontier columns hold the
//! snapshot of each stream table's last refresh (INV-1, INV-2).

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE TABLE pgtrickle.pgt_stream_tables (
    pgt_id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pgt_relid           oid NOT NULL UNIQUE,
    pgt_schema          name NOT NULL,
    pgt_name            name NOT NULL,
    defining_query      text NOT NULL,
    -- The defining query as PostgreSQL analysed it (nodeToString of its parse analysis, with
    -- relations by OID and columns by number): when a source is renamed, or one of its
    -- columns, the query is rendered again from it (source_ddl.rs). No pg_depend entries, so
    -- it never blocks DDL on the sources.
    query_tree          text,
    -- The search_path the query was created under; every refresh resolves names with it.
    search_path         text NOT NULL DEFAULT '',
    schedule            text NOT NULL DEFAULT 'calculated',
    refresh_mode        text NOT NULL DEFAULT 'AUTO'
                        CHECK (refresh_mode IN ('AUTO', 'DIFFERENTIAL', 'FULL', 'IMMEDIATE')),
    -- What AUTO resolved to, and why FULL when it did.
    effective_mode      text NOT NULL CHECK (effective_mode IN ('DIFFERENTIAL', 'FULL', 'IMMEDIATE')),
    full_reason         text,
    -- 'plan': storage has the engine's layout (user + hidden columns), so the mode can switch
    -- between FULL and DIFFERENTIAL; 'query': the plain query result (FULL only).
    storage_layout      text NOT NULL CHECK (storage_layout IN ('plan', 'query')),
    -- Set when the next refresh must be FULL whatever the change window holds.
    needs_full_reason   text,
    -- NEEDS_REINIT: a source's DDL changed what the query means or returns (a column it
    -- reads was dropped, its result would no longer fit the storage, a source was dropped);
    -- last_error says why, and refresh_stream_table rebuilds it (source_ddl.rs).
    status              text NOT NULL DEFAULT 'ACTIVE'
                        CHECK (status IN ('ACTIVE', 'SUSPENDED', 'ERROR', 'NEEDS_REINIT')),
    is_populated        boolean NOT NULL DEFAULT false,
    -- The frontier: the snapshot the last refresh read in, plus the refreshing transaction's
    -- own xid and the highest buffer sequence it consumed of its own rows (see frontier.rs).
    frontier_snapshot   pg_snapshot,
    frontier_xid        xid8,
    frontier_seq        bigint,
    last_refresh_at     timestamptz,
    last_error          text,
    consecutive_errors  integer NOT NULL DEFAULT 0,
    -- Set after a failed scheduled refresh: the scheduler waits until then (backoff).
    next_retry_at       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Shadow builds (shadow.rs): on a stream table, whether a shadow build of a new defining
    -- query runs and the shadow's storage table; on the shadow's own row, the stream table it
    -- is built for (the shadow goes with it).
    in_shadow_build     boolean NOT NULL DEFAULT false,
    shadow_table_name   text,
    shadow_of           bigint REFERENCES pgtrickle.pgt_stream_tables ON DELETE CASCADE,
    UNIQUE (pgt_schema, pgt_name)
);
CREATE INDEX ON pgtrickle.pgt_stream_tables (shadow_of) WHERE shadow_of IS NOT NULL;

CREATE TABLE pgtrickle.pgt_dependencies (
    pgt_id          bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables ON DELETE CASCADE,
    source_relid    oid NOT NULL,
    -- The source columns this stream table's delta reads (the buffer captures their union).
    columns_used    name[] NOT NULL,
    -- Every column of the source the stream table depends on (the ones PostgreSQL records for
    -- the query, plus the ones the engine reads, such as a primary key), by number, with the
    -- name and type (format_type) each had when the query was last planned, and the source's
    -- name as the query's search_path renders it then: DDL on the source is compared with it.
    read_attnums    int2[] NOT NULL DEFAULT '{}',
    read_names      name[] NOT NULL DEFAULT '{}',
    read_types      text[] NOT NULL DEFAULT '{}',
    source_name     text,
    -- The source's relfilenode then: ALTER TABLE rewrites change values without triggers.
    source_filenode oid,
    PRIMARY KEY (pgt_id, source_relid)
);
CREATE INDEX ON pgtrickle.pgt_dependencies (source_relid);

-- The user columns of each change buffer: which source column (by number) each one captures,
-- and the name and type it has in the buffer. Renames, type changes and drops of source
-- columns are followed by number (cdc.rs).
CREATE TABLE pgtrickle.pgt_capture_columns (
    source_relid    oid NOT NULL,
    attnum          int2 NOT NULL,
    name            name NOT NULL,
    type_sql        text NOT NULL,
    PRIMARY KEY (source_relid, attnum)
);

CREATE TABLE pgtrickle.pgt_refresh_history (
    refresh_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pgt_id          bigint NOT NULL,
    start_time      timestamptz NOT NULL DEFAULT clock_timestamp(),
    end_time        timestamptz,
    -- NULL while RUNNING and when the refresh failed before choosing.
    action          text CHECK (action IN ('FULL', 'DIFFERENTIAL', 'NO_DATA')),
    status          text NOT NULL CHECK (status IN ('RUNNING', 'COMPLETED', 'FAILED')),
    reason          text,
    rows_inserted   bigint,
    rows_deleted    bigint,
    delta_rows      bigint,
    error_sqlstate  text,
    error_message   text,
    -- Change-buffer rows the refresh's window held (counted before a DIFFERENTIAL or an
    -- AUTO-chosen FULL refresh of an incremental stream table), and AUTO's estimate of both
    -- modes with what it chose (engine/src/cost.rs).
    changes         bigint,
    choice          text
);
-- AUTO's estimate reads a stream table's latest FULL refreshes and the refreshes that counted
-- their changes (never the NO_DATA rows of empty windows a scheduler writes between them).
CREATE INDEX pgt_refresh_history_cost_idx ON pgtrickle.pgt_refresh_history (pgt_id, action, start_time)
    WHERE status = 'COMPLETED' AND (action = 'FULL' OR changes IS NOT NULL);
-- Monitoring reads history by time alone; the pruner deletes by time.
CREATE INDEX pgt_refresh_history_start_time_idx ON pgtrickle.pgt_refresh_history (start_time);
CREATE INDEX ON pgtrickle.pgt_refresh_history (pgt_id, start_time);
-- The scheduler looks for RUNNING rows no worker holds whenever a worker has stopped (one
-- that was killed leaves its row RUNNING); there are at most a few.
CREATE INDEX pgt_refresh_history_running_idx ON pgtrickle.pgt_refresh_history (pgt_id)
    WHERE status = 'RUNNING';

-- One row per shadow build (alter_stream_table(…, shadow_build => true)), kept after it
-- ended: view_evolution_status() reads the newest of a stream table. Phases: building (the
-- shadow's first FULL load), catching_up (differential refreshes from the change buffers),
-- swapping (the swap transaction waits for the live table's lock), done, rolled_back.
CREATE TABLE pgtrickle.pgt_shadow_builds (
    build_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pgt_id              bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables ON DELETE CASCADE,
    -- The shadow's own catalog row while it exists (it goes at the swap or the rollback).
    shadow_pgt_id       bigint,
    shadow_table_name   text NOT NULL,
    new_query           text NOT NULL,
    phase               text NOT NULL
                        CHECK (phase IN ('building', 'catching_up', 'swapping', 'done', 'rolled_back')),
    started_at          timestamptz NOT NULL DEFAULT now(),
    phase_changed_at    timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    -- Rows the shadow's first load wrote.
    rows_built          bigint,
    catch_up_refreshes  integer NOT NULL DEFAULT 0,
    -- How long the swap held the live table's ACCESS EXCLUSIVE lock before its commit.
    swap_lock_ms        double precision,
    error               text
);
CREATE INDEX ON pgtrickle.pgt_shadow_builds (pgt_id, build_id);

REVOKE ALL ON pgtrickle.pgt_stream_tables, pgtrickle.pgt_dependencies,
              pgtrickle.pgt_refresh_history, pgtrickle.pgt_capture_columns,
              pgtrickle.pgt_shadow_builds FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_stream_tables, pgtrickle.pgt_dependencies,
                pgtrickle.pgt_refresh_history, pgtrickle.pgt_capture_columns,
                pgtrickle.pgt_shadow_builds TO PUBLIC;

-- Everyone reads the catalog, but sees only the stream tables it owns (has the privileges of
-- the storage table's owner) or may read (SELECT on the storage table, as pg_views shows a
-- view's definition to those who can see the view): defining queries, errors and history of
-- other roles' stream tables stay hidden. The extension's owner, who owns these tables, and
-- superusers are not subject to the policies (pg_trickle's own statements run as the
-- extension's owner).
ALTER TABLE pgtrickle.pgt_stream_tables ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_stream_tables FOR SELECT USING (
    pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                             WHERE c.oid OPERATOR(pg_catalog.=) pgt_relid), 'USAGE')
    OR pg_catalog.has_table_privilege(pgt_relid, 'SELECT'));
ALTER TABLE pgtrickle.pgt_dependencies ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_dependencies FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_id OPERATOR(pg_catalog.=) pgt_dependencies.pgt_id));
ALTER TABLE pgtrickle.pgt_refresh_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_refresh_history FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_id OPERATOR(pg_catalog.=) pgt_refresh_history.pgt_id));
ALTER TABLE pgtrickle.pgt_shadow_builds ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_shadow_builds FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_id OPERATOR(pg_catalog.=) pgt_shadow_builds.pgt_id));
-- Which source columns a buffer captures: for those who may read the source.
ALTER TABLE pgtrickle.pgt_capture_columns ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_capture_columns FOR SELECT USING (
    pg_catalog.has_any_column_privilege(source_relid, 'SELECT'));
"#,
    name = "catalog_tables",
    requires = ["schemas"]
);
