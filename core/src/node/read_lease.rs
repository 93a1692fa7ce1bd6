//! Bucket mode: linearizable reads on a node that may have been taken over.
//!
//! # The problem
//!
//! A node learns that another node took its bucket over when its next
//! upload collides with the new writer's fence object (the `upload`
//! module). A node that resumes after a pause and is asked only reads
//! would answer them from its stale state while the new writer has
//! acknowledged writes since: reads that are not linearizable (the
//! simulator's zombie scenario shows it).
//!
//! # The read lease
//!
//! A linearizable read needs proof that no other writer can have
//! acknowledged a write before the read arrived. The proof is a read of
//! `leader-lock` that still names this node, in its term:
//!
//! - a lock GET **sent** at `s` (this node's monotonic clock) that answers
//!   with our term shows that no takeover claim had landed when the store
//!   read the lock, which was after `s`;
//! - a node that takes the bucket over holds back for
//!   [`BucketConfig::takeover_hold_ns`] after its claim was answered before
//!   it serves (the start-up's last step), so it acknowledges nothing
//!   before then;
//!
//! so no other writer acknowledges a write before `s + L` (our clock; `L`
//! is [`BucketConfig::read_lease_ns`]). A read that arrives before then may
//! be answered from whatever state this node has when it answers: in sync
//! mode that state is a prefix of the bucket's log that holds every write
//! acknowledged before the read arrived (all were ours), and any write it
//! lacks was acknowledged by the new writer after the read arrived (its
//! fence comes after every entry we applied), so the read linearizes
//! between the two.
//!
//! # Clocks
//!
//! Only durations on each node's own monotonic clock are compared, never
//! two clocks' readings. The hold is `3L/2`: our lease ends, in real time,
//! at most `L / (1 - ρ)` after `s` and the taker's hold lasts at least
//! `(3L/2) / (1 + ρ)` after its claim landed (which is after `s`), so the
//! argument holds while every clock's rate is within ρ = 20 % of real time.
//! A process pause does not break it: the monotonic clock keeps counting
//! while a process is stopped, so a paused node's lease has run out when
//! it resumes. A virtual machine whose monotonic clock stops while the
//! hypervisor pauses it does break it, as it breaks etcd's leader lease.
//!
//! # Flow
//!
//! - The driver may serve a linearizable read that arrives before
//!   [`Node::read_fast_until`] without asking the node (io-real publishes
//!   the bound for its reader threads; local mode: always).
//! - Any other read is a [`ClientRequest::LinearizableRead`](super::ClientRequest::LinearizableRead),
//!   answered [`Response::ReadReady`](super::Response::ReadReady) at once
//!   while the lease holds (a read in the lease's second half also starts
//!   a renewal, so steady reads never wait), otherwise once a lock read
//!   renews it. The driver takes its snapshot after the answer.
//! - A lock that names another writer (or a higher term): every read is
//!   refused [`Error::Fenced`] from then on. The node is fenced at once
//!   unless a sync-mode upload is in flight: that upload may still land
//!   before the new writer's fence, and then its writes are in the log and
//!   must be acknowledged, so it finishes first: if it lands the node is
//!   fenced right after applying it, if it collides the upload fences.
//! - A failed lock read is retried with the upload backoff while reads
//!   wait; a read that waited [`BucketConfig::unavailable_after_ns`] is
//!   answered [`Error::Unavailable`].
//!
//! Checkpoints use the lease too: a GC deletion, a checkpoint manifest or
//! a move of `manifest/latest` is sent only while it holds (the
//! `checkpoint` module), so a writer taken over while paused neither
//! deletes what the new writer's checkpoints use nor publishes one whose
//! files may be gone.
//!
//! Async mode uses the same lease; there a takeover loses the writes not
//! yet uploaded anyway (see `async_upload`), but reads stop at once.

use std::collections::VecDeque;

use super::{Health, Node, Response};
use crate::bucket::layout;
use crate::bucket::lock::LeaderLock;
use crate::engine::KvEngine;
use crate::error::Error;
use crate::node::Action;
use crate::object::{ObjectError, ObjectOp, ObjectReply, ObjectResult};
use crate::types::{IoId, ReqId, Time};

/// The read lease's state (bucket mode).
#[derive(Debug, Default)]
pub(super) struct ReadLease {
    /// The member id the lock must name (set when the start-up wins it).
    holder: Option<String>,
    /// No other writer acknowledges a write before this (our clock).
    until: Option<Time>,
    /// The lock read in flight and when it was sent.
    check: Option<(IoId, Time)>,
    /// Reads waiting for a lock read, with their arrival times.
    waiting: VecDeque<(ReqId, Time)>,
    /// After a failed lock read: when to try again.
    retry_at: Option<Time>,
    /// Failed lock reads in a row (for the backoff).
    failures: u32,
    /// The lock names another writer: every read is refused with this.
    superseded: Option<String>,
}

impl<E: KvEngine> Node<E> {
    /// A linearizable read arriving before this time may be served from
    /// the engine without asking the node; later ones are sent as
    /// [`ClientRequest::LinearizableRead`](super::ClientRequest::LinearizableRead).
    /// Local mode: `Time(u64::MAX)`. `None`: every read must ask (no lease,
    /// starting, fenced). Serializable reads never ask.
    #[must_use]
    pub fn read_fast_until(&self) -> Option<Time> {
        if self.cluster.is_some() {
            return self.cluster_read_fast_until();
        }
        if self.config.bucket.is_none() {
            return Some(Time(u64::MAX));
        }
        if !self.reads_may_use_lease() {
            return None;
        }
        // The second half of the lease goes through the node, which renews.
        self.lease_renewal_from()
    }

    /// Where the lease's second half begins: a read from then on renews it.
    fn lease_renewal_from(&self) -> Option<Time> {
        let half = self.config.bucket.as_ref()?.read_lease_ns / 2;
        self.read_lease
            .until
            .map(|until| Time(until.0.saturating_sub(half)))
    }

    fn reads_may_use_lease(&self) -> bool {
        self.startup.is_none()
            && !matches!(self.health, Health::Fenced(_))
            && self.read_lease.superseded.is_none()
    }

    /// The lock now names this node as `holder` (start-up won it).
    pub(super) fn read_lease_holder(&mut self, holder: String) {
        self.read_lease.holder = Some(holder);
    }

    /// A [`ClientRequest::LinearizableRead`](super::ClientRequest::LinearizableRead) arrived.
    pub(super) fn on_linearizable_read(&mut self, now: Time, req: ReqId) {
        if self.config.bucket.is_none() {
            return self.reply(req, Ok(Response::ReadReady));
        }
        if let Health::Fenced(why) = &self.health {
            let why = why.clone();
            return self.reply(req, Err(Error::Fenced(why)));
        }
        if let Some(why) = &self.read_lease.superseded {
            let why = why.clone();
            return self.reply(req, Err(Error::Fenced(why)));
        }
        if self.startup.is_some() {
            return self.reply(req, Err(Self::starting_error()));
        }
        match self.read_lease.until {
            Some(until) if now < until => {
                self.reply(req, Ok(Response::ReadReady));
                if self.lease_renewal_from().is_some_and(|from| now >= from) {
                    self.check_lock(now);
                }
            }
            _ => {
                self.read_lease.waiting.push_back((req, now));
                self.check_lock(now);
            }
        }
    }

    /// Whether the lease covers `now` (bucket mode).
    pub(super) fn read_lease_holds(&self, now: Time) -> bool {
        self.read_lease.superseded.is_none() && self.read_lease.until.is_some_and(|u| now < u)
    }

    /// Sends a lock read unless one is in flight or a retry is pending.
    pub(super) fn check_lock(&mut self, now: Time) {
        let lease = &self.read_lease;
        if lease.check.is_some() || lease.retry_at.is_some() {
            return;
        }
        let io = self.io_id();
        self.read_lease.check = Some((io, now));
        self.actions.push_back(Action::Object {
            io,
            term: self.term,
            op: ObjectOp::Get {
                key: layout::LEADER_LOCK.to_owned(),
            },
        });
    }

    /// Whether `io` is the lease's lock read.
    pub(super) fn is_read_lease_io(&self, io: IoId) -> bool {
        self.read_lease.check.is_some_and(|(check, _)| check == io)
    }

    /// The lease's lock read completed.
    pub(super) fn on_read_lease_io(&mut self, now: Time, result: ObjectResult) {
        let (_, sent) = self.read_lease.check.take().expect("a lock read in flight");
        let lock = match result {
            Ok(ObjectReply::Got { body, .. }) => match LeaderLock::decode(&body) {
                Ok(lock) => lock,
                Err(e) => {
                    return self.lock_check_failed(now, &format!("leader-lock is unreadable: {e}"))
                }
            },
            Ok(other) => {
                return self.lock_check_failed(
                    now,
                    &format!("unexpected answer to a lock read: {other:?}"),
                )
            }
            Err(ObjectError::NotFound) => {
                return self.lock_check_failed(now, "leader-lock is missing from the bucket")
            }
            Err(e) => return self.lock_check_failed(now, &e.to_string()),
        };
        let ours =
            lock.term == self.term && self.read_lease.holder.as_deref() == Some(&lock.leader_id);
        if !ours {
            return self.superseded(
                now,
                format!(
                    "another node took over the bucket: leader-lock names {} in term {} (this node: term {})",
                    lock.leader_id, lock.term.0, self.term.0
                ),
            );
        }
        let config = self.config.bucket.as_ref().expect("bucket mode");
        let until = sent.plus_nanos(config.read_lease_ns);
        let lease = &mut self.read_lease;
        lease.failures = 0;
        lease.until = Some(lease.until.map_or(until, |u| u.max(until)));
        // Reads that arrived before the lease ends may be answered; any
        // later ones (the read took longer than the lease) need another.
        let mut ready = Vec::new();
        lease.waiting.retain(|&(req, arrived)| {
            let covered = arrived < until;
            if covered {
                ready.push(req);
            }
            !covered
        });
        for req in ready {
            self.reply(req, Ok(Response::ReadReady));
        }
        if !self.read_lease.waiting.is_empty() {
            self.check_lock(now);
        }
        if now < until {
            self.checkpoint_lease_settled(now, true);
        } else if self.checkpoint_awaits_lease() {
            self.check_lock(now);
        }
    }

    /// Someone waits for a lock read: reads, or a checkpoint step.
    fn lease_wanted(&self) -> bool {
        !self.read_lease.waiting.is_empty() || self.checkpoint_awaits_lease()
    }

    fn lock_check_failed(&mut self, now: Time, why: &str) {
        let config = self.config.bucket.clone().expect("bucket mode");
        let wanted = self.lease_wanted();
        let lease = &mut self.read_lease;
        lease.failures = lease.failures.saturating_add(1);
        tracing::warn!(%why, failures = lease.failures, "read lease: lock read failed");
        if wanted {
            lease.retry_at = Some(now.plus_nanos(config.backoff_ns(lease.failures)));
        }
        self.give_up_waiting_reads(now, why);
    }

    /// Reads that waited too long for a lock read get `Unavailable`.
    fn give_up_waiting_reads(&mut self, now: Time, why: &str) {
        let after = self
            .config
            .bucket
            .as_ref()
            .expect("bucket mode")
            .unavailable_after_ns;
        while let Some(&(req, arrived)) = self.read_lease.waiting.front() {
            if now < arrived.plus_nanos(after) {
                break;
            }
            self.read_lease.waiting.pop_front();
            self.reply(
                req,
                Err(Error::Unavailable(format!(
                    "cannot confirm this node still owns the bucket ({why}); retry later"
                ))),
            );
        }
    }

    /// The lock names another writer.
    fn superseded(&mut self, now: Time, why: String) {
        tracing::error!(%why, "read lease: the bucket has another writer");
        self.read_lease.until = None;
        self.read_lease.superseded = Some(why.clone());
        self.refuse_waiting_reads(&why);
        self.checkpoint_lease_settled(now, false);
        // A sync-mode upload in flight may still land before the new
        // writer's fence; then its writes are in the log and must be
        // acknowledged. It decides; otherwise fence now.
        let upload_in_flight = self.in_flight.is_some() && !self.is_async_upload();
        if !upload_in_flight && !matches!(self.health, Health::Fenced(_)) {
            self.fence(now, why);
        }
    }

    /// Why the read lease found another writer in the lock, if it did.
    pub(super) fn superseded_by(&self) -> Option<String> {
        self.read_lease.superseded.clone()
    }

    /// Fenced: waiting reads are refused, the lease is gone.
    pub(super) fn refuse_waiting_reads(&mut self, why: &str) {
        self.read_lease.until = None;
        for (req, _) in std::mem::take(&mut self.read_lease.waiting) {
            self.reply(req, Err(Error::Fenced(why.to_owned())));
        }
    }

    /// When [`Node::read_lease_on_timeout`] must run next.
    pub(super) fn read_lease_timer(&self) -> Option<Time> {
        let after = self.config.bucket.as_ref()?.unavailable_after_ns;
        let give_up = self
            .read_lease
            .waiting
            .front()
            .map(|&(_, arrived)| arrived.plus_nanos(after));
        [self.read_lease.retry_at, give_up]
            .into_iter()
            .flatten()
            .min()
    }

    /// Retries a failed lock read, gives up on reads that waited too long.
    pub(super) fn read_lease_on_timeout(&mut self, now: Time) {
        if self.config.bucket.is_none() {
            return;
        }
        if self.read_lease.retry_at.is_some_and(|at| at <= now) {
            self.read_lease.retry_at = None;
            if self.lease_wanted() {
                self.check_lock(now);
            }
        }
        self.give_up_waiting_reads(now, "the object store has not answered");
    }
}
