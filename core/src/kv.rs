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

/// etcd `LeaseGrantRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseGrantRequest {
    /// Requested time-to-live in seconds (raised to the minimum TTL, as etcd).
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    /// Requested id; 0 lets the node choose one.
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// etcd `LeaseGrantResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseGrantResponse {
    /// Header revision: the current revision (a grant takes none).
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// The lease id.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// The granted TTL in seconds.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// etcd `LeaseRevokeRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseRevokeRequest {
    /// The lease to revoke; its keys are deleted at one revision.
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// etcd `LeaseRevokeResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseRevokeResponse {
    /// Header revision after the revoke (a new one if keys were deleted).
    #[prost(int64, tag = "1")]
    pub revision: i64,
}

/// One lease's remaining TTL, recorded by a checkpoint entry (etcd
/// `LeaseCheckpoint`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseCheckpoint {
    /// The lease.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Seconds left when the checkpoint was taken.
    #[prost(int64, tag = "2")]
    pub remaining_ttl: i64,
}

/// A log entry recording remaining TTLs, so a restart (or a new leader)
/// does not extend leases to their full TTL (etcd `LeaseCheckpointRequest`).
/// Internal: clients never send it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseCheckpointRequest {
    /// The checkpoints.
    #[prost(message, repeated, tag = "1")]
    pub checkpoints: Vec<LeaseCheckpoint>,
}

/// etcd `LeaseKeepAliveResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    /// Header revision.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// The lease.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// The new TTL in seconds; 0 when the lease is unknown or expired.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// etcd `LeaseTimeToLiveResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseTimeToLiveResponse {
    /// Header revision.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// The lease.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// Remaining seconds; -1 when the lease is unknown or expired.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    /// The TTL the lease was granted with (0 when unknown).
    #[prost(int64, tag = "4")]
    pub granted_ttl: i64,
    /// Attached keys, in key order (only when asked for).
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub keys: Vec<Vec<u8>>,
}

/// etcd `LeaseLeasesResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LeaseLeasesResponse {
    /// Header revision.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// Every live lease id, ascending.
    #[prost(int64, repeated, tag = "2")]
    pub ids: Vec<i64>,
}

/// etcd `AlarmType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AlarmType {
    /// No alarm (etcd `NONE`; as a filter: every alarm).
    None = 0,
    /// The database exceeded its quota; space-consuming writes fail.
    Nospace = 1,
    /// A corruption check failed.
    Corrupt = 2,
}

/// etcd `AlarmRequest.AlarmAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AlarmAction {
    /// List alarms.
    Get = 0,
    /// Raise an alarm.
    Activate = 1,
    /// Disarm an alarm.
    Deactivate = 2,
}

/// etcd `AlarmRequest`. Activate and deactivate go through the log (alarms
/// are replicated state, kept in the engine); get is answered from memory.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AlarmRequest {
    /// What to do.
    #[prost(enumeration = "AlarmAction", tag = "1")]
    pub action: i32,
    /// The member the alarm is about (`Deactivate` matches the pair
    /// member + alarm exactly, as etcd).
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// The alarm (`None` with `Get`: every alarm).
    #[prost(enumeration = "AlarmType", tag = "3")]
    pub alarm: i32,
}

/// etcd `AlarmMember`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct AlarmMember {
    /// The member.
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    /// The alarm raised.
    #[prost(enumeration = "AlarmType", tag = "2")]
    pub alarm: i32,
}

/// etcd `AlarmResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AlarmResponse {
    /// Header revision.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// The alarms the request matched (after it applied), ordered.
    #[prost(message, repeated, tag = "2")]
    pub alarms: Vec<AlarmMember>,
}

/// etcd `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventType {
    /// A put.
    Put = 0,
    /// A delete.
    Delete = 1,
}

/// etcd `mvccpb.Event`: one change of one key.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Event {
    /// Put or delete.
    #[prost(enumeration = "EventType", tag = "1")]
    pub r#type: i32,
    /// The key after the change. For a delete: the key with `mod_revision`
    /// set to the deleting revision and every other field zero (as etcd).
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
    /// The key before the change, when the watcher asked for it and the key
    /// existed.
    #[prost(message, optional, tag = "3")]
    pub prev_kv: Option<KeyValue>,
}

/// etcd `WatchCreateRequest.FilterType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WatchFilter {
    /// Drop put events.
    Noput = 0,
    /// Drop delete events.
    Nodelete = 1,
}

/// etcd `WatchCreateRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct WatchCreateRequest {
    /// First key watched.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// End of the range (exclusive); empty: just `key`; `[0]`: every key
    /// from `key` on.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// First revision to deliver; `<= 0`: the next one (current + 1).
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
    /// Send progress notifications while idle.
    #[prost(bool, tag = "4")]
    pub progress_notify: bool,
    /// Event kinds to drop (`WatchFilter` values).
    #[prost(enumeration = "WatchFilter", repeated, tag = "5")]
    pub filters: Vec<i32>,
    /// Attach the previous version of each key to its event.
    #[prost(bool, tag = "6")]
    pub prev_kv: bool,
    /// Client-chosen watch id; 0 lets the node choose.
    #[prost(int64, tag = "7")]
    pub watch_id: i64,
    /// Split responses bigger than the request size limit (done by the
    /// transport; core always produces whole revisions).
    #[prost(bool, tag = "8")]
    pub fragment: bool,
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
    /// Lease grant.
    LeaseGrant(LeaseGrantRequest),
    /// Lease revoke.
    LeaseRevoke(LeaseRevokeRequest),
    /// Alarm activate or deactivate (a `Get` never reaches the log).
    Alarm(AlarmRequest),
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
    /// Lease grant result.
    LeaseGrant(LeaseGrantResponse),
    /// Lease revoke result.
    LeaseRevoke(LeaseRevokeResponse),
    /// Alarm result.
    Alarm(AlarmResponse),
    /// Result of an internal entry (lease checkpoint): the header revision.
    Internal {
        /// The current revision.
        revision: i64,
    },
}

impl WriteResponse {
    /// The header revision of the response.
    #[must_use]
    pub fn revision(&self) -> i64 {
        match self {
            WriteResponse::Put(r) => r.revision,
            WriteResponse::DeleteRange(r) => r.revision,
            WriteResponse::Txn(r) => r.revision,
            WriteResponse::Compaction(r) => r.revision,
            WriteResponse::LeaseGrant(r) => r.revision,
            WriteResponse::LeaseRevoke(r) => r.revision,
            WriteResponse::Alarm(r) => r.revision,
            WriteResponse::Internal { revision } => *revision,
        }
    }
}
