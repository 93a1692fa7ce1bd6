//! The embedding API: an async handle on a running node.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread;

use tokio::sync::oneshot;

use t4_core::kv::{
    AlarmAction, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse, WatchCreateRequest, WriteRequest, WriteResponse,
};
use t4_core::lease::LeaseConfig;
use t4_core::node::BucketConfig;
use t4_core::watch::{StreamId, WatchConfig};
use t4_core::{mvcc, ClientRequest, Error, Index, KvEngine, NodeConfig, NodeId, Response, Term};

use t4_core::bucket::lock::Member;
use t4_core::cluster::{ClusterConfig, HardState, StartOverKeep};

use crate::config::{ClusterOptions, Config, ReadConsistency};
use crate::driver::{self, Clock, Event, Published};
use crate::engine::{RocksEngine, RocksOptions};
use crate::peer;
use crate::snapshot::SnapshotStream;
use crate::wal::Wal;
use crate::watch_stream::WatchStream;

/// Why a node could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The engine cannot be opened or read.
    #[error(transparent)]
    Engine(#[from] t4_core::engine::EngineError),
    /// The WAL cannot be opened (including mid-log corruption).
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    /// A driver thread cannot be started.
    #[error("cannot start driver threads: {0}")]
    Spawn(std::io::Error),
    /// The object store cannot be opened or reached.
    #[error(transparent)]
    ObjectStore(#[from] crate::object::OpenStoreError),
    /// Bucket mode: the node refused to start (a hole or corruption in the
    /// bucket's WAL, local state ahead of the bucket …); the message says
    /// what is missing.
    #[error("refusing to start: {0}")]
    Start(String),
    /// The configuration cannot work (the message says which setting).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Cluster mode: the peer listener cannot be bound.
    #[error("cannot listen for peers on {addr}: {source}")]
    PeerListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Cluster mode: the peer mTLS files cannot be used (the message names
    /// the file and what is wrong).
    #[error(transparent)]
    PeerTls(#[from] peer::TlsError),
    /// Cluster mode: the hard state (the highest term this node promised)
    /// cannot be read or is damaged. Starting as if nothing had been
    /// promised could let this node promise twice in one term, so the
    /// node refuses to start; the message names the file.
    #[error("cannot load the hard state: {0}")]
    HardState(String),
}

/// Cluster mode: what this node knows of the cluster (published by the
/// node thread; lock-free of the node thread to read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's role.
    pub role: t4_core::node::ClusterRole,
    /// The leader this node knows of (itself when leading).
    pub leader: Option<Member>,
    /// The voting members, as of the last lock this node read or wrote.
    pub members: Vec<Member>,
    /// The commit index this node knows.
    pub commit_index: Index,
    /// The current term.
    pub term: Term,
    /// The last index this node knows the bucket's WAL holds (the
    /// disaster-recovery tier; `None` without it).
    pub uploaded: Option<Index>,
}

/// A snapshot of a node's progress, for status endpoints. Lock-free to
/// read; raised alarms are not here (they live on the node thread): ask
/// [`Node::alarm`] with `AlarmAction::Get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Current revision.
    pub current_revision: i64,
    /// Compaction watermark.
    pub compact_revision: i64,
    /// Last applied log index.
    pub applied_index: Index,
    /// Current term.
    pub term: Term,
    /// Approximate size of the engine's files in bytes (etcd `dbSize`).
    pub db_size_bytes: u64,
    /// Estimated bytes of live data, without deleted or overwritten
    /// versions awaiting compaction (etcd `dbSizeInUse`).
    pub db_size_in_use_bytes: u64,
}

struct Inner {
    config: Config,
    member_id: NodeId,
    /// `None` once closed, so the database is released and can be reopened
    /// (snapshots still being read keep it alive until they are dropped).
    /// Shared with the node thread, which swaps it when the member starts
    /// over from a checkpoint (`None` meanwhile, and once closed).
    engine: driver::EngineSlot,
    /// The clock the node thread gives the core (read-lease checks).
    clock: Clock,
    events: mpsc::Sender<Event>,
    published: Arc<Published>,
    node_thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// Source of watch stream ids (unique for the node's lifetime).
    next_stream: AtomicU64,
    /// Cluster mode: the peer listener, stopped at close.
    peer_listener: Mutex<Option<peer::Listener>>,
    /// Cluster mode: peer messages sent to the node thread, not yet handled.
    inbound: Arc<std::sync::atomic::AtomicUsize>,
}

/// A running t4 node storing its data under [`Config::data_dir`].
///
/// Cheap to clone; all clones drive the same node. Writes go through the
/// core's commit pipeline and resolve once durable (fsynced); reads are
/// served from a consistent engine snapshot on the calling task, and see
/// every write acknowledged before they started.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let node = t4_io_real::Node::open(t4_io_real::Config::new("/tmp/t4-demo")).await?;
/// let rev = node.put("greeting", "hello").await?.revision;
/// let kv = node.get("greeting").await?.expect("just written");
/// assert_eq!(kv.mod_revision, rev);
/// node.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("data_dir", &self.inner.config.data_dir)
            .finish()
    }
}

impl Node {
    /// Opens (or creates) the node: opens the engine, replays the WAL after
    /// the engine's applied index (truncating a torn tail, refusing
    /// mid-log corruption), and starts serving.
    ///
    /// In cluster mode ([`Config::cluster`]) it also binds the peer
    /// listener, loads the hard state (the highest term this node promised;
    /// none yet is fine, a damaged one is refused), and starts the node's
    /// part in the cluster: it returns at once, before the node knows a
    /// leader. Until then writes fail with [`Error::Unavailable`] ("no
    /// leader … retry"), as they do during a leader change; the WAL's
    /// entries after the applied index wait for the leader to say they are
    /// committed. Followers forward writes to the leader and ask it for a
    /// read index before a linearizable read.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub async fn open(config: Config) -> Result<Node, OpenError> {
        let store = match &config.object_store {
            Some(store) => {
                Some(crate::object::open_store(store, config.object_retry.clone()).await?)
            }
            None => None,
        };
        // Cluster mode: bind the peer port first, so a taken port fails
        // before anything else happens.
        let peer_tls = match config.cluster.as_ref().and_then(|c| c.peer_tls.as_ref()) {
            Some(files) => Some(peer::PeerTlsConfig::load(files)?),
            None => None,
        };
        let peer_listener = match &config.cluster {
            Some(cluster) => {
                check_cluster_config(&config, cluster)?;
                let listener = tokio::net::TcpListener::bind(cluster.peer_listen)
                    .await
                    .map_err(|source| OpenError::PeerListen {
                        addr: cluster.peer_listen,
                        source,
                    })?;
                Some(listener)
            }
            None => None,
        };
        if let Some(store) = &store {
            restore_if_missing(&config, &**store, None).await?;
        }
        let runtime = tokio::runtime::Handle::current();
        let outbox_tls = peer_tls.clone();
        let (node, started) = tokio::task::spawn_blocking(move || {
            Node::open_blocking(config, store.map(|s| (s, runtime)), outbox_tls)
        })
        .await
        .map_err(|e| OpenError::Spawn(std::io::Error::other(e.to_string())))??;
        if let Some(listener) = peer_listener {
            // Peer messages that arrived meanwhile waited in the backlog.
            let served = node.serve_peers(listener, peer_tls.as_ref());
            if let Err(e) = served {
                let _ = node.close().await;
                return Err(e);
            }
        }
        if let Some(started) = started {
            // Bucket mode: serve nothing before the start-up caught up.
            let outcome = started
                .await
                .unwrap_or_else(|_| Err("the node thread ended during start-up".into()));
            if let Err(why) = outcome {
                let _ = node.close().await;
                return Err(OpenError::Start(why));
            }
        }
        Ok(node)
    }

    /// Cluster mode: serves the peer service on `listener`, delivering to
    /// the node thread (at most [`driver::PEER_INBOX_MAX`] messages
    /// waiting; more are dropped).
    fn serve_peers(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<&peer::PeerTlsConfig>,
    ) -> Result<(), OpenError> {
        let events = self.inner.events.clone();
        let inbound = Arc::clone(&self.inner.inbound);
        let dropped = AtomicU64::new(0);
        let sink: peer::Sink = Arc::new(move |from, msg| {
            if inbound.fetch_add(1, Ordering::AcqRel) >= driver::PEER_INBOX_MAX {
                inbound.fetch_sub(1, Ordering::AcqRel);
                let n = dropped.fetch_add(1, Ordering::Relaxed);
                if n % 1000 == 0 {
                    tracing::warn!(
                        dropped = n + 1,
                        bound = driver::PEER_INBOX_MAX,
                        "the node thread is behind on peer messages; dropping"
                    );
                }
                return true;
            }
            let sent = events.send(Event::Peer { from, msg });
            if sent.is_err() {
                inbound.fetch_sub(1, Ordering::AcqRel);
            }
            sent.is_ok()
        });
        let addr = listener.local_addr().ok();
        let inbox = peer::Inbox::new(self.inner.config.node_id.clone(), sink);
        let served = peer::serve(listener, inbox, tls).map_err(|source| OpenError::PeerListen {
            addr: addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            source,
        })?;
        tracing::info!(addr = %served.local_addr(), mtls = tls.is_some(), "serving peers");
        *self.inner.peer_listener.lock().expect("lock poisoned") = Some(served);
        Ok(())
    }

    /// Opens the engine and the WAL and starts the driver; in bucket mode
    /// also returns the receiver told when the start-up is over.
    #[allow(clippy::type_complexity)]
    fn open_blocking(
        config: Config,
        bucket: Option<(Arc<dyn crate::object::ObjectStore>, tokio::runtime::Handle)>,
        peer_tls: Option<peer::PeerTlsConfig>,
    ) -> Result<(Node, Option<oneshot::Receiver<Result<(), String>>>), OpenError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| data_dir_error(&config.data_dir, e))?;
        let member_id = NodeId(member_id_of(&config.node_id));
        // One monotonic origin for recovery and the node thread: lease TTLs
        // restored at recovery are measured on the clock that expires them.
        let clock = Clock::start();
        let (node, wal) = open_core(&config, clock)?;
        let engine: driver::EngineSlot = Arc::new(RwLock::new(Some(node.engine().clone())));
        let (published, revision_tx) = Published::new();
        let published = Arc::new(published);
        let inbound = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (bucket, started, cluster) = match bucket {
            Some((store, runtime)) => {
                let cluster = match &config.cluster {
                    Some(options) => {
                        tracing::info!(store = %store.describe(), peer_listen = %options.peer_listen,
                            advertise = %options.advertise_peer, "cluster mode");
                        let hard_state = load_hard_state(&config.data_dir)?;
                        Some(driver::ClusterStart {
                            hard_state,
                            restart: driver::Restart {
                                config: config.clone(),
                                engine: Arc::clone(&engine),
                            },
                            hard_state_dir: config.data_dir.clone(),
                            outbox: peer::Outbox::new(
                                member_of(&config, options),
                                peer::PeerOptions {
                                    queue_max: options.peer_queue_max,
                                    tls: peer_tls,
                                },
                                runtime.clone(),
                            ),
                            inbound: Arc::clone(&inbound),
                        })
                    }
                    None => {
                        tracing::info!(store = %store.describe(), "bucket mode: catching up from the bucket");
                        None
                    }
                };
                let (tx, rx) = match cluster {
                    Some(_) => (None, None),
                    None => {
                        let (tx, rx) = oneshot::channel();
                        (Some(tx), Some(rx))
                    }
                };
                let me = Member {
                    id: config.node_id.clone(),
                    peer_addr: String::new(),
                };
                let bucket = driver::Bucket {
                    store,
                    runtime,
                    me,
                    started: tx,
                    checkpoints: crate::checkpoint::local_root(&config.data_dir),
                };
                (Some(bucket), rx, cluster)
            }
            None => (None, None, None),
        };
        let (events, handle) = driver::spawn(
            node,
            wal,
            clock,
            Arc::clone(&published),
            revision_tx,
            bucket,
            cluster,
        )
        .map_err(OpenError::Spawn)?;
        let node = Node {
            inner: Arc::new(Inner {
                config,
                member_id,
                engine,
                clock,
                events,
                published,
                node_thread: Mutex::new(Some(handle)),
                next_stream: AtomicU64::new(1),
                peer_listener: Mutex::new(None),
                inbound,
            }),
        };
        Ok((node, started))
    }

    /// The configuration the node was opened with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This member's numeric id (stable: derived from [`Config::node_id`]).
    #[must_use]
    pub fn member_id(&self) -> NodeId {
        self.inner.member_id
    }

    /// Cluster mode: role, leader, members, commit index and term as the
    /// node thread last published them; `None` outside cluster mode.
    #[must_use]
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        self.inner
            .published
            .cluster
            .lock()
            .expect("cluster status lock poisoned")
            .clone()
    }

    /// The current revision.
    #[must_use]
    pub fn current_revision(&self) -> i64 {
        self.inner
            .published
            .current_revision
            .load(Ordering::Acquire)
    }

    /// The current term (1 on a single node).
    #[must_use]
    pub fn term(&self) -> Term {
        Term(self.inner.published.term.load(Ordering::Acquire))
    }

    /// The compaction watermark (0 if never compacted: etcd's internal -1
    /// for "never" is not shown to users).
    #[must_use]
    pub fn compact_revision(&self) -> i64 {
        self.inner
            .published
            .compact_revision
            .load(Ordering::Acquire)
            .max(0)
    }

    /// Progress figures for status endpoints.
    #[must_use]
    pub fn status(&self) -> NodeStatus {
        let p = &self.inner.published;
        NodeStatus {
            current_revision: p.current_revision.load(Ordering::Acquire),
            compact_revision: p.compact_revision.load(Ordering::Acquire).max(0),
            applied_index: Index(p.applied_index.load(Ordering::Acquire)),
            term: Term(p.term.load(Ordering::Acquire)),
            db_size_bytes: self.engine().map_or(0, |e| e.size_bytes()),
            db_size_in_use_bytes: self.engine().map_or(0, |e| e.size_in_use_bytes()),
        }
    }

    /// The engine, unless the node is closed (or, a cluster member,
    /// starting over from a checkpoint).
    fn engine(&self) -> Result<RocksEngine, Error> {
        if self.inner.published.fenced.load(Ordering::Acquire) {
            return Err(Error::Fenced(
                "another node took over this node's bucket; its state is no longer current".into(),
            ));
        }
        self.inner
            .engine
            .read()
            .expect("engine lock poisoned")
            .clone()
            .ok_or_else(|| {
                let why = if self.inner.published.closed.load(Ordering::Acquire) {
                    "node is closed"
                } else {
                    "this member is starting over from a checkpoint; retry"
                };
                Error::Unavailable(why.into())
            })
    }

    /// etcd `HashKV`: a consistency hash of the keyspace at `revision`
    /// (`<= 0`: current), equal on every store that applied the same log.
    ///
    /// # Errors
    /// Future or compacted revision, node closed, storage failure.
    pub async fn hash_kv(&self, revision: i64) -> Result<mvcc::KvHash, Error> {
        let snapshot = self.engine()?.snapshot();
        mvcc::hash_kv(&snapshot, revision)
    }

    /// etcd `Hash`: a hash of everything the engine holds (metadata included)
    /// and the revision it was taken at.
    ///
    /// # Errors
    /// Node closed, storage failure.
    pub async fn hash(&self) -> Result<(u32, i64), Error> {
        let snapshot = self.engine()?.snapshot();
        let revision = mvcc::read_meta(&snapshot)
            .map_err(|e| Error::Internal(e.to_string()))?
            .current_revision;
        Ok((mvcc::hash_all(&snapshot)?, revision))
    }

    /// Compacts the engine's files (etcd `Defragment`): space taken by
    /// deleted and compacted-away data is returned. Runs on a blocking
    /// thread; reads and writes continue meanwhile.
    ///
    /// # Errors
    /// Node closed, storage failure.
    pub async fn defragment(&self) -> Result<(), Error> {
        let engine = self.engine()?;
        tokio::task::spawn_blocking(move || engine.defragment())
            .await
            .map_err(|e| Error::Internal(format!("defragment task: {e}")))?
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Puts `value` under `key` (no lease) and returns the write's revision.
    ///
    /// # Errors
    /// See [`Node::put_request`].
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, Error> {
        let req = PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        };
        self.put_request(req).await
    }

    /// etcd Put with every field.
    ///
    /// # Errors
    /// Invalid request, unknown lease, node closing or failed.
    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse, Error> {
        match self.write(WriteRequest::Put(req)).await? {
            WriteResponse::Put(resp) => Ok(resp),
            other => Err(mismatch("put", &other)),
        }
    }

    /// The current value of `key`, if any.
    ///
    /// # Errors
    /// Storage failure.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, Error> {
        let resp = self
            .range(RangeRequest {
                key: key.into(),
                ..RangeRequest::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// etcd Range with every field, served from a consistent snapshot.
    ///
    /// # Errors
    /// Invalid request, compacted or future revision, storage failure.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        let serializable =
            req.serializable || self.inner.config.read_consistency == ReadConsistency::Serializable;
        if !serializable {
            self.confirm_linearizable_read().await?;
        }
        // mvcc::range validates the request itself. The snapshot is taken
        // after the confirmation (see core's `read_lease` module).
        let snapshot = self.engine()?.snapshot();
        mvcc::range(&snapshot, &req)
    }

    /// etcd DeleteRange.
    ///
    /// # Errors
    /// Invalid request, node closing or failed.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        match self.write(WriteRequest::DeleteRange(req)).await? {
            WriteResponse::DeleteRange(resp) => Ok(resp),
            other => Err(mismatch("delete_range", &other)),
        }
    }

    /// etcd Txn. Always goes through the log (which branch runs, and whether
    /// it writes, is decided when it applies).
    ///
    /// # Errors
    /// Invalid request, unknown lease, node closing or failed.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, Error> {
        match self.write(WriteRequest::Txn(req)).await? {
            WriteResponse::Txn(resp) => Ok(resp),
            other => Err(mismatch("txn", &other)),
        }
    }

    /// etcd Compact: drops history below `revision`.
    ///
    /// # Errors
    /// Compacted (already at or beyond), future revision, node closing.
    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse, Error> {
        let req = CompactionRequest {
            revision,
            physical: false,
        };
        match self.write(WriteRequest::Compaction(req)).await? {
            WriteResponse::Compaction(resp) => Ok(resp),
            other => Err(mismatch("compact", &other)),
        }
    }

    /// Sends any write through the commit pipeline and waits until it is
    /// durable and applied (or failed).
    ///
    /// # Errors
    /// As the specific methods.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, Error> {
        match self.request(ClientRequest::Write(req)).await? {
            Response::Write(resp) => Ok(resp),
            other => Err(Error::Internal(format!(
                "a write was answered with {other:?}"
            ))),
        }
    }

    /// Waits until a linearizable read may be served: at once in local mode
    /// or while the bucket-mode read lease holds (published by the node
    /// thread), else the node confirms it still owns the bucket.
    async fn confirm_linearizable_read(&self) -> Result<(), Error> {
        let until = self.inner.published.read_fast_until.load(Ordering::Acquire);
        if self.inner.clock.now().0 < until {
            return Ok(());
        }
        match self.request(ClientRequest::LinearizableRead).await? {
            Response::ReadReady => Ok(()),
            other => Err(Error::Internal(format!(
                "a read confirmation was answered with {other:?}"
            ))),
        }
    }

    /// Hands one client request to the node thread and waits for its answer.
    async fn request(&self, req: ClientRequest) -> Result<Response, Error> {
        if self.inner.published.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable("node is closed".into()));
        }
        let (tx, rx) = oneshot::channel();
        self.send(Event::Client(req, tx))?;
        rx.await
            .map_err(|_| Error::Unavailable("node stopped before answering".into()))?
    }

    /// Sends an event to the node thread.
    fn send(&self, event: Event) -> Result<(), Error> {
        self.inner
            .events
            .send(event)
            .map_err(|_| Error::Unavailable("node is closed".into()))
    }

    // ----- leases -----

    /// etcd `LeaseGrant`: a lease of `ttl` seconds (raised to the minimum
    /// TTL, [`Config::lease_min_ttl_secs`]) with id `id` (0: the node picks
    /// one). Goes through the log; the lease starts counting down once
    /// applied.
    ///
    /// # Errors
    /// Negative or too large TTL, negative id, id in use
    /// ([`Error::LeaseExists`]), NOSPACE alarm, node closing or failed.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, Error> {
        let req = LeaseGrantRequest { ttl, id };
        match self.write(WriteRequest::LeaseGrant(req)).await? {
            WriteResponse::LeaseGrant(resp) => Ok(resp),
            other => Err(mismatch("lease_grant", &other)),
        }
    }

    /// etcd `LeaseRevoke`: ends the lease and deletes every key attached to
    /// it, all at one revision.
    ///
    /// # Errors
    /// Unknown lease ([`Error::LeaseNotFound`]), node closing or failed.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        let req = LeaseRevokeRequest { id };
        match self.write(WriteRequest::LeaseRevoke(req)).await? {
            WriteResponse::LeaseRevoke(resp) => Ok(resp),
            other => Err(mismatch("lease_revoke", &other)),
        }
    }

    /// One etcd `LeaseKeepAlive` round: restarts the lease's TTL. Answered
    /// from memory (not logged); `ttl` is 0 for an unknown or expired lease.
    ///
    /// # Errors
    /// Node closed.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, Error> {
        match self.request(ClientRequest::LeaseKeepAlive { id }).await? {
            Response::LeaseKeepAlive(resp) => Ok(resp),
            other => Err(unexpected("lease_keep_alive", &other)),
        }
    }

    /// etcd `LeaseTimeToLive`: remaining and granted TTL, and the attached
    /// keys when `keys`. `ttl` is -1 for an unknown or expired lease.
    ///
    /// # Errors
    /// Node closed, storage failure.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        match self
            .request(ClientRequest::LeaseTimeToLive { id, keys })
            .await?
        {
            Response::LeaseTimeToLive(resp) => Ok(resp),
            other => Err(unexpected("lease_time_to_live", &other)),
        }
    }

    /// etcd `LeaseLeases`: every live lease id, ascending.
    ///
    /// # Errors
    /// Node closed.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, Error> {
        match self.request(ClientRequest::LeaseLeases).await? {
            Response::LeaseLeases(resp) => Ok(resp),
            other => Err(unexpected("lease_leases", &other)),
        }
    }

    // ----- membership -----

    /// Cluster mode: removes the member named `id` (its `--node-id`) from
    /// the voting members (forwarded to the leader, one conditional write
    /// of the lock); the members left. A member removed while running
    /// stops taking part ([`ClusterRole::Removed`](t4_core::node::ClusterRole)).
    ///
    /// # Errors
    /// [`Error::MemberNotFound`], [`Error::MembershipRefused`] (the last
    /// member, or not in cluster mode), no leader now
    /// ([`Error::Unavailable`]), an outcome unknown ([`Error::Timeout`]).
    pub async fn member_remove(&self, id: &str) -> Result<Vec<Member>, Error> {
        match self
            .request(ClientRequest::MemberRemove { id: id.to_owned() })
            .await?
        {
            Response::Members(members) => Ok(members),
            other => Err(unexpected("member_remove", &other)),
        }
    }

    // ----- alarms -----

    /// etcd `Alarm`. `Get` is answered from memory with the raised alarms
    /// of type `req.alarm` (`None`: all), as etcd does — etcd ignores
    /// `member_id` on a get, and so do we. `Activate` and `Deactivate` go
    /// through the log (alarms are replicated state) and answer with the
    /// alarms they changed, as the core reports them.
    ///
    /// Alarms are not part of [`NodeStatus`] (reading them takes a round
    /// trip to the node thread, the status getters are lock-free); status
    /// endpoints call this with `Get`.
    ///
    /// # Errors
    /// An action value outside etcd's enum ([`Error::Unimplemented`]),
    /// node closing or failed.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, Error> {
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                let mut resp = match self.request(ClientRequest::AlarmList).await? {
                    Response::Alarm(resp) => resp,
                    other => return Err(unexpected("alarm", &other)),
                };
                if req.alarm != AlarmType::None as i32 {
                    resp.alarms.retain(|a| a.alarm == req.alarm);
                }
                Ok(resp)
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                match self.write(WriteRequest::Alarm(req)).await? {
                    WriteResponse::Alarm(resp) => Ok(resp),
                    other => Err(mismatch("alarm", &other)),
                }
            }
            Err(_) => Err(Error::Unimplemented("unknown alarm action")),
        }
    }

    // ----- watches -----

    /// Opens one etcd `Watch` stream, on which any number of watches can be
    /// created and cancelled. The stream closes when dropped (its watches
    /// end), and ends ([`WatchStream::next`] returns `None`) when the node
    /// closes.
    ///
    /// # Errors
    /// Node closed.
    pub fn watch_stream(&self) -> Result<WatchStream, Error> {
        if self.inner.published.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable("node is closed".into()));
        }
        let stream = StreamId(self.inner.next_stream.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.send(Event::OpenWatchStream { stream, tx })?;
        Ok(WatchStream::new(
            stream,
            self.inner.events.clone(),
            rx,
            self.inner.config.watch_stream_buffer_max,
        ))
    }

    /// Convenience for embedders: one watch on a stream of its own. The
    /// first output is the `created` answer (or a cancellation saying why
    /// not), then events.
    ///
    /// # Errors
    /// Node closed.
    pub async fn watch(&self, req: WatchCreateRequest) -> Result<WatchStream, Error> {
        let stream = self.watch_stream()?;
        stream.create(req)?;
        Ok(stream)
    }

    /// Resolves once the applied revision is `>= revision` (at once if it
    /// already is).
    ///
    /// # Errors
    /// The node closed before reaching `revision`.
    pub async fn wait_for_revision(&self, revision: i64) -> Result<(), Error> {
        let mut rx = self.inner.published.subscribe_revision();
        rx.wait_for(|&current| current >= revision)
            .await
            .map(|_| ())
            .map_err(|_| {
                Error::Unavailable(format!("node closed before reaching revision {revision}"))
            })
    }

    // ----- snapshots -----

    /// A consistent snapshot of the whole engine in the t4 snapshot format
    /// (see [`crate::snapshot`]), as a stream of byte chunks of at most
    /// 1 MiB. It is produced on a thread of its own from one engine
    /// snapshot, taken when this is called; writes continue meanwhile. A
    /// storage failure ends the stream with one error item.
    ///
    /// # Errors
    /// Node closed, the producer thread cannot start.
    pub fn snapshot(&self) -> Result<SnapshotStream, Error> {
        let snapshot = self.engine()?.snapshot();
        SnapshotStream::spawn(snapshot)
    }

    /// Stops accepting writes, finishes every batch in flight, syncs the WAL,
    /// persists the engine and stops the driver threads. Idempotent.
    ///
    /// # Errors
    /// The final sync or persist failed (the data stays recoverable from the
    /// WAL on the next open).
    pub async fn close(&self) -> Result<(), Error> {
        let handle = self.inner.node_thread.lock().expect("lock poisoned").take();
        let Some(handle) = handle else { return Ok(()) };
        let (tx, rx) = oneshot::channel();
        let result = if self.inner.events.send(Event::Close(tx)).is_ok() {
            rx.await
                .unwrap_or_else(|_| Err("node thread ended unexpectedly".into()))
        } else {
            Err("node thread ended unexpectedly".into())
        };
        let joined = tokio::task::spawn_blocking(move || handle.join()).await;
        // Cluster mode: the peer listener stops only now, so that answers
        // to this node's forwarded requests still reach it while it
        // finishes what is in flight.
        self.stop_peer_listener();
        joined
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|_| Error::Internal("node thread panicked".into()))?;
        // The driver threads are gone with their engine handles; dropping
        // ours releases the database (RocksDB's lock) for a later open.
        self.inner
            .engine
            .write()
            .expect("engine lock poisoned")
            .take();
        result.map_err(Error::Internal)
    }
}

impl Node {
    fn stop_peer_listener(&self) {
        let listener = self
            .inner
            .peer_listener
            .lock()
            .expect("lock poisoned")
            .take();
        if let Some(listener) = listener {
            listener.stop();
        }
    }
}

impl Drop for Inner {
    /// A node dropped without [`Node::close`] still shuts down in order:
    /// the driver threads finish what is in flight, sync and exit.
    fn drop(&mut self) {
        if self
            .node_thread
            .get_mut()
            .map(|h| h.is_some())
            .unwrap_or(false)
        {
            let (tx, _rx) = oneshot::channel();
            let _ = self.events.send(Event::Close(tx));
        }
    }
}

fn mismatch(op: &str, got: &WriteResponse) -> Error {
    Error::Internal(format!(
        "{op} answered with a different response kind: {got:?}"
    ))
}

fn unexpected(op: &str, got: &Response) -> Error {
    Error::Internal(format!(
        "{op} answered with a different response kind: {got:?}"
    ))
}

/// Bucket and cluster mode, before the engine opens: a data directory
/// without an engine (a new or replaced machine, a lost disk) starts from
/// the bucket's newest usable checkpoint, falling back to older ones
/// (`crate::checkpoint::restore`), or from an empty engine when the bucket
/// has none; the bucket's WAL (and in cluster mode the leader) then brings
/// it up to date. A local WAL without its engine cannot be replayed onto a
/// checkpoint: it is moved aside, never deleted (in sync mode everything
/// it holds that was acknowledged is in the bucket; in cluster mode, on a
/// majority of members). So is a cluster member's hard state: its
/// promises went with the entries it acknowledged, so it rejoins as a new,
/// empty member that does not vote until caught up, never as a voter that
/// lost what it acknowledged. Local checkpoint folders left by a crash are
/// deleted.
///
/// A cluster member's engine that is there is checked first
/// ([`behind_the_bucket`]), unless the caller already knows it is behind
/// (a start-over at run time): if so, it is moved aside and the member
/// starts over the same way, except that it keeps its hard state, and its
/// vote, and the WAL after the checkpoint when it continues it, as far as
/// [`t4_core::cluster::start_over_keeps`] allows (it says why that is
/// safe). The hard state is out of the way during the restore and comes
/// back last. A start-over leaves a marker until it is done: one cut short
/// before its engine is in (a crash, a failed download) resumes as the
/// same start-over at the next start; one stopped after that finishes its
/// last step ([`put_back_what_is_kept`]) then.
pub(crate) async fn restore_if_missing(
    config: &Config,
    store: &dyn crate::object::ObjectStore,
    behind: Option<Behind>,
) -> Result<(), OpenError> {
    let leftovers = crate::checkpoint::local_root(&config.data_dir);
    if leftovers.exists() {
        std::fs::remove_dir_all(&leftovers).map_err(|e| data_dir_error(&leftovers, e))?;
    }
    let engine_dir = config.engine_dir();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A start-over leaves a marker (the log's last index) until it is
    // done, and sets the WAL and the hard state aside under fixed names:
    // one cut short before its engine was in (a crash, a failed download)
    // resumes as the same start-over at the next start. Without a marker,
    // anything under those names is a leftover: it gets a dated name.
    let marker = config.data_dir.join(START_OVER_MARKER);
    let wal_aside = config.data_dir.join(WAL_ASIDE);
    let hard_state_aside = config.data_dir.join(HARD_STATE_ASIDE);
    let marked = read_marker(&marker).map_err(|e| data_dir_error(&marker, e))?;
    let has_engine = engine_dir.join("CURRENT").exists();
    if let Some(last_index) = marked.filter(|_| has_engine && hard_state_aside.exists()) {
        // The hard state goes aside only once the old engine has, and the
        // restored engine comes in whole (one rename): this one is the
        // restored engine, and the start-over stopped before its last
        // step. The WAL may be back already: it is judged again, the same
        // way, from where the step left it.
        tracing::warn!("a start-over stopped after its engine was in: finishing it");
        if !wal_aside.exists() && dir_has_files(&config.wal_dir()) {
            std::fs::rename(config.wal_dir(), &wal_aside)
                .map_err(|e| data_dir_error(&wal_aside, e))?;
        }
        let behind = Behind {
            why: "finishing a start-over".into(),
            last_index,
        };
        put_back_what_is_kept(config, Some(&behind), true)?;
    }
    if marked.is_none() || has_engine {
        retire_asides(config, stamp).map_err(|e| data_dir_error(&config.data_dir, e))?;
    }
    let behind = match (behind, marked) {
        (Some(behind), _) => {
            std::fs::write(&marker, behind.last_index.to_le_bytes())
                .and_then(|()| std::fs::File::open(&marker)?.sync_all())
                .and_then(|()| sync_dir(&config.data_dir))
                .map_err(|e| data_dir_error(&marker, e))?;
            Some(behind)
        }
        (None, Some(last_index)) if !has_engine => Some(Behind {
            why: "resuming a start-over that was cut short".into(),
            last_index,
        }),
        _ => None,
    };
    if has_engine {
        let applied = || {
            let engine = RocksEngine::open(&config.engine_dir(), RocksOptions::default())?;
            Ok(mvcc::read_meta(&engine)?.applied_index)
        };
        let why = match &behind {
            Some(behind) => behind.why.clone(),
            None => match behind_the_bucket(config, store, applied).await? {
                Some(why) => why,
                None => return Ok(()),
            },
        };
        let aside = config
            .data_dir
            .join(format!("engine.behind-bucket-{stamp}"));
        tracing::warn!(%why, moved_to = %aside.display(),
            "this member cannot catch up from the bucket or (likely) the leader; moving its \
             engine aside and starting over from the newest checkpoint");
        std::fs::rename(&engine_dir, &aside).map_err(|e| data_dir_error(&engine_dir, e))?;
    }
    match std::fs::read_dir(&engine_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(OpenError::Start(format!(
                    "{} holds files but no database (no CURRENT file); move it away to \
                     restore from the bucket",
                    engine_dir.display()
                )));
            }
            std::fs::remove_dir(&engine_dir).map_err(|e| data_dir_error(&engine_dir, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(data_dir_error(&engine_dir, e)),
    }
    let wal_dir = config.wal_dir();
    if dir_has_files(&wal_dir) {
        tracing::warn!(wal = %wal_dir.display(), moved_to = %wal_aside.display(),
            "a WAL without its engine cannot be replayed; moving it aside");
        std::fs::rename(&wal_dir, &wal_aside).map_err(|e| data_dir_error(&wal_dir, e))?;
    }
    let hard_state = config.data_dir.join(crate::hard_state::FILE_NAME);
    if config.cluster.is_some() && hard_state.exists() {
        std::fs::rename(&hard_state, &hard_state_aside)
            .map_err(|e| data_dir_error(&hard_state, e))?;
    }
    let started = std::time::Instant::now();
    // A failed restore leaves everything as it is: the next start tries
    // again (as the same start-over, if one was under way).
    let restored = crate::checkpoint::restore(store, &engine_dir, None)
        .await
        .map_err(|e| OpenError::Start(format!("restoring a checkpoint: {e}")))?;
    put_back_what_is_kept(config, behind.as_ref(), restored.is_some())?;
    retire_asides(config, stamp).map_err(|e| data_dir_error(&config.data_dir, e))?;
    match restored {
        Some(restored) => {
            tracing::info!(
                checkpoint = %restored.manifest.key(),
                index = restored.manifest.index.0,
                revision = restored.manifest.revision.0,
                bytes = restored.bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "restored a checkpoint from the bucket"
            );
            Ok(())
        }
        None => {
            let then = if config.cluster.is_some() {
                "catching up from the leader and the bucket's WAL"
            } else {
                "replaying the bucket's WAL from the start"
            };
            tracing::info!("no checkpoint in the bucket; {then}");
            Ok(())
        }
    }
}

/// The last step of a start-over, once the restored engine is in: puts
/// back what [`t4_core::cluster::start_over_keeps`] allows of what was set
/// aside. Each step leaves a state a crash may stop in safely: the WAL
/// comes back only if it continues the restored engine, and the hard
/// state comes back last (without it the member only rejoins). Anything
/// not kept stays under the aside names (`retire_asides` dates it).
/// `restored`: the engine came from a checkpoint (not an empty start).
fn put_back_what_is_kept(
    config: &Config,
    behind: Option<&Behind>,
    restored: bool,
) -> Result<(), OpenError> {
    let hard_state_aside = config.data_dir.join(HARD_STATE_ASIDE);
    if !hard_state_aside.exists() {
        return Ok(());
    }
    let wal_aside = config.data_dir.join(WAL_ASIDE);
    let wal_aside = wal_aside.exists().then_some(wal_aside);
    let keep = match behind {
        Some(behind) if restored => start_over_keeps(config, wal_aside.as_deref(), behind)
            .map_err(|e| data_dir_error(&config.engine_dir(), e))?,
        _ => StartOverKeep::Nothing,
    };
    let wal_dir = config.wal_dir();
    if let (StartOverKeep::LogAndHardState, Some(aside)) = (keep, &wal_aside) {
        tracing::info!("this member's log continues the checkpoint: it keeps the entries after it");
        std::fs::rename(aside, &wal_dir)
            .and_then(|()| sync_dir(&config.data_dir))
            .map_err(|e| data_dir_error(&wal_dir, e))?;
    }
    if keep == StartOverKeep::Nothing {
        tracing::warn!(
            "a cluster hard state without its engine: this member rejoins as a new, empty \
             member (it does not vote until caught up); the hard state was moved aside"
        );
        return Ok(());
    }
    tracing::info!(
        ?keep,
        "the checkpoint and this member's log allow it to keep its hard state (and its vote)"
    );
    let hard_state = config.data_dir.join(crate::hard_state::FILE_NAME);
    std::fs::rename(&hard_state_aside, &hard_state)
        .and_then(|()| sync_dir(&config.data_dir))
        .map_err(|e| data_dir_error(&hard_state, e))
}

/// A data-directory I/O failure at `path`, for start-up.
fn data_dir_error(path: &std::path::Path, source: std::io::Error) -> OpenError {
    OpenError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the entries of `dir` (renames, new files) durable.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn dir_has_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// The start-over marker: the last index of the log the start-over set
/// aside (see `restore_if_missing`).
const START_OVER_MARKER: &str = "start-over";
/// Where a start-over (or a start without an engine) keeps the WAL while
/// it restores.
const WAL_ASIDE: &str = "wal.without-engine";
/// Where it keeps the hard state meanwhile.
const HARD_STATE_ASIDE: &str = "hard_state.without-engine";

fn read_marker(path: &std::path::Path) -> std::io::Result<Option<u64>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes: [u8; 8] = bytes
                .try_into()
                .map_err(|_| std::io::Error::other("the start-over marker is not 8 bytes"))?;
            Ok(Some(u64::from_le_bytes(bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Ends a start-over: what is still under the fixed aside names gets a
/// dated name (kept, never deleted), and the marker goes.
fn retire_asides(config: &Config, stamp: u64) -> std::io::Result<()> {
    let dir = &config.data_dir;
    let mut changed = false;
    for name in [WAL_ASIDE, HARD_STATE_ASIDE] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::rename(&from, dir.join(format!("{name}-{stamp}")))?;
            changed = true;
        }
    }
    match std::fs::remove_file(dir.join(START_OVER_MARKER)) {
        Ok(()) => changed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What a member starting over keeps ([`t4_core::cluster::start_over_keeps`]),
/// from the restored engine's applied index and term and the WAL set
/// aside (read from that index on; `None` if there was none).
fn start_over_keeps(
    config: &Config,
    wal_aside: Option<&std::path::Path>,
    behind: &Behind,
) -> std::io::Result<StartOverKeep> {
    let engine = RocksEngine::open(&config.engine_dir(), RocksOptions::default())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let meta = mvcc::read_meta(&engine).map_err(|e| std::io::Error::other(e.to_string()))?;
    drop(engine);
    let at = Index(meta.applied_index);
    let log = match wal_aside {
        None => Some((Index(0), None)),
        Some(dir) => match Wal::open(dir, at.max(Index(1)), Term(0), u64::MAX) {
            Ok((wal, entries)) => {
                let term = entries
                    .first()
                    .filter(|e| e.index_id() == at)
                    .map(t4_core::log::Entry::term_id);
                Some((wal.last_index(), term))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the WAL set aside cannot be read");
                None
            }
        },
    };
    Ok(t4_core::cluster::start_over_keeps(
        (at, Term(meta.applied_term)),
        log,
        Index(behind.last_index),
    ))
}

/// A cluster member known to be behind the bucket's GC (a start-over at
/// run time, `Action::StartOver`).
pub(crate) struct Behind {
    /// Why (what the bucket check found).
    pub why: String,
    /// The last index of the member's log (what the start-over keeps
    /// falls back on it when the WAL set aside cannot be read).
    pub last_index: u64,
}

/// Cluster mode, before the engine opens: why this member's engine is too
/// far behind to catch up, if it is: no object of the bucket's WAL holds
/// the entry it needs next (GC deleted them while it was away for several
/// checkpoints; the first object, a fence, may be older) and the newest
/// checkpoint is ahead of it. The leader's memory might still reach back
/// that far, but it keeps only `--peer-buffer-size` entries, far fewer
/// than several checkpoints' worth under any real load; starting over
/// from the checkpoint is right either way.
///
/// `applied` gives the engine's applied index; it is asked only when the
/// bucket has a checkpoint at all (at start-up it opens the engine).
pub(crate) async fn behind_the_bucket(
    config: &Config,
    store: &dyn crate::object::ObjectStore,
    applied: impl FnOnce() -> Result<u64, OpenError>,
) -> Result<Option<String>, OpenError> {
    use t4_core::bucket::manifest::LatestPointer;
    use t4_core::bucket::{layout, wal_object};
    use t4_core::object::{ObjectError, ObjectOp, ObjectReply, LIST_KEYS_MAX};
    if config.cluster.is_none() {
        return Ok(None);
    }
    let failed = |what: &str, e: ObjectError| {
        OpenError::Start(format!("reading the bucket's {what} at start-up: {e}"))
    };
    // First the one read that settles most starts: no checkpoint ahead of
    // the engine, nothing to start over from (and GC deleted nothing the
    // engine needs: it only deletes what the checkpoints it keeps cover).
    let latest = match store
        .execute(ObjectOp::Get {
            key: layout::MANIFEST_LATEST.to_owned(),
        })
        .await
    {
        Ok(ObjectReply::Got { body, .. }) => LatestPointer::decode(&body).ok(),
        Ok(_) | Err(ObjectError::NotFound) => None,
        Err(e) => return Err(failed("manifest/latest", e)),
    };
    let Some(latest) = latest else {
        return Ok(None);
    };
    let applied = applied()?;
    if latest.index.0 <= applied {
        return Ok(None);
    }
    let next = Index(applied + 1);
    // The last WAL object starting at or before the entry needed next.
    let mut holder: Option<Index> = None;
    let mut start_after = None;
    loop {
        let op = ObjectOp::List {
            prefix: layout::WAL_PREFIX.to_owned(),
            start_after: start_after.take(),
            max_keys: LIST_KEYS_MAX,
        };
        let (objects, truncated) = match store.execute(op).await {
            Ok(ObjectReply::Listed { objects, truncated }) => (objects, truncated),
            Ok(other) => return Err(OpenError::Start(format!("a listing answered {other:?}"))),
            Err(e) => return Err(failed("WAL", e)),
        };
        let firsts: Vec<Index> = objects
            .iter()
            .filter_map(|o| layout::parse_wal_key(&o.key))
            .collect();
        holder = holder.max(firsts.iter().copied().filter(|f| *f <= next).max());
        if !truncated || firsts.last().is_some_and(|f| *f > next) {
            break;
        }
        start_after = objects.last().map(|o| o.key.clone());
    }
    let reaches = match holder {
        None => false,
        Some(first) if first == next => true,
        Some(first) => {
            let key = layout::wal_key(first);
            match store.execute(ObjectOp::Get { key: key.clone() }).await {
                Ok(ObjectReply::Got { body, .. }) => wal_object::decode(&key, first, &body)
                    .map_or(true, |(_, entries)| {
                        entries.last().is_some_and(|e| e.index_id() >= next)
                    }),
                Ok(_) | Err(ObjectError::NotFound) => false,
                Err(e) => return Err(failed("WAL", e)),
            }
        }
    };
    Ok((!reaches).then(|| {
        format!(
            "the engine is at index {applied}, no object of the bucket's WAL holds entry \
             {next} and its newest checkpoint is at {}",
            latest.index
        )
    }))
}

/// Opens the engine and a core node on it, and the WAL, replaying the
/// WAL's entries after the engine's applied index: what a start, and a
/// start-over at run time, open.
pub(crate) fn open_core(
    config: &Config,
    clock: Clock,
) -> Result<(t4_core::Node<RocksEngine>, Wal), OpenError> {
    let options = RocksOptions {
        block_cache_bytes: config.block_cache_bytes,
        ..RocksOptions::default()
    };
    let engine = RocksEngine::open(&config.engine_dir(), options)?;
    let member_id = NodeId(member_id_of(&config.node_id));
    let mut node = t4_core::Node::new(core_config(config, member_id), engine)?;
    let from = Index(node.meta().applied_index).next();
    let (wal, entries) = Wal::open(
        &config.wal_dir(),
        from,
        node.term(),
        config.segment_max_size,
    )?;
    let replayed = entries.len();
    node.recover(clock.now(), entries)?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        replayed,
        revision = node.meta().current_revision,
        applied_index = node.meta().applied_index,
        "node opened"
    );
    Ok((node, wal))
}

/// The core's configuration for `config`.
fn core_config(config: &Config, member_id: NodeId) -> NodeConfig {
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let bucket = config.object_store.as_ref().map(|_| BucketConfig {
        unavailable_after_ns: nanos(config.bucket_unavailable_after),
        checkpoint_every_entries: config.checkpoint_entries,
        checkpoint_interval_ns: config.checkpoint_interval.map_or(0, nanos),
        gc_keep: config.gc_keep,
        sync_upload: config.wal_sync_upload,
        segment_max_age_ns: nanos(config.segment_max_age),
        // One knob for both segment kinds, as in T4 (see the field).
        segment_max_bytes: config.segment_max_size,
        ..BucketConfig::default()
    });
    NodeConfig {
        node_id: member_id,
        max_txn_ops: config.max_txn_ops,
        request_bytes_max: config.max_request_bytes,
        pending_max: config.pending_writes_max,
        trim_every_entries: config.wal_trim_every_entries,
        lease: LeaseConfig {
            min_ttl_secs: config.lease_min_ttl_secs,
            revoke_per_sec_max: config.lease_revoke_per_sec_max,
            checkpoint_interval_nanos: config.lease_checkpoint_interval.map(nanos),
        },
        watch: WatchConfig {
            stream_buffer_max: config.watch_stream_buffer_max,
            progress_interval_nanos: nanos(config.watch_progress_notify_interval),
            ..WatchConfig::default()
        },
        quota_bytes: config.quota_backend_bytes,
        seed: entropy_seed(),
        bucket: bucket.clone().filter(|_| config.cluster.is_none()),
        // Cluster mode: the bucket is the disaster-recovery tier (the
        // leader uploads the committed log and checkpoints; see core's
        // `cluster_bucket` module).
        cluster: config.cluster.as_ref().map(|options| ClusterConfig {
            bucket,
            ..cluster_config(config, options)
        }),
        ..NodeConfig::default()
    }
}

/// Core's cluster configuration for `options` (see
/// [`ClusterOptions`] for how the intervals derive from the two timeouts).
fn cluster_config(config: &Config, options: &ClusterOptions) -> ClusterConfig {
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let defaults = ClusterConfig::new(member_of(config, options));
    let election_timeout_ns = nanos(options.election_timeout);
    let lock_ttl_ns = nanos(options.lock_ttl);
    ClusterConfig {
        election_timeout_ns,
        heartbeat_interval_ns: defaults
            .heartbeat_interval_ns
            .min(election_timeout_ns / 5)
            .max(1),
        lock_ttl_ns,
        lock_watch_interval_ns: defaults.lock_watch_interval_ns.min(lock_ttl_ns / 3).max(1),
        lock_refresh_interval_ns: defaults
            .lock_refresh_interval_ns
            .min(lock_ttl_ns / 3)
            .max(1),
        peer_buffer_entries: options.peer_buffer_entries,
        wait_mode: options.follower_wait_mode,
        ..defaults
    }
}

/// This node as the lock names it.
fn member_of(config: &Config, options: &ClusterOptions) -> Member {
    Member {
        id: config.node_id.clone(),
        peer_addr: options.advertise_peer.clone(),
    }
}

/// Why a cluster configuration cannot work, if it cannot.
fn check_cluster_config(config: &Config, options: &ClusterOptions) -> Result<(), OpenError> {
    let bad = |why: String| Err(OpenError::Config(why));
    if config.object_store.is_none() {
        return bad("cluster mode needs an object store for its leader-lock \
                    (an S3 bucket or a directory shared by every member)"
            .into());
    }
    if config.node_id.is_empty() {
        return bad("cluster mode needs a node id".into());
    }
    if options.advertise_peer.is_empty() {
        return bad("cluster mode needs the address peers reach this node at".into());
    }
    if options.election_timeout.is_zero() || options.lock_ttl.is_zero() {
        return bad(format!(
            "the election timeout ({:?}) and the lock TTL ({:?}) must be positive",
            options.election_timeout, options.lock_ttl
        ));
    }
    if options.peer_buffer_entries == 0 || options.peer_queue_max == 0 {
        return bad("the peer buffer size and the peer queue bound must be positive".into());
    }
    Ok(())
}

/// The hard state in `dir` (the default when there is none).
///
/// # Errors
/// The file cannot be read, or it is damaged ([`OpenError::HardState`]).
pub(crate) fn load_hard_state(dir: &std::path::Path) -> Result<HardState, OpenError> {
    let path = dir.join(crate::hard_state::FILE_NAME);
    match crate::hard_state::load(dir) {
        Ok(None) => Ok(HardState::default()),
        Ok(Some(bytes)) => HardState::decode(&bytes).map_err(|why| {
            OpenError::HardState(format!(
                "{} holds no valid hard state ({why}); refusing to start, since a \
                 forgotten promise could let this node vote twice in one term",
                path.display()
            ))
        }),
        Err(e) => Err(OpenError::HardState(format!(
            "{e}; refusing to start, since a forgotten promise could let this node \
             vote twice in one term (restore the file, or wipe the whole data directory \
             so that the node rejoins as a new, empty member)"
        ))),
    }
}

/// A seed for the core's random choices (generated lease ids), drawn here
/// because the core draws no entropy: the standard library's per-process
/// random hash keys, mixed with the wall clock and the process id.
fn entropy_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let wall_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(wall_nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A stable 64-bit member id derived from the node name (FNV-1a), never 0:
/// what etcd's API reports as a member's id (`MemberList`, `Status.leader`,
/// headers), the same on every node for a given name.
#[must_use]
pub fn member_id_of(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

#[cfg(test)]
mod start_over_tests;
