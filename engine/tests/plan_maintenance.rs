//! Property: for SQL defining queries covering every supported operator and the required
//! compositions, maintaining the storage with the engine's delta and apply (modelled in
//! memory) gives exactly the FULL refresh result, which holds the query's rows — on random
//! databases and change windows (deletes on both join sides, insert-then-delete, key updates,
//! NULL keys, emptied groups).

#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "support/db.rs"]
mod db;

use engine::maintain;
use engine::operator::EvalContext;
use engine::{
    apply_sql, delta_query_sql, full_query_sql, plan, ChangeBuffer, DeltaSources, RelName,
};
use proptest::prelude::*;

pub const QUERIES: &[&str] = &[
    "SELECT k, x FROM a WHERE x > 1",
    "SELECT x + 1 AS y, g FROM a",
    "SELECT a.k, b.k AS bk, a.x, b.y FROM a JOIN b ON a.g = b.g",
    "SELECT a.x, b.y, c.z FROM a JOIN b ON a.g = b.g JOIN c ON c.k = b.y",
    "SELECT a.x, b.y FROM a, b WHERE a.x = b.y",
    "SELECT g, count(*) AS n, sum(x) AS s, avg(x) AS av, count(x) AS cx FROM a GROUP BY g",
    "SELECT g, min(x) AS mn, max(x) AS mx FROM a GROUP BY g",
    "SELECT count(*) AS n, sum(x) AS s, avg(x) AS av FROM a",
    "SELECT min(x) AS mn, count(*) AS n FROM a",
    // MIN/MAX kept in place: FILTER, alone, over a nullable computed key, under an
    // expression, over a join; over text they recompute their groups.
    "SELECT g, min(x) FILTER (WHERE x > 1) AS mn, max(x) AS mx, count(*) AS n FROM a GROUP BY g",
    "SELECT max(x) AS mx FROM a",
    "SELECT x % 3 AS r, min(g) AS lo, max(k) AS hi FROM a GROUP BY x % 3",
    "SELECT a.g, min(b.y) AS lo, max(a.x) + 1 AS hi FROM a JOIN b ON a.g = b.g GROUP BY a.g",
    "SELECT v, w, max(v) AS m, min(w) AS n FROM d GROUP BY v, w",
    "SELECT g, max(CAST(x AS text)) AS m FROM a GROUP BY g",
    "SELECT a.g, count(*) AS n, sum(b.y) AS s FROM a JOIN b ON a.g = b.g GROUP BY a.g",
    "SELECT a.g, sum(c.z) AS s, count(*) AS n FROM a JOIN b ON a.x = b.y JOIN c ON c.k = b.g GROUP BY a.g",
    "SELECT a.k, a.x, b.y FROM a LEFT JOIN b ON a.x = b.y",
    "SELECT a.k, b.k AS bk, a.x, b.y FROM a FULL JOIN b ON a.x = b.y",
    "SELECT a.k, b.y FROM a RIGHT JOIN b ON a.g = b.g AND a.x > 0",
    "SELECT DISTINCT a.x, b.y FROM a JOIN b ON a.g = b.g",
    "SELECT DISTINCT x FROM a",
    "SELECT v FROM d UNION ALL SELECT x FROM a",
    "SELECT v FROM d UNION SELECT y FROM b",
    "SELECT x FROM a INTERSECT SELECT y FROM b",
    "SELECT x FROM a EXCEPT ALL SELECT v FROM d",
    "SELECT v FROM d INTERSECT ALL SELECT y FROM b",
    "SELECT x FROM a EXCEPT SELECT y FROM b",
    "SELECT k, x FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.g = a.g)",
    "SELECT k, x FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.y = a.x)",
    "SELECT k, x FROM a WHERE x IN (SELECT y FROM b)",
    "SELECT k, x FROM a WHERE x NOT IN (SELECT y FROM b WHERE b.g > 0)",
    "SELECT g, count(*) AS n FROM a GROUP BY g HAVING count(*) > 1",
    "SELECT s.g, s.n FROM (SELECT g, count(*) AS n FROM a GROUP BY g) AS s WHERE s.n > 1",
    "WITH t AS (SELECT g, x FROM a WHERE x IS NOT NULL) SELECT t.g, sum(t.x) AS s FROM t GROUP BY t.g",
    "SELECT v, w, count(*) AS n FROM d GROUP BY v, w",
    "SELECT b.g, max(a.x) AS mx FROM a LEFT JOIN b ON a.g = b.g GROUP BY b.g",
    "SELECT CASE WHEN x IS NULL THEN 'none' ELSE 'some' END AS kind, count(*) AS n FROM a GROUP BY 1",
    "SELECT g, count(*) FILTER (WHERE x > 1) AS n, sum(x) FILTER (WHERE g > 0) AS s FROM a GROUP BY g",
    "SELECT v FROM d",
    // Grouping sets: the UNION ALL of one GROUP BY per set, left-out keys NULL.
    "SELECT g, x, count(*) AS n, sum(x) AS s, GROUPING(g, x) AS gb FROM a GROUP BY ROLLUP (g, x)",
    "SELECT v, w, count(*) AS n FROM d GROUP BY CUBE (v, w) HAVING count(*) > 1",
    "SELECT DISTINCT g, count(*) AS n FROM a GROUP BY ROLLUP (g)",
    "SELECT a.g, b.y, count(*) AS n, max(a.x) AS m FROM a JOIN b ON a.g = b.g GROUP BY GROUPING SETS ((a.g), (b.y), ())",
    "SELECT a.x, count(DISTINCT b.y) AS n FROM a JOIN b ON a.g = b.g GROUP BY a.x",
    "SELECT k FROM a WHERE COALESCE(x, 0) BETWEEN 1 AND 2 AND g IS NOT NULL",
    "SELECT count(*) AS n FROM a JOIN b ON a.g = b.g",
    "SELECT a.g, b.g AS bg, count(*) AS n FROM a FULL JOIN b ON a.g = b.g GROUP BY a.g, b.g",
    "SELECT DISTINCT a.g FROM a LEFT JOIN c ON a.x = c.z",
    "SELECT g, sum(x) AS s FROM a GROUP BY g HAVING sum(x) IS NULL OR min(x) > 0",
    "SELECT x, count(*) AS n FROM (SELECT x FROM a UNION ALL SELECT y FROM b) AS u GROUP BY x",
    "SELECT b.k, count(*) AS n FROM a LEFT JOIN b ON a.g = b.g GROUP BY b.k",
    "SELECT b.k, min(a.x) AS mn FROM a RIGHT JOIN b ON a.g = b.g GROUP BY b.k",
    "SELECT a.k, b.k AS bk FROM a LEFT JOIN b ON a.x = b.y WHERE b.k IS NULL",
    // Scalar subqueries: uncorrelated and correlated, in WHERE, the select list and HAVING.
    "SELECT k, x FROM a WHERE x > (SELECT avg(y) FROM b)",
    "SELECT k, x FROM a WHERE x >= (SELECT min(b.y) FROM b WHERE b.g = a.g)",
    "SELECT k, (SELECT count(*) FROM b WHERE b.g = a.g) AS n FROM a",
    "SELECT k, (SELECT sum(y) FROM b WHERE b.g = a.g AND b.y > 0) + 1 AS s, (SELECT max(z) FROM c) AS m FROM a",
    "SELECT g, sum(x) AS s FROM a GROUP BY g HAVING sum(x) > (SELECT count(*) FROM b)",
    "SELECT g, count(*) AS n, (SELECT max(y) FROM b) AS top FROM a GROUP BY g",
    "SELECT k FROM a WHERE x < (SELECT count(*) FROM b WHERE b.g = a.g AND b.y = a.x)",
    "SELECT k FROM a WHERE g IN (SELECT b.g FROM b WHERE b.y > (SELECT avg(c.z) FROM c WHERE c.k = b.k))",
    "SELECT k FROM a WHERE x IN (SELECT y FROM b WHERE g IN (SELECT z FROM c))",
    "SELECT k FROM a WHERE x IN (SELECT y FROM b GROUP BY y HAVING count(*) > 1)",
    "SELECT k FROM a WHERE x NOT IN (SELECT y FROM b GROUP BY y)",
    "SELECT k FROM a WHERE COALESCE((SELECT max(v) FROM d WHERE d.w = a.g), 0) = 0",
    // EXISTS and IN inside expressions, as counts.
    "SELECT k FROM a WHERE x > 1 OR EXISTS (SELECT 1 FROM b WHERE b.g = a.g)",
    "SELECT k, EXISTS (SELECT 1 FROM c WHERE c.z = a.x) AS e FROM a",
    "SELECT k, CASE WHEN x NOT IN (SELECT y FROM b WHERE b.g = a.g) THEN 1 ELSE 0 END AS n FROM a",
    "SELECT k, x IN (SELECT v FROM d) AS i FROM a",
    "SELECT k, k IN (SELECT g FROM b WHERE y > 0) AS i FROM a",
    // The general decorrelation: conditions other than outer = inner, outer columns in
    // aggregates, conditions that match a NULL outer value.
    "SELECT k, (SELECT count(*) FROM b WHERE b.y < a.x) AS n FROM a",
    "SELECT k FROM a WHERE x > 0 OR EXISTS (SELECT 1 FROM b WHERE b.y < a.x AND b.g = a.g)",
    "SELECT k, (SELECT sum(b.y * a.x) FROM b WHERE b.g = a.g) AS s FROM a",
    "SELECT k, (SELECT max(y) FROM b WHERE b.g = a.g OR a.g IS NULL) AS m FROM a",
    "SELECT k FROM a WHERE x >= (SELECT min(c.z) FROM c WHERE c.z > a.g)",
    // Correlated subqueries in an aggregate query, on its group keys.
    "SELECT g, count(*) AS n, (SELECT max(y) FROM b WHERE b.g = a.g) AS m FROM a GROUP BY g",
    "SELECT g, sum(x) AS s FROM a GROUP BY g HAVING sum(x) > (SELECT count(*) FROM b WHERE b.g = a.g)",
    "SELECT g, (SELECT count(*) FROM b WHERE b.y < a.g) AS below FROM a GROUP BY g",
    // Subqueries in an inner join's ON.
    "SELECT a.k, b.k AS bk FROM a JOIN b ON a.g = b.g AND b.y > (SELECT avg(z) FROM c)",
    "SELECT a.k, b.k AS bk, c.k AS ck FROM a JOIN b ON a.g = b.g AND b.y >= (SELECT min(d.v) FROM d WHERE d.w = a.x) JOIN c ON c.z = b.y",
];

/// `bool_and` / `bool_or` kept in place (counts of the values and of the TRUE ones): also
/// checked on their own.
pub const BOOL_QUERIES: &[&str] = &[
    "SELECT g, bool_and(x > 1) AS ba, bool_or(x > 2) FILTER (WHERE k > 1) AS bo, count(*) AS n FROM a GROUP BY g",
    "SELECT bool_and(x > 0) AS ba, bool_or(DISTINCT x IS NULL) AS bo FROM a",
    "SELECT v, bool_or(w > v) AS bo, bool_and(w IS NOT NULL) AS ba FROM d GROUP BY v",
];

/// Queries whose result depends on an order (window functions, DISTINCT ON, ORDER BY …
/// LIMIT): also checked on their own, so that each gets many scenarios.
pub const ORDERED_QUERIES: &[&str] = &[
    // Window functions: the touched partitions recomputed; ties broken by the input's columns.
    "SELECT k, g, x, row_number() OVER (PARTITION BY g ORDER BY x DESC) AS rn, rank() OVER (PARTITION BY g ORDER BY x) AS r, dense_rank() OVER (PARTITION BY g ORDER BY x) AS dr FROM a",
    "SELECT k, x, sum(x) OVER (PARTITION BY g ORDER BY x) AS running, count(*) OVER (PARTITION BY g) AS n, max(x) OVER (PARTITION BY g ORDER BY k ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS framed FROM a",
    "SELECT k, lag(x) OVER (PARTITION BY g ORDER BY k) AS prev, lead(x, 2, -1) OVER (PARTITION BY g ORDER BY k) AS next2, first_value(x) OVER (PARTITION BY g ORDER BY x NULLS FIRST) AS fv, last_value(x) OVER (PARTITION BY g ORDER BY k ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS lv FROM a",
    "SELECT k, x, row_number() OVER (ORDER BY x, k) AS pos, percent_rank() OVER (ORDER BY x) AS pr, cume_dist() OVER (ORDER BY x) AS cd, ntile(3) OVER (ORDER BY k) AS t FROM a",
    "SELECT v, w, row_number() OVER (PARTITION BY v ORDER BY w) AS rn, sum(w) OVER (PARTITION BY v ORDER BY w GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM d",
    "SELECT t.g, t.k, t.x FROM (SELECT g, k, x, row_number() OVER (PARTITION BY g ORDER BY x DESC, k) AS rn FROM a) AS t WHERE t.rn <= 2",
    "SELECT g, sum(x) AS s, rank() OVER (ORDER BY sum(x) DESC) AS r FROM a GROUP BY g",
    "SELECT a.k, b.y, nth_value(b.y, 2) OVER (PARTITION BY a.g ORDER BY b.k ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS second FROM a JOIN b ON a.g = b.g",
    // DISTINCT ON: one more window, row_number() = 1.
    "SELECT DISTINCT ON (g) g, k, x FROM a ORDER BY g, x DESC",
    "SELECT DISTINCT ON (v) v, w FROM d ORDER BY v, w NULLS FIRST",
    "SELECT DISTINCT ON (a.g) a.g, b.y FROM a JOIN b ON a.g = b.g ORDER BY a.g, b.y, b.k",
    // ORDER BY … LIMIT: the top rows before and after, read from the top limit + inserted.
    "SELECT k, x FROM a ORDER BY x DESC NULLS LAST, k LIMIT 3",
    "SELECT k, x FROM a ORDER BY x LIMIT 2 OFFSET 1",
    "SELECT g, sum(x) AS s, count(*) AS n FROM a GROUP BY g ORDER BY s DESC LIMIT 2",
    "SELECT v, w FROM d ORDER BY v, w NULLS FIRST LIMIT 3",
    "SELECT DISTINCT x FROM a ORDER BY x LIMIT 2",
    "SELECT v FROM d UNION ALL SELECT x FROM a ORDER BY 1 DESC LIMIT 4",
    "SELECT a.k, b.y FROM a JOIN b ON a.g = b.g ORDER BY b.y, a.k LIMIT 3",
    "SELECT k, g FROM a ORDER BY g OFFSET 1 ROWS FETCH FIRST 2 ROWS ONLY",
    "SELECT DISTINCT ON (g) g, k FROM a ORDER BY g, x, k LIMIT 2",
    "SELECT t.k, t.x FROM (SELECT k, x FROM a ORDER BY x LIMIT 3) AS t WHERE t.x > 0",
    // Set-returning functions: each changed row expanded again (linear).
    "SELECT a.k, s FROM a, generate_series(1, a.x) AS s",
    "SELECT a.k, t.n, t.o FROM a CROSS JOIN LATERAL generate_series(a.g, 3) WITH ORDINALITY AS t(n, o)",
    "SELECT a.k, s FROM a LEFT JOIN LATERAL generate_series(1, a.x) AS s ON true",
    "SELECT d.v, s FROM d, generate_series(d.w, d.v) AS s",
    "SELECT k, generate_series(1, x) AS n FROM a",
    "SELECT a.g, count(*) AS n, sum(s) AS total FROM a JOIN LATERAL generate_series(1, a.x) AS s ON s > 1 GROUP BY a.g",
    // LATERAL subqueries: decorrelated into a join on their correlation keys.
    "SELECT a.k, x.y FROM a, LATERAL (SELECT b.y FROM b WHERE b.g = a.g AND b.y > 0) AS x",
    "SELECT a.k, x.y, x.bk FROM a CROSS JOIN LATERAL (SELECT b.k AS bk, b.y FROM b WHERE b.g = a.g ORDER BY b.y DESC, b.k LIMIT 2) AS x",
    "SELECT a.k, x.n FROM a LEFT JOIN LATERAL (SELECT b.y AS n FROM b WHERE b.g = a.x ORDER BY b.y NULLS FIRST, b.k LIMIT 1) AS x ON true",
    "SELECT a.k, x.g, x.n FROM a JOIN LATERAL (SELECT c.z AS g, count(*) AS n FROM c WHERE c.k = a.x GROUP BY c.z) AS x ON x.n > 0",
    "SELECT d.v, x.z FROM d, LATERAL (SELECT DISTINCT c.z FROM c WHERE c.k = d.w) AS x",
    "SELECT a.k, x.* FROM a LEFT JOIN LATERAL (SELECT b.k AS bk FROM b WHERE b.g = a.g AND b.y = a.x ORDER BY b.k OFFSET 1) AS x ON true",
];

/// Recursive CTEs as the whole result: UNION by delete and re-derive (cycles in `d`), UNION
/// ALL by semi-naive rounds (edges that climb, so the recursion ends). Also checked on their
/// own.
pub const RECURSIVE_QUERIES: &[&str] = &[
    "WITH RECURSIVE r(s, t) AS (SELECT v, w FROM d UNION SELECT r.s, d.w FROM r JOIN d ON d.v = r.t) SELECT * FROM r",
    "WITH RECURSIVE r(n) AS (SELECT x FROM a WHERE g = 1 UNION SELECT b.y FROM r JOIN b ON b.g = r.n) SELECT * FROM r",
    "WITH RECURSIVE r(k, n, hops) AS (SELECT k, x, 1 FROM a UNION SELECT r.k, d.w, r.hops + 1 FROM r JOIN d ON d.v = r.n WHERE r.hops < 3) SELECT k, n, hops FROM r",
    "WITH RECURSIVE r(s, t) AS (SELECT k, g FROM a UNION SELECT r.s, b.g FROM r JOIN b ON b.k = r.t JOIN c ON c.k = b.g) SELECT * FROM r",
    "WITH RECURSIVE r(k, n) AS (SELECT k, x FROM a UNION ALL SELECT r.k, d.w FROM r JOIN d ON d.v = r.n WHERE d.w > d.v) SELECT * FROM r",
    "WITH RECURSIVE r(k, n, depth) AS (SELECT k, g, 0 FROM b UNION ALL SELECT r.k, c.z, r.depth + 1 FROM r JOIN c ON c.k = r.n JOIN a ON a.k = c.k WHERE r.depth < 3) SELECT * FROM r",
];

fn all_queries() -> Vec<&'static str> {
    QUERIES
        .iter()
        .chain(ORDERED_QUERIES)
        .chain(BOOL_QUERIES)
        .chain(RECURSIVE_QUERIES)
        .copied()
        .collect()
}

fn sources() -> DeltaSources {
    let mut s = DeltaSources::new();
    for id in [db::A, db::B, db::C, db::D] {
        s = s.with(
            id,
            ChangeBuffer {
                schema: "pgtrickle_changes".into(),
                name: format!("changes_{id}"),
                predicate: "__pgt_xid > '1'::xid8".into(),
            },
        );
    }
    s
}

fn check(sql: &str, s: &db::Scenario) -> Result<(), TestCaseError> {
    let cat = db::catalog();
    let p = plan(sql, &cat).map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
    prop_assert!(
        p.is_differential(),
        "{} is not differential: {:?}",
        sql,
        p.differentiability
    );
    let fail = |what: &str, e: String| TestCaseError::fail(format!("{sql}: {what}: {e}"));
    let before = maintain::full(&p, &s.before).map_err(|e| fail("full before", e.to_string()))?;
    let after = maintain::full(&p, &s.after).map_err(|e| fail("full after", e.to_string()))?;
    let tree = p.tree.as_ref().ok_or_else(|| fail("tree", String::new()))?;
    let empty = engine::Tables::new();
    let expected = tree
        .eval(EvalContext {
            current: &s.after,
            deltas: &empty,
        })
        .map_err(|e| fail("eval", e.to_string()))?;
    prop_assert_eq!(
        maintain::visible(&p, &after),
        expected,
        "full refresh of {}",
        sql
    );
    let delta = maintain::delta(&p, &before, &s.after, &s.delta)
        .map_err(|e| fail("delta", e.to_string()))?;
    let applied = maintain::apply(&p, &before, &delta).map_err(|e| fail("apply", e.to_string()))?;
    prop_assert_eq!(applied, after, "incremental maintenance of {}", sql);
    Ok(())
}

proptest! {
    #![proptest_config(db::config("proptest-regressions/plan_maintenance.txt"))]

    #[test]
    fn incremental_maintenance_equals_full_refresh(q in 0..QUERIES.len() + ORDERED_QUERIES.len() + BOOL_QUERIES.len() + RECURSIVE_QUERIES.len(), s in db::scenario()) {
        check(all_queries()[q], &s)?;
    }

    #[test]
    fn bool_aggregates_in_place_equal_full_refresh(q in 0..BOOL_QUERIES.len(), s in db::scenario()) {
        check(BOOL_QUERIES[q], &s)?;
    }

    #[test]
    fn recursions_maintained_equal_full_refresh(q in 0..RECURSIVE_QUERIES.len(), s in db::scenario()) {
        check(RECURSIVE_QUERIES[q], &s)?;
    }

    #[test]
    fn ordered_queries_maintained_equal_full_refresh(q in 0..ORDERED_QUERIES.len(), s in db::scenario()) {
        check(ORDERED_QUERIES[q], &s)?;
    }
}

#[test]
fn every_query_renders_sql_that_postgres_dialect_parses() {
    // The decorrelated subqueries' statements nest deeply: sqlparser's recursive descent over
    // them needs more than a test thread's default stack (it overflowed at 2 MiB).
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(parse_every_query)
        .unwrap()
        .join()
        .unwrap();
}

fn parse_every_query() {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    let cat = db::catalog();
    for sql in all_queries() {
        let p = plan(sql, &cat).unwrap();
        let full = full_query_sql(&p).unwrap();
        let delta = delta_query_sql(&p, &sources(), &RelName::new("public", "st")).unwrap();
        let apply = apply_sql(
            &p,
            &RelName::new("public", "st"),
            &RelName::unqualified("delta"),
        )
        .unwrap();
        for text in std::iter::once(&full)
            .chain(std::iter::once(&delta))
            .chain(apply.iter())
        {
            // Decorrelated subqueries nest deeper than the parser's default limit of 50.
            Parser::new(&PostgreSqlDialect {})
                .with_recursion_limit(400)
                .try_with_sql(text)
                .and_then(|mut p| p.parse_statements())
                .unwrap_or_else(|e| panic!("{sql}\n{text}\n{e}"));
        }
    }
}
