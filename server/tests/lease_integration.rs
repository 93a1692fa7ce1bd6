//! etcd's Lease API on the real `t4` process: grant, attach, keep alive,
//! time-to-live, revoke and expiry, with etcd's answers and error texts.

mod common;

use std::time::{Duration, Instant};

use common::{http_get, raw_bidi, revision, status_of, within, Server};
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions,
    WatchOptions,
};
use t4_proto::etcd::{PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse};
use tonic::Code;

const KEEPALIVE_PATH: &str = "/etcdserverpb.Lease/LeaseKeepAlive";

async fn started() -> (tempfile::TempDir, Server, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let c = server.client().await;
    (dir, server, c)
}

/// A granted lease reports its TTL, carries keys put with it, lists them in
/// TimeToLive, and appears in Leases.
#[tokio::test]
async fn granted_lease_carries_keys_and_reports_them() {
    let (_dir, server, mut c) = started().await;
    let grant = c.lease_grant(60, None).await.expect("grant");
    assert_eq!(grant.ttl(), 60);
    assert!(grant.id() > 0, "the node picks a positive id");
    assert!(grant.error().is_empty());
    let id = grant.id();
    c.put("a", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put");
    c.put("b", "2", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put");
    let got = c.get("a", None).await.expect("get");
    assert_eq!(got.kvs()[0].lease(), id);

    let ttl = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live");
    assert_eq!(ttl.id(), id);
    assert_eq!(ttl.granted_ttl(), 60);
    assert!((1..=60).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
    let mut keys = ttl.keys().to_vec();
    keys.sort();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);

    let chosen = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(777)))
        .await
        .expect("grant with id");
    assert_eq!(chosen.id(), 777);
    let leases = c.leases().await.expect("leases");
    let mut ids: Vec<i64> = leases.leases().iter().map(|l| l.id()).collect();
    ids.sort_unstable();
    let mut want = vec![id, 777];
    want.sort_unstable();
    assert_eq!(ids, want);

    let (_, body) = http_get(server.metrics, "/metrics");
    assert!(body.contains("t4_lease_grants_total 2"), "{body}");
    assert!(body.contains("t4_leases 2"), "{body}");
}

/// A keep-alive stream answers each request; an unknown lease gets TTL 0
/// and the stream goes on serving the known one.
#[tokio::test]
async fn keepalive_answers_unknown_leases_with_ttl_zero_and_keeps_serving() {
    let (_dir, server, mut c) = started().await;
    let id = c.lease_grant(30, None).await.expect("grant").id();
    let (tx, mut responses) = raw_bidi::<PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse>(
        &server.endpoint(),
        KEEPALIVE_PATH,
    )
    .await;
    for ask in [id, 424_242, id, -5, id] {
        tx.send(PbLeaseKeepAliveRequest { id: ask })
            .await
            .expect("send");
        let r = within("a keep-alive answer", responses.message())
            .await
            .expect("keep-alive stream error")
            .expect("keep-alive stream ended");
        assert_eq!(r.id, ask);
        if ask == id {
            assert_eq!(r.ttl, 30, "renewed to the full TTL");
        } else {
            assert_eq!(r.ttl, 0, "unknown lease {ask}");
        }
        assert!(r.header.is_some());
    }
}

/// The etcd-client keep-alive helper works end to end.
#[tokio::test]
async fn etcd_client_keepalive_renews_a_lease() {
    let (_dir, _server, mut c) = started().await;
    let id = c.lease_grant(20, None).await.expect("grant").id();
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.expect("keep alive");
    keeper.keep_alive().await.expect("send");
    let r = within("keep-alive", stream.message())
        .await
        .expect("stream")
        .expect("response");
    assert_eq!((r.id(), r.ttl()), (id, 20));
}

/// Revoking a lease deletes every key attached to it, all at one revision.
#[tokio::test]
async fn revoke_deletes_attached_keys_at_one_revision() {
    let (_dir, _server, mut c) = started().await;
    let id = c.lease_grant(60, None).await.expect("grant").id();
    for k in ["r/1", "r/2", "r/3"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(id)))
            .await
            .expect("put");
    }
    c.put("r/free", "v", None).await.expect("put");
    let before = revision(&mut c).await;
    let revoked = c.lease_revoke(id).await.expect("revoke");
    assert_eq!(
        revoked.header().expect("header").revision(),
        before + 1,
        "one revision for all the deletes"
    );
    let left = c
        .get("r/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    let keys: Vec<&[u8]> = left.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, vec![&b"r/free"[..]]);
    let ttl = c.lease_time_to_live(id, None).await.expect("time to live");
    assert_eq!((ttl.ttl(), ttl.granted_ttl()), (-1, 0), "gone: TTL -1");
}

/// Revoking an unknown lease fails NotFound with etcd's text.
#[tokio::test]
async fn revoke_of_unknown_lease_is_not_found() {
    let (_dir, _server, mut c) = started().await;
    let s = status_of(c.lease_revoke(123_456).await.expect_err("unknown"));
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
}

/// Bad grants are refused with etcd's codes and change nothing: negative
/// TTL, TTL too large, an id already in use.
#[tokio::test]
async fn bad_grants_are_refused_with_etcds_codes() {
    let (_dir, _server, mut c) = started().await;
    let before = revision(&mut c).await;
    let s = status_of(c.lease_grant(-1, None).await.expect_err("negative ttl"));
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = status_of(
        c.lease_grant(9_000_000_001, None)
            .await
            .expect_err("too large"),
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::OutOfRange, "etcdserver: too large lease TTL")
    );
    c.lease_grant(10, Some(LeaseGrantOptions::new().with_id(5)))
        .await
        .expect("grant");
    let s = status_of(
        c.lease_grant(10, Some(LeaseGrantOptions::new().with_id(5)))
            .await
            .expect_err("id in use"),
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::FailedPrecondition, "etcdserver: lease already exists")
    );
    let leases = c.leases().await.expect("leases");
    assert_eq!(leases.leases().len(), 1, "only the good grant");
    assert!(revision(&mut c).await >= before);
}

/// A put naming an unknown lease fails NotFound and writes nothing.
#[tokio::test]
async fn put_with_unknown_lease_is_not_found_and_changes_nothing() {
    let (_dir, _server, mut c) = started().await;
    let before = revision(&mut c).await;
    let s = status_of(
        c.put("k", "v", Some(PutOptions::new().with_lease(999)))
            .await
            .expect_err("unknown lease"),
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    assert_eq!(revision(&mut c).await, before, "no revision spent");
    assert!(c.get("k", None).await.expect("get").kvs().is_empty());
}

/// TimeToLive of an unknown lease answers TTL -1 (not an error), as
/// etcd's server does.
#[tokio::test]
async fn time_to_live_of_unknown_lease_is_minus_one() {
    let (_dir, _server, mut c) = started().await;
    let r = c.lease_time_to_live(31_337, None).await.expect("answered");
    assert_eq!((r.id(), r.ttl(), r.granted_ttl()), (31_337, -1, 0));
    assert!(r.keys().is_empty());
}

/// An expired lease's keys vanish within TTL + 1 s, all at one revision,
/// with one delete event per key.
#[tokio::test]
async fn expired_lease_deletes_its_keys_at_one_revision() {
    let (_dir, _server, mut c) = started().await;
    let (mut stream, _) = {
        let mut s = c
            .watch("e/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        let created = within("created", s.message())
            .await
            .expect("stream")
            .expect("response");
        (s, created.watch_id())
    };
    let id = c.lease_grant(2, None).await.expect("grant").id();
    let granted_at = Instant::now();
    for k in ["e/1", "e/2", "e/3"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(id)))
            .await
            .expect("put");
    }
    let mut deletes = Vec::new();
    while deletes.len() < 3 {
        let r = within("expiry events", stream.message())
            .await
            .expect("stream")
            .expect("response");
        for e in r.events() {
            if e.event_type() == EventType::Delete {
                let kv = e.kv().expect("kv");
                deletes.push((kv.key().to_vec(), kv.mod_revision()));
            }
        }
    }
    let took = granted_at.elapsed();
    assert!(
        took <= Duration::from_secs(3) + Duration::from_millis(500),
        "keys vanished after {took:?}"
    );
    deletes.sort();
    assert_eq!(
        deletes
            .iter()
            .map(|(k, _)| k.as_slice())
            .collect::<Vec<_>>(),
        vec![&b"e/1"[..], b"e/2", b"e/3"],
        "one delete per key"
    );
    assert!(
        deletes.iter().all(|(_, rev)| *rev == deletes[0].1),
        "all at one revision: {deletes:?}"
    );
    let left = c
        .get("e/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(left.count(), 0);
}
