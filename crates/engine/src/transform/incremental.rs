//! Transforms computed from their input's new changes alone.
//!
//! A transform whose SQL maps each row of one keyed lake table to at most one result row —
//! a projection and a filter (`SELECT id, upper(name) AS name FROM shop.customers WHERE
//! active`), every expression deterministic, keyed by the input's key passed through — has a
//! result whose row for a key depends on that key's input row alone. A run then reads only
//! the input changes after the last run's `_sluice_seq` watermark: the SQL sees the current
//! state of the keys they touch, the table's own state is narrowed to those keys, and the
//! one difference query lands what changed. Any other SQL (joins, aggregates, windows,
//! DISTINCT, LIMIT, subqueries, `now()`, another transform) is computed whole each run.
//!
//! The watermark rides in the run's position after the full digest:
//! `digest (32) | shape (32) | watermark (8, big-endian)`. A committed position of another
//! shape (first run, SQL or key or input columns changed, a position of a build before this
//! one) makes the next run a full one, which sets the watermark.

use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::TableReference;

use sluice_core::change::{current_state_select, SEQ};
use sluice_core::names::quote_ident as q;
use sluice_sources::source::Position;

use super::plan::Run;
use crate::query::quoted_reference;
use crate::EngineError;

const DIGEST: usize = 32;

/// How a transform follows its one input.
pub(super) struct Follow {
    pub source: String,
    pub table: String,
    /// The input's key columns, and the result column each passes through to (same order).
    pub input_key: Vec<String>,
    pub result_key: Vec<String>,
    /// The input's change-log columns and its last `_sluice_seq`, at the version the run reads.
    input_schema: arrow::datatypes::SchemaRef,
    pub watermark: i64,
    /// A digest of what the watermark means: the SQL, the key, the input's columns.
    shape: [u8; DIGEST],
}

/// Whether transform `sql` (keyed by `key`) can follow its input's new changes, and how.
pub(super) async fn follow(
    run: &Run,
    sql: &str,
    key: &[String],
) -> Result<Option<Follow>, EngineError> {
    let [(source, table, log)] = run.inputs.as_slice() else {
        return Ok(None);
    };
    if !run.inlined.is_empty() || key.is_empty() {
        return Ok(None);
    }
    let referenced = crate::query::table_references(sql).unwrap_or_default();
    let the_state = |r: &TableReference| r.schema() == Some(source.as_str()) && r.table() == table;
    if referenced.len() != 1 || !the_state(&referenced[0]) {
        // Its change log or quarantine rather than its state: no key to follow.
        return Ok(None);
    }
    let input_key = log.primary_key();
    if input_key.is_empty() {
        return Ok(None);
    }
    let plan = match run.ctx.state().create_logical_plan(sql).await {
        Ok(p) => p,
        Err(_) => return Ok(None),
    };
    let Some(passed) = passed_through(&plan, &referenced[0]) else {
        return Ok(None);
    };
    let mut result_key = Vec::with_capacity(input_key.len());
    for k in &input_key {
        match passed.iter().find(|(input, _)| input == k) {
            Some((_, out)) => result_key.push(out.clone()),
            None => return Ok(None),
        }
    }
    let (mut sorted_result, mut sorted_key) = (result_key.clone(), key.to_vec());
    sorted_result.sort();
    sorted_key.sort();
    if sorted_result != sorted_key {
        return Ok(None);
    }
    let mut shape = blake3::Hasher::new();
    shape.update(format!("{sql}\0{}\0{source}.{table}\0", key.join("\0")).as_bytes());
    let input_schema = log.schema()?;
    shape.update(format!("{input_schema:?}").as_bytes());
    Ok(Some(Follow {
        source: source.clone(),
        table: table.clone(),
        input_key,
        result_key,
        input_schema,
        watermark: log.last_seq().await?,
        shape: *shape.finalize().as_bytes(),
    }))
}

/// `(input column, result column)` for each column the plan's one projection passes through
/// unchanged, when the plan is a row-by-row map of table `input`: one projection over
/// filters and aliases of its scan (a view's plan, inlined under its name, is the input's
/// own), every expression deterministic and free of subqueries, aggregates and windows.
/// None otherwise.
fn passed_through(plan: &LogicalPlan, input: &TableReference) -> Option<Vec<(String, String)>> {
    let LogicalPlan::Projection(projection) = plan else {
        return None;
    };
    let mut node = projection.input.as_ref();
    let mut exprs: Vec<&Expr> = projection.expr.iter().collect();
    let scanned: Vec<String> = loop {
        match node {
            LogicalPlan::Filter(f) => {
                exprs.push(&f.predicate);
                node = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) if a.alias.resolved_eq(input) => {
                break a.schema.fields().iter().map(|f| f.name().clone()).collect()
            }
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            LogicalPlan::TableScan(scan) => {
                break scan
                    .projected_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            }
            _ => return None,
        }
    };
    if exprs.iter().any(|e| !row_wise(e)) {
        return None;
    }
    let mut out = Vec::new();
    for e in &projection.expr {
        match e {
            Expr::Column(c) => out.push((c.name.clone(), c.name.clone())),
            Expr::Alias(a) => {
                if let Expr::Column(c) = a.expr.as_ref() {
                    out.push((c.name.clone(), a.name.clone()));
                }
            }
            // `SELECT *` when the planner leaves it unexpanded: every column as it is.
            #[allow(deprecated)]
            Expr::Wildcard { .. } => out.extend(scanned.iter().map(|n| (n.clone(), n.clone()))),
            _ => {}
        }
    }
    Some(out)
}

/// Whether `e` gives a row's value from that row alone, the same each time.
fn row_wise(e: &Expr) -> bool {
    !e.exists(|e| {
        Ok(match e {
            Expr::ScalarSubquery(_)
            | Expr::InSubquery(_)
            | Expr::Exists(_)
            | Expr::SetComparison(..)
            | Expr::OuterReferenceColumn(..)
            | Expr::AggregateFunction(_)
            | Expr::WindowFunction(_)
            | Expr::Unnest(_)
            | Expr::Placeholder(_) => true,
            Expr::ScalarFunction(f) => f.func.signature().volatility != Volatility::Immutable,
            _ => false,
        })
    })
    .unwrap_or(false)
}

impl Follow {
    fn changes(&self) -> String {
        let name = format!("{}__changes", self.table);
        quoted_reference(&TableReference::partial(
            self.source.as_str(),
            name.as_str(),
        ))
    }

    /// The run's position: its digest, this shape and the watermark.
    pub fn position(&self, run: &Run, watermark: i64) -> Position {
        let mut b = run.at.0.clone();
        b.extend_from_slice(&self.shape);
        b.extend_from_slice(&watermark.to_be_bytes());
        Position(b)
    }

    /// The watermark a committed position leaves this transform to go on from (None: the
    /// next run is a full one).
    pub fn after(&self, committed: &Position) -> Option<i64> {
        let b = &committed.0;
        if b.len() != 2 * DIGEST + 8 || b[DIGEST..2 * DIGEST] != self.shape {
            return None;
        }
        Some(i64::from_be_bytes(b[2 * DIGEST..].try_into().ok()?))
    }

    /// Narrows the run to the input changes after `watermark`: the input's state as the SQL
    /// reads it becomes the latest of those changes per key (deletes removed), and the
    /// table's own state (`own_state`, from its change log `own_changes` of columns
    /// `own_schema`) the latest change of only the keys they touch, so neither side sorts
    /// more than the keys a run changes.
    pub async fn narrow(
        &self,
        ctx: &SessionContext,
        watermark: i64,
        own_changes: &str,
        own_schema: &arrow::datatypes::Schema,
        own_state: &str,
    ) -> Result<(), EngineError> {
        let state = TableReference::partial(self.source.as_str(), self.table.as_str());
        ctx.deregister_table(state.clone())?;
        let new_changes = format!(
            "(SELECT * FROM {} WHERE {} > {watermark}) AS \"__sluice_new_changes\"",
            self.changes(),
            q(SEQ)
        );
        let view = format!(
            "CREATE VIEW {} AS {}",
            quoted_reference(&state),
            current_state_select(&new_changes, &self.input_schema, &self.input_key)
        );
        ctx.sql(&view).await?.collect().await?;
        let touched: Vec<String> = self
            .input_key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} AS \"__sluice_k{i}\"", q(k)))
            .collect();
        let on: Vec<String> = self
            .result_key
            .iter()
            .enumerate()
            .map(|(i, r)| format!("o.{} = t.\"__sluice_k{i}\"", q(r)))
            .collect();
        let own_touched = format!(
            "(SELECT o.* FROM {own_changes} o LEFT SEMI JOIN \
             (SELECT DISTINCT {touched} FROM {changes} WHERE {seq} > {watermark}) t ON {on}) \
             AS \"__sluice_own_touched\"",
            touched = touched.join(", "),
            changes = self.changes(),
            seq = q(SEQ),
            on = on.join(" AND "),
        );
        let own = format!(
            "CREATE VIEW {own_state} AS {}",
            current_state_select(&own_touched, own_schema, &self.result_key)
        );
        ctx.sql(&own).await?.collect().await?;
        Ok(())
    }
}

/// What `status` says of a transform committed at `position`.
pub fn mode_of(position: &[u8]) -> &'static str {
    match position.len() == 2 * DIGEST + 8 {
        true => "transform: incremental, new input changes only",
        false => "transform: full refresh, changed rows land",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    async fn plan_of(sql: &str) -> LogicalPlan {
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        // A view is inlined under its name: its own plan (an aggregate here) is the input's.
        ctx.sql("CREATE VIEW v AS SELECT id, max(name) AS name FROM t GROUP BY id")
            .await
            .unwrap();
        ctx.state().create_logical_plan(sql).await.unwrap()
    }

    async fn passed(sql: &str) -> Option<Vec<(String, String)>> {
        let input = if sql.contains(" v") { "v" } else { "t" };
        passed_through(&plan_of(sql).await, &TableReference::bare(input))
    }

    #[tokio::test]
    async fn only_row_by_row_maps_of_one_table_follow_it() {
        let mapped =
            passed("SELECT id AS customer_id, upper(name) AS name FROM t AS c WHERE name <> 'x'")
                .await
                .expect("a projection and a filter");
        assert_eq!(mapped, vec![("id".to_string(), "customer_id".to_string())]);
        let over_view = passed("SELECT id, name FROM v WHERE id > 0").await;
        assert_eq!(
            over_view.expect("a map of the view"),
            vec![
                ("id".to_string(), "id".to_string()),
                ("name".to_string(), "name".to_string())
            ]
        );
        let all = passed("SELECT * FROM t WHERE id > 0").await;
        assert!(
            all.is_some_and(|p| p.contains(&("id".to_string(), "id".to_string()))),
            "SELECT * passes the key through"
        );
        for sql in [
            "SELECT id, count(*) AS n FROM t GROUP BY id",
            "SELECT DISTINCT id FROM t",
            "SELECT id FROM t LIMIT 1",
            "SELECT id FROM t ORDER BY id",
            "SELECT a.id FROM t a JOIN t b ON a.id = b.id",
            "SELECT id, random() AS r FROM t",
            "SELECT id, now() AS at FROM t",
            "SELECT id FROM t WHERE id IN (SELECT id FROM t)",
            "SELECT id, row_number() OVER (ORDER BY id) AS n FROM t",
            "SELECT id FROM t UNION ALL SELECT id FROM t",
        ] {
            assert!(passed(sql).await.is_none(), "{sql}");
        }
    }

    #[test]
    fn status_says_which_way_a_transform_runs() {
        assert_eq!(
            mode_of(&[0; 72]),
            "transform: incremental, new input changes only"
        );
        assert_eq!(
            mode_of(&[0; 32]),
            "transform: full refresh, changed rows land"
        );
    }
}
