//! Which items of a batch the writer writes now, holds, or fails: pure, from the
//! items' twins (other in-flight requests whose keys their duplicates repeat).
//!
//! Greatest fixpoint: an item is written unless a twin failed (fail too) or a
//! twin is neither stored nor written in this same transaction (hold). Cycles of
//! twins inside one batch share one transaction, so they are written together.
//! Once `drained` (nothing outside this batch can still make progress), a twin
//! that is not final never will be: its dependants fail instead of waiting.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ack::{FailReason, Progress, Ticket};

/// What a round does with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Write,
    Hold,
    Fail(FailReason),
}

/// The two facts `plan` needs of an item: its own ticket and its twins'.
pub struct Dependencies<'a> {
    pub ticket: &'a Arc<Ticket>,
    pub twins: &'a [Arc<Ticket>],
}

pub fn plan(batch: &[Dependencies<'_>], drained: bool) -> Vec<Verdict> {
    let mut verdicts = vec![Verdict::Write; batch.len()];
    if batch.iter().all(|d| d.twins.is_empty()) {
        return verdicts;
    }
    let position: HashMap<*const Ticket, usize> =
        batch.iter().enumerate().map(|(i, d)| (Arc::as_ptr(d.ticket), i)).collect();
    let twin_verdict = |verdicts: &[Verdict], twin: &Arc<Ticket>| match twin.progress() {
        Progress::Stored => Verdict::Write,
        Progress::Failed(_) => Verdict::Fail(FailReason::TwinFailed),
        Progress::Claimed | Progress::Queued => match position.get(&Arc::as_ptr(twin)) {
            Some(&j) => match verdicts[j] {
                Verdict::Fail(_) => Verdict::Fail(FailReason::TwinFailed),
                v => v,
            },
            None if drained => Verdict::Fail(FailReason::ShuttingDown),
            None => Verdict::Hold,
        },
    };
    loop {
        let mut changed = false;
        for i in 0..batch.len() {
            if verdicts[i] != Verdict::Write {
                continue;
            }
            let worst =
                batch[i].twins.iter().map(|t| twin_verdict(&verdicts, t)).find(|v| *v != Verdict::Write);
            if let Some(v) = worst {
                verdicts[i] = v;
                changed = true;
            }
        }
        if !changed {
            return verdicts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state of a twin outside the batch, or `InBatch(j)`: item `j`'s ticket.
    #[derive(Clone, Copy)]
    enum Twin {
        Queued,
        Stored,
        Failed,
        InBatch(usize),
    }

    /// Build the batch: item `i` has the twins `items[i]`; run `plan`.
    fn verdicts(items: &[&[Twin]], drained: bool) -> Vec<Verdict> {
        let own: Vec<Arc<Ticket>> = items.iter().map(|_| Ticket::new()).collect();
        let outside = |state: Progress| {
            let t = Ticket::new();
            t.advance(Progress::Queued);
            t.advance(state);
            t
        };
        let twins: Vec<Vec<Arc<Ticket>>> = items
            .iter()
            .map(|ts| {
                ts.iter()
                    .map(|t| match *t {
                        Twin::Queued => outside(Progress::Queued),
                        Twin::Stored => outside(Progress::Stored),
                        Twin::Failed => outside(Progress::Failed(FailReason::Storage)),
                        Twin::InBatch(j) => own[j].clone(),
                    })
                    .collect()
            })
            .collect();
        let deps: Vec<Dependencies<'_>> =
            own.iter().zip(&twins).map(|(ticket, twins)| Dependencies { ticket, twins }).collect();
        plan(&deps, drained)
    }

    use Twin::*;
    use Verdict::{Hold, Write};
    const TWIN_FAILED: Verdict = Verdict::Fail(FailReason::TwinFailed);
    const SHUTTING_DOWN: Verdict = Verdict::Fail(FailReason::ShuttingDown);

    /// `(what it shows, each item's twins, drained, the verdicts)`.
    type Case<'a> = (&'a str, &'a [&'a [Twin]], bool, &'a [Verdict]);

    #[test]
    fn each_item_follows_its_twins() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("no twins: everything is written",         &[&[], &[]],                        false, &[Write, Write]),
            ("a stored twin: written",                  &[&[Stored]],                       false, &[Write]),
            ("a failed twin: fails",                    &[&[Failed]],                       false, &[TWIN_FAILED]),
            ("a twin still queued elsewhere: held",     &[&[Queued]],                       false, &[Hold]),
            ("... unless nothing else can run",         &[&[Queued]],                       true,  &[SHUTTING_DOWN]),
            ("a twin in the same batch: written with it", &[&[], &[InBatch(0)]],            false, &[Write, Write]),
            ("a held twin in the batch: held too",      &[&[Queued], &[InBatch(0)]],        false, &[Hold, Hold]),
            ("a failing twin in the batch: fails too",  &[&[Failed], &[InBatch(0)]],        false, &[TWIN_FAILED, TWIN_FAILED]),
            ("a cycle inside the batch: written together", &[&[InBatch(1)], &[InBatch(0)]], false, &[Write, Write]),
            ("chains propagate a failure",              &[&[InBatch(1)], &[InBatch(2)], &[Failed]], false,
                                                        &[TWIN_FAILED, TWIN_FAILED, TWIN_FAILED]),
            ("the worst twin decides",                  &[&[Stored, Queued, Stored]],       false, &[Hold]),
        ];
        for (name, items, drained, expected) in cases {
            assert_eq!(verdicts(items, *drained), *expected, "{name}");
        }
    }
}
