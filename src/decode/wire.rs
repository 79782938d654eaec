//! The accepted JSON shapes, read leniently: every field is taken as it comes
//! (absent, null, a string, or some other JSON type) so that validation can name
//! each bad one. Strings borrow from the body unless they carry escapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// One field as found on the wire, before the rules are applied.
#[derive(Debug, Default)]
pub(super) enum Field<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    Other(&'static str),
}

/// One element of a batch: an object with the event fields, or something else.
#[derive(Debug)]
pub(super) enum WireItem<'a> {
    Event(WireEvent<'a>),
    NotObject(&'static str),
}

#[derive(Debug, Default)]
pub(super) struct WireEvent<'a> {
    pub(super) topic: Field<'a>,
    pub(super) event_id: Field<'a>,
    pub(super) timestamp: Field<'a>,
    pub(super) source: Field<'a>,
    pub(super) payload: Option<&'a RawValue>,
    /// Only meaningful at the top level: `{"events": [...]}`.
    pub(super) events: Option<&'a RawValue>,
}

pub(super) enum TopLevel<'a> {
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

/// A JSON array of items. The `Vec` is sized from the text's length up front:
/// one slot per 128 bytes (events of the usual shape take 150–300; smaller
/// ones grow it as before), at most `max_items + 1` (one past the batch limit,
/// which `decode` then refuses by count). serde's own `Vec` starts empty and
/// doubles: ~10 copies, and fresh pages, for 1000 items.
pub(super) fn parse_array(text: &str, max_items: usize) -> serde_json::Result<Vec<WireItem<'_>>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let capacity = (text.len() / 128).min(max_items.saturating_add(1));
    let items = ItemsSeed(capacity).deserialize(&mut de)?;
    de.end()?;
    Ok(items)
}

struct ItemsSeed(usize);

impl<'de> DeserializeSeed<'de> for ItemsSeed {
    type Value = Vec<WireItem<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed {
    type Value = Vec<WireItem<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut items = Vec::with_capacity(self.0);
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
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
