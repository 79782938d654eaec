//! The acknowledgement of one publish request: a [`Ticket`] whose [`Progress`]
//! only moves forward, `Claimed -> Queued -> Stored | Failed`, and the
//! [`AckMode`] that says which of those a 200 waits for.
//!
//! Who sends: the request's handler marks `Queued` after its push; the settling
//! of its batch (`settler`: on the settler thread, or on the writer's for a small
//! batch) marks `Stored` once the writer's commit holding the request returned; the writer
//! fails items (commit error, twin failed); dropping a request's `ClaimSet`
//! (handler cancelled, queue full) marks `Failed`. Who receives: the handler
//! itself (durable acks wait for `Stored`), any later request holding a duplicate
//! of a key this request claimed (its "twin"), which must not answer 200 before
//! this one's outcome is known, and the writer, which reads twins' progress to
//! decide whether an item may be written.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// How far a request has got. Ordered: a final state never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Keys claimed in the in-flight map; not yet in the queue.
    Claimed,
    /// In the ring buffer (or already being written).
    Queued,
    /// On disk: the transaction holding this request's events has committed, and
    /// the settler has made its keys known to the dedup state.
    Stored,
    /// Nothing of the request was stored; its claims were released.
    Failed(FailReason),
}

impl Progress {
    pub fn is_final(self) -> bool {
        matches!(self, Progress::Stored | Progress::Failed(_))
    }
    fn rank(self) -> u8 {
        match self {
            Progress::Claimed => 0,
            Progress::Queued => 1,
            Progress::Stored | Progress::Failed(_) => 2,
        }
    }
}

/// When a 200 is sent (CONTRACT.md "The meaning of a 200").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After the events (or their earlier twins) are committed and durable (fsynced).
    Durable,
    /// After the events are decided and queued.
    Buffered,
}

/// Why a request could not be acknowledged. Each maps to a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    #[error("the write queue is full")]
    QueueFull,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("the storage commit failed")]
    Storage,
    #[error("an earlier copy of a duplicate event failed to be stored")]
    TwinFailed,
    #[error("the request was abandoned before it was queued")]
    Abandoned,
}

/// One per request. Shared (`Arc`) by the handler, the queued item and the recent
/// map's in-flight slots. Waiters only wait for a final state, so only the move
/// to one wakes them (a `watch` channel woke its eight shards on every step).
#[derive(Debug)]
pub struct Ticket {
    progress: Mutex<Progress>,
    /// Notified once, when the progress becomes final.
    finished: Notify,
}

impl Ticket {
    pub fn new() -> Arc<Self> {
        Arc::new(Ticket { progress: Mutex::new(Progress::Claimed), finished: Notify::new() })
    }

    pub fn progress(&self) -> Progress {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move forward to `next`; returns false (and changes nothing) if the ticket is
    /// already there or further.
    pub fn advance(&self, next: Progress) -> bool {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if next.rank() <= progress.rank() {
            return false;
        }
        *progress = next;
        drop(progress);
        if next.is_final() {
            self.finished.notify_waiters();
        }
        true
    }

    /// Wait until the progress is final. The waiter registers before it reads
    /// the progress, so a move to final between the two still wakes it.
    pub async fn wait_final(&self) -> Progress {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let progress = self.progress();
            if progress.is_final() {
                return progress;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_moves_forward() {
        let t = Ticket::new();
        assert!(t.advance(Progress::Queued));
        assert!(t.advance(Progress::Stored));
        assert!(!t.advance(Progress::Failed(FailReason::Storage)));
        assert!(!t.advance(Progress::Queued));
        assert_eq!(t.progress(), Progress::Stored);
    }

    #[tokio::test]
    async fn waiters_see_the_final_state() {
        let t = Ticket::new();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.wait_final().await });
        t.advance(Progress::Queued);
        t.advance(Progress::Failed(FailReason::QueueFull));
        assert_eq!(waiter.await.unwrap(), Progress::Failed(FailReason::QueueFull));
    }

    /// Many waiters (a request and the twins that share its fate), registered
    /// before and after the final move, all see it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_wakes_once_the_ticket_is_final() {
        let t = Ticket::new();
        let early: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn({
                    let t = t.clone();
                    async move { t.wait_final().await }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        t.advance(Progress::Queued);
        assert!(t.advance(Progress::Stored));
        for waiter in early {
            assert_eq!(waiter.await.unwrap(), Progress::Stored);
        }
        assert_eq!(t.wait_final().await, Progress::Stored, "a late waiter returns at once");
    }
}
