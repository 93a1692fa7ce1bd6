//! A reference model of etcd's MVCC, written as plainly as possible and
//! independent of the engine layout: a `BTreeMap` from key to its list of
//! versions. Slow (every read walks every key) and obviously right is the
//! point.
//!
//! Txn writes go straight into the version lists at revision `begin + 1`
//! (as etcd's in-memory index does); reads at `begin` therefore do not see
//! them and reads at `begin + 1` do, without any overlay.
//!
//! The model reuses [`validate_write`]/[`validate_range`] for static checks;
//! those have their own exact unit tests.

use std::collections::BTreeMap;

use crate::error::{Error, Invalid};
use crate::kv::{
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, KeyValue, Op, OpResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp, TargetUnion, TxnRequest,
    TxnResponse, WriteRequest, WriteResponse,
};
use crate::mvcc::{validate_range, validate_write, EventKind, KeyVersion, LoggedEvent, Rev};

/// The reference model.
#[derive(Clone, Debug)]
pub struct Model {
    current: i64,
    compact: i64,
    /// Versions per key, oldest first; `kv == None` is a tombstone.
    keys: BTreeMap<Vec<u8>, Vec<KeyVersion>>,
    log: Vec<LoggedEvent>,
}

impl Default for Model {
    fn default() -> Model {
        Model::new()
    }
}

fn in_range(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        key <= k && k < range_end
    }
}

impl Model {
    /// An empty store: revision 1, never compacted.
    #[must_use]
    pub fn new() -> Model {
        Model {
            current: 1,
            compact: -1,
            keys: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// The current revision.
    #[must_use]
    pub fn current_revision(&self) -> i64 {
        self.current
    }

    /// The compaction watermark (-1 = never compacted, as etcd).
    #[must_use]
    pub fn compact_revision(&self) -> i64 {
        self.compact
    }

    /// Every key with retained history.
    #[must_use]
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.keys().cloned().collect()
    }

    /// Retained versions of `key`, oldest first.
    #[must_use]
    pub fn history(&self, key: &[u8]) -> Vec<KeyVersion> {
        self.keys.get(key).cloned().unwrap_or_default()
    }

    /// The retained revision log.
    #[must_use]
    pub fn log(&self) -> &[LoggedEvent] {
        &self.log
    }

    /// A 128-bit fingerprint of the whole state: both watermarks, every
    /// retained version of every key (create/mod revision, version, value,
    /// lease, tombstones) and the revision log. Equal models have equal
    /// fingerprints; different ones collide with probability ~2^-128 (two
    /// SipHash instances with different domain prefixes).
    ///
    /// Deterministic: the hashers use fixed keys, so a checker that memoises
    /// on fingerprints (sim-tests' linearizability checker) explores the same
    /// states in the same order on every run. O(size of the state).
    #[must_use]
    pub fn fingerprint(&self) -> u128 {
        use std::hash::{DefaultHasher, Hash, Hasher};

        /// Feeds every write to two hashers.
        struct Pair(DefaultHasher, DefaultHasher);
        impl Hasher for Pair {
            fn write(&mut self, bytes: &[u8]) {
                self.0.write(bytes);
                self.1.write(bytes);
            }
            /// The low half only; [`Model::fingerprint`] reads both.
            fn finish(&self) -> u64 {
                self.0.finish()
            }
        }

        // `DefaultHasher::new()` has fixed keys (unlike `RandomState`); the
        // prefixes make the two halves independent.
        let mut h = Pair(DefaultHasher::new(), DefaultHasher::new());
        h.0.write_u64(0x6c6f_5f68_616c_6630);
        h.1.write_u64(0x6869_5f68_616c_6631);
        self.current.hash(&mut h);
        self.compact.hash(&mut h);
        // Length prefixes keep the encoding unambiguous.
        self.keys.len().hash(&mut h);
        for (key, versions) in &self.keys {
            key.hash(&mut h);
            versions.len().hash(&mut h);
            for v in versions {
                v.rev.hash(&mut h);
                v.kv.hash(&mut h);
            }
        }
        self.log.len().hash(&mut h);
        for e in &self.log {
            e.rev.hash(&mut h);
            e.key.hash(&mut h);
            e.kind.hash(&mut h);
        }
        (u128::from(h.1.finish()) << 64) | u128::from(h.0.finish())
    }

    /// `key` at revision `rev`, if it existed then.
    fn get_at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let versions = self.keys.get(key)?;
        versions
            .iter()
            .rev()
            .find(|v| v.rev.main <= rev)
            .and_then(|v| v.kv.clone())
    }

    /// Every kv of the range at `rev`, in key order.
    fn kvs_at(&self, key: &[u8], range_end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.keys
            .keys()
            .filter(|k| in_range(key, range_end, k))
            .filter_map(|k| self.get_at(k, rev))
            .collect()
    }

    /// A range outside any txn.
    ///
    /// # Errors
    /// As [`crate::mvcc::range`].
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        validate_range(req)?;
        self.range_at(req, self.current)
    }

    /// etcd's range with `cur` as the read revision of the (txn) view.
    fn range_at(&self, req: &RangeRequest, cur: i64) -> Result<RangeResponse, Error> {
        if req.revision > cur {
            return Err(Error::FutureRevision);
        }
        let rev = if req.revision <= 0 { cur } else { req.revision };
        if rev < self.compact {
            return Err(Error::Compacted {
                compact_revision: self.compact,
            });
        }
        let all = self.kvs_at(&req.key, &req.range_end, rev);
        let count = all.len() as i64;
        let filtering = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let mut kvs: Vec<KeyValue> = if req.count_only {
            Vec::new()
        } else if req.sort_order == 0 && !filtering && req.limit > 0 {
            // etcd fetches only limit + 1 keys in key order here.
            all.into_iter().take(req.limit as usize + 1).collect()
        } else {
            all
        };
        kvs.retain(|kv| req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision);
        kvs.retain(|kv| req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision);
        kvs.retain(|kv| {
            req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision
        });
        kvs.retain(|kv| {
            req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision
        });
        let mut order = req.sort_order;
        if req.sort_target != 0 && order == 0 {
            order = 1;
        }
        if order != 0 {
            let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
                match req.sort_target {
                    0 => (0, kv.key.clone()),
                    1 => (kv.version, Vec::new()),
                    2 => (kv.create_revision, Vec::new()),
                    3 => (kv.mod_revision, Vec::new()),
                    _ => (0, kv.value.clone()),
                }
            };
            kvs.sort_by_key(field);
            if order == 2 {
                // Descending, ties still in key order: stable sort on the
                // reversed comparison.
                kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv)));
            }
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            revision: cur,
            kvs,
            more,
            count,
        })
    }

    /// Applies a write request.
    ///
    /// # Errors
    /// As [`crate::mvcc::Store::apply`]'s inner error.
    pub fn apply(&mut self, req: &WriteRequest) -> Result<WriteResponse, Error> {
        validate_write(req, usize::MAX)?;
        let begin = self.current;
        let mut subs = 0;
        let resp = match req {
            WriteRequest::Put(p) => {
                if p.lease != 0 {
                    return Err(Error::LeaseNotFound);
                }
                WriteResponse::Put(self.put(p, begin, &mut subs)?)
            }
            WriteRequest::DeleteRange(d) => {
                WriteResponse::DeleteRange(self.delete(d, begin, &mut subs))
            }
            WriteRequest::Txn(t) => WriteResponse::Txn(self.txn(t, begin, &mut subs)?),
            WriteRequest::Compaction(c) => {
                self.compact(c.revision)?;
                WriteResponse::Compaction(CompactionResponse {
                    revision: self.current,
                })
            }
            WriteRequest::LeaseGrant(_) | WriteRequest::LeaseRevoke(_) | WriteRequest::Alarm(_) => {
                return Err(Error::Unimplemented(
                    "the reference model has no leases or alarms",
                ));
            }
        };
        if subs > 0 {
            self.current = begin + 1;
        }
        Ok(resp)
    }

    fn read_rev(begin: i64, subs: i64) -> i64 {
        if subs > 0 {
            begin + 1
        } else {
            begin
        }
    }

    fn write(&mut self, key: &[u8], kv: Option<KeyValue>, begin: i64, subs: &mut i64) {
        let rev = Rev {
            main: begin + 1,
            sub: *subs,
        };
        *subs += 1;
        let kind = if kv.is_some() {
            EventKind::Put
        } else {
            EventKind::Delete
        };
        self.keys
            .entry(key.to_vec())
            .or_default()
            .push(KeyVersion { rev, kv });
        self.log.push(LoggedEvent {
            rev,
            key: key.to_vec(),
            kind,
        });
    }

    fn put(&mut self, p: &PutRequest, begin: i64, subs: &mut i64) -> Result<PutResponse, Error> {
        let prev = self.get_at(&p.key, begin + 1);
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(Invalid::KeyNotFound.into());
        }
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(begin + 1, |kv| kv.create_revision),
            mod_revision: begin + 1,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            value: if p.ignore_value {
                prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
            } else {
                p.value.clone()
            },
            lease: if p.ignore_lease {
                prev.as_ref().map_or(0, |kv| kv.lease)
            } else {
                p.lease
            },
        };
        self.write(&p.key, Some(kv), begin, subs);
        Ok(PutResponse {
            revision: begin + 1,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(
        &mut self,
        d: &DeleteRangeRequest,
        begin: i64,
        subs: &mut i64,
    ) -> DeleteRangeResponse {
        let doomed = self.kvs_at(&d.key, &d.range_end, Model::read_rev(begin, *subs));
        for kv in &doomed {
            self.write(&kv.key, None, begin, subs);
        }
        DeleteRangeResponse {
            revision: Model::read_rev(begin, *subs),
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
        }
    }

    fn compare(&self, c: &Compare, begin: i64) -> bool {
        let kvs = self.kvs_at(&c.key, &c.range_end, begin);
        if kvs.is_empty() {
            if c.target == 3 {
                return false;
            }
            return compare_one(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_one(c, kv))
    }

    /// The ops of the branch each txn takes, decided at `begin`.
    fn branch<'t>(&self, t: &'t TxnRequest, begin: i64) -> (bool, &'t [crate::kv::RequestOp]) {
        let ok = t.compare.iter().all(|c| self.compare(c, begin));
        (ok, if ok { &t.success } else { &t.failure })
    }

    fn check(&self, t: &TxnRequest, begin: i64, puts: bool) -> Result<(), Error> {
        let (_, ops) = self.branch(t, begin);
        for op in ops {
            match &op.op {
                Some(Op::Txn(n)) => self.check(n, begin, puts)?,
                Some(Op::Put(p)) if puts => {
                    if (p.ignore_value || p.ignore_lease) && self.get_at(&p.key, begin).is_none() {
                        return Err(Invalid::KeyNotFound.into());
                    }
                    if p.lease != 0 {
                        return Err(Error::LeaseNotFound);
                    }
                }
                Some(Op::Range(r)) if !puts && r.revision != 0 => {
                    if r.revision > begin {
                        return Err(Error::FutureRevision);
                    }
                    let first = self.compact;
                    if r.revision < first {
                        return Err(Error::Compacted {
                            compact_revision: self.compact,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn txn(&mut self, t: &TxnRequest, begin: i64, subs: &mut i64) -> Result<TxnResponse, Error> {
        fn writes(t: &TxnRequest) -> bool {
            t.success.iter().chain(&t.failure).any(|op| match &op.op {
                Some(Op::Put(_) | Op::DeleteRange(_)) => true,
                Some(Op::Txn(n)) => writes(n),
                _ => false,
            })
        }
        if writes(t) {
            self.check(t, begin, true)?;
        }
        self.check(t, begin, false)?;
        // Decide every branch before running anything.
        let plan = self.plan(t, begin);
        let mut resp = self.exec(t, &plan, begin, subs)?;
        resp.revision = Model::read_rev(begin, *subs);
        Ok(resp)
    }

    /// Branch choices in pre-order: this txn's, then its chosen branch's nested txns'.
    fn plan(&self, t: &TxnRequest, begin: i64) -> Vec<bool> {
        let (ok, ops) = self.branch(t, begin);
        let mut out = vec![ok];
        for op in ops {
            if let Some(Op::Txn(n)) = &op.op {
                out.extend(self.plan(n, begin));
            }
        }
        out
    }

    fn exec(
        &mut self,
        t: &TxnRequest,
        plan: &[bool],
        begin: i64,
        subs: &mut i64,
    ) -> Result<TxnResponse, Error> {
        let ok = plan[0];
        let mut rest = &plan[1..];
        let ops = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::new();
        for op in ops {
            let r = match &op.op {
                Some(Op::Range(r)) => {
                    OpResponse::Range(self.range_at(r, Model::read_rev(begin, *subs))?)
                }
                Some(Op::Put(p)) => OpResponse::Put(self.put(p, begin, subs)?),
                Some(Op::DeleteRange(d)) => OpResponse::DeleteRange(self.delete(d, begin, subs)),
                Some(Op::Txn(n)) => {
                    let used = self.plan(n, begin).len();
                    let resp = self.exec(n, &rest[..used], begin, subs)?;
                    rest = &rest[used..];
                    OpResponse::Txn(resp)
                }
                None => return Err(Invalid::KeyNotFound.into()),
            };
            responses.push(ResponseOp { response: Some(r) });
        }
        Ok(TxnResponse {
            revision: 0,
            succeeded: ok,
            responses,
        })
    }

    fn compact(&mut self, rev: i64) -> Result<(), Error> {
        if rev <= self.compact {
            return Err(Error::Compacted {
                compact_revision: self.compact,
            });
        }
        if rev > self.current {
            return Err(Error::FutureRevision);
        }
        for versions in self.keys.values_mut() {
            if let Some(i) = versions.iter().rposition(|v| v.rev.main <= rev) {
                versions.drain(..i);
                if versions[0].kv.is_none() {
                    versions.remove(0);
                }
            }
        }
        self.keys.retain(|_, versions| !versions.is_empty());
        self.log.retain(|e| e.rev.main >= rev);
        self.compact = rev;
        Ok(())
    }
}

/// etcd's compareKV, spelled out.
fn compare_one(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match (c.target, &c.target_union) {
        (0, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
        (0, _) => kv.version.cmp(&0),
        (1, Some(TargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
        (1, _) => kv.create_revision.cmp(&0),
        (2, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (2, _) => kv.mod_revision.cmp(&0),
        (3, Some(TargetUnion::Value(v))) => kv.value.cmp(v),
        (3, _) => kv.value.as_slice().cmp(&[][..]),
        (4, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
        (4, _) => kv.lease.cmp(&0),
        _ => std::cmp::Ordering::Equal,
    };
    match c.result {
        0 => ord.is_eq(),
        1 => ord.is_gt(),
        2 => ord.is_lt(),
        3 => ord.is_ne(),
        _ => true,
    }
}
