//! Exact output sequences of the watch hub, driven with a real MVCC store on
//! `MemEngine` (and once through the node).

use std::cell::Cell;

use super::*;
use crate::engine::{EngineError, MemEngine, ScanIter};
use crate::kv::{
    CompactionRequest, DeleteRangeRequest, KeyValue, Op, PutRequest, RequestOp, TxnRequest,
    WriteRequest,
};
use crate::log::Entry;
use crate::mvcc::Store;
use crate::types::{Index, Term};

/// Counts every engine read the hub makes.
struct Counting<'a> {
    inner: &'a MemEngine,
    reads: &'a Cell<u64>,
}

impl KvRead for Counting<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.get(key)
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        self.reads.set(self.reads.get() + 1);
        self.inner.scan(start, end)
    }
}

/// A store and a hub, stepped by hand.
struct Fx {
    engine: MemEngine,
    store: Store,
    hub: WatchHub,
    index: u64,
    now: Time,
    reads: Cell<u64>,
}

const S: StreamId = StreamId(1);

impl Fx {
    fn new() -> Fx {
        Fx::with(WatchConfig::default())
    }

    fn with(config: WatchConfig) -> Fx {
        let engine = MemEngine::new();
        let store = Store::open(&engine).expect("open");
        let mut fx = Fx {
            engine,
            store,
            hub: WatchHub::new(config),
            index: 0,
            now: Time(0),
            reads: Cell::new(0),
        };
        assert_eq!(fx.input(WatchInput::OpenStream { stream: S }), vec![]);
        fx
    }

    fn meta(&self) -> Meta {
        *self.store.meta()
    }

    fn drain(&mut self) -> Vec<WatchOutput> {
        let out = std::iter::from_fn(|| self.hub.poll_output()).collect();
        self.hub.check_invariants();
        out
    }

    /// Applies `w` (it must succeed) and feeds its events to the hub.
    fn write(&mut self, w: WriteRequest) -> Vec<WatchOutput> {
        self.index += 1;
        let entry = Entry::write(Term(1), Index(self.index), w);
        let applied = self.store.apply(&self.engine, &entry).expect("apply");
        assert!(applied.result.is_ok(), "{:?}", applied.result);
        let meta = self.meta();
        self.hub.on_applied(self.now, &meta, &applied.events);
        self.drain()
    }

    fn put(&mut self, key: &str, value: &str) -> Vec<WatchOutput> {
        self.write(WriteRequest::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        }))
    }

    fn delete(&mut self, key: &str) -> Vec<WatchOutput> {
        self.write(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..DeleteRangeRequest::default()
        }))
    }

    fn compact(&mut self, revision: i64) -> Vec<WatchOutput> {
        self.write(WriteRequest::Compaction(CompactionRequest {
            revision,
            physical: false,
        }))
    }

    fn input(&mut self, input: WatchInput) -> Vec<WatchOutput> {
        let meta = self.meta();
        let view = Counting {
            inner: &self.engine,
            reads: &self.reads,
        };
        self.hub.handle(self.now, input, &view, &meta);
        self.drain()
    }

    fn create(&mut self, req: WatchCreateRequest) -> Vec<WatchOutput> {
        self.input(WatchInput::Create { stream: S, req })
    }

    fn consumed(&mut self, outputs: usize) -> Vec<WatchOutput> {
        self.input(WatchInput::Consumed { stream: S, outputs })
    }

    fn timeout(&mut self) -> Vec<WatchOutput> {
        let meta = self.meta();
        let view = Counting {
            inner: &self.engine,
            reads: &self.reads,
        };
        self.hub.handle_timeout(self.now, &view, &meta);
        self.drain()
    }

    /// Runs the timeouts due now until none is.
    fn settle(&mut self) -> Vec<WatchOutput> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match self.hub.poll_timeout() {
                Some(at) if at <= self.now => out.extend(self.timeout()),
                _ => return out,
            }
        }
        panic!("catch-up does not finish");
    }
}

fn watch(key: &str, range_end: &[u8]) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        ..WatchCreateRequest::default()
    }
}

fn from_rev(mut req: WatchCreateRequest, start_revision: i64) -> WatchCreateRequest {
    req.start_revision = start_revision;
    req
}

fn created(watch_id: i64, revision: i64) -> WatchOutput {
    WatchOutput {
        stream: S,
        watch_id,
        revision,
        created: true,
        ..WatchOutput::default()
    }
}

fn refused(reason: &str, revision: i64) -> WatchOutput {
    WatchOutput {
        stream: S,
        watch_id: -1,
        revision,
        created: true,
        canceled: true,
        cancel_reason: reason.into(),
        ..WatchOutput::default()
    }
}

fn canceled(watch_id: i64, revision: i64, compact_revision: i64) -> WatchOutput {
    WatchOutput {
        stream: S,
        watch_id,
        revision,
        canceled: true,
        compact_revision,
        ..WatchOutput::default()
    }
}

fn progress(watch_id: i64, revision: i64) -> WatchOutput {
    WatchOutput {
        stream: S,
        watch_id,
        revision,
        ..WatchOutput::default()
    }
}

fn out(watch_id: i64, revision: i64, events: Vec<Event>) -> WatchOutput {
    WatchOutput {
        stream: S,
        watch_id,
        revision,
        events,
        ..WatchOutput::default()
    }
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        value: value.into(),
        lease: 0,
    }
}

fn put_ev(kv: KeyValue) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(kv),
        prev_kv: None,
    }
}

fn del_ev(key: &str, revision: i64) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.into(),
            mod_revision: revision,
            ..KeyValue::default()
        }),
        prev_kv: None,
    }
}

fn with_prev(mut event: Event, prev: KeyValue) -> Event {
    event.prev_kv = Some(prev);
    event
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        op: Some(Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })),
    }
}

fn delete_op(key: &str) -> RequestOp {
    RequestOp {
        op: Some(Op::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..DeleteRangeRequest::default()
        })),
    }
}

/// A create is answered `created` at the current revision; a put on the key
/// follows as one output; other keys send nothing.
#[test]
fn create_then_live_put() {
    let mut fx = Fx::new();
    assert_eq!(fx.create(watch("a", b"")), vec![created(0, 1)]);
    assert_eq!(
        fx.put("a", "1"),
        vec![out(0, 2, vec![put_ev(kv("a", "1", 2, 2, 1))])]
    );
    assert_eq!(fx.put("b", "1"), vec![]);
    assert_eq!(fx.put("ab", "1"), vec![]);
    assert_eq!(
        fx.put("a", "2"),
        vec![out(0, 5, vec![put_ev(kv("a", "2", 2, 5, 2))])]
    );
    assert_eq!(fx.reads.get(), 0, "live delivery reads nothing");
}

/// Automatic ids follow etcd's `nextID` (never reused by the counter);
/// a client id in use is refused with etcd's text and watch id -1.
#[test]
fn watch_ids_auto_and_client_chosen() {
    let mut fx = Fx::new();
    assert_eq!(fx.create(watch("a", b"")), vec![created(0, 1)]);
    assert_eq!(fx.create(watch("a", b"")), vec![created(1, 1)]);
    let mut req = watch("a", b"");
    req.watch_id = 3;
    assert_eq!(fx.create(req.clone()), vec![created(3, 1)]);
    assert_eq!(fx.create(req), vec![refused(ERR_DUPLICATE_ID, 1)]);
    assert_eq!(
        fx.input(WatchInput::Cancel {
            stream: S,
            watch_id: 1
        }),
        vec![canceled(1, 1, 0)]
    );
    assert_eq!(fx.create(watch("a", b"")), vec![created(2, 1)]);
    assert_eq!(
        fx.create(watch("a", b"")),
        vec![created(4, 1)],
        "3 is in use: skipped"
    );
    let mut again = watch("a", b"");
    again.watch_id = 1;
    assert_eq!(
        fx.create(again),
        vec![created(1, 1)],
        "a freed id may be chosen"
    );
    assert_eq!(
        ERR_DUPLICATE_ID,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
}

/// Prefix, from-key and interval ranges match exactly their keys.
#[test]
fn prefix_from_key_and_interval() {
    let mut fx = Fx::new();
    assert_eq!(fx.create(watch("a", b"b")), vec![created(0, 1)]);
    assert_eq!(fx.create(watch("b", b"\x00")), vec![created(1, 1)]);
    assert_eq!(fx.create(watch("ab", b"c")), vec![created(2, 1)]);
    let a = put_ev(kv("a", "x", 2, 2, 1));
    assert_eq!(fx.put("a", "x"), vec![out(0, 2, vec![a])]);
    let ab = put_ev(kv("ab", "x", 3, 3, 1));
    assert_eq!(
        fx.put("ab", "x"),
        vec![out(0, 3, vec![ab.clone()]), out(2, 3, vec![ab])]
    );
    let b = put_ev(kv("b", "x", 4, 4, 1));
    assert_eq!(
        fx.put("b", "x"),
        vec![out(1, 4, vec![b.clone()]), out(2, 4, vec![b])]
    );
    let zz = put_ev(kv("zz", "x", 5, 5, 1));
    assert_eq!(fx.put("zz", "x"), vec![out(1, 5, vec![zz])]);
}

/// etcd 3.4: `etcdctl watch b a` → "watch was canceled (mvcc: watcher range is empty)".
#[test]
fn range_end_below_key_is_refused() {
    let mut fx = Fx::new();
    assert_eq!(
        fx.create(watch("b", b"a")),
        vec![refused("mvcc: watcher range is empty", 1)]
    );
    assert_eq!(
        fx.create(watch("b", b"b")),
        vec![refused(ERR_EMPTY_RANGE, 1)]
    );
    assert_eq!(fx.hub.watcher_count(), 0);
    assert_eq!(
        fx.create(watch("b", b"")),
        vec![created(0, 1)],
        "id 0 still free"
    );
}

/// NOPUT drops puts, NODELETE drops deletes; a revision whose events are all
/// filtered sends nothing.
#[test]
fn filters_drop_event_kinds() {
    let mut fx = Fx::new();
    let mut no_put = watch("a", b"\x00");
    no_put.filters = vec![WatchFilter::Noput as i32];
    let mut no_delete = watch("a", b"\x00");
    no_delete.filters = vec![WatchFilter::Nodelete as i32];
    assert_eq!(fx.create(no_put), vec![created(0, 1)]);
    assert_eq!(fx.create(no_delete), vec![created(1, 1)]);
    let a = put_ev(kv("a", "x", 2, 2, 1));
    assert_eq!(fx.put("a", "x"), vec![out(1, 2, vec![a])]);
    assert_eq!(fx.delete("a"), vec![out(0, 3, vec![del_ev("a", 3)])]);
    // A txn putting b and deleting nothing else: NOPUT sees nothing.
    let b = put_ev(kv("b", "y", 4, 4, 1));
    assert_eq!(fx.put("b", "y"), vec![out(1, 4, vec![b])]);
}

/// `prev_kv` only for watchers that asked; a delete's kv is `{key, mod_revision}`.
#[test]
fn prev_kv_only_when_asked() {
    let mut fx = Fx::new();
    let mut with = watch("a", b"");
    with.prev_kv = true;
    assert_eq!(fx.create(with), vec![created(0, 1)]);
    assert_eq!(fx.create(watch("a", b"")), vec![created(1, 1)]);
    let first = kv("a", "1", 2, 2, 1);
    assert_eq!(
        fx.put("a", "1"),
        vec![
            out(0, 2, vec![put_ev(first.clone())]),
            out(1, 2, vec![put_ev(first.clone())])
        ]
    );
    let second = kv("a", "2", 2, 3, 2);
    assert_eq!(
        fx.put("a", "2"),
        vec![
            out(0, 3, vec![with_prev(put_ev(second.clone()), first)]),
            out(1, 3, vec![put_ev(second.clone())])
        ]
    );
    assert_eq!(
        fx.delete("a"),
        vec![
            out(0, 4, vec![with_prev(del_ev("a", 4), second)]),
            out(1, 4, vec![del_ev("a", 4)])
        ]
    );
}

/// All events of a txn reach a watcher in one output, in txn order.
#[test]
fn txn_is_one_output_in_txn_order() {
    let mut fx = Fx::new();
    fx.put("c", "0");
    assert_eq!(fx.create(watch("", b"\x00")), vec![created(0, 2)]);
    assert_eq!(fx.create(watch("a", b"")), vec![created(1, 2)]);
    let txn = TxnRequest {
        compare: vec![],
        success: vec![put_op("b", "1"), put_op("a", "1"), delete_op("c")],
        failure: vec![],
    };
    assert_eq!(
        fx.write(WriteRequest::Txn(txn)),
        vec![
            out(
                0,
                3,
                vec![
                    put_ev(kv("b", "1", 3, 3, 1)),
                    put_ev(kv("a", "1", 3, 3, 1)),
                    del_ev("c", 3)
                ]
            ),
            out(1, 3, vec![put_ev(kv("a", "1", 3, 3, 1))]),
        ]
    );
}

/// A txn may put a key and delete it later (nested txns pass etcd's
/// duplicate-key check); the delete's `prev_kv` is the key before the txn
/// (etcd reads it at `mod_revision - 1`), live and from history alike.
#[test]
fn put_then_delete_in_one_txn_prev_kv_as_etcd() {
    let mut fx = Fx::new();
    fx.put("a", "0"); // 2
    let mut req = watch("a", b"");
    req.prev_kv = true;
    assert_eq!(fx.create(req.clone()), vec![created(0, 2)]);
    let nested = |op: RequestOp| RequestOp {
        op: Some(Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![op],
            failure: vec![],
        })),
    };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![nested(put_op("a", "1")), nested(delete_op("a"))],
        failure: vec![],
    };
    let before = kv("a", "0", 2, 2, 1);
    let want = vec![
        with_prev(put_ev(kv("a", "1", 2, 3, 2)), before.clone()),
        with_prev(del_ev("a", 3), before),
    ];
    assert_eq!(
        fx.write(WriteRequest::Txn(txn)),
        vec![out(0, 3, want.clone())]
    );
    assert_eq!(fx.create(from_rev(req, 3)), vec![created(1, 3)]);
    assert_eq!(fx.settle(), vec![out(1, 3, want)]);
}

/// A start revision in the past replays history (rebuilt from the engine,
/// `prev_kv` included) in one output, then goes live.
#[test]
fn history_replay_then_live() {
    let mut fx = Fx::new();
    fx.put("a", "1"); // 2
    fx.put("b", "1"); // 3
    fx.put("a", "2"); // 4
    fx.delete("a"); // 5
    let mut req = from_rev(watch("", b"\x00"), 3);
    req.prev_kv = true;
    assert_eq!(fx.create(req), vec![created(0, 5)]);
    assert_eq!(fx.reads.get(), 0, "a create reads nothing");
    assert_eq!(
        fx.hub.poll_timeout(),
        Some(fx.now),
        "catch-up is due at once"
    );
    let a1 = kv("a", "1", 2, 2, 1);
    let a2 = kv("a", "2", 2, 4, 2);
    assert_eq!(
        fx.settle(),
        vec![out(
            0,
            5,
            vec![
                put_ev(kv("b", "1", 3, 3, 1)),
                with_prev(put_ev(a2.clone()), a1),
                with_prev(del_ev("a", 5), a2),
            ]
        )]
    );
    assert_eq!(fx.hub.poll_timeout(), None);
    assert_eq!(
        fx.put("a", "3"),
        vec![out(0, 6, vec![put_ev(kv("a", "3", 6, 6, 1))])]
    );
}

/// History is read in chunks of whole revisions (a big txn is never split),
/// one chunk per timeout.
#[test]
fn history_chunks_keep_revisions_whole() {
    let mut fx = Fx::with(WatchConfig {
        catch_up_events_max: 2,
        ..WatchConfig::default()
    });
    let txn = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "t"), put_op("b", "t"), put_op("c", "t")],
        failure: vec![],
    };
    fx.write(WriteRequest::Txn(txn)); // 2
    fx.put("d", "1"); // 3
    fx.put("e", "1"); // 4
    fx.put("f", "1"); // 5
    assert_eq!(
        fx.create(from_rev(watch("", b"\x00"), 2)),
        vec![created(0, 5)]
    );
    let t = |k: &str| put_ev(kv(k, "t", 2, 2, 1));
    let one = |k: &str, r: i64| put_ev(kv(k, "1", r, r, 1));
    assert_eq!(fx.timeout(), vec![out(0, 5, vec![t("a"), t("b"), t("c")])]);
    assert_eq!(fx.hub.poll_timeout(), Some(fx.now));
    assert_eq!(
        fx.timeout(),
        vec![out(0, 5, vec![one("d", 3), one("e", 4)])]
    );
    assert_eq!(fx.timeout(), vec![out(0, 5, vec![one("f", 5)])]);
    assert_eq!(fx.hub.poll_timeout(), None, "synced");
}

/// The compaction watermark itself is readable: a watch from it works
/// (events at the watermark come without `prev_kv`, as etcd, whose read at
/// `mod_revision - 1` is compacted).
#[test]
fn start_at_compact_watermark_works() {
    let mut fx = Fx::new();
    fx.put("a", "1"); // 2
    fx.put("a", "2"); // 3
    fx.put("b", "1"); // 4
    fx.put("a", "3"); // 5
    fx.compact(3);
    let mut req = from_rev(watch("", b"\x00"), 3);
    req.prev_kv = true;
    assert_eq!(fx.create(req), vec![created(0, 5)]);
    let a2 = kv("a", "2", 2, 3, 2);
    assert_eq!(
        fx.settle(),
        vec![out(
            0,
            5,
            vec![
                put_ev(a2.clone()),
                put_ev(kv("b", "1", 4, 4, 1)),
                with_prev(put_ev(kv("a", "3", 2, 5, 3)), a2),
            ]
        )]
    );
}

/// Replay from the watermark skips a put that its own revision then
/// deleted (compaction dropped its version, as etcd's does); the delete and
/// the other events of the revision still come.
#[test]
fn replay_from_watermark_skips_a_put_its_revision_deleted() {
    let mut fx = Fx::new();
    fx.put("a", "0"); // 2
    let nested = |op: RequestOp| RequestOp {
        op: Some(Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![op],
            failure: vec![],
        })),
    };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            nested(put_op("b", "1")),
            nested(put_op("c", "1")),
            nested(delete_op("b")),
        ],
        failure: vec![],
    };
    fx.write(WriteRequest::Txn(txn)); // 3
    fx.compact(3);
    assert_eq!(
        fx.create(from_rev(watch("", b"\x00"), 3)),
        vec![created(0, 3)]
    );
    assert_eq!(
        fx.settle(),
        vec![out(
            0,
            3,
            vec![put_ev(kv("c", "1", 3, 3, 1)), del_ev("b", 3)]
        )]
    );
}

/// Below the watermark: created, then cancelled with `compact_revision`.
#[test]
fn start_below_watermark_is_created_then_cancelled() {
    let mut fx = Fx::new();
    fx.put("a", "1");
    fx.put("a", "2");
    fx.put("a", "3");
    fx.compact(3);
    assert_eq!(
        fx.create(from_rev(watch("a", b""), 2)),
        vec![created(0, 4), canceled(0, 4, 3)]
    );
    assert_eq!(fx.hub.watcher_count(), 0);
    assert_eq!(fx.settle(), vec![]);
}

/// A watcher catching up whose history is compacted before it is read is
/// cancelled with `compact_revision`, never skipped forward.
#[test]
fn compaction_before_catch_up_cancels() {
    let mut fx = Fx::new();
    fx.put("a", "1"); // 2
    fx.put("a", "2"); // 3
    fx.put("a", "3"); // 4
    assert_eq!(fx.create(from_rev(watch("a", b""), 2)), vec![created(0, 4)]);
    assert_eq!(fx.compact(3), vec![canceled(0, 4, 3)]);
    assert_eq!(fx.settle(), vec![]);
    assert_eq!(fx.hub.watcher_count(), 0);
}

/// A start revision in the future waits for it.
#[test]
fn future_start_revision_waits() {
    let mut fx = Fx::new();
    assert_eq!(fx.create(from_rev(watch("a", b""), 4)), vec![created(0, 1)]);
    assert_eq!(fx.put("a", "1"), vec![]);
    assert_eq!(fx.put("a", "2"), vec![]);
    assert_eq!(fx.put("b", "2"), vec![]);
    assert_eq!(
        fx.put("a", "3"),
        vec![out(0, 5, vec![put_ev(kv("a", "3", 2, 5, 3))])]
    );
}

/// Cancel answers `canceled` at the current revision; an unknown id is ignored.
#[test]
fn cancel_known_and_unknown() {
    let mut fx = Fx::new();
    fx.create(watch("a", b""));
    assert_eq!(
        fx.input(WatchInput::Cancel {
            stream: S,
            watch_id: 7
        }),
        vec![]
    );
    fx.put("x", "1");
    assert_eq!(
        fx.input(WatchInput::Cancel {
            stream: S,
            watch_id: 0
        }),
        vec![canceled(0, 2, 0)]
    );
    assert_eq!(fx.put("a", "1"), vec![]);
    assert_eq!(
        fx.input(WatchInput::Cancel {
            stream: S,
            watch_id: 0
        }),
        vec![]
    );
}

/// A progress request is answered with watch id -1 when every watcher of the
/// stream is synced, and deferred until they are.
#[test]
fn progress_request_now_or_deferred() {
    let mut fx = Fx::new();
    fx.put("a", "1");
    fx.create(watch("a", b""));
    assert_eq!(
        fx.input(WatchInput::Progress { stream: S }),
        vec![progress(-1, 2)]
    );
    assert_eq!(fx.create(from_rev(watch("a", b""), 2)), vec![created(1, 2)]);
    assert_eq!(fx.input(WatchInput::Progress { stream: S }), vec![]);
    assert_eq!(
        fx.settle(),
        vec![
            out(1, 2, vec![put_ev(kv("a", "1", 2, 2, 1))]),
            progress(-1, 2)
        ]
    );
    assert_eq!(fx.settle(), vec![], "answered once");
}

/// Watchers created with `progress_notify` get `{watch_id, revision}` after
/// an interval without output; any output restarts the interval.
#[test]
fn progress_notify_timer() {
    let mut fx = Fx::with(WatchConfig {
        progress_interval_nanos: 100,
        ..WatchConfig::default()
    });
    let mut req = watch("a", b"");
    req.progress_notify = true;
    fx.create(req);
    fx.create(watch("a", b"")); // no notifications for this one
    assert_eq!(fx.hub.poll_timeout(), Some(Time(100)));
    fx.now = Time(100);
    assert_eq!(fx.timeout(), vec![progress(0, 1)]);
    assert_eq!(fx.hub.poll_timeout(), Some(Time(200)));
    fx.now = Time(150);
    assert_eq!(fx.put("a", "1").len(), 2);
    assert_eq!(fx.hub.poll_timeout(), Some(Time(250)));
    fx.now = Time(200);
    assert_eq!(fx.timeout(), vec![]);
    fx.now = Time(260);
    assert_eq!(fx.timeout(), vec![progress(0, 2)]);
}

/// A full stream stops live delivery; once drained to half, the watcher
/// catches up from history (one output) and is live again.
#[test]
fn slow_consumer_catches_up_from_history() {
    let mut fx = Fx::with(WatchConfig {
        stream_buffer_max: 3,
        ..WatchConfig::default()
    });
    fx.create(watch("a", b"")); // outstanding 1
    let a = |v: &str, r: i64, ver: i64| put_ev(kv("a", v, 2, r, ver));
    assert_eq!(fx.put("a", "1"), vec![out(0, 2, vec![a("1", 2, 1)])]);
    assert_eq!(fx.put("a", "2"), vec![out(0, 3, vec![a("2", 3, 2)])]);
    // Full (3 outstanding): the watcher misses 4 and 5.
    assert_eq!(fx.put("a", "3"), vec![]);
    assert_eq!(fx.put("b", "x"), vec![]);
    assert_eq!(fx.put("a", "4"), vec![]);
    assert_eq!(fx.consumed(1), vec![], "2 outstanding: still stalled");
    assert_eq!(fx.settle(), vec![]);
    assert_eq!(fx.reads.get(), 0);
    assert_eq!(fx.consumed(1), vec![], "drained to half");
    assert_eq!(fx.hub.poll_timeout(), Some(fx.now));
    assert_eq!(
        fx.settle(),
        vec![out(0, 6, vec![a("3", 4, 3), a("4", 6, 4)])]
    );
    assert!(fx.reads.get() > 0, "caught up from the engine");
    assert_eq!(fx.put("a", "5"), vec![out(0, 7, vec![a("5", 7, 5)])]);
}

/// A slow consumer whose missed history is compacted is cancelled with
/// `compact_revision` (a control output, sent even to a stalled stream).
#[test]
fn slow_consumer_compacted_is_cancelled() {
    let mut fx = Fx::with(WatchConfig {
        stream_buffer_max: 2,
        ..WatchConfig::default()
    });
    fx.create(watch("a", b""));
    assert_eq!(fx.put("a", "1").len(), 1);
    assert_eq!(fx.put("a", "2"), vec![], "missed at 3");
    assert_eq!(fx.put("a", "3"), vec![]);
    assert_eq!(fx.compact(4), vec![canceled(0, 4, 4)]);
    fx.consumed(3);
    assert_eq!(fx.settle(), vec![]);
    assert_eq!(fx.hub.watcher_count(), 0);
}

/// Closing a stream drops its watchers and the outputs not yet polled.
#[test]
fn close_stream_drops_watchers_and_outputs() {
    let mut fx = Fx::new();
    fx.create(watch("a", b""));
    fx.index += 1;
    let entry = Entry::write(
        Term(1),
        Index(fx.index),
        WriteRequest::Put(PutRequest {
            key: "a".into(),
            ..PutRequest::default()
        }),
    );
    let applied = fx.store.apply(&fx.engine, &entry).expect("apply");
    let meta = fx.meta();
    fx.hub.on_applied(fx.now, &meta, &applied.events);
    // Not polled yet; the stream closes.
    assert_eq!(fx.input(WatchInput::CloseStream { stream: S }), vec![]);
    assert_eq!(fx.hub.watcher_count(), 0);
    assert_eq!(fx.hub.stream_count(), 0);
    assert_eq!(
        fx.create(watch("a", b"")),
        vec![refused(ERR_STREAM_NOT_OPEN, 2)]
    );
}

/// Fan-out: 1,000 watchers on one prefix (10 streams) each get the put in
/// one output, without a single engine read (`on_applied` has no engine).
#[test]
fn fan_out_to_a_thousand_watchers_reads_nothing() {
    let mut fx = Fx::new();
    for s in 2..=10 {
        fx.input(WatchInput::OpenStream {
            stream: StreamId(s),
        });
    }
    for i in 0..1000u64 {
        let stream = StreamId(1 + i % 10);
        let outs = fx.input(WatchInput::Create {
            stream,
            req: watch("k/", b"k0"),
        });
        assert_eq!(outs.len(), 1);
    }
    for s in 1..=10 {
        fx.input(WatchInput::Consumed {
            stream: StreamId(s),
            outputs: 100,
        });
    }
    let outs = fx.put("k/x", "v");
    assert_eq!(outs.len(), 1000);
    let event = put_ev(kv("k/x", "v", 2, 2, 1));
    assert!(outs
        .iter()
        .all(|o| o.events == vec![event.clone()] && o.revision == 2));
    assert_eq!(fx.reads.get(), 0);
    assert_eq!(fx.hub.poll_timeout(), None, "nothing left to catch up");
}

/// Timing of the fan-out above, for the record (run by hand:
/// `cargo test --release -p t4-core --lib fan_out_timing -- --ignored --nocapture`).
#[test]
#[ignore = "timing, run by hand"]
#[allow(clippy::disallowed_methods)] // a measurement, not core logic
fn fan_out_timing() {
    let mut hub = WatchHub::new(WatchConfig::default());
    let engine = MemEngine::new();
    let meta0 = Meta {
        current_revision: 1,
        compact_revision: -1,
        ..Meta::default()
    };
    for s in 0..10 {
        hub.handle(
            Time(0),
            WatchInput::OpenStream {
                stream: StreamId(s),
            },
            &engine,
            &meta0,
        );
    }
    for i in 0..1000u64 {
        let input = WatchInput::Create {
            stream: StreamId(i % 10),
            req: watch("k/", b"k0"),
        };
        hub.handle(Time(0), input, &engine, &meta0);
    }
    while hub.poll_output().is_some() {}
    let rounds = 200i64;
    let started = std::time::Instant::now();
    for r in 0..rounds {
        let meta = Meta {
            current_revision: 2 + r,
            ..meta0
        };
        let events = vec![put_ev(kv("k/x", "v", 2, 2 + r, 1 + r))];
        hub.on_applied(Time(0), &meta, &events);
        let mut n = 0;
        while hub.poll_output().is_some() {
            n += 1;
        }
        assert_eq!(n, 1000);
        for s in 0..10 {
            let input = WatchInput::Consumed {
                stream: StreamId(s),
                outputs: 100,
            };
            hub.handle(Time(0), input, &engine, &meta);
        }
    }
    let per_put = started.elapsed() / u32::try_from(rounds).expect("small");
    eprintln!("fan-out of one put to 1,000 watchers: {per_put:?} (incl. draining)");
}

/// Through the node: a write's watch output is emitted when it applies,
/// before the writer's reply.
#[test]
fn node_delivers_watch_outputs_on_apply() {
    use crate::node::{Action, ClientRequest, IoDone, Node, NodeConfig, Response};
    use crate::types::{IoId, ReqId};
    let mut n = Node::new(NodeConfig::default(), MemEngine::new()).expect("open");
    n.handle_watch(Time(0), WatchInput::OpenStream { stream: S });
    n.handle_watch(
        Time(0),
        WatchInput::Create {
            stream: S,
            req: watch("a", b""),
        },
    );
    assert_eq!(n.take_actions(), vec![Action::Watch(created(0, 1))]);
    n.handle_client(
        Time(0),
        ReqId(9),
        ClientRequest::Write(WriteRequest::Put(PutRequest {
            key: "a".into(),
            value: "1".into(),
            ..PutRequest::default()
        })),
    );
    assert_eq!(n.take_actions().len(), 2, "append and sync");
    n.handle_io(
        Time(0),
        IoDone::WalSynced {
            io: IoId(2),
            term: Term(1),
            through: Index(1),
        },
    );
    let actions = n.take_actions();
    assert_eq!(actions.len(), 2);
    assert_eq!(
        actions[0],
        Action::Watch(out(0, 2, vec![put_ev(kv("a", "1", 2, 2, 1))]))
    );
    assert!(matches!(
        &actions[1],
        Action::Reply {
            req: ReqId(9),
            result: Ok(Response::Write(_))
        }
    ));
    // History through the node: a second watcher from revision 2.
    n.handle_watch(
        Time(5),
        WatchInput::Create {
            stream: S,
            req: from_rev(watch("a", b""), 2),
        },
    );
    assert_eq!(n.take_actions(), vec![Action::Watch(created(1, 2))]);
    assert_eq!(n.poll_timeout(), Some(Time(5)));
    n.handle_timeout(Time(5));
    assert_eq!(
        n.take_actions(),
        vec![Action::Watch(out(
            1,
            2,
            vec![put_ev(kv("a", "1", 2, 2, 1))]
        ))]
    );
    assert_eq!(n.poll_timeout(), None);
}
