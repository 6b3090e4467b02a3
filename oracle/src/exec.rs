//! Runs one oracle case against a live server: a fresh database with the group's tables and
//! initial rows, every family of the group once per twin mode, then the steps, then a last
//! refresh and check of everything (INV-1 after every refresh, see `check`). Every statement
//! sent is logged, one per line, so a failing case's log is its replay script. With writers,
//! other connections write to the same tables all along (`--concurrent`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use postgres::{Client, NoTls};

use crate::check::{self, BEGIN, MISMATCH_PREFIX};
use crate::families::{Expect, Family, Group, TWINS};
use crate::step::{Step, Write};
use crate::writer;

/// The database every case runs in (dropped and recreated per case).
pub const CASE_DB: &str = "pgt_oracle";

/// Which families a case creates: all of its group's, or one (while shrinking a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    All,
    Family(usize),
}

/// One case: a group, its initial rows and its steps.
#[derive(Debug, Clone, Copy)]
pub struct Case<'a> {
    pub group: &'static Group,
    pub initial: &'a [Write],
    pub steps: &'a [Step],
}

/// How to run a case.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub focus: Focus,
    /// How many times the run visited the case's group before (which families get the
    /// twins created in one case out of several).
    pub round: u64,
    /// Concurrent writer connections (0: none, the case is deterministic).
    pub writers: usize,
    pub writer_seed: u64,
}

/// What went wrong. With the family, it is the failure's signature while shrinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The database or the schema could not be set up.
    Setup,
    /// `create_stream_table` failed.
    Create,
    /// A family expected DIFFERENTIAL fell back to FULL.
    Coverage,
    /// A write failed (never expected: writes are built not to fail).
    Write,
    /// A refresh failed.
    Refresh,
    /// A stream table differs from its query (INV-1).
    Mismatch,
    /// Twins of one query differ.
    Twins,
    /// A check statement itself failed (the query errored in this snapshot).
    Check,
    /// A concurrent writer failed.
    Writer,
}

/// A counterexample: what, where, and the statements that led to it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub family: Option<&'static str>,
    pub message: String,
    pub script: Vec<String>,
    /// Statements of the concurrent writers (not replayable in order).
    pub writer_logs: Vec<Vec<String>>,
    /// Steps that completed before the failure.
    pub steps: u64,
}

impl Failure {
    /// What must stay the same for a shrunk case to count as the same failure.
    pub fn signature(&self) -> (Kind, Option<&'static str>) {
        (self.kind, self.family)
    }
}

/// What a passing case did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub steps: u64,
    pub writes: u64,
    /// Refresh transactions, each checking every twin of one family.
    pub checks: u64,
    pub writer_writes: u64,
    /// Writes (of any connection) rolled back on a deadlock, serialization or unique
    /// violation caused by the concurrent writers.
    pub conflicts: u64,
    /// Refreshes of the twin under test by action (and reason, for FULL).
    pub actions: BTreeMap<String, u64>,
    /// Stream tables created, by refresh mode.
    pub created: BTreeMap<&'static str, u64>,
    /// Families whose twin under test runs FULL, with the reason.
    pub fallbacks: BTreeMap<&'static str, String>,
}

/// SQLSTATEs a write may hit only because of concurrent writers.
pub const CONFLICT_CODES: [&str; 3] = ["40P01", "40001", "23505"];

/// The stream tables of one family and how to check them, fixed at creation.
struct Created {
    family: &'static Family,
    /// What a check refreshes, in order (an upstream before its downstream).
    refresh: Vec<String>,
    /// The check statements, each raising with its kind of failure.
    checks: Vec<(Kind, String)>,
}

struct Exec {
    db: Client,
    script: Vec<String>,
    created: BTreeMap<usize, Created>,
    stats: Stats,
    concurrent: bool,
}

/// The libpq connection string of database `name` on the server of `admin_url`.
pub fn db_url(admin_url: &str, name: &str) -> String {
    let kept: Vec<&str> = admin_url
        .split_whitespace()
        .filter(|p| !p.starts_with("dbname="))
        .collect();
    format!("{} dbname={name}", kept.join(" "))
}

/// `message (SQLSTATE)` of a client error.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// Whether a failure message says the server was away or the extension being reinstalled
/// (`ci/install` elsewhere, a cluster restart) rather than anything about refreshes.
pub fn environmental(message: &str) -> bool {
    const SIGNS: [&str; 9] = [
        "could not find function",
        "could not access file",
        "(57P01)",
        "(57P03)",
        "connection closed",
        "error communicating with the server",
        "connect: ",
        "could not load library",
        "version to install must be specified",
    ];
    SIGNS.iter().any(|s| message.contains(s))
}

/// The SQLSTATE of a client error, if the server sent one.
pub fn sqlstate(e: &postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

/// Drops and recreates database `name` and connects to it.
pub fn fresh_database(admin_url: &str, name: &str) -> Result<Client, String> {
    let mut admin = Client::connect(admin_url, NoTls).map_err(|e| format!("connect: {e}"))?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .map_err(|e| format!("{sql}: {}", describe(&e)))?;
    }
    let mut db =
        Client::connect(&db_url(admin_url, name), NoTls).map_err(|e| format!("connect: {e}"))?;
    db.batch_execute("SET statement_timeout = '120s'")
        .map_err(|e| describe(&e))?;
    Ok(db)
}

/// Runs `case`; `seen` counts the steps started (proptest's shrinker drops the rest).
pub fn run_case(
    admin_url: &str,
    case: Case<'_>,
    opts: Options,
    seen: Option<&AtomicUsize>,
) -> Result<Stats, Failure> {
    let db = fresh_database(admin_url, CASE_DB).map_err(|m| failure(Kind::Setup, None, m, &[]))?;
    let mut ex = Exec {
        db,
        script: Vec::new(),
        created: BTreeMap::new(),
        stats: Stats::default(),
        concurrent: opts.writers > 0,
    };
    ex.setup(case)?;
    ex.create_targets(case.group, opts.focus, opts.round)?;
    let stop = Arc::new(AtomicBool::new(false));
    let url = db_url(admin_url, CASE_DB);
    let handles: Vec<_> = (0..opts.writers)
        .map(|i| {
            let (stop, url) = (stop.clone(), url.clone());
            let seed = opts.writer_seed.wrapping_add(i as u64);
            let group = case.group;
            thread::spawn(move || writer::write_until(&url, group, seed, &stop))
        })
        .collect();
    let mut outcome = Ok(());
    for step in case.steps {
        if let Some(seen) = seen {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        outcome = ex.step(step);
        if outcome.is_err() {
            break;
        }
        ex.stats.steps += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for h in handles {
        let report = h
            .join()
            .unwrap_or_else(|_| writer::Report::failed("writer panicked"));
        ex.stats.writer_writes += report.writes;
        ex.stats.conflicts += report.conflicts;
        if let (Some(err), Ok(())) = (&report.error, &outcome) {
            outcome = Err(failure(Kind::Writer, None, err.clone(), &ex.script));
        }
        logs.push(report.log);
    }
    let outcome = outcome.and_then(|()| {
        let families: Vec<usize> = ex.created.keys().copied().collect();
        families.into_iter().try_for_each(|f| ex.check(f))
    });
    if let Err(mut f) = outcome {
        f.writer_logs = logs;
        f.steps = ex.stats.steps;
        return Err(f);
    }
    ex.collect_actions();
    Ok(ex.stats)
}

fn failure(
    kind: Kind,
    family: Option<&'static str>,
    message: String,
    script: &[String],
) -> Failure {
    Failure {
        kind,
        family,
        message,
        script: script.to_vec(),
        writer_logs: Vec::new(),
        steps: 0,
    }
}

impl Exec {
    fn sql(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.script.push(format!("{sql};"));
        self.db.batch_execute(sql)
    }

    fn fail(&self, kind: Kind, family: Option<&'static str>, message: String) -> Failure {
        failure(kind, family, message, &self.script)
    }

    fn setup(&mut self, case: Case<'_>) -> Result<(), Failure> {
        let mut ddl = vec!["CREATE EXTENSION pg_trickle".to_string()];
        ddl.extend(case.group.tables.iter().map(|t| t.ddl()));
        for sql in ddl {
            self.sql(&sql)
                .map_err(|e| self.fail(Kind::Setup, None, format!("{sql}: {}", describe(&e))))?;
        }
        for w in case.initial {
            self.write(w)?;
        }
        Ok(())
    }

    fn create_targets(
        &mut self,
        group: &'static Group,
        focus: Focus,
        round: u64,
    ) -> Result<(), Failure> {
        for (i, family) in group.families.iter().enumerate() {
            if focus != Focus::All && focus != Focus::Family(i) {
                continue;
            }
            let mut created = Created {
                family,
                refresh: Vec::new(),
                checks: Vec::new(),
            };
            let mut chains: Vec<(String, Vec<String>)> = Vec::new();
            let twins = TWINS.iter().enumerate();
            for (t, twin) in twins.filter(|(_, t)| t.applies_to(family, i, round)) {
                let table = format!("{}_{}", twin.prefix, family.name);
                let query = match family.upstream {
                    Some(up_query) => {
                        let up = format!("{table}_up");
                        self.create(&mut created, &up, up_query, t)?;
                        family.query_over(&up)
                    }
                    None => family.query.to_string(),
                };
                let columns = self.create(&mut created, &table, &query, t)?;
                if family.upstream.is_some() {
                    let composed = check::query_check_sql(
                        &table,
                        &columns,
                        &family.composed(),
                        check::COMPOSED,
                    );
                    created.checks.push((Kind::Mismatch, composed));
                }
                chains.push((table, columns));
            }
            if let Some(((first, columns), others)) = chains.split_first() {
                for (other, _) in others {
                    let sql = check::twin_check_sql(first, other, columns);
                    created.checks.push((Kind::Twins, sql));
                }
            }
            self.created.insert(i, created);
        }
        Ok(())
    }

    /// Creates `table` in twin `t`'s mode, adds its refresh and check to `created`, and
    /// returns its user columns.
    fn create(
        &mut self,
        created: &mut Created,
        table: &str,
        query: &str,
        t: usize,
    ) -> Result<Vec<String>, Failure> {
        let (family, twin) = (created.family, &TWINS[t]);
        let sql = check::create_sql(table, query, twin.mode);
        self.sql(&sql).map_err(|e| {
            self.fail(
                Kind::Create,
                Some(family.name),
                format!("{table}: {}", describe(&e)),
            )
        })?;
        *self.stats.created.entry(twin.mode).or_default() += 1;
        if t == 0 {
            self.note_mode(family, table)?;
        }
        let columns = self.user_columns(table)?;
        if twin.refresh {
            created.refresh.push(table.to_string());
        }
        created.checks.push((
            Kind::Mismatch,
            check::query_check_sql(table, &columns, query, check::QUERY),
        ));
        Ok(columns)
    }

    fn note_mode(&mut self, family: &'static Family, table: &str) -> Result<(), Failure> {
        let row = self
            .db
            .query_one(
                "SELECT effective_mode, coalesce(full_reason, '') FROM \
                 pgtrickle.pgt_stream_tables WHERE pgt_name::text = $1",
                &[&table],
            )
            .map_err(|e| self.fail(Kind::Setup, Some(family.name), describe(&e)))?;
        let (mode, reason): (String, String) = (row.get(0), row.get(1));
        if mode != "DIFFERENTIAL" {
            if family.expect == Expect::Differential {
                return Err(self.fail(
                    Kind::Coverage,
                    Some(family.name),
                    format!("{table} is expected DIFFERENTIAL but runs {mode}: {reason}"),
                ));
            }
            self.stats.fallbacks.insert(family.name, reason);
        }
        Ok(())
    }

    fn user_columns(&mut self, table: &str) -> Result<Vec<String>, Failure> {
        let rows = self
            .db
            .query(
                "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass \
                 AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_\\_pgt\\_%' \
                 ORDER BY attnum",
                &[&table],
            )
            .map_err(|e| self.fail(Kind::Setup, None, describe(&e)))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    fn step(&mut self, step: &Step) -> Result<(), Failure> {
        match step {
            Step::Write(w) => self.write(w),
            Step::Refresh { family } => self.check(*family),
            Step::WriteRefresh { write, family } => {
                if !self.created.contains_key(family) {
                    return self.write(write);
                }
                self.checked(*family, Some(write))
            }
        }
    }

    /// A write, in a transaction of its own when it has several statements.
    fn write(&mut self, w: &Write) -> Result<(), Failure> {
        let stmts = w.statements();
        let tx = stmts.len() > 1;
        let mut all = Vec::new();
        if tx {
            all.push("BEGIN".to_string());
        }
        all.extend(stmts);
        if tx {
            all.push("COMMIT".to_string());
        }
        self.stats.writes += 1;
        for sql in &all {
            if let Err(e) = self.sql(sql) {
                return self.write_error(sql, &e, tx);
            }
        }
        Ok(())
    }

    /// A failed write: a conflict with a concurrent writer is rolled back and skipped,
    /// anything else is a counterexample.
    fn write_error(&mut self, sql: &str, e: &postgres::Error, tx: bool) -> Result<(), Failure> {
        let conflict = sqlstate(e).is_some_and(|c| CONFLICT_CODES.contains(&c));
        if self.concurrent && conflict {
            self.stats.conflicts += 1;
            self.script
                .push(format!("-- ^ {} with the concurrent writers", describe(e)));
            if tx {
                let _ = self.sql("ROLLBACK");
            }
            return Ok(());
        }
        Err(self.fail(Kind::Write, None, format!("{sql}: {}", describe(e))))
    }

    /// Refreshes and checks one family, if the case created it.
    fn check(&mut self, family: usize) -> Result<(), Failure> {
        if !self.created.contains_key(&family) {
            return Ok(());
        }
        self.checked(family, None)
    }

    fn checked(&mut self, family: usize, write: Option<&Write>) -> Result<(), Failure> {
        let Some(c) = self.created.get(&family) else {
            return Ok(());
        };
        let name = c.family.name;
        let (refresh, checks) = (c.refresh.clone(), c.checks.clone());
        self.stats.checks += 1;
        self.sql(BEGIN)
            .map_err(|e| self.fail(Kind::Setup, Some(name), describe(&e)))?;
        match self.check_in_tx(name, &refresh, &checks, write) {
            Ok(true) => self.sql("COMMIT").map_err(|e| {
                self.fail(
                    Kind::Refresh,
                    Some(name),
                    format!("COMMIT: {}", describe(&e)),
                )
            }),
            Ok(false) => {
                let _ = self.sql("ROLLBACK");
                Ok(())
            }
            Err(f) => {
                let _ = self.db.batch_execute("ROLLBACK");
                Err(f)
            }
        }
    }

    /// Inside the check's transaction; Ok(false) when the write conflicted (rolled back).
    fn check_in_tx(
        &mut self,
        name: &'static str,
        refresh: &[String],
        checks: &[(Kind, String)],
        write: Option<&Write>,
    ) -> Result<bool, Failure> {
        if let Some(w) = write {
            self.stats.writes += 1;
            for sql in w.statements() {
                if let Err(e) = self.sql(&sql) {
                    self.write_error(&sql, &e, false)?;
                    return Ok(false);
                }
            }
        }
        for t in refresh {
            self.sql(&check::refresh_sql(t)).map_err(|e| {
                self.fail(
                    Kind::Refresh,
                    Some(name),
                    format!("refresh {t}: {}", describe(&e)),
                )
            })?;
        }
        for (kind, sql) in checks {
            if let Err(e) = self.sql(sql) {
                let msg = e.as_db_error().map(|d| d.message().to_string());
                let kind = match msg {
                    Some(m) if m.starts_with(MISMATCH_PREFIX) => *kind,
                    _ => Kind::Check,
                };
                return Err(self.fail(kind, Some(name), describe(&e)));
            }
        }
        Ok(true)
    }

    fn collect_actions(&mut self) {
        let rows = self.db.query(
            "SELECT CASE WHEN s.effective_mode <> 'DIFFERENTIAL' THEN 'FULL (stream table in FULL mode)' \
             WHEN h.action = 'FULL' THEN 'FULL (' || coalesce(h.reason, '?') || ')' \
             ELSE h.action END, count(*) FROM pgtrickle.pgt_refresh_history h \
             JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
             WHERE s.pgt_name::text LIKE $1 AND h.action IS NOT NULL GROUP BY 1",
            &[&format!("{}\\_%", TWINS[0].prefix)],
        );
        for r in rows.iter().flatten() {
            let (action, n): (String, i64) = (r.get(0), r.get(1));
            *self.stats.actions.entry(action).or_default() += n as u64;
        }
    }
}

/// Refreshes by action (FULL, DIFFERENTIAL, NO_DATA; the status of one that chose none), from
/// pg_trickle's history: what a run's report shows it maintained.
pub fn refresh_actions(db: &mut Client) -> Result<std::collections::BTreeMap<String, i64>, String> {
    let rows = db
        .query(
            "SELECT coalesce(action, status), count(*) FROM pgtrickle.pgt_refresh_history \
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .map_err(|e| describe(&e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Runs `sql` on `db` after recording it in `script` (what a failure shows to replay it).
pub fn run_recorded(db: &mut Client, script: &mut Vec<String>, sql: &str) -> Result<(), String> {
    script.push(sql.to_string());
    db.batch_execute(sql)
        .map_err(|e| format!("{sql}: {}", describe(&e)))
}

/// The report of a seeded run's failure: seed, step, error and the last 40 statements.
pub fn seeded_failure(seed: u64, step: u64, e: &str, script: &[String]) -> String {
    let tail: Vec<&String> = script.iter().rev().take(40).collect();
    let mut out = format!(
        "seed {seed} step {step}: {e}\n-- last {} statements:\n",
        tail.len()
    );
    for s in tail.into_iter().rev() {
        out.push_str(s);
        out.push_str(";\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinstalls_and_restarts_are_environmental_but_mismatches_are_not() {
        assert!(environmental(
            "CREATE EXTENSION pg_trickle: could not find function \"x\" in file \"pg_trickle.so\" (42883)"
        ));
        assert!(environmental("connect: error connecting to server"));
        assert!(!environmental(
            "oracle: diff_join2 differs from its query: 1 extra rows"
        ));
        assert!(!environmental(
            "refresh diff_join2: division by zero (22012)"
        ));
    }

    #[test]
    fn db_url_replaces_only_the_database() {
        assert_eq!(
            db_url("host=h port=5 user=u dbname=postgres", "x"),
            "host=h port=5 user=u dbname=x"
        );
    }
}
