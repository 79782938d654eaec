//! Many concurrent clients: exact counts afterwards, and the race where every
//! client sends the same event at once.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, counts, data_dir, event, json_response};

/// 10,000 events, 20 % of them repeats of earlier ones (some still in flight when
/// repeated), from 16 concurrent clients mixing single events and batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_with_20_percent_duplicates_count_exactly() {
    const UNIQUE: usize = 8_000;
    const DUPLICATES: usize = 2_000;
    const CLIENTS: usize = 16;
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;

    // Event i of the plan: unique ids first interleaved with repeats of earlier ids.
    let mut plan: Vec<(String, String)> = Vec::with_capacity(UNIQUE + DUPLICATES);
    for i in 0..UNIQUE {
        plan.push((format!("topic.{}", i % 7), format!("id-{i}")));
        if i % 4 == 3 {
            let j = (i * 7919) % (i + 1);
            plan.push((format!("topic.{}", j % 7), format!("id-{j}")));
        }
    }
    assert_eq!(plan.len(), UNIQUE + DUPLICATES);
    let plan = Arc::new(plan);

    let mut tasks = Vec::new();
    for client_no in 0..CLIENTS {
        let (client, base, plan) = (app.client.clone(), app.base.clone(), plan.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<Value> = plan
                .iter()
                .enumerate()
                .filter(|(i, _)| i % CLIENTS == client_no)
                .map(|(_, (t, id))| event(t, id))
                .collect();
            let batch_size = if client_no % 2 == 0 { 1 } else { 50 };
            let (mut stored, mut dups) = (0, 0);
            for chunk in mine.chunks(batch_size) {
                let body = if batch_size == 1 { chunk[0].clone() } else { json!(chunk) };
                let resp = client.post(format!("{base}/publish")).json(&body).send().await.unwrap();
                let (status, body) = json_response(resp).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                stored += body["stored"].as_u64().unwrap();
                dups += body["duplicates"].as_u64().unwrap();
            }
            (stored, dups)
        }));
    }
    let (mut stored, mut dups) = (0, 0);
    for t in tasks {
        let (s, d) = t.await.unwrap();
        stored += s;
        dups += d;
    }
    assert_eq!((stored, dups), (UNIQUE as u64, DUPLICATES as u64));
    assert_eq!(counts(&app.stats().await), (10_000, UNIQUE as u64, DUPLICATES as u64));

    let events = app.all_events(None).await;
    assert_eq!(events.len(), UNIQUE);
    let keys: HashSet<(String, String)> = events
        .iter()
        .map(|e| (e["topic"].as_str().unwrap().to_owned(), e["event_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(keys.len(), UNIQUE, "no (topic, event_id) stored twice");
    let per_topic: usize = events_across_topics(&app, 7).await;
    assert_eq!(per_topic, UNIQUE);
    app.shutdown().await;
}

async fn events_across_topics(app: &TestApp, topics: usize) -> usize {
    let mut total = 0;
    for t in 0..topics {
        total += app.all_events(Some(&format!("topic.{t}"))).await.len();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_publishes_store_exactly_one() {
    let dir = data_dir();
    let app = TestApp::spawn(dir.path()).await;
    // A slow fsync keeps the first copy in flight while the others arrive.
    app.faults().slow_down(std::time::Duration::from_millis(300));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, barrier) = (app.client.clone(), app.url("/publish"), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let resp = client.post(url).json(&event("race", "same")).send().await.unwrap();
                json_response(resp).await
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        stored += body["stored"].as_u64().unwrap();
    }
    assert_eq!(stored, 1);
    let stats = app.stats().await;
    assert_eq!(counts(&stats), (50, 1, 49));
    let met_twin = stats["dedup"]["duplicates_of_in_flight"].as_u64().unwrap();
    assert!(met_twin > 0, "no request met the first copy in flight: the race was not run: {stats}");
    assert_eq!(app.all_events(Some("race")).await.len(), 1);
    app.shutdown().await;
}
