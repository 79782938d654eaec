//! The HTTP layer: the router, the request guard (concurrency limit, timeout,
//! request id, instrumentation), and one module per endpoint, each holding its
//! wire types beside its handler. Handlers stay thin: they parse, call into
//! `ingest` or `store`, and render; every error goes through `error::ApiError`.
//! Children import their siblings (`state`, `error`), never this file.

mod auth;
mod error;
mod events;
mod openapi;
mod publish;
mod serve;
mod state;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use error::{ErrorBody, ErrorItem, RETRY_AFTER_SECS};
pub use events::{EventOut, EventsPage};
pub use publish::{Accepted, EventIn, EventsWrapper, PublishBody, PublishResponse};
pub use serve::{ConnectionLimits, serve};
pub use state::{AppState, SharedState};
pub use status::{Health, HealthBody, StatsBody};

use crate::metrics::Metrics;
use crate::stats::Stats;
use auth::BearerToken;
use error::{ApiError, ErrorCode};

#[derive(Clone)]
struct Guard {
    /// `None`: authentication is off.
    token: Option<Arc<BearerToken>>,
    permits: Arc<Semaphore>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    stats: Arc<Stats>,
}

pub fn router(
    state: SharedState,
    request_timeout: Duration,
    max_concurrent: usize,
    token: Option<&str>,
) -> Router {
    let guard = Guard {
        token: token.map(|t| Arc::new(BearerToken::new(t))),
        permits: Arc::new(Semaphore::new(max_concurrent)),
        timeout: request_timeout,
        metrics: state.metrics.clone(),
        stats: state.stats.clone(),
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

/// Refuse what lacks the bearer token where one is configured (401), refuse past
/// the concurrency limit (429; the permit is held until the response
/// is ready; `/health` is never refused), and bound every request's time (503). Not `POST /publish`: it
/// bounds its own phases up to the queue, then waits for the outcome, because a
/// 503 must mean "nothing stored" and a queued request may still commit.
/// Every request runs in a span carrying its id (the client's `x-request-id` if it
/// is short and printable, else a counter), echoed in the response.
async fn guard_request(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = route_label(request.uri().path());
    let id = request_id(&request);
    let span = tracing::info_span!("request", id = %id.to_str().unwrap_or_default(), route);
    let mut response = async {
        if auth::protects(route) && guard.token.as_ref().is_some_and(|t| !t.admits(request.headers())) {
            return ApiError::Unauthorized.into_response();
        }
        // Liveness probes are never refused: under load they must still answer.
        let _permit = match guard.permits.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) if route == "/health" => None,
            Err(_) => return ApiError::TooManyRequests.into_response(),
        };
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
    guard.metrics.request_finished(route, response.status().as_u16(), started.elapsed().as_secs_f64());
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        guard.stats.rejected(code);
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
