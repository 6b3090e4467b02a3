//! Transactional outboxes: `pgtrickle.enable_outbox(stream_table)` makes every statement that
//! changes a stream table's storage (every refresh, FULL or DIFFERENTIAL, and every IMMEDIATE
//! maintenance) write one message carrying the rows it deleted and inserted, in the same
//! transaction. docs/RELAY_GUIDE.md has the user's view; the relay (`relay/`) delivers the
//! messages to Redis, NATS, Kafka, webhooks or stdout.
//!
//! How a message is made:
//! 1. Four statement-level AFTER triggers on the storage ([`engine::names::OUTBOX_TRIGGERS`])
//!    call `pgtrickle.outbox_capture()` with the statement's transition tables. It drops the
//!    hidden `__pgt_` columns, writes nothing for a statement that changed no row, and writes a
//!    `truncate` message (no rows) for the TRUNCATE of a FULL refresh, whose INSERT follows. A
//!    statement of more than `max_message_rows` rows or `max_message_bytes` of row JSON
//!    (10,000 and 64 MB by default) is split into messages within both, deleted rows first.
//! 2. The message's sequence number is `last_seq + 1` of the outbox's row in `pgt_outboxes`,
//!    taken by an UPDATE: the row stays locked until the writing transaction ends, so messages
//!    of one stream table commit in sequence order and a reader never sees `n + 1` before `n`.
//!    Applying the messages in sequence order (deleted rows, then inserted rows, of each; a
//!    `truncate` empties the copy) reproduces the storage's user columns exactly.
//! 3. A body over the outbox's `inline_max_bytes` is stored in `pgt_outbox_payloads` (the
//!    claim check) and the message carries a reference to it instead; the body stays
//!    `claim_check_retention` after every group consumed the message, for the consumers
//!    downstream of the sink to read.
//!
//! Consumption: consumer groups ([`create_consumer_group`]) each have a committed offset and a
//! lease. [`poll_outbox`] takes or renews the group's lease (a new holder gets a new epoch) and
//! returns the messages after the offset; [`commit_outbox`] advances the offset for the lease
//! holder of the current epoch only (a holder that lost its lease is fenced, 55P03), and then
//! deletes the messages every group has consumed. Messages are kept while no group exists.

// pgrx's ErrorReport is the error type of SQL functions (what PostgreSQL reports).
#![allow(clippy::result_large_err)]

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::{argument, required, PgTrickleError};
use crate::stream_table::{self, StreamTable};
use engine::names::OUTBOX_TRIGGERS;

extension_sql!(
    r#"
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
"#,
    name = "outboxes",
    requires = ["catalog_tables"]
);

/// The outbox of a stream table, with its settings.
struct Outbox {
    id: i64,
    last_seq: i64,
}

/// The outbox of `st`, if it has one (read as the extension's owner).
fn outbox_of(st: &StreamTable, lock: bool) -> Result<Option<Outbox>, PgTrickleError> {
    crate::roles::as_extension(|| {
        Spi::connect(|client| {
            let t = client.select(
                &format!(
                    "SELECT outbox_id, last_seq FROM pgtrickle.pgt_outboxes WHERE pgt_id = $1{}",
                    if lock { " FOR UPDATE" } else { "" }
                ),
                None,
                &[st.id.into()],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            let row = t.first();
            Ok(Some(Outbox {
                id: required(row.get::<i64>(1)?, "pgt_outboxes.outbox_id")?,
                last_seq: required(row.get::<i64>(2)?, "pgt_outboxes.last_seq")?,
            }))
        })
    })
}

/// The outbox of `st`; 55000 when it has none.
fn existing_outbox(st: &StreamTable, lock: bool) -> Result<Outbox, PgTrickleError> {
    outbox_of(st, lock)?.ok_or_else(|| PgTrickleError::NoOutbox {
        stream_table: st.qualified(),
    })
}

/// The stream table a consumer names: it must have the privileges of its owner or SELECT on
/// it (42501 otherwise), as for reading the stream table itself.
fn readable(function: &'static str, name: Option<&str>) -> Result<StreamTable, PgTrickleError> {
    let st = stream_table::find(argument(function, "stream_table", name)?, false)?;
    if !crate::roles::may_read(crate::roles::current(), st.relid, st.owner) {
        return Err(PgTrickleError::NotConsumer {
            stream_table: st.qualified(),
        });
    }
    Ok(st)
}

/// Gives a stream table an outbox: from now on every statement that changes its storage
/// writes a message (docs/RELAY_GUIDE.md). `inline_max_bytes`: a larger body goes to the
/// claim-check table `pgtrickle.pgt_outbox_payloads`, where it stays `claim_check_retention`
/// after every consumer group consumed its message. A statement's change is split into
/// messages of at most `max_message_rows` rows and `max_message_bytes` of row JSON. For its
/// owner (42501 otherwise); 42710 when it has one already.
#[pg_extern(volatile, parallel_unsafe)]
fn enable_outbox(
    stream_table: Option<&str>,
    inline_max_bytes: default!(Option<i32>, 65536),
    claim_check_retention: default!(Option<pgrx::datum::Interval>, "'1 day'"),
    max_message_rows: default!(Option<i32>, 10000),
    max_message_bytes: default!(Option<i64>, 67108864),
) -> Result<(), ErrorReport> {
    const F: &str = "enable_outbox";
    Ok(crate::settings::with_standard_strings(|| {
        let name = argument(F, "stream_table", stream_table)?;
        let inline_max_bytes = argument(F, "inline_max_bytes", inline_max_bytes)?;
        let retention = argument(F, "claim_check_retention", claim_check_retention)?;
        let max_rows = argument(F, "max_message_rows", max_message_rows)?;
        let max_bytes = argument(F, "max_message_bytes", max_message_bytes)?;
        if max_rows < 1 {
            return Err(PgTrickleError::InvalidParameter {
                param: "max_message_rows",
                value: max_rows.to_string(),
                hint: "At least 1 row per message.".into(),
            });
        }
        if !(1..=134_217_728).contains(&max_bytes) {
            return Err(PgTrickleError::InvalidParameter {
                param: "max_message_bytes",
                value: max_bytes.to_string(),
                hint: "1 byte to 128 MB (134217728): a message body is one jsonb value, at \
                       most 256 MB."
                    .into(),
            });
        }
        let negative =
            Spi::get_one_with_args::<bool>("SELECT $1 < interval '0'", &[retention.into()])?;
        if negative == Some(true) {
            return Err(PgTrickleError::InvalidParameter {
                param: "claim_check_retention",
                value: "a negative interval".into(),
                hint: "An interval of 0 or more.".into(),
            });
        }
        if inline_max_bytes < 0 {
            return Err(PgTrickleError::InvalidParameter {
                param: "inline_max_bytes",
                value: inline_max_bytes.to_string(),
                hint: "A size in bytes, 0 or more (0 sends every body by claim check).".into(),
            });
        }
        let st = crate::api::owned(name)?;
        if st.in_shadow_build {
            return Err(crate::shadow::in_progress(&st)?);
        }
        if outbox_of(&st, true)?.is_some() {
            return Err(PgTrickleError::OutboxExists {
                stream_table: st.qualified(),
            });
        }
        crate::roles::as_extension(|| {
            Spi::run_with_args(
                "INSERT INTO pgtrickle.pgt_outboxes (pgt_id, inline_max_bytes, \
                 claim_check_retention, max_message_rows, max_message_bytes) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    st.id.into(),
                    inline_max_bytes.into(),
                    retention.into(),
                    max_rows.into(),
                    max_bytes.into(),
                ],
            )?;
            for (trigger, event, transition) in OUTBOX_TRIGGERS {
                Spi::run(&format!(
                    "CREATE TRIGGER {trigger} AFTER {event} ON {} {transition} \
                     FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.outbox_capture()",
                    st.qualified()
                ))?;
            }
            Ok(())
        })
    })?)
}

/// Removes a stream table's outbox with its messages and consumer groups. For its owner;
/// 55000 when it has none.
#[pg_extern(volatile, parallel_unsafe)]
fn disable_outbox(stream_table: Option<&str>) -> Result<(), ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let st = crate::api::owned(argument("disable_outbox", "stream_table", stream_table)?)?;
        let outbox = existing_outbox(&st, true)?;
        crate::roles::as_extension(|| {
            for (trigger, _, _) in OUTBOX_TRIGGERS {
                Spi::run(&format!(
                    "DROP TRIGGER IF EXISTS {trigger} ON {}",
                    st.qualified()
                ))?;
            }
            Spi::run_with_args(
                "DELETE FROM pgtrickle.pgt_outboxes WHERE outbox_id = $1",
                &[outbox.id.into()],
            )?;
            Ok(())
        })
    })?)
}

/// Creates consumer group `consumer_group` on a stream table's outbox. `start_at`:
/// `earliest` (the messages still retained) or `latest` (only messages written after now).
/// For the roles that may read the stream table; 42710 when the group exists.
#[pg_extern(volatile, parallel_unsafe)]
fn create_consumer_group(
    stream_table: Option<&str>,
    consumer_group: Option<&str>,
    start_at: default!(Option<&str>, "'earliest'"),
) -> Result<(), ErrorReport> {
    const F: &str = "create_consumer_group";
    Ok(crate::settings::with_standard_strings(|| {
        let group = argument(F, "consumer_group", consumer_group)?;
        check_group_name(group)?;
        let start_at = argument(F, "start_at", start_at)?;
        let st = readable(F, stream_table)?;
        let outbox = existing_outbox(&st, true)?;
        let committed = match start_at.trim().to_ascii_lowercase().as_str() {
            "earliest" => 0,
            "latest" => outbox.last_seq,
            other => {
                return Err(PgTrickleError::InvalidParameter {
                    param: "start_at",
                    value: other.to_string(),
                    hint: "Valid values are earliest and latest.".into(),
                })
            }
        };
        let added = crate::roles::as_extension(|| {
            Ok(Spi::connect_mut(|client| {
                client
                    .update(
                        "INSERT INTO pgtrickle.pgt_outbox_groups \
                         (outbox_id, group_name, committed_seq) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                        None,
                        &[outbox.id.into(), group.into(), committed.into()],
                    )
                    .map(|t| t.len() == 1)
            })?)
        })?;
        if !added {
            return Err(PgTrickleError::ConsumerGroupExists {
                group: group.to_string(),
                stream_table: st.qualified(),
            });
        }
        Ok(())
    })?)
}

/// Drops a consumer group; the messages only it had not consumed are deleted. For the roles
/// that may read the stream table; 42704 when there is no such group.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_consumer_group(
    stream_table: Option<&str>,
    consumer_group: Option<&str>,
) -> Result<(), ErrorReport> {
    const F: &str = "drop_consumer_group";
    Ok(crate::settings::with_standard_strings(|| {
        let group = argument(F, "consumer_group", consumer_group)?;
        let st = readable(F, stream_table)?;
        let outbox = existing_outbox(&st, true)?;
        let dropped = crate::roles::as_extension(|| {
            Ok(Spi::connect_mut(|client| {
                client
                    .update(
                        "DELETE FROM pgtrickle.pgt_outbox_groups \
                         WHERE outbox_id = $1 AND group_name = $2 RETURNING 1",
                        None,
                        &[outbox.id.into(), group.into()],
                    )
                    .map(|t| t.len() == 1)
            })?)
        })?;
        if !dropped {
            return Err(unknown_group(group, &st));
        }
        purge(outbox.id)
    })?)
}

fn check_group_name(group: &str) -> Result<(), PgTrickleError> {
    if group.is_empty() || group.len() > 200 {
        return Err(PgTrickleError::InvalidParameter {
            param: "consumer_group",
            value: group.to_string(),
            hint: "A consumer group's name is 1 to 200 bytes long.".into(),
        });
    }
    Ok(())
}

fn unknown_group(group: &str, st: &StreamTable) -> PgTrickleError {
    PgTrickleError::UnknownConsumerGroup {
        group: group.to_string(),
        stream_table: st.qualified(),
    }
}

/// A consumer group's lease and offset, its row locked.
struct Lease {
    holder: Option<String>,
    epoch: i64,
    live: bool,
    committed: i64,
    expires: Option<String>,
}

fn lease(outbox: i64, group: &str, st: &StreamTable) -> Result<Lease, PgTrickleError> {
    let found = Spi::connect_mut(|client| -> Result<Option<Lease>, PgTrickleError> {
        let t = client.update(
            "SELECT lease_holder, lease_epoch, \
                    coalesce(lease_expires_at > clock_timestamp(), false), committed_seq, \
                    lease_expires_at::text \
               FROM pgtrickle.pgt_outbox_groups \
              WHERE outbox_id = $1 AND group_name = $2 FOR UPDATE",
            None,
            &[outbox.into(), group.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let row = t.first();
        Ok(Some(Lease {
            holder: row.get::<String>(1)?,
            epoch: required(row.get::<i64>(2)?, "pgt_outbox_groups.lease_epoch")?,
            live: required(row.get::<bool>(3)?, "coalesce(…)")?,
            committed: required(row.get::<i64>(4)?, "pgt_outbox_groups.committed_seq")?,
            expires: row.get::<String>(5)?,
        }))
    })?;
    found.ok_or_else(|| unknown_group(group, st))
}

/// Takes (or renews) the consumer group's lease for `consumer` for `lease_seconds`; returns
/// the outbox, the group's committed offset and the lease's epoch. A lease held by another
/// consumer that has not expired: 55P03. A new holder gets a new `lease_epoch`, which its
/// commits must carry. `poll_outbox` takes the lease this way and returns the messages.
#[pg_extern(volatile, parallel_unsafe)]
fn lease_outbox(
    stream_table: Option<&str>,
    consumer_group: Option<&str>,
    consumer: Option<&str>,
    lease_seconds: default!(Option<f64>, 30.0),
) -> Result<
    TableIterator<
        'static,
        (
            name!(outbox_id, i64),
            name!(committed_seq, i64),
            name!(lease_epoch, i64),
        ),
    >,
    ErrorReport,
> {
    const F: &str = "lease_outbox";
    Ok(crate::settings::with_standard_strings(|| {
        let group = argument(F, "consumer_group", consumer_group)?;
        let consumer = argument(F, "consumer", consumer)?;
        let lease_seconds = argument(F, "lease_seconds", lease_seconds)?;
        if !(lease_seconds > 0.0 && lease_seconds <= 86_400.0) {
            return Err(PgTrickleError::InvalidParameter {
                param: "lease_seconds",
                value: lease_seconds.to_string(),
                hint: "More than 0 and at most 86400 seconds.".into(),
            });
        }
        if consumer.is_empty() {
            return Err(PgTrickleError::InvalidParameter {
                param: "consumer",
                value: String::new(),
                hint: "Name the consumer (a relay's consumer_id, say).".into(),
            });
        }
        let st = readable(F, stream_table)?;
        let outbox = existing_outbox(&st, false)?;
        let (committed, epoch) = crate::roles::as_extension(|| {
            let l = lease(outbox.id, group, &st)?;
            let ours = l.holder.as_deref() == Some(consumer);
            if !ours && l.live {
                return Err(PgTrickleError::LeaseHeld {
                    group: group.to_string(),
                    stream_table: st.qualified(),
                    holder: l.holder.clone().unwrap_or_default(),
                    until: l.expires.clone().unwrap_or_default(),
                });
            }
            let epoch = if ours { l.epoch } else { l.epoch + 1 };
            Spi::run_with_args(
                "UPDATE pgtrickle.pgt_outbox_groups SET lease_holder = $3, lease_epoch = $4, \
                        lease_expires_at = clock_timestamp() + make_interval(secs => $5) \
                  WHERE outbox_id = $1 AND group_name = $2",
                &[
                    outbox.id.into(),
                    group.into(),
                    consumer.into(),
                    epoch.into(),
                    lease_seconds.into(),
                ],
            )?;
            Ok((l.committed, epoch))
        })?;
        Ok(TableIterator::new(std::iter::once((
            outbox.id, committed, epoch,
        ))))
    })?)
}

/// The id of a stream table's outbox (55000 when it has none), for the roles that may read
/// the stream table (42501 otherwise).
#[pg_extern(volatile, parallel_unsafe)]
fn outbox_id(stream_table: Option<&str>) -> Result<i64, ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let st = readable("outbox_id", stream_table)?;
        Ok(existing_outbox(&st, false)?.id)
    })?)
}

// poll_outbox and outbox_payload are SQL: they return the jsonb PostgreSQL stored, digit for
// digit (a round trip through Rust's JSON values would turn the numeric 20.00 into 20.0, and
// lose the digits of a large one).
extension_sql!(
    r#"
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
"#,
    name = "outbox_sql_functions",
    requires = ["outboxes", lease_outbox, outbox_id]
);

/// Commits the consumer group's offset: every message up to `seq` was delivered. Only the
/// holder of the lease of epoch `lease_epoch` may (55P03 otherwise: fenced); an offset below
/// the committed one changes nothing. Returns the committed offset. Messages every group has
/// consumed are then deleted.
#[pg_extern(volatile, parallel_unsafe)]
fn commit_outbox(
    stream_table: Option<&str>,
    consumer_group: Option<&str>,
    consumer: Option<&str>,
    lease_epoch: Option<i64>,
    seq: Option<i64>,
) -> Result<i64, ErrorReport> {
    const F: &str = "commit_outbox";
    Ok(crate::settings::with_standard_strings(|| {
        let group = argument(F, "consumer_group", consumer_group)?;
        let consumer = argument(F, "consumer", consumer)?;
        let epoch = argument(F, "lease_epoch", lease_epoch)?;
        let seq = argument(F, "seq", seq)?;
        let st = readable(F, stream_table)?;
        let outbox = existing_outbox(&st, false)?;
        crate::roles::as_extension(|| {
            let l = lease(outbox.id, group, &st)?;
            if l.holder.as_deref() != Some(consumer) || l.epoch != epoch {
                return Err(PgTrickleError::LeaseLost {
                    group: group.to_string(),
                    stream_table: st.qualified(),
                    consumer: consumer.to_string(),
                    epoch,
                });
            }
            let last = Spi::get_one_with_args::<i64>(
                "SELECT last_seq FROM pgtrickle.pgt_outboxes WHERE outbox_id = $1",
                &[outbox.id.into()],
            )?;
            let last = required(last, "pgt_outboxes.last_seq")?;
            if seq > last || seq < 0 {
                return Err(PgTrickleError::InvalidParameter {
                    param: "seq",
                    value: seq.to_string(),
                    hint: format!("The outbox's messages are numbered 1 to {last}."),
                });
            }
            if seq <= l.committed {
                return Ok(l.committed);
            }
            Spi::run_with_args(
                "UPDATE pgtrickle.pgt_outbox_groups SET committed_seq = $3, \
                        committed_at = clock_timestamp() \
                  WHERE outbox_id = $1 AND group_name = $2",
                &[outbox.id.into(), group.into(), seq.into()],
            )?;
            purge(outbox.id)?;
            Ok(seq)
        })
    })?)
}

/// Gives the consumer group's lease up (a consumer that stops): another consumer may take it
/// at once instead of waiting for it to expire. Only its holder can (of epoch `lease_epoch`,
/// when given); returns whether it did (false: it did not hold it).
#[pg_extern(volatile, parallel_unsafe)]
fn release_outbox_lease(
    stream_table: Option<&str>,
    consumer_group: Option<&str>,
    consumer: Option<&str>,
    lease_epoch: default!(Option<i64>, "NULL"),
) -> Result<bool, ErrorReport> {
    const F: &str = "release_outbox_lease";
    Ok(crate::settings::with_standard_strings(|| {
        let group = argument(F, "consumer_group", consumer_group)?;
        let consumer = argument(F, "consumer", consumer)?;
        let st = readable(F, stream_table)?;
        let outbox = existing_outbox(&st, false)?;
        crate::roles::as_extension(|| {
            let l = lease(outbox.id, group, &st)?;
            if l.holder.as_deref() != Some(consumer) || lease_epoch.is_some_and(|e| e != l.epoch) {
                return Ok(false);
            }
            Spi::run_with_args(
                "UPDATE pgtrickle.pgt_outbox_groups SET lease_expires_at = clock_timestamp() \
                  WHERE outbox_id = $1 AND group_name = $2",
                &[outbox.id.into(), group.into()],
            )?;
            Ok(true)
        })
    })?)
}

/// Deletes the messages of `outbox` that every consumer group has committed (none while it
/// has no group); their claim-checked bodies are stamped consumed, and deleted once consumed
/// longer than the outbox's `claim_check_retention` ago.
fn purge(outbox: i64) -> Result<(), PgTrickleError> {
    crate::roles::as_extension(|| {
        Spi::run_with_args(
            "WITH consumed AS (SELECT min(committed_seq) AS upto \
                                 FROM pgtrickle.pgt_outbox_groups WHERE outbox_id = $1), \
                  gone AS (DELETE FROM pgtrickle.pgt_outbox \
                            WHERE outbox_id = $1 AND seq <= (SELECT upto FROM consumed)) \
             UPDATE pgtrickle.pgt_outbox_payloads SET consumed_at = clock_timestamp() \
              WHERE outbox_id = $1 AND consumed_at IS NULL \
                AND seq <= (SELECT upto FROM consumed)",
            &[outbox.into()],
        )?;
        Spi::run_with_args(
            "DELETE FROM pgtrickle.pgt_outbox_payloads p \
              WHERE p.outbox_id = $1 AND p.consumed_at < clock_timestamp() - \
                    (SELECT claim_check_retention FROM pgtrickle.pgt_outboxes WHERE outbox_id = $1)",
            &[outbox.into()],
        )?;
        Ok(())
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
#[allow(clippy::unwrap_used)]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run("CREATE TABLE src (id int PRIMARY KEY, g int NOT NULL, v int)").unwrap();
        Spi::run("INSERT INTO src VALUES (1, 1, 10), (2, 1, 20), (3, 2, 30)").unwrap();
        Spi::run(
            "SELECT pgtrickle.create_stream_table('agg', \
             'SELECT g, count(*) AS n, sum(v) AS s FROM src GROUP BY g', \
             schedule => '1h', refresh_mode => 'DIFFERENTIAL')",
        )
        .unwrap();
        Spi::run("SELECT pgtrickle.enable_outbox('agg')").unwrap();
        Spi::run("SELECT pgtrickle.create_consumer_group('agg', 'g1')").unwrap();
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    #[pg_test]
    fn a_refresh_writes_its_delta_without_hidden_columns() {
        setup();
        Spi::run("UPDATE src SET v = 11 WHERE id = 1").unwrap();
        Spi::run("SELECT pgtrickle.refresh_stream_table('agg')").unwrap();
        let deleted = Spi::get_one::<String>(
            "SELECT string_agg((message->'payload'->'deleted')::text, ',' ORDER BY seq) \
               FROM pgtrickle.poll_outbox('agg', 'g1', 'c1')",
        )
        .unwrap()
        .unwrap();
        assert!(
            deleted.contains(r#"{"g": 1, "n": 2, "s": 30}"#),
            "{deleted}"
        );
        let inserted = Spi::get_one::<String>(
            "SELECT string_agg((message->'payload'->'inserted')::text, ',' ORDER BY seq) \
               FROM pgtrickle.poll_outbox('agg', 'g1', 'c1')",
        )
        .unwrap()
        .unwrap();
        assert!(
            inserted.contains(r#"{"g": 1, "n": 2, "s": 31}"#),
            "{inserted}"
        );
        assert!(!inserted.contains("__pgt"), "{inserted}");
    }

    #[pg_test]
    fn commit_purges_what_every_group_consumed() {
        setup();
        Spi::run("SELECT pgtrickle.create_consumer_group('agg', 'g2')").unwrap();
        Spi::run("INSERT INTO src VALUES (4, 3, 1)").unwrap();
        Spi::run("SELECT pgtrickle.refresh_stream_table('agg')").unwrap();
        let last = count("SELECT max(seq) FROM pgtrickle.poll_outbox('agg', 'g1', 'c1')");
        let epoch = count("SELECT lease_epoch FROM pgtrickle.lease_outbox('agg', 'g1', 'c1')");
        assert_eq!(epoch, 1, "the first holder's epoch");
        let commit = format!("SELECT pgtrickle.commit_outbox('agg', 'g1', 'c1', 1, {last})");
        assert_eq!(count(&commit), last);
        // g2 has consumed nothing: the messages stay.
        assert_eq!(count("SELECT count(*) FROM pgtrickle.pgt_outbox"), last);
        Spi::run(&format!(
            "SELECT pgtrickle.lease_outbox('agg', 'g2', 'c2'); \
             SELECT pgtrickle.commit_outbox('agg', 'g2', 'c2', 1, {last})"
        ))
        .unwrap();
        assert_eq!(count("SELECT count(*) FROM pgtrickle.pgt_outbox"), 0);
    }
}
