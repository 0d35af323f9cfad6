//! The files source: nightly drops and folders of CSV/TSV/delimited text, JSON (lines or
//! arrays), Parquet and ORC, text optionally `.gz`/`.zst`, on local disk or S3.
//!
//! The engine asks for the files not yet consumed ([`FilesSource::list`] + the lake's
//! positions), fetches each ([`FilesSource::fetch`]: local files are read in place, remote ones
//! streamed to a temporary file, so memory stays flat whatever the size), and reads it
//! ([`FilesSource::read`]) into batches of the table's schema plus rejects for the quarantine.

mod bound;
mod columnar;
mod delimited;
mod infer;
pub(crate) mod json;
pub mod listing;
mod mapping;
mod orc_file;
mod parquet_file;
pub(crate) mod rows;
mod source;

use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use sluice_core::config::{
    single_byte, split_column, FileFormat, FilesConfig, Nested, DEFAULT_FILES_PER_COMMIT,
    DEFAULT_MAX_DEPTH, DEFAULT_SAMPLE_FILES, DEFAULT_SAMPLE_ROWS, DEFAULT_SETTLE_SECS,
};
use sluice_core::store::StoreOptions;

pub use infer::{spread_sample, ColumnReport, FileTypes, InferredSchema};
pub use listing::{FileEntry, FileLocation, PartitionValue};
pub use mapping::ColumnMapping;

use crate::values::Inference;
use crate::SourceError;
use bound::RecordBound;

/// The longest record read by default: 64 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 << 20;

/// Rows per Arrow batch: large enough to amortise per-batch work, small enough (a few MB for
/// typical rows) to keep memory flat.
pub const BATCH_ROWS: usize = 64 * 1024;

pub use crate::source::{ReadEvent, ReadStats};

/// How delimited text is read.
#[derive(Debug, Clone)]
pub struct TextOptions {
    pub delimiter: u8,
    pub quote: u8,
    pub header: bool,
    pub null_value: String,
}

/// A file ready to read: in place, or a temporary local copy of a remote one.
pub struct LocalFile {
    path: PathBuf,
    _temp: Option<tempfile::TempPath>,
    /// A copy's object as it was fetched (None: read in place, check it after reading).
    pub read_as: Option<FileEntry>,
}

/// The columns one file brings (see [`FilesSource::incoming_schema`]).
#[derive(Debug)]
pub struct IncomingSchema {
    pub schema: SchemaRef,
    /// They are all the columns the file has (a header, a Parquet schema): table columns
    /// missing from them were dropped by the source.
    pub complete: bool,
}

#[derive(Clone)]
pub struct FilesSource {
    pub name: String,
    pub table: String,
    location: FileLocation,
    format: Option<FileFormat>,
    delimiter: Option<u8>,
    quote: u8,
    header: Option<bool>,
    null_value: String,
    declared: Option<SchemaRef>,
    sample_rows: usize,
    sample_files: usize,
    /// Folder partitions become columns (see [`listing::partitions_of`]).
    partitions: bool,
    /// Levels of JSON objects flattened into `parent__child` columns (0: kept as JSON text).
    flatten: usize,
    /// Key columns of the table: rows without a value there are quarantined.
    key: Vec<String>,
    /// A local file modified this recently may still be being written.
    settle: std::time::Duration,
    /// The longest record read (see [`bound`]).
    max_record_bytes: u64,
    /// Files landed in one lake commit, at most.
    files_per_commit: usize,
    /// File columns renamed, dropped and typed on the way in.
    mapping: ColumnMapping,
}

impl FilesSource {
    /// Builds the source from its (validated) config; `url` is already resolved against the
    /// config directory.
    pub fn new(
        name: &str,
        table: &str,
        cfg: &FilesConfig,
        url: &str,
        opts: &StoreOptions,
    ) -> Result<FilesSource, SourceError> {
        let config_err = |message: String| SourceError::Config {
            source_name: name.to_string(),
            message,
        };
        let location =
            FileLocation::with_marker(url, cfg.pattern.clone(), cfg.ready_marker.clone(), opts)
                .map_err(config_err)?;
        let declared = match &cfg.columns {
            None => None,
            Some(cols) => {
                let fields = cols
                    .iter()
                    .map(|c| split_column(c).map(|(n, t)| Field::new(n, t, true)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(config_err)?;
                Some(Arc::new(Schema::new(fields)))
            }
        };
        Ok(FilesSource {
            name: name.to_string(),
            table: table.to_string(),
            location,
            format: cfg.format,
            delimiter: cfg.delimiter.as_deref().and_then(single_byte),
            quote: cfg.quote.as_deref().and_then(single_byte).unwrap_or(b'"'),
            header: cfg.header,
            null_value: cfg.null_value.clone().unwrap_or_default(),
            declared,
            sample_rows: cfg.sample_rows.unwrap_or(DEFAULT_SAMPLE_ROWS),
            sample_files: cfg.sample_files.unwrap_or(DEFAULT_SAMPLE_FILES),
            partitions: cfg.partitions.unwrap_or(false),
            flatten: match cfg.nested {
                Some(Nested::Flatten) => cfg.max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
                Some(Nested::Json) | None => 0,
            },
            key: Vec::new(),
            settle: std::time::Duration::from_secs(cfg.settle_secs.unwrap_or(DEFAULT_SETTLE_SECS)),
            max_record_bytes: cfg.max_record_bytes.unwrap_or(DEFAULT_MAX_RECORD_BYTES),
            files_per_commit: cfg.files_per_commit.unwrap_or(DEFAULT_FILES_PER_COMMIT),
            mapping: ColumnMapping::new(
                cfg.columns_map.as_ref(),
                cfg.drop_columns.as_ref(),
                cfg.column_types.as_ref(),
            )
            .map_err(config_err)?,
        })
    }

    /// How long a file must be left unchanged before it is read, where files can be seen
    /// while still being written (local folders; zero on object stores, where an object
    /// appears only once its upload completed).
    pub fn settle(&self) -> std::time::Duration {
        match self.location.can_grow() {
            true => self.settle,
            false => std::time::Duration::ZERO,
        }
    }

    /// The file as the store has it now (None: gone).
    pub async fn stat(&self, entry: &FileEntry) -> Result<Option<FileEntry>, SourceError> {
        self.location.stat(entry).await
    }

    /// The table's key columns: rows with NULL in one are quarantined (merge cannot place
    /// them).
    pub fn with_key(mut self, key: &[String]) -> FilesSource {
        self.key = key.to_vec();
        self
    }

    /// Files landed in one lake commit, at most.
    pub fn files_per_commit(&self) -> usize {
        self.files_per_commit
    }

    pub fn declared_schema(&self) -> Option<SchemaRef> {
        self.declared.clone()
    }

    /// The files inference samples out of `listed` (see [`spread_sample`]).
    pub fn inference_sample(&self, listed: &[FileEntry]) -> Vec<FileEntry> {
        spread_sample(listed, self.sample_files)
    }

    /// Whether a column of the table comes from `entry`'s folder names.
    fn is_partition(&self, entry: &FileEntry, column: &str) -> bool {
        self.partitions && entry.partitions.iter().any(|p| p.key == column)
    }

    /// Every file of the source, oldest date first.
    pub async fn list(&self) -> Result<Vec<FileEntry>, SourceError> {
        self.location.list().await
    }

    /// Makes a file readable locally, streaming a remote one to a temporary file. The file
    /// says which version of the object it holds ([`LocalFile::read_as`]).
    pub async fn fetch(&self, entry: &FileEntry) -> Result<LocalFile, SourceError> {
        if let Some(path) = self.location.local_path(entry) {
            return Ok(LocalFile {
                path,
                _temp: None,
                read_as: None,
            });
        }
        let io = |source: std::io::Error| SourceError::Io {
            file: entry.id.clone(),
            source,
        };
        let get = self
            .location
            .store()
            .get(&entry.path)
            .await
            .map_err(|e| SourceError::File {
                file: entry.id.clone(),
                message: e.to_string(),
            })?;
        let temp = tempfile::NamedTempFile::new().map_err(io)?.into_temp_path();
        let mut out = tokio::fs::File::create(&temp).await.map_err(io)?;
        // The object may have been replaced since it was listed: this is what is read.
        let read_as = FileEntry {
            modified: get.meta.last_modified,
            size: get.meta.size,
            etag: get.meta.e_tag.clone(),
            ..entry.clone()
        };
        let mut stream = get.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| SourceError::File {
                file: entry.id.clone(),
                message: e.to_string(),
            })?;
            out.write_all(&chunk).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        Ok(LocalFile {
            path: temp.to_path_buf(),
            _temp: Some(temp),
            read_as: Some(read_as),
        })
    }

    fn format_of(&self, entry: &FileEntry) -> FileFormat {
        if let Some(f) = self.format {
            return f;
        }
        let name = strip_compression(&entry.id).to_ascii_lowercase();
        if name.ends_with(".parquet") {
            FileFormat::Parquet
        } else if name.ends_with(".orc") {
            FileFormat::Orc
        } else if name.ends_with(".json") || name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            FileFormat::Json
        } else if name.ends_with(".tsv") {
            FileFormat::Tsv
        } else {
            FileFormat::Csv
        }
    }

    /// The schema a columnar file (Parquet, ORC) declares; None for text formats, which are
    /// sampled.
    fn columnar_schema(
        &self,
        entry: &FileEntry,
        file: &LocalFile,
        format: FileFormat,
    ) -> Option<Result<SchemaRef, SourceError>> {
        match format {
            FileFormat::Parquet => Some(parquet_file::schema(&file.path, &entry.id)),
            FileFormat::Orc => Some(orc_file::schema(&file.path, &entry.id)),
            FileFormat::Csv | FileFormat::Tsv | FileFormat::Json => None,
        }
    }

    fn text_options(&self, entry: &FileEntry, format: FileFormat) -> TextOptions {
        // TPC-H `.tbl` files: `|`-delimited, no header, unless the config says otherwise.
        let tbl = strip_compression(&entry.id)
            .to_ascii_lowercase()
            .ends_with(".tbl");
        let delimiter = self.delimiter.unwrap_or(match format {
            FileFormat::Tsv => b'\t',
            _ if tbl => b'|',
            _ => b',',
        });
        TextOptions {
            delimiter,
            quote: self.quote,
            header: self.header.unwrap_or(!tbl),
            null_value: self.null_value.clone(),
        }
    }

    /// Samples the rows of a JSON or delimited file into `names`/`infer`; true when the file
    /// names all its columns (a header line).
    fn sample_text(
        &self,
        entry: &FileEntry,
        file: &LocalFile,
        format: FileFormat,
        names: &mut Vec<String>,
        infer: &mut Vec<Inference>,
    ) -> Result<bool, SourceError> {
        let input = open_decoded(&file.path, &entry.id)?;
        let bound = RecordBound::new(self.max_record_bytes);
        if format == FileFormat::Json {
            json::sample(
                input,
                &entry.id,
                self.flatten,
                self.sample_rows,
                &bound,
                names,
                infer,
            )?;
            return Ok(false);
        }
        let opts = self.text_options(entry, format);
        let rows = self.sample_rows;
        delimited::sample(input, &entry.id, &opts, rows, &bound, names, infer)?;
        Ok(opts.header)
    }

    /// The columns of one file as the table should see them, to hold against the table's
    /// source columns `table` (see `sluice_core::schema::reconcile`). Parquet gives its own
    /// schema. Text formats are sampled: a column whose sampled values all parse as the table's
    /// type keeps that type, so a file of all-integers in a decimal column (or of all-NULLs) is
    /// no change; otherwise it takes its own inferred type. Headerless text has fixed positions,
    /// so only its known columns are held (their types may change; none are new or dropped).
    pub fn incoming_schema(
        &self,
        entry: &FileEntry,
        file: &LocalFile,
        table: &Schema,
    ) -> Result<IncomingSchema, SourceError> {
        let format = self.format_of(entry);
        let (mut fields, complete): (Vec<Field>, bool) =
            if let Some(own) = self.columnar_schema(entry, file, format) {
                let own = own?;
                let fields = own.fields().iter().map(|f| f.as_ref().clone());
                (self.mapping.fields_of_file(fields), true)
            } else {
                let mut names: Vec<String> = Vec::new();
                let mut infer: Vec<Inference> = Vec::new();
                let complete = self.sample_text(entry, file, format, &mut names, &mut infer)?;
                let positional = !complete && !matches!(format, FileFormat::Json);
                let fields = names
                    .iter()
                    .zip(&infer)
                    .filter_map(|(n, i)| Some((self.mapping.table_name(n)?, i)))
                    .filter(|(n, _)| !positional || table.index_of(n).is_ok())
                    .map(
                        |(n, i)| match (self.mapping.declared_type(n), table.field_with_name(n)) {
                            (Some(t), _) => Field::new(n, t.clone(), true),
                            (None, Err(_)) if i.holds_json() => sluice_core::types::json_field(n),
                            (None, _) => Field::new(n, held_type(i, table, n), true),
                        },
                    )
                    .collect();
                (fields, complete)
            };
        if self.partitions {
            fields.retain(|f| !self.is_partition(entry, f.name()));
            for p in &entry.partitions {
                let mut i = Inference::default();
                match &p.value {
                    Some(v) => i.observe_text(v),
                    None => i.observe_null(),
                }
                fields.push(Field::new(&p.key, held_type(&i, table, &p.key), true));
            }
        }
        Ok(IncomingSchema {
            schema: Arc::new(Schema::new(fields)),
            complete,
        })
    }

    /// Reads one file into batches of `schema` and rejects, handing each to `emit` as it goes
    /// (memory stays at one batch). `emit` failing stops the read. Partition columns take the
    /// file's folder values (or, when a value does not fit, the first variant column it fits).
    pub fn read(
        &self,
        entry: &FileEntry,
        file: &LocalFile,
        schema: &SchemaRef,
        emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
    ) -> Result<ReadStats, SourceError> {
        let folders = FolderColumns::plan(self, entry, schema)?;
        if folders.columns.is_empty() {
            return self.read_contents(entry, file, schema, emit);
        }
        let contents = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(i, _)| !folders.columns.contains(i))
                .map(|(_, f)| f.as_ref().clone())
                .collect::<Vec<_>>(),
        ));
        self.read_contents(entry, file, &contents, &mut |ev| match ev {
            ReadEvent::Rows(batch) => emit(ReadEvent::Rows(folders.complete(schema, batch)?)),
            reject => emit(reject),
        })
    }

    /// Reads the file's own columns into `table`'s (see [`mapping`]).
    fn read_contents(
        &self,
        entry: &FileEntry,
        file: &LocalFile,
        table: &SchemaRef,
        emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
    ) -> Result<ReadStats, SourceError> {
        if self.mapping.is_empty() {
            return self.read_format(entry, file, table, &self.key, emit);
        }
        let format = self.format_of(entry);
        let own = self.columnar_schema(entry, file, format).transpose()?;
        let schema = self.mapping.file_side(table, own.as_deref());
        let keys: Vec<String> = self
            .key
            .iter()
            .filter_map(|k| table.index_of(k).ok())
            .map(|i| schema.field(i).name().clone())
            .collect();
        self.read_format(entry, file, &schema, &keys, &mut |ev| match ev {
            ReadEvent::Rows(batch) => emit(ReadEvent::Rows(
                self.mapping.to_table(table, batch, &entry.id)?,
            )),
            reject => emit(reject),
        })
    }

    /// Reads the file in its format into batches of `schema`, `keys` naming its key columns.
    fn read_format(
        &self,
        entry: &FileEntry,
        file: &LocalFile,
        schema: &SchemaRef,
        keys: &[String],
        emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
    ) -> Result<ReadStats, SourceError> {
        let format = self.format_of(entry);
        match format {
            FileFormat::Parquet => parquet_file::read(&file.path, &entry.id, schema, keys, emit),
            FileFormat::Orc => orc_file::read(&file.path, &entry.id, schema, keys, emit),
            FileFormat::Json => json::read(
                open_decoded(&file.path, &entry.id)?,
                &entry.id,
                self.flatten,
                schema,
                keys,
                &RecordBound::new(self.max_record_bytes),
                emit,
            ),
            FileFormat::Csv | FileFormat::Tsv => {
                let opts = self.text_options(entry, format);
                delimited::read(
                    open_decoded(&file.path, &entry.id)?,
                    &entry.id,
                    &opts,
                    schema,
                    keys,
                    &RecordBound::new(self.max_record_bytes),
                    emit,
                )
            }
        }
    }
}

/// A column's type as `table` should see it: the table's own type when every sampled value
/// parses as it (all-integers in a decimal column, all-NULLs), else what the values say.
fn held_type(i: &Inference, table: &Schema, name: &str) -> DataType {
    match table.field_with_name(name) {
        Ok(f) if i.parses_as(f.data_type()) => f.data_type().clone(),
        _ => i.data_type(),
    }
}

/// The columns of a table one file's folder names fill, and with what.
struct FolderColumns {
    /// Partition columns and their variants: not read from the file's contents.
    columns: Vec<usize>,
    /// (column, folder value) for the column each value lands in.
    values: Vec<(usize, Option<String>)>,
    file: String,
}

impl FolderColumns {
    fn plan(
        source: &FilesSource,
        entry: &FileEntry,
        schema: &Schema,
    ) -> Result<FolderColumns, SourceError> {
        let mut plan = FolderColumns {
            columns: Vec::new(),
            values: Vec::new(),
            file: entry.id.clone(),
        };
        if !source.partitions {
            return Ok(plan);
        }
        let variants = sluice_core::schema::variants(schema);
        for p in &entry.partitions {
            let Ok(i) = schema.index_of(&p.key) else {
                continue;
            };
            plan.columns.push(i);
            plan.columns.extend(&variants[i]);
            let fits = |c: usize| {
                let t = schema.field(c).data_type();
                rows::repeat_value(t, p.value.as_deref(), 1).is_ok()
            };
            let Some(c) = std::iter::once(i)
                .chain(variants[i].iter().copied())
                .find(|&c| fits(c))
            else {
                return Err(SourceError::File {
                    file: entry.id.clone(),
                    message: format!(
                        "folder value `{}` of partition `{}` is not a {}",
                        p.value.as_deref().unwrap_or_default(),
                        p.key,
                        sluice_core::schema::type_name(schema.field(i).data_type())
                    ),
                });
            };
            plan.values.push((c, p.value.clone()));
        }
        Ok(plan)
    }

    /// `batch` (the file's contents) with the folder columns put back in `schema`'s order.
    fn complete(&self, schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch, SourceError> {
        let n = batch.num_rows();
        let err = |message: String| SourceError::File {
            file: self.file.clone(),
            message,
        };
        let mut contents = batch.columns().iter();
        let mut cols = Vec::with_capacity(schema.fields().len());
        for (i, f) in schema.fields().iter().enumerate() {
            if !self.columns.contains(&i) {
                cols.push(
                    contents.next().cloned().ok_or_else(|| {
                        err(format!("the file's rows lack column `{}`", f.name()))
                    })?,
                );
                continue;
            }
            let value = self
                .values
                .iter()
                .find(|(c, _)| *c == i)
                .and_then(|(_, v)| v.as_deref());
            cols.push(rows::repeat_value(f.data_type(), value, n).map_err(err)?);
        }
        RecordBatch::try_new(schema.clone(), cols).map_err(|e| err(e.to_string()))
    }
}

fn strip_compression(name: &str) -> &str {
    name.strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(name)
}

/// Opens a file, decompressing `.gz` (all members) and `.zst` transparently.
fn open_decoded(path: &std::path::Path, id: &str) -> Result<Box<dyn Read + Send>, SourceError> {
    let io = |source: std::io::Error| SourceError::Io {
        file: id.to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let f = BufReader::with_capacity(1 << 20, f);
    Ok(if id.ends_with(".gz") {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(f),
        ))
    } else if id.ends_with(".zst") {
        Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::stream::read::Decoder::with_buffer(f).map_err(io)?,
        ))
    } else {
        Box::new(f)
    })
}
