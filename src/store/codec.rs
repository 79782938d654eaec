//! On-disk encodings. One event is a [`Record`], encoded with bincode 2 (standard
//! config: varint integers, length-prefixed strings); decoding borrows from the
//! page. Records are stored in chunks of consecutive seqs, each filled up to
//! [`CHUNK_MAX_BYTES`] (one `EVENTS` row per chunk: far fewer B-tree inserts per
//! event, and pages of redb's buddy allocator nearly full).

use bincode::{BorrowDecode, Encode};

/// One stored event. `seq` is the table key, not part of the record.
#[derive(Debug, Clone, PartialEq, Eq, Encode, BorrowDecode)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub event_id: &'a str,
    pub timestamp: &'a str,
    pub source: &'a str,
    /// Raw JSON text of the payload object, as sent.
    pub payload: &'a str,
    /// Server receive time, microseconds since the Unix epoch.
    pub received_at_us: i64,
}

const CONFIG: bincode::config::Configuration = bincode::config::standard();

pub fn encode(record: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.payload.len() + record.topic.len() + 64);
    bincode::encode_into_std_write(record, &mut out, CONFIG)
        .expect("writing to a Vec cannot fail and Record has no fallible fields");
    out
}

pub fn decode(bytes: &[u8]) -> Result<Record<'_>, bincode::error::DecodeError> {
    bincode::borrow_decode_from_slice(bytes, CONFIG).map(|(record, _)| record)
}

/// A record's first two fields, the dedup key: what the exact disk check
/// compares, decoded without the rest (whose text it would also validate).
#[derive(BorrowDecode)]
struct RecordKey<'a> {
    topic: &'a str,
    event_id: &'a str,
}

/// The `(topic, event_id)` of an encoded record.
pub fn decode_key(bytes: &[u8]) -> Result<(&str, &str), bincode::error::DecodeError> {
    let (key, _): (RecordKey<'_>, usize) = bincode::borrow_decode_from_slice(bytes, CONFIG)?;
    Ok((key.topic, key.event_id))
}

/// Most bytes of one encoded chunk: one 16 KiB page's worth
/// (`schema::PAGE_VALUE_MAX_BYTES`). Chunks of a fixed 64 records of ~150
/// bytes filled their 16 KiB pages to 57 %.
pub const CHUNK_MAX_BYTES: usize = super::schema::PAGE_VALUE_MAX_BYTES;

/// Most records in one chunk (its count is a `u16`).
pub const CHUNK_MAX_EVENTS: usize = 1024;

/// Builds one chunk: `[n: u16][end offset of each record: n × u32][records]`,
/// little-endian, offsets relative to the start of the records.
#[derive(Default)]
pub struct ChunkBuilder {
    ends: Vec<u32>,
    records: Vec<u8>,
}

impl ChunkBuilder {
    pub fn push(&mut self, record: &[u8]) {
        self.records.extend_from_slice(record);
        let end = u32::try_from(self.records.len())
            .expect("a chunk of up to CHUNK_MAX_EVENTS bounded records is far below 4 GiB");
        self.ends.push(end);
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    /// Whether a record of `record_len` bytes still goes into this chunk: it
    /// must stay within [`CHUNK_MAX_BYTES`] and [`CHUNK_MAX_EVENTS`]. An empty
    /// chunk takes any record, so a record larger than the limit is a chunk alone.
    pub fn fits(&self, record_len: usize) -> bool {
        let encoded = 2 + 4 * (self.ends.len() + 1) + self.records.len() + record_len;
        self.is_empty() || (self.len() < CHUNK_MAX_EVENTS && encoded <= CHUNK_MAX_BYTES)
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// The encoded chunk; the builder is empty again afterwards.
    pub fn take(&mut self) -> Vec<u8> {
        let n = u16::try_from(self.ends.len()).expect("at most CHUNK_MAX_EVENTS records");
        let mut out = Vec::with_capacity(2 + 4 * self.ends.len() + self.records.len());
        out.extend_from_slice(&n.to_le_bytes());
        self.ends.drain(..).for_each(|e| out.extend_from_slice(&e.to_le_bytes()));
        out.append(&mut self.records);
        out
    }
}

/// A stored chunk, validated on open so that `get` cannot read out of bounds.
pub struct Chunk<'a> {
    ends: &'a [u8],
    records: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt event chunk")]
pub struct CorruptChunk;

impl<'a> Chunk<'a> {
    /// The chunk's two parts, its offsets not checked yet.
    fn split(bytes: &'a [u8]) -> Result<Chunk<'a>, CorruptChunk> {
        let (n, rest) = bytes.split_first_chunk::<2>().ok_or(CorruptChunk)?;
        let n = usize::from(u16::from_le_bytes(*n));
        let (ends, records) = rest.split_at_checked(4 * n).ok_or(CorruptChunk)?;
        Ok(Chunk { ends, records })
    }
    pub fn open(bytes: &'a [u8]) -> Result<Chunk<'a>, CorruptChunk> {
        let chunk = Chunk::split(bytes)?;
        let mut previous = 0;
        for i in 0..chunk.len() {
            let end = chunk.end(i);
            if end < previous || end > chunk.records.len() {
                return Err(CorruptChunk);
            }
            previous = end;
        }
        Ok(chunk)
    }
    pub fn len(&self) -> usize {
        self.ends.len() / 4
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    fn end(&self, i: usize) -> usize {
        let b = &self.ends[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }
    /// The `i`-th record's bytes.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        if i >= self.len() {
            return None;
        }
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        Some(&self.records[start..self.end(i)])
    }
}

/// The `i`-th record of an encoded chunk, reading and checking only its two
/// offsets (for a chunk already opened once: `Chunk::open` checks them all).
pub fn record_in(bytes: &[u8], i: usize) -> Result<Option<&[u8]>, CorruptChunk> {
    let chunk = Chunk::split(bytes)?;
    if i >= chunk.len() {
        return Ok(None);
    }
    let start = if i == 0 { 0 } else { chunk.end(i - 1) };
    chunk.records.get(start..chunk.end(i)).map(Some).ok_or(CorruptChunk)
}

/// A run of seqs (a `TOPIC_RUNS` value): little-endian u64s.
pub fn encode_seqs(seqs: &[u64]) -> Vec<u8> {
    seqs.iter().flat_map(|s| s.to_le_bytes()).collect()
}

pub fn decode_seqs(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_refuse_corruption() {
        let mut builder = ChunkBuilder::default();
        for r in [&b"abc"[..], b"", b"defg"] {
            builder.push(r);
        }
        let bytes = builder.take();
        assert!(builder.is_empty());
        let chunk = Chunk::open(&bytes).unwrap();
        assert_eq!(
            (chunk.len(), chunk.get(0), chunk.get(1), chunk.get(2)),
            (3, Some(&b"abc"[..]), Some(&b""[..]), Some(&b"defg"[..]))
        );
        assert_eq!(chunk.get(3), None);
        for i in 0..4 {
            assert_eq!(record_in(&bytes, i).unwrap(), chunk.get(i), "record {i} read alone");
        }
        assert!(record_in(&bytes[..bytes.len() - 1], 2).is_err(), "its end is past the bytes");
        assert!(Chunk::open(&bytes[..bytes.len() - 1]).is_err());
        assert!(Chunk::open(&[9]).is_err());
    }

    #[test]
    fn a_chunk_ends_before_it_would_pass_its_byte_or_record_limit() {
        let mut chunk = ChunkBuilder::default();
        assert!(chunk.fits(CHUNK_MAX_BYTES * 2), "an empty chunk takes any record");
        while chunk.fits(150) {
            chunk.push(&[7; 150]);
        }
        let full = chunk.take();
        assert!(full.len() <= CHUNK_MAX_BYTES && full.len() + 154 > CHUNK_MAX_BYTES, "{}", full.len());
        while chunk.fits(1) {
            chunk.push(&[1]);
        }
        assert_eq!(chunk.len(), CHUNK_MAX_EVENTS);
    }

    #[test]
    fn seq_runs_round_trip() {
        let seqs = [1, 7, u64::MAX];
        assert_eq!(decode_seqs(&encode_seqs(&seqs)).collect::<Vec<_>>(), seqs);
    }

    #[test]
    fn round_trip_keeps_every_byte() {
        let record = Record {
            topic: "sensor.room1.temp",
            event_id: "b7c1-\u{e9}",
            timestamp: "2026-11-21T10:00:00+07:00",
            source: "",
            payload: r#"{ "t": 31.40, "h": [80] }"#,
            received_at_us: 1_795_000_000_123_456,
        };
        let bytes = encode(&record);
        assert_eq!(decode(&bytes).unwrap(), record);
        assert_eq!(decode_key(&bytes).unwrap(), (record.topic, record.event_id), "the key alone");
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let bytes = encode(&Record {
            topic: "t",
            event_id: "1",
            timestamp: "x",
            source: "s",
            payload: "{}",
            received_at_us: -1,
        });
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
    }
}
