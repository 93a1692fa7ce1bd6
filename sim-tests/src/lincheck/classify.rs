//! How each operation takes part in the search: required, optional or
//! skipped, the revision its answer pins, and reduction 8 (unknown
//! compactions nobody can see are skipped).

use std::collections::BTreeSet;

use t4_core::kv::{
    Op as TxnOp, OpResponse, ResponseOp, TxnRequest, TxnResponse, WriteRequest, WriteResponse,
};
use t4_core::Error;

use crate::history::{Call, Op, Return};

/// How an operation takes part in the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Must be placed, and the model must give the observed answer.
    Required {
        /// The model's revision just before it, when the answer pins it
        /// (every `Ok`; not an `Err` read).
        pre_revision: Option<i64>,
        /// Leaves the state unchanged when it matches (a read, or a write
        /// answered at its pre-revision that is not a compaction).
        preserving: bool,
        /// Whether its answer is known and checked; `false` for an unknown
        /// write an answer proves took effect (see `pin.rs`), which must
        /// only write.
        checked: bool,
    },
    /// An unknown write: placed anywhere after its call, or never.
    Optional,
    /// Constrains nothing.
    Skipped,
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) role: Role,
    pub(super) call_at: u64,
    /// `u64::MAX` when it never returned.
    pub(super) return_at: u64,
}

/// The role of operation `index` and its times.
///
/// # Panics
/// On a malformed operation (see [`super::check`]).
pub(super) fn classify((index, op): (usize, &Op)) -> Entry {
    let role = match (&op.call, &op.ret) {
        (Call::Range(_), Return::Range(Ok(resp))) => Role::Required {
            pre_revision: Some(resp.revision),
            preserving: true,
            checked: true,
        },
        (Call::Range(_), Return::Range(Err(_))) => Role::Required {
            pre_revision: None,
            preserving: true,
            checked: true,
        },
        (Call::Write(req), Return::Write(Ok(resp))) => {
            let pre_revision = pre_revision(resp);
            let preserving = pre_revision == Some(resp.revision())
                && !matches!(
                    req,
                    WriteRequest::Compaction(_) | WriteRequest::LeaseGrant(_)
                );
            Role::Required {
                pre_revision,
                preserving,
                checked: true,
            }
        }
        (Call::Write(_), Return::Write(Err(_))) | (Call::Range(_), Return::Unknown) => {
            Role::Skipped
        }
        (Call::Write(_), Return::Unknown) => Role::Optional,
        (Call::Write(_), Return::Applied { revision }) => Role::Required {
            pre_revision: Some(revision - 1),
            preserving: false,
            checked: false,
        },
        (Call::Range(_), Return::Write(_) | Return::Applied { .. })
        | (Call::Write(_), Return::Range(_)) => {
            panic!("op {index}: the return does not answer the call: {op:?}")
        }
    };
    let return_at = match (role, op.return_at) {
        // It never returned, whatever was recorded.
        (Role::Optional, _) => u64::MAX,
        (_, Some(at)) => {
            assert!(
                op.call_at <= at,
                "op {index}: returned at {at} before its call at {}",
                op.call_at
            );
            at
        }
        // Proven to have happened, but never answered.
        (Role::Required { checked: false, .. }, None) => u64::MAX,
        (Role::Required { .. }, None) => panic!("op {index}: answered but no return_at: {op:?}"),
        (Role::Skipped, None) => u64::MAX,
    };
    Entry {
        role,
        call_at: op.call_at,
        return_at,
    }
}

/// Reduction 8: an unknown compaction at a revision no answer shows as the
/// compaction watermark (`Err(Compacted { compact_revision })` of a range)
/// is never needed, so it is skipped. Placing it could only make reads below
/// it fail with that watermark, which no answer shows, or make a later
/// compaction at or below it fail; a later higher compaction erases every
/// trace of it.
pub(super) fn skip_unseen_compactions(history: &[Op], entries: &mut [Entry]) {
    let seen: BTreeSet<i64> = history
        .iter()
        .filter_map(|op| match op.ret {
            Return::Range(Err(Error::Compacted { compact_revision })) => Some(compact_revision),
            _ => None,
        })
        .collect();
    for (entry, op) in entries.iter_mut().zip(history) {
        if let (Role::Optional, Call::Write(WriteRequest::Compaction(c))) = (entry.role, &op.call) {
            if !seen.contains(&c.revision) {
                entry.role = Role::Skipped;
            }
        }
    }
}

/// The model's revision before a write that answered `resp`: the header
/// revision, minus one when the write wrote something. `None` when the
/// answer does not tell (a revoke) or for kinds the model does not implement.
fn pre_revision(resp: &WriteResponse) -> Option<i64> {
    let wrote = match resp {
        WriteResponse::Put(_) => true,
        WriteResponse::DeleteRange(d) => d.deleted > 0,
        WriteResponse::Txn(t) => txn_wrote(t),
        // Both change state without a revision: pinned at their header,
        // never state-preserving.
        WriteResponse::Compaction(_) | WriteResponse::LeaseGrant(_) => false,
        // Whether it deleted keys (and so took a revision) the answer does
        // not say; `crate::resolve` pins those the final log settles.
        WriteResponse::LeaseRevoke(_)
        | WriteResponse::Alarm(_)
        | WriteResponse::Internal { .. } => return None,
    };
    Some(resp.revision() - i64::from(wrote))
}

fn txn_wrote(t: &TxnResponse) -> bool {
    t.responses
        .iter()
        .any(|ResponseOp { response }| match response {
            Some(OpResponse::Put(_)) => true,
            Some(OpResponse::DeleteRange(d)) => d.deleted > 0,
            Some(OpResponse::Txn(n)) => txn_wrote(n),
            Some(OpResponse::Range(_)) | None => false,
        })
}

/// Whether `call` is a txn with a range at an explicit revision: its answer
/// may depend on compactions, which take no revision.
pub(super) fn reads_old_revisions(call: &Call) -> bool {
    fn txn(t: &TxnRequest) -> bool {
        t.success.iter().chain(&t.failure).any(|op| match &op.op {
            Some(TxnOp::Range(r)) => r.revision != 0,
            Some(TxnOp::Txn(n)) => txn(n),
            Some(TxnOp::Put(_) | TxnOp::DeleteRange(_)) | None => false,
        })
    }
    matches!(call, Call::Write(WriteRequest::Txn(t)) if txn(t))
}
