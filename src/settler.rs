//! The settler: the second half of a group commit, on its own thread, so the
//! writer can begin the next transaction while this one's requests are settled.
//!
//! Receives from the writer each committed batch, in commit order (bounded
//! channel: a slow settler holds the writer back, never the reverse). For each
//! batch, in this order: set the filter bits of the new keys, bump the counters,
//! mark every claimed key `Committed` and every ticket `Committed` (the acks),
//! return the queue budget, evict old committed keys. The order is the dedup
//! "coverage" invariant: a key is in the filter before it can leave the recent map,
//! and counted before any client can see its 200.
//! The channel closing (writer gone) ends the thread after the last batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};

use crossbeam::channel::{Receiver, Sender};

use crate::dedup::Deduper;
use crate::event::EventKey;
use crate::queue::{IngestQueue, Pending};
use crate::stats::Stats;

/// One committed transaction's worth of requests.
pub struct Committed {
    pub items: Vec<Pending>,
    pub unique: u64,
    pub duplicates: u64,
    pub commit_us: u64,
}

/// Committed batches the writer may run ahead of the settler.
const CHANNEL_BATCHES: usize = 4;

pub struct Settler {
    dedup: Arc<Deduper>,
    queue: Arc<IngestQueue>,
    stats: Arc<Stats>,
    /// Woken after each batch: items held for a twin may now go ahead.
    writer: Thread,
    /// Committed keys, oldest first, for recent-map eviction.
    eviction_order: VecDeque<EventKey>,
}

impl Settler {
    /// Start the settler thread; the writer keeps the sender.
    pub fn spawn(
        dedup: Arc<Deduper>,
        queue: Arc<IngestQueue>,
        stats: Arc<Stats>,
        writer: Thread,
    ) -> std::io::Result<(Sender<Committed>, JoinHandle<()>)> {
        let (tx, rx) = crossbeam::channel::bounded(CHANNEL_BATCHES);
        let settler = Settler { dedup, queue, stats, writer, eviction_order: VecDeque::new() };
        let handle = thread::Builder::new().name("settler".into()).spawn(move || settler.run(rx))?;
        Ok((tx, handle))
    }

    fn run(mut self, rx: Receiver<Committed>) {
        for batch in rx {
            self.settle(batch);
        }
    }

    fn settle(&mut self, batch: Committed) {
        let order = &mut self.eviction_order;
        settle_batch(&self.dedup, &self.queue, &self.stats, batch, |keys| order.extend(keys));
        self.dedup.evict(&mut self.eviction_order);
        self.writer.unpark();
    }
}

/// The settling steps for one batch, in the order the module doc gives; the
/// committed keys of each item go to `committed_keys` (for the eviction order).
/// Also the writer's fallback, on its own thread, should the settler be gone.
pub fn settle_batch(
    dedup: &Deduper,
    queue: &IngestQueue,
    stats: &Stats,
    batch: Committed,
    mut committed_keys: impl FnMut(Vec<EventKey>),
) {
    let Committed { items, unique, duplicates, commit_us } = batch;
    dedup.add_to_filter(items.iter().flat_map(|p| p.records.iter().map(|r| &r.key)));
    stats.batch_committed(unique, duplicates, commit_us);
    let mut released = 0;
    for item in items {
        released += item.cost();
        committed_keys(item.claims.commit());
    }
    queue.release(released);
}
