//! The write path: one [`WriteTxn`] per applied entry, as etcd's
//! `storeTxnWrite`. Put, DeleteRange and Txn entries all run through it.
//!
//! A write txn starts at the store's current revision `begin`; every write it
//! makes takes revision `begin + 1`, sub-revisions 0, 1, 2 … in order. Reads
//! inside it see its own earlier writes: they run at `begin` while it has
//! written nothing and at `begin + 1` afterwards, through an overlay of the
//! keys it touched. Nothing reaches the engine until [`WriteTxn::finish`]
//! turns the writes into one batch, so a txn that fails a check simply drops
//! its `WriteTxn`.
//!
//! A Txn request runs in four steps, like etcd's `applierV3backend.Txn`:
//! 1. every compare, nested txns' too, is evaluated against the state at
//!    `begin` (a nested txn's compares do **not** see the writes of the ops
//!    before it), which fixes the path of branches taken;
//! 2. if the request has writes anywhere, each put of the path is checked in
//!    order: `ignore_value`/`ignore_lease` need the key to exist at `begin`
//!    ([`Invalid::KeyNotFound`]), a lease must exist ([`Error::LeaseNotFound`]);
//! 3. each range of the path with a revision is checked: above `begin` →
//!    future revision; below the compaction watermark → compacted (etcd's
//!    watermark is −1 when never compacted, so revision −1 passes and −2
//!    fails);
//! 4. the ops run in order.
//!
//! Any failure in 2–3 fails the whole txn and changes nothing.
//!
//! Header revisions of the responses (checked against etcd 3.4.23): each
//! op's response carries the txn's read revision right after the op runs
//! (`begin` until the first write, then `begin + 1`), so a delete that
//! deletes nothing before any write reports `begin` even if a later op
//! writes. A nested txn's own response revision is 0 (etcd never fills that
//! header). The top-level response carries `begin + 1` if anything was
//! written, else `begin`.
//!
//! ```text
//! store at revision 2, "a" exists
//! txn then: [range a, delete zz, put b, range a, txn{then: [range a, put c]}]
//!   → revision 3; range@2, delete@2 (deleted 0), put@3, range@3, txn@0 [range@3, put@3]
//! ```

use std::collections::BTreeMap;

use prost::Message;

use super::keys::{self, EventKind, Rev, RevLogRecord, VersionRecord};
use super::range::{self, KeyRange, Overlay};
use super::{Fail, Meta};
use crate::engine::{EngineError, KvRead, WriteBatch};
use crate::error::{Error, Invalid};
use crate::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventType, KeyValue, Op, OpResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, TargetUnion, TxnRequest, TxnResponse,
};

/// Which branch each txn of a request takes: `succeeded` for this txn, then
/// one entry per nested txn of the chosen branch, in op order.
#[derive(Debug)]
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

impl Path {
    fn branch<'t>(&self, req: &'t TxnRequest) -> &'t [RequestOp] {
        if self.succeeded {
            &req.success
        } else {
            &req.failure
        }
    }
}

/// One write of a txn, in order; its position is its sub-revision.
#[derive(Debug)]
struct Change {
    key: Vec<u8>,
    /// The new version, `None` for a deletion.
    kv: Option<KeyValue>,
    /// The live version before this txn (a key changes at most once per
    /// txn: the duplicate-key rule), for watch events and lease attachments.
    prev: Option<KeyValue>,
}

/// A write txn over a read view of the store at revision `begin`.
pub(crate) struct WriteTxn<'v, R: KvRead> {
    view: &'v R,
    meta: Meta,
    overlay: Overlay,
    changes: Vec<Change>,
}

const NO_OVERLAY: Overlay = BTreeMap::new();

impl<'v, R: KvRead> WriteTxn<'v, R> {
    /// A txn on `view`, whose metadata is `meta`.
    pub(crate) fn new(view: &'v R, meta: Meta) -> WriteTxn<'v, R> {
        WriteTxn {
            view,
            meta,
            overlay: Overlay::new(),
            changes: Vec::new(),
        }
    }

    fn begin(&self) -> i64 {
        self.meta.current_revision
    }

    /// The revision every write of this txn takes.
    fn write_rev(&self) -> i64 {
        self.begin() + 1
    }

    /// The revision reads run at: `begin`, or `begin + 1` once written.
    pub(crate) fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin()
        } else {
            self.write_rev()
        }
    }

    /// A range inside the txn (etcd `storeTxnWrite.Range` + the applier's
    /// post-processing). The header revision is [`Self::read_rev`].
    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Fail> {
        let read_rev = self.read_rev();
        if req.revision > read_rev {
            return Err(Error::FutureRevision.into());
        }
        let at = if req.revision <= 0 {
            read_rev
        } else {
            req.revision
        };
        if at < self.meta.compact_revision {
            return Err(Error::Compacted {
                compact_revision: self.meta.compact_revision,
            }
            .into());
        }
        let kr = KeyRange::new(&req.key, &req.range_end);
        let fetch = range::fetch_limit(req);
        let fetched = if at == read_rev {
            range::read_current(self.view, &self.overlay, kr, fetch)?
        } else if at == self.begin() {
            range::read_current(self.view, &NO_OVERLAY, kr, fetch)?
        } else {
            range::read_at(self.view, kr, at, fetch)?
        };
        Ok(range::finish(req, fetched, read_rev))
    }

    fn current(&self, key: &[u8]) -> Result<Option<KeyValue>, EngineError> {
        range::get_current(self.view, &self.overlay, key)
    }

    /// A put (etcd `applierV3backend.Put` inside a txn). The lease, if any,
    /// must have been checked by the caller.
    pub(crate) fn put(&mut self, req: &PutRequest) -> Result<PutResponse, Fail> {
        // The live version gives the new one its create revision and version.
        let prev = self.current(&req.key)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(Error::from(Invalid::KeyNotFound).into());
        }
        let value = match &prev {
            Some(p) if req.ignore_value => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match &prev {
            Some(p) if req.ignore_lease => p.lease,
            _ => req.lease,
        };
        let rev = self.write_rev();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev, 1),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: rev,
            version,
            value,
            lease,
        };
        assert!(
            kv.version >= 1 && 1 <= kv.create_revision && kv.create_revision <= kv.mod_revision,
            "mvcc: bad new version of {:?}: {kv:?} (previous {prev:?})",
            req.key
        );
        self.overlay.insert(req.key.clone(), Some(kv.clone()));
        self.changes.push(Change {
            key: req.key.clone(),
            kv: Some(kv),
            prev: prev.clone(),
        });
        Ok(PutResponse {
            revision: self.read_rev(),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// A delete (etcd `applierV3backend.DeleteRange` inside a txn).
    pub(crate) fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Fail> {
        let kr = KeyRange::new(&req.key, &req.range_end);
        let doomed = range::read_current(self.view, &self.overlay, kr, None)?.kvs;
        for kv in &doomed {
            self.overlay.insert(kv.key.clone(), None);
            self.changes.push(Change {
                key: kv.key.clone(),
                kv: None,
                prev: Some(kv.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            revision: self.read_rev(),
            deleted: i64::try_from(doomed.len()).expect("count fits i64"),
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// Runs a whole Txn request (steps 1–4 of the module doc).
    pub(crate) fn txn(
        &mut self,
        req: &TxnRequest,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<TxnResponse, Fail> {
        assert!(
            self.changes.is_empty(),
            "a Txn request starts its own write txn"
        );
        let path = self.path(req)?;
        if has_writes(req) {
            self.check_puts(req, &path, lease_exists)?;
        }
        self.check_ranges(req, &path)?;
        let mut resp = self.exec(req, &path)?;
        resp.revision = self.read_rev();
        Ok(resp)
    }

    fn path(&self, req: &TxnRequest) -> Result<Path, EngineError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let mut path = Path {
            succeeded,
            nested: Vec::new(),
        };
        for op in path.branch(req) {
            if let Some(Op::Txn(t)) = &op.op {
                path.nested.push(self.path(t)?);
            }
        }
        Ok(path)
    }

    /// etcd `applyCompare`, against the state at `begin`.
    fn compare(&self, c: &Compare) -> Result<bool, EngineError> {
        let kr = KeyRange::new(&c.key, &c.range_end);
        let kvs = range::read_current(self.view, &NO_OVERLAY, kr, None)?.kvs;
        if kvs.is_empty() {
            // No key: a value compare always fails (a missing value cannot be
            // told from an empty one); others compare a zero KeyValue.
            return Ok(
                c.target != CompareTarget::Value as i32 && compare_kv(c, &KeyValue::default())
            );
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn check_puts(
        &self,
        req: &TxnRequest,
        path: &Path,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<(), Fail> {
        let mut nested = path.nested.iter();
        for op in path.branch(req) {
            match &op.op {
                Some(Op::Txn(t)) => self.check_puts(
                    t,
                    nested.next().expect("one path per nested txn"),
                    lease_exists,
                )?,
                Some(Op::Put(p)) => {
                    if (p.ignore_value || p.ignore_lease)
                        && range::get_current(self.view, &NO_OVERLAY, &p.key)?.is_none()
                    {
                        return Err(Error::from(Invalid::KeyNotFound).into());
                    }
                    if p.lease != 0 && !lease_exists(p.lease) {
                        return Err(Error::LeaseNotFound.into());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_ranges(&self, req: &TxnRequest, path: &Path) -> Result<(), Error> {
        // etcd's watermark is -1 until the first compaction.
        let first_rev = self.meta.compact_revision;
        let mut nested = path.nested.iter();
        for op in path.branch(req) {
            match &op.op {
                Some(Op::Txn(t)) => {
                    self.check_ranges(t, nested.next().expect("one path per nested txn"))?
                }
                Some(Op::Range(r)) if r.revision != 0 => {
                    if r.revision > self.begin() {
                        return Err(Error::FutureRevision);
                    }
                    if r.revision < first_rev {
                        return Err(Error::Compacted {
                            compact_revision: self.meta.compact_revision,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn exec(&mut self, req: &TxnRequest, path: &Path) -> Result<TxnResponse, Fail> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in path.branch(req) {
            let response = match &op.op {
                Some(Op::Range(r)) => OpResponse::Range(self.range(r)?),
                Some(Op::Put(p)) => OpResponse::Put(self.put(p)?),
                Some(Op::DeleteRange(d)) => OpResponse::DeleteRange(self.delete_range(d)?),
                Some(Op::Txn(t)) => {
                    OpResponse::Txn(self.exec(t, nested.next().expect("one path per nested txn"))?)
                }
                None => return Err(Error::from(Invalid::KeyNotFound).into()),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        // A nested txn's header revision stays 0, as in etcd; the caller
        // fills the top-level one.
        Ok(TxnResponse {
            revision: 0,
            succeeded: path.succeeded,
            responses,
        })
    }

    /// Adds the txn's writes to `batch`: live records, history records and
    /// revision-log entries. Returns whether it wrote anything (and so took
    /// a revision).
    pub(crate) fn finish(self, batch: &mut WriteBatch) -> Option<Vec<Event>> {
        if self.changes.is_empty() {
            return None;
        }
        let rev = self.write_rev();
        for (key, state) in &self.overlay {
            match state {
                Some(kv) => {
                    assert_eq!(
                        kv.mod_revision, rev,
                        "mvcc: live version of {key:?} not from this txn"
                    );
                    batch.put(keys::current_key(key), record_of(kv).encode_to_vec());
                }
                None => batch.delete(keys::current_key(key)),
            }
        }
        for (sub, change) in self.changes.iter().enumerate() {
            let at = Rev {
                main: rev,
                sub: i64::try_from(sub).expect("sub fits i64"),
            };
            let (record, kind) = match &change.kv {
                Some(kv) => (record_of(kv), EventKind::Put),
                None => (
                    VersionRecord {
                        mod_revision: rev,
                        tombstone: true,
                        ..Default::default()
                    },
                    EventKind::Delete,
                ),
            };
            batch.put(keys::history_key(&change.key, at), record.encode_to_vec());
            let log = RevLogRecord {
                key: change.key.clone(),
                kind: kind as i32,
            };
            batch.put(keys::revlog_key(at), log.encode_to_vec());
            // Lease attachments follow the live version.
            let old_lease = change.prev.as_ref().map_or(0, |p| p.lease);
            let new_lease = change.kv.as_ref().map_or(0, |kv| kv.lease);
            if old_lease != new_lease {
                if old_lease != 0 {
                    batch.delete(keys::attach_key(old_lease, &change.key));
                }
                if new_lease != 0 {
                    batch.put(keys::attach_key(new_lease, &change.key), Vec::new());
                }
            }
        }
        // etcd's prev_kv is the key at `mod_revision - 1`: a txn may put a
        // key and delete it later (in a later nested txn, which the
        // duplicate-key rule allows); the delete's prev_kv is then the key
        // as it was before the txn, not the put. So each later change of a
        // key takes the prev of the key's first change.
        let mut before: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
        let events = self
            .changes
            .into_iter()
            .map(|mut change| {
                match before.get(&change.key) {
                    Some(first) => change.prev.clone_from(first),
                    None => {
                        before.insert(change.key.clone(), change.prev.clone());
                    }
                }
                change
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|change| match change.kv {
                Some(kv) => Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv),
                    prev_kv: change.prev,
                },
                None => Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key: change.key,
                        mod_revision: rev,
                        ..KeyValue::default()
                    }),
                    prev_kv: change.prev,
                },
            })
            .collect();
        Some(events)
    }
}

fn record_of(kv: &KeyValue) -> VersionRecord {
    VersionRecord {
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
        tombstone: false,
    }
}

/// Whether any branch of `req`, nested txns included, has a put or delete
/// (etcd `isTxnReadonly` negated).
fn has_writes(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.op {
            Some(Op::Put(_) | Op::DeleteRange(_)) => true,
            Some(Op::Txn(t)) => has_writes(t),
            _ => false,
        })
}

/// etcd `compareKV`: a target union of another kind than `target` compares
/// against 0 (or the empty value); an unknown target compares equal; an
/// unknown result holds.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    // An operand that does not match the target compares as 0 / empty, as in etcd.
    let operand = match (CompareTarget::try_from(c.target), &c.target_union) {
        (Ok(CompareTarget::Version), Some(TargetUnion::Version(v)))
        | (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(v)))
        | (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(v)))
        | (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    };
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(CompareTarget::Version) => kv.version.cmp(&operand),
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&operand),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&operand),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&operand),
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord.is_eq(),
        Ok(CompareResult::NotEqual) => ord.is_ne(),
        Ok(CompareResult::Greater) => ord.is_gt(),
        Ok(CompareResult::Less) => ord.is_lt(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(target: CompareTarget, result: CompareResult, union: Option<TargetUnion>) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: b"k".to_vec(),
            target_union: union,
            range_end: vec![],
        }
    }

    /// Every target and result of compareKV, including mismatched unions and unknown enums.
    #[test]
    fn compare_kv_all_targets_and_results() {
        use CompareResult::{Equal, Greater, Less, NotEqual};
        use CompareTarget::{Create, Lease, Mod, Value, Version};
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
            value: b"m".to_vec(),
            lease: 7,
        };
        let cases: [(CompareTarget, TargetUnion, i64); 4] = [
            (Version, TargetUnion::Version(2), 2),
            (Create, TargetUnion::CreateRevision(3), 3),
            (Mod, TargetUnion::ModRevision(5), 5),
            (Lease, TargetUnion::Lease(7), 7),
        ];
        for (target, _, actual) in cases {
            let u = |v: i64| match target {
                Version => TargetUnion::Version(v),
                Create => TargetUnion::CreateRevision(v),
                Mod => TargetUnion::ModRevision(v),
                _ => TargetUnion::Lease(v),
            };
            for (result, below, equal, above) in [
                (Equal, false, true, false),
                (NotEqual, true, false, true),
                (Greater, true, false, false),
                (Less, false, false, true),
            ] {
                // `below`: operand below the actual value, so actual > operand.
                assert_eq!(
                    compare_kv(&cmp(target, result, Some(u(actual - 1))), &kv),
                    below,
                    "{target:?} {result:?} below"
                );
                assert_eq!(
                    compare_kv(&cmp(target, result, Some(u(actual))), &kv),
                    equal,
                    "{target:?} {result:?} equal"
                );
                assert_eq!(
                    compare_kv(&cmp(target, result, Some(u(actual + 1))), &kv),
                    above,
                    "{target:?} {result:?} above"
                );
            }
            // A union of another kind compares against 0.
            assert!(compare_kv(
                &cmp(target, Greater, Some(TargetUnion::Value(b"x".to_vec()))),
                &kv
            ));
            assert!(compare_kv(&cmp(target, Greater, None), &kv));
        }
        assert!(compare_kv(
            &cmp(Value, Equal, Some(TargetUnion::Value(b"m".to_vec()))),
            &kv
        ));
        assert!(compare_kv(
            &cmp(Value, Greater, Some(TargetUnion::Value(b"l".to_vec()))),
            &kv
        ));
        assert!(compare_kv(
            &cmp(Value, Less, Some(TargetUnion::Value(b"mm".to_vec()))),
            &kv
        ));
        assert!(compare_kv(
            &cmp(Value, NotEqual, Some(TargetUnion::Value(b"".to_vec()))),
            &kv
        ));
        assert!(
            compare_kv(&cmp(Value, Greater, Some(TargetUnion::Version(9))), &kv),
            "value vs empty"
        );
        // Unknown target: equal; unknown result: holds.
        let mut c = cmp(Version, NotEqual, Some(TargetUnion::Version(9)));
        c.target = 17;
        assert!(!compare_kv(&c, &kv));
        c.result = 42;
        assert!(compare_kv(&c, &kv));
    }

    /// has_writes looks into both branches and nested txns.
    #[test]
    fn has_writes_is_recursive() {
        let put = RequestOp {
            op: Some(Op::Put(PutRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })),
        };
        let get = RequestOp {
            op: Some(Op::Range(RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })),
        };
        let nested = |ops: Vec<RequestOp>| RequestOp {
            op: Some(Op::Txn(TxnRequest {
                compare: vec![],
                success: vec![],
                failure: ops,
            })),
        };
        let t = |success: Vec<RequestOp>| TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        };
        assert!(!has_writes(&t(vec![
            get.clone(),
            nested(vec![get.clone()])
        ])));
        assert!(has_writes(&t(vec![get.clone(), nested(vec![put.clone()])])));
        assert!(has_writes(&TxnRequest {
            compare: vec![],
            success: vec![get],
            failure: vec![put]
        }));
    }
}
