//! MVCC with etcd's semantics exactly (etcd 3.4/3.5 server behaviour), on
//! top of a [`KvEngine`].
//!
//! - An empty store is at revision 1. Each committed Put, each DeleteRange
//!   that deletes at least one key, and each Txn whose executed branch writes
//!   takes the next revision; all writes of one txn share it and are ordered
//!   by sub-revision. Compaction and barrier entries take none.
//! - Every key has a create revision, a mod revision, a version (1 on
//!   creation, +1 per put, gone with a delete) and a lease. Past versions
//!   stay readable until compacted.
//! - A write that fails at apply time (unknown lease, `ignore_value` on a
//!   missing key, compaction out of bounds …) changes nothing but the applied
//!   index and term.
//! - Lease grants, checkpoints and alarms take no revision; a lease revoke
//!   deletes the lease's keys at one new revision (none if it had no keys).
//!   While a NOSPACE alarm is raised, puts, txns with a put and grants fail
//!   with [`Error::NoSpace`] ([`alarm`]).
//!
//! Worked example, one key:
//!
//! ```text
//! entry                         revision  "a" afterwards (create, mod, version)   answer
//! (empty store)                 1         —
//! put a=x                       2         (2, 2, 1) x                             put rev 2
//! put a=y prev_kv               3         (2, 3, 2) y                             put rev 3, prev (2,2,1) x
//! delete a                      4         —                                       deleted 1, rev 4
//! delete a                      4         —                                       deleted 0, rev 4 (no new revision)
//! put a=z                       5         (5, 5, 1) z                             version restarts at 1
//! range a @3                                                                      (2, 3, 2) y, header rev 5
//! range a @4                                                                      no kvs, count 0
//! compact 4                     5                                                 compaction rev 5
//! range a @3                                                                      error: compacted (watermark 4)
//! range a @4                                                                      no kvs (the watermark stays readable)
//! ```
//!
//! Modules: [`keys`] (engine key layout, with its own worked example),
//! `range` (reads), `txn` (the write path and Txn), `compact`, `validate`
//! (static request checks), [`history`] (retained versions and the
//! revision log, for tools and watch), [`lease`] (the lease table; grant,
//! revoke, checkpoint), [`alarm`] (alarms and the NOSPACE rule).

use std::collections::BTreeMap;

use prost::Message;

use crate::engine::{EngineError, KvEngine, KvRead, WriteBatch};
use crate::error::{Error, Invalid};
use crate::kv::{
    AlarmMember, AlarmResponse, CompactionResponse, LeaseGrantResponse, LeaseRevokeResponse,
    RangeRequest, RangeResponse, TxnResponse, WriteResponse,
};
use crate::lease::LeaseInfo;
use crate::log::{Entry, Payload};

pub mod alarm;
mod compact;
mod hash;
pub mod history;
pub mod keys;
pub mod lease;
mod range;
mod txn;
mod validate;

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

pub use alarm::consumes_space;
pub use hash::{hash_all, hash_kv, KvHash};
pub(crate) use history::decode_revlog;
pub use history::{key_history, revision_log, KeyVersion, LoggedEvent};
pub use keys::{EventKind, Rev};
pub use lease::{lease_keys, leases};
pub(crate) use range::decode_history;
pub use validate::{validate_range, validate_write};

use keys::MetaRecord;
use txn::WriteTxn;

/// Persistent metadata of the store, kept in the engine and updated in the
/// same atomic batch as the data each entry changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The store's current revision (1 for an empty store).
    pub current_revision: i64,
    /// The compaction watermark: -1 until the first compaction, as etcd
    /// (`compactMainRev`), so `compact(0)` on a fresh store succeeds once.
    pub compact_revision: i64,
    /// Index of the last applied log entry (0 = none).
    pub applied_index: u64,
    /// Term of the last applied log entry (0 = none).
    pub applied_term: u64,
}

/// Why executing a request stopped: a deterministic request failure (the
/// entry still counts as applied) or a storage failure (it does not).
#[derive(Debug)]
pub(crate) enum Fail {
    /// The request fails; nothing but the applied index changes.
    Request(Error),
    /// The engine failed; nothing is written.
    Engine(EngineError),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Request(e)
    }
}

impl From<Invalid> for Fail {
    fn from(e: Invalid) -> Fail {
        Fail::Request(e.into())
    }
}

impl From<EngineError> for Fail {
    fn from(e: EngineError) -> Fail {
        Fail::Engine(e)
    }
}

/// Where [`Store::execute`] puts what an entry does, all discarded if the
/// request fails.
struct Staged<'s> {
    batch: &'s mut WriteBatch,
    next: &'s mut Meta,
    events: &'s mut Vec<crate::kv::Event>,
    effects: &'s mut Vec<Effect>,
}

/// What applying one entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The answer for the entry's writer (a deterministic request failure
    /// changed nothing but the applied index).
    pub result: Result<WriteResponse, Error>,
    /// The key changes the entry made, in sub-revision order, each with
    /// the key's previous version (`prev_kv`) when it had one; all at
    /// revision `meta().current_revision`. Empty when the entry wrote no
    /// key. Watchers are fed from these, so one write is read once however
    /// many watchers it has.
    pub events: Vec<crate::kv::Event>,
}

/// A change to the store's in-memory state that an entry makes; applied
/// only once the entry's batch is written.
#[derive(Debug)]
enum Effect {
    /// A lease granted or checkpointed: its new record.
    Lease(LeaseInfo),
    /// A lease revoked.
    LeaseGone(i64),
    /// The new alarm list.
    Alarms(Vec<AlarmMember>),
}

/// The MVCC store: owns the cached [`Meta`] and applies committed entries.
///
/// Besides the meta it caches two small tables read at [`Store::open`] and
/// kept in step by [`Store::apply`], so the checks made while applying are
/// memory lookups derived from applied state only: the lease table (is a
/// lease granted?) and the alarm list (is NOSPACE raised?).
///
/// The store assumes it is the only writer of the engine's MVCC key spaces.
#[derive(Debug)]
pub struct Store {
    meta: Meta,
    /// The lease table, by id.
    leases: BTreeMap<i64, LeaseInfo>,
    /// Raised alarms, sorted (member, alarm).
    alarms: Vec<AlarmMember>,
}

impl Store {
    /// Loads the metadata of `engine` (an empty engine is a store at revision 1).
    ///
    /// # Errors
    /// Storage failure or undecodable metadata.
    pub fn open<R: KvRead>(engine: &R) -> Result<Store, EngineError> {
        let leases = lease::leases(engine)?
            .into_iter()
            .map(|info| (info.id, info))
            .collect();
        Ok(Store {
            meta: read_meta(engine)?,
            leases,
            alarms: alarm::load(engine)?,
        })
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
    /// `Err` is a storage failure, or an entry without a payload this version
    /// understands (written by a newer version): nothing changes, and the
    /// caller must stop applying rather than diverge.
    ///
    /// Requests are checked again with [`validate_write`] (without the
    /// op-count limit), so an unchecked request in the log fails the same
    /// way on every node. A barrier is answered like an empty txn (etcd's
    /// no-op): `TxnResponse { revision: current, succeeded: true }`.
    ///
    /// # Errors
    /// Storage failure, unknown payload.
    ///
    /// # Panics
    /// `entry.index` not above the applied index, or `entry.term` below the
    /// applied term: entries apply once, in log order.
    pub fn apply<E: KvEngine>(
        &mut self,
        engine: &E,
        entry: &Entry,
    ) -> Result<Applied, EngineError> {
        assert!(
            entry.index > self.meta.applied_index,
            "mvcc: entry {} applied after entry {}: entries apply once, in order",
            entry.index,
            self.meta.applied_index
        );
        assert!(
            entry.term >= self.meta.applied_term,
            "mvcc: entry {} of term {} after term {}",
            entry.index,
            entry.term,
            self.meta.applied_term
        );
        let Some(payload) = &entry.payload else {
            return Err(EngineError(format!(
                "mvcc: entry {} has no payload this version understands",
                entry.index
            )));
        };
        let mut batch = WriteBatch::default();
        let mut next = self.meta;
        let mut events = Vec::new();
        let mut effects = Vec::new();
        let staged = Staged {
            batch: &mut batch,
            next: &mut next,
            events: &mut events,
            effects: &mut effects,
        };
        let result = match self.execute(engine, payload, staged) {
            Ok(resp) => Ok(resp),
            Err(Fail::Request(e)) => {
                batch = WriteBatch::default();
                next = self.meta;
                events.clear();
                effects.clear();
                Err(e)
            }
            Err(Fail::Engine(e)) => return Err(e),
        };
        next.applied_index = entry.index;
        next.applied_term = entry.term;
        self.assert_transition(&next);
        batch.put(keys::META_KEY.to_vec(), encode_meta(&next));
        engine.write(batch)?;
        self.meta = next;
        for effect in effects {
            match effect {
                Effect::Lease(info) => {
                    self.leases.insert(info.id, info);
                }
                Effect::LeaseGone(id) => {
                    let gone = self.leases.remove(&id);
                    assert!(
                        gone.is_some(),
                        "mvcc: revoked lease {id} was not in the table"
                    );
                }
                Effect::Alarms(alarms) => self.alarms = alarms,
            }
        }
        Ok(Applied { result, events })
    }

    /// Runs `payload` against `view`, adding its writes to `batch`, its
    /// revision changes to `next` and its in-memory changes to `effects`. On
    /// `Err` the caller discards all of them.
    fn execute<R: KvRead>(
        &self,
        view: &R,
        payload: &Payload,
        staged: Staged<'_>,
    ) -> Result<WriteResponse, Fail> {
        let Staged {
            batch,
            next,
            events,
            effects,
        } = staged;
        let current = self.meta.current_revision;
        // etcd's capped applier: with NOSPACE raised nothing may grow the store.
        if alarm::nospace(&self.alarms) && alarm::consumes_space(payload) {
            return Err(Error::NoSpace.into());
        }
        let mut commit = |wt: WriteTxn<'_, R>, batch: &mut WriteBatch, next: &mut Meta| {
            if let Some(written) = wt.finish(batch) {
                next.current_revision = current + 1;
                *events = written;
            }
        };
        match payload {
            Payload::Put(r) => {
                validate::check_put(r)?;
                // Outside a txn etcd looks the lease up before the key.
                if r.lease != 0 && !self.lease_exists(r.lease) {
                    return Err(Error::LeaseNotFound.into());
                }
                let mut wt = WriteTxn::new(view, self.meta);
                let resp = wt.put(r)?;
                commit(wt, batch, next);
                assert_eq!(
                    next.current_revision,
                    current + 1,
                    "mvcc: a put takes a revision"
                );
                Ok(WriteResponse::Put(resp))
            }
            Payload::DeleteRange(r) => {
                validate::check_delete(r)?;
                let mut wt = WriteTxn::new(view, self.meta);
                let resp = wt.delete_range(r)?;
                commit(wt, batch, next);
                Ok(WriteResponse::DeleteRange(resp))
            }
            Payload::Txn(r) => {
                validate::check_txn_request(r, usize::MAX)?;
                let mut wt = WriteTxn::new(view, self.meta);
                let resp = wt.txn(r, &|id| self.lease_exists(id))?;
                commit(wt, batch, next);
                assert_eq!(
                    resp.revision, next.current_revision,
                    "mvcc: txn answer vs store revision"
                );
                Ok(WriteResponse::Txn(resp))
            }
            Payload::Compaction(r) => {
                compact::compact(view, &self.meta, r.revision, batch)?;
                next.compact_revision = r.revision;
                Ok(WriteResponse::Compaction(CompactionResponse {
                    revision: current,
                }))
            }
            Payload::Barrier(_) => Ok(WriteResponse::Txn(TxnResponse {
                revision: current,
                succeeded: true,
                responses: Vec::new(),
            })),
            Payload::LeaseGrant(r) => {
                validate::check_lease_grant(r)?;
                if r.id == 0 {
                    // The node picks an id before logging a grant.
                    return Err(
                        Error::Internal("lease grant without an id in the log".into()).into(),
                    );
                }
                if self.lease_exists(r.id) {
                    return Err(Error::LeaseExists.into());
                }
                let info = LeaseInfo {
                    id: r.id,
                    ttl_secs: r.ttl,
                    remaining_ttl_secs: 0,
                };
                lease::put_record(batch, &info);
                effects.push(Effect::Lease(info));
                Ok(WriteResponse::LeaseGrant(LeaseGrantResponse {
                    revision: current,
                    id: r.id,
                    ttl: r.ttl,
                }))
            }
            Payload::LeaseRevoke(r) => {
                if !self.lease_exists(r.id) {
                    return Err(Error::LeaseNotFound.into());
                }
                let wt = lease::revoke(view, self.meta, r.id, batch)?;
                commit(wt, batch, next);
                effects.push(Effect::LeaseGone(r.id));
                Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse {
                    revision: next.current_revision,
                }))
            }
            Payload::LeaseCheckpoint(r) => {
                for cp in &r.checkpoints {
                    // A lease revoked since the checkpoint was taken is skipped.
                    let Some(info) = self.leases.get(&cp.id) else {
                        continue;
                    };
                    let info = LeaseInfo {
                        remaining_ttl_secs: cp.remaining_ttl,
                        ..*info
                    };
                    lease::put_record(batch, &info);
                    effects.push(Effect::Lease(info));
                }
                Ok(WriteResponse::Internal { revision: current })
            }
            Payload::Alarm(r) => {
                let (changed, alarms) = alarm::apply(&self.alarms, r, batch);
                if let Some(list) = changed {
                    effects.push(Effect::Alarms(list));
                }
                Ok(WriteResponse::Alarm(AlarmResponse {
                    revision: current,
                    alarms,
                }))
            }
        }
    }

    /// The alarms raised, ordered (member, alarm).
    #[must_use]
    pub fn alarms(&self) -> &[AlarmMember] {
        &self.alarms
    }

    /// Whether lease `id` is in the lease table (granted and not yet
    /// revoked, whether or not it expired on some node's clock). A memory
    /// lookup derived from applied entries only, so every node decides alike.
    #[must_use]
    pub fn lease_exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    fn assert_transition(&self, next: &Meta) {
        let prev = &self.meta;
        assert!(
            next.current_revision == prev.current_revision
                || next.current_revision == prev.current_revision + 1,
            "mvcc: revision must grow by at most one per entry: {prev:?} -> {next:?}"
        );
        assert!(
            prev.compact_revision <= next.compact_revision && next.compact_revision <= next.current_revision,
            "mvcc: compaction watermark must not go back nor pass the revision: {prev:?} -> {next:?}"
        );
    }
}

fn encode_meta(meta: &Meta) -> Vec<u8> {
    MetaRecord {
        current_revision: meta.current_revision,
        compact_revision: meta.compact_revision,
        applied_index: meta.applied_index,
        applied_term: meta.applied_term,
    }
    .encode_to_vec()
}

/// Reads the metadata stored in `view`.
///
/// # Errors
/// Storage failure or undecodable metadata.
pub fn read_meta<R: KvRead>(view: &R) -> Result<Meta, EngineError> {
    let Some(bytes) = view.get(keys::META_KEY)? else {
        return Ok(Meta {
            current_revision: 1,
            compact_revision: -1,
            ..Meta::default()
        });
    };
    let r = MetaRecord::decode(bytes.as_slice())
        .map_err(|e| EngineError(format!("mvcc: undecodable meta: {e}")))?;
    let meta = Meta {
        current_revision: r.current_revision,
        compact_revision: r.compact_revision,
        applied_index: r.applied_index,
        applied_term: r.applied_term,
    };
    if meta.current_revision < 1
        || meta.compact_revision < -1
        || meta.compact_revision > meta.current_revision
    {
        return Err(EngineError(format!("mvcc: corrupt meta {meta:?}")));
    }
    Ok(meta)
}

/// Serves a range from `view` (an engine or a snapshot), reading the meta
/// from the same view so the answer is consistent. Pass a snapshot when
/// entries may be applied concurrently.
///
/// The header revision is the store's current revision, whatever revision
/// was read. `revision <= 0` reads the current revision; above it →
/// [`Error::FutureRevision`]; below the compaction watermark →
/// [`Error::Compacted`] (the watermark itself is readable). The request is
/// validated first ([`validate_range`]).
///
/// # Errors
/// etcd's range errors (compacted, future revision), an invalid request, or
/// storage failure (as [`Error::Internal`]).
pub fn range<R: KvRead>(view: &R, req: &RangeRequest) -> Result<RangeResponse, Error> {
    validate_range(req)?;
    let internal = |e: EngineError| Error::Internal(e.to_string());
    let meta = read_meta(view).map_err(internal)?;
    // A range outside a txn is a txn that writes nothing, as in etcd.
    match WriteTxn::new(view, meta).range(req) {
        Ok(resp) => Ok(resp),
        Err(Fail::Request(e)) => Err(e),
        Err(Fail::Engine(e)) => Err(internal(e)),
    }
}
