//! Request bodies to validated events: content negotiation, bounded decompression,
//! the accepted JSON shapes (object, array, `{"events": [...]}`, NDJSON) and the
//! field rules of `event`.
//!
//! Called by `http::publish`. Pure and sync. It promises that a body either
//! becomes a complete `Vec<Event>` or is refused as a whole, with every bad
//! index and field named; it never stops at the first bad event.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{self, Event, FieldError, FieldErrorKind, Rule};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
}

impl BodyFormat {
    /// A missing Content-Type is taken as JSON (as the seed clients expect).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, DecodeError> {
        let Some(raw) = content_type else {
            return Ok(BodyFormat::Json);
        };
        let mime = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/json" | "text/json" => Ok(BodyFormat::Json),
            m if m.starts_with("application/") && m.ends_with("+json") => Ok(BodyFormat::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Ok(BodyFormat::Ndjson),
            _ => Err(DecodeError::UnsupportedType(raw.to_owned())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    pub fn from_header(content_encoding: Option<&str>) -> Result<Self, DecodeError> {
        match content_encoding.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
            Some("zstd") => Ok(Encoding::Zstd),
            Some(_) => Err(DecodeError::UnsupportedEncoding(content_encoding.unwrap_or_default().to_owned())),
        }
    }
}

/// Why a body was refused. `http::error` maps each variant to its status.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error("NDJSON line {line} is not valid JSON: {reason}")]
    MalformedLine { line: usize, reason: String },
    #[error("body could not be decompressed: {0}")]
    Corrupt(String),
    #[error("body must be an event object, an array of events, or {{\"events\": [...]}}")]
    NotEvents,
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("batch has {len} events, more than the limit of {limit}")]
    BatchTooLarge { len: usize, limit: usize },
    #[error("{} field(s) failed validation; nothing was stored", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("unsupported Content-Type {0:?}; use application/json or application/x-ndjson")]
    UnsupportedType(String),
    #[error("unsupported Content-Encoding {0:?}; use gzip or zstd")]
    UnsupportedEncoding(String),
}

/// Undo `Content-Encoding`, refusing output past `limit` bytes (a zip bomb stops there).
pub fn decompress<'a>(
    encoding: Encoding,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let reader: Box<dyn Read + 'a> = match encoding {
        Encoding::Identity => return Ok(Cow::Borrowed(body)),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(body).map_err(|e| DecodeError::Corrupt(e.to_string()))?,
        ),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::BodyTooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

/// Decode and validate a whole (decompressed) body. `now` is the timestamp given to
/// events that carry none.
pub fn decode(
    format: BodyFormat,
    body: &[u8],
    limits: &Limits,
    now: &str,
) -> Result<Vec<Event>, DecodeError> {
    let items = match format {
        BodyFormat::Json => parse_json(body)?,
        BodyFormat::Ndjson => parse_ndjson(body)?,
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

fn parse_json(body: &[u8]) -> Result<Vec<WireItem<'_>>, DecodeError> {
    let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).map_err(malformed),
        Some(b'{') => {
            let top: TopLevel<'_> = serde_json::from_slice(body).map_err(malformed)?;
            match top {
                TopLevel::Batch(raw) => {
                    if !raw.get().starts_with('[') {
                        return Err(DecodeError::NotEvents);
                    }
                    serde_json::from_str(raw.get()).map_err(malformed)
                }
                TopLevel::Single(item) => Ok(vec![item]),
            }
        }
        // Valid JSON of another type is a shape error (422); anything else is 400.
        _ => match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => Err(DecodeError::NotEvents),
            Err(e) => Err(malformed(e)),
        },
    }
}

fn parse_ndjson(body: &[u8]) -> Result<Vec<WireItem<'_>>, DecodeError> {
    let mut items = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let item = serde_json::from_slice(line)
            .map_err(|e| DecodeError::MalformedLine { line: i + 1, reason: e.to_string() })?;
        items.push(item);
    }
    Ok(items)
}

/// One field as found on the wire, before the rules are applied.
#[derive(Debug, Default)]
enum Field<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    Other(&'static str),
}

/// One element of a batch: an object with the event fields, or something else.
#[derive(Debug)]
enum WireItem<'a> {
    Event(WireEvent<'a>),
    NotObject(&'static str),
}

#[derive(Debug, Default)]
struct WireEvent<'a> {
    topic: Field<'a>,
    event_id: Field<'a>,
    timestamp: Field<'a>,
    source: Field<'a>,
    payload: Option<&'a RawValue>,
    /// Only meaningful at the top level: `{"events": [...]}`.
    events: Option<&'a RawValue>,
}

enum TopLevel<'a> {
    Single(WireItem<'a>),
    Batch(&'a RawValue),
}

impl<'de: 'a, 'a> Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match WireItem::deserialize(d)? {
            WireItem::Event(WireEvent { topic: Field::Absent, events: Some(raw), .. }) => {
                TopLevel::Batch(raw)
            }
            item => TopLevel::Single(item),
        })
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum FieldName {
    Topic,
    EventId,
    Timestamp,
    Source,
    Payload,
    Events,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for WireItem<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor(std::marker::PhantomData))
    }
}

struct ItemVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ItemVisitor<'a> {
    type Value = WireItem<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut ev = WireEvent::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            match name {
                FieldName::Topic => ev.topic = map.next_value()?,
                FieldName::EventId => ev.event_id = map.next_value()?,
                FieldName::Timestamp => ev.timestamp = map.next_value()?,
                FieldName::Source => ev.source = map.next_value()?,
                FieldName::Payload => ev.payload = Some(map.next_value()?),
                FieldName::Events => ev.events = Some(map.next_value()?),
                FieldName::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(WireItem::Event(ev))
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(WireItem::NotObject("array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(WireItem::NotObject("string"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(WireItem::NotObject("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(WireItem::NotObject("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(WireItem::NotObject("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(WireItem::NotObject("number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(WireItem::NotObject("null"))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

struct FieldVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FieldVisitor<'a> {
    type Value = Field<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Field::Other("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Field::Other("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Field::Other("number"))
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other("array"))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other("object"))
    }
}

/// Collects the errors of one event.
struct Errors {
    index: usize,
    list: Vec<FieldError>,
}

impl Errors {
    fn add(&mut self, field: &'static str, reason: impl Into<Cow<'static, str>>) {
        self.add_kind(field, reason, FieldErrorKind::Invalid);
    }
    fn add_kind(&mut self, field: &'static str, reason: impl Into<Cow<'static, str>>, kind: FieldErrorKind) {
        let reason = reason.into();
        self.list.push(FieldError { index: self.index, field, reason, kind });
    }

    /// A string field: `Ok(None)` when absent or null.
    fn string<'a>(
        &mut self,
        field: &'static str,
        value: Field<'a>,
        required: bool,
        rule: fn(&str) -> Result<(), Rule>,
    ) -> Option<Cow<'a, str>> {
        match value {
            Field::Absent | Field::Null if required => self.add(field, "field required"),
            Field::Absent | Field::Null => {}
            Field::Other(kind) => self.add(field, format!("must be a string, got {kind}")),
            Field::Str(s) => match rule(&s) {
                Ok(()) => return Some(s),
                Err(reason) => self.add(field, reason),
            },
        }
        None
    }
}

impl WireItem<'_> {
    fn validate(self, index: usize, limits: &Limits, now: &str) -> Result<Event, Vec<FieldError>> {
        let mut errs = Errors { index, list: Vec::new() };
        let ev = match self {
            WireItem::Event(ev) => ev,
            WireItem::NotObject(kind) => {
                errs.add("event", format!("must be a JSON object, got {kind}"));
                return Err(errs.list);
            }
        };
        let topic = errs.string("topic", ev.topic, true, event::check_topic);
        let event_id = errs.string("event_id", ev.event_id, true, event::check_event_id);
        let timestamp = errs.string("timestamp", ev.timestamp, false, event::check_timestamp);
        let source = errs.string("source", ev.source, false, event::check_source);
        let payload = check_payload(&mut errs, ev.payload, limits.max_payload_bytes);
        match (topic, event_id, errs.list.is_empty()) {
            (Some(topic), Some(event_id), true) => Ok(Event {
                topic: topic.into_owned(),
                event_id: event_id.into_owned(),
                timestamp: timestamp.map_or_else(|| now.to_owned(), Cow::into_owned),
                source: source.map(Cow::into_owned).unwrap_or_default(),
                payload: payload.unwrap_or("{}").to_owned(),
            }),
            _ => Err(errs.list),
        }
    }
}

fn check_payload<'a>(errs: &mut Errors, raw: Option<&'a RawValue>, max: usize) -> Option<&'a str> {
    let text = raw?.get();
    if text == "null" {
        return None;
    }
    if !text.starts_with('{') {
        errs.add("payload", "must be a JSON object");
    } else if text.len() > max {
        errs.add_kind("payload", format!("is larger than {max} bytes"), FieldErrorKind::TooLarge);
    } else {
        return Some(text);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_body_bytes: 1 << 20, max_batch_events: 100, max_payload_bytes: 64 };
    const NOW: &str = "2026-11-21T00:00:00Z";

    fn json(body: &str) -> Result<Vec<Event>, DecodeError> {
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
        assert_eq!((evs[0].topic.as_str(), evs[0].event_id.as_str()), ("café", "a\"b"));
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

    #[test]
    fn content_negotiation() {
        assert_eq!(BodyFormat::from_content_type(None).unwrap(), BodyFormat::Json);
        let ct = Some("application/json; charset=utf-8");
        assert_eq!(BodyFormat::from_content_type(ct).unwrap(), BodyFormat::Json);
        let ct = Some("application/x-ndjson");
        assert_eq!(BodyFormat::from_content_type(ct).unwrap(), BodyFormat::Ndjson);
        assert!(BodyFormat::from_content_type(Some("text/plain")).is_err());
        assert_eq!(Encoding::from_header(Some("GZIP")).unwrap(), Encoding::Gzip);
        assert!(Encoding::from_header(Some("br")).is_err());
    }

    #[test]
    fn decompression_is_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b' '; 10_000]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(Encoding::Gzip, &gz, 10_000).unwrap().len(), 10_000);
        assert!(matches!(decompress(Encoding::Gzip, &gz, 9_999), Err(DecodeError::BodyTooLarge { .. })));
        let zst =
            ruzstd::encoding::compress_to_vec(&b"hello"[..], ruzstd::encoding::CompressionLevel::Fastest);
        assert_eq!(&*decompress(Encoding::Zstd, &zst, 100).unwrap(), b"hello");
        assert!(matches!(decompress(Encoding::Gzip, b"junk", 100), Err(DecodeError::Corrupt(_))));
    }
}
