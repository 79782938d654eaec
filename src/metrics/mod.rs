//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format
//! (prometheus-client). Two sources, one page:
//! - the histograms, recorded where things happen: request latency per route
//!   (the HTTP guard), writer batch size and commit latency (the settler);
//! - every counter and gauge, read at scrape time from the `/stats` body itself
//!   ([`flatten`]), so a figure's metric name is its `/stats` path and the two
//!   renderings cannot drift.

mod flatten;

use std::borrow::Cow;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

pub use flatten::{Figure, Kind, MAP_LABEL, Value, flatten};

use crate::stats::BatchCommitted;

/// Prefix of every metric name.
const PREFIX: &str = "aggregator";

/// `(route, status class)` of an HTTP request.
type RequestLabels = Vec<(&'static str, Cow<'static, str>)>;

pub struct Metrics {
    registry: Registry,
    /// HTTP guard only: one observation per request.
    request_seconds: Family<RequestLabels, Histogram>,
    /// Settling only (`Settler::settle`): one observation per committed
    /// batch.
    commit_seconds: Histogram,
    /// Settling only (`Settler::settle`): new events per committed batch.
    batch_events: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let request_seconds =
            Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register("http_request_duration_seconds", "HTTP request latency", request_seconds.clone());
        let commit_seconds = Histogram::new(latency_buckets());
        registry.register(
            "writer_commit_duration_seconds",
            "Writer transaction latency",
            commit_seconds.clone(),
        );
        let batch_events = Histogram::new(batch_buckets());
        registry.register("writer_batch_events", "New events per writer transaction", batch_events.clone());
        Metrics { registry, request_seconds, commit_seconds, batch_events }
    }

    /// HTTP guard: a request got its response.
    pub fn request_finished(&self, route: &'static str, status: u16, seconds: f64) {
        let class = Cow::Owned(format!("{}xx", status / 100));
        let labels = vec![("route", Cow::Borrowed(route)), ("status", class)];
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Settling only (`Settler::settle`): one batch's commit returned.
    pub fn batch_committed(&self, batch: &BatchCommitted) {
        self.commit_seconds.observe(batch.commit_us as f64 / 1e6);
        self.batch_events.observe(batch.unique as f64);
    }

    /// The whole page: `figures` (the `/stats` body) flattened, then the histograms.
    pub fn render(&self, figures: &impl Serialize) -> String {
        let mut out = String::new();
        let mut page = Registry::with_prefix(PREFIX);
        page.register_collector(Box::new(Figures(flatten(figures))));
        let written = prometheus_client::encoding::text::encode_registry(&mut out, &page)
            .and_then(|()| prometheus_client::encoding::text::encode_registry(&mut out, &self.registry))
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out));
        written.expect("writing to a String cannot fail");
        out
    }
}

/// 100 µs to ~3 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

/// 1 to ~32k events.
fn batch_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 2.0, 16)
}

/// The figures of one scrape, encoded as constant metrics.
#[derive(Debug)]
struct Figures(Vec<Figure>);

impl prometheus_client::collector::Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Figures of one map share a name and come one after another: one family.
        for family in self.0.chunk_by(|a, b| a.name == b.name) {
            let first = &family[0];
            let help = first.name.replace('_', " ");
            let metric_type = match first.kind {
                Kind::Counter => ConstCounter::new(0u64).metric_type(),
                Kind::Gauge => ConstGauge::new(0i64).metric_type(),
            };
            let mut descriptor = encoder.encode_descriptor(&first.name, &help, None, metric_type)?;
            if first.reason.is_none() {
                encode_value(first, descriptor)?;
                continue;
            }
            for figure in family {
                let labels = [(MAP_LABEL, figure.reason.as_deref().unwrap_or_default())];
                encode_value(figure, descriptor.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn encode_value(
    figure: &Figure,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match (figure.kind, figure.value) {
        (Kind::Counter, Value::Int(v)) => ConstCounter::new(v).encode(encoder),
        (Kind::Counter, Value::Float(v)) => ConstCounter::new(v).encode(encoder),
        (Kind::Gauge, Value::Int(v)) => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(encoder),
        (Kind::Gauge, Value::Float(v)) => ConstGauge::new(v).encode(encoder),
    }
}
