//! How a stream table is maintained: the engine's verdict on a query (DIFFERENTIAL, or FULL
//! and why), the mode that follows from the one asked for, and the dependency records and
//! change capture that go with it. Used at creation, on a mode change, when DDL is followed
//! and when a stream table is rebuilt.

use engine::{Differentiability, Plan};
use pgrx::prelude::*;

use crate::cdc;
use crate::definition;
use crate::error::PgTrickleError;
use crate::pgcatalog::PgCatalog;
use crate::stream_table::{Mode, RequestedMode};

/// How a new stream table will be maintained, decided from the requested mode and the plan.
pub(crate) struct Decision {
    pub effective_mode: Mode,
    pub full_reason: Option<String>,
    pub plan: Option<Plan>,
}

/// The engine's plan of a query and, when it is not to be maintained differentially, why
/// (PostgreSQL already accepted the query, so an engine planning error is a limitation, not
/// bad input).
pub(crate) fn differential_reason(
    planned: Result<Plan, engine::EngineError>,
) -> (Option<Plan>, Option<String>) {
    match planned {
        Ok(p) => match &p.differentiability {
            Differentiability::Differential => (Some(p), None),
            Differentiability::NotDifferentiable(r) => (None, Some(r.to_string())),
        },
        Err(engine::EngineError::NotDifferentiable(r)) => (None, Some(r.to_string())),
        // The engine parses with its own SQL parser: PostgreSQL accepted the query, so a
        // syntax error here is syntax the engine does not know.
        Err(engine::EngineError::Syntax { message }) => (
            None,
            Some(format!(
                "not differentiable: this syntax is not supported by pg_trickle's query \
                 planner{}",
                unsupported_at(&message)
            )),
        ),
        Err(e) => (
            None,
            Some(format!(
                "not differentiable: the engine cannot plan this query: {e}"
            )),
        ),
    }
}

/// The engine's plan of a query PostgreSQL described as `def`; a query reading a view is not
/// handed to the engine (which resolves tables only) but said to read it.
/// `owner` is the role the stream table is refreshed as: a source whose row-level security
/// applies to it is not maintained differentially (the change buffers hold every row, and a
/// delta read from them would bypass the policies; a FULL refresh runs the query as the owner,
/// so the policies apply).
pub(crate) fn plan_definition(
    query: &str,
    def: &definition::Definition,
    owner: pg_sys::Oid,
) -> Result<Result<Plan, engine::EngineError>, PgTrickleError> {
    let not = |construct: String| {
        Ok(Err(engine::EngineError::NotDifferentiable(
            engine::Reason::Construct { construct },
        )))
    };
    let views = definition::views_read(def)?;
    if !views.is_empty() {
        return not(format!(
            "it reads the view {} (views are not expanded; the tables it reads are captured)",
            views.join(", ")
        ));
    }
    if let Some(s) = def
        .sources
        .iter()
        .find(|s| crate::roles::row_security_applies(**s, owner))
    {
        let table = definition::relation_name(*s)?.unwrap_or_else(|| s.to_u32().to_string());
        return not(format!(
            "row-level security of {table} applies to its owner, role \"{}\" (a differential \
             refresh reads captured changes, which the policies do not filter)",
            crate::roles::name_of(owner)
        ));
    }
    if let Some(what) = definition::not_immutable(&def.tree)? {
        return Ok(Err(engine::EngineError::NotDifferentiable(
            engine::Reason::NotImmutable { what },
        )));
    }
    Ok(engine::plan(query, &PgCatalog))
}

/// Where the engine's parser stopped, in the user's terms (` near "TABLE" (line 1, column 1)`),
/// from its message (`sql parser error: Expected: …, found: TABLE at Line: 1, Column: 1`).
fn unsupported_at(message: &str) -> String {
    let Some((_, found)) = message.rsplit_once("found: ") else {
        return String::new();
    };
    match found.rsplit_once(" at Line: ") {
        Some((token, place)) => {
            let place = place.replace(", Column: ", ", column ");
            format!(" near \"{token}\" (line {place})")
        }
        None => format!(" near \"{found}\""),
    }
}

pub(crate) fn decide(
    name: &str,
    mode: RequestedMode,
    planned: Result<Plan, engine::EngineError>,
) -> Result<Decision, PgTrickleError> {
    let (plan, reason) = differential_reason(planned);
    let decided = |effective_mode, full_reason| {
        Ok(Decision {
            effective_mode,
            full_reason,
            plan,
        })
    };
    match (mode, reason) {
        (m @ (RequestedMode::Differential | RequestedMode::Immediate), Some(reason)) => {
            Err(PgTrickleError::NotDifferentiable {
                name: name.to_string(),
                mode: m.as_sql(),
                reason,
            })
        }
        (RequestedMode::Auto, Some(reason)) => {
            pgrx::notice!("stream table {name} using FULL refresh: {reason}");
            decided(Mode::Full, Some(reason))
        }
        (RequestedMode::Full, reason) => decided(Mode::Full, reason),
        (RequestedMode::Immediate, None) => decided(Mode::Immediate, None),
        (RequestedMode::Auto | RequestedMode::Differential, None) => {
            decided(Mode::Differential, None)
        }
    }
}

/// Records the dependencies of stream table `id` on every source of `def` and makes sure each
/// source captures what the delta reads (nothing for FULL: only TRUNCATE and paused markers
/// and the fact that a write happened matter then).
pub(crate) fn record_sources(
    id: i64,
    def: &definition::Definition,
    plan: Option<&Plan>,
    effective_mode: Mode,
) -> Result<(), PgTrickleError> {
    for (source, columns) in record_dependencies(id, def, plan, effective_mode)? {
        cdc::ensure_capture(source, &columns)?;
    }
    Ok(())
}

/// Replaces the dependency records of stream table `id` with those of `def` (see
/// [`record_dependencies`]).
pub(crate) fn replace_dependencies(
    id: i64,
    def: &definition::Definition,
    plan: Option<&Plan>,
    effective_mode: Mode,
) -> Result<Vec<(pg_sys::Oid, Vec<String>)>, PgTrickleError> {
    Spi::run(&format!(
        "DELETE FROM pgtrickle.pgt_dependencies WHERE pgt_id = {id}"
    ))?;
    record_dependencies(id, def, plan, effective_mode)
}

/// Records the dependencies of stream table `id` on every source of `def` (the caller
/// brings the buffers in line), and returns per source the columns its delta captures.
pub(crate) fn record_dependencies(
    id: i64,
    def: &definition::Definition,
    plan: Option<&Plan>,
    effective_mode: Mode,
) -> Result<Vec<(pg_sys::Oid, Vec<String>)>, PgTrickleError> {
    let mut out = Vec::new();
    for (source, read) in def.sources.iter().zip(&def.read) {
        let columns = captured_columns(plan, effective_mode, *source);
        definition::record_dependency(id, *source, read, &columns)?;
        out.push((*source, columns));
    }
    Ok(out)
}

/// The columns of `source` a stream table's delta reads in `effective_mode` (none for FULL).
pub(crate) fn captured_columns(
    plan: Option<&Plan>,
    effective_mode: Mode,
    source: pg_sys::Oid,
) -> Vec<String> {
    match plan {
        Some(plan) if effective_mode.incremental() => engine::capture(plan)
            .into_iter()
            .find(|c| c.source == source.to_u32())
            .map(|c| c.columns)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Drops the capture of sources no stream table reads any more; cleans the others' buffers.
pub(crate) fn release_sources(sources: &[pg_sys::Oid]) -> Result<(), PgTrickleError> {
    for s in sources {
        let still_read = Spi::get_one::<bool>(&format!(
            "SELECT EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies WHERE source_relid = {})",
            s.to_u32()
        ))?
        .unwrap_or(false);
        if still_read {
            cdc::regenerate(*s)?;
            cdc::grant_readers(*s)?;
            cdc::cleanup(*s)?;
        } else {
            cdc::drop_capture(*s)?;
        }
    }
    Ok(())
}
