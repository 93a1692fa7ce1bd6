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

/// The same log applied to RocksDB and to MemEngine gives the same
/// consistency hashes (etcd HashKV / Hash): hashes depend on the data, not
/// on the engine.
#[test]
fn hashes_match_mem_engine() {
    use t4_core::kv::{DeleteRangeRequest, PutRequest, WriteRequest};
    use t4_core::log::Entry;
    use t4_core::mvcc::{hash_all, hash_kv, Store};
    use t4_core::{Index, KvEngine, MemEngine, Term};

    fn apply<E: KvEngine>(engine: &E) {
        let mut store = Store::open(engine).expect("open");
        for i in 0..200u64 {
            let req = if i % 7 == 6 {
                WriteRequest::DeleteRange(DeleteRangeRequest {
                    key: format!("k{}", i % 13).into_bytes(),
                    ..DeleteRangeRequest::default()
                })
            } else {
                WriteRequest::Put(PutRequest {
                    key: format!("k{}", i % 13).into_bytes(),
                    value: format!("v{i}").into_bytes(),
                    ..PutRequest::default()
                })
            };
            let entry = Entry::write(Term(1), Index(i + 1), req);
            let _ = store.apply(engine, &entry).expect("engine");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rocks = RocksEngine::open(dir.path(), RocksOptions::default()).expect("open");
    let mem = MemEngine::new();
    apply(&rocks);
    apply(&mem);
    assert_eq!(hash_kv(&rocks.snapshot(), 0), hash_kv(&mem, 0));
    assert_eq!(hash_kv(&rocks.snapshot(), 50), hash_kv(&mem, 50));
    assert_eq!(hash_all(&rocks.snapshot()), hash_all(&mem));
}
