//! Configuration of an embedded node.
//!
//! The fields mirror T4's `Config` where they apply to a single node on local
//! storage (seed `000`: `DataDir`, `SegmentMaxSize`, `NodeID`,
//! `ReadConsistency`); object-store, peer and checkpoint fields arrive with
//! the issues that implement them.

use std::path::{Path, PathBuf};

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Directory for the engine (`<data_dir>/db`) and WAL segments
    /// (`<data_dir>/wal`). Created if missing. Required.
    pub data_dir: PathBuf,
    /// Stable, unique name of this node. Default: the machine's hostname.
    pub node_id: String,
    /// Read consistency. Default: linearizable.
    pub read_consistency: ReadConsistency,
    /// WAL segment rotation threshold in bytes (T4 `SegmentMaxSize`).
    /// Default: 50 MB.
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
        }
    }

    /// Directory of the RocksDB engine.
    #[must_use]
    pub fn engine_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    /// Directory of the WAL segments.
    #[must_use]
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }
}
