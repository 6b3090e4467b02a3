//! pg_trickle_dump: the SQL that recreates a database's stream tables — every stream table's
//! defining query with the search_path it was created under, its schedule, requested refresh
//! mode, status, owner and the privileges granted on it, and its subscriptions — in dependency
//! order (a stream table after the stream tables it reads). Run the output with psql in a
//! database that has the source tables and the extension (docs/PG_TRICKLE_DUMP.md).
//!
//! This module is pure: [`read`] turns catalog rows into a [`Dump`], [`render`] writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One stream table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTable {
    pub id: i64,
    pub schema: String,
    pub name: String,
    pub query: String,
    pub search_path: String,
    pub schedule: String,
    pub refresh_mode: String,
    pub status: String,
    pub owner: String,
    pub populated: bool,
    /// Ids of the stream tables this one reads.
    pub reads: Vec<i64>,
    /// `(grantee, privilege, grantable)`; grantee `PUBLIC` for everyone.
    pub grants: Vec<(String, String, bool)>,
    pub channels: Vec<String>,
}

/// A database's stream tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub database: String,
    pub version: String,
    pub stream_tables: Vec<StreamTable>,
}

/// `ident` quoted as PostgreSQL's `quote_ident` would (always quoted here: simpler, and exact).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A standard-conforming string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A dollar-quoted literal whose tag does not occur in `s`.
pub fn dollar_quote(s: &str) -> String {
    let mut n = 0;
    loop {
        let tag = if n == 0 {
            "$pgt$".to_string()
        } else {
            format!("$pgt{n}$")
        };
        if !s.contains(&tag) {
            return format!("{tag}{s}{tag}");
        }
        n += 1;
    }
}

/// The stream tables in an order where each comes after those it reads (ties by id, that is
/// by creation); an error names the stream tables of a cycle (the catalog cannot hold one).
pub fn dependency_order(sts: &[StreamTable]) -> Result<Vec<&StreamTable>, String> {
    let ids: BTreeSet<i64> = sts.iter().map(|s| s.id).collect();
    let mut done: BTreeSet<i64> = BTreeSet::new();
    let mut out = Vec::with_capacity(sts.len());
    let mut sorted: Vec<&StreamTable> = sts.iter().collect();
    sorted.sort_by_key(|s| s.id);
    while out.len() < sorted.len() {
        let ready = sorted.iter().find(|s| {
            !done.contains(&s.id) && s.reads.iter().all(|r| done.contains(r) || !ids.contains(r))
        });
        match ready {
            Some(s) => {
                done.insert(s.id);
                out.push(*s);
            }
            None => {
                let left: Vec<String> = sorted
                    .iter()
                    .filter(|s| !done.contains(&s.id))
                    .map(|s| format!("{}.{}", s.schema, s.name))
                    .collect();
                return Err(format!(
                    "the stream tables {} read each other in a cycle",
                    left.join(", ")
                ));
            }
        }
    }
    Ok(out)
}

/// The SQL script.
pub fn render(d: &Dump) -> Result<String, String> {
    let order = dependency_order(&d.stream_tables)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- pg_trickle_dump of database {} (pg_trickle {}): {} stream table(s) in dependency order.",
        d.database,
        d.version,
        order.len()
    );
    out.push_str(
        "-- Run with psql in a database that has the source tables and the extension, as a \
         superuser\n-- (or a member of every owner role): psql -v ON_ERROR_STOP=1 -f FILE.\n\
         -- One transaction: either every stream table is created or none.\n\
         \\set ON_ERROR_STOP on\nBEGIN;\n",
    );
    let by_id: BTreeMap<i64, &StreamTable> = d.stream_tables.iter().map(|s| (s.id, s)).collect();
    for st in order {
        let qualified = format!("{}.{}", quote_ident(&st.schema), quote_ident(&st.name));
        out.push('\n');
        let _ = writeln!(out, "-- {qualified}");
        let reads: Vec<String> = st
            .reads
            .iter()
            .filter_map(|r| by_id.get(r))
            .map(|s| format!("{}.{}", quote_ident(&s.schema), quote_ident(&s.name)))
            .collect();
        if !reads.is_empty() {
            let _ = writeln!(out, "-- reads the stream tables {}", reads.join(", "));
        }
        if st.status == "ERROR" || st.status == "NEEDS_REINIT" {
            let _ = writeln!(
                out,
                "-- was in status {} when dumped: it is created ACTIVE",
                st.status
            );
        }
        let _ = writeln!(out, "SET ROLE {};", quote_ident(&st.owner));
        let _ = writeln!(
            out,
            "SELECT pg_catalog.set_config('search_path', {}, true);",
            quote_literal(&st.search_path)
        );
        let _ = writeln!(
            out,
            "SELECT pgtrickle.create_stream_table({}, {},\n    schedule => {}, refresh_mode => {}, initialize => {});",
            quote_literal(&qualified),
            dollar_quote(&st.query),
            quote_literal(&st.schedule),
            quote_literal(&st.refresh_mode),
            st.populated
        );
        if st.status == "SUSPENDED" {
            let _ = writeln!(
                out,
                "SELECT pgtrickle.alter_stream_table({}, status => 'SUSPENDED');",
                quote_literal(&qualified)
            );
        }
        for (grantee, privilege, grantable) in &st.grants {
            let to = if grantee == "PUBLIC" {
                "PUBLIC".to_string()
            } else {
                quote_ident(grantee)
            };
            let _ = writeln!(
                out,
                "GRANT {privilege} ON {qualified} TO {to}{};",
                if *grantable { " WITH GRANT OPTION" } else { "" }
            );
        }
        for channel in &st.channels {
            let _ = writeln!(
                out,
                "SELECT pgtrickle.subscribe({}, {});",
                quote_literal(&qualified),
                quote_literal(channel)
            );
        }
        out.push_str("RESET ROLE;\n");
    }
    out.push_str("\nRESET search_path;\nCOMMIT;\n");
    Ok(out)
}

/// The catalog queries [`read`] runs (public for the docs and the tests).
pub const STREAM_TABLES_SQL: &str = "\
SELECT s.pgt_id, s.pgt_schema::text, s.pgt_name::text, s.defining_query, s.search_path, \
       s.schedule, s.refresh_mode, s.status, pg_catalog.pg_get_userbyid(c.relowner)::text, \
       s.is_populated, \
       coalesce((SELECT array_agg(u.pgt_id ORDER BY u.pgt_id) \
                   FROM pgtrickle.pgt_dependencies d \
                   JOIN pgtrickle.pgt_stream_tables u ON u.pgt_relid = d.source_relid \
                  WHERE d.pgt_id = s.pgt_id), '{}'), \
       coalesce((SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                                       ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END \
                                  || '|' || a.privilege_type || '|' || a.is_grantable::text \
                                  ORDER BY 1) \
                   FROM pg_catalog.aclexplode(c.relacl) a \
                  WHERE a.grantee <> c.relowner), '{}'), \
       coalesce((SELECT array_agg(b.channel ORDER BY b.channel) \
                   FROM pgtrickle.pgt_subscriptions b \
                  WHERE b.pgt_schema = s.pgt_schema AND b.pgt_name = s.pgt_name), '{}') \
  FROM pgtrickle.pgt_stream_tables s \
  JOIN pg_catalog.pg_class c ON c.oid = s.pgt_relid \
 WHERE s.shadow_of IS NULL \
 ORDER BY s.pgt_id";

/// Reads the dump from a connection.
pub fn read<C: postgres::GenericClient>(client: &mut C) -> Result<Dump, String> {
    let head = client
        .query_one(
            "SELECT current_database()::text, \
             (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_trickle')",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let database: String = head.get(0);
    let version: Option<String> = head.get(1);
    let version =
        version.ok_or_else(|| format!("database {database} has no pg_trickle extension"))?;
    let rows = client
        .query(STREAM_TABLES_SQL, &[])
        .map_err(|e| e.to_string())?;
    let mut stream_tables = Vec::with_capacity(rows.len());
    for r in rows {
        let grants: Vec<String> = r.get(11);
        // `grantee|privilege|grantable`, split from the right (a role name may hold '|').
        let grants = grants
            .iter()
            .map(|g| {
                let mut p = g.rsplitn(3, '|');
                match (p.next(), p.next(), p.next()) {
                    (Some(grantable), Some(privilege), Some(grantee)) => Ok((
                        grantee.to_string(),
                        privilege.to_string(),
                        grantable == "true",
                    )),
                    _ => Err(format!(
                        "a grant reads \"{g}\", not grantee|privilege|grantable"
                    )),
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        stream_tables.push(StreamTable {
            id: r.get(0),
            schema: r.get(1),
            name: r.get(2),
            query: r.get(3),
            search_path: r.get(4),
            schedule: r.get(5),
            refresh_mode: r.get(6),
            status: r.get(7),
            owner: r.get(8),
            populated: r.get(9),
            reads: r.get(10),
            grants,
            channels: r.get(12),
        });
    }
    Ok(Dump {
        database,
        version,
        stream_tables,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn st(id: i64, name: &str, reads: &[i64]) -> StreamTable {
        StreamTable {
            id,
            schema: "public".into(),
            name: name.into(),
            query: format!("SELECT 1 AS x -- {name}"),
            search_path: "pg_catalog, public, pg_temp".into(),
            schedule: "calculated".into(),
            refresh_mode: "AUTO".into(),
            status: "ACTIVE".into(),
            owner: "postgres".into(),
            populated: true,
            reads: reads.to_vec(),
            grants: Vec::new(),
            channels: Vec::new(),
        }
    }

    #[test]
    fn readers_come_after_what_they_read() {
        // 1 reads 3 (created later by id, e.g. after an ALTER), 2 reads 1.
        let sts = vec![st(1, "a", &[3]), st(2, "b", &[1]), st(3, "c", &[])];
        let order: Vec<i64> = dependency_order(&sts)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(order, vec![3, 1, 2]);
    }

    #[test]
    fn a_cycle_is_an_error_naming_it() {
        let sts = vec![st(1, "a", &[2]), st(2, "b", &[1])];
        let e = dependency_order(&sts).unwrap_err();
        assert!(e.contains("public.a, public.b"), "{e}");
    }

    #[test]
    fn dollar_quotes_avoid_tags_in_the_query() {
        assert_eq!(dollar_quote("SELECT 1"), "$pgt$SELECT 1$pgt$");
        assert_eq!(
            dollar_quote("SELECT '$pgt$' AS t"),
            "$pgt1$SELECT '$pgt$' AS t$pgt1$"
        );
    }

    #[test]
    fn render_writes_every_setting_in_one_transaction() {
        let mut a = st(1, "Odd \"Name\"", &[]);
        a.schedule = "5m".into();
        a.refresh_mode = "DIFFERENTIAL".into();
        a.status = "SUSPENDED".into();
        a.owner = "alice".into();
        a.populated = false;
        a.grants = vec![
            ("PUBLIC".into(), "SELECT".into(), false),
            ("bob".into(), "SELECT".into(), true),
        ];
        a.channels = vec!["it's".into()];
        let d = Dump {
            database: "db".into(),
            version: "0.35.0".into(),
            stream_tables: vec![a],
        };
        let sql = render(&d).unwrap();
        assert!(sql.contains("BEGIN;\n"));
        assert!(sql.ends_with("COMMIT;\n"));
        assert!(sql.contains("SET ROLE \"alice\";"));
        assert!(sql.contains(
            "SELECT pgtrickle.create_stream_table('\"public\".\"Odd \"\"Name\"\"\"', $pgt$SELECT 1 AS x -- Odd \"Name\"$pgt$,\n    schedule => '5m', refresh_mode => 'DIFFERENTIAL', initialize => false);"
        ));
        assert!(sql.contains("status => 'SUSPENDED'"));
        assert!(sql.contains("GRANT SELECT ON \"public\".\"Odd \"\"Name\"\"\" TO PUBLIC;"));
        assert!(sql.contains("TO \"bob\" WITH GRANT OPTION;"));
        assert!(sql.contains("pgtrickle.subscribe('\"public\".\"Odd \"\"Name\"\"\"', 'it''s');"));
    }
}
