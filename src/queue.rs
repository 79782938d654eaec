//! The bounded ring buffer between request handlers and the writer.
//!
//! Many producers (handlers, via [`IngestQueue::push`]), exactly one consumer (the
//! writer thread, via [`IngestQueue::pop`]). One item per request. Two bounds: ring
//! slots (items) and an event budget (events queued or being written), so memory
//! stays bounded whatever the batch sizes. The budget of an item comes back
//! ([`IngestQueue::release`]) only when the item's outcome is final: from the
//! settler once its commit is settled, from the writer when it fails the item. So
//! a slow or failing disk turns into backpressure, then 503.
//!
//! Closing: after [`IngestQueue::close`] every push fails with `Closed`; the writer
//! drains what is left and exits. The shutdown sequence closes the queue only after
//! the HTTP server has drained its handlers, so no push can race the close.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use crossbeam::queue::ArrayQueue;
use tokio::sync::Notify;

use crate::ack::{AckMode, FailReason};
use crate::dedup::ClaimSet;
use crate::event::EventKey;

/// What a handler hands the writer: one request's decided events.
pub struct QueuedRequest {
    /// New events, in request order: key plus the encoded record.
    pub records: Vec<NewRecord>,
    /// Events of the request that were duplicates.
    pub duplicates: u64,
    /// Tickets of other in-flight requests whose keys this request's duplicates
    /// repeat. The writer commits this item only in the same transaction as, or
    /// after, each of them (see `writer`).
    pub twins: Vec<std::sync::Arc<crate::ack::Ticket>>,
    /// Every key this request claimed; owns the request's ticket.
    pub claims: ClaimSet,
    pub ack: AckMode,
}

impl QueuedRequest {
    /// Budget units: one per event stored, and one for the item itself.
    pub fn cost(&self) -> usize {
        self.records.len() + 1
    }
}

/// A new event on its way to disk.
pub struct NewRecord {
    pub key: EventKey,
    /// `store::codec` bytes of the record.
    pub bytes: Vec<u8>,
}

/// What a handler does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse at once (503).
    Reject,
    /// Wait up to this long for the writer to make room, then refuse.
    Wait(Duration),
}

pub struct IngestQueue {
    ring: ArrayQueue<QueuedRequest>,
    /// Budget units held by items queued or being written. Handlers reserve in
    /// `push`; the settler and the writer give back in `release`.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    closed: AtomicBool,
    /// Notified on every `release`; handlers waiting for room
    /// listen. Dropping the queue drops waiters' futures, never signals them.
    room: Notify,
    /// The writer thread, unparked after each push (and by the settler after each
    /// batch) so an idle writer starts at once. Set once by the writer thread.
    writer: OnceLock<Thread>,
}

impl IngestQueue {
    pub fn new(slots: usize, max_events: usize) -> Self {
        IngestQueue {
            ring: ArrayQueue::new(slots.max(1)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: max_events.max(1),
            closed: AtomicBool::new(false),
            room: Notify::new(),
            writer: OnceLock::new(),
        }
    }

    /// Called once by the writer thread as it starts.
    pub fn register_writer(&self, thread: Thread) {
        let _ = self.writer.set(thread);
    }

    /// Push one request's item, waiting for room as `when_full` says. On refusal
    /// the item is dropped, which releases its claims.
    pub async fn push(&self, item: QueuedRequest, when_full: WhenFull) -> Result<(), FailReason> {
        let deadline = match when_full {
            WhenFull::Reject => None,
            WhenFull::Wait(d) => Some(tokio::time::Instant::now() + d),
        };
        let mut item = item;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            item = match self.try_push(item) {
                Ok(()) => return Ok(()),
                Err((item, FailReason::QueueFull)) => item,
                Err((item, reason)) => return Err(fail(item, reason)),
            };
            let Some(deadline) = deadline else {
                return Err(fail(item, FailReason::QueueFull));
            };
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(fail(item, FailReason::QueueFull));
            }
        }
    }

    fn try_push(&self, item: QueuedRequest) -> Result<(), (QueuedRequest, FailReason)> {
        if self.closed.load(Ordering::Acquire) {
            return Err((item, FailReason::ShuttingDown));
        }
        let cost = item.cost();
        // A hard bound: `Config::validate` makes the budget hold the largest
        // request, so refusing here always means "wait for room".
        let reserved = self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (held + cost <= self.max_in_flight).then_some(held + cost)
        });
        if reserved.is_err() {
            return Err((item, FailReason::QueueFull));
        }
        match self.ring.push(item) {
            Ok(()) => {
                self.wake_writer();
                Ok(())
            }
            Err(item) => {
                self.in_flight.fetch_sub(cost, Ordering::AcqRel);
                Err((item, FailReason::QueueFull))
            }
        }
    }

    /// Writer only.
    pub fn pop(&self) -> Option<QueuedRequest> {
        self.ring.pop()
    }

    /// Settling (items it settled) or writer (items it failed): those items'
    /// outcomes are final; give back their budget.
    pub fn release(&self, cost: usize) {
        self.in_flight.fetch_sub(cost, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    /// Wake the writer if it sleeps: new work, a closed queue, or (settling) a
    /// settled batch that held items may have been waiting for.
    pub fn wake_writer(&self) {
        if let Some(w) = self.writer.get() {
            w.unpark();
        }
    }

    /// Shutdown only, once the HTTP server has drained its handlers.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_writer();
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    /// Requests in the ring buffer.
    pub fn len(&self) -> usize {
        self.ring.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
    /// Budget units held (queued or being written).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

fn fail(item: QueuedRequest, reason: FailReason) -> FailReason {
    item.claims.fail(reason);
    reason
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ack::{Progress, Ticket};
    use crate::dedup::{DedupConfig, Deduper};
    use crate::event::{EventKey, KeyHasher};

    /// A request of `events` new events (budget cost `events + 1`), and its ticket.
    fn request(events: usize) -> (QueuedRequest, Arc<Ticket>) {
        let config = DedupConfig { recent_capacity: 10, filter_capacity: 1000, filter_fp_rate: 0.01 };
        let ticket = Ticket::new();
        let claims = ClaimSet::new(Arc::new(Deduper::new(config, 0)), ticket.clone());
        let key = |i: usize| EventKey::new(KeyHasher::new(1), "t", i.to_string());
        let records = (0..events).map(|i| NewRecord { key: key(i), bytes: Vec::new() }).collect();
        (QueuedRequest { records, duplicates: 0, twins: Vec::new(), claims, ack: AckMode::Durable }, ticket)
    }

    async fn push(queue: &IngestQueue, events: usize) -> (Result<(), FailReason>, Arc<Ticket>) {
        let (item, ticket) = request(events);
        (queue.push(item, WhenFull::Reject).await, ticket)
    }

    #[tokio::test]
    async fn the_event_budget_holds_until_the_outcome_is_final() {
        let queue = IngestQueue::new(8, 10);
        assert_eq!(push(&queue, 4).await.0, Ok(()));
        assert_eq!(push(&queue, 4).await.0, Ok(()));
        assert_eq!(queue.in_flight(), 10);
        let (refused, ticket) = push(&queue, 1).await;
        assert_eq!(refused, Err(FailReason::QueueFull));
        assert_eq!(
            ticket.progress(),
            Progress::Failed(FailReason::QueueFull),
            "a refused push fails its ticket"
        );
        // Popping is not enough: the budget comes back with the outcome.
        let item = queue.pop().expect("queued");
        assert_eq!(push(&queue, 1).await.0, Err(FailReason::QueueFull));
        queue.release(item.cost());
        assert_eq!(push(&queue, 1).await.0, Ok(()));
    }

    /// `QUEUE_CAPACITY_EVENTS` holds even on an empty queue (it used to let one
    /// oversized item through); the config guarantees the largest request fits.
    #[tokio::test]
    async fn the_budget_is_a_hard_bound_even_on_an_empty_queue() {
        let queue = IngestQueue::new(8, 3);
        assert_eq!(push(&queue, 10).await.0, Err(FailReason::QueueFull));
        assert_eq!(queue.in_flight(), 0);
        assert_eq!(push(&queue, 2).await.0, Ok(()), "cost 3: exactly the budget");
    }

    #[tokio::test]
    async fn the_ring_slots_bound_requests_whatever_their_size() {
        let queue = IngestQueue::new(1, 1000);
        assert_eq!(push(&queue, 0).await.0, Ok(()));
        assert_eq!(push(&queue, 0).await.0, Err(FailReason::QueueFull));
        assert_eq!(queue.in_flight(), 1, "a refused push gives its reservation back");
    }

    #[tokio::test]
    async fn a_waiting_push_goes_in_once_budget_is_released() {
        let queue = Arc::new(IngestQueue::new(8, 2));
        assert_eq!(push(&queue, 1).await.0, Ok(()));
        let (item, _ticket) = request(1);
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(item, WhenFull::Wait(Duration::from_secs(5))).await })
        };
        tokio::task::yield_now().await;
        let first = queue.pop().expect("queued");
        queue.release(first.cost());
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_every_push() {
        let queue = IngestQueue::new(8, 100);
        assert_eq!(push(&queue, 1).await.0, Ok(()));
        queue.close();
        let (refused, ticket) = push(&queue, 1).await;
        assert_eq!(refused, Err(FailReason::ShuttingDown));
        assert_eq!(ticket.progress(), Progress::Failed(FailReason::ShuttingDown));
        assert!(queue.is_closed() && queue.pop().is_some(), "what was queued is still drained");
    }
}
