//! Bucket mode against the real binary: a single node whose writes are
//! acknowledged only once fsynced and in the bucket (a directory store, or
//! S3 served by moto).
//!
//! - A node that loses its disk recovers every acknowledged write from the
//!   bucket, with its revision, and carries on.
//! - A node that was paused while another took the bucket over is fenced
//!   when it resumes: its writes and reads fail, and none of its writes
//!   reach the bucket.
//! - A node stopped anywhere, even in the middle of a directory-store put,
//!   does not hold up the takeover; only a stopped holder of the directory
//!   store's `leader-lock` key lock delays it, until it lets go.
//! - Bad flags, an unreachable store and a corrupt WAL object stop `t4 run`
//!   with a message saying what is wrong, and change nothing in the bucket.
//!
//! The S3 test needs moto: `scripts/setup` installs it. Without it the test
//! fails (it does not skip) and says so.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_addr, status_of, within, FlockHolder, Moto, Server};
use etcd_client::GetOptions;
use t4_core::object::{ObjectOp, ObjectReply, PutCondition};
use t4_io_real::object::{DirStore, ObjectStore};

/// What the writers saw acknowledged: key → (value, mod revision).
type Acked = Arc<Mutex<BTreeMap<String, (String, i64)>>>;

/// How a directory-store bucket is named on the command line.
fn dir_flags(bucket: &Path) -> Vec<String> {
    vec![
        "--object-store-dir".to_owned(),
        bucket.to_str().expect("utf-8 temp path").to_owned(),
    ]
}

fn start(data_dir: &Path, flags: &[String]) -> Server {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start(data_dir, &flags)
}

/// Waits until `server` answers, at most 30 s. `Server::client` alone can
/// wait forever here: the port is bound before the bucket start-up, so a
/// start-up that never ends leaves connections hanging in the backlog.
async fn ready(server: &mut Server) -> etcd_client::Client {
    match tokio::time::timeout(Duration::from_secs(30), server.client()).await {
        Ok(client) => client,
        Err(_) => panic!("t4 did not serve within 30 s; log:\n{}", server.log()),
    }
}

/// The value writer `id` puts under its `i`-th key, so any key found later
/// can be checked against what was written, acknowledged or not.
fn key_value(id: usize, i: usize) -> (String, String) {
    (format!("w{id}/k{i}"), format!("value-{id}-{i}"))
}

/// Puts up to `puts_max` keys one after another, recording each
/// acknowledged one; stops at the first error (the server died: that
/// write's outcome is unknown).
async fn writer(endpoint: String, id: usize, puts_max: usize, acked: Acked) {
    let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await else {
        return;
    };
    for i in 0..puts_max {
        let (key, value) = key_value(id, i);
        match c.put(key.clone(), value.clone(), None).await {
            Ok(r) => {
                let rev = r.header().expect("put answers a header").revision();
                acked.lock().expect("lock").insert(key, (value, rev));
            }
            Err(_) => return,
        }
    }
}

/// Every key under `prefix`: key → (value, mod revision), and the header
/// revision.
async fn all_under(
    c: &mut etcd_client::Client,
    prefix: &str,
) -> (BTreeMap<String, (String, i64)>, i64) {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf-8").to_owned(),
                (kv.value_str().expect("utf-8").to_owned(), kv.mod_revision()),
            )
        })
        .collect();
    (kvs, r.header().expect("header").revision())
}

/// Checks a recovered node: every acknowledged write is there with its
/// value and revision, every other `w…` key holds what its writer wrote,
/// and the revision did not go back. Returns the head revision.
async fn assert_recovered(
    c: &mut etcd_client::Client,
    acked: &BTreeMap<String, (String, i64)>,
    what: &str,
) -> i64 {
    let (present, head) = all_under(c, "w").await;
    for (key, want) in acked {
        let got = present.get(key).unwrap_or_else(|| {
            panic!(
                "{what}: acknowledged {key} lost ({} of {} acks present)",
                acked.keys().filter(|k| present.contains_key(*k)).count(),
                acked.len()
            )
        });
        assert_eq!(
            got, want,
            "{what}: {key} has its acknowledged value and mod revision"
        );
    }
    for (key, (value, _)) in &present {
        let (id, i) = key
            .strip_prefix('w')
            .and_then(|rest| rest.split_once("/k"))
            .and_then(|(id, i)| Some((id.parse().ok()?, i.parse().ok()?)))
            .unwrap_or_else(|| panic!("{what}: unexpected key {key}"));
        assert_eq!(
            value,
            &key_value(id, i).1,
            "{what}: {key} holds what its writer wrote"
        );
    }
    let max_acked = acked.values().map(|(_, rev)| *rev).max().unwrap_or(1);
    assert!(
        head >= max_acked,
        "{what}: revision went back: {head} < {max_acked}"
    );
    head
}

/// Concurrent writers on the bucket that `flags` name, `kill -9` once
/// `ACKS_MIN` writes were acknowledged (others are in flight), the data
/// directory deleted, a new node on a fresh directory: every acknowledged
/// write is back, new writes work, and they survive the same loss again.
async fn disk_loss_keeps_every_ack(root: &Path, flags: &[String]) {
    const WRITERS: usize = 4;
    const PUTS_PER_WRITER: usize = 60;
    const ACKS_MIN: usize = 200;

    let first_dir = root.join("data-1");
    let mut first = start(&first_dir, flags);
    ready(&mut first).await;
    let acked: Acked = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            tokio::spawn(writer(
                first.endpoint(),
                id,
                PUTS_PER_WRITER,
                Arc::clone(&acked),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().expect("lock").len() < ACKS_MIN && writers.iter().any(|w| !w.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "writers too slow: {} acks after 20 s",
            acked.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill9();
    for w in writers {
        within("a writer to notice the crash", w)
            .await
            .expect("writer task");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= ACKS_MIN,
        "the writers made progress ({} acks)",
        acked.len()
    );
    std::fs::remove_dir_all(&first_dir).expect("wipe the data directory");

    let second_dir = root.join("data-2");
    let mut second = start(&second_dir, flags);
    let mut c = ready(&mut second).await;
    let head = assert_recovered(&mut c, &acked, "after losing the disk").await;
    let (present, _) = all_under(&mut c, "w").await;
    eprintln!(
        "disk loss: {} writes acknowledged before kill -9, all recovered; {} unacknowledged ones landed too",
        acked.len(),
        present.len() - acked.len()
    );
    let r = c
        .put("after/k", "v", None)
        .await
        .expect("a write after recovery");
    assert_eq!(
        r.header().expect("header").revision(),
        head + 1,
        "revisions continue"
    );
    let got = c.get("after/k", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v");

    // What the recovered node acknowledged is in the bucket too.
    second.kill9();
    std::fs::remove_dir_all(&second_dir).expect("wipe the data directory");
    let mut third = start(&root.join("data-3"), flags);
    let mut c = ready(&mut third).await;
    assert_recovered(&mut c, &acked, "after losing the disk twice").await;
    let got = c.get("after/k", None).await.expect("get");
    assert_eq!(
        got.kvs().len(),
        1,
        "the write acknowledged after the first recovery survives"
    );
    assert_eq!(got.kvs()[0].mod_revision(), head + 1);
}

/// Directory store: a node that loses its data directory loses no
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_store_disk_loss_keeps_every_acknowledged_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    disk_loss_keeps_every_ack(tmp.path(), &dir_flags(&tmp.path().join("bucket"))).await;
}

/// S3 (moto): a node that loses its data directory loses no acknowledged
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_disk_loss_keeps_every_acknowledged_write() {
    let moto = Moto::start();
    moto.create_bucket("t4-disk-loss");
    let tmp = tempfile::tempdir().expect("tempdir");
    disk_loss_keeps_every_ack(tmp.path(), &moto.flags("t4-disk-loss", "cluster-a")).await;
}

/// A node paused while another took its bucket over is fenced when it
/// resumes: its writes and reads fail with Unavailable, it stays up, and
/// nothing it writes reaches the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_node_is_fenced_after_takeover() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let flags = dir_flags(&tmp.path().join("bucket"));
    // A stopped process still dies on drop: `Server`'s drop sends SIGKILL,
    // which ends a stopped process too, so a failing assertion leaves
    // nothing behind.
    let mut zombie = start(&tmp.path().join("data-a"), &flags);
    let mut za = ready(&mut zombie).await;
    za.put("k1", "v1", None).await.expect("put k1 on A");
    zombie.signal("STOP");

    let mut successor = start(&tmp.path().join("data-b"), &flags);
    let mut sb = ready(&mut successor).await;
    let got = sb.get("k1", None).await.expect("get k1 on B");
    assert_eq!(got.kvs()[0].value(), b"v1", "B caught up from the bucket");
    sb.put("k2", "v2", None).await.expect("put k2 on B");

    zombie.signal("CONT");
    let put = within("the zombie's put", za.put("zombie", "lost", None)).await;
    let status = status_of(put.expect_err("a fenced node refuses writes"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("t4: node fenced:"),
        "{status:?}"
    );
    let get = within("the zombie's get", za.get("k1", None)).await;
    let status = status_of(get.expect_err("a fenced node refuses reads"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("fenced"), "{status:?}");
    // It stays up (and fenced) rather than exiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        zombie.exited(),
        None,
        "the fenced node keeps running; log:\n{}",
        zombie.log()
    );
    let again = within(
        "a second put on the zombie",
        za.put("zombie-2", "lost", None),
    )
    .await;
    assert_eq!(
        status_of(again.expect_err("still fenced")).code(),
        tonic::Code::Unavailable
    );

    let (present, _) = all_under(&mut sb, "").await;
    let keys: Vec<&str> = present.keys().map(String::as_str).collect();
    assert_eq!(keys, ["k1", "k2"], "B never sees the zombie's writes");
    sb.put("k3", "v3", None).await.expect("B still writes");

    // Nor does the bucket: a node with an empty disk replays exactly B's log.
    successor.kill9();
    let mut fresh = start(&tmp.path().join("data-c"), &flags);
    let mut sc = ready(&mut fresh).await;
    let (present, _) = all_under(&mut sc, "").await;
    let keys: Vec<&str> = present.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["k1", "k2", "k3"],
        "the bucket holds no write of the zombie"
    );
}

/// The zombie's first request after it resumes is a read of a key the new
/// node has overwritten: the read lease has run out, so it reads the lock,
/// finds the new writer and refuses the read instead of answering the old
/// value (before the read lease it answered `v1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_zombie_refuses_reads_before_any_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let flags = dir_flags(&tmp.path().join("bucket"));
    let mut zombie = start(&tmp.path().join("data-a"), &flags);
    let mut za = ready(&mut zombie).await;
    za.put("k", "v1", None).await.expect("put on A");
    let got = za.get("k", None).await.expect("a linearizable read on A");
    assert_eq!(got.kvs()[0].value(), b"v1");
    zombie.signal("STOP");

    let mut successor = start(&tmp.path().join("data-b"), &flags);
    let mut sb = ready(&mut successor).await;
    sb.put("k", "v2", None).await.expect("put on B");

    zombie.signal("CONT");
    let get = within("the zombie's read", za.get("k", None)).await;
    let status = status_of(get.expect_err("the zombie must not answer v1"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("fenced"), "{status:?}");
    assert!(
        status.message().contains("another node took over"),
        "{status:?}"
    );
    let got = sb.get("k", None).await.expect("B reads");
    assert_eq!(got.kvs()[0].value(), b"v2");
}

/// How a `t4` run that should exit by itself ended.
struct Exited {
    status: ExitStatus,
    stderr: String,
    elapsed: Duration,
}

/// Runs `t4 run` with `args` (plus a data directory and free ports) and
/// waits up to `limit` for it to exit; panics if it is still running then.
fn run_until_exit(root: &Path, args: &[&str], limit: Duration) -> Exited {
    let stderr_path = root.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_t4"))
        .arg("run")
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(["--listen", &free_addr().to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn t4");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "t4 run {args:?} still running after {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        status,
        stderr: std::fs::read_to_string(&stderr_path).expect("read stderr"),
        elapsed: started.elapsed(),
    }
}

/// Two buckets at once, and asynchronous upload without a bucket, are
/// refused before anything starts.
#[test]
fn conflicting_or_unimplemented_flags_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let bucket = bucket.to_str().expect("utf-8");

    let both = run_until_exit(
        tmp.path(),
        &["--s3-bucket", "x", "--object-store-dir", bucket],
        Duration::from_secs(10),
    );
    assert_eq!(
        both.status.code(),
        Some(2),
        "a usage error; stderr:\n{}",
        both.stderr
    );
    assert!(
        both.stderr.contains("cannot be used with")
            && both.stderr.contains("--s3-bucket")
            && both.stderr.contains("--object-store-dir"),
        "names both flags:\n{}",
        both.stderr
    );

    let no_bucket = run_until_exit(
        tmp.path(),
        &["--wal-sync-upload=false"],
        Duration::from_secs(10),
    );
    assert!(!no_bucket.status.success(), "stderr:\n{}", no_bucket.stderr);
    assert!(
        no_bucket.stderr.contains("--wal-sync-upload=false")
            && no_bucket.stderr.contains("needs a bucket"),
        "says a bucket is needed:\n{}",
        no_bucket.stderr
    );
    assert!(
        !Path::new(bucket).exists(),
        "nothing was created in the bucket"
    );
}

/// An S3 endpoint nobody listens on stops `t4 run` within a bounded time,
/// with a message naming the store.
#[test]
fn unreachable_s3_endpoint_fails_the_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let closed = free_addr();
    let endpoint = format!("http://{closed}");
    let exited = run_until_exit(
        tmp.path(),
        &[
            "--s3-bucket",
            "nowhere",
            "--s3-endpoint",
            &endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            "x",
            "--s3-secret-access-key",
            "y",
        ],
        Duration::from_secs(60),
    );
    eprintln!(
        "unreachable S3 endpoint: t4 run exited after {:?}",
        exited.elapsed
    );
    assert!(!exited.status.success(), "stderr:\n{}", exited.stderr);
    assert!(
        exited.stderr.contains("s3://nowhere")
            && exited.stderr.contains(&endpoint)
            && exited.stderr.contains("not usable"),
        "names the store and says it is not usable:\n{}",
        exited.stderr
    );
}

/// Every file of a directory-store bucket but the lock, by path: the bucket
/// as a refused start must leave it.
fn bucket_files(bucket: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read bucket folder") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            // The store's temp and lock folders (and the lock file of
            // earlier versions), and the leader lock every start takes.
            if [".t4-lock", ".t4-tmp", ".t4-locks", "leader-lock.o"]
                .iter()
                .any(|n| rel == Path::new(n))
            {
                continue;
            }
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read object file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(bucket, bucket, &mut out);
    out
}

/// A bucket with a few WAL objects (one per serial put): returns the
/// bucket and the `wal/…` key of one in the middle.
async fn bucket_with_wal_objects(root: &Path) -> (PathBuf, String) {
    let bucket = root.join("bucket");
    let data = root.join("data-1");
    let mut server = start(&data, &dir_flags(&bucket));
    let mut c = ready(&mut server).await;
    for i in 0..6 {
        c.put(format!("k{i}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    server.kill9();
    std::fs::remove_dir_all(&data).expect("wipe the data directory");
    let mut objects: Vec<String> = std::fs::read_dir(bucket.join("wal.d"))
        .expect("the bucket has WAL objects")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter_map(|name| name.strip_suffix(".o").map(|index| format!("wal/{index}")))
        .collect();
    objects.sort();
    assert!(
        objects.len() >= 4,
        "one object per put, plus the fence: {objects:?}"
    );
    let middle = objects[objects.len() / 2].clone();
    (bucket, middle)
}

/// Starts a node with an empty disk on `bucket` and checks it refuses:
/// exits non-zero, its log names `key` and says it refuses, and the bucket
/// is as it was apart from the lock.
fn assert_start_refused(root: &Path, bucket: &Path, key: &str) {
    let before = bucket_files(bucket);
    let mut server = start(&root.join("data-2"), &dir_flags(bucket));
    let Some(status) = server.wait_exit(Duration::from_secs(20)) else {
        panic!(
            "t4 still runs 20 s after finding {key} corrupt; log:\n{}",
            server.log()
        );
    };
    let log = server.log();
    assert!(!status.success(), "exit {status}; log:\n{log}");
    let digits = key.strip_prefix("wal/").expect("a WAL key");
    assert!(log.contains(digits), "the log names {key}:\n{log}");
    assert!(log.contains("refus"), "the log says it refuses:\n{log}");
    eprintln!("refused: {}", log.lines().last().unwrap_or_default());
    // Not assert_eq: the message would print every object's bytes.
    assert!(
        before == bucket_files(bucket),
        "the refused start changed the bucket beyond its lock"
    );
}

/// A WAL object whose body is not a WAL segment refuses the start (it may
/// hold acknowledged writes) and leaves the bucket unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_wal_object_refuses_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (bucket, key) = bucket_with_wal_objects(tmp.path()).await;
    // A well-formed store object (the store's checksum matches) whose body
    // is garbage: only the WAL object codec can tell.
    let store = DirStore::open(&bucket).expect("open the bucket folder");
    let garbage: Vec<u8> = (0..200u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
    let put = store
        .execute(ObjectOp::Put {
            key: key.clone(),
            body: garbage.into(),
            condition: PutCondition::None,
        })
        .await;
    assert!(matches!(put, Ok(ObjectReply::Put { .. })), "{put:?}");
    assert_start_refused(tmp.path(), &bucket, &key);
}

/// A WAL object file overwritten with garbage (the directory store's own
/// header is gone too) refuses the start as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_wal_object_file_refuses_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (bucket, key) = bucket_with_wal_objects(tmp.path()).await;
    let file = bucket.join("wal.d").join(format!(
        "{}.o",
        key.strip_prefix("wal/").expect("a WAL key")
    ));
    std::fs::write(&file, b"this is not an object file at all").expect("overwrite");
    assert_start_refused(tmp.path(), &bucket, &key);
}

/// Whether process `pid` is stopped (state `T` in `/proc/<pid>/stat`).
fn is_stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
}

/// Whether process `pid` has a file of the directory store's temp folder
/// open: it is in the middle of a put (from writing the temp file until
/// the object has its name, is fsynced and the put answers).
fn is_inside_a_put(pid: u32, bucket: &Path) -> bool {
    let temps = bucket.join(".t4-tmp");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(&temps)))
}

/// A node paused under load, between two puts to the directory store, is
/// taken over: the successor serves every write the paused node
/// acknowledged, and once resumed the paused node is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_paused_under_load_is_taken_over() {
    takeover_from_node_paused_under_load(false).await;
}

/// The same, with the node paused *in the middle of* a directory-store put
/// (its WAL object written, maybe already under its key, maybe not yet
/// fsynced or answered).
///
/// This used to hang: every put held a store-wide `flock` from its
/// condition check to its folder fsyncs, so the successor's first put
/// waited for the paused process. Creates now take no lock, and the
/// successor's `If-Match` of `leader-lock` takes only that key's lock,
/// which a node under write load never holds (the store's module docs say
/// what a stopped process can still hold up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_paused_in_the_middle_of_a_store_put_is_taken_over() {
    takeover_from_node_paused_under_load(true).await;
}

/// A process stopped while holding directory-store key locks (the test
/// holds them with `flock(1)`, as such a process would) holds up a
/// takeover only if one of them is `leader-lock`'s: with the locks of
/// `manifest/latest` and of every WAL object held, B takes over and serves
/// every acknowledged write; with `leader-lock`'s held, C's claim fails as
/// retryable (after a bounded wait, again and again) and C serves only once
/// the lock is released. That is the window the store's docs leave open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_waits_only_for_a_held_leader_lock_key_lock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let flags = dir_flags(&bucket);
    let mut a = start(&tmp.path().join("data-a"), &flags);
    ready(&mut a).await;
    let acked: Acked = Arc::default();
    writer(a.endpoint(), 0, 20, Arc::clone(&acked)).await;
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), 20);
    a.signal("STOP");

    let store = DirStore::open(&bucket).expect("open the bucket folder");
    let wal_keys: Vec<String> = match store
        .execute(ObjectOp::List {
            prefix: "wal/".into(),
            start_after: None,
            max_keys: 1000,
        })
        .await
    {
        Ok(ObjectReply::Listed { objects, .. }) => objects.into_iter().map(|o| o.key).collect(),
        other => panic!("list wal/: {other:?}"),
    };
    assert!(!wal_keys.is_empty());
    let others: Vec<FlockHolder> = wal_keys
        .iter()
        .map(String::as_str)
        .chain(["manifest/latest"])
        .map(|key| FlockHolder::take(&store.key_lock_path(key)))
        .collect();
    let mut b = start(&tmp.path().join("data-b"), &flags);
    let mut sb = ready(&mut b).await;
    assert_recovered(&mut sb, &acked, "takeover with other keys locked").await;
    drop(others);

    let leader_lock = FlockHolder::take(&store.key_lock_path("leader-lock"));
    let mut c = start(&tmp.path().join("data-c"), &flags);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.log().contains("held by another writer") {
        assert!(
            Instant::now() < deadline,
            "C's claim did not report the held lock; log:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let serving = tokio::time::timeout(Duration::from_secs(2), async {
        let mut client = etcd_client::Client::connect([c.endpoint()], None)
            .await
            .ok()?;
        client.get("probe", None).await.ok()
    })
    .await;
    assert!(
        !matches!(serving, Ok(Some(_))),
        "C serves while leader-lock's lock is held"
    );
    drop(leader_lock);
    let mut sc = ready(&mut c).await;
    assert_recovered(&mut sc, &acked, "takeover once leader-lock's lock is free").await;
}

/// Writers on node A; A stopped (inside a directory-store put or between
/// puts); node B started on the same bucket must serve every write A
/// acknowledged, before or after it resumed; A resumed is fenced.
async fn takeover_from_node_paused_under_load(inside_a_put: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bucket = tmp.path().join("bucket");
    let flags = dir_flags(&bucket);
    let mut zombie = start(&tmp.path().join("data-a"), &flags);
    ready(&mut zombie).await;
    let acked: Acked = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|id| tokio::spawn(writer(zombie.endpoint(), id, 100_000, Arc::clone(&acked))))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().expect("lock").len() < 50 {
        assert!(Instant::now() < deadline, "writers too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Stop A at a moment it is (or is not) inside a put.
    let pid = zombie.pid();
    let mut tries = 0;
    loop {
        zombie.signal("STOP");
        while !is_stopped(pid) {
            std::thread::yield_now();
        }
        if is_inside_a_put(pid, &bucket) == inside_a_put {
            break;
        }
        zombie.signal("CONT");
        tries += 1;
        assert!(tries < 2000, "never caught A in the wanted state");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!("A stopped (inside a put: {inside_a_put}) after {tries} tries");

    let mut successor = start(&tmp.path().join("data-b"), &flags);
    let mut sb = ready(&mut successor).await;
    // A is stopped: the acks it sent before have arrived by now.
    let acked_before_resume = acked.lock().expect("lock").clone();
    assert_recovered(&mut sb, &acked_before_resume, "takeover from a paused node").await;

    zombie.signal("CONT");
    for w in writers {
        within("the zombie's writers to fail", w)
            .await
            .expect("writer task");
    }
    // A may still acknowledge the batch whose object it had put before it
    // stopped (B replayed that object); anything else it must refuse.
    let acked = acked.lock().expect("lock").clone();
    eprintln!(
        "{} acks before A resumed, {} after",
        acked_before_resume.len(),
        acked.len() - acked_before_resume.len()
    );
    assert_recovered(
        &mut sb,
        &acked,
        "every write A acknowledged, even after resuming",
    )
    .await;
    let mut za = etcd_client::Client::connect([zombie.endpoint()], None)
        .await
        .expect("connect to A");
    let put = within("a put on the resumed node", za.put("late", "x", None)).await;
    let status = status_of(put.expect_err("the resumed node is fenced"));
    assert!(
        status.message().starts_with("t4: node fenced:"),
        "{status:?}"
    );
}

/// `t4 run --checkpoint-entries N` uploads checkpoints; `t4 restore
/// checkpoint` prepares a new data directory from the newest one (and
/// refuses to overwrite one), and `t4 run` on it serves every write,
/// including those after the checkpoint (from the bucket's WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_checkpoint_prepares_a_data_dir_that_serves_every_write() {
    let root = tempfile::tempdir().expect("tempdir");
    let bucket = root.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let mut flags = dir_flags(&bucket);
    flags.extend(["--checkpoint-entries".to_owned(), "25".to_owned()]);
    let mut server = start(&root.path().join("a"), &flags);
    let endpoint = server.endpoint();
    ready(&mut server).await;
    let acked: Acked = Arc::default();
    writer(endpoint, 0, 120, Arc::clone(&acked)).await;
    assert_eq!(acked.lock().unwrap().len(), 120);
    // Wait until a checkpoint covers most of it.
    let store = DirStore::open(&bucket).expect("store");
    let mut newest = None;
    for _ in 0..200 {
        newest = t4_io_real::checkpoint::read_latest(&store)
            .await
            .expect("latest");
        if newest.as_ref().is_some_and(|p| p.index.0 >= 100) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let newest = newest.expect("a checkpoint was uploaded");
    assert!(newest.index.0 >= 100, "{newest:?}");
    server.terminate();

    let restored = root.path().join("restored");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["restore".into(), "checkpoint".into()];
        args.extend(dir_flags(&bucket));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(&args)
            .output()
            .expect("t4 runs")
    };
    let out = run(&["--data-dir", restored.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&newest.manifest_key), "{stdout}");
    assert!(
        restored.join("db").join("CURRENT").exists(),
        "the engine is in place"
    );
    assert!(
        !restored.join("wal").exists(),
        "no WAL: the bucket's is replayed"
    );
    // Never over a data dir with anything in it.
    let again = run(&["--data-dir", restored.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    // A key that names no checkpoint is refused before anything happens.
    let other = root.path().join("other");
    let bad = run(&[
        "--data-dir",
        other.to_str().unwrap(),
        "--checkpoint",
        "wal/1",
    ]);
    assert!(!bad.status.success());
    assert!(!other.exists());

    let mut server = start(&restored, &dir_flags(&bucket));
    let mut client = ready(&mut server).await;
    let (found, _) = all_under(&mut client, "w0/").await;
    let expected = acked.lock().unwrap().clone();
    assert_eq!(found, expected, "every acknowledged write, at its revision");
    server.terminate();
}
