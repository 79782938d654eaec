//! Unit tests of the dedup state: claims, releases, the filter, the handover.

use super::*;
use crate::event::KeyHasher;

fn dedup(recent_capacity: usize) -> Arc<Deduper> {
    let config = DedupConfig { recent_capacity, filter_capacity: 10_000, filter_fp_rate: 0.01 };
    Arc::new(Deduper::new(config, 0))
}
fn key(id: &str) -> EventKey {
    EventKey::new(KeyHasher::new(1), "t", id)
}

#[test]
fn first_claim_wins_and_later_ones_see_the_twin() {
    let d = dedup(10);
    let (a, b) = (Ticket::new(), Ticket::new());
    assert!(matches!(d.claim(&key("1"), &a), Claim::Won(_)));
    assert!(matches!(d.claim(&key("1"), &a), Claim::SameRequest));
    match d.claim(&key("1"), &b) {
        Claim::InFlightTwin(t) => assert!(Arc::ptr_eq(&t, &a)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dropped_claims_are_released_and_the_ticket_fails() {
    let d = dedup(10);
    let a = Ticket::new();
    let mut set = ClaimSet::new(d.clone(), a.clone());
    assert!(matches!(d.claim(&key("1"), &a), Claim::Won(_)));
    set.push(key("1"));
    drop(set);
    assert_eq!(a.progress(), Progress::Failed(FailReason::Abandoned));
    assert!(matches!(d.claim(&key("1"), &Ticket::new()), Claim::Won(_)));
}

#[test]
fn release_never_removes_another_requests_claim() {
    let d = dedup(10);
    let (a, b) = (Ticket::new(), Ticket::new());
    d.claim(&key("1"), &b);
    d.release(&key("1"), &a);
    assert!(matches!(d.claim(&key("1"), &a), Claim::InFlightTwin(_)));
}

/// Coverage across the settler's lock chunks: every key of a batch larger
/// than `FILTER_SET_CHUNK` is in the filter, and counted once.
#[test]
fn a_batch_past_one_filter_chunk_is_wholly_in_the_filter() {
    let d = dedup(10);
    let keys: Vec<EventKey> = (0..3 * FILTER_SET_CHUNK + 7).map(|i| key(&i.to_string())).collect();
    d.add_to_filter(keys.iter());
    let refs: Vec<&EventKey> = keys.iter().collect();
    assert!(d.maybe_stored(&refs).into_iter().all(|maybe| maybe), "no key of any chunk missed");
    assert_eq!(d.filter_items(), keys.len() as u64);
}

#[test]
fn stored_keys_are_in_the_filter_and_decided_in_memory() {
    let d = dedup(10);
    let a = Ticket::new();
    let mut set = ClaimSet::new(d.clone(), a.clone());
    d.claim(&key("1"), &a);
    set.push(key("1"));
    d.add_to_filter(set.keys().iter());
    set.mark_stored();
    assert_eq!(a.progress(), Progress::Stored);
    assert!(matches!(d.claim(&key("1"), &Ticket::new()), Claim::Stored));
    assert_eq!(d.maybe_stored(&[&key("1"), &key("2")]), vec![true, false]);
}

#[test]
fn rebuild_sets_the_filter_from_stored_hashes_and_sizes_it() {
    let config = DedupConfig { recent_capacity: 10, filter_capacity: 1000, filter_fp_rate: 0.01 };
    let d = Deduper::new(config, 5000);
    assert_eq!(d.filter_capacity(), 10_000, "at least twice the stored keys");
    let stored: Vec<EventKey> = (0..5000).map(|i| key(&i.to_string())).collect();
    let loaded = d
        .rebuild(|add| {
            stored.iter().for_each(|k| add(k.hash()));
            Ok::<u64, ()>(stored.len() as u64)
        })
        .unwrap();
    assert_eq!((loaded, d.filter_items()), (5000, 5000));
    let refs: Vec<&EventKey> = stored.iter().collect();
    assert!(d.maybe_stored(&refs).into_iter().all(|maybe| maybe), "no false negatives");
    let fresh: Vec<EventKey> = (0..1000).map(|i| key(&format!("new-{i}"))).collect();
    let refs: Vec<&EventKey> = fresh.iter().collect();
    let false_positives = d.maybe_stored(&refs).into_iter().filter(|m| *m).count();
    assert!(false_positives < 50, "about 1 % expected, got {false_positives}");
}

/// Four bits a key, and still the configured rate once full.
#[test]
fn a_full_filter_keeps_its_rate_with_four_hashes() {
    let config = DedupConfig { recent_capacity: 10, filter_capacity: 20_000, filter_fp_rate: 0.01 };
    let d = Deduper::new(config, 0);
    assert_eq!(d.filter.read().unwrap().number_of_hash_functions(), FILTER_HASHES);
    let stored: Vec<EventKey> = (0..20_000).map(|i| key(&i.to_string())).collect();
    d.add_to_filter(stored.iter());
    let fresh: Vec<EventKey> = (0..20_000).map(|i| key(&format!("new-{i}"))).collect();
    let false_positives = d.maybe_stored(&fresh.iter().collect::<Vec<_>>()).iter().filter(|&&m| m).count();
    assert!((100..=300).contains(&false_positives), "about 1 % of 20,000 expected, got {false_positives}");
}

#[test]
fn a_saved_filter_loads_until_the_stored_keys_outgrow_it() {
    let config = DedupConfig { recent_capacity: 10, filter_capacity: 2000, filter_fp_rate: 0.01 };
    let d = Deduper::new(config, 0);
    d.add_to_filter([key("1"), key("2")].iter());
    let (bytes, items) = d.snapshot();
    let loaded = Deduper::from_snapshot(config, 2000, bytes.clone(), items).expect("sized for 2000 keys");
    assert!(loaded.loaded_from_snapshot());
    assert_eq!((loaded.filter_items(), loaded.filter_capacity() >= 2000), (2, true));
    assert_eq!(loaded.maybe_stored(&[&key("1"), &key("2")]), vec![true, true]);
    assert!(Deduper::from_snapshot(config, 2001, bytes.clone(), items).is_none(), "outgrown: rescan");
    let seven = Bloom::<u64>::new_for_fp_rate(100_000, 0.01).unwrap();
    assert_eq!(seven.number_of_hash_functions(), 7);
    assert!(Deduper::from_snapshot(config, 0, seven.to_bytes(), 0).is_none(), "another number of hashes");
    let bigger = DedupConfig { filter_capacity: 4000, ..config };
    assert!(Deduper::from_snapshot(bigger, 0, bytes, items).is_none(), "BLOOM_CAPACITY was raised");
}

#[test]
fn eviction_takes_only_stored_keys_oldest_first() {
    let d = dedup(2);
    let in_flight = Ticket::new();
    d.claim(&key("p"), &in_flight);
    for id in ["1", "2", "3"] {
        let t = Ticket::new();
        let mut set = ClaimSet::new(d.clone(), t.clone());
        d.claim(&key(id), &t);
        set.push(key(id));
        d.add_to_filter(set.keys().iter());
        set.mark_stored();
    }
    assert_eq!(d.recent_len(), 3, "p (in flight) and the 2 newest stored stay");
    assert!(matches!(d.claim(&key("p"), &Ticket::new()), Claim::InFlightTwin(_)));
    assert!(matches!(d.claim(&key("2"), &Ticket::new()), Claim::Stored));
    assert!(matches!(d.claim(&key("3"), &Ticket::new()), Claim::Stored));
    // Evicted keys are still known to the filter, so they go to the disk check.
    assert!(matches!(d.claim(&key("1"), &Ticket::new()), Claim::Won(_)));
    assert_eq!(d.maybe_stored(&[&key("1")]), vec![true]);
}

/// Handover: a key moves from in flight to the window in the settler, and
/// a claim racing it never finds it in neither (it would be stored twice).
#[test]
fn a_claim_racing_the_handover_never_wins_a_stored_key() {
    let d = dedup(1 << 20);
    let keys: Vec<EventKey> = (0..20_000).map(|i| key(&i.to_string())).collect();
    let sets: Vec<ClaimSet> = keys
        .iter()
        .map(|k| {
            let t = Ticket::new();
            assert!(matches!(d.claim(k, &t), Claim::Won(_)));
            let mut set = ClaimSet::new(d.clone(), t);
            set.push(k.clone());
            set
        })
        .collect();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for set in sets {
                d.add_to_filter(set.keys().iter());
                set.mark_stored();
            }
        });
        // Single claims and a request's worth at once (the handlers' path).
        for (n, chunk) in keys.chunks(50).cycle().take(4000).enumerate() {
            let claims: Vec<Claim> = if n % 2 == 0 {
                chunk.iter().map(|k| d.claim(k, &Ticket::new())).collect()
            } else {
                d.claim_all(&chunk.iter().map(EventKey::parts).collect::<Vec<_>>(), &Ticket::new())
            };
            for (k, claim) in chunk.iter().zip(claims) {
                assert!(!matches!(claim, Claim::Won(_)), "{k:?} claimed while being stored");
            }
        }
    });
    assert!(keys.iter().all(|k| matches!(d.claim(k, &Ticket::new()), Claim::Stored)));
}
