//! The source-DDL oracle (`oracle --ddl N`): random DDL on two sources — columns added,
//! renamed, retyped and dropped (read by the stream tables or not), tables renamed and moved
//! to another schema, read columns dropped and added back — interleaved with random writes and
//! refreshes of stream tables in every mode. Its claims:
//!
//! - no write to a source ever fails;
//! - after every refresh, each stream table either equals its query (EXCEPT ALL both ways),
//!   rendered by the oracle with today's names from a template of logical columns — an
//!   independent check of the rewrite pg_trickle makes — or is in NEEDS_REINIT with a reason;
//! - DDL that does not change what a query means (renames, added or dropped unread columns,
//!   retyped unread columns) never puts a stream table in NEEDS_REINIT;
//! - a stream table reading a dropped column is in NEEDS_REINIT, its refresh fails until the
//!   column is back, and then the refresh rebuilds it.
//!
//! Steps come from a seeded generator (SplitMix64), so `--seed S` reproduces a run; a failure
//! prints the seed, the step and the last statements.

use std::collections::BTreeMap;

use postgres::Client;

use crate::check::{query_check_sql, QUERY};
use crate::exec::{describe, fresh_database, refresh_actions, run_recorded, seeded_failure};

const DB: &str = "oracle_ddl";

/// A run's parameters.
#[derive(Debug, Clone)]
pub struct DdlConfig {
    pub admin_url: String,
    pub seed: u64,
    pub steps: u64,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct DdlReport {
    pub steps: u64,
    pub writes: u64,
    pub refreshes: u64,
    pub checks: u64,
    /// DDL statements by kind.
    pub ddl: BTreeMap<&'static str, u64>,
    /// Times a stream table was found in NEEDS_REINIT after DDL.
    pub flagged: u64,
    /// Refreshes that rebuilt a NEEDS_REINIT stream table.
    pub reinitialised: u64,
    /// Refreshes of a NEEDS_REINIT stream table refused while a column it reads was gone.
    pub refused: u64,
    /// Stream tables dropped and created again (see `Run::stale`).
    pub recreated: u64,
    /// Refreshes by action (pg_trickle's history): DIFFERENTIAL must dominate, or the run
    /// did not test maintenance across DDL.
    pub actions: BTreeMap<String, i64>,
}

/// SplitMix64: small, seedable, good enough to pick steps.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }
}

/// A column the stream tables read, by its logical name in the templates.
#[derive(Debug, Clone)]
struct ReadColumn {
    table: usize,
    logical: &'static str,
    name: String,
    /// The types it cycles through with ALTER COLUMN … TYPE.
    types: &'static [&'static str],
    type_index: usize,
    dropped: bool,
}

/// A column nobody reads.
#[derive(Debug, Clone)]
struct Spare {
    table: usize,
    name: String,
    ty: &'static str,
}

#[derive(Debug, Clone)]
struct Table {
    schema: &'static str,
    name: String,
}

impl Table {
    fn sql(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.name)
    }
}

/// A stream table of the run: a template over `{src}`, `{bag}` and logical columns, its
/// output columns, and its mode.
struct Stream {
    name: &'static str,
    template: &'static str,
    columns: &'static [&'static str],
    mode: &'static str,
    /// Logical columns it reads.
    reads: &'static [&'static str],
    /// The tables it reads (0: src, 1: bag).
    tables: &'static [usize],
}

#[rustfmt::skip]
const STREAMS: &[Stream] = &[
    Stream { name: "agg", template: "SELECT {k} AS k, count(*) AS n, sum({v}) AS sv FROM {src} GROUP BY {k}", columns: &["k", "n", "sv"], mode: "AUTO", reads: &["k", "v"], tables: &[0] },
    Stream { name: "agg_full", template: "SELECT {k} AS k, count(*) AS n, sum({v}) AS sv FROM {src} GROUP BY {k}", columns: &["k", "n", "sv"], mode: "FULL", reads: &["k", "v"], tables: &[0] },
    Stream { name: "flt", template: "SELECT id, {t} AS t FROM {src} WHERE {v} > 3", columns: &["id", "t"], mode: "DIFFERENTIAL", reads: &["t", "v"], tables: &[0] },
    Stream { name: "flt_imm", template: "SELECT id, {t} AS t FROM {src} WHERE {v} > 3", columns: &["id", "t"], mode: "IMMEDIATE", reads: &["t", "v"], tables: &[0] },
    Stream { name: "join_agg", template: "SELECT {src}.{k} AS k, count(*) AS n, sum({bag}.{y}) AS sy FROM {src} JOIN {bag} ON {bag}.{bk} = {src}.{k} GROUP BY {src}.{k}", columns: &["k", "n", "sy"], mode: "AUTO", reads: &["k", "bk", "y"], tables: &[0, 1] },
    Stream { name: "maxt", template: "SELECT {k} AS k, max({t}) AS mt, min(id) AS lo FROM {src} GROUP BY {k}", columns: &["k", "mt", "lo"], mode: "AUTO", reads: &["k", "t"], tables: &[0] },
];

/// What a rename renamed.
#[derive(Debug, Clone, Copy)]
enum Renamed {
    Table(usize),
    Column(&'static str),
}

struct Run<'a> {
    db: Client,
    rng: Rng,
    tables: [Table; 2],
    read: Vec<ReadColumn>,
    spares: Vec<Spare>,
    next_name: u64,
    next_id: i64,
    /// Stream tables that lost a column they read (dropped, maybe added back since) and were
    /// not rebuilt yet: their analysed query names a column number that is gone, so they can
    /// no longer follow renames.
    lost: Vec<&'static str>,
    /// Stream tables renamed around while lost: their stored query can no longer name their
    /// sources, so reinitialising them must fail (they are then created again, as a user
    /// would).
    stale: Vec<&'static str>,
    report: DdlReport,
    script: Vec<String>,
    cfg: &'a DdlConfig,
}

/// Runs the DDL oracle; `Err` carries the failure with seed, step and recent statements.
pub fn run_ddl(cfg: &DdlConfig) -> Result<DdlReport, String> {
    let db = fresh_database(&cfg.admin_url, DB)?;
    let mut run = Run {
        db,
        rng: Rng(cfg.seed),
        tables: [
            Table {
                schema: "public",
                name: "src".into(),
            },
            Table {
                schema: "public",
                name: "bag".into(),
            },
        ],
        #[rustfmt::skip]
        read: vec![
            ReadColumn { table: 0, logical: "k", name: "k".into(), types: &["int", "bigint"], type_index: 0, dropped: false },
            ReadColumn { table: 0, logical: "v", name: "v".into(), types: &["int", "bigint", "numeric"], type_index: 0, dropped: false },
            ReadColumn { table: 0, logical: "t", name: "t".into(), types: &["text", "varchar(40)"], type_index: 0, dropped: false },
            ReadColumn { table: 1, logical: "bk", name: "bk".into(), types: &["int", "bigint"], type_index: 0, dropped: false },
            ReadColumn { table: 1, logical: "y", name: "y".into(), types: &["int", "numeric"], type_index: 0, dropped: false },
        ],
        spares: vec![Spare {
            table: 0,
            name: "extra".into(),
            ty: "int",
        }],
        next_name: 0,
        next_id: 1,
        lost: Vec::new(),
        stale: Vec::new(),
        report: DdlReport::default(),
        script: Vec::new(),
        cfg,
    };
    run.setup()?;
    for step in 0..cfg.steps {
        run.report.steps = step + 1;
        let roll = run.rng.below(100);
        let outcome = if roll < 50 {
            run.write()
        } else if roll < 72 {
            run.refresh_and_check()
        } else {
            run.ddl()
        };
        if let Err(e) = outcome {
            return Err(run.failure(step, &e));
        }
    }
    run.refresh_and_check()
        .map_err(|e| run.failure(cfg.steps, &e))?;
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

    fn setup(&mut self) -> Result<(), String> {
        for sql in [
            "SET client_min_messages = warning",
            "CREATE EXTENSION pg_trickle",
            "CREATE SCHEMA other",
            "CREATE TABLE src (id int PRIMARY KEY, k int, v int, t text, extra int)",
            "CREATE TABLE bag (bk int, y int)",
            "INSERT INTO src SELECT i, i % 4, i % 9, 'w' || (i % 5), i FROM generate_series(1, 30) AS i",
            "INSERT INTO bag SELECT i % 5, i FROM generate_series(1, 12) AS i",
        ] {
            self.exec(sql)?;
        }
        self.next_id = 31;
        for s in STREAMS {
            let q = self.render(s.template);
            self.exec(&format!(
                "SELECT pgtrickle.create_stream_table('{}', $q${q}$q$, schedule => '2d', \
                 refresh_mode => '{}')",
                s.name, s.mode
            ))?;
        }
        Ok(())
    }

    fn column(&self, logical: &str) -> Option<&ReadColumn> {
        self.read.iter().find(|c| c.logical == logical)
    }

    /// The template with today's names.
    fn render(&self, template: &str) -> String {
        let mut out = template
            .replace("{src}", &self.tables[0].sql())
            .replace("{bag}", &self.tables[1].sql());
        for c in &self.read {
            out = out.replace(&format!("{{{}}}", c.logical), &format!("\"{}\"", c.name));
        }
        out
    }

    fn fresh_name(&mut self, base: &str) -> String {
        self.next_name += 1;
        format!("{base}_{}", self.next_name)
    }

    fn write(&mut self) -> Result<(), String> {
        let src = self.tables[0].sql();
        let bag = self.tables[1].sql();
        let r = self.rng.below(12) as i64;
        let sql = match self.rng.below(6) {
            0 | 1 => {
                let id = self.next_id;
                self.next_id += 1;
                let mut cols = vec!["id".to_string()];
                let mut vals = vec![id.to_string()];
                for (logical, val) in [
                    ("k", (r % 4).to_string()),
                    ("v", (r % 9).to_string()),
                    ("t", format!("'w{}'", r % 5)),
                ] {
                    if let Some(c) = self.column(logical).filter(|c| !c.dropped) {
                        cols.push(format!("\"{}\"", c.name));
                        vals.push(val);
                    }
                }
                format!(
                    "INSERT INTO {src} ({}) VALUES ({})",
                    cols.join(", "),
                    vals.join(", ")
                )
            }
            2 => match self.column("v").filter(|c| !c.dropped) {
                Some(c) => format!(
                    "UPDATE {src} SET \"{n}\" = \"{n}\" + 1 WHERE id % 5 = {}",
                    r % 5,
                    n = c.name
                ),
                None => format!("UPDATE {src} SET id = id WHERE id % 5 = {}", r % 5),
            },
            3 => format!("DELETE FROM {src} WHERE id % 7 = {}", r % 7),
            4 => match (self.column("bk"), self.column("y")) {
                (Some(b), Some(y)) if !b.dropped && !y.dropped => format!(
                    "INSERT INTO {bag} (\"{}\", \"{}\") VALUES ({}, {r})",
                    b.name,
                    y.name,
                    r % 5
                ),
                _ => format!("DELETE FROM {bag} WHERE false"),
            },
            _ => match self.column("y").filter(|c| !c.dropped) {
                Some(y) if r % 2 == 0 => {
                    format!("UPDATE {bag} SET \"{n}\" = \"{n}\" + 1", n = y.name)
                }
                _ => format!("DELETE FROM {bag} WHERE ctid = (SELECT min(ctid) FROM {bag})"),
            },
        };
        self.report.writes += 1;
        self.exec(&sql)
            .map_err(|e| format!("a write to a source failed: {e}"))
    }

    /// (name, status, last_error) of every stream table.
    fn statuses(&mut self) -> Result<Vec<(String, String, Option<String>)>, String> {
        let rows = self
            .db
            .query(
                "SELECT pgt_name::text, status, last_error FROM pgtrickle.pgt_stream_tables \
                 ORDER BY 1",
                &[],
            )
            .map_err(|e| describe(&e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    fn ddl(&mut self) -> Result<(), String> {
        let before = self.statuses()?;
        let roll = self.rng.below(100);
        let mut renamed_target: Option<Renamed> = None;
        let (kind, sql, harmless): (&'static str, String, bool) = if roll < 14 {
            let table = self.rng.below(2) as usize;
            let name = self.fresh_name("spare");
            let ty = if self.rng.below(2) == 0 {
                "int"
            } else {
                "text"
            };
            self.spares.push(Spare {
                table,
                name: name.clone(),
                ty,
            });
            (
                "add unread column",
                format!(
                    "ALTER TABLE {} ADD COLUMN \"{name}\" {ty}",
                    self.tables[table].sql()
                ),
                true,
            )
        } else if roll < 24 && !self.spares.is_empty() {
            let i = self.rng.below(self.spares.len() as u64) as usize;
            let s = self.spares.remove(i);
            (
                "drop unread column",
                format!(
                    "ALTER TABLE {} DROP COLUMN \"{}\"",
                    self.tables[s.table].sql(),
                    s.name
                ),
                true,
            )
        } else if roll < 34 && !self.spares.is_empty() {
            let i = self.rng.below(self.spares.len() as u64) as usize;
            let new = self.fresh_name("spare");
            let table = self.tables[self.spares[i].table].sql();
            let old = std::mem::replace(&mut self.spares[i].name, new.clone());
            (
                "rename unread column",
                format!("ALTER TABLE {table} RENAME COLUMN \"{old}\" TO \"{new}\""),
                true,
            )
        } else if roll < 40 && !self.spares.is_empty() {
            let i = self.rng.below(self.spares.len() as u64) as usize;
            let s = &mut self.spares[i];
            let to = match s.ty {
                "int" => "bigint",
                "bigint" => "int",
                "text" => "varchar(50)",
                _ => "text",
            };
            s.ty = to;
            let (table, name) = (s.table, s.name.clone());
            (
                "retype unread column",
                format!(
                    "ALTER TABLE {} ALTER COLUMN \"{name}\" TYPE {to}",
                    self.tables[table].sql()
                ),
                true,
            )
        } else if roll < 62 {
            let live: Vec<usize> = (0..self.read.len())
                .filter(|i| !self.read[*i].dropped)
                .collect();
            let Some(&i) = self.rng.pick(&live) else {
                return Ok(());
            };
            let new = self.fresh_name(self.read[i].logical);
            let table = self.tables[self.read[i].table].sql();
            renamed_target = Some(Renamed::Column(self.read[i].logical));
            let old = std::mem::replace(&mut self.read[i].name, new.clone());
            (
                "rename read column",
                format!("ALTER TABLE {table} RENAME COLUMN \"{old}\" TO \"{new}\""),
                true,
            )
        } else if roll < 72 {
            let t = self.rng.below(2) as usize;
            let old = self.tables[t].sql();
            let new = self.fresh_name(if t == 0 { "src" } else { "bag" });
            self.tables[t].name = new.clone();
            renamed_target = Some(Renamed::Table(t));
            (
                "rename table",
                format!("ALTER TABLE {old} RENAME TO \"{new}\""),
                true,
            )
        } else if roll < 78 {
            let t = self.rng.below(2) as usize;
            let old = self.tables[t].sql();
            let to = if self.tables[t].schema == "public" {
                "other"
            } else {
                "public"
            };
            self.tables[t].schema = to;
            renamed_target = Some(Renamed::Table(t));
            (
                "set schema",
                format!("ALTER TABLE {old} SET SCHEMA {to}"),
                true,
            )
        } else if roll < 92 {
            let live: Vec<usize> = (0..self.read.len())
                .filter(|i| !self.read[*i].dropped && self.read[*i].types.len() > 1)
                .collect();
            let Some(&i) = self.rng.pick(&live) else {
                return Ok(());
            };
            let c = &mut self.read[i];
            c.type_index = (c.type_index + 1) % c.types.len();
            let (table, name, ty) = (c.table, c.name.clone(), c.types[c.type_index]);
            (
                "retype read column",
                format!(
                    "ALTER TABLE {} ALTER COLUMN \"{name}\" TYPE {ty}",
                    self.tables[table].sql()
                ),
                false,
            )
        } else {
            // Drop a read column, or add a dropped one back (same name, first type).
            let i = self.rng.below(self.read.len() as u64) as usize;
            let table = self.tables[self.read[i].table].sql();
            let c = &mut self.read[i];
            if c.dropped {
                c.dropped = false;
                c.type_index = 0;
                // Back under its name: a stream table that lost columns and was not renamed
                // around meanwhile is analysed again (and follows renames) once all are back.
                let back: Vec<&'static str> = self
                    .read
                    .iter()
                    .filter(|c| !c.dropped)
                    .map(|c| c.logical)
                    .collect();
                let stale = self.stale.clone();
                self.lost.retain(|name| {
                    let reads = STREAMS
                        .iter()
                        .find(|s| s.name == *name)
                        .map_or(&[][..], |s| s.reads);
                    stale.contains(name) || !reads.iter().all(|r| back.contains(r))
                });
                let c = &mut self.read[i];
                (
                    "add read column back",
                    format!(
                        "ALTER TABLE {table} ADD COLUMN \"{}\" {}",
                        c.name, c.types[0]
                    ),
                    true,
                )
            } else {
                c.dropped = true;
                (
                    "drop read column",
                    format!("ALTER TABLE {table} DROP COLUMN \"{}\"", c.name),
                    false,
                )
            }
        };
        *self.report.ddl.entry(kind).or_insert(0) += 1;
        if let Some(target) = renamed_target {
            for s in STREAMS {
                let reads_it = match target {
                    Renamed::Table(t) => s.tables.contains(&t),
                    Renamed::Column(c) => s.reads.contains(&c),
                };
                if reads_it && self.lost.contains(&s.name) && !self.stale.contains(&s.name) {
                    self.stale.push(s.name);
                }
            }
        }
        self.exec(&sql)?;
        let after = self.statuses()?;
        for (name, status, reason) in &after {
            let was = before
                .iter()
                .find(|b| &b.0 == name)
                .map(|b| b.1.as_str())
                .unwrap_or("");
            if status == "NEEDS_REINIT" && was != "NEEDS_REINIT" {
                self.report.flagged += 1;
                if harmless {
                    return Err(format!(
                        "{kind} put stream table {name} in NEEDS_REINIT: {}",
                        reason.as_deref().unwrap_or("(no reason)")
                    ));
                }
                if reason.as_deref().is_none_or(str::is_empty) {
                    return Err(format!(
                        "stream table {name} is in NEEDS_REINIT without a reason"
                    ));
                }
            }
        }
        if kind == "drop read column" {
            let gone = self.read.iter().filter(|c| c.dropped).map(|c| c.logical);
            let gone: Vec<&str> = gone.collect();
            for s in STREAMS {
                if s.reads.iter().any(|r| gone.contains(r)) {
                    if !self.lost.contains(&s.name) {
                        self.lost.push(s.name);
                    }
                    let status = after.iter().find(|a| a.0 == s.name).map(|a| a.1.as_str());
                    if status != Some("NEEDS_REINIT") {
                        return Err(format!(
                            "stream table {} reads a dropped column but is {status:?}",
                            s.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn refresh_and_check(&mut self) -> Result<(), String> {
        let statuses = self.statuses()?;
        for s in STREAMS {
            let status = statuses
                .iter()
                .find(|x| x.0 == s.name)
                .map(|x| x.1.clone())
                .ok_or_else(|| format!("stream table {} is gone", s.name))?;
            let readable = s
                .reads
                .iter()
                .all(|r| self.column(r).is_some_and(|c| !c.dropped));
            let refresh = format!("SELECT pgtrickle.refresh_stream_table('{}')", s.name);
            if status == "NEEDS_REINIT" && self.stale.contains(&s.name) {
                if !readable {
                    continue;
                }
                self.script.push(refresh.clone());
                if self.db.batch_execute(&refresh).is_ok() {
                    return Err(format!(
                        "{} was reinitialised although its stored query names a source \
                         renamed after a column it reads was dropped",
                        s.name
                    ));
                }
                self.report.refused += 1;
                self.report.recreated += 1;
                self.stale.retain(|n| *n != s.name);
                self.lost.retain(|n| *n != s.name);
                let q = self.render(s.template);
                self.exec(&format!("SELECT pgtrickle.drop_stream_table('{}')", s.name))?;
                self.exec(&format!(
                    "SELECT pgtrickle.create_stream_table('{}', $q${q}$q$, schedule => '2d', \
                     refresh_mode => '{}')",
                    s.name, s.mode
                ))?;
            } else if status == "NEEDS_REINIT" {
                self.script.push(refresh.clone());
                match self.db.batch_execute(&refresh) {
                    Ok(()) if readable => {
                        self.report.reinitialised += 1;
                        self.lost.retain(|n| *n != s.name);
                    }
                    Ok(()) => {
                        return Err(format!(
                            "{} was reinitialised although a column it reads is dropped",
                            s.name
                        ))
                    }
                    Err(e) if readable => {
                        return Err(format!(
                            "reinitialising {} failed: {}",
                            s.name,
                            describe(&e)
                        ))
                    }
                    Err(_) => {
                        self.report.refused += 1;
                        continue;
                    }
                }
            } else if s.mode != "IMMEDIATE" {
                self.report.refreshes += 1;
                self.exec(&refresh)?;
            }
            let query = self.render(s.template);
            let cols: Vec<String> = s.columns.iter().map(|c| (*c).to_string()).collect();
            self.report.checks += 1;
            self.exec(&query_check_sql(s.name, &cols, &query, QUERY))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_per_seed() {
        let a: Vec<u64> = (0..5).scan(Rng(7), |r, _| Some(r.next())).collect();
        let b: Vec<u64> = (0..5).scan(Rng(7), |r, _| Some(r.next())).collect();
        let c: Vec<u64> = (0..5).scan(Rng(8), |r, _| Some(r.next())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn templates_name_only_known_placeholders() {
        for s in STREAMS {
            let mut rest = s.template;
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').map(|c| open + c);
                let name = close.map(|c| &rest[open + 1..c]);
                assert!(
                    matches!(name, Some("src" | "bag" | "k" | "v" | "t" | "bk" | "y")),
                    "{}: {name:?}",
                    s.name
                );
                rest = &rest[close.map_or(rest.len(), |c| c + 1)..];
            }
        }
    }
}
