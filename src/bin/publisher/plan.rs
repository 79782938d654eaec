//! The publisher's workload, built entirely before the clock starts: which
//! events repeat which, how they are batched, and the request bodies, encoded
//! from the service's own request type (`api::EventIn`).

use std::borrow::Cow;
use std::io::Write;

use bytes::Bytes;
use event_aggregator::api::EventIn;
use serde_json::value::RawValue;

use crate::args::{Args, Format};

/// One request, ready to send.
pub struct Request {
    pub body: Bytes,
    /// Index (into `Plan::keys`) of each event of the request, in order.
    pub events: Vec<u32>,
}

pub struct Plan {
    /// `(topic, event_id)` of every distinct key of the run.
    pub keys: Vec<(String, String)>,
    pub requests: Vec<Request>,
    /// Events that repeat an earlier key of the run.
    pub planned_duplicates: usize,
}

impl Plan {
    pub fn build(args: &Args, run_id: &str) -> Plan {
        let mut rng = fastrand::Rng::with_seed(args.seed);
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut order: Vec<u32> = Vec::with_capacity(args.events);
        let mut planned_duplicates = 0;
        for _ in 0..args.events {
            if !keys.is_empty() && rng.f64() < args.duplicate {
                order.push(rng.u32(..keys.len() as u32));
                planned_duplicates += 1;
            } else {
                let topic = format!("{}.{}", args.topic_prefix, rng.usize(..args.topics.max(1)));
                keys.push((topic, format!("{run_id}-{:08}", keys.len())));
                order.push(keys.len() as u32 - 1);
            }
        }
        let payload = RawValue::from_string(payload(&mut rng, args.payload_bytes)).expect("a JSON object");
        let requests = order
            .chunks(args.batch_size.max(1))
            .map(|chunk| Request { body: body(args, &keys, chunk, &payload), events: chunk.to_vec() })
            .collect();
        Plan { keys, requests, planned_duplicates }
    }
}

fn body(args: &Args, keys: &[(String, String)], events: &[u32], payload: &RawValue) -> Bytes {
    let event = |&i: &u32| {
        let (topic, id) = &keys[i as usize];
        EventIn {
            topic: Cow::Borrowed(topic),
            event_id: Cow::Borrowed(id),
            timestamp: Some(Cow::Borrowed("2026-11-21T10:00:00Z")),
            source: Some(Cow::Borrowed("publisher")),
            payload: Some(payload),
        }
    };
    let mut text = Vec::new();
    match (args.format, args.batch_size) {
        (Format::Ndjson, _) => {
            for e in events {
                serde_json::to_writer(&mut text, &event(e)).expect("writing to a Vec cannot fail");
                text.push(b'\n');
            }
        }
        (Format::Json, 1) => text = to_json(&event(&events[0])),
        (Format::Json, _) => text = to_json(&events.iter().map(event).collect::<Vec<_>>()),
    }
    if !args.gzip {
        return Bytes::from(text);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&text).expect("writing to a Vec cannot fail");
    Bytes::from(gz.finish().expect("writing to a Vec cannot fail"))
}

fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("the wire types always serialize")
}

/// A JSON object of about `bytes` bytes.
fn payload(rng: &mut fastrand::Rng, bytes: usize) -> String {
    let filler: String = (0..bytes.saturating_sub(40)).map(|_| rng.alphanumeric()).collect();
    format!(r#"{{"value":{},"note":"{filler}"}}"#, rng.u32(..1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn plan_has_the_requested_shape_and_is_reproducible() {
        let args =
            Args::parse_from(["publisher", "--events", "1000", "--duplicate", "0.2", "--batch-size", "100"]);
        let a = Plan::build(&args, "run");
        let b = Plan::build(&args, "run");
        assert_eq!(a.requests.len(), 10);
        assert_eq!(a.keys.len() + a.planned_duplicates, 1000);
        assert!((150..250).contains(&a.planned_duplicates), "{}", a.planned_duplicates);
        assert_eq!(a.requests[3].body, b.requests[3].body);
        let first: serde_json::Value = serde_json::from_slice(&a.requests[0].body).unwrap();
        assert_eq!(first.as_array().unwrap().len(), 100);
    }
}
