//! Conversions between etcd's wire messages and core's mirror types.
//!
//! Core's KV types carry the same fields (and protobuf tags) as etcd's, so
//! each conversion is a field-for-field move. Response headers are filled
//! here: the top-level header carries cluster id, member id, revision and
//! raft term; headers of op responses nested in a txn carry only the
//! revision, as etcd's do.

use t4_core::kv;
use t4_proto::etcd::{
    PbCompactionResponse, PbCompare, PbDeleteRequest, PbDeleteResponse, PbEvent, PbKeyValue,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};

/// Identity fields of every top-level response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderIds {
    /// etcd cluster id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// Current term.
    pub raft_term: u64,
}

impl HeaderIds {
    /// A full header at `revision`.
    #[must_use]
    pub fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        })
    }
}

fn nested_header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..PbResponseHeader::default()
    })
}

/// etcd → core.
pub fn range_request(r: PbRangeRequest) -> kv::RangeRequest {
    kv::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: r.sort_order,
        sort_target: r.sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

/// etcd → core.
pub fn put_request(r: PbPutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// etcd → core.
pub fn delete_request(r: PbDeleteRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

fn compare(c: PbCompare) -> kv::Compare {
    let target_union = c.target_union.map(|t| match t {
        PbTargetUnion::Version(v) => kv::TargetUnion::Version(v),
        PbTargetUnion::CreateRevision(v) => kv::TargetUnion::CreateRevision(v),
        PbTargetUnion::ModRevision(v) => kv::TargetUnion::ModRevision(v),
        PbTargetUnion::Value(v) => kv::TargetUnion::Value(v),
        PbTargetUnion::Lease(v) => kv::TargetUnion::Lease(v),
    });
    kv::Compare {
        result: c.result,
        target: c.target,
        key: c.key,
        target_union,
        range_end: c.range_end,
    }
}

fn request_op(op: PbTxnRequestOp) -> kv::RequestOp {
    let op = op.request.map(|r| match r {
        PbTxnOpRequest::RequestRange(r) => kv::Op::Range(range_request(r)),
        PbTxnOpRequest::RequestPut(r) => kv::Op::Put(put_request(r)),
        PbTxnOpRequest::RequestDeleteRange(r) => kv::Op::DeleteRange(delete_request(r)),
        PbTxnOpRequest::RequestTxn(r) => kv::Op::Txn(txn_request(r)),
    });
    kv::RequestOp { op }
}

/// etcd → core.
pub fn txn_request(r: PbTxnRequest) -> kv::TxnRequest {
    kv::TxnRequest {
        compare: r.compare.into_iter().map(compare).collect(),
        success: r.success.into_iter().map(request_op).collect(),
        failure: r.failure.into_iter().map(request_op).collect(),
    }
}

/// core → etcd.
pub fn key_value(kv: kv::KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// core → etcd: one watch event (`mvccpb.Event`; the event type numbers
/// are etcd's in both).
pub fn event(e: kv::Event) -> PbEvent {
    PbEvent {
        r#type: e.r#type,
        kv: e.kv.map(key_value),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// core → etcd, with the given header.
pub fn range_response(r: kv::RangeResponse, header: Option<PbResponseHeader>) -> PbRangeResponse {
    PbRangeResponse {
        header,
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// core → etcd, with the given header.
pub fn put_response(r: kv::PutResponse, header: Option<PbResponseHeader>) -> PbPutResponse {
    PbPutResponse {
        header,
        prev_kv: r.prev_kv.map(key_value),
    }
}

/// core → etcd, with the given header.
pub fn delete_response(
    r: kv::DeleteRangeResponse,
    header: Option<PbResponseHeader>,
) -> PbDeleteResponse {
    PbDeleteResponse {
        header,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

fn response_op(op: kv::ResponseOp) -> PbResponseOp {
    let response = op.response.map(|r| match r {
        kv::OpResponse::Range(r) => {
            let h = nested_header(r.revision);
            PbTxnOpResponse::ResponseRange(range_response(r, h))
        }
        kv::OpResponse::Put(r) => {
            let h = nested_header(r.revision);
            PbTxnOpResponse::ResponsePut(put_response(r, h))
        }
        kv::OpResponse::DeleteRange(r) => {
            let h = nested_header(r.revision);
            PbTxnOpResponse::ResponseDeleteRange(delete_response(r, h))
        }
        kv::OpResponse::Txn(r) => {
            let h = nested_header(r.revision);
            PbTxnOpResponse::ResponseTxn(txn_response(r, h))
        }
    });
    PbResponseOp { response }
}

/// core → etcd, with the given header.
pub fn txn_response(r: kv::TxnResponse, header: Option<PbResponseHeader>) -> PbTxnResponse {
    PbTxnResponse {
        header,
        succeeded: r.succeeded,
        responses: r.responses.into_iter().map(response_op).collect(),
    }
}

/// core → etcd, with the given header.
pub fn compaction_response(header: Option<PbResponseHeader>) -> PbCompactionResponse {
    PbCompactionResponse { header }
}
