//! The publisher's flags; each has an environment variable where the compose
//! demo sets it.

use clap::Parser;
use event_aggregator::AckMode;

/// Load simulator for event-aggregator: sends events with a chosen duplicate
/// rate and checks the server's counters against what it acknowledged.
#[derive(Debug, Clone, Parser)]
#[command(name = "publisher", version, long_about = None)]
pub struct Args {
    /// Base URL of the aggregator.
    #[arg(long, env = "AGGREGATOR_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Events to send in total, duplicates included.
    #[arg(long, env = "EVENTS", default_value_t = 5000)]
    pub events: usize,
    /// Fraction of sent events that repeat an earlier (topic, event_id) of the run.
    #[arg(long, env = "DUP_RATE", default_value_t = 0.2)]
    pub duplicate: f64,
    /// Number of distinct topics.
    #[arg(long, env = "TOPICS", default_value_t = 10)]
    pub topics: usize,
    /// Topic names are `<prefix>.<n>`.
    #[arg(long, default_value = "sim")]
    pub topic_prefix: String,
    /// Events per request (1 = one event object per request).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1)]
    pub batch_size: usize,
    /// Body format for batches.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Requests in flight at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Approximate size of each event's payload, in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Send bodies gzip-compressed.
    #[arg(long)]
    pub gzip: bool,
    /// Ack mode asked of the server (`?ack=`); the server default if absent.
    #[arg(long, value_enum)]
    pub ack: Option<AckMode>,
    /// Seed of the workload (reproducible runs; event ids still differ per run).
    #[arg(long, env = "SEED", default_value_t = 42)]
    pub seed: u64,
    /// Stop sending new requests after this many seconds.
    #[arg(long)]
    pub duration_limit: Option<f64>,
    /// Requests per second to aim for, across all connections (open loop: each
    /// request has a scheduled start, and its latency counts from there, so a
    /// server falling behind shows in the percentiles). Unset: as fast as the
    /// server answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write one byte per distinct key of the run to this file, in the order of
    /// the ids (`<run-id>-<n>`): 1 if an acknowledged request carried it. For an
    /// outside check that every acknowledged event is stored (`scripts/soak.py`).
    #[arg(long)]
    pub acked_out: Option<std::path::PathBuf>,
    /// Retries of one request on 503/429 or connection errors before giving up.
    #[arg(long, default_value_t = 20)]
    pub max_retries: u32,
    /// Wait up to this many seconds for `/health` before starting.
    #[arg(long, env = "WAIT_READY_SECS", default_value_t = 30)]
    pub wait_ready_secs: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Event id prefix. Random per run by default, so runs never collide; reuse one
    /// to re-send a stored set (every event a duplicate).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Bearer token, for a server started with `AUTH_TOKEN` (empty: none).
    #[arg(long, env = "AUTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Skip the `/stats` self-check (for servers that keep no counters).
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Ndjson,
}
