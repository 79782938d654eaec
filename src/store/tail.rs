//! The tail (write-behind): small batches are acknowledged once their journal
//! frame is synced, and applied to redb later, several at a time in one
//! transaction. redb's commit has a fixed cost (the pages of five tables, its
//! allocator state, the kernel's write path for all of them) that a group commit
//! of ~16 single events paid in full; the journal's append is what makes a batch
//! durable.
//!
//! Promises:
//! - **Seen as soon as acknowledged.** Until its transaction commits, a batch is
//!   in the tail, and every read joins the tail to what redb shows: `contains`
//!   (the dedup's exact disk check), `read_page` and `topics` (`store::read`). A
//!   reader takes the tail's batches *before* its read transaction begins, and
//!   the writer drops a batch only *after* its commit and the key-log mirror's
//!   update (`Store::apply_tail`), so every reader finds a batch in one of the
//!   two; one in both is read from redb only (by the seq redb's `META` shows).
//! - **In order.** The tail is applied oldest first, before any batch that does
//!   not go to it (a larger one, a checkpoint): redb's seqs stay one sequence,
//!   and the journal is reset only by a durable commit that covers the tail.
//! - **Durable by the journal.** A batch in the tail is in the journal (synced),
//!   so a crash or a failed commit loses nothing: the next open, or the writer's
//!   reopen, replays it, and starts the store again with an empty tail.
//! - **Bounded.** The tail is applied once it reaches [`MAX_EVENTS`],
//!   [`MAX_BYTES`] or [`MAX_BATCHES`] (by the append that filled it, before
//!   that batch is acknowledged), and when the writer idles.

use std::collections::VecDeque;
use std::sync::Arc;

use super::codec;
use super::{Head, Row};
use crate::event::EventKey;

/// Frames up to this size go to the tail (a single event's frame is ~300 bytes);
/// larger batches are applied to redb before they are acknowledged, as the
/// per-event work then outweighs a commit's fixed cost. So are batches of only
/// duplicates: their transaction is what moves a running index merge on while
/// a replay stores nothing.
pub(super) const MAX_FRAME_BYTES: usize = 64 << 10;

/// The tail is applied once it holds this many events...
const MAX_EVENTS: usize = 512;
/// ... or this many bytes of records...
const MAX_BYTES: usize = 256 << 10;
/// ... or this many batches (each is one more for every read to look through).
const MAX_BATCHES: usize = 32;

/// One batch of the tail: its records back to back, and per record its key's hash
/// and its topic (the rows `apply` needs, without decoding).
pub(super) struct Batch {
    pub frame_no: u64,
    pub first_seq: u64,
    pub duplicates: u64,
    records: Vec<u8>,
    topics: String,
    /// Per record: its key's hash, where it and its topic end in the buffers.
    index: Vec<(u64, u32, u32)>,
}

impl Batch {
    pub fn new<'a>(
        frame_no: u64,
        first_seq: u64,
        duplicates: u64,
        rows: impl Iterator<Item = Row<'a>>,
    ) -> Self {
        let mut batch = Batch {
            frame_no,
            first_seq,
            duplicates,
            records: Vec::new(),
            topics: String::new(),
            index: Vec::new(),
        };
        for row in rows {
            batch.records.extend_from_slice(row.bytes);
            batch.topics.push_str(row.topic);
            batch.index.push((row.hash, batch.records.len() as u32, batch.topics.len() as u32));
        }
        batch
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The rows, in seq order from `first_seq`.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> + Clone {
        let starts = std::iter::once((0, 0)).chain(self.index.iter().map(|&(_, r, t)| (r, t)));
        self.index.iter().zip(starts).map(|(&(hash, record_end, topic_end), (record_start, topic_start))| {
            Row {
                hash,
                topic: &self.topics[topic_start as usize..topic_end as usize],
                bytes: &self.records[record_start as usize..record_end as usize],
            }
        })
    }

    /// Whether `key` is one of the batch's records (its exact bytes).
    pub fn holds(&self, key: &EventKey) -> Result<bool, bincode::error::DecodeError> {
        for row in self.rows().filter(|row| row.hash == key.hash()) {
            if codec::decode_key(row.bytes)? == (key.topic(), key.event_id()) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The tail: its batches, oldest first, and the head redb is at without them.
pub(super) struct Tail {
    batches: VecDeque<Arc<Batch>>,
    events: usize,
    bytes: usize,
    /// What redb holds: the head of its last commit in this process.
    pub applied: Head,
}

impl Tail {
    /// An empty tail, redb at `applied` (after an open or a reopen).
    pub fn new(applied: Head) -> Self {
        Tail { batches: VecDeque::new(), events: 0, bytes: 0, applied }
    }

    pub fn push(&mut self, batch: Batch) {
        debug_assert_eq!(
            batch.first_seq,
            self.applied.next_seq + self.events as u64,
            "the tail is in seq order"
        );
        self.events += batch.len();
        self.bytes += batch.records.len();
        self.batches.push_back(Arc::new(batch));
    }

    /// The tail's batches, for one read or one apply.
    pub fn snapshot(&self) -> Vec<Arc<Batch>> {
        self.batches.iter().cloned().collect()
    }

    /// After the commit of the oldest `count` batches, which left redb at `applied`.
    pub fn committed(&mut self, count: usize, applied: Head) {
        for batch in self.batches.drain(..count) {
            self.events -= batch.len();
            self.bytes -= batch.records.len();
        }
        self.applied = applied;
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn events(&self) -> usize {
        self.events
    }

    /// Whether the tail should be applied now.
    pub fn full(&self) -> bool {
        self.events >= MAX_EVENTS || self.bytes >= MAX_BYTES || self.batches.len() >= MAX_BATCHES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KeyHasher;

    #[test]
    fn a_tail_batch_gives_back_its_rows_and_finds_its_keys() {
        let hasher = KeyHasher::new(7);
        let keys = [EventKey::new(hasher, "orders", "a"), EventKey::new(hasher, "clicks", "b")];
        let bytes: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                codec::encode(&codec::Record {
                    topic: k.topic(),
                    event_id: k.event_id(),
                    timestamp: "t",
                    source: "s",
                    payload: "{}",
                    received_at_us: 1,
                })
            })
            .collect();
        let rows = keys.iter().zip(&bytes).map(|(k, b)| Row::new(k, b));
        let batch = Batch::new(3, 10, 1, rows);
        let back: Vec<(u64, &str, &[u8])> = batch.rows().map(|r| (r.hash, r.topic, r.bytes)).collect();
        assert_eq!(
            back,
            vec![
                (keys[0].hash(), "orders", bytes[0].as_slice()),
                (keys[1].hash(), "clicks", bytes[1].as_slice())
            ]
        );
        assert!(batch.holds(&keys[1]).unwrap());
        assert!(
            !batch.holds(&EventKey::new(hasher, "orders", "b")).unwrap(),
            "exact bytes, not the topic alone"
        );
    }

    /// Reads look through every batch, so the tail is bounded in batches as well
    /// as in events and bytes.
    #[test]
    fn the_tail_is_full_at_its_bound_in_batches() {
        let key = EventKey::new(KeyHasher::new(7), "t", "k");
        let bytes = [0u8; 8];
        let mut tail = Tail::new(Head::default());
        for n in 0..MAX_BATCHES as u64 {
            assert!(!tail.full(), "{n} batches of one event");
            tail.push(Batch::new(n + 1, n, 0, std::iter::once(Row::new(&key, &bytes))));
        }
        assert!(tail.full());
        tail.committed(MAX_BATCHES, Head { next_seq: MAX_BATCHES as u64, ..Head::default() });
        assert!(tail.is_empty() && !tail.full());
    }

    /// Invariant 1b: a reader beside the writer finds every acknowledged event,
    /// in the tail or in redb, and reads each once, wherever the tail's
    /// transactions fall between the reader's steps.
    #[test]
    fn a_reader_beside_the_writer_finds_every_acknowledged_event_once() {
        use crate::event::Seq;
        use crate::store::{Store, StoreConfig};
        use std::sync::atomic::{AtomicUsize, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let (store, rec) = Store::open(StoreConfig::new(dir.path().join("db.redb"), 1 << 20)).unwrap();
        let store = Arc::new(store);
        let hasher = KeyHasher::new(rec.key_hash_seed);
        let keys: Arc<Vec<EventKey>> =
            Arc::new((0..2000).map(|i| EventKey::new(hasher, "t", i.to_string())).collect());
        let acked = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (store, keys, acked) = (store.clone(), keys.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut head = rec.head;
                for (n, batch) in keys.chunks(2).enumerate() {
                    let bytes: Vec<Vec<u8>> = batch.iter().map(record).collect();
                    store
                        .append(&mut head, batch.iter().zip(&bytes).map(|(k, b)| Row::new(k, b)), 0)
                        .unwrap();
                    acked.store((n + 1) * 2, Ordering::Release);
                    if n % 2 == 1 {
                        store.apply_tail().unwrap(); // as often as the reader reads
                    }
                }
            })
        };
        let mut rounds = 0;
        while !writer.is_finished() {
            let n = acked.load(Ordering::Acquire);
            assert!(store.contains(&keys[..n]).unwrap().iter().all(|&found| found), "{n} acknowledged");
            let page = store.read_page(None, Seq(0), 10_000).unwrap();
            let seqs: Vec<u64> = page.events.iter().map(|e| e.seq.0).collect();
            assert!(seqs.len() >= n, "{} read of {n} acknowledged", seqs.len());
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "each event once, in order");
            rounds += 1;
        }
        writer.join().unwrap();
        assert!(rounds > 10, "the reader ran beside the writer ({rounds} rounds)");
    }

    fn record(key: &EventKey) -> Vec<u8> {
        codec::encode(&codec::Record {
            topic: key.topic(),
            event_id: key.event_id(),
            timestamp: "t",
            source: "s",
            payload: "{}",
            received_at_us: 1,
        })
    }
}
