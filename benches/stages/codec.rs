//! bincode encode/decode of one record.

use criterion::{Criterion, Throughput, criterion_group};
use event_aggregator::internals::KeyHasher;
use event_aggregator::internals::codec;

use crate::fixtures;

fn codec(c: &mut Criterion) {
    let key = fixtures::key(KeyHasher::new(1), 42);
    let bytes = fixtures::record(&key);
    let mut group = c.benchmark_group("store::codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| b.iter(|| fixtures::record(std::hint::black_box(&key))));
    group
        .bench_function("decode", |b| b.iter(|| codec::decode(std::hint::black_box(&bytes)).expect("valid")));
    group.finish();
}

criterion_group!(benches, codec);
