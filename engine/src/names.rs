//! Every name pg_trickle gives to something of its own, in one place: hidden storage columns,
//! change buffers and their columns, capture triggers and functions, the storage's write
//! guard, temporary relations and the CTE names of the statements it runs. Names a user's
//! query may not use start with [`HIDDEN_PREFIX`]. (The SQL of the extension's event-trigger
//! functions spells some of them too: `extension/src/api.rs` `on_sql_drop`, which a test of the
//! extension checks against these.)

/// The prefix of every hidden column and of pg_trickle's own relations and triggers.
pub const HIDDEN_PREFIX: &str = "__pgt_";

/// A delta row's weight (keyed plans).
pub const WEIGHT: &str = "__pgt_weight";
/// A group's row count (grouped plans).
pub const COUNT: &str = "__pgt_count";
/// Hole `i` of an expression passed through to PostgreSQL while it is printed (planner/
/// passthrough.rs); never user text, the prefix being reserved.
pub fn hole(i: usize) -> String {
    format!("{HIDDEN_PREFIX}hole_{i}")
}

/// The left side of an `x IN (…)` rewritten as a count, as it appears inside the count's
/// subquery (planner/conditions.rs): a name resolved to `x` planned in the outer query, so that
/// the subquery's own columns cannot capture `x`'s names.
pub fn outer_key(i: usize) -> String {
    format!("{OUTER_KEY_PREFIX}{i}")
}
/// The prefix of [`outer_key`].
pub const OUTER_KEY_PREFIX: &str = "__pgt_outer_";

/// The CTEs of a recursive query's statements (`operator::recursive`): the recursion itself
/// (its FULL query, its delta over a bag), the rows over-deleted and the rows derived again
/// or anew (its delta over a set).
pub const RECURSION: &str = "__pgt_rec";
pub const RECURSION_DELETED: &str = "__pgt_rec_del";
pub const RECURSION_NEW: &str = "__pgt_rec_new";

/// A decorrelated LATERAL subquery's (planner/lateral.rs) hidden column for its `i`th
/// correlation key, its row number under ORDER BY … LIMIT, and the alias of its numbered rows.
pub fn lateral_key(i: usize) -> String {
    format!("{HIDDEN_PREFIX}lk_{i}")
}
pub const LATERAL_ROW: &str = "__pgt_rn";
pub const LATERAL_ALIAS: &str = "__pgt_l";

/// The physical row id of a bag row picked for deletion, in the apply statement.
pub const CTID: &str = "__pgt_ctid";

/// Hidden identity column `i` of a keyless plan.
pub fn hidden_id(i: usize) -> String {
    format!("__pgt_id_{i}")
}
/// Hidden count of non-NULL inputs of aggregate `j`.
pub fn hidden_count_of(j: usize) -> String {
    format!("__pgt_cnt_{j}")
}
/// Hidden count of the TRUE values of `bool_and` / `bool_or` aggregate `j`.
pub fn hidden_true_of(j: usize) -> String {
    format!("__pgt_true_{j}")
}
/// Hidden sum of aggregate `j`.
pub fn hidden_sum(j: usize) -> String {
    format!("__pgt_sum_{j}")
}
/// The stored extreme of MIN/MAX aggregate `j` of a grouped plan.
pub fn hidden_extreme(j: usize) -> String {
    format!("__pgt_ext_{j}")
}
/// A grouped delta's flag: the group's extremes were rescanned (they replace the stored ones
/// instead of being compared with them).
pub const RESCAN: &str = "__pgt_rescan";
/// The extreme among the values a grouped delta deletes, of MIN/MAX aggregate `j` (inside
/// the delta statement only).
pub fn deleted_extreme(j: usize) -> String {
    format!("__pgt_dext_{j}")
}
/// The delta statement's CTE of per-group aux changes (when it rescans extremes).
pub const GROUP_DELTA: &str = "__pgt_gd";
/// The delta statement's CTE of the groups whose extremes are rescanned.
pub const RESCANNED: &str = "__pgt_rescanned";
/// Hidden group key `k` (a grouping expression not in the result).
pub fn hidden_group(k: usize) -> String {
    format!("__pgt_grp_{k}")
}
/// The `n`th common table expression of a rendered statement.
pub fn cte(n: usize) -> String {
    format!("__pgt_d{n}")
}

/// The schema of the change buffers.
pub const BUFFER_SCHEMA: &str = "pgtrickle_changes";
/// The sequence numbering buffer rows (one for every buffer).
pub const BUFFER_SEQUENCE: &str = "change_seq";
/// Buffer column: the row's number in [`BUFFER_SEQUENCE`].
pub const BUFFER_SEQ: &str = "__pgt_seq";
/// Buffer column: the writing transaction's id.
pub const BUFFER_XID: &str = "__pgt_xid";
/// Buffer column: `I`nsert, `D`elete, `T`runcate marker, `P`aused-capture marker.
pub const BUFFER_OP: &str = "__pgt_op";
/// The columns every buffer has before the captured ones; every other buffer column is a
/// captured source column, whatever its name (a stream table read as a source has hidden
/// `__pgt_…` columns of its own).
pub const BUFFER_META: [&str; 3] = [BUFFER_SEQ, BUFFER_XID, BUFFER_OP];

/// The change buffer of source table `oid` (in [`BUFFER_SCHEMA`]).
pub fn buffer_table(oid: u32) -> String {
    format!("changes_{oid}")
}
/// The PL/pgSQL capture function of source table `oid` (in [`BUFFER_SCHEMA`]) that 0.34
/// wrote; 0.35 captures with one C function and drops these (and the last-resort marker writer
/// of the DDL event trigger still replaces one if a 0.34 source has it).
pub fn capture_function(oid: u32) -> String {
    format!("capture_{oid}")
}
/// The capture triggers on a source: (name, event, transition tables).
pub const CAPTURE_TRIGGERS: [(&str, &str, &str); 4] = [
    (
        "__pgt_capture_ins",
        "INSERT",
        "REFERENCING NEW TABLE AS __pgt_new",
    ),
    (
        "__pgt_capture_upd",
        "UPDATE",
        "REFERENCING OLD TABLE AS __pgt_old NEW TABLE AS __pgt_new",
    ),
    (
        "__pgt_capture_del",
        "DELETE",
        "REFERENCING OLD TABLE AS __pgt_old",
    ),
    ("__pgt_capture_trunc", "TRUNCATE", ""),
];
/// The transition tables the capture triggers read.
pub const NEW_ROWS: &str = "__pgt_new";
pub const OLD_ROWS: &str = "__pgt_old";

/// A buffer column's name while a rename of source column `attnum` is followed (two renames
/// may swap names).
pub fn renaming(attnum: i16) -> String {
    format!("__pgt_renaming_{attnum}")
}

/// The statement-level trigger refusing writes to a storage table that are not refreshes.
pub const GUARD_TRIGGER: &str = "__pgt_guard";
/// The triggers of a stream table's outbox on its storage (extension/src/outbox.rs): (name,
/// event, transition tables). Statement-level AFTER triggers, one per event.
pub const OUTBOX_TRIGGERS: [(&str, &str, &str); 4] = [
    (
        "__pgt_outbox_ins",
        "INSERT",
        "REFERENCING NEW TABLE AS __pgt_new",
    ),
    (
        "__pgt_outbox_upd",
        "UPDATE",
        "REFERENCING OLD TABLE AS __pgt_old NEW TABLE AS __pgt_new",
    ),
    (
        "__pgt_outbox_del",
        "DELETE",
        "REFERENCING OLD TABLE AS __pgt_old",
    ),
    ("__pgt_outbox_trunc", "TRUNCATE", ""),
];
/// The temporary view a defining query is analysed through.
pub const PROBE_VIEW: &str = "__pgt_probe";
/// The temporary table a differential refresh of stream table `id` materialises its delta in,
/// per role (a temporary table belongs to the role that created it).
pub fn delta_table(id: i64, role: u32) -> String {
    format!("__pgt_delta_{id}_{role}")
}
/// The CTE holding the rows a statement inserted (its counts are read from it).
pub const INSERTED: &str = "__pgt_ins";
/// The alias of the defining query inside the FULL statement of a plain-result storage.
pub const QUERY_ALIAS: &str = "__pgt_q";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_ours_has_the_reserved_prefix() {
        let fixed = [
            WEIGHT,
            COUNT,
            BUFFER_SEQ,
            BUFFER_XID,
            BUFFER_OP,
            NEW_ROWS,
            OLD_ROWS,
            GUARD_TRIGGER,
            PROBE_VIEW,
            INSERTED,
            QUERY_ALIAS,
        ];
        let made = [
            hidden_id(0),
            hidden_count_of(1),
            hidden_sum(2),
            hidden_extreme(2),
            RESCAN.into(),
            deleted_extreme(2),
            GROUP_DELTA.into(),
            RESCANNED.into(),
            hidden_group(3),
            cte(4),
            delta_table(5, 10),
        ];
        for n in fixed.iter().copied().chain(made.iter().map(String::as_str)) {
            assert!(n.starts_with(HIDDEN_PREFIX), "{n}");
        }
        for (t, _, referencing) in CAPTURE_TRIGGERS {
            assert!(t.starts_with(HIDDEN_PREFIX), "{t}");
            // The transition tables the triggers declare are the ones the capture reads.
            let named: Vec<&str> = referencing
                .split_whitespace()
                .filter(|w| w.starts_with(HIDDEN_PREFIX))
                .collect();
            assert!(
                named.iter().all(|n| [NEW_ROWS, OLD_ROWS].contains(n)),
                "{referencing}"
            );
        }
        assert!(
            CAPTURE_TRIGGERS[1].2.contains(NEW_ROWS) && CAPTURE_TRIGGERS[1].2.contains(OLD_ROWS)
        );
    }
}
