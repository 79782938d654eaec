//! The settler: a thread of its own that finishes each batch after the writer's
//! commit returned, so the writer's serial path only writes and commits.
//!
//! For each [`CommittedBatch`], in this order:
//! 1. set the filter bits of the batch's new keys (dedup "coverage");
//! 2. count the batch (`Stats::batch_committed`, the commit histograms);
//! 3. move every claimed key from in flight to the window of stored keys (which
//!    evicts its oldest past its capacity), then mark each ticket `Stored`: the acks;
//! 4. give the items' budget back to the queue;
//! 5. wake the writer: items held for a twin of this batch may go ahead.
//!
//! Step 1 comes before step 3, so a duplicate decided in memory, or by the
//! filter, is never missed once any client can see its 200.
//!
//! Channel: the writer holds the only [`Sender`]; this thread the [`Receiver`].
//! The writer drops its sender when it exits, which ends this thread after the
//! last batch; the shutdown sequence joins it right after the writer.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam::channel::{Receiver, Sender};

use crate::dedup::Deduper;
use crate::metrics::Metrics;
use crate::queue::{IngestQueue, QueuedRequest};
use crate::stats::{BatchCommitted, Stats};

/// The requests of one transaction whose commit returned `Ok`.
pub struct CommittedBatch {
    pub items: Vec<QueuedRequest>,
    pub figures: BatchCommitted,
}

/// Committed batches the writer may run ahead of the settler.
const CHANNEL_BATCHES: usize = 4;

pub struct Settler {
    dedup: Arc<Deduper>,
    queue: Arc<IngestQueue>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

impl Settler {
    pub fn new(
        dedup: Arc<Deduper>,
        queue: Arc<IngestQueue>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Settler { dedup, queue, stats, metrics }
    }

    /// Start the settler thread; the caller hands the sender to the writer.
    pub fn spawn(self) -> std::io::Result<(Sender<CommittedBatch>, JoinHandle<()>)> {
        let (tx, rx) = crossbeam::channel::bounded(CHANNEL_BATCHES);
        let handle = thread::Builder::new().name("settler".into()).spawn(move || self.run(rx))?;
        Ok((tx, handle))
    }

    fn run(self, rx: Receiver<CommittedBatch>) {
        for batch in rx {
            self.settle(batch);
        }
    }

    /// The steps of the module doc for one batch. Also the writer's fallback, on
    /// its own thread, should the settler thread be gone.
    pub fn settle(&self, batch: CommittedBatch) {
        let CommittedBatch { items, figures } = batch;
        self.dedup.add_to_filter(items.iter().flat_map(|p| p.records.iter().map(|r| &r.key)));
        self.stats.batch_committed(&figures);
        self.metrics.batch_committed(&figures);
        let mut released = 0;
        for item in items {
            released += item.cost();
            item.claims.mark_stored();
        }
        self.queue.release(released);
        self.queue.wake_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{AckMode, Progress, Ticket};
    use crate::dedup::{Claim, ClaimSet, DedupConfig};
    use crate::event::{EventKey, KeyHasher};
    use crate::queue::{NewRecord, WhenFull};

    struct Rig {
        dedup: Arc<Deduper>,
        queue: Arc<IngestQueue>,
        stats: Arc<Stats>,
        settler: Settler,
    }

    fn rig(recent_capacity: usize) -> Rig {
        let config = DedupConfig { recent_capacity, filter_capacity: 1000, filter_fp_rate: 0.01 };
        let dedup = Arc::new(Deduper::new(config, 0));
        let queue = Arc::new(IngestQueue::new(16, 1000));
        let stats = Arc::new(Stats::new(&crate::store::Head::default()));
        let settler = Settler::new(dedup.clone(), queue.clone(), stats.clone(), Arc::new(Metrics::new()));
        Rig { dedup, queue, stats, settler }
    }

    fn key(id: &str) -> EventKey {
        EventKey::new(KeyHasher::new(1), "t", id)
    }

    /// A request claiming `ids` as new, pushed so its budget is held like a real one.
    fn queued(rig: &Rig, ticket: &Arc<Ticket>, ids: &[&str]) -> QueuedRequest {
        let mut claims = ClaimSet::new(rig.dedup.clone(), ticket.clone());
        let records = ids
            .iter()
            .map(|id| {
                assert!(matches!(rig.dedup.claim(&key(id), ticket), Claim::Won(_)));
                claims.push(key(id));
                NewRecord { key: key(id), bytes: Vec::new() }
            })
            .collect();
        let item = QueuedRequest { records, duplicates: 1, twins: Vec::new(), claims, ack: AckMode::Durable };
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(rig.queue.push(item, WhenFull::Reject)).expect("room");
        rig.queue.pop().expect("just pushed")
    }

    fn batch(items: Vec<QueuedRequest>, unique: u64) -> CommittedBatch {
        CommittedBatch { items, figures: BatchCommitted { unique, duplicates: 1, commit_us: 10 } }
    }

    #[test]
    fn settling_acks_every_request_after_its_keys_are_known() {
        let rig = rig(100);
        let (a, b) = (Ticket::new(), Ticket::new());
        let items = vec![queued(&rig, &a, &["1", "2"]), queued(&rig, &b, &["3"])];
        assert_eq!(rig.queue.in_flight(), 5, "3 events + 2 items");
        rig.settler.settle(batch(items, 3));
        assert_eq!((a.progress(), b.progress()), (Progress::Stored, Progress::Stored));
        assert!(matches!(rig.dedup.claim(&key("2"), &Ticket::new()), Claim::Stored));
        assert_eq!(rig.dedup.maybe_stored(&[&key("1"), &key("3"), &key("4")]), vec![true, true, false]);
        assert_eq!(rig.queue.in_flight(), 0, "budget given back");
        assert_eq!(rig.stats.counts(), (4, 3, 1));
    }

    #[test]
    fn settling_evicts_the_oldest_stored_keys_past_capacity() {
        let rig = rig(2);
        for (n, id) in ["1", "2", "3"].into_iter().enumerate() {
            let t = Ticket::new();
            let item = queued(&rig, &t, &[id]);
            rig.settler.settle(batch(vec![item], 1));
            assert_eq!(rig.dedup.recent_len(), (n + 1).min(2));
        }
        // "1" went first; it is still in the filter, so it goes to the disk check.
        assert!(matches!(rig.dedup.claim(&key("1"), &Ticket::new()), Claim::Won(_)));
        assert!(matches!(rig.dedup.claim(&key("3"), &Ticket::new()), Claim::Stored));
    }
}
