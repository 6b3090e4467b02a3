//! Refresh schedules: `'calculated'` (refresh when a source has changes, checked every
//! `pg_trickle.default_schedule_seconds`), a duration (`'30s'`, `'5m'`, `'1h30m'`, `'2d'`), or
//! a cron expression in UTC (5 fields `min hour dom month dow`, 6 fields with seconds first, or
//! `@hourly`-style shorthands). Parsing happens at create/alter time so bad input is refused
//! there (22023); the scheduler asks `is_due`. Pure code, unit-tested without a server.

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchedule(pub String);

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Calculated,
    Every { seconds: u64 },
    Cron(Cron),
}

/// A cron expression as the set of allowed values per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// `None` for 5-field expressions (fires at second 0).
    seconds: Option<Vec<bool>>,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Accepts a schedule or says why not.
pub fn validate(schedule: &str) -> Result<(), InvalidSchedule> {
    parse(schedule).map(|_| ())
}

/// Parses a schedule.
pub fn parse(schedule: &str) -> Result<Schedule, InvalidSchedule> {
    let s = schedule.trim();
    let bad = || InvalidSchedule(schedule.to_string());
    if s.eq_ignore_ascii_case("calculated") {
        return Ok(Schedule::Calculated);
    }
    if let Some(seconds) = duration_seconds(s) {
        return Ok(Schedule::Every { seconds });
    }
    let expanded = match s {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match fields.len() {
        5 => (None, &fields[..]),
        6 => (Some(fields[0]), &fields[1..]),
        _ => return Err(bad()),
    };
    let field = |text: &str, lo: u32, hi: u32, names: &[&str]| {
        parse_field(text, lo, hi, names).ok_or_else(bad)
    };
    const MONTHS: &[&str] = &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let seconds = match sec {
        Some(t) => Some(field(t, 0, 59, &[])?),
        None => None,
    };
    let mut weekdays = field(rest[4], 0, 7, DAYS)?;
    if weekdays[7] {
        weekdays[0] = true; // 7 is Sunday too
    }
    weekdays.truncate(7);
    let cron = Cron {
        seconds,
        minutes: field(rest[0], 0, 59, &[])?,
        hours: field(rest[1], 0, 23, &[])?,
        days: field(rest[2], 1, 31, &[])?,
        months: field(rest[3], 1, 12, MONTHS)?,
        weekdays,
        days_restricted: rest[2] != "*",
        weekdays_restricted: rest[4] != "*",
    };
    // An expression that never fires ('0 0 31 2 *', say) would leave the stream table
    // unrefreshed for ever without a word.
    if !cron.ever_fires() {
        return Err(bad());
    }
    Ok(Schedule::Cron(cron))
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

/// One field: `*`, `a`, `a-b`, with `/step`, comma-separated; names allowed where given.
/// Returns a table indexed by value (`hi + 1` entries).
fn parse_field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Option<Vec<bool>> {
    let value = |t: &str| -> Option<u32> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(t)) {
            return u32::try_from(i)
                .ok()
                .map(|i| if lo == 1 { i + 1 } else { i });
        }
        let v: u32 = t.parse().ok()?;
        (lo..=hi).contains(&v).then_some(v)
    };
    let mut set = vec![false; usize::try_from(hi).ok()? + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0)?),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { hi } else { v })
        };
        if a > b {
            return None;
        }
        let mut v = a;
        while v <= b {
            set[usize::try_from(v).ok()?] = true;
            v += step;
        }
    }
    Some(set)
}

/// Civil date (year, month 1-12, day 1-31) and weekday (0 = Sunday) of a day count since
/// 1970-01-01 (proleptic Gregorian calendar).
fn civil(days: i64) -> (i64, u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as u32;
    (year, month, day, weekday)
}

impl Cron {
    /// Whether some day matches: every combination of month, day of month and weekday occurs
    /// within eight years (1970–1977 holds a 29 February).
    fn ever_fires(&self) -> bool {
        (0..8 * 366).any(|day| self.day_matches(day))
    }

    fn day_matches(&self, days: i64) -> bool {
        let (_, month, day, weekday) = civil(days);
        if !self.months[month as usize] {
            return false;
        }
        let (d, w) = (self.days[day as usize], self.weekdays[weekday as usize]);
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => d || w,
            (true, false) => d,
            (false, true) => w,
            (false, false) => true,
        }
    }

    /// Whether the expression fires at some second in `(after, until]` (Unix seconds, UTC).
    #[cfg(test)]
    pub fn fires_between(&self, after: i64, until: i64) -> bool {
        self.next_fire(after).is_some_and(|t| t <= until)
    }

    /// The first second after `after` at which the expression fires (Unix seconds, UTC),
    /// looking at most 400 days ahead (every valid expression fires within 8 years; the
    /// scheduler asks again once that horizon passes).
    pub fn next_fire(&self, after: i64) -> Option<i64> {
        let start = after + 1;
        let horizon = start + 400 * 86_400;
        let mut day = start.div_euclid(86_400);
        while day * 86_400 <= horizon {
            if self.day_matches(day) {
                for hour in 0..24i64 {
                    if !self.hours[hour as usize] {
                        continue;
                    }
                    for minute in 0..60i64 {
                        if !self.minutes[minute as usize] {
                            continue;
                        }
                        let base = day * 86_400 + hour * 3_600 + minute * 60;
                        if base + 59 < start {
                            continue;
                        }
                        let hit = match &self.seconds {
                            None => (base >= start).then_some(base),
                            Some(secs) => (0..60i64)
                                .map(|s| base + s)
                                .find(|t| *t >= start && secs[(t - base) as usize]),
                        };
                        if hit.is_some() {
                            return hit;
                        }
                    }
                }
            }
            day += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(s: &str) -> Cron {
        match parse(s) {
            Ok(Schedule::Cron(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

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
            "0 0 * JAN-MAR 7",
            "0 0 29 2 *",
            "0 0 31 2 MON",
        ] {
            assert_eq!(validate(s), Ok(()), "{s}");
        }
        assert_eq!(parse("1h30m"), Ok(Schedule::Every { seconds: 5400 }));
        assert_eq!(parse("calculated"), Ok(Schedule::Calculated));
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
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "5-1 * * * *",
            "*/0 * * * *",
            "* * * * FUNDAY",
            "0 0 31 2 *",
            "0 0 30,31 2 *",
            "0 0 31 4,6,9,11 *",
        ] {
            assert!(validate(s).is_err(), "{s}");
        }
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil(0), (1970, 1, 1, 4)); // a Thursday
        assert_eq!(civil(20_773), (2026, 11, 16, 1)); // a Monday
        assert_eq!(civil(11_016), (2000, 2, 29, 2));
    }

    #[test]
    fn cron_fires_exactly_at_matching_minutes() {
        let t0 = 20_773 * 86_400; // 2026-11-16 00:00:00 UTC, a Monday
        let every5 = cron("*/5 * * * *");
        assert!(every5.fires_between(t0, t0 + 300));
        assert!(!every5.fires_between(t0, t0 + 299));
        assert!(every5.fires_between(t0 - 1, t0));
        let weekdays_9am = cron("0 9 * * 1-5");
        assert!(weekdays_9am.fires_between(t0, t0 + 9 * 3600));
        // Saturday 2026-11-21 09:00 does not fire; Monday 2026-11-23 does.
        let sat = t0 + 5 * 86_400;
        assert!(!weekdays_9am.fires_between(sat, sat + 86_400));
        assert!(weekdays_9am.fires_between(sat, sat + 2 * 86_400 + 9 * 3600));
        let secs = cron("30 * * * * *");
        assert!(secs.fires_between(t0, t0 + 30));
        assert!(!secs.fires_between(t0, t0 + 29));
        assert!(cron("@yearly").fires_between(t0, t0 + 60 * 86_400));
        assert_eq!(every5.next_fire(t0 - 1), Some(t0));
        assert_eq!(every5.next_fire(t0), Some(t0 + 300));
        assert_eq!(secs.next_fire(t0), Some(t0 + 30));
        assert_eq!(
            cron("0 0 29 2 *").next_fire(t0),
            None,
            "beyond the 400-day horizon"
        );
    }

    #[test]
    fn day_of_month_or_weekday_when_both_restricted() {
        // The 1st of the month or any Monday (cron's OR rule).
        let c = cron("0 0 1 * MON");
        let t0 = 20_773 * 86_400; // Monday 16th
        assert!(c.fires_between(t0 - 1, t0));
        assert!(!c.fires_between(t0, t0 + 6 * 86_400));
    }
}
