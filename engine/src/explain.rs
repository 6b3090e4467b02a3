//! EXPLAIN rendering of a plan's operator tree as text, JSON and DOT, marking each operator
//! with how it is maintained; [`explain_stream_table`] adds what `pgtrickle.explain_stream_table`
//! shows around it (modes, the FULL reason, indexes, statements).
//! Invariant: a plan that is not differentiable is shown as one node marked FULL with its
//! reason; a differentiable plan marks every node DIFFERENTIAL with its delta strategy.

use serde_json::{json, Value as Json};

use crate::operator::{AggFunc, JoinKind, Operator, SemiMode};
use crate::plan::{Differentiability, Maintenance, Plan};
use crate::render::expr::render_expr;
use crate::render::quote_ident;

/// Output format of `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExplainFormat {
    Text,
    Json,
    Dot,
}

/// One node of the explain tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    operator: String,
    detail: String,
    mode: &'static str,
    strategy: String,
    children: Vec<Node>,
}

fn col(i: usize) -> String {
    format!("${i}")
}

fn describe(op: &Operator, root_algebraic: bool) -> Node {
    let e = |x: &crate::expr::Expr| render_expr(x, &col);
    let (detail, strategy) = match op {
        Operator::Scan(s) if s.table.id == crate::operator::recursive::REFERENCE_ID => (
            format!("recursive reference {}", quote_ident(&s.table.name)),
            "the rows of the previous round".to_string(),
        ),
        Operator::Recursive(r) => (
            if r.distinct { "UNION" } else { "UNION ALL" }.to_string(),
            if r.distinct {
                "delete and re-derive: rows losing a derivation over-deleted from the stored \
                 result, then derived again or anew; O(rows reached from Δ)"
                    .into()
            } else {
                "semi-naive: the rows derived from ΔB and from the stored result joined with \
                 Δ, weights multiplied; O(rows reached from Δ)"
                    .into()
            },
        ),
        Operator::Scan(s) => (
            format!(
                "{}.{} ({})",
                quote_ident(&s.table.schema),
                quote_ident(&s.table.name),
                s.columns
                    .iter()
                    .map(|c| quote_ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "change buffer rows, O(|Δ|)".to_string(),
        ),
        Operator::DeltaScan(d) => (d.scan.table.name.clone(), "change window".into()),
        Operator::Filter(f) => (e(&f.predicate), "linear: σ(ΔA), O(|Δ|)".into()),
        Operator::Project(p) => (
            p.exprs.iter().map(e).collect::<Vec<_>>().join(", "),
            "linear: π(ΔA), O(|Δ|)".into(),
        ),
        Operator::Join(j) => (
            format!("{} ON {}", j.kind.sql(), e(&j.on)),
            match j.kind {
                JoinKind::Inner => "bilinear: ΔA⋈B + A⋈ΔB − ΔA⋈ΔB".into(),
                _ => "inner-join delta + anti-join delta of the padded rows".into(),
            },
        ),
        Operator::SemiJoin(s) => (
            format!(
                "{} ON {}",
                match s.mode {
                    SemiMode::Positive => "SEMI JOIN",
                    SemiMode::NonPositive => "ANTI JOIN",
                    SemiMode::Any => "MATCHING",
                },
                e(&s.on)
            ),
            "ΔA⋉B_before + existence re-checked for rows of A matching ΔB".into(),
        ),
        Operator::Aggregate(a) => (
            format!(
                "{}AGG {}",
                if a.keys.is_empty() {
                    String::new()
                } else {
                    format!(
                        "GROUP BY {} ",
                        a.keys.iter().map(e).collect::<Vec<_>>().join(", ")
                    )
                },
                a.aggs
                    .iter()
                    .map(|c| c.func.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            if root_algebraic
                && a.aggs
                    .iter()
                    .any(|c| matches!(c.func, AggFunc::Min | AggFunc::Max))
            {
                "algebraic: aux columns merged, O(|Δ|); MIN/MAX in place, a group rescanned \
                 only when a deletion reaches its extreme"
                    .into()
            } else if root_algebraic {
                "algebraic: aux columns merged, O(|Δ|)".into()
            } else {
                "recompute the touched groups".into()
            },
        ),
        Operator::Distinct(_) => (
            String::new(),
            if root_algebraic {
                "counting: __pgt_count merged, O(|Δ|)".into()
            } else {
                "counting: recompute the touched rows".into()
            },
        ),
        Operator::UnionAll(_) => (String::new(), "linear: sum of deltas".into()),
        Operator::SetOp(s) => (
            format!("{:?}{}", s.kind, if s.all { " ALL" } else { "" }),
            "counting per row: recompute the touched rows".into(),
        ),
        Operator::Negate(_) | Operator::Repeat(_) => (String::new(), "linear".into()),
        Operator::Consolidate(_) | Operator::Support(_) => (String::new(), "delta helper".into()),
        Operator::FlatMap(f) => (
            format!(
                "{}{}({}){}",
                if f.outer {
                    "LEFT JOIN LATERAL "
                } else {
                    "LATERAL "
                },
                f.name,
                f.args.iter().map(e).collect::<Vec<_>>().join(", "),
                if f.ordinality { " WITH ORDINALITY" } else { "" }
            ),
            "linear: each changed row expanded again, O(|Δ|)".into(),
        ),
        Operator::TopK(t) => (
            format!(
                "ORDER BY {} LIMIT {}{}{}",
                t.order_by
                    .iter()
                    .map(|k| k.sql(&e))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.limit,
                if t.widen_by.is_some() {
                    " + inserted"
                } else {
                    ""
                },
                if t.offset > 0 {
                    format!(" OFFSET {}", t.offset)
                } else {
                    String::new()
                }
            ),
            "keep the boundary: the top rows before and after, both read from the top \
             offset + limit + inserted rows"
                .into(),
        ),
        Operator::Window(w) => (
            format!(
                "{}{}",
                w.calls
                    .iter()
                    .map(|c| {
                        let name = c.func.name().to_string();
                        if c.order_by.is_empty() {
                            name
                        } else {
                            format!(
                                "{name} (ORDER BY {})",
                                c.order_by
                                    .iter()
                                    .map(|k| k.sql(&e))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                if w.partition_by.is_empty() {
                    String::new()
                } else {
                    format!(
                        " PARTITION BY {}",
                        w.partition_by.iter().map(e).collect::<Vec<_>>().join(", ")
                    )
                }
            ),
            if w.partition_by.is_empty() {
                "recompute the whole input (one partition), O(|A|)".into()
            } else {
                "recompute the touched partitions".into()
            },
        ),
    };
    let child_algebraic = root_algebraic && matches!(op, Operator::Project(_));
    Node {
        operator: op.name().to_string(),
        detail,
        mode: "DIFFERENTIAL",
        strategy,
        children: op
            .children()
            .into_iter()
            .map(|c| describe(c, child_algebraic && matches!(c, Operator::Aggregate(_))))
            .collect(),
    }
}

fn tree(plan: &Plan) -> Node {
    match (&plan.differentiability, &plan.tree) {
        (Differentiability::Differential, Some(op)) => {
            let algebraic = matches!(plan.maintenance, Maintenance::Grouped(_));
            let mut root = describe(op, algebraic);
            if algebraic && matches!(op, Operator::Distinct(_)) {
                root.strategy = "counting: __pgt_count merged, O(|Δ|)".into();
            }
            root
        }
        (Differentiability::NotDifferentiable(reason), _) => Node {
            operator: "Query".into(),
            detail: String::new(),
            mode: "FULL",
            strategy: reason.to_string(),
            children: Vec::new(),
        },
        (Differentiability::Differential, None) => Node {
            operator: "Query".into(),
            detail: String::new(),
            mode: "FULL",
            strategy: "no operator tree".into(),
            children: Vec::new(),
        },
    }
}

fn text(node: &Node, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let arrow = if depth == 0 { "" } else { "-> " };
    let detail = if node.detail.is_empty() {
        String::new()
    } else {
        format!(" {}", node.detail)
    };
    out.push_str(&format!(
        "{pad}{arrow}{}{detail} [{}: {}]\n",
        node.operator, node.mode, node.strategy
    ));
    node.children.iter().for_each(|c| text(c, depth + 1, out));
}

fn to_json(node: &Node) -> Json {
    json!({
        "Node Type": node.operator,
        "Detail": node.detail,
        "Mode": node.mode,
        "Strategy": node.strategy,
        "Plans": node.children.iter().map(to_json).collect::<Vec<_>>(),
    })
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(node: &Node, next: &mut usize, out: &mut String) -> usize {
    let id = *next;
    *next += 1;
    let color = if node.mode == "FULL" {
        "red"
    } else {
        "darkgreen"
    };
    out.push_str(&format!(
        "  n{id} [label=\"{}\\n{}\\n{}: {}\", color={color}];\n",
        dot_escape(&node.operator),
        dot_escape(&node.detail),
        node.mode,
        dot_escape(&node.strategy)
    ));
    for c in &node.children {
        let child = dot(c, next, out);
        out.push_str(&format!("  n{child} -> n{id};\n"));
    }
    id
}

impl ExplainFormat {
    /// The format a user named (`text`, `json`, `dot`, any case), or `None`.
    pub fn parse(name: &str) -> Option<ExplainFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "text" => Some(ExplainFormat::Text),
            "json" => Some(ExplainFormat::Json),
            "dot" => Some(ExplainFormat::Dot),
            _ => None,
        }
    }
}

/// What the extension knows about a stream table beyond its plan, shown around the operator
/// tree by [`explain_stream_table`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// The stream table, as a user writes its name.
    pub name: String,
    /// The refresh mode asked for and the one in effect.
    pub refresh_mode: String,
    pub effective_mode: String,
    /// Why the stream table is refreshed FULL, when it is.
    pub full_reason: Option<String>,
    /// The indexes its refreshes rely on, each as `name: definition`.
    pub indexes: Vec<String>,
    /// With `verbose`: the statements a refresh runs, each `(step, sql)`.
    pub statements: Vec<(String, String)>,
}

/// A stream table's plan (when it has one) with its [`Annotations`], in `format`: a header
/// (name, modes, reason), the operator tree as [`explain`] draws it, the indexes, and the
/// statements when given. JSON keeps PostgreSQL EXPLAIN's shape (a one-element array holding
/// `"Plan"`), with the annotations as further keys; DOT draws the tree under a graph label.
pub fn explain_stream_table(
    plan: Option<&Plan>,
    notes: &Annotations,
    format: ExplainFormat,
) -> String {
    let root = match plan {
        Some(p) => tree(p),
        None => Node {
            operator: "Query".into(),
            detail: String::new(),
            mode: "FULL",
            strategy: notes
                .full_reason
                .clone()
                .unwrap_or_else(|| "no plan".into()),
            children: Vec::new(),
        },
    };
    let modes = if notes.refresh_mode == notes.effective_mode {
        notes.effective_mode.clone()
    } else {
        format!(
            "{} (resolved to {})",
            notes.refresh_mode, notes.effective_mode
        )
    };
    match format {
        ExplainFormat::Text => {
            let mut out = format!("Stream table {}: {modes}\n", notes.name);
            if let Some(r) = &notes.full_reason {
                out.push_str(&format!("FULL because: {r}\n"));
            }
            text(&root, 0, &mut out);
            if !notes.indexes.is_empty() {
                out.push_str("Indexes:\n");
                for i in &notes.indexes {
                    out.push_str(&format!("  {i}\n"));
                }
            }
            if !notes.statements.is_empty() {
                out.push_str("Statements:\n");
                for (step, sql) in &notes.statements {
                    out.push_str(&format!("  {step}: {sql}\n"));
                }
            }
            out
        }
        ExplainFormat::Json => {
            let mut top = serde_json::Map::new();
            top.insert("Stream Table".into(), json!(notes.name));
            top.insert("Refresh Mode".into(), json!(notes.refresh_mode));
            top.insert("Effective Mode".into(), json!(notes.effective_mode));
            top.insert("Full Reason".into(), json!(notes.full_reason));
            top.insert("Plan".into(), to_json(&root));
            top.insert("Indexes".into(), json!(notes.indexes));
            if !notes.statements.is_empty() {
                let st: Vec<Json> = notes
                    .statements
                    .iter()
                    .map(|(step, sql)| json!({ "Step": step, "SQL": sql }))
                    .collect();
                top.insert("Statements".into(), Json::Array(st));
            }
            serde_json::to_string_pretty(&Json::Array(vec![Json::Object(top)])).unwrap_or_default()
        }
        ExplainFormat::Dot => {
            let mut out = format!(
                "digraph stream_table {{\n  label=\"{}: {}\";\n  labelloc=t;\n  node [shape=box];\n",
                dot_escape(&notes.name),
                dot_escape(&modes)
            );
            let mut next = 0;
            dot(&root, &mut next, &mut out);
            out.push_str("}\n");
            out
        }
    }
}

/// Renders the plan's operator tree in `format`.
pub fn explain(plan: &Plan, format: ExplainFormat) -> String {
    let root = tree(plan);
    match format {
        ExplainFormat::Text => {
            let mut out = String::new();
            text(&root, 0, &mut out);
            out
        }
        ExplainFormat::Json => {
            serde_json::to_string_pretty(&json!([{ "Plan": to_json(&root) }])).unwrap_or_default()
        }
        ExplainFormat::Dot => {
            let mut out = String::from("digraph stream_table {\n  node [shape=box];\n");
            let mut next = 0;
            dot(&root, &mut next, &mut out);
            out.push_str("}\n");
            out
        }
    }
}
