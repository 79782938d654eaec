//! The event model: the validated [`Event`], its dedup [`EventKey`], and the
//! validation rules of the HTTP contract.
//!
//! Called by `decode` (which turns wire fields into `Event`s) and by `ingest`
//! (which turns events into keys and records). Everything here is pure and sync.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime};

/// Longest `topic`, `event_id` and `source`, in bytes (CONTRACT.md).
pub const MAX_FIELD_BYTES: usize = 255;

/// A position in the global arrival order. Assigned by the writer, starting at 1;
/// `Seq(0)` is "before everything", the cursor of a first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

/// A validated event, ready to be keyed and stored. Field values are kept exactly
/// as sent, borrowed from the request body (owned only where the JSON string had
/// escapes, or once [`Event::into_owned`] copied them): nothing of an event is
/// copied before its duplicate decision, and a duplicate is never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub topic: Cow<'a, str>,
    pub event_id: Cow<'a, str>,
    /// The original timestamp string, or the server's receive time when absent.
    pub timestamp: Cow<'a, str>,
    pub source: Cow<'a, str>,
    /// The payload object's raw JSON text, byte-for-byte as sent (`{}` when absent).
    pub payload: Cow<'a, str>,
}

impl Event<'_> {
    /// The same event, owning its text (for a body decoded on a blocking thread).
    pub fn into_owned(self) -> Event<'static> {
        Event {
            topic: Cow::Owned(self.topic.into_owned()),
            event_id: Cow::Owned(self.event_id.into_owned()),
            timestamp: Cow::Owned(self.timestamp.into_owned()),
            source: Cow::Owned(self.source.into_owned()),
            payload: Cow::Owned(self.payload.into_owned()),
        }
    }
}

/// The dedup key's parts as a request holds them, borrowed, with their hash:
/// what the window is probed with, so that a duplicate it decides costs no
/// allocation. An [`EventKey`] is made from it only for a key to be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    pub hash: u64,
    pub topic: &'a str,
    pub event_id: &'a str,
}

impl<'a> From<&'a EventKey> for KeyRef<'a> {
    fn from(key: &'a EventKey) -> Self {
        KeyRef { hash: key.hash, topic: key.topic(), event_id: key.event_id() }
    }
}

impl From<KeyRef<'_>> for EventKey {
    fn from(key: KeyRef<'_>) -> Self {
        EventKey::with_hash(key.hash, key.topic, key.event_id)
    }
}

/// The dedup key `(topic, event_id)`, compared by exact bytes, with its 64-bit hash
/// precomputed once. Both parts live in ONE shared allocation (`topic` then
/// `event_id`), so cloning is a reference-count bump: the in-flight map, the
/// request's claims and its queued records all share it. (The window of stored
/// keys copies the bytes into its arena instead.)
#[derive(Clone)]
pub struct EventKey {
    hash: u64,
    /// Length of the topic: where the event id starts in `text`.
    split: u32,
    text: Arc<str>,
}

impl EventKey {
    pub fn new(hasher: KeyHasher, topic: impl AsRef<str>, event_id: impl AsRef<str>) -> Self {
        let (topic, event_id) = (topic.as_ref(), event_id.as_ref());
        EventKey::with_hash(hasher.hash(topic, event_id), topic, event_id)
    }
    fn with_hash(hash: u64, topic: &str, event_id: &str) -> Self {
        let split = u32::try_from(topic.len()).expect("topics are validated to at most 255 bytes");
        let mut text = String::with_capacity(topic.len() + event_id.len());
        text.push_str(topic);
        text.push_str(event_id);
        EventKey { hash, split, text: text.into() }
    }
    /// A key with a chosen hash: two different keys with one hash, to test
    /// that lookups compare bytes.
    #[cfg(test)]
    pub fn with_hash_for_tests(hash: u64, topic: &str, event_id: &str) -> Self {
        EventKey::with_hash(hash, topic, event_id)
    }
    /// Its parts, borrowed (what the window compares).
    pub fn parts(&self) -> KeyRef<'_> {
        KeyRef::from(self)
    }
    /// The seeded hash: what the Bloom filter and the on-disk index are keyed by.
    pub fn hash(&self) -> u64 {
        self.hash
    }
    pub fn topic(&self) -> &str {
        &self.text[..self.split as usize]
    }
    pub fn event_id(&self) -> &str {
        &self.text[self.split as usize..]
    }
}

impl PartialEq for EventKey {
    /// Clones of one key (the common case in the in-flight map) compare without
    /// reading the text.
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.split == other.split
            && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}
impl Eq for EventKey {}

impl Hash for EventKey {
    /// Only the precomputed hash: equal keys have equal hashes by construction.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:?}, {:?})", self.topic(), self.event_id())
    }
}

/// Hashes `(topic, event_id)` with xxh3 under a per-database seed. The seed is
/// random per data directory and stored with the data, so the on-disk index
/// stays valid across restarts while nobody can precompute colliding keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    pub fn new(seed: u64) -> Self {
        KeyHasher { seed }
    }
    /// The key `(topic, event_id)` with its hash, borrowing both parts.
    pub fn key<'a>(&self, topic: &'a str, event_id: &'a str) -> KeyRef<'a> {
        KeyRef { hash: self.hash(topic, event_id), topic, event_id }
    }
    /// Chained: the topic's hash seeds the event id's, so `("ab", "c")` and
    /// `("a", "bc")` are different keys.
    pub fn hash(&self, topic: &str, event_id: &str) -> u64 {
        use xxhash_rust::xxh3::xxh3_64_with_seed;
        let topic_hash = xxh3_64_with_seed(topic.as_bytes(), self.seed);
        xxh3_64_with_seed(event_id.as_bytes(), topic_hash)
    }
}

/// A `Hasher` that passes the precomputed key hash through (for the in-flight map).
#[derive(Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `EventKey` is hashed: fold it in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type BuildKeyHasher = BuildHasherDefault<PassThroughHasher>;

/// Why one field of one event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Position of the event in the request (0-based).
    pub index: usize,
    pub field: &'static str,
    pub reason: Cow<'static, str>,
    pub kind: FieldErrorKind,
}

/// 422 for a broken rule, 413 for a value over its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Invalid,
    TooLarge,
}

/// A rule a string field broke. Static text: the hot path does not format.
pub type Rule = &'static str;

/// `topic`: 1..=255 bytes after trimming, no whitespace or control characters.
pub fn check_topic(topic: &str) -> Result<(), Rule> {
    check_key_part(topic)?;
    if topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

/// `event_id`: 1..=255 bytes after trimming, no control characters.
pub fn check_event_id(event_id: &str) -> Result<(), Rule> {
    check_key_part(event_id)?;
    if event_id.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

fn check_key_part(value: &str) -> Result<(), Rule> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("must not be empty");
    }
    if trimmed.len() > MAX_FIELD_BYTES {
        return Err("must be at most 255 bytes");
    }
    Ok(())
}

/// `source`: at most 255 bytes.
pub fn check_source(source: &str) -> Result<(), Rule> {
    if source.len() > MAX_FIELD_BYTES {
        return Err("must be at most 255 bytes");
    }
    Ok(())
}

/// `timestamp`: an ISO 8601 / RFC 3339 date-time with `Z`, an offset, or naive
/// (taken as UTC); fractional seconds allowed. The string itself is kept as sent.
pub fn check_timestamp(timestamp: &str) -> Result<(), Rule> {
    const NAIVE: [&str; 4] =
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
    let s = timestamp.trim();
    let ok = s.len() <= 64
        && (DateTime::parse_from_rfc3339(s).is_ok()
            || DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").is_ok()
            || NAIVE.iter().any(|f| NaiveDateTime::parse_from_str(s, f).is_ok()));
    if ok { Ok(()) } else { Err("must be an ISO 8601 date-time, e.g. 2026-11-21T10:00:00Z") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_rules() {
        assert!(check_topic("sensor.room1.temp").is_ok());
        assert!(check_topic("Sensor.Room1").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("   ").is_err());
        assert!(check_topic("a b").is_err());
        assert!(check_topic(" a").is_err());
        assert!(check_topic("a\u{7}").is_err());
        assert!(check_topic(&"x".repeat(255)).is_ok());
        assert!(check_topic(&"x".repeat(256)).is_err());
    }

    #[test]
    fn event_id_rules() {
        assert!(check_event_id("b7c1-42").is_ok());
        assert!(check_event_id("with inner space").is_ok());
        assert!(check_event_id(" \t ").is_err());
        assert!(check_event_id("a\nb").is_err());
        assert!(check_event_id(&"é".repeat(128)).is_err(), "256 bytes");
    }

    #[test]
    fn timestamp_forms() {
        for ok in [
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.123456Z",
            "2026-11-21T10:00:00+07:00",
            "2026-11-21T10:00:00-0230",
            "2026-11-21T10:00:00",
            "2026-11-21 10:00:00.5",
            "2026-11-21T10:00",
        ] {
            assert!(check_timestamp(ok).is_ok(), "{ok}");
        }
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-21", "1700000000"] {
            assert!(check_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_equality_is_exact_bytes_and_topic_scoped() {
        let h = KeyHasher::new(7);
        let a = EventKey::new(h, "t", "id-1");
        assert_eq!(a, EventKey::new(h, "t", "id-1"));
        assert_ne!(a, EventKey::new(h, "t", "ID-1"));
        assert_ne!(a, EventKey::new(h, "u", "id-1"));
        assert_ne!(h.hash("ab", "c"), h.hash("a", "bc"));
        assert_ne!(KeyHasher::new(8).hash("t", "id-1"), a.hash());
    }

    #[test]
    fn a_borrowed_key_and_its_owned_copy_are_the_same_key() {
        let h = KeyHasher::new(7);
        let borrowed = h.key("t", "id-1");
        let owned = EventKey::from(borrowed);
        assert_eq!(owned, EventKey::new(h, "t", "id-1"));
        assert_eq!(owned.parts(), borrowed);
    }
}
