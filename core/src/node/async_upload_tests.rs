//! Exact action sequences of bucket mode with asynchronous upload: the
//! acknowledgement after the fsync, segments sealed by age and by size, one
//! upload at a time while the next segment fills, a lost answer and a
//! fence, outages and the backlog bound, the trim bound, checkpoints
//! waiting for the WAL, and the start-up that uploads what the engine
//! applied beyond the bucket.

use super::*;
use crate::bucket::lock::Member;
use crate::bucket::{layout, wal_object};
use crate::engine::MemEngine;
use crate::kv::{PutRequest, PutResponse};
use crate::node::checkpoint::TakenCheckpoint;
use crate::object::{MemBucket, ObjectError, ObjectOp, PutCondition};
use crate::wal::encode_entries;

const T0: Time = Time(0);
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn config() -> NodeConfig {
    NodeConfig {
        bucket: Some(BucketConfig {
            retry_backoff_min_ns: 10 * MS,
            retry_backoff_max_ns: 80 * MS,
            checkpoint_every_entries: 0,
            checkpoint_interval_ns: 0,
            gc_keep: 0,
            sync_upload: false,
            segment_max_age_ns: 10 * SEC,
            segment_max_bytes: 1 << 20,
            async_backlog_bytes_max: 1 << 30,
            // No takeover hold: these tests run on one instant.
            read_lease_ns: 0,
            ..BucketConfig::default()
        }),
        trim_every_entries: 1_000_000,
        ..NodeConfig::default()
    }
}

/// `config()` with its bucket settings changed by `f`.
fn config_with(f: impl FnOnce(&mut BucketConfig)) -> NodeConfig {
    let mut c = config();
    f(c.bucket.as_mut().expect("bucket mode"));
    c
}

fn me(id: &str) -> Member {
    Member {
        id: id.into(),
        peer_addr: String::new(),
    }
}

fn put(key: &str, value: &str) -> ClientRequest {
    ClientRequest::Write(WriteRequest::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }))
}

fn entry(term: u64, index: u64, key: &str, value: &str) -> Entry {
    let ClientRequest::Write(w) = put(key, value) else {
        unreachable!("put() builds a write")
    };
    Entry::write(Term(term), Index(index), w)
}

fn put_ok(revision: i64) -> Result<Response, Error> {
    Ok(Response::Write(WriteResponse::Put(PutResponse {
        revision,
        prev_kv: None,
    })))
}

fn create(io: u64, term: u64, entries: &[Entry]) -> Action {
    Action::Object {
        io: IoId(io),
        term: Term(term),
        op: ObjectOp::Put {
            key: layout::wal_key(Index(entries[0].index)),
            body: wal_object::encode(Term(term), entries),
            condition: PutCondition::IfAbsent,
        },
    }
}

/// Bytes one small put takes as a WAL frame (the backlog's unit).
fn frame_bytes() -> u64 {
    let mut out = Vec::new();
    encode_entries(&[entry(1, 2, "a", "1")], &mut out) as u64
}

/// A node, its engine, its local WAL (every entry appended) and its
/// bucket.
struct Rig {
    n: Node<MemEngine>,
    engine: MemEngine,
    wal: Vec<Entry>,
    bucket: MemBucket,
}

impl Rig {
    /// A node over `engine` (local WAL `wal`) on `bucket`, its start-up
    /// begun but not run.
    fn boot(config: NodeConfig, engine: MemEngine, wal: Vec<Entry>, bucket: MemBucket) -> Rig {
        let mut n = Node::new(config, engine.clone()).expect("open");
        let applied = n.meta().applied_index;
        let tail = wal.iter().filter(|e| e.index > applied).cloned().collect();
        n.recover(T0, tail).expect("recover");
        n.start_bucket(T0, me("a"));
        Rig {
            n,
            engine,
            wal,
            bucket,
        }
    }

    /// A serving node on an empty bucket: lock at term 1, fence at index 1.
    fn serving(config: NodeConfig) -> Rig {
        let mut r = Rig::boot(config, MemEngine::new(), Vec::new(), MemBucket::new());
        r.run_startup();
        assert!(!r.n.is_starting());
        assert_eq!(r.n.failure(), None);
        assert_eq!(r.n.wal_uploaded_through(), Some(Index(1)));
        r
    }

    /// Runs the start-up's I/O (object operations, WAL reads, the reset)
    /// until nothing is left.
    fn run_startup(&mut self) {
        loop {
            let actions = self.n.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                match action {
                    Action::ReadWal { io, from, through } => {
                        self.answer_wal_read(io, from, through);
                    }
                    Action::Object { io, term, op } => {
                        let result = self.bucket.execute(op);
                        self.n.handle_io(T0, IoDone::Object { io, term, result });
                    }
                    Action::ResetWal { io, .. } => {
                        self.wal.clear();
                        self.n.handle_io(T0, IoDone::WalReset { io, error: None });
                    }
                    other => panic!("unexpected during start-up: {other:?}"),
                }
            }
        }
    }

    fn answer_wal_read(&mut self, io: IoId, from: Index, through: Index) {
        let entries = self
            .wal
            .iter()
            .filter(|e| (from.0..=through.0).contains(&e.index))
            .cloned()
            .collect();
        self.n.handle_io(
            T0,
            IoDone::WalRead {
                io,
                result: Ok(entries),
            },
        );
    }

    /// The id the node's next I/O action gets.
    fn io(&self) -> u64 {
        self.n.next_io
    }

    /// A write, fsynced at once: returns the actions after the sync (the
    /// append and sync actions are checked and kept in the local WAL).
    fn write(&mut self, now: Time, req: u64, key: &str, value: &str) -> Vec<Action> {
        let io = self.io();
        self.n.handle_client(now, ReqId(req), put(key, value));
        let actions = self.n.take_actions();
        let [Action::AppendWal { entries, .. }, Action::SyncWal { through, .. }] = &actions[..]
        else {
            panic!("append + sync expected, got {actions:?}")
        };
        self.wal.extend(entries.iter().cloned());
        let through = *through;
        self.synced(now, io + 1, through);
        self.n.take_actions()
    }

    fn synced(&mut self, now: Time, io: u64, through: Index) {
        self.n.handle_io(
            now,
            IoDone::WalSynced {
                io: IoId(io),
                term: self.n.term(),
                through,
            },
        );
    }

    fn object_done(&mut self, now: Time, io: u64, result: ObjectResult) {
        let term = self.n.term();
        self.n.handle_io(
            now,
            IoDone::Object {
                io: IoId(io),
                term,
                result,
            },
        );
    }

    /// Runs a put action against the bucket and reports it.
    fn land(&mut self, now: Time, action: Action) {
        let Action::Object { io, op, .. } = action else {
            panic!("an object action expected, got {action:?}")
        };
        let result = self.bucket.execute(op);
        assert!(result.is_ok(), "{result:?}");
        self.object_done(now, io.0, result);
    }

    fn wal_keys(&self) -> Vec<String> {
        self.bucket
            .iter()
            .map(|(k, _)| k.to_owned())
            .filter(|k| k.starts_with(layout::WAL_PREFIX))
            .collect()
    }
}

fn reply(req: u64, result: Result<Response, Error>) -> Action {
    Action::Reply {
        req: ReqId(req),
        result,
    }
}

/// The write is acknowledged once fsynced and applied; nothing is
/// uploaded yet, and the node is not idle until it is.
#[test]
fn acknowledged_after_the_fsync_before_the_upload() {
    let mut r = Rig::serving(config());
    let io = r.io();
    r.n.handle_client(T0, ReqId(7), put("a", "1"));
    assert_eq!(
        r.n.take_actions(),
        vec![
            Action::AppendWal {
                io: IoId(io),
                term: Term(1),
                entries: vec![entry(1, 2, "a", "1")],
            },
            Action::SyncWal {
                io: IoId(io + 1),
                term: Term(1),
                through: Index(2),
            },
        ]
    );
    r.synced(T0, io + 1, Index(2));
    assert_eq!(r.n.take_actions(), vec![reply(7, put_ok(2))]);
    assert_eq!(r.n.meta().current_revision, 2, "applied at once");
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(1)));
    assert_eq!(r.n.upload_backlog_bytes(), frame_bytes());
    assert!(!r.n.is_idle(), "the entry is not in the bucket yet");
    assert_eq!(
        r.n.poll_timeout(),
        Some(Time(10 * SEC)),
        "the segment's age bound"
    );
    assert_eq!(r.wal_keys(), [layout::wal_key(Index(1))]);
}

/// Entries of several batches form one segment, sealed when its first
/// entry is `segment_max_age_ns` old and uploaded as one object created
/// with If-None-Match.
#[test]
fn one_object_per_segment_sealed_by_age() {
    let mut r = Rig::serving(config());
    assert_eq!(r.write(T0, 1, "a", "1"), vec![reply(1, put_ok(2))]);
    assert_eq!(r.write(Time(SEC), 2, "b", "2"), vec![reply(2, put_ok(3))]);
    assert_eq!(
        r.write(Time(2 * SEC), 3, "c", "3"),
        vec![reply(3, put_ok(4))]
    );
    r.n.handle_timeout(Time(10 * SEC - 1));
    assert_eq!(r.n.take_actions(), vec![], "not due yet");
    let io = r.io();
    r.n.handle_timeout(Time(10 * SEC));
    let segment = [
        entry(1, 2, "a", "1"),
        entry(1, 3, "b", "2"),
        entry(1, 4, "c", "3"),
    ];
    let upload = create(io, 1, &segment);
    assert_eq!(r.n.take_actions(), vec![upload.clone()]);
    assert!(!r.n.is_idle());
    r.land(Time(10 * SEC), upload);
    assert_eq!(r.n.take_actions(), vec![]);
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(4)));
    assert_eq!(r.n.upload_backlog_bytes(), 0);
    assert!(r.n.is_idle());
    assert_eq!(r.n.poll_timeout(), None, "nothing open, nothing to retry");
    assert_eq!(
        r.wal_keys(),
        [layout::wal_key(Index(1)), layout::wal_key(Index(2))]
    );
}

/// A segment that reaches `segment_max_bytes` is sealed at once; its
/// upload follows the batch's replies.
#[test]
fn a_full_segment_is_sealed_at_once() {
    // Two entries fill a segment.
    let mut r = Rig::serving(config_with(|b| b.segment_max_bytes = 2 * frame_bytes()));
    assert_eq!(r.write(T0, 1, "a", "1"), vec![reply(1, put_ok(2))]);
    let io = r.io() + 2; // after the next append and sync
    assert_eq!(
        r.write(Time(MS), 2, "b", "2"),
        vec![
            reply(2, put_ok(3)),
            create(io, 1, &[entry(1, 2, "a", "1"), entry(1, 3, "b", "2")]),
        ]
    );
}

/// While one segment uploads, writes are acknowledged and the next
/// segment fills; it is sealed by its own age but uploaded only once the
/// first one landed (objects land in log order).
#[test]
fn the_next_segment_fills_while_one_uploads() {
    let mut r = Rig::serving(config());
    r.write(T0, 1, "a", "1");
    let first_io = r.io();
    r.n.handle_timeout(Time(10 * SEC));
    let first = create(first_io, 1, &[entry(1, 2, "a", "1")]);
    assert_eq!(r.n.take_actions(), vec![first.clone()]);
    assert_eq!(
        r.write(Time(11 * SEC), 2, "b", "2"),
        vec![reply(2, put_ok(3))],
        "acknowledged during the upload"
    );
    assert_eq!(r.n.poll_timeout(), Some(Time(21 * SEC)));
    r.n.handle_timeout(Time(21 * SEC));
    assert_eq!(
        r.n.take_actions(),
        vec![],
        "sealed, but one upload at a time"
    );
    let second_io = r.io();
    r.land(Time(22 * SEC), first);
    let second = create(second_io, 1, &[entry(1, 3, "b", "2")]);
    assert_eq!(r.n.take_actions(), vec![second.clone()]);
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(2)));
    r.land(Time(22 * SEC), second);
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(3)));
    assert!(r.n.is_idle());
}

/// 412, then our own bytes: an earlier attempt landed and its answer was
/// lost. The segment counts as uploaded.
#[test]
fn precondition_failed_on_our_own_segment_is_success() {
    let mut r = Rig::serving(config());
    r.write(T0, 1, "a", "1");
    let io = r.io();
    r.n.handle_timeout(Time(10 * SEC));
    let upload = create(io, 1, &[entry(1, 2, "a", "1")]);
    assert_eq!(r.n.take_actions(), vec![upload.clone()]);
    // The put landed, the answer was lost: a retry finds the key taken.
    let Action::Object { op, .. } = upload else {
        unreachable!()
    };
    r.bucket.execute(op).expect("lands");
    r.object_done(Time(10 * SEC), io, Err(ObjectError::PreconditionFailed));
    let key = layout::wal_key(Index(2));
    assert_eq!(
        r.n.take_actions(),
        vec![Action::Object {
            io: IoId(io + 1),
            term: Term(1),
            op: ObjectOp::Get { key: key.clone() },
        }]
    );
    let got = r.bucket.execute(ObjectOp::Get { key });
    r.object_done(Time(10 * SEC), io + 1, got);
    assert_eq!(r.n.take_actions(), vec![]);
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(2)));
    assert_eq!(r.n.fenced(), None);
    assert!(r.n.is_idle());
}

/// 412, then another writer's bytes: the node is fenced exactly as in
/// sync mode. The write in flight and later ones get `Fenced`, a late
/// fsync completion is ignored, nothing more is uploaded.
#[test]
fn another_writer_at_our_segment_fences_the_node() {
    let mut r = Rig::serving(config());
    r.write(T0, 1, "a", "1");
    let io = r.io();
    r.n.handle_timeout(Time(10 * SEC));
    r.n.take_actions();
    // A write whose fsync is still running when the verdict comes.
    r.n.handle_client(Time(10 * SEC), ReqId(2), put("b", "2"));
    let batch = r.n.take_actions();
    assert_eq!(batch.len(), 2, "append + sync: {batch:?}");
    let theirs = wal_object::encode(Term(2), &[Entry::barrier(Term(2), Index(2))]);
    r.bucket
        .execute(ObjectOp::Put {
            key: layout::wal_key(Index(2)),
            body: theirs,
            condition: PutCondition::IfAbsent,
        })
        .expect("the other node's fence");
    r.object_done(Time(10 * SEC), io, Err(ObjectError::PreconditionFailed));
    assert_eq!(r.n.take_actions().len(), 1, "the read-back");
    // Ids: the put (io), the write's append and sync (io + 1, io + 2), the
    // read-back (io + 3).
    let got = r.bucket.execute(ObjectOp::Get {
        key: layout::wal_key(Index(2)),
    });
    r.object_done(Time(10 * SEC), io + 3, got);
    let actions = r.n.take_actions();
    assert!(
        matches!(
            &actions[..],
            [Action::Reply {
                req: ReqId(2),
                result: Err(Error::Fenced(_))
            }]
        ),
        "{actions:?}"
    );
    assert!(r.n.fenced().is_some(), "reads are refused too");
    assert_eq!(r.n.upload_backlog_bytes(), 0, "the backlog is dropped");
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(1)));
    r.synced(Time(10 * SEC), io + 2, Index(3));
    assert_eq!(r.n.take_actions(), vec![], "a stale fsync completion");
    r.n.handle_client(Time(11 * SEC), ReqId(3), put("c", "3"));
    let actions = r.n.take_actions();
    assert!(
        matches!(
            &actions[..],
            [Action::Reply {
                req: ReqId(3),
                result: Err(Error::Fenced(_))
            }]
        ),
        "{actions:?}"
    );
    assert_eq!(r.n.poll_timeout(), None);
    assert!(r.n.is_idle());
}

/// An outage: uploads retry with the node's backoff, writes are still
/// acknowledged until the backlog reaches its bound, then refused with
/// `Unavailable`; when the store answers again the backlog drains and
/// writes are accepted again, without a restart.
#[test]
fn an_outage_fills_the_backlog_to_its_bound_then_uploads_catch_up() {
    let mut r = Rig::serving(config_with(|b| {
        b.segment_max_bytes = 1; // one entry per segment
        b.async_backlog_bytes_max = 2 * frame_bytes();
    }));
    let io = r.io() + 2;
    let a = create(io, 1, &[entry(1, 2, "a", "1")]);
    assert_eq!(
        r.write(T0, 1, "a", "1"),
        vec![reply(1, put_ok(2)), a.clone()]
    );
    let unavailable = || Err(ObjectError::Retryable("503 SlowDown".into()));
    r.object_done(T0, io, unavailable());
    assert_eq!(r.n.take_actions(), vec![]);
    assert_eq!(r.n.poll_timeout(), Some(Time(10 * MS)), "first backoff");
    r.n.handle_timeout(Time(10 * MS));
    let retry = create(io + 1, 1, &[entry(1, 2, "a", "1")]);
    assert_eq!(r.n.take_actions(), vec![retry]);
    r.object_done(Time(10 * MS), io + 1, unavailable());
    assert_eq!(
        r.n.poll_timeout(),
        Some(Time(30 * MS)),
        "the backoff doubles"
    );
    // Still acknowledged: the second entry fills the backlog to its bound.
    assert_eq!(
        r.write(Time(20 * MS), 2, "b", "2"),
        vec![reply(2, put_ok(3))],
        "queued behind the failing upload"
    );
    assert_eq!(r.n.upload_backlog_bytes(), 2 * frame_bytes());
    r.n.handle_client(Time(20 * MS), ReqId(3), put("c", "3"));
    let actions = r.n.take_actions();
    match &actions[..] {
        [Action::Reply {
            req: ReqId(3),
            result: Err(Error::Unavailable(why)),
        }] => assert!(why.contains("upload backlog full"), "{why}"),
        other => panic!("Unavailable expected, got {other:?}"),
    }
    // The store answers again.
    let io = r.io();
    r.n.handle_timeout(Time(30 * MS));
    let retry = create(io, 1, &[entry(1, 2, "a", "1")]);
    assert_eq!(r.n.take_actions(), vec![retry.clone()]);
    r.land(Time(31 * MS), retry);
    let b = create(io + 1, 1, &[entry(1, 3, "b", "2")]);
    assert_eq!(r.n.take_actions(), vec![b.clone()]);
    r.land(Time(32 * MS), b);
    assert_eq!(r.n.upload_backlog_bytes(), 0);
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(3)));
    let io = r.io() + 2;
    assert_eq!(
        r.write(Time(33 * MS), 4, "c", "3"),
        vec![reply(4, put_ok(4)), create(io, 1, &[entry(1, 4, "c", "3")])],
        "accepted again, without a restart"
    );
}

/// `TrimWal` never passes the last uploaded index: the local WAL keeps
/// every entry the bucket lacks.
#[test]
fn the_trim_stops_at_the_uploaded_index() {
    let mut r = Rig::serving(NodeConfig {
        trim_every_entries: 2,
        ..config()
    });
    r.write(T0, 1, "a", "1");
    assert_eq!(
        r.write(T0, 2, "b", "2"),
        vec![reply(2, put_ok(3))],
        "applied through 3, but nothing past 1 is uploaded: no trim"
    );
    r.n.handle_timeout(Time(10 * SEC));
    let upload = r.n.take_actions().pop().expect("the segment's upload");
    r.land(Time(10 * SEC), upload);
    let io = r.io() + 2;
    assert_eq!(
        r.write(Time(10 * SEC), 3, "c", "3"),
        vec![
            reply(3, put_ok(4)),
            Action::TrimWal {
                io: IoId(io),
                below: Index(4),
            },
        ],
        "applied through 4, uploaded through 3: below 4, not 5"
    );
}

/// A checkpoint taken while the bucket lags behind the engine waits, the
/// open segment sealed at once, until the WAL covers it; then its upload
/// starts (its manifest never names state the bucket's WAL lacks).
#[test]
fn a_checkpoint_waits_for_the_wal_upload() {
    // Due at applied index 3 (3 entries since the empty engine).
    let mut r = Rig::serving(config_with(|b| b.checkpoint_every_entries = 3));
    r.write(T0, 1, "a", "1");
    let actions = r.write(T0, 2, "b", "2");
    let Some(Action::TakeCheckpoint { io, index, .. }) = actions.last().cloned() else {
        panic!("a checkpoint is due: {actions:?}")
    };
    assert_eq!(index, Index(3));
    let taken = TakenCheckpoint {
        files: vec![crate::bucket::checkpoint::LocalFile {
            name: "CURRENT".into(),
            size_bytes: 3,
            sha256: "c".repeat(64),
        }],
        created_unix_ms: 7,
    };
    let upload_io = r.io();
    r.n.handle_io(
        Time(SEC),
        IoDone::CheckpointTaken {
            io,
            result: Ok(taken),
        },
    );
    let segment = create(
        upload_io,
        1,
        &[entry(1, 2, "a", "1"), entry(1, 3, "b", "2")],
    );
    assert_eq!(
        r.n.take_actions(),
        vec![segment.clone()],
        "the segment is sealed before its age; the checkpoint waits"
    );
    r.land(Time(SEC), segment);
    let actions = r.n.take_actions();
    assert!(
        matches!(
            &actions[..],
            [Action::Object { op: ObjectOp::List { prefix, .. }, .. }] if prefix == layout::SST_PREFIX
        ),
        "the checkpoint's upload starts now: {actions:?}"
    );
}

/// A graceful stop seals the open segment now; the node is idle once it
/// is in the bucket.
#[test]
fn flush_uploads_seals_the_open_segment() {
    let mut r = Rig::serving(config());
    r.write(T0, 1, "a", "1");
    assert!(!r.n.is_idle());
    let io = r.io();
    r.n.flush_uploads(Time(SEC));
    let upload = create(io, 1, &[entry(1, 2, "a", "1")]);
    assert_eq!(r.n.take_actions(), vec![upload.clone()]);
    assert!(!r.n.is_idle());
    r.land(Time(SEC), upload);
    assert!(r.n.is_idle());
}

/// A node that stopped with applied entries not uploaded (the engine is
/// ahead of the bucket) reads them back from its local WAL at the next
/// start and uploads them, with its barrier, before serving; they are not
/// applied twice.
#[test]
fn the_start_up_uploads_what_the_engine_applied_beyond_the_bucket() {
    let mut old = Rig::serving(config());
    old.write(T0, 1, "a", "1");
    old.write(T0, 2, "b", "2");
    assert_eq!(old.n.wal_uploaded_through(), Some(Index(1)));
    // Stop: the engine holds 1..=3 (MemEngine keeps what it applied), the
    // local WAL too, the bucket only the fence at 1.
    let Rig {
        engine,
        wal,
        bucket,
        ..
    } = old;
    let revision = 3;
    let mut r = Rig::boot(config(), engine, wal, bucket);
    // Lock (read, take over with term 2), list, fetch wal/1.
    for _ in 0..4 {
        let actions = r.n.take_actions();
        assert_eq!(actions.len(), 1, "{actions:?}");
        let Action::Object { io, term, op } = actions.into_iter().next().expect("one") else {
            panic!("object operations first")
        };
        let result = r.bucket.execute(op);
        r.n.handle_io(T0, IoDone::Object { io, term, result });
    }
    assert_eq!(r.n.term(), Term(2));
    let actions = r.n.take_actions();
    let [Action::ReadWal {
        io: read_io,
        from,
        through,
    }] = actions[..]
    else {
        panic!("entries 2..=3 are wanted back: {actions:?}")
    };
    assert_eq!((from, through), (Index(2), Index(3)));
    assert_eq!(
        r.n.take_actions(),
        vec![],
        "asked once; waiting for the local WAL"
    );
    let io = r.io();
    r.answer_wal_read(read_io, from, through);
    let fence = [
        entry(1, 2, "a", "1"),
        entry(1, 3, "b", "2"),
        Entry::barrier(Term(2), Index(4)),
    ];
    let fence_put = create(io, 2, &fence);
    assert_eq!(r.n.take_actions(), vec![fence_put.clone()]);
    r.land(T0, fence_put);
    assert_eq!(
        r.n.take_actions(),
        vec![Action::ResetWal {
            io: IoId(io + 1),
            next: Index(5),
        }]
    );
    r.n.handle_io(
        T0,
        IoDone::WalReset {
            io: IoId(io + 1),
            error: None,
        },
    );
    assert!(!r.n.is_starting());
    assert_eq!(r.n.failure(), None);
    assert_eq!(r.n.meta().current_revision, revision, "not applied twice");
    assert_eq!(r.n.meta().applied_index, 4);
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(4)));
    assert_eq!(
        r.wal_keys(),
        [layout::wal_key(Index(1)), layout::wal_key(Index(2))]
    );
    assert!(r.n.is_idle());
}

/// The engine ahead of the bucket and a local tail after it (fsynced, not
/// applied when the node stopped): the fence object holds both, in order,
/// then the barrier; only the tail is applied when it lands.
#[test]
fn the_start_up_uploads_the_read_back_entries_then_the_local_tail() {
    let mut old = Rig::serving(config());
    old.write(T0, 1, "a", "1");
    let Rig {
        engine,
        mut wal,
        bucket,
        ..
    } = old;
    wal.push(entry(1, 3, "b", "2"));
    let mut r = Rig::boot(config(), engine, wal, bucket);
    r.run_startup();
    assert_eq!(r.n.failure(), None);
    let fence = wal_object::encode(
        Term(2),
        &[
            entry(1, 2, "a", "1"),
            entry(1, 3, "b", "2"),
            Entry::barrier(Term(2), Index(4)),
        ],
    );
    let stored = r
        .bucket
        .iter()
        .find(|(k, _)| *k == layout::wal_key(Index(2)))
        .map(|(_, body)| body.clone());
    assert_eq!(stored, Some(fence));
    assert_eq!(r.n.meta().current_revision, 3, "a once, b once");
    assert_eq!(r.n.wal_uploaded_through(), Some(Index(4)));
}

/// Sync mode keeps refusing an engine ahead of the bucket (there every
/// applied entry was uploaded first, so the bucket lost it).
#[test]
fn sync_mode_still_refuses_an_engine_ahead_of_the_bucket() {
    let mut old = Rig::serving(config());
    old.write(T0, 1, "a", "1");
    let Rig {
        engine,
        wal,
        bucket,
        ..
    } = old;
    let mut r = Rig::boot(config_with(|b| b.sync_upload = true), engine, wal, bucket);
    r.run_startup();
    let why = r.n.failure().expect("refused");
    assert!(why.contains("entries 2..2 are missing"), "{why}");
}

/// Another writer took over and wrote different entries at indexes this
/// node had applied: the start is refused with a message saying so.
#[test]
fn the_start_up_refuses_a_bucket_that_contradicts_applied_entries() {
    let mut zombie = Rig::serving(config());
    zombie.write(T0, 1, "a", "1");
    zombie.write(T0, 2, "b", "2");
    let Rig {
        engine,
        wal,
        bucket,
        ..
    } = zombie;
    // A new node takes the bucket over (term 2, fence at 2) and writes.
    let mut other = Rig::boot(config(), MemEngine::new(), Vec::new(), bucket);
    other.run_startup();
    assert_eq!(other.n.term(), Term(2));
    other.write(T0, 1, "theirs", "x");
    other.n.flush_uploads(T0);
    let upload = other.n.take_actions().pop().expect("an upload");
    other.land(T0, upload);
    // The zombie's restart finds an entry of term 2 at index 3.
    let mut r = Rig::boot(config(), engine, wal, other.bucket);
    r.run_startup();
    let why = r.n.failure().expect("refused");
    assert!(
        why.contains("diverges from the bucket at index 3") && why.contains("took the bucket over"),
        "{why}"
    );
    assert!(!r.n.is_starting());
    assert!(
        !r.n.take_actions()
            .iter()
            .any(|a| matches!(a, Action::ReadWal { .. })),
        "no WAL read after a refusal"
    );
}

/// A local WAL that cannot give the entries back refuses the start, saying
/// which entries are missing.
#[test]
fn the_start_up_refuses_when_the_local_wal_lacks_the_entries() {
    let mut old = Rig::serving(config());
    old.write(T0, 1, "a", "1");
    old.write(T0, 2, "b", "2");
    let Rig { engine, bucket, .. } = old;
    // The local WAL was lost (or trimmed too far): only entry 3 is left.
    let wal = vec![entry(1, 3, "b", "2")];
    let mut r = Rig::boot(config(), engine, wal, bucket);
    r.run_startup();
    let why = r.n.failure().expect("refused");
    assert!(
        why.contains("entries 2..=3") && why.contains("gave back entries 3..=3"),
        "{why}"
    );
    assert_eq!(
        r.wal_keys(),
        [layout::wal_key(Index(1))],
        "nothing uploaded"
    );
}
