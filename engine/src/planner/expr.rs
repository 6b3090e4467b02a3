//! Conversion of parsed SQL expressions into resolved `Expr`s with their types, including
//! aggregate calls (collected, replaced by placeholders) and function volatility checks.
//! Invariants: unquoted identifiers are case-folded; every function call is checked against
//! the catalog's volatility, and non-repeatable ones make the query not differentiable.

use sqlparser::ast;

use super::scope::Scope;
use super::{call_name, fold, object_name, Planner};
use crate::catalog::{AggregateKind, Volatility, NON_REPEATABLE_FUNCTIONS};
use crate::error::{EngineError, Reason};
use crate::expr::{BinOp, Expr, Literal};
use crate::operator::{AggCall, AggFunc, ColType, SortKey};
use crate::types::{arithmetic_result, avg_result, common_type, sum_result, SqlType, TypeClass};

use crate::names::OUTER_KEY_PREFIX as OUTER_KEY;

/// Aggregate placeholders are `Column(AGG_BASE + j)` until the GROUP BY rewrite.
pub const AGG_BASE: usize = 1 << 40;

pub(crate) type Typed = (Expr, ColType);

/// Arguments of a call: values, `*`, DISTINCT, and ORDER BY items `(expr, descending)`.
pub(crate) type CallArgs = (Vec<Typed>, bool, bool, Vec<SortKey>);

fn bool_ty(nullable: bool) -> ColType {
    ColType::new(SqlType::bool(), nullable)
}

fn unsupported(construct: &str) -> EngineError {
    EngineError::NotDifferentiable(Reason::Construct {
        construct: construct.to_string(),
    })
}

fn number_literal(text: &str) -> Typed {
    if let Ok(i) = text.parse::<i64>() {
        let ty = if i32::try_from(i).is_ok() {
            SqlType::int4()
        } else {
            SqlType::int8()
        };
        return (Expr::Literal(Literal::Int(i)), ColType::new(ty, false));
    }
    (
        Expr::Literal(Literal::Number(text.to_string())),
        ColType::new(SqlType::numeric(), false),
    )
}

fn value_literal(v: &ast::Value) -> Result<Typed, EngineError> {
    let text = |s: &str| {
        (
            Expr::Literal(Literal::Text(s.to_string())),
            ColType::new(SqlType::unknown(), false),
        )
    };
    Ok(match v {
        ast::Value::Number(n, _) => number_literal(n),
        ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) => text(s),
        ast::Value::DollarQuotedString(d) => text(&d.value),
        ast::Value::Boolean(b) => (Expr::bool(*b), bool_ty(false)),
        ast::Value::Null => (
            Expr::Literal(Literal::Null),
            ColType::new(SqlType::unknown(), true),
        ),
        other => return Err(unsupported(&format!("literal {other}"))),
    })
}

fn binop(op: &ast::BinaryOperator) -> Option<BinOp> {
    use ast::BinaryOperator as B;
    Some(match op {
        B::Eq => BinOp::Eq,
        B::NotEq => BinOp::NotEq,
        B::Lt => BinOp::Lt,
        B::LtEq => BinOp::LtEq,
        B::Gt => BinOp::Gt,
        B::GtEq => BinOp::GtEq,
        B::And => BinOp::And,
        B::Or => BinOp::Or,
        B::Plus => BinOp::Plus,
        B::Minus => BinOp::Minus,
        B::Multiply => BinOp::Multiply,
        B::Divide => BinOp::Divide,
        B::Modulo => BinOp::Modulo,
        B::StringConcat => BinOp::Concat,
        _ => return None,
    })
}

/// Rejects comparisons PostgreSQL has no operator for (number vs. string column, …).
fn check_comparable(l: &SqlType, r: &SqlType) -> Result<(), EngineError> {
    if l.is_unknown() || r.is_unknown() {
        return Ok(());
    }
    let family = |t: &SqlType| {
        if t.is_numeric_family() {
            1
        } else if t.is_string() {
            2
        } else if t.class() == TypeClass::Bool {
            3
        } else {
            0
        }
    };
    let (a, b) = (family(l), family(r));
    if a != 0 && b != 0 && a != b {
        return Err(EngineError::DatatypeMismatch {
            message: format!("operator does not exist: {l} compared with {r}"),
        });
    }
    Ok(())
}

fn binary_type(op: BinOp, l: &ColType, r: &ColType) -> Result<ColType, EngineError> {
    let nullable = l.nullable || r.nullable;
    if op.is_comparison() {
        check_comparable(&l.ty, &r.ty)?;
        return Ok(bool_ty(nullable));
    }
    Ok(match op {
        BinOp::And | BinOp::Or => bool_ty(nullable),
        BinOp::Concat => ColType::new(SqlType::text(), nullable),
        _ => {
            if let Some(t) = arithmetic_result(&l.ty, &r.ty) {
                return Ok(ColType::new(t, nullable));
            }
            let (lc, rc) = (l.ty.class(), r.ty.class());
            let ty = match (op, lc, rc) {
                (BinOp::Minus, TypeClass::Date, TypeClass::Date) => SqlType::int4(),
                (BinOp::Minus, TypeClass::Timestamp, TypeClass::Timestamp)
                | (BinOp::Minus, TypeClass::Timestamptz, TypeClass::Timestamptz) => {
                    SqlType::new("interval")
                }
                (_, TypeClass::Date, TypeClass::Interval) => SqlType::new("timestamp"),
                _ if l.ty.is_unknown() => r.ty.clone(),
                _ => l.ty.clone(),
            };
            ColType::new(ty, nullable)
        }
    })
}

impl Planner<'_> {
    /// `arg [NOT] [I]LIKE pattern`, whichever way it is spelled.
    fn like(
        &mut self,
        arg: &ast::Expr,
        pattern: &ast::Expr,
        negated: bool,
        case_insensitive: bool,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<Typed, EngineError> {
        let (x, xt) = self.expr(arg, scope, aggs)?;
        let (p, pt) = self.expr(pattern, scope, aggs)?;
        Ok((
            Expr::Like {
                arg: Box::new(x),
                pattern: Box::new(p),
                negated,
                case_insensitive,
            },
            bool_ty(xt.nullable || pt.nullable),
        ))
    }

    /// Converts `e` in `scope`; aggregate calls are allowed (and collected) when `aggs` is
    /// `Some`.
    pub(crate) fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<Typed, EngineError> {
        use ast::Expr as E;
        let boxed = |x: Expr| Box::new(x);
        match e {
            E::Identifier(id) if id.quote_style.is_some() && id.value.starts_with(OUTER_KEY) => {
                self.outer_key(&id.value)
            }
            E::Identifier(id) => self.column(&[fold(id)], scope),
            E::CompoundIdentifier(ids) => {
                self.column(&ids.iter().map(fold).collect::<Vec<_>>(), scope)
            }
            E::Value(v) => value_literal(&v.value),
            E::Nested(inner) => self.expr(inner, scope, aggs),
            // `~~`, `~~*`, `!~~`, `!~~*` are PostgreSQL's operator names for [NOT] [I]LIKE
            // (its deparser prints LIKE that way, e.g. in a stream table's defining query
            // rewritten after a source rename).
            E::BinaryOp {
                left,
                op:
                    op @ (ast::BinaryOperator::PGLikeMatch
                    | ast::BinaryOperator::PGILikeMatch
                    | ast::BinaryOperator::PGNotLikeMatch
                    | ast::BinaryOperator::PGNotILikeMatch),
                right,
            } => self.like(
                left,
                right,
                matches!(
                    op,
                    ast::BinaryOperator::PGNotLikeMatch | ast::BinaryOperator::PGNotILikeMatch
                ),
                matches!(
                    op,
                    ast::BinaryOperator::PGILikeMatch | ast::BinaryOperator::PGNotILikeMatch
                ),
                scope,
                aggs,
            ),
            E::BinaryOp { left, op, right } => {
                let Some(op) = binop(op) else {
                    return self.pass_through(e, scope, aggs);
                };
                let (l, lt) = self.expr(left, scope, aggs)?;
                let (r, rt) = self.expr(right, scope, aggs)?;
                let ty = binary_type(op, &lt, &rt)?;
                Ok((Expr::binary(op, l, r), ty))
            }
            E::UnaryOp { op, expr } => {
                let (x, t) = self.expr(expr, scope, aggs)?;
                match op {
                    ast::UnaryOperator::Not => Ok((Expr::Not(boxed(x)), bool_ty(t.nullable))),
                    ast::UnaryOperator::Minus => match x {
                        Expr::Literal(Literal::Int(i)) => Ok((Expr::int(-i), t)),
                        Expr::Literal(Literal::Number(n)) => {
                            Ok((Expr::Literal(Literal::Number(format!("-{n}"))), t))
                        }
                        other => Ok((Expr::Negate(boxed(other)), t)),
                    },
                    ast::UnaryOperator::Plus => Ok((x, t)),
                    _ => self.pass_through(e, scope, aggs),
                }
            }
            E::IsNull(x) | E::IsNotNull(x) | E::IsUnknown(x) | E::IsNotUnknown(x) => {
                let negated = matches!(e, E::IsNotNull(_) | E::IsNotUnknown(_));
                let (x, _) = self.expr(x, scope, aggs)?;
                Ok((
                    Expr::IsNull {
                        arg: boxed(x),
                        negated,
                    },
                    bool_ty(false),
                ))
            }
            E::IsTrue(x) | E::IsNotTrue(x) | E::IsFalse(x) | E::IsNotFalse(x) => {
                let value = matches!(e, E::IsTrue(_) | E::IsNotTrue(_));
                let negated = matches!(e, E::IsNotTrue(_) | E::IsNotFalse(_));
                let (x, _) = self.expr(x, scope, aggs)?;
                Ok((
                    Expr::IsBool {
                        arg: boxed(x),
                        value,
                        negated,
                    },
                    bool_ty(false),
                ))
            }
            E::IsDistinctFrom(l, r) | E::IsNotDistinctFrom(l, r) => {
                let (l, lt) = self.expr(l, scope, aggs)?;
                let (r, rt) = self.expr(r, scope, aggs)?;
                check_comparable(&lt.ty, &rt.ty)?;
                let negated = matches!(e, E::IsNotDistinctFrom(..));
                Ok((
                    Expr::IsDistinct {
                        left: boxed(l),
                        right: boxed(r),
                        negated,
                    },
                    bool_ty(false),
                ))
            }
            E::InList {
                expr,
                list,
                negated,
            } => {
                let (x, xt) = self.expr(expr, scope, aggs)?;
                let mut nullable = xt.nullable;
                let mut items = Vec::new();
                for item in list {
                    let (i, it) = self.expr(item, scope, aggs)?;
                    check_comparable(&xt.ty, &it.ty)?;
                    nullable |= it.nullable;
                    items.push(i);
                }
                Ok((
                    Expr::InList {
                        arg: boxed(x),
                        list: items,
                        negated: *negated,
                    },
                    bool_ty(nullable),
                ))
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                // x BETWEEN a AND b ≡ x >= a AND x <= b (also under three-valued logic).
                let (x, xt) = self.expr(expr, scope, aggs)?;
                let (lo, lt) = self.expr(low, scope, aggs)?;
                let (hi, ht) = self.expr(high, scope, aggs)?;
                check_comparable(&xt.ty, &lt.ty)?;
                check_comparable(&xt.ty, &ht.ty)?;
                let nullable = xt.nullable || lt.nullable || ht.nullable;
                let e = if *negated {
                    Expr::binary(
                        BinOp::Or,
                        Expr::binary(BinOp::Lt, x.clone(), lo),
                        Expr::binary(BinOp::Gt, x, hi),
                    )
                } else {
                    Expr::binary(
                        BinOp::And,
                        Expr::binary(BinOp::GtEq, x.clone(), lo),
                        Expr::binary(BinOp::LtEq, x, hi),
                    )
                };
                Ok((e, bool_ty(nullable)))
            }
            E::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            }
            | E::ILike {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => self.like(
                expr,
                pattern,
                *negated,
                matches!(e, E::ILike { .. }),
                scope,
                aggs,
            ),
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(
                operand.as_deref(),
                conditions,
                else_result.as_deref(),
                scope,
                aggs,
            ),
            E::Cast {
                kind: ast::CastKind::Cast | ast::CastKind::DoubleColon,
                expr,
                data_type,
                format: None,
            } => {
                let (x, xt) = self.expr(expr, scope, aggs)?;
                let ty = SqlType::new(&data_type.to_string());
                Ok((
                    Expr::Cast {
                        arg: boxed(x),
                        ty: ty.clone(),
                    },
                    ColType::new(ty, xt.nullable),
                ))
            }
            E::TypedString(ts) => {
                let ty = SqlType::new(&ts.data_type.to_string());
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    _ => return self.pass_through(e, scope, aggs),
                };
                Ok((
                    Expr::Literal(Literal::Typed {
                        ty: ty.clone(),
                        text,
                    }),
                    ColType::new(ty, false),
                ))
            }
            E::Function(f) => self.function(f, scope, aggs),
            E::Subquery(q) => self.scalar_value(q, scope),
            E::Exists { .. } | E::InSubquery { .. } => {
                Err(EngineError::NotDifferentiable(Reason::SubqueryInExpression))
            }
            // Everything else PostgreSQL evaluates: INTERVAL, EXTRACT, SUBSTRING, POSITION,
            // AT TIME ZONE, array and JSON operators, … (passthrough.rs).
            _ => self.pass_through(e, scope, aggs),
        }
    }

    /// `x` of a rewritten `x IN (…)` inside its count's subquery (see `names::outer_key`).
    fn outer_key(&self, name: &str) -> Result<Typed, EngineError> {
        let refused = || {
            EngineError::NotDifferentiable(Reason::SubqueryShape {
                what: "IN over the rows of an enclosing query from this position".into(),
            })
        };
        let k: usize = name[OUTER_KEY.len()..].parse().map_err(|_| refused())?;
        self.outer_keys.get(k).cloned().ok_or_else(refused)
    }

    fn column(&mut self, parts: &[String], scope: &Scope) -> Result<Typed, EngineError> {
        let r = scope.resolve(parts)?;
        if r.position >= super::scope::OUTER_BASE {
            return Err(EngineError::NotDifferentiable(Reason::SubqueryShape {
                what: format!(
                    "referring to {} of an enclosing query from this position",
                    parts.join(".")
                ),
            }));
        }
        if let Some(t) = r.table {
            self.seen.entry(t).or_default().insert(r.name.clone());
        }
        Ok((Expr::Column(r.position), r.ty))
    }

    fn case(
        &mut self,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        else_result: Option<&ast::Expr>,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<Typed, EngineError> {
        let operand = operand
            .map(|o| self.expr(o, scope, aggs).map(|t| Box::new(t.0)))
            .transpose()?;
        let mut whens = Vec::new();
        let mut types = Vec::new();
        for c in conditions {
            let (w, _) = self.expr(&c.condition, scope, aggs)?;
            let (t, tt) = self.expr(&c.result, scope, aggs)?;
            whens.push((w, t));
            types.push(tt.ty);
        }
        let otherwise = match else_result {
            Some(e) => {
                let (x, xt) = self.expr(e, scope, aggs)?;
                types.push(xt.ty);
                Some(Box::new(x))
            }
            None => None,
        };
        let ty = common_type(&types);
        Ok((
            Expr::Case {
                operand,
                whens,
                otherwise,
            },
            ColType::new(ty, true),
        ))
    }

    pub(crate) fn args(
        &mut self,
        f: &ast::Function,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<CallArgs, EngineError> {
        let mut out = Vec::new();
        let (mut star, mut distinct, mut order) = (false, false, Vec::new());
        match &f.args {
            ast::FunctionArguments::None => {}
            ast::FunctionArguments::Subquery(_) => {
                return Err(EngineError::NotDifferentiable(Reason::SubqueryInExpression))
            }
            ast::FunctionArguments::List(list) => {
                distinct = matches!(
                    list.duplicate_treatment,
                    Some(ast::DuplicateTreatment::Distinct)
                );
                for a in &list.args {
                    match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => {
                            out.push(self.expr(x, scope, aggs)?)
                        }
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard) => star = true,
                        other => return Err(unsupported(&format!("function argument {other}"))),
                    }
                }
                for clause in &list.clauses {
                    match clause {
                        ast::FunctionArgumentClause::OrderBy(items) => {
                            for item in items {
                                let (x, _) = self.expr(&item.expr, scope, aggs)?;
                                order.push(sort_key(x, &item.options)?);
                            }
                        }
                        other => return Err(unsupported(&format!("function clause {other}"))),
                    }
                }
            }
        }
        Ok((out, star, distinct, order))
    }

    fn function(
        &mut self,
        f: &ast::Function,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<Typed, EngineError> {
        // A malformed name is reported as such; a name of three parts or more goes to
        // PostgreSQL as it is.
        object_name(&f.name)?;
        let Some((schema, name)) = call_name(f) else {
            return self.pass_through(&ast::Expr::Function(f.clone()), scope, aggs);
        };
        if f.over.is_some() {
            return self.window_call(f, schema, name, scope, aggs);
        }
        let kind = self.catalog.function_kind(schema.as_deref(), &name);
        if kind.set_returning {
            return self.select_list_srf(f, schema, name, scope, aggs);
        }
        // An aggregate the engine has no rule of its own for (a statistical or ordered-set
        // aggregate, a user-defined one): its groups are recomputed. Asked of the catalog,
        // so that no aggregate is ever taken for a scalar function of each row.
        let kind = kind.aggregate;
        if !f.within_group.is_empty() {
            return match kind {
                Some(AggregateKind::OrderedSet | AggregateKind::Hypothetical) => {
                    let func = AggFunc::Other {
                        name: name.clone(),
                        schema,
                        duplicate_insensitive: false,
                    };
                    self.aggregate(func, name, f, scope, aggs)
                }
                _ => Err(EngineError::NotDifferentiable(
                    Reason::UnsupportedAggregate { name },
                )),
            };
        }
        if schema.is_none() {
            if let Some(func) = aggregate_func(&name) {
                return self.aggregate(func, name, f, scope, aggs);
            }
        }
        match kind {
            Some(AggregateKind::Normal) => {
                let func = AggFunc::Other {
                    name: name.clone(),
                    schema,
                    duplicate_insensitive: false,
                };
                return self.aggregate(func, name, f, scope, aggs);
            }
            // An ordered-set aggregate without WITHIN GROUP: PostgreSQL's own error, at the
            // FULL refresh.
            Some(_) => {
                return Err(EngineError::NotDifferentiable(
                    Reason::UnsupportedAggregate { name },
                ))
            }
            None if schema.is_some() => {
                // A function in a schema of its own (user-defined): PostgreSQL evaluates it.
                return self.pass_through(&ast::Expr::Function(f.clone()), scope, aggs);
            }
            None => {}
        }
        if f.filter.is_some() {
            return Err(EngineError::InvalidDefiningQuery {
                message: format!("FILTER specified, but {name} is not an aggregate function"),
            });
        }
        if NON_REPEATABLE_FUNCTIONS.contains(&name.as_str()) {
            return Err(EngineError::NotDifferentiable(Reason::VolatileFunction {
                name,
            }));
        }
        // Named arguments, VARIADIC, clauses: PostgreSQL resolves and evaluates the call.
        if !plain_arguments(f) {
            return self.pass_through(&ast::Expr::Function(f.clone()), scope, aggs);
        }
        let (args, _, _, _) = self.args(f, scope, aggs)?;
        let types: Vec<SqlType> = args.iter().map(|a| a.1.ty.clone()).collect();
        let all_nullable = args.iter().all(|a| a.1.nullable);
        let exprs: Vec<Expr> = args.into_iter().map(|a| a.0).collect();
        match name.as_str() {
            "coalesce" => {
                return Ok((
                    Expr::Coalesce(exprs),
                    ColType::new(common_type(&types), all_nullable),
                ))
            }
            "nullif" => {
                let mut it = exprs.into_iter();
                let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
                    return Err(EngineError::UndefinedFunction {
                        name: "nullif".into(),
                    });
                };
                let ty = types.first().cloned().unwrap_or_else(SqlType::text);
                return Ok((
                    Expr::NullIf(Box::new(a), Box::new(b)),
                    ColType::new(ty, true),
                ));
            }
            "greatest" | "least" => {
                let e = Expr::Extremum {
                    greatest: name == "greatest",
                    args: exprs,
                };
                return Ok((e, ColType::new(common_type(&types), all_nullable)));
            }
            _ => {}
        }
        // A function the engine has no built-in knowledge of: PostgreSQL types it (and the
        // extension has checked that every function of the query is IMMUTABLE).
        let Some(info) = self.catalog.function(&name, &types) else {
            return self.pass_through(&ast::Expr::Function(f.clone()), scope, aggs);
        };
        if info.volatility == Volatility::Volatile {
            return Err(EngineError::NotDifferentiable(Reason::VolatileFunction {
                name,
            }));
        }
        let ty = match info.return_type {
            Some(t) => SqlType::new(&t),
            None => types.first().cloned().unwrap_or_else(SqlType::text),
        };
        Ok((Expr::Func { name, args: exprs }, ColType::new(ty, true)))
    }

    pub(crate) fn aggregate(
        &mut self,
        func: AggFunc,
        name: String,
        f: &ast::Function,
        scope: &Scope,
        aggs: &mut Option<&mut Vec<AggCall>>,
    ) -> Result<Typed, EngineError> {
        // Arguments and FILTER see the input rows, where aggregates may not nest.
        let mut none: Option<&mut Vec<AggCall>> = None;
        if aggs.is_none() {
            return Err(EngineError::Grouping {
                message: format!("aggregate function {name}() is not allowed here"),
            });
        }
        // A scalar subquery in an aggregate's argument would need the aggregate's input joined
        // to it: not decorrelated (none is deferred here).
        let deferred = self.deferred.take();
        let planned = self.args(f, scope, &mut none).and_then(|args| {
            let filter = f
                .filter
                .as_ref()
                .map(|x| self.expr(x, scope, &mut none).map(|t| t.0))
                .transpose()?;
            Ok((args, filter))
        });
        self.deferred = deferred;
        let ((args, star, distinct, mut order_by), filter) = planned?;
        // An ordered-set aggregate's WITHIN GROUP keys are its aggregated arguments.
        let within_group = !f.within_group.is_empty();
        let mut key_types = Vec::new();
        for item in &f.within_group {
            let (x, t) = self.expr(&item.expr, scope, &mut none)?;
            order_by.push(sort_key(x, &item.options)?);
            key_types.push(t.ty);
        }
        let arg_type = if within_group {
            key_types.first().cloned()
        } else {
            args.first().map(|a| a.1.ty.clone())
        };
        let func = match func {
            AggFunc::Count if star => AggFunc::CountStar,
            AggFunc::Other {
                name,
                schema,
                duplicate_insensitive,
            } => {
                if crate::operator::aggregate::ORDER_SENSITIVE.contains(&name.as_str())
                    && order_by.is_empty()
                {
                    return Err(EngineError::NotDifferentiable(
                        Reason::OrderSensitiveAggregate { name },
                    ));
                }
                AggFunc::Other {
                    name,
                    schema,
                    duplicate_insensitive,
                }
            }
            other => other,
        };
        let arg = arg_type.clone().unwrap_or_else(SqlType::int8);
        let ty = match &func {
            AggFunc::CountStar | AggFunc::Count => ColType::new(SqlType::int8(), false),
            AggFunc::Sum => ColType::new(sum_result(&arg), true),
            AggFunc::Avg => ColType::new(avg_result(&arg), true),
            AggFunc::Min | AggFunc::Max => ColType::new(arg.clone(), true),
            AggFunc::BoolAnd | AggFunc::BoolOr => ColType::new(SqlType::bool(), true),
            AggFunc::Other {
                name, schema: None, ..
            } if !within_group && aggregate_func(name).is_some() => {
                ColType::new(other_aggregate_type(name, &arg), true)
            }
            // Any other aggregate is typed by PostgreSQL: the call over typed NULLs.
            AggFunc::Other { name, .. } => {
                let cast = |t: &SqlType| format!("CAST(NULL AS {})", t.sql());
                let direct: Vec<String> = args.iter().map(|a| cast(&a.1.ty)).collect();
                let qualified = func.sql_name();
                let probe = if within_group {
                    let keys: Vec<String> = key_types.iter().map(cast).collect();
                    format!(
                        "{qualified}({}) WITHIN GROUP (ORDER BY {})",
                        direct.join(", "),
                        keys.join(", ")
                    )
                } else {
                    format!(
                        "{qualified}({}{})",
                        if distinct { "DISTINCT " } else { "" },
                        direct.join(", ")
                    )
                };
                let Some(t) = self.catalog.expression_type(&probe) else {
                    return Err(EngineError::NotDifferentiable(
                        Reason::UnsupportedAggregate { name: name.clone() },
                    ));
                };
                ColType::new(SqlType::new(&t), true)
            }
        };
        if func != AggFunc::CountStar && args.is_empty() && !within_group {
            return Err(EngineError::UndefinedFunction {
                name: format!("{name}()"),
            });
        }
        let call = AggCall {
            func,
            args: args.into_iter().map(|a| a.0).collect(),
            distinct,
            filter,
            order_by,
            within_group,
            arg_type,
            ty: ty.clone(),
        };
        let list = aggs
            .as_deref_mut()
            .ok_or_else(|| EngineError::internal("aggregate list"))?;
        let index = match list.iter().position(|c| *c == call) {
            Some(i) => i,
            None => {
                list.push(call);
                list.len() - 1
            }
        };
        Ok((Expr::Column(AGG_BASE + index), ty))
    }
}

/// Whether `f`'s arguments are plain positional expressions: no DISTINCT, no clause inside the
/// call, no named argument or `*`.
pub(crate) fn plain_arguments(f: &ast::Function) -> bool {
    match &f.args {
        ast::FunctionArguments::None => true,
        ast::FunctionArguments::Subquery(_) => false,
        ast::FunctionArguments::List(list) => {
            list.duplicate_treatment.is_none()
                && list.clauses.is_empty()
                && list
                    .args
                    .iter()
                    .all(|a| matches!(a, ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(_))))
        }
    }
}

/// A key of an ORDER BY inside an aggregate call (or of its WITHIN GROUP), with its direction
/// and NULLS placement as written. An ordering by operator (`USING >`) is not rendered.
fn sort_key(expr: Expr, options: &ast::OrderByOptions) -> Result<SortKey, EngineError> {
    let desc = match &options.sort {
        None | Some(ast::OrderBySort::Asc) => false,
        Some(ast::OrderBySort::Desc) => true,
        Some(ast::OrderBySort::Using(op)) => {
            return Err(unsupported(&format!(
                "ORDER BY … USING {op} inside an aggregate"
            )))
        }
    };
    Ok(SortKey {
        expr,
        desc,
        nulls_first: options.nulls_first,
    })
}

pub(crate) fn aggregate_func(name: &str) -> Option<AggFunc> {
    let other = |dup: bool| {
        Some(AggFunc::Other {
            name: name.to_string(),
            schema: None,
            duplicate_insensitive: dup,
        })
    };
    match name {
        "count" => Some(AggFunc::Count),
        "sum" => Some(AggFunc::Sum),
        "avg" => Some(AggFunc::Avg),
        "min" => Some(AggFunc::Min),
        "max" => Some(AggFunc::Max),
        "bool_and" => Some(AggFunc::BoolAnd),
        "every" => other(true),
        "bool_or" => Some(AggFunc::BoolOr),
        "bit_and" | "bit_or" => other(true),
        "string_agg" | "array_agg" | "json_agg" | "jsonb_agg" | "xmlagg" | "json_object_agg"
        | "jsonb_object_agg" | "stddev" | "stddev_pop" | "stddev_samp" | "variance" | "var_pop"
        | "var_samp" | "bit_xor" => other(false),
        _ => None,
    }
}

fn other_aggregate_type(name: &str, arg: &SqlType) -> SqlType {
    match name {
        "string_agg" => SqlType::text(),
        "array_agg" => SqlType::new(&format!("{}[]", arg.without_modifier())),
        "json_agg" | "json_object_agg" => SqlType::new("json"),
        "jsonb_agg" | "jsonb_object_agg" => SqlType::new("jsonb"),
        "xmlagg" => SqlType::new("xml"),
        "every" => SqlType::bool(),
        "bit_and" | "bit_or" | "bit_xor" => arg.clone(),
        _ => match arg.class() {
            TypeClass::Float4 | TypeClass::Float8 => SqlType::float8(),
            _ => SqlType::numeric(),
        },
    }
}
