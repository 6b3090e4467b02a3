//! Orders shared by `Window` and `TopK`: a SQL `ORDER BY` key applied to evaluator values,
//! and the tie-breaking keys (every input column) both append wherever a result depends on
//! which of several tied rows comes first (INV-22, docs/CORRECTNESS.md §2).

use std::cmp::Ordering;

use super::{ColType, SortKey};
use crate::expr::eval::compare;
use crate::render::col_ref;
use crate::types::TypeClass;
use crate::value::Value;

/// Compares two values as `ORDER BY … [DESC] [NULLS FIRST|LAST]` does.
pub(crate) fn compare_key(a: &Value, b: &Value, key: &SortKey) -> Ordering {
    let nulls_first = key.nulls_first.unwrap_or(key.desc);
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, true) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (false, false) => {
            let o = compare(a, b).unwrap_or_else(|| a.cmp(b));
            if key.desc {
                o.reverse()
            } else {
                o
            }
        }
    }
}

/// Every column of a row of `columns` as an ORDER BY key over alias `"s"`: in its type's own
/// order where it has a known one, by its text form otherwise (every type has one). The
/// tie-breaking order of `Window` and `TopK`.
pub(crate) fn tie_breakers(columns: &[ColType]) -> Vec<String> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| match c.ty.class() {
            TypeClass::Other => format!("CAST({} AS text) COLLATE \"C\"", col_ref("s", i)),
            _ => col_ref("s", i),
        })
        .collect()
}
