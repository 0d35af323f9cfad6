//! `[transforms.NAME]`: SQL over lake tables, materialized as a lake table of its own and
//! loaded into warehouses like a source table. All transforms together are one source,
//! named [`TRANSFORMS_SOURCE`] (lake `transforms/NAME`, warehouse `transforms.NAME`), so
//! they share every path a source's table takes: the schema gate, loads, status.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Deletes, LoadSpec, Mode, SchemaChangesSpec, TableConfig, Tables};

/// The source every transform's table belongs to.
pub const TRANSFORMS_SOURCE: &str = "transforms";

/// Seconds between looks at a transform's inputs while following (`serve`, `sync --follow`).
pub const DEFAULT_TRANSFORM_POLL_SECS: u64 = 5;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// One SELECT over lake tables (`source.table`, `source.table__changes`, other
    /// transforms as `transforms.NAME`).
    pub sql: String,
    /// The columns that identify a result row: each run lands the rows that changed under
    /// them, and deletes the keys no longer in the result.
    pub primary_key: Option<Vec<String>>,
    /// When `serve` runs it (cron, "hourly", "daily"); default: as soon as an input changed.
    pub schedule: Option<String>,
    pub warehouse: Option<String>,
    pub load: Option<LoadSpec>,
    pub deletes: Option<Deletes>,
    pub schema_changes: Option<SchemaChangesSpec>,
}

/// Every transform, by name, as the one source they form.
#[derive(Debug)]
pub struct TransformsConfig {
    pub transforms: BTreeMap<String, TransformConfig>,
    /// Each transform as a table section (its key, load, deletes, schema policy, warehouse).
    tables: Tables,
}

impl TransformsConfig {
    pub fn new(transforms: BTreeMap<String, TransformConfig>) -> TransformsConfig {
        let tables = transforms
            .iter()
            .map(|(name, t)| {
                let overrides = TableConfig {
                    primary_key: t.primary_key.clone(),
                    load: t.load.clone(),
                    deletes: t.deletes,
                    schema_changes: t.schema_changes,
                    warehouse: t.warehouse.clone(),
                    ..TableConfig::default()
                };
                (name.clone(), overrides)
            })
            .collect();
        TransformsConfig {
            transforms,
            tables: Tables::Map(tables),
        }
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Transforms follow their inputs, like a change stream follows its source.
    pub fn mode(&self) -> Mode {
        Mode::Cdc
    }

    /// Checks without I/O: `(field under transforms., message)` pairs.
    pub(super) fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (name, t) in &self.transforms {
            let mut err =
                |key: &str, message: String| errs.push((format!("{name}.{key}"), message));
            if name.contains('.') || name.is_empty() {
                err("sql", format!("`{name}` is not a table name (no dots)"));
            }
            if t.sql.trim().is_empty() {
                err("sql", "is empty: write one SELECT over lake tables".into());
            }
            match &t.primary_key {
                None => err(
                    "primary_key",
                    "is required: the columns that identify a result row (each run lands the rows that changed under them)".into(),
                ),
                Some(k) if k.is_empty() => err("primary_key", "names no column".into()),
                Some(_) => {}
            }
            if let Some(s) = &t.schedule {
                if let Err(e) = crate::schedule::Schedule::parse(s) {
                    err("schedule", e);
                }
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, LoadMode, SourceConfig};
    use super::TRANSFORMS_SOURCE;

    use super::super::error_lines as fields;

    const FILES: &str = "[sources.s]\nkind = \"files\"\nurl = \"d/\"\ntable = \"t\"\n";

    #[test]
    fn transforms_are_one_source_with_a_table_each() {
        let text = format!(
            "{FILES}[transforms.a]\nsql = \"SELECT 1 AS k\"\nprimary_key = [\"k\"]\nload = [\"merge\", \"history\"]\n\
             [transforms.b]\nsql = \"SELECT * FROM transforms.a\"\nprimary_key = [\"k\"]\n"
        );
        let c = Config::parse(&text, std::path::Path::new("/p")).unwrap();
        assert!(c.transforms.is_empty());
        let src = &c.sources[TRANSFORMS_SOURCE];
        assert!(matches!(src, SourceConfig::Transforms(_)));
        let specs = c.source_tables(TRANSFORMS_SOURCE, src);
        let names: Vec<&str> = specs.iter().map(|s| s.table.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(specs[0].primary_key, vec!["k".to_string()]);
        assert_eq!(specs[0].loads, vec![LoadMode::Merge, LoadMode::History]);
        assert_eq!(specs[1].loads, vec![LoadMode::Merge]);
    }

    #[test]
    fn transform_errors_name_their_field() {
        let errs = fields(&format!("{FILES}[transforms.a]\nsql = \" \"\n"));
        assert!(
            errs.iter().any(|e| e.starts_with("transforms.a.sql:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("transforms.a.primary_key:")),
            "{errs:?}"
        );
        let errs = fields(&format!(
            "{FILES}[transforms.a]\nsql = \"SELECT 1 AS k\"\nprimary_key = [\"k\"]\nschedule = \"every tuesday\"\nbogus = 1\n"
        ));
        assert!(errs.iter().any(|e| e.contains("bogus")), "{errs:?}");
        let errs = fields(&format!(
            "{FILES}[transforms.a]\nsql = \"SELECT 1 AS k\"\nprimary_key = [\"k\"]\nschedule = \"every tuesday\"\n"
        ));
        assert!(
            errs.iter().any(|e| e.starts_with("transforms.a.schedule:")),
            "{errs:?}"
        );
        let errs = fields("[sources.transforms]\nkind = \"files\"\nurl = \"d/\"\ntable = \"t\"\n");
        assert!(
            errs.iter().any(|e| e.starts_with("sources.transforms:")),
            "{errs:?}"
        );
        let two = "[warehouses.a]\nkind = \"duckdb\"\n[warehouses.b]\nkind = \"duckdb\"\npath = \"b.duckdb\"\n";
        let errs = fields(&format!(
            "{two}{FILES}warehouse = \"a\"\n[transforms.x]\nsql = \"SELECT 1 AS k\"\nprimary_key = [\"k\"]\n\
             [transforms.y]\nsql = \"SELECT 1 AS k\"\nprimary_key = [\"k\"]\nwarehouse = \"c\"\n"
        ));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("transforms.x.warehouse: several")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("transforms.y.warehouse: no warehouse named `c`")),
            "{errs:?}"
        );
    }
}
