//! What the writer does when a commit fails. redb refuses every write after an
//! I/O error until the database is reopened, so the writer reopens it at once;
//! the head it reads back decides the batch:
//! - the batch is there (the commit reached the disk after all): it is settled
//!   like any committed batch, 200s included;
//! - it is not: durable requests get 503 (claims released), buffered ones,
//!   already acknowledged, are held and written again after a backoff;
//! - the disk cannot tell yet (the reopen fails too): the batch is *uncertain*.
//!   Its durable requests get their 503 at once, but its keys stay claimed, so a
//!   retry meanwhile shares the fate of a failed twin (503) and can never store
//!   an event a second time. The first reopen that succeeds (before the next
//!   batch, or every `REOPEN_EVERY` while idle) resolves it as above, before any
//!   reader sees the database again.
//!
//! The head is always taken from disk after a reopen, so seqs never repeat.

use std::thread;
use std::time::{Duration, Instant};

use super::{Attempt, Uncertain, Writer};
use crate::ack::{AckMode, FailReason, Progress};
use crate::queue::QueuedRequest;
use crate::store::{Head, Recovered, WriteError};

/// How often an idle writer retries opening a database closed by an I/O error.
const REOPEN_EVERY: Duration = Duration::from_millis(100);

/// Same batch boundary and counters (topic ids follow from the events).
fn same(a: &Head, b: &Head) -> bool {
    (a.next_seq, a.unique, a.duplicates) == (b.next_seq, b.unique, b.duplicates)
}

impl Writer {
    /// The commit of `attempt` failed: reopen, and settle, fail or keep it
    /// uncertain by what the disk shows.
    pub(super) fn append_failed(&mut self, attempt: Attempt, error: &WriteError) {
        let failures = self.stats.commit_failed();
        self.stats.storage_failed(error);
        tracing::error!(%error, items = attempt.items.len(), failures, "commit failed; reopening the database");
        let mut pending = Some(attempt);
        if self.reopen(|writer, recovered| writer.resolve(pending.take(), &recovered.head, failures)) {
            return;
        }
        let attempt = pending.take().expect("resolve runs only on a successful reopen");
        for item in attempt.items.iter().filter(|item| item.ack == AckMode::Durable) {
            item.claims.ticket().advance(Progress::Failed(FailReason::Storage));
        }
        tracing::warn!(
            items = attempt.items.len(),
            "the failed commit is uncertain until the database reopens"
        );
        self.uncertain = Some(Uncertain(attempt));
        backoff(failures);
    }

    /// A checkpoint, or the tail's transaction, failed:
    /// no batch is at stake (each is in the journal, and acknowledged), so only
    /// reopen, which replays the journal.
    pub(super) fn checkpoint_failed(&mut self, error: &WriteError) {
        let failures = self.stats.commit_failed();
        self.stats.storage_failed(error);
        tracing::error!(%error, failures, "checkpoint or write-behind commit failed; reopening the database");
        self.reopen(|_, _| {});
    }

    /// True once the database is open: reopened here if an earlier error closed
    /// it, with the uncertain batch resolved before any reader can see it.
    pub(super) fn ensure_open(&mut self) -> bool {
        if self.store.is_open() {
            return true;
        }
        let uncertain = self.uncertain.take();
        let failures = self.stats.failing_commits();
        let mut pending = uncertain.map(|Uncertain(attempt)| attempt);
        let reopened =
            self.reopen(|writer, recovered| writer.resolve(pending.take(), &recovered.head, failures));
        self.uncertain = pending.map(Uncertain);
        reopened
    }

    /// While idle with the database closed, try `ensure_open` every
    /// `REOPEN_EVERY`, so that reads and `/stats` come back without a publish.
    pub(super) fn reopen_when_idle(&mut self, last_try: &mut Option<Instant>) {
        if self.store.is_open() {
            *last_try = None;
            return;
        }
        if last_try.is_none_or(|at| at.elapsed() >= REOPEN_EVERY) {
            *last_try = Some(Instant::now());
            self.ensure_open();
        }
    }

    /// Nothing of `items` was stored: fail the durable ones (503), hold the
    /// buffered ones (already acknowledged) for a retry after a backoff.
    pub(super) fn not_stored(&mut self, items: Vec<QueuedRequest>, failures: u64) {
        let mut released = 0;
        for item in items {
            if item.ack == AckMode::Buffered && !self.queue.is_closed() {
                self.held.push(item);
            } else {
                released += self.fail(item, FailReason::Storage);
            }
        }
        self.queue.release(released);
        if !self.held.is_empty() {
            backoff(failures);
        }
    }

    /// Reopen the database; on success `decide` runs before readers see it, and
    /// the head is taken from disk. False if it cannot be reopened now (`append`
    /// then fails fast until it can).
    fn reopen(&mut self, decide: impl FnOnce(&mut Writer, &Recovered)) -> bool {
        let store = self.store.clone();
        let reopened = store.reopen(|recovered| {
            self.head = recovered.head;
            decide(self, recovered);
        });
        match reopened {
            Ok(recovered) => {
                tracing::info!(next_seq = recovered.head.next_seq, "database reopened");
                true
            }
            Err(error) => {
                self.stats.storage_failed(&error);
                tracing::error!(%error, "cannot reopen the database; publishes get 503 until it can");
                false
            }
        }
    }

    /// What the disk shows of `attempt`, if there was one.
    fn resolve(&mut self, attempt: Option<Attempt>, found: &Head, failures: u64) {
        let Some(attempt) = attempt else { return };
        if same(found, &attempt.expected) {
            tracing::warn!("the failed commit reached the disk after all; settling it");
            self.stats.commit_succeeded();
            return self.hand_to_settler(attempt.items, attempt.before, attempt.started);
        }
        if !same(found, &attempt.before) {
            // Only this thread writes, so the disk holds one of the two heads.
            tracing::error!(?found, before = ?attempt.before, "the database shows neither head of the failed commit");
        }
        self.not_stored(attempt.items, failures);
    }
}

fn backoff(failures: u64) {
    thread::sleep(Duration::from_millis(10u64 << failures.min(7)));
}
