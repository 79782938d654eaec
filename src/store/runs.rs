//! The key index's on-disk format: a sorted run of `(key_hash, seq)` pairs kept
//! as blocks of packed pairs, one redb row per block (`first hash -> pairs`).
//! A merge reads a run's blocks, merges them with the incoming pairs as two
//! sorted slices and writes the result back as blocks: a B-tree insert per
//! block (~1,000 pairs), not per pair.
//!
//! Invariants (what [`lookup`](Block::seqs_of) relies on):
//! - **Partitioned.** A block holds pairs of one partition (the top
//!   `PARTITION_BITS` bits of the hash) only, so a merge of a run of partitions
//!   replaces whole blocks.
//! - **Equal hashes stay together.** A block never ends between two pairs of
//!   one hash, so the block with the largest first hash at or below `h` holds
//!   every pair of `h` (it may grow past `BLOCK_PAIRS` for a 64-bit collision).
//! - **Sorted, no repeats.** Pairs are in `(hash, seq)` order within and across
//!   blocks, each at most once (a pair merged again after a crash is dropped).

use std::ops::Bound;

use redb::{ReadableTable, Table};

/// Partitions of the hash space, as bits of the hash's top: a block never
/// spans two, and a merge slice is a run of them. The key-log mirror's shards
/// are the same partitions (`index::SHARDS`).
pub const PARTITION_BITS: u32 = 8;
pub const PARTITIONS: usize = 1 << PARTITION_BITS;
/// Bytes of one pair in a block: `hash` then `seq`, little-endian.
pub const PAIR_BYTES: usize = 16;
/// Pairs a block holds at most (but for a run of one hash): one page's worth
/// (`schema::PAGE_VALUE_MAX_BYTES`, 1,020 pairs).
pub const BLOCK_PAIRS: usize = super::schema::PAGE_VALUE_MAX_BYTES / PAIR_BYTES;

pub type RunTable<'txn> = Table<'txn, u64, &'static [u8]>;

pub fn partition_of(hash: u64) -> usize {
    (hash >> (64 - PARTITION_BITS)) as usize
}

/// The first hash of partition `p` (`p < PARTITIONS`).
fn partition_start(p: usize) -> u64 {
    (p as u64) << (64 - PARTITION_BITS)
}

/// The block keys (first hashes) of partitions `from..to`.
pub fn partitions(from: usize, to: usize) -> (Bound<u64>, Bound<u64>) {
    let end = if to >= PARTITIONS { Bound::Unbounded } else { Bound::Excluded(partition_start(to)) };
    (Bound::Included(partition_start(from)), end)
}

/// A block's pairs as stored.
#[derive(Clone, Copy)]
pub struct Block<'a>(&'a [u8]);

impl<'a> Block<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Block(bytes)
    }

    fn len(self) -> usize {
        self.0.len() / PAIR_BYTES
    }

    fn hash_at(self, i: usize) -> u64 {
        let at = i * PAIR_BYTES;
        u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }

    fn pair_at(self, i: usize) -> (u64, u64) {
        let at = i * PAIR_BYTES + 8;
        (self.hash_at(i), u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes")))
    }

    pub fn last_hash(self) -> Option<u64> {
        self.len().checked_sub(1).map(|i| self.hash_at(i))
    }

    /// The seqs of the pairs with this hash (binary search).
    pub fn seqs_of(self, hash: u64) -> impl Iterator<Item = u64> + 'a {
        let start = partition_point(self.len(), |i| self.hash_at(i) < hash);
        (start..self.len()).map(move |i| self.pair_at(i)).take_while(move |&(h, _)| h == hash).map(|(_, s)| s)
    }

    pub fn pairs(self) -> impl Iterator<Item = (u64, u64)> + 'a {
        (0..self.len()).map(move |i| self.pair_at(i))
    }
}

/// Pairs packed as in a block (a `KEY_LOG` row has the same layout).
pub fn encode_pairs(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * PAIR_BYTES);
    pairs.iter().for_each(|&pair| push_pair(&mut out, pair));
    out
}

fn push_pair(out: &mut Vec<u8>, (hash, seq): (u64, u64)) {
    out.extend_from_slice(&hash.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
}

/// The first `i` in `0..len` for which `below(i)` is false (`below` is true on a prefix).
fn partition_point(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// Finds the block that may hold a hash, reusing the last one found while the
/// hashes asked for (in ascending order, as a multi-get asks) stay inside it.
pub struct BlockFinder<'t, T: ReadableTable<u64, &'static [u8]>> {
    table: &'t T,
    current: Option<(u64, u64, redb::AccessGuard<'t, &'static [u8]>)>,
}

impl<'t, T: ReadableTable<u64, &'static [u8]>> BlockFinder<'t, T> {
    pub fn new(table: &'t T) -> Self {
        BlockFinder { table, current: None }
    }

    /// Seqs of the pairs with `hash`, appended to `out`: one B-tree descent for
    /// a block not found before, then a binary search in it.
    pub fn seqs_of(&mut self, hash: u64, out: &mut impl FnMut(u64)) -> Result<(), redb::StorageError> {
        let inside = |&(first, last, _): &(u64, u64, _)| first <= hash && hash <= last;
        if !self.current.as_ref().is_some_and(inside) {
            self.current = None;
            let start = partition_start(partition_of(hash));
            if let Some(entry) = self.table.range(start..=hash)?.next_back() {
                let (first, bytes) = entry?;
                let last = Block::new(bytes.value()).last_hash().unwrap_or(0);
                self.current = Some((first.value(), last, bytes));
            }
        }
        if let Some((_, _, bytes)) = &self.current {
            Block::new(bytes.value()).seqs_of(hash).for_each(out);
        }
        Ok(())
    }
}

/// Every pair of partitions `from..to`, appended to `out` in order.
pub fn read_partitions(
    table: &impl ReadableTable<u64, &'static [u8]>,
    from: usize,
    to: usize,
    out: &mut Vec<(u64, u64)>,
) -> Result<(), redb::StorageError> {
    for entry in table.range(partitions(from, to))? {
        out.extend(Block::new(entry?.1.value()).pairs());
    }
    Ok(())
}

/// Replace partitions `from..to` of a run by the sorted merge of their own
/// pairs (`old`, as [`read_partitions`] gave them) and `new` (sorted, all in
/// those partitions). Returns the pairs written (repeats dropped).
pub fn rewrite_partitions(
    table: &mut RunTable<'_>,
    from: usize,
    to: usize,
    old: &[(u64, u64)],
    new: &[(u64, u64)],
) -> Result<u64, redb::StorageError> {
    table.retain_in(partitions(from, to), |_, _| false)?;
    let mut writer = BlockWriter::new(table);
    merge_sorted(old, new, |pair| writer.push(pair))?;
    writer.finish()
}

/// Call `f` with the pairs of two sorted slices in order, each distinct pair once.
fn merge_sorted<E>(
    a: &[(u64, u64)],
    b: &[(u64, u64)],
    mut f: impl FnMut((u64, u64)) -> Result<(), E>,
) -> Result<(), E> {
    let (mut i, mut j) = (0, 0);
    let mut last = None;
    while i < a.len() || j < b.len() {
        let next = if j == b.len() || (i < a.len() && a[i] <= b[j]) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        if last != Some(next) {
            f(next)?;
            last = Some(next);
        }
    }
    Ok(())
}

/// Cuts sorted pairs into blocks and inserts them (see the invariants above).
pub struct BlockWriter<'a, 't> {
    table: &'a mut RunTable<'t>,
    block: Vec<u8>,
    first: u64,
    last: Option<(u64, u64)>,
    written: u64,
}

impl<'a, 't> BlockWriter<'a, 't> {
    pub fn new(table: &'a mut RunTable<'t>) -> Self {
        BlockWriter {
            table,
            block: Vec::with_capacity(BLOCK_PAIRS * PAIR_BYTES),
            first: 0,
            last: None,
            written: 0,
        }
    }

    /// Add the next pair (sorted after every earlier one; a repeat is dropped).
    pub fn push(&mut self, (hash, seq): (u64, u64)) -> Result<(), redb::StorageError> {
        if let Some(last) = self.last {
            debug_assert!(last <= (hash, seq), "pairs arrive sorted");
            if last == (hash, seq) {
                return Ok(());
            }
            let full = self.block.len() >= BLOCK_PAIRS * PAIR_BYTES && hash != last.0;
            if full || partition_of(hash) != partition_of(last.0) {
                self.flush()?;
            }
        }
        if self.block.is_empty() {
            self.first = hash;
        }
        push_pair(&mut self.block, (hash, seq));
        self.last = Some((hash, seq));
        self.written += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), redb::StorageError> {
        if !self.block.is_empty() {
            self.table.insert(self.first, self.block.as_slice())?;
            self.block.clear();
        }
        Ok(())
    }

    /// Write the last block; the pairs written in all.
    pub fn finish(mut self) -> Result<u64, redb::StorageError> {
        self.flush()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const RUN: TableDefinition<u64, &[u8]> = TableDefinition::new("run");

    fn spread(i: u64) -> u64 {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn pairs_round_trip() {
        let pairs = vec![(u64::MAX, 1), (7, 2)];
        assert_eq!(Block::new(&encode_pairs(&pairs)).pairs().collect::<Vec<_>>(), pairs);
    }

    #[test]
    fn merging_keeps_order_and_drops_repeats() {
        let mut out = Vec::new();
        merge_sorted::<()>(&[(1, 1), (3, 1), (5, 5)], &[(1, 1), (2, 0), (5, 6)], |p| {
            out.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, [(1, 1), (2, 0), (3, 1), (5, 5), (5, 6)]);
    }

    /// Blocks are cut at partitions and at `BLOCK_PAIRS`, never inside a run of
    /// one hash, and every pair is found again, by lookup and by scan.
    #[test]
    fn a_run_finds_every_pair_and_its_blocks_fit_their_pages() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("run.redb")).unwrap();
        let mut pairs: Vec<(u64, u64)> = (0..20_000).map(|i| (spread(i), i)).collect();
        // A collision run longer than a block, across what would be a cut.
        let collided = pairs[5_000].0;
        pairs.extend((0..2 * BLOCK_PAIRS as u64).map(|s| (collided, 100_000 + s)));
        pairs.sort_unstable();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RUN).unwrap();
            let written = rewrite_partitions(&mut table, 0, PARTITIONS, &[], &pairs).unwrap();
            assert_eq!(written as usize, pairs.len());
            let mut previous_last = None;
            for entry in table.iter().unwrap() {
                let (first, bytes) = entry.unwrap();
                let block: Vec<_> = Block::new(bytes.value()).pairs().collect();
                assert_eq!(block[0].0, first.value());
                assert!(previous_last < Some(block[0].0), "a hash never spans two blocks");
                previous_last = block.last().map(|p| p.0);
                assert_eq!(partition_of(block[0].0), partition_of(block.last().unwrap().0));
                let grown = block.iter().any(|p| p.0 == collided);
                assert!(block.len() <= BLOCK_PAIRS || grown, "{}", block.len());
            }
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(RUN).unwrap();
        let mut finder = BlockFinder::new(&table);
        let mut found = Vec::new();
        let mut hashes: Vec<u64> = pairs.iter().map(|p| p.0).collect();
        hashes.dedup();
        for &hash in &hashes {
            finder.seqs_of(hash, &mut |seq| found.push((hash, seq))).unwrap();
        }
        assert_eq!(found, pairs);
        let mut none = Vec::new();
        finder.seqs_of(spread(20_001), &mut |seq| none.push(seq)).unwrap();
        assert!(none.is_empty());
        let mut scanned = Vec::new();
        read_partitions(&table, 0, PARTITIONS, &mut scanned).unwrap();
        assert_eq!(scanned, pairs);
    }

    /// Rewriting some partitions leaves the others as they were.
    #[test]
    fn a_rewrite_touches_its_partitions_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("run.redb")).unwrap();
        let mut pairs: Vec<(u64, u64)> = (0..5_000).map(|i| (spread(i), i)).collect();
        pairs.sort_unstable();
        let txn = db.begin_write().unwrap();
        let mut table = txn.open_table(RUN).unwrap();
        rewrite_partitions(&mut table, 0, PARTITIONS, &[], &pairs).unwrap();
        let (from, to) = (16, 32);
        let mut old = Vec::new();
        read_partitions(&table, from, to, &mut old).unwrap();
        let new: Vec<(u64, u64)> = (0..3).map(|i| (partition_start(20) + i, 9_000 + i)).collect();
        let written = rewrite_partitions(&mut table, from, to, &old, &new).unwrap();
        assert_eq!(written as usize, old.len() + 3);
        let mut all = Vec::new();
        read_partitions(&table, 0, PARTITIONS, &mut all).unwrap();
        pairs.extend(new);
        pairs.sort_unstable();
        assert_eq!(all, pairs);
    }
}
