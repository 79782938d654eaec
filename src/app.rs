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

    let (store, recovered, dedup) = {
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
    let state = Arc::new(AppState {
        ingest,
        store: store.clone(),
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
    tracing::info!(%addr, db_path = %config.db_path.display(), ack_mode = ?config.ack_mode, "listening");
    let parts = crate::shutdown::Parts { stop_tx, server, queue, writer, store };
    Ok(RunningApp { addr, state, parts })
}

fn open_and_rebuild(config: &Config) -> Result<(Store, crate::store::Recovered, Deduper), StartError> {
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
    tracing::info!(
        keys,
        rebuild_ms = rebuild_started.elapsed().as_millis() as u64,
        open_ms = opened_ms as u64,
        filter_capacity = dedup.filter_capacity(),
        next_seq = recovered.head.next_seq,
        "dedup filter rebuilt from disk"
    );
    Ok((store, recovered, dedup))
}
