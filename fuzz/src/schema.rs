//! The fixed catalog every fuzz target plans against: four integer tables shaped like the
//! engine's property-test database (`a`, `b`, `c` keyed, `d` a keyless bag), a table whose
//! names need quoting (`"Order Items"` with a column `"select"`), and `e` with the other
//! type families (numeric, float8, bool, bpchar), which only the render target reads.

use engine::MemoryCatalog;

/// The type family of a column, as the generators need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Text,
    Num,
    Bool,
}

/// One table of the fixed catalog.
#[derive(Debug)]
pub struct TableSpec {
    pub id: u32,
    pub name: &'static str,
    /// `(name, SQL type, nullable, family)`.
    pub columns: &'static [(&'static str, &'static str, bool, Ty)],
    /// Whether the first column is the primary key.
    pub keyed: bool,
}

pub const A: u32 = 16384;
pub const B: u32 = 16385;
pub const C: u32 = 16386;
pub const D: u32 = 16387;
pub const ITEMS: u32 = 16388;
pub const E: u32 = 16389;

/// Every table, in catalog order (ids are assigned in this order).
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        id: A,
        name: "a",
        columns: &[
            ("k", "int4", false, Ty::Int),
            ("x", "int4", true, Ty::Int),
            ("g", "int4", true, Ty::Int),
        ],
        keyed: true,
    },
    TableSpec {
        id: B,
        name: "b",
        columns: &[
            ("k", "int4", false, Ty::Int),
            ("y", "int4", true, Ty::Int),
            ("g", "int4", true, Ty::Int),
        ],
        keyed: true,
    },
    TableSpec {
        id: C,
        name: "c",
        columns: &[("k", "int4", false, Ty::Int), ("z", "int4", true, Ty::Int)],
        keyed: true,
    },
    TableSpec {
        id: D,
        name: "d",
        columns: &[("v", "int4", true, Ty::Int), ("w", "int4", true, Ty::Int)],
        keyed: false,
    },
    TableSpec {
        id: ITEMS,
        name: "Order Items",
        columns: &[
            ("id", "int4", false, Ty::Int),
            ("select", "text", true, Ty::Text),
            ("qty", "int4", true, Ty::Int),
        ],
        keyed: true,
    },
    TableSpec {
        id: E,
        name: "e",
        columns: &[
            ("id", "int4", false, Ty::Int),
            ("n", "numeric", true, Ty::Num),
            ("f", "float8", true, Ty::Num),
            ("t", "text", true, Ty::Text),
            ("ok", "bool", true, Ty::Bool),
            ("ch", "bpchar(3)", true, Ty::Text),
        ],
        keyed: true,
    },
];

/// The tables whose values the in-memory evaluator models exactly (integers and text):
/// the ones the maintenance checks may read.
pub fn evaluable() -> Vec<&'static TableSpec> {
    TABLES.iter().filter(|t| t.id != E).collect()
}

pub fn all() -> Vec<&'static TableSpec> {
    TABLES.iter().collect()
}

/// The catalog of `TABLES`, search path `public`.
pub fn catalog() -> MemoryCatalog {
    let mut cat = MemoryCatalog::new();
    for t in TABLES {
        let cols: Vec<(&str, &str, bool)> = t
            .columns
            .iter()
            .map(|(n, ty, null, _)| (*n, *ty, *null))
            .collect();
        let key: &[&str] = if t.keyed { &[t.columns[0].0] } else { &[] };
        let id = cat.add_table("public", t.name, &cols, key);
        assert_eq!(id, t.id, "catalog ids follow TABLES order");
    }
    cat
}

/// `name` as a SQL identifier, quoted when it is not a plain lowercase word.
pub fn ident(name: &str) -> String {
    let plain = name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        && !matches!(
            name,
            "select" | "order" | "group" | "from" | "where" | "table"
        );
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
