//! Watches and revision waits through the embedding API: live events,
//! history replay, cancel, progress, several watches on one stream.

use std::time::Duration;

use t4_io_real::kv::{EventType, WatchCreateRequest};
use t4_io_real::{Config, Node, WatchOutput, WatchStream};

/// Every wait in these tests is bounded: a missing output fails, not hangs.
const WAIT: Duration = Duration::from_secs(10);

async fn next(stream: &mut WatchStream) -> WatchOutput {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch output within 10 s")
        .expect("the stream is open")
}

/// Takes outputs until one with `created`, returning its watch id.
async fn created(stream: &mut WatchStream) -> i64 {
    let out = next(stream).await;
    assert!(out.created, "expected a created answer, got {out:?}");
    assert!(!out.canceled, "{out:?}");
    out.watch_id
}

fn on_key(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        ..WatchCreateRequest::default()
    }
}

/// Takes outputs of `watch_id` until `count` events arrived; returns
/// `(type, key, value, mod_revision)` of each.
async fn events(
    stream: &mut WatchStream,
    watch_id: i64,
    count: usize,
) -> Vec<(i32, Vec<u8>, Vec<u8>, i64)> {
    let mut got = Vec::new();
    while got.len() < count {
        let out = next(stream).await;
        assert_eq!(out.watch_id, watch_id, "{out:?}");
        assert!(!out.canceled, "{out:?}");
        for ev in out.events {
            let kv = ev.kv.expect("an event has its key");
            assert!(
                kv.mod_revision <= out.revision,
                "an event is not newer than its header"
            );
            got.push((ev.r#type, kv.key, kv.value, kv.mod_revision));
        }
    }
    assert_eq!(got.len(), count, "no more events than expected: {got:?}");
    got
}

/// A watch created now sees the next put on its key, not others.
#[tokio::test]
async fn live_put_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    let mut stream = node.watch(on_key("a")).await.expect("watch");
    let id = created(&mut stream).await;
    node.put("other", "x").await.expect("put");
    let put = node.put("a", "1").await.expect("put");
    let got = events(&mut stream, id, 1).await;
    assert_eq!(
        got,
        vec![(
            EventType::Put as i32,
            b"a".to_vec(),
            b"1".to_vec(),
            put.revision
        )]
    );
    node.close().await.expect("close");
    assert!(
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("ends")
            .is_none(),
        "the stream ends when the node closes"
    );
}

/// A watch with a past start revision replays history in order, then goes
/// live.
#[tokio::test]
async fn history_replay_from_start_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    let first = node.put("k/1", "a").await.expect("put").revision;
    node.put("k/2", "b").await.expect("put");
    node.put("k/1", "c").await.expect("put");
    node.delete_range(t4_io_real::kv::DeleteRangeRequest {
        key: b"k/2".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete");

    let mut stream = node
        .watch(WatchCreateRequest {
            key: b"k/".to_vec(),
            range_end: b"k0".to_vec(),
            start_revision: first,
            ..WatchCreateRequest::default()
        })
        .await
        .expect("watch");
    let id = created(&mut stream).await;
    let got = events(&mut stream, id, 4).await;
    let summary: Vec<_> = got.iter().map(|(t, k, _, r)| (*t, k.clone(), *r)).collect();
    assert_eq!(
        summary,
        vec![
            (EventType::Put as i32, b"k/1".to_vec(), first),
            (EventType::Put as i32, b"k/2".to_vec(), first + 1),
            (EventType::Put as i32, b"k/1".to_vec(), first + 2),
            (EventType::Delete as i32, b"k/2".to_vec(), first + 3),
        ]
    );
    assert_eq!(got[2].2, b"c".to_vec());
    let live = node.put("k/3", "d").await.expect("put").revision;
    let got = events(&mut stream, id, 1).await;
    assert_eq!(got[0].3, live, "then live");
    node.close().await.expect("close");
}

/// Cancel ends a watch with a `canceled` answer; later events go to the
/// stream's other watches only.
#[tokio::test]
async fn cancel_stops_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    let mut stream = node.watch_stream().expect("stream");
    stream.create(on_key("a")).expect("create");
    let first = created(&mut stream).await;
    stream.cancel(first).expect("cancel");
    let out = next(&mut stream).await;
    assert!(out.canceled, "{out:?}");
    assert_eq!(out.watch_id, first);

    stream.create(on_key("a")).expect("create");
    let second = created(&mut stream).await;
    assert_ne!(first, second, "watch ids are not reused on a stream");
    node.put("a", "1").await.expect("put");
    let out = next(&mut stream).await;
    assert_eq!(out.watch_id, second, "the cancelled watch gets nothing");
    assert_eq!(out.events.len(), 1);
    node.close().await.expect("close");
}

/// A progress request is answered with the current revision (stream-wide,
/// watch id -1) and no events.
#[tokio::test]
async fn progress_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    node.put("x", "1").await.expect("put");
    let revision = node.put("x", "2").await.expect("put").revision;
    let mut stream = node.watch(on_key("a")).await.expect("watch");
    created(&mut stream).await;
    stream.request_progress().expect("progress");
    let out = next(&mut stream).await;
    assert_eq!(out.watch_id, -1, "{out:?}");
    assert!(out.events.is_empty());
    assert!(!out.created && !out.canceled);
    assert_eq!(out.revision, revision);
    node.close().await.expect("close");
}

/// Two watches on one stream each get their own key's events, in revision
/// order across the stream.
#[tokio::test]
async fn two_watches_on_one_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    let mut stream = node.watch_stream().expect("stream");
    stream.create(on_key("a")).expect("create a");
    let wa = created(&mut stream).await;
    stream.create(on_key("b")).expect("create b");
    let wb = created(&mut stream).await;
    assert_ne!(wa, wb);

    let ra = node.put("a", "1").await.expect("put").revision;
    let rb = node.put("b", "2").await.expect("put").revision;
    let ra2 = node.put("a", "3").await.expect("put").revision;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let out = next(&mut stream).await;
        for ev in out.events {
            let kv = ev.kv.expect("kv");
            seen.push((out.watch_id, kv.key, kv.mod_revision));
        }
    }
    assert_eq!(
        seen,
        vec![
            (wa, b"a".to_vec(), ra),
            (wb, b"b".to_vec(), rb),
            (wa, b"a".to_vec(), ra2),
        ]
    );
    node.close().await.expect("close");
}

/// Many outputs flow through one stream (flow-control reports keep it
/// going past the stream buffer bound), and a dropped stream closes
/// quietly.
#[tokio::test]
async fn many_outputs_and_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path());
    config.watch_stream_buffer_max = 8;
    let node = Node::open(config).await.expect("open");
    let mut stream = node.watch(on_key("n")).await.expect("watch");
    let id = created(&mut stream).await;
    let mut last = 0;
    for i in 0..100 {
        last = node.put("n", format!("{i}")).await.expect("put").revision;
    }
    let got = events(&mut stream, id, 100).await;
    assert_eq!(got.last().map(|e| e.3), Some(last));
    assert!(
        got.windows(2).all(|w| w[0].3 + 1 == w[1].3),
        "no gaps, no duplicates"
    );
    drop(stream);
    node.put("n", "after")
        .await
        .expect("put after the stream closed");
    node.close().await.expect("close");
}

/// `wait_for_revision` resolves at once for a reached revision, waits for
/// a future one, and fails when the node closes first.
#[tokio::test]
async fn wait_for_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(Config::new(dir.path())).await.expect("open");
    node.wait_for_revision(1).await.expect("reached");
    let target = node.current_revision() + 2;
    let waiter = {
        let node = node.clone();
        tokio::spawn(async move { node.wait_for_revision(target).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "resolved before the revision exists");
    node.put("a", "1").await.expect("put");
    node.put("a", "2").await.expect("put");
    tokio::time::timeout(WAIT, waiter)
        .await
        .expect("resolves")
        .expect("task")
        .expect("reached");

    let never = {
        let node = node.clone();
        tokio::spawn(async move { node.wait_for_revision(1_000).await })
    };
    node.close().await.expect("close");
    let result = tokio::time::timeout(WAIT, never)
        .await
        .expect("resolves")
        .expect("task");
    assert!(result.is_err(), "closing fails waiters: {result:?}");
    node.wait_for_revision(3)
        .await
        .expect("a reached revision is still reached after close");
}
