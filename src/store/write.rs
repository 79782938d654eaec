//! The write path: one batch per write transaction (event chunks, per-topic
//! runs, one key-log row, counters, and the next slice of a running key-log
//! merge), committed with fsync. Called by the writer thread only.

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};

use super::codec;
use super::handle::{Head, Row, Store};
use super::index;
use super::schema::{EVENTS, KEY_INDEX, KEY_LOG, META, TOPIC_RUNS, TOPICS, meta};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the database is closed (a reopen after an I/O error has not succeeded yet)")]
    Closed,
    #[error(transparent)]
    Transaction(#[from] redb::TransactionError),
    #[error(transparent)]
    Table(#[from] redb::TableError),
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("commit failed: {0}")]
    Commit(#[from] redb::CommitError),
}

impl Store {
    /// Append new events (in order) and count `duplicates`, in one transaction,
    /// together with the next slice of a running key-log merge. `head` advances
    /// only if the commit succeeds.
    pub fn append<'a>(
        &self,
        head: &mut Head,
        rows: impl Iterator<Item = Row<'a>>,
        duplicates: u64,
    ) -> Result<(), WriteError> {
        let db = self.database().ok_or(WriteError::Closed)?;
        let mut next = *head;
        let txn = db.begin_write()?;
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
        txn.commit()?;
        *head = next;
        self.index.add(&pairs);
        if let Some(slice) = merged_slice {
            self.index.slice_committed(slice);
        }
        self.index.maybe_start_merge(self.config.merge_threshold, head.next_seq);
        Ok(())
    }

    /// The next slice of a running merge, sorted: each tree leaf is touched once.
    fn write_merge_slice(&self, txn: &WriteTransaction) -> Result<Option<usize>, WriteError> {
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
}

/// Records in `EVENTS` chunks; one `TOPIC_RUNS` row per topic of the batch; topic
/// counts. Returns the batch's `(key_hash, seq)` pairs.
fn write_events<'a>(
    txn: &WriteTransaction,
    next: &mut Head,
    rows: impl Iterator<Item = Row<'a>>,
) -> Result<Vec<(u64, u64)>, WriteError> {
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
    let mut topic_runs = txn.open_table(TOPIC_RUNS)?;
    for (topic, seqs) in runs {
        let known = topics.get(topic)?.map(|v| v.value());
        let (id, stored) = known.unwrap_or_else(|| {
            next.next_topic_id += 1;
            (next.next_topic_id - 1, 0)
        });
        topics.insert(topic, (id, stored + seqs.len() as u64))?;
        topic_runs.insert((id, seqs[0]), codec::encode_seqs(&seqs).as_slice())?;
    }
    Ok(pairs)
}
