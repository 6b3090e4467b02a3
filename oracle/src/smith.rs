//! sqlsmith's random queries through the oracle: harvest SELECTs that Debian's `sqlsmith
//! --dry-run` writes over the oracle's tables (in a scratch database without the extension),
//! try each as a DIFFERENTIAL stream table, classify what was refused and what AUTO would
//! make FULL, then write to the tables in rounds and check every accepted one after each
//! refresh, in the refresh's snapshot (INV-1). A refresh that fails where the query itself
//! runs, or a difference, is a counterexample with a replayable script.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use postgres::{Client, NoTls};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::Config as PropConfig;

use crate::check::{self, BEGIN, MISMATCH_PREFIX};
use crate::exec::{db_url, describe, fresh_database, sqlstate};
use crate::families::Group;
use crate::fixture;
use crate::schema::{A, B, C, M, N};
use crate::step::{insert_strategy, write_strategy};
use crate::writer::{mix, seeded_runner};

/// Every table, for sqlsmith's schema and the writes between checks.
pub static ALL_TABLES: Group = Group {
    name: "all",
    tables: &[&A, &B, &C, &N, &M],
    families: &[],
};

const SOURCE_DB: &str = "pgt_oracle_smith_src";
const TARGET_DB: &str = "pgt_oracle_smith";
/// sqlsmith writes expensive queries (cross joins of every table): each statement is bounded.
const SMITH_TIMEOUT: &str = "SET statement_timeout = '5s'";
const RECONNECT_TRIES_MAX: usize = 60;

/// What to run.
#[derive(Debug, Clone)]
pub struct SmithConfig {
    pub admin_url: String,
    /// Statements sqlsmith generates (`--max-queries`); only SELECTs are tried.
    pub queries: u64,
    pub seed: u64,
    /// Rounds of writes, each followed by a refresh and check of every accepted query.
    pub rounds: usize,
    pub writes_per_round: usize,
    pub regressions: Option<PathBuf>,
}

/// A query whose stream table did not converge.
#[derive(Debug, Clone)]
pub struct SmithFailure {
    pub name: String,
    pub query: String,
    pub message: String,
    pub script: Vec<String>,
    pub replayed: Option<bool>,
    pub fixture: Option<PathBuf>,
}

/// Counts of one sqlsmith run.
#[derive(Debug, Default)]
pub struct SmithReport {
    pub generated: usize,
    pub selects: usize,
    /// SELECTs left out because a quoted literal spans lines (scripts are line-based).
    pub skipped: usize,
    /// Queries tried without their TABLESAMPLE clauses.
    pub tablesamples_removed: usize,
    /// Queries tried without their final top-level LIMIT.
    pub limits_removed: usize,
    pub accepted: usize,
    /// AUTO's FULL fallbacks of queries DIFFERENTIAL refused, by reason.
    pub full_fallback: BTreeMap<String, u64>,
    /// Refused in both modes, by SQLSTATE and message prefix.
    pub refused: BTreeMap<String, u64>,
    /// Accepted queries that error when run (e.g. a division by zero after a write): not
    /// counterexamples when the plain query errors too.
    pub runtime_errors: BTreeMap<String, u64>,
    pub converged: usize,
    /// Refusals whose SQLSTATE says more than "PostgreSQL rejects this query" (internal
    /// errors, constraint violations, missing relations…), with the first query of each.
    pub suspicious: BTreeMap<String, String>,
    /// Times the server closed the connection (a crashed backend): each is a bug to report.
    pub connection_losses: u64,
    pub checks: u64,
    pub failures: Vec<SmithFailure>,
    pub seconds: f64,
}

/// Statements of sqlsmith's output (each ends with `;` at the end of a line).
pub fn split_statements(output: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in output.lines() {
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            current.clear();
        }
    }
    out
}

/// The query without a final top-level `limit N` (sqlsmith ends most queries with one; a
/// LIMIT without ORDER BY picks arbitrary rows, so no refresh could match it).
pub fn strip_final_limit(query: &str) -> (String, bool) {
    let lower = query.to_ascii_lowercase();
    let trimmed = lower.trim_end();
    let digits = trimmed.len() - trimmed.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let before = &trimmed[..trimmed.len() - digits];
    if digits > 0 && before.ends_with(" limit ") && !before.trim_end().ends_with(')') {
        let depth = before.chars().fold(0i32, |d, c| match c {
            '(' => d + 1,
            ')' => d - 1,
            _ => d,
        });
        if depth == 0 {
            let cut = before.len() - " limit ".len();
            return (query[..cut].trim_end().to_string(), true);
        }
    }
    (query.to_string(), false)
}

/// The query without its `TABLESAMPLE method (p) [REPEATABLE (s)]` clauses, and how many
/// there were. sqlsmith samples in most queries; a sample without REPEATABLE differs at every
/// evaluation, so no refresh could match it, and the engine refuses TABLESAMPLE for
/// DIFFERENTIAL (oracle/regressions/tablesample_ignored.sql): kept, the clause would turn most
/// harvested queries into FULL fallbacks and leave the differential path untested.
pub fn strip_tablesample(query: &str) -> (String, usize) {
    let mut out = query.to_string();
    let mut removed = 0;
    while let Some(start) = out.to_ascii_lowercase().find(" tablesample ") {
        let Some(end) = sample_clause_end(&out, start + " tablesample ".len()) else {
            break;
        };
        out.replace_range(start..end, "");
        removed += 1;
    }
    (out, removed)
}

/// The end of `method (args) [repeatable (args)]` starting at `from`.
fn sample_clause_end(s: &str, from: usize) -> Option<usize> {
    let mut end = parenthesized_end(s, s[from..].find('(')? + from)?;
    let rest = s[end..].to_ascii_lowercase();
    if rest.trim_start().starts_with("repeatable") {
        let open = s[end..].find('(')? + end;
        end = parenthesized_end(s, open)?;
    }
    Some(end)
}

/// The index after the `)` matching the `(` at `open`.
fn parenthesized_end(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, ch) in s[open..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// A grouping key for an error: SQLSTATE and the message's start, with quoted names and
/// numbers blanked so that the same reason groups together.
pub fn reason_key(code: &str, message: &str) -> String {
    let mut norm = String::new();
    let mut in_quote = false;
    for ch in message.chars() {
        match ch {
            '"' => {
                in_quote = !in_quote;
                if in_quote {
                    norm.push_str("\"…\"");
                }
            }
            _ if in_quote => {}
            c if c.is_ascii_digit() => {
                if !norm.ends_with('#') {
                    norm.push('#');
                }
            }
            c => norm.push(c),
        }
    }
    let short: String = norm.chars().take(90).collect();
    if code.is_empty() {
        short
    } else {
        format!("{code} {short}")
    }
}

enum Entry {
    Shared(String),
    Own(usize, String),
}

struct Accepted {
    name: String,
    query: String,
    columns: Vec<String>,
    done: bool,
}

/// Harvests queries from sqlsmith and runs them.
pub fn run_smith(cfg: &SmithConfig) -> Result<SmithReport, String> {
    let started = Instant::now();
    let mut report = SmithReport::default();
    let queries = harvest(cfg, &mut report)?;
    let mut db = fresh_database(&cfg.admin_url, TARGET_DB)?;
    let mut log: Vec<Entry> = Vec::new();
    let mut setup = vec!["CREATE EXTENSION pg_trickle".to_string()];
    setup.extend(ALL_TABLES.tables.iter().map(|t| t.ddl()));
    let mut runner = seeded_runner(mix(cfg.seed, 0x5317), PropConfig::default());
    let inserts = insert_strategy(&ALL_TABLES);
    for _ in 0..40 {
        let w = inserts
            .new_tree(&mut runner)
            .map_err(|e| e.to_string())?
            .current();
        setup.extend(w.statements());
    }
    for sql in setup {
        db.batch_execute(&sql)
            .map_err(|e| format!("{sql}: {}", describe(&e)))?;
        log.push(Entry::Shared(format!("{sql};")));
    }
    db.batch_execute(SMITH_TIMEOUT).map_err(|e| describe(&e))?;
    let mut accepted = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        if let Some(a) = try_create(&mut db, &cfg.admin_url, i, q, &mut report, &mut log)? {
            accepted.push(a);
        }
        ensure_connected(&mut db, &cfg.admin_url, &mut report)?;
    }
    report.accepted = accepted.len();
    let writes = write_strategy(&ALL_TABLES);
    for _ in 0..cfg.rounds {
        for _ in 0..cfg.writes_per_round {
            let w = writes
                .new_tree(&mut runner)
                .map_err(|e| e.to_string())?
                .current();
            let stmts = w.statements();
            let sql = if stmts.len() > 1 {
                format!("BEGIN; {}; COMMIT", stmts.join("; "))
            } else {
                stmts.join("; ")
            };
            db.batch_execute(&sql)
                .map_err(|e| format!("{sql}: {}", describe(&e)))?;
            log.push(Entry::Shared(format!("{sql};")));
        }
        for (j, a) in accepted.iter_mut().enumerate() {
            if !a.done {
                check_one(&mut db, j, a, &mut report, &mut log);
                ensure_connected(&mut db, &cfg.admin_url, &mut report)?;
            }
        }
    }
    report.converged = accepted.iter().filter(|a| !a.done).count();
    for f in &mut report.failures {
        f.replayed = Some(fixture::replay_script(&cfg.admin_url, &f.script).is_err());
        if let Some(dir) = &cfg.regressions {
            f.fixture = write_fixture(dir, cfg, f).ok();
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn harvest(cfg: &SmithConfig, report: &mut SmithReport) -> Result<Vec<String>, String> {
    let mut src = fresh_database(&cfg.admin_url, SOURCE_DB)?;
    for t in ALL_TABLES.tables {
        src.batch_execute(&t.ddl()).map_err(|e| describe(&e))?;
    }
    drop(src);
    let out = Command::new("sqlsmith")
        .arg(format!("--target={}", db_url(&cfg.admin_url, SOURCE_DB)))
        .arg("--dry-run")
        .arg("--exclude-catalog")
        .arg(format!("--max-queries={}", cfg.queries))
        .arg(format!("--seed={}", cfg.seed % (i32::MAX as u64)))
        .output()
        .map_err(|e| format!("sqlsmith: {e} (is it installed? ci/setup installs it)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let all = split_statements(&text);
    report.generated = all.len();
    let mut queries = Vec::new();
    for stmt in all {
        let lower = stmt.trim_start().to_ascii_lowercase();
        if !(lower.starts_with("select") || lower.starts_with("with")) {
            continue;
        }
        report.selects += 1;
        let line = check::one_line(&stmt);
        if line.contains('\n') {
            report.skipped += 1;
            continue;
        }
        let (line, samples) = strip_tablesample(&line);
        report.tablesamples_removed += usize::from(samples > 0);
        let (query, stripped) = strip_final_limit(&line);
        report.limits_removed += usize::from(stripped);
        queries.push(query);
    }
    Ok(queries)
}

fn try_create(
    db: &mut Client,
    admin_url: &str,
    i: usize,
    query: &str,
    report: &mut SmithReport,
    log: &mut Vec<Entry>,
) -> Result<Option<Accepted>, String> {
    let name = format!("smith_{i}");
    let create = check::create_sql(&name, query, "DIFFERENTIAL");
    if db.batch_execute(&create).is_ok() {
        log.push(Entry::Own(i, format!("{create};")));
        let columns = db
            .query(
                "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass \
                 AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_\\_pgt\\_%' \
                 ORDER BY attnum",
                &[&name],
            )
            .map_err(|e| describe(&e))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        return Ok(Some(Accepted {
            name,
            query: query.to_string(),
            columns,
            done: false,
        }));
    }
    ensure_connected(db, admin_url, report)?;
    let auto = check::create_sql(&name, query, "AUTO");
    match db.batch_execute(&auto) {
        Ok(()) => {
            let reason: String = db
                .query_one(
                    "SELECT coalesce(full_reason, effective_mode) FROM pgtrickle.pgt_stream_tables \
                     WHERE pgt_name::text = $1",
                    &[&name],
                )
                .map(|r| r.get(0))
                .unwrap_or_default();
            let reason = reason
                .trim_start_matches("not differentiable: ")
                .to_string();
            *report
                .full_fallback
                .entry(reason_key("", &reason))
                .or_default() += 1;
            let _ = db.batch_execute(&format!("SELECT pgtrickle.drop_stream_table('{name}')"));
        }
        Err(e) => {
            let code = sqlstate(&e).unwrap_or("-");
            let key = reason_key(code, &message(&e));
            if suspicious(code) {
                report
                    .suspicious
                    .entry(key.clone())
                    .or_insert_with(|| query.to_string());
            }
            *report.refused.entry(key).or_default() += 1;
        }
    }
    Ok(None)
}

/// SQLSTATEs a refused query should not produce: PostgreSQL's own refusals of sqlsmith's
/// queries are syntax, type, feature and data errors (classes 42, 0A, 22, 55, 58).
pub fn suspicious(code: &str) -> bool {
    ["XX", "23", "25", "40", "53", "57", "-"]
        .iter()
        .any(|c| code.starts_with(c))
        || code == "42P01"
}

fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

/// Reconnects when the server closed the connection (a backend crash restarts every
/// backend: counted, and the run goes on once the server accepts connections again).
fn ensure_connected(
    db: &mut Client,
    admin_url: &str,
    report: &mut SmithReport,
) -> Result<(), String> {
    if !db.is_closed() {
        return Ok(());
    }
    report.connection_losses += 1;
    let mut last = String::new();
    for _ in 0..RECONNECT_TRIES_MAX {
        match Client::connect(&db_url(admin_url, TARGET_DB), NoTls) {
            Ok(mut c) => {
                c.batch_execute(SMITH_TIMEOUT).map_err(|e| describe(&e))?;
                *db = c;
                return Ok(());
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Err(format!(
        "lost the connection and could not reconnect: {last}"
    ))
}

/// Refreshes and checks one accepted query in one REPEATABLE READ transaction.
fn check_one(
    db: &mut Client,
    j: usize,
    a: &mut Accepted,
    report: &mut SmithReport,
    log: &mut Vec<Entry>,
) {
    let refresh = check::refresh_sql(&a.name);
    let verify = check::query_check_sql(&a.name, &a.columns, &a.query, check::QUERY);
    report.checks += 1;
    for sql in [BEGIN, refresh.as_str(), verify.as_str(), "COMMIT"] {
        log.push(Entry::Own(j, format!("{sql};")));
        let Err(e) = db.batch_execute(sql) else {
            continue;
        };
        let _ = db.batch_execute("ROLLBACK");
        a.done = true;
        let msg = message(&e);
        if msg.starts_with(MISMATCH_PREFIX) {
            report.failures.push(failure(j, a, &msg, log));
            return;
        }
        // The refresh or the check errored: a counterexample only if the query itself runs.
        let plain = format!("SELECT count(*) FROM ({}) AS q_", a.query);
        match db.batch_execute(&plain) {
            Err(qe) => {
                let key = reason_key(sqlstate(&qe).unwrap_or("-"), &message(&qe));
                *report.runtime_errors.entry(key).or_default() += 1;
            }
            Ok(()) => report.failures.push(failure(j, a, &describe(&e), log)),
        }
        return;
    }
}

fn failure(j: usize, a: &Accepted, message: &str, log: &[Entry]) -> SmithFailure {
    let script = log
        .iter()
        .filter_map(|e| match e {
            Entry::Shared(s) => Some(s.clone()),
            Entry::Own(i, s) if *i == j => Some(s.clone()),
            Entry::Own(..) => None,
        })
        .collect();
    SmithFailure {
        name: a.name.clone(),
        query: a.query.clone(),
        message: message.to_string(),
        script,
        replayed: None,
        fixture: None,
    }
}

fn write_fixture(dir: &Path, cfg: &SmithConfig, f: &SmithFailure) -> std::io::Result<PathBuf> {
    let header = vec![
        format!("-- pg_trickle oracle fixture: sqlsmith query {}", f.name),
        "-- status: OPEN (fails until the bug is fixed; not in the default rerun). When fixed, \
         move it from oracle/regressions/open/ to oracle/regressions/."
            .to_string(),
        format!(
            "-- found by: ci/oracle --sqlsmith {} --seed {} (not shrunk)",
            cfg.queries, cfg.seed
        ),
        format!("-- failure: {}", f.message.replace('\n', " ")),
        format!(
            "-- replayed in a fresh database: {}",
            if f.replayed == Some(true) {
                "fails the same way"
            } else {
                "did NOT fail"
            }
        ),
    ];
    fixture::write_named(
        dir,
        &format!("smith-s{}-{}", cfg.seed, f.name),
        &header,
        &f.script,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlsmith_output_splits_at_semicolons_ending_lines() {
        let out =
            "select\n  1 as c0\nfrom public.a;\ninsert into a values (1);\nselect 'x;' as c;\n";
        assert_eq!(
            split_statements(out),
            [
                "select\n  1 as c0\nfrom public.a",
                "insert into a values (1)",
                "select 'x;' as c"
            ]
        );
    }

    #[test]
    fn only_a_final_top_level_limit_is_removed() {
        assert_eq!(
            strip_final_limit("select 1 as c0 from a limit 87"),
            ("select 1 as c0 from a".into(), true)
        );
        assert_eq!(
            strip_final_limit("select (select k from a limit 1) as c0 from b"),
            (
                "select (select k from a limit 1) as c0 from b".into(),
                false
            )
        );
        assert_eq!(
            strip_final_limit("select * from (select k from a limit 3) as s"),
            ("select * from (select k from a limit 3) as s".into(), false)
        );
    }

    #[test]
    fn tablesample_clauses_are_removed_with_their_arguments() {
        assert_eq!(
            strip_tablesample("select 1 from public.a as s tablesample system (3.3) where true"),
            ("select 1 from public.a as s where true".into(), 1)
        );
        assert_eq!(
            strip_tablesample(
                "select 1 from a as x TABLESAMPLE bernoulli (cast(1 as real)) repeatable (7) \
                 join b as y tablesample system (2) on (true)"
            ),
            ("select 1 from a as x join b as y on (true)".into(), 2)
        );
    }

    #[test]
    fn internal_errors_and_constraint_violations_are_suspicious_refusals() {
        assert!(suspicious("XX000") && suspicious("23505") && suspicious("42P01"));
        assert!(!suspicious("42804") && !suspicious("0A000") && !suspicious("22012"));
    }

    #[test]
    fn reasons_group_without_names_and_numbers() {
        assert_eq!(
            reason_key("42P01", "relation \"public.x12\" does not exist at 34"),
            "42P01 relation \"…\" does not exist at #"
        );
        assert_eq!(reason_key("", "LIMIT 10"), "LIMIT #");
    }
}
