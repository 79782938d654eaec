//! The publish body decoder on arbitrary bytes: the first byte picks the body
//! format (JSON or NDJSON) and the Content-Encoding (identity, gzip, zstd), the rest
//! is the body. It must never panic, never return more events than the batch
//! limit, and every event it returns must satisfy the contract's field rules.
#![no_main]

use event_aggregator::internals::{BodyFormat, Encoding, Limits, decode, decompress};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits { max_body_bytes: 1 << 20, max_batch_events: 64, max_payload_bytes: 4096 };

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let format = if selector & 1 == 0 { BodyFormat::Json } else { BodyFormat::Ndjson };
    let encoding = match (selector >> 1) % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let Ok(plain) = decompress(encoding, body, LIMITS.max_body_bytes) else { return };
    assert!(plain.len() <= LIMITS.max_body_bytes, "decompression passed its limit");
    let Ok(events) = decode(format, &plain, &LIMITS, "2026-12-01T00:00:00Z") else { return };
    // An empty batch is valid (CONTRACT: 200 with zeros).
    assert!(events.len() <= LIMITS.max_batch_events);
    for e in &events {
        assert!(!e.topic.trim().is_empty() && e.topic.len() <= 255, "topic {:?}", e.topic);
        assert!(!e.event_id.trim().is_empty() && e.event_id.len() <= 255, "event_id {:?}", e.event_id);
        assert!(e.source.len() <= 255 && e.payload.len() <= LIMITS.max_payload_bytes);
        assert!(e.payload.starts_with('{'), "payload is an object: {:?}", e.payload);
    }
});
