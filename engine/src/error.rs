//! The engine's error and "not differentiable" reason types, and their SQLSTATE mapping.
//! Invariant: every variant maps to exactly one SQLSTATE through an exhaustive match (no
//! wildcard arm), so adding a variant forces a decision about its code.

use std::fmt;

/// Why a defining query cannot be maintained differentially. The extension turns this into a
/// FULL refresh (AUTO, with a NOTICE) or SQLSTATE 0A000 (DIFFERENTIAL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A volatile or otherwise non-repeatable function (`random()`, `now()`, `nextval()`…).
    VolatileFunction { name: String },
    /// Something PostgreSQL does not consider IMMUTABLE (a STABLE or VOLATILE function or
    /// operator, `CURRENT_DATE`, …), as the extension's check of the analysed query names it.
    NotImmutable { what: String },
    /// A form of `LIMIT`, `OFFSET` or `FETCH FIRST` the planner does not maintain (`detail`
    /// says which).
    LimitOrOffset { detail: String },
    /// A window function call of a form the engine does not maintain (`detail` says which).
    WindowFunction { name: String, detail: String },
    /// A `WITH RECURSIVE` query of a form the engine does not maintain (`detail` says which).
    RecursiveCte { detail: String },
    /// An aggregate the engine does not know how to maintain.
    UnsupportedAggregate { name: String },
    /// An aggregate whose result depends on input order without an `ORDER BY` inside it.
    OrderSensitiveAggregate { name: String },
    /// A subquery where none is decorrelated: an outer join's ON, GROUP BY, an aggregate's
    /// argument, or `[NOT] EXISTS` / `[NOT] IN` over a subquery with GROUP BY, DISTINCT,
    /// LIMIT or a set operation inside an expression (as a conjunct of WHERE it is a semi
    /// join).
    SubqueryInExpression,
    /// A scalar subquery of a shape the planner does not decorrelate; `what` names it.
    SubqueryShape { what: String },
    /// The delta statement would exceed `plan::DELTA_STATEMENT_LIMIT` (sizes in kB).
    DeltaTooLarge { kilobytes: usize, limit: usize },
    /// More table references than `plan::MAX_TABLE_REFERENCES` in one query: the delta of a
    /// join of n inputs is built from the deltas of its sub-joins, which costs 2^n to derive.
    TooManyTables { references: usize, limit: usize },
    /// A column whose type has no equality operator (json, xml, point…), so deltas cannot be
    /// consolidated.
    TypeWithoutEquality { column: String, type_name: String },
    /// A form of `DISTINCT ON (…)` the planner does not maintain (`detail` says which).
    DistinctOn { detail: String },
    /// A form of `GROUPING SETS`, `ROLLUP` or `CUBE` the planner does not expand (`detail`
    /// says which).
    GroupingSets { detail: String },
    /// A `LATERAL` subquery the planner does not decorrelate (planner/lateral.rs
    /// `lateral_subquery`), or a set-returning function in `FROM` that reads no column of
    /// the relations to its left (constant rows) or is joined in another way than `CROSS
    /// JOIN`, `JOIN … ON` or `LEFT JOIN … ON true`.
    LateralOrTableFunction,
    /// A set-returning function of the select list in a form that is no flat map: a second
    /// one (PostgreSQL runs them in lockstep), one returning a record, one inside another's
    /// arguments or outside the select list.
    SetReturningFunction { name: String },
    /// A construct of the SQL grammar the differential engine does not model yet.
    Construct { construct: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not differentiable: ")?;
        match self {
            Reason::VolatileFunction { name } => {
                write!(f, "function {name}() is volatile or not repeatable")
            }
            Reason::NotImmutable { what } => write!(
                f,
                "{what}; differential maintenance needs IMMUTABLE functions and operators"
            ),
            Reason::LimitOrOffset { detail } => write!(f, "LIMIT, OFFSET or FETCH with {detail}"),
            Reason::WindowFunction { name, detail } => {
                write!(f, "window function {name}() with {detail}")
            }
            Reason::RecursiveCte { detail } => {
                write!(f, "recursive common table expression {detail}")
            }
            Reason::UnsupportedAggregate { name } => {
                write!(f, "aggregate {name}() cannot be maintained incrementally")
            }
            Reason::OrderSensitiveAggregate { name } => {
                write!(
                    f,
                    "aggregate {name}() depends on input order; add ORDER BY inside it"
                )
            }
            Reason::SubqueryInExpression => f.write_str(
                "subquery in this position (an outer join's ON, GROUP BY, an aggregate's argument, or an EXISTS / IN over a subquery with GROUP BY, DISTINCT, LIMIT or a set operation inside an expression)",
            ),
            Reason::SubqueryShape { what } => write!(f, "subquery {what}"),
            Reason::DeltaTooLarge { kilobytes, limit } => write!(
                f,
                "its delta statement would be {kilobytes} kB (the limit is {limit} kB): too many subqueries and outer joins stacked in one query"
            ),
            Reason::TooManyTables { references, limit } => write!(
                f,
                "the query reads {references} table references (the limit is {limit}): the cost of deriving a join's delta doubles with every table joined"
            ),
            Reason::TypeWithoutEquality { column, type_name } => {
                write!(
                    f,
                    "column \"{column}\" has type {type_name}, which has no equality"
                )
            }
            Reason::DistinctOn { detail } => write!(f, "DISTINCT ON with {detail}"),
            Reason::GroupingSets { detail } => write!(f, "GROUPING SETS, ROLLUP or CUBE with {detail}"),
            Reason::LateralOrTableFunction => {
                f.write_str("a LATERAL subquery that reads the relations to its left other than by equalities of its WHERE, or has an aggregate without GROUP BY, a window function or LIMIT without ORDER BY; or a function in FROM that reads no column to its left or is joined other than by CROSS JOIN, JOIN … ON or LEFT JOIN … ON true")
            }
            Reason::SetReturningFunction { name } => write!(
                f,
                "set-returning function {name}() in this position (one per select list, returning no record)"
            ),
            Reason::Construct { construct } => write!(f, "{construct}"),
        }
    }
}

/// Errors of the engine boundary. Messages follow PostgreSQL style: lowercase, no period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("syntax error: {message}")]
    Syntax { message: String },
    #[error("relation \"{name}\" does not exist")]
    UndefinedTable { name: String },
    #[error("column \"{name}\" does not exist")]
    UndefinedColumn { name: String },
    #[error("column reference \"{name}\" is ambiguous")]
    AmbiguousColumn { name: String },
    #[error("table name \"{name}\" specified more than once")]
    DuplicateAlias { name: String },
    #[error("column \"{name}\" specified more than once")]
    DuplicateColumn { name: String },
    #[error("function {name} does not exist")]
    UndefinedFunction { name: String },
    #[error("{message}")]
    DatatypeMismatch { message: String },
    #[error("{message}")]
    Grouping { message: String },
    #[error("{message}")]
    InvalidDefiningQuery { message: String },
    #[error("{0}")]
    NotDifferentiable(Reason),
    #[error("internal engine error: {message}")]
    Internal { message: String },
}

impl EngineError {
    /// The SQLSTATE the extension reports for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            EngineError::Syntax { .. } => "42601",
            EngineError::UndefinedTable { .. } => "42P01",
            EngineError::UndefinedColumn { .. } => "42703",
            EngineError::AmbiguousColumn { .. } => "42702",
            EngineError::DuplicateAlias { .. } => "42712",
            EngineError::DuplicateColumn { .. } => "42701",
            EngineError::UndefinedFunction { .. } => "42883",
            EngineError::DatatypeMismatch { .. } => "42804",
            EngineError::Grouping { .. } => "42803",
            EngineError::InvalidDefiningQuery { .. } => "0A000",
            EngineError::NotDifferentiable(_) => "0A000",
            EngineError::Internal { .. } => "XX000",
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        EngineError::Internal {
            message: message.into(),
        }
    }
}
