//! When `sluice serve` runs a source, as its config writes it: `schedule` (`"continuous"`,
//! `"hourly"`, `"daily"` or a cron pattern) or `trigger = "arrival"` (files: poll for new files
//! every `poll_interval_secs`).
//!
//! Cron patterns have five fields (minute hour day-of-month month day-of-week) or six with
//! seconds first, and run in UTC unless prefixed with a zone: `"CRON_TZ=Europe/Berlin 0 2 * * *"`
//! (the prefix Kubernetes and cronie read). A tick that falls in a daylight-saving gap does not
//! happen that day; one in an overlap happens once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// How a source runs under `sluice serve`.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Change streams stay open, loading as they commit (the default for CDC).
    Continuous,
    /// A pass at each tick of a cron pattern, in a time zone.
    Cron {
        cron: Box<croner::Cron>,
        zone: Tz,
        /// As written, for logs and status.
        text: String,
    },
    /// A pass every `every`: a files source's folder is listed and new files land.
    Arrival { every: Duration },
}

impl Schedule {
    /// A `schedule` value; Err says what is wrong with it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        let pattern = match t {
            "continuous" => return Ok(Schedule::Continuous),
            "hourly" => "0 * * * *",
            "daily" => "0 0 * * *",
            other => other,
        };
        let (zone, pattern) = match pattern.strip_prefix("CRON_TZ=") {
            Some(rest) => {
                let (name, pattern) = rest
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("`{t}`: a cron pattern must follow the zone"))?;
                let zone: Tz = name.parse().map_err(|_| {
                    format!("`{name}` is not a time zone (use an IANA name such as Europe/Berlin)")
                })?;
                (zone, pattern.trim())
            }
            None => (Tz::UTC, pattern),
        };
        let fields = pattern.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "`{t}` is neither \"continuous\", \"hourly\", \"daily\" nor a cron pattern of 5 fields (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron: croner::Cron = pattern
            .parse()
            .map_err(|e| format!("`{t}` is not a cron pattern: {e}"))?;
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            zone,
            text: t.to_string(),
        })
    }

    /// The first tick strictly after `t` (None: continuous, or a pattern that never fires
    /// again).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Continuous => None,
            Schedule::Arrival { every } => Some(t + chrono::Duration::from_std(*every).ok()?),
            Schedule::Cron { cron, zone, .. } => cron
                .find_next_occurrence(&t.with_timezone(zone), false)
                .ok()
                .map(|n| n.with_timezone(&Utc)),
        }
    }

    /// How the schedule reads in logs and status.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Continuous => "continuous".into(),
            Schedule::Arrival { every } => format!("on arrival (every {} s)", every.as_secs()),
            Schedule::Cron { text, .. } => text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn words_and_patterns_tick_when_they_say() {
        let hourly = Schedule::parse("hourly").unwrap();
        assert_eq!(
            hourly.next_after(at("2026-03-01T10:00:00Z")),
            Some(at("2026-03-01T11:00:00Z"))
        );
        let daily = Schedule::parse("daily").unwrap();
        assert_eq!(
            daily.next_after(at("2026-03-01T10:00:00Z")),
            Some(at("2026-03-02T00:00:00Z"))
        );
        let seconds = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            seconds.next_after(at("2026-03-01T10:00:01Z")),
            Some(at("2026-03-01T10:00:02Z"))
        );
        // 02:00 in Berlin is 01:00 UTC in winter, 00:00 UTC in summer.
        let berlin = Schedule::parse("CRON_TZ=Europe/Berlin 0 2 * * *").unwrap();
        assert_eq!(
            berlin.next_after(at("2026-01-10T12:00:00Z")),
            Some(at("2026-01-11T01:00:00Z"))
        );
        assert_eq!(
            berlin.next_after(at("2026-07-10T12:00:00Z")),
            Some(at("2026-07-11T00:00:00Z"))
        );
        assert!(Schedule::parse("continuous")
            .unwrap()
            .next_after(Utc::now())
            .is_none());
        let arrival = Schedule::Arrival {
            every: Duration::from_secs(30),
        };
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            arrival.next_after(t),
            Some(t + chrono::Duration::seconds(30))
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, says) in [
            ("weekly", "neither"),
            ("0 2 * *", "neither"),
            ("61 * * * *", "not a cron pattern"),
            ("CRON_TZ=Mars/Olympus 0 2 * * *", "not a time zone"),
            ("CRON_TZ=Europe/Berlin", "must follow"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
