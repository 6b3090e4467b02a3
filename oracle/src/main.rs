//! `oracle`: runs the differential oracle against a live server and prints what it found.
//! Modes: state-machine runs (default), `--sqlsmith N`, `--ddl N` (source DDL), `--rerun DIR`
//! (fixtures) and `--replay FILE`. `ci/oracle` wraps it; see docs/ORACLE.md.

use std::path::PathBuf;
use std::process::ExitCode;

use oracle::alter::{run_alter, AlterConfig};
use oracle::ddl::{run_ddl, DdlConfig};
use oracle::families::{group, Expect, GROUPS};
use oracle::fixture;
use oracle::run::{run, Config, Counterexample, Report};
use oracle::smith::{run_smith, SmithConfig, SmithReport};

const USAGE: &str = "usage: oracle --url CONNSTR [--iterations N] [--seed S] [--concurrent] \
[--writers W] [--steps-max L] [--group NAME]... [--case I] [--cases C] [--keep-going] [--regressions DIR]
       oracle --url CONNSTR --sqlsmith N [--seed S] [--rounds R] [--regressions DIR]
       oracle --url CONNSTR --ddl N [--seed S]
       oracle --url CONNSTR --alter N [--seed S]
       oracle --url CONNSTR --rerun DIR [--open]
       oracle --url CONNSTR --replay FILE...";

#[derive(Default)]
struct Args {
    url: String,
    iterations: Option<u64>,
    seed: Option<u64>,
    writers: usize,
    steps_max: Option<usize>,
    groups: Vec<String>,
    case: Option<u64>,
    cases: u64,
    regressions: Option<PathBuf>,
    sqlsmith: Option<u64>,
    ddl: Option<u64>,
    alter: Option<u64>,
    rounds: usize,
    rerun: Option<PathBuf>,
    open: bool,
    replay: Vec<PathBuf>,
    keep_going: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rounds: 4,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--iterations" => a.iterations = Some(num(value()?)?),
            "--seed" => a.seed = Some(num(value()?)?),
            "--concurrent" => a.writers = a.writers.max(2),
            "--writers" => a.writers = num(value()?)? as usize,
            "--steps-max" => a.steps_max = Some(num(value()?)? as usize),
            "--group" => a.groups.push(value()?),
            "--case" => a.case = Some(num(value()?)?),
            "--cases" => a.cases = num(value()?)?,
            "--regressions" => a.regressions = Some(value()?.into()),
            "--sqlsmith" => a.sqlsmith = Some(num(value()?)?),
            "--ddl" => a.ddl = Some(num(value()?)?),
            "--alter" => a.alter = Some(num(value()?)?),
            "--rounds" => a.rounds = num(value()?)? as usize,
            "--rerun" => a.rerun = Some(value()?.into()),
            "--open" => a.open = true,
            "--keep-going" => a.keep_going = true,
            "--replay" => a.replay.push(value()?.into()),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("oracle: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    if !args.replay.is_empty() {
        return replay(&args);
    }
    if let Some(dir) = &args.rerun {
        return rerun(&args.url, dir, args.open);
    }
    if let Some(steps) = args.ddl {
        return ddl(&args.url, seed, steps);
    }
    if let Some(steps) = args.alter {
        return alter(&args.url, seed, steps);
    }
    if let Some(n) = args.sqlsmith {
        let cfg = SmithConfig {
            admin_url: args.url.clone(),
            queries: n,
            seed,
            rounds: args.rounds,
            writes_per_round: 15,
            regressions: args.regressions.clone(),
        };
        println!(
            "oracle sqlsmith: seed {seed}, {n} generated statements, {} rounds",
            cfg.rounds
        );
        return match run_smith(&cfg) {
            Ok(r) => print_smith(&r, seed),
            Err(e) => {
                println!("oracle sqlsmith: FAILED (seed {seed}): {e}");
                ExitCode::FAILURE
            }
        };
    }
    state_machine(&args, seed)
}

fn alter(url: &str, seed: u64, steps: u64) -> ExitCode {
    let cfg = AlterConfig {
        admin_url: url.to_string(),
        seed,
        steps,
    };
    let start = std::time::Instant::now();
    let join = |m: &mut dyn Iterator<Item = String>| m.collect::<Vec<_>>().join(", ");
    match run_alter(&cfg) {
        Ok(r) => {
            println!(
                "oracle alter: seed {seed}, {} steps: ALTERs {}; {} writes (0 failed, {} during \
                 shadow builds), {} refreshes, {} checks passed; longest shadow build {} ms; \
                 refreshes by action: {}; {:.1}s",
                r.steps,
                join(&mut r.alters.iter().map(|(k, n)| format!("{k} {n}"))),
                r.writes,
                r.writes_during_builds,
                r.refreshes,
                r.checks,
                r.longest_build_ms,
                join(&mut r.actions.iter().map(|(a, n)| format!("{a} {n}"))),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("oracle alter: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ddl(url: &str, seed: u64, steps: u64) -> ExitCode {
    let cfg = DdlConfig {
        admin_url: url.to_string(),
        seed,
        steps,
    };
    let start = std::time::Instant::now();
    match run_ddl(&cfg) {
        Ok(r) => {
            let kinds: Vec<String> = r.ddl.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "oracle ddl: seed {seed}, {} steps: {} DDL ({}), {} writes (0 failed), {} refreshes, \
                 {} checks passed; {} times a stream table went to NEEDS_REINIT, {} rebuilt, \
                 {} refused while a column was gone, {} created again; refreshes by action: {}; {:.1}s",
                r.steps,
                r.ddl.values().sum::<u64>(),
                kinds.join(", "),
                r.writes,
                r.refreshes,
                r.checks,
                r.flagged,
                r.reinitialised,
                r.refused,
                r.recreated,
                r.actions
                    .iter()
                    .map(|(a, n)| format!("{a} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("oracle ddl: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn state_machine(args: &Args, seed: u64) -> ExitCode {
    let mut cfg = Config::new(args.url.clone(), seed);
    cfg.iterations = args.iterations.unwrap_or(cfg.iterations);
    cfg.writers = args.writers;
    cfg.steps_max = args.steps_max.unwrap_or(cfg.steps_max);
    cfg.only_case = args.case;
    cfg.cases_min = args.cases;
    cfg.keep_going = args.keep_going;
    cfg.regressions = args.regressions.clone();
    if !args.groups.is_empty() {
        let mut groups = Vec::new();
        for name in &args.groups {
            match group(name) {
                Some(g) => groups.push(g),
                None => {
                    let names: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
                    eprintln!("oracle: no group {name} (groups: {})", names.join(", "));
                    return ExitCode::from(2);
                }
            }
        }
        cfg.groups = groups;
    }
    println!(
        "oracle: seed {seed}, {} iterations, groups {}, cases up to {} steps, {} concurrent writers",
        cfg.iterations,
        cfg.groups.iter().map(|g| g.name).collect::<Vec<_>>().join(","),
        cfg.steps_max,
        cfg.writers
    );
    match run(&cfg) {
        Ok(r) => print_report(&cfg, &r),
        Err(cx) => print_counterexample(&cx),
    }
}

fn print_report(cfg: &Config, r: &Report) -> ExitCode {
    let s = &r.stats;
    let families: usize = cfg.groups.iter().map(|g| g.families.len()).sum();
    let expected_full: Vec<&str> = cfg
        .groups
        .iter()
        .flat_map(|g| g.families.iter())
        .filter(|f| f.expect == Expect::Full)
        .map(|f| f.name)
        .collect();
    println!(
        "families: {families}, FULL in AUTO ({}):",
        s.fallbacks.len()
    );
    for (f, why) in &s.fallbacks {
        println!("  {f}: {why}");
    }
    for f in expected_full
        .iter()
        .filter(|f| !s.fallbacks.contains_key(*f))
    {
        println!("  note: {f} is expected FULL but ran DIFFERENTIAL (update its expectation)");
    }
    let created: Vec<String> = s.created.iter().map(|(m, n)| format!("{m} {n}")).collect();
    println!("stream tables created, by mode: {}", created.join(", "));
    println!("refreshes of the twins under test, by action:");
    for (action, n) in &s.actions {
        println!("  {n:>7}  {action}");
    }
    let per_group: Vec<String> = r
        .cases_per_group
        .iter()
        .map(|(g, n)| format!("{g} {n}"))
        .collect();
    println!("cases per group: {}", per_group.join(", "));
    for cx in &r.counterexamples {
        print_counterexample(cx);
    }
    for (sig, n) in &r.repeated {
        println!("{n} more cases failed with the signature {sig}");
    }
    let failed = r.counterexamples.len() as u64 + r.repeated.values().sum::<u64>();
    println!(
        "oracle: {} cases, {} iterations ({} writes, {} refresh+checks), {} concurrent writes \
         ({} conflicts rolled back), {} counterexamples ({} distinct) in {:.1}s (seed {})",
        r.cases,
        s.steps,
        s.writes,
        s.checks,
        s.writer_writes,
        s.conflicts,
        failed,
        r.counterexamples.len(),
        r.seconds,
        cfg.seed
    );
    println!("oracle: {} passed, {failed} failed", s.checks);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_counterexample(cx: &Counterexample) -> ExitCode {
    let f = &cx.failure;
    println!(
        "oracle: FAILED (seed {}, case {}, group {}): {:?} {}: {}",
        cx.seed,
        cx.case,
        cx.group,
        f.kind,
        f.family.unwrap_or("-"),
        f.message
    );
    println!(
        "{} from {} to {} steps; initial rows: {} inserts",
        if cx.shrunk { "shrunk" } else { "not shrunk" },
        cx.original_steps,
        cx.steps.len(),
        cx.initial.len()
    );
    println!("-- steps:");
    for s in &cx.steps {
        println!("--   {s:?}");
    }
    println!("-- replay script ({} statements):", f.script.len());
    for s in &f.script {
        println!("{s}");
    }
    for (i, log) in f.writer_logs.iter().enumerate() {
        let skip = log.len().saturating_sub(200);
        println!(
            "-- concurrent writer {i}: last {} of {} writes",
            log.len() - skip,
            log.len()
        );
        for s in &log[skip..] {
            println!("--   {s}");
        }
    }
    if f.kind == oracle::exec::Kind::Setup && f.message.contains("connect") {
        println!(
            "(the server went away: restarted by a concurrent ci/install or ci/pg? \
             `ci/pg stop oracle; ci/pg start oracle` and rerun)"
        );
    }
    match cx.replayed {
        Some(true) => println!("replayed in a fresh database: fails the same way"),
        Some(false) => println!("replayed in a fresh database: did NOT fail"),
        None => {}
    }
    if let Some(p) = &cx.fixture {
        println!("fixture: {}", p.display());
    }
    println!(
        "oracle: 0 passed, 1 failed (rerun: --seed {} --case {})",
        cx.seed, cx.case
    );
    ExitCode::FAILURE
}

fn print_smith(r: &SmithReport, seed: u64) -> ExitCode {
    println!(
        "sqlsmith: {} statements generated, {} SELECTs ({} skipped: multi-line literals)",
        r.generated, r.selects, r.skipped
    );
    println!(
        "tried without their final top-level LIMIT: {}; without TABLESAMPLE: {}",
        r.limits_removed, r.tablesamples_removed
    );
    let tried = r.selects - r.skipped;
    let fallbacks: u64 = r.full_fallback.values().sum();
    let refused: u64 = r.refused.values().sum();
    println!(
        "tried {tried}: {} accepted DIFFERENTIAL, {fallbacks} refused DIFFERENTIAL but AUTO falls \
         back to FULL, {refused} refused in both modes",
        r.accepted
    );
    for (title, map) in [
        ("AUTO fell back to FULL, by reason", &r.full_fallback),
        ("refused, by SQLSTATE and reason", &r.refused),
        (
            "accepted, but the query itself errors after writes",
            &r.runtime_errors,
        ),
    ] {
        println!("{title}:");
        let mut rows: Vec<(&String, &u64)> = map.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, n) in rows {
            println!("  {n:>5}  {k}");
        }
    }
    if !r.suspicious.is_empty() {
        println!("refusals to look at (an example query each):");
        for (k, q) in &r.suspicious {
            println!("  {k}\n    {q}");
        }
    }
    if r.connection_losses > 0 {
        println!(
            "connection lost {} times (server crash?)",
            r.connection_losses
        );
    }
    for f in &r.failures {
        println!("FAILED {}: {}\n  query: {}", f.name, f.message, f.query);
        match &f.fixture {
            Some(p) => println!("  fixture: {}", p.display()),
            None => {
                println!("  replay script:");
                for s in &f.script {
                    println!("{s}");
                }
            }
        }
    }
    println!(
        "oracle sqlsmith: {} accepted, {} converged, {} failed, {} refresh+checks in {:.1}s (seed {seed})",
        r.accepted,
        r.converged,
        r.failures.len(),
        r.checks,
        r.seconds
    );
    if r.failures.is_empty() && r.connection_losses == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay(args: &Args) -> ExitCode {
    let mut failed = 0;
    for path in &args.replay {
        match fixture::replay_file(&args.url, path) {
            Ok(()) => println!("passes: {}", path.display()),
            Err(e) => {
                failed += 1;
                println!("FAILS: {}: {e}", path.display());
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn rerun(url: &str, dir: &std::path::Path, open: bool) -> ExitCode {
    let fixed = fixture::fixtures_in(dir);
    let mut failed = 0;
    for path in &fixed {
        match fixture::replay_file(url, path) {
            Ok(()) => println!("ok      {}", path.display()),
            Err(e) => {
                failed += 1;
                println!("FAILED  {}: {e}", path.display());
            }
        }
    }
    let open_paths = fixture::fixtures_in(&dir.join("open"));
    if open {
        for path in &open_paths {
            match fixture::replay_file(url, path) {
                Ok(()) => println!(
                    "open, now PASSES (move it up when fixed): {}",
                    path.display()
                ),
                Err(e) => println!("open, still fails: {}: {e}", path.display()),
            }
        }
    }
    println!(
        "oracle regressions: {} fixed fixtures, {} failed; {} open fixtures {}",
        fixed.len(),
        failed,
        open_paths.len(),
        if open {
            "replayed"
        } else {
            "not replayed (--open)"
        }
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
