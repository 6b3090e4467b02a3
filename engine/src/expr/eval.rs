//! Evaluation of scalar expressions with PostgreSQL's NULL propagation and three-valued
//! logic. Invariant: a comparison involving NULL yields NULL (unknown), AND/OR follow the
//! Kleene tables, and only a TRUE predicate keeps a row (callers use `is_true`).

use std::cmp::Ordering;

use super::{BinOp, Expr, Literal};
use crate::types::TypeClass;
use crate::value::Value;

/// Why evaluation failed (PostgreSQL would raise an error for the same input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("integer out of range")]
    Overflow,
    #[error("invalid input for {0}")]
    InvalidInput(String),
    #[error("the evaluator does not implement {0}")]
    Unsupported(String),
    #[error("column {0} out of range")]
    BadColumn(usize),
}

/// Whether a predicate value keeps a row (TRUE only; NULL and FALSE reject).
pub fn is_true(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// SQL comparison of two non-NULL values; `None` if they are not comparable.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => Some(x.cmp(y)),
        // i64 → f64 can round, but the evaluator's domains are small integers.
        #[allow(clippy::cast_precision_loss)]
        (Value::Int(x), Value::Float(y)) => Some(crate::value::Float::new(*x as f64).cmp(y)),
        #[allow(clippy::cast_precision_loss)]
        (Value::Float(x), Value::Int(y)) => Some(x.cmp(&crate::value::Float::new(*y as f64))),
        (Value::Text(x), Value::Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn as_float(v: &Value) -> Option<f64> {
    match v {
        #[allow(clippy::cast_precision_loss)]
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(f.get()),
        _ => None,
    }
}

fn arithmetic(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    if let (Value::Int(a), Value::Int(b)) = (l, r) {
        let out = match op {
            BinOp::Plus => a.checked_add(*b),
            BinOp::Minus => a.checked_sub(*b),
            BinOp::Multiply => a.checked_mul(*b),
            BinOp::Divide | BinOp::Modulo if *b == 0 => return Err(EvalError::DivisionByZero),
            BinOp::Divide => a.checked_div(*b),
            BinOp::Modulo => a.checked_rem(*b),
            _ => return Err(EvalError::Unsupported(op.sql().to_string())),
        };
        return out.map(Value::Int).ok_or(EvalError::Overflow);
    }
    let (Some(a), Some(b)) = (as_float(l), as_float(r)) else {
        return Err(EvalError::InvalidInput(format!("operator {}", op.sql())));
    };
    let out = match op {
        BinOp::Plus => a + b,
        BinOp::Minus => a - b,
        BinOp::Multiply => a * b,
        BinOp::Divide if b == 0.0 => return Err(EvalError::DivisionByZero),
        BinOp::Divide => a / b,
        BinOp::Modulo if b == 0.0 => return Err(EvalError::DivisionByZero),
        BinOp::Modulo => a % b,
        _ => return Err(EvalError::Unsupported(op.sql().to_string())),
    };
    Ok(Value::float(out))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => (if *b { "true" } else { "false" }).to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.get().to_string(),
    }
}

fn binary(op: BinOp, l: Value, r: Value) -> Result<Value, EvalError> {
    match op {
        BinOp::And => Ok(match (&l, &r) {
            (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
            (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
            _ => Value::Null,
        }),
        BinOp::Or => Ok(match (&l, &r) {
            (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
            (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
            _ => Value::Null,
        }),
        _ if l.is_null() || r.is_null() => Ok(Value::Null),
        BinOp::Concat => Ok(Value::Text(text_of(&l) + &text_of(&r))),
        _ if op.is_comparison() => {
            let ord = compare(&l, &r)
                .ok_or_else(|| EvalError::InvalidInput(format!("comparison {}", op.sql())))?;
            Ok(Value::Bool(match op {
                BinOp::Eq => ord == Ordering::Equal,
                BinOp::NotEq => ord != Ordering::Equal,
                BinOp::Lt => ord == Ordering::Less,
                BinOp::LtEq => ord != Ordering::Greater,
                BinOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }))
        }
        _ => arithmetic(op, &l, &r),
    }
}

/// `LIKE` matching with `%`, `_` and backslash escapes.
fn like(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| like(&text[i..], rest)),
        Some(('_', rest)) => !text.is_empty() && like(&text[1..], rest),
        Some(('\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && like(&text[1..], &rest[1..])
        }
        Some((c, rest)) => text.first() == Some(c) && like(&text[1..], rest),
    }
}

fn cast(v: Value, ty: &crate::types::SqlType) -> Result<Value, EvalError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let bad = || EvalError::InvalidInput(ty.sql().to_string());
    match ty.class() {
        TypeClass::Int2 | TypeClass::Int4 | TypeClass::Int8 => match v {
            Value::Int(i) => Ok(Value::Int(i)),
            #[allow(clippy::cast_possible_truncation)]
            Value::Float(f) => Ok(Value::Int(f.get().round() as i64)),
            Value::Text(s) => s.trim().parse().map(Value::Int).map_err(|_| bad()),
            Value::Bool(b) => Ok(Value::Int(i64::from(b))),
            Value::Null => Ok(Value::Null),
        },
        TypeClass::Float4 | TypeClass::Float8 => as_float(&v)
            .map(Value::float)
            .or_else(|| match &v {
                Value::Text(s) => s.trim().parse().ok().map(Value::float),
                _ => None,
            })
            .ok_or_else(bad),
        // numeric is modelled by floats in the evaluator (exact for its small domains).
        TypeClass::Numeric => as_float(&v).map(Value::float).ok_or_else(bad),
        TypeClass::Text | TypeClass::Varchar => Ok(Value::Text(text_of(&v))),
        TypeClass::Bpchar => Ok(Value::Text(text_of(&v).trim_end_matches(' ').to_string())),
        TypeClass::Bool => match v {
            Value::Bool(b) => Ok(Value::Bool(b)),
            Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
                "f" | "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        },
        _ => Err(EvalError::Unsupported(format!("cast to {}", ty.sql()))),
    }
}

fn literal(l: &Literal) -> Result<Value, EvalError> {
    Ok(match l {
        Literal::Null => Value::Null,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(i) => Value::Int(*i),
        Literal::Number(s) => s
            .parse::<f64>()
            .map(Value::float)
            .map_err(|_| EvalError::InvalidInput(s.clone()))?,
        Literal::Text(s) => Value::Text(s.clone()),
        Literal::Typed { ty, text } => cast(Value::Text(text.clone()), ty)?,
    })
}

fn function(name: &str, args: Vec<Value>) -> Result<Value, EvalError> {
    if args.iter().any(Value::is_null) {
        return Ok(Value::Null);
    }
    match (name, args.as_slice()) {
        ("upper", [Value::Text(s)]) => Ok(Value::Text(s.to_uppercase())),
        ("lower", [Value::Text(s)]) => Ok(Value::Text(s.to_lowercase())),
        ("length" | "char_length", [Value::Text(s)]) => Ok(Value::Int(
            i64::try_from(s.chars().count()).map_err(|_| EvalError::Overflow)?,
        )),
        ("abs", [Value::Int(i)]) => i.checked_abs().map(Value::Int).ok_or(EvalError::Overflow),
        ("abs", [Value::Float(f)]) => Ok(Value::float(f.get().abs())),
        _ => Err(EvalError::Unsupported(format!("function {name}"))),
    }
}

/// Evaluates `e` over `row`.
pub fn eval(e: &Expr, row: &[Value]) -> Result<Value, EvalError> {
    match e {
        Expr::Column(i) => row.get(*i).cloned().ok_or(EvalError::BadColumn(*i)),
        Expr::Literal(l) => literal(l),
        Expr::Not(a) => Ok(match eval(a, row)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        }),
        Expr::Negate(a) => match eval(a, row)? {
            Value::Null => Ok(Value::Null),
            Value::Int(i) => i.checked_neg().map(Value::Int).ok_or(EvalError::Overflow),
            Value::Float(f) => Ok(Value::float(-f.get())),
            _ => Err(EvalError::InvalidInput("unary minus".into())),
        },
        Expr::Binary { op, left, right } => binary(*op, eval(left, row)?, eval(right, row)?),
        Expr::IsNull { arg, negated } => Ok(Value::Bool(eval(arg, row)?.is_null() != *negated)),
        Expr::IsBool {
            arg,
            value,
            negated,
        } => {
            let v = eval(arg, row)?;
            Ok(Value::Bool((v == Value::Bool(*value)) != *negated))
        }
        Expr::IsDistinct {
            left,
            right,
            negated,
        } => {
            let (l, r) = (eval(left, row)?, eval(right, row)?);
            let same = match (&l, &r) {
                (Value::Null, Value::Null) => true,
                (Value::Null, _) | (_, Value::Null) => false,
                _ => compare(&l, &r) == Some(Ordering::Equal),
            };
            Ok(Value::Bool(same == *negated))
        }
        Expr::Case {
            operand,
            whens,
            otherwise,
        } => {
            let subject = operand.as_ref().map(|o| eval(o, row)).transpose()?;
            for (when, then) in whens {
                let w = eval(when, row)?;
                let hit = match &subject {
                    Some(s) => is_true(&binary(BinOp::Eq, s.clone(), w)?),
                    None => is_true(&w),
                };
                if hit {
                    return eval(then, row);
                }
            }
            otherwise.as_ref().map_or(Ok(Value::Null), |o| eval(o, row))
        }
        Expr::Cast { arg, ty } => cast(eval(arg, row)?, ty),
        Expr::Coalesce(args) => {
            for a in args {
                let v = eval(a, row)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Ok(Value::Null)
        }
        Expr::NullIf(l, r) => {
            let (lv, rv) = (eval(l, row)?, eval(r, row)?);
            Ok(if is_true(&binary(BinOp::Eq, lv.clone(), rv)?) {
                Value::Null
            } else {
                lv
            })
        }
        Expr::Extremum { greatest, args } => {
            let mut best: Option<Value> = None;
            for a in args {
                let v = eval(a, row)?;
                if v.is_null() {
                    continue;
                }
                best = match best {
                    None => Some(v),
                    Some(b) => {
                        let ord = compare(&v, &b)
                            .ok_or_else(|| EvalError::InvalidInput("GREATEST/LEAST".into()))?;
                        let take = if *greatest {
                            ord == Ordering::Greater
                        } else {
                            ord == Ordering::Less
                        };
                        Some(if take { v } else { b })
                    }
                };
            }
            Ok(best.unwrap_or(Value::Null))
        }
        Expr::Func { name, args } => {
            let vals = args
                .iter()
                .map(|a| eval(a, row))
                .collect::<Result<Vec<_>, _>>()?;
            function(name, vals)
        }
        Expr::Sql { parts, .. } => Err(EvalError::Unsupported(format!(
            "SQL expression {}",
            parts.concat()
        ))),
        Expr::InList { arg, list, negated } => {
            // x IN (a, b) ≡ x = a OR x = b, with three-valued OR.
            let v = eval(arg, row)?;
            let mut acc = Value::Bool(false);
            for item in list {
                let eq = binary(BinOp::Eq, v.clone(), eval(item, row)?)?;
                acc = binary(BinOp::Or, acc, eq)?;
            }
            Ok(if *negated {
                match acc {
                    Value::Bool(b) => Value::Bool(!b),
                    _ => Value::Null,
                }
            } else {
                acc
            })
        }
        Expr::Like {
            arg,
            pattern,
            negated,
            case_insensitive,
        } => {
            let (a, p) = (eval(arg, row)?, eval(pattern, row)?);
            let (Value::Text(a), Value::Text(p)) = (a, p) else {
                return Ok(Value::Null);
            };
            let (a, p) = if *case_insensitive {
                (a.to_lowercase(), p.to_lowercase())
            } else {
                (a, p)
            };
            let text: Vec<char> = a.chars().collect();
            let pat: Vec<char> = p.chars().collect();
            Ok(Value::Bool(like(&text, &pat) != *negated))
        }
    }
}
