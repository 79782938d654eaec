//! The Bloom filter's snapshot file, `<db path>.filter`: written at a clean
//! shutdown, read at startup so a restart does not rescan every stored key.
//!
//! Promise (dedup "coverage" across restarts): a snapshot claims only what it
//! holds. It records `covers_next_seq`, and every key with a smaller seq was in
//! the filter when it was written (the shutdown sequence saves it after the writer
//! and settler are joined, and only if the last commit succeeded). At startup the
//! keys of the records from `covers_next_seq` on are added to it, so a snapshot
//! that is old (a later run crashed) is still complete, only slower to top up. A
//! snapshot that is missing, torn, of another database (hash seed), from the
//! future (`covers_next_seq` past the head), or too small for today's key count is
//! ignored, and the filter is rebuilt by the full scan as before.
//!
//! Format, little-endian: magic, key-hash seed, covers_next_seq, items, the xxh3
//! of the filter bytes, then the bytes (`bloomfilter`'s own serialization).
//! Written to a temporary file, fsynced, then renamed over the old one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"EAFILT01";
const HEADER: usize = 8 + 4 * 8;

/// A filter as saved: its bytes, how many keys went in, and what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSnapshot {
    /// Every stored key with a smaller seq is in the filter.
    pub covers_next_seq: u64,
    pub items: u64,
    pub bytes: Vec<u8>,
}

/// Where the snapshot of the database at `db_path` lives.
pub fn path_for(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".filter");
    PathBuf::from(name)
}

/// Write `snapshot` for the database whose key-hash seed is `seed`, atomically.
pub fn save(path: &Path, seed: u64, snapshot: &FilterSnapshot) -> io::Result<()> {
    let tmp = path.with_extension("filter.tmp");
    let mut file = fs::File::create(&tmp)?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    for n in [seed, snapshot.covers_next_seq, snapshot.items, checksum(&snapshot.bytes)] {
        header.extend_from_slice(&n.to_le_bytes());
    }
    file.write_all(&header)?;
    file.write_all(&snapshot.bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The snapshot at `path` if it is whole and belongs to the database with `seed`.
pub fn load(path: &Path, seed: u64) -> Option<FilterSnapshot> {
    let mut data = fs::read(path).ok()?;
    let (header, bytes) = data.split_at_checked(HEADER)?;
    let (magic, fields) = header.split_first_chunk::<8>()?;
    let field = |i: usize| u64::from_le_bytes(fields[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    if magic != MAGIC || field(0) != seed || field(3) != checksum(bytes) {
        return None;
    }
    let (covers_next_seq, items) = (field(1), field(2));
    // In place, not a copy: the filter is the largest allocation of a start.
    data.drain(..HEADER);
    Some(FilterSnapshot { covers_next_seq, items, bytes: data })
}

fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> FilterSnapshot {
        FilterSnapshot { covers_next_seq: 42, items: 41, bytes: (0..=255).collect() }
    }

    #[test]
    fn a_saved_snapshot_loads_back_for_its_own_database_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("a.redb"));
        assert_eq!(path.file_name().unwrap(), "a.redb.filter");
        save(&path, 7, &snapshot()).unwrap();
        assert_eq!(load(&path, 7), Some(snapshot()));
        assert_eq!(load(&path, 8), None, "another database's seed");
    }

    #[test]
    fn a_torn_or_missing_snapshot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("a.redb"));
        assert_eq!(load(&path, 7), None);
        save(&path, 7, &snapshot()).unwrap();
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 1]).unwrap();
        assert_eq!(load(&path, 7), None, "cut short");
        let mut flipped = full.clone();
        flipped[HEADER + 3] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(load(&path, 7), None, "a flipped bit");
    }
}
