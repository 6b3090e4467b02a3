//! Deterministic SQL rendering: quoting, the writer that turns operator trees into nested
//! `SELECT`s (hoisting change-window-driven parts into CTEs), and the public entry points
//! for the full, delta and apply statements. Invariants: every identifier written is quoted
//! by `quote_ident`; output is byte-stable for a given plan; fragments expose columns
//! `"c0".."cN"` plus `"__pgt_weight"` exactly when they are weighted.

pub mod apply;
pub mod expr;
pub mod statements;

use std::collections::BTreeMap;

use crate::error::EngineError;
use crate::operator::Operator;

/// The weight column of delta relations.
pub const WEIGHT: &str = crate::names::WEIGHT;

/// Quotes an identifier for PostgreSQL (always, even when not needed).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal (standard_conforming_strings = on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Splits a possibly qualified name (`a`, `s.a`, `"My Schema"."T"`) into its identifiers with
/// PostgreSQL's rules (those of `parse_ident`): a quoted part keeps its case and `""` stands
/// for `"`; an unquoted part starts with a letter or `_`, continues with letters, digits, `_`
/// or `$`, and folds ASCII letters to lower case; whitespace may surround parts. `None` for
/// anything else (an empty string or part, a stray character, an unterminated quote).
pub fn split_qualified_name(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = name.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
    };
    loop {
        skip_space(&mut chars);
        let part = match chars.peek().copied() {
            Some('"') => {
                chars.next();
                let mut part = String::new();
                loop {
                    match chars.next() {
                        None => return None,
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                    }
                }
                if part.is_empty() {
                    return None;
                }
                part
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' || !c.is_ascii() => {
                let mut part = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii() {
                        part.push(c.to_ascii_lowercase());
                        chars.next();
                    } else {
                        break;
                    }
                }
                part
            }
            _ => return None,
        };
        parts.push(part);
        skip_space(&mut chars);
        match chars.next() {
            None => return Some(parts),
            Some('.') => {}
            Some(_) => return None,
        }
    }
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// The name of internal column `i` of a fragment.
pub fn col_name(i: usize) -> String {
    quote_ident(&format!("c{i}"))
}

/// `"alias"."c{i}"`.
pub fn col_ref(alias: &str, i: usize) -> String {
    format!("{}.{}", quote_ident(alias), col_name(i))
}

/// `"alias"."__pgt_weight"`.
pub fn weight_ref(alias: &str) -> String {
    format!("{}.{}", quote_ident(alias), quote_ident(WEIGHT))
}

/// Key columns of aliases `a` and `b` equal: with `null_safe`, nullable ones also when both are
/// NULL, written `(a.k = b.k OR (a.k IS NULL AND b.k IS NULL))` so that an index on `a`'s key
/// can still serve it (a BitmapOr), where `IS NOT DISTINCT FROM` could not; TRUE without keys.
pub(crate) fn key_match(keys: &[(&String, bool)], a: &str, b: &str, null_safe: bool) -> String {
    let (a, b) = (quote_ident(a), quote_ident(b));
    let parts: Vec<String> = keys
        .iter()
        .map(|(n, nullable)| {
            let n = quote_ident(n);
            if *nullable && null_safe {
                format!("({a}.{n} = {b}.{n} OR ({a}.{n} IS NULL AND {b}.{n} IS NULL))")
            } else {
                format!("{a}.{n} = {b}.{n}")
            }
        })
        .collect();
    if parts.is_empty() {
        "TRUE".to_string()
    } else {
        parts.join(" AND ")
    }
}

/// The rows of weighted fragment `input` (of `arity` columns) as one unweighted row per copy,
/// a FROM item for alias `"s"`: a row of weight w becomes w rows, one of weight ≤ 0 none. For
/// operators that number or collect copies (windows, TopK, aggregates without a weighted
/// formula).
pub(crate) fn copies(input: &Fragment, arity: usize) -> String {
    format!(
        "(SELECT {} FROM ({}) AS {} CROSS JOIN LATERAL generate_series(1, {}) AS {})",
        select_cols("s", arity, 0).join(", "),
        input.sql,
        quote_ident("s"),
        weight_ref("s"),
        quote_ident("g")
    )
}

/// `op` rendered as a FROM item of one unweighted row per copy ([`copies`] when its fragment
/// is weighted), for alias `"s"`.
pub(crate) fn each_copy(
    w: &mut SqlWriter<'_>,
    op: &crate::operator::Operator,
) -> Result<String, EngineError> {
    let input = w.input(op)?;
    Ok(rows(&input, op.arity()))
}

/// Fragment `f` (of `arity` columns) as a FROM item of unweighted rows: [`copies`] when it is
/// weighted, the fragment itself otherwise.
pub(crate) fn rows(f: &Fragment, arity: usize) -> String {
    if f.weighted {
        copies(f, arity)
    } else {
        format!("({})", f.sql)
    }
}

/// `"a"."c0" AS "c0", …` for `n` columns, renumbered from `offset`.
pub fn select_cols(alias: &str, n: usize, offset: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{} AS {}", col_ref(alias, i), col_name(i + offset)))
        .collect()
}

/// The consolidation of weighted rows, shared by `Consolidate` and `DeltaScan`:
/// `SELECT cols, CAST(weight AS int8) AS "__pgt_weight" FROM from GROUP BY group HAVING
/// weight <> 0`, where `weight` sums the rows' weights and `from` may carry a WHERE clause.
/// Rows whose weights cancel disappear; no GROUP BY when there are no columns (one row).
pub fn consolidated_select(cols: &[String], group: &[String], weight: &str, from: &str) -> String {
    let group_by = if group.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", group.join(", "))
    };
    let mut list = cols.to_vec();
    list.push(format!("CAST({weight} AS int8) AS {}", quote_ident(WEIGHT)));
    format!(
        "SELECT {} FROM {from}{group_by} HAVING {weight} <> 0",
        list.join(", ")
    )
}

/// One rendered operator: a complete `SELECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub sql: String,
    /// Whether the fragment has a `"__pgt_weight"` column (otherwise every row weighs 1).
    pub weighted: bool,
}

/// The change buffer of one source for one refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBuffer {
    /// Schema of the buffer relation, unquoted (e.g. `pgtrickle_changes`).
    pub schema: String,
    /// Name of the buffer relation, unquoted (e.g. `changes_16384`).
    pub name: String,
    /// A boolean SQL expression over the buffer's columns selecting the change window
    /// (written by the extension, inserted verbatim in parentheses).
    pub predicate: String,
}

/// Change buffers by source table id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaSources {
    pub buffers: BTreeMap<u32, ChangeBuffer>,
}

impl DeltaSources {
    pub fn new() -> Self {
        DeltaSources::default()
    }

    pub fn with(mut self, table_id: u32, buffer: ChangeBuffer) -> Self {
        self.buffers.insert(table_id, buffer);
        self
    }
}

/// A FROM item read in place of a table by the scans of its id (see `SqlWriter::relations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    /// The FROM item, exposing the scanned columns by name (and `__pgt_weight` if weighted).
    pub from: String,
    pub weighted: bool,
}

/// Renders operator trees; collects CTEs for the change-window-driven parts.
pub(crate) struct SqlWriter<'a> {
    pub(crate) sources: Option<&'a DeltaSources>,
    ctes: Vec<(String, String)>,
    cte_by_sql: BTreeMap<String, String>,
    /// Relations read in place of tables, by table id: a recursive CTE's reference to itself
    /// (`operator::recursive`: the stored result, the rows of a round). A `DeltaScan` of such
    /// an id is empty (the relation is held constant).
    pub(crate) relations: BTreeMap<u32, Relation>,
    /// The stream table's storage, for delta rules that read the result as it was before
    /// the change window (`Recursive`): its user columns by name.
    pub(crate) storage: Option<String>,
}

impl<'a> SqlWriter<'a> {
    pub(crate) fn new(sources: Option<&'a DeltaSources>) -> Self {
        SqlWriter {
            sources,
            ctes: Vec::new(),
            cte_by_sql: BTreeMap::new(),
            relations: BTreeMap::new(),
            storage: None,
        }
    }

    /// A writer for a statement of its own (a subquery with its own `WITH`) over the same
    /// change windows and storage, with no relation replaced.
    pub(crate) fn nested(&self) -> SqlWriter<'a> {
        let mut w = SqlWriter::new(self.sources);
        w.storage = self.storage.clone();
        w
    }

    /// Renders `op` as an input of another operator. Parts bounded by the change window are
    /// hoisted into (deduplicated) CTEs: PostgreSQL materialises a CTE referenced twice, which
    /// is what we want for small delta relations and never for full tables (their scans must
    /// stay inline so that join conditions reach their indexes).
    pub(crate) fn input(&mut self, op: &Operator) -> Result<Fragment, EngineError> {
        let fragment = op.render(self)?;
        if !op.is_delta_driven() {
            return Ok(fragment);
        }
        let name = match self.cte_by_sql.get(&fragment.sql) {
            Some(name) => name.clone(),
            None => {
                let name = quote_ident(&crate::names::cte(self.ctes.len() + 1));
                self.ctes.push((name.clone(), fragment.sql.clone()));
                self.cte_by_sql.insert(fragment.sql, name.clone());
                name
            }
        };
        Ok(Fragment {
            sql: format!("SELECT * FROM {name}"),
            weighted: fragment.weighted,
        })
    }

    /// Adds a CTE named `name` (a `names` constant, unquoted) after those collected so far:
    /// a statement's own parts that later parts read more than once.
    pub(crate) fn cte(&mut self, name: &str, sql: String) {
        self.ctes.push((quote_ident(name), sql));
    }

    /// The collected CTEs as `name AS (sql)` items.
    fn items(&self) -> Vec<String> {
        self.ctes
            .iter()
            .map(|(name, sql)| format!("{name} AS ({sql})"))
            .collect()
    }

    /// Prefixes `body` with the collected CTEs.
    pub(crate) fn finish(self, body: &str) -> String {
        if self.ctes.is_empty() {
            return body.to_string();
        }
        format!("WITH {}\n{}", self.items().join(",\n"), body)
    }

    /// Prefixes `body` with `WITH RECURSIVE`, the collected CTEs and then `recursive`
    /// (complete `name(cols) AS (…)` items, which may read the collected ones and each other).
    pub(crate) fn finish_recursive(self, recursive: Vec<String>, body: &str) -> String {
        let mut items = self.items();
        items.extend(recursive);
        format!("WITH RECURSIVE {}\n{}", items.join(",\n"), body)
    }
}
