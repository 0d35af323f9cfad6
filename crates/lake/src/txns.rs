//! Every application transaction of a table in one replay of its log.
//!
//! deltalake answers one app id per log replay. A files table keeps one `file:<id>` position
//! per consumed file, so asking file by file replays the log once per file: a sync of a
//! 100,000-file folder would replay it 100,000 times. The Delta kernel's own log replay
//! (checkpoints, their sidecars and the commits after them, newest first) reads the `txn`
//! actions of every app id at once instead.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType as ArrowType, Int64Type};
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::schema::{DataType, StructField, StructType};
use delta_kernel::{DeltaResult, Engine, Error, Snapshot};

/// The latest version of every application id as of table `version`, with the same expiry
/// rule as a single lookup (`delta.setTransactionRetentionDuration`, when the table sets it).
pub(crate) fn app_versions(
    table: &url::Url,
    version: u64,
    engine: &dyn Engine,
) -> DeltaResult<HashMap<String, i64>> {
    let snapshot = Snapshot::builder_for(table.as_str())
        .at_version(version)
        .build(engine)?;
    let expired_before = snapshot
        .table_properties()
        .set_transaction_retention_duration
        .map(|keep| chrono::Utc::now().timestamp_millis() - keep.as_millis() as i64);
    let txn = StructType::try_new([
        StructField::not_null("appId", DataType::STRING),
        StructField::not_null("version", DataType::LONG),
        StructField::nullable("lastUpdated", DataType::LONG),
    ])?;
    let schema = Arc::new(StructType::try_new([StructField::nullable("txn", txn)])?);
    let mut latest = HashMap::new();
    // Newest first: the first action seen for an app id is its latest.
    for actions in snapshot.log_segment().read_actions(engine, schema)? {
        let data = ArrowEngineData::try_from_engine_data(actions?.actions)?;
        take_txns(data.record_batch(), expired_before, &mut latest)?;
    }
    Ok(latest)
}

/// Adds the `txn` actions of `batch` not seen yet (newer ones came first) to `latest`.
fn take_txns(
    batch: &RecordBatch,
    expired_before: Option<i64>,
    latest: &mut HashMap<String, i64>,
) -> DeltaResult<()> {
    let Some(txn) = batch.column_by_name("txn") else {
        return Ok(());
    };
    let txn = txn
        .as_struct_opt()
        .ok_or_else(|| Error::generic("txn actions are not a struct"))?;
    let column = |name: &str| {
        txn.column_by_name(name)
            .ok_or_else(|| Error::generic(format!("txn actions lack {name}")))
    };
    let ids = arrow::compute::cast(column("appId")?, &ArrowType::Utf8)?;
    let ids = ids.as_string::<i32>();
    let versions = column("version")?.as_primitive::<Int64Type>();
    let updated = column("lastUpdated")?.as_primitive::<Int64Type>();
    for i in 0..txn.len() {
        if txn.is_null(i) || ids.is_null(i) {
            continue;
        }
        let expired =
            expired_before.is_some_and(|before| !updated.is_null(i) && updated.value(i) <= before);
        if expired {
            continue;
        }
        if !latest.contains_key(ids.value(i)) {
            latest.insert(ids.value(i).to_string(), versions.value(i));
        }
    }
    Ok(())
}
