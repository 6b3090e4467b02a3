//! Change capture (docs/CORRECTNESS.md §1): one typed change buffer per source,
//! `pgtrickle_changes.changes_<source oid>`, shared by every stream table reading the source,
//! filled by statement-level AFTER triggers with transition tables. A row is `I` (inserted) or
//! `D` (deleted); an UPDATE is its old rows as `D` plus its new rows as `I`. `T` marks a
//! TRUNCATE and `P` a write whose capture was skipped (`pg_trickle.cdc_paused` or
//! `pg_trickle.enabled = off`): a refresh whose window holds either runs FULL, so pausing never
//! leaves a silently wrong stream table. Rows carry the writer's xid and a sequence number for
//! the frontier (frontier.rs; INV-2) and are deleted once every dependent consumed them (INV-3).

use engine::names;
use engine::render::{quote_ident, quote_literal};
use pgrx::prelude::*;

use crate::error::{required, PgTrickleError};
use crate::frontier;

extension_sql!(
    r#"
-- One sequence for every buffer: a refresh bounds its own transaction's rows in all of its
-- buffers by one number (see frontier.rs).
CREATE SEQUENCE pgtrickle_changes.change_seq AS bigint CACHE 64;
"#,
    name = "change_seq",
    requires = ["schemas"]
);

/// `"pgtrickle_changes"."changes_<oid>"`.
pub fn buffer_name(source: pg_sys::Oid) -> String {
    format!(
        "{}.{}",
        names::BUFFER_SCHEMA,
        quote_ident(&names::buffer_table(source.to_u32()))
    )
}

/// Whether `source` has a change buffer.
pub(crate) fn buffer_exists(source: pg_sys::Oid) -> Result<bool, PgTrickleError> {
    Ok(Spi::get_one::<bool>(&format!(
        "SELECT to_regclass({}) IS NOT NULL",
        quote_literal(&buffer_name(source))
    ))?
    .unwrap_or(false))
}

fn capture_function_name(source: pg_sys::Oid) -> String {
    format!(
        "{}.{}",
        names::BUFFER_SCHEMA,
        quote_ident(&names::capture_function(source.to_u32()))
    )
}

/// A source column: number, name and `format_type` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub attnum: i16,
    pub name: String,
    pub type_sql: String,
}

/// The named columns of `source` with their types, in table order. Unknown names are an error
/// (42703).
pub fn source_columns(
    source: pg_sys::Oid,
    names: &[String],
) -> Result<Vec<SourceColumn>, PgTrickleError> {
    let all = crate::definition::attributes(source)?;
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|c| &c.name == n)
                .map(|c| SourceColumn {
                    attnum: c.attnum,
                    name: c.name.clone(),
                    type_sql: c.type_sql.clone(),
                })
                .ok_or_else(|| PgTrickleError::Spi {
                    sqlstate: "42703".into(),
                    message: format!(
                        "column \"{n}\" does not exist in relation {}",
                        source.to_u32()
                    ),
                    detail: None,
                })
        })
        .collect()
}

/// Makes sure `source` has a buffer holding at least `columns` and capture triggers writing
/// them. Idempotent; adds buffer columns when a new dependent reads more of the source. Runs
/// `CREATE TRIGGER`, whose lock waits for writers in flight (docs/CORRECTNESS.md §4).
pub fn ensure_capture(source: pg_sys::Oid, columns: &[String]) -> Result<(), PgTrickleError> {
    let buffer = buffer_name(source);
    let exists = buffer_exists(source)?;
    if !exists {
        let (seq, xid, op) = (names::BUFFER_SEQ, names::BUFFER_XID, names::BUFFER_OP);
        let (schema, sequence) = (names::BUFFER_SCHEMA, names::BUFFER_SEQUENCE);
        // A queue: rows are deleted soon after they are written, so it is vacuumed after a
        // fixed number of dead rows rather than a fraction of its (small) size — scans of a
        // buffer full of dead rows slow every refresh down until then.
        Spi::run(&format!(
            "CREATE TABLE {buffer} (\
             {seq} bigint NOT NULL DEFAULT nextval('{schema}.{sequence}'), \
             {xid} xid8 NOT NULL DEFAULT pg_current_xact_id(), \
             {op} \"char\" NOT NULL) \
             WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000)"
        ))?;
        Spi::run(&format!("CREATE INDEX ON {buffer} ({xid}, {seq})"))?;
    }
    let mut captured = buffer_columns(source)?;
    for c in source_columns(source, columns)? {
        if !captured.iter().any(|n| n == &c.name) {
            add_buffer_column(source, &c)?;
            captured.push(c.name);
        }
    }
    install_triggers(source)
}

/// Adds the buffer column capturing source column `c`, and records which source column it is.
fn add_buffer_column(source: pg_sys::Oid, c: &SourceColumn) -> Result<(), PgTrickleError> {
    Spi::run(&format!(
        "ALTER TABLE {} ADD COLUMN {} {}",
        buffer_name(source),
        quote_ident(&c.name),
        c.type_sql
    ))?;
    Spi::run(&format!(
        "INSERT INTO pgtrickle.pgt_capture_columns (source_relid, attnum, name, type_sql) \
         VALUES ({}, {}, {}, {}) ON CONFLICT (source_relid, attnum) DO UPDATE \
         SET name = EXCLUDED.name, type_sql = EXCLUDED.type_sql",
        source.to_u32(),
        c.attnum,
        quote_literal(&c.name),
        quote_literal(&c.type_sql)
    ))?;
    Ok(())
}

/// Brings the buffer and capture trigger of `source` in line with the source after DDL on
/// it: buffer columns follow their source column by number (renamed, retyped, or dropped
/// with it), then the buffer captures exactly the columns the dependents' delta reads that
/// the source still has, and the capture function is written for them. A write to the source
/// can then never fail for a column the capture names.
pub fn reconcile(source: pg_sys::Oid) -> Result<(), PgTrickleError> {
    let buffer = buffer_name(source);
    let exists = buffer_exists(source)?;
    if !exists {
        return Ok(());
    }
    let recorded: Vec<(i16, String, String)> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT attnum, name::text, type_sql FROM pgtrickle.pgt_capture_columns \
                     WHERE source_relid = {} ORDER BY attnum",
                    source.to_u32()
                ),
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    required(row.get::<i16>(1)?, "pgt_capture_columns.attnum")?,
                    required(row.get::<String>(2)?, "pgt_capture_columns.name")?,
                    required(row.get::<String>(3)?, "pgt_capture_columns.type_sql")?,
                ))
            })
            .collect::<Result<Vec<_>, PgTrickleError>>()
    })?;
    let in_buffer = buffer_columns(source)?;
    for name in &in_buffer {
        if !recorded.iter().any(|(_, n, _)| n == name) {
            return Err(PgTrickleError::Internal(format!(
                "buffer column {} of {buffer} has no row in pgtrickle.pgt_capture_columns \
                 (every captured column is recorded with its source column number)",
                quote_ident(name)
            )));
        }
    }
    let now = crate::definition::attributes(source)?;
    // Renames go through a temporary name first, so that swapping two names never collides.
    let mut renames: Vec<(i16, String)> = Vec::new();
    for (attnum, name, type_sql) in &recorded {
        let Some(col) = now.iter().find(|a| a.attnum == *attnum) else {
            Spi::run(&format!(
                "ALTER TABLE {buffer} DROP COLUMN IF EXISTS {}",
                quote_ident(name)
            ))?;
            Spi::run(&format!(
                "DELETE FROM pgtrickle.pgt_capture_columns WHERE source_relid = {} \
                 AND attnum = {attnum}",
                source.to_u32()
            ))?;
            continue;
        };
        if col.type_sql != *type_sql {
            // Captured values of the old type are not kept: dependents reading the column
            // refresh FULL once (source_ddl.rs), the others never read it.
            Spi::run(&format!(
                "ALTER TABLE {buffer} ALTER COLUMN {c} TYPE {t} USING NULL::{t}",
                c = quote_ident(name),
                t = col.type_sql
            ))?;
        }
        if col.name != *name {
            Spi::run(&format!(
                "ALTER TABLE {buffer} RENAME COLUMN {} TO {}",
                quote_ident(name),
                quote_ident(&names::renaming(*attnum))
            ))?;
            renames.push((*attnum, col.name.clone()));
        }
        Spi::run(&format!(
            "UPDATE pgtrickle.pgt_capture_columns SET name = {}, type_sql = {} \
             WHERE source_relid = {} AND attnum = {attnum}",
            quote_literal(&col.name),
            quote_literal(&col.type_sql),
            source.to_u32()
        ))?;
    }
    for (attnum, name) in &renames {
        Spi::run(&format!(
            "ALTER TABLE {buffer} RENAME COLUMN {} TO {}",
            quote_ident(&names::renaming(*attnum)),
            quote_ident(name)
        ))?;
    }
    // What the dependents read now (their records were brought up to date first; a stream
    // table waiting for reinitialisation may name columns that are gone: skipped).
    let wanted: Vec<String> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT DISTINCT u::text FROM pgtrickle.pgt_dependencies d, \
                     unnest(d.columns_used) AS u WHERE d.source_relid = {} ORDER BY 1",
                    source.to_u32()
                ),
                None,
                &[],
            )?
            .filter_map(|row| row.get::<String>(1).transpose())
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    let wanted: Vec<&crate::definition::Attribute> =
        now.iter().filter(|a| wanted.contains(&a.name)).collect();
    for name in buffer_columns(source)? {
        if !wanted.iter().any(|a| a.name == name) {
            Spi::run(&format!(
                "ALTER TABLE {buffer} DROP COLUMN {}",
                quote_ident(&name)
            ))?;
            Spi::run(&format!(
                "DELETE FROM pgtrickle.pgt_capture_columns WHERE source_relid = {} \
                 AND name = {}",
                source.to_u32(),
                quote_literal(&name)
            ))?;
        }
    }
    let captured = buffer_columns(source)?;
    for a in wanted {
        if !captured.contains(&a.name) {
            add_buffer_column(
                source,
                &SourceColumn {
                    attnum: a.attnum,
                    name: a.name.clone(),
                    type_sql: a.type_sql.clone(),
                },
            )?;
        }
    }
    install_triggers(source)
}

/// The user columns a source's buffer captures, in buffer order.
pub fn buffer_columns(source: pg_sys::Oid) -> Result<Vec<String>, PgTrickleError> {
    let sql = format!(
        "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass({}) \
         AND attnum > 0 AND NOT attisdropped AND attname <> ALL ({}) ORDER BY attnum",
        quote_literal(&buffer_name(source)),
        crate::definition::name_array(&names::BUFFER_META.map(String::from))
    );
    Ok(Spi::connect(|client| {
        client
            .select(&sql, None, &[])?
            .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?)
}

/// Gives exactly the owners of `source`'s dependent stream tables read access to its buffer
/// (INV-13): USAGE on `pgtrickle_changes` and SELECT on the window columns and on the buffer
/// columns their own deltas read, since their refreshes run as them (roles.rs). Everyone else's
/// grants on the buffer are revoked: a role that no longer owns a dependent (dropped, or given
/// to another owner) loses access, and no role ever reads a column captured for someone
/// else's stream table. Superusers need no grant. Serialised per buffer by a self-conflicting
/// lock that writers and readers of the buffer do not take.
pub fn grant_readers(source: pg_sys::Oid) -> Result<(), PgTrickleError> {
    if !buffer_exists(source)? {
        return Ok(());
    }
    let buffer = buffer_name(source);
    Spi::run(&format!(
        "LOCK TABLE {buffer} IN SHARE UPDATE EXCLUSIVE MODE"
    ))?;
    let relid = format!("{}::regclass", quote_literal(&buffer));
    let granted: Vec<String> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT DISTINCT a.grantee::regrole::text FROM ( \
                       SELECT (aclexplode(c.relacl)).grantee FROM pg_catalog.pg_class c \
                        WHERE c.oid = {relid} \
                       UNION ALL \
                       SELECT (aclexplode(t.attacl)).grantee FROM pg_catalog.pg_attribute t \
                        WHERE t.attrelid = {relid}) a \
                     WHERE a.grantee <> 0 AND a.grantee <> \
                       (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = {relid})"
                ),
                None,
                &[],
            )?
            .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    for role in granted {
        Spi::run(&format!("REVOKE ALL ON {buffer} FROM {role}"))?;
    }
    let wanted: Vec<(String, Vec<String>)> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT c.relowner::regrole::text, coalesce(array_agg(DISTINCT \
                       t.attname::text) FILTER (WHERE t.attname IS NOT NULL), '{{}}') \
                     FROM pgtrickle.pgt_dependencies d \
                     JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
                     JOIN pg_catalog.pg_class c ON c.oid = s.pgt_relid \
                     JOIN pg_catalog.pg_roles r ON r.oid = c.relowner AND NOT r.rolsuper \
                     LEFT JOIN LATERAL unnest(d.columns_used) u(name) ON true \
                     LEFT JOIN pg_catalog.pg_attribute t ON t.attrelid = {relid} \
                       AND t.attname = u.name AND t.attnum > 0 AND NOT t.attisdropped \
                     WHERE d.source_relid = {} GROUP BY c.relowner",
                    source.to_u32()
                ),
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<Vec<String>>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    for (role, columns) in wanted {
        let mut all: Vec<String> = names::BUFFER_META.iter().map(|c| quote_ident(c)).collect();
        all.extend(columns.iter().map(|c| quote_ident(c)));
        Spi::run(&format!(
            "GRANT USAGE ON SCHEMA {} TO {role}",
            names::BUFFER_SCHEMA
        ))?;
        Spi::run(&format!(
            "GRANT SELECT ({}) ON {buffer} TO {role}",
            all.join(", ")
        ))?;
    }
    Ok(())
}

/// Re-creates the capture triggers of `source` for its current dependents (after a dependent
/// changed mode or went away).
pub fn regenerate(source: pg_sys::Oid) -> Result<(), PgTrickleError> {
    install_triggers(source)
}

/// (Re)creates the four capture triggers on `source` (`capture::capture_changes`). When some dependent
/// is IMMEDIATE, they also maintain those dependents inside the writing statement (INV-5: each
/// maintenance locks the stream table's catalog row, serialising writers on its different
/// sources; under REPEATABLE READ a writer whose snapshot predates another's maintenance gets
/// 40001 from that lock instead of computing a delta on stale state). The trigger copies the
/// columns the buffer has, so the buffer is brought in line with the source first.
fn install_triggers(source: pg_sys::Oid) -> Result<(), PgTrickleError> {
    let has_immediate = Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d \
         JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
         WHERE d.source_relid = {} AND s.effective_mode = 'IMMEDIATE')",
        source.to_u32()
    ))?
    .unwrap_or(false);
    let args = if has_immediate {
        quote_literal(MAINTAIN_ARG)
    } else {
        String::new()
    };
    let rel = format!("{}::regclass", source.to_u32());
    let table = Spi::get_one::<String>(&format!("SELECT {rel}::text"))?.ok_or_else(|| {
        PgTrickleError::Internal(format!("relation {} vanished", source.to_u32()))
    })?;
    for (name, event, referencing) in names::CAPTURE_TRIGGERS {
        drop_trigger(source, name, &table)?;
        Spi::run(&format!(
            "CREATE TRIGGER {name} AFTER {event} ON {table} {referencing} \
             FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.capture_changes({args})"
        ))?;
    }
    // The PL/pgSQL capture function of a source captured by 0.34 is no longer called.
    drop_legacy_function(source)
}

/// Drops the per-source PL/pgSQL capture function of 0.34, if `source` has one.
fn drop_legacy_function(source: pg_sys::Oid) -> Result<(), PgTrickleError> {
    let func = format!("{}()", capture_function_name(source));
    let has_func = Spi::get_one::<bool>(&format!(
        "SELECT to_regprocedure({}) IS NOT NULL",
        quote_literal(&func)
    ))?
    .unwrap_or(false);
    if has_func {
        Spi::run(&format!("DROP FUNCTION {func}"))?;
    }
    Ok(())
}

/// The argument of the capture triggers of a source that has IMMEDIATE dependents: after
/// capturing, the trigger (capture.rs) maintains them.
pub(crate) const MAINTAIN_ARG: &str = "maintain";

/// Removes capture from `source` (its last dependent is gone): triggers, function, buffer.
pub fn drop_capture(source: pg_sys::Oid) -> Result<(), PgTrickleError> {
    let table = Spi::get_one::<String>(&format!(
        "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = {}",
        source.to_u32()
    ))?;
    if let Some(table) = table {
        for (name, _, _) in names::CAPTURE_TRIGGERS {
            drop_trigger(source, name, &table)?;
        }
    }
    drop_legacy_function(source)?;
    let buffer = buffer_name(source);
    let has_buffer = buffer_exists(source)?;
    if has_buffer {
        Spi::run(&format!("DROP TABLE {buffer}"))?;
    }
    Spi::run(&format!(
        "DELETE FROM pgtrickle.pgt_capture_columns WHERE source_relid = {}",
        source.to_u32()
    ))?;
    Ok(())
}

/// Drops trigger `name` on `source` if it is there (checked first: the NOTICE of the
/// conditional form would reach the client).
fn drop_trigger(source: pg_sys::Oid, name: &str, table: &str) -> Result<(), PgTrickleError> {
    let exists = Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = {} AND tgname = {})",
        source.to_u32(),
        quote_literal(name)
    ))?
    .unwrap_or(false);
    if exists {
        Spi::run(&format!("DROP TRIGGER {name} ON {table}"))?;
    }
    Ok(())
}

/// Deletes the buffer rows of `source` that every dependent stream table has consumed
/// (INV-3). A dependent that never refreshed consumed nothing, so nothing is deleted for it.
pub fn cleanup(source: pg_sys::Oid) -> Result<u64, PgTrickleError> {
    // Runs after refreshes and drops: kept, not re-planned.
    let stmt = crate::refresh::cache::statement(&cleanup_sql(source, "TRUE"), &[])?;
    let n = Spi::connect_mut(|client| client.update(&*stmt, None, &[])?.first().get_one::<i64>())?;
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}

/// The statement of [`cleanup`], restricted to the buffer rows (alias `b`) for which
/// `restrict` holds — a refresh passes its change window's lower bound, so that the delete
/// reads only rows it may have consumed, not every row deleted before and not yet vacuumed.
pub fn cleanup_sql(source: pg_sys::Oid, restrict: &str) -> String {
    let consumed = frontier::consumed_by_columns(
        "b.",
        "s.frontier_snapshot",
        "s.frontier_xid",
        "s.frontier_seq",
    );
    format!(
        "WITH gone AS (DELETE FROM {buffer} b WHERE ({restrict}) AND NOT EXISTS (\
           SELECT 1 FROM pgtrickle.pgt_dependencies d \
           JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) \
           WHERE d.source_relid = {oid} AND NOT {consumed}) RETURNING 1) \
         SELECT count(*) FROM gone",
        buffer = buffer_name(source),
        oid = source.to_u32()
    )
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn oid_of(table: &str) -> pg_sys::Oid {
        Spi::get_one::<pg_sys::Oid>(&format!("SELECT {}::regclass::oid", quote_literal(table)))
            .unwrap()
            .unwrap()
    }

    /// The event-trigger functions are plpgsql in the extension's SQL and spell the names of
    /// capture triggers, functions and buffers themselves: they must be the names the Rust code
    /// creates (engine/src/names.rs).
    #[pg_test]
    fn event_trigger_functions_spell_the_names_of_the_naming_module() {
        let source_of = |f: &str| {
            Spi::get_one::<String>(&format!(
                "SELECT prosrc FROM pg_proc WHERE oid = 'pgtrickle.{f}()'::regprocedure"
            ))
            .unwrap()
            .unwrap()
        };
        let drop = source_of("on_sql_drop");
        for (trigger, _, _) in names::CAPTURE_TRIGGERS {
            assert!(drop.contains(trigger), "on_sql_drop lacks {trigger}");
        }
        let ddl = source_of("on_ddl_command_end");
        for text in [&drop, &ddl] {
            assert!(text.contains(&format!("{}.", names::BUFFER_SCHEMA)));
            assert!(text.contains(&format!(
                "'{}' || src",
                names::buffer_table(0).trim_end_matches('0')
            )));
            assert!(text.contains(&format!(
                "'{}' || src",
                names::capture_function(0).trim_end_matches('0')
            )));
        }
        assert!(ddl.contains(&format!("({}) VALUES ('P')", names::BUFFER_OP)));
    }

    fn buffer_rows(source: pg_sys::Oid, cols: &str) -> Vec<String> {
        let sql = format!(
            "SELECT concat_ws('|', __pgt_op, {cols}) FROM {} ORDER BY __pgt_seq, ctid",
            buffer_name(source)
        );
        Spi::connect(|c| {
            c.select(&sql, None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect()
        })
    }

    #[pg_test]
    fn capture_records_inserts_updates_deletes_and_truncate() {
        Spi::run("CREATE TABLE \"Order Items\" (id int PRIMARY KEY, \"select\" text, w int)")
            .unwrap();
        let src = oid_of("\"Order Items\"");
        ensure_capture(src, &["id".into(), "select".into()]).unwrap();
        Spi::run("INSERT INTO \"Order Items\" VALUES (1, 'a', 10), (2, 'b', 20)").unwrap();
        Spi::run("UPDATE \"Order Items\" SET \"select\" = 'c' WHERE id = 1").unwrap();
        Spi::run("DELETE FROM \"Order Items\" WHERE id = 2").unwrap();
        Spi::run("TRUNCATE \"Order Items\"").unwrap();
        let rows = buffer_rows(src, "id, \"select\"");
        assert_eq!(rows, ["I|1|a", "I|2|b", "D|1|a", "I|1|c", "D|2|b", "T"]);
        // Only the columns dependents use are captured.
        assert_eq!(buffer_columns(src).unwrap(), ["id", "select"]);
    }

    /// One statement's rows share one sequence number and the writer's xid; a later
    /// statement's rows have a higher number (all the frontier needs). Batches larger than
    /// the trigger's reach the buffer and its index whole.
    #[pg_test]
    fn a_statement_is_numbered_once_and_written_whole() {
        Spi::run("CREATE TABLE t (id int, v text)").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["id".into(), "v".into()]).unwrap();
        Spi::run("INSERT INTO t SELECT g, g::text FROM generate_series(1, 2500) g").unwrap();
        Spi::run("UPDATE t SET v = 'x' WHERE id <= 10").unwrap();
        let buffer = buffer_name(src);
        let per_statement = Spi::connect(|c| {
            c.select(
                &format!(
                    "SELECT count(*)::int8, count(DISTINCT __pgt_op)::int8 FROM {buffer} \
                     WHERE __pgt_xid = pg_current_xact_id() GROUP BY __pgt_seq ORDER BY __pgt_seq"
                ),
                None,
                &[],
            )
            .unwrap()
            .map(|r| {
                (
                    r.get::<i64>(1).unwrap().unwrap(),
                    r.get::<i64>(2).unwrap().unwrap(),
                )
            })
            .collect::<Vec<_>>()
        });
        assert_eq!(per_statement, [(2500, 1), (20, 2)]);
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        Spi::run("SET LOCAL enable_bitmapscan = off").unwrap();
        let through_index = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM {buffer} WHERE __pgt_xid >= pg_current_xact_id()"
        ));
        assert_eq!(through_index, Ok(Some(2520)));
        let sums = Spi::get_one::<String>(&format!(
            "SELECT string_agg(o || s, ',' ORDER BY o) FROM (SELECT __pgt_op::text AS o, \
             sum(id) AS s FROM {buffer} WHERE v = id::text GROUP BY 1) AS x"
        ));
        assert_eq!(sums, Ok(Some("D55,I3126250".to_string())));
    }

    /// Values stored out of line in the source (TOAST) are copied, not referenced; NULLs stay
    /// NULL; a source column the buffer does not capture is skipped; dropped columns on
    /// either side are skipped.
    #[pg_test]
    fn capture_copies_toasted_values_and_skips_dropped_columns() {
        Spi::run("CREATE TABLE t (gone int, id int, big text, other int)").unwrap();
        Spi::run("ALTER TABLE t DROP COLUMN gone").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["big".into(), "id".into()]).unwrap();
        let buffer = buffer_name(src);
        Spi::run(&format!("ALTER TABLE {buffer} ADD COLUMN dropped int")).unwrap();
        Spi::run(&format!("ALTER TABLE {buffer} DROP COLUMN dropped")).unwrap();
        Spi::run(
            "INSERT INTO t VALUES (1, (SELECT string_agg(md5(g::text), '') FROM \
             generate_series(1, 20000) g), 5), (2, NULL, 6)",
        )
        .unwrap();
        Spi::run("DELETE FROM t WHERE id = 1").unwrap();
        let rows = Spi::connect(|c| {
            c.select(
                &format!(
                    "SELECT __pgt_op::text || id || ':' || coalesce(length(big)::text, 'null') \
                     || ':' || coalesce(md5(big), '') FROM {buffer} ORDER BY __pgt_seq, ctid"
                ),
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect::<Vec<_>>()
        });
        let md5 = Spi::get_one::<String>(
            "SELECT md5(string_agg(md5(g::text), '')) FROM generate_series(1, 20000) g",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            rows,
            [
                format!("I1:640000:{md5}"),
                "I2:null:".to_string(),
                format!("D1:640000:{md5}")
            ]
        );
    }

    /// When the buffer and its source disagree (a buffer column of another type than the
    /// source column of its name), the write still succeeds and leaves a `P` marker, which
    /// makes the dependents' next refresh FULL (INV-8).
    #[pg_test]
    fn a_buffer_out_of_line_with_its_source_leaves_a_marker_not_an_error() {
        Spi::run("CREATE TABLE t (id int, v int)").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["id".into(), "v".into()]).unwrap();
        Spi::run(&format!(
            "ALTER TABLE {} ALTER COLUMN v TYPE bigint",
            buffer_name(src)
        ))
        .unwrap();
        Spi::run("INSERT INTO t VALUES (1, 2), (3, 4)").unwrap();
        assert_eq!(buffer_rows(src, "id, v"), ["P"]);
    }

    /// Other statement triggers with transition tables read the same tuplestores: the capture
    /// reads them through a pointer of its own, whatever the firing order. A partitioned
    /// source's rows arrive in the parent's row type, whichever partition they went to.
    #[pg_test]
    fn capture_shares_transition_tables_and_reads_partitioned_sources() {
        Spi::run("CREATE TABLE p (k int, v text) PARTITION BY LIST (k)").unwrap();
        Spi::run("CREATE TABLE p1 (v text, k int)").unwrap();
        Spi::run("ALTER TABLE p ATTACH PARTITION p1 FOR VALUES IN (1)").unwrap();
        Spi::run("CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2)").unwrap();
        Spi::run("CREATE TABLE seen (n int8)").unwrap();
        Spi::run(
            "CREATE FUNCTION count_new() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN INSERT INTO seen SELECT count(*) FROM nt; RETURN NULL; END$$",
        )
        .unwrap();
        let src = oid_of("p");
        for name in ["a_first", "z_last"] {
            Spi::run(&format!(
                "CREATE TRIGGER {name} AFTER INSERT ON p REFERENCING NEW TABLE AS nt \
                 FOR EACH STATEMENT EXECUTE FUNCTION count_new()"
            ))
            .unwrap();
        }
        ensure_capture(src, &["v".into(), "k".into()]).unwrap();
        Spi::run("INSERT INTO p VALUES (1, 'a'), (2, 'b'), (1, 'c')").unwrap();
        assert_eq!(buffer_rows(src, "k, v"), ["I|1|a", "I|2|b", "I|1|c"]);
        let seen = Spi::get_one::<String>("SELECT string_agg(n::text, ',') FROM seen");
        assert_eq!(seen, Ok(Some("3,3".to_string())));
    }

    #[pg_test]
    fn new_dependent_widens_buffer_and_capture() {
        Spi::run("CREATE TABLE t (id int, v text, w int)").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["id".into()]).unwrap();
        ensure_capture(src, &["w".into(), "id".into()]).unwrap();
        Spi::run("INSERT INTO t VALUES (1, 'x', 7)").unwrap();
        assert_eq!(buffer_columns(src).unwrap(), ["id", "w"]);
        assert_eq!(buffer_rows(src, "id, w"), ["I|1|7"]);
    }

    #[pg_test]
    fn unknown_column_is_refused_with_42703() {
        Spi::run("CREATE TABLE t (id int)").unwrap();
        let err = ensure_capture(oid_of("t"), &["nope".into()]).unwrap_err();
        assert_eq!(err.sqlstate(), "42703");
    }

    #[pg_test]
    fn paused_capture_leaves_one_marker_per_statement() {
        Spi::run("CREATE TABLE t (id int)").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["id".into()]).unwrap();
        Spi::run("SET LOCAL pg_trickle.cdc_paused = on").unwrap();
        Spi::run("INSERT INTO t SELECT generate_series(1, 5)").unwrap();
        Spi::run("SET LOCAL pg_trickle.cdc_paused = off").unwrap();
        Spi::run("SET LOCAL pg_trickle.enabled = off").unwrap();
        Spi::run("DELETE FROM t").unwrap();
        Spi::run("SET LOCAL pg_trickle.enabled = on").unwrap();
        Spi::run("INSERT INTO t VALUES (9)").unwrap();
        assert_eq!(buffer_rows(src, "id"), ["P", "P", "I|9"]);
    }

    #[pg_test]
    fn writer_without_buffer_privileges_is_captured() {
        Spi::run("CREATE TABLE t (id int)").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["id".into()]).unwrap();
        Spi::run("CREATE ROLE pgt_writer").unwrap();
        Spi::run("GRANT INSERT ON t TO pgt_writer").unwrap();
        let public_reads = Spi::get_one::<bool>(&format!(
            "SELECT has_table_privilege('pgt_writer', {}, 'SELECT')",
            quote_literal(&buffer_name(src))
        ));
        assert_eq!(public_reads, Ok(Some(false)));
        Spi::run("SET LOCAL ROLE pgt_writer").unwrap();
        Spi::run("INSERT INTO t VALUES (3)").unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(buffer_rows(src, "id"), ["I|3"]);
    }

    /// INV-3: rows go only once every dependent consumed them; the frontier of a refresh that
    /// ran in the writing transaction covers exactly the own rows it read (INV-2).
    #[pg_test]
    fn cleanup_deletes_only_rows_every_dependent_consumed() {
        Spi::run("CREATE TABLE t (id int)").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["id".into()]).unwrap();
        Spi::run(
            "INSERT INTO pgtrickle.pgt_stream_tables \
             (pgt_relid, pgt_schema, pgt_name, defining_query, effective_mode, storage_layout) \
             VALUES (1, 'public', 'st1', 'SELECT 1', 'FULL', 'query'), \
             (2, 'public', 'st2', 'SELECT 1', 'FULL', 'query')",
        )
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO pgtrickle.pgt_dependencies SELECT pgt_id, {}, '{{id}}' \
             FROM pgtrickle.pgt_stream_tables",
            src.to_u32()
        ))
        .unwrap();
        Spi::run("INSERT INTO t SELECT generate_series(1, 3)").unwrap();
        let capture = frontier::capture_sql(&[buffer_name(src)]);
        let set_frontier = |name: &str| {
            Spi::run(&format!(
                "UPDATE pgtrickle.pgt_stream_tables SET (frontier_snapshot, frontier_xid, frontier_seq) \
                 = (SELECT a::pg_snapshot, b::xid8, c FROM (SELECT {capture}) AS f(a, b, c)) \
                 WHERE pgt_name = '{name}'"
            ))
            .unwrap();
        };
        set_frontier("st1");
        assert_eq!(cleanup(src).unwrap(), 0, "st2 has consumed nothing");
        set_frontier("st2");
        Spi::run("INSERT INTO t VALUES (4), (5)").unwrap();
        assert_eq!(
            cleanup(src).unwrap(),
            3,
            "both consumed the first three rows"
        );
        assert_eq!(buffer_rows(src, "id"), ["I|4", "I|5"]);
    }

    #[pg_test]
    fn drop_capture_removes_triggers_function_and_buffer() {
        Spi::run("CREATE TABLE t (id int)").unwrap();
        let src = oid_of("t");
        ensure_capture(src, &["id".into()]).unwrap();
        drop_capture(src).unwrap();
        let triggers = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = {} AND tgname LIKE '__pgt_capture%'",
            src.to_u32()
        ));
        assert_eq!(triggers, Ok(Some(0)));
        let buffer = Spi::get_one::<bool>(&format!(
            "SELECT to_regclass({}) IS NULL",
            quote_literal(&buffer_name(src))
        ));
        assert_eq!(buffer, Ok(Some(true)));
        Spi::run("INSERT INTO t VALUES (1)").unwrap();
    }
}
