//! The source tables the oracle writes to: `a`, `b`, `c` with primary keys, `n`, `m` without;
//! every table has a nullable join key `k`. Values come from small domains, so that joins fan
//! out, groups empty and refill, duplicates occur in the tables without a key, and NULL keys
//! are common. Together the columns cover int, bigint, numeric, text, bool and timestamp.

use proptest::prelude::*;

/// The values a column takes. A value is an `Option<i64>` (None is SQL NULL) that the domain
/// renders as a literal of the column's type, so rows shrink like integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Primary keys: 1..=40, never NULL.
    Id,
    /// Join keys: 0..=5 or NULL (about one in eight).
    Key,
    /// Small integers with many duplicates: 0..=3 or NULL.
    Small,
    /// Bigint amounts: 0..=20 or NULL.
    Amount,
    /// Numerics with one decimal, -5.0..=20.9, or NULL.
    Decimal,
    /// Numerics from a tiny set (0.5, 1.0, 2.5) or NULL, so rows without a key repeat.
    Coarse,
    /// Text: 'p', 'q', 'x' or NULL (shared by every text column, so text joins match).
    Word,
    /// Booleans or NULL.
    Flag,
    /// Timestamps on the hour, 2026-01-01 00:00 + 0..=50 hours, or NULL.
    Hour,
}

const WORDS: [&str; 3] = ["'p'", "'q'", "'x'"];
const COARSE: [i64; 3] = [5, 10, 25];

impl Domain {
    /// The SQL literal of `v` in this domain (`NULL` for None).
    pub fn literal(self, v: Option<i64>) -> String {
        let Some(v) = v else {
            return "NULL".into();
        };
        match self {
            Domain::Id | Domain::Key | Domain::Small | Domain::Amount => v.to_string(),
            Domain::Decimal | Domain::Coarse => {
                let sign = if v < 0 { "-" } else { "" };
                format!("{sign}{}.{}", v.abs() / 10, v.abs() % 10)
            }
            Domain::Word => WORDS[v.rem_euclid(WORDS.len() as i64) as usize].into(),
            Domain::Flag => (v != 0).to_string(),
            Domain::Hour => {
                let h = v.rem_euclid(24 * 28);
                format!("timestamp '2026-01-{:02} {:02}:00'", 1 + h / 24, h % 24)
            }
        }
    }

    /// Values of this domain; shrinking goes towards small non-NULL values.
    pub fn strategy(self) -> BoxedStrategy<Option<i64>> {
        let values: BoxedStrategy<i64> = match self {
            Domain::Id => return (1i64..=40).prop_map(Some).boxed(),
            Domain::Key => (0i64..=5).boxed(),
            Domain::Small => (0i64..=3).boxed(),
            Domain::Amount => (0i64..=20).boxed(),
            Domain::Decimal => (-50i64..=209).boxed(),
            Domain::Coarse => proptest::sample::select(COARSE.to_vec()).boxed(),
            Domain::Word => (0i64..WORDS.len() as i64).boxed(),
            Domain::Flag => (0i64..=1).boxed(),
            Domain::Hour => (0i64..=50).boxed(),
        };
        prop_oneof![7 => values.prop_map(Some), 1 => Just(None)].boxed()
    }
}

/// A column of a source table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub sql_type: &'static str,
    pub domain: Domain,
}

/// A source table. With `has_pk`, the first column is `id int PRIMARY KEY`.
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    pub has_pk: bool,
}

/// Just the name, so that printed steps stay short.
impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const fn col(name: &'static str, sql_type: &'static str, domain: Domain) -> Column {
    Column {
        name,
        sql_type,
        domain,
    }
}

pub static A: Table = Table {
    name: "a",
    has_pk: true,
    columns: &[
        col("id", "int", Domain::Id),
        col("k", "int", Domain::Key),
        col("v", "numeric", Domain::Decimal),
        col("t", "text", Domain::Word),
        col("f", "boolean", Domain::Flag),
    ],
};
pub static B: Table = Table {
    name: "b",
    has_pk: true,
    columns: &[
        col("id", "int", Domain::Id),
        col("k", "int", Domain::Key),
        col("w", "bigint", Domain::Amount),
        col("ts", "timestamp", Domain::Hour),
    ],
};
pub static C: Table = Table {
    name: "c",
    has_pk: true,
    columns: &[
        col("id", "int", Domain::Id),
        col("k", "int", Domain::Key),
        col("label", "text", Domain::Word),
    ],
};
pub static N: Table = Table {
    name: "n",
    has_pk: false,
    columns: &[col("k", "int", Domain::Key), col("x", "int", Domain::Small)],
};
pub static M: Table = Table {
    name: "m",
    has_pk: false,
    columns: &[
        col("k", "bigint", Domain::Key),
        col("y", "numeric", Domain::Coarse),
        col("s", "text", Domain::Word),
    ],
};

/// Every source table.
pub static TABLES: [&Table; 5] = [&A, &B, &C, &N, &M];

/// A row of a table: one value per column, in column order.
pub type Row = Vec<Option<i64>>;

impl Table {
    /// `CREATE TABLE …` for this table.
    pub fn ddl(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pk = if self.has_pk && i == 0 {
                    " PRIMARY KEY"
                } else {
                    ""
                };
                format!("{} {}{pk}", c.name, c.sql_type)
            })
            .collect();
        format!("CREATE TABLE {} ({})", self.name, cols.join(", "))
    }

    /// Position of the join key column `k`.
    pub fn key_column(&self) -> usize {
        self.columns.iter().position(|c| c.name == "k").unwrap_or(0)
    }

    /// Columns an UPDATE may set: all but the primary key.
    pub fn settable_columns(&self) -> Vec<usize> {
        let first = usize::from(self.has_pk);
        (first..self.columns.len()).collect()
    }

    /// A random row of this table.
    pub fn row_strategy(&self) -> BoxedStrategy<Row> {
        self.columns
            .iter()
            .map(|c| c.domain.strategy())
            .collect::<Vec<_>>()
            .boxed()
    }

    /// `(v1, v2, …)` for `row`.
    pub fn row_literal(&self, row: &Row) -> String {
        let vals: Vec<String> = self
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| c.domain.literal(*v))
            .collect();
        format!("({})", vals.join(", "))
    }

    /// `k = 3`, or `k IS NULL` for a NULL key.
    pub fn key_predicate(&self, key: Option<i64>) -> String {
        match key {
            Some(v) => format!("k = {v}"),
            None => "k IS NULL".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_render_every_type_and_null() {
        assert_eq!(Domain::Decimal.literal(Some(-5)), "-0.5");
        assert_eq!(Domain::Decimal.literal(Some(123)), "12.3");
        assert_eq!(Domain::Word.literal(Some(1)), "'q'");
        assert_eq!(Domain::Flag.literal(Some(0)), "false");
        assert_eq!(
            Domain::Hour.literal(Some(49)),
            "timestamp '2026-01-03 01:00'"
        );
        assert_eq!(Domain::Key.literal(None), "NULL");
    }

    #[test]
    fn ddl_puts_the_primary_key_on_id_only_for_keyed_tables() {
        assert_eq!(
            A.ddl(),
            "CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean)"
        );
        assert_eq!(M.ddl(), "CREATE TABLE m (k bigint, y numeric, s text)");
    }

    #[test]
    fn every_table_has_a_join_key_and_keyed_tables_start_with_id() {
        for t in TABLES {
            assert_eq!(t.columns[t.key_column()].name, "k", "{}", t.name);
            assert_eq!(t.has_pk, t.columns[0].name == "id", "{}", t.name);
            assert!(!t.settable_columns().is_empty());
        }
    }

    #[test]
    fn schema_covers_the_issue_types() {
        let types: Vec<&str> = TABLES
            .iter()
            .flat_map(|t| t.columns.iter().map(|c| c.sql_type))
            .collect();
        for ty in ["int", "bigint", "numeric", "text", "boolean", "timestamp"] {
            assert!(types.contains(&ty), "{ty}");
        }
    }
}
