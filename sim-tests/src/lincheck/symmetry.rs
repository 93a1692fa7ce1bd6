//! Reduction 9: interchangeable unknown writes are tried once per gap.
//!
//! Two unknown writes are interchangeable when placing either has the same
//! effect on every answer the history can check: the same request, up to
//! what no answer can see. Unknown writes have no answer to check, so
//! `prev_kv` flags do not matter; and a put's value does not matter when no
//! answer shows it on its key (a read that would see it mismatches whichever
//! of the two wrote it), provided nothing compares or sorts by value.
//! Typical case: several lost puts on one key whose values were overwritten
//! before anyone read them; or repeated lost deletes of one key.
//!
//! Where one of a class may come next, the earliest called is tried and the
//! others are not: in any linearization that places another member here, it
//! can be swapped with the earliest (which is callable here, and wherever
//! the other was placed later, since the callable window only grows along a
//! linearization), giving one that places the earliest here.

use std::collections::{BTreeMap, BTreeSet};

use t4_core::kv::{
    CompactionRequest, DeleteRangeRequest, Op as TxnOp, PutRequest, RequestOp, TxnRequest,
    WriteRequest,
};

use super::classify::{Entry, Role};
use super::pin::for_each_observed;
use crate::history::{Call, Op};

/// Class of each unknown write (`None` for other operations); members of a
/// class are interchangeable.
pub(super) fn classes(history: &[Op], entries: &[Entry]) -> Vec<Option<usize>> {
    let values_matter = history
        .iter()
        .any(|op| compares_or_sorts_by_value(&op.call));
    let mut observed: BTreeSet<(&[u8], &[u8])> = BTreeSet::new();
    for (i, op) in history.iter().enumerate() {
        if matches!(entries[i].role, Role::Required { .. }) {
            for_each_observed(&op.call, &op.ret, &mut |kv| {
                observed.insert((&kv.key, &kv.value));
            });
        }
    }
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    history
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let (Role::Optional, Call::Write(w)) = (entries[i].role, &op.call) else {
                return None;
            };
            let mut hidden = Vec::new();
            let normal = normalize(w, &mut |key, value| {
                let hide = !values_matter && !observed.contains(&(key, value));
                hidden.push(hide);
                hide
            });
            let next = ids.len();
            Some(*ids.entry(format!("{normal:?} {hidden:?}")).or_insert(next))
        })
        .collect()
}

/// A hider: whether a put's value (given its key) is to be emptied.
type Hide<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// `w` without what an unchecked answer and unseen values would tell apart:
/// `prev_kv` flags cleared, a compaction's `physical` cleared, and the value
/// of each put for which `hide(key, value)` says so emptied.
fn normalize(w: &WriteRequest, hide: &mut Hide<'_>) -> WriteRequest {
    match w {
        WriteRequest::Put(p) => WriteRequest::Put(put(p, hide)),
        WriteRequest::DeleteRange(d) => WriteRequest::DeleteRange(DeleteRangeRequest {
            prev_kv: false,
            ..d.clone()
        }),
        WriteRequest::Txn(t) => WriteRequest::Txn(txn(t, hide)),
        WriteRequest::Compaction(c) => WriteRequest::Compaction(CompactionRequest {
            physical: false,
            ..c.clone()
        }),
        other => other.clone(),
    }
}

fn put(p: &PutRequest, hide: &mut Hide<'_>) -> PutRequest {
    let mut p = PutRequest {
        prev_kv: false,
        ..p.clone()
    };
    if hide(&p.key, &p.value) {
        p.value.clear();
    }
    p
}

fn txn(t: &TxnRequest, hide: &mut Hide<'_>) -> TxnRequest {
    let mut branch = |ops: &[RequestOp]| -> Vec<RequestOp> {
        ops.iter()
            .map(|op| RequestOp {
                op: op.op.as_ref().map(|o| match o {
                    TxnOp::Put(p) => TxnOp::Put(put(p, hide)),
                    TxnOp::DeleteRange(d) => TxnOp::DeleteRange(DeleteRangeRequest {
                        prev_kv: false,
                        ..d.clone()
                    }),
                    TxnOp::Txn(n) => TxnOp::Txn(txn(n, hide)),
                    TxnOp::Range(r) => TxnOp::Range(r.clone()),
                }),
            })
            .collect()
    };
    let success = branch(&t.success);
    let failure = branch(&t.failure);
    TxnRequest {
        compare: t.compare.clone(),
        success,
        failure,
    }
}

/// Whether `call` compares a value or sorts a range by value (then values
/// can matter without being shown).
fn compares_or_sorts_by_value(call: &Call) -> bool {
    const VALUE_TARGET: i32 = 3;
    const SORT_BY_VALUE: i32 = 4;
    fn txn(t: &TxnRequest) -> bool {
        t.compare.iter().any(|c| c.target == VALUE_TARGET)
            || t.success.iter().chain(&t.failure).any(|op| match &op.op {
                Some(TxnOp::Range(r)) => r.sort_target == SORT_BY_VALUE,
                Some(TxnOp::Txn(n)) => txn(n),
                Some(TxnOp::Put(_) | TxnOp::DeleteRange(_)) | None => false,
            })
    }
    match call {
        Call::Range(r) => r.sort_target == SORT_BY_VALUE,
        Call::Write(WriteRequest::Txn(t)) => txn(t),
        Call::Write(_) => false,
    }
}
