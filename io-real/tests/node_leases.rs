//! Leases and alarms through the embedding API, on real files and the real
//! clock: grant, attach, time-to-live, revoke, keepalive, expiry, restart.

use std::time::{Duration, Instant};

use t4_io_real::kv::{AlarmAction, AlarmRequest, AlarmType, PutRequest};
use t4_io_real::{Config, Error, Node};

async fn put_with_lease(node: &Node, key: &str, lease: i64) -> Result<i64, Error> {
    node.put_request(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        lease,
        ..PutRequest::default()
    })
    .await
    .map(|r| r.revision)
}

/// Grant, attach keys, list, time-to-live with keys, revoke (every attached
/// key deleted at one revision), then the lease is gone everywhere.
#[tokio::test]
async fn lease_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");

    let grant = node.lease_grant(60, 0).await.expect("grant");
    assert_ne!(grant.id, 0, "the node picks an id");
    assert!(grant.id > 0, "generated ids are positive: {}", grant.id);
    assert_eq!(grant.ttl, 60);
    let explicit = node.lease_grant(30, 42).await.expect("grant with id");
    assert_eq!((explicit.id, explicit.ttl), (42, 30));
    assert_eq!(
        node.lease_grant(30, 42).await.expect_err("id in use"),
        Error::LeaseExists
    );

    put_with_lease(&node, "a", grant.id).await.expect("put a");
    let last = put_with_lease(&node, "b", grant.id).await.expect("put b");
    node.put("c", "no lease").await.expect("put c");
    assert_eq!(
        put_with_lease(&node, "d", 777)
            .await
            .expect_err("unknown lease"),
        Error::LeaseNotFound
    );

    let mut ids = node.lease_leases().await.expect("leases").ids;
    ids.sort_unstable();
    let mut expected = vec![42, grant.id];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    let ttl = node.lease_time_to_live(grant.id, true).await.expect("ttl");
    assert_eq!(ttl.id, grant.id);
    assert_eq!(ttl.granted_ttl, 60);
    assert!((58..=60).contains(&ttl.ttl), "remaining {}", ttl.ttl);
    assert_eq!(ttl.keys, vec![b"a".to_vec(), b"b".to_vec()]);
    let no_keys = node.lease_time_to_live(grant.id, false).await.expect("ttl");
    assert!(no_keys.keys.is_empty(), "keys only when asked for");

    let before = node.current_revision();
    assert_eq!(before, last + 1, "the put of c came last");
    let revoke = node.lease_revoke(grant.id).await.expect("revoke");
    assert_eq!(
        revoke.revision,
        before + 1,
        "both keys are deleted at one revision"
    );
    assert!(node.get("a").await.expect("get").is_none());
    assert!(node.get("b").await.expect("get").is_none());
    assert!(
        node.get("c").await.expect("get").is_some(),
        "unleased key stays"
    );

    assert_eq!(
        node.lease_revoke(grant.id)
            .await
            .expect_err("revoked twice"),
        Error::LeaseNotFound
    );
    let gone = node
        .lease_time_to_live(grant.id, true)
        .await
        .expect("ttl of a revoked lease");
    assert_eq!(gone.ttl, -1);
    let keep = node.lease_keep_alive(grant.id).await.expect("keepalive");
    assert_eq!((keep.id, keep.ttl), (grant.id, 0), "unknown lease: TTL 0");
    assert_eq!(node.lease_leases().await.expect("leases").ids, vec![42]);
    node.close().await.expect("close");
}

/// A keepalive restarts the TTL and reports it; an unknown id gets TTL 0.
#[tokio::test]
async fn keep_alive_reports_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    let grant = node.lease_grant(20, 0).await.expect("grant");
    let keep = node.lease_keep_alive(grant.id).await.expect("keepalive");
    assert_eq!((keep.id, keep.ttl), (grant.id, 20));
    assert!(keep.revision >= 1);
    let unknown = node.lease_keep_alive(123_456).await.expect("keepalive");
    assert_eq!(unknown.ttl, 0);
    node.close().await.expect("close");
}

/// An expired lease is revoked by the node itself, on the real clock: its
/// keys vanish within TTL + 1 s, not before the TTL; keepalives postpone it.
#[tokio::test]
async fn leases_expire_on_the_real_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path());
    config.lease_min_ttl_secs = 1;
    let node = Node::open(config).await.expect("open");

    let kept = node.lease_grant(1, 0).await.expect("grant kept");
    put_with_lease(&node, "kept", kept.id).await.expect("put");
    let grant = node.lease_grant(1, 0).await.expect("grant");
    assert_eq!(grant.ttl, 1, "TTL 1 is allowed with a 1 s minimum");
    let granted_at = Instant::now();
    put_with_lease(&node, "short", grant.id).await.expect("put");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        node.get("short").await.expect("get").is_some(),
        "not revoked before its TTL"
    );
    loop {
        node.lease_keep_alive(kept.id).await.expect("keepalive");
        if node.get("short").await.expect("get").is_none() {
            break;
        }
        assert!(
            granted_at.elapsed() < Duration::from_secs(2),
            "the key of an expired 1 s lease still exists after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ttl = node.lease_time_to_live(grant.id, false).await.expect("ttl");
    assert_eq!(ttl.ttl, -1, "the expired lease is gone");
    assert!(!node
        .lease_leases()
        .await
        .expect("leases")
        .ids
        .contains(&grant.id));

    // The kept-alive lease outlived it.
    assert!(node.get("kept").await.expect("get").is_some());
    assert!(node
        .lease_leases()
        .await
        .expect("leases")
        .ids
        .contains(&kept.id));
    node.close().await.expect("close");
}

/// Leases expire while writes never stop: with concurrent writers the
/// node thread goes from one fsync straight to the next, and its timers
/// must fire all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_under_a_steady_write_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path());
    config.lease_min_ttl_secs = 1;
    let node = Node::open(config).await.expect("open");
    let grant = node.lease_grant(1, 0).await.expect("grant");
    put_with_lease(&node, "short", grant.id).await.expect("put");
    let granted_at = Instant::now();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (node, stop) = (node.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    node.put(format!("load/{w}/{}", i % 100), "x")
                        .await
                        .expect("put under load");
                    i += 1;
                }
                i
            })
        })
        .collect();
    while node.get("short").await.expect("get").is_some() {
        assert!(
            granted_at.elapsed() < Duration::from_secs(3),
            "a 1 s lease still holds its key after 3 s of steady writes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut puts = 0;
    for w in writers {
        puts += w.await.expect("writer");
    }
    assert!(puts > 0, "the writers made progress meanwhile");
    node.close().await.expect("close");
}

/// A lease survives close and reopen with its keys, and its TTL restarts
/// (etcd: no checkpoint was taken, so the full TTL).
#[tokio::test]
async fn lease_survives_restart_with_ttl_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    let grant = node.lease_grant(10, 0).await.expect("grant");
    put_with_lease(&node, "held", grant.id).await.expect("put");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let before = node.lease_time_to_live(grant.id, false).await.expect("ttl");
    assert!(
        before.ttl <= 8,
        "2.2 s of a 10 s lease passed: {}",
        before.ttl
    );
    node.close().await.expect("close");

    let node = Node::open(Config::new(dir.path())).await.expect("reopen");
    assert!(node
        .lease_leases()
        .await
        .expect("leases")
        .ids
        .contains(&grant.id));
    let after = node.lease_time_to_live(grant.id, true).await.expect("ttl");
    assert_eq!(after.granted_ttl, 10);
    assert!(after.ttl >= 9, "the TTL restarted: {}", after.ttl);
    assert_eq!(after.keys, vec![b"held".to_vec()]);
    let revoke = node.lease_revoke(grant.id).await.expect("revoke");
    assert!(revoke.revision > 2);
    assert!(node.get("held").await.expect("get").is_none());
    node.close().await.expect("close");
}

/// Alarms: get answers from memory (filtered by type, as etcd), activate and
/// deactivate go through the log; NOSPACE refuses puts until disarmed.
#[tokio::test]
async fn alarms_activate_get_deactivate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    let get = |alarm: AlarmType| AlarmRequest {
        action: AlarmAction::Get as i32,
        member_id: 0,
        alarm: alarm as i32,
    };
    assert!(node
        .alarm(get(AlarmType::None))
        .await
        .expect("get")
        .alarms
        .is_empty());

    let member = node.member_id().0;
    node.alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: member,
        alarm: AlarmType::Nospace as i32,
    })
    .await
    .expect("activate");
    let all = node.alarm(get(AlarmType::None)).await.expect("get").alarms;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].member_id, all[0].alarm),
        (member, AlarmType::Nospace as i32)
    );
    assert!(node
        .alarm(get(AlarmType::Corrupt))
        .await
        .expect("get")
        .alarms
        .is_empty());
    assert_eq!(
        node.alarm(get(AlarmType::Nospace))
            .await
            .expect("get")
            .alarms
            .len(),
        1
    );
    assert_eq!(
        node.put("k", "v").await.expect_err("nospace"),
        Error::NoSpace
    );

    node.alarm(AlarmRequest {
        action: AlarmAction::Deactivate as i32,
        member_id: member,
        alarm: AlarmType::Nospace as i32,
    })
    .await
    .expect("deactivate");
    assert!(node
        .alarm(get(AlarmType::None))
        .await
        .expect("get")
        .alarms
        .is_empty());
    node.put("k", "v").await.expect("put after disarming");
    node.close().await.expect("close");
}
