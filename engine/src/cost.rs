//! AUTO's choice between a DIFFERENTIAL and a FULL refresh, made before each refresh from the
//! pending change volume and the stream table's own measured refreshes (no planner costs:
//! they do not know the change buffers' windows, and a refresh's real cost depends on plans,
//! caches and indexes no estimate sees).
//!
//! Rule, for `n` pending changes (buffer rows in the window, over every source):
//! - with a DIFFERENTIAL refresh of a similar volume (within a factor of two of `n`) and a FULL
//!   refresh in its history, it compares them: DIFFERENTIAL costs `n` times the median cost
//!   per change of those refreshes (at most [`SAMPLES`]), FULL the median duration of the
//!   latest FULL refreshes; the cheaper one runs;
//! - otherwise (a volume it has not measured: per-change costs fall as volumes grow, so no
//!   extrapolation is trusted) the share of changes decides: FULL when `n` exceeds `ratio`
//!   (pg_trickle.auto_full_change_ratio) of the sources' rows and is at least
//!   [`MIN_FULL_CHANGES`], DIFFERENTIAL below — whose run then measures that volume for the
//!   next refreshes. An unknown source size never decides.
//!
//! A stream table whose mode is DIFFERENTIAL keeps it (it was asked for); the same estimate is
//! reported with it.

/// Fewer pending changes than this never make the share of changes choose FULL.
pub const MIN_FULL_CHANGES: i64 = 1_000;

/// `pg_trickle.auto_full_change_ratio`'s default.
pub const DEFAULT_RATIO: f64 = 0.5;

/// How many of the latest refreshes of each kind an estimate reads.
pub const SAMPLES: usize = 5;

/// A DIFFERENTIAL sample needs at least this many changes: below, fixed costs dominate and
/// say nothing about the cost per change.
pub const MIN_SAMPLE_CHANGES: i64 = 50;

/// One measured DIFFERENTIAL refresh: how many changes it consumed and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffSample {
    pub changes: i64,
    pub ms: f64,
}

/// What an estimate is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct CostInput {
    /// Pending changes (buffer rows of the change window, all sources).
    pub changes: i64,
    /// Rows of the sources (statistics: the larger of `reltuples` and the live-tuple count).
    pub source_rows: f64,
    /// Durations of the latest FULL refreshes, newest first, in milliseconds.
    pub full_ms: Vec<f64>,
    /// The latest DIFFERENTIAL refreshes with at least [`MIN_SAMPLE_CHANGES`] changes, newest
    /// first.
    pub diff: Vec<DiffSample>,
    /// `pg_trickle.auto_full_change_ratio`.
    pub ratio: f64,
}

/// The estimate and the mode it prefers.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub full_ms: Option<f64>,
    pub diff_ms: Option<f64>,
    pub full: bool,
    /// Why, in the history's words.
    pub why: String,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if !v.len().is_multiple_of(2) {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The DIFFERENTIAL cost per change for a window of `n` changes: the median over the latest
/// samples within a factor of two of `n` (see the module comment), with the newest one's
/// volume; `None` without such a sample.
fn per_change(samples: &[DiffSample], n: i64) -> Option<(f64, i64)> {
    let near: Vec<&DiffSample> = samples
        .iter()
        .filter(|s| s.changes >= MIN_SAMPLE_CHANGES && s.ms >= 0.0)
        .filter(|s| s.changes.saturating_mul(2) >= n && s.changes <= n.saturating_mul(2))
        .take(SAMPLES)
        .collect();
    let volume = near.first()?.changes;
    #[allow(clippy::cast_precision_loss)]
    median(near.iter().map(|s| s.ms / s.changes as f64).collect()).map(|c| (c, volume))
}

/// Formats a count with thousands separators (`12,345`).
fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Estimates both modes for `input` and says which one AUTO runs.
pub fn estimate(input: &CostInput) -> Estimate {
    let n = input.changes.max(0);
    #[allow(clippy::cast_precision_loss)]
    let share = if input.source_rows > 0.0 {
        n as f64 / input.source_rows
    } else {
        f64::INFINITY
    };
    let volume = format!(
        "{} changes{}",
        count(n),
        if share.is_finite() {
            #[allow(clippy::cast_possible_truncation)]
            let rows = input.source_rows.round() as i64;
            format!(" ({:.2} % of {} source rows)", share * 100.0, count(rows))
        } else {
            " (source size unknown)".to_string()
        }
    );
    let full_ms = median(input.full_ms.iter().copied().take(SAMPLES).collect());
    #[allow(clippy::cast_precision_loss)]
    let diff = per_change(&input.diff, n).map(|(c, v)| (c * n as f64, v));
    match (full_ms, diff) {
        (Some(f), Some((d, at))) => {
            let full = d > f;
            Estimate {
                full_ms: Some(f),
                diff_ms: Some(d),
                full,
                why: format!(
                    "{volume}: DIFFERENTIAL estimated {d:.1} ms (cost per change measured at {} \
                     changes), FULL {f:.1} ms (latest FULL refreshes)",
                    count(at)
                ),
            }
        }
        (f, _) => {
            let full = share.is_finite() && share > input.ratio && n >= MIN_FULL_CHANGES;
            Estimate {
                full_ms: f,
                diff_ms: None,
                full,
                why: format!(
                    "{volume}: no {} to compare, so the share of changes decides \
                     (pg_trickle.auto_full_change_ratio = {}, from {} changes)",
                    if f.is_none() {
                        "FULL refresh"
                    } else {
                        "DIFFERENTIAL refresh of a similar volume"
                    },
                    input.ratio,
                    count(MIN_FULL_CHANGES)
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(changes: i64, full: &[f64], diff: &[(i64, f64)]) -> CostInput {
        CostInput {
            changes,
            source_rows: 100_000.0,
            full_ms: full.to_vec(),
            diff: diff
                .iter()
                .map(|(c, ms)| DiffSample {
                    changes: *c,
                    ms: *ms,
                })
                .collect(),
            ratio: 0.1,
        }
    }

    #[test]
    fn without_a_similar_volume_the_share_of_changes_decides() {
        assert!(!estimate(&input(5_000, &[], &[])).full);
        assert!(estimate(&input(20_000, &[], &[])).full);
        // A small window never, whatever its share.
        let small = CostInput {
            source_rows: 100.0,
            ..input(900, &[], &[])
        };
        assert!(!estimate(&small).full);
        // A FULL sample alone does not decide either, nor samples of other volumes.
        let e = estimate(&input(20_000, &[30.0], &[(1_000, 5.0)]));
        assert!(e.full);
        assert_eq!(e.diff_ms, None);
        assert!(
            e.why
                .contains("no DIFFERENTIAL refresh of a similar volume"),
            "{}",
            e.why
        );
        assert!(e
            .why
            .contains("20,000 changes (20.00 % of 100,000 source rows)"));
        let e = estimate(&input(5_000, &[3.0], &[(1_000, 50.0)]));
        assert!(
            !e.full,
            "below the ratio an unmeasured volume is tried: {e:?}"
        );
        // Unknown source size: FULL only through the comparison.
        let unknown = CostInput {
            source_rows: 0.0,
            ..input(10_000, &[], &[])
        };
        assert!(!estimate(&unknown).full);
        assert!(estimate(&unknown).why.contains("source size unknown"));
        let unknown = CostInput {
            source_rows: 0.0,
            ..input(10_000, &[4.0], &[(10_000, 40.0)])
        };
        assert!(estimate(&unknown).full);
    }

    #[test]
    fn measured_costs_decide_at_a_similar_volume() {
        // 5 µs per change at about 1,000 changes, FULL 40 ms.
        let history = [(1_000, 5.0), (1_100, 5.5), (900, 4.5)];
        let e = estimate(&input(2_000, &[40.0, 38.0, 42.0], &history));
        assert!(!e.full, "{e:?}");
        assert_eq!(e.diff_ms, Some(10.0));
        assert_eq!(e.full_ms, Some(40.0));
        // Above the ratio but measured cheaper: DIFFERENTIAL.
        let e = estimate(&input(20_000, &[400.0], &[(20_000, 100.0)]));
        assert!(!e.full, "{e:?}");
        // Below the ratio but measured dearer: FULL.
        let e = estimate(&input(1_000, &[4.0], &[(1_000, 50.0)]));
        assert!(e.full, "{e:?}");
        assert!(e.why.contains("cost per change measured at 1,000 changes"));
    }

    #[test]
    fn only_samples_of_a_similar_volume_count() {
        // Small windows cost more per change (fixed costs): only the 10,000-change sample
        // tells what 12,000 changes cost.
        let history = [(100, 2.0), (10_000, 30.0), (1_000, 8.0)];
        let e = estimate(&input(12_000, &[40.0], &history));
        assert_eq!(e.diff_ms, Some(36.0));
        assert!(!e.full);
        // Samples below MIN_SAMPLE_CHANGES are ignored.
        let e = estimate(&input(60, &[40.0], &[(40, 100.0)]));
        assert_eq!(e.diff_ms, None);
    }

    #[test]
    fn the_median_resists_one_slow_refresh() {
        let e = estimate(&input(
            1_000,
            &[40.0, 4_000.0, 41.0],
            &[(1_000, 10.0), (1_000, 900.0), (1_000, 11.0)],
        ));
        assert_eq!(e.full_ms, Some(41.0));
        assert_eq!(e.diff_ms, Some(11.0));
        assert!(!e.full);
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
