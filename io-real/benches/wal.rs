//! WAL micro-benchmarks: one iteration is `Wal::append` of a batch of put
//! entries (64-byte key, 256-byte value, as etcd's benchmark) followed by
//! `Wal::sync` (fdatasync), for batches of 1, 16 and 256 entries — the cost
//! of one group commit of that size. Throughput is in entries per second.
//!
//! The WAL lives in a temporary directory (on the same disk as a node's data
//! when `TMPDIR` is unset). Segment rotation (default 50 MB) happens inside
//! the timed loop, as in a node; segments behind the last are deleted
//! between criterion's batches of iterations, untimed, to bound disk use.
//!
//! `cargo bench --workspace --bench wal` (see bench/MICRO.md).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use t4_core::kv::{PutRequest, WriteRequest};
use t4_core::log::Entry;
use t4_core::{Index, Term};
use t4_io_real::wal::Wal;

/// Batch sizes measured: one write alone, a typical group commit under
/// concurrency 16, and a large one.
const BATCH_ENTRIES: [usize; 3] = [1, 16, 256];
/// WAL segment size (the node's default, `Config::segment_max_size`).
const SEGMENT_BYTES_MAX: u64 = 50 * 1000 * 1000;

/// `count` put entries (64-byte keys, 256-byte values); indexes are set
/// before each append.
fn batch(count: usize) -> Vec<Entry> {
    (0..count)
        .map(|i| {
            let mut key = format!("key/{i:060}").into_bytes();
            key.truncate(64);
            Entry::write(
                Term(1),
                Index(1), // Renumbered before each append.
                WriteRequest::Put(PutRequest {
                    key,
                    value: vec![b'v'; 256],
                    ..PutRequest::default()
                }),
            )
        })
        .collect()
}

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/append_sync");
    // An fdatasync takes about a millisecond: criterion's default of 100
    // samples would not fit in a short measurement time.
    group.sample_size(20);
    for entries in BATCH_ENTRIES {
        group.throughput(Throughput::Elements(entries as u64));
        group.bench_with_input(BenchmarkId::from_parameter(entries), &entries, |b, &n| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let (mut wal, replayed) =
                Wal::open(dir.path(), Index(1), Term(1), SEGMENT_BYTES_MAX).expect("open WAL");
            assert!(replayed.is_empty(), "a new WAL replays nothing");
            let mut entries = batch(n);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let first = wal.last_index().0 + 1;
                    for (i, e) in entries.iter_mut().enumerate() {
                        e.index = first + i as u64;
                    }
                    let start = Instant::now();
                    wal.append(&entries).expect("append");
                    wal.sync().expect("sync");
                    total += start.elapsed();
                }
                // Only the current segment stays: bounded disk use.
                wal.remove_segments_before(Index(wal.last_index().0))
                    .expect("remove old segments");
                total
            });
            drop(wal);
            drop(dir);
        });
    }
    group.finish();
}

criterion_group!(benches, append_sync);
criterion_main!(benches);
