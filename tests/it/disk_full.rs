//! A full disk: the data directory on a real size-limited tmpfs (and, on any
//! machine, ENOSPC from the storage backend), filled by publishing, then grown
//! again. The same process must answer 503 with
//! Retry-After while it is full, and store again within seconds once it has room,
//! with every acknowledged event readable and none stored twice. Needs root to
//! mount (CI runs as root); where mounting is refused the test says so and skips.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, counts, data_dir, db_file, eventually, test_config};

/// Unmounts the tmpfs when the test ends, passed or not.
struct Tmpfs<'a>(&'a Path);

impl Tmpfs<'_> {
    fn mount<'a>(dir: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
        let opts = format!("size={size}");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &opts, "tmpfs"]).arg(dir).output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs(dir)),
            Ok(out) => {
                eprintln!("skipped: cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
    fn resize(&self, size: &str) {
        let opts = format!("remount,size={size}");
        let out = Command::new("mount").args(["-o", &opts]).arg(self.0).output().expect("mount runs");
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// 20 events of ~32 KiB each: a disk of a few MiB fills in a few requests.
fn heavy_batch(n: usize) -> Value {
    let filler = "x".repeat(32 * 1024);
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"topic": "full", "event_id": format!("{n}-{i}"), "payload": {"fill": filler}}))
        .collect();
    Value::Array(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_and_the_same_process_stores_again_once_it_grows() {
    let dir = data_dir();
    let Some(tmpfs) = Tmpfs::mount(dir.path(), "12m") else { return };
    let config = event_aggregator::Config { db_cache_mb: 4, ..test_config(dir.path()) };
    let app = TestApp::spawn_with(config).await;
    let (mut acked, refused) = publish_until_refused(&app).await;
    assert_unhealthy_while_full(&app).await;

    tmpfs.resize("256m");
    assert_stores_again(&app, refused).await;
    acked.push(refused);
    assert_each_acked_event_once(&app, &acked).await;
    app.shutdown().await;
    drop(tmpfs);
}

/// The same through the storage backend (`disk::Faults::fill_disk_after`), so it
/// runs on any machine: writes past the room left fail with ENOSPC, and
/// `/health` names the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_from_the_disk_is_503_named_in_health_and_heals_in_process() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.publish(&heavy_batch(0)).await.0, StatusCode::OK);
    let file_len = std::fs::metadata(db_file(dir.path())).unwrap().len();
    app.faults().fill_disk_after(2 << 20, file_len);
    let (mut acked, refused) = publish_until_refused(&app).await;
    acked.push(0);
    assert_unhealthy_while_full(&app).await;
    let (_, health) = app.get("/health").await;
    let cause = health["storage_error"].as_str().unwrap_or_default();
    assert!(cause.contains("No space left on device"), "/health names the cause: {health}");

    app.faults().make_room();
    assert_stores_again(&app, refused).await;
    assert_eq!(app.get("/health").await.1["storage_error"], Value::Null, "cleared by a commit");
    acked.push(refused);
    assert_each_acked_event_once(&app, &acked).await;
    app.shutdown().await;
}

/// Publish heavy batches until one gets 503 (with Retry-After); returns the
/// acknowledged batches and the refused one.
async fn publish_until_refused(app: &TestApp) -> (Vec<usize>, usize) {
    let mut acked = Vec::new();
    for n in 1..200 {
        let resp = app.client.post(app.url("/publish")).json(&heavy_batch(n)).send().await.unwrap();
        match resp.status() {
            StatusCode::OK => acked.push(n),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(resp.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
                return (acked, n);
            }
            other => panic!("batch {n}: {other}"),
        }
    }
    panic!("the disk fills before 200 batches of 640 KiB");
}

/// While the disk stays full, publishes keep getting 503 and /health turns 503.
async fn assert_unhealthy_while_full(app: &TestApp) {
    let unhealthy = async || {
        app.publish(&heavy_batch(1000)).await;
        app.get("/health").await.0 == StatusCode::SERVICE_UNAVAILABLE
    };
    assert!(eventually(Duration::from_secs(10), unhealthy).await, "/health is 503 while the disk is full");
}

/// Once there is room, the refused batch is stored by the same process.
async fn assert_stores_again(app: &TestApp, refused: usize) {
    let stored_again = async || app.publish(&heavy_batch(refused)).await.0 == StatusCode::OK;
    assert!(eventually(Duration::from_secs(10), stored_again).await, "stores again once the disk has room");
    assert_eq!(app.get("/health").await.0, StatusCode::OK, "healthy again");
}

/// Every event of the `acked` batches is readable, nothing is there twice, and
/// the counters match what is stored.
async fn assert_each_acked_event_once(app: &TestApp, acked: &[usize]) {
    let events = app.all_events(Some("full")).await;
    let ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let distinct: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "nothing stored twice");
    for n in acked {
        for i in 0..20 {
            assert!(distinct.contains(format!("{n}-{i}").as_str()), "acknowledged {n}-{i} is readable");
        }
    }
    let (received, unique, _) = counts(&app.stats().await);
    assert_eq!(unique as usize, ids.len(), "counters match what is stored");
    assert!(received >= unique);
}
