//! One oracle run: a fresh database, every family created as an AUTO stream table and as a
//! FULL twin, then `iterations` random operations (writes, and refreshes followed by the
//! check) from one seed. With `concurrent`, a second connection writes all along while
//! refreshes and checks run, each in one REPEATABLE READ transaction so the check reads the
//! refresh's own snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use postgres::{Client, NoTls};

use crate::families::{Family, FAMILIES, SCHEMA};
use crate::rng::Rng;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// libpq connection string to an existing database (the run creates `pgt_oracle`).
    pub admin_url: String,
    pub iterations: u64,
    pub seed: u64,
    pub concurrent: bool,
}

/// One stream table under test.
#[derive(Debug, Clone)]
struct Target {
    family: Family,
    table: String,
    mode: String,
    columns: Vec<String>,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub differential: Vec<String>,
    pub full_fallback: Vec<(String, String)>,
    pub refused: Vec<(String, String)>,
    pub checks: u64,
    pub writes: u64,
}

/// A counterexample: where it happened and the statements that led to it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub script: Vec<String>,
}

type Result<T> = std::result::Result<T, Failure>;

fn fail(message: impl Into<String>, script: &[String]) -> Failure {
    Failure {
        message: message.into(),
        script: script.to_vec(),
    }
}

fn db_url(admin_url: &str) -> String {
    let kept: Vec<&str> = admin_url
        .split_whitespace()
        .filter(|p| !p.starts_with("dbname="))
        .collect();
    format!("{} dbname=pgt_oracle", kept.join(" "))
}

/// Runs the oracle.
pub fn run(cfg: &Config) -> Result<Report> {
    let mut log: Vec<String> = Vec::new();
    let mut admin =
        Client::connect(&cfg.admin_url, NoTls).map_err(|e| fail(format!("connect: {e}"), &log))?;
    for sql in [
        "DROP DATABASE IF EXISTS pgt_oracle WITH (FORCE)",
        "CREATE DATABASE pgt_oracle",
    ] {
        admin
            .batch_execute(sql)
            .map_err(|e| fail(format!("{sql}: {}", describe(&e)), &log))?;
    }
    let url = db_url(&cfg.admin_url);
    let mut db = Client::connect(&url, NoTls).map_err(|e| fail(format!("connect: {e}"), &log))?;
    let mut rng = Rng::new(cfg.seed);
    let setup = format!("CREATE EXTENSION pg_trickle; {SCHEMA}");
    exec(&mut db, &setup, &mut log)?;
    for _ in 0..60 {
        let sql = insert_op(&mut rng);
        exec(&mut db, &sql, &mut log)?;
    }
    let mut report = Report::default();
    let targets = create_targets(&mut db, &mut report, &mut log)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = if cfg.concurrent {
        let (stop, url, seed) = (stop.clone(), url.clone(), cfg.seed ^ 0xC0FF_EE00);
        Some(thread::spawn(move || concurrent_writer(&url, seed, &stop)))
    } else {
        None
    };
    let outcome = drive(cfg, &mut db, &mut rng, &targets, &mut report, &mut log);
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = writer {
        match w.join() {
            Ok(Ok(n)) => report.writes += n,
            Ok(Err(e)) => return Err(fail(format!("concurrent writer: {e}"), &log)),
            Err(_) => return Err(fail("concurrent writer panicked", &log)),
        }
    }
    outcome?;
    // Finally every stream table once more, after all writers stopped.
    for t in &targets {
        check(&mut db, t, &mut log)?;
        report.checks += 1;
    }
    Ok(report)
}

fn drive(
    cfg: &Config,
    db: &mut Client,
    rng: &mut Rng,
    targets: &[Target],
    report: &mut Report,
    log: &mut Vec<String>,
) -> Result<()> {
    for _ in 0..cfg.iterations {
        if rng.chance(20) && !targets.is_empty() {
            let t = rng.pick(targets).clone();
            check(db, &t, log)?;
            report.checks += 1;
        } else {
            let sql = write_op(rng);
            exec(db, &sql, log)?;
            report.writes += 1;
        }
    }
    Ok(())
}

fn exec(db: &mut Client, sql: &str, log: &mut Vec<String>) -> Result<()> {
    log.push(format!("{sql};"));
    db.batch_execute(sql)
        .map_err(|e| fail(format!("{sql}: {}", describe(&e)), log))
}

fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

fn create_targets(
    db: &mut Client,
    report: &mut Report,
    log: &mut Vec<String>,
) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for f in FAMILIES {
        for (prefix, mode) in [("st", "AUTO"), ("full", "FULL")] {
            let table = format!("{prefix}_{}", f.name);
            let sql = format!(
                "SELECT pgtrickle.create_stream_table('{table}', $q${}$q$, refresh_mode => '{mode}')",
                f.query
            );
            log.push(format!("{sql};"));
            if let Err(e) = db.batch_execute(&sql) {
                report.refused.push((table, describe(&e)));
                continue;
            }
            let row = db
                .query_one(
                    "SELECT effective_mode, coalesce(full_reason, '') FROM \
                     pgtrickle.pgt_stream_tables WHERE pgt_name::text = $1",
                    &[&table],
                )
                .map_err(|e| fail(describe(&e), log))?;
            let (effective, reason): (String, String) = (row.get(0), row.get(1));
            if mode == "AUTO" {
                if effective == "DIFFERENTIAL" {
                    report.differential.push(f.name.to_string());
                } else {
                    report.full_fallback.push((f.name.to_string(), reason));
                }
            }
            let columns = db
                .query(
                    "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass \
                     AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_\\_pgt\\_%' \
                     ORDER BY attnum",
                    &[&table],
                )
                .map_err(|e| fail(describe(&e), log))?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            targets.push(Target {
                family: *f,
                table,
                mode: effective,
                columns,
            });
        }
    }
    Ok(targets)
}

/// Refreshes `t` and compares it with its defining query in the same snapshot (INV-1).
fn check(db: &mut Client, t: &Target, log: &mut Vec<String>) -> Result<()> {
    let cols = t.columns.join(", ");
    let q = t.family.query;
    let refresh = format!("SELECT pgtrickle.refresh_stream_table('{}')", t.table);
    let diff = format!(
        "SELECT (SELECT count(*) FROM (SELECT {cols} FROM {table} EXCEPT ALL ({q})) x), \
                (SELECT count(*) FROM (({q}) EXCEPT ALL SELECT {cols} FROM {table}) y)",
        table = t.table
    );
    log.push(format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; {refresh}; {diff}; COMMIT;"
    ));
    let mut tx = db
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .map_err(|e| fail(describe(&e), log))?;
    tx.batch_execute(&refresh).map_err(|e| {
        fail(
            format!("refresh {} ({}): {}", t.table, t.mode, describe(&e)),
            log,
        )
    })?;
    let row = tx
        .query_one(&diff, &[])
        .map_err(|e| fail(describe(&e), log))?;
    let (extra, missing): (i64, i64) = (row.get(0), row.get(1));
    tx.commit().map_err(|e| fail(describe(&e), log))?;
    if extra != 0 || missing != 0 {
        return Err(fail(
            format!(
                "{} ({} mode, family {}) differs from its query: {extra} extra rows, \
                 {missing} missing rows",
                t.table, t.mode, t.family.name
            ),
            log,
        ));
    }
    Ok(())
}

fn key(rng: &mut Rng) -> String {
    if rng.chance(12) {
        "NULL".into()
    } else {
        rng.range(0, 5).to_string()
    }
}

/// One random insert (to fill the tables before the stream tables are created).
pub fn insert_op(rng: &mut Rng) -> String {
    let pick = rng.below(6);
    write_kind(rng, pick)
}

/// One random write (possibly several statements in one transaction).
pub fn write_op(rng: &mut Rng) -> String {
    let pick = rng.below(16);
    write_kind(rng, pick)
}

fn write_kind(rng: &mut Rng, kind: u64) -> String {
    let id = rng.range(1, 40);
    let k = key(rng);
    match kind {
        0 | 1 => {
            let v = format!("{}.{}", rng.range(-5, 20), rng.range(0, 9));
            let t = rng.pick(&["'x'", "'y'", "'Z'", "NULL"]).to_string();
            let f = rng.pick(&["true", "false", "NULL"]).to_string();
            format!("INSERT INTO a VALUES ({id}, {k}, {v}, {t}, {f}) ON CONFLICT DO NOTHING")
        }
        2 | 3 => {
            let w = rng.range(0, 20);
            let h = rng.range(0, 50);
            format!(
                "INSERT INTO b VALUES ({id}, {k}, {w}, timestamp '2026-01-01' + interval '{h} hours') \
                 ON CONFLICT DO NOTHING"
            )
        }
        4 => {
            let l = rng.pick(&["'p'", "'q'", "NULL"]).to_string();
            format!("INSERT INTO c VALUES ({id}, {k}, {l}) ON CONFLICT DO NOTHING")
        }
        5 => format!("INSERT INTO n VALUES ({k}, {}), ({k}, {})", rng.range(0, 3), rng.range(0, 3)),
        6 => format!("UPDATE a SET k = {k}, v = v + 1 WHERE id = {id}"),
        7 => format!(
            "UPDATE a SET id = id + 40 WHERE id = {id} AND NOT EXISTS (SELECT 1 FROM a WHERE id = {id} + 40)"
        ),
        8 => format!("UPDATE b SET k = {k}, w = w + 3 WHERE k = {}", rng.range(0, 5)),
        9 => format!("DELETE FROM a WHERE id = {id}"),
        10 => format!("DELETE FROM b WHERE k = {k}"),
        11 => {
            let kk = rng.range(0, 5);
            format!("BEGIN; DELETE FROM a WHERE k = {kk}; DELETE FROM b WHERE k = {kk}; COMMIT")
        }
        12 => format!(
            "BEGIN; INSERT INTO a VALUES ({n}, {k}, 1, 'x', true) ON CONFLICT DO NOTHING; \
             DELETE FROM a WHERE id = {n}; COMMIT",
            n = id + 100
        ),
        13 => format!("UPDATE n SET x = x + 1 WHERE k = {k}; DELETE FROM c WHERE id = {id}"),
        14 => format!(
            "INSERT INTO b SELECT g, {k}, g % 7, timestamp '2026-01-02' FROM generate_series({id}, {id} + 5) g \
             ON CONFLICT DO NOTHING"
        ),
        _ => {
            if rng.chance(15) {
                "TRUNCATE c".into()
            } else {
                format!("UPDATE c SET k = {k}, label = 'q' WHERE id = {id}")
            }
        }
    }
}

fn concurrent_writer(url: &str, seed: u64, stop: &AtomicBool) -> std::result::Result<u64, String> {
    let mut db = Client::connect(url, NoTls).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < 1_000_000 {
        let sql = write_op(&mut rng);
        db.batch_execute(&sql)
            .map_err(|e| format!("{sql}: {}", describe(&e)))?;
        n += 1;
    }
    Ok(n)
}
