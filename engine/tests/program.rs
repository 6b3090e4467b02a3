//! Golden tests of the maintenance program: every statement the extension runs for a stream
//! table (storage DDL, FULL statement, delta table, fill, apply, clear, capture) is byte-stable
//! for one query per plan shape. Expected text lives in `tests/golden/program/<case>.sql`;
//! regenerate with `UPDATE_GOLDEN=1 cargo test -p engine --test program` and review the diff.
#![allow(clippy::unwrap_used)]

#[path = "support/db.rs"]
mod db;
#[path = "support/golden.rs"]
mod golden;

use engine::{full_statement, names, plan, program, Program, ProgramInput, RelName};

const CASES: &[(&str, &str)] = &[
    ("keyed_filter", "SELECT k, x FROM a WHERE x > 1"),
    ("keyless_projection", "SELECT x + 1 AS y FROM a"),
    (
        "grouped",
        "SELECT g, count(*) AS n, sum(x) AS s FROM a GROUP BY g",
    ),
    ("scalar_aggregate", "SELECT count(*) AS n FROM a"),
    (
        "join",
        "SELECT a.k, b.k AS bk, a.x, b.y FROM a JOIN b ON a.g = b.g",
    ),
    // A recursion: the storage indexed on the column its recursive term joins on.
    (
        "recursive",
        "WITH RECURSIVE r(s, t) AS (SELECT v, w FROM d UNION SELECT r.s, d.w FROM r JOIN d ON d.v = r.t) SELECT * FROM r",
    ),
    // Not differentiable: a FULL statement and storage only, nothing captured.
    ("full_only", "SELECT k, random() AS r FROM a"),
];

fn input(p: &engine::Plan) -> ProgramInput {
    ProgramInput {
        storage: RelName::new("public", "st"),
        delta_table: RelName::new("pg_temp", &names::delta_table(1, 10)),
        window: p
            .sources
            .iter()
            .map(|s| (s.id, format!("window_{}($1, $2, $3)", s.id)))
            .collect(),
        full_extra: "frontier()".into(),
        delta_extra: "frontier(), markers()".into(),
    }
}

fn render(name: &str, sql: &str) -> (String, Program) {
    let p = plan(sql, &db::catalog()).unwrap();
    let prog = program(&p, &input(&p)).unwrap();
    let mut out = format!(
        "-- {name}: {sql}\n-- storage\n{}\n-- full\n{}\n",
        prog.storage_ddl.join(";\n"),
        prog.full
    );
    match &prog.differential {
        Some(d) => out.push_str(&format!(
            "-- delta table\n{}\n-- fill (weighted: {})\n{}\n-- counts\n{}\n-- apply\n{}\n-- clear\n{}\n",
            d.table_ddl,
            d.weighted,
            d.fill,
            d.counts.as_deref().unwrap_or("(counted by fill)"),
            d.apply.join(";\n"),
            d.clear
        )),
        None => out.push_str("-- no differential program\n"),
    }
    for c in &prog.capture {
        out.push_str(&format!(
            "-- capture {}: {}\n",
            c.source,
            c.columns.join(", ")
        ));
    }
    (out, prog)
}

#[test]
fn programs_match_golden_files_byte_for_byte() {
    golden::check(
        "tests/golden/program",
        CASES
            .iter()
            .map(|(name, sql)| (name.to_string(), render(name, sql).0)),
    );
}

/// The contracts the extension relies on when it runs a program (engine/src/program.rs).
#[test]
fn programs_keep_the_row_contracts_the_extension_relies_on() {
    for (name, sql) in CASES {
        let (_, prog) = render(name, sql);
        assert!(
            prog.storage_ddl[0].starts_with("CREATE TABLE \"public\".\"st\" ("),
            "{name}"
        );
        assert!(
            prog.full.contains("INSERT INTO \"public\".\"st\" ("),
            "{name}"
        );
        assert!(prog.full.ends_with(", frontier()"), "{name}: {}", prog.full);
        // A FULL refresh renders this statement alone.
        let p = plan(sql, &db::catalog()).unwrap();
        let alone = full_statement(&p, &RelName::new("public", "st"), "frontier()").unwrap();
        assert_eq!(prog.full, alone, "{name}");
        match &prog.differential {
            Some(d) => {
                let table = "\"pg_temp\".\"__pgt_delta_1_10\"";
                assert!(d
                    .table_ddl
                    .starts_with(&format!("CREATE TEMP TABLE {table} AS ")));
                assert!(d.table_ddl.ends_with(" WITH NO DATA"), "{name}");
                // The delta table's shape reads no buffer row; the fill reads the windows.
                assert!(!d.table_ddl.contains("window_"), "{name}");
                assert!(d.fill.contains("window_"), "{name}");
                assert!(d.fill.contains(&format!("INSERT INTO {table} ")), "{name}");
                assert!(d.fill.ends_with(", frontier(), markers()"), "{name}");
                // Weighted deltas end in a weight column, grouped ones carry the count change.
                let last = if d.weighted {
                    names::WEIGHT
                } else {
                    names::COUNT
                };
                assert!(d.table_ddl.contains(&format!("AS \"{last}\"")), "{name}");
                // Grouped deltas count the rows they apply with a statement of their own,
                // read from the delta table and the storage before the apply.
                assert_eq!(d.counts.is_some(), !d.weighted, "{name}");
                if let Some(c) = &d.counts {
                    assert!(
                        c.contains(table) && c.contains("\"public\".\"st\""),
                        "{name}"
                    );
                }
                assert!(!d.apply.is_empty(), "{name}");
                assert!(d.apply.iter().all(|a| a.contains(table)), "{name}");
                assert_eq!(d.clear, format!("DELETE FROM {table}"));
                assert!(!prog.capture.is_empty(), "{name}");
            }
            None => assert!(prog.capture.is_empty(), "{name}"),
        }
    }
}
