//! Static request checks, done before a request is logged (etcd's
//! `checkRangeRequest`, `checkPutRequest`, `checkDeleteRequest`,
//! `checkTxnRequest` and `checkIntervals` in api/v3rpc/key.go).
//!
//! They need no state. [`super::Store::apply`] runs them again (without the
//! op-count limit, which is configuration) so applying any entry is total
//! and deterministic even if an unchecked request reached the log.
//!
//! The duplicate-key rule ([`Invalid::DuplicateKey`]) follows etcd's
//! `checkIntervals` exactly, with one deliberate difference: a delete whose
//! `range_end` is `"\0"` covers every key from `key` on (etcd builds the
//! interval `[key, "\0")`, which is empty, and lets a put into it through).
//!
//! Worked example of the rule, per branch (`then` and `else` are checked
//! separately):
//! ```text
//! [put a, put a]                                  → duplicate (two puts)
//! [delete [a, c), put b]                          → duplicate (put inside a delete), in either order
//! [delete a, delete a]                            → fine (deletes may overlap)
//! [txn{then: put a, else: put a}]                 → fine (then/else exclusive)
//! [txn{then: put a}, put a]                       → duplicate
//! [txn{then: delete a}, txn{then: put a}]         → duplicate (earlier child's deletes apply)
//! [txn{then: put a}, txn{then: delete a}]         → fine: etcd only checks a child's
//!                                                   puts against deletes seen so far
//! ```

use std::collections::BTreeSet;

use super::range::KeyRange;
use crate::error::Invalid;
use crate::kv::{
    DeleteRangeRequest, Op, PutRequest, RangeRequest, RequestOp, SortOrder, SortTarget, TxnRequest,
    WriteRequest,
};

/// Static checks done before a range is served (etcd `checkRangeRequest`):
/// the key must be non-empty and the sort enums in range.
///
/// # Errors
/// [`Invalid::EmptyKey`], [`Invalid::InvalidSortOption`].
pub fn validate_range(req: &RangeRequest) -> Result<(), Invalid> {
    if req.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if SortOrder::try_from(req.sort_order).is_err()
        || SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(Invalid::InvalidSortOption);
    }
    Ok(())
}

/// Static checks done before a write is logged.
///
/// - Put: non-empty key; `ignore_value` with a value → [`Invalid::ValueProvided`];
///   `ignore_lease` with a lease → [`Invalid::LeaseProvided`].
/// - DeleteRange: non-empty key.
/// - Txn: more than `max_txn_ops` compares, success ops or failure ops →
///   [`Invalid::TooManyOps`]; an empty compare key → [`Invalid::EmptyKey`];
///   every op checked recursively (an op with no request →
///   [`Invalid::KeyNotFound`], as etcd); then the duplicate-key rule of the
///   module doc on each branch.
/// - Compaction, lease revoke, alarm: nothing static (an unknown lease or
///   a bad alarm action fails when it applies).
/// - Lease grant: TTL above etcd's maximum → [`Invalid::LeaseTtlTooLarge`];
///   negative TTL or id → [`Invalid::NegativeLeaseTtl`] /
///   [`Invalid::NegativeLeaseId`] (etcd would accept both; see there).
///
/// # Errors
/// The first violation, in etcd's order.
pub fn validate_write(req: &WriteRequest, max_txn_ops: usize) -> Result<(), Invalid> {
    match req {
        WriteRequest::Put(r) => check_put(r),
        WriteRequest::DeleteRange(r) => check_delete(r),
        WriteRequest::Txn(r) => check_txn_request(r, max_txn_ops),
        WriteRequest::Compaction(_) | WriteRequest::LeaseRevoke(_) | WriteRequest::Alarm(_) => {
            Ok(())
        }
        WriteRequest::LeaseGrant(r) => check_lease_grant(r),
    }
}

pub(crate) fn check_lease_grant(r: &crate::kv::LeaseGrantRequest) -> Result<(), Invalid> {
    if r.ttl > crate::lease::LEASE_TTL_MAX_SECS {
        return Err(Invalid::LeaseTtlTooLarge);
    }
    if r.ttl < 0 {
        return Err(Invalid::NegativeLeaseTtl);
    }
    if r.id < 0 {
        return Err(Invalid::NegativeLeaseId);
    }
    Ok(())
}

/// All checks of a top-level txn: per-op checks, then the duplicate-key rule.
pub(crate) fn check_txn_request(r: &TxnRequest, max_txn_ops: usize) -> Result<(), Invalid> {
    check_txn(r, max_txn_ops)?;
    // After the cheap checks, to bound the work (etcd does the same).
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

pub(crate) fn check_put(r: &PutRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Invalid::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Invalid::LeaseProvided);
    }
    Ok(())
}

pub(crate) fn check_delete(r: &DeleteRangeRequest) -> Result<(), Invalid> {
    if r.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    Ok(())
}

fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), Invalid> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_txn_ops {
        return Err(Invalid::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Invalid::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), Invalid> {
    match &op.op {
        Some(Op::Range(r)) => validate_range(r),
        Some(Op::Put(r)) => check_put(r),
        Some(Op::DeleteRange(r)) => check_delete(r),
        Some(Op::Txn(r)) => check_txn(r, max_txn_ops),
        None => Err(Invalid::KeyNotFound),
    }
}

/// The keys put and the ranges deleted by one branch, nested txns included.
type Writes<'a> = (BTreeSet<&'a [u8]>, Vec<KeyRange<'a>>);

/// etcd's `checkIntervals` over one branch; see the module doc.
fn check_intervals(ops: &[RequestOp]) -> Result<Writes<'_>, Invalid> {
    let hits = |dels: &[KeyRange<'_>], k: &[u8]| dels.iter().any(|d| d.contains(k));
    // This level's deletes first, so puts before and after them are caught.
    let mut dels: Vec<KeyRange<'_>> = ops
        .iter()
        .filter_map(|op| match &op.op {
            Some(Op::DeleteRange(d)) => Some(KeyRange::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    // Then the nested txns, in order.
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let Some(Op::Txn(t)) = &op.op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for &k in &puts_then {
            if puts.contains(k) || hits(&dels, k) {
                return Err(Invalid::DuplicateKey);
            }
            puts.insert(k);
        }
        for &k in &puts_else {
            // A key from the then-branch is fine: the branches are exclusive.
            if (puts.contains(k) && !puts_then.contains(k)) || hits(&dels, k) {
                return Err(Invalid::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    // Finally this level's puts, against everything collected.
    for op in ops {
        let Some(Op::Put(p)) = &op.op else { continue };
        let k = p.key.as_slice();
        if puts.contains(k) || hits(&dels, k) {
            return Err(Invalid::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{CompactionRequest, Compare};

    fn put(k: &str) -> RequestOp {
        RequestOp {
            op: Some(Op::Put(PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            op: Some(Op::DeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                prev_kv: false,
            })),
        }
    }
    fn get(k: &str) -> RequestOp {
        RequestOp {
            op: Some(Op::Range(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            op: Some(Op::Txn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }
    fn check(success: Vec<RequestOp>) -> Result<(), Invalid> {
        validate_write(
            &WriteRequest::Txn(TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            }),
            128,
        )
    }

    /// Range checks: empty key, sort enums out of range.
    #[test]
    fn range_checks() {
        let ok = RangeRequest {
            key: b"a".to_vec(),
            sort_order: 2,
            sort_target: 4,
            ..Default::default()
        };
        assert_eq!(validate_range(&ok), Ok(()));
        assert_eq!(
            validate_range(&RangeRequest {
                key: vec![],
                ..ok.clone()
            }),
            Err(Invalid::EmptyKey)
        );
        assert_eq!(
            validate_range(&RangeRequest {
                sort_order: 3,
                ..ok.clone()
            }),
            Err(Invalid::InvalidSortOption)
        );
        assert_eq!(
            validate_range(&RangeRequest {
                sort_target: 5,
                ..ok.clone()
            }),
            Err(Invalid::InvalidSortOption)
        );
        assert_eq!(
            validate_range(&RangeRequest {
                sort_target: -1,
                ..ok
            }),
            Err(Invalid::InvalidSortOption)
        );
    }

    /// Put and delete checks, with etcd's error texts.
    #[test]
    fn put_and_delete_checks() {
        let p = PutRequest {
            key: b"a".to_vec(),
            ..Default::default()
        };
        let w = |p: PutRequest| validate_write(&WriteRequest::Put(p), 128);
        assert_eq!(w(p.clone()), Ok(()));
        let e = w(PutRequest {
            key: vec![],
            ..p.clone()
        })
        .expect_err("empty key");
        assert_eq!(
            (e, e.to_string().as_str()),
            (Invalid::EmptyKey, "key is not provided")
        );
        let e = w(PutRequest {
            ignore_value: true,
            value: b"x".to_vec(),
            ..p.clone()
        })
        .expect_err("value");
        assert_eq!(
            (e, e.to_string().as_str()),
            (Invalid::ValueProvided, "value is provided")
        );
        let e = w(PutRequest {
            ignore_lease: true,
            lease: 7,
            ..p.clone()
        })
        .expect_err("lease");
        assert_eq!(
            (e, e.to_string().as_str()),
            (Invalid::LeaseProvided, "lease is provided")
        );
        assert_eq!(
            w(PutRequest {
                ignore_value: true,
                ignore_lease: true,
                ..p
            }),
            Ok(())
        );
        let d = DeleteRangeRequest {
            key: vec![],
            range_end: b"z".to_vec(),
            prev_kv: true,
        };
        assert_eq!(
            validate_write(&WriteRequest::DeleteRange(d), 128),
            Err(Invalid::EmptyKey)
        );
        let c = CompactionRequest {
            revision: -5,
            physical: false,
        };
        assert_eq!(validate_write(&WriteRequest::Compaction(c), 0), Ok(()));
    }

    /// Txn checks: op count per list, compare keys, recursive op checks, empty ops.
    #[test]
    fn txn_checks() {
        let t = |compare: usize, success: Vec<RequestOp>, failure: Vec<RequestOp>, max| {
            let compare = (0..compare)
                .map(|i| Compare {
                    key: format!("k{i}").into(),
                    ..Default::default()
                })
                .collect();
            validate_write(
                &WriteRequest::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                }),
                max,
            )
        };
        assert_eq!(
            t(2, vec![get("a"), get("b")], vec![get("c"), get("d")], 2),
            Ok(())
        );
        let e = t(3, vec![], vec![], 2).expect_err("too many compares");
        assert_eq!(
            (e, e.to_string().as_str()),
            (Invalid::TooManyOps, "too many operations in txn request")
        );
        assert_eq!(
            t(0, vec![], vec![get("a"), get("b"), get("c")], 2),
            Err(Invalid::TooManyOps)
        );
        // The limit applies to nested txns on their own.
        let nested = txn(vec![get("a"), get("b"), get("c")], vec![]);
        assert_eq!(t(0, vec![nested.clone()], vec![], 3), Ok(()));
        assert_eq!(t(0, vec![nested], vec![], 2), Err(Invalid::TooManyOps));
        let empty_cmp = TxnRequest {
            compare: vec![Compare::default()],
            success: vec![],
            failure: vec![],
        };
        assert_eq!(
            validate_write(&WriteRequest::Txn(empty_cmp), 8),
            Err(Invalid::EmptyKey)
        );
        let e = t(0, vec![RequestOp { op: None }], vec![], 8).expect_err("empty op");
        assert_eq!(
            (e, e.to_string().as_str()),
            (Invalid::KeyNotFound, "key not found")
        );
        assert_eq!(
            t(0, vec![], vec![txn(vec![], vec![get("")])], 8),
            Err(Invalid::EmptyKey)
        );
        let bad_sort = RequestOp {
            op: Some(Op::Range(RangeRequest {
                key: b"a".to_vec(),
                sort_order: 9,
                ..Default::default()
            })),
        };
        assert_eq!(
            t(0, vec![bad_sort], vec![], 8),
            Err(Invalid::InvalidSortOption)
        );
        let bad_put = RequestOp {
            op: Some(Op::Put(PutRequest {
                key: b"a".to_vec(),
                value: b"x".to_vec(),
                ignore_value: true,
                ..Default::default()
            })),
        };
        assert_eq!(
            t(0, vec![txn(vec![bad_put], vec![])], vec![], 8),
            Err(Invalid::ValueProvided)
        );
        // Per-op checks come before the duplicate-key rule.
        assert_eq!(
            t(
                0,
                vec![put("a"), put("a"), RequestOp { op: None }],
                vec![],
                8
            ),
            Err(Invalid::KeyNotFound)
        );
    }

    /// The duplicate-key rule of the module doc, case by case.
    #[test]
    fn duplicate_key_rule() {
        let dup = Err(Invalid::DuplicateKey);
        let e = check(vec![put("a"), put("a")]).expect_err("dup");
        assert_eq!(e.to_string(), "duplicate key given in txn request");
        assert_eq!(check(vec![put("a"), put("b")]), Ok(()));
        assert_eq!(check(vec![del("a", "c"), put("b")]), dup);
        assert_eq!(check(vec![put("b"), del("a", "c")]), dup);
        assert_eq!(
            check(vec![put("c"), del("a", "c")]),
            Ok(()),
            "end is exclusive"
        );
        assert_eq!(check(vec![put("a"), del("a", "")]), dup);
        assert_eq!(
            check(vec![put("ab"), del("a", "")]),
            Ok(()),
            "single-key delete"
        );
        assert_eq!(
            check(vec![put("b"), del("c", "a")]),
            Ok(()),
            "empty delete range"
        );
        assert_eq!(
            check(vec![put("zzz"), del("b", "\0")]),
            dup,
            "\\0 is unbounded (deliberate)"
        );
        assert_eq!(check(vec![put("a"), del("b", "\0")]), Ok(()));
        assert_eq!(check(vec![del("a", ""), del("a", "z")]), Ok(()));
        assert_eq!(check(vec![txn(vec![put("a")], vec![put("a")])]), Ok(()));
        assert_eq!(check(vec![txn(vec![put("a")], vec![]), put("a")]), dup);
        assert_eq!(check(vec![put("a"), txn(vec![], vec![put("a")])]), dup);
        assert_eq!(
            check(vec![
                txn(vec![put("a")], vec![]),
                txn(vec![put("a")], vec![])
            ]),
            dup
        );
        assert_eq!(
            check(vec![
                txn(vec![], vec![put("a")]),
                txn(vec![put("a")], vec![])
            ]),
            dup
        );
        assert_eq!(
            check(vec![
                txn(vec![del("a", "")], vec![]),
                txn(vec![put("a")], vec![])
            ]),
            dup
        );
        assert_eq!(
            check(vec![
                txn(vec![put("a")], vec![]),
                txn(vec![del("a", "")], vec![])
            ]),
            Ok(())
        );
        assert_eq!(check(vec![txn(vec![], vec![del("a", "b")]), put("a")]), dup);
        assert_eq!(check(vec![del("a", "b"), txn(vec![put("a")], vec![])]), dup);
        assert_eq!(
            check(vec![txn(vec![put("a")], vec![del("a", "")])]),
            Ok(()),
            "then/else exclusive"
        );
        assert_eq!(
            check(vec![txn(
                vec![txn(vec![put("a")], vec![]), put("a")],
                vec![]
            )]),
            dup,
            "deep"
        );
        // Each branch of the top-level txn is checked on its own.
        let both = TxnRequest {
            compare: vec![],
            success: vec![put("a")],
            failure: vec![put("a")],
        };
        assert_eq!(validate_write(&WriteRequest::Txn(both), 8), Ok(()));
        let bad_else = TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![put("a"), del("a", "")],
        };
        assert_eq!(validate_write(&WriteRequest::Txn(bad_else), 8), dup);
    }
}
