//! Runs every spec in configurations larger than the tests pin, and prints state counts and
//! property results: `cargo run -p model --release --bin model_deep [NAME_FILTER]`.
//!
//! Exits non-zero when a property comes out other than expected: an `always` property of a
//! correct design with a counterexample, a `sometimes` property without an example, or a naive
//! variant whose counterexample was not found. A naive variant stops at its first counterexample,
//! so its state count is not a size of its whole space (and varies with thread timing).

use model::immediate::{ImmediateModel, Serialisation, INV_5};
use model::join_delta::{DeltaRule, JoinDeltaModel, INV_4};
use model::lease::{Fencing, LeaseModel, INV_6};
use model::refresh::{Frontier, RefreshModel, SourceRead, INV_1};
use stateright::{Checker, Expectation, HasDiscoveries, Model};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

/// Checks `model` exhaustively; `broken` names the invariant a naive variant must violate
/// (`None` for a correct design). Returns whether every result was as expected.
fn run<M>(name: &str, model: M, broken: Option<&'static str>) -> bool
where
    M: Model + Debug + Send + Sync + 'static,
    M::State: Clone + Debug + Hash + PartialEq + Send + Sync + 'static,
    M::Action: Clone + Debug + PartialEq,
{
    println!("== {name}: {model:?}");
    let properties = model.properties();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let mut builder = model.checker().threads(threads);
    if let Some(invariant) = broken {
        // A naive variant is done once its counterexample is found.
        builder = builder.finish_when(HasDiscoveries::AnyOf([invariant].into()));
    }
    let checker = builder.spawn_bfs().join();
    println!(
        "   {} unique states ({} generated, depth {}) in {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    let mut as_expected = true;
    for p in properties {
        let found = checker.discovery(p.name).is_some();
        let (outcome, ok) = match p.expectation {
            Expectation::Sometimes if found => ("example found", true),
            // A naive variant may stop as soon as its counterexample is found.
            Expectation::Sometimes => ("no example", broken.is_some()),
            _ if found => ("COUNTEREXAMPLE", broken.is_some()),
            _ if broken.is_some() => ("not reached", broken != Some(p.name)),
            _ => ("holds", true),
        };
        as_expected &= ok;
        let mark = if ok { "ok" } else { "UNEXPECTED" };
        println!("   [{mark}] {outcome}: {}", p.name);
    }
    as_expected
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let wanted = |name: &str| name.contains(&filter);
    let mut all_ok = true;
    let refresh_variants = [
        (Frontier::Snapshot, SourceRead::RefreshSnapshot, None),
        (Frontier::IdRange, SourceRead::RefreshSnapshot, Some(INV_1)),
        (Frontier::Snapshot, SourceRead::LatestCommitted, Some(INV_1)),
    ];
    for (txns, writes_max, values) in [(4, 1, 1), (3, 2, 1)] {
        for (frontier, source_read, broken) in refresh_variants {
            let name = format!("refresh/{txns}x{writes_max}/{frontier:?}/{source_read:?}");
            if wanted(&name) {
                let m = RefreshModel {
                    txns,
                    writes_max,
                    values,
                    frontier,
                    source_read,
                };
                all_ok &= run(&name, m, broken);
            }
        }
    }
    for (relations, rows, keys, changes_max) in [(2, 3, 2, 5), (3, 3, 2, 4)] {
        for rule in [DeltaRule::Bilinear, DeltaRule::NoCorrection] {
            let name = format!("join_delta/{relations}-way/{rule:?}");
            let broken = (rule == DeltaRule::NoCorrection).then_some(INV_4);
            if wanted(&name) {
                let m = JoinDeltaModel {
                    relations,
                    rows,
                    keys,
                    changes_max,
                    rule,
                };
                all_ok &= run(&name, m, broken);
            }
        }
    }
    for serialisation in [
        Serialisation::None,
        Serialisation::Lock,
        Serialisation::LockRepeatableRead,
        Serialisation::LockStaleSnapshot,
    ] {
        let name = format!("immediate/{serialisation:?}");
        let naive = matches!(
            serialisation,
            Serialisation::None | Serialisation::LockStaleSnapshot
        );
        if wanted(&name) {
            let m = ImmediateModel {
                txns_per_writer: 4,
                rows: 3,
                keys: 2,
                serialisation,
            };
            all_ok &= run(&name, m, naive.then_some(INV_5));
        }
    }
    for (schedulers, stream_tables, writes_max, time_max) in [(2, 2, 1, 4), (3, 1, 2, 5)] {
        for fencing in [Fencing::Epoch, Fencing::ClockOnly] {
            let name = format!("lease/{schedulers}x{stream_tables}/{fencing:?}");
            let broken = (fencing == Fencing::ClockOnly).then_some(INV_6);
            if wanted(&name) {
                let m = LeaseModel {
                    schedulers,
                    stream_tables,
                    ttl: 2,
                    skew_max: 1,
                    time_max,
                    writes_max,
                    acquisitions_max: 3,
                    fencing,
                };
                all_ok &= run(&name, m, broken);
            }
        }
    }
    if !all_ok {
        eprintln!("model_deep: some property came out other than expected");
        std::process::exit(1);
    }
}
