//! `sluice crawl URL`: what a folder tree of files holds, as a table, without landing it.
//!
//! ```text
//!   URL ──list──► files (csv/tsv/json/parquet/orc, .gz/.zst) ──spread sample──► inference
//!                   └── folders: key=value ► partition columns (every file's values)
//!   --register NAME ──► [sources.NAME] appended to the config: the very settings crawled with,
//!                       so `sluice sync NAME` infers the same schema from the same files
//! ```
//!
//! The crawl reads with a files source built from the section it would register, so what it
//! prints is what the registered table gets.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use sluice_core::config::{Config, FilesConfig, SourceConfig, DEFAULT_SAMPLE_FILES};
use sluice_sources::files::{FileEntry, FileLocation, FilesSource, InferredSchema};

use crate::EngineError;

/// What to crawl and how.
#[derive(Debug, Clone)]
pub struct CrawlOptions {
    pub url: String,
    pub sample_files: usize,
    /// `NAME` or `SOURCE.TABLE` to register the result under.
    pub register: Option<String>,
    pub primary_key: Vec<String>,
    /// The config to register in (and whose lake settings reach S3).
    pub config: PathBuf,
}

impl CrawlOptions {
    pub fn new(url: &str, config: &Path) -> CrawlOptions {
        CrawlOptions {
            url: url.to_string(),
            sample_files: DEFAULT_SAMPLE_FILES,
            register: None,
            primary_key: Vec::new(),
            config: config.to_path_buf(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CrawlReport {
    pub url: String,
    pub files: usize,
    /// Files per format (`csv`, `json`, `parquet`, ...).
    pub formats: BTreeMap<String, usize>,
    pub folders: usize,
    /// Partition columns found in folder names, outermost first.
    pub partitions: Vec<String>,
    /// Files left out: not a format sluice reads (`README.md`, `.crc`).
    pub skipped: Vec<String>,
    pub schema: InferredSchema,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered: Option<Registered>,
}

#[derive(Debug, Serialize)]
pub struct Registered {
    pub source: String,
    pub table: String,
    pub config: String,
    /// The section appended to the config.
    pub section: String,
}

/// File name suffixes the files source reads (before `.gz`/`.zst`).
const READABLE: &[&str] = &[
    ".csv", ".tsv", ".tbl", ".json", ".jsonl", ".ndjson", ".parquet", ".orc",
];

/// The readable suffix of a file and its compression (`.csv`, `.gz` of `part-0.CSV.gz`), or
/// None for a file the files source does not read.
fn readable(id: &str) -> Option<(&'static str, &'static str)> {
    let name = id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase();
    let compression = [".gz", ".zst"]
        .into_iter()
        .find(|c| name.ends_with(c))
        .unwrap_or("");
    let base = &name[..name.len() - compression.len()];
    let suffix = READABLE.iter().copied().find(|s| base.ends_with(s))?;
    Some((suffix, compression))
}

/// A TOML string literal.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub async fn crawl(opts: &CrawlOptions) -> Result<CrawlReport, EngineError> {
    let (source_name, table) = register_names(opts.register.as_deref())?;
    let existing = match opts.config.exists() {
        true => Some(Config::load(&opts.config)?),
        false => None,
    };
    let store = existing
        .as_ref()
        .map(crate::Project::store_options_of)
        .unwrap_or_default();
    let url = absolute_url(&opts.url)?;

    // Every file, to learn the formats and whether folders partition them.
    let listed = FileLocation::new(&url, None, &store)
        .map_err(|m| EngineError::Usage(format!("{url}: {m}")))?
        .list()
        .await?;
    let (files, skipped): (Vec<FileEntry>, Vec<FileEntry>) =
        listed.into_iter().partition(|e| readable(&e.id).is_some());
    if files.is_empty() {
        return Err(EngineError::Usage(format!(
            "{url}: no CSV, TSV, JSON, Parquet or ORC files here{}",
            match skipped.first() {
                Some(s) => format!(" ({} other file(s), e.g. {})", skipped.len(), s.id),
                None => String::new(),
            }
        )));
    }
    let mut formats: BTreeMap<String, usize> = BTreeMap::new();
    for e in &files {
        let (suffix, _) = readable(&e.id).expect("partitioned above");
        *formats
            .entry(suffix.trim_start_matches('.').to_string())
            .or_default() += 1;
    }
    // One suffix: the registered source reads only those, whatever else lands beside them.
    let first = readable(&files[0].id);
    let same = files.iter().all(|e| readable(&e.id) == first);
    let pattern = first.filter(|_| same).map(|(s, c)| format!("*{s}{c}"));
    let partitioned = files.iter().any(|e| !e.partitions.is_empty());
    let body = section_body(
        &url,
        &table,
        pattern.as_deref(),
        partitioned,
        opts.sample_files,
    );
    let source = Arc::new(FilesSource::new(
        &source_name,
        &table,
        &source_config(&body)?,
        &url,
        &store,
    )?);
    let sample = source.inference_sample(&files);
    let schema = source.infer_from(&files, sample).await?;

    let mut partitions: Vec<String> = Vec::new();
    let mut folders: HashSet<&str> = HashSet::new();
    for e in &files {
        for p in &e.partitions {
            if !partitions.contains(&p.key) {
                partitions.push(p.key.clone());
            }
        }
        if let Some((folder, _)) = e.id.rsplit_once('/') {
            folders.insert(folder);
        }
    }
    let folders = folders.len();
    let mut report = CrawlReport {
        url,
        files: files.len(),
        formats,
        folders,
        partitions,
        skipped: skipped.iter().map(|e| e.id.clone()).collect(),
        schema,
        registered: None,
    };
    if opts.register.is_some() {
        if pattern.is_none() && !report.skipped.is_empty() {
            return Err(EngineError::Usage(format!(
                "not registered: the folder mixes formats and also holds {} file(s) sluice does not \
                 read (e.g. {}); a files source would read them as CSV: move them, or crawl a \
                 narrower folder",
                report.skipped.len(),
                report.skipped[0]
            )));
        }
        report.registered = Some(register(
            opts,
            existing.as_ref(),
            (&source_name, &table),
            &body,
            &report,
        )?);
    }
    Ok(report)
}

/// `NAME` (source and table) or `SOURCE.TABLE`; without --register, `crawl`.
fn register_names(register: Option<&str>) -> Result<(String, String), EngineError> {
    let Some(r) = register else {
        return Ok(("crawl".into(), "crawl".into()));
    };
    let (s, t) = r.split_once('.').unwrap_or((r, r));
    let ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !ok(s) || !ok(t) {
        return Err(EngineError::Usage(format!(
            "--register {r}: name the source (and table) with letters, digits, `_` or `-`, as \
             NAME or SOURCE.TABLE"
        )));
    }
    Ok((s.to_string(), t.to_string()))
}

/// Local paths become absolute, so the registered config finds them from any folder.
fn absolute_url(url: &str) -> Result<String, EngineError> {
    if url.contains("://") {
        return Ok(url.to_string());
    }
    let abs = std::path::absolute(url).map_err(|source| EngineError::Io {
        context: format!("resolving {url}"),
        source,
    })?;
    let mut s = abs.to_string_lossy().into_owned();
    if Path::new(&s).is_dir() && !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
}

/// The keys of the source section the crawl reads with and registers.
fn section_body(
    url: &str,
    table: &str,
    pattern: Option<&str>,
    partitions: bool,
    sample_files: usize,
) -> String {
    let mut body = format!(
        "kind = \"files\"\nurl = {}\ntable = {}\n",
        toml_string(url),
        toml_string(table)
    );
    if let Some(p) = pattern {
        body.push_str(&format!("pattern = {}\n", toml_string(p)));
    }
    if partitions {
        body.push_str("partitions = true\n");
    }
    if sample_files != DEFAULT_SAMPLE_FILES {
        body.push_str(&format!("sample_files = {sample_files}\n"));
    }
    body
}

fn source_config(body: &str) -> Result<FilesConfig, EngineError> {
    match toml::from_str(body) {
        Ok(SourceConfig::Files(c)) => Ok(c),
        Ok(other) => Err(EngineError::Internal(format!(
            "crawl source section is a {} source",
            other.kind()
        ))),
        Err(e) => Err(EngineError::Internal(format!("crawl source section: {e}"))),
    }
}

/// Appends the source to the config (creating it if need be) and checks that the config still
/// loads; on any problem the config is left as it was.
fn register(
    opts: &CrawlOptions,
    existing: Option<&Config>,
    (source, table): (&str, &str),
    body: &str,
    report: &CrawlReport,
) -> Result<Registered, EngineError> {
    let path = &opts.config;
    let io = |source: std::io::Error| EngineError::Io {
        context: format!("registering in {}", path.display()),
        source,
    };
    let before = match path.exists() {
        true => std::fs::read_to_string(path).map_err(io)?,
        false => String::new(),
    };
    if let Some(cfg) = existing {
        if cfg.sources.contains_key(source) {
            return Err(EngineError::Usage(format!(
                "not registered: {} already has a source named `{source}`; pick another name",
                path.display()
            )));
        }
    }
    for k in &opts.primary_key {
        if report.schema.schema.index_of(k).is_err() {
            return Err(EngineError::Usage(format!(
                "not registered: primary key column `{k}` is not among the crawled columns ({})",
                report
                    .schema
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut section = format!(
        "# Registered by `sluice crawl` on {}: {} file(s), {} sampled.\n[sources.{}]\n{body}",
        chrono::Utc::now().format("%Y-%m-%d"),
        report.files,
        report.schema.files_sampled,
        toml_string(source),
    );
    if !opts.primary_key.is_empty() {
        let keys: Vec<String> = opts.primary_key.iter().map(|k| toml_string(k)).collect();
        section.push_str(&format!(
            "\n[sources.{}.tables.{}]\nprimary_key = [{}]\n",
            toml_string(source),
            toml_string(table),
            keys.join(", ")
        ));
    }
    let mut after = before.clone();
    if !after.is_empty() && !after.ends_with("\n\n") {
        after.push_str(if after.ends_with('\n') { "\n" } else { "\n\n" });
    }
    after.push_str(&section);
    std::fs::write(path, &after).map_err(io)?;
    if let Err(e) = Config::load(path) {
        let restore = match before.is_empty() {
            true => std::fs::remove_file(path),
            false => std::fs::write(path, &before),
        };
        restore.map_err(io)?;
        return Err(EngineError::Config(e));
    }
    Ok(Registered {
        source: source.to_string(),
        table: table.to_string(),
        config: path.display().to_string(),
        section,
    })
}

/// The crawl as text: files, partitions, and per column its type and the evidence for it.
pub fn render(r: &CrawlReport) -> String {
    let mut out = String::new();
    let formats: Vec<String> = r.formats.iter().map(|(f, n)| format!("{n} {f}")).collect();
    out.push_str(&format!(
        "{}: {} file(s) ({}) in {} folder(s); {} sampled, spread over the listing\n",
        r.url,
        r.files,
        formats.join(", "),
        r.folders,
        r.schema.files_sampled
    ));
    if !r.skipped.is_empty() {
        out.push_str(&format!(
            "skipped {} file(s) of no readable format, e.g. {}\n",
            r.skipped.len(),
            r.skipped[0]
        ));
    }
    if !r.partitions.is_empty() {
        out.push_str(&format!(
            "partitions (from folder names): {}\n",
            r.partitions.join(", ")
        ));
    }
    let name_w = r
        .schema
        .columns
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let type_w = r
        .schema
        .columns
        .iter()
        .map(|c| c.type_name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "\n{:name_w$}  {:type_w$}  evidence\n",
        "column", "type"
    ));
    for c in &r.schema.columns {
        out.push_str(&format!(
            "{:name_w$}  {:type_w$}  {}\n",
            c.name,
            c.type_name,
            evidence(c, r.schema.files_sampled)
        ));
    }
    if let Some(reg) = &r.registered {
        out.push_str(&format!(
            "\nregistered source `{}` (table {}.{}) in {}:\n{}\n\
             `sluice sync {}` lands and loads it; `sluice query \"select * from {}.{}\"` reads it\n",
            reg.source,
            reg.source,
            reg.table,
            reg.config,
            reg.section.trim_end(),
            reg.source,
            reg.source,
            reg.table
        ));
    }
    out
}

fn evidence(c: &sluice_sources::files::ColumnReport, sampled: usize) -> String {
    let said: Vec<String> = c
        .file_types
        .iter()
        .map(|t| match t.files {
            1 => format!("{} in 1 file ({})", t.type_name, short(&t.first)),
            n => format!("{} in {n} files (first {})", t.type_name, short(&t.first)),
        })
        .collect();
    let mut parts = Vec::new();
    if c.partition {
        parts.push(format!(
            "partition: {} file(s), {} value(s), {} null(s)",
            c.files, c.values, c.nulls
        ));
    } else {
        parts.push(format!(
            "in {}/{sampled} sampled file(s); {} value(s), {} null(s)",
            c.files, c.values, c.nulls
        ));
        if !said.is_empty() {
            parts.push(said.join(", "));
        }
    }
    if c.values == 0 && c.file_types.iter().all(|t| t.type_name == "text") && !c.partition {
        parts.push("no values to go by: text".into());
    }
    if let Some(w) = &c.widened_by {
        parts.push(format!("widened by `{w}`"));
    }
    if c.conflict {
        parts.push("CONFLICT: files or documents disagree on its kind; kept as text".into());
    }
    parts.join("; ")
}

/// The last two parts of a file's path: enough to find it, short enough to read.
fn short(id: &str) -> &str {
    let mut cut = id.len();
    for _ in 0..2 {
        match id[..cut].rfind('/') {
            Some(i) => cut = i,
            None => return id,
        }
    }
    &id[cut + 1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_suffixes_and_sections() {
        assert_eq!(
            register_names(Some("events")).unwrap(),
            ("events".into(), "events".into())
        );
        assert_eq!(
            register_names(Some("drops.orders")).unwrap(),
            ("drops".into(), "orders".into())
        );
        assert!(register_names(Some("a b")).is_err());
        assert_eq!(readable("/x/part-0.CSV.gz"), Some((".csv", ".gz")));
        assert_eq!(readable("/x/README.md"), None);
        assert_eq!(readable("/x/a.jsonl.zst"), Some((".jsonl", ".zst")));
        assert_eq!(short("/a/b/c.csv"), "b/c.csv");
        let body = section_body("/d/\"q\"/", "t", Some("*.csv"), true, 9);
        let cfg = source_config(&body).unwrap();
        assert_eq!(cfg.url, "/d/\"q\"/");
        assert_eq!(cfg.partitions, Some(true));
        assert_eq!(cfg.sample_files, Some(9));
        assert_eq!(cfg.pattern.as_deref(), Some("*.csv"));
    }
}
