//! The on-disk dedup index, kept cheap to write: a log plus a sorted tree.
//!
//! - Each batch writes its new `(key_hash, seq)` pairs as ONE row of `KEY_LOG`
//!   (append order), and the writer mirrors them in memory ([`KeyIndex`]).
//! - Once the log holds `merge_threshold` pairs, or a quarter of the tree if that
//!   is more (so each merge rewrites the tree's leaves for at least N/4 new keys,
//!   bounding the write amplification as the index grows), the writer merges a snapshot of it
//!   into the sorted `KEY_INDEX` tree, one slice of the hash space per batch
//!   transaction, so each tree leaf is rewritten once per merge instead of once
//!   per batch. The slices are sized at the merge's start to carry about
//!   `SLICE_PAIRS` pairs each (4 to 256 slices), so a commit's share of a merge
//!   stays bounded as the index grows. The last slice deletes the snapshot's log
//!   rows.
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

/// The mirror is kept in this many maps, by the top 8 bits of the hash; a merge
/// slice is a power-of-two run of them.
const SHARDS: usize = 256;
/// Pairs a merge slice aims to carry (at most 256 slices: one per shard).
const SLICE_PAIRS: usize = 16_384;
/// Slices of a merge, as a power of two: at least 4, at most `SHARDS`.
const MIN_SLICE_BITS: u32 = 2;
const MAX_SLICE_BITS: u32 = 8;

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

struct LogMirror {
    /// hash -> seq for pairs not yet merged, one map per shard (so a merged slice
    /// is dropped without scanning the others).
    first: Vec<HashMap<u64, u64, BuildKeyHasher>>,
    /// Further pairs whose hash is already in `first` (64-bit collisions: rare).
    more: Vec<(u64, u64)>,
}

impl Default for LogMirror {
    fn default() -> Self {
        LogMirror { first: (0..SHARDS).map(|_| HashMap::default()).collect(), more: Vec::new() }
    }
}

/// A merge in progress. It copies nothing at its start: the pairs of a slice
/// (those of its shards with a seq before `snapshot_end_seq`) are taken from the
/// mirror and sorted when the slice's turn comes.
pub struct Merge {
    /// Log rows with a smaller key (first seq of their batch) belong to the snapshot.
    pub snapshot_end_seq: u64,
    /// The merge has `1 << slice_bits` slices.
    slice_bits: u32,
    next_slice: usize,
    /// The next slice's pairs, sorted, once taken (kept if its commit fails).
    current: Option<Vec<(u64, u64)>>,
}

impl Merge {
    fn slices(&self) -> usize {
        1 << self.slice_bits
    }
    /// The shards slice `slice` covers.
    fn shards(&self, slice: usize) -> std::ops::Range<usize> {
        let width = SHARDS >> self.slice_bits;
        slice * width..(slice + 1) * width
    }
}

/// One slice of a merge, for one transaction.
pub struct Slice<'a> {
    pub pairs: &'a [(u64, u64)],
    /// The last slice also deletes the snapshot's log rows.
    pub last: bool,
    pub snapshot_end_seq: u64,
    slice: usize,
}

fn shard_of(hash: u64) -> usize {
    (hash >> 56) as usize
}

/// Slice bits for a merge of `pairs`: about `SLICE_PAIRS` a slice.
fn slice_bits_for(pairs: usize) -> u32 {
    let slices = pairs.div_ceil(SLICE_PAIRS).next_power_of_two();
    slices.trailing_zeros().clamp(MIN_SLICE_BITS, MAX_SLICE_BITS)
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
            let bucket = &mut log.first[shard_of(hash)];
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
        out.extend(log.first[shard_of(hash)].get(&hash));
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
        let unmerged = self.unmerged_len();
        if merge.is_some() || unmerged < threshold.max(merged / 4).max(1) {
            return;
        }
        let slice_bits = slice_bits_for(unmerged);
        *merge = Some(Merge { snapshot_end_seq: end_seq, slice_bits, next_slice: 0, current: None });
    }

    /// Run `f` with the next slice to merge, if a merge is running.
    pub fn with_next_slice<R>(&self, f: impl FnOnce(Option<Slice<'_>>) -> R) -> R {
        let mut merge = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = merge.as_mut() else { return f(None) };
        let slice = m.next_slice;
        if m.current.is_none() {
            let log = self.log.read().unwrap_or_else(|e| e.into_inner());
            let end = m.snapshot_end_seq;
            let shards = m.shards(slice);
            let first = log.first[shards.clone()].iter().flat_map(|map| map.iter().map(|(h, s)| (*h, *s)));
            let more = log.more.iter().copied().filter(|(h, _)| shards.contains(&shard_of(*h)));
            let mut pairs: Vec<(u64, u64)> = first.chain(more).filter(|&(_, s)| s < end).collect();
            pairs.sort_unstable();
            m.current = Some(pairs);
        }
        let last = slice + 1 == m.slices();
        let pairs = m.current.as_deref().expect("taken above");
        f(Some(Slice { pairs, last, snapshot_end_seq: m.snapshot_end_seq, slice }))
    }

    /// After the commit that wrote slice `slice`: drop its pairs from the mirror
    /// and move on (or finish).
    pub fn slice_committed(&self, slice: usize) {
        let mut merge = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = merge.as_mut() else { return };
        if m.next_slice != slice {
            return;
        }
        let end_seq = m.snapshot_end_seq;
        let count = m.current.take().map_or(0, |pairs| pairs.len());
        self.merged.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        {
            let shards = m.shards(slice);
            let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
            for map in &mut log.first[shards.clone()] {
                map.retain(|_, s| *s >= end_seq);
            }
            log.more.retain(|(h, s)| !(shards.contains(&shard_of(*h)) && *s < end_seq));
        }
        m.next_slice += 1;
        if m.next_slice == m.slices() {
            *merge = None;
        }
    }
}

impl Slice<'_> {
    pub fn id(&self) -> usize {
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
        let slices = walk_merge(&index);
        assert_eq!(slices.len(), 4, "a small merge has the fewest slices");
        assert_eq!(slices.iter().sum::<usize>(), 64);
        assert_eq!(index.unmerged_len(), 1, "the later pair stays unmerged");
    }

    #[test]
    fn a_large_merge_is_cut_into_slices_of_bounded_size() {
        let index = KeyIndex::default();
        let n = 40 * SLICE_PAIRS as u64;
        let pairs: Vec<(u64, u64)> = (0..n).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i + 1)).collect();
        index.add(&pairs);
        index.maybe_start_merge(1, n + 1);
        let slices = walk_merge(&index);
        assert_eq!(slices.len(), 64, "40 × SLICE_PAIRS pairs: the next power of two of slices");
        assert_eq!(slices.iter().sum::<usize>() as u64, n);
        assert!(slices.iter().all(|&len| len < SLICE_PAIRS), "{slices:?}");
        assert_eq!(index.unmerged_len(), 0);
    }

    /// Commit every slice of the running merge in turn; each slice's pair count.
    fn walk_merge(index: &KeyIndex) -> Vec<usize> {
        let mut slices = Vec::new();
        while let Some((id, n, last, sorted)) =
            index.with_next_slice(|s| s.map(|s| (s.id(), s.pairs.len(), s.last, s.pairs.is_sorted())))
        {
            assert!(sorted);
            slices.push(n);
            index.slice_committed(id);
            assert_eq!(last, index.with_next_slice(|s| s.is_none()), "`last` marks the final slice");
        }
        slices
    }
}
