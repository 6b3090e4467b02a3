//! Who pg_trickle's work runs as (docs/SECURITY.md). Two identities, never mixed in one
//! statement:
//!
//! - **The stream table's owner** (the owner of its storage table) for everything that touches
//!   the user's query, its search_path or its data: the FULL statement, the delta and apply
//!   statements, the temp table the delta lands in. User code in the query (functions,
//!   operators, row-level security policies) therefore runs with the owner's privileges and
//!   never with the scheduler's or a writer's. Statements that run user code do so in a
//!   *security-restricted operation*, as PostgreSQL does for `REFRESH MATERIALIZED VIEW`: the
//!   code cannot change the session it runs in (no `SET ROLE`, no temp objects planted in a
//!   superuser's or another writer's session).
//! - **The extension's owner** (normally a superuser) for pg_trickle's own bookkeeping: the
//!   catalog, capture triggers, change buffers, their grants. These statements run with
//!   `search_path = pg_catalog, pg_temp`, so no name in them can be resolved by a schema a
//!   user controls.
//!
//! A switch is undone when its closure returns, also when it unwinds from an ERROR (the
//! (sub)transaction's abort restores the user id as well).

use pgrx::prelude::*;

use crate::error::PgTrickleError;

/// The role the current statement runs as (`current_user`).
pub(crate) fn current() -> pg_sys::Oid {
    // SAFETY: reads a backend global; valid in any transaction.
    unsafe { pg_sys::GetUserId() }
}

/// The role that owns the extension (and its catalog, schemas and change buffers): the owner
/// of schema `pgtrickle_changes`, which the extension's script creates (and which
/// `REASSIGN OWNED` hands over together with the extension's other objects). Read from the
/// catalog cache, so it costs no statement (IMMEDIATE maintenance asks once per write).
pub(crate) fn extension_owner() -> Result<pg_sys::Oid, PgTrickleError> {
    let schema = std::ffi::CString::new(engine::names::BUFFER_SCHEMA)
        .map_err(|_| PgTrickleError::Internal("schema name contains a NUL byte".into()))?;
    // SAFETY: a syscache lookup by name (missing_ok: InvalidOid when absent), then by OID; the
    // tuple is released after its owner field is copied out.
    let owner = unsafe {
        let ns = pg_sys::get_namespace_oid(schema.as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            None
        } else {
            let tuple = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
                pg_sys::Datum::from(ns),
            );
            if tuple.is_null() {
                None
            } else {
                let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_namespace>(tuple);
                let owner = (*form).nspowner;
                pg_sys::ReleaseSysCache(tuple);
                Some(owner)
            }
        }
    };
    owner.ok_or_else(|| {
        PgTrickleError::Internal(format!(
            "schema {} of pg_trickle is missing in this database",
            engine::names::BUFFER_SCHEMA
        ))
    })
}

/// Restores the user id and security context saved when it was made.
struct Switched {
    user: pg_sys::Oid,
    context: i32,
}

/// How a switch changes the security-restricted operation flag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restriction {
    /// As it was.
    Keep,
    /// Set: the statements run user code.
    Restricted,
    /// Cleared, for one statement of pg_trickle's own that runs no user code (creating the
    /// delta's temp table) — needed when a refresh is nested in another's restricted
    /// statements (an IMMEDIATE stream table over one whose apply wrote its source).
    Lifted,
}

impl Switched {
    fn with(role: pg_sys::Oid, restriction: Restriction) -> Self {
        let (mut user, mut context) = (pg_sys::InvalidOid, 0i32);
        // SAFETY: reads the current user id and security context into locals.
        unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
        let restricted = pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
        let mut flags = context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
        match restriction {
            Restriction::Keep => {}
            Restriction::Restricted => flags |= restricted,
            Restriction::Lifted => flags &= !restricted,
        }
        // SAFETY: `role` is an existing role's OID (an owner read from pg_class or
        // pg_extension in this transaction); the flags only add restrictions to the saved ones,
        // as SECURITY DEFINER functions and REFRESH MATERIALIZED VIEW do.
        unsafe { pg_sys::SetUserIdAndSecContext(role, flags) };
        Switched { user, context }
    }
}

impl Drop for Switched {
    fn drop(&mut self) {
        // SAFETY: puts back exactly what `to` saved.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` as the extension's owner with `search_path = pg_catalog, pg_temp` (pg_trickle's own
/// bookkeeping; see the module comment).
pub(crate) fn as_extension<R>(
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    as_extension_in("pg_catalog, pg_temp", f)
}

/// [`as_extension`] with a stream table's stored search_path (which searches `pg_catalog`
/// first and `pg_temp` last, so that a user's schema can shadow no built-in name), for work
/// that resolves its query's names while writing the catalog (recording dependencies).
pub(crate) fn as_extension_in<R>(
    search_path: &str,
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    let owner = extension_owner()?;
    let _switched = Switched::with(owner, Restriction::Keep);
    crate::settings::with_search_path(search_path, f)
}

/// Runs `f` as `owner` with the stream table's `search_path`. `restricted`: in a
/// security-restricted operation (for statements that run the user's code; creating a temp
/// table is refused there, so the delta's temp table is created outside it, by a statement
/// with no user code).
pub(crate) fn as_owner<R>(
    owner: pg_sys::Oid,
    search_path: &str,
    restricted: bool,
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    let restriction = if restricted {
        Restriction::Restricted
    } else {
        Restriction::Keep
    };
    let _switched = Switched::with(owner, restriction);
    crate::settings::with_search_path(search_path, f)
}

/// Runs `f` as the current role in a security-restricted operation (inside [`as_owner`]).
pub(crate) fn restricted<R>(
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    let _switched = Switched::with(current(), Restriction::Restricted);
    f()
}

/// Runs `f` as the current role outside any security-restricted operation: only for
/// pg_trickle's own statements that run no user code (see [`Restriction::Lifted`]).
pub(crate) fn lifted<R>(
    f: impl FnOnce() -> Result<R, PgTrickleError>,
) -> Result<R, PgTrickleError> {
    let _switched = Switched::with(current(), Restriction::Lifted);
    f()
}

/// The name of role `role`, for messages.
pub(crate) fn name_of(role: pg_sys::Oid) -> String {
    // SAFETY: with noerr = true a missing role yields NULL instead of an ERROR; a non-NULL
    // result is a palloc'd NUL-terminated string.
    let name = unsafe { pg_sys::GetUserNameFromId(role, true) };
    if name.is_null() {
        format!("role {}", role.to_u32())
    } else {
        // SAFETY: checked non-NULL above; NUL-terminated.
        unsafe { std::ffi::CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The OID of the role named `name`, if there is one.
pub(crate) fn oid_of(name: &str) -> Option<pg_sys::Oid> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a syscache lookup by a NUL-terminated name; missing_ok yields InvalidOid.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// Whether `role` may see a stream table's internals (its query, plan, subscriptions): it has
/// the privileges of the owner, or SELECT on the storage table `relid`.
pub(crate) fn may_read(role: pg_sys::Oid, relid: pg_sys::Oid, owner: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups on existing OIDs (the caller holds the stream table's row).
    has_privileges_of(role, owner)
        || unsafe {
            pg_sys::pg_class_aclcheck(relid, role, pg_sys::ACL_SELECT as pg_sys::AclMode)
                == pg_sys::AclResult::ACLCHECK_OK
        }
}

/// Whether `role` has the privileges of `of` (is it, a member of it, or a superuser).
pub(crate) fn has_privileges_of(role: pg_sys::Oid, of: pg_sys::Oid) -> bool {
    // SAFETY: a pure catalog lookup on two role OIDs.
    unsafe { pg_sys::has_privs_of_role(role, of) }
}

/// 42501 unless `caller` has the privileges of `owner` (is it, a member of it, or a
/// superuser): only they may alter, refresh or drop a stream table, as for a table.
pub(crate) fn check_owner(
    caller: pg_sys::Oid,
    owner: pg_sys::Oid,
    stream_table: &str,
) -> Result<(), PgTrickleError> {
    if has_privileges_of(caller, owner) {
        Ok(())
    } else {
        Err(PgTrickleError::NotOwner {
            stream_table: stream_table.to_string(),
        })
    }
}

/// Whether row-level security applies to `owner` reading `relid` (PostgreSQL's own test:
/// enabled on the table, and `owner` neither a superuser, nor BYPASSRLS, nor the table's
/// owner unless it is forced).
pub(crate) fn row_security_applies(relid: pg_sys::Oid, owner: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup; with noError = true it raises no ERROR.
    let rls = unsafe { pg_sys::check_enable_rls(relid, owner, true) };
    rls == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
}

/// A table privilege granted to a role other than the table's owner, as `aclexplode` reports
/// it: the privilege keyword, the grantee as SQL (PUBLIC or a quoted role name) and whether
/// it may be granted on.
pub(crate) struct TableGrant {
    privilege: String,
    grantee: String,
    grantable: bool,
}

impl TableGrant {
    /// The GRANT statement giving the same privilege on `table` (qualified and quoted).
    pub(crate) fn statement(&self, table: &str) -> String {
        debug_assert!(
            self.privilege
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == ' '),
            "a privilege is one of PostgreSQL's keywords"
        );
        format!(
            "GRANT {} ON TABLE {table} TO {}{}",
            self.privilege,
            self.grantee,
            if self.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            }
        )
    }
}

/// The table privileges granted on `relid` to roles other than its owner (column privileges
/// are not included): what a shadow build's swap and a restore carry to the new storage.
pub(crate) fn table_grants(relid: pg_sys::Oid) -> Result<Vec<TableGrant>, PgTrickleError> {
    Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT a.privilege_type::text, \
                            CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                                 ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, \
                            a.is_grantable \
                     FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a \
                    WHERE c.oid = {} AND a.grantee <> c.relowner ORDER BY 1, 2",
                    relid.to_u32()
                ),
                None,
                &[],
            )?
            .map(|r| {
                Ok(TableGrant {
                    privilege: crate::error::required(
                        r.get::<String>(1)?,
                        "aclexplode().privilege_type",
                    )?,
                    grantee: crate::error::required(r.get::<String>(2)?, "aclexplode().grantee")?,
                    grantable: crate::error::required(
                        r.get::<bool>(3)?,
                        "aclexplode().is_grantable",
                    )?,
                })
            })
            .collect()
    })
}
