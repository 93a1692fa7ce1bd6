//! etcd's Watch API on the real `t4` process: events, history, cancel,
//! progress, refusals and fragmentation, as etcd clients see them.

mod common;

use common::{http_get, raw_bidi, revision, within, Server};
use etcd_client::{
    Client, EventType, Txn, TxnOp, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use t4_proto::etcd::{PbWatchRequest, PbWatchResponse};

const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

async fn next(stream: &mut WatchStream) -> WatchResponse {
    within("a watch response", stream.message())
        .await
        .expect("watch stream error")
        .expect("watch stream ended")
}

/// Opens a watch and returns the stream and its id, after the `created`
/// answer.
async fn watch(c: &mut Client, key: &str, options: WatchOptions) -> (WatchStream, i64) {
    let mut stream = c.watch(key, Some(options)).await.expect("watch");
    let created = next(&mut stream).await;
    assert!(created.created(), "first response answers the create");
    assert!(!created.canceled(), "{}", created.cancel_reason());
    let id = created.watch_id();
    (stream, id)
}

/// A watch sees puts and deletes of its key, in order, with the previous
/// value when asked, and with etcd's revisions and versions.
#[tokio::test]
async fn watch_delivers_puts_and_deletes_with_prev_kv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let (mut stream, id) = watch(&mut c, "k", WatchOptions::new().with_prev_key()).await;

    c.put("k", "v1", None).await.expect("put");
    c.put("other", "x", None).await.expect("put");
    c.put("k", "v2", None).await.expect("put");
    c.delete("k", None).await.expect("delete");

    let mut events = Vec::new();
    while events.len() < 3 {
        let r = next(&mut stream).await;
        assert_eq!(r.watch_id(), id);
        events.extend(r.events().iter().cloned());
    }
    assert_eq!(events.len(), 3, "only the watched key: {events:?}");
    let (put1, put2, del) = (&events[0], &events[1], &events[2]);
    assert_eq!(put1.event_type(), EventType::Put);
    let kv = put1.kv().expect("kv");
    assert_eq!(
        (kv.value(), kv.version(), kv.mod_revision()),
        (&b"v1"[..], 1, 2)
    );
    assert!(put1.prev_kv().is_none(), "a create has no previous value");
    assert_eq!(put2.kv().expect("kv").value(), b"v2");
    assert_eq!(put2.prev_kv().expect("prev kv").value(), b"v1");
    assert_eq!(del.event_type(), EventType::Delete);
    let kv = del.kv().expect("kv");
    assert_eq!((kv.key(), kv.mod_revision()), (&b"k"[..], 5));
    assert_eq!(del.prev_kv().expect("prev kv").value(), b"v2");
}

/// A prefix watch sees every key under the prefix and nothing else; the
/// NOPUT filter drops puts.
#[tokio::test]
async fn prefix_watch_sees_only_its_prefix_and_filters_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let (mut all, _) = watch(&mut c, "/a/", WatchOptions::new().with_prefix()).await;
    let (mut deletes, _) = watch(
        &mut c,
        "/a/",
        WatchOptions::new()
            .with_prefix()
            .with_filters([WatchFilterType::NoPut]),
    )
    .await;

    c.put("/a/1", "x", None).await.expect("put");
    c.put("/b/1", "x", None).await.expect("put");
    c.put("/a/2", "x", None).await.expect("put");
    c.delete("/a/1", None).await.expect("delete");

    let mut keys = Vec::new();
    while keys.len() < 3 {
        for e in next(&mut all).await.events() {
            keys.push((e.event_type(), e.kv().expect("kv").key().to_vec()));
        }
    }
    assert_eq!(
        keys,
        vec![
            (EventType::Put, b"/a/1".to_vec()),
            (EventType::Put, b"/a/2".to_vec()),
            (EventType::Delete, b"/a/1".to_vec()),
        ]
    );
    let r = next(&mut deletes).await;
    assert_eq!(r.events().len(), 1);
    assert_eq!(r.events()[0].event_type(), EventType::Delete);
}

/// A watch from a past revision replays history in revision order, then
/// continues live, with no gap and no duplicate.
#[tokio::test]
async fn watch_from_a_past_revision_replays_history_then_goes_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    for i in 0..5 {
        c.put(format!("h{i}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    // Revisions 2..=6 hold h0..h4.
    let (mut stream, _) = watch(
        &mut c,
        "h",
        WatchOptions::new().with_prefix().with_start_revision(4),
    )
    .await;
    c.put("h5", "v5", None).await.expect("put");
    let mut revs = Vec::new();
    while revs.len() < 4 {
        for e in next(&mut stream).await.events() {
            revs.push(e.kv().expect("kv").mod_revision());
        }
    }
    assert_eq!(revs, vec![4, 5, 6, 7]);
}

/// Cancelling a watch answers `canceled` and stops its events; cancelling
/// an unknown id changes nothing, and the stream keeps serving.
#[tokio::test]
async fn cancel_stops_a_watch_and_unknown_ids_are_harmless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let (mut stream, id) = watch(&mut c, "a", WatchOptions::new()).await;

    stream.cancel(987_654).await.expect("send cancel");
    stream.cancel(id).await.expect("send cancel");
    let r = next(&mut stream).await;
    assert!(r.canceled(), "cancel is answered: {r:?}");
    assert_eq!(r.watch_id(), id);

    stream
        .watch("b", Some(WatchOptions::new()))
        .await
        .expect("create");
    let created = next(&mut stream).await;
    assert!(created.created());
    let id_b = created.watch_id();
    assert_ne!(id_b, id);
    c.put("a", "x", None).await.expect("put");
    c.put("b", "y", None).await.expect("put");
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), id_b, "no event for the cancelled watch");
    assert_eq!(r.events()[0].kv().expect("kv").key(), b"b");
}

/// A progress request is answered with watch id -1 and the current
/// revision (etcd's stream-wide progress notification).
#[tokio::test]
async fn progress_request_answers_with_watch_id_minus_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    c.put("x", "1", None).await.expect("put");
    let (mut stream, _) = watch(&mut c, "k", WatchOptions::new()).await;
    let rev = revision(&mut c).await;
    stream.request_progress().await.expect("progress");
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), -1);
    assert!(r.events().is_empty());
    assert!(!r.created() && !r.canceled());
    assert_eq!(r.header().expect("header").revision(), rev);
}

/// A range that holds no key (end before start) is refused the way etcd
/// refuses it: created and cancelled at once, with etcd's reason.
#[tokio::test]
async fn empty_range_watch_is_refused_with_etcds_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let mut stream = c
        .watch("b", Some(WatchOptions::new().with_range("a")))
        .await
        .expect("watch");
    let r = next(&mut stream).await;
    assert!(r.created() && r.canceled(), "{r:?}");
    assert_eq!(r.watch_id(), -1);
    assert_eq!(r.cancel_reason(), "mvcc: watcher range is empty");
    // The stream still serves other watches.
    stream
        .watch("k", Some(WatchOptions::new()))
        .await
        .expect("create");
    let created = next(&mut stream).await;
    assert!(created.created() && !created.canceled());
}

/// A watch starting below the compaction watermark is cancelled with the
/// watermark in `compact_revision`, never served with a gap.
#[tokio::test]
async fn compacted_start_revision_cancels_with_compact_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    for i in 0..5 {
        c.put("k", format!("v{i}"), None).await.expect("put");
    }
    c.compact(4, None).await.expect("compact");
    let mut stream = c
        .watch("k", Some(WatchOptions::new().with_start_revision(2)))
        .await
        .expect("watch");
    // etcd answers `created` first, then the cancellation.
    let mut r = next(&mut stream).await;
    if r.created() && !r.canceled() {
        r = next(&mut stream).await;
    }
    assert!(r.canceled(), "{r:?}");
    assert_eq!(r.compact_revision(), 4);
    assert!(r.events().is_empty());
}

/// Every watch in one txn's revision arrives in one response: a
/// revision is never split without `fragment`.
#[tokio::test]
async fn one_revision_arrives_in_one_response() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let (mut stream, _) = watch(&mut c, "t/", WatchOptions::new().with_prefix()).await;
    let ops: Vec<TxnOp> = (0..20)
        .map(|i| TxnOp::put(format!("t/{i:02}"), "v", None))
        .collect();
    c.txn(Txn::new().and_then(ops)).await.expect("txn");
    let r = next(&mut stream).await;
    assert_eq!(r.events().len(), 20, "the whole revision at once");
    let rev = r.events()[0].kv().expect("kv").mod_revision();
    assert!(r
        .events()
        .iter()
        .all(|e| e.kv().expect("kv").mod_revision() == rev));
}

fn create(options: WatchOptions) -> PbWatchRequest {
    options.into()
}

async fn raw_next(stream: &mut tonic::Streaming<PbWatchResponse>) -> PbWatchResponse {
    within("a raw watch response", stream.message())
        .await
        .expect("watch stream error")
        .expect("watch stream ended")
}

/// With `fragment`, a revision bigger than `--max-request-bytes` arrives
/// as several responses, all but the last marked `fragment`, each under
/// the limit, which join back into the whole revision. A watch without
/// `fragment` on the same stream gets the same revision in one response.
#[tokio::test]
async fn fragmented_watch_splits_big_revisions_and_clients_reassemble_them() {
    const LIMIT: usize = 256 * 1024;
    const VALUE_BYTES: usize = 50_000;
    const KEYS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = LIMIT.to_string();
    let mut server = Server::start(&dir.path().join("data"), &["--max-request-bytes", &limit]);
    let mut c = server.client().await;
    let put_all = |fill: u8| {
        Txn::new().and_then(
            (0..KEYS)
                .map(|i| TxnOp::put(format!("big/{i}"), vec![fill; VALUE_BYTES], None))
                .collect::<Vec<_>>(),
        )
    };
    c.txn(put_all(b'a')).await.expect("first txn");

    let (tx, mut stream) =
        raw_bidi::<PbWatchRequest, PbWatchResponse>(&server.endpoint(), WATCH_PATH).await;
    // With prev_kv each event carries two values: 4 × 100 KB > 256 KiB.
    let with_fragment = WatchOptions::new()
        .with_key("big/")
        .with_prefix()
        .with_prev_key()
        .with_fragment();
    tx.send(create(with_fragment)).await.expect("send");
    let created = raw_next(&mut stream).await;
    assert!(created.created && !created.canceled);
    let fragmented_id = created.watch_id;
    let whole = WatchOptions::new()
        .with_key("big/")
        .with_prefix()
        .with_prev_key();
    tx.send(create(whole)).await.expect("send");
    let created = raw_next(&mut stream).await;
    assert!(created.created && !created.canceled);
    let whole_id = created.watch_id;

    c.txn(put_all(b'b')).await.expect("second txn");

    let mut parts = Vec::new();
    let mut whole_resp = None;
    while whole_resp.is_none() || parts.last().is_none_or(|p: &PbWatchResponse| p.fragment) {
        let r = raw_next(&mut stream).await;
        if r.watch_id == fragmented_id {
            parts.push(r);
        } else {
            assert_eq!(r.watch_id, whole_id);
            whole_resp = Some(r);
        }
    }
    let whole_resp = whole_resp.expect("loop ends with it");
    assert!(!whole_resp.fragment);
    assert_eq!(whole_resp.events.len(), KEYS, "unfragmented: all at once");
    assert!(parts.len() > 1, "split into {} parts", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.fragment, i + 1 < parts.len(), "fragment flag of part {i}");
        assert!(
            prost::Message::encoded_len(p) < LIMIT || p.events.len() == 1,
            "part {i} is {} bytes",
            prost::Message::encoded_len(p)
        );
    }
    let joined: Vec<_> = parts.into_iter().flat_map(|p| p.events).collect();
    assert_eq!(
        joined, whole_resp.events,
        "fragments join into the revision"
    );
    assert!(joined.iter().all(|e| e
        .prev_kv
        .as_ref()
        .is_some_and(|p| p.value == vec![b'a'; VALUE_BYTES])));
}

/// A request without a body is ignored (as etcd), not an error that ends
/// the stream.
#[tokio::test]
async fn watch_request_without_a_body_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let (tx, mut stream) =
        raw_bidi::<PbWatchRequest, PbWatchResponse>(&server.endpoint(), WATCH_PATH).await;
    tx.send(PbWatchRequest::default()).await.expect("send");
    tx.send(create(WatchOptions::new().with_key("k")))
        .await
        .expect("send");
    let created = raw_next(&mut stream).await;
    assert!(created.created && !created.canceled);
    c.put("k", "v", None).await.expect("put");
    let r = raw_next(&mut stream).await;
    assert_eq!(r.events.len(), 1);
}

/// A negative start revision is refused as etcd refuses it: created,
/// cancelled, watch id -1, the "compacted" reason.
#[tokio::test]
async fn negative_start_revision_is_refused_as_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let _c = server.client().await;
    let (tx, mut stream) =
        raw_bidi::<PbWatchRequest, PbWatchResponse>(&server.endpoint(), WATCH_PATH).await;
    tx.send(create(
        WatchOptions::new().with_key("k").with_start_revision(-3),
    ))
    .await
    .expect("send");
    let r = raw_next(&mut stream).await;
    assert!(r.created && r.canceled);
    assert_eq!(r.watch_id, -1);
    assert_eq!(
        r.cancel_reason,
        "etcdserver: mvcc: required revision has been compacted"
    );
}

/// `/metrics` counts open watch streams and watchers, and forgets them
/// when the client goes away.
#[tokio::test]
async fn metrics_count_watch_streams_and_watchers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.client().await;
    let gauge = |name: &str| -> i64 {
        let (_, body) = http_get(server.metrics, "/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
    };
    let (stream, _) = watch(&mut c, "k", WatchOptions::new()).await;
    assert_eq!(gauge("t4_watch_streams"), 1);
    assert_eq!(gauge("t4_watchers"), 1);
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gauge("t4_watch_streams") != 0 || gauge("t4_watchers") != 0 {
        assert!(std::time::Instant::now() < deadline, "gauges never fell");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The connection itself outlives the stream and still serves.
    c.get("k", None).await.expect("get");
}

/// `--watch-progress-notify-interval` reaches the node: an idle watch that
/// asked for progress notifications gets one (its own id, no events, the
/// current revision) within about one interval.
#[tokio::test]
async fn idle_watch_gets_progress_notifications_at_the_configured_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(
        &dir.path().join("data"),
        &["--watch-progress-notify-interval", "1s"],
    );
    let mut c = server.client().await;
    c.put("x", "1", None).await.expect("put");
    let rev = revision(&mut c).await;
    let (mut stream, id) = watch(&mut c, "k", WatchOptions::new().with_progress_notify()).await;
    let started = std::time::Instant::now();
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), id);
    assert!(r.events().is_empty(), "a progress notification: {r:?}");
    assert_eq!(r.header().expect("header").revision(), rev);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
