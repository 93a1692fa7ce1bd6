//! A RocksDB snapshot that keeps its database alive, so it can be `'static`.
//!
//! The rocksdb crate's `Snapshot<'a>` borrows the `DB` it was taken from, but
//! `KvEngine::Snapshot` must be `'static` (gRPC handlers hold snapshots while
//! the node thread keeps writing, and may move them between threads). This
//! module pairs the snapshot with an `Arc` of the database's owner. Safe Rust
//! cannot express "borrows from a sibling field", so it takes one small,
//! local piece of `unsafe`; everything outside this module is safe code.
//!
//! Why not a safe alternative: a self-referential crate (`self_cell`,
//! `ouroboros`) would do the same thing behind a macro and add a dependency;
//! taking RocksDB checkpoints or copying the data per snapshot would be far
//! slower; leaking the `DB` (`&'static`) would make closing it impossible.
#![allow(unsafe_code)]

use std::mem::ManuallyDrop;
use std::sync::Arc;

use rocksdb::{Snapshot, DB};

use super::Shared;

/// A RocksDB snapshot together with the owner of the database it reads.
///
/// Invariants (upheld by this module alone; nothing here is `pub` beyond the
/// engine module):
/// 1. `snap` was taken from `owner.db`.
/// 2. `snap` is released (dropped) before `owner` is, in `Drop`.
/// 3. `snap` is only ever handed out as `&'s Snapshot<'s>` with `'s` no longer
///    than a borrow of `self`, never with its fake `'static` lifetime.
pub(super) struct OwnedSnapshot {
    /// Borrows `owner.db`; the `'static` is a lie confined to this module.
    snap: ManuallyDrop<Snapshot<'static>>,
    owner: Arc<Shared>,
}

impl OwnedSnapshot {
    /// Takes a snapshot of `owner.db` at the current sequence number.
    pub(super) fn new(owner: Arc<Shared>) -> OwnedSnapshot {
        let db: *const DB = std::ptr::from_ref(&owner.db);
        // SAFETY: extending the borrow of `owner.db` to `'static` is sound
        // because the `DB` outlives every use of the extended reference:
        // - The `DB` lives inside the `Arc` allocation, whose address does not
        //   change when the `Arc` (or this struct) moves.
        // - `self.owner` keeps that allocation alive, and `Drop` below releases
        //   the snapshot before `owner` is dropped (invariant 2), so the
        //   `Shared` (and its `DB`) can only be destroyed after the snapshot.
        // - Nobody gets `&mut Shared` while a snapshot exists: `Shared` is only
        //   reachable through `Arc`, and the engine never calls `Arc::get_mut`
        //   or `Arc::try_unwrap`; the strong count is >= 1 while we hold it.
        // - The `'static` reference is never exposed (invariant 3): `snapshot()`
        //   shrinks it to the borrow of `self`, so iterators and reads made
        //   from it cannot outlive this struct.
        let db: &'static DB = unsafe { &*db };
        OwnedSnapshot {
            snap: ManuallyDrop::new(db.snapshot()),
            owner,
        }
    }

    /// The snapshot, for no longer than `self` is borrowed.
    ///
    /// `Snapshot<'a>` is covariant in `'a` (it holds `&'a DB`), so the
    /// compiler itself shrinks `'static` to `'_` here; if a future rocksdb
    /// version made it invariant, this would stop compiling rather than
    /// become unsound.
    pub(super) fn snapshot(&self) -> &Snapshot<'_> {
        &self.snap
    }

    /// The shared state of the engine this snapshot was taken from.
    pub(super) fn owner(&self) -> &Shared {
        &self.owner
    }
}

impl Drop for OwnedSnapshot {
    fn drop(&mut self) {
        // SAFETY: `snap` is dropped exactly once, here, and never used after.
        // This runs before the fields are dropped, so the snapshot is released
        // while `owner` still keeps the `DB` open (invariant 2).
        unsafe { ManuallyDrop::drop(&mut self.snap) }
    }
}
