//! Bucket mode with asynchronous WAL upload (`wal_sync_upload = false`) on
//! real files and a directory store: writes are acknowledged before their
//! upload, the bucket catches up within the segment age, a node that
//! crashed with applied entries not uploaded (some persisted in its engine,
//! some only in its local WAL) uploads them at its next start, and a wiped
//! data directory after a clean close restores everything from the bucket.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use t4_core::bucket::layout::{parse_wal_key, WAL_PREFIX};
use t4_core::bucket::wal_object;
use t4_core::object::{ObjectOp, ObjectReply, LIST_KEYS_MAX};
use t4_io_real::engine::RocksOptions;
use t4_io_real::object::{DirStore, ObjectStore, StoreConfig};
use t4_io_real::{Config, Node, RocksEngine};

fn config(data: &Path, bucket: &Path, segment_max_age: Duration) -> Config {
    let mut c = Config::new(data);
    c.node_id = "async-test".into();
    c.object_store = Some(StoreConfig::Directory(bucket.to_path_buf()));
    c.checkpoint_interval = None;
    c.wal_sync_upload = false;
    c.segment_max_age = segment_max_age;
    c
}

fn store(bucket: &Path) -> Arc<dyn ObjectStore> {
    Arc::new(DirStore::open(bucket).expect("dir store"))
}

/// The bucket's WAL objects as `(first, last)` index ranges, in order.
async fn wal_objects(store: &dyn ObjectStore) -> Vec<(u64, u64)> {
    let reply = store
        .execute(ObjectOp::List {
            prefix: WAL_PREFIX.into(),
            start_after: None,
            max_keys: LIST_KEYS_MAX,
        })
        .await
        .expect("list");
    let ObjectReply::Listed { objects, truncated } = reply else {
        panic!("{reply:?}")
    };
    assert!(!truncated, "few objects in these tests");
    let mut out = Vec::new();
    for object in objects {
        let first = parse_wal_key(&object.key).expect("a WAL key");
        let reply = store
            .execute(ObjectOp::Get {
                key: object.key.clone(),
            })
            .await
            .expect("get");
        let ObjectReply::Got { body, .. } = reply else {
            panic!("{reply:?}")
        };
        let (_, entries) = wal_object::decode(&object.key, first, &body).expect("decodes");
        out.push((first.0, entries.last().expect("not empty").index));
    }
    out
}

/// The last index the bucket's WAL holds (0: none).
async fn bucket_end(store: &dyn ObjectStore) -> u64 {
    wal_objects(store).await.last().map_or(0, |&(_, last)| last)
}

async fn write_keys(node: &Node, range: std::ops::Range<usize>) {
    for i in range {
        node.put(format!("key-{i:05}"), format!("value-{i}"))
            .await
            .expect("put");
    }
}

async fn check_keys(node: &Node, range: std::ops::Range<usize>) {
    for i in range {
        let key = format!("key-{i:05}");
        let kv = node
            .get(key.clone())
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(kv.value, format!("value-{i}").into_bytes(), "{key}");
    }
}

/// Writes are acknowledged with nothing of them in the bucket yet; the
/// bucket holds them all within the segment age (plus an upload's time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_acknowledged_before_upload_and_uploaded_within_the_age() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let age = Duration::from_secs(2);
    let node = Node::open(config(data.path(), bucket.path(), age))
        .await
        .expect("open");
    let s = store(bucket.path());
    assert_eq!(bucket_end(&*s).await, 1, "the start-up's fence");
    let started = Instant::now();
    write_keys(&node, 0..20).await;
    let acknowledged = started.elapsed();
    let applied = node.status().applied_index.0;
    assert_eq!(applied, 21);
    assert!(
        acknowledged < age,
        "20 local writes take far less than {age:?}: {acknowledged:?}"
    );
    assert_eq!(
        bucket_end(&*s).await,
        1,
        "acknowledged, not uploaded yet (the segment is younger than {age:?})"
    );
    let deadline = age + Duration::from_secs(3);
    while bucket_end(&*s).await < applied {
        assert!(
            started.elapsed() < deadline,
            "the bucket did not catch up within {deadline:?}: {:?}",
            wal_objects(&*s).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = started.elapsed();
    assert!(caught_up >= age, "sealed by age, not before: {caught_up:?}");
    assert_eq!(
        wal_objects(&*s).await,
        [(1, 1), (2, 21)],
        "one object for the segment"
    );
    node.close().await.expect("close");
}

const CRASH_CHILD_ENV: &str = "T4_ASYNC_UPLOAD_CRASH_CHILD";

/// Not a test by itself: the child half of
/// `a_crashed_node_uploads_the_rest_at_start_and_a_wiped_one_restores_everything`.
/// Writes 30 keys (acknowledged, none uploaded: the segment age is an
/// hour), persists the engine after the first 20, then aborts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dirs) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let (data, bucket) = dirs.split_once('|').expect("data|bucket");
    let age = Duration::from_secs(3600);
    let node = Node::open(config(Path::new(data), Path::new(bucket), age))
        .await
        .expect("open");
    write_keys(&node, 0..20).await;
    // The engine persists entries 1..=21 (a defragment flushes it), ahead
    // of the bucket; the next 10 are only in the local WAL.
    node.defragment().await.expect("defragment");
    write_keys(&node, 20..30).await;
    std::process::abort();
}

/// A node killed with 30 acknowledged writes not uploaded (20 in its
/// engine, 10 only in its local WAL) uploads them all at its next start,
/// before its fence; after more writes and a clean close (which uploads
/// the open segment), a wiped data directory restores every write from
/// the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_uploads_the_rest_at_start_and_a_wiped_one_restores_everything() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "crash_child", "--test-threads=1", "--nocapture"])
        .env(
            CRASH_CHILD_ENV,
            format!("{}|{}", data.path().display(), bucket.path().display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run child");
    assert!(!status.success(), "the child must abort, got {status}");
    let s = store(bucket.path());
    assert_eq!(
        wal_objects(&*s).await,
        [(1, 1)],
        "the child uploaded nothing but its fence"
    );
    {
        let engine_dir = Config::new(data.path()).engine_dir();
        let engine = RocksEngine::open_read_only(&engine_dir, RocksOptions::default())
            .expect("the child's engine");
        let meta = t4_core::mvcc::read_meta(&engine).expect("meta");
        assert_eq!(
            meta.applied_index, 21,
            "the engine holds 20 writes the bucket lacks"
        );
    }

    let age = Duration::from_secs(3600);
    let node = Node::open(config(data.path(), bucket.path(), age))
        .await
        .expect("reopen uploads what the bucket lacks");
    check_keys(&node, 0..30).await;
    assert_eq!(
        wal_objects(&*s).await,
        [(1, 1), (2, 32)],
        "entries 2..=31 (20 read back from the local WAL, 10 from its tail) and the barrier, \
         as one fence object"
    );
    write_keys(&node, 30..40).await;
    let revision = node.current_revision();
    assert_eq!(
        bucket_end(&*s).await,
        32,
        "not uploaded yet: the age is an hour"
    );
    node.close().await.expect("close");
    assert_eq!(
        bucket_end(&*s).await,
        42,
        "a clean close uploads the open segment"
    );

    std::fs::remove_dir_all(data.path()).expect("wipe the data dir");
    let node = Node::open(config(data.path(), bucket.path(), age))
        .await
        .expect("restore from the bucket");
    check_keys(&node, 0..40).await;
    assert_eq!(node.current_revision(), revision);
    node.close().await.expect("close");
}
