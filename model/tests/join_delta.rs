//! Join delta spec: the bilinear rule with its correction term equals recompute for 2- and
//! 3-way joins under simultaneous changes on every side; without the correction term it does
//! not, and the simultaneous delete leaves a phantom row.

use model::join_delta::{DeltaRule, JoinDeltaAction, JoinDeltaModel, JoinDeltaState, INV_4};
use stateright::{Checker, Model};

fn spec(relations: usize, changes_max: u8, rule: DeltaRule) -> JoinDeltaModel {
    JoinDeltaModel {
        relations,
        rows: 2,
        keys: 1,
        changes_max,
        rule,
    }
}

/// Runs `actions` from the initial state whose relations hold `before`.
fn window(m: &JoinDeltaModel, before: &[u8], actions: Vec<JoinDeltaAction>) -> JoinDeltaState {
    let mut s = m
        .init_states()
        .into_iter()
        .find(|s| s.before == before)
        .expect("every subset is an initial state");
    for a in actions {
        s = m.next_state(&s, a).expect("enabled action");
    }
    s
}

#[test]
fn two_way_join_delta_matches_recompute_after_simultaneous_changes() {
    let checker = spec(2, 3, DeltaRule::Bilinear).checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 560);
}

#[test]
fn three_way_join_delta_matches_recompute_after_simultaneous_changes() {
    let checker = spec(3, 4, DeltaRule::Bilinear).checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 13_440);
}

#[test]
fn two_way_join_delta_without_correction_double_counts() {
    let checker = spec(2, 3, DeltaRule::NoCorrection)
        .checker()
        .spawn_bfs()
        .join();
    let path = checker.discovery(INV_4).expect("counterexample");
    let changed = path.last_state().delta.iter().filter(|d| !d.is_empty());
    assert!(changed.count() >= 2, "needs changes on two sides at once");
    assert_eq!(checker.unique_state_count(), 560);
}

#[test]
fn three_way_join_delta_without_correction_double_counts() {
    let checker = spec(3, 4, DeltaRule::NoCorrection)
        .checker()
        .spawn_bfs()
        .join();
    let path = checker.discovery(INV_4).expect("counterexample");
    let changed = path.last_state().delta.iter().filter(|d| !d.is_empty());
    assert!(changed.count() >= 2, "needs changes on two sides at once");
    assert_eq!(checker.unique_state_count(), 8_108);
}

#[test]
fn ec01_insert_then_delete_colliding_with_delete_leaves_no_phantom_row() {
    use JoinDeltaAction::{Delete, Insert};
    let m = spec(2, 3, DeltaRule::Bilinear);
    let s = window(
        &m,
        &[0b01, 0b01],
        vec![
            Insert { rel: 0, row: 1 },
            Delete { rel: 0, row: 1 },
            Delete { rel: 1, row: 0 },
        ],
    );
    let delta = m.incremental(&s);
    assert_eq!(delta, m.expected(&s));
    assert_eq!(
        delta.weight(&vec![0, 0]),
        -1,
        "the joined row (a0, b0) goes"
    );
    assert_eq!(delta.iter().count(), 1);
}

#[test]
fn simultaneous_delete_without_correction_leaves_phantom_row() {
    use JoinDeltaAction::Delete;
    let naive = spec(2, 2, DeltaRule::NoCorrection);
    let deletes = || vec![Delete { rel: 0, row: 0 }, Delete { rel: 1, row: 0 }];
    let s = window(&naive, &[0b01, 0b01], deletes());
    // Both post-change sides are empty, so both naive terms vanish and (a0, b0) stays.
    assert!(naive.incremental(&s).is_empty());
    assert_eq!(naive.expected(&s).weight(&vec![0, 0]), -1);
    let exact = spec(2, 2, DeltaRule::Bilinear);
    let s = window(&exact, &[0b01, 0b01], deletes());
    assert_eq!(exact.incremental(&s), exact.expected(&s));
}
