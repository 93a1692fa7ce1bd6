//! The way the Kubernetes API server uses etcd, end to end through the
//! `etcd-client` crate against the real `t4` process: list at a revision
//! with `limit` paging, watch from that revision + 1 with progress
//! notifications, optimistic updates by txn on `mod_revision`,
//! create-if-absent, deletes with `prev_kv`, periodic compaction, and the
//! re-list a compacted watch forces.

mod common;

use std::time::Duration;

use common::Server;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, TxnOp, TxnOpResponse, WatchOptions,
    WatchResponse, WatchStream,
};
use etcd_client::{Txn, TxnResponse};

const PREFIX: &str = "/registry/pods/default/";
const PAGE: i64 = 3;

fn pod(i: usize) -> String {
    format!("{PREFIX}pod-{i:02}")
}

/// One `WatchResponse`, failing the test instead of hanging.
async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch response within 10 s")
        .expect("watch stream healthy")
        .expect("watch stream still open")
}

/// The Kubernetes list: pages of `PAGE` keys, every page read at the
/// revision of the first one, continuing after the last key seen.
async fn list(c: &mut Client) -> (i64, Vec<(String, i64)>) {
    let end = format!("{PREFIX}\u{ff}").into_bytes();
    let mut key = PREFIX.as_bytes().to_vec();
    let mut revision = 0;
    let mut items = Vec::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE)
            .with_revision(revision);
        let resp = c.get(key.clone(), Some(options)).await.expect("list page");
        let header_revision = resp.header().expect("header").revision();
        if revision == 0 {
            revision = header_revision;
        }
        assert!(resp.kvs().len() as i64 <= PAGE, "a page respects the limit");
        for kv in resp.kvs() {
            items.push((kv.key_str().expect("utf-8").to_owned(), kv.mod_revision()));
        }
        if !resp.more() {
            break;
        }
        let last = resp.kvs().last().expect("more implies a key").key();
        key = [last, &[0u8][..]].concat();
    }
    (revision, items)
}

/// Kubernetes' GuaranteedUpdate: read, then write only if nobody wrote in
/// between (compare `mod_revision`); on conflict the failure branch returns
/// the current object.
async fn update(c: &mut Client, key: &str, seen_mod: i64, value: &str) -> TxnResponse {
    let txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, seen_mod)])
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)]);
    c.txn(txn).await.expect("txn")
}

/// List, watch from list revision + 1, optimistic updates, create-if-absent,
/// delete: the watcher sees exactly the writes after the list, in order,
/// each once, with prev_kv on the delete; a progress request on an idle,
/// synced stream is answered with the current revision.
#[tokio::test]
async fn list_watch_update_delete_as_kubernetes_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;

    for i in 0..10 {
        c.put(pod(i), format!("spec-{i}"), None)
            .await
            .expect("create pod");
    }
    // An unrelated write, which must not show up in the pods watch.
    c.put("/registry/nodes/n1", "node", None)
        .await
        .expect("put node");

    let (list_rev, items) = list(&mut c).await;
    assert_eq!(items.len(), 10, "paging returns every pod once");
    assert_eq!(list_rev, 12, "10 pods + 1 node after revision 1");
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "pages come in key order");

    let mut watch = c
        .watch(
            PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(list_rev + 1)
                    .with_progress_notify()
                    .with_prev_key(),
            ),
        )
        .await
        .expect("watch");
    let created = next(&mut watch).await;
    assert!(created.created(), "the first response confirms the watch");
    let watch_id = created.watch_id();

    // Optimistic update: succeeds with the mod_revision just listed…
    let (key3, mod3) = items[3].clone();
    let ok = update(&mut c, &key3, mod3, "spec-3-v2").await;
    assert!(ok.succeeded(), "update with a fresh mod_revision succeeds");
    // …and the same stale mod_revision now conflicts, returning the object.
    let conflict = update(&mut c, &key3, mod3, "spec-3-lost").await;
    assert!(!conflict.succeeded(), "stale mod_revision conflicts");
    let TxnOpResponse::Get(current) = &conflict.op_responses()[0] else {
        panic!("the failure branch is a get");
    };
    assert_eq!(current.kvs()[0].value(), b"spec-3-v2");

    // Create-if-absent: create_revision == 0 means "does not exist".
    let create = |key: String| {
        Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), "new", None)])
            .or_else([TxnOp::get(key, None)])
    };
    assert!(c.txn(create(pod(10))).await.expect("txn").succeeded());
    assert!(!c.txn(create(pod(10))).await.expect("txn").succeeded());
    c.delete(pod(0), None).await.expect("delete pod-00");

    // Exactly three writes after the list: update, create, delete.
    let mut events = Vec::new();
    while events.len() < 3 {
        let resp = next(&mut watch).await;
        assert_eq!(resp.watch_id(), watch_id);
        assert!(!resp.canceled(), "the watch stays up");
        for e in resp.events() {
            let kv = e.kv().expect("event kv");
            events.push((
                e.event_type(),
                kv.key_str().expect("utf-8").to_owned(),
                kv.mod_revision(),
                e.prev_kv().map(|p| p.value().to_vec()),
            ));
        }
    }
    assert_eq!(
        events,
        vec![
            (EventType::Put, key3.clone(), 13, Some(b"spec-3".to_vec())),
            (EventType::Put, pod(10), 14, None),
            (EventType::Delete, pod(0), 15, Some(b"spec-0".to_vec())),
        ],
        "every write after the list, in order, once, with prev_kv"
    );

    // Bookmark: an idle, synced stream answers a progress request with the
    // current revision (watch id -1 as etcd 3.5 does).
    watch.request_progress().await.expect("progress request");
    let progress = next(&mut watch).await;
    assert!(
        progress.events().is_empty(),
        "a progress response has no events"
    );
    assert_eq!(progress.header().expect("header").revision(), 15);
}

/// Compaction under a watch-based cache: a watch resumed from a compacted
/// revision is created, then cancelled with the compact revision (never a
/// silent gap); one at the compact revision works; the client re-lists and
/// watches again from the new list revision.
#[tokio::test]
async fn compacted_watch_forces_a_relist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    for i in 0..6 {
        c.put(pod(i % 3), format!("v{i}"), None).await.expect("put");
    }
    // Revisions 2..=7 written; Kubernetes compacts what is older than a few minutes.
    c.compact(5, None).await.expect("compact at 5");

    let mut stale = c
        .watch(
            PREFIX,
            Some(WatchOptions::new().with_prefix().with_start_revision(3)),
        )
        .await
        .expect("watch");
    let first = next(&mut stale).await;
    let cancelled = if first.canceled() {
        first
    } else {
        assert!(first.created(), "created first, then cancelled");
        next(&mut stale).await
    };
    assert!(cancelled.canceled(), "a compacted start revision cancels");
    assert_eq!(
        cancelled.compact_revision(),
        5,
        "and says where history begins"
    );

    // At the compact revision itself history is still there (T4 bug #163).
    let mut at = c
        .watch(
            PREFIX,
            Some(WatchOptions::new().with_prefix().with_start_revision(5)),
        )
        .await
        .expect("watch");
    assert!(next(&mut at).await.created());
    let replay = next(&mut at).await;
    assert!(!replay.canceled());
    let revs: Vec<i64> = replay
        .events()
        .iter()
        .map(|e| e.kv().expect("kv").mod_revision())
        .collect();
    assert_eq!(
        revs.first(),
        Some(&5),
        "replay starts at the compact revision"
    );

    // Re-list, then watch from the new list revision + 1.
    let (list_rev, items) = list(&mut c).await;
    assert_eq!((list_rev, items.len()), (7, 3));
    let mut fresh = c
        .watch(
            PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(list_rev + 1),
            ),
        )
        .await
        .expect("watch");
    assert!(next(&mut fresh).await.created());
    c.put(pod(1), "after-relist", None).await.expect("put");
    let resp = next(&mut fresh).await;
    assert_eq!(resp.events().len(), 1);
    assert_eq!(resp.events()[0].kv().expect("kv").mod_revision(), 8);
}
