//! IMMEDIATE spec: two writers on the two sides of a join lose ΔA⋈ΔB unless serialised.

use model::immediate::{ImmediateModel, Serialisation, INV_5};
use stateright::{Checker, Model};

fn spec(serialisation: Serialisation) -> ImmediateModel {
    ImmediateModel {
        txns_per_writer: 2,
        rows: 2,
        keys: 1,
        serialisation,
    }
}

#[test]
fn unserialised_immediate_writers_lose_delta_a_join_delta_b() {
    let checker = spec(Serialisation::None).checker().spawn_bfs().join();
    assert!(checker.discovery(INV_5).is_some());
    assert_eq!(checker.unique_state_count(), 888);
}

#[test]
fn immediate_writers_serialised_by_stream_table_lock_keep_join_exact() {
    let checker = spec(Serialisation::Lock).checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 2_004);
}

#[test]
fn repeatable_read_writer_with_stale_snapshot_fails_instead_of_losing_delta() {
    let checker = spec(Serialisation::LockRepeatableRead)
        .checker()
        .spawn_bfs()
        .join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 1_507);
}

#[test]
fn lock_with_stale_snapshot_still_loses_delta_a_join_delta_b() {
    let checker = spec(Serialisation::LockStaleSnapshot)
        .checker()
        .spawn_bfs()
        .join();
    assert!(checker.discovery(INV_5).is_some());
    assert_eq!(checker.unique_state_count(), 1_818);
}
