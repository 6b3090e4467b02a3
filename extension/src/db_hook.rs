//! Keeps the background workers out of the way of database-level DDL. `DROP DATABASE`,
//! `ALTER DATABASE … RENAME TO`, `ALTER DATABASE … SET TABLESPACE` and `CREATE DATABASE …
//! TEMPLATE` refuse to run while other sessions are connected to the database (55006), and
//! pg_trickle's scheduler (and refresh workers) may be connected to a database with stream
//! tables. A `ProcessUtility` hook asks the workers of the named database to exit (SIGTERM;
//! a running refresh is rolled back) before PostgreSQL checks for other sessions, which it
//! does for up to five seconds; the launcher starts none there for the next six seconds, and
//! never in a database that no longer exists.
//!
//! The hook itself is C (`utility_hook.c`, built by build.rs): an error raised by the statement
//! it passes on must reach the client untouched, with its CONTEXT, cursor position and
//! SCHEMA/TABLE/CONSTRAINT NAME, which a Rust frame catching and re-raising it would lose. It
//! calls [`pgt_before_database_ddl`] for the four statements above and nothing else.

use std::ffi::{c_char, CStr};

use pgrx::prelude::*;
use pgrx::PgList;

extern "C-unwind" {
    /// Saves the previous `ProcessUtility_hook` and installs the C trampoline.
    fn pgt_install_utility_hook();
}

/// Installs the hook; called once from `_PG_init`.
pub(crate) fn install() {
    // SAFETY: `_PG_init` runs once per process on its main thread, before any statement; the
    // C function only saves and sets `ProcessUtility_hook`, chaining to the previous hook as
    // the documented protocol requires.
    unsafe { pgt_install_utility_hook() }
}

/// Called by the C hook before `DROP DATABASE`, `ALTER DATABASE … RENAME TO` / `SET
/// TABLESPACE` and `CREATE DATABASE … TEMPLATE`: stops pg_trickle's workers in the database
/// the statement needs free of sessions. An error here is raised as a PostgreSQL error
/// (`#[pg_guard]`) before the statement runs.
///
/// # Safety
/// `pstmt` is the `PlannedStmt` PostgreSQL passed to the hook.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn pgt_before_database_ddl(pstmt: *mut pg_sys::PlannedStmt) {
    // SAFETY: PostgreSQL passes a valid PlannedStmt whose utilityStmt is a parse node.
    if let Some(name) = unsafe { database_needing_no_sessions(pstmt) } {
        stop_workers_in(&name);
    }
}

/// The database a statement needs to be free of other sessions, if it is one of those.
///
/// # Safety
/// `pstmt` must be a valid `PlannedStmt` (its `utilityStmt` null or a parse node).
unsafe fn database_needing_no_sessions(pstmt: *mut pg_sys::PlannedStmt) -> Option<String> {
    // SAFETY: the caller guarantees `pstmt`; each cast below follows the node's tag.
    unsafe {
        let node = pstmt.as_ref()?.utilityStmt;
        if node.is_null() {
            return None;
        }
        match (*node).type_ {
            pg_sys::NodeTag::T_DropdbStmt => c_string((*node.cast::<pg_sys::DropdbStmt>()).dbname),
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = &*node.cast::<pg_sys::RenameStmt>();
                if stmt.renameType == pg_sys::ObjectType::OBJECT_DATABASE {
                    c_string(stmt.subname)
                } else {
                    None
                }
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                option_value((*node.cast::<pg_sys::CreatedbStmt>()).options, "template")
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let stmt = &*node.cast::<pg_sys::AlterDatabaseStmt>();
                option_value(stmt.options, "tablespace").and_then(|_| c_string(stmt.dbname))
            }
            _ => None,
        }
    }
}

/// A C string as an owned `String` (None for a null pointer).
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
unsafe fn c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated by the caller's guarantee.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The value of option `name` in a list of `DefElem`s, when it has one.
///
/// # Safety
/// `options` must be null or a valid `List` of `DefElem` nodes.
unsafe fn option_value(options: *mut pg_sys::List, name: &str) -> Option<String> {
    // SAFETY: a List of DefElem pointers by the caller's guarantee.
    let list = unsafe { PgList::<pg_sys::DefElem>::from_pg(options) };
    let found = list.iter_ptr().find_map(|d| {
        // SAFETY: every element is a DefElem; `defGetString` reads its (non-null) argument
        // node, as PostgreSQL's own option parsing does.
        unsafe {
            let def = d.as_ref()?;
            if c_string(def.defname)? != name || def.arg.is_null() {
                return None;
            }
            c_string(pg_sys::defGetString(d))
        }
    });
    found
}

/// Keeps schedulers out of database `name` for a few seconds and sends SIGTERM to
/// pg_trickle's workers connected to it (none if it does not exist). They exit at their next
/// interrupt check (a refresh in progress rolls back); PostgreSQL then finds the database
/// free.
fn stop_workers_in(name: &str) {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: a plain catalog lookup by name; `missing_ok` makes it return InvalidOid instead
    // of raising an error for a database that does not exist.
    let oid = unsafe { pg_sys::get_database_oid(cname.as_ptr(), true) };
    if oid == pg_sys::InvalidOid || !crate::shared::available() {
        return;
    }
    crate::shared::pause(oid.to_u32(), crate::worker::DDL_PAUSE_MS);
    let pids: Vec<i32> = crate::shared::snapshot()
        .slots
        .iter()
        .filter(|s| s.running() && s.db_oid == oid.to_u32())
        .map(|s| s.pid)
        .collect();
    for pid in pids {
        // SAFETY: `kill` with the pid of one of pg_trickle's own background workers (same OS
        // user), as it recorded it in shared memory; SIGTERM makes it exit. A pid
        // that exited in the meantime makes `kill` fail harmlessly.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}
