//! `pg_trickle_dump [--dbname CONNINFO] [--file FILE]`: writes the SQL that recreates the
//! database's stream tables (see lib.rs and docs/PG_TRICKLE_DUMP.md).

use std::io::Write as _;
use std::process::ExitCode;

const USAGE: &str = "\
usage: pg_trickle_dump [--dbname CONNINFO] [--file FILE]

Writes the SQL that recreates every stream table of the database (defining query and its
search_path, schedule, refresh mode, status, owner, grants, subscriptions), a stream table
after the stream tables it reads, as one transaction. Restore it with
  psql -v ON_ERROR_STOP=1 -d TARGET -f FILE
in a database that has the source tables and the pg_trickle extension.

  --dbname CONNINFO  a libpq connection string or URL (default: PGHOST, PGPORT, PGUSER,
                     PGDATABASE from the environment, else host=localhost user=postgres)
  --file FILE        write to FILE instead of standard output
";

fn conninfo_from_env() -> String {
    let mut parts = Vec::new();
    for (var, key, default) in [
        ("PGHOST", "host", Some("localhost")),
        ("PGPORT", "port", None),
        ("PGUSER", "user", Some("postgres")),
        ("PGDATABASE", "dbname", None),
    ] {
        match (std::env::var(var).ok(), default) {
            (Some(v), _) => parts.push(format!("{key}='{}'", v.replace('\'', "\\'"))),
            (None, Some(d)) => parts.push(format!("{key}={d}")),
            (None, None) => {}
        }
    }
    parts.join(" ")
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut conninfo = None;
    let mut file = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dbname" | "-d" => conninfo = Some(args.next().ok_or("--dbname needs a value")?),
            "--file" | "-f" => file = Some(args.next().ok_or("--file needs a value")?),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let conninfo = conninfo.unwrap_or_else(conninfo_from_env);
    let mut client = postgres::Client::connect(&conninfo, postgres::NoTls)
        .map_err(|e| format!("cannot connect ({conninfo}): {e}"))?;
    // One snapshot for every catalog read.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| e.to_string())?;
    let dump = pg_trickle_dump::read(&mut tx)?;
    tx.commit().map_err(|e| e.to_string())?;
    let sql = pg_trickle_dump::render(&dump)?;
    match file {
        Some(path) => std::fs::write(&path, sql).map_err(|e| format!("{path}: {e}"))?,
        None => std::io::stdout()
            .write_all(sql.as_bytes())
            .map_err(|e| e.to_string())?,
    }
    eprintln!(
        "pg_trickle_dump: {} stream table(s) of database {}",
        dump.stream_tables.len(),
        dump.database
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg_trickle_dump: {e}");
            ExitCode::FAILURE
        }
    }
}
