//! Metrics: what pg_trickle does, as Prometheus samples.
//!
//! - `pgtrickle.metrics()` (and the view `pgtrickle.pgt_metrics`) returns one row per sample
//!   of the current database: `metric`, `labels` (a text array of name, value pairs), `value`
//!   and `scope` (`database`, or `cluster` for the scheduler's figures, which every database
//!   reports alike). It runs as its caller: row-level security of the catalog decides which
//!   stream tables a role sees, as in `pgt_status()`.
//! - Refresh counts and durations are cumulative and transactional: a trigger on the refresh
//!   history adds every finished refresh (COMPLETED or FAILED) to `pgt_refresh_stats` in the
//!   refresh's own transaction, so counters never go back when the history is pruned and a
//!   refresh that rolls back is not counted. IMMEDIATE maintenance records only its FULL
//!   cycles in the history, so only those are counted.
//! - With `pg_trickle.metrics_port` set, a background worker serves the Prometheus text format
//!   on `http://<pg_trickle.metrics_listen_address>:<port>/metrics`: at each scrape it connects
//!   to every database that accepts connections (over the server's Unix socket, as the
//!   bootstrap superuser), reads `pgtrickle.metrics()` where the extension exists, adds a
//!   `database` label to the database-scoped samples and renders them once.
//!
//! The catalogue [`FAMILIES`] names every metric, its type and help; docs/MONITORING.md lists
//! it for users, and the Grafana dashboard and alert rules may name only these (checked by
//! ci/tests/metrics.sh).

// pgrx's ErrorReport is the error type of SQL functions (what PostgreSQL reports).
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::config;
use crate::error::{required, PgTrickleError};
use crate::schedule::{self, Schedule};

extension_sql!(
    r#"
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
"#,
    name = "refresh_stats",
    requires = ["catalog_tables"]
);

extension_sql!(
    r#"
CREATE VIEW pgtrickle.pgt_metrics AS SELECT * FROM pgtrickle.metrics();
GRANT SELECT ON pgtrickle.pgt_metrics TO PUBLIC;
COMMENT ON VIEW pgtrickle.pgt_metrics IS
    'The samples the Prometheus endpoint exports for this database (pgtrickle.metrics())';
"#,
    name = "metrics_view",
    requires = [metrics, "refresh_stats"]
);

/// How a metric family is exposed (the `# TYPE` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Every metric pg_trickle exports: name, type, help. The endpoint writes `# HELP` and
/// `# TYPE` for each, also when it has no sample yet.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "pgtrickle_refreshes_total",
        Kind::Counter,
        "Finished refreshes by stream table, action (FULL, DIFFERENTIAL, NO_DATA; none when it failed before choosing) and status (COMPLETED, FAILED).",
    ),
    (
        "pgtrickle_refresh_errors_total",
        Kind::Counter,
        "Failed refreshes by stream table.",
    ),
    (
        "pgtrickle_refresh_duration_seconds",
        Kind::Histogram,
        "Duration of completed refreshes by stream table and action.",
    ),
    (
        "pgtrickle_full_fallbacks_total",
        Kind::Counter,
        "FULL refreshes of stream tables not FULL by request, by stream table and reason class.",
    ),
    (
        "pgtrickle_stream_table_info",
        Kind::Gauge,
        "Always 1: a stream table with its requested and effective refresh mode and status.",
    ),
    (
        "pgtrickle_staleness_seconds",
        Kind::Gauge,
        "Seconds since the stream table was last known current: its last refresh, or the scheduler's last check that found no change (no sample before the first refresh).",
    ),
    (
        "pgtrickle_schedule_seconds",
        Kind::Gauge,
        "The refresh interval of a stream table: its duration schedule, or pg_trickle.default_schedule_seconds for 'calculated' (none for cron).",
    ),
    (
        "pgtrickle_consecutive_errors",
        Kind::Gauge,
        "Failed scheduled refreshes in a row of a stream table.",
    ),
    (
        "pgtrickle_error_budget_remaining",
        Kind::Gauge,
        "sla_summary()'s error budget left over pg_trickle.sla_window_hours (1 unused, 0 spent, negative overspent).",
    ),
    (
        "pgtrickle_change_buffer_rows",
        Kind::Gauge,
        "Rows in a source's change buffer, captured and not yet consumed by every dependent.",
    ),
    (
        "pgtrickle_change_buffer_lag_transactions",
        Kind::Gauge,
        "CDC lag: transaction ids between the oldest unconsumed change of a source and now (0 when its buffer is empty).",
    ),
    (
        "pgtrickle_notifications_sent_total",
        Kind::Counter,
        "NOTIFYs sent for a subscription.",
    ),
    (
        "pgtrickle_notifications_coalesced_total",
        Kind::Counter,
        "Refreshes of a subscription merged into another refresh's notification.",
    ),
    (
        "pgtrickle_notifications_pending",
        Kind::Gauge,
        "Refreshes of a subscription not notified yet.",
    ),
    (
        "pgtrickle_scheduler_running",
        Kind::Gauge,
        "1 while a database has a scheduler running, else 0.",
    ),
    (
        "pgtrickle_scheduler_queue_length",
        Kind::Gauge,
        "Stream tables of a database due and waiting for its scheduler.",
    ),
    (
        "pgtrickle_scheduler_refresh_workers",
        Kind::Gauge,
        "Refresh workers running for a database.",
    ),
    (
        "pgtrickle_worker_slots",
        Kind::Gauge,
        "Slots of the worker pool (pg_trickle.max_workers): state total or used.",
    ),
    (
        "pgtrickle_scrape_database_up",
        Kind::Gauge,
        "1 when the endpoint read a database's metrics at this scrape, 0 when it failed.",
    ),
    (
        "pgtrickle_scrape_duration_seconds",
        Kind::Gauge,
        "How long this scrape took.",
    ),
];

/// One sample: metric name (with `_bucket`/`_sum`/`_count` for histograms), labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Reported alike by every database (the scheduler's figures): exported once.
    pub cluster: bool,
}

impl Sample {
    fn new(metric: &str, labels: &[(&str, &str)], value: f64) -> Self {
        Sample {
            metric: metric.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            cluster: false,
        }
    }

    fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }
}

/// The family a sample belongs to (a histogram's series carry suffixes).
fn family_of(metric: &str) -> Option<&'static (&'static str, Kind, &'static str)> {
    FAMILIES.iter().find(|(name, kind, _)| {
        metric == *name
            || (*kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| metric.strip_suffix(s) == Some(name)))
    })
}

/// A label value as the text format writes it (backslash, double quote and newline escaped).
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A value as the text format writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The Prometheus text exposition (version 0.0.4) of `samples`: every family of [`FAMILIES`]
/// with its HELP and TYPE, its samples in the order given. A sample of no known family is an
/// error (the catalogue is what the docs and the dashboards rely on).
pub fn render(samples: &[Sample]) -> Result<String, String> {
    let mut by_family: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        let (name, _, _) =
            family_of(&s.metric).ok_or_else(|| format!("metric {} is not catalogued", s.metric))?;
        by_family.entry(name).or_default().push(s);
    }
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        for s in by_family.get(name).into_iter().flatten() {
            out.push_str(&s.metric);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(s.value));
        }
    }
    Ok(out)
}

/// The samples of one database's `pgtrickle.metrics()` for the endpoint: database-scoped ones
/// get a `database` label; cluster-scoped ones are kept once across databases (`seen`).
pub fn merge_database(
    out: &mut Vec<Sample>,
    seen: &mut BTreeSet<(String, Vec<(String, String)>)>,
    database: &str,
    rows: Vec<Sample>,
) {
    for mut s in rows {
        if !s.cluster {
            s.labels.insert(0, ("database".into(), database.into()));
        }
        if seen.insert((s.metric.clone(), s.labels.clone())) {
            out.push(s);
        }
    }
}

/// The cumulative histogram series of one (stream table, action) from per-bucket counts.
fn histogram(out: &mut Vec<Sample>, st: &str, action: &str, bounds: &[f64], h: &Hist) {
    let mut cumulative = 0_i64;
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative += n;
        let le = bounds
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |b| format_value(*b));
        out.push(Sample::new(
            "pgtrickle_refresh_duration_seconds_bucket",
            &[("stream_table", st), ("action", action), ("le", &le)],
            cumulative as f64,
        ));
    }
    debug_assert_eq!(cumulative, h.count, "buckets add up to the refresh count");
    out.push(Sample::new(
        "pgtrickle_refresh_duration_seconds_sum",
        &[("stream_table", st), ("action", action)],
        h.sum,
    ));
    out.push(Sample::new(
        "pgtrickle_refresh_duration_seconds_count",
        &[("stream_table", st), ("action", action)],
        h.count as f64,
    ));
}

#[derive(Default)]
struct Hist {
    count: i64,
    sum: f64,
    buckets: Vec<i64>,
}

/// The stream table's label: `schema.name`, each part quoted where SQL needs it (as
/// `sla_summary()` and `explain_stream_table` name it).
const ST_LABEL: &str = "format('%I.%I', s.pgt_schema, s.pgt_name)";

fn action_label(action: &str) -> &str {
    if action.is_empty() {
        "none"
    } else {
        action
    }
}

/// The samples of this database (see the module comment).
fn collect() -> Result<Vec<Sample>, PgTrickleError> {
    let mut out = Vec::new();
    let bounds = Spi::get_one::<Vec<f64>>("SELECT pgtrickle.refresh_duration_bounds()")?;
    let bounds = required(bounds, "refresh_duration_bounds()")?;

    // Stream tables: modes, staleness, schedule, errors in a row.
    let mut errors: BTreeMap<String, i64> = BTreeMap::new();
    let default_schedule = f64::from(config::DEFAULT_SCHEDULE_SECONDS.get());
    Spi::connect(|client| -> Result<(), PgTrickleError> {
        let rows = client.select(
            &format!(
                "SELECT {ST_LABEL}, s.refresh_mode, s.effective_mode, s.status, s.schedule, \
                 extract(epoch FROM now() - s.last_refresh_at)::float8, s.consecutive_errors \
                 FROM pgtrickle.pgt_stream_tables s ORDER BY 1"
            ),
            None,
            &[],
        )?;
        for row in rows {
            let st = required(row.get::<String>(1)?, "pgt_name")?;
            // Every stream table has an error count, 0 before its first failure.
            errors.insert(st.clone(), 0);
            let requested = required(row.get::<String>(2)?, "refresh_mode")?;
            let effective = required(row.get::<String>(3)?, "effective_mode")?;
            let status = required(row.get::<String>(4)?, "status")?;
            let sched = required(row.get::<String>(5)?, "schedule")?;
            out.push(Sample::new(
                "pgtrickle_stream_table_info",
                &[
                    ("stream_table", &st),
                    ("refresh_mode", &requested),
                    ("effective_mode", &effective),
                    ("status", &status),
                ],
                1.0,
            ));
            if let Some(age) = row.get::<f64>(6)? {
                out.push(Sample::new(
                    "pgtrickle_staleness_seconds",
                    &[("stream_table", &st)],
                    age,
                ));
            }
            // A schedule the catalog holds was validated when it was set.
            match schedule::parse(&sched) {
                Ok(Schedule::Every { seconds }) => out.push(Sample::new(
                    "pgtrickle_schedule_seconds",
                    &[("stream_table", &st)],
                    seconds as f64,
                )),
                // Checked every default_schedule_seconds; the scheduler sets last_refresh_at
                // also when a check finds nothing to do, so staleness is comparable.
                Ok(Schedule::Calculated) => out.push(Sample::new(
                    "pgtrickle_schedule_seconds",
                    &[("stream_table", &st)],
                    default_schedule,
                )),
                Ok(Schedule::Cron(_)) => {}
                Err(e) => {
                    return Err(PgTrickleError::Internal(format!(
                        "the catalog holds schedule '{sched}' of {st}, which does not parse \
                         ({}): schedules are validated when set",
                        e.0
                    )))
                }
            }
            let errs = required(row.get::<i32>(7)?, "consecutive_errors")?;
            out.push(Sample::new(
                "pgtrickle_consecutive_errors",
                &[("stream_table", &st)],
                f64::from(errs),
            ));
        }
        for row in client.select(
            "SELECT name, error_budget_remaining FROM pgtrickle.sla_summary() \
             WHERE error_budget_remaining IS NOT NULL",
            None,
            &[],
        )? {
            let st = required(row.get::<String>(1)?, "sla_summary().name")?;
            let v = required(row.get::<f64>(2)?, "error_budget_remaining")?;
            out.push(Sample::new(
                "pgtrickle_error_budget_remaining",
                &[("stream_table", &st)],
                v,
            ));
        }
        Ok(())
    })?;

    // Refresh counters and histograms.
    let mut totals: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let mut hists: BTreeMap<(String, String), Hist> = BTreeMap::new();
    let mut fallbacks: BTreeMap<(String, String), i64> = BTreeMap::new();
    Spi::connect(|client| -> Result<(), PgTrickleError> {
        let rows = client.select(
            &format!(
                "SELECT {ST_LABEL}, r.action, r.status, r.fallback, r.refreshes, r.seconds_sum, \
                 r.buckets FROM pgtrickle.pgt_refresh_stats r \
                 JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) ORDER BY 1, 2, 3, 4"
            ),
            None,
            &[],
        )?;
        for row in rows {
            let st = required(row.get::<String>(1)?, "pgt_name")?;
            let action = required(row.get::<String>(2)?, "pgt_refresh_stats.action")?;
            let status = required(row.get::<String>(3)?, "pgt_refresh_stats.status")?;
            let fallback = required(row.get::<String>(4)?, "pgt_refresh_stats.fallback")?;
            let n = required(row.get::<i64>(5)?, "pgt_refresh_stats.refreshes")?;
            let sum = required(row.get::<f64>(6)?, "pgt_refresh_stats.seconds_sum")?;
            let buckets = required(row.get::<Vec<i64>>(7)?, "pgt_refresh_stats.buckets")?;
            if buckets.len() != bounds.len() + 1 {
                return Err(PgTrickleError::Internal(format!(
                    "pgt_refresh_stats.buckets of {st} has {} buckets, refresh_duration_bounds() \
                     {} bounds: every row has one bucket per bound plus +Inf",
                    buckets.len(),
                    bounds.len()
                )));
            }
            *totals
                .entry((st.clone(), action.clone(), status.clone()))
                .or_default() += n;
            if status == "FAILED" {
                *errors.entry(st.clone()).or_default() += n;
            } else {
                let h = hists.entry((st.clone(), action.clone())).or_default();
                h.count += n;
                h.sum += sum;
                h.buckets.resize(buckets.len(), 0);
                for (b, v) in h.buckets.iter_mut().zip(&buckets) {
                    *b += v;
                }
            }
            if !fallback.is_empty() {
                *fallbacks.entry((st, fallback)).or_default() += n;
            }
        }
        Ok(())
    })?;
    for ((st, action, status), n) in &totals {
        out.push(Sample::new(
            "pgtrickle_refreshes_total",
            &[
                ("stream_table", st),
                ("action", action_label(action)),
                ("status", status),
            ],
            *n as f64,
        ));
    }
    for (st, n) in &errors {
        out.push(Sample::new(
            "pgtrickle_refresh_errors_total",
            &[("stream_table", st)],
            *n as f64,
        ));
    }
    for ((st, action), h) in &hists {
        histogram(&mut out, st, action_label(action), &bounds, h);
    }
    for ((st, class), n) in &fallbacks {
        out.push(Sample::new(
            "pgtrickle_full_fallbacks_total",
            &[("stream_table", st), ("reason", class)],
            *n as f64,
        ));
    }

    // Change buffers of the sources of the stream tables the caller sees; the buffers
    // themselves are read as the extension's owner (nobody else may read them).
    let sources: Vec<pg_sys::Oid> = Spi::connect(|client| {
        client
            .select(
                "SELECT DISTINCT d.source_relid FROM pgtrickle.pgt_dependencies d ORDER BY 1",
                None,
                &[],
            )?
            .filter_map(|row| row.get::<pg_sys::Oid>(1).transpose())
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    for source in sources {
        let Some(name) = crate::definition::relation_name(source)? else {
            continue; // dropped meanwhile
        };
        let depth = crate::roles::as_extension(|| {
            if !crate::cdc::buffer_exists(source)? {
                return Ok(None);
            }
            let buffer = crate::cdc::buffer_name(source);
            let read = Spi::connect(|client| {
                let row = client
                    .select(
                        &format!(
                            "SELECT count(*), coalesce(pg_catalog.pg_snapshot_xmax(\
                             pg_catalog.pg_current_snapshot())::text::numeric \
                             - min({xid}::text::numeric), 0)::float8 FROM {buffer}",
                            xid = engine::names::BUFFER_XID
                        ),
                        None,
                        &[],
                    )?
                    .first();
                Ok::<_, pgrx::spi::Error>((row.get::<i64>(1)?, row.get::<f64>(2)?))
            })?;
            Ok(Some(read))
        })?;
        if let Some((rows, lag)) = depth {
            let rows = required(rows, "count(*)")?;
            let lag = required(lag, "buffer lag")?;
            out.push(Sample::new(
                "pgtrickle_change_buffer_rows",
                &[("source", &name)],
                rows as f64,
            ));
            out.push(Sample::new(
                "pgtrickle_change_buffer_lag_transactions",
                &[("source", &name)],
                lag,
            ));
        }
    }

    // Subscriptions.
    Spi::connect(|client| -> Result<(), PgTrickleError> {
        let rows = client.select(
            &format!(
                "SELECT {ST_LABEL}, s.channel, s.notifications_sent, s.refreshes_notified, \
                 (SELECT count(*) FROM pgtrickle.pgt_notify_pending p \
                   WHERE p.pgt_schema = s.pgt_schema AND p.pgt_name = s.pgt_name \
                     AND p.channel = s.channel) \
                 FROM pgtrickle.pgt_subscriptions s ORDER BY 1, 2"
            ),
            None,
            &[],
        )?;
        for row in rows {
            let st = required(row.get::<String>(1)?, "pgt_subscriptions.pgt_name")?;
            let channel = required(row.get::<String>(2)?, "pgt_subscriptions.channel")?;
            let sent = required(row.get::<i64>(3)?, "notifications_sent")?;
            let notified = required(row.get::<i64>(4)?, "refreshes_notified")?;
            let pending = required(row.get::<i64>(5)?, "count(*)")?;
            let labels = [("stream_table", st.as_str()), ("channel", channel.as_str())];
            out.push(Sample::new(
                "pgtrickle_notifications_sent_total",
                &labels,
                sent as f64,
            ));
            out.push(Sample::new(
                "pgtrickle_notifications_coalesced_total",
                &labels,
                (notified - sent) as f64,
            ));
            out.push(Sample::new(
                "pgtrickle_notifications_pending",
                &labels,
                pending as f64,
            ));
        }
        Ok(())
    })?;

    // The scheduler (shared memory: every database sees every database).
    let mut used = 0_i64;
    Spi::connect(|client| -> Result<(), PgTrickleError> {
        for row in client.select(
            "SELECT database, scheduler_pid IS NOT NULL, refresh_workers, queue_length \
             FROM pgtrickle.scheduler_status() WHERE database IS NOT NULL ORDER BY 1",
            None,
            &[],
        )? {
            let db = required(row.get::<String>(1)?, "scheduler_status().database")?;
            let running = required(row.get::<bool>(2)?, "scheduler_pid IS NOT NULL")?;
            let workers = required(row.get::<i32>(3)?, "refresh_workers")?;
            let queue = required(row.get::<i32>(4)?, "queue_length")?;
            used += i64::from(running) + i64::from(workers);
            let l = [("database", db.as_str())];
            out.push(
                Sample::new(
                    "pgtrickle_scheduler_running",
                    &l,
                    f64::from(u8::from(running)),
                )
                .cluster(),
            );
            out.push(
                Sample::new("pgtrickle_scheduler_queue_length", &l, f64::from(queue)).cluster(),
            );
            out.push(
                Sample::new(
                    "pgtrickle_scheduler_refresh_workers",
                    &l,
                    f64::from(workers),
                )
                .cluster(),
            );
        }
        Ok(())
    })?;
    if crate::shared::available() {
        out.push(
            Sample::new(
                "pgtrickle_worker_slots",
                &[("state", "total")],
                f64::from(config::MAX_WORKERS.get()),
            )
            .cluster(),
        );
        out.push(
            Sample::new("pgtrickle_worker_slots", &[("state", "used")], used as f64).cluster(),
        );
    }
    for s in &out {
        debug_assert!(family_of(&s.metric).is_some(), "{} is catalogued", s.metric);
    }
    Ok(out)
}

type MetricRow = (String, Vec<String>, f64, String);

/// The samples the Prometheus endpoint exports for this database; `labels` alternate names and
/// values; `scope` is `cluster` for figures every database reports alike.
#[pg_extern(stable, parallel_unsafe)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature itself
fn metrics() -> Result<
    TableIterator<
        'static,
        (
            name!(metric, String),
            name!(labels, Vec<String>),
            name!(value, f64),
            name!(scope, String),
        ),
    >,
    ErrorReport,
> {
    let samples = crate::settings::with_standard_strings(collect)?;
    let rows: Vec<MetricRow> = samples
        .into_iter()
        .map(|s| {
            let labels = s.labels.into_iter().flat_map(|(k, v)| [k, v]).collect();
            let scope = if s.cluster { "cluster" } else { "database" };
            (s.metric, labels, s.value, scope.to_string())
        })
        .collect();
    Ok(TableIterator::new(rows))
}

/// A row of `pgtrickle.metrics()` read back by the endpoint.
pub fn sample_from_row(
    metric: String,
    labels: Vec<String>,
    value: f64,
    scope: &str,
) -> Result<Sample, String> {
    if !labels.len().is_multiple_of(2) {
        return Err(format!("labels of {metric} are not name, value pairs"));
    }
    let labels = labels
        .chunks_exact(2)
        .filter_map(|p| match p {
            [k, v] => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    Ok(Sample {
        metric,
        labels,
        value,
        cluster: scope == "cluster",
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_even_without_samples() {
        let text = render(&[]).unwrap();
        for (name, kind, _) in FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} {}\n", kind.as_str())));
            assert!(text.contains(&format!("# HELP {name} ")));
        }
    }

    #[test]
    fn samples_are_rendered_under_their_family_with_escaped_labels() {
        let s = vec![
            Sample::new(
                "pgtrickle_refresh_duration_seconds_bucket",
                &[("stream_table", "public.\"A \\ b\""), ("le", "+Inf")],
                3.0,
            ),
            Sample::new("pgtrickle_scrape_duration_seconds", &[], 0.25),
        ];
        let text = render(&s).unwrap();
        assert!(text.contains(
            "pgtrickle_refresh_duration_seconds_bucket{stream_table=\"public.\\\"A \\\\ b\\\"\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("pgtrickle_scrape_duration_seconds 0.25\n"));
        let family = text
            .find("# TYPE pgtrickle_refresh_duration_seconds histogram")
            .unwrap();
        let sample = text
            .find("pgtrickle_refresh_duration_seconds_bucket{")
            .unwrap();
        assert!(family < sample);
    }

    #[test]
    fn an_uncatalogued_metric_is_refused() {
        assert!(render(&[Sample::new("pgtrickle_nonsense", &[], 1.0)]).is_err());
        assert!(render(&[Sample::new("pgtrickle_refreshes_total_bucket", &[], 1.0)]).is_err());
    }

    #[test]
    fn values_in_text_format() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.005), "0.005");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut out = Vec::new();
        let h = Hist {
            count: 4,
            sum: 2.5,
            buckets: vec![1, 0, 2, 1],
        };
        histogram(&mut out, "public.t", "FULL", &[0.1, 1.0, 10.0], &h);
        let values: Vec<(String, f64)> = out
            .iter()
            .map(|s| (s.labels.last().unwrap().1.clone(), s.value))
            .collect();
        assert_eq!(
            values,
            vec![
                ("0.1".into(), 1.0),
                ("1".into(), 1.0),
                ("10".into(), 3.0),
                ("+Inf".into(), 4.0),
                ("FULL".into(), 2.5),
                ("FULL".into(), 4.0),
            ]
        );
    }

    #[test]
    fn cluster_samples_are_kept_once_and_database_samples_labelled() {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for db in ["a", "b"] {
            merge_database(
                &mut out,
                &mut seen,
                db,
                vec![
                    Sample::new("pgtrickle_worker_slots", &[("state", "total")], 4.0).cluster(),
                    Sample::new(
                        "pgtrickle_staleness_seconds",
                        &[("stream_table", "public.t")],
                        1.0,
                    ),
                ],
            );
        }
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].labels[0], ("database".to_string(), "a".to_string()));
        assert_eq!(out[2].labels[0], ("database".to_string(), "b".to_string()));
    }

    #[test]
    fn rows_read_back_pair_their_labels() {
        let s = sample_from_row(
            "pgtrickle_worker_slots".into(),
            vec!["state".into(), "used".into()],
            2.0,
            "cluster",
        )
        .unwrap();
        assert_eq!(s.labels, vec![("state".into(), "used".into())]);
        assert!(s.cluster);
        assert!(sample_from_row("m".into(), vec!["x".into()], 1.0, "database").is_err());
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
#[allow(clippy::unwrap_used)]
mod tests {
    use pgrx::prelude::*;

    fn stats(action: &str, status: &str, fallback: &str) -> (i64, Vec<i64>) {
        Spi::connect(|c| {
            let row = c
                .select(
                    &format!(
                        "SELECT refreshes, buckets FROM pgtrickle.pgt_refresh_stats \
                         WHERE action = '{action}' AND status = '{status}' \
                         AND fallback = '{fallback}'"
                    ),
                    None,
                    &[],
                )
                .unwrap()
                .first();
            (
                row.get::<i64>(1).unwrap().unwrap(),
                row.get::<Vec<i64>>(2).unwrap().unwrap(),
            )
        })
    }

    /// The counting trigger: a duration equal to a bound falls into that bound's bucket (the
    /// Prometheus `le`), one above the last bound into +Inf; only finished rows count, an
    /// update counts only from RUNNING, and a FULL refresh of a stream table that asked for
    /// another mode is a fallback of its reason's class.
    #[pg_test]
    fn count_refresh_places_durations_and_counts_finished_refreshes_once() {
        Spi::run(
            "INSERT INTO pgtrickle.pgt_stream_tables \
             (pgt_id, pgt_relid, pgt_schema, pgt_name, defining_query, refresh_mode, \
              effective_mode, storage_layout) OVERRIDING SYSTEM VALUE \
             VALUES (7, 1, 'public', 'st', 'SELECT 1', 'AUTO', 'DIFFERENTIAL', 'query')",
        )
        .unwrap();
        let t0 = "'2026-01-01 00:00:00+00'::timestamptz";
        for secs in ["0", "0.001", "0.0011", "0.005", "200"] {
            Spi::run(&format!(
                "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, start_time, end_time, \
                 action, status) VALUES (7, {t0}, {t0} + interval '{secs} s', 'NO_DATA', \
                 'COMPLETED')"
            ))
            .unwrap();
        }
        let mut want = vec![0_i64; 16];
        want[0] = 2; // 0 and 0.001 (le 0.001)
        want[1] = 2; // 0.0011 and 0.005 (le 0.005)
        want[15] = 1; // 200 (+Inf)
        assert_eq!(stats("NO_DATA", "COMPLETED", ""), (5, want));

        // RUNNING is not counted, its update to COMPLETED is, a later update is not.
        Spi::run(
            "INSERT INTO pgtrickle.pgt_refresh_history (refresh_id, pgt_id, status) \
             OVERRIDING SYSTEM VALUE VALUES (1000, 7, 'RUNNING')",
        )
        .unwrap();
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_refresh_history SET status = 'COMPLETED', action = 'FULL', \
             reason = 'pg_trickle.force_full_refresh is on', start_time = {t0}, \
             end_time = {t0} + interval '0.02 s' WHERE refresh_id = 1000"
        ))
        .unwrap();
        Spi::run(
            "UPDATE pgtrickle.pgt_refresh_history SET status = 'FAILED' WHERE refresh_id = 1000",
        )
        .unwrap();
        let mut want = vec![0_i64; 16];
        want[3] = 1; // 0.02 (le 0.025)
        assert_eq!(stats("FULL", "COMPLETED", "force_full_refresh"), (1, want));
        let failed = Spi::get_one::<i64>(
            "SELECT count(*) FROM pgtrickle.pgt_refresh_stats WHERE status = 'FAILED'",
        );
        assert_eq!(failed, Ok(Some(0)));

        // A history row of a stream table that is gone is not counted.
        Spi::run(
            "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, action, status, end_time) \
             VALUES (8, 'FULL', 'FAILED', clock_timestamp())",
        )
        .unwrap();
        let rows =
            Spi::get_one::<i64>("SELECT sum(refreshes)::int8 FROM pgtrickle.pgt_refresh_stats");
        assert_eq!(rows, Ok(Some(6)));
    }
}
