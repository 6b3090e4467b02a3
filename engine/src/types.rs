//! PostgreSQL type names as the engine sees them: normalisation of aliases (`integer` →
//! `int4`), classification for type inference, and the result types of operators and
//! aggregates. Invariant: `SqlType::sql()` is always valid type syntax inside `CAST(… AS …)`.

use std::fmt;

/// A PostgreSQL type, kept as SQL text (with its type modifier, e.g. `numeric(10,2)`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SqlType {
    sql: String,
}

/// The coarse families type inference needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeClass {
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Text,
    Varchar,
    Bpchar,
    Date,
    Timestamp,
    Timestamptz,
    Interval,
    /// A type without a default equality operator (json, xml, geometric types).
    NoEquality,
    Other,
}

impl SqlType {
    /// Builds a type from catalog or user text; common aliases become internal names.
    pub fn new(text: &str) -> Self {
        let trimmed = text.trim();
        let (base, modifier) = match trimmed.find('(') {
            Some(pos) => (trimmed[..pos].trim(), &trimmed[pos..]),
            None => (trimmed, ""),
        };
        let lower = base.to_ascii_lowercase();
        let canonical = match lower.as_str() {
            "integer" | "int" => "int4",
            "smallint" => "int2",
            "bigint" => "int8",
            "real" => "float4",
            "double precision" | "float" => "float8",
            "boolean" => "bool",
            "character varying" => "varchar",
            "character" | "char" => "bpchar",
            "decimal" => "numeric",
            "timestamp without time zone" => "timestamp",
            "timestamp with time zone" => "timestamptz",
            "time without time zone" => "time",
            "time with time zone" => "timetz",
            _ => "",
        };
        let sql = if canonical.is_empty() {
            trimmed.to_string()
        } else {
            format!("{canonical}{modifier}")
        };
        SqlType { sql }
    }

    pub fn int4() -> Self {
        SqlType::new("int4")
    }
    pub fn int8() -> Self {
        SqlType::new("int8")
    }
    pub fn numeric() -> Self {
        SqlType::new("numeric")
    }
    pub fn float8() -> Self {
        SqlType::new("float8")
    }
    pub fn bool() -> Self {
        SqlType::new("bool")
    }
    pub fn text() -> Self {
        SqlType::new("text")
    }
    /// The type of an untyped string literal before context resolves it.
    pub fn unknown() -> Self {
        SqlType::new("unknown")
    }

    /// The SQL spelling, valid inside `CAST(x AS …)`.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The name without type modifier, lowercase.
    pub fn base(&self) -> String {
        let base = match self.sql.find('(') {
            Some(pos) => &self.sql[..pos],
            None => &self.sql,
        };
        base.trim().to_ascii_lowercase()
    }

    pub fn class(&self) -> TypeClass {
        match self.base().as_str() {
            "int2" => TypeClass::Int2,
            "int4" => TypeClass::Int4,
            "int8" => TypeClass::Int8,
            "numeric" => TypeClass::Numeric,
            "float4" => TypeClass::Float4,
            "float8" => TypeClass::Float8,
            "bool" => TypeClass::Bool,
            "text" | "name" | "unknown" => TypeClass::Text,
            "varchar" => TypeClass::Varchar,
            "bpchar" => TypeClass::Bpchar,
            "date" => TypeClass::Date,
            "timestamp" => TypeClass::Timestamp,
            "timestamptz" => TypeClass::Timestamptz,
            "interval" => TypeClass::Interval,
            "json" | "xml" | "point" | "lseg" | "box" | "path" | "polygon" | "line" | "circle" => {
                TypeClass::NoEquality
            }
            _ => TypeClass::Other,
        }
    }

    pub fn is_unknown(&self) -> bool {
        self.base() == "unknown"
    }

    pub fn is_numeric_family(&self) -> bool {
        matches!(
            self.class(),
            TypeClass::Int2
                | TypeClass::Int4
                | TypeClass::Int8
                | TypeClass::Numeric
                | TypeClass::Float4
                | TypeClass::Float8
        )
    }

    pub fn is_integer(&self) -> bool {
        matches!(
            self.class(),
            TypeClass::Int2 | TypeClass::Int4 | TypeClass::Int8
        )
    }

    pub fn is_string(&self) -> bool {
        matches!(
            self.class(),
            TypeClass::Text | TypeClass::Varchar | TypeClass::Bpchar
        )
    }

    /// Whether values of this type can be grouped and compared for equality.
    pub fn has_equality(&self) -> bool {
        self.class() != TypeClass::NoEquality
    }

    /// The same type without its modifier (`numeric(10,2)` → `numeric`), for casts of
    /// computed values whose modifier PostgreSQL would not keep.
    pub fn without_modifier(&self) -> SqlType {
        SqlType { sql: self.base() }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)
    }
}

fn numeric_rank(t: &SqlType) -> u8 {
    match t.class() {
        TypeClass::Int2 => 1,
        TypeClass::Int4 => 2,
        TypeClass::Int8 => 3,
        TypeClass::Numeric => 4,
        TypeClass::Float4 => 5,
        TypeClass::Float8 => 6,
        _ => 0,
    }
}

/// The result type of arithmetic between two numeric types (PostgreSQL's implicit casts:
/// int2 < int4 < int8 < numeric < float4 < float8; int2 op int2 yields int2).
pub fn arithmetic_result(left: &SqlType, right: &SqlType) -> Option<SqlType> {
    if left.is_unknown() && right.is_numeric_family() {
        return Some(right.without_modifier());
    }
    if right.is_unknown() && left.is_numeric_family() {
        return Some(left.without_modifier());
    }
    let (l, r) = (numeric_rank(left), numeric_rank(right));
    if l == 0 || r == 0 {
        return None;
    }
    let winner = if l >= r { left } else { right };
    Some(winner.without_modifier())
}

/// The result type of `sum(x)` for an argument of type `arg`.
pub fn sum_result(arg: &SqlType) -> SqlType {
    match arg.class() {
        TypeClass::Int2 | TypeClass::Int4 => SqlType::int8(),
        TypeClass::Int8 | TypeClass::Numeric => SqlType::numeric(),
        TypeClass::Float4 => SqlType::new("float4"),
        TypeClass::Float8 => SqlType::float8(),
        _ => arg.without_modifier(),
    }
}

/// The result type of `avg(x)` for an argument of type `arg`.
pub fn avg_result(arg: &SqlType) -> SqlType {
    match arg.class() {
        TypeClass::Float4 | TypeClass::Float8 => SqlType::float8(),
        TypeClass::Interval => SqlType::new("interval"),
        _ => SqlType::numeric(),
    }
}

/// The common type of CASE branches / COALESCE arguments / UNION columns: the first known
/// non-`unknown` type, widened across numeric types.
pub fn common_type(types: &[SqlType]) -> SqlType {
    let mut result: Option<SqlType> = None;
    for t in types {
        if t.is_unknown() {
            continue;
        }
        result = Some(match result {
            None => t.clone(),
            Some(prev) if prev == *t => prev,
            Some(prev) => match arithmetic_result(&prev, t) {
                Some(wider) => wider,
                None if prev.is_string() && t.is_string() => SqlType::text(),
                None => prev,
            },
        });
    }
    result.unwrap_or_else(SqlType::text)
}
