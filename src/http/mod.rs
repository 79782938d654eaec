//! The HTTP layer: the router, the request guard (concurrency limit and timeout),
//! and one module per endpoint. Handlers stay thin: they parse, call into
//! `ingest` or `store`, and render; every error goes through `error::ApiError`.

mod error;
mod events;
mod openapi;
mod publish;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderValue;
use tracing::Instrument;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;

pub use error::{ApiError, RETRY_AFTER_SECS};

use crate::decode::Limits;
use crate::dedup::Deduper;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::queue::{AckMode, IngestQueue};
use crate::stats::Stats;
use crate::store::Store;

/// What every handler shares. Built once by `app`.
pub struct AppState {
    pub ingest: Ingest,
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    pub dedup: Arc<Deduper>,
    pub queue: Arc<IngestQueue>,
    pub limits: Limits,
    pub default_ack: AckMode,
    /// Bounds every request, except a publish once it is queued (see `guard_request`).
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

pub type SharedState = Arc<AppState>;

#[derive(Clone)]
struct Guard {
    permits: Arc<Semaphore>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

pub fn router(state: SharedState, request_timeout: Duration, max_concurrent: usize) -> Router {
    let guard = Guard {
        permits: Arc::new(Semaphore::new(max_concurrent)),
        timeout: request_timeout,
        metrics: state.metrics.clone(),
    };
    Router::new()
        .route("/publish", post(publish::publish))
        .route("/events", get(events::list))
        .route("/stats", get(status::stats))
        .route("/health", get(status::health))
        .route("/metrics", get(status::metrics))
        .route("/", get(status::dashboard))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi::spec()))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(guard, guard_request))
        .with_state(state)
}

/// Refuse past the concurrency limit (429), and bound every request's time (503).
/// Not `POST /publish`: it bounds its own phases up to the queue, then waits for
/// the outcome, because a 503 must mean "nothing stored" and a queued request may
/// still commit.
/// Every request runs in a span carrying its id (the client's `x-request-id` if it
/// is short and printable, else a counter), echoed in the response.
async fn guard_request(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = route_label(request.uri().path());
    let id = request_id(&request);
    let span = tracing::info_span!("request", id = %id.to_str().unwrap_or_default(), route);
    let mut response = async {
        if guard.permits.try_acquire().is_err() {
            return ApiError::TooManyRequests.into_response();
        }
        if request.method() == axum::http::Method::POST && route == "/publish" {
            return next.run(request).await;
        }
        match tokio::time::timeout(guard.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::Timeout.into_response(),
        }
    }
    .instrument(span)
    .await;
    response.headers_mut().insert("x-request-id", id);
    let status = response.status();
    let class = std::borrow::Cow::Owned(format!("{}xx", status.as_u16() / 100));
    let labels = vec![("route", std::borrow::Cow::Borrowed(route)), ("status", class)];
    guard.metrics.request_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    if let Some(reason) = rejection_reason(status) {
        guard.metrics.rejected.get_or_create(&vec![("reason", reason)]).inc();
    }
    response
}

fn request_id(request: &Request) -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let given = request
        .headers()
        .get("x-request-id")
        .filter(|v| v.len() <= 64 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()));
    match given {
        Some(v) => v.clone(),
        None => HeaderValue::from(NEXT.fetch_add(1, Ordering::Relaxed)),
    }
}

/// Known routes by name; anything else is one label, so clients cannot grow the
/// label set.
fn route_label(path: &str) -> &'static str {
    ["/publish", "/events", "/stats", "/health", "/metrics"]
        .into_iter()
        .find(|r| *r == path)
        .unwrap_or("other")
}

fn rejection_reason(status: axum::http::StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        400 => "malformed",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "invalid",
        429 => "too_many_requests",
        503 => "unavailable",
        _ => return None,
    })
}
