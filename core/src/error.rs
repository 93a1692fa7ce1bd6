//! The public error kinds. Few, and each tells the caller what to do
//! (ARCHITECTURE §8.1). The mapping to gRPC codes and etcd's error strings
//! lives only in the server crate.

/// What a client request can fail with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The requested revision is below the compaction watermark. Retry at a
    /// newer revision (etcd: "required revision has been compacted").
    #[error("mvcc: required revision has been compacted (compact revision {compact_revision})")]
    Compacted {
        /// The current compaction watermark.
        compact_revision: i64,
    },
    /// The requested revision is above the current revision
    /// (etcd: "required revision is a future revision").
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put or txn named a lease that does not exist (etcd: "requested lease
    /// not found"). Nothing was changed.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A lease grant named an id that is already in use (etcd: "lease
    /// already exists"). Nothing was changed.
    #[error("lease already exists")]
    LeaseExists,
    /// The database exceeded its quota and the NOSPACE alarm is raised
    /// (etcd: "database space exceeded"): puts, txns with puts and lease
    /// grants fail until space is freed (compact, defragment) and the alarm
    /// is disarmed. Deletes, compactions and reads still work.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// The request itself is malformed; retrying it unchanged will fail again.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] Invalid),
    /// The node cannot serve now (shutting down, overloaded); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was accepted but its outcome is unknown: it may still
    /// take effect (etcd: "request timed out"). Retrying a non-idempotent
    /// write may apply it twice.
    #[error("request timed out: {0}")]
    Timeout(String),
    /// Another node took over this node's bucket: this node no longer
    /// acknowledges writes (ARCHITECTURE §3.5). Nothing it refused with this
    /// error was applied. Retry against the current node.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The feature is not implemented yet. Forwarded between members, the
    /// text survives only if it is one of
    /// [`UNIMPLEMENTED_KNOWN`](crate::cluster::wire::UNIMPLEMENTED_KNOWN)
    /// (a `&'static str` cannot be rebuilt from bytes).
    #[error("unimplemented: {0}")]
    Unimplemented(&'static str),
    /// A membership change named a member the cluster does not have
    /// (etcd: "member not found"). Nothing was changed.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A membership change that may not be made (the last member, or a
    /// node not in cluster mode). Nothing was changed.
    #[error("membership change refused: {0}")]
    MembershipRefused(String),
    /// A bug or a storage failure; the node stops accepting writes.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a request is malformed. Each variant maps to one etcd error text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// etcd: "key is not provided".
    #[error("key is not provided")]
    EmptyKey,
    /// etcd: "key not found" (put with `ignore_value` on a missing key, or an
    /// empty op inside a txn).
    #[error("key not found")]
    KeyNotFound,
    /// etcd: "value is provided" (`ignore_value` with a value).
    #[error("value is provided")]
    ValueProvided,
    /// etcd: "lease is provided" (`ignore_lease` with a lease).
    #[error("lease is provided")]
    LeaseProvided,
    /// etcd: "too many operations in txn request".
    #[error("too many operations in txn request")]
    TooManyOps,
    /// etcd: "duplicate key given in txn request".
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// etcd: "request is too large".
    #[error("request is too large")]
    RequestTooLarge,
    /// etcd: "invalid sort option" (sort order or target out of range).
    #[error("invalid sort option")]
    InvalidSortOption,
    /// etcd: "too large lease TTL" (above 9,000,000,000 s).
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// A negative lease TTL. etcd silently raises it to the minimum TTL; we
    /// refuse it, because a negative duration is always a client bug.
    #[error("lease TTL must not be negative")]
    NegativeLeaseTtl,
    /// A negative lease id in a grant. etcd accepts it, but ids are shown
    /// as unsigned hex everywhere and no client generates one.
    #[error("lease ID must not be negative")]
    NegativeLeaseId,
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
