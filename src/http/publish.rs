//! `POST /publish`: read the body within its limit, decode and validate it whole,
//! then hand the events to `ingest` and report what was stored.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use super::{ApiError, SharedState};
use crate::decode::{self, BodyFormat, DecodeError, Encoding, Limits};
use crate::event::Event;
use crate::queue::AckMode;

/// Bodies larger than this are decoded on a blocking thread, off the executor.
const INLINE_DECODE_BYTES: usize = 256 * 1024;

#[derive(Deserialize)]
struct PublishQuery {
    ack: Option<AckMode>,
}

/// What a 200 reports.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PublishResponse {
    status: &'static str,
    received: usize,
    accepted: usize,
    stored: usize,
    duplicates: usize,
    duplicate_indices: Vec<usize>,
}

/// Publish one event, an array, `{"events": [...]}`, or NDJSON (gzip/zstd allowed).
#[utoipa::path(
    post,
    path = "/publish",
    params(("ack" = Option<AckMode>, Query, description = "`durable` (default: after fsync) or `buffered` (once queued)")),
    request_body(content(
        (super::openapi::PublishBody = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "Decided; durable: on disk", body = PublishResponse),
        (status = 400, description = "Not JSON / a bad NDJSON line", body = super::openapi::ErrorBody),
        (status = 413, description = "Body, batch or payload over its limit", body = super::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = super::openapi::ErrorBody),
        (status = 422, description = "A rule broken; every bad index and field listed; nothing stored", body = super::openapi::ErrorBody),
        (status = 429, description = "Too many concurrent requests; Retry-After", body = super::openapi::ErrorBody),
        (status = 503, description = "Cannot keep the promise now; nothing stored; Retry-After", body = super::openapi::ErrorBody),
    )
)]
pub async fn publish(
    State(state): State<SharedState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let query: PublishQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::Query(format!("ack: {e} (expected durable or buffered)")))?;
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let format = BodyFormat::from_content_type(header(header::CONTENT_TYPE))?;
    let encoding = Encoding::from_header(header(header::CONTENT_ENCODING))?;
    let limits = state.limits;
    // Bounded like any request until queued; `ingest` bounds the enqueue wait.
    let bytes = tokio::time::timeout(state.request_timeout, read_body(body, limits.max_body_bytes))
        .await
        .map_err(|_| ApiError::Timeout)??;
    let events = if bytes.len() <= INLINE_DECODE_BYTES {
        decode_body(format, encoding, &bytes, &limits)?
    } else {
        tokio::task::spawn_blocking(move || decode_body(format, encoding, &bytes, &limits))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
    };
    let ack = query.ack.unwrap_or(state.default_ack);
    let outcome = state.ingest.publish(events, ack).await?;
    Ok(Json(PublishResponse {
        status: "accepted",
        received: outcome.received,
        accepted: outcome.received,
        stored: outcome.stored,
        duplicates: outcome.duplicate_indices.len(),
        duplicate_indices: outcome.duplicate_indices,
    }))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(DecodeError::BodyTooLarge { limit }.into())
        }
        Err(e) => Err(DecodeError::Malformed(format!("could not read the body: {e}")).into()),
    }
}

fn decode_body(
    format: BodyFormat,
    encoding: Encoding,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Vec<Event>, DecodeError> {
    let plain = decode::decompress(encoding, bytes, limits.max_body_bytes)?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    decode::decode(format, &plain, limits, &now)
}
