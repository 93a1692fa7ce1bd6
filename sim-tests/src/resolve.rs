//! Settling, from the final log, what the clients could not know: which
//! writes of unknown outcome happened, and which writes happened that no
//! client made (a lease expiry's revoke).
//!
//! A write whose client never heard back may or may not have taken effect;
//! left open, each such write widens the linearizability checker's search
//! (it may be placed anywhere after its call, or nowhere). The final log,
//! replayed by [`Truth`], settles most of them. Every put carries a unique
//! value, so a write whose payload occurs exactly once among the operations
//! and once in the log is identified with that entry:
//!
//! - the entry wrote revision `r`: the write becomes
//!   [`Return::Applied`]` { revision: r }` — it must be linearized, as the
//!   write of `r`, anywhere after its call; its answer is not checked;
//! - the entry failed, or succeeded without changing anything (a delete of
//!   a missing key, a txn that took its read-only branch): dropped, it has
//!   no effect to place; a successful grant, compaction or revoke of a
//!   lease without keys changes state without a revision and stays unknown;
//! - no entry: dropped. It did not take effect — or it did and was lost
//!   afterwards, which is the bug the checkers look for: if anyone observed
//!   its effect, that observation now has no explanation.
//!
//! Writes whose payload is not unique stay [`Return::Unknown`].
//!
//! Lease revokes that the node issued itself (expiry) are added as
//! operations of no client (`client == usize::MAX`, called at time 0):
//! `Applied` at the revision they wrote, or unknown if they wrote none.
//! A client's revoke of unknown outcome is not identified with an entry (an
//! expiry writes the same payload); the internal one stands for it.
//!
//! This only constrains the history in ways the final log proves, so it
//! cannot hide a violation; it turns "checker out of budget" into verdicts
//! and makes lease expiry visible to the checker.

use std::collections::BTreeMap;

use prost::Message;
use t4_core::kv::{LeaseRevokeRequest, WriteRequest};
use t4_core::log::{Entry, Payload};

use crate::history::{Call, Op, Return};
use crate::truth::Truth;

/// The client number of operations no client made.
pub const INTERNAL_CLIENT: usize = usize::MAX;

fn key(payload: &Payload) -> Vec<u8> {
    Entry {
        term: 0,
        index: 0,
        payload: Some(payload.clone()),
    }
    .encode_to_vec()
}

/// What [`resolve`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Unknown writes found in the log at a revision.
    pub applied: usize,
    /// Unknown writes dropped (no effect).
    pub dropped: usize,
    /// Internal revokes added.
    pub internal: usize,
}

/// Resolves `ops` against the final `log` and its replay (module docs).
pub fn resolve(ops: &mut Vec<Op>, log: &[Entry], truth: &Truth) -> Resolved {
    let mut in_ops: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for op in ops.iter() {
        if let Call::Write(w) = &op.call {
            *in_ops.entry(key(&Payload::from(w.clone()))).or_default() += 1;
        }
    }
    let mut in_log: BTreeMap<Vec<u8>, Vec<&Entry>> = BTreeMap::new();
    for e in log {
        if let Some(p) = &e.payload {
            in_log.entry(key(p)).or_default().push(e);
        }
    }
    let mut done = Resolved::default();
    ops.retain_mut(|op| {
        if let (Call::Write(w @ WriteRequest::LeaseRevoke(_)), Return::Write(Ok(resp))) =
            (&op.call, &op.ret)
        {
            // An acknowledged revoke's answer does not say whether it
            // deleted keys (took a revision); the log does.
            let k = key(&Payload::from(w.clone()));
            if let (Some(1), Some([e])) = (in_ops.get(&k), in_log.get(&k).map(Vec::as_slice)) {
                if let Some(o) = truth.outcome(e.index) {
                    if o.ok && o.after > o.before && resp.revision() == o.after {
                        op.ret = Return::Applied { revision: o.after };
                    }
                }
            }
            return true;
        }
        let (Call::Write(w), Return::Unknown) = (&op.call, &op.ret) else {
            return true;
        };
        if matches!(w, WriteRequest::LeaseRevoke(_)) {
            // An expiry writes the same payload: the log cannot tell whose
            // entry it is. The internal revoke added below stands for it.
            return true;
        }
        let k = key(&Payload::from(w.clone()));
        if in_ops.get(&k) != Some(&1) {
            return true;
        }
        let entries = in_log.get(&k).map_or(&[][..], Vec::as_slice);
        let outcome = match entries {
            [] => None,
            [e] => truth.outcome(e.index),
            _ => return true,
        };
        match outcome {
            Some(o) if o.ok && o.after > o.before => {
                op.ret = Return::Applied { revision: o.after };
                done.applied += 1;
                true
            }
            Some(o) if o.ok && changes_state_without_revision(w) => true,
            _ => {
                done.dropped += 1;
                false
            }
        }
    });
    // Revokes no client's acknowledged revoke accounts for. A revoke whose
    // client does not know the outcome stays unknown: whether its entry or
    // an expiry's deleted the keys, the effect is the same, and the
    // internal revoke (callable from the start) stands for both.
    let mut claims: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for op in ops.iter() {
        if let (Call::Write(w @ WriteRequest::LeaseRevoke(_)), ret) = (&op.call, &op.ret) {
            if matches!(ret, Return::Write(Ok(_)) | Return::Applied { .. }) {
                *claims.entry(key(&Payload::from(w.clone()))).or_default() += 1;
            }
        }
    }
    for (k, entries) in &in_log {
        let mut effective = entries.iter().filter_map(|e| {
            let Some(Payload::LeaseRevoke(r)) = &e.payload else {
                return None;
            };
            let o = truth.outcome(e.index)?;
            o.ok.then_some((r.id, o))
        });
        let claimed = claims.get(k).copied().unwrap_or(0);
        for (id, o) in effective.by_ref().skip(claimed) {
            ops.push(Op {
                client: INTERNAL_CLIENT,
                call_at: 0,
                return_at: None,
                call: Call::Write(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id })),
                ret: if o.after > o.before {
                    Return::Applied { revision: o.after }
                } else {
                    Return::Unknown
                },
            });
            done.internal += 1;
        }
    }
    done
}

fn changes_state_without_revision(w: &WriteRequest) -> bool {
    matches!(
        w,
        WriteRequest::Compaction(_) | WriteRequest::LeaseGrant(_) | WriteRequest::LeaseRevoke(_)
    )
}
