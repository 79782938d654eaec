//! `GET /stats`, `GET /health`, `GET /metrics` and the `GET /` status page: counters from `stats`, queue and dedup gauges,
//! and the stored topics (read from disk, so they survive restarts).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, SharedState};

/// Counters (persistent across restarts), topics, and writer/dedup figures.
#[utoipa::path(get, path = "/stats", responses(
    (status = 200, body = super::openapi::StatsBody),
    (status = 429, body = super::openapi::ErrorBody),
    (status = 503, body = super::openapi::ErrorBody),
))]
pub async fn stats(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let topics = tokio::task::spawn_blocking(move || store.topics())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let s = &state.stats;
    let (received, unique, duplicates) = s.counts();
    let uptime = s.uptime_seconds();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let batches = load(&s.writer_batches);
    let avg_commit_ms =
        if batches == 0 { 0.0 } else { load(&s.writer_commit_us_total) as f64 / batches as f64 / 1e3 };
    Ok(Json(json!({
        "received": received,
        "unique_processed": unique,
        "duplicate_dropped": duplicates,
        "topics": topics,
        "uptime_seconds": uptime,
        "uptime": uptime,
        "consumer_running": writer_running(&state),
        "queue_size": state.queue.len(),
        "queue_events_in_flight": state.queue.in_flight(),
        "rejected_queue_full": load(&s.rejected_queue_full),
        "ack_mode": state.default_ack,
        "writer": {
            "batches": batches,
            "commit_failures": load(&s.writer_commit_failures),
            "last_commit_ms": load(&s.writer_last_commit_us) as f64 / 1e3,
            "avg_commit_ms": avg_commit_ms,
            "last_batch_events": load(&s.writer_last_batch_events),
        },
        "dedup": {
            "recent_keys": state.dedup.recent_len(),
            "duplicates_in_memory": load(&s.duplicates_in_memory),
            "duplicates_on_disk": load(&s.duplicates_on_disk),
            "new_by_filter_negative": load(&s.filter_negatives),
            "filter_false_positives": load(&s.filter_false_positives),
            "filter_capacity": state.dedup.filter_capacity(),
            "filter_items": state.dedup.filter_items(),
            "filter_bytes": state.dedup.filter_bytes(),
        },
    })))
}

/// `GET /`: a self-contained status page (embedded in the binary, no CDN) that
/// polls `/stats` and charts events/s, duplicates/s and queue depth.
#[utoipa::path(get, path = "/", responses((status = 200, description = "Status page", content_type = "text/html", body = String)))]
pub async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, content_type = "application/openmetrics-text", body = String),
    (status = 429, body = super::openapi::ErrorBody),
))]
pub async fn metrics(State(state): State<SharedState>) -> impl axum::response::IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], state.metrics.render())
}

/// Commits failing in a row before `/health` reports the service unavailable
/// (a full or broken disk: publishes are being refused).
const UNHEALTHY_AFTER_FAILED_COMMITS: u64 = 3;

/// Liveness: 503 when the writer is not running or commits keep failing.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, body = super::openapi::HealthBody),
    (status = 503, body = super::openapi::HealthBody),
    (status = 429, body = super::openapi::ErrorBody),
))]
pub async fn health(State(state): State<SharedState>) -> (StatusCode, Json<Value>) {
    let running = writer_running(&state);
    let failing = state.stats.writer_failing_commits.load(std::sync::atomic::Ordering::Relaxed);
    let healthy = running && failing < UNHEALTHY_AFTER_FAILED_COMMITS;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "uptime_seconds": state.stats.uptime_seconds(),
        "consumer_running": running,
        "failing_commits": failing,
        "queue_size": state.queue.len(),
    });
    (status, Json(body))
}

fn writer_running(state: &SharedState) -> bool {
    state.stats.writer_running.load(std::sync::atomic::Ordering::Relaxed)
}
