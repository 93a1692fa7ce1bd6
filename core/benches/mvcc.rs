//! MVCC micro-benchmarks on `MemEngine` (the simulator's engine): put, get
//! and range through `Store::apply` and `mvcc::range`. The benchmarks
//! themselves live in `support/mvcc.rs`, shared with io-real's RocksDB run.
//!
//! `cargo bench --workspace --bench mvcc` (see bench/MICRO.md).

use criterion::{criterion_group, criterion_main, Criterion};
use t4_core::MemEngine;

mod support {
    pub mod mvcc;
}

fn mem_engine(c: &mut Criterion) {
    support::mvcc::bench_mvcc(c, "mem", || (MemEngine::new(), ()));
}

criterion_group!(benches, mem_engine);
criterion_main!(benches);
