//! Lease spec: the fencing epoch keeps a holder whose lease was taken over from applying; a
//! clock check alone does not, through clock skew or through a pause before the commit.

use model::lease::{Fencing, LeaseAction, LeaseModel, INV_6, NO_REGRESSION};
use stateright::{Checker, Model};

fn spec(fencing: Fencing, skew_max: i8, stream_tables: u8) -> LeaseModel {
    LeaseModel {
        schedulers: 2,
        stream_tables,
        ttl: 2,
        skew_max,
        time_max: 3,
        writes_max: 1,
        acquisitions_max: 2,
        fencing,
    }
}

#[test]
fn fenced_lease_never_applies_after_takeover() {
    let checker = spec(Fencing::Epoch, 1, 2).checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 275_942);
}

#[test]
fn clock_checked_lease_applies_after_takeover_under_skew() {
    let checker = spec(Fencing::ClockOnly, 1, 1).checker().spawn_bfs().join();
    assert!(checker.discovery(INV_6).is_some());
    assert!(checker.discovery(NO_REGRESSION).is_some());
    assert_eq!(checker.unique_state_count(), 3_794);
}

#[test]
fn clock_checked_lease_applies_after_takeover_without_skew() {
    let checker = spec(Fencing::ClockOnly, 0, 1).checker().spawn_bfs().join();
    let path = checker.discovery(INV_6).expect("counterexample");
    // Without skew the clock check is right when made: the holder must pause (time passes)
    // between checking its clock and its apply committing.
    let steps = path.into_vec();
    let first_stale = steps
        .iter()
        .position(|(s, _)| s.stale_apply)
        .expect("the path reaches a stale apply");
    let Some(LeaseAction::CommitApply(stale)) = steps[first_stale - 1].1 else {
        panic!("a stale apply is made by CommitApply");
    };
    let sent = steps[..first_stale]
        .iter()
        .rposition(|(_, a)| *a == Some(LeaseAction::SendApply(stale)))
        .expect("the stale holder sent its apply");
    let paused = steps[sent..first_stale]
        .iter()
        .any(|(_, a)| *a == Some(LeaseAction::Tick));
    assert!(paused, "no pause between the clock check and the commit");
    assert!(checker.discovery(NO_REGRESSION).is_some());
    assert_eq!(checker.unique_state_count(), 1_116);
}
