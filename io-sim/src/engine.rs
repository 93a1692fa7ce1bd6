//! The simulated engine: core's [`MemEngine`] plus a durable image on the
//! fake disk that behaves like RocksDB with its own WAL disabled (io-real's
//! setup: our WAL is the log).
//!
//! - A write goes to the live map at once (the memtable) and is *not*
//!   durable yet.
//! - [`KvEngine::persist`] (a flush, asked for by `TrimWal` before WAL
//!   segments are deleted) makes everything so far durable.
//! - RocksDB also flushes memtables on its own, whenever it likes, in write
//!   order. So after a crash the engine holds the last persisted state plus a
//!   random prefix of the writes since ([`EngineImage::crash`]); the node then
//!   replays the WAL from the engine's applied index + 1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use madsim::rand::Rng;
use t4_core::engine::BatchOp;
use t4_core::engine::{EngineError, KvRead, MemSnapshot, ScanIter};
use t4_core::{KvEngine, MemEngine, WriteBatch};

use crate::disk::Disk;

/// What survives of the engine: the state at the last persist and the
/// writes since, of which a crash keeps a random prefix.
#[derive(Clone, Debug, Default)]
pub struct EngineImage {
    /// The engine was created (RocksDB's `CURRENT` exists): a start finds
    /// an engine to open rather than restoring one from the bucket.
    exists: bool,
    base: Option<MemSnapshot>,
    since: Vec<Arc<WriteBatch>>,
}

impl EngineImage {
    /// An image holding exactly `snapshot`, durably (a restored checkpoint
    /// renamed into place).
    pub(crate) fn restored(snapshot: MemSnapshot) -> EngineImage {
        EngineImage {
            exists: true,
            base: Some(snapshot),
            since: Vec::new(),
        }
    }

    /// Whether the engine was ever created on this disk.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Keeps a random prefix of the writes since the last persist and makes
    /// the result the new base.
    pub(crate) fn crash(&mut self, rng: &mut impl Rng) {
        let keep = rng.gen_range(0..=self.since.len());
        self.since.truncate(keep);
        let engine = self.materialise();
        self.base = Some(engine.snapshot());
        self.since.clear();
    }

    /// A fresh engine holding this image.
    fn materialise(&self) -> MemEngine {
        let engine = MemEngine::new();
        if let Some(base) = &self.base {
            let mut batch = WriteBatch::default();
            for item in base.scan(b"", None) {
                let (k, v) = item.expect("MemSnapshot scans cannot fail");
                batch.put(k, v);
            }
            engine.write(batch).expect("MemEngine writes cannot fail");
        }
        for batch in &self.since {
            engine
                .write(WriteBatch::clone(batch))
                .expect("MemEngine writes cannot fail");
        }
        engine
    }
}

/// A [`KvEngine`] for one simulated node, backed by its [`Disk`].
#[derive(Clone, Debug)]
pub struct SimEngine {
    live: MemEngine,
    disk: Disk,
    /// Keys plus values, kept up to date on every write (`MemEngine`
    /// recounts the whole map, too slow for a call per applied batch).
    size: Arc<AtomicU64>,
}

impl SimEngine {
    /// Opens the engine image on `disk`, creating an empty one on a new
    /// disk.
    #[must_use]
    pub fn open(disk: &Disk) -> SimEngine {
        let live = disk.with_engine_image(|image| {
            image.exists = true;
            image.materialise()
        });
        SimEngine {
            size: Arc::new(AtomicU64::new(live.size_bytes())),
            live,
            disk: disk.clone(),
        }
    }
}

impl KvRead for SimEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.live.get(key)
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        self.live.scan(start, end)
    }
}

impl KvEngine for SimEngine {
    type Snapshot = MemSnapshot;

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        // Value lengths as of the batch's previous op on the same key.
        let mut seen: BTreeMap<&[u8], Option<usize>> = BTreeMap::new();
        let mut size = self.size.load(Ordering::Relaxed);
        for op in &batch.ops {
            let (key, new) = match op {
                BatchOp::Put(k, v) => (k.as_slice(), Some(v.len())),
                BatchOp::Delete(k) => (k.as_slice(), None),
            };
            let old = match seen.get(key) {
                Some(old) => *old,
                None => self.live.get(key)?.map(|v| v.len()),
            };
            size -= old.map_or(0, |v| (key.len() + v) as u64);
            size += new.map_or(0, |v| (key.len() + v) as u64);
            seen.insert(key, new);
        }
        let batch = Arc::new(batch);
        self.live.write(WriteBatch::clone(&batch))?;
        self.disk.with_engine_image(|image| image.since.push(batch));
        self.size.store(size, Ordering::Relaxed);
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot {
        self.live.snapshot()
    }

    fn persist(&self) -> Result<(), EngineError> {
        let snapshot = self.live.snapshot();
        self.disk.with_engine_image(|image| {
            image.base = Some(snapshot);
            image.since.clear();
        });
        Ok(())
    }

    fn size_bytes(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn defragment(&self) -> Result<(), EngineError> {
        Ok(())
    }
}
