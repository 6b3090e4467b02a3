//! The capture trigger (docs/CORRECTNESS.md §1): one C function, `pgtrickle.capture_changes`,
//! attached by cdc.rs to every source as `AFTER INSERT | UPDATE | DELETE | TRUNCATE … FOR EACH
//! STATEMENT` with transition tables. It copies the statement's rows into the source's change
//! buffer and, on a source with IMMEDIATE dependents, maintains them in the writing
//! statement. Apart from cdc.rs (buffers and triggers) because it calls the refresh, which
//! itself reads the buffers.

use engine::names;
use pgrx::prelude::*;

use crate::cdc::MAINTAIN_ARG;
use crate::error::{required, PgTrickleError};

/// How many buffer rows [`capture_changes`] hands to the table access method at once (as
/// `COPY` does: one WAL record and one page lock per page rather than per row).
const CAPTURE_BATCH: usize = 1000;

unsafe extern "C-unwind" {
    /// `nextval()` without the privilege check (commands/sequence.c).
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// The next value of sequence `relid`, without the caller's privilege check: writers have
/// none on pg_trickle's sequence, and the capture numbers their rows on pg_trickle's behalf
/// (as the SECURITY DEFINER capture function of 0.34 did). Behind pgrx's guard, an ERROR in
/// it becomes a Rust panic, as for every `pg_sys` function.
fn next_value(relid: pg_sys::Oid) -> i64 {
    // SAFETY: a plain C call with value arguments (an existing sequence's OID, looked up in
    // this statement); the guard turns its longjmp into a panic.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| nextval_internal(relid, false)) }
}

extension_sql!(
    r#"
-- Only pg_trickle attaches the capture trigger (as the extension's owner); a trigger function
-- is never called directly.
REVOKE ALL ON FUNCTION pgtrickle.capture_changes() FROM PUBLIC;
"#,
    name = "capture_changes_grants",
    requires = [capture_changes]
);

/// The capture trigger of every source: `AFTER INSERT | UPDATE | DELETE | TRUNCATE … FOR EACH
/// STATEMENT` with transition tables, attached by `cdc::install_triggers`. It copies the
/// statement's old rows as `D` and new rows as `I` into the source's buffer, reading the
/// transition tables directly and inserting in batches through the table access method (no
/// SQL statement, no PL/pgSQL, no per-row sequence call): every row of one statement carries
/// the same `__pgt_seq` and the writer's top-level xid, which is all the frontier needs
/// (frontier.rs: a refresh consumes its own transaction's rows whole statements at a time).
///
/// Buffer columns are matched to source columns by name and type; the source-DDL handling
/// (`reconcile`) keeps them equal. If they ever differ, or capture is paused or disabled, the
/// statement leaves one `P` marker (its dependents' next refresh is FULL) rather than failing
/// the user's write (INV-8). With argument `maintain`, the source's IMMEDIATE dependents are
/// then refreshed, as pg_trickle's owner, in the writing statement (INV-5), except while
/// capture is paused.
#[pg_trigger]
fn capture_changes<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, PgHeapTupleError> {
    // Raised here rather than returned: pgrx reports a trigger's Err as an internal error
    // (XX000), which would hide the SQLSTATE of a failing IMMEDIATE maintenance.
    if let Err(e) = capture(trigger) {
        pgrx::pg_sys::panic::ErrorReport::from(e).report(PgLogLevel::ERROR);
    }
    Ok(None)
}

/// The body of [`capture_changes`].
fn capture(trigger: &pgrx::PgTrigger<'_>) -> Result<(), PgTrickleError> {
    let bad = |e: pgrx::trigger_support::PgTriggerError| PgTrickleError::Internal(e.to_string());
    let data = trigger.trigger_data();
    let event = data.tg_event;
    if event & pg_sys::TRIGGER_EVENT_ROW != 0 || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != 0 {
        return Err(PgTrickleError::Internal(
            "pgtrickle.capture_changes() must be an AFTER … FOR EACH STATEMENT trigger".into(),
        ));
    }
    let source = trigger.relid().map_err(bad)?;
    let maintain = trigger
        .extra_args()
        .map_err(bad)?
        .iter()
        .any(|a| a == MAINTAIN_ARG);
    // While capture is paused (or pg_trickle disabled), IMMEDIATE dependents are not
    // maintained either: the marker makes their next maintenance FULL.
    let paused = crate::config::CDC_PAUSED.get() || !crate::config::ENABLED.get();
    // SAFETY: called by the trigger manager with its TriggerData: the relation and the
    // transition tuplestores stay valid for the call.
    unsafe {
        let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
        let tables: &[(u8, *mut pg_sys::Tuplestorestate)] = match op {
            pg_sys::TRIGGER_EVENT_INSERT => &[(b'I', data.tg_newtable)],
            pg_sys::TRIGGER_EVENT_DELETE => &[(b'D', data.tg_oldtable)],
            pg_sys::TRIGGER_EVENT_UPDATE => &[(b'D', data.tg_oldtable), (b'I', data.tg_newtable)],
            _ => &[],
        };
        write_buffer(source, (*data.tg_relation).rd_att, op, tables, paused)?;
    }
    if maintain && !paused {
        maintain_immediate(source)?;
    }
    Ok(())
}

/// Refreshes the IMMEDIATE dependents of `source` in pg_trickle's order (by id), as the
/// extension's owner, as `refresh_stream_table` would (a dependent waiting for
/// reinitialisation is reinitialised). The catalog is read at every statement, by a statement
/// prepared once per session, so a dependent dropped with `DROP TABLE` (without rewriting the
/// triggers) is simply not found.
fn maintain_immediate(source: pg_sys::Oid) -> Result<(), PgTrickleError> {
    use crate::refresh::cache;
    use crate::stream_table::{self, Status};
    crate::roles::as_extension(|| {
        let stmt = cache::statement(
            "SELECT s.pgt_id FROM pgtrickle.pgt_dependencies d \
             JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
             WHERE d.source_relid = $1 AND s.effective_mode = 'IMMEDIATE' \
               AND s.status = 'ACTIVE' ORDER BY s.pgt_id",
            &[cache::OID],
        )?;
        let ids: Vec<i64> = Spi::connect(|client| {
            client
                .select(&*stmt, None, &[source.into()])?
                .map(|r| required(r.get::<i64>(1)?, "pgt_stream_tables.pgt_id"))
                .collect::<Result<Vec<_>, PgTrickleError>>()
        })?;
        for id in ids {
            crate::settings::with_standard_strings(|| {
                // Locked now; gone if it was dropped since the query above.
                let Some(st) = stream_table::find_by_id(id, true)? else {
                    return Ok(());
                };
                if st.status == Status::NeedsReinit {
                    crate::source_ddl::reinitialise(&st)
                } else {
                    crate::refresh::refresh(&st, None).map(|_| ())
                }
            })?;
        }
        Ok(())
    })
}

/// The OIDs of `names` in pg_trickle's buffer schema (one lookup of the schema), or an error
/// naming the invariant.
fn buffer_schema_relations<const N: usize>(
    names: [&str; N],
) -> Result<[pg_sys::Oid; N], PgTrickleError> {
    let schema = std::ffi::CString::new(names::BUFFER_SCHEMA)
        .map_err(|_| PgTrickleError::Internal("schema name contains a NUL byte".into()))?;
    // SAFETY: syscache lookups by NUL-terminated name; a missing schema is an ERROR
    // (missing_ok false), a missing relation InvalidOid.
    let ns = unsafe { pg_sys::get_namespace_oid(schema.as_ptr(), false) };
    let mut oids = [pg_sys::InvalidOid; N];
    for (oid, name) in oids.iter_mut().zip(names) {
        let rel = std::ffi::CString::new(name)
            .map_err(|_| PgTrickleError::Internal("relation name contains a NUL byte".into()))?;
        // SAFETY: as above.
        *oid = unsafe { pg_sys::get_relname_relid(rel.as_ptr(), ns) };
        if *oid == pg_sys::InvalidOid {
            return Err(PgTrickleError::Internal(format!(
                "{}.{name} is missing: a capture trigger exists only together with its source's \
                 change buffer and pg_trickle's change sequence",
                names::BUFFER_SCHEMA
            )));
        }
    }
    Ok(oids)
}

/// For each buffer column (after the three bookkeeping columns), the index of the source
/// column it captures; `None` when some buffer column has no source column of its name and
/// type (the buffer and the source disagree, see [`capture_changes`]). Dropped buffer columns
/// map to `usize::MAX` (stored NULL).
unsafe fn column_map(buffer: pg_sys::TupleDesc, source: pg_sys::TupleDesc) -> Option<Vec<usize>> {
    // SAFETY: the caller passes valid pointers (see the function doc).
    unsafe {
        let battrs = (*buffer).attrs.as_slice((*buffer).natts as usize);
        let sattrs = (*source).attrs.as_slice((*source).natts as usize);
        let meta_ok = names::BUFFER_META.iter().enumerate().all(|(i, m)| {
            battrs
                .get(i)
                .is_some_and(|a| pg_sys::name_data_to_str(&a.attname) == *m)
        });
        if !meta_ok {
            return None;
        }
        let mut map = Vec::with_capacity(battrs.len() - names::BUFFER_META.len());
        for b in &battrs[names::BUFFER_META.len()..] {
            if b.attisdropped {
                map.push(usize::MAX);
                continue;
            }
            let name = pg_sys::name_data_to_str(&b.attname);
            let found = sattrs.iter().position(|s| {
                !s.attisdropped
                    && s.atttypid == b.atttypid
                    && pg_sys::name_data_to_str(&s.attname) == name
            })?;
            map.push(found);
        }
        Some(map)
    }
}

/// Writes one statement's capture into the buffer of `source`: the rows of `tables` (op
/// letter, transition tuplestore in the source's row type `source_desc`), or a single `T`
/// (TRUNCATE, `op`) or `P` (`paused`, or buffer and source disagree) row.
unsafe fn write_buffer(
    source: pg_sys::Oid,
    source_desc: pg_sys::TupleDesc,
    op: u32,
    tables: &[(u8, *mut pg_sys::Tuplestorestate)],
    paused: bool,
) -> Result<(), PgTrickleError> {
    let buffer = names::buffer_table(source.to_u32());
    let [buffer_oid, sequence] = buffer_schema_relations([&buffer, names::BUFFER_SEQUENCE])?;
    let seq = next_value(sequence);
    // SAFETY: the caller passes the trigger's valid descriptor and tuplestores.
    unsafe {
        let rel = pg_sys::table_open(buffer_oid, pg_sys::RowExclusiveLock as i32);
        let xid = pg_sys::GetTopFullTransactionId().value;
        let map = column_map((*rel).rd_att, source_desc).filter(|_| !paused);

        let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
            .cast::<pg_sys::ResultRelInfo>();
        (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
        pg_sys::InitResultRelInfo(rri, rel, 1, std::ptr::null_mut(), 0);
        pg_sys::ExecOpenIndices(rri, false);
        let estate = pg_sys::CreateExecutorState();
        let bistate = pg_sys::GetBulkInsertState();
        let cid = pg_sys::GetCurrentCommandId(true);
        let natts = (*(*rel).rd_att).natts as usize;
        let mut slots: Vec<*mut pg_sys::TupleTableSlot> = Vec::new();
        let mut used = 0usize;

        // Stores one buffer row into the next free slot (its values copied into the slot's own
        // memory, so the source row may be released), flushing a full batch first.
        let mut put = |letter: u8, row: Option<(*mut pg_sys::TupleTableSlot, &[usize])>| {
            if used == CAPTURE_BATCH {
                flush(rel, rri, estate, bistate, cid, &slots[..used]);
                used = 0;
            }
            if used == slots.len() {
                slots.push(pg_sys::table_slot_create(rel, std::ptr::null_mut()));
            }
            let slot = slots[used];
            pg_sys::ExecClearTuple(slot);
            let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            values[0] = pg_sys::Datum::from(seq);
            values[1] = pg_sys::Datum::from(xid);
            values[2] = pg_sys::Datum::from(letter as i8);
            nulls[..3].fill(false);
            nulls[3..].fill(true);
            if let Some((src, map)) = row {
                let svalues = (*src).tts_values;
                let snulls = (*src).tts_isnull;
                for (k, &from) in map.iter().enumerate() {
                    if from != usize::MAX {
                        values[3 + k] = *svalues.add(from);
                        nulls[3 + k] = *snulls.add(from);
                    }
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            // ExecMaterializeSlot, an inline function of the C headers.
            if let Some(materialize) = (*(*slot).tts_ops).materialize {
                materialize(slot);
            }
            used += 1;
        };

        // What the statement leaves: a marker row (`P`: paused, or the buffer disagrees with
        // its source; `T`: TRUNCATE), or its rows through the column map.
        match &map {
            None => put(b'P', None),
            Some(_) if op == pg_sys::TRIGGER_EVENT_TRUNCATE => put(b'T', None),
            Some(map) => {
                let src =
                    pg_sys::MakeSingleTupleTableSlot(source_desc, &pg_sys::TTSOpsMinimalTuple);
                let snatts = (*source_desc).natts;
                for &(letter, store) in tables {
                    if store.is_null() {
                        return Err(PgTrickleError::Internal(
                            "a capture trigger fired without its transition table".into(),
                        ));
                    }
                    // A read pointer of its own: other AFTER triggers of the statement read the
                    // same tuplestore.
                    let ptr = pg_sys::tuplestore_alloc_read_pointer(
                        store,
                        pg_sys::EXEC_FLAG_REWIND as i32,
                    );
                    pg_sys::tuplestore_select_read_pointer(store, ptr);
                    pg_sys::tuplestore_rescan(store);
                    while pg_sys::tuplestore_gettupleslot(store, true, false, src) {
                        if snatts > 0 {
                            pg_sys::slot_getsomeattrs_int(src, snatts);
                        }
                        put(letter, Some((src, map)));
                    }
                }
                pg_sys::ExecDropSingleTupleTableSlot(src);
            }
        }
        flush(rel, rri, estate, bistate, cid, &slots[..used]);
        for slot in slots {
            pg_sys::ExecDropSingleTupleTableSlot(slot);
        }
        pg_sys::FreeBulkInsertState(bistate);
        pg_sys::table_finish_bulk_insert(rel, 0);
        pg_sys::ExecCloseIndices(rri);
        pg_sys::FreeExecutorState(estate);
        pg_sys::table_close(rel, pg_sys::NoLock as i32);
        // The rows are visible to what the transaction runs next (IMMEDIATE maintenance reads them
        // in this trigger), as after an INSERT statement.
        pg_sys::CommandCounterIncrement();
        Ok(())
    }
}

/// Inserts a batch of buffer rows and their index entries.
unsafe fn flush(
    rel: pg_sys::Relation,
    rri: *mut pg_sys::ResultRelInfo,
    estate: *mut pg_sys::EState,
    bistate: pg_sys::BulkInsertState,
    cid: pg_sys::CommandId,
    slots: &[*mut pg_sys::TupleTableSlot],
) {
    // SAFETY: the caller passes valid pointers (see the function doc).
    unsafe {
        if slots.is_empty() {
            return;
        }
        pg_sys::table_multi_insert(
            rel,
            slots.as_ptr().cast_mut(),
            slots.len() as i32,
            cid,
            0,
            bistate,
        );
        for &slot in slots {
            pg_sys::ExecInsertIndexTuples(
                rri,
                slot,
                estate,
                false,
                false,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            pg_sys::ExecClearTuple(slot);
        }
    }
}
