//! Storage faults enter through redb's `StorageBackend`, never through the
//! product: [`FaultyDisk`] wraps redb's `FileBackend` (after redb's own test
//! backends, `BlockingSyncBackend` and `CrashBackend`) and is switched by a
//! shared [`Faults`]. Every `TestApp` runs on one; it is inert until a test
//! arms it.

use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use event_aggregator::Storage;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The switches of a [`FaultyDisk`], shared with the test.
#[derive(Debug)]
pub struct Faults {
    broken: AtomicBool,
    syncs_fail: AtomicBool,
    delay_ms: AtomicU64,
    read_delay_ms: AtomicU64,
    /// Writes ending past this offset fail with ENOSPC (`u64::MAX`: no limit).
    space_until: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            broken: AtomicBool::new(false),
            syncs_fail: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            read_delay_ms: AtomicU64::new(0),
            space_until: AtomicU64::new(u64::MAX),
        }
    }
}

impl Faults {
    /// Every write and sync fails with EIO (nothing reaches the file) until `heal`.
    pub fn break_disk(&self) {
        self.broken.store(true, SeqCst);
    }
    /// Writes reach the file but every sync fails with EIO until `heal`: a commit
    /// reported failed may be on disk after all.
    pub fn fail_syncs(&self) {
        self.syncs_fail.store(true, SeqCst);
    }
    pub fn heal(&self) {
        self.broken.store(false, SeqCst);
        self.syncs_fail.store(false, SeqCst);
    }
    /// Each sync (and, while broken, the first failing write) takes this long.
    pub fn slow_down(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }

    /// The filesystem holds `bytes` more than the file has now: a write ending
    /// past that fails with ENOSPC, as on a full tmpfs (growing the file with
    /// `set_len` is sparse and still succeeds). `make_room` lifts the limit.
    pub fn fill_disk_after(&self, bytes: u64, file_len: u64) {
        self.space_until.store(file_len + bytes, SeqCst);
    }
    pub fn make_room(&self) {
        self.space_until.store(u64::MAX, SeqCst);
    }

    /// Each read takes this long (a disk check that hits a slow disk).
    pub fn slow_reads(&self, delay: Duration) {
        self.read_delay_ms.store(delay.as_millis() as u64, SeqCst);
    }

    fn pause(&self) {
        let ms = self.delay_ms.load(SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    fn check(&self) -> io::Result<()> {
        if self.broken.load(SeqCst) {
            self.pause();
            return Err(io::Error::other("injected I/O error"));
        }
        Ok(())
    }
}

/// Linux's "No space left on device".
const ENOSPC: i32 = 28;

/// The lock methods of `StorageBackend`, forwarded to `self.inner` (a
/// `FileBackend`): the file lock is what keeps two databases off one file.
macro_rules! forward_locks {
    () => {
        fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_range(start, end)
        }
        fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_shared_range(start, end)
        }
        fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_range(start, end)
        }
        fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_shared_range(start, end)
        }
        fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.inner.unlock_range(start, end)
        }
        fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.query_lock_range(start, end)
        }
    };
}
pub(crate) use forward_locks;

/// redb's file backend with the faults of [`Faults`] in front of it.
#[derive(Debug)]
pub struct FaultyDisk {
    inner: FileBackend,
    faults: Arc<Faults>,
}

/// What `event_aggregator::start_with_storage` opens (and reopens) the
/// database and its journal with: both on the same faulty disk.
pub fn storage(faults: Arc<Faults>) -> Storage {
    storage_apart(faults.clone(), faults)
}

/// The database on the disk of `database`, its journal on the disk of `journal`:
/// one of the two can fail while the other does not.
pub fn storage_apart(database: Arc<Faults>, journal: Arc<Faults>) -> Storage {
    Storage {
        database: Arc::new(move |builder: &redb::Builder, path: &std::path::Path| {
            builder.create_with_backend(FaultyDisk::open(path, database.clone())?)
        }),
        journal: Arc::new(move |path: &std::path::Path| {
            Ok(Box::new(FaultyDisk::open(path, journal.clone())?) as Box<dyn StorageBackend>)
        }),
    }
}

impl FaultyDisk {
    fn open(path: &std::path::Path, faults: Arc<Faults>) -> io::Result<FaultyDisk> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        Ok(FaultyDisk { inner: FileBackend::new(file).map_err(io::Error::other)?, faults })
    }
}

impl StorageBackend for FaultyDisk {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let ms = self.faults.read_delay_ms.load(SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.pause();
        self.faults.check()?;
        if self.faults.syncs_fail.load(SeqCst) {
            return Err(io::Error::other("injected fsync error"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.check()?;
        if offset + data.len() as u64 > self.faults.space_until.load(SeqCst) {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
    forward_locks!();
}
