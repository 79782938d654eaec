//! kill -9 under load, several times over one data directory, against the real
//! `aggregator` binary. Every acknowledged event must survive, nothing may be
//! stored twice, and dedup must still hold afterwards.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{all_events, counts, event, eventually, json_response};

type Key = (String, String);

struct Server {
    child: Child,
    base: String,
}

/// Start the binary on a free port and wait until /health answers 200.
async fn start_server(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .env("DB_PATH", dir.join("aggregator.redb"))
        .env("API_PORT", "0")
        .env("BLOOM_CAPACITY", "100000")
        // Small, so kill -9 also lands in the middle of key-log merges.
        .env("INDEX_MERGE_KEYS", "300")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("aggregator binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            if let Some(at) = line.find("127.0.0.1:") {
                let rest = &line[at..];
                let end =
                    rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(rest.len());
                return rest[..end].to_owned();
            }
        }
        panic!("aggregator exited before listening");
    })
    .await
    .expect("aggregator listens within 60 s");
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let healthy = eventually(Duration::from_secs(30), async || {
        matches!(client.get(format!("{base}/health")).send().await, Ok(r) if r.status() == StatusCode::OK)
    })
    .await;
    assert!(healthy, "aggregator healthy");
    Server { child, base }
}

/// Publish batches from `clients` concurrent tasks until the server dies; record
/// what each 200 acknowledged. Every batch repeats one earlier key of the run.
async fn load_until_killed(server: &mut Server, cycle: usize, acked: &Arc<Mutex<HashSet<Key>>>) {
    let clients = 8;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (base, acked) = (server.base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0.. {
                let mut batch: Vec<Value> = (0..20)
                    .map(|i| event(&format!("crash.{}", i % 3), &format!("c{cycle}-t{c}-n{n}-{i}")))
                    .collect();
                if n > 0 {
                    batch.push(event("crash.0", &format!("c{cycle}-t{c}-n{}-0", n - 1)));
                }
                let Ok(resp) = client.post(format!("{base}/publish")).json(&json!(batch)).send().await else {
                    return;
                };
                let (status, _) = json_response(resp).await;
                if status == StatusCode::OK {
                    let mut acked = acked.lock().unwrap();
                    for e in &batch {
                        acked.insert(key_of(e));
                    }
                }
            }
        }));
    }
    // Kill once some load has been acknowledged, while requests are in flight.
    let start = acked.lock().unwrap().len();
    let loaded =
        eventually(Duration::from_secs(60), async || acked.lock().unwrap().len() >= start + 400).await;
    assert!(loaded, "the server acknowledged load before the kill");
    server.child.start_kill().expect("SIGKILL sent");
    server.child.wait().await.expect("child reaped");
    for t in tasks {
        t.await.expect("client task ends when the server is gone");
    }
}

fn key_of(e: &Value) -> Key {
    (e["topic"].as_str().unwrap().to_owned(), e["event_id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event_across_cycles() {
    let dir = crate::helpers::data_dir();
    let acked: Arc<Mutex<HashSet<Key>>> = Arc::default();
    for cycle in 0..3 {
        let mut server = start_server(dir.path()).await;
        load_until_killed(&mut server, cycle, &acked).await;
    }

    let mut server = start_server(dir.path()).await;
    let client = reqwest::Client::new();
    let stored = all_events(&client, &server.base, None).await;
    let mut seen: HashMap<Key, u64> = HashMap::new();
    for e in &stored {
        *seen.entry(key_of(e)).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost, e.g. {:?}", lost.len(), lost.first());
    let seqs: Vec<u64> = stored.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let (status, stats) =
        json_response(client.get(format!("{}/stats", server.base)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (received, unique, duplicates) = counts(&stats);
    assert_eq!(unique, stored.len() as u64, "unique_processed matches what is stored");
    assert_eq!(received, unique + duplicates);

    // Re-publishing every acknowledged event yields only duplicates.
    let all: Vec<Value> = acked.iter().map(|(t, id)| event(t, id)).collect();
    for chunk in all.chunks(1000) {
        let resp = client.post(format!("{}/publish", server.base)).json(&json!(chunk)).send().await.unwrap();
        let (status, body) = json_response(resp).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["stored"], 0, "an acknowledged event was stored again");
    }
    server.child.start_kill().ok();
    server.child.wait().await.ok();
}
