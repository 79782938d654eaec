//! Startup: rebuild the Bloom filter from 1M stored keys.

use criterion::{Criterion, Throughput, criterion_group};
use event_aggregator::internals::{DedupConfig, Deduper};

use crate::fixtures;

const KEYS: u64 = 1_000_000;

fn rebuild(c: &mut Criterion) {
    let (_dir, store, _) = fixtures::filled_store(KEYS);
    let config = DedupConfig { recent_capacity: 1 << 20, filter_capacity: 10_000_000, filter_fp_rate: 0.01 };
    let mut group = c.benchmark_group("startup::rebuild");
    group.sample_size(10).throughput(Throughput::Elements(KEYS));
    group.bench_function("filter_from_1M_keys", |b| {
        b.iter(|| {
            let dedup = Deduper::new(config, KEYS);
            dedup.rebuild(|add| store.for_each_key_hash(add)).expect("scan")
        })
    });
    group.finish();
}

criterion_group!(benches, rebuild);
