//! The thin driver: runs a core [`t4_core::Node`] and executes its actions.
//!
//! It decides nothing. Two OS threads:
//!
//! - the **node thread** owns the core node. It waits on one event channel
//!   (client requests, watch inputs, I/O completions, close) until the core's
//!   next timer ([`t4_core::Node::poll_timeout`]) is due, feeds each event to
//!   the node, drains every event already waiting (so a burst is handled
//!   before the next action is executed), calls
//!   [`t4_core::Node::handle_timeout`] if the timer is due, then executes the
//!   node's actions: WAL work goes to the WAL thread, replies go to the
//!   waiting callers, watch outputs go to their stream's channel.
//! - the **WAL thread** owns the [`Wal`] files. It executes appends, fsyncs
//!   and trims in the order the node issued them and reports completions as
//!   events. While it fsyncs, the node thread keeps accepting writes, which
//!   is what lets the next batch accumulate (group commit).
//!
//! Reads never pass through either thread: callers take an engine snapshot.
//!
//! # Time
//!
//! One monotonic origin ([`Clock`], an `Instant` taken when the node opens)
//! gives every `now` the core sees, from recovery on: lease expiry and
//! watch progress timers are measured on it. Wall-clock time never reaches
//! the core.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use t4_core::log::Entry;
use t4_core::watch::{StreamId, WatchInput, WatchOutput};
use t4_core::{
    Action, ClientRequest, Error, Index, IoDone, IoId, KvEngine, ReqId, Response, Term, Time,
};

use crate::engine::RocksEngine;
use crate::wal::Wal;

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
    /// A WAL job finished.
    Io(IoDone),
    /// Stop accepting writes, finish what is in flight, persist, exit.
    Close(oneshot::Sender<Result<(), String>>),
}

/// Jobs for the WAL thread, executed in order.
enum WalJob {
    Append {
        io: IoId,
        term: Term,
        entries: Vec<Entry>,
    },
    Sync {
        io: IoId,
        term: Term,
        through: Index,
    },
    Trim {
        io: IoId,
        below: Index,
    },
    Stop(mpsc::Sender<Result<(), String>>),
}

/// State the node thread publishes for lock-free getters.
#[derive(Debug)]
pub(crate) struct Published {
    pub current_revision: AtomicI64,
    pub compact_revision: AtomicI64,
    pub applied_index: AtomicU64,
    pub term: AtomicU64,
    pub closed: AtomicBool,
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
        revision_tx.send_if_modified(|rev| {
            let changed = *rev != meta.current_revision;
            *rev = meta.current_revision;
            changed
        });
    }
}

/// Starts the node and WAL threads; returns the event sender and the join
/// handle of the node thread.
pub(crate) fn spawn(
    node: t4_core::Node<RocksEngine>,
    wal: Wal,
    clock: Clock,
    published: Arc<Published>,
    revision_tx: watch::Sender<i64>,
) -> std::io::Result<(mpsc::Sender<Event>, thread::JoinHandle<()>)> {
    let (events_tx, events_rx) = mpsc::channel::<Event>();
    let (wal_tx, wal_rx) = mpsc::channel::<WalJob>();
    let engine = node.engine().clone();
    let wal_events = events_tx.clone();
    let wal_handle = thread::Builder::new()
        .name("t4-wal".into())
        .spawn(move || wal_thread(wal, engine, wal_rx, wal_events))?;
    published.publish(&node, &revision_tx);
    let handle = thread::Builder::new()
        .name("t4-node".into())
        .spawn(move || {
            NodeThread {
                node,
                clock,
                wal: wal_tx,
                published,
                revision_tx,
                replies: HashMap::new(),
                streams: BTreeMap::new(),
                next_req: 0,
                closing: None,
            }
            .run(&events_rx, wal_handle);
        })?;
    Ok((events_tx, handle))
}

/// The node thread's state: the core node and where its outputs go.
struct NodeThread {
    node: t4_core::Node<RocksEngine>,
    clock: Clock,
    wal: mpsc::Sender<WalJob>,
    published: Arc<Published>,
    revision_tx: watch::Sender<i64>,
    /// Callers waiting for an answer, by request id.
    replies: HashMap<ReqId, ReplyTx>,
    /// Open watch streams and where their outputs go.
    streams: BTreeMap<StreamId, WatchTx>,
    next_req: u64,
    closing: Option<oneshot::Sender<Result<(), String>>>,
}

impl NodeThread {
    fn run(mut self, events: &mpsc::Receiver<Event>, wal_handle: thread::JoinHandle<()>) {
        loop {
            // Wait for an event, but no longer than the core's next timer
            // (no timers while closing: nothing new should start then).
            let deadline = if self.closing.is_some() {
                None
            } else {
                self.node.poll_timeout()
            };
            let first = match deadline {
                None => match events.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                },
                Some(at) => match events.recv_timeout(self.clock.until(at)) {
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
            if self.closing.is_none() {
                if let Some(at) = self.node.poll_timeout() {
                    let now = self.clock.now();
                    if at <= now {
                        self.node.handle_timeout(now);
                    }
                }
            }
            // Publish before any reply goes out: a caller that got an answer
            // at revision N must never read an older `current_revision`
            // afterwards.
            self.published.publish(&self.node, &self.revision_tx);
            self.execute_actions();
            if self.closing.is_some() && self.node.is_idle() {
                break;
            }
        }
        self.shut_down(wal_handle);
    }

    fn handle_event(&mut self, ev: Event) {
        let now = self.clock.now();
        match ev {
            Event::Client(request, reply) => {
                if self.closing.is_some() {
                    let _ = reply.send(Err(Error::Unavailable("node is closing".into())));
                } else {
                    self.next_req += 1;
                    let req = ReqId(self.next_req);
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
            Event::Io(done) => self.node.handle_io(now, done),
            Event::Close(done) => {
                self.published.closed.store(true, Ordering::Release);
                self.closing = Some(done);
            }
        }
    }

    fn execute_actions(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::AppendWal { io, term, entries } => {
                    let _ = self.wal.send(WalJob::Append { io, term, entries });
                }
                Action::SyncWal { io, term, through } => {
                    let _ = self.wal.send(WalJob::Sync { io, term, through });
                }
                Action::TrimWal { io, below } => {
                    let _ = self.wal.send(WalJob::Trim { io, below });
                }
                Action::Reply { req, result } => {
                    // A caller that gave up has dropped its receiver; its
                    // entry stays in the log all the same (no holes).
                    if let Some(tx) = self.replies.remove(&req) {
                        let _ = tx.send(result);
                    }
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

    /// Graceful end: everything acknowledged is already synced; sync and
    /// persist once more so the next start replays nothing.
    fn shut_down(mut self, wal_handle: thread::JoinHandle<()>) {
        // Watchers see their streams end; waiters for a revision learn the
        // node is gone (dropping `self` drops the revision sender, at the
        // latest; a panic drops it too).
        self.streams.clear();
        self.published.closed.store(true, Ordering::Release);
        let (stopped_tx, stopped_rx) = mpsc::channel();
        let result = if self.wal.send(WalJob::Stop(stopped_tx)).is_ok() {
            stopped_rx
                .recv()
                .unwrap_or_else(|_| Err("WAL thread ended unexpectedly".into()))
        } else {
            Err("WAL thread ended unexpectedly".into())
        };
        // Joining makes "the node thread ended" imply "no driver thread holds
        // the engine or the WAL any more", so the data dir can be reopened.
        if wal_handle.join().is_err() {
            tracing::error!("the WAL thread panicked");
        }
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

fn wal_thread(
    mut wal: Wal,
    engine: RocksEngine,
    jobs: mpsc::Receiver<WalJob>,
    events: mpsc::Sender<Event>,
) {
    // Once an append failed, later syncs must not report success: the
    // failed entries may be missing from the file.
    let mut broken: Option<String> = None;
    while let Ok(job) = jobs.recv() {
        match job {
            WalJob::Append { io, term, entries } => {
                if broken.is_some() {
                    continue;
                }
                if let Err(e) = wal.append(&entries) {
                    let error = e.to_string();
                    broken = Some(error.clone());
                    let _ = events.send(Event::Io(IoDone::WalFailed { io, term, error }));
                }
            }
            WalJob::Sync { io, term, through } => {
                let result = match &broken {
                    Some(why) => Err(why.clone()),
                    None => wal.sync().map_err(|e| e.to_string()),
                };
                let done = match result {
                    Ok(()) => IoDone::WalSynced { io, term, through },
                    Err(error) => {
                        broken.get_or_insert_with(|| error.clone());
                        IoDone::WalFailed { io, term, error }
                    }
                };
                let _ = events.send(Event::Io(done));
            }
            WalJob::Trim { io, below } => {
                let result = engine
                    .persist()
                    .map_err(|e| e.to_string())
                    .and_then(|()| wal.remove_segments_before(below).map_err(|e| e.to_string()));
                match &result {
                    Ok(removed) => tracing::debug!(removed, below = below.0, "trimmed WAL"),
                    Err(error) => tracing::warn!(%error, "WAL trim failed"),
                }
                let error = result.err();
                let _ = events.send(Event::Io(IoDone::WalTrimmed { io, error }));
            }
            WalJob::Stop(done) => {
                let result = match &broken {
                    Some(why) => Err(why.clone()),
                    None => wal
                        .sync()
                        .map_err(|e| e.to_string())
                        .and_then(|()| engine.persist().map_err(|e| e.to_string())),
                };
                let _ = done.send(result);
                return;
            }
        }
    }
}
