//! The service's own figures, kept as observable events (after Vector's
//! `internal_events`): each stage reports what happened through one method
//! (`dedup_decided`, `batch_committed`, `commit_failed`, `rejected`...), and
//! nothing outside this file touches a counter.
//!
//! The figures are read as the typed groups below ([`WriterStats`],
//! [`DedupStats`]), which `GET /stats` returns inside its body. `GET /metrics` is
//! that same body flattened (`metrics::flatten`), so a figure has one name in
//! both: the path of its field. [`Counter`] and [`Gauge`] mark each field's kind.
//!
//! `unique_processed` and `duplicate_dropped` start from the persisted counters
//! and are bumped only by the settling of a batch whose commit returned: they
//! equal the persisted counters and count exactly the requests whose outcome is
//! stored. `received` is never kept: it is their sum, so
//! `received == unique + duplicates` holds for every reader at every instant.
//! The other figures describe this process only.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::Head;

/// A figure that only grows (a Prometheus counter). Serialized as a plain number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter(pub u64);

/// A figure that goes up and down (a Prometheus gauge). Serialized as a plain number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Gauge<T = u64>(pub T);

/// One request's dedup decisions (the handler, once every key is decided).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupTally {
    /// Duplicates decided in memory: by the window, the in-flight map or inside the request.
    pub in_memory: u64,
    /// Of those, duplicates of a key another request still had in flight.
    pub in_flight_twins: u64,
    /// Claimed keys the filter had never seen: new without any disk access.
    pub filter_negatives: u64,
    /// Filter hits the exact disk lookup confirmed as duplicates.
    pub on_disk: u64,
    /// Filter hits the exact disk lookup proved new.
    pub false_positives: u64,
}

/// One transaction whose commit returned (the settler, for the batch it settles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCommitted {
    pub unique: u64,
    pub duplicates: u64,
    /// Append plus commit (the journal's fsync or redb's), in microseconds.
    pub commit_us: u64,
}

/// The writer's figures, in `/stats` as `writer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WriterStats {
    /// Transactions whose commit returned, since start.
    #[schema(value_type = u64)]
    pub batches: Counter,
    /// Commits that failed since start.
    #[schema(value_type = u64)]
    pub commit_failures: Counter,
    /// Commits failed since the last success (`/health` is 503 from 3 on).
    #[schema(value_type = u64)]
    pub failing_commits: Gauge,
    /// Duration of the last commit, in milliseconds.
    #[schema(value_type = f64)]
    pub last_commit_ms: Gauge<f64>,
    /// Mean commit duration since start, in milliseconds.
    #[schema(value_type = f64)]
    pub avg_commit_ms: Gauge<f64>,
    /// New events in the last committed batch.
    #[schema(value_type = u64)]
    pub last_batch_events: Gauge,
    /// Committed keys not yet merged into the sorted on-disk index: the key log,
    /// mirrored in memory (~35 bytes a key) until a merge takes them. Bounded by
    /// `INDEX_MERGE_KEYS` plus what arrives while a merge runs.
    #[schema(value_type = u64)]
    pub key_log_pairs: Gauge,
    /// Keys in the upper, small sorted run of the on-disk index, not yet moved
    /// into the lower one (on disk only; no memory per key).
    #[schema(value_type = u64)]
    pub upper_index_pairs: Gauge,
    /// Bytes in the journal since redb's last durable commit (a checkpoint):
    /// small batches made durable by the journal, replayed after a crash.
    #[schema(value_type = u64)]
    pub journal_bytes: Gauge,
    /// Journal frames the last open (startup, or a reopen after an I/O error)
    /// replayed into redb: batches acknowledged before a crash, not yet in a
    /// durable redb commit.
    #[schema(value_type = u64)]
    pub journal_frames_replayed: Gauge,
    /// Events of small batches acknowledged by their journal frame and not yet
    /// applied to redb (write-behind; every read already sees them).
    #[schema(value_type = u64)]
    pub tail_events: Gauge,
}

/// The dedup state's figures, in `/stats` as `dedup`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DedupStats {
    /// Keys in memory: in flight, and in the window of recently stored keys.
    #[schema(value_type = u64)]
    pub recent_keys: Gauge,
    /// Heap bytes of the window of recently stored keys (its slot tables and
    /// key records; `recent_window_bytes / recent_keys` is the cost of a key).
    #[schema(value_type = u64)]
    pub recent_window_bytes: Gauge,
    /// Duplicates decided in memory, since start.
    #[schema(value_type = u64)]
    pub duplicates_in_memory: Counter,
    /// Of those, duplicates of a key that another request still had in flight:
    /// they were acknowledged only once that request's outcome was known.
    #[schema(value_type = u64)]
    pub duplicates_of_in_flight: Counter,
    /// Duplicates confirmed by an exact lookup on disk after a filter hit, since start.
    #[schema(value_type = u64)]
    pub duplicates_on_disk: Counter,
    /// New keys decided by a filter miss, without any disk access, since start.
    #[schema(value_type = u64)]
    pub filter_negatives: Counter,
    /// Filter hits the disk lookup proved new, since start.
    #[schema(value_type = u64)]
    pub filter_false_positives: Counter,
    /// Keys the Bloom filter is sized for.
    #[schema(value_type = u64)]
    pub filter_capacity: Gauge,
    /// Keys added to the Bloom filter.
    #[schema(value_type = u64)]
    pub filter_items: Gauge,
    /// Size of the Bloom filter's bit array.
    #[schema(value_type = u64)]
    pub filter_bytes: Gauge,
    /// This start loaded the filter saved at the last clean shutdown.
    #[schema(value_type = bool)]
    pub filter_from_snapshot: Gauge<bool>,
    /// Keys this start read from disk into the filter: all of them after a full
    /// scan, only those stored after the snapshot otherwise.
    #[schema(value_type = u64)]
    pub filter_keys_scanned_at_start: Gauge,
}

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    unique_processed: AtomicU64,
    duplicate_dropped: AtomicU64,
    duplicates_in_memory: AtomicU64,
    duplicates_of_in_flight: AtomicU64,
    duplicates_on_disk: AtomicU64,
    filter_false_positives: AtomicU64,
    filter_negatives: AtomicU64,
    batches: AtomicU64,
    commit_failures: AtomicU64,
    /// The one count of commits failed in a row: the writer sets it, `/health`
    /// and the writer's backoff read it.
    failing_commits: AtomicU64,
    last_commit_us: AtomicU64,
    commit_us_total: AtomicU64,
    last_batch_events: AtomicU64,
    rejected_queue_full: AtomicU64,
    writer_running: AtomicBool,
    /// Refused requests by the `error` code of their JSON body.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// The last storage error since the last successful commit (what `/health`
    /// shows an operator: "No space left on device", "Input/output error"...).
    storage_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn new(head: &Head) -> Self {
        Stats {
            started: Instant::now(),
            unique_processed: AtomicU64::new(head.unique),
            duplicate_dropped: AtomicU64::new(head.duplicates),
            duplicates_in_memory: AtomicU64::new(0),
            duplicates_of_in_flight: AtomicU64::new(0),
            duplicates_on_disk: AtomicU64::new(0),
            filter_false_positives: AtomicU64::new(0),
            filter_negatives: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            failing_commits: AtomicU64::new(0),
            last_commit_us: AtomicU64::new(0),
            commit_us_total: AtomicU64::new(0),
            last_batch_events: AtomicU64::new(0),
            rejected_queue_full: AtomicU64::new(0),
            writer_running: AtomicBool::new(false),
            rejected: Mutex::new(BTreeMap::new()),
            storage_error: Mutex::new(None),
        }
    }

    /// Handlers: one request's keys are decided.
    pub fn dedup_decided(&self, tally: &DedupTally) {
        self.duplicates_in_memory.fetch_add(tally.in_memory, Relaxed);
        self.duplicates_of_in_flight.fetch_add(tally.in_flight_twins, Relaxed);
        self.filter_negatives.fetch_add(tally.filter_negatives, Relaxed);
        self.duplicates_on_disk.fetch_add(tally.on_disk, Relaxed);
        self.filter_false_positives.fetch_add(tally.false_positives, Relaxed);
    }

    /// Handlers: a publish found the queue full and was refused (503).
    pub fn queue_full(&self) {
        self.rejected_queue_full.fetch_add(1, Relaxed);
    }

    /// The HTTP guard: a request was refused with this `error` code.
    pub fn rejected(&self, code: &'static str) {
        *self.rejected.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
    }

    /// Settling only (`Settler::settle`): one batch's commit returned and the
    /// batch is settled.
    pub fn batch_committed(&self, batch: &BatchCommitted) {
        self.unique_processed.fetch_add(batch.unique, Relaxed);
        self.duplicate_dropped.fetch_add(batch.duplicates, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.last_commit_us.store(batch.commit_us, Relaxed);
        self.commit_us_total.fetch_add(batch.commit_us, Relaxed);
        self.last_batch_events.store(batch.unique, Relaxed);
    }

    /// Writer only: a commit returned `Ok`.
    pub fn commit_succeeded(&self) {
        if self.failing_commits.swap(0, Relaxed) > 0 {
            *self.storage_error.lock().expect("stats lock") = None;
        }
    }

    /// Writer only: a commit failed. Returns the failures in a row, this one included.
    pub fn commit_failed(&self) -> u64 {
        self.commit_failures.fetch_add(1, Relaxed);
        self.failing_commits.fetch_add(1, Relaxed) + 1
    }

    /// Writer only: what the disk answered to a commit or a reopen that failed.
    /// Cleared by the next successful commit.
    pub fn storage_failed(&self, error: &dyn std::fmt::Display) {
        *self.storage_error.lock().expect("stats lock") = Some(error.to_string());
    }

    /// The last storage error since the last successful commit, if any.
    pub fn storage_error(&self) -> Option<String> {
        self.storage_error.lock().expect("stats lock").clone()
    }

    /// `writer::spawn`: the writer thread is starting.
    pub fn writer_started(&self) {
        self.writer_running.store(true, Relaxed);
    }

    /// The writer thread has ended (panics included) or could not start.
    pub fn writer_stopped(&self) {
        self.writer_running.store(false, Relaxed);
    }

    /// `(received, unique_processed, duplicate_dropped)`, consistent by construction.
    pub fn counts(&self) -> (u64, u64, u64) {
        let unique = self.unique_processed.load(Relaxed);
        let duplicates = self.duplicate_dropped.load(Relaxed);
        (unique + duplicates, unique, duplicates)
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
    pub fn writer_running(&self) -> bool {
        self.writer_running.load(Relaxed)
    }
    pub fn failing_commits(&self) -> u64 {
        self.failing_commits.load(Relaxed)
    }
    pub fn rejected_queue_full(&self) -> u64 {
        self.rejected_queue_full.load(Relaxed)
    }
    pub fn rejected_by_code(&self) -> BTreeMap<String, Counter> {
        let rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        rejected.iter().map(|(code, n)| ((*code).to_owned(), Counter(*n))).collect()
    }

    /// The writer's figures; the key log's and the journal's come from the store.
    pub fn writer(&self, store: &crate::store::Store) -> WriterStats {
        let batches = self.batches.load(Relaxed);
        let total_us = self.commit_us_total.load(Relaxed);
        let avg_commit_ms = if batches == 0 { 0.0 } else { total_us as f64 / batches as f64 / 1e3 };
        WriterStats {
            batches: Counter(batches),
            commit_failures: Counter(self.commit_failures.load(Relaxed)),
            failing_commits: Gauge(self.failing_commits()),
            last_commit_ms: Gauge(self.last_commit_us.load(Relaxed) as f64 / 1e3),
            avg_commit_ms: Gauge(avg_commit_ms),
            last_batch_events: Gauge(self.last_batch_events.load(Relaxed)),
            key_log_pairs: Gauge(store.key_log_pairs() as u64),
            upper_index_pairs: Gauge(store.upper_index_pairs()),
            journal_bytes: Gauge(store.journal_bytes()),
            journal_frames_replayed: Gauge(store.journal_frames_replayed()),
            tail_events: Gauge(store.tail_events() as u64),
        }
    }

    /// The dedup figures; the sizes come from the dedup state itself.
    pub fn dedup(&self, dedup: &crate::dedup::Deduper) -> DedupStats {
        DedupStats {
            recent_keys: Gauge(dedup.recent_len() as u64),
            recent_window_bytes: Gauge(dedup.window_bytes() as u64),
            duplicates_in_memory: Counter(self.duplicates_in_memory.load(Relaxed)),
            duplicates_of_in_flight: Counter(self.duplicates_of_in_flight.load(Relaxed)),
            duplicates_on_disk: Counter(self.duplicates_on_disk.load(Relaxed)),
            filter_negatives: Counter(self.filter_negatives.load(Relaxed)),
            filter_false_positives: Counter(self.filter_false_positives.load(Relaxed)),
            filter_capacity: Gauge(dedup.filter_capacity() as u64),
            filter_items: Gauge(dedup.filter_items()),
            filter_bytes: Gauge(dedup.filter_bytes() as u64),
            filter_from_snapshot: Gauge(dedup.loaded_from_snapshot()),
            filter_keys_scanned_at_start: Gauge(dedup.keys_scanned_at_start()),
        }
    }
}
