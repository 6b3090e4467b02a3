//! `oracle`: runs the differential oracle against a live server and prints what it found.
//! Usage: oracle --url 'host=… port=… user=postgres dbname=postgres' [--iterations N]
//!        [--seed S] [--concurrent]

use std::process::ExitCode;

use oracle::run::{run, Config};

fn main() -> ExitCode {
    let mut cfg = Config {
        admin_url: String::new(),
        iterations: 300,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        concurrent: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--url" => cfg.admin_url = value(),
            "--iterations" => cfg.iterations = value().parse().unwrap_or(cfg.iterations),
            "--seed" => cfg.seed = value().parse().unwrap_or(cfg.seed),
            "--concurrent" => cfg.concurrent = true,
            _ => {
                eprintln!("usage: oracle --url CONNSTR [--iterations N] [--seed S] [--concurrent]");
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "oracle: seed {} iterations {} concurrent {}",
        cfg.seed, cfg.iterations, cfg.concurrent
    );
    let started = std::time::Instant::now();
    match run(&cfg) {
        Ok(r) => {
            println!(
                "differential ({}): {}",
                r.differential.len(),
                r.differential.join(", ")
            );
            println!("fell back to FULL ({}):", r.full_fallback.len());
            for (f, why) in &r.full_fallback {
                println!("  {f}: {why}");
            }
            println!("refused ({}):", r.refused.len());
            for (f, why) in &r.refused {
                println!("  {f}: {why}");
            }
            println!(
                "oracle: {} writes, {} refresh+checks, 0 mismatches in {:.1}s (seed {})",
                r.writes,
                r.checks,
                started.elapsed().as_secs_f64(),
                cfg.seed
            );
            println!("oracle: {} passed, 0 failed", r.checks);
            ExitCode::SUCCESS
        }
        Err(f) => {
            println!("oracle: FAILED (seed {}): {}", cfg.seed, f.message);
            println!("-- replay script ({} statements):", f.script.len());
            for s in &f.script {
                println!("{s}");
            }
            ExitCode::FAILURE
        }
    }
}
