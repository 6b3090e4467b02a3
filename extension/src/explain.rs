//! `pgtrickle.explain_stream_table(name, format, verbose)`: how a stream table is maintained,
//! from its stored defining query planned again by the engine — every operator with its delta
//! rule (or group rescan), or FULL with the reason; the indexes its refreshes rely on; with
//! `verbose`, the statements a refresh runs. Formats `text`, `json` (PostgreSQL EXPLAIN's
//! shape) and `dot` (graphviz).

// pgrx's ErrorReport is the error type of SQL functions (what PostgreSQL reports).
#![allow(clippy::result_large_err)]

use engine::{Annotations, ExplainFormat};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::{argument, PgTrickleError};
use crate::stream_table::{self, Layout, Mode, StreamTable};

/// Explains a stream table in `format` (`text`, `json` or `dot`; 22023 otherwise). For the
/// roles that may read it (its owner's, or SELECT on it; 42501 otherwise).
#[pg_extern(volatile, parallel_unsafe)]
fn explain_stream_table(
    name: Option<&str>,
    format: default!(Option<&str>, "'text'"),
    verbose: default!(Option<bool>, "false"),
) -> Result<String, ErrorReport> {
    Ok(crate::settings::with_standard_strings(|| {
        let name = argument("explain_stream_table", "name", name)?;
        let format_name = argument("explain_stream_table", "format", format)?;
        let verbose = argument("explain_stream_table", "verbose", verbose)?;
        let format =
            ExplainFormat::parse(format_name).ok_or_else(|| PgTrickleError::InvalidParameter {
                param: "format",
                value: format_name.to_string(),
                hint: "Use 'text', 'json' or 'dot'.".into(),
            })?;
        let st = stream_table::find(name, false)?;
        if !crate::roles::may_read(crate::roles::current(), st.relid, st.owner) {
            return Err(PgTrickleError::NotOwner {
                stream_table: st.qualified(),
            });
        }
        explain(&st, format, verbose)
    })?)
}

fn explain(
    st: &StreamTable,
    format: ExplainFormat,
    verbose: bool,
) -> Result<String, PgTrickleError> {
    let full_reason = st.full_reason.clone();
    // A stream table refreshed FULL shows why, not the tree it is not maintained by.
    let plan = if st.effective_mode == Mode::Full || st.storage_layout == Layout::Query {
        None
    } else {
        Some(crate::roles::as_extension_in(&st.search_path, || {
            crate::refresh::plan_of(st)
        })?)
    };
    let full_reason = match (st.effective_mode, full_reason) {
        (Mode::Full, None) => Some("refresh_mode is FULL".to_string()),
        (_, r) => r,
    };
    let statements = if verbose {
        crate::roles::as_extension_in(&st.search_path, || crate::refresh::statements(st))?
    } else {
        Vec::new()
    };
    let notes = Annotations {
        name: display_name(st)?,
        refresh_mode: st.refresh_mode.as_sql().to_string(),
        effective_mode: st.effective_mode.as_sql().to_string(),
        full_reason,
        indexes: indexes(st)?,
        statements,
    };
    Ok(engine::explain_stream_table(plan.as_ref(), &notes, format))
}

/// The stream table's name as `format('%I.%I')` writes it.
fn display_name(st: &StreamTable) -> Result<String, PgTrickleError> {
    let n = Spi::get_one_with_args::<String>(
        "SELECT format('%I.%I', $1, $2)",
        &[st.schema.as_str().into(), st.name.as_str().into()],
    )?;
    crate::error::required(n, "format()")
}

/// The indexes a refresh relies on, `name: definition`: the storage table's (its identity
/// index is how the apply statements find rows) and, for an incremental stream table, its
/// sources' change buffers' (the change window is read by transaction id).
fn indexes(st: &StreamTable) -> Result<Vec<String>, PgTrickleError> {
    crate::roles::as_extension(|| {
        let incremental = st.effective_mode.incremental();
        Spi::connect(|client| {
            client
                .select(
                    "SELECT format('%s: %s', i.indexrelid::regclass, \
                                   pg_catalog.pg_get_indexdef(i.indexrelid)) \
                       FROM pg_catalog.pg_index i \
                      WHERE i.indrelid = $1 \
                         OR ($2 AND i.indrelid IN (SELECT pg_catalog.to_regclass( \
                               'pgtrickle_changes.changes_' || d.source_relid) \
                             FROM pgtrickle.pgt_dependencies d WHERE d.pgt_id = $3)) \
                      ORDER BY i.indrelid <> $1, 1",
                    None,
                    &[st.relid.into(), incremental.into(), st.id.into()],
                )?
                .map(|r| crate::error::required(r.get::<String>(1)?, "pg_get_indexdef()"))
                .collect()
        })
    })
}
