//! Cluster mode with the bucket as the disaster-recovery tier
//! (ARCHITECTURE §3.4 cluster row, §3.10), when
//! [`ClusterConfig::bucket`](crate::cluster::ClusterConfig::bucket) is set.
//!
//! # The leader uploads the committed log
//!
//! The leader uploads applied entries (applied means committed) as
//! WAL objects `wal/<first index>`, one segment at a time, in log order,
//! each created with `If-None-Match`, sealed once its oldest entry is
//! `segment_max_age_ns` old or its frames reach `segment_max_bytes`. It
//! starts as soon as it leads, before its barrier is applied: followers
//! behind its memory catch up from the bucket, and until they do, none
//! acknowledges the barrier (the simulator found a new leader whose
//! applied entries only it held wait for its barrier forever).
//!
//! ```text
//!  leading ─► List wal/ (from a hint, else from the start) ─► Get the last object
//!          ─► the bucket holds the log through its last entry (0: empty)
//!  applied > through, segment due ─► Put wal/<through+1> (If-None-Match)
//!      Ok  ─► through = the segment's last
//!      412 ─► Get it: entries that agree with our log ─► through = its last
//!                     entries that disagree          ─► stop uploading (error)
//!      failure ─► back off and retry
//! ```
//!
//! Why this needs no fencing, unlike single-node bucket mode: committed
//! entries are the same in every member's log, so any two uploads of an
//! index carry the same entry, whichever leader (current or deposed, still
//! running) wrote them. Objects may be cut differently (a deposed leader's
//! `wal/100` may end at 150 where ours would end at 180): a 412 reads the
//! object and continues after its end. An object's header term is its last
//! entry's term, so header terms never go down along the log even when a
//! deposed leader uploads after a newer one
//! ([`crate::bucket::recovery::BucketReplay`] checks that).
//!
//! The entries come from the in-memory log tail, which keeps
//! `peer_buffer_entries` applied entries, and every entry the bucket is
//! not known to hold (within `async_backlog_bytes_max`). Where memory does
//! not reach back to the bucket's end (a restarted leader, whose memory
//! holds only what it read back at start-up; a long bucket outage), the
//! leader reads the entries back from its local WAL, in runs of
//! [`LOCAL_READ_ENTRIES`]: every member keeps its WAL back to the last
//! index it knows the bucket holds (nothing is trimmed after a restart
//! until it learns that index again). If the local WAL does not hold them
//! either (a member that was wiped and caught up past them), the missing
//! entries are only in members' engines: the leader logs an error naming
//! them, continues after them, and makes a checkpoint due at once. The
//! checkpoint covers the hole for restores; a follower that needs entries
//! inside it cannot catch up from the bucket (below).
//!
//! # Checkpoints
//!
//! The serving leader takes checkpoints as a single node does (the
//! `checkpoint` module): the taken checkpoint is held until the bucket's
//! WAL reaches the applied index at that moment, so a manifest never names
//! state the bucket's WAL does not continue. Steps that publish or delete
//! (the manifest, `manifest/latest`, GC deletions) wait until the
//! leader's read lease holds: a deposed leader must not delete what the
//! new leader's checkpoints use. Leadership lost mid-way abandons it.
//!
//! # A follower behind the leader's memory catches up from the bucket
//!
//! A follower whose next entry the leader no longer holds gets
//! [`PeerMsg::Behind`](crate::cluster::PeerMsg::Behind) instead of an append (with every heartbeat). It
//! lists `wal/`, downloads the objects after its applied index in order
//! ([`BucketReplay`] checks holes, overlaps and terms) and takes their
//! entries into its log as committed — they are, since only committed
//! entries are uploaded — exactly as if the leader had sent them:
//! conflicting uncommitted entries of its own are truncated, the entries
//! are appended to its WAL and fsynced, then applied. Its acknowledgement
//! after the fsync tells the leader where to continue. When the bucket
//! ends before the leader's memory begins (the leader has not uploaded
//! that far yet), it lists again a little later. A hole (entries that no
//! object holds, e.g. collected by GC after a newer checkpoint) is logged
//! as an error and the node asks its driver to start it over
//! ([`Action::StartOver`]): the driver checks that the bucket's newest
//! checkpoint is ahead and no object holds the next entry, moves the
//! engine aside, restores the checkpoint and starts a new node on it,
//! which rejoins as a new member (`t4` does this, at run time and at every
//! start). Until then, or if the driver does not, it lists again after a
//! long pause.
//!
//! `Behind` counts as hearing from the leader (the follower refuses
//! promises for an election timeout after it), like any append.

use std::collections::VecDeque;

use bytes::Bytes;

use super::Role;
use crate::bucket::layout;
use crate::bucket::lock::Member;
use crate::bucket::recovery::BucketReplay;
use crate::bucket::wal_object;
use crate::engine::KvEngine;
use crate::log::Entry;
use crate::node::checkpoint::TakenCheckpoint;
use crate::node::upload::create_op;
use crate::node::{Action, BucketConfig, Health, Node};
use crate::object::{ObjectError, ObjectOp, ObjectReply, ObjectResult, LIST_KEYS_MAX};
use crate::types::{Index, IoId, Term, Time};
use crate::wal::frame_len;

/// Pause before a follower lists the bucket again when it ended before the
/// leader's memory begins.
const CATCH_UP_RELIST_NS: u64 = 500_000_000;

/// Entries a leader reads back from its local WAL at a time, for a bucket
/// its memory does not reach back to.
pub const LOCAL_READ_ENTRIES: u64 = 1024;

/// The bucket tier's state in a cluster node.
#[derive(Debug, Default)]
pub(super) struct ClusterBucket {
    up: Upload,
    catch_up: Option<CatchUp>,
    /// The highest index this node knows the bucket holds: where the next
    /// leadership's listing starts.
    known_through: Index,
    /// Uploads stopped for good: the bucket disagrees with the log.
    stopped: bool,
}

/// One leadership's upload.
#[derive(Debug, Default)]
struct Upload {
    /// The term it belongs to (`Term(0)`: none).
    term: Term,
    /// The bucket holds the log through this index (`None`: not known yet).
    through: Option<Index>,
    /// The operation in flight, or waiting for its retry.
    op: Option<UpOp>,
    io: Option<IoId>,
    retry_at: Option<Time>,
    failures: u32,
    /// When the oldest applied entry the bucket lacks applied.
    since: Option<Time>,
    /// Frame bytes of applied entries the bucket lacks (an estimate for
    /// sealing by size).
    pending_bytes: u64,
    /// A taken checkpoint waiting for the bucket to hold the log through
    /// `.2`.
    held: Option<(IoId, Result<TakenCheckpoint, String>, Index)>,
    /// Applied entries read back from the local WAL (after `through`, in
    /// order, below the in-memory log).
    local: VecDeque<Entry>,
    /// The local WAL did not hold the entries after `through`.
    local_failed: bool,
}

#[derive(Clone, Debug)]
enum UpOp {
    /// Listing `wal/` for its last object; `hinted`: started after a hint
    /// (an empty answer then means listing from the start).
    List {
        start_after: Option<String>,
        hinted: bool,
        newest: Option<Index>,
    },
    /// Reading the last object, to learn where the bucket's log ends.
    ReadLast { first: Index },
    /// Creating a segment's object.
    Put {
        first: Index,
        last: Index,
        body: Bytes,
    },
    /// Reading it back after a 412.
    Verify {
        first: Index,
        last: Index,
        body: Bytes,
    },
    /// Reading entries the in-memory log no longer holds from the local
    /// WAL (an `Action::ReadWal`).
    ReadLocal { from: Index, through: Index },
}

/// A follower's (or candidate's) catch-up from the bucket.
#[derive(Debug)]
struct CatchUp {
    /// The first index the leader still holds: done once past it.
    first: Index,
    /// A candidate's: the term, and the best promiser to fetch the rest
    /// from once the bucket's WAL is read to its end.
    candidate: Option<(Term, Member)>,
    /// The applied index it started from.
    from: Index,
    replay: BucketReplay,
    /// First indexes listed so far (while listing).
    listing: Vec<Index>,
    /// First index of the last object pushed to the replay.
    pushed: Option<Index>,
    /// Objects still to download, in order.
    queue: VecDeque<Index>,
    op: Option<ObjectOp>,
    io: Option<IoId>,
    retry_at: Option<Time>,
    failures: u32,
}

impl CatchUp {
    /// A catch-up from `applied` (listing `wal/` first), done once past
    /// `first`; a candidate's reads to the bucket's end instead.
    fn start(applied: Index, first: Index, candidate: Option<(Term, Member)>) -> CatchUp {
        CatchUp {
            first,
            candidate,
            from: applied,
            replay: BucketReplay::new(applied),
            listing: Vec::new(),
            pushed: None,
            queue: VecDeque::new(),
            op: Some(list_op(None)),
            io: None,
            retry_at: None,
            failures: 0,
        }
    }
}

impl UpOp {
    fn object_op(&self) -> ObjectOp {
        match self {
            UpOp::List { start_after, .. } => list_op(start_after.clone()),
            UpOp::ReadLast { first } | UpOp::Verify { first, .. } => ObjectOp::Get {
                key: layout::wal_key(*first),
            },
            UpOp::Put { first, body, .. } => create_op(&layout::wal_key(*first), body),
            UpOp::ReadLocal { .. } => unreachable!("a local read is not an object operation"),
        }
    }
}

fn list_op(start_after: Option<String>) -> ObjectOp {
    ObjectOp::List {
        prefix: layout::WAL_PREFIX.to_owned(),
        start_after,
        max_keys: LIST_KEYS_MAX,
    }
}

impl<E: KvEngine> Node<E> {
    fn tier(&self) -> Option<&BucketConfig> {
        self.cluster.as_deref().and_then(|c| c.cfg.bucket.as_ref())
    }

    /// Cluster mode with the bucket tier: the last index known to be in
    /// the bucket (the leader's upload; elsewhere what this node last
    /// knew).
    #[must_use]
    pub fn cluster_uploaded_through(&self) -> Option<Index> {
        self.tier()?;
        let b = &self.cl().bucket;
        Some(b.up.through.unwrap_or(b.known_through).max(b.known_through))
    }

    /// The index after which the local WAL keeps every entry: the last
    /// one this node knows the bucket holds (0 after a restart, until it
    /// learns it again), so that it can upload the rest if it leads
    /// (`None`: no tier, or uploads stopped).
    pub(in crate::node) fn tier_wal_keeps_after(&self) -> Option<Index> {
        if self.cl().bucket.stopped {
            return None;
        }
        self.cluster_uploaded_through()
    }

    /// Whether `io` is an object operation of the upload or the catch-up.
    pub(in crate::node) fn is_cluster_bucket_io(&self, io: IoId) -> bool {
        self.cluster.as_deref().is_some_and(|c| {
            c.bucket.up.io == Some(io)
                || c.bucket.catch_up.as_ref().is_some_and(|u| u.io == Some(io))
        })
    }

    pub(in crate::node) fn on_cluster_bucket_io(
        &mut self,
        now: Time,
        io: IoId,
        result: ObjectResult,
    ) {
        if self.cl().bucket.up.io == Some(io) {
            self.on_upload_io(now, result);
        } else {
            self.on_catch_up_io(now, result);
        }
    }

    /// The earliest time the tier needs the timer.
    pub(super) fn cluster_bucket_timer(&self) -> Option<Time> {
        let tier = self.tier()?;
        let c = self.cl();
        let up = &c.bucket.up;
        let seal = match (up.op.is_none(), up.through, up.since) {
            (true, Some(_), Some(since)) if c.is_leader() => {
                Some(since.plus_nanos(tier.segment_max_age_ns))
            }
            _ => None,
        };
        let catch_up = c.bucket.catch_up.as_ref().and_then(|u| u.retry_at);
        [up.retry_at, seal, catch_up].into_iter().flatten().min()
    }

    pub(super) fn cluster_bucket_on_timeout(&mut self, now: Time) {
        if self.tier().is_none() {
            return;
        }
        let b = &mut self.clm().bucket;
        if b.up.retry_at.is_some_and(|at| at <= now) {
            b.up.retry_at = None;
            if self.upload_current() {
                self.send_upload_op();
            } else {
                self.reset_upload(now);
            }
        }
        self.cluster_upload_pump(now);
        let c = self.clm();
        if let Some(u) = c.bucket.catch_up.as_mut() {
            if u.retry_at.is_some_and(|at| at <= now) {
                u.retry_at = None;
                self.send_catch_up_op();
            }
        }
    }

    // ----- the leader's upload -----

    /// Whether the upload belongs to this node's current leadership.
    fn upload_current(&self) -> bool {
        let c = self.cl();
        c.is_leader() && c.bucket.up.term == self.term
    }

    /// Forgets an upload of a previous leadership (its answers in flight
    /// are dropped); a held checkpoint is abandoned.
    fn reset_upload(&mut self, now: Time) {
        let b = &mut self.clm().bucket;
        if let Some(through) = b.up.through {
            b.known_through = b.known_through.max(through);
        }
        let held = std::mem::take(&mut b.up).held;
        if let Some((io, _, _)) = held {
            self.on_checkpoint_taken(now, io, Err("no longer the serving leader".into()));
        }
    }

    /// Leader: after applying, and on the timer: starts the next step of
    /// the upload if one is due.
    pub(super) fn cluster_upload_pump(&mut self, now: Time) {
        let Some(tier) = self.tier() else { return };
        let (age_ns, segment_bytes) = (tier.segment_max_age_ns, tier.segment_max_bytes);
        if !matches!(self.health, Health::Serving) || self.cl().bucket.stopped {
            return;
        }
        if !self.cl().is_leader() {
            if self.cl().bucket.up.term != Term(0) {
                self.reset_upload(now);
            }
            return;
        }
        if self.cl().bucket.up.term != self.term {
            self.reset_upload(now);
            let term = self.term;
            let b = &mut self.clm().bucket;
            let hint = b.known_through;
            b.up.term = term;
            // Whatever the previous leader left is due at once.
            b.up.since = Some(Time(now.0.saturating_sub(age_ns)));
            b.up.op = Some(UpOp::List {
                start_after: (hint > Index(0)).then(|| layout::wal_key(hint)),
                hinted: hint > Index(0),
                newest: None,
            });
            return self.send_upload_op();
        }
        let applied = Index(self.store.meta().applied_index);
        let c = self.cl();
        let up = &c.bucket.up;
        let Some(through) = up.through else { return };
        if up.op.is_some() {
            return;
        }
        if applied <= through {
            let up = &mut self.clm().bucket.up;
            up.since = None;
            up.pending_bytes = 0;
            return;
        }
        let since = *self.clm().bucket.up.since.get_or_insert(now);
        let up = &self.cl().bucket.up;
        if since.plus_nanos(age_ns) > now && up.pending_bytes < segment_bytes {
            return;
        }
        let mut from = through.next();
        let held_from = self.cl().log.first_index();
        let up = &mut self.clm().bucket.up;
        while up.local.front().is_some_and(|e| e.index_id() < from) {
            up.local.pop_front();
        }
        let local_holds = up.local.front().is_some_and(|e| e.index_id() == from);
        if from < held_from && !local_holds && !up.local_failed {
            let through = Index((held_from.0 - 1).min(from.0 + LOCAL_READ_ENTRIES - 1));
            up.local.clear();
            up.op = Some(UpOp::ReadLocal { from, through });
            return self.send_upload_op();
        }
        if from < held_from && !local_holds {
            self.clm().bucket.up.local_failed = false;
            tracing::error!(
                missing_first = from.0,
                missing_last = held_from.0 - 1,
                "the bucket's WAL lacks committed entries this leader no longer holds in memory; \
                 continuing after them and taking a checkpoint now (restores from older \
                 checkpoints stop at the hole)"
            );
            from = held_from;
            self.clm().bucket.up.through = Some(Index(from.0 - 1));
            self.checkpoint_not_before = None;
            self.checkpoint_forced = true;
        }
        let mut entries: Vec<Entry> = Vec::new();
        let mut bytes = 0u64;
        let mut index = from;
        while index <= applied && bytes < segment_bytes {
            // A run read back from the local WAL ends the segment where it
            // ends.
            let Some(entry) = self.upload_entry(index).cloned() else {
                break;
            };
            bytes += frame_len(prost::Message::encoded_len(&entry)) as u64;
            entries.push(entry);
            index = index.next();
        }
        assert!(!entries.is_empty(), "applied entry {from} is held");
        let last = entries.last().expect("at least one entry").index_id();
        let term = entries.last().expect("at least one entry").term_id();
        let body = wal_object::encode(term, &entries);
        let up = &mut self.clm().bucket.up;
        up.pending_bytes = up.pending_bytes.saturating_sub(bytes);
        up.op = Some(UpOp::Put {
            first: from,
            last,
            body,
        });
        self.send_upload_op();
    }

    /// Applied entry `index` for the upload: in memory, or read back from
    /// the local WAL.
    fn upload_entry(&self, index: Index) -> Option<&Entry> {
        let c = self.cl();
        c.log.get(index).or_else(|| {
            let local = &c.bucket.up.local;
            let first = local.front()?.index_id();
            local.get(usize::try_from(index.0.checked_sub(first.0)?).ok()?)
        })
    }

    /// Whether `io` is the upload's read of the local WAL.
    pub(in crate::node) fn is_cluster_upload_read(&self, io: IoId) -> bool {
        self.cluster.as_deref().is_some_and(|c| {
            c.bucket.up.io == Some(io) && matches!(c.bucket.up.op, Some(UpOp::ReadLocal { .. }))
        })
    }

    /// The local WAL's entries the bucket lacks (or why it does not hold
    /// them: the upload then leaves a hole).
    pub(in crate::node) fn on_upload_read(
        &mut self,
        now: Time,
        result: Result<Vec<Entry>, String>,
    ) {
        let up = &mut self.clm().bucket.up;
        up.io = None;
        let Some(UpOp::ReadLocal { from, through }) = up.op.take() else {
            unreachable!("checked by is_cluster_upload_read")
        };
        if !self.upload_current() || !matches!(self.health, Health::Serving) {
            return self.reset_upload(now);
        }
        let fits = |entries: &[Entry]| {
            entries.first().map(Entry::index_id) == Some(from)
                && entries.last().map(Entry::index_id) == Some(through)
                && entries.windows(2).all(|w| w[1].index == w[0].index + 1)
        };
        let up = &mut self.clm().bucket.up;
        match result {
            Ok(entries) if fits(&entries) => {
                tracing::info!(
                    from = from.0,
                    through = through.0,
                    "uploading entries the bucket lacks from the local WAL"
                );
                up.local = entries.into();
            }
            Ok(entries) => {
                tracing::warn!(
                    from = from.0,
                    through = through.0,
                    got = entries.len(),
                    "the local WAL answered with other entries than asked for"
                );
                up.local_failed = true;
            }
            Err(error) => {
                tracing::warn!(%error, from = from.0, through = through.0, "the local WAL does not hold entries the bucket lacks");
                up.local_failed = true;
            }
        }
        self.cluster_upload_pump(now);
    }

    /// Leader: the index after which applied entries stay in memory until
    /// uploaded (everything while the bucket's end is being found), unless
    /// the backlog passed `async_backlog_bytes_max` (a long outage: memory
    /// stays bounded, and the bucket will have a hole a checkpoint covers).
    pub(super) fn upload_keeps_after(&self) -> Option<Index> {
        let tier = self.tier()?;
        let c = self.cl();
        let b = &c.bucket;
        if b.up.pending_bytes >= tier.async_backlog_bytes_max || b.stopped {
            return None;
        }
        if c.is_leader() && b.up.term == self.term {
            Some(b.up.through.unwrap_or(Index(0)))
        } else {
            // Any member may lead next: it keeps what the leader said the
            // bucket lacks, so that it can upload it.
            Some(b.known_through)
        }
    }

    /// Counts an applied entry the bucket may lack toward the backlog (the
    /// leader's next segment's size, every member's memory bound).
    pub(super) fn cluster_upload_note_applied(&mut self, entry: &Entry) {
        if self.tier().is_some() {
            let b = &mut self.clm().bucket;
            if entry.index_id() > b.known_through.max(b.up.through.unwrap_or(Index(0))) {
                let bytes = frame_len(prost::Message::encoded_len(entry)) as u64;
                b.up.pending_bytes = b.up.pending_bytes.saturating_add(bytes);
            }
        }
    }

    /// Member: the leader says the bucket holds the log through
    /// `uploaded`; the entries up to it no longer count toward the backlog.
    pub(super) fn note_uploaded(&mut self, uploaded: Index) {
        if self.tier().is_none() || uploaded <= self.cl().bucket.known_through {
            return;
        }
        let applied = Index(self.store.meta().applied_index);
        let c = self.cl();
        let from = c.bucket.known_through.next().max(c.log.first_index());
        let mut freed = 0u64;
        let mut index = from;
        while index <= uploaded.min(applied) {
            if let Some(e) = c.log.get(index) {
                freed += frame_len(prost::Message::encoded_len(e)) as u64;
            }
            index = index.next();
        }
        let b = &mut self.clm().bucket;
        b.known_through = uploaded;
        b.up.pending_bytes = b.up.pending_bytes.saturating_sub(freed);
    }

    fn send_upload_op(&mut self) {
        let io = self.io_id();
        let term = self.term;
        let up = &mut self.clm().bucket.up;
        up.io = Some(io);
        up.retry_at = None;
        let action = match up.op.as_ref().expect("an upload step") {
            UpOp::ReadLocal { from, through } => Action::ReadWal {
                io,
                from: *from,
                through: *through,
            },
            op => Action::Object {
                io,
                term,
                op: op.object_op(),
            },
        };
        self.actions.push_back(action);
    }

    fn on_upload_io(&mut self, now: Time, result: ObjectResult) {
        let up = &mut self.clm().bucket.up;
        up.io = None;
        if !self.upload_current() || !matches!(self.health, Health::Serving) {
            return self.reset_upload(now);
        }
        let op = self.cl().bucket.up.op.clone().expect("an upload step");
        match (op, result) {
            (
                UpOp::List {
                    hinted, mut newest, ..
                },
                Ok(ObjectReply::Listed { objects, truncated }),
            ) => {
                let last_key = objects.last().map(|o| o.key.clone());
                for object in &objects {
                    match layout::parse_wal_key(&object.key) {
                        Some(first) => newest = newest.max(Some(first)),
                        None => {
                            tracing::warn!(key = %object.key, "ignoring a foreign object under wal/")
                        }
                    }
                }
                let next = if truncated {
                    UpOp::List {
                        start_after: last_key,
                        hinted,
                        newest,
                    }
                } else if let Some(first) = newest {
                    UpOp::ReadLast { first }
                } else if hinted {
                    UpOp::List {
                        start_after: None,
                        hinted: false,
                        newest: None,
                    }
                } else {
                    return self.upload_found_end(now, Index(0));
                };
                self.next_upload_op(next);
            }
            (UpOp::ReadLast { first }, Ok(ObjectReply::Got { body, .. })) => {
                match self.agreeing_end(first, &body) {
                    Ok(end) => self.upload_found_end(now, end),
                    Err(why) => self.stop_uploads(&why),
                }
            }
            (UpOp::ReadLast { .. }, Err(ObjectError::NotFound)) => {
                // Collected between the list and the read: list again.
                self.next_upload_op(UpOp::List {
                    start_after: None,
                    hinted: false,
                    newest: None,
                });
            }
            (UpOp::Put { last, .. }, Ok(ObjectReply::Put { .. })) => {
                self.segment_uploaded(now, last)
            }
            (UpOp::Put { first, last, body }, Err(ObjectError::PreconditionFailed)) => {
                // Not `next_upload_op`: a 409 (the object is not there)
                // comes back as a failure of this step, and its backoff
                // grows while another put of the key stays in flight.
                self.clm().bucket.up.op = Some(UpOp::Verify { first, last, body });
                self.send_upload_op();
            }
            (
                UpOp::Verify {
                    last,
                    body: ours,
                    first,
                },
                Ok(ObjectReply::Got { body, .. }),
            ) => {
                if body == ours {
                    return self.segment_uploaded(now, last);
                }
                // Another leader's upload of the same index, cut
                // differently: continue after it.
                match self.agreeing_end(first, &body) {
                    Ok(end) => self.segment_uploaded(now, end),
                    Err(why) => self.stop_uploads(&why),
                }
            }
            (UpOp::Verify { first, last, body }, Err(ObjectError::NotFound)) => {
                // A 409 against a write that did not land.
                self.clm().bucket.up.op = Some(UpOp::Put { first, last, body });
                self.tier_upload_failed(now, "conditional write conflicted");
            }
            (op, Ok(reply)) => {
                panic!("object store answered the upload's {op:?} with {reply:?}")
            }
            (_, Err(error)) => self.tier_upload_failed(now, &error.to_string()),
        }
    }

    fn next_upload_op(&mut self, op: UpOp) {
        let up = &mut self.clm().bucket.up;
        up.op = Some(op);
        up.failures = 0;
        self.send_upload_op();
    }

    /// The last index of the WAL object at `first`, if its entries agree
    /// with every entry of ours at the same index.
    fn agreeing_end(&self, first: Index, body: &[u8]) -> Result<Index, String> {
        let key = layout::wal_key(first);
        let (_, entries) = wal_object::decode(&key, first, body).map_err(|e| e.to_string())?;
        for e in &entries {
            if let Some(ours) = self.upload_entry(e.index_id()) {
                if ours != e {
                    return Err(format!(
                        "{key} holds entry {} (term {}), which differs from the committed log's \
                         (term {})",
                        e.index, e.term, ours.term
                    ));
                }
            }
        }
        Ok(entries.last().map_or(Index(first.0 - 1), Entry::index_id))
    }

    fn upload_found_end(&mut self, now: Time, end: Index) {
        tracing::info!(
            through = end.0,
            "the bucket's WAL ends here; uploading after it"
        );
        let b = &mut self.clm().bucket;
        b.up.op = None;
        b.up.failures = 0;
        b.up.through = Some(end);
        b.known_through = b.known_through.max(end);
        self.release_cluster_checkpoint(now);
        self.cluster_upload_pump(now);
    }

    fn segment_uploaded(&mut self, now: Time, last: Index) {
        let b = &mut self.clm().bucket;
        let failures = std::mem::take(&mut b.up.failures);
        b.up.op = None;
        let through = b.up.through.unwrap_or(Index(0)).max(last);
        b.up.through = Some(through);
        b.known_through = b.known_through.max(through);
        b.up.since = None;
        if failures > 0 {
            tracing::info!(
                through = through.0,
                failures,
                "the bucket answers again; WAL segment uploaded"
            );
        } else {
            tracing::debug!(through = through.0, "WAL segment uploaded");
        }
        self.release_cluster_checkpoint(now);
        self.cluster_upload_pump(now);
    }

    fn tier_upload_failed(&mut self, now: Time, why: &str) {
        let Some(backoff) = self
            .tier()
            .map(|t| t.backoff_ns(self.cl().bucket.up.failures + 1))
        else {
            return;
        };
        let up = &mut self.clm().bucket.up;
        up.failures += 1;
        up.retry_at = Some(now.plus_nanos(backoff));
        if up.failures == 1 {
            tracing::warn!(%why, "bucket WAL upload failed; retrying (writes are not held up)");
        } else {
            tracing::debug!(%why, failures = up.failures, "bucket WAL upload failed again");
        }
    }

    fn stop_uploads(&mut self, why: &str) {
        tracing::error!(%why, "the bucket's WAL disagrees with the committed log: uploads stop \
            (is another cluster using this bucket and prefix?)");
        let b = &mut self.clm().bucket;
        b.stopped = true;
        b.up.op = None;
    }

    /// Cluster mode: a checkpoint was taken; its upload waits until the
    /// bucket's WAL holds the log through the applied index now. Returns
    /// the result when it may go on at once.
    pub(in crate::node) fn hold_cluster_checkpoint(
        &mut self,
        now: Time,
        io: IoId,
        result: Result<TakenCheckpoint, String>,
    ) -> Option<Result<TakenCheckpoint, String>> {
        let until = Index(self.store.meta().applied_index);
        let current = self.upload_current();
        let up = &mut self.clm().bucket.up;
        if current && up.through.is_some_and(|t| t >= until) {
            return Some(result);
        }
        if !current {
            return Some(Err("no longer the serving leader".into()));
        }
        assert!(up.held.is_none(), "one checkpoint at a time");
        up.held = Some((io, result, until));
        // Seal at once rather than wait for the segment's age.
        up.since = Some(Time(0));
        self.cluster_upload_pump(now);
        None
    }

    fn release_cluster_checkpoint(&mut self, now: Time) {
        let up = &mut self.clm().bucket.up;
        let ready = matches!((&up.held, up.through), (Some((_, _, until)), Some(t)) if t >= *until);
        if ready {
            let (io, result, _) = up.held.take().expect("checked");
            self.on_checkpoint_taken(now, io, result);
        }
    }

    // ----- a follower's catch-up -----

    /// Follower: the leader no longer holds our next entry.
    pub(super) fn on_behind(&mut self, now: Time, from: &Member, term: Term, first: Index) {
        let c = self.cl();
        if term != c.promised
            || c.durable_promised < term
            || !matches!(c.role, Role::Follower { .. })
        {
            return;
        }
        let c = self.clm();
        c.heard_at = now;
        c.watching = None;
        self.follow(now, from.clone());
        let applied = Index(self.store.meta().applied_index);
        let durable = self.durable_match();
        if durable.next() >= first {
            // Caught up meanwhile: say where to continue.
            return self.ack(from, term, durable);
        }
        if let Some(u) = self.clm().bucket.catch_up.as_mut() {
            if u.candidate.is_none() {
                u.first = u.first.max(first);
                return; // running
            }
        }
        if self.tier().is_none() {
            tracing::warn!(
                next = applied.next().0,
                leader_holds_from = first.0,
                "the leader no longer holds the entries this follower needs, and the bucket tier \
                 is off: it cannot catch up"
            );
            return;
        }
        tracing::info!(
            from = applied.next().0,
            leader_holds_from = first.0,
            "behind the leader's memory: catching up from the bucket's WAL"
        );
        self.clm().bucket.catch_up = Some(CatchUp::start(applied, first, None));
        self.send_catch_up_op();
    }

    /// Candidate: the best promiser no longer holds the entries this node
    /// lacks (they are applied there, so committed): read the bucket's WAL
    /// to its end, then fetch the rest from `source` again. Returns whether
    /// it started (the tier is on and no catch-up ran yet this term).
    pub(super) fn candidate_catch_up(&mut self, source: Member) -> bool {
        let term = self.term;
        let applied = Index(self.store.meta().applied_index);
        if self.tier().is_none()
            || self
                .cl()
                .bucket
                .catch_up
                .as_ref()
                .is_some_and(|u| u.candidate.as_ref().is_some_and(|(t, _)| *t == term))
        {
            return false;
        }
        tracing::info!(
            from = applied.next().0,
            source = %source.id,
            "the best promiser no longer holds what this candidate lacks: reading the bucket's WAL"
        );
        self.clm().bucket.catch_up = Some(CatchUp::start(
            applied,
            Index(u64::MAX),
            Some((term, source)),
        ));
        self.send_catch_up_op();
        true
    }

    fn send_catch_up_op(&mut self) {
        let io = self.io_id();
        let term = self.term;
        let Some(u) = self.clm().bucket.catch_up.as_mut() else {
            return;
        };
        let op = u.op.clone().expect("a catch-up step");
        u.io = Some(io);
        self.actions.push_back(Action::Object { io, term, op });
    }

    fn next_catch_up_op(&mut self, op: ObjectOp) {
        let u = self.clm().bucket.catch_up.as_mut().expect("catching up");
        u.op = Some(op);
        u.failures = 0;
        self.send_catch_up_op();
    }

    fn on_catch_up_io(&mut self, now: Time, result: ObjectResult) {
        let term = self.term;
        let role_fits = match &self
            .cl()
            .bucket
            .catch_up
            .as_ref()
            .expect("matched")
            .candidate
        {
            None => matches!(self.cl().role, Role::Follower { .. }),
            Some((t, _)) => *t == term && matches!(self.cl().role, Role::Candidate(_)),
        };
        let serving = matches!(self.health, Health::Serving);
        let b = &mut self.clm().bucket;
        let u = b.catch_up.as_mut().expect("matched");
        u.io = None;
        if !role_fits || !serving {
            b.catch_up = None;
            return;
        }
        let op = u.op.clone().expect("a catch-up step");
        match (op, result) {
            (ObjectOp::List { .. }, Ok(ObjectReply::Listed { objects, truncated })) => {
                let last_key = objects.last().map(|o| o.key.clone());
                u.listing
                    .extend(objects.iter().filter_map(|o| layout::parse_wal_key(&o.key)));
                if truncated {
                    return self.next_catch_up_op(list_op(last_key));
                }
                let mut listing = std::mem::take(&mut u.listing);
                listing.sort_unstable();
                listing.dedup();
                match u.replay.wanted(&listing) {
                    Ok(wanted) => {
                        u.queue = wanted.into();
                        self.fetch_next_object(now);
                    }
                    Err(hole) => self.catch_up_stuck(now, &hole.to_string()),
                }
            }
            (ObjectOp::Get { key }, Ok(ObjectReply::Got { body, .. })) => {
                let first = u.queue.pop_front().expect("fetching an object");
                let pushed = wal_object::decode(&key, first, &body)
                    .map_err(|e| e.to_string())
                    .and_then(|(term, entries)| {
                        u.replay
                            .push(first, term, entries)
                            .map_err(|e| e.to_string())
                    });
                match pushed {
                    Ok(entries) => {
                        u.pushed = Some(first);
                        self.take_committed(entries);
                        self.fetch_next_object(now);
                    }
                    Err(why) => self.catch_up_stuck(now, &why),
                }
            }
            (ObjectOp::Get { .. }, Err(ObjectError::NotFound)) => {
                // Collected meanwhile: list again from where we got to.
                self.relist(now, 0);
            }
            (op, Ok(reply)) => {
                panic!("object store answered the catch-up's {op:?} with {reply:?}")
            }
            (_, Err(error)) => {
                u.failures += 1;
                let failures = u.failures;
                let backoff = self
                    .tier()
                    .map_or(1_000_000_000, |t| t.backoff_ns(failures));
                let u = self.clm().bucket.catch_up.as_mut().expect("matched");
                u.retry_at = Some(now.plus_nanos(backoff));
                if failures == 1 {
                    tracing::warn!(%error, "catching up from the bucket: retrying");
                }
            }
        }
    }

    fn fetch_next_object(&mut self, now: Time) {
        let u = self.clm().bucket.catch_up.as_ref().expect("catching up");
        if u.replay.next() >= u.first {
            let through = u.replay.next().0 - 1;
            tracing::info!(
                through,
                "caught up from the bucket's WAL; the leader continues"
            );
            self.clm().bucket.catch_up = None;
            return self.ack_caught_up();
        }
        match (u.queue.front(), &u.candidate) {
            (Some(&first), _) => self.next_catch_up_op(ObjectOp::Get {
                key: layout::wal_key(first),
            }),
            // A candidate read the bucket to its end: the rest comes from
            // the best promiser, unless the bucket gave nothing new.
            (None, Some((_, source))) => {
                let source = source.clone();
                let gained = u.replay.next() > u.from.next();
                if gained {
                    // Keep the record (one bucket read per term).
                    let u = self.clm().bucket.catch_up.as_mut().expect("catching up");
                    u.op = None;
                    let Role::Candidate(cand) = &self.cl().role else {
                        return;
                    };
                    let (from, prev_term) = self.fetch_point(cand.fetch_target);
                    self.fetch_again(&source, from, prev_term);
                } else {
                    self.give_up_round(now);
                }
            }
            // The bucket ends before the leader's memory begins: the
            // leader has not uploaded that far yet.
            (None, None) => self.relist(now, CATCH_UP_RELIST_NS),
        }
    }

    /// Lists again after `after_ns`, from the last object pushed.
    fn relist(&mut self, now: Time, after_ns: u64) {
        let u = self.clm().bucket.catch_up.as_mut().expect("catching up");
        u.queue.clear();
        u.listing.clear();
        u.op = Some(list_op(u.pushed.map(layout::wal_key)));
        if after_ns == 0 {
            self.send_catch_up_op();
        } else {
            u.retry_at = Some(now.plus_nanos(after_ns));
        }
    }

    /// The bucket's WAL cannot continue the log where the catch-up needs
    /// it (a hole, or an object that does not fit). If the node applied
    /// past that point meanwhile (the leader's appends reached it), the
    /// catch-up is stale: it starts again from there. Otherwise the node
    /// is behind the bucket's GC and asks the driver to start it over
    /// ([`Action::StartOver`]); a candidate also steps down (it cannot
    /// adopt the best log, and claiming again would only repeat this while
    /// the member with that log waits).
    fn catch_up_stuck(&mut self, now: Time, why: &str) {
        let applied = Index(self.store.meta().applied_index);
        let u = self.cl().bucket.catch_up.as_ref().expect("catching up");
        if applied >= u.replay.next() {
            tracing::info!(%why, applied = applied.0, "the bucket's WAL has a hole the leader \
                already brought this node past; catching up again from there");
            let (first, candidate) = (u.first, u.candidate.clone());
            self.clm().bucket.catch_up = Some(CatchUp::start(applied, first, candidate));
            return self.send_catch_up_op();
        }
        let candidate = u.candidate.is_some();
        if candidate {
            tracing::warn!(%why, "the bucket's WAL cannot continue this candidate's log: \
                stepping down and asking the driver to start it over from the newest checkpoint");
        } else {
            tracing::error!(%why, "this member cannot catch up: neither the leader's memory nor \
                the bucket's WAL holds the entries it needs; asking the driver to start it over \
                from the newest checkpoint");
        }
        let last_index = self.cl().log.last_index();
        self.actions.push_back(Action::StartOver {
            why: why.to_owned(),
            last_index,
        });
        if candidate {
            return self.give_up_round(now);
        }
        // Try again much later (an operator may repair the bucket).
        let backoff = self
            .tier()
            .map_or(1_000_000_000, |t| t.retry_backoff_max_ns)
            * 30;
        let u = self.clm().bucket.catch_up.as_mut().expect("catching up");
        u.replay = BucketReplay::new(Index(u.replay.next().0 - 1));
        u.pushed = None;
        u.queue.clear();
        u.listing.clear();
        u.op = Some(list_op(None));
        u.retry_at = Some(now.plus_nanos(backoff));
    }

    /// If nothing is waiting for an fsync (which acknowledges by itself),
    /// tells the leader where this node's log stands.
    fn ack_caught_up(&mut self) {
        let (Some(leader), None) = (self.leader(), self.cl().sync_io) else {
            return;
        };
        let (term, matched) = (self.term, self.durable_match());
        self.ack(&leader, term, matched);
    }

    /// Follower: how far its log durably matches the leader's: what it
    /// verified and fsynced, and at least what it applied (committed).
    fn durable_match(&self) -> Index {
        let c = self.cl();
        c.verified
            .min(c.synced)
            .max(Index(self.store.meta().applied_index))
    }
}
