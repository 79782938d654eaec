//! The HTTP layer: the router, the request guard (concurrency limit and timeout),
//! and one module per endpoint. Handlers stay thin: they parse, call into
//! `ingest` or `store`, and render; every error goes through `error::ApiError`.

mod error;
mod events;
mod publish;
mod status;

use std::sync::Arc;
use std::time::Duration;

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
}

pub type SharedState = Arc<AppState>;

#[derive(Clone)]
struct Guard {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

pub fn router(state: SharedState, request_timeout: Duration, max_concurrent: usize) -> Router {
    let guard = Guard { permits: Arc::new(Semaphore::new(max_concurrent)), timeout: request_timeout };
    Router::new()
        .route("/publish", post(publish::publish))
        .route("/events", get(events::list))
        .route("/stats", get(status::stats))
        .route("/health", get(status::health))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(guard, guard_request))
        .with_state(state)
}

/// Refuse past the concurrency limit (429), and bound every request's time (503).
/// Not `POST /publish`: it bounds its own phases up to the queue, then waits for
/// the outcome, because a 503 must mean "nothing stored" and a queued request may
/// still commit.
async fn guard_request(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let Ok(_permit) = guard.permits.try_acquire() else {
        return ApiError::TooManyRequests.into_response();
    };
    if request.method() == axum::http::Method::POST && request.uri().path() == "/publish" {
        return next.run(request).await;
    }
    match tokio::time::timeout(guard.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}
