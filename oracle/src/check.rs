//! The SQL of the oracle's property, INV-1: after a refresh, in the refresh's own snapshot, a
//! stream table equals its defining query as a multiset (EXCEPT ALL both ways over the user
//! columns; hidden `__pgt_` columns excluded), and every twin equals the first twin. Each
//! check is one `DO` statement that raises `oracle: …` (SQLSTATE P0001) on a difference, so
//! the live runner, fixtures and a plain `psql -f` replay all check the same thing.

/// The prefix of every error the checks raise.
pub const MISMATCH_PREFIX: &str = "oracle: ";

/// Opens the transaction a refresh and its checks run in: one snapshot for both.
pub const BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";

/// `SELECT pgtrickle.refresh_stream_table('<table>')`.
pub fn refresh_sql(table: &str) -> String {
    format!("SELECT pgtrickle.refresh_stream_table('{table}')")
}

/// The schedule of the oracle's stream tables: due two days after the last refresh, so the
/// background scheduler never refreshes one during a case and the refreshes happen exactly
/// where the steps say (a replay then does the same).
pub const SCHEDULE: &str = "2d";

/// `SELECT pgtrickle.create_stream_table(...)` with the query dollar-quoted.
pub fn create_sql(table: &str, query: &str, mode: &str) -> String {
    format!(
        "SELECT pgtrickle.create_stream_table('{table}', $q${query}$q$, \
         schedule => '{SCHEDULE}', refresh_mode => '{mode}')"
    )
}

/// Raises unless `table` (its `columns`) equals `query` as a multiset; `what` names the
/// query in the message ("its query").
pub fn query_check_sql(table: &str, columns: &[String], query: &str, what: &str) -> String {
    let cols = columns.join(", ");
    difference_block(
        &format!("SELECT {cols} FROM {table}"),
        &format!("({query})"),
        &format!("{table} differs from {what}"),
    )
}

/// The name of the defining query in messages.
pub const QUERY: &str = "its query";
/// The name of a downstream query with its upstream's query inlined, in messages.
pub const COMPOSED: &str = "its query with the upstream query inlined";

/// Raises unless `table` equals its twin `other` (same `columns`) as a multiset.
pub fn twin_check_sql(table: &str, other: &str, columns: &[String]) -> String {
    let cols = columns.join(", ");
    difference_block(
        &format!("SELECT {cols} FROM {table}"),
        &format!("SELECT {cols} FROM {other}"),
        &format!("twins {table} and {other} disagree"),
    )
}

fn difference_block(left: &str, right: &str, what: &str) -> String {
    // `what` goes into a string literal that RAISE formats.
    let what = what.replace('\'', "''").replace('%', "%%");
    format!(
        "DO $oracle$ DECLARE extra_rows_ bigint; missing_rows_ bigint; BEGIN \
         SELECT count(*) INTO extra_rows_ FROM ({left} EXCEPT ALL {right}) AS extra_; \
         SELECT count(*) INTO missing_rows_ FROM ({right} EXCEPT ALL {left}) AS missing_; \
         IF extra_rows_ <> 0 OR missing_rows_ <> 0 THEN RAISE EXCEPTION \
         '{MISMATCH_PREFIX}{what}: % extra rows, % missing rows', extra_rows_, missing_rows_; \
         END IF; END $oracle$"
    )
}

/// Puts a query on one line (the scripts are one statement per line). Only whitespace
/// outside quotes changes, so the query means the same.
pub fn one_line(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut quote: Option<char> = None;
    let mut pending_space = false;
    for ch in query.trim().chars() {
        match quote {
            Some(q) => {
                out.push(ch);
                if ch == q {
                    quote = None;
                }
            }
            None if ch.is_whitespace() => pending_space = true,
            None => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                }
                out.push(ch);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_check_compares_both_ways_and_raises_with_the_prefix() {
        let sql = query_check_sql(
            "diff_x",
            &["k".into(), "cnt".into()],
            "SELECT k FROM a",
            QUERY,
        );
        assert!(sql.contains("(SELECT k, cnt FROM diff_x EXCEPT ALL (SELECT k FROM a))"));
        assert!(sql.contains("((SELECT k FROM a) EXCEPT ALL SELECT k, cnt FROM diff_x)"));
        assert!(sql.contains("RAISE EXCEPTION 'oracle: diff_x differs from its query"));
        assert!(!sql.contains('\n'));
    }

    #[test]
    fn messages_escape_quotes_and_percent_signs() {
        let sql = twin_check_sql("it's", "x%", &["k".into()]);
        assert!(sql.contains("'oracle: twins it''s and x%% disagree: % extra rows"));
    }

    #[test]
    fn one_line_keeps_quoted_text_and_collapses_other_whitespace() {
        assert_eq!(
            one_line("select\n  a ,  'x\n  y'\n from \"T  t\"\n"),
            "select a , 'x\n  y' from \"T  t\""
        );
    }
}
