//! The sqllogictest runner for pg_trickle: a `sqllogictest::DB` over the synchronous
//! `postgres` client (`pg`), and the per-file driver (`file`) that gives each `.slt` file a
//! fresh database with the extension created, runs its records and checks that it dropped
//! everything it created. `main.rs` discovers files and prints the summary.

pub mod file;
pub mod pg;
