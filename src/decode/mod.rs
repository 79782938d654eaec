//! Request bodies to validated events, split by step:
//! - [`content`]: content negotiation and bounded decompression;
//! - `wire`: the accepted JSON shapes (object, array, `{"events": [...]}`,
//!   NDJSON) read leniently, so that every bad field can be named;
//! - `validate`: the field rules of `event`, applied to each wire item.
//!
//! Called by `http::publish`. Pure and sync. It promises that a body either
//! becomes a complete `Vec<Event>` or is refused as a whole, with every bad
//! index and field named; it never stops at the first bad event. The events
//! borrow their text from the body: decoding copies no field without escapes.

mod content;
mod validate;
mod wire;

use serde::de::IgnoredAny;

pub use content::{BodyFormat, ContentError, Encoding, decompress};

use crate::event::{Event, FieldError};
use wire::{TopLevel, WireItem};

/// Size limits a client controls, all in bytes or events.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, both as received and after decompression.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_batch_events: usize,
    /// Largest `payload`, as raw JSON text.
    pub max_payload_bytes: usize,
}

/// Why a decompressed body was refused. `http::error` maps each variant to its status.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error("NDJSON line {line} is not valid JSON: {reason}")]
    MalformedLine { line: usize, reason: String },
    #[error("body must be an event object, an array of events, or {{\"events\": [...]}}")]
    NotEvents,
    #[error("batch has {len} events, more than the limit of {limit}")]
    BatchTooLarge { len: usize, limit: usize },
    #[error("{} field(s) failed validation; nothing was stored", .0.len())]
    Invalid(Vec<FieldError>),
}

/// Decode and validate a whole (decompressed) body. `now` is the timestamp given to
/// events that carry none.
pub fn decode<'a>(
    format: BodyFormat,
    body: &'a [u8],
    limits: &Limits,
    now: &'a str,
) -> Result<Vec<Event<'a>>, DecodeError> {
    // UTF-8 is checked once for the whole body: serde_json's reader of bytes
    // checks each string again (keys included), ~8 % of a replay's CPU.
    let text = std::str::from_utf8(body).map_err(|e| not_utf8(format, body, e))?;
    let items = match format {
        BodyFormat::Json => parse_json(text, limits.max_batch_events)?,
        BodyFormat::Ndjson => parse_ndjson(text)?,
    };
    if items.len() > limits.max_batch_events {
        return Err(DecodeError::BatchTooLarge { len: items.len(), limit: limits.max_batch_events });
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match item.validate(index, limits, now) {
            Ok(event) if errors.is_empty() => events.push(event),
            Ok(_) => {}
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() { Ok(events) } else { Err(DecodeError::Invalid(errors)) }
}

/// The error serde_json would have given: a malformed body, or line.
fn not_utf8(format: BodyFormat, body: &[u8], e: std::str::Utf8Error) -> DecodeError {
    let at = e.valid_up_to();
    let reason = format!("invalid UTF-8 at byte {at}");
    match format {
        BodyFormat::Json => DecodeError::Malformed(reason),
        BodyFormat::Ndjson => {
            let line = 1 + body[..at].iter().filter(|&&b| b == b'\n').count();
            DecodeError::MalformedLine { line, reason }
        }
    }
}

fn parse_json(text: &str, max_items: usize) -> Result<Vec<WireItem<'_>>, DecodeError> {
    let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    match text.bytes().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => wire::parse_array(text, max_items).map_err(malformed),
        Some(b'{') => {
            let top: TopLevel<'_> = serde_json::from_str(text).map_err(malformed)?;
            match top {
                TopLevel::Batch(raw) => {
                    if !raw.get().starts_with('[') {
                        return Err(DecodeError::NotEvents);
                    }
                    wire::parse_array(raw.get(), max_items).map_err(malformed)
                }
                TopLevel::Single(item) => Ok(vec![item]),
            }
        }
        // Valid JSON of another type is a shape error (422); anything else is 400.
        _ => match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(DecodeError::NotEvents),
            Err(e) => Err(malformed(e)),
        },
    }
}

fn parse_ndjson(text: &str) -> Result<Vec<WireItem<'_>>, DecodeError> {
    let mut items = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.bytes().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let item = serde_json::from_str(line)
            .map_err(|e| DecodeError::MalformedLine { line: i + 1, reason: e.to_string() })?;
        items.push(item);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FieldErrorKind;

    const LIMITS: Limits = Limits { max_body_bytes: 1 << 20, max_batch_events: 100, max_payload_bytes: 64 };
    const NOW: &str = "2026-11-21T00:00:00Z";

    fn json(body: &str) -> Result<Vec<Event<'_>>, DecodeError> {
        decode(BodyFormat::Json, body.as_bytes(), &LIMITS, NOW)
    }

    fn invalid(body: &str) -> Vec<(usize, &'static str)> {
        match json(body) {
            Err(DecodeError::Invalid(errs)) => errs.iter().map(|e| (e.index, e.field)).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn single_object_with_defaults() {
        let evs = json(r#"{"topic":"a.b","event_id":"1","extra":[1,2]}"#).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].timestamp, NOW);
        assert_eq!(evs[0].source, "");
        assert_eq!(evs[0].payload, "{}");
    }

    #[test]
    fn array_and_events_wrapper_are_batches() {
        let one = r#"{"topic":"t","event_id":"1"}"#;
        assert_eq!(json(&format!("[{one},{one}]")).unwrap().len(), 2);
        assert_eq!(json(&format!(r#"{{"events":[{one},{one},{one}]}}"#)).unwrap().len(), 3);
        assert_eq!(json("[]").unwrap().len(), 0);
        assert!(matches!(json(r#"{"events": 5}"#), Err(DecodeError::NotEvents)));
    }

    #[test]
    fn payload_is_kept_byte_for_byte() {
        let payload = r#"{ "b": 1.50, "a" : [true, null], "u": "\u00e9" }"#;
        let body = format!(r#"{{"topic":"t","event_id":"1","payload":{payload}}}"#);
        assert_eq!(json(&body).unwrap()[0].payload, payload);
    }

    #[test]
    fn every_bad_field_is_listed_with_its_index() {
        let body = r#"[{"topic":"ok","event_id":"1"},
                       {"topic":"has space","event_id":""},
                       7,
                       {"topic":"t","event_id":"2","timestamp":"nope","payload":[1]}]"#;
        assert_eq!(
            invalid(body),
            vec![(1, "topic"), (1, "event_id"), (2, "event"), (3, "timestamp"), (3, "payload")]
        );
    }

    #[test]
    fn wrong_types_and_missing_fields() {
        assert_eq!(invalid(r#"{"event_id": 5}"#), vec![(0, "topic"), (0, "event_id")]);
        assert_eq!(invalid(r#"{"topic":"t","event_id":"1","source":{}}"#), vec![(0, "source")]);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let evs = json(r#"{"topic":"caf\u00e9","event_id":"a\"b"}"#).unwrap();
        assert_eq!((&*evs[0].topic, &*evs[0].event_id), ("café", "a\"b"));
    }

    /// Decoding copies nothing but what had escapes: duplicates cost no copy.
    #[test]
    fn fields_borrow_from_the_body_unless_escaped() {
        use std::borrow::Cow;
        let body = r#"{"topic":"t","event_id":"a\"b","timestamp":"2026-11-21T10:00:00Z","payload":{"x":1}}"#;
        let ev = &json(body).unwrap()[0];
        assert!(matches!(ev.topic, Cow::Borrowed("t")));
        assert!(matches!(ev.event_id, Cow::Owned(_)), "unescaped into a copy");
        assert!(matches!(ev.timestamp, Cow::Borrowed(_)) && matches!(ev.payload, Cow::Borrowed(_)));
        assert_eq!(ev.clone().into_owned(), *ev);
    }

    #[test]
    fn oversized_payload_is_a_size_error() {
        let body = format!(r#"{{"topic":"t","event_id":"1","payload":{{"x":"{}"}}}}"#, "y".repeat(80));
        match json(&body) {
            Err(DecodeError::Invalid(errs)) => assert_eq!(errs[0].kind, FieldErrorKind::TooLarge),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batch_limit() {
        let body = format!("[{}]", vec![r#"{"topic":"t","event_id":"1"}"#; 101].join(","));
        assert!(matches!(json(&body), Err(DecodeError::BatchTooLarge { len: 101, .. })));
    }

    #[test]
    fn malformed_and_non_event_json() {
        assert!(matches!(json("{nope"), Err(DecodeError::Malformed(_))));
        assert!(matches!(json(""), Err(DecodeError::Malformed(_))));
        assert!(matches!(json("42"), Err(DecodeError::NotEvents)));
        assert!(matches!(json(r#""str""#), Err(DecodeError::NotEvents)));
    }

    /// Invalid UTF-8 anywhere is malformed, as serde_json would say of it in a string.
    #[test]
    fn invalid_utf8_is_malformed_and_its_line_named() {
        let body = b"{\"topic\":\"t\",\"event_id\":\"\xff\"}";
        assert!(matches!(decode(BodyFormat::Json, body, &LIMITS, NOW), Err(DecodeError::Malformed(_))));
        let lines = b"{\"topic\":\"t\",\"event_id\":\"1\"}\n{\"topic\":\"t\",\"event_id\":\"\xc3\"}\n";
        assert!(matches!(
            decode(BodyFormat::Ndjson, lines, &LIMITS, NOW),
            Err(DecodeError::MalformedLine { line: 2, .. })
        ));
    }

    #[test]
    fn ndjson_lines_and_bad_line_number() {
        let body = "{\"topic\":\"t\",\"event_id\":\"1\"}\r\n\n{\"topic\":\"t\",\"event_id\":\"2\"}\n";
        assert_eq!(decode(BodyFormat::Ndjson, body.as_bytes(), &LIMITS, NOW).unwrap().len(), 2);
        let bad = "{\"topic\":\"t\",\"event_id\":\"1\"}\n{oops\n";
        assert!(matches!(
            decode(BodyFormat::Ndjson, bad.as_bytes(), &LIMITS, NOW),
            Err(DecodeError::MalformedLine { line: 2, .. })
        ));
    }
}
