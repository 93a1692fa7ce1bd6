//! Snapshots end to end: stream a snapshot to a file, restore it into a new
//! data dir, open a node there, and find the same data; corrupt or
//! truncated files and non-empty targets are refused without side effects.

use std::path::{Path, PathBuf};

use tokio_stream::StreamExt;

use t4_io_real::kv::{PutRequest, RangeRequest};
use t4_io_real::snapshot::{SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_MAGIC};
use t4_io_real::{restore_snapshot, Config, Node, RestoreError};

/// Streams `node`'s snapshot into `path`.
async fn snapshot_to_file(node: &Node, path: &Path) {
    let mut stream = node.snapshot().expect("snapshot");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        assert!(!chunk.is_empty() && chunk.len() <= SNAPSHOT_CHUNK_BYTES_MAX);
        bytes.extend_from_slice(&chunk);
    }
    std::fs::write(path, bytes).expect("write snapshot file");
}

fn all_keys() -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    }
}

/// A node with some history: puts, overwrites, a delete, a compaction, a
/// lease with a key, and a value larger than one chunk.
async fn populated(dir: &Path) -> (Node, PathBuf) {
    let node = Node::open(Config::new(dir.join("src")))
        .await
        .expect("open");
    for i in 0..300 {
        node.put(format!("key/{i:03}"), format!("value {i}"))
            .await
            .expect("put");
    }
    node.put("key/000", "overwritten").await.expect("put");
    node.delete_range(t4_io_real::kv::DeleteRangeRequest {
        key: b"key/001".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete");
    node.compact(100).await.expect("compact");
    let lease = node.lease_grant(600, 77).await.expect("grant");
    node.put_request(PutRequest {
        key: b"leased".to_vec(),
        value: b"v".to_vec(),
        lease: lease.id,
        ..PutRequest::default()
    })
    .await
    .expect("put with lease");
    node.put("big", vec![b'x'; SNAPSHOT_CHUNK_BYTES_MAX + 10])
        .await
        .expect("big put");
    let file = dir.join("snap.t4");
    (node, file)
}

/// Snapshot → file → restore → open: same keys, same revisions, same
/// `hash_kv` and `hash`; the restored node keeps writing after the
/// snapshot's revision and survives a restart.
#[tokio::test]
async fn snapshot_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, file) = populated(dir.path()).await;
    snapshot_to_file(&node, &file).await;
    let bytes = std::fs::read(&file).expect("read");
    assert_eq!(&bytes[..8], SNAPSHOT_MAGIC);
    let revision = node.current_revision();
    let hash_kv = node.hash_kv(0).await.expect("hash_kv");
    let hash = node.hash().await.expect("hash");
    let range = node.range(all_keys()).await.expect("range");
    // Writes after the snapshot are not in it.
    node.put("later", "x").await.expect("put");
    node.close().await.expect("close");

    let target = dir.path().join("restored");
    let report = restore_snapshot(&file, &target).expect("restore");
    assert_eq!(report.revision, revision);
    assert_eq!(report.keys, u64::try_from(range.count).expect("count"));
    assert!(report.engine_entries > report.keys);

    let restored = Node::open(Config::new(&target))
        .await
        .expect("open restored");
    assert_eq!(restored.current_revision(), revision);
    assert_eq!(restored.compact_revision(), 100);
    assert_eq!(restored.status().applied_index.0, report.applied_index);
    assert_eq!(restored.hash_kv(0).await.expect("hash_kv"), hash_kv);
    assert_eq!(restored.hash().await.expect("hash"), hash);
    assert_eq!(restored.range(all_keys()).await.expect("range"), range);
    assert!(restored.get("later").await.expect("get").is_none());
    let ttl = restored.lease_time_to_live(77, true).await.expect("ttl");
    assert_eq!(ttl.keys, vec![b"leased".to_vec()], "leases are restored");

    let next = restored.put("after", "restore").await.expect("put");
    assert_eq!(next.revision, revision + 1);
    restored.close().await.expect("close");
    let reopened = Node::open(Config::new(&target)).await.expect("reopen");
    assert_eq!(reopened.current_revision(), revision + 1);
    assert!(reopened.get("after").await.expect("get").is_some());
    reopened.close().await.expect("close");
}

/// The target's parent holds nothing but what the test put there: a failed
/// restore leaves no temporary directory behind.
fn assert_no_leftovers(parent: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(parent)
        .expect("read parent")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

/// A flipped byte, a truncation, a wrong magic or trailing garbage is
/// refused with a clear error, and the target is not created.
#[tokio::test]
async fn corrupt_snapshots_are_refused_without_side_effects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, file) = populated(dir.path()).await;
    snapshot_to_file(&node, &file).await;
    node.close().await.expect("close");
    let good = std::fs::read(&file).expect("read");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let bad = work.join("bad.t4");
    let target = work.join("target");

    let cases: Vec<(&str, Vec<u8>)> = {
        let mut flipped_value = good.clone();
        // Inside the big value (a run of b'x'), so the framing stays intact
        // and only the digest can tell.
        let at = good
            .windows(64)
            .position(|w| w.iter().all(|&b| b == b'x'))
            .expect("the big value is in the snapshot")
            + 1000;
        flipped_value[at] ^= 0x01;
        let mut flipped_digest = good.clone();
        let last = good.len() - 1;
        flipped_digest[last] ^= 0x80;
        let mut flipped_length = good.clone();
        flipped_length[8] ^= 0x40; // the first key length becomes huge
        let mut bad_magic = good.clone();
        bad_magic[7] = b'2';
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        vec![
            ("flipped value byte", flipped_value),
            ("flipped digest byte", flipped_digest),
            ("flipped length byte", flipped_length),
            ("truncated in the records", good[..good.len() / 2].to_vec()),
            ("truncated digest", good[..good.len() - 10].to_vec()),
            ("empty", Vec::new()),
            ("bad magic", bad_magic),
            ("trailing bytes", trailing),
        ]
    };
    for (name, bytes) in cases {
        std::fs::write(&bad, &bytes).expect("write");
        let err = restore_snapshot(&bad, &target).expect_err(name);
        let message = err.to_string();
        match (&err, name) {
            (RestoreError::Corrupt { .. }, "flipped value byte" | "flipped digest byte") => {
                assert!(message.contains("SHA-256 mismatch"), "{name}: {message}");
            }
            (RestoreError::Truncated { .. }, "flipped length byte")
            | (RestoreError::Truncated { .. }, "truncated in the records")
            | (RestoreError::Truncated { .. }, "truncated digest")
            | (RestoreError::Truncated { .. }, "empty")
            | (RestoreError::BadMagic { .. }, "bad magic")
            | (RestoreError::Corrupt { .. }, "trailing bytes") => {}
            _ => panic!("{name}: unexpected error {err:?}"),
        }
        assert!(
            message.contains("bad.t4"),
            "{name}: names the file: {message}"
        );
        assert!(!target.exists(), "{name}: the target was not created");
        assert_no_leftovers(&work, &["bad.t4"]);
    }

    // An existing empty target stays, empty.
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(&bad, &good[..good.len() - 1]).expect("write");
    restore_snapshot(&bad, &target).expect_err("truncated");
    assert_eq!(std::fs::read_dir(&target).expect("read").count(), 0);
    assert_no_leftovers(&work, &["bad.t4", "target"]);
    // ... and the good file restores into it.
    std::fs::write(&bad, &good).expect("write");
    restore_snapshot(&bad, &target).expect("restore into an empty dir");
    assert!(target.join("db").is_dir() && target.join("wal").is_dir());
}

/// A non-empty target is refused and left as it was.
#[tokio::test]
async fn restore_refuses_a_non_empty_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, file) = populated(dir.path()).await;
    snapshot_to_file(&node, &file).await;
    node.close().await.expect("close");
    let target = dir.path().join("occupied");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("keep.txt"), b"mine").expect("write");
    let err = restore_snapshot(&file, &target).expect_err("non-empty");
    assert!(
        matches!(err, RestoreError::TargetNotEmpty { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("occupied"), "{err}");
    assert_eq!(
        std::fs::read(target.join("keep.txt")).expect("read"),
        b"mine"
    );
    assert_eq!(std::fs::read_dir(&target).expect("read").count(), 1);
    // The source node's own data dir is refused too.
    let err = restore_snapshot(&file, &dir.path().join("src")).expect_err("live dir");
    assert!(matches!(err, RestoreError::TargetNotEmpty { .. }));
}
