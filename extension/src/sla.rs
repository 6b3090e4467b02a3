//! `pgtrickle.sla_summary()`: per stream table, how fast and how reliably it was refreshed
//! within the last `pg_trickle.sla_window_hours` (default 24), from the refresh history (read
//! through its index on `start_time`), and how old its contents are now. Formulas (also in
//! docs/SQL_REFERENCE.md), over the history rows that started within the window and finished:
//! - `p50_ms`, `p99_ms`: `percentile_cont(0.5)` and `(0.99)` of `end_time - start_time` of the
//!   COMPLETED refreshes, in milliseconds (NULL without any);
//! - `freshness_lag_s`: `now() - last_refresh_at` in seconds (NULL before the first refresh);
//! - `error_rate`: FAILED / (COMPLETED + FAILED) (NULL without any);
//! - `error_budget_remaining`: `1 - error_rate / (1 - pg_trickle.sla_target)` (1: no failure,
//!   0: the budget is used up, negative: overspent; NULL without any refresh).
//!
//! Row-level security of the history applies: a role sees the stream tables it may read.
//! IMMEDIATE maintenance records only its FULL cycles, so its statements do not count.

use pgrx::prelude::*;

extension_sql!(
    r#"
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
"#,
    name = "sla_summary",
    requires = ["catalog_tables"]
);
