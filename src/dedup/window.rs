//! The window: the most recently stored keys, exact and compact, so that a
//! duplicate of one of them is decided in memory without the filter or the disk.
//!
//! Layout. The window is split into shards by the key's hash. Each shard is a
//! `hashbrown::HashTable` of 8-byte slots (a position) plus an arena:
//! the keys' bytes, appended in the order they were stored, in chunks of
//! [`CHUNK_BYTES`]. A slot names where its key's record starts in the arena, so
//! a key costs its slot, its record (its text plus 10 bytes) and no allocation
//! of its own. Keys are compared by their exact bytes, never by hash alone.
//!
//! Eviction is oldest first, per shard: inserting a key past the shard's share
//! of the capacity drops the shard's oldest record and its slot. Hashes spread
//! keys evenly, so the window as a whole keeps about its capacity of the newest
//! keys; a window of at most [`KEYS_PER_SHARD`] keys has one shard and is exact.
//!
//! Who changes what: only the settling of a committed batch inserts (after the
//! key's filter bits are set; one batch at a time, see `dedup`); handlers only
//! read. Each shard has its own lock, held for one insert, or for one request's
//! probes of that shard (`contains_each`).

use std::collections::VecDeque;
use std::sync::Mutex;

use hashbrown::HashTable;

use crate::event::KeyRef;

/// Arena chunk size. A record is at most `RECORD_FIXED + 2 * 255` bytes, so a
/// chunk's unused tail wastes under 3 %.
const CHUNK_BYTES: usize = 16 << 10;

/// A record's bytes before the key text: the hash, then the topic's and the
/// event id's lengths, one byte each.
const RECORD_FIXED: usize = 10;

/// Longest topic or event id a record holds (its length is one byte).
/// Validation bounds a topic to this, but an event id only after trimming: an
/// id padded past it is never put in the window. That keeps coverage: its filter
/// bits are set before the handover, so a duplicate of it goes to the exact disk
/// check. (Such an id's length, truncated to a byte, used to misplace every later
/// record of its shard.)
const MAX_PART_BYTES: usize = u8::MAX as usize;

/// Most keys per shard, up to [`MAX_SHARDS`] shards: just under the 7168 slots
/// an 8192-bucket table holds, so a full shard's table is ~85 % loaded (a
/// table sized by powers of two alone can be half empty).
const KEYS_PER_SHARD: usize = 7000;
const MAX_SHARDS: usize = 256;

pub struct Window {
    shards: Box<[Mutex<Shard>]>,
    /// Most keys one shard keeps.
    shard_capacity: usize,
}

impl Window {
    /// A window of about `capacity` keys (exactly `capacity` up to
    /// `KEYS_PER_SHARD`; none at 0: every insert is evicted at once).
    pub fn new(capacity: usize) -> Self {
        let shards = capacity.div_ceil(KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        let shard_capacity = capacity.div_ceil(shards);
        Window { shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(), shard_capacity }
    }

    /// Whether `key` is one of the window's stored keys.
    pub fn contains(&self, key: KeyRef<'_>) -> bool {
        lock(&self.shards[self.shard_of(key.hash)]).contains(key)
    }

    /// [`Self::contains`] for each of `keys`, in order. The keys are probed a
    /// shard at a time, each shard locked once: a probe is a few dependent
    /// cache misses (control bytes, slot, record), and a lock between two
    /// probes (a locked instruction, a full fence) kept them from overlapping.
    pub fn contains_each(&self, keys: &[KeyRef<'_>]) -> Vec<bool> {
        if let [key] = keys {
            return vec![self.contains(*key)]; // a single event: nothing to sort
        }
        let mut found = vec![false; keys.len()];
        // (shard << 32 | position), sorted: the keys of each shard together.
        let mut order: Vec<u64> =
            (keys.iter().enumerate()).map(|(i, k)| (self.shard_of(k.hash) as u64) << 32 | i as u64).collect();
        order.sort_unstable();
        for run in order.chunk_by(|a, b| a >> 32 == b >> 32) {
            let shard = lock(&self.shards[(run[0] >> 32) as usize]);
            for &at in run {
                let i = at as u32 as usize;
                found[i] = shard.contains(keys[i]);
            }
        }
        found
    }

    /// Settling only (`Settler::settle`): `key` is stored. Past the shard's
    /// capacity its oldest key leaves. The key must not be in the window already
    /// (only a key that won its claim while absent from the window is ever
    /// inserted). A key with a part over [`MAX_PART_BYTES`] is not kept.
    pub fn insert(&self, key: KeyRef<'_>) {
        if key.topic.len() > MAX_PART_BYTES || key.event_id.len() > MAX_PART_BYTES {
            return;
        }
        let mut shard = lock(&self.shards[self.shard_of(key.hash)]);
        debug_assert!(!shard.contains(key), "{key:?} inserted twice");
        shard.insert(key);
        while shard.table.len() > self.shard_capacity {
            shard.evict_oldest();
        }
    }

    /// Keys in the window (each shard locked in turn: for `/stats`, not the hot path).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }

    /// Heap bytes the window holds: slot tables and arena chunks.
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).heap_bytes()).sum()
    }

    fn shard_of(&self, hash: u64) -> usize {
        // From bits 16..48, which the shard's table uses neither for its
        // buckets (the low bits) nor for its control bytes (the top 7).
        ((((hash >> 16) & 0xffff_ffff) * self.shards.len() as u64) >> 32) as usize
    }
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // Nothing under a shard's lock panics short of a bug; should it, the
    // shard stays usable: a slot only ever names a record of its own arena,
    // and an arena record without a slot is skipped when it is evicted.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// A slot: where its key's record starts, `chunk number * CHUNK_BYTES +
/// offset`, chunk numbers counted since the shard was made. The key's hash is
/// in the record (read on a rehash and on a control-byte match).
type Slot = u64;

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    arena: Arena,
}

impl Shard {
    fn contains(&self, key: KeyRef<'_>) -> bool {
        self.table.find(key.hash, |&at| self.arena.holds(at, key)).is_some()
    }

    fn insert(&mut self, key: KeyRef<'_>) {
        let at = self.arena.push(key);
        let arena = &self.arena;
        self.table.insert_unique(key.hash, at, |&at| arena.hash_at(at));
    }

    /// Drop the oldest record and its slot. Only called with a record there.
    fn evict_oldest(&mut self) {
        self.arena.skip_consumed();
        let at = self.arena.oldest();
        let hash = self.arena.hash_at(at);
        if let Ok(slot) = self.table.find_entry(hash, |&slot| slot == at) {
            slot.remove();
        }
        self.arena.pop_oldest();
    }

    fn heap_bytes(&self) -> usize {
        self.table.allocation_size() + self.arena.heap_bytes()
    }
}

/// Records, oldest first: `[hash: u64][topic length: u8][event id length: u8]
/// [topic][event id]`. A record never spans two chunks.
#[derive(Default)]
struct Arena {
    /// `chunks[0]` is chunk number `first_chunk`.
    chunks: VecDeque<Vec<u8>>,
    first_chunk: u64,
    /// Where the oldest record starts in `chunks[0]`.
    head: usize,
}

impl Arena {
    /// Append `key`'s record; returns where it starts.
    fn push(&mut self, key: KeyRef<'_>) -> u64 {
        let (topic, id) = (key.topic.as_bytes(), key.event_id.as_bytes());
        let len = RECORD_FIXED + topic.len() + id.len();
        if self.chunks.back().is_none_or(|chunk| chunk.len() + len > CHUNK_BYTES) {
            self.chunks.push_back(Vec::with_capacity(CHUNK_BYTES));
        }
        let chunk_no = self.first_chunk + self.chunks.len() as u64 - 1;
        let chunk = self.chunks.back_mut().expect("just ensured");
        let at = chunk_no * CHUNK_BYTES as u64 + chunk.len() as u64;
        chunk.extend_from_slice(&key.hash.to_le_bytes());
        // Both fit: `Window::insert` takes no part over MAX_PART_BYTES.
        chunk.extend_from_slice(&[topic.len() as u8, id.len() as u8]);
        chunk.extend_from_slice(topic);
        chunk.extend_from_slice(id);
        at
    }

    fn record(&self, at: u64) -> &[u8] {
        let chunk = &self.chunks[(at / CHUNK_BYTES as u64 - self.first_chunk) as usize];
        &chunk[(at % CHUNK_BYTES as u64) as usize..]
    }

    fn hash_at(&self, at: u64) -> u64 {
        u64::from_le_bytes(self.record(at)[..8].try_into().expect("8 bytes"))
    }

    /// Whether the record at `at` is `key`, byte for byte.
    fn holds(&self, at: u64, key: KeyRef<'_>) -> bool {
        let record = self.record(at);
        let (topic, id) = (key.topic.as_bytes(), key.event_id.as_bytes());
        let (topic_len, id_len) = (record[8] as usize, record[9] as usize);
        let text = &record[RECORD_FIXED..];
        self.hash_at(at) == key.hash
            && (topic_len, id_len) == (topic.len(), id.len())
            && text[..topic_len] == *topic
            && text[topic_len..topic_len + id_len] == *id
    }

    fn oldest(&self) -> u64 {
        self.first_chunk * CHUNK_BYTES as u64 + self.head as u64
    }

    /// Move past the oldest record; a chunk left behind is freed.
    fn pop_oldest(&mut self) {
        let record = &self.chunks[0][self.head..];
        self.head += RECORD_FIXED + record[8] as usize + record[9] as usize;
        self.skip_consumed();
    }

    /// Free front chunks whose records have all left, so `head` is at a record
    /// whenever there is one.
    fn skip_consumed(&mut self) {
        while self.chunks.len() > 1 && self.head == self.chunks[0].len() {
            self.chunks.pop_front();
            self.first_chunk += 1;
            self.head = 0;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>() + self.chunks.capacity() * size_of::<Vec<u8>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKey, KeyHasher};

    fn key(topic: &str, id: &str) -> EventKey {
        EventKey::new(KeyHasher::new(7), topic, id)
    }

    #[test]
    fn stored_keys_are_found_by_their_exact_bytes() {
        let window = Window::new(100);
        window.insert(key("ab", "c").parts());
        assert!(window.contains(key("ab", "c").parts()));
        assert!(!window.contains(key("a", "bc").parts()), "another split of the same text");
        assert!(!window.contains(key("ab", "d").parts()));
        assert_eq!(window.len(), 1);
    }

    /// An event id padded with spaces past 255 bytes is valid (the limit is on
    /// the trimmed id) but does not fit a record: it is left out, and the keys
    /// around it are kept and evicted as before.
    #[test]
    fn an_id_longer_than_a_record_holds_is_left_out() {
        let window = Window::new(100);
        let padded = key("t", &format!("{}{}", "a".repeat(255), " ".repeat(45)));
        window.insert(padded.parts());
        assert!(!window.contains(padded.parts()));
        let keys: Vec<EventKey> = (0..300).map(|i| key("t", &i.to_string())).collect();
        keys.iter().for_each(|k| window.insert(k.parts()));
        assert_eq!(window.len(), 100);
        assert!(keys[200..].iter().all(|k| window.contains(k.parts())), "the newest 100 stay");
    }

    /// A request's keys are probed shard by shard, and answered in its order.
    #[test]
    fn a_request_is_answered_in_its_own_order() {
        let window = Window::new(4 * KEYS_PER_SHARD);
        assert_eq!(window.shards.len(), 4);
        let keys: Vec<EventKey> = (0..2000).map(|i| key("t", &i.to_string())).collect();
        keys.iter().step_by(2).for_each(|k| window.insert(k.parts()));
        let parts: Vec<KeyRef<'_>> = keys.iter().rev().map(EventKey::parts).collect();
        let found = window.contains_each(&parts);
        assert!(found.iter().rev().enumerate().all(|(i, &f)| f == (i % 2 == 0)));
        assert_eq!(found, parts.iter().map(|&k| window.contains(k)).collect::<Vec<_>>());
    }

    #[test]
    fn a_window_of_capacity_zero_keeps_nothing() {
        let window = Window::new(0);
        window.insert(key("t", "1").parts());
        assert!(!window.contains(key("t", "1").parts()));
        assert_eq!(window.len(), 0);
    }

    /// Regression guard for exactness: two different keys with one hash (forced
    /// here by building them with equal hashes) are told apart by their bytes.
    #[test]
    fn a_hash_collision_is_never_a_match() {
        let window = Window::new(100);
        let stored = key("t", "1");
        window.insert(stored.parts());
        let other = EventKey::with_hash_for_tests(stored.hash(), "t", "2");
        assert!(!window.contains(other.parts()));
        window.insert(other.parts());
        assert!(window.contains(other.parts()) && window.contains(stored.parts()));
    }

    #[test]
    fn the_oldest_keys_leave_first_and_chunks_are_given_back() {
        // One shard (capacity below KEYS_PER_SHARD): eviction is exactly oldest first.
        let window = Window::new(1000);
        let keys: Vec<EventKey> = (0..5000).map(|i| key("topic", &format!("event-{i:08}"))).collect();
        for k in &keys {
            window.insert(k.parts());
        }
        assert_eq!(window.len(), 1000);
        assert!(keys[..4000].iter().all(|k| !window.contains(k.parts())), "the oldest 4000 left");
        assert!(keys[4000..].iter().all(|k| window.contains(k.parts())), "the newest 1000 stay");
        // 1000 records of 29 bytes: 2 chunks live, the rest were popped.
        assert!(window.heap_bytes() < 4 * CHUNK_BYTES + (64 << 10), "{} bytes", window.heap_bytes());
    }

    #[test]
    fn a_large_window_keeps_about_its_capacity() {
        let capacity = 64 * KEYS_PER_SHARD;
        let window = Window::new(capacity);
        let keys: Vec<EventKey> = (0..2 * capacity).map(|i| key("t", &i.to_string())).collect();
        for k in &keys {
            window.insert(k.parts());
        }
        let kept = window.len();
        assert!(kept <= capacity && kept > capacity * 97 / 100, "kept {kept} of {capacity}");
        let newest_found =
            keys[capacity + capacity / 10..].iter().filter(|k| window.contains(k.parts())).count();
        assert!(newest_found > (capacity - capacity / 10) * 99 / 100, "newest mostly kept: {newest_found}");
    }

    /// The figure the README states: the window's bytes per key for keys of
    /// the benchmark's shape (a 7-byte topic and a 36-byte UUID).
    #[test]
    fn a_key_costs_under_eighty_bytes() {
        let capacity = 1 << 20;
        let window = Window::new(capacity);
        for i in 0..capacity {
            window.insert(key(&format!("topic-{}", i % 16), &format!("{:036}", i)).parts());
        }
        let per_key = window.heap_bytes() as f64 / window.len() as f64;
        assert!(per_key < 80.0, "{per_key:.1} bytes per key");
    }
}
