//! The query-evolution oracle (`oracle --alter N`): random changes of stream tables'
//! defining queries — in place (`alter_stream_table(…, query => …)`) and by shadow builds
//! (`shadow_build => true`, driven by the background scheduler) — interleaved with random
//! writes and refreshes. Its claims:
//!
//! - an ALTER either takes effect (in place: at once; shadow: when its build reaches `done`)
//!   or is refused with 0A000 (a shape the storage cannot take in place, or a mode the query
//!   cannot have) and changes nothing; a shadow build of these queries never rolls back;
//! - writes to the sources never fail, also while a shadow build runs and swaps;
//! - after every refresh each stream table equals the query the oracle expects it to have
//!   (EXCEPT ALL both ways), and the catalog holds that query; the stream table reading the
//!   altered one (`down`) follows every swap.
//!
//! One stream table (`main`) is read by another (`down`, which reads its `k` and `n`); every
//! query of `main`'s pool keeps those two columns. `free` has no reader and changes shape
//! freely. While a shadow build runs the oracle only writes (a refresh in a REPEATABLE READ
//! transaction would race with the swap's catalog update); it polls the build's status
//! between writes. Steps come from a seeded generator, so `--seed S` replays the choices
//! (the scheduler's timing is not replayed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::check::{query_check_sql, QUERY};
use crate::ddl::Rng;
use crate::exec::{describe, fresh_database, refresh_actions, run_recorded, seeded_failure};

const DB: &str = "oracle_alter";
/// How long a shadow build may take before the oracle calls it stuck.
const BUILD_LIMIT: Duration = Duration::from_secs(120);

/// A run's parameters.
#[derive(Debug, Clone)]
pub struct AlterConfig {
    pub admin_url: String,
    pub seed: u64,
    pub steps: u64,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct AlterReport {
    pub steps: u64,
    pub writes: u64,
    pub refreshes: u64,
    pub checks: u64,
    /// ALTERs by outcome.
    pub alters: BTreeMap<&'static str, u64>,
    /// Writes made while a shadow build ran.
    pub writes_during_builds: u64,
    /// The longest a shadow build took, from the ALTER to `done`, in milliseconds.
    pub longest_build_ms: u128,
    /// Refreshes by action (pg_trickle's history).
    pub actions: BTreeMap<String, i64>,
}

/// A stream table of the run and the queries it may be given.
struct Stream {
    name: &'static str,
    pool: &'static [Query],
}

/// A query and the user columns of its result.
struct Query {
    sql: &'static str,
    columns: &'static [&'static str],
}

#[rustfmt::skip]
const MAIN: &[Query] = &[
    Query { sql: "SELECT k, count(*) AS n FROM src GROUP BY k", columns: &["k", "n"] },
    Query { sql: "SELECT k, count(*) AS n, sum(v) AS sv FROM src GROUP BY k", columns: &["k", "n", "sv"] },
    Query { sql: "SELECT k, count(*) AS n, max(t) AS mt FROM src WHERE v > 2 GROUP BY k", columns: &["k", "n", "mt"] },
    Query { sql: "SELECT s.k, count(*) AS n, min(d.label) AS lbl FROM src s JOIN dim d ON d.k = s.k GROUP BY s.k", columns: &["k", "n", "lbl"] },
    Query { sql: "SELECT k, count(DISTINCT v) AS n FROM src GROUP BY k", columns: &["k", "n"] },
    Query { sql: "SELECT k, count(*) AS n, sum(v) AS sv FROM src GROUP BY k HAVING count(*) > 2", columns: &["k", "n", "sv"] },
    Query { sql: "SELECT k, count(*) AS n FROM src WHERE v <> 4 GROUP BY k", columns: &["k", "n"] },
    Query { sql: "SELECT k, count(*) AS n, sum(v + 1) AS sv FROM src GROUP BY k", columns: &["k", "n", "sv"] },
];

#[rustfmt::skip]
const FREE: &[Query] = &[
    Query { sql: "SELECT id, v FROM src WHERE v > 3", columns: &["id", "v"] },
    Query { sql: "SELECT id, v, t FROM src WHERE v > 3", columns: &["id", "v", "t"] },
    Query { sql: "SELECT id, upper(t) AS ut FROM src", columns: &["id", "ut"] },
    Query { sql: "SELECT s.id, d.label FROM src s JOIN dim d ON d.k = s.k", columns: &["id", "label"] },
    Query { sql: "SELECT t, count(*) AS n FROM src GROUP BY t", columns: &["t", "n"] },
    Query { sql: "SELECT v, t FROM src UNION ALL SELECT k, label FROM dim", columns: &["v", "t"] },
    Query { sql: "SELECT DISTINCT k, v FROM src", columns: &["k", "v"] },
    Query { sql: "SELECT id, v FROM src WHERE v <= 3", columns: &["id", "v"] },
    Query { sql: "SELECT id, v, upper(t) AS t FROM src WHERE v > 5", columns: &["id", "v", "t"] },
];

const DOWN: Query = Query {
    sql: "SELECT k, n FROM main WHERE n > 1",
    columns: &["k", "n"],
};

const STREAMS: &[Stream] = &[
    Stream {
        name: "main",
        pool: MAIN,
    },
    Stream {
        name: "free",
        pool: FREE,
    },
];

const MODES: &[&str] = &["AUTO", "DIFFERENTIAL", "FULL"];

struct Run<'a> {
    db: Client,
    rng: Rng,
    /// The query each stream table of `STREAMS` has now (index into its pool).
    current: [usize; 2],
    next_id: i64,
    report: AlterReport,
    script: Vec<String>,
    cfg: &'a AlterConfig,
}

/// Runs the query-evolution oracle; `Err` carries the failure with seed, step and the last
/// statements.
pub fn run_alter(cfg: &AlterConfig) -> Result<AlterReport, String> {
    let db = fresh_database(&cfg.admin_url, DB)?;
    let mut run = Run {
        db,
        rng: Rng::new(cfg.seed),
        current: [0, 0],
        next_id: 1,
        report: AlterReport::default(),
        script: Vec::new(),
        cfg,
    };
    run.setup()?;
    let result = (|| {
        for step in 0..cfg.steps {
            run.report.steps = step + 1;
            let roll = run.rng.below(100);
            let outcome = if roll < 55 {
                run.write()
            } else if roll < 80 {
                run.refresh_and_check()
            } else {
                run.alter()
            };
            outcome.map_err(|e| run.failure(step, &e))?;
        }
        run.refresh_and_check()
            .map_err(|e| run.failure(cfg.steps, &e))
    })();
    let reset = run.settings(false);
    result?;
    reset?;
    run.report.actions = refresh_actions(&mut run.db)?;
    Ok(run.report)
}

impl Run<'_> {
    fn exec(&mut self, sql: &str) -> Result<(), String> {
        run_recorded(&mut self.db, &mut self.script, sql)
    }

    fn failure(&self, step: u64, e: &str) -> String {
        seeded_failure(self.cfg.seed, step, e, &self.script)
    }

    /// Shadow builds on, refreshed every 50 ms, the scheduler ticking every 100 ms — or the
    /// settings back to their defaults (`on` false) at the end of the run.
    fn settings(&mut self, on: bool) -> Result<(), String> {
        let settings = [
            ("pg_trickle.shadow_build_enabled", "on"),
            ("pg_trickle.shadow_refresh_throttle_ms", "50"),
            ("pg_trickle.scheduler_interval_ms", "100"),
        ];
        for (name, value) in settings {
            let sql = if on {
                format!("ALTER SYSTEM SET {name} = '{value}'")
            } else {
                format!("ALTER SYSTEM RESET {name}")
            };
            self.db.simple_query(&sql).map_err(|e| describe(&e))?;
        }
        self.db
            .simple_query("SELECT pg_reload_conf()")
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    fn setup(&mut self) -> Result<(), String> {
        self.settings(true)?;
        // The scheduler applies the settings at its next tick.
        std::thread::sleep(Duration::from_millis(1500));
        for sql in [
            "SET client_min_messages = warning",
            "SET pg_trickle.shadow_build_enabled = on",
            "CREATE EXTENSION pg_trickle",
            "CREATE TABLE src (id int PRIMARY KEY, k int, v int, t text)",
            "CREATE TABLE dim (k int PRIMARY KEY, label text)",
            "INSERT INTO src SELECT i, i % 5, i % 9, 'w' || (i % 4) FROM generate_series(1, 40) AS i",
            "INSERT INTO dim SELECT i, 'd' || i FROM generate_series(0, 3) AS i",
        ] {
            self.exec(sql)?;
        }
        self.next_id = 41;
        for (i, s) in STREAMS.iter().enumerate() {
            let q = s.pool[self.current[i]].sql;
            self.exec(&format!(
                "SELECT pgtrickle.create_stream_table('{}', $q${q}$q$, schedule => '2d')",
                s.name
            ))?;
        }
        self.exec(&format!(
            "SELECT pgtrickle.create_stream_table('down', $q${}$q$, schedule => '2d')",
            DOWN.sql
        ))
    }

    fn write(&mut self) -> Result<(), String> {
        let r = self.rng.below(40) as i64;
        let sql = match self.rng.below(6) {
            0 | 1 => {
                let id = self.next_id;
                self.next_id += 1;
                format!(
                    "INSERT INTO src VALUES ({id}, {}, {}, 'w{}')",
                    r % 6,
                    r % 9,
                    r % 4
                )
            }
            2 => format!("UPDATE src SET v = v + 1 WHERE id % 7 = {}", r % 7),
            3 => format!("DELETE FROM src WHERE id % 11 = {}", r % 11),
            4 => format!("UPDATE src SET k = {} WHERE id = {}", r % 6, r + 1),
            _ => {
                if r % 2 == 0 {
                    format!(
                        "INSERT INTO dim VALUES ({}, 'e{r}') ON CONFLICT (k) DO UPDATE SET label = excluded.label",
                        r % 6
                    )
                } else {
                    format!("DELETE FROM dim WHERE k = {}", r % 6)
                }
            }
        };
        self.report.writes += 1;
        self.exec(&sql)
            .map_err(|e| format!("a write to a source failed: {e}"))
    }

    /// Refreshes every stream table and checks it, each in one REPEATABLE READ transaction:
    /// its contents equal the query the oracle expects, which the catalog holds.
    fn refresh_and_check(&mut self) -> Result<(), String> {
        let mut expected: Vec<(&'static str, &'static Query)> = STREAMS
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name, &s.pool[self.current[i]]))
            .collect();
        expected.push(("down", &DOWN));
        for (name, q) in expected {
            let held: String = self
                .db
                .query_one(
                    "SELECT defining_query FROM pgtrickle.pgt_stream_tables WHERE pgt_name = $1",
                    &[&name],
                )
                .map_err(|e| format!("{name}: {}", describe(&e)))?
                .get(0);
            if held != q.sql {
                return Err(format!(
                    "{name} holds the query {held:?}, the oracle expects {:?}",
                    q.sql
                ));
            }
            let cols: Vec<String> = q.columns.iter().map(|c| (*c).to_string()).collect();
            self.exec("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
            self.exec(&format!("SELECT pgtrickle.refresh_stream_table('{name}')"))?;
            self.report.refreshes += 1;
            self.exec(&query_check_sql(name, &cols, q.sql, QUERY))?;
            self.exec("COMMIT")?;
            self.report.checks += 1;
        }
        Ok(())
    }

    fn alter(&mut self) -> Result<(), String> {
        let which = self.rng.below(STREAMS.len() as u64) as usize;
        let s = &STREAMS[which];
        let old = self.current[which];
        let mut new = self.rng.below(s.pool.len() as u64 - 1) as usize;
        if new >= old {
            new += 1;
        }
        let mode = MODES[self.rng.below(MODES.len() as u64) as usize];
        let shadow = self.rng.below(2) == 0;
        // In place, half the time a query of the same columns (the shape it can take).
        let same: Vec<usize> = (0..s.pool.len())
            .filter(|i| *i != old && s.pool[*i].columns == s.pool[old].columns)
            .collect();
        if !shadow && !same.is_empty() && self.rng.below(2) == 0 {
            new = same[self.rng.below(same.len() as u64) as usize];
        }
        let sql = format!(
            "SELECT pgtrickle.alter_stream_table('{}', query => $q${}$q$, refresh_mode => '{mode}'{})",
            s.name,
            s.pool[new].sql,
            if shadow { ", shadow_build => true" } else { "" }
        );
        self.script.push(sql.clone());
        let started = Instant::now();
        match self.db.batch_execute(&sql) {
            Ok(()) if !shadow => {
                *self.report.alters.entry("in place").or_default() += 1;
                self.current[which] = new;
                Ok(())
            }
            Ok(()) => {
                self.wait_for_build(s.name)?;
                let ms = started.elapsed().as_millis();
                self.report.longest_build_ms = self.report.longest_build_ms.max(ms);
                *self.report.alters.entry("shadow, swapped in").or_default() += 1;
                self.current[which] = new;
                Ok(())
            }
            Err(e) if e.code().is_some_and(|c| c.code() == "0A000") => {
                // Refused before anything changed: the catalog still holds the old query
                // (checked at the next refresh).
                let kind = if shadow {
                    "shadow, refused (0A000)"
                } else {
                    "in place, refused (0A000)"
                };
                *self.report.alters.entry(kind).or_default() += 1;
                Ok(())
            }
            Err(e) => Err(format!("{sql}: {}", describe(&e))),
        }
    }

    /// Writes while the shadow build of `name` runs, until it is done; a rollback or a
    /// build that outlasts [`BUILD_LIMIT`] is a failure.
    fn wait_for_build(&mut self, name: &str) -> Result<(), String> {
        let deadline = Instant::now() + BUILD_LIMIT;
        loop {
            let row = self
                .db
                .query_one(
                    "SELECT phase, coalesce(error, '') FROM pgtrickle.view_evolution_status($1)",
                    &[&name],
                )
                .map_err(|e| describe(&e))?;
            let (phase, error): (String, String) = (row.get(0), row.get(1));
            match phase.as_str() {
                "done" => return Ok(()),
                "rolled_back" => {
                    return Err(format!("the shadow build of {name} rolled back: {error}"))
                }
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "the shadow build of {name} is still in phase {phase} after {}s",
                        BUILD_LIMIT.as_secs()
                    ))
                }
                _ => {}
            }
            self.write()?;
            self.report.writes_during_builds += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
