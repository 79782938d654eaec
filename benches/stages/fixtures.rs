//! Shared setup: stores filled with N events, events and bodies of a given shape.

use std::sync::Arc;

use event_aggregator::internals::{EventKey, KeyHasher};
use event_aggregator::internals::{Head, Recovered, Row, Store, StoreConfig, codec};
use tempfile::TempDir;

pub const PAYLOAD: &str = r#"{"temperature": 31.4, "humidity": 80, "room": "r1"}"#;

pub fn record(key: &EventKey) -> Vec<u8> {
    codec::encode(&codec::Record {
        topic: key.topic(),
        event_id: key.event_id(),
        timestamp: "2026-11-21T10:00:00Z",
        source: "bench",
        payload: PAYLOAD,
        received_at_us: 1_795_000_000_000_000,
    })
}

pub fn key(hasher: KeyHasher, n: u64) -> EventKey {
    EventKey::new(hasher, format!("sensor.room{}.temp", n % 16), format!("evt-{n:012}"))
}

/// A store in a temp dir holding `events` events (keys `0..events`).
pub fn filled_store(events: u64) -> (TempDir, Arc<Store>, Recovered) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, mut recovered) =
        Store::open(StoreConfig::new(dir.path().join("bench.redb"), 256 << 20)).expect("open");
    let hasher = KeyHasher::new(recovered.key_hash_seed);
    let mut head: Head = recovered.head;
    let mut n = 0;
    while n < events {
        let chunk = (events - n).min(50_000);
        let keys: Vec<_> = (n..n + chunk).map(|i| key(hasher, i)).collect();
        let bytes: Vec<_> = keys.iter().map(record).collect();
        let rows = keys.iter().zip(&bytes).map(|(key, bytes)| Row::new(key, bytes));
        store.append(&mut head, rows, 0).expect("append");
        n += chunk;
    }
    recovered.head = head;
    recovered.stored_keys = events;
    (dir, Arc::new(store), recovered)
}

/// `n` wire events as a JSON array and as NDJSON.
pub fn bodies(n: usize) -> (Vec<u8>, Vec<u8>) {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"topic":"sensor.room{}.temp","event_id":"evt-{i:012}","timestamp":"2026-11-21T10:00:00Z","source":"bench","payload":{PAYLOAD}}}"#,
                i % 16
            )
        })
        .collect();
    (format!("[{}]", events.join(",")).into_bytes(), (events.join("\n") + "\n").into_bytes())
}
