//! Validation of refresh schedules: `'calculated'`, a duration (`'30s'`, `'5m'`, `'1h30m'`,
//! `'2d'`), or a cron expression (5 or 6 fields, or `@hourly`-style shorthands). The scheduler
//! interprets them; this module only decides what is accepted, so bad input is refused when a
//! stream table is created or altered (22023).

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchedule(pub String);

const CRON_SHORTHANDS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Accepts a schedule or says why not.
pub fn validate(schedule: &str) -> Result<(), InvalidSchedule> {
    let s = schedule.trim();
    if s.eq_ignore_ascii_case("calculated") || CRON_SHORTHANDS.contains(&s) {
        return Ok(());
    }
    if duration_seconds(s).is_some() {
        return Ok(());
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if (fields.len() == 5 || fields.len() == 6) && fields.iter().all(|f| cron_field_ok(f)) {
        return Ok(());
    }
    Err(InvalidSchedule(schedule.to_string()))
}

/// Seconds in a duration like `1h30m` (units d, h, m, s; at least one part; total > 0).
pub fn duration_seconds(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut parts = 0;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        parts += 1;
    }
    (digits.is_empty() && parts > 0 && total > 0).then_some(total)
}

fn cron_field_ok(field: &str) -> bool {
    !field.is_empty()
        && field.split(',').all(|part| {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            let step_ok =
                step.is_none_or(|st| !st.is_empty() && st.chars().all(|c| c.is_ascii_digit()));
            let range_ok = range == "*"
                || range
                    .split('-')
                    .all(|x| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric()))
                    && range.split('-').count() <= 2;
            step_ok && range_ok
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_cron_and_calculated_are_accepted() {
        for s in [
            "calculated",
            "30s",
            "5m",
            "1h30m",
            "2d",
            "*/5 * * * *",
            "0 0 * * 1-5",
            "0 */2 * * * *",
            "@hourly",
            "15 3 1,15 * MON",
        ] {
            assert_eq!(validate(s), Ok(()), "{s}");
        }
        assert_eq!(duration_seconds("1h30m"), Some(5400));
    }

    #[test]
    fn malformed_schedules_are_refused() {
        for s in [
            "",
            "0s",
            "5x",
            "m5",
            "1h 30m",
            "* * *",
            "* * * * * * *",
            "@often",
            "5m-",
            "*/ * * * *",
        ] {
            assert!(validate(s).is_err(), "{s}");
        }
    }
}
