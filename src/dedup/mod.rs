//! The in-memory dedup state: the keys in flight (a sharded `DashMap`), the
//! window of recently stored keys (`window`, compact and exact), and a Bloom
//! filter of every stored key. Sync, no `.await`: callers never hold a guard
//! across one.
//!
//! Invariants (collected in docs/design.md):
//! - **Claim.** A key enters `in_flight` only through [`Deduper::claim_all`] (or
//!   `claim`, its one-key form), atomically (entry API), and only while it is in
//!   neither `in_flight` nor the window: of two concurrent requests with one key,
//!   exactly one claims it.
//! - **Coverage.** Every key on disk is in the filter, or in the window or
//!   `in_flight`, or both. The settler sets filter bits after the writer's commit
//!   and before it stores keys in the window.
//! - **Handover.** The settler puts a batch's keys in the window, then moves the
//!   handover epoch, then takes them out of `in_flight`; a claim that missed the
//!   window checks it again while it holds the key's vacant `in_flight` entry,
//!   unless the epoch is where it was before that first miss. So no claim can
//!   find a key in neither: a removal it raced moved the epoch first (`claim`).
//! - **Eviction.** A key leaves `in_flight` only when its claim is released
//!   (nothing of its request was stored) or once it is in the window; it leaves
//!   the window by oldest-first eviction. So an in-flight key is never forgotten,
//!   and an evicted key is still in the filter.
//! - **Who changes what.** Handlers claim and release (through `ClaimSet`); only
//!   the settling of a committed batch (`Settler::settle`, one batch at a time in
//!   commit order: on the settler thread, or on the writer's for a small batch
//!   while the settler thread is idle or gone) sets filter bits and stores keys
//!   in the window; the startup rebuild runs before either thread starts.

mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bloomfilter::Bloom;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::ack::{FailReason, Progress, Ticket};
use crate::event::{BuildKeyHasher, EventKey, KeyRef};
use window::Window;

/// Shards of the in-flight map. dashmap's default is four per core (8 here):
/// the settler's handovers (one shard lock per key) then met the handlers'
/// claims on the same few locks, and both spun and parked there.
const IN_FLIGHT_SHARDS: usize = 256;

/// Bits set, and read, per key in the Bloom filter. Each is a cache miss in a
/// filter of megabytes: the optimum for a 1 % rate, 7, cost the settler half its
/// own time in bit stores. 4 reach the same rate with 10.5 bits per key instead
/// of 9.6.
const FILTER_HASHES: u32 = 4;

/// Filter bits per key for `fp_rate` at capacity with [`FILTER_HASHES`] hashes:
/// `(1 - e^(-k/b))^k = p` solved for `b`.
fn filter_bits_per_key(fp_rate: f64) -> f64 {
    let k = f64::from(FILTER_HASHES);
    -k / (1.0 - fp_rate.powf(1.0 / k)).ln()
}

/// Keys whose filter bits the settler sets under one write lock.
const FILTER_SET_CHUNK: usize = 256;

/// The answer of [`Deduper::claim`] for one key.
#[derive(Debug)]
pub enum Claim {
    /// This request now owns the key (here its owned copy, the only one the
    /// claim made): it is new unless the filter and disk say otherwise.
    Won(EventKey),
    /// Already claimed earlier in this same request.
    SameRequest,
    /// Known and durable: a duplicate decided in memory.
    Stored,
    /// Claimed by another request still in flight: a duplicate whose twin's
    /// outcome this request must share.
    InFlightTwin(Arc<Ticket>),
}

/// Sizes of the dedup state.
#[derive(Debug, Clone, Copy)]
pub struct DedupConfig {
    /// About how many stored keys the window keeps (keys in flight come on top).
    pub recent_capacity: usize,
    /// Keys the Bloom filter is sized for.
    pub filter_capacity: usize,
    /// Target false-positive rate at `filter_capacity`.
    pub filter_fp_rate: f64,
}

pub struct Deduper {
    /// Keys claimed by a request whose outcome is not known yet, with its ticket.
    in_flight: DashMap<EventKey, Arc<Ticket>, BuildKeyHasher>,
    /// Stored keys, the newest `recent_capacity` or so: durable and in the filter.
    window: Window,
    /// Hashes of every stored key. Readers: request handlers. Writers: the startup
    /// rebuild, then the settling of each batch (module doc, "Who changes what") only.
    filter: RwLock<Bloom<u64>>,
    filter_items: AtomicU64,
    /// Moved once per handover, between its window inserts and its removals from
    /// `in_flight` (module doc, "Handover").
    handovers: AtomicU64,
    /// How startup filled the filter, for `/stats`: from a snapshot or not, and
    /// how many keys it read from disk.
    from_snapshot: bool,
    keys_scanned_at_start: AtomicU64,
    config: DedupConfig,
}

impl Deduper {
    /// `stored_keys` is the number of keys already on disk; the filter is sized to
    /// at least twice that so a restart never starts it near saturation.
    pub fn new(config: DedupConfig, stored_keys: u64) -> Self {
        let capacity = config.filter_capacity.max(2 * stored_keys as usize).max(1024);
        let bytes = (capacity as f64 * filter_bits_per_key(config.filter_fp_rate) / 8.0).ceil() as usize;
        // `Bloom::new` takes k = round(bits / items × ln 2): these items give FILTER_HASHES.
        let items = (bytes as f64 * 8.0 * std::f64::consts::LN_2 / f64::from(FILTER_HASHES)) as usize;
        let filter =
            Bloom::new(bytes, items).expect("capacity >= 1024 and the fp rate is validated by Config");
        Deduper::with_filter(DedupConfig { filter_capacity: capacity, ..config }, filter, 0, false)
    }

    fn with_filter(config: DedupConfig, filter: Bloom<u64>, items: u64, from_snapshot: bool) -> Self {
        Deduper {
            in_flight: DashMap::with_hasher_and_shard_amount(BuildKeyHasher::default(), IN_FLIGHT_SHARDS),
            window: Window::new(config.recent_capacity),
            filter: RwLock::new(filter),
            filter_items: AtomicU64::new(items),
            handovers: AtomicU64::new(0),
            from_snapshot,
            keys_scanned_at_start: AtomicU64::new(0),
            config,
        }
    }

    /// Startup, from a saved filter (`filter_snapshot`) instead of the full scan.
    /// `None` if the saved filter is unreadable, or too small for the configured
    /// capacity or for the `stored_keys` already on disk at the configured
    /// false-positive rate (it has outgrown its size: the caller rescans, which
    /// sizes the new filter to twice the stored keys).
    pub fn from_snapshot(config: DedupConfig, stored_keys: u64, bytes: Vec<u8>, items: u64) -> Option<Self> {
        let filter = Bloom::<u64>::from_bytes(bytes).ok()?;
        let needed = config.filter_capacity.max(stored_keys as usize).max(1024);
        // The keys this filter holds at the configured rate.
        let capacity = (filter.len() as f64 / filter_bits_per_key(config.filter_fp_rate)) as usize;
        if filter.number_of_hash_functions() != FILTER_HASHES || capacity < needed {
            return None;
        }
        Some(Deduper::with_filter(
            DedupConfig { filter_capacity: capacity.max(needed), ..config },
            filter,
            items,
            true,
        ))
    }

    /// Shutdown only, after the settler is joined: the filter's bytes and item count.
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        let filter = self.filter.read().unwrap_or_else(|e| e.into_inner());
        (filter.to_bytes(), self.filter_items())
    }

    /// Startup rebuild, before the writer and settler start: `scan` calls its argument with
    /// the hash of every stored key.
    pub fn rebuild<E>(&self, scan: impl FnOnce(&mut dyn FnMut(u64)) -> Result<u64, E>) -> Result<u64, E> {
        let mut filter = self.filter.write().unwrap_or_else(|e| e.into_inner());
        let loaded = scan(&mut |hash| filter.set(&hash))?;
        self.filter_items.fetch_add(loaded, Ordering::Relaxed);
        self.keys_scanned_at_start.fetch_add(loaded, Ordering::Relaxed);
        Ok(loaded)
    }

    /// Handlers: atomically claim `key` for the request holding `ticket`.
    /// A key found in the window is stored, whatever else happens (the fast
    /// path of a replay, which copies nothing); a miss is copied into an owned
    /// key and, if its entry is vacant and a handover ran since the miss,
    /// checked again under the entry (module doc, "Handover").
    ///
    /// Why the epoch suffices: a vacant entry after the settler removed the key
    /// means that removal's shard lock came first, so the epoch move before it
    /// is seen by the second load. Had the first load already seen that move,
    /// the window inserts before it would have been seen by the first probe.
    pub fn claim<'k>(&self, key: impl Into<KeyRef<'k>>, ticket: &Arc<Ticket>) -> Claim {
        let mut claims = self.claim_all(&[key.into()], ticket);
        claims.pop().expect("one claim per key")
    }

    /// Handlers: [`Self::claim`] for each of a request's keys, in order. The
    /// window is probed for all of them first, a shard at a time (their cache
    /// misses overlap); the epoch is read before those probes, so the check
    /// under a vacant entry runs whenever it would have for a single claim.
    pub fn claim_all(&self, keys: &[KeyRef<'_>], ticket: &Arc<Ticket>) -> Vec<Claim> {
        let epoch = self.handovers.load(Ordering::SeqCst);
        let in_window = self.window.contains_each(keys);
        (keys.iter().zip(in_window))
            .map(|(&key, stored)| if stored { Claim::Stored } else { self.claim_missed(key, epoch, ticket) })
            .collect()
    }

    /// The claim of a key the window missed after the epoch was `epoch`.
    fn claim_missed(&self, key: KeyRef<'_>, epoch: u64, ticket: &Arc<Ticket>) -> Claim {
        let owned = EventKey::from(key);
        match self.in_flight.entry(owned.clone()) {
            Entry::Vacant(_)
                if self.handovers.load(Ordering::SeqCst) != epoch && self.window.contains(key) =>
            {
                Claim::Stored
            }
            Entry::Vacant(v) => {
                v.insert(ticket.clone());
                Claim::Won(owned)
            }
            Entry::Occupied(o) if Arc::ptr_eq(o.get(), ticket) => Claim::SameRequest,
            Entry::Occupied(o) => Claim::InFlightTwin(o.get().clone()),
        }
    }

    /// Handlers: which of `keys` the filter may have seen (true) or certainly has not (false).
    pub fn maybe_stored(&self, keys: &[&EventKey]) -> Vec<bool> {
        let filter = self.filter.read().unwrap_or_else(|e| e.into_inner());
        keys.iter().map(|k| filter.check(&k.hash())).collect()
    }

    /// `ClaimSet` drop only: undo a claim whose request stored nothing. Only removes
    /// the slot if it is still this ticket's, so a later claimant is never disturbed.
    fn release(&self, key: &EventKey, ticket: &Arc<Ticket>) {
        self.in_flight.remove_if(key, |_, owner| Arc::ptr_eq(owner, ticket));
    }

    /// Settling only (`Settler::settle`), after the writer's commit returned:
    /// filter bits for the newly stored keys, before any of them is marked
    /// `Stored`. The write lock is taken for [`FILTER_SET_CHUNK`] keys at a
    /// time, so handlers' checks wait
    /// for one chunk, never for a whole batch (a 20k-event batch holds it for
    /// ~8 ms in all). Checks between chunks are still exact: none of these keys
    /// is in the window yet, so a handler meets it in `in_flight` and never asks
    /// the filter about it.
    pub fn add_to_filter<'a>(&self, new_keys: impl Iterator<Item = &'a EventKey>) {
        let mut keys = new_keys.peekable();
        while keys.peek().is_some() {
            let mut filter = self.filter.write().unwrap_or_else(|e| e.into_inner());
            let mut n = 0;
            for k in keys.by_ref().take(FILTER_SET_CHUNK) {
                filter.set(&k.hash());
                n += 1;
            }
            drop(filter);
            self.filter_items.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Settling only (`Settler::settle`), after [`Self::add_to_filter`] for their
    /// keys: the handover of committed claims. Every key goes into the window
    /// (which evicts its oldest), then the epoch moves, then `in_flight` lets go
    /// of each set's keys and its ticket becomes `Stored` (the ack).
    pub fn hand_over(&self, sets: Vec<ClaimSet>) {
        for set in &sets {
            set.keys.iter().for_each(|key| self.window.insert(key.parts()));
        }
        self.handovers.fetch_add(1, Ordering::SeqCst);
        for mut set in sets {
            set.keys.iter().for_each(|key| self.release(key, &set.ticket));
            set.ticket.advance(Progress::Stored);
            set.settled = true;
        }
    }

    /// Keys in flight plus keys in the window.
    pub fn recent_len(&self) -> usize {
        self.in_flight.len() + self.window.len()
    }
    /// Heap bytes of the window (keys in flight not included).
    pub fn window_bytes(&self) -> usize {
        self.window.heap_bytes()
    }
    pub fn filter_items(&self) -> u64 {
        self.filter_items.load(Ordering::Relaxed)
    }
    pub fn filter_capacity(&self) -> usize {
        self.config.filter_capacity
    }
    pub fn loaded_from_snapshot(&self) -> bool {
        self.from_snapshot
    }
    pub fn keys_scanned_at_start(&self) -> u64 {
        self.keys_scanned_at_start.load(Ordering::Relaxed)
    }
    pub fn filter_bytes(&self) -> usize {
        self.filter.read().unwrap_or_else(|e| e.into_inner()).as_slice().len()
    }
}

/// The keys one request claimed. Dropping it without handing it over
/// ([`Deduper::hand_over`], or [`ClaimSet::mark_stored`] for one set) releases
/// every claim and fails the ticket, so a cancelled or refused request can never
/// leave a key stuck in flight. Built by the handler, carried in the queued
/// request, and settled by the settling of its batch (stored) or the writer (failed).
pub struct ClaimSet {
    dedup: Arc<Deduper>,
    ticket: Arc<Ticket>,
    keys: Vec<EventKey>,
    fail_reason: FailReason,
    settled: bool,
}

impl ClaimSet {
    pub fn new(dedup: Arc<Deduper>, ticket: Arc<Ticket>) -> Self {
        ClaimSet::with_capacity(dedup, ticket, 0)
    }
    /// Room for `keys` claims up front (a request claims at most one per event).
    pub fn with_capacity(dedup: Arc<Deduper>, ticket: Arc<Ticket>, keys: usize) -> Self {
        let keys = Vec::with_capacity(keys);
        ClaimSet { dedup, ticket, keys, fail_reason: FailReason::Abandoned, settled: false }
    }
    pub fn push(&mut self, key: EventKey) {
        self.keys.push(key);
    }
    pub fn ticket(&self) -> &Arc<Ticket> {
        &self.ticket
    }
    pub fn keys(&self) -> &[EventKey] {
        &self.keys
    }

    /// The handover of this set alone ([`Deduper::hand_over`]; tests and benches).
    pub fn mark_stored(self) {
        let dedup = self.dedup.clone();
        dedup.hand_over(vec![self]);
    }

    /// Writer or queue (a refused push): release every claim and fail the ticket
    /// with `reason`.
    pub fn fail(mut self, reason: FailReason) {
        self.fail_reason = reason;
        // Drop does the work.
    }
}

impl Drop for ClaimSet {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for key in &self.keys {
            self.dedup.release(key, &self.ticket);
        }
        self.ticket.advance(Progress::Failed(self.fail_reason));
    }
}

#[cfg(test)]
mod tests;
