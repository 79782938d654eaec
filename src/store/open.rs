//! Opening and recovery: create the file and tables, fix the hash seed on first
//! open, read back the head, mirror the unmerged key log, and the scans that
//! rebuild the Bloom filter (at startup) or cover an uncertain commit (after a
//! reopen). Recovery is this file's alone: the other parts start from its result.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::handle::{Head, Recovered, Row, Store, StoreConfig};
use super::journal::{self, Journal};
use super::schema::{
    self, EVENTS, KEY_LOG, KEY_RUN_LOWER, KEY_RUN_UPPER, META, TOPIC_RUNS, TOPICS, legacy, meta,
};
use super::tail::Tail;
use super::write::WriteError;
use super::{codec, runs};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Database(#[from] redb::DatabaseError),
    #[error(transparent)]
    Transaction(#[from] redb::TransactionError),
    #[error(transparent)]
    Table(#[from] redb::TableError),
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("cannot initialise the database: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("database schema version {found} is not supported (expected {expected})")]
    Schema { found: u64, expected: u64 },
    #[error("a reader still holds the database; cannot reopen it")]
    Busy,
    #[error("cannot open the journal {path}: {source}")]
    Journal { path: String, source: std::io::Error },
    #[error(
        "the journal's next frame is {frame}, but the database needs frame {expected}: the journal \
         belongs to another state of this database (restored from a backup without it?); move \
         it away to start without the batches it holds"
    )]
    JournalGap { frame: u64, expected: u64 },
    #[error("cannot replay the journal: {0}")]
    Replay(#[from] WriteError),
    #[error("a journaled record does not decode: {0}")]
    Record(#[from] bincode::error::DecodeError),
}

/// Longest wait for in-flight readers before a reopen gives up.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// Open or create the database (parent directories included) and read back
    /// where the previous run stopped.
    pub fn open(config: StoreConfig) -> Result<(Store, Recovered), OpenError> {
        let db = open_database(&config)?;
        let store = Store {
            config,
            db: Default::default(),
            index: Default::default(),
            journal: Default::default(),
            replayed: Default::default(),
            tail: Mutex::new(Tail::new(Head::default())),
        };
        let recovered = store.recover(&db)?;
        *store.db.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok((store, recovered))
    }

    /// Writer only, after an I/O error (redb refuses every later write until
    /// then): close the database once no reader holds it, open it again and
    /// recover as at startup; `before_readers` runs on what was recovered before
    /// any reader can see the database again. Readers get `Closed` meanwhile; if
    /// opening fails the store stays closed, `append` fails fast, and the writer
    /// tries again later.
    ///
    /// If a reader outlives `REOPEN_WAIT`, the old handle is dropped anyway and
    /// this open fails on redb's file lock until that reader is gone: the key-log
    /// mirror is never rebuilt under a live reader.
    pub fn reopen(&self, before_readers: impl FnOnce(&Recovered)) -> Result<Recovered, OpenError> {
        let old = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(self.journal.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(old) = old {
            drop(wait_for_readers(old)?);
        }
        let db = open_database(&self.config)?;
        let recovered = self.recover(&db)?;
        before_readers(&recovered);
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok(recovered)
    }

    /// The head, the key-log mirror rebuilt from disk, and the journal replayed
    /// on top (which then starts over).
    fn recover(&self, db: &Database) -> Result<Recovered, OpenError> {
        let (mut recovered, [upper, lower]) = init(db)?;
        recovered.stored_keys += self.load_key_log(db, upper, lower)?;
        let (mut journal, frames) =
            self.open_journal(recovered.key_hash_seed, recovered.head.journal_frame)?;
        let unique_before = recovered.head.unique;
        let hasher = crate::event::KeyHasher::new(recovered.key_hash_seed);
        let replayed = self.replay(db, &mut journal, frames, &mut recovered.head, hasher)?;
        recovered.stored_keys += recovered.head.unique - unique_before;
        self.replayed.store(replayed, std::sync::atomic::Ordering::Relaxed);
        if replayed > 0 {
            tracing::info!(frames = replayed, next_seq = recovered.head.next_seq, "journal replayed");
        }
        *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(journal);
        // Whatever was in the tail is in redb now: the replay applied its frames.
        *self.tail() = Tail::new(recovered.head);
        Ok(recovered)
    }

    fn open_journal(&self, seed: u64, covered: u64) -> Result<(Journal, Vec<journal::Frame>), OpenError> {
        let path = self.config.journal_path();
        let backend = match &self.config.open_journal {
            Some(open) => open(&path),
            None => open_journal_file(&path),
        };
        backend
            .and_then(|backend| Journal::open(backend, seed, covered))
            .map_err(|source| OpenError::Journal { path: path.display().to_string(), source })
    }

    /// Open: apply the journal's frames after `head.journal_frame`, in order, in
    /// ONE transaction committed with fsync; then the journal starts over. The
    /// key-log mirror advances frame by frame before that commit: no reader can
    /// see the database yet, and if the commit fails the open fails and the next
    /// one rebuilds the mirror from disk.
    fn replay(
        &self,
        db: &redb::Database,
        journal: &mut Journal,
        frames: Vec<journal::Frame>,
        head: &mut Head,
        hasher: crate::event::KeyHasher,
    ) -> Result<u64, OpenError> {
        let mut replayed = 0;
        let covered = head.journal_frame;
        let txn = db.begin_write()?;
        for frame in frames.into_iter().filter(|f| f.frame_no > covered) {
            if frame.frame_no != head.journal_frame + 1 || frame.first_seq != head.next_seq {
                return Err(OpenError::JournalGap {
                    frame: frame.frame_no,
                    expected: head.journal_frame + 1,
                });
            }
            let records: Vec<codec::Record<'_>> =
                frame.records.iter().map(|bytes| codec::decode(bytes)).collect::<Result<_, _>>()?;
            let rows = records.iter().zip(&frame.records).map(|(record, bytes)| Row {
                hash: hasher.hash(record.topic, record.event_id),
                topic: record.topic,
                bytes,
            });
            let mut next = Head { journal_frame: frame.frame_no, ..*head };
            let applied = self.apply(&txn, &mut next, rows, frame.duplicates)?;
            self.committed(head, next, applied);
            replayed += 1;
        }
        txn.commit()?;
        journal.reset();
        Ok(replayed)
    }

    /// Mirror the unmerged key log in memory, the mirror sized for it first (so
    /// it does not grow while loading). Returns the pairs read.
    fn load_key_log(&self, db: &Database, upper: u64, lower: u64) -> Result<u64, OpenError> {
        let txn = db.begin_read()?;
        let log = txn.open_table(KEY_LOG)?;
        let mut n = 0;
        for row in log.iter()? {
            n += row?.1.value().len() / runs::PAIR_BYTES;
        }
        self.index.clear(self.config.merge_threshold, n, upper, lower);
        let mut pairs = Vec::new();
        for row in log.iter()? {
            pairs.clear();
            pairs.extend(runs::Block::new(row?.1.value()).pairs());
            self.index.add(&pairs);
        }
        Ok(n as u64)
    }

    /// Startup filter rebuild: call `f` with the hash of every key in redb (at
    /// startup that is every stored key: the tail is empty yet, see `tail`). A
    /// key caught mid-merge may be reported twice, which a filter does not mind.
    pub fn for_each_key_hash(&self, f: &mut dyn FnMut(u64)) -> Result<u64, super::read::ReadError> {
        let db = self.database().ok_or(super::read::ReadError::Closed)?;
        let txn = db.begin_read()?;
        let mut n = 0;
        for run in [KEY_RUN_UPPER, KEY_RUN_LOWER] {
            for entry in txn.open_table(run)?.iter()? {
                for (hash, _) in runs::Block::new(entry?.1.value()).pairs() {
                    f(hash);
                    n += 1;
                }
            }
        }
        for row in txn.open_table(KEY_LOG)?.iter()? {
            for (hash, _) in runs::Block::new(row?.1.value()).pairs() {
                f(hash);
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Store {
    /// Startup top-up of a saved filter: call `f` with the key of every record
    /// from `from_seq` on (the records themselves, so no index is needed; at
    /// startup the tail is empty).
    pub fn for_each_key_from(
        &self,
        from_seq: u64,
        f: &mut dyn FnMut(&str, &str),
    ) -> Result<u64, super::read::ReadError> {
        let db = self.database().ok_or(super::read::ReadError::Closed)?;
        let txn = db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let start = match events.range(..=from_seq)?.next_back() {
            Some(entry) => entry?.0.value(),
            None => from_seq,
        };
        let mut n = 0;
        for entry in events.range(start..)? {
            let (chunk_start, bytes) = entry?;
            let chunk = codec::Chunk::open(bytes.value())?;
            for i in 0..chunk.len() {
                if chunk_start.value() + i as u64 >= from_seq {
                    let record = codec::decode(chunk.get(i).unwrap_or_default())?;
                    f(record.topic, record.event_id);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The next seq the head on disk would assign: every stored event has a smaller one.
    pub fn next_seq(&self) -> Result<u64, super::read::ReadError> {
        let db = self.database().ok_or(super::read::ReadError::Closed)?;
        let txn = db.begin_read()?;
        Ok(txn.open_table(META)?.get(meta::NEXT_SEQ)?.map_or(1, |v| v.value()).max(1))
    }
}

fn open_database(config: &StoreConfig) -> Result<Database, OpenError> {
    if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|source| OpenError::DataDir { path: dir.display().to_string(), source })?;
    }
    let mut builder = Database::builder();
    builder.set_cache_size(config.cache_bytes).set_repair_callback(log_repair_progress);
    Ok(match &config.open_database {
        Some(open) => open(&builder, &config.path)?,
        None => builder.create(&config.path)?,
    })
}

/// redb repairs a file that was not closed cleanly (a crash) at open, walking
/// every tree: say so, since it takes time proportional to the data.
fn log_repair_progress(session: &mut redb::RepairSession) {
    let percent = (session.progress() * 100.0) as u64;
    tracing::info!(percent, "repairing the database after an unclean shutdown");
}

fn open_journal_file(path: &std::path::Path) -> std::io::Result<Box<dyn redb::StorageBackend>> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    Ok(Box::new(redb::backends::FileBackend::new(file).map_err(std::io::Error::other)?))
}

/// The database once every reader's clone is gone (reads are short).
fn wait_for_readers(mut db: Arc<Database>) -> Result<Database, OpenError> {
    let deadline = Instant::now() + REOPEN_WAIT;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Ok(db),
            Err(shared) if Instant::now() < deadline => {
                db = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return Err(OpenError::Busy),
        }
    }
}

/// Create missing tables, fix the hash seed on first open, upgrade an older
/// layout, read the head and the pair counts of the key runs (upper, lower).
fn init(db: &Database) -> Result<(Recovered, [u64; 2]), OpenError> {
    let txn = db.begin_write()?;
    let recovered = {
        let mut meta_table = txn.open_table(META)?;
        let version = get_or_insert(&mut meta_table, meta::SCHEMA_VERSION, || schema::SCHEMA_VERSION)?;
        if schema::UPGRADABLE_SCHEMA_VERSIONS.contains(&version) {
            let [upper, lower] = upgrade_key_trees(&txn)?;
            meta_table.insert(meta::UPPER_PAIRS, upper)?;
            meta_table.insert(meta::LOWER_PAIRS, lower)?;
            meta_table.insert(meta::SCHEMA_VERSION, schema::SCHEMA_VERSION)?;
            tracing::info!(from = version, upper, lower, "key index upgraded to sorted runs");
        } else if version != schema::SCHEMA_VERSION {
            return Err(OpenError::Schema { found: version, expected: schema::SCHEMA_VERSION });
        }
        let key_hash_seed = get_or_insert(&mut meta_table, meta::KEY_HASH_SEED, random_seed)?;
        let read =
            |name| -> Result<u64, OpenError> { Ok(meta_table.get(name)?.map(|v| v.value()).unwrap_or(0)) };
        let head = Head {
            next_seq: read(meta::NEXT_SEQ)?.max(1),
            unique: read(meta::UNIQUE)?,
            duplicates: read(meta::DUPLICATES)?,
            journal_frame: read(meta::JOURNAL_FRAME)?,
        };
        txn.open_table(EVENTS)?;
        txn.open_table(TOPICS)?;
        txn.open_table(TOPIC_RUNS)?;
        txn.open_table(KEY_LOG)?;
        txn.open_table(KEY_RUN_UPPER)?;
        txn.open_table(KEY_RUN_LOWER)?;
        let runs = [read(meta::UPPER_PAIRS)?, read(meta::LOWER_PAIRS)?];
        (Recovered { key_hash_seed, head, stored_keys: runs[0] + runs[1] }, runs)
    };
    txn.commit()?;
    Ok(recovered)
}

/// A version-3 or -4 file: rewrite its key trees as runs (each tree is sorted,
/// so it streams into blocks) and delete them. Returns the pairs of each run.
fn upgrade_key_trees(txn: &redb::WriteTransaction) -> Result<[u64; 2], OpenError> {
    let mut counts = [0; 2];
    let trees = [(legacy::KEY_INDEX_UPPER, KEY_RUN_UPPER), (legacy::KEY_INDEX, KEY_RUN_LOWER)];
    for (count, (tree, run)) in counts.iter_mut().zip(trees) {
        {
            let tree = txn.open_table(tree)?;
            let mut run = txn.open_table(run)?;
            let mut blocks = runs::BlockWriter::new(&mut run);
            for entry in tree.iter()? {
                blocks.push(entry?.0.value())?;
            }
            *count = blocks.finish()?;
        }
        txn.delete_table(tree)?;
    }
    Ok(counts)
}

fn get_or_insert(
    table: &mut redb::Table<'_, &str, u64>,
    name: &str,
    init: impl FnOnce() -> u64,
) -> Result<u64, OpenError> {
    if let Some(v) = table.get(name)? {
        return Ok(v.value());
    }
    let v = init();
    table.insert(name, v)?;
    Ok(v)
}

/// 64 random bits from the OS-seeded std hasher (no extra dependency needed).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
