//! `GET /events?topic=&limit=&after=`: one page of stored events in arrival order,
//! read in a redb read transaction on a blocking thread (MVCC: never blocks the
//! writer). The JSON is written by hand so each payload goes out byte-for-byte.

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, SharedState};
use crate::event::Seq;
use crate::store::{Page, StoreError, codec};

pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;
/// Seqs stay far below this; the bound keeps `after` a signed 64-bit integer for clients.
pub const MAX_AFTER: u64 = i64::MAX as u64;

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
        (status = 200, body = super::openapi::EventsPage),
        (status = 422, description = "Bad query parameter", body = super::openapi::ErrorBody),
        (status = 429, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
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
    let after = Seq(after);
    let store = state.store.clone();
    let body = tokio::task::spawn_blocking(move || {
        let page = store.read_page(query.topic.as_deref(), after, limit)?;
        render(query.topic.as_deref(), &page)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn render(topic: Option<&str>, page: &Page) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(64 + page.rows.iter().map(|r| r.1.len() + 96).sum::<usize>());
    out.extend_from_slice(b"{\"topic\":");
    json_str(&mut out, topic);
    out.extend_from_slice(format!(",\"count\":{},\"events\":[", page.rows.len()).as_bytes());
    for (i, (seq, bytes)) in page.rows.iter().enumerate() {
        let r = codec::decode(bytes)?;
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"topic\":");
        json_str(&mut out, Some(r.topic));
        out.extend_from_slice(b",\"event_id\":");
        json_str(&mut out, Some(r.event_id));
        out.extend_from_slice(b",\"timestamp\":");
        json_str(&mut out, Some(r.timestamp));
        out.extend_from_slice(b",\"source\":");
        json_str(&mut out, Some(r.source));
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(r.payload.as_bytes());
        out.extend_from_slice(b",\"received_at\":");
        json_str(&mut out, Some(&format_micros(r.received_at_us)));
        out.extend_from_slice(format!(",\"seq\":{}}}", seq.0).as_bytes());
    }
    out.extend_from_slice(b"],\"next_after\":");
    match page.next_after {
        Some(seq) => out.extend_from_slice(seq.0.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(out)
}

fn json_str(out: &mut Vec<u8>, s: Option<&str>) {
    serde_json::to_writer(out, &s).expect("serializing a string into a Vec cannot fail");
}

fn format_micros(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
