//! Reduction 5: unknown writes that a read proves took effect.
//!
//! A required answer that shows key `k` with value `v` and mod revision `m`
//! (a range's kvs, a put's `prev_kv`, a delete's `prev_kvs`, the same inside
//! a txn's responses) can only match a model in which some write put `v` on
//! `k` at revision `m`. When exactly one operation of the history can do
//! that (puts with `ignore_value` on `k` could copy any value, so their keys
//! are left alone) and that operation is an unknown write, it must be
//! placed, and at revision `m`, and before the answer's operation returned.
//! Such a write becomes required with its revision pinned (its own answer
//! stays unchecked), which removes it from the floating unknown writes the
//! search branches on.
//!
//! This is a deduction, not an assumption: with duplicate values or no
//! observation nothing is pinned, and a pin that contradicts the rest of the
//! history (two reads seeing the write at different revisions, a read that
//! returned before the write was called) makes the history unplaceable, as
//! it is.
//!
//! Example: `put k=v7` loses its answer; a read returning at t=50 shows
//! `k=v7 (mod 12)`. The put is now required, may only be placed at revision
//! 11 → 12, and must be placed before any operation called after t=50.

use std::collections::{BTreeMap, BTreeSet};

use t4_core::kv::{KeyValue, Op as TxnOp, OpResponse, RequestOp, TxnRequest, WriteRequest};

use super::classify::{Entry, Role};
use crate::history::{Call, Op, Return};

/// Upgrades the unknown writes of `entries` that an answer proves took
/// effect to required ones with a pinned revision.
pub(super) fn pin_observed(history: &[Op], entries: &mut [Entry]) {
    // Who may have written each (key, value).
    let mut writers: BTreeMap<(&[u8], &[u8]), BTreeSet<usize>> = BTreeMap::new();
    let mut copied: BTreeSet<&[u8]> = BTreeSet::new();
    for (i, op) in history.iter().enumerate() {
        if entries[i].role == Role::Skipped {
            continue;
        }
        if let Call::Write(w) = &op.call {
            for_each_put(w, &mut |key, value, ignore_value| {
                if ignore_value {
                    copied.insert(key);
                } else {
                    writers.entry((key, value)).or_default().insert(i);
                }
            });
        }
    }
    // Pins: writer -> (pre-revision, the earliest return of an observer).
    let mut pins: BTreeMap<usize, (i64, u64)> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        if !matches!(entries[i].role, Role::Required { .. }) {
            continue;
        }
        let returned = entries[i].return_at;
        for_each_observed(&op.call, &op.ret, &mut |kv| {
            if copied.contains(kv.key.as_slice()) {
                return;
            }
            let Some(who) = writers.get(&(kv.key.as_slice(), kv.value.as_slice())) else {
                return;
            };
            let mut who = who.iter();
            let (Some(&w), None) = (who.next(), who.next()) else {
                return;
            };
            if w == i || entries[w].role != Role::Optional {
                return;
            }
            let pin = pins.entry(w).or_insert((kv.mod_revision - 1, returned));
            // Disagreeing observations cannot all hold; keep the lowest
            // revision and the earliest return (either way the history
            // will not place).
            pin.0 = pin.0.min(kv.mod_revision - 1);
            pin.1 = pin.1.min(returned);
        });
    }
    for (w, (pre, returned)) in pins {
        entries[w].role = Role::Required {
            pre_revision: Some(pre),
            preserving: false,
            checked: false,
        };
        entries[w].return_at = returned;
    }
}

/// Calls `f(key, value, ignore_value)` for every put `w` may do.
fn for_each_put<'w>(w: &'w WriteRequest, f: &mut impl FnMut(&'w [u8], &'w [u8], bool)) {
    fn txn<'w>(t: &'w TxnRequest, f: &mut impl FnMut(&'w [u8], &'w [u8], bool)) {
        for RequestOp { op } in t.success.iter().chain(&t.failure) {
            match op {
                Some(TxnOp::Put(p)) => f(&p.key, &p.value, p.ignore_value),
                Some(TxnOp::Txn(n)) => txn(n, f),
                Some(TxnOp::Range(_) | TxnOp::DeleteRange(_)) | None => {}
            }
        }
    }
    match w {
        WriteRequest::Put(p) => f(&p.key, &p.value, p.ignore_value),
        WriteRequest::Txn(t) => txn(t, f),
        _ => {}
    }
}

/// Calls `f` for every key-value an answer shows with its real value
/// (`keys_only` ranges clear values, so they are left out).
pub(super) fn for_each_observed<'h>(
    call: &'h Call,
    ret: &'h Return,
    f: &mut impl FnMut(&'h KeyValue),
) {
    fn txn<'h>(
        t: &'h TxnRequest,
        resp: &'h t4_core::kv::TxnResponse,
        f: &mut impl FnMut(&'h KeyValue),
    ) {
        let ops = if resp.succeeded {
            &t.success
        } else {
            &t.failure
        };
        for (RequestOp { op }, r) in ops.iter().zip(&resp.responses) {
            match (op, &r.response) {
                (Some(TxnOp::Range(q)), Some(OpResponse::Range(r))) if !q.keys_only => {
                    r.kvs.iter().for_each(&mut *f);
                }
                (Some(TxnOp::Put(_)), Some(OpResponse::Put(r))) => {
                    r.prev_kv.iter().for_each(&mut *f);
                }
                (Some(TxnOp::DeleteRange(_)), Some(OpResponse::DeleteRange(r))) => {
                    r.prev_kvs.iter().for_each(&mut *f);
                }
                (Some(TxnOp::Txn(n)), Some(OpResponse::Txn(r))) => txn(n, r, f),
                _ => {}
            }
        }
    }
    use t4_core::kv::WriteResponse as R;
    match (call, ret) {
        (Call::Range(q), Return::Range(Ok(r))) if !q.keys_only => r.kvs.iter().for_each(f),
        (Call::Write(WriteRequest::Put(_)), Return::Write(Ok(R::Put(r)))) => {
            r.prev_kv.iter().for_each(f);
        }
        (Call::Write(WriteRequest::DeleteRange(_)), Return::Write(Ok(R::DeleteRange(r)))) => {
            r.prev_kvs.iter().for_each(f);
        }
        (Call::Write(WriteRequest::Txn(t)), Return::Write(Ok(R::Txn(r)))) => txn(t, r, f),
        _ => {}
    }
}
