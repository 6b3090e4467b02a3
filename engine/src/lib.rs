//! pg_trickle's differential engine: parses a defining query, builds an operator tree, derives
//! delta queries and renders deterministic SQL. Pure Rust: no pgrx, no I/O, no clock.
#![forbid(unsafe_code)]

/// The engine's version, which the extension reports alongside its own.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
