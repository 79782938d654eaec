//! The writer: one dedicated OS thread, the only consumer of the queue and the
//! only caller of `Store::append`, `Store::apply_tail` and `Store::checkpoint`.
//! redb allows one write transaction at a time and commits block on fsync (the
//! journal's or redb's), so this work never runs on the async executor.
//!
//! Each round it drains up to `max_batch_events` into one batch, commits it (a
//! small batch: its journal frame synced, the batch kept in the tail; a batch of up
//! to 16 MiB: ONE transaction, its journal frame synced and redb committed
//! without fsync, the two at once from 256 KiB on, the sync on a scoped thread;
//! see `store`), and only then hands the batch to the `settler` thread, which
//! sets the filter bits and releases the acks (group commit); a batch of at most
//! `SETTLE_ON_WRITER_MAX_EVENTS` it settles itself while that thread is idle
//! (`SettlerHandle`). The tail goes to redb in one transaction once full (by
//! the append that filled it, `store::tail`), and when the writer has idled
//! `APPLY_TAIL_WHEN_IDLE_FOR`. After `CHECKPOINT_WHEN_IDLE_FOR` without a batch, and
//! before it exits, it makes the journaled batches durable in redb (a checkpoint).
//! Promises:
//! - **Ack after commit.** A ticket becomes `Stored` (by the settler) only after
//!   the commit that holds its events and counters returned `Ok` (for a batch
//!   in the tail: its journal frame's sync).
//! - **Shared fate with twins.** An item with a duplicate of another in-flight
//!   request's key is written only in the same transaction as that request, or
//!   after it was stored; if the twin fails, so does the item (`plan`). Until then
//!   the item is held (no thread ever blocks on it), so a 200 for a duplicate
//!   always means its earlier twin is on disk.
//! - **Failure.** If a commit fails, redb refuses every later write until the
//!   database is reopened, so the writer reopens it at once; what it reads back
//!   says whether the commit reached the disk after all. If it did, the batch is
//!   settled as committed; if not, nothing of it is stored: durable items are
//!   failed (claims released, 503) and buffered items, already acknowledged, are
//!   held and retried with backoff; if the disk cannot tell yet, the batch keeps
//!   its keys claimed until it can (`recovery`).
//! - **Shutdown.** After the queue is closed the writer drains it completely,
//!   checkpoints the journal, then exits, which drops its end of the settler's channel; the shutdown sequence
//!   joins the writer, then the settler, then drops the database.

mod plan;
mod recovery;

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::ack::{AckMode, FailReason, Progress};
use crate::dedup::Deduper;
use crate::metrics::Metrics;
use crate::queue::{IngestQueue, QueuedRequest};
use crate::settler::{CommittedBatch, Settler, SettlerHandle};
use crate::stats::{BatchCommitted, Stats};
use crate::store::{Head, Row, Store};
use plan::{Dependencies, Verdict, plan};

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Longest idle sleep between checks of the queue; pushes wake the writer early.
    pub flush_interval: Duration,
    /// Most events in one transaction.
    pub max_batch_events: usize,
}

/// What the writer and its settler work with.
pub struct WriterParts {
    pub store: Arc<Store>,
    pub dedup: Arc<Deduper>,
    pub queue: Arc<IngestQueue>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    pub config: WriterConfig,
    /// Where the next batch goes, as recovered at open.
    pub head: Head,
}

/// The two threads of the write path, joined in this order by the shutdown sequence.
pub struct WriterThreads {
    /// Ends once the queue is closed and drained; it then drops the settler's sender.
    pub writer: JoinHandle<()>,
    /// Ends once every committed batch is settled and the writer's sender is gone.
    pub settler: JoinHandle<()>,
}

pub struct Writer {
    store: Arc<Store>,
    queue: Arc<IngestQueue>,
    stats: Arc<Stats>,
    config: WriterConfig,
    head: Head,
    /// Items carried to the next round: waiting for a twin, or buffered items
    /// whose commit failed. Written before anything newly drained.
    held: Vec<QueuedRequest>,
    /// Popped, but left for the next round: it would have taken the batch past
    /// `max_batch_events`. Counts toward the next round's size.
    next: Option<QueuedRequest>,
    /// A batch whose commit failed while the disk cannot yet say whether it
    /// reached it (see `recovery`).
    uncertain: Option<Uncertain>,
    /// The writer's end of the settler's channel: committed batches go here
    /// (or, small ones while the settler thread is idle, are settled here).
    /// Dropped when the writer is, which ends the settler thread.
    settler: SettlerHandle,
    /// When the last batch's append returned: an idle writer checkpoints the journal.
    last_write: Instant,
}

/// An idle writer makes the journaled batches durable in redb (a checkpoint)
/// once nothing was appended for this long.
const CHECKPOINT_WHEN_IDLE_FOR: Duration = Duration::from_millis(50);

/// An idle writer applies the tail (`store::tail`) once
/// nothing was appended for this long: under load, the next batch is usually
/// queued by then, and takes precedence.
const APPLY_TAIL_WHEN_IDLE_FOR: Duration = Duration::from_millis(1);

/// One batch's try at a commit: its items and the two heads the disk may show.
struct Attempt {
    items: Vec<QueuedRequest>,
    /// The head before the batch: what the disk shows if it is not there.
    before: Head,
    /// The head had the batch committed.
    expected: Head,
    started: Instant,
}

/// A failed commit whose outcome the disk has not told yet.
struct Uncertain(Attempt);

impl Attempt {
    fn new(items: Vec<QueuedRequest>, before: Head, duplicates: u64, started: Instant) -> Self {
        let new_events: u64 = items.iter().map(|p| p.records.len() as u64).sum();
        let expected = Head {
            next_seq: before.next_seq + new_events,
            unique: before.unique + new_events,
            duplicates: before.duplicates + duplicates,
            ..before
        };
        Attempt { items, before, expected, started }
    }
}

/// What one round of the writer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Nothing was queued or held.
    Idle,
    /// At least one item was written, failed, or went back to be retried.
    Settled,
    /// Only held items, all still waiting for their twins.
    Waiting,
}

/// Start the settler thread, then the writer thread. `writer_running` is true
/// from here until the writer exits.
pub fn spawn(parts: WriterParts) -> std::io::Result<WriterThreads> {
    let stats = parts.stats.clone();
    let settler = settler_for(&parts);
    let (handle, settler) = settler.spawn()?;
    stats.writer_started();
    let writer = thread::Builder::new().name("writer".into()).spawn(move || {
        Writer::new(parts, handle).run();
    });
    match writer {
        Ok(writer) => Ok(WriterThreads { writer, settler }),
        Err(e) => {
            stats.writer_stopped();
            Err(e)
        }
    }
}

fn settler_for(parts: &WriterParts) -> Settler {
    Settler::new(parts.dedup.clone(), parts.queue.clone(), parts.stats.clone(), parts.metrics.clone())
}

impl Writer {
    /// A writer that hands committed batches to `settler`.
    pub fn new(parts: WriterParts, settler: SettlerHandle) -> Self {
        let WriterParts { store, queue, stats, config, head, .. } = parts;
        Writer {
            store,
            queue,
            stats,
            config,
            head,
            held: Vec::new(),
            next: None,
            uncertain: None,
            settler,
            last_write: Instant::now(),
        }
    }

    /// A writer to step on the calling thread (tests, benches), with its settler
    /// thread started; join the handle after dropping the writer.
    pub fn with_settler_thread(parts: WriterParts) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (handle, settler) = settler_for(&parts).spawn()?;
        Ok((Writer::new(parts, handle), settler))
    }

    fn run(mut self) {
        let stats = self.stats.clone();
        let _running = RunningFlag(&stats);
        self.queue.register_writer(thread::current());
        let mut last_reopen: Option<Instant> = None;
        loop {
            match self.flush_once() {
                Round::Settled => continue,
                Round::Idle if self.queue.is_closed() && self.queue.is_empty() && self.next.is_none() => {
                    break;
                }
                Round::Idle | Round::Waiting => {
                    self.reopen_when_idle(&mut last_reopen);
                    let idle = self.last_write.elapsed();
                    if idle >= CHECKPOINT_WHEN_IDLE_FOR {
                        self.checkpoint();
                    } else if idle >= APPLY_TAIL_WHEN_IDLE_FOR {
                        self.apply_tail();
                    }
                    thread::park_timeout(self.config.flush_interval);
                }
            }
        }
        self.checkpoint();
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
    /// `max_batch_events` is a cap: an item that would pass it waits for the next
    /// round (`next`), unless it is the round's first (a single request larger than
    /// the cap is written alone).
    fn collect(&mut self) -> Vec<QueuedRequest> {
        let mut batch = std::mem::take(&mut self.held);
        let mut events = 0;
        while let Some(item) = self.next.take().or_else(|| self.queue.pop()) {
            let len = item.records.len();
            if events > 0 && events + len > self.config.max_batch_events {
                self.next = Some(item);
                break;
            }
            events += len;
            batch.push(item);
            if events >= self.config.max_batch_events {
                break;
            }
        }
        batch
    }

    /// Write one batch. Returns whether any item reached a final outcome.
    fn write_batch(&mut self, batch: Vec<QueuedRequest>) -> bool {
        // Nothing outside this batch is in flight any more (no queued item, no
        // batch awaiting its settler, no handler able to push): a twin that is
        // not final by now never will be.
        let batch_cost: usize = batch.iter().map(QueuedRequest::cost).sum();
        let drained = self.queue.is_closed() && self.queue.is_empty() && self.queue.in_flight() == batch_cost;
        let deps: Vec<Dependencies<'_>> =
            batch.iter().map(|p| Dependencies { ticket: p.claims.ticket(), twins: &p.twins }).collect();
        let verdicts = plan(&deps, drained);
        drop(deps);
        let mut to_write = Vec::with_capacity(batch.len());
        let mut released = 0;
        for (item, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Write => to_write.push(item),
                Verdict::Hold => self.held.push(item),
                Verdict::Fail(reason) => released += self.fail(item, reason),
            }
        }
        if released > 0 {
            self.queue.release(released);
        }
        let settled = released > 0 || !to_write.is_empty();
        if !to_write.is_empty() {
            self.write_items(to_write);
        }
        settled
    }

    /// Append and commit, then hand the items to the settler. On failure the
    /// items go to `recovery`, which gives back the budget of those it fails.
    fn write_items(&mut self, items: Vec<QueuedRequest>) {
        if !self.ensure_open() {
            // Still closed after an earlier I/O error: as good as a failed commit.
            let failures = self.stats.commit_failed();
            return self.not_stored(items, failures);
        }
        let rows = items.iter().flat_map(|p| p.records.iter()).map(|r| Row::new(&r.key, &r.bytes));
        let duplicates: u64 = items.iter().map(|p| p.duplicates).sum();
        let started = Instant::now();
        let before = self.head;
        let appended = self.store.append(&mut self.head, rows, duplicates);
        // Idle time counts from the end of the last batch: counted from its
        // start, a batch that took longer than CHECKPOINT_WHEN_IDLE_FOR made
        // the next empty poll checkpoint in the middle of a load.
        self.last_write = Instant::now();
        match appended {
            Ok(()) => {
                self.stats.commit_succeeded();
                self.hand_to_settler(items, before, started);
            }
            Err(error) => self.append_failed(Attempt::new(items, before, duplicates, started), &error),
        }
    }

    /// Apply the tail to redb (`store::tail`). A failure is a storage
    /// error like a failed checkpoint: the writer reopens the database, whose
    /// replay of the journal applies them.
    fn apply_tail(&mut self) {
        if !self.store.is_open() || self.store.tail_events() == 0 {
            return;
        }
        if let Err(error) = self.store.apply_tail() {
            self.checkpoint_failed(&error);
        }
    }

    /// Make the journaled batches durable in redb, if there are any. A failure
    /// is a storage error like a failed commit: the writer reopens the database
    /// (its replay of the journal loses nothing).
    fn checkpoint(&mut self) {
        if !self.store.is_open() || self.store.journal_bytes() == 0 {
            return;
        }
        if let Err(error) = self.store.checkpoint() {
            self.checkpoint_failed(&error);
        }
    }

    pub(super) fn hand_to_settler(&mut self, items: Vec<QueuedRequest>, before: Head, started: Instant) {
        let figures = BatchCommitted {
            unique: self.head.unique - before.unique,
            duplicates: self.head.duplicates - before.duplicates,
            commit_us: started.elapsed().as_micros() as u64,
        };
        if let Err(batch) = self.settler.settle(CommittedBatch { items, figures }) {
            // Only if the settler thread died. The batch is committed: settle it
            // here, never drop it (dropping would release committed keys).
            tracing::error!("settler thread gone; settling on the writer");
            self.settler.settle_here(batch);
        }
    }

    pub(super) fn fail(&self, item: QueuedRequest, reason: FailReason) -> usize {
        if item.ack == AckMode::Buffered && item.claims.ticket().progress() != Progress::Claimed {
            tracing::warn!(%reason, events = item.records.len(), "a buffered acknowledgement could not be kept");
        }
        let cost = item.cost();
        item.claims.fail(reason);
        cost
    }
}

/// Clears `writer_running` when the writer thread ends, panics included.
struct RunningFlag<'a>(&'a Stats);

impl Drop for RunningFlag<'_> {
    fn drop(&mut self) {
        self.0.writer_stopped();
    }
}

#[cfg(test)]
mod tests;
