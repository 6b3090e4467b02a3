//! Refresh protocol spec: the snapshot frontier, with the source read in the same snapshot,
//! keeps INV-1, INV-2 and INV-3 whatever order writers commit in; the id-range frontier loses a
//! change committed out of id order, and reading the source in a later snapshot miscounts.

use model::refresh::{query, Frontier, RefreshModel, SourceRead, INV_1, INV_2, INV_3};
use stateright::{Checker, Model};

fn spec(txns: u8, writes_max: u8, frontier: Frontier, source_read: SourceRead) -> RefreshModel {
    RefreshModel {
        txns,
        writes_max,
        // Three writers insert one value; fewer writers choose between two.
        values: if txns > 2 { 1 } else { 2 },
        frontier,
        source_read,
    }
}

#[test]
fn snapshot_frontier_never_loses_out_of_order_commit() {
    let m = spec(2, 2, Frontier::Snapshot, SourceRead::RefreshSnapshot);
    let checker = m.checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 92_732);
}

#[test]
fn snapshot_frontier_holds_with_three_concurrent_writers() {
    let m = spec(3, 1, Frontier::Snapshot, SourceRead::RefreshSnapshot);
    let checker = m.checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 24_134);
}

#[test]
fn id_range_frontier_loses_out_of_order_commit() {
    let m = spec(2, 2, Frontier::IdRange, SourceRead::RefreshSnapshot);
    let checker = m.checker().spawn_bfs().join();
    for invariant in [INV_1, INV_2, INV_3] {
        let path = checker
            .discovery(invariant)
            .unwrap_or_else(|| panic!("no counterexample for {invariant}"));
        // Every counterexample needs a refresh that overtook an open lower-id transaction.
        assert_ne!(path.last_state().overtaken, 0, "{invariant}");
    }
    assert_eq!(checker.unique_state_count(), 44_011);
}

#[test]
fn source_read_after_refresh_snapshot_breaks_join_stream_table() {
    let m = spec(2, 1, Frontier::Snapshot, SourceRead::LatestCommitted);
    let checker = m.checker().spawn_bfs().join();
    let path = checker.discovery(INV_1).expect("counterexample");
    // The frontier still consumes each change exactly once: only the source read is wrong.
    assert!(checker.discovery(INV_2).is_none());
    // The linear stream table needs no source read and stays exact; the join one does not.
    let last = path.last_state();
    let linear = &last.stream_tables[0];
    assert_eq!(linear.contents, query(0, &last.source_in(linear.snapshot)));
    assert_eq!(checker.unique_state_count(), 3_188);
}
