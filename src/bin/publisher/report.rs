//! The publisher's report: counts, throughput, latency percentiles, and the
//! self-check of the server's `/stats` deltas against what was acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_aggregator::api::StatsBody;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::args::Args;
use crate::error::PublisherError;
use crate::plan::Plan;
use crate::send::Tally;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub unique_processed: u64,
    pub duplicate_dropped: u64,
}

pub async fn fetch_stats(client: &reqwest::Client, base: &str) -> Result<Counts, PublisherError> {
    let url = format!("{base}/stats");
    let stats: StatsBody = async { client.get(&url).send().await?.error_for_status()?.json().await }
        .await
        .map_err(|source| PublisherError::Stats { url: base.to_owned(), source })?;
    Ok(Counts { unique_processed: stats.unique_processed.0, duplicate_dropped: stats.duplicate_dropped.0 })
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct SelfCheck {
    pub ok: bool,
    /// Distinct keys among acknowledged events, and the rest of them.
    pub expected_unique: u64,
    pub expected_duplicates: u64,
    pub server_unique_delta: u64,
    pub server_duplicate_delta: u64,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub url: String,
    pub events_planned: usize,
    pub events_sent: u64,
    pub requests_sent: usize,
    pub batch_size: usize,
    pub concurrency: usize,
    pub acknowledged_events: u64,
    pub acknowledged_requests: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub retries: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    pub requests_per_second: f64,
    pub latency: Latency,
    pub self_check: SelfCheck,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn build(
        args: &Args,
        client: &reqwest::Client,
        base: &str,
        plan: &Plan,
        tally: &Tally,
        elapsed: Duration,
        before: Counts,
        run_id: &str,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = tally.latency_us.as_ref();
        let q = |p: f64| h.map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0);
        let sent_requests = plan.requests.len().min(tally.acked_requests as usize + error_count(tally));
        let self_check =
            self_check(client, base, plan, tally, before, args.no_check, args.run_id.is_none()).await;
        Report {
            run_id: run_id.to_owned(),
            url: args.url.clone(),
            events_planned: args.events,
            events_sent: plan.requests.iter().take(sent_requests).map(|r| r.events.len() as u64).sum(),
            requests_sent: sent_requests,
            batch_size: args.batch_size,
            concurrency: args.concurrency,
            acknowledged_events: tally.acked_events,
            acknowledged_requests: tally.acked_requests,
            stored: tally.stored,
            duplicates: tally.duplicates,
            retries: tally.retries,
            errors: tally.errors.clone(),
            elapsed_seconds: secs,
            events_per_second: tally.acked_events as f64 / secs,
            requests_per_second: tally.acked_requests as f64 / secs,
            latency: Latency {
                p50_ms: q(0.5),
                p90_ms: q(0.9),
                p99_ms: q(0.99),
                p999_ms: q(0.999),
                max_ms: h.map_or(0.0, |h| h.max() as f64 / 1000.0),
            },
            self_check,
        }
    }

    pub fn print_human(&self) {
        let l = &self.latency;
        println!("publisher run {} -> {}", self.run_id, self.url);
        println!(
            "  sent        {} events in {} requests (batch {}, concurrency {})",
            self.events_sent, self.requests_sent, self.batch_size, self.concurrency
        );
        println!(
            "  acknowledged {} events: {} stored, {} duplicates; {} retries",
            self.acknowledged_events, self.stored, self.duplicates, self.retries
        );
        if !self.errors.is_empty() {
            println!("  errors      {:?}", self.errors);
        }
        println!(
            "  throughput  {:.0} events/s, {:.0} requests/s over {:.2} s",
            self.events_per_second, self.requests_per_second, self.elapsed_seconds
        );
        println!(
            "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        let c = &self.self_check;
        println!("  self-check  {} ({})", if c.ok { "OK" } else { "MISMATCH" }, c.detail);
    }
}

fn error_count(tally: &Tally) -> usize {
    tally.errors.iter().filter(|(k, _)| !k.ends_with("(retried)")).map(|(_, v)| *v as usize).sum()
}

/// Compare the server's counter deltas with what the acknowledged requests imply.
/// Buffered acks reach `/stats` within a flush interval, so poll for a while.
async fn self_check(
    client: &reqwest::Client,
    base: &str,
    plan: &Plan,
    tally: &Tally,
    before: Counts,
    skip: bool,
    fresh_ids: bool,
) -> SelfCheck {
    let (expected_unique, expected_duplicates) = if fresh_ids {
        let mut seen = vec![false; plan.keys.len()];
        let mut distinct = 0;
        for &k in &tally.acked_keys {
            if !std::mem::replace(&mut seen[k as usize], true) {
                distinct += 1;
            }
        }
        (distinct, tally.acked_events - distinct)
    } else {
        // Re-used ids: what was stored before is unknown, so trust the replies and
        // check that the server's counters agree with them.
        (tally.stored, tally.duplicates)
    };
    if skip {
        return SelfCheck {
            ok: true,
            expected_unique,
            expected_duplicates,
            server_unique_delta: 0,
            server_duplicate_delta: 0,
            detail: "skipped (--no-check)".into(),
        };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = fetch_stats(client, base).await.unwrap_or(before);
        let du = after.unique_processed.saturating_sub(before.unique_processed);
        let dd = after.duplicate_dropped.saturating_sub(before.duplicate_dropped);
        let server_ok = du == expected_unique && dd == expected_duplicates;
        let replies_ok = tally.stored == expected_unique && tally.duplicates == expected_duplicates;
        if (server_ok && replies_ok) || Instant::now() >= deadline {
            let detail = if server_ok && replies_ok {
                format!("server stored {du} new and dropped {dd} duplicates, as acknowledged")
            } else {
                format!(
                    "expected {expected_unique} new / {expected_duplicates} duplicates; replies said {} / {}; \
                     /stats moved {du} / {dd} (other publishers or unacknowledged retries can explain a gap)",
                    tally.stored, tally.duplicates
                )
            };
            return SelfCheck {
                ok: server_ok && replies_ok,
                expected_unique,
                expected_duplicates,
                server_unique_delta: du,
                server_duplicate_delta: dd,
                detail,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A progress bar on a terminal, plain periodic lines otherwise, nothing with `--json`.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
}

impl Progress {
    pub fn start(total: u64, terminal: bool, quiet: bool) -> Progress {
        let bar = (terminal && !quiet).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
                    .expect("valid template"),
            );
            bar
        });
        Progress { bar, plain: !terminal && !quiet, total }
    }

    pub fn spawn_ticker(&self, sent: Arc<dyn Fn() -> u64 + Send + Sync>) -> tokio::task::JoinHandle<()> {
        let (bar, plain, total) = (self.bar.clone(), self.plain, self.total);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(if plain { 1000 } else { 100 }));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = sent();
                if let Some(bar) = &bar {
                    bar.set_position(n);
                } else if plain {
                    let rate = n as f64 / started.elapsed().as_secs_f64();
                    eprintln!("progress: {n}/{total} events sent, {rate:.0} events/s");
                }
            }
        })
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
