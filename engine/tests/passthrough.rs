//! Claims about expressions the engine does not model (planner/passthrough.rs): they are kept
//! as SQL text with their column references planned (so pruning and the GROUP BY rewrite see
//! them), typed by the catalog, and refused when volatile, when they hide a subquery, or when
//! no type is known for them.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "support/db.rs"]
mod db;

use std::cell::RefCell;

use engine::{plan, Catalog, Differentiability, MemoryCatalog, Reason, TableInfo};

/// The test tables, with a catalog that answers `expression_type` as PostgreSQL would for
/// the probes it is asked, and records them.
struct Typing {
    inner: MemoryCatalog,
    answers: Vec<(&'static str, &'static str)>,
    asked: RefCell<Vec<String>>,
}

impl Catalog for Typing {
    fn resolve_table(&self, schema: Option<&str>, name: &str) -> Option<TableInfo> {
        self.inner.resolve_table(schema, name)
    }

    fn expression_type(&self, sql: &str) -> Option<String> {
        self.asked.borrow_mut().push(sql.to_string());
        self.answers
            .iter()
            .find(|(probe, _)| sql == *probe)
            .map(|(_, t)| t.to_string())
    }
}

fn typing(answers: Vec<(&'static str, &'static str)>) -> Typing {
    Typing {
        inner: db::catalog(),
        answers,
        asked: RefCell::new(Vec::new()),
    }
}

fn reason(sql: &str, catalog: &dyn Catalog) -> Reason {
    match plan(sql, catalog).unwrap().differentiability {
        Differentiability::NotDifferentiable(r) => r,
        Differentiability::Differential => panic!("{sql} is differential"),
    }
}

#[test]
fn fixed_type_forms_pass_through_with_their_columns_planned() {
    let cat = typing(vec![]);
    let p = plan(
        "SELECT k, EXTRACT(YEAR FROM x) AS y, SUBSTRING(CAST(g AS text) FROM 1 FOR 2) AS s \
         FROM a WHERE x > 0",
        &cat,
    )
    .unwrap();
    assert!(p.is_differential(), "{:?}", p.differentiability);
    let types: Vec<&str> = p.columns.iter().map(|c| c.type_name.as_str()).collect();
    assert_eq!(types, ["int4", "numeric", "text"]);
    // The holes are NULLs of the columns' types: no user value reaches the probe.
    let asked = cat.asked.borrow();
    assert!(
        asked
            .iter()
            .any(|q| q == "EXTRACT(YEAR FROM (CAST(NULL AS int4)))"),
        "{asked:?}"
    );
    // Each probe is asked once per plan, though the planner makes two passes.
    let mut distinct = asked.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), asked.len(), "{asked:?}");
    // Only the columns used are captured (pruning sees through the text).
    let cols = &p.sources[0].columns;
    assert!(cols.contains(&"g".to_string()) && cols.contains(&"x".to_string()));
}

#[test]
fn the_catalog_types_what_the_engine_cannot() {
    let cat = typing(vec![(
        "(CAST(NULL AS int4)) # (CAST(NULL AS int4))",
        "integer",
    )]);
    let p = plan("SELECT k, x # g AS b FROM a", &cat).unwrap();
    assert!(p.is_differential());
    // PostgreSQL's name for the type, normalised as every type name is.
    assert_eq!(p.columns[1].type_name, "int4");
    // Without an answer the expression is refused, never guessed.
    let unknown = typing(vec![]);
    assert!(matches!(
        reason("SELECT k, x # g AS b FROM a", &unknown),
        Reason::Construct { construct } if construct.contains("x # g")
    ));
    // A user-defined function in its own schema is typed the same way.
    let udf = typing(vec![("fx.twice((CAST(NULL AS int4)))", "numeric")]);
    let p = plan("SELECT k, fx.twice(x) AS t FROM a", &udf).unwrap();
    assert_eq!(p.columns[1].type_name, "numeric");
}

#[test]
fn aggregates_inside_a_passed_through_expression_are_planned() {
    let cat = typing(vec![]);
    let p = plan(
        "SELECT g, EXTRACT(DAY FROM max(CAST(x AS text)::date)) AS d, sum(EXTRACT(MONTH FROM CAST(g AS text)::date)) AS m FROM a GROUP BY g",
        &cat,
    )
    .unwrap();
    assert!(p.is_differential(), "{:?}", p.differentiability);
    let full = engine::full_query_sql(&p).unwrap();
    assert!(full.contains("max("), "{full}");
}

#[test]
fn volatile_functions_and_subqueries_inside_are_refused() {
    let cat = typing(vec![]);
    assert!(matches!(
        reason("SELECT k, EXTRACT(DAY FROM now()) AS d FROM a", &cat),
        Reason::VolatileFunction { name } if name == "now"
    ));
    assert!(matches!(
        reason("SELECT k, x # (SELECT y FROM b WHERE b.k = a.k LIMIT 1) AS d FROM a", &cat),
        Reason::SubqueryShape { what } if what.contains("LIMIT")
    ));
    // Text that spells the reserved hole prefix is refused rather than misread.
    assert!(matches!(
        reason(
            "SELECT k, SUBSTRING('__pgt_hole_0' FROM 1 FOR x) AS s FROM a",
            &cat
        ),
        Reason::Construct { .. }
    ));
}
