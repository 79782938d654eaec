//! The hot path: a request's claims (`claim_all`, as the handlers make them) and
//! filter checks, for batches of 1000 keys at 0, 20 and 90 % duplicates, with a
//! Bloom filter holding 1M and 10M keys.
//!
//! Duplicates are keys stored in the recent map (decided in memory); new keys
//! are fresh and absent from the filter. Each iteration claims a batch, checks the
//! filter for the won keys, then releases them, so the map stays the same size.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use event_aggregator::internals::Ticket;
use event_aggregator::internals::{Claim, ClaimSet, DedupConfig, Deduper};
use event_aggregator::internals::{EventKey, KeyHasher};

use crate::fixtures;

const BATCH: usize = 1000;
const RECENT: u64 = 100_000;

fn prepared(filter_keys: u64) -> (Arc<Deduper>, Vec<EventKey>) {
    let config =
        DedupConfig { recent_capacity: 1 << 20, filter_capacity: filter_keys as usize, filter_fp_rate: 0.01 };
    let dedup = Arc::new(Deduper::new(config, 0));
    dedup
        .rebuild(|add| {
            (0..filter_keys).for_each(|n| add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            Ok::<u64, ()>(filter_keys)
        })
        .expect("infallible");
    let hasher = KeyHasher::new(7);
    let stored: Vec<EventKey> = (0..RECENT).map(|n| fixtures::key(hasher, n)).collect();
    let ticket = Ticket::new();
    let mut set = ClaimSet::new(dedup.clone(), ticket.clone());
    for k in &stored {
        dedup.claim(k, &ticket);
        set.push(k.clone());
    }
    dedup.add_to_filter(stored.iter());
    set.mark_stored();
    (dedup, stored)
}

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup::Deduper");
    group.throughput(Throughput::Elements(BATCH as u64));
    let hasher = KeyHasher::new(7);
    for filter_keys in [1_000_000u64, 10_000_000] {
        let (dedup, stored) = prepared(filter_keys);
        for dup_pct in [0usize, 20, 90] {
            let mut fresh = 1u64 << 40;
            let id = BenchmarkId::new(
                format!("claim_filter_{}M", filter_keys / 1_000_000),
                format!("dup{dup_pct}"),
            );
            group.bench_function(id, |b| {
                b.iter_batched(
                    || {
                        (0..BATCH)
                            .map(|i| {
                                if i * 100 < dup_pct * BATCH {
                                    stored[(i * 7919) % stored.len()].clone()
                                } else {
                                    fresh += 1;
                                    fixtures::key(hasher, fresh)
                                }
                            })
                            .collect::<Vec<_>>()
                    },
                    |keys| {
                        let ticket = Ticket::new();
                        let mut claims = ClaimSet::new(dedup.clone(), ticket.clone());
                        let parts: Vec<_> = keys.iter().map(EventKey::parts).collect();
                        for claim in dedup.claim_all(&parts, &ticket) {
                            if let Claim::Won(owned) = claim {
                                claims.push(owned);
                            }
                        }
                        let won: Vec<&EventKey> = claims.keys().iter().collect();
                        let maybe = dedup.maybe_stored(&won);
                        drop(claims);
                        maybe
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hot_path);
