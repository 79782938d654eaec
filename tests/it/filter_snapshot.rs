//! A restart loads the dedup filter saved at the last clean shutdown instead of
//! rescanning every stored key, and never trusts it beyond what it covers.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, data_dir, event, test_config};

fn snapshot_file(dir: &Path) -> PathBuf {
    dir.join("aggregator.redb.filter")
}

fn batch(prefix: &str, n: usize) -> Value {
    json!((0..n).map(|i| event(&format!("s.{}", i % 4), &format!("{prefix}{i}"))).collect::<Vec<_>>())
}

/// How the last start filled its filter: (from the snapshot, keys scanned).
async fn filter_start(app: &TestApp) -> (bool, u64) {
    let stats = app.stats().await;
    let dedup = &stats["dedup"];
    (
        dedup["filter_from_snapshot"].as_bool().unwrap(),
        dedup["filter_keys_scanned_at_start"].as_u64().unwrap(),
    )
}

async fn publish_expecting(app: &TestApp, body: &Value, stored: u64, duplicates: u64) {
    let (status, reply) = app.publish(body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!((reply["stored"].as_u64(), reply["duplicates"].as_u64()), (Some(stored), Some(duplicates)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_loads_the_saved_filter_and_still_catches_every_duplicate() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(filter_start(&app).await, (false, 0), "a new database has nothing to scan");
    publish_expecting(&app, &batch("a", 200), 200, 0).await;
    let app = app.restart().await;
    assert!(snapshot_file(dir.path()).exists());
    assert_eq!(filter_start(&app).await, (true, 0), "nothing was stored after the snapshot");
    publish_expecting(&app, &batch("a", 200), 0, 200).await;
    assert_eq!(app.stats().await["dedup"]["duplicates_on_disk"], 200, "the loaded filter knew every key");
    app.shutdown().await;
}

/// A later run that crashed never saved its filter: the old snapshot is topped up
/// with the keys of every record stored after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_snapshot_is_topped_up_from_the_records_stored_after_it() {
    let dir = data_dir();
    let config = test_config(dir.path());
    let app = TestApp::spawn_with(config.clone()).await;
    publish_expecting(&app, &batch("a", 150), 150, 0).await;
    app.shutdown().await;
    let old = std::fs::read(snapshot_file(dir.path())).unwrap();

    let app = TestApp::spawn_with(config.clone()).await;
    publish_expecting(&app, &batch("b", 70), 70, 0).await;
    app.shutdown().await;
    std::fs::write(snapshot_file(dir.path()), old).unwrap();

    let app = TestApp::spawn_with(config).await;
    assert_eq!(filter_start(&app).await, (true, 70), "only the records after the old snapshot");
    publish_expecting(&app, &batch("a", 150), 0, 150).await;
    publish_expecting(&app, &batch("b", 70), 0, 70).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_foreign_snapshot_is_ignored_and_every_key_rescanned() {
    let dir = data_dir();
    let other = data_dir();
    let app = TestApp::spawn(other.path()).await;
    app.shutdown().await;
    let foreign = std::fs::read(snapshot_file(other.path())).unwrap();

    let app = TestApp::spawn(dir.path()).await;
    publish_expecting(&app, &batch("a", 120), 120, 0).await;
    let app = app.restart().await;
    app.shutdown().await;
    let saved = std::fs::read(snapshot_file(dir.path())).unwrap();
    for (what, bytes) in [("torn", saved[..saved.len() / 2].to_vec()), ("another database's", foreign)] {
        std::fs::write(snapshot_file(dir.path()), bytes).unwrap();
        let app = TestApp::spawn(dir.path()).await;
        assert_eq!(filter_start(&app).await, (false, 120), "{what} snapshot: full scan");
        publish_expecting(&app, &batch("a", 120), 0, 120).await;
        app.shutdown().await;
    }
}
