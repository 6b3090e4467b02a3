//! Claims about planning errors (SQLSTATEs), "not differentiable" reasons, identities and
//! explain output.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "support/db.rs"]
mod db;

use engine::{explain, plan, Differentiability, EngineError, ExplainFormat, Identity, Reason};

fn error(sql: &str) -> EngineError {
    match plan(sql, &db::catalog()) {
        Err(e) => e,
        Ok(p) => panic!("{sql} planned: {:?}", p.differentiability),
    }
}

fn reason(sql: &str) -> Reason {
    match plan(sql, &db::catalog()).unwrap().differentiability {
        Differentiability::NotDifferentiable(r) => r,
        Differentiability::Differential => panic!("{sql} is differential"),
    }
}

#[test]
fn planning_errors_carry_postgres_sqlstates() {
    let cases = [
        ("SELEC k FROM a", "42601"),
        ("SELECT k FROM nowhere", "42P01"),
        ("SELECT nope FROM a", "42703"),
        ("SELECT k FROM a JOIN b ON a.g = b.g", "42702"),
        ("SELECT a.k FROM a JOIN a ON true", "42712"),
        ("SELECT k, k FROM a", "42701"),
        ("SELECT k FROM a WHERE x = 'text'::text", "42804"),
        ("SELECT g, x FROM a GROUP BY g", "42803"),
        ("INSERT INTO a VALUES (1, 2, 3)", "0A000"),
    ];
    for (sql, state) in cases {
        assert_eq!(error(sql).sqlstate(), state, "{sql}: {}", error(sql));
    }
}

#[test]
fn unsupported_constructs_are_not_differentiable_with_a_typed_reason() {
    assert!(matches!(
        reason("SELECT k, random() AS r FROM a"),
        Reason::VolatileFunction { .. }
    ));
    assert!(matches!(
        reason("SELECT k, now() AS t FROM a"),
        Reason::VolatileFunction { .. }
    ));
    assert!(matches!(
        reason("SELECT k FROM a ORDER BY k OFFSET 3"),
        Reason::LimitOrOffset { .. }
    ));
    assert!(matches!(
        reason("SELECT k, last_value(x) OVER (ORDER BY g) AS n FROM a"),
        Reason::WindowFunction { detail, .. } if detail.contains("ROWS frame")
    ));
    assert!(matches!(
        reason("WITH RECURSIVE r(n) AS (SELECT k FROM a UNION ALL SELECT n + 1 FROM r) SELECT n + 1 AS m FROM r"),
        Reason::RecursiveCte { detail } if detail.contains("whole result")
    ));
    assert!(matches!(
        reason("WITH RECURSIVE r(n) AS (SELECT k FROM a UNION SELECT r.n FROM r LEFT JOIN b ON b.y = r.n) SELECT * FROM r"),
        Reason::RecursiveCte { detail } if detail.contains("outer join")
    ));
    assert!(matches!(
        reason("SELECT string_agg(CAST(x AS text), ',') AS s FROM a"),
        Reason::OrderSensitiveAggregate { .. }
    ));
    assert!(matches!(
        reason("SELECT a.k FROM a LEFT JOIN c ON a.x = (SELECT max(y) FROM b)"),
        Reason::SubqueryInExpression
    ));
    assert!(matches!(
        reason("SELECT k, ARRAY(SELECT y FROM b) AS ys FROM a"),
        Reason::SubqueryInExpression | Reason::Construct { .. }
    ));
    assert!(matches!(
        reason("SELECT k FROM a WHERE x = ANY (SELECT y FROM b)"),
        Reason::SubqueryInExpression | Reason::Construct { .. }
    ));
    assert!(matches!(
        reason("SELECT k, (SELECT y FROM b WHERE b.g = a.g) AS y FROM a"),
        Reason::SubqueryShape { what } if what.contains("not a key of its table")
    ));
    assert!(matches!(
        reason("SELECT k, (SELECT sum(a.x) FROM b) AS s FROM a"),
        Reason::SubqueryShape { what } if what.contains("belongs to that query")
    ));
    assert!(matches!(
        reason("SELECT k FROM a WHERE x = (SELECT DISTINCT y FROM b WHERE b.k = a.k)"),
        Reason::SubqueryShape { what } if what.contains("DISTINCT")
    ));
    assert!(matches!(
        reason("SELECT k FROM a WHERE x = (SELECT y FROM b WHERE b.k = a.k UNION SELECT z FROM c)"),
        Reason::SubqueryShape { what } if what.contains("set operation")
    ));
    assert!(matches!(
        reason("SELECT DISTINCT ON (g) g, count(*) AS n FROM a GROUP BY ROLLUP (g)"),
        Reason::DistinctOn { .. }
    ));
    assert!(matches!(
        reason("SELECT k FROM generate_series(1, 3) AS k"),
        Reason::LateralOrTableFunction
    ));
}

/// Regression (oracle, sqlsmith seed 1): TABLESAMPLE was dropped from the plan, so the stream
/// table held every row. A clause the engine does not model must never be dropped silently.
#[test]
fn tablesample_is_not_differentiable_and_never_dropped() {
    let r = reason("SELECT k FROM a TABLESAMPLE BERNOULLI (0)");
    assert!(
        matches!(&r, Reason::Construct { construct } if construct == "TABLESAMPLE"),
        "{r}"
    );
    assert!(matches!(
        reason("SELECT k FROM a TABLESAMPLE SYSTEM (3.3) REPEATABLE (7)"),
        Reason::Construct { .. }
    ));
}

#[test]
fn not_differentiable_reasons_read_not_differentiable() {
    let r = reason("SELECT k FROM a OFFSET 1");
    assert!(r.to_string().starts_with("not differentiable: "), "{r}");
    assert_eq!(EngineError::NotDifferentiable(r).sqlstate(), "0A000");
}

#[test]
fn order_by_without_limit_is_ignored() {
    assert!(plan("SELECT k, x FROM a ORDER BY x", &db::catalog())
        .unwrap()
        .is_differential());
}

#[test]
fn identity_is_exact_key_columns_or_multiplicity() {
    let cat = db::catalog();
    let id = |sql: &str| plan(sql, &cat).unwrap().identity;
    assert_eq!(
        id("SELECT k, x FROM a"),
        Identity::Key {
            columns: vec!["k".into()]
        }
    );
    assert_eq!(
        id("SELECT x FROM a"),
        Identity::Key {
            columns: vec!["__pgt_id_0".into()]
        }
    );
    assert_eq!(
        id("SELECT a.x, b.y FROM a JOIN b ON a.g = b.g"),
        Identity::Key {
            columns: vec!["__pgt_id_0".into(), "__pgt_id_1".into()]
        }
    );
    assert_eq!(
        id("SELECT g, count(*) AS n FROM a GROUP BY g"),
        Identity::Key {
            columns: vec!["g".into()]
        }
    );
    assert_eq!(id("SELECT count(*) AS n FROM a"), Identity::Single);
    assert_eq!(id("SELECT v FROM d"), Identity::Bag);
    assert_eq!(
        id("SELECT k FROM a UNION ALL SELECT k FROM b"),
        Identity::Bag
    );
    assert_eq!(
        id("SELECT DISTINCT v FROM d"),
        Identity::Multiplicity {
            count_column: "__pgt_count".into()
        }
    );
}

#[test]
fn sources_list_only_the_columns_the_query_uses_plus_keys() {
    let p = plan("SELECT x FROM a WHERE g > 1", &db::catalog()).unwrap();
    assert_eq!(p.sources.len(), 1);
    assert_eq!(p.sources[0].columns, vec!["k", "x", "g"]);
    let p = plan("SELECT count(*) AS n FROM c", &db::catalog()).unwrap();
    assert_eq!(p.sources[0].columns, vec!["k"]);
}

#[test]
fn hidden_aggregate_columns_are_prefixed() {
    let p = plan(
        "SELECT g, sum(x) AS s, avg(x) AS a FROM a GROUP BY g",
        &db::catalog(),
    )
    .unwrap();
    let hidden: Vec<String> = p.hidden.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        hidden,
        vec![
            "__pgt_count",
            "__pgt_sum_0",
            "__pgt_cnt_0",
            "__pgt_sum_1",
            "__pgt_cnt_1"
        ]
    );
    assert_eq!(p.columns[1].type_name, "int8");
    assert_eq!(p.columns[2].type_name, "numeric");
}

#[test]
fn explain_marks_differential_operators_and_full_fallbacks() {
    let cat = db::catalog();
    let p = plan(
        "SELECT a.g, count(*) AS n FROM a JOIN b ON a.g = b.g GROUP BY a.g",
        &cat,
    )
    .unwrap();
    let text = explain(&p, ExplainFormat::Text);
    assert!(
        text.contains("Aggregate") && text.contains("DIFFERENTIAL: algebraic"),
        "{text}"
    );
    assert!(text.contains("bilinear"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&explain(&p, ExplainFormat::Json)).unwrap();
    assert_eq!(json[0]["Plan"]["Node Type"], "Project");
    assert!(explain(&p, ExplainFormat::Dot).starts_with("digraph"));
    let full = plan("SELECT k FROM a OFFSET 2", &cat).unwrap();
    let text = explain(&full, ExplainFormat::Text);
    assert!(text.contains("FULL: not differentiable: LIMIT"), "{text}");
}

/// PostgreSQL's deparser writes `[NOT] [I]LIKE` as the operators `~~`, `~~*`, `!~~`, `!~~*`
/// (a defining query rewritten after a source rename comes back in that form): each plans to
/// exactly what its keyword form plans to.
#[test]
fn like_operators_plan_as_their_keyword_forms() {
    let mut cat = engine::MemoryCatalog::new();
    cat.add_table(
        "public",
        "t",
        &[("id", "int4", false), ("s", "text", true)],
        &["id"],
    );
    for (op, keyword) in [
        ("~~", "LIKE"),
        ("~~*", "ILIKE"),
        ("!~~", "NOT LIKE"),
        ("!~~*", "NOT ILIKE"),
    ] {
        let by_op = plan(&format!("SELECT id FROM t WHERE (t.s {op} 'p%')"), &cat).unwrap();
        let by_kw = plan(&format!("SELECT id FROM t WHERE t.s {keyword} 'p%'"), &cat).unwrap();
        assert_eq!(
            by_op.differentiability,
            Differentiability::Differential,
            "{op}"
        );
        assert_eq!(
            engine::full_query_sql(&by_op).unwrap(),
            engine::full_query_sql(&by_kw).unwrap(),
            "{op}"
        );
    }
}

/// A stored column is matched by value when a delta is applied, so a result column of a type
/// without equality (here a cast to json, and a `json[]` column that a catalog says has none)
/// makes the query not differentiable instead of failing every refresh.
#[test]
fn result_columns_without_equality_are_not_differentiable() {
    struct NoArrayEquality(engine::MemoryCatalog);
    impl engine::Catalog for NoArrayEquality {
        fn resolve_table(&self, schema: Option<&str>, name: &str) -> Option<engine::TableInfo> {
            self.0.resolve_table(schema, name)
        }
        fn has_equality(&self, ty: &engine::SqlType) -> bool {
            !ty.sql().ends_with("[]") && ty.has_equality()
        }
    }
    let mut cat = engine::MemoryCatalog::new();
    cat.add_table(
        "public",
        "t",
        &[
            ("id", "int4", false),
            ("g", "int4", true),
            ("j", "json[]", true),
        ],
        &["id"],
    );
    let json_agg = plan("SELECT id, g::json AS ids FROM t", &cat).unwrap();
    assert!(
        matches!(
            &json_agg.differentiability,
            Differentiability::NotDifferentiable(Reason::TypeWithoutEquality { column, .. }) if column == "ids"
        ),
        "{:?}",
        json_agg.differentiability
    );
    let cat = NoArrayEquality(cat);
    let array = plan("SELECT id, j FROM t", &cat).unwrap();
    assert!(
        matches!(
            &array.differentiability,
            Differentiability::NotDifferentiable(Reason::TypeWithoutEquality { column, .. }) if column == "j"
        ),
        "{:?}",
        array.differentiability
    );
    assert!(plan("SELECT id, g FROM t", &cat).unwrap().is_differential());
}

/// Names of stream tables split and fold as PostgreSQL's `parse_ident` does; anything else is
/// refused (the extension reports it as 42602).
#[test]
fn qualified_names_split_like_parse_ident() {
    use engine::render::split_qualified_name as split;
    let ok = |s: &str, want: &[&str]| {
        assert_eq!(
            split(s),
            Some(want.iter().map(|w| w.to_string()).collect()),
            "{s}"
        )
    };
    ok("totals", &["totals"]);
    ok("Sales.Totals", &["sales", "totals"]);
    ok("\"My Schema\".\"T\"", &["My Schema", "T"]);
    ok(" s . t ", &["s", "t"]);
    ok("\"we\"\"ird\"", &["we\"ird"]);
    ok("_x$1", &["_x$1"]);
    ok("café", &["café"]);
    ok("a.b.c", &["a", "b", "c"]);
    for bad in [
        "",
        " ",
        "we\"ird",
        "\"\"",
        "x; drop table c; --",
        "1abc",
        "a.",
        ".a",
        "a..b",
        "\"open",
        "a b",
    ] {
        assert_eq!(split(bad), None, "{bad:?}");
    }
}
