//! The embedded DuckDB warehouse (the default: a file beside the config, no server).
//!
//! One load, one transaction:
//!
//! ```text
//!   BEGIN
//!     read the target's ledger row                (moved since planned: refuse)
//!     CREATE SCHEMA/TABLE IF NOT EXISTS  "<source>"."<table>"      (types from the Arrow schema)
//!     CREATE TEMP TABLE "stage_…"         ← every change row: DuckDB reads the load's
//!                                           lake files itself (a local lake), else the
//!                                           Arrow appender takes the batches given
//!     merge:   DELETE target rows whose key is staged; INSERT the latest change per key
//!              (by _sluice_seq) unless it is a delete (soft: kept with _sluice_deleted);
//!              when no key repeats in the stage, every staged change is the latest
//!              (no ranking: a sort of the whole stage saved)
//!     append:  every change with _sluice_op and _sluice_seq, appended straight to the target
//!     replace: DELETE everything; INSERT the latest rows
//!     history: close each staged key's current version; INSERT every version (SCD2)
//!     (the statements are shared with every SQL warehouse: see `sql`)
//!     UPSERT _sluice.ledger (lake version, seq)
//!     DROP staging
//!   COMMIT
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use duckdb::{params, Connection};

use sluice_core::change::{is_change_column, LOADED_AT, SEQ};
use sluice_core::config::LoadMode;
use sluice_core::failpoint;
use sluice_core::names::{identifier, quote_ident as q, quote_literal};

use crate::columns::{shape_table, Columns};
use crate::sql::{
    count_and_keys_repeat, system_columns, Apply, SystemTypes, LEDGER_DDL, LEDGER_ROWS,
};
use crate::{
    Exposure, LakeFiles, LedgerEntry, LedgerMove, LedgerRow, LoadReport, Target, Warehouse,
    WarehouseError,
};

const SYSTEM_TYPES: SystemTypes = SystemTypes {
    text: "VARCHAR",
    row_id: "VARCHAR",
    bigint: "BIGINT",
    timestamptz: "TIMESTAMPTZ",
    boolean: "BOOLEAN",
};

/// DuckDB has no short identifier limit; keep names readable everywhere they may travel.
pub const MAX_IDENTIFIER: usize = 255;

pub struct DuckDb {
    conn: Connection,
    path: String,
    /// The lake files of the next load, when DuckDB reads them itself (a local lake).
    files: Option<LakeFiles>,
}

/// Where the appender writes.
#[derive(Clone, Copy)]
enum AppendTo<'a> {
    /// `(schema, table)` of the database.
    Table(&'a str, &'a str),
    /// A temporary table (the load's stage).
    Temporary(&'a str),
}

/// A load's changes as DuckDB reads them from the lake's own Parquet files: the exact files
/// of the load (never a glob: a file a crashed write left behind is not part of the table),
/// cut to the load's `_sluice_seq` range. DuckDB scans them in parallel straight into its
/// own vectors: no Arrow decoding on sluice's side, no appender.
struct LakeRead {
    /// `read_parquet(…) WHERE …`, for `SELECT … FROM`.
    from: String,
    /// The columns the files hold: files written before a column was added lack it, and
    /// `union_by_name` reads it as NULL in them, but a column no file holds must be NULL here.
    present: std::collections::HashSet<String>,
}

impl LakeRead {
    /// A lake column as the warehouse type `sql_type`.
    fn column(&self, lake_name: &str, sql_type: &str) -> String {
        match self.present.contains(lake_name) {
            true => format!("CAST({} AS {sql_type})", q(lake_name)),
            false => format!("CAST(NULL AS {sql_type})"),
        }
    }
}

/// The DuckDB type of an Arrow type: the one mapping for this warehouse.
pub fn duckdb_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) if *p <= 38 => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Time64(TimeUnit::Microsecond) => "TIME".into(),
        // Nested types in DuckDB's own: a list of lists is INTEGER[][], a struct names its
        // fields (quoted, any text), a map keeps its key type.
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", duckdb_type(f.data_type())?)
        }
        DataType::Struct(fields) => {
            let fields = fields
                .iter()
                .map(|f| Some(format!("{} {}", q(f.name()), duckdb_type(f.data_type())?)))
                .collect::<Option<Vec<_>>>()?;
            format!("STRUCT({})", fields.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                duckdb_type(kv[0].data_type())?,
                duckdb_type(kv[1].data_type())?
            ),
            _ => return None,
        },
        _ => return None,
    })
}

/// Hands memory freed during a load back to the OS. DuckDB frees its per-load buffers at
/// commit, but glibc keeps freed pages in its arenas; measured on SF10 lineitem, peak RSS was
/// 1.6 GB without this and 0.9 GB with it (DuckDB's own accounting stayed at 0.42 GB).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The Arrow type the appender is handed for a lake type (views and large types narrowed,
/// inside nested types too).
fn append_type(t: &DataType) -> DataType {
    let inner = |f: &arrow::datatypes::FieldRef| {
        Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(append_type(f.data_type())),
        )
    };
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::List(f) | DataType::LargeList(f) => DataType::List(inner(f)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(inner).collect()),
        DataType::Map(entries, sorted) => DataType::Map(inner(entries), *sorted),
        other => other.clone(),
    }
}

impl DuckDb {
    /// Opens (creating) the database file; `memory_limit` is DuckDB's (e.g. `"512MB"`).
    pub fn open(path: &str, memory_limit: &str) -> Result<DuckDb, WarehouseError> {
        if let Some(parent) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(|source| WarehouseError::Open {
            path: path.into(),
            message: source.to_string(),
            kind: sluice_core::retry::ErrorKind::Fatal,
        })?;
        let db = DuckDb {
            conn,
            path: path.into(),
            files: None,
        };
        db.exec(
            "(settings)",
            &format!("SET memory_limit = {};", quote_literal(memory_limit)),
        )?;
        db.exec("_sluice.ledger", LEDGER_DDL)?;
        Ok(db)
    }

    fn exec(&self, table: &str, sql: &str) -> Result<(), WarehouseError> {
        self.conn
            .execute_batch(sql)
            .map_err(|source| WarehouseError::Duckdb {
                table: table.into(),
                source,
            })
    }

    /// The table's column names in order (empty when it does not exist).
    fn table_columns(&self, schema: &str, table: &str) -> Result<Vec<String>, WarehouseError> {
        let e = |source| WarehouseError::Duckdb {
            table: format!("{schema}.{table}"),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position")
            .map_err(e)?;
        let names = stmt
            .query_map(params![schema, table], |r| r.get::<_, String>(0))
            .map_err(e)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        Ok(names)
    }

    /// The load's changes in the lake's files (`None`: no files, no changes).
    fn lake_read(
        &self,
        name: &str,
        files: &LakeFiles,
        upto: i64,
    ) -> Result<Option<LakeRead>, WarehouseError> {
        if files.files.is_empty() {
            return Ok(None);
        }
        let mut paths = Vec::with_capacity(files.files.len());
        for (file, _) in &files.files {
            let path = files
                .table_url
                .join(file)
                .ok()
                .and_then(|url| url.to_file_path().ok())
                .ok_or_else(|| WarehouseError::Input {
                    table: name.to_string(),
                    message: format!(
                        "lake file {file} of {} is not in a local folder",
                        files.table_url
                    ),
                })?;
            paths.push(quote_literal(&path.to_string_lossy()));
        }
        let scan = format!(
            "read_parquet([{}], union_by_name = true, hive_partitioning = false)",
            paths.join(", ")
        );
        let e = |source| WarehouseError::Duckdb {
            table: name.to_string(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare(&format!("DESCRIBE SELECT * FROM {scan}"))
            .map_err(e)?;
        let present = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        Ok(Some(LakeRead {
            from: format!(
                "{scan} WHERE {seq} > {} AND {seq} <= {upto}",
                files.after,
                seq = q(SEQ)
            ),
            present,
        }))
    }

    fn load_in_transaction(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        files: Option<LakeFiles>,
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        let name = target.display();
        let e = |source| WarehouseError::Duckdb {
            table: name.clone(),
            source,
        };
        // DuckDB takes one writing process per file; inside a process its MVCC refuses a
        // second transaction that updates the same ledger row. The check covers the rest.
        let row = self.ledger_rows_where(Some(target))?.into_iter().next();
        target.check_ledger(ledger.from, row.as_ref())?;
        let upto = ledger.to;
        let columns = Columns::new(schema, MAX_IDENTIFIER);
        let data = columns.typed(target, |f| duckdb_type(f.data_type()))?;
        let keys = columns.keys(target)?;
        let tgt = format!("{}.{}", q(&target.schema), q(&target.table));
        let create: Vec<(String, String)> = data
            .iter()
            .cloned()
            .chain(system_columns(
                target.mode,
                target.deletes,
                target.key.is_empty(),
                &SYSTEM_TYPES,
            ))
            .collect();
        let existing = self.table_columns(&target.schema, &target.table)?;
        let shape = shape_table(target, &tgt, existing, &data, &create)?;
        if !shape.statements.is_empty() {
            self.exec(&name, &shape.statements)?;
        }
        // Nothing in the target to remove before inserting: it is new, or an image empties it.
        let target_empty = shape.created || ledger.image;
        let table_columns = shape.columns;

        // Staging: every change row, appended as Arrow.
        let stage_name = identifier(
            &format!("stage_{}_{}", target.schema, target.table),
            MAX_IDENTIFIER,
        );
        // A temporary table: it lives for the load only, so it is never written to the
        // database file (a table of its own would be, and compressed, only to be dropped).
        let stage = format!("temp.main.{}", q(&stage_name));
        let append_fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_data_type(append_type(f.data_type()))
                    .with_nullable(true)
            })
            .collect();
        let append_schema = Arc::new(Schema::new(append_fields));
        let staged = target.mode != LoadMode::Append;
        // The DuckDB type of each input column, as the appender is handed it.
        let append_types = append_schema
            .fields()
            .iter()
            .map(|f| {
                duckdb_type(f.data_type()).ok_or_else(|| WarehouseError::Type {
                    table: name.clone(),
                    column: f.name().clone(),
                    data_type: f.data_type().to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The stage's column names: the warehouse's for data, the change columns' own.
        let stage_names: Vec<String> = append_schema
            .fields()
            .iter()
            .map(|f| match is_change_column(f.name()) {
                true => f.name().clone(),
                false => columns
                    .mapped_of(f.name())
                    .expect("data column")
                    .to_string(),
            })
            .collect();
        if staged {
            let stage_cols: Vec<String> = stage_names
                .iter()
                .zip(&append_types)
                .map(|(n, t)| format!("{} {t}", q(n)))
                .collect();
            self.exec(
                &name,
                &format!(
                    "CREATE OR REPLACE TEMP TABLE {} ({});",
                    q(&stage_name),
                    stage_cols.join(", ")
                ),
            )?;
        }
        // The lake's files, when DuckDB reads them itself; else the batches given.
        let read = match files {
            Some(files) => Some(self.lake_read(&name, &files, upto.seq)?),
            None => None,
        };
        // Append mode writes straight into the target (one pass, no staging copy): the input
        // column each of the table's columns comes from, in the table's order (columns added
        // by evolve come last; None: the load time).
        let mut sources: Vec<Option<usize>> = Vec::new();
        for col in table_columns.iter().filter(|_| !staged) {
            if col == LOADED_AT {
                sources.push(None);
                continue;
            }
            let i = append_schema
                .fields()
                .iter()
                .position(|f| {
                    if is_change_column(f.name()) {
                        f.name() == col
                    } else {
                        columns.mapped_of(f.name()) == Some(col.as_str())
                    }
                })
                .ok_or_else(|| WarehouseError::Schema {
                    table: name.clone(),
                    message: format!("warehouse column `{col}` is not in the lake table"),
                })?;
            sources.push(Some(i));
        }
        // The other modes stage every change and apply them with SQL. All inside the
        // transaction. `direct`: the changes' query over the lake's files, standing in for the
        // stage.
        let mut direct: Option<String> = None;
        let changes = match (read, staged) {
            (Some(None), _) => 0,
            (Some(Some(read)), false) => {
                let select: Vec<String> = sources
                    .iter()
                    .map(|s| match s {
                        Some(i) => read.column(append_schema.field(*i).name(), &append_types[*i]),
                        // The transaction's start: the same _sluice_loaded_at SQL loads stamp.
                        None => "now()".to_string(),
                    })
                    .collect();
                let list: Vec<String> = table_columns.iter().map(|c| q(c)).collect();
                self.insert_from_lake(
                    &name,
                    &format!(
                        "INSERT INTO {tgt} ({}) SELECT {} FROM {}",
                        list.join(", "),
                        select.join(", "),
                        read.from
                    ),
                )?
            }
            (Some(Some(read)), true) => {
                let select: Vec<String> = append_schema
                    .fields()
                    .iter()
                    .zip(&append_types)
                    .zip(&stage_names)
                    .map(|((f, t), n)| format!("{} AS {}", read.column(f.name(), t), q(n)))
                    .collect();
                let files = format!("(SELECT {} FROM {})", select.join(", "), read.from);
                // Merge changes whose keys are all distinct straight from the files: each is
                // its key's latest, and nothing needs staging (asking reads the keys only).
                let unique = match target.mode == LoadMode::Merge && !keys.is_empty() {
                    true => match self.count_and_keys_repeat(&name, &files, &keys)? {
                        (n, false) => Some(n),
                        (_, true) => None,
                    },
                    false => None,
                };
                match unique {
                    Some(n) => {
                        direct = Some(files);
                        n
                    }
                    None => {
                        self.insert_from_lake(&name, &format!("INSERT INTO {stage} {files}"))?
                    }
                }
            }
            (None, false) => {
                // now() is the transaction's start: the same _sluice_loaded_at SQL loads stamp.
                let loaded_at: i64 = self
                    .conn
                    .query_row("SELECT epoch_us(now())", [], |r| r.get(0))
                    .map_err(e)?;
                let out_fields: Vec<Field> = sources
                    .iter()
                    .zip(&table_columns)
                    .map(|(s, col)| match s {
                        Some(i) => append_schema.field(*i).clone().with_name(col),
                        None => Field::new(
                            LOADED_AT,
                            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                            true,
                        ),
                    })
                    .collect();
                let out = Arc::new(Schema::new(out_fields));
                self.append(
                    AppendTo::Table(&target.schema, &target.table),
                    &name,
                    &out,
                    batches,
                    &|batch| {
                        let n = batch.num_rows();
                        Ok(sources
                            .iter()
                            .map(|s| match s {
                                Some(i) => batch.column(*i).clone(),
                                None => Arc::new(
                                    TimestampMicrosecondArray::from(vec![loaded_at; n])
                                        .with_timezone("UTC"),
                                ) as ArrayRef,
                            })
                            .collect())
                    },
                )?
            }
            (None, true) => self.append(
                AppendTo::Temporary(&stage_name),
                &name,
                &append_schema,
                batches,
                &|batch| Ok(batch.columns().to_vec()),
            )?,
        };
        // Apply.
        let work = q(&identifier(
            &format!("_sluice_work_{}_{}", target.schema, target.table),
            MAX_IDENTIFIER,
        ));
        let apply = Apply {
            target: &tgt,
            stage: direct.as_deref().unwrap_or(&stage),
            work: &work,
            keys: &keys,
            columns: &columns.mapped,
            now: "now()",
            values: &[],
            extra: &[],
        };
        let mut sql = match target.mode {
            // Appended straight into the target above.
            LoadMode::Append => String::new(),
            LoadMode::Merge if direct.is_some() => apply.merge_unique(target.deletes, target_empty),
            LoadMode::Merge
                if !keys.is_empty() && !self.count_and_keys_repeat(&name, &stage, &keys)?.1 =>
            {
                apply.merge_unique(target.deletes, target_empty)
            }
            LoadMode::Merge => apply.merge(target.deletes),
            LoadMode::Replace if changes == 0 => String::new(),
            LoadMode::Replace => apply.replace(),
            LoadMode::History => apply.history(),
        };
        if ledger.image && target.mode == LoadMode::Merge {
            sql = format!("DELETE FROM {tgt};\n{sql}");
        }
        if !sql.is_empty() {
            self.exec(&name, &sql)?;
        }
        let drop_stage = if staged {
            format!("DROP TABLE {stage};")
        } else {
            String::new()
        };
        self.record_ledger(target, changes, upto, &drop_stage)?;
        let rows_after: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {tgt}"), [], |r| r.get(0))
            .map_err(e)?;
        Ok(LoadReport {
            changes,
            rows_after: rows_after as u64,
            maintenance: Vec::new(),
        })
    }

    /// How many changes `stage` (a table or parenthesized query) holds, and whether some key
    /// repeats among them ([`count_and_keys_repeat`]).
    fn count_and_keys_repeat(
        &self,
        name: &str,
        stage: &str,
        keys: &[String],
    ) -> Result<(u64, bool), WarehouseError> {
        self.conn
            .query_row(&count_and_keys_repeat(stage, keys), [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .map_err(|source| WarehouseError::Duckdb {
                table: name.to_string(),
                source,
            })
    }

    /// Runs an `INSERT … SELECT … FROM read_parquet(…)`; returns the rows inserted.
    fn insert_from_lake(&self, name: &str, sql: &str) -> Result<u64, WarehouseError> {
        let rows = self
            .conn
            .execute(sql, [])
            .map_err(|source| WarehouseError::Duckdb {
                table: name.to_string(),
                source,
            })?;
        Ok(rows as u64)
    }

    /// Appends batches to a table with the Arrow appender; `shape` turns an input batch into
    /// the table's columns (cast where the lake type differs). Returns the rows appended.
    fn append(
        &self,
        into: AppendTo,
        name: &str,
        out: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        shape: &dyn Fn(&RecordBatch) -> Result<Vec<ArrayRef>, String>,
    ) -> Result<u64, WarehouseError> {
        let input = |message: String| WarehouseError::Input {
            table: name.to_string(),
            message,
        };
        let app = match into {
            AppendTo::Table(schema, table) => self.conn.appender_to_db(table, schema),
            AppendTo::Temporary(table) => {
                self.conn.appender_to_catalog_and_db(table, "temp", "main")
            }
        };
        let mut app = app.map_err(|source| WarehouseError::Duckdb {
            table: name.to_string(),
            source,
        })?;
        let mut rows = 0u64;
        for batch in batches {
            let batch = batch.map_err(input)?;
            let cols = shape(&batch)
                .map_err(input)?
                .into_iter()
                .zip(out.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(c)
                    } else {
                        cast(&c, f.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| input(err.to_string()))?;
            let batch =
                RecordBatch::try_new(out.clone(), cols).map_err(|err| input(err.to_string()))?;
            rows += batch.num_rows() as u64;
            app.append_record_batch(batch)
                .map_err(|source| WarehouseError::Duckdb {
                    table: name.to_string(),
                    source,
                })?;
        }
        app.flush().map_err(|source| WarehouseError::Duckdb {
            table: name.to_string(),
            source,
        })?;
        Ok(rows)
    }

    /// The ledger rows, or the one row of `target`.
    fn ledger_rows_where(&self, target: Option<&Target>) -> Result<Vec<LedgerRow>, WarehouseError> {
        let e = |source| WarehouseError::Duckdb {
            table: "_sluice.ledger".into(),
            source,
        };
        let (sql, params): (String, Vec<String>) = match target {
            Some(t) => (
                LEDGER_ROWS.replace(
                    " ORDER BY",
                    " WHERE target_schema = ? AND target_table = ? ORDER BY",
                ),
                vec![t.schema.clone(), t.table.clone()],
            ),
            None => (LEDGER_ROWS.to_string(), Vec::new()),
        };
        let mut stmt = self.conn.prepare(&sql).map_err(e)?;
        let rows = stmt
            .query_map(duckdb::params_from_iter(params.iter()), |r| {
                Ok(LedgerRow {
                    schema: r.get(0)?,
                    table: r.get(1)?,
                    source: r.get(2)?,
                    source_table: r.get(3)?,
                    mode: r.get(4)?,
                    seq: r.get(5)?,
                })
            })
            .map_err(e)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        Ok(rows)
    }

    /// Moves the target's ledger row to `upto` (inside the load's transaction), then runs `then`.
    fn record_ledger(
        &self,
        target: &Target,
        changes: u64,
        upto: LedgerEntry,
        then: &str,
    ) -> Result<(), WarehouseError> {
        self.exec(
            &target.display(),
            &format!(
                "INSERT INTO _sluice.ledger VALUES ({}, {}, {}, {}, {}, {}, {}, {changes}, now())
                 ON CONFLICT (target_schema, target_table) DO UPDATE SET
                   lake_version = excluded.lake_version, lake_seq = excluded.lake_seq,
                   changes_loaded = changes_loaded + excluded.changes_loaded,
                   loaded_at = excluded.loaded_at, load_mode = excluded.load_mode;
                 {then}",
                quote_literal(&target.schema),
                quote_literal(&target.table),
                quote_literal(&target.source),
                quote_literal(&target.source_table),
                quote_literal(target.mode.name()),
                upto.lake_version,
                upto.seq,
            ),
        )
    }
}

impl Warehouse for DuckDb {
    fn describe(&self) -> String {
        format!("duckdb {}", self.path)
    }

    fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, WarehouseError> {
        let e = |source| WarehouseError::Duckdb {
            table: "(query)".into(),
            source,
        };
        let mut stmt = self.conn.prepare(sql).map_err(e)?;
        let batches = stmt.query_arrow([]).map_err(e)?.collect();
        Ok(batches)
    }

    /// All views in one transaction: readers see the old set or the new one.
    fn expose(&mut self, exposure: &Exposure) -> Result<(), WarehouseError> {
        let mut sql = String::from("BEGIN TRANSACTION;\n");
        for s in &exposure.statements {
            sql.push_str(s);
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT;");
        let done = self.exec("(expose)", &sql);
        if done.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        done
    }

    fn columns(&mut self, target: &Target) -> Result<Vec<String>, WarehouseError> {
        self.table_columns(&target.schema, &target.table)
    }

    fn ledger_rows(&mut self) -> Result<Vec<LedgerRow>, WarehouseError> {
        self.ledger_rows_where(None)
    }

    fn ledger(&mut self, target: &Target) -> Result<Option<LedgerEntry>, WarehouseError> {
        let mut stmt = self
            .conn
            .prepare("SELECT lake_version, lake_seq FROM _sluice.ledger WHERE target_schema = ? AND target_table = ?")
            .map_err(|source| WarehouseError::Duckdb { table: target.display(), source })?;
        let mut rows = stmt
            .query(params![target.schema, target.table])
            .map_err(|source| WarehouseError::Duckdb {
                table: target.display(),
                source,
            })?;
        match rows.next().map_err(|source| WarehouseError::Duckdb {
            table: target.display(),
            source,
        })? {
            Some(r) => Ok(Some(LedgerEntry {
                lake_version: r.get(0).map_err(|source| WarehouseError::Duckdb {
                    table: target.display(),
                    source,
                })?,
                seq: r.get(1).map_err(|source| WarehouseError::Duckdb {
                    table: target.display(),
                    source,
                })?,
            })),
            None => Ok(None),
        }
    }

    /// A local lake's files are read by DuckDB itself; an S3 lake's are streamed to it (this
    /// build's DuckDB has no S3 reader).
    fn reads_lake_files(&self, table_url: &url::Url) -> bool {
        table_url.scheme() == "file"
    }

    fn use_lake_files(&mut self, files: LakeFiles) {
        self.files = Some(files);
    }

    fn load(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        // Files given are for this load only, whatever becomes of it.
        let files = self.files.take();
        // Rows of a warehouse table have no order, and holding them in the order read makes
        // DuckDB's parallel inserts leave part-filled row groups that the checkpoint merges
        // and compresses again: measured on lineitem SF1 read from the lake's files, 6.9 s and
        // a 352 MiB database file with the order kept, 4.1 s and 188 MiB without.
        self.exec(&target.display(), "SET preserve_insertion_order = false;")?;
        self.exec(&target.display(), "BEGIN TRANSACTION;")?;
        let result = self.load_in_transaction(target, schema, batches, files, ledger);
        let done = self.finish_load(target, result);
        let _ = self.conn.execute_batch("RESET preserve_insertion_order;");
        done
    }
}

impl DuckDb {
    /// Commits a load that went through (releasing the memory it freed), or rolls it back.
    fn finish_load(
        &mut self,
        target: &Target,
        result: Result<LoadReport, WarehouseError>,
    ) -> Result<LoadReport, WarehouseError> {
        match result {
            Ok(report) => {
                failpoint::hit(failpoint::BEFORE_WAREHOUSE_COMMIT);
                self.exec(&target.display(), "COMMIT;")?;
                release_freed_memory();
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let used: i64 = self
                        .conn
                        .query_row(
                            "SELECT sum(memory_usage_bytes)::BIGINT FROM duckdb_memory()",
                            [],
                            |r| r.get(0),
                        )
                        .unwrap_or(-1);
                    tracing::debug!(target = %target.display(), duckdb_memory_bytes = used, "committed");
                }
                Ok(report)
            }
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK;");
                Err(err)
            }
        }
    }
}
