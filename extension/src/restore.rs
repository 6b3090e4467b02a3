//! pg_dump and pg_restore of a database with stream tables (docs/UPGRADING.md, "Logical
//! backups"). The catalog holds OIDs, which a restore changes, so it is not dumped. Instead a
//! name-keyed manifest, `pgtrickle.pgt_dump_manifest`, is: an extension configuration table
//! kept equal to the catalog by a trigger (one row per stream table: schema, name, defining
//! query, search_path, schedule, requested mode, status). pg_restore brings back the manifest,
//! the subscriptions, the storage tables as plain tables (with their owners, grants and
//! data) and the change capture as orphan triggers, functions and buffers, which are inert:
//! they write to buffers no stream table reads.
//!
//! `pgtrickle.restore_stream_tables()` then makes them stream tables again in one
//! transaction. It removes the orphan capture. For every manifest row without a stream table,
//! upstream first, it drops the restored copy of the storage, keeping its owner and grants,
//! and creates the stream table from the manifest (a FULL load from the restored sources),
//! with the owner, grants, status and subscriptions it had.

// `ErrorReport` is pgrx's error type at the SQL boundary (it carries the SQLSTATE); it is
// returned once per call, so its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};

use engine::render::{qualified, quote_literal};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::{required, PgTrickleError};
use crate::stream_table::RequestedMode;
use crate::{definition, roles};

/// A manifest row without a stream table.
struct Pending {
    schema: String,
    name: String,
    query: String,
    search_path: String,
    schedule: String,
    mode: RequestedMode,
    suspended: bool,
    /// The restored copy of its storage, if pg_restore brought one, and its owner: the role
    /// the stream table is created, analysed and loaded as (the caller when there is none).
    restored: Option<pg_sys::Oid>,
    owner: pg_sys::Oid,
}

impl Pending {
    fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// Makes the stream tables of a restored database stream tables again (module comment). Returns
/// one row per stream table restored. Only superusers (and roles granted EXECUTE) may call it:
/// it acts on every stream table of the database.
#[pg_extern(volatile, parallel_unsafe)]
fn restore_stream_tables(
) -> Result<TableIterator<'static, (name!(stream_table, String), name!(action, String))>, ErrorReport>
{
    let rows = crate::settings::with_standard_strings(restore)?;
    Ok(TableIterator::new(rows))
}

fn restore() -> Result<Vec<(String, String)>, PgTrickleError> {
    let iso = Spi::get_one::<String>("SELECT current_setting('transaction_isolation')")?
        .unwrap_or_default();
    if iso != "read committed" {
        return Err(PgTrickleError::NeedsReadCommitted(
            "restore_stream_tables()",
        ));
    }
    let caller = roles::current();
    let pending = roles::as_extension(pending)?;
    for p in &pending {
        if p.restored.is_some() && !has_guard(p)? {
            return Err(PgTrickleError::AlreadyExists(format!(
                "{} (a table that is not the restored storage of a stream table: it has no \
                 pg_trickle guard trigger)",
                p.qualified()
            )));
        }
        debug_assert!(p.restored.is_some() || p.owner == caller);
    }
    roles::as_extension(remove_orphan_capture)?;
    let mut out = Vec::new();
    for p in in_dependency_order(pending)? {
        out.push((p.qualified(), restore_one(&p)?));
    }
    Ok(out)
}

/// The manifest rows that name no stream table.
fn pending() -> Result<Vec<Pending>, PgTrickleError> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT m.pgt_schema::text, m.pgt_name::text, m.defining_query, m.search_path, \
                        m.schedule, m.refresh_mode, m.status = 'SUSPENDED', c.oid, c.relowner \
                   FROM pgtrickle.pgt_dump_manifest m \
                   LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = m.pgt_schema \
                   LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
                        AND c.relname = m.pgt_name AND c.relkind = 'r' \
                  WHERE NOT EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s \
                                     WHERE (s.pgt_schema, s.pgt_name) = (m.pgt_schema, m.pgt_name)) \
                  ORDER BY 1, 2",
                None,
                &[],
            )?
            .map(|r| {
                let c = |n: &str| format!("pgt_dump_manifest.{n}");
                Ok(Pending {
                    schema: required(r.get::<String>(1)?, &c("pgt_schema"))?,
                    name: required(r.get::<String>(2)?, &c("pgt_name"))?,
                    query: required(r.get::<String>(3)?, &c("defining_query"))?,
                    search_path: required(r.get::<String>(4)?, &c("search_path"))?,
                    schedule: required(r.get::<String>(5)?, &c("schedule"))?,
                    mode: RequestedMode::from_catalog(&required(
                        r.get::<String>(6)?,
                        &c("refresh_mode"),
                    )?)?,
                    suspended: required(r.get::<bool>(7)?, &c("status"))?,
                    restored: r.get::<pg_sys::Oid>(8)?,
                    owner: r.get::<pg_sys::Oid>(9)?.unwrap_or_else(roles::current),
                })
            })
            .collect()
    })
}

/// Drops the capture triggers of tables no stream table reads, the buffers and capture
/// functions of sources no stream table reads (after a restore, those of the dump, which name
/// the dumped database's OIDs), and shadow builds' tables that were dumped mid-build.
fn remove_orphan_capture() -> Result<(), PgTrickleError> {
    let statements: Vec<String> = Spi::connect(|client| {
        client
            .select(
                "SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass) \
                   FROM pg_catalog.pg_trigger t \
                  WHERE NOT t.tgisinternal AND t.tgname LIKE '\\_\\_pgt\\_capture\\_%' \
                    AND NOT EXISTS (SELECT FROM pgtrickle.pgt_dependencies d \
                                     WHERE d.source_relid = t.tgrelid) \
                 UNION ALL \
                 SELECT format('DROP TABLE %s', c.oid::regclass) \
                   FROM pg_catalog.pg_class c \
                  WHERE c.relkind = 'r' AND c.relname LIKE '\\_\\_pgt\\_shadow\\_%' \
                    AND EXISTS (SELECT FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid \
                                 AND t.tgname = '__pgt_guard') \
                    AND NOT EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s \
                                     WHERE s.pgt_relid = c.oid) \
                 UNION ALL \
                 SELECT format('DROP TABLE pgtrickle_changes.%I', c.relname) \
                   FROM pg_catalog.pg_class c \
                  WHERE c.relnamespace = 'pgtrickle_changes'::regnamespace AND c.relkind = 'r' \
                    AND c.relname ~ '^changes_[0-9]+$' \
                    AND NOT EXISTS (SELECT FROM pgtrickle.pgt_dependencies d \
                                     WHERE d.source_relid = substr(c.relname, 9)::oid) \
                 UNION ALL \
                 SELECT format('DROP FUNCTION pgtrickle_changes.%I()', p.proname) \
                   FROM pg_catalog.pg_proc p \
                  WHERE p.pronamespace = 'pgtrickle_changes'::regnamespace \
                    AND p.proname ~ '^capture_[0-9]+$' \
                    AND NOT EXISTS (SELECT FROM pgtrickle.pgt_dependencies d \
                                     WHERE d.source_relid = substr(p.proname, 9)::oid)",
                None,
                &[],
            )?
            .filter_map(|r| r.get::<String>(1).transpose())
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    for s in statements {
        Spi::run(&s)?;
    }
    Spi::run(
        "DELETE FROM pgtrickle.pgt_capture_columns c WHERE NOT EXISTS \
         (SELECT FROM pgtrickle.pgt_dependencies d WHERE d.source_relid = c.source_relid)",
    )?;
    Ok(())
}

/// `pending` ordered so that a stream table comes after the pending ones its query reads
/// (by the relations its query names now, under its stored search_path). A cycle is an
/// error naming it.
fn in_dependency_order(pending: Vec<Pending>) -> Result<Vec<Pending>, PgTrickleError> {
    // By schema and name as the catalogs hold them (never as rendered SQL).
    let names: BTreeMap<(String, String), usize> = pending
        .iter()
        .enumerate()
        .map(|(i, p)| ((p.schema.clone(), p.name.clone()), i))
        .collect();
    let mut reads: Vec<BTreeSet<usize>> = Vec::with_capacity(pending.len());
    for p in &pending {
        // Analysed as its owner, as every step of its restore.
        let def = roles::as_owner(p.owner, &p.search_path, false, || {
            definition::probe(&p.query)
        })
        .map_err(|e| PgTrickleError::CannotReinit {
            name: p.qualified(),
            reason: format!("its defining query does not work in the restored database: {e}"),
        })?;
        let mut upstream = BTreeSet::new();
        for s in &def.sources {
            let name = Spi::connect(|client| {
                let t = client.select(
                    &format!(
                        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                          WHERE c.oid = {}",
                        s.to_u32()
                    ),
                    None,
                    &[],
                )?;
                let Some(r) = t.into_iter().next() else {
                    return Ok::<_, PgTrickleError>(None);
                };
                Ok(Some((
                    required(r.get::<String>(1)?, "pg_namespace.nspname")?,
                    required(r.get::<String>(2)?, "pg_class.relname")?,
                )))
            })?;
            if let Some(i) = name.and_then(|n| names.get(&n).copied()) {
                upstream.insert(i);
            }
        }
        reads.push(upstream);
    }
    let mut order = Vec::with_capacity(pending.len());
    let mut done = vec![false; pending.len()];
    while order.len() < pending.len() {
        let next =
            (0..pending.len()).find(|&i| !done[i] && reads[i].iter().all(|u| done[*u] || *u == i));
        let Some(i) = next else {
            let left: Vec<String> = (0..pending.len())
                .filter(|&i| !done[i])
                .map(|i| pending[i].qualified())
                .collect();
            return Err(PgTrickleError::CannotReinit {
                name: left.join(", "),
                reason: "they read each other".into(),
            });
        };
        done[i] = true;
        order.push(i);
    }
    let mut slots: Vec<Option<Pending>> = pending.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// Whether the restored table of `p` carries pg_trickle's write guard (restored with it by
/// pg_dump): the mark of a stream table's storage, which alone may be dropped here.
fn has_guard(p: &Pending) -> Result<bool, PgTrickleError> {
    let Some(oid) = p.restored else {
        return Ok(false);
    };
    Ok(Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = {} AND tgname = {})",
        oid.to_u32(),
        quote_literal(engine::names::GUARD_TRIGGER)
    ))?
    .unwrap_or(false))
}

/// Makes one manifest row a stream table again; what it did, for the result. The stream
/// table is created, analysed and loaded as its owner (no code of its query runs with the
/// caller's privileges), who needs CREATE on its schema, as when it was first created.
fn restore_one(p: &Pending) -> Result<String, PgTrickleError> {
    let table = p.qualified();
    // The restored copy of its storage: its grants, then dropped.
    let grants = match p.restored {
        Some(oid) => {
            let grants = roles::table_grants(oid)?;
            Spi::run(&format!("DROP TABLE {table}"))?;
            grants
        }
        None => Vec::new(),
    };
    roles::as_owner(p.owner, &p.search_path, false, || {
        crate::api::create_as_restored(
            &p.schema,
            &p.name,
            &p.query,
            &p.schedule,
            p.mode,
            &p.search_path,
        )
    })?;
    for g in grants {
        Spi::run(&g.statement(&table))?;
    }
    if p.suspended {
        roles::as_extension(|| {
            Spi::run(&format!(
                "UPDATE pgtrickle.pgt_stream_tables SET status = 'SUSPENDED' \
                 WHERE pgt_schema = {} AND pgt_name = {}",
                quote_literal(&p.schema),
                quote_literal(&p.name)
            ))?;
            Ok(())
        })?;
    }
    Ok(if p.restored.is_some() {
        "restored".into()
    } else {
        "created (its storage was not in the dump)".into()
    })
}

extension_sql!(
    r#"
-- The stream tables by name, for pg_dump (restore.rs): kept equal to the catalog by the
-- trigger below; restore_stream_tables() reads it after pg_restore.
CREATE TABLE pgtrickle.pgt_dump_manifest (
    pgt_schema      name NOT NULL,
    pgt_name        name NOT NULL,
    defining_query  text NOT NULL,
    search_path     text NOT NULL,
    schedule        text NOT NULL,
    refresh_mode    text NOT NULL,
    status          text NOT NULL,
    PRIMARY KEY (pgt_schema, pgt_name)
);
SELECT pg_catalog.pg_extension_config_dump('pgtrickle.pgt_dump_manifest', '');
REVOKE ALL ON pgtrickle.pgt_dump_manifest FROM PUBLIC;
GRANT SELECT ON pgtrickle.pgt_dump_manifest TO PUBLIC;
ALTER TABLE pgtrickle.pgt_dump_manifest ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgt_visible ON pgtrickle.pgt_dump_manifest FOR SELECT USING (
    EXISTS (SELECT FROM pgtrickle.pgt_stream_tables s
             WHERE s.pgt_schema OPERATOR(pg_catalog.=) pgt_dump_manifest.pgt_schema
               AND s.pgt_name OPERATOR(pg_catalog.=) pgt_dump_manifest.pgt_name));

CREATE FUNCTION pgtrickle.sync_dump_manifest() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM pgtrickle.pgt_dump_manifest
         WHERE pgt_schema = OLD.pgt_schema AND pgt_name = OLD.pgt_name;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.shadow_of IS NULL THEN
        INSERT INTO pgtrickle.pgt_dump_manifest
               (pgt_schema, pgt_name, defining_query, search_path, schedule, refresh_mode, status)
        VALUES (NEW.pgt_schema, NEW.pgt_name, NEW.defining_query, NEW.search_path, NEW.schedule,
                NEW.refresh_mode, NEW.status)
        ON CONFLICT (pgt_schema, pgt_name) DO UPDATE
           SET defining_query = excluded.defining_query, search_path = excluded.search_path,
               schedule = excluded.schedule, refresh_mode = excluded.refresh_mode,
               status = excluded.status;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgtrickle.sync_dump_manifest() FROM PUBLIC;
CREATE TRIGGER pgt_sync_dump_manifest
    AFTER INSERT OR DELETE OR UPDATE OF pgt_schema, pgt_name, defining_query, search_path,
        schedule, refresh_mode, status, shadow_of
    ON pgtrickle.pgt_stream_tables
    FOR EACH ROW EXECUTE FUNCTION pgtrickle.sync_dump_manifest();

REVOKE EXECUTE ON FUNCTION pgtrickle.restore_stream_tables() FROM PUBLIC;
"#,
    name = "dump_manifest",
    requires = ["catalog_tables", restore_stream_tables]
);
