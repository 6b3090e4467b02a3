//! A concurrent writer of `--concurrent` runs: its own connection writing random writes of
//! the case's group from its own seed until told to stop. Deadlocks, serialization failures
//! and unique violations caused by the other connections are rolled back and counted.

use std::sync::atomic::{AtomicBool, Ordering};

use postgres::{Client, NoTls};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRng, TestRunner};

use crate::exec::{describe, sqlstate, CONFLICT_CODES};
use crate::families::Group;
use crate::step::write_strategy;

/// Writes a writer makes at most in one case (a bound, should a case never end).
pub const WRITES_MAX: u64 = 1_000_000;

/// The pause between two writes of a writer, in milliseconds.
pub const PAUSE_MS: std::ops::RangeInclusive<u64> = 2..=15;

/// What a writer did.
#[derive(Debug, Default)]
pub struct Report {
    pub writes: u64,
    pub conflicts: u64,
    pub error: Option<String>,
    pub log: Vec<String>,
}

impl Report {
    pub fn failed(message: &str) -> Self {
        Report {
            error: Some(message.into()),
            ..Report::default()
        }
    }
}

/// A deterministic proptest runner for `seed`.
pub fn seeded_runner(seed: u64, config: Config) -> TestRunner {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(seed, i as u64).to_le_bytes());
    }
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &bytes),
    )
}

/// splitmix64 of `seed` and `i`: independent seeds for cases and writers from one run seed.
pub fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes until `stop` (or [`WRITES_MAX`]).
pub fn write_until(url: &str, group: &'static Group, seed: u64, stop: &AtomicBool) -> Report {
    let mut report = Report::default();
    let mut db = match Client::connect(url, NoTls) {
        Ok(db) => db,
        Err(e) => return Report::failed(&format!("writer connect: {e}")),
    };
    let mut runner = seeded_runner(seed, Config::default());
    let strategy = write_strategy(group);
    let mut pause = seeded_runner(seed ^ 0x5EED, Config::default());
    while !stop.load(Ordering::Relaxed) && report.writes < WRITES_MAX {
        // About as fast as the main connection's steps: unthrottled writers grow every change
        // window to thousands of rows, which tests throughput rather than interleavings.
        let ms = PAUSE_MS
            .new_tree(&mut pause)
            .map_or(*PAUSE_MS.end(), |t| t.current());
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let write = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(e) => return Report::failed(&format!("writer strategy: {e}")),
        };
        let stmts = write.statements();
        let tx = stmts.len() > 1;
        let body = if tx {
            format!("BEGIN; {}; COMMIT", stmts.join("; "))
        } else {
            stmts.join("; ")
        };
        report.log.push(format!("{body};"));
        report.writes += 1;
        if let Err(e) = db.batch_execute(&body) {
            if sqlstate(&e).is_some_and(|c| CONFLICT_CODES.contains(&c)) {
                report.conflicts += 1;
                report.log.push(format!("-- ^ {}", describe(&e)));
                if tx {
                    let _ = db.batch_execute("ROLLBACK");
                }
            } else {
                report.error = Some(format!("writer: {body}: {}", describe(&e)));
                return report;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_seeds_differ_per_index_and_repeat_per_seed() {
        assert_eq!(mix(1, 2), mix(1, 2));
        assert_ne!(mix(1, 2), mix(1, 3));
        assert_ne!(mix(1, 2), mix(2, 2));
    }

    #[test]
    fn seeded_runners_generate_the_same_values() {
        let s = proptest::num::u64::ANY;
        let a = s
            .new_tree(&mut seeded_runner(5, Config::default()))
            .unwrap()
            .current();
        let b = s
            .new_tree(&mut seeded_runner(5, Config::default()))
            .unwrap()
            .current();
        let c = s
            .new_tree(&mut seeded_runner(6, Config::default()))
            .unwrap()
            .current();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
