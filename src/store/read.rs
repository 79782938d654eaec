//! The read paths, each in one read transaction (MVCC: never blocks the writer)
//! joined to the batches not yet in it (the `tail`), called from `spawn_blocking`
//! threads: exact key lookups (the dedup disk check), pages of events in arrival
//! order, and the stored topics.

use redb::{ReadableDatabase, ReadableTable};

use super::codec;
use super::handle::{Page, Store, StoredEvent};
use super::runs::BlockFinder;
use super::schema::{EVENTS, KEY_RUN_LOWER, KEY_RUN_UPPER, META, TOPIC_RUNS, TOPICS, meta};
use crate::event::{EventKey, Seq};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the database is being reopened after an I/O error")]
    Closed,
    #[error(transparent)]
    Transaction(#[from] redb::TransactionError),
    #[error(transparent)]
    Table(#[from] redb::TableError),
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("corrupt record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error(transparent)]
    Chunk(#[from] codec::CorruptChunk),
}

type EventsTable = redb::ReadOnlyTable<u64, &'static [u8]>;

impl Store {
    /// Exact membership of each key, checked against the stored records, as a
    /// multi-get: candidates (from the unmerged log mirror, then both key runs in
    /// hash order, one block read for the keys it covers) are checked in seq
    /// order, so each record chunk is read once however many of the batch's keys
    /// it holds. The mirror is read after the database is
    /// held and before the read transaction begins (see `index`, "Findable"), so
    /// neither a merge nor a reopen can hide a key. Keys of the tail's batches,
    /// taken before the mirror, are found in memory (see `tail`).
    pub fn contains(&self, keys: &[EventKey]) -> Result<Vec<bool>, ReadError> {
        let db = self.database().ok_or(ReadError::Closed)?;
        let tail = self.tail_batches();
        let mut found = vec![false; keys.len()];
        for (key, found) in keys.iter().zip(&mut found) {
            for batch in &tail {
                if batch.holds(key)? {
                    *found = true;
                    break;
                }
            }
        }
        // (seq, position in `keys`) of every record that may be one of the keys.
        let mut candidates: Vec<(u64, usize)> = Vec::new();
        let mut seqs = Vec::new();
        for (i, key) in keys.iter().enumerate().filter(|(i, _)| !found[*i]) {
            self.index.unmerged(key.hash(), &mut seqs);
            candidates.extend(seqs.drain(..).map(|seq| (seq, i)));
        }
        let txn = db.begin_read()?;
        let runs = [txn.open_table(KEY_RUN_UPPER)?, txn.open_table(KEY_RUN_LOWER)?];
        let mut by_hash: Vec<usize> = (0..keys.len()).filter(|&i| !found[i]).collect();
        by_hash.sort_unstable_by_key(|&i| keys[i].hash());
        for run in &runs {
            let mut blocks = BlockFinder::new(run);
            for &i in &by_hash {
                blocks.seqs_of(keys[i].hash(), &mut |seq| candidates.push((seq, i)))?;
            }
        }
        candidates.sort_unstable();
        let mut chunks = ChunkCursor::new(txn.open_table(EVENTS)?);
        for (seq, i) in candidates {
            if found[i] {
                continue;
            }
            let key = &keys[i];
            found[i] = chunks
                .with_record(seq, |bytes| -> Result<bool, ReadError> {
                    Ok(codec::decode_key(bytes)? == (key.topic(), key.event_id()))
                })?
                .transpose()?
                .unwrap_or(false);
        }
        Ok(found)
    }

    /// Up to `limit` events after `after`, of one topic or of all, in `seq` order:
    /// redb's, then those of the batches in the tail.
    pub fn read_page(&self, topic: Option<&str>, after: Seq, limit: usize) -> Result<Page, ReadError> {
        let db = self.database().ok_or(ReadError::Closed)?;
        let tail = self.tail_batches();
        let txn = db.begin_read()?;
        let Some(first) = after.0.checked_add(1) else {
            return Ok(Page::default());
        };
        let mut page = Vec::with_capacity(limit.min(1024) + 1);
        read_stored(&txn, topic, first, limit, &mut page)?;
        if page.len() <= limit && !tail.is_empty() {
            // redb may have applied some of them since they were taken.
            let applied = txn.open_table(META)?.get(meta::NEXT_SEQ)?.map_or(0, |v| v.value());
            'tail: for batch in &tail {
                for (i, row) in batch.rows().enumerate() {
                    let seq = batch.first_seq + i as u64;
                    if seq >= first.max(applied) && topic.is_none_or(|t| t == row.topic) {
                        page.push(decoded(Seq(seq), row.bytes)?);
                        if page.len() > limit {
                            break 'tail;
                        }
                    }
                }
            }
        }
        let next_after = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(Page { events: page, next_after })
    }

    /// Topics with stored events, sorted (those of the tail included).
    pub fn topics(&self) -> Result<Vec<String>, ReadError> {
        let db = self.database().ok_or(ReadError::Closed)?;
        let tail = self.tail_batches();
        let txn = db.begin_read()?;
        let table = txn.open_table(TOPICS)?;
        let mut topics: std::collections::BTreeSet<String> =
            table.iter()?.map(|e| Ok(e?.0.value().to_owned())).collect::<Result<_, ReadError>>()?;
        topics.extend(tail.iter().flat_map(|b| b.rows().map(|row| row.topic.to_owned())));
        Ok(topics.into_iter().collect())
    }
}

/// redb's part of a page: up to `limit + 1` events from seq `first` on.
fn read_stored(
    txn: &redb::ReadTransaction,
    topic: Option<&str>,
    first: u64,
    limit: usize,
    page: &mut Vec<StoredEvent>,
) -> Result<(), ReadError> {
    let events = txn.open_table(EVENTS)?;
    match topic {
        None => {
            // The chunk holding `first` starts at or before it.
            let start = match events.range(..=first)?.next_back() {
                Some(entry) => entry?.0.value(),
                None => first,
            };
            for entry in events.range(start..)? {
                let (chunk_start, bytes) = entry?;
                let chunk = codec::Chunk::open(bytes.value())?;
                for i in 0..chunk.len() {
                    let seq = chunk_start.value() + i as u64;
                    if seq >= first {
                        page.push(decoded(Seq(seq), chunk.get(i).unwrap_or_default())?);
                        if page.len() > limit {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Some(topic) => {
            let Some(id) = txn.open_table(TOPICS)?.get(topic)?.map(|v| v.value().0) else {
                return Ok(());
            };
            let order = txn.open_table(TOPIC_RUNS)?;
            let mut chunks = ChunkCursor::new(events);
            // The run holding the cursor starts at or before it.
            let start = match order.range((id, 0)..=(id, first - 1))?.next_back() {
                Some(entry) => entry?.0.value().1,
                None => first,
            };
            for run in order.range((id, start)..=(id, u64::MAX))? {
                for seq in codec::decode_seqs(run?.1.value()).filter(|s| *s >= first) {
                    if let Some(event) = chunks.with_record(seq, |bytes| decoded(Seq(seq), bytes))? {
                        page.push(event?);
                    }
                    if page.len() > limit {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

fn decoded(seq: Seq, bytes: &[u8]) -> Result<StoredEvent, ReadError> {
    let r = codec::decode(bytes)?;
    Ok(StoredEvent {
        seq,
        topic: r.topic.to_owned(),
        event_id: r.event_id.to_owned(),
        timestamp: r.timestamp.to_owned(),
        source: r.source.to_owned(),
        payload: r.payload.to_owned(),
        received_at_us: r.received_at_us,
    })
}

/// Reads records by seq through one read transaction, keeping the last chunk it
/// read: callers going in ascending seq order read each chunk once.
struct ChunkCursor {
    events: EventsTable,
    current: Option<CurrentChunk>,
}

/// The chunk read last: its first seq, its record count, its bytes.
struct CurrentChunk {
    start: u64,
    len: u64,
    bytes: redb::AccessGuard<'static, &'static [u8]>,
}

impl ChunkCursor {
    fn new(events: EventsTable) -> Self {
        ChunkCursor { events, current: None }
    }

    /// Run `f` on the record stored under `seq`, found in the chunk that starts at
    /// or before it; `None` if there is no such record.
    fn with_record<R>(&mut self, seq: u64, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, ReadError> {
        let holds = |c: &CurrentChunk| seq >= c.start && seq - c.start < c.len;
        if !self.current.as_ref().is_some_and(holds) {
            let Some(entry) = self.events.range(..=seq)?.next_back() else { return Ok(None) };
            let (start, bytes) = entry?;
            let len = codec::Chunk::open(bytes.value())?.len() as u64;
            self.current = Some(CurrentChunk { start: start.value(), len, bytes });
        }
        let Some(current) = &self.current else { return Ok(None) };
        let index = usize::try_from(seq - current.start).unwrap_or(usize::MAX);
        Ok(codec::record_in(current.bytes.value(), index)?.map(f))
    }
}
