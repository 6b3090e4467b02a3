//! Rendering of scalar expressions as PostgreSQL text. Invariant: the output is fully
//! parenthesised (no reliance on operator precedence) and every identifier is quoted.

use super::{quote_ident, quote_literal};
use crate::expr::{Expr, Literal};

/// Renders `e`, writing column `i` as `column(i)`.
pub fn render_expr(e: &Expr, column: &dyn Fn(usize) -> String) -> String {
    let r = |x: &Expr| render_expr(x, column);
    let list = |xs: &[Expr]| xs.iter().map(&r).collect::<Vec<_>>().join(", ");
    match e {
        Expr::Column(i) => column(*i),
        Expr::Literal(l) => render_literal(l),
        Expr::Not(a) => format!("(NOT {})", r(a)),
        Expr::Negate(a) => format!("(- {})", r(a)),
        Expr::Binary { op, left, right } => format!("({} {} {})", r(left), op.sql(), r(right)),
        Expr::IsNull { arg, negated } => {
            format!("({} IS {}NULL)", r(arg), if *negated { "NOT " } else { "" })
        }
        Expr::IsBool {
            arg,
            value,
            negated,
        } => format!(
            "({} IS {}{})",
            r(arg),
            if *negated { "NOT " } else { "" },
            if *value { "TRUE" } else { "FALSE" }
        ),
        Expr::IsDistinct {
            left,
            right,
            negated,
        } => format!(
            "({} IS {}DISTINCT FROM {})",
            r(left),
            if *negated { "NOT " } else { "" },
            r(right)
        ),
        Expr::Case {
            operand,
            whens,
            otherwise,
        } => {
            let mut s = String::from("CASE");
            if let Some(o) = operand {
                s.push(' ');
                s.push_str(&r(o));
            }
            for (w, t) in whens {
                s.push_str(&format!(" WHEN {} THEN {}", r(w), r(t)));
            }
            if let Some(o) = otherwise {
                s.push_str(&format!(" ELSE {}", r(o)));
            }
            s.push_str(" END");
            s
        }
        Expr::Cast { arg, ty } => format!("CAST({} AS {})", r(arg), ty.sql()),
        Expr::Coalesce(args) => format!("COALESCE({})", list(args)),
        Expr::NullIf(a, b) => format!("NULLIF({}, {})", r(a), r(b)),
        Expr::Extremum { greatest, args } => format!(
            "{}({})",
            if *greatest { "GREATEST" } else { "LEAST" },
            list(args)
        ),
        Expr::Func { name, args } => format!("{}({})", quote_ident(name), list(args)),
        Expr::Sql { parts, args } => {
            debug_assert_eq!(parts.len(), args.len() + 1, "holes of an SQL expression");
            let mut s = String::from("(");
            for (i, part) in parts.iter().enumerate() {
                s.push_str(part);
                if let Some(a) = args.get(i) {
                    s.push('(');
                    s.push_str(&r(a));
                    s.push(')');
                }
            }
            s.push(')');
            s
        }
        Expr::InList {
            arg,
            list: l,
            negated,
        } => format!(
            "({} {}IN ({}))",
            r(arg),
            if *negated { "NOT " } else { "" },
            list(l)
        ),
        Expr::Like {
            arg,
            pattern,
            negated,
            case_insensitive,
        } => format!(
            "({} {}{} {})",
            r(arg),
            if *negated { "NOT " } else { "" },
            if *case_insensitive { "ILIKE" } else { "LIKE" },
            r(pattern)
        ),
    }
}

fn render_literal(l: &Literal) -> String {
    match l {
        Literal::Null => "NULL".to_string(),
        Literal::Bool(true) => "TRUE".to_string(),
        Literal::Bool(false) => "FALSE".to_string(),
        Literal::Int(i) if *i < 0 => format!("({i})"),
        Literal::Int(i) => i.to_string(),
        Literal::Number(s) => s.clone(),
        Literal::Text(s) => quote_literal(s),
        Literal::Typed { ty, text } => format!("CAST({} AS {})", quote_literal(text), ty.sql()),
    }
}
