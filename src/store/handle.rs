//! The store's handle and the values its operations take and return. The
//! `Database` sits behind a lock only so that the writer can replace it on
//! reopen: readers clone the `Arc` for one operation and see `Closed` while a
//! reopen is in progress. The operations themselves are in `open`, `write` and
//! `read`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, DatabaseError};

use super::index::KeyIndex;
use super::journal::Journal;
use super::tail::{self, Tail};
use crate::event::{EventKey, Seq};

/// Opens the database for a path with a builder: the default is redb's file
/// backend; tests wrap that backend to inject storage faults.
pub type OpenDatabase = dyn Fn(&redb::Builder, &Path) -> Result<Database, DatabaseError> + Send + Sync;

/// Opens the journal's file (`<db>.journal`): the default is redb's file
/// backend; tests wrap it as they wrap the database's.
pub type OpenJournal = dyn Fn(&Path) -> std::io::Result<Box<dyn redb::StorageBackend>> + Send + Sync;

/// How to open the store; kept, because the writer reopens it after an I/O error.
#[derive(Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// redb page cache, in bytes.
    pub cache_bytes: usize,
    /// Merge the key log into the upper key run once it holds this many pairs
    /// (see `index`): this bounds the key-log mirror's memory and the restart's reload.
    pub merge_threshold: usize,
    /// Batches whose journal frame is at most this many bytes are made durable by
    /// the journal and committed to redb without fsync; larger ones (and all,
    /// at 0) by redb's durable commit.
    pub journal_max_frame_bytes: usize,
    /// `None`: redb's file backend at `path`.
    pub open_database: Option<Arc<OpenDatabase>>,
    /// `None`: redb's file backend at `<path>.journal`.
    pub open_journal: Option<Arc<OpenJournal>>,
}

/// Default for [`StoreConfig::merge_threshold`].
pub const DEFAULT_MERGE_THRESHOLD: usize = 1 << 18;

/// Default for [`StoreConfig::journal_max_frame_bytes`]: ~64k events of 250
/// bytes, past the writer's default batch of 20k. Batches of 1000-event requests
/// gained 20–30 % from the journal too (fewer redb durable commits, each covering
/// several batches), so it is not only for small ones.
pub const DEFAULT_JOURNAL_MAX_FRAME_BYTES: usize = 16 << 20;

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>, cache_bytes: usize) -> Self {
        StoreConfig {
            path: path.into(),
            cache_bytes,
            merge_threshold: DEFAULT_MERGE_THRESHOLD,
            journal_max_frame_bytes: DEFAULT_JOURNAL_MAX_FRAME_BYTES,
            open_database: None,
            open_journal: None,
        }
    }

    /// The journal's file: the database's path with `.journal` appended.
    pub fn journal_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".journal");
        PathBuf::from(name)
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("path", &self.path)
            .field("cache_bytes", &self.cache_bytes)
            .field("merge_threshold", &self.merge_threshold)
            .field("journal_max_frame_bytes", &self.journal_max_frame_bytes)
            .field("custom_backend", &self.open_database.is_some())
            .finish()
    }
}

/// Where the next batch goes; owned by the writer, recovered at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub next_seq: u64,
    pub unique: u64,
    pub duplicates: u64,
    /// The last journal frame applied (see `journal`).
    pub journal_frame: u64,
}

/// What `open` found on disk.
#[derive(Debug, Clone, Copy)]
pub struct Recovered {
    pub key_hash_seed: u64,
    pub head: Head,
    pub stored_keys: u64,
}

/// One new event for `append`.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    /// `EventKey::hash` of the record's key.
    pub hash: u64,
    pub topic: &'a str,
    /// `codec` bytes of the record.
    pub bytes: &'a [u8],
}

impl<'a> Row<'a> {
    pub fn new(key: &'a EventKey, bytes: &'a [u8]) -> Self {
        Row { hash: key.hash(), topic: key.topic(), bytes }
    }
}

/// A stored event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: Seq,
    pub topic: String,
    pub event_id: String,
    pub timestamp: String,
    pub source: String,
    /// The payload object's JSON text, byte-for-byte as it was sent.
    pub payload: String,
    /// Server receive time, microseconds since the Unix epoch.
    pub received_at_us: i64,
}

/// A page of `GET /events`.
#[derive(Debug, Default)]
pub struct Page {
    /// In ascending `seq`.
    pub events: Vec<StoredEvent>,
    /// Cursor for the next page; `None` on the last page.
    pub next_after: Option<Seq>,
}

pub struct Store {
    pub(super) config: StoreConfig,
    /// `None` only while the writer reopens it.
    pub(super) db: RwLock<Option<Arc<Database>>>,
    /// In-memory mirror of `KEY_LOG` and the merge in progress.
    pub(super) index: KeyIndex,
    /// The writer's alone; `None` only while the database is (re)opened.
    pub(super) journal: Mutex<Option<Journal>>,
    /// Frames the last open replayed.
    pub(super) replayed: AtomicU64,
    /// Journaled batches not yet applied to redb (write-behind, see `tail`).
    pub(super) tail: Mutex<Tail>,
}

impl Store {
    /// False from a reopen's start until one succeeds.
    pub fn is_open(&self) -> bool {
        self.db.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Committed pairs not yet merged into the upper key run (the key-log mirror).
    pub fn key_log_pairs(&self) -> usize {
        self.index.unmerged_len()
    }

    /// Pairs in the upper key run, not yet moved into the lower one.
    pub fn upper_index_pairs(&self) -> u64 {
        self.index.upper_len()
    }

    /// Journal frames the last open replayed into redb.
    pub fn journal_frames_replayed(&self) -> u64 {
        self.replayed.load(Relaxed)
    }

    /// Events acknowledged by their journal frame and not yet applied to redb.
    pub fn tail_events(&self) -> usize {
        self.tail().events()
    }

    pub(super) fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tail's batches, for one read: taken after the database and before the
    /// read transaction (see `tail`).
    pub(super) fn tail_batches(&self) -> Vec<Arc<tail::Batch>> {
        self.tail().snapshot()
    }

    /// The database for one operation, or `None` while it is being reopened.
    pub(super) fn database(&self) -> Option<Arc<Database>> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
