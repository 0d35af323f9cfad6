//! Data-quality checks: the data gate beside the schema gate, between lake and warehouse.
//!
//! The lake takes every change the source made (it is the record); each load first runs the
//! table's checks (`[[sources.S.tables.T.checks]]`) over the changes it is about to apply,
//! inside DataFusion over the change log, and then:
//!
//! - `warn`: loads everything, and the failures are recorded and reported;
//! - `quarantine`: the failing changes are left out of the load and recorded in the table's
//!   quarantine with the check's name (they stay in the lake's change log);
//! - `halt`: the changes before the first failing one load; the table stops there (exit 3)
//!   until the source sends a corrected change past it… which still leaves the failing one,
//!   so `sluice checks accept SOURCE.TABLE` lets the failing changes now in the lake through
//!   (or the check is changed).
//!
//! A row fails when what the check asserts is false (SQL `CHECK` semantics: NULL passes but
//! for `not_null`); deletes are not checked. `unique` judges the rows the table holds after
//! the load (the latest change per key) and fails those that arrived in it; `reference` looks
//! for the value among the referenced table's current rows in the lake. Every result is kept
//! in the lake (`checks/<source>/<table>`, `sluice query "SELECT * FROM s.t__checks"`).

mod record;

use std::collections::BTreeSet;

use arrow::array::{Array, Int64Array};
use datafusion::prelude::SessionContext;
use datafusion::sql::TableReference;
use futures::StreamExt;
use serde::Serialize;

use sluice_core::change::{current_state_select, data_schema, INGESTED_AT, OP, SEQ};
use sluice_core::config::{Check, CheckAction, Rule, TableSpec};
use sluice_core::names::quote_ident as q;
use sluice_core::reject::{row_text, Reject};
use sluice_lake::LakeTable;
use sluice_warehouses::Target;

use crate::{EngineError, Project};

pub(crate) use record::{accepted_through, outcome, record};
pub use record::{latest, RecordedResult};

/// Failing rows shown in a result.
const SAMPLES: usize = 3;

/// One check's outcome on one load.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub rule: String,
    pub action: CheckAction,
    /// Changes checked (row checks), or the rows the load brings (row_count).
    pub checked: u64,
    pub failed: u64,
    /// Failures `sluice checks accept` let through (halt).
    #[serde(skip_serializing_if = "is_zero")]
    pub accepted: u64,
    /// The first failing change's `_sluice_seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failing_seq: Option<i64>,
    /// A few failing rows as JSON, or what a table check found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CheckResult {
    /// A result of `c` with nothing counted yet.
    fn of(c: &Check) -> CheckResult {
        CheckResult {
            check: c.name.clone(),
            rule: c.rule.describe(),
            action: c.action,
            checked: 0,
            failed: 0,
            accepted: 0,
            first_failing_seq: None,
            sample: Vec::new(),
        }
    }

    /// `check "name" (rule): N of M failing, e.g. {...}`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "check \"{}\" ({}): {} of {} failing",
            self.check, self.rule, self.failed, self.checked
        );
        if let Some(first) = self.sample.first() {
            s += &format!(", e.g. {first}");
        }
        s
    }
}

/// What the checks let one load of one warehouse table do.
#[derive(Debug, Default)]
pub struct Verdict {
    pub results: Vec<CheckResult>,
    /// `_sluice_seq` of the changes the load leaves out (quarantine).
    pub quarantined: BTreeSet<i64>,
    /// The records of those changes for the quarantine.
    pub rejects: Vec<(i64, Reject)>,
    /// A halting check failed: the load stops before this seq, for this reason.
    pub halt: Option<(i64, String)>,
}

/// The span of changes `after < _sluice_seq <= upto` a load is about to apply.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub after: i64,
    pub upto: i64,
}

/// Runs `spec`'s checks on the changes of `span` before they load into `target`.
/// `filters_rows`: the load reads rows (not the lake's files whole), so it can leave some out.
pub async fn evaluate(
    project: &Project,
    spec: &TableSpec,
    log: &LakeTable,
    target: &Target,
    span: Span,
    filters_rows: bool,
) -> Result<Verdict, EngineError> {
    let mut verdict = Verdict::default();
    // Nothing new: only a table's freshness can have changed.
    let empty = span.upto <= span.after;
    let judged = |c: &&Check| !empty || matches!(c.rule, Rule::Freshness { .. });
    if !spec.checks.iter().any(|c| judged(&c)) {
        return Ok(verdict);
    }
    let table = format!("{}.{}", spec.source, spec.table);
    if !filters_rows {
        if let Some(c) = spec
            .checks
            .iter()
            .find(|c| c.action == CheckAction::Quarantine)
        {
            return Err(EngineError::Usage(format!(
                "{table}: check \"{}\" quarantines rows, but {} loads the lake's files whole (Redshift), so no row can be held back: use action = \"warn\" or \"halt\"",
                c.name,
                target.display()
            )));
        }
    }
    let data = data_schema(log.schema()?.as_ref());
    for c in &spec.checks {
        for col in c.rule.columns() {
            if data.index_of(col).is_err() {
                return Err(EngineError::Usage(format!(
                    "{table}: check \"{}\" names column `{col}`, which the lake table does not have (it has: {})",
                    c.name,
                    data.fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    let ctx = crate::query::new_session()?;
    crate::query::register(&ctx, TableReference::bare("changes"), log).await?;
    // Only a halt can be accepted: no read beside the log for tables without one.
    let accepted = match spec.checks.iter().any(|c| c.action == CheckAction::Halt) {
        true => accepted_through(log, &spec.warehouse, target).await?,
        false => None,
    };
    let shape = Shape {
        key: log.primary_key(),
        data: &data,
    };
    let checked = match empty {
        true => 0,
        false => {
            count(
                &ctx,
                &format!("SELECT count(*) FROM changes WHERE {}", in_span(span, "")),
            )
            .await?
        }
    };
    for c in spec.checks.iter().filter(judged) {
        let mut result = match &c.rule {
            Rule::RowCount { min, max } => row_count(c, checked, span, *min, *max),
            Rule::Freshness {
                column,
                max_age_secs,
            } => freshness(&ctx, c, column.as_deref(), *max_age_secs).await?,
            rule => {
                if let Rule::Reference {
                    source, table: to, ..
                } = rule
                {
                    let registered =
                        crate::query::register_source_table(&ctx, &project.lake, source, to, None)
                            .await?;
                    if registered.is_none() {
                        return Err(EngineError::Usage(format!(
                            "{table}: check \"{}\" references {source}.{to}, which has not landed in the lake yet: sync it first",
                            c.name
                        )));
                    }
                }
                let sql = failing_rows_sql(c, &shape, span);
                let mut r =
                    failing_rows(&ctx, &sql, c, &table, target, accepted, &mut verdict).await?;
                r.checked = checked;
                r
            }
        };
        // A table check that halted is let through once accepted past the load's end.
        if !c.rule.is_row_check() && result.failed > 0 && accepted.is_some_and(|a| a >= span.upto) {
            result.accepted = result.failed;
        }
        if result.failed > result.accepted && c.action == CheckAction::Halt {
            let at = result.first_failing_seq.unwrap_or(span.after + 1);
            if verdict.halt.as_ref().is_none_or(|(h, _)| at < *h) {
                verdict.halt = Some((
                    at,
                    format!(
                        "{}; loading stopped before change {at}: fix the source or the check, or `sluice checks accept {table}`",
                        result.summary()
                    ),
                ));
            }
        }
        if result.failed > 0 {
            tracing::warn!(table = %table, target = %target.display(), check = %c.name, action = c.action.name(), failed = result.failed, checked = result.checked, "data-quality check failed");
        }
        verdict.results.push(result);
    }
    Ok(verdict)
}

/// `sluice checks SOURCE.TABLE`: each check's latest result per warehouse table.
pub async fn show(project: &Project, name: &str) -> Result<Vec<RecordedResult>, EngineError> {
    let spec = crate::schema_cmd::spec_of(project, name).await?;
    if spec.checks.is_empty() {
        return Err(EngineError::Usage(format!(
            "{name} has no checks: add [[sources.{}.tables.{}.checks]] to the config",
            spec.source, spec.table
        )));
    }
    latest(&project.lake, &spec.source, &spec.table).await
}

/// `sluice checks accept SOURCE.TABLE`: the failing changes a halting check stopped at (all
/// those now in the lake) load, and the table loads on. Returns the seq accepted through.
pub async fn accept(
    project: &Project,
    name: &str,
) -> Result<(Option<i64>, Vec<crate::load::LoadResult>), EngineError> {
    let spec = crate::schema_cmd::spec_of(project, name).await?;
    let through = record::accept(project, &spec).await?;
    let loads = crate::load::load(project, &spec).await?;
    Ok((through, loads))
}

/// One line per recorded result, problems first.
pub fn render(results: &[RecordedResult]) -> String {
    let mut rows: Vec<&RecordedResult> = results.iter().collect();
    rows.sort_by_key(|r| r.outcome == "pass");
    let mut out = String::new();
    for r in rows {
        out += &format!(
            "{} check \"{}\" ({}, {}): {} — {} of {} failing, through seq {} at {}\n",
            r.target, r.check, r.rule, r.action, r.outcome, r.failed, r.checked, r.upto_seq, r.at
        );
        if let Some(sample) = r.sample.as_deref().filter(|_| r.outcome != "pass") {
            out += &format!("    e.g. {}\n", sample.replace('\n', "\n         "));
        }
    }
    if out.is_empty() {
        out = "no results yet: checks run at each load (sluice sync)\n".into();
    }
    out
}

/// What the failing-row queries need of the checked table.
struct Shape<'a> {
    key: Vec<String>,
    data: &'a arrow::datatypes::Schema,
}

impl Shape<'_> {
    /// The data columns, quoted, each prefixed with `alias` (say `"c."`, or `""`), joined.
    fn columns(&self, alias: &str) -> String {
        self.data
            .fields()
            .iter()
            .map(|f| format!("{alias}{}", q(f.name())))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `changes` in the span, deletes left out (a delete asserts nothing about values).
fn in_span(span: Span, alias: &str) -> String {
    format!(
        "{alias}{seq} > {} AND {alias}{seq} <= {} AND {alias}{op} <> 'd'",
        span.after,
        span.upto,
        seq = q(SEQ),
        op = q(OP)
    )
}

/// The query of the changes in `span` failing row check `c`: `_sluice_seq` first, then the
/// data columns, in seq order.
fn failing_rows_sql(c: &Check, shape: &Shape, span: Span) -> String {
    let seq = q(SEQ);
    let cols = shape.columns("");
    let asserted = |pass: String| {
        format!(
            "SELECT {seq}, {cols} FROM changes WHERE {} AND (({pass}) IS FALSE) ORDER BY {seq}",
            in_span(span, "")
        )
    };
    match &c.rule {
        Rule::NotNull { column } => asserted(format!("{} IS NOT NULL", q(column))),
        Rule::AcceptedValues { column, values } => asserted(format!(
            "{} IN ({})",
            q(column),
            values
                .iter()
                .map(|v| v.sql())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Rule::Range { column, min, max } => {
            let mut parts = Vec::new();
            if let Some(m) = min {
                parts.push(format!("{} >= {}", q(column), m.sql()));
            }
            if let Some(m) = max {
                parts.push(format!("{} <= {}", q(column), m.sql()));
            }
            asserted(parts.join(" AND "))
        }
        Rule::Pattern { column, regex } => asserted(format!(
            "CAST({} AS VARCHAR) ~ '{}'",
            q(column),
            regex.replace('\'', "''")
        )),
        Rule::Sql { expr } => asserted(expr.clone()),
        Rule::Unique { columns } => {
            // The rows the table holds once this load is in (the latest change per key, every
            // change without a key; deletes removed), narrowed first to the keys that ever
            // held a value this load brings: only those can share it, and the window then
            // runs over their changes alone, not the whole log.
            let by: Vec<String> = columns.iter().map(|c| q(c)).collect();
            let pairs = |l: &str, r: &str, cols: &[String]| {
                cols.iter()
                    .map(|c| format!("{l}.{c} = {r}.{c}"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            let not_null: Vec<String> = by.iter().map(|c| format!("{c} IS NOT NULL")).collect();
            let upto = format!("SELECT * FROM changes WHERE {seq} <= {}", span.upto);
            let vals = format!(
                "SELECT DISTINCT {by} FROM changes WHERE {} AND {not_null}",
                in_span(span, ""),
                by = by.join(", "),
                not_null = not_null.join(" AND "),
            );
            let current = match shape.key.is_empty() {
                true => format!(
                    "SELECT u.* FROM upto AS u JOIN vals AS v ON {} WHERE u.{} <> 'd'",
                    pairs("u", "v", &by),
                    q(OP)
                ),
                false => {
                    let keys: Vec<String> = shape.key.iter().map(|k| q(k)).collect();
                    format!(
                        "SELECT * FROM ({}) AS latest",
                        current_state_select(
                            &format!(
                                "(SELECT u.* FROM upto AS u JOIN (SELECT DISTINCT {uk} FROM upto AS u JOIN vals AS v ON {on}) AS t ON {tk})",
                                uk = keys.iter().map(|k| format!("u.{k}")).collect::<Vec<_>>().join(", "),
                                on = pairs("u", "v", &by),
                                tk = pairs("u", "t", &keys),
                            ),
                            shape.data,
                            &shape.key
                        )
                    )
                }
            };
            format!(
                "WITH upto AS ({upto}), vals AS ({vals}), cur AS ({current}), \
                 dup AS (SELECT {by} FROM cur WHERE {not_null} GROUP BY {by} HAVING count(*) > 1) \
                 SELECT cur.{seq}, {cur_cols} FROM cur JOIN dup ON {on} \
                 WHERE cur.{seq} > {after} ORDER BY cur.{seq}",
                by = by.join(", "),
                not_null = not_null.join(" AND "),
                cur_cols = shape.columns("cur."),
                on = pairs("cur", "dup", &by),
                after = span.after,
            )
        }
        Rule::Reference {
            column,
            source,
            table,
            to_column,
        } => {
            format!(
                "SELECT c.{seq}, {c_cols} FROM changes AS c \
                 LEFT JOIN (SELECT DISTINCT {to} AS \"__sluice_ref\" FROM {src}.{tbl}) AS r \
                 ON c.{col} = r.\"__sluice_ref\" \
                 WHERE {span} AND c.{col} IS NOT NULL AND r.\"__sluice_ref\" IS NULL ORDER BY c.{seq}",
                c_cols = shape.columns("c."),
                to = q(to_column),
                src = q(source),
                tbl = q(table),
                col = q(column),
                span = in_span(span, "c."),
            )
        }
        Rule::RowCount { .. } | Rule::Freshness { .. } => {
            unreachable!("table checks have no failing rows")
        }
    }
}

/// Streams the failing rows of `sql`: counted, a few kept as samples, all kept as rejects
/// when the check quarantines; for a halt, the failures `accept` let through are counted
/// apart.
async fn failing_rows(
    ctx: &SessionContext,
    sql: &str,
    c: &Check,
    table: &str,
    target: &Target,
    accepted: Option<i64>,
    verdict: &mut Verdict,
) -> Result<CheckResult, EngineError> {
    let context = |e: datafusion::error::DataFusionError| {
        EngineError::Usage(format!("{table}: check \"{}\" could not run: {e}", c.name))
    };
    let mut result = CheckResult::of(c);
    let mut stream = ctx
        .sql(sql)
        .await
        .map_err(context)?
        .execute_stream()
        .await
        .map_err(context)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(context)?;
        let seqs = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| EngineError::Internal("check: _sluice_seq is not Int64".into()))?
            .clone();
        let rows = batch
            .project(&(1..batch.num_columns()).collect::<Vec<_>>())
            .map_err(|e| EngineError::Internal(format!("check: {e}")))?;
        for i in 0..batch.num_rows() {
            let seq = seqs.value(i);
            result.failed += 1;
            if c.action == CheckAction::Halt && accepted.is_some_and(|a| seq <= a) {
                result.accepted += 1;
                continue;
            }
            result.first_failing_seq = Some(result.first_failing_seq.unwrap_or(seq).min(seq));
            let wanted = result.sample.len() < SAMPLES || c.action == CheckAction::Quarantine;
            if !wanted {
                continue;
            }
            let text = row_text(&rows, i);
            if result.sample.len() < SAMPLES {
                result.sample.push(text.clone());
            }
            if c.action == CheckAction::Quarantine && verdict.quarantined.insert(seq) {
                verdict.rejects.push((
                    seq,
                    Reject {
                        file: format!("changes/{table}"),
                        line: seq as u64,
                        column: Some(c.rule.columns().join(", ")).filter(|s| !s.is_empty()),
                        raw: text,
                        reason: format!(
                            "check \"{}\" failed ({}): held back from {}",
                            c.name,
                            c.rule.describe(),
                            target.display()
                        ),
                    },
                ));
            }
        }
    }
    Ok(result)
}

async fn count(ctx: &SessionContext, sql: &str) -> Result<u64, datafusion::error::DataFusionError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0) as u64)
}

/// `row_count`: the rows this load brings (deletes aside) lie within the bounds.
fn row_count(c: &Check, n: u64, span: Span, min: Option<u64>, max: Option<u64>) -> CheckResult {
    let outside = min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
    CheckResult {
        checked: n,
        failed: outside as u64,
        first_failing_seq: outside.then_some(span.after + 1),
        sample: match outside {
            true => vec![format!("{n} row(s) in this load")],
            false => Vec::new(),
        },
        ..CheckResult::of(c)
    }
}

/// `freshness`: the newest value of `column` (or landing time) is at most `max_age_secs` old.
async fn freshness(
    ctx: &SessionContext,
    c: &Check,
    column: Option<&str>,
    max_age_secs: u64,
) -> Result<CheckResult, EngineError> {
    let col = q(column.unwrap_or(INGESTED_AT));
    let sql = format!(
        "SELECT CAST(to_unixtime(max({col})) AS BIGINT) FROM changes WHERE {} <> 'd'",
        q(OP)
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let newest = batches.first().and_then(|b| {
        let a = b.column(0).as_any().downcast_ref::<Int64Array>()?;
        (!a.is_null(0)).then(|| a.value(0))
    });
    let now = chrono::Utc::now().timestamp();
    let (failed, sample) = match newest {
        None => (true, "no rows".to_string()),
        Some(at) => {
            let age = now - at;
            let when = chrono::DateTime::from_timestamp(at, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| at.to_string());
            (
                age > max_age_secs as i64,
                format!("newest {when}, {age} s old"),
            )
        }
    };
    Ok(CheckResult {
        checked: 1,
        failed: failed as u64,
        sample: vec![sample],
        ..CheckResult::of(c)
    })
}
