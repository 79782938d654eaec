//! Failure paths: a failing disk (through the `disk::FaultyDisk` backend), a
//! duplicate whose twin fails, a full queue. A 503 always carries Retry-After,
//! nothing of a refused request is stored or counted, and once the disk heals the
//! same process serves again (the writer reopens the database).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::helpers::{TestApp, counts, data_dir, event, eventually, json_response, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_is_503_with_retry_after_and_the_retry_succeeds() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    app.faults().break_disk();
    let resp = app
        .client
        .post(app.url("/publish"))
        .json(&json!([event("f", "1"), event("f", "2")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    let (status, body) = json_response(resp).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    heal_and_wait_for_reads(&app).await;
    assert_eq!(counts(&app.stats().await), (0, 0, 0));
    assert!(app.all_events(None).await.is_empty());

    let (status, body) = app.publish(&json!([event("f", "1"), event("f", "2")])).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(2)), "claims were released");
    assert_eq!(app.stats().await["writer"]["commit_failures"], 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_commits_keep_failing() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    app.faults().break_disk();
    for i in 0..3 {
        assert_eq!(app.publish(&event("h", &i.to_string())).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    let (status, health) = app.get("/health").await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
    app.faults().heal();
    assert_eq!(app.publish(&event("h", "ok")).await.0, StatusCode::OK);
    assert_eq!(app.get("/health").await.0, StatusCode::OK, "healthy again after a commit succeeds");
    app.shutdown().await;
}

/// Invariant: a 200 for a duplicate means its earlier twin is durably stored. If
/// the twin's commit fails, the duplicate gets 503 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_of_a_pending_twin_shares_its_failed_commit() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    app.faults().slow_down(Duration::from_millis(300));
    app.faults().break_disk();
    let first = publish_and_wait_for_its_claim(&app).await;
    let (second_status, second) = app.publish(&event("twin", "k")).await;
    let (first_status, _) = first.await.unwrap();
    assert_eq!(first_status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second_status, StatusCode::SERVICE_UNAVAILABLE, "never a 200 for a lost twin: {second}");
    app.faults().slow_down(Duration::ZERO);
    heal_and_wait_for_reads(&app).await;
    assert_eq!(counts(&app.stats().await), (0, 0, 0));

    let (status, body) = app.publish(&event("twin", "k")).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(1)));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_of_a_pending_twin_waits_for_its_commit() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    app.faults().slow_down(Duration::from_millis(200));
    let first = publish_and_wait_for_its_claim(&app).await;
    let (status, body) = app.publish(&event("twin", "k")).await;
    assert_eq!((status, body["duplicates"].as_u64()), (StatusCode::OK, Some(1)));
    // By the time the duplicate is acknowledged, the twin is readable.
    assert_eq!(app.all_events(Some("twin")).await.len(), 1);
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    app.shutdown().await;
}

/// Heal the disk; the writer reopens the database by itself, and reads answer again.
async fn heal_and_wait_for_reads(app: &TestApp) {
    app.faults().heal();
    let reads = async || app.get("/stats").await.0 == StatusCode::OK;
    assert!(eventually(Duration::from_secs(10), reads).await, "reads are back after the heal");
}

/// Publish `("twin", "k")` in the background; return once its key is claimed.
async fn publish_and_wait_for_its_claim(app: &TestApp) -> JoinHandle<(StatusCode, serde_json::Value)> {
    let req = app.client.post(app.url("/publish")).json(&event("twin", "k"));
    let first = tokio::spawn(async move { json_response(req.send().await.unwrap()).await });
    assert!(eventually(Duration::from_secs(5), async || app.recent_keys().await == 1).await);
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_503_and_counts_stay_exact() {
    let dir = data_dir();
    let config = event_aggregator::Config {
        queue_capacity_requests: 2,
        enqueue_timeout_ms: 0,
        ..test_config(dir.path())
    };
    let app = TestApp::spawn_with(config).await;
    app.faults().slow_down(Duration::from_millis(100));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let req = app.client.post(app.url("/publish")).json(&event("full", &i.to_string()));
            tokio::spawn(async move {
                let resp = req.send().await.unwrap();
                let retry_after = resp.headers().contains_key("retry-after");
                (json_response(resp).await, retry_after)
            })
        })
        .collect();
    let mut acked = 0;
    let mut refused = 0;
    for t in tasks {
        let ((status, body), retry_after) = t.await.unwrap();
        match status {
            StatusCode::OK => acked += body["stored"].as_u64().unwrap(),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after);
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(refused > 0, "a 2-slot queue behind a slow disk must refuse some of 20 requests");
    assert_eq!(acked + refused, 20);
    let stats = app.stats().await;
    assert_eq!(counts(&stats), (acked, acked, 0));
    assert_eq!(app.all_events(Some("full")).await.len() as u64, acked);
    assert!(stats["rejected_queue_full"].as_u64().unwrap() >= refused);
    app.shutdown().await;
}
