//! Every reason the planner refuses DIFFERENTIAL for has a query that produces it.
//! `name_of` matches `Reason` exhaustively, so a new reason does not compile until it is
//! named there; once it is also in `ALL`, the test fails until a query produces it. The same queries run against a
//! live server in slt/notices/fallback_reasons.slt, which checks the NOTICE of each and the
//! reason in the refresh history.
#![allow(clippy::unwrap_used)]

#[path = "support/db.rs"]
mod db;

use std::collections::BTreeSet;

use engine::{plan, Differentiability, MemoryCatalog, Reason};

fn name_of(r: &Reason) -> &'static str {
    match r {
        Reason::VolatileFunction { .. } => "VolatileFunction",
        Reason::NotImmutable { .. } => "NotImmutable",
        Reason::LimitOrOffset { .. } => "LimitOrOffset",
        Reason::WindowFunction { .. } => "WindowFunction",
        Reason::RecursiveCte { .. } => "RecursiveCte",
        Reason::UnsupportedAggregate { .. } => "UnsupportedAggregate",
        Reason::OrderSensitiveAggregate { .. } => "OrderSensitiveAggregate",
        Reason::SubqueryInExpression => "SubqueryInExpression",
        Reason::SubqueryShape { .. } => "SubqueryShape",
        Reason::DeltaTooLarge { .. } => "DeltaTooLarge",
        Reason::TooManyTables { .. } => "TooManyTables",
        Reason::TypeWithoutEquality { .. } => "TypeWithoutEquality",
        Reason::DistinctOn { .. } => "DistinctOn",
        Reason::GroupingSets { .. } => "GroupingSets",
        Reason::LateralOrTableFunction => "LateralOrTableFunction",
        Reason::SetReturningFunction { .. } => "SetReturningFunction",
        Reason::Construct { .. } => "Construct",
    }
}

/// Every reason, as `name_of` names it (extend both together).
const ALL: &[&str] = &[
    "VolatileFunction",
    "NotImmutable",
    "LimitOrOffset",
    "WindowFunction",
    "RecursiveCte",
    "UnsupportedAggregate",
    "OrderSensitiveAggregate",
    "SubqueryInExpression",
    "SubqueryShape",
    "DeltaTooLarge",
    "TooManyTables",
    "TypeWithoutEquality",
    "DistinctOn",
    "GroupingSets",
    "LateralOrTableFunction",
    "SetReturningFunction",
    "Construct",
];

/// Reasons only the extension gives: PostgreSQL's analysis of the query (function and
/// operator volatility from its catalog), which the in-memory catalog does not model.
const EXTENSION_ONLY: &[&str] = &["NotImmutable"];

fn catalog() -> MemoryCatalog {
    let mut cat = db::catalog();
    cat.add_table(
        "public",
        "docs",
        &[("id", "int4", false), ("body", "json", true)],
        &["id"],
    );
    cat
}

fn wide_join(n: usize) -> String {
    let from: Vec<String> = (0..n).map(|i| format!("a AS t{i}")).collect();
    let on: Vec<String> = (1..n).map(|i| format!("t{i}.k = t0.k")).collect();
    format!(
        "SELECT t0.k FROM {} WHERE {}",
        from.join(", "),
        on.join(" AND ")
    )
}

/// One query per reason (what `\notices` shows for each is in the slt file).
pub fn cases() -> Vec<(&'static str, String)> {
    vec![
        ("VolatileFunction", "SELECT k, random() AS r FROM a".into()),
        ("LimitOrOffset", "SELECT k FROM a ORDER BY k OFFSET 3".into()),
        (
            "WindowFunction",
            "SELECT k, last_value(x) OVER (ORDER BY g) AS n FROM a".into(),
        ),
        (
            "RecursiveCte",
            "WITH RECURSIVE r(n) AS (SELECT k FROM a UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT count(*) AS c FROM r".into(),
        ),
        (
            "UnsupportedAggregate",
            "SELECT g, percentile_cont(0.5) AS m FROM a GROUP BY g".into(),
        ),
        (
            "OrderSensitiveAggregate",
            "SELECT string_agg(CAST(x AS text), ',') AS s FROM a".into(),
        ),
        (
            "SubqueryInExpression",
            "SELECT a.k FROM a LEFT JOIN c ON a.x = (SELECT max(y) FROM b)".into(),
        ),
        (
            "SubqueryShape",
            "SELECT k, (SELECT y FROM b WHERE b.g = a.g) AS y FROM a".into(),
        ),
        (
            "DeltaTooLarge",
            "SELECT k, (SELECT avg(y) FROM b WHERE b.k < a.k) AS below, \
             (SELECT count(*) FROM b WHERE b.y * a.k > 20) AS dear, \
             (SELECT max(y) FROM b WHERE b.k > a.k) AS above \
             FROM a WHERE k > 0 OR EXISTS (SELECT 1 FROM b WHERE b.k < a.k AND b.g = 1)"
                .into(),
        ),
        ("TooManyTables", wide_join(24)),
        ("TypeWithoutEquality", "SELECT id, body FROM docs".into()),
        (
            "DistinctOn",
            "SELECT DISTINCT ON (g) g, count(*) AS n FROM a GROUP BY ROLLUP (g)".into(),
        ),
        (
            "GroupingSets",
            "SELECT g, count(*) AS n FROM a GROUP BY CUBE (g, x, k, g + 1, x + 1, k + 1, g + 2)".into(),
        ),
        (
            "LateralOrTableFunction",
            "SELECT k FROM generate_series(1, 3) AS k".into(),
        ),
        (
            "SetReturningFunction",
            "SELECT k, generate_series(1, x) AS s, generate_series(1, g) AS t FROM a".into(),
        ),
        ("Construct", "SELECT k FROM a TABLESAMPLE BERNOULLI (50)".into()),
    ]
}

#[test]
fn every_refusal_reason_has_a_query_that_produces_it() {
    let cat = catalog();
    let mut produced = BTreeSet::new();
    for (want, sql) in cases() {
        let p = plan(&sql, &cat).unwrap_or_else(|e| panic!("{want}: {sql}: {e}"));
        let Differentiability::NotDifferentiable(r) = &p.differentiability else {
            panic!("{want}: {sql} is differentiable");
        };
        assert_eq!(name_of(r), want, "{sql}: {r}");
        assert!(r.to_string().starts_with("not differentiable: "), "{r}");
        produced.insert(want);
    }
    // Every reason of ALL is produced, or given only by the extension.
    for r in ALL {
        assert!(
            produced.contains(r) || EXTENSION_ONLY.contains(r),
            "no query produces {r}"
        );
    }
}
