//! Golden tests of `explain_stream_table`'s output: one query per operator kind the planner
//! produces (scan, filter, project, the joins, semi and anti joins, algebraic and recomputed
//! aggregates, DISTINCT, UNION ALL, the counting set operations, a scalar subquery) and a FULL
//! fallback, each in text, JSON and DOT. Expected output lives in
//! `tests/golden/explain/<case>.{txt,json,dot}`; regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p engine --test explain` and review the diff. The JSON must parse
//! with PostgreSQL EXPLAIN's shape; the DOT output is rendered by graphviz in
//! ci/tests/explain.sh.
#![allow(clippy::unwrap_used)]

#[path = "support/db.rs"]
mod db;
#[path = "support/golden.rs"]
mod golden;

use engine::{explain_stream_table, plan, Annotations, ExplainFormat};

const CASES: &[(&str, &str)] = &[
    ("scan_filter", "SELECT k, x FROM a WHERE x > 1"),
    ("project", "SELECT k, x + 1 AS y FROM a"),
    (
        "inner_join",
        "SELECT a.k, b.k AS bk, a.x, b.y FROM a JOIN b ON a.g = b.g",
    ),
    (
        "left_join",
        "SELECT a.k, b.k AS bk, b.y FROM a LEFT JOIN b ON a.g = b.g",
    ),
    (
        "full_join",
        "SELECT a.k, b.k AS bk FROM a FULL JOIN b ON a.g = b.g",
    ),
    (
        "semi_join",
        "SELECT k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.g = a.g)",
    ),
    (
        "anti_join",
        "SELECT k FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.g = a.g)",
    ),
    (
        "aggregate_algebraic",
        "SELECT g, count(*) AS n, sum(x) AS s FROM a GROUP BY g",
    ),
    (
        "aggregate_min_max_in_place",
        "SELECT g, max(x) AS m FROM a GROUP BY g",
    ),
    (
        "aggregate_recompute",
        "SELECT g, max(CAST(x AS text)) AS m FROM a GROUP BY g",
    ),
    ("scalar_aggregate", "SELECT count(*) AS n FROM a"),
    ("distinct", "SELECT DISTINCT g FROM a"),
    ("union_all", "SELECT x FROM a UNION ALL SELECT y FROM b"),
    ("union", "SELECT x FROM a UNION SELECT y FROM b"),
    ("intersect", "SELECT g FROM a INTERSECT SELECT g FROM b"),
    ("except_all", "SELECT g FROM a EXCEPT ALL SELECT g FROM b"),
    (
        "scalar_subquery",
        "SELECT k, x FROM a WHERE x > (SELECT avg(y) FROM b)",
    ),
    (
        "window",
        "SELECT k, row_number() OVER (PARTITION BY g ORDER BY x DESC) AS rn FROM a",
    ),
    ("top_k", "SELECT k, x FROM a ORDER BY x DESC, k LIMIT 3"),
    ("full_fallback", "SELECT k FROM a ORDER BY k OFFSET 2"),
];

fn notes(name: &str, p: &engine::Plan) -> Annotations {
    let full = !matches!(p.differentiability, engine::Differentiability::Differential);
    Annotations {
        name: format!("public.{name}"),
        refresh_mode: "AUTO".into(),
        effective_mode: if full { "FULL" } else { "DIFFERENTIAL" }.into(),
        full_reason: match &p.differentiability {
            engine::Differentiability::NotDifferentiable(r) => Some(r.to_string()),
            engine::Differentiability::Differential => None,
        },
        indexes: vec![format!("{name}_pkey: CREATE UNIQUE INDEX … ({name})")],
        statements: vec![("fill".into(), "INSERT INTO \"pg_temp\".\"d\" …".into())],
    }
}

fn rendered(format: ExplainFormat) -> Vec<(String, String)> {
    CASES
        .iter()
        .map(|(name, sql)| {
            let p = plan(sql, &db::catalog()).unwrap();
            let out = explain_stream_table(Some(&p), &notes(name, &p), format);
            (name.to_string(), out)
        })
        .collect()
}

#[test]
fn text_matches_golden_files() {
    golden::check_files("tests/golden/explain", "txt", rendered(ExplainFormat::Text));
}

#[test]
fn json_matches_golden_files_and_has_explain_shape() {
    let out = rendered(ExplainFormat::Json);
    for (name, json) in &out {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let top = &v[0];
        assert!(top["Plan"]["Node Type"].is_string(), "{name}: {json}");
        assert!(top["Plan"]["Plans"].is_array(), "{name}");
        assert_eq!(top["Stream Table"], format!("public.{name}"));
        assert!(
            top["Indexes"].is_array() && top["Statements"].is_array(),
            "{name}"
        );
    }
    golden::check_files("tests/golden/explain", "json", out);
}

#[test]
fn dot_matches_golden_files() {
    let out = rendered(ExplainFormat::Dot);
    for (name, dot) in &out {
        assert!(dot.starts_with("digraph stream_table {"), "{name}");
        assert!(dot.trim_end().ends_with('}'), "{name}");
    }
    golden::check_files("tests/golden/explain", "dot", out);
}

/// Every operator kind the planner produces for a defining query appears in some case, each
/// marked with its strategy; the FULL fallback says why.
#[test]
fn the_cases_cover_every_operator_kind() {
    let all: String = rendered(ExplainFormat::Text)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for kind in [
        "Scan",
        "Filter",
        "Project",
        "Join",
        "SemiJoin",
        "Aggregate",
        "Distinct",
        "UnionAll",
        "SetOp",
    ] {
        assert!(all.contains(kind), "no case shows {kind}");
    }
    let full = rendered(ExplainFormat::Text)
        .into_iter()
        .find(|(n, _)| n == "full_fallback")
        .unwrap()
        .1;
    assert!(full.contains("FULL because: not differentiable"), "{full}");
    assert_eq!(ExplainFormat::parse("JSON"), Some(ExplainFormat::Json));
    assert_eq!(ExplainFormat::parse("yaml"), None);
}
