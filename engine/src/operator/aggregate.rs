//! `Aggregate`: GROUP BY keys (NULLs form one group) with aggregate functions; without keys
//! it is a scalar aggregate that yields exactly one row even over no input (COUNT 0, SUM NULL).
//! Delta rule (recompute the affected groups): with K = the keys the change window touches,
//! Δ Agg(A) = Agg(A|K) − Agg(before(A)|K), before(A)|K = consolidate(A|K − ΔA|K) (no
//! pre-state tables). For a scalar aggregate K is "any change at all". Cost: O(rows of A in
//! the touched groups) — O(|A|) for a scalar aggregate with a non-empty window. At the root
//! of a stream table COUNT/SUM/AVG are maintained algebraically instead (`plan`), O(|ΔA|).

use std::collections::BTreeMap;

use super::{bx, recompute_touched, ColType, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::{compare, eval, is_true, EvalError};
use crate::expr::{Expr, Literal};
use crate::render::{
    col_name, col_ref, copies, expr::render_expr, quote_ident, weight_ref, Fragment, SqlWriter,
};
use crate::types::{SqlType, TypeClass};
use crate::value::{Row, Value};
use crate::zset::{Weight, ZSet};

/// Aggregate functions. `Other` covers every remaining built-in, rendered by name and
/// maintained by recomputing affected groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggFunc {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    BoolAnd,
    BoolOr,
    /// Any other aggregate, maintained by recomputing the groups a change touches.
    Other {
        name: String,
        /// The schema it was named with (a user-defined aggregate outside the search_path).
        schema: Option<String>,
        /// Whether duplicates cannot change the result (bit_and, every…).
        duplicate_insensitive: bool,
    },
}

impl AggFunc {
    pub fn name(&self) -> &str {
        match self {
            AggFunc::CountStar | AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::BoolAnd => "bool_and",
            AggFunc::BoolOr => "bool_or",
            AggFunc::Other { name, .. } => name,
        }
    }

    /// The function as SQL names it in a call: quoted, and schema-qualified when the query
    /// qualified it.
    pub fn sql_name(&self) -> String {
        match self {
            AggFunc::Other {
                name,
                schema: Some(schema),
                ..
            } => format!("{}.{}", quote_ident(schema), quote_ident(name)),
            AggFunc::Other { name, .. } => quote_ident(name),
            f => f.name().to_string(),
        }
    }
}

/// One key of an ORDER BY inside an aggregate call: its expression, direction and NULLS
/// placement (`None`: PostgreSQL's default, NULLS LAST ascending and NULLS FIRST descending).
/// The placement is kept as written: dropping an explicit `NULLS FIRST` would order an
/// `array_agg` differently from the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub expr: Expr,
    pub desc: bool,
    pub nulls_first: Option<bool>,
}

impl SortKey {
    /// The key with its expression rewritten by `f`.
    pub fn map(&self, f: impl Fn(&Expr) -> Expr) -> SortKey {
        SortKey {
            expr: f(&self.expr),
            ..self.clone()
        }
    }

    /// The key as SQL: its expression rendered by `expr`, then direction and placement.
    pub fn sql(&self, expr: &dyn Fn(&Expr) -> String) -> String {
        format!("{}{}", expr(&self.expr), self.options_sql())
    }

    /// ` DESC`, ` NULLS FIRST`, … as written after the rendered expression.
    pub fn options_sql(&self) -> String {
        let dir = if self.desc { " DESC" } else { "" };
        let nulls = match self.nulls_first {
            Some(true) => " NULLS FIRST",
            Some(false) => " NULLS LAST",
            None => "",
        };
        format!("{dir}{nulls}")
    }
}

/// One aggregate call: `func([DISTINCT] args [ORDER BY …]) [FILTER (WHERE filter)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggCall {
    pub func: AggFunc,
    pub args: Vec<Expr>,
    pub distinct: bool,
    pub filter: Option<Expr>,
    /// The ORDER BY inside the call, or, with `within_group`, the ordered-set aggregate's
    /// `WITHIN GROUP (ORDER BY …)` (its aggregated arguments; `args` are then the direct
    /// arguments, such as `percentile_cont`'s fraction).
    pub order_by: Vec<SortKey>,
    /// An ordered-set aggregate: `func(args) WITHIN GROUP (ORDER BY order_by)`.
    pub within_group: bool,
    /// The type of the first argument, if any.
    pub arg_type: Option<SqlType>,
    /// The result type.
    pub ty: ColType,
}

/// Aggregates whose result depends on input order unless they have ORDER BY inside.
pub const ORDER_SENSITIVE: &[&str] = &[
    "string_agg",
    "array_agg",
    "json_agg",
    "jsonb_agg",
    "xmlagg",
    "json_object_agg",
    "jsonb_object_agg",
];

impl AggCall {
    /// Whether the result depends on the order of the input rows: an aggregate that
    /// collects them (`array_agg`…) without an ORDER BY of its own.
    pub fn order_sensitive(&self) -> bool {
        self.order_by.is_empty()
            && matches!(&self.func, AggFunc::Other { name, .. } if ORDER_SENSITIVE.contains(&name.as_str()))
    }

    /// Whether the result ignores how many times a row occurs.
    fn duplicate_insensitive(&self) -> bool {
        self.distinct
            || match &self.func {
                AggFunc::Min | AggFunc::Max | AggFunc::BoolAnd | AggFunc::BoolOr => true,
                AggFunc::Other {
                    duplicate_insensitive,
                    ..
                } => *duplicate_insensitive,
                AggFunc::CountStar | AggFunc::Count | AggFunc::Sum | AggFunc::Avg => false,
            }
    }

    /// Whether a weighted input can be aggregated with SUM(x * weight)-style formulas.
    fn has_weighted_formula(&self) -> bool {
        match self.func {
            AggFunc::CountStar | AggFunc::Count | AggFunc::Sum => true,
            AggFunc::Avg => self
                .arg_type
                .as_ref()
                .is_some_and(SqlType::is_numeric_family),
            _ => false,
        }
    }

    pub(crate) fn compute(&self, rows: &[(&Row, Weight)]) -> Result<Value, EvalError> {
        let mut values: Vec<(Value, Weight)> = Vec::new();
        let mut count_star: i64 = 0;
        for (row, w) in rows {
            if let Some(f) = &self.filter {
                if !is_true(&eval(f, row)?) {
                    continue;
                }
            }
            count_star += w;
            if let Some(arg) = self.args.first() {
                let v = eval(arg, row)?;
                if !v.is_null() {
                    values.push((v, *w));
                }
            }
        }
        if self.distinct {
            values.sort();
            values.dedup_by(|a, b| a.0 == b.0);
            values.iter_mut().for_each(|v| v.1 = 1);
        }
        let total: i64 = values.iter().map(|v| v.1).sum();
        match &self.func {
            AggFunc::CountStar => Ok(Value::Int(count_star)),
            AggFunc::Count => Ok(Value::Int(total)),
            AggFunc::Sum | AggFunc::Avg => {
                if values.is_empty() {
                    return Ok(Value::Null);
                }
                let mut int_sum: i64 = 0;
                let mut float_sum: f64 = 0.0;
                let mut is_float = false;
                for (v, w) in &values {
                    match v {
                        Value::Int(i) => {
                            int_sum = i
                                .checked_mul(*w)
                                .and_then(|p| int_sum.checked_add(p))
                                .ok_or(EvalError::Overflow)?;
                        }
                        #[allow(clippy::cast_precision_loss)]
                        Value::Float(f) => {
                            is_float = true;
                            float_sum += f.get() * (*w as f64);
                        }
                        _ => return Err(EvalError::InvalidInput("sum/avg argument".into())),
                    }
                }
                #[allow(clippy::cast_precision_loss)]
                let as_float = float_sum + int_sum as f64;
                Ok(match (&self.func, is_float) {
                    (AggFunc::Sum, false) => Value::Int(int_sum),
                    (AggFunc::Sum, true) => Value::float(as_float),
                    #[allow(clippy::cast_precision_loss)]
                    _ => Value::float(as_float / total as f64),
                })
            }
            AggFunc::Min | AggFunc::Max => {
                let want = if self.func == AggFunc::Min {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                };
                let mut best: Option<Value> = None;
                for (v, _) in values {
                    best = match best {
                        Some(b) if compare(&v, &b) != Some(want) => Some(b),
                        _ => Some(v),
                    };
                }
                Ok(best.unwrap_or(Value::Null))
            }
            AggFunc::BoolAnd | AggFunc::BoolOr => {
                if values.is_empty() {
                    return Ok(Value::Null);
                }
                let and = self.func == AggFunc::BoolAnd;
                let bools: Vec<bool> = values
                    .iter()
                    .map(|(v, _)| *v == Value::Bool(true))
                    .collect();
                Ok(Value::Bool(if and {
                    bools.iter().all(|b| *b)
                } else {
                    bools.iter().any(|b| *b)
                }))
            }
            AggFunc::Other { name, .. } => Err(EvalError::Unsupported(format!("aggregate {name}"))),
        }
    }
}

/// `SELECT keys…, aggs… FROM input GROUP BY keys…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub input: Box<Operator>,
    pub keys: Vec<Expr>,
    pub aggs: Vec<AggCall>,
    pub key_types: Vec<ColType>,
}

impl Aggregate {
    pub fn columns(&self) -> Vec<ColType> {
        let mut cols = self.key_types.clone();
        cols.extend(self.aggs.iter().map(|a| a.ty.clone()));
        cols
    }

    fn with_input(&self, input: Operator) -> Operator {
        Operator::Aggregate(Aggregate {
            input: bx(input),
            keys: self.keys.clone(),
            aggs: self.aggs.clone(),
            key_types: self.key_types.clone(),
        })
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        if !input.is_positive() {
            return Err(EvalError::Unsupported(
                "aggregate over a non-positive Z-set".into(),
            ));
        }
        let mut groups: BTreeMap<Row, Vec<(&Row, Weight)>> = BTreeMap::new();
        if self.keys.is_empty() {
            groups.insert(Vec::new(), Vec::new());
        }
        for (row, w) in input.iter() {
            let key = self
                .keys
                .iter()
                .map(|k| eval(k, row))
                .collect::<Result<Row, _>>()?;
            groups.entry(key).or_default().push((row, w));
        }
        let mut out = ZSet::new();
        for (key, rows) in groups {
            let mut result = key;
            for agg in &self.aggs {
                result.push(agg.compute(&rows)?);
            }
            out.add(result, 1);
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        recompute_touched(
            (*self.input).clone(),
            &self.keys,
            &self.key_types,
            |input| self.with_input(input),
        )
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let s = quote_ident("s");
        let expand = input.weighted
            && self
                .aggs
                .iter()
                .any(|a| !a.duplicate_insensitive() && !a.has_weighted_formula());
        let (from, weighted) = if expand {
            (copies(&input, self.input.arity()), false)
        } else {
            (format!("({})", input.sql), input.weighted)
        };
        let key_sql: Vec<String> = self
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| match k {
                // A bare integer in GROUP BY would be read as a column position.
                Expr::Literal(Literal::Int(_) | Literal::Number(_)) => {
                    format!(
                        "CAST({} AS {})",
                        render_expr(k, &|i| col_ref("s", i)),
                        t.ty.sql()
                    )
                }
                _ => render_expr(k, &|i| col_ref("s", i)),
            })
            .collect();
        let mut cols: Vec<String> = key_sql
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} AS {}", col_name(i)))
            .collect();
        for (j, agg) in self.aggs.iter().enumerate() {
            cols.push(format!(
                "{} AS {}",
                render_agg(agg, weighted),
                col_name(self.keys.len() + j)
            ));
        }
        let group_by = if key_sql.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", key_sql.join(", "))
        };
        Ok(Fragment {
            sql: format!("SELECT {} FROM {from} AS {s}{group_by}", cols.join(", ")),
            weighted: false,
        })
    }
}

/// Renders one aggregate call over alias `"s"`; `weighted` inputs carry `__pgt_weight`.
pub(crate) fn render_agg(agg: &AggCall, weighted: bool) -> String {
    let r = |e: &Expr| render_expr(e, &|i| col_ref("s", i));
    let filter_parts: Vec<String> = agg.filter.iter().map(&r).collect();
    let filter_clause = |extra: Option<String>| {
        let parts: Vec<String> = filter_parts.iter().cloned().chain(extra).collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" FILTER (WHERE {})", parts.join(" AND "))
        }
    };
    let w = weight_ref("s");
    let arg = agg.args.first().map(&r).unwrap_or_default();
    let not_null = Some(format!("({arg} IS NOT NULL)"));
    if weighted && !agg.distinct {
        let ty = agg.ty.ty.sql();
        match agg.func {
            AggFunc::CountStar => {
                return format!("CAST(COALESCE(SUM({w}){}, 0) AS int8)", filter_clause(None))
            }
            AggFunc::Count => {
                return format!(
                    "CAST(COALESCE(SUM({w}){}, 0) AS int8)",
                    filter_clause(not_null)
                )
            }
            AggFunc::Sum => {
                return format!("CAST(SUM({arg} * {w}){} AS {ty})", filter_clause(None))
            }
            AggFunc::Avg => {
                let float = agg
                    .arg_type
                    .as_ref()
                    .is_some_and(|t| matches!(t.class(), TypeClass::Float4 | TypeClass::Float8));
                let num = if float { "float8" } else { "numeric" };
                return format!(
                    "CAST(SUM(CAST({arg} AS {num}) * {w}){} / CAST(SUM({w}){} AS {num}) AS {ty})",
                    filter_clause(None),
                    filter_clause(not_null)
                );
            }
            _ => {}
        }
    }
    let args = if agg.func == AggFunc::CountStar {
        "*".to_string()
    } else {
        agg.args.iter().map(&r).collect::<Vec<_>>().join(", ")
    };
    let keys: Vec<String> = agg.order_by.iter().map(|k| k.sql(&r)).collect();
    let name = agg.func.sql_name();
    if agg.within_group {
        return format!(
            "{name}({args}) WITHIN GROUP (ORDER BY {}){}",
            keys.join(", "),
            filter_clause(None)
        );
    }
    let order = if keys.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", keys.join(", "))
    };
    format!(
        "{name}({}{args}{order}){}",
        if agg.distinct { "DISTINCT " } else { "" },
        filter_clause(None)
    )
}
