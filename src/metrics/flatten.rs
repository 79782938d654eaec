//! A serde `Serializer` that turns a wire body (the `/stats` body) into metric
//! figures: every field wrapped in `stats::Counter` or `stats::Gauge` becomes one
//! figure named by its path (`dedup.filter_negatives` → `dedup_filter_negatives`);
//! a map of counters becomes one labelled family (`requests_rejected{reason}`).
//! Plain fields (strings, lists, unwrapped numbers) are not metrics and are skipped.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, SerializeMap, SerializeStruct};

/// Prometheus kind of a figure, from the newtype that wraps its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// One figure of a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Field path joined with `_`.
    pub name: String,
    pub kind: Kind,
    pub value: Value,
    /// The `reason` label, for figures that come from a map.
    pub reason: Option<String>,
}

/// Label name of the figures that come from a map's entries.
pub const MAP_LABEL: &str = "reason";

/// Every figure of `body`, in field order.
pub fn flatten<T: Serialize>(body: &T) -> Vec<Figure> {
    let mut flattener = Flattener::default();
    body.serialize(&mut flattener).expect("flattening only skips what it cannot use");
    flattener.out
}

#[derive(Default)]
struct Flattener {
    out: Vec<Figure>,
    path: Vec<String>,
    kind: Option<Kind>,
    reason: Option<String>,
}

impl Flattener {
    fn emit(&mut self, value: Value) {
        if let Some(kind) = self.kind {
            let name = self.path.join("_");
            self.out.push(Figure { name, kind, value, reason: self.reason.clone() });
        }
    }
}

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}
impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Ignores a value the flattener has no use for (sequences, tuples, variants).
struct Skip;

macro_rules! skip_compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Skip {
            type Ok = ();
            type Error = Error;
            fn $method<T: ?Sized + Serialize>(&mut self, _: &T) -> Result<(), Error> {
                Ok(())
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
    )*};
}
skip_compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeStructVariant for Skip {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, _: &T) -> Result<(), Error> {
        Ok(())
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

macro_rules! skip_scalars {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method(self, _: $ty) -> Result<(), Error> {
            Ok(())
        }
    )*};
}

macro_rules! int_scalars {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method(self, v: $ty) -> Result<(), Error> {
            self.emit(Value::Int(u64::try_from(v).unwrap_or(0)));
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for &'a mut Flattener {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Skip;
    type SerializeTuple = Skip;
    type SerializeTupleStruct = Skip;
    type SerializeTupleVariant = Skip;
    type SerializeMap = MapFlattener<'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Skip;

    int_scalars!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64);
    skip_scalars!(serialize_char: char, serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.emit(Value::Int(u64::from(v)));
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.emit(Value::Float(v));
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    /// `Counter(..)` and `Gauge(..)` set the kind of what they wrap.
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, name: &'static str, v: &T) -> Result<(), Error> {
        let outer = self.kind;
        self.kind = match name {
            "Counter" => Some(Kind::Counter),
            "Gauge" => Some(Kind::Gauge),
            _ => outer,
        };
        let result = v.serialize(&mut *self);
        self.kind = outer;
        result
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Skip, Error> {
        Ok(Skip)
    }
    fn serialize_tuple(self, _: usize) -> Result<Skip, Error> {
        Ok(Skip)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Skip, Error> {
        Ok(Skip)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Skip, Error> {
        Ok(Skip)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapFlattener<'a>, Error> {
        Ok(MapFlattener { flattener: self, key: None })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Skip, Error> {
        Ok(Skip)
    }
}

impl SerializeStruct for &mut Flattener {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, v: &T) -> Result<(), Error> {
        self.path.push(key.to_owned());
        let result = v.serialize(&mut **self);
        self.path.pop();
        result
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// A map's entries become one family: the key is the `reason` label.
pub struct MapFlattener<'a> {
    flattener: &'a mut Flattener,
    key: Option<String>,
}

impl SerializeMap for MapFlattener<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        let key = serde_json::to_value(key).map_err(ser::Error::custom)?;
        self.key = key.as_str().map(str::to_owned);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Error> {
        let outer = std::mem::replace(&mut self.flattener.reason, self.key.take());
        let result = v.serialize(&mut *self.flattener);
        self.flattener.reason = outer;
        result
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stats::{Counter, Gauge};

    #[derive(Serialize)]
    struct Inner {
        hits: Counter,
        ratio: Gauge<f64>,
    }

    #[derive(Serialize)]
    struct Body {
        received: Counter,
        running: Gauge<bool>,
        uptime: f64,
        topics: Vec<String>,
        inner: Inner,
        by_reason: BTreeMap<String, Counter>,
    }

    #[test]
    fn wrapped_fields_become_figures_named_by_their_path() {
        let body = Body {
            received: Counter(3),
            running: Gauge(true),
            uptime: 1.5,
            topics: vec!["a".into()],
            inner: Inner { hits: Counter(7), ratio: Gauge(0.25) },
            by_reason: BTreeMap::from([("bad".to_owned(), Counter(2))]),
        };
        let figures: Vec<_> =
            flatten(&body).into_iter().map(|f| (f.name, f.kind, f.value, f.reason)).collect();
        assert_eq!(
            figures,
            vec![
                ("received".into(), Kind::Counter, Value::Int(3), None),
                ("running".into(), Kind::Gauge, Value::Int(1), None),
                ("inner_hits".into(), Kind::Counter, Value::Int(7), None),
                ("inner_ratio".into(), Kind::Gauge, Value::Float(0.25), None),
                ("by_reason".into(), Kind::Counter, Value::Int(2), Some("bad".into())),
            ]
        );
        // The wrappers are invisible on the wire.
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!((json["received"].as_u64(), json["inner"]["ratio"].as_f64()), (Some(3), Some(0.25)));
    }
}
