//! Differential oracle over a live server: random writes to a small schema, refreshes of
//! stream tables of every operator family, and after every refresh, in the refresh's own
//! snapshot, the check that each stream table equals its defining query as a multiset (EXCEPT
//! ALL both ways, hidden `__pgt_` columns excluded) — INV-1. A FULL twin of each query is
//! checked the same way, so DIFFERENTIAL and FULL also agree.

pub mod families;
pub mod rng;
pub mod run;
