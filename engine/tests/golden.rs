//! Golden tests: the rendered full, delta and apply SQL of one query per operator is
//! byte-stable. Expected text lives in `tests/golden/<case>.sql`; regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p engine --test golden` and review the diff.
#![allow(clippy::unwrap_used)]

#[path = "support/db.rs"]
mod db;
#[path = "support/golden.rs"]
mod golden;

use engine::{
    apply_sql, delta_query_sql, full_query_sql, plan, ChangeBuffer, DeltaSources, RelName,
};

const CASES: &[(&str, &str)] = &[
    ("scan_filter", "SELECT k, x FROM a WHERE x > 1"),
    ("project_hidden_identity", "SELECT x + 1 AS y FROM a"),
    (
        "inner_join",
        "SELECT a.k, b.k AS bk, a.x, b.y FROM a JOIN b ON a.g = b.g",
    ),
    (
        "inner_join_three_tables",
        "SELECT a.x, b.y, c.z FROM a JOIN b ON a.g = b.g JOIN c ON c.k = b.y",
    ),
    (
        "aggregate_algebraic",
        "SELECT g, count(*) AS n, sum(x) AS s, avg(x) AS av FROM a GROUP BY g",
    ),
    (
        "aggregate_scalar",
        "SELECT count(*) AS n, sum(x) AS s FROM a",
    ),
    (
        "aggregate_min_max_in_place",
        "SELECT g, min(x) AS mn, max(x) AS mx FROM a GROUP BY g",
    ),
    (
        "aggregate_scalar_min_in_place",
        "SELECT min(x) AS mn, count(*) AS n FROM a",
    ),
    (
        "aggregate_max_text_recompute",
        "SELECT g, max(CAST(x AS text)) AS m FROM a GROUP BY g",
    ),
    (
        "correlated_subquery_narrowed",
        "SELECT k, x FROM a WHERE x >= (SELECT min(b.y) FROM b WHERE b.g = a.g)",
    ),
    (
        "aggregate_having",
        "SELECT g, count(*) AS n FROM a GROUP BY g HAVING count(*) > 1",
    ),
    ("distinct", "SELECT DISTINCT x FROM a"),
    (
        "distinct_over_join",
        "SELECT DISTINCT a.x, b.y FROM a JOIN b ON a.g = b.g",
    ),
    ("union_all_bag", "SELECT v FROM d UNION ALL SELECT x FROM a"),
    (
        "window_partitions",
        "SELECT k, g, row_number() OVER (PARTITION BY g ORDER BY x DESC) AS rn, sum(x) OVER (PARTITION BY g) AS s FROM a",
    ),
    ("top_k", "SELECT k, x FROM a ORDER BY x DESC, k LIMIT 3"),
    ("recursive_union", "WITH RECURSIVE r(s, t) AS (SELECT v, w FROM d UNION SELECT r.s, d.w FROM r JOIN d ON d.v = r.t) SELECT * FROM r"),
    ("recursive_union_not_null", "WITH RECURSIVE r(k) AS (SELECT k FROM a UNION SELECT b.k FROM r JOIN b ON b.g = r.k) SELECT * FROM r"),
    ("recursive_union_all", "WITH RECURSIVE r(k, n) AS (SELECT k, x FROM a UNION ALL SELECT r.k, d.w FROM r JOIN d ON d.v = r.n WHERE d.w > d.v) SELECT * FROM r"),
    ("union", "SELECT v FROM d UNION SELECT y FROM b"),
    (
        "left_join",
        "SELECT a.k, a.x, b.y FROM a LEFT JOIN b ON a.x = b.y",
    ),
    (
        "full_join",
        "SELECT a.k, b.k AS bk FROM a FULL JOIN b ON a.x = b.y",
    ),
    (
        "semi_join_exists",
        "SELECT k, x FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.g = a.g)",
    ),
    (
        "anti_join_not_in",
        "SELECT k, x FROM a WHERE x NOT IN (SELECT y FROM b)",
    ),
    ("intersect", "SELECT x FROM a INTERSECT SELECT y FROM b"),
    ("except_all", "SELECT x FROM a EXCEPT ALL SELECT v FROM d"),
    (
        "quoted_identifiers",
        "SELECT \"select\", count(*) AS \"Count\" FROM \"Order Items\" GROUP BY \"select\"",
    ),
];

fn catalog() -> engine::MemoryCatalog {
    let mut cat = db::catalog();
    cat.add_table(
        "public",
        "Order Items",
        &[("id", "int4", false), ("select", "text", true)],
        &["id"],
    );
    cat
}

fn render(sql: &str) -> String {
    let cat = catalog();
    let p = plan(sql, &cat).unwrap();
    let mut sources = DeltaSources::new();
    for s in &p.sources {
        sources = sources.with(
            s.id,
            ChangeBuffer {
                schema: "pgtrickle_changes".into(),
                name: format!("changes_{}", s.id),
                predicate: "pg_visible_in_snapshot(\"__pgt_xid\", $1) AND NOT pg_visible_in_snapshot(\"__pgt_xid\", $2)".into(),
            },
        );
    }
    let apply = apply_sql(
        &p,
        &RelName::new("public", "st"),
        &RelName::unqualified("__pgt_delta"),
    )
    .unwrap();
    format!(
        "-- query: {sql}\n-- identity: {:?}\n-- full\n{}\n-- delta\n{}\n-- apply\n{}\n",
        p.identity,
        full_query_sql(&p).unwrap(),
        delta_query_sql(&p, &sources, &RelName::new("public", "st")).unwrap(),
        apply.join(";\n")
    )
}

#[test]
fn rendered_sql_matches_golden_files_byte_for_byte() {
    golden::check(
        "tests/golden",
        CASES
            .iter()
            .map(|(name, sql)| (name.to_string(), render(sql))),
    );
}

#[test]
fn rendering_twice_gives_identical_text() {
    for (_, sql) in CASES {
        assert_eq!(render(sql), render(sql));
    }
}
