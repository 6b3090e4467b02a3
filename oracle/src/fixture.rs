//! Regression fixtures: replayable SQL scripts of counterexamples under `oracle/regressions/`.
//! A fixture is plain SQL, one statement per line (or several lines ending in `;`), run in an
//! empty database of a server that preloads pg_trickle; its checks raise `oracle: …` when
//! INV-1 does not hold, so a fixture passes exactly when the bug is absent. Fixtures of bugs
//! not yet fixed live in `open/` and are not part of the default rerun; a fixed one moves up
//! a directory and must pass from then on.

use std::fs;
use std::path::{Path, PathBuf};

use crate::exec::{describe, fresh_database};
use crate::run::Counterexample;

/// The database fixtures are replayed in.
pub const REPLAY_DB: &str = "pgt_oracle_replay";

/// The statements of a fixture: comments and blank lines dropped, lines joined until one
/// ends with `;`.
pub fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with("--")) {
            continue;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        if trimmed.ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// Runs `script` (one statement per entry) in a fresh database; the first error, if any.
pub fn replay_script(admin_url: &str, script: &[String]) -> Result<(), String> {
    let mut db = fresh_database(admin_url, REPLAY_DB)?;
    for (i, sql) in script.iter().enumerate() {
        if sql.trim_start().starts_with("--") {
            continue;
        }
        db.batch_execute(sql)
            .map_err(|e| format!("statement {}: {}", i + 1, describe(&e)))?;
    }
    Ok(())
}

/// Replays the fixture at `path`.
pub fn replay_file(admin_url: &str, path: &Path) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    replay_script(admin_url, &statements(&text))
}

/// The `*.sql` fixtures directly in `dir`, sorted.
pub fn fixtures_in(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

/// The header comments of the fixture of `cx`.
pub fn header(cx: &Counterexample) -> Vec<String> {
    let f = &cx.failure;
    let mut out = vec![
        format!(
            "-- pg_trickle oracle fixture: group {}, {} {:?}",
            cx.group,
            f.family.unwrap_or("-"),
            f.kind
        ),
        "-- status: OPEN (fails until the bug is fixed; not in the default rerun). When fixed, \
         move it from oracle/regressions/open/ to oracle/regressions/: ci/test reruns those \
         and they must pass."
            .into(),
        format!(
            "-- found by: ci/oracle --seed {} --case {}; {} from {} to {} steps",
            cx.seed,
            cx.case,
            if cx.shrunk { "shrunk" } else { "not shrunk" },
            cx.original_steps,
            cx.steps.len()
        ),
        format!("-- failure: {}", one_comment_line(&f.message)),
        match cx.replayed {
            Some(true) => "-- replayed in a fresh database: fails the same way".into(),
            Some(false) => {
                "-- replayed in a fresh database: did NOT fail (not deterministic?)".into()
            }
            None => "-- not replayed".into(),
        },
        "-- replay: ci/oracle --replay <this file>, or psql -v ON_ERROR_STOP=1 -f <this file> in \
         an empty database of a server that preloads pg_trickle"
            .into(),
        "-- steps:".into(),
    ];
    out.extend(
        cx.steps
            .iter()
            .map(|s| format!("--   {}", one_comment_line(&format!("{s:?}")))),
    );
    out
}

fn one_comment_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// Writes the fixture of `cx` under `<dir>/open/` and returns its path.
pub fn write_open(dir: &Path, cx: &Counterexample) -> std::io::Result<PathBuf> {
    let what = cx.failure.family.unwrap_or("case");
    let name = format!("{}-{what}-s{}-c{}", cx.group, cx.seed, cx.case);
    write_named(dir, &name, &header(cx), &cx.failure.script)
}

/// Writes `<dir>/open/<name>.sql`: the header comments, then the script.
pub fn write_named(
    dir: &Path,
    name: &str,
    header: &[String],
    script: &[String],
) -> std::io::Result<PathBuf> {
    let open = dir.join("open");
    fs::create_dir_all(&open)?;
    let path = open.join(format!("{name}.sql"));
    let mut text = header.join("\n");
    text.push('\n');
    for line in script {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_skip_comments_and_join_lines_until_a_semicolon() {
        let text = "-- header\n\nSELECT 1;\nSELECT\n  2;\n-- note\nDO $x$ BEGIN END $x$;\n";
        assert_eq!(
            statements(text),
            ["SELECT 1;", "SELECT\n  2;", "DO $x$ BEGIN END $x$;"]
        );
    }

    #[test]
    fn fixtures_in_a_missing_directory_are_none() {
        assert!(fixtures_in(Path::new("/nonexistent/oracle/regressions")).is_empty());
    }
}
