//! `POST /events/{source}[/{table}]`: the events collector's endpoint. A 200 means the
//! request's events are committed in the lake (its bad lines in the quarantine), and says how
//! many were accepted, how many were retries of events landed already, and why each bad line
//! was rejected.
//!
//! | answer | when |
//! |---|---|
//! | 200 | committed: `{"accepted": n, "duplicates": n, "rejected": [{"line": n, "reason": "…"}]}` |
//! | 401 | the source has a token and the request does not carry it |
//! | 404 | no events source or table of that name |
//! | 413 | the body (after gzip) is over `max_body_bytes` |
//! | 429 | the buffer is full (`buffer_mb`): `Retry-After` |
//! | 503 | no stream takes events here now, or it stopped before the commit: nothing of the request counts; `Retry-After` |

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::oneshot;

use sluice_core::config::DEFAULT_EVENTS_BODY_BYTES;
use sluice_engine::Project;
use sluice_sources::events::body;
use sluice_sources::events::intake::{Answer, Intake, Posted};

use crate::{bearer_is, failure, App};

/// Longest a client waits for its commit before it is told to send again.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// One events source as the endpoint sees it.
pub(crate) struct Collector {
    intake: Arc<Intake>,
    token: Option<String>,
    tables: Vec<String>,
    max_body: usize,
    flatten: usize,
}

/// The events sources of `project`, their tokens resolved (an unreadable token stops serve
/// from starting, naming the source).
pub(crate) fn collectors(project: &Project) -> Result<HashMap<String, Collector>, String> {
    let mut out = HashMap::new();
    for (name, src) in &project.config.sources {
        let Some(events) = src.as_events() else {
            continue;
        };
        let token = events
            .token
            .as_ref()
            .map(|t| t.resolve())
            .transpose()
            .map_err(|m| format!("sources.{name}.token: {m}"))?;
        out.insert(
            name.clone(),
            Collector {
                intake: sluice_engine::sources::events_intake(project, name, events),
                token,
                tables: events.table_names(),
                max_body: events.max_body_bytes.unwrap_or(DEFAULT_EVENTS_BODY_BYTES),
                flatten: events.flatten(),
            },
        );
    }
    Ok(out)
}

pub(crate) async fn post_to_source(
    State(app): State<App>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    post(app, source, None, headers, body).await
}

pub(crate) async fn post_to_table(
    State(app): State<App>,
    Path((source, table)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    post(app, source, Some(table), headers, body).await
}

fn retry_after(status: StatusCode, secs: u32, message: impl std::fmt::Display) -> Response {
    let mut r = failure(status, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

async fn post(
    app: App,
    source: String,
    table: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(c) = app.collectors.get(&source) else {
        return failure(
            StatusCode::NOT_FOUND,
            format!("no events source named `{source}`"),
        );
    };
    if let Some(token) = &c.token {
        if !bearer_is(&headers, token) {
            return failure(
                StatusCode::UNAUTHORIZED,
                format!(
                    "events of `{source}` ask for Authorization: Bearer <sources.{source}.token>"
                ),
            );
        }
    }
    let table = table.unwrap_or_else(|| c.tables[0].clone());
    if !c.tables.contains(&table) {
        return failure(
            StatusCode::NOT_FOUND,
            format!(
                "`{source}` has no table `{table}` (its tables: {})",
                c.tables.join(", ")
            ),
        );
    }
    let bytes = match read_body(c.max_body, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let permit = match c.intake.reserve(bytes.len()) {
        Ok(p) => p,
        Err(_) => {
            return retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                1,
                format!(
                "the buffer of `{source}` is full (sources.{source}.buffer_mb): send again shortly"
            ),
            )
        }
    };
    let flatten = c.flatten;
    let parsing = bytes.clone();
    let lines = match tokio::task::spawn_blocking(move || body::lines(&parsing, flatten)).await {
        Ok(l) => l,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let (answer, answered) = oneshot::channel();
    let posted = Posted {
        table,
        body: bytes,
        lines,
        received: chrono::Utc::now(),
        answer,
        permit,
    };
    if c.intake.post(posted).is_err() {
        // Given back unqueued: its share of the buffer is free again as it drops.
        return retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            5,
            format!("`{source}` takes no events in this process now (starting, or another serve process holds the source): send again"),
        );
    }
    let not_committed = |why: &str| {
        retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            5,
            format!("not committed ({why}): nothing of this request counts; send it again (events with ids are not doubled)"),
        )
    };
    match tokio::time::timeout(ANSWER_WITHIN, answered).await {
        Ok(Ok(Answer::Committed {
            accepted,
            duplicates,
            rejected,
        })) => Json(json!({
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected
                .into_iter()
                .map(|(line, reason)| json!({ "line": line, "reason": reason }))
                .collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(Ok(Answer::Refused(why))) => not_committed(&why),
        Ok(Err(_)) => not_committed("the capture stopped before the lake commit"),
        Err(_) => not_committed("no lake commit within 60 s"),
    }
}

/// The body, gunzipped when it says so, or the answer refusing it.
async fn read_body(max: usize, headers: &HeaderMap, body: Body) -> Result<Bytes, Box<Response>> {
    let too_large = || {
        Box::new(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {max} bytes (max_body_bytes): send fewer events per request"),
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let raw = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) => {
            let e = e.into_inner();
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(Box::new(failure(
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}"),
            )));
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(raw);
    }
    // Read one byte past the limit: a body that gets there is too large, however small its
    // compressed form.
    let mut out = Vec::with_capacity(raw.len() * 4);
    match flate2::read::GzDecoder::new(raw.as_ref())
        .take(max as u64 + 1)
        .read_to_end(&mut out)
    {
        Ok(n) if n > max => Err(too_large()),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(Box::new(failure(
            StatusCode::BAD_REQUEST,
            format!("Content-Encoding: gzip, but the body is not gzip: {e}"),
        ))),
    }
}
