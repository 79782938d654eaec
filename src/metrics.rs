//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format
//! (prometheus-client). Counters and gauges are read at scrape time from `Stats`,
//! the queue and the dedup state, so each figure has one source of truth;
//! histograms (request latency per route, writer batch size and commit latency)
//! are recorded where they happen.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::dedup::Deduper;
use crate::queue::IngestQueue;
use crate::stats::Stats;

/// `(route, status class)` of an HTTP request.
type RequestLabels = Vec<(&'static str, Cow<'static, str>)>;

pub struct Metrics {
    registry: Registry,
    /// Observed by the HTTP guard for every request.
    pub request_seconds: Family<RequestLabels, Histogram>,
    /// Refused requests by reason (the HTTP guard, from the status code).
    pub rejected: Family<Vec<(&'static str, &'static str)>, prometheus_client::metrics::counter::Counter>,
}

impl Metrics {
    pub fn new(stats: Arc<Stats>, queue: Arc<IngestQueue>, dedup: Arc<Deduper>) -> Self {
        let mut registry = Registry::with_prefix("aggregator");
        let request_seconds =
            Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register("http_request_duration_seconds", "HTTP request latency", request_seconds.clone());
        let rejected = Family::default();
        registry.register("requests_rejected", "Requests refused, by reason", rejected.clone());
        registry.register(
            "writer_commit_duration_seconds",
            "Writer transaction latency",
            stats.commit_seconds.clone(),
        );
        registry.register(
            "writer_batch_events",
            "New events per writer transaction",
            stats.batch_events.clone(),
        );
        registry.register_collector(Box::new(StateCollector { stats, queue, dedup }));
        Metrics { registry, request_seconds, rejected }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// 100 µs to ~3 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

/// 1 to ~32k events.
pub fn batch_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 2.0, 16)
}

/// Reads the live counters and gauges on each scrape.
struct StateCollector {
    stats: Arc<Stats>,
    queue: Arc<IngestQueue>,
    dedup: Arc<Deduper>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let (received, unique, duplicates) = s.counts();
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let metric = ConstCounter::new(v);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        counter(&mut encoder, "events_received", "Valid events of acknowledged requests", received)?;
        counter(&mut encoder, "events_stored", "Unique events stored", unique)?;
        counter(&mut encoder, "events_duplicate", "Duplicate events dropped", duplicates)?;
        let decisions = [
            ("duplicate_memory", s.duplicates_in_memory.load(Relaxed)),
            ("duplicate_disk_check", s.duplicates_on_disk.load(Relaxed)),
            ("new_filter_negative", s.filter_negatives.load(Relaxed)),
            ("new_filter_false_positive", s.filter_false_positives.load(Relaxed)),
        ];
        let metric = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "dedup_decisions",
            "Dedup decisions since start, by how they were made",
            None,
            metric.metric_type(),
        )?;
        for (decision, value) in decisions {
            ConstCounter::new(value).encode(family.encode_family(&[("decision", decision)])?)?;
        }
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let metric = ConstGauge::new(v);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        let as_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(&mut encoder, "queue_depth", "Requests in the ring buffer", as_i64(self.queue.len()))?;
        gauge(
            &mut encoder,
            "queue_events_in_flight",
            "Events queued or being written",
            as_i64(self.queue.in_flight()),
        )?;
        gauge(&mut encoder, "recent_keys", "Keys in the recent-key map", as_i64(self.dedup.recent_len()))?;
        let items = i64::try_from(self.dedup.filter_items()).unwrap_or(i64::MAX);
        gauge(&mut encoder, "bloom_filter_items", "Keys added to the Bloom filter", items)?;
        gauge(
            &mut encoder,
            "bloom_filter_capacity",
            "Keys the Bloom filter is sized for",
            as_i64(self.dedup.filter_capacity()),
        )?;
        let running = i64::from(s.writer_running.load(Relaxed));
        gauge(&mut encoder, "writer_running", "1 while the writer thread runs", running)?;
        counter(
            &mut encoder,
            "writer_commit_failures",
            "Failed commits",
            s.writer_commit_failures.load(Relaxed),
        )
    }
}
