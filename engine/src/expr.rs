//! Scalar expressions of the operator tree, resolved to input column positions.
//! Invariant: an `Expr` only refers to columns of its operator's input (positions below the
//! input's arity); the planner checks this, `map_columns` preserves it under remapping.

pub mod eval;

use std::collections::BTreeSet;

use crate::types::SqlType;

/// A constant. Numbers other than small integers keep their literal text so that rendering
/// is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    /// A numeric constant such as `1.50` or `1e3`, as written.
    Number(String),
    /// A string constant (type `unknown` until context resolves it, as in PostgreSQL).
    Text(String),
    /// `type 'text'`, e.g. `DATE '2024-01-01'`.
    Typed {
        ty: SqlType,
        text: String,
    },
}

/// Binary operators with PostgreSQL semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Plus,
    Minus,
    Multiply,
    Divide,
    Modulo,
    Concat,
}

impl BinOp {
    pub fn sql(self) -> &'static str {
        match self {
            BinOp::Eq => "=",
            BinOp::NotEq => "<>",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::And => "AND",
            BinOp::Or => "OR",
            BinOp::Plus => "+",
            BinOp::Minus => "-",
            BinOp::Multiply => "*",
            BinOp::Divide => "/",
            BinOp::Modulo => "%",
            BinOp::Concat => "||",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq
        )
    }
}

/// A scalar expression over the columns of one input row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Column(usize),
    Literal(Literal),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `arg IS [NOT] NULL`.
    IsNull {
        arg: Box<Expr>,
        negated: bool,
    },
    /// `arg IS [NOT] TRUE|FALSE`.
    IsBool {
        arg: Box<Expr>,
        value: bool,
        negated: bool,
    },
    /// `left IS [NOT] DISTINCT FROM right`.
    IsDistinct {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast {
        arg: Box<Expr>,
        ty: SqlType,
    },
    Coalesce(Vec<Expr>),
    NullIf(Box<Expr>, Box<Expr>),
    /// `GREATEST`/`LEAST` (NULL arguments ignored, as in PostgreSQL).
    Extremum {
        greatest: bool,
        args: Vec<Expr>,
    },
    /// A deterministic built-in or catalog function, called by (folded) name.
    Func {
        name: String,
        args: Vec<Expr>,
    },
    InList {
        arg: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        arg: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    /// An expression the engine does not model, kept as PostgreSQL text with holes for its
    /// column references and aggregates: `parts[0] args[0] parts[1] … args[n-1] parts[n]`.
    /// Only deterministic (IMMUTABLE) expressions become one: the planner refuses volatile
    /// function names it knows, and the extension has PostgreSQL check the whole query.
    /// Invariant: `parts.len() == args.len() + 1`. The in-memory evaluator does not evaluate
    /// it (the live-server oracle covers it).
    Sql {
        parts: Vec<String>,
        args: Vec<Expr>,
    },
}

impl Expr {
    pub fn col(i: usize) -> Expr {
        Expr::Column(i)
    }

    pub fn int(i: i64) -> Expr {
        Expr::Literal(Literal::Int(i))
    }

    pub fn bool(b: bool) -> Expr {
        Expr::Literal(Literal::Bool(b))
    }

    /// A NULL of the given type (typed, so that it survives UNION and subquery boundaries).
    pub fn null_of(ty: &SqlType) -> Expr {
        Expr::Cast {
            arg: Box::new(Expr::Literal(Literal::Null)),
            ty: ty.clone(),
        }
    }

    pub fn binary(op: BinOp, left: Expr, right: Expr) -> Expr {
        Expr::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        }
    }

    /// The conjunction of `parts`; `TRUE` when empty.
    pub fn and_all(parts: Vec<Expr>) -> Expr {
        let mut iter = parts.into_iter();
        match iter.next() {
            None => Expr::bool(true),
            Some(first) => iter.fold(first, |acc, e| Expr::binary(BinOp::And, acc, e)),
        }
    }

    /// `left IS NOT DISTINCT FROM right`.
    pub fn not_distinct(left: Expr, right: Expr) -> Expr {
        Expr::IsDistinct {
            left: Box::new(left),
            right: Box::new(right),
            negated: true,
        }
    }

    /// All column positions referenced.
    pub fn columns(&self, out: &mut BTreeSet<usize>) {
        self.visit(&mut |e| {
            if let Expr::Column(i) = e {
                out.insert(*i);
            }
        });
    }

    /// Calls `f` on this expression and every sub-expression.
    pub fn visit<F: FnMut(&Expr)>(&self, f: &mut F) {
        f(self);
        self.children().into_iter().for_each(|c| c.visit(f));
    }

    fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Column(_) | Expr::Literal(_) => vec![],
            Expr::Not(a) | Expr::Negate(a) => vec![a],
            Expr::IsNull { arg, .. } | Expr::IsBool { arg, .. } | Expr::Cast { arg, .. } => {
                vec![arg]
            }
            Expr::Binary { left, right, .. }
            | Expr::IsDistinct { left, right, .. }
            | Expr::NullIf(left, right) => vec![left, right],
            Expr::Like { arg, pattern, .. } => vec![arg, pattern],
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                let mut v: Vec<&Expr> = operand.iter().map(|b| b.as_ref()).collect();
                for (w, t) in whens {
                    v.push(w);
                    v.push(t);
                }
                v.extend(otherwise.iter().map(|b| b.as_ref()));
                v
            }
            Expr::Coalesce(args)
            | Expr::Extremum { args, .. }
            | Expr::Func { args, .. }
            | Expr::Sql { args, .. } => args.iter().collect(),
            Expr::InList { arg, list, .. } => {
                let mut v = vec![arg.as_ref()];
                v.extend(list.iter());
                v
            }
        }
    }

    /// The same expression with every column position `i` replaced by `f(i)`.
    pub fn map_columns<F: Fn(usize) -> usize>(&self, f: &F) -> Expr {
        self.transform(&mut |e| match e {
            Expr::Column(i) => Some(Expr::Column(f(*i))),
            _ => None,
        })
    }

    /// Rewrites top-down: where `f` returns a replacement it is used as is, elsewhere the
    /// children are transformed.
    pub fn transform(&self, f: &mut dyn FnMut(&Expr) -> Option<Expr>) -> Expr {
        match f(self) {
            Some(replacement) => replacement,
            None => self.map_children(&mut |c| c.transform(f)),
        }
    }

    /// The same node with every direct child replaced by `f(child)`.
    pub fn map_children(&self, f: &mut dyn FnMut(&Expr) -> Expr) -> Expr {
        let mut b = |e: &Expr| Box::new(f(e));
        match self {
            Expr::Column(_) | Expr::Literal(_) => self.clone(),
            Expr::Not(a) => Expr::Not(b(a)),
            Expr::Negate(a) => Expr::Negate(b(a)),
            Expr::Binary { op, left, right } => Expr::Binary {
                op: *op,
                left: b(left),
                right: b(right),
            },
            Expr::IsNull { arg, negated } => Expr::IsNull {
                arg: b(arg),
                negated: *negated,
            },
            Expr::IsBool {
                arg,
                value,
                negated,
            } => Expr::IsBool {
                arg: b(arg),
                value: *value,
                negated: *negated,
            },
            Expr::IsDistinct {
                left,
                right,
                negated,
            } => Expr::IsDistinct {
                left: b(left),
                right: b(right),
                negated: *negated,
            },
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => Expr::Case {
                operand: operand.as_ref().map(|o| b(o)),
                whens: whens.iter().map(|(w, t)| (*b(w), *b(t))).collect(),
                otherwise: otherwise.as_ref().map(|o| b(o)),
            },
            Expr::Cast { arg, ty } => Expr::Cast {
                arg: b(arg),
                ty: ty.clone(),
            },
            Expr::Coalesce(args) => Expr::Coalesce(args.iter().map(|a| *b(a)).collect()),
            Expr::NullIf(l, r) => Expr::NullIf(b(l), b(r)),
            Expr::Extremum { greatest, args } => Expr::Extremum {
                greatest: *greatest,
                args: args.iter().map(|a| *b(a)).collect(),
            },
            Expr::Func { name, args } => Expr::Func {
                name: name.clone(),
                args: args.iter().map(|a| *b(a)).collect(),
            },
            Expr::Sql { parts, args } => Expr::Sql {
                parts: parts.clone(),
                args: args.iter().map(|a| *b(a)).collect(),
            },
            Expr::InList { arg, list, negated } => Expr::InList {
                arg: b(arg),
                list: list.iter().map(|a| *b(a)).collect(),
                negated: *negated,
            },
            Expr::Like {
                arg,
                pattern,
                negated,
                case_insensitive,
            } => Expr::Like {
                arg: b(arg),
                pattern: b(pattern),
                negated: *negated,
                case_insensitive: *case_insensitive,
            },
        }
    }

    /// Shifts every column position by `offset` (for the right input of a join).
    pub fn shift(&self, offset: usize) -> Expr {
        self.map_columns(&|i| i + offset)
    }
}

/// Whether `e` can be NULL given its input columns (conservative: `true` when unsure).
pub fn nullable(e: &Expr, input: &[crate::operator::ColType]) -> bool {
    let any = |xs: &[Expr]| xs.iter().any(|x| nullable(x, input));
    match e {
        Expr::Column(i) => input.get(*i).is_none_or(|c| c.nullable),
        Expr::Literal(Literal::Null) => true,
        Expr::Literal(_) => false,
        Expr::IsNull { .. } | Expr::IsBool { .. } | Expr::IsDistinct { .. } => false,
        Expr::Not(a) | Expr::Negate(a) => nullable(a, input),
        Expr::Cast { arg, .. } => nullable(arg, input),
        Expr::Binary { op, left, right } => {
            // Division and modulo raise errors rather than return NULL; the rest are strict.
            let _ = op;
            nullable(left, input) || nullable(right, input)
        }
        Expr::Coalesce(args) | Expr::Extremum { args, .. } => {
            args.iter().all(|a| nullable(a, input))
        }
        Expr::InList { arg, list, .. } => nullable(arg, input) || any(list),
        Expr::Like { arg, pattern, .. } => nullable(arg, input) || nullable(pattern, input),
        Expr::NullIf(..) | Expr::Case { .. } | Expr::Func { .. } | Expr::Sql { .. } => true,
    }
}
