//! Load: apply the lake changes a warehouse table has not seen, exactly once.
//!
//! The ledger says the last `_sluice_seq` applied; the changes after it are read from the
//! lake snapshot (file statistics on `_sluice_seq` skip the files already loaded) and streamed
//! into the warehouse, which applies them and moves its ledger in one transaction.
//!
//! Large backlogs load in chunks of `max_changes_per_transaction` consecutive sequence numbers, one
//! transaction each: the warehouse's memory stays flat however large the backlog, and a crash
//! keeps every committed chunk (the ledger says which). Chunks apply in sequence order, so
//! merge gives the same result as one big transaction. `replace` loads in one transaction,
//! since truncate-and-load must be atomic.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use sluice_core::change::{data_schema, is_change_column, INGEST_DATE, ROW_ID, SEQ};
use sluice_core::config::{LoadMode, TableSpec};
use sluice_core::names::{identifiers, quote_ident};
use sluice_core::schema::SchemaHistory;
use sluice_lake::{LakeTable, TablePath};
use sluice_warehouses::{LakeFiles, LedgerEntry, LedgerMove, Target, Warehouse};

use crate::gate::{self, Decision};
use crate::image::Images;
use crate::quality;
use crate::{EngineError, Project};

/// Batches in flight between the lake reader and the warehouse writer.
const CHANNEL_BATCHES: usize = 2;

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    pub target: String,
    pub mode: &'static str,
    pub changes: u64,
    pub rows_after: u64,
    pub lake_version: i64,
    pub up_to_date: bool,
    /// The schema gate stopped this table's loading: the pending changes (`sluice schema
    /// diff`); the changes before the first halted one loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// Lake columns frozen out of the warehouse table (schema_changes = freeze)...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// ...and the loaded changes that held a value in one of them.
    #[serde(skip_serializing_if = "is_zero")]
    pub left_out_rows: u64,
    /// The schema gate (not only a check) halted it: `halted` holds its diff.
    #[serde(skip)]
    pub schema_halted: bool,
    /// The data-quality checks run before this load, each with what it found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::quality::CheckResult>,
    /// What the loads did to the table besides loading it (Redshift: a changed layout).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The change log as DataFusion sees it, at the snapshot the handle holds.
async fn changes_session(log: &LakeTable) -> Result<SessionContext, EngineError> {
    let ctx = SessionContext::new();
    crate::query::register(&ctx, "changes".into(), log).await?;
    Ok(ctx)
}

type Loaded = (
    Box<dyn Warehouse>,
    Result<sluice_warehouses::LoadReport, EngineError>,
);

/// Runs the warehouse's (blocking) load of `batches` off the async threads.
async fn apply(
    wh: Box<dyn Warehouse>,
    target: &Target,
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, String>> + Send + 'static,
    ledger: LedgerMove,
) -> Loaded {
    let target = target.clone();
    let schema = schema.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut wh = wh;
        let mut batches = batches;
        let r = wh.load(&target, &schema, &mut batches, ledger);
        (wh, r)
    })
    .await;
    match joined {
        Ok((wh, r)) => (wh, r.map_err(EngineError::from)),
        // The warehouse handle was lost with the task: only a panic gets here.
        Err(e) => panic!("warehouse task failed: {e}"),
    }
}

/// How a load's changes reach the warehouse.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// It reads the lake's files itself, handed to it before the load.
    Files,
    /// Streamed as batches; `held_back`: without the changes a check holds back.
    Stream { held_back: bool },
}

/// Streams changes with `after < _sluice_seq <= ledger.to.seq` into one warehouse
/// transaction.
async fn load_range(
    ctx: &SessionContext,
    wh: Box<dyn Warehouse>,
    target: &Target,
    schema: &SchemaRef,
    after: i64,
    ledger: LedgerMove,
    feed: Feed,
) -> Loaded {
    let upto = ledger.to;
    let quarantined = match feed {
        // It reads the lake's files itself (given before this call): nothing to stream.
        Feed::Files => return apply(wh, target, schema, std::iter::empty(), ledger).await,
        Feed::Stream { held_back } => held_back,
    };
    // The row identity is computed here, not read from the lake.
    let row_ids = schema.field_with_name(ROW_ID).is_ok();
    let cols: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != ROW_ID)
        .map(|f| quote_ident(f.name()))
        .collect();
    // Changes a data-quality check holds back (registered by `quarantined_seqs`).
    let held_back = match quarantined {
        true => format!(
            " AND {} NOT IN (SELECT seq FROM {HELD_BACK})",
            quote_ident(SEQ)
        ),
        false => String::new(),
    };
    let sql = format!(
        "SELECT {} FROM changes WHERE {seq} > {after} AND {seq} <= {}{held_back}",
        cols.join(", "),
        upto.seq,
        seq = quote_ident(SEQ),
    );
    let mut stream = match async { ctx.sql(&sql).await?.execute_stream().await }.await {
        Ok(s) => s,
        Err(e) => return (wh, Err(e.into())),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RecordBatch, String>>(CHANNEL_BATCHES);
    let feeder = tokio::spawn(async move {
        while let Some(b) = stream.next().await {
            let b = b.map_err(|e| e.to_string());
            let b = match row_ids {
                true => b.and_then(add_row_ids),
                false => b,
            };
            let stop = b.is_err();
            if tx.send(b).is_err() || stop {
                break;
            }
        }
    });
    let loaded = apply(wh, target, schema, rx.into_iter(), ledger).await;
    feeder.abort();
    loaded
}

pub async fn load(project: &Project, spec: &TableSpec) -> Result<Vec<LoadResult>, EngineError> {
    load_gated(project, spec, false).await
}

async fn open_changes(
    project: &Project,
    spec: &TableSpec,
) -> Result<Option<LakeTable>, EngineError> {
    Ok(LakeTable::open(
        &project.lake,
        &TablePath::changes(&spec.source, &spec.table),
    )
    .await?)
}

/// The schema gate's view of each warehouse table of `spec`, without loading.
pub async fn gate_decisions(
    project: &Project,
    spec: &TableSpec,
) -> Result<Vec<(Target, Decision)>, EngineError> {
    let Some(log) = open_changes(project, spec).await? else {
        return Ok(Vec::new());
    };
    let lake = LakeSchema::of(project, spec, &log)?;
    let mut wh = project.warehouse(&spec.warehouse)?;
    let mut out = Vec::new();
    for target in project.targets_in(spec, wh.as_mut())? {
        let (d, _) = decide_target(spec, &log, &lake, wh.as_mut(), &target, false).await?;
        out.push((target, d));
    }
    Ok(out)
}

/// A lake table's schema as the gate holds it, read once per table: its catalog, its source
/// columns and their warehouse names (same order).
pub(crate) struct LakeSchema {
    history: SchemaHistory,
    data: Schema,
    mapped: Vec<String>,
}

impl LakeSchema {
    pub(crate) fn of(
        project: &Project,
        spec: &TableSpec,
        log: &LakeTable,
    ) -> Result<LakeSchema, EngineError> {
        let data = data_schema(log.schema()?.as_ref());
        let mapped = identifiers(
            data.fields().iter().map(|f| f.name().as_str()),
            project.identifier_limit(&spec.warehouse),
        );
        Ok(LakeSchema {
            history: log.schema_history()?,
            data,
            mapped,
        })
    }
}

/// The gate's decision for one warehouse table, with the state it decided from.
pub(crate) async fn decide_target(
    spec: &TableSpec,
    log: &LakeTable,
    lake: &LakeSchema,
    wh: &mut dyn Warehouse,
    target: &Target,
    accept: bool,
) -> Result<(Decision, Option<gate::GateState>), EngineError> {
    let existing = wh.columns(target)?;
    let state = gate::read_state(log, &spec.warehouse, target).await?;
    let decision = gate::decide(
        &lake.history,
        &lake.data,
        &lake.mapped,
        &existing,
        state,
        &spec.schema_changes,
        accept,
    );
    Ok((decision, state))
}

/// Loads what each warehouse table of `spec` has not seen, as far as the schema gate lets it;
/// `accept` decides every pending schema change as evolve (`sluice schema accept`).
pub async fn load_gated(
    project: &Project,
    spec: &TableSpec,
    accept: bool,
) -> Result<Vec<LoadResult>, EngineError> {
    let Some(log) = open_changes(project, spec).await? else {
        return Ok(Vec::new());
    };
    let lake_seq = log.last_seq().await?;
    let lake_version = log.version();
    let change_log = log.schema()?;
    let ctx = changes_session(&log).await?;
    let lake = LakeSchema::of(project, spec, &log)?;
    let images = Images::of(&log).await?;
    let mut results = Vec::new();
    let _in_use = project.warehouse_in_use(&spec.warehouse).await;
    let mut wh = project.warehouse(&spec.warehouse)?;
    let chunk = project
        .config
        .warehouses
        .get(&spec.warehouse)
        .map(|w| w.changes_per_transaction())
        .unwrap_or(sluice_core::config::DEFAULT_CHANGES_PER_TRANSACTION);
    for mut target in project.targets_in(spec, wh.as_mut())? {
        let (gate, prior) = decide_target(spec, &log, &lake, wh.as_mut(), &target, accept).await?;
        target.add_columns = gate.add_columns;
        // The gate's columns, then the change columns (not the partition column).
        let schema: SchemaRef = Arc::new(Schema::new(
            change_log
                .fields()
                .iter()
                .filter(|f| match is_change_column(f.name()) {
                    true => f.name() != INGEST_DATE,
                    false => gate.columns.contains(f.name()),
                })
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let keyless_merge = target.mode == LoadMode::Merge && target.key.is_empty();
        if keyless_merge {
            refuse_keyless_merge(project, spec, wh.as_ref(), &target)?;
        }
        let schema = match keyless_merge {
            true => with_row_id(&schema),
            false => schema,
        };
        let ledger = wh.ledger(&target)?;
        let mut ledger_at = ledger.map(|d| d.seq);
        // A halt loads what came before the change that halted.
        let last = match &gate.halt {
            Some(h) => lake_seq.min(h.at_seq - 1),
            None => lake_seq,
        };
        let full_state = full_state_images(project, spec);
        let mut ranges = plan(&target, &images, full_state, ledger, last, chunk);
        // The data gate: checks over everything this load would apply.
        // With nothing to load, the span is empty and only freshness is judged.
        let span = match (ranges.first(), ranges.last()) {
            (Some(first), Some(end)) => quality::Span {
                after: first.after,
                upto: end.upto,
            },
            _ => {
                let at = ledger.map(|l| l.seq).unwrap_or(0);
                quality::Span {
                    after: at,
                    upto: at,
                }
            }
        };
        let filters = !wh.wants_lake_files();
        let mut verdict = quality::evaluate(project, spec, &log, &target, span, filters).await?;
        quality::record(&project.lake, spec, &target, span, &mut verdict).await?;
        if let Some((at, _)) = &verdict.halt {
            ranges = plan(
                &target,
                &images,
                full_state,
                ledger,
                last.min(at - 1),
                chunk,
            );
        }
        let mut result = LoadResult {
            target: target.display(),
            mode: target.mode.name(),
            changes: 0,
            rows_after: 0,
            lake_version,
            up_to_date: ranges.is_empty(),
            halted: None,
            left_out: gate.left_out.clone(),
            left_out_rows: 0,
            schema_halted: gate.halt.is_some(),
            checks: std::mem::take(&mut verdict.results),
            maintenance: Vec::new(),
        };
        if let Some(h) = &gate.halt {
            let diff = gate.diff();
            tracing::warn!(target: "sluice::alert", kind = "schema_halt", table = %target.display(), version = h.version, changes = %diff, "schema change: table halted until `sluice schema accept {}.{}`", spec.source, spec.table);
            result.halted = Some(diff);
        }
        if let Some((at, why)) = verdict.halt.take() {
            tracing::warn!(target: "sluice::alert", kind = "check_halt", table = %target.display(), at_seq = at, reason = %why, "data-quality check: table halted");
            result.halted = Some(match result.halted.take() {
                Some(diff) => format!("{diff}\n{why}"),
                None => why,
            });
        }
        let quarantined = quarantined_seqs(&ctx, &verdict.quarantined)?;
        let mut loaded_any = false;
        if gate.columns.is_empty() {
            // Nothing to load into (a new table halted or frozen out).
            results.push(result);
            continue;
        }
        // Redshift always copies the lake's files; DuckDB reads a local lake's files itself
        // unless the load must leave changes out or compute row identities on the way.
        let feed = match wh.wants_lake_files()
            || (!quarantined && !keyless_merge && wh.reads_lake_files(log.url()))
        {
            true => Feed::Files,
            false => Feed::Stream {
                held_back: quarantined,
            },
        };
        for range in ranges {
            let (after, end) = (range.after, range.upto);
            let upto = LedgerEntry {
                lake_version,
                seq: end,
            };
            if matches!(feed, Feed::Files) {
                wh.use_lake_files(LakeFiles {
                    table_url: log.url().clone(),
                    store: log.store(),
                    files: log
                        .data_files(after, end)?
                        .into_iter()
                        .map(|f| (f.path, f.size))
                        .collect(),
                    after,
                });
            }
            let ledger = LedgerMove {
                from: ledger_at,
                to: upto,
                image: range.image,
            };
            let (back, report) = load_range(&ctx, wh, &target, &schema, after, ledger, feed).await;
            wh = back;
            let report = report?;
            tracing::info!(target = %target.display(), changes = report.changes, seq = end, image = range.image, lake_version, "loaded");
            result.changes += report.changes;
            result.rows_after = report.rows_after;
            result.maintenance.extend(report.maintenance);
            result.left_out_rows += count_left_out(&ctx, &gate.left_out, after, end).await?;
            ledger_at = Some(end);
            loaded_any = true;
        }
        // Evolved columns (and a new table) exist once a load has run; until then the
        // decision waits.
        let state = gate::GateState {
            decided_version: gate.decided_version,
        };
        let applied = loaded_any || !gate.add_columns;
        if applied && prior != Some(state) {
            gate::write_state(&log, &spec.warehouse, &target, state).await?;
        }
        if result.halted.is_none() {
            crate::metrics::loaded(
                &spec.source,
                &spec.table,
                result.changes,
                result.lake_version,
            );
        }
        results.push(result);
    }
    Ok(results)
}

/// One transaction of a load: the changes `after < _sluice_seq <= upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    after: i64,
    upto: i64,
    /// The range is a whole image the table becomes (see [`LedgerMove::image`]).
    image: bool,
}

/// The transactions that bring `target` up to `last` from its `ledger`, in order.
///
/// - `replace` loads the last complete image ([`Images`]), whole, when the table has not
///   seen it; never part of one, and never changes outside one.
/// - A merge table without a key takes a complete snapshot image whole (it is the table's
///   new content: rows are not added again), and the changes after it; it waits for an
///   image being landed rather than take its first rows as new ones. Only database
///   snapshots are such images (`full_state`): the files of a sync are rows added.
/// - Everything else: the changes after the ledger, `chunk` seqs per transaction.
fn plan(
    target: &Target,
    images: &Images,
    full_state: bool,
    ledger: Option<LedgerEntry>,
    last: i64,
    chunk: i64,
) -> Vec<Range> {
    let unseen = |at: i64| ledger.is_none_or(|l| at > l.lake_version);
    let mut after = ledger.map(|l| l.seq).unwrap_or(0);
    let mut stop = last;
    let mut out = Vec::new();
    match target.mode {
        LoadMode::Replace => {
            return images
                .last
                .filter(|i| i.to <= last && unseen(i.at))
                .map(|i| {
                    vec![Range {
                        after: i.from - 1,
                        upto: i.to,
                        image: true,
                    }]
                })
                .unwrap_or_default()
        }
        LoadMode::Merge if target.key.is_empty() && full_state => {
            if let Some(open) = images.open {
                stop = stop.min(open - 1);
            }
            if let Some(i) = images.last.filter(|i| i.to <= stop && unseen(i.at)) {
                out.push(Range {
                    after: i.from - 1,
                    upto: i.to,
                    image: true,
                });
                after = after.max(i.to);
            }
        }
        _ => {}
    }
    while after < stop {
        let upto = stop.min(after + chunk);
        out.push(Range {
            after,
            upto,
            image: false,
        });
        after = upto;
    }
    out
}

/// Whether a source's images are the whole table (database snapshots), not rows added (the
/// files of a sync).
fn full_state_images(project: &Project, spec: &TableSpec) -> bool {
    project
        .config
        .sources
        .get(&spec.source)
        .is_some_and(|s| s.images_are_whole())
}

/// Merge without a key matches rows on their identity, which the load computes. It cannot
/// for a table read incrementally (a changed row's old version is never seen, so both would
/// stay), nor where the warehouse copies the lake's files itself (Redshift).
fn refuse_keyless_merge(
    project: &Project,
    spec: &TableSpec,
    wh: &dyn Warehouse,
    target: &Target,
) -> Result<(), EngineError> {
    let incremental = project
        .config
        .sources
        .get(&spec.source)
        .is_some_and(|s| s.mode() == sluice_core::config::Mode::Incremental);
    let why = if incremental {
        "an incremental read never sees a changed row's old version, so a table without a key cannot be merged"
    } else if wh.wants_lake_files() {
        "Redshift copies the lake's files, which do not hold the row identities a merge without a key matches on"
    } else {
        return Ok(());
    };
    Err(EngineError::Usage(format!(
        "{}: {why}: set primary_key for {}.{}, or load = \"append\"",
        target.display(),
        spec.source,
        spec.table
    )))
}

/// The load's schema with `_sluice_row_id` (the identity of a row of a table without a key).
fn with_row_id(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        ROW_ID,
        arrow::datatypes::DataType::Utf8,
        false,
    )));
    Arc::new(Schema::new(fields))
}

/// `batch` with each row's identity appended (as the load's schema ends).
fn add_row_ids(batch: RecordBatch) -> Result<RecordBatch, String> {
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !is_change_column(n))
        .collect();
    let ids = sluice_core::rowid::row_ids(&batch, &names);
    let mut cols = batch.columns().to_vec();
    cols.push(Arc::new(arrow::array::StringArray::from_iter_values(
        ids.into_iter().map(sluice_core::rowid::row_id_text),
    )));
    RecordBatch::try_new(with_row_id(batch.schema_ref()), cols).map_err(|e| e.to_string())
}

/// The table of seqs the load leaves out, in the load's session.
const HELD_BACK: &str = "__sluice_held_back";

/// Registers the changes a check holds back from the next loads (replacing the previous
/// target's); whether there are any.
fn quarantined_seqs(
    ctx: &SessionContext,
    seqs: &std::collections::BTreeSet<i64>,
) -> Result<bool, EngineError> {
    ctx.deregister_table(HELD_BACK)?;
    if seqs.is_empty() {
        return Ok(false);
    }
    let batch = RecordBatch::try_from_iter(vec![(
        "seq",
        Arc::new(arrow::array::Int64Array::from_iter_values(
            seqs.iter().copied(),
        )) as arrow::array::ArrayRef,
    )])
    .map_err(|e| EngineError::Internal(format!("held-back changes: {e}")))?;
    ctx.register_batch(HELD_BACK, batch)?;
    Ok(true)
}

/// Changes in `after < seq <= upto` holding a value in a frozen-out column.
async fn count_left_out(
    ctx: &SessionContext,
    left_out: &[String],
    after: i64,
    upto: i64,
) -> Result<u64, EngineError> {
    if left_out.is_empty() {
        return Ok(0);
    }
    let any = left_out
        .iter()
        .map(|c| format!("{} IS NOT NULL", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "SELECT count(*) FROM changes WHERE {seq} > {after} AND {seq} <= {upto} AND ({any})",
        seq = quote_ident(SEQ)
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    Ok(batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0) as u64)
        })
        .unwrap_or(0))
}
