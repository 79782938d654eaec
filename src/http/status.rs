//! `GET /stats`, `GET /health`, `GET /metrics` and the `GET /` status page.
//!
//! [`StatsBody`] is the one description of the service's figures: `/stats`
//! returns it, and `/metrics` is the same body flattened (`metrics::flatten`), so
//! every counter and gauge has one name, its path here. The stored topics are
//! read from disk, so they survive restarts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::state::{AppState, SharedState};
use crate::ack::AckMode;
use crate::stats::{Counter, DedupStats, Gauge, WriterStats};

/// Counters (persistent across restarts), topics, and writer/dedup figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsBody {
    /// Valid events of acknowledged requests: `unique_processed + duplicate_dropped`.
    #[schema(value_type = u64)]
    pub received: Counter,
    /// Unique events stored (persistent).
    #[schema(value_type = u64)]
    pub unique_processed: Counter,
    /// Duplicate events dropped (persistent).
    #[schema(value_type = u64)]
    pub duplicate_dropped: Counter,
    /// Topics with stored events, sorted.
    pub topics: Vec<String>,
    pub uptime_seconds: f64,
    /// Same as `uptime_seconds` (seed clients read `uptime`).
    pub uptime: f64,
    /// Whether the writer thread runs.
    #[schema(value_type = bool)]
    pub consumer_running: Gauge<bool>,
    /// Requests in the ring buffer.
    #[schema(value_type = u64)]
    pub queue_size: Gauge,
    /// Events queued or being written (the queue's budget in use).
    #[schema(value_type = u64)]
    pub queue_events_in_flight: Gauge,
    /// Publishes refused with 503 because the queue was full, since start.
    #[schema(value_type = u64)]
    pub rejected_queue_full: Counter,
    /// Refused requests since start, by the `error` code of their body.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub requests_rejected: BTreeMap<String, Counter>,
    /// The server's default ack mode.
    pub ack_mode: AckMode,
    pub writer: WriterStats,
    pub dedup: DedupStats,
}

/// Liveness of the write path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    pub status: Health,
    pub uptime_seconds: f64,
    pub consumer_running: bool,
    /// Commits failed since the last success.
    pub failing_commits: u64,
    /// What the disk answered to the last failed commit or reopen, until a commit
    /// succeeds (e.g. "No space left on device (os error 28)").
    pub storage_error: Option<String>,
    pub queue_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Unavailable,
}

/// Counters (persistent across restarts), topics, and writer/dedup figures.
#[utoipa::path(get, path = "/stats", responses(
    (status = 200, body = StatsBody),
    (status = 401, description = "A bearer token is configured and the request lacks it", body = ErrorBody),
    (status = 429, body = ErrorBody),
    (status = 503, body = ErrorBody),
))]
pub async fn stats(State(state): State<SharedState>) -> Result<Json<StatsBody>, ApiError> {
    let store = state.store.clone();
    let topics = tokio::task::spawn_blocking(move || store.topics())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(stats_body(&state, topics)))
}

/// The body of `/stats`; `/metrics` renders it without the topics.
fn stats_body(state: &AppState, topics: Vec<String>) -> StatsBody {
    let s = &state.stats;
    let (received, unique, duplicates) = s.counts();
    let uptime = s.uptime_seconds();
    StatsBody {
        received: Counter(received),
        unique_processed: Counter(unique),
        duplicate_dropped: Counter(duplicates),
        topics,
        uptime_seconds: uptime,
        uptime,
        consumer_running: Gauge(s.writer_running()),
        queue_size: Gauge(state.queue.len() as u64),
        queue_events_in_flight: Gauge(state.queue.in_flight() as u64),
        rejected_queue_full: Counter(s.rejected_queue_full()),
        requests_rejected: s.rejected_by_code(),
        ack_mode: state.default_ack,
        writer: s.writer(&state.store),
        dedup: s.dedup(&state.dedup),
    }
}

/// `GET /`: a self-contained status page (embedded in the binary, no CDN) that
/// polls `/stats` and charts events/s, duplicates/s and queue depth.
#[utoipa::path(get, path = "/", responses((status = 200, description = "Status page", content_type = "text/html", body = String)))]
pub async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

/// Prometheus metrics (OpenMetrics text): the `/stats` figures, named by their
/// path, plus latency and batch-size histograms.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, content_type = "application/openmetrics-text", body = String),
    (status = 401, description = "A bearer token is configured and the request lacks it", body = ErrorBody),
    (status = 429, body = ErrorBody),
))]
pub async fn metrics(State(state): State<SharedState>) -> impl axum::response::IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let body = stats_body(&state, Vec::new());
    ([(axum::http::header::CONTENT_TYPE, content_type)], state.metrics.render(&body))
}

/// Commits failing in a row before `/health` reports the service unavailable
/// (a full or broken disk: publishes are being refused).
const UNHEALTHY_AFTER_FAILED_COMMITS: u64 = 3;

/// Liveness of the write path: 503 when the writer is not running, commits keep
/// failing, or the database is closed after an I/O error. Never limited by
/// `MAX_CONCURRENT_REQUESTS`, so probes answer under load.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, body = HealthBody),
    (status = 503, body = HealthBody),
))]
pub async fn health(State(state): State<SharedState>) -> (StatusCode, Json<HealthBody>) {
    let running = state.stats.writer_running();
    let failing = state.stats.failing_commits();
    let healthy = running && failing < UNHEALTHY_AFTER_FAILED_COMMITS && state.store.is_open();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = HealthBody {
        status: if healthy { Health::Ok } else { Health::Unavailable },
        uptime_seconds: state.stats.uptime_seconds(),
        consumer_running: running,
        failing_commits: failing,
        storage_error: state.stats.storage_error(),
        queue_size: state.queue.len() as u64,
    };
    (status, Json(body))
}
