//! The reference point for the performance figures: a bare axum handler that only
//! parses the publish body into typed events (object, array or NDJSON) and answers
//! with a count. No dedup, no storage. `scripts/bench.sh` runs it beside the
//! aggregator so every figure is a ratio measured in one run.
//!
//! Run: `cargo run --release --example bare_handler -- 127.0.0.1:8100`

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Owned, typed events, as the seed design's models are.
#[allow(dead_code)]
#[derive(Deserialize)]
struct Event {
    topic: String,
    event_id: String,
    timestamp: Option<String>,
    source: Option<String>,
    payload: Option<Box<RawValue>>,
}

async fn publish(headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let ndjson =
        headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    let parsed: Result<usize, serde_json::Error> = if ndjson {
        body.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<Event>(l).map(|_| 1))
            .sum()
    } else if body.first() == Some(&b'[') {
        serde_json::from_slice::<Vec<Event>>(&body).map(|v| v.len())
    } else {
        serde_json::from_slice::<Event>(&body).map(|_| 1)
    };
    match parsed {
        Ok(n) => (
            StatusCode::OK,
            format!(
                r#"{{"status":"accepted","received":{n},"accepted":{n},"stored":{n},"duplicates":0,"duplicate_indices":[]}}"#
            ),
        ),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, format!(r#"{{"detail":"{e}"}}"#)),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8100".into());
    let app = Router::new()
        .route("/publish", post(publish))
        .route("/health", get(|| async { r#"{"status":"ok"}"# }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare handler listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
