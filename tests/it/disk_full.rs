//! A real full disk: the data directory on a size-limited tmpfs, filled by
//! publishing, then grown again. The same process must answer 503 with
//! Retry-After while it is full, and store again within seconds once it has room,
//! with every acknowledged event readable and none stored twice. Needs root to
//! mount (CI runs as root); where mounting is refused the test says so and skips.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, counts, data_dir, eventually, test_config};

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

    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..200 {
        let resp = app.client.post(app.url("/publish")).json(&heavy_batch(n)).send().await.unwrap();
        match resp.status() {
            StatusCode::OK => acked.push(n),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(resp.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
                refused = Some(n);
                break;
            }
            other => panic!("batch {n}: {other}"),
        }
    }
    let refused = refused.expect("a 12 MiB disk fills before 200 batches of 640 KiB");
    assert!(!acked.is_empty(), "some batches fit before the disk filled");
    // While it stays full, publishes keep getting 503 and /health turns 503.
    let unhealthy = async || {
        app.publish(&heavy_batch(1000)).await;
        app.get("/health").await.0 == StatusCode::SERVICE_UNAVAILABLE
    };
    assert!(eventually(Duration::from_secs(10), unhealthy).await, "/health is 503 while the disk is full");

    tmpfs.resize("256m");
    let stored_again = async || app.publish(&heavy_batch(refused)).await.0 == StatusCode::OK;
    assert!(eventually(Duration::from_secs(10), stored_again).await, "stores again once the disk has room");
    assert_eq!(app.get("/health").await.0, StatusCode::OK, "healthy again");
    acked.push(refused);

    let events = app.all_events(Some("full")).await;
    let ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let distinct: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "nothing stored twice");
    for n in &acked {
        for i in 0..20 {
            assert!(distinct.contains(format!("{n}-{i}").as_str()), "acknowledged {n}-{i} is readable");
        }
    }
    let (received, unique, _) = counts(&app.stats().await);
    assert_eq!(unique as usize, ids.len(), "counters match what is stored");
    assert!(received >= unique);
    app.shutdown().await;
    drop(tmpfs);
}
