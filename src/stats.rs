//! Counters shown by `GET /stats` and `GET /health`.
//!
//! `unique_processed` and `duplicate_dropped` are bumped only by the writer, right
//! after the commit that persisted them, so they equal the persisted counters and
//! count exactly the requests whose outcome is committed. `received` is never
//! stored: it is their sum, so `received == unique + duplicates` holds for every
//! reader at every instant. The other counters describe this process only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use crate::store::Head;

#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    unique_processed: AtomicU64,
    duplicate_dropped: AtomicU64,
    /// Duplicates decided by the recent map (including repeats inside one request).
    pub duplicates_in_memory: AtomicU64,
    /// Duplicates confirmed by an exact lookup on disk after a filter hit.
    pub duplicates_on_disk: AtomicU64,
    /// Filter hits the disk lookup proved new (false positives).
    pub filter_false_positives: AtomicU64,
    /// Claimed keys the filter had never seen: new without any disk access.
    pub filter_negatives: AtomicU64,
    pub writer_batches: AtomicU64,
    pub writer_commit_failures: AtomicU64,
    /// Commits failed since the last success (writer sets; `/health` reads).
    pub writer_failing_commits: AtomicU64,
    pub writer_last_commit_us: AtomicU64,
    pub writer_commit_us_total: AtomicU64,
    pub writer_last_batch_events: AtomicU64,
    /// Requests refused with 503 because the queue was full.
    pub rejected_queue_full: AtomicU64,
    pub writer_running: AtomicBool,
    /// Seconds per writer transaction (append + commit).
    pub commit_seconds: Histogram,
    /// New events per writer transaction.
    pub batch_events: Histogram,
}

impl Stats {
    pub fn new(head: &Head) -> Self {
        Stats {
            started: Instant::now(),
            unique_processed: AtomicU64::new(head.unique),
            duplicate_dropped: AtomicU64::new(head.duplicates),
            duplicates_in_memory: AtomicU64::new(0),
            duplicates_on_disk: AtomicU64::new(0),
            filter_false_positives: AtomicU64::new(0),
            filter_negatives: AtomicU64::new(0),
            writer_batches: AtomicU64::new(0),
            writer_commit_failures: AtomicU64::new(0),
            writer_failing_commits: AtomicU64::new(0),
            writer_last_commit_us: AtomicU64::new(0),
            writer_commit_us_total: AtomicU64::new(0),
            writer_last_batch_events: AtomicU64::new(0),
            rejected_queue_full: AtomicU64::new(0),
            writer_running: AtomicBool::new(false),
            commit_seconds: Histogram::new(crate::metrics::latency_buckets()),
            batch_events: Histogram::new(crate::metrics::batch_buckets()),
        }
    }

    /// Writer only: one batch committed.
    pub fn batch_committed(&self, unique: u64, duplicates: u64, commit_us: u64) {
        self.unique_processed.fetch_add(unique, Relaxed);
        self.duplicate_dropped.fetch_add(duplicates, Relaxed);
        self.writer_batches.fetch_add(1, Relaxed);
        self.writer_last_commit_us.store(commit_us, Relaxed);
        self.writer_commit_us_total.fetch_add(commit_us, Relaxed);
        self.writer_last_batch_events.store(unique, Relaxed);
        self.commit_seconds.observe(commit_us as f64 / 1e6);
        self.batch_events.observe(unique as f64);
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
}
