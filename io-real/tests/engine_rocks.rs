//! `RocksEngine` behaviour: the `KvEngine` contract (as `MemEngine`'s tests
//! check it), durability across reopen and crash, concurrency of snapshots.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use t4_core::engine::{EngineError, KvEngine, KvPair, KvRead, WriteBatch};
use t4_io_real::engine::{RocksEngine, RocksOptions};

fn open(path: &Path) -> RocksEngine {
    RocksEngine::open(path, RocksOptions::default()).expect("open")
}

fn put(e: &RocksEngine, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::default();
    b.put(k.to_vec(), v.to_vec());
    e.write(b).expect("write");
}

fn collect(r: &impl KvRead, start: &[u8], end: Option<&[u8]>) -> Vec<KvPair> {
    r.scan(start, end)
        .collect::<Result<Vec<_>, EngineError>>()
        .expect("scan")
}

fn keys(r: &impl KvRead, start: &[u8], end: Option<&[u8]>) -> Vec<Vec<u8>> {
    collect(r, start, end).into_iter().map(|(k, _)| k).collect()
}

/// A snapshot does not see writes made after it was taken (MemEngine's test).
#[test]
fn snapshot_is_isolated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path());
    put(&e, b"a", b"1");
    let s = e.snapshot();
    let mut b = WriteBatch::default();
    b.put(b"a".to_vec(), b"2".to_vec());
    b.put(b"b".to_vec(), b"3".to_vec());
    e.write(b).expect("write");
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
    assert_eq!(s.get(b"b").expect("get"), None);
    assert_eq!(collect(&s, b"", None), vec![(b"a".to_vec(), b"1".to_vec())]);
    assert_eq!(e.get(b"a").expect("get"), Some(b"2".to_vec()));
    assert_eq!(e.scan(b"", None).count(), 2);
    assert_eq!(e.scan(b"b", Some(b"a")).count(), 0);
}

/// Scans are ascending by bytes, include `start`, exclude `end`, treat
/// `None` as unbounded, and are empty when `end <= start`; on the engine and
/// on a snapshot alike.
#[test]
fn scan_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path());
    let all: Vec<&[u8]> = vec![
        b"",
        b"\x00",
        b"a",
        b"a\x00",
        b"ab",
        b"b",
        b"\xff",
        b"\xff\xff",
    ];
    // Insert in reverse to show the order comes from the engine.
    let mut b = WriteBatch::default();
    for k in all.iter().rev() {
        b.put(k.to_vec(), [k, &b"=v"[..]].concat());
    }
    e.write(b).expect("write");
    let s = e.snapshot();

    let owned = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    let check = |name: &str, got: Vec<Vec<u8>>, want: &[&[u8]]| {
        assert_eq!(got, owned(want), "{name}");
    };
    for (who, snap) in [("engine", false), ("snapshot", true)] {
        let ks = |start: &[u8], end: Option<&[u8]>| {
            if snap {
                keys(&s, start, end)
            } else {
                keys(&e, start, end)
            }
        };
        check(who, ks(b"", None), &all);
        check(who, ks(b"a", Some(b"b")), &[b"a", b"a\x00", b"ab"]);
        check(who, ks(b"a\x00", Some(b"ab")), &[b"a\x00"]);
        check(who, ks(b"aa", None), &[b"ab", b"b", b"\xff", b"\xff\xff"]);
        check(who, ks(b"\xff", None), &[b"\xff", b"\xff\xff"]);
        check(who, ks(b"", Some(b"\x00")), &[b""]);
        check(who, ks(b"c", Some(b"d")), &[]);
        check(who, ks(b"b", Some(b"b")), &[]);
        check(who, ks(b"b", Some(b"a")), &[]);
        check(who, ks(b"\xff\xff\xff", None), &[]);
    }
    assert_eq!(
        collect(&e, b"ab", Some(b"b\x00")),
        vec![
            (b"ab".to_vec(), b"ab=v".to_vec()),
            (b"b".to_vec(), b"b=v".to_vec())
        ]
    );
}

/// Ops in one batch apply in order (the last op on a key wins), and a batch
/// is visible all at once; empty values are values, not absence.
#[test]
fn batch_is_atomic_and_ordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path());
    put(&e, b"gone", b"old");
    let before = e.snapshot();

    let mut b = WriteBatch::default();
    b.put(b"k".to_vec(), b"1".to_vec());
    b.delete(b"k".to_vec());
    b.delete(b"back".to_vec());
    b.put(b"back".to_vec(), b"2".to_vec());
    b.put(b"twice".to_vec(), b"a".to_vec());
    b.put(b"twice".to_vec(), b"b".to_vec());
    b.delete(b"gone".to_vec());
    b.delete(b"never-existed".to_vec());
    b.put(b"empty".to_vec(), Vec::new());
    e.write(b).expect("write");
    e.write(WriteBatch::default()).expect("empty batch");

    assert_eq!(e.get(b"k").expect("get"), None);
    assert_eq!(e.get(b"back").expect("get"), Some(b"2".to_vec()));
    assert_eq!(e.get(b"twice").expect("get"), Some(b"b".to_vec()));
    assert_eq!(e.get(b"gone").expect("get"), None);
    assert_eq!(e.get(b"empty").expect("get"), Some(Vec::new()));
    assert_eq!(
        keys(&e, b"", None),
        vec![b"back".to_vec(), b"empty".to_vec(), b"twice".to_vec()]
    );
    // The snapshot taken before sees none of the batch.
    assert_eq!(
        collect(&before, b"", None),
        vec![(b"gone".to_vec(), b"old".to_vec())]
    );
}

/// Clones share one database.
#[test]
fn clones_share_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path());
    let e2 = e.clone();
    put(&e, b"x", b"1");
    assert_eq!(e2.get(b"x").expect("get"), Some(b"1".to_vec()));
    assert_eq!(e2.path(), dir.path());
}

/// Data persisted and then reopened is all there, including deletes.
#[test]
fn reopen_after_persist_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open(dir.path());
        for i in 0..1000u32 {
            put(&e, &i.to_be_bytes(), &i.to_le_bytes());
        }
        let mut b = WriteBatch::default();
        b.delete(7u32.to_be_bytes().to_vec());
        e.write(b).expect("write");
        e.persist().expect("persist");
        e.close().expect("close");
    }
    let e = open(dir.path());
    let got = collect(&e, b"", None);
    assert_eq!(got.len(), 999);
    assert_eq!(e.get(&7u32.to_be_bytes()).expect("get"), None);
    assert_eq!(
        e.get(&999u32.to_be_bytes()).expect("get"),
        Some(999u32.to_le_bytes().to_vec())
    );
}

/// A clean drop (no `persist`, no `close`) flushes: the data survives reopen.
#[test]
fn clean_drop_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open(dir.path());
        let snap_holder = e.clone();
        put(&e, b"k", b"v");
        let s = snap_holder.snapshot();
        drop(e);
        drop(snap_holder);
        // The snapshot alone keeps the database open and readable.
        assert_eq!(s.get(b"k").expect("get"), Some(b"v".to_vec()));
    }
    let e = open(dir.path());
    assert_eq!(e.get(b"k").expect("get"), Some(b"v".to_vec()));
}

/// Opening a database that is already open fails with an error naming the
/// path and the operation; invalid options are rejected before opening.
#[test]
fn open_errors_have_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _e = open(dir.path());
    let err = RocksEngine::open(dir.path(), RocksOptions::default()).expect_err("locked");
    let msg = err.to_string();
    assert!(
        msg.contains("open") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );

    let other = tempfile::tempdir().expect("tempdir");
    let bad = RocksOptions {
        write_buffers_max: 1,
        ..RocksOptions::default()
    };
    let msg = RocksEngine::open(other.path(), bad)
        .expect_err("invalid")
        .to_string();
    assert!(msg.contains("write_buffers_max"), "{msg}");
}

/// A snapshot moved to another thread stays consistent while the engine
/// keeps writing, and outlives every engine handle; an engine scan already
/// under way is consistent too.
#[test]
fn snapshot_survives_move_to_thread_while_writes_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path());
    let n = 500u32;
    let mut b = WriteBatch::default();
    for i in 0..n {
        b.put(i.to_be_bytes().to_vec(), b"old".to_vec());
    }
    e.write(b).expect("write");
    let snap = e.snapshot();
    let mut running_scan = e.scan(b"", None);
    let first = running_scan.next().expect("first").expect("ok");
    assert_eq!(first.1, b"old".to_vec());

    let barrier = Arc::new(Barrier::new(2));
    let reader = {
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            barrier.wait();
            for _ in 0..20 {
                let got = collect(&snap, b"", None);
                assert_eq!(got.len(), n as usize);
                assert!(got.iter().all(|(_, v)| v == b"old"));
                assert_eq!(
                    snap.get(&3u32.to_be_bytes()).expect("get"),
                    Some(b"old".to_vec())
                );
            }
            snap
        })
    };
    barrier.wait();
    let writer = e.clone();
    for round in 0..20u32 {
        let mut b = WriteBatch::default();
        for i in 0..n {
            if i % 2 == 0 {
                b.delete(i.to_be_bytes().to_vec());
            } else {
                b.put(i.to_be_bytes().to_vec(), round.to_be_bytes().to_vec());
            }
        }
        b.put([b"new", &round.to_be_bytes()[..]].concat(), b"x".to_vec());
        writer.write(b).expect("write");
        if round == 10 {
            writer.persist().expect("persist mid-read");
        }
    }
    let rest: Vec<_> = running_scan.collect::<Result<_, _>>().expect("scan");
    assert_eq!(rest.len(), n as usize - 1);
    assert!(rest.iter().all(|(_, v)| v == b"old"));

    drop(writer);
    drop(e);
    // Every engine handle is gone; the snapshot still reads.
    let snap = reader.join().expect("reader thread");
    assert_eq!(collect(&snap, b"", None).len(), n as usize);
}

/// `size_bytes` grows with the data, in memtables and then in SST files.
#[test]
fn size_bytes_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path());
    let empty = e.size_bytes();
    let mut b = WriteBatch::default();
    for i in 0..10_000u32 {
        b.put(format!("key/{i:08}").into_bytes(), vec![b'v'; 100]);
    }
    e.write(b).expect("write");
    let in_memtable = e.size_bytes();
    assert!(in_memtable > empty + 1_000_000, "{empty} -> {in_memtable}");
    e.persist().expect("persist");
    let on_disk = e.size_bytes();
    // lz4 shrinks the repetitive values; the keys alone are ~120 KB.
    assert!(on_disk > empty + 100_000, "{empty} -> {on_disk}");
}

const CRASH_CHILD_ENV: &str = "T4_ENGINE_CRASH_CHILD_DIR";

/// Not a test by itself: the child half of `persisted_data_survives_crash`.
/// Writes, persists, writes more, then aborts without any cleanup.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let e = open(Path::new(&dir));
    put(&e, b"persisted", b"1");
    e.persist().expect("persist");
    put(&e, b"unpersisted", b"2");
    std::process::abort();
}

/// After a crash (process abort, no flush on close), everything written
/// before the last `persist` is there. Writes after it are gone, which
/// shows the engine skips RocksDB's WAL as designed (our WAL replays them).
#[test]
fn persisted_data_survives_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "crash_child", "--test-threads=1", "--nocapture"])
        .env(CRASH_CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run child");
    assert!(!status.success(), "child must abort, got {status}");
    let e = open(dir.path());
    assert_eq!(e.get(b"persisted").expect("get"), Some(b"1".to_vec()));
    assert_eq!(e.get(b"unpersisted").expect("get"), None);
}

/// Measures point-get latency with 100k keys (hits and misses). Run with
/// `cargo test -p t4-io-real --release --test engine_rocks -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, prints ns/op"]
fn measure_point_get_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open(dir.path());
    let n = 100_000u64;
    let key = |i: u64| format!("/registry/pods/default/pod-{i:08}").into_bytes();
    for chunk in 0..(n / 1000) {
        let mut b = WriteBatch::default();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            b.put(key(i), vec![b'v'; 256]);
        }
        e.write(b).expect("write");
    }
    // Permuted order (multiplicative hash) so reads are not sequential.
    let order = |j: u64| (j.wrapping_mul(2_654_435_761)) % n;
    // Keys are built before timing so the figures are the engine's alone.
    let reads = 200_000u64;
    let hits: Vec<Vec<u8>> = (0..reads).map(|j| key(order(j))).collect();
    let misses: Vec<Vec<u8>> = hits.iter().map(|k| [k, &b"x"[..]].concat()).collect();
    let ns_per_op = |t: Instant| t.elapsed().as_nanos() / u128::from(reads);
    let measure = |label: &str, e: &RocksEngine| {
        let t = Instant::now();
        for k in &hits {
            assert!(e.get(k).expect("get").is_some());
        }
        let hit_ns = ns_per_op(t);
        let t = Instant::now();
        for k in &misses {
            assert!(e.get(k).expect("get").is_none());
        }
        let miss_ns = ns_per_op(t);
        let s = e.snapshot();
        let t = Instant::now();
        for k in &hits {
            assert!(s.get(k).expect("get").is_some());
        }
        let snap_ns = ns_per_op(t);
        println!(
            "{label}: get hit {hit_ns} ns/op, get miss {miss_ns} ns/op, \
             snapshot get hit {snap_ns} ns/op (size_bytes {})",
            e.size_bytes()
        );
    };
    measure("100k keys in memtable", &e);
    e.persist().expect("persist");
    measure("100k keys in SST", &e);
}
