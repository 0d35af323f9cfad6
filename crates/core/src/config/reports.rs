//! `[reports.NAME]`: a query over the lake written as a file on a schedule (`sluice serve`)
//! or on demand (`sluice report NAME`), to a path or `s3://` URL whose `{date}` and `{time}`
//! are the run's (UTC), so each run keeps its own file.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// When a report runs under `serve` unless it says otherwise.
pub const DEFAULT_REPORT_SCHEDULE: &str = "daily";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// One SELECT over the lake, as `sluice query` takes it.
    pub sql: String,
    /// Where the file goes: a path (relative to the config's folder) or `s3://bucket/key`,
    /// named `.csv`, `.json`, `.jsonl` or `.parquet`; `{date}` (2026-12-06), `{time}`
    /// (143000) and `{name}` are filled in per run.
    pub out: String,
    /// When `serve` runs it ("hourly", "daily", a cron pattern); default daily.
    pub schedule: Option<String>,
}

/// What a file's name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFile {
    Csv,
    Json,
    /// One JSON object per line.
    JsonLines,
    Parquet,
}

impl OutputFile {
    /// The format `dest`'s extension names (Err: what to name it instead).
    pub fn of(dest: &str) -> Result<OutputFile, String> {
        let name = dest.rsplit('/').next().unwrap_or(dest).to_ascii_lowercase();
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        Ok(match ext {
            "csv" => OutputFile::Csv,
            "json" => OutputFile::Json,
            "jsonl" | "ndjson" => OutputFile::JsonLines,
            "parquet" => OutputFile::Parquet,
            _ => {
                return Err(format!(
                    "`{dest}`: name the file .csv, .json, .jsonl (one object per line) or .parquet"
                ))
            }
        })
    }
}

const PLACEHOLDERS: [&str; 3] = ["{date}", "{time}", "{name}"];

impl ReportConfig {
    /// The file of the run at `at` of report `name`.
    pub fn destination(&self, name: &str, at: DateTime<Utc>) -> String {
        self.out
            .replace("{date}", &at.format("%Y-%m-%d").to_string())
            .replace("{time}", &at.format("%H%M%S").to_string())
            .replace("{name}", name)
    }
}

/// Checks without I/O: `(field under reports., message)` pairs.
pub(super) fn validate(reports: &BTreeMap<String, ReportConfig>) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for (name, r) in reports {
        let mut err = |key: &str, message: String| errs.push((format!("{name}.{key}"), message));
        if r.sql.trim().is_empty() {
            err("sql", "is empty: write one SELECT over lake tables".into());
        }
        if let Err(e) = OutputFile::of(&r.out) {
            err("out", e);
        }
        let mut rest = r.out.clone();
        for p in PLACEHOLDERS {
            rest = rest.replace(p, "");
        }
        if let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .map_or(rest.len(), |e| start + e + 1);
            err(
                "out",
                format!(
                    "`{}` is not one of {}",
                    &rest[start..end],
                    PLACEHOLDERS.join(", ")
                ),
            );
        }
        if let Some(s) = &r.schedule {
            match crate::schedule::Schedule::parse(s) {
                Ok(crate::schedule::Schedule::Continuous) => err(
                    "schedule",
                    "a report runs at ticks: \"hourly\", \"daily\" or a cron pattern".into(),
                ),
                Ok(_) => {}
                Err(e) => err("schedule", e),
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use chrono::TimeZone;

    use super::super::error_lines as errors;

    #[test]
    fn reports_parse_and_fill_in_their_run() {
        let c = Config::parse(
            "[sources.s]\nkind = \"files\"\nurl = \"d/\"\ntable = \"t\"\n\
             [reports.sales]\nsql = \"SELECT 1\"\nout = \"s3://b/r/{date}/{name}-{time}.csv\"\n",
            std::path::Path::new("/p"),
        )
        .unwrap();
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 12, 6, 14, 30, 5)
            .unwrap();
        assert_eq!(
            c.reports["sales"].destination("sales", at),
            "s3://b/r/2026-12-06/sales-143005.csv"
        );
    }

    #[test]
    fn bad_reports_are_refused_with_the_field_named() {
        let errs = errors(
            "[reports.r]\nsql = \" \"\nout = \"out/{day}.xlsx\"\nschedule = \"continuous\"\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("reports.r.sql: is empty")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("reports.r.out:") && e.contains(".parquet")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("reports.r.out: `{day}` is not one of")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("reports.r.schedule:")),
            "{errs:?}"
        );
        let errs = errors("[reports.r]\nsql = \"SELECT 1\"\nout = \"a.csv\"\nemail = \"x\"\n");
        assert!(errs.iter().any(|e| e.contains("email")), "{errs:?}");
    }
}
