//! The writer: one dedicated OS thread, the only consumer of the queue and the
//! only caller of `Store::append`. redb allows one write transaction at a time
//! and commits block on fsync, so this work never runs on the async executor.
//!
//! Each round it drains up to `max_batch_events` into one batch, writes the batch
//! in ONE transaction, commits, and only then hands the batch to the `settler`
//! thread, which releases the acks (group commit). Promises:
//! - **Ack after commit.** A ticket becomes `Committed` only after the commit that
//!   holds its events and counters returned `Ok` (the settler then sets the filter
//!   bits before the acks: the dedup "coverage" invariant).
//! - **Shared fate with twins.** An item with a duplicate of another in-flight
//!   request's key is written only in the same transaction as that request, or
//!   after it committed. If the twin fails, so does the item. Until then the item
//!   is held (no thread ever blocks on it), so a 200 for a duplicate always means
//!   its earlier twin is on disk.
//! - **Failure.** If a commit fails, nothing of the batch is stored; durable items
//!   are failed (claims released, 503), buffered items, already acknowledged, are
//!   retried with backoff.
//! - **Shutdown.** After the queue is closed the writer drains it completely, then
//!   exits; joining its handle is the last step before the database is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::ack::{FailReason, Progress, Ticket};
use crate::dedup::Deduper;
use crate::queue::{AckMode, IngestQueue, Pending};
use crate::settler::{Committed, Settler};
use crate::stats::Stats;
use crate::store::{Head, Row, Store};

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Longest idle sleep between checks of the queue; pushes wake the writer early.
    pub flush_interval: Duration,
    /// Most events in one transaction.
    pub max_batch_events: usize,
}

pub struct Writer {
    store: Arc<Store>,
    /// Only for settling on this thread should the settler die.
    dedup: Arc<Deduper>,
    queue: Arc<IngestQueue>,
    stats: Arc<Stats>,
    config: WriterConfig,
    head: Head,
    /// Items carried to the next round: waiting for a twin, or buffered items
    /// whose commit failed. Written before anything newly drained.
    held: Vec<Pending>,
    failures_in_a_row: u32,
    /// Committed batches go here; `None` only while dropping (closes the channel).
    settle_tx: Option<crossbeam::channel::Sender<Committed>>,
    settler: Option<JoinHandle<()>>,
}

/// What one round of the writer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Nothing was queued or held.
    Idle,
    /// At least one item reached its final outcome.
    Settled,
    /// Only held items, all still waiting for their twins.
    Waiting,
}

/// What a round does with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Write,
    Hold,
    Fail(FailReason),
}

/// What the writer (and its settler) work with.
pub struct WriterParts {
    pub store: Arc<Store>,
    pub dedup: Arc<Deduper>,
    pub queue: Arc<IngestQueue>,
    pub stats: Arc<Stats>,
    pub config: WriterConfig,
    /// Where the next batch goes, as recovered at open.
    pub head: Head,
}

impl Writer {
    /// A writer for the calling thread, with its settler thread started.
    pub fn new(parts: WriterParts) -> std::io::Result<Self> {
        let WriterParts { store, dedup, queue, stats, config, head } = parts;
        let (settle_tx, settler) =
            Settler::spawn(dedup.clone(), queue.clone(), stats.clone(), thread::current())?;
        Ok(Writer {
            store,
            dedup,
            queue,
            stats,
            config,
            head,
            held: Vec::new(),
            failures_in_a_row: 0,
            settle_tx: Some(settle_tx),
            settler: Some(settler),
        })
    }

    /// Build the writer (and its settler) on a new thread and run it there.
    /// `writer_running` is true from here until it exits.
    pub fn spawn(parts: WriterParts) -> std::io::Result<JoinHandle<()>> {
        let stats = parts.stats.clone();
        stats.writer_running.store(true, Relaxed);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle =
            thread::Builder::new().name("writer".into()).spawn(move || match Writer::new(parts) {
                Ok(writer) => {
                    let _ = ready_tx.send(Ok(()));
                    writer.run();
                }
                Err(e) => {
                    stats.writer_running.store(false, Relaxed);
                    let _ = ready_tx.send(Err(e));
                }
            })?;
        ready_rx.recv().unwrap_or_else(|_| Err(std::io::Error::other("writer thread ended at start")))?;
        Ok(handle)
    }

    fn run(mut self) {
        let stats = self.stats.clone();
        let _running = RunningFlag(&stats);
        self.queue.register_writer(thread::current());
        loop {
            match self.flush_once() {
                Round::Settled => continue,
                Round::Idle if self.queue.is_closed() && self.queue.is_empty() => break,
                Round::Idle | Round::Waiting => thread::park_timeout(self.config.flush_interval),
            }
        }
        tracing::info!(next_seq = self.head.next_seq, "writer drained the queue and stopped");
    }

    /// One round: collect a batch and write it. Tests and benches step the writer
    /// with this instead of running the thread.
    pub fn flush_once(&mut self) -> Round {
        let batch = self.collect();
        if batch.is_empty() {
            return Round::Idle;
        }
        if self.write_batch(batch) { Round::Settled } else { Round::Waiting }
    }

    /// Held items first, then newly queued ones, up to the batch size.
    /// Held items never count toward the batch size: they may be waiting for a
    /// twin that is still in the queue, which must be taken for them to go ahead.
    fn collect(&mut self) -> Vec<Pending> {
        let mut batch = std::mem::take(&mut self.held);
        let mut events = 0;
        while events < self.config.max_batch_events {
            let Some(item) = self.queue.pop() else { break };
            events += item.records.len();
            batch.push(item);
        }
        batch
    }

    /// Write one batch. Returns whether any item reached a final outcome.
    fn write_batch(&mut self, batch: Vec<Pending>) -> bool {
        // Nothing outside this batch is in flight any more (no queued item, no
        // batch awaiting its settler, no handler able to push): a twin that is
        // not final by now never will be.
        let batch_cost: usize = batch.iter().map(Pending::cost).sum();
        let drained = self.queue.is_closed() && self.queue.is_empty() && self.queue.in_flight() == batch_cost;
        let verdicts = plan(&batch, drained);
        let mut to_write = Vec::with_capacity(batch.len());
        let mut released = 0;
        for (item, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Write => to_write.push(item),
                Verdict::Hold => self.held.push(item),
                Verdict::Fail(reason) => released += self.fail(item, reason),
            }
        }
        let settled = released > 0 || !to_write.is_empty();
        if !to_write.is_empty() {
            released += self.commit(to_write);
        }
        if released > 0 {
            self.queue.release(released);
        }
        settled
    }

    /// Append and commit, then hand the items to the settler. Returns the budget
    /// released here (only on failure: the settler releases the rest).
    fn commit(&mut self, items: Vec<Pending>) -> usize {
        let rows = items.iter().flat_map(|p| p.records.iter()).map(|r| Row { key: &r.key, bytes: &r.bytes });
        let duplicates: u64 = items.iter().map(|p| p.duplicates).sum();
        let started = Instant::now();
        let unique_before = self.head.unique;
        if let Err(error) = self.store.append(&mut self.head, rows, duplicates) {
            return self.commit_failed(items, &error);
        }
        let commit_us = started.elapsed().as_micros() as u64;
        self.failures_in_a_row = 0;
        self.stats.writer_failing_commits.store(0, Relaxed);
        let batch = Committed { items, unique: self.head.unique - unique_before, duplicates, commit_us };
        let settle_tx = self.settle_tx.as_ref().expect("the sender lives until drop");
        if let Err(crossbeam::channel::SendError(batch)) = settle_tx.send(batch) {
            // Only if the settler thread died. The batch is committed: settle it
            // here, never drop it (dropping would release committed keys).
            tracing::error!("settler thread gone; settling on the writer");
            crate::settler::settle_batch(&self.dedup, &self.queue, &self.stats, batch, drop);
        }
        0
    }

    fn commit_failed(&mut self, items: Vec<Pending>, error: &crate::store::StoreError) -> usize {
        self.failures_in_a_row += 1;
        self.stats.writer_commit_failures.fetch_add(1, Relaxed);
        self.stats.writer_failing_commits.store(u64::from(self.failures_in_a_row), Relaxed);
        tracing::error!(%error, items = items.len(), "commit failed; durable requests get 503");
        let mut released = 0;
        for item in items {
            if item.ack == AckMode::Buffered && !self.queue.is_closed() {
                self.held.push(item);
            } else {
                released += self.fail(item, FailReason::Storage);
            }
        }
        if !self.held.is_empty() {
            let backoff = 10u64 << self.failures_in_a_row.min(7);
            thread::sleep(Duration::from_millis(backoff));
        }
        released
    }

    fn fail(&self, item: Pending, reason: FailReason) -> usize {
        if item.ack == AckMode::Buffered && item.claims.ticket().progress() != Progress::Claimed {
            tracing::warn!(%reason, events = item.records.len(), "a buffered acknowledgement could not be kept");
        }
        let cost = item.cost();
        item.claims.fail(reason);
        cost
    }
}

/// Decide each item of a batch from its twins' states. Greatest fixpoint: an item
/// is written unless a twin failed (fail too) or a twin is neither committed nor
/// written in this same transaction (hold). Cycles of twins inside one batch
/// share one transaction, so they are written together.
fn plan(batch: &[Pending], drained: bool) -> Vec<Verdict> {
    let mut verdicts = vec![Verdict::Write; batch.len()];
    if batch.iter().all(|p| p.twins.is_empty()) {
        return verdicts;
    }
    let position: HashMap<*const Ticket, usize> =
        batch.iter().enumerate().map(|(i, p)| (Arc::as_ptr(p.claims.ticket()), i)).collect();
    let twin_verdict = |verdicts: &[Verdict], twin: &Arc<Ticket>| match twin.progress() {
        Progress::Committed => Verdict::Write,
        Progress::Failed(_) => Verdict::Fail(FailReason::TwinFailed),
        Progress::Claimed | Progress::Queued => match position.get(&Arc::as_ptr(twin)) {
            Some(&j) => match verdicts[j] {
                Verdict::Fail(_) => Verdict::Fail(FailReason::TwinFailed),
                v => v,
            },
            None if drained => Verdict::Fail(FailReason::ShuttingDown),
            None => Verdict::Hold,
        },
    };
    loop {
        let mut changed = false;
        for i in 0..batch.len() {
            if verdicts[i] != Verdict::Write {
                continue;
            }
            let worst =
                batch[i].twins.iter().map(|t| twin_verdict(&verdicts, t)).find(|v| *v != Verdict::Write);
            if let Some(v) = worst {
                verdicts[i] = v;
                changed = true;
            }
        }
        if !changed {
            return verdicts;
        }
    }
}

impl Drop for Writer {
    /// Close the settler's channel and wait until it has settled every batch.
    fn drop(&mut self) {
        drop(self.settle_tx.take());
        if let Some(settler) = self.settler.take()
            && settler.join().is_err()
        {
            tracing::error!("the settler thread panicked");
        }
    }
}

/// Clears `writer_running` when the writer thread ends, panics included.
struct RunningFlag<'a>(&'a Stats);

impl Drop for RunningFlag<'_> {
    fn drop(&mut self) {
        self.0.writer_running.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{Claim, ClaimSet, DedupConfig};
    use crate::event::{EventKey, KeyHasher};
    use crate::queue::{NewRecord, WhenFull};
    use crate::store::codec;

    struct Rig {
        _dir: tempfile::TempDir,
        dedup: Arc<Deduper>,
        queue: Arc<IngestQueue>,
        writer: Writer,
        hasher: KeyHasher,
        runtime: tokio::runtime::Runtime,
    }

    fn rig(max_batch_events: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (store, rec) = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let config = DedupConfig { recent_capacity: 100, filter_capacity: 1000, filter_fp_rate: 0.01 };
        let dedup = Arc::new(Deduper::new(config, 0));
        let queue = Arc::new(IngestQueue::new(16, 1000));
        let parts = WriterParts {
            store: Arc::new(store),
            dedup: dedup.clone(),
            queue: queue.clone(),
            stats: Arc::new(Stats::new(&rec.head)),
            config: WriterConfig { flush_interval: Duration::from_millis(5), max_batch_events },
            head: rec.head,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let hasher = KeyHasher::new(rec.key_hash_seed);
        Rig { _dir: dir, dedup, queue, writer: Writer::new(parts).unwrap(), hasher, runtime }
    }

    /// A request's item: `new` keys claimed and stored, plus duplicates of `twins`.
    fn item(rig: &Rig, ticket: &Arc<Ticket>, new: &[EventKey], twins: Vec<Arc<Ticket>>) -> Pending {
        let mut claims = ClaimSet::new(rig.dedup.clone(), ticket.clone());
        let records = new
            .iter()
            .map(|key| {
                assert!(matches!(rig.dedup.claim(key, ticket), Claim::Won));
                claims.push(key.clone());
                let record = codec::Record {
                    topic: key.topic(),
                    event_id: key.event_id(),
                    timestamp: "t",
                    source: "",
                    payload: "{}",
                    received_at_us: 0,
                };
                NewRecord { key: key.clone(), bytes: codec::encode(&record) }
            })
            .collect();
        let duplicates = twins.len() as u64;
        Pending { records, duplicates, twins, claims, ack: AckMode::Durable }
    }

    /// The settler runs on its own thread: poll until every ticket is final.
    fn wait_settled(tickets: &[&Arc<Ticket>]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !tickets.iter().all(|t| t.progress().is_final()) {
            assert!(std::time::Instant::now() < deadline, "settled in time");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn push(rig: &Rig, item: Pending) {
        rig.runtime.block_on(rig.queue.push(item, WhenFull::Reject)).unwrap();
    }

    #[test]
    fn an_abandoned_twin_fails_the_item_held_for_it() {
        let mut rig = rig(5);
        let twin = Ticket::new();
        let twin_key = EventKey::new(rig.hasher, "t", "k");
        let held = Ticket::new();
        let many: Vec<EventKey> = (0..6).map(|i| EventKey::new(rig.hasher, "t", i.to_string())).collect();
        // The twin claims its key first but is queued only later.
        let mut twin_claims = ClaimSet::new(rig.dedup.clone(), twin.clone());
        assert!(matches!(rig.dedup.claim(&twin_key, &twin), Claim::Won));
        twin_claims.push(twin_key.clone());
        let held_item = item(&rig, &held, &many, vec![twin.clone()]);
        push(&rig, held_item);
        assert_eq!(rig.writer.flush_once(), Round::Waiting, "held: its twin is not queued");

        drop(twin_claims); // the twin's handler hands over to its queued item instead
        let twin_again = Ticket::new();
        let twin_item = item(&rig, &twin_again, std::slice::from_ref(&twin_key), Vec::new());
        push(&rig, twin_item);
        // The first twin was abandoned (its claims released): the held item fails.
        assert_eq!(rig.writer.flush_once(), Round::Settled);
        wait_settled(&[&held, &twin_again]);
        assert_eq!(held.progress(), Progress::Failed(FailReason::TwinFailed));
        assert_eq!(twin_again.progress(), Progress::Committed);
    }

    /// Regression (review of the twin hold): items held for a twin once counted
    /// toward the batch size, so with enough of them the writer stopped reading the
    /// queue, where the twin was waiting: stuck for good.
    #[test]
    fn held_items_never_stop_the_writer_from_taking_their_twin() {
        let mut rig = rig(5);
        let twin = Ticket::new();
        let twin_key = EventKey::new(rig.hasher, "t", "k");
        let held = Ticket::new();
        let many: Vec<EventKey> = (0..6).map(|i| EventKey::new(rig.hasher, "t", i.to_string())).collect();
        // Claimed like the twin's handler does, then queued after the held item.
        let twin_item = item(&rig, &twin, std::slice::from_ref(&twin_key), Vec::new());
        let held_item = item(&rig, &held, &many, vec![twin.clone()]);
        push(&rig, held_item);
        assert_eq!(rig.writer.flush_once(), Round::Waiting);
        push(&rig, twin_item);
        assert_eq!(rig.writer.flush_once(), Round::Settled, "the twin is taken despite 6 held events");
        wait_settled(&[&held, &twin]);
        assert_eq!((held.progress(), twin.progress()), (Progress::Committed, Progress::Committed));
    }
}
