//! Knobs do what `--help` says, each shown by its effect through HTTP:
//! `RECENT_KEYS_CAPACITY` (with an event id too long for the window),
//! `ENQUEUE_TIMEOUT_MS` above 0, `ACK_MODE` as the
//! server's default, and `REQUEST_TIMEOUT_MS` over everything before the queue. (`WRITER_BATCH_MAX_EVENTS` and `QUEUE_CAPACITY_EVENTS` are
//! shown in the writer's and the queue's unit tests.)

use std::time::Duration;

use event_aggregator::{AckMode, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, counts, data_dir, event, eventually, json_response, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_keys_capacity_bounds_the_map_and_evicted_keys_are_still_duplicates() {
    let dir = data_dir();
    let app = TestApp::spawn_with(Config { recent_keys_capacity: 10, ..test_config(dir.path()) }).await;
    for batch in 0..10 {
        let events: Vec<Value> = (0..10).map(|i| event("r", &format!("{batch}-{i}"))).collect();
        assert_eq!(app.publish(&Value::Array(events)).await.0, StatusCode::OK);
    }
    let bounded = async || app.recent_keys().await <= 10;
    assert!(eventually(Duration::from_secs(5), bounded).await, "at most the capacity once settled");
    let first: Vec<Value> = (0..10).map(|i| event("r", &format!("0-{i}"))).collect();
    let (status, body) = app.publish(&Value::Array(first)).await;
    assert_eq!((status, body["duplicates"].as_u64()), (StatusCode::OK, Some(10)), "{body}");
    let stats = app.stats().await;
    assert_eq!(stats["dedup"]["duplicates_on_disk"], 10, "evicted keys are found on disk: {stats}");
    app.shutdown().await;
}

/// An event id of 255 bytes padded with spaces is valid (the limit is on the
/// trimmed id), is stored once, and is still a duplicate after the window
/// evicted everything around it (its bytes are too long for the window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_padded_event_id_past_255_bytes_is_stored_once_through_evictions() {
    let dir = data_dir();
    let app = TestApp::spawn_with(Config { recent_keys_capacity: 10, ..test_config(dir.path()) }).await;
    let padded = format!("  {}  ", "p".repeat(255));
    assert_eq!(app.publish(&event("pad", &padded)).await.0, StatusCode::OK);
    for batch in 0..5 {
        let events: Vec<Value> = (0..10).map(|i| event("pad", &format!("{batch}-{i}"))).collect();
        assert_eq!(app.publish(&Value::Array(events)).await.0, StatusCode::OK);
    }
    let (status, body) = app.publish(&json!([event("pad", &padded), event("pad", "4-9")])).await;
    assert_eq!((status, body["duplicates"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
    let stored = app.all_events(Some("pad")).await;
    assert_eq!(stored.len(), 51);
    assert_eq!(stored[0]["event_id"], padded, "kept as sent");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_enqueue_timeout_a_full_queue_makes_publishers_wait_not_fail() {
    let dir = data_dir();
    let config = Config { queue_capacity_requests: 2, enqueue_timeout_ms: 10_000, ..test_config(dir.path()) };
    let app = TestApp::spawn_with(config).await;
    app.faults().slow_down(Duration::from_millis(50));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let req = app.client.post(app.url("/publish")).json(&event("wait", &i.to_string()));
            tokio::spawn(async move { json_response(req.send().await.unwrap()).await.0 })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK, "waited for room instead of a 503");
    }
    let stats = app.stats().await;
    assert_eq!((counts(&stats), stats["rejected_queue_full"].as_u64()), ((20, 20, 0), Some(0)));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_mode_buffered_as_the_server_default_acks_once_queued() {
    let dir = data_dir();
    let app = TestApp::spawn_with(Config { ack_mode: AckMode::Buffered, ..test_config(dir.path()) }).await;
    // A broken disk cannot commit, yet a buffered publish is acknowledged at once...
    app.faults().break_disk();
    let (status, body) = app.publish(&json!([event("b", "1"), event("b", "2")])).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
    let (status, _) = app.publish(&event("b", "3")).await;
    assert_eq!(status, StatusCode::OK);
    // ...and `?ack=durable` still waits for the disk, which refuses.
    let req = app.client.post(app.url("/publish?ack=durable")).json(&event("d", "1"));
    assert_eq!(req.send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    // Once the disk heals, the writer's retries store what it acknowledged.
    app.faults().heal();
    let stored = async || {
        let (status, page) = app.get("/events?topic=b").await;
        status == StatusCode::OK && page["count"] == 3
    };
    assert!(eventually(Duration::from_secs(10), stored).await, "buffered events reach the disk");
    app.shutdown().await;
}

/// Regression (reported with issue 8): the request timeout bounded only the body
/// read. It now bounds decoding and the exact disk check too, and a request cut
/// off there leaves nothing claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_bounds_the_disk_check_and_releases_the_claims() {
    let dir = data_dir();
    // No page cache and one recent key: a repeat of an older key is checked on disk.
    let config = Config {
        request_timeout_ms: 300,
        recent_keys_capacity: 1,
        db_cache_mb: 0,
        ..test_config(dir.path())
    };
    let app = TestApp::spawn_with(config).await;
    for id in ["a", "b", "c"] {
        assert_eq!(app.publish(&event("t", id)).await.0, StatusCode::OK);
    }
    app.faults().slow_reads(Duration::from_millis(400));
    let req = app.client.post(app.url("/publish")).json(&event("t", "a"));
    let resp = req.send().await.unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    let (status, body) = json_response(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    app.faults().slow_reads(Duration::ZERO);
    let (status, body) = app.publish(&event("t", "a")).await;
    assert_eq!(
        (status, body["duplicates"].as_u64()),
        (StatusCode::OK, Some(1)),
        "nothing stayed claimed: {body}"
    );
    app.shutdown().await;
}
