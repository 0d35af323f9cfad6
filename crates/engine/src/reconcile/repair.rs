//! Repair: the differing keys read again from the source and landed in the lake as fresh
//! changes (`r` for a row the source has, `d` for one it does not), then loaded. The warehouse
//! is never written behind the lake's back, so the lake stays the record.
//!
//! Landing a re-read row ahead of changes the stream has not captured yet is safe: those
//! changes come later in the log with the full row (or its delete), so the last change per
//! key is still the source's latest state. What is not safe is two writers numbering one
//! table's changes at once, so a repair holds the source's lease, as a `serve` process does.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use chrono::Utc;
use serde_json::json;

use sluice_core::canon::{Key, Side};
use sluice_core::change::{data_schema, Op};
use sluice_core::config::TableSpec;
use sluice_lake::{LakeTable, SEQ_APP_ID};
use sluice_sources::source::{SharedSource, SourceTable};

use crate::capture::write_changes;
use crate::state::StateStore;
use crate::{EngineError, Project};

/// Keys read from the source per query.
const KEYS_PER_READ: usize = 500;

/// How long the repair's hold on the source lasts if it dies holding it.
const LEASE: Duration = Duration::from_secs(300);

/// What a repair landed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Landed {
    /// Rows read again from the source and landed as `r`.
    pub rows: u64,
    /// Keys the source no longer has, landed as `d`.
    pub deletes: u64,
    /// Rows the source could not convert (quarantined, as a snapshot's would be).
    pub rejects: u64,
    pub lake_version: Option<i64>,
}

/// Lands `reread` (keys to read again) and `gone` (keys to delete) for `spec`'s table.
pub(crate) async fn land(
    project: &Project,
    source: &SharedSource,
    spec: &TableSpec,
    table: &SourceTable,
    src: &Side,
    reread: &[Key],
    gone: &[Key],
) -> Result<Landed, EngineError> {
    let store = StateStore::open(project).await?;
    let lease = format!("{}{}", crate::serve::SOURCE_LEASE, spec.source);
    let owner = format!("reconcile-{}", std::process::id());
    if !store.take_lease(&lease, &owner, LEASE).await? {
        return Err(EngineError::Usage(format!(
            "source `{}` is being captured by a `sluice serve` process (it holds the source's lease): \
             a repair must be the table's only writer; run it while serve is stopped",
            spec.source
        )));
    }
    let landed = land_held(project, source, spec, table, src, reread, gone).await;
    if let Err(e) = store.release_lease(&lease, &owner).await {
        tracing::warn!(source = %spec.source, error = %e, "lease not released (it expires by itself)");
    }
    landed
}

async fn land_held(
    project: &Project,
    source: &SharedSource,
    spec: &TableSpec,
    table: &SourceTable,
    src: &Side,
    reread: &[Key],
    gone: &[Key],
) -> Result<Landed, EngineError> {
    let mut log = crate::schema_cmd::log_of(project, spec).await?;
    refuse_unadopted_columns(spec, &log, &table.schema)?;
    let mut landed = Landed::default();
    let mut seq = log.last_seq().await?;
    let mut writer = log.writer()?;
    let now = Utc::now();
    let what = format!("{}.{} repair", spec.source, spec.table);
    for keys in reread.chunks(KEYS_PER_READ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
        let reader = {
            let (source, table, condition) = (source.clone(), table.clone(), src.keys_where(keys));
            tokio::spawn(async move { source.read_where(&table, &condition, &tx).await })
        };
        while let Some(b) = rx.recv().await {
            landed.rows +=
                write_changes(&mut writer, &b, Op::Read, &mut seq, (Some(now), now), &what).await?;
        }
        let chunk = reader
            .await
            .map_err(|e| EngineError::Internal(format!("repair reader: {e}")))??;
        landed.rejects += crate::capture::quarantine(
            &project.lake,
            spec,
            &format!("repair.{}", now.timestamp_micros()),
            1,
            chunk.rejects,
        )
        .await?;
    }
    if !gone.is_empty() {
        let batch = key_rows(&table.schema, &table.key, gone)?;
        landed.deletes += write_changes(
            &mut writer,
            &batch,
            Op::Delete,
            &mut seq,
            (Some(now), now),
            &what,
        )
        .await?;
    }
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sluice".into(),
        json!({ "repair": { "rows": landed.rows, "deletes": landed.deletes } }),
    );
    landed.lake_version = writer
        .commit(&mut log, vec![(SEQ_APP_ID.to_string(), seq)], meta)
        .await?;
    tracing::info!(table = %what, rows = landed.rows, deletes = landed.deletes, version = ?landed.lake_version, "repair landed");
    Ok(landed)
}

/// A repair reads rows with the source's columns as they are now: they must be the lake's
/// (a schema change the lake has not taken yet is the next sync's to take).
fn refuse_unadopted_columns(
    spec: &TableSpec,
    log: &LakeTable,
    now: &SchemaRef,
) -> Result<(), EngineError> {
    let lake = data_schema(log.schema()?.as_ref());
    let off: Vec<String> = now
        .fields()
        .iter()
        .filter(|f| match lake.field_with_name(f.name()) {
            Ok(l) => l.data_type() != f.data_type(),
            Err(_) => true,
        })
        .map(|f| format!("`{}` {}", f.name(), f.data_type()))
        .collect();
    match off.is_empty() {
        true => Ok(()),
        false => Err(EngineError::Usage(format!(
            "{}.{}: the source's columns changed since the lake last took them ({}): sync the table, then repair",
            spec.source,
            spec.table,
            off.join(", ")
        ))),
    }
}

/// Rows of `schema` holding only `keys` (canonical texts) in the key columns: deletes.
fn key_rows(schema: &SchemaRef, key: &[String], keys: &[Key]) -> Result<RecordBatch, EngineError> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match key.iter().position(|k| k == f.name()) {
            Some(i) => typed(keys.iter().map(|k| k[i].as_str()), f.data_type())
                .map_err(|e| EngineError::Internal(format!("key `{}`: {e}", f.name()))),
            None => Ok(arrow::array::new_null_array(f.data_type(), keys.len())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| EngineError::Internal(format!("delete rows: {e}")))
}

/// Canonical texts as values of type `t` (binary is hex in the canonical text).
fn typed<'a>(texts: impl Iterator<Item = &'a str>, t: &DataType) -> Result<ArrayRef, String> {
    let texts: Vec<&str> = texts.collect();
    if matches!(t, DataType::Binary) {
        let bytes: Vec<Vec<u8>> = texts
            .iter()
            .map(|h| hex_bytes(h).ok_or_else(|| format!("`{h}` is not hex")))
            .collect::<Result<_, _>>()?;
        return Ok(Arc::new(arrow::array::BinaryArray::from_iter_values(bytes)));
    }
    let text: ArrayRef = Arc::new(StringArray::from(texts));
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(&text, t, &options).map_err(|e| e.to_string())
}

fn hex_bytes(h: &str) -> Option<Vec<u8>> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    #[test]
    fn delete_rows_carry_typed_keys_and_nothing_else() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("name", DataType::Utf8, true),
        ]));
        let keys = vec![vec![
            "7".to_string(),
            "2024-01-02 03:04:05.250000".to_string(),
        ]];
        let b = key_rows(&schema, &["id".into(), "at".into()], &keys).unwrap();
        assert_eq!(
            b.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            7
        );
        let at = b
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(0);
        assert_eq!(at, 1_704_164_645_250_000);
        assert!(b.column(2).is_null(0));
        assert!(key_rows(&schema, &["id".into()], &[vec!["x".into()]]).is_err());
    }
}
