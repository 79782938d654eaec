//! event-aggregator: takes in events over HTTP from many publishers, drops the
//! duplicates that at-least-once delivery produces, stores every unique event
//! durably, and serves them back per topic.
//!
//! # Using the library
//! [`start`] binds, opens the database, rebuilds the dedup filter and serves,
//! returning a [`RunningApp`] whose `shutdown` runs the ordered stop; [`Config`]
//! is plain data (every flag of the `aggregator` binary). [`start_with_storage`]
//! does the same over redb backends of the caller's (tests inject storage faults
//! this way; [`Storage`] holds its two openers, [`OpenDatabase`] and
//! [`OpenJournal`]). [`api`] holds the HTTP wire
//! types, for clients such as the `publisher` binary. With [`StartError`] and
//! [`AckMode`] that is the whole surface; [`internals`] is not an API.
//!
//! # Data path
//! ```text
//! POST /publish ─▶ http::publish ─▶ decode (shape, limits, rules; all or nothing)
//!               ─▶ ingest: window of stored keys, claim in dedup (DashMap) ─▶ Bloom filter
//!                          └─ filter hit ─▶ exact check in store (blocking thread)
//!               ─▶ queue (bounded ArrayQueue, one item per request)
//!               ─▶ writer thread: one transaction per batch; a small one is made
//!                  durable by a journal frame, its redb commit skips the fsync
//!               ─▶ settler thread: filter bits, keys into the window, acks
//!                  (a batch of ≤ 64 events: the writer, while the settler is idle)
//! GET /events   ─▶ http::events ─▶ store::read_page (read transaction, MVCC)
//! ```
//! See `docs/design.md` for the invariants and where each one lives.
//!
//! # Modules (private)
//! - `config`: flags and env vars, validated values for each stage.
//! - `app`: wiring; `shutdown`: the ordered stop.
//! - `http`: router, guard, one file per endpoint with its wire types, `ApiError`.
//! - `decode`: bodies to validated events (content, wire shapes, rules);
//!   `event`: the model and its rules.
//! - `dedup`: keys in flight, the window of stored keys, Bloom filter; `ack`: per-request tickets, ack modes.
//! - `ingest`: the publish path; `queue`: the ring buffer; `writer`: group
//!   commit; `settler`: filter bits, the window's inserts and acks after each commit.
//! - `store`: redb tables, codec, open/write/read; `stats`: the figures, as
//!   events; `metrics`: `/metrics` and its histograms.

mod ack;
mod app;
mod config;
mod decode;
mod dedup;
mod event;
mod filter_snapshot;
mod http;
mod ingest;
mod metrics;
mod queue;
mod settler;
mod shutdown;
mod stats;
mod store;
mod writer;

pub use ack::AckMode;
pub use app::{RunningApp, StartError, Storage, start, start_with_storage};
pub use config::Config;
pub use store::{OpenDatabase, OpenJournal};

/// The HTTP wire types: what each endpoint takes and returns, as its handler
/// does. Responses deserialize too (borrowing where they can).
pub mod api {
    pub use crate::ack::AckMode;
    pub use crate::http::{
        Accepted, ErrorBody, ErrorItem, EventIn, EventOut, EventsPage, EventsWrapper, Health, HealthBody,
        PublishBody, PublishResponse, RETRY_AFTER_SECS, StatsBody,
    };
    pub use crate::stats::{Counter, DedupStats, Gauge, WriterStats};
}

/// Not an API: the stage types `benches/stages` drives directly, one stage at a
/// time. Nothing here is stable, and the server never needs it.
#[doc(hidden)]
pub mod internals {
    pub use crate::ack::Ticket;
    pub use crate::decode::{BodyFormat, Encoding, Limits, decode, decompress};
    pub use crate::dedup::{Claim, ClaimSet, DedupConfig, Deduper};
    pub use crate::event::{EventKey, KeyHasher};
    pub use crate::metrics::Metrics;
    pub use crate::queue::{IngestQueue, NewRecord, QueuedRequest, WhenFull};
    pub use crate::stats::Stats;
    pub use crate::store::{Head, Recovered, Row, Store, StoreConfig, codec, schema};
    pub use crate::writer::{Round, Writer, WriterConfig, WriterParts};
}
