//! The defining queries the oracle maintains, in groups that share source tables, and the
//! twin modes every query is created in. A case of the oracle creates one group's tables and
//! every family of that group once per twin mode; its writes touch only those tables.

use crate::schema::{Table, A, B, C, M, N};

/// What the engine is expected to make of a query in AUTO mode. A family expected
/// DIFFERENTIAL that falls back to FULL fails the run: the oracle would silently stop testing
/// the differential path for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Differential,
    Full,
}

/// A defining query and its family name. With `upstream`, the family is a stream table over
/// a stream table: each twin first creates `<table>_up` defined by `upstream` (in the twin's
/// mode), and `{up}` in `query` names it.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub query: &'static str,
    pub expect: Expect,
    pub upstream: Option<&'static str>,
}

/// The placeholder for the upstream stream table in a downstream query.
pub const UP: &str = "{up}";

impl Family {
    /// The query with the upstream stream table named `up`.
    pub fn query_over(&self, up: &str) -> String {
        self.query.replace(UP, up)
    }

    /// The query with the upstream's defining query inlined: what the chain must equal.
    pub fn composed(&self) -> String {
        match self.upstream {
            Some(u) => self.query.replace(UP, &format!("({u})")),
            None => self.query.to_string(),
        }
    }
}

/// Source tables and the families over them.
#[derive(Debug)]
pub struct Group {
    pub name: &'static str,
    pub tables: &'static [&'static Table],
    pub families: &'static [Family],
}

/// One way of maintaining a query: stream table `<prefix>_<family>` in `mode`. The first twin
/// is the one under test; every twin is compared with the query and with the first twin.
#[derive(Debug, Clone, Copy)]
pub struct Twin {
    pub prefix: &'static str,
    pub mode: &'static str,
    /// Refreshed before each check. IMMEDIATE twins are checked as they stand: a refresh
    /// could repair what maintenance inside the writes got wrong.
    pub refresh: bool,
    /// Only for families expected DIFFERENTIAL (the mode refuses the others).
    pub differentiable_only: bool,
    /// Created for the `f`th family of a group in the `r`th case of that group when
    /// `(f + r) % one_in == 0`: every family gets the twin in one case out of `one_in`. IMMEDIATE maintains every IMMEDIATE stream table on
    /// every write of a source (about ten times the cost of a case without them).
    pub one_in: u64,
}

/// The twins of every family. Adding a mode is one line here.
#[rustfmt::skip]
pub const TWINS: &[Twin] = &[
    Twin { prefix: "diff", mode: "AUTO", refresh: true, differentiable_only: false, one_in: 1 },
    Twin { prefix: "full", mode: "FULL", refresh: true, differentiable_only: false, one_in: 1 },
    Twin { prefix: "imm", mode: "IMMEDIATE", refresh: false, differentiable_only: true, one_in: 3 },
];

impl Twin {
    /// Whether `family`, the `index`th of its group, gets this twin in the group's `round`th
    /// case.
    pub fn applies_to(&self, family: &Family, index: usize, round: u64) -> bool {
        (!self.differentiable_only || family.expect == Expect::Differential)
            && (index as u64)
                .wrapping_add(round)
                .is_multiple_of(self.one_in.max(1))
    }
}

#[rustfmt::skip]
const fn d(name: &'static str, query: &'static str) -> Family {
    Family { name, query, expect: Expect::Differential, upstream: None }
}

#[rustfmt::skip]
const fn dag(name: &'static str, upstream: &'static str, query: &'static str) -> Family {
    Family { name, query, expect: Expect::Differential, upstream: Some(upstream) }
}

#[rustfmt::skip]
const fn f(name: &'static str, query: &'static str) -> Family {
    Family { name, query, expect: Expect::Full, upstream: None }
}

/// Every group, in the order cases visit them.
#[rustfmt::skip]
pub static GROUPS: &[Group] = &[
    Group { name: "pk2", tables: &[&A, &B], families: PK2 },
    Group { name: "pk3", tables: &[&A, &B, &C], families: PK3 },
    Group { name: "nopk2", tables: &[&N, &M], families: NOPK2 },
    Group { name: "mixed3", tables: &[&A, &N, &M], families: MIXED3 },
    Group { name: "single", tables: &[&A, &B, &N, &M], families: SINGLE },
    Group { name: "dag", tables: &[&A, &B, &N], families: DAG },
    Group { name: "window", tables: &[&A, &B, &N, &M], families: WINDOW },
    Group { name: "lateral", tables: &[&A, &B, &N, &M], families: LATERAL },
    Group { name: "recursive", tables: &[&A, &B, &N, &M], families: RECURSIVE },
];

/// Two keyed tables: inner, non-equi and outer joins, aggregates over joins, semi/anti
/// joins, set operations.
#[rustfmt::skip]
const PK2: &[Family] = &[
    d("join2", "SELECT a.id AS aid, b.id AS bid, a.v, b.w FROM a JOIN b ON a.k = b.k"),
    d("join2_non_equi", "SELECT a.id AS aid, b.id AS bid FROM a JOIN b ON a.k < b.k AND b.w > 10"),
    d("left_join", "SELECT a.id AS aid, b.id AS bid, b.w FROM a LEFT JOIN b ON a.k = b.k"),
    d("right_join", "SELECT a.id AS aid, b.id AS bid, a.t FROM a RIGHT JOIN b ON a.k = b.k AND a.f"),
    d("full_join", "SELECT a.id AS aid, b.id AS bid, a.k AS ak, b.k AS bk FROM a FULL JOIN b ON a.k = b.k"),
    d("agg_join", "SELECT a.k, count(*) AS cnt, sum(b.w) AS sw, avg(a.v) AS av, min(b.ts) AS mn, max(a.t) AS mx FROM a JOIN b ON a.k = b.k GROUP BY a.k HAVING count(*) > 1"),
    d("agg_left_join", "SELECT a.id, count(b.id) AS cnt, sum(b.w) AS sw, max(b.ts) AS mx FROM a LEFT JOIN b ON a.k = b.k GROUP BY a.id"),
    d("scalar_agg_join", "SELECT count(*) AS cnt, sum(a.v * b.w) AS total, min(b.w) AS mn FROM a JOIN b ON a.k = b.k"),
    d("distinct_join", "SELECT DISTINCT a.k, b.w FROM a JOIN b ON a.k = b.k"),
    d("exists", "SELECT id, k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > 5)"),
    d("not_exists", "SELECT id, t FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)"),
    d("in_subquery", "SELECT id FROM b WHERE k IN (SELECT k FROM a WHERE f)"),
    d("not_in", "SELECT id FROM a WHERE k NOT IN (SELECT k FROM b)"),
    d("union", "SELECT k FROM a UNION SELECT k FROM b"),
    d("union_all_keyed", "SELECT id, k FROM a UNION ALL SELECT id + 1000, k FROM b"),
    d("intersect", "SELECT k FROM a INTERSECT SELECT k FROM b"),
    d("except", "SELECT k FROM a EXCEPT SELECT k FROM b"),
    // Expressions the engine passes through to PostgreSQL (INTERVAL, EXTRACT, an operator it
    // does not model), in a filter, a projection, a group key and over an aggregate.
    d("expr_passthrough", "SELECT id, EXTRACT(HOUR FROM ts) AS h, ts + INTERVAL '90 minutes' AS later, w # 3 AS xw FROM b WHERE ts < TIMESTAMP '2026-01-02 12:00' - INTERVAL '2 hours'"),
    // Scalar subqueries, decorrelated: uncorrelated in the select list and WHERE, correlated
    // by equality (COUNT over no rows is 0), in HAVING of an aggregate, nested in IN.
    d("scalar_subquery", "SELECT id, k, (SELECT max(w) FROM b) AS mx FROM a"),
    d("scalar_where", "SELECT id, v FROM a WHERE v > (SELECT avg(w) FROM b WHERE b.w IS NOT NULL)"),
    d("scalar_correlated", "SELECT id, k, (SELECT count(*) FROM b WHERE b.k = a.k) AS cnt, (SELECT sum(b.w) FROM b WHERE b.k = a.k AND b.w > 5) AS sw FROM a"),
    d("scalar_correlated_where", "SELECT id, w FROM b WHERE w >= (SELECT 0.5 * avg(b2.w) FROM b AS b2 WHERE b2.k = b.k)"),
    d("scalar_having", "SELECT k, sum(w) AS sw FROM b GROUP BY k HAVING sum(w) > (SELECT count(*) FROM a)"),
    d("scalar_grouped", "SELECT k, count(*) AS cnt, (SELECT max(b.w) FROM b WHERE b.k = a.k) AS mx FROM a GROUP BY k"),
    d("scalar_range", "SELECT id, (SELECT count(*) FROM b WHERE b.w < a.k * 10) AS below FROM a"),
    d("exists_range", "SELECT id, EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > a.id) AS above FROM a WHERE a.f OR NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)"),
    d("in_nested_scalar", "SELECT id FROM a WHERE k IN (SELECT b.k FROM b WHERE b.w > (SELECT min(a2.v) FROM a AS a2 WHERE a2.k = b.k))"),
    // A scalar subquery without an aggregate: at most one row here (b.id is b's key).
    d("scalar_rows", "SELECT id, (SELECT b.w FROM b WHERE b.id = a.id) AS w, (SELECT b.ts FROM b WHERE b.id = a.id + 1) AS next_ts FROM a"),
    // Still refreshed FULL: LIMIT inside a scalar subquery.
    f("scalar_limit", "SELECT id, (SELECT b.w FROM b WHERE b.k = a.k ORDER BY b.id LIMIT 1) AS w FROM a"),
    d("in_grouped", "SELECT id, k FROM a WHERE k IN (SELECT k FROM b GROUP BY k HAVING count(*) > 1)"),
    d("agg_passthrough", "SELECT EXTRACT(DAY FROM ts) AS day, count(*) AS cnt, sum(w) AS sw, EXTRACT(HOUR FROM max(ts)) AS last_hour FROM b GROUP BY EXTRACT(DAY FROM ts)"),
    d("except_all", "SELECT k FROM b EXCEPT ALL SELECT k FROM a"),
    d("cte_subquery", "WITH big AS (SELECT id, k FROM b WHERE w > 5) SELECT a.id, s.id AS bid FROM a JOIN (SELECT * FROM big) AS s ON s.k = a.k"),
    // FULL JOINs of grouped sides: keyed (and DIFFERENTIAL) only where a side's key is never
    // NULL; otherwise both unmatched sides pad to the same pair of keys (found by fuzzing).
    d("full_join_groups", "SELECT l.k, l.cnt, r.k AS rk, r.sw FROM (SELECT id % 3 AS k, count(*) AS cnt FROM a GROUP BY id % 3) AS l FULL JOIN (SELECT k, sum(w) AS sw FROM b GROUP BY k) AS r ON l.k = r.k"),
    d("full_join_null_groups", "SELECT l.k, l.cnt, r.k AS rk, r.sw FROM (SELECT k, count(*) AS cnt FROM a GROUP BY k) AS l FULL JOIN (SELECT k, sum(w) AS sw FROM b GROUP BY k) AS r ON l.k = r.k"),
    d("full_join_scalar_aggs", "SELECT l.mn, r.mx FROM (SELECT min(k) AS mn FROM a) AS l FULL JOIN (SELECT max(k) AS mx FROM b) AS r ON l.mn = r.mx"),
];

/// Three keyed tables: chains of inner and outer joins, aggregates over them, nested set
/// operations.
#[rustfmt::skip]
const PK3: &[Family] = &[
    d("join3", "SELECT a.id AS aid, b.id AS bid, c.id AS cid, c.label FROM a JOIN b ON a.k = b.k JOIN c ON c.k = b.k"),
    d("join3_left_chain", "SELECT a.id AS aid, b.id AS bid, c.id AS cid FROM a LEFT JOIN b ON a.k = b.k LEFT JOIN c ON c.k = b.k AND c.label IS NOT NULL"),
    d("join3_full", "SELECT a.id AS aid, b.id AS bid, c.id AS cid FROM a FULL JOIN b ON a.k = b.k FULL JOIN c ON c.id = b.id"),
    d("join3_inner_outer", "SELECT a.id AS aid, b.w, c.label FROM a JOIN b ON a.k = b.k LEFT JOIN c ON c.k = a.k AND c.label = 'p'"),
    d("join3_non_equi", "SELECT a.id AS aid, c.id AS cid FROM a JOIN c ON a.k < c.k JOIN b ON b.id = c.id"),
    d("agg_join3", "SELECT c.label, count(*) AS cnt, sum(a.v) AS sv, avg(b.w) AS aw, min(a.t) AS mn, max(b.ts) AS mx FROM a JOIN b ON a.k = b.k JOIN c ON c.k = a.k GROUP BY c.label HAVING sum(b.w) > 5"),
    d("agg_join3_left", "SELECT a.k, count(c.id) AS cc, count(b.id) AS cb FROM a LEFT JOIN b ON a.k = b.k LEFT JOIN c ON c.k = a.k GROUP BY a.k"),
    d("distinct_join3", "SELECT DISTINCT c.label, b.w FROM a JOIN b ON a.k = b.k JOIN c ON c.k = b.k"),
    d("exists_not_exists3", "SELECT id, k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) AND NOT EXISTS (SELECT 1 FROM c WHERE c.k = a.k AND c.label = 'q')"),
    d("union3", "SELECT k FROM a UNION SELECT k FROM b UNION SELECT k FROM c"),
    d("intersect_except3", "(SELECT k FROM a INTERSECT SELECT k FROM b) EXCEPT SELECT k FROM c"),
    d("union_all3", "SELECT 'a' AS src, id, k FROM a UNION ALL SELECT 'b', id, k FROM b UNION ALL SELECT 'c', id, k FROM c"),
    d("not_in3", "SELECT id FROM c WHERE k NOT IN (SELECT a.k FROM a JOIN b ON a.id = b.id)"),
];

/// Two tables without keys: bags. Joins that may repeat rows are FULL; aggregates, DISTINCT
/// and set semantics are keyed by their output and maintained differentially.
#[rustfmt::skip]
const NOPK2: &[Family] = &[
    d("bag_join", "SELECT n.k, n.x, m.y FROM n JOIN m ON n.k = m.k"),
    d("agg_bag_join", "SELECT n.k, count(*) AS cnt, sum(m.y) AS sy, avg(n.x) AS ax, min(m.s) AS mn, max(n.x) AS mx FROM n JOIN m ON n.k = m.k GROUP BY n.k HAVING sum(n.x) > 1"),
    d("distinct_bag_join", "SELECT DISTINCT n.x, m.s FROM n JOIN m ON n.k = m.k"),
    d("agg_bag_left", "SELECT n.k, count(m.k) AS cm, max(m.y) AS my FROM n LEFT JOIN m ON n.k = m.k GROUP BY n.k"),
    d("agg_bag_full", "SELECT coalesce(n.k, m.k) AS key, count(*) AS cnt, sum(n.x) AS sx FROM n FULL JOIN m ON n.k = m.k GROUP BY coalesce(n.k, m.k)"),
    d("scalar_agg_bag_join", "SELECT count(*) AS cnt, sum(n.x) AS sx, max(m.s) AS ms FROM n JOIN m ON n.k = m.k"),
    d("union_bag", "SELECT k FROM n UNION SELECT k FROM m"),
    d("intersect_bag", "SELECT k FROM n INTERSECT SELECT k FROM m"),
    d("intersect_all_bag", "SELECT k FROM n INTERSECT ALL SELECT k FROM m"),
    d("except_bag", "SELECT k FROM m EXCEPT SELECT k FROM n"),
    d("exists_bag", "SELECT DISTINCT k, x FROM n WHERE EXISTS (SELECT 1 FROM m WHERE m.k = n.k AND m.s IS NOT NULL)"),
    d("not_exists_bag", "SELECT k, count(*) AS cnt FROM n WHERE NOT EXISTS (SELECT 1 FROM m WHERE m.k = n.k) GROUP BY k"),
    d("semi_bag", "SELECT k, x FROM n WHERE k IN (SELECT k FROM m)"),
];

/// A keyed table with two bags: joins across keyed and unkeyed sides, int = bigint and
/// text join keys.
#[rustfmt::skip]
const MIXED3: &[Family] = &[
    d("agg_keyed_bag", "SELECT a.id, count(*) AS cnt, sum(n.x) AS sx FROM a JOIN n ON a.k = n.k GROUP BY a.id"),
    d("agg_mixed3", "SELECT a.t, count(*) AS cnt, sum(n.x) AS sx, min(m.y) AS my, max(a.v) AS mv FROM a JOIN n ON n.k = a.k LEFT JOIN m ON m.k = a.k GROUP BY a.t HAVING count(*) > 1"),
    d("distinct_mixed3", "SELECT DISTINCT a.f, n.x FROM a JOIN n ON a.k = n.k WHERE EXISTS (SELECT 1 FROM m WHERE m.k = n.k)"),
    d("join_text_key", "SELECT a.id, count(m.s) AS cnt, max(m.y) AS my FROM a LEFT JOIN m ON a.t = m.s GROUP BY a.id"),
    d("join_bigint_key", "SELECT DISTINCT a.id, m.y FROM a JOIN m ON a.k = m.k"),
    d("left_join_bag", "SELECT a.id, n.x FROM a LEFT JOIN n ON a.k = n.k"),
    d("union_mixed3", "SELECT k FROM a UNION SELECT k FROM n UNION SELECT k::int FROM m"),
    d("except_mixed", "SELECT k FROM n EXCEPT SELECT k FROM a"),
    d("intersect_mixed", "SELECT k FROM m INTERSECT SELECT k FROM a"),
    d("not_exists_mixed3", "SELECT id FROM a WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.k = a.k) AND EXISTS (SELECT 1 FROM m WHERE m.s = a.t)"),
    d("scalar_agg_mixed3", "SELECT count(*) AS cnt, sum(a.v) AS sv, avg(n.x) AS ax FROM a JOIN n ON a.k = n.k JOIN m ON m.k = n.k"),
    d("full_join_mixed", "SELECT coalesce(a.k, n.k) AS key, count(a.id) AS ca, count(n.x) AS cx FROM a FULL JOIN n ON a.k = n.k GROUP BY coalesce(a.k, n.k)"),
];

/// One table at a time: scans, filters, projections, aggregates, DISTINCT, bags.
#[rustfmt::skip]
const SINGLE: &[Family] = &[
    d("scan_filter_project", "SELECT id, k, v * 2 AS v2, upper(t) AS tu FROM a WHERE f IS NOT FALSE AND (k IS NULL OR k <> 3)"),
    d("agg_minmax_having", "SELECT k, min(w) AS mn, max(ts) AS mx, count(w) AS cw FROM b GROUP BY k HAVING count(*) > 1"),
    d("agg_filter", "SELECT k, count(*) FILTER (WHERE f) AS nf, sum(v) FILTER (WHERE v > 0) AS sp, bool_and(f) AS ba FROM a GROUP BY k"),
    d("scalar_agg", "SELECT count(*) AS cnt, sum(v) AS sv, avg(v) AS av, max(t) AS mt FROM a"),
    d("scalar_agg_empty", "SELECT count(*) AS cnt, sum(w) AS sw, min(ts) AS mn FROM b WHERE w > 15"),
    d("distinct", "SELECT DISTINCT k FROM b"),
    d("bag_no_key", "SELECT k, x FROM n WHERE x IS NOT NULL"),
    d("agg_bag", "SELECT k, count(*) AS cnt, sum(x) AS sx, avg(x) AS ax FROM n GROUP BY k"),
    d("distinct_bag", "SELECT DISTINCT s, y FROM m"),
    d("agg_bag_minmax", "SELECT s, min(y) AS mn, max(k) AS mx, count(*) AS cnt FROM m GROUP BY s HAVING max(y) > 0.5"),
    // MIN/MAX kept in place (a group rescanned only when a deletion reaches its extreme): by a
    // nullable key, with FILTER and under an expression; over a keyless table; scalar.
    d("agg_minmax_in_place", "SELECT k, min(w) AS mn, max(w) AS mx, max(ts) FILTER (WHERE w > 3) AS mf, min(w) + 1 AS mw, count(*) AS cnt FROM b GROUP BY k"),
    d("agg_minmax_bag", "SELECT s, min(y) AS mn, max(k) AS mx, max(y) FILTER (WHERE k > 2) AS mf FROM m GROUP BY s"),
    d("scalar_minmax", "SELECT min(v) AS mn, max(v) AS mx, max(id) FILTER (WHERE f) AS mf FROM a"),
    // ORDER BY inside aggregates with explicit NULLS placement and direction (recomputed
    // groups must keep the query's element order); over a keyless table, duplicates included.
    d("agg_ordered_nulls", "SELECT k, array_agg(v ORDER BY v NULLS FIRST, id) AS a1, array_agg(t ORDER BY t DESC NULLS LAST, id) AS a2, string_agg(t, ',' ORDER BY v DESC NULLS LAST, id DESC) AS s FROM a GROUP BY k"),
    d("agg_ordered_bag", "SELECT s, array_agg(y ORDER BY y NULLS FIRST) AS ay, array_agg(k ORDER BY k DESC NULLS LAST) AS ak FROM m GROUP BY s"),
    // Aggregates without a rule of the engine's own (statistical, ordered-set, hypothetical-
    // set): the touched groups are recomputed; over a keyless table each row counts as often as
    // it occurs. Floating-point results are rounded: PostgreSQL's float accumulation depends on
    // the order it reads rows in.
    d("agg_statistical", "SELECT k, regr_count(w, id) AS rc, round(corr(w, id)::numeric, 6) AS cr, round(regr_slope(w, id)::numeric, 6) AS rs FROM b GROUP BY k"),
    d("agg_ordered_set", "SELECT k, percentile_cont(0.5) WITHIN GROUP (ORDER BY w) AS med, percentile_disc(0.25) WITHIN GROUP (ORDER BY ts DESC) AS q, mode() WITHIN GROUP (ORDER BY w) AS mo, rank(5) WITHIN GROUP (ORDER BY w) AS r FROM b GROUP BY k"),
    d("agg_ordered_set_bag", "SELECT s, percentile_disc(0.5) WITHIN GROUP (ORDER BY y) AS md, regr_count(y, k) AS rc FROM m GROUP BY s"),
    d("scalar_ordered_set", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS med, regr_count(v, id) AS rc FROM a"),
    // Grouping sets: one GROUP BY per set, keys left out NULL, GROUPING() constant per set.
    d("agg_rollup", "SELECT k, f, count(*) AS cnt, sum(v) AS sv, grouping(k, f) AS g FROM a GROUP BY ROLLUP (k, f)"),
    d("agg_cube_having", "SELECT k, w % 3 AS r, count(*) AS cnt, max(ts) AS mt FROM b GROUP BY CUBE (k, w % 3) HAVING count(*) > 1"),
    d("agg_grouping_sets_bag", "SELECT s, k, count(*) AS cnt, sum(y) AS sy, grouping(s) AS gs FROM m GROUP BY GROUPING SETS ((s), (k), ())"),
];

/// Window functions, DISTINCT ON and ORDER BY … LIMIT: the partitions a change touches are
/// recomputed, the top rows re-read from the top limit + inserted. A
/// function that numbers rows or picks one (`row_number`, `lag`, a ROWS frame, DISTINCT ON) is
/// ordered here by a total order (ending in a key), so that the query run as it is agrees
/// with the stream table, which breaks ties by the input's columns; the rank family and RANGE
/// frames keep their ties. Partitions empty out under churn, and a NULL key is a partition.
#[rustfmt::skip]
const WINDOW: &[Family] = &[
    d("win_rank_ties", "SELECT id, k, v, rank() OVER (PARTITION BY k ORDER BY v DESC NULLS LAST) AS rk, dense_rank() OVER (PARTITION BY k ORDER BY v) AS dr, percent_rank() OVER (PARTITION BY k ORDER BY t) AS pr, cume_dist() OVER (PARTITION BY k ORDER BY t NULLS FIRST) AS cd FROM a"),
    // Ties in the ORDER BY, the key projected away: the rows visible do not depend on which
    // tied row gets which number, but the stored rows (keyed by the hidden id) do, so two
    // terms of a delta numbering ties differently would show as duplicated or missing numbers.
    d("win_ties_hidden_key", "SELECT x.k, x.v, x.rn, x.lv FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v) AS rn, lag(v) OVER (PARTITION BY k ORDER BY v) AS lv FROM a) AS x"),
    d("win_top3_per_key", "SELECT x.k, x.id, x.v, x.rn FROM (SELECT id, k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC NULLS LAST, id) AS rn FROM a) AS x WHERE x.rn <= 3"),
    d("win_frames", "SELECT id, k, sum(v) OVER (PARTITION BY k ORDER BY id) AS run, count(*) OVER (PARTITION BY k) AS cnt, avg(v) OVER (PARTITION BY k ORDER BY v) AS peers_avg, max(t) OVER (PARTITION BY k ORDER BY id ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING) AS mt, sum(w) OVER (PARTITION BY k ORDER BY w GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW) AS gs FROM (SELECT a.id, a.k, a.v, a.t, a.id % 4 AS w FROM a) AS y"),
    d("win_offsets", "SELECT id, lag(v) OVER (PARTITION BY k ORDER BY id) AS pv, lead(t, 2, 'none') OVER (PARTITION BY k ORDER BY id) AS nt, first_value(id) OVER (PARTITION BY k ORDER BY v NULLS FIRST, id) AS fv, last_value(id) OVER (PARTITION BY k ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS lv, nth_value(v, 2) OVER (PARTITION BY k ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS nv, ntile(3) OVER (PARTITION BY k ORDER BY id) AS tile FROM a"),
    d("win_whole_input", "SELECT id, w, row_number() OVER (ORDER BY w, id) AS pos, sum(w) OVER () AS total, rank() OVER (ORDER BY ts) AS rk FROM b WHERE w > 5"),
    d("win_over_agg", "SELECT k, count(*) AS cnt, sum(x) AS sx, rank() OVER (ORDER BY count(*) DESC) AS rk, lag(sum(x)) OVER (ORDER BY k) AS prev FROM n GROUP BY k"),
    d("win_bag", "SELECT k, y, s, row_number() OVER (PARTITION BY k ORDER BY y, s) AS rn, sum(y) OVER (PARTITION BY k) AS sy, dense_rank() OVER (PARTITION BY s ORDER BY k) AS dr FROM m"),
    d("win_join", "SELECT a.id AS aid, b.id AS bid, row_number() OVER (PARTITION BY a.k ORDER BY b.w, b.id, a.id) AS rn, sum(b.w) OVER (PARTITION BY a.id) AS sw FROM a JOIN b ON a.k = b.k"),
    d("distinct_on", "SELECT DISTINCT ON (k) k, id, v FROM a ORDER BY k, v DESC NULLS LAST, id"),
    d("distinct_on_bag", "SELECT DISTINCT ON (k) k, y, s FROM m ORDER BY k, y, s"),
    d("distinct_on_join", "SELECT DISTINCT ON (a.k) a.k, b.id AS bid, b.ts FROM a JOIN b ON a.k = b.k ORDER BY a.k, b.ts DESC, b.id"),
    // ORDER BY … LIMIT: deletes of the boundary row, inserts that push rows out, OFFSET,
    // fewer rows than the limit, ties at the boundary (visible only through the key).
    d("topk", "SELECT id, k, v FROM a ORDER BY v DESC NULLS LAST, id LIMIT 5"),
    d("topk_offset", "SELECT id, w FROM b ORDER BY w NULLS FIRST, id LIMIT 4 OFFSET 3"),
    d("topk_ties", "SELECT v FROM a ORDER BY v LIMIT 4"),
    d("topk_agg", "SELECT k, count(*) AS cnt, sum(x) AS sx FROM n GROUP BY k ORDER BY cnt DESC, k LIMIT 3"),
    d("topk_bag", "SELECT k, y, s FROM m ORDER BY y DESC, s, k LIMIT 5"),
    d("topk_distinct", "SELECT DISTINCT k FROM b ORDER BY k NULLS FIRST LIMIT 3"),
    d("topk_join", "SELECT a.id AS aid, b.id AS bid, b.w FROM a JOIN b ON a.k = b.k ORDER BY b.w DESC, a.id, b.id FETCH FIRST 6 ROWS ONLY"),
    d("topk_union", "SELECT k FROM n UNION ALL SELECT k FROM b ORDER BY 1 DESC LIMIT 5"),
    d("topk_in_subquery", "SELECT x.id, x.v FROM (SELECT id, v FROM a ORDER BY v, id LIMIT 5) AS x WHERE x.v > 0"),
];

/// Set-returning functions, in FROM after the relations they read and in the select list:
/// each changed row expanded again. Calls returning no rows (NULL or empty arguments), LEFT
/// JOIN … ON true padding, WITH ORDINALITY keys, bags and aggregates over the expansion.
#[rustfmt::skip]
const LATERAL: &[Family] = &[
    d("lat_unnest", "SELECT a.id, u.e FROM a, unnest(ARRAY[a.k, a.id % 3]) AS u(e)"),
    d("lat_series_outer", "SELECT b.id, g.x, g.o FROM b LEFT JOIN LATERAL generate_series(1, b.w % 4) WITH ORDINALITY AS g(x, o) ON true"),
    d("lat_jsonb_each", "SELECT a.id, e.key, e.value FROM a CROSS JOIN LATERAL jsonb_each(('{\"k\": ' || a.k::text || ', \"v\": ' || a.v::text || '}')::jsonb) AS e"),
    d("lat_agg_bag", "SELECT u.e, count(*) AS cnt, sum(n.x) AS sx FROM n, unnest(ARRAY[n.k, n.x]) AS u(e) GROUP BY u.e"),
    d("lat_on", "SELECT m.k, m.s, q FROM m JOIN LATERAL generate_series(0, m.k) AS q ON q > 1"),
    d("srf_select_list", "SELECT id, generate_series(1, k) AS s FROM a"),
    d("srf_regexp", "SELECT id, regexp_matches(t, '[a-z]', 'g') AS mt FROM a WHERE f"),
    d("srf_split", "SELECT s, regexp_split_to_table(s || ',' || k::text, ',') AS part FROM m"),
    // LATERAL subqueries, decorrelated into joins on their correlation keys.
    d("lat_sub_join", "SELECT a.id, x.bid, x.w FROM a, LATERAL (SELECT b.id AS bid, b.w FROM b WHERE b.k = a.k AND b.w > 3) AS x"),
    d("lat_sub_top2", "SELECT a.id, x.bid, x.w FROM a CROSS JOIN LATERAL (SELECT b.id AS bid, b.w FROM b WHERE b.k = a.k ORDER BY b.w DESC NULLS LAST, b.id LIMIT 2) AS x"),
    d("lat_sub_left_latest", "SELECT a.id, x.* FROM a LEFT JOIN LATERAL (SELECT b.id AS bid, b.ts FROM b WHERE b.k = a.k ORDER BY b.ts DESC, b.id LIMIT 1) AS x ON true"),
    d("lat_sub_group", "SELECT a.id, x.x, x.cnt FROM a JOIN LATERAL (SELECT n.x, count(*) AS cnt FROM n WHERE n.k = a.k GROUP BY n.x) AS x ON x.cnt > 1"),
    d("lat_sub_distinct", "SELECT m.s, x.x FROM m, LATERAL (SELECT DISTINCT n.x FROM n WHERE n.k = m.k) AS x"),
    d("lat_sub_offset", "SELECT a.id, x.bid FROM a LEFT JOIN LATERAL (SELECT b.id AS bid FROM b WHERE b.k = a.k AND b.w = a.id ORDER BY b.id OFFSET 1) AS x ON true"),
    f("lat_sub_count", "SELECT a.id, x.n FROM a, LATERAL (SELECT count(*) AS n FROM b WHERE b.k = a.k) AS x"),
];

/// Recursive CTEs maintained as the whole result. `n` (k → x, keys 0..5 and 0..3, NULLs,
/// duplicate rows) is a small graph full of cycles: UNION closes them (delete and re-derive);
/// the UNION ALL families only follow edges that climb (bills of materials), so their
/// recursion ends, with duplicate edges multiplying paths.
#[rustfmt::skip]
const RECURSIVE: &[Family] = &[
    d("rec_closure", "WITH RECURSIVE r(s, d) AS (SELECT k, x FROM n UNION SELECT r.s, n.x FROM r JOIN n ON n.k = r.d) SELECT * FROM r"),
    d("rec_reach_from", "WITH RECURSIVE r(node) AS (SELECT k FROM a WHERE f UNION SELECT n.x FROM r JOIN n ON n.k = r.node) SELECT * FROM r"),
    d("rec_hops", "WITH RECURSIVE r(node, hops) AS (SELECT x, 1 FROM n WHERE k = 0 UNION SELECT n.x, r.hops + 1 FROM r JOIN n ON n.k = r.node WHERE r.hops < 4) SELECT node, hops FROM r"),
    d("rec_two_sources", "WITH RECURSIVE r(s, d) AS (SELECT id, k FROM a UNION SELECT r.s, b.k FROM r JOIN b ON b.id = r.d JOIN n ON n.k = b.k AND n.x IS NOT NULL) SELECT * FROM r"),
    d("rec_bom", "WITH RECURSIVE r(top, part, qty) AS (SELECT k, x, 1 FROM n WHERE k <= 1 UNION ALL SELECT r.top, n.x, r.qty * 2 FROM r JOIN n ON n.k = r.part WHERE n.x > n.k) SELECT * FROM r"),
    d("rec_bom_amounts", "WITH RECURSIVE r(id, k, total) AS (SELECT id, k, w FROM b WHERE w > 10 UNION ALL SELECT r.id, CAST(m.k AS int), r.total + 1 FROM r JOIN m ON m.k = r.k + 1) SELECT * FROM r"),
    f("rec_not_whole", "WITH RECURSIVE r(s, d) AS (SELECT k, x FROM n UNION SELECT r.s, n.x FROM r JOIN n ON n.k = r.d) SELECT s, count(*) AS cnt FROM r GROUP BY s"),
];

/// Stream tables over stream tables: a downstream query over an upstream stream table (each
/// twin its own chain), checked against its query over the upstream and against the query
/// with the upstream inlined.
#[rustfmt::skip]
const DAG: &[Family] = &[
    dag("dag_agg_over_join", "SELECT a.id AS aid, b.id AS bid, a.k, b.w FROM a JOIN b ON a.k = b.k", "SELECT u.k, count(*) AS cnt, sum(u.w) AS sw, max(u.bid) AS mb FROM {up} AS u GROUP BY u.k"),
    dag("dag_join_over_filter", "SELECT id, k, v FROM a WHERE f IS NOT FALSE", "SELECT u.id, b.id AS bid, u.v, b.w FROM {up} AS u JOIN b ON u.k = b.k"),
    dag("dag_agg_over_semi", "SELECT a.id, a.k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)", "SELECT u.k, count(*) AS cnt FROM {up} AS u GROUP BY u.k"),
    dag("dag_count_over_distinct", "SELECT DISTINCT k FROM b", "SELECT count(*) AS cnt, min(u.k) AS mn FROM {up} AS u"),
    dag("dag_anti_join_on_upstream", "SELECT id, k FROM a WHERE v > 0", "SELECT b.id FROM b WHERE NOT EXISTS (SELECT 1 FROM {up} AS u WHERE u.k = b.k)"),
    dag("dag_agg_over_left_join", "SELECT a.id AS aid, b.id AS bid, b.w FROM a LEFT JOIN b ON a.k = b.k", "SELECT u.aid, count(u.bid) AS cnt, sum(u.w) AS sw FROM {up} AS u GROUP BY u.aid"),
    dag("dag_filter_over_agg", "SELECT k, count(*) AS cnt, sum(w) AS sw FROM b GROUP BY k", "SELECT u.k, u.cnt FROM {up} AS u WHERE u.sw > 10"),
    dag("dag_join_over_bag_agg", "SELECT k, count(*) AS cnt, sum(x) AS sx FROM n GROUP BY k", "SELECT a.id, u.cnt, u.sx FROM a JOIN {up} AS u ON u.k = a.k"),
    dag("dag_bag_over_bag", "SELECT k, x FROM n WHERE x > 0", "SELECT u.k, count(*) AS cnt FROM {up} AS u GROUP BY u.k"),
];

/// The group named `name`.
pub fn group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TABLES;

    fn words(query: &str) -> Vec<&str> {
        query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect()
    }

    #[test]
    fn families_read_only_their_groups_tables() {
        for g in GROUPS {
            for fam in g.families {
                for w in words(&fam.composed()) {
                    if let Some(t) = TABLES.iter().find(|t| t.name == w) {
                        assert!(
                            g.tables.iter().any(|gt| gt.name == t.name),
                            "{} reads {} outside group {}",
                            fam.name,
                            t.name,
                            g.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_groups_table_is_read_by_some_family() {
        for g in GROUPS {
            for t in g.tables {
                assert!(
                    g.families
                        .iter()
                        .any(|f| words(&f.composed()).contains(&t.name)),
                    "{} in {}",
                    t.name,
                    g.name
                );
            }
        }
    }

    #[test]
    fn family_names_are_unique_across_groups() {
        let mut names: Vec<&str> = GROUPS
            .iter()
            .flat_map(|g| g.families.iter().map(|f| f.name))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all);
    }

    #[test]
    fn groups_cover_the_issue_operators() {
        let all: String = GROUPS
            .iter()
            .flat_map(|g| g.families.iter().map(|f| f.composed().to_uppercase() + " "))
            .collect();
        for op in [
            " JOIN ",
            "LEFT JOIN",
            "RIGHT JOIN",
            "FULL JOIN",
            "COUNT(",
            "SUM(",
            "AVG(",
            "MIN(",
            "MAX(",
            "HAVING",
            "DISTINCT",
            "UNION",
            "EXCEPT",
            "INTERSECT",
            "NOT EXISTS",
        ] {
            assert!(all.contains(op), "{op}");
        }
        assert!(GROUPS
            .iter()
            .any(|g| g.tables.len() == 3 && g.tables.iter().all(|t| t.has_pk)));
        assert!(GROUPS.iter().any(|g| g.tables.iter().all(|t| !t.has_pk)));
    }

    #[test]
    fn downstream_queries_name_their_upstream_and_only_they_do() {
        for fam in GROUPS.iter().flat_map(|g| g.families.iter()) {
            assert_eq!(
                fam.upstream.is_some(),
                fam.query.contains(UP),
                "{}",
                fam.name
            );
            assert!(!fam.composed().contains(UP));
        }
        assert!(GROUPS
            .iter()
            .flat_map(|g| g.families.iter())
            .any(|f| f.upstream.is_some()));
    }

    #[test]
    fn immediate_twins_skip_families_that_are_not_differentiable() {
        let imm = TWINS.iter().find(|t| t.mode == "IMMEDIATE").unwrap();
        assert!(!imm.refresh);
        assert!(imm.applies_to(&d("x", "SELECT 1"), 0, 0));
        assert!(!imm.applies_to(&f("x", "SELECT 1"), 0, 0));
    }

    #[test]
    fn every_family_gets_every_twin_within_one_in_cases() {
        for twin in TWINS {
            for index in 0..10 {
                let fam = d("x", "SELECT 1");
                assert!((0..twin.one_in).any(|round| twin.applies_to(&fam, index, round)));
            }
        }
        assert!(TWINS[0].one_in == 1, "the twin under test is in every case");
    }

    #[test]
    fn twins_start_with_the_mode_under_test_and_have_distinct_prefixes() {
        assert_eq!(TWINS[0].mode, "AUTO");
        assert!(TWINS.iter().any(|t| t.mode == "FULL"));
        let mut p: Vec<&str> = TWINS.iter().map(|t| t.prefix).collect();
        p.dedup();
        assert_eq!(p.len(), TWINS.len());
    }
}
