//! Dedup and counters survive a graceful restart on the same data directory.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, counts, data_dir, event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_events_counters_and_dedup() {
    let dir = data_dir();
    // A small merge threshold: part of the keys is merged into the index, part is in the log.
    let config = event_aggregator::Config { index_merge_keys: 64, ..crate::helpers::test_config(dir.path()) };
    let app = TestApp::spawn_with(config).await;
    let batch: Vec<Value> = (0..300).map(|i| event(&format!("r.{}", i % 3), &format!("e{i}"))).collect();
    let (status, body) = app.publish(&json!(batch)).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(300)));
    app.publish(&event("r.0", "e0")).await;
    let before = app.all_events(None).await;

    let app = app.restart().await;
    assert_eq!(counts(&app.stats().await), (301, 300, 1), "counters carried over");
    assert_eq!(app.all_events(None).await, before, "events readable, same seqs");
    let (status, body) = app.publish(&json!(batch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["stored"].as_u64(), body["duplicates"].as_u64()), (Some(0), Some(300)));
    let stats = app.stats().await;
    assert_eq!(stats["dedup"]["duplicates_on_disk"], 300, "decided by filter + disk: {stats}");
    // New events continue the sequence.
    app.publish(&event("r.9", "new")).await;
    let all = app.all_events(None).await;
    assert_eq!(all.last().unwrap()["seq"], 301);
    app.shutdown().await;
}

/// The case above restarts with most keys still in the key log; here merges have
/// moved them into the key runs first (a log merge of a few hundred keys takes 4
/// further commits, and the tree merge into the lower run rides on those and the next),
/// and the saved filter is gone, so the filter is rebuilt from the merged index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_the_filter_from_the_merged_index() {
    let dir = data_dir();
    let config = event_aggregator::Config { index_merge_keys: 64, ..crate::helpers::test_config(dir.path()) };
    let app = TestApp::spawn_with(config).await;
    let batch: Vec<Value> = (0..300).map(|i| event("m", &format!("e{i}"))).collect();
    assert_eq!(app.publish(&json!(batch)).await.0, StatusCode::OK);
    for i in 0..20 {
        assert_eq!(app.publish(&event("later", &i.to_string())).await.0, StatusCode::OK);
    }
    // Without the filter saved at shutdown, as after a crash: the full scan.
    let config = app.config().clone();
    app.shutdown().await;
    std::fs::remove_file(dir.path().join("aggregator.redb.filter")).expect("saved at shutdown");
    let app = TestApp::spawn_with(config).await;
    let scanned = app.stats().await["dedup"]["filter_keys_scanned_at_start"].as_u64();
    assert!(scanned >= Some(320), "every stored key scanned: {scanned:?}");
    let (status, body) = app.publish(&json!(batch)).await;
    assert_eq!((status, body["duplicates"].as_u64()), (StatusCode::OK, Some(300)), "{body}");
    assert_eq!(app.stats().await["dedup"]["duplicates_on_disk"], 300);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_cannot_open_a_database_in_use() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    let second = event_aggregator::start(crate::helpers::test_config(dir.path())).await;
    assert!(second.is_err(), "redb's file lock refuses a second writer");
    app.shutdown().await;
}

/// `aggregator healthcheck` (the container's HEALTHCHECK) reads API_HOST/API_PORT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommand_exits_0_for_a_live_server_and_1_otherwise() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    let check = |port: u16, host: &'static str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_aggregator"))
            .arg("healthcheck")
            .env("API_HOST", host)
            .env("API_PORT", port.to_string())
            .output()
    };
    let live = check(app.app.addr.port(), "0.0.0.0").await.unwrap();
    assert!(live.status.success(), "{}", String::from_utf8_lossy(&live.stderr));
    let port = app.app.addr.port();
    app.shutdown().await;
    let dead = check(port, "127.0.0.1").await.unwrap();
    assert_eq!(dead.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dead.stderr).starts_with("aggregator: "));
}

/// Shutdown order (design invariant 9): a graceful shutdown in the middle of load
/// drains in-flight requests through the writer, so every 200 is on disk afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_keeps_every_acknowledged_event() {
    use std::sync::{Arc, Mutex};
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (client, url, acked) = (app.client.clone(), app.url("/publish"), acked.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let ids: Vec<String> = (0..10).map(|i| format!("t{t}-n{n}-{i}")).collect();
                    let batch: Vec<Value> = ids.iter().map(|id| event("drain", id)).collect();
                    match client.post(&url).json(&json!(batch)).send().await {
                        Ok(resp) if resp.status() == StatusCode::OK => acked.lock().unwrap().extend(ids),
                        // Refused while stopping: a clean 503 a publisher can retry.
                        Ok(resp) => {
                            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "only 200 or 503");
                            assert!(resp.headers().contains_key("retry-after"), "a 503 says when to retry");
                            return;
                        }
                        // The listener is closed, or an idle keep-alive connection was.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let loaded = crate::helpers::eventually(std::time::Duration::from_secs(30), async || {
        acked.lock().unwrap().len() >= 500
    })
    .await;
    assert!(loaded);
    let app = tokio::time::timeout(std::time::Duration::from_secs(30), app.restart())
        .await
        .expect("the shutdown under load finishes within 30 s");
    for t in tasks {
        t.await.unwrap();
    }
    let stored: std::collections::HashSet<String> = app
        .all_events(Some("drain"))
        .await
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost, e.g. {:?}", lost.len(), lost.first());
    app.shutdown().await;
}
