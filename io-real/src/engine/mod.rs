//! `RocksEngine`: core's [`KvEngine`] over RocksDB.
//!
//! One database with one (default) column family; the MVCC layer tells its
//! tables apart by key prefix. The handle is a cheap `Clone` (an `Arc`), so
//! the node thread writes while gRPC handlers read snapshots concurrently.
//!
//! # Durability
//!
//! Our own WAL is the source of truth, so engine writes skip RocksDB's WAL
//! (`disable_wal`, no sync): a write is in a memtable when `write` returns
//! and reaches disk only when RocksDB flushes it. This is safe because:
//! - the MVCC layer stores the applied log index in the same atomic batch as
//!   the data it describes, and
//! - RocksDB never splits a write batch across memtables and installs flushed
//!   memtables in order, so the on-disk state is always a prefix of the
//!   batches written.
//!
//! After a crash the engine therefore reopens at some earlier applied index,
//! and replaying our WAL from there restores the rest. The one obligation
//! this puts on callers: **call [`KvEngine::persist`] before deleting WAL
//! segments** (or anything else the engine's unflushed state still depends
//! on). A clean close (dropping the last handle and snapshot, or
//! [`RocksEngine::close`]) also flushes.
//!
//! # Snapshots
//!
//! [`RocksSnapshot`] is `'static + Send + Sync`: it holds an `Arc` of the
//! database next to the RocksDB snapshot that borrows it. That pairing is the
//! only `unsafe` in this crate and lives, with its soundness argument, in the
//! private `owned_snapshot` module.

mod owned_snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::properties::{CUR_SIZE_ALL_MEM_TABLES, ESTIMATE_LIVE_DATA_SIZE, TOTAL_SST_FILES_SIZE};
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, DBRawIterator, FlushOptions, Options, ReadOptions,
    WriteOptions, DB,
};
use t4_core::engine::{BatchOp, EngineError, KvEngine, KvPair, KvRead, ScanIter, WriteBatch};

use self::owned_snapshot::OwnedSnapshot;

/// Tuning for a [`RocksEngine`]. The defaults suit a KV store of small keys
/// and values on a small machine; every memory or file budget is bounded.
#[derive(Clone, Debug, PartialEq)]
pub struct RocksOptions {
    /// Capacity of the LRU block cache, which also holds index and filter
    /// blocks (so their memory is bounded too). Default 64 MiB.
    pub block_cache_bytes: usize,
    /// Size of one memtable before it is switched and flushed. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Memtables (active + immutable) kept before writes stall; with
    /// `write_buffer_bytes` this bounds memtable memory. Default 2.
    pub write_buffers_max: u32,
    /// Bloom filter bits per key; 10 gives about 1% false positives, which
    /// lets point gets for absent keys skip most SST reads. Default 10.
    pub bloom_bits_per_key: f64,
    /// SST files RocksDB keeps open. Bounded so the process stays well under
    /// a common soft limit of 1024 descriptors next to sockets and WAL files;
    /// with 64 MiB SSTs that covers 32 GiB before files are reopened on
    /// demand. Default 512.
    pub open_files_max: u32,
    /// Background flush + compaction threads. Default 2 (a 2-core machine).
    pub background_jobs: u32,
    /// RocksDB info-log files (`LOG*` in the data directory) kept. Default 4.
    pub info_log_files_max: usize,
    /// Size at which the info log rolls over. Default 16 MiB.
    pub info_log_file_bytes_max: usize,
}

impl Default for RocksOptions {
    fn default() -> RocksOptions {
        RocksOptions {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            write_buffers_max: 2,
            bloom_bits_per_key: 10.0,
            open_files_max: 512,
            background_jobs: 2,
            info_log_files_max: 4,
            info_log_file_bytes_max: 16 << 20,
        }
    }
}

impl RocksOptions {
    /// Rejects settings RocksDB would misbehave with, naming the field.
    fn validate(&self) -> Result<(), String> {
        if self.write_buffer_bytes < 64 << 10 {
            return Err(format!(
                "write_buffer_bytes {} < 64 KiB",
                self.write_buffer_bytes
            ));
        }
        if self.write_buffers_max < 2 {
            return Err(format!(
                "write_buffers_max {} < 2 (writes would stall during every flush)",
                self.write_buffers_max
            ));
        }
        if !(0.0..=64.0).contains(&self.bloom_bits_per_key) {
            return Err(format!(
                "bloom_bits_per_key {} not in 0..=64",
                self.bloom_bits_per_key
            ));
        }
        if self.open_files_max < 16 {
            return Err(format!("open_files_max {} < 16", self.open_files_max));
        }
        if self.background_jobs == 0 {
            return Err("background_jobs must be at least 1".to_owned());
        }
        if self.info_log_files_max == 0 {
            return Err("info_log_files_max must be at least 1".to_owned());
        }
        Ok(())
    }

    fn to_rocksdb(&self) -> Options {
        let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(self.block_cache_bytes));
        table.set_bloom_filter(self.bloom_bits_per_key, false);
        // Index and filter blocks live in the bounded cache rather than on the
        // heap; L0's stay pinned because every read consults them.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_optimize_filters_for_memory(true);

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_bottommost_compression_type(DBCompressionType::Lz4);
        opts.increase_parallelism(int(self.background_jobs));
        opts.set_max_background_jobs(int(self.background_jobs));
        opts.set_write_buffer_size(self.write_buffer_bytes);
        opts.set_max_write_buffer_number(int(self.write_buffers_max));
        opts.set_max_open_files(int(self.open_files_max));
        opts.set_keep_log_file_num(self.info_log_files_max);
        opts.set_max_log_file_size(self.info_log_file_bytes_max);
        // Spread SST fsyncs over a flush instead of one large stall at the end.
        opts.set_bytes_per_sync(1 << 20);
        opts
    }
}

/// What every handle and snapshot of one open database shares.
///
/// Only ever reachable through an `Arc` and never mutated after `open`
/// (`owned_snapshot` relies on this). Dropping the last reference flushes
/// the memtables and closes the database.
struct Shared {
    db: DB,
    path: PathBuf,
    /// WAL off, no sync: our WAL is the source of durability (module doc).
    write_opts: WriteOptions,
    /// Opened by [`RocksEngine::open_read_only`]: writes are refused and
    /// nothing is flushed, so the files are never changed.
    read_only: bool,
}

impl Shared {
    fn error(&self, op: &str, err: impl std::fmt::Display) -> EngineError {
        EngineError(format!("rocksdb {op} at {}: {err}", self.path.display()))
    }

    /// Writes every memtable to SST files and waits until they are on disk.
    /// A read-only database has no memtable of its own: nothing to do.
    fn flush(&self) -> Result<(), EngineError> {
        if self.read_only {
            return Ok(());
        }
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        self.db.flush_opt(&opts).map_err(|e| self.error("flush", e))
    }

    fn get(&self, key: &[u8], read_opts: &ReadOptions) -> Result<Option<Vec<u8>>, EngineError> {
        self.db
            .get_opt(key, read_opts)
            .map_err(|e| self.error("get", e))
    }

    fn property(&self, name: &'static rocksdb::properties::PropName) -> u64 {
        match self.db.property_int_value(name) {
            Ok(v) => v.unwrap_or(0),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), property = ?name, error = %e,
                    "rocksdb property unavailable; counting it as 0");
                0
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Last handle and last snapshot are gone: make a clean close durable.
        // Nothing can be returned from here; `RocksEngine::close` surfaces the
        // error instead for callers that care.
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "flush on close failed; the WAL replays the rest");
        }
    }
}

/// A RocksDB-backed [`KvEngine`]. Cheap to clone; all clones share one
/// database, which closes (after a flush) when the last clone and the last
/// [`RocksSnapshot`] are dropped.
#[derive(Clone)]
pub struct RocksEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl RocksEngine {
    /// How many handles and snapshots of this database are alive (the
    /// database closes when the last one drops).
    #[must_use]
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.shared)
    }

    /// Opens (creating if missing, parents included) the database at `path`.
    ///
    /// # Errors
    /// Invalid `opts`, the directory cannot be created, or RocksDB cannot open
    /// the database (e.g. it is already open, in this process or another, or
    /// it is corrupt); the message names the path.
    pub fn open(path: &Path, opts: RocksOptions) -> Result<RocksEngine, EngineError> {
        let context = |op: &str, err: &dyn std::fmt::Display| {
            EngineError(format!("rocksdb {op} at {}: {err}", path.display()))
        };
        opts.validate()
            .map_err(|e| context("open (invalid options)", &e))?;
        std::fs::create_dir_all(path).map_err(|e| context("create directory", &e))?;
        let db = DB::open(&opts.to_rocksdb(), path).map_err(|e| context("open", &e))?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        write_opts.set_sync(false);
        let shared = Shared {
            db,
            path: path.to_path_buf(),
            write_opts,
            read_only: false,
        };
        Ok(RocksEngine {
            shared: Arc::new(shared),
        })
    }

    /// Opens the existing database at `path` read-only, for offline
    /// inspection (`t4 inspect`): it creates nothing, writes nothing, and
    /// [`KvEngine::write`] and [`KvEngine::defragment`] fail.
    ///
    /// RocksDB takes no lock for a read-only open, so this also works while
    /// a node has the database open. It then sees the database as last
    /// flushed (writes skip RocksDB's WAL: module doc), and a file the node
    /// compacts away meanwhile may fail a read.
    ///
    /// # Errors
    /// Invalid `opts`; no database at `path` (no `CURRENT` file: checked
    /// first, because the `rocksdb` crate would create a missing directory
    /// even for a read-only open); RocksDB cannot open it (e.g. corrupt).
    pub fn open_read_only(path: &Path, opts: RocksOptions) -> Result<RocksEngine, EngineError> {
        let context = |op: &str, err: &dyn std::fmt::Display| {
            EngineError(format!("rocksdb {op} at {}: {err}", path.display()))
        };
        opts.validate()
            .map_err(|e| context("open read-only (invalid options)", &e))?;
        if !path.join("CURRENT").is_file() {
            return Err(context(
                "open read-only",
                &"no database here (no CURRENT file)",
            ));
        }
        let mut rocks_opts = opts.to_rocksdb();
        rocks_opts.create_if_missing(false);
        // `false`: RocksDB WAL files are expected (empty: writes skip it).
        let db = DB::open_for_read_only(&rocks_opts, path, false)
            .map_err(|e| context("open read-only", &e))?;
        let shared = Shared {
            db,
            path: path.to_path_buf(),
            write_opts: WriteOptions::default(),
            read_only: true,
        };
        Ok(RocksEngine {
            shared: Arc::new(shared),
        })
    }

    /// Makes a RocksDB checkpoint in `dir` (which must not exist): the
    /// memtables are flushed, then every live SST is hard-linked (copied
    /// across file systems) and the small meta files (`MANIFEST-*`,
    /// `CURRENT`, `OPTIONS-*`) are copied. The folder opens as a database
    /// holding exactly what was written before this call.
    ///
    /// # Errors
    /// RocksDB cannot create it (the folder exists, the disk is full …).
    pub fn checkpoint(&self, dir: &Path) -> Result<(), EngineError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.shared.db)
            .map_err(|e| self.shared.error("checkpoint", e))?;
        checkpoint
            .create_checkpoint(dir)
            .map_err(|e| self.shared.error("checkpoint", e))
    }

    /// The directory the database lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Estimated bytes of live data: what the files would shrink to if every
    /// deleted or overwritten version were compacted away (RocksDB's
    /// `estimate-live-data-size`), plus the unflushed memtables. etcd's
    /// `dbSizeInUse`; cheap (no I/O).
    #[must_use]
    pub fn size_in_use_bytes(&self) -> u64 {
        self.shared
            .property(ESTIMATE_LIVE_DATA_SIZE)
            .saturating_add(self.shared.property(CUR_SIZE_ALL_MEM_TABLES))
    }

    /// Flushes now and releases this handle, reporting a flush error that a
    /// plain drop could only log.
    ///
    /// The database itself closes once every other clone and every snapshot
    /// is gone too (and flushes once more then, which is cheap when nothing
    /// was written in between).
    ///
    /// # Errors
    /// The flush failed; data written since the last successful flush may be
    /// lost on a crash and must be replayed from the WAL.
    pub fn close(self) -> Result<(), EngineError> {
        self.shared.flush()
    }
}

impl KvRead for RocksEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.shared.get(key, &ReadOptions::default())
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        let Some(read_opts) = scan_read_options(start, end) else {
            return Box::new(std::iter::empty());
        };
        // A RocksDB iterator reads an implicit snapshot taken here, so the
        // scan is consistent even while writes continue.
        let iter = self.shared.db.raw_iterator_opt(read_opts);
        Box::new(RocksScan::new(iter, &self.shared, start, end))
    }
}

impl KvEngine for RocksEngine {
    type Snapshot = RocksSnapshot;

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.shared.read_only {
            return Err(self.shared.error("write", "the database is open read-only"));
        }
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(k, v) => rocks_batch.put(k, v),
                BatchOp::Delete(k) => rocks_batch.delete(k),
            }
        }
        // RocksDB applies a batch atomically and in order, so a later op on
        // the same key wins, as the trait requires.
        self.shared
            .db
            .write_opt(rocks_batch, &self.shared.write_opts)
            .map_err(|e| self.shared.error("write", e))
    }

    fn snapshot(&self) -> RocksSnapshot {
        RocksSnapshot {
            inner: OwnedSnapshot::new(Arc::clone(&self.shared)),
        }
    }

    /// Flushes the memtables and waits for the SST files (and the MANIFEST
    /// naming them) to be synced. Call it before deleting WAL segments.
    fn persist(&self) -> Result<(), EngineError> {
        self.shared.flush()
    }

    /// Bytes of all SST files (including ones still held by snapshots or
    /// running compactions, i.e. disk use) plus the unflushed memtables.
    fn size_bytes(&self) -> u64 {
        self.shared
            .property(TOTAL_SST_FILES_SIZE)
            .saturating_add(self.shared.property(CUR_SIZE_ALL_MEM_TABLES))
    }

    /// Flushes, then compacts the whole key range into the bottom level,
    /// which drops tombstones and overwritten versions (what etcd's
    /// defragment achieves for bbolt).
    fn defragment(&self) -> Result<(), EngineError> {
        if self.shared.read_only {
            return Err(self
                .shared
                .error("defragment", "the database is open read-only"));
        }
        self.shared.flush()?;
        self.shared.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }
}

/// A point-in-time view of a [`RocksEngine`]; `'static`, `Send` and `Sync`.
///
/// It keeps the database open (and pins the data it sees against
/// compaction) until dropped, so do not hold one longer than a request.
pub struct RocksSnapshot {
    inner: OwnedSnapshot,
}

impl std::fmt::Debug for RocksSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksSnapshot")
            .field("path", &self.inner.owner().path)
            .field("sequence", &self.inner.snapshot().sequence_number())
            .finish()
    }
}

impl KvRead for RocksSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let mut read_opts = ReadOptions::default();
        read_opts.set_snapshot(self.inner.snapshot());
        self.inner.owner().get(key, &read_opts)
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        let Some(read_opts) = scan_read_options(start, end) else {
            return Box::new(std::iter::empty());
        };
        // `raw_iterator_opt` sets the snapshot on the read options.
        let iter = self.inner.snapshot().raw_iterator_opt(read_opts);
        Box::new(RocksScan::new(iter, self.inner.owner(), start, end))
    }
}

/// Read options for `[start, end)`, or `None` when the range is empty.
fn scan_read_options(start: &[u8], end: Option<&[u8]>) -> Option<ReadOptions> {
    let mut read_opts = ReadOptions::default();
    if let Some(end) = end {
        if end <= start {
            return None;
        }
        // RocksDB stops at the bound itself, without reading past it (which
        // also spares tombstones beyond the range).
        read_opts.set_iterate_upper_bound(end);
    }
    Some(read_opts)
}

/// An ascending scan over `[start, end)`; yields a storage error at most
/// once, then ends.
struct RocksScan<'a> {
    iter: DBRawIterator<'a>,
    shared: &'a Shared,
    /// Kept to check, at read time, the bound RocksDB enforces.
    end: Option<Vec<u8>>,
    done: bool,
}

impl<'a> RocksScan<'a> {
    fn new(
        mut iter: DBRawIterator<'a>,
        shared: &'a Shared,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> RocksScan<'a> {
        iter.seek(start);
        RocksScan {
            iter,
            shared,
            end: end.map(<[u8]>::to_vec),
            done: false,
        }
    }
}

impl Iterator for RocksScan<'_> {
    type Item = Result<KvPair, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some((key, value)) = self.iter.item() {
            if let Some(end) = &self.end {
                assert!(
                    key < end.as_slice(),
                    "scan yielded {key:?} at or past end {end:?}"
                );
            }
            let pair = (key.to_vec(), value.to_vec());
            self.iter.next();
            return Some(Ok(pair));
        }
        // Invalid iterator: either the range is exhausted or reading failed.
        self.done = true;
        self.iter
            .status()
            .err()
            .map(|e| Err(self.shared.error("scan", e)))
    }
}
