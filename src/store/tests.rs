//! Unit tests of the store: append, read back, lookups through merges and reopens.

use std::path::Path;

use super::handle::DEFAULT_MERGE_THRESHOLD;
use super::*;
use crate::event::{EventKey, KeyHasher, Seq};

fn config(path: &Path, merge_threshold: usize) -> StoreConfig {
    StoreConfig { merge_threshold, ..StoreConfig::new(path, 1 << 20) }
}

fn record_bytes(key: &EventKey) -> Vec<u8> {
    codec::encode(&codec::Record {
        topic: key.topic(),
        event_id: key.event_id(),
        timestamp: "2026-11-21T00:00:00Z",
        source: "",
        payload: "{}",
        received_at_us: 0,
    })
}

/// A store opened at `path` (default merge threshold), its head, and `n` keys of topic `t`.
fn open_with_keys(path: &Path, n: usize) -> (Store, Head, Vec<EventKey>) {
    let (store, rec) = Store::open(config(path, DEFAULT_MERGE_THRESHOLD)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let keys = (0..n).map(|i| EventKey::new(h, "t", i.to_string())).collect();
    (store, rec.head, keys)
}

/// What a crash would leave, in `dir/name`: the database file `db` and the
/// journal of the store at `live`, copied as they are now. Returns the copy's path.
fn copy_as_crashed(dir: &Path, name: &str, db: &Path, live: &Path) -> std::path::PathBuf {
    let to = dir.join(name);
    std::fs::create_dir(&to).unwrap();
    let to_db = to.join("db.redb");
    std::fs::copy(db, &to_db).unwrap();
    std::fs::copy(config(live, 0).journal_path(), config(&to_db, 0).journal_path()).unwrap();
    to_db
}

/// Append `keys` as one batch; a small one only goes to the tail.
fn append_to_tail(store: &Store, head: &mut Head, keys: &[EventKey]) -> Result<(), WriteError> {
    let bytes: Vec<_> = keys.iter().map(record_bytes).collect();
    let rows = keys.iter().zip(&bytes).map(|(key, b)| Row::new(key, b));
    store.append(head, rows, 0)
}

/// Append `keys` as one batch in its own transaction (as the writer does when
/// tail is full), so that index merges advance by one slice.
fn append(store: &Store, head: &mut Head, keys: &[EventKey]) -> Result<(), WriteError> {
    append_to_tail(store, head, keys)?;
    store.apply_tail()
}

#[test]
fn append_read_contains_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/db.redb");
    let (store, rec) = Store::open(config(&path, DEFAULT_MERGE_THRESHOLD)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let keys: Vec<_> = (0..5).map(|i| EventKey::new(h, ["a", "b"][i % 2], i.to_string())).collect();
    let mut head = rec.head;
    append(&store, &mut head, &keys).unwrap();
    assert_eq!((head.next_seq, head.unique), (6, 5));

    let absent = EventKey::new(h, "a", "1"); // id 1 was stored under "b"
    assert_eq!(store.contains(&[keys[1].clone(), absent]).unwrap(), vec![true, false]);

    let page = store.read_page(Some("a"), Seq(0), 2).unwrap();
    let seqs: Vec<_> = page.events.iter().map(|e| e.seq.0).collect();
    assert_eq!((seqs, page.next_after), (vec![1, 3], Some(Seq(3))));
    let last = store.read_page(Some("a"), Seq(3), 2).unwrap();
    assert_eq!((last.events.len(), last.next_after), (1, None));
    assert_eq!(store.read_page(None, Seq(0), 10).unwrap().events.len(), 5);
    assert_eq!(store.topics().unwrap(), vec!["a", "b"]);
    drop(store);

    let (store, again) = Store::open(config(&path, DEFAULT_MERGE_THRESHOLD)).unwrap();
    assert_eq!((again.head, again.stored_keys, again.key_hash_seed), (head, 5, rec.key_hash_seed));
    let mut hashes = Vec::new();
    store.for_each_key_hash(&mut |hash| hashes.push(hash)).unwrap();
    hashes.sort_unstable();
    let mut expected: Vec<_> = keys.iter().map(EventKey::hash).collect();
    expected.sort_unstable();
    assert_eq!(hashes, expected);
}

#[test]
fn keys_stay_findable_through_log_merges_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let (store, rec) = Store::open(config(&path, 8)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let mut head = rec.head;
    let mut all = Vec::new();
    for batch in 0..40 {
        let keys: Vec<_> = (0..5).map(|i| EventKey::new(h, "t", format!("{batch}-{i}"))).collect();
        append(&store, &mut head, &keys).unwrap();
        all.extend(keys);
        assert!(store.contains(&all).unwrap().iter().all(|found| *found), "after batch {batch}");
        if batch == 19 {
            // Reopen mid-merge (log merges of 4 slices start after batches 1, 5, ...,
            // 17; the one after 17 has written 2): the log is reloaded and merged again.
            drop(store);
            let (again, rec) = Store::open(config(&path, 8)).unwrap();
            assert_eq!(rec.head, head);
            return keys_stay_findable_after_reopen(again, all, h, head);
        }
    }
    unreachable!("returns at batch 19");
}

fn keys_stay_findable_after_reopen(store: Store, mut all: Vec<EventKey>, h: KeyHasher, mut head: Head) {
    for batch in 100..140 {
        let keys: Vec<_> = (0..5).map(|i| EventKey::new(h, "t", format!("{batch}-{i}"))).collect();
        append(&store, &mut head, &keys).unwrap();
        all.extend(keys);
    }
    assert!(store.contains(&all).unwrap().iter().all(|found| *found));
    assert_eq!(store.contains(&[EventKey::new(h, "t", "absent")]).unwrap(), vec![false]);
    let mut hashes = std::collections::HashSet::new();
    store
        .for_each_key_hash(&mut |hash| {
            hashes.insert(hash);
        })
        .unwrap();
    assert!(all.iter().all(|k| hashes.contains(&k.hash())));
}

/// Pairs go log -> upper run -> lower run; a reopen in the middle of a tree
/// merge starts it over, no key is missed at any point, and the runs' stored
/// counts are their pairs.
#[test]
fn keys_stay_findable_through_tree_merges_and_a_reopen_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let (mut store, rec) = Store::open(config(&path, 4)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let mut head = rec.head;
    let mut all = Vec::new();
    let mut reopened = false;
    for batch in 0..300 {
        let keys: Vec<_> = (0..3).map(|i| EventKey::new(h, "t", format!("{batch}-{i}"))).collect();
        append(&store, &mut head, &keys).unwrap();
        all.extend(keys);
        assert!(store.contains(&all).unwrap().iter().all(|found| *found), "after batch {batch}");
        let mid_tree_merge = store.index.next_tree_slice().is_some_and(|s| s.from != 0);
        if mid_tree_merge && !reopened && store.index.upper_len() > 100 {
            drop(store);
            let (again, rec) = Store::open(config(&path, 4)).unwrap();
            assert_eq!(rec.head, head);
            assert!(
                rec.stored_keys >= all.len() as u64,
                "a pair mid-log-merge may count twice, never zero times"
            );
            assert!(again.index.next_tree_slice().is_none(), "the merge starts over when due");
            store = again;
            reopened = true;
        }
    }
    assert!(reopened, "a tree merge of over 100 pairs ran");
    let lower = store.index.lower_len();
    assert!(lower > 600, "most pairs reached the lower run: {lower}");
    assert_eq!(store.contains(&[EventKey::new(h, "t", "absent")]).unwrap(), vec![false]);
    store.checkpoint().unwrap();
    drop(store);
    let (again, rec) = Store::open(config(&path, 4)).unwrap();
    let mut scanned = 0;
    again.for_each_key_hash(&mut |_| scanned += 1).unwrap();
    assert_eq!(rec.stored_keys, scanned, "the stored counts are the pairs on disk, the key log's included");
    // A pair of a log slice committed before the reopen is in the log and in the
    // upper run until the merge's last slice, and it is merged again after the
    // reopen (maybe into a partition the tree merge moved on from in between):
    // a pair can count twice for a while, never zero times.
    assert!(scanned >= all.len() as u64);
}

#[test]
fn pages_and_lookups_cross_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = Store::open(config(&dir.path().join("db.redb"), DEFAULT_MERGE_THRESHOLD)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let keys: Vec<_> = (0..150).map(|i| EventKey::new(h, "t", i.to_string())).collect();
    let mut head = rec.head;
    append(&store, &mut head, &keys[..100]).unwrap();
    append(&store, &mut head, &keys[100..]).unwrap();
    let mut after = Seq(0);
    let mut seen = Vec::new();
    loop {
        let page = store.read_page(None, after, 37).unwrap();
        for event in &page.events {
            assert_eq!(event.event_id, (event.seq.0 - 1).to_string());
            seen.push(event.seq.0);
        }
        match page.next_after {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, (1..=150).collect::<Vec<_>>());
    let topic_page = store.read_page(Some("t"), Seq(63), 3).unwrap();
    assert_eq!(topic_page.events.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![64, 65, 66]);
    assert!(store.contains(&keys).unwrap().into_iter().all(|found| found));
}

#[test]
fn a_reopen_recovers_the_head_and_the_unmerged_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let (store, rec) = Store::open(config(&path, 1 << 20)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let keys: Vec<_> = (0..10).map(|i| EventKey::new(h, "t", i.to_string())).collect();
    let mut head = rec.head;
    append(&store, &mut head, &keys).unwrap();
    let reader = store.database().expect("open");
    let reopened = std::thread::scope(|s| {
        let reopen = s.spawn(|| store.reopen(|_| ()));
        // A reader holding the database delays the reopen; new readers see Closed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !matches!(store.topics(), Err(ReadError::Closed)) {
            assert!(std::time::Instant::now() < deadline, "the reopen took the database");
            std::thread::yield_now();
        }
        drop(reader);
        reopen.join().unwrap().unwrap()
    });
    assert_eq!((reopened.head, reopened.stored_keys), (head, 10));
    assert!(store.contains(&keys).unwrap().into_iter().all(|found| found), "the log mirror is back");
    append(&store, &mut head, &[EventKey::new(h, "t", "after")]).unwrap();
    assert_eq!(head.next_seq, 12);
}

/// kill -9 keeps the files as they are: copying them while the store is open is
/// the crash. Batches committed without fsync come back from the journal.
#[test]
fn journaled_batches_come_back_after_a_crash_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let (store, rec) = Store::open(config(&path, DEFAULT_MERGE_THRESHOLD)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let keys: Vec<_> = (0..50).map(|i| EventKey::new(h, ["a", "b", "c"][i % 3], i.to_string())).collect();
    let mut head = rec.head;
    for (i, batch) in keys.chunks(10).enumerate() {
        // Three in redb (without fsync), the last two only in the tail.
        if i < 3 { append(&store, &mut head, batch) } else { append_to_tail(&store, &mut head, batch) }
            .unwrap();
    }
    assert_eq!(store.tail_events(), 20);
    assert_eq!(head.journal_frame, 5);
    assert!(store.journal_bytes() > 0, "small batches went to the journal");

    let crashed_db = copy_as_crashed(dir.path(), "crashed", &path, &path);
    drop(store);

    let (store, again) = Store::open(config(&crashed_db, DEFAULT_MERGE_THRESHOLD)).unwrap();
    assert_eq!((again.head, again.stored_keys), (head, 50));
    assert_eq!((store.journal_frames_replayed(), store.journal_bytes()), (5, 0));
    assert!(store.contains(&keys).unwrap().iter().all(|&found| found));
    let seqs: Vec<_> = store.read_page(None, Seq(0), 100).unwrap().events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "replayed with the seqs they were given");
    drop(store);

    // The replay ended in a durable commit: nothing is replayed twice.
    let (store, third) = Store::open(config(&crashed_db, DEFAULT_MERGE_THRESHOLD)).unwrap();
    assert_eq!((third.head, store.journal_frames_replayed()), (head, 0));
}

/// Small batches go to the tail after their journal frame (`tail`):
/// every read sees them at once, beside what redb has, each event once; a
/// large batch applies them first, so seqs and topic ids keep their order.
#[test]
fn the_tail_is_read_beside_redb_and_applied_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = Store::open(config(&dir.path().join("db.redb"), DEFAULT_MERGE_THRESHOLD)).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let keys: Vec<_> =
        (0..30).map(|i| EventKey::new(h, ["a", "b"][usize::from(i >= 5)], i.to_string())).collect();
    let mut head = rec.head;
    append_to_tail(&store, &mut head, &keys[..3]).unwrap();
    store.apply_tail().unwrap();
    append_to_tail(&store, &mut head, &keys[3..6]).unwrap(); // topic "b" is new, and only in the tail
    assert_eq!((store.tail_events(), head.next_seq), (3, 7));
    let seqs = |store: &Store, topic, after, limit| -> (Vec<u64>, Option<Seq>) {
        let page = store.read_page(topic, Seq(after), limit).unwrap();
        (page.events.iter().map(|e| e.seq.0).collect(), page.next_after)
    };
    assert_eq!(seqs(&store, None, 0, 10), (vec![1, 2, 3, 4, 5, 6], None));
    assert_eq!(seqs(&store, Some("a"), 2, 2), (vec![3, 4], Some(Seq(4))), "a page across redb and the tail");
    assert_eq!(seqs(&store, Some("b"), 0, 10), (vec![6], None));
    assert_eq!(store.topics().unwrap(), vec!["a", "b"]);
    assert!(store.contains(&keys[..6]).unwrap().iter().all(|&found| found));
    assert_eq!(store.contains(&[EventKey::new(h, "a", "5")]).unwrap(), vec![false], "5 is under b");

    let big = StoreConfig {
        journal_max_frame_bytes: 256,
        ..config(&dir.path().join("db.redb"), DEFAULT_MERGE_THRESHOLD)
    };
    drop(store);
    let (store, rec) = Store::open(big).unwrap();
    assert_eq!((rec.head, store.tail_events()), (head, 0), "replayed at open");
    append_to_tail(&store, &mut head, &keys[6..8]).unwrap(); // to the tail
    append_to_tail(&store, &mut head, &keys[8..]).unwrap(); // past the frame limit: applies the tail first
    assert_eq!((store.tail_events(), head.next_seq, store.journal_bytes()), (0, 31, 0));
    assert_eq!(seqs(&store, Some("b"), 0, 100).0, (6..=30).collect::<Vec<_>>());
    assert_eq!(store.topics().unwrap(), vec!["a", "b"]);
}

/// A journal whose first frame is not the one after the database's last (a
/// `.redb` restored from an older copy beside a newer journal) is refused at
/// open, naming both frames: replaying it would skip the batches in between.
#[test]
fn a_journal_that_skips_frames_past_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let (store, mut head, keys) = open_with_keys(&path, 30);
    append(&store, &mut head, &keys[..10]).unwrap();
    store.checkpoint().unwrap();
    let old_copy = dir.path().join("old.redb");
    std::fs::copy(&path, &old_copy).unwrap();
    append(&store, &mut head, &keys[10..20]).unwrap();
    store.checkpoint().unwrap();
    append(&store, &mut head, &keys[20..]).unwrap();
    assert_eq!(head.journal_frame, 3, "frame 3 is the journal's first after the last checkpoint");

    let restored_db = copy_as_crashed(dir.path(), "restored", &old_copy, &path);
    drop(store);
    match Store::open(config(&restored_db, DEFAULT_MERGE_THRESHOLD)) {
        Err(OpenError::JournalGap { frame: 3, expected: 2 }) => {}
        Err(other) => panic!("expected JournalGap {{ frame: 3, expected: 2 }}, got {other}"),
        Ok(_) => panic!("a journal that skips frame 2 was replayed"),
    }
}

/// A batch past the journal's frame limit is committed with fsync, which also
/// covers what the journal held: it starts over.
#[test]
fn a_large_batch_commits_durably_and_the_journal_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let small_frames =
        StoreConfig { journal_max_frame_bytes: 1024, ..config(&path, DEFAULT_MERGE_THRESHOLD) };
    let (store, rec) = Store::open(small_frames).unwrap();
    let h = KeyHasher::new(rec.key_hash_seed);
    let keys: Vec<_> = (0..40).map(|i| EventKey::new(h, "t", i.to_string())).collect();
    let mut head = rec.head;
    append(&store, &mut head, &keys[..2]).unwrap();
    assert!(store.journal_bytes() > 0);
    append(&store, &mut head, &keys[2..]).unwrap();
    assert_eq!((store.journal_bytes(), head.journal_frame, head.next_seq), (0, 1, 41));
}

/// A version-4 file (two key trees) and a version-3 file (one) open, are
/// upgraded in place to runs, and keep every key; an unknown version is refused.
#[test]
fn older_files_are_upgraded_to_runs_and_an_unknown_version_refused() {
    use redb::ReadableDatabase;
    for version in schema::UPGRADABLE_SCHEMA_VERSIONS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let (store, mut head, keys) = open_with_keys(&path, 30);
        append(&store, &mut head, &keys[..20]).unwrap();
        append(&store, &mut head, &keys[20..]).unwrap();
        store.checkpoint().unwrap();
        drop(store);
        as_legacy_file(&path, version);

        let (store, again) = Store::open(config(&path, DEFAULT_MERGE_THRESHOLD)).unwrap();
        assert_eq!(again.head, head);
        assert_eq!(again.stored_keys, 30, "version {version}");
        assert!(store.contains(&keys).unwrap().iter().all(|&found| found), "version {version}");
        assert_eq!(
            store.contains(&[EventKey::new(KeyHasher::new(again.key_hash_seed), "t", "x")]).unwrap(),
            [false]
        );
        let txn = store.database().unwrap().begin_read().unwrap();
        let stored = txn.open_table(schema::META).unwrap().get(schema::meta::SCHEMA_VERSION).unwrap();
        assert_eq!(stored.map(|v| v.value()), Some(schema::SCHEMA_VERSION));
        assert!(txn.open_table(schema::legacy::KEY_INDEX).is_err(), "the old trees are gone");
        drop(txn);
        drop(store);
        if version == 4 {
            set_version(&path, schema::SCHEMA_VERSION + 1);
            let refused =
                Store::open(config(&path, DEFAULT_MERGE_THRESHOLD)).err().expect("a newer file is refused");
            assert!(matches!(refused, OpenError::Schema { found: 6, expected: 5 }), "{refused}");
        }
    }
}

/// Rewrite the file at `path` as `version` would have kept the same keys: the
/// first batch's key-log row in the lower tree and (version 4) the second's in
/// the upper tree; no runs.
fn as_legacy_file(path: &Path, version: u64) {
    use redb::ReadableTable;
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut log = txn.open_table(schema::KEY_LOG).unwrap();
        let rows: Vec<Vec<(u64, u64)>> = log
            .iter()
            .unwrap()
            .map(|row| runs::Block::new(row.unwrap().1.value()).pairs().collect())
            .collect();
        assert_eq!(rows.len(), 2);
        log.retain(|_, _| false).unwrap();
        let mut lower = txn.open_table(schema::legacy::KEY_INDEX).unwrap();
        let mut upper = txn.open_table(schema::legacy::KEY_INDEX_UPPER).unwrap();
        for (i, row) in rows.iter().enumerate() {
            for pair in row {
                if i == 0 || version == 3 {
                    lower.insert(pair, ()).unwrap()
                } else {
                    upper.insert(pair, ()).unwrap()
                };
            }
        }
        let mut meta = txn.open_table(schema::META).unwrap();
        meta.remove(schema::meta::UPPER_PAIRS).unwrap();
        meta.remove(schema::meta::LOWER_PAIRS).unwrap();
    }
    if version == 3 {
        txn.delete_table(schema::legacy::KEY_INDEX_UPPER).unwrap();
    }
    txn.delete_table(schema::KEY_RUN_UPPER).unwrap();
    txn.delete_table(schema::KEY_RUN_LOWER).unwrap();
    txn.commit().unwrap();
    drop(db);
    set_version(path, version);
}

fn set_version(path: &Path, version: u64) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(schema::META).unwrap().insert(schema::meta::SCHEMA_VERSION, version).unwrap();
    txn.commit().unwrap();
}

/// redb gives each value a power-of-two page: event chunks are filled by
/// bytes and a batch's key-log pairs are cut into rows of a block's size, so
/// the pages of both tables are nearly full (fixed 64-record chunks of records
/// this size left ~43 % of their 16 KiB pages empty, and a 5,000-pair key-log
/// row took a 128 KiB page for 80 KB), and every record reads back.
#[test]
fn event_chunks_and_key_log_rows_fill_their_pages() {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
    let dir = tempfile::tempdir().unwrap();
    let (store, mut head, keys) = open_with_keys(&dir.path().join("db.redb"), 20_000);
    let payload = format!("{{\"note\":\"{}\"}}", "x".repeat(90));
    let bytes: Vec<_> = keys
        .iter()
        .map(|key| {
            codec::encode(&codec::Record {
                topic: key.topic(),
                event_id: key.event_id(),
                timestamp: "2026-11-21T00:00:00Z",
                source: "publisher",
                payload: &payload,
                received_at_us: 0,
            })
        })
        .collect();
    for (keys, bytes) in keys.chunks(5000).zip(bytes.chunks(5000)) {
        let rows = keys.iter().zip(bytes).map(|(key, b)| Row::new(key, b));
        store.append(&mut head, rows, 0).unwrap();
    }
    store.checkpoint().unwrap();
    let db = store.database().unwrap();
    let txn = db.begin_read().unwrap();
    let fill = |table: TableDefinition<u64, &[u8]>| {
        let stats = txn.open_table(table).unwrap().stats().unwrap();
        let used = stats.stored_bytes() + stats.metadata_bytes();
        (used as f64 / (used + stats.fragmented_bytes()) as f64, stats)
    };
    for (name, table) in [("events", schema::EVENTS), ("key_log", schema::KEY_LOG)] {
        let (fill, stats) = fill(table);
        assert!(fill > 0.9, "{name} pages {:.0} % full: {stats:?}", fill * 100.0);
    }
    let page = store.read_page(None, Seq(0), 10_000).unwrap();
    assert_eq!(page.events.len(), 10_000);
    let last = store.read_page(None, Seq(19_990), 100).unwrap();
    assert_eq!(
        last.events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        (19_991..=20_000).collect::<Vec<_>>()
    );
}
