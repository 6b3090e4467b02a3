//! DDL on sources while they are captured (docs/SQL_REFERENCE.md, "DDL on sources and
//! stream tables"). A `ddl_command_end` event trigger sees every `ALTER TABLE` (rename of the
//! table or a column, `SET SCHEMA`, `ADD`/`DROP COLUMN`, `ALTER COLUMN … TYPE`, constraints,
//! `ATTACH`/`DETACH PARTITION`) of a source or of a stream table's storage and, in the same
//! transaction:
//!
//! 1. follows each dependent stream table ([`follow`]): when the query still means what it
//!    meant — a rename (the query is rendered again from its analysed form, by OID and column
//!    number: definition.rs), an added column, a type change whose result still fits the
//!    storage — it keeps being maintained (FULL once after a type change or an altered
//!    partitioned source); when not — a column it reads was dropped, its result no longer fits
//!    its storage, it can no longer be maintained in the mode asked for — it goes to
//!    NEEDS_REINIT with the reason, and a NOTICE names it;
//! 2. brings the source's buffer and capture trigger in line ([`crate::cdc::reconcile`]).
//!
//! Neither step may fail the user's DDL or later writes: each runs in a subtransaction of the
//! event trigger; a failure of (1) puts that stream table in NEEDS_REINIT, a failure of (2)
//! leaves a capture function that only writes "paused" markers (every dependent's next
//! refresh runs FULL), both with a WARNING. `refresh_stream_table` of a NEEDS_REINIT stream
//! table rebuilds it ([`reinitialise`]).

// `ErrorReport` is pgrx's error type at the SQL boundary (it carries the SQLSTATE); it is
// returned once per call, so its size does not matter here.
#![allow(clippy::result_large_err)]

use engine::render::{quote_ident, quote_literal};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::cdc;
use crate::definition::{self, Definition, ShapeDifference};
use crate::error::PgTrickleError;
use crate::mode;
use crate::pgcatalog::PgCatalog;
use crate::refresh;
use crate::storage::ApplyGuard;
use crate::stream_table::{self, Layout, Mode, RequestedMode, Status, StreamTable};

/// Called by the `ddl_command_end` event trigger for each stream table reading a relation in
/// `relids` (or stored in one), in its own subtransaction. Not for direct use.
#[pg_extern(volatile, parallel_unsafe)]
fn follow_source_ddl(pgt_id: i64, relids: Vec<pg_sys::Oid>) -> Result<(), ErrorReport> {
    Ok(follow(pgt_id, &relids)?)
}

/// Called by the `ddl_command_end` event trigger for each altered source, after its
/// dependents were followed. Not for direct use.
#[pg_extern(volatile, parallel_unsafe)]
fn follow_source_capture(source: pg_sys::Oid) -> Result<(), ErrorReport> {
    Ok(cdc::reconcile(source)?)
}

/// Called by the `sql_drop` event trigger for each source that lost a dependent to a plain
/// `DROP TABLE` of its storage and is still read: the dropped stream table's owner keeps no
/// grant on the buffer it no longer reads. Not executable by PUBLIC.
#[pg_extern(volatile, parallel_unsafe)]
fn sync_buffer_readers(source: pg_sys::Oid) -> Result<(), ErrorReport> {
    Ok(crate::roles::as_extension(|| cdc::grant_readers(source))?)
}

/// A stream table's query after DDL, ready to be stored.
struct Candidate {
    text: String,
    def: Definition,
    plan: Option<engine::Plan>,
    effective_mode: Mode,
    full_reason: Option<String>,
}

/// Follows DDL on `relids` for stream table `id` (see the module comment).
pub fn follow(id: i64, relids: &[pg_sys::Oid]) -> Result<(), PgTrickleError> {
    // The catalog row is locked by a writing statement: inside the event trigger's
    // subtransaction (no xid of its own yet) pgrx would run a SELECT … FOR UPDATE read-only.
    Spi::run(&format!(
        "SELECT 1 FROM pgtrickle.pgt_stream_tables WHERE pgt_id = {id} FOR UPDATE"
    ))?;
    let Some(st) = stream_table::find_by_id(id, false)? else {
        return Ok(());
    };
    if st.status == Status::NeedsReinit {
        return crate::settings::with_search_path(&st.search_path, || follow_names(&st));
    }
    crate::settings::with_search_path(&st.search_path, || match assess(&st, relids)? {
        Ok((candidate, needs_full)) => store(&st, candidate, needs_full),
        Err(reason) => flag(&st, &reason),
    })
}

/// A stream table waiting for reinitialisation only follows renames, so that its query still
/// names its sources when it is rebuilt. Not possible while a column it reads is gone (the
/// analysed query names that column by number) and until the column is back under its name:
/// a rename in that time leaves its stored query naming what is gone, its reinitialisation
/// fails with PostgreSQL's error, and the stream table must be created again.
fn follow_names(st: &StreamTable) -> Result<(), PgTrickleError> {
    let deps = definition::dependencies(st.id)?;
    let mut renamed = false;
    let mut lost = false;
    let mut back_by_name = true;
    for dep in &deps {
        let Some(name_now) = definition::relation_name(dep.source)? else {
            return Ok(());
        };
        renamed |= dep.source_name.as_deref() != Some(name_now.as_str());
        let now = definition::attributes(dep.source)?;
        for (attnum, name) in dep.read_attnums.iter().zip(&dep.read_names) {
            match now.iter().find(|a| a.attnum == *attnum) {
                None => lost = true,
                Some(a) => renamed |= a.name != *name,
            }
            back_by_name &= now.iter().any(|a| a.name == *name);
        }
    }
    if lost {
        // A column it read was dropped. Once a column of that name is back (and nothing it
        // reads was renamed meanwhile), its text means what it meant: it is analysed again,
        // so that later renames are followed.
        if !renamed && back_by_name {
            let def = definition::probe(&st.query)?;
            let before: Vec<pg_sys::Oid> = deps.iter().map(|d| d.source).collect();
            if def.sources == before {
                Spi::run(&format!(
                    "UPDATE pgtrickle.pgt_stream_tables SET query_tree = {} WHERE pgt_id = {}",
                    quote_literal(&def.tree),
                    st.id
                ))?;
                // Capture is recorded anew when it is rebuilt.
                mode::replace_dependencies(st.id, &def, None, Mode::Full)?;
            }
        }
        return Ok(());
    }
    if !renamed {
        return Ok(());
    }
    let text = deparsed(st)?;
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_stream_tables SET defining_query = {} WHERE pgt_id = {}",
        quote_literal(&text),
        st.id
    ))?;
    // The snapshot takes today's names (numbers and types stay: they still tell what the
    // stream table was planned against).
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_dependencies d SET source_name = d.source_relid::regclass::text, \
         read_names = coalesce((SELECT array_agg(a.attname ORDER BY u.i) \
           FROM unnest(d.read_attnums) WITH ORDINALITY AS u(n, i) \
           JOIN pg_catalog.pg_attribute a ON a.attrelid = d.source_relid AND a.attnum = u.n), '{{}}') \
         WHERE d.pgt_id = {}",
        st.id
    ))?;
    Ok(())
}

/// What DDL did to `st`: the query to store and why its next refresh must be FULL (if it
/// must), or why it needs reinitialisation.
#[allow(clippy::type_complexity)]
fn assess(
    st: &StreamTable,
    relids: &[pg_sys::Oid],
) -> Result<Result<(Candidate, Option<String>), String>, PgTrickleError> {
    let deps = definition::dependencies(st.id)?;
    let mut renamed = false;
    let mut retyped: Vec<String> = Vec::new();
    let mut rewritten: Vec<String> = Vec::new();
    let mut partitioned = false;
    // Each source's columns now, read once for the checks below.
    let mut columns_now: Vec<(pg_sys::Oid, Vec<definition::Attribute>)> = Vec::new();
    for dep in &deps {
        let Some(name_now) = definition::relation_name(dep.source)? else {
            continue; // dropped: the sql_drop event trigger deals with it
        };
        let shown = dep.source_name.clone().unwrap_or_else(|| name_now.clone());
        if dep.source_name.as_deref() != Some(name_now.as_str()) {
            renamed = true;
        }
        let now = definition::attributes(dep.source)?;
        for ((attnum, name), ty) in dep
            .read_attnums
            .iter()
            .zip(&dep.read_names)
            .zip(&dep.read_types)
        {
            match now.iter().find(|a| a.attnum == *attnum) {
                None => {
                    return Ok(Err(format!(
                        "column {} of {shown}, which it reads, was dropped",
                        quote_ident(name)
                    )))
                }
                Some(a) => {
                    renamed |= a.name != *name;
                    if a.type_sql != *ty {
                        retyped.push(format!(
                            "{name_now}.{} from {ty} to {}",
                            quote_ident(&a.name),
                            a.type_sql
                        ));
                    }
                }
            }
        }
        // A rewrite (ALTER COLUMN … TYPE … USING with the same type, a volatile default)
        // changes values that no trigger reported.
        let filenode = Spi::get_one::<pg_sys::Oid>(&format!(
            "SELECT pg_catalog.pg_relation_filenode({})",
            dep.source.to_u32()
        ))?;
        if dep.source_filenode.is_some() && filenode != dep.source_filenode {
            rewritten.push(name_now.clone());
        }
        if relids.contains(&dep.source) {
            partitioned |= Spi::get_one::<bool>(&format!(
                "SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = {}",
                dep.source.to_u32()
            ))?
            .unwrap_or(false);
        }
        columns_now.push((dep.source, now));
    }
    // After a rename the user's text names what is gone: PostgreSQL renders the query again
    // from what it analysed (same relations, same columns, today's names). Without one, the
    // text is read again, but kept only if it still means what it meant: rendered from its
    // new analysis it must read exactly as the stored analysis does (an added column can
    // capture an unqualified name, or widen `SELECT *`); otherwise the stored analysis wins.
    let candidate = if renamed {
        evaluate(st, &deps, &deparsed(st)?, !retyped.is_empty())?
    } else {
        match evaluate(st, &deps, &st.query, !retyped.is_empty())? {
            Ok(c)
                if st.query_tree.is_none()
                    || definition::deparse(&c.def.tree)? == deparsed(st)? =>
            {
                Ok(c)
            }
            _ => match evaluate(st, &deps, &deparsed(st)?, !retyped.is_empty())? {
                Ok(c) => Ok(c),
                Err(reason) => Err(reason),
            },
        }
    };
    let candidate = match candidate {
        Ok(c) => c,
        Err(reason) => return Ok(Err(reason)),
    };
    // The columns its delta captures, by number, before and after: a change (a new key, say)
    // means rows captured so far lack what the delta now reads.
    let mut recaptured = false;
    for dep in &deps {
        let before: Vec<i16> = dep
            .columns_used
            .iter()
            .filter_map(|n| {
                dep.read_names
                    .iter()
                    .position(|r| r == n)
                    .and_then(|i| dep.read_attnums.get(i).copied())
            })
            .collect();
        let wanted = mode::captured_columns(
            candidate.plan.as_ref(),
            candidate.effective_mode,
            dep.source,
        );
        let Some(now) = columns_now
            .iter()
            .find(|(o, _)| *o == dep.source)
            .map(|(_, c)| c)
        else {
            continue;
        };
        let after: Vec<i16> = wanted
            .iter()
            .filter_map(|n| now.iter().find(|a| &a.name == n).map(|a| a.attnum))
            .collect();
        let (mut b, mut a) = (before, after);
        b.sort_unstable();
        a.sort_unstable();
        recaptured |= a != b && !a.is_empty();
    }
    let needs_full = if !retyped.is_empty() {
        Some(format!(
            "the type of a column it reads changed ({})",
            retyped.join(", ")
        ))
    } else if !rewritten.is_empty() {
        Some(format!(
            "a source was rewritten by ALTER TABLE ({})",
            rewritten.join(", ")
        ))
    } else if partitioned {
        Some("a partitioned source was altered (rows of attached or detached partitions are not captured)".to_string())
    } else if recaptured {
        Some("the columns its delta reads from a source changed".to_string())
    } else {
        None
    };
    Ok(Ok((candidate, needs_full)))
}

/// The stored analysed query rendered with today's names.
fn deparsed(st: &StreamTable) -> Result<String, PgTrickleError> {
    let tree = st.query_tree.as_deref().ok_or_else(|| {
        PgTrickleError::Internal(format!(
            "stream table {} has no query_tree (every stream table records its analysed \
             query at creation)",
            st.qualified()
        ))
    })?;
    definition::deparse(tree)
}

/// Checks `text` as `st`'s query now: PostgreSQL accepts it (its error propagates), it reads
/// the same tables, its result fits the storage, and it can still be maintained in the mode
/// asked for (AUTO falls back to FULL with a NOTICE).
fn evaluate(
    st: &StreamTable,
    deps: &[definition::Dependency],
    text: &str,
    modifiers: bool,
) -> Result<Result<Candidate, String>, PgTrickleError> {
    let def = definition::probe(text)?;
    let before: Vec<u32> = deps.iter().map(|d| d.source.to_u32()).collect();
    let after: Vec<u32> = def.sources.iter().map(|s| s.to_u32()).collect();
    if before != after {
        return Ok(Err(
            "its defining query would now read other tables than it did".to_string(),
        ));
    }
    let planned = engine::plan(text, &PgCatalog);
    // Hidden columns an earlier release made (a stream table not refreshed since the update)
    // are brought in line by its next refresh, which runs FULL for it: here only its user
    // columns are compared, with the hidden ones it has now.
    let migrating = match (&planned, st.storage_layout) {
        (Ok(p), Layout::Plan) => matches!(
            crate::storage::hidden_layout(st.relid, p)?,
            crate::storage::HiddenLayout::Alignable(_)
        ),
        _ => false,
    };
    let want: Vec<(String, String)> = if st.storage_layout == Layout::Plan {
        match &planned {
            Ok(p) if migrating => crate::storage::user_columns_with_hidden_in_place(st.relid, p)?,
            Ok(p) => p
                .storage_columns()
                .iter()
                .map(|c| (c.name.clone(), c.type_name.clone()))
                .collect(),
            Err(e) => {
                return Ok(Err(format!(
                    "the engine can no longer plan its defining query: {e}"
                )))
            }
        }
    } else {
        def.columns.clone()
    };
    if let Some(d) = definition::storage_difference(st.relid, &want, modifiers)? {
        return Ok(Err(d.to_string()));
    }
    if let (Layout::Plan, Ok(p), false) = (st.storage_layout, &planned, migrating) {
        if let Some(d) = definition::identity_difference(st.relid, p)? {
            return Ok(Err(d.to_string()));
        }
    }
    let (plan, reason) = mode::differential_reason(planned);
    let (effective_mode, full_reason) = match (st.effective_mode, reason) {
        (Mode::Full, _) => (Mode::Full, None),
        (mode, None) => (mode, None),
        (_, Some(r)) if st.refresh_mode == RequestedMode::Auto => (Mode::Full, Some(r)),
        (mode, Some(r)) => {
            return Ok(Err(format!(
                "it can no longer be maintained in {mode} mode: {r}"
            )))
        }
    };
    Ok(Ok(Candidate {
        text: text.to_string(),
        def,
        plan,
        effective_mode,
        full_reason,
    }))
}

/// Stores what DDL left of `st`: its (possibly rewritten) query, analysed form, mode and the
/// dependency snapshots; the buffers are reconciled afterwards by the event trigger.
fn store(st: &StreamTable, c: Candidate, needs_full: Option<String>) -> Result<(), PgTrickleError> {
    let mode_changed = c.effective_mode != st.effective_mode;
    let full_reason = match (&c.full_reason, mode_changed) {
        (Some(r), _) => format!("full_reason = {}, ", quote_literal(r)),
        (None, true) => "full_reason = NULL, ".into(),
        (None, false) => String::new(),
    };
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_stream_tables SET defining_query = {}, query_tree = {}, \
         effective_mode = {}, {full_reason}\
         needs_full_reason = coalesce(needs_full_reason, {}) WHERE pgt_id = {}",
        quote_literal(&c.text),
        quote_literal(&c.def.tree),
        quote_literal(c.effective_mode.as_sql()),
        needs_full.as_deref().map_or("NULL".into(), quote_literal),
        st.id
    ))?;
    mode::replace_dependencies(st.id, &c.def, c.plan.as_ref(), c.effective_mode)?;
    if c.text != st.query {
        // On one line: PostgreSQL renders queries over several.
        let one_line = c.text.split_whitespace().collect::<Vec<_>>().join(" ");
        pgrx::notice!(
            "stream table {} follows the change of its source; its defining query is now: {one_line}",
            st.qualified()
        );
    }
    if let (true, Some(r)) = (mode_changed, &c.full_reason) {
        pgrx::notice!("stream table {} using FULL refresh: {r}", st.qualified());
    }
    Ok(())
}

/// Puts `st` in NEEDS_REINIT with `reason`, and says so.
fn flag(st: &StreamTable, reason: &str) -> Result<(), PgTrickleError> {
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_stream_tables SET status = 'NEEDS_REINIT', last_error = {} \
         WHERE pgt_id = {}",
        quote_literal(reason),
        st.id
    ))?;
    pgrx::notice!(
        "stream table {} needs reinitialisation: {reason}; refresh_stream_table() rebuilds it \
         once its defining query works again",
        st.qualified()
    );
    Ok(())
}

/// Rebuilds a NEEDS_REINIT stream table: its defining query (the stored text) is checked and
/// planned again with today's catalog (PostgreSQL's error says why not, and the stream table
/// stays as it was); the storage is emptied, columns whose type changed are altered in place
/// (other shape changes are refused: drop and recreate); dependencies and capture are
/// recorded anew; then a FULL refresh fills it and it is ACTIVE again.
pub fn reinitialise(st: &StreamTable) -> Result<(), PgTrickleError> {
    let reason = st
        .last_error
        .clone()
        .unwrap_or_else(|| "a source changed".into());
    pgrx::notice!(
        "stream table {} is being reinitialised ({reason})",
        st.qualified()
    );
    // As the extension's owner, which writes the catalog and the capture (the search_path
    // stored with a stream table searches pg_catalog first: see api.rs).
    let with = Rebuild {
        query: &st.query,
        mode: st.refresh_mode,
        new_query: false,
        keep_contents: None,
    };
    crate::roles::as_extension_in(&st.search_path, || rebuild(st, &with))?;
    let now = stream_table::find_by_id(st.id, true)?.ok_or_else(|| {
        PgTrickleError::Internal(format!("stream table {} vanished", st.qualified()))
    })?;
    refresh::load(&now, &format!("reinitialised: {reason}"))?;
    Ok(())
}

/// Points `st` (whose catalog row the caller holds FOR UPDATE) at the relations its stored
/// query names now, after a stream table it reads was replaced by a shadow build's storage
/// (shadow.rs): analysed and planned again, dependencies and capture recorded anew, its
/// contents kept until its next refresh, which runs FULL for `reason` (the replaced stream
/// table's changes up to the swap are in no buffer). Refused like a reinitialisation when
/// the result no longer fits its storage.
pub fn follow_replaced_source(st: &StreamTable, reason: &str) -> Result<(), PgTrickleError> {
    let with = Rebuild {
        query: &st.query,
        mode: st.refresh_mode,
        new_query: false,
        keep_contents: Some(reason),
    };
    crate::roles::as_extension_in(&st.search_path, || rebuild(st, &with))
}

/// What a rebuild builds: the stored query again (a reinitialisation after source DDL), or a
/// new defining query (`alter_stream_table(…, query => …)`), in the requested mode.
struct Rebuild<'a> {
    query: &'a str,
    mode: RequestedMode,
    new_query: bool,
    /// Keep the contents (when no column type changes), and make the next refresh FULL for
    /// this reason, instead of emptying the storage for a load that follows at once.
    keep_contents: Option<&'a str>,
}

impl Rebuild<'_> {
    /// Why the storage cannot be rebuilt in place, as the error of what was asked.
    fn refused(&self, st: &StreamTable, reason: String) -> PgTrickleError {
        if self.new_query {
            PgTrickleError::QueryNotAlterable {
                name: st.qualified(),
                reason,
            }
        } else {
            PgTrickleError::CannotReinit {
                name: st.qualified(),
                reason,
            }
        }
    }
}

/// Gives `st` a new defining query in one transaction (the caller holds its catalog row FOR
/// UPDATE and has checked that its owner may read what the query reads): the query is
/// analysed and planned under the stream table's stored search_path, its mode decided (AUTO
/// says in a NOTICE when it falls back to FULL), the storage kept when the new result fits it
/// — the same columns, where only types may change, and for an incrementally maintained
/// layout the same row identity — dependencies and capture recorded anew, then a FULL
/// refresh fills it. Its name, grants, subscriptions and the stream tables reading it stay.
pub fn change_query(
    st: &StreamTable,
    query: &str,
    mode: RequestedMode,
) -> Result<(), PgTrickleError> {
    let with = Rebuild {
        query,
        mode,
        new_query: true,
        keep_contents: None,
    };
    crate::roles::as_extension_in(&st.search_path, || rebuild(st, &with))?;
    let now = stream_table::find_by_id(st.id, true)?.ok_or_else(|| {
        PgTrickleError::Internal(format!("stream table {} vanished", st.qualified()))
    })?;
    refresh::load(&now, "the defining query changed")?;
    Ok(())
}

fn rebuild(st: &StreamTable, with: &Rebuild<'_>) -> Result<(), PgTrickleError> {
    let refused = |reason: String| with.refused(st, reason);
    let def = definition::probe(with.query)?;
    definition::check_sources(&def)?;
    if with.new_query {
        if let Some(reason) = definition::cycle_through(st.relid, &def)? {
            return Err(refused(reason));
        }
    }
    let name = st.qualified();
    let decision = mode::decide(
        &name,
        with.mode,
        mode::plan_definition(with.query, &def, st.owner)?,
    )?;
    let mut migrated = false;
    let want: Vec<(String, String)> = if st.storage_layout == Layout::Plan {
        let plan = engine::plan(with.query, &PgCatalog).map_err(|e| {
            refused(format!(
                "its storage has the engine's layout and the engine cannot plan its \
                 defining query: {e}"
            ))
        })?;
        // Hidden columns the plan maintains differently (made by an earlier release, or the
        // previous query's): once the user columns and the unique indexes fit, the emptied
        // storage is brought in line before the comparison below (which refuses otherwise).
        if let crate::storage::HiddenLayout::Alignable(hidden) =
            crate::storage::hidden_layout(st.relid, &plan)?
        {
            let user = crate::storage::user_columns_with_hidden_in_place(st.relid, &plan)?;
            if let Some(d @ ShapeDifference::Columns { .. }) =
                definition::storage_difference(st.relid, &user, true)?
            {
                return Err(refused(d.to_string()));
            }
            {
                let _guard = ApplyGuard::new();
                Spi::run(&format!("TRUNCATE {}", st.qualified()))?;
            }
            crate::storage::align_hidden(
                st.relid,
                &engine::RelName::new(&st.schema, &st.name),
                &plan,
                &hidden,
            )?;
            migrated = true;
        }
        if let Some(d) = definition::identity_difference(st.relid, &plan)? {
            return Err(refused(format!("{d} (drop and create it again)")));
        }
        plan.storage_columns()
            .iter()
            .map(|c| (c.name.clone(), c.type_name.clone()))
            .collect()
    } else {
        if decision.effective_mode.incremental() {
            return Err(refused(
                "its storage was created for FULL refresh only".into(),
            ));
        }
        def.columns.clone()
    };
    let difference = definition::storage_difference(st.relid, &want, true)?;
    if let Some(d @ ShapeDifference::Columns { .. }) = &difference {
        return Err(refused(d.to_string()));
    }
    let keep = with
        .keep_contents
        .filter(|_| !migrated && !matches!(difference, Some(ShapeDifference::Types(_))));
    if keep.is_none() {
        let _guard = ApplyGuard::new();
        Spi::run(&format!("TRUNCATE {}", st.qualified()))?;
    }
    let old_sources = stream_table::sources(st.id)?;
    Spi::run(&format!(
        "UPDATE pgtrickle.pgt_stream_tables SET \
         status = CASE WHEN status = 'SUSPENDED' OR ({} AND status = 'ERROR') THEN status \
                  ELSE 'ACTIVE' END, \
         last_error = CASE WHEN status = 'ERROR' AND {} THEN last_error END, \
         consecutive_errors = 0, next_retry_at = NULL, needs_full_reason = {}, \
         is_populated = {}, defining_query = {}, refresh_mode = {}, query_tree = {}, \
         effective_mode = {}, full_reason = {} WHERE pgt_id = {}",
        with.keep_contents.is_some(),
        with.keep_contents.is_some(),
        keep.map_or("NULL".into(), quote_literal),
        keep.is_some() && st.is_populated,
        quote_literal(with.query),
        quote_literal(with.mode.as_sql()),
        quote_literal(&def.tree),
        quote_literal(decision.effective_mode.as_sql()),
        decision
            .full_reason
            .as_deref()
            .map_or("NULL".into(), quote_literal),
        st.id
    ))?;
    // Types changed in place once the catalog holds the new query, all in one statement: the
    // event trigger that follows compares the whole storage with that query (and flags the
    // stream tables reading this one whose input type changed).
    if let Some(ShapeDifference::Types(cols)) = difference {
        let clauses: Vec<String> = cols
            .iter()
            .map(|c| {
                format!(
                    "ALTER COLUMN {} TYPE {t} USING NULL::{t}",
                    quote_ident(&c.column),
                    t = c.want
                )
            })
            .collect();
        Spi::run(&format!(
            "ALTER TABLE {} {}",
            st.qualified(),
            clauses.join(", ")
        ))?;
    }
    // Capture for the mode now (the capture functions also maintain IMMEDIATE dependents,
    // read from the catalog updated above).
    let recorded =
        mode::replace_dependencies(st.id, &def, decision.plan.as_ref(), decision.effective_mode)?;
    for (source, columns) in recorded {
        cdc::ensure_capture(source, &columns)?;
    }
    let gone: Vec<pg_sys::Oid> = old_sources
        .into_iter()
        .filter(|s| !def.sources.contains(s))
        .collect();
    mode::release_sources(&gone)?;
    Ok(())
}

extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION pgtrickle.follow_source_ddl(bigint, oid[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrickle.follow_source_capture(oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrickle.sync_buffer_readers(oid) FROM PUBLIC;

-- ALTER TABLE of a source or of a stream table's storage, and ALTER SCHEMA … RENAME of a
-- schema holding either (source_ddl.rs). SECURITY DEFINER,
-- as on_sql_drop: the role altering its own table may not write the catalog or the buffers.
-- Each step runs in a subtransaction; nothing here may make the DDL or later writes fail.
CREATE FUNCTION pgtrickle.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on AS $$
DECLARE
    rels oid[];
    st record;
    src oid;
    msg text;
BEGIN
    -- A shadow build's swap renames the two storages itself (shadow.rs).
    IF pgtrickle.shadow_swap_in_progress() THEN
        RETURN;
    END IF;
    -- The relations altered: by ALTER TABLE (with the partitions and inheritance children it
    -- recursed to, which are not reported), or every relation of a renamed schema.
    WITH RECURSIVE altered(relid) AS (
            SELECT c.objid FROM pg_event_trigger_ddl_commands() c
             WHERE c.classid = 'pg_catalog.pg_class'::regclass
            UNION
            SELECT k.oid FROM pg_event_trigger_ddl_commands() c
              JOIN pg_catalog.pg_class k ON k.relnamespace = c.objid
             WHERE c.classid = 'pg_catalog.pg_namespace'::regclass
            UNION
            SELECT i.inhrelid FROM altered JOIN pg_catalog.pg_inherits i ON i.inhparent = altered.relid)
    SELECT array_agg(DISTINCT r.relid) INTO rels
      FROM altered AS r
     WHERE EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = r.relid)
        OR EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.pgt_relid = r.relid);
    IF rels IS NULL THEN
        RETURN;
    END IF;
    -- A stream table's storage renamed or moved: the catalog follows (it is found by OID).
    UPDATE pgtrickle.pgt_stream_tables s SET pgt_schema = n.nspname, pgt_name = c.relname
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = s.pgt_relid AND s.pgt_relid = ANY (rels)
       AND (s.pgt_schema, s.pgt_name) IS DISTINCT FROM (n.nspname, c.relname);
    FOR st IN SELECT s.pgt_id, format('%I.%I', s.pgt_schema, s.pgt_name) AS name
                FROM pgtrickle.pgt_stream_tables s
               WHERE (s.pgt_relid = ANY (rels)
                      OR s.pgt_id IN (SELECT d.pgt_id FROM pgtrickle.pgt_dependencies d
                                       WHERE d.source_relid = ANY (rels)))
               ORDER BY s.pgt_id
    LOOP
        BEGIN
            PERFORM pgtrickle.follow_source_ddl(st.pgt_id, rels);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            -- Flagging may fail too (a deadlock with a refresh of that stream table): the
            -- user's DDL must not; its next refresh then fails and says why.
            BEGIN
                UPDATE pgtrickle.pgt_stream_tables
                   SET status = 'NEEDS_REINIT',
                       last_error = format('after ALTER TABLE of a source: %s', msg)
                 WHERE pgt_id = st.pgt_id;
                RAISE WARNING 'stream table % needs reinitialisation: %', st.name, msg
                    USING HINT = 'refresh_stream_table() rebuilds it once its defining query works again.';
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'pg_trickle could not follow ALTER TABLE for stream table %: %', st.name, msg;
            END;
        END;
    END LOOP;
    FOR src IN SELECT DISTINCT d.source_relid FROM pgtrickle.pgt_dependencies d
                WHERE d.source_relid = ANY (rels) ORDER BY 1
    LOOP
        BEGIN
            PERFORM pgtrickle.follow_source_capture(src);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            -- Last resort: capture only that a write happened, so writes never fail; the
            -- dependents wait for reinitialisation (which writes the capture anew). The
            -- capture trigger (pgtrickle.capture_changes) does so by itself when its buffer
            -- and source disagree; a source still captured by the PL/pgSQL function of 0.34
            -- gets a function that only leaves the marker.
            IF to_regclass(format('pgtrickle_changes.%I', 'changes_' || src)) IS NOT NULL
               AND to_regprocedure(format('pgtrickle_changes.%I()', 'capture_' || src)) IS NOT NULL THEN
                EXECUTE format($f$CREATE OR REPLACE FUNCTION pgtrickle_changes.%I() RETURNS trigger
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
                    $b$BEGIN INSERT INTO pgtrickle_changes.%I (__pgt_op) VALUES ('P'); RETURN NULL; END$b$ $f$,
                    'capture_' || src, 'changes_' || src);
            END IF;
            UPDATE pgtrickle.pgt_stream_tables
               SET status = 'NEEDS_REINIT',
                   last_error = format('after ALTER TABLE of a source, its capture failed: %s', msg)
             WHERE pgt_id IN (SELECT d.pgt_id FROM pgtrickle.pgt_dependencies d
                               WHERE d.source_relid = src);
            RAISE WARNING 'pg_trickle could not follow ALTER TABLE of %: %; its stream tables need reinitialisation', src::regclass, msg;
        END;
    END LOOP;
END
$$;
CREATE EVENT TRIGGER pgt_ddl_command_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA')
    EXECUTE FUNCTION pgtrickle.on_ddl_command_end();
"#,
    name = "source_ddl_handling",
    requires = [
        follow_source_ddl,
        follow_source_capture,
        sync_buffer_readers,
        "catalog_tables",
        "shadow_builds"
    ]
);
