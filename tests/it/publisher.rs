//! The `publisher` binary against the real server: 10,000 events with 20 %
//! duplicates, one event per request and in batches; its self-check must pass.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

use std::time::Duration;

use crate::helpers::{TestApp, counts, data_dir, eventually};

async fn run_publisher(base: &str, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_publisher"))
        .args(["--url", base, "--events", "10000", "--duplicate", "0.2", "--json", "--concurrency", "16"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("publisher runs");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("JSON report; stderr: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "self-check failed: {report:#}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_self_check_passes_single_and_batch_modes() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;

    let single = run_publisher(&app.base, &["--batch-size", "1"]).await;
    assert_eq!(single["acknowledged_events"], 10_000);
    assert_eq!(single["self_check"]["ok"], true);
    let dups = single["duplicates"].as_u64().unwrap();
    assert!((1_500..2_500).contains(&dups), "about 20 % duplicates: {dups}");

    let batch = run_publisher(&app.base, &["--batch-size", "100", "--format", "ndjson", "--gzip"]).await;
    assert_eq!(batch["acknowledged_events"], 10_000);
    assert_eq!(batch["requests_sent"], 100);
    for key in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(batch["latency"][key].as_f64().is_some(), "{key}");
    }

    // Two runs never collide: the second run's events are all new to the server.
    let stored = single["stored"].as_u64().unwrap() + batch["stored"].as_u64().unwrap();
    assert_eq!(counts(&app.stats().await), (20_000, stored, 20_000 - stored));
    app.shutdown().await;
}

/// A 503 is retried (honouring Retry-After), counted, and the self-check still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_retries_503_and_counts_the_retries() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    app.faults().break_disk();
    let publisher = Command::new(env!("CARGO_BIN_EXE_publisher"))
        .args(["--url", &app.base, "--events", "200", "--batch-size", "50", "--concurrency", "1", "--json"])
        .output();
    let publisher = tokio::spawn(publisher);
    // The first request fails its commit (503, Retry-After: 1); then the disk heals.
    let failed = async || app.get("/health").await.1["failing_commits"].as_u64() >= Some(1);
    assert!(eventually(Duration::from_secs(30), failed).await, "a commit failed");
    app.faults().heal();
    let output = publisher.await.unwrap().expect("publisher runs");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert!(output.status.success(), "{report:#}");
    let retries = report["retries"].as_u64().unwrap();
    assert!(retries >= 1, "{report:#}");
    assert_eq!(report["errors"]["503 (retried)"], retries);
    assert_eq!(report["acknowledged_events"], 200);
    assert_eq!(report["self_check"]["ok"], true);
    app.shutdown().await;
}
