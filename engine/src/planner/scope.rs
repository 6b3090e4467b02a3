//! Name resolution scopes: the relations of a FROM clause (with their column positions in the
//! operator's row) and the enclosing query levels visible to correlated subqueries.
//! Invariant: resolution looks at the innermost level first and reports an ambiguous name
//! rather than picking one of several matches (SQLSTATE 42702).

use crate::error::EngineError;
use crate::operator::ColType;

/// Column positions at or above this belong to an enclosing query the planner does not
/// decorrelate from the current position (`Planner::outer`, planner/conditions.rs); the
/// planner refuses a reference that resolves there.
pub(crate) const OUTER_BASE: usize = 1 << 50;

/// Placeholders of the select list's set-returning call (planner/lateral.rs):
/// `Column(SRF_BASE + j)`, above window calls' (`window::WIN_BASE`).
pub const SRF_BASE: usize = 1 << 52;

/// One relation in scope: a table, CTE or derived table, under its alias.
#[derive(Debug, Clone)]
pub struct ScopeRel {
    pub alias: String,
    /// The source table's id when the relation is a base table (for used-column tracking).
    pub table: Option<u32>,
    pub columns: Vec<(String, ColType)>,
    /// Position of the relation's first column in the combined row.
    pub offset: usize,
}

/// Levels of relations, outermost first.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub levels: Vec<Vec<ScopeRel>>,
}

/// A resolved column reference.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub position: usize,
    pub ty: ColType,
    pub table: Option<u32>,
    pub name: String,
}

impl Scope {
    /// The innermost level's relations.
    pub fn innermost(&self) -> &[ScopeRel] {
        self.levels.last().map_or(&[], |l| l.as_slice())
    }

    /// Resolves `parts` (`col`, `rel.col` or `schema.rel.col`), innermost level first.
    pub fn resolve(&self, parts: &[String]) -> Result<Resolved, EngineError> {
        let display = parts.join(".");
        let (rel_name, col) = match parts {
            [col] => (None, col),
            [rel, col] | [_, rel, col] => (Some(rel), col),
            _ => {
                return Err(EngineError::InvalidDefiningQuery {
                    message: format!("improper qualified name \"{display}\""),
                })
            }
        };
        let mut alias_seen = false;
        for level in self.levels.iter().rev() {
            let mut found: Vec<Resolved> = Vec::new();
            for rel in level {
                if rel_name.is_some_and(|r| *r != rel.alias) {
                    continue;
                }
                alias_seen = true;
                for (i, (name, ty)) in rel.columns.iter().enumerate() {
                    if name == col {
                        found.push(Resolved {
                            position: rel.offset + i,
                            ty: ty.clone(),
                            table: rel.table,
                            name: name.clone(),
                        });
                    }
                }
            }
            match found.len() {
                0 => continue,
                1 => return Ok(found.remove(0)),
                _ => return Err(EngineError::AmbiguousColumn { name: display }),
            }
        }
        match rel_name {
            Some(r) if !alias_seen => Err(EngineError::UndefinedTable {
                name: format!("{r} (missing FROM-clause entry)"),
            }),
            _ => Err(EngineError::UndefinedColumn { name: display }),
        }
    }
}
