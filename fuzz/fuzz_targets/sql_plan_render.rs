//! Fuzzes parse → plan → render. Input: SQL text, or (after a leading `#`) bytes that drive
//! the structured SELECT generator over the fixed catalog. Claims: planning and rendering never
//! panic; a differential plan renders its full, delta and apply SQL without error; every
//! rendered statement re-parses with sqlparser's PostgreSQL dialect as exactly one
//! statement; planning and rendering are deterministic (checked on a
//! quarter of the inputs).
#![no_main]

use arbitrary::Unstructured;
use engine::{
    apply_sql, delta_query_sql, full_query_sql, plan, ChangeBuffer, DeltaSources, Plan, RelName,
};
use libfuzzer_sys::fuzz_target;
use pg_trickle_fuzz::{schema, sqlgen};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::sync::{mpsc, Mutex, OnceLock};

fn sources(p: &Plan) -> DeltaSources {
    let mut s = DeltaSources::new();
    for src in &p.sources {
        s = s.with(
            src.id,
            ChangeBuffer {
                schema: "pgtrickle_changes".into(),
                name: format!("changes_{}", src.id),
                predicate: "pg_visible_in_snapshot(\"__pgt_xid\", $1) AND NOT \
                            pg_visible_in_snapshot(\"__pgt_xid\", $2)"
                    .into(),
            },
        );
    }
    s
}

/// Nesting allowed when re-parsing rendered SQL. The renderer nests a subquery per operator,
/// so a three-way set operation's delta already exceeds sqlparser's default of 50 (PostgreSQL
/// itself has no such limit); the parse runs on a worker thread with a stack to match, kept
/// for the whole run (spawning one per input would cost more than the parse).
const REPARSE_DEPTH_MAX: usize = 1000;
const REPARSE_STACK_BYTES: usize = 256 << 20;

type Job = (String, mpsc::Sender<Result<usize, String>>);

fn parse_count(sql: &str) -> Result<usize, String> {
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(REPARSE_DEPTH_MAX)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map(|stmts| stmts.len())
        .map_err(|e| e.to_string())
}

fn reparse(sql: &str) -> Result<usize, String> {
    static WORKER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .stack_size(REPARSE_STACK_BYTES)
            .spawn(move || {
                for (sql, reply) in rx {
                    let _ = reply.send(parse_count(&sql));
                }
            })
            .expect("spawn the re-parse worker");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    worker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((sql.to_string(), reply))
        .expect("the re-parse worker is alive");
    answer
        .recv()
        .expect("the re-parse worker answers (it panicked otherwise)")
}

fn assert_reparses(query: &str, what: &str, sql: &str) {
    match reparse(sql) {
        Ok(n) => assert_eq!(n, 1, "{what} of {query} is not one statement:\n{sql}"),
        Err(e) => panic!("{what} of {query} does not re-parse: {e}\n{sql}"),
    }
}

/// Every rendered statement of `sql`'s plan, or `None` when it does not plan.
fn render(sql: &str) -> Option<Vec<(&'static str, String)>> {
    let cat = schema::catalog();
    let p = plan(sql, &cat).ok()?;
    let full = full_query_sql(&p).unwrap_or_else(|e| panic!("full_query_sql of {sql}: {e}"));
    let mut out = vec![("full query", full)];
    if p.is_differential() {
        let delta = delta_query_sql(&p, &sources(&p), &RelName::new("public", "st"))
            .unwrap_or_else(|e| panic!("delta_query_sql of differential {sql}: {e}"));
        out.push(("delta query", delta));
        let apply = apply_sql(
            &p,
            &RelName::new("public", "st"),
            &RelName::unqualified("__pgt_delta"),
        )
        .unwrap_or_else(|e| panic!("apply_sql of differential {sql}: {e}"));
        out.extend(apply.into_iter().map(|a| ("apply statement", a)));
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let sql = match data.split_first() {
        Some((b'#', rest)) => {
            let mut u = Unstructured::new(rest);
            match sqlgen::query(&mut u, schema::all()) {
                Ok(q) => q,
                Err(_) => return,
            }
        }
        _ => match std::str::from_utf8(data) {
            Ok(s) => s.to_string(),
            Err(_) => return,
        },
    };
    let Some(rendered) = render(&sql) else { return };
    for (what, text) in &rendered {
        assert_reparses(&sql, what, text);
    }
    // Determinism, checked on a quarter of the inputs (it doubles the cost of one).
    if data.len().is_multiple_of(4) {
        assert_eq!(
            render(&sql),
            Some(rendered),
            "rendering {sql} twice differs"
        );
    }
});
