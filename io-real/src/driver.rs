//! The thin driver: runs a core [`t4_core::Node`] and executes its actions.
//!
//! It decides nothing. Two OS threads:
//!
//! - the **node thread** owns the core node. It blocks on one event channel
//!   (client writes, I/O completions, close), feeds each event to the node,
//!   drains every event already waiting (so a burst is handled before the
//!   next action is executed), then executes the node's actions: WAL work goes
//!   to the WAL thread, replies go to the waiting callers.
//! - the **WAL thread** owns the [`Wal`] files. It executes appends, fsyncs
//!   and trims in the order the node issued them and reports completions as
//!   events. While it fsyncs, the node thread keeps accepting writes, which
//!   is what lets the next batch accumulate (group commit).
//!
//! Reads never pass through either thread: callers take an engine snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use t4_core::kv::WriteRequest;
use t4_core::log::Entry;
use t4_core::{
    Action, ClientRequest, Error, Index, IoDone, IoId, KvEngine, ReqId, Response, Term, Time,
};

use crate::engine::RocksEngine;
use crate::wal::Wal;

/// The answer channel of one write.
pub(crate) type ReplyTx = oneshot::Sender<Result<Response, Error>>;

/// What the node thread reacts to.
pub(crate) enum Event {
    /// A client write.
    Write(WriteRequest, ReplyTx),
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
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub current_revision: AtomicI64,
    pub compact_revision: AtomicI64,
    pub applied_index: AtomicU64,
    pub term: AtomicU64,
    pub closed: AtomicBool,
}

impl Published {
    fn publish(&self, node: &t4_core::Node<RocksEngine>) {
        let meta = node.meta();
        self.current_revision
            .store(meta.current_revision, Ordering::Release);
        self.compact_revision
            .store(meta.compact_revision, Ordering::Release);
        self.applied_index
            .store(meta.applied_index, Ordering::Release);
        self.term.store(node.term().0, Ordering::Release);
    }
}

/// Starts the node and WAL threads; returns the event sender and the join
/// handle of the node thread.
pub(crate) fn spawn(
    node: t4_core::Node<RocksEngine>,
    wal: Wal,
    published: Arc<Published>,
) -> std::io::Result<(mpsc::Sender<Event>, thread::JoinHandle<()>)> {
    let (events_tx, events_rx) = mpsc::channel::<Event>();
    let (wal_tx, wal_rx) = mpsc::channel::<WalJob>();
    let engine = node.engine().clone();
    let wal_events = events_tx.clone();
    let wal_handle = thread::Builder::new()
        .name("t4-wal".into())
        .spawn(move || wal_thread(wal, engine, wal_rx, wal_events))?;
    published.publish(&node);
    let handle = thread::Builder::new()
        .name("t4-node".into())
        .spawn(move || node_thread(node, events_rx, wal_tx, wal_handle, published))?;
    Ok((events_tx, handle))
}

fn node_thread(
    mut node: t4_core::Node<RocksEngine>,
    events: mpsc::Receiver<Event>,
    wal: mpsc::Sender<WalJob>,
    wal_handle: thread::JoinHandle<()>,
    published: Arc<Published>,
) {
    let start = Instant::now();
    let now = || Time(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut replies: HashMap<ReqId, ReplyTx> = HashMap::new();
    let mut next_req = 0u64;
    let mut closing: Option<oneshot::Sender<Result<(), String>>> = None;

    while let Ok(first) = events.recv() {
        let mut event = Some(first);
        while let Some(ev) = event.take() {
            match ev {
                Event::Write(write, reply) => {
                    if closing.is_some() {
                        let _ = reply.send(Err(Error::Unavailable("node is closing".into())));
                    } else {
                        next_req += 1;
                        let req = ReqId(next_req);
                        replies.insert(req, reply);
                        node.handle_client(now(), req, ClientRequest::Write(write));
                    }
                }
                Event::Io(done) => node.handle_io(now(), done),
                Event::Close(done) => {
                    published.closed.store(true, Ordering::Release);
                    closing = Some(done);
                }
            }
            event = events.try_recv().ok();
        }
        // Publish before any reply goes out: a caller that got an answer at
        // revision N must never read an older `current_revision` afterwards.
        published.publish(&node);
        while let Some(action) = node.poll_action() {
            match action {
                Action::AppendWal { io, term, entries } => {
                    let _ = wal.send(WalJob::Append { io, term, entries });
                }
                Action::SyncWal { io, term, through } => {
                    let _ = wal.send(WalJob::Sync { io, term, through });
                }
                Action::TrimWal { io, below } => {
                    let _ = wal.send(WalJob::Trim { io, below });
                }
                Action::Reply { req, result } => {
                    // A caller that gave up has dropped its receiver; its
                    // entry stays in the log all the same (no holes).
                    if let Some(tx) = replies.remove(&req) {
                        let _ = tx.send(result);
                    }
                }
                Action::Watch(_) => {
                    // Watch streams are not wired up yet.
                }
            }
        }
        if closing.is_some() && node.is_idle() {
            break;
        }
    }

    // Graceful end: everything acknowledged is already synced; sync and
    // persist once more so the next start replays nothing.
    let (stopped_tx, stopped_rx) = mpsc::channel();
    let result = if wal.send(WalJob::Stop(stopped_tx)).is_ok() {
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
    for (_, tx) in replies.drain() {
        let _ = tx.send(Err(Error::Unavailable("node closed".into())));
    }
    if let Some(done) = closing {
        let _ = done.send(result);
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
