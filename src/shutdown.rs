//! The ordered shutdown. Each step finishes before the next starts:
//! 1. Stop accepting connections (signal `http::serve`'s graceful shutdown).
//! 2. `http::serve` closes idle connections and drains in-flight handlers. The writer and the settler are still alive,
//!    so the acks those handlers wait for still arrive; the request timeout
//!    bounds this step.
//! 3. Close the queue. The writer drains it, commits, checkpoints the journal
//!    (redb's durable commit, so the next start replays nothing), and exits,
//!    dropping its end of the settler's channel.
//! 4. Join the writer thread.
//! 5. Join the settler thread: it has settled every committed batch (filter
//!    bits, counters, acks) and seen its channel close.
//! 6. Save the Bloom filter (`filter_snapshot`) if both threads ended cleanly
//!    and the last commit succeeded: every stored key is then in it.
//! 7. Drop the `Database`, which releases the file lock.
//!
//! Done means joined handles, never sleeps. Called by `RunningApp::shutdown`.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::dedup::Deduper;
use crate::filter_snapshot::{self, FilterSnapshot};
use crate::queue::IngestQueue;
use crate::stats::Stats;
use crate::store::Store;
use crate::writer::WriterThreads;

/// What the sequence stops, in order.
pub(crate) struct Parts {
    /// Sending (or dropping) tells axum to stop accepting and drain.
    pub stop_tx: oneshot::Sender<()>,
    pub server: JoinHandle<std::io::Result<()>>,
    pub queue: Arc<IngestQueue>,
    pub threads: WriterThreads,
    /// Dropped last; the handlers' state holds other clones until step 2 ends.
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    pub filter: FilterSaving,
}

/// What step 6 needs: the filter, and where and for which database to save it.
pub(crate) struct FilterSaving {
    pub dedup: Arc<Deduper>,
    pub path: std::path::PathBuf,
    pub key_hash_seed: u64,
}

/// Run the sequence. Returns once the database file is closed (or, if a stray
/// reader still holds it, once that reader finishes).
pub(crate) async fn run(parts: Parts) {
    let Parts { stop_tx, server, queue, threads, store, stats, filter } = parts;
    // Steps 1 and 2.
    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "server error during shutdown"),
        Err(error) => tracing::error!(%error, "server task failed"),
    }
    // Step 3.
    queue.close();
    // Steps 4 and 5, off the executor: joins block.
    let WriterThreads { writer, settler } = threads;
    let joined = tokio::task::spawn_blocking(move || (writer.join().is_ok(), settler.join().is_ok())).await;
    let (writer_ok, settler_ok) = joined.unwrap_or((false, false));
    if !writer_ok {
        tracing::error!("the writer thread panicked; unacknowledged requests were not stored");
    }
    if !settler_ok {
        tracing::error!("the settler thread panicked; the writer settled what it could");
    }
    let (received, unique_processed, duplicate_dropped) = stats.counts();
    tracing::info!(received, unique_processed, duplicate_dropped, "writer flushed and stopped");
    // Step 6.
    if writer_ok && settler_ok && stats.failing_commits() == 0 {
        save_filter(&store, &filter);
    }
    // Step 7.
    match Arc::into_inner(store) {
        Some(store) => drop(store),
        None => tracing::warn!("a reader still holds the database; it closes when that reader ends"),
    }
    tracing::info!("shutdown complete");
}

/// Save the filter with what it covers: the head's next seq, read after the
/// writer and settler are joined, so every key below it has its bits set.
fn save_filter(store: &Store, filter: &FilterSaving) {
    let saved = store.next_seq().map_err(|e| e.to_string()).and_then(|covers_next_seq| {
        let (bytes, items) = filter.dedup.snapshot();
        let snapshot = FilterSnapshot { covers_next_seq, items, bytes };
        filter_snapshot::save(&filter.path, filter.key_hash_seed, &snapshot).map_err(|e| e.to_string())
    });
    match saved {
        Ok(()) => tracing::info!(path = %filter.path.display(), "dedup filter saved for the next start"),
        Err(error) => tracing::warn!(%error, "cannot save the dedup filter; the next start rescans the keys"),
    }
}
