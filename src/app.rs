//! The only wiring point: bind, open the store, load the filter (snapshot or scan), start the
//! writer and settler, build the router, serve. Returns a [`RunningApp`] whose
//! `shutdown` runs the ordered sequence of `shutdown`.

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
use crate::store::{OpenDatabase, OpenError, OpenJournal, ReadError, Recovered, Store};
use crate::writer::WriterParts;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Store { path: String, source: OpenError },
    #[error("cannot read the stored keys of {path}: {source}")]
    Rebuild { path: String, source: ReadError },
    #[error("cannot start the writer thread: {0}")]
    Writer(std::io::Error),
    #[error("cannot read the bearer token file: {0}")]
    TokenFile(std::io::Error),
}

/// A started service. Dropping it without `shutdown` leaves the server running
/// until the runtime stops; call `shutdown` for the durable sequence.
pub struct RunningApp {
    /// The bound address (the real port when `api_port` was 0).
    pub addr: SocketAddr,
    parts: crate::shutdown::Parts,
}

impl RunningApp {
    /// Stop accepting, drain, flush and close the database, in the order
    /// `shutdown` documents. Returns once the database file is closed.
    pub async fn shutdown(self) {
        crate::shutdown::run(self.parts).await;
    }
}

/// Start the service on redb's file backend at `config.db_path`.
pub async fn start(config: Config) -> Result<RunningApp, StartError> {
    start_on(config, None).await
}

/// The files under the service, opened by the caller: the redb database and the
/// journal beside it, e.g. over wrapped redb `StorageBackend`s.
#[derive(Clone)]
pub struct Storage {
    pub database: Arc<OpenDatabase>,
    pub journal: Arc<OpenJournal>,
}

/// Start the service with its files opened (and, after an I/O error, reopened)
/// by `storage`.
pub async fn start_with_storage(config: Config, storage: Storage) -> Result<RunningApp, StartError> {
    start_on(config, Some(storage)).await
}

async fn start_on(config: Config, storage: Option<Storage>) -> Result<RunningApp, StartError> {
    config.validate()?;
    let token = config.bearer_token().map_err(StartError::TokenFile)?;
    let addr = config.listen_addr();
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;

    let (store, recovered, dedup, loaded) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || open_and_rebuild(&config, storage))
            .await
            .expect("open_and_rebuild does not panic")?
    };
    let store = Arc::new(store);
    let dedup = Arc::new(dedup);
    let stats = Arc::new(Stats::new(&recovered.head));
    let metrics = Arc::new(Metrics::new());
    let queue = Arc::new(IngestQueue::new(config.queue_capacity_requests, config.queue_capacity_events));
    let threads = crate::writer::spawn(WriterParts {
        store: store.clone(),
        dedup: dedup.clone(),
        queue: queue.clone(),
        stats: stats.clone(),
        metrics: metrics.clone(),
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
        stats: stats.clone(),
        dedup: dedup.clone(),
        queue: queue.clone(),
        metrics,
        limits: config.limits(),
        default_ack: config.ack_mode,
        request_timeout: config.request_timeout(),
    });
    let router =
        http::router(state, config.request_timeout(), config.max_concurrent_requests, token.as_deref());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let limits = config.connection_limits();
    let server = tokio::spawn(http::serve(listener, router, limits, async move {
        let _ = stop_rx.await;
    }));
    log_started(&config, addr, &recovered, &loaded, &dedup, token.is_some());
    let filter = crate::shutdown::FilterSaving {
        dedup,
        path: crate::filter_snapshot::path_for(&config.db_path),
        key_hash_seed: recovered.key_hash_seed,
    };
    let parts = crate::shutdown::Parts { stop_tx, server, queue, threads, store, stats, filter };
    Ok(RunningApp { addr, parts })
}

/// What startup read from disk, for the startup log line.
struct Loaded {
    /// Keys whose filter bits were set by a scan (all of them without a snapshot).
    keys: u64,
    from_snapshot: bool,
    open_ms: u64,
    rebuild_ms: u64,
}

fn open_and_rebuild(
    config: &Config,
    storage: Option<Storage>,
) -> Result<(Store, Recovered, Deduper, Loaded), StartError> {
    let path = config.db_path.display().to_string();
    let started = Instant::now();
    let store_config = crate::store::StoreConfig {
        open_database: storage.as_ref().map(|s| s.database.clone()),
        open_journal: storage.map(|s| s.journal),
        ..config.store()
    };
    let (store, recovered) =
        Store::open(store_config).map_err(|source| StartError::Store { path: path.clone(), source })?;
    let opened_ms = started.elapsed().as_millis();
    let rebuild_started = Instant::now();
    let (dedup, keys, from_snapshot) =
        rebuild_filter(config, &store, &recovered).map_err(|source| StartError::Rebuild { path, source })?;
    let rebuild_ms = rebuild_started.elapsed().as_millis() as u64;
    let loaded = Loaded { keys, from_snapshot, open_ms: opened_ms as u64, rebuild_ms };
    Ok((store, recovered, dedup, loaded))
}

/// The dedup filter at startup: the saved one (`filter_snapshot`) topped up with
/// the keys of the records after it, or, without a usable one, the full scan of
/// the key index. Returns the filter, the keys scanned, and which way it went.
fn rebuild_filter(
    config: &Config,
    store: &Store,
    recovered: &Recovered,
) -> Result<(Deduper, u64, bool), ReadError> {
    let seed = recovered.key_hash_seed;
    let saved = crate::filter_snapshot::load(&crate::filter_snapshot::path_for(&config.db_path), seed)
        .filter(|s| s.covers_next_seq <= recovered.head.next_seq);
    if let Some(saved) = saved {
        let covers = saved.covers_next_seq;
        // Exactly the stored keys (one per stored event). `recovered.stored_keys`
        // counts a log merge's keys twice (the key log and the upper run) while one is under way: at
        // 10M keys that once judged a fitting snapshot outgrown and rescanned (9 s).
        let stored_keys = recovered.head.unique;
        if let Some(dedup) = Deduper::from_snapshot(config.dedup(), stored_keys, saved.bytes, saved.items) {
            let hasher = KeyHasher::new(seed);
            let keys = dedup.rebuild(|add| {
                store.for_each_key_from(covers, &mut |topic, id| add(hasher.hash(topic, id)))
            })?;
            return Ok((dedup, keys, true));
        }
    }
    let dedup = Deduper::new(config.dedup(), recovered.stored_keys);
    let keys = dedup.rebuild(|add| store.for_each_key_hash(add))?;
    Ok((dedup, keys, false))
}

fn log_started(
    config: &Config,
    addr: SocketAddr,
    recovered: &Recovered,
    loaded: &Loaded,
    dedup: &Deduper,
    token_set: bool,
) {
    tracing::info!(
        %addr,
        db_path = %config.db_path.display(),
        ack_mode = ?config.ack_mode,
        auth = if token_set { "bearer token" } else { "off" },
        keys_scanned = loaded.keys,
        filter_from_snapshot = loaded.from_snapshot,
        open_ms = loaded.open_ms,
        rebuild_ms = loaded.rebuild_ms,
        next_seq = recovered.head.next_seq,
        filter_capacity = dedup.filter_capacity(),
        recent_keys_capacity = config.recent_keys_capacity,
        flush_interval_ms = config.flush_interval_ms,
        writer_batch_max_events = config.writer_batch_max_events,
        queue_capacity_events = config.queue_capacity_events,
        max_body_bytes = config.max_body_bytes,
        max_batch_events = config.max_batch_events,
        "aggregator listening; dedup filter loaded"
    );
}
