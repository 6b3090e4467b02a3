//! The `pg_trickle.*` GUCs: defined once in `_PG_init`, read through the accessors here.
//! Every GUC is documented in docs/CONFIGURATION.md (the catalogue there lists exactly these).

use std::ffi::{CStr, CString};

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `pg_trickle.enabled`: master switch. Off: change capture records only a "skipped" marker
/// (so dependents are fully refreshed later).
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pg_trickle.cdc_paused`: capture triggers skip row capture and leave a marker that makes
/// every dependent's next refresh FULL.
pub static CDC_PAUSED: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_trickle.force_full_refresh`: every refresh runs FULL while set.
pub static FORCE_FULL_REFRESH: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_trickle.auto_full_change_ratio`: pending changes, as a share of the sources' rows, above
/// which an AUTO stream table refreshes FULL when it has measured no DIFFERENTIAL refresh of a
/// similar volume to compare.
pub static AUTO_FULL_CHANGE_RATIO: GucSetting<f64> =
    GucSetting::<f64>::new(engine::cost::DEFAULT_RATIO);
/// `pg_trickle.auto_cost_model`: AUTO stream tables choose DIFFERENTIAL or FULL before each
/// refresh from their estimate (off: DIFFERENTIAL whenever the query allows it).
pub static AUTO_COST_MODEL: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `pg_trickle.scheduler_interval_ms`: how often each database's scheduler wakes up.
pub static SCHEDULER_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_trickle.default_schedule_seconds`: how often a `'calculated'` stream table is checked
/// for source changes (and refreshed when there are some).
pub static DEFAULT_SCHEDULE_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(1);
/// `pg_trickle.max_consecutive_errors`: failed scheduled refreshes in a row before a stream
/// table is put in status ERROR.
pub static MAX_CONSECUTIVE_ERRORS: GucSetting<i32> = GucSetting::<i32>::new(3);
/// `pg_trickle.refresh_lock_timeout_ms`: `lock_timeout` of scheduled refreshes (0: none).
pub static REFRESH_LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// `pg_trickle.history_retention_days`: refresh history older than this is pruned.
pub static HISTORY_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(7);
/// `pg_trickle.history_prune_interval_seconds`: how often each database's scheduler prunes
/// the refresh history.
pub static HISTORY_PRUNE_INTERVAL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(60);

/// `pg_trickle.max_workers`: background workers pg_trickle may run at once, schedulers and
/// parallel refresh workers together (the launcher not counted). Taken from
/// `max_worker_processes`, which PostgreSQL's own workers share.
pub static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
/// `pg_trickle.max_parallel_refreshes`: stream tables one database refreshes at once.
pub static MAX_PARALLEL_REFRESHES: GucSetting<i32> = GucSetting::<i32>::new(1);

/// `pg_trickle.notify_coalesce_ms`: notifications of one subscription closer together than
/// this are merged into one (subscriptions.rs).
pub static NOTIFY_COALESCE_MS: GucSetting<i32> = GucSetting::<i32>::new(250);
/// `pg_trickle.notify_queue_max_percent`: above this usage of the server's NOTIFY queue, a
/// notification stays pending instead of being sent.
pub static NOTIFY_QUEUE_MAX_PERCENT: GucSetting<i32> = GucSetting::<i32>::new(50);

/// `pg_trickle.sla_window_hours`: the window `sla_summary()` reports on (sla.rs).
pub static SLA_WINDOW_HOURS: GucSetting<i32> = GucSetting::<i32>::new(24);
/// `pg_trickle.sla_target`: the share of refreshes that should succeed; `sla_summary()`'s
/// error budget is what the rest allows.
pub static SLA_TARGET: GucSetting<f64> = GucSetting::<f64>::new(0.99);

/// `pg_trickle.shadow_build_enabled`: whether `alter_stream_table(…, shadow_build => true)`
/// may start shadow builds (shadow.rs).
pub static SHADOW_BUILD_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pg_trickle.shadow_refresh_throttle_ms`: the least time between two refreshes of a shadow.
pub static SHADOW_REFRESH_THROTTLE_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pg_trickle.shadow_timeout`: a shadow build not swapped in after this many seconds is
/// rolled back.
pub static SHADOW_TIMEOUT_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// `pg_trickle.metrics_port`: the port of the Prometheus endpoint (0: no endpoint). Read when
/// the library is preloaded (metrics_server.rs).
pub static METRICS_PORT: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `pg_trickle.metrics_listen_address`: the address the endpoint listens on.
pub static METRICS_LISTEN_ADDRESS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"127.0.0.1"));

/// Registers the GUCs. Called from `_PG_init` in every process that loads the library.
pub(crate) fn define() {
    GucRegistry::define_bool_guc(
        c"pg_trickle.enabled",
        c"Master switch of pg_trickle.",
        c"When off, the schedulers refresh nothing, IMMEDIATE stream tables are not maintained, and \
          capture triggers skip row capture and leave one \"skipped\" marker row per statement in the \
          source's change buffer, so every stream table reading that source runs its next \
          refresh FULL.",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_trickle.cdc_paused",
        c"Pauses change capture.",
        c"While on, capture triggers return at once after leaving the same marker as \
          pg_trickle.enabled = off, one row per statement whatever its size. Pausing never leaves \
          a silently wrong stream table: the marker forces a FULL refresh.",
        &CDC_PAUSED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_trickle.force_full_refresh",
        c"Makes every refresh FULL, whatever each stream table's mode.",
        c"For diagnosis: each refresh runs FULL while it is set, says so in a NOTICE \
          (stream table \"s\".\"t\" using FULL refresh: pg_trickle.force_full_refresh is on) and \
          records the reason in its history row.",
        &FORCE_FULL_REFRESH,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_trickle.auto_cost_model",
        c"Lets AUTO stream tables refresh FULL when that is estimated to cost less.",
        c"On: before each refresh with pending changes an AUTO stream table estimates both \
          modes and runs the cheaper one, recording the estimate and the choice in its history \
          (pgt_refresh_history.choice, pgt_status().last_choice). Off: AUTO refreshes \
          DIFFERENTIAL whenever its query allows it; the estimate is still recorded.",
        &AUTO_COST_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"pg_trickle.auto_full_change_ratio",
        c"Changes per source row above which AUTO refreshes FULL while it cannot compare costs.",
        c"Before each refresh an AUTO stream table compares both modes from its own history (FULL \
          durations, DIFFERENTIAL cost per change at a similar volume) and runs the cheaper one; \
          at a volume it has not measured, it refreshes FULL when the pending changes exceed this \
          share of its sources' rows (and number 1,000 or more), DIFFERENTIAL otherwise. See \
          docs/SQL_REFERENCE.md, \"AUTO's choice\".",
        &AUTO_FULL_CHANGE_RATIO,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_trickle.sla_window_hours",
        c"The window pgtrickle.sla_summary() reports on, in hours.",
        c"Refreshes that started within this many hours count; any session may choose its own.",
        &SLA_WINDOW_HOURS,
        1,
        8_760,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"pg_trickle.sla_target",
        c"The share of refreshes that should succeed, for sla_summary()'s error budget.",
        c"error_budget_remaining is 1 - error_rate / (1 - target): 1 without failures, 0 when the \
          budget is used up, negative when overspent. Any session may choose its own.",
        &SLA_TARGET,
        0.0,
        0.9999,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_trickle.shadow_build_enabled",
        c"Allows alter_stream_table(..., shadow_build => true).",
        c"A shadow build fills a second table from the new defining query in the background, \
          catches it up from the change buffers and swaps it in, while the stream table stays \
          readable and maintained. Off: such a call is refused (55000). See docs/SHADOW_BUILDS.md.",
        &SHADOW_BUILD_ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_trickle.shadow_timeout",
        c"A shadow build not swapped in after this long is rolled back.",
        c"Measured from the call that started it; the shadow is dropped, the stream table keeps its \
          query, and view_evolution_status() shows rolled_back with the reason.",
        &SHADOW_TIMEOUT_SECONDS,
        1,
        604_800,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    define_postmaster();
    for (name, short, long, setting, min, max) in INT_GUCS {
        GucRegistry::define_int_guc(
            name,
            short,
            long,
            setting,
            *min,
            *max,
            GucContext::Sighup,
            GucFlags::default(),
        );
    }
}

/// The settings read only when the server starts (`PGC_POSTMASTER`): PostgreSQL refuses to
/// define those after startup, so a backend that loads the library without preloading it (where
/// CREATE EXTENSION is refused anyway) leaves them as placeholders.
fn define_postmaster() {
    if !crate::preload::loaded_at_startup() {
        return;
    }
    GucRegistry::define_int_guc(
        c"pg_trickle.metrics_port",
        c"Port of the Prometheus endpoint, served by a background worker (0: no endpoint).",
        c"The worker serves GET /metrics in Prometheus' text format and takes one of \
          max_worker_processes; it reads pgtrickle.metrics() in every database over the \
          server's Unix socket as the bootstrap superuser. See docs/MONITORING.md.",
        &METRICS_PORT,
        0,
        65_535,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_trickle.metrics_listen_address",
        c"Address the Prometheus endpoint listens on.",
        c"127.0.0.1 (loopback) by default: the endpoint has no authentication, so expose it \
          beyond the host only on a trusted network.",
        &METRICS_LISTEN_ADDRESS,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

/// Integer GUCs: (name, short description, long description, setting, min, max).
type IntGuc = (
    &'static CStr,
    &'static CStr,
    &'static CStr,
    &'static GucSetting<i32>,
    i32,
    i32,
);

const INT_GUCS: &[IntGuc] = &[
    (
        c"pg_trickle.scheduler_interval_ms",
        c"How often a database's scheduler ticks while it is resident, in milliseconds.",
        c"Also the least time between two ticks of one database, whichever worker runs them.",
        &SCHEDULER_INTERVAL_MS,
        10,
        3_600_000,
    ),
    (
        c"pg_trickle.default_schedule_seconds",
        c"How often a stream table with schedule 'calculated' is checked for source changes, in seconds.",
        c"It is refreshed when one of its sources changed since its last refresh.",
        &DEFAULT_SCHEDULE_SECONDS,
        1,
        86_400,
    ),
    (
        c"pg_trickle.max_consecutive_errors",
        c"Failed scheduled refreshes in a row before a stream table goes to status ERROR.",
        c"Retryable failures back off exponentially in between; permanent ones (by SQLSTATE) go to \
          ERROR at once.",
        &MAX_CONSECUTIVE_ERRORS,
        1,
        1_000,
    ),
    (
        c"pg_trickle.refresh_lock_timeout_ms",
        c"lock_timeout of scheduled refreshes, in milliseconds (0 waits forever).",
        c"A refresh that times out on a lock fails with 55P03 and is retried with backoff.",
        &REFRESH_LOCK_TIMEOUT_MS,
        0,
        3_600_000,
    ),
    (
        c"pg_trickle.max_workers",
        c"Size of the worker pool shared by all databases.",
        c"Each database's scheduler and each refresh worker take a slot while they run. Every slot \
          is also one of PostgreSQL's max_worker_processes, of which the launcher takes one more; \
          see docs/SCHEDULING.md for sizing.",
        &MAX_WORKERS,
        1,
        crate::shared::MAX_POOL as i32,
    ),
    (
        c"pg_trickle.max_parallel_refreshes",
        c"Stream tables one database refreshes at once.",
        c"Above 1 the scheduler hands due stream tables to refresh workers from the pool, a stream \
          table only after the stream tables it reads.",
        &MAX_PARALLEL_REFRESHES,
        1,
        crate::shared::MAX_POOL as i32,
    ),
    (
        c"pg_trickle.history_retention_days",
        c"Refresh history older than this many days is deleted by each database's scheduler.",
        c"Pruned every pg_trickle.history_prune_interval_seconds.",
        &HISTORY_RETENTION_DAYS,
        1,
        36_500,
    ),
    (
        c"pg_trickle.history_prune_interval_seconds",
        c"How often each database's scheduler prunes the refresh history, in seconds.",
        c"It deletes 10,000 rows per transaction.",
        &HISTORY_PRUNE_INTERVAL_SECONDS,
        1,
        86_400,
    ),
    (
        c"pg_trickle.notify_coalesce_ms",
        c"Notifications of one subscription closer together than this are merged, in milliseconds.",
        c"The merged one carries the summed counts and the last refresh's id; it is sent by the first \
          commit of a refresh after the window closes, or by the scheduler within \
          pg_trickle.scheduler_interval_ms after that. 0 sends one per committed transaction. See \
          docs/SUBSCRIPTIONS.md.",
        &NOTIFY_COALESCE_MS,
        0,
        3_600_000,
    ),
    (
        c"pg_trickle.notify_queue_max_percent",
        c"Notifications wait while the server's NOTIFY queue is at least this full, in percent.",
        c"Measured by pg_notification_queue_usage(). PostgreSQL fails a commit whose notifications \
          do not fit the queue; pg_trickle keeps them pending (with a WARNING) and sends them once \
          the queue has drained. 0 keeps every notification pending.",
        &NOTIFY_QUEUE_MAX_PERCENT,
        0,
        100,
    ),
    (
        c"pg_trickle.shadow_refresh_throttle_ms",
        c"The least time between two refreshes of a shadow build, in milliseconds.",
        c"Rate-limits the extra load of a shadow build: its first load, its catch-up refreshes and \
          its swap are each at least this far apart.",
        &SHADOW_REFRESH_THROTTLE_MS,
        0,
        3_600_000,
    ),
];

/// The endpoint's listen address (`127.0.0.1` when the setting is empty).
pub(crate) fn metrics_listen_address() -> String {
    METRICS_LISTEN_ADDRESS
        .get()
        .map(|s| s.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

pub(crate) fn auto_cost_model() -> bool {
    AUTO_COST_MODEL.get()
}

pub(crate) fn auto_full_change_ratio() -> f64 {
    AUTO_FULL_CHANGE_RATIO.get()
}

pub(crate) fn force_full_refresh() -> bool {
    FORCE_FULL_REFRESH.get()
}
