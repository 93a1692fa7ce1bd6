//! The memory store: core's [`MemBucket`] behind a mutex.

use std::sync::{Mutex, MutexGuard};

use futures::future::BoxFuture;
use t4_core::object::{MemBucket, ObjectOp, ObjectResult};

use super::ObjectStore;

/// Objects in memory, with exactly the semantics of [`MemBucket`] (which
/// validates keys itself). Every operation completes at once.
#[derive(Debug, Default)]
pub struct MemStore {
    bucket: Mutex<MemBucket>,
}

impl MemStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The bucket itself, for tests and tools that inspect what was
    /// written. Hold the guard briefly: operations wait for it.
    pub fn bucket(&self) -> MutexGuard<'_, MemBucket> {
        // A panic while holding the lock cannot leave the bucket half
        // updated: `MemBucket::execute` changes it with one insert/remove.
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ObjectStore for MemStore {
    fn execute(&self, op: ObjectOp) -> BoxFuture<'_, ObjectResult> {
        let result = self.bucket().execute(op);
        Box::pin(std::future::ready(result))
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
