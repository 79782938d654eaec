//! The on-disk dedup index, kept cheap to write: a log and two sorted runs,
//! each merged into the next in bulk (a small LSM tree on redb).
//!
//! - **The log.** Each batch appends its new `(key_hash, seq)` pairs to
//!   `KEY_LOG` in seq order, as rows of at most a block's pairs (each fits one
//!   16 KiB page), and the writer mirrors them in memory
//!   ([`KeyIndex`]). The mirror is the only per-key memory of the index, and a
//!   restart reloads it: both are bounded by `merge_threshold` pairs (plus what
//!   arrives while a merge runs), not by the keys stored.
//! - **The runs.** `KEY_RUN_UPPER` (small, recent) and `KEY_RUN_LOWER` (large)
//!   each hold their pairs sorted, as blocks of ~1,000 packed pairs, one redb row
//!   per block, cut at the 256 partitions of the hash space (`runs`). A merge
//!   rewrites whole partitions: it reads their blocks, merges them with what
//!   comes in as two sorted slices, and writes new blocks, so its cost per pair
//!   is a copy, not a B-tree insert.
//! - **Log merge.** Once the log holds `merge_threshold` pairs, the writer merges
//!   a snapshot of it into the upper run, one slice of the partitions per batch
//!   transaction. The slices are sized at the merge's start to carry about
//!   `SLICE_PAIRS` log pairs each, but there are at most 16 (`MAX_SLICE_BITS`):
//!   batches keep adding pairs while a merge runs, so a merge in few slices is
//!   what keeps the mirror near `merge_threshold` (at most 16 batches' pairs on
//!   top of it). The last slice deletes the snapshot's log rows.
//! - **Tree merge.** Once the upper run holds `merge_threshold` pairs or a
//!   quarter of the lower run, if that is more (so each tree merge rewrites the
//!   lower run for at least N/4 new keys, bounding the write amplification as the
//!   index grows), the writer moves it into the lower run partition by
//!   partition, in order: per batch transaction, whole partitions until it has
//!   read about a `TREE_SLICES`th of both runs (at least one partition), so the
//!   merge always finishes, in at most 256 transactions. Both merges may run at
//!   once; a transaction carries a slice of each, the log slice first.
//!
//! Invariants:
//! - **Findable.** A committed key's pair is in the in-memory log mirror or in one
//!   of the two runs, in every snapshot a later reader sees: the mirror gains
//!   pairs after their commit and loses them only after the commit that put them
//!   in the upper run, a partition moves from the upper run to the lower one
//!   inside one transaction, and a reader consults the mirror before it begins its
//!   read transaction (and then both runs in it).
//! - **Idempotent merges.** A crash mid-merge leaves the log rows in place; they
//!   are reloaded and merged again. A merge writes each distinct pair once, so a
//!   pair merged again is dropped; a pair found in both runs names the same
//!   record twice, which a lookup does not mind.
//! - **Counted.** Each transaction stores the runs' pair counts (`meta`) with the
//!   blocks it wrote, so an open reads them instead of scanning.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::runs;
use crate::event::BuildKeyHasher;

/// The mirror is kept in one map per partition of the runs (the top 8 bits of
/// the hash); a merge slice is a power-of-two run of them.
const SHARDS: usize = runs::PARTITIONS;
/// Pairs a merge slice aims to carry (a log merge has at most 16 slices, so
/// its slices grow past this with the log; a tree merge's are at least this).
const SLICE_PAIRS: usize = 16_384;
/// Slices of a log merge, as a power of two: at least 4, at most 16.
const MIN_SLICE_BITS: u32 = 2;
const MAX_SLICE_BITS: u32 = 4;
/// A tree merge reads about this fraction of both runs per transaction.
const TREE_SLICES: u64 = 64;
/// The mirror's maps are sized for this multiple of `merge_threshold` when the
/// index is cleared, so that they rarely grow (and leave freed tables behind):
/// the log grows past the threshold by the batches a merge spans.
const MIRROR_HEADROOM: f64 = 2.0;
/// ... but not beyond this many pairs (a huge threshold need not be reached).
const MIRROR_MAX_PRESIZE: usize = 1 << 22;

/// The in-memory mirror of `KEY_LOG` plus the merges in progress. Readers: disk
/// checks (any thread). Writers: `Store::append` (the writer thread), and the
/// recovery at open and reopen, while no reader holds the database.
#[derive(Default)]
pub struct KeyIndex {
    log: RwLock<LogMirror>,
    merge: std::sync::Mutex<Option<Merge>>,
    tree_merge: std::sync::Mutex<Option<TreeMerge>>,
    /// Pairs in `KEY_RUN_UPPER` and `KEY_RUN_LOWER`, as last committed.
    upper: AtomicU64,
    lower: AtomicU64,
    /// Emptied pair buffers for the next batch or slice: they run to hundreds of
    /// KiB, and allocated afresh each time they were faulted in as new pages (the
    /// freed memory goes back to the OS in between): ~8 % of the writer's samples
    /// in a profile at 8M keys (docs/perf.md).
    buffers: std::sync::Mutex<Vec<Vec<(u64, u64)>>>,
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
        LogMirror::with_capacity(0)
    }
}

impl LogMirror {
    fn with_capacity(pairs: usize) -> Self {
        let per_shard = pairs.div_ceil(SHARDS);
        let first = (0..SHARDS).map(|_| HashMap::with_capacity_and_hasher(per_shard, Default::default()));
        LogMirror { first: first.collect(), more: Vec::new() }
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

/// A tree merge in progress: the upper run's partitions from `from` on are
/// still to move down.
struct TreeMerge {
    from: usize,
    /// Pairs (of both runs) a slice reads at least.
    slice_pairs: u64,
}

/// One slice of a tree merge, for one transaction: partitions from `from` on,
/// until `min_pairs` of both runs were read (at least one partition).
pub struct TreeSlice {
    pub from: usize,
    pub min_pairs: u64,
}

/// What a tree slice did: partitions `from..to` moved (`to == PARTITIONS`: the
/// merge is done), `upper_removed` pairs out of the upper run and
/// `lower_added` new ones into the lower run.
pub struct TreeMoved {
    pub from: usize,
    pub to: usize,
    pub upper_removed: u64,
    pub lower_added: u64,
}

/// One slice of a log merge, for one transaction.
pub struct Slice<'a> {
    /// Sorted; all in `partitions`.
    pub pairs: &'a [(u64, u64)],
    pub partitions: std::ops::Range<usize>,
    /// The last slice also deletes the snapshot's log rows.
    pub last: bool,
    pub snapshot_end_seq: u64,
    slice: usize,
}

fn shard_of(hash: u64) -> usize {
    runs::partition_of(hash)
}

/// Slice bits for a log merge of `pairs`: about `SLICE_PAIRS` a slice.
fn slice_bits_for(pairs: usize) -> u32 {
    let slices = pairs.div_ceil(SLICE_PAIRS).next_power_of_two();
    slices.trailing_zeros().clamp(MIN_SLICE_BITS, MAX_SLICE_BITS)
}

impl KeyIndex {
    /// At open and reopen, before the log (of `log_pairs`) is loaded again:
    /// forget everything but the lengths of the trees, and size the mirror for
    /// what it will hold.
    pub fn clear(&self, merge_threshold: usize, log_pairs: usize, upper: u64, lower: u64) {
        let steady = ((merge_threshold as f64 * MIRROR_HEADROOM) as usize).min(MIRROR_MAX_PRESIZE);
        let capacity = steady.max(log_pairs + log_pairs / 4);
        *self.log.write().unwrap_or_else(|e| e.into_inner()) = LogMirror::with_capacity(capacity);
        *self.merge.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.tree_merge.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.upper.store(upper, Relaxed);
        self.lower.store(lower, Relaxed);
    }

    /// An empty pair buffer, reused if one was returned.
    pub fn take_buffer(&self) -> Vec<(u64, u64)> {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    /// Keep `buffer` (emptied) for a later `take_buffer`; a few are kept.
    pub fn return_buffer(&self, mut buffer: Vec<(u64, u64)>) {
        buffer.clear();
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        if buffers.len() < 4 {
            buffers.push(buffer);
        }
    }

    /// Pairs in the upper run.
    pub fn upper_len(&self) -> u64 {
        self.upper.load(Relaxed)
    }

    /// Pairs in the lower run.
    pub fn lower_len(&self) -> u64 {
        self.lower.load(Relaxed)
    }

    /// Pairs of committed keys (startup reload and after each commit).
    pub fn add(&self, pairs: &[(u64, u64)]) {
        let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
        let log = &mut *log;
        for &(hash, seq) in pairs {
            // One probe per pair (the entry), not a get and then an insert.
            match log.first[shard_of(hash)].entry(hash) {
                Entry::Vacant(slot) => {
                    slot.insert(seq);
                }
                Entry::Occupied(first) if *first.get() != seq => log.more.push((hash, seq)),
                Entry::Occupied(_) => {}
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

    /// Start a log merge of everything unmerged if the log is at `threshold`,
    /// and a tree merge if the upper run is at `threshold` or a quarter of the
    /// lower one; neither if one of its kind is running. `end_seq` is the head's
    /// next seq (nothing later exists).
    pub fn maybe_start_merges(&self, threshold: usize, end_seq: u64) {
        let mut merge = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let unmerged = self.unmerged_len();
        if merge.is_none() && unmerged >= threshold.max(1) {
            let slice_bits = slice_bits_for(unmerged);
            *merge = Some(Merge { snapshot_end_seq: end_seq, slice_bits, next_slice: 0, current: None });
        }
        let mut tree_merge = self.tree_merge.lock().unwrap_or_else(|e| e.into_inner());
        let (upper, lower) = (self.upper.load(Relaxed), self.lower.load(Relaxed));
        if tree_merge.is_none() && upper >= (threshold as u64).max(lower / 4).max(1) {
            // (A tiny threshold, in tests, makes tiny slices too.)
            let slice_pairs = ((upper + lower) / TREE_SLICES).max(SLICE_PAIRS.min(threshold.max(1)) as u64);
            *tree_merge = Some(TreeMerge { from: 0, slice_pairs });
        }
    }

    /// The next slice of a running tree merge.
    pub fn next_tree_slice(&self) -> Option<TreeSlice> {
        let merge = self.tree_merge.lock().unwrap_or_else(|e| e.into_inner());
        let m = merge.as_ref()?;
        Some(TreeSlice { from: m.from, min_pairs: m.slice_pairs })
    }

    /// After the commit of a transaction with these merge slices: the runs'
    /// counts, the mirror and the merges move on.
    pub fn slices_committed(&self, log: Option<(usize, u64)>, tree: Option<&TreeMoved>) {
        if let Some((slice, upper_added)) = log {
            self.upper.fetch_add(upper_added, Relaxed);
            self.slice_committed(slice);
        }
        if let Some(moved) = tree {
            let _ =
                self.upper.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(moved.upper_removed)));
            self.lower.fetch_add(moved.lower_added, Relaxed);
            let mut merge = self.tree_merge.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = merge.as_mut().filter(|m| m.from == moved.from) {
                m.from = moved.to;
                if m.from >= runs::PARTITIONS {
                    *merge = None;
                }
            }
        }
    }

    /// Run `f` with the next slice of a running log merge.
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
            let mut pairs = self.take_buffer();
            pairs.extend(first.chain(more).filter(|&(_, s)| s < end));
            pairs.sort_unstable();
            m.current = Some(pairs);
        }
        let last = slice + 1 == m.slices();
        let partitions = m.shards(slice);
        let pairs = m.current.as_deref().expect("taken above");
        f(Some(Slice { pairs, partitions, last, snapshot_end_seq: m.snapshot_end_seq, slice }))
    }

    /// After the commit that wrote log slice `slice` to the upper run: drop its
    /// pairs from the mirror and move on (or finish).
    fn slice_committed(&self, slice: usize) {
        let mut merge = self.merge.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = merge.as_mut() else { return };
        if m.next_slice != slice {
            return;
        }
        let end_seq = m.snapshot_end_seq;
        if let Some(pairs) = m.current.take() {
            self.return_buffer(pairs);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        index.maybe_start_merges(64, 65);
        index.add(&[(3, 65)]); // committed after the snapshot
        let slices = walk_merge(&index);
        assert_eq!(slices.len(), 4, "a small merge has the fewest slices");
        assert_eq!(slices.iter().sum::<usize>(), 64);
        assert_eq!(index.unmerged_len(), 1, "the later pair stays unmerged");
    }

    #[test]
    fn a_log_merge_is_cut_into_slices_of_about_slice_pairs_but_at_most_16() {
        for (pairs, slices) in [(12 * SLICE_PAIRS as u64, 16), (40 * SLICE_PAIRS as u64, 16)] {
            let index = KeyIndex::default();
            let spread = (0..pairs).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i + 1));
            index.add(&spread.collect::<Vec<_>>());
            index.maybe_start_merges(1, pairs + 1);
            let lens = walk_merge(&index);
            assert_eq!(lens.len(), slices, "{pairs} pairs");
            assert_eq!(lens.iter().sum::<usize>() as u64, pairs);
            let even = pairs as usize / slices;
            assert!(lens.iter().all(|&len| len.abs_diff(even) < even / 10), "{lens:?}");
            assert_eq!(index.unmerged_len(), 0);
        }
    }

    #[test]
    fn a_tree_merge_starts_at_a_quarter_of_the_lower_run_and_walks_every_partition() {
        let index = KeyIndex::default();
        index.clear(100, 0, 99, 800);
        index.maybe_start_merges(100, 1);
        assert!(index.next_tree_slice().is_none(), "99 pairs: under the threshold");
        index.clear(100, 0, 199, 800);
        index.maybe_start_merges(100, 1);
        assert!(index.next_tree_slice().is_none(), "under a quarter of the lower run");
        let upper = 64 * SLICE_PAIRS as u64 * 4;
        index.clear(100, 0, upper, 4 * upper);
        index.maybe_start_merges(100, 1);
        let slice = index.next_tree_slice().expect("a quarter: started");
        assert_eq!((slice.from, slice.min_pairs), (0, 5 * upper / TREE_SLICES));

        let moved = TreeMoved { from: 0, to: 10, upper_removed: 10, lower_added: 9 };
        index.slices_committed(None, Some(&moved));
        assert_eq!(index.next_tree_slice().unwrap().from, 10, "on from the next partition");
        assert_eq!((index.upper_len(), index.lower_len()), (upper - 10, 4 * upper + 9));
        let stale = TreeMoved { from: 0, to: 20, upper_removed: 0, lower_added: 0 };
        index.slices_committed(None, Some(&stale));
        assert_eq!(index.next_tree_slice().unwrap().from, 10, "a slice of another merge is ignored");
        let rest = TreeMoved { from: 10, to: runs::PARTITIONS, upper_removed: 0, lower_added: 0 };
        index.slices_committed(None, Some(&rest));
        assert!(index.next_tree_slice().is_none(), "the last partition: done");
    }

    /// Commit every slice of the running merge in turn; each slice's pair count.
    fn walk_merge(index: &KeyIndex) -> Vec<usize> {
        let mut slices = Vec::new();
        while let Some((id, n, last, sorted)) =
            index.with_next_slice(|s| s.map(|s| (s.id(), s.pairs.len(), s.last, s.pairs.is_sorted())))
        {
            assert!(sorted);
            slices.push(n);
            index.slices_committed(Some((id, n as u64)), None);
            assert_eq!(last, index.with_next_slice(|s| s.is_none()), "`last` marks the final slice");
        }
        slices
    }
}
