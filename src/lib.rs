//! event-aggregator: takes in events over HTTP from many publishers, drops the
//! duplicates that at-least-once delivery produces, stores every unique event
//! durably, and serves them back per topic.
//!
//! # Data path
//! ```text
//! POST /publish ─▶ http::publish ─▶ decode (shape, limits, rules; all or nothing)
//!               ─▶ ingest: claim keys in dedup (DashMap) ─▶ Bloom filter
//!                          └─ filter hit ─▶ exact check in store (blocking thread)
//!               ─▶ queue (bounded ArrayQueue, one item per request)
//!               ─▶ writer thread: one redb transaction per batch, commit
//!               ─▶ settler thread: filter bits, keys Committed, acks, eviction
//! GET /events   ─▶ http::events ─▶ store::read_page (read transaction, MVCC)
//! ```
//! See `docs/design.md` for the invariants and where each one lives.
//!
//! # Modules
//! - [`config`]: flags and env vars, validated values for each stage.
//! - [`app`]: wiring; [`shutdown`]: the ordered stop.
//! - [`http`]: router, handlers, `ApiError`.
//! - [`decode`]: bodies to validated [`event::Event`]s; [`event`]: the model and rules.
//! - [`dedup`]: recent-key map and Bloom filter; [`ack`]: per-request tickets.
//! - [`ingest`]: the publish path; [`queue`]: the ring buffer; [`writer`]: group commit;
//!   [`settler`]: acks and in-memory bookkeeping after each commit.
//! - [`store`]: redb tables, codec, reads; [`stats`]: counters; [`metrics`]: `/metrics`.
//! - [`publisher`]: the load simulator behind the `publisher` binary.

pub mod ack;
pub mod app;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod event;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod publisher;
pub mod queue;
pub mod settler;
pub mod shutdown;
pub mod stats;
pub mod store;
pub mod writer;

pub use app::{RunningApp, StartError, start};
pub use config::Config;
