//! The on-disk record of one event, encoded with bincode 2 (standard config:
//! varint integers, length-prefixed strings). Decoding borrows from the page,
//! so the read path copies nothing it does not send.

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

/// A run of seqs (a `TOPIC_EVENTS` value): little-endian u64s.
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
