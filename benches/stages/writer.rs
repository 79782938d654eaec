//! The writer: events/s for batches of 100, 1,000 and 10,000 new events, on an
//! empty database and on one already holding 1M events. Beside it,
//! `redb_naive_layout`: the same rows inserted into redb directly in the layout
//! the store started with and left (one `events` row and one dedup-index row per
//! event, one transaction, commit), with no writer logic. The ratio shows what
//! the store's layout (chunks, runs, key log) buys over inserting per event.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use event_aggregator::AckMode;
use event_aggregator::internals::Ticket;
use event_aggregator::internals::schema::EVENTS;
use event_aggregator::internals::schema::legacy::KEY_INDEX;
use event_aggregator::internals::{Claim, ClaimSet, DedupConfig, Deduper};
use event_aggregator::internals::{EventKey, KeyHasher};
use event_aggregator::internals::{
    IngestQueue, Metrics, NewRecord, QueuedRequest, Round, Stats, WhenFull, Writer, WriterConfig, WriterParts,
};
use redb::Database;

use crate::fixtures;

const SIZES: [u64; 3] = [100, 1_000, 10_000];

fn writer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("writer::Writer");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    for (label, prefill) in [("empty", 0u64), ("1M", 1_000_000)] {
        let (_dir, store, recovered) = fixtures::filled_store(prefill);
        let hasher = KeyHasher::new(recovered.key_hash_seed);
        let config =
            DedupConfig { recent_capacity: 100_000, filter_capacity: 10_000_000, filter_fp_rate: 0.01 };
        let dedup = Arc::new(Deduper::new(config, prefill));
        let queue = Arc::new(IngestQueue::new(1024, 1 << 30));
        let stats = Arc::new(Stats::new(&recovered.head));
        let writer_config =
            WriterConfig { flush_interval: Duration::from_millis(5), max_batch_events: 1 << 20 };
        let (mut writer, settler) = Writer::with_settler_thread(WriterParts {
            store: store.clone(),
            dedup: dedup.clone(),
            queue: queue.clone(),
            stats,
            metrics: Arc::new(Metrics::new()),
            config: writer_config,
            head: recovered.head,
        })
        .expect("writer and settler start");
        let mut next = prefill;
        for size in SIZES {
            group.throughput(Throughput::Elements(size));
            group.bench_function(BenchmarkId::new(format!("writer_{label}"), size), |b| {
                b.iter_batched(
                    || {
                        let keys: Vec<EventKey> =
                            (next..next + size).map(|n| fixtures::key(hasher, n)).collect();
                        next += size;
                        let item = queued_request(&dedup, keys);
                        runtime.block_on(queue.push(item, WhenFull::Reject)).expect("room");
                    },
                    |()| assert_eq!(writer.flush_once(), Round::Settled),
                    BatchSize::PerIteration,
                )
            });
        }
        drop(writer);
        settler.join().expect("the settler thread ends with its writer");
        drop(store);

        let (_raw_dir, db) = raw_db(prefill);
        let mut next = prefill;
        for size in SIZES {
            group.throughput(Throughput::Elements(size));
            group.bench_function(BenchmarkId::new(format!("redb_naive_layout_{label}"), size), |b| {
                b.iter_batched(
                    || {
                        let rows: Vec<(u64, Vec<u8>)> = (next..next + size)
                            .map(|n| {
                                let key = fixtures::key(hasher, n);
                                (key.hash(), fixtures::record(&key))
                            })
                            .collect();
                        let first_seq = next + 1;
                        next += size;
                        (first_seq, rows)
                    },
                    |(first_seq, rows)| insert_direct(&db, first_seq, &rows),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

/// One request's item holding `keys` as new events, claimed like the handler does.
fn queued_request(dedup: &Arc<Deduper>, keys: Vec<EventKey>) -> QueuedRequest {
    let ticket = Ticket::new();
    let mut claims = ClaimSet::new(dedup.clone(), ticket.clone());
    let mut records = Vec::with_capacity(keys.len());
    for key in keys {
        assert!(matches!(dedup.claim(&key, &ticket), Claim::Won(_)));
        claims.push(key.clone());
        records.push(NewRecord { bytes: fixtures::record(&key), key });
    }
    QueuedRequest { records, duplicates: 0, twins: Vec::new(), claims, ack: AckMode::Durable }
}

fn raw_db(prefill: u64) -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db =
        Database::builder().set_cache_size(256 << 20).create(dir.path().join("raw.redb")).expect("create");
    let hasher = KeyHasher::new(1);
    let mut seq = 1;
    while seq <= prefill {
        let end = (seq + 50_000).min(prefill + 1);
        let rows: Vec<(u64, Vec<u8>)> = (seq..end)
            .map(|n| {
                let key = fixtures::key(hasher, n);
                (key.hash(), fixtures::record(&key))
            })
            .collect();
        insert_direct(&db, seq, &rows);
        seq = end;
    }
    (dir, db)
}

fn insert_direct(db: &Database, first_seq: u64, rows: &[(u64, Vec<u8>)]) {
    let txn = db.begin_write().expect("txn");
    {
        let mut events = txn.open_table(EVENTS).expect("events");
        let mut index = txn.open_table(KEY_INDEX).expect("index");
        for (i, (hash, bytes)) in rows.iter().enumerate() {
            let seq = first_seq + i as u64;
            events.insert(seq, bytes.as_slice()).expect("insert");
            index.insert((*hash, seq), ()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

criterion_group!(benches, writer);
