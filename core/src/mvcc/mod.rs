//! MVCC with etcd's semantics exactly, on top of a [`KvEngine`].
//!
//! (Design and worked example to be written by the implementer; see the
//! contract on each item.)

use crate::engine::{EngineError, KvEngine, KvRead};
use crate::error::{Error, Invalid};
use crate::kv::{RangeRequest, RangeResponse, WriteRequest, WriteResponse};
use crate::log::Entry;

/// Persistent metadata of the store, kept in the engine and updated in the
/// same atomic batch as the data each entry changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The store's current revision (1 for an empty store).
    pub current_revision: i64,
    /// The compaction watermark (0 = never compacted).
    pub compact_revision: i64,
    /// Index of the last applied log entry (0 = none).
    pub applied_index: u64,
    /// Term of the last applied log entry (0 = none).
    pub applied_term: u64,
}

/// The MVCC store: owns the cached [`Meta`] and applies committed entries.
#[derive(Debug)]
pub struct Store {
    meta: Meta,
}

impl Store {
    /// Loads the metadata of `engine` (an empty engine is a store at revision 1).
    ///
    /// # Errors
    /// Storage failure or undecodable metadata.
    pub fn open<R: KvRead>(engine: &R) -> Result<Store, EngineError> {
        Ok(Store { meta: read_meta(engine)? })
    }

    /// The cached metadata.
    #[must_use]
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Applies one committed entry: its data changes and the new meta
    /// (revision, applied index and term) in one atomic engine batch.
    ///
    /// The inner `Err` is a deterministic request failure (e.g. lease not
    /// found, compacted): nothing but the applied index changes. The outer
    /// `Err` is a storage failure.
    ///
    /// # Errors
    /// Storage failure.
    pub fn apply<E: KvEngine>(
        &mut self,
        engine: &E,
        entry: &Entry,
    ) -> Result<Result<WriteResponse, Error>, EngineError> {
        let _ = (engine, entry);
        Err(EngineError("mvcc::Store::apply not implemented yet".into()))
    }
}

/// Reads the metadata stored in `view`.
///
/// # Errors
/// Storage failure or undecodable metadata.
pub fn read_meta<R: KvRead>(view: &R) -> Result<Meta, EngineError> {
    let _ = view;
    Ok(Meta { current_revision: 1, ..Meta::default() })
}

/// Serves a range from `view` (an engine or a snapshot), reading the meta
/// from the same view so the answer is consistent.
///
/// # Errors
/// etcd's range errors (compacted, future revision) or storage failure
/// (as [`Error::Internal`]).
pub fn range<R: KvRead>(view: &R, req: &RangeRequest) -> Result<RangeResponse, Error> {
    let _ = (view, req);
    Err(Error::Unimplemented("mvcc::range"))
}

/// Static checks done before a range is served (etcd `checkRangeRequest`).
///
/// # Errors
/// The request is malformed.
pub fn validate_range(req: &RangeRequest) -> Result<(), Invalid> {
    if req.key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    Ok(())
}

/// Static checks done before a write is logged (etcd `checkPutRequest`,
/// `checkDeleteRequest`, `checkTxnRequest` and `checkIntervals`).
///
/// # Errors
/// The request is malformed.
pub fn validate_write(req: &WriteRequest, max_txn_ops: usize) -> Result<(), Invalid> {
    let _ = (req, max_txn_ops);
    Ok(())
}
