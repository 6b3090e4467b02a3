//! Values of the in-memory evaluator (the executable specification) and rows of them.
//! Invariant: `Value`'s `Eq`/`Ord` are total and treat NULL as equal to NULL, which is the
//! IS NOT DISTINCT FROM semantics of GROUP BY, DISTINCT and Z-set consolidation; SQL's
//! three-valued comparison lives in `expr::eval`, never here.

use std::cmp::Ordering;
use std::fmt;

/// A float with a total order (NaN equal to itself, like PostgreSQL's float comparison).
#[derive(Debug, Clone, Copy)]
pub struct Float(f64);

impl Float {
    pub fn new(value: f64) -> Self {
        // PostgreSQL considers -0 equal to 0; normalise so that the total order agrees.
        if value == 0.0 {
            Float(0.0)
        } else {
            Float(value)
        }
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Float {}
impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Float {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One SQL value. Strings of type `bpchar` are stored with trailing spaces removed, so that
/// equality matches PostgreSQL's `char(n)` comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(Float),
    Text(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    pub fn float(value: f64) -> Self {
        Value::Float(Float::new(value))
    }
    pub fn text(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", x.get()),
            Value::Text(s) => write!(f, "'{s}'"),
        }
    }
}

/// A row of values; the order of columns is the operator's output order.
pub type Row = Vec<Value>;
