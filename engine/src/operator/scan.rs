//! `Scan`: the post-change state of a source table, projected to the columns the query uses.
//! Delta rule: Δ Scan(T) = DeltaScan(T), the change window (+1 inserted, −1 deleted rows;
//! an update is −old +new). Cost: O(|ΔT|).

use super::{ColType, EvalContext, Operator};
use crate::expr::eval::EvalError;
use crate::render::{col_name, qualified, quote_ident, Fragment};
use crate::zset::ZSet;

/// A source table: stable id and name (unquoted, case-folded).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRef {
    pub id: u32,
    pub schema: String,
    pub name: String,
}

/// One scanned column: its position among the table's columns, its name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanColumn {
    pub index: usize,
    pub name: String,
    pub ty: ColType,
}

/// Reads the current (post-change) rows of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub table: TableRef,
    pub columns: Vec<ScanColumn>,
}

impl Scan {
    pub fn columns(&self) -> Vec<ColType> {
        self.columns.iter().map(|c| c.ty.clone()).collect()
    }

    pub(crate) fn project_rows(&self, rows: Option<&ZSet>) -> Result<ZSet, EvalError> {
        let mut out = ZSet::new();
        for (row, w) in rows.into_iter().flat_map(|z| z.iter()) {
            let projected = self
                .columns
                .iter()
                .map(|c| {
                    row.get(c.index)
                        .cloned()
                        .ok_or(EvalError::BadColumn(c.index))
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.add(projected, w);
        }
        Ok(out)
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        self.project_rows(ctx.current.get(&self.table.id))
    }

    pub fn delta(&self) -> Operator {
        Operator::DeltaScan(super::DeltaScan { scan: self.clone() })
    }

    pub(crate) fn select_list(&self, alias: &str) -> Vec<String> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{}.{} AS {}",
                    quote_ident(alias),
                    quote_ident(&c.name),
                    col_name(i)
                )
            })
            .collect()
    }

    pub fn render(&self) -> Fragment {
        Fragment {
            sql: format!(
                "SELECT {} FROM {} AS {}",
                self.select_list("t").join(", "),
                qualified(&self.table.schema, &self.table.name),
                quote_ident("t")
            ),
            weighted: false,
        }
    }
}
