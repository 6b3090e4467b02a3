//! The outbox message envelope (version 1), as `pgtrickle.poll_outbox()` returns it and as
//! every sink delivers it: one JSON object per message. docs/RELAY_GUIDE.md describes the
//! fields. The relay checks each envelope's header before delivery ([`Envelope::check`]; the
//! rows are skipped unread and delivered as PostgreSQL wrote them): an envelope of another
//! version (a newer extension than this relay knows) is refused, and nothing after it is
//! delivered or committed until a relay that knows it runs.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The envelope version this relay reads and writes.
pub const VERSION: u64 = 1;

/// What a message did to the stream table's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `payload` (or the claim check) lists the rows deleted and the rows inserted.
    Delta,
    /// The storage was emptied (a FULL refresh): the next message inserts its rows.
    Truncate,
}

/// Where a body too large to be sent inline is kept (`pgtrickle.pgt_outbox_payloads`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimCheck {
    pub table: String,
    pub outbox_id: i64,
    pub seq: i64,
    pub bytes: i64,
}

/// One outbox message, its rows (`payload`) held as `P`: JSON values ([`Envelope`]) or skipped
/// unread ([`Header`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message<P> {
    pub v: u64,
    pub stream_table: String,
    pub outbox_id: i64,
    pub seq: i64,
    pub dedup_key: String,
    pub op: Op,
    pub xid: String,
    pub created_at: String,
    pub inserted_count: i64,
    pub deleted_count: i64,
    /// `{"deleted": [...], "inserted": [...]}`; null for a truncate; absent when claim-checked
    /// (a missing `Option` field reads as `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<P>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_check: Option<ClaimCheck>,
}

/// A whole envelope, rows included as JSON values (numbers beyond f64 refused).
pub type Envelope = Message<Value>;

/// What the relay reads of an envelope before delivering it: everything but the rows, which
/// it skips unread (their numbers stay text: a numeric beyond what f64 holds is no error).
pub type Header = Message<serde::de::IgnoredAny>;

/// Why an envelope cannot be delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not an envelope at all.
    Malformed(String),
    /// An envelope of a version this relay does not know.
    VersionSkew { found: u64 },
    /// Fields that contradict each other.
    Inconsistent(String),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Malformed(e) => write!(f, "malformed outbox envelope: {e}"),
            EnvelopeError::VersionSkew { found } => write!(
                f,
                "outbox envelope version {found} is not supported by this relay (it reads version {VERSION}): upgrade the relay"
            ),
            EnvelopeError::Inconsistent(e) => write!(f, "inconsistent outbox envelope: {e}"),
        }
    }
}

/// Just the version (every other field skipped unread).
#[derive(Deserialize)]
struct Version {
    v: Option<u64>,
}

impl<P> Message<P> {
    /// The header's fields agree with each other.
    fn consistent(&self) -> Result<(), EnvelopeError> {
        let key = DedupKey::parse(&self.dedup_key).ok_or_else(|| {
            EnvelopeError::Inconsistent(format!("dedup key {:?}", self.dedup_key))
        })?;
        if key.outbox_id != self.outbox_id || key.seq != self.seq || self.seq < 1 {
            return Err(EnvelopeError::Inconsistent(format!(
                "dedup key {:?} for message {} of outbox {}",
                self.dedup_key, self.seq, self.outbox_id
            )));
        }
        if self.payload.is_some() && self.claim_check.is_some() {
            return Err(EnvelopeError::Inconsistent(
                "both an inline payload and a claim check".into(),
            ));
        }
        if self.inserted_count < 0 || self.deleted_count < 0 {
            return Err(EnvelopeError::Inconsistent("a negative row count".into()));
        }
        Ok(())
    }
}

/// Reads one envelope: the version first (so that a newer envelope is reported as such,
/// whatever its shape), then the fields, then their consistency.
fn read<P: serde::de::DeserializeOwned>(text: &str) -> Result<Message<P>, EnvelopeError> {
    let version: Version =
        serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    match version.v {
        Some(VERSION) => {}
        Some(found) => return Err(EnvelopeError::VersionSkew { found }),
        None => return Err(EnvelopeError::Malformed("no version field \"v\"".into())),
    }
    let m: Message<P> =
        serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    m.consistent()?;
    Ok(m)
}

impl Envelope {
    /// Checks one envelope as the relay does before delivering it, the rows skipped unread.
    pub fn check(text: &str) -> Result<Header, EnvelopeError> {
        read(text)
    }

    /// Decodes one envelope whole, rows included (as JSON values: numbers beyond f64 are
    /// refused here, unlike [`Envelope::check`]).
    pub fn decode(text: &str) -> Result<Envelope, EnvelopeError> {
        read(text)
    }

    /// The envelope as one line of JSON (for consumers that build envelopes; the relay itself
    /// delivers PostgreSQL's text unchanged).
    pub fn encode(&self) -> String {
        // Serialising a struct of strings, numbers and JSON values cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A message's dedup key, `<database>:<outbox_id>:<seq>`: unique across a database's outboxes
/// (an outbox enabled again gets a new id). The database name may itself contain `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupKey {
    pub database: String,
    pub outbox_id: i64,
    pub seq: i64,
}

impl DedupKey {
    pub fn parse(s: &str) -> Option<DedupKey> {
        let mut parts = s.rsplitn(3, ':');
        let seq = parts.next()?.parse().ok()?;
        let outbox_id = parts.next()?.parse().ok()?;
        let database = parts.next()?.to_string();
        Some(DedupKey {
            database,
            outbox_id,
            seq,
        })
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.database, self.outbox_id, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> String {
        r#"{"v": 1, "op": "delta", "seq": 2, "xid": "799", "payload": {"deleted": [{"g": 1, "n": null}], "inserted": [{"g": 1, "n": 2, "s": "x\"y"}]}, "dedup_key": "ob:1:2", "outbox_id": 1, "created_at": "2026-12-07T15:10:06.804372+00:00", "stream_table": "public.agg", "deleted_count": 1, "inserted_count": 1}"#.to_string()
    }

    #[test]
    fn decode_encode_round_trip_keeps_nulls() {
        let e = Envelope::decode(&sample()).unwrap();
        assert_eq!(e.payload.as_ref().unwrap()["deleted"][0]["n"], Value::Null);
        let again = Envelope::decode(&e.encode()).unwrap();
        assert_eq!(e, again);
    }

    #[test]
    fn truncate_and_claim_check() {
        let t = sample()
            .replace(r#""op": "delta""#, r#""op": "truncate""#)
            .replace(
                r#""payload": {"deleted": [{"g": 1, "n": null}], "inserted": [{"g": 1, "n": 2, "s": "x\"y"}]}"#,
                r#""payload": null"#,
            );
        let e = Envelope::decode(&t).unwrap();
        assert_eq!(e.op, Op::Truncate);
        let c = sample().replace(
            r#""payload": {"deleted": [{"g": 1, "n": null}], "inserted": [{"g": 1, "n": 2, "s": "x\"y"}]}"#,
            r#""claim_check": {"table": "pgtrickle.pgt_outbox_payloads", "outbox_id": 1, "seq": 2, "bytes": 99999}"#,
        );
        let e = Envelope::decode(&c).unwrap();
        assert_eq!(e.claim_check.as_ref().unwrap().bytes, 99999);
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn check_skips_the_rows_unread() {
        // A numeric no f64 holds, as PostgreSQL prints it: the header checks, the rows are
        // delivered as they are.
        let huge = sample().replace(r#""n": 2"#, &format!(r#""n": 1{}"#, "0".repeat(400)));
        let h = Envelope::check(&huge).unwrap();
        assert_eq!((h.seq, h.op), (2, Op::Delta));
        assert!(
            Envelope::decode(&huge).is_err(),
            "a full decode as f64 refuses it"
        );
        let deep = sample().replace(
            r#""n": 2"#,
            &format!(r#""n": {}1{}"#, "[".repeat(20), "]".repeat(20)),
        );
        assert!(Envelope::check(&deep).is_ok());
    }

    #[test]
    fn version_skew_is_refused() {
        let newer = sample().replace(r#""v": 1"#, r#""v": 2"#);
        assert_eq!(
            Envelope::decode(&newer),
            Err(EnvelopeError::VersionSkew { found: 2 })
        );
        // Even when the rest of a newer envelope looks nothing like version 1.
        assert_eq!(
            Envelope::decode(r#"{"v": 7, "rows": []}"#),
            Err(EnvelopeError::VersionSkew { found: 7 })
        );
        assert!(matches!(
            Envelope::decode(r#"{"op": "delta"}"#),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode("not json"),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn a_dedup_key_that_disagrees_is_refused() {
        let wrong = sample().replace(r#""dedup_key": "ob:1:2""#, r#""dedup_key": "ob:1:3""#);
        assert!(matches!(
            Envelope::decode(&wrong),
            Err(EnvelopeError::Inconsistent(_))
        ));
    }

    #[test]
    fn dedup_key_with_colons_in_the_database_name() {
        let k = DedupKey::parse("a:b:c:17:42").unwrap();
        assert_eq!(k.database, "a:b:c");
        assert_eq!((k.outbox_id, k.seq), (17, 42));
        assert_eq!(k.to_string(), "a:b:c:17:42");
        assert_eq!(DedupKey::parse("db:x:1"), None);
        assert_eq!(DedupKey::parse("17"), None);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any database name, ids, rows (NULLs, strings with quotes and unicode, nesting):
        /// encode then decode is the identity, and the dedup key round-trips.
        #[test]
        fn envelope_fuzz(db in ".{0,20}", outbox in 1i64..1_000_000, seq in 1i64..i64::MAX,
                         rows in prop::collection::vec(json_value(), 0..5), truncate in any::<bool>()) {
            let key = DedupKey { database: db, outbox_id: outbox, seq };
            let e = Envelope {
                v: VERSION,
                stream_table: "public.\"T x\"".into(),
                outbox_id: outbox,
                seq,
                dedup_key: key.to_string(),
                op: if truncate { Op::Truncate } else { Op::Delta },
                xid: "12".into(),
                created_at: "2026-12-07T00:00:00+00:00".into(),
                inserted_count: rows.len() as i64,
                deleted_count: 0,
                // A truncate's `"payload": null` decodes as no payload.
                payload: (!truncate).then(|| serde_json::json!({"deleted": [], "inserted": rows})),
                claim_check: None,
            };
            let text = e.encode();
            let back = Envelope::decode(&text).unwrap();
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(DedupKey::parse(&back.dedup_key).unwrap(), key);
        }

        /// Arbitrary text never panics the decoder.
        #[test]
        fn decoding_garbage_is_an_error_not_a_panic(s in ".{0,200}") {
            let _ = Envelope::decode(&s);
        }
    }
}
