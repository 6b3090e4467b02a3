//! pg_trickle, the PostgreSQL extension: SQL API, catalog, change capture, refresh executor and
//! background workers, built on the pure-Rust `engine` crate. This is the only crate with
//! `unsafe`; every block carries a `// SAFETY:` comment.

use pgrx::prelude::*;

mod api;
mod capture;
mod catalog;
mod cdc;
mod config;
mod db_hook;
mod definition;
mod error;
mod explain;
mod frontier;
mod inbox;
mod metrics;
mod metrics_server;
mod mode;
mod outbox;
mod pgcatalog;
mod preload;
mod refresh;
mod restore;
mod roles;
mod schedule;
mod scheduler;
mod scheduling;
mod settings;
mod shadow;
mod shared;
mod sla;
mod source_ddl;
mod storage;
mod stream_table;
mod subscriptions;
mod txn;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The schema for change buffers is created with the extension; `pgtrickle` itself is the
// extension's schema (see pg_trickle.control) and PostgreSQL creates it. Everyone may use
// `pgtrickle` (read the catalog, call the functions, which check privileges as the caller);
// the change buffers are reached only through the capture triggers.
extension_sql!(
    r#"
GRANT USAGE ON SCHEMA pgtrickle TO PUBLIC;
CREATE SCHEMA pgtrickle_changes;
REVOKE ALL ON SCHEMA pgtrickle_changes FROM PUBLIC;
COMMENT ON SCHEMA pgtrickle_changes IS 'pg_trickle change buffers (one table per source)';
"#,
    name = "schemas",
    bootstrap
);

// Refuse CREATE EXTENSION in a server that did not preload the library: the scheduler workers
// can only be registered from shared_preload_libraries, so an extension created without it
// would look installed but never refresh anything.
extension_sql!(
    r#"
SELECT pgtrickle.assert_preloaded();
"#,
    name = "preload_check",
    requires = [preload::assert_preloaded]
);

/// Called by PostgreSQL when the library is loaded, either from `shared_preload_libraries` in
/// the postmaster or on first use in a backend.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // A Rust backtrace must never reach a client: pgrx's panic hook captures one into the
    // error's DETAIL when RUST_BACKTRACE (or RUST_LIB_BACKTRACE) is set in the server's
    // environment. PostgreSQL processes are single-threaded, and this runs before any panic.
    std::env::remove_var("RUST_BACKTRACE");
    std::env::remove_var("RUST_LIB_BACKTRACE");
    preload::record_load();
    config::define();
    db_hook::install();
    if preload::loaded_at_startup() {
        shared::init();
        worker::register_launcher();
        if config::METRICS_PORT.get() > 0 {
            metrics_server::register();
        }
    }
}

/// The version of the pg_trickle library loaded in this backend (the crate version).
#[pg_extern]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_returns_crate_version() {
        let v = Spi::get_one::<String>("SELECT pgtrickle.version()");
        assert_eq!(v, Ok(Some(env!("CARGO_PKG_VERSION").to_string())));
    }

    #[pg_test]
    fn create_extension_makes_both_schemas() {
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('pgtrickle', 'pgtrickle_changes')",
        );
        assert_eq!(n, Ok(Some(2)));
    }

    #[pg_test]
    fn change_buffer_schema_is_not_usable_by_public() {
        let usable = Spi::get_one::<bool>(
            "SELECT has_schema_privilege('public', 'pgtrickle_changes', 'USAGE')",
        );
        assert_eq!(usable, Ok(Some(false)));
    }

    #[pg_test]
    fn library_was_preloaded_in_test_server() {
        assert!(crate::preload::loaded_at_startup());
    }
}

/// Required by `cargo pgrx test`: settings for the temporary test server.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_trickle'"]
    }
}
