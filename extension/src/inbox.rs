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

/// The longest dedup key an inbox takes, in bytes.
const MAX_KEY_BYTES: usize = 512;

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

/// An inbox as registered: its table and dead-letter table (quoted, qualified) and its rules.
struct Inbox {
    table: String,
    dead_letter: String,
    max_payload_bytes: usize,
    required_keys: Vec<String>,
}

/// The inbox a caller named (resolved as the caller); 42809 when the table is no inbox.
fn find(name: &str) -> Result<Inbox, PgTrickleError> {
    let found = Spi::connect(|client| -> Result<Option<Inbox>, PgTrickleError> {
        let t = client.select(
            "SELECT i.inbox_relid::regclass::text, i.dead_letter_relid::regclass::text, \
                    i.max_payload_bytes, i.required_keys \
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
        let max = required(row.get::<i32>(3)?, "pgt_inboxes.max_payload_bytes")?;
        Ok(Some(Inbox {
            table: required(row.get::<String>(1)?, "pgt_inboxes.inbox_relid")?,
            dead_letter: required(row.get::<String>(2)?, "pgt_inboxes.dead_letter_relid")?,
            max_payload_bytes: usize::try_from(max).unwrap_or(0),
            required_keys: required(row.get::<Vec<String>>(4)?, "pgt_inboxes.required_keys")?,
        }))
    })?;
    found.ok_or_else(|| PgTrickleError::NotAnInbox(name.to_string()))
}

/// Why a message fails the inbox's validation, if it does.
fn invalid(inbox: &Inbox, dedup_key: Option<&str>, payload: Option<&str>) -> Option<String> {
    let key = match dedup_key {
        None | Some("") => return Some("the dedup key is missing".into()),
        Some(k) => k,
    };
    if key.len() > MAX_KEY_BYTES {
        return Some(format!(
            "the dedup key is {} bytes long, more than {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    let Some(payload) = payload else {
        return Some("the payload is missing".into());
    };
    if payload.len() > inbox.max_payload_bytes {
        return Some(format!(
            "the payload is {} bytes long, more than max_payload_bytes ({})",
            payload.len(),
            inbox.max_payload_bytes
        ));
    }
    let value: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(e) => return Some(format!("the payload is not valid JSON: {e}")),
    };
    // jsonb refuses the NUL character (\u0000 in a string or key), which JSON allows.
    if has_nul(&value) {
        return Some("the payload contains \\u0000, which jsonb cannot store".into());
    }
    if !inbox.required_keys.is_empty() {
        let Some(object) = value.as_object() else {
            return Some("the payload is not a JSON object, and the inbox requires keys".into());
        };
        let missing: Vec<&str> = inbox
            .required_keys
            .iter()
            .filter(|k| !object.contains_key(k.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "the payload lacks required key(s): {}",
                missing.join(", ")
            ));
        }
    }
    None
}

fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Stores a message in inbox `inbox` once: returns `inserted`, `duplicate` (its dedup key was
/// there already; nothing changes) or `dead_letter` (it failed validation and was stored in the
/// dead-letter table with the reason). Runs with the caller's privileges on the two tables.
#[pg_extern(volatile, parallel_unsafe)]
fn inbox_ingest(
    inbox: Option<&str>,
    dedup_key: Option<&str>,
    payload: Option<&str>,
    source: default!(Option<&str>, "NULL"),
) -> Result<String, ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let inbox = find(argument("inbox_ingest", "inbox", inbox)?)?;
        if let Some(reason) = invalid(&inbox, dedup_key, payload) {
            Spi::run_with_args(
                &format!(
                    "INSERT INTO {} (dedup_key, payload, source, reason) VALUES ($1, $2, $3, $4)",
                    inbox.dead_letter
                ),
                &[
                    dedup_key.into(),
                    payload.into(),
                    source.into(),
                    reason.into(),
                ],
            )?;
            return Ok("dead_letter".to_string());
        }
        let inserted = Spi::connect_mut(|client| {
            client
                .update(
                    &format!(
                        "INSERT INTO {} (dedup_key, payload, source) VALUES ($1, $2::jsonb, $3) \
                         ON CONFLICT (dedup_key) DO NOTHING RETURNING 1",
                        inbox.table
                    ),
                    None,
                    &[dedup_key.into(), payload.into(), source.into()],
                )
                .map(|t| t.len() == 1)
        })?;
        Ok(if inserted { "inserted" } else { "duplicate" }.to_string())
    })?)
}

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

#[cfg(test)]
mod unit {
    use super::*;

    fn inbox(keys: &[&str]) -> Inbox {
        Inbox {
            table: "i".into(),
            dead_letter: "i_dead_letter".into(),
            max_payload_bytes: 64,
            required_keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let i = inbox(&["id"]);
        assert_eq!(invalid(&i, Some("k"), Some(r#"{"id": 1}"#)), None);
        assert!(invalid(&i, None, Some("{}")).unwrap().contains("dedup key"));
        assert!(invalid(&i, Some(""), Some("{}"))
            .unwrap()
            .contains("dedup key"));
        assert!(invalid(&i, Some("k"), Some("{"))
            .unwrap()
            .contains("not valid JSON"));
        assert!(invalid(&i, Some("k"), Some("[1]"))
            .unwrap()
            .contains("not a JSON object"));
        assert!(invalid(&i, Some("k"), Some(r#"{"x": 1}"#))
            .unwrap()
            .contains("id"));
        let big = format!(r#"{{"id": "{}"}}"#, "x".repeat(100));
        assert!(invalid(&i, Some("k"), Some(&big))
            .unwrap()
            .contains("max_payload_bytes"));
        assert!(invalid(&i, Some(&"k".repeat(513)), Some("{}"))
            .unwrap()
            .contains("513"));
        assert!(invalid(&inbox(&[]), Some("k"), Some(r#""\u0000""#))
            .unwrap()
            .contains("u0000"));
        assert!(invalid(&inbox(&[]), Some("k"), Some(r#"{"a\u0000": 1}"#))
            .unwrap()
            .contains("u0000"));
        // An escaped backslash before u0000 is no NUL.
        assert_eq!(invalid(&inbox(&[]), Some("k"), Some(r#""\\u0000""#)), None);
        assert_eq!(invalid(&inbox(&[]), Some("k"), Some("[1, null]")), None);
    }
}
