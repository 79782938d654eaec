//! `TestApp`: the real app in-process on 127.0.0.1:0 over a temp data dir (on a
//! `disk::FaultyDisk`, inert until a test arms it), plus small HTTP helpers that
//! read like the contract. Tests reach the service only through HTTP and these
//! helpers, never through its internals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_aggregator::{Config, RunningApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::disk::{self, Faults};

pub struct TestApp {
    pub app: RunningApp,
    pub client: reqwest::Client,
    pub base: String,
    config: Config,
    faults: Arc<Faults>,
}

/// The config every test starts from: port 0, a data dir, a small filter.
pub fn test_config(dir: &Path) -> Config {
    Config {
        db_path: dir.join("aggregator.redb"),
        api_port: 0,
        bloom_capacity: 100_000,
        db_cache_mb: 16,
        ..Config::default()
    }
}

impl TestApp {
    pub async fn spawn(dir: &Path) -> TestApp {
        TestApp::spawn_with(test_config(dir)).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        let faults = Arc::new(Faults::default());
        TestApp::spawn_on(config, faults.clone(), disk::storage(faults)).await
    }

    /// An app whose journal is on a disk of its own: the switches returned
    /// fail it alone, `faults()` the database's disk alone.
    pub async fn spawn_with_journal_apart(config: Config) -> (TestApp, Arc<Faults>) {
        let (database, journal) = (Arc::new(Faults::default()), Arc::new(Faults::default()));
        let storage = disk::storage_apart(database.clone(), journal.clone());
        (TestApp::spawn_on(config, database, storage).await, journal)
    }

    async fn spawn_on(config: Config, faults: Arc<Faults>, storage: event_aggregator::Storage) -> TestApp {
        let app = event_aggregator::start_with_storage(config.clone(), storage).await.expect("app starts");
        let base = format!("http://{}", app.addr);
        TestApp { app, client: reqwest::Client::new(), base, config, faults }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The switches of the disk under this app's database.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Keys in the recent-key map, as `/stats` reports them.
    pub async fn recent_keys(&self) -> u64 {
        self.stats().await["dedup"]["recent_keys"].as_u64().expect("dedup.recent_keys")
    }

    /// Graceful shutdown, then a fresh start on the same data directory.
    pub async fn restart(self) -> TestApp {
        let config = self.config.clone();
        self.shutdown().await;
        TestApp::spawn_with(config).await
    }

    pub async fn shutdown(self) {
        self.app.shutdown().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST a JSON value to /publish; returns status and JSON body.
    pub async fn publish(&self, body: &Value) -> (StatusCode, Value) {
        self.publish_bytes(body.to_string().into_bytes(), "application/json", None).await
    }

    pub async fn publish_bytes(
        &self,
        body: Vec<u8>,
        content_type: &str,
        encoding: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url("/publish")).header("content-type", content_type).body(body);
        if let Some(enc) = encoding {
            req = req.header("content-encoding", enc);
        }
        json_response(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        json_response(self.client.get(self.url(path)).send().await.expect("request sent")).await
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.get("/stats").await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// Every stored event of `topic` (or of all topics), following `next_after`.
    pub async fn all_events(&self, topic: Option<&str>) -> Vec<Value> {
        all_events(&self.client, &self.base, topic).await
    }
}

pub async fn json_response(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("body read");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

pub async fn all_events(client: &reqwest::Client, base: &str, topic: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let mut url = format!("{base}/events?limit=1000&after={after}");
        if let Some(t) = topic {
            url.push_str(&format!("&topic={t}"));
        }
        let (status, page) = json_response(client.get(url).send().await.expect("sent")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        out.extend(page["events"].as_array().expect("events array").iter().cloned());
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

pub fn event(topic: &str, id: &str) -> Value {
    json!({"topic": topic, "event_id": id, "timestamp": "2026-11-21T10:00:00Z", "source": "test",
           "payload": {"id": id}})
}

/// Poll `check` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

pub fn counts(stats: &Value) -> (u64, u64, u64) {
    let n = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {stats}"));
    (n("received"), n("unique_processed"), n("duplicate_dropped"))
}

pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[allow(dead_code)]
pub fn db_file(dir: &Path) -> PathBuf {
    dir.join("aggregator.redb")
}
