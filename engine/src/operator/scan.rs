//! `Scan`: the post-change state of a source table, projected to the columns the query uses.
//! Delta rule: Δ Scan(T) = DeltaScan(T), the change window (+1 inserted, −1 deleted rows;
//! an update is −old +new). Cost: O(|ΔT|).

use super::{ColType, EvalContext, Operator};
use crate::expr::eval::EvalError;
use crate::render::{col_name, qualified, quote_ident, weight_ref, Fragment, SqlWriter};
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

    /// The table's rows, or those of the relation `w` reads in its place.
    pub(crate) fn render(&self, w: &SqlWriter<'_>) -> Fragment {
        let (from, weighted) = match w.relations.get(&self.table.id) {
            Some(r) => (r.from.clone(), r.weighted),
            None => (qualified(&self.table.schema, &self.table.name), false),
        };
        let mut list = self.select_list("t");
        if weighted {
            list.push(weight_ref("t"));
        }
        Fragment {
            sql: format!(
                "SELECT {} FROM {from} AS {}",
                list.join(", "),
                quote_ident("t")
            ),
            weighted,
        }
    }

    /// No rows, typed as this scan's: the change window of a relation held constant.
    pub(crate) fn render_empty(&self) -> Fragment {
        let mut list: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("CAST(NULL AS {}) AS {}", c.ty.ty.sql(), col_name(i)))
            .collect();
        list.push(format!(
            "CAST(0 AS int8) AS {}",
            quote_ident(crate::render::WEIGHT)
        ));
        Fragment {
            sql: format!("SELECT {} WHERE false", list.join(", ")),
            weighted: true,
        }
    }
}
