//! The schema the oracle writes to and the defining queries it maintains, one or more per
//! operator family. Join keys are nullable and drawn from a small domain so that joins fan
//! out, groups empty and refill, and NULL keys occur.

/// Tables: `a`, `b`, `c` with primary keys; `n` without one.
pub const SCHEMA: &str = "
CREATE TABLE a (id int PRIMARY KEY, k int, v numeric, t text, f boolean);
CREATE TABLE b (id int PRIMARY KEY, k int, w bigint, ts timestamp);
CREATE TABLE c (id int PRIMARY KEY, k int, label text);
CREATE TABLE n (k int, x int);
";

/// A defining query and its family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub query: &'static str,
}

pub const FAMILIES: &[Family] = &[
    Family { name: "scan_filter_project", query: "SELECT id, k, v * 2 AS v2, upper(t) AS tu FROM a WHERE f IS NOT FALSE AND (k IS NULL OR k <> 3)" },
    Family { name: "join2", query: "SELECT a.id AS aid, b.id AS bid, a.v, b.w FROM a JOIN b ON a.k = b.k" },
    Family { name: "join3", query: "SELECT a.id AS aid, b.id AS bid, c.id AS cid, c.label FROM a JOIN b ON a.k = b.k JOIN c ON c.k = b.k" },
    Family { name: "join_non_equi", query: "SELECT a.id AS aid, c.id AS cid FROM a, c WHERE a.k < c.k AND c.label IS NOT NULL" },
    Family { name: "left_join", query: "SELECT a.id AS aid, b.id AS bid, b.w FROM a LEFT JOIN b ON a.k = b.k" },
    Family { name: "full_join", query: "SELECT a.id AS aid, c.id AS cid FROM a FULL JOIN c ON a.k = c.k" },
    Family { name: "agg_join", query: "SELECT a.k, count(*) AS n, sum(b.w) AS sw, avg(a.v) AS av FROM a JOIN b ON a.k = b.k GROUP BY a.k" },
    Family { name: "agg_minmax_having", query: "SELECT b.k, min(b.w) AS mn, max(b.ts) AS mx, count(b.w) AS cw FROM b GROUP BY b.k HAVING count(*) > 1" },
    Family { name: "agg_join3", query: "SELECT c.label, count(*) AS n, sum(a.v) AS sv FROM a JOIN b ON a.k = b.k JOIN c ON c.k = a.k GROUP BY c.label" },
    Family { name: "agg_filter", query: "SELECT k, count(*) FILTER (WHERE f) AS nf, sum(v) FILTER (WHERE v > 0) AS sp FROM a GROUP BY k" },
    Family { name: "scalar_agg", query: "SELECT count(*) AS n, sum(v) AS s, max(t) AS mt FROM a" },
    Family { name: "distinct", query: "SELECT DISTINCT k FROM b" },
    Family { name: "distinct_join", query: "SELECT DISTINCT a.k, c.label FROM a JOIN c ON a.k = c.k" },
    Family { name: "union", query: "SELECT k FROM a UNION SELECT k FROM c" },
    Family { name: "union_all_keyed", query: "SELECT id, k FROM a UNION ALL SELECT id + 1000, k FROM c" },
    Family { name: "intersect", query: "SELECT k FROM a INTERSECT SELECT k FROM b" },
    Family { name: "except", query: "SELECT k FROM a EXCEPT SELECT k FROM c" },
    Family { name: "except_all", query: "SELECT k FROM b EXCEPT ALL SELECT k FROM c" },
    Family { name: "exists", query: "SELECT id, k FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)" },
    Family { name: "not_exists", query: "SELECT id FROM a WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.k = a.k)" },
    Family { name: "in_subquery", query: "SELECT id FROM c WHERE k IN (SELECT k FROM b WHERE w > 10)" },
    Family { name: "not_in", query: "SELECT id FROM a WHERE k NOT IN (SELECT k FROM c)" },
    Family { name: "cte_subquery", query: "WITH big AS (SELECT id, k FROM b WHERE w > 5) SELECT a.id, s.id AS bid FROM a JOIN (SELECT * FROM big) AS s ON s.k = a.k" },
    Family { name: "bag_no_key", query: "SELECT k, x FROM n WHERE x IS NOT NULL" },
    Family { name: "agg_bag", query: "SELECT k, count(*) AS n, sum(x) AS sx FROM n GROUP BY k" },
];
