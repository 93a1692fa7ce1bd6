//! `RocksEngine` passes core's engine conformance suite (the same MVCC
//! scenarios and seeded random sequences `MemEngine` passes).

use std::cell::RefCell;

use t4_io_real::engine::{RocksEngine, RocksOptions};

/// The MVCC conformance suite on RocksDB, with a fresh database per scenario.
#[test]
fn rocks_engine_conforms() {
    // Each engine's directory must outlive it; the suite drops every engine
    // before returning, so the directories are removed after that.
    let dirs = RefCell::new(Vec::new());
    t4_core::testkit::run_conformance(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = RocksEngine::open(dir.path(), RocksOptions::default()).expect("open");
        dirs.borrow_mut().push(dir);
        engine
    });
}
