//! The `publisher` load simulator: builds a workload of events with a chosen
//! duplicate rate, sends it over keep-alive connections from concurrent tasks,
//! retries 503/429 honouring `Retry-After`, and reports throughput, latency
//! percentiles and a self-check of the server's `/stats` deltas. It speaks the
//! service's own wire types (`event_aggregator::api`).
//!
//! Exits 0 when the self-check passes, 1 on a mismatch, 2 when it cannot run.
//! Built with the `publisher` feature (on by default), which brings its HTTP
//! client, progress bar and histogram; the server library links none of them.

mod plan;
mod report;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use event_aggregator::AckMode;
use event_aggregator::api::PublishResponse;
use hdrhistogram::Histogram;
use reqwest::StatusCode;

use plan::Plan;
use report::Report;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let json = args.json;
    match run(args).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                report.print_human();
            }
            if report.self_check.ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("publisher: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Load simulator for event-aggregator: sends events with a chosen duplicate
/// rate and checks the server's counters against what it acknowledged.
#[derive(Debug, Clone, Parser)]
#[command(name = "publisher", version, long_about = None)]
pub struct Args {
    /// Base URL of the aggregator.
    #[arg(long, env = "AGGREGATOR_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Events to send in total, duplicates included.
    #[arg(long, env = "EVENTS", default_value_t = 5000)]
    pub events: usize,
    /// Fraction of sent events that repeat an earlier (topic, event_id) of the run.
    #[arg(long, env = "DUP_RATE", default_value_t = 0.2)]
    pub duplicate: f64,
    /// Number of distinct topics.
    #[arg(long, env = "TOPICS", default_value_t = 10)]
    pub topics: usize,
    /// Topic names are `<prefix>.<n>`.
    #[arg(long, default_value = "sim")]
    pub topic_prefix: String,
    /// Events per request (1 = one event object per request).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1)]
    pub batch_size: usize,
    /// Body format for batches.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Requests in flight at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Approximate size of each event's payload, in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Send bodies gzip-compressed.
    #[arg(long)]
    pub gzip: bool,
    /// Ack mode asked of the server (`?ack=`); the server default if absent.
    #[arg(long, value_enum)]
    pub ack: Option<AckMode>,
    /// Seed of the workload (reproducible runs; event ids still differ per run).
    #[arg(long, env = "SEED", default_value_t = 42)]
    pub seed: u64,
    /// Stop sending new requests after this many seconds.
    #[arg(long)]
    pub duration_limit: Option<f64>,
    /// Retries of one request on 503/429 or connection errors before giving up.
    #[arg(long, default_value_t = 20)]
    pub max_retries: u32,
    /// Wait up to this many seconds for `/health` before starting.
    #[arg(long, env = "WAIT_READY_SECS", default_value_t = 30)]
    pub wait_ready_secs: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Event id prefix. Random per run by default, so runs never collide; reuse one
    /// to re-send a stored set (every event a duplicate).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Skip the `/stats` self-check (for servers that keep no counters).
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Ndjson,
}

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("aggregator at {0} did not become healthy in time")]
    NotReady(String),
    #[error("cannot read {url}/stats: {source}")]
    Stats { url: String, source: reqwest::Error },
    #[error("invalid argument: {0}")]
    Args(&'static str),
}

/// Shared by the sending tasks.
struct Shared {
    client: reqwest::Client,
    endpoint: String,
    content_type: &'static str,
    gzip: bool,
    max_retries: u32,
    plan: Plan,
    next: AtomicUsize,
    deadline: Option<Instant>,
    sent_events: AtomicU64,
}

/// What one task saw.
#[derive(Default)]
pub(crate) struct Tally {
    pub acked_requests: u64,
    pub acked_events: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub retries: u64,
    pub errors: BTreeMap<String, u64>,
    /// Keys (plan indices) of acknowledged events.
    pub acked_keys: Vec<u32>,
    pub latency_us: Option<Histogram<u64>>,
}

pub async fn run(args: Args) -> Result<Report, PublisherError> {
    if !(0.0..=1.0).contains(&args.duplicate) || args.concurrency == 0 {
        return Err(PublisherError::Args("--duplicate must be in 0..=1 and --concurrency > 0"));
    }
    let base = args.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a plain HTTP client builds");
    wait_ready(&client, &base, Duration::from_secs(args.wait_ready_secs)).await?;
    let run_id = args.run_id.clone().unwrap_or_else(run_id);
    let building = Instant::now();
    if !args.json {
        eprintln!("building {} events ({} per request)...", args.events, args.batch_size.max(1));
    }
    let plan = Plan::build(&args, &run_id);
    if !args.json {
        let secs = building.elapsed().as_secs_f64();
        let (requests, repeats) = (plan.requests.len(), plan.planned_duplicates);
        eprintln!("built {requests} requests ({repeats} repeated events) in {secs:.1} s; sending");
    }
    let before = report::fetch_stats(&client, &base).await?;

    let ack = args.ack.map(|a| if a == AckMode::Durable { "?ack=durable" } else { "?ack=buffered" });
    let shared = Arc::new(Shared {
        client: client.clone(),
        endpoint: format!("{base}/publish{}", ack.unwrap_or("")),
        content_type: if args.format == Format::Ndjson { "application/x-ndjson" } else { "application/json" },
        gzip: args.gzip,
        max_retries: args.max_retries,
        plan,
        next: AtomicUsize::new(0),
        deadline: args.duration_limit.map(|s| Instant::now() + Duration::from_secs_f64(s)),
        sent_events: AtomicU64::new(0),
    });
    let started = Instant::now();
    let progress = report::Progress::start(args.events as u64, std::io::stderr().is_terminal(), args.json);
    let tasks: Vec<_> = (0..args.concurrency).map(|_| tokio::spawn(send_loop(shared.clone()))).collect();
    let ticker = progress.spawn_ticker(shared.clone_sent());
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("sender task does not panic"));
    }
    let elapsed = started.elapsed();
    ticker.abort();
    progress.finish();
    let plan = &shared.plan;
    Ok(report::Report::build(&args, &client, &base, plan, &tally, elapsed, before, &run_id).await)
}

impl Shared {
    fn clone_sent(self: &Arc<Self>) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let me = self.clone();
        Arc::new(move || me.sent_events.load(Relaxed))
    }
}

async fn send_loop(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally {
        latency_us: Some(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")),
        ..Tally::default()
    };
    loop {
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            return tally;
        }
        let i = shared.next.fetch_add(1, Relaxed);
        let Some(request) = shared.plan.requests.get(i) else { return tally };
        let started = Instant::now();
        let outcome = send_with_retries(&shared, request, &mut tally).await;
        shared.sent_events.fetch_add(request.events.len() as u64, Relaxed);
        if let Some(body) = outcome {
            let us = started.elapsed().as_micros() as u64;
            if let Some(h) = tally.latency_us.as_mut() {
                h.saturating_record(us.max(1));
            }
            tally.acked_requests += 1;
            tally.acked_events += request.events.len() as u64;
            tally.stored += body.stored as u64;
            tally.duplicates += body.duplicates as u64;
            tally.acked_keys.extend_from_slice(&request.events);
        }
    }
}

/// Send one request; on 503/429 or a connection error, back off (honouring
/// `Retry-After`) and retry. Returns the 200 body, or `None` after giving up.
async fn send_with_retries(
    shared: &Shared,
    request: &plan::Request,
    tally: &mut Tally,
) -> Option<PublishResponse> {
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..=shared.max_retries {
        if attempt > 0 {
            tally.retries += 1;
        }
        let mut req = shared.client.post(&shared.endpoint).header("content-type", shared.content_type);
        if shared.gzip {
            req = req.header("content-encoding", "gzip");
        }
        let (label, wait) = match req.body(request.body.clone()).send().await {
            Ok(resp) if resp.status() == StatusCode::OK => {
                let body = resp.json::<PublishResponse>().await;
                if body.is_err() {
                    // Acknowledged, so never re-sent; counted as an error instead.
                    *tally.errors.entry("unreadable 200".to_owned()).or_default() += 1;
                }
                return body.ok();
            }
            Ok(resp)
                if matches!(
                    resp.status(),
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                ) =>
            {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
                    .map(Duration::from_secs_f64);
                (resp.status().as_u16().to_string(), retry_after.unwrap_or(backoff))
            }
            Ok(resp) => {
                *tally.errors.entry(resp.status().as_u16().to_string()).or_default() += 1;
                return None;
            }
            Err(_) => ("transport".to_owned(), backoff),
        };
        *tally.errors.entry(format!("{label} (retried)")).or_default() += 1;
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    *tally.errors.entry("gave up".to_owned()).or_default() += 1;
    None
}

async fn wait_ready(client: &reqwest::Client, base: &str, limit: Duration) -> Result<(), PublisherError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status() == StatusCode::OK
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PublisherError::NotReady(base.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A short id unique to this run (clock and pid), so repeated runs never collide.
fn run_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{:012x}", mixed & 0xffff_ffff_ffff)
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.acked_requests += other.acked_requests;
        self.acked_events += other.acked_events;
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.retries += other.retries;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.acked_keys.extend(other.acked_keys);
        match (self.latency_us.as_mut(), other.latency_us) {
            (Some(mine), Some(theirs)) => mine.add(theirs).expect("same bounds"),
            (None, theirs) => self.latency_us = theirs,
            _ => {}
        }
    }
}
