//! The `publisher` load simulator: builds a workload of events with a chosen
//! duplicate rate, sends it over keep-alive connections from concurrent tasks,
//! retries 503/429 honouring `Retry-After`, and reports throughput, latency
//! percentiles and a self-check of the server's `/stats` deltas. It speaks the
//! service's own wire types (`event_aggregator::api`).
//!
//! Exits 0 when the self-check passes, 1 on a mismatch, 2 when it cannot run.
//! Built with the `publisher` feature (on by default), which brings its HTTP
//! client, progress bar and histogram; the server library links none of them.

mod args;
mod error;
mod plan;
mod report;
mod send;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use clap::Parser;
use event_aggregator::AckMode;

use args::{Args, Format};
use error::PublisherError;
use plan::Plan;
use report::Report;
use send::{Shared, Tally, send_loop, wait_ready};

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

pub async fn run(args: Args) -> Result<Report, PublisherError> {
    if !(0.0..=1.0).contains(&args.duplicate) || args.concurrency == 0 {
        return Err(PublisherError::Args("--duplicate must be in 0..=1 and --concurrency > 0"));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(PublisherError::Args("--rate must be a positive number of requests per second"));
    }
    let base = args.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .default_headers(auth_headers(args.token.as_deref())?)
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
    // `--no-check` targets servers that keep no counters (the bare handler).
    let before = if args.no_check { Default::default() } else { report::fetch_stats(&client, &base).await? };

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
        schedule: args.rate.map(|r| (Instant::now(), Duration::from_secs_f64(1.0 / r))),
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
    if let Some(path) = &args.acked_out {
        write_acked(path, plan, &tally).map_err(|e| PublisherError::AckedOut(path.clone(), e))?;
    }
    Ok(report::Report::build(&args, &client, &base, plan, &tally, elapsed, before, &run_id).await)
}

/// One byte per distinct key of the plan, 1 where an acknowledged request carried it.
fn write_acked(path: &std::path::Path, plan: &Plan, tally: &Tally) -> std::io::Result<()> {
    let mut acked = vec![0u8; plan.keys.len()];
    for &key in &tally.acked_keys {
        acked[key as usize] = 1;
    }
    std::fs::write(path, acked)
}

/// A short id unique to this run (clock and pid), so repeated runs never collide.
fn run_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{:012x}", mixed & 0xffff_ffff_ffff)
}

/// `Authorization: Bearer <token>` on every request, when a token is given.
fn auth_headers(token: Option<&str>) -> Result<reqwest::header::HeaderMap, PublisherError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| PublisherError::Args("--token must be printable ASCII"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}
