//! The PostgreSQL warehouse.
//!
//! One load, one transaction:
//!
//! ```text
//!   BEGIN
//!     SELECT ... FROM _sluice.ledger ... FOR UPDATE            (moved since planned: refuse)
//!     CREATE SCHEMA/TABLE IF NOT EXISTS "<source>"."<table>"   (types: pgcopy::postgres_type)
//!     ALTER TABLE ... ADD COLUMN                               (the schema gate allowed it)
//!     CREATE TEMP TABLE _sluice_stage ... ON COMMIT DROP
//!     COPY _sluice_stage FROM STDIN (FORMAT binary)             ← Arrow batches, encoded as they come
//!     apply by mode (the statements of `sql`, shared with DuckDB)
//!     UPSERT _sluice.ledger (lake version, seq)
//!   COMMIT
//! ```
//!
//! Append mode copies straight into the target. Merge tables have a unique index on the key.
//! A merge table's first load also copies straight into it (with the op and seq as helper
//! columns, dropped at the end): when every change is an insert the unique index is built
//! and that is all; a delete, an update or a repeated key turns the copied rows into the
//! staging table for the full merge. Later loads whose changes are all inserts insert every
//! staged row under a savepoint, and only when a key repeats or is already loaded does the
//! index refuse, the savepoint roll back and the full merge run.
//!
//! The client is async (tokio-postgres) and the [`Warehouse`] trait is not: the connection
//! lives on a runtime of its own, and each call runs it on a short-lived thread, so a call is
//! safe from async and blocking code alike.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, SchemaRef};
use bytes::BytesMut;
use futures::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use sluice_core::change::{INGESTED_AT, LOADED_AT, OP, ROW_ID, SEQ, SOURCE_TS};
use sluice_core::config::LoadMode;
use sluice_core::failpoint;
use sluice_core::names::{disambiguated, quote_ident as q};
pub(crate) use sluice_pg::pg_kind;
pub use sluice_pg::{connect_client, PgOptions};
use sluice_pg::{open_client, pg_config, redacted, server_message, PgConnectError};

use crate::columns::{shape_table, Columns};
use crate::pgcopy::{self, postgres_type};
use crate::sql::{system_columns, Apply, SystemTypes, LEDGER_DDL, LEDGER_ROWS};
use crate::{LedgerEntry, LedgerMove, LedgerRow, LoadReport, Target, Warehouse, WarehouseError};
use sluice_core::retry::ErrorKind;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER: usize = 63;

/// COPY data is sent in pieces of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;

const SYSTEM_TYPES: SystemTypes = SystemTypes {
    text: "TEXT",
    row_id: "TEXT",
    bigint: "BIGINT",
    timestamptz: "TIMESTAMPTZ",
    boolean: "BOOLEAN",
};

const STAGE: &str = "\"_sluice_stage\"";
const WORK: &str = "\"_sluice_work\"";

pub struct Postgres {
    client: Client,
    /// The connection's own runtime; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// `host:port/db` for messages (never the password).
    name: String,
}

/// The ledger move of PostgreSQL: one upsert.
const LEDGER_UPSERT: &str =
    "INSERT INTO _sluice.ledger VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
 ON CONFLICT (target_schema, target_table) DO UPDATE SET
   lake_version = excluded.lake_version, lake_seq = excluded.lake_seq,
   changes_loaded = _sluice.ledger.changes_loaded + excluded.changes_loaded,
   loaded_at = excluded.loaded_at, load_mode = excluded.load_mode";

/// Moves `target`'s ledger row to `upto` by `statements`, whose parameters are `$1` schema,
/// `$2` table, `$3` source, `$4` source table, `$5` load mode, `$6` lake version, `$7` seq,
/// `$8` changes loaded; then reports the load with the table's rows after it.
pub(crate) async fn move_ledger(
    client: &Client,
    statements: &[&str],
    target: &Target,
    upto: LedgerEntry,
    changes: i64,
) -> Result<LoadReport, tokio_postgres::Error> {
    let mode = target.mode.name();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &target.schema,
        &target.table,
        &target.source,
        &target.source_table,
        &mode,
        &upto.lake_version,
        &upto.seq,
        &changes,
    ];
    for sql in statements {
        client.execute(*sql, &params).await?;
    }
    let tgt = format!("{}.{}", q(&target.schema), q(&target.table));
    let rows_after: i64 = client
        .query_one(format!("SELECT count(*) FROM {tgt}").as_str(), &[])
        .await?
        .get(0);
    Ok(LoadReport {
        changes: changes as u64,
        rows_after: rows_after as u64,
        maintenance: Vec::new(),
    })
}

/// The ledger rows, or the one row of `target`; `lock` locks that row until the transaction
/// ends (`FOR UPDATE`), so a second load of the table waits here and then finds it moved.
pub(crate) async fn ledger_rows_where(
    client: &Client,
    target: Option<&Target>,
    lock: bool,
) -> Result<Vec<LedgerRow>, tokio_postgres::Error> {
    let rows = match target {
        Some(t) => {
            let mut sql = LEDGER_ROWS.replace(
                " ORDER BY 1, 2",
                " WHERE target_schema = $1 AND target_table = $2",
            );
            if lock {
                sql += " FOR UPDATE";
            }
            client.query(sql.as_str(), &[&t.schema, &t.table]).await?
        }
        None => client.query(LEDGER_ROWS, &[]).await?,
    };
    Ok(rows
        .iter()
        .map(|r| LedgerRow {
            schema: r.get(0),
            table: r.get(1),
            source: r.get(2),
            source_table: r.get(3),
            mode: r.get(4),
            seq: r.get(5),
        })
        .collect())
}

/// The name of a merge or history table's key index: sluice's own prefix (no user table can
/// have it), told apart per table within the schema.
fn key_index_name(target: &Target) -> String {
    disambiguated(
        &format!("_sluice_key_{}", target.table),
        &target.display(),
        MAX_IDENTIFIER,
    )
}

/// Runs `body` in a transaction on `client`: committed when it succeeds (the crash failpoint
/// just before), rolled back when it fails.
pub(crate) async fn in_transaction<T>(
    client: &Client,
    table: &str,
    body: impl std::future::Future<Output = Result<T, WarehouseError>>,
) -> Result<T, WarehouseError> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(pg_error(table))?;
    match body.await {
        Ok(value) => {
            failpoint::hit(failpoint::BEFORE_WAREHOUSE_COMMIT);
            client
                .batch_execute("COMMIT")
                .await
                .map_err(pg_error(table))?;
            Ok(value)
        }
        Err(err) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(err)
        }
    }
}

pub(crate) fn pg_error(table: &str) -> impl Fn(tokio_postgres::Error) -> WarehouseError + '_ {
    move |e| WarehouseError::Postgres {
        table: table.to_string(),
        message: server_message(&e),
        kind: pg_kind(&e),
    }
}

impl Postgres {
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Connects and makes sure the ledger exists.
    pub fn connect(opts: &PgOptions) -> Result<Postgres, WarehouseError> {
        let open_err = |message: String| WarehouseError::Open {
            path: redacted(&opts.url),
            message,
            kind: ErrorKind::Fatal,
        };
        let (config, ssl_mode, ssl_ca) = pg_config(opts).map_err(open_err)?;
        // libpq's prefer/require accept any certificate (and prefer falls back to plain).
        if opts.password.is_some() && !ssl_mode.starts_with("verify-") {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(warehouse = %redacted(&opts.url), ssl_mode = %ssl_mode, "the password crosses a connection whose server is not verified; in production set ssl_mode = \"verify-full\" and ssl_ca");
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        let client = on_own_thread(|| runtime.block_on(open_client(config, &ssl_mode, ssl_ca)));
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                // Dropping a runtime blocks, which tokio forbids in async callers.
                runtime.shutdown_background();
                let kind = match &e {
                    PgConnectError::Pg(pg) => pg_kind(pg),
                    PgConnectError::Tls(_) => ErrorKind::Fatal,
                };
                return Err(WarehouseError::Open {
                    path: redacted(&opts.url),
                    message: e.to_string(),
                    kind,
                });
            }
        };
        let pg = Postgres {
            client,
            runtime: Some(runtime),
            name: redacted(&opts.url),
        };
        pg.batch(
            "_sluice.ledger",
            &format!("SET TimeZone = 'UTC';\n{LEDGER_DDL}"),
        )?;
        Ok(pg)
    }

    /// Runs a future on the connection's runtime, from any context.
    pub(crate) fn run<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        let rt = self.runtime.as_ref().expect("runtime present until drop");
        on_own_thread(|| rt.block_on(fut))
    }

    pub(crate) fn batch(&self, table: &str, sql: &str) -> Result<(), WarehouseError> {
        self.run(self.client.batch_execute(sql))
            .map_err(pg_error(table))
    }

    /// The table's column names in order (empty when it does not exist).
    async fn table_columns(
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT a.attname::text FROM pg_catalog.pg_attribute a
                   JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[&schema, &table],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Runs `sql` under a savepoint; false (rolled back) when it violates a unique index.
    async fn try_unique(client: &Client, sql: &str, name: &str) -> Result<bool, WarehouseError> {
        let e = pg_error(name);
        client
            .batch_execute("SAVEPOINT sluice_fast;")
            .await
            .map_err(&e)?;
        match client.batch_execute(sql).await {
            Ok(()) => {
                client
                    .batch_execute("RELEASE SAVEPOINT sluice_fast;")
                    .await
                    .map_err(&e)?;
                Ok(true)
            }
            Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tracing::debug!(target = %name, "a key repeats or is already loaded: full merge");
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT sluice_fast;")
                    .await
                    .map_err(&e)?;
                Ok(false)
            }
            Err(err) => Err(e(err)),
        }
    }

    /// Streams the batches' `copied` columns through `copy` (a `COPY ... FROM STDIN (FORMAT
    /// binary)`); returns the rows sent and how many of them were not inserts.
    pub(crate) async fn copy_changes(
        client: &Client,
        copy: &str,
        schema: &SchemaRef,
        copied: &[usize],
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        name: &str,
    ) -> Result<(u64, u64), WarehouseError> {
        let e = pg_error(name);
        let input = |message| WarehouseError::Input {
            table: name.to_string(),
            message,
        };
        let fields: Vec<&Field> = copied.iter().map(|&i| schema.field(i)).collect();
        let op_index = schema.index_of(OP).ok();
        let sink = client.copy_in(copy).await.map_err(&e)?;
        futures::pin_mut!(sink);
        let mut buf = BytesMut::with_capacity(2 * COPY_CHUNK_BYTES);
        buf.extend_from_slice(pgcopy::header());
        let mut changes = 0u64;
        let mut not_inserts = 0u64;
        let mut altered = 0u64;
        for batch in batches {
            let batch = batch.map_err(input)?;
            changes += batch.num_rows() as u64;
            if let Some(i) = op_index {
                not_inserts += count_not_inserts(batch.column(i)).map_err(input)?;
            }
            let arrays: Vec<ArrayRef> = copied.iter().map(|&i| batch.column(i).clone()).collect();
            altered += pgcopy::encode(&fields, &arrays, &mut buf).map_err(input)?;
            if buf.len() >= COPY_CHUNK_BYTES {
                sink.send(buf.split().freeze()).await.map_err(&e)?;
            }
        }
        buf.extend_from_slice(pgcopy::trailer());
        sink.send(buf.split().freeze()).await.map_err(&e)?;
        sink.as_mut().finish().await.map_err(&e)?;
        if altered > 0 {
            tracing::warn!(table = %name, values = altered, stand_in = %pgcopy::NUL_STAND_IN, "values held NUL characters PostgreSQL cannot store: loaded with a stand-in (the lake keeps them exact)");
        }
        Ok((changes, not_inserts))
    }

    async fn load_in_transaction(
        client: &Client,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        let name = target.display();
        let e = pg_error(&name);
        let row = ledger_rows_where(client, Some(target), true)
            .await
            .map_err(&e)?;
        target.check_ledger(ledger.from, row.first())?;
        let upto = ledger.to;
        let columns = Columns::new(schema, MAX_IDENTIFIER);
        let data = columns.typed(target, postgres_type)?;
        let keys = columns.keys(target)?;
        let tgt = format!("{}.{}", q(&target.schema), q(&target.table));

        // Target table: created, or grown by evolve.
        let existing = Self::table_columns(client, &target.schema, &target.table)
            .await
            .map_err(&e)?;
        // A merge table's first load copies straight into it, with two helper columns (the
        // change's op and seq) that the end of the load drops: a snapshot is written once,
        // not staged and then copied.
        let direct = existing.is_empty() && target.mode == LoadMode::Merge && !keys.is_empty();
        let helpers = [(OP, "TEXT"), (SEQ, "BIGINT")]
            .into_iter()
            .filter(|_| direct)
            .map(|(n, t)| (n.to_string(), t.to_string()));
        let create: Vec<(String, String)> = data
            .iter()
            .cloned()
            .chain(system_columns(
                target.mode,
                target.deletes,
                target.key.is_empty(),
                &SYSTEM_TYPES,
            ))
            .chain(helpers)
            // Append copies straight into the table: the load time comes from a default.
            .map(|(n, t)| match n == LOADED_AT {
                true => (n, format!("{t} DEFAULT now()")),
                false => (n, t),
            })
            .collect();
        let shape = shape_table(target, &tgt, existing, &data, &create)?;
        let created = shape.created;
        if !shape.statements.is_empty() {
            client.batch_execute(&shape.statements).await.map_err(&e)?;
        }

        // What the COPY carries: append goes straight to the target (no ingest time; the
        // load time is the column default); the other modes stage every change column.
        let staged = target.mode != LoadMode::Append && !direct;
        let copied: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| staged || f.name() != INGESTED_AT)
            .map(|(i, _)| i)
            .collect();
        // `(name, type)` of every change column; the COPY carries `copied` of them.
        let stage_columns = columns.staged(schema, target, postgres_type)?;
        let copy_list: Vec<String> = copied.iter().map(|&i| q(&stage_columns[i].0)).collect();
        let into = if staged {
            let cols: Vec<String> = copied
                .iter()
                .map(|&i| format!("{} {}", q(&stage_columns[i].0), stage_columns[i].1))
                .collect();
            client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE {STAGE} ({}) ON COMMIT DROP;",
                    cols.join(", ")
                ))
                .await
                .map_err(&e)?;
            STAGE.to_string()
        } else {
            tgt.clone()
        };
        let copy = format!(
            "COPY {into} ({}) FROM STDIN (FORMAT binary)",
            copy_list.join(", ")
        );
        // Updates and deletes copied: while there are none, merge may try its fast path.
        let (changes, not_inserts) =
            Self::copy_changes(client, &copy, schema, &copied, batches, &name).await?;

        // Apply.
        let apply = Apply {
            target: &tgt,
            stage: STAGE,
            work: WORK,
            keys: &keys,
            columns: &columns.mapped,
            now: "now()",
            values: &[],
            extra: &[],
        };
        let key_list = keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
        let index_name = q(&key_index_name(target));
        let index = match target.mode {
            // Without a key, rows are found by their identity, which identical rows share.
            LoadMode::Merge if created && keys.is_empty() => {
                format!("CREATE INDEX {index_name} ON {tgt} ({});", q(ROW_ID))
            }
            LoadMode::Merge if created => {
                format!("CREATE UNIQUE INDEX {index_name} ON {tgt} ({key_list});")
            }
            LoadMode::History if created => {
                format!("CREATE INDEX {index_name} ON {tgt} ({key_list});")
            }
            _ => String::new(),
        };
        if ledger.image && target.mode == LoadMode::Merge && !direct {
            client
                .batch_execute(&format!("DELETE FROM {tgt};"))
                .await
                .map_err(&e)?;
        }
        match target.mode {
            LoadMode::Append => {}
            LoadMode::Merge if direct => {
                // Copied into the fresh table: done when every change was an insert and no
                // key repeats (the unique index says); otherwise the copied rows become the
                // staging table and the full merge runs.
                let mut merged = false;
                if not_inserts == 0 {
                    merged = Self::try_unique(client, &index, &name).await?;
                }
                if !merged {
                    let stage_cols = format!(
                        "{}, {}, {}, {}",
                        columns
                            .mapped
                            .iter()
                            .map(|c| q(c))
                            .collect::<Vec<_>>()
                            .join(", "),
                        q(OP),
                        q(SEQ),
                        q(SOURCE_TS)
                    );
                    let sql = format!(
                        "CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS SELECT {stage_cols} FROM {tgt};\nTRUNCATE {tgt};\nANALYZE {STAGE};\n{}\n{index}",
                        apply.merge(target.deletes)
                    );
                    client.batch_execute(&sql).await.map_err(&e)?;
                }
                client
                    .batch_execute(&format!(
                        "ALTER TABLE {tgt} DROP COLUMN {}, DROP COLUMN {};",
                        q(OP),
                        q(SEQ)
                    ))
                    .await
                    .map_err(&e)?;
            }
            LoadMode::Merge => {
                // Only inserts, into a table whose key is unique: insert every staged row. A
                // key that repeats or is already there violates the unique index, and the
                // load falls back to the full merge.
                // Tables created before the index took sluice's prefix carry the old name.
                let legacy = q(&sluice_core::names::identifier(
                    &format!("{}_sluice_key", target.table),
                    MAX_IDENTIFIER,
                ));
                // It must be the table's unique index by that name: a 63-byte table name once
                // made the legacy name the table's own.
                let unique_key = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                           WHERE i.indrelid = to_regclass($1) AND i.indisunique
                             AND i.indexrelid IN (to_regclass($2), to_regclass($3)))",
                        &[
                            &tgt,
                            &format!("{}.{index_name}", q(&target.schema)),
                            &format!("{}.{legacy}", q(&target.schema)),
                        ],
                    )
                    .await
                    .map_err(&e)?
                    .get::<_, bool>(0);
                let mut merged = false;
                if not_inserts == 0 && unique_key {
                    merged = Self::try_unique(client, &apply.insert_all(), &name).await?;
                }
                if !merged {
                    let sql = format!("ANALYZE {STAGE};\n{}\n{index}", apply.merge(target.deletes));
                    client.batch_execute(&sql).await.map_err(&e)?;
                }
            }
            LoadMode::Replace if changes == 0 => {}
            LoadMode::Replace => client.batch_execute(&apply.replace()).await.map_err(&e)?,
            LoadMode::History => {
                let sql = format!("ANALYZE {STAGE};\n{}\n{index}", apply.history());
                client.batch_execute(&sql).await.map_err(&e)?;
            }
        }
        move_ledger(client, &[LEDGER_UPSERT], target, upto, changes as i64)
            .await
            .map_err(&e)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code: let it go quietly.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Warehouse for Postgres {
    fn ledger_rows(&mut self) -> Result<Vec<LedgerRow>, WarehouseError> {
        self.run(ledger_rows_where(&self.client, None, false))
            .map_err(pg_error("_sluice.ledger"))
    }

    fn ledger(&mut self, target: &Target) -> Result<Option<LedgerEntry>, WarehouseError> {
        let row = self
            .run(self.client.query_opt(
                "SELECT lake_version, lake_seq FROM _sluice.ledger WHERE target_schema = $1 AND target_table = $2",
                &[&target.schema, &target.table],
            ))
            .map_err(pg_error(&target.display()))?;
        Ok(row.map(|r| LedgerEntry {
            lake_version: r.get(0),
            seq: r.get(1),
        }))
    }

    fn columns(&mut self, target: &Target) -> Result<Vec<String>, WarehouseError> {
        self.run(Self::table_columns(
            &self.client,
            &target.schema,
            &target.table,
        ))
        .map_err(pg_error(&target.display()))
    }

    fn load(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError> {
        let client = &self.client;
        let name = target.display();
        self.run(in_transaction(
            client,
            &name,
            Self::load_in_transaction(client, target, schema, batches, ledger),
        ))
    }

    fn describe(&self) -> String {
        format!("postgres {}", self.name)
    }

    /// Runs a query; every value comes back as text.
    fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, WarehouseError> {
        let messages = self
            .run(self.client.simple_query(sql))
            .map_err(pg_error("(query)"))?;
        let mut names: Vec<String> = Vec::new();
        let mut columns: Vec<Vec<Option<String>>> = Vec::new();
        for m in messages {
            match m {
                tokio_postgres::SimpleQueryMessage::RowDescription(cols) => {
                    names = cols.iter().map(|c| c.name().to_string()).collect();
                    columns = vec![Vec::new(); names.len()];
                }
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    for (i, col) in columns.iter_mut().enumerate() {
                        col.push(row.get(i).map(String::from));
                    }
                }
                _ => {}
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let schema = Arc::new(arrow::datatypes::Schema::new(
            names
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(schema, arrays).map_err(|e| WarehouseError::Input {
            table: "(query)".into(),
            message: e.to_string(),
        })?;
        Ok(vec![batch])
    }
}

/// The changes of an op column that are not inserts (`r`, `c`), whatever string array type the
/// lake reader produced (`Utf8`, `LargeUtf8` or `Utf8View`): the merge fast path trusts
/// this count, so an op it cannot read must not count as an insert.
fn count_not_inserts(ops: &ArrayRef) -> Result<u64, String> {
    let ops = arrow::compute::cast(ops, &DataType::Utf8)
        .map_err(|e| format!("{OP} is {}: {e}", ops.data_type()))?;
    Ok(ops
        .as_string::<i32>()
        .iter()
        .filter(|o| !matches!(o, Some("r") | Some("c")))
        .count() as u64)
}

/// Runs `f` on a fresh thread: a thread outside every tokio context may block on a runtime.
fn on_own_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
