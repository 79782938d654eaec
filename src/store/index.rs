//! The on-disk dedup index, kept cheap to write: a log plus a sorted tree.
//!
//! - Each batch writes its new `(key_hash, seq)` pairs as ONE row of `KEY_LOG`
//!   (append order), and the writer mirrors them in memory ([`KeyIndex`]).
//! - Once the log holds `merge_threshold` pairs, or a quarter of the tree if that
//!   is more (so each merge rewrites the tree's leaves for at least N/4 new keys,
//!   bounding the write amplification as the index grows), the writer merges a snapshot of it
//!   into the sorted `KEY_INDEX` tree, one sixteenth of the hash space per batch
//!   transaction, so no single commit stalls for long and each tree leaf is
//!   rewritten once per merge instead of once per batch. The last slice deletes the
//!   snapshot's log rows.
//!
//! Invariants:
//! - **Findable.** A committed key's pair is in the in-memory log mirror or in a
//!   `KEY_INDEX` snapshot that a later reader sees: the mirror gains pairs after
//!   their commit and loses them only after the commit that merged them, and a
//!   reader consults the mirror before it begins its read transaction.
//! - **Idempotent merges.** A crash mid-merge leaves the log rows in place; they
//!   are reloaded and merged again, and re-inserting a pair is a no-op.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::event::BuildKeyHasher;

/// Hash-space slices a merge is split into (by the top 4 bits of the hash).
pub const MERGE_SLICES: u8 = 16;

/// The in-memory mirror of `KEY_LOG` plus the merge in progress. Readers: disk
/// checks (any thread). Writers: `Store::append` (the writer thread), and the
/// recovery at open and reopen, while no reader holds the database.
#[derive(Default)]
pub struct KeyIndex {
    log: RwLock<LogMirror>,
    merge: std::sync::Mutex<Option<Merge>>,
    /// Pairs in the sorted tree (approximately: a re-merged pair counts twice).
    merged: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct LogMirror {
    /// hash -> seq for pairs not yet merged, one map per merge slice (so a merged
    /// slice is dropped without scanning the others).
    first: [HashMap<u64, u64, BuildKeyHasher>; MERGE_SLICES as usize],
    /// Further pairs whose hash is already in `first` (64-bit collisions: rare).
    more: Vec<(u64, u64)>,
}

/// A merge in progress: the snapshot's pairs bucketed by slice (each bucket is
/// sorted when its turn comes, so no single commit sorts the whole snapshot),
/// and the next slice to write.
pub struct Merge {
    buckets: Vec<Vec<(u64, u64)>>,
    /// Log rows with a smaller key (first seq of their batch) belong to the snapshot.
    pub snapshot_end_seq: u64,
    next_slice: u8,
}

/// One slice of a merge, for one transaction.
pub struct Slice<'a> {
    pub pairs: &'a [(u64, u64)],
    /// The last slice also deletes the snapshot's log rows.
    pub last: bool,
    pub snapshot_end_seq: u64,
    slice: u8,
}

fn slice_of(hash: u64) -> u8 {
    (hash >> 60) as u8
}

impl KeyIndex {
    /// At open and reopen, before the log is loaded again: forget everything.
    pub fn clear(&self) {
        *self.log.write().unwrap_or_else(|e| e.into_inner()) = LogMirror::default();
        *self.merge.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.merged.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// At open: the number of pairs already in the sorted tree.
    pub fn set_merged(&self, pairs: u64) {
        self.merged.store(pairs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pairs of committed keys (startup reload and after each commit).
    pub fn add(&self, pairs: &[(u64, u64)]) {
        let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
        for &(hash, seq) in pairs {
            let bucket = &mut log.first[usize::from(slice_of(hash))];
            if let Some(&existing) = bucket.get(&hash) {
                if existing != seq {
                    log.more.push((hash, seq));
                }
            } else {
                bucket.insert(hash, seq);
            }
        }
    }

    /// Seqs of unmerged pairs with this hash.
    pub fn unmerged(&self, hash: u64, out: &mut Vec<u64>) {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        out.extend(log.first[usize::from(slice_of(hash))].get(&hash));
        out.extend(log.more.iter().filter(|(h, _)| *h == hash).map(|(_, s)| *s));
    }

    pub fn unmerged_len(&self) -> usize {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        log.first.iter().map(HashMap::len).sum::<usize>() + log.more.len()
    }

    /// Start a merge of everything unmerged if the log is at `threshold` and no
    /// merge is running. `end_seq` is the head's next seq (nothing later exists).
    pub fn maybe_start_merge(&self, threshold: usize, end_seq: u64) {
        let mut merge = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let merged = self.merged.load(std::sync::atomic::Ordering::Relaxed) as usize;
        if merge.is_some() || self.unmerged_len() < threshold.max(merged / 4).max(1) {
            return;
        }
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        let mut buckets = vec![Vec::new(); usize::from(MERGE_SLICES)];
        let all = log.first.iter().flat_map(|m| m.iter().map(|(h, s)| (*h, *s)));
        for (h, s) in all.chain(log.more.iter().copied()) {
            buckets[usize::from(slice_of(h))].push((h, s));
        }
        *merge = Some(Merge { buckets, snapshot_end_seq: end_seq, next_slice: 0 });
    }

    /// Run `f` with the next slice to merge, if a merge is running.
    pub fn with_next_slice<R>(&self, f: impl FnOnce(Option<Slice<'_>>) -> R) -> R {
        let mut merge = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = merge.as_mut() else { return f(None) };
        let slice = m.next_slice;
        let pairs = &mut m.buckets[usize::from(slice)];
        if !pairs.is_sorted() {
            pairs.sort_unstable();
        }
        f(Some(Slice { pairs, last: slice + 1 == MERGE_SLICES, snapshot_end_seq: m.snapshot_end_seq, slice }))
    }

    /// After the commit that wrote slice `slice`: drop its pairs from the mirror
    /// and move on (or finish).
    pub fn slice_committed(&self, slice: u8) {
        let mut merge = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = merge.as_mut() else { return };
        if m.next_slice != slice {
            return;
        }
        let end_seq = m.snapshot_end_seq;
        let count = std::mem::take(&mut m.buckets[usize::from(slice)]).len();
        self.merged.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        {
            let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
            log.first[usize::from(slice)].retain(|_, s| *s >= end_seq);
            log.more.retain(|(h, s)| !(slice_of(*h) == slice && *s < end_seq));
        }
        m.next_slice += 1;
        if m.next_slice == MERGE_SLICES {
            *merge = None;
        }
    }
}

impl Slice<'_> {
    pub fn id(&self) -> u8 {
        self.slice
    }
}

/// `KEY_LOG` row encoding: little-endian `(hash, seq)` pairs.
pub fn encode_pairs(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * 16);
    for (h, s) in pairs {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

pub fn decode_pairs(bytes: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    bytes.chunks_exact(16).map(|c| {
        let (h, s) = c.split_at(8);
        (
            u64::from_le_bytes(h.try_into().expect("chunk of 16 splits into 8 + 8")),
            u64::from_le_bytes(s.try_into().expect("chunk of 16 splits into 8 + 8")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let pairs = vec![(u64::MAX, 1), (7, 2)];
        assert_eq!(decode_pairs(&encode_pairs(&pairs)).collect::<Vec<_>>(), pairs);
    }

    #[test]
    fn collisions_keep_every_seq() {
        let index = KeyIndex::default();
        index.add(&[(5, 1), (5, 9), (6, 2)]);
        let mut seqs = Vec::new();
        index.unmerged(5, &mut seqs);
        assert_eq!(seqs, vec![1, 9]);
    }

    #[test]
    fn a_merge_walks_every_slice_then_forgets_the_snapshot_only() {
        let index = KeyIndex::default();
        let pairs: Vec<(u64, u64)> = (0..64u64).map(|i| (i << 58, i + 1)).collect();
        index.add(&pairs);
        index.maybe_start_merge(64, 65);
        index.add(&[(3, 65)]); // committed after the snapshot
        let mut merged = 0;
        for slice in 0..MERGE_SLICES {
            let (n, last) = index.with_next_slice(|s| {
                let s = s.expect("merge running");
                (s.pairs.len(), s.last)
            });
            merged += n;
            assert_eq!(last, slice == MERGE_SLICES - 1);
            index.slice_committed(slice);
        }
        assert_eq!(merged, 64);
        assert!(index.with_next_slice(|s| s.is_none()));
        assert_eq!(index.unmerged_len(), 1, "the later pair stays unmerged");
    }
}
