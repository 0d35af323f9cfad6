//! `kind = "files"`: folders of CSV, TSV, JSON and Parquet drops, local or on S3.

use serde::Deserialize;

use super::{
    single_byte, split_column, Deletes, FileFormat, LoadSpec, Mode, Nested, SchemaChangesSpec,
    Tables,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// A folder, a file, or a `{date}` folder pattern (`drops/supplier/{date}/`,
    /// `s3://b/p/{date}/`).
    pub url: String,
    /// Files are read in snapshot mode (each new file once); only `"snapshot"` is taken.
    pub mode: Option<Mode>,
    /// The one table, as a list of one or a `[sources.x.tables.T]` section of overrides.
    pub tables: Option<Tables>,
    /// Warehouse name; default the only one configured.
    pub warehouse: Option<String>,
    /// merge | append | replace | history, or a list; default merge when a key is known, else append.
    pub load: Option<LoadSpec>,
    pub deletes: Option<Deletes>,
    /// halt | evolve | freeze, or per kind of change.
    pub schema_changes: Option<SchemaChangesSpec>,
    /// csv | tsv | json | parquet | orc; default from the file extension, else csv.
    pub format: Option<FileFormat>,
    /// One character; default `,` (`\t` for tsv).
    pub delimiter: Option<String>,
    /// Whether the first line names the columns; default true.
    pub header: Option<bool>,
    /// One character; default `"`.
    pub quote: Option<String>,
    /// The text that means NULL; default the empty field.
    pub null_value: Option<String>,
    /// The lake table the files feed; default the source name.
    pub table: Option<String>,
    /// Declared columns in order, `"name type"` (e.g. `"s_acctbal decimal(15,2)"`); default inferred.
    pub columns: Option<Vec<String>>,
    /// Rows sampled per file for inference.
    pub sample_rows: Option<usize>,
    /// Files sampled for inference, spread over the listing (first, last, evenly between);
    /// default 5.
    pub sample_files: Option<usize>,
    /// Folders between `url` and the files become columns: `key=value` folders named by
    /// their key, others `partition_<level>`; default false.
    pub partitions: Option<bool>,
    /// Only files whose name matches this glob (`*` and `?`), e.g. `"*.tbl"`.
    pub pattern: Option<String>,
    /// Files are taken only from folders that hold a file of this name, which the producer
    /// writes last (`"_SUCCESS"`); default: every file, once it has settled.
    pub ready_marker: Option<String>,
    /// Seconds a local file must be left unchanged before it is read; default 2 (0: read at
    /// once). Object stores show an object only once it is complete.
    pub settle_secs: Option<u64>,
    /// json (default) | flatten: what nested objects in documents become.
    pub nested: Option<Nested>,
    /// With `nested = "flatten"`: levels of objects flattened; deeper ones stay JSON text.
    pub max_depth: Option<usize>,
    /// The longest record (CSV record, JSON line or array element) read, in bytes; a longer
    /// one (an unterminated quote, a file without line breaks, a bomb) is quarantined.
    /// Default 64 MiB.
    pub max_record_bytes: Option<u64>,
    /// File columns renamed on the way in: `{ "Cust ID" = "customer_id" }` (file name =
    /// table name).
    pub columns_map: Option<std::collections::BTreeMap<String, String>>,
    /// File columns not landed (by the file's name for them).
    pub drop_columns: Option<Vec<String>>,
    /// A type per table column, whatever the files' values suggest: `{ amount =
    /// "decimal(12,2)" }`. Values off it are quarantined with the column named.
    pub column_types: Option<std::collections::BTreeMap<String, String>>,
    /// Files landed in one lake commit, at most, with their positions; default 1000. A crash
    /// re-reads at most this many; fewer commits keep a folder of thousands of small files
    /// fast.
    pub files_per_commit: Option<usize>,
    /// Scheduling keys of `sluice serve` (refused until it exists).
    pub trigger: Option<String>,
    pub poll_interval_secs: Option<u64>,
    pub schedule: Option<String>,
    pub max_lag_secs: Option<u64>,
}

impl FilesConfig {
    /// The lake table the files feed: `table`, else the table the `tables` setting names,
    /// else the source's own name.
    pub fn table_name(&self, source: &str) -> String {
        if let Some(t) = &self.table {
            return t.clone();
        }
        match &self.tables {
            Some(Tables::List(l)) if !l.is_empty() => l[0].clone(),
            Some(Tables::Map(m)) if !m.is_empty() => m.keys().next().cloned().unwrap_or_default(),
            _ => source.to_string(),
        }
    }

    /// Checks without I/O: `(field, message)` pairs.
    pub(super) fn validate(&self, source: &str) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let mut err = |key: &str, message: String| errs.push((key.to_string(), message));
        if let Some(mode) = self.mode {
            if mode != Mode::Snapshot {
                err(
                    "mode",
                    "files sources read in snapshot mode (each new file is read once)".into(),
                );
            }
        }
        for (key, value) in [("delimiter", &self.delimiter), ("quote", &self.quote)] {
            if let Some(v) = value {
                if single_byte(v).is_none() {
                    err(
                        key,
                        format!("must be exactly one ASCII character, got {v:?}"),
                    );
                }
            }
        }
        if let Some(cols) = &self.columns {
            let mut seen = std::collections::HashSet::new();
            for (i, c) in cols.iter().enumerate() {
                let key = format!("columns[{i}]");
                match split_column(c) {
                    Ok((col, _)) => {
                        if crate::change::is_change_column(col) {
                            err(&key, format!("`{col}` is reserved for sluice"));
                        }
                        if !seen.insert(col.to_string()) {
                            err(&key, format!("column `{col}` is declared twice"));
                        }
                    }
                    Err(m) => err(&key, m),
                }
            }
        }
        self.validate_mapping(&mut err);
        if let Some(Tables::List(list)) = &self.tables {
            if list.len() > 1 {
                err(
                    "tables",
                    "a files source feeds one table; use `table = \"NAME\"`".into(),
                );
            }
        }
        if let Some(Tables::Map(map)) = &self.tables {
            let table = self.table_name(source);
            for key in map.keys() {
                if *key != table {
                    err(
                        &format!("tables.{key}"),
                        format!("this files source feeds table `{table}` only"),
                    );
                }
            }
        }
        if self.max_depth.is_some() && self.nested != Some(Nested::Flatten) {
            err("max_depth", "applies to nested = \"flatten\" only".into());
        }
        for (key, value) in [
            ("sample_files", self.sample_files),
            ("sample_rows", self.sample_rows),
            ("max_depth", self.max_depth),
            ("files_per_commit", self.files_per_commit),
        ] {
            if value == Some(0) {
                err(key, "must be at least 1".into());
            }
        }
        if let Some(m) = &self.ready_marker {
            if m.is_empty() || m.contains('/') {
                err(
                    "ready_marker",
                    "is a file name (e.g. \"_SUCCESS\"), without folders".into(),
                );
            }
        }
        if let Some(p) = &self.pattern {
            if p.contains('/') {
                err(
                    "pattern",
                    "matches file names only; put folders in `url`".into(),
                );
            }
        }
        if self.url.matches("{date}").count() > 1 {
            err("url", "`{date}` may appear once".into());
        }
        errs
    }

    /// Checks `columns_map`, `drop_columns` and `column_types`.
    fn validate_mapping(&self, err: &mut impl FnMut(&str, String)) {
        let dropped = self.drop_columns.as_deref().unwrap_or_default();
        let mut targets = std::collections::HashSet::new();
        for (from, to) in self.columns_map.iter().flatten() {
            let key = format!("columns_map.{from:?}");
            if to.trim().is_empty() {
                err(&key, "renames to an empty name".into());
            }
            if crate::change::is_change_column(to) {
                err(&key, format!("`{to}` is reserved for sluice"));
            }
            if !targets.insert(to.as_str()) {
                err(&key, format!("two file columns are renamed to `{to}`"));
            }
            if dropped.contains(from) {
                err(&key, format!("`{from}` is also in drop_columns"));
            }
        }
        if !dropped.is_empty() && self.header == Some(false) {
            err(
                "drop_columns",
                "needs named columns: files without a header are read by position".into(),
            );
        }
        for (column, ty) in self.column_types.iter().flatten() {
            if let Err(m) = crate::types::parse_type(ty) {
                err(&format!("column_types.{column}"), m);
            }
        }
    }

    /// The declared column names, when columns are declared.
    pub(super) fn declared(&self) -> Option<Vec<&str>> {
        self.columns.as_ref().map(|cols| {
            cols.iter()
                .filter_map(|c| split_column(c).ok().map(|(n, _)| n))
                .collect()
        })
    }
}
