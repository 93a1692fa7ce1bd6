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
//!
//! Leases are the persistent half only, as [`crate::mvcc::Store::apply`]
//! sees them: a table from id to granted TTL, and attachments, which are not
//! stored at all but read off each key's live version (its `lease` field),
//! because the store keeps its attachment records in step with exactly that.
//! Expiry is the serving node's clock ([`crate::lease::Lessor`]) and is not
//! modelled; an expired lease reaches the log as a revoke. Worked example
//! (`mvcc/lease.rs` has an engine-side counterpart):
//!
//! ```text
//! entry                     revision  leases        attached            answer
//! grant id 7 ttl 10         1         {7: 10}       —                   grant rev 1, id 7, ttl 10
//! grant id 7 ttl 5          1         {7: 10}       —                   lease exists
//! put a lease 7             2         {7: 10}       7: [a]              put rev 2
//! put b lease 7             3         {7: 10}       7: [a, b]           put rev 3
//! put b ignore_lease        4         {7: 10}       7: [a, b]           put rev 4 (b keeps lease 7)
//! put a (lease 0)           5         {7: 10}       7: [b]              put rev 5 (a is detached)
//! put c lease 9             5         {7: 10}       7: [b]              lease not found
//! revoke 7                  6         {}            —                   revoke rev 6: delete b @6
//! revoke 7                  6         {}            —                   lease not found
//! grant id 8 ttl 2          6         {8: 2}        —                   grant rev 6, id 8, ttl 2
//! revoke 8                  6         {}            —                   revoke rev 6 (no keys: no new revision)
//! ```
//!
//! A revoke deletes all its keys at one revision, one single-key delete per
//! key in key order (so sub-revisions, and the events derived from them,
//! are in key order).

use std::collections::BTreeMap;

use crate::error::{Error, Invalid};
use crate::kv::{
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse, Op, OpResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseOp, TargetUnion, TxnRequest, TxnResponse,
    WriteRequest, WriteResponse,
};
use crate::mvcc::{validate_range, validate_write, EventKind, KeyVersion, LoggedEvent, Rev};

#[cfg(test)]
mod tests;

/// The reference model.
#[derive(Clone, Debug)]
pub struct Model {
    current: i64,
    compact: i64,
    /// Versions per key, oldest first; `kv == None` is a tombstone.
    keys: BTreeMap<Vec<u8>, Vec<KeyVersion>>,
    log: Vec<LoggedEvent>,
    /// The lease table: id → granted TTL, seconds. The keys attached to a
    /// lease are those whose live version carries its id; every such id is
    /// in this table (asserted when a put attaches a key; a revoke deletes
    /// every key attached to the lease it removes).
    leases: BTreeMap<i64, i64>,
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
            leases: BTreeMap::new(),
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

    /// The lease table: `(id, granted TTL in seconds)`, ascending by id (as
    /// [`crate::mvcc::leases`] lists the store's, without the checkpointed
    /// remaining TTL, which no MVCC answer shows).
    #[must_use]
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.leases.iter().map(|(&id, &ttl)| (id, ttl)).collect()
    }

    /// The keys attached to lease `id` (those whose live version carries
    /// it), in key order, as [`crate::mvcc::lease_keys`].
    #[must_use]
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .filter(|(_, versions)| {
                versions
                    .last()
                    .and_then(|v| v.kv.as_ref())
                    .is_some_and(|kv| kv.lease == id)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// A 128-bit fingerprint of the whole state: both watermarks, every
    /// retained version of every key (create/mod revision, version, value,
    /// lease, tombstones), the revision log and the lease table (ids and
    /// TTLs; attachments follow from the versions). Equal models have equal
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
        self.leases.len().hash(&mut h);
        for (id, ttl_secs) in &self.leases {
            id.hash(&mut h);
            ttl_secs.hash(&mut h);
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

    /// Applies a write request as [`crate::mvcc::Store::apply`] applies the
    /// entry carrying it (so a grant carries its final id and TTL, as
    /// admission logs it).
    ///
    /// Leases:
    /// - grant: takes no revision and answers the current one, with the id
    ///   and the TTL as given (the minimum-TTL raise happens at admission,
    ///   before the log). An id already granted → [`Error::LeaseExists`].
    ///   Id 0 never reaches the store's apply (admission picks an id), and
    ///   fails here exactly as it would there: [`Error::Internal`].
    /// - revoke: an unknown id → [`Error::LeaseNotFound`]; otherwise its
    ///   keys are deleted at one new revision, in key order (none: no
    ///   revision), and the lease leaves the table.
    /// - put (alone or in a txn) naming a lease not in the table →
    ///   [`Error::LeaseNotFound`], and the whole request changes nothing.
    ///   Outside a txn the lease is checked before `ignore_value` /
    ///   `ignore_lease` look for the key; inside one, put by put in the
    ///   order of the path taken, as the store does.
    ///
    /// Alarms are not modelled: an alarm request fails with
    /// [`Error::Unimplemented`], and nothing here refuses writes while NOSPACE
    /// is raised (sim-tests' `truth` tracks that itself).
    ///
    /// # Errors
    /// As [`crate::mvcc::Store::apply`]'s inner error.
    pub fn apply(&mut self, req: &WriteRequest) -> Result<WriteResponse, Error> {
        validate_write(req, usize::MAX)?;
        let begin = self.current;
        let mut subs = 0;
        let resp = match req {
            WriteRequest::Put(p) => {
                // Outside a txn the store looks the lease up before the key.
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
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
            WriteRequest::LeaseGrant(g) => WriteResponse::LeaseGrant(self.grant(g)?),
            WriteRequest::LeaseRevoke(r) => {
                WriteResponse::LeaseRevoke(self.revoke(r.id, begin, &mut subs)?)
            }
            WriteRequest::Alarm(_) => {
                return Err(Error::Unimplemented("the reference model has no alarms"));
            }
        };
        if subs > 0 {
            self.current = begin + 1;
        }
        Ok(resp)
    }

    fn grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse, Error> {
        if g.id == 0 {
            // The store's answer for this entry, word for word.
            return Err(Error::Internal(
                "lease grant without an id in the log".into(),
            ));
        }
        if self.leases.contains_key(&g.id) {
            return Err(Error::LeaseExists);
        }
        self.leases.insert(g.id, g.ttl);
        Ok(LeaseGrantResponse {
            revision: self.current,
            id: g.id,
            ttl: g.ttl,
        })
    }

    fn revoke(
        &mut self,
        id: i64,
        begin: i64,
        subs: &mut i64,
    ) -> Result<LeaseRevokeResponse, Error> {
        if self.leases.remove(&id).is_none() {
            return Err(Error::LeaseNotFound);
        }
        assert_eq!(*subs, 0, "a revoke is an entry of its own");
        for key in self.lease_keys(id) {
            self.write(&key, None, begin, subs);
        }
        assert!(
            self.lease_keys(id).is_empty(),
            "model: lease {id} still has keys after its revoke"
        );
        Ok(LeaseRevokeResponse {
            revision: Model::read_rev(begin, *subs),
        })
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
        // Paired with the revoke, which deletes every key of the lease it
        // removes: a live key never names a lease outside the table.
        assert!(
            kv.lease == 0 || self.leases.contains_key(&kv.lease),
            "model: {:?} attached to lease {}, which is not granted",
            p.key,
            kv.lease
        );
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
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
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
