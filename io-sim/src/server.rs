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
//! Bucket mode: a node whose disk holds no engine (a new machine, a lost
//! disk) first restores the bucket's newest usable checkpoint
//! ([`crate::checkpoint::restore`]), as io-real's `Node::open` does.
//! Checkpoints are taken in memory ([`crate::checkpoint`]), answered after
//! a simulated hashing time, and uploaded like any other object.
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
use t4_core::cluster::{start_over_keeps, HardState, PeerMsg, StartOverKeep};
use t4_core::kv::RangeRequest;
use t4_core::mvcc;
use t4_core::node::checkpoint::{CheckpointStats, TakenCheckpoint};
use t4_core::node::ClusterRole;
use t4_core::object::{ObjectError, ObjectOp, ObjectResult};
use t4_core::watch::{StreamId, WatchInput, WatchOutput};
use t4_core::{
    Action, ClientRequest, Index, IoDone, IoId, Node, NodeConfig, ReqId, Response, Term,
};

use crate::checkpoint::{LocalCheckpoints, RestoreBugs, RestoreReport};
use crate::clock::{ClockConfig, SimClock};
use crate::disk::Disk;
use crate::engine::SimEngine;
use crate::proto::{
    PeerDatagram, Reply, ReplyMsg, Request, RequestMsg, WatchUp, NODE_PORT, PEER_PORT, PEER_TAG,
    REPLY_TAG, REQUEST_TAG,
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
    /// A restore does not check the downloaded files' sizes and hashes (so
    /// a damaged checkpoint can be restored).
    pub restore_skips_verification: bool,
    /// A restore that finds the newest checkpoint damaged starts from an
    /// empty engine instead of falling back to the next older one.
    pub restore_without_fallback: bool,
    /// The check a checkpoint upload makes after a 412 on an SST (listing
    /// the key) always finds it: a 409 against a put still in flight is
    /// taken for presence, and the manifest may name an SST the bucket
    /// lacks (core's behaviour before it checked).
    pub sst_conflict_is_presence: bool,
}

impl Bugs {
    fn restore(self) -> RestoreBugs {
        RestoreBugs {
            skip_verification: self.restore_skips_verification,
            no_fallback: self.restore_without_fallback,
        }
    }
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
    /// Bucket mode: probability that taking a checkpoint fails (the node
    /// abandons it and tries again later).
    pub checkpoint_failure_rate: f64,
    /// Bucket mode: how long hashing a checkpoint's files takes (the node
    /// goes on serving meanwhile, as io-real hashes on a thread).
    pub checkpoint_hash_latency: Range<Duration>,
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
            checkpoint_failure_rate: 0.0,
            checkpoint_hash_latency: Duration::from_millis(1)..Duration::from_millis(20),
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
    /// Bucket mode: what this incarnation's start-up restore did (`None`:
    /// the disk had an engine, nothing was restored).
    pub restore: Option<RestoreReport>,
    /// Bucket mode: a checkpoint (or the GC pass after one) is running.
    pub checkpointing: bool,
    /// Bucket mode: checkpoint and GC counters over all incarnations.
    pub checkpoints: CheckpointCounts,
    /// Cluster mode with the bucket tier: why this incarnation asked to be
    /// started over from a checkpoint ([`Action::StartOver`]), and its
    /// log's last index then. The test plays the driver's part: it stops
    /// the process, calls [`prepare_start_over`] and starts it again
    /// (io-real does all of it in-process).
    pub start_over: Option<(String, u64)>,
    /// Cluster mode: the node's role now.
    pub role: Option<ClusterRole>,
    /// Cluster mode: the node's term.
    pub term: u64,
    /// Cluster mode: the commit index it knows.
    pub commit_index: u64,
    /// Cluster mode with the bucket tier: how far it knows the bucket
    /// holds the log.
    pub uploaded: Option<u64>,
    /// Cluster mode: the lock's members as it last saw them.
    pub members: Vec<String>,
    /// Cluster mode: peer messages that did not decode (must stay 0).
    pub undecodable_peer_msgs: u64,
}

/// Checkpoint and GC counters of a node over all its incarnations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointCounts {
    /// Checkpoints completed (manifest written).
    pub completed: u64,
    /// Checkpoints abandoned (injected take failures included).
    pub abandoned: u64,
    /// Injected take failures.
    pub take_failures: u64,
    /// GC passes finished.
    pub gc_passes: u64,
    /// Objects the GC passes deleted.
    pub gc_deleted: u64,
    /// Why the last abandoned checkpoint was abandoned.
    pub last_abandoned: Option<String>,
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
    /// Bucket mode (`config.core.bucket` set) and cluster mode
    /// (`config.core.cluster` set): the fake S3 and this node's name in the
    /// lock (cluster mode takes the name from the cluster configuration).
    pub bucket: Option<(S3Client, String)>,
}

enum Inbound {
    Request(SocketAddr, RequestMsg),
    Peer(Member, PeerMsg),
    OpenStream(StreamId, madsim::net::Sender),
    Watch(StreamId, WatchUp),
    CloseStream(StreamId),
    ObjectDone {
        io: IoId,
        term: Term,
        result: ObjectResult,
    },
    CheckpointTaken {
        io: IoId,
        result: Result<TakenCheckpoint, String>,
    },
}

/// Runs one node process until it fails (or forever). Spawn it as a madsim
/// node's init future. Its logs are in a span naming the node (its member
/// id in cluster mode).
pub async fn serve(ctx: ServerContext) {
    use tracing::Instrument;
    let name = ctx
        .config
        .core
        .cluster
        .as_ref()
        .map_or_else(|| "node".to_owned(), |c| c.me.id.clone());
    serve_process(ctx)
        .instrument(tracing::info_span!("sim", node = %name))
        .await;
}

async fn serve_process(ctx: ServerContext) {
    let config = ctx.config.clone();
    let clock = SimClock::start(config.clock);
    ctx.status.update(|s| {
        s.incarnation += 1;
        s.serving = false;
        s.failed = None;
        s.failed_at = None;
        s.refused = None;
        s.phase = Phase::Idle;
        s.restore = None;
        s.start_over = None;
        s.checkpointing = false;
    });
    let cluster = config.core.cluster.as_ref().map(|c| c.me.clone());
    // Bucket mode, and cluster mode with the bucket tier: an empty disk
    // starts from the newest checkpoint (a cluster member then rejoins
    // from there: no hard state, so it does not vote until caught up).
    let restores = config
        .core
        .cluster
        .as_ref()
        .is_none_or(|c| c.bucket.is_some());
    if let (Some((s3, _)), true) = (&ctx.bucket, restores) {
        if let Err(why) = restore_if_missing(&ctx, s3).await {
            return refuse(&ctx.status, why);
        }
    }
    let engine = SimEngine::open(&ctx.disk);
    // Drawn per process start, as a real driver does: a restarted node's
    // forwarded-request ids must not repeat its previous incarnation's, or a
    // late answer to an old request would be taken for a new one's.
    let core = NodeConfig {
        seed: thread_rng().gen(),
        ..config.core.clone()
    };
    let mut node = match Node::new(core, engine) {
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
    // Cluster mode: the promised term (and the rejoining flag) survive
    // crashes; a lost disk forgets them.
    let hard_state = match crate::hard_state::load(&ctx.disk) {
        None => HardState::default(),
        Some(bytes) => match HardState::decode(&bytes) {
            Ok(state) => state,
            Err(e) => return refuse(&ctx.status, format!("hard state: {e}")),
        },
    };
    let ep = Arc::new(
        Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], NODE_PORT)))
            .await
            .expect("bind the node's port"),
    );
    let (tx, rx) = mpsc::unbounded();
    madsim::task::spawn(receive_requests(Arc::clone(&ep), tx.clone()));
    madsim::task::spawn(accept_streams(Arc::clone(&ep), tx.clone()));
    let peer_ep = match &cluster {
        Some(_) => {
            let peer_ep = Arc::new(
                Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], PEER_PORT)))
                    .await
                    .expect("bind the peer port"),
            );
            madsim::task::spawn(receive_peers(
                Arc::clone(&peer_ep),
                ctx.status.clone(),
                tx.clone(),
            ));
            Some(peer_ep)
        }
        None => None,
    };
    let s3 = ctx.bucket.as_ref().map(|(client, me)| {
        match &cluster {
            Some(_) => node.start_cluster(clock.now(), hard_state),
            None => node.start_bucket(
                clock.now(),
                Member {
                    id: me.clone(),
                    peer_addr: String::new(),
                },
            ),
        }
        client.clone()
    });
    let mut server = Server {
        s3,
        peer: peer_ep.zip(cluster),
        disk: ctx.disk.clone(),
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
        checkpoints: LocalCheckpoints::default(),
        published_checkpoints: CheckpointStats::default(),
    };
    // Bucket mode: the start-up's first request goes out now.
    server.execute().await;
    server.publish();
    let starting = server.node.is_starting();
    ctx.status.update(|s| s.serving = !starting);
    server.run().await;
}

/// The marker [`prepare_start_over`] leaves for the next start: the last
/// index of the log put aside.
const START_OVER_FILE: &str = "start-over";
/// Where a start-up restore keeps the hard state while it restores.
const HARD_STATE_ASIDE: &str = "hard_state.without-engine";
/// Where a hard state the restore could not keep ends up.
const HARD_STATE_DROPPED: &str = "hard_state.dropped";

/// The driver's part of [`Action::StartOver`] that happens while the
/// process is down: the engine goes aside, and a marker tells the next
/// start the last index of the log that goes with it
/// ([`restore_if_missing`] then restores the newest checkpoint and keeps
/// what [`start_over_keeps`] allows of the WAL and the hard state).
pub fn prepare_start_over(disk: &Disk, last_index: u64) {
    disk.create_durable(START_OVER_FILE, last_index.to_le_bytes().to_vec());
    disk.put_engine_aside();
}

/// Bucket mode, before the engine opens: a disk without an engine (a new
/// machine, a lost disk) starts from the bucket's newest usable checkpoint
/// (falling back to older ones), or from an empty engine when the bucket
/// has none; the bucket's WAL then brings it up to date. A local WAL
/// without its engine cannot be replayed onto a checkpoint: it is moved
/// aside, never deleted (io-real does the same).
async fn restore_if_missing(ctx: &ServerContext, s3: &S3Client) -> Result<(), String> {
    if ctx.disk.has_engine() {
        return Ok(());
    }
    // Cluster mode: the promises were made for the log that went with
    // the engine; they are moved aside (a crash before the end leaves none:
    // the member then rejoins as a new one that does not vote until caught
    // up), and back only for a start-over that [`start_over_keeps`] allows
    // (so is the WAL after the checkpoint).
    let start_over = ctx.disk.read(START_OVER_FILE).map(|bytes| {
        u64::from_le_bytes(
            bytes
                .try_into()
                .expect("the start-over marker holds an index"),
        )
    });
    let mut hard_state_aside =
        ctx.config.core.cluster.is_some() && crate::hard_state::load(&ctx.disk).is_some();
    if hard_state_aside {
        ctx.disk
            .rename(crate::hard_state::FILE_NAME, HARD_STATE_ASIDE);
    } else if start_over.is_some() && ctx.disk.read(HARD_STATE_ASIDE).is_some() {
        // A start-over's restore was cut short (the WAL moves, and the hard
        // state comes back, only once the engine is in): this is the same
        // start-over again.
        hard_state_aside = true;
    }
    let (report, snapshot) =
        crate::checkpoint::restore(s3, ctx.config.object_timeout, ctx.config.bugs.restore())
            .await
            .map_err(|e| format!("restoring a checkpoint: {e}"))?;
    let mut keep = StartOverKeep::Nothing;
    match (&report.restored, snapshot) {
        (Some(restored), Some(snapshot)) => {
            tracing::info!(
                checkpoint = %restored.manifest_key,
                index = restored.index.0,
                bytes = report.bytes,
                skipped = report.damaged.len(),
                "restored a checkpoint from the bucket"
            );
            let meta = t4_core::mvcc::read_meta(&snapshot).map_err(|e| e.to_string())?;
            let at = (Index(meta.applied_index), Term(meta.applied_term));
            if let (Some(last_before), true) = (start_over, hard_state_aside) {
                let log = SimWal::peek(&ctx.disk, at.0)
                    .inspect_err(|e| tracing::warn!(error = %e, "the WAL cannot be read"))
                    .ok();
                keep = start_over_keeps(at, log, Index(last_before));
            }
            ctx.disk.install_engine(snapshot);
        }
        _ => tracing::info!(
            skipped = report.damaged.len(),
            "no usable checkpoint in the bucket; starting from an empty engine"
        ),
    }
    if keep != StartOverKeep::LogAndHardState {
        for name in ctx.disk.list() {
            if let Some(rest) = name.strip_prefix("wal/") {
                tracing::warn!(file = %name, "a WAL without its engine cannot be replayed; moving it aside");
                ctx.disk
                    .rename(&name, &format!("wal.without-engine/{rest}"));
            }
        }
    }
    if keep != StartOverKeep::Nothing {
        tracing::info!(
            ?keep,
            "the checkpoint and this member's log allow it to keep its hard \
            state (and its vote)"
        );
        ctx.disk
            .rename(HARD_STATE_ASIDE, crate::hard_state::FILE_NAME);
        hard_state_aside = false;
    }
    if hard_state_aside {
        tracing::warn!(
            "a hard state without its engine: this member rejoins as a new one (it does not \
             vote until caught up)"
        );
        // Kept, under a name no later start-over takes for its own.
        ctx.disk.rename(HARD_STATE_ASIDE, HARD_STATE_DROPPED);
    }
    ctx.disk.remove(START_OVER_FILE);
    ctx.status.update(|s| s.restore = Some(report));
    Ok(())
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

/// Cluster mode: peer datagrams, decoded, to the node. One that does not
/// decode is counted (the run's checks want none) and dropped.
async fn receive_peers(ep: Arc<Endpoint>, status: StatusCell, tx: mpsc::UnboundedSender<Inbound>) {
    while let Ok((payload, _)) = ep.recv_from_raw(PEER_TAG).await {
        let Ok(datagram) = payload.downcast::<PeerDatagram>() else {
            continue;
        };
        match PeerMsg::decode(&datagram.bytes) {
            Ok(msg) => {
                if tx
                    .unbounded_send(Inbound::Peer(datagram.from, msg))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, from = %datagram.from.id, "undecodable peer message");
                status.update(|s| s.undecodable_peer_msgs += 1);
            }
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
    /// Bucket and cluster mode: the fake S3.
    s3: Option<S3Client>,
    /// Cluster mode: the peer endpoint and this member.
    peer: Option<(Arc<Endpoint>, Member)>,
    /// The node's disk (cluster mode saves the hard state on it).
    disk: Disk,
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
    /// Bucket mode: the local checkpoint folders.
    checkpoints: LocalCheckpoints,
    /// The core's checkpoint counters as last published (to add what is
    /// new to the status's counts over all incarnations).
    published_checkpoints: CheckpointStats,
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
            Inbound::Peer(from, msg) => self.node.handle_peer(now, &from, msg),
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
            Inbound::CheckpointTaken { io, result } => {
                self.node
                    .handle_io(now, IoDone::CheckpointTaken { io, result });
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
                    Action::Object { io, term, mut op } => {
                        if self.config.bugs.upload_without_condition {
                            if let ObjectOp::Put { key, condition, .. } = &mut op {
                                if key.starts_with("wal/") {
                                    *condition = t4_core::object::PutCondition::None;
                                }
                            }
                        }
                        let lie = self.config.bugs.upload_failure_is_success
                            && matches!(&op, ObjectOp::Put { key, .. } if key.starts_with("wal/"));
                        match op {
                            ObjectOp::List {
                                prefix,
                                max_keys: 1,
                                ..
                            } if self.config.bugs.sst_conflict_is_presence
                                && prefix.starts_with("sst/") =>
                            {
                                // The bug: "it is there", unasked.
                                let listed = t4_core::object::ObjectInfo {
                                    key: prefix,
                                    size_bytes: 0,
                                    etag: t4_core::object::ETag("\"bug\"".into()),
                                };
                                let result = Ok(t4_core::object::ObjectReply::Listed {
                                    objects: vec![listed],
                                    truncated: false,
                                });
                                let _ = self.tx.unbounded_send(Inbound::ObjectDone {
                                    io,
                                    term,
                                    result,
                                });
                            }
                            op => self.spawn_object(io, term, op, lie),
                        }
                    }
                    Action::TakeCheckpoint { io, term, index } => {
                        self.take_checkpoint(io, term, index);
                    }
                    Action::UploadCheckpointFile {
                        io,
                        term,
                        index,
                        name,
                        key,
                        condition,
                    } => match self.checkpoints.file(term, index, &name) {
                        Some(body) => {
                            let op = ObjectOp::Put {
                                key,
                                body,
                                condition,
                            };
                            self.spawn_object(io, term, op, false);
                        }
                        None => {
                            let result = Err(ObjectError::Failed(format!(
                                "no local checkpoint file {term}-{index}/{name}"
                            )));
                            let now = self.clock.now();
                            self.node
                                .handle_io(now, IoDone::Object { io, term, result });
                        }
                    },
                    Action::DropCheckpoint { term, index } => {
                        self.checkpoints.drop_folder(term, index);
                    }
                    // Applied entries, complete in the files whatever is
                    // being appended after them (start-ups; a cluster
                    // leader uploading what its memory let go of).
                    Action::ReadWal { io, from, through } => {
                        let result = self.wal.read_range(from, through);
                        let now = self.clock.now();
                        self.node.handle_io(now, IoDone::WalRead { io, result });
                    }
                    Action::Send { to, msg } => self.send_peer(&to, &msg).await,
                    Action::TruncateWal { io, term, after } => {
                        if let Err(error) = self.wal.truncate_after(after) {
                            let now = self.clock.now();
                            self.node
                                .handle_io(now, IoDone::WalFailed { io, term, error });
                        }
                    }
                    Action::SaveHardState { io, state } => {
                        // As io-real: written and fsynced on the node's
                        // thread; a crash during the fsync loses it.
                        sleep(self.fsync_latency()).await;
                        let error = crate::hard_state::save(&self.disk, &state.encode())
                            .err()
                            .map(|e| e.to_string());
                        let now = self.clock.now();
                        self.node
                            .handle_io(now, IoDone::HardStateSaved { io, error });
                    }
                    Action::StartOver { why, last_index } => {
                        self.status
                            .update(|s| s.start_over = Some((why, last_index.0)));
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

    /// Runs an object operation on a task of its own; its result comes
    /// back as an inbound message. `lie`: the deliberate bug that takes a
    /// retryable failure for a landed put.
    fn spawn_object(&self, io: IoId, term: Term, op: ObjectOp, lie: bool) {
        let Some(s3) = &self.s3 else {
            let result = Err(ObjectError::Failed("no object store configured".into()));
            let _ = self
                .tx
                .unbounded_send(Inbound::ObjectDone { io, term, result });
            return;
        };
        // The task dies with this node; the fake S3 carries on with what
        // it already received.
        let (s3, tx) = (s3.clone(), self.tx.clone());
        let timeout = self.config.object_timeout;
        madsim::task::spawn(async move {
            let mut result = s3.execute(op, timeout).await;
            if lie && matches!(result, Err(ObjectError::Retryable(_))) {
                // The bug: a failed upload taken for a landed one.
                result = Ok(t4_core::object::ObjectReply::Put {
                    etag: t4_core::object::ETag("\"bug\"".into()),
                });
            }
            let _ = tx.unbounded_send(Inbound::ObjectDone { io, term, result });
        });
    }

    /// `TakeCheckpoint`: the engine's files now (the node is at `index`
    /// and sees no other input first); the answer after the hashing time,
    /// from a task, while the node goes on.
    fn take_checkpoint(&mut self, io: IoId, term: Term, index: Index) {
        let rate = self.config.checkpoint_failure_rate;
        if rate > 0.0 && thread_rng().gen_bool(rate) {
            self.status.update(|s| s.checkpoints.take_failures += 1);
            let result = Err("injected: the engine checkpoint failed".to_owned());
            let now = self.clock.now();
            self.node
                .handle_io(now, IoDone::CheckpointTaken { io, result });
            return;
        }
        use t4_core::KvEngine;
        // A RocksDB checkpoint flushes the memtables first (our WAL is the
        // log, RocksDB's own is off): the engine is durable at the index
        // from now on, so a crash never takes it back behind a checkpoint
        // whose WAL objects GC may delete.
        if let Err(e) = self.node.engine().persist() {
            let result = Err(format!("flushing the engine: {e}"));
            let now = self.clock.now();
            self.node
                .handle_io(now, IoDone::CheckpointTaken { io, result });
            return;
        }
        let snapshot = self.node.engine().snapshot();
        let meta = mvcc::read_meta(&snapshot).expect("an in-memory engine's meta reads");
        assert_eq!(
            meta.applied_index, index.0,
            "TakeCheckpoint at index {index}, but the engine is at {}: core names the index when the action is polled",
            meta.applied_index
        );
        let files = crate::checkpoint::take(&snapshot);
        let taken = TakenCheckpoint {
            files: files.local_files(),
            created_unix_ms: u64::try_from(self.clock.wall_nanos() / 1_000_000).unwrap_or(0),
        };
        self.checkpoints.insert(term, index, files);
        let r = &self.config.checkpoint_hash_latency;
        let delay = if r.is_empty() {
            r.start
        } else {
            thread_rng().gen_range(r.clone())
        };
        let tx = self.tx.clone();
        madsim::task::spawn(async move {
            sleep(delay).await;
            let result = Ok(taken);
            let _ = tx.unbounded_send(Inbound::CheckpointTaken { io, result });
        });
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

    /// Cluster mode: a peer message, encoded, as a datagram to the member's
    /// peer address (lost if the network drops it).
    async fn send_peer(&self, to: &Member, msg: &PeerMsg) {
        let Some((ep, me)) = &self.peer else {
            return;
        };
        let Ok(addr) = to.peer_addr.parse::<SocketAddr>() else {
            tracing::error!(to = %to.id, addr = %to.peer_addr, "a member's peer address does not parse");
            return;
        };
        let datagram = PeerDatagram {
            from: me.clone(),
            bytes: msg.encode(),
        };
        let _ = ep.send_to_raw(addr, PEER_TAG, Box::new(datagram)).await;
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
        let stats = self.node.checkpoint_stats().clone();
        if let Some((term, index)) = stats.last {
            if index.0 > meta.applied_index {
                violation = Some(format!(
                    "checkpoint {term}/{index} above the applied index {}",
                    meta.applied_index
                ));
            }
        }
        let before = std::mem::replace(&mut self.published_checkpoints, stats.clone());
        let checkpointing = self.node.is_checkpointing();
        let role = self.node.cluster_role();
        let term = self.node.term().0;
        let commit_index = self.node.commit_index().map_or(0, |i| i.0);
        let uploaded = self.node.cluster_uploaded_through().map(|i| i.0);
        let members: Vec<String> = self.node.members().into_iter().map(|m| m.id).collect();
        self.status.update(|s| {
            s.role = role;
            s.term = term;
            s.commit_index = commit_index;
            s.uploaded = uploaded;
            s.members = members;
            let c = &mut s.checkpoints;
            c.completed += stats.completed - before.completed;
            c.abandoned += stats.abandoned - before.abandoned;
            c.gc_passes += stats.gc_passes - before.gc_passes;
            c.gc_deleted += stats.gc_deleted - before.gc_deleted;
            if stats.last_abandoned.is_some() {
                c.last_abandoned.clone_from(&stats.last_abandoned);
            }
            s.checkpointing = checkpointing;
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
