//! What every handler shares, built once by `app`.

use std::sync::Arc;
use std::time::Duration;

use crate::ack::AckMode;
use crate::decode::Limits;
use crate::dedup::Deduper;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::queue::IngestQueue;
use crate::stats::Stats;
use crate::store::Store;

pub struct AppState {
    pub ingest: Ingest,
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    pub dedup: Arc<Deduper>,
    pub queue: Arc<IngestQueue>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub default_ack: AckMode,
    /// Bounds every request; a publish only up to the queue (body, decode, disk
    /// check, enqueue), never its wait for the ack (see `guard_request`).
    pub request_timeout: Duration,
}

pub type SharedState = Arc<AppState>;
