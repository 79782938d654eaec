//! `POST /publish`: read the body within its limit, decode and validate it whole,
//! then hand the events to `ingest` and report what was stored.
//!
//! The wire types of the endpoint live here: [`EventIn`] and [`PublishBody`]
//! describe what may be sent (the publisher builds its bodies from them; `decode`
//! reads bodies leniently so that a 422 can name every bad field, which typed
//! extraction could not), and [`PublishResponse`] is what a 200 carries.

use std::borrow::Cow;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::state::SharedState;
use crate::ack::AckMode;
use crate::decode::{self, BodyFormat, ContentError, Encoding};
use crate::event::Event;
use crate::ingest::Queued;

/// Bodies larger than this are decoded on a blocking thread, off the executor,
/// and their events copied out of it; smaller ones are decoded in place and
/// their events borrow from the body.
const INLINE_DECODE_BYTES: usize = 256 * 1024;

/// One event. The dedup key is `(topic, event_id)`, exact bytes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventIn<'a> {
    /// 1..=255 bytes (UTF-8), no whitespace or control characters; case-sensitive.
    #[serde(borrow)]
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$",
        example = "sensor.room1.temp"
    )]
    pub topic: Cow<'a, str>,
    /// 1..=255 bytes (UTF-8) after trimming, no control characters; case-sensitive.
    #[serde(borrow)]
    #[schema(
        value_type = String,
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        example = "b7c1"
    )]
    pub event_id: Cow<'a, str>,
    /// ISO 8601 / RFC 3339 date-time, kept as sent; the receive time when absent.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-11-21T10:00:00Z")]
    pub timestamp: Option<Cow<'a, str>>,
    /// At most 255 bytes; `""` when absent.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 255)]
    pub source: Option<Cow<'a, str>>,
    /// Any JSON object (`{}` when absent), stored and returned byte-for-byte.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<&'a RawValue>,
}

/// `{"events": [...]}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsWrapper<'a> {
    #[serde(borrow)]
    pub events: Vec<EventIn<'a>>,
}

/// One event, an array of events, or `{"events": [...]}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PublishBody<'a> {
    #[serde(borrow)]
    One(EventIn<'a>),
    #[serde(borrow)]
    Many(Vec<EventIn<'a>>),
    #[serde(borrow)]
    Wrapped(EventsWrapper<'a>),
}

/// The `status` of a 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accepted {
    Accepted,
}

/// What a 200 reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    pub status: Accepted,
    /// Valid events in the request.
    pub received: usize,
    /// Same as `received` (seed clients read either).
    pub accepted: usize,
    /// New unique events stored.
    pub stored: usize,
    /// Events dropped as already known.
    pub duplicates: usize,
    /// Positions of the duplicates in the request (0-based), ascending.
    pub duplicate_indices: Vec<usize>,
}

#[derive(Deserialize)]
struct PublishQuery {
    ack: Option<AckMode>,
}

/// Publish one event, an array, `{"events": [...]}`, or NDJSON (gzip/zstd allowed).
#[utoipa::path(
    post,
    path = "/publish",
    params(("ack" = Option<AckMode>, Query, description = "`durable` (default: after fsync) or `buffered` (once queued)")),
    request_body(content(
        (PublishBody = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "Decided; durable: on disk", body = PublishResponse),
        (status = 400, description = "Not JSON / a bad NDJSON line", body = ErrorBody),
        (status = 413, description = "Body, batch or payload over its limit", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = ErrorBody),
        (status = 422, description = "A rule broken; every bad index and field listed; nothing stored", body = ErrorBody),
        (status = 401, description = "A bearer token is configured and the request lacks it", body = ErrorBody),
        (status = 429, description = "Too many concurrent requests; Retry-After", body = ErrorBody),
        (status = 503, description = "Cannot keep the promise now; nothing stored; Retry-After", body = ErrorBody),
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
    let ack = query.ack.unwrap_or(state.default_ack);
    // Everything up to the queue is bounded by the request timeout (a 503 then
    // means nothing was claimed or stored); the wait for the ack after is not.
    let until_queued = read_decode_and_queue(&state, format, encoding, body, ack);
    let queued =
        tokio::time::timeout(state.request_timeout, until_queued).await.map_err(|_| ApiError::Timeout)??;
    let outcome = queued.outcome().await?;
    Ok(Json(PublishResponse {
        status: Accepted::Accepted,
        received: outcome.received,
        accepted: outcome.received,
        stored: outcome.stored,
        duplicates: outcome.duplicate_indices.len(),
        duplicate_indices: outcome.duplicate_indices,
    }))
}

async fn read_decode_and_queue(
    state: &SharedState,
    format: BodyFormat,
    encoding: Encoding,
    body: Body,
    ack: AckMode,
) -> Result<Queued, ApiError> {
    let limits = state.limits;
    let bytes = read_body(body, limits.max_body_bytes).await?;
    if bytes.len() > INLINE_DECODE_BYTES {
        let events = tokio::task::spawn_blocking(move || {
            let (plain, now) = (decode::decompress(encoding, &bytes, limits.max_body_bytes)?, now());
            let events = decode::decode(format, &plain, &limits, &now)?;
            Ok::<_, ApiError>(events.into_iter().map(Event::into_owned).collect::<Vec<_>>())
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        return Ok(state.ingest.queue(events, ack).await?);
    }
    // The events borrow from `plain` (and `now`) until they are queued.
    let (plain, now) = (decode::decompress(encoding, &bytes, limits.max_body_bytes)?, now());
    let events = decode::decode(format, &plain, &limits, &now)?;
    Ok(state.ingest.queue(events, ack).await?)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ContentError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ContentError::BodyTooLarge { limit }),
        Err(e) => Err(ContentError::Unreadable(e.to_string())),
    }
}

/// The timestamp of events sent without one: the receive time.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Limits;

    /// The documented request types and the lenient decoder agree: whatever the
    /// types serialize is accepted, payload bytes included.
    #[test]
    fn what_the_request_types_serialize_decodes() {
        let payload: &RawValue = serde_json::from_str(r#"{ "t": 31.40 }"#).unwrap();
        let event = |id: &'static str| EventIn {
            topic: "a.b".into(),
            event_id: id.into(),
            timestamp: Some("2026-11-21T10:00:00Z".into()),
            source: None,
            payload: Some(payload),
        };
        let limits = Limits { max_body_bytes: 1 << 20, max_batch_events: 10, max_payload_bytes: 1024 };
        for (body, n) in [
            (PublishBody::One(event("1")), 1),
            (PublishBody::Many(vec![event("1"), event("2")]), 2),
            (PublishBody::Wrapped(EventsWrapper { events: vec![event("3")] }), 1),
        ] {
            let bytes = serde_json::to_vec(&body).unwrap();
            let events = decode::decode(BodyFormat::Json, &bytes, &limits, "now").unwrap();
            assert_eq!(events.len(), n);
            assert_eq!((&*events[0].payload, &*events[0].source), (payload.get(), ""));
        }
    }
}
