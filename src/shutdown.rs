//! The ordered shutdown. Each step finishes before the next starts:
//! 1. Stop accepting connections (signal axum's graceful shutdown).
//! 2. axum drains in-flight handlers. The writer is still alive, so the acks they
//!    wait for still arrive; the request timeout bounds this step.
//! 3. Close the queue. The writer drains it, commits, and exits.
//! 4. Join the writer thread.
//! 5. Drop the `Database`, which releases the file lock.
//!
//! Done means joined handles, never sleeps.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::RunningApp;
use crate::queue::IngestQueue;
use crate::store::Store;

/// What `shutdown` needs to stop, in order.
pub(crate) struct Parts {
    /// Sending (or dropping) tells axum to stop accepting and drain.
    pub stop_tx: oneshot::Sender<()>,
    pub server: JoinHandle<std::io::Result<()>>,
    pub queue: Arc<IngestQueue>,
    pub writer: std::thread::JoinHandle<()>,
    pub store: Arc<Store>,
}

impl RunningApp {
    /// Run the shutdown sequence. Returns once the database file is closed (or, if a
    /// stray reader still holds it, once that reader finishes).
    pub async fn shutdown(self) {
        let RunningApp { state, parts, .. } = self;
        let Parts { stop_tx, server, queue, writer, store } = parts;
        let _ = stop_tx.send(());
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "server error during shutdown"),
            Err(error) => tracing::error!(%error, "server task failed"),
        }
        queue.close();
        let joined = tokio::task::spawn_blocking(move || writer.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the writer thread panicked; unacknowledged requests were not stored");
        }
        let (received, unique_processed, duplicate_dropped) = state.stats.counts();
        tracing::info!(received, unique_processed, duplicate_dropped, "writer flushed and stopped");
        drop(state);
        match Arc::into_inner(store) {
            Some(store) => drop(store),
            None => tracing::warn!("a reader still holds the database; it closes when that reader ends"),
        }
        tracing::info!("shutdown complete");
    }
}
