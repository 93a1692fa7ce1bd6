//! The key-value request and response types: etcd v3's KV messages, field for
//! field (same names, same protobuf tags), so the server maps them one to one
//! and log entries carrying them have a stable, versionable encoding.
//!
//! Revisions here are plain `i64`, as on the wire; `0` means "unset" where
//! etcd says so (e.g. `RangeRequest::revision`).

/// A key's state at one revision (etcd `mvccpb.KeyValue`).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Revision of the last creation of this key.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// Revision of the last modification of this key.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// Number of writes since creation; reset to 0 by a delete.
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// The value.
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    /// Attached lease id, 0 for none.
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// Sort order of a range (etcd `RangeRequest.SortOrder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SortOrder {
    /// Key order, ascending (default).
    None = 0,
    /// Ascending by the sort target.
    Ascend = 1,
    /// Descending by the sort target.
    Descend = 2,
}

/// Field a range is sorted by (etcd `RangeRequest.SortTarget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SortTarget {
    /// By key.
    Key = 0,
    /// By version.
    Version = 1,
    /// By create revision.
    Create = 2,
    /// By mod revision.
    Mod = 3,
    /// By value bytes.
    Value = 4,
}

/// etcd `RangeRequest`.
///
/// Key forms: `range_end` empty → the single `key`; `range_end == [0]` → every
/// key `>= key` (and `key == [0]` with it → every key); otherwise `[key, range_end)`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RangeRequest {
    /// First key (or the only key).
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range, exclusive; see the type doc.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Maximum number of keys returned; 0 = no limit.
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// Read at this revision; <= 0 = current.
    #[prost(int64, tag = "4")]
    pub revision: i64,
    /// A [`SortOrder`].
    #[prost(enumeration = "SortOrder", tag = "5")]
    pub sort_order: i32,
    /// A [`SortTarget`].
    #[prost(enumeration = "SortTarget", tag = "6")]
    pub sort_target: i32,
    /// Serve locally without a linearizability check.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    /// Return keys without values.
    #[prost(bool, tag = "8")]
    pub keys_only: bool,
    /// Return only the count.
    #[prost(bool, tag = "9")]
    pub count_only: bool,
    /// Filter: mod revision >= this (0 = off).
    #[prost(int64, tag = "10")]
    pub min_mod_revision: i64,
    /// Filter: mod revision <= this (0 = off).
    #[prost(int64, tag = "11")]
    pub max_mod_revision: i64,
    /// Filter: create revision >= this (0 = off).
    #[prost(int64, tag = "12")]
    pub min_create_revision: i64,
    /// Filter: create revision <= this (0 = off).
    #[prost(int64, tag = "13")]
    pub max_create_revision: i64,
}

/// etcd `RangeResponse` (the header's revision is `revision`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RangeResponse {
    /// Header revision: the store's current revision when the range was served.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// The keys found (empty for `count_only`).
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    #[prost(bool, tag = "3")]
    pub more: bool,
    /// Number of keys in the range at the requested revision.
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// etcd `PutRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PutRequest {
    /// Key to write.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// New value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none.
    #[prost(int64, tag = "3")]
    pub lease: i64,
    /// Return the previous key-value.
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    /// Keep the current lease (`lease` must be 0).
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// etcd `PutResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PutResponse {
    /// Header revision: the revision of this write.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// The previous key-value, when requested and present.
    #[prost(message, optional, tag = "2")]
    pub prev_kv: Option<KeyValue>,
}

/// etcd `DeleteRangeRequest`; key forms as in [`RangeRequest`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeleteRangeRequest {
    /// First key (or the only key).
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range, exclusive.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    #[prost(bool, tag = "3")]
    pub prev_kv: bool,
}

/// etcd `DeleteRangeResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeleteRangeResponse {
    /// Header revision: the revision of this delete, or the current revision
    /// when nothing was deleted.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// Number of keys deleted.
    #[prost(int64, tag = "2")]
    pub deleted: i64,
    /// The deleted key-values, when requested.
    #[prost(message, repeated, tag = "3")]
    pub prev_kvs: Vec<KeyValue>,
}

/// Comparison operator of a [`Compare`] (etcd `Compare.CompareResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareResult {
    /// `==`
    Equal = 0,
    /// `>`
    Greater = 1,
    /// `<`
    Less = 2,
    /// `!=`
    NotEqual = 3,
}

/// Field a [`Compare`] looks at (etcd `Compare.CompareTarget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CompareTarget {
    /// The key's version.
    Version = 0,
    /// The key's create revision.
    Create = 1,
    /// The key's mod revision.
    Mod = 2,
    /// The key's value.
    Value = 3,
    /// The key's lease.
    Lease = 4,
}

/// The operand of a [`Compare`] (etcd `Compare.target_union`).
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum TargetUnion {
    /// Compared with the version.
    #[prost(int64, tag = "4")]
    Version(i64),
    /// Compared with the create revision.
    #[prost(int64, tag = "5")]
    CreateRevision(i64),
    /// Compared with the mod revision.
    #[prost(int64, tag = "6")]
    ModRevision(i64),
    /// Compared with the value.
    #[prost(bytes, tag = "7")]
    Value(Vec<u8>),
    /// Compared with the lease.
    #[prost(int64, tag = "8")]
    Lease(i64),
}

/// etcd `Compare`: one predicate of a txn. With `range_end` it must hold for
/// every key in the range.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Compare {
    /// A [`CompareResult`].
    #[prost(enumeration = "CompareResult", tag = "1")]
    pub result: i32,
    /// A [`CompareTarget`].
    #[prost(enumeration = "CompareTarget", tag = "2")]
    pub target: i32,
    /// The key compared.
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// The operand.
    #[prost(oneof = "TargetUnion", tags = "4, 5, 6, 7, 8")]
    pub target_union: Option<TargetUnion>,
    /// End of a compared range (exclusive); key forms as in [`RangeRequest`].
    #[prost(bytes = "vec", tag = "64")]
    pub range_end: Vec<u8>,
}

/// One operation of a txn branch (etcd `RequestOp.request`).
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Op {
    /// A range.
    #[prost(message, tag = "1")]
    Range(RangeRequest),
    /// A put.
    #[prost(message, tag = "2")]
    Put(PutRequest),
    /// A delete.
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeRequest),
    /// A nested txn.
    #[prost(message, tag = "4")]
    Txn(TxnRequest),
}

/// etcd `RequestOp`. `op == None` is an empty op, which etcd rejects with
/// "key not found".
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RequestOp {
    /// The operation.
    #[prost(oneof = "Op", tags = "1, 2, 3, 4")]
    pub op: Option<Op>,
}

/// etcd `TxnRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TxnRequest {
    /// Predicates; all must hold for `success` to run.
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    /// Ops run otherwise.
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// One op's result inside a txn (etcd `ResponseOp.response`).
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum OpResponse {
    /// Result of a range.
    #[prost(message, tag = "1")]
    Range(RangeResponse),
    /// Result of a put.
    #[prost(message, tag = "2")]
    Put(PutResponse),
    /// Result of a delete.
    #[prost(message, tag = "3")]
    DeleteRange(DeleteRangeResponse),
    /// Result of a nested txn.
    #[prost(message, tag = "4")]
    Txn(TxnResponse),
}

/// etcd `ResponseOp`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ResponseOp {
    /// The result.
    #[prost(oneof = "OpResponse", tags = "1, 2, 3, 4")]
    pub response: Option<OpResponse>,
}

/// etcd `TxnResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TxnResponse {
    /// Header revision: the txn's revision if it wrote, else the current one.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// Whether every compare held.
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    /// One result per op of the branch that ran, in order.
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

/// etcd `CompactionRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CompactionRequest {
    /// Compact away history below this revision.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// etcd waits for the physical compaction; ours is always done when the
    /// entry applies, so this changes nothing.
    #[prost(bool, tag = "2")]
    pub physical: bool,
}

/// etcd `CompactionResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CompactionResponse {
    /// Header revision: the current revision (compaction takes none).
    #[prost(int64, tag = "1")]
    pub revision: i64,
}

/// A request that changes state and therefore goes through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteRequest {
    /// Put.
    Put(PutRequest),
    /// DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// Txn (may turn out read-only at apply time; it is logged anyway,
    /// because which branch runs is only known when it applies).
    Txn(TxnRequest),
    /// Compaction.
    Compaction(CompactionRequest),
}

/// The result of applying a [`WriteRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResponse {
    /// Put result.
    Put(PutResponse),
    /// DeleteRange result.
    DeleteRange(DeleteRangeResponse),
    /// Txn result.
    Txn(TxnResponse),
    /// Compaction result.
    Compaction(CompactionResponse),
}
