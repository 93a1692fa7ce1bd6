//! The thin driver: runs a core [`t4_core::Node`] and executes its actions.
//!
//! It decides nothing. Two OS threads:
//!
//! - the **node thread** owns the core node and the [`Wal`] files. It waits
//!   on one event channel (client requests, watch inputs, I/O completions,
//!   close) until the core's next timer ([`t4_core::Node::poll_timeout`]) is
//!   due, feeds each event to the node, drains every event already waiting
//!   (so a burst is handled before the next action is executed), calls
//!   [`t4_core::Node::handle_timeout`] if the timer is due, then executes the
//!   node's actions: replies go to the waiting callers, watch outputs to
//!   their stream's channel, WAL appends are written at once, and the WAL
//!   sync (fdatasync) runs last, on this thread, after every reply of the
//!   previous batch went out. Requests arriving during the fsync wait in the
//!   channel and are fed to the node before the sync's completion, so they
//!   form the next batch together (group commit).
//! - the **trim thread** persists the engine for `TrimWal` (a memtable flush
//!   can take tens of milliseconds, too long to block writes); the node
//!   thread then deletes the WAL segments itself.
//!
//! In bucket mode, object-store operations (`Action::Object`) run as tasks
//! on the tokio runtime the node was opened on, concurrently; each reports
//! back as an event. The store bounds every operation with timeouts and
//! retries ([`crate::object::Retrying`]), so every task ends. A start-up
//! with asynchronous upload may ask for local WAL entries back
//! ([`Action::ReadWal`]): they are read on the node thread,
//! which owns the [`Wal`], and fed back at once.
//!
//! Why the fsync is not on a thread of its own: handing every batch to
//! another thread and its completion back costs two thread wake-ups per
//! batch, most of the latency of a serial write beyond the fsync itself,
//! and buys nothing: the next batch can only start once the previous one
//! applied.
//!
//! Reads never pass through either thread: callers take an engine snapshot.
//!
//! # Cluster mode
//!
//! The lock's object operations run as in bucket mode. Peer messages in
//! ([`Event::Peer`]) were decoded by the peer listener's tasks
//! ([`crate::peer`]) and are fed to the node like any event; at most
//! [`PEER_INBOX_MAX`] wait at a time, more are dropped (as a network
//! would). Messages out ([`Action::Send`]) go to the [`Outbox`], which
//! never blocks. `TruncateWal` and `SaveHardState` run on the node thread
//! (both fsync; both are rare: a leader change, a promise).
//!
//! # Time
//!
//! One monotonic origin ([`Clock`], an `Instant` taken when the node opens)
//! gives every `now` the core sees, from recovery on: lease expiry and
//! watch progress timers are measured on it. Wall-clock time never reaches
//! the core.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use t4_core::log::Entry;
use t4_core::watch::{StreamId, WatchInput, WatchOutput};
use t4_core::{
    Action, ClientRequest, Error, Index, IoDone, IoId, KvEngine, ReqId, Response, Term, Time,
};

use futures::future::BoxFuture;
use t4_core::node::checkpoint::TakenCheckpoint;

use crate::checkpoint;
use crate::engine::RocksEngine;
use crate::node::{Behind, ClusterStatus};
use crate::object::ObjectStore;
use crate::peer::Outbox;
use crate::wal::Wal;
use t4_core::bucket::lock::Member;
use t4_core::cluster::{HardState, PeerMsg};
use t4_core::object::{ObjectError, ObjectResult};

/// The answer channel of one client request.
pub(crate) type ReplyTx = oneshot::Sender<Result<Response, Error>>;

/// Where a watch stream's outputs go. Unbounded on purpose: the core bounds
/// the outputs a stream may have outstanding
/// ([`t4_core::watch::WatchConfig::stream_buffer_max`]), counting those not
/// yet reported [`WatchInput::Consumed`].
pub(crate) type WatchTx = tokio::sync::mpsc::UnboundedSender<WatchOutput>;

/// The driver's monotonic clock: nanoseconds since the node opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub(crate) fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current time on this clock.
    pub(crate) fn now(self) -> Time {
        Time(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// How long from now until `at` (zero if it has passed).
    fn until(self, at: Time) -> Duration {
        Duration::from_nanos(at.0.saturating_sub(self.now().0))
    }
}

/// What the node thread reacts to.
pub(crate) enum Event {
    /// A client request (write or in-memory query).
    Client(ClientRequest, ReplyTx),
    /// A watch stream opened; its outputs go to `tx`.
    OpenWatchStream {
        /// The stream (allocated by the `Node` handle).
        stream: StreamId,
        /// Its output channel.
        tx: WatchTx,
    },
    /// A watch stream input (create, cancel, progress, consumed, close).
    Watch(WatchInput),
    /// The trim thread persisted the engine for the `TrimWal` `io`.
    Persisted {
        /// The node it was for ([`NodeThread::generation`]).
        generation: u64,
        /// The trim.
        io: IoId,
        /// Segments wholly below this index may go.
        below: Index,
        /// `Err` if the persist failed (the segments must stay).
        result: Result<(), String>,
    },
    /// An object-store operation finished.
    ObjectDone {
        /// The node it was for ([`NodeThread::generation`]).
        generation: u64,
        /// The `Action::Object`.
        io: IoId,
        /// Its term.
        term: Term,
        /// What the store answered.
        result: ObjectResult,
    },
    /// A local checkpoint was hashed (or could not be taken).
    CheckpointTaken {
        /// The node it was for ([`NodeThread::generation`]).
        generation: u64,
        /// The `Action::TakeCheckpoint`.
        io: IoId,
        /// Its files, or what went wrong.
        result: Result<TakenCheckpoint, String>,
    },
    /// Cluster mode: a message from another member (decoded by the peer
    /// listener; counted in [`ClusterStart::inbound`]).
    Peer {
        /// The sender.
        from: Member,
        /// The message.
        msg: PeerMsg,
    },
    /// Stop accepting writes, finish what is in flight, persist, exit.
    Close(oneshot::Sender<Result<(), String>>),
}

/// Peer messages waiting for the node thread at most; the peer listener
/// drops more (the protocol tolerates lost messages, not unbounded memory).
pub(crate) const PEER_INBOX_MAX: usize = 4096;

/// The engine the node's readers use; the node thread swaps it when the
/// member starts over ([`Restart`]).
pub(crate) type EngineSlot = Arc<RwLock<Option<RocksEngine>>>;

/// What a cluster member's node thread needs to start the member over from
/// a checkpoint at run time ([`Action::StartOver`]).
pub(crate) struct Restart {
    /// The node's configuration (paths, options).
    pub config: crate::Config,
    /// The engine the node's readers use.
    pub engine: EngineSlot,
}

/// What a cluster-mode node thread needs besides the bucket.
pub(crate) struct ClusterStart {
    /// The hard state loaded at open.
    pub hard_state: HardState,
    /// How to start over.
    pub restart: Restart,
    /// Where `SaveHardState` writes (`crate::hard_state`).
    pub hard_state_dir: PathBuf,
    /// Where `Send` goes.
    pub outbox: Outbox,
    /// Peer messages sent to the node thread and not yet handled.
    pub inbound: Arc<AtomicUsize>,
}

/// The bucket of a bucket-mode node and where its operations run.
pub(crate) struct Bucket {
    /// The store (with retries and timeouts).
    pub store: Arc<dyn ObjectStore>,
    /// The runtime that runs the operations.
    pub runtime: tokio::runtime::Handle,
    /// Who this node is in the lock.
    pub me: Member,
    /// Where local checkpoints are made (`crate::checkpoint::local_root`).
    pub checkpoints: PathBuf,
    /// Bucket mode: told once the start-up finished (`Err` says why the
    /// node refused to start). `None` in cluster mode, which has no
    /// start-up phase.
    pub started: Option<oneshot::Sender<Result<(), String>>>,
}

/// How long a closing node waits for work in flight (an upload retried
/// through an outage; with asynchronous upload, the segments not yet in
/// the bucket) before it stops anyway; what it fsynced is replayed and
/// uploaded at the next start.
const CLOSE_WAIT_MAX: Duration = Duration::from_secs(10);

/// A `TrimWal` for the trim thread: persist the engine, then report
/// [`Event::Persisted`].
struct TrimJob {
    io: IoId,
    below: Index,
}

/// State the node thread publishes for lock-free getters.
#[derive(Debug)]
pub(crate) struct Published {
    pub current_revision: AtomicI64,
    pub compact_revision: AtomicI64,
    pub applied_index: AtomicU64,
    pub term: AtomicU64,
    pub closed: AtomicBool,
    /// Another node took over the bucket: reads are refused too.
    pub fenced: AtomicBool,
    /// Cluster mode: role, leader, members as of the last loop turn.
    pub cluster: Mutex<Option<ClusterStatus>>,
    /// [`t4_core::Node::read_fast_until`] in [`Clock`] nanoseconds (`0`:
    /// every linearizable read asks the node; `u64::MAX`: none need to).
    pub read_fast_until: AtomicU64,
    /// The current revision, for waiters ([`crate::Node::wait_for_revision`]).
    /// The node thread owns the only sender, so the channel closes when that
    /// thread ends in any way (a panic included) and waiters are released.
    revision_rx: watch::Receiver<i64>,
}

impl Published {
    /// The published state and the sender of its revision channel (for
    /// [`spawn`]).
    pub(crate) fn new() -> (Published, watch::Sender<i64>) {
        let (tx, rx) = watch::channel(0);
        let published = Published {
            current_revision: AtomicI64::new(0),
            compact_revision: AtomicI64::new(0),
            applied_index: AtomicU64::new(0),
            term: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            read_fast_until: AtomicU64::new(0),
            cluster: Mutex::new(None),
            revision_rx: rx,
        };
        (published, tx)
    }

    /// A receiver of the current revision; it reports "closed" once the
    /// node thread has ended (after the last revision it published).
    pub(crate) fn subscribe_revision(&self) -> watch::Receiver<i64> {
        self.revision_rx.clone()
    }

    fn publish(&self, node: &t4_core::Node<RocksEngine>, revision_tx: &watch::Sender<i64>) {
        let meta = node.meta();
        self.current_revision
            .store(meta.current_revision, Ordering::Release);
        self.compact_revision
            .store(meta.compact_revision, Ordering::Release);
        self.applied_index
            .store(meta.applied_index, Ordering::Release);
        self.term.store(node.term().0, Ordering::Release);
        self.fenced
            .store(node.fenced().is_some(), Ordering::Release);
        self.read_fast_until
            .store(node.read_fast_until().map_or(0, |t| t.0), Ordering::Release);
        if let Some(role) = node.cluster_role() {
            let status = ClusterStatus {
                role,
                leader: node.leader(),
                members: node.members(),
                commit_index: node.commit_index().unwrap_or_default(),
                term: node.term(),
                uploaded: node.cluster_uploaded_through(),
            };
            let mut published = self.cluster.lock().expect("cluster status lock poisoned");
            if published.as_ref() != Some(&status) {
                *published = Some(status);
            }
        }
        revision_tx.send_if_modified(|rev| {
            let changed = *rev != meta.current_revision;
            *rev = meta.current_revision;
            changed
        });
    }
}

/// Starts the node and trim threads; returns the event sender and the join
/// handle of the node thread.
pub(crate) fn spawn(
    node: t4_core::Node<RocksEngine>,
    wal: Wal,
    clock: Clock,
    published: Arc<Published>,
    revision_tx: watch::Sender<i64>,
    bucket: Option<Bucket>,
    cluster: Option<ClusterStart>,
) -> std::io::Result<(mpsc::Sender<Event>, thread::JoinHandle<()>)> {
    let (events_tx, events_rx) = mpsc::channel::<Event>();
    let (trim_tx, trim_handle) = start_trim_thread(node.engine().clone(), events_tx.clone(), 0)?;
    let object_events = events_tx.clone();
    published.publish(&node, &revision_tx);
    let handle = thread::Builder::new()
        .name("t4-node".into())
        .spawn(move || {
            let (objects, mut start, checkpoints) = match bucket {
                Some(b) => (
                    Some((b.store, b.runtime, object_events)),
                    b.started.map(|started| (b.me, started)),
                    b.checkpoints,
                ),
                None => (None, None, PathBuf::new()),
            };
            let (outbox, mut hard_state, hard_state_dir, inbound, restart) = match cluster {
                Some(c) => (
                    Some(c.outbox),
                    Some(c.hard_state),
                    c.hard_state_dir,
                    Some(c.inbound),
                    Some(c.restart),
                ),
                None => (None, None, PathBuf::new(), None, None),
            };
            let status = Arc::clone(&published);
            let links = Links {
                outbox,
                hard_state_dir,
                inbound,
                objects,
                checkpoints,
                clock,
                published,
                revision_tx,
                next_req: 0,
                restart,
            };
            let mut thread = NodeThread::new(links, node, wal, trim_tx, 0);
            let mut trim_handle = trim_handle;
            loop {
                let (old, old_trim, behind) =
                    match thread.run(&events_rx, trim_handle, start.take(), hard_state.take()) {
                        Exit::Closed => break,
                        Exit::StartOver(old, old_trim, behind) => (old, old_trim, behind),
                    };
                match old.start_over(old_trim, behind) {
                    Ok((new, new_trim, state)) => {
                        thread = new;
                        trim_handle = new_trim;
                        hard_state = Some(state);
                    }
                    Err(why) => {
                        tracing::error!(%why, "starting this member over failed; the node stops \
                            (restart it: a start restores the checkpoint too)");
                        status.closed.store(true, Ordering::Release);
                        break;
                    }
                }
            }
        })?;
    Ok((events_tx, handle))
}

/// The node thread's state: the core node and where its outputs go.
struct NodeThread {
    /// What outlives the core node.
    links: Links,
    /// Bucket mode, while starting: told once the start-up is over.
    started: Option<oneshot::Sender<Result<(), String>>>,
    /// When `Close` arrived.
    closing_since: Option<Instant>,
    node: t4_core::Node<RocksEngine>,
    wal: Wal,
    /// Set by the first failed append or sync: later syncs must not report
    /// success (the failed entries may be missing from the file).
    wal_broken: Option<String>,
    /// The `SyncWal` to run once the current actions are executed.
    pending_sync: Option<(IoId, Term, Index)>,
    trim: mpsc::Sender<TrimJob>,
    /// Callers waiting for an answer, by request id.
    replies: HashMap<ReqId, ReplyTx>,
    /// Open watch streams and where their outputs go.
    streams: BTreeMap<StreamId, WatchTx>,
    closing: Option<oneshot::Sender<Result<(), String>>>,
    /// Counts the core nodes this thread ran (start-overs): completions of
    /// an earlier node's operations are dropped, not fed to the new one.
    generation: u64,
    /// The core asked to start over ([`Action::StartOver`]): why, and its
    /// log's last index.
    start_over: Option<(String, u64)>,
    /// After a start-over request the bucket did not confirm, later ones
    /// are ignored until then.
    start_over_quiet_until: Option<Instant>,
}

/// What outlives a core node on the node thread: kept when the member
/// starts over ([`NodeThread::start_over`]).
struct Links {
    /// Cluster mode: where peer messages go.
    outbox: Option<Outbox>,
    /// Cluster mode: where the hard state is saved.
    hard_state_dir: PathBuf,
    /// Cluster mode: peer messages queued for this thread.
    inbound: Option<Arc<AtomicUsize>>,
    /// Bucket mode: the store, the runtime its operations run on, and where
    /// they report.
    objects: Option<(
        Arc<dyn ObjectStore>,
        tokio::runtime::Handle,
        mpsc::Sender<Event>,
    )>,
    /// Bucket mode: where local checkpoints are made.
    checkpoints: PathBuf,
    clock: Clock,
    published: Arc<Published>,
    revision_tx: watch::Sender<i64>,
    next_req: u64,
    /// Cluster mode: how to start the member over.
    restart: Option<Restart>,
}

/// Why [`NodeThread::run`] returned.
enum Exit {
    /// Closed (or every handle dropped): the thread ends.
    Closed,
    /// The member starts over from a checkpoint ([`NodeThread::start_over`]).
    /// The `String` says why (the bucket's verdict).
    StartOver(Box<NodeThread>, thread::JoinHandle<()>, Behind),
}

/// How long a start-over request the bucket did not confirm silences later
/// ones (the core retries much less often than that anyway).
const START_OVER_QUIET: Duration = Duration::from_secs(60);

impl NodeThread {
    /// The thread state around a freshly opened core `node` (number
    /// `generation`) with nothing in flight.
    fn new(
        links: Links,
        node: t4_core::Node<RocksEngine>,
        wal: Wal,
        trim: mpsc::Sender<TrimJob>,
        generation: u64,
    ) -> NodeThread {
        NodeThread {
            links,
            started: None,
            closing_since: None,
            node,
            wal,
            wal_broken: None,
            pending_sync: None,
            trim,
            replies: HashMap::new(),
            streams: BTreeMap::new(),
            closing: None,
            generation,
            start_over: None,
            start_over_quiet_until: None,
        }
    }

    fn run(
        mut self,
        events: &mpsc::Receiver<Event>,
        trim_handle: thread::JoinHandle<()>,
        start: Option<(Member, oneshot::Sender<Result<(), String>>)>,
        hard_state: Option<HardState>,
    ) -> Exit {
        if let Some((me, started)) = start {
            self.node.start_bucket(self.links.clock.now(), me);
            self.started = Some(started);
            // Its first request goes out now, not at the first event.
            self.execute_actions();
        }
        if let Some(hard_state) = hard_state {
            self.node.start_cluster(self.links.clock.now(), hard_state);
            // The first lock read goes out now, not at the first event.
            self.execute_actions();
        }
        loop {
            // Wait for an event, but no longer than the core's next timer
            // (no timers while closing: nothing new should start then).
            let wait = match self.closing_since {
                Some(since) => Some(CLOSE_WAIT_MAX.saturating_sub(since.elapsed())),
                None => self
                    .node
                    .poll_timeout()
                    .map(|at| self.links.clock.until(at)),
            };
            let first = match wait {
                None => match events.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                },
                Some(wait) => match events.recv_timeout(wait) {
                    Ok(ev) => Some(ev),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut event = first;
            while let Some(ev) = event.take() {
                self.handle_event(ev);
                event = events.try_recv().ok();
            }
            self.fire_due_timers();
            loop {
                // Publish before any reply goes out: a caller that got an
                // answer at revision N must never read an older
                // `current_revision` afterwards.
                self.links
                    .published
                    .publish(&self.node, &self.links.revision_tx);
                self.execute_actions();
                let Some((io, term, through)) = self.pending_sync.take() else {
                    break;
                };
                let done = self.sync_wal(io, term, through);
                // What arrived during the fsync joins the queue first, so
                // that applying this batch starts the next one with all of it.
                while let Ok(ev) = events.try_recv() {
                    self.handle_event(ev);
                }
                self.node.handle_io(self.links.clock.now(), done);
                // Under a steady stream of writes this loop may not end for
                // a long time: timers (lease expiry, watch catch-up) must
                // still run.
                self.fire_due_timers();
            }
            if self.started.is_some() && !self.node.is_starting() {
                let result = self
                    .node
                    .failure()
                    .map_or(Ok(()), |why| Err(why.to_owned()));
                let _ = self.started.take().expect("checked above").send(result);
            }
            if let Some((why, last_index)) = self.start_over.take() {
                if self.closing.is_none() {
                    if let Some(why) = self.behind_the_bucket(&why) {
                        let behind = Behind { why, last_index };
                        return Exit::StartOver(Box::new(self), trim_handle, behind);
                    }
                }
            }
            if self.closing.is_some() {
                if self.node.is_idle() {
                    break;
                }
                if self
                    .closing_since
                    .is_some_and(|at| at.elapsed() >= CLOSE_WAIT_MAX)
                {
                    tracing::warn!(
                        pending = self.node.pending_len(),
                        "closing with work still in flight (its fsynced entries are uploaded at the next start)"
                    );
                    break;
                }
            }
        }
        self.shut_down(trim_handle);
        Exit::Closed
    }

    /// Why the bucket confirms that this member cannot catch up and a
    /// checkpoint ahead of it can start it over (the start-up check,
    /// `crate::node::behind_the_bucket`); if it does not, start-over
    /// requests are ignored for [`START_OVER_QUIET`]. Blocks this thread
    /// for a few object reads: the member is stuck anyway.
    fn behind_the_bucket(&mut self, why: &str) -> Option<String> {
        if self
            .start_over_quiet_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let (Some(restart), Some((store, runtime, _))) = (&self.links.restart, &self.links.objects)
        else {
            return None;
        };
        let applied = self.node.meta().applied_index;
        let verdict = runtime.block_on(crate::node::behind_the_bucket(
            &restart.config,
            &**store,
            || Ok(applied),
        ));
        match verdict {
            Ok(Some(behind)) => {
                tracing::warn!(%why, %behind, "this member cannot catch up: starting it over \
                    from the bucket's newest checkpoint (its engine and WAL are moved aside)");
                Some(behind)
            }
            Ok(None) => {
                tracing::warn!(%why, "this member cannot catch up, but the bucket has no \
                    checkpoint ahead of it to start over from; waiting");
                self.start_over_quiet_until = Some(Instant::now() + START_OVER_QUIET);
                None
            }
            Err(e) => {
                tracing::warn!(%why, error = %e, "cannot check the bucket before starting \
                    this member over; trying again later");
                self.start_over_quiet_until = Some(Instant::now() + START_OVER_QUIET);
                None
            }
        }
    }

    /// Starts the member over at run time, as a start without an engine
    /// would: callers waiting for an answer get a retryable error, watch
    /// streams end (clients watch again from their last revision), the
    /// core node, its WAL and the engine are closed (once readers let go of
    /// the engine), then `crate::node::restore_if_missing`, told why the
    /// engine is `behind` (it does not ask the bucket again), moves them
    /// aside and restores the newest checkpoint (keeping the hard state if
    /// it covers the whole log), and a new core node opens on it and
    /// follows the leader again, or rejoins as a new member. Completions
    /// of the old node's operations still in flight are dropped
    /// ([`NodeThread::generation`]); requests and peer messages that
    /// arrive meanwhile wait in the channel.
    /// Returns the new thread state, its trim thread and its hard state.
    fn start_over(
        mut self,
        trim_handle: thread::JoinHandle<()>,
        behind: Behind,
    ) -> Result<(NodeThread, thread::JoinHandle<()>, HardState), String> {
        for (_, tx) in self.replies.drain() {
            let _ = tx.send(Err(Error::Unavailable(
                "this member is starting over from a checkpoint; retry".into(),
            )));
        }
        self.streams.clear();
        let (closed_tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.trim, closed_tx));
        if trim_handle.join().is_err() {
            tracing::error!("the trim thread panicked");
        }
        let NodeThread {
            mut links,
            node,
            wal,
            generation,
            ..
        } = self;
        let restart = links.restart.take().expect("cluster mode");
        let (store, runtime, events) = links.objects.clone().expect("cluster mode has a bucket");
        let engine = node.engine().clone();
        restart.engine.write().expect("engine lock poisoned").take();
        drop(node);
        drop(wal);
        // Readers (a snapshot stream may take a while) hold the engine;
        // it must be closed before its directory is moved.
        let waiting = Instant::now();
        let mut warned = waiting;
        while engine.handles() > 1 {
            if warned.elapsed() >= Duration::from_secs(10) {
                tracing::warn!(
                    waited_s = waiting.elapsed().as_secs(),
                    "starting over waits for readers to let go of the engine"
                );
                warned = Instant::now();
            }
            thread::sleep(Duration::from_millis(20));
        }
        drop(engine);
        runtime
            .block_on(crate::node::restore_if_missing(
                &restart.config,
                &*store,
                Some(behind),
            ))
            .map_err(|e| e.to_string())?;
        let (node, wal) =
            crate::node::open_core(&restart.config, links.clock).map_err(|e| e.to_string())?;
        let hard_state =
            crate::node::load_hard_state(&restart.config.data_dir).map_err(|e| e.to_string())?;
        let generation = generation + 1;
        let (trim, trim_handle) = start_trim_thread(node.engine().clone(), events, generation)
            .map_err(|e| format!("cannot start the trim thread: {e}"))?;
        *restart.engine.write().expect("engine lock poisoned") = Some(node.engine().clone());
        links.published.publish(&node, &links.revision_tx);
        links.restart = Some(restart);
        Ok((
            NodeThread::new(links, node, wal, trim, generation),
            trim_handle,
            hard_state,
        ))
    }

    /// Calls the core's `handle_timeout` if its next timer is due (never
    /// while closing: nothing new should start then).
    fn fire_due_timers(&mut self) {
        if self.closing.is_some() {
            return;
        }
        if let Some(at) = self.node.poll_timeout() {
            let now = self.links.clock.now();
            if at <= now {
                self.node.handle_timeout(now);
            }
        }
    }

    /// Runs a `SyncWal`: fdatasync, unless an earlier write failed.
    fn sync_wal(&mut self, io: IoId, term: Term, through: Index) -> IoDone {
        let result = match &self.wal_broken {
            Some(why) => Err(why.clone()),
            None => self.wal.sync().map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => IoDone::WalSynced { io, term, through },
            Err(error) => {
                self.wal_broken.get_or_insert_with(|| error.clone());
                IoDone::WalFailed { io, term, error }
            }
        }
    }

    /// Runs a `ResetWal`: persist the engine, then start the WAL afresh.
    fn reset_wal(&mut self, next: Index) -> Result<(), String> {
        if let Some(why) = &self.wal_broken {
            return Err(why.clone());
        }
        self.node.engine().persist().map_err(|e| e.to_string())?;
        self.wal
            .reset(next, self.node.term())
            .map_err(|e| e.to_string())
    }

    /// Runs a `TruncateWal` (durable when it returns; no completion on
    /// success). A sync queued for this turn covered entries that are gone:
    /// core forgot it already, and the truncation fsynced what is kept.
    fn truncate_wal(&mut self, io: IoId, term: Term, after: Index) {
        self.pending_sync = None;
        let result = match &self.wal_broken {
            Some(why) => Err(why.clone()),
            None => self.wal.truncate_after(after).map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => tracing::info!(after = after.0, "truncated the WAL's conflicting tail"),
            Err(error) => {
                self.wal_broken.get_or_insert_with(|| error.clone());
                self.node.handle_io(
                    self.links.clock.now(),
                    IoDone::WalFailed { io, term, error },
                );
            }
        }
    }

    /// Runs an `AppendWal` (a write, no fsync); a failure is fed back to the
    /// node at once.
    fn append_wal(&mut self, io: IoId, term: Term, entries: &[Entry]) {
        if self.wal_broken.is_some() {
            return;
        }
        if let Err(e) = self.wal.append(entries) {
            let error = e.to_string();
            self.wal_broken = Some(error.clone());
            self.node.handle_io(
                self.links.clock.now(),
                IoDone::WalFailed { io, term, error },
            );
        }
    }

    fn handle_event(&mut self, ev: Event) {
        let now = self.links.clock.now();
        match ev {
            Event::Client(request, reply) => {
                if self.closing.is_some() {
                    let _ = reply.send(Err(Error::Unavailable("node is closing".into())));
                } else {
                    self.links.next_req += 1;
                    // Ids from REMOTE_REQ_BASE up are the core's own, for
                    // requests followers forward to it.
                    assert!(
                        self.links.next_req < t4_core::node::REMOTE_REQ_BASE,
                        "client request ids must stay below REMOTE_REQ_BASE: {}",
                        self.links.next_req
                    );
                    let req = ReqId(self.links.next_req);
                    self.replies.insert(req, reply);
                    self.node.handle_client(now, req, request);
                }
            }
            Event::OpenWatchStream { stream, tx } => {
                let previous = self.streams.insert(stream, tx);
                assert!(
                    previous.is_none(),
                    "watch stream {stream:?} opened twice (ids come from one counter)"
                );
                self.node
                    .handle_watch(now, WatchInput::OpenStream { stream });
            }
            Event::Watch(input) => {
                if let WatchInput::CloseStream { stream } = &input {
                    self.streams.remove(stream);
                }
                self.node.handle_watch(now, input);
            }
            Event::Persisted { generation, .. }
            | Event::ObjectDone { generation, .. }
            | Event::CheckpointTaken { generation, .. }
                if generation != self.generation =>
            {
                tracing::debug!(generation, "dropping a completion for a node started over");
            }
            Event::Persisted {
                io, below, result, ..
            } => {
                let result = result.and_then(|()| {
                    self.wal
                        .remove_segments_before(below)
                        .map_err(|e| e.to_string())
                });
                match &result {
                    Ok(removed) => tracing::debug!(removed, below = below.0, "trimmed WAL"),
                    Err(error) => tracing::warn!(%error, "WAL trim failed"),
                }
                let error = result.err();
                self.node.handle_io(now, IoDone::WalTrimmed { io, error });
            }
            Event::ObjectDone {
                io, term, result, ..
            } => {
                self.node
                    .handle_io(now, IoDone::Object { io, term, result });
            }
            Event::CheckpointTaken { io, result, .. } => {
                self.node
                    .handle_io(now, IoDone::CheckpointTaken { io, result });
            }
            Event::Peer { from, msg } => {
                if let Some(inbound) = &self.links.inbound {
                    inbound.fetch_sub(1, Ordering::AcqRel);
                }
                // Fed while closing too: answers to forwarded requests
                // come this way.
                self.node.handle_peer(now, &from, msg);
            }
            Event::Close(done) => {
                // Asynchronous upload: what is acknowledged goes to the
                // bucket before the node stops (within CLOSE_WAIT_MAX).
                self.node.flush_uploads(now);
                self.links.published.closed.store(true, Ordering::Release);
                self.closing = Some(done);
                self.closing_since = Some(Instant::now());
            }
        }
    }

    fn execute_actions(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::AppendWal { io, term, entries } => self.append_wal(io, term, &entries),
                Action::SyncWal { io, term, through } => {
                    // Run once every other action went out (see the docs).
                    assert!(
                        self.pending_sync.is_none(),
                        "core has one WAL batch in flight at a time"
                    );
                    self.pending_sync = Some((io, term, through));
                }
                Action::TrimWal { io, below } => {
                    if self.trim.send(TrimJob { io, below }).is_err() {
                        let error = Some("the trim thread is gone".to_owned());
                        self.node
                            .handle_io(self.links.clock.now(), IoDone::WalTrimmed { io, error });
                    }
                }
                Action::Reply { req, result } => {
                    // A caller that gave up has dropped its receiver; its
                    // entry stays in the log all the same (no holes).
                    if let Some(tx) = self.replies.remove(&req) {
                        let _ = tx.send(result);
                    }
                }
                Action::Object { io, term, op } => self.run_object(io, term, move |store| {
                    Box::pin(async move { store.execute(op).await })
                }),
                Action::TakeCheckpoint { io, term, index } => self.take_checkpoint(io, term, index),
                Action::UploadCheckpointFile {
                    io,
                    term,
                    index,
                    name,
                    key,
                    condition,
                } => {
                    let dir = checkpoint::local_dir(&self.links.checkpoints, term, index);
                    self.run_object(io, term, move |store| {
                        Box::pin(async move {
                            checkpoint::upload_file(&*store, &dir, &name, key, condition).await
                        })
                    });
                }
                Action::DropCheckpoint { term, index } => {
                    let dir = checkpoint::local_dir(&self.links.checkpoints, term, index);
                    // Off the node thread: a large folder takes a while.
                    let _ = thread::Builder::new()
                        .name("t4-ckpt-drop".into())
                        .spawn(move || {
                            if let Err(e) = std::fs::remove_dir_all(&dir) {
                                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a local checkpoint");
                            }
                        });
                }
                Action::ReadWal { io, from, through } => {
                    // Applied entries (a start-up; a cluster leader
                    // uploading what its memory let go of): written before
                    // they applied, so whole in the files whatever is being
                    // appended after them, on this same thread.
                    let result = self
                        .wal
                        .read_range(from, through)
                        .map_err(|e| e.to_string());
                    self.node
                        .handle_io(self.links.clock.now(), IoDone::WalRead { io, result });
                }
                Action::Send { to, msg } => match &mut self.links.outbox {
                    Some(outbox) => outbox.send(&to, msg),
                    None => unreachable!("core sends peer messages only in cluster mode"),
                },
                Action::TruncateWal { io, term, after } => self.truncate_wal(io, term, after),
                Action::SaveHardState { io, state } => {
                    let error =
                        crate::hard_state::save(&self.links.hard_state_dir, &state.encode())
                            .err()
                            .map(|e| e.to_string());
                    if let Some(error) = &error {
                        tracing::error!(%error, ?state, "cannot save the hard state");
                    }
                    self.node
                        .handle_io(self.links.clock.now(), IoDone::HardStateSaved { io, error });
                }
                Action::StartOver { why, last_index } => {
                    if self.links.restart.is_some() {
                        self.start_over.get_or_insert((why, last_index.0));
                    }
                }
                Action::ResetWal { io, next } => {
                    let error = self.reset_wal(next).err();
                    self.node
                        .handle_io(self.links.clock.now(), IoDone::WalReset { io, error });
                }
                Action::Watch(output) => {
                    // A stream whose receiver is gone has sent (or is about
                    // to send) CloseStream; its outputs are dropped.
                    if let Some(tx) = self.streams.get(&output.stream) {
                        let _ = tx.send(output);
                    }
                }
            }
        }
    }

    /// Runs one object operation on the runtime; it reports
    /// [`Event::ObjectDone`].
    fn run_object(
        &mut self,
        io: IoId,
        term: Term,
        op: impl FnOnce(Arc<dyn ObjectStore>) -> BoxFuture<'static, ObjectResult> + Send + 'static,
    ) {
        match &self.links.objects {
            Some((store, runtime, events)) => {
                let store = Arc::clone(store);
                let events = events.clone();
                let generation = self.generation;
                runtime.spawn(async move {
                    let result = op(store).await;
                    // The node thread may be gone (closed): fine.
                    let _ = events.send(Event::ObjectDone {
                        generation,
                        io,
                        term,
                        result,
                    });
                });
            }
            None => {
                let result = Err(ObjectError::Failed("no object store configured".into()));
                self.node
                    .handle_io(self.links.clock.now(), IoDone::Object { io, term, result });
            }
        }
    }

    /// Runs a `TakeCheckpoint`: the RocksDB checkpoint now (the engine is
    /// at the index named), the hashing on a thread of its own.
    fn take_checkpoint(&mut self, io: IoId, term: Term, index: Index) {
        let dir = checkpoint::local_dir(&self.links.checkpoints, term, index);
        if let Err(why) = checkpoint::take(self.node.engine(), &dir) {
            let result = Err(why);
            return self.node.handle_io(
                self.links.clock.now(),
                IoDone::CheckpointTaken { io, result },
            );
        }
        let Some((_, _, events)) = &self.links.objects else {
            let result = Err("no object store configured".to_owned());
            return self.node.handle_io(
                self.links.clock.now(),
                IoDone::CheckpointTaken { io, result },
            );
        };
        let events = events.clone();
        let generation = self.generation;
        let spawned = thread::Builder::new()
            .name("t4-ckpt-hash".into())
            .spawn(move || {
                let result = checkpoint::hash_folder(&dir).map(|files| TakenCheckpoint {
                    files,
                    created_unix_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                });
                let _ = events.send(Event::CheckpointTaken {
                    generation,
                    io,
                    result,
                });
            });
        if let Err(e) = spawned {
            let result = Err(format!("cannot start the hashing thread: {e}"));
            self.node.handle_io(
                self.links.clock.now(),
                IoDone::CheckpointTaken { io, result },
            );
        }
    }

    /// Graceful end: everything acknowledged is already synced; sync and
    /// persist once more so the next start replays nothing.
    fn shut_down(mut self, trim_handle: thread::JoinHandle<()>) {
        // Watchers see their streams end; waiters for a revision learn the
        // node is gone (dropping `self` drops the revision sender, at the
        // latest; a panic drops it too).
        self.streams.clear();
        self.links.published.closed.store(true, Ordering::Release);
        // Joining makes "the node thread ended" imply "no driver thread holds
        // the engine any more", so the data dir can be reopened. The trim
        // thread ends once its channel closes (after a trim in progress).
        let (closed_tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.trim, closed_tx));
        if trim_handle.join().is_err() {
            tracing::error!("the trim thread panicked");
        }
        let result = match &self.wal_broken {
            Some(why) => Err(why.clone()),
            None => self
                .wal
                .sync()
                .map_err(|e| e.to_string())
                .and_then(|()| self.node.engine().persist().map_err(|e| e.to_string())),
        };
        if let Err(why) = &result {
            tracing::error!(%why, "closing the WAL failed");
        }
        for (_, tx) in self.replies.drain() {
            let _ = tx.send(Err(Error::Unavailable("node closed".into())));
        }
        if let Some(done) = self.closing.take() {
            let _ = done.send(result);
        }
    }
}

/// Starts the trim thread of the core node `generation` (see the module
/// docs); it ends once its job sender is dropped.
fn start_trim_thread(
    engine: RocksEngine,
    events: mpsc::Sender<Event>,
    generation: u64,
) -> std::io::Result<(mpsc::Sender<TrimJob>, thread::JoinHandle<()>)> {
    let (jobs_tx, jobs) = mpsc::channel::<TrimJob>();
    let handle = thread::Builder::new()
        .name("t4-trim".into())
        .spawn(move || {
            while let Ok(TrimJob { io, below }) = jobs.recv() {
                let result = engine.persist().map_err(|e| e.to_string());
                let _ = events.send(Event::Persisted {
                    generation,
                    io,
                    below,
                    result,
                });
            }
        })?;
    Ok((jobs_tx, handle))
}
