//! The only wiring point: bind, open the store, rebuild the filter, start the
//! writer, build the router, serve. Returns a [`RunningApp`] whose `shutdown`
//! runs the ordered sequence of `shutdown`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{Config, ConfigError};
use crate::dedup::Deduper;
use crate::event::KeyHasher;
use crate::http::{self, AppState};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::queue::IngestQueue;
use crate::stats::Stats;
use crate::store::{Store, StoreError};
use crate::writer::{Writer, WriterParts};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("cannot start the writer thread: {0}")]
    Writer(std::io::Error),
}

/// A started service. Dropping it without `shutdown` leaves the server running
/// until the runtime stops; call `shutdown` for the durable sequence.
pub struct RunningApp {
    /// The bound address (the real port when `api_port` was 0).
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub(crate) parts: crate::shutdown::Parts,
}

pub async fn start(config: Config) -> Result<RunningApp, StartError> {
    config.validate()?;
    let addr = config.listen_addr();
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;

    let (store, recovered, dedup, loaded) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || open_and_rebuild(&config))
            .await
            .expect("open_and_rebuild does not panic")?
    };
    let store = Arc::new(store);
    let dedup = Arc::new(dedup);
    let stats = Arc::new(Stats::new(&recovered.head));
    let queue = Arc::new(IngestQueue::new(config.queue_capacity_requests, config.queue_capacity_events));
    let writer = Writer::spawn(WriterParts {
        store: store.clone(),
        dedup: dedup.clone(),
        queue: queue.clone(),
        stats: stats.clone(),
        config: config.writer(),
        head: recovered.head,
    })
    .map_err(StartError::Writer)?;

    let ingest = Ingest {
        dedup: dedup.clone(),
        queue: queue.clone(),
        store: store.clone(),
        stats: stats.clone(),
        hasher: KeyHasher::new(recovered.key_hash_seed),
        when_full: config.when_full(),
    };
    let metrics = Arc::new(Metrics::new(stats.clone(), queue.clone(), dedup.clone()));
    let state = Arc::new(AppState {
        ingest,
        store: store.clone(),
        metrics,
        stats,
        dedup,
        queue: queue.clone(),
        limits: config.limits(),
        default_ack: config.ack_mode,
        request_timeout: config.request_timeout(),
    });
    let router = http::router(state.clone(), config.request_timeout(), config.max_concurrent_requests);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    tracing::info!(
        %addr,
        db_path = %config.db_path.display(),
        ack_mode = ?config.ack_mode,
        keys_loaded = loaded.keys,
        open_ms = loaded.open_ms,
        rebuild_ms = loaded.rebuild_ms,
        next_seq = recovered.head.next_seq,
        filter_capacity = state.dedup.filter_capacity(),
        recent_keys_capacity = config.recent_keys_capacity,
        flush_interval_ms = config.flush_interval_ms,
        writer_batch_max_events = config.writer_batch_max_events,
        queue_capacity_events = config.queue_capacity_events,
        max_body_bytes = config.max_body_bytes,
        max_batch_events = config.max_batch_events,
        "aggregator listening; dedup filter rebuilt from disk"
    );
    let parts = crate::shutdown::Parts { stop_tx, server, queue, writer, store };
    Ok(RunningApp { addr, state, parts })
}

/// What startup read from disk, for the startup log line.
struct Loaded {
    keys: u64,
    open_ms: u64,
    rebuild_ms: u64,
}

fn open_and_rebuild(
    config: &Config,
) -> Result<(Store, crate::store::Recovered, Deduper, Loaded), StartError> {
    let path = config.db_path.display().to_string();
    let started = Instant::now();
    let (store, recovered) =
        Store::open_with(&config.db_path, config.db_cache_bytes(), config.index_merge_keys)
            .map_err(|source| StartError::Store { path: path.clone(), source })?;
    let opened_ms = started.elapsed().as_millis();
    let rebuild_started = Instant::now();
    let dedup = Deduper::new(config.dedup(), recovered.stored_keys);
    let keys = dedup
        .rebuild(|add| store.for_each_key_hash(add))
        .map_err(|source| StartError::Store { path, source })?;
    let loaded =
        Loaded { keys, open_ms: opened_ms as u64, rebuild_ms: rebuild_started.elapsed().as_millis() as u64 };
    Ok((store, recovered, dedup, loaded))
}
