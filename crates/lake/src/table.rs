//! One lake table: open or create it, read its schema and positions, append batches in one
//! commit with the position that covers them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, MetadataExt, StructType, Transaction};
use deltalake::operations::write::writer::{DeltaWriter as FileWriter, WriterConfig};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use sluice_core::change::{data_schema, INGEST_DATE, SEQ};
use sluice_core::schema::{SchemaChange, SchemaHistory};

use crate::{Lake, LakeError};

/// Rows per Parquet row group: bounds the writer's in-progress memory.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Arrow bytes of small batches held back before they are written as one.
const COALESCE_BYTES: usize = 32 << 20;
/// Table property holding the key columns (comma-separated).
pub const PRIMARY_KEY_PROPERTY: &str = "sluice.primaryKey";
/// Application transaction holding the last `_sluice_seq` committed.
pub const SEQ_APP_ID: &str = "sluice.seq";
/// Table property holding the schema catalog ([`SchemaHistory`] as JSON). It lives in the
/// same Delta metadata action as the schema, so the two never disagree.
pub const SCHEMA_HISTORY_PROPERTY: &str = "sluice.schemaHistory";

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The Delta property naming the columns a data file keeps statistics for. Without it
/// delta-rs keeps them for the first 32 columns only, and a table of 31 source columns or
/// more would have none on `_sluice_seq`: every load would read the whole change log.
const STATS_COLUMNS_PROPERTY: &str = "delta.dataSkippingStatsColumns";

/// Columns with file statistics: the change columns, and the first 32 source columns whose
/// names the property can list (it is comma-separated) and whose values a statistic holds
/// exactly ([`exact_in_stats`]).
fn stats_columns(schema: &Schema) -> String {
    let names = schema.fields().iter().map(|f| f.name().as_str());
    // The partition column is in no data file.
    let change = names
        .clone()
        .filter(|n| sluice_core::change::is_change_column(n) && *n != INGEST_DATE);
    let data = schema
        .fields()
        .iter()
        .filter(|f| exact_in_stats(f.data_type()))
        .map(|f| f.name().as_str())
        .filter(|n| !sluice_core::change::is_change_column(n))
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .take(32);
    change.chain(data).collect::<Vec<_>>().join(",")
}

/// Most significant digits a decimal statistic keeps exactly: delta-rs writes decimal
/// minimums and maximums as JSON numbers, read back as doubles.
const EXACT_STATS_DIGITS: u8 = 15;

/// Whether a column's statistics hold its values exactly. A wider decimal's would be
/// rounded: a maximum rounded down lets a filter skip a file holding a match, and one rounded
/// past the type's range (9999999999999999999999999999.9999999999 written as 1e+28) makes the
/// table's file list unreadable.
fn exact_in_stats(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType as T;
    match t {
        T::Decimal128(p, _) | T::Decimal256(p, _) => *p <= EXACT_STATS_DIGITS,
        _ => true,
    }
}

/// Which lake table: `changes/<source>/<table>`, `quarantine/<source>/<table>` or
/// `checks/<source>/<table>` (data-quality results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePath {
    pub area: &'static str,
    pub source: String,
    pub table: String,
}

impl TablePath {
    pub fn changes(source: &str, table: &str) -> TablePath {
        TablePath {
            area: "changes",
            source: source.into(),
            table: table.into(),
        }
    }

    pub fn quarantine(source: &str, table: &str) -> TablePath {
        TablePath {
            area: "quarantine",
            source: source.into(),
            table: table.into(),
        }
    }

    pub fn checks(source: &str, table: &str) -> TablePath {
        TablePath {
            area: "checks",
            source: source.into(),
            table: table.into(),
        }
    }

    /// The table's folder under the lake root, each name written as one safe segment.
    pub fn relative(&self) -> String {
        format!(
            "{}/{}/{}/",
            self.area,
            segment(&self.source),
            segment(&self.table)
        )
    }

    /// The folder a build before names were encoded used, when it differs and was a safe
    /// place (no separator, query, fragment or escape in it): a table there is still read.
    fn legacy_relative(&self) -> Option<String> {
        let raw = format!("{}/{}/{}/", self.area, self.source, self.table);
        let safe = |n: &str| {
            !n.is_empty() && !n.chars().all(|c| c == '.') && !n.contains(['/', '\\', '?', '#', '%'])
        };
        (raw != self.relative() && safe(&self.source) && safe(&self.table)).then_some(raw)
    }
}

/// A name as one segment of a lake path. Characters that mean something in a path or a URL
/// (`/`, `\`, `?`, `#`, `%`, `~`, `:`, quotes, brackets …) and names made only of dots are
/// written `~XX` (the byte in hex), so no name reaches another table's folder or aliases
/// another name; letters, digits, `_`, `-`, `.`, `$`, space and non-ASCII stay as they are.
pub fn segment(name: &str) -> String {
    let dots = !name.is_empty() && name.chars().all(|c| c == '.');
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let plain = c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '$' | ' ')
            || (c == '.' && !dots)
            || (!c.is_ascii() && !c.is_control());
        if plain {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("~{b:02X}"));
            }
        }
    }
    out
}

/// The name a [`segment`] was written from.
pub fn name_of(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'~', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Display for TablePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.area, self.source, self.table)
    }
}

/// A point in a table's history: a version of its log, or the last version committed at or
/// before a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Version(i64),
    Time(chrono::DateTime<chrono::Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// A version number, an RFC 3339 time, or a date (its midnight, UTC).
    fn from_str(s: &str) -> Result<AsOf, String> {
        if let Ok(v) = s.parse::<i64>() {
            return Ok(AsOf::Version(v));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(AsOf::Time(t.with_timezone(&chrono::Utc)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(AsOf::Time(d.and_time(chrono::NaiveTime::MIN).and_utc()));
        }
        Err(format!(
            "`{s}` is not a lake version (a number), an RFC 3339 time (2026-12-01T10:00:00Z) or a date (2026-12-01)"
        ))
    }
}

pub struct LakeTable {
    path: TablePath,
    table: DeltaTable,
    files: crate::FileOptions,
    /// Bytes of the data files the last commit through this handle added.
    committed_bytes: u64,
}

impl LakeTable {
    fn err(&self, source: DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.path.to_string(),
            source,
        }
    }

    fn builder(lake: &Lake, path: &TablePath) -> Result<DeltaTableBuilder, LakeError> {
        Self::builder_at(lake, path, lake.url_of(path))
    }

    fn builder_at(
        lake: &Lake,
        path: &TablePath,
        url: url::Url,
    ) -> Result<DeltaTableBuilder, LakeError> {
        let b = DeltaTableBuilder::from_url(url)
            .map_err(|source| LakeError::Delta {
                table: path.to_string(),
                source,
            })?
            .with_storage_options(lake.storage_options());
        Ok(b)
    }

    /// Opens the table, or None if it has never been written.
    pub async fn open(lake: &Lake, path: &TablePath) -> Result<Option<LakeTable>, LakeError> {
        if let Some(t) = Self::open_at(lake, path, lake.url_of(path)).await? {
            return Ok(Some(t));
        }
        match path.legacy_relative() {
            Some(old) => Self::open_at(lake, path, lake.url_at(&old)).await,
            None => Ok(None),
        }
    }

    async fn open_at(
        lake: &Lake,
        path: &TablePath,
        url: url::Url,
    ) -> Result<Option<LakeTable>, LakeError> {
        let e = |source: DeltaTableError| LakeError::Delta {
            table: path.to_string(),
            source,
        };
        let mut table = Self::builder_at(lake, path, url)?.build().map_err(e)?;
        // Ask the store rather than interpret a load error: a table exists iff it has a log.
        if !table
            .log_store()
            .is_delta_table_location()
            .await
            .map_err(e)?
        {
            return Ok(None);
        }
        table.load().await.map_err(e)?;
        Ok(Some(LakeTable {
            committed_bytes: 0,
            path: path.clone(),
            table,
            files: lake.files(),
        }))
    }

    /// Creates the table (partitioned by ingestion day) with `schema`, which must include
    /// `_sluice_ingest_date`.
    pub async fn create(
        lake: &Lake,
        path: &TablePath,
        schema: &Schema,
        properties: HashMap<String, String>,
    ) -> Result<LakeTable, LakeError> {
        let e = |source: DeltaTableError| LakeError::Delta {
            table: path.to_string(),
            source,
        };
        let kernel: StructType = schema.try_into_kernel().map_err(|err| e(err.into()))?;
        let mut properties = properties;
        properties.insert(STATS_COLUMNS_PROPERTY.to_string(), stats_columns(schema));
        let history = SchemaHistory::new(&data_schema(schema), 0, now_rfc3339());
        properties.insert(
            SCHEMA_HISTORY_PROPERTY.to_string(),
            serde_json::to_string(&history).expect("history serializes"),
        );
        let url = lake.url_of(path);
        if url.scheme() == "file" {
            if let Ok(dir) = url.to_file_path() {
                std::fs::create_dir_all(&dir).map_err(|err| LakeError::Location {
                    location: url.to_string(),
                    message: err.to_string(),
                })?;
            }
        }
        let table = Self::builder(lake, path)?.build().map_err(e)?;
        let table = table
            .create()
            .with_table_name(format!("{}.{}", path.source, path.table))
            .with_columns(kernel.fields().cloned())
            .with_partition_columns([INGEST_DATE])
            .with_configuration(properties.into_iter().map(|(k, v)| (k, Some(v))))
            .with_raise_if_key_not_exists(false)
            .with_save_mode(SaveMode::ErrorIfExists)
            .await
            .map_err(e)?;
        Ok(LakeTable {
            committed_bytes: 0,
            path: path.clone(),
            table,
            files: lake.files(),
        })
    }

    pub fn path(&self) -> &TablePath {
        &self.path
    }

    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// The committed version this handle sees.
    pub fn version(&self) -> i64 {
        self.table.version().map(|v| v as i64).unwrap_or(-1)
    }

    /// Moves this handle back to the table as it was at `at`. Ok(false): the table did not
    /// exist yet then.
    pub async fn travel(&mut self, at: &AsOf) -> Result<bool, LakeError> {
        let moved = match at {
            AsOf::Version(v) if *v > self.version() => {
                return Err(LakeError::Delta {
                    table: self.path.to_string(),
                    source: DeltaTableError::Generic(format!(
                        "version {v} does not exist yet (the latest is {})",
                        self.version()
                    )),
                })
            }
            AsOf::Version(v) => match u64::try_from(*v) {
                Ok(v) => self.table.load_version(v).await,
                Err(_) => return Ok(false),
            },
            AsOf::Time(t) => self.table.load_with_datetime(*t).await,
        };
        match (moved, at) {
            // A time before the first commit finds the first: the table was not there yet.
            (Ok(()), AsOf::Time(t)) => {
                use object_store::ObjectStoreExt;
                let store = self.table.log_store();
                let commit = store
                    .log_path()
                    .clone()
                    .join(format!("{:020}.json", self.version().max(0)));
                let written = store
                    .object_store(None)
                    .head(&commit)
                    .await
                    .map_err(|e| self.err(e.into()))?
                    .last_modified;
                Ok(written <= *t)
            }
            (Ok(()), AsOf::Version(_)) => Ok(true),
            (Err(DeltaTableError::InvalidVersion(_)), _) => Ok(false),
            (Err(e), _) => Err(self.err(e)),
        }
    }

    /// Re-reads the log to see commits made since opening.
    pub async fn refresh(&mut self) -> Result<(), LakeError> {
        self.table
            .update_state()
            .await
            .map_err(|e| LakeError::Delta {
                table: self.path.to_string(),
                source: e,
            })
    }

    /// The table's Arrow schema (source columns and change columns).
    pub fn schema(&self) -> Result<SchemaRef, LakeError> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let kernel = snapshot.schema();
        let arrow: Schema = kernel
            .as_ref()
            .try_into_arrow()
            .map_err(|e| self.err(e.into()))?;
        Ok(Arc::new(arrow))
    }

    /// The columns whose values are folder names (`_sluice_ingest_date=2026-12-06/`), in no
    /// data file.
    pub fn partition_columns(&self) -> Result<Vec<String>, LakeError> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        Ok(snapshot.metadata().partition_columns().to_vec())
    }

    /// The key columns recorded at creation ([`PRIMARY_KEY_PROPERTY`], comma-separated);
    /// empty for a table without a key.
    pub fn primary_key(&self) -> Vec<String> {
        self.property(PRIMARY_KEY_PROPERTY)
            .map(|k| k.split(',').map(String::from).collect())
            .unwrap_or_default()
    }

    /// A table property set at creation (e.g. [`PRIMARY_KEY_PROPERTY`]).
    pub fn property(&self, key: &str) -> Option<String> {
        self.table
            .snapshot()
            .ok()?
            .metadata()
            .configuration()
            .get(key)
            .cloned()
    }

    /// The table's schema catalog. A table written before sluice kept one gets a first
    /// version made of its current columns.
    pub fn schema_history(&self) -> Result<SchemaHistory, LakeError> {
        match self.property(SCHEMA_HISTORY_PROPERTY) {
            Some(json) => serde_json::from_str(&json).map_err(|err| LakeError::Location {
                location: format!("{} ({SCHEMA_HISTORY_PROPERTY})", self.path),
                message: format!("unreadable schema history: {err}"),
            }),
            None => Ok(SchemaHistory::new(
                &data_schema(self.schema()?.as_ref()),
                0,
                String::new(),
            )),
        }
    }

    /// Commits a schema change: `add` appended to the columns (nullable) and `changes` recorded
    /// as the next catalog version, in one Delta metadata commit. Data written afterwards may
    /// fill the new columns; older files read them as NULL.
    pub async fn evolve(
        &mut self,
        add: &[arrow::datatypes::Field],
        changes: Vec<SchemaChange>,
    ) -> Result<i64, LakeError> {
        self.evolve_with(add, changes, &[]).await
    }

    /// [`LakeTable::evolve`], also setting table `properties` in the same commit (a source's
    /// column definitions that go with the new schema). With no changes, only the properties.
    pub async fn evolve_with(
        &mut self,
        add: &[arrow::datatypes::Field],
        changes: Vec<SchemaChange>,
        properties: &[(String, String)],
    ) -> Result<i64, LakeError> {
        let current = self.schema()?;
        let mut fields: Vec<arrow::datatypes::FieldRef> =
            current.fields().iter().cloned().collect();
        fields.extend(add.iter().map(|f| Arc::new(f.clone().with_nullable(true))));
        let grown = Schema::new(fields);
        let kernel: StructType = (&grown)
            .try_into_kernel()
            .map_err(|err| self.err(err.into()))?;
        let mut history = self.schema_history()?;
        let next_seq = self.last_seq().await? + 1;
        let changed = !changes.is_empty();
        if changed {
            history.record(
                &data_schema(&grown),
                changes,
                self.version() + 1,
                next_seq,
                now_rfc3339(),
            );
        }
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&kernel)
            .and_then(|m| {
                m.add_config_key(
                    SCHEMA_HISTORY_PROPERTY.to_string(),
                    serde_json::to_string(&history).expect("history serializes"),
                )
            })
            .and_then(|m| {
                properties
                    .iter()
                    .try_fold(m, |m, (k, v)| m.add_config_key(k.clone(), v.clone()))
            })
            .map_err(|e| self.err(e.into()))?;
        let added: StructType = (&Schema::new(add.to_vec()))
            .try_into_kernel()
            .map_err(|err| self.err(err.into()))?;
        let operation = match changed || !add.is_empty() {
            true => DeltaOperation::AddColumn {
                fields: added.fields().cloned().collect(),
            },
            false => DeltaOperation::SetTableProperties {
                properties: properties.iter().cloned().collect(),
            },
        };
        let actions: Vec<Action> = vec![metadata.into()];
        let finalized = CommitBuilder::from(CommitProperties::default())
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(|e| self.err(e))?;
        let version = finalized.version() as i64;
        self.refresh().await?;
        Ok(version)
    }

    /// Gives a table created before its change columns were named for statistics (a wide one
    /// loses them past the 32nd column) the property, in one metadata commit; true if it did.
    /// A table whose property names a decimal its statistics cannot hold exactly (written
    /// before [`exact_in_stats`]) has it taken out likewise.
    pub async fn keep_change_column_stats(&mut self) -> Result<bool, LakeError> {
        let schema = self.schema()?;
        let columns = match self.property(STATS_COLUMNS_PROPERTY) {
            None => stats_columns(schema.as_ref()),
            Some(listed) => {
                let inexact = |name: &str| {
                    schema
                        .field_with_name(name)
                        .is_ok_and(|f| !exact_in_stats(f.data_type()))
                };
                if !listed.split(',').any(inexact) {
                    return Ok(false);
                }
                listed
                    .split(',')
                    .filter(|n| !inexact(n))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        self.evolve_with(
            &[],
            Vec::new(),
            &[(STATS_COLUMNS_PROPERTY.to_string(), columns)],
        )
        .await?;
        Ok(true)
    }

    /// The version recorded for an application transaction id, if any commit recorded one.
    pub async fn app_version(&self, app_id: &str) -> Result<Option<i64>, LakeError> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.err(e))
    }

    /// The version of every application transaction id, read in one replay of the log (one
    /// [`LakeTable::app_version`] replays it per id).
    pub async fn app_versions(&self) -> Result<HashMap<String, i64>, LakeError> {
        let engine = self.table.log_store().engine(None);
        let (url, version) = (self.url().clone(), self.version().max(0) as u64);
        let replay = tokio::task::spawn_blocking(move || {
            crate::txns::app_versions(&url, version, engine.as_ref())
        });
        let batch = |message: String| LakeError::Batch {
            table: self.path.to_string(),
            message,
        };
        replay
            .await
            .map_err(|e| batch(format!("log replay task: {e}")))?
            .map_err(|e| batch(format!("reading the log's positions: {e}")))
    }

    /// The last `_sluice_seq` committed (0 for an empty table).
    pub async fn last_seq(&self) -> Result<i64, LakeError> {
        Ok(self.app_version(SEQ_APP_ID).await?.unwrap_or(0))
    }

    /// Rows in the table, from the commit statistics (no data is read).
    pub fn row_count(&self) -> Result<u64, LakeError> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let mut rows = 0u64;
        for f in snapshot.log_data().iter() {
            rows += f.num_records().unwrap_or(0) as u64;
        }
        Ok(rows)
    }

    /// The data files of this snapshot that may hold changes with `after < _sluice_seq <=
    /// upto`, judged by each file's commit statistics (a file without them is listed), in
    /// path order. For warehouses that copy the lake's files themselves (Redshift).
    pub fn data_files(&self, after: i64, upto: i64) -> Result<Vec<DataFile>, LakeError> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let mut files = Vec::new();
        for f in snapshot.log_data().iter() {
            let seq_range = f.stats().and_then(|s| seq_range(&s));
            if let Some((min, max)) = seq_range {
                if max <= after || min > upto {
                    continue;
                }
            }
            files.push(DataFile {
                path: f.path().into_owned(),
                size: f.size().max(0) as u64,
                rows: f.num_records().map(|n| n as u64),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Bytes of the data files (Parquet, compressed) the last commit through this handle added.
    pub fn committed_bytes(&self) -> u64 {
        self.committed_bytes
    }

    /// The table's URL (`file:///…/changes/src/t/` or `s3://bucket/…/`).
    pub fn url(&self) -> &url::Url {
        self.table.table_url()
    }

    /// The object store rooted at the table's folder.
    pub fn store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.table.log_store().object_store(None)
    }

    /// A writer for one commit's worth of batches.
    pub fn writer(&self) -> Result<LakeWriter, LakeError> {
        let schema = self.schema()?;
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let metadata = snapshot.metadata();
        let configuration = metadata.configuration();
        let num_indexed = configuration
            .get("delta.dataSkippingNumIndexedCols")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(deltalake::table::config::DEFAULT_NUM_INDEX_COLS);
        let stats_columns = configuration
            .get(STATS_COLUMNS_PROPERTY)
            .map(|v| v.split(',').map(str::to_string).collect());
        let config = WriterConfig::new(
            schema.clone(),
            metadata.partition_columns().to_vec(),
            Some(self.writer_properties()),
            std::num::NonZeroU64::new(self.files.target_bytes.max(1)),
            Some(ROW_GROUP_ROWS),
            delta_kernel::table_properties::DataSkippingNumIndexedCols::NumColumns(num_indexed),
            stats_columns,
        );
        Ok(LakeWriter::new(
            FileWriter::new(self.store(), config),
            schema,
            self.path.to_string(),
        ))
    }

    /// How data files are written: the lake's compression, bounded row groups.
    fn writer_properties(&self) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(self.files.compression)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build()
    }

    /// Rewrites the table's small data files into files of the lake's target size
    /// (Delta `OPTIMIZE`, bin-packing within each ingestion day). The commit changes no data:
    /// every position, every `_sluice_seq` and every earlier version stay readable (the files
    /// it replaces are only marked removed, as Delta time travel needs).
    pub async fn compact(&mut self) -> Result<Compacted, LakeError> {
        let before = self.version();
        let target = std::num::NonZeroU64::new(self.files.target_bytes.max(1 << 20))
            .expect("at least 1 MiB");
        let (table, metrics) = self
            .table
            .clone()
            .optimize()
            .with_target_size(target)
            .with_writer_properties(self.writer_properties())
            .await
            .map_err(|e| self.err(e))?;
        self.table = table;
        Ok(Compacted {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            version: (self.version() != before).then(|| self.version()),
        })
    }
}

/// What [`LakeTable::compact`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compacted {
    pub files_removed: u64,
    pub files_added: u64,
    /// The table version of the compaction commit (None: nothing to compact).
    pub version: Option<i64>,
}

/// One Parquet data file of a lake table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Relative to the table's folder.
    pub path: String,
    pub size: u64,
    pub rows: Option<u64>,
}

/// `(min, max)` of `_sluice_seq` from a file's Delta statistics (JSON).
fn seq_range(stats: &str) -> Option<(i64, i64)> {
    let v: serde_json::Value = serde_json::from_str(stats).ok()?;
    let min = v.get("minValues")?.get(SEQ)?.as_i64()?;
    let max = v.get("maxValues")?.get(SEQ)?.as_i64()?;
    Some((min, max))
}

/// Batches on their way into one lake commit. Data files are written as the buffer fills;
/// nothing is visible to readers until [`LakeWriter::commit`].
///
/// Parquet encoding runs in a task of its own, fed through a short queue: the caller goes
/// on reading its input (the next file) while earlier rows are encoded, as a stream's reader
/// and writer overlap.
pub struct LakeWriter {
    /// The table's columns, which every batch is fitted to.
    schema: arrow::datatypes::SchemaRef,
    to_encoder: Option<tokio::sync::mpsc::Sender<RecordBatch>>,
    encoder: Option<tokio::task::JoinHandle<Result<Vec<Action>, DeltaTableError>>>,
    /// Data files written out (set once the encoder has finished).
    adds: Vec<Action>,
    rows: u64,
    table: String,
    /// Batches held back to be written as one (see [`LakeWriter::write_pending`]).
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
}

/// A writer dropped without commit or abandon (an error on the way) writes nothing more.
impl Drop for LakeWriter {
    fn drop(&mut self) {
        if let Some(encoder) = self.encoder.take() {
            encoder.abort();
        }
    }
}

/// Coalesced batches queued for the encoder: bounds the memory between the two.
const ENCODER_QUEUE: usize = 1;

/// Encodes batches into the table's Parquet files, streamed to the store row group by row
/// group (a file ends at the lake's file size); the data files once the queue closes.
/// Nothing holds a whole file: deltalake's `RecordBatchWriter`, used before, kept each file
/// in memory until flushed and copied it at every write (to recover from a failed one).
async fn encode(
    mut inner: FileWriter,
    mut batches: tokio::sync::mpsc::Receiver<RecordBatch>,
) -> Result<Vec<Action>, DeltaTableError> {
    while let Some(batch) = batches.recv().await {
        inner.write(&batch).await?;
    }
    Ok(inner.close().await?.into_iter().map(Action::Add).collect())
}

impl LakeWriter {
    fn new(inner: FileWriter, schema: SchemaRef, table: String) -> LakeWriter {
        let (tx, rx) = tokio::sync::mpsc::channel(ENCODER_QUEUE);
        LakeWriter {
            schema,
            to_encoder: Some(tx),
            encoder: Some(tokio::spawn(encode(inner, rx))),
            adds: Vec::new(),
            rows: 0,
            table,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
        }
    }

    fn err(&self, source: DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.table.clone(),
            source,
        }
    }

    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), LakeError> {
        self.rows += batch.num_rows() as u64;
        // The table's columns by name (columns added by a schema change come after the change
        // columns; one the batch lacks is NULL; a value off its column's type goes to the
        // column's variant), with the table's exact field metadata and nullability.
        let batch = sluice_core::conform::conform(&batch, &self.schema).map_err(|message| {
            LakeError::Batch {
                table: self.table.clone(),
                message,
            }
        })?;
        self.pending_rows += batch.num_rows();
        self.pending_bytes += batch.get_array_memory_size();
        self.pending.push(batch);
        if self.pending_rows >= ROW_GROUP_ROWS || self.pending_bytes >= COALESCE_BYTES {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Hands the batches held back to the encoder as one. Every batch the encoder takes is
    /// split by ingestion day (a sort and a copy) and written as a Parquet write of its own,
    /// so many small batches (a folder of small files) cost that many times over: coalesced,
    /// they cost it once per row group.
    async fn write_pending(&mut self) -> Result<(), LakeError> {
        let batch = match self.pending.len() {
            0 => return Ok(()),
            1 => self.pending.pop().expect("one batch"),
            _ => arrow::compute::concat_batches(&self.schema, &self.pending).map_err(|source| {
                LakeError::Arrow {
                    table: self.table.clone(),
                    source,
                }
            })?,
        };
        self.pending.clear();
        (self.pending_rows, self.pending_bytes) = (0, 0);
        let sent = match &self.to_encoder {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => false,
        };
        if !sent {
            // The encoder stopped: its error says why.
            self.finish().await?;
            return Err(LakeError::Batch {
                table: self.table.clone(),
                message: "the Parquet encoder stopped".into(),
            });
        }
        Ok(())
    }

    /// Closes the queue and waits for the encoder's last data files.
    async fn finish(&mut self) -> Result<(), LakeError> {
        self.to_encoder = None;
        let Some(encoder) = self.encoder.take() else {
            return Ok(());
        };
        let adds = encoder
            .await
            .map_err(|e| LakeError::Batch {
                table: self.table.clone(),
                message: format!("Parquet encoder task: {e}"),
            })?
            .map_err(|e| self.err(e))?;
        self.adds.extend(adds);
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Gives up what was written: the data files flushed so far are deleted (best effort:
    /// a file left behind is unreferenced by the log, so no reader sees it).
    pub async fn abandon(mut self, table: &LakeTable) {
        use object_store::ObjectStoreExt;
        self.pending.clear();
        if let Err(e) = self.finish().await {
            tracing::warn!(table = %self.table, error = %e, "abandoning a lake write");
        }
        let store = table.store();
        for action in &self.adds {
            let Action::Add(add) = action else { continue };
            let Ok(path) = object_store::path::Path::from_url_path(&add.path) else {
                continue;
            };
            if let Err(e) = store.delete(&path).await {
                tracing::warn!(table = %self.table, file = %add.path, error = %e, "an abandoned data file stays (unreferenced)");
            }
        }
    }

    /// Commits everything written, together with the position: application transactions
    /// (`(app_id, version)`) and commit metadata. Returns the new table version, or None when
    /// there was nothing to commit.
    ///
    /// This is the only place a position advances, and it advances atomically with its data.
    pub async fn commit(
        mut self,
        table: &mut LakeTable,
        positions: Vec<(String, i64)>,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<i64>, LakeError> {
        self.write_pending().await?;
        self.finish().await?;
        if self.adds.is_empty() && positions.is_empty() {
            return Ok(None);
        }
        let props = CommitProperties::default()
            .with_metadata(metadata)
            .with_application_transactions(
                positions
                    .into_iter()
                    .map(|(id, v)| Transaction::new(id, v))
                    .collect(),
            );
        let snapshot = table.table.snapshot().map_err(|e| self.err(e))?;
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec![INGEST_DATE.to_string()]),
            predicate: None,
        };
        let bytes: i64 = self
            .adds
            .iter()
            .map(|a| match a {
                Action::Add(add) => add.size,
                _ => 0,
            })
            .sum();
        let finalized = CommitBuilder::from(props)
            .with_actions(std::mem::take(&mut self.adds))
            .build(Some(snapshot), table.table.log_store(), operation)
            .await
            .map_err(|e| self.err(e))?;
        let version = finalized.version() as i64;
        table.committed_bytes = bytes.max(0) as u64;
        table.refresh().await?;
        Ok(Some(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile names stay one segment each, distinct, and come back as they were; plain
    /// names keep the folders they always had.
    #[test]
    fn names_are_one_safe_segment_each() {
        let hostile = [
            "..",
            ".",
            "../other/orders",
            "a/b",
            "a\\b",
            "a?b",
            "a#b",
            "100%",
            "%2F",
            "~7E",
            "~",
            "a:b",
            "ünï 😀",
            "x".repeat(64).as_str(),
            "a.b",
            "a~2Eb",
        ]
        .map(String::from);
        let mut seen = std::collections::HashSet::new();
        for name in &hostile {
            let seg = segment(name);
            assert!(
                !seg.contains(['/', '\\', '?', '#', '%']),
                "{name:?} -> {seg}"
            );
            assert!(
                seg.is_empty() || !seg.chars().all(|c| c == '.'),
                "{name:?} -> {seg}"
            );
            assert_eq!(&name_of(&seg), name, "{seg}");
            assert!(
                seen.insert(seg.clone()),
                "{name:?} aliases another name as {seg}"
            );
            let url = url::Url::parse("file:///lake/")
                .unwrap()
                .join(&format!("changes/s/{seg}/"))
                .unwrap();
            assert!(
                url.path().starts_with("/lake/changes/s/")
                    && url.query().is_none()
                    && url.fragment().is_none(),
                "{name:?} leaves its folder: {url}"
            );
        }
        for plain in ["orders", "order_items", "Orders-2024", "v1.2", "ünï"] {
            assert_eq!(segment(plain), plain);
        }
    }
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};
    use sluice_core::change::{stamp_rows, Op};

    /// Statistics are kept only where they are exact: a decimal wider than a double's digits
    /// gets none (its rounded maximum could hide a match, or overflow its type).
    #[test]
    fn wide_decimals_keep_no_statistics() {
        let schema = Schema::new(vec![
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new("huge", DataType::Decimal128(38, 10), true),
            Field::new("ok", DataType::Boolean, true),
            Field::new(SEQ, DataType::Int64, true),
        ]);
        assert_eq!(stats_columns(&schema), format!("{SEQ},price,ok"));
    }

    /// A load's files are chosen by the commits' `_sluice_seq` statistics: a range gets the
    /// files that may hold it and no others.
    #[test]
    fn data_files_by_seq_range() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let lake = Lake::new(dir.path().to_str().unwrap(), Default::default()).unwrap();
            let path = TablePath::changes("shop", "orders");
            let batch = |first: i64| {
                let data = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
                    vec![Arc::new(Int64Array::from(vec![
                        first,
                        first + 1,
                        first + 2,
                    ]))],
                )
                .unwrap();
                stamp_rows(
                    &data,
                    &[Op::Insert; 3],
                    &[None; 3],
                    first,
                    chrono::Utc::now(),
                )
                .unwrap()
            };
            let mut table = LakeTable::create(&lake, &path, &batch(1).schema(), HashMap::new())
                .await
                .unwrap();
            for first in [1, 4, 7] {
                let mut w = table.writer().unwrap();
                w.write(batch(first)).await.unwrap();
                w.commit(
                    &mut table,
                    vec![(SEQ_APP_ID.into(), first + 2)],
                    Default::default(),
                )
                .await
                .unwrap();
            }
            let rows = |after, upto| -> Vec<u64> {
                table
                    .data_files(after, upto)
                    .unwrap()
                    .iter()
                    .map(|f| f.rows.unwrap())
                    .collect()
            };
            assert_eq!(rows(0, 9), vec![3, 3, 3]);
            assert_eq!(table.data_files(2, 7).unwrap().len(), 3);
            assert!(table.data_files(9, 20).unwrap().is_empty());
            // Each commit's range picks its own file.
            let only = |after, upto| {
                let files = table.data_files(after, upto).unwrap();
                assert_eq!(files.len(), 1, "{after}..{upto}: {files:?}");
                files[0].clone()
            };
            let (first, second, third) = (only(0, 3), only(3, 6), only(6, 9));
            assert!(first != second && second != third && first != third);
            assert!(
                second.size > 0 && second.path.ends_with(".parquet"),
                "{second:?}"
            );
            let all = table.data_files(0, 9).unwrap();
            assert!(
                all.iter()
                    .all(|f| f.path.starts_with("_sluice_ingest_date=")),
                "{all:?}"
            );
            // The paths resolve in the table's store, which is rooted at the table's folder
            // (a warehouse reads them and writes its manifest beside them).
            use object_store::ObjectStoreExt;
            let store = table.store();
            for f in &all {
                let path = object_store::path::Path::parse(&f.path).unwrap();
                assert_eq!(store.head(&path).await.unwrap().size, f.size, "{f:?}");
            }
            store
                .put(
                    &object_store::path::Path::from("_probe/x"),
                    b"x".to_vec().into(),
                )
                .await
                .unwrap();
            assert!(dir.path().join("changes/shop/orders/_probe/x").exists());
            assert!(
                table
                    .url()
                    .as_str()
                    .trim_end_matches('/')
                    .ends_with("changes/shop/orders"),
                "{}",
                table.url()
            );
        });
    }

    /// The positions read in one replay equal the ones read id by id, across a checkpoint
    /// (deltalake writes one every 100 commits) and with ids committed again later.
    #[test]
    fn every_position_in_one_replay() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let lake = Lake::new(dir.path().to_str().unwrap(), Default::default()).unwrap();
            let path = TablePath::changes("drops", "files");
            let schema = Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new(INGEST_DATE, DataType::Utf8, true),
            ]);
            let mut table = LakeTable::create(&lake, &path, &schema, HashMap::new())
                .await
                .unwrap();
            assert!(table.app_versions().await.unwrap().is_empty());
            for i in 0..130i64 {
                // Every tenth commit takes file 0 again at a new version.
                let mut positions = vec![(format!("file:{i}"), 1000 + i), ("sluice.seq".into(), i)];
                if i % 10 == 0 {
                    positions.push(("file:0".into(), 5000 + i));
                }
                let w = table.writer().unwrap();
                w.commit(&mut table, positions, Default::default())
                    .await
                    .unwrap();
            }
            let checkpoints = std::fs::read_dir(dir.path().join("changes/drops/files/_delta_log"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .contains("checkpoint")
                })
                .count();
            assert!(checkpoints > 0, "a checkpoint was written");
            let all = table.app_versions().await.unwrap();
            assert_eq!(all.len(), 131, "130 files and the seq");
            assert_eq!(all["file:0"], 5120);
            assert_eq!(all["file:7"], 1007);
            assert_eq!(all["sluice.seq"], 129);
            for (id, version) in &all {
                assert_eq!(table.app_version(id).await.unwrap(), Some(*version), "{id}");
            }
        });
    }
}
