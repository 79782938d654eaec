//! `GET /events?topic=&limit=&after=`: one page of stored events in arrival order,
//! read in a redb read transaction on a blocking thread (MVCC: never blocks the
//! writer). [`EventsPage`] and [`EventOut`] are the wire types; each payload
//! goes out byte-for-byte as it was sent (`RawValue`).

use std::borrow::Cow;

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::state::SharedState;
use crate::event::Seq;
use crate::store::{Page, StoredEvent};

pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;
/// Seqs stay far below this; the bound keeps `after` a signed 64-bit integer for clients.
pub const MAX_AFTER: u64 = i64::MAX as u64;

/// A stored event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventOut<'a> {
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub topic: Cow<'a, str>,
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub source: Cow<'a, str>,
    /// The payload object exactly as it was sent.
    #[serde(borrow)]
    #[schema(value_type = Object)]
    pub payload: &'a RawValue,
    /// Server receive time, RFC 3339.
    pub received_at: String,
    /// Arrival order, from 1.
    pub seq: u64,
}

/// One page of `GET /events`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsPage<'a> {
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub topic: Option<Cow<'a, str>>,
    pub count: usize,
    #[serde(borrow)]
    pub events: Vec<EventOut<'a>>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<u64>,
}

#[derive(Deserialize)]
struct EventsQuery {
    topic: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
}

/// Stored events in arrival order, a page at a time.
#[utoipa::path(
    get,
    path = "/events",
    params(
        ("topic" = Option<String>, Query, description = "Only this topic (absent: all topics)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 10000, description = "Page size, default 1000"),
        ("after" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_i64, description = "Cursor: `next_after` of the previous page"),
    ),
    responses(
        (status = 200, body = EventsPage),
        (status = 422, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "A bearer token is configured and the request lacks it", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let query: EventsQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::Query(format!("{e} (limit and after are non-negative integers)")))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Query(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let after = query.after.unwrap_or(0);
    if after > MAX_AFTER {
        return Err(ApiError::Query(format!("after must be between 0 and {MAX_AFTER}")));
    }
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let page = store.read_page(query.topic.as_deref(), Seq(after), limit)?;
        render(query.topic.as_deref(), &page)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn render(topic: Option<&str>, page: &Page) -> Result<Vec<u8>, ApiError> {
    let events = page.events.iter().map(EventOut::from_stored).collect::<Result<Vec<_>, _>>()?;
    let body = EventsPage {
        topic: topic.map(Cow::Borrowed),
        count: events.len(),
        events,
        next_after: page.next_after.map(|seq| seq.0),
    };
    serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))
}

impl<'a> EventOut<'a> {
    /// Borrows every field; the payload is only checked to be one JSON value.
    fn from_stored(event: &'a StoredEvent) -> Result<Self, ApiError> {
        let payload = serde_json::from_str(&event.payload)
            .map_err(|e| ApiError::Internal(format!("stored payload of seq {}: {e}", event.seq.0)))?;
        Ok(EventOut {
            topic: Cow::Borrowed(&event.topic),
            event_id: Cow::Borrowed(&event.event_id),
            timestamp: Cow::Borrowed(&event.timestamp),
            source: Cow::Borrowed(&event.source),
            payload,
            received_at: format_micros(event.received_at_us),
            seq: event.seq.0,
        })
    }
}

fn format_micros(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
