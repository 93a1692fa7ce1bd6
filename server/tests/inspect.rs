//! `t4 inspect` on the real binary: a node writes (puts, overwrites,
//! deletes, a compaction, a lease, a binary key), stops, and every
//! subcommand reads the data directory offline, in text and JSON — without
//! changing a byte of it. Bad input (missing, foreign, corrupt directories,
//! bad or compacted revisions) is refused with a clear message and exit
//! code 1, never a panic. Also `RocksEngine::open_read_only` directly.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use common::Server;
use etcd_client::{LeaseGrantOptions, PutOptions, Txn, TxnOp};
use serde_json::{json, Value};
use t4_core::engine::{KvEngine, KvRead, WriteBatch};
use t4_io_real::engine::RocksOptions;
use t4_io_real::RocksEngine;

/// The lease the scenario attaches `l` to (4660).
const LEASE_ID: i64 = 0x1234;
/// The binary key of the scenario and its value: not UTF-8.
const BIN_KEY: &[u8] = b"bin\x00\xff";
const BIN_VALUE: &[u8] = b"\xff\x00\x01";

/// Runs `t4 inspect <args>` (without `T4_DATA_DIR` from the environment).
fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_t4"))
        .arg("inspect")
        .args(args)
        .env_remove("T4_DATA_DIR")
        .output()
        .expect("run t4 inspect")
}

fn with_dir<'a>(data: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--data-dir", data.to_str().expect("utf-8 temp path")]);
    all
}

/// stdout of a successful `t4 inspect <args> --data-dir <data>`.
fn ok(data: &Path, args: &[&str]) -> String {
    let out = inspect(&with_dir(data, args));
    assert!(
        out.status.success(),
        "t4 inspect {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The JSON document of a successful `t4 inspect <args> --json`.
fn json_of(data: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let text = ok(data, &all);
    assert_eq!(text.lines().count(), 1, "one document: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

/// stderr of `t4 inspect <args>` (no --data-dir added), which must fail
/// with exit code 1 (an error, not a panic's 101) and print nothing on stdout.
fn fails(args: &[&str]) -> String {
    let out = inspect(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "t4 inspect {args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}

fn fails_in(data: &Path, args: &[&str]) -> String {
    fails(&with_dir(data, args))
}

/// Every file and directory under `root`: kind, length, mtime and contents.
type Listing = BTreeMap<PathBuf, (bool, u64, SystemTime, Vec<u8>)>;

fn listing(root: &Path) -> Listing {
    fn walk(root: &Path, dir: &Path, out: &mut Listing) {
        for dirent in fs::read_dir(dir).expect("read_dir") {
            let path = dirent.expect("dirent").path();
            let md = fs::symlink_metadata(&path).expect("metadata");
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let mtime = md.modified().expect("mtime");
            if md.is_dir() {
                out.insert(rel, (true, 0, mtime, Vec::new()));
                walk(root, &path, out);
            } else {
                let bytes = fs::read(&path).expect("read file");
                out.insert(rel, (false, md.len(), mtime, bytes));
            }
        }
    }
    let mut out = Listing::new();
    let md = fs::metadata(root).expect("root metadata");
    out.insert(
        PathBuf::new(),
        (true, 0, md.modified().expect("mtime"), Vec::new()),
    );
    walk(root, root, &mut out);
    out
}

fn assert_unchanged(before: &Listing, root: &Path) {
    let after = listing(root);
    let names = |l: &Listing| l.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(&after), "files appeared or vanished");
    for (path, was) in before {
        assert!(after[path] == *was, "{} changed", path.display());
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy");
    for dirent in fs::read_dir(from).expect("read_dir") {
        let path = dirent.expect("dirent").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).expect("copy file");
        }
    }
}

/// Writes the scenario through a node and stops it cleanly. Revisions:
///
/// ```text
/// 2 put a=1   3 put b=2   4 put a=11   5 put c=3   6 delete b   compact 4
/// 7 put a=111   (grant lease 0x1234)   8 put l=leased (lease)
/// 9 put bin\0\xff = \xff\0\x01   10 put d=4   11 delete d   12 put e="two\nlines"
/// 13 txn { put t1=x; put t2=y }  (sub-revisions 0 and 1)
/// ```
async fn populate(data: &Path) {
    let mut server = Server::start(data, &[]);
    let mut c = server.client().await;
    let expect_rev = |rev: i64, got: i64| assert_eq!(got, rev, "scenario revision");
    let put_rev = |r: etcd_client::PutResponse| r.header().expect("header").revision();
    let del_rev = |r: etcd_client::DeleteResponse| r.header().expect("header").revision();
    expect_rev(2, put_rev(c.put("a", "1", None).await.expect("put")));
    expect_rev(3, put_rev(c.put("b", "2", None).await.expect("put")));
    expect_rev(4, put_rev(c.put("a", "11", None).await.expect("put")));
    expect_rev(5, put_rev(c.put("c", "3", None).await.expect("put")));
    expect_rev(6, del_rev(c.delete("b", None).await.expect("delete")));
    c.compact(4, None).await.expect("compact");
    expect_rev(7, put_rev(c.put("a", "111", None).await.expect("put")));
    let grant = c
        .lease_grant(600, Some(LeaseGrantOptions::new().with_id(LEASE_ID)))
        .await
        .expect("grant");
    assert_eq!(grant.id(), LEASE_ID);
    let leased = PutOptions::new().with_lease(LEASE_ID);
    expect_rev(
        8,
        put_rev(c.put("l", "leased", Some(leased)).await.expect("put")),
    );
    expect_rev(
        9,
        put_rev(c.put(BIN_KEY, BIN_VALUE, None).await.expect("put")),
    );
    expect_rev(10, put_rev(c.put("d", "4", None).await.expect("put")));
    expect_rev(11, del_rev(c.delete("d", None).await.expect("delete")));
    expect_rev(
        12,
        put_rev(c.put("e", "two\nlines", None).await.expect("put")),
    );
    let txn = Txn::new().and_then([TxnOp::put("t1", "x", None), TxnOp::put("t2", "y", None)]);
    let txn = c.txn(txn).await.expect("txn");
    expect_rev(13, txn.header().expect("header").revision());
    drop(c);
    assert!(server.terminate().success(), "log:\n{}", server.log());
}

/// Every subcommand, text and JSON, on a stopped node's data directory; the
/// directory is byte-for-byte (and mtime-for-mtime) the same afterwards.
#[tokio::test]
async fn every_subcommand_reads_a_stopped_nodes_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    populate(&data).await;
    let before = listing(&data);

    // meta
    let meta = json_of(&data, &["meta"]);
    assert_eq!(meta["current_revision"], 13, "{meta}");
    assert_eq!(meta["compact_revision"], 4, "{meta}");
    assert_eq!(meta["keys"], 7, "a, bin, c, e, l, t1, t2: {meta}");
    // a: 4, 7; b: 3, 6 (tombstone); c; l; bin; d: 10, 11 (tombstone); e; t1; t2.
    assert_eq!(meta["versions"], 12, "{meta}");
    assert_eq!(meta["leases"], 1, "{meta}");
    assert_eq!(meta["alarms"], json!([]), "{meta}");
    assert_eq!(meta["node_running"], false, "{meta}");
    assert!(meta["engine_bytes"].as_u64().expect("bytes") > 0, "{meta}");
    let applied = meta["applied_index"].as_u64().expect("applied index");
    assert!(
        applied >= 14,
        "12 writes, a txn, a compaction, a grant: {meta}"
    );
    assert_eq!(meta["applied_term"], 1, "{meta}");
    let wal = &meta["wal"];
    assert_eq!(wal["first_index"], 1, "{meta}");
    assert_eq!(
        wal["last_index"], applied,
        "a clean stop applied the whole log: {meta}"
    );
    assert_eq!(wal["unapplied_entries"], 0, "{meta}");
    assert_eq!(wal["torn_tail"], Value::Null, "{meta}");
    assert_eq!(wal["problem"], Value::Null, "{meta}");
    let text = ok(&data, &["meta"]);
    for expected in [
        "revision          13 (compacted at 4)".to_owned(),
        format!("applied           index {applied}, term 1"),
        "keys              7 live, 12 stored versions".to_owned(),
        "leases            1".to_owned(),
        "alarms            none".to_owned(),
        format!("entries 1..={applied})"),
        "wal unapplied     0 entries beyond the applied index".to_owned(),
        "node              not running".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected:?} missing:\n{text}");
    }

    // get: current and past revisions, lease, quoted values.
    assert_eq!(
        ok(&data, &["get", "a"]),
        "key               a\nvalue             111\ncreate_revision   2\nmod_revision      7\n\
         version           3\nlease             none\nread at revision  13\n"
    );
    assert!(ok(&data, &["get", "a", "--rev", "4"]).contains("value             11\n"));
    assert!(ok(&data, &["get", "b", "--rev", "5"]).contains("value             2\n"));
    assert!(ok(&data, &["get", "l"]).contains("lease             4660 (1234)\n"));
    assert!(ok(&data, &["get", "e"]).contains("value             \"two\\nlines\"\n"));
    assert_eq!(
        json_of(&data, &["get", "a", "--rev", "4"]),
        json!({"revision": 4, "kv": {"key": "a", "value": "11", "encoding": "utf8",
            "create_revision": 2, "mod_revision": 4, "version": 2, "lease": 0}})
    );
    assert_eq!(
        json_of(&data, &["get", "l"])["kv"]["lease"],
        LEASE_ID,
        "lease id"
    );
    let missing = fails_in(&data, &["get", "b"]);
    assert!(
        missing.contains("key b not found at revision 13"),
        "{missing}"
    );

    // list and count
    assert_eq!(
        ok(&data, &["list"]),
        "a = 111\nb\"bin\\x00\\xff\" = b\"\\xff\\x00\\x01\"\nc = 3\ne = \"two\\nlines\"\nl = leased\n\
         t1 = x\nt2 = y\n"
    );
    assert_eq!(
        ok(&data, &["list", "b"]),
        "b\"bin\\x00\\xff\" = b\"\\xff\\x00\\x01\"\n"
    );
    assert_eq!(ok(&data, &["list", "--rev", "4"]), "a = 11\nb = 2\n");
    assert_eq!(
        ok(&data, &["list", "--keys-only"]),
        "a\nb\"bin\\x00\\xff\"\nc\ne\nl\nt1\nt2\n"
    );
    let limited = inspect(&with_dir(&data, &["list", "--limit", "2"]));
    assert!(limited.status.success());
    assert_eq!(
        String::from_utf8_lossy(&limited.stdout),
        "a = 111\nb\"bin\\x00\\xff\" = b\"\\xff\\x00\\x01\"\n"
    );
    assert!(
        String::from_utf8_lossy(&limited.stderr).contains("2 of 7 keys shown"),
        "{limited:?}"
    );
    let listed = json_of(&data, &["list", "--limit", "3"]);
    assert_eq!(listed["revision"], 13);
    assert_eq!(
        (&listed["count"], &listed["more"]),
        (&json!(7), &json!(true))
    );
    assert_eq!(
        listed["kvs"][1],
        json!({"key": "YmluAP8=", "value": "/wAB", "encoding": "base64",
            "create_revision": 9, "mod_revision": 9, "version": 1, "lease": 0}),
        "a binary key-value is base64 ({listed})"
    );
    assert_eq!(listed["kvs"][2]["key"], "c");
    let keys_only = json_of(&data, &["list", "e", "--keys-only"]);
    assert_eq!(
        keys_only["kvs"],
        json!([{"key": "e", "encoding": "utf8", "create_revision": 12,
            "mod_revision": 12, "version": 1, "lease": 0}])
    );
    assert_eq!(ok(&data, &["count"]), "7\n");
    assert_eq!(ok(&data, &["count", "t"]), "2\n");
    assert_eq!(ok(&data, &["count", "--rev", "4"]), "2\n");
    assert_eq!(ok(&data, &["count", "b"]), "1\n");
    assert_eq!(ok(&data, &["count", "zzz"]), "0\n");
    assert_eq!(
        json_of(&data, &["count", "--rev", "11"]),
        json!({"revision": 11, "count": 4})
    );

    // history: what compaction at 4 kept, tombstones, oldest first.
    assert_eq!(
        ok(&data, &["history", "a"]),
        "4       put     create=2 version=2 lease=none  11\n\
         7       put     create=2 version=3 lease=none  111\n"
    );
    assert_eq!(
        ok(&data, &["history", "b"]),
        "3       put     create=3 version=1 lease=none  2\n6       delete\n"
    );
    assert_eq!(
        json_of(&data, &["history", "d"]),
        json!({"key": "d", "encoding": "utf8", "compact_revision": 4, "versions": [
            {"revision": 10, "sub_revision": 0, "event": "put", "value": "4",
             "encoding": "utf8", "create_revision": 10, "version": 1, "lease": 0},
            {"revision": 11, "sub_revision": 0, "event": "delete"}]})
    );
    assert_eq!(
        ok(&data, &["history", "t2"]),
        "13.1    put     create=13 version=1 lease=none  y\n",
        "the second write of a txn"
    );
    let never = fails_in(&data, &["history", "never-written"]);
    assert!(never.contains("no stored version"), "{never}");

    // diff
    assert_eq!(
        ok(&data, &["diff", "4", "12"]),
        "diff 4..12: 4 created, 1 modified, 1 deleted\n\
         modified a  rev=7  111  (was 11 at rev 4)\n\
         deleted  b  rev=6  (was 2 at rev 3)\n\
         created  b\"bin\\x00\\xff\"  rev=9  b\"\\xff\\x00\\x01\"\n\
         created  c  rev=5  3\n\
         created  e  rev=12  \"two\\nlines\"\n\
         created  l  rev=8  leased\n"
    );
    assert_eq!(
        ok(&data, &["diff", "9", "11"]),
        "diff 9..11: 0 created, 0 modified, 0 deleted\n",
        "d was created and deleted in between: no net change"
    );
    assert_eq!(
        ok(&data, &["diff", "4", "4"]),
        "diff 4..4: 0 created, 0 modified, 0 deleted\n"
    );
    let diff = json_of(&data, &["diff", "5", "7"]);
    assert_eq!(
        diff,
        json!({"from": 5, "to": 7, "changes": [
            {"key": "a", "encoding": "utf8", "change": "modified", "revision": 7,
             "before": {"key": "a", "value": "11", "encoding": "utf8", "create_revision": 2,
                        "mod_revision": 4, "version": 2, "lease": 0},
             "after": {"key": "a", "value": "111", "encoding": "utf8", "create_revision": 2,
                       "mod_revision": 7, "version": 3, "lease": 0}},
            {"key": "b", "encoding": "utf8", "change": "deleted", "revision": 6,
             "before": {"key": "b", "value": "2", "encoding": "utf8", "create_revision": 3,
                        "mod_revision": 3, "version": 1, "lease": 0},
             "after": null}]})
    );

    assert_unchanged(&before, &data);
}

/// Bad revisions, missing keys, and directories that are missing, not t4's
/// or corrupt: a clear message, exit code 1, nothing created or changed.
#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    populate(&data).await;
    let before = listing(&data);

    for (args, expected) in [
        (
            &["get", "a", "--rev", "3"][..],
            "revision 3 has been compacted: the oldest readable revision is 4",
        ),
        (
            &["list", "--rev", "1"],
            "revision 1 has been compacted: the oldest readable revision is 4",
        ),
        (
            &["count", "--rev", "14"],
            "revision 14 is in the future: the store is at revision 13",
        ),
        (
            &["get", "a", "--rev", "0"],
            "revision 0 is invalid: revisions start at 1",
        ),
        (
            &["diff", "3", "12"],
            "revision 3 has been compacted: the oldest readable revision is 4",
        ),
        (
            &["diff", "4", "99"],
            "revision 99 is in the future: the store is at revision 13",
        ),
        (
            &["diff", "12", "4"],
            "rev-a (12) must not be above rev-b (4)",
        ),
        (&["get", ""], "the key must not be empty"),
        (&["get", "zz"], "key zz not found at revision 13"),
    ] {
        let stderr = fails_in(&data, args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // A revision that is not a number is clap's usage error (exit 2).
    let out = inspect(&with_dir(&data, &["get", "a", "--rev", "x"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_unchanged(&before, &data);

    // A missing data directory is reported, not created.
    let absent = dir.path().join("absent");
    let stderr = fails_in(&absent, &["meta"]);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!absent.exists(), "inspect created the data directory");

    // Directories that are not t4 data directories.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let stderr = fails_in(&empty, &["meta"]);
    assert!(
        stderr.contains("is not a t4 data directory: it has no db/"),
        "{stderr}"
    );
    assert!(!empty.join("db").exists() && !empty.join("wal").exists());
    fs::create_dir(empty.join("db")).expect("mkdir db");
    let stderr = fails_in(&empty, &["list"]);
    assert!(stderr.contains("holds no RocksDB database"), "{stderr}");
    assert_eq!(fs::read_dir(empty.join("db")).expect("ls").count(), 0);
    let file = dir.path().join("a-file");
    fs::write(&file, "x").expect("write");
    assert!(fails_in(&file, &["meta"]).contains("is not a directory"));
    let foreign = dir.path().join("foreign");
    {
        let engine = RocksEngine::open(&foreign.join("db"), RocksOptions::default()).expect("open");
        let mut batch = WriteBatch::default();
        batch.put(b"hello".to_vec(), b"world".to_vec());
        engine.write(batch).expect("write");
        engine.close().expect("close");
    }
    let foreign_before = listing(&foreign);
    let stderr = fails_in(&foreign, &["meta"]);
    assert!(stderr.contains("without t4's metadata"), "{stderr}");
    assert_unchanged(&foreign_before, &foreign);

    // Corrupt engines: an error naming the problem, never a panic.
    let sst: Vec<PathBuf> = fs::read_dir(data.join("db"))
        .expect("ls db")
        .map(|d| d.expect("dirent").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert!(!sst.is_empty(), "a clean stop flushed the engine to an SST");
    let bad_current = dir.path().join("bad-current");
    copy_dir(&data, &bad_current);
    fs::write(bad_current.join("db/CURRENT"), "MANIFEST-999999\n").expect("write");
    let stderr = fails_in(&bad_current, &["meta"]);
    assert!(stderr.contains("cannot open the engine"), "{stderr}");
    let bad_sst = dir.path().join("bad-sst");
    copy_dir(&data, &bad_sst);
    for path in &sst {
        let target = bad_sst.join("db").join(path.file_name().expect("name"));
        let len = fs::metadata(&target).expect("metadata").len();
        fs::write(&target, vec![0x5a; usize::try_from(len).expect("small")]).expect("write");
    }
    let bad_before = listing(&bad_sst);
    for args in [&["meta"][..], &["get", "a"], &["list"], &["history", "a"]] {
        let stderr = fails_in(&bad_sst, args);
        assert!(
            stderr.contains("corrupt") || stderr.contains("Corruption"),
            "{args:?}: {stderr}"
        );
    }
    assert_unchanged(&bad_before, &bad_sst);
    assert_unchanged(&before, &data);
}

/// After kill -9 the engine lost its unflushed writes; the WAL holds them.
/// `meta` counts them as not yet applied and reads do not show them; a torn
/// tail is reported, not truncated; a node started afterwards replays them.
#[tokio::test]
async fn wal_entries_beyond_the_engine_are_counted_not_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let mut server = Server::start(&data, &[]);
        let mut c = server.client().await;
        for i in 0..5 {
            c.put(format!("k{i}"), "v", None).await.expect("put");
        }
        server.kill9();
    }
    let before = listing(&data);
    let meta = json_of(&data, &["meta"]);
    let applied = meta["applied_index"].as_u64().expect("applied index");
    let last = meta["wal"]["last_index"].as_u64().expect("last index");
    assert!(last >= applied + 5, "five puts only in the WAL: {meta}");
    assert_eq!(meta["wal"]["unapplied_entries"], last - applied, "{meta}");
    assert_eq!(meta["wal"]["torn_tail"], Value::Null, "zero padding only");
    let text = ok(&data, &["meta"]);
    assert!(
        text.contains("(a node replays them at start; inspect does not show them)"),
        "{text}"
    );
    let stderr = fails_in(&data, &["get", "k0"]);
    assert!(stderr.contains("not found"), "{stderr}");
    assert_unchanged(&before, &data);

    // Garbage after the last frame: a torn write, reported with its size.
    let torn = dir.path().join("torn");
    copy_dir(&data, &torn);
    let segment = fs::read_dir(torn.join("wal"))
        .expect("ls wal")
        .map(|d| d.expect("dirent").path())
        .max()
        .expect("a segment");
    let mut bytes = fs::read(&segment).expect("read segment");
    bytes.extend_from_slice(&[0xab; 100]);
    fs::write(&segment, &bytes).expect("write segment");
    let torn_before = listing(&torn);
    let meta = json_of(&torn, &["meta"]);
    let tail = &meta["wal"]["torn_tail"];
    assert_eq!(tail["file"], segment.display().to_string(), "{meta}");
    assert!(tail["bytes"].as_u64().expect("bytes") >= 100, "{meta}");
    assert_eq!(meta["wal"]["last_index"], last, "{meta}");
    assert_unchanged(&torn_before, &torn);

    let mut server = Server::start(&data, &[]);
    let mut c = server.client().await;
    let got = c.get("k4", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v", "the node replayed the WAL");
}

/// A node running on the directory: inspect warns, names its process, and
/// reads what the node last flushed; the node keeps working.
#[tokio::test]
async fn a_running_node_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let mut c = server.client().await;
    c.put("x", "1", None).await.expect("put");

    let out = inspect(&with_dir(&data, &["meta", "--json"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pid = server.pid();
    assert!(
        stderr.contains(&format!("warning: process {pid} holds")),
        "{stderr}"
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(meta["node_running"], true, "{meta}");
    assert_eq!(meta["node_pid"], pid, "{meta}");
    assert!(ok(&data, &["meta"]).contains(&format!("running (process {pid} holds db/LOCK)")));

    c.put("x", "2", None).await.expect("the node still writes");
    assert_eq!(c.get("x", None).await.expect("get").kvs()[0].value(), b"2");
    assert!(server.terminate().success(), "log:\n{}", server.log());
    assert!(ok(&data, &["get", "x"]).contains("value             2\n"));
}

/// `RocksEngine::open_read_only` creates nothing, reads what was written,
/// refuses writes, works next to a read-write handle, changes no file.
#[test]
fn read_only_open_creates_nothing_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let refused =
        RocksEngine::open_read_only(&path, RocksOptions::default()).expect_err("no database yet");
    assert!(refused.0.contains("no database here"), "{refused:?}");
    assert!(
        !path.exists(),
        "a read-only open created {}",
        path.display()
    );

    let writer = RocksEngine::open(&path, RocksOptions::default()).expect("open");
    let mut batch = WriteBatch::default();
    batch.put(b"k".to_vec(), b"v1".to_vec());
    writer.write(batch).expect("write");
    writer.persist().expect("flush");
    let mut batch = WriteBatch::default();
    batch.put(b"k".to_vec(), b"v2".to_vec());
    writer.write(batch).expect("write");

    // Next to a read-write handle: sees what was flushed, not the memtable.
    let reader = RocksEngine::open_read_only(&path, RocksOptions::default()).expect("read-only");
    assert_eq!(reader.get(b"k").expect("get"), Some(b"v1".to_vec()));
    drop(reader);
    writer.close().expect("close");

    let before = listing(dir.path());
    let reader = RocksEngine::open_read_only(&path, RocksOptions::default()).expect("read-only");
    assert_eq!(reader.get(b"k").expect("get"), Some(b"v2".to_vec()));
    let scanned: Vec<_> = reader
        .scan(b"", None)
        .collect::<Result<_, _>>()
        .expect("scan");
    assert_eq!(scanned, vec![(b"k".to_vec(), b"v2".to_vec())]);
    let mut batch = WriteBatch::default();
    batch.put(b"k".to_vec(), b"v3".to_vec());
    let refused = reader.write(batch).expect_err("read-only");
    assert!(refused.0.contains("read-only"), "{refused:?}");
    assert!(reader.defragment().is_err(), "read-only");
    reader.persist().expect("nothing to persist");
    reader.close().expect("nothing to flush");
    assert_unchanged(&before, dir.path());
}
