//! kill -9 under load, many times over one data directory, against the real
//! `aggregator` binary, at random moments (key-log merges run every 300 keys, so
//! some kills land in them). Publishers repeat keys across clients and cycles (so
//! in-flight twins and disk checks happen under the kill) and re-send whatever got
//! no answer, as an at-least-once publisher does. Every acknowledged event must
//! survive with its fields intact, nothing may be stored twice, seqs have no
//! gaps, and dedup still holds afterwards. (kill -9 keeps the page cache, so it
//! cannot prove the fsync: `power` does that.) `CRASH_CYCLES` sets the cycles
//! (default 20).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{all_events, counts, eventually, json_response};

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

/// Shared by the publishers of every cycle.
#[derive(Default)]
struct Ledger {
    /// Keys acknowledged with a (durable) 200.
    acked: HashSet<Key>,
    /// Every key sent so far, for repeats across clients and cycles.
    sent: Vec<Key>,
    /// Batches that got no answer before the kill: re-sent in the next cycle.
    unanswered: Vec<Vec<Key>>,
}

/// The one body of a key, so a stored event can be checked field by field.
fn event_of((topic, id): &Key) -> Value {
    let h = id.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    json!({"topic": topic, "event_id": id, "timestamp": format!("2026-11-21T10:{:02}:{:02}Z", h % 60, h / 60 % 60),
           "source": format!("src-{}", h % 97), "payload": {"id": id, "v": h % 1000}})
}

/// Send one batch until it gets an answer or the server is gone. Returns whether it got a 200.
async fn send(client: &reqwest::Client, base: &str, batch: &[Key]) -> Option<bool> {
    let body: Vec<Value> = batch.iter().map(event_of).collect();
    let resp = client.post(format!("{base}/publish")).json(&body).send().await.ok()?;
    let status = resp.status();
    // A kill can land mid-response: an unread body is no answer either.
    resp.bytes().await.ok()?;
    Some(status == StatusCode::OK)
}

/// Re-send last cycle's unanswered batches (until each gets a 200), then publish
/// from `clients` tasks until the server is killed after a random amount of load.
async fn load_until_killed(server: &mut Server, cycle: usize, ledger: &Arc<Mutex<Ledger>>) {
    let client = reqwest::Client::new();
    let retries = std::mem::take(&mut ledger.lock().unwrap().unanswered);
    for batch in retries {
        for _ in 0..50 {
            if send(&client, &server.base, &batch).await == Some(true) {
                ledger.lock().unwrap().acked.extend(batch.iter().cloned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut rng = fastrand::Rng::with_seed(cycle as u64);
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (base, ledger, seed) = (server.base.clone(), ledger.clone(), rng.u64(..));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rng = fastrand::Rng::with_seed(seed);
            for n in 0.. {
                let batch: Vec<Key> = {
                    let mut ledger = ledger.lock().unwrap();
                    let batch: Vec<Key> = (0..rng.usize(1..=20))
                        .map(|i| match ledger.sent.len() {
                            len if len > 0 && rng.u8(..4) == 0 => ledger.sent[rng.usize(..len)].clone(),
                            _ => (format!("crash.{}", i % 3), format!("c{cycle}-t{c}-n{n}-{i}")),
                        })
                        .collect();
                    ledger.sent.extend(batch.iter().cloned());
                    batch
                };
                match send(&client, &base, &batch).await {
                    Some(true) => ledger.lock().unwrap().acked.extend(batch),
                    Some(false) => {}
                    None => {
                        ledger.lock().unwrap().unanswered.push(batch);
                        return;
                    }
                }
            }
        }));
    }
    // Kill after a random amount of acknowledged load, while requests are in flight.
    let start = ledger.lock().unwrap().acked.len();
    let target = start + rng.usize(50..800);
    let loaded =
        eventually(Duration::from_secs(60), async || ledger.lock().unwrap().acked.len() >= target).await;
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

/// Journal frames the server's startup replayed (`/stats`).
async fn journal_frames_replayed(client: &reqwest::Client, server: &Server) -> u64 {
    let (_, stats) = json_response(client.get(format!("{}/stats", server.base)).send().await.unwrap()).await;
    stats["writer"]["journal_frames_replayed"].as_u64().expect("writer.journal_frames_replayed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event_across_cycles() {
    let cycles = std::env::var("CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = crate::helpers::data_dir();
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let client = reqwest::Client::new();
    let mut replays = 0;
    for cycle in 0..cycles {
        let mut server = start_server(dir.path()).await;
        replays += u64::from(journal_frames_replayed(&client, &server).await > 0);
        load_until_killed(&mut server, cycle, &ledger).await;
    }

    let mut server = start_server(dir.path()).await;
    replays += u64::from(journal_frames_replayed(&client, &server).await > 0);
    // The kills caught acknowledged batches that only the journal held.
    assert!(replays > 0, "no restart of {cycles} replayed the journal");
    // The last kill's unanswered batches, re-sent: each stored exactly once.
    let retries = std::mem::take(&mut ledger.lock().unwrap().unanswered);
    for batch in &retries {
        assert_eq!(send(&client, &server.base, batch).await, Some(true), "a re-sent batch is accepted");
        ledger.lock().unwrap().acked.extend(batch.iter().cloned());
    }
    let stored = all_events(&client, &server.base, None).await;
    let mut seen: HashMap<Key, u64> = HashMap::new();
    for e in &stored {
        *seen.entry(key_of(e)).or_default() += 1;
        let expected = event_of(&key_of(e));
        for field in ["timestamp", "source", "payload"] {
            assert_eq!(e[field], expected[field], "{field} of {:?} kept as sent", key_of(e));
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let acked = ledger.lock().unwrap().acked.clone();
    let lost: Vec<_> = acked.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost, e.g. {:?}", lost.len(), lost.first());
    let seqs: Vec<u64> = stored.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "seqs from 1 without gaps");

    let (status, stats) =
        json_response(client.get(format!("{}/stats", server.base)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (received, unique, duplicates) = counts(&stats);
    assert_eq!(unique, stored.len() as u64, "unique_processed matches what is stored");
    assert_eq!(received, unique + duplicates);

    // Re-publishing every acknowledged event yields only duplicates.
    let all: Vec<Key> = acked.into_iter().collect();
    for chunk in all.chunks(1000) {
        let body: Vec<Value> = chunk.iter().map(event_of).collect();
        let resp = client.post(format!("{}/publish", server.base)).json(&body).send().await.unwrap();
        let (status, body) = json_response(resp).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["stored"], 0, "an acknowledged event was stored again");
    }
    let (_, stats) = json_response(client.get(format!("{}/stats", server.base)).send().await.unwrap()).await;
    assert!(stats["dedup"]["duplicates_on_disk"].as_u64() > Some(0), "found by the rebuilt filter: {stats}");
    server.child.start_kill().ok();
    server.child.wait().await.ok();
}
