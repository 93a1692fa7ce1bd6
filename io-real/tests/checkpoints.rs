//! Checkpoints end to end on real files: a bucket-mode node uploads RocksDB
//! checkpoints; a node on a wiped data directory restores the newest one
//! (then replays the bucket's WAL after it), falls back to an older one
//! when the newest is damaged, and `checkpoint::restore` refuses what it
//! must.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use t4_core::bucket::layout::{self, parse_wal_key, MANIFEST_LATEST, WAL_PREFIX};
use t4_core::bucket::manifest::{CheckpointManifest, LatestPointer};
use t4_core::bucket::recovery::CheckpointDamage;
use t4_core::object::{ObjectError, ObjectOp, ObjectReply, PutCondition, LIST_KEYS_MAX};
use t4_io_real::checkpoint::{self, RestoreError};
use t4_io_real::object::{DirStore, ObjectStore, StoreConfig};
use t4_io_real::{Config, Node};

fn config(data: &Path, bucket: &Path, every: u64) -> Config {
    let mut c = Config::new(data);
    c.node_id = "ckpt-test".into();
    c.object_store = Some(StoreConfig::Directory(bucket.to_path_buf()));
    c.checkpoint_entries = every;
    c.checkpoint_interval = None;
    c
}

fn store(bucket: &Path) -> Arc<dyn ObjectStore> {
    Arc::new(DirStore::open(bucket).expect("dir store"))
}

async fn latest(store: &dyn ObjectStore) -> Option<LatestPointer> {
    checkpoint::read_latest(store).await.expect("read latest")
}

async fn get(store: &dyn ObjectStore, key: &str) -> Option<Bytes> {
    match store
        .execute(ObjectOp::Get {
            key: key.to_owned(),
        })
        .await
    {
        Ok(ObjectReply::Got { body, .. }) => Some(body),
        Err(ObjectError::NotFound) => None,
        other => panic!("get {key}: {other:?}"),
    }
}

async fn manifest(store: &dyn ObjectStore, p: &LatestPointer) -> CheckpointManifest {
    let body = get(store, &p.manifest_key).await.expect("manifest");
    CheckpointManifest::decode(&p.manifest_key, &body).expect("decodes")
}

async fn wal_objects(store: &dyn ObjectStore) -> Vec<u64> {
    let reply = store
        .execute(ObjectOp::List {
            prefix: WAL_PREFIX.into(),
            start_after: None,
            max_keys: LIST_KEYS_MAX,
        })
        .await
        .expect("list");
    let ObjectReply::Listed { objects, .. } = reply else {
        panic!("{reply:?}")
    };
    objects
        .iter()
        .filter_map(|o| parse_wal_key(&o.key))
        .map(|i| i.0)
        .collect()
}

/// Waits (up to 20 s) until `manifest/latest` reaches `index`.
///
/// With a checkpoint every `N` entries and `A` applied when the writes
/// stop, the last checkpoint is only known to be past `A - N`: one due while
/// another was uploading starts when that one ends, so they drift. Callers
/// wait for that bound, not for a multiple of `N`.
async fn wait_for_checkpoint(store: &dyn ObjectStore, index: u64) -> LatestPointer {
    for _ in 0..400 {
        if let Some(p) = latest(store).await {
            if p.index.0 >= index {
                return p;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no checkpoint at or after index {index}");
}

/// Writes `n` keys one by one; returns each key's revision.
async fn write_keys(node: &Node, from: usize, n: usize) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for i in from..from + n {
        let key = format!("key-{i:05}");
        let rev = node
            .put(key.clone(), format!("value-{i}"))
            .await
            .expect("put")
            .revision;
        out.push((key, rev));
    }
    out
}

async fn check_keys(node: &Node, keys: &[(String, i64)]) {
    for (key, rev) in keys {
        let kv = node
            .get(key.clone())
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(kv.mod_revision, *rev, "{key}");
        let i: usize = key[4..].parse().unwrap();
        assert_eq!(kv.value, format!("value-{i}").into_bytes());
    }
}

/// The checkpoint holds the engine's state; with the WAL objects it covers
/// deleted, a wiped node still comes back whole: from the checkpoint plus
/// the WAL after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_restores_the_checkpoint_and_replays_the_wal_after_it() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 100))
        .await
        .expect("open");
    let mut keys = write_keys(&node, 0, 250).await;
    let s = store(bucket.path());
    let p = wait_for_checkpoint(&*s, 200).await;
    let m = manifest(&*s, &p).await;
    assert!(!m.ssts.is_empty(), "the checkpoint has SSTs: {m:?}");
    assert!(m.meta_files.iter().any(|f| f.name == "CURRENT"));
    // Keep writing after the checkpoint: those come from the WAL.
    keys.extend(write_keys(&node, 250, 30).await);
    node.close().await.expect("close");
    // No local checkpoint folder is left behind.
    let local = checkpoint::local_root(data.path());
    assert!(
        !local.exists() || std::fs::read_dir(&local).unwrap().next().is_none(),
        "local checkpoint folders are deleted after upload"
    );

    // Delete every WAL object wholly covered by the checkpoint.
    let objects = wal_objects(&*s).await;
    let mut deleted = 0;
    for w in objects.windows(2) {
        if w[1] - 1 <= p.index.0 {
            s.execute(ObjectOp::Delete {
                key: layout::wal_key(t4_core::Index(w[0])),
            })
            .await
            .expect("delete");
            deleted += 1;
        }
    }
    assert!(deleted > 100, "most WAL objects were covered ({deleted})");

    std::fs::remove_dir_all(data.path()).unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 0))
        .await
        .expect("reopen");
    check_keys(&node, &keys).await;
    assert_eq!(node.current_revision(), keys.last().unwrap().1);
    // And it serves writes.
    node.put("after", "restore")
        .await
        .expect("put after restore");
    node.close().await.expect("close");
}

/// A damaged newest checkpoint (a meta file overwritten) is skipped with a
/// warning; the one before it and the WAL bring the node back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 50))
        .await
        .expect("open");
    let keys = write_keys(&node, 0, 160).await;
    let s = store(bucket.path());
    let newest = wait_for_checkpoint(&*s, 112).await;
    node.close().await.expect("close");
    let m = manifest(&*s, &newest).await;
    let current = m.meta_files.iter().find(|f| f.name == "CURRENT").unwrap();
    s.execute(ObjectOp::Put {
        key: current.key.clone(),
        body: Bytes::from_static(b"MANIFEST-999999\n"),
        condition: PutCondition::None,
    })
    .await
    .expect("damage");

    // `restore` alone: skips the newest and says why.
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("engine");
    let restored = checkpoint::restore(&*s, &target, None)
        .await
        .expect("restore")
        .expect("a checkpoint");
    assert!(restored.manifest.index < newest.index);
    assert_eq!(restored.skipped.len(), 1, "{:?}", restored.skipped);
    assert!(
        restored.skipped[0].contains("sha256"),
        "{:?}",
        restored.skipped
    );
    // Asked for exactly the damaged one: refused, nothing left behind.
    let target2 = scratch.path().join("engine2");
    match checkpoint::restore(&*s, &target2, Some(&newest.manifest_key)).await {
        Err(RestoreError::Damaged {
            damage: CheckpointDamage::Hash { .. },
            ..
        }) => {}
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert!(!target2.exists());
    // Never over an existing folder.
    assert!(matches!(
        checkpoint::restore(&*s, &target, None).await,
        Err(RestoreError::Exists(_))
    ));

    std::fs::remove_dir_all(data.path()).unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 0))
        .await
        .expect("reopen");
    check_keys(&node, &keys).await;
    node.close().await.expect("close");
}

/// A store over a bucket that lists only the checkpoint `older` until the
/// restore downloads `older_file` (one of its files no newer checkpoint
/// shares): that file is then gone, and so is every checkpoint up to
/// `older`, while the newer ones are listed (and `latest` points at the
/// newest), as when another node's GC collects the checkpoints a newer
/// one superseded while one of them is being restored.
struct GcDuringRestore {
    inner: Arc<dyn ObjectStore>,
    older: String,
    older_file: String,
    collected: std::sync::atomic::AtomicBool,
}

impl ObjectStore for GcDuringRestore {
    fn execute(
        &self,
        op: ObjectOp,
    ) -> futures::future::BoxFuture<'_, t4_core::object::ObjectResult> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let collected = self.collected.load(SeqCst);
            if let ObjectOp::Get { key } = &op {
                if *key == self.older_file {
                    self.collected.store(true, SeqCst);
                    return Err(ObjectError::NotFound);
                }
                if key == MANIFEST_LATEST && !collected {
                    return Err(ObjectError::NotFound);
                }
            }
            let mut reply = self.inner.execute(op).await;
            if let Ok(ObjectReply::Listed { objects, .. }) = &mut reply {
                objects.retain(|o| {
                    !o.key.ends_with("manifest.json")
                        || if collected {
                            o.key > self.older
                        } else {
                            o.key == self.older
                        }
                });
            }
            reply
        })
    }

    fn describe(&self) -> String {
        "gc-during-restore".into()
    }
}

/// A checkpoint collected while it is restored (its file vanishes, a newer
/// checkpoint appears): the restore lists the bucket again and restores
/// the newer one instead of giving up on checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_collected_while_restored_gives_way_to_the_newer_one() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 50))
        .await
        .expect("open");
    write_keys(&node, 0, 160).await;
    let s = store(bucket.path());
    let newest = wait_for_checkpoint(&*s, 112).await;
    node.close().await.expect("close");
    let manifests = checkpoint::list_manifest_keys(&*s).await.expect("list");
    let older = manifests
        .iter()
        .rev()
        .find(|k| **k < newest.manifest_key)
        .expect("an older checkpoint")
        .clone();
    let files = |m: CheckpointManifest| -> Vec<String> {
        m.ssts
            .iter()
            .chain(&m.meta_files)
            .map(|f| f.key.clone())
            .collect()
    };
    let body = get(&*s, &older).await.expect("older manifest");
    let older_files = files(CheckpointManifest::decode(&older, &body).expect("decodes"));
    let newest_files = files(manifest(&*s, &newest).await);
    let older_file = older_files
        .into_iter()
        .find(|f| !newest_files.contains(f))
        .expect("a file the newest checkpoint does not share");
    let gc = GcDuringRestore {
        inner: Arc::clone(&s),
        older: older.clone(),
        older_file,
        collected: std::sync::atomic::AtomicBool::new(false),
    };

    let scratch = tempfile::tempdir().unwrap();
    let restored = checkpoint::restore(&gc, &scratch.path().join("engine"), None)
        .await
        .expect("restore")
        .expect("a checkpoint");
    assert_eq!(
        restored.manifest.index, newest.index,
        "{:?}",
        restored.skipped
    );
    assert_eq!(restored.skipped.len(), 1, "{:?}", restored.skipped);
    assert!(
        restored.skipped[0].contains("missing"),
        "{:?}",
        restored.skipped
    );
}

/// A bucket without checkpoints: a wiped node replays the whole WAL; a
/// missing SST makes the only checkpoint unusable, which falls back to the
/// WAL alone while it still starts at index 1 (no GC ran); once GC deleted
/// the WAL the checkpoints covered and every checkpoint is damaged, the
/// start is refused with a message naming the hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_checkpoint_the_whole_wal_is_replayed() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 0))
        .await
        .expect("open");
    let keys = write_keys(&node, 0, 40).await;
    node.close().await.expect("close");
    let s = store(bucket.path());
    assert_eq!(latest(&*s).await, None, "no checkpoint was due");
    std::fs::remove_dir_all(data.path()).unwrap();
    let mut no_gc = config(data.path(), bucket.path(), 20);
    no_gc.gc_keep = 0;
    let node = Node::open(no_gc).await.expect("reopen");
    check_keys(&node, &keys).await;
    let more = write_keys(&node, 40, 25).await;
    let p = wait_for_checkpoint(&*s, 60).await;
    node.close().await.expect("close");
    let m = manifest(&*s, &p).await;
    for sst in &m.ssts {
        s.execute(ObjectOp::Delete {
            key: sst.key.clone(),
        })
        .await
        .expect("delete");
    }
    std::fs::remove_dir_all(data.path()).unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 10))
        .await
        .expect("reopen");
    check_keys(&node, &keys).await;
    check_keys(&node, &more).await;
    // This node checkpoints (every 10) and collects the WAL behind them.
    write_keys(&node, 65, 30).await;
    wait_for_checkpoint(&*s, 89).await;
    node.close().await.expect("close");
    assert!(
        wal_objects(&*s).await.len() < 60,
        "GC deleted covered WAL objects"
    );
    // Damage every checkpoint: nothing can rebuild the state now.
    for key in checkpoint::list_manifest_keys(&*s).await.unwrap() {
        s.execute(ObjectOp::Put {
            key,
            body: Bytes::from_static(b"{}"),
            condition: PutCondition::None,
        })
        .await
        .unwrap();
    }
    std::fs::remove_dir_all(data.path()).unwrap();
    let err = Node::open(config(data.path(), bucket.path(), 0))
        .await
        .expect_err("nothing to restore from");
    let msg = err.to_string();
    assert!(msg.contains("hole") && msg.contains("missing"), "{msg}");
    let _ = MANIFEST_LATEST;
}

/// An engine folder with files but no database is not overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_engine_folder_refuses_the_start() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let c = config(data.path(), bucket.path(), 0);
    std::fs::create_dir_all(c.engine_dir()).unwrap();
    std::fs::write(c.engine_dir().join("000007.sst"), b"junk").unwrap();
    let err = Node::open(c.clone()).await.expect_err("refused");
    assert!(err.to_string().contains("no CURRENT"), "{err}");
    assert!(c.engine_dir().join("000007.sst").exists(), "left untouched");
}

/// The node's own GC pass after each checkpoint keeps the newest three and
/// the WAL they need; a wiped node restores from what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_gc_keeps_three_checkpoints_and_the_bucket_stays_restorable() {
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 40))
        .await
        .expect("open");
    let keys = write_keys(&node, 0, 400).await;
    let s = store(bucket.path());
    wait_for_checkpoint(&*s, 362).await;
    // The last pass runs after the last checkpoint; give it a moment.
    let mut manifests = 0;
    for _ in 0..100 {
        let listed = checkpoint::list_manifest_keys(&*s).await.expect("list");
        manifests = listed.len();
        if manifests == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(manifests, 3, "at least 9 checkpoints, 3 kept");
    node.close().await.expect("close");
    let wal = wal_objects(&*s).await;
    assert!(
        wal.len() < 200,
        "covered WAL objects were deleted ({} left)",
        wal.len()
    );
    std::fs::remove_dir_all(data.path()).unwrap();
    let node = Node::open(config(data.path(), bucket.path(), 0))
        .await
        .expect("reopen");
    check_keys(&node, &keys).await;
    node.close().await.expect("close");
}

/// Timing, not a check (ignored; run in release mode): load 1 M keys of
/// 64-byte keys and 256-byte values in 128-put txns, then report how long
/// the checkpoint of them took to upload and how long a restore into an
/// empty folder takes.
///
/// `cargo test --release -p t4-io-real --test checkpoints -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: run in release mode by hand"]
async fn timing_checkpoint_and_restore_of_a_million_keys() {
    use t4_core::kv::{Op, PutRequest, RequestOp, TxnRequest};
    const KEYS: usize = 1_000_000;
    const PER_TXN: usize = 128;
    const WRITERS: usize = 16;
    let data = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let txns = KEYS.div_ceil(PER_TXN);
    // The checkpoint falls due with the last txn.
    let mut c = config(data.path(), bucket.path(), txns as u64);
    c.gc_keep = 0;
    let node = Node::open(c).await.expect("open");
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = w;
            while t < txns {
                let success = (t * PER_TXN..((t + 1) * PER_TXN).min(KEYS))
                    .map(|i| RequestOp {
                        op: Some(Op::Put(PutRequest {
                            key: format!("{i:064}").into_bytes(),
                            value: vec![b'v'; 256],
                            ..PutRequest::default()
                        })),
                    })
                    .collect();
                node.txn(TxnRequest {
                    success,
                    ..TxnRequest::default()
                })
                .await
                .expect("txn");
                t += WRITERS;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loaded = started.elapsed();
    let s = store(bucket.path());
    let ckpt_started = std::time::Instant::now();
    let mut p = None;
    for _ in 0..6000 {
        p = latest(&*s).await;
        if p.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = p.expect("a checkpoint within 5 minutes");
    let ckpt = ckpt_started.elapsed();
    node.close().await.unwrap();
    let m = manifest(&*s, &p).await;
    let bytes: u64 = m
        .ssts
        .iter()
        .chain(&m.meta_files)
        .map(|f| f.size_bytes)
        .sum();
    let scratch = tempfile::tempdir().unwrap();
    let restore_started = std::time::Instant::now();
    let restored = checkpoint::restore(&*s, &scratch.path().join("db"), None)
        .await
        .unwrap()
        .unwrap();
    let restore = restore_started.elapsed();
    assert_eq!(restored.manifest.index, p.index);
    println!(
        "1M keys: load {:.1} s; checkpoint (after the last write) {:.2} s, {} SSTs, {:.1} MB; restore {:.2} s",
        loaded.as_secs_f64(),
        ckpt.as_secs_f64(),
        m.ssts.len(),
        bytes as f64 / 1e6,
        restore.as_secs_f64()
    );
}
