//! Executable specifications (stateright) of the protocols pg_trickle implements.
//!
//! Each module is one spec: a small state machine with `always` (safety) and `sometimes`
//! (reachability) properties named by their invariant IDs (`docs/invariants.md`). Every spec is
//! parameterised by its sizes, so the tests check small configurations and `model_deep` larger
//! ones; every spec that guards against a naive design also models that design, and the tests
//! assert the checker finds its counterexample.

pub mod immediate;
pub mod join_delta;
pub mod lease;
pub mod refresh;
pub mod zset;
