//! Reactive subscriptions: `pgtrickle.subscribe(stream_table, channel)` makes every non-empty
//! refresh of a stream table end in a `NOTIFY` on `channel`, sent by the refresh's own
//! transaction (a listener hears it only if the refresh commits).
//!
//! How a notification travels (docs/SUBSCRIPTIONS.md has the user's view):
//! 1. A refresh that changed the storage (rows inserted or deleted) queues one row per
//!    subscription in `pgt_notify_pending` with its counts ([`queue`]); an empty refresh
//!    queues nothing.
//! 2. At commit, a deferred constraint trigger on that table ([`deliver_at_commit`]) delivers
//!    what is pending for the subscription when its coalescing window
//!    (`pg_trickle.notify_coalesce_ms`) has closed since its last notification: one
//!    `pg_notify` with the sums of the counts and the last refresh's id, the pending rows
//!    deleted. However many refreshes (or IMMEDIATE statements) a transaction ran, a
//!    subscription gets at most one notification from it.
//! 3. What is still pending (the window was open, the NOTIFY queue too full, another process
//!    was delivering) waits for the next refresh's commit or for the database's scheduler,
//!    which delivers it once the window has closed ([`deliver_due`]); the commit asks for the
//!    scheduler then, also in a database that had gone idle. Nothing pending is dropped, only
//!    merged.
//!
//! Delivery never raises an error into a refresh: it runs in a subtransaction, and a failure
//! (a serialization failure under REPEATABLE READ, say) leaves the rows pending with a WARNING.
//! PostgreSQL's own limits: a payload is at most a few hundred bytes (two quoted names and four
//! numbers; 8000 is PostgreSQL's limit), and a notification is not sent while the server's
//! NOTIFY queue is fuller than `pg_trickle.notify_queue_max_percent` (PostgreSQL would fail the
//! commit when it is full).
//!
//! Subscriptions name their stream table by schema and name, not by id, so that the table is
//! an extension configuration table whose rows pg_dump keeps and pg_restore brings back; a
//! trigger on `pgt_stream_tables` carries renames over and removes the subscriptions of a
//! dropped stream table, as a foreign key with cascades would.

// pgrx's ErrorReport is the error type of SQL functions (what PostgreSQL reports).
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::collections::BTreeSet;

use pgrx::datum::DatumWithOid;
use pgrx::heap_tuple::PgHeapTuple;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{register_xact_callback, AllocatedByPostgres, PgXactCallbackEvent};

use crate::config;
use crate::error::{argument, required, PgTrickleError};
use crate::refresh::cache::{INT8, TEXT};
use crate::stream_table::{self, StreamTable};

extension_sql!(
    r#"
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
"#,
    name = "subscriptions",
    requires = ["catalog_tables", deliver_at_commit]
);

/// PostgreSQL's limit on a NOTIFY payload, in bytes (`NOTIFY_PAYLOAD_MAX_LENGTH` - 1).
const PAYLOAD_LIMIT: usize = 7999;

/// `channel` as a subscription may have it: what `pg_notify` accepts (not empty, shorter than
/// NAMEDATALEN bytes), 22023 otherwise.
fn check_channel(channel: &str) -> Result<(), PgTrickleError> {
    if channel.is_empty() || channel.len() >= pg_sys::NAMEDATALEN as usize {
        return Err(PgTrickleError::InvalidParameter {
            param: "channel",
            value: channel.to_string(),
            hint: format!(
                "A channel name is 1 to {} bytes long.",
                pg_sys::NAMEDATALEN - 1
            ),
        });
    }
    Ok(())
}

/// Subscribes `channel` to the stream table: each of its non-empty refreshes ends with a
/// `NOTIFY` on it. Subscribing twice is a no-op with a NOTICE. For the stream table's owner
/// and the roles it granted SELECT on it (42501 otherwise).
#[pg_extern(volatile, parallel_unsafe)]
fn subscribe(stream_table: Option<&str>, channel: Option<&str>) -> Result<(), ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let name = argument("subscribe", "stream_table", stream_table)?;
        let channel = argument("subscribe", "channel", channel)?;
        check_channel(channel)?;
        let st = stream_table::find(name, true)?;
        let caller = crate::roles::current();
        if !may_read(caller, &st) {
            return Err(PgTrickleError::NotSubscriber {
                stream_table: st.qualified(),
            });
        }
        let subscriber = crate::roles::name_of(caller);
        let added = crate::roles::as_extension(|| {
            let args: [DatumWithOid; 4] = [
                st.schema.as_str().into(),
                st.name.as_str().into(),
                channel.into(),
                subscriber.as_str().into(),
            ];
            Ok(Spi::connect_mut(|client| {
                client
                    .update(
                        "INSERT INTO pgtrickle.pgt_subscriptions \
                         (pgt_schema, pgt_name, channel, subscriber) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        None,
                        &args,
                    )
                    .map(|t| t.len() == 1)
            })?)
        })?;
        if !added {
            pgrx::notice!(
                "channel \"{}\" is already subscribed to stream table {}, skipping",
                channel,
                st.qualified()
            );
        }
        Ok(())
    })?)
}

/// Removes a subscription. Not subscribed: a NOTICE. For the stream table's owner and the
/// role that subscribed (42501 otherwise).
#[pg_extern(volatile, parallel_unsafe)]
fn unsubscribe(stream_table: Option<&str>, channel: Option<&str>) -> Result<(), ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let name = argument("unsubscribe", "stream_table", stream_table)?;
        let channel = argument("unsubscribe", "channel", channel)?;
        let st = stream_table::find(name, true)?;
        let caller = crate::roles::current();
        let subscriber = crate::roles::as_extension(|| {
            let args: [DatumWithOid; 3] = [
                st.schema.as_str().into(),
                st.name.as_str().into(),
                channel.into(),
            ];
            Ok(Spi::connect_mut(|client| {
                let t = client.update(
                    "SELECT subscriber::text FROM pgtrickle.pgt_subscriptions \
                     WHERE pgt_schema = $1::name AND pgt_name = $2::name AND channel = $3 \
                     FOR UPDATE",
                    None,
                    &args,
                )?;
                if t.is_empty() {
                    Ok::<_, pgrx::spi::Error>(None)
                } else {
                    t.first().get::<String>(1)
                }
            })?)
        })?;
        let denied = || PgTrickleError::NotSubscriber {
            stream_table: st.qualified(),
        };
        let is_owner = crate::roles::has_privileges_of(caller, st.owner);
        // Who may not subscribe learns nothing about the subscriptions (but the role that
        // subscribed may remove its subscription even after losing SELECT).
        let Some(subscriber) = subscriber else {
            if !may_read(caller, &st) {
                return Err(denied());
            }
            pgrx::notice!(
                "channel \"{}\" is not subscribed to stream table {}, skipping",
                channel,
                st.qualified()
            );
            return Ok(());
        };
        let is_subscriber = crate::roles::oid_of(&subscriber)
            .is_some_and(|r| crate::roles::has_privileges_of(caller, r));
        if !is_subscriber && !is_owner {
            return Err(denied());
        }
        crate::roles::as_extension(|| {
            Spi::run_with_args(
                "DELETE FROM pgtrickle.pgt_subscriptions \
                 WHERE pgt_schema = $1::name AND pgt_name = $2::name AND channel = $3",
                &[
                    st.schema.as_str().into(),
                    st.name.as_str().into(),
                    channel.into(),
                ],
            )?;
            Ok(())
        })
    })?)
}

/// Whether `role` may subscribe to `st`: it has the privileges of its owner, or SELECT on it.
fn may_read(role: pg_sys::Oid, st: &StreamTable) -> bool {
    crate::roles::may_read(role, st.relid, st.owner)
}

/// Whether `st` has subscriptions (asked by every refresh: they then count what they apply).
pub fn subscribed(st: &StreamTable) -> Result<bool, PgTrickleError> {
    let stmt = crate::refresh::cache::statement(
        "SELECT EXISTS (SELECT FROM pgtrickle.pgt_subscriptions \
         WHERE pgt_schema = $1::name AND pgt_name = $2::name)",
        &[TEXT, TEXT],
    )?;
    let args: [DatumWithOid; 2] = [st.schema.as_str().into(), st.name.as_str().into()];
    let found = Spi::connect(|client| -> Result<Option<bool>, pgrx::spi::Error> {
        client.select(&*stmt, None, &args)?.first().get::<bool>(1)
    })?;
    required(found, "EXISTS (pgt_subscriptions)")
}

/// The channels subscribed to `st`, quoted as identifiers, in order: a stream table created
/// under the name of one whose subscriptions pg_restore brought back takes them over.
pub fn channels(st: &StreamTable) -> Result<Vec<String>, PgTrickleError> {
    crate::roles::as_extension(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT quote_ident(channel) FROM pgtrickle.pgt_subscriptions \
                     WHERE pgt_schema = $1::name AND pgt_name = $2::name ORDER BY channel",
                    None,
                    &[st.schema.as_str().into(), st.name.as_str().into()],
                )?
                .map(|r| required(r.get::<String>(1)?, "pgt_subscriptions.channel"))
                .collect()
        })
    })
}

/// Queues a notification of a refresh of `st` that inserted and deleted these many storage
/// rows, for every subscription; delivered at commit (or later, merged). Nothing for an empty
/// refresh. Runs as the extension's owner (inside the refresh).
pub fn queue(
    st: &StreamTable,
    refresh_id: Option<i64>,
    inserted: i64,
    deleted: i64,
) -> Result<(), PgTrickleError> {
    debug_assert!(
        inserted >= 0 && deleted >= 0,
        "counts of applied rows are never negative"
    );
    if inserted == 0 && deleted == 0 {
        return Ok(());
    }
    let stmt = crate::refresh::cache::statement(
        "INSERT INTO pgtrickle.pgt_notify_pending \
         (pgt_schema, pgt_name, channel, refresh_id, inserted, deleted) \
         SELECT pgt_schema, pgt_name, channel, $3, $4, $5 FROM pgtrickle.pgt_subscriptions \
         WHERE pgt_schema = $1::name AND pgt_name = $2::name",
        &[TEXT, TEXT, INT8, INT8, INT8],
    )?;
    let args: [DatumWithOid; 5] = [
        st.schema.as_str().into(),
        st.name.as_str().into(),
        refresh_id.into(),
        inserted.into(),
        deleted.into(),
    ];
    Spi::connect_mut(|client| client.update(&*stmt, None, &args).map(|_| ()))?;
    Ok(())
}

/// A subscription, by its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    schema: String,
    name: String,
    channel: String,
}

/// What one delivery attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// A notification was sent (at this transaction's commit).
    Sent,
    /// Nothing was pending (or the subscription is gone).
    Nothing,
    /// Pending, not sent before this time (ms since the epoch): the window is open, or the
    /// NOTIFY queue was too full (then: one scheduler interval later).
    Later(i64),
    /// Another process is delivering for this subscription now.
    Busy,
}

thread_local! {
    /// Subscriptions delivered (or found waiting) by this transaction's commit trigger: its
    /// later firings for them do not try again. Emptied when the transaction ends.
    static SEEN: RefCell<BTreeSet<Key>> = const { RefCell::new(BTreeSet::new()) };
    /// Whether this transaction asked for the scheduler already, and whether the end of the
    /// transaction will reset this state.
    static REQUESTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static WATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn forget_seen() {
    let _ = SEEN.try_with(|s| s.borrow_mut().clear());
    let _ = REQUESTED.try_with(|r| r.set(false));
    let _ = WATCHING.try_with(|w| w.set(false));
}

/// Makes the end of this transaction (commit or abort) reset the state above.
fn watch_transaction_end() {
    if !WATCHING.with(|w| w.replace(true)) {
        register_xact_callback(PgXactCallbackEvent::Commit, forget_seen);
        register_xact_callback(PgXactCallbackEvent::Abort, forget_seen);
    }
}

/// Asks for the database's scheduler at commit, once per transaction: a notification stays
/// pending.
fn request_scheduler_once() {
    watch_transaction_end();
    if !REQUESTED.with(|r| r.replace(true)) {
        crate::scheduling::request_at_commit();
    }
}

/// The value of `r`, or its error raised as a PostgreSQL error (inside [`crate::txn::attempt`],
/// so that the subtransaction is rolled back: nothing of a failed delivery stays half done).
fn raising<T>(r: Result<T, PgTrickleError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            pgrx::pg_sys::panic::ErrorReport::from(e).report(PgLogLevel::ERROR);
            unreachable!("an ERROR report does not return")
        }
    }
}

fn serializable() -> bool {
    // SAFETY: a backend global, valid inside a transaction.
    unsafe { pg_sys::XactIsoLevel == pg_sys::XACT_SERIALIZABLE as i32 }
}

/// Deferred constraint trigger on `pgt_notify_pending` (AFTER INSERT, fired at commit): the
/// subscription of the new row is delivered, if its window is closed. Never raises an error:
/// what cannot be delivered now stays pending for the scheduler, which it asks for. Under
/// SERIALIZABLE it only asks: reading and writing the subscriptions' rows at commit would make
/// concurrent serializable transactions fail each other (write skew on these small tables).
#[pg_trigger]
fn deliver_at_commit<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    let Some(seq) = trigger
        .new()
        .and_then(|n| n.get_by_name::<i64>("seq").ok().flatten())
    else {
        return Ok(None);
    };
    watch_transaction_end();
    if serializable() {
        request_scheduler_once();
        return Ok(None);
    }
    let result = crate::txn::attempt(|| {
        raising(crate::roles::as_extension(|| {
            // Read back by its key (`name` columns as text); gone when an earlier firing of
            // this commit delivered it already.
            match key_of(seq)? {
                None => Ok(Delivery::Nothing),
                // Still pending after this transaction's delivery for its subscription
                // (queued after it under SET CONSTRAINTS … IMMEDIATE, or left for the window).
                Some(key) if !SEEN.with(|s| s.borrow_mut().insert(key.clone())) => {
                    Ok(Delivery::Busy)
                }
                Some(key) => deliver(&key),
            }
        }))
    });
    match result {
        Ok(Delivery::Sent | Delivery::Nothing) => {}
        Ok(Delivery::Later(_) | Delivery::Busy) => request_scheduler_once(),
        Err(e) => {
            pgrx::warning!(
                "pg_trickle could not deliver a notification at commit: {e}; it stays pending"
            );
            request_scheduler_once();
        }
    }
    Ok(None)
}

/// The subscription pending notification `seq` is for, if it is still pending.
fn key_of(seq: i64) -> Result<Option<Key>, PgTrickleError> {
    Spi::connect(|client| {
        let t = client.select(
            "SELECT pgt_schema::text, pgt_name::text, channel FROM pgtrickle.pgt_notify_pending \
             WHERE seq = $1",
            None,
            &[seq.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some(Key {
            schema: required(r.get::<String>(1)?, "pgt_notify_pending.pgt_schema")?,
            name: required(r.get::<String>(2)?, "pgt_notify_pending.pgt_name")?,
            channel: required(r.get::<String>(3)?, "pgt_notify_pending.channel")?,
        }))
    })
}

/// [`deliver`] in a subtransaction, as the extension's owner (the scheduler's way): an error
/// rolls the subtransaction back, leaving the subscription's rows pending (reported as a
/// WARNING), and is not returned.
fn attempt_delivery(key: &Key) -> Delivery {
    let interval = i64::from(config::SCHEDULER_INTERVAL_MS.get());
    let result = crate::txn::attempt(|| raising(crate::roles::as_extension(|| deliver(key))));
    match result {
        Ok(d) => d,
        Err(e) => {
            pgrx::warning!(
                "pg_trickle could not notify channel \"{}\" of stream table {}: {}; \
                 the notification stays pending",
                key.channel,
                engine::render::qualified(&key.schema, &key.name),
                e
            );
            Delivery::Later(crate::shared::now_ms() + interval)
        }
    }
}

/// Delivers what is pending for `key` if its coalescing window has closed: one `pg_notify`
/// with the summed counts, the pending rows deleted, the subscription's last notification
/// time set. Locks the subscription's row (SKIP LOCKED: [`Delivery::Busy`] when another
/// process holds it).
fn deliver(key: &Key) -> Result<Delivery, PgTrickleError> {
    let args: [DatumWithOid; 3] = [
        key.schema.as_str().into(),
        key.name.as_str().into(),
        key.channel.as_str().into(),
    ];
    let row = Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
        let t = client.update(
            "SELECT floor(extract(epoch FROM last_notified_at) * 1000)::int8, \
                    floor(extract(epoch FROM clock_timestamp()) * 1000)::int8, \
                    pg_catalog.pg_notification_queue_usage() \
               FROM pgtrickle.pgt_subscriptions \
              WHERE pgt_schema = $1::name AND pgt_name = $2::name AND channel = $3 \
                FOR NO KEY UPDATE SKIP LOCKED",
            None,
            &args,
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((r.get::<i64>(1)?, r.get::<i64>(2)?, r.get::<f64>(3)?)))
    })?;
    let Some((last, now, usage)) = row else {
        // Gone (unsubscribed meanwhile: its pending rows went with it) or being delivered.
        let exists = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM pgtrickle.pgt_subscriptions \
             WHERE pgt_schema = $1::name AND pgt_name = $2::name AND channel = $3)",
            &args,
        )?
        .unwrap_or(false);
        return Ok(if exists {
            Delivery::Busy
        } else {
            Delivery::Nothing
        });
    };
    let now = required(now, "clock_timestamp()")?;
    let window = i64::from(config::NOTIFY_COALESCE_MS.get());
    if let Some(opens) = last.map(|l| l.saturating_add(window)).filter(|o| *o > now) {
        let pending = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT FROM pgtrickle.pgt_notify_pending \
             WHERE pgt_schema = $1::name AND pgt_name = $2::name AND channel = $3)",
            &args,
        )?
        .unwrap_or(false);
        return Ok(if pending {
            Delivery::Later(opens)
        } else {
            Delivery::Nothing
        });
    }
    let limit = f64::from(config::NOTIFY_QUEUE_MAX_PERCENT.get()) / 100.0;
    if required(usage, "pg_notification_queue_usage()")? >= limit {
        pgrx::warning!(
            "pg_trickle did not notify channel \"{}\" of stream table {}: the NOTIFY queue is \
             {:.0}% full (pg_trickle.notify_queue_max_percent = {}); the notification stays \
             pending",
            key.channel,
            engine::render::qualified(&key.schema, &key.name),
            usage.unwrap_or_default() * 100.0,
            config::NOTIFY_QUEUE_MAX_PERCENT.get()
        );
        let interval = i64::from(config::SCHEDULER_INTERVAL_MS.get());
        return Ok(Delivery::Later(now + interval));
    }
    // The pending rows, taken (deleted) and summed; the payload built by PostgreSQL's JSON
    // functions (names quoted as format's %I does).
    let taken = Spi::connect_mut(|client| -> Result<_, pgrx::spi::Error> {
        let t = client.update(
            "WITH taken AS (DELETE FROM pgtrickle.pgt_notify_pending \
                 WHERE pgt_schema = $1::name AND pgt_name = $2::name AND channel = $3 \
                 RETURNING seq, refresh_id, inserted, deleted) \
             SELECT count(*), json_build_object( \
                 'name', format('%I.%I', $1::name, $2::name), \
                 'refresh_id', (SELECT refresh_id FROM taken ORDER BY seq DESC LIMIT 1), \
                 'inserted_count', coalesce(sum(inserted), 0), \
                 'deleted_count', coalesce(sum(deleted), 0), \
                 'refreshes', count(*))::text \
             FROM taken",
            None,
            &args,
        )?;
        let r = t.first();
        Ok((r.get::<i64>(1)?, r.get::<String>(2)?))
    })?;
    let refreshes = required(taken.0, "count(*)")?;
    if refreshes == 0 {
        return Ok(Delivery::Nothing);
    }
    let payload = required(taken.1, "json_build_object()")?;
    debug_assert!(
        payload.len() <= PAYLOAD_LIMIT,
        "a payload of two names and four numbers fits PostgreSQL's limit: {payload}"
    );
    Spi::run_with_args(
        "SELECT pg_catalog.pg_notify($1, $2)",
        &[key.channel.as_str().into(), payload.as_str().into()],
    )?;
    Spi::run_with_args(
        "UPDATE pgtrickle.pgt_subscriptions SET last_notified_at = clock_timestamp(), \
         notifications_sent = notifications_sent + 1, \
         refreshes_notified = refreshes_notified + $4 \
         WHERE pgt_schema = $1::name AND pgt_name = $2::name AND channel = $3",
        &[
            key.schema.as_str().into(),
            key.name.as_str().into(),
            key.channel.as_str().into(),
            refreshes.into(),
        ],
    )?;
    Ok(Delivery::Sent)
}

/// The scheduler's part, in its own transaction: delivers every pending notification whose
/// window has closed, and says when the next one is due (ms since the epoch), if any is left.
pub fn deliver_due() -> Result<Option<i64>, PgTrickleError> {
    crate::txn::in_transaction(|| {
        let keys = crate::roles::as_extension(|| {
            Spi::connect(|client| {
                client
                    .select(
                        "SELECT DISTINCT pgt_schema::text, pgt_name::text, channel \
                         FROM pgtrickle.pgt_notify_pending ORDER BY 1, 2, 3",
                        None,
                        &[],
                    )?
                    .map(|r| {
                        Ok(Key {
                            schema: required(r.get::<String>(1)?, "pgt_notify_pending.pgt_schema")?,
                            name: required(r.get::<String>(2)?, "pgt_notify_pending.pgt_name")?,
                            channel: required(r.get::<String>(3)?, "pgt_notify_pending.channel")?,
                        })
                    })
                    .collect::<Result<Vec<_>, PgTrickleError>>()
            })
        })?;
        let mut next: Option<i64> = None;
        for key in &keys {
            pg_sys::check_for_interrupts!();
            let at = match attempt_delivery(key) {
                Delivery::Sent | Delivery::Nothing => continue,
                Delivery::Later(at) => at,
                // Being delivered by the refresh that holds it: look again soon.
                Delivery::Busy => crate::shared::now_ms(),
            };
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next)
    })
}

#[cfg(test)]
mod tests {
    /// The longest payload: both names of 63 double quotes (each doubled by %I, each then
    /// escaped by JSON), the largest bigints, a huge refresh count.
    #[test]
    fn the_longest_payload_fits_postgresql_limit() {
        let quote = "\"".repeat(63);
        let ident = format!("\"{}\"", quote.replace('"', "\"\""));
        let name = format!("{ident}.{ident}");
        let json_name = name.replace('\\', "\\\\").replace('"', "\\\"");
        let n = i64::MIN.to_string();
        let payload = format!(
            "{{\"name\" : \"{json_name}\", \"refresh_id\" : {n}, \"inserted_count\" : {n}, \
             \"deleted_count\" : {n}, \"refreshes\" : {n}}}"
        );
        assert!(payload.len() <= super::PAYLOAD_LIMIT, "{}", payload.len());
    }

    #[test]
    fn channels_are_refused_as_pg_notify_would() {
        assert!(super::check_channel("").is_err());
        assert!(super::check_channel(&"c".repeat(64)).is_err());
        assert!(super::check_channel(&"c".repeat(63)).is_ok());
        assert!(super::check_channel("Needs \"quoting\"").is_ok());
    }
}
