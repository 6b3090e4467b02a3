//! `PgDb`: one sqllogictest connection over `postgres::Client::simple_query`.
//!
//! Conventions it implements (documented in slt/README.md):
//! - Errors display as `db error: ERROR 42P01: relation "x" does not exist` and report their
//!   SQLSTATE to sqllogictest, so a file can assert `statement error (42P01)` (exact SQLSTATE)
//!   or `statement error 42P01` (a regex over the displayed error).
//! - Values print as PostgreSQL's text output; NULL as `NULL`, the empty string as `(empty)`.
//! - The runner meta-command `\notices` (the whole SQL of a `query T` record) returns the
//!   NOTICE/WARNING messages of the previous statement on the same connection, one row each,
//!   in the order the server sent them. It is never sent to the server.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use postgres::error::DbError;
use postgres::{Client, Config, NoTls, SimpleQueryMessage};
use sqllogictest::{DBOutput, DefaultColumnType};

/// The SQL text of the runner meta-command that reads the previous statement's notices.
pub const NOTICES_COMMAND: &str = "\\notices";

/// What a failed statement reports: the server's error fields, or a client-side failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// The SQLSTATE; `None` for client-side errors (connection lost, protocol).
    pub sqlstate: Option<String>,
    pub severity: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    /// A client-side error (no SQLSTATE).
    pub fn client(message: impl Into<String>) -> Self {
        PgError {
            sqlstate: None,
            severity: "ERROR".into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    fn from_db(e: &DbError) -> Self {
        PgError {
            sqlstate: Some(e.code().code().to_string()),
            severity: e.severity().to_string(),
            message: e.message().to_string(),
            detail: e.detail().map(str::to_string),
            hint: e.hint().map(str::to_string),
        }
    }
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PgError::from_db(db),
            None => PgError::client(e.to_string()),
        }
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "db error: {} {code}: {}", self.severity, self.message)?,
            None => write!(f, "client error: {}", self.message)?,
        }
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgError {}

/// Notices received on one connection since its last statement started.
type NoticeLog = Arc<Mutex<Vec<String>>>;

/// One connection of a test file.
pub struct PgDb {
    client: Client,
    notices: NoticeLog,
}

impl PgDb {
    /// Connects with `config`; notices go to this connection's log.
    pub fn connect(config: &Config) -> Result<PgDb, PgError> {
        let notices: NoticeLog = Arc::default();
        let sink = Arc::clone(&notices);
        let mut config = config.clone();
        config.notice_callback(move |n: DbError| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(n.message().to_string());
        });
        let client = config.connect(NoTls)?;
        Ok(PgDb { client, notices })
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn notices_snapshot(&self) -> Vec<String> {
        self.notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How a value prints in a result row.
pub fn format_value(v: Option<&str>) -> String {
    match v {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(s) => s.to_string(),
    }
}

/// Whether `sql` is the `\notices` meta-command (surrounding whitespace ignored).
pub fn is_notices_command(sql: &str) -> bool {
    sql.trim() == NOTICES_COMMAND
}

/// Turns the messages of one simple query into sqllogictest output: the rows of every
/// row-returning statement in it (one column type per column, all `Any`: the runner checks
/// column counts, not types), else the last statement's row count.
fn to_output(messages: Vec<SimpleQueryMessage>) -> DBOutput<DefaultColumnType> {
    let mut columns: Option<usize> = None;
    let mut rows = Vec::new();
    let mut count = 0;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => columns = Some(cols.len()),
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| format_value(r.get(i))).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => count = n,
            _ => {}
        }
    }
    match columns {
        Some(n) => DBOutput::Rows {
            types: vec![DefaultColumnType::Any; n],
            rows,
        },
        None => DBOutput::StatementComplete(count),
    }
}

impl sqllogictest::DB for PgDb {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        if is_notices_command(sql) {
            let rows = self.notices_snapshot().into_iter().map(|n| vec![n]);
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text],
                rows: rows.collect(),
            });
        }
        self.take_notices();
        Ok(to_output(self.client.simple_query(sql)?))
    }

    fn engine_name(&self) -> &str {
        "postgres"
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.sqlstate.clone()
    }
}

/// Column counts must agree (`query IIT` asserts three columns); PostgreSQL's simple query
/// protocol carries no types, so the type letters themselves are documentation.
#[allow(clippy::ptr_arg)] // the signature sqllogictest's ColumnTypeValidator requires
pub fn column_count_validator(
    actual: &Vec<DefaultColumnType>,
    expected: &Vec<DefaultColumnType>,
) -> bool {
    actual.len() == expected.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqllogictest::{Record, StatementExpect};

    fn undefined_table() -> PgError {
        PgError {
            sqlstate: Some("42P01".into()),
            severity: "ERROR".into(),
            message: "relation \"nope\" does not exist".into(),
            detail: None,
            hint: Some("Check the name.".into()),
        }
    }

    #[test]
    fn error_display_names_severity_and_sqlstate_before_the_message() {
        assert_eq!(
            undefined_table().to_string(),
            "db error: ERROR 42P01: relation \"nope\" does not exist\nHINT: Check the name."
        );
        assert_eq!(
            PgError::client("connection closed").to_string(),
            "client error: connection closed"
        );
    }

    #[test]
    fn statement_error_matches_by_exact_sqlstate_or_by_regex_over_the_display() {
        let err = undefined_table();
        let script = "statement error (42P01)\nSELECT 1\n\nstatement error 42P01\nSELECT 1\n\n\
                      statement error (42P07)\nSELECT 1\n";
        let records = sqllogictest::parse::<DefaultColumnType>(script).unwrap();
        let verdicts: Vec<bool> = records
            .iter()
            .filter_map(|r| match r {
                Record::Statement {
                    expected: StatementExpect::Error(e),
                    ..
                } => Some(e.is_match(&err.to_string(), err.sqlstate.as_deref())),
                _ => None,
            })
            .collect();
        assert_eq!(verdicts, [true, true, false]);
    }

    #[test]
    fn null_and_empty_string_print_distinguishably() {
        assert_eq!(format_value(None), "NULL");
        assert_eq!(format_value(Some("")), "(empty)");
        assert_eq!(format_value(Some("a b")), "a b");
    }

    #[test]
    fn notices_command_is_recognised_only_alone() {
        assert!(is_notices_command("\\notices"));
        assert!(is_notices_command("  \\notices\n"));
        assert!(!is_notices_command("SELECT '\\notices'"));
    }

    #[test]
    fn column_counts_must_match_but_type_letters_do_not() {
        let any2 = vec![DefaultColumnType::Any; 2];
        let it = vec![DefaultColumnType::Integer, DefaultColumnType::Text];
        assert!(column_count_validator(&any2, &it));
        assert!(!column_count_validator(&any2, &it[..1].to_vec()));
    }
}
