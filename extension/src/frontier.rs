//! The refresh frontier (docs/CORRECTNESS.md §3; INV-1, INV-2, INV-3). A change buffer row is *consumed* by
//! a stream table when its writing transaction is visible in the snapshot of the table's last
//! refresh — or when it was written by the refreshing transaction itself, up to the highest
//! buffer sequence number that refresh read. The second clause exists because a transaction's
//! own xid can be at or above its snapshot's `xmax` (then `pg_visible_in_snapshot` says no,
//! although the refresh read those rows) or below it (then it says yes, although rows the
//! same transaction writes *after* the refresh were never read). Sequence numbers come from
//! one sequence for all buffers, so one number bounds a refresh's own rows in every buffer.

use engine::names;

/// What one refresh consumed: its snapshot, its own xid and its own highest sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    /// `pg_snapshot` text form (`xmin:xmax:xip,...`).
    pub snapshot: String,
    /// The refreshing transaction's xid (`xid8` text).
    pub xid: String,
    /// Highest `__pgt_seq` of the refreshing transaction's own buffer rows (0 if none).
    pub seq: i64,
}

impl Frontier {
    /// The frontier a statement returned (from [`capture_sql`]); a NULL part is a broken
    /// invariant (INV-1: every statement reading a window yields its frontier).
    pub fn returned(
        snapshot: Option<String>,
        xid: Option<String>,
        seq: Option<i64>,
    ) -> Result<Self, crate::error::PgTrickleError> {
        match (snapshot, xid, seq) {
            (Some(snapshot), Some(xid), Some(seq)) => Ok(Frontier { snapshot, xid, seq }),
            _ => Err(crate::error::PgTrickleError::Internal(
                "INV-1: a statement that read a change window returned no complete frontier".into(),
            )),
        }
    }
}

/// SQL that yields, inside the statement that reads the change window, the frontier of that
/// statement: `(snapshot text, xid text, own max seq)`. `buffers` are the qualified buffer
/// names the refresh reads. Evaluated in the same statement as the window, it sees the same
/// snapshot (one statement, one snapshot: INV-1).
pub fn capture_sql(buffers: &[String]) -> String {
    let (seq, xid) = (names::BUFFER_SEQ, names::BUFFER_XID);
    let own = buffers
        .iter()
        .map(|b| format!("SELECT max({seq}) AS s FROM {b} WHERE {xid} = pg_current_xact_id()"))
        .collect::<Vec<_>>();
    let own_max = if own.is_empty() {
        "0".to_string()
    } else {
        format!(
            "(SELECT coalesce(max(s), 0) FROM ({}) AS __pgt_own)",
            own.join(" UNION ALL ")
        )
    };
    format!("pg_current_snapshot()::text, pg_current_xact_id()::text, {own_max}")
}

/// Boolean SQL: `alias` was consumed by the frontier held in the given SQL expressions (used by
/// cleanup against the catalog's columns, and by the change window). NULL frontier parts yield false: never refreshed
/// means nothing consumed.
pub fn consumed_by_columns(alias: &str, snapshot: &str, xid: &str, seq: &str) -> String {
    let (row_xid, row_seq) = (names::BUFFER_XID, names::BUFFER_SEQ);
    format!(
        "coalesce((pg_visible_in_snapshot({alias}{row_xid}, {snapshot}) \
         AND {alias}{row_xid} <> {xid}) \
         OR ({alias}{row_xid} = {xid} AND {alias}{row_seq} <= {seq}), false)"
    )
}

/// Boolean SQL selecting the change window of a refresh whose previous frontier is given as SQL
/// expressions of types `pg_snapshot`, `xid8` and `int8` (the parameters of a prepared
/// statement, see refresh.rs): rows the refresh statement can see (MVCC) that the previous
/// frontier did not consume. The lower bound lets
/// the buffer's xid index skip rows every earlier refresh consumed: an xid below the old
/// snapshot's xmin had finished by then (consumed if committed), unless it is the old
/// refresh's own transaction, which may have written more after refreshing.
pub fn window_sql(alias: &str, snapshot: &str, xid: &str, seq: &str) -> String {
    format!(
        "{alias}{} >= least(pg_snapshot_xmin({snapshot}), {xid}) AND NOT {}",
        names::BUFFER_XID,
        consumed_by_columns(alias, snapshot, xid, seq)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_excludes_rows_consumed_by_snapshot_or_own_sequence() {
        let w = window_sql("c.", "'10:20:12,15'::pg_snapshot", "'21'::xid8", "7");
        assert_eq!(
            w,
            "c.__pgt_xid >= least(pg_snapshot_xmin('10:20:12,15'::pg_snapshot), '21'::xid8) AND NOT \
             coalesce((pg_visible_in_snapshot(c.__pgt_xid, '10:20:12,15'::pg_snapshot) \
             AND c.__pgt_xid <> '21'::xid8) OR (c.__pgt_xid = '21'::xid8 AND c.__pgt_seq <= 7), false)"
        );
    }

    #[test]
    fn capture_bounds_own_rows_across_every_buffer() {
        let c = capture_sql(&["a".into(), "b".into()]);
        assert!(c.contains("FROM a WHERE __pgt_xid = pg_current_xact_id() UNION ALL SELECT"));
        assert!(c.starts_with("pg_current_snapshot()::text, pg_current_xact_id()::text"));
        assert_eq!(
            capture_sql(&[]),
            "pg_current_snapshot()::text, pg_current_xact_id()::text, 0"
        );
    }
}
