//! Cluster mode against the real binary: three `t4 run` processes on
//! loopback sharing one directory-store bucket (which is safe across
//! processes: conditional puts have one winner, see
//! `io-real/src/object/dir.rs`).
//!
//! The scenario, in one test because each step builds on the last:
//! 1. n1 starts alone and leads (it creates `leader-lock`); n2 and n3 start
//!    and join; `MemberList` shows all three with their peer URLs, and
//!    every member's `Status` names n1 as the leader, in the same term.
//! 2. Writes through a follower are forwarded to the leader; a
//!    linearizable read on the other follower sees them.
//! 3. Writers on every node run while the leader is killed with SIGKILL;
//!    one of the survivors leads within a few seconds, in a higher term;
//!    every acknowledged write is on both survivors with its value and
//!    revision, and the survivors take writes again.
//! 4. The killed node restarts on its data directory and converges: it
//!    follows the new leader and holds every acknowledged write.
//!
//! A second test runs peers over mTLS: members with certificates from the
//! cluster's CA form a cluster and forward writes; a node whose certificate
//! another CA signed cannot join.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{
    all_written, assert_holds, form, member_ids, put_retrying, ready, start_member, wait_converged,
    wait_failover, writer, Acked, Formed,
};
use common::{free_addr, make_ca, make_leaf, Server};

/// The flags naming the directory-store bucket `root/bucket`.
fn dir_flags(root: &Path) -> Vec<String> {
    let bucket = root.join("bucket");
    vec![
        "--object-store-dir".to_owned(),
        bucket.to_str().expect("utf-8 temp path").to_owned(),
    ]
}

/// Member `id` on the directory-store bucket `root/bucket`.
fn start(root: &Path, id: &str, peer: SocketAddr) -> Server {
    start_with(root, id, peer, &[])
}

/// Member `id` on the directory-store bucket `root/bucket`, with `extra`
/// flags.
fn start_with(root: &Path, id: &str, peer: SocketAddr, extra: &[String]) -> Server {
    let mut flags = dir_flags(root);
    flags.extend_from_slice(extra);
    start_member(root, id, peer, &flags)
}

/// Form a cluster, forward writes, fail over after kill -9 of the leader
/// without losing an acknowledged write, and let the killed node rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_form_forward_fail_over_and_converge() {
    let root = tempfile::tempdir().expect("tempdir");
    let peers: BTreeMap<&str, SocketAddr> = [
        ("n1", free_addr()),
        ("n2", free_addr()),
        ("n3", free_addr()),
    ]
    .into();

    // 1. n1 bootstraps; n2 and n3 join.
    let Formed {
        servers: [mut n1, n2, n3],
        clients: [_, mut c2, mut c3],
        ids: [n1_id, ..],
        term: term1,
    } = form(
        root.path(),
        [
            ("n1", peers["n1"]),
            ("n2", peers["n2"]),
            ("n3", peers["n3"]),
        ],
        &dir_flags(root.path()),
    )
    .await;

    // 2. A follower forwards writes; the other follower reads them.
    let acked: Acked = Arc::default();
    for i in 0..10 {
        let (key, value) = (format!("w-forwarded/k{i}"), format!("via-n2-{i}"));
        let rev = put_retrying(&mut c2, &key, &value).await;
        acked.lock().expect("lock").insert(key, (value, rev));
    }
    let seen = all_written(&mut c3, false).await;
    assert_holds(
        "a linearizable read on n3",
        &seen,
        &acked.lock().expect("lock"),
    );

    // 3. Writers everywhere; kill -9 the leader.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [&n1, &n2, &n3]
        .iter()
        .enumerate()
        .map(|(id, server)| {
            tokio::spawn(writer(
                server.endpoint(),
                id,
                Arc::clone(&acked),
                Arc::clone(&stop),
                Duration::from_secs(5),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = acked.lock().expect("lock").len();
    n1.kill9();
    let killed_at = Instant::now();
    let (new_leader, term2, failover) = wait_failover(
        &mut [&mut c2, &mut c3],
        (n1_id, term1),
        killed_at,
        Duration::from_secs(10),
        &[&n2, &n3],
    )
    .await;
    eprintln!("new leader {new_leader} in term {term2} after {failover:?}");
    // The survivors take writes again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let after_kill = acked.lock().expect("lock").len();
    eprintln!("acknowledged writes: {before_kill} before the kill, {after_kill} in all");
    assert!(
        before_kill > 10,
        "writes were acknowledged before the kill ({before_kill})"
    );
    assert!(
        after_kill > before_kill,
        "writes were acknowledged after the failover"
    );
    let acked = acked.lock().expect("lock").clone();
    for (name, c) in [("n2", &mut c2), ("n3", &mut c3)] {
        let present = all_written(c, false).await;
        assert_holds(&format!("{name} after the failover"), &present, &acked);
    }

    // 4. The killed node comes back (same data directory and peer
    // address) and converges.
    let mut n1 = start(root.path(), "n1", peers["n1"]);
    let mut c1 = ready(&mut n1).await;
    let want = all_written(&mut c2, false).await;
    wait_converged(
        &mut c1,
        &want,
        (new_leader, term2),
        Duration::from_secs(30),
        &n1,
    )
    .await;
    assert_holds("n1 after its restart", &want, &acked);
    let rev = put_retrying(&mut c1, "w-after/restart", "ok").await;
    let kv = c3.get("w-after/restart", None).await.expect("get");
    assert_eq!(kv.kvs()[0].mod_revision(), rev);
}

/// Peers over mTLS: n1 and n2 (certificates from the cluster's CA) form a
/// cluster and n2 forwards writes; n3, whose certificate another CA signed,
/// is refused at every handshake and never becomes a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_peers_form_a_cluster_and_a_foreign_node_cannot_join() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = root.path().join("pki");
    std::fs::create_dir(&pki).expect("mkdir");
    make_ca(&pki, "cluster-ca");
    make_ca(&pki, "other-ca");
    let tls1 = make_leaf(&pki, "cluster-ca", "n1");
    let tls2 = make_leaf(&pki, "cluster-ca", "n2");
    let tls3 = make_leaf(&pki, "other-ca", "n3");

    let mut n1 = start_with(root.path(), "n1", free_addr(), &tls1);
    let mut c1 = ready(&mut n1).await;
    let mut n2 = start_with(root.path(), "n2", free_addr(), &tls2);
    let mut c2 = ready(&mut n2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while member_ids(&mut c1).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "n2 did not join over mTLS; n1 log:\n{}\nn2 log:\n{}",
            n1.log(),
            n2.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rev = put_retrying(&mut c2, "w/mtls", "forwarded").await;
    let kv = c1.get("w/mtls", None).await.expect("get on n1");
    assert_eq!(kv.kvs()[0].mod_revision(), rev);

    let n3 = start_with(root.path(), "n3", free_addr(), &tls3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let members = member_ids(&mut c1).await;
    assert_eq!(
        members.keys().collect::<Vec<_>>(),
        ["n1", "n2"],
        "a node signed by another CA must not join; n3 log:\n{}",
        n3.log()
    );
    assert!(
        n1.log().contains("peer TLS handshake refused"),
        "the leader logs the refused handshakes; log:\n{}",
        n1.log()
    );
}

/// Runs `t4 member …`; (success, stdout + stderr).
fn t4_member(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
        .arg("member")
        .args(args)
        .output()
        .expect("run t4 member");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `t4 member list` and `t4 member remove` against a running cluster: the
/// removed member (a follower) shuts down by itself, the two left keep
/// taking writes; bad removals are refused and change nothing, through
/// the CLI and through etcd's `MemberRemove`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_and_remove() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut n1 = start(root.path(), "n1", free_addr());
    let mut c1 = ready(&mut n1).await;
    let mut n2 = start(root.path(), "n2", free_addr());
    let mut c2 = ready(&mut n2).await;
    let mut n3 = start(root.path(), "n3", free_addr());
    ready(&mut n3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while member_ids(&mut c1).await.len() < 3 {
        assert!(Instant::now() < deadline, "n3 did not join:\n{}", n1.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A follower's list is the lock as it last read it (at most a lock
    // TTL ago).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, listed) = t4_member(&["list", "--endpoint", &n2.endpoint()]);
        assert!(ok, "{listed}");
        if ["n1", "n2", "n3"]
            .iter()
            .all(|name| listed.contains(&format!("  {name}  ")))
        {
            break;
        }
        assert!(Instant::now() < deadline, "n2 lists {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, json) = t4_member(&["list", "--json", "--endpoint", &n1.endpoint()]);
    assert!(ok, "{json}");
    let doc: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    assert_eq!(doc["members"].as_array().map(Vec::len), Some(3), "{json}");

    // Bad input changes nothing.
    let (ok, text) = t4_member(&["remove", "n9", "--endpoint", &n1.endpoint()]);
    assert!(!ok && text.contains("no member is named \"n9\""), "{text}");
    let err = c2.member_remove(0xdead).await.expect_err("unknown id");
    let status = common::status_of(err);
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "etcdserver: member not found");
    assert_eq!(member_ids(&mut c1).await.len(), 3);

    // Remove n3 (named by its hex id): n3 shuts down.
    let n3_id = member_ids(&mut c1).await["n3"].0;
    let (ok, text) = t4_member(&[
        "remove",
        &format!("{n3_id:x}"),
        "--endpoint",
        &n1.endpoint(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("removed") && !text.contains("  n3  "),
        "{text}"
    );
    let exit = n3.wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "n3 did not shut down: {exit:?}\n{}",
        n3.log()
    );
    assert!(
        n3.log().contains("removed from the cluster"),
        "{}",
        n3.log()
    );
    let ids = member_ids(&mut c1).await;
    assert_eq!(ids.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    put_retrying(&mut c2, "after-removal", "1").await;
    let got = c1.get("after-removal", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"1");
}
