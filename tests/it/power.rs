//! Power loss, simulated many times: the database runs on [`PowerCutDisk`], redb's
//! file backend behind a volatile write cache (after redb's own `CrashBackend`).
//! Writes since the last `sync_data` stay apart; a power cut keeps a random subset
//! of them (a disk may have written any) and drops the rest. Each iteration runs
//! concurrent publishers with repeats and cuts power at a random write (inside a
//! commit; key-log merges run every few batches, so inside merges too) or, if the
//! run ends first, at a random moment; then it reopens the
//! directory on the plain file backend and checks the promises:
//! - every event acknowledged with a durable 200 is readable;
//! - no event is stored twice;
//! - the counters equal what is stored;
//! - the dedup filter covers every stored key (re-sending them stores nothing).
//!
//! `POWER_CUT_ITERATIONS` sets how many (default 200).

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, counts, data_dir, test_config};

/// One file's volatile write cache: writes not yet synced, in order.
struct Cache {
    path: PathBuf,
    unsynced: Mutex<Vec<(u64, Vec<u8>)>>,
    /// The plain file under the cache, as a disk sees it.
    file: std::fs::File,
}

/// The power of one directory: every backend opened on it (the database and
/// the journal, and their reopens) shares it and one cache per file.
struct Power {
    caches: Mutex<Vec<Arc<Cache>>>,
    off: AtomicBool,
    /// Power goes off at this write (counting down), in the middle of a commit.
    writes_left: AtomicU64,
    /// The cut's dice.
    rng: Mutex<fastrand::Rng>,
    /// Writes that were unsynced at the cut.
    torn: AtomicU64,
    /// The cut came at a write (its countdown), not by the clock.
    at_write: AtomicBool,
}

impl Power {
    fn new(seed: u64) -> Power {
        Power {
            caches: Mutex::default(),
            off: AtomicBool::new(false),
            writes_left: AtomicU64::new(u64::MAX),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            torn: AtomicU64::new(0),
            at_write: AtomicBool::new(false),
        }
    }

    /// The file at `path` behind its cache, shared by every open of it.
    fn disk(self: &Arc<Self>, path: &Path) -> io::Result<PowerCutDisk> {
        self.check()?;
        let mut caches = self.caches.lock().unwrap();
        let cache = match caches.iter().find(|c| c.path == path) {
            Some(cache) => cache.clone(),
            None => {
                let cache = Arc::new(Cache {
                    path: path.to_owned(),
                    unsynced: Mutex::default(),
                    file: open_file(path)?,
                });
                caches.push(cache.clone());
                cache
            }
        };
        let inner = FileBackend::new(open_file(path)?).map_err(io::Error::other)?;
        Ok(PowerCutDisk { inner, cache, power: self.clone() })
    }

    /// Lose power (once): a random subset of each file's unsynced writes reaches it.
    fn cut(&self) {
        use std::os::unix::fs::FileExt;
        let caches = self.caches.lock().unwrap().clone();
        // Power goes off under every cache's lock, so no sync can report a write
        // durable that the cut then drops.
        let mut locked: Vec<_> = caches.iter().map(|c| c.unsynced.lock().unwrap()).collect();
        if self.off.swap(true, SeqCst) {
            return;
        }
        let unsynced: Vec<Vec<(u64, Vec<u8>)>> =
            locked.iter_mut().map(|c| std::mem::take(&mut **c)).collect();
        drop(locked);
        self.torn.store(unsynced.iter().map(Vec::len).sum::<usize>() as u64, SeqCst);
        let mut rng = self.rng.lock().unwrap();
        for (cache, writes) in caches.iter().zip(unsynced) {
            for (offset, bytes) in writes {
                if rng.bool() {
                    cache.file.write_all_at(&bytes, offset).expect("the file accepts the surviving write");
                }
            }
        }
    }
    fn check(&self) -> io::Result<()> {
        if self.off.load(SeqCst) { Err(io::Error::other("power is off")) } else { Ok(()) }
    }
}

#[derive(Debug)]
struct PowerCutDisk {
    inner: FileBackend,
    cache: Arc<Cache>,
    power: Arc<Power>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("path", &self.path).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Power {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Power").field("off", &self.off).finish_non_exhaustive()
    }
}

impl StorageBackend for PowerCutDisk {
    fn len(&self) -> io::Result<u64> {
        self.power.check()?;
        self.inner.len()
    }
    /// The file as it is, with the unsynced writes over it (a page cache).
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.power.check()?;
        self.inner.read(offset, out)?;
        let end = offset + out.len() as u64;
        for (at, bytes) in self.cache.unsynced.lock().unwrap().iter() {
            let (from, to) = (offset.max(*at), end.min(at + bytes.len() as u64));
            if from < to {
                let (src, dst) = ((from - at) as usize, (from - offset) as usize);
                let n = (to - from) as usize;
                out[dst..dst + n].copy_from_slice(&bytes[src..src + n]);
            }
        }
        Ok(())
    }
    /// Resizing is taken as durable at once (a lost resize only shortens the file).
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.power.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut unsynced = self.cache.unsynced.lock().unwrap();
        self.power.check()?;
        for (offset, bytes) in unsynced.drain(..) {
            self.inner.write(offset, &bytes)?;
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.power.check()?;
        if self.power.writes_left.fetch_sub(1, SeqCst) == 1 {
            self.power.at_write.store(true, SeqCst);
            self.power.cut();
            return Err(io::Error::other("power cut"));
        }
        let mut unsynced = self.cache.unsynced.lock().unwrap();
        self.power.check()?;
        unsynced.push((offset, data.to_vec()));
        Ok(())
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
    crate::disk::forward_locks!();
}

fn open_file(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

type Key = (String, String);

/// One publisher: batches of 1 to 20 events, a third of them repeats of keys any
/// publisher used before. Returns the keys of every durable 200.
async fn publish_until_refused(app_base: String, seed: u64, pool: Arc<Mutex<Vec<Key>>>) -> HashSet<Key> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked = HashSet::new();
    for n in 0.. {
        let batch: Vec<Key> = (0..rng.usize(1..=20))
            .map(|i| {
                let mut pool = pool.lock().unwrap();
                if !pool.is_empty() && rng.u8(..3) == 0 {
                    pool[rng.usize(..pool.len())].clone()
                } else {
                    let key = (format!("p.{}", rng.u8(..4)), format!("{seed}-{n}-{i}"));
                    pool.push(key.clone());
                    key
                }
            })
            .collect();
        let body: Vec<Value> = batch.iter().map(|(t, id)| json!({"topic": t, "event_id": id})).collect();
        match client.post(format!("{app_base}/publish")).json(&body).send().await {
            Ok(resp) if resp.status() == StatusCode::OK => acked.extend(batch),
            _ => return acked,
        }
    }
    unreachable!("the loop returns on the first refusal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_or_doubled_across_power_cuts() {
    let iterations: u64 =
        std::env::var("POWER_CUT_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let (mut stored, mut mid_write, mut replayed) = (0, 0, 0);
    for iteration in 0..iterations {
        let run = cut_power_once(iteration).await;
        stored += run.stored;
        mid_write += u64::from(run.mid_write);
        replayed += u64::from(run.journal_frames_replayed > 0);
    }
    assert!(stored > iterations as usize, "the runs stored events before their cuts: {stored}");
    // Most cuts land at a write (a journal frame's, a checkpoint's or a merge's);
    // on a slow disk the clock cuts more.
    assert!(mid_write > 0, "no cut landed mid-write in {iterations} runs");
    // Acknowledged batches not yet in a durable redb commit came back from the journal.
    assert!(replayed > 0, "no run replayed the journal after its cut in {iterations} runs");
    eprintln!("{iterations} power cuts: {mid_write} at a write, {replayed} replayed the journal");
}

struct Run {
    stored: usize,
    /// The cut came at a write, or left unsynced writes behind.
    mid_write: bool,
    journal_frames_replayed: u64,
}

/// One run: publish, cut, reopen, check.
async fn cut_power_once(seed: u64) -> Run {
    let dir = data_dir();
    let mut rng = fastrand::Rng::with_seed(seed);
    // Mostly at a random write (mid-commit, or mid-merge); otherwise by the clock.
    let power = Arc::new(Power::new(seed));
    let (for_db, for_journal) = (power.clone(), power.clone());
    let storage = event_aggregator::Storage {
        database: Arc::new(move |builder: &redb::Builder, path: &Path| {
            builder.create_with_backend(for_db.disk(path)?)
        }),
        journal: Arc::new(
            move |path: &Path| Ok(Box::new(for_journal.disk(path)?) as Box<dyn StorageBackend>),
        ),
    };
    // Small merges, so cuts land in them too.
    let config = event_aggregator::Config { index_merge_keys: 32, ..test_config(dir.path()) };
    let app = event_aggregator::start_with_storage(config.clone(), storage).await.expect("starts");
    power.writes_left.store(rng.u64(1..600), SeqCst);
    let base = format!("http://{}", app.addr);
    let pool = Arc::new(Mutex::new(Vec::new()));
    let publishers: Vec<_> = (0..3)
        .map(|p| tokio::spawn(publish_until_refused(base.clone(), seed * 10 + p, pool.clone())))
        .collect();
    let cut = async || power.off.load(SeqCst);
    crate::helpers::eventually(Duration::from_millis(rng.u64(50..400)), cut).await;
    power.cut();
    let mid_write = power.at_write.load(SeqCst) || power.torn.load(SeqCst) > 0;
    let mut acked = HashSet::new();
    for p in publishers {
        acked.extend(p.await.expect("publisher task"));
    }
    tokio::time::timeout(Duration::from_secs(30), app.shutdown()).await.expect("shutdown after a cut ends");

    let app = TestApp::spawn_with(config).await;
    let journal_frames_replayed = app.stats().await["writer"]["journal_frames_replayed"]
        .as_u64()
        .expect("writer.journal_frames_replayed");
    let stored = check_promises(&app, &acked, seed).await;
    app.shutdown().await;
    Run { stored, mid_write, journal_frames_replayed }
}

async fn check_promises(app: &TestApp, acked: &HashSet<Key>, seed: u64) -> usize {
    let events = app.all_events(None).await;
    let mut seen: HashMap<Key, u32> = HashMap::new();
    for e in &events {
        let key = (e["topic"].as_str().unwrap().to_owned(), e["event_id"].as_str().unwrap().to_owned());
        *seen.entry(key).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "run {seed}: stored twice: {doubled:?}");
    let lost: Vec<_> = acked.iter().filter(|k| !seen.contains_key(*k)).collect();
    assert!(lost.is_empty(), "run {seed}: acknowledged, then lost: {lost:?}");
    let (received, unique, duplicates) = counts(&app.stats().await);
    assert_eq!((unique as usize, received), (events.len(), unique + duplicates), "run {seed}: counters");
    // The rebuilt filter (or the recent map) knows every stored key.
    for chunk in events.chunks(500) {
        let again: Vec<Value> =
            chunk.iter().map(|e| json!({"topic": e["topic"], "event_id": e["event_id"]})).collect();
        let (status, body) = app.publish(&Value::Array(again)).await;
        assert_eq!(
            (status, body["stored"].as_u64()),
            (StatusCode::OK, Some(0)),
            "run {seed}: re-sent stored keys"
        );
    }
    events.len()
}
