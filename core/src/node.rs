//! The node state machine: the commit pipeline of one t4 node.
//!
//! # Shape (ARCHITECTURE §3.1)
//!
//! One [`Node`] value per server. The driver feeds it inputs and drains its
//! outputs; the node never performs I/O itself (apart from synchronous calls
//! into its [`KvEngine`], which is the state it owns):
//!
//! - inputs: [`Node::handle_client`], [`Node::handle_io`], [`Node::handle_timeout`],
//!   each taking `now`; [`Node::recover`] once at start-up;
//! - outputs, drained after **every** input: [`Node::poll_action`] until it
//!   returns `None`, then [`Node::poll_timeout`].
//!
//! # The local-mode commit pipeline
//!
//! ```text
//!  handle_client(put A) ─► validate ─► queue ─► no batch in flight:
//!                                              AppendWal[A@1], SyncWal(through 1)
//!  handle_client(put B) ─► queue (a sync is in flight: B waits, group commit)
//!  handle_client(put C) ─► queue
//!  handle_io(WalSynced 1) ─► apply A ─► Reply A
//!                         ─► AppendWal[B@2, C@3], SyncWal(through 3)
//!  handle_io(WalSynced 3) ─► apply B, C ─► Reply B, Reply C
//! ```
//!
//! - **Batching**: while one fsync is in flight the next batch accumulates;
//!   one fsync covers every request in a batch (bounded by
//!   [`NodeConfig::batch_entries_max`] and [`NodeConfig::batch_bytes_max`]).
//! - **Durability before release**: an entry is applied only after the WAL
//!   sync covering it completed, and the [`Action::Reply`] for a write is
//!   emitted only after its entry applied. So a reply is never released before
//!   the write is durable, and a reader that sees a write's effect sees a
//!   durable write. In cluster mode the condition becomes "on a majority";
//!   the pipeline keeps the same shape.
//! - **Apply order** is log order. Applying is deterministic; a request that
//!   fails at apply time (lease not found, compacted …) still occupies its
//!   log index, changes nothing else, and gets its error as the reply.
//! - **Invalid requests** (empty key, duplicate keys in a txn, too large …)
//!   are answered at once and never reach the log.
//! - **Back-pressure**: at most [`NodeConfig::pending_max`] writes may wait
//!   for durability; beyond that a write is answered `Unavailable`.
//! - **Failure**: a WAL or engine failure is fatal for the write path: every
//!   pending write is answered with an internal error (it may or may not be
//!   in the log), and the node refuses writes until restarted and recovered.
//!
//! # Bucket mode
//!
//! With [`NodeConfig::bucket`] set, a synced batch is uploaded as one WAL
//! object before it applies, and a node that finds another writer's object
//! at its next index is fenced. The pipeline, outages and fencing are
//! described in the `upload` module; how a node claims, catches up from and
//! fences the bucket before serving ([`Node::start_bucket`]) in `startup`.
//!
//! With [`BucketConfig::sync_upload`] off (async mode, `--wal-sync-upload=false`)
//! a batch applies and is acknowledged once fsynced, as in local mode, and
//! applied entries are uploaded in the background, one object per segment
//! sealed by age or size (the `async_upload` module). The trade-off: a node
//! lost with its disk loses the acknowledged writes not uploaded yet (up to
//! a segment's age), and so does a node taken over while it still runs.
//!
//! Every I/O action carries an [`IoId`] and the term it was issued in; a
//! completion that does not match the batch in flight is stale and dropped.

use std::collections::VecDeque;

use crate::engine::{EngineError, KvEngine};
use crate::error::{Error, Invalid};
use crate::kv::{
    AlarmResponse, LeaseCheckpointRequest, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseTimeToLiveResponse, WriteRequest, WriteResponse,
};
use crate::lease::{LeaseConfig, Lessor};
use crate::log::{Entry, Payload};
use crate::mvcc::{self, Meta, Store};
use crate::object::{ObjectOp, ObjectResult};
use crate::types::{Index, IoId, NodeId, ReqId, Term, Time};
use crate::watch::{WatchConfig, WatchHub, WatchInput, WatchOutput};

/// Static configuration of a node's core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Maximum operations in one txn (etcd `--max-txn-ops`, default 128).
    pub max_txn_ops: usize,
    /// Maximum encoded size of one write request (etcd
    /// `--max-request-bytes`, default 1.5 MiB).
    pub request_bytes_max: usize,
    /// Maximum number of entries in one WAL batch (one fsync).
    pub batch_entries_max: usize,
    /// Maximum encoded bytes of one WAL batch; a single larger entry still
    /// forms a batch of its own.
    pub batch_bytes_max: usize,
    /// Maximum number of writes accepted but not yet answered.
    pub pending_max: usize,
    /// After this many applied entries the node asks the driver to persist
    /// the engine and trim WAL segments the engine no longer needs.
    pub trim_every_entries: u64,
    /// Lease expiry, revoke rate and checkpoints.
    pub lease: LeaseConfig,
    /// Watch buffers, progress notifications, catch-up steps.
    pub watch: WatchConfig,
    /// Database size above which space-consuming writes raise the NOSPACE
    /// alarm and fail (etcd `--quota-backend-bytes`, default 2 GiB).
    pub quota_bytes: u64,
    /// Seed for the node's own random choices (generated lease ids, the
    /// ids of requests forwarded to a cluster's leader). The driver draws
    /// it anew at every process start — a restarted follower must not
    /// reuse its previous incarnation's forwarded-request ids, or a late
    /// answer to an old request is taken for a new one's; core draws no
    /// entropy.
    pub seed: u64,
    /// `Some` when the node's log is durable in a bucket too (single node
    /// with a bucket, sync or async mode: ARCHITECTURE §3.4); `None` in
    /// local mode.
    pub bucket: Option<BucketConfig>,
    /// `Some` in cluster mode (ARCHITECTURE §3.4–3.7; the `cluster`
    /// module). The lock lives in the driver's bucket; `bucket` must then
    /// be `None` (the bucket as the cluster's disaster-recovery tier is not
    /// built yet).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// How a node uses its bucket (see [`upload`](self#bucket-mode)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketConfig {
    /// Once a batch's upload has failed for this long, its writers are told
    /// [`Error::Timeout`] (it may still land) and new writes are refused
    /// with [`Error::Unavailable`] until the bucket answers again.
    pub unavailable_after_ns: u64,
    /// First pause before retrying a failed object operation; it doubles up
    /// to `retry_backoff_max_ns`.
    pub retry_backoff_min_ns: u64,
    /// Longest pause between retries.
    pub retry_backoff_max_ns: u64,
    /// Take a checkpoint once this many entries were applied since the
    /// last one (`0`: only by time).
    pub checkpoint_every_entries: u64,
    /// Take a checkpoint once this long passed since the last one, if
    /// anything was applied (`0`: only by entries). T4's default: 15 min.
    pub checkpoint_interval_ns: u64,
    /// After each completed checkpoint, run a GC pass keeping this many
    /// checkpoints (`0`: no background GC; `t4 gc` does it). Default 3.
    pub gc_keep: usize,
    /// `true` (default): a write is acknowledged once its WAL object is in
    /// the bucket (the `upload` module). `false`: once fsynced; applied
    /// entries are uploaded in the background by segment (the
    /// `async_upload` module), and a node lost with its disk loses the
    /// writes not uploaded yet.
    pub sync_upload: bool,
    /// Async mode: a segment is sealed and uploaded at the latest this long
    /// after its first entry applied. T4's default: 10 s.
    pub segment_max_age_ns: u64,
    /// Async mode: a segment is sealed once its entries take this many
    /// bytes (an entry is never split, so it may pass this by one entry).
    /// T4's default: 50 MB.
    pub segment_max_bytes: u64,
    /// Async mode: bytes of applied entries not yet in the bucket at which
    /// new writes are refused with [`Error::Unavailable`] until uploads
    /// catch up (an outage never grows memory without bound). Default:
    /// 256 MiB.
    pub async_backlog_bytes_max: u64,
    /// How long a read of `leader-lock` naming this node lets it serve
    /// linearizable reads, from the read's send time (the `read_lease`
    /// module). A node that takes the bucket over waits
    /// [`BucketConfig::takeover_hold_ns`] before serving. Default: 1 s.
    pub read_lease_ns: u64,
}

impl BucketConfig {
    /// The pause before retrying after `failures` failed attempts (≥ 1):
    /// `retry_backoff_min_ns`, doubling per failure, capped at
    /// `retry_backoff_max_ns`.
    #[must_use]
    pub fn backoff_ns(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(20);
        self.retry_backoff_min_ns
            .saturating_mul(1 << doublings)
            .min(self.retry_backoff_max_ns)
    }

    /// How long a node that took the bucket over from another writer waits,
    /// after its claim was answered, before it serves: `3/2` of
    /// [`BucketConfig::read_lease_ns`], so that the previous writer's read
    /// lease has ended even if the two clocks' rates differ by up to 20 %
    /// (see the `read_lease` module).
    #[must_use]
    pub fn takeover_hold_ns(&self) -> u64 {
        self.read_lease_ns.saturating_add(self.read_lease_ns / 2)
    }
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig {
            unavailable_after_ns: 5_000_000_000,
            retry_backoff_min_ns: 10_000_000,
            retry_backoff_max_ns: 1_000_000_000,
            checkpoint_every_entries: 0,
            checkpoint_interval_ns: 15 * 60 * 1_000_000_000,
            gc_keep: 3,
            sync_upload: true,
            segment_max_age_ns: 10_000_000_000,
            segment_max_bytes: 50_000_000,
            async_backlog_bytes_max: 256 * 1024 * 1024,
            read_lease_ns: 1_000_000_000,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: NodeId(1),
            max_txn_ops: 128,
            request_bytes_max: 1536 * 1024,
            batch_entries_max: 4096,
            batch_bytes_max: 8 * 1024 * 1024,
            pending_max: 65_536,
            trim_every_entries: 200_000,
            lease: LeaseConfig::default(),
            watch: WatchConfig::default(),
            quota_bytes: 2 * 1024 * 1024 * 1024,
            seed: 0,
            bucket: None,
            cluster: None,
        }
    }
}

/// A request from a client that the node must decide on. Each is answered
/// by exactly one [`Action::Reply`] with the same [`ReqId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// A state change: goes through the log; answered with
    /// [`Response::Write`] once durable and applied.
    Write(WriteRequest),
    /// etcd `LeaseKeepAlive` (one request of the stream): answered at once
    /// with [`Response::LeaseKeepAlive`]; TTL 0 for an unknown or expired
    /// lease. Not logged.
    LeaseKeepAlive {
        /// The lease.
        id: i64,
    },
    /// etcd `LeaseTimeToLive`: answered at once with
    /// [`Response::LeaseTimeToLive`]; TTL -1 for an unknown lease.
    LeaseTimeToLive {
        /// The lease.
        id: i64,
        /// List the attached keys too.
        keys: bool,
    },
    /// etcd `LeaseLeases`: answered at once with [`Response::LeaseLeases`].
    LeaseLeases,
    /// etcd `Alarm` with action `Get`: answered at once with
    /// [`Response::Alarm`].
    AlarmList,
    /// A linearizable read is about to be served (one not covered by
    /// [`Node::read_fast_until`]): answered [`Response::ReadReady`] once
    /// the node can prove no other writer acknowledged a write before the
    /// request arrived; the driver then reads the engine. Local mode: at
    /// once. See the `read_lease` module.
    LinearizableRead,
    /// etcd `MemberRemove` (`t4 member remove`): cluster mode, the member
    /// `id` (its `--node-id`) leaves the lock's voting members, written by
    /// the leader with one conditional lock write. Answered
    /// [`Response::Members`] (the members left) once the write landed;
    /// [`Error::MemberNotFound`] for an id that is not a voting member;
    /// [`Error::MembershipRefused`] for the last member, or outside cluster
    /// mode. Removing the leader makes it step aside; the others elect a
    /// new leader once the lock expires.
    MemberRemove {
        /// The member's id.
        id: String,
    },
}

/// The answer to a [`ClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A write's result.
    Write(WriteResponse),
    /// A keepalive's result.
    LeaseKeepAlive(LeaseKeepAliveResponse),
    /// A time-to-live query's result.
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    /// The lease list.
    LeaseLeases(LeaseLeasesResponse),
    /// The alarm list.
    Alarm(AlarmResponse),
    /// A linearizable read may be served now.
    ReadReady,
    /// A membership change landed: the voting members now.
    Members(Vec<crate::bucket::lock::Member>),
}

/// Completion of an I/O action, fed back with [`Node::handle_io`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoDone {
    /// The WAL is durable through `through` (the `SyncWal` with this id).
    WalSynced {
        /// Id of the `SyncWal` action.
        io: IoId,
        /// Term the action was issued in.
        term: Term,
        /// Last durable index.
        through: Index,
    },
    /// An append or sync failed; what was written may or may not be durable.
    WalFailed {
        /// Id of the failed action.
        io: IoId,
        /// Term the action was issued in.
        term: Term,
        /// What went wrong, for the log and the replies.
        error: String,
    },
    /// An [`Action::Object`] finished.
    Object {
        /// Id of the action.
        io: IoId,
        /// Term the action was issued in.
        term: Term,
        /// What the store answered.
        result: ObjectResult,
    },
    /// A [`Action::ResetWal`] finished; `error` is `None` on success.
    WalReset {
        /// Id of the action.
        io: IoId,
        /// What went wrong.
        error: Option<String>,
    },
    /// A [`Action::TakeCheckpoint`] finished: the folder's files, or why
    /// it could not be made.
    CheckpointTaken {
        /// Id of the action.
        io: IoId,
        /// The files, or what went wrong.
        result: Result<checkpoint::TakenCheckpoint, String>,
    },
    /// A `TrimWal` finished (successfully or not; a failed trim only costs
    /// disk space and is retried at the next trim point).
    WalTrimmed {
        /// Id of the `TrimWal` action.
        io: IoId,
        /// `None` on success.
        error: Option<String>,
    },
    /// An [`Action::ReadWal`] finished: the entries `from..=through`, in
    /// order, or why they could not be read.
    WalRead {
        /// Id of the action.
        io: IoId,
        /// The entries, or what went wrong.
        result: Result<Vec<Entry>, String>,
    },
    /// An [`Action::SaveHardState`] finished; `error` is `None` once the
    /// state is durable.
    HardStateSaved {
        /// Id of the action.
        io: IoId,
        /// What went wrong.
        error: Option<String>,
    },
}

/// What the node asks its driver to do. Plain data, executed in the order
/// drained. WAL actions must be executed in order on one WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Append `entries` (contiguous, continuing the log) to the WAL. Not yet
    /// durable; a `SyncWal` follows. No completion is reported on success; a
    /// failure is reported as [`IoDone::WalFailed`] with this id.
    AppendWal {
        /// Id of this action.
        io: IoId,
        /// Term the action is issued in.
        term: Term,
        /// The entries, in index order.
        entries: Vec<Entry>,
    },
    /// Make the WAL durable through `through` (fsync), then report
    /// [`IoDone::WalSynced`].
    SyncWal {
        /// Id of this action.
        io: IoId,
        /// Term the action is issued in.
        term: Term,
        /// Index the sync must cover.
        through: Index,
    },
    /// Persist the engine (everything applied so far becomes durable in it),
    /// then delete WAL segments whose entries all lie below `below`; report
    /// [`IoDone::WalTrimmed`]. `below - 1` has been applied when this is
    /// emitted, so after the persist no entry below it is needed for recovery
    /// (in async bucket mode it is in the bucket too: the start-up may need
    /// the entries the bucket lacks).
    TrimWal {
        /// Id of this action.
        io: IoId,
        /// Segments wholly below this index may go.
        below: Index,
    },
    /// Run one object-store operation against the node's bucket, then
    /// report [`IoDone::Object`]. Operations may run concurrently; the
    /// driver bounds each with a timeout (a timed-out operation is
    /// [`ObjectError::Retryable`](crate::object::ObjectError::Retryable)).
    Object {
        /// Id of this action.
        io: IoId,
        /// Term the action is issued in.
        term: Term,
        /// The operation.
        op: ObjectOp,
    },
    /// Start-up in bucket mode: persist the engine (everything applied so
    /// far becomes durable in it), delete every local WAL segment and start
    /// the local WAL afresh at `next`; report [`IoDone::WalReset`]. The
    /// entries below `next` are all in the bucket.
    ResetWal {
        /// Id of this action.
        io: IoId,
        /// Index of the next entry the WAL will receive.
        next: Index,
    },
    /// Make a checkpoint of the engine **now**, before handing the node
    /// any other input (the engine is at applied index `index`: core
    /// names the index when the driver polls the action, since a driver
    /// may feed the node inputs while it works through earlier actions),
    /// into a local folder named by `(term, index)`; list and hash its
    /// files (that part may run in the background) and report
    /// [`IoDone::CheckpointTaken`]. See the `checkpoint` module.
    TakeCheckpoint {
        /// Id of this action.
        io: IoId,
        /// The checkpoint's term.
        term: Term,
        /// The applied index the engine is at.
        index: Index,
    },
    /// Upload file `name` of the local checkpoint `(term, index)` to `key`
    /// with `condition`, then report [`IoDone::Object`] with this id.
    UploadCheckpointFile {
        /// Id of this action.
        io: IoId,
        /// The checkpoint's term.
        term: Term,
        /// The checkpoint's index.
        index: Index,
        /// The file's name in the folder.
        name: String,
        /// Where it goes in the bucket.
        key: String,
        /// The put's condition.
        condition: crate::object::PutCondition,
    },
    /// The local checkpoint folder `(term, index)` is no longer needed:
    /// delete it. No completion.
    DropCheckpoint {
        /// The checkpoint's term.
        term: Term,
        /// The checkpoint's index.
        index: Index,
    },
    /// Read back local WAL entries `from..=through` (applied entries, at
    /// or below the engine's applied index, so [`Node::recover`] did not
    /// receive them) and report [`IoDone::WalRead`]. Asked for at start-up
    /// (async bucket mode with the engine ahead of the bucket; cluster
    /// mode's recent entries) and, in cluster mode with the bucket tier,
    /// by a leader uploading entries its memory no longer holds, while
    /// appends go on: the entries asked for are complete in the files
    /// (written before they applied), whatever is being appended after
    /// them.
    ReadWal {
        /// Id of this action.
        io: IoId,
        /// The first entry wanted.
        from: Index,
        /// The last entry wanted (the engine's applied index).
        through: Index,
    },
    /// Release the answer to a client request. Emitted only once the
    /// request's durability condition holds (local mode: the WAL sync that
    /// covers its entry completed and the entry applied) or when it failed.
    Reply {
        /// The request answered.
        req: ReqId,
        /// The answer.
        result: Result<Response, Error>,
    },
    /// Send one watch response on a watch stream (emitted in order per
    /// stream; the driver reports delivery with [`WatchInput::Consumed`]).
    Watch(WatchOutput),
    /// Cluster mode: send `msg` to the member `to` (best effort: messages
    /// may be lost, the protocol retries). Messages to one member go in
    /// the order emitted.
    Send {
        /// The member (id and peer address).
        to: crate::bucket::lock::Member,
        /// The message.
        msg: crate::cluster::PeerMsg,
    },
    /// Cluster mode: durably drop every WAL entry after `after` (before any
    /// later `AppendWal`). No completion on success; a failure is reported
    /// as [`IoDone::WalFailed`] with this id.
    TruncateWal {
        /// Id of this action.
        io: IoId,
        /// Term the action is issued in.
        term: Term,
        /// The last entry kept.
        after: Index,
    },
    /// Cluster mode: durably replace the node's hard state (fsync), then
    /// report [`IoDone::HardStateSaved`].
    SaveHardState {
        /// Id of this action.
        io: IoId,
        /// The new state.
        state: crate::cluster::HardState,
    },
    /// Cluster mode with the bucket tier: this member cannot continue its
    /// log: neither the leader's memory nor the bucket's WAL holds the
    /// entries it needs next (GC collected them after a newer checkpoint
    /// while the member was away). The driver should start it over: check
    /// that the bucket's newest checkpoint is ahead of the applied index
    /// and that no WAL object holds the next entry (if not, ignore this:
    /// the node keeps retrying by itself, slowly), then stop this node,
    /// move its engine and WAL aside, restore the checkpoint and start a
    /// new node on it. Repeated while the node stays stuck.
    ///
    /// The log and the hard state: [`crate::cluster::start_over_keeps`]
    /// says what stays, from the restored checkpoint and the old log (its
    /// entries after the checkpoint when they continue it, and the hard
    /// state, so its promises stand and it keeps its vote, unless the old
    /// log cannot be read and `last_index` is past the checkpoint). The
    /// hard state is out of the way during the restore and comes back
    /// last, so that a crash half-way leaves none (the member then rejoins
    /// as a new one that does not vote until caught up, as a start without
    /// an engine does). Keeping the vote matters: a member that starts
    /// over while another rejoins after a lost disk would otherwise leave a
    /// majority of non-voters, and no leader could be elected.
    StartOver {
        /// What the node could not find.
        why: String,
        /// The last index of the node's log.
        last_index: Index,
    },
}

/// A write waiting for (or in) a WAL batch. `req` is `None` for the node's
/// own entries (lease revokes on expiry, lease checkpoints, alarms).
#[derive(Debug)]
struct Pending {
    req: Option<ReqId>,
    payload: Payload,
    size_bytes: usize,
}

/// The batch whose WAL sync is in flight.
#[derive(Debug)]
struct InFlight {
    sync_io: IoId,
    term: Term,
    /// The batch's entries with the request each answers, in index order.
    entries: Vec<(Option<ReqId>, Entry)>,
    /// Bucket mode: the batch's upload, once its WAL sync completed.
    upload: Option<upload::Upload>,
}

/// Why the node stopped accepting writes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Health {
    Serving,
    Failed(String),
    /// Another node took over the bucket (ARCHITECTURE §3.5).
    Fenced(String),
}

/// One t4 node's core state machine. See the module documentation.
#[derive(Debug)]
pub struct Node<E: KvEngine> {
    config: NodeConfig,
    engine: E,
    store: Store,
    term: Term,
    /// Index of the last entry handed to the WAL.
    last_index: Index,
    /// Accepted writes not yet in a batch, in arrival order.
    queued: VecDeque<Pending>,
    /// The batch whose sync is outstanding (at most one: group commit).
    in_flight: Option<InFlight>,
    next_io: u64,
    /// Applied index at the last `TrimWal` (async bucket mode: the
    /// uploaded index, if lower).
    trimmed_at: Index,
    trim_in_flight: bool,
    health: Health,
    actions: VecDeque<Action>,
    lessor: Lessor,
    watches: WatchHub,
    /// The engine's size as of the last applied batch, for the quota check
    /// (asking the engine on every write costs a property lookup each).
    db_size_bytes: u64,
    /// Bucket mode: why the bucket is considered unreachable (new writes
    /// are refused until an upload succeeds again).
    bucket_down: Option<String>,
    /// Bucket mode: the start-up in progress (see the `startup` module).
    startup: Option<startup::Startup>,
    /// Bucket mode: local WAL entries after the engine's applied index,
    /// held back until the start-up has compared them with the bucket.
    local_tail: VecDeque<Entry>,
    /// Bucket mode: the checkpoint being taken or uploaded.
    checkpoint: Option<checkpoint::Checkpointing>,
    /// Applied index and time of the last checkpoint (or of the start).
    checkpointed: (Index, Time),
    /// After an abandoned checkpoint: no new one before this.
    checkpoint_not_before: Option<Time>,
    /// A checkpoint is due as soon as one may start (cluster mode: the
    /// bucket's WAL has a hole only a newer checkpoint covers).
    checkpoint_forced: bool,
    checkpoint_stats: checkpoint::CheckpointStats,
    /// Bucket mode, async: segments of applied entries on their way to the
    /// bucket (see the `async_upload` module).
    async_upload: async_upload::AsyncUpload,
    /// Bucket mode: the proof that linearizable reads are current (see the
    /// `read_lease` module).
    read_lease: read_lease::ReadLease,
    /// Cluster mode: roles, the log tail, replication (the `cluster`
    /// module).
    cluster: Option<Box<cluster::Cluster>>,
    /// The latest `now` of any input (for decisions made inside helpers
    /// that are not handed the time; never ahead of the driver's clock).
    last_now: Time,
}

impl<E: KvEngine> Node<E> {
    /// A node over `engine`, resuming from the state the engine holds.
    /// Call [`Node::recover`] with the WAL's entries after the engine's
    /// applied index before feeding any other input.
    ///
    /// # Errors
    /// The engine's metadata cannot be read.
    pub fn new(config: NodeConfig, engine: E) -> Result<Node<E>, EngineError> {
        assert!(
            config.batch_entries_max > 0,
            "batch_entries_max must be positive"
        );
        assert!(config.pending_max > 0, "pending_max must be positive");
        let store = Store::open(&engine)?;
        let meta = *store.meta();
        let db_size_bytes = engine.size_bytes();
        assert!(
            config.cluster.is_none() || config.bucket.is_none(),
            "cluster mode takes its bucket settings from `ClusterConfig::bucket`, not `NodeConfig::bucket`"
        );
        let cluster = config.cluster.clone().map(|cfg| {
            Box::new(cluster::Cluster::new(
                cfg,
                (Index(meta.applied_index), Term(meta.applied_term)),
                config.seed,
            ))
        });
        Ok(Node {
            cluster,
            last_now: Time(0),
            db_size_bytes,
            bucket_down: None,
            startup: None,
            local_tail: VecDeque::new(),
            checkpoint: None,
            checkpointed: (Index(meta.applied_index), Time(0)),
            checkpoint_not_before: None,
            checkpoint_forced: false,
            checkpoint_stats: checkpoint::CheckpointStats::default(),
            async_upload: async_upload::AsyncUpload::default(),
            read_lease: read_lease::ReadLease::default(),
            engine,
            store,
            // Local mode writes term 1; a recovered log may carry a higher one.
            term: Term(meta.applied_term.max(1)),
            last_index: Index(meta.applied_index),
            queued: VecDeque::new(),
            in_flight: None,
            next_io: 1,
            trimmed_at: Index(meta.applied_index),
            trim_in_flight: false,
            health: Health::Serving,
            actions: VecDeque::new(),
            lessor: Lessor::new(config.lease.clone()),
            watches: WatchHub::new(config.watch.clone()),
            config,
        })
    }

    // ----- getters -----

    /// The MVCC metadata (current and compact revision, applied index/term).
    #[must_use]
    pub fn meta(&self) -> &Meta {
        self.store.meta()
    }

    /// The current term.
    #[must_use]
    pub fn term(&self) -> Term {
        self.term
    }

    /// Index of the last entry handed to the WAL.
    #[must_use]
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// The engine the node applies to (drivers read snapshots from it).
    #[must_use]
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Writes accepted and not yet answered.
    #[must_use]
    pub fn pending_len(&self) -> usize {
        self.queued.len()
            + self.in_flight.as_ref().map_or(0, |b| b.entries.len())
            + self.cluster.as_ref().map_or(0, |c| c.awaiting_len())
    }

    /// `Some(reason)` once the node stopped accepting writes after a failure.
    #[must_use]
    pub fn failure(&self) -> Option<&str> {
        match &self.health {
            Health::Serving => None,
            Health::Failed(why) | Health::Fenced(why) => Some(why),
        }
    }

    /// `Some(reason)` once another node took over this node's bucket; such
    /// a node must not serve reads either (its state is no longer current).
    #[must_use]
    pub fn fenced(&self) -> Option<&str> {
        match &self.health {
            Health::Fenced(why) => Some(why),
            _ => None,
        }
    }

    /// Bucket mode: `Some(reason)` while the bucket is unreachable and
    /// writes are refused.
    #[must_use]
    pub fn bucket_down(&self) -> Option<&str> {
        self.bucket_down.as_deref()
    }

    /// Whether nothing is queued or in flight (used for a graceful shutdown;
    /// in async bucket mode, also every applied entry is in the bucket: see
    /// [`Node::flush_uploads`]).
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.queued.is_empty()
            && self.in_flight.is_none()
            && self.cluster.as_ref().is_none_or(|c| c.awaiting_len() == 0)
            && !self.trim_in_flight
            && self.upload_backlog_empty()
    }

    // ----- inputs -----

    /// Replays entries read back from the WAL at start-up. They continue the
    /// engine's applied index without a gap; they were written before the
    /// restart (their writers may or may not have been answered), so they
    /// are applied without replies.
    ///
    /// # Errors
    /// Storage failure while applying.
    ///
    /// # Panics
    /// If the entries do not continue the log contiguously: recovery must not
    /// silently skip data.
    pub fn recover(&mut self, now: Time, entries: Vec<Entry>) -> Result<(), EngineError> {
        if self.cluster.is_some() {
            // Whether they are committed is the leader's to say.
            self.cluster_recover(entries);
            let leases = mvcc::leases(&self.engine)?;
            self.lessor.restore(now, &leases);
            return Ok(());
        }
        if self.config.bucket.is_some() {
            // The bucket decides first (see `startup`); `start_bucket` next.
            for (i, entry) in entries.iter().enumerate() {
                assert_eq!(
                    entry.index_id(),
                    Index(self.last_index.0 + 1 + i as u64),
                    "the local WAL continues the applied log without a gap"
                );
            }
            self.local_tail = entries.into();
            return Ok(());
        }
        for entry in entries {
            let expected = self.last_index.next();
            assert_eq!(
                entry.index_id(),
                expected,
                "WAL replay must continue the applied log without a gap"
            );
            assert!(
                entry.term_id() >= self.term || self.last_index == Index(0),
                "terms never go back in the log: {} after {}",
                entry.term,
                self.term
            );
            // The request's own outcome was (or will never be) reported;
            // no watcher exists yet.
            let _outcome = self.store.apply(&self.engine, &entry)?;
            self.term = self.term.max(entry.term_id());
            self.last_index = expected;
        }
        self.trimmed_at = Index(self.store.meta().applied_index);
        // etcd restarts every lease's TTL on recovery (from its checkpoint).
        let leases = mvcc::leases(&self.engine)?;
        self.lessor.restore(now, &leases);
        Ok(())
    }

    /// A client request arrives.
    pub fn handle_client(&mut self, now: Time, req: ReqId, request: ClientRequest) {
        self.last_now = self.last_now.max(now);
        let request = if self.cluster.is_some() {
            match self.cluster_route(now, req, request) {
                Some(request) => request,
                None => return,
            }
        } else {
            request
        };
        let revision = self.store.meta().current_revision;
        let answer = match request {
            ClientRequest::Write(write) => return self.accept_write(req, write),
            ClientRequest::LeaseKeepAlive { id } => {
                let ttl = self.lessor.keep_alive(now, id).unwrap_or(0);
                Response::LeaseKeepAlive(LeaseKeepAliveResponse { revision, id, ttl })
            }
            ClientRequest::LeaseTimeToLive { id, keys } => {
                match self.lease_time_to_live(now, id, keys) {
                    Ok(resp) => Response::LeaseTimeToLive(resp),
                    Err(e) => return self.reply(req, Err(e)),
                }
            }
            ClientRequest::LeaseLeases => Response::LeaseLeases(LeaseLeasesResponse {
                revision,
                ids: self.lessor.ids(),
            }),
            ClientRequest::AlarmList => Response::Alarm(AlarmResponse {
                revision,
                alarms: self.store.alarms().to_vec(),
            }),
            ClientRequest::LinearizableRead => return self.on_linearizable_read(now, req),
            ClientRequest::MemberRemove { id } => {
                if self.cluster.is_some() {
                    return self.member_remove(now, req, id);
                }
                return self.reply(
                    req,
                    Err(Error::MembershipRefused(
                        "a single node has no members to remove (not in cluster mode)".into(),
                    )),
                );
            }
        };
        self.reply(req, Ok(answer));
    }

    /// A watch stream input (create, cancel, progress, flow control).
    pub fn handle_watch(&mut self, now: Time, input: WatchInput) {
        let meta = *self.store.meta();
        self.watches.handle(now, input, &self.engine, &meta);
        self.drain_watch_outputs();
    }

    /// An I/O action completed.
    pub fn handle_io(&mut self, now: Time, done: IoDone) {
        self.last_now = self.last_now.max(now);
        match done {
            IoDone::WalSynced { io, through, .. } if self.cluster.is_some() => {
                self.on_cluster_wal_synced(now, io, through);
            }
            IoDone::WalSynced { io, term, through } => {
                self.on_wal_synced(now, io, term, through);
            }
            IoDone::HardStateSaved { io, error } => self.on_hard_state_saved(now, io, error),
            IoDone::WalFailed { error, .. } if self.cluster.is_some() => {
                // The log on disk is in doubt: stop; a restart recovers.
                self.fail(format!("WAL write failed: {error}"));
            }
            IoDone::Object { io, result, .. } if self.is_cluster_lock_io(io) => {
                self.on_cluster_lock_io(now, result);
            }
            IoDone::Object { io, result, .. } if self.is_cluster_bucket_io(io) => {
                self.on_cluster_bucket_io(now, io, result);
            }
            IoDone::WalFailed { io, term, error } => {
                if term != self.term {
                    tracing::debug!(io = io.0, "dropping WAL failure from an older term");
                    return;
                }
                self.fail(format!("WAL write failed: {error}"));
            }
            IoDone::Object { io, result, .. } if self.is_startup_io(io) => {
                self.on_startup_io(now, result);
            }
            IoDone::Object { io, result, .. } if self.is_checkpoint_io(io) => {
                self.on_checkpoint_io(now, result);
            }
            IoDone::Object { io, result, .. } if self.is_read_lease_io(io) => {
                self.on_read_lease_io(now, result);
            }
            IoDone::Object { io, result, .. } if self.is_segment_io(io) => {
                self.on_segment_io(now, result);
            }
            IoDone::CheckpointTaken { io, result } => {
                self.on_checkpoint_taken_after_upload(now, io, result);
            }
            IoDone::WalRead { io, result } => self.on_wal_read(now, io, result),
            IoDone::Object { io, term, result } => self.on_object_done(now, io, term, result),
            IoDone::WalReset { io, error } => self.on_wal_reset(now, io, error),
            IoDone::WalTrimmed { io, error } => {
                self.trim_in_flight = false;
                if let Some(error) = error {
                    tracing::warn!(io = io.0, %error, "WAL trim failed; will retry at the next trim point");
                }
            }
        }
    }

    /// A timer expired (call it whenever `now` reaches
    /// [`Node::poll_timeout`]; calling it early is harmless): expired leases
    /// become revoke entries (rate-limited), remaining TTLs become a
    /// checkpoint entry, watchers catch up and get progress notifications.
    pub fn handle_timeout(&mut self, now: Time) {
        self.last_now = self.last_now.max(now);
        self.retry_startup_if_due(now);
        self.serve_if_hold_over(now);
        self.read_lease_on_timeout(now);
        self.retry_upload_if_due(now);
        self.on_segment_timer(now);
        self.retry_checkpoint_if_due(now);
        self.cluster_on_timeout(now);
        if matches!(self.health, Health::Serving) && self.startup.is_none() && self.expires_leases()
        {
            let due = self.lessor.take_due(now);
            for id in due.revoke {
                self.queue_internal(Payload::LeaseRevoke(LeaseRevokeRequest { id }));
            }
            if !due.checkpoint.is_empty() {
                self.queue_internal(Payload::LeaseCheckpoint(LeaseCheckpointRequest {
                    checkpoints: due.checkpoint,
                }));
            }
            self.flush_batch();
        }
        let meta = *self.store.meta();
        self.watches.handle_timeout(now, &self.engine, &meta);
        self.drain_watch_outputs();
        self.maybe_checkpoint(now);
    }

    // ----- outputs -----

    /// The next action for the driver, in the order the node decided them.
    pub fn poll_action(&mut self) -> Option<Action> {
        loop {
            let action = match self.actions.pop_front()? {
                Action::TakeCheckpoint { io, .. } => match self.checkpoint_polled(io) {
                    Some(action) => action,
                    None => continue,
                },
                action => action,
            };
            if let Some(action) = self.route_reply(action) {
                return Some(action);
            }
        }
    }

    /// The earliest time at which [`Node::handle_timeout`] must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let lease = match self.health {
            Health::Serving if self.expires_leases() => self.lessor.poll_timeout(),
            _ => None,
        };
        [
            lease,
            self.watches.poll_timeout(),
            self.upload_retry_at(),
            self.segment_timer(),
            self.startup_retry_at(),
            self.startup_hold_until(),
            self.checkpoint_timer(),
            self.read_lease_timer(),
            self.cluster_timer(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drains every pending action (handy in tests and simple drivers).
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.poll_action()).collect()
    }

    /// Whether this node expires leases (every node outside cluster mode;
    /// in cluster mode only the serving leader).
    fn expires_leases(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.is_serving_leader())
    }

    // ----- pipeline -----

    fn accept_write(&mut self, req: ReqId, write: WriteRequest) {
        if let Err(e) = self.check_write(&write) {
            return self.reply(req, Err(e));
        }
        // Lease ids and TTLs, the space quota, alarm queries (admission.rs).
        let payload = match self.admit(write) {
            Ok(payload) => payload,
            Err(answer) => {
                self.reply(req, answer);
                // The quota check may have queued a NOSPACE alarm.
                return self.flush_batch();
            }
        };
        let size_bytes = payload_len(&payload);
        self.queued.push_back(Pending {
            req: Some(req),
            payload,
            size_bytes,
        });
        self.flush_batch();
    }

    /// Why `write` must be refused before it reaches the log, if it must.
    fn check_write(&self, write: &WriteRequest) -> Result<(), Error> {
        match &self.health {
            Health::Serving => {}
            Health::Failed(why) => {
                return Err(Error::Internal(format!(
                    "node stopped accepting writes: {why}"
                )))
            }
            Health::Fenced(why) => return Err(Error::Fenced(why.clone())),
        }
        if self.startup.is_some() {
            return Err(Self::starting_error());
        }
        if let Some(why) = &self.bucket_down {
            return Err(Error::Unavailable(format!(
                "object store unreachable ({why}); retry later"
            )));
        }
        if let Some(full) = self.backlog_refusal() {
            return Err(full);
        }
        mvcc::validate_write(write, self.config.max_txn_ops)?;
        if encoded_len(write) > self.config.request_bytes_max {
            return Err(Invalid::RequestTooLarge.into());
        }
        if self.pending_len() >= self.config.pending_max {
            return Err(Error::Unavailable("too many requests in flight".into()));
        }
        Ok(())
    }

    /// Queues one of the node's own entries (no reply). They bypass
    /// `pending_max`: they are bounded by the lessor's rate limit.
    fn queue_internal(&mut self, payload: Payload) {
        let size_bytes = payload_len(&payload);
        self.queued.push_back(Pending {
            req: None,
            payload,
            size_bytes,
        });
    }

    fn reply(&mut self, req: ReqId, result: Result<Response, Error>) {
        self.actions.push_back(Action::Reply { req, result });
    }

    fn lease_time_to_live(
        &self,
        now: Time,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        let revision = self.store.meta().current_revision;
        let Some((ttl, granted_ttl)) = self.lessor.time_to_live(now, id) else {
            return Ok(LeaseTimeToLiveResponse {
                revision,
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            });
        };
        let keys = if keys {
            mvcc::lease_keys(&self.engine, id).map_err(|e| Error::Internal(e.to_string()))?
        } else {
            Vec::new()
        };
        Ok(LeaseTimeToLiveResponse {
            revision,
            id,
            ttl,
            granted_ttl,
            keys,
        })
    }

    fn drain_watch_outputs(&mut self) {
        while let Some(out) = self.watches.poll_output() {
            self.actions.push_back(Action::Watch(out));
        }
    }

    /// Starts the next WAL batch if none is in flight.
    fn flush_batch(&mut self) {
        let now = self.last_now;
        if self.in_flight.is_some() || self.queued.is_empty() {
            return;
        }
        if self.cluster.is_some() && !self.cluster_may_flush() {
            return;
        }
        let mut entries = Vec::new();
        let mut batch_bytes = 0usize;
        while let Some(front) = self.queued.front() {
            let full = entries.len() >= self.config.batch_entries_max
                || (!entries.is_empty()
                    && batch_bytes + front.size_bytes > self.config.batch_bytes_max);
            if full {
                break;
            }
            let pending = self.queued.pop_front().expect("front was Some");
            batch_bytes += pending.size_bytes;
            self.last_index = self.last_index.next();
            let entry = Entry {
                term: self.term.0,
                index: self.last_index.0,
                payload: Some(pending.payload),
            };
            entries.push((pending.req, entry));
        }
        assert!(
            !entries.is_empty(),
            "a flushed batch has at least one entry"
        );
        if self.cluster.is_some() {
            return self.cluster_leader_append(now, entries);
        }
        let append_io = self.io_id();
        let sync_io = self.io_id();
        let through = self.last_index;
        self.actions.push_back(Action::AppendWal {
            io: append_io,
            term: self.term,
            entries: entries.iter().map(|(_, e)| e.clone()).collect(),
        });
        self.actions.push_back(Action::SyncWal {
            io: sync_io,
            term: self.term,
            through,
        });
        self.in_flight = Some(InFlight {
            sync_io,
            term: self.term,
            entries,
            upload: None,
        });
    }

    fn on_wal_synced(&mut self, now: Time, io: IoId, term: Term, through: Index) {
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|b| b.sync_io == io && b.term == term);
        if !matches {
            tracing::debug!(
                io = io.0,
                term = term.0,
                "dropping stale WAL sync completion"
            );
            return;
        }
        let batch = self.in_flight.as_ref().expect("matched above");
        let last = batch.entries.last().map(|(_, e)| e.index_id());
        assert_eq!(
            last,
            Some(through),
            "a sync completion covers exactly its batch"
        );
        assert!(batch.upload.is_none(), "a batch is synced once");
        if self.config.bucket.as_ref().is_some_and(|b| b.sync_upload) {
            // Sync mode: durable means "in the bucket too"; apply on upload.
            return self.start_upload(now);
        }
        // Local mode, and async bucket mode (uploads follow the apply).
        self.apply_batch(now);
    }

    /// Applies the in-flight batch (durable by the mode's rule), releases
    /// its replies and starts the next batch.
    fn apply_batch(&mut self, now: Time) {
        let batch = self.in_flight.take().expect("a batch is in flight");
        for (i, (req, entry)) in batch.entries.iter().enumerate() {
            match self.store.apply(&self.engine, entry) {
                Ok(applied) => {
                    self.after_apply(now, entry, &applied);
                    if let Some(req) = req {
                        let result = applied.result.map(Response::Write);
                        self.actions.push_back(Action::Reply { req: *req, result });
                    }
                }
                Err(EngineError(why)) => {
                    // The entry is durable in the WAL but not applied; its
                    // writer and everyone after it get an error, and a restart
                    // replays the WAL into a healthy engine.
                    let rest = batch.entries[i..].iter().filter_map(|(r, _)| *r);
                    self.fail_requests(rest, &format!("apply failed: {why}"));
                    self.fail(format!("engine write failed: {why}"));
                    return;
                }
            }
        }
        self.db_size_bytes = self.engine.size_bytes();
        self.pump_segment_uploads();
        self.maybe_trim();
        self.maybe_checkpoint(now);
        self.flush_batch();
    }

    /// Keeps the in-memory halves (lessor, watch hub, and in async bucket
    /// mode the open upload segment) in step with an applied entry.
    fn after_apply(&mut self, now: Time, entry: &Entry, applied: &mvcc::Applied) {
        if self.is_async_upload() {
            self.segment_append(now, entry);
        }
        match (&entry.payload, &applied.result) {
            (Some(Payload::LeaseGrant(_)), Ok(WriteResponse::LeaseGrant(g))) => {
                self.lessor.on_granted(now, g.id, g.ttl);
            }
            (Some(Payload::LeaseRevoke(r)), Ok(_)) => self.lessor.on_revoked(r.id),
            _ => {}
        }
        let meta = *self.store.meta();
        self.watches.on_applied(now, &meta, &applied.events);
        self.drain_watch_outputs();
    }

    fn maybe_trim(&mut self) {
        // The applied index; in async bucket mode no further than uploaded.
        let bound = self.trim_bound();
        if self.trim_in_flight || bound.0 < self.trimmed_at.0 + self.config.trim_every_entries {
            return;
        }
        let io = self.io_id();
        self.trim_in_flight = true;
        self.trimmed_at = bound;
        self.actions.push_back(Action::TrimWal {
            io,
            below: bound.next(),
        });
    }

    /// Enters the failed state: every pending write gets an error.
    fn fail(&mut self, why: String) {
        tracing::error!(%why, "node stops accepting writes");
        self.bucket_down = None;
        let in_flight = self.in_flight.take().map(|b| b.entries).unwrap_or_default();
        let queued: Vec<ReqId> = self.queued.drain(..).filter_map(|p| p.req).collect();
        let reqs: Vec<ReqId> = in_flight
            .iter()
            .filter_map(|(r, _)| *r)
            .chain(queued)
            .collect();
        self.fail_requests(reqs.into_iter(), &why);
        self.health = Health::Failed(why);
    }

    fn fail_requests(&mut self, reqs: impl Iterator<Item = ReqId>, why: &str) {
        for req in reqs {
            let error = Error::Internal(format!("write outcome unknown: {why}"));
            self.actions.push_back(Action::Reply {
                req,
                result: Err(error),
            });
        }
    }

    fn io_id(&mut self) -> IoId {
        let id = IoId(self.next_io);
        self.next_io += 1;
        id
    }
}

/// Encoded size of a client's write request (etcd measures the request,
/// not the entry around it).
fn encoded_len(write: &WriteRequest) -> usize {
    use prost::Message;
    match write {
        WriteRequest::Put(r) => r.encoded_len(),
        WriteRequest::DeleteRange(r) => r.encoded_len(),
        WriteRequest::Txn(r) => r.encoded_len(),
        WriteRequest::Compaction(r) => r.encoded_len(),
        WriteRequest::LeaseGrant(r) => r.encoded_len(),
        WriteRequest::LeaseRevoke(r) => r.encoded_len(),
        WriteRequest::Alarm(r) => r.encoded_len(),
    }
}

/// Encoded size of a payload, for batch sizing.
fn payload_len(payload: &Payload) -> usize {
    payload.encoded_len()
}

mod admission;
mod async_upload;
pub mod checkpoint;
mod cluster;
pub use cluster::{ClusterRole, REMOTE_REQ_BASE};
mod read_lease;
mod startup;
mod upload;

#[cfg(test)]
mod async_upload_tests;
#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod startup_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upload_tests;
