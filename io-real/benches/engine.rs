//! MVCC micro-benchmarks on `RocksEngine`: the same put, get and range
//! benchmarks as core's `MemEngine` run (core/benches/support/mvcc.rs,
//! included here so both engines run identical code), each fixture in a
//! fresh temporary directory with the default `RocksOptions`.
//!
//! `cargo bench --workspace --bench engine` (see bench/MICRO.md).

use criterion::{criterion_group, criterion_main, Criterion};
use t4_io_real::engine::{RocksEngine, RocksOptions};

#[path = "../../core/benches/support/mvcc.rs"]
mod mvcc_support;

fn rocks_engine(c: &mut Criterion) {
    mvcc_support::bench_mvcc(c, "rocks", || {
        let dir = tempfile::tempdir().expect("temporary directory");
        let engine =
            RocksEngine::open(&dir.path().join("db"), RocksOptions::default()).expect("open");
        (engine, dir)
    });
}

criterion_group!(benches, rocks_engine);
criterion_main!(benches);
