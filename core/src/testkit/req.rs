//! Short builders for requests in tests.

use crate::kv::{
    CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, Op,
    PutRequest, RangeRequest, RequestOp, TargetUnion, TxnRequest, WriteRequest,
};

/// `put key = value`.
#[must_use]
pub fn put(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

/// `delete [key, range_end)` (key forms as in etcd).
#[must_use]
pub fn del(key: &[u8], range_end: &[u8]) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        prev_kv: false,
    }
}

/// `range [key, range_end)` at the current revision.
#[must_use]
pub fn range(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

/// `range key` at revision `rev`.
#[must_use]
pub fn get_at(key: &[u8], rev: i64) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        revision: rev,
        ..Default::default()
    }
}

/// Every key, at revision `rev` (0 = current).
#[must_use]
pub fn all_at(rev: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..Default::default()
    }
}

/// A compaction at `rev`.
#[must_use]
pub fn compact(rev: i64) -> WriteRequest {
    WriteRequest::Compaction(CompactionRequest {
        revision: rev,
        physical: false,
    })
}

/// A compare of `key`'s `target` with `union` by `result`.
#[must_use]
pub fn cmp(
    key: &[u8],
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.to_vec(),
        target_union: Some(union),
        range_end: vec![],
    }
}

/// `version(key) > 0`: the key exists.
#[must_use]
pub fn exists(key: &[u8]) -> Compare {
    cmp(
        key,
        CompareTarget::Version,
        CompareResult::Greater,
        TargetUnion::Version(0),
    )
}

/// A txn.
#[must_use]
pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// A txn as a write request.
#[must_use]
pub fn txn_w(
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
    failure: Vec<RequestOp>,
) -> WriteRequest {
    WriteRequest::Txn(txn(compare, success, failure))
}

/// An op of a txn branch.
#[must_use]
pub fn op(o: impl IntoOp) -> RequestOp {
    RequestOp {
        op: Some(o.into_op()),
    }
}

/// Requests that can be a txn op (a local trait, so no `From` impls leak
/// into the crate's types).
pub trait IntoOp {
    /// The op.
    fn into_op(self) -> Op;
}

impl IntoOp for RangeRequest {
    fn into_op(self) -> Op {
        Op::Range(self)
    }
}

impl IntoOp for PutRequest {
    fn into_op(self) -> Op {
        Op::Put(self)
    }
}

impl IntoOp for DeleteRangeRequest {
    fn into_op(self) -> Op {
        Op::DeleteRange(self)
    }
}

impl IntoOp for TxnRequest {
    fn into_op(self) -> Op {
        Op::Txn(self)
    }
}

/// A key-value as the store reports it.
#[must_use]
pub fn kv(
    key: &[u8],
    value: &[u8],
    create_revision: i64,
    mod_revision: i64,
    version: i64,
) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision,
        mod_revision,
        version,
        value: value.to_vec(),
        lease: 0,
    }
}
