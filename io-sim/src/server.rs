//! One t4 node process inside the simulator: the real core [`Node`] over a
//! [`SimEngine`] and a [`SimWal`] on the node's fake [`Disk`], serving
//! clients through madsim's network.
//!
//! The loop mirrors io-real's node thread (`io-real/src/driver.rs`) and
//! decides nothing: it feeds every inbound message to the node, drains the
//! node's actions and executes them — replies and watch outputs are sent,
//! WAL appends are written at once, the WAL sync runs last, after every
//! other action, and takes a simulated fsync latency during which new
//! requests queue up (they are fed to the node before the sync completes, so
//! they form the next batch: group commit).
//!
//! Every `.await` is a point where the simulator may kill the process: after
//! an append and before its fsync, during the fsync, between the fsync and
//! the replies, between two replies.
//!
//! A node whose write path failed (WAL write or fsync error) exits: a real
//! operator's supervisor restarts it, and recovery decides what survived.
//! A node that cannot recover (corrupt or incomplete WAL) refuses to start
//! and says why in its [`NodeStatus`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use madsim::net::Endpoint;
use madsim::rand::{thread_rng, Rng};
use madsim::time::sleep;
use t4_core::bucket::lock::Member;
use t4_core::kv::RangeRequest;
use t4_core::mvcc;
use t4_core::object::ObjectResult;
use t4_core::watch::{StreamId, WatchInput, WatchOutput};
use t4_core::{
    Action, ClientRequest, Index, IoDone, IoId, Node, NodeConfig, ReqId, Response, Term,
};

use crate::clock::{ClockConfig, SimClock};
use crate::disk::Disk;
use crate::engine::SimEngine;
use crate::proto::{
    Reply, ReplyMsg, Request, RequestMsg, WatchUp, NODE_PORT, REPLY_TAG, REQUEST_TAG,
};
use crate::s3::S3Client;
use crate::wal::{Ledger, SimWal};

/// Deliberate bugs, to prove the checkers catch them. Never on in a normal run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The driver reports the WAL synced before it syncs (so replies leave
    /// before the data is durable).
    pub reply_before_fsync: bool,
    /// The driver uploads WAL objects with a plain PUT instead of
    /// `If-None-Match` (so a zombie can overwrite the new node's log).
    pub upload_without_condition: bool,
    /// The driver reports a WAL-object upload that failed with a retryable
    /// error (a 5xx, a timeout) as done (so a write can be acknowledged
    /// whose object is not in the bucket).
    pub upload_failure_is_success: bool,
    /// The driver serves every linearizable read from local state without
    /// the read lease (so a resumed zombie answers from stale state).
    pub read_without_lease: bool,
}

/// How one node process runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The core's configuration.
    pub core: NodeConfig,
    /// The node's clock.
    pub clock: ClockConfig,
    /// Simulated fsync duration, drawn per sync.
    pub fsync_latency: Range<Duration>,
    /// WAL segment size limit (small in the simulator, to exercise rotation
    /// and trimming).
    pub segment_bytes_max: usize,
    /// Probability that a reply datagram is sent twice.
    pub duplicate_reply_rate: f64,
    /// Deliberate bugs.
    pub bugs: Bugs,
    /// Bucket mode: how long one object-store operation may take before
    /// the node counts it as timed out (it may still land).
    pub object_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            core: NodeConfig {
                trim_every_entries: 500,
                // Small, so that slow watchers stall their streams and
                // catch up from history.
                watch: t4_core::watch::WatchConfig {
                    stream_buffer_max: 8,
                    catch_up_events_max: 16,
                    ..t4_core::watch::WatchConfig::default()
                },
                ..NodeConfig::default()
            },
            clock: ClockConfig::default(),
            fsync_latency: Duration::from_micros(60)..Duration::from_micros(400),
            segment_bytes_max: 64 * 1024,
            duplicate_reply_rate: 0.0,
            bugs: Bugs::default(),
            object_timeout: Duration::from_secs(2),
        }
    }
}

/// What the test can see of a node process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Process starts so far.
    pub incarnation: u64,
    /// Recovered and serving.
    pub serving: bool,
    /// The write path failed and the process exited.
    pub failed: Option<String>,
    /// When it exited (set with `failed`).
    pub failed_at: Option<madsim::time::Instant>,
    /// Recovery refused to start (corruption, a hole in the log).
    pub refused: Option<String>,
    /// Applied revision (after the last executed input).
    pub revision: i64,
    /// Applied log index.
    pub applied_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Writes accepted and not yet answered.
    pub pending: usize,
    /// Reply datagrams sent twice (fault injection), over all incarnations.
    pub duplicated_replies: u64,
    /// What the node is doing right now (so the test can tell where a
    /// crash hit).
    pub phase: Phase,
    /// A violated per-node invariant (applied ≤ last index, revisions never
    /// going back within an incarnation …), first one only.
    pub invariant_violation: Option<String>,
    /// Bucket mode: why the node was fenced, the first time it was (kept
    /// across restarts, so a test can ask whether it ever was).
    pub fenced: Option<String>,
}

/// Where in the write path a node is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for input, or handling it.
    #[default]
    Idle,
    /// A WAL batch is appended and its fsync is in progress.
    Fsync,
    /// A batch is durable and its replies are going out.
    Replying,
}

/// Shared handle on a node's [`NodeStatus`].
#[derive(Clone, Debug, Default)]
pub struct StatusCell(Arc<Mutex<NodeStatus>>);

impl StatusCell {
    /// A copy of the status.
    #[must_use]
    pub fn get(&self) -> NodeStatus {
        self.0.lock().expect("status lock poisoned").clone()
    }

    fn update(&self, f: impl FnOnce(&mut NodeStatus)) {
        f(&mut self.0.lock().expect("status lock poisoned"));
    }
}

/// What a node process gets from the test: its disk, the run's ledger, its
/// configuration and its status cell. All of it outlives the process.
#[derive(Clone, Debug)]
pub struct ServerContext {
    /// The node's disk.
    pub disk: Disk,
    /// The run's ledger of durable entries.
    pub ledger: Ledger,
    /// How to run.
    pub config: ServerConfig,
    /// Where the node reports its state.
    pub status: StatusCell,
    /// Bucket mode (`config.core.bucket` set): the fake S3 and this node's
    /// name in the lock.
    pub bucket: Option<(S3Client, String)>,
}

enum Inbound {
    Request(SocketAddr, RequestMsg),
    OpenStream(StreamId, madsim::net::Sender),
    Watch(StreamId, WatchUp),
    CloseStream(StreamId),
    ObjectDone {
        io: IoId,
        term: Term,
        result: ObjectResult,
    },
}

/// Runs one node process until it fails (or forever). Spawn it as a madsim
/// node's init future.
pub async fn serve(ctx: ServerContext) {
    let config = ctx.config.clone();
    let clock = SimClock::start(config.clock);
    ctx.status.update(|s| {
        s.incarnation += 1;
        s.serving = false;
        s.failed = None;
        s.failed_at = None;
        s.refused = None;
        s.phase = Phase::Idle;
    });
    let engine = SimEngine::open(&ctx.disk);
    let mut node = match Node::new(config.core.clone(), engine) {
        Ok(node) => node,
        Err(e) => return refuse(&ctx.status, format!("engine: {e}")),
    };
    let from = Index(node.meta().applied_index).next();
    let (wal, entries) = match SimWal::open(
        &ctx.disk,
        &ctx.ledger,
        from,
        node.term(),
        config.segment_bytes_max,
    ) {
        Ok(opened) => opened,
        Err(e) => return refuse(&ctx.status, e),
    };
    if let Err(e) = node.recover(clock.now(), entries) {
        return refuse(&ctx.status, format!("replay: {e}"));
    }
    let ep = Arc::new(
        Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], NODE_PORT)))
            .await
            .expect("bind the node's port"),
    );
    let (tx, rx) = mpsc::unbounded();
    madsim::task::spawn(receive_requests(Arc::clone(&ep), tx.clone()));
    madsim::task::spawn(accept_streams(Arc::clone(&ep), tx.clone()));
    let s3 = ctx.bucket.as_ref().map(|(client, me)| {
        node.start_bucket(
            clock.now(),
            Member {
                id: me.clone(),
                peer_addr: String::new(),
            },
        );
        client.clone()
    });
    let mut server = Server {
        s3,
        tx,
        node,
        wal,
        clock,
        ep,
        rx,
        config,
        status: ctx.status.clone(),
        waiting: BTreeMap::new(),
        reads: BTreeMap::new(),
        streams: BTreeMap::new(),
        next_req: 1,
        last_revision: 0,
    };
    // Bucket mode: the start-up's first request goes out now.
    server.execute().await;
    server.publish();
    let starting = server.node.is_starting();
    ctx.status.update(|s| s.serving = !starting);
    server.run().await;
}

fn refuse(status: &StatusCell, why: String) {
    tracing::warn!(%why, "sim node refuses to start");
    status.update(|s| s.refused = Some(why));
}

async fn receive_requests(ep: Arc<Endpoint>, tx: mpsc::UnboundedSender<Inbound>) {
    while let Ok((payload, from)) = ep.recv_from_raw(REQUEST_TAG).await {
        let Ok(msg) = payload.downcast::<RequestMsg>() else {
            continue;
        };
        if tx.unbounded_send(Inbound::Request(from, *msg)).is_err() {
            return;
        }
    }
}

async fn accept_streams(ep: Arc<Endpoint>, tx: mpsc::UnboundedSender<Inbound>) {
    let mut next = 1;
    while let Ok((sender, mut receiver, _from)) = ep.accept1().await {
        let stream = StreamId(next);
        next += 1;
        if tx
            .unbounded_send(Inbound::OpenStream(stream, sender))
            .is_err()
        {
            return;
        }
        let tx = tx.clone();
        madsim::task::spawn(async move {
            while let Ok(payload) = receiver.recv().await {
                let Ok(up) = payload.downcast::<WatchUp>() else {
                    continue;
                };
                if tx.unbounded_send(Inbound::Watch(stream, *up)).is_err() {
                    return;
                }
            }
            let _ = tx.unbounded_send(Inbound::CloseStream(stream));
        });
    }
}

struct Server {
    /// Bucket mode: the fake S3.
    s3: Option<S3Client>,
    /// Where object-store tasks report.
    tx: mpsc::UnboundedSender<Inbound>,
    node: Node<SimEngine>,
    wal: SimWal,
    clock: SimClock,
    ep: Arc<Endpoint>,
    rx: mpsc::UnboundedReceiver<Inbound>,
    config: ServerConfig,
    status: StatusCell,
    /// Client requests the node has not answered: where the answer goes.
    waiting: BTreeMap<ReqId, (SocketAddr, u64)>,
    /// Linearizable reads waiting for the node's `ReadReady`.
    reads: BTreeMap<ReqId, (SocketAddr, u64, RangeRequest)>,
    streams: BTreeMap<StreamId, madsim::net::Sender>,
    next_req: u64,
    last_revision: i64,
}

impl Server {
    async fn run(&mut self) {
        loop {
            let was_starting = self.node.is_starting();
            let deadline = self.node.poll_timeout();
            let timer = async {
                match deadline {
                    Some(at) => madsim::time::sleep_until(self.clock.instant_at(at)).await,
                    None => futures::future::pending().await,
                }
            };
            futures::select_biased! {
                inbound = self.rx.next() => match inbound {
                    Some(inbound) => self.handle(inbound).await,
                    None => return,
                },
                () = timer.fuse() => {},
            }
            self.drain_inbound().await;
            let now = self.clock.now();
            if self.node.poll_timeout().is_some_and(|at| at <= now) {
                // (The start-up's takeover hold ends here.)
                self.node.handle_timeout(now);
            }
            self.execute().await;
            if was_starting && !self.node.is_starting() {
                match self.node.failure() {
                    Some(why) => return refuse(&self.status, why.to_owned()),
                    None => self.status.update(|s| s.serving = true),
                }
            }
            // A fenced node stays up and refuses everything (it does not
            // die: an operator sees why).
            if let Some(why) = self.node.fenced() {
                self.status.update(|s| {
                    s.serving = false;
                    if s.fenced.is_none() {
                        s.fenced = Some(why.to_owned());
                    }
                });
                continue;
            }
            if let Some(why) = self.node.failure() {
                let why = why.to_owned();
                tracing::warn!(%why, "sim node: write path failed, exiting");
                self.status.update(|s| {
                    s.serving = false;
                    s.failed = Some(why);
                    s.failed_at = Some(madsim::time::Instant::now());
                });
                return;
            }
        }
    }

    /// Feeds everything already waiting to the node (a burst forms one batch).
    async fn drain_inbound(&mut self) {
        while let Some(Some(inbound)) = self.rx.next().now_or_never() {
            self.handle(inbound).await;
        }
    }

    async fn handle(&mut self, inbound: Inbound) {
        let now = self.clock.now();
        match inbound {
            Inbound::Request(from, msg) => match msg.req {
                Request::Range(req) => {
                    // As io-real: a serializable read, or a linearizable one
                    // the read lease covers, is served at once; any other
                    // asks the node, which confirms it still owns the
                    // bucket first (the reply is served in `execute`).
                    let leased = self.config.bugs.read_without_lease
                        || self.node.read_fast_until().is_some_and(|until| now < until);
                    if !req.serializable && !leased {
                        let id = ReqId(self.next_req);
                        self.next_req += 1;
                        self.reads.insert(id, (from, msg.id, req));
                        self.node
                            .handle_client(now, id, ClientRequest::LinearizableRead);
                        return;
                    }
                    let result = self.serve_range(&req);
                    self.send_reply(from, msg.id, result).await;
                }
                Request::Core(req) => {
                    let id = ReqId(self.next_req);
                    self.next_req += 1;
                    self.waiting.insert(id, (from, msg.id));
                    self.node.handle_client(now, id, req);
                }
            },
            Inbound::OpenStream(stream, sender) => {
                self.streams.insert(stream, sender);
                self.node
                    .handle_watch(now, WatchInput::OpenStream { stream });
            }
            Inbound::Watch(stream, up) => {
                let input = match up {
                    WatchUp::Create(req) => WatchInput::Create { stream, req },
                    WatchUp::Cancel(watch_id) => WatchInput::Cancel { stream, watch_id },
                    WatchUp::Progress => WatchInput::Progress { stream },
                    WatchUp::Consumed(outputs) => WatchInput::Consumed { stream, outputs },
                };
                self.node.handle_watch(now, input);
            }
            Inbound::CloseStream(stream) => {
                self.streams.remove(&stream);
                self.node
                    .handle_watch(now, WatchInput::CloseStream { stream });
            }
            Inbound::ObjectDone { io, term, result } => {
                self.node
                    .handle_io(now, IoDone::Object { io, term, result });
            }
        }
    }

    /// Executes the node's actions until it has none; the WAL sync last.
    async fn execute(&mut self) {
        loop {
            let mut sync: Option<(IoId, Term, Index)> = None;
            let mut late_sync = false;
            while let Some(action) = self.node.poll_action() {
                match action {
                    Action::Reply { req, result } if self.reads.contains_key(&req) => {
                        let (to, id, range) = self.reads.remove(&req).expect("checked");
                        let result = match result {
                            Ok(Response::ReadReady) => self.serve_range(&range),
                            Ok(other) => panic!("a read was answered {other:?}"),
                            Err(e) => Err(e),
                        };
                        self.send_reply(to, id, result).await;
                    }
                    Action::Reply { req, result } => {
                        let Some((to, id)) = self.waiting.remove(&req) else {
                            continue;
                        };
                        self.send_reply(to, id, result.map(Reply::Core)).await;
                    }
                    Action::Watch(out) => self.send_watch(out).await,
                    Action::AppendWal { io, term, entries } => {
                        if let Err(error) = self.wal.append(&entries) {
                            let now = self.clock.now();
                            self.node
                                .handle_io(now, IoDone::WalFailed { io, term, error });
                        }
                    }
                    Action::SyncWal { io, term, through }
                        if self.config.bugs.reply_before_fsync =>
                    {
                        // The bug: report durability first (the replies go
                        // out in this loop), sync afterwards.
                        let now = self.clock.now();
                        self.node
                            .handle_io(now, IoDone::WalSynced { io, term, through });
                        late_sync = true;
                    }
                    Action::SyncWal { io, term, through } => sync = Some((io, term, through)),
                    Action::TrimWal { io, below } => {
                        use t4_core::KvEngine;
                        let error = self.node.engine().persist().err().map(|e| e.to_string());
                        if error.is_none() {
                            self.wal.remove_segments_before(below);
                        }
                        let now = self.clock.now();
                        self.node.handle_io(now, IoDone::WalTrimmed { io, error });
                    }
                    Action::Object { io, term, mut op } => match &self.s3 {
                        Some(s3) => {
                            if self.config.bugs.upload_without_condition {
                                if let t4_core::object::ObjectOp::Put { key, condition, .. } =
                                    &mut op
                                {
                                    if key.starts_with("wal/") {
                                        *condition = t4_core::object::PutCondition::None;
                                    }
                                }
                            }
                            let lie = self.config.bugs.upload_failure_is_success
                                && matches!(&op, t4_core::object::ObjectOp::Put { key, .. } if key.starts_with("wal/"));
                            // The task dies with this node; the fake S3 carries
                            // on with what it already received.
                            let (s3, tx) = (s3.clone(), self.tx.clone());
                            let timeout = self.config.object_timeout;
                            madsim::task::spawn(async move {
                                let mut result = s3.execute(op, timeout).await;
                                if lie
                                    && matches!(
                                        result,
                                        Err(t4_core::object::ObjectError::Retryable(_))
                                    )
                                {
                                    // The bug: a failed upload taken for a landed one.
                                    result = Ok(t4_core::object::ObjectReply::Put {
                                        etag: t4_core::object::ETag("\"bug\"".into()),
                                    });
                                }
                                let _ = tx.unbounded_send(Inbound::ObjectDone { io, term, result });
                            });
                        }
                        None => {
                            let result = Err(t4_core::object::ObjectError::Failed(
                                "no object store configured".into(),
                            ));
                            let now = self.clock.now();
                            self.node
                                .handle_io(now, IoDone::Object { io, term, result });
                        }
                    },
                    // Checkpoints are not simulated yet: every attempt is
                    // abandoned, which the node survives (the bucket's WAL
                    // alone carries the state).
                    Action::TakeCheckpoint { io, .. } => {
                        let now = self.clock.now();
                        let result = Err("checkpoints are not simulated".to_owned());
                        self.node
                            .handle_io(now, IoDone::CheckpointTaken { io, result });
                    }
                    Action::UploadCheckpointFile { io, term, .. } => {
                        let now = self.clock.now();
                        let result = Err(t4_core::object::ObjectError::Failed(
                            "checkpoints are not simulated".into(),
                        ));
                        self.node
                            .handle_io(now, IoDone::Object { io, term, result });
                    }
                    Action::DropCheckpoint { .. } => {}
                    // A start-up with asynchronous upload (no WAL sync is
                    // pending then).
                    Action::ReadWal { io, from, through } => {
                        let result = self.wal.read_range(from, through);
                        let now = self.clock.now();
                        self.node.handle_io(now, IoDone::WalRead { io, result });
                    }
                    Action::ResetWal { io, next } => {
                        use t4_core::KvEngine;
                        let error = match self.node.engine().persist() {
                            Ok(()) => self.wal.reset(next, self.node.term()).err(),
                            Err(e) => Some(e.to_string()),
                        };
                        let now = self.clock.now();
                        self.node.handle_io(now, IoDone::WalReset { io, error });
                    }
                }
            }
            self.publish();
            self.status.update(|s| s.phase = Phase::Idle);
            if late_sync {
                sleep(self.fsync_latency()).await;
                let _ = self.wal.sync();
                continue;
            }
            let Some((io, term, through)) = sync else {
                return;
            };
            self.sync_wal(io, term, through).await;
        }
    }

    fn fsync_latency(&self) -> Duration {
        let r = &self.config.fsync_latency;
        if r.is_empty() {
            r.start
        } else {
            thread_rng().gen_range(r.clone())
        }
    }

    async fn sync_wal(&mut self, io: IoId, term: Term, through: Index) {
        self.status.update(|s| s.phase = Phase::Fsync);
        sleep(self.fsync_latency()).await;
        // Requests that arrived during the fsync join the next batch.
        self.drain_inbound().await;
        let now = self.clock.now();
        match self.wal.sync() {
            Ok(()) => self
                .node
                .handle_io(now, IoDone::WalSynced { io, term, through }),
            Err(error) => self
                .node
                .handle_io(now, IoDone::WalFailed { io, term, error }),
        }
        self.status.update(|s| s.phase = Phase::Replying);
    }

    /// A range read from the node's engine, unless the node must not serve
    /// reads (fenced, starting).
    fn serve_range(&self, req: &RangeRequest) -> Result<Reply, t4_core::Error> {
        if let Some(why) = self.node.fenced() {
            Err(t4_core::Error::Fenced(why.to_owned()))
        } else if self.node.is_starting() {
            Err(t4_core::Error::Unavailable("node is starting".into()))
        } else {
            mvcc::range(self.node.engine(), req).map(Reply::Range)
        }
    }

    async fn send_reply(&mut self, to: SocketAddr, id: u64, result: Result<Reply, t4_core::Error>) {
        let copies = if self.config.duplicate_reply_rate > 0.0
            && thread_rng().gen_bool(self.config.duplicate_reply_rate)
        {
            2
        } else {
            1
        };
        if copies > 1 {
            self.status.update(|s| s.duplicated_replies += 1);
        }
        for _ in 0..copies {
            let msg = ReplyMsg {
                id,
                result: result.clone(),
            };
            // A lost datagram is the network's business; the client times out.
            let _ = self.ep.send_to_raw(to, REPLY_TAG, Box::new(msg)).await;
        }
    }

    async fn send_watch(&mut self, out: WatchOutput) {
        let stream = out.stream;
        let Some(sender) = self.streams.get(&stream) else {
            return;
        };
        if sender.send(Box::new(out)).await.is_err() {
            self.streams.remove(&stream);
            let now = self.clock.now();
            self.node
                .handle_watch(now, WatchInput::CloseStream { stream });
        }
    }

    /// Publishes the node's state and checks the per-node invariants.
    fn publish(&mut self) {
        let meta = *self.node.meta();
        let last_index = self.node.last_index().0;
        let mut violation = None;
        if meta.applied_index > last_index {
            violation = Some(format!(
                "applied index {} above the last log index {last_index}",
                meta.applied_index
            ));
        }
        if meta.current_revision < self.last_revision {
            violation = Some(format!(
                "revision went back from {} to {}",
                self.last_revision, meta.current_revision
            ));
        }
        self.last_revision = meta.current_revision;
        let pending = self.node.pending_len();
        self.status.update(|s| {
            s.revision = meta.current_revision;
            s.applied_index = meta.applied_index;
            s.last_index = last_index;
            s.pending = pending;
            if s.invariant_violation.is_none() {
                s.invariant_violation = violation;
            }
        });
    }
}
