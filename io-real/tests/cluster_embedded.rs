//! Cluster mode through the embedding API: three nodes in one process, on
//! real files, loopback peer sockets and one directory store holding the
//! lock. The real-process version (kill -9) is `server/tests/cluster.rs`;
//! this one checks the driver's wiring quickly and bad configurations.

use std::path::Path;
use std::time::{Duration, Instant};

use t4_io_real::object::StoreConfig;
use t4_io_real::{ClusterOptions, ClusterRole, Config, Node, OpenError, PeerTls};

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn config(root: &Path, id: &str) -> Config {
    let mut config = Config::new(root.join(id));
    config.node_id = id.into();
    config.object_store = Some(StoreConfig::Directory(root.join("bucket")));
    let mut cluster = ClusterOptions::new(free_addr());
    cluster.election_timeout = Duration::from_millis(300);
    cluster.lock_ttl = Duration::from_millis(900);
    config.cluster = Some(cluster);
    config
}

/// Polls `f` every 20 ms for up to 20 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn role(node: &Node) -> ClusterRole {
    node.cluster_status().expect("cluster mode").role
}

fn serving(node: &Node) -> bool {
    role(node) == ClusterRole::Leader { serving: true }
}

/// Retries `put` while the cluster has no leader to take it.
async fn put_retrying(node: &Node, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match node.put(key, value).await {
            Ok(r) => return r.revision,
            Err(e) => {
                assert!(Instant::now() < deadline, "put {key}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A first node bootstraps and leads; two more join as followers; a write
/// through a follower is forwarded to the leader; a linearizable read on
/// the other follower sees it; when the leader closes, another takes over
/// with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_replicate_and_fail_over() {
    let root = tempfile::tempdir().expect("tempdir");
    let n1 = Node::open(config(root.path(), "n1"))
        .await
        .expect("open n1");
    eventually("n1 to lead", || serving(&n1)).await;
    let n2 = Node::open(config(root.path(), "n2"))
        .await
        .expect("open n2");
    let n3 = Node::open(config(root.path(), "n3"))
        .await
        .expect("open n3");
    eventually("three members", || {
        n1.cluster_status().expect("cluster").members.len() == 3
    })
    .await;
    for n in [&n2, &n3] {
        let status = n.cluster_status().expect("cluster");
        assert_eq!(
            status.role,
            ClusterRole::Follower {
                leader: Some("n1".into())
            }
        );
    }

    // A write through a follower is forwarded; the other follower's
    // linearizable read sees it.
    let rev = put_retrying(&n2, "via-n2", "v1").await;
    let kv = n3
        .get("via-n2")
        .await
        .expect("read on n3")
        .expect("present");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v1"[..], rev));
    let mut acked = vec![("via-n2".to_owned(), rev)];
    for i in 0..20 {
        let key = format!("k{i}");
        let via = [&n1, &n2, &n3][i % 3];
        acked.push((key.clone(), put_retrying(via, &key, "v").await));
    }

    // The leader goes away; one of the others takes over.
    n1.close().await.expect("close n1");
    eventually("a new leader", || serving(&n2) || serving(&n3)).await;
    let (leader, other) = if serving(&n2) { (&n2, &n3) } else { (&n3, &n2) };
    assert!(leader.cluster_status().expect("cluster").term > n1.term());
    let after = put_retrying(other, "after-failover", "v2").await;
    acked.push(("after-failover".to_owned(), after));
    for node in [&n2, &n3] {
        for (key, rev) in &acked {
            let kv = node.get(key.as_str()).await.expect("read").expect(key);
            assert_eq!(kv.mod_revision, *rev, "{key}");
        }
    }
    n2.close().await.expect("close n2");
    n3.close().await.expect("close n3");
}

/// Configurations that cannot work are refused at open with a message
/// naming the setting, before anything is written; a damaged hard state
/// stops the node instead of being read as "nothing promised".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_configurations_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let expect_config_error = |result: Result<Node, OpenError>, needle: &str| match result {
        Err(OpenError::Config(why)) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected a configuration error about {needle:?}, got {other:?}"),
    };

    let mut no_bucket = config(root.path(), "a");
    no_bucket.object_store = None;
    expect_config_error(Node::open(no_bucket).await, "object store");

    let mut zero = config(root.path(), "a");
    zero.cluster.as_mut().expect("cluster").lock_ttl = Duration::ZERO;
    expect_config_error(Node::open(zero).await, "must be positive");

    let mut tls = config(root.path(), "a");
    tls.cluster.as_mut().expect("cluster").peer_tls = Some(PeerTls {
        ca: root.path().join("missing-ca.pem"),
        cert: "cert.pem".into(),
        key: "key.pem".into(),
    });
    match Node::open(tls).await {
        Err(e @ OpenError::PeerTls(_)) => {
            let why = e.to_string();
            assert!(
                why.contains("--peer-tls-ca") && why.contains("missing-ca.pem"),
                "{why}"
            );
        }
        other => panic!("expected a peer TLS error, got {other:?}"),
    }

    // A taken peer port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut busy = config(root.path(), "a");
    busy.cluster.as_mut().expect("cluster").peer_listen = taken.local_addr().expect("addr");
    match Node::open(busy).await {
        Err(OpenError::PeerListen { .. }) => {}
        other => panic!("expected a peer listen error, got {other:?}"),
    }

    // A damaged hard state.
    let data_dir = root.path().join("b");
    std::fs::create_dir_all(&data_dir).expect("mkdir");
    t4_io_real::hard_state::save(&data_dir, b"not a hard state").expect("save");
    match Node::open(config(root.path(), "b")).await {
        Err(OpenError::HardState(why)) => assert!(why.contains("refusing to start"), "{why}"),
        other => panic!("expected a hard state error, got {other:?}"),
    }
}
