//! Per-backend state that keeps a refresh's fixed cost small (docs/BENCHMARK.md): SPI plans
//! kept across refreshes (keyed by their SQL text), and per stream table the engine's plan with
//! its prepared delta and apply statements and a temp table reused for the delta.
//! Invariants: a cached plan is only used while the catalog it was derived from is unchanged
//! — a relcache invalidation of a source or of the storage table drops it (PostgreSQL itself
//! re-plans kept SPI plans whose relations changed); nothing here is borrowed across an SPI
//! call, so an invalidation arriving in the middle of a refresh is never lost.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;

use crate::error::PgTrickleError;

/// Kept statements beyond this many are all dropped (they are re-prepared on use).
const MAX_STATEMENTS: usize = 512;
/// Pending relation invalidations beyond this many become "forget everything".
const MAX_PENDING: usize = 256;

thread_local! {
    static STATEMENTS: RefCell<HashMap<String, Rc<OwnedPreparedStatement>>> =
        RefCell::new(HashMap::new());
    static DIFFS: RefCell<HashMap<(i64, u32), Rc<DiffState>>> = RefCell::new(HashMap::new());
    /// Relations invalidated since the last look, filled by the relcache callback.
    static PENDING: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static FORGET_ALL: Cell<bool> = const { Cell::new(false) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// What a stream table's differential refresh reuses from one refresh to the next.
pub struct DiffState {
    /// The catalog row it was built for; a different query or search_path rebuilds it.
    pub query: String,
    pub search_path: String,
    /// Relations whose invalidation makes it stale: the sources and the storage table.
    pub watched: Vec<u32>,
    /// The temp table the delta is materialised in, and its OID when it was created.
    pub temp_name: String,
    pub temp_oid: pg_sys::Oid,
    /// Fills the temp table from the change window; parameters: the previous frontier.
    pub delta: OwnedPreparedStatement,
    /// Apply the temp table to the storage, in order.
    pub apply: Vec<OwnedPreparedStatement>,
    /// Empties the temp table after use.
    pub clear: OwnedPreparedStatement,
    /// Grouped plans: counts the rows `apply` will insert and delete (run before it when the
    /// stream table has subscriptions).
    pub counts: Option<OwnedPreparedStatement>,
    /// Whether delta rows carry a weight (keyed plans) rather than group changes.
    pub weighted: bool,
    /// Rows deleted from the temp table since it was last truncated: dead rows that later
    /// scans of it still read, until a TRUNCATE gives it a fresh file.
    pub dead_rows: Cell<i64>,
}

/// Relcache invalidation callback: remembers the relation (no allocation-free guarantee is
/// needed, but no SPI and no error may happen here).
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let remembered = PENDING
        .try_with(|p| match p.try_borrow_mut() {
            Ok(mut p) if relid != pg_sys::InvalidOid && p.len() < MAX_PENDING => {
                p.push(relid.to_u32());
                true
            }
            _ => false,
        })
        .unwrap_or(false);
    if !remembered {
        let _ = FORGET_ALL.try_with(|f| f.set(true));
    }
}

fn register_callback() {
    if REGISTERED.with(Cell::get) {
        return;
    }
    // SAFETY: registers a plain function for the life of the backend; the callback touches only
    // this module's thread-local state and never raises an error.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
    }
    REGISTERED.with(|r| r.set(true));
}

/// Drops the per-stream-table states that watch an invalidated relation.
fn apply_invalidations() {
    let forget_all = FORGET_ALL.with(|f| f.replace(false));
    let pending: Vec<u32> = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if !forget_all && pending.is_empty() {
        return;
    }
    // Removed states are dropped after the borrow ends (dropping frees SPI plans).
    let removed: Vec<Rc<DiffState>> = DIFFS.with(|d| {
        let mut d = d.borrow_mut();
        let stale: Vec<(i64, u32)> = d
            .iter()
            .filter(|(_, s)| forget_all || s.watched.iter().any(|w| pending.contains(w)))
            .map(|(k, _)| *k)
            .collect();
        stale.iter().filter_map(|k| d.remove(k)).collect()
    });
    drop(removed);
}

pub fn current_user() -> u32 {
    // SAFETY: reads the backend's current user id, always valid inside a transaction.
    unsafe { pg_sys::GetUserId() }.to_u32()
}

/// The reusable state of stream table `id` for the current user, if it is still valid for
/// `query`, `search_path` and `watched` and its temp table still exists.
pub fn diff_state(
    id: i64,
    query: &str,
    search_path: &str,
    watched: &[u32],
) -> Option<Rc<DiffState>> {
    register_callback();
    apply_invalidations();
    let key = (id, current_user());
    let state = DIFFS.with(|d| d.borrow().get(&key).cloned())?;
    let valid = state.query == query
        && state.search_path == search_path
        && state.watched == watched
        && temp_relid(&state.temp_name) == Some(state.temp_oid);
    if valid {
        return Some(state);
    }
    let removed = DIFFS.with(|d| d.borrow_mut().remove(&key));
    drop(removed);
    None
}

/// Forgets this session's states of stream table `id` (it is being dropped) and returns the
/// names of their delta temp tables, for the caller to drop: a temp table left behind would
/// keep depending on the source's column types (a DROP TYPE would fail) until the session ends.
pub fn forget(id: i64) -> Vec<String> {
    let removed: Vec<Rc<DiffState>> = DIFFS.with(|d| {
        let mut d = d.borrow_mut();
        let keys: Vec<(i64, u32)> = d.keys().filter(|k| k.0 == id).copied().collect();
        keys.iter().filter_map(|k| d.remove(k)).collect()
    });
    removed.iter().map(|s| s.temp_name.clone()).collect()
}

/// Stores the state built for stream table `id` (replacing any other).
pub fn store_diff_state(id: i64, state: Rc<DiffState>) {
    let key = (id, current_user());
    let old = DIFFS.with(|d| d.borrow_mut().insert(key, state));
    drop(old);
}

/// The OID of this session's temp table `name`, if it exists (a catalog cache lookup, no SPI).
pub fn temp_relid(name: &str) -> Option<pg_sys::Oid> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: both functions only read the catalog caches; `missing_ok` makes the namespace
    // lookup return InvalidOid when this session has no temp schema yet.
    let oid = unsafe {
        let ns = pg_sys::LookupExplicitNamespace(c"pg_temp".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            return None;
        }
        pg_sys::get_relname_relid(name.as_ptr(), ns)
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// Prepares `sql` (a data-modifying statement is fine) with parameter types `types`, kept
/// for the life of the backend.
pub fn prepare(sql: &str, types: &[PgOid]) -> Result<OwnedPreparedStatement, PgTrickleError> {
    Ok(Spi::connect(|client| {
        client.prepare_mut(sql, types).map(|p| p.keep())
    })?)
}

/// The kept plan of `sql`, prepared on first use.
pub fn statement(sql: &str, types: &[PgOid]) -> Result<Rc<OwnedPreparedStatement>, PgTrickleError> {
    if let Some(s) = STATEMENTS.with(|m| m.borrow().get(sql).cloned()) {
        return Ok(s);
    }
    let prepared = Rc::new(prepare(sql, types)?);
    let evicted = STATEMENTS.with(|m| {
        let mut m = m.borrow_mut();
        let evicted = if m.len() >= MAX_STATEMENTS {
            std::mem::take(&mut *m)
        } else {
            HashMap::new()
        };
        m.insert(sql.to_string(), prepared.clone());
        evicted
    });
    drop(evicted);
    Ok(prepared)
}

/// Text and bigint parameter types (frontier parameters have their own types, refresh.rs).
pub const TEXT: PgOid = PgOid::BuiltIn(pg_sys::PgBuiltInOids::TEXTOID);
pub const INT8: PgOid = PgOid::BuiltIn(pg_sys::PgBuiltInOids::INT8OID);
pub const OID: PgOid = PgOid::BuiltIn(pg_sys::PgBuiltInOids::OIDOID);
pub const BOOL: PgOid = PgOid::BuiltIn(pg_sys::PgBuiltInOids::BOOLOID);
