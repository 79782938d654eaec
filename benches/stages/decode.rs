//! Validation + decoding of a 1000-event body, as a JSON array and as NDJSON.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use event_aggregator::internals::{BodyFormat, Limits};

use crate::fixtures;

fn decode(c: &mut Criterion) {
    let limits = Limits { max_body_bytes: 64 << 20, max_batch_events: 100_000, max_payload_bytes: 65_536 };
    let (json, ndjson) = fixtures::bodies(1000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1000));
    for (name, format, body) in [("json", BodyFormat::Json, &json), ("ndjson", BodyFormat::Ndjson, &ndjson)] {
        group.bench_with_input(BenchmarkId::new(name, 1000), body, |b, body| {
            b.iter(|| {
                event_aggregator::internals::decode(format, body, &limits, "2026-11-21T00:00:00Z")
                    .expect("valid")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
