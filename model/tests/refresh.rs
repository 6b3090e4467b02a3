//! Refresh protocol spec: the snapshot frontier keeps INV-1, INV-2 and INV-3 whatever order
//! writers commit in; the id-range frontier loses a change committed out of id order.

use model::refresh::{Frontier, RefreshModel, INV_1, INV_2, INV_3};
use stateright::{Checker, Model};

fn spec(txns: u8, writes_max: u8, frontier: Frontier) -> RefreshModel {
    RefreshModel {
        txns,
        writes_max,
        values: 2,
        frontier,
    }
}

#[test]
fn snapshot_frontier_never_loses_out_of_order_commit() {
    let checker = spec(2, 2, Frontier::Snapshot).checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 13_177);
}

#[test]
fn snapshot_frontier_holds_with_three_concurrent_writers() {
    let checker = spec(3, 1, Frontier::Snapshot).checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 17_168);
}

#[test]
fn id_range_frontier_loses_out_of_order_commit() {
    let checker = spec(2, 2, Frontier::IdRange).checker().spawn_bfs().join();
    for invariant in [INV_1, INV_2, INV_3] {
        let path = checker
            .discovery(invariant)
            .unwrap_or_else(|| panic!("no counterexample for {invariant}"));
        // Every counterexample needs a refresh that overtook an open lower-id transaction.
        assert_ne!(path.last_state().overtaken, 0, "{invariant}");
    }
    assert_eq!(checker.unique_state_count(), 7_724);
}
