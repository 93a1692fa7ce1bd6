//! The real `t4` process on loopback, driven by the Rust `etcd-client` crate.

mod common;

use common::{http_get, revision, status_of, Server};
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use tonic::Code;

/// Put, get with options, delete, txn and compaction through a real client,
/// with etcd's revision numbering.
#[tokio::test]
async fn kv_round_trip_through_etcd_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;

    assert_eq!(revision(&mut c).await, 1, "an empty store is at revision 1");
    let r = c.put("/a/1", "one", None).await.expect("put");
    assert_eq!(r.header().expect("header").revision(), 2);
    c.put("/a/2", "two", None).await.expect("put");
    c.put("/b/1", "three", None).await.expect("put");
    let r = c
        .put("/a/1", "uno", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(r.prev_key().expect("prev kv").value(), b"one");

    let got = c
        .get("/a/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(got.count(), 2);
    let kv = &got.kvs()[0];
    assert_eq!((kv.key(), kv.value()), (&b"/a/1"[..], &b"uno"[..]));
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (2, 5, 2)
    );

    let limited = c
        .get(
            "/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_limit(1)
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await
        .expect("get");
    assert_eq!(limited.kvs()[0].value(), b"uno");
    assert!(limited.more());
    assert_eq!(limited.count(), 3);

    let old = c
        .get("/a/1", Some(GetOptions::new().with_revision(2)))
        .await
        .expect("get");
    assert_eq!(old.kvs()[0].value(), b"one", "history is readable");

    let del = c
        .delete(
            "/a/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("del");
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.prev_kvs().len(), 2);
    assert_eq!(
        del.header().expect("header").revision(),
        6,
        "one revision for the whole delete"
    );

    let txn = Txn::new()
        .when([Compare::version("/b/1", CompareOp::Equal, 1)])
        .and_then([
            TxnOp::put("/b/1", "four", None),
            TxnOp::put("/b/2", "five", None),
            TxnOp::get("/b/", Some(GetOptions::new().with_prefix())),
        ])
        .or_else([TxnOp::put("/failed", "x", None)]);
    let t = c.txn(txn).await.expect("txn");
    assert!(t.succeeded());
    assert_eq!(
        t.header().expect("header").revision(),
        7,
        "all writes of a txn share one revision"
    );
    match &t.op_responses()[2] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs().len(), 2, "a txn reads its own writes"),
        other => panic!("expected a range response, got {other:?}"),
    }

    c.compact(6, None).await.expect("compact");
    let e = status_of(
        c.get("/a/1", Some(GetOptions::new().with_revision(5)))
            .await
            .expect_err("compacted"),
    );
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    c.get("/b/1", Some(GetOptions::new().with_revision(6)))
        .await
        .expect("the compact revision stays readable");
    let e = status_of(
        c.get("/b/1", Some(GetOptions::new().with_revision(100)))
            .await
            .expect_err("future"),
    );
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
}

/// Every bad input gets etcd's error and changes nothing.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    c.put("k", "v", None).await.expect("put");
    let before = revision(&mut c).await;

    let e = status_of(c.put("", "v", None).await.expect_err("empty key"));
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );

    let big = vec![b'x'; 1536 * 1024 + 100];
    let e = status_of(c.put("big", big, None).await.expect_err("too large"));
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "etcdserver: request is too large")
    );

    let e = status_of(
        c.put("k", "v2", Some(PutOptions::new().with_lease(0x1234)))
            .await
            .expect_err("lease"),
    );
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );

    let ops: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("t{i}"), "v", None))
        .collect();
    let e = status_of(
        c.txn(Txn::new().and_then(ops))
            .await
            .expect_err("too many ops"),
    );
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request"
        )
    );

    let dup = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    let e = status_of(c.txn(dup).await.expect_err("duplicate"));
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request"
        )
    );

    let e = status_of(c.get("", None).await.expect_err("empty range key"));
    assert_eq!(e.message(), "etcdserver: key is not provided");

    // range_end < key: etcd answers with nothing, not an error.
    let got = c
        .get("z", Some(GetOptions::new().with_range("a")))
        .await
        .expect("inverted range");
    assert_eq!(got.count(), 0);
    let del = c
        .delete("z", Some(DeleteOptions::new().with_range("a")))
        .await
        .expect("inverted delete");
    assert_eq!(del.deleted(), 0);

    assert_eq!(
        revision(&mut c).await,
        before,
        "no bad request took a revision"
    );
    let got = c.get("k", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v");
    assert_eq!(got.kvs()[0].lease(), 0);
    assert_eq!(c.get("t0", None).await.expect("get").count(), 0);
    assert_eq!(c.get("d", None).await.expect("get").count(), 0);
}

/// Services of later issues (Auth) answer Unimplemented with a clear
/// message; Status, Alarm and MemberList answer for real; the HTTP
/// endpoints answer.
#[tokio::test]
async fn maintenance_cluster_and_unimplemented_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &["--node-id", "node-a"]);
    let mut c = server.client().await;
    c.put("k", "v", None).await.expect("put");

    let s = c.status().await.expect("status");
    let member = s.header().expect("header").member_id();
    assert_eq!(s.leader(), member, "a single node leads itself");
    assert!(s.db_size() > 0, "db size is real");
    assert!(s.raft_index() >= 1, "raft index is the applied log index");
    assert!(s.version().starts_with("3."));

    let m = c.member_list().await.expect("member list");
    assert_eq!(m.members().len(), 1);
    assert_eq!(m.members()[0].id(), member);
    assert_eq!(m.members()[0].name(), "node-a");
    assert_eq!(m.members()[0].client_urls(), [server.endpoint()]);

    let e = status_of(c.auth_enable().await.expect_err("auth"));
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("etcdserverpb.Auth"), "{}", e.message());
    let alarms = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .expect("alarm list");
    assert!(alarms.alarms().is_empty());
    let h2 = c.hash_kv(2).await.expect("hash kv at 2");
    assert_eq!(h2.hash_revision(), 2);
    let e = status_of(c.hash_kv(100).await.expect_err("future"));
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_ne!(c.hash().await.expect("hash").hash(), 0);
    let e = status_of(c.member_remove(member).await.expect_err("member remove"));
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "membership changes need cluster mode"
    );
    assert!(e.message().contains("single-node"), "{}", e.message());
    c.put("still", "works", None)
        .await
        .expect("the KV service is unaffected");
    assert_eq!(
        c.hash_kv(2).await.expect("hash kv").hash(),
        h2.hash(),
        "later writes do not change HashKV at 2"
    );
    assert_ne!(
        c.hash_kv(0).await.expect("hash kv").hash(),
        h2.hash(),
        "the current HashKV includes them"
    );

    assert_eq!(http_get(server.metrics, "/healthz").0, 200);
    assert_eq!(http_get(server.metrics, "/readyz").0, 200);
    let (code, body) = http_get(server.metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("t4_current_revision 3"), "{body}");
    assert!(body.contains("t4_writes_total{op=\"put\"} 2"), "{body}");
}

/// SIGTERM shuts down cleanly (exit 0) and a restart serves every write.
#[tokio::test]
async fn graceful_shutdown_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let mut c = server.client().await;
    for i in 0..50 {
        c.put(format!("k{i:02}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log()
    );
    assert!(
        server.log().contains("shut down cleanly"),
        "{}",
        server.log()
    );

    let mut server = Server::start(&data, &[]);
    let mut c = server.client().await;
    let got = c
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(got.count(), 50);
    assert_eq!(got.header().expect("header").revision(), 51);
    let r = c.put("after", "restart", None).await.expect("put");
    assert_eq!(
        r.header().expect("header").revision(),
        52,
        "revisions continue without reuse"
    );
}

/// A data directory that cannot be created fails with a clear message.
#[test]
fn unusable_data_dir_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("sub"))
        .output()
        .expect("run t4");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot use data directory"), "{stderr}");
}

/// Flags come from T4_* environment variables; a flag on the command line wins.
#[test]
fn flags_from_environment() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["run", "--log-format", "yaml"])
        .output()
        .expect("run t4");
    assert!(!out.status.success(), "an invalid flag value is refused");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("T4_DATA_DIR", file.join("from-env"))
        .output()
        .expect("run t4");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from-env"), "T4_DATA_DIR is used: {stderr}");
}

/// A WAL damaged in the middle (not a torn tail) stops `t4 run` with the
/// file and byte offset in the message, and nothing is served or changed.
#[tokio::test]
async fn corrupt_wal_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let mut c = server.client().await;
    for i in 0..20 {
        c.put(format!("k{i}"), "v".repeat(100), None)
            .await
            .expect("put");
    }
    assert!(server.terminate().success());

    let segment = std::fs::read_dir(data.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a WAL segment");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("write segment");
    let before = bytes.clone();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run t4");
    assert!(!out.status.success(), "a corrupt WAL must stop the node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        stderr.contains(&name) && stderr.contains("offset"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&segment).expect("read"),
        before,
        "the damaged file is left as it was"
    );
}

/// Defragment returns the space of deleted and compacted-away data and
/// keeps every live key.
#[tokio::test]
async fn defragment_returns_space_and_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let value = "x".repeat(1024);
    for i in 0..2000 {
        c.put(format!("gone/{i:04}"), value.clone(), None)
            .await
            .expect("put");
    }
    c.put("kept", "still here", None).await.expect("put");
    let deleted = c
        .delete("gone/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    assert_eq!(deleted.deleted(), 2000);
    let head = revision(&mut c).await;
    c.compact(head, None).await.expect("compact");
    let before = c.status().await.expect("status").db_size();
    c.defragment().await.expect("defragment");
    let after = c.status().await.expect("status").db_size();
    assert!(
        after * 4 < before,
        "defragment shrinks the db: {before} -> {after} bytes"
    );
    let got = c.get("kept", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"still here");
    assert_eq!(
        c.get("gone/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get")
            .count(),
        0
    );
    assert_eq!(revision(&mut c).await, head, "defragment takes no revision");
}
