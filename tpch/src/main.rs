//! `tpch`: the 22 TPC-H queries as pg_trickle stream tables over data generated here
//! (`tpchgen`), maintained through refresh cycles of RF1 (new orders with their lineitems),
//! RF2 (deleted orders with their lineitems) and updates of customer, partsupp, orders and
//! lineitem. Every query is created twice — AUTO (the mode a user gets) and a FULL twin — and
//! after each cycle both are refreshed, timed, and checked against the query itself (EXCEPT ALL
//! both ways). Prints one table: per query the mode AUTO resolved to, its rows, the FULL twin's
//! and the AUTO stream table's refresh of the same change (DIFFERENTIAL, or FULL where AUTO's
//! estimate chose it), their ratio and how often AUTO ran each mode. `ci/tpch` wraps it.

mod data;
mod queries;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

use crate::data::Dataset;
use crate::queries::{QUERIES, SCHEMA, TOP_QUERIES};

const USAGE: &str =
    "usage: tpch --url CONNSTR [--sf F] [--cycles N] [--db NAME] [--min-differential N]";

struct Args {
    url: String,
    sf: f64,
    cycles: u32,
    db: String,
    min_differential: usize,
    /// Leave the database and its stream tables for inspection.
    keep: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        sf: 0.01,
        cycles: 2,
        db: "tpch".into(),
        min_differential: 22,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--sf" => a.sf = value()?.parse().map_err(|e| format!("--sf: {e}"))?,
            "--cycles" => a.cycles = value()?.parse().map_err(|e| format!("--cycles: {e}"))?,
            "--db" => a.db = value()?,
            "--min-differential" => {
                a.min_differential = value()?
                    .parse()
                    .map_err(|e| format!("--min-differential: {e}"))?
            }
            "--keep" => a.keep = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.url.is_empty() {
        return Err(USAGE.into());
    }
    if !(a.sf > 0.0 && a.sf <= 10.0) {
        return Err("--sf must be in (0, 10]".into());
    }
    if a.cycles == 0 || a.cycles > data::MAX_CYCLES {
        return Err(format!("--cycles must be in 1..={}", data::MAX_CYCLES));
    }
    if !a.db.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return Err("--db must be lowercase letters and _".into());
    }
    Ok(a)
}

fn err(what: &str) -> impl Fn(postgres::Error) -> String + '_ {
    move |e| match e.as_db_error() {
        Some(db) => format!("{what}: {} {}", db.code().code(), db.message()),
        None => format!("{what}: {e}"),
    }
}

/// A connection to database `db` of the server `url` names, its NOTICEs collected.
fn connect(url: &str, db: &str, notices: Arc<Mutex<Vec<String>>>) -> Result<Client, String> {
    let mut cfg: Config = url.parse().map_err(err("connection string"))?;
    cfg.dbname(db);
    cfg.notice_callback(move |n| {
        if let Ok(mut v) = notices.lock() {
            v.push(n.message().to_string());
        }
    });
    cfg.connect(NoTls).map_err(err("connect"))
}

fn name(i: usize) -> String {
    if i < QUERIES.len() {
        format!("q{:02}", i + 1)
    } else {
        format!("q{:02}_top", TOP_QUERIES[i - QUERIES.len()].0)
    }
}

/// The 22 queries, then the ones with their `ORDER BY … LIMIT` kept.
fn all_queries() -> Vec<String> {
    QUERIES
        .iter()
        .map(|q| q.to_string())
        .chain(
            TOP_QUERIES
                .iter()
                .map(|(n, top)| format!("{}\n      {top}", QUERIES[n - 1])),
        )
        .collect()
}

/// How the report names query `i`.
fn label(i: usize) -> String {
    if i < QUERIES.len() {
        format!("Q{}", i + 1)
    } else {
        let (n, top) = TOP_QUERIES[i - QUERIES.len()];
        let limit = top.rsplit(' ').next().unwrap_or_default();
        format!("Q{n} LIMIT {limit}")
    }
}

/// Per query: its AUTO stream table's refresh (DIFFERENTIAL or FULL, as AUTO chose) and its
/// FULL twin's, summed over the cycles.
#[derive(Default, Clone)]
struct Timing {
    differential: Duration,
    full: Duration,
}

fn refresh(c: &mut Client, table: &str) -> Result<Duration, String> {
    let start = Instant::now();
    c.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{table}')"))
        .map_err(err(&format!("refresh {table}")))?;
    Ok(start.elapsed())
}

/// The user columns of a stream table (hidden `__pgt_` columns left out).
fn columns(c: &mut Client, table: &str) -> Result<Vec<String>, String> {
    let rows = c
        .query(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_\\_pgt\\_%' ORDER BY attnum",
            &[&table],
        )
        .map_err(err("columns"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Rows of `table` not in `query` plus rows of `query` not in `table` (multisets).
fn difference(c: &mut Client, table: &str, cols: &[String], query: &str) -> Result<i64, String> {
    let list = cols.join(", ");
    let sql = format!(
        "SELECT count(*) FROM ((SELECT {list} FROM {table} EXCEPT ALL SELECT * FROM ({query}) AS q) \
         UNION ALL (SELECT * FROM ({query}) AS q EXCEPT ALL SELECT {list} FROM {table})) AS d"
    );
    let row = c
        .query_one(&sql, &[])
        .map_err(err(&format!("check {table}")))?;
    Ok(row.get(0))
}

fn run(a: &Args) -> Result<bool, String> {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let mut admin = connect(&a.url, "postgres", notices.clone())?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", a.db))
        .map_err(err("drop database"))?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", a.db))
        .map_err(err("create database"))?;
    let mut c = connect(&a.url, &a.db, notices.clone())?;
    c.batch_execute("CREATE EXTENSION pg_trickle")
        .map_err(err("create extension"))?;
    for ddl in SCHEMA {
        c.batch_execute(ddl).map_err(err("schema"))?;
    }
    let started = Instant::now();
    let mut data = Dataset::new(a.sf, a.cycles);
    let loaded = data.load(&mut c)?;
    c.batch_execute("ANALYZE").map_err(err("analyze"))?;
    println!(
        "tpch: SF {} generated and loaded in {:.1}s: {loaded}",
        a.sf,
        started.elapsed().as_secs_f64()
    );
    let mut modes = Vec::new();
    let mut reasons = Vec::new();
    let queries = all_queries();
    for (i, q) in queries.iter().enumerate() {
        let n = name(i);
        if let Ok(mut v) = notices.lock() {
            v.clear();
        }
        c.batch_execute(&format!(
            "SELECT pgtrickle.create_stream_table('{n}', $q${q}$q$, schedule => '2d')"
        ))
        .map_err(err(&format!("create {n}")))?;
        c.batch_execute(&format!(
            "SELECT pgtrickle.create_stream_table('{n}_full', $q${q}$q$, schedule => '2d', refresh_mode => 'FULL')"
        ))
        .map_err(err(&format!("create {n}_full")))?;
        let mode: String = c
            .query_one(
                "SELECT effective_mode FROM pgtrickle.pgt_status() WHERE name = $1",
                &[&format!("public.{n}")],
            )
            .map_err(err("status"))?
            .get(0);
        modes.push(mode);
        reasons.push(notices.lock().map(|v| v.join("; ")).unwrap_or_default());
    }
    let mut cols = Vec::new();
    let mut failures = Vec::new();
    let mut checks = 0usize;
    for i in 0..queries.len() {
        cols.push(columns(&mut c, &name(i))?);
    }
    let mut check = |c: &mut Client, cycle: &str| -> Result<(), String> {
        for (i, q) in queries.iter().enumerate() {
            for table in [name(i), format!("{}_full", name(i))] {
                let d = difference(c, &table, &cols[i], q)?;
                checks += 1;
                if d != 0 {
                    failures.push(format!(
                        "{table} after {cycle}: {d} rows differ from its query"
                    ));
                }
            }
        }
        Ok(())
    };
    check(&mut c, "the initial load")?;
    let mut timings = vec![Timing::default(); queries.len()];
    for cycle in 0..a.cycles {
        let changed = data.cycle(&mut c, cycle)?;
        println!("tpch: cycle {}: {changed}", cycle + 1);
        for (i, t) in timings.iter_mut().enumerate() {
            t.differential += refresh(&mut c, &name(i))?;
            t.full += refresh(&mut c, &format!("{}_full", name(i)))?;
        }
        check(&mut c, &format!("cycle {}", cycle + 1))?;
    }
    println!();
    println!(
        "| query | AUTO mode | rows | FULL refresh (ms) | AUTO refresh (ms) | FULL / AUTO | AUTO ran |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    let per_cycle = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(a.cycles);
    for (i, t) in timings.iter().enumerate() {
        let rows: i64 = c
            .query_one(&format!("SELECT count(*) FROM {}", name(i)), &[])
            .map_err(err("count"))?
            .get(0);
        // What AUTO ran at each cycle (the refreshes that made an estimate; the others had
        // an empty window or ran FULL for a reason of their own).
        let ran: String = c
            .query_one(
                "SELECT format('DIFFERENTIAL %s, FULL %s', \
                   count(*) FILTER (WHERE h.action <> 'FULL'), count(*) FILTER (WHERE h.action = 'FULL')) \
                   FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
                  WHERE s.pgt_name = $1 AND h.choice IS NOT NULL",
                &[&name(i)],
            )
            .map_err(err("choices"))?
            .get(0);
        let (f, d) = (per_cycle(t.full), per_cycle(t.differential));
        println!(
            "| {} | {} | {rows} | {f:.1} | {d:.1} | {:.1} | {ran} |",
            label(i),
            modes[i],
            f / d.max(0.001)
        );
    }
    let total_full: f64 = timings[..QUERIES.len()]
        .iter()
        .map(|t| per_cycle(t.full))
        .sum();
    let total_diff: f64 = timings[..QUERIES.len()]
        .iter()
        .map(|t| per_cycle(t.differential))
        .sum();
    println!(
        "| all 22 | | | {total_full:.1} | {total_diff:.1} | {:.1} | |",
        total_full / total_diff.max(0.001)
    );
    println!();
    let differential = modes[..QUERIES.len()]
        .iter()
        .filter(|m| *m == "DIFFERENTIAL")
        .count();
    let top_differential = modes[QUERIES.len()..]
        .iter()
        .filter(|m| *m == "DIFFERENTIAL")
        .count();
    for (i, m) in modes.iter().enumerate() {
        if m != "DIFFERENTIAL" {
            println!("tpch: {} is {m}: {}", label(i), reasons[i]);
        }
    }
    println!(
        "tpch: SF {}, {} cycles: {differential} of 22 queries DIFFERENTIAL in AUTO, {top_differential} of {} with their LIMIT kept; {} checks, {} failed; {:.1}s in all",
        a.sf,
        a.cycles,
        TOP_QUERIES.len(),
        checks,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for f in &failures {
        println!("tpch: FAILED {f}");
    }
    if a.keep {
        println!("tpch: database {} kept", a.db);
    } else {
        admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", a.db))
            .map_err(err("drop database"))?;
    }
    if top_differential < TOP_QUERIES.len() {
        println!(
            "tpch: FAILED only {top_differential} of the {} queries with LIMIT DIFFERENTIAL",
            TOP_QUERIES.len()
        );
        return Ok(false);
    }
    if differential < a.min_differential {
        println!(
            "tpch: FAILED only {differential} queries DIFFERENTIAL, expected at least {}",
            a.min_differential
        );
        return Ok(false);
    }
    Ok(failures.is_empty())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tpch: {e}");
            ExitCode::FAILURE
        }
    }
}
