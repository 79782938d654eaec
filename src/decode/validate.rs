//! The field rules of `event` applied to one wire item, collecting every broken
//! rule of the item before giving up on it.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::Limits;
use super::wire::{Field, WireItem};
use crate::event::{self, Event, FieldError, FieldErrorKind, Rule};

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

impl<'a> WireItem<'a> {
    /// The event, borrowing its fields from the body (and `now`, the timestamp
    /// of an event without one).
    pub(super) fn validate(
        self,
        index: usize,
        limits: &Limits,
        now: &'a str,
    ) -> Result<Event<'a>, Vec<FieldError>> {
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
                topic,
                event_id,
                timestamp: timestamp.unwrap_or(Cow::Borrowed(now)),
                source: source.unwrap_or_default(),
                payload: Cow::Borrowed(payload.unwrap_or("{}")),
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
