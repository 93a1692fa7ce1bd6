//! End-to-end local-mode puts through the embedding API (`t4_io_real::Node`
//! on RocksDB and WAL files in a temporary directory): everything a client
//! write costs except gRPC — batching into a log entry, WAL append and
//! fdatasync, apply, reply.
//!
//! | name                | one iteration                                                 |
//! |---------------------|---------------------------------------------------------------|
//! | `put_serial`        | one `Node::put`, awaited before the next (latency)            |
//! | `put_concurrent/16` | 16 `Node::put`s in flight at once (16 tasks), all awaited: group commit, they share WAL syncs |
//!
//! Keys are 64 bytes, values 256 bytes (etcd's benchmark), cycling over
//! 10,000 keys. Throughput is in puts per second.
//!
//! `cargo bench --workspace --bench node` (see bench/MICRO.md).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use t4_io_real::{Config, Node};

/// Distinct keys the puts cycle over.
const KEYS: usize = 10_000;
/// Puts in flight per iteration of `put_concurrent`.
const CONCURRENT_PUTS: usize = 16;

fn key(i: usize) -> Vec<u8> {
    format!("key/{:060}", i % KEYS).into_bytes()
}

fn value() -> Vec<u8> {
    vec![b'v'; 256]
}

fn node_put(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let node = runtime
        .block_on(Node::open(Config::new(dir.path())))
        .expect("open node");
    assert_eq!(key(0).len(), 64, "keys are 64 bytes");

    let mut group = c.benchmark_group("node");
    // A put waits for an fdatasync (about a millisecond): criterion's
    // default of 100 samples would not fit in a short measurement time.
    group.sample_size(20);

    group.throughput(Throughput::Elements(1));
    let mut n = 0;
    group.bench_function("put_serial", |b| {
        b.to_async(&runtime).iter(|| {
            n += 1;
            let (node, key) = (node.clone(), key(n));
            async move { node.put(key, value()).await.expect("put") }
        });
    });

    group.throughput(Throughput::Elements(CONCURRENT_PUTS as u64));
    group.bench_with_input(
        BenchmarkId::new("put_concurrent", CONCURRENT_PUTS),
        &CONCURRENT_PUTS,
        |b, &puts| {
            b.to_async(&runtime).iter(|| {
                // Each put is its own task, as independent clients would be.
                let tasks: Vec<_> = (0..puts)
                    .map(|_| {
                        n += 1;
                        let (node, key) = (node.clone(), key(n));
                        tokio::spawn(async move { node.put(key, value()).await })
                    })
                    .collect();
                async move {
                    for task in tasks {
                        task.await.expect("put task").expect("put");
                    }
                }
            });
        },
    );
    group.finish();

    runtime.block_on(node.close()).expect("close node");
    drop(runtime);
    drop(dir);
}

criterion_group!(benches, node_put);
criterion_main!(benches);
