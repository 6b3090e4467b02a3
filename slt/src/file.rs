//! Runs one `.slt` file: creates a fresh database with `CREATE EXTENSION pg_trickle`, runs
//! the file's records in order (stopping at the first failure, since later records build on
//! earlier ones), checks that the file dropped everything it created, and drops the database.

use std::path::Path;
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};
use sqllogictest::{DefaultColumnType, Record, RecordOutput, Runner};

use crate::pg::{column_count_validator, PgDb, PgError};

/// Statement timeout for every connection of a test file, so that a file whose connections
/// wait on each other's locks fails instead of hanging the run.
pub const STATEMENT_TIMEOUT_MS: u64 = 60_000;

/// The outcome of one file.
#[derive(Debug)]
pub struct FileReport {
    /// Records executed (statements, queries and the rest; skipped records are not counted).
    pub records: usize,
    /// The first failure, as sqllogictest or the driver describes it; `None` when it passed.
    pub failure: Option<String>,
    pub elapsed: Duration,
}

/// A database name for the file at `rel` (its path under the corpus root): `slt_` and the
/// path's letters and digits, other characters as `_`, within PostgreSQL's 63 bytes.
pub fn database_name(rel: &str) -> String {
    let stem = rel.strip_suffix(".slt").unwrap_or(rel);
    let mut name: String = "slt_".chars().chain(stem.chars()).collect();
    name = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(63);
    name
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Objects a file left behind: user relations (including change buffers, which go with the
/// last stream table reading a source), schemas, functions and stream tables — anything not a
/// member of an extension — and roles created by the file (roles are cluster-wide, so
/// `roles_before` is the list taken before it ran).
const LEFTOVERS_SQL: &str = "
SELECT 'relation ' || format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'schema ' || quote_ident(nspname) FROM pg_namespace
 WHERE nspname NOT IN ('public', 'information_schema', 'pgtrickle', 'pgtrickle_changes')
   AND nspname NOT LIKE 'pg\\_%'
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                   AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'stream table ' || format('%I.%I', pgt_schema, pgt_name) FROM pgtrickle.pgt_stream_tables
ORDER BY 1";

const ROLES_SQL: &str = "SELECT rolname FROM pg_roles ORDER BY 1";

fn first_column(client: &mut Client, sql: &str) -> Result<Vec<String>, PgError> {
    let rows = client.query(sql, &[])?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Runs `path` in a fresh database `db_name`; `admin` is the maintenance database's config.
pub fn run_file(admin: &Config, path: &Path, db_name: &str) -> FileReport {
    let started = Instant::now();
    let mut records = 0;
    let failure = run_in_fresh_db(admin, path, db_name, &mut records).err();
    FileReport {
        records,
        failure,
        elapsed: started.elapsed(),
    }
}

fn run_in_fresh_db(
    admin: &Config,
    path: &Path,
    db_name: &str,
    records: &mut usize,
) -> Result<(), String> {
    let mut admin_client = admin.connect(NoTls).map_err(|e| format!("connect: {e}"))?;
    let drop = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(db_name)
    );
    let create = format!("CREATE DATABASE {}", quote_ident(db_name));
    // One statement per call: DROP/CREATE DATABASE refuse to run in a multi-statement batch.
    for sql in ["SET client_min_messages = warning", &drop, &create] {
        admin_client
            .batch_execute(sql)
            .map_err(|e| format!("creating database {db_name}: {}", PgError::from(e)))?;
    }
    let roles_before = first_column(&mut admin_client, ROLES_SQL).map_err(|e| e.to_string())?;

    let mut config = admin.clone();
    config
        .dbname(db_name)
        .application_name("slt")
        .options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    let outcome = run_records(&config, path, records)
        .and_then(|()| check_leftovers(&config, &mut admin_client, &roles_before));

    // The database goes whatever happened, and so do roles the file created (they are
    // cluster-wide and would break the next run); failures here are reported only when the
    // file itself passed (the next run drops the database anyway).
    let mut cleanup = admin_client
        .batch_execute(&drop)
        .map_err(|e| format!("dropping database {db_name}: {}", PgError::from(e)));
    let roles = first_column(&mut admin_client, ROLES_SQL).unwrap_or_default();
    for role in roles.iter().filter(|r| !roles_before.contains(r)) {
        let dropped = admin_client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
            .map_err(|e| format!("dropping role {role}: {}", PgError::from(e)));
        cleanup = cleanup.and(dropped);
    }
    outcome.and(cleanup)
}

fn run_records(config: &Config, path: &Path, records: &mut usize) -> Result<(), String> {
    let mut setup = PgDb::connect(config).map_err(|e| format!("connect: {e}"))?;
    sqllogictest::DB::run(&mut setup, "CREATE EXTENSION pg_trickle")
        .map_err(|e| format!("CREATE EXTENSION pg_trickle: {e}"))?;
    drop(setup);

    let parsed = sqllogictest::parse_file::<DefaultColumnType>(path)
        .map_err(|e| format!("parse error: {e}"))?;
    let conn_config = config.clone();
    let mut runner = Runner::new(move || {
        let db = PgDb::connect(&conn_config);
        std::future::ready(db)
    });
    runner.add_label("postgres");
    runner.add_label("pg_trickle");
    runner.with_column_validator(column_count_validator);
    let mut result = Ok(());
    for record in parsed {
        if matches!(record, Record::Halt { .. }) {
            break;
        }
        match runner.run(record) {
            Ok(RecordOutput::Nothing) => {}
            Ok(_) => *records += 1,
            Err(e) => {
                *records += 1;
                result = Err(e.display(false).to_string());
                break;
            }
        }
    }
    runner.shutdown();
    result
}

fn check_leftovers(
    config: &Config,
    admin: &mut Client,
    roles_before: &[String],
) -> Result<(), String> {
    let mut client = config.connect(NoTls).map_err(|e| format!("connect: {e}"))?;
    let mut left = first_column(&mut client, LEFTOVERS_SQL).map_err(|e| e.to_string())?;
    let roles = first_column(admin, ROLES_SQL).map_err(|e| e.to_string())?;
    left.extend(
        roles
            .into_iter()
            .filter(|r| !roles_before.contains(r))
            .map(|r| format!("role {r}")),
    );
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the file did not drop what it created: {}",
            left.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_a_lowercase_identifier_derived_from_the_path() {
        assert_eq!(
            database_name("api/create_stream_table.slt"),
            "slt_api_create_stream_table"
        );
        assert_eq!(database_name("ops/Joins-Left.slt"), "slt_ops_joins_left");
        assert_eq!(database_name(&"x".repeat(100)).len(), 63);
    }
}
