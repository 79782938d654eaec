//! The settler: a thread of its own that finishes each batch after the writer's
//! commit returned, so the writer's serial path only writes and commits. A
//! small batch (at most [`SETTLE_ON_WRITER_MAX_EVENTS`]) committed while this
//! thread has nothing left to settle is settled by the writer itself, on its own
//! thread ([`SettlerHandle::settle`]): for single events the channel send (with
//! a wake-up and a context switch on each side) cost more than the settling.
//! Either way batches are settled one at a time, in commit order.
//!
//! For each [`CommittedBatch`], in this order:
//! 1. set the filter bits of the batch's new keys (dedup "coverage");
//! 2. count the batch (`Stats::batch_committed`, the commit histograms);
//! 3. hand the claimed keys over (`Deduper::hand_over`): all of them into the
//!    window of stored keys (which evicts its oldest past its capacity), the
//!    handover epoch moves, then all of them out of in flight, each ticket
//!    marked `Stored`: the acks;
//! 4. give the items' budget back to the queue;
//! 5. wake the writer: items held for a twin of this batch may go ahead.
//!
//! Step 1 comes before step 3, so a duplicate decided in memory, or by the
//! filter, is never missed once any client can see its 200.
//!
//! Channel: the writer holds the only [`Sender`] (in its [`SettlerHandle`]);
//! this thread the [`Receiver`]. The writer drops its sender when it exits,
//! which ends this thread after the last batch; the shutdown sequence joins it
//! right after the writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use crossbeam::channel::{Receiver, SendError, Sender};

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

/// Batches of at most this many events (new and duplicate) may be settled on
/// the writer's thread, while the settler thread is idle: ~1 µs of settling per
/// event against tens of µs for the channel send and the wake-ups. Larger ones
/// go to the settler thread, so that the writer's next commit does not wait for
/// them (docs/perf.md, session 12).
pub const SETTLE_ON_WRITER_MAX_EVENTS: u64 = 64;

/// The writer's end: hands batches to the settler thread, or settles a small
/// one in place when that thread has nothing left to settle.
pub struct SettlerHandle {
    tx: Sender<CommittedBatch>,
    /// Batches sent and not yet settled by the thread: raised before a send,
    /// lowered once the batch is settled.
    unsettled: Arc<AtomicUsize>,
    /// Settles on the writer's thread (small batches, or a gone settler thread).
    here: Settler,
}

impl SettlerHandle {
    /// Settle `batch`: here if it is small and the thread is idle (so that no
    /// earlier batch is still being settled: the order is kept), else on the
    /// thread. `Err` gives the batch back only if the settler thread is gone.
    pub fn settle(&self, batch: CommittedBatch) -> Result<(), CommittedBatch> {
        let events = batch.figures.unique + batch.figures.duplicates;
        if events <= SETTLE_ON_WRITER_MAX_EVENTS && self.unsettled.load(Ordering::Acquire) == 0 {
            self.here.settle(batch);
            return Ok(());
        }
        self.unsettled.fetch_add(1, Ordering::AcqRel);
        self.tx.send(batch).map_err(|SendError(batch)| {
            self.unsettled.fetch_sub(1, Ordering::AcqRel);
            batch
        })
    }

    /// Settle on the calling (writer's) thread: the fallback should the settler
    /// thread be gone.
    pub fn settle_here(&self, batch: CommittedBatch) {
        self.here.settle(batch);
    }
}

#[derive(Clone)]
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

    /// Start the settler thread; the caller hands the handle to the writer.
    pub fn spawn(self) -> std::io::Result<(SettlerHandle, JoinHandle<()>)> {
        let (tx, rx) = crossbeam::channel::bounded(CHANNEL_BATCHES);
        let unsettled = Arc::new(AtomicUsize::new(0));
        let here = self.clone();
        let thread_unsettled = unsettled.clone();
        let handle =
            thread::Builder::new().name("settler".into()).spawn(move || self.run(rx, &thread_unsettled))?;
        Ok((SettlerHandle { tx, unsettled, here }, handle))
    }

    fn run(self, rx: Receiver<CommittedBatch>, unsettled: &AtomicUsize) {
        for batch in rx {
            self.settle(batch);
            unsettled.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The steps of the module doc for one batch, on the settler thread or,
    /// for a small batch or without that thread, on the writer's.
    pub fn settle(&self, batch: CommittedBatch) {
        let CommittedBatch { items, figures } = batch;
        self.dedup.add_to_filter(items.iter().flat_map(|p| p.records.iter().map(|r| &r.key)));
        self.stats.batch_committed(&figures);
        self.metrics.batch_committed(&figures);
        let mut released = 0;
        let claims = items
            .into_iter()
            .map(|item| {
                released += item.cost();
                item.claims
            })
            .collect();
        self.dedup.hand_over(claims);
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

    /// A small batch is settled before `settle` returns while the thread has
    /// nothing unsettled; behind an unsettled batch, or when large, it goes to the
    /// thread (here gone, so it comes back), which keeps batches in commit order.
    #[test]
    fn a_small_batch_is_settled_in_place_only_while_the_thread_is_idle() {
        let rig = rig(100);
        let (tx, rx) = crossbeam::channel::bounded(1);
        drop(rx);
        let here =
            Settler::new(rig.dedup.clone(), rig.queue.clone(), rig.stats.clone(), Arc::new(Metrics::new()));
        let handle = SettlerHandle { tx, unsettled: Arc::new(AtomicUsize::new(0)), here };
        let t = Ticket::new();
        assert!(handle.settle(batch(vec![queued(&rig, &t, &["1"])], 1)).is_ok());
        assert_eq!(t.progress(), Progress::Stored, "settled before settle returned");

        handle.unsettled.store(1, Ordering::Release);
        let u = Ticket::new();
        let back =
            handle.settle(batch(vec![queued(&rig, &u, &["2"])], 1)).expect_err("sent behind the other");
        assert_ne!(u.progress(), Progress::Stored);
        handle.settle_here(back);
        assert_eq!(u.progress(), Progress::Stored);

        handle.unsettled.store(0, Ordering::Release);
        let ids: Vec<String> = (0..SETTLE_ON_WRITER_MAX_EVENTS).map(|i| format!("big-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let large = batch(vec![queued(&rig, &Ticket::new(), &ids)], SETTLE_ON_WRITER_MAX_EVENTS);
        assert!(handle.settle(large).is_err(), "{} events go to the thread", SETTLE_ON_WRITER_MAX_EVENTS + 1);
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
