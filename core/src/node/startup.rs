//! Bucket mode, start-up: claim the bucket, catch up from it, fence it.
//!
//! The driver opens the engine, reads the local WAL after the engine's
//! applied index and hands those entries to [`Node::recover`]. In bucket mode
//! they are **not** applied yet: in sync mode nothing is applied before its
//! WAL object is in the bucket, so the engine only holds entries the bucket
//! has, but the local WAL's tail may hold a batch that was fsynced and never
//! uploaded — possibly one a node that took over since then has written
//! differently. The bucket decides. Then [`Node::start_bucket`] runs:
//!
//! 1. **Lock.** Read `leader-lock`; create it (term 1) or take it over with
//!    `If-Match` and term + 1 ([`lock::claim`]). A lost answer is settled by
//!    reading the lock back; a lost race means reading it again. Every start
//!    takes a new term, even from our own previous incarnation: that process
//!    may still be alive.
//! 2. **List** the WAL objects and keep those that can hold the entry after
//!    the engine's applied index.
//! 3. **Fetch** them in order; each must decode whole. Their entries are
//!    applied without replies. A local-tail entry that the bucket has too
//!    must be identical; at the first that differs the rest of the local
//!    tail is dropped (it was never acknowledged: it never reached the
//!    bucket). A gap between objects, or a bucket that ends before the
//!    engine's state, refuses the start with a message saying what is
//!    missing.
//! 4. **Fence.** Upload the rest of the local tail (fsynced, maybe
//!    acknowledged in async mode, never uploaded) followed by a barrier entry
//!    of the new term, as one object at the next index with `If-None-Match`.
//!    The previous writer, if it still runs, finds that key taken on its next
//!    upload and stops acknowledging. If someone else got the key first (the
//!    previous writer was still uploading), go back to 2: its writes may be
//!    acknowledged and must be replayed, and our local tail yields to them.
//! 5. **Reset the local WAL** to start after the barrier (the driver persists
//!    the engine first), restore leases, serve.
//!
//! Until then writes are refused with [`Error::Unavailable`] and the driver
//! must not serve reads. A refused start leaves the node failed
//! ([`Node::failure`] says why); nothing in the bucket was changed except
//! possibly the lock.
//!
//! # Applied state against the bucket
//!
//! Every writer starts by replaying the whole bucket and fencing after it,
//! and a term is claimed once, so the bucket's log at index `i` with term
//! `t` is the log of the writer of term `t` up to `i`. The engine applied
//! up to `X` with term `T(X)` ([`Meta::applied_term`](crate::mvcc::Meta)):
//! a bucket entry at or before `X` with a term above `T(X)`, or one at `X`
//! with another term, is another writer's entry at an index this node
//! applied differently. Applied state cannot be undone: the start is
//! refused ("diverges from the bucket"). This holds in both modes (in a
//! consistent sync-mode history it never fires).
//!
//! # Async mode: the engine ahead of the bucket
//!
//! With asynchronous upload the engine may hold entries the bucket lacks
//! (applied and acknowledged, not uploaded when the node stopped; a trim or
//! a checkpoint persisted them). When the bucket's WAL ends at `B < X`:
//!
//! - sync mode refuses the start ("state beyond the bucket's end": there an
//!   applied entry was always uploaded first, so the bucket lost it or is
//!   another bucket);
//! - async mode asks the driver for local WAL entries `B + 1 ..= X`
//!   ([`Action::ReadWal`], answered by
//!   [`IoDone::WalRead`](crate::node::IoDone::WalRead)); the local WAL still
//!   holds them, since it is never trimmed past the last uploaded index.
//!   They must end with term `T(X)` and start with a term no lower than the
//!   bucket's last entry's (a higher bucket term is a takeover: refused as
//!   above). They then lead the fence object: `B + 1 ..= X`, the local tail,
//!   the barrier. They are not applied again when it lands.
//!
//! Why a read on demand rather than handing every local WAL entry to
//! [`Node::recover`]: the start-up learns only from the bucket which
//! entries it lacks, usually none, and at most what the upload backlog held
//! ([`BucketConfig::async_backlog_bytes_max`](crate::node::BucketConfig::async_backlog_bytes_max),
//! plus the writes pending then), while the local WAL may hold far more
//! (everything since the last trim, up to `trim_every_entries` entries
//! and a local segment). Memory stays proportional to what must be
//! uploaded, and `recover` keeps one meaning in every mode.
//!
//! A local tail that the bucket contradicts yields to the bucket in both
//! modes. In async mode it may have been acknowledged: those writes are the
//! zombie's writes after a takeover, lost by design (see `async_upload`).

use std::collections::VecDeque;

use bytes::Bytes;

use super::upload::create_op;
use super::{Health, Node};
use crate::bucket::lock::{self, LeaderLock, LockClaim, Member};
use crate::bucket::{layout, wal_object};
use crate::engine::{EngineError, KvEngine};
use crate::error::Error;
use crate::log::Entry;
use crate::mvcc;
use crate::node::Action;
use crate::object::{ObjectError, ObjectOp, ObjectReply, ObjectResult, LIST_KEYS_MAX};
use crate::types::{Index, IoId, Term, Time};

/// Where a start-up stands.
#[derive(Debug)]
pub(super) struct Startup {
    me: Member,
    step: Step,
    /// The operation in flight (`None` while backing off or resetting).
    io: Option<IoId>,
    /// The operation of the current step, to send again after a failure.
    op: ObjectOp,
    retry_at: Option<Time>,
    failures: u32,
    /// The engine's applied index and term when the start-up began.
    engine_applied: (Index, Term),
    /// After a takeover: serve no earlier than this.
    hold_until: Option<Time>,
}

#[derive(Debug)]
enum Step {
    /// Reading the lock; `expect` is a claim whose put got no answer: if
    /// the lock now equals it, the claim was won.
    ReadLock { expect: Option<LeaderLock> },
    /// Writing our claim.
    Claim { claim: LockClaim },
    /// Listing `wal/`: the last object starting at or before `next`, and
    /// every object after it.
    List {
        base: Option<Index>,
        after: Vec<Index>,
        last_key: Option<String>,
    },
    /// Downloading the objects still in `queue`; `bucket_end` is the last
    /// index (and its term) of the objects fetched so far.
    Fetch {
        queue: VecDeque<Index>,
        bucket_end: (Index, Term),
    },
    /// Async mode: reading back the applied entries after `bucket_end`
    /// that the bucket lacks.
    ReadWal {
        read_io: IoId,
        bucket_end: (Index, Term),
    },
    /// Uploading the local tail and the barrier; `verify` after a 412.
    Fence {
        entries: Vec<Entry>,
        body: Bytes,
        key: String,
        verify: bool,
    },
    /// Waiting for the driver's `ResetWal`.
    Reset { reset_io: IoId },
    /// Took the bucket over from another writer: waiting until its read
    /// lease has certainly ended before serving (`read_lease` module).
    Hold { until: Time },
}

impl<E: KvEngine> Node<E> {
    /// Starts a bucket-mode node: see the module docs. Call once, after
    /// [`Node::recover`].
    ///
    /// # Panics
    /// Not in bucket mode, or called twice.
    pub fn start_bucket(&mut self, now: Time, me: Member) {
        assert!(
            self.config.bucket.is_some(),
            "start_bucket needs bucket mode"
        );
        assert!(self.startup.is_none(), "start_bucket is called once");
        let _ = now;
        let op = ObjectOp::Get {
            key: layout::LEADER_LOCK.to_owned(),
        };
        let meta = self.store.meta();
        let engine_applied = (Index(meta.applied_index), Term(meta.applied_term));
        self.startup = Some(Startup {
            me,
            step: Step::ReadLock { expect: None },
            io: None,
            op,
            retry_at: None,
            failures: 0,
            engine_applied,
            hold_until: None,
        });
        self.send_startup_op();
    }

    /// Whether the node is still starting (bucket mode): no writes, and
    /// the driver must not serve reads yet.
    #[must_use]
    pub fn is_starting(&self) -> bool {
        self.startup.is_some()
    }

    fn send_startup_op(&mut self) {
        let io = self.io_id();
        let term = self.term;
        let s = self.startup.as_mut().expect("starting");
        s.io = Some(io);
        s.retry_at = None;
        let op = s.op.clone();
        self.actions.push_back(Action::Object { io, term, op });
    }

    /// Makes `op` the current step's operation and sends it.
    fn send_startup_op_of(&mut self, op: ObjectOp) {
        self.startup.as_mut().expect("starting").op = op;
        self.send_startup_op();
    }

    pub(super) fn startup_retry_at(&self) -> Option<Time> {
        self.startup.as_ref().and_then(|s| s.retry_at)
    }

    pub(super) fn retry_startup_if_due(&mut self, now: Time) {
        if self.startup_retry_at().is_some_and(|at| at <= now) {
            self.send_startup_op();
        }
    }

    /// Whether `io` is the start-up's operation in flight.
    pub(super) fn is_startup_io(&self, io: IoId) -> bool {
        self.startup.as_ref().is_some_and(|s| s.io == Some(io))
    }

    /// The same operation again after a pause (doubling, bounded).
    fn startup_backoff(&mut self, now: Time, why: &str) {
        let config = self.config.bucket.clone().expect("bucket mode");
        let s = self.startup.as_mut().expect("starting");
        s.io = None;
        s.failures = s.failures.saturating_add(1);
        s.retry_at = Some(now.plus_nanos(config.backoff_ns(s.failures)));
        tracing::warn!(%why, op = s.op.kind(), key = s.op.key(), "start-up: object store operation failed; retrying");
    }

    /// Refuses to start: the node stays failed with `why`.
    fn refuse_start(&mut self, why: String) {
        tracing::error!(%why, "refusing to start");
        self.startup = None;
        self.health = Health::Failed(why);
    }

    /// A start-up operation completed.
    pub(super) fn on_startup_io(&mut self, now: Time, result: ObjectResult) {
        let s = self.startup.as_mut().expect("starting");
        s.io = None;
        let step = std::mem::replace(&mut s.step, Step::ReadLock { expect: None });
        match (step, result) {
            (Step::ReadLock { expect }, Ok(ObjectReply::Got { body, etag })) => {
                let current = match LeaderLock::decode(&body) {
                    Ok(lock) => lock,
                    Err(e) => {
                        return self
                            .refuse_start(format!("the bucket's leader-lock is unreadable: {e}"))
                    }
                };
                if expect.as_ref() == Some(&current) {
                    return self.lock_won(now, current);
                }
                let claim = lock::claim(Some((&current, &etag)), &self.startup_me());
                self.claim_lock(claim);
            }
            (Step::ReadLock { .. }, Err(ObjectError::NotFound)) => {
                // No lock (or our create got no answer and did not land).
                let claim = lock::claim(None, &self.startup_me());
                self.claim_lock(claim);
            }
            (Step::Claim { claim }, Ok(ObjectReply::Put { .. })) => self.lock_won(now, claim.lock),
            (Step::Claim { .. }, Err(ObjectError::PreconditionFailed | ObjectError::NotFound)) => {
                // Someone wrote the lock since we read it: read it again.
                self.read_lock(None);
            }
            (Step::Claim { claim }, Err(error)) => {
                // The put may have landed: the read-back decides.
                self.startup_step(Step::ReadLock {
                    expect: Some(claim.lock),
                });
                self.store_startup_op(ObjectOp::Get {
                    key: layout::LEADER_LOCK.to_owned(),
                });
                self.startup_backoff(now, &error.to_string());
            }
            (
                Step::List {
                    base,
                    after,
                    last_key,
                },
                Ok(ObjectReply::Listed { objects, truncated }),
            ) => self.on_listed(now, base, after, last_key, objects, truncated),
            (Step::Fetch { queue, bucket_end }, Ok(ObjectReply::Got { body, .. })) => {
                self.on_fetched(now, queue, bucket_end, &body);
            }
            (Step::Fetch { .. }, Err(ObjectError::NotFound)) => {
                // Deleted between the list and the get (GC of a covered
                // object): list again.
                self.list_wal();
            }
            (step @ Step::Fence { .. }, result) => self.on_fence_result(now, step, result),
            (_, Err(error @ (ObjectError::Failed(_) | ObjectError::InvalidKey(_)))) => {
                // Not transient (access denied, a damaged object file …):
                // retrying will not help without an operator.
                let s = self.startup.as_ref().expect("starting");
                let what = format!("{} {}", s.op.kind(), s.op.key());
                self.refuse_start(format!("the object store refused {what}: {error}"));
            }
            (step, Err(error)) => {
                self.startup_step(step);
                self.startup_backoff(now, &error.to_string());
            }
            (step, Ok(reply)) => {
                panic!("start-up step {step:?} got an unexpected answer {reply:?}")
            }
        }
    }

    fn startup_me(&self) -> Member {
        self.startup.as_ref().expect("starting").me.clone()
    }

    fn startup_step(&mut self, step: Step) {
        self.startup.as_mut().expect("starting").step = step;
    }

    /// Makes `op` the current step's operation, to be sent when the
    /// backoff ends.
    fn store_startup_op(&mut self, op: ObjectOp) {
        self.startup.as_mut().expect("starting").op = op;
    }

    fn read_lock(&mut self, expect: Option<LeaderLock>) {
        self.startup_step(Step::ReadLock { expect });
        self.send_startup_op_of(ObjectOp::Get {
            key: layout::LEADER_LOCK.to_owned(),
        });
    }

    fn claim_lock(&mut self, claim: LockClaim) {
        let op = claim.op();
        self.startup_step(Step::Claim { claim });
        self.send_startup_op_of(op);
    }

    /// The claim of `lock` landed (its answer, or the read-back that
    /// showed it, came at `now`).
    fn lock_won(&mut self, now: Time, lock: LeaderLock) {
        assert!(
            lock.term >= self.term,
            "a won lock never lowers the term: {} -> {}",
            self.term,
            lock.term
        );
        tracing::info!(term = lock.term.0, "took the bucket's lock");
        // Term 1 is a bootstrap (the lock was created); any later term took
        // the lock over from a writer that may still be alive, whose read
        // lease must end before we acknowledge anything.
        if lock.term > Term(1) {
            let hold = self
                .config
                .bucket
                .as_ref()
                .expect("bucket mode")
                .takeover_hold_ns();
            self.startup.as_mut().expect("starting").hold_until = Some(now.plus_nanos(hold));
        }
        self.read_lease_holder(lock.leader_id.clone());
        self.term = lock.term;
        self.list_wal();
    }

    /// (Re)starts listing `wal/` from the beginning.
    fn list_wal(&mut self) {
        self.startup_step(Step::List {
            base: None,
            after: Vec::new(),
            last_key: None,
        });
        self.send_startup_op_of(list_op(None));
    }

    fn on_listed(
        &mut self,
        now: Time,
        mut base: Option<Index>,
        mut after: Vec<Index>,
        mut last_key: Option<String>,
        objects: Vec<crate::object::ObjectInfo>,
        truncated: bool,
    ) {
        let next = self.last_index.next();
        for object in objects {
            last_key = Some(object.key.clone());
            let Some(first) = layout::parse_wal_key(&object.key) else {
                tracing::warn!(key = %object.key, "ignoring a foreign object under wal/");
                continue;
            };
            if first <= next {
                base = Some(first);
            } else {
                after.push(first);
            }
        }
        if truncated {
            let op = list_op(last_key.clone());
            self.startup_step(Step::List {
                base,
                after,
                last_key,
            });
            return self.send_startup_op_of(op);
        }
        let queue: VecDeque<Index> = base.into_iter().chain(after).collect();
        if let Some(&first) = queue.front() {
            if first > next {
                return self.refuse_start(format!(
                    "the bucket's WAL starts at index {first} but this node's state ends at index \
                     {}: entries {next}..{} are missing (GC removed them after a newer checkpoint: move this data directory aside and start on an empty one to restore that checkpoint)",
                    next.0 - 1,
                    first.0 - 1
                ));
            }
        }
        self.fetch_next(now, queue, (Index(0), Term(0)));
    }

    fn fetch_next(&mut self, now: Time, queue: VecDeque<Index>, bucket_end: (Index, Term)) {
        if let Some(&first) = queue.front() {
            self.startup_step(Step::Fetch { queue, bucket_end });
            return self.send_startup_op_of(ObjectOp::Get {
                key: layout::wal_key(first),
            });
        }
        if bucket_end.0 < self.last_index && self.is_async_upload() {
            // Applied, maybe acknowledged, not uploaded: upload it first.
            return self.read_wal(bucket_end);
        }
        let bucket_end = bucket_end.0;
        // Fencing at the next index would leave a hole in the bucket if
        // this node's state went further than the bucket's WAL.
        if bucket_end < self.last_index {
            return self.refuse_start(format!(
                "this node's state is at index {} but the bucket's WAL ends at index {bucket_end} \
                 (a different bucket, or writes acknowledged before upload in async mode): \
                 entries {}..{} are missing from the bucket",
                self.last_index,
                bucket_end.0 + 1,
                self.last_index
            ));
        }
        self.start_fence(now, Vec::new());
    }

    fn on_fetched(
        &mut self,
        now: Time,
        mut queue: VecDeque<Index>,
        bucket_end: (Index, Term),
        body: &[u8],
    ) {
        let first = queue.pop_front().expect("fetching an object");
        let key = layout::wal_key(first);
        let entries = match wal_object::decode(&key, first, body) {
            Ok((_, entries)) => entries,
            Err(e) => {
                return self.refuse_start(format!(
                    "{e}; refusing to skip it (it may hold acknowledged writes)"
                ))
            }
        };
        let next = self.last_index.next();
        if first > next {
            return self.refuse_start(format!(
                "the bucket's WAL has a hole: entries {next}..{} are missing before object {key}",
                first.0 - 1
            ));
        }
        if let Some(why) = self.contradicts_engine(&entries) {
            return self.refuse_start(why);
        }
        let last = entries.last().expect("decoded objects are not empty");
        let last = (last.index_id(), last.term_id());
        for entry in entries.into_iter().filter(|e| e.index_id() >= next) {
            if let Err(EngineError(why)) = self.replay_bucket_entry(entry) {
                return self.refuse_start(format!("applying {key} failed: {why}"));
            }
        }
        self.fetch_next(now, queue, bucket_end.max(last));
    }

    /// Why the bucket's `entries` contradict what the engine had applied
    /// when the start-up began, if they do (see the module docs).
    fn contradicts_engine(&self, entries: &[Entry]) -> Option<String> {
        let (applied, applied_term) = self.startup.as_ref().expect("starting").engine_applied;
        let entry = entries.iter().find(|e| {
            e.index_id() <= applied
                && (e.term_id() > applied_term
                    || (e.index_id() == applied && e.term_id() != applied_term))
        })?;
        Some(format!(
            "this node's state diverges from the bucket at index {}: the bucket has an entry of \
             term {} there, but this node applied entries up to index {applied} with term \
             {applied_term} at the last: another writer took the bucket over and wrote different \
             entries at indexes this node had applied (with asynchronous upload, its writes not \
             uploaded before the takeover are lost); move the local data directory away to \
             restore from the bucket",
            entry.index, entry.term
        ))
    }

    /// Async mode, the engine ahead of the bucket: asks the driver for the
    /// applied entries the bucket lacks.
    fn read_wal(&mut self, bucket_end: (Index, Term)) {
        let read_io = self.io_id();
        let (from, through) = (bucket_end.0.next(), self.last_index);
        tracing::info!(
            from = from.0,
            through = through.0,
            "the engine is ahead of the bucket (asynchronous upload): reading the entries back \
             from the local WAL to upload them"
        );
        let s = self.startup.as_mut().expect("starting");
        s.step = Step::ReadWal {
            read_io,
            bucket_end,
        };
        s.io = None;
        self.actions.push_back(Action::ReadWal {
            io: read_io,
            from,
            through,
        });
    }

    /// The driver read the local WAL back (see `read_wal`).
    pub(super) fn on_wal_read(&mut self, now: Time, io: IoId, result: Result<Vec<Entry>, String>) {
        if self.is_cluster_buffer_read(io) {
            return self.on_cluster_buffer_read(result);
        }
        if self.is_cluster_upload_read(io) {
            return self.on_upload_read(now, result);
        }
        let bucket_end = match self.startup.as_ref().map(|s| &s.step) {
            Some(Step::ReadWal {
                read_io,
                bucket_end,
                ..
            }) if *read_io == io => *bucket_end,
            _ => {
                tracing::debug!(io = io.0, "dropping a stale WAL read completion");
                return;
            }
        };
        let (from, through) = (bucket_end.0.next(), self.last_index);
        let (_, applied_term) = self.startup.as_ref().expect("starting").engine_applied;
        let missing = |why: String| {
            format!(
                "this node applied entries {from}..={through} that the bucket's WAL (ending at \
                 index {}) lacks (acknowledged before upload in async mode), and {why}; they \
                 cannot be uploaded: move the local data directory away to restore from the \
                 bucket (losing them)",
                bucket_end.0
            )
        };
        let entries = match result {
            Ok(entries) => entries,
            Err(error) => {
                return self.refuse_start(missing(format!(
                    "the local WAL cannot give them back: {error}"
                )))
            }
        };
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == from.0 + i as u64);
        let ends = entries.last().map(Entry::index_id);
        if !contiguous || ends != Some(through) {
            let held = match (entries.first(), entries.last()) {
                (Some(a), Some(b)) => format!("entries {}..={}", a.index, b.index),
                _ => "nothing".to_owned(),
            };
            return self.refuse_start(missing(format!("the local WAL gave back {held}")));
        }
        let (first, last) = (&entries[0], &entries[entries.len() - 1]);
        if last.term_id() != applied_term {
            return self.refuse_start(missing(format!(
                "the local WAL has term {} at index {through} where the engine applied term \
                 {applied_term}",
                last.term
            )));
        }
        if first.term_id() < bucket_end.1 {
            return self.refuse_start(format!(
                "this node's state diverges from the bucket after index {}: the bucket's entry \
                 there has term {}, this node's entry {from} term {}: another writer took the \
                 bucket over and wrote entries this node lacks while this node applied others \
                 (with asynchronous upload, its writes not uploaded before the takeover are \
                 lost); move the local data directory away to restore from the bucket",
                bucket_end.0, bucket_end.1, first.term
            ));
        }
        self.start_fence(now, entries);
    }

    /// Applies one entry from the bucket during start-up, reconciling the
    /// local tail with it.
    fn replay_bucket_entry(&mut self, entry: Entry) -> Result<(), EngineError> {
        let index = entry.index_id();
        assert_eq!(
            index,
            self.last_index.next(),
            "bucket entries replay in order"
        );
        match self.local_tail.front() {
            Some(local) if local.index_id() == index && *local == entry => {
                self.local_tail.pop_front();
            }
            Some(_) if self.is_async_upload() => {
                tracing::warn!(
                    from = index.0,
                    dropped = self.local_tail.len(),
                    "the local WAL's tail differs from the bucket: dropping it (another writer took \
                     over before it was uploaded; with asynchronous upload it may have been \
                     acknowledged, and is lost)"
                );
                self.local_tail.clear();
            }
            Some(_) => {
                tracing::warn!(
                    from = index.0,
                    dropped = self.local_tail.len(),
                    "the local WAL's tail differs from the bucket: dropping it (never uploaded, so never acknowledged)"
                );
                self.local_tail.clear();
            }
            None => {}
        }
        let _ = self.store.apply(&self.engine, &entry)?;
        self.last_index = index;
        Ok(())
    }

    /// Uploads `applied` (async mode: applied entries the bucket lacks,
    /// ending at the applied index; usually none), the local tail and a
    /// barrier of our term as one object at the bucket's next index.
    fn start_fence(&mut self, now: Time, applied: Vec<Entry>) {
        let _ = now;
        let next = self.last_index.next();
        if let Some(back) = applied.last() {
            assert_eq!(
                back.index_id(),
                self.last_index,
                "entries read back end at the applied index"
            );
        }
        let mut entries = applied;
        let start = entries.first().map_or(next, Entry::index_id);
        if let Some(front) = self.local_tail.front() {
            assert_eq!(
                front.index_id(),
                next,
                "the local tail continues the replayed log"
            );
        }
        entries.extend(self.local_tail.iter().cloned());
        let barrier = Index(start.0 + entries.len() as u64);
        entries.push(Entry::barrier(self.term, barrier));
        let key = layout::wal_key(start);
        let body = wal_object::encode(self.term, &entries);
        let op = create_op(&key, &body);
        self.startup_step(Step::Fence {
            entries,
            body,
            key,
            verify: false,
        });
        self.send_startup_op_of(op);
    }

    fn on_fence_result(&mut self, now: Time, step: Step, result: ObjectResult) {
        let Step::Fence {
            entries,
            body,
            key,
            verify,
        } = step
        else {
            unreachable!("called for the fence step")
        };
        let landed = match (verify, &result) {
            (false, Ok(ObjectReply::Put { .. })) => true,
            (true, Ok(ObjectReply::Got { body: theirs, .. })) => {
                if *theirs != body {
                    // The previous writer extended the log first: replay it.
                    tracing::info!(%key, "another writer got the next index first; catching up again");
                    return self.list_wal();
                }
                true
            }
            (false, Err(ObjectError::PreconditionFailed)) => {
                self.startup_step(Step::Fence {
                    entries,
                    body,
                    key: key.clone(),
                    verify: true,
                });
                return self.send_startup_op_of(ObjectOp::Get { key });
            }
            (true, Err(ObjectError::NotFound)) => {
                // A 409 against a write that did not land: put again.
                let op = create_op(&key, &body);
                self.startup_step(Step::Fence {
                    entries,
                    body,
                    key,
                    verify: false,
                });
                self.store_startup_op(op);
                return self.startup_backoff(now, "conditional write conflicted");
            }
            (_, Err(error)) => {
                let why = error.to_string();
                self.startup_step(Step::Fence {
                    entries,
                    body,
                    key,
                    verify,
                });
                return self.startup_backoff(now, &why);
            }
            (_, Ok(reply)) => panic!("fence step got an unexpected answer {reply:?}"),
        };
        debug_assert!(landed);
        self.local_tail.clear();
        // Entries read back from the local WAL (async mode) are applied
        // already.
        let applied = self.last_index;
        for entry in entries.into_iter().filter(|e| e.index_id() > applied) {
            let index = entry.index_id();
            if let Err(EngineError(why)) = self.store.apply(&self.engine, &entry) {
                return self.refuse_start(format!("applying entry {index} failed: {why}"));
            }
            self.last_index = index;
        }
        tracing::info!(
            term = self.term.0,
            index = self.last_index.0,
            "fenced the bucket"
        );
        let reset_io = self.io_id();
        let s = self.startup.as_mut().expect("starting");
        s.step = Step::Reset { reset_io };
        s.io = None;
        self.actions.push_back(Action::ResetWal {
            io: reset_io,
            next: self.last_index.next(),
        });
    }

    /// The driver reset the local WAL: serve.
    pub(super) fn on_wal_reset(&mut self, now: Time, io: IoId, error: Option<String>) {
        let expected = matches!(
            self.startup.as_ref().map(|s| &s.step),
            Some(Step::Reset { reset_io }) if *reset_io == io
        );
        if !expected {
            tracing::debug!(io = io.0, "dropping a stale WAL reset completion");
            return;
        }
        if let Some(error) = error {
            return self.refuse_start(format!("resetting the local WAL failed: {error}"));
        }
        let hold_until = self.startup.as_ref().and_then(|s| s.hold_until);
        match hold_until {
            Some(until) if now < until => {
                tracing::info!(
                    hold_ms = (until.0 - now.0) / 1_000_000,
                    "caught up; waiting for the previous writer's read lease to end before serving"
                );
                self.startup_step(Step::Hold { until });
            }
            _ => self.serve(now),
        }
    }

    /// When the start-up's hold ends (for the node's timer).
    pub(super) fn startup_hold_until(&self) -> Option<Time> {
        match self.startup.as_ref().map(|s| &s.step) {
            Some(Step::Hold { until }) => Some(*until),
            _ => None,
        }
    }

    /// Serves once the start-up's hold is over.
    pub(super) fn serve_if_hold_over(&mut self, now: Time) {
        if self.startup_hold_until().is_some_and(|until| until <= now) {
            self.serve(now);
        }
    }

    /// The start-up is complete: serve.
    fn serve(&mut self, now: Time) {
        self.startup = None;
        self.trimmed_at = Index(self.store.meta().applied_index);
        if self.is_async_upload() {
            self.async_upload_serving();
        }
        // The checkpoint interval counts from serving; entries replayed
        // from the bucket count toward the entry threshold.
        self.checkpointed.1 = now;
        self.db_size_bytes = self.engine.size_bytes();
        match mvcc::leases(&self.engine) {
            Ok(leases) => self.lessor.restore(now, &leases),
            Err(e) => return self.fail(format!("reading leases failed: {e}")),
        }
        tracing::info!(
            term = self.term.0,
            applied_index = self.store.meta().applied_index,
            revision = self.store.meta().current_revision,
            "serving from the bucket's state"
        );
    }

    /// What a write gets while the node starts.
    pub(super) fn starting_error() -> Error {
        Error::Unavailable("node is starting: catching up from the bucket".into())
    }
}

fn list_op(start_after: Option<String>) -> ObjectOp {
    ObjectOp::List {
        prefix: layout::WAL_PREFIX.to_owned(),
        start_after,
        max_keys: LIST_KEYS_MAX,
    }
}
