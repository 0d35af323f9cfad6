//! Where check results live: one Delta table per source table at `checks/<source>/<table>`
//! (one row per check per load), the quarantine for the rows held back, and beside the
//! change log what `sluice checks accept` let through.
//!
//! A load records before it applies, so a crash between the two never loses a quarantined
//! row's record; each warehouse table's records carry the last seq they cover as the commit's
//! position, so the rerun of the same load records nothing twice (the load an accept lets
//! through is recorded again, to say so).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::Utc;
use datafusion::sql::TableReference;
use serde::{Deserialize, Serialize};

use sluice_core::change::{INGESTED_AT, INGEST_DATE};
use sluice_core::config::TableSpec;
use sluice_core::names::quote_ident as q;
use sluice_lake::{Lake, LakeTable, Quarantine, TablePath};
use sluice_warehouses::Target;

use super::{CheckResult, Span, Verdict};
use crate::gate::{read_beside, write_beside};
use crate::{EngineError, Project};

fn results_schema() -> SchemaRef {
    let text = |name: &str, null: bool| Field::new(name, DataType::Utf8, null);
    let int = |name: &str, null: bool| Field::new(name, DataType::Int64, null);
    Arc::new(Schema::new(vec![
        text("warehouse", false),
        text("target", false),
        text("check", false),
        text("rule", false),
        text("action", false),
        int("after_seq", false),
        int("upto_seq", false),
        int("checked", false),
        int("failed", false),
        int("accepted", false),
        int("first_failing_seq", true),
        text("sample", true),
        text("outcome", false),
        Field::new(
            INGESTED_AT,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(INGEST_DATE, DataType::Utf8, false),
    ]))
}

/// What a failing check did: `pass`, `warned`, `quarantined`, `halted` or `accepted`.
pub(crate) fn outcome(r: &CheckResult) -> &'static str {
    use sluice_core::config::CheckAction::*;
    match (r.failed > r.accepted, r.action) {
        (false, _) if r.accepted > 0 => "accepted",
        (false, _) => "pass",
        (true, Warn) => "warned",
        (true, Quarantine) => "quarantined",
        (true, Halt) => "halted",
    }
}

/// The position a warehouse table's check records are committed with.
fn position(warehouse: &str, target: &Target) -> String {
    format!("check:{warehouse}:{}", target.display())
}

/// Records `verdict` for the load of `span` into `target`: the held-back rows in the
/// quarantine, then one result row per check. Nothing when this span is recorded already.
pub(crate) async fn record(
    lake: &Lake,
    spec: &TableSpec,
    target: &Target,
    span: Span,
    verdict: &mut Verdict,
) -> Result<(), EngineError> {
    if verdict.results.is_empty() {
        return Ok(());
    }
    let at = position(&spec.warehouse, target);
    let path = TablePath::checks(&spec.source, &spec.table);
    let mut table = match LakeTable::open(lake, &path).await? {
        Some(t) => t,
        None => LakeTable::create(lake, &path, &results_schema(), HashMap::new()).await?,
    };
    // Recorded already, unless this is the load `sluice checks accept` let through (once).
    let accepted = verdict.results.iter().any(|r| r.accepted > 0);
    if !accepted
        && table
            .app_version(&at)
            .await?
            .is_some_and(|v| v >= span.upto)
    {
        return Ok(());
    }
    if !verdict.rejects.is_empty() {
        let mut quarantine = Quarantine::new(lake, &spec.source, &spec.table);
        let done = quarantine.recorded(&at).await?.unwrap_or(i64::MIN);
        let rejects: Vec<_> = std::mem::take(&mut verdict.rejects)
            .into_iter()
            .filter(|(seq, _)| *seq > done)
            .map(|(_, r)| r)
            .collect();
        let n = rejects.len() as u64;
        quarantine.add(&at, span.upto, rejects, Utc::now()).await?;
        crate::metrics::quarantined_by_check(&spec.source, &spec.table, n);
    }
    for r in verdict.results.iter().filter(|r| r.failed > r.accepted) {
        crate::metrics::check_failed(
            &spec.source,
            &spec.table,
            &r.check,
            r.action.name(),
            r.failed - r.accepted,
        );
    }
    let now = Utc::now();
    let rs = &verdict.results;
    let n = rs.len();
    let texts = |f: &dyn Fn(&CheckResult) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rs.iter().map(f)))
    };
    let ints = |f: &dyn Fn(&CheckResult) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rs.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        texts(&|_| spec.warehouse.clone()),
        texts(&|_| target.display()),
        texts(&|r| r.check.clone()),
        texts(&|r| r.rule.clone()),
        texts(&|r| r.action.name().to_string()),
        ints(&|_| span.after),
        ints(&|_| span.upto),
        ints(&|r| r.checked as i64),
        ints(&|r| r.failed as i64),
        ints(&|r| r.accepted as i64),
        Arc::new(Int64Array::from_iter(
            rs.iter().map(|r| r.first_failing_seq),
        )),
        Arc::new(StringArray::from_iter(
            rs.iter()
                .map(|r| (!r.sample.is_empty()).then(|| r.sample.join("\n"))),
        )),
        texts(&|r| outcome(r).to_string()),
        Arc::new(
            TimestampMicrosecondArray::from(vec![now.timestamp_micros(); n]).with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            now.format("%Y-%m-%d").to_string(),
            n,
        ))),
    ];
    let batch = RecordBatch::try_new(results_schema(), columns)
        .map_err(|e| EngineError::Internal(format!("check results of {path}: {e}")))?;
    let mut writer = table.writer()?;
    writer.write(batch).await?;
    writer
        .commit(&mut table, vec![(at, span.upto)], serde_json::Map::new())
        .await?;
    Ok(())
}

/// One check's latest recorded result for one warehouse table.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedResult {
    pub target: String,
    pub check: String,
    pub rule: String,
    pub action: String,
    pub outcome: String,
    pub failed: i64,
    pub checked: i64,
    pub upto_seq: i64,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

/// The latest result of each check of `source.table` per warehouse table (none recorded: empty).
pub async fn latest(
    lake: &Lake,
    source: &str,
    table: &str,
) -> Result<Vec<RecordedResult>, EngineError> {
    let Some(log) = LakeTable::open(lake, &TablePath::checks(source, table)).await? else {
        return Ok(Vec::new());
    };
    let ctx = crate::query::new_session()?;
    crate::query::register(&ctx, TableReference::bare("results"), &log).await?;
    let sql = format!(
        "SELECT target, \"check\", rule, action, outcome, failed, checked, upto_seq, \
         CAST({at} AS VARCHAR), sample FROM (SELECT *, row_number() OVER \
         (PARTITION BY target, \"check\" ORDER BY {at} DESC, upto_seq DESC) AS rn FROM results) \
         WHERE rn = 1 ORDER BY target, \"check\"",
        at = q(INGESTED_AT)
    );
    let mut out = Vec::new();
    for b in ctx.sql(&sql).await?.collect().await? {
        let text = |i: usize| {
            arrow::compute::cast(b.column(i), &DataType::Utf8)
                .map_err(|e| EngineError::Internal(format!("check results: {e}")))
        };
        let int = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| EngineError::Internal("check results: not Int64".into()))
        };
        let cols: Vec<ArrayRef> = [0, 1, 2, 3, 4, 8, 9]
            .into_iter()
            .map(text)
            .collect::<Result<_, _>>()?;
        let s = |c: usize, row: usize| -> Option<String> {
            let a = cols[c].as_any().downcast_ref::<StringArray>()?;
            (!arrow::array::Array::is_null(a, row)).then(|| a.value(row).to_string())
        };
        let (failed, checked, upto) = (int(5)?, int(6)?, int(7)?);
        for row in 0..b.num_rows() {
            out.push(RecordedResult {
                target: s(0, row).unwrap_or_default(),
                check: s(1, row).unwrap_or_default(),
                rule: s(2, row).unwrap_or_default(),
                action: s(3, row).unwrap_or_default(),
                outcome: s(4, row).unwrap_or_default(),
                failed: failed.value(row),
                checked: checked.value(row),
                upto_seq: upto.value(row),
                at: s(5, row).unwrap_or_default(),
                sample: s(6, row),
            });
        }
    }
    Ok(out)
}

/// What `sluice checks accept` let through, kept beside the change log like the gate's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Accepted {
    /// Halting failures at or before this seq load.
    through_seq: i64,
}

fn accepted_path(warehouse: &str, target: &Target) -> object_store::path::Path {
    object_store::path::Path::from(format!(
        "_sluice_checks/{warehouse}/{}.{}.json",
        target.schema, target.table
    ))
}

/// The seq through which `sluice checks accept` let halting failures into `target`.
pub(crate) async fn accepted_through(
    log: &LakeTable,
    warehouse: &str,
    target: &Target,
) -> Result<Option<i64>, EngineError> {
    let path = accepted_path(warehouse, target);
    let accepted: Option<Accepted> = read_beside(log, &path, "accepted checks").await?;
    Ok(accepted.map(|a| a.through_seq))
}

/// `sluice checks accept SOURCE.TABLE`: the halting failures now in the lake load, into every
/// warehouse table of `spec`. Returns the seq accepted through (None: nothing landed).
pub async fn accept(project: &Project, spec: &TableSpec) -> Result<Option<i64>, EngineError> {
    let Some(log) = LakeTable::open(
        &project.lake,
        &TablePath::changes(&spec.source, &spec.table),
    )
    .await?
    else {
        return Ok(None);
    };
    let through = log.last_seq().await?;
    let mut wh = project.warehouse(&spec.warehouse)?;
    for target in project.targets_in(spec, wh.as_mut())? {
        let accepted = Accepted {
            through_seq: through,
        };
        let path = accepted_path(&spec.warehouse, &target);
        write_beside(&log, &path, "accepted checks", &accepted).await?;
        tracing::warn!(table = %target.display(), through_seq = through, "halting check failures accepted");
    }
    Ok(Some(through))
}
