//! `restore_if_missing` for a start-over at run time: what it keeps of the
//! WAL and the hard state (`t4_core::cluster::start_over_keeps`), on real
//! files, for a log that continues the checkpoint, one that left the
//! committed log before it, and one that cannot be read.

use std::path::{Path, PathBuf};

use t4_core::log::Entry;

use super::*;
use crate::object::{DirStore, ObjectStore, StoreConfig};

/// A bucket holding a checkpoint, taken by a bucket-mode node; returns
/// the store and the checkpoint's applied `(index, term)`.
async fn bucket_with_checkpoint(root: &Path) -> (DirStore, Index, Term) {
    let bucket = root.join("bucket");
    let mut c = Config::new(root.join("writer"));
    c.object_store = Some(StoreConfig::Directory(bucket.clone()));
    c.checkpoint_entries = 10;
    c.checkpoint_interval = None;
    let node = Node::open(c).await.expect("open the writer");
    for i in 0..25 {
        node.put(format!("k{i}"), "v").await.expect("put");
    }
    let store = DirStore::open(&bucket).expect("dir store");
    for _ in 0..400 {
        if crate::checkpoint::read_latest(&store)
            .await
            .expect("read latest")
            .is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    node.close().await.expect("close the writer");
    let scratch = root.join("scratch");
    crate::checkpoint::restore(&store, &scratch, None)
        .await
        .expect("restore")
        .expect("a checkpoint");
    let engine = RocksEngine::open(&scratch, RocksOptions::default()).expect("open");
    let meta = mvcc::read_meta(&engine).expect("meta");
    (store, Index(meta.applied_index), Term(meta.applied_term))
}

/// A cluster member's data directory, started over at run time, whose WAL
/// holds entries `1..=last` of term `term` and whose hard state promised
/// term 7.
fn member(root: &Path, name: &str, last: u64, term: u64) -> Config {
    let mut c = Config::new(root.join(name));
    c.object_store = Some(StoreConfig::Directory(root.join("bucket")));
    c.cluster = Some(ClusterOptions::new("127.0.0.1:1".parse().expect("addr")));
    let (mut wal, _) = Wal::open(&c.wal_dir(), Index(1), Term(term), 1 << 20).expect("wal");
    let entries: Vec<Entry> = (1..=last)
        .map(|index| Entry {
            term,
            index,
            payload: None,
        })
        .collect();
    wal.append(&entries).expect("append");
    wal.sync().expect("sync");
    let promised = HardState {
        promised: Term(7),
        rejoining: false,
    };
    crate::hard_state::save(&c.data_dir, &promised.encode()).expect("hard state");
    c
}

fn hard_state(c: &Config) -> Option<HardState> {
    crate::hard_state::load(&c.data_dir)
        .expect("read the hard state")
        .map(|bytes| HardState::decode(&bytes).expect("decode"))
}

/// What lies in the data directory under a name starting with `prefix`.
fn set_aside(c: &Config, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(&c.data_dir)
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

fn behind(last: u64) -> Option<Behind> {
    Some(Behind {
        why: "a test".into(),
        last_index: last,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_over_keeps_what_the_old_log_allows() {
    let root = tempfile::tempdir().expect("tempdir");
    let (store, at, term) = bucket_with_checkpoint(root.path()).await;
    let last = at.0 + 3;

    // The log continues the checkpoint: its entries after it, and the hard
    // state, stay.
    let a = member(root.path(), "continues", last, term.0);
    restore_if_missing(&a, &store, behind(last))
        .await
        .expect("start over");
    let (_, tail) = Wal::open(&a.wal_dir(), at.next(), term, 1 << 20).expect("the WAL");
    let kept: Vec<u64> = tail.iter().map(|e| e.index).collect();
    assert_eq!(kept, (at.0 + 1..=last).collect::<Vec<_>>());
    assert_eq!(hard_state(&a).map(|h| h.promised), Some(Term(7)));
    assert!(set_aside(&a, "wal.without-engine").is_empty());
    assert!(set_aside(&a, "hard_state.without-engine").is_empty());

    // The log left the committed log at or before the checkpoint (another
    // term at its index): the log goes aside, the hard state stays.
    let b = member(root.path(), "diverged", last, term.0 + 1);
    restore_if_missing(&b, &store, behind(last))
        .await
        .expect("start over");
    assert!(!b.wal_dir().exists());
    assert_eq!(set_aside(&b, "wal.without-engine").len(), 1);
    assert_eq!(hard_state(&b).map(|h| h.promised), Some(Term(7)));

    // The log cannot be read and reached past the checkpoint: both go
    // aside, and the member rejoins as a new one.
    let c = member(root.path(), "unreadable", last, term.0);
    let segment = std::fs::read_dir(c.wal_dir())
        .expect("wal dir")
        .next()
        .expect("a segment")
        .expect("entry")
        .path();
    std::fs::write(&segment, b"not a WAL segment").expect("damage");
    restore_if_missing(&c, &store, behind(last))
        .await
        .expect("start over");
    assert_eq!(hard_state(&c), None);
    assert_eq!(set_aside(&c, "hard_state.without-engine").len(), 1);
    assert_eq!(set_aside(&c, "wal.without-engine").len(), 1);

    // Each restored the checkpoint.
    for m in [&a, &b, &c] {
        let engine = RocksEngine::open(&m.engine_dir(), RocksOptions::default()).expect("open");
        assert_eq!(mvcc::read_meta(&engine).expect("meta").applied_index, at.0);
    }
}

/// A store whose checkpoint files cannot be downloaded.
struct NoSsts(Arc<DirStore>);

impl ObjectStore for NoSsts {
    fn execute(
        &self,
        op: t4_core::object::ObjectOp,
    ) -> futures::future::BoxFuture<'_, t4_core::object::ObjectResult> {
        match &op {
            t4_core::object::ObjectOp::Get { key } if key.starts_with("sst/") => {
                Box::pin(async { Err(t4_core::object::ObjectError::Failed("cut".into())) })
            }
            _ => self.0.execute(op),
        }
    }

    fn describe(&self) -> String {
        "no-ssts".into()
    }
}

/// A start-over whose restore fails (or is killed) before the engine is
/// in leaves its marker and what it set aside; the next start resumes it
/// as the same start-over, and the member keeps its log and its vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_over_cut_short_resumes_at_the_next_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let (store, at, term) = bucket_with_checkpoint(root.path()).await;
    let store = Arc::new(store);
    let last = at.0 + 3;
    let m = member(root.path(), "resumed", last, term.0);
    assert!(
        restore_if_missing(&m, &NoSsts(Arc::clone(&store)), behind(last))
            .await
            .is_err()
    );
    assert!(m.data_dir.join(START_OVER_MARKER).exists());
    assert_eq!(hard_state(&m), None, "set aside while restoring");

    // The next start knows nothing of the start-over but the marker.
    restore_if_missing(&m, &*store, None).await.expect("resume");
    let (_, tail) = Wal::open(&m.wal_dir(), at.next(), term, 1 << 20).expect("the WAL");
    assert_eq!(tail.len(), 3, "the entries after the checkpoint stay");
    assert_eq!(hard_state(&m).map(|h| h.promised), Some(Term(7)));
    assert!(!m.data_dir.join(START_OVER_MARKER).exists());
    assert!(set_aside(&m, "hard_state.without-engine").is_empty());

    // A start with its engine in place finds nothing to resume.
    restore_if_missing(&m, &*store, None).await.expect("open");
    assert_eq!(hard_state(&m).map(|h| h.promised), Some(Term(7)));
}

/// A data directory as a start-over leaves it when it stops after its
/// restored engine is in but before it put back the hard state: the
/// marker, the restored checkpoint, the hard state aside, and the WAL
/// aside or (`wal_back`) already back.
async fn stopped_after_the_engine_was_in(
    m: &Config,
    store: &dyn ObjectStore,
    last: u64,
    wal_back: bool,
) {
    std::fs::write(m.data_dir.join(START_OVER_MARKER), last.to_le_bytes()).expect("marker");
    if !wal_back {
        std::fs::rename(m.wal_dir(), m.data_dir.join(WAL_ASIDE)).expect("WAL aside");
    }
    std::fs::rename(
        m.data_dir.join(crate::hard_state::FILE_NAME),
        m.data_dir.join(HARD_STATE_ASIDE),
    )
    .expect("hard state aside");
    crate::checkpoint::restore(store, &m.engine_dir(), None)
        .await
        .expect("restore")
        .expect("a checkpoint");
}

/// A start-over that stopped after its engine was in finishes its last
/// step at the next start, wherever it stopped: the member keeps its vote
/// (it does not rejoin), and the WAL only if it continues the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_over_stopped_after_its_engine_was_in_finishes_at_the_next_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let (store, at, term) = bucket_with_checkpoint(root.path()).await;
    let last = at.0 + 3;
    for (name, wal_term, wal_back) in [
        ("wal-aside", term.0, false),
        ("wal-back", term.0, true),
        ("diverged", term.0 + 1, false),
    ] {
        let m = member(root.path(), name, last, wal_term);
        stopped_after_the_engine_was_in(&m, &store, last, wal_back).await;

        // The next start knows nothing of the start-over but the marker.
        restore_if_missing(&m, &store, None).await.expect("finish");
        assert_eq!(hard_state(&m).map(|h| h.promised), Some(Term(7)), "{name}");
        assert!(!m.data_dir.join(START_OVER_MARKER).exists(), "{name}");
        assert!(
            set_aside(&m, "hard_state.without-engine").is_empty(),
            "{name}"
        );
        if wal_term == term.0 {
            let (_, tail) = Wal::open(&m.wal_dir(), at.next(), term, 1 << 20).expect("the WAL");
            assert_eq!(
                tail.len(),
                3,
                "{name}: the entries after the checkpoint stay"
            );
            assert!(set_aside(&m, "wal.without-engine").is_empty(), "{name}");
        } else {
            assert!(!m.wal_dir().exists(), "{name}");
            assert_eq!(set_aside(&m, "wal.without-engine").len(), 1, "{name}");
        }
        let engine = RocksEngine::open(&m.engine_dir(), RocksOptions::default()).expect("open");
        assert_eq!(mvcc::read_meta(&engine).expect("meta").applied_index, at.0);
    }
}
