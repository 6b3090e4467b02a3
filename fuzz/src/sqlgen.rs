//! A generator of SELECT queries over the fixed catalog, mostly valid by construction (every
//! column reference is in scope and every operator gets operands of a fitting type family), so
//! that the planner and renderer are exercised past name resolution: joins of every kind,
//! semi/anti joins, GROUP BY with FILTER and HAVING, DISTINCT, set operations, subqueries in
//! FROM, CTEs, and now and then a construct the engine does not maintain (ORDER BY/LIMIT,
//! window functions, random()).

use arbitrary::{Result, Unstructured};

use crate::schema::{ident, TableSpec, Ty};

/// Generation bounds: subquery nesting, joins per FROM, items per SELECT list.
const DEPTH_MAX: u32 = 2;
const JOINS_MAX: u32 = 2;
const ITEMS_MAX: u32 = 3;
/// Non-linear constructs per query (DISTINCT, GROUP BY, outer and semi/anti joins, set
/// operations). The delta SQL of nested non-linear operators grows exponentially with their
/// nesting (about ×20 per aggregate-over-outer-join level), so deeper queries would spend the
/// fuzzing budget rendering megabytes instead of exploring.
const NONLINEAR_MAX: u32 = 2;
/// Relations per query (FROM items and subquery tables together): the in-memory evaluator of
/// operator_delta joins them by nested loops, so a self cross join of many copies of a table
/// would exhaust time and memory.
const RELATIONS_MAX: u32 = 4;

#[derive(Debug, Clone)]
struct Col {
    sql: String,
    ty: Ty,
}

/// A CTE in scope: its name and output columns.
#[derive(Debug, Clone)]
struct Cte {
    name: String,
    cols: Vec<(String, Ty)>,
}

/// Generator state for one query.
pub struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    tables: Vec<&'static TableSpec>,
    ctes: Vec<Cte>,
    aliases: u32,
    depth: u32,
    nonlinear: u32,
    relations: u32,
}

/// One SELECT over `tables`, driven by `u`.
pub fn query(u: &mut Unstructured<'_>, tables: Vec<&'static TableSpec>) -> Result<String> {
    let mut g = Gen {
        u,
        tables,
        ctes: Vec::new(),
        aliases: 0,
        depth: 0,
        nonlinear: 0,
        relations: 0,
    };
    g.top()
}

impl Gen<'_, '_> {
    fn one_in(&mut self, n: u32) -> Result<bool> {
        Ok(self.u.int_in_range(0..=n.saturating_sub(1))? == 0)
    }

    /// Whether to use a non-linear construct here (one chance in `n`, within the budget).
    fn nonlinear_in(&mut self, n: u32) -> Result<bool> {
        if self.nonlinear >= NONLINEAR_MAX || !self.one_in(n)? {
            return Ok(false);
        }
        self.nonlinear += 1;
        Ok(true)
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn top(&mut self) -> Result<String> {
        let mut sql = String::new();
        if self.one_in(5)? {
            let (body, cols) = self.core()?;
            let name = self.alias("q");
            sql.push_str(&format!("WITH {name} AS ({body}) "));
            self.ctes.push(Cte { name, cols });
        }
        let body = if self.nonlinear_in(6)? {
            self.set_op()?
        } else {
            self.core()?.0
        };
        sql.push_str(&body);
        match self.u.int_in_range(0..=15)? {
            0 => sql.push_str(" ORDER BY 1 LIMIT 2"),
            1 => sql.push_str(" OFFSET 1"),
            _ => {}
        }
        Ok(sql)
    }

    /// `single UNION|INTERSECT|EXCEPT [ALL] single`, each side one integer column.
    fn set_op(&mut self) -> Result<String> {
        let op = *self.u.choose(&["UNION", "INTERSECT", "EXCEPT"])?;
        let all = if self.u.arbitrary()? { " ALL" } else { "" };
        let l = self.single_int()?;
        let r = self.single_int()?;
        Ok(format!("{l} {op}{all} {r}"))
    }

    fn single_int(&mut self) -> Result<String> {
        let rel = self.table_rel()?;
        let scope = rel.1.clone();
        let e = self.expr(&scope, Ty::Int, 1)?;
        let mut s = format!("SELECT {e} AS c0 FROM {}", rel.0);
        if self.one_in(2)? {
            let p = self.pred(&scope, 1, false)?;
            s.push_str(&format!(" WHERE {p}"));
        }
        Ok(s)
    }

    /// A SELECT block; returns its SQL and its output columns (`c0`, `c1`, …).
    fn core(&mut self) -> Result<(String, Vec<(String, Ty)>)> {
        self.depth += 1;
        let (from, scope) = self.from()?;
        let mut sql = String::from("SELECT ");
        if self.nonlinear_in(5)? {
            sql.push_str("DISTINCT ");
        }
        let mut items = Vec::new();
        let mut out = Vec::new();
        let grouped = self.nonlinear_in(3)?;
        let mut group_by = Vec::new();
        if grouped {
            for _ in 0..self.u.int_in_range(0..=2)? {
                let c = self.u.choose(&scope)?.clone();
                group_by.push(c.sql.clone());
                items.push(c.sql.clone());
                out.push(c.ty);
            }
            for _ in 0..self.u.int_in_range(1..=ITEMS_MAX)? {
                let (a, ty) = self.aggregate(&scope)?;
                items.push(a);
                out.push(ty);
            }
        } else {
            for _ in 0..self.u.int_in_range(1..=ITEMS_MAX)? {
                let ty = *self
                    .u
                    .choose(&[Ty::Int, Ty::Int, Ty::Text, Ty::Num, Ty::Bool])?;
                items.push(self.expr(&scope, ty, 2)?);
                out.push(ty);
            }
            if self.one_in(12)? {
                let c = self.u.choose(&scope)?.sql.clone();
                items.push(format!("row_number() OVER (ORDER BY {c})"));
                out.push(Ty::Int);
            }
        }
        let named: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{e} AS c{i}"))
            .collect();
        sql.push_str(&named.join(", "));
        sql.push_str(&format!(" FROM {from}"));
        if self.one_in(2)? {
            let p = self.pred(&scope, 2, true)?;
            sql.push_str(&format!(" WHERE {p}"));
        }
        if grouped && !group_by.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", group_by.join(", ")));
        }
        if grouped && self.one_in(3)? {
            let h = match self.u.int_in_range(0..=2)? {
                0 => format!("count(*) > {}", self.u.int_in_range(0..=2)?),
                1 => {
                    let c = self.col_of(&scope, Ty::Int)?;
                    format!("sum({c}) IS NULL OR min({c}) > 0")
                }
                _ => {
                    let c = self.col_of(&scope, Ty::Int)?;
                    format!("max({c}) >= {}", self.u.int_in_range(0..=3)?)
                }
            };
            sql.push_str(&format!(" HAVING {h}"));
        }
        self.depth -= 1;
        let cols = out
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("c{i}"), t))
            .collect();
        Ok((sql, cols))
    }

    /// The FROM clause: a relation and up to `JOINS_MAX` joins; returns it and its columns.
    fn from(&mut self) -> Result<(String, Vec<Col>)> {
        let (mut sql, mut scope) = self.relation()?;
        let joins = self.u.int_in_range(0..=JOINS_MAX)?;
        for j in 0..joins {
            if self.relations >= RELATIONS_MAX {
                break;
            }
            let (rsql, rcols) = self.relation()?;
            // A comma binds looser than JOIN: later ON clauses could not see across it, so it
            // only joins the last relation.
            let kinds: &[&str] = if j + 1 == joins {
                &[
                    "JOIN",
                    "LEFT JOIN",
                    "RIGHT JOIN",
                    "FULL JOIN",
                    ",",
                    "CROSS JOIN",
                ]
            } else {
                &["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "CROSS JOIN"]
            };
            let mut kind = *self.u.choose(kinds)?;
            if kind.ends_with(" JOIN") && kind != "CROSS JOIN" && !self.nonlinear_in(1)? {
                kind = "JOIN";
            }
            if kind == "," || kind == "CROSS JOIN" {
                let sep = if kind == "," { ", " } else { " CROSS JOIN " };
                sql = format!("{sql}{sep}{rsql}");
                scope.extend(rcols);
                continue;
            }
            let r = self.u.choose(&rcols)?.clone();
            let same: Vec<Col> = scope.iter().filter(|c| c.ty == r.ty).cloned().collect();
            let mut on = if same.is_empty() {
                format!("{} IS NOT NULL", r.sql)
            } else {
                let l = self.u.choose(&same)?.clone();
                let op = *self.u.choose(&["=", "=", "=", "<", "<>"])?;
                format!("{} {op} {}", l.sql, r.sql)
            };
            scope.extend(rcols);
            if self.one_in(4)? {
                let extra = self.pred(&scope, 1, false)?;
                on = format!("{on} AND {extra}");
            }
            sql = format!("{sql} {kind} {rsql} ON {on}");
        }
        Ok((sql, scope))
    }

    fn relation(&mut self) -> Result<(String, Vec<Col>)> {
        let choice = self.u.int_in_range(0..=5)?;
        if choice == 0 && self.depth < DEPTH_MAX && self.relations + 2 <= RELATIONS_MAX {
            let (body, cols) = self.core()?;
            let alias = self.alias("s");
            let cols = cols
                .into_iter()
                .map(|(n, ty)| Col {
                    sql: format!("{alias}.{n}"),
                    ty,
                })
                .collect();
            return Ok((format!("({body}) AS {alias}"), cols));
        }
        if choice == 1 && !self.ctes.is_empty() {
            self.relations += 1;
            let cte = self.u.choose(&self.ctes)?.clone();
            let alias = self.alias("r");
            let cols = cte
                .cols
                .iter()
                .map(|(n, ty)| Col {
                    sql: format!("{alias}.{n}"),
                    ty: *ty,
                })
                .collect();
            return Ok((format!("{} AS {alias}", cte.name), cols));
        }
        self.table_rel()
    }

    fn table_rel(&mut self) -> Result<(String, Vec<Col>)> {
        self.relations += 1;
        let t = *self.u.choose(&self.tables)?;
        let alias = self.alias("t");
        let cols = t
            .columns
            .iter()
            .map(|(n, _, _, ty)| Col {
                sql: format!("{alias}.{}", ident(n)),
                ty: *ty,
            })
            .collect();
        Ok((format!("{} AS {alias}", ident(t.name)), cols))
    }

    fn col_of(&mut self, scope: &[Col], ty: Ty) -> Result<String> {
        let fit: Vec<&Col> = scope.iter().filter(|c| c.ty == ty).collect();
        if fit.is_empty() {
            return Ok(self.literal(ty)?.to_string());
        }
        Ok(self.u.choose(&fit)?.sql.clone())
    }

    fn literal(&mut self, ty: Ty) -> Result<&'static str> {
        Ok(match ty {
            Ty::Int => *self.u.choose(&["0", "1", "2", "3", "NULL"])?,
            Ty::Text => *self.u.choose(&["'a'", "'b'", "''", "'a '", "NULL"])?,
            Ty::Num => *self.u.choose(&["1.5", "0", "2.25", "NULL"])?,
            Ty::Bool => *self.u.choose(&["true", "false", "NULL"])?,
        })
    }

    /// A scalar expression of family `ty` over `scope`.
    fn expr(&mut self, scope: &[Col], ty: Ty, depth: u32) -> Result<String> {
        if depth == 0 || self.one_in(2)? {
            return if self.one_in(6)? {
                Ok(self.literal(ty)?.to_string())
            } else {
                self.col_of(scope, ty)
            };
        }
        let d = depth - 1;
        Ok(match ty {
            Ty::Int => match self.u.int_in_range(0..=6)? {
                0 => format!(
                    "{} + {}",
                    self.expr(scope, ty, d)?,
                    self.expr(scope, ty, d)?
                ),
                1 => format!("{} * 2", self.expr(scope, ty, d)?),
                2 => format!("COALESCE({}, 0)", self.expr(scope, ty, d)?),
                3 => format!(
                    "CASE WHEN {} THEN {} ELSE {} END",
                    self.pred(scope, d, false)?,
                    self.expr(scope, ty, d)?,
                    self.literal(ty)?
                ),
                4 => format!("abs({})", self.expr(scope, ty, d)?),
                5 => format!("NULLIF({}, 1)", self.expr(scope, ty, d)?),
                _ => format!("length({})", self.expr(scope, Ty::Text, d)?),
            },
            Ty::Text => match self.u.int_in_range(0..=2)? {
                0 => format!("upper({})", self.expr(scope, ty, d)?),
                1 => format!("{} || 'x'", self.expr(scope, ty, d)?),
                _ => format!("COALESCE({}, 'none')", self.expr(scope, ty, d)?),
            },
            Ty::Num => match self.u.int_in_range(0..=1)? {
                0 => format!("{} + 1.5", self.expr(scope, ty, d)?),
                _ => format!("round({})", self.expr(scope, ty, d)?),
            },
            Ty::Bool => self.pred(scope, d, false)?,
        })
    }

    /// A predicate over `scope`; `sub` allows EXISTS/IN subqueries correlated with it.
    fn pred(&mut self, scope: &[Col], depth: u32, sub: bool) -> Result<String> {
        let max = if depth == 0 { 4 } else { 9 };
        Ok(match self.u.int_in_range(0..=max)? {
            0 => {
                let op = *self.u.choose(&["=", "<>", "<", ">=", "IS DISTINCT FROM"])?;
                let l = self.col_of(scope, Ty::Int)?;
                let r = self.expr(scope, Ty::Int, depth)?;
                format!("{l} {op} {r}")
            }
            1 => {
                let neg = if self.u.arbitrary()? { "NOT " } else { "" };
                let c = self.u.choose(scope)?.sql.clone();
                format!("{c} IS {neg}NULL")
            }
            2 => {
                let c = self.col_of(scope, Ty::Int)?;
                format!("{c} BETWEEN 1 AND 2")
            }
            3 => {
                let c = self.col_of(scope, Ty::Text)?;
                format!("{c} LIKE 'a%'")
            }
            4 => {
                let c = self.col_of(scope, Ty::Int)?;
                let neg = if self.u.arbitrary()? { "NOT " } else { "" };
                format!("{c} {neg}IN (1, 2, NULL)")
            }
            5 => format!(
                "({} AND {})",
                self.pred(scope, depth - 1, sub)?,
                self.pred(scope, depth - 1, sub)?
            ),
            6 => format!(
                "({} OR {})",
                self.pred(scope, depth - 1, sub)?,
                self.pred(scope, depth - 1, sub)?
            ),
            7 => format!("NOT ({})", self.pred(scope, depth - 1, sub)?),
            8 if sub && self.nonlinear_in(1)? => self.exists(scope)?,
            9 if sub && self.nonlinear_in(1)? => self.in_subquery(scope)?,
            _ => {
                let c = self.col_of(scope, Ty::Bool)?;
                format!("{c} IS NOT FALSE")
            }
        })
    }

    /// `[NOT] EXISTS (SELECT 1 FROM t WHERE t.col = outer.col [AND …])`.
    fn exists(&mut self, scope: &[Col]) -> Result<String> {
        let (rel, inner) = self.table_rel()?;
        let outer = self.u.choose(scope)?.clone();
        let c = self.col_of(&inner, outer.ty)?;
        let neg = if self.u.arbitrary()? { "NOT " } else { "" };
        let mut s = format!("{neg}EXISTS (SELECT 1 FROM {rel} WHERE {c} = {}", outer.sql);
        if self.one_in(3)? {
            let p = self.pred(&inner, 0, false)?;
            s.push_str(&format!(" AND {p}"));
        }
        s.push(')');
        Ok(s)
    }

    /// `col [NOT] IN (SELECT col FROM t [WHERE …])`.
    fn in_subquery(&mut self, scope: &[Col]) -> Result<String> {
        let (rel, inner) = self.table_rel()?;
        let outer = self.col_of(scope, Ty::Int)?;
        let c = self.col_of(&inner, Ty::Int)?;
        let neg = if self.u.arbitrary()? { "NOT " } else { "" };
        let mut s = format!("{outer} {neg}IN (SELECT {c} FROM {rel}");
        if self.one_in(2)? {
            let p = self.pred(&inner, 0, false)?;
            s.push_str(&format!(" WHERE {p}"));
        }
        s.push(')');
        Ok(s)
    }

    /// An aggregate call over `scope` and its result family.
    fn aggregate(&mut self, scope: &[Col]) -> Result<(String, Ty)> {
        let (call, ty) = match self.u.int_in_range(0..=8)? {
            0 => ("count(*)".to_string(), Ty::Int),
            1 => (format!("count({})", self.u.choose(scope)?.sql), Ty::Int),
            2 => (format!("sum({})", self.col_of(scope, Ty::Int)?), Ty::Int),
            3 => (format!("avg({})", self.col_of(scope, Ty::Int)?), Ty::Num),
            4 => (format!("min({})", self.col_of(scope, Ty::Int)?), Ty::Int),
            5 => (format!("max({})", self.col_of(scope, Ty::Text)?), Ty::Text),
            6 => (
                format!("count(DISTINCT {})", self.u.choose(scope)?.sql),
                Ty::Int,
            ),
            7 => (format!("sum({})", self.col_of(scope, Ty::Num)?), Ty::Num),
            _ => (
                format!("bool_or({})", self.col_of(scope, Ty::Bool)?),
                Ty::Bool,
            ),
        };
        if self.one_in(4)? {
            let p = self.pred(scope, 0, false)?;
            return Ok((format!("{call} FILTER (WHERE {p})"), ty));
        }
        Ok((call, ty))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema;

    /// Deterministic pseudo-random bytes (xorshift), so the test needs no fuzzer.
    pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn most_generated_queries_plan_and_many_are_differential() {
        let cat = schema::catalog();
        let (mut planned, mut differential) = (0, 0);
        let mut errors = std::collections::BTreeMap::<String, usize>::new();
        for seed in 0..500 {
            let data = bytes(seed, 512);
            let q = query(&mut Unstructured::new(&data), schema::all()).unwrap();
            match engine::plan(&q, &cat) {
                Ok(p) => {
                    planned += 1;
                    differential += usize::from(p.is_differential());
                }
                Err(e) => {
                    let key = e.to_string().chars().take(60).collect();
                    *errors.entry(key).or_default() += 1;
                }
            }
        }
        assert!(planned >= 450, "{planned}/500 planned; errors: {errors:#?}");
        assert!(differential >= 300, "{differential}/500 differential");
    }
}
