//! The journal: an append-only file beside the database (`<db>.journal`) that
//! makes a batch durable with one write and one `fdatasync`, so that its redb
//! transaction can commit without fsync (`Durability::None`). redb's own durable
//! commit of a small batch costs ~1 ms here (pages of five tables and its
//! header, then a flush); the journal's append costs ~0.15 ms. For large
//! batches it turns one durable redb commit per batch into one per 32 MiB.
//!
//! Promises:
//! - **Durable before acknowledged.** A frame counts as written (`len` moves
//!   past it) only once [`Journal::sync`] returned `Ok` for it. A small batch
//!   is then kept in the tail and applied to redb later (`store::tail`); a larger one is
//!   applied to redb (committed without fsync) after the sync, or, for a large
//!   frame, while the sync runs on a second thread. The writer hands a batch on
//!   for its acks only after its sync (and its commit, if any) returned `Ok`
//!   (`store::write`).
//! - **Replayed until covered.** Every frame numbered after the `journal_frame`
//!   of redb's last durable commit is replayed into redb at open, in order, with
//!   the seqs it was given; then redb commits durably and the journal starts
//!   over at offset 0 (`reset`), which a durable commit also does at any time.
//! - **Only whole, current frames.** Replay stops at the first frame that is torn
//!   (length or checksum), of another database (the checksum is seeded with the
//!   database's key-hash seed), or not numbered one after the frame before it:
//!   what follows a reset's tail is always an older cycle's leftover.
//!
//! Frame, little-endian: `[body length: u32][xxh3 of body, seeded: u64][body]`,
//! body = `[frame_no: u64][first_seq: u64][duplicates: u64][n: u32]` then `n`
//! times `[length: u32][codec record]`. The file is grown in steps of zeros
//! (`GROW_BYTES`) and then overwritten in place, so most syncs carry no size
//! change (that halves their cost on ext4).

use std::io;

use redb::StorageBackend;
use xxhash_rust::xxh3::xxh3_64_with_seed;

const HEADER: usize = 12;
const BODY_FIXED: usize = 28;
/// The file grows by at least this much at a time, zero-filled.
const GROW_BYTES: u64 = 4 << 20;

/// One replayed frame: a batch as the writer journaled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub frame_no: u64,
    pub first_seq: u64,
    pub duplicates: u64,
    /// The records, each a `codec` encoding.
    pub records: Vec<Vec<u8>>,
}

/// Where a written, not yet synced, frame ends (from [`Journal::write_frame`]).
#[derive(Debug, Clone, Copy)]
#[must_use = "a written frame counts only once synced: pass it to `frame_synced`"]
pub struct FrameEnd(u64);

pub struct Journal {
    backend: Box<dyn StorageBackend>,
    seed: u64,
    /// Where the next frame goes.
    end: u64,
    /// Bytes of the file known to exist (zeros past `end`).
    allocated: u64,
    /// Reused between appends.
    buf: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("end", &self.end).field("allocated", &self.allocated).finish()
    }
}

/// The journal's size of a batch with these record lengths.
pub fn frame_len(record_lens: impl Iterator<Item = usize>) -> usize {
    HEADER + BODY_FIXED + record_lens.map(|len| 4 + len).sum::<usize>()
}

impl Journal {
    /// Open the journal and read back its frames numbered after `covered` (the
    /// last frame the database holds), oldest first: the caller replays them,
    /// then `reset`s.
    ///
    /// The whole current cycle is read, even when its first frame is covered:
    /// redb can hold a prefix of it (non-durable commits that redb persisted as
    /// it closed, on a clean shutdown or a reopen) while later frames were still
    /// in the tail (`store::tail`). Read: up to `CHECKPOINT_BYTES`.
    pub fn open(
        backend: Box<dyn StorageBackend>,
        seed: u64,
        covered: u64,
    ) -> io::Result<(Journal, Vec<Frame>)> {
        let allocated = backend.len()?;
        let mut journal = Journal { backend, seed, end: 0, allocated, buf: Vec::new() };
        let frames = journal.read_frames(covered)?;
        Ok((journal, frames))
    }

    /// Bytes written since the last reset.
    pub fn len(&self) -> u64 {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Write one frame, without syncing it: [`Journal::sync`] makes it durable
    /// and [`Journal::frame_synced`] then counts it. Returns where the frame
    /// ends. On `Err` the frame may or may not be in the file; a reopen's
    /// replay tells.
    pub fn write_frame<'a>(
        &mut self,
        frame_no: u64,
        first_seq: u64,
        duplicates: u64,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<FrameEnd> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(HEADER, 0);
        buf.extend_from_slice(&frame_no.to_le_bytes());
        buf.extend_from_slice(&first_seq.to_le_bytes());
        buf.extend_from_slice(&duplicates.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        let mut n: u32 = 0;
        for record in records {
            buf.extend_from_slice(&len_u32(record.len())?.to_le_bytes());
            buf.extend_from_slice(record);
            n += 1;
        }
        buf[HEADER + 24..HEADER + BODY_FIXED].copy_from_slice(&n.to_le_bytes());
        let body_len = len_u32(buf.len() - HEADER)?;
        let checksum = xxh3_64_with_seed(&buf[HEADER..], self.seed);
        buf[..4].copy_from_slice(&body_len.to_le_bytes());
        buf[4..HEADER].copy_from_slice(&checksum.to_le_bytes());
        let result = self.write_at_end(&buf);
        self.buf = buf;
        result
    }

    /// `fdatasync` the file: every frame written so far is durable once this
    /// returns `Ok`. Takes `&self`, so it can run on another thread while the
    /// writer applies the frame's batch to redb.
    pub fn sync(&self) -> io::Result<()> {
        self.backend.sync_data()
    }

    /// The frame ending at `end` was synced: the next one goes after it.
    pub fn frame_synced(&mut self, end: FrameEnd) {
        self.end = end.0;
    }

    /// Write one frame and sync it (tests, and what the writer does in two steps).
    #[cfg(test)]
    pub fn append<'a>(
        &mut self,
        frame_no: u64,
        first_seq: u64,
        duplicates: u64,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        let end = self.write_frame(frame_no, first_seq, duplicates, records)?;
        self.sync()?;
        self.frame_synced(end);
        Ok(())
    }

    /// Start over at offset 0: everything journaled so far is in a durable
    /// redb commit. The old frames stay in the file; replay never reads past
    /// the new ones (see the module's promises).
    pub fn reset(&mut self) {
        self.end = 0;
    }

    /// Write `frame` at the end, growing the file first if it must; `end` moves
    /// only once the frame is synced ([`Journal::frame_synced`]).
    fn write_at_end(&mut self, frame: &[u8]) -> io::Result<FrameEnd> {
        let end = self.end + frame.len() as u64;
        if end > self.allocated {
            let grown = end.max(self.allocated + GROW_BYTES);
            let zeros = vec![0; usize::try_from(grown - self.allocated).map_err(io::Error::other)?];
            // Sized first, as redb does: a backend may refuse writes past its end.
            self.backend.set_len(grown)?;
            self.backend.write(self.allocated, &zeros)?;
            self.allocated = grown;
        }
        self.backend.write(self.end, frame)?;
        Ok(FrameEnd(end))
    }

    /// Frames from offset 0 while whole and consecutively numbered; those
    /// numbered up to `covered` are checked and followed, but not kept (after a
    /// clean shutdown that is the whole file, up to `CHECKPOINT_BYTES`).
    fn read_frames(&mut self, covered: u64) -> io::Result<Vec<Frame>> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut last: Option<u64> = None;
        let mut header = [0u8; HEADER];
        let mut body = Vec::new();
        while self.end + HEADER as u64 <= self.allocated {
            self.backend.read(self.end, &mut header)?;
            let body_len = u64::from(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")));
            let checksum = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
            let body_start = self.end + HEADER as u64;
            if body_len < BODY_FIXED as u64 || body_start + body_len > self.allocated {
                break;
            }
            body.resize(body_len as usize, 0);
            self.backend.read(body_start, &mut body)?;
            if xxh3_64_with_seed(&body, self.seed) != checksum {
                break;
            }
            let frame_no = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
            if last.is_some_and(|last| frame_no != last + 1) {
                break;
            }
            if frame_no > covered {
                let Some(frame) = parse_body(&body) else { break };
                frames.push(frame);
            }
            last = Some(frame_no);
            self.end = body_start + body_len;
        }
        Ok(frames)
    }
}

fn len_u32(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::other("a journal frame is limited to 4 GiB"))
}

fn parse_body(body: &[u8]) -> Option<Frame> {
    let u64_at = |at: usize| body.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let u32_at = |at: usize| body.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let (frame_no, first_seq, duplicates) = (u64_at(0)?, u64_at(8)?, u64_at(16)?);
    let n = u32_at(24)?;
    let mut at = BODY_FIXED;
    let mut records = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let len = u32_at(at)? as usize;
        records.push(body.get(at + 4..at + 4 + len)?.to_vec());
        at += 4 + len;
    }
    (at == body.len()).then_some(Frame { frame_no, first_seq, duplicates, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;
    use std::sync::Arc;

    /// An in-memory file that outlives the journal opened on it, like a disk.
    #[derive(Debug, Clone, Default)]
    struct Shared(Arc<InMemoryBackend>);

    impl StorageBackend for Shared {
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            self.0.read(offset, out)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.write(offset, data)
        }
    }

    fn append(journal: &mut Journal, frame_no: u64, records: &[&[u8]]) {
        journal.append(frame_no, frame_no * 10, frame_no, records.iter().copied()).unwrap();
    }

    fn frame_nos(disk: &Shared, seed: u64) -> Vec<u64> {
        let (_, frames) = Journal::open(Box::new(disk.clone()), seed, 0).unwrap();
        frames.iter().map(|f| f.frame_no).collect()
    }

    #[test]
    fn frames_come_back_whole_and_in_order() {
        let disk = Shared::default();
        let (mut journal, none) = Journal::open(Box::new(disk.clone()), 7, 0).unwrap();
        assert!(none.is_empty());
        append(&mut journal, 1, &[b"a", b"bc"]);
        append(&mut journal, 2, &[]);
        let (_, frames) = Journal::open(Box::new(disk), 7, 0).unwrap();
        assert_eq!(
            frames[0],
            Frame { frame_no: 1, first_seq: 10, duplicates: 1, records: vec![b"a".to_vec(), b"bc".to_vec()] }
        );
        assert_eq!((frames.len(), frames[1].records.len()), (2, 0));
    }

    #[test]
    fn replay_stops_at_a_torn_frame_and_ignores_another_database() {
        let disk = Shared::default();
        let (mut journal, _) = Journal::open(Box::new(disk.clone()), 7, 0).unwrap();
        append(&mut journal, 1, &[b"first"]);
        let torn_at = journal.len();
        append(&mut journal, 2, &[b"second"]);
        append(&mut journal, 3, &[b"third"]);
        disk.0.write(torn_at + HEADER as u64 + 3, b"X").unwrap();
        assert_eq!(frame_nos(&disk, 7), vec![1], "the torn frame and all after it are dropped");
        assert_eq!(frame_nos(&disk, 8), Vec::<u64>::new(), "another seed: no frame checks out");
    }

    #[test]
    fn after_a_reset_the_previous_cycles_tail_is_never_replayed() {
        let disk = Shared::default();
        let (mut journal, _) = Journal::open(Box::new(disk.clone()), 7, 0).unwrap();
        for n in 1..=4 {
            append(&mut journal, n, &[b"old cycle, long record"]);
        }
        journal.reset();
        assert_eq!(frame_nos(&disk, 7), vec![1, 2, 3, 4], "nothing covered: all are read");
        let (_, covered) = Journal::open(Box::new(disk.clone()), 7, 4).unwrap();
        assert!(covered.is_empty(), "every frame covered: nothing to replay");
        let (_, after_two) = Journal::open(Box::new(disk.clone()), 7, 2).unwrap();
        let replayed: Vec<u64> = after_two.iter().map(|f| f.frame_no).collect();
        assert_eq!(
            replayed,
            vec![3, 4],
            "a covered prefix (a clean close with a tail): the rest is replayed"
        );
        append(&mut journal, 5, &[b"new"]);
        // Frame 5 is shorter than frame 1: what follows it is the middle of old frame 1, then 2..4.
        append(&mut journal, 6, &[b"new"]);
        assert_eq!(frame_nos(&disk, 7), vec![5, 6]);
    }

    #[test]
    fn the_file_grows_in_steps_and_is_reused_after_a_reset() {
        let disk = Shared::default();
        let (mut journal, _) = Journal::open(Box::new(disk.clone()), 7, 0).unwrap();
        append(&mut journal, 1, &[b"x"]);
        assert_eq!(disk.len().unwrap(), GROW_BYTES);
        journal.reset();
        append(&mut journal, 2, &[&vec![1; GROW_BYTES as usize]]);
        assert_eq!(disk.len().unwrap(), 2 * GROW_BYTES, "grown by a step past the large frame");
    }
}
