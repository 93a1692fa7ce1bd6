//! The MVCC micro-benchmarks, generic over the engine, so `MemEngine`
//! (core/benches/mvcc.rs) and `RocksEngine` (io-real/benches/engine.rs) run
//! exactly the same code and their figures compare. io-real includes this
//! file with `#[path]`; it only uses t4-core's public API.
//!
//! The data set follows etcd's `benchmark` tool: keys of 64 bytes, values of
//! 256 bytes, 10,000 keys. [`Fixture::populate`] writes every key twice, so
//! the store is at revision 20,001 and every key has a historical version at
//! revision [`HISTORICAL_REVISION`] (10,001) that differs from its current
//! one:
//!
//! ```text
//! entry                  revision        key i afterwards (create, mod, version)
//! (empty store)          1
//! put key(i) = value(i)  2 + i           (2 + i, 2 + i, 1)           i in 0..10,000
//! put key(i) = value(i)  10,002 + i      (2 + i, 10,002 + i, 2)      i in 0..10,000
//! range key(i) @10,001                   (2 + i, 2 + i, 1)           the historical read
//! ```
//!
//! Benchmarks (one criterion group per engine, `mvcc/<engine>`):
//!
//! | name             | one iteration                                                            |
//! |------------------|--------------------------------------------------------------------------|
//! | `put_new_key`    | `Store::apply` of a put of a key the store has never seen                |
//! | `put_overwrite`  | `Store::apply` of a put of one of the 10,000 existing keys               |
//! | `get_current`    | `mvcc::range` of one key at the current revision                         |
//! | `get_historical` | `mvcc::range` of one key at revision 10,001 (a superseded version)       |
//! | `range_100`      | `mvcc::range` of 100 consecutive keys of the 10,000, current revision    |
//!
//! Reads go through a fresh engine snapshot per request, as `Node::range`
//! serves them, so the snapshot's cost is included. Puts include building
//! the log entry (cloning a 64-byte key and a 256-byte value), as the node
//! does per request. Puts grow the store; after [`PUTS_PER_FIXTURE_MAX`]
//! puts the fixture is rebuilt outside the timed region, which bounds memory
//! and disk use however many iterations criterion asks for.

use std::cell::OnceCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput};
use t4_core::kv::{PutRequest, RangeRequest, RangeResponse, WriteRequest};
use t4_core::log::Entry;
use t4_core::mvcc::{self, Store};
use t4_core::{Index, KvEngine, Term};

/// Key length in bytes (etcd benchmark `--key-size` in its docs' runs).
pub const KEY_BYTES: usize = 64;
/// Value length in bytes (etcd benchmark `--val-size`).
pub const VALUE_BYTES: usize = 256;
/// Keys in the populated store.
pub const KEYS: usize = 10_000;
/// Keys returned by one `range_100` read.
pub const RANGE_KEYS: usize = 100;
/// The revision at which every key has its first (superseded) version.
pub const HISTORICAL_REVISION: i64 = 1 + KEYS as i64;
/// Puts applied to one fixture before it is rebuilt (bounds memory and disk).
pub const PUTS_PER_FIXTURE_MAX: u64 = 200_000;

/// Key `i`: `"key/"` and `i` zero-padded to [`KEY_BYTES`], so byte order is
/// numeric order and `key(i)..key(i + 100)` holds exactly 100 keys.
#[must_use]
pub fn key(i: usize) -> Vec<u8> {
    let k = format!("key/{i:0width$}", width = KEY_BYTES - 4).into_bytes();
    assert_eq!(k.len(), KEY_BYTES, "key {i} does not fit {KEY_BYTES} bytes");
    k
}

/// A [`VALUE_BYTES`]-byte value, different for each `i`.
#[must_use]
pub fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value/{i}/").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

/// A put of `key` = `value` as the log entry at `index`.
fn put_entry(index: u64, key: Vec<u8>, value: Vec<u8>) -> Entry {
    Entry::write(
        Term(1),
        Index(index),
        WriteRequest::Put(PutRequest {
            key,
            value,
            ..PutRequest::default()
        }),
    )
}

/// A store over an engine, plus whatever must outlive the engine (for
/// RocksDB, its temporary directory: fields drop in declaration order, so
/// the engine closes before the directory is removed).
pub struct Fixture<E, G> {
    engine: E,
    store: Store,
    /// Index of the next entry to apply.
    next_index: u64,
    /// Puts applied since the fixture was built.
    puts: u64,
    _guard: G,
}

impl<E: KvEngine, G> Fixture<E, G> {
    /// A fixture over an empty engine.
    ///
    /// # Panics
    /// The engine is not empty or fails.
    pub fn new((engine, guard): (E, G)) -> Fixture<E, G> {
        let store = Store::open(&engine).expect("open store");
        assert_eq!(store.meta().current_revision, 1, "engine must be empty");
        Fixture {
            engine,
            store,
            next_index: 1,
            puts: 0,
            _guard: guard,
        }
    }

    /// A fixture holding the data set of the module doc.
    pub fn populated(engine_and_guard: (E, G)) -> Fixture<E, G> {
        let mut f = Fixture::new(engine_and_guard);
        for i in 0..2 * KEYS {
            f.put(&key(i % KEYS), &value(i));
        }
        assert_eq!(
            f.store.meta().current_revision,
            1 + 2 * KEYS as i64,
            "every put of the data set takes one revision"
        );
        f.puts = 0;
        f
    }

    /// Applies a put (the timed operation of the put benchmarks).
    fn put(&mut self, key: &[u8], value: &[u8]) {
        let entry = put_entry(self.next_index, key.to_vec(), value.to_vec());
        let applied = self.store.apply(&self.engine, &entry).expect("apply");
        assert!(applied.result.is_ok(), "put failed: {:?}", applied.result);
        self.next_index += 1;
        self.puts += 1;
    }
}

/// The read benchmarks' store and requests, built once: reads never change
/// the store.
struct ReadSet<E, G> {
    fixture: Fixture<E, G>,
    current: Vec<RangeRequest>,
    historical: Vec<RangeRequest>,
    ranges: Vec<RangeRequest>,
}

impl<E: KvEngine, G> ReadSet<E, G> {
    /// Builds the requests over a populated fixture and checks one answer of
    /// each kind, so a broken read cannot produce a fast, meaningless figure.
    fn new(fixture: Fixture<E, G>) -> ReadSet<E, G> {
        let single = |i: usize, revision: i64| RangeRequest {
            key: key(i),
            revision,
            ..RangeRequest::default()
        };
        let set = ReadSet {
            fixture,
            current: (0..KEYS).map(|i| single(i, 0)).collect(),
            historical: (0..KEYS).map(|i| single(i, HISTORICAL_REVISION)).collect(),
            ranges: (0..KEYS - RANGE_KEYS)
                .step_by(RANGE_KEYS / 4)
                .map(|i| RangeRequest {
                    key: key(i),
                    range_end: key(i + RANGE_KEYS),
                    ..RangeRequest::default()
                })
                .collect(),
        };
        let now = set.read(&set.current[7]);
        assert_eq!(now.kvs.len(), 1, "get_current finds the key");
        assert_eq!(now.kvs[0].version, 2, "current version is the second put");
        let then = set.read(&set.historical[7]);
        assert_eq!(then.kvs.len(), 1, "get_historical finds the key");
        assert_eq!(
            (then.kvs[0].version, then.kvs[0].mod_revision),
            (1, 2 + 7),
            "historical read sees the first put"
        );
        for req in [&set.ranges[0], set.ranges.last().expect("non-empty")] {
            let r = set.read(req);
            assert_eq!(r.kvs.len(), RANGE_KEYS, "range returns {RANGE_KEYS} keys");
        }
        set
    }

    /// One read (the timed operation): a snapshot, then `mvcc::range` on it.
    fn read(&self, req: &RangeRequest) -> RangeResponse {
        mvcc::range(&self.fixture.engine.snapshot(), req).expect("read")
    }

    /// Times reads cycling through `reqs`, one per iteration.
    fn bench(&self, b: &mut Bencher<'_>, reqs: &[RangeRequest]) {
        let mut n = 0;
        b.iter(|| {
            black_box(self.read(&reqs[n]));
            n = (n + 1) % reqs.len();
        });
    }
}

/// Keys and values of the put benchmarks, built once so the timed loop
/// only copies them (as a node copies a request into its log entry).
struct PutData {
    /// `key(i)` for `i` in `0..KEYS + PUTS_PER_FIXTURE_MAX`.
    keys: Vec<Vec<u8>>,
    /// A few distinct values, used in turn.
    values: Vec<Vec<u8>>,
}

impl PutData {
    fn new() -> PutData {
        PutData {
            keys: (0..KEYS + PUTS_PER_FIXTURE_MAX as usize).map(key).collect(),
            values: (0..16).map(value).collect(),
        }
    }
}

/// Times `iters` puts, rebuilding the fixture (untimed) whenever it has
/// taken [`PUTS_PER_FIXTURE_MAX`] puts. `key_of(n)` is the index in
/// `data.keys` of the fixture's `n`-th put (`n < PUTS_PER_FIXTURE_MAX`).
// Benchmarks are measurement code, not core: they must read the clock.
#[allow(clippy::disallowed_methods)]
fn time_puts<E: KvEngine, G>(
    fixture: &mut Option<Fixture<E, G>>,
    make: &mut impl FnMut() -> (E, G),
    data: &PutData,
    iters: u64,
    key_of: impl Fn(u64) -> usize,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        if fixture
            .as_ref()
            .is_none_or(|f| f.puts >= PUTS_PER_FIXTURE_MAX)
        {
            *fixture = None; // Close the old engine before opening a new one.
            *fixture = Some(Fixture::populated(make()));
        }
        let f = fixture.as_mut().expect("just built");
        let chunk = (iters - done).min(PUTS_PER_FIXTURE_MAX - f.puts);
        let first = f.puts;
        let start = Instant::now();
        for n in first..first + chunk {
            let value = &data.values[n as usize % data.values.len()];
            f.put(&data.keys[key_of(n)], value);
        }
        total += start.elapsed();
        done += chunk;
    }
    total
}

/// Registers the group `mvcc/<engine>`; `make` returns a fresh, empty engine
/// (and what must outlive it) each time a fixture is built. Fixtures are
/// built on first use, so a filter that skips benchmarks skips their setup.
pub fn bench_mvcc<E: KvEngine, G>(
    c: &mut Criterion,
    engine: &str,
    mut make: impl FnMut() -> (E, G),
) {
    let mut group = c.benchmark_group(format!("mvcc/{engine}"));
    group.throughput(Throughput::Elements(1));

    // New keys continue after the data set's: key(10,000), key(10,001), …
    let data = OnceCell::new();
    let mut fixture = None;
    group.bench_function("put_new_key", |b| {
        let data = data.get_or_init(PutData::new);
        b.iter_custom(|iters| {
            time_puts(&mut fixture, &mut make, data, iters, |n| KEYS + n as usize)
        });
    });
    fixture = None;
    group.bench_function("put_overwrite", |b| {
        let data = data.get_or_init(PutData::new);
        b.iter_custom(|iters| {
            time_puts(&mut fixture, &mut make, data, iters, |n| n as usize % KEYS)
        });
    });
    drop((fixture, data));

    let reads = OnceCell::new();
    let mut read_set = || reads.get_or_init(|| ReadSet::new(Fixture::populated(make())));
    group.bench_function("get_current", |b| {
        let set = read_set();
        set.bench(b, &set.current);
    });
    group.bench_function("get_historical", |b| {
        let set = read_set();
        set.bench(b, &set.historical);
    });
    group.throughput(Throughput::Elements(RANGE_KEYS as u64));
    group.bench_function("range_100", |b| {
        let set = read_set();
        set.bench(b, &set.ranges);
    });
    group.finish();
}
