//! The write path of one publish request, after decoding: key each event, claim
//! the keys, decide new vs duplicate (memory, then filter, then an exact disk
//! check off the executor), push one item to the queue, and wait for the ack.
//!
//! Called by `http::publish`. Promise: `Ok` means every event of the request is
//! decided and, in durable mode, on disk (its own copy or an earlier twin's);
//! `Err` means nothing of the request was stored or counted, so a retry is safe.
//! If the request is cancelled at any await, its `ClaimSet` (in scope or inside
//! the queued item) releases its claims, or the writer fails the item, or the
//! settler marks it stored: the outcome never depends on the handler being there.

use std::sync::Arc;

use crate::ack::{AckMode, FailReason, Progress, Ticket};
use crate::dedup::{Claim, ClaimSet, Deduper};
use crate::event::{Event, EventKey, KeyHasher, KeyRef};
use crate::queue::{IngestQueue, NewRecord, QueuedRequest, WhenFull};
use crate::stats::{DedupTally, Stats};
use crate::store::{ReadError, Store, codec};

/// The result of an acknowledged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub received: usize,
    pub stored: usize,
    /// Positions of the duplicates in the request, ascending.
    pub duplicate_indices: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request could not be acknowledged; nothing of it was stored.
    #[error(transparent)]
    Unavailable(#[from] FailReason),
    #[error("disk check failed: {0}")]
    Store(#[from] ReadError),
    #[error("disk check task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub struct Ingest {
    pub dedup: Arc<Deduper>,
    pub queue: Arc<IngestQueue>,
    pub store: Arc<Store>,
    pub stats: Arc<Stats>,
    pub hasher: KeyHasher,
    pub when_full: WhenFull,
}

/// How one event of the request was decided. `New` and `Check` carry the
/// position of the event's owned key in the request's `ClaimSet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    New(usize),
    /// Claimed, but the filter has seen its hash: needs the exact disk check.
    Check(usize),
    Duplicate,
}

/// A request in the queue: decided, claimed, handed to the writer. Only its ack
/// is left to wait for, which no timeout may cut short (a 503 must mean that
/// nothing was stored, and a queued request may still commit).
pub struct Queued {
    ticket: Arc<Ticket>,
    twins: Vec<Arc<Ticket>>,
    ack: AckMode,
    outcome: Outcome,
}

impl Queued {
    /// Wait for the ack `ack` asks for; `Ok` carries what the request did.
    pub async fn outcome(self) -> Result<Outcome, IngestError> {
        await_ack(&self.ticket, &self.twins, self.ack).await?;
        Ok(self.outcome)
    }
}

impl Ingest {
    /// Key, claim, decide (the disk check included) and queue one request's
    /// events. Cancel-safe: dropped at any await, its claims are released.
    /// Only claimed keys and new records are copied out of `events`.
    pub async fn queue(&self, events: Vec<Event<'_>>, ack: AckMode) -> Result<Queued, IngestError> {
        let received = events.len();
        let received_at_us = chrono::Utc::now().timestamp_micros();
        let ticket = Ticket::new();
        let mut claims = ClaimSet::with_capacity(self.dedup.clone(), ticket.clone(), received);
        let mut tally = DedupTally::default();
        let (mut decisions, twins) = self.claim_all(&events, &ticket, &mut claims, &mut tally);
        self.check_on_disk(claims.keys(), &mut decisions, &mut tally).await?;
        self.stats.dedup_decided(&tally);

        let new = decisions.iter().filter(|d| matches!(d, Decision::New(_))).count();
        let mut records = Vec::with_capacity(new);
        let mut duplicate_indices = Vec::with_capacity(received - new);
        for (i, decision) in decisions.iter().enumerate() {
            match *decision {
                Decision::New(k) => records.push(new_record(&claims.keys()[k], &events[i], received_at_us)),
                _ => duplicate_indices.push(i),
            }
        }
        let outcome = Outcome { received, stored: records.len(), duplicate_indices };
        let duplicates = outcome.duplicate_indices.len() as u64;
        let item = QueuedRequest { records, duplicates, twins: twins.clone(), claims, ack };
        if let Err(reason) = self.queue.push(item, self.when_full).await {
            if reason == FailReason::QueueFull {
                self.stats.queue_full();
            }
            return Err(reason.into());
        }
        ticket.advance(Progress::Queued);
        Ok(Queued { ticket, twins, ack, outcome })
    }

    /// Claim every key (sync: no map guard lives across an await). Returns each
    /// event's first decision and the distinct tickets of in-flight twins.
    fn claim_all(
        &self,
        events: &[Event<'_>],
        ticket: &Arc<Ticket>,
        claims: &mut ClaimSet,
        tally: &mut DedupTally,
    ) -> (Vec<Decision>, Vec<Arc<Ticket>>) {
        let mut decisions = Vec::with_capacity(events.len());
        let mut twins: Vec<Arc<Ticket>> = Vec::new();
        let mut in_memory = 0;
        let keys: Vec<KeyRef<'_>> = events.iter().map(|e| self.hasher.key(&e.topic, &e.event_id)).collect();
        for claim in self.dedup.claim_all(&keys, ticket) {
            let decision = match claim {
                Claim::Won(owned) => {
                    claims.push(owned);
                    Decision::New(claims.keys().len() - 1)
                }
                Claim::SameRequest | Claim::Stored => Decision::Duplicate,
                Claim::InFlightTwin(twin) => {
                    tally.in_flight_twins += 1;
                    if !twins.iter().any(|t| Arc::ptr_eq(t, &twin)) {
                        twins.push(twin);
                    }
                    Decision::Duplicate
                }
            };
            in_memory += u64::from(decision == Decision::Duplicate);
            decisions.push(decision);
        }
        let won: Vec<&EventKey> = claims.keys().iter().collect();
        let maybe = self.dedup.maybe_stored(&won);
        let mut negatives = 0;
        for decision in &mut decisions {
            if let Decision::New(k) = *decision {
                if maybe[k] {
                    *decision = Decision::Check(k);
                } else {
                    negatives += 1;
                }
            }
        }
        tally.in_memory = in_memory;
        tally.filter_negatives = negatives;
        (decisions, twins)
    }

    /// Resolve every `Check` with one read transaction on a blocking thread.
    /// `claimed` are the request's owned keys, which the decisions point into.
    async fn check_on_disk(
        &self,
        claimed: &[EventKey],
        decisions: &mut [Decision],
        tally: &mut DedupTally,
    ) -> Result<(), IngestError> {
        // (event, its key's position in `claimed`) of every check.
        let to_check: Vec<(usize, usize)> = (decisions.iter().enumerate())
            .filter_map(|(i, d)| match *d {
                Decision::Check(k) => Some((i, k)),
                _ => None,
            })
            .collect();
        if to_check.is_empty() {
            return Ok(());
        }
        let lookup: Vec<EventKey> = to_check.iter().map(|&(_, k)| claimed[k].clone()).collect();
        let store = self.store.clone();
        let found = tokio::task::spawn_blocking(move || store.contains(&lookup)).await??;
        let mut on_disk = 0;
        for (&(i, k), found) in to_check.iter().zip(found) {
            decisions[i] = if found { Decision::Duplicate } else { Decision::New(k) };
            on_disk += u64::from(found);
        }
        tally.on_disk = on_disk;
        tally.false_positives = to_check.len() as u64 - on_disk;
        Ok(())
    }
}

/// Durable: wait for this request's commit (the writer holds it until every twin
/// is settled). Buffered: wait until every twin is stored (a twin that is
/// merely queued could still fail, and this request's 200 with it).
async fn await_ack(ticket: &Ticket, twins: &[Arc<Ticket>], ack: AckMode) -> Result<(), FailReason> {
    let own = match ack {
        AckMode::Durable => ticket.wait_final().await,
        AckMode::Buffered => {
            for twin in twins {
                if let Progress::Failed(_) = twin.wait_final().await {
                    return Err(FailReason::TwinFailed);
                }
            }
            ticket.progress()
        }
    };
    match own {
        Progress::Failed(reason) => Err(reason),
        _ => Ok(()),
    }
}

fn new_record(key: &EventKey, event: &Event<'_>, received_at_us: i64) -> NewRecord {
    let bytes = codec::encode(&codec::Record {
        topic: key.topic(),
        event_id: key.event_id(),
        timestamp: &event.timestamp,
        source: &event.source,
        payload: &event.payload,
        received_at_us,
    });
    NewRecord { key: key.clone(), bytes }
}
