//! Unit tests of the writer: batch sizes, held twins, failed commits.

use super::*;
use crate::ack::Ticket;
use crate::dedup::{Claim, ClaimSet, DedupConfig};
use crate::event::{EventKey, KeyHasher};
use crate::queue::{NewRecord, WhenFull};
use crate::store::StoreConfig;
use crate::store::codec;

struct Rig {
    _dir: tempfile::TempDir,
    dedup: Arc<Deduper>,
    queue: Arc<IngestQueue>,
    writer: Writer,
    hasher: KeyHasher,
    runtime: tokio::runtime::Runtime,
}

fn rig(max_batch_events: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = Store::open(StoreConfig::new(dir.path().join("db.redb"), 1 << 20)).unwrap();
    let config = DedupConfig { recent_capacity: 100, filter_capacity: 1000, filter_fp_rate: 0.01 };
    let dedup = Arc::new(Deduper::new(config, 0));
    let queue = Arc::new(IngestQueue::new(16, 1000));
    let parts = WriterParts {
        store: Arc::new(store),
        dedup: dedup.clone(),
        queue: queue.clone(),
        stats: Arc::new(Stats::new(&rec.head)),
        metrics: Arc::new(Metrics::new()),
        config: WriterConfig { flush_interval: Duration::from_millis(5), max_batch_events },
        head: rec.head,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hasher = KeyHasher::new(rec.key_hash_seed);
    // The settler thread ends when the rig's writer (its sender) is dropped.
    let (writer, _settler) = Writer::with_settler_thread(parts).unwrap();
    Rig { _dir: dir, dedup, queue, writer, hasher, runtime }
}

/// A request's item: `new` keys claimed and stored, plus duplicates of `twins`.
fn item(rig: &Rig, ticket: &Arc<Ticket>, new: &[EventKey], twins: Vec<Arc<Ticket>>) -> QueuedRequest {
    let mut claims = ClaimSet::new(rig.dedup.clone(), ticket.clone());
    let records = new
        .iter()
        .map(|key| {
            assert!(matches!(rig.dedup.claim(key, ticket), Claim::Won(_)));
            claims.push(key.clone());
            let record = codec::Record {
                topic: key.topic(),
                event_id: key.event_id(),
                timestamp: "t",
                source: "",
                payload: "{}",
                received_at_us: 0,
            };
            NewRecord { key: key.clone(), bytes: codec::encode(&record) }
        })
        .collect();
    let duplicates = twins.len() as u64;
    QueuedRequest { records, duplicates, twins, claims, ack: AckMode::Durable }
}

/// Large batches are settled on the settler thread: poll until every ticket is final.
fn wait_settled(tickets: &[&Arc<Ticket>]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !tickets.iter().all(|t| t.progress().is_final()) {
        assert!(std::time::Instant::now() < deadline, "settled in time");
        thread::sleep(Duration::from_millis(1));
    }
}

fn push(rig: &Rig, item: QueuedRequest) {
    rig.runtime.block_on(rig.queue.push(item, WhenFull::Reject)).unwrap();
}

#[test]
fn an_abandoned_twin_fails_the_item_held_for_it() {
    let mut rig = rig(5);
    let twin = Ticket::new();
    let twin_key = EventKey::new(rig.hasher, "t", "k");
    let held = Ticket::new();
    let many: Vec<EventKey> = (0..6).map(|i| EventKey::new(rig.hasher, "t", i.to_string())).collect();
    // The twin claims its key first but is queued only later.
    let mut twin_claims = ClaimSet::new(rig.dedup.clone(), twin.clone());
    assert!(matches!(rig.dedup.claim(&twin_key, &twin), Claim::Won(_)));
    twin_claims.push(twin_key.clone());
    let held_item = item(&rig, &held, &many, vec![twin.clone()]);
    push(&rig, held_item);
    assert_eq!(rig.writer.flush_once(), Round::Waiting, "held: its twin is not queued");

    drop(twin_claims); // the twin's handler hands over to its queued item instead
    let twin_again = Ticket::new();
    let twin_item = item(&rig, &twin_again, std::slice::from_ref(&twin_key), Vec::new());
    push(&rig, twin_item);
    // The first twin was abandoned (its claims released): the held item fails.
    assert_eq!(rig.writer.flush_once(), Round::Settled);
    wait_settled(&[&held, &twin_again]);
    assert_eq!(held.progress(), Progress::Failed(FailReason::TwinFailed));
    assert_eq!(twin_again.progress(), Progress::Stored);
}

/// `WRITER_BATCH_MAX_EVENTS` is a cap, not a threshold: a request that would
/// pass it waits for the next transaction; one larger than the cap goes alone.
#[test]
fn a_batch_never_passes_the_event_cap_unless_one_request_does() {
    let mut rig = rig(5);
    let keys: Vec<EventKey> = (0..13).map(|i| EventKey::new(rig.hasher, "t", i.to_string())).collect();
    let tickets: Vec<Arc<Ticket>> = (0..3).map(|_| Ticket::new()).collect();
    for (ticket, range) in tickets.iter().zip([0..3, 3..6, 6..13]) {
        push(&rig, item(&rig, ticket, &keys[range], Vec::new()));
    }
    let mut batches = Vec::new();
    while rig.writer.flush_once() == Round::Settled {
        batches.push(rig.writer.head.next_seq - 1);
    }
    // Stored seqs after each round: 3 events, then 3 more, then the 7 alone.
    assert_eq!(batches, vec![3, 6, 13]);
    wait_settled(&tickets.iter().collect::<Vec<_>>());
}

/// Regression (review of the twin hold): items held for a twin once counted
/// toward the batch size, so with enough of them the writer stopped reading the
/// queue, where the twin was waiting: stuck for good.
#[test]
fn held_items_never_stop_the_writer_from_taking_their_twin() {
    let mut rig = rig(5);
    let twin = Ticket::new();
    let twin_key = EventKey::new(rig.hasher, "t", "k");
    let held = Ticket::new();
    let many: Vec<EventKey> = (0..6).map(|i| EventKey::new(rig.hasher, "t", i.to_string())).collect();
    // Claimed like the twin's handler does, then queued after the held item.
    let twin_item = item(&rig, &twin, std::slice::from_ref(&twin_key), Vec::new());
    let held_item = item(&rig, &held, &many, vec![twin.clone()]);
    push(&rig, held_item);
    assert_eq!(rig.writer.flush_once(), Round::Waiting);
    push(&rig, twin_item);
    assert_eq!(rig.writer.flush_once(), Round::Settled, "the twin is taken despite 6 held events");
    wait_settled(&[&held, &twin]);
    assert_eq!((held.progress(), twin.progress()), (Progress::Stored, Progress::Stored));
}
