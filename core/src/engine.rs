//! The storage engine boundary: a synchronous, ordered byte-key store.
//!
//! Core owns all MVCC logic (`crate::mvcc`) and talks to storage only through
//! these traits. `MemEngine` (here, a `BTreeMap`) serves unit tests and the
//! simulator; io-real implements the same traits over RocksDB. Every engine
//! must pass the same conformance suite (`crate::testkit`).
//!
//! Contract:
//! - `write` applies a batch atomically: a reader sees all of it or none of it.
//! - `snapshot` returns a consistent, immutable view that later writes do not
//!   change; it may outlive the call and move to another thread.
//! - `scan` yields keys in ascending byte order.
//! - Writes need not be durable when `write` returns (our WAL is the source
//!   of durability); `persist` makes every write so far durable.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

/// A storage failure. Core treats it as fatal for the write path (the node
/// stops accepting writes rather than diverge from its log).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("storage engine: {0}")]
pub struct EngineError(pub String);

/// One ascending key-value pair from a scan.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// The boxed iterator a scan returns.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KvPair, EngineError>> + 'a>;

/// Read access shared by engines and their snapshots.
pub trait KvRead {
    /// The value stored under `key`.
    ///
    /// # Errors
    /// Storage failure.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Keys in `[start, end)` in ascending order; `end == None` is unbounded.
    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a>;
}

/// One mutation in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` (no error if absent).
    Delete(Vec<u8>),
}

/// Mutations applied atomically, in order (a later op on the same key wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The ops in application order.
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Adds a put.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(key, value));
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(key));
    }

    /// Whether the batch has no ops.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A storage engine.
pub trait KvEngine: KvRead + Send + Sync {
    /// A consistent read-only view.
    type Snapshot: KvRead + Send + Sync + 'static;

    /// Applies `batch` atomically.
    ///
    /// # Errors
    /// Storage failure; nothing of the batch is visible then.
    fn write(&self, batch: WriteBatch) -> Result<(), EngineError>;

    /// A consistent view of the current state.
    fn snapshot(&self) -> Self::Snapshot;

    /// Makes every write so far durable (survives power loss).
    ///
    /// # Errors
    /// Storage failure.
    fn persist(&self) -> Result<(), EngineError>;

    /// Approximate on-disk (or in-memory) size of the data, in bytes.
    fn size_bytes(&self) -> u64;

    /// Rewrites the engine's files to drop deleted and overwritten data
    /// (etcd's `Defragment`). May take long; contents are unchanged.
    ///
    /// # Errors
    /// Storage failure.
    fn defragment(&self) -> Result<(), EngineError>;
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory engine over a `BTreeMap`.
///
/// Snapshots share the map through an `Arc`; a write while a snapshot is alive
/// copies the map (copy-on-write), which is fine for tests and simulation.
#[derive(Clone, Debug, Default)]
pub struct MemEngine {
    map: Arc<RwLock<Arc<Map>>>,
}

impl MemEngine {
    /// An empty engine.
    #[must_use]
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    fn current(&self) -> Arc<Map> {
        Arc::clone(&self.map.read().expect("MemEngine lock poisoned"))
    }
}

/// A point-in-time view of a [`MemEngine`].
#[derive(Clone, Debug)]
pub struct MemSnapshot {
    map: Arc<Map>,
}

fn scan_map<'a>(map: &'a Map, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
    let upper = match end {
        Some(e) => {
            if e <= start {
                return Box::new(std::iter::empty());
            }
            Bound::Excluded(e.to_vec())
        }
        None => Bound::Unbounded,
    };
    Box::new(
        map.range((Bound::Included(start.to_vec()), upper))
            .map(|(k, v)| Ok((k.clone(), v.clone()))),
    )
}

impl KvRead for MemSnapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.map.get(key).cloned())
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        scan_map(&self.map, start, end)
    }
}

impl KvRead for MemEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.current().get(key).cloned())
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        // The iterator must not hold the lock; iterate an owned snapshot.
        let snap = self.current();
        let items: Vec<_> = scan_map(&snap, start, end).collect();
        Box::new(items.into_iter())
    }
}

impl KvEngine for MemEngine {
    type Snapshot = MemSnapshot;

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let mut guard = self.map.write().expect("MemEngine lock poisoned");
        let map = Arc::make_mut(&mut guard);
        for op in batch.ops {
            match op {
                BatchOp::Put(k, v) => {
                    map.insert(k, v);
                }
                BatchOp::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot {
            map: self.current(),
        }
    }

    fn persist(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn size_bytes(&self) -> u64 {
        self.current()
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    /// A `BTreeMap` holds no garbage: nothing to do.
    fn defragment(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot does not see writes made after it was taken.
    #[test]
    fn snapshot_is_isolated() {
        let e = MemEngine::new();
        let mut b = WriteBatch::default();
        b.put(b"a".to_vec(), b"1".to_vec());
        e.write(b).expect("write");
        let s = e.snapshot();
        let mut b = WriteBatch::default();
        b.put(b"a".to_vec(), b"2".to_vec());
        b.put(b"b".to_vec(), b"3".to_vec());
        e.write(b).expect("write");
        assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(s.scan(b"", None).count(), 1);
        assert_eq!(e.scan(b"", None).count(), 2);
        assert_eq!(e.scan(b"b", Some(b"a")).count(), 0);
    }
}
