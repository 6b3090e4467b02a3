//! Compiles `src/utility_hook.c`, the extension's `ProcessUtility` hook: a C function, so that
//! an error raised by the statement it passes on propagates as PostgreSQL raised it (with its
//! CONTEXT, cursor position and SCHEMA/TABLE/CONSTRAINT NAME fields), with no Rust frame in
//! between to catch and re-raise it. The server headers come from `pg_config`:
//! `PGRX_PG_CONFIG_PATH` (set by cargo-pgrx), else `PG_CONFIG`, else Debian's for the
//! selected PostgreSQL version, else `pg_config` on the PATH.

use std::path::PathBuf;
use std::process::Command;

fn pg_config() -> String {
    for var in ["PGRX_PG_CONFIG_PATH", "PG_CONFIG"] {
        if let Ok(p) = std::env::var(var) {
            if !p.is_empty() {
                return p;
            }
        }
    }
    let version = ["17", "16"]
        .into_iter()
        .find(|v| std::env::var_os(format!("CARGO_FEATURE_PG{v}")).is_some())
        .unwrap_or("15");
    let debian = format!("/usr/lib/postgresql/{version}/bin/pg_config");
    if PathBuf::from(&debian).exists() {
        debian
    } else {
        "pg_config".to_string()
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src/utility_hook.c");
    for var in ["PGRX_PG_CONFIG_PATH", "PG_CONFIG"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let config = pg_config();
    let include = match Command::new(&config).arg("--includedir-server").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => {
            println!(
                "cargo:warning={config} --includedir-server failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::process::exit(1);
        }
        Err(e) => {
            println!("cargo:warning=cannot run {config}: {e}");
            std::process::exit(1);
        }
    };
    cc::Build::new()
        .file("src/utility_hook.c")
        .include(include)
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(true)
        .compile("pgt_utility_hook");
}
