//! Sending: concurrent tasks take the planned requests in order, send each over
//! keep-alive connections, retry 503/429 honouring `Retry-After`, and tally what
//! was acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use event_aggregator::api::PublishResponse;
use hdrhistogram::Histogram;
use reqwest::StatusCode;

use crate::error::PublisherError;
use crate::plan::{self, Plan};

/// Shared by the sending tasks.
pub struct Shared {
    pub client: reqwest::Client,
    pub endpoint: String,
    pub content_type: &'static str,
    pub gzip: bool,
    pub max_retries: u32,
    pub plan: Plan,
    pub next: AtomicUsize,
    pub deadline: Option<Instant>,
    /// With `--rate`: when sending began, and the gap between scheduled starts.
    pub schedule: Option<(Instant, Duration)>,
    pub sent_events: AtomicU64,
}

/// What one task saw.
#[derive(Default)]
pub struct Tally {
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

impl Shared {
    pub fn clone_sent(self: &Arc<Self>) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let me = self.clone();
        Arc::new(move || me.sent_events.load(Relaxed))
    }
}

pub async fn send_loop(shared: Arc<Shared>) -> Tally {
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
        let started = match shared.schedule {
            Some((start, gap)) => {
                let at = start + gap * i as u32;
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
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

pub async fn wait_ready(client: &reqwest::Client, base: &str, limit: Duration) -> Result<(), PublisherError> {
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

impl Tally {
    pub fn merge(&mut self, other: Tally) {
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
