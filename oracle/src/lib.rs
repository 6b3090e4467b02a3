//! Differential oracle over a live server (INV-1): random writes to small schemas and, after
//! every refresh, in the refresh's own snapshot, the check that each stream table equals its
//! defining query as a multiset (EXCEPT ALL both ways, hidden `__pgt_` columns excluded) and
//! that the twins of a query (DIFFERENTIAL/AUTO and FULL) agree. Write sequences come from
//! proptest-state-machine and shrink; counterexamples become SQL fixtures under
//! `oracle/regressions/`. `smith` runs sqlsmith's random queries through the same check;
//! `ddl` interleaves random DDL on the sources with writes and refreshes; `alter` random
//! changes of defining queries, in place and by shadow builds.

pub mod alter;
pub mod check;
pub mod ddl;
pub mod exec;
pub mod families;
pub mod fixture;
pub mod run;
pub mod schema;
pub mod smith;
pub mod step;
pub mod writer;
