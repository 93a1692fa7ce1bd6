//! The object stores against the object-store contract: the conformance
//! suite on the memory, directory and S3 stores (S3 = a moto server this
//! test starts), each bare and behind the retry wrapper; plus what the suite
//! cannot see: the S3 prefix join, errors at open, moto's HTTP answers mapped
//! to outcomes, the directory store's races between stores and processes
//! on one folder (creates, deletes, `IfMatch`), its bounded wait for a key
//! lock held elsewhere, unreadable object files, path traversal, and the
//! retry wrapper's timing under paused time.
//!
//! The S3 tests need moto: `scripts/setup` installs it. Without it they fail
//! (they do not skip) and say so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use t4_core::object::{
    ETag, ObjectError, ObjectInfo, ObjectOp, ObjectReply, ObjectResult, PutCondition,
};
use t4_core::testkit::object_conformance;
use t4_io_real::object::{
    open_store, CreateWith, DirOptions, DirStore, MemStore, ObjectStore, OpenStoreError,
    RetryConfig, Retrying, S3Config, S3Credentials, S3Store, StoreConfig, UNREADABLE_ETAG,
};

// ---------------------------------------------------------------------------
// Helpers

/// Runs the conformance suite against `store` (which must be empty).
async fn conforms(store: Arc<dyn ObjectStore>) {
    let what = store.describe();
    let start = Instant::now();
    object_conformance(|op| {
        let store = Arc::clone(&store);
        async move { store.execute(op).await }
    })
    .await;
    eprintln!("conformance: {what} passed in {:?}", start.elapsed());
}

/// Fast retries, so tests that expect failures do not wait long.
fn quick_retries() -> RetryConfig {
    RetryConfig {
        attempts_max: 3,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        attempt_timeout: Duration::from_secs(30),
        attempt_timeout_per_mib: Duration::from_secs(1),
    }
}

/// Every way the directory store can create objects (this machine's file
/// system supports all three).
const CREATE_WAYS: [CreateWith; 3] = [
    CreateWith::HardLink,
    CreateWith::RenameNoReplace,
    CreateWith::KeyLock,
];

/// A directory store at `root` that creates objects `way`.
fn dir_store(root: &Path, way: CreateWith) -> DirStore {
    DirStore::open_with(
        root,
        DirOptions {
            create_with: Some(way),
            ..DirOptions::default()
        },
    )
    .expect("open")
}

fn body(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put_op(key: &str, contents: &str, condition: PutCondition) -> ObjectOp {
    ObjectOp::Put {
        key: key.into(),
        body: body(contents),
        condition,
    }
}

fn get_op(key: &str) -> ObjectOp {
    ObjectOp::Get { key: key.into() }
}

fn list_op(prefix: &str) -> ObjectOp {
    ObjectOp::List {
        prefix: prefix.into(),
        start_after: None,
        max_keys: 1000,
    }
}

async fn put_ok(
    store: &dyn ObjectStore,
    key: &str,
    contents: &str,
    condition: PutCondition,
) -> ETag {
    match store
        .execute(put_op(key, contents, condition.clone()))
        .await
    {
        Ok(ObjectReply::Put { etag }) => etag,
        other => panic!("put {key} {condition:?} on {}: {other:?}", store.describe()),
    }
}

async fn listed(store: &dyn ObjectStore, prefix: &str) -> Vec<ObjectInfo> {
    match store.execute(list_op(prefix)).await {
        Ok(ObjectReply::Listed { objects, truncated }) => {
            assert!(!truncated, "small listings fit one page");
            objects
        }
        other => panic!("list {prefix:?} on {}: {other:?}", store.describe()),
    }
}

async fn listed_keys(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    listed(store, prefix)
        .await
        .into_iter()
        .map(|o| o.key)
        .collect()
}

// ---------------------------------------------------------------------------
// moto

/// The venv `scripts/setup` installs moto into.
fn moto_venv() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    cache.join("t4-rs/moto-venv")
}

/// A moto server this test started (`scripts/pylib/moto_server.py`,
/// single-threaded, on a free loopback port). Killed on drop; it also exits
/// by itself when this process dies (its stdin closes).
struct Moto {
    child: Child,
    port: u16,
}

const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);

impl Moto {
    fn start() -> Moto {
        Moto::start_with(&[], &[])
    }

    /// With extra `moto_server.py` arguments and environment variables.
    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Moto {
        let python = moto_venv().join("bin/python");
        assert!(
            python.exists(),
            "moto is not installed ({} is missing): run scripts/setup",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pylib/moto_server.py");
        let started = Instant::now();
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {}: {e}", python.display(), script.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = loop {
            let left = MOTO_START_TIMEOUT.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix("MOTO_READY port=") {
                        break port.parse::<u16>().expect("a port number");
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().expect("wait for moto");
                    panic!(
                        "moto did not get ready ({e:?} after {:?}, {status}); is it installed? run scripts/setup",
                        started.elapsed()
                    );
                }
            }
        };
        eprintln!("moto: ready on port {port} after {:?}", started.elapsed());
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An empty PUT of `path` (a bucket, or `bucket/key`), with a plain
    /// unsigned request, which moto accepts: creates buckets, and objects
    /// whose names the stores refuse to write.
    fn raw_put(&self, path: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT /{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "PUT /{path}: {answer}"
        );
    }

    fn create_bucket(&self, bucket: &str) {
        self.raw_put(bucket);
    }

    /// An S3 config for `bucket` under `prefix` on this server.
    fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: Some("us-east-1".into()),
            endpoint: Some(self.endpoint()),
            credentials: S3Credentials::Static {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
                session_token: None,
            },
        }
    }

    async fn store(&self, bucket: &str, prefix: &str) -> S3Store {
        S3Store::connect(&self.config(bucket, prefix))
            .await
            .expect("build the S3 client")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Conformance

/// The memory store, bare and behind the retry wrapper, passes the suite.
#[tokio::test]
async fn memory_store_conforms() {
    conforms(Arc::new(MemStore::new())).await;
    conforms(Arc::new(Retrying::new(
        MemStore::new(),
        RetryConfig::default(),
    )))
    .await;
}

/// The directory store, bare and behind the retry wrapper, passes the suite,
/// with each way of creating objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_store_conforms() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let probed = DirStore::open(tmp.path().join("bare")).expect("open");
    eprintln!("this file system creates with {:?}", probed.create_with());
    conforms(Arc::new(probed)).await;
    let dir = DirStore::open(tmp.path().join("retrying")).expect("open");
    conforms(Arc::new(Retrying::new(dir, RetryConfig::default()))).await;
    for way in CREATE_WAYS {
        conforms(Arc::new(dir_store(
            &tmp.path().join(format!("{way:?}")),
            way,
        )))
        .await;
    }
}

/// The S3 store against moto, bare and behind the retry wrapper (each under
/// a fresh prefix of one bucket), passes the suite; then the ETags and the
/// latency of small conditional puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms_against_moto() {
    let moto = Moto::start();
    moto.create_bucket("conformance");
    conforms(Arc::new(moto.store("conformance", "bare").await)).await;
    let retrying = Retrying::new(
        moto.store("conformance", "t4/retrying/").await,
        RetryConfig::default(),
    );
    conforms(Arc::new(retrying)).await;

    // Latency of small conditional puts (one request per connection:
    // moto's single-threaded server speaks HTTP/1.0).
    let store = moto.store("conformance", "latency").await;
    let n = 50;
    let start = Instant::now();
    for i in 0..n {
        put_ok(
            &store,
            &format!("wal/{i:020}"),
            "a small WAL batch",
            PutCondition::IfAbsent,
        )
        .await;
    }
    let per_put = start.elapsed() / n;
    eprintln!("moto: {n} small IfAbsent puts, {per_put:?} each");
    let etag = put_ok(&store, "lock", "v1", PutCondition::IfAbsent).await;
    let start = Instant::now();
    put_ok(&store, "lock", "v2", PutCondition::IfMatch(etag)).await;
    eprintln!("moto: one IfMatch put, {:?}", start.elapsed());
}

// ---------------------------------------------------------------------------
// S3 specifics

/// The root prefix is joined with exactly one slash whatever its spelling;
/// the raw bucket, listed through a prefix-less store, shows the real names.
#[tokio::test]
async fn s3_prefix_is_joined_with_one_slash() {
    let moto = Moto::start();
    moto.create_bucket("prefixes");
    for prefix in ["p1", "p2/", "/p3/", "deep/p4"] {
        let store = moto.store("prefixes", prefix).await;
        put_ok(&store, "a/b", prefix, PutCondition::IfAbsent).await;
        assert_eq!(
            listed_keys(&store, "").await,
            ["a/b"],
            "{prefix:?}: the prefix is stripped"
        );
        assert_eq!(listed_keys(&store, "a/").await, ["a/b"]);
        match store.execute(get_op("a/b")).await {
            Ok(ObjectReply::Got { body: got, .. }) => assert_eq!(got, body(prefix)),
            other => panic!("{prefix:?}: {other:?}"),
        }
    }
    let raw = moto.store("prefixes", "").await;
    assert_eq!(
        listed_keys(&raw, "").await,
        ["deep/p4/a/b", "p1/a/b", "p2/a/b", "p3/a/b"],
        "real key names, no double slash"
    );
    // Names under the prefix that are not t4 keys (a console's folder
    // marker, a double slash) are skipped, not returned as invalid keys.
    moto.raw_put("prefixes/p1/folder/");
    moto.raw_put("prefixes/p1//double");
    let p1 = moto.store("prefixes", "p1").await;
    assert_eq!(listed_keys(&p1, "").await, ["a/b"]);
    assert_eq!(listed_keys(&raw, "").await.len(), 4);
}

/// moto's HTTP answers map to the contract's outcomes: 404 NoSuchKey →
/// NotFound (also for If-Match on a missing key), 412 → PreconditionFailed,
/// NoSuchBucket → Failed; a server that went away → Retryable.
#[tokio::test]
async fn s3_errors_map_to_outcomes() {
    let mut moto = Moto::start();
    moto.create_bucket("errors");
    let store = moto.store("errors", "t4").await;
    assert_eq!(
        store.execute(get_op("missing")).await,
        Err(ObjectError::NotFound)
    );
    assert_eq!(
        store
            .execute(put_op(
                "missing",
                "x",
                PutCondition::IfMatch(ETag("\"abc\"".into()))
            ))
            .await,
        Err(ObjectError::NotFound),
        "If-Match on a missing key"
    );
    let etag = put_ok(&store, "k", "v1", PutCondition::IfAbsent).await;
    assert!(
        etag.0.starts_with('"') && etag.0.ends_with('"'),
        "S3 ETags are quoted: {etag:?}"
    );
    assert_eq!(
        store
            .execute(put_op("k", "v2", PutCondition::IfAbsent))
            .await,
        Err(ObjectError::PreconditionFailed),
        "If-None-Match: * on an existing key (412)"
    );
    assert_eq!(
        store
            .execute(put_op(
                "k",
                "v2",
                PutCondition::IfMatch(ETag("\"0123\"".into()))
            ))
            .await,
        Err(ObjectError::PreconditionFailed),
        "If-Match with another ETag (412)"
    );
    put_ok(&store, "k", "v2", PutCondition::IfMatch(etag)).await;
    assert_eq!(
        store
            .execute(ObjectOp::Delete {
                key: "never".into()
            })
            .await,
        Ok(ObjectReply::Deleted)
    );

    let no_bucket = moto.store("no-such-bucket", "").await;
    match no_bucket.execute(get_op("k")).await {
        Err(ObjectError::Failed(why)) => assert!(why.contains("NoSuchBucket"), "{why}"),
        other => panic!("a missing bucket is not a missing key: {other:?}"),
    }

    // The server goes away: no answer.
    let _ = moto.child.kill();
    let _ = moto.child.wait();
    match store.execute(get_op("k")).await {
        Err(ObjectError::Retryable(why)) => eprintln!("server gone: {why}"),
        other => panic!("a refused connection is retryable: {other:?}"),
    }
}

/// `open_store` probes the store and reports a missing bucket, an endpoint
/// nobody listens on, and unknown credentials clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_open_reports_unusable_stores() {
    let moto = Moto::start();
    moto.create_bucket("present");
    let ok = open_store(
        &StoreConfig::S3(moto.config("present", "t4")),
        quick_retries(),
    )
    .await;
    assert!(ok.is_ok(), "{:?}", ok.err());

    let err = open_store(
        &StoreConfig::S3(moto.config("absent", "t4")),
        quick_retries(),
    )
    .await
    .err()
    .expect("a missing bucket fails to open");
    let text = err.to_string();
    eprintln!("missing bucket: {text}");
    assert!(
        matches!(
            &err,
            OpenStoreError::Unreachable {
                error: ObjectError::Failed(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("s3://absent/t4/") && text.contains("NoSuchBucket"),
        "{text}"
    );

    let mut nobody = moto.config("present", "t4");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    nobody.endpoint = Some(format!("http://{}", closed.local_addr().expect("addr")));
    drop(closed);
    let err = open_store(&StoreConfig::S3(nobody), quick_retries())
        .await
        .err()
        .expect("nobody listening fails to open");
    eprintln!("nobody listening: {err}");
    assert!(
        matches!(&err, OpenStoreError::Unreachable { error: ObjectError::Retryable(why), .. } if why.contains("gave up after 3 attempts")),
        "{err:?}"
    );

    // A moto that checks credentials: keys it does not know are refused.
    let strict = Moto::start_with(&[], &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let err = open_store(
        &StoreConfig::S3(strict.config("present", "")),
        quick_retries(),
    )
    .await
    .err()
    .expect("unknown credentials fail to open");
    let text = err.to_string();
    eprintln!("bad credentials: {text}");
    assert!(
        matches!(
            &err,
            OpenStoreError::Unreachable {
                error: ObjectError::Failed(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("403"), "{text}");

    let err = open_store(
        &StoreConfig::S3(moto.config("present", "a//b")),
        quick_retries(),
    )
    .await
    .err()
    .expect("a bad prefix");
    assert!(matches!(err, OpenStoreError::Config(_)), "{err:?}");
}

/// HTTPS works (rustls on ring, the build without aws-lc) and verifies the
/// server's certificate: a self-signed one is refused.
#[tokio::test]
async fn s3_tls_client_verifies_certificates() {
    let moto = Moto::start_with(&["--tls"], &[]);
    let mut config = moto.config("any", "t4");
    config.endpoint = Some(format!("https://127.0.0.1:{}", moto.port));
    let store = S3Store::connect(&config)
        .await
        .expect("build the S3 client");
    let result = store.execute(get_op("k")).await;
    eprintln!("self-signed certificate: {result:?}");
    match result {
        Err(ObjectError::Failed(why)) => {
            assert!(why.contains("certificate"), "{why}");
        }
        other => panic!("a TLS handshake with an untrusted certificate fails: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Directory store specifics

/// Two directory stores on one folder (as two processes would have) race
/// conditional puts: exactly one `IfAbsent` creator and at most one
/// `IfMatch` replacer win each round, and the stored body is the winner's;
/// with each way of creating objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_directory_stores_race_on_one_folder() {
    for way in CREATE_WAYS {
        let started = Instant::now();
        race_two_stores_on_one_folder(way).await;
        eprintln!("{way:?}: {:?}", started.elapsed());
    }
}

async fn race_two_stores_on_one_folder(way: CreateWith) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stores: Vec<Arc<dyn ObjectStore>> = (0..2)
        .map(|_| Arc::new(dir_store(tmp.path(), way)) as Arc<dyn ObjectStore>)
        .collect();
    const ROUNDS: usize = 40;
    const RACERS_PER_STORE: usize = 4;
    for round in 0..ROUNDS {
        let key = format!("race/{round}/lock");
        let spawn_racers = |condition: PutCondition| {
            let mut tasks = Vec::new();
            for (s, store) in stores.iter().enumerate() {
                for r in 0..RACERS_PER_STORE {
                    let store = Arc::clone(store);
                    let op = put_op(&key, &format!("store {s} racer {r}"), condition.clone());
                    tasks.push(tokio::spawn(async move {
                        (format!("store {s} racer {r}"), store.execute(op).await)
                    }));
                }
            }
            tasks
        };
        let mut winners = Vec::new();
        for task in spawn_racers(PutCondition::IfAbsent) {
            match task.await.expect("task") {
                (who, Ok(ObjectReply::Put { etag })) => winners.push((who, etag)),
                (_, Err(ObjectError::PreconditionFailed)) => {}
                (who, other) => panic!("round {round}: {who}: {other:?}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: one IfAbsent winner: {winners:?}"
        );
        let (winner, etag) = winners.pop().expect("one winner");
        for store in &stores {
            match store.execute(get_op(&key)).await {
                Ok(ObjectReply::Got {
                    body: got,
                    etag: got_etag,
                }) => {
                    assert_eq!(got, body(&winner));
                    assert_eq!(got_etag, etag);
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        let mut replacers = Vec::new();
        for task in spawn_racers(PutCondition::IfMatch(etag)) {
            match task.await.expect("task") {
                (who, Ok(ObjectReply::Put { .. })) => replacers.push(who),
                (_, Err(ObjectError::PreconditionFailed)) => {}
                (who, other) => panic!("round {round}: {who}: {other:?}"),
            }
        }
        assert_eq!(
            replacers.len(),
            1,
            "round {round}: the object existed, so exactly one IfMatch wins: {replacers:?}"
        );
        match stores[1].execute(get_op(&key)).await {
            Ok(ObjectReply::Got { body: got, .. }) => assert_eq!(got, body(&replacers[0])),
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(listed(&*stores[0], "race/").await.len(), ROUNDS);
}

/// Keys each process races for in the cross-process test.
const PROCESS_RACE_KEYS: usize = 600;

/// Two processes (this test binary, run twice as `dir_race_helper`) race
/// `IfAbsent` puts on the same keys of one folder: every key is won by
/// exactly one of them, and holds the winner's body; with each way of
/// creating objects.
#[test]
fn directory_store_race_between_processes() {
    for way in CREATE_WAYS {
        let started = Instant::now();
        race_between_processes(way);
        eprintln!("{way:?}: {:?}", started.elapsed());
    }
}

fn race_between_processes(way: CreateWith) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
        + 500;
    let children: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|name| {
            let child = Command::new(std::env::current_exe().expect("current exe"))
                .args([
                    "--exact",
                    "dir_race_helper",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("T4_DIR_RACE_DIR", tmp.path())
                .env("T4_DIR_RACE_NAME", name)
                .env("T4_DIR_RACE_START_MS", start_ms.to_string())
                .env("T4_DIR_RACE_CREATE_WITH", format!("{way:?}"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn the helper");
            (*name, child)
        })
        .collect();
    let mut winner_of: std::collections::BTreeMap<String, &str> = std::collections::BTreeMap::new();
    for (name, child) in children {
        let out = child.wait_with_output().expect("helper output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "helper {name} failed:\n{stdout}");
        // libtest prints `test dir_race_helper ... ` before the test's own
        // output, on the same line.
        let wins = stdout
            .lines()
            .filter_map(|l| l.find("WON ").map(|at| &l[at + 4..]));
        for key in wins {
            if let Some(other) = winner_of.insert(key.to_owned(), name) {
                panic!("{key} won by both {other} and {name}");
            }
        }
    }
    assert_eq!(
        winner_of.len(),
        PROCESS_RACE_KEYS,
        "every key has one winner"
    );
    let wins_p1 = winner_of.values().filter(|w| **w == "p1").count();
    eprintln!(
        "cross-process race: p1 won {wins_p1}, p2 won {}",
        PROCESS_RACE_KEYS - wins_p1
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = dir_store(tmp.path(), way);
    for (key, winner) in &winner_of {
        match rt.block_on(store.execute(get_op(key))) {
            Ok(ObjectReply::Got { body: got, .. }) => assert_eq!(got, body(winner), "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
}

/// The other side of `directory_store_race_between_processes` (does
/// nothing unless that test started this process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_race_helper() {
    let Some(dir) = std::env::var_os("T4_DIR_RACE_DIR") else {
        return;
    };
    let name = std::env::var("T4_DIR_RACE_NAME").expect("T4_DIR_RACE_NAME");
    let start_ms: u128 = std::env::var("T4_DIR_RACE_START_MS")
        .expect("T4_DIR_RACE_START_MS")
        .parse()
        .expect("a number");
    let way = std::env::var("T4_DIR_RACE_CREATE_WITH").expect("T4_DIR_RACE_CREATE_WITH");
    let way = CREATE_WAYS
        .into_iter()
        .find(|w| format!("{w:?}") == way)
        .expect("a way of creating");
    let store = Arc::new(dir_store(Path::new(&dir), way));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(now_ms) as u64)).await;
    let tasks: Vec<_> = (0..PROCESS_RACE_KEYS)
        .map(|i| {
            let store = Arc::clone(&store);
            let op = put_op(&format!("race/{i:04}"), &name, PutCondition::IfAbsent);
            tokio::spawn(async move { (i, store.execute(op).await) })
        })
        .collect();
    for task in tasks {
        match task.await.expect("task") {
            (i, Ok(ObjectReply::Put { .. })) => println!("WON race/{i:04}"),
            (_, Err(ObjectError::PreconditionFailed)) => {}
            (i, other) => panic!("race/{i:04}: {other:?}"),
        }
    }
}

/// Rounds of the two-store races below, per way of creating objects.
const DIR_RACE_ROUNDS: usize = 60;

/// A create racing a delete of the same key (two stores on one folder, the
/// key alone in its folder, so the delete removes the folder the create
/// needs): either the delete came first and the create's object stays, or
/// the create failed (the old object was there) and the key ends missing.
/// A concurrent reader sees a whole object or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_store_create_races_delete() {
    for way in CREATE_WAYS {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = Arc::new(dir_store(tmp.path(), way));
        let b = Arc::new(dir_store(tmp.path(), way));
        let (mut created, mut refused) = (0, 0);
        for round in 0..DIR_RACE_ROUNDS {
            let key = format!("f{}/k", round % 3);
            put_ok(&*a, &key, "old", PutCondition::None).await;
            let delete = tokio::spawn({
                let (a, key) = (Arc::clone(&a), key.clone());
                async move { a.execute(ObjectOp::Delete { key }).await }
            });
            let create = tokio::spawn({
                let (b, key) = (Arc::clone(&b), key.clone());
                async move { b.execute(put_op(&key, "new", PutCondition::IfAbsent)).await }
            });
            let read = tokio::spawn({
                let (b, key) = (Arc::clone(&b), key.clone());
                async move { b.execute(get_op(&key)).await }
            });
            assert_eq!(
                delete.await.expect("task"),
                Ok(ObjectReply::Deleted),
                "{way:?} round {round}"
            );
            let created_or_not = create.await.expect("task");
            let after = a.execute(get_op(&key)).await;
            match created_or_not {
                Ok(ObjectReply::Put { etag }) => {
                    created += 1;
                    assert_eq!(
                        after,
                        Ok(ObjectReply::Got {
                            body: body("new"),
                            etag
                        }),
                        "{way:?} round {round}: the create came after the delete"
                    );
                }
                Err(ObjectError::PreconditionFailed) => {
                    refused += 1;
                    assert_eq!(
                        after,
                        Err(ObjectError::NotFound),
                        "{way:?} round {round}: the delete came after the refused create"
                    );
                }
                other => panic!("{way:?} round {round}: create: {other:?}"),
            }
            match read.await.expect("task") {
                Ok(ObjectReply::Got { body: got, .. }) => {
                    assert!(got == body("old") || got == body("new"), "{got:?}");
                }
                Err(ObjectError::NotFound) => {}
                other => panic!("{way:?} round {round}: get: {other:?}"),
            }
        }
        eprintln!("{way:?}: the create won {created} times, lost {refused} times");
    }
}

/// An `IfMatch` racing a delete and then a create of the same key (on
/// another store on the folder) either lands before the delete or fails:
/// it never overwrites the object created after the delete, which it never
/// saw. And on a missing key an `IfMatch` racing a create never wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_store_if_match_races_delete_and_create() {
    for way in CREATE_WAYS {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = Arc::new(dir_store(tmp.path(), way));
        let b = Arc::new(dir_store(tmp.path(), way));
        let mut swapped = 0;
        for round in 0..DIR_RACE_ROUNDS {
            let key = format!("f{}/k", round % 3);
            let etag = put_ok(&*a, &key, "old", PutCondition::None).await;
            let swap = tokio::spawn({
                let (a, key, etag) = (Arc::clone(&a), key.clone(), etag.clone());
                async move {
                    a.execute(put_op(&key, "swapped", PutCondition::IfMatch(etag)))
                        .await
                }
            });
            let recreate = tokio::spawn({
                let (b, key) = (Arc::clone(&b), key.clone());
                async move {
                    let deleted = b.execute(ObjectOp::Delete { key: key.clone() }).await;
                    assert_eq!(deleted, Ok(ObjectReply::Deleted));
                    b.execute(put_op(&key, "new", PutCondition::IfAbsent)).await
                }
            });
            match swap.await.expect("task") {
                Ok(ObjectReply::Put { .. }) => swapped += 1,
                Err(ObjectError::PreconditionFailed | ObjectError::NotFound) => {}
                other => panic!("{way:?} round {round}: IfMatch: {other:?}"),
            }
            let created = match recreate.await.expect("task") {
                Ok(ObjectReply::Put { etag }) => etag,
                other => panic!("{way:?} round {round}: the create after the delete: {other:?}"),
            };
            assert_eq!(
                a.execute(get_op(&key)).await,
                Ok(ObjectReply::Got {
                    body: body("new"),
                    etag: created
                }),
                "{way:?} round {round}: the object created last stays"
            );

            // The key missing: an IfMatch on the old ETag against a create.
            b.execute(ObjectOp::Delete { key: key.clone() })
                .await
                .expect("delete");
            let swap = tokio::spawn({
                let (a, key) = (Arc::clone(&a), key.clone());
                async move {
                    a.execute(put_op(&key, "swapped", PutCondition::IfMatch(etag)))
                        .await
                }
            });
            let create = b.execute(put_op(&key, "new", PutCondition::IfAbsent)).await;
            assert!(
                matches!(create, Ok(ObjectReply::Put { .. })),
                "{way:?} round {round}: {create:?}"
            );
            match swap.await.expect("task") {
                Err(ObjectError::PreconditionFailed | ObjectError::NotFound) => {}
                other => panic!("{way:?} round {round}: IfMatch on a missing key: {other:?}"),
            }
        }
        eprintln!("{way:?}: the IfMatch won {swapped} of {DIR_RACE_ROUNDS} times");
    }
}

/// Object files that cannot be read (truncated header, bad magic, body
/// length not matching the header, no permission) do not fail listings:
/// they are listed with their size on disk and an ETag no `IfMatch`
/// matches; a get names the file and the damage; a create fails as on any
/// existing key; a plain put repairs one and a delete removes one.
#[tokio::test]
async fn directory_store_lists_unreadable_objects() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("bucket");
    let store = DirStore::open(&root).expect("open");
    for i in 1..=6 {
        put_ok(
            &store,
            &format!("wal/{i}"),
            "a WAL batch",
            PutCondition::IfAbsent,
        )
        .await;
    }
    let file = |i: u32| root.join(format!("wal.d/{i}.o"));
    std::fs::write(file(2), b"short").expect("truncate");
    std::fs::write(file(3), [7u8; 64]).expect("bad magic");
    let mut longer = std::fs::read(file(4)).expect("read");
    longer.extend_from_slice(b"appended");
    std::fs::write(file(4), &longer).expect("append");
    std::fs::set_permissions(file(5), std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // Root reads any file: then the permission case is an ordinary object.
    let unreadable_5 = std::fs::File::open(file(5)).is_err();

    let first = listed(&store, "wal/").await;
    let keys: Vec<&str> = first.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["wal/1", "wal/2", "wal/3", "wal/4", "wal/5", "wal/6"]);
    let unreadable = ETag(UNREADABLE_ETAG.to_owned());
    for (info, (bad, size)) in first.iter().zip([
        (false, 11),
        (true, 5),
        (true, 64),
        (true, 32 + 11 + 8),
        (unreadable_5, if unreadable_5 { 32 + 11 } else { 11 }),
        (false, 11),
    ]) {
        assert_eq!(info.etag == unreadable, bad, "{info:?}");
        assert_eq!(info.size_bytes, size, "{info:?}");
    }
    // Paging one key at a time passes over them too.
    let mut paged = Vec::new();
    loop {
        let op = ObjectOp::List {
            prefix: "wal/".into(),
            start_after: paged.last().cloned(),
            max_keys: 1,
        };
        match store.execute(op).await {
            Ok(ObjectReply::Listed { objects, truncated }) => {
                paged.extend(objects.into_iter().map(|o| o.key));
                if !truncated {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(paged, keys);

    for (key, why) in [
        ("wal/2", "shorter than the header"),
        ("wal/3", "bad magic"),
        ("wal/4", "header says 11 body bytes"),
    ] {
        match store.execute(get_op(key)).await {
            Err(ObjectError::Failed(message)) => {
                assert!(message.contains("corrupt object file"), "{message}");
                assert!(message.contains(why), "{message}");
                assert!(
                    message.contains(&format!("wal.d/{}.o", &key[4..])),
                    "{message}"
                );
            }
            other => panic!("get {key}: {other:?}"),
        }
        assert_eq!(
            store
                .execute(put_op(key, "x", PutCondition::IfAbsent))
                .await,
            Err(ObjectError::PreconditionFailed),
            "{key} exists"
        );
        match store
            .execute(put_op(key, "x", PutCondition::IfMatch(unreadable.clone())))
            .await
        {
            Err(ObjectError::Failed(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("IfMatch {key}: {other:?}"),
        }
    }
    if unreadable_5 {
        match store.execute(get_op("wal/5")).await {
            Err(ObjectError::Failed(message)) => {
                assert!(message.contains("ermission denied"), "{message}");
            }
            other => panic!("get wal/5: {other:?}"),
        }
    }
    put_ok(&store, "wal/2", "repaired", PutCondition::None).await;
    store
        .execute(ObjectOp::Delete {
            key: "wal/3".into(),
        })
        .await
        .expect("delete");
    let second = listed(&store, "wal/").await;
    assert_eq!(
        second.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        ["wal/1", "wal/2", "wal/4", "wal/5", "wal/6"]
    );
    assert_ne!(second[1].etag, unreadable, "repaired");
}

/// Takes the `flock` of `path` (creating the file) through a descriptor of
/// its own, as another process would; released when the file is dropped.
fn hold_flock(path: &Path) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open a key's lock file");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .expect("hold the key's lock");
    file
}

/// Another process holding a key's lock (the test holds the `flock`
/// itself): operations that need that lock (`IfMatch`, replacing, delete)
/// fail as retryable after the bounded wait instead of hanging, also behind
/// the retry wrapper; creates of any key, gets and lists go on, except that
/// creates that take the key's lock themselves (the fallback) wait too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_store_waits_for_a_held_key_lock_only_so_long() {
    const WAIT: Duration = Duration::from_millis(500);
    for way in CREATE_WAYS {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = DirStore::open_with(
            tmp.path(),
            DirOptions {
                lock_wait_max: WAIT,
                create_with: Some(way),
            },
        )
        .expect("open");
        let etag = put_ok(&store, "leader-lock", "v1", PutCondition::IfAbsent).await;

        let lock_file = hold_flock(&store.key_lock_path("leader-lock"));
        let bounded = |what: &str, started: Instant, result: ObjectResult| {
            let took = started.elapsed();
            match result {
                Err(ObjectError::Retryable(why)) => {
                    assert!(why.contains("held by another writer"), "{what}: {why}")
                }
                other => panic!("{way:?} {what}: {other:?}"),
            }
            assert!(
                took >= WAIT && took < WAIT * 10,
                "{way:?} {what}: failed after {took:?}"
            );
        };
        for (what, op) in [
            (
                "IfMatch",
                put_op("leader-lock", "v2", PutCondition::IfMatch(etag.clone())),
            ),
            ("replace", put_op("leader-lock", "v2", PutCondition::None)),
            (
                "delete",
                ObjectOp::Delete {
                    key: "leader-lock".into(),
                },
            ),
        ] {
            let started = Instant::now();
            bounded(what, started, store.execute(op).await);
        }
        let retrying = Retrying::new(store.clone(), quick_retries());
        let started = Instant::now();
        let result = retrying
            .execute(put_op(
                "leader-lock",
                "v2",
                PutCondition::IfMatch(etag.clone()),
            ))
            .await;
        assert!(
            matches!(&result, Err(ObjectError::Retryable(why)) if why.contains("gave up after 3 attempts")),
            "{result:?}"
        );
        assert!(started.elapsed() < WAIT * 3 + Duration::from_secs(2));

        // Creates go on: each takes an fsync or two, not a lock wait.
        for i in 0..20 {
            let started = Instant::now();
            put_ok(&store, &format!("wal/{i}"), "batch", PutCondition::IfAbsent).await;
            assert!(
                started.elapsed() < WAIT,
                "{way:?}: a create took {:?}",
                started.elapsed()
            );
        }
        put_ok(&store, "manifest/latest", "p", PutCondition::None).await;
        assert_eq!(listed_keys(&store, "wal/").await.len(), 20);
        match store.execute(get_op("leader-lock")).await {
            Ok(ObjectReply::Got { body: got, .. }) => assert_eq!(got, body("v1")),
            other => panic!("{other:?}"),
        }
        // A create of the held key fails at once: the object exists.
        let started = Instant::now();
        assert_eq!(
            store
                .execute(put_op("leader-lock", "v2", PutCondition::IfAbsent))
                .await,
            Err(ObjectError::PreconditionFailed)
        );
        assert!(started.elapsed() < WAIT, "{way:?}");
        // A missing key whose lock is held: creates that need no lock go
        // on; the fallback that takes it waits like the rest.
        let fresh_lock = hold_flock(&store.key_lock_path("fresh"));
        let started = Instant::now();
        let create = store
            .execute(put_op("fresh", "x", PutCondition::IfAbsent))
            .await;
        if way == CreateWith::KeyLock {
            bounded("a create taking the lock", started, create);
        } else {
            assert!(
                matches!(create, Ok(ObjectReply::Put { .. })),
                "{way:?}: {create:?}"
            );
            assert!(started.elapsed() < WAIT, "{way:?}");
        }
        drop(fresh_lock);

        // Released: the waits are over.
        drop(lock_file);
        put_ok(&store, "leader-lock", "v2", PutCondition::IfMatch(etag)).await;
        store
            .execute(ObjectOp::Delete {
                key: "leader-lock".into(),
            })
            .await
            .expect("delete");
        assert!(
            !store.key_lock_path("leader-lock").exists(),
            "{way:?}: the lock file goes with its last holder"
        );
    }
}

/// The directory store refuses keys that would leave its folder, writes
/// nothing for them, and ignores files it did not write.
#[tokio::test]
async fn directory_store_stays_in_its_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("bucket");
    let store = DirStore::open(&root).expect("open");
    for key in [
        "../escape",
        "a/../../escape",
        "/etc/passwd",
        "..",
        ".",
        "a/./b",
        "a\\..\\b",
        "a//b",
        "nul\0byte",
    ] {
        for op in [
            put_op(key, "x", PutCondition::None),
            get_op(key),
            ObjectOp::Delete { key: key.into() },
        ] {
            let kind = op.kind();
            let result = store.execute(op).await;
            assert!(
                matches!(result, Err(ObjectError::InvalidKey(_))),
                "{kind} {key:?}: {result:?}"
            );
        }
    }
    let long = format!("a/{}", "x".repeat(251));
    assert!(matches!(
        store.execute(put_op(&long, "x", PutCondition::None)).await,
        Err(ObjectError::InvalidKey(why)) if why.contains("at most 250")
    ));
    let outside: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read tmp")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        outside,
        ["bucket"],
        "nothing was written next to the store's folder"
    );

    // Files the store did not write (editor backups, a crashed put's temp
    // file, a stray folder) are not objects.
    put_ok(&store, "wal/1", "one", PutCondition::IfAbsent).await;
    std::fs::write(root.join("wal.d/1.o~"), "backup").expect("write");
    std::fs::write(root.join("wal.d/2"), "no suffix").expect("write");
    std::fs::write(root.join(".t4-tmp/0123.tmp"), "half a put").expect("write");
    std::fs::create_dir(root.join("stray")).expect("mkdir");
    assert_eq!(listed_keys(&store, "").await, ["wal/1"]);

    // Deleting the last key under a folder removes the emptied folders.
    put_ok(&store, "sst/ab/cd/1.sst", "x", PutCondition::IfAbsent).await;
    assert!(root.join("sst.d/ab.d/cd.d/1.sst.o").is_file());
    for folder in ["sst.d", "sst.d/ab.d", "sst.d/ab.d/cd.d"] {
        assert!(
            root.join(folder).join(".t4-durable").is_file(),
            "{folder}: its entry was fsynced, and marked so"
        );
    }
    store
        .execute(ObjectOp::Delete {
            key: "sst/ab/cd/1.sst".into(),
        })
        .await
        .expect("delete");
    assert!(!root.join("sst.d").exists(), "emptied folders are removed");

    // A damaged object file is reported, not returned.
    let etag = put_ok(&store, "damaged", "intact body", PutCondition::IfAbsent).await;
    let path = root.join("damaged.o");
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).expect("write");
    match store.execute(get_op("damaged")).await {
        Err(ObjectError::Failed(why)) => assert!(why.contains("checksum"), "{why}"),
        other => panic!("a damaged body is an error: {other:?}"),
    }
    // The header still names the write: listing (which reads only headers)
    // shows the ETag the put returned.
    let info = listed(&store, "damaged").await;
    assert_eq!(info[0].etag, etag);
}

/// `open_store` opens the memory and directory stores, and reports a folder
/// it cannot create.
#[tokio::test]
async fn open_store_local() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_store(&StoreConfig::Memory, RetryConfig::default())
        .await
        .expect("memory");
    assert_eq!(store.describe(), "memory");
    let path = tmp.path().join("bucket");
    let store = open_store(
        &StoreConfig::Directory(path.clone()),
        RetryConfig::default(),
    )
    .await
    .expect("directory");
    assert_eq!(store.describe(), format!("dir:{}", path.display()));
    put_ok(&*store, "k", "v", PutCondition::IfAbsent).await;

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let err = open_store(
        &StoreConfig::Directory(file.join("bucket")),
        RetryConfig::default(),
    )
    .await
    .err()
    .expect("a folder below a file");
    assert!(matches!(err, OpenStoreError::Directory { .. }), "{err:?}");
    eprintln!("{err}");
}

// ---------------------------------------------------------------------------
// The retry wrapper, under paused time

/// What the flaky store does on each call, by call number.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Answer `Retryable` for the first N calls, then pass through.
    FailFirst(u32),
    /// Never answer the first N calls, then pass through.
    HangFirst(u32),
    /// Do the first call but answer it `Retryable` (the write happened, the
    /// response was lost), then pass through.
    LoseFirstResponse,
}

/// A memory store that misbehaves on purpose.
struct Flaky {
    inner: MemStore,
    behaviour: Behaviour,
    calls: AtomicU32,
}

impl Flaky {
    fn new(behaviour: Behaviour) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemStore::new(),
            behaviour,
            calls: AtomicU32::new(0),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ObjectStore for Flaky {
    fn execute(&self, op: ObjectOp) -> BoxFuture<'_, ObjectResult> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            match self.behaviour {
                Behaviour::FailFirst(n) if call <= n => {
                    Err(ObjectError::Retryable(format!("flaky call {call}")))
                }
                Behaviour::HangFirst(n) if call <= n => std::future::pending().await,
                Behaviour::LoseFirstResponse if call == 1 => {
                    let _ = self.inner.execute(op).await;
                    Err(ObjectError::Retryable("response lost".into()))
                }
                _ => self.inner.execute(op).await,
            }
        })
    }

    fn describe(&self) -> String {
        "flaky".into()
    }
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        attempts_max: 5,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        attempt_timeout: Duration::from_secs(2),
        attempt_timeout_per_mib: Duration::from_secs(1),
    }
}

/// Transient failures are retried with growing, bounded backoff until the
/// store answers.
#[tokio::test(start_paused = true)]
async fn retry_retries_transient_failures() {
    let flaky = Flaky::new(Behaviour::FailFirst(3));
    let store = Retrying::new(Arc::clone(&flaky), retry_config());
    let start = tokio::time::Instant::now();
    let result = store
        .execute(put_op("k", "v", PutCondition::IfAbsent))
        .await;
    assert!(matches!(result, Ok(ObjectReply::Put { .. })), "{result:?}");
    assert_eq!(flaky.calls(), 4, "three failures, then success");
    // Backoffs of 100, 200 and 400 ms with equal jitter: 350..=700 ms.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited <= Duration::from_millis(700),
        "waited {waited:?}"
    );
}

/// After `attempts_max` transient failures the last one is returned, saying
/// how many attempts were made.
#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_attempts_max() {
    let flaky = Flaky::new(Behaviour::FailFirst(u32::MAX));
    let store = Retrying::new(Arc::clone(&flaky), retry_config());
    match store.execute(get_op("k")).await {
        Err(ObjectError::Retryable(why)) => {
            assert!(why.contains("flaky call 5"), "{why}");
            assert!(why.contains("gave up after 5 attempts"), "{why}");
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
    assert_eq!(flaky.calls(), 5);
}

/// A hanging attempt times out and is retried; a put's deadline grows with
/// its body.
#[tokio::test(start_paused = true)]
async fn retry_times_out_hanging_attempts() {
    let flaky = Flaky::new(Behaviour::HangFirst(2));
    let store = Retrying::new(Arc::clone(&flaky), retry_config());
    let start = tokio::time::Instant::now();
    assert_eq!(
        store.execute(get_op("k")).await,
        Err(ObjectError::NotFound),
        "the third attempt answers"
    );
    assert_eq!(flaky.calls(), 3);
    // Two 2 s timeouts, then backoffs of 50..=100 and 100..=200 ms.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(4150) && waited <= Duration::from_millis(4300),
        "waited {waited:?}"
    );

    let hangs = Flaky::new(Behaviour::HangFirst(u32::MAX));
    let store = Retrying::new(
        Arc::clone(&hangs),
        RetryConfig {
            attempts_max: 1,
            ..retry_config()
        },
    );
    let start = tokio::time::Instant::now();
    let result = store
        .execute(ObjectOp::Put {
            key: "big".into(),
            body: Bytes::from(vec![7u8; (2 << 20) + 1]),
            condition: PutCondition::None,
        })
        .await;
    assert_eq!(
        result,
        Err(ObjectError::Retryable(
            "timed out after 5s (gave up after 1 attempts)".into()
        )),
        "2 s + 3 started MiB × 1 s"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

/// Answers other than `Retryable` are final: not retried, not changed.
#[tokio::test(start_paused = true)]
async fn retry_passes_final_answers_through() {
    let flaky = Flaky::new(Behaviour::FailFirst(0));
    let store = Retrying::new(Arc::clone(&flaky), retry_config());
    assert_eq!(store.execute(get_op("k")).await, Err(ObjectError::NotFound));
    assert!(matches!(
        store.execute(get_op("../k")).await,
        Err(ObjectError::InvalidKey(_))
    ));
    assert_eq!(
        store
            .execute(put_op(
                "k",
                "v",
                PutCondition::IfMatch(ETag("\"x\"".into()))
            ))
            .await,
        Err(ObjectError::NotFound)
    );
    assert_eq!(flaky.calls(), 3, "one call each");
}

/// A conditional put whose first response was lost is retried, and the
/// retry's `PreconditionFailed` is passed up, not hidden: the caller must
/// read the object back to learn that its own write won.
#[tokio::test(start_paused = true)]
async fn retry_passes_precondition_failed_after_a_lost_response() {
    let flaky = Flaky::new(Behaviour::LoseFirstResponse);
    let store = Retrying::new(Arc::clone(&flaky), retry_config());
    assert_eq!(
        store
            .execute(put_op("lock", "mine", PutCondition::IfAbsent))
            .await,
        Err(ObjectError::PreconditionFailed)
    );
    assert_eq!(flaky.calls(), 2);
    match store.execute(get_op("lock")).await {
        Ok(ObjectReply::Got { body: got, .. }) => assert_eq!(got, body("mine")),
        other => panic!("the first attempt's write is there: {other:?}"),
    }
}

/// The backoff doubles up to its bound, with equal jitter.
#[test]
fn retry_backoff_is_bounded_and_jittered() {
    let c = retry_config();
    for _ in 0..100 {
        let b1 = c.backoff(1);
        assert!(
            b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
            "{b1:?}"
        );
        let b2 = c.backoff(2);
        assert!(
            b2 >= Duration::from_millis(100) && b2 <= Duration::from_millis(200),
            "{b2:?}"
        );
        for attempt in [3, 4, 10, 40, u32::MAX] {
            let b = c.backoff(attempt);
            assert!(
                b >= Duration::from_millis(200) && b <= Duration::from_millis(400),
                "attempt {attempt}: {b:?}"
            );
        }
    }
}
