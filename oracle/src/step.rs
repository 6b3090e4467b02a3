//! The operations of an oracle case — writes to the source tables and refreshes — their
//! proptest strategies (so failing sequences shrink) and their SQL. A write never fails by
//! itself: inserts skip conflicts, primary-key moves check the target id is free.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;

use crate::families::Group;
use crate::schema::{Domain, Row, Table};

/// Which rows a write touches.
#[derive(Debug, Clone)]
pub enum Target {
    /// The row with this primary key (keyed tables).
    Id(i64),
    /// Every row with this join key (a bulk write; NULL matches `k IS NULL`).
    Key(Option<i64>),
    /// One row of a table without a key: the smallest (or, with `last`, the largest) row with
    /// this join key in the order of all its columns. Rows that tie are identical, so which
    /// copy goes does not matter and a replay does the same.
    One { key: Option<i64>, last: bool },
}

/// One write, run as one statement or, when it has several, one transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert rows (several: a bulk insert); keyed tables skip conflicting ids.
    Insert {
        table: &'static Table,
        rows: Vec<Row>,
    },
    /// Insert `count` copies of `row`, ids counting up from the row's id on keyed tables.
    Fill {
        table: &'static Table,
        row: Row,
        count: i64,
    },
    /// Set columns (join keys included) of the targeted rows.
    Update {
        table: &'static Table,
        target: Target,
        set: Vec<(usize, Option<i64>)>,
    },
    /// Change a primary key, if the new one is free.
    MoveId {
        table: &'static Table,
        from: i64,
        to: i64,
    },
    /// Delete the targeted rows.
    Delete {
        table: &'static Table,
        target: Target,
    },
    /// Insert a row and delete it again in one transaction.
    InsertDelete { table: &'static Table, row: Row },
    /// Delete the rows of one join key on two tables in one transaction.
    DeleteBoth {
        left: &'static Table,
        right: &'static Table,
        key: Option<i64>,
    },
    /// Move one join key to another on two tables in one transaction.
    MoveKeyBoth {
        left: &'static Table,
        right: &'static Table,
        from: Option<i64>,
        to: Option<i64>,
    },
    /// Empty a table.
    Truncate { table: &'static Table },
}

/// A step of a case. `family` indexes the case's group's families.
#[derive(Debug, Clone)]
pub enum Step {
    Write(Write),
    /// Refresh every twin of the family and check them, in one REPEATABLE READ transaction.
    Refresh {
        family: usize,
    },
    /// The same, but the transaction first makes a write (the refresh must see its own
    /// transaction's changes exactly once).
    WriteRefresh {
        write: Write,
        family: usize,
    },
}

impl Target {
    fn predicate(&self, table: &Table) -> String {
        match self {
            Target::Id(id) => format!("id = {id}"),
            Target::Key(k) => table.key_predicate(*k),
            Target::One { key, last } => {
                let dir = if *last {
                    "DESC NULLS LAST"
                } else {
                    "ASC NULLS FIRST"
                };
                let order: Vec<String> = table
                    .columns
                    .iter()
                    .map(|c| format!("{} {dir}", c.name))
                    .collect();
                format!(
                    "ctid = (SELECT ctid FROM {t} WHERE {p} ORDER BY {o} LIMIT 1)",
                    t = table.name,
                    p = table.key_predicate(*key),
                    o = order.join(", ")
                )
            }
        }
    }
}

impl Write {
    /// The statements of this write, without BEGIN/COMMIT.
    pub fn statements(&self) -> Vec<String> {
        match self {
            Write::Insert { table, rows } => {
                let values: Vec<String> = rows.iter().map(|r| table.row_literal(r)).collect();
                vec![insert(table, &values.join(", "))]
            }
            Write::Fill { table, row, count } => vec![fill(table, row, *count)],
            Write::Update { table, target, set } => {
                let sets: Vec<String> = set
                    .iter()
                    .map(|(c, v)| {
                        let col = &table.columns[*c];
                        format!("{} = {}", col.name, col.domain.literal(*v))
                    })
                    .collect();
                vec![format!(
                    "UPDATE {} SET {} WHERE {}",
                    table.name,
                    sets.join(", "),
                    target.predicate(table)
                )]
            }
            Write::MoveId { table, from, to } => vec![format!(
                "UPDATE {t} SET id = {to} WHERE id = {from} AND NOT EXISTS (SELECT 1 FROM {t} WHERE id = {to})",
                t = table.name
            )],
            Write::Delete { table, target } => {
                vec![format!("DELETE FROM {} WHERE {}", table.name, target.predicate(table))]
            }
            Write::InsertDelete { table, row } => {
                let target = if table.has_pk {
                    Target::Id(row[0].unwrap_or(0))
                } else {
                    Target::One { key: row[table.key_column()], last: false }
                };
                vec![
                    insert(table, &table.row_literal(row)),
                    format!("DELETE FROM {} WHERE {}", table.name, target.predicate(table)),
                ]
            }
            Write::DeleteBoth { left, right, key } => [left, right]
                .iter()
                .map(|t| format!("DELETE FROM {} WHERE {}", t.name, t.key_predicate(*key)))
                .collect(),
            Write::MoveKeyBoth { left, right, from, to } => [left, right]
                .iter()
                .map(|t| {
                    format!(
                        "UPDATE {} SET k = {} WHERE {}",
                        t.name,
                        Domain::Key.literal(*to),
                        t.key_predicate(*from)
                    )
                })
                .collect(),
            Write::Truncate { table } => vec![format!("TRUNCATE {}", table.name)],
        }
    }

    /// The tables this write touches.
    pub fn tables(&self) -> Vec<&'static Table> {
        match self {
            Write::Insert { table, .. }
            | Write::Fill { table, .. }
            | Write::Update { table, .. }
            | Write::MoveId { table, .. }
            | Write::Delete { table, .. }
            | Write::InsertDelete { table, .. }
            | Write::Truncate { table } => vec![table],
            Write::DeleteBoth { left, right, .. } | Write::MoveKeyBoth { left, right, .. } => {
                vec![left, right]
            }
        }
    }
}

fn insert(table: &Table, values: &str) -> String {
    let conflict = if table.has_pk {
        " ON CONFLICT DO NOTHING"
    } else {
        ""
    };
    format!("INSERT INTO {} VALUES {values}{conflict}", table.name)
}

fn fill(table: &Table, row: &Row, count: i64) -> String {
    let cols: Vec<String> = table
        .columns
        .iter()
        .zip(row)
        .enumerate()
        .map(|(i, (c, v))| {
            if table.has_pk && i == 0 {
                "g".into()
            } else {
                format!("CAST({} AS {})", c.domain.literal(*v), c.sql_type)
            }
        })
        .collect();
    let first = if table.has_pk { row[0].unwrap_or(1) } else { 1 };
    let conflict = if table.has_pk {
        " ON CONFLICT DO NOTHING"
    } else {
        ""
    };
    format!(
        "INSERT INTO {} SELECT {} FROM generate_series({first}, {}) AS g{conflict}",
        table.name,
        cols.join(", "),
        first + count - 1
    )
}

fn target(table: &'static Table) -> BoxedStrategy<Target> {
    let key = Domain::Key.strategy();
    if table.has_pk {
        prop_oneof![
            3 => (1i64..=40).prop_map(Target::Id),
            1 => key.prop_map(Target::Key),
        ]
        .boxed()
    } else {
        prop_oneof![
            3 => (key.clone(), any::<bool>()).prop_map(|(key, last)| Target::One { key, last }),
            1 => key.prop_map(Target::Key),
        ]
        .boxed()
    }
}

fn assignments(table: &'static Table) -> BoxedStrategy<Vec<(usize, Option<i64>)>> {
    let columns = table.settable_columns();
    let most = columns.len().min(2);
    proptest::sample::subsequence(columns, 1..=most)
        .prop_flat_map(move |cs| {
            cs.into_iter()
                .map(|c| (Just(c), table.columns[c].domain.strategy()))
                .collect::<Vec<_>>()
        })
        .boxed()
}

/// Inserts of a few rows into the group's tables: the rows a case starts with.
pub fn insert_strategy(group: &'static Group) -> BoxedStrategy<Write> {
    select(group.tables.to_vec())
        .prop_flat_map(|table| {
            proptest::collection::vec(table.row_strategy(), 1..=6)
                .prop_map(move |rows| Write::Insert { table, rows })
        })
        .boxed()
}

/// Any write to the group's tables, weighted towards inserts and updates; out of about 250,
/// TRUNCATE has weight 1 (about once per case: each makes the next refreshes FULL).
pub fn write_strategy(group: &'static Group) -> BoxedStrategy<Write> {
    let tables = select(group.tables.to_vec());
    let keyed: Vec<&'static Table> = group.tables.iter().copied().filter(|t| t.has_pk).collect();
    let pairs: Vec<(&'static Table, &'static Table)> = group
        .tables
        .iter()
        .enumerate()
        .flat_map(|(i, l)| group.tables[i + 1..].iter().map(move |r| (*l, *r)))
        .collect();
    let key = || Domain::Key.strategy();
    let mut arms: Vec<(u32, BoxedStrategy<Write>)> =
        vec![
            (66, insert_strategy(group)),
            (
                12,
                tables
                    .clone()
                    .prop_flat_map(|table| {
                        (table.row_strategy(), 2i64..=20)
                            .prop_map(move |(row, count)| Write::Fill { table, row, count })
                    })
                    .boxed(),
            ),
            (
                72,
                tables
                    .clone()
                    .prop_flat_map(|table| {
                        (target(table), assignments(table))
                            .prop_map(move |(target, set)| Write::Update { table, target, set })
                    })
                    .boxed(),
            ),
            (
                42,
                tables
                    .clone()
                    .prop_flat_map(|table| {
                        target(table).prop_map(move |target| Write::Delete { table, target })
                    })
                    .boxed(),
            ),
            (
                18,
                tables
                    .clone()
                    .prop_flat_map(|table| {
                        table
                            .row_strategy()
                            .prop_map(move |row| Write::InsertDelete { table, row })
                    })
                    .boxed(),
            ),
            (
                15,
                (select(pairs.clone()), key())
                    .prop_map(|((left, right), key)| Write::DeleteBoth { left, right, key })
                    .boxed(),
            ),
            (
                12,
                (select(pairs), key(), key())
                    .prop_map(|((left, right), from, to)| Write::MoveKeyBoth {
                        left,
                        right,
                        from,
                        to,
                    })
                    .boxed(),
            ),
            (
                1,
                tables.prop_map(|table| Write::Truncate { table }).boxed(),
            ),
        ];
    if !keyed.is_empty() {
        arms.push((
            15,
            (select(keyed), 1i64..=40, 1i64..=40)
                .prop_map(|(table, from, to)| Write::MoveId { table, from, to })
                .boxed(),
        ));
    }
    Union::new_weighted(arms).boxed()
}

/// Any step of a case over `group`.
pub fn step_strategy(group: &'static Group) -> BoxedStrategy<Step> {
    let families = 0..group.families.len();
    prop_oneof![
        75 => write_strategy(group).prop_map(Step::Write),
        20 => families.clone().prop_map(|family| Step::Refresh { family }),
        5 => (write_strategy(group), families)
            .prop_map(|(write, family)| Step::WriteRefresh { write, family }),
    ]
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::GROUPS;
    use crate::schema::{A, M, N};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn one_row_target_on_a_bag_picks_by_all_columns() {
        let sql = Write::Delete {
            table: &M,
            target: Target::One {
                key: None,
                last: true,
            },
        }
        .statements();
        assert_eq!(
            sql,
            [
                "DELETE FROM m WHERE ctid = (SELECT ctid FROM m WHERE k IS NULL ORDER BY \
              k DESC NULLS LAST, y DESC NULLS LAST, s DESC NULLS LAST LIMIT 1)"
            ]
        );
    }

    #[test]
    fn insert_delete_is_one_transaction_of_two_statements() {
        let w = Write::InsertDelete {
            table: &A,
            row: vec![Some(7), Some(1), None, None, None],
        };
        assert_eq!(
            w.statements(),
            [
                "INSERT INTO a VALUES (7, 1, NULL, NULL, NULL) ON CONFLICT DO NOTHING",
                "DELETE FROM a WHERE id = 7"
            ]
        );
    }

    #[test]
    fn fill_casts_every_literal_and_counts_ids_on_keyed_tables() {
        let w = Write::Fill {
            table: &N,
            row: vec![None, Some(2)],
            count: 3,
        };
        assert_eq!(
            w.statements(),
            ["INSERT INTO n SELECT CAST(NULL AS int), CAST(2 AS int) FROM generate_series(1, 3) AS g"]
        );
        let w = Write::Fill {
            table: &A,
            row: vec![Some(5), Some(1), None, None, None],
            count: 2,
        };
        assert!(w.statements()[0].contains("SELECT g, CAST(1 AS int)"));
        assert!(w.statements()[0].ends_with("generate_series(5, 6) AS g ON CONFLICT DO NOTHING"));
    }

    #[test]
    fn generated_writes_touch_only_the_groups_tables() {
        let mut runner = TestRunner::deterministic();
        for g in GROUPS {
            let s = write_strategy(g);
            for _ in 0..300 {
                let w = s.new_tree(&mut runner).unwrap().current();
                for t in w.tables() {
                    assert!(
                        g.tables.iter().any(|gt| gt.name == t.name),
                        "{w:?} in {}",
                        g.name
                    );
                }
            }
        }
    }

    #[test]
    fn step_strategy_is_deterministic_per_seed() {
        let gen = || {
            let mut runner = TestRunner::deterministic();
            let s = step_strategy(&GROUPS[0]);
            (0..50)
                .map(|_| format!("{:?}", s.new_tree(&mut runner).unwrap().current()))
                .collect::<Vec<_>>()
        };
        assert_eq!(gen(), gen());
    }
}
