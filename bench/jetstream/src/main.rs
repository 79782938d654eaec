//! `jetstream-publisher`: the JetStream side of the comparison with event-aggregator.
//!
//! It measures what a durable, deduplicating JetStream stream does with the aggregator's
//! single-event workload: `--events` JSON events (default 100 000) over `--topics`
//! subjects `events.topic-<i>`, sent by `--concurrency` closed-loop workers (each awaits
//! the PubAck of one message before sending the next), a `--duplicate` fraction of them
//! re-sending an earlier event with the same body and the same `Nats-Msg-Id` header, so
//! the stream's duplicate window must drop them. Every send's latency (publish until
//! PubAck) goes into an HDR histogram.
//!
//! At start the stream `EVENTS` (subjects `events.>`, file storage) is deleted and
//! created again (`--fresh true`, the default), so each run starts empty. At the end one
//! JSON line goes to stdout:
//!
//! ```text
//! {"events":N,"unique":u,"duplicates_acked":d,"stream_messages":m,"seconds":s,
//!  "events_per_second":x,"latency":{"p50_ms":..,"p99_ms":..,"max_ms":..}}
//! ```
//!
//! where `duplicates_acked` counts PubAcks with `duplicate: true` (equal to
//! `events - unique` when dedup works) and `stream_messages` is the stream's message
//! count afterwards (equal to `unique`).
//!
//! Run it against a local server: `scripts/bench-jetstream.sh` starts nats-server in both
//! fsync modes and runs this; or by hand:
//! `cargo run --release -- --url nats://127.0.0.1:4222 --events 20000`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, Subject, header::NATS_MESSAGE_ID};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;

type Error = Box<dyn std::error::Error + Send + Sync>;

const STREAM: &str = "EVENTS";

/// Publishes single events to a JetStream stream with duplicates and reports throughput
/// and PubAck latency as one JSON line. A repeated option takes its last value.
#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Events to send in total, duplicates included.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Closed-loop workers, each with one message in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Number of topics (subjects events.topic-<i>).
    #[arg(long, default_value_t = 16)]
    topics: usize,
    /// Fraction of sends that repeat a random earlier event (same body, same msg id).
    #[arg(long, default_value_t = 0.2)]
    duplicate: f64,
    /// The stream's duplicate window, in seconds; it must outlast the run (an fsync-per-ack
    /// run of 100 000 events can take over a minute on a slow disk).
    #[arg(long, default_value_t = 300)]
    dup_window_secs: u64,
    /// Delete and recreate the stream first, so the run starts empty.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fresh: bool,
    /// Prefix of the event ids (default: the current Unix time in milliseconds).
    #[arg(long)]
    run_id: Option<String>,
    /// Length of the random string in each event's payload.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
}

/// One distinct event, ready to send.
struct Event {
    subject: Subject,
    msg_id: String,
    body: Bytes,
}

/// The whole run, built before the clock starts: the distinct events and the order of
/// the sends (indices into `events`, a repeated index being a duplicate).
struct Plan {
    events: Vec<Event>,
    sends: Vec<usize>,
}

impl Plan {
    fn build(args: &Args, run_id: &str) -> Plan {
        let mut rng = fastrand::Rng::with_seed(42);
        let (mut events, mut sends) = (Vec::new(), Vec::with_capacity(args.events));
        for _ in 0..args.events {
            if !events.is_empty() && rng.f64() < args.duplicate {
                sends.push(rng.usize(..events.len()));
                continue;
            }
            let topic = format!("topic-{}", rng.usize(..args.topics));
            let event_id = format!("{run_id}-{:08}", events.len());
            let data: String = (0..args.payload_bytes).map(|_| rng.alphanumeric()).collect();
            let body = serde_json::json!({
                "topic": topic,
                "event_id": event_id,
                "timestamp": "2026-12-01T00:00:00Z",
                "source": "bench",
                "payload": { "data": data },
            });
            sends.push(events.len());
            events.push(Event {
                subject: Subject::from(format!("events.{topic}")),
                msg_id: format!("{topic}/{event_id}"),
                body: Bytes::from(serde_json::to_vec(&body).expect("JSON")),
            });
        }
        Plan { events, sends }
    }
}

/// What one worker saw: PubAck latencies in microseconds and the acks marked duplicate.
struct Tally {
    latency_us: Histogram<u64>,
    duplicates_acked: u64,
}

/// Sends planned events one at a time, taking the next index from `next`, until none is left.
async fn worker(js: jetstream::Context, plan: Arc<Plan>, next: Arc<AtomicUsize>) -> Result<Tally, Error> {
    let mut tally = Tally { latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)?, duplicates_acked: 0 };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(&e) = plan.sends.get(i) else { return Ok(tally) };
        let event = &plan.events[e];
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, event.msg_id.as_str());
        let start = Instant::now();
        let ack = js.publish_with_headers(event.subject.clone(), headers, event.body.clone()).await?.await?;
        tally.latency_us.saturating_record(start.elapsed().as_micros().max(1) as u64);
        tally.duplicates_acked += u64::from(ack.duplicate);
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.duplicate) || args.concurrency == 0 || args.topics == 0 {
        return Err("--duplicate must be in 0..=1, --concurrency and --topics > 0".into());
    }
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis().to_string()
    });
    let plan = Arc::new(Plan::build(&args, &run_id));

    let client = async_nats::connect(&args.url).await?;
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(30)).build(client);
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec!["events.>".into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(args.dup_window_secs),
        ..Default::default()
    };
    let stream = if args.fresh {
        if js.get_stream(STREAM).await.is_ok() {
            js.delete_stream(STREAM).await?;
        }
        js.create_stream(config).await?
    } else {
        js.get_or_create_stream(config).await?
    };

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> =
        (0..args.concurrency).map(|_| tokio::spawn(worker(js.clone(), plan.clone(), next.clone()))).collect();
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut duplicates_acked = 0;
    for w in workers {
        let tally = w.await??;
        latency_us.add(&tally.latency_us)?;
        duplicates_acked += tally.duplicates_acked;
    }
    let seconds = start.elapsed().as_secs_f64();
    let stream_messages = stream.get_info().await?.state.messages;

    let ms = |us: u64| us as f64 / 1000.0;
    let report = serde_json::json!({
        "events": args.events,
        "unique": plan.events.len(),
        "duplicates_acked": duplicates_acked,
        "stream_messages": stream_messages,
        "seconds": seconds,
        "events_per_second": args.events as f64 / seconds,
        "latency": {
            "p50_ms": ms(latency_us.value_at_quantile(0.50)),
            "p99_ms": ms(latency_us.value_at_quantile(0.99)),
            "max_ms": ms(latency_us.max()),
        },
        "concurrency": args.concurrency,
        "topics": args.topics,
        "run_id": run_id,
    });
    println!("{report}");
    Ok(())
}
