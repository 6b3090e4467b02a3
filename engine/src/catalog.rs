//! The catalog boundary: what the engine needs to know about tables and functions, as a trait
//! the extension implements over `pg_catalog` and tests implement in memory.
//! Invariant: names passed to and returned from a `Catalog` are already case-folded
//! (unquoted identifiers lowercased), exactly as PostgreSQL stores them.

use crate::types::SqlType;

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// The type as SQL text: an internal name (`int4`, `bpchar`) or `format_type()` output.
    pub type_name: String,
    pub nullable: bool,
}

/// A table (or anything with rows and a stable id: a stream table's storage is a table too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// A stable id (the relation's OID in PostgreSQL).
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    /// Primary key column names, empty when the table has none.
    pub primary_key: Vec<String>,
    /// Unique indexes (column names each); used as identity when all columns are NOT NULL.
    pub unique_indexes: Vec<Vec<String>>,
}

impl TableInfo {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The columns that identify a row exactly: the primary key, else the first unique index
    /// whose columns are all NOT NULL. `None` when rows may be duplicates.
    pub fn identity_columns(&self) -> Option<Vec<usize>> {
        let by_names = |names: &[String]| -> Option<Vec<usize>> {
            names.iter().map(|n| self.column_index(n)).collect()
        };
        if !self.primary_key.is_empty() {
            return by_names(&self.primary_key);
        }
        self.unique_indexes
            .iter()
            .filter(|idx| !idx.is_empty())
            .filter_map(|idx| by_names(idx))
            .find(|cols| cols.iter().all(|&i| !self.columns[i].nullable))
    }
}

/// PostgreSQL's `provolatile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

/// What the engine needs to know about a (non-aggregate) function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    pub volatility: Volatility,
    /// The result type; `None` means "same as the first argument".
    pub return_type: Option<String>,
}

/// The kind of an aggregate function (`pg_aggregate.aggkind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    /// `agg(args)`.
    Normal,
    /// `agg(direct args) WITHIN GROUP (ORDER BY …)`: `percentile_cont`, `mode`, ….
    OrderedSet,
    /// An ordered-set aggregate whose direct arguments are a hypothetical row: `rank(…)
    /// WITHIN GROUP (ORDER BY …)`, ….
    Hypothetical,
}

/// What the planner must know of a function name before it plans a call: whether it is an
/// aggregate (and of which kind) and whether it returns a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionKind {
    pub aggregate: Option<AggregateKind>,
    pub set_returning: bool,
}

/// The kind of a built-in function by name (see [`Catalog::function_kind`]).
pub fn builtin_function_kind(name: &str) -> FunctionKind {
    FunctionKind {
        aggregate: builtin_aggregate_kind(name),
        set_returning: builtin_set_returning(name),
    }
}

/// PostgreSQL's common built-in set-returning functions.
fn builtin_set_returning(name: &str) -> bool {
    matches!(
        name,
        "unnest"
            | "generate_series"
            | "generate_subscripts"
            | "json_array_elements"
            | "json_array_elements_text"
            | "jsonb_array_elements"
            | "jsonb_array_elements_text"
            | "json_each"
            | "json_each_text"
            | "jsonb_each"
            | "jsonb_each_text"
            | "json_object_keys"
            | "jsonb_object_keys"
            | "json_populate_recordset"
            | "jsonb_populate_recordset"
            | "json_to_recordset"
            | "jsonb_to_recordset"
            | "jsonb_path_query"
            | "regexp_matches"
            | "regexp_split_to_table"
            | "string_to_table"
    )
}

/// PostgreSQL's built-in aggregates by name, with their kind.
fn builtin_aggregate_kind(name: &str) -> Option<AggregateKind> {
    match name {
        "avg"
        | "bit_and"
        | "bit_or"
        | "bit_xor"
        | "bool_and"
        | "bool_or"
        | "count"
        | "every"
        | "max"
        | "min"
        | "sum"
        | "string_agg"
        | "array_agg"
        | "json_agg"
        | "jsonb_agg"
        | "json_object_agg"
        | "jsonb_object_agg"
        | "xmlagg"
        | "range_agg"
        | "range_intersect_agg"
        | "corr"
        | "covar_pop"
        | "covar_samp"
        | "regr_avgx"
        | "regr_avgy"
        | "regr_count"
        | "regr_intercept"
        | "regr_r2"
        | "regr_slope"
        | "regr_sxx"
        | "regr_sxy"
        | "regr_syy"
        | "stddev"
        | "stddev_pop"
        | "stddev_samp"
        | "variance"
        | "var_pop"
        | "var_samp" => Some(AggregateKind::Normal),
        "percentile_cont" | "percentile_disc" | "mode" => Some(AggregateKind::OrderedSet),
        "rank" | "dense_rank" | "percent_rank" | "cume_dist" => Some(AggregateKind::Hypothetical),
        _ => None,
    }
}

/// Columns of a relation as (name, type as SQL text).
pub type Columns = Vec<(String, String)>;

/// Name resolution for the planner.
pub trait Catalog {
    /// Resolves a table by optional schema and name (search_path applies when `schema` is
    /// `None`). Returns `None` when no such table is visible.
    fn resolve_table(&self, schema: Option<&str>, name: &str) -> Option<TableInfo>;

    /// Looks up a function by (folded) name and argument types. The default knows common
    /// PostgreSQL built-ins; the extension may answer from `pg_proc` instead.
    fn function(&self, name: &str, arg_types: &[SqlType]) -> Option<FunctionInfo> {
        builtin_function(name, arg_types)
    }

    /// What functions named `name` (in `schema`, or else visible on the search_path; both
    /// case-folded, `pg_catalog` given as `None`) are: an aggregate of which kind, a
    /// set-returning function (any overload returning a set counts). The default knows
    /// PostgreSQL's built-ins; the extension asks `pg_proc` and `pg_aggregate`, so
    /// user-defined aggregates are aggregates too, never taken for scalar functions.
    fn function_kind(&self, schema: Option<&str>, name: &str) -> FunctionKind {
        match schema {
            None => builtin_function_kind(name),
            Some(_) => FunctionKind::default(),
        }
    }

    /// The type PostgreSQL gives the scalar expression `sql` (its column references written
    /// as `CAST(NULL AS type)`), as SQL text, or `None` when this catalog cannot tell (then
    /// the planner types only the forms whose type is fixed, and refuses the others). The
    /// extension answers with PostgreSQL's parse analysis.
    fn expression_type(&self, sql: &str) -> Option<String> {
        let _ = sql;
        None
    }

    /// The columns (name, type as SQL text) PostgreSQL gives the FROM item `sql` (a function
    /// call over `CAST(NULL AS type)` arguments, with its alias), or `None` when this catalog
    /// cannot tell (the planner then refuses the item). The extension answers with PostgreSQL's
    /// parse analysis of `SELECT * FROM sql`.
    fn relation_columns(&self, sql: &str) -> Option<Columns> {
        let _ = sql;
        None
    }

    /// Whether values of `ty` can be compared for equality, which maintaining a column of it
    /// differentially needs (rows are matched by value). The default decides by the type's
    /// name; the extension asks PostgreSQL's type cache, which also sees through domains,
    /// arrays and composite types.
    fn has_equality(&self, ty: &SqlType) -> bool {
        ty.has_equality()
    }
}

/// Functions whose value changes between refreshes even though PostgreSQL marks some of them
/// STABLE: time and transaction functions. They make a query not differentiable.
pub const NON_REPEATABLE_FUNCTIONS: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "clock_timestamp",
    "timeofday",
    "txid_current",
    "pg_current_xact_id",
    "current_user",
    "session_user",
    "user",
];

/// Built-in knowledge used by `Catalog::function`'s default implementation.
pub fn builtin_function(name: &str, arg_types: &[SqlType]) -> Option<FunctionInfo> {
    let first = arg_types.first().cloned();
    let same = |volatility| {
        Some(FunctionInfo {
            volatility,
            return_type: first
                .as_ref()
                .map(|t| t.without_modifier().sql().to_string()),
        })
    };
    let typed = |volatility, t: &str| {
        Some(FunctionInfo {
            volatility,
            return_type: Some(t.to_string()),
        })
    };
    use Volatility::{Immutable, Stable, Volatile};
    match name {
        "random" | "setseed" | "nextval" | "currval" | "lastval" | "setval" | "clock_timestamp"
        | "timeofday" | "gen_random_uuid" | "uuid_generate_v4" | "txid_current"
        | "pg_current_xact_id" => typed(Volatile, "text"),
        "now"
        | "current_timestamp"
        | "statement_timestamp"
        | "transaction_timestamp"
        | "localtimestamp" => typed(Stable, "timestamptz"),
        "current_date" => typed(Stable, "date"),
        "abs" | "round" | "trunc" | "floor" | "ceil" | "ceiling" | "sign" | "mod" | "greatest"
        | "least" => same(Immutable),
        "upper" | "lower" | "btrim" | "ltrim" | "rtrim" | "trim" | "replace" | "substr"
        | "substring" | "left" | "right" | "lpad" | "rpad" | "reverse" | "initcap" | "md5"
        | "repeat" | "split_part" | "translate" => typed(Immutable, "text"),
        "concat" | "concat_ws" | "to_char" => typed(Stable, "text"),
        "length" | "char_length" | "octet_length" | "strpos" | "position" => {
            typed(Immutable, "int4")
        }
        "sqrt" | "exp" | "ln" | "log" | "power" | "pow" => same(Immutable),
        "date_trunc" | "date_part" | "extract" => typed(Immutable, "float8"),
        _ => None,
    }
}

/// An in-memory catalog for tests and tools: tables in schemas, resolved through a
/// search path.
#[derive(Debug, Clone, Default)]
pub struct MemoryCatalog {
    tables: Vec<TableInfo>,
    search_path: Vec<String>,
}

impl MemoryCatalog {
    /// A catalog whose search path is `public`.
    pub fn new() -> Self {
        MemoryCatalog {
            tables: Vec::new(),
            search_path: vec!["public".to_string()],
        }
    }

    pub fn with_search_path(mut self, schemas: &[&str]) -> Self {
        self.search_path = schemas.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn add(&mut self, table: TableInfo) {
        self.tables.push(table);
    }

    /// Convenience: a table with `(name, type, nullable)` columns and a primary key.
    pub fn add_table(
        &mut self,
        schema: &str,
        name: &str,
        columns: &[(&str, &str, bool)],
        primary_key: &[&str],
    ) -> u32 {
        let id = 16384 + u32::try_from(self.tables.len()).unwrap_or(0);
        self.tables.push(TableInfo {
            id,
            schema: schema.to_string(),
            name: name.to_string(),
            columns: columns
                .iter()
                .map(|(n, t, nullable)| ColumnInfo {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    nullable: *nullable,
                })
                .collect(),
            primary_key: primary_key.iter().map(|s| s.to_string()).collect(),
            unique_indexes: Vec::new(),
        });
        id
    }

    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }
}

impl Catalog for MemoryCatalog {
    fn resolve_table(&self, schema: Option<&str>, name: &str) -> Option<TableInfo> {
        let find = |s: &str| {
            self.tables
                .iter()
                .find(|t| t.schema == s && t.name == name)
                .cloned()
        };
        match schema {
            Some(s) => find(s),
            None => self.search_path.iter().find_map(|s| find(s)),
        }
    }
}
