//! Schedules: when a project's next scheduled build is due.
//!
//! A schedule is `"daily HH:MM"` or a five-field cron expression (minute hour day-of-month month
//! day-of-week, with names, ranges, lists and steps), read in the project's time zone (an IANA
//! name) or the master's. Daylight-saving changes follow Vixie cron, as users of cron expect:
//! - a time that does not exist (skipped by a spring-forward change) runs right after the change;
//! - a time that occurs twice (a fall-back change) runs once, at its first occurrence.
//!
//! Evaluation is a pure function of the schedule and a time, so tests drive it with any clock.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;

#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    pub text: String,
}

/// The longest a search looks ahead (a schedule like "0 0 29 2 *" fires every four years).
const HORIZON_DAYS: i64 = 4 * 366 + 1;

pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("time zone '{name}' is not an IANA time zone name (like Europe/Berlin or UTC)")
    })
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        let pattern = if let Some(hm) = t.strip_prefix("daily ") {
            let (h, m) = hm.trim().split_once(':').ok_or_else(|| {
                format!("schedule '{t}': write the time as HH:MM, like \"daily 02:30\"")
            })?;
            let (h, m): (u32, u32) = match (h.parse(), m.parse()) {
                (Ok(h), Ok(m)) if h < 24 && m < 60 && m_len_ok(hm) => (h, m),
                _ => {
                    return Err(format!(
                        "schedule '{t}': '{}' is not a time of day (00:00 to 23:59)",
                        hm.trim()
                    ))
                }
            };
            format!("{m} {h} * * *")
        } else {
            let fields = t.split_whitespace().count();
            if fields != 5 {
                return Err(format!(
                    "schedule '{t}' has {fields} fields; use \"daily HH:MM\" or five cron fields (minute hour day-of-month month day-of-week)"
                ));
            }
            t.to_string()
        };
        let cron = Cron::from_str(&pattern)
            .map_err(|e| format!("schedule '{t}' is not a valid cron expression: {e}"))?;
        Ok(Schedule {
            cron,
            text: t.to_string(),
        })
    }

    fn matches(&self, local: NaiveDateTime) -> bool {
        // Matching is on the wall clock; UTC carries it without any offset games.
        self.cron
            .is_time_matching(&Utc.from_utc_datetime(&local))
            .unwrap_or(false)
    }

    /// The first run strictly after `after`, in UTC.
    pub fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(after)
            + Duration::minutes(1);
        let mut prev_local = (start - Duration::minutes(1))
            .with_timezone(&tz)
            .naive_local();
        let mut t = start;
        let end = start + Duration::days(HORIZON_DAYS);
        while t < end {
            let local = t.with_timezone(&tz).naive_local();
            let step = local - prev_local;
            if step > Duration::minutes(1) {
                // Spring forward: wall-clock minutes that never happened run now.
                let mut skipped = prev_local + Duration::minutes(1);
                while skipped < local {
                    if self.matches(skipped) {
                        return Some(t);
                    }
                    skipped += Duration::minutes(1);
                }
            }
            if self.matches(local) && !second_occurrence(tz, local, t) {
                return Some(t);
            }
            prev_local = local;
            t += Duration::minutes(1);
        }
        None
    }
}

fn m_len_ok(hm: &str) -> bool {
    hm.trim().split_once(':').is_some_and(|(_, m)| m.len() == 2)
}

/// Whether `utc` is the later of two instants showing the same wall-clock time `local`.
fn second_occurrence(tz: Tz, local: NaiveDateTime, utc: DateTime<Utc>) -> bool {
    match tz.from_local_datetime(&local) {
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc) != utc,
        _ => false,
    }
}

/// The master's default time zone: `master.timezone`, else the machine's (`TZ`, /etc/timezone,
/// /etc/localtime), else UTC.
pub fn default_timezone(cfg: &kiln_shared::config::Config) -> anyhow::Result<chrono_tz::Tz> {
    if let Some(name) = &cfg.master.timezone {
        return parse_timezone(name)
            .map_err(|m| anyhow::anyhow!("config key master.timezone: {m}"));
    }
    let from_machine = std::env::var("TZ")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/timezone").ok())
        .or_else(|| {
            std::fs::read_link("/etc/localtime").ok().and_then(|p| {
                let s = p.to_string_lossy().into_owned();
                s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
            })
        });
    Ok(from_machine
        .and_then(|z| parse_timezone(z.trim().trim_start_matches(':')).ok())
        .unwrap_or(chrono_tz::UTC))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn berlin() -> Tz {
        parse_timezone("Europe/Berlin").unwrap()
    }

    #[test]
    fn daily_in_a_time_zone() {
        let s = Schedule::parse("daily 02:30").unwrap();
        // 2026-01-10 is winter in Berlin: UTC+1.
        let next = s.next_after(berlin(), utc("2026-01-10T00:00:00Z")).unwrap();
        assert_eq!(next, utc("2026-01-10T01:30:00Z"));
        // Strictly after: asking at the run time gives the next day.
        assert_eq!(
            s.next_after(berlin(), next).unwrap(),
            utc("2026-01-11T01:30:00Z")
        );
    }

    #[test]
    fn spring_forward_runs_the_missing_time_right_after_the_change() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
        let s = Schedule::parse("daily 02:30").unwrap();
        let next = s.next_after(berlin(), utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            next,
            utc("2026-03-29T01:00:00Z"),
            "03:00 CEST, right after the change"
        );
        // And the day after, back to 02:30 CEST.
        assert_eq!(
            s.next_after(berlin(), next).unwrap(),
            utc("2026-03-30T00:30:00Z")
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once() {
        // 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let first = s.next_after(berlin(), utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"), "02:30 CEST");
        let second = s.next_after(berlin(), first).unwrap();
        assert_eq!(
            second,
            utc("2026-10-26T01:30:00Z"),
            "not again at 02:30 CET, but the next day"
        );
    }

    #[test]
    fn hourly_cron_across_fall_back_skips_the_repeated_wall_clock_hour() {
        // 00:00Z = 02:00 CEST, 01:00Z = 02:00 CET (a repeat of 02:00), 02:00Z = 03:00 CET.
        let s = Schedule::parse("0 * * * *").unwrap();
        let mut t = utc("2026-10-24T23:30:00Z");
        let mut runs = vec![];
        for _ in 0..4 {
            t = s.next_after(berlin(), t).unwrap();
            runs.push(t);
        }
        let want: Vec<_> = [
            "2026-10-25T00:00:00Z",
            "2026-10-25T02:00:00Z",
            "2026-10-25T03:00:00Z",
            "2026-10-25T04:00:00Z",
        ]
        .into_iter()
        .map(utc)
        .collect();
        assert_eq!(runs, want);
    }

    #[test]
    fn cron_fields_and_names() {
        let s = Schedule::parse("15 4 * * mon-fri").unwrap();
        // 2026-11-28 is a Saturday; next is Monday 30th, 04:15 UTC.
        let next = s
            .next_after(chrono_tz::UTC, utc("2026-11-28T00:00:00Z"))
            .unwrap();
        assert_eq!(next, utc("2026-11-30T04:15:00Z"));
    }

    #[test]
    fn bad_schedules_say_why() {
        for (text, says) in [
            ("daily 25:00", "not a time of day"),
            ("daily 2:3", "not a time of day"),
            ("daily noon", "HH:MM"),
            ("* * *", "has 3 fields"),
            ("61 * * * *", "not a valid cron expression"),
            ("", "has 0 fields"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(parse_timezone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
