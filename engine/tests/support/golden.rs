//! The golden-file check shared by the golden tests: each case's rendered text must equal
//! `<dir>/<name>.sql` byte for byte; `UPDATE_GOLDEN=1` rewrites the files instead (review the
//! diff).
#![allow(clippy::unwrap_used, dead_code)]

/// Compares (or, with `UPDATE_GOLDEN` set, writes) every `(name, text)` against `dir`.
pub fn check(dir: &str, rendered: impl IntoIterator<Item = (String, String)>) {
    check_files(dir, "sql", rendered);
}

/// [`check`] against `<dir>/<name>.<extension>`.
pub fn check_files(
    dir: &str,
    extension: &str,
    rendered: impl IntoIterator<Item = (String, String)>,
) {
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let mut mismatches = Vec::new();
    for (name, actual) in rendered {
        let path = format!("{dir}/{name}.{extension}");
        if update {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!("{path}:\n{actual}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to regenerate):\n{}",
        mismatches.join("\n")
    );
}
