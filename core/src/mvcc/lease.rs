//! The persistent half of leases: the lease table and what grant, revoke and
//! checkpoint entries do to the engine (ARCHITECTURE §3.8). The serving
//! node's expiry clock is [`crate::lease::Lessor`].
//!
//! - `l` ‖ id → [`LeaseRecord`] `{id, ttl, remaining_ttl}`: one per lease.
//! - `a` ‖ id ‖ user key → empty: the live keys attached to the lease,
//!   maintained by the write path (`WriteTxn::finish`) so they
//!   always follow the live version of each key.
//!
//! Worked example:
//!
//! ```text
//! entry                          revision  engine afterwards                       answer
//! grant id 7 ttl 10              1         l 7 → {7, 10, 0}                          grant rev 1
//! put a lease 7                  2         c a, a 7 a                                put rev 2
//! put b lease 7                  3         c b, a 7 b                                put rev 3
//! checkpoint 7 → 4 s left        3         l 7 → {7, 10, 4}                          rev 3
//! put a (no lease)               4         a 7 a removed (a is detached)             put rev 4
//! revoke 7                       5         c b removed, a 7 b removed, l 7 removed   revoke rev 5
//! revoke 7                       5         —                                         lease not found
//! ```
//!
//! A revoke deletes every attached key in one write txn, so they share one
//! revision, with sub-revisions (and watch events) in key order; a lease with
//! no keys is revoked without a new revision.

use prost::Message;

use super::keys;
use super::txn::WriteTxn;
use super::{Fail, Meta};
use crate::engine::{EngineError, KvRead, WriteBatch};
use crate::kv::DeleteRangeRequest;
use crate::lease::LeaseInfo;

/// Value of a lease-table key.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct LeaseRecord {
    /// The lease id (equals the id in the key).
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// The granted TTL, seconds.
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    /// Remaining TTL at the last checkpoint, seconds; 0: none since the grant
    /// (or since a renewal reset it).
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// Adds the record of `info` to `batch`.
pub(super) fn put_record(batch: &mut WriteBatch, info: &LeaseInfo) {
    assert!(
        info.id > 0 && info.ttl_secs >= 0,
        "mvcc: bad lease record {info:?}"
    );
    let record = LeaseRecord {
        id: info.id,
        ttl: info.ttl_secs,
        remaining_ttl: info.remaining_ttl_secs,
    };
    batch.put(keys::lease_key(info.id), record.encode_to_vec());
}

/// Every lease in the table of `view`, ascending by id.
///
/// # Errors
/// Storage failure or a malformed record.
pub fn leases<R: KvRead>(view: &R) -> Result<Vec<LeaseInfo>, EngineError> {
    let mut out = Vec::new();
    let end = keys::lease_space_end();
    for item in view.scan(&[keys::LEASE_PREFIX], Some(&end)) {
        let (key, value) = item?;
        let r = LeaseRecord::decode(value.as_slice())
            .map_err(|e| EngineError(format!("mvcc: undecodable lease record {key:?}: {e}")))?;
        if key != keys::lease_key(r.id) || r.id <= 0 {
            return Err(EngineError(format!(
                "mvcc: lease record {r:?} stored under {key:?}"
            )));
        }
        out.push(LeaseInfo {
            id: r.id,
            ttl_secs: r.ttl,
            remaining_ttl_secs: r.remaining_ttl,
        });
    }
    Ok(out)
}

/// The keys attached to lease `id` in `view`, in key order.
///
/// # Errors
/// Storage failure.
pub fn lease_keys<R: KvRead>(view: &R, id: i64) -> Result<Vec<Vec<u8>>, EngineError> {
    let start = keys::attach_prefix(id);
    let end = keys::attach_prefix_end(id);
    view.scan(&start, Some(&end))
        .map(|item| item.map(|(key, _)| key[start.len()..].to_vec()))
        .collect()
}

/// The write txn of a revoke: deletes every key attached to `id`, one
/// single-key delete per key in key order (so sub-revisions and events are
/// in key order), and adds the removal of the lease record to `batch`. The
/// caller commits the txn (which also drops the attachments).
pub(super) fn revoke<'v, R: KvRead>(
    view: &'v R,
    meta: Meta,
    id: i64,
    batch: &mut WriteBatch,
) -> Result<WriteTxn<'v, R>, Fail> {
    let mut wt = WriteTxn::new(view, meta);
    for key in lease_keys(view, id)? {
        let resp = wt.delete_range(&DeleteRangeRequest {
            key: key.clone(),
            ..DeleteRangeRequest::default()
        })?;
        if resp.deleted != 1 {
            // An attachment always names a live key (the write path keeps
            // them in step); anything else is a corrupt engine.
            return Err(EngineError(format!(
                "mvcc: lease {id} is attached to {key:?}, which does not exist"
            ))
            .into());
        }
    }
    batch.delete(keys::lease_key(id));
    Ok(wt)
}
