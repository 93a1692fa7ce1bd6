//! Linearizability of a client history against etcd's sequential
//! specification.
//!
//! # The question
//!
//! A history (see [`crate::history`]) is linearizable when some total order
//! of (a subset of) its operations
//!
//! * respects real time: if `a` returned before `b` was called
//!   (`a.return_at < b.call_at`), `a` comes first; and
//! * replayed on a fresh [`Model`](t4_core::testkit::Model) (the reference
//!   etcd MVCC model, whose answers equal the store's exactly: header
//!   revisions, create/mod revisions, versions, `more`, `count`...) gives
//!   every included operation the answer its client observed.
//!
//! Which operations take part:
//!
//! | observed                   | treatment                                                     |
//! |----------------------------|---------------------------------------------------------------|
//! | `Return::Range(r)`         | required; `model.range(req)` must equal `r` (Ok or Err)       |
//! | `Return::Write(Ok(resp))`  | required; `model.apply(req)` must equal `Ok(resp)`            |
//! | `Return::Write(Err(_))`    | skipped: a definite failure changed nothing                   |
//! | `Return::Unknown`, a write | optional: anywhere after its call, or never; answer unchecked |
//! | `Return::Unknown`, a read  | skipped                                                       |
//! | `Return::Applied`          | required anywhere after its call; must write; answer unchecked |
//!
//! An optional write never returned, so for real-time purposes it returns at
//! infinity: it never has to precede anything. A read answered with an error
//! the model cannot give (`Unavailable`, `Internal`) can never be placed:
//! the recorder must record such reads as `Unknown`.
//!
//! # The search
//!
//! Wing & Gong's depth-first search with Lowe's memoisation, as in porcupine
//! (`search.rs`): a node is the set of operations placed so far plus the
//! model state they produced. From a node, an operation may come next when
//! it was called no later than the earliest return among the required
//! operations still pending (otherwise that one returned before it was
//! called and must come first). The search succeeds when every required
//! operation is placed. The stack is explicit, so thousands of operations
//! cannot overflow it.
//!
//! Plain Wing & Gong is hopeless here: an unknown write may come anywhere
//! after its call, so each one is a candidate at every later node. These
//! reductions keep real histories (thousands of operations, many unknown
//! writes) near linear. Each is exact: it never changes the verdict.
//!
//! 1. **Memoisation.** A node is keyed by a Zobrist hash of the placed set
//!    XOR a 128-bit `Model::fingerprint` (fixed-key hashes, so runs are
//!    reproducible); a key seen before is not explored again (with success
//!    ending the search, seen = failed or on the current path).
//! 2. **State-preserving operations are placed greedily.** A required
//!    operation that leaves the state unchanged (a range, a txn that wrote
//!    nothing, a delete of nothing) and matches now is placed at once,
//!    without a branch: nothing pending must precede it, and moving it
//!    earlier in any linearization changes no other answer.
//! 3. **Answers pin revisions.** An answer's header revision is the model's
//!    revision after the operation, and it was one lower before it exactly
//!    when the operation wrote (a put, a delete that deleted, a txn whose
//!    responses contain either). So each answered operation is tried only
//!    at its revision, and a node that has passed a pending one's revision
//!    is dead (revisions never decrease). Every match asserts the pin, so a
//!    model breaking this would panic rather than mislead.
//! 4. **Unknown writes only fill gaps.** One that changes nothing is never
//!    placed (never placing it is always allowed and leaves more choices);
//!    and while a pending operation is pinned at the current revision, only
//!    an unknown compaction (which takes no revision) may come.
//! 5. **Unknown writes an answer proves took effect are pinned** to the
//!    revision the answer shows, and must come before that answer's
//!    operation returned (`pin.rs`: when exactly one operation could have
//!    written the value shown, as with our workloads' unique values).
//! 6. **Reads are checked as soon as their revision is reached**, called
//!    yet or not: a read of the current revision sees the same keys
//!    wherever it is placed among the operations of that revision (only a
//!    compaction changes the state without taking a revision, and it hides
//!    nothing current).
//! 7. **A guess runs ahead through the revisions it forces.** After an
//!    unknown write fills a gap, each following revision is claimed by one
//!    pending answered write (no other write may take it), up to the next
//!    gap: those states are computed at once, checking the claimers'
//!    answers and the reads pinned there. A wrong guess dies at once, not
//!    after the search has branched again at later gaps.
//! 8. **Unknown compactions no answer shows are skipped**: placing one can
//!    only make answers fail (`classify.rs`).
//! 9. **Interchangeable unknown writes are tried once per gap**: e.g. lost
//!    puts on one key whose values no answer shows (`symmetry.rs`).
//!
//! # The budget
//!
//! The problem is NP-complete in general. [`CheckConfig::max_steps`] bounds
//! the model applications (each `range` or `apply`); when it runs out the
//! verdict is [`Verdict::Unknown`], never a hang.
//!
//! # Failures
//!
//! [`Verdict::NotLinearizable`] carries an [`Explanation`]: the longest
//! linearizable prefix the search found and, for the required operations
//! that could have come next or are pinned at a revision it reached, the
//! model's answer beside the observed one.

mod classify;
mod explain;
mod pin;
mod search;
mod symmetry;
#[cfg(test)]
mod tests;

pub use explain::{Explanation, Stuck};

use crate::history::Op;
use classify::{classify, skip_unseen_compactions, Entry, Role};

/// What the checker may spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Model applications (`range` or `apply` calls) before giving up with
    /// [`Verdict::Unknown`].
    pub max_steps: u64,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig {
            max_steps: 20_000_000,
        }
    }
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one verdict per check: boxing would only make matching on it clumsier"
)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; why the search got stuck.
    NotLinearizable(Explanation),
    /// The budget ran out first.
    Unknown,
}

/// The verdict and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The verdict.
    pub verdict: Verdict,
    /// How many operations had to be placed: the reads with an answer, the
    /// acknowledged writes and the unknown writes an answer proves took
    /// effect (skipped and other unknown ones are not counted).
    pub ops_checked: usize,
    /// Model applications spent.
    pub steps: u64,
}

/// Checks `history` (in any order; indexes into it name operations in the
/// explanation) for linearizability.
///
/// # Panics
/// On a malformed history (a recorder bug, not a store bug): a call with the
/// other kind's return, an answered operation without `return_at`, or a
/// return before the call.
#[must_use]
pub fn check(history: &[Op], config: &CheckConfig) -> CheckResult {
    let mut entries: Vec<Entry> = history.iter().enumerate().map(classify).collect();
    skip_unseen_compactions(history, &mut entries);
    pin::pin_observed(history, &mut entries);
    let ops_checked = entries
        .iter()
        .filter(|e| matches!(e.role, Role::Required { .. }))
        .count();
    let mut search = search::Search::new(history, entries, config.max_steps);
    let verdict = search.run();
    CheckResult {
        verdict,
        ops_checked,
        steps: search.steps,
    }
}
