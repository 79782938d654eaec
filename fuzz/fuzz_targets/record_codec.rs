//! The on-disk record and chunk codecs on arbitrary bytes (a torn or corrupt page):
//! decoding never panics or reads out of bounds, and whatever decodes re-encodes
//! to a record that decodes to the same fields.
#![no_main]

use event_aggregator::internals::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = codec::decode(data) {
        let again = codec::encode(&record);
        assert_eq!(codec::decode(&again).expect("re-encoded record decodes"), record);
    }
    if let Ok(chunk) = codec::Chunk::open(data) {
        for i in 0..=chunk.len() {
            if let Some(bytes) = chunk.get(i) {
                let _ = codec::decode(bytes);
            } else {
                assert_eq!(i, chunk.len(), "every record below len is there");
            }
        }
    }
    let _ = codec::decode_seqs(data).count();
});
