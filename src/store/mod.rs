//! Durable storage on redb: open and recover, append one batch per write
//! transaction, exact key lookups, paginated range reads, and the key scan that
//! rebuilds the Bloom filter at startup.
//!
//! Callers: the writer thread (the only caller of [`Store::append`]) and read
//! paths on `spawn_blocking` threads. redb is MVCC: reads never block the writer.
//! Promise: when `append` returns `Ok`, the batch's events, index entries and
//! counters are committed together and fsynced; on `Err` none of them are.

pub mod codec;
pub mod index;
pub mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::event::{EventKey, Seq};
use index::KeyIndex;
use schema::{EVENTS, KEY_INDEX, KEY_LOG, META, TOPIC_EVENTS, TOPICS, meta};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Open(#[from] redb::DatabaseError),
    #[error(transparent)]
    Transaction(#[from] redb::TransactionError),
    #[error(transparent)]
    Table(#[from] redb::TableError),
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("commit failed: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("corrupt record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error(transparent)]
    Chunk(#[from] codec::CorruptChunk),
    #[error("database schema version {found} is not supported (expected {expected})")]
    Schema { found: u64, expected: u64 },
    #[error("commit failed: injected fault")]
    Injected,
}

/// Where the next batch goes; owned by the writer, recovered at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub next_seq: u64,
    pub next_topic_id: u32,
    pub unique: u64,
    pub duplicates: u64,
}

/// What `open` found on disk.
#[derive(Debug, Clone, Copy)]
pub struct Recovered {
    pub key_hash_seed: u64,
    pub head: Head,
    pub stored_keys: u64,
}

/// One new event for `append`.
pub struct Row<'a> {
    pub key: &'a EventKey,
    pub bytes: &'a [u8],
}

/// A page of `GET /events`.
#[derive(Debug, Default)]
pub struct Page {
    /// `(seq, codec bytes)` in ascending `seq`.
    pub rows: Vec<(Seq, Vec<u8>)>,
    /// Cursor for the next page; `None` on the last page.
    pub next_after: Option<Seq>,
}

/// Fault injection for tests of the failure paths (commit errors, slow disks).
/// Inert unless set: one relaxed load per commit.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail this many upcoming commits.
    pub fail_commits: AtomicU32,
    /// Sleep this long before each commit.
    pub commit_delay_ms: AtomicU64,
}

pub struct Store {
    db: Database,
    /// In-memory mirror of `KEY_LOG` and the merge in progress.
    index: KeyIndex,
    /// Merge the key log into `KEY_INDEX` once it holds this many pairs.
    merge_threshold: usize,
    pub faults: Faults,
}

/// Default for `Store::open`'s `merge_threshold`.
pub const DEFAULT_MERGE_THRESHOLD: usize = 1 << 18;

impl Store {
    /// Open or create the database at `path` (parent directories included) and
    /// read back where the previous run stopped.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<(Store, Recovered), StoreError> {
        Store::open_with(path, cache_bytes, DEFAULT_MERGE_THRESHOLD)
    }

    pub fn open_with(
        path: &Path,
        cache_bytes: usize,
        merge_threshold: usize,
    ) -> Result<(Store, Recovered), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::DataDir { path: dir.display().to_string(), source })?;
        }
        let db = Database::builder().set_cache_size(cache_bytes).create(path)?;
        let store = Store { db, index: KeyIndex::default(), merge_threshold, faults: Faults::default() };
        let mut recovered = store.init()?;
        store.index.set_merged(recovered.stored_keys);
        recovered.stored_keys += store.load_key_log()?;
        Ok((store, recovered))
    }

    /// Create missing tables, fix the hash seed on first open, read the head.
    fn init(&self) -> Result<Recovered, StoreError> {
        let txn = self.db.begin_write()?;
        let recovered = {
            let mut meta_table = txn.open_table(META)?;
            let version = get_or_insert(&mut meta_table, meta::SCHEMA_VERSION, || schema::SCHEMA_VERSION)?;
            if version != schema::SCHEMA_VERSION {
                return Err(StoreError::Schema { found: version, expected: schema::SCHEMA_VERSION });
            }
            let key_hash_seed = get_or_insert(&mut meta_table, meta::KEY_HASH_SEED, random_seed)?;
            let read = |name| -> Result<u64, StoreError> {
                Ok(meta_table.get(name)?.map(|v| v.value()).unwrap_or(0))
            };
            let head = Head {
                next_seq: read(meta::NEXT_SEQ)?.max(1),
                next_topic_id: u32::try_from(txn.open_table(TOPICS)?.len()?).unwrap_or(u32::MAX),
                unique: read(meta::UNIQUE)?,
                duplicates: read(meta::DUPLICATES)?,
            };
            txn.open_table(EVENTS)?;
            txn.open_table(TOPIC_EVENTS)?;
            txn.open_table(KEY_LOG)?;
            let stored_keys = txn.open_table(KEY_INDEX)?.len()?;
            Recovered { key_hash_seed, head, stored_keys }
        };
        txn.commit()?;
        Ok(recovered)
    }

    /// Mirror the unmerged key log in memory (at open). Returns the pairs read.
    fn load_key_log(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let mut n = 0;
        for row in txn.open_table(KEY_LOG)?.iter()? {
            let pairs: Vec<(u64, u64)> = index::decode_pairs(row?.1.value()).collect();
            n += pairs.len() as u64;
            self.index.add(&pairs);
        }
        Ok(n)
    }

    /// Call `f` with the hash of every stored key (startup filter rebuild). A key
    /// caught mid-merge may be reported twice, which a filter does not mind.
    pub fn for_each_key_hash(&self, f: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let mut n = 0;
        for entry in txn.open_table(KEY_INDEX)?.iter()? {
            f(entry?.0.value().0);
            n += 1;
        }
        for row in txn.open_table(KEY_LOG)?.iter()? {
            for (hash, _) in index::decode_pairs(row?.1.value()) {
                f(hash);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Exact membership of each key, checked against the stored records.
    /// Candidates come from the unmerged log mirror and from `KEY_INDEX`; the mirror
    /// is read before the read transaction begins (see `index`, "Findable").
    pub fn contains(&self, keys: &[EventKey]) -> Result<Vec<bool>, StoreError> {
        let mut unmerged: Vec<Vec<u64>> = Vec::with_capacity(keys.len());
        for key in keys {
            let mut seqs = Vec::new();
            self.index.unmerged(key.hash(), &mut seqs);
            unmerged.push(seqs);
        }
        let txn = self.db.begin_read()?;
        let index = txn.open_table(KEY_INDEX)?;
        let events = txn.open_table(EVENTS)?;
        let is_key = |seq: u64, key: &EventKey| -> Result<bool, StoreError> {
            let found = with_record(&events, seq, |bytes| -> Result<bool, StoreError> {
                let record = codec::decode(bytes)?;
                Ok(record.topic == key.topic() && record.event_id == key.event_id())
            })?;
            found.unwrap_or(Ok(false))
        };
        keys.iter()
            .zip(unmerged)
            .map(|(key, seqs)| {
                for seq in seqs {
                    if is_key(seq, key)? {
                        return Ok(true);
                    }
                }
                for entry in index.range((key.hash(), 0)..=(key.hash(), u64::MAX))? {
                    if is_key(entry?.0.value().1, key)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .collect()
    }

    /// Append new events (in order) and count `duplicates`, in one transaction,
    /// together with the next slice of a running key-log merge. `head` advances
    /// only if the commit succeeds.
    pub fn append<'a>(
        &self,
        head: &mut Head,
        rows: impl Iterator<Item = Row<'a>>,
        duplicates: u64,
    ) -> Result<(), StoreError> {
        let mut next = *head;
        let txn = self.db.begin_write()?;
        let pairs = write_events(&txn, &mut next, rows)?;
        if let Some(&(_, first_seq)) = pairs.first() {
            txn.open_table(KEY_LOG)?.insert(first_seq, index::encode_pairs(&pairs).as_slice())?;
        }
        let merged_slice = self.write_merge_slice(&txn)?;
        next.unique += pairs.len() as u64;
        next.duplicates += duplicates;
        let mut meta_table = txn.open_table(META)?;
        meta_table.insert(meta::NEXT_SEQ, next.next_seq)?;
        meta_table.insert(meta::UNIQUE, next.unique)?;
        meta_table.insert(meta::DUPLICATES, next.duplicates)?;
        drop(meta_table);
        self.apply_faults()?;
        txn.commit()?;
        *head = next;
        self.index.add(&pairs);
        if let Some(slice) = merged_slice {
            self.index.slice_committed(slice);
        }
        self.index.maybe_start_merge(self.merge_threshold, head.next_seq);
        Ok(())
    }

    /// The next slice of a running merge, sorted: each tree leaf is touched once.
    fn write_merge_slice(&self, txn: &WriteTransaction) -> Result<Option<u8>, StoreError> {
        self.index.with_next_slice(|slice| {
            let Some(slice) = slice else { return Ok(None) };
            let mut tree = txn.open_table(KEY_INDEX)?;
            for pair in slice.pairs {
                tree.insert(pair, ())?;
            }
            if slice.last {
                txn.open_table(KEY_LOG)?.retain_in(..slice.snapshot_end_seq, |_, _| false)?;
            }
            Ok(Some(slice.id()))
        })
    }

    fn apply_faults(&self) -> Result<(), StoreError> {
        let delay = self.faults.commit_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let failing =
            self.faults.fail_commits.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if failing.is_ok() { Err(StoreError::Injected) } else { Ok(()) }
    }

    /// Up to `limit` events after `after`, of one topic or of all, in `seq` order.
    pub fn read_page(&self, topic: Option<&str>, after: Seq, limit: usize) -> Result<Page, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let Some(first) = after.0.checked_add(1) else {
            return Ok(Page::default());
        };
        let mut rows = Vec::with_capacity(limit.min(1024) + 1);
        match topic {
            None => {
                // The chunk holding `first` starts at or before it.
                let start = match events.range(..=first)?.next_back() {
                    Some(entry) => entry?.0.value(),
                    None => first,
                };
                'chunks: for entry in events.range(start..)? {
                    let (chunk_start, bytes) = entry?;
                    let chunk = codec::Chunk::open(bytes.value())?;
                    for i in 0..chunk.len() {
                        let seq = chunk_start.value() + i as u64;
                        if seq >= first {
                            rows.push((Seq(seq), chunk.get(i).unwrap_or_default().to_vec()));
                            if rows.len() > limit {
                                break 'chunks;
                            }
                        }
                    }
                }
            }
            Some(topic) => {
                let Some(id) = txn.open_table(TOPICS)?.get(topic)?.map(|v| v.value().0) else {
                    return Ok(Page::default());
                };
                let order = txn.open_table(TOPIC_EVENTS)?;
                // The run holding the cursor starts at or before it.
                let start = match order.range((id, 0)..=(id, after.0))?.next_back() {
                    Some(entry) => entry?.0.value().1,
                    None => first,
                };
                'runs: for run in order.range((id, start)..=(id, u64::MAX))? {
                    for seq in codec::decode_seqs(run?.1.value()).filter(|s| *s >= first) {
                        if let Some(bytes) = with_record(&events, seq, <[u8]>::to_vec)? {
                            rows.push((Seq(seq), bytes));
                        }
                        if rows.len() > limit {
                            break 'runs;
                        }
                    }
                }
            }
        }
        let next_after = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Ok(Page { rows, next_after })
    }

    /// Topics with stored events, sorted.
    pub fn topics(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOPICS)?;
        table.iter()?.map(|e| Ok(e?.0.value().to_owned())).collect()
    }
}

type EventsTable = redb::ReadOnlyTable<u64, &'static [u8]>;

/// Run `f` on the record stored under `seq`, found in the chunk that starts at or
/// before it.
fn with_record<R>(
    events: &EventsTable,
    seq: u64,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<Option<R>, StoreError> {
    let Some(entry) = events.range(..=seq)?.next_back() else { return Ok(None) };
    let (chunk_start, bytes) = entry?;
    let chunk = codec::Chunk::open(bytes.value())?;
    let index = usize::try_from(seq - chunk_start.value()).unwrap_or(usize::MAX);
    Ok(chunk.get(index).map(f))
}

/// Records in `EVENTS` chunks; one `TOPIC_EVENTS` row per topic of the batch; topic
/// counts. Returns the batch's `(key_hash, seq)` pairs.
fn write_events<'a>(
    txn: &WriteTransaction,
    next: &mut Head,
    rows: impl Iterator<Item = Row<'a>>,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut events = txn.open_table(EVENTS)?;
    let mut pairs = Vec::new();
    let mut runs: HashMap<&'a str, Vec<u64>> = HashMap::new();
    let mut chunk = codec::ChunkBuilder::default();
    let mut chunk_start = next.next_seq;
    for row in rows {
        let seq = next.next_seq;
        next.next_seq += 1;
        chunk.push(row.bytes);
        if chunk.len() == codec::CHUNK_EVENTS {
            events.insert(chunk_start, chunk.take().as_slice())?;
            chunk_start = next.next_seq;
        }
        runs.entry(row.key.topic()).or_default().push(seq);
        pairs.push((row.key.hash(), seq));
    }
    if !chunk.is_empty() {
        events.insert(chunk_start, chunk.take().as_slice())?;
    }
    let mut topics = txn.open_table(TOPICS)?;
    let mut topic_events = txn.open_table(TOPIC_EVENTS)?;
    for (topic, seqs) in runs {
        let known = topics.get(topic)?.map(|v| v.value());
        let (id, stored) = known.unwrap_or_else(|| {
            next.next_topic_id += 1;
            (next.next_topic_id - 1, 0)
        });
        topics.insert(topic, (id, stored + seqs.len() as u64))?;
        topic_events.insert((id, seqs[0]), codec::encode_seqs(&seqs).as_slice())?;
    }
    Ok(pairs)
}

fn get_or_insert(
    table: &mut redb::Table<'_, &str, u64>,
    name: &str,
    init: impl FnOnce() -> u64,
) -> Result<u64, StoreError> {
    if let Some(v) = table.get(name)? {
        return Ok(v.value());
    }
    let v = init();
    table.insert(name, v)?;
    Ok(v)
}

/// 64 random bits from the OS-seeded std hasher (no extra dependency needed).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KeyHasher;

    fn record_bytes(key: &EventKey) -> Vec<u8> {
        codec::encode(&codec::Record {
            topic: key.topic(),
            event_id: key.event_id(),
            timestamp: "2026-11-21T00:00:00Z",
            source: "",
            payload: "{}",
            received_at_us: 0,
        })
    }

    fn append(store: &Store, head: &mut Head, keys: &[EventKey]) -> Result<(), StoreError> {
        let bytes: Vec<_> = keys.iter().map(record_bytes).collect();
        let rows = keys.iter().zip(&bytes).map(|(key, b)| Row { key, bytes: b });
        store.append(head, rows, 0)
    }

    #[test]
    fn append_read_contains_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/db.redb");
        let (store, rec) = Store::open(&path, 1 << 20).unwrap();
        let h = KeyHasher::new(rec.key_hash_seed);
        let keys: Vec<_> = (0..5).map(|i| EventKey::new(h, ["a", "b"][i % 2], i.to_string())).collect();
        let mut head = rec.head;
        append(&store, &mut head, &keys).unwrap();
        assert_eq!((head.next_seq, head.unique, head.next_topic_id), (6, 5, 2));

        let absent = EventKey::new(h, "a", "1"); // id 1 was stored under "b"
        assert_eq!(store.contains(&[keys[1].clone(), absent]).unwrap(), vec![true, false]);

        let page = store.read_page(Some("a"), Seq(0), 2).unwrap();
        let seqs: Vec<_> = page.rows.iter().map(|r| r.0.0).collect();
        assert_eq!((seqs, page.next_after), (vec![1, 3], Some(Seq(3))));
        let last = store.read_page(Some("a"), Seq(3), 2).unwrap();
        assert_eq!((last.rows.len(), last.next_after), (1, None));
        assert_eq!(store.read_page(None, Seq(0), 10).unwrap().rows.len(), 5);
        assert_eq!(store.topics().unwrap(), vec!["a", "b"]);
        drop(store);

        let (store, again) = Store::open(&path, 1 << 20).unwrap();
        assert_eq!((again.head, again.stored_keys, again.key_hash_seed), (head, 5, rec.key_hash_seed));
        let mut hashes = Vec::new();
        store.for_each_key_hash(&mut |hash| hashes.push(hash)).unwrap();
        hashes.sort_unstable();
        let mut expected: Vec<_> = keys.iter().map(EventKey::hash).collect();
        expected.sort_unstable();
        assert_eq!(hashes, expected);
    }

    #[test]
    fn keys_stay_findable_through_log_merges_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let (store, rec) = Store::open_with(&path, 1 << 20, 8).unwrap();
        let h = KeyHasher::new(rec.key_hash_seed);
        let mut head = rec.head;
        let mut all = Vec::new();
        for batch in 0..40 {
            let keys: Vec<_> = (0..5).map(|i| EventKey::new(h, "t", format!("{batch}-{i}"))).collect();
            append(&store, &mut head, &keys).unwrap();
            all.extend(keys);
            assert!(store.contains(&all).unwrap().iter().all(|found| *found), "after batch {batch}");
            if batch == 21 {
                // Reopen mid-merge: the log is reloaded and merged again.
                drop(store);
                let (again, rec) = Store::open_with(&path, 1 << 20, 8).unwrap();
                assert_eq!(rec.head, head);
                return keys_stay_findable_after_reopen(again, all, h, head);
            }
        }
        unreachable!("returns at batch 21");
    }

    fn keys_stay_findable_after_reopen(store: Store, mut all: Vec<EventKey>, h: KeyHasher, mut head: Head) {
        for batch in 100..140 {
            let keys: Vec<_> = (0..5).map(|i| EventKey::new(h, "t", format!("{batch}-{i}"))).collect();
            append(&store, &mut head, &keys).unwrap();
            all.extend(keys);
        }
        assert!(store.contains(&all).unwrap().iter().all(|found| *found));
        assert_eq!(store.contains(&[EventKey::new(h, "t", "absent")]).unwrap(), vec![false]);
        let mut hashes = std::collections::HashSet::new();
        store
            .for_each_key_hash(&mut |hash| {
                hashes.insert(hash);
            })
            .unwrap();
        assert!(all.iter().all(|k| hashes.contains(&k.hash())));
    }

    #[test]
    fn pages_and_lookups_cross_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rec) = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let h = KeyHasher::new(rec.key_hash_seed);
        let keys: Vec<_> = (0..150).map(|i| EventKey::new(h, "t", i.to_string())).collect();
        let mut head = rec.head;
        append(&store, &mut head, &keys[..100]).unwrap();
        append(&store, &mut head, &keys[100..]).unwrap();
        let mut after = Seq(0);
        let mut seen = Vec::new();
        loop {
            let page = store.read_page(None, after, 37).unwrap();
            for (seq, bytes) in &page.rows {
                assert_eq!(codec::decode(bytes).unwrap().event_id, (seq.0 - 1).to_string());
                seen.push(seq.0);
            }
            match page.next_after {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(seen, (1..=150).collect::<Vec<_>>());
        let topic_page = store.read_page(Some("t"), Seq(63), 3).unwrap();
        assert_eq!(topic_page.rows.iter().map(|r| r.0.0).collect::<Vec<_>>(), vec![64, 65, 66]);
        assert!(store.contains(&keys).unwrap().into_iter().all(|found| found));
    }

    #[test]
    fn failed_commit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rec) = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let key = EventKey::new(KeyHasher::new(rec.key_hash_seed), "t", "1");
        let mut head = rec.head;
        store.faults.fail_commits.store(1, Ordering::Relaxed);
        assert!(matches!(append(&store, &mut head, std::slice::from_ref(&key)), Err(StoreError::Injected)));
        assert_eq!(head, rec.head);
        assert_eq!(store.contains(std::slice::from_ref(&key)).unwrap(), vec![false]);
        append(&store, &mut head, std::slice::from_ref(&key)).unwrap();
        assert_eq!(store.contains(&[key]).unwrap(), vec![true]);
    }
}
