//! `DeltaScan`: the change window of a source table as a Z-set, read from its change buffer
//! (`__pgt_op` 'I' → weight +1, 'D' → −1; an UPDATE is captured as 'D' old + 'I' new),
//! consolidated per row. Appears only in delta plans; it has no delta itself. Cost: O(|ΔT|)
//! with the buffer's window predicate, plus the grouping of the window's rows.

use super::{EvalContext, Scan};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::render::{consolidated_select, qualified, quote_ident, Fragment, SqlWriter};
use crate::zset::ZSet;

/// Reads the change window of `scan`'s table, with the same columns as `scan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaScan {
    pub scan: Scan,
}

impl DeltaScan {
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        self.scan.project_rows(ctx.deltas.get(&self.scan.table.id))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let table = &self.scan.table;
        if w.relations.contains_key(&table.id) {
            return Ok(self.scan.render_empty());
        }
        let buffer = w
            .sources
            .and_then(|s| s.buffers.get(&table.id))
            .ok_or_else(|| {
                EngineError::internal(format!(
                    "no change buffer given for source {}.{} (id {})",
                    table.schema, table.name, table.id
                ))
            })?;
        // Consolidated here, before any expression sees a row: rows inserted and deleted
        // again within the window cancel out, so what remains is exactly A_new − A_old.
        // Every −row existed at the previous refresh and every +row exists now, so the delta
        // evaluates expressions only on rows a FULL refresh evaluates too (an insert of
        // (3, 0) deleted again before the refresh never reaches `10 / d`).
        let group: Vec<String> = self
            .scan
            .columns
            .iter()
            .map(|c| format!("{}.{}", quote_ident("d"), quote_ident(&c.name)))
            .collect();
        let weight = format!(
            "SUM(CASE WHEN {}.{} = 'I' THEN 1 ELSE -1 END)",
            quote_ident("d"),
            quote_ident(crate::names::BUFFER_OP)
        );
        let from = format!(
            "{} AS {} WHERE ({})",
            qualified(&buffer.schema, &buffer.name),
            quote_ident("d"),
            buffer.predicate
        );
        Ok(Fragment {
            sql: consolidated_select(&self.scan.select_list("d"), &group, &weight, &from),
            weighted: true,
        })
    }
}
