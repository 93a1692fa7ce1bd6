//! Cluster mode: S3-lock election with a promise round, log replication
//! with majority commit, forwarding and linearizable reads (ARCHITECTURE
//! §3.5–3.7). The vocabulary (messages, configuration, the log tail) is in
//! [`crate::cluster`], whose documentation gives the protocol and why it is
//! safe; this module is the state machine.
//!
//! # Roles
//!
//! - **Follower**: appends what its leader sends once the append fits its
//!   log (`prev_index`/`prev_term`), fsyncs, acknowledges, applies what the
//!   leader says is committed. Client writes are forwarded to the leader;
//!   linearizable reads ask the leader for a read index. A follower that
//!   hears nothing for the election timeout reads the lock every watch
//!   interval; if its ETag stays the same for the lock TTL (by this node's
//!   own clock) it claims the lock with `If-Match` and term + 1. It also
//!   reads the lock once every lock TTL while its leader is heard, to know
//!   the members.
//! - **Candidate**: won the lock for its term; saves its own promise, asks
//!   every member for one, adopts the best log of a majority (fetching the
//!   entries it lacks), appends a barrier entry and becomes leader.
//! - **Leader**: appends client writes, replicates them, commits on a
//!   majority, applies, answers; serves once its barrier is applied. It
//!   rewrites the lock every refresh interval while a member is
//!   unreachable, and adds joining nodes to the lock's members once they
//!   have caught up.
//!
//! Any message or lock read showing a higher term makes a leader or
//! candidate a follower of it (no restart). Writes it had in the log are
//! answered [`Error::Timeout`] (the next leader may commit them); writes not
//! in the log yet [`Error::Unavailable`].
//!
//! # Durability and the WAL
//!
//! The WAL is the log: the leader appends its batches, followers append
//! what they receive, a follower whose log conflicts with the leader's
//! truncates the uncommitted suffix ([`Action::TruncateWal`]). At most one
//! fsync is in flight; whatever is appended meanwhile waits for the next
//! one (group commit). An entry is applied only once it is both committed
//! and fsynced locally. At start-up the WAL's entries after the engine's
//! applied index are loaded into the log tail unapplied: whether they are
//! committed is the leader's to say.
//!
//! # Reads
//!
//! The leader's lease runs until the newest heartbeat send time that a
//! majority (itself included) has acknowledged, plus the election timeout
//! minus a drift margin. Members refuse promises within the election
//! timeout of hearing from their leader (and of their own start), so no
//! other leader can commit anything during the lease. A read on the leader
//! inside the lease is served at once; otherwise it waits for a heartbeat
//! round sent after it arrived (read index). A follower asks the leader
//! for the commit index as of after the request arrived and serves once it
//! has applied that far.
//!
//! # Rejoining with an empty disk
//!
//! A member whose disk was lost forgot its promises and the entries it
//! acknowledged; a majority counting it could elect a leader lacking a
//! committed entry (only the lost disk and a minority held it). So a node
//! that starts with nothing (no hard state, no log, an empty engine) and
//! finds itself one of several members in the lock *rejoins*:
//!
//! 0. until its first read of the lock it promises nothing at all (it
//!    cannot tell which terms it may have promised before);
//! 1. it raises its promised term to the lock's (so no deposed leader of an
//!    older term, whose fencing it forgot, can count its acknowledgements)
//!    and saves `rejoining` with it, durably, before anything else;
//! 2. it never claims the lock, and its promises carry `voter: false`:
//!    candidates do not count them, leaders replicate to it all the same;
//! 3. it counts again once it has applied through the commit index of the
//!    first append it accepted (term `T`), and an entry of term ≥ `T`.
//!
//! Why 3 is enough: every entry committed before the disk was lost was
//! committed in a term at most `T`. Those of terms below `T` precede the
//! first entry of the term of any applied entry of term ≥ `T` (that
//! entry's leader adopted them before its barrier). Those of term `T`
//! itself were committed by the same leader incarnation that sent the
//! first append, whose commit index then already covered them. Only a
//! majority of *other* members could elect leaders meanwhile, and any such
//! majority meets every majority that committed an entry in a member other
//! than this one. The flag is durable, so a crash half-way through the
//! catch-up restarts it rather than letting a partial log count.
//!
//! # Removing a member
//!
//! `ClientRequest::MemberRemove` goes to the leader, which writes the lock
//! without the member (one change at a time, like an addition). Removing
//! one member of `n` keeps every majority of the old members and every
//! majority of the new ones overlapping (a majority of `n - 1` others and a
//! majority of `n` with at most the removed one outside the first make
//! more than `n - 1`), so an entry committed under either is in every
//! later candidate's promise round. Entries committed before the write
//! landed counted the removed member; nothing is committed by the new rule
//! before the write landed.
//!
//! - The removed node gets nothing more from the leader but a
//!   [`PeerMsg::Removed`] hint; it checks the lock, and once a lock read
//!   shows it gone (after it had seen itself a member in this process) it
//!   takes no further part ([`ClusterRole::Removed`]): no claims, no
//!   answers to peers, clients refused. Started again it is a new node and
//!   joins again.
//! - The leader removing itself writes the lock naming its most caught-up
//!   member as the leader, in its own term: that member, once it misses
//!   the leader, finds itself named and claims term + 1 at once (the
//!   promise round makes that as safe as any takeover), instead of waiting
//!   out the lock TTL. A lock of a leader's own term can only be its own
//!   write (claims are always term + 1), so a leader reading one naming
//!   another node still adopts it.
//! - The last member cannot be removed.

use std::collections::{BTreeMap, VecDeque};

use super::{Health, Node, Response};

#[path = "cluster_bucket.rs"]
mod bucket;
use crate::bucket::layout;
use crate::bucket::lock::{LeaderLock, Member};
use crate::cluster::{ClusterConfig, FollowerWaitMode, HardState, PeerMsg, RecentLog};
use crate::engine::KvEngine;
use crate::error::Error;
use crate::log::{Barrier, Entry, Payload};
use crate::mvcc;
use crate::node::{Action, ClientRequest};
use crate::object::{ETag, ObjectError, ObjectOp, ObjectReply, ObjectResult, PutCondition};
use crate::types::{Index, IoId, ReqId, Term, Time};

/// Request ids at or above this are the node's own, for requests forwarded
/// to it by followers; drivers choose theirs below it.
pub const REMOTE_REQ_BASE: u64 = 1 << 63;

/// A node's cluster state.
#[derive(Debug)]
pub(super) struct Cluster {
    cfg: ClusterConfig,
    role: Role,
    /// The highest term promised (in memory; may still be being saved).
    promised: Term,
    /// The highest term whose promise is durable.
    durable_promised: Term,
    /// Hard-state saves in flight, in order: what is saved and why.
    saving: VecDeque<(IoId, HardState, SaveFor)>,
    /// Started with nothing (no hard state, log or engine state): a member
    /// of a lock listing others has lost its disk. Until the first lock
    /// read tells, it promises nothing. Cleared at that read.
    blank: bool,
    /// Rejoining after a lost disk (module docs): promises do not count.
    rejoining: bool,
    /// `rejoining` as last saved.
    durable_rejoining: bool,
    /// Rejoining: the term and commit index of the first append accepted.
    rejoin_goal: Option<(Term, Index)>,
    /// The read of recent applied entries back from the WAL at start-up.
    buffer_io: Option<IoId>,
    log: RecentLog,
    commit: Index,
    /// The local WAL is durable through this index.
    synced: Index,
    /// The fsync in flight and the index it covers.
    sync_io: Option<(IoId, Index)>,
    /// The lock as last read or written, with its ETag.
    lock: Option<(LeaderLock, ETag)>,
    /// The lock operation in flight.
    lock_io: Option<(IoId, LockStep)>,
    /// When to read (follower, candidate) or rewrite (leader) the lock next.
    lock_next_at: Option<Time>,
    /// The next lock read decides whether this write of ours landed.
    lock_expect: Option<LeaderLock>,
    /// When this node last asked for the lock. A follower that hears from
    /// its leader still reads it every lock TTL, to learn the members (for
    /// `MemberList`, and to learn that it was removed).
    lock_read_at: Time,
    lock_failures: u32,
    /// When this node last heard from the leader it follows (or started).
    heard_at: Time,
    /// A promise round this node won could not adopt the best log (its
    /// holder no longer has the entries this node lacks in memory, nor
    /// does the bucket): until then it claims no lock, so that the member
    /// holding that log (which promised to it) sees the lock expire and
    /// takes over, instead of this node claiming term after term.
    yield_until: Option<Time>,
    /// Follower: the ETag of the lock while the leader is silent, and when
    /// this node first saw it.
    watching: Option<(ETag, Time)>,
    /// Follower: our log matches the current leader's through this index.
    verified: Index,
    /// Leader: log index → the request it answers.
    awaiting: BTreeMap<Index, ReqId>,
    /// Linearizable reads waiting.
    reads: Vec<Read>,
    /// Follower: requests forwarded to the leader, by id.
    forwarded: BTreeMap<u64, (ReqId, Time)>,
    /// Leader: forwarded requests' answers go back to (member, id).
    remote: BTreeMap<ReqId, (Member, u64)>,
    next_id: u64,
    /// Joining a cluster (not a member): when to ask the leader again.
    join_at: Option<Time>,
    /// This process has seen itself a voting member in the lock.
    was_member: bool,
    /// It then saw a lock without it: it was removed (module docs,
    /// "Removing a member"). It takes no further part and answers clients
    /// [`Error::Unavailable`].
    removed: bool,
    /// The bucket as the disaster-recovery tier (the `bucket` submodule).
    bucket: bucket::ClusterBucket,
}

/// Why the hard state is being saved.
#[derive(Debug)]
enum SaveFor {
    /// A promise to answer once durable.
    Answer(Member),
    /// Our own candidacy's promise.
    Candidacy,
    /// The `rejoining` flag changed.
    Rejoin,
}

#[derive(Debug)]
enum Role {
    Follower { leader: Option<Member> },
    Candidate(Candidate),
    Leader(Leader),
}

#[derive(Debug)]
struct Candidate {
    members: Vec<Member>,
    /// Durable promises: member id → its last (term, index).
    promises: BTreeMap<String, (Term, Index)>,
    /// Fetching the best log from this member.
    fetching: Option<Member>,
    /// The end of the log the fetch source promised, and where the last
    /// fetch started.
    fetch_target: Index,
    fetch_from: Index,
    prepare_at: Time,
}

#[derive(Debug)]
struct Leader {
    /// Voting members (from the lock).
    members: Vec<Member>,
    /// Everyone but us: members and joining learners.
    peers: BTreeMap<String, Peer>,
    barrier: Index,
    serving: bool,
    heartbeat_at: Time,
    /// Since when we lead (a member never heard from counts as unreachable
    /// after the election timeout).
    since: Time,
    /// A membership change being written to the lock.
    changing: bool,
    /// A removal asked for (member id, request), until a lock without the
    /// member is ours.
    removing: Option<(String, ReqId)>,
}

#[derive(Debug)]
struct Peer {
    member: Member,
    voter: bool,
    promised: bool,
    next: Index,
    matched: Index,
    /// Newest echoed send time of an acknowledged append.
    acked_sent_at: Option<Time>,
    /// When we last heard from it (our clock).
    heard_at: Option<Time>,
    /// A voter silent for the election timeout, reported as unreachable
    /// (reported again once it answers).
    unreachable: bool,
}

#[derive(Debug)]
enum LockStep {
    /// A plain read; `expect`: what we tried to write, when its answer was
    /// lost (the read decides whether it landed).
    Read { expect: Option<LeaderLock> },
    /// Create (bootstrap) or take over.
    Claim(LeaderLock),
    /// The leader rewrites its lock (new generation).
    Refresh(LeaderLock),
}

#[derive(Debug)]
struct Read {
    waiter: ReadWaiter,
    /// The commit index the read must see (leader: as of arrival;
    /// follower: from the leader's answer).
    index: Option<Index>,
    arrived: Time,
    /// Leader: a majority confirmed leadership after `arrived`.
    confirmed: bool,
}

#[derive(Debug)]
enum ReadWaiter {
    Local(ReqId),
    /// Leader: a follower's read-index request.
    Remote {
        to: Member,
        id: u64,
    },
    /// Follower: asked the leader under this id.
    Asked {
        req: ReqId,
        id: u64,
        /// When it was last asked (asked again every half election
        /// timeout until answered: an answer may be lost, and asking twice
        /// is harmless).
        at: Time,
    },
}

/// What the role getters report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterRole {
    /// Following `leader` (if known).
    Follower {
        /// The leader's id.
        leader: Option<String>,
    },
    /// Running its promise round.
    Candidate,
    /// Leading; `serving` once the barrier is applied.
    Leader {
        /// Serving clients.
        serving: bool,
    },
    /// Removed from the members while running: takes no further part.
    Removed,
}

impl Cluster {
    /// Leader: whether a new client batch may start (after the previous
    /// one's local fsync: group commit).
    fn may_flush(&self) -> bool {
        self.is_serving_leader() && self.sync_io.is_none()
    }

    /// `seed` (the node's, drawn by the driver per process start) makes
    /// request ids differ between incarnations, so a late answer to a
    /// previous incarnation's forwarded request never matches a new one.
    pub(super) fn new(cfg: ClusterConfig, applied: (Index, Term), seed: u64) -> Cluster {
        Cluster {
            cfg,
            role: Role::Follower { leader: None },
            promised: Term(0),
            durable_promised: Term(0),
            saving: VecDeque::new(),
            blank: false,
            rejoining: false,
            durable_rejoining: false,
            rejoin_goal: None,
            buffer_io: None,
            log: RecentLog::after(applied.0, applied.1),
            commit: applied.0,
            synced: applied.0,
            sync_io: None,
            lock: None,
            lock_io: None,
            lock_next_at: None,
            lock_read_at: Time(0),
            lock_expect: None,
            lock_failures: 0,
            heard_at: Time(0),
            yield_until: None,
            watching: None,
            verified: Index(0),
            awaiting: BTreeMap::new(),
            reads: Vec::new(),
            forwarded: BTreeMap::new(),
            remote: BTreeMap::new(),
            // Room for 2^32 requests per incarnation before ids could meet.
            next_id: splitmix(seed) << 32,
            join_at: None,
            was_member: false,
            removed: false,
            bucket: bucket::ClusterBucket::default(),
        }
    }

    fn me(&self) -> &Member {
        &self.cfg.me
    }

    /// Whether this node's promises count toward a majority (not while it
    /// rejoins after a lost disk, until that is durably over).
    fn is_voter(&self) -> bool {
        !self.rejoining && !self.durable_rejoining
    }

    /// The durable end of the log: what a promise reports. A crash cannot
    /// shrink it, so a candidate never adopts a log that later turns out
    /// shorter than promised.
    fn durable_tail(&self) -> (Term, Index) {
        let through = self.synced.min(self.log.last_index());
        (self.log.term_at(through).unwrap_or(Term(0)), through)
    }

    fn id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    pub(super) fn awaiting_len(&self) -> usize {
        self.awaiting.len() + self.forwarded.len()
    }

    /// Leading, serving or not yet (its barrier not applied).
    pub(super) fn is_leader(&self) -> bool {
        matches!(&self.role, Role::Leader(_))
    }

    pub(super) fn is_serving_leader(&self) -> bool {
        matches!(&self.role, Role::Leader(l) if l.serving)
    }

    /// The bucket tier's settings, if it is on.
    pub(super) fn bucket_tier(&self) -> Option<&super::BucketConfig> {
        self.cfg.bucket.as_ref()
    }

    pub(super) fn heartbeat_interval_ns(&self) -> u64 {
        self.cfg.heartbeat_interval_ns
    }
}

impl<E: KvEngine> Node<E> {
    fn cl(&self) -> &Cluster {
        self.cluster.as_deref().expect("cluster mode")
    }

    /// The first entry the in-memory log holds (for tests).
    #[cfg(test)]
    pub(super) fn log_first_index(&self) -> Index {
        self.cl().log.first_index()
    }

    fn clm(&mut self) -> &mut Cluster {
        self.cluster.as_deref_mut().expect("cluster mode")
    }

    pub(super) fn cluster_may_flush(&self) -> bool {
        self.cl().may_flush()
    }

    // ----- getters -----

    /// Cluster mode: this node's role.
    #[must_use]
    pub fn cluster_role(&self) -> Option<ClusterRole> {
        let c = self.cluster.as_deref()?;
        if c.removed {
            return Some(ClusterRole::Removed);
        }
        Some(match &c.role {
            Role::Follower { leader } => ClusterRole::Follower {
                leader: leader.as_ref().map(|m| m.id.clone()),
            },
            Role::Candidate(_) => ClusterRole::Candidate,
            Role::Leader(l) => ClusterRole::Leader { serving: l.serving },
        })
    }

    /// Cluster mode: the commit index this node knows.
    #[must_use]
    pub fn commit_index(&self) -> Option<Index> {
        self.cluster.as_deref().map(|c| c.commit)
    }

    /// Cluster mode: the voting members as of the last lock this node read
    /// or wrote.
    #[must_use]
    pub fn members(&self) -> Vec<Member> {
        self.cluster
            .as_deref()
            .and_then(|c| c.lock.as_ref())
            .map(|(l, _)| l.members.clone())
            .unwrap_or_default()
    }

    /// Cluster mode: the leader this node knows of (itself when leading).
    #[must_use]
    pub fn leader(&self) -> Option<Member> {
        let c = self.cluster.as_deref()?;
        match &c.role {
            Role::Follower { leader } => leader.clone(),
            Role::Candidate(_) => None,
            Role::Leader(_) => Some(c.me().clone()),
        }
    }

    /// Cluster mode, leader: until when linearizable reads may be served
    /// without asking (the lease).
    pub(super) fn cluster_read_fast_until(&self) -> Option<Time> {
        let c = self.cl();
        match &c.role {
            Role::Leader(l) if l.serving => self.lease_until(l),
            _ => None,
        }
    }

    // ----- start -----

    /// Cluster mode: starts the node's part in the cluster. `hard_state`
    /// is what the driver loaded (default when there is none). Call once,
    /// after [`Node::recover`].
    pub fn start_cluster(&mut self, now: Time, hard_state: HardState) {
        let c = self.clm();
        c.promised = hard_state.promised;
        c.durable_promised = hard_state.promised;
        c.rejoining = hard_state.rejoining;
        c.durable_rejoining = hard_state.rejoining;
        // No hard state: whatever the engine holds (nothing, or a
        // checkpoint the driver restored from the bucket), the promises are
        // gone. A member's hard state exists from its first promise on.
        c.blank = hard_state == HardState::default();
        // A restarted member forgot when it last heard from its leader:
        // it refuses promises for an election timeout, so the leader's
        // lease stays sound.
        c.heard_at = now;
        self.term = self.term.max(hard_state.promised);
        // The log tail holds only what the engine has not applied: read the
        // recent applied entries back, for followers that lag.
        let applied = self.store.meta().applied_index;
        let keep = self.cl().cfg.peer_buffer_entries as u64;
        if applied > 0 && keep > 0 {
            let io = self.io_id();
            self.clm().buffer_io = Some(io);
            self.actions.push_back(Action::ReadWal {
                io,
                from: Index(applied.saturating_sub(keep).max(1)),
                through: Index(applied),
            });
        }
        self.read_cluster_lock(now, None);
    }

    /// Cluster mode: how many applied entries the WAL keeps.
    pub(super) fn cluster_buffer_entries(&self) -> Option<u64> {
        self.cluster
            .as_deref()
            .map(|c| c.cfg.peer_buffer_entries as u64)
    }

    pub(super) fn is_cluster_buffer_read(&self, io: IoId) -> bool {
        self.cluster
            .as_deref()
            .is_some_and(|c| c.buffer_io == Some(io))
    }

    /// The recent applied entries, read back: in front of the log tail.
    pub(super) fn on_cluster_buffer_read(&mut self, result: Result<Vec<Entry>, String>) {
        let c = self.clm();
        c.buffer_io = None;
        match result {
            Ok(entries) => {
                let n = entries.len();
                if !c.log.prepend_applied(entries) {
                    tracing::warn!(
                        entries = n,
                        "the WAL's recent entries do not fit the log tail; not kept"
                    );
                }
            }
            Err(error) => {
                tracing::info!(%error, "recent applied entries are not in the WAL (trimmed before); followers lagging behind them need a checkpoint");
            }
        }
    }

    /// Cluster mode, [`Node::recover`]: the WAL's entries after the applied
    /// index are the unapplied tail; the leader says which are committed.
    pub(super) fn cluster_recover(&mut self, entries: Vec<crate::log::Entry>) {
        let c = self.cluster.as_deref_mut().expect("cluster mode");
        for entry in entries {
            self.term = self.term.max(entry.term_id());
            c.log.push(entry);
        }
        c.synced = c.log.last_index();
        self.last_index = c.log.last_index();
    }

    // ----- inputs -----

    /// A message from another member.
    pub fn handle_peer(&mut self, now: Time, from: &Member, msg: PeerMsg) {
        self.last_now = self.last_now.max(now);
        if self.cluster.is_none() || !matches!(self.health, Health::Serving) || self.cl().removed {
            return;
        }
        match msg {
            PeerMsg::Prepare { term } => self.on_prepare(now, from, term),
            PeerMsg::Promise {
                term,
                last_term,
                last_index,
                voter,
            } => self.on_promise(now, from, term, (last_term, last_index), voter),
            PeerMsg::Refuse { term: _, promised } => {
                if promised > self.term {
                    self.step_down(now, promised, None, "a member promised a newer term");
                }
            }
            PeerMsg::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                sent_at,
                uploaded,
            } => {
                self.on_append(
                    now,
                    from,
                    term,
                    (prev_index, prev_term),
                    entries,
                    commit,
                    sent_at,
                );
                if term == self.term {
                    self.note_uploaded(uploaded);
                }
            }
            PeerMsg::Ack {
                term,
                matched,
                sent_at,
            } => self.on_ack(now, from, term, matched, sent_at),
            PeerMsg::Reject {
                term,
                hint,
                needs_promise,
            } => self.on_reject(now, from, term, hint, needs_promise),
            PeerMsg::Fetch {
                term,
                from: first,
                prev_term,
            } => self.on_fetch(from, term, first, prev_term),
            PeerMsg::Fetched {
                term,
                entries,
                more,
                gone,
                mismatch,
            } => self.on_fetched_entries(now, term, entries, more, gone, mismatch),
            PeerMsg::ReadIndex { id } => self.on_read_index(now, from, id),
            PeerMsg::ReadIndexReply { id, index } => self.on_read_index_reply(now, id, index),
            PeerMsg::Forward { id, request } => self.on_forward(now, from, id, request),
            PeerMsg::Forwarded { id, result } => {
                if let Some((req, _)) = self.clm().forwarded.remove(&id) {
                    self.reply(req, result);
                }
            }
            PeerMsg::Join { member } => self.on_join(now, member),
            PeerMsg::Behind { term, first } => self.on_behind(now, from, term, first),
            PeerMsg::Removed { term } => {
                // Only a hint (it may be late, from a removal this process
                // was since added back after): the lock decides.
                if term >= self.term && matches!(self.cl().role, Role::Follower { .. }) {
                    self.clm().was_member = true;
                    self.read_cluster_lock(now, None);
                }
            }
        }
    }

    /// A promise save completed.
    pub(super) fn on_hard_state_saved(&mut self, now: Time, io: IoId, error: Option<String>) {
        let c = self.clm();
        let Some(pos) = c.saving.iter().position(|(i, _, _)| *i == io) else {
            return;
        };
        let (_, state, why) = c.saving.remove(pos).expect("found");
        let term = state.promised;
        if let Some(error) = error {
            return self.fail(format!("saving the hard state {state:?} failed: {error}"));
        }
        let c = self.clm();
        c.durable_promised = c.durable_promised.max(term);
        c.durable_rejoining = state.rejoining;
        if term != c.promised {
            return; // a newer promise superseded it
        }
        let (last_term, last_index) = c.durable_tail();
        let voter = c.is_voter();
        match why {
            SaveFor::Answer(to) => self.send(
                &to,
                PeerMsg::Promise {
                    term,
                    last_term,
                    last_index,
                    voter,
                },
            ),
            SaveFor::Candidacy => {
                let me = self.cl().me().clone();
                self.on_promise(now, &me, term, (last_term, last_index), voter);
            }
            SaveFor::Rejoin => {
                if !voter {
                    tracing::info!(
                        term = term.0,
                        "rejoining after a lost disk: promises do not count until caught up"
                    );
                } else {
                    tracing::info!("caught up after a lost disk: promises count again");
                }
            }
        }
    }

    /// A cluster lock operation completed.
    pub(super) fn is_cluster_lock_io(&self, io: IoId) -> bool {
        self.cluster
            .as_deref()
            .and_then(|c| c.lock_io.as_ref())
            .is_some_and(|(i, _)| *i == io)
    }

    pub(super) fn on_cluster_lock_io(&mut self, now: Time, result: ObjectResult) {
        let (_, step) = self.clm().lock_io.take().expect("matched");
        match (step, result) {
            (LockStep::Read { expect }, Ok(ObjectReply::Got { body, etag })) => {
                self.clm().lock_failures = 0;
                match LeaderLock::decode(&body) {
                    Ok(lock) => {
                        if expect.as_ref() == Some(&lock) {
                            // Our write whose answer was lost landed: a
                            // leader's refresh, or a claim.
                            if matches!(self.cl().role, Role::Leader(_)) {
                                return self.on_lock_refreshed(now, lock, etag);
                            }
                            return self.lock_claimed(now, lock, etag);
                        }
                        self.on_lock_read(now, lock, etag);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "leader-lock is unreadable; retrying");
                        self.lock_retry_later(now, None);
                    }
                }
            }
            (LockStep::Read { .. }, Err(ObjectError::NotFound)) => {
                let c = self.clm();
                c.lock_failures = 0;
                c.blank = false;
                // No lock: bootstrap a cluster of one, in a term above any
                // this node promised.
                let me = self.cl().me().clone();
                let lock = LeaderLock {
                    term: Term(self.cl().promised.0 + 1),
                    leader_id: me.id.clone(),
                    leader_peer_addr: me.peer_addr.clone(),
                    members: vec![me],
                    generation: 1,
                };
                self.lock_put(LockStep::Claim(lock), PutCondition::IfAbsent);
            }
            (LockStep::Claim(lock), Ok(ObjectReply::Put { etag })) => {
                self.clm().lock_failures = 0;
                self.lock_claimed(now, lock, etag);
            }
            (LockStep::Refresh(lock), Ok(ObjectReply::Put { etag })) => {
                self.clm().lock_failures = 0;
                self.on_lock_refreshed(now, lock, etag);
            }
            (
                LockStep::Claim(_) | LockStep::Refresh(_),
                Err(ObjectError::PreconditionFailed | ObjectError::NotFound),
            ) => {
                // Someone wrote the lock since we read it.
                self.read_cluster_lock(now, None);
            }
            (LockStep::Claim(lock) | LockStep::Refresh(lock), Err(error)) => {
                // The put may have landed: the read-back decides.
                tracing::warn!(%error, "lock write failed; reading it back");
                self.lock_retry_later(now, Some(lock));
            }
            (LockStep::Read { expect }, Err(error)) => {
                tracing::warn!(%error, "lock read failed; retrying");
                self.lock_retry_later(now, expect);
            }
            (step, Ok(other)) => {
                tracing::error!(?step, ?other, "unexpected answer to a lock operation");
                self.lock_retry_later(now, None);
            }
        }
    }
}

// ----- the lock -----
impl<E: KvEngine> Node<E> {
    fn read_cluster_lock(&mut self, now: Time, expect: Option<LeaderLock>) {
        let c = self.clm();
        if c.lock_io.is_some() {
            return;
        }
        c.lock_next_at = None;
        c.lock_read_at = now;
        let io = self.io_id();
        let term = self.term;
        self.clm().lock_io = Some((io, LockStep::Read { expect }));
        self.actions.push_back(Action::Object {
            io,
            term,
            op: ObjectOp::Get {
                key: layout::LEADER_LOCK.to_owned(),
            },
        });
    }

    fn lock_put(&mut self, step: LockStep, condition: PutCondition) {
        let lock = match &step {
            LockStep::Claim(l) | LockStep::Refresh(l) => l.clone(),
            LockStep::Read { .. } => unreachable!("a put step"),
        };
        debug_assert_eq!(lock.validate(), Ok(()));
        let io = self.io_id();
        let term = self.term;
        let c = self.clm();
        c.lock_next_at = None;
        c.lock_io = Some((io, step));
        self.actions.push_back(Action::Object {
            io,
            term,
            op: ObjectOp::Put {
                key: layout::LEADER_LOCK.to_owned(),
                body: lock.encode(),
                condition,
            },
        });
    }

    /// A lock operation failed transiently: read it again after a backoff.
    fn lock_retry_later(&mut self, now: Time, expect: Option<LeaderLock>) {
        let c = self.clm();
        c.lock_failures = c.lock_failures.saturating_add(1);
        let doublings = c.lock_failures.min(8);
        let pause = (c.cfg.heartbeat_interval_ns << doublings).min(c.cfg.lock_watch_interval_ns);
        c.lock_expect = expect;
        c.lock_next_at = Some(now.plus_nanos(pause));
    }

    /// What a read of the lock shows, outside a claim's read-back.
    fn on_lock_read(&mut self, now: Time, lock: LeaderLock, etag: ETag) {
        let me = self.cl().me().clone();
        let newer = lock.term > self.term;
        let is_me = lock.leader_id == me.id;
        self.clm().lock = Some((lock.clone(), etag.clone()));
        match &self.cl().role {
            Role::Leader(_) | Role::Candidate(_) => {
                // Only the leader of a term writes locks of that term (a
                // claim is always term + 1): a leader's own term's lock is
                // its own, even one handing over to a successor.
                let ours = is_me || matches!(self.cl().role, Role::Leader(_));
                if lock.term > self.term || (lock.term == self.term && !ours) {
                    let leader = (!is_me).then(|| leader_member(&lock));
                    return self.step_down(now, lock.term, leader, "the lock names a newer term");
                }
                if matches!(self.cl().role, Role::Leader(_)) {
                    // Our own lock (a refresh's read-back found it ours).
                    self.leader_adopts_members(now, &lock);
                    if self.cl().removed {
                        return;
                    }
                    self.schedule_lock_refresh(now);
                } else {
                    self.clm().lock_next_at =
                        Some(now.plus_nanos(self.cl().cfg.lock_watch_interval_ns));
                }
                return;
            }
            Role::Follower { .. } => {}
        }
        let member = lock.members.iter().any(|m| m.id == me.id);
        if member {
            self.clm().was_member = true;
        } else if self.cl().was_member {
            return self.leave_removed(now, "the lock no longer lists this member");
        }
        if std::mem::take(&mut self.clm().blank)
            && member
            && lock.members.len() > 1
            && !self.cl().cfg.mutants.vote_after_disk_loss
        {
            self.start_rejoin(lock.term);
        }
        // A previous incarnation of this node led: it may still run
        // (paused, partitioned), so take over at once with a new term; the
        // promise round keeps that safe. Never while rejoining: the others
        // take over once the lock expires.
        let yielding = self.cl().yield_until.is_some_and(|until| now < until);
        if is_me && member && !self.cl().rejoining && !yielding {
            return self.claim_takeover(now, &lock, etag);
        }
        if !is_me && (newer || self.leader().is_none()) {
            self.follow(now, leader_member(&lock));
        }
        let c = self.clm();
        if member {
            c.join_at = None;
        } else if c.join_at.is_none() {
            c.join_at = Some(now);
        }
        let silent = now.0.saturating_sub(c.heard_at.0) >= c.cfg.election_timeout_ns;
        if !silent {
            c.watching = None;
            return;
        }
        match &c.watching {
            Some((seen, since)) if *seen == etag => {
                let since = *since;
                if member
                    && !c.rejoining
                    && !yielding
                    && now.0.saturating_sub(since.0) >= c.cfg.lock_ttl_ns
                {
                    tracing::info!(term = lock.term.0, leader = %lock.leader_id, "the lock expired; taking over");
                    return self.claim_takeover(now, &lock, etag);
                }
            }
            _ => c.watching = Some((etag, now)),
        }
        c.lock_next_at = Some(now.plus_nanos(c.cfg.lock_watch_interval_ns));
    }

    /// Claims the lock read (`If-Match`), term + 1, keeping its members.
    fn claim_takeover(&mut self, now: Time, current: &LeaderLock, etag: ETag) {
        let _ = now;
        let me = self.cl().me().clone();
        let next = LeaderLock {
            term: Term(current.term.0.max(self.cl().promised.0) + 1),
            leader_id: me.id.clone(),
            leader_peer_addr: me.peer_addr.clone(),
            members: current.members.clone(),
            generation: current.generation + 1,
        };
        self.lock_put(LockStep::Claim(next), PutCondition::IfMatch(etag));
    }

    /// We hold the lock for `lock.term`: start the promise round.
    fn lock_claimed(&mut self, now: Time, lock: LeaderLock, etag: ETag) {
        let term = lock.term;
        self.clm().lock = Some((lock.clone(), etag));
        if term <= self.cl().promised {
            // We promised a newer term meanwhile (a lost claim answer):
            // follow instead.
            return self.read_cluster_lock(now, None);
        }
        tracing::info!(term = term.0, "won the lock; asking for promises");
        self.fail_waiting(now, "leader changed");
        self.term = term;
        let c = self.clm();
        c.promised = term;
        c.watching = None;
        c.join_at = None;
        c.role = Role::Candidate(Candidate {
            members: lock.members.clone(),
            promises: BTreeMap::new(),
            fetching: None,
            fetch_target: Index(0),
            fetch_from: Index(0),
            prepare_at: now,
        });
        c.lock_next_at = Some(now.plus_nanos(c.cfg.lock_watch_interval_ns));
        if c.cfg.mutants.skip_promise_round {
            return self.become_leader(now);
        }
        self.save_hard_state(SaveFor::Candidacy);
        self.send_prepares(now);
    }

    fn on_lock_refreshed(&mut self, now: Time, lock: LeaderLock, etag: ETag) {
        self.clm().lock = Some((lock.clone(), etag));
        self.leader_adopts_members(now, &lock);
        if self.cl().removed {
            return;
        }
        self.schedule_lock_refresh(now);
        self.advance_commit(now);
    }

    /// Leader: the lock (ours, of our term) as it is now; no change of ours
    /// is in flight any more. Its members are the voters, whether our last
    /// write set them or an earlier one of ours whose answer was lost
    /// landed late.
    fn leader_adopts_members(&mut self, now: Time, lock: &LeaderLock) {
        let Role::Leader(l) = &mut self.clm().role else {
            return;
        };
        l.changing = false;
        if l.members != lock.members {
            tracing::info!(members = ?lock.members.iter().map(|m| &m.id).collect::<Vec<_>>(), "membership changed");
            for peer in l.peers.values_mut() {
                peer.voter = lock.members.iter().any(|m| m.id == peer.member.id);
            }
            l.members = lock.members.clone();
        }
        let removed = match &l.removing {
            Some((id, req)) if !l.members.iter().any(|m| &m.id == id) => Some((id.clone(), *req)),
            _ => None,
        };
        let Some((id, req)) = removed else {
            return;
        };
        l.removing = None;
        // It gets nothing more from us but the news (it reads the lock to
        // check; if the news is lost, it reads the lock once it misses us).
        let gone = l.peers.remove(&id);
        tracing::info!(member = %id, "member removed");
        if let Some(peer) = gone {
            let term = self.term;
            self.send(&peer.member, PeerMsg::Removed { term });
        }
        self.reply(req, Ok(Response::Members(lock.members.clone())));
        if id == self.cl().me().id {
            self.leave_removed(now, "this leader removed itself from the members");
        }
    }

    /// This node is no longer a member: it stops taking part.
    fn leave_removed(&mut self, now: Time, why: &str) {
        tracing::warn!(why, "removed from the cluster; taking no further part");
        self.step_down(now, self.term, None, why);
        let c = self.clm();
        c.removed = true;
        c.join_at = None;
        c.lock_next_at = None;
        self.fail_forwarded(why);
    }

    /// Follower: fails the requests forwarded to the leader, outcome
    /// unknown (they may still take effect).
    fn fail_forwarded(&mut self, why: &str) {
        let forwarded: Vec<ReqId> = std::mem::take(&mut self.clm().forwarded)
            .into_values()
            .map(|(r, _)| r)
            .collect();
        for req in forwarded {
            self.reply(
                req,
                Err(Error::Timeout(format!(
                    "{why}: the forwarded request may still take effect"
                ))),
            );
        }
    }

    fn schedule_lock_refresh(&mut self, now: Time) {
        let c = self.clm();
        c.lock_next_at = Some(now.plus_nanos(c.cfg.lock_refresh_interval_ns));
    }

    /// Leader: the lock rewritten with `members` (a refresh keeps them).
    fn write_lock(&mut self, members: Vec<Member>) {
        self.write_lock_led_by(members, None);
    }

    /// [`Node::write_lock`], naming `successor` as the leader if given.
    fn write_lock_led_by(&mut self, members: Vec<Member>, successor: Option<Member>) {
        let Some((lock, etag)) = self.cl().lock.clone() else {
            return;
        };
        if self.cl().lock_io.is_some() {
            return;
        }
        let (leader_id, leader_peer_addr) = match successor {
            Some(m) => (m.id, m.peer_addr),
            None => (lock.leader_id.clone(), lock.leader_peer_addr.clone()),
        };
        let next = LeaderLock {
            members,
            generation: lock.generation + 1,
            leader_id,
            leader_peer_addr,
            ..lock
        };
        self.lock_put(LockStep::Refresh(next), PutCondition::IfMatch(etag));
    }
}

fn leader_member(lock: &LeaderLock) -> Member {
    Member {
        id: lock.leader_id.clone(),
        peer_addr: lock.leader_peer_addr.clone(),
    }
}

// ----- election -----
impl<E: KvEngine> Node<E> {
    /// Saves the hard state (`promised` and `rejoining` as they are now).
    fn save_hard_state(&mut self, why: SaveFor) {
        let io = self.io_id();
        let c = self.clm();
        let state = HardState {
            promised: c.promised,
            rejoining: c.rejoining,
        };
        c.saving.push_back((io, state, why));
        self.actions.push_back(Action::SaveHardState { io, state });
    }

    /// A blank node found itself a member of the lock of `term`: it lost
    /// its disk (module docs, "Rejoining with an empty disk").
    fn start_rejoin(&mut self, term: Term) {
        tracing::warn!(
            term = term.0,
            "this node is a member but its disk is empty (lost?): rejoining; its promises \
             do not count until it has caught up"
        );
        self.term = self.term.max(term);
        let c = self.clm();
        c.rejoining = true;
        c.rejoin_goal = None;
        c.promised = c.promised.max(term);
        self.save_hard_state(SaveFor::Rejoin);
    }

    /// Rejoining: counts again once applied through the goal (module docs).
    fn check_rejoined(&mut self) {
        let applied = Index(self.store.meta().applied_index);
        let c = self.cl();
        let Some((term, commit)) = c.rejoin_goal else {
            return;
        };
        let caught_up =
            c.rejoining && applied >= commit && c.log.term_at(applied).is_some_and(|t| t >= term);
        if caught_up {
            let c = self.clm();
            c.rejoining = false;
            c.rejoin_goal = None;
            self.save_hard_state(SaveFor::Rejoin);
        }
    }

    fn send_prepares(&mut self, now: Time) {
        let term = self.term;
        let c = self.clm();
        let Role::Candidate(cand) = &mut c.role else {
            return;
        };
        cand.prepare_at = now.plus_nanos(c.cfg.heartbeat_interval_ns);
        let to: Vec<Member> = cand
            .members
            .iter()
            .filter(|m| m.id != c.cfg.me.id && !cand.promises.contains_key(&m.id))
            .cloned()
            .collect();
        for m in to {
            self.send(&m, PeerMsg::Prepare { term });
        }
    }

    fn on_prepare(&mut self, now: Time, from: &Member, term: Term) {
        let c = self.cl();
        if c.blank {
            // Started with nothing and has not read the lock yet: it may
            // be a member that lost its disk and forgot newer promises, so
            // it promises nothing until the lock says which terms exist.
            return;
        }
        if term < c.promised || (term == c.promised && c.durable_promised < term) {
            // Stale, or a duplicate whose save is still running.
            if term < c.promised {
                let promised = c.promised;
                self.send(from, PeerMsg::Refuse { term, promised });
            }
            return;
        }
        if term == c.promised {
            // A duplicate (our answer was lost): answer again.
            let (last_term, last_index) = c.durable_tail();
            let voter = c.is_voter();
            return self.send(
                from,
                PeerMsg::Promise {
                    term,
                    last_term,
                    last_index,
                    voter,
                },
            );
        }
        let recent = now.0.saturating_sub(c.heard_at.0) < c.cfg.election_timeout_ns;
        if matches!(c.role, Role::Follower { .. }) && recent {
            // We heard from our leader (or started) within the election
            // timeout: its lease may still run. (A restarted leader's new
            // incarnation waits too: the old one may still run.)
            let promised = c.promised;
            return self.send(from, PeerMsg::Refuse { term, promised });
        }
        tracing::info!(term = term.0, to = %from.id, "promising");
        self.step_down(now, term, Some(from.clone()), "promised a newer term");
        let c = self.clm();
        c.promised = term;
        c.heard_at = now;
        self.save_hard_state(SaveFor::Answer(from.clone()));
    }

    fn on_promise(
        &mut self,
        now: Time,
        from: &Member,
        term: Term,
        last: (Term, Index),
        voter: bool,
    ) {
        if term != self.term {
            return;
        }
        let c = self.clm();
        match &mut c.role {
            Role::Candidate(cand) => {
                // A rejoining member's promise does not count (module
                // docs); the leader we become replicates to it after its
                // next answer.
                if !voter || !cand.members.iter().any(|m| m.id == from.id) {
                    return;
                }
                cand.promises.insert(from.id.clone(), last);
                self.maybe_adopt(now);
            }
            Role::Leader(l) => {
                if let Some(peer) = l.peers.get_mut(&from.id) {
                    if !peer.promised {
                        peer.promised = true;
                        peer.heard_at = Some(now);
                        peer.next = Index(last.1 .0.min(c.log.last_index().0) + 1);
                        self.send_append(now, &from.id.clone());
                    }
                }
            }
            Role::Follower { .. } => {}
        }
    }

    /// With promises from a majority: adopt the best log.
    fn maybe_adopt(&mut self, now: Time) {
        let c = self.cl();
        let Role::Candidate(cand) = &c.role else {
            return;
        };
        if cand.fetching.is_some() || !cand.promises.contains_key(&c.cfg.me.id) {
            return;
        }
        if cand.promises.len() < quorum(cand.members.len(), FollowerWaitMode::Quorum) {
            return;
        }
        let mine = cand.promises[&c.cfg.me.id];
        let (best_id, best) = cand
            .promises
            .iter()
            .max_by_key(|(id, last)| (**last, *id == &c.cfg.me.id))
            .map(|(id, last)| (id.clone(), *last))
            .expect("a majority is not empty");
        if best <= mine || best_id == c.cfg.me.id {
            return self.become_leader(now);
        }
        let member = cand
            .members
            .iter()
            .find(|m| m.id == best_id)
            .cloned()
            .expect("promisers are members");
        let (from, prev_term) = self.fetch_point(best.1);
        tracing::info!(from = %best_id, first = from.0, "fetching the most up-to-date log");
        if let Role::Candidate(cand) = &mut self.clm().role {
            cand.fetching = Some(member.clone());
            cand.fetch_target = best.1;
        }
        // Our own entries stay until a fetched one conflicts with them
        // (they may be the only durable copy of committed entries if the
        // fetch never completes).
        self.fetch_again(&member, from, prev_term);
    }

    /// Where a candidate's fetch of the best log (ending at `best_last`)
    /// starts, and the term the best promiser must hold just before it.
    ///
    /// Past the committed prefix our log may differ from the best one, but
    /// usually it is a prefix of it: the fetch starts after the last entry
    /// both may hold, and the best promiser serves it only if its entry
    /// there has our term (log matching: then both logs agree up to it);
    /// otherwise it answers `mismatch` and we ask again from the committed
    /// prefix. Fetching only what we lack matters when the best promiser's
    /// memory (or the bucket's WAL, after GC) no longer holds the entries
    /// just after our committed prefix.
    fn fetch_point(&self, best_last: Index) -> (Index, Option<Term>) {
        let committed = self.known_committed();
        let shared_end = self.cl().log.last_index().min(best_last);
        match self.cl().log.term_at(shared_end) {
            Some(t) if shared_end > committed => (shared_end.next(), Some(t)),
            _ => (committed.next(), None),
        }
    }

    /// Entries up to here are committed (so identical in every log that
    /// holds them).
    fn known_committed(&self) -> Index {
        self.cl().commit.max(Index(self.store.meta().applied_index))
    }

    fn on_fetch(&mut self, from: &Member, term: Term, first: Index, prev_term: Option<Term>) {
        let c = self.cl();
        if term != c.promised || c.blank || c.rejoining {
            // (A node that lost its disk has no log worth adopting; the
            // promise it gave before the loss is void.)
            return;
        }
        let c = self.cl();
        let prev = Index(first.0.saturating_sub(1));
        if prev_term.is_some_and(|t| c.log.term_at(prev) != Some(t)) {
            return self.send(
                from,
                PeerMsg::Fetched {
                    term,
                    entries: Vec::new(),
                    more: false,
                    gone: false,
                    mismatch: true,
                },
            );
        }
        let (entries, gone) = if first < c.log.first_index() && first <= c.log.last_index() {
            (Vec::new(), true)
        } else {
            (c.log.slice(first, c.cfg.append_entries_max), false)
        };
        let more = entries
            .last()
            .is_some_and(|e| e.index_id() < c.log.last_index());
        self.send(
            from,
            PeerMsg::Fetched {
                term,
                entries,
                more,
                gone,
                mismatch: false,
            },
        );
    }

    fn on_fetched_entries(
        &mut self,
        now: Time,
        term: Term,
        entries: Vec<Entry>,
        more: bool,
        gone: bool,
        mismatch: bool,
    ) {
        if term != self.term {
            return;
        }
        let Role::Candidate(cand) = &self.cl().role else {
            return;
        };
        let Some(source) = cand.fetching.clone() else {
            return;
        };
        if mismatch {
            // The best log differs from ours before the fetch's first
            // entry (or its holder no longer has the entry there): ask
            // again from the committed prefix, which every log shares.
            let from = self.known_committed().next();
            tracing::info!(from = %source.id, first = from.0,
                "our log differs from the best one past the committed prefix: fetching from there");
            return self.fetch_again(&source, from, None);
        }
        if gone {
            if self.candidate_catch_up(source.clone()) {
                return;
            }
            tracing::error!(
                from = %source.id,
                "neither the most up-to-date member nor the bucket holds the entries this node \
                 lacks: giving up the round"
            );
            return self.give_up_round(now);
        }
        let committed = self.known_committed();
        let end = entries.last().map(Entry::index_id);
        let fresh = self.merge_into_log(entries);
        if let Some(first) = fresh.first() {
            if first.index_id() != self.cl().log.last_index().next() {
                tracing::warn!("fetched entries do not continue the log; asking again");
                let Role::Candidate(cand) = &self.cl().role else {
                    return;
                };
                let (from, prev_term) = self.fetch_point(cand.fetch_target);
                return self.fetch_again(&source, from, prev_term);
            }
            self.append_log(fresh);
        }
        if more {
            // (Our log now agrees with the source's through `end`.)
            let from = end.map_or(self.cl().log.last_index(), |e| e).next();
            return self.fetch_again(&source, from, None);
        }
        let Role::Candidate(cand) = &self.cl().role else {
            return;
        };
        let source_end = end.unwrap_or(Index(cand.fetch_from.0.saturating_sub(1)));
        if source_end < cand.fetch_target {
            // Its log is shorter than the one it promised with: it lost
            // entries (its disk) since. Adopting it could drop committed
            // entries; this round is void. A later takeover starts over.
            tracing::warn!(
                from = %source.id,
                promised = cand.fetch_target.0,
                holds = source_end.0,
                "the most up-to-date promiser no longer holds its log; giving up the round"
            );
            return self.step_down(now, self.term, None, "the best log was lost");
        }
        // The adopted log ends at the best promiser's: anything of ours
        // beyond it is not committed (the best log holds every committed
        // entry) and goes.
        self.truncate_log(source_end.max(committed));
        self.become_leader(now);
    }

    fn fetch_again(&mut self, source: &Member, from: Index, prev_term: Option<Term>) {
        if let Role::Candidate(cand) = &mut self.clm().role {
            cand.fetch_from = from;
        }
        let term = self.term;
        self.send(
            source,
            PeerMsg::Fetch {
                term,
                from,
                prev_term,
            },
        );
    }

    /// The promise round is over: append the barrier and lead.
    fn become_leader(&mut self, now: Time) {
        let term = self.term;
        let me = self.cl().me().clone();
        let Role::Candidate(cand) = &self.cl().role else {
            return;
        };
        let members = cand.members.clone();
        let promises = cand.promises.clone();
        let barrier = Entry {
            term: term.0,
            index: self.cl().log.last_index().next().0,
            payload: Some(Payload::Barrier(Barrier {})),
        };
        let barrier_index = barrier.index_id();
        tracing::info!(term = term.0, barrier = barrier_index.0, "leading");
        let mut peers = BTreeMap::new();
        for m in members.iter().filter(|m| m.id != me.id) {
            let promised = promises.get(&m.id);
            peers.insert(
                m.id.clone(),
                Peer {
                    member: m.clone(),
                    voter: true,
                    promised: promised.is_some(),
                    next: promised.map_or(barrier_index, |p| {
                        Index(p.1 .0.min(barrier_index.0 - 1) + 1)
                    }),
                    matched: Index(0),
                    acked_sent_at: None,
                    heard_at: promised.map(|_| now),
                    unreachable: false,
                },
            );
        }
        self.clm().role = Role::Leader(Leader {
            members,
            peers,
            barrier: barrier_index,
            serving: false,
            heartbeat_at: now,
            since: now,
            changing: false,
            removing: None,
        });
        self.schedule_lock_refresh(now);
        self.append_log(vec![barrier]);
        self.last_index = barrier_index;
        self.broadcast(now);
        self.advance_commit(now);
    }

    /// Candidate: the best log among the promises cannot be adopted (see
    /// [`Cluster::yield_until`]): steps down and claims no lock for
    /// two lock TTLs and an election timeout, long enough for the member
    /// holding that log to see the lock expire and take over.
    pub(super) fn give_up_round(&mut self, now: Time) {
        let c = self.clm();
        let wait = 2 * c.cfg.lock_ttl_ns + c.cfg.election_timeout_ns;
        c.yield_until = Some(now.plus_nanos(wait));
        let term = self.term;
        self.step_down(now, term, None, "cannot adopt the best log");
    }

    /// Any role → follower of `term` (led by `leader` if known).
    fn step_down(&mut self, now: Time, term: Term, leader: Option<Member>, why: &str) {
        let was = !matches!(self.cl().role, Role::Follower { .. });
        if was {
            tracing::info!(term = self.term.0, new_term = term.0, why, "stepping down");
            self.fail_waiting(now, why);
            if let Role::Leader(Leader {
                removing: Some((_, req)),
                ..
            }) = &self.cl().role
            {
                let req = *req;
                self.reply(
                    req,
                    Err(Error::Timeout(format!(
                        "{why}: the membership change may still have taken effect"
                    ))),
                );
            }
        }
        // Only a durable promise binds this node to a term; knowing of a
        // newer one is not a promise.
        self.term = self.term.max(term);
        let c = self.clm();
        // A follower keeps its leader until `follow` compares it with the
        // new one (requests forwarded to the old one fail).
        if !matches!(c.role, Role::Follower { .. }) {
            c.role = Role::Follower { leader: None };
        }
        c.verified = Index(0);
        c.watching = None;
        if c.lock_io.is_none() {
            c.lock_next_at = Some(now.plus_nanos(c.cfg.election_timeout_ns));
        }
        match leader {
            Some(leader) => self.follow(now, leader),
            None => self.clm().role = Role::Follower { leader: None },
        }
    }

    /// Fails what waits on this node's leadership or leader.
    fn fail_waiting(&mut self, _now: Time, why: &str) {
        let c = self.clm();
        let awaiting: Vec<ReqId> = std::mem::take(&mut c.awaiting).into_values().collect();
        let forwarded: Vec<ReqId> = std::mem::take(&mut c.forwarded)
            .into_values()
            .map(|(r, _)| r)
            .collect();
        let reads = std::mem::take(&mut c.reads);
        let queued: Vec<ReqId> = self.queued.drain(..).filter_map(|p| p.req).collect();
        for req in awaiting.into_iter().chain(forwarded) {
            self.reply(
                req,
                Err(Error::Timeout(format!(
                    "{why}: the write is in the log and may still be committed"
                ))),
            );
        }
        for req in queued {
            self.reply(req, Err(no_leader(why)));
        }
        for read in reads {
            self.answer_read(read.waiter, Err(no_leader(why)));
        }
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) >> 1
}

fn no_leader(why: &str) -> Error {
    Error::Unavailable(format!("no leader ({why}); retry"))
}

/// How many of `n` members must hold an entry.
fn quorum(n: usize, mode: FollowerWaitMode) -> usize {
    match mode {
        FollowerWaitMode::Quorum => n / 2 + 1,
        FollowerWaitMode::All => n,
        FollowerWaitMode::None => 1,
    }
}

// ----- replication -----
impl<E: KvEngine> Node<E> {
    /// Appends entries to the log tail and the WAL (not yet durable).
    fn append_log(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let io = self.io_id();
        let term = self.term;
        let c = self.clm();
        for e in &entries {
            c.log.push(e.clone());
        }
        self.last_index = self.cl().log.last_index();
        self.actions
            .push_back(Action::AppendWal { io, term, entries });
        self.cluster_sync();
    }

    /// Compares `entries` (a contiguous run of the leader's or the best
    /// promiser's log) with ours: committed ones and ones we hold with the
    /// same term are skipped; at the first that conflicts our log is
    /// truncated. Returns the entries still to append.
    fn merge_into_log(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        let committed = self.known_committed();
        let mut fresh = Vec::new();
        for e in entries {
            let index = e.index_id();
            if index <= committed {
                continue;
            }
            if fresh.is_empty() {
                match self.cl().log.term_at(index) {
                    Some(t) if t == e.term_id() => continue,
                    Some(_) => self.truncate_log(Index(index.0 - 1)),
                    None => {}
                }
            }
            fresh.push(e);
        }
        fresh
    }

    /// Follower: committed entries read from the bucket, continuing the
    /// applied state (the `bucket` submodule): taken into the log exactly
    /// like an append that fits, and known to be committed.
    fn take_committed(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(Entry::index_id) else {
            return;
        };
        let fresh = self.merge_into_log(entries);
        self.append_log(fresh);
        let c = self.clm();
        c.verified = c.verified.max(last);
        c.commit = c.commit.max(last);
    }

    /// Drops the log after `index` (uncommitted entries only).
    fn truncate_log(&mut self, index: Index) {
        if self.cl().log.last_index() <= index {
            return;
        }
        let applied = Index(self.store.meta().applied_index);
        if index < applied {
            // Only committed entries are applied and a leader never
            // conflicts with them: this means a safety bug somewhere (or a
            // deliberate one). Stop rather than diverge.
            return self.fail(format!(
                "the leader's log conflicts with applied entry {}: refusing to diverge",
                index.next()
            ));
        }
        let io = self.io_id();
        let term = self.term;
        let c = self.clm();
        c.log.truncate_after(index);
        c.synced = c.synced.min(index);
        c.verified = c.verified.min(index);
        // A sync in flight covers entries that are gone: its completion
        // no longer says anything.
        c.sync_io = None;
        self.last_index = index;
        self.actions.push_back(Action::TruncateWal {
            io,
            term,
            after: index,
        });
    }

    /// Starts an fsync if none is in flight and something is unsynced.
    fn cluster_sync(&mut self) {
        let c = self.cl();
        let last = c.log.last_index();
        if c.sync_io.is_some() || last <= c.synced {
            return;
        }
        let io = self.io_id();
        let term = self.term;
        self.clm().sync_io = Some((io, last));
        self.actions.push_back(Action::SyncWal {
            io,
            term,
            through: last,
        });
    }

    pub(super) fn on_cluster_wal_synced(&mut self, now: Time, io: IoId, through: Index) {
        let c = self.clm();
        if c.sync_io.map(|(i, _)| i) != Some(io) {
            return;
        }
        c.sync_io = None;
        c.synced = c.synced.max(through);
        match &c.role {
            Role::Follower {
                leader: Some(leader),
            } => {
                let leader = leader.clone();
                let matched = c.verified.min(c.synced);
                let term = self.term;
                if matched > Index(0) {
                    self.ack(&leader, term, matched);
                }
            }
            Role::Leader(_) => self.advance_commit(now),
            _ => {}
        }
        self.cluster_apply(now);
        self.cluster_sync();
        self.flush_batch();
    }

    /// Leader: a batch of client entries (already numbered by
    /// `flush_batch`) goes to the log and the followers.
    pub(super) fn cluster_leader_append(&mut self, now: Time, batch: Vec<(Option<ReqId>, Entry)>) {
        let mut entries = Vec::with_capacity(batch.len());
        for (req, entry) in batch {
            if let Some(req) = req {
                self.clm().awaiting.insert(entry.index_id(), req);
            }
            entries.push(entry);
        }
        self.append_log(entries);
        self.broadcast(now);
    }

    /// Leader: appends (or heartbeats) to every promised peer, prepares to
    /// the others.
    fn broadcast(&mut self, now: Time) {
        let Role::Leader(l) = &mut self.clm().role else {
            return;
        };
        l.heartbeat_at = now;
        let ids: Vec<String> = l.peers.keys().cloned().collect();
        for id in ids {
            self.send_append(now, &id);
        }
    }

    fn send_append(&mut self, now: Time, id: &str) {
        let term = self.term;
        let c = self.cl();
        let Role::Leader(l) = &c.role else {
            return;
        };
        let Some(peer) = l.peers.get(id) else {
            return;
        };
        let member = peer.member.clone();
        if !peer.promised {
            return self.send(&member, PeerMsg::Prepare { term });
        }
        let prev_index = Index(peer.next.0 - 1);
        let Some(prev_term) = c.log.term_at(prev_index) else {
            // It needs entries this node no longer holds: they are in the
            // bucket (the `bucket` submodule).
            let first = c.log.first_index();
            return self.send(&member, PeerMsg::Behind { term, first });
        };
        let entries = c.log.slice(peer.next, c.cfg.append_entries_max);
        let next = Index(peer.next.0 + entries.len() as u64);
        let commit = c.commit;
        let uploaded = self.cluster_uploaded_through().unwrap_or(Index(0));
        if let Role::Leader(l) = &mut self.clm().role {
            if let Some(p) = l.peers.get_mut(id) {
                p.next = next;
            }
        }
        self.send(
            &member,
            PeerMsg::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                sent_at: now,
                uploaded,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        now: Time,
        from: &Member,
        term: Term,
        prev: (Index, Term),
        entries: Vec<Entry>,
        commit: Index,
        sent_at: Time,
    ) {
        let c = self.cl();
        if term < c.promised {
            let (promised, hint) = (c.promised, c.log.last_index());
            return self.send(
                from,
                PeerMsg::Reject {
                    term: promised,
                    hint,
                    needs_promise: false,
                },
            );
        }
        if term > c.promised {
            let (promised, hint) = (c.promised, c.log.last_index());
            return self.send(
                from,
                PeerMsg::Reject {
                    term: promised,
                    hint,
                    needs_promise: true,
                },
            );
        }
        if c.durable_promised < term {
            return; // our promise is still being saved; the leader resends
        }
        if !matches!(c.role, Role::Follower { .. }) {
            tracing::error!(term = term.0, from = %from.id, "an append of our own term from another node");
            return;
        }
        let c = self.clm();
        c.heard_at = now;
        c.watching = None;
        c.join_at = c.join_at.map(|_| now.plus_nanos(c.cfg.election_timeout_ns));
        self.follow(now, from.clone());
        let (prev_index, prev_term) = prev;
        let committed = self.known_committed();
        let c = self.cl();
        let fits = if prev_index <= committed {
            true // committed entries are the same everywhere
        } else {
            c.log.term_at(prev_index) == Some(prev_term)
        };
        if !fits {
            let hint = Index(prev_index.0 - 1)
                .min(c.log.last_index())
                .max(committed);
            return self.send(
                from,
                PeerMsg::Reject {
                    term,
                    hint,
                    needs_promise: false,
                },
            );
        }
        let c = self.clm();
        if c.rejoining && c.rejoin_goal.is_none() {
            c.rejoin_goal = Some((term, commit));
        }
        let end = Index(prev_index.0 + entries.len() as u64);
        let fresh = self.merge_into_log(entries);
        self.append_log(fresh);
        let c = self.clm();
        c.verified = c.verified.max(end);
        let verified = c.verified;
        c.commit = c.commit.max(commit.min(verified));
        let matched = if c.cfg.mutants.ack_before_fsync {
            verified
        } else {
            verified.min(c.synced)
        };
        self.send(
            from,
            PeerMsg::Ack {
                term,
                matched,
                sent_at,
            },
        );
        self.cluster_apply(now);
    }

    fn on_ack(&mut self, now: Time, from: &Member, term: Term, matched: Index, sent_at: Time) {
        if term != self.term {
            return;
        }
        let last = self.cl().log.last_index();
        let Role::Leader(l) = &mut self.clm().role else {
            return;
        };
        let Some(peer) = l.peers.get_mut(&from.id) else {
            return;
        };
        peer.heard_at = Some(now);
        peer.matched = peer.matched.max(matched);
        if peer.next <= peer.matched {
            peer.next = peer.matched.next();
        }
        if sent_at > Time(0) {
            peer.acked_sent_at = peer.acked_sent_at.max(Some(sent_at));
        }
        let behind = peer.next <= last;
        self.advance_commit(now);
        self.confirm_reads(now);
        if behind {
            self.send_append(now, &from.id.clone());
        }
        self.maybe_change_members(now);
    }

    fn on_reject(
        &mut self,
        now: Time,
        from: &Member,
        term: Term,
        hint: Index,
        needs_promise: bool,
    ) {
        if term > self.term {
            return self.step_down(now, term, None, "a member promised a newer term");
        }
        let my_term = self.term;
        let Role::Leader(l) = &mut self.clm().role else {
            return;
        };
        let Some(peer) = l.peers.get_mut(&from.id) else {
            return;
        };
        peer.heard_at = Some(now);
        if needs_promise {
            peer.promised = false;
            return self.send(&from.clone(), PeerMsg::Prepare { term: my_term });
        }
        if hint < peer.matched {
            // A reject that overtook a later acknowledgement on the way
            // (messages reorder), or a member that no longer holds what it
            // acknowledged (its WAL lost without its hard state). Starting
            // over from its hint is right either way: the entries are
            // resent, and a matched index that goes down only delays
            // commits.
            tracing::info!(peer = %from.id, matched = peer.matched.0, hint = hint.0,
                "a member's reject is behind what it acknowledged (late, or entries lost); resending from its hint");
            peer.matched = hint;
        }
        peer.next = hint.next();
        self.send_append(now, &from.id.clone());
    }

    /// Leader: the commit index follows what a quorum of members holds.
    fn advance_commit(&mut self, now: Time) {
        let term = self.term;
        let c = self.cl();
        let Role::Leader(l) = &c.role else {
            return;
        };
        let connected = |m: &Member| {
            !c.cfg.mutants.commit_on_connected
                || m.id == c.cfg.me.id
                || l.peers
                    .get(&m.id)
                    .and_then(|p| p.heard_at)
                    .is_some_and(|t| now.0.saturating_sub(t.0) < c.cfg.election_timeout_ns)
        };
        let mut matched: Vec<Index> = l
            .members
            .iter()
            .filter(|m| connected(m))
            .map(|m| {
                if m.id == c.cfg.me.id {
                    c.synced
                } else {
                    l.peers.get(&m.id).map_or(Index(0), |p| p.matched)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let need = quorum(matched.len(), c.cfg.wait_mode);
        let candidate = matched[need - 1].min(c.synced);
        if candidate > c.commit && c.log.term_at(candidate) == Some(term) {
            self.clm().commit = candidate;
            self.cluster_apply(now);
            // Followers learn the new commit index now, not with the next
            // heartbeat: their watches and reads wait for it (about one
            // heartbeat interval late otherwise).
            self.broadcast(now);
        }
    }

    /// Applies what is committed and fsynced locally.
    pub(super) fn cluster_apply(&mut self, now: Time) {
        loop {
            let c = self.cl();
            let applied = Index(self.store.meta().applied_index);
            let through =
                if c.cfg.mutants.apply_uncommitted && matches!(c.role, Role::Follower { .. }) {
                    c.synced
                } else {
                    c.commit.min(c.synced)
                };
            if applied >= through {
                break;
            }
            let entry = c
                .log
                .get(applied.next())
                .cloned()
                .expect("unapplied entries are held");
            match self.store.apply(&self.engine, &entry) {
                Ok(applied) => {
                    self.after_apply(now, &entry, &applied);
                    self.cluster_upload_note_applied(&entry);
                    if let Some(req) = self.clm().awaiting.remove(&entry.index_id()) {
                        let result = applied.result.map(Response::Write);
                        self.reply(req, result);
                    }
                }
                Err(crate::engine::EngineError(why)) => {
                    return self.fail(format!("engine write failed: {why}"));
                }
            }
            let becomes_serving = matches!(&self.cl().role, Role::Leader(l) if !l.serving && l.barrier == entry.index_id());
            if becomes_serving {
                self.start_serving(now);
            }
        }
        self.db_size_bytes = self.engine.size_bytes();
        self.check_rejoined();
        let applied = Index(self.store.meta().applied_index);
        // The leader also keeps what it has yet to upload (the `bucket`
        // submodule).
        let upload_from = self.upload_keeps_after().unwrap_or(applied);
        let c = self.clm();
        let keep = c.cfg.peer_buffer_entries;
        c.log.forget_applied(applied.min(upload_from), keep);
        self.maybe_trim();
        self.cluster_upload_pump(now);
        self.maybe_checkpoint(now);
        self.serve_reads(now);
    }

    fn start_serving(&mut self, now: Time) {
        if let Role::Leader(l) = &mut self.clm().role {
            l.serving = true;
        }
        tracing::info!(term = self.term.0, "barrier applied: serving");
        // etcd's behaviour on a new leader: every lease's TTL restarts.
        match mvcc::leases(&self.engine) {
            Ok(leases) => self.lessor.restore(now, &leases),
            Err(e) => self.fail(format!("reading leases failed: {e}")),
        }
    }
}

// ----- clients: writes, forwarding, reads -----
impl<E: KvEngine> Node<E> {
    /// Cluster mode: where a client request goes. `Some(request)` when the
    /// node handles it itself (a serving leader, or a request any node
    /// answers).
    pub(super) fn cluster_route(
        &mut self,
        now: Time,
        req: ReqId,
        request: ClientRequest,
    ) -> Option<ClientRequest> {
        if self.cl().removed {
            self.reply(
                req,
                Err(Error::Unavailable(
                    "this member was removed from the cluster".into(),
                )),
            );
            return None;
        }
        let leader_only = matches!(
            request,
            ClientRequest::Write(_)
                | ClientRequest::LeaseKeepAlive { .. }
                | ClientRequest::LeaseTimeToLive { .. }
                | ClientRequest::LeaseLeases
                | ClientRequest::MemberRemove { .. }
        );
        if matches!(request, ClientRequest::LinearizableRead) {
            self.cluster_read(now, req);
            return None;
        }
        if !leader_only || self.cl().is_serving_leader() {
            return Some(request);
        }
        match self.cl().role {
            Role::Follower {
                leader: Some(ref leader),
            } if req.0 < REMOTE_REQ_BASE => {
                let leader = leader.clone();
                let id = self.clm().id();
                self.clm().forwarded.insert(id, (req, now));
                self.send(&leader, PeerMsg::Forward { id, request });
            }
            _ => self.reply(req, Err(no_leader("this node has no leader now"))),
        }
        None
    }

    fn on_forward(&mut self, now: Time, from: &Member, id: u64, request: ClientRequest) {
        if !self.cl().is_serving_leader() || matches!(request, ClientRequest::LinearizableRead) {
            let result = Err(no_leader("the forwarded-to node is not the leader"));
            return self.send(from, PeerMsg::Forwarded { id, result });
        }
        let rid = ReqId(REMOTE_REQ_BASE | (self.clm().id() & (REMOTE_REQ_BASE - 1)));
        self.clm().remote.insert(rid, (from.clone(), id));
        self.handle_client(now, rid, request);
    }

    /// A reply for a request a follower forwarded goes back to it.
    pub(super) fn route_reply(&mut self, action: Action) -> Option<Action> {
        let Action::Reply { req, result } = &action else {
            return Some(action);
        };
        let Some(c) = self.cluster.as_deref_mut() else {
            return Some(action);
        };
        let Some((to, id)) = c.remote.remove(req) else {
            return Some(action);
        };
        Some(Action::Send {
            to,
            msg: PeerMsg::Forwarded {
                id,
                result: result.clone(),
            },
        })
    }

    fn cluster_read(&mut self, now: Time, req: ReqId) {
        match &self.cl().role {
            Role::Leader(l) if l.serving => {
                let unchecked = self.cl().cfg.mutants.reads_without_lease;
                let leased = self.lease_until(l).is_some_and(|until| now < until);
                self.leader_queue_read(now, ReadWaiter::Local(req), unchecked || leased);
            }
            Role::Follower {
                leader: Some(leader),
            } => {
                let leader = leader.clone();
                let id = self.clm().id();
                self.clm().reads.push(Read {
                    waiter: ReadWaiter::Asked { req, id, at: now },
                    index: None,
                    arrived: now,
                    confirmed: false,
                });
                self.send(&leader, PeerMsg::ReadIndex { id });
            }
            _ => self.reply(req, Err(no_leader("no leader to confirm the read"))),
        }
    }

    /// Follower: `leader` leads now. If that is a change, requests
    /// forwarded to a previous leader fail at once (outcome unknown: they
    /// may still take effect) rather than wait out their timeout, and reads
    /// waiting for a read index ask the new leader.
    fn follow(&mut self, now: Time, leader: Member) {
        let Role::Follower { leader: current } = &mut self.clm().role else {
            return;
        };
        if current.as_ref().is_some_and(|l| l.id == leader.id) {
            return;
        }
        // Requests are forwarded only while a leader is known, so whatever
        // is outstanding went to a previous one (also when the leader was
        // unknown in between: this node promised a newer term meanwhile).
        *current = Some(leader);
        self.fail_forwarded("the leader changed");
        self.ask_read_index_again(now, true);
    }

    /// Follower: asks the leader again for the read index of reads it has
    /// not answered (all of them if `all`, else those asked at least half
    /// an election timeout ago).
    fn ask_read_index_again(&mut self, now: Time, all: bool) {
        let Some(leader) = self.leader() else {
            return;
        };
        let c = self.clm();
        let every = c.cfg.election_timeout_ns / 2;
        let mut ask = Vec::new();
        for r in &mut c.reads {
            if let (ReadWaiter::Asked { id, at, .. }, None) = (&mut r.waiter, r.index) {
                if all || now.0.saturating_sub(at.0) >= every {
                    *at = now;
                    ask.push(*id);
                }
            }
        }
        for id in ask {
            self.send(&leader, PeerMsg::ReadIndex { id });
        }
    }

    fn on_read_index(&mut self, now: Time, from: &Member, id: u64) {
        let (serving, lease) = match &self.cl().role {
            Role::Leader(l) if l.serving => (true, self.lease_until(l)),
            _ => (false, None),
        };
        if !serving {
            return self.send(from, PeerMsg::ReadIndexReply { id, index: None });
        }
        let leased = lease.is_some_and(|until| now < until);
        let waiter = ReadWaiter::Remote {
            to: from.clone(),
            id,
        };
        self.leader_queue_read(now, waiter, leased);
    }

    /// Serving leader: a read at the commit index as of now, confirmed at
    /// once inside the lease, otherwise by a heartbeat round sent now.
    fn leader_queue_read(&mut self, now: Time, waiter: ReadWaiter, confirmed: bool) {
        let index = self.cl().commit;
        self.clm().reads.push(Read {
            waiter,
            index: Some(index),
            arrived: now,
            confirmed,
        });
        if !confirmed {
            self.broadcast(now);
        }
        self.serve_reads(now);
    }

    fn on_read_index_reply(&mut self, now: Time, id: u64, index: Option<Index>) {
        let c = self.clm();
        let Some(pos) = c
            .reads
            .iter()
            .position(|r| matches!(r.waiter, ReadWaiter::Asked { id: i, .. } if i == id))
        else {
            return;
        };
        match index {
            // A repeated answer (the read was asked again) changes nothing.
            Some(_) if c.reads[pos].index.is_some() => {}
            Some(index) => {
                c.reads[pos].index = Some(index);
                c.reads[pos].confirmed = true;
                self.serve_reads(now);
            }
            None => {
                let read = c.reads.remove(pos);
                self.answer_read(read.waiter, Err(no_leader("the leader stepped down")));
            }
        }
    }

    /// Leader: a majority acknowledged a heartbeat sent after these reads
    /// arrived.
    fn confirm_reads(&mut self, now: Time) {
        let Role::Leader(l) = &self.cl().role else {
            return;
        };
        let Some(base) = self.quorum_sent_at(l) else {
            return;
        };
        for read in &mut self.clm().reads {
            if base >= read.arrived {
                read.confirmed = true;
            }
        }
        self.serve_reads(now);
    }

    /// Answers every confirmed read whose index is applied (leader, for a
    /// follower's request: whose index is known).
    fn serve_reads(&mut self, _now: Time) {
        let applied = Index(self.store.meta().applied_index);
        let c = self.clm();
        let (ready, waiting): (Vec<Read>, Vec<Read>) =
            std::mem::take(&mut c.reads).into_iter().partition(|r| {
                r.confirmed
                    && match r.waiter {
                        ReadWaiter::Remote { .. } => true,
                        _ => r.index.is_some_and(|i| i <= applied),
                    }
            });
        c.reads = waiting;
        for read in ready {
            let index = read.index;
            match read.waiter {
                ReadWaiter::Remote { to, id } => {
                    self.send(&to, PeerMsg::ReadIndexReply { id, index });
                }
                waiter => self.answer_read(waiter, Ok(Response::ReadReady)),
            }
        }
    }

    fn answer_read(&mut self, waiter: ReadWaiter, result: Result<Response, Error>) {
        match waiter {
            ReadWaiter::Local(req) | ReadWaiter::Asked { req, .. } => self.reply(req, result),
            ReadWaiter::Remote { to, id } => {
                self.send(&to, PeerMsg::ReadIndexReply { id, index: None });
            }
        }
    }

    /// The newest send time a quorum of members (us included) has
    /// acknowledged.
    fn quorum_sent_at(&self, l: &Leader) -> Option<Time> {
        let c = self.cl();
        let mut times: Vec<Time> = l
            .members
            .iter()
            .map(|m| {
                if m.id == c.cfg.me.id {
                    Time(u64::MAX)
                } else {
                    l.peers
                        .get(&m.id)
                        .and_then(|p| p.acked_sent_at)
                        .unwrap_or(Time(0))
                }
            })
            .collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        let t = times[quorum(times.len(), FollowerWaitMode::Quorum) - 1];
        (t > Time(0)).then_some(t)
    }

    fn lease_until(&self, l: &Leader) -> Option<Time> {
        let c = self.cl();
        let base = self.quorum_sent_at(l)?;
        if base == Time(u64::MAX) {
            // A cluster of one: no one else can lead without our lock
            // being taken, which the lock TTL bounds; stay conservative
            // and confirm like any other leader would by its own acks.
            return Some(Time(u64::MAX));
        }
        let et = c.cfg.election_timeout_ns;
        Some(base.plus_nanos(et - et / c.cfg.lease_drift_divisor.max(2)))
    }

    // ----- membership -----

    fn on_join(&mut self, now: Time, member: Member) {
        let me = self.cl().me().id.clone();
        let Role::Leader(l) = &mut self.clm().role else {
            return;
        };
        if member.id == me || !l.serving {
            return;
        }
        let next = self.cl().log.last_index().next();
        let Role::Leader(l) = &mut self.clm().role else {
            return;
        };
        let voter = l.members.iter().any(|m| m.id == member.id);
        let peer = l.peers.entry(member.id.clone()).or_insert(Peer {
            member: member.clone(),
            voter,
            promised: false,
            next,
            matched: Index(0),
            acked_sent_at: None,
            heard_at: Some(now),
            unreachable: false,
        });
        peer.member = member.clone();
        self.send_append(now, &member.id);
    }

    /// Leader, `ClientRequest::MemberRemove` (checked here, written by
    /// [`Node::maybe_change_members`]).
    pub(super) fn member_remove(&mut self, now: Time, req: ReqId, id: String) {
        let Role::Leader(l) = &mut self.clm().role else {
            // Routing sends it here only on a serving leader.
            return self.reply(req, Err(no_leader("this node is not the leader")));
        };
        let refused = if !l.members.iter().any(|m| m.id == id) {
            Some(Error::MemberNotFound)
        } else if l.members.len() == 1 {
            Some(Error::MembershipRefused(
                "the last member cannot be removed".into(),
            ))
        } else if l.removing.is_some() {
            Some(Error::Unavailable(
                "another member is being removed; retry".into(),
            ))
        } else {
            None
        };
        if let Some(error) = refused {
            return self.reply(req, Err(error));
        }
        l.removing = Some((id, req));
        self.maybe_change_members(now);
    }

    /// Leader: one membership change at a time, written to the lock: a
    /// removal asked for first, else a learner that caught up becomes a
    /// member.
    fn maybe_change_members(&mut self, _now: Time) {
        let commit = self.cl().commit;
        let me = self.cl().me().id.clone();
        let Role::Leader(l) = &self.cl().role else {
            return;
        };
        if !l.serving || l.changing || self.cl().lock_io.is_some() {
            return;
        }
        if let Some((id, _)) = &l.removing {
            let members: Vec<Member> = l.members.iter().filter(|m| &m.id != id).cloned().collect();
            // Removing ourselves: the lock names the most caught-up member
            // as leader (of our term, which it never led): once it misses
            // us it claims term + 1 at once, without waiting out the lock
            // TTL, through the usual promise round.
            let successor = (*id == me)
                .then(|| {
                    l.peers
                        .values()
                        .filter(|p| members.iter().any(|m| m.id == p.member.id))
                        .max_by_key(|p| (p.promised, p.matched))
                        .map(|p| p.member.clone())
                })
                .flatten();
            tracing::info!(member = %id, successor = ?successor.as_ref().map(|m| &m.id), "removing a member");
            if let Role::Leader(l) = &mut self.clm().role {
                l.changing = true;
            }
            return self.write_lock_led_by(members, successor);
        }
        // Caught up: within one append of the commit index. (Requiring it
        // to reach the commit index never ends under steady writes, whose
        // commit index moves on while the last append is on its way. A
        // member that lags a little is no less safe than a slow follower:
        // this bound only keeps the commit from stalling on it.)
        let slack = self.cl().cfg.append_entries_max as u64;
        let Some(learner) = l
            .peers
            .values()
            .find(|p| !p.voter && p.promised && p.matched.0 + slack >= commit.0)
        else {
            return;
        };
        let mut members = l.members.clone();
        members.push(learner.member.clone());
        if let Role::Leader(l) = &mut self.clm().role {
            l.changing = true;
        }
        tracing::info!(member = %members.last().map_or("", |m| m.id.as_str()), "adding a member");
        self.write_lock(members);
    }

    // ----- timers -----

    pub(super) fn cluster_timer(&self) -> Option<Time> {
        let c = self.cluster.as_deref()?;
        let mut t = c.lock_next_at.filter(|_| !c.removed);
        let mut at = |x: Time| t = Some(t.map_or(x, |t: Time| t.min(x)));
        match &c.role {
            _ if c.removed => {}
            Role::Follower { .. } => {
                if let Some(join_at) = c.join_at {
                    at(join_at);
                }
                if c.lock_io.is_none() && c.lock_next_at.is_none() {
                    at(c.heard_at.plus_nanos(c.cfg.election_timeout_ns));
                    at(c.lock_read_at.plus_nanos(c.cfg.lock_ttl_ns));
                }
            }
            Role::Candidate(cand) => at(cand.prepare_at),
            Role::Leader(l) => at(l.heartbeat_at.plus_nanos(c.cfg.heartbeat_interval_ns)),
        }
        if !c.removed {
            if let Some(t) = self.cluster_bucket_timer() {
                at(t);
            }
        }
        for (_, since) in c.forwarded.values() {
            at(since.plus_nanos(c.cfg.request_timeout_ns));
        }
        for r in &c.reads {
            at(r.arrived.plus_nanos(c.cfg.request_timeout_ns));
            let led = matches!(c.role, Role::Follower { leader: Some(_) });
            if let (ReadWaiter::Asked { at: asked, .. }, None, true) = (&r.waiter, r.index, led) {
                at(asked.plus_nanos(c.cfg.election_timeout_ns / 2));
            }
        }
        t
    }

    pub(super) fn cluster_on_timeout(&mut self, now: Time) {
        if self.cluster.is_none() || !matches!(self.health, Health::Serving) {
            return;
        }
        self.expire_requests(now);
        if self.cl().removed {
            return;
        }
        self.cluster_bucket_on_timeout(now);
        self.maybe_change_members(now);
        let c = self.cl();
        if c.lock_next_at.is_some_and(|t| now >= t) && c.lock_io.is_none() {
            let leader = matches!(c.role, Role::Leader(_));
            let changing = matches!(&c.role, Role::Leader(l) if l.changing);
            // A write in doubt (its answer lost or failed, or a membership
            // change whose read-back failed) is read back first, whatever
            // the role: the read decides whether it landed.
            if leader && c.lock_expect.is_none() && !changing {
                if self.any_member_unreachable(now) {
                    let members = self.members();
                    self.write_lock(members);
                } else {
                    self.schedule_lock_refresh(now);
                }
            } else {
                let expect = self.clm().lock_expect.take();
                self.read_cluster_lock(now, expect);
            }
        }
        let c = self.cl();
        match &c.role {
            Role::Follower { leader } => {
                let leader = leader.clone();
                let silent = now.0.saturating_sub(c.heard_at.0) >= c.cfg.election_timeout_ns;
                let stale = now.0.saturating_sub(c.lock_read_at.0) >= c.cfg.lock_ttl_ns;
                if (silent || stale) && c.lock_io.is_none() && c.lock_next_at.is_none() {
                    self.read_cluster_lock(now, None);
                }
                self.ask_read_index_again(now, false);
                let c = self.cl();
                if c.join_at.is_some_and(|at| now >= at) {
                    let member = c.me().clone();
                    let next = now.plus_nanos(c.cfg.election_timeout_ns);
                    self.clm().join_at = Some(next);
                    if let Some(leader) = leader {
                        self.send(&leader, PeerMsg::Join { member });
                    }
                }
            }
            Role::Candidate(cand) => {
                if now >= cand.prepare_at {
                    self.send_prepares(now);
                }
            }
            Role::Leader(l) => {
                if now >= l.heartbeat_at.plus_nanos(c.cfg.heartbeat_interval_ns) {
                    self.broadcast(now);
                }
                self.report_reachability(now);
            }
        }
    }

    /// Leader: logs a member that fell silent for the election timeout
    /// (and again when it answers), so an operator sees a lost member.
    fn report_reachability(&mut self, now: Time) {
        let et = self.cl().cfg.election_timeout_ns;
        let Role::Leader(l) = &mut self.clm().role else {
            return;
        };
        let since = l.since;
        for p in l.peers.values_mut().filter(|p| p.voter) {
            let silent_ns = now.0.saturating_sub(p.heard_at.unwrap_or(since).0);
            if silent_ns >= et && !p.unreachable {
                p.unreachable = true;
                tracing::warn!(member = %p.member.id, silent_ms = silent_ns / 1_000_000, "member unreachable");
            } else if silent_ns < et && p.unreachable {
                p.unreachable = false;
                tracing::info!(member = %p.member.id, "member reachable again");
            }
        }
    }

    fn any_member_unreachable(&self, now: Time) -> bool {
        let c = self.cl();
        let Role::Leader(l) = &c.role else {
            return false;
        };
        let et = c.cfg.election_timeout_ns;
        l.peers.values().filter(|p| p.voter).any(|p| {
            let last = p.heard_at.unwrap_or(l.since);
            now.0.saturating_sub(last.0) >= et
        })
    }

    fn expire_requests(&mut self, now: Time) {
        let c = self.clm();
        let timeout = c.cfg.request_timeout_ns;
        let expired: Vec<u64> = c
            .forwarded
            .iter()
            .filter(|(_, (_, since))| now.0.saturating_sub(since.0) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((req, _)) = self.clm().forwarded.remove(&id) {
                self.reply(
                    req,
                    Err(Error::Timeout(
                        "the leader did not answer the forwarded request".into(),
                    )),
                );
            }
        }
        let c = self.clm();
        let (late, waiting): (Vec<Read>, Vec<Read>) = std::mem::take(&mut c.reads)
            .into_iter()
            .partition(|r| now.0.saturating_sub(r.arrived.0) >= timeout);
        c.reads = waiting;
        for read in late {
            self.answer_read(
                read.waiter,
                Err(Error::Unavailable(
                    "the read could not be confirmed in time".into(),
                )),
            );
        }
    }

    // ----- helpers -----

    /// Follower: tells the leader of `term` that its log durably matches
    /// through `matched`, unasked (not the answer to an append).
    fn ack(&mut self, to: &Member, term: Term, matched: Index) {
        let sent_at = Time(0);
        self.send(
            to,
            PeerMsg::Ack {
                term,
                matched,
                sent_at,
            },
        );
    }

    fn send(&mut self, to: &Member, msg: PeerMsg) {
        self.actions.push_back(Action::Send {
            to: to.clone(),
            msg,
        });
    }
}
