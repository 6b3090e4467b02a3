//! Inboxes: idempotent ingestion of external messages. `pgtrickle.create_inbox(name)` creates
//! a table keyed by the messages' dedup key and a dead-letter table beside it;
//! `pgtrickle.inbox_ingest(inbox, dedup_key, payload)` stores a message once (a second copy
//! with the same key is a no-op), or, when it fails validation, stores it in the dead-letter
//! table with the reason. An inbox is an ordinary table with a primary key: stream tables may
//! read it like any other source. docs/RELAY_GUIDE.md has the user's view.
//!
//! Validation: a dedup key of 1 to 512 bytes, a payload of at most `max_payload_bytes` that is
//! a JSON document PostgreSQL's jsonb accepts, and, when `required_keys` are given, an object
//! with each of them. Nothing is lost: every call stores its message in one of the two tables
//! (or finds it already stored), in the caller's transaction, with the caller's privileges.

// pgrx's ErrorReport is the error type of SQL functions (what PostgreSQL reports).
#![allow(clippy::result_large_err)]

use engine::render::qualified;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::{argument, required, PgTrickleError};

extension_sql!(
    r#"
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
"#,
    name = "inboxes",
    requires = ["schemas"]
);

/// The dead-letter table's name beside inbox `name`.
fn dead_letter_name(name: &str) -> String {
    format!("{name}_dead_letter")
}

/// Creates inbox `name` (schema-qualified or in the first schema of the search_path) and its
/// dead-letter table `<name>_dead_letter`, owned by the caller. `max_payload_bytes`: larger
/// payloads are dead-lettered; `required_keys`: keys every payload (a JSON object) must have.
#[pg_extern(volatile, parallel_unsafe)]
fn create_inbox(
    name: Option<&str>,
    max_payload_bytes: default!(Option<i32>, 1048576),
    required_keys: default!(Option<Vec<String>>, "'{}'"),
) -> Result<(), ErrorReport> {
    const F: &str = "create_inbox";
    Ok(crate::settings::with_standard_strings(|| {
        let name = argument(F, "name", name)?;
        let max = argument(F, "max_payload_bytes", max_payload_bytes)?;
        let keys = argument(F, "required_keys", required_keys)?;
        if max < 1 {
            return Err(PgTrickleError::InvalidParameter {
                param: "max_payload_bytes",
                value: max.to_string(),
                hint: "A size in bytes, at least 1.".into(),
            });
        }
        let (schema, rel) = crate::stream_table::parse_name(name)?;
        let dead = dead_letter_name(&rel);
        if dead.len() >= pg_sys::NAMEDATALEN as usize {
            return Err(PgTrickleError::InvalidParameter {
                param: "name",
                value: name.to_string(),
                hint: format!(
                    "The dead-letter table's name ({dead}) must fit in {} bytes.",
                    pg_sys::NAMEDATALEN - 1
                ),
            });
        }
        // An unqualified name is created where CREATE TABLE would put it: the first schema of
        // the search_path (checked for a taken name there, not anywhere on the path).
        let schema = match schema {
            Some(s) => s,
            None => required(
                Spi::get_one::<String>("SELECT current_schema()::text")?,
                "current_schema() (no schema on the search_path to create the inbox in)",
            )?,
        };
        let place = |r: &str| qualified(&schema, r);
        let (inbox, dead_letter) = (place(&rel), place(&dead));
        crate::storage::ensure_free(&inbox)?;
        crate::storage::ensure_free(&dead_letter)?;
        Spi::run(&format!(
            "CREATE TABLE {inbox} ( \
               dedup_key   text PRIMARY KEY CHECK (dedup_key <> ''), \
               payload     jsonb NOT NULL, \
               source      text, \
               received_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ))?;
        Spi::run(&format!(
            "CREATE TABLE {dead_letter} ( \
               id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
               dedup_key   text, \
               payload     text, \
               source      text, \
               reason      text NOT NULL, \
               received_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ))?;
        let relid = |t: &str| -> Result<i64, PgTrickleError> {
            let oid = Spi::get_one::<i64>(&format!(
                "SELECT {}::regclass::oid::bigint",
                engine::render::quote_literal(t)
            ))?;
            required(oid, "the new table's OID")
        };
        let (inbox_oid, dead_oid) = (relid(&inbox)?, relid(&dead_letter)?);
        crate::roles::as_extension(|| {
            Spi::run_with_args(
                "INSERT INTO pgtrickle.pgt_inboxes \
                 (inbox_relid, dead_letter_relid, max_payload_bytes, required_keys) \
                 VALUES ($1::bigint::oid, $2::bigint::oid, $3, $4)",
                &[
                    inbox_oid.into(),
                    dead_oid.into(),
                    max.into(),
                    keys.clone().into(),
                ],
            )?;
            Ok(())
        })
    })?)
}

/// An inbox as registered: its table and dead-letter table (quoted, qualified).
struct Inbox {
    table: String,
    dead_letter: String,
}

/// The inbox a caller named (resolved as the caller); 42809 when the table is no inbox.
fn find(name: &str) -> Result<Inbox, PgTrickleError> {
    let found = Spi::connect(|client| -> Result<Option<Inbox>, PgTrickleError> {
        let t = client.select(
            "SELECT i.inbox_relid::regclass::text, i.dead_letter_relid::regclass::text \
               FROM pgtrickle.pgt_inboxes i \
              WHERE i.inbox_relid = pg_catalog.to_regclass($1)::oid \
                AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = i.dead_letter_relid)",
            None,
            &[name.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let row = t.first();
        Ok(Some(Inbox {
            table: required(row.get::<String>(1)?, "pgt_inboxes.inbox_relid")?,
            dead_letter: required(row.get::<String>(2)?, "pgt_inboxes.dead_letter_relid")?,
        }))
    })?;
    found.ok_or_else(|| PgTrickleError::NotAnInbox(name.to_string()))
}

// inbox_ingest is PL/pgSQL: jsonb's own input function judges the payload (anything jsonb
// refuses, a NUL escape or a number out of its range, goes to the dead letters with jsonb's
// reason, in a subtransaction, instead of failing the call), with the caller's privileges.
extension_sql!(
    r#"
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
"#,
    name = "inbox_ingest",
    requires = ["inboxes"]
);

/// Drops inbox `name` and its dead-letter table (as the caller, who must own them).
#[pg_extern(volatile, parallel_unsafe)]
fn drop_inbox(name: Option<&str>) -> Result<(), ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let name = argument("drop_inbox", "name", name)?;
        let inbox = find(name)?;
        let oid = Spi::get_one_with_args::<i64>(
            "SELECT pg_catalog.to_regclass($1)::oid::bigint",
            &[name.into()],
        )?;
        let oid = required(oid, "the inbox's OID")?;
        Spi::run(&format!(
            "DROP TABLE {}, {}",
            inbox.table, inbox.dead_letter
        ))?;
        crate::roles::as_extension(|| {
            Spi::run_with_args(
                "DELETE FROM pgtrickle.pgt_inboxes WHERE inbox_relid = $1::bigint::oid",
                &[oid.into()],
            )?;
            Ok(())
        })
    })?)
}
