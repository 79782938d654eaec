//! The write path: a write transaction holds event chunks, per-topic runs, the
//! key-log rows, counters, and the next slice of each running index merge. The
//! smallest batches are made durable by their journal frame alone and kept in the tail, then
//! applied together in one transaction without fsync (`tail`); a batch up to
//! the journal's frame limit is made durable by its frame and committed in its
//! own transaction without fsync; a larger one, and every `CHECKPOINT_BYTES` of
//! journal, by redb's durable commit, which covers the journal up to it. Called
//! by the writer thread only (and by `open`, replaying the journal).

use std::collections::HashMap;

use redb::{Durability, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::codec;
use super::handle::{Head, Row, Store};
use super::index;
use super::journal::{self, Journal};
use super::runs;
use super::schema::{EVENTS, KEY_LOG, KEY_RUN_LOWER, KEY_RUN_UPPER, META, TOPIC_RUNS, TOPICS, meta};
use super::tail;

/// Journal bytes after which the next batch is committed durably (a
/// checkpoint), and the journal starts over: this bounds the replay at open.
pub(super) const CHECKPOINT_BYTES: u64 = 32 << 20;

/// Journal frames from this size on are synced beside redb's commit instead of
/// before it (~1000 events of 250 bytes; a single-event batch is ~4 KiB).
const OVERLAP_SYNC_MIN_BYTES: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the database is closed (a reopen after an I/O error has not succeeded yet)")]
    Closed,
    #[error("cannot write the journal: {0}")]
    Journal(#[source] std::io::Error),
    #[error(transparent)]
    Transaction(#[from] redb::TransactionError),
    #[error(transparent)]
    Table(#[from] redb::TableError),
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("commit failed: {0}")]
    Commit(#[from] redb::CommitError),
    #[error(transparent)]
    Durability(#[from] redb::SetDurabilityError),
}

/// What one transaction wrote, for the bookkeeping after its commit.
pub(super) struct Applied {
    pairs: Vec<(u64, u64)>,
    /// The log slice written (its id) and the pairs it added to the upper run.
    merged_slice: Option<(usize, u64)>,
    moved_slice: Option<index::TreeMoved>,
}

impl Store {
    /// Append new events (in order) and count `duplicates`. When this returns
    /// `Ok` the batch is durable (journal frame synced, or redb commit fsynced)
    /// and every read sees it; `head` advances only then.
    ///
    /// A batch whose frame is at most `tail::MAX_FRAME_BYTES` is only
    /// journaled and kept in the tail (write-behind); the tail goes to redb in
    /// one transaction once full (here, before the batch that filled it
    /// returns) or when the writer idles (`apply_tail`). A larger batch is
    /// applied in its own transaction, after the tail, together with the next
    /// slice of a running key-log merge.
    ///
    /// A journaled batch's frame of at least `OVERLAP_SYNC_MIN_BYTES` is synced
    /// on a second thread while this one applies the batch to redb and commits
    /// it without fsync: the disk's flush and the writer's CPU work overlap.
    /// Should the process die before both return, nothing of the batch was
    /// acknowledged, and redb either holds it or not (its commit was not
    /// durable); either is a state a retry is safe in. A smaller frame is
    /// synced before the batch is applied.
    pub fn append<'a>(
        &self,
        head: &mut Head,
        rows: impl Iterator<Item = Row<'a>> + Clone,
        duplicates: u64,
    ) -> Result<(), WriteError> {
        let db = self.database().ok_or(WriteError::Closed)?;
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let journal = journal.as_mut().ok_or(WriteError::Closed)?;
        let frame_len = journal::frame_len(rows.clone().map(|row| row.bytes.len()));
        let journaled = frame_len <= self.config.journal_max_frame_bytes
            && journal.len() + frame_len as u64 <= CHECKPOINT_BYTES;
        // A batch of only duplicates gets its own transaction: it is what moves
        // a running index merge on while a replay stores nothing.
        let has_events = rows.clone().next().is_some();
        if journaled && has_events && frame_len <= tail::MAX_FRAME_BYTES {
            self.hold(journal, head, rows, duplicates)?;
            // The batch that fills the tail waits for the tail's transaction, as
            // before the tail: acked before it, its settling would contend for the
            // cores with that transaction (1,000-event batches ran 17-25 % slower).
            // Should it fail, the reopen replays the journal and finds the batch.
            if self.tail().full() {
                self.apply_tail_in(&db)?;
            }
            return Ok(());
        }
        self.apply_tail_in(&db)?;
        let mut next = self.tail().applied;
        debug_assert_eq!(next.next_seq, head.next_seq, "redb holds every batch before this one");
        let frame = if journaled {
            next.journal_frame += 1;
            let records = rows.clone().map(|row| row.bytes);
            let end = journal
                .write_frame(next.journal_frame, next.next_seq, duplicates, records)
                .map_err(WriteError::Journal)?;
            Some(end)
        } else {
            None
        };
        // A small frame is synced first: a thread's start on busy cores would
        // cost more than the overlap saves (single events did not gain).
        let pending = match frame {
            Some(end) if frame_len < OVERLAP_SYNC_MIN_BYTES => {
                journal.sync().map_err(WriteError::Journal)?;
                journal.frame_synced(end);
                None
            }
            frame => frame,
        };
        let durability = if journaled { Durability::None } else { Durability::Immediate };
        let journal_ref = &*journal;
        let (applied, synced) = std::thread::scope(|scope| {
            let sync = pending.map(|_| scope.spawn(|| journal_ref.sync()));
            let applied = self.apply_and_commit(&db, durability, &mut next, rows, duplicates);
            let synced =
                sync.map(|sync| sync.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            (applied, synced)
        });
        let applied = applied?;
        if let (Some(synced), Some(end)) = (synced, pending) {
            synced.map_err(WriteError::Journal)?;
            journal.frame_synced(end);
        }
        if !journaled {
            journal.reset();
        }
        self.committed(head, next, applied);
        self.tail().committed(0, next);
        Ok(())
    }

    /// A small batch: its frame written and synced, then kept in the tail
    /// for a later transaction. `head` advances by the batch.
    fn hold<'a>(
        &self,
        journal: &mut Journal,
        head: &mut Head,
        rows: impl Iterator<Item = Row<'a>> + Clone,
        duplicates: u64,
    ) -> Result<(), WriteError> {
        let frame_no = head.journal_frame + 1;
        let end = journal
            .write_frame(frame_no, head.next_seq, duplicates, rows.clone().map(|row| row.bytes))
            .map_err(WriteError::Journal)?;
        journal.sync().map_err(WriteError::Journal)?;
        journal.frame_synced(end);
        let batch = tail::Batch::new(frame_no, head.next_seq, duplicates, rows);
        let events = batch.len() as u64;
        self.tail().push(batch);
        head.next_seq += events;
        head.unique += events;
        head.duplicates += duplicates;
        head.journal_frame = frame_no;
        Ok(())
    }

    /// Writer only: apply the tail to redb, in one transaction committed
    /// without fsync (their frames keep them durable), together with the next
    /// slice of a running key-log merge. A failure is a storage error like a
    /// failed commit; nothing in the tail is lost (the reopen replays the journal).
    pub fn apply_tail(&self) -> Result<(), WriteError> {
        let db = self.database().ok_or(WriteError::Closed)?;
        self.apply_tail_in(&db)
    }

    fn apply_tail_in(&self, db: &redb::Database) -> Result<(), WriteError> {
        let (batches, before) = {
            let tail = self.tail();
            if tail.is_empty() {
                return Ok(());
            }
            (tail.snapshot(), tail.applied)
        };
        let last = batches.last().map_or(before.journal_frame, |b| b.frame_no);
        let mut next = Head { journal_frame: last, ..before };
        let duplicates = batches.iter().map(|b| b.duplicates).sum();
        let rows = batches.iter().flat_map(|b| b.rows());
        let applied = self.apply_and_commit(db, Durability::None, &mut next, rows, duplicates)?;
        // The mirror first, then the batches leave: a reader always finds them.
        let mut head = before;
        self.committed(&mut head, next, applied);
        self.tail().committed(batches.len(), next);
        Ok(())
    }

    /// One write transaction with the batch, committed with `durability`.
    fn apply_and_commit<'a>(
        &self,
        db: &redb::Database,
        durability: Durability,
        next: &mut Head,
        rows: impl Iterator<Item = Row<'a>>,
        duplicates: u64,
    ) -> Result<Applied, WriteError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
        let applied = self.apply(&txn, next, rows, duplicates)?;
        txn.commit()?;
        Ok(applied)
    }

    /// Make every journaled batch durable in redb and start the journal over
    /// (the writer does this when idle and before it exits). Nothing to do if
    /// the journal is empty.
    pub fn checkpoint(&self) -> Result<(), WriteError> {
        let db = self.database().ok_or(WriteError::Closed)?;
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let journal = journal.as_mut().ok_or(WriteError::Closed)?;
        self.apply_tail_in(&db)?;
        if !journal.is_empty() {
            durable_commit(&db, journal)?;
        }
        Ok(())
    }

    /// Bytes journaled since the last durable commit.
    pub fn journal_bytes(&self) -> u64 {
        self.journal.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, Journal::len)
    }

    /// Everything of one batch, in `txn`; `next` is the head after it.
    pub(super) fn apply<'a>(
        &self,
        txn: &WriteTransaction,
        next: &mut Head,
        rows: impl Iterator<Item = Row<'a>>,
        duplicates: u64,
    ) -> Result<Applied, WriteError> {
        let pairs = write_events(txn, next, rows, self.index.take_buffer())?;
        // One row per block of pairs, keyed by its first seq: a batch's whole
        // row (up to 20k pairs, 320 KB) took a power-of-two page up to 512 KiB.
        let mut log = txn.open_table(KEY_LOG)?;
        for block in pairs.chunks(runs::BLOCK_PAIRS) {
            log.insert(block[0].1, runs::encode_pairs(block).as_slice())?;
        }
        drop(log); // the log merge slice opens the table again
        let merged_slice = self.write_merge_slice(txn)?;
        let moved_slice = self.write_tree_slice(txn)?;
        next.unique += pairs.len() as u64;
        next.duplicates += duplicates;
        let upper_added = merged_slice.map_or(0, |(_, added)| added);
        let upper_removed = moved_slice.as_ref().map_or(0, |moved| moved.upper_removed);
        let lower_added = moved_slice.as_ref().map_or(0, |moved| moved.lower_added);
        let mut meta_table = txn.open_table(META)?;
        meta_table.insert(meta::NEXT_SEQ, next.next_seq)?;
        meta_table.insert(meta::UNIQUE, next.unique)?;
        meta_table.insert(meta::DUPLICATES, next.duplicates)?;
        meta_table.insert(meta::JOURNAL_FRAME, next.journal_frame)?;
        if merged_slice.is_some() || moved_slice.is_some() {
            let upper = (self.index.upper_len() + upper_added).saturating_sub(upper_removed);
            meta_table.insert(meta::UPPER_PAIRS, upper)?;
            meta_table.insert(meta::LOWER_PAIRS, self.index.lower_len() + lower_added)?;
        }
        Ok(Applied { pairs, merged_slice, moved_slice })
    }

    /// After the commit of `applied`: the head moves, the mirror gains its pairs.
    pub(super) fn committed(&self, head: &mut Head, next: Head, applied: Applied) {
        *head = next;
        self.index.add(&applied.pairs);
        self.index.return_buffer(applied.pairs);
        self.index.slices_committed(applied.merged_slice, applied.moved_slice.as_ref());
        self.index.maybe_start_merges(self.config.merge_threshold, head.next_seq);
    }

    /// The next slice of a running log merge: its partitions of the upper run
    /// rewritten with the slice's pairs merged in. Returns the slice's id and
    /// the pairs it added.
    fn write_merge_slice(&self, txn: &WriteTransaction) -> Result<Option<(usize, u64)>, WriteError> {
        self.index.with_next_slice(|slice| {
            let Some(slice) = slice else { return Ok(None) };
            let mut upper = txn.open_table(KEY_RUN_UPPER)?;
            let (from, to) = (slice.partitions.start, slice.partitions.end);
            let mut old = self.index.take_buffer();
            runs::read_partitions(&upper, from, to, &mut old)?;
            let written = runs::rewrite_partitions(&mut upper, from, to, &old, slice.pairs)?;
            let added = written - old.len() as u64;
            self.index.return_buffer(old);
            if slice.last {
                txn.open_table(KEY_LOG)?.retain_in(..slice.snapshot_end_seq, |_, _| false)?;
            }
            Ok(Some((slice.id(), added)))
        })
    }

    /// The next slice of a running tree merge: whole partitions of the upper run
    /// merged into the lower one (after the log slice of the same transaction,
    /// whose pairs it may carry along), until it has read `min_pairs`.
    fn write_tree_slice(&self, txn: &WriteTransaction) -> Result<Option<index::TreeMoved>, WriteError> {
        let Some(slice) = self.index.next_tree_slice() else { return Ok(None) };
        let mut upper = txn.open_table(KEY_RUN_UPPER)?;
        let mut lower = txn.open_table(KEY_RUN_LOWER)?;
        let mut moved =
            index::TreeMoved { from: slice.from, to: slice.from, upper_removed: 0, lower_added: 0 };
        let (mut up, mut down) = (self.index.take_buffer(), self.index.take_buffer());
        let mut read = 0;
        while moved.to < runs::PARTITIONS && (moved.to == slice.from || read < slice.min_pairs) {
            let p = moved.to;
            moved.to += 1;
            up.clear();
            runs::read_partitions(&upper, p, p + 1, &mut up)?;
            if up.is_empty() {
                continue;
            }
            down.clear();
            runs::read_partitions(&lower, p, p + 1, &mut down)?;
            read += (up.len() + down.len()) as u64;
            upper.retain_in(runs::partitions(p, p + 1), |_, _| false)?;
            let written = runs::rewrite_partitions(&mut lower, p, p + 1, &down, &up)?;
            moved.upper_removed += up.len() as u64;
            moved.lower_added += written - down.len() as u64;
        }
        self.index.return_buffer(up);
        self.index.return_buffer(down);
        Ok(Some(moved))
    }
}

/// An empty transaction committed with fsync: it makes every earlier
/// non-durable commit durable, so the journal starts over.
pub(super) fn durable_commit(db: &redb::Database, journal: &mut Journal) -> Result<(), WriteError> {
    db.begin_write()?.commit()?;
    journal.reset();
    Ok(())
}

/// Records in `EVENTS` chunks; one `TOPIC_RUNS` row per topic of the batch; topic
/// counts. Returns the batch's `(key_hash, seq)` pairs, in `pairs` (empty).
fn write_events<'a>(
    txn: &WriteTransaction,
    next: &mut Head,
    rows: impl Iterator<Item = Row<'a>>,
    mut pairs: Vec<(u64, u64)>,
) -> Result<Vec<(u64, u64)>, WriteError> {
    let mut events = txn.open_table(EVENTS)?;
    let mut runs: HashMap<&'a str, Vec<u64>> = HashMap::new();
    let mut chunk = codec::ChunkBuilder::default();
    let mut chunk_start = next.next_seq;
    for row in rows {
        let seq = next.next_seq;
        if !chunk.fits(row.bytes.len()) {
            events.insert(chunk_start, chunk.take().as_slice())?;
            chunk_start = seq;
        }
        next.next_seq += 1;
        chunk.push(row.bytes);
        runs.entry(row.topic).or_default().push(seq);
        pairs.push((row.hash, seq));
    }
    if !chunk.is_empty() {
        events.insert(chunk_start, chunk.take().as_slice())?;
    }
    let mut topics = txn.open_table(TOPICS)?;
    let mut topic_runs = txn.open_table(TOPIC_RUNS)?;
    for (topic, seqs) in runs {
        let known = topics.get(topic)?.map(|v| v.value());
        // Topic ids are dense from 0, in order of first arrival.
        let (id, stored) = match known {
            Some(known) => known,
            None => (u32::try_from(topics.len()?).unwrap_or(u32::MAX), 0),
        };
        topics.insert(topic, (id, stored + seqs.len() as u64))?;
        topic_runs.insert((id, seqs[0]), codec::encode_seqs(&seqs).as_slice())?;
    }
    Ok(pairs)
}
