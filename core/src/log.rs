//! The replicated log's unit: an entry `(term, index, payload)`.
//!
//! Local mode writes term 1 only, but the shape is the one replication needs:
//! an entry is identified by its index, and its term says which leader wrote
//! it. Applying entry `i` to engine state `S` is deterministic: the same state
//! and the same entry always give the same new state and the same revision.
//!
//! Entries are encoded with protobuf (prost), so fields can be added later
//! without breaking old WAL files; the frame around the encoding (length,
//! CRC) is the WAL codec's business (`crate::wal`).

use prost::Message;

use crate::kv::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseCheckpointRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, TxnRequest, WriteRequest,
};
use crate::types::{Index, Term};

/// One log entry.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Entry {
    /// Term of the leader that created the entry (1 in local mode).
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// Position in the log, dense from 1.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    /// What applying the entry does.
    #[prost(oneof = "Payload", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub payload: Option<Payload>,
}

/// The state change an entry carries.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Payload {
    /// A put.
    #[prost(message, tag = "3")]
    Put(PutRequest),
    /// A delete.
    #[prost(message, tag = "4")]
    DeleteRange(DeleteRangeRequest),
    /// A txn.
    #[prost(message, tag = "5")]
    Txn(TxnRequest),
    /// A compaction (takes no revision).
    #[prost(message, tag = "6")]
    Compaction(CompactionRequest),
    /// A leader's barrier entry: changes nothing, takes no revision.
    #[prost(message, tag = "7")]
    Barrier(Barrier),
    /// A lease grant (takes no revision).
    #[prost(message, tag = "8")]
    LeaseGrant(LeaseGrantRequest),
    /// A lease revoke: deletes every attached key at one revision.
    #[prost(message, tag = "9")]
    LeaseRevoke(LeaseRevokeRequest),
    /// Remaining TTLs of leases (takes no revision).
    #[prost(message, tag = "10")]
    LeaseCheckpoint(LeaseCheckpointRequest),
    /// Alarm activate / deactivate (takes no revision).
    #[prost(message, tag = "11")]
    Alarm(AlarmRequest),
}

/// Payload of a barrier entry (empty; reserved for the election issue).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Barrier {}

impl From<WriteRequest> for Payload {
    fn from(req: WriteRequest) -> Payload {
        match req {
            WriteRequest::Put(r) => Payload::Put(r),
            WriteRequest::DeleteRange(r) => Payload::DeleteRange(r),
            WriteRequest::Txn(r) => Payload::Txn(r),
            WriteRequest::Compaction(r) => Payload::Compaction(r),
            WriteRequest::LeaseGrant(r) => Payload::LeaseGrant(r),
            WriteRequest::LeaseRevoke(r) => Payload::LeaseRevoke(r),
            WriteRequest::Alarm(r) => Payload::Alarm(r),
        }
    }
}

/// The way back from [`Payload`]: every payload a client write turns into
/// (the inverse of `From<WriteRequest>`). The payloads only the node itself
/// writes — [`Payload::Barrier`] and [`Payload::LeaseCheckpoint`] — are no
/// client's write and come back unchanged as the error.
impl TryFrom<Payload> for WriteRequest {
    type Error = Payload;

    fn try_from(payload: Payload) -> Result<WriteRequest, Payload> {
        match payload {
            Payload::Put(r) => Ok(WriteRequest::Put(r)),
            Payload::DeleteRange(r) => Ok(WriteRequest::DeleteRange(r)),
            Payload::Txn(r) => Ok(WriteRequest::Txn(r)),
            Payload::Compaction(r) => Ok(WriteRequest::Compaction(r)),
            Payload::LeaseGrant(r) => Ok(WriteRequest::LeaseGrant(r)),
            Payload::LeaseRevoke(r) => Ok(WriteRequest::LeaseRevoke(r)),
            Payload::Alarm(r) => Ok(WriteRequest::Alarm(r)),
            internal @ (Payload::Barrier(_) | Payload::LeaseCheckpoint(_)) => Err(internal),
        }
    }
}

impl Entry {
    /// An entry carrying a client's write.
    #[must_use]
    pub fn write(term: Term, index: Index, req: WriteRequest) -> Entry {
        Entry {
            term: term.0,
            index: index.0,
            payload: Some(Payload::from(req)),
        }
    }

    /// A leader's barrier entry: the first entry of a new term, which also
    /// fences the bucket against the previous writer (ARCHITECTURE §3.5).
    #[must_use]
    pub fn barrier(term: Term, index: Index) -> Entry {
        Entry {
            term: term.0,
            index: index.0,
            payload: Some(Payload::Barrier(Barrier {})),
        }
    }

    /// The entry's term.
    #[must_use]
    pub fn term_id(&self) -> Term {
        Term(self.term)
    }

    /// The entry's index.
    #[must_use]
    pub fn index_id(&self) -> Index {
        Index(self.index)
    }

    /// Protobuf encoding of the entry (the WAL frame payload).
    #[must_use]
    pub fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes an entry from a WAL frame payload.
    ///
    /// # Errors
    /// The bytes are not a valid entry encoding.
    pub fn decode_from(bytes: &[u8]) -> Result<Entry, prost::DecodeError> {
        Entry::decode(bytes)
    }
}
