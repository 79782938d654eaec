//! The read paths, each in one read transaction (MVCC: never blocks the writer),
//! called from `spawn_blocking` threads: exact key lookups (the dedup disk
//! check), pages of events in arrival order, and the stored topics.

use redb::{ReadableDatabase, ReadableTable};

use super::codec;
use super::handle::{Page, Store, StoredEvent};
use super::schema::{EVENTS, KEY_INDEX, TOPIC_RUNS, TOPICS};
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
    /// Exact membership of each key, checked against the stored records.
    /// Candidates come from the unmerged log mirror and from `KEY_INDEX`; the mirror
    /// is read after the database is held and before the read transaction begins
    /// (see `index`, "Findable"), so neither a merge nor a reopen can hide a key.
    pub fn contains(&self, keys: &[EventKey]) -> Result<Vec<bool>, ReadError> {
        let db = self.database().ok_or(ReadError::Closed)?;
        let mut unmerged: Vec<Vec<u64>> = Vec::with_capacity(keys.len());
        for key in keys {
            let mut seqs = Vec::new();
            self.index.unmerged(key.hash(), &mut seqs);
            unmerged.push(seqs);
        }
        let txn = db.begin_read()?;
        let index = txn.open_table(KEY_INDEX)?;
        let events = txn.open_table(EVENTS)?;
        let is_key = |seq: u64, key: &EventKey| -> Result<bool, ReadError> {
            let found = with_record(&events, seq, |bytes| -> Result<bool, ReadError> {
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

    /// Up to `limit` events after `after`, of one topic or of all, in `seq` order.
    pub fn read_page(&self, topic: Option<&str>, after: Seq, limit: usize) -> Result<Page, ReadError> {
        let db = self.database().ok_or(ReadError::Closed)?;
        let txn = db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let Some(first) = after.0.checked_add(1) else {
            return Ok(Page::default());
        };
        let mut page = Vec::with_capacity(limit.min(1024) + 1);
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
                            page.push(decoded(Seq(seq), chunk.get(i).unwrap_or_default())?);
                            if page.len() > limit {
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
                let order = txn.open_table(TOPIC_RUNS)?;
                // The run holding the cursor starts at or before it.
                let start = match order.range((id, 0)..=(id, after.0))?.next_back() {
                    Some(entry) => entry?.0.value().1,
                    None => first,
                };
                'runs: for run in order.range((id, start)..=(id, u64::MAX))? {
                    for seq in codec::decode_seqs(run?.1.value()).filter(|s| *s >= first) {
                        if let Some(event) = with_record(&events, seq, |bytes| decoded(Seq(seq), bytes))? {
                            page.push(event?);
                        }
                        if page.len() > limit {
                            break 'runs;
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

    /// Topics with stored events, sorted.
    pub fn topics(&self) -> Result<Vec<String>, ReadError> {
        let db = self.database().ok_or(ReadError::Closed)?;
        let txn = db.begin_read()?;
        let table = txn.open_table(TOPICS)?;
        table.iter()?.map(|e| Ok(e?.0.value().to_owned())).collect()
    }
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

/// Run `f` on the record stored under `seq`, found in the chunk that starts at or
/// before it.
fn with_record<R>(
    events: &EventsTable,
    seq: u64,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<Option<R>, ReadError> {
    let Some(entry) = events.range(..=seq)?.next_back() else { return Ok(None) };
    let (chunk_start, bytes) = entry?;
    let chunk = codec::Chunk::open(bytes.value())?;
    let index = usize::try_from(seq - chunk_start.value()).unwrap_or(usize::MAX);
    Ok(chunk.get(index).map(f))
}
