//! Configuration of an embedded node.
//!
//! The fields mirror T4's `Config` where they apply to a single node on local
//! storage (seed `000`: `DataDir`, `SegmentMaxSize`, `NodeID`,
//! `ReadConsistency`) plus etcd's lease, watch and quota settings, and the
//! object store that makes a single node durable in a bucket, and cluster
//! mode ([`ClusterOptions`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use t4_core::cluster::FollowerWaitMode;

use crate::object::{RetryConfig, StoreConfig};

/// Read consistency (T4 `ReadConsistency`). On a single node both modes read
/// the same local state — every acknowledged write is applied before it is
/// acknowledged — so they differ only once followers exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Respect each request's `serializable` flag (default; etcd-compatible).
    #[default]
    Linearizable,
    /// Serve every read locally.
    Serializable,
}

/// Configuration of a [`crate::Node`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory for the engine (`<data_dir>/db`) and WAL segments
    /// (`<data_dir>/wal`). Created if missing. Required.
    pub data_dir: PathBuf,
    /// Stable, unique name of this node. Default: the machine's hostname.
    pub node_id: String,
    /// Read consistency. Default: linearizable.
    pub read_consistency: ReadConsistency,
    /// WAL segment rotation threshold in bytes (T4 `SegmentMaxSize`), for
    /// the local WAL's files and, in bucket mode with
    /// [`Config::wal_sync_upload`] off, for the segments uploaded in the
    /// background (as in T4, where the uploaded object is the local
    /// segment: one knob says how large a segment grows). Default: 50 MB.
    pub segment_max_size: u64,
    /// Maximum encoded size of one write request (etcd
    /// `--max-request-bytes`). Default: 1.5 MiB.
    pub max_request_bytes: usize,
    /// Maximum operations per txn (etcd `--max-txn-ops`). Default: 128.
    pub max_txn_ops: usize,
    /// Maximum writes waiting for durability before new ones are refused
    /// with `Unavailable`. Default: 65 536.
    pub pending_writes_max: usize,
    /// RocksDB block cache size in bytes. Default: 64 MiB.
    pub block_cache_bytes: usize,
    /// After this many applied entries the engine is flushed and WAL
    /// segments it no longer needs are deleted. Default: 200 000.
    pub wal_trim_every_entries: u64,
    /// Database size above which space-consuming writes raise the NOSPACE
    /// alarm and fail (etcd `--quota-backend-bytes`). Default: 2 GiB.
    pub quota_backend_bytes: u64,
    /// Smallest lease TTL granted, in seconds; smaller requests are raised
    /// to it. Default: 2 (etcd's, from its election timeout). Meant for
    /// tests that need leases to expire quickly; leave it alone otherwise.
    pub lease_min_ttl_secs: i64,
    /// How often remaining lease TTLs are recorded in the log, so a restart
    /// does not give every lease its full TTL again; `None`: never.
    /// Default: 5 minutes (etcd's `--lease-checkpoint-interval`).
    pub lease_checkpoint_interval: Option<Duration>,
    /// Most expired leases revoked per second, so an expiry storm cannot
    /// starve client writes. Default: 1000 (etcd's).
    pub lease_revoke_per_sec_max: u32,
    /// Interval of progress notifications for watches that asked for them
    /// (etcd `--experimental-watch-progress-notify-interval`).
    /// Default: 10 minutes.
    pub watch_progress_notify_interval: Duration,
    /// Watch responses a stream may have outstanding (sent, not yet taken by
    /// the client) before its watchers stop receiving live events and later
    /// catch up from history. Default: 1024.
    pub watch_stream_buffer_max: usize,
    /// The bucket the log is also durable in (single node; see
    /// [`Config::wal_sync_upload`] for when a write is acknowledged);
    /// `None`: local mode. Default: `None`.
    pub object_store: Option<StoreConfig>,
    /// Timeouts and retries of object-store operations.
    pub object_retry: RetryConfig,
    /// Bucket mode: once a batch's upload has failed for this long, its
    /// writers are told it timed out (it may still land) and new writes are
    /// refused until the bucket answers. Default: 5 s.
    pub bucket_unavailable_after: Duration,
    /// Bucket mode: take a checkpoint this often if anything was applied
    /// since the last one; `None`: not by time. Default: 15 min (T4's).
    pub checkpoint_interval: Option<Duration>,
    /// Bucket mode: take a checkpoint once this many entries were applied
    /// since the last one; `0`: not by count. Default: 0.
    pub checkpoint_entries: u64,
    /// Bucket mode: after each checkpoint, a GC pass keeps this many
    /// checkpoints and deletes what only older ones needed; `0`: no
    /// background GC. Default: 3.
    pub gc_keep: usize,
    /// Bucket mode: acknowledge a write only once its WAL object is in the
    /// bucket (`true`, T4's `WALSyncUpload` default), or once fsynced, with
    /// applied entries uploaded in the background every
    /// [`Config::segment_max_age`] or [`Config::segment_max_size`] bytes
    /// (`false`). Asynchronous upload is faster and loses, with the machine
    /// and its disk, the writes not uploaded yet (up to
    /// `segment_max_age`); and a node that another takes over while it
    /// still runs loses its writes since its last upload. Default: `true`.
    pub wal_sync_upload: bool,
    /// Bucket mode, asynchronous upload: the longest an applied entry waits
    /// before its segment is sealed and uploaded (T4 `SegmentMaxAge`).
    /// Default: 10 s.
    pub segment_max_age: Duration,
    /// Cluster mode: several nodes share [`Config::object_store`] (which
    /// then must be set: it holds `leader-lock`), one leads, the others
    /// follow (ARCHITECTURE §3.5–3.7). A write is durable once a majority
    /// of the members' disks hold it; the bucket is the disaster-recovery
    /// tier behind them: the leader uploads the committed log in the
    /// background (segments sealed by [`Config::segment_max_age`] or
    /// [`Config::segment_max_size`]) and takes checkpoints
    /// ([`Config::checkpoint_interval`], [`Config::checkpoint_entries`],
    /// [`Config::gc_keep`]); a member behind the leader's memory catches up
    /// from the bucket's WAL, and a member with an empty disk starts from
    /// the newest checkpoint. [`Config::wal_sync_upload`] does not apply.
    /// `None`: single node. Default: `None`.
    pub cluster: Option<ClusterOptions>,
}

/// Cluster mode's settings (T4's flags in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Where this node listens for its peers (`--peer-listen`).
    pub peer_listen: SocketAddr,
    /// How peers reach this node, `host:port`, as written into
    /// `leader-lock` (`--advertise-peer`). Default: `peer_listen`.
    pub advertise_peer: String,
    /// A follower that hears nothing from its leader this long starts
    /// watching the lock; members refuse a new leader within this long of
    /// hearing from theirs, which is what keeps the leader's read lease
    /// sound (`--election-timeout-ms`). The leader's heartbeat interval is
    /// a fifth of it, at most 100 ms. Default: 1 s.
    pub election_timeout: Duration,
    /// A lock unchanged this long (by the watcher's clock) while the leader
    /// is silent means the leader is gone (`--lock-ttl-ms`). The leader
    /// rewrites the lock every third of it (at most every second) while a
    /// member is unreachable, and silent followers read it as often.
    /// Default: 5 s.
    pub lock_ttl: Duration,
    /// Who must have a write before it is acknowledged
    /// (`--follower-wait-mode`). [`FollowerWaitMode::None`] is unsafe (a
    /// leader lost with its disk loses acknowledged writes). Default:
    /// quorum.
    pub follower_wait_mode: FollowerWaitMode,
    /// Applied entries the leader keeps in memory for followers that lag
    /// (`--peer-buffer-size`). Default: 10 000.
    pub peer_buffer_entries: usize,
    /// Messages queued per peer before new ones are dropped (the transport
    /// is allowed to lose messages; core re-sends). Default: 1024.
    pub peer_queue_max: usize,
    /// Peer mTLS; `None`: plaintext.
    pub peer_tls: Option<PeerTls>,
}

/// Peer mTLS files (`--peer-tls-ca`, `--peer-tls-cert`, `--peer-tls-key`):
/// TLS 1.3, both sides present a certificate signed by `ca` and verify the
/// other's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTls {
    /// PEM bundle of the CA that signs every member's certificate.
    pub ca: PathBuf,
    /// This member's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl ClusterOptions {
    /// Defaults for a node listening for peers on `peer_listen`.
    #[must_use]
    pub fn new(peer_listen: SocketAddr) -> ClusterOptions {
        ClusterOptions {
            peer_listen,
            advertise_peer: peer_listen.to_string(),
            election_timeout: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(5),
            follower_wait_mode: FollowerWaitMode::Quorum,
            peer_buffer_entries: 10_000,
            peer_queue_max: 1024,
            peer_tls: None,
        }
    }
}

impl Config {
    /// Defaults for a node storing its data in `data_dir`.
    #[must_use]
    pub fn new(data_dir: impl AsRef<Path>) -> Config {
        let node_id = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "t4".to_owned());
        Config {
            data_dir: data_dir.as_ref().to_path_buf(),
            node_id,
            read_consistency: ReadConsistency::default(),
            segment_max_size: 50 * 1000 * 1000,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            pending_writes_max: 65_536,
            block_cache_bytes: 64 * 1024 * 1024,
            wal_trim_every_entries: 200_000,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            lease_min_ttl_secs: 2,
            lease_checkpoint_interval: Some(Duration::from_secs(300)),
            lease_revoke_per_sec_max: 1000,
            watch_progress_notify_interval: Duration::from_secs(600),
            watch_stream_buffer_max: 1024,
            object_store: None,
            object_retry: RetryConfig::default(),
            bucket_unavailable_after: Duration::from_secs(5),
            checkpoint_interval: Some(Duration::from_secs(15 * 60)),
            checkpoint_entries: 0,
            gc_keep: 3,
            wal_sync_upload: true,
            segment_max_age: Duration::from_secs(10),
            cluster: None,
        }
    }

    /// Directory of the RocksDB engine.
    #[must_use]
    pub fn engine_dir(&self) -> PathBuf {
        engine_dir_of(&self.data_dir)
    }

    /// Directory of the WAL segments.
    #[must_use]
    pub fn wal_dir(&self) -> PathBuf {
        wal_dir_of(&self.data_dir)
    }
}

/// The engine directory inside a data directory.
pub(crate) fn engine_dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// The WAL directory inside a data directory.
pub(crate) fn wal_dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}
