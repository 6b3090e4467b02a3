-- pg_trickle 0.34.0 -> 0.35.0 (ALTER EXTENSION pg_trickle UPDATE).
-- Catalog: shadow builds (columns on pgt_stream_tables, table pgt_shadow_builds); new objects
-- of subscriptions, metrics, SLA summary, explain, shadow builds, outboxes and inboxes, created as a fresh
-- install creates them; changed functions replaced; alter_stream_table gains query and
-- shadow_build. Existing stream tables, their history, dependencies, capture and change
-- buffers stay as they are. ci/tests/upgrade.sh checks the result equals a fresh install.
\echo Use "ALTER EXTENSION pg_trickle UPDATE TO '0.35.0'" to load this file. \quit

-- 0.34.0 stored the session's temp schema (pg_temp_N) in a stream table's search_path when
-- it existed at creation: in another session that name means another session's schema, or
-- none. Dropped, as 0.35.0 stores it (pg_temp, last, stays).
UPDATE pgtrickle.pgt_stream_tables
   SET search_path = (SELECT pg_catalog.string_agg(p, ', ' ORDER BY o)
                        FROM pg_catalog.unnest(pg_catalog.string_to_array(search_path, ', '))
                             WITH ORDINALITY AS x(p, o)
                       WHERE p !~ '^"?pg_temp_[0-9]+"?$')
 WHERE search_path ~ 'pg_temp_[0-9]';

-- Shadow builds in the catalog.
ALTER TABLE pgtrickle.pgt_stream_tables
    ADD COLUMN in_shadow_build boolean NOT NULL DEFAULT false,
    ADD COLUMN shadow_table_name text,
    ADD COLUMN shadow_of bigint REFERENCES pgtrickle.pgt_stream_tables ON DELETE CASCADE;
CREATE INDEX ON pgtrickle.pgt_stream_tables (shadow_of) WHERE shadow_of IS NOT NULL;


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

REVOKE ALL ON pgtrickle.pgt_shadow_builds FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_shadow_builds TO PUBLIC;

ALTER TABLE pgtrickle.pgt_shadow_builds ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_shadow_builds FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_id OPERATOR(pg_catalog.=) pgt_shadow_builds.pgt_id));


-- alter_stream_table(name, schedule, refresh_mode, status) gains query and shadow_build.
DROP FUNCTION pgtrickle.alter_stream_table(text, text, text, text);

-- pg_trickle::api::alter_stream_table
CREATE  FUNCTION "alter_stream_table"(
	"name" TEXT, /* Option < & str > */
	"schedule" TEXT DEFAULT NULL, /* Option < & str > */
	"refresh_mode" TEXT DEFAULT NULL, /* Option < & str > */
	"status" TEXT DEFAULT NULL, /* Option < & str > */
	"query" TEXT DEFAULT NULL, /* Option < & str > */
	"shadow_build" bool DEFAULT false /* Option < bool > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'alter_stream_table_wrapper';


-- New in 0.35.0, as a fresh install creates them.

-- requires:
--   catalog_tables


-- Upper bounds (seconds) of the refresh duration histogram's buckets; +Inf is implied.
CREATE FUNCTION pgtrickle.refresh_duration_bounds() RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT '{0.001,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,120}'::double precision[] $$;
COMMENT ON FUNCTION pgtrickle.refresh_duration_bounds() IS
    'Upper bounds in seconds of the buckets of pgtrickle_refresh_duration_seconds (+Inf implied)';

-- The class of a FULL fallback's reason, the label of pgtrickle_full_fallbacks_total: a
-- bounded set of values, where the reason text names tables and functions. NULL for a FULL
-- load that is no fallback (the initial load of a new stream table, the load of a new
-- defining query).
CREATE FUNCTION pgtrickle.fallback_class(reason text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN reason IN ('initial load', 'the defining query changed') THEN NULL
        WHEN reason LIKE 'reinitialised: %' THEN 'reinitialised'
        WHEN reason LIKE 'not differentiable:%' THEN 'not_differentiable'
        WHEN reason = 'pg_trickle.force_full_refresh is on' THEN 'force_full_refresh'
        WHEN reason IN ('the stream table is not populated yet', 'no previous frontier')
            THEN 'not_populated'
        WHEN reason LIKE 'a source table was truncated%' THEN 'source_truncated'
        WHEN reason LIKE 'change capture was paused%' THEN 'capture_paused'
        WHEN reason LIKE 'row-level security of %' THEN 'row_security'
        WHEN reason LIKE 'AUTO chose FULL:%' THEN 'cost_estimate'
        WHEN reason LIKE 'this build of pg_trickle maintains its query with other hidden columns%'
            THEN 'storage_layout'
        WHEN reason LIKE 'the refresh mode changed to %' THEN 'mode_changed'
        WHEN reason LIKE 'the type of a column it reads changed%'
          OR reason LIKE 'a source was rewritten by ALTER TABLE%'
          OR reason LIKE 'a partitioned source was altered%'
          OR reason LIKE 'the columns its delta reads from a source changed%' THEN 'source_ddl'
        ELSE 'other'
    END
$$;
COMMENT ON FUNCTION pgtrickle.fallback_class(text) IS
    'The class of a FULL-fallback reason (label reason of pgtrickle_full_fallbacks_total)';

-- Cumulative refresh counts and durations per stream table, kept by the trigger below.
CREATE TABLE pgtrickle.pgt_refresh_stats (
    pgt_id       bigint NOT NULL REFERENCES pgtrickle.pgt_stream_tables ON DELETE CASCADE,
    -- FULL, DIFFERENTIAL, NO_DATA; '' for a refresh that failed before choosing.
    action       text NOT NULL,
    status       text NOT NULL CHECK (status IN ('COMPLETED', 'FAILED')),
    -- fallback_class() of a FULL refresh of a stream table not FULL by request; '' otherwise.
    fallback     text NOT NULL,
    refreshes    bigint NOT NULL,
    seconds_sum  double precision NOT NULL,
    -- Refreshes per bucket of refresh_duration_bounds() (not cumulative), +Inf last.
    buckets      bigint[] NOT NULL,
    PRIMARY KEY (pgt_id, action, status, fallback)
);
REVOKE ALL ON pgtrickle.pgt_refresh_stats FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_refresh_stats TO PUBLIC;
ALTER TABLE pgtrickle.pgt_refresh_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_refresh_stats FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_id OPERATOR(pg_catalog.=) pgt_refresh_stats.pgt_id));

-- Counts a refresh when its history row is written finished (inserted COMPLETED or FAILED,
-- or updated from RUNNING), in the refresh's own transaction. One statement: the bucket is
-- an expression (width_bucket counts the bounds <= secs; Prometheus buckets are "less than or
-- equal", so a duration equal to a bound belongs to that bound's bucket), and the requested
-- mode is read by the INSERT itself (no row when the stream table is gone: an orphaned row
-- marked FAILED). It runs at every refresh, the idle ones included, so it is kept cheap.
CREATE FUNCTION pgtrickle.count_refresh() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    secs double precision;
    bounds double precision[];
    slot integer;
BEGIN
    IF NEW.status NOT IN ('COMPLETED', 'FAILED')
       OR (TG_OP = 'UPDATE' AND OLD.status <> 'RUNNING') THEN
        RETURN NULL;
    END IF;
    secs := greatest(coalesce(
        extract(epoch FROM NEW.end_time - NEW.start_time)::double precision, 0), 0);
    bounds := pgtrickle.refresh_duration_bounds();
    slot := 1 + width_bucket(secs, bounds) - (secs = ANY (bounds))::integer;
    INSERT INTO pgtrickle.pgt_refresh_stats AS r
           (pgt_id, action, status, fallback, refreshes, seconds_sum, buckets)
    SELECT NEW.pgt_id, coalesce(NEW.action, ''), NEW.status,
           CASE WHEN NEW.action = 'FULL' AND NEW.reason IS NOT NULL AND s.refresh_mode <> 'FULL'
                THEN coalesce(pgtrickle.fallback_class(NEW.reason), '') ELSE '' END,
           1, secs,
           array_fill(0::bigint, ARRAY[slot - 1]) || 1::bigint
             || array_fill(0::bigint, ARRAY[cardinality(bounds) + 1 - slot])
      FROM pgtrickle.pgt_stream_tables s
     WHERE s.pgt_id = NEW.pgt_id
    ON CONFLICT (pgt_id, action, status, fallback) DO UPDATE
       SET refreshes = r.refreshes + 1, seconds_sum = r.seconds_sum + excluded.seconds_sum,
           buckets[slot] = r.buckets[slot] + 1;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgtrickle.count_refresh() FROM PUBLIC;
CREATE TRIGGER pgt_count_refresh
    AFTER INSERT OR UPDATE OF status ON pgtrickle.pgt_refresh_history
    FOR EACH ROW EXECUTE FUNCTION pgtrickle.count_refresh();

-- requires:
--   catalog_tables


CREATE FUNCTION pgtrickle.sla_summary()
RETURNS TABLE (name text, refreshes bigint, failures bigint, p50_ms double precision,
               p99_ms double precision, freshness_lag_s double precision,
               error_rate double precision, error_budget_remaining double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH h AS (
        SELECT h.pgt_id, h.status,
               extract(epoch FROM h.end_time - h.start_time)::float8 * 1000 AS ms
          FROM pgtrickle.pgt_refresh_history h
         WHERE h.start_time >= now() - make_interval(
                   hours => current_setting('pg_trickle.sla_window_hours')::int)
           AND h.status IN ('COMPLETED', 'FAILED')
    ), a AS (
        SELECT pgt_id,
               count(*) FILTER (WHERE status = 'COMPLETED') AS ok,
               count(*) FILTER (WHERE status = 'FAILED') AS bad,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)
                   FILTER (WHERE status = 'COMPLETED') AS p50,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
                   FILTER (WHERE status = 'COMPLETED') AS p99
          FROM h GROUP BY pgt_id
    )
    SELECT format('%I.%I', s.pgt_schema, s.pgt_name),
           coalesce(a.ok + a.bad, 0), coalesce(a.bad, 0), a.p50, a.p99,
           extract(epoch FROM now() - s.last_refresh_at)::float8,
           a.bad::float8 / nullif(a.ok + a.bad, 0),
           1 - (a.bad::float8 / nullif(a.ok + a.bad, 0))
               / (1 - current_setting('pg_trickle.sla_target')::float8)
      FROM pgtrickle.pgt_stream_tables s
      LEFT JOIN a ON a.pgt_id = s.pgt_id
     ORDER BY 1
$$;
COMMENT ON FUNCTION pgtrickle.sla_summary() IS
    'Refresh latency percentiles, freshness, error rate and error budget per stream table over pg_trickle.sla_window_hours';

-- pg_trickle::explain::explain_stream_table
CREATE  FUNCTION "explain_stream_table"(
	"name" TEXT, /* Option < & str > */
	"format" TEXT DEFAULT 'text', /* Option < & str > */
	"verbose" bool DEFAULT false /* Option < bool > */
) RETURNS TEXT /* Result < String, ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'explain_stream_table_wrapper';

-- pg_trickle::metrics::metrics
CREATE  FUNCTION "metrics"() RETURNS TABLE (
	"metric" TEXT,  /* String */
	"labels" TEXT[],  /* Vec < String > */
	"value" double precision,  /* f64 */
	"scope" TEXT  /* String */
)
STRICT STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'metrics_wrapper';

-- requires:
--   metrics
--   refresh_stats


CREATE VIEW pgtrickle.pgt_metrics AS SELECT * FROM pgtrickle.metrics();
GRANT SELECT ON pgtrickle.pgt_metrics TO PUBLIC;
COMMENT ON VIEW pgtrickle.pgt_metrics IS
    'The samples the Prometheus endpoint exports for this database (pgtrickle.metrics())';

-- pg_trickle::shadow::shadow_swap_in_progress
CREATE  FUNCTION "shadow_swap_in_progress"() RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'shadow_swap_in_progress_wrapper';

-- requires:
--   catalog_tables
--   shadow_swap_in_progress


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

-- pg_trickle::subscriptions::subscribe
CREATE  FUNCTION "subscribe"(
	"stream_table" TEXT, /* Option < & str > */
	"channel" TEXT /* Option < & str > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'subscribe_wrapper';

-- pg_trickle::subscriptions::unsubscribe
CREATE  FUNCTION "unsubscribe"(
	"stream_table" TEXT, /* Option < & str > */
	"channel" TEXT /* Option < & str > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'unsubscribe_wrapper';

-- pg_trickle::subscriptions::deliver_at_commit
CREATE FUNCTION "deliver_at_commit"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'deliver_at_commit_wrapper';

-- requires:
--   catalog_tables
--   deliver_at_commit


CREATE TABLE pgtrickle.pgt_subscriptions (
    pgt_schema          name NOT NULL,
    pgt_name            name NOT NULL,
    -- pg_notify's channel, as given (LISTEN "Name" for one with capitals or spaces).
    channel             text NOT NULL
                        CHECK (channel <> '' AND octet_length(channel) < 64),
    -- The role that subscribed (it, the stream table's owner, may unsubscribe).
    subscriber          name NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_notified_at    timestamptz,
    notifications_sent  bigint NOT NULL DEFAULT 0,
    refreshes_notified  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (pgt_schema, pgt_name, channel)
);
SELECT pg_catalog.pg_extension_config_dump('pgtrickle.pgt_subscriptions', '');

-- Refreshes not notified yet, one row per refresh and subscription (not dumped: it is
-- emptied by delivery).
CREATE TABLE pgtrickle.pgt_notify_pending (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pgt_schema  name NOT NULL,
    pgt_name    name NOT NULL,
    channel     text NOT NULL,
    refresh_id  bigint,
    inserted    bigint NOT NULL CHECK (inserted >= 0),
    deleted     bigint NOT NULL CHECK (deleted >= 0),
    FOREIGN KEY (pgt_schema, pgt_name, channel) REFERENCES pgtrickle.pgt_subscriptions
        ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX ON pgtrickle.pgt_notify_pending (pgt_schema, pgt_name, channel);

REVOKE ALL ON pgtrickle.pgt_subscriptions, pgtrickle.pgt_notify_pending FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_subscriptions, pgtrickle.pgt_notify_pending TO PUBLIC;
-- The subscriptions of the stream tables a role sees in pgt_stream_tables.
ALTER TABLE pgtrickle.pgt_subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_subscriptions FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_schema OPERATOR(pg_catalog.=) pgt_subscriptions.pgt_schema
               AND s.pgt_name OPERATOR(pg_catalog.=) pgt_subscriptions.pgt_name));
ALTER TABLE pgtrickle.pgt_notify_pending ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_notify_pending FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_schema OPERATOR(pg_catalog.=) pgt_notify_pending.pgt_schema
               AND s.pgt_name OPERATOR(pg_catalog.=) pgt_notify_pending.pgt_name));

-- A stream table renamed or moved keeps its subscriptions; a dropped one loses them (the
-- cascades of a foreign key, which pg_restore could not load before the stream tables).
CREATE FUNCTION pgtrickle.follow_stream_table_name() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM pgtrickle.pgt_subscriptions
         WHERE pgt_schema = OLD.pgt_schema AND pgt_name = OLD.pgt_name;
    ELSE
        UPDATE pgtrickle.pgt_subscriptions SET pgt_schema = NEW.pgt_schema, pgt_name = NEW.pgt_name
         WHERE pgt_schema = OLD.pgt_schema AND pgt_name = OLD.pgt_name;
    END IF;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION pgtrickle.follow_stream_table_name() FROM PUBLIC;
CREATE TRIGGER pgt_follow_name
    AFTER UPDATE OF pgt_schema, pgt_name OR DELETE ON pgtrickle.pgt_stream_tables
    FOR EACH ROW EXECUTE FUNCTION pgtrickle.follow_stream_table_name();

-- Delivery at the commit of the transaction that queued a notification.
CREATE CONSTRAINT TRIGGER pgt_deliver_at_commit
    AFTER INSERT ON pgtrickle.pgt_notify_pending
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION pgtrickle.deliver_at_commit();

CREATE FUNCTION pgtrickle.list_subscriptions()
RETURNS TABLE (stream_table text, channel text, subscriber name, created_at timestamptz,
               last_notified_at timestamptz, notifications_sent bigint,
               refreshes_notified bigint, pending_refreshes bigint, pending_inserted bigint,
               pending_deleted bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('%I.%I', s.pgt_schema, s.pgt_name), s.channel, s.subscriber, s.created_at,
           s.last_notified_at, s.notifications_sent, s.refreshes_notified,
           count(p.seq), coalesce(sum(p.inserted), 0)::bigint, coalesce(sum(p.deleted), 0)::bigint
      FROM pgtrickle.pgt_subscriptions s
      LEFT JOIN pgtrickle.pgt_notify_pending p
        ON (p.pgt_schema, p.pgt_name, p.channel) = (s.pgt_schema, s.pgt_name, s.channel)
     GROUP BY s.pgt_schema, s.pgt_name, s.channel
     ORDER BY 1, 2
$$;
COMMENT ON FUNCTION pgtrickle.list_subscriptions() IS
    'Subscriptions of the stream tables the caller may see, with what is pending delivery';


-- Replaced: pgt_status() leaves shadows out; get_refresh_history() resolves names through
-- stream_table_id() (new); the drop and DDL event triggers know shadow builds.

-- requires:
--   catalog_tables
--   shadow_builds
--   scheduling::scheduler_problem


DROP FUNCTION pgtrickle.pgt_status();
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

CREATE OR REPLACE FUNCTION pgtrickle.get_refresh_history(name text, max_rows integer DEFAULT 20)
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
CREATE OR REPLACE FUNCTION pgtrickle.on_sql_drop() RETURNS event_trigger
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


-- requires:
--   follow_source_ddl
--   follow_source_capture
--   sync_buffer_readers
--   catalog_tables
--   shadow_builds



-- ALTER TABLE of a source or of a stream table's storage, and ALTER SCHEMA … RENAME of a
-- schema holding either (source_ddl.rs). SECURITY DEFINER,
-- as on_sql_drop: the role altering its own table may not write the catalog or the buffers.
-- Each step runs in a subtransaction; nothing here may make the DDL or later writes fail.
CREATE OR REPLACE FUNCTION pgtrickle.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on AS $$
DECLARE
    rels oid[];
    st record;
    src oid;
    msg text;
BEGIN
    -- A shadow build's swap renames the two storages itself (shadow.rs).
    IF pgtrickle.shadow_swap_in_progress() THEN
        RETURN;
    END IF;
    -- The relations altered: by ALTER TABLE (with the partitions and inheritance children it
    -- recursed to, which are not reported), or every relation of a renamed schema.
    WITH RECURSIVE altered(relid) AS (
            SELECT c.objid FROM pg_event_trigger_ddl_commands() c
             WHERE c.classid = 'pg_catalog.pg_class'::regclass
            UNION
            SELECT k.oid FROM pg_event_trigger_ddl_commands() c
              JOIN pg_catalog.pg_class k ON k.relnamespace = c.objid
             WHERE c.classid = 'pg_catalog.pg_namespace'::regclass
            UNION
            SELECT i.inhrelid FROM altered JOIN pg_catalog.pg_inherits i ON i.inhparent = altered.relid)
    SELECT array_agg(DISTINCT r.relid) INTO rels
      FROM altered AS r
     WHERE EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = r.relid)
        OR EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_relid = r.relid);
    IF rels IS NULL THEN
        RETURN;
    END IF;
    -- A stream table's storage renamed or moved: the catalog follows (it is found by OID).
    UPDATE pgtrickle.pgt_stream_tables s SET pgt_schema = n.nspname, pgt_name = c.relname
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = s.pgt_relid AND s.pgt_relid = ANY (rels)
       AND (s.pgt_schema, s.pgt_name) IS DISTINCT FROM (n.nspname, c.relname);
    FOR st IN SELECT s.pgt_id, format('%I.%I', s.pgt_schema, s.pgt_name) AS name
                FROM pgtrickle.pgt_stream_tables s
               WHERE (s.pgt_relid = ANY (rels)
                      OR s.pgt_id IN (SELECT d.pgt_id FROM pgtrickle.pgt_dependencies d
                                       WHERE d.source_relid = ANY (rels)))
               ORDER BY s.pgt_id
    LOOP
        BEGIN
            PERFORM pgtrickle.follow_source_ddl(st.pgt_id, rels);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            -- Flagging may fail too (a deadlock with a refresh of that stream table): the
            -- user's DDL must not; its next refresh then fails and says why.
            BEGIN
                UPDATE pgtrickle.pgt_stream_tables
                   SET status = 'NEEDS_REINIT',
                       last_error = format('after ALTER TABLE of a source: %s', msg)
                 WHERE pgt_id = st.pgt_id;
                RAISE WARNING 'stream table % needs reinitialisation: %', st.name, msg
                    USING HINT = 'refresh_stream_table() rebuilds it once its defining query works again.';
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'pg_trickle could not follow ALTER TABLE for stream table %: %', st.name, msg;
            END;
        END;
    END LOOP;
    FOR src IN SELECT DISTINCT d.source_relid FROM pgtrickle.pgt_dependencies d
                WHERE d.source_relid = ANY (rels) ORDER BY 1
    LOOP
        BEGIN
            PERFORM pgtrickle.follow_source_capture(src);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            -- Last resort: capture only that a write happened, so writes never fail; the
            -- dependents wait for reinitialisation (which writes the capture anew). The
            -- capture trigger (pgtrickle.capture_changes) does so by itself when its buffer
            -- and source disagree; a source still captured by the PL/pgSQL function of 0.34
            -- gets a function that only leaves the marker.
            IF to_regclass(format('pgtrickle_changes.%I', 'changes_' || src)) IS NOT NULL
               AND to_regprocedure(format('pgtrickle_changes.%I()', 'capture_' || src)) IS NOT NULL THEN
                EXECUTE format($f$CREATE OR REPLACE FUNCTION pgtrickle_changes.%I() RETURNS trigger
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
                    $b$BEGIN INSERT INTO pgtrickle_changes.%I (__pgt_op) VALUES ('P'); RETURN NULL; END$b$ $f$,
                    'capture_' || src, 'changes_' || src);
            END IF;
            UPDATE pgtrickle.pgt_stream_tables
               SET status = 'NEEDS_REINIT',
                   last_error = format('after ALTER TABLE of a source, its capture failed: %s', msg)
             WHERE pgt_id IN (SELECT d.pgt_id FROM pgtrickle.pgt_dependencies d
                               WHERE d.source_relid = src);
            RAISE WARNING 'pg_trickle could not follow ALTER TABLE of %: %; its stream tables need reinitialisation', src::regclass, msg;
        END;
    END LOOP;
END
$$;



-- pg_dump's manifest of the stream tables and restore_stream_tables(); the UPDATE below fills
-- the manifest through its trigger.
-- pg_trickle::restore::restore_stream_tables
CREATE  FUNCTION "restore_stream_tables"() RETURNS TABLE (
	"stream_table" TEXT,  /* String */
	"action" TEXT  /* String */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'restore_stream_tables_wrapper';

-- requires:
--   catalog_tables
--   restore_stream_tables


-- The stream tables by name, for pg_dump (restore.rs): kept equal to the catalog by the
-- trigger below; restore_stream_tables() reads it after pg_restore.
CREATE TABLE pgtrickle.pgt_dump_manifest (
    pgt_schema      name NOT NULL,
    pgt_name        name NOT NULL,
    defining_query  text NOT NULL,
    search_path     text NOT NULL,
    schedule        text NOT NULL,
    refresh_mode    text NOT NULL,
    status          text NOT NULL,
    PRIMARY KEY (pgt_schema, pgt_name)
);
SELECT pg_catalog.pg_extension_config_dump('pgtrickle.pgt_dump_manifest', '');
REVOKE ALL ON pgtrickle.pgt_dump_manifest FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_dump_manifest TO PUBLIC;
ALTER TABLE pgtrickle.pgt_dump_manifest ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_dump_manifest FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_schema OPERATOR(pg_catalog.=) pgt_dump_manifest.pgt_schema
               AND s.pgt_name OPERATOR(pg_catalog.=) pgt_dump_manifest.pgt_name));

CREATE FUNCTION pgtrickle.sync_dump_manifest() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM pgtrickle.pgt_dump_manifest
         WHERE pgt_schema = OLD.pgt_schema AND pgt_name = OLD.pgt_name;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.shadow_of IS NULL THEN
        INSERT INTO pgtrickle.pgt_dump_manifest
               (pgt_schema, pgt_name, defining_query, search_path, schedule, refresh_mode, status)
        VALUES (NEW.pgt_schema, NEW.pgt_name, NEW.defining_query, NEW.search_path, NEW.schedule,
                NEW.refresh_mode, NEW.status)
        ON CONFLICT (pgt_schema, pgt_name) DO UPDATE
           SET defining_query = excluded.defining_query, search_path = excluded.search_path,
               schedule = excluded.schedule, refresh_mode = excluded.refresh_mode,
               status = excluded.status;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgtrickle.sync_dump_manifest() FROM PUBLIC;
CREATE TRIGGER pgt_sync_dump_manifest
    AFTER INSERT OR DELETE OR UPDATE OF pgt_schema, pgt_name, defining_query, search_path,
        schedule, refresh_mode, status, shadow_of
    ON pgtrickle.pgt_stream_tables
    FOR EACH ROW EXECUTE FUNCTION pgtrickle.sync_dump_manifest();

REVOKE EXECUTE ON FUNCTION pgtrickle.restore_stream_tables() FROM PUBLIC;

-- The scheduler looks at this database again (it waited for this update); the manifest gets a
-- row per stream table (shadows excluded).
UPDATE pgtrickle.pgt_stream_tables SET schedule = schedule;


-- Outboxes and inboxes (extension/src/outbox.rs, extension/src/inbox.rs), new in 0.35.0, as a
-- fresh install creates them, in its order.

-- requires:
--   schemas


-- The inboxes create_inbox made (a row goes with drop_inbox; an inbox table dropped by hand
-- leaves a row no lookup matches).
CREATE TABLE pgtrickle.pgt_inboxes (
    inbox_relid         oid PRIMARY KEY,
    dead_letter_relid   oid NOT NULL,
    max_payload_bytes   integer NOT NULL CHECK (max_payload_bytes > 0),
    required_keys       text[] NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pgtrickle.pgt_inboxes FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_inboxes TO PUBLIC;

-- requires:
--   inboxes


CREATE FUNCTION pgtrickle.inbox_ingest(inbox text, dedup_key text, payload text,
                                       source text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    box     record;
    doc     jsonb;
    reason  text;
    missing text[];
    n       bigint;
BEGIN
    IF inbox IS NULL THEN
        RAISE EXCEPTION 'argument "inbox" of inbox_ingest() must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT i.inbox_relid::pg_catalog.regclass AS tab,
           i.dead_letter_relid::pg_catalog.regclass AS dead,
           i.max_payload_bytes AS max_bytes, i.required_keys AS keys INTO box
      FROM pgtrickle.pgt_inboxes i
     WHERE i.inbox_relid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(inbox)::pg_catalog.oid
       AND EXISTS (SELECT FROM pg_catalog.pg_class c
                    WHERE c.oid OPERATOR(pg_catalog.=) i.dead_letter_relid);
    IF NOT FOUND THEN
        RAISE EXCEPTION '"%" is not an inbox', inbox USING ERRCODE = '42809',
            HINT = 'pgtrickle.create_inbox() creates an inbox and its dead-letter table.';
    END IF;
    IF dedup_key IS NULL OR dedup_key OPERATOR(pg_catalog.=) '' THEN
        reason := 'the dedup key is missing';
    ELSIF pg_catalog.octet_length(dedup_key) > 512 THEN
        reason := pg_catalog.format('the dedup key is %s bytes long, more than 512',
                                    pg_catalog.octet_length(dedup_key));
    ELSIF payload IS NULL THEN
        reason := 'the payload is missing';
    ELSIF pg_catalog.octet_length(payload) > box.max_bytes THEN
        reason := pg_catalog.format('the payload is %s bytes long, more than max_payload_bytes (%s)',
                                    pg_catalog.octet_length(payload), box.max_bytes);
    ELSE
        BEGIN
            doc := payload::pg_catalog.jsonb;
        EXCEPTION WHEN others THEN
            reason := 'the payload is not valid JSON: ' || SQLERRM;
        END;
        IF reason IS NULL AND pg_catalog.cardinality(box.keys) > 0 THEN
            IF pg_catalog.jsonb_typeof(doc) OPERATOR(pg_catalog.<>) 'object' THEN
                reason := 'the payload is not a JSON object, and the inbox requires keys';
            ELSE
                SELECT pg_catalog.array_agg(x.k ORDER BY x.o) INTO missing
                  FROM pg_catalog.unnest(box.keys) WITH ORDINALITY AS x(k, o)
                 WHERE NOT doc OPERATOR(pg_catalog.?) x.k;
                IF missing IS NOT NULL THEN
                    reason := 'the payload lacks required key(s): '
                              || pg_catalog.array_to_string(missing, ', ');
                END IF;
            END IF;
        END IF;
    END IF;
    IF reason IS NOT NULL THEN
        EXECUTE pg_catalog.format(
            'INSERT INTO %s (dedup_key, payload, source, reason) VALUES ($1, $2, $3, $4)', box.dead)
          USING dedup_key, payload, source, reason;
        RETURN 'dead_letter';
    END IF;
    EXECUTE pg_catalog.format(
        'INSERT INTO %s (dedup_key, payload, source) VALUES ($1, $2, $3) '
        'ON CONFLICT (dedup_key) DO NOTHING', box.tab)
      USING dedup_key, doc, source;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN CASE WHEN n OPERATOR(pg_catalog.=) 1 THEN 'inserted' ELSE 'duplicate' END;
END
$$;
COMMENT ON FUNCTION pgtrickle.inbox_ingest(text, text, text, text) IS
    'Stores a message in an inbox once (inserted, duplicate), or in its dead letters (dead_letter)';

-- requires:
--   catalog_tables


-- One row per stream table with an outbox. last_seq: the sequence number of its newest
-- message (the row is locked by every transaction that writes one, until it ends).
CREATE TABLE pgtrickle.pgt_outboxes (
    -- Random (below 2^53, exact in JSON everywhere): dedup keys carry it, and they must not
    -- repeat those of an earlier outbox, also one of before a restore or a re-created
    -- extension, which a sequence would start at 1 again.
    outbox_id           bigint PRIMARY KEY
                        DEFAULT (1 + floor(random() * 9007199254740990))::bigint,
    pgt_id              bigint NOT NULL UNIQUE
                        REFERENCES pgtrickle.pgt_stream_tables ON DELETE CASCADE,
    last_seq            bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    -- A message body larger than this is stored in pgt_outbox_payloads (claim check).
    inline_max_bytes    integer NOT NULL CHECK (inline_max_bytes >= 0),
    -- How long a claim-checked body stays after every group consumed its message.
    claim_check_retention interval NOT NULL CHECK (claim_check_retention >= '0'),
    -- A statement's change is split into messages of at most this many rows and bytes of
    -- row JSON (a single larger row is a message of its own).
    max_message_rows    integer NOT NULL CHECK (max_message_rows > 0),
    max_message_bytes   bigint NOT NULL CHECK (max_message_bytes BETWEEN 1 AND 134217728),
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- The messages not yet consumed by every consumer group.
CREATE TABLE pgtrickle.pgt_outbox (
    outbox_id       bigint NOT NULL REFERENCES pgtrickle.pgt_outboxes ON DELETE CASCADE,
    seq             bigint NOT NULL CHECK (seq > 0),
    -- Unique across the database's outboxes, also after disable and enable.
    dedup_key       text NOT NULL,
    -- delta: rows deleted and inserted; truncate: the storage was emptied (a FULL refresh,
    -- whose rows follow in the next message).
    op              text NOT NULL CHECK (op IN ('delta', 'truncate')),
    xid             xid8 NOT NULL,
    created_at      timestamptz NOT NULL,
    inserted_count  bigint NOT NULL CHECK (inserted_count >= 0),
    deleted_count   bigint NOT NULL CHECK (deleted_count >= 0),
    payload_bytes   integer NOT NULL,
    -- {"deleted": [...], "inserted": [...]}; NULL for a truncate or a claim-checked body.
    payload         jsonb,
    claim_check     boolean NOT NULL,
    PRIMARY KEY (outbox_id, seq),
    CHECK (NOT claim_check OR payload IS NULL)
);

-- Claim checks: bodies over their outbox's inline_max_bytes, read by consumers by
-- (outbox_id, seq). Kept claim_check_retention after every group consumed their message
-- (a consumer downstream of a sink reads them after the relay committed): stamped
-- consumed_at then, deleted by a later commit (or drop of a group) of the same outbox.
CREATE TABLE pgtrickle.pgt_outbox_payloads (
    outbox_id   bigint NOT NULL REFERENCES pgtrickle.pgt_outboxes ON DELETE CASCADE,
    seq         bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    -- When every consumer group had consumed its message (retention counts from then).
    consumed_at timestamptz,
    payload     jsonb NOT NULL,
    PRIMARY KEY (outbox_id, seq)
);

-- Consumer groups: a committed offset (every message up to it was delivered) and a lease.
CREATE TABLE pgtrickle.pgt_outbox_groups (
    outbox_id           bigint NOT NULL REFERENCES pgtrickle.pgt_outboxes ON DELETE CASCADE,
    group_name          text NOT NULL CHECK (group_name <> '' AND octet_length(group_name) <= 200),
    committed_seq       bigint NOT NULL CHECK (committed_seq >= 0),
    lease_holder        text,
    -- Incremented whenever another consumer takes the lease: commits carry it (fencing).
    lease_epoch         bigint NOT NULL DEFAULT 0,
    lease_expires_at    timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    committed_at        timestamptz,
    PRIMARY KEY (outbox_id, group_name)
);

REVOKE ALL ON pgtrickle.pgt_outboxes, pgtrickle.pgt_outbox, pgtrickle.pgt_outbox_payloads,
    pgtrickle.pgt_outbox_groups FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_outboxes, pgtrickle.pgt_outbox, pgtrickle.pgt_outbox_payloads,
    pgtrickle.pgt_outbox_groups TO PUBLIC;
-- What a role sees: the outboxes of the stream tables it sees in pgt_stream_tables (their
-- owner's roles and those with SELECT on them).
ALTER TABLE pgtrickle.pgt_outboxes ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_outboxes FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_id OPERATOR(pg_catalog.=) pgt_outboxes.pgt_id));
ALTER TABLE pgtrickle.pgt_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_outbox FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_outboxes o
             WHERE o.outbox_id OPERATOR(pg_catalog.=) pgt_outbox.outbox_id));
ALTER TABLE pgtrickle.pgt_outbox_payloads ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_outbox_payloads FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_outboxes o
             WHERE o.outbox_id OPERATOR(pg_catalog.=) pgt_outbox_payloads.outbox_id));
ALTER TABLE pgtrickle.pgt_outbox_groups ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_outbox_groups FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_outboxes o
             WHERE o.outbox_id OPERATOR(pg_catalog.=) pgt_outbox_groups.outbox_id));

-- Writes one message of outbox `box` (its next sequence number; the body inline or by claim
-- check). Called by outbox_capture only (EXECUTE is revoked from PUBLIC).
CREATE FUNCTION pgtrickle.outbox_write(box bigint, inline_max integer, kind text,
                                       del jsonb, ins jsonb, n_del bigint, n_ins bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    body        jsonb;
    bytes       integer := 0;
    next_seq    bigint;
BEGIN
    IF kind = 'delta' THEN
        body := jsonb_build_object('deleted', del, 'inserted', ins);
        bytes := octet_length(body::text);
    END IF;
    UPDATE pgtrickle.pgt_outboxes SET last_seq = last_seq + 1
     WHERE outbox_id = box RETURNING last_seq INTO next_seq;
    INSERT INTO pgtrickle.pgt_outbox (outbox_id, seq, dedup_key, op, xid, created_at,
                                      inserted_count, deleted_count, payload_bytes, payload,
                                      claim_check)
    VALUES (box, next_seq, format('%s:%s:%s', current_database(), box, next_seq), kind,
            pg_current_xact_id(), clock_timestamp(), n_ins, n_del, bytes,
            CASE WHEN bytes <= inline_max THEN body END, bytes > inline_max);
    IF bytes > inline_max THEN
        INSERT INTO pgtrickle.pgt_outbox_payloads (outbox_id, seq, created_at, payload)
        VALUES (box, next_seq, clock_timestamp(), body);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION pgtrickle.outbox_write(bigint, integer, text, jsonb, jsonb, bigint,
                                                  bigint) FROM PUBLIC;

-- The outbox triggers' function (statement level, AFTER, with transition tables __pgt_new and
-- __pgt_old as the event has them). Runs as the extension's owner: a refresh runs as the
-- stream table's owner, IMMEDIATE maintenance as the writer, and neither may write the outbox.
-- A statement within the outbox's max_message_rows and max_message_bytes of row JSON (10,000
-- and 64 MB by default; deleted and inserted together) is one message; a larger one is
-- several, each within both (a row larger than max_message_bytes alone), its deleted rows
-- first, then its inserted rows: applied in order they give the same result, and no body
-- outgrows what one jsonb value can hold (256 MB; max_message_bytes is at most 128 MB).
CREATE FUNCTION pgtrickle.outbox_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Every name a query over the storage's rows could confuse with a column starts with
-- __pgt_ (a prefix storage columns of users' choosing cannot have).
DECLARE
    box             record;
    __pgt_hidden    text[];
    ins             jsonb := '[]';
    del             jsonb := '[]';
    n_ins           bigint := 0;
    n_del           bigint := 0;
    est             bigint := 0;
    row_size        record;
    part            record;
    __pgt_bounds    bigint[];
    rows_in         bigint;
    bytes_in        bigint;
    tab             text;
BEGIN
    IF TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'pgtrickle.outbox_capture() is an AFTER … FOR EACH STATEMENT trigger';
    END IF;
    SELECT o.outbox_id, o.inline_max_bytes, o.max_message_rows, o.max_message_bytes INTO box
      FROM pgtrickle.pgt_outboxes o JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
     WHERE s.pgt_relid = TG_RELID;
    IF NOT FOUND THEN
        RETURN NULL;  -- not (or no longer) a stream table with an outbox
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pgtrickle.outbox_write(box.outbox_id, box.inline_max_bytes, 'truncate',
                                       NULL, NULL, 0, 0);
        RETURN NULL;
    END IF;
    SELECT coalesce(array_agg(a.attname::text), '{}') INTO __pgt_hidden
      FROM pg_attribute a
     WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
       AND starts_with(a.attname::text, '__pgt_');
    -- Counts, and an estimate of the JSON's size from the rows' stored size (JSON text is
    -- rarely over twice as long; four times leaves room), without building any JSON.
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT count(*), coalesce(sum(pg_column_size(__pgt_r.*)), 0) INTO n_ins, est
          FROM __pgt_new __pgt_r;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT n_del + count(*), est + coalesce(sum(pg_column_size(__pgt_r.*)), 0)
          INTO n_del, est FROM __pgt_old __pgt_r;
    END IF;
    IF n_ins = 0 AND n_del = 0 THEN
        RETURN NULL;
    END IF;
    IF n_ins + n_del <= box.max_message_rows AND est * 4 <= box.max_message_bytes THEN
        IF n_ins > 0 THEN
            SELECT jsonb_agg(to_jsonb(__pgt_r.*) - __pgt_hidden) INTO ins FROM __pgt_new __pgt_r;
        END IF;
        IF n_del > 0 THEN
            SELECT jsonb_agg(to_jsonb(__pgt_r.*) - __pgt_hidden) INTO del FROM __pgt_old __pgt_r;
        END IF;
        PERFORM pgtrickle.outbox_write(box.outbox_id, box.inline_max_bytes, 'delta', del, ins,
                                       n_del, n_ins);
        RETURN NULL;
    END IF;
    -- Several messages: the rows packed greedily, in the order of one scan, into parts of at
    -- most max_message_rows rows and max_message_bytes of row JSON (a larger row alone):
    -- __pgt_bounds holds the row number each part after the first starts at. Deleted rows
    -- first, then inserted rows; the transition table is named by EXECUTE (a statement
    -- naming one the event lacks would not plan).
    FOREACH tab IN ARRAY CASE TG_OP WHEN 'INSERT' THEN ARRAY['__pgt_new']
                                    WHEN 'DELETE' THEN ARRAY['__pgt_old']
                                    ELSE ARRAY['__pgt_old', '__pgt_new'] END LOOP
        __pgt_bounds := '{}';
        rows_in := 0;
        bytes_in := 0;
        FOR row_size IN EXECUTE format(
                'SELECT row_number() OVER () AS rn, '
                '       octet_length((to_jsonb(__pgt_r.*) - $1)::text) AS len '
                '  FROM %I __pgt_r', tab) USING __pgt_hidden LOOP
            IF rows_in > 0 AND (rows_in >= box.max_message_rows
                                OR bytes_in + row_size.len > box.max_message_bytes) THEN
                __pgt_bounds := __pgt_bounds || row_size.rn;
                rows_in := 0;
                bytes_in := 0;
            END IF;
            rows_in := rows_in + 1;
            bytes_in := bytes_in + row_size.len;
        END LOOP;
        FOR part IN EXECUTE format(
                'SELECT jsonb_agg(x.j ORDER BY x.rn) AS rows, count(*) AS n '
                '  FROM (SELECT to_jsonb(__pgt_r.*) - $1 AS j, row_number() OVER () AS rn '
                '          FROM %I __pgt_r) x '
                ' GROUP BY width_bucket(x.rn, $2) ORDER BY width_bucket(x.rn, $2)', tab)
                USING __pgt_hidden, __pgt_bounds LOOP
            IF tab = '__pgt_old' THEN
                PERFORM pgtrickle.outbox_write(box.outbox_id, box.inline_max_bytes, 'delta',
                                               part.rows, '[]', part.n, 0);
            ELSE
                PERFORM pgtrickle.outbox_write(box.outbox_id, box.inline_max_bytes, 'delta',
                                               '[]', part.rows, 0, part.n);
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION pgtrickle.outbox_status()
RETURNS TABLE (stream_table text, outbox_id bigint, last_seq bigint, retained bigint,
               claim_checked bigint, oldest_retained_at timestamptz, consumer_group text,
               committed_seq bigint, lag bigint, lease_holder text, lease_epoch bigint,
               lease_expires_at timestamptz, committed_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('%I.%I', s.pgt_schema, s.pgt_name), o.outbox_id, o.last_seq,
           m.retained, m.claim_checked, m.oldest, g.group_name, g.committed_seq,
           o.last_seq - g.committed_seq, g.lease_holder, g.lease_epoch, g.lease_expires_at,
           g.committed_at
      FROM pgtrickle.pgt_outboxes o
      JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
      CROSS JOIN LATERAL (SELECT count(*) AS retained,
                                 count(*) FILTER (WHERE x.claim_check) AS claim_checked,
                                 min(x.created_at) AS oldest
                            FROM pgtrickle.pgt_outbox x WHERE x.outbox_id = o.outbox_id) m
      LEFT JOIN pgtrickle.pgt_outbox_groups g ON g.outbox_id = o.outbox_id
     ORDER BY 1, 7
$$;
COMMENT ON FUNCTION pgtrickle.outbox_status() IS
    'Outboxes of the stream tables the caller may see: messages retained, consumer groups, their lag and leases';

-- pg_trickle::outbox::commit_outbox
CREATE  FUNCTION "commit_outbox"(
	"stream_table" TEXT, /* Option < & str > */
	"consumer_group" TEXT, /* Option < & str > */
	"consumer" TEXT, /* Option < & str > */
	"lease_epoch" bigint, /* Option < i64 > */
	"seq" bigint /* Option < i64 > */
) RETURNS bigint /* Result < i64, ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'commit_outbox_wrapper';

-- pg_trickle::outbox::create_consumer_group
CREATE  FUNCTION "create_consumer_group"(
	"stream_table" TEXT, /* Option < & str > */
	"consumer_group" TEXT, /* Option < & str > */
	"start_at" TEXT DEFAULT 'earliest' /* Option < & str > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_consumer_group_wrapper';

-- pg_trickle::inbox::create_inbox
CREATE  FUNCTION "create_inbox"(
	"name" TEXT, /* Option < & str > */
	"max_payload_bytes" INT DEFAULT 1048576, /* Option < i32 > */
	"required_keys" TEXT[] DEFAULT '{}' /* :: std :: option :: Option < Vec < String > > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_inbox_wrapper';

-- pg_trickle::outbox::disable_outbox
CREATE  FUNCTION "disable_outbox"(
	"stream_table" TEXT /* Option < & str > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'disable_outbox_wrapper';

-- pg_trickle::outbox::drop_consumer_group
CREATE  FUNCTION "drop_consumer_group"(
	"stream_table" TEXT, /* Option < & str > */
	"consumer_group" TEXT /* Option < & str > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drop_consumer_group_wrapper';

-- pg_trickle::inbox::drop_inbox
CREATE  FUNCTION "drop_inbox"(
	"name" TEXT /* Option < & str > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drop_inbox_wrapper';

-- pg_trickle::outbox::enable_outbox
CREATE  FUNCTION "enable_outbox"(
	"stream_table" TEXT, /* Option < & str > */
	"inline_max_bytes" INT DEFAULT 65536, /* Option < i32 > */
	"claim_check_retention" interval DEFAULT '1 day', /* Option < pgrx :: datum :: Interval > */
	"max_message_rows" INT DEFAULT 10000, /* Option < i32 > */
	"max_message_bytes" bigint DEFAULT 67108864 /* Option < i64 > */
) RETURNS VOID /* Result < (), ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'enable_outbox_wrapper';

-- pg_trickle::outbox::lease_outbox
CREATE  FUNCTION "lease_outbox"(
	"stream_table" TEXT, /* Option < & str > */
	"consumer_group" TEXT, /* Option < & str > */
	"consumer" TEXT, /* Option < & str > */
	"lease_seconds" double precision DEFAULT 30.0 /* Option < f64 > */
) RETURNS TABLE (
	"outbox_id" bigint,  /* i64 */
	"committed_seq" bigint,  /* i64 */
	"lease_epoch" bigint  /* i64 */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lease_outbox_wrapper';

-- pg_trickle::outbox::outbox_id
CREATE  FUNCTION "outbox_id"(
	"stream_table" TEXT /* Option < & str > */
) RETURNS bigint /* Result < i64, ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'outbox_id_wrapper';

-- requires:
--   outboxes
--   lease_outbox
--   outbox_id


-- Takes (or renews) the group's lease and returns up to max_messages messages after its
-- committed offset, in sequence order, each as its envelope (version 1, docs/RELAY_GUIDE.md).
CREATE FUNCTION pgtrickle.poll_outbox(stream_table text, consumer_group text, consumer text,
                                      max_messages integer DEFAULT 100,
                                      lease_seconds double precision DEFAULT 30.0)
RETURNS TABLE (seq bigint, dedup_key text, lease_epoch bigint, message jsonb)
-- The caller's search_path (stream_table is resolved with it, as by every pg_trickle
-- function): every name below is qualified, so that none of the caller's schemas can supply
-- a better-matching function or operator.
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    l record;
BEGIN
    IF max_messages IS NULL THEN
        RAISE EXCEPTION 'argument "max_messages" of poll_outbox() must not be NULL'
            USING ERRCODE = '22004';
    ELSIF max_messages < 1 THEN
        RAISE EXCEPTION 'invalid value for parameter "max_messages": "%"', max_messages
            USING ERRCODE = '22023', HINT = 'At least 1.';
    END IF;
    SELECT * INTO STRICT l
      FROM pgtrickle.lease_outbox(stream_table, consumer_group, consumer, lease_seconds);
    RETURN QUERY
    SELECT m.seq, m.dedup_key, l.lease_epoch,
           pg_catalog.jsonb_build_object('v', 1,
               'stream_table', pg_catalog.format('%I.%I', s.pgt_schema, s.pgt_name),
               'outbox_id', m.outbox_id, 'seq', m.seq, 'dedup_key', m.dedup_key, 'op', m.op,
               'xid', m.xid::pg_catalog.text, 'created_at', m.created_at,
               'inserted_count', m.inserted_count, 'deleted_count', m.deleted_count)
           OPERATOR(pg_catalog.||)
           CASE WHEN m.claim_check
                THEN pg_catalog.jsonb_build_object('claim_check', pg_catalog.jsonb_build_object(
                         'table', 'pgtrickle.pgt_outbox_payloads', 'outbox_id', m.outbox_id,
                         'seq', m.seq, 'bytes', m.payload_bytes))
                ELSE pg_catalog.jsonb_build_object('payload', m.payload) END
      FROM pgtrickle.pgt_outbox m
      JOIN pgtrickle.pgt_outboxes o ON o.outbox_id OPERATOR(pg_catalog.=) m.outbox_id
      JOIN pgtrickle.pgt_stream_tables s ON s.pgt_id OPERATOR(pg_catalog.=) o.pgt_id
     WHERE m.outbox_id OPERATOR(pg_catalog.=) l.outbox_id
       AND m.seq OPERATOR(pg_catalog.>) l.committed_seq
     ORDER BY m.seq
     LIMIT max_messages;
END
$$;
COMMENT ON FUNCTION pgtrickle.poll_outbox(text, text, text, integer, double precision) IS
    'Takes the consumer group''s lease and returns the messages after its committed offset';

-- The body of a claim-checked message ({"deleted": [...], "inserted": [...]}); NULL when it
-- was sent inline or its retention has passed (and, STRICT, for a NULL argument).
CREATE FUNCTION pgtrickle.outbox_payload(stream_table text, seq bigint) RETURNS jsonb
LANGUAGE sql VOLATILE STRICT AS $$
    SELECT p.payload FROM pgtrickle.pgt_outbox_payloads p
     WHERE p.outbox_id OPERATOR(pg_catalog.=) pgtrickle.outbox_id(stream_table)
       AND p.seq OPERATOR(pg_catalog.=) outbox_payload.seq
$$;
COMMENT ON FUNCTION pgtrickle.outbox_payload(text, bigint) IS
    'The body of a claim-checked outbox message';

-- pg_trickle::outbox::release_outbox_lease
CREATE  FUNCTION "release_outbox_lease"(
	"stream_table" TEXT, /* Option < & str > */
	"consumer_group" TEXT, /* Option < & str > */
	"consumer" TEXT, /* Option < & str > */
	"lease_epoch" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS bool /* Result < bool, ErrorReport > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'release_outbox_lease_wrapper';

-- AUTO's cost-based choice (0.35.0): the change count and the estimate of each refresh, and
-- the index its estimate reads the latest FULL and DIFFERENTIAL refreshes through.
ALTER TABLE pgtrickle.pgt_refresh_history ADD COLUMN changes bigint, ADD COLUMN choice text;
CREATE INDEX pgt_refresh_history_cost_idx ON pgtrickle.pgt_refresh_history (pgt_id, action, start_time)
    WHERE status = 'COMPLETED' AND (action = 'FULL' OR changes IS NOT NULL);

-- Change capture without PL/pgSQL: one C trigger function for every source (capture.rs). Every
-- captured source's four triggers are written anew for it, with argument 'maintain' where a
-- dependent is IMMEDIATE, and its 0.34 capture function is dropped. The buffers keep their
-- rows and columns: the new trigger writes the same rows.
CREATE FUNCTION pgtrickle."capture_changes"() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'capture_changes_wrapper';
REVOKE ALL ON FUNCTION pgtrickle.capture_changes() FROM PUBLIC;
DO $upgrade$
DECLARE
    src oid;
    args text;
    t record;
BEGIN
    FOR src IN SELECT substr(c.relname, 9)::oid FROM pg_catalog.pg_class c
                WHERE c.relnamespace = 'pgtrickle_changes'::regnamespace AND c.relkind = 'r'
                  AND c.relname ~ '^changes_[0-9]+$'
                  AND EXISTS (SELECT FROM pg_catalog.pg_class s
                               WHERE s.oid = substr(c.relname, 9)::oid)
    LOOP
        args := CASE WHEN EXISTS (SELECT FROM pgtrickle.pgt_dependencies d
                                    JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)
                                   WHERE d.source_relid = src
                                     AND s.effective_mode = 'IMMEDIATE')
                     THEN '''maintain''' ELSE '' END;
        FOR t IN SELECT * FROM (VALUES
                    ('__pgt_capture_ins', 'INSERT', 'REFERENCING NEW TABLE AS __pgt_new'),
                    ('__pgt_capture_upd', 'UPDATE',
                     'REFERENCING OLD TABLE AS __pgt_old NEW TABLE AS __pgt_new'),
                    ('__pgt_capture_del', 'DELETE', 'REFERENCING OLD TABLE AS __pgt_old'),
                    ('__pgt_capture_trunc', 'TRUNCATE', '')) AS v(name, event, referencing)
        LOOP
            IF EXISTS (SELECT FROM pg_catalog.pg_trigger
                        WHERE tgrelid = src AND tgname = t.name) THEN
                EXECUTE format('DROP TRIGGER %I ON %s', t.name, src::regclass);
            END IF;
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT '
                           'EXECUTE FUNCTION pgtrickle.capture_changes(%s)',
                           t.name, t.event, src::regclass, t.referencing, args);
        END LOOP;
        EXECUTE format('DROP FUNCTION IF EXISTS pgtrickle_changes.%I()', 'capture_' || src);
    END LOOP;
END
$upgrade$;
