//! `FlatMap`: a set-returning function called once per input row, its rows appended to it —
//! `FROM input CROSS JOIN LATERAL f(args) [WITH ORDINALITY]` (`LEFT JOIN LATERAL … ON true`
//! with `outer`: a row for which `f` returns nothing is kept, padded with NULLs), and a
//! set-returning function of the select list (`SELECT id, unnest(tags) FROM t`).
//! Delta rule (linear): the rows a row expands to depend on that row alone (the function is
//! IMMUTABLE, which the extension checks), so Δ FlatMap(A) = FlatMap(ΔA), each output row
//! carrying the weight of the row it came from. Cost: O(|ΔA| · rows per call).

use super::{bx, ColType, EvalContext, Operator};
use crate::error::EngineError;
use crate::expr::eval::{eval, EvalError};
use crate::expr::Expr;
use crate::render::{
    col_name, col_ref, expr::render_expr, quote_ident, select_cols, weight_ref, Fragment,
    SqlWriter, WEIGHT,
};
use crate::value::Value;
use crate::zset::ZSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatMap {
    pub input: Box<Operator>,
    /// The function's name (case-folded) and the schema it was qualified with.
    pub name: String,
    pub schema: Option<String>,
    /// The arguments, over the input row.
    pub args: Vec<Expr>,
    /// `WITH ORDINALITY`: the last output column numbers each row's results from 1.
    pub ordinality: bool,
    /// `LEFT JOIN LATERAL … ON true`.
    pub outer: bool,
    /// The output columns the call appends (the ordinality column last).
    pub types: Vec<ColType>,
}

impl FlatMap {
    pub fn columns(&self) -> Vec<ColType> {
        let mut cols = self.input.columns();
        cols.extend(self.types.iter().cloned());
        cols
    }

    /// The rows one call returns, in order (the in-memory evaluator knows
    /// `generate_series` over integers).
    fn call(&self, row: &[Value]) -> Result<Vec<Vec<Value>>, EvalError> {
        let args = self
            .args
            .iter()
            .map(|a| eval(a, row))
            .collect::<Result<Vec<_>, _>>()?;
        match (self.name.as_str(), args.as_slice()) {
            ("generate_series", [from, to, rest @ ..])
                if rest.len() <= 1 && self.schema.is_none() =>
            {
                let step = match rest.first() {
                    None => Value::Int(1),
                    Some(s) => s.clone(),
                };
                match (from, to, step) {
                    (Value::Int(a), Value::Int(b), Value::Int(s)) => {
                        if s == 0 {
                            return Err(EvalError::InvalidInput(
                                "step size cannot equal zero".into(),
                            ));
                        }
                        let mut out = Vec::new();
                        let mut v = *a;
                        while (s > 0 && v <= *b) || (s < 0 && v >= *b) {
                            out.push(vec![Value::Int(v)]);
                            v = match v.checked_add(s) {
                                Some(n) => n,
                                None => break,
                            };
                        }
                        Ok(out)
                    }
                    // A NULL argument: no rows.
                    _ => Ok(Vec::new()),
                }
            }
            (name, _) => Err(EvalError::Unsupported(format!(
                "set-returning function {name}"
            ))),
        }
    }

    pub fn eval(&self, ctx: EvalContext<'_>) -> Result<ZSet, EvalError> {
        let input = self.input.eval(ctx)?;
        let mut out = ZSet::new();
        for (row, w) in input.iter() {
            let results = self.call(row)?;
            if results.is_empty() && self.outer {
                let mut r = row.clone();
                r.extend(std::iter::repeat_n(Value::Null, self.types.len()));
                out.add(r, w);
            }
            for (i, values) in results.into_iter().enumerate() {
                let mut r = row.clone();
                r.extend(values);
                if self.ordinality {
                    r.push(Value::Int(
                        i64::try_from(i + 1).map_err(|_| EvalError::Overflow)?,
                    ));
                }
                out.add(r, w);
            }
        }
        Ok(out)
    }

    pub fn delta(&self) -> Result<Operator, EngineError> {
        Ok(Operator::FlatMap(FlatMap {
            input: bx(self.input.delta()?),
            ..self.clone()
        }))
    }

    pub(crate) fn render(&self, w: &mut SqlWriter<'_>) -> Result<Fragment, EngineError> {
        let input = w.input(&self.input)?;
        let arity = self.input.arity();
        let (s, f) = (quote_ident("s"), quote_ident("f"));
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| render_expr(a, &|i| col_ref("s", i)))
            .collect();
        let names: Vec<String> = (0..self.types.len())
            .map(|i| quote_ident(&format!("x{i}")))
            .collect();
        let mut cols = select_cols("s", arity, 0);
        for (i, n) in names.iter().enumerate() {
            cols.push(format!("{f}.{n} AS {}", col_name(arity + i)));
        }
        if input.weighted {
            cols.push(format!("{} AS {}", weight_ref("s"), quote_ident(WEIGHT)));
        }
        let function = match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        };
        let call = format!(
            "{function}({}){} AS {f}({})",
            args.join(", "),
            if self.ordinality {
                " WITH ORDINALITY"
            } else {
                ""
            },
            names.join(", ")
        );
        let join = if self.outer {
            format!("LEFT JOIN LATERAL {call} ON true")
        } else {
            format!("CROSS JOIN LATERAL {call}")
        };
        Ok(Fragment {
            sql: format!(
                "SELECT {} FROM ({}) AS {s} {join}",
                cols.join(", "),
                input.sql
            ),
            weighted: input.weighted,
        })
    }
}
