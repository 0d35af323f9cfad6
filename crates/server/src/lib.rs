//! sluice server: `serve`'s HTTP API and Prometheus metrics.
//!
//! | route | does |
//! |---|---|
//! | `GET /health` | 200 while serving (never asks for the token: load balancers probe it) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /api/tables` | what `sluice status --json` shows |
//! | `POST /api/tables/{source}.{table}/sync` | a pass of that table now (202) |
//! | `POST /api/tables/{source}.{table}/schema/accept` | `sluice schema accept` |
//! | `GET /` | the web console ([`console`]): overview, table pages, runs, SQL workbench |
//! | `GET /api/overview` | every table's state, counts, lag and last run, problems first |
//! | `GET /api/tables/{source}.{table}` | one table: status, schema versions, pending diff, runs, lag, quarantine |
//! | `GET /api/runs?limit=N&source=S&table=T&outcome=O` | the run history, newest first |
//! | `POST /api/tables/{source}.{table}/checks/accept` | `sluice checks accept` |
//! | `POST /api/query` `{"sql": "...", "format": "json\|table\|csv", "max_rows": N}` | SQL over the lake (warehouse tables by `WAREHOUSE.SCHEMA.TABLE`), read-only |
//! | `POST /events/{source}[/{table}]` | events in (NDJSON or a JSON array): 200 once in the lake ([`events`]) |
//!
//! With `[serve] token` set every route but `/health` asks for `Authorization: Bearer
//! TOKEN`; config validation refuses a listen address off loopback without one. An events
//! source asks for its own token instead (`sources.NAME.token`).

mod console;
mod events;
mod overview;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use sluice_engine::query::OutputFormat;
use sluice_engine::serve::{Serving, TriggerRefused};
use sluice_engine::EngineError;

#[derive(Clone)]
struct App {
    serving: Arc<Serving>,
    token: Option<Arc<String>>,
    collectors: Arc<std::collections::HashMap<String, events::Collector>>,
    board: Arc<overview::Board>,
}

/// Binds `listen` and serves the API until `stop` turns true. Returns once bound, with the
/// address (port 0 picks a free one) and the task serving.
pub async fn start(
    serving: Arc<Serving>,
    listen: &str,
    token: Option<String>,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let app = App {
        collectors: Arc::new(events::collectors(&serving.project)?),
        serving,
        token: token.map(Arc::new),
        board: Arc::default(),
    };
    let sampler = {
        let (board, serving, stop) = (app.board.clone(), app.serving.clone(), stop.clone());
        async move { board.sample_lag(&serving, stop).await }
    };
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/overview", get(overview_now))
        .route("/api/tables", get(tables))
        .route("/api/tables/{name}", get(table_now))
        .route("/api/runs", get(runs))
        .route("/api/tables/{name}/sync", post(sync_now))
        .route("/api/tables/{name}/schema/accept", post(accept))
        .route("/api/tables/{name}/checks/accept", post(accept_checks))
        .route("/api/query", post(query))
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .route("/health", get(health))
        .route("/", get(console::page))
        .route("/console/{file}", get(console::asset))
        .route("/events/{source}", post(events::post_to_source))
        .route("/events/{source}/{table}", post(events::post_to_table))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("serve.listen {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("serve.listen {listen}: {e}"))?;
    tokio::spawn(sampler);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    Ok((addr, task))
}

/// An error as JSON with its status.
fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn engine_failure(e: EngineError) -> Response {
    let status = match e {
        EngineError::Usage(_) | EngineError::Query(_) | EngineError::Config(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    failure(status, e)
}

async fn require_token(
    State(app): State<App>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &app.token {
        if !bearer_is(&headers, token) {
            return failure(
                StatusCode::UNAUTHORIZED,
                "this API asks for Authorization: Bearer <[serve] token>",
            );
        }
    }
    next.run(request).await
}

/// Whether the request carries `Authorization: Bearer TOKEN`.
fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    same(given.as_bytes(), token.as_bytes())
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(app): State<App>) -> Response {
    let s = &app.serving;
    let sources: Vec<_> = s
        .schedules()
        .into_iter()
        .map(|(source, schedule)| {
            json!({ "source": source, "schedule": schedule, "owned": s.owns(&source) })
        })
        .collect();
    let alerts: Vec<_> = s
        .alerts
        .active()
        .into_iter()
        .map(|(condition, source, table)| json!({ "condition": condition, "source": source, "table": table }))
        .collect();
    Json(json!({
        "status": "ok",
        "owner": s.owner,
        "started_at": s.started_at,
        "sources": sources,
        "alerts": alerts,
    }))
    .into_response()
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        sluice_engine::metrics::render(),
    )
        .into_response()
}

async fn tables(State(app): State<App>) -> Response {
    match sluice_engine::status::status(&app.serving.project).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => engine_failure(e),
    }
}

async fn overview_now(State(app): State<App>) -> Response {
    match app.board.overview(&app.serving).await {
        Ok(v) => Json(v.as_ref()).into_response(),
        Err(e) => engine_failure(e),
    }
}

async fn table_now(State(app): State<App>, Path(name): Path<String>) -> Response {
    if split(&name).is_none() {
        return not_a_table(&name);
    }
    match overview::table(&app.board, &app.serving, &name).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => engine_failure(e),
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
    source: Option<String>,
    table: Option<String>,
    outcome: Option<String>,
}

async fn runs(State(app): State<App>, Query(q): Query<RunsQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(10_000);
    let filter = sluice_engine::state::RunFilter {
        source: q.source.as_deref().filter(|s| !s.is_empty()),
        table: q.table.as_deref().filter(|s| !s.is_empty()),
        outcome: q.outcome.as_deref().filter(|s| !s.is_empty()),
        latest_per_table: false,
    };
    match app.serving.state.runs(limit, &filter).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => engine_failure(e),
    }
}

/// `source.table` from the path (None: it names no table).
fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once('.')
}

fn not_a_table(name: &str) -> Response {
    failure(
        StatusCode::BAD_REQUEST,
        format!("`{name}`: name a table as SOURCE.TABLE"),
    )
}

async fn sync_now(State(app): State<App>, Path(name): Path<String>) -> Response {
    let Some((source, table)) = split(&name) else {
        return not_a_table(&name);
    };
    match app.serving.trigger(source, Some(table)) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "queued": format!("{source}.{table}") })),
        )
            .into_response(),
        Err(TriggerRefused::NoSuchSource(s)) => {
            failure(StatusCode::NOT_FOUND, format!("no source named `{s}`"))
        }
        Err(TriggerRefused::Continuous) => failure(
            StatusCode::CONFLICT,
            format!("`{source}` streams continuously: it is always syncing"),
        ),
        Err(TriggerRefused::NotOwned) => failure(
            StatusCode::CONFLICT,
            format!("`{source}` is run by another serve process (it holds the lease)"),
        ),
        Err(TriggerRefused::Busy) => failure(
            StatusCode::TOO_MANY_REQUESTS,
            format!("passes of `{source}` are queued already"),
        ),
    }
}

async fn accept(State(app): State<App>, Path(name): Path<String>) -> Response {
    if split(&name).is_none() {
        return not_a_table(&name);
    }
    let started = chrono::Utc::now();
    let accepted = sluice_engine::schema_cmd::accept(&app.serving.project, &name).await;
    record_accept(&app, &name, started, accepted.as_deref()).await;
    app.board.invalidate();
    match accepted {
        Ok(loads) => Json(json!({ "accepted": name, "loads": loads })).into_response(),
        Err(e) => engine_failure(e),
    }
}

async fn accept_checks(State(app): State<App>, Path(name): Path<String>) -> Response {
    if split(&name).is_none() {
        return not_a_table(&name);
    }
    let started = chrono::Utc::now();
    let accepted = sluice_engine::quality::accept(&app.serving.project, &name).await;
    record_accept(
        &app,
        &name,
        started,
        accepted.as_ref().map(|(_, loads)| loads.as_slice()),
    )
    .await;
    app.board.invalidate();
    match accepted {
        Ok((through, loads)) => {
            Json(json!({ "accepted": name, "through_seq": through, "loads": loads }))
                .into_response()
        }
        Err(e) => engine_failure(e),
    }
}

/// An Accept's load in the run history (trigger `accept`), as a pass's loads are.
async fn record_accept(
    app: &App,
    name: &str,
    started_at: chrono::DateTime<chrono::Utc>,
    loads: Result<&[sluice_engine::load::LoadResult], &EngineError>,
) {
    let Some((source, table)) = split(name) else {
        return;
    };
    let halted = loads
        .ok()
        .and_then(|l| l.iter().find_map(|l| l.halted.clone()));
    let run = sluice_engine::state::RunRecord {
        id: None,
        source: source.to_string(),
        table: table.to_string(),
        trigger: "accept".into(),
        started_at,
        ended_at: chrono::Utc::now(),
        outcome: match (&loads, &halted) {
            (Err(_), _) => "failed",
            (Ok(_), Some(_)) => "halted",
            (Ok(_), None) => "ok",
        }
        .into(),
        rows_extracted: 0,
        rows_landed: 0,
        bytes_landed: 0,
        rows_quarantined: 0,
        changes_loaded: loads.map_or(0, |l| l.iter().map(|l| l.changes).sum()),
        lake_version: loads
            .ok()
            .and_then(|l| l.iter().map(|l| l.lake_version).max()),
        error: match loads {
            Err(e) => Some(e.to_string()),
            Ok(_) => halted,
        },
    };
    if let Err(e) = app.serving.state.record(&[run]).await {
        tracing::warn!(table = name, error = %e, "the accept was not recorded in the run history");
    }
}

/// How `/api/query` answers.
#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum QueryFormat {
    /// The rows as a JSON array of objects.
    #[default]
    Json,
    /// `{columns: [{name, type}], rows, row_count, truncated}`: the console's result grid.
    Table,
    /// CSV with a header, as a download.
    Csv,
}

#[derive(Deserialize)]
struct QueryBody {
    sql: String,
    #[serde(default)]
    format: QueryFormat,
    /// `table` only: rows sent at most (the whole result is counted).
    max_rows: Option<usize>,
}

async fn query(State(app): State<App>, Json(body): Json<QueryBody>) -> Response {
    let batches =
        match sluice_engine::query::query_lake(&app.serving.project, &body.sql, None).await {
            Ok(b) => b,
            Err(e) => return engine_failure(e),
        };
    match body.format {
        QueryFormat::Json => match sluice_engine::query::render(&batches, OutputFormat::Json) {
            Ok(rows) => ([(header::CONTENT_TYPE, "application/json")], rows).into_response(),
            Err(e) => engine_failure(e),
        },
        QueryFormat::Csv => match sluice_engine::query::render(&batches, OutputFormat::Csv) {
            Ok(csv) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"query.csv\"",
                    ),
                ],
                csv,
            )
                .into_response(),
            Err(e) => engine_failure(e),
        },
        QueryFormat::Table => match result_grid(&batches, body.max_rows.unwrap_or(10_000)) {
            Ok(v) => Json(v).into_response(),
            Err(e) => engine_failure(e),
        },
    }
}

/// A result as the console's grid: its columns with their types, and its first `max_rows`
/// rows.
fn result_grid(
    batches: &[arrow::record_batch::RecordBatch],
    max_rows: usize,
) -> Result<serde_json::Value, EngineError> {
    let row_count: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut kept = Vec::new();
    let mut left = max_rows;
    for b in batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        kept.push(b.slice(0, n));
        left -= n;
    }
    let columns: Vec<_> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
                .collect()
        })
        .unwrap_or_default();
    let rows: serde_json::Value =
        serde_json::from_str(&sluice_engine::query::render(&kept, OutputFormat::Json)?)
            .map_err(|e| EngineError::Internal(format!("result rows: {e}")))?;
    Ok(json!({
        "columns": columns,
        "rows": rows,
        "row_count": row_count,
        "truncated": row_count > max_rows,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn the_grid_counts_every_row_and_sends_at_most_max_rows_across_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = |from: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![from, from + 1, from + 2])),
                    Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                ],
            )
            .unwrap()
        };
        let batches = [batch(0), batch(3)];
        let grid = super::result_grid(&batches, 4).unwrap();
        assert_eq!(grid["row_count"], 6);
        assert_eq!(grid["truncated"], true);
        let n: Vec<i64> = grid["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .collect();
        assert_eq!(n, vec![0, 1, 2, 3]);
        assert_eq!(grid["columns"][1]["name"], "s");
        assert_eq!(grid["columns"][1]["type"], "Utf8");
        let whole = super::result_grid(&batches, 6).unwrap();
        assert_eq!(whole["truncated"], false);
        assert_eq!(whole["rows"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"ab", b"abc"));
        assert!(!super::same(b"", b"a"));
    }
}
