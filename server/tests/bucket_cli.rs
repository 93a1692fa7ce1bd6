//! `t4 status`, `t4 gc` and `t4 restore list` against the real binary.
//!
//! Most tests fill a directory-store bucket by writing objects directly
//! (checkpoint manifests built and encoded with core's types, fake SST and
//! meta files, WAL objects encoded with core's codec, a lock, a branch), so
//! the expected reports and GC deletions are known exactly. One test runs
//! real nodes on the bucket first, one reads S3 (moto; `scripts/setup`
//! installs it, and without it that test fails, it does not skip).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_addr, FlockHolder, Moto, Server};
use etcd_client::GetOptions;
use serde_json::Value;
use t4_core::bucket::branch::BranchRegistration;
use t4_core::bucket::layout::{
    checkpoint_dir, checkpoint_manifest_key, sst_key, wal_key, LEADER_LOCK, MANIFEST_LATEST,
};
use t4_core::bucket::lock::{LeaderLock, Member};
use t4_core::bucket::manifest::{CheckpointManifest, FileRef, LatestPointer};
use t4_core::bucket::wal_object;
use t4_core::log::{Barrier, Entry, Payload};
use t4_core::object::{ETag, ObjectOp, ObjectReply, PutCondition, LIST_KEYS_MAX};
use t4_core::{Index, Revision, Term};
use t4_io_real::object::{
    open_store, DirStore, ObjectStore, RetryConfig, S3Config, S3Credentials, StoreConfig,
};

/// How one `t4` command ended.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(
            self.code,
            Some(0),
            "t4 failed; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.stdout))
    }
}

/// Runs `t4 <args>` and waits for it (at most 120 s).
fn t4(args: &[String]) -> Out {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn t4");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("t4 {args:?} still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code(),
        stdout: std::fs::read_to_string(out_path).expect("read stdout"),
        stderr: std::fs::read_to_string(err_path).expect("read stderr"),
    }
}

/// `command` (words) followed by `flags`.
fn cmd(command: &str, flags: &[String]) -> Vec<String> {
    command
        .split_whitespace()
        .map(str::to_owned)
        .chain(flags.iter().cloned())
        .collect()
}

fn dir_flags(bucket: &Path) -> Vec<String> {
    vec![
        "--object-store-dir".to_owned(),
        bucket.to_str().expect("utf-8 temp path").to_owned(),
    ]
}

fn with(flags: &[String], extra: &[&str]) -> Vec<String> {
    flags
        .iter()
        .cloned()
        .chain(extra.iter().map(|s| (*s).to_owned()))
        .collect()
}

async fn put(store: &dyn ObjectStore, key: &str, body: impl Into<Vec<u8>>) {
    let put = store
        .execute(ObjectOp::Put {
            key: key.to_owned(),
            body: body.into().into(),
            condition: PutCondition::None,
        })
        .await;
    assert!(
        matches!(put, Ok(ObjectReply::Put { .. })),
        "put {key}: {put:?}"
    );
}

/// Every key with its ETag, paging through the whole bucket: equal before
/// and after a command means the command changed nothing.
async fn listing(store: &dyn ObjectStore) -> Vec<(String, ETag)> {
    let mut all: Vec<(String, ETag)> = Vec::new();
    loop {
        let op = ObjectOp::List {
            prefix: String::new(),
            start_after: all.last().map(|(k, _)| k.clone()),
            max_keys: LIST_KEYS_MAX,
        };
        let Ok(ObjectReply::Listed { objects, truncated }) = store.execute(op).await else {
            panic!("list failed");
        };
        all.extend(objects.into_iter().map(|o| (o.key, o.etag)));
        if !truncated {
            return all;
        }
    }
}

async fn keys(store: &dyn ObjectStore) -> BTreeSet<String> {
    listing(store).await.into_iter().map(|(k, _)| k).collect()
}

/// A fake sha256 whose first 16 hex digits (the SST key's folder) differ
/// for every `n`.
fn sha(n: u64) -> String {
    format!("{:016x}{:048x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15), n)
}

/// `n` entries from `first`, in `term` (barriers: the content is not
/// looked at).
fn entries(first: u64, n: u64, term: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|index| Entry {
            term,
            index,
            payload: Some(Payload::Barrier(Barrier {})),
        })
        .collect()
}

const CREATED_MS: u64 = 1_700_000_000_000;
const CREATED_TEXT: &str = "2023-11-14T22:13:20.000Z";

/// The checkpoint at `(term, index)`: one SST shared by every checkpoint,
/// one of its own, two meta files. Writes its files, then its manifest.
async fn write_checkpoint(store: &dyn ObjectStore, term: u64, index: u64) -> CheckpointManifest {
    let (t, i) = (Term(term), Index(index));
    let m = CheckpointManifest {
        term: t,
        index: i,
        revision: Revision(i64::try_from(index).expect("small") * 2),
        compact_revision: Revision(i64::try_from(index).expect("small") / 2),
        ssts: vec![
            FileRef::sst("000001.sst", 100, &sha(1)),
            FileRef::sst(
                &format!("{:06}.sst", 1000 + index),
                1000 + index,
                &sha(1000 + index),
            ),
        ],
        meta_files: vec![
            FileRef::meta(t, i, "CURRENT", 16, &sha(2000 + index)),
            FileRef::meta(
                t,
                i,
                &format!("MANIFEST-{index:06}"),
                200,
                &sha(3000 + index),
            ),
        ],
        created_unix_ms: CREATED_MS + index * 60_000,
    };
    for f in m.ssts.iter().chain(&m.meta_files) {
        put(
            store,
            &f.key,
            vec![b'x'; usize::try_from(f.size_bytes).expect("small")],
        )
        .await;
    }
    put(store, &m.key(), m.encode().to_vec()).await;
    m
}

/// What [`write_fixture`] wrote and what `t4 gc --keep 2` must do with it.
struct Fixture {
    /// Every key written.
    all: BTreeSet<String>,
    /// The deletions, in the order gc runs them.
    deletions: Vec<String>,
}

/// A bucket with history:
///
/// - checkpoints at (term, index) (1,10) (1,20) (2,30) (3,40) (3,50) (3,60);
///   `manifest/latest` → (3,60); branch `b1` pins (1,20); an orphan SST; a
///   folder without manifest older than every kept checkpoint (1,5) and one
///   newer (3,70, an upload in progress);
/// - WAL objects of 5 entries at 1, 6, …, 61: terms 1 (1, 6), 2 (11 … 26),
///   3 (31 …), so 11 and 31 are fences;
/// - a lock (term 3, member n1).
///
/// `--keep 2` keeps 60 (newest, latest), 50 (newest) and 20 (pinned), so
/// WAL objects ending by index 20 are covered: 1 (oldest, kept), 6
/// (deleted), 11 (fence, kept), 16 (deleted).
async fn write_fixture(store: &dyn ObjectStore) -> Fixture {
    let mut deleted_manifests = Vec::new();
    let mut deleted_folder_files = Vec::new();
    let mut deleted_ssts = Vec::new();
    for (term, index) in [(1, 10), (1, 20), (2, 30), (3, 40), (3, 50), (3, 60)] {
        let m = write_checkpoint(store, term, index).await;
        if [10, 30, 40].contains(&index) {
            deleted_manifests.push(m.key());
            deleted_folder_files.extend(m.meta_files.iter().map(|f| f.key.clone()));
            deleted_ssts.push(m.ssts[1].key.clone());
        }
    }
    let orphan = sst_key(&sha(9), "000999.sst");
    put(store, &orphan, vec![b'o'; 50]).await;
    deleted_ssts.push(orphan);
    let old_incomplete = format!("{}CURRENT", checkpoint_dir(Term(1), Index(5)));
    put(store, &old_incomplete, vec![b'c'; 16]).await;
    deleted_folder_files.push(old_incomplete);
    let in_progress = format!("{}CURRENT", checkpoint_dir(Term(3), Index(70)));
    put(store, &in_progress, vec![b'c'; 16]).await;

    put(
        store,
        MANIFEST_LATEST,
        LatestPointer::to_checkpoint(Term(3), Index(60))
            .encode()
            .to_vec(),
    )
    .await;
    let branch = BranchRegistration {
        branch_id: "b1".into(),
        manifest_key: checkpoint_manifest_key(Term(1), Index(20)),
        created_unix_ms: CREATED_MS,
    };
    put(store, &branch.key(), branch.encode().to_vec()).await;
    let lock = LeaderLock {
        term: Term(3),
        leader_id: "n1".into(),
        leader_peer_addr: "10.0.0.1:3380".into(),
        members: vec![Member {
            id: "n1".into(),
            peer_addr: "10.0.0.1:3380".into(),
        }],
        generation: 5,
    };
    put(store, LEADER_LOCK, lock.encode().to_vec()).await;
    for first in (1..=61).step_by(5) {
        let term = match first {
            1..=10 => 1,
            11..=30 => 2,
            _ => 3,
        };
        put(
            store,
            &wal_key(Index(first)),
            wal_object::encode(Term(term), &entries(first, 5, term)).to_vec(),
        )
        .await;
    }
    deleted_manifests.sort();
    deleted_folder_files.sort();
    deleted_ssts.sort();
    let deletions = deleted_manifests
        .into_iter()
        .chain(deleted_folder_files)
        .chain(deleted_ssts)
        .chain([wal_key(Index(6)), wal_key(Index(16))])
        .collect();
    Fixture {
        all: keys(store).await,
        deletions,
    }
}

fn open_dir(bucket: &Path) -> DirStore {
    DirStore::open(bucket).expect("open the bucket folder")
}

/// The keys of the lines of `text` that start with `prefix` and go on with
/// `<key> (`.
fn keys_after(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|rest| rest.split(" (").next().expect("a key").to_owned())
        .collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// `t4 status` reports the latest checkpoint, the counts, the lock and the
/// branches, as text and as JSON.
#[tokio::test]
async fn status_reports_the_bucket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let store = open_dir(&bucket);
    let fixture = write_fixture(&store).await;
    let flags = dir_flags(&bucket);

    let text = t4(&cmd("status", &flags)).ok().stdout;
    let latest_key = checkpoint_manifest_key(Term(3), Index(60));
    for line in [
        format!("Bucket status dir:{}", bucket.display()),
        "Latest checkpoint".into(),
        format!("  key: {latest_key}"),
        "  term: 3".into(),
        "  index: 60".into(),
        "  revision: 120".into(),
        "  compact revision: 30".into(),
        "  created: 2023-11-14T23:13:20.000Z".into(),
        "  SSTs: 2 (1160 bytes)".into(),
        "  checkpoint folders without a manifest: 2".into(),
        "  SSTs: 8 (6360 bytes)".into(),
        "  term 3, member n1, peer address 10.0.0.1:3380".into(),
        "Branch forks".into(),
        format!(
            "  b1 -> {} (registered {CREATED_TEXT})",
            checkpoint_manifest_key(Term(1), Index(20))
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "status has {line:?}:\n{text}"
        );
    }
    assert!(
        text.contains("\n  checkpoints: 6 (20 objects, "),
        "manifests, meta files and the 2 folders without a manifest:\n{text}"
    );
    let wal_line = text
        .lines()
        .find(|l| l.starts_with("  WAL objects: 13 ("))
        .unwrap_or_else(|| panic!("a WAL line:\n{text}"));
    assert!(wal_line.ends_with(", indexes 1 to 65"), "{wal_line}");

    let json = t4(&cmd("status --json", &flags)).json();
    assert_eq!(json["latest_checkpoint"]["state"], "ok");
    assert_eq!(
        json["latest_checkpoint"]["manifest_key"],
        latest_key.as_str()
    );
    let m = &json["latest_checkpoint"]["manifest"];
    assert_eq!(m["state"], "valid");
    assert_eq!(m["revision"], 120);
    assert_eq!(m["compact_revision"], 30);
    assert_eq!(m["created_unix_ms"], CREATED_MS + 60 * 60_000);
    assert_eq!(m["sst_count"], 2);
    assert_eq!(m["sst_bytes"], 1160);
    assert_eq!(json["checkpoints"]["count"], 6);
    assert_eq!(json["checkpoints"]["without_manifest"], 2);
    assert_eq!(json["wal"]["count"], 13);
    assert_eq!(json["wal"]["first_index"], 1);
    assert_eq!(json["wal"]["last_index"], 65);
    assert_eq!(json["ssts"]["count"], 8);
    assert_eq!(json["other"]["count"], 0);
    assert_eq!(json["leader_lock"]["state"], "held");
    assert_eq!(json["leader_lock"]["term"], 3);
    assert_eq!(json["leader_lock"]["leader_id"], "n1");
    assert_eq!(json["branches"][0]["state"], "ok");
    assert_eq!(json["branches"][0]["branch_id"], "b1");
    assert_eq!(keys(&store).await, fixture.all, "status changes nothing");
}

/// `t4 restore list` lists every checkpoint newest first, with its fields,
/// which one `manifest/latest` names and which branches pin it.
#[tokio::test]
async fn restore_list_is_newest_first_with_latest_and_pins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let store = open_dir(&bucket);
    write_fixture(&store).await;
    let flags = dir_flags(&bucket);

    let json = t4(&cmd("restore list --json", &flags)).json();
    let list = json["checkpoints"].as_array().expect("checkpoints");
    let order: Vec<(u64, u64)> = list
        .iter()
        .map(|c| (c["term"].as_u64().unwrap(), c["index"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        order,
        [(3, 60), (3, 50), (3, 40), (2, 30), (1, 20), (1, 10)]
    );
    for c in list {
        let index = c["index"].as_u64().unwrap();
        assert_eq!(c["latest"], index == 60, "{c}");
        assert_eq!(c["listed"], true);
        assert_eq!(c["manifest"]["state"], "valid");
        assert_eq!(c["manifest"]["revision"], index * 2);
        assert_eq!(
            c["manifest"]["created_unix_ms"],
            CREATED_MS + index * 60_000
        );
        assert_eq!(c["manifest"]["sst_count"], 2);
        assert_eq!(c["manifest"]["sst_bytes"], 100 + 1000 + index);
        assert_eq!(c["missing_files"], serde_json::json!([]));
        let pins: &[&str] = if index == 20 { &["b1"] } else { &[] };
        assert_eq!(str_list(&c["pinned_by"]), pins, "{c}");
    }
    assert_eq!(json["warnings"], serde_json::json!([]));

    let text = t4(&cmd("restore list", &flags)).ok().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        [
            format!("Checkpoints in dir:{} (newest first)", bucket.display()).as_str(),
            &format!("manifest/latest: {}", checkpoint_manifest_key(Term(3), Index(60))),
            &format!("{}  [latest]", checkpoint_manifest_key(Term(3), Index(60))),
            "  term 3, index 60, revision 120, compact revision 30, created 2023-11-14T23:13:20.000Z",
        ],
        "{text}"
    );
    assert!(
        text.contains("  SSTs: 2 (1160 bytes); manifest valid\n"),
        "{text}"
    );
    let pinned_at = text
        .find(&checkpoint_manifest_key(Term(1), Index(20)))
        .expect("the pinned checkpoint is listed");
    assert!(
        text[pinned_at..].lines().nth(3) == Some("  pinned by: b1"),
        "{text}"
    );
}

/// `t4 gc --dry-run` lists exactly what `t4 gc` then deletes, in the same
/// order; kept checkpoints (newest, latest, pinned), their files and the
/// fence WAL objects survive; a second run deletes nothing.
#[tokio::test]
async fn gc_deletes_what_the_dry_run_listed_and_keeps_fences_and_pins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let store = open_dir(&bucket);
    let fixture = write_fixture(&store).await;
    let flags = with(&dir_flags(&bucket), &["--keep", "2"]);

    let before = listing(&store).await;
    let dry = t4(&cmd("gc --dry-run", &flags)).ok().stdout;
    assert_eq!(
        keys_after(&dry, "would delete "),
        fixture.deletions,
        "the dry run lists the expected deletions in plan order:\n{dry}"
    );
    for line in [
        "checkpoints to delete: 3",
        "incomplete checkpoint folders to delete: 1",
        "orphan SSTs to delete: 4",
        "WAL objects to delete: 2",
        "fence WAL objects kept: 2",
    ] {
        assert!(
            dry.lines().any(|l| l == line),
            "dry run has {line:?}:\n{dry}"
        );
    }
    let json = t4(&cmd("gc --dry-run --json", &flags)).json();
    let planned: Vec<String> = json["deletions"]
        .as_array()
        .expect("deletions")
        .iter()
        .map(|d| d["key"].as_str().expect("key").to_owned())
        .collect();
    assert_eq!(planned, fixture.deletions);
    assert_eq!(json["deleted"], 0);
    assert_eq!(
        str_list(&json["fences_kept"]),
        [wal_key(Index(1)), wal_key(Index(11))]
    );
    let kept: Vec<(String, Vec<String>)> = json["kept_checkpoints"]
        .as_array()
        .expect("kept")
        .iter()
        .map(|k| {
            (
                k["manifest_key"].as_str().unwrap().to_owned(),
                str_list(&k["reasons"]),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            (
                checkpoint_manifest_key(Term(3), Index(60)),
                vec!["newest".to_owned(), "latest".to_owned()]
            ),
            (
                checkpoint_manifest_key(Term(3), Index(50)),
                vec!["newest".to_owned()]
            ),
            (
                checkpoint_manifest_key(Term(1), Index(20)),
                vec!["pinned".to_owned()]
            ),
        ]
    );
    assert_eq!(json["summary"]["checkpoints_deleted"], 3);
    assert_eq!(json["summary"]["orphan_ssts_deleted"], 4);
    assert_eq!(json["summary"]["wal_objects_deleted"], 2);
    assert!(
        str_list(&json["warnings"])
            .iter()
            .any(|w| w.starts_with("leader-lock names member n1 (term 3)")),
        "SST deletions with a lock held come with the checkpoint-race warning: {}",
        json["warnings"]
    );
    assert_eq!(listing(&store).await, before, "a dry run changes nothing");

    let run = t4(&cmd("gc", &flags)).ok().stdout;
    assert_eq!(
        keys_after(&run, "deleted "),
        fixture.deletions,
        "gc deletes what the dry run listed, in the same order:\n{run}"
    );
    for line in [
        "GC complete",
        "checkpoints deleted: 3",
        "orphan SSTs deleted: 4",
        "WAL objects deleted: 2",
    ] {
        assert!(run.lines().any(|l| l == line), "gc has {line:?}:\n{run}");
    }
    let after = keys(&store).await;
    let expected: BTreeSet<String> = fixture
        .all
        .iter()
        .filter(|k| !fixture.deletions.contains(k))
        .cloned()
        .collect();
    assert_eq!(after, expected, "exactly the listed objects are gone");
    for key in [
        wal_key(Index(1)),
        wal_key(Index(11)),
        wal_key(Index(61)),
        checkpoint_manifest_key(Term(1), Index(20)),
        sst_key(&sha(1020), "001020.sst"),
        sst_key(&sha(1), "000001.sst"),
        MANIFEST_LATEST.to_owned(),
        LEADER_LOCK.to_owned(),
        "branches/b1".to_owned(),
        format!("{}CURRENT", checkpoint_dir(Term(3), Index(70))),
    ] {
        assert!(after.contains(&key), "{key} survives gc");
    }

    let again = t4(&cmd("gc --json", &flags)).json();
    assert_eq!(again["deletions"], serde_json::json!([]), "{again}");
    assert_eq!(again["summary"]["objects_deleted"], 0);
    assert_eq!(keys(&store).await, after, "a second gc deletes nothing");
    let text = t4(&cmd("gc", &flags)).ok().stdout;
    assert!(text.lines().any(|l| l == "nothing to delete"), "{text}");

    let status = t4(&cmd("status --json", &dir_flags(&bucket))).json();
    assert_eq!(status["checkpoints"]["count"], 3);
    assert_eq!(status["checkpoints"]["without_manifest"], 1);
    assert_eq!(status["wal"]["count"], 11);
    assert_eq!(status["ssts"]["count"], 4);
}

/// A delete that fails stops gc at once: a non-zero exit, a message naming
/// the object and how far it got, nothing deleted after it. Once the store
/// answers again, the next gc does the whole plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_stops_gc() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let store = open_dir(&bucket);
    let fixture = write_fixture(&store).await;
    let flags = with(&dir_flags(&bucket), &["--keep", "2"]);
    let before = listing(&store).await;

    // The first deletion's key locked: its delete waits, each attempt
    // fails as retryable, and the retries give up.
    let holder = FlockHolder::take(&store.key_lock_path(&fixture.deletions[0]));
    let started = Instant::now();
    let out = t4(&cmd("gc", &flags));
    drop(holder);
    eprintln!(
        "gc with the store locked gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let first = &fixture.deletions[0];
    assert!(
        out.stderr.contains(&format!(
            "gc stopped after deleting 0 of {} objects: deleting {first} failed: ",
            fixture.deletions.len()
        )) && out.stderr.contains("run t4 gc again"),
        "{}",
        out.stderr
    );
    assert!(
        keys_after(&out.stdout, "deleted ").is_empty(),
        "{}",
        out.stdout
    );
    assert_eq!(listing(&store).await, before, "nothing was deleted");

    let run = t4(&cmd("gc", &flags)).ok().stdout;
    assert_eq!(keys_after(&run, "deleted "), fixture.deletions);
}

/// Bad flags and unusable stores are refused with a clear message, and
/// change nothing (a missing directory is not created).
#[tokio::test]
async fn bad_flags_and_unusable_stores_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let store = open_dir(&bucket);
    write_fixture(&store).await;
    let before = listing(&store).await;

    let zero = t4(&cmd("gc --keep 0", &dir_flags(&bucket)));
    assert_eq!(zero.code, Some(2), "a usage error:\n{}", zero.stderr);
    assert!(
        zero.stderr.contains("--keep") && zero.stderr.contains("at least 1"),
        "{}",
        zero.stderr
    );
    assert_eq!(listing(&store).await, before, "--keep 0 deleted nothing");

    let missing = tmp.path().join("no-such-bucket");
    for command in ["status", "gc", "restore list"] {
        let out = t4(&cmd(command, &dir_flags(&missing)));
        assert_eq!(out.code, Some(1), "{command}: {}", out.stderr);
        assert!(
            out.stderr.contains("does not exist") && out.stderr.contains("no-such-bucket"),
            "{command}: {}",
            out.stderr
        );
        assert!(!missing.exists(), "{command} created the directory");

        let none = t4(&cmd(command, &[]));
        assert_eq!(none.code, Some(1), "{command}: {}", none.stderr);
        assert!(
            none.stderr.contains("no bucket given"),
            "{command}: {}",
            none.stderr
        );
    }

    let both = t4(&cmd("status --s3-bucket x", &dir_flags(&bucket)));
    assert_eq!(both.code, Some(2), "{}", both.stderr);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );

    let closed = format!("http://{}", free_addr());
    let unreachable = t4(&cmd(
        "gc --s3-bucket nowhere --s3-region us-east-1 --s3-access-key-id x --s3-secret-access-key y --s3-endpoint",
        std::slice::from_ref(&closed),
    ));
    assert_eq!(unreachable.code, Some(1), "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("s3://nowhere")
            && unreachable.stderr.contains(&closed)
            && unreachable.stderr.contains("not usable"),
        "names the store and says it is not usable: {}",
        unreachable.stderr
    );
    assert_eq!(listing(&store).await, before);
}

/// An empty bucket gets a sensible status, an empty restore list and a gc
/// that deletes nothing.
#[tokio::test]
async fn empty_bucket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    std::fs::create_dir(&bucket).expect("mkdir");
    let flags = dir_flags(&bucket);

    let text = t4(&cmd("status", &flags)).ok().stdout;
    assert_eq!(
        text,
        format!(
            "Bucket status dir:{}\n\
             Latest checkpoint\n  (none: manifest/latest does not exist)\n\
             Storage objects\n  checkpoints: 0 (0 objects, 0 bytes)\n  WAL objects: 0 (0 bytes)\n  SSTs: 0 (0 bytes)\n\
             Leader lock\n  none\n\
             Branch forks\n  (none)\n",
            bucket.display()
        )
    );
    let json = t4(&cmd("status --json", &flags)).json();
    assert_eq!(json["latest_checkpoint"]["state"], "none");
    assert_eq!(json["leader_lock"]["state"], "none");
    assert_eq!(json["wal"]["first_index"], Value::Null);

    let list = t4(&cmd("restore list", &flags)).ok().stdout;
    assert!(
        list.contains("manifest/latest: none\n(no checkpoints)\n"),
        "{list}"
    );
    let gc = t4(&cmd("gc", &flags)).ok().stdout;
    assert!(gc.lines().any(|l| l == "nothing to delete"), "{gc}");
    assert!(gc.lines().any(|l| l == "checkpoints deleted: 0"), "{gc}");
}

/// Damaged objects are reported, not fatal: an unreadable
/// `manifest/latest`, lock or checkpoint manifest, a pointer to a missing
/// checkpoint, a checkpoint missing a file. GC keeps what it cannot read;
/// an unreadable branch registration stops it before any deletion.
#[tokio::test]
async fn damage_is_reported_and_gc_stays_safe() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let store = open_dir(&bucket);
    let flags = dir_flags(&bucket);
    write_checkpoint(&store, 1, 10).await;
    let m20 = write_checkpoint(&store, 1, 20).await;
    let m30 = write_checkpoint(&store, 2, 30).await;
    put(&store, &m30.key(), "{not json").await;
    put(&store, MANIFEST_LATEST, "garbage").await;
    put(&store, LEADER_LOCK, "{\"format_version\":1}").await;
    // (1,20) loses its own SST.
    let gone = m20.ssts[1].key.clone();
    let deleted = store.execute(ObjectOp::Delete { key: gone.clone() }).await;
    assert!(matches!(deleted, Ok(ObjectReply::Deleted)), "{deleted:?}");

    let text = t4(&cmd("status", &flags)).ok().stdout;
    assert!(text.contains("\n  manifest/latest unreadable: "), "{text}");
    assert!(text.contains("\n  leader-lock unreadable: "), "{text}");
    let json = t4(&cmd("status --json", &flags)).json();
    assert_eq!(json["latest_checkpoint"]["state"], "unreadable");
    assert_eq!(json["leader_lock"]["state"], "unreadable");

    let list = t4(&cmd("restore list --json", &flags)).json();
    let c = &list["checkpoints"];
    assert_eq!(c[0]["index"], 30);
    assert_eq!(c[0]["manifest"]["state"], "unreadable");
    assert_eq!(c[0]["missing_files"], Value::Null);
    assert_eq!(c[1]["index"], 20);
    assert_eq!(c[1]["manifest"]["state"], "valid");
    assert_eq!(str_list(&c[1]["missing_files"]), [gone.as_str()]);
    assert_eq!(list["latest"]["state"], "unreadable");
    let text = t4(&cmd("restore list", &flags)).ok().stdout;
    assert!(
        text.contains(&format!("  files missing from the bucket (1): {gone}\n")),
        "{text}"
    );

    // keep 1: (1,20) lacks an SST, so it cannot be restored and does not
    // count; the newest restorable one is (1,10), kept; the unreadable
    // (2,30) and the incomplete (1,20) are newer, so kept too. Nothing is
    // deleted (no SST either: a kept manifest is unreadable).
    let json = t4(&cmd("gc --keep 1 --json", &flags)).json();
    assert_eq!(
        json["deletions"].as_array().map(Vec::len),
        Some(0),
        "{json}"
    );
    let reasons: Vec<(i64, Vec<&str>)> = json["kept_checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let r = k["reasons"].as_array().unwrap();
            (
                k["index"].as_i64().unwrap(),
                r.iter().map(|x| x.as_str().unwrap()).collect(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (30, vec!["unreadable"]),
            (20, vec!["incomplete"]),
            (10, vec!["newest"])
        ],
        "{json}"
    );
    let warnings = str_list(&json["warnings"]);
    assert!(
        warnings.iter().any(|w| w.contains("could not be read")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("cannot be restored")),
        "{warnings:?}"
    );
    let after = keys(&store).await;
    assert!(after.contains(&m30.key()), "the unreadable newest is kept");
    assert!(after.contains(&m20.key()));
    assert!(after.contains(&checkpoint_manifest_key(Term(1), Index(10))));

    // A pointer to a checkpoint that is not there.
    put(
        &store,
        MANIFEST_LATEST,
        LatestPointer::to_checkpoint(Term(9), Index(900))
            .encode()
            .to_vec(),
    )
    .await;
    let text = t4(&cmd("status", &flags)).ok().stdout;
    assert!(text.contains("  manifest: missing"), "{text}");
    let list = t4(&cmd("restore list --json", &flags)).json();
    assert_eq!(list["checkpoints"][0]["index"], 900);
    assert_eq!(list["checkpoints"][0]["listed"], false);
    assert_eq!(list["checkpoints"][0]["latest"], true);
    assert_eq!(list["checkpoints"][0]["manifest"]["state"], "missing");

    // An unreadable branch registration: gc refuses, deletes nothing.
    write_checkpoint(&store, 1, 5).await;
    put(&store, "branches/broken", "???").await;
    let before = listing(&store).await;
    let refused = t4(&cmd("gc --keep 1", &flags));
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("branch registration branches/broken cannot be read")
            && refused.stderr.contains("deletes nothing"),
        "{}",
        refused.stderr
    );
    assert_eq!(listing(&store).await, before, "nothing deleted");
    let status = t4(&cmd("status", &flags)).ok().stdout;
    assert!(
        status.contains("  branches/broken unreadable: "),
        "{status}"
    );
}

/// More objects than one list page (1,000 keys): every command pages
/// through all of them; gc deletes every covered WAL object but the oldest
/// and the last.
#[tokio::test]
async fn listings_page_through_large_buckets() {
    const OBJECTS: u64 = 1_001;
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let store = open_dir(&bucket);
    for first in 1..=OBJECTS {
        put(
            &store,
            &wal_key(Index(first)),
            wal_object::encode(Term(1), &entries(first, 1, 1)).to_vec(),
        )
        .await;
    }
    write_checkpoint(&store, 1, 1000).await;
    let flags = dir_flags(&bucket);

    let status = t4(&cmd("status --json", &flags)).json();
    assert_eq!(status["wal"]["count"], OBJECTS);
    assert_eq!(status["wal"]["last_index"], OBJECTS);

    let gc = t4(&cmd("gc --json", &flags)).json();
    let wal_deleted = gc["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "wal")
        .count();
    assert_eq!(wal_deleted, 999, "2 ..= 1000 are covered non-fences");
    let left: Vec<String> = keys(&store)
        .await
        .into_iter()
        .filter(|k| k.starts_with("wal/"))
        .collect();
    assert_eq!(left, [wal_key(Index(1)), wal_key(Index(OBJECTS))]);
}

/// Real nodes wrote the bucket (a takeover included): status shows the
/// lock of the second node and its WAL; gc is safe on it, and a fresh node
/// still recovers every write from the bucket afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_gc_on_a_bucket_real_nodes_wrote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let flags = dir_flags(&bucket);
    let node_flags = |id: &str| -> Vec<String> { with(&flags, &["--node-id", id]) };
    let start = |dir: &str, id: &str| {
        let f = node_flags(id);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        Server::start(&tmp.path().join(dir), &f)
    };

    let mut a = start("data-a", "node-a");
    let mut c = a.client().await;
    for i in 0..5 {
        c.put(format!("k{i}"), format!("a{i}"), None)
            .await
            .expect("put");
    }
    a.kill9();
    let mut b = start("data-b", "node-b");
    let mut c = b.client().await;
    for i in 5..8 {
        c.put(format!("k{i}"), format!("b{i}"), None)
            .await
            .expect("put");
    }
    b.kill9();

    let text = t4(&cmd("status", &flags)).ok().stdout;
    assert!(
        text.contains("\n  term 2, member node-b, peer address (none)\n"),
        "{text}"
    );
    let json = t4(&cmd("status --json", &flags)).json();
    assert_eq!(json["leader_lock"]["term"], 2);
    assert_eq!(json["leader_lock"]["leader_id"], "node-b");
    assert_eq!(json["wal"]["first_index"], 1);
    let last = json["wal"]["last_index"].as_u64().expect("a last index");
    assert!(last >= 10, "8 puts and 2 fences at least: {json}");
    assert!(json["wal"]["count"].as_u64().unwrap() >= 10, "{json}");

    let list = t4(&cmd("restore list --json", &flags)).json();
    let has_checkpoints = !list["checkpoints"].as_array().unwrap().is_empty();
    let gc = t4(&cmd("gc --json", &flags)).json();
    if !has_checkpoints {
        assert_eq!(
            gc["deletions"],
            serde_json::json!([]),
            "no checkpoint, no deletion"
        );
    }
    let again = t4(&cmd("gc --json", &flags)).json();
    assert_eq!(again["deletions"], serde_json::json!([]));

    let mut fresh = start("data-c", "node-c");
    let mut c = fresh.client().await;
    let got = c
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    let values: Vec<(String, String)> = got
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = (0..8)
        .map(|i| {
            (
                format!("k{i}"),
                format!("{}{i}", if i < 5 { 'a' } else { 'b' }),
            )
        })
        .collect();
    assert_eq!(values, want, "every write survives gc");
}

/// S3 (moto), under a prefix: status reads the same bucket contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("t4-status");
    let config = StoreConfig::S3(S3Config {
        bucket: "t4-status".into(),
        prefix: "tenant-a".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.endpoint()),
        credentials: S3Credentials::Static {
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            session_token: None,
        },
    });
    let store = open_store(&config, RetryConfig::default())
        .await
        .expect("open moto");
    write_fixture(&*store).await;

    let flags = moto.flags("t4-status", "tenant-a");
    let json = t4(&cmd("status --json", &flags)).json();
    let described = json["bucket"].as_str().expect("bucket");
    assert!(
        described.contains("s3://t4-status/tenant-a/"),
        "{described}"
    );
    assert_eq!(
        json["latest_checkpoint"]["manifest_key"],
        checkpoint_manifest_key(Term(3), Index(60)).as_str()
    );
    assert_eq!(json["checkpoints"]["count"], 6);
    assert_eq!(json["wal"]["count"], 13);
    assert_eq!(json["wal"]["last_index"], 65);
    assert_eq!(json["ssts"]["count"], 8);
    assert_eq!(json["leader_lock"]["term"], 3);
    assert_eq!(json["branches"][0]["branch_id"], "b1");

    let other = t4(&cmd("status --json", &moto.flags("t4-status", "tenant-b"))).json();
    assert_eq!(other["wal"]["count"], 0, "another prefix is another bucket");
}

/// `t4 member force-remove` rewrites a two-member lock without the lost
/// member, naming the other leader of the next term (one conditional
/// write); it refuses, changing nothing, a lock of other sizes, a name
/// that is no member, and a bucket without a lock.
#[tokio::test]
async fn member_force_remove_takes_two_members_to_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = dir_flags(dir.path());
    let store = open_dir(dir.path());
    let member = |id: &str| Member {
        id: id.into(),
        peer_addr: format!("{id}.local:3380"),
    };
    let no_lock = t4(&with(&cmd("member force-remove", &flags), &["n1"]));
    assert_ne!(no_lock.code, Some(0));
    assert!(no_lock.stderr.contains("no cluster"), "{}", no_lock.stderr);

    let three = LeaderLock {
        term: Term(3),
        leader_id: "n1".into(),
        leader_peer_addr: member("n1").peer_addr,
        members: vec![member("n1"), member("n2"), member("n3")],
        generation: 5,
    };
    put(&store, LEADER_LOCK, three.encode().to_vec()).await;
    let before = listing(&store).await;
    let refused = t4(&with(&cmd("member force-remove", &flags), &["n1"]));
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("3 members"), "{}", refused.stderr);
    assert_eq!(listing(&store).await, before, "nothing written");

    let two = LeaderLock {
        members: vec![member("n1"), member("n2")],
        ..three
    };
    put(&store, LEADER_LOCK, two.encode().to_vec()).await;
    let stranger = t4(&with(&cmd("member force-remove", &flags), &["n9"]));
    assert!(
        stranger.stderr.contains("not a member"),
        "{}",
        stranger.stderr
    );

    let out = t4(&with(&cmd("member force-remove", &flags), &["n1"])).ok();
    assert!(
        out.stdout.contains("n2 is the only member"),
        "{}",
        out.stdout
    );
    let Ok(ObjectReply::Got { body, .. }) = store
        .execute(ObjectOp::Get {
            key: LEADER_LOCK.into(),
        })
        .await
    else {
        panic!("the lock");
    };
    let forced = LeaderLock::decode(&body).expect("decode");
    assert_eq!(
        forced,
        LeaderLock {
            term: Term(4),
            leader_id: "n2".into(),
            leader_peer_addr: member("n2").peer_addr,
            members: vec![member("n2")],
            generation: 6,
        }
    );
    let last = t4(&with(&cmd("member force-remove", &flags), &["n2"]));
    assert!(last.stderr.contains("1 members"), "{}", last.stderr);
}
