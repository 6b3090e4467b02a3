//! `Recursive`: `WITH RECURSIVE r AS (base UNION [ALL] step(r)) SELECT * FROM r`, the whole
//! result of a defining query. `step` reads `r` through one `Scan` of [`REFERENCE_ID`], and is
//! a join of tables, filters and projections ([`Recursive::admissible_step`]): linear in `r`
//! and monotone in every table it reads.
//!
//! Semantics (PostgreSQL's): UNION ALL appends `step(w)` of the rows `w` the last round added
//! until a round adds none; UNION keeps only rows not produced before, so cycles end.
//!
//! Delta rules, with `R` the stored result before the change window (the stream table's
//! storage: a recursion is maintained only at the root of a plan, where its previous result
//! is stored) and `S(X; T)` the recursive term over `X` and tables in state `T`:
//! - **UNION ALL (a bag)**: `R = B + S(R)` with `S` linear in `R`, so the exact Z-set delta is
//!   the least solution of `ΔR = ΔB + Δ_T S(R) + S(ΔR; T_new)`, where `Δ_T S(R)` is the delta
//!   of the recursive term with `r` held at `R` (the ordinary delta rules, its change window
//!   empty). It is one `WITH RECURSIVE` over weighted rows: the seeds are the first two
//!   terms, each round applies `S` over the new tables to the last round's rows, multiplying
//!   weights; then the rows are consolidated. It ends when the recursion over the new tables
//!   ends (a derivation of a delta row is one of the new recursion, or starts from one of the
//!   old). Cost: the rows derived from the changed rows, plus a join of `R` with the changes.
//! - **UNION (a set), delete and re-derive (DRed)**: (1) over-delete `D`: the rows of `R` with
//!   a derivation lost — a negative row of `ΔB` or of `Δ_T S(R)` before consolidation (every
//!   derivation that used a deleted row) — and, transitively, every row of `R` that `S`
//!   derives from a row of `D` over the tables after the change (an old derivation from a row
//!   of `D` either uses only rows still there, so it is one of these, or uses a deleted row,
//!   so it is a lost derivation already); (2) `R' = R − D` is sound: each of its
//!   rows keeps an old derivation that is intact; (3) derive anew `N = R_new − R'` from the
//!   seeds `(B_new ∪ S(R'; T_new)) − R'` — the rows of `D` that `B_new` or `S(R')` still derive,
//!   the positive rows of `ΔB` and of `Δ_T S(R')` (consolidated) — and rounds of
//!   `S(N; T_new) − R'`; (4) `ΔR = (N − R) − (D − N)`. Cost: the rows over-deleted and derived
//!   again, each looked up in `R`; nothing when no row was deleted.

use super::{ColType, EvalContext, JoinKind, Operator, Scan, Tables};
use crate::error::EngineError;
use crate::expr::eval::EvalError;
use crate::render::{
    col_name, consolidated_select, key_match, quote_ident, rows, weight_ref, Fragment, Relation,
    SqlWriter, WEIGHT,
};
use crate::value::Row;
use crate::zset::ZSet;

/// The table id of a recursive CTE's reference to itself: 0 is `InvalidOid`, which no
/// relation has.
pub const REFERENCE_ID: u32 = 0;

/// The rows of `z` with a positive weight that `keep` accepts, each once.
fn distinct_rows(z: &ZSet, keep: impl Fn(&Row) -> bool) -> ZSet {
    ZSet::from_rows(
        z.iter()
            .filter(|(row, w)| *w > 0 && keep(row))
            .map(|(row, _)| row.clone())
            .collect::<std::collections::BTreeSet<Row>>(),
    )
}

/// The most rounds the in-memory evaluation runs before it reports a recursion that does not
/// end (PostgreSQL would run until `statement_timeout`).
const MAX_ROUNDS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recursive {
    /// The non-recursive term.
    pub base: Box<Operator>,
    /// The recursive term, reading the CTE through `reference`.
    pub step: Box<Operator>,
    /// The CTE as `step` reads it: table [`REFERENCE_ID`], columns `c0..cN` with the CTE's
    /// types (nullable when either term may give NULL).
    pub reference: Scan,
    /// UNION (a set) rather than UNION ALL.
    pub distinct: bool,
    /// This node stands for the delta of the recursion (`delta()`), not its rows.
    pub delta: bool,
}

impl Recursive {
    pub fn columns(&self) -> Vec<ColType> {
        self.reference.columns()
    }

    /// Whether `step` may be a recursive term: scans, filters, projections, inner joins,
    /// UNION ALL and set-returning calls only — linear in the reference and monotone in every
    /// table (what both delta rules rely on).
    pub fn admissible_step(op: &Operator) -> bool {
        let own = match op {
            Operator::Scan(_)
            | Operator::Filter(_)
            | Operator::Project(_)
            | Operator::UnionAll(_)
            | Operator::FlatMap(_) => true,
            Operator::Join(j) => j.kind == JoinKind::Inner,
            _ => false,
        };
        own && op.children().into_iter().all(Recursive::admissible_step)
    }

    /// The columns of the CTE that the recursive term joins on (`r.c = t.x` in an inner join
    /// with the reference on one side): the delta rules read the stored result through them
    /// (joining it with the change, and with the over-deleted rows), so the storage gets an
    /// index on each.
    pub fn probed_columns(&self) -> Vec<usize> {
        fn reference_side(op: &Operator) -> bool {
            match op {
                Operator::Scan(s) => s.table.id == REFERENCE_ID,
                Operator::Filter(f) => reference_side(&f.input),
                _ => false,
            }
        }
        fn visit(op: &Operator, out: &mut Vec<usize>) {
            if let Operator::Join(j) = op {
                let la = j.left.arity();
                let range = if reference_side(&j.left) {
                    Some(0..la)
                } else if reference_side(&j.right) {
                    Some(la..la + j.right.arity())
                } else {
                    None
                };
                if let Some(range) = range {
                    j.on.visit(&mut |e| {
                        if let crate::expr::Expr::Binary {
                            op: crate::expr::BinOp::Eq,
                            left,
                            right,
                        } = e
                        {
                            for side in [left, right] {
                                if let crate::expr::Expr::Column(c) = side.as_ref() {
                                    if range.contains(c) && !out.contains(&(c - range.start)) {
                                        out.push(c - range.start);
                                    }
                                }
                            }
                        }
                    });
                }
            }
            for c in op.children() {
                visit(c, out);
            }
        }
        let mut out = Vec::new();
        visit(&self.step, &mut out);
        out
    }

    /// The rows of the recursion over `current` (PostgreSQL's evaluation).
    fn fixpoint(&self, current: &Tables) -> Result<ZSet, EvalError> {
        let none = Tables::new();
        let base = self.base.eval(EvalContext {
            current,
            deltas: &none,
        })?;
        let mut work = if self.distinct {
            distinct_rows(&base, |_| true)
        } else {
            base
        };
        let mut result = work.clone();
        let mut tables = current.clone();
        for _ in 0..MAX_ROUNDS {
            if work.is_empty() {
                return Ok(result);
            }
            tables.insert(REFERENCE_ID, work);
            let next = self.step.eval(EvalContext {
                current: &tables,
                deltas: &none,
            })?;
            work = if self.distinct {
                distinct_rows(&next, |r| result.weight(r) == 0)
            } else {
                next
            };
            result = result.plus(&work);
        }
        Err(EvalError::InvalidInput(format!(
            "the recursion did not end within {MAX_ROUNDS} rounds"
        )))
    }

    /// The rows of the recursion, or with `delta` its delta by the rules of the module
    /// comment (the model the rendered statements follow): `R` is the recursion over the
    /// tables before the change window, as the storage holds it.
    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        if !self.delta {
            return self.fixpoint(ctx.current);
        }
        let before: Tables = ctx
            .current
            .iter()
            .map(|(id, rows)| {
                let old = match ctx.deltas.get(id) {
                    Some(d) => rows.minus(d),
                    None => rows.clone(),
                };
                (*id, old)
            })
            .collect();
        let stored = self.fixpoint(&before)?;
        if self.distinct {
            self.dred(ctx, &before, &stored)
        } else {
            self.semi_naive(ctx, &stored)
        }
    }

    /// `S(x)` over the tables `tables`.
    fn step_over(&self, tables: &Tables, x: ZSet) -> Result<ZSet, EvalError> {
        let mut bound = tables.clone();
        bound.insert(REFERENCE_ID, x);
        self.step.eval(EvalContext {
            current: &bound,
            deltas: &Tables::new(),
        })
    }

    /// `Δ_T S(x)`: the recursive term's delta with the reference held at `x`.
    fn step_delta(&self, ctx: EvalContext<'_>, x: ZSet) -> Result<ZSet, EvalError> {
        let mut bound = ctx.current.clone();
        bound.insert(REFERENCE_ID, x);
        let delta = self
            .step
            .delta()
            .map_err(|e| EvalError::Unsupported(e.to_string()))?;
        delta.eval(EvalContext {
            current: &bound,
            deltas: ctx.deltas,
        })
    }

    /// UNION ALL: `ΔR = ΔB + Δ_T S(R) + S(ΔR; T_new)`, round by round.
    fn semi_naive(&self, ctx: EvalContext<'_>, stored: &ZSet) -> Result<ZSet, EvalError> {
        let db = self
            .base
            .delta()
            .map_err(|e| EvalError::Unsupported(e.to_string()))?
            .eval(ctx)?;
        let mut work = db.plus(&self.step_delta(ctx, stored.clone())?);
        let mut total = work.clone();
        for _ in 0..MAX_ROUNDS {
            if work.is_empty() {
                return Ok(total);
            }
            work = self.step_over(ctx.current, work)?;
            total = total.plus(&work);
        }
        Err(EvalError::InvalidInput(format!(
            "the recursion's delta did not end within {MAX_ROUNDS} rounds"
        )))
    }

    /// UNION: delete and re-derive. The over-deletion is seeded here by exactly the lost
    /// derivations (a row derived more often over the tables before than over the rows the
    /// window left in place); the rendered statement seeds it by a superset, the negative
    /// rows of the deltas before consolidation.
    fn dred(
        &self,
        ctx: EvalContext<'_>,
        before: &Tables,
        stored: &ZSet,
    ) -> Result<ZSet, EvalError> {
        let none = Tables::new();
        fn at<'t>(tables: &'t Tables, none: &'t Tables) -> EvalContext<'t> {
            EvalContext {
                current: tables,
                deltas: none,
            }
        }
        let intact: Tables = before
            .iter()
            .map(|(id, rows)| {
                let after = ctx.current.get(id).cloned().unwrap_or_default();
                let kept = rows
                    .iter()
                    .map(|(r, w)| (r.clone(), w.min(after.weight(r))))
                    .filter(|(_, w)| *w > 0);
                (*id, crate::zset::consolidate(kept))
            })
            .collect();
        let lost = |old: &ZSet, kept: &ZSet| {
            let mut out = ZSet::new();
            for (row, w) in old.iter() {
                if w > kept.weight(row) && stored.weight(row) > 0 {
                    out.add(row.clone(), 1);
                }
            }
            out
        };
        let set = |z: &ZSet, minus: &[&ZSet]| {
            distinct_rows(z, |r| minus.iter().all(|m| m.weight(r) <= 0))
        };
        // (1) over-delete.
        let seeds = lost(
            &self.base.eval(at(before, &none))?,
            &self.base.eval(at(&intact, &none))?,
        )
        .plus(&lost(
            &self.step_over(before, stored.clone())?,
            &self.step_over(&intact, stored.clone())?,
        ));
        let mut deleted = set(&seeds, &[]);
        let mut work = deleted.clone();
        while !work.is_empty() {
            let reached = self.step_over(ctx.current, work)?;
            let next = distinct_rows(&reached, |r| stored.weight(r) > 0 && deleted.weight(r) == 0);
            deleted = deleted.plus(&next);
            work = next;
        }
        // (2) R' = R − D; (3) N = R_new − R'.
        let kept = set(stored, &[&deleted]);
        let first = self
            .base
            .eval(at(ctx.current, &none))?
            .plus(&self.step_over(ctx.current, kept.clone())?);
        let mut derived = set(&first, &[&kept]);
        let mut work = derived.clone();
        for _ in 0..MAX_ROUNDS {
            if work.is_empty() {
                // (4) ΔR = (N − R) − (D − N).
                return Ok(set(&derived, &[stored]).minus(&set(&deleted, &[&derived])));
            }
            let next = set(&self.step_over(ctx.current, work)?, &[&kept, &derived]);
            derived = derived.plus(&next);
            work = next;
        }
        Err(EvalError::InvalidInput(format!(
            "the recursion's delta did not end within {MAX_ROUNDS} rounds"
        )))
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        if self.delta {
            return Err(EngineError::internal("the delta of a recursion's delta"));
        }
        Ok(Operator::Recursive(Recursive {
            delta: true,
            ..self.clone()
        }))
    }

    fn arity(&self) -> usize {
        self.reference.columns.len()
    }

    /// `CAST("a"."c0" AS type) AS "c0", …`: the CTE's columns, typed as the CTE.
    fn typed(&self, alias: &str) -> String {
        self.reference
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "CAST({}.{} AS {}) AS {}",
                    quote_ident(alias),
                    col_name(i),
                    c.ty.ty.sql(),
                    col_name(i)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `"c0", …`.
    fn names(&self) -> String {
        (0..self.arity())
            .map(col_name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rows `a` and `b` are the same row (NULL matching NULL where a column may be NULL, as
    /// UNION compares rows).
    fn same(&self, a: &str, b: &str) -> String {
        let names: Vec<String> = (0..self.arity()).map(|i| format!("c{i}")).collect();
        let keys: Vec<(&String, bool)> = names
            .iter()
            .zip(&self.reference.columns)
            .map(|(n, c)| (n, c.ty.nullable))
            .collect();
        key_match(&keys, a, b, true)
    }

    /// `op` rendered by `w` with the reference read from `from`.
    fn over(
        &self,
        w: &mut SqlWriter<'_>,
        op: &Operator,
        from: Relation,
    ) -> Result<Fragment, EngineError> {
        w.relations.insert(REFERENCE_ID, from);
        let f = w.input(op);
        w.relations.remove(&REFERENCE_ID);
        f
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        if self.delta {
            let storage = w.storage.clone().ok_or_else(|| {
                EngineError::internal(
                    "a recursion's delta reads the stored result: it is maintained at the \
                     root of a plan only",
                )
            })?;
            let inner = w.nested();
            let body = if self.distinct {
                self.render_set_delta(inner, &storage)?
            } else {
                self.render_bag_delta(inner, &storage)?
            };
            return Ok(Fragment {
                sql: body,
                weighted: true,
            });
        }
        let rec = quote_ident(crate::names::RECURSION);
        let n = self.arity();
        let base = w.input(&self.base)?;
        let base = rows(&base, n);
        let step = self.over(
            w,
            &self.step,
            Relation {
                from: rec.clone(),
                weighted: false,
            },
        )?;
        let step = rows(&step, n);
        let s = quote_ident("s");
        Ok(Fragment {
            sql: format!(
                "WITH RECURSIVE {rec}({names}) AS (SELECT {t} FROM {base} AS {s} UNION{all} \
                 SELECT {t} FROM {step} AS {s}) SELECT {names} FROM {rec}",
                names = self.names(),
                t = self.typed("s"),
                all = if self.distinct { "" } else { " ALL" },
            ),
            weighted: false,
        })
    }

    /// The weight of a fragment's rows under alias `a`.
    fn weight_of(f: &Fragment, a: &str) -> String {
        if f.weighted {
            weight_ref(a)
        } else {
            "CAST(1 AS int8)".to_string()
        }
    }

    /// UNION ALL: seeds ΔB + Δ_T S(R), rounds S(ΔR; T_new) over weighted rows, consolidated.
    fn render_bag_delta(&self, mut w: SqlWriter<'_>, storage: &str) -> Result<String, EngineError> {
        let rec = quote_ident(crate::names::RECURSION);
        let db = w.input(&self.base.delta()?)?;
        let ds = self.over(
            &mut w,
            &self.step.delta()?,
            Relation {
                from: storage.to_string(),
                weighted: false,
            },
        )?;
        let rs = self.over(
            &mut w,
            &self.step,
            Relation {
                from: rec.clone(),
                weighted: true,
            },
        )?;
        let s = quote_ident("s");
        let term = |f: &Fragment| {
            format!(
                "SELECT {}, CAST({} AS int8) AS {} FROM ({}) AS {s}",
                self.typed("s"),
                Recursive::weight_of(f, "s"),
                quote_ident(WEIGHT),
                f.sql
            )
        };
        let names = self.names();
        let recursion = format!(
            "{rec}({names}, {}) AS ({} UNION ALL {} UNION ALL {})",
            quote_ident(WEIGHT),
            term(&db),
            term(&ds),
            term(&rs)
        );
        let cols: Vec<String> = (0..self.arity()).map(col_name).collect();
        let body =
            consolidated_select(&cols, &cols, &format!("SUM({})", quote_ident(WEIGHT)), &rec);
        Ok(w.finish_recursive(vec![recursion], &body))
    }

    /// UNION: delete and re-derive (see the module comment).
    fn render_set_delta(&self, mut w: SqlWriter<'_>, storage: &str) -> Result<String, EngineError> {
        let n = self.arity();
        let del = quote_ident(crate::names::RECURSION_DELETED);
        let new = quote_ident(crate::names::RECURSION_NEW);
        let names = self.names();
        let (s, t, k, x, y) = ("s", "t", "k", "x", "y");
        let q = quote_ident;
        let in_storage = |a: &str| {
            format!(
                "EXISTS (SELECT 1 FROM {storage} AS {} WHERE {})",
                q(t),
                self.same(t, a)
            )
        };
        // Membership of row `a` in the over-deleted rows. Without NULLs, `(…) IN (SELECT …)`:
        // PostgreSQL hashes the rows once for the whole statement, where a correlated
        // `EXISTS` over the CTE would scan it once per probe (it cannot know its size).
        let deleted = |a: &str| {
            if self.reference.columns.iter().any(|c| c.ty.nullable) {
                format!(
                    "EXISTS (SELECT 1 FROM {del} AS {} WHERE {})",
                    q("z"),
                    self.same("z", a)
                )
            } else {
                let cols: Vec<String> = (0..n)
                    .map(|i| format!("{}.{}", q(a), col_name(i)))
                    .collect();
                format!("({}) IN (SELECT {names} FROM {del})", cols.join(", "))
            }
        };
        // R' = R − D, inline so that each reader's conditions reach the storage's index.
        let keep = format!(
            "(SELECT * FROM {storage} AS {} WHERE NOT {})",
            q(k),
            deleted(k)
        );
        let in_keep = |a: &str| format!("({} AND NOT {})", in_storage(a), deleted(a));
        let in_del = |from: &str| {
            format!(
                "SELECT {} FROM {del} AS {} WHERE EXISTS (SELECT 1 FROM {from} AS {} WHERE {})",
                self.typed(x),
                q(x),
                q(s),
                self.same(s, x)
            )
        };
        let relation = |from: &str| Relation {
            from: from.to_string(),
            weighted: false,
        };
        // (1) over-deletion.
        let db = w.input(&self.base.delta()?)?;
        let ds = self.over(&mut w, &self.step.delta()?, relation(storage))?;
        let lost = |f: &Fragment| {
            format!(
                "SELECT {} FROM ({}) AS {} WHERE {} < 0 AND {}",
                self.typed(s),
                f.sql,
                q(s),
                Recursive::weight_of(f, s),
                in_storage(s)
            )
        };
        let propagated = self.over(&mut w, &self.step, relation(&del))?;
        let propagated = rows(&propagated, n);
        let over_deleted = format!(
            "{del}({names}) AS ({} UNION {} UNION SELECT {} FROM {propagated} AS {} WHERE {})",
            lost(&db),
            lost(&ds),
            self.typed(s),
            q(s),
            in_storage(s)
        );
        // (3) derive anew over R'.
        let ds_keep = self.over(&mut w, &self.step.delta()?, relation(&keep))?;
        let gained = |f: &Fragment| {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{}.{}", q(s), col_name(i)))
                .collect();
            format!(
                "SELECT {} FROM (SELECT {} FROM ({}) AS {} GROUP BY {} HAVING SUM({}) > 0) AS {} \
                 WHERE NOT {}",
                self.typed(x),
                cols.iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c} AS {}", col_name(i)))
                    .collect::<Vec<_>>()
                    .join(", "),
                f.sql,
                q(s),
                cols.join(", "),
                Recursive::weight_of(f, s),
                q(x),
                in_keep(x)
            )
        };
        let base_now = w.input(&self.base)?;
        let base_now = rows(&base_now, n);
        let step_keep = self.over(&mut w, &self.step, relation(&keep))?;
        let step_keep = rows(&step_keep, n);
        let step_new = self.over(&mut w, &self.step, relation(&new))?;
        let step_new = rows(&step_new, n);
        let derived = format!(
            "{new}({names}) AS ({} UNION {} UNION {} UNION {} UNION SELECT {} FROM {step_new} AS \
             {} WHERE NOT {})",
            gained(&db),
            gained(&ds_keep),
            in_del(&base_now),
            in_del(&step_keep),
            self.typed(s),
            q(s),
            in_keep(s)
        );
        // (4) the delta.
        let body = format!(
            "SELECT {}, CAST(1 AS int8) AS {wt} FROM {new} AS {} WHERE NOT {} UNION ALL \
             SELECT {}, CAST(-1 AS int8) AS {wt} FROM {del} AS {} WHERE NOT EXISTS \
             (SELECT 1 FROM {new} AS {} WHERE {})",
            self.typed(x),
            q(x),
            in_storage(x),
            self.typed(x),
            q(x),
            q(y),
            self.same(y, x),
            wt = q(WEIGHT),
        );
        Ok(w.finish_recursive(vec![over_deleted, derived], &body))
    }
}
