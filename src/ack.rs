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

use std::sync::Arc;

use tokio::sync::watch;

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
    #[error("the writer is not running")]
    WriterGone,
}

/// One per request. Shared (`Arc`) by the handler, the queued item and the recent
/// map's in-flight slots.
#[derive(Debug)]
pub struct Ticket {
    progress: watch::Sender<Progress>,
}

impl Ticket {
    pub fn new() -> Arc<Self> {
        Arc::new(Ticket { progress: watch::Sender::new(Progress::Claimed) })
    }

    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Move forward to `next`; returns false (and changes nothing) if the ticket is
    /// already there or further.
    pub fn advance(&self, next: Progress) -> bool {
        self.progress.send_if_modified(|p| {
            let forward = next.rank() > p.rank();
            if forward {
                *p = next;
            }
            forward
        })
    }

    /// Wait until the progress is final.
    pub async fn wait_final(&self) -> Progress {
        let mut rx = self.progress.subscribe();
        let result = rx.wait_for(|p| p.is_final()).await.map(|p| *p);
        // The sender lives in `self`, so the channel cannot close while we wait.
        result.unwrap_or(Progress::Failed(FailReason::WriterGone))
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
}
