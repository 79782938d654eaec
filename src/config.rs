//! Configuration: every flag has an env var and a documented unit. `Config` is
//! plain data (tests build it as a literal with `..Config::default()`, which
//! never reads the environment); the validated values the stages need are
//! derived by its methods.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::ack::AckMode;
use crate::decode::Limits;
use crate::dedup::DedupConfig;
use crate::http::ConnectionLimits;
use crate::queue::WhenFull;
use crate::store::StoreConfig;
use crate::writer::WriterConfig;

/// event-aggregator: durable, deduplicating event ingestion over HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "aggregator", version, about, long_about = None)]
pub struct Config {
    /// Path of the redb database file; its directory is created if missing.
    #[arg(long, env = "DB_PATH", default_value = "./data/aggregator.redb")]
    pub db_path: PathBuf,

    /// Address to listen on (the container sets 0.0.0.0).
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1")]
    pub api_host: IpAddr,

    /// TCP port to listen on (0 picks a free one).
    #[arg(long, env = "API_PORT", default_value_t = 8000)]
    pub api_port: u16,

    /// When a 200 is sent: `durable` (after fsync) or `buffered` (once queued).
    /// A request may override it with `?ack=`.
    #[arg(long, env = "ACK_MODE", value_enum, default_value_t = AckMode::Durable)]
    pub ack_mode: AckMode,

    /// Longest idle wait of the writer between queue checks, in milliseconds
    /// (a publish wakes it at once).
    #[arg(long, env = "FLUSH_INTERVAL_MS", default_value_t = 5)]
    pub flush_interval_ms: u64,

    /// Most events written in one transaction.
    #[arg(long, env = "WRITER_BATCH_MAX_EVENTS", default_value_t = 20_000)]
    pub writer_batch_max_events: usize,

    /// Ring buffer slots (one per request).
    #[arg(long, env = "QUEUE_CAPACITY_REQUESTS", default_value_t = 8192)]
    pub queue_capacity_requests: usize,

    /// Most events queued or being written at once (a request counts its events
    /// plus one); past it publishers wait, then get 503. Must exceed --max-batch-events.
    #[arg(long, env = "QUEUE_CAPACITY_EVENTS", default_value_t = 500_000)]
    pub queue_capacity_events: usize,

    /// How long a publish waits for room in a full queue before a 503, in milliseconds
    /// (0 = refuse at once).
    #[arg(long, env = "ENQUEUE_TIMEOUT_MS", default_value_t = 500)]
    pub enqueue_timeout_ms: u64,

    /// Keys the Bloom filter is sized for at startup (at least twice the stored keys).
    #[arg(long, env = "BLOOM_CAPACITY", default_value_t = 10_000_000)]
    pub bloom_capacity: usize,

    /// Bloom filter false-positive rate at capacity (0 < rate < 1).
    #[arg(long, env = "BLOOM_FP_RATE", default_value_t = 0.01)]
    pub bloom_fp_rate: f64,

    /// About how many committed keys the window of recent keys keeps
    /// (duplicates of these are decided without any disk access; ~65 B a key).
    #[arg(long, env = "RECENT_KEYS_CAPACITY", default_value_t = 1_000_000)]
    pub recent_keys_capacity: usize,

    /// Largest request body, in bytes, both as sent and after decompression.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most events in one request.
    #[arg(long, env = "MAX_BATCH_EVENTS", default_value_t = 10_000)]
    pub max_batch_events: usize,

    /// Largest `payload`, in bytes of JSON text.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_payload_bytes: usize,

    /// Longest time a request may take before a 503, in milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Most requests handled at once; past it clients get 429 with Retry-After
    /// (`/health` is never refused).
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 4096)]
    pub max_concurrent_requests: usize,

    /// Most open client connections; past it new ones wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Longest time a request's headers may take to arrive, from their first byte,
    /// in milliseconds; a slower client is disconnected.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Longest time a keep-alive connection may sit with no request, in
    /// milliseconds; then it is closed.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// New keys kept in the append-only key log (mirrored in memory, and reloaded
    /// at start) before it is merged into the small sorted run of the on-disk
    /// index (spread over 4 to 16 batches). Higher: cheaper writes, more memory
    /// (about 35 bytes a key) and a longer start.
    #[arg(long, env = "INDEX_MERGE_KEYS", default_value_t = 262_144)]
    pub index_merge_keys: usize,

    /// A batch whose journal frame is at most this many bytes is made durable by
    /// one append + fdatasync of `<db>.journal` and committed to redb without
    /// fsync (replayed from the journal after a crash); larger batches use redb's
    /// durable commit. 0 turns the journal off.
    #[arg(long, env = "JOURNAL_MAX_FRAME_BYTES", default_value_t = crate::store::DEFAULT_JOURNAL_MAX_FRAME_BYTES)]
    pub journal_max_frame_bytes: usize,

    /// Bearer token that `POST /publish`, `GET /events`, `/stats` and `/metrics`
    /// require (`Authorization: Bearer <token>`); unset or empty: no authentication.
    #[arg(long, env = "AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// File holding the bearer token (surrounding whitespace is ignored); used when
    /// `AUTH_TOKEN` is unset.
    #[arg(long, env = "AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// redb page cache, in MiB. The OS page cache holds the file as well; a
    /// larger cache made ingestion slower here (docs/perf.md, session 13).
    #[arg(long, env = "DB_CACHE_MB", default_value_t = 64)]
    pub db_cache_mb: usize,
}

impl Default for Config {
    /// The documented defaults, whatever the environment holds: with `API_HOST`
    /// or `ACK_MODE` set (as the container sets them), a test built on this must
    /// not change its behaviour silently. Only the binary reads the environment.
    fn default() -> Self {
        let command = Config::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(["aggregator"]).expect("the defaults parse");
        Config::from_arg_matches(&matches).expect("the defaults are valid")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(&'static str);

impl Config {
    /// Check the values clap cannot check by type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            (self.writer_batch_max_events, "--writer-batch-max-events must be > 0"),
            (self.queue_capacity_requests, "--queue-capacity-requests must be > 0"),
            (self.queue_capacity_events, "--queue-capacity-events must be > 0"),
            (self.max_batch_events, "--max-batch-events must be > 0"),
            (self.max_body_bytes, "--max-body-bytes must be > 0"),
            (self.max_concurrent_requests, "--max-concurrent-requests must be > 0"),
            (self.max_connections, "--max-connections must be > 0"),
            (self.bloom_capacity, "--bloom-capacity must be > 0"),
        ];
        if let Some((_, msg)) = nonzero.iter().find(|(v, _)| *v == 0) {
            return Err(ConfigError(msg));
        }
        if self.queue_capacity_events <= self.max_batch_events {
            // A request costs its events plus one: the largest must fit an empty queue.
            return Err(ConfigError("--queue-capacity-events must exceed --max-batch-events"));
        }
        if !(self.bloom_fp_rate > 0.0 && self.bloom_fp_rate < 1.0) {
            return Err(ConfigError("--bloom-fp-rate must be between 0 and 1"));
        }
        if self.flush_interval_ms == 0 || self.request_timeout_ms == 0 {
            return Err(ConfigError("--flush-interval-ms and --request-timeout-ms must be > 0"));
        }
        if self.header_read_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return Err(ConfigError("--header-read-timeout-ms and --idle-timeout-ms must be > 0"));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.api_host, self.api_port)
    }
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_batch_events: self.max_batch_events,
            max_payload_bytes: self.max_payload_bytes,
        }
    }
    pub fn dedup(&self) -> DedupConfig {
        DedupConfig {
            recent_capacity: self.recent_keys_capacity,
            filter_capacity: self.bloom_capacity,
            filter_fp_rate: self.bloom_fp_rate,
        }
    }
    pub fn writer(&self) -> WriterConfig {
        WriterConfig {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_batch_events: self.writer_batch_max_events,
        }
    }
    pub fn when_full(&self) -> WhenFull {
        match self.enqueue_timeout_ms {
            0 => WhenFull::Reject,
            ms => WhenFull::Wait(Duration::from_millis(ms)),
        }
    }
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn db_cache_bytes(&self) -> usize {
        self.db_cache_mb.saturating_mul(1024 * 1024)
    }
    /// The bearer token in force: `AUTH_TOKEN`, else the contents of
    /// `AUTH_TOKEN_FILE`, else none (empty counts as none).
    pub fn bearer_token(&self) -> std::io::Result<Option<String>> {
        let token = match (&self.auth_token, &self.auth_token_file) {
            (Some(token), _) if !token.trim().is_empty() => token.trim().to_owned(),
            (_, Some(path)) => {
                let token = std::fs::read_to_string(path)?.trim().to_owned();
                // A secret that was not mounted must not turn authentication off.
                if token.is_empty() {
                    return Err(std::io::Error::other(format!("{} is empty", path.display())));
                }
                token
            }
            _ => return Ok(None),
        };
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(std::io::Error::other("the bearer token must be printable ASCII without spaces"));
        }
        Ok(Some(token))
    }
    /// The store on redb's file backend at `db_path`.
    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            merge_threshold: self.index_merge_keys,
            journal_max_frame_bytes: self.journal_max_frame_bytes,
            ..StoreConfig::new(&self.db_path, self.db_cache_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = Config::default();
        assert_eq!(c.db_path, PathBuf::from("./data/aggregator.redb"));
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:8000");
        assert_eq!(c.ack_mode, AckMode::Durable);
        assert_eq!(c.max_payload_bytes, 65536);
        assert_eq!(c.bloom_capacity, 10_000_000);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::try_parse_from(["aggregator", "--ack-mode", "maybe"]).is_err());
        let c = Config { bloom_fp_rate: 1.5, ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { max_batch_events: 0, ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { queue_capacity_events: 100, max_batch_events: 100, ..Config::default() };
        assert!(c.validate().is_err(), "the largest request must fit the queue's budget");
    }
}
