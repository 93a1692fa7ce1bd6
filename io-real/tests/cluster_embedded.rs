//! Cluster mode through the embedding API: three nodes in one process, on
//! real files, loopback peer sockets and one directory store holding the
//! lock. The real-process version (kill -9) is `server/tests/cluster.rs`;
//! this one checks the driver's wiring quickly and bad configurations.

use std::path::Path;
use std::time::{Duration, Instant};

use t4_io_real::object::StoreConfig;
use t4_io_real::{ClusterOptions, ClusterRole, Config, Node, OpenError, PeerTls};

#[path = "support/ports.rs"]
mod ports;
use ports::free_addr;

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

/// The keys under `prefix` in the directory bucket.
async fn bucket_keys(root: &Path, prefix: &str) -> Vec<String> {
    use t4_core::object::{ObjectOp, ObjectReply, LIST_KEYS_MAX};
    use t4_io_real::object::{open_store, RetryConfig};
    let store = open_store(
        &StoreConfig::Directory(root.join("bucket")),
        RetryConfig::default(),
    )
    .await
    .expect("the bucket opens");
    let mut keys = Vec::new();
    loop {
        let op = ObjectOp::List {
            prefix: prefix.into(),
            start_after: keys.last().cloned(),
            max_keys: LIST_KEYS_MAX,
        };
        match store.execute(op).await.expect("list") {
            ObjectReply::Listed { objects, truncated } => {
                keys.extend(objects.into_iter().map(|o| o.key));
                if !truncated {
                    return keys;
                }
            }
            other => panic!("a list answered {other:?}"),
        }
    }
}

/// Puts `{prefix}0` … `{prefix}{n-1}` through `via`, each acknowledged,
/// and records (key, revision) in `acked`.
async fn put_many(via: &Node, prefix: &str, n: usize, acked: &mut Vec<(String, i64)>) {
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let rev = put_retrying(via, &key, "v").await;
        acked.push((key, rev));
    }
}

/// A member's configuration with the bucket tier made busy: checkpoints
/// every 20 entries, segments sealed after 50 ms, a leader memory of 8
/// entries.
fn tiered(root: &Path, id: &str, gc_keep: usize) -> Config {
    let mut config = config(root, id);
    config.checkpoint_entries = 20;
    config.checkpoint_interval = None;
    config.gc_keep = gc_keep;
    config.segment_max_age = Duration::from_millis(50);
    config
        .cluster
        .as_mut()
        .expect("cluster")
        .peer_buffer_entries = 8;
    config
}

/// Three tiered members, formed; and n3's configuration (to reopen it).
async fn tiered_cluster(root: &Path, gc_keep: usize) -> ([Node; 3], Config) {
    tiered_cluster_with(root, gc_keep, tiered(root, "n3", gc_keep)).await
}

/// [`tiered_cluster`] with n3 opened on `n3_config`.
async fn tiered_cluster_with(
    root: &Path,
    gc_keep: usize,
    n3_config: Config,
) -> ([Node; 3], Config) {
    let n1 = Node::open(tiered(root, "n1", gc_keep))
        .await
        .expect("open n1");
    eventually("n1 to lead", || serving(&n1)).await;
    let n2 = Node::open(tiered(root, "n2", gc_keep))
        .await
        .expect("open n2");
    let n3 = Node::open(n3_config.clone()).await.expect("open n3");
    eventually("three members", || {
        n1.cluster_status().expect("cluster").members.len() == 3
    })
    .await;
    ([n1, n2, n3], n3_config)
}

/// Waits until the leader `n1` uploaded its whole log.
async fn uploaded_all(n1: &Node) {
    eventually("the leader to upload its log", || {
        let status = n1.cluster_status().expect("cluster");
        status.uploaded >= Some(status.commit_index)
    })
    .await;
}

/// `n3` catches up with the leader `n1` and serves every acknowledged
/// write; then all three close.
async fn caught_up_and_close(n1: Node, n2: Node, n3: Node, acked: &[(String, i64)]) {
    let commit = n1.cluster_status().expect("cluster").commit_index;
    eventually("n3 to catch up", || n3.status().applied_index >= commit).await;
    // It can catch up from the bucket before the leader reaches it; its
    // linearizable reads need the leader.
    eventually("n3 to follow a leader and count again", || {
        n3.cluster_status().expect("cluster").leader.is_some()
            && n1.cluster_status().expect("cluster").members.len() == 3
    })
    .await;
    for (key, rev) in acked {
        let kv = n3.get(key.as_str()).await.expect("read on n3").expect(key);
        assert_eq!(kv.mod_revision, *rev, "{key}");
    }
    for node in [n1, n2, n3] {
        node.close().await.expect("close");
    }
}

/// The bucket is the cluster's disaster-recovery tier: the leader uploads
/// the committed log and takes checkpoints; a member that lost its engine
/// (its WAL and hard state are moved aside) comes back as a new member
/// from the newest checkpoint, catches up past the leader's small memory
/// from the bucket's WAL and the leader, and serves every acknowledged
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_lost_disk_restores_from_the_bucket() {
    let root = tempfile::tempdir().expect("tempdir");
    let ([n1, n2, n3], n3_config) = tiered_cluster(root.path(), 0).await;
    let mut acked = Vec::new();
    put_many(&n1, "before-", 80, &mut acked).await;
    n3.close().await.expect("close n3");
    // The engine is lost; the WAL and the hard state survive, but without
    // it they cannot be trusted to vote: n3 comes back as a new member.
    std::fs::remove_dir_all(n3_config.engine_dir()).expect("lose n3's engine");
    put_many(&n2, "while-down-", 40, &mut acked).await;
    uploaded_all(&n1).await;
    assert!(!bucket_keys(root.path(), "manifest/").await.is_empty());

    // Opening restores the newest checkpoint before the engine opens: n3
    // starts well past index 0 (the leader's memory holds 8 entries).
    let n3 = Node::open(n3_config)
        .await
        .expect("reopen n3 without its engine");
    let at_open = n3.status().applied_index;
    assert!(at_open.0 >= 80, "n3 restored a checkpoint: at {at_open}");
    let mut aside: Vec<String> = std::fs::read_dir(root.path().join("n3"))
        .expect("n3's data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("without-engine"))
        .collect();
    aside.sort();
    assert!(
        aside.len() == 2
            && aside[0].starts_with("hard_state.without-engine-")
            && aside[1].starts_with("wal.without-engine-"),
        "the old WAL and hard state are kept aside: {aside:?}"
    );
    caught_up_and_close(n1, n2, n3, &acked).await;
}

/// While n3 is away: 120 writes through n2 in bursts longer than a
/// segment's age (many WAL objects, a checkpoint every 20 entries, GC
/// keeping one), uploaded by the leader n1. Returns the first index of the
/// second WAL object left: the first (a fence: the first of its term)
/// stays, GC deleted those after it up to the oldest kept checkpoint.
async fn away_past_gc(
    n1: &Node,
    n2: &Node,
    root: &Path,
    acked: &mut Vec<(String, i64)>,
) -> t4_core::Index {
    for burst in 0..8 {
        put_many(n2, &format!("away-{burst}-"), 15, acked).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    uploaded_all(n1).await;
    let wal = bucket_keys(root, "wal/").await;
    let second = wal
        .get(1)
        .and_then(|k| t4_core::bucket::layout::parse_wal_key(k))
        .expect("WAL objects");
    assert!(second.0 > 20, "GC deleted the WAL n3 needs next: {wal:?}");
    second
}

/// n3 started over: its old engine is kept aside, not deleted.
/// Whether n3's data dir holds a file or folder named `prefix…`.
fn n3_holds(root: &Path, prefix: &str) -> bool {
    std::fs::read_dir(root.join("n3"))
        .expect("n3's data dir")
        .any(|e| {
            e.expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with(prefix)
        })
}

fn assert_engine_kept_aside(root: &Path) {
    assert!(
        n3_holds(root, "engine.behind-bucket-"),
        "the old engine is kept aside"
    );
}

/// A member away for several checkpoints comes back on its old disk: GC
/// deleted the bucket's WAL objects it needs next and the leader's memory
/// does not reach back either, so at start it moves its engine aside,
/// restores the newest checkpoint and rejoins as a new member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_buckets_gc_starts_over_from_a_checkpoint() {
    let root = tempfile::tempdir().expect("tempdir");
    let ([n1, n2, n3], n3_config) = tiered_cluster(root.path(), 1).await;
    let mut acked = Vec::new();
    put_many(&n1, "before-", 5, &mut acked).await;
    eventually("n3 to apply them", || {
        n3.status().applied_index >= n1.cluster_status().expect("cluster").commit_index
    })
    .await;
    n3.close().await.expect("close n3");
    let second = away_past_gc(&n1, &n2, root.path(), &mut acked).await;

    let n3 = Node::open(n3_config)
        .await
        .expect("reopen n3 on its old disk");
    let at_open = n3.status().applied_index;
    assert!(
        at_open >= second,
        "n3 started over from a checkpoint: at {at_open}"
    );
    assert_engine_kept_aside(root.path());
    caught_up_and_close(n1, n2, n3, &acked).await;
}

/// A TCP proxy in front of a member's peer port, advertised as its peer
/// address: cutting it drops every connection through it and refuses new
/// ones, so the others stop reaching the member while it keeps running.
struct Cuttable {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cuttable {
    async fn start(target: std::net::SocketAddr) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let proxy = Cuttable {
            addr: listener.local_addr().expect("addr"),
            cut: Default::default(),
            conns: Default::default(),
        };
        let (cut, conns) = (proxy.cut.clone(), proxy.conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns.lock().expect("lock").push(task.abort_handle());
            }
        });
        proxy
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for conn in self.conns.lock().expect("lock").drain(..) {
            conn.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The same member falls behind GC while it runs: the others cannot reach
/// it for several checkpoints (its peer address goes through a proxy that
/// is cut). Once they can again, the leader tells it it is behind its
/// memory, the bucket's WAL has a hole where it needs to continue, and the
/// node starts itself over from the newest checkpoint without a restart:
/// the same `Node` handle serves every acknowledged write afterwards. The
/// checkpoint covers its whole log, so it keeps its hard state (its vote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_member_behind_the_buckets_gc_starts_over_by_itself() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut n3_config = tiered(root.path(), "n3", 1);
    let n3_cluster = n3_config.cluster.as_mut().expect("cluster");
    let proxy = Cuttable::start(n3_cluster.peer_listen).await;
    n3_cluster.advertise_peer = proxy.addr.to_string();
    let ([n1, n2, n3], _) = tiered_cluster_with(root.path(), 1, n3_config).await;
    let mut acked = Vec::new();
    put_many(&n1, "before-", 5, &mut acked).await;
    eventually("n3 to apply them", || {
        n3.status().applied_index >= n1.cluster_status().expect("cluster").commit_index
    })
    .await;

    proxy.cut();
    let second = away_past_gc(&n1, &n2, root.path(), &mut acked).await;
    let stuck_at = n3.status().applied_index;
    assert!(stuck_at < second, "n3 heard nothing: at {stuck_at}");

    proxy.heal();
    eventually("n3 to start over past the hole", || {
        n3.status().applied_index >= second
    })
    .await;
    assert_engine_kept_aside(root.path());
    // The checkpoint covers n3's whole log: it kept its promises, so it
    // still votes (it is not rejoining as a new member).
    let n3_dir = root.path().join("n3");
    let kept = t4_io_real::hard_state::load(&n3_dir)
        .expect("read n3's hard state")
        .expect("n3 kept its hard state");
    let kept = t4_core::cluster::HardState::decode(&kept).expect("decode");
    assert!(kept.promised.0 > 0 && !kept.rejoining, "{kept:?}");
    assert!(
        !n3_holds(root.path(), "hard_state.without-engine"),
        "n3's hard state was put back"
    );
    caught_up_and_close(n1, n2, n3, &acked).await;
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

    // A damaged hard state (next to its engine: without one, the member
    // would start over as a new, empty member).
    let data_dir = root.path().join("b");
    Node::open(config(root.path(), "b"))
        .await
        .expect("open b")
        .close()
        .await
        .expect("close b");
    t4_io_real::hard_state::save(&data_dir, b"not a hard state").expect("save");
    match Node::open(config(root.path(), "b")).await {
        Err(OpenError::HardState(why)) => assert!(why.contains("refusing to start"), "{why}"),
        other => panic!("expected a hard state error, got {other:?}"),
    }
}
