//! The embedding API: an async handle on a running node.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread;

use tokio::sync::oneshot;

use t4_core::kv::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WriteRequest,
    WriteResponse,
};
use t4_core::{mvcc, Error, Index, KvEngine, NodeConfig, NodeId, Term};

use crate::config::Config;
use crate::driver::{self, Event, Published};
use crate::engine::{RocksEngine, RocksOptions};
use crate::wal::Wal;

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
}

/// A snapshot of a node's progress, for status endpoints.
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
    /// Approximate size of the engine's data in bytes.
    pub db_size_bytes: u64,
}

struct Inner {
    config: Config,
    member_id: NodeId,
    /// `None` once closed, so the database is released and can be reopened
    /// (snapshots still being read keep it alive until they are dropped).
    engine: RwLock<Option<RocksEngine>>,
    events: mpsc::Sender<Event>,
    published: Arc<Published>,
    node_thread: Mutex<Option<thread::JoinHandle<()>>>,
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
    /// # Errors
    /// See [`OpenError`].
    pub async fn open(config: Config) -> Result<Node, OpenError> {
        tokio::task::spawn_blocking(move || Node::open_blocking(config))
            .await
            .map_err(|e| OpenError::Spawn(std::io::Error::other(e.to_string())))?
    }

    fn open_blocking(config: Config) -> Result<Node, OpenError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| OpenError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let options = RocksOptions {
            block_cache_bytes: config.block_cache_bytes,
            ..RocksOptions::default()
        };
        let engine = RocksEngine::open(&config.engine_dir(), options)?;
        let member_id = NodeId(member_id_of(&config.node_id));
        let core_config = NodeConfig {
            node_id: member_id,
            max_txn_ops: config.max_txn_ops,
            request_bytes_max: config.max_request_bytes,
            pending_max: config.pending_writes_max,
            trim_every_entries: config.wal_trim_every_entries,
            ..NodeConfig::default()
        };
        let mut node = t4_core::Node::new(core_config, engine.clone())?;
        let from = Index(node.meta().applied_index).next();
        let (wal, entries) = Wal::open(
            &config.wal_dir(),
            from,
            node.term(),
            config.segment_max_size,
        )?;
        let replayed = entries.len();
        node.recover(t4_core::Time(0), entries)?;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            replayed,
            revision = node.meta().current_revision,
            applied_index = node.meta().applied_index,
            "node opened"
        );
        let published = Arc::new(Published::default());
        let (events, handle) =
            driver::spawn(node, wal, Arc::clone(&published)).map_err(OpenError::Spawn)?;
        Ok(Node {
            inner: Arc::new(Inner {
                config,
                member_id,
                engine: RwLock::new(Some(engine)),
                events,
                published,
                node_thread: Mutex::new(Some(handle)),
            }),
        })
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
        }
    }

    /// The engine, unless the node is closed.
    fn engine(&self) -> Result<RocksEngine, Error> {
        self.inner
            .engine
            .read()
            .expect("engine lock poisoned")
            .clone()
            .ok_or_else(|| Error::Unavailable("node is closed".into()))
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
        // mvcc::range validates the request itself.
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
        if self.inner.published.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable("node is closed".into()));
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .events
            .send(Event::Write(req, tx))
            .map_err(|_| Error::Unavailable("node is closed".into()))?;
        match rx
            .await
            .map_err(|_| Error::Unavailable("node stopped before answering".into()))??
        {
            t4_core::Response::Write(resp) => Ok(resp),
            other => Err(Error::Internal(format!(
                "a write was answered with {other:?}"
            ))),
        }
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
        tokio::task::spawn_blocking(move || handle.join())
            .await
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

/// A stable 64-bit member id derived from the node name (FNV-1a), never 0.
fn member_id_of(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}
