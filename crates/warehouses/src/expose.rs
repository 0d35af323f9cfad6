//! `sluice expose`: views in a warehouse that read the lake's own Parquet files, without
//! copying them. Per source, a schema `{prefix}{source}` holds two views per lake table:
//! `{table}` (current state: the latest change per key, deletes removed) and
//! `{table}__changes` (the change log), the same names `sluice query` gives them.
//!
//! - DuckDB reads the files by path (`read_parquet` over the exact files of the lake version,
//!   never a glob: a file a crashed write left behind is not part of the table).
//! - Redshift Spectrum and Athena read them through the Delta symlink manifest
//!   (`_symlink_format_manifest/manifest`, one file URL per line) that the engine writes
//!   beside the table, with an external table over it in the data catalog database
//!   `{prefix}{source}`.
//!
//! The lake only grows between exposures, so a view shows the lake as of its exposure:
//! running `sluice expose` again (or after each sync) moves it on.

use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};

use sluice_core::change::current_state_select;
use sluice_core::names::{quote_ident as q, quote_literal};

use crate::WarehouseError;

/// The folder of a table's symlink manifest, relative to the table's folder.
pub const MANIFEST_DIR: &str = "_symlink_format_manifest";

/// One lake table as views over its files see it.
#[derive(Debug, Clone)]
pub struct LakeView {
    pub source: String,
    pub table: String,
    /// The lake version whose files the views read.
    pub version: i64,
    /// The change log's schema (data columns and `_sluice_*` ones).
    pub schema: SchemaRef,
    /// The primary key (empty: the table is a log, and both views show every change).
    pub key: Vec<String>,
    /// Columns whose values are in the files' folder names (`_sluice_ingest_date=…/`), not
    /// in the files.
    pub partition_columns: Vec<String>,
    /// The table's folder (`file:///…/changes/shop/orders/` or `s3://bucket/…/`).
    pub table_url: url::Url,
    /// The data files of that version, relative to the folder.
    pub files: Vec<String>,
}

impl LakeView {
    /// The URL of each data file.
    pub fn file_urls(&self) -> Result<Vec<url::Url>, WarehouseError> {
        self.files
            .iter()
            .map(|f| {
                self.table_url.join(f).map_err(|e| {
                    WarehouseError::Unsupported(format!(
                        "lake table {}.{}: file {f}: {e}",
                        self.source, self.table
                    ))
                })
            })
            .collect()
    }

    /// The symlink manifests: `(path relative to the table's folder, text)`, the text every
    /// data file's URL, one per line. A partitioned table has one per partition folder
    /// (`_symlink_format_manifest/_sluice_ingest_date=2026-12-06/manifest`), as Delta's own
    /// manifest generation lays them out, so engines read the partition values from them.
    pub fn manifests(&self) -> Result<Vec<(String, String)>, WarehouseError> {
        let mut by_folder: std::collections::BTreeMap<String, String> = Default::default();
        for (file, url) in self.files.iter().zip(self.file_urls()?) {
            let folder = match file.rsplit_once('/') {
                Some((folder, _)) if !self.partition_columns.is_empty() => format!("{folder}/"),
                _ => String::new(),
            };
            let text = by_folder.entry(folder).or_default();
            text.push_str(url.as_str());
            text.push('\n');
        }
        Ok(by_folder
            .into_iter()
            .map(|(folder, text)| (format!("{MANIFEST_DIR}/{folder}manifest"), text))
            .collect())
    }

    /// The partition folders of the files with their values: `(folder, [(column, value)])`.
    fn partitions(&self) -> Vec<(String, Vec<(String, String)>)> {
        if self.partition_columns.is_empty() {
            return Vec::new();
        }
        let folders: std::collections::BTreeSet<&str> = self
            .files
            .iter()
            .filter_map(|f| f.rsplit_once('/').map(|(folder, _)| folder))
            .collect();
        folders
            .into_iter()
            .map(|folder| {
                let values = folder
                    .split('/')
                    .filter_map(|part| part.split_once('='))
                    .map(|(k, v)| (decode(k), decode(v)))
                    .collect();
                (folder.to_string(), values)
            })
            .collect()
    }

    /// Where the manifest's folder is (`s3://…/orders/_symlink_format_manifest/`).
    pub fn manifest_location(&self) -> String {
        format!(
            "{}/{MANIFEST_DIR}/",
            self.table_url.as_str().trim_end_matches('/')
        )
    }

    fn name(&self) -> String {
        format!("{}.{}", self.source, self.table)
    }
}

/// A folder name's percent-escapes undone (Hive partition folders escape `=`, `/`, `%`).
fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// What exposing a set of lake tables takes in one warehouse: the statements, in order, and
/// whether the tables' symlink manifests must be written before they run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    pub statements: Vec<String>,
    pub needs_manifests: bool,
    /// Tables left out: `(source.table, why)` (a column type the warehouse cannot declare).
    pub skipped: Vec<(String, String)>,
}

/// The schema (database) that holds a source's views: `{prefix}{source}`.
pub fn schema_name(prefix: &str, source: &str) -> String {
    format!("{prefix}{source}")
}

fn changes_name(table: &str) -> String {
    format!("{table}__changes")
}

/// The current-state view's body over `changes` (quoted), or the log itself without a key.
fn current_body(view: &LakeView, changes: &str) -> String {
    if view.key.is_empty() {
        format!("SELECT * FROM {changes}")
    } else {
        current_state_select(changes, &view.schema, &view.key)
    }
}

/// DuckDB: views over `read_parquet` of the version's files, by path. `union_by_name` because
/// files written before a column was added lack it (it reads as NULL there). A table with no
/// files yet gets views of the right columns and no rows.
pub fn duckdb(views: &[LakeView], prefix: &str) -> Result<Exposure, WarehouseError> {
    let mut out = Exposure::default();
    let mut schemas = std::collections::BTreeSet::new();
    for view in views {
        let schema = schema_name(prefix, &view.source);
        if schemas.insert(schema.clone()) {
            out.statements
                .push(format!("CREATE SCHEMA IF NOT EXISTS {}", q(&schema)));
        }
        let changes = format!("{}.{}", q(&schema), q(&changes_name(&view.table)));
        let read = if view.files.is_empty() {
            empty_select(view, crate::duckdb::duckdb_type)?
        } else {
            let mut paths = Vec::with_capacity(view.files.len());
            for url in view.file_urls()? {
                let path = url.to_file_path().map_err(|()| {
                    WarehouseError::Unsupported(format!(
                        "lake table {}: DuckDB reads the lake's files from a local folder; this \
                         build's DuckDB has no S3 reader (httpfs), and the lake is at {}",
                        view.name(),
                        view.table_url
                    ))
                })?;
                paths.push(quote_literal(&path.to_string_lossy()));
            }
            format!(
                "SELECT * FROM read_parquet([{}], union_by_name = true{})",
                paths.join(", "),
                hive_options(view)?
            )
        };
        out.statements
            .push(format!("CREATE OR REPLACE VIEW {changes} AS {read}"));
        out.statements.push(format!(
            "CREATE OR REPLACE VIEW {}.{} AS {}",
            q(&schema),
            q(&view.table),
            current_body(view, &changes)
        ));
        out.statements.push(format!(
            "COMMENT ON VIEW {changes} IS {}",
            quote_literal(&format!(
                "sluice: lake table {} at version {}",
                view.name(),
                view.version
            ))
        ));
    }
    Ok(out)
}

/// `, hive_partitioning = true, hive_types = {'col': TYPE}`: partition columns read from the
/// folder names with their lake types (nothing for an unpartitioned table).
fn hive_options(view: &LakeView) -> Result<String, WarehouseError> {
    if view.partition_columns.is_empty() {
        return Ok(String::new());
    }
    let mut types = Vec::new();
    for name in &view.partition_columns {
        let field = view.schema.field_with_name(name).map_err(|_| {
            WarehouseError::Unsupported(format!(
                "lake table {}: partition column {name} is not in its schema",
                view.name()
            ))
        })?;
        let t =
            crate::duckdb::duckdb_type(field.data_type()).ok_or_else(|| type_error(view, field))?;
        types.push(format!("{}: {t}", quote_literal(name)));
    }
    Ok(format!(
        ", hive_partitioning = true, hive_types = {{{}}}",
        types.join(", ")
    ))
}

/// `SELECT CAST(NULL AS type) AS col, … WHERE false`: the columns of a table with no files.
fn empty_select(
    view: &LakeView,
    type_of: impl Fn(&DataType) -> Option<String>,
) -> Result<String, WarehouseError> {
    let mut cols = Vec::new();
    for f in view.schema.fields() {
        let t = type_of(f.data_type()).ok_or_else(|| type_error(view, f))?;
        cols.push(format!("CAST(NULL AS {t}) AS {}", q(f.name())));
    }
    Ok(format!("SELECT {} WHERE false", cols.join(", ")))
}

fn type_error(view: &LakeView, f: &Field) -> WarehouseError {
    WarehouseError::Type {
        table: view.name(),
        column: f.name().clone(),
        data_type: f.data_type().to_string(),
    }
}

/// The Hive serde and formats of an external table over a symlink manifest of Parquet files.
const SYMLINK_PARQUET: &str =
    "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'
STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'";

/// The external table's column list and its `PARTITIONED BY` list (empty when
/// unpartitioned), or None (with the reason in `skipped`) when a column has no type there.
fn external_columns(
    view: &LakeView,
    quote: impl Fn(&str) -> String,
    type_of: impl Fn(&Field) -> Option<String>,
    skipped: &mut Vec<(String, String)>,
) -> Option<(String, String)> {
    let mut cols = Vec::new();
    let mut partitions = Vec::new();
    for f in view.schema.fields() {
        let Some(t) = type_of(f) else {
            skipped.push((
                view.name(),
                format!(
                    "column {} has type {}, which an external table cannot declare",
                    f.name(),
                    f.data_type()
                ),
            ));
            return None;
        };
        let col = format!("{} {t}", quote(f.name()));
        match view.partition_columns.contains(f.name()) {
            true => partitions.push(col),
            false => cols.push(format!("  {col}")),
        }
    }
    Some((cols.join(",\n"), partitions.join(", ")))
}

/// One `ALTER TABLE … ADD IF NOT EXISTS PARTITION (…) LOCATION` per partition folder, at its
/// manifest's folder. Named one by one rather than discovered: engines skip folders whose
/// names start with `_`, as `_sluice_ingest_date=…` does.
fn add_partitions(view: &LakeView, table: &str, quote: impl Fn(&str) -> String) -> Vec<String> {
    view.partitions()
        .into_iter()
        .map(|(folder, values)| {
            let values: Vec<String> = values
                .iter()
                .map(|(k, v)| format!("{}={}", quote(k), quote_literal(v)))
                .collect();
            format!(
                "ALTER TABLE {table} ADD IF NOT EXISTS PARTITION ({}) LOCATION {}",
                values.join(", "),
                quote_literal(&format!("{}{folder}/", view.manifest_location()))
            )
        })
        .collect()
}

/// `PARTITIONED BY (…)` on its own line, or nothing.
fn partitioned_by(partitions: &str) -> String {
    match partitions.is_empty() {
        true => String::new(),
        false => format!("\nPARTITIONED BY ({partitions})"),
    }
}

fn require_s3(view: &LakeView, engine: &str) -> Result<(), WarehouseError> {
    if view.table_url.scheme() == "s3" {
        return Ok(());
    }
    Err(WarehouseError::Unsupported(format!(
        "lake table {}: {engine} reads the lake from S3, and this lake is at {}",
        view.name(),
        view.table_url
    )))
}

/// Redshift Spectrum: an external schema per source over the data catalog database
/// `{prefix}{source}` (created if missing), an external table `{table}__changes` over the
/// table's symlink manifest, and late-binding views (`WITH NO SCHEMA BINDING`, the only kind
/// that may read an external table) in the ordinary schema `{prefix}{source}`. External
/// DDL cannot run inside a transaction: each statement runs on its own.
pub fn redshift(
    views: &[LakeView],
    prefix: &str,
    iam_role: &str,
) -> Result<Exposure, WarehouseError> {
    let mut out = Exposure {
        needs_manifests: true,
        ..Exposure::default()
    };
    let mut schemas = std::collections::BTreeSet::new();
    for view in views {
        require_s3(view, "Redshift Spectrum")?;
        let Some((columns, partitions)) =
            external_columns(view, q, spectrum_type, &mut out.skipped)
        else {
            continue;
        };
        let database = schema_name(prefix, &view.source);
        let external = format!("{database}_lake");
        if schemas.insert(database.clone()) {
            out.statements.push(format!(
                "CREATE EXTERNAL SCHEMA IF NOT EXISTS {} FROM DATA CATALOG DATABASE {} IAM_ROLE {} CREATE EXTERNAL DATABASE IF NOT EXISTS",
                q(&external),
                quote_literal(&database),
                quote_literal(iam_role)
            ));
            out.statements
                .push(format!("CREATE SCHEMA IF NOT EXISTS {}", q(&database)));
        }
        let table = format!("{}.{}", q(&external), q(&changes_name(&view.table)));
        out.statements.push(format!("DROP TABLE IF EXISTS {table}"));
        out.statements.push(format!(
            "CREATE EXTERNAL TABLE {table} (\n{columns}\n){}\n{SYMLINK_PARQUET}\nLOCATION {}",
            partitioned_by(&partitions),
            quote_literal(&view.manifest_location())
        ));
        out.statements.extend(add_partitions(view, &table, q));
        for (name, body) in [
            (changes_name(&view.table), format!("SELECT * FROM {table}")),
            (view.table.clone(), current_body(view, &table)),
        ] {
            out.statements.push(format!(
                "CREATE OR REPLACE VIEW {}.{} AS {body} WITH NO SCHEMA BINDING",
                q(&database),
                q(&name)
            ));
        }
    }
    Ok(out)
}

/// Athena: a database per source (`{prefix}{source}`), an external table `{table}__changes`
/// over the symlink manifest, and a current-state view `{table}`. Hive DDL quotes with
/// backticks, views with double quotes.
pub fn athena(views: &[LakeView], prefix: &str) -> Result<Exposure, WarehouseError> {
    let mut out = Exposure {
        needs_manifests: true,
        ..Exposure::default()
    };
    let tick = |s: &str| format!("`{}`", s.replace('`', "``"));
    let mut databases = std::collections::BTreeSet::new();
    for view in views {
        require_s3(view, "Athena")?;
        let Some((columns, partitions)) =
            external_columns(view, tick, athena_type, &mut out.skipped)
        else {
            continue;
        };
        let database = schema_name(prefix, &view.source);
        if databases.insert(database.clone()) {
            out.statements
                .push(format!("CREATE DATABASE IF NOT EXISTS {}", tick(&database)));
        }
        let changes = changes_name(&view.table);
        out.statements.push(format!(
            "DROP TABLE IF EXISTS {}.{}",
            tick(&database),
            tick(&changes)
        ));
        out.statements.push(format!(
            "CREATE EXTERNAL TABLE {}.{} (\n{columns}\n){}\n{SYMLINK_PARQUET}\nLOCATION {}",
            tick(&database),
            tick(&changes),
            partitioned_by(&partitions),
            quote_literal(&view.manifest_location())
        ));
        out.statements.extend(add_partitions(
            view,
            &format!("{}.{}", tick(&database), tick(&changes)),
            tick,
        ));
        let quoted_changes = format!("{}.{}", q(&database), q(&changes));
        out.statements.push(format!(
            "CREATE OR REPLACE VIEW {}.{} AS {}",
            q(&database),
            q(&view.table),
            current_body(view, &quoted_changes)
        ));
    }
    Ok(out)
}

/// A Spectrum external column type (Parquet timestamps are read as UTC `TIMESTAMP`).
pub fn spectrum_type(field: &Field) -> Option<String> {
    Some(match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            format!("VARCHAR({})", crate::redshift::MAX_VARCHAR)
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            format!("VARBYTE({})", crate::redshift::MAX_VARBYTE)
        }
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INTEGER".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE PRECISION".into(),
        DataType::Decimal128(p, s) if *s >= 0 && *p <= 38 => format!("DECIMAL({p},{s})"),
        DataType::Date32 => "DATE".into(),
        _ => return None,
    })
}

/// An Athena (Hive) column type.
pub fn athena_type(field: &Field) -> Option<String> {
    Some(match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Millisecond, _) => "timestamp".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) if *s >= 0 && *p <= 38 => format!("decimal({p},{s})"),
        DataType::Date32 => "date".into(),
        _ => return None,
    })
}
