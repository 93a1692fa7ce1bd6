//! Bucket-mode start-up against an in-memory bucket: bootstrap, recovery
//! after disk loss, the zombie, a local tail that lost to another writer,
//! refusals.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::*;
use crate::bucket::lock::{LeaderLock, Member};
use crate::bucket::{layout, wal_object};
use crate::engine::MemEngine;
use crate::kv::{PutRequest, RangeRequest};
use crate::object::{MemBucket, ObjectError, ObjectOp, ObjectReply, PutCondition};

type Bucket = Rc<RefCell<MemBucket>>;

/// One node, its engine, its local WAL and a shared bucket; actions run at
/// once unless `hold_uploads` keeps WAL-object puts back (a crash before
/// they reach the bucket).
struct Rig {
    node: Node<MemEngine>,
    engine: MemEngine,
    bucket: Bucket,
    /// Durable local WAL entries (after the engine's applied index at the
    /// last reset).
    wal: Vec<Entry>,
    replies: BTreeMap<ReqId, Result<Response, Error>>,
    hold_uploads: bool,
    next_req: u64,
    /// The node's clock (the start-up's takeover hold advances it).
    now: Time,
    /// Reads of `leader-lock` executed so far.
    lock_reads: usize,
    /// Answer reads of `leader-lock` with a retryable error.
    lock_reads_fail: bool,
    /// The last WAL-object upload `hold_uploads` kept back.
    held: Option<Action>,
}

fn me(id: &str) -> Member {
    Member {
        id: id.into(),
        peer_addr: format!("{id}:3380"),
    }
}

fn config() -> NodeConfig {
    NodeConfig {
        bucket: Some(BucketConfig::default()),
        ..NodeConfig::default()
    }
}

impl Rig {
    /// Starts a node over `engine` with local WAL `wal` on `bucket`.
    fn start(id: &str, engine: MemEngine, wal: Vec<Entry>, bucket: &Bucket) -> Rig {
        let mut node = Node::new(config(), engine.clone()).expect("open");
        // As a driver's WAL reader does: only entries after the engine's.
        let applied = node.meta().applied_index;
        let wal: Vec<Entry> = wal.into_iter().filter(|e| e.index > applied).collect();
        node.recover(Time(0), wal.clone()).expect("recover");
        node.start_bucket(Time(0), me(id));
        let mut rig = Rig {
            node,
            engine,
            bucket: Rc::clone(bucket),
            wal,
            replies: BTreeMap::new(),
            hold_uploads: false,
            next_req: 0,
            now: Time(0),
            lock_reads: 0,
            lock_reads_fail: false,
            held: None,
        };
        rig.pump();
        rig.wait_out_the_hold();
        rig
    }

    /// After a takeover the start-up holds back (the previous writer's
    /// read lease): let the clock run until it serves.
    fn wait_out_the_hold(&mut self) {
        while self.node.is_starting() {
            let Some(at) = self.node.poll_timeout() else {
                return;
            };
            self.now = self.now.max(at);
            self.node.handle_timeout(self.now);
            self.pump();
        }
    }

    fn pump(&mut self) {
        loop {
            let actions = self.node.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.execute(action);
            }
        }
    }

    fn execute(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::AppendWal { entries, .. } => self.wal.extend(entries),
            Action::SyncWal { io, term, through } => {
                self.node
                    .handle_io(now, IoDone::WalSynced { io, term, through });
            }
            Action::Object { ref op, .. }
                if self.hold_uploads
                    && matches!(op, ObjectOp::Put { key, .. } if key.starts_with("wal/")) =>
            {
                self.held = Some(action);
            }
            Action::Object { io, term, op } => {
                let lock_read = matches!(&op, ObjectOp::Get { key } if key == layout::LEADER_LOCK);
                self.lock_reads += usize::from(lock_read);
                let result = if lock_read && self.lock_reads_fail {
                    Err(ObjectError::Retryable("the store is down".into()))
                } else {
                    self.bucket.borrow_mut().execute(op)
                };
                self.node
                    .handle_io(now, IoDone::Object { io, term, result });
            }
            Action::ResetWal { io, .. } => {
                self.wal.clear();
                self.node
                    .handle_io(now, IoDone::WalReset { io, error: None });
            }
            Action::TrimWal { io, .. } => {
                self.node
                    .handle_io(now, IoDone::WalTrimmed { io, error: None });
            }
            Action::Reply { req, result } => {
                assert!(self.replies.insert(req, result).is_none(), "one reply each");
            }
            Action::Watch(_) => {}
            Action::TakeCheckpoint { .. }
            | Action::UploadCheckpointFile { .. }
            | Action::DropCheckpoint { .. }
            | Action::ReadWal { .. }
            | Action::Send { .. }
            | Action::TruncateWal { .. }
            | Action::SaveHardState { .. }
            | Action::StartOver { .. } => {
                panic!("no checkpoint is due and no cluster runs in these tests: {action:?}")
            }
        }
    }

    fn put(&mut self, key: &str, value: &str) -> Option<Result<Response, Error>> {
        self.next_req += 1;
        let req = ReqId(self.next_req);
        let write = WriteRequest::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        });
        self.node
            .handle_client(self.now, req, ClientRequest::Write(write));
        self.pump();
        self.replies.remove(&req)
    }

    /// A linearizable read at `self.now`: its answer, if any yet.
    fn read(&mut self) -> Option<Result<Response, Error>> {
        self.next_req += 1;
        let req = ReqId(self.next_req);
        self.node
            .handle_client(self.now, req, ClientRequest::LinearizableRead);
        self.pump();
        self.replies.remove(&req)
    }

    /// Moves the clock to `at` and runs the timers due.
    fn advance_to(&mut self, at: Time) {
        self.now = at;
        self.node.handle_timeout(at);
        self.pump();
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let req = RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        };
        let resp = mvcc::range(&self.engine, &req).expect("range");
        resp.kvs.into_iter().next().map(|kv| kv.value)
    }

    /// Crash: the engine and the local WAL survive, the node does not.
    fn crash(self) -> (MemEngine, Vec<Entry>) {
        (self.engine, self.wal)
    }
}

fn bucket() -> Bucket {
    Rc::new(RefCell::new(MemBucket::new()))
}

fn lock_of(bucket: &Bucket) -> LeaderLock {
    match bucket.borrow_mut().execute(ObjectOp::Get {
        key: layout::LEADER_LOCK.into(),
    }) {
        Ok(ObjectReply::Got { body, .. }) => LeaderLock::decode(&body).expect("lock"),
        other => panic!("no lock: {other:?}"),
    }
}

fn wal_keys(bucket: &Bucket) -> Vec<String> {
    bucket
        .borrow()
        .iter()
        .map(|(k, _)| k.to_owned())
        .filter(|k| k.starts_with("wal/"))
        .collect()
}

fn engine_applied(engine: &MemEngine) -> u64 {
    Node::new(config(), engine.clone())
        .expect("open")
        .meta()
        .applied_index
}

fn is_ok(reply: Option<Result<Response, Error>>) -> bool {
    matches!(reply, Some(Ok(_)))
}

/// An empty bucket: the lock is created at term 1, the barrier fences index
/// 1, and writes go to the bucket one object per batch.
#[test]
fn bootstrap_on_an_empty_bucket() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    assert!(!a.node.is_starting());
    assert_eq!(a.node.failure(), None);
    assert_eq!(lock_of(&b).term, Term(1));
    assert_eq!(a.node.term(), Term(1));
    assert_eq!(wal_keys(&b), [layout::wal_key(Index(1))]);
    assert!(is_ok(a.put("k", "v")));
    assert_eq!(
        wal_keys(&b),
        [layout::wal_key(Index(1)), layout::wal_key(Index(2))]
    );
    assert_eq!(a.get("k"), Some(b"v".to_vec()));
}

/// Writes are refused while the node starts.
#[test]
fn writes_wait_for_the_start() {
    let mut n = Node::new(config(), MemEngine::new()).expect("open");
    n.recover(Time(0), Vec::new()).expect("recover");
    n.start_bucket(Time(0), me("a"));
    n.handle_client(
        Time(0),
        ReqId(1),
        ClientRequest::Write(WriteRequest::Put(PutRequest {
            key: "k".into(),
            ..PutRequest::default()
        })),
    );
    let actions = n.take_actions();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Reply {
                req: ReqId(1),
                result: Err(Error::Unavailable(_))
            }
        )),
        "{actions:?}"
    );
}

/// Disk loss: a fresh node on the same bucket has every acknowledged write.
#[test]
fn a_fresh_node_recovers_everything_from_the_bucket() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    for i in 0..20 {
        assert!(is_ok(a.put(&format!("k{i}"), &format!("v{i}"))));
    }
    let revision = a.node.meta().current_revision;
    drop(a.crash());
    let c = Rig::start("c", MemEngine::new(), Vec::new(), &b);
    assert_eq!(c.node.failure(), None);
    assert_eq!(c.node.term(), Term(2), "a start takes a new term");
    assert_eq!(c.node.meta().current_revision, revision);
    for i in 0..20 {
        assert_eq!(c.get(&format!("k{i}")), Some(format!("v{i}").into_bytes()));
    }
}

/// The zombie: the old node is fenced by the new one's barrier and never
/// acknowledges again; the new node has everything the old one
/// acknowledged.
#[test]
fn the_previous_writer_is_fenced() {
    let b = bucket();
    let mut old = Rig::start("old", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(old.put("before", "1")));
    let mut new = Rig::start("new", MemEngine::new(), Vec::new(), &b);
    assert_eq!(new.get("before"), Some(b"1".to_vec()));
    let answer = old.put("after", "2");
    assert!(matches!(answer, Some(Err(Error::Fenced(_)))), "{answer:?}");
    assert!(old.node.fenced().is_some());
    assert_eq!(old.get("after"), None, "the fenced write was not applied");
    assert!(matches!(old.put("later", "3"), Some(Err(Error::Fenced(_)))));
    assert!(is_ok(new.put("mine", "4")));
}

/// A batch fsynced but never uploaded is uploaded (before the barrier) by
/// the next start of the same node.
#[test]
fn a_local_tail_is_uploaded_at_restart() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(a.put("k1", "v1")));
    a.hold_uploads = true;
    assert_eq!(
        a.put("k2", "v2"),
        None,
        "not acknowledged: the upload never ran"
    );
    let (engine, wal) = a.crash();
    let applied = engine_applied(&engine);
    assert_eq!(
        wal.iter().filter(|e| e.index > applied).count(),
        1,
        "the unuploaded batch is in the local WAL"
    );
    let a = Rig::start("a", engine, wal, &b);
    assert_eq!(a.node.failure(), None);
    assert_eq!(a.get("k2"), Some(b"v2".to_vec()));
    let objects = wal_keys(&b);
    assert_eq!(objects.len(), 3, "barrier, k1, tail + barrier: {objects:?}");
}

/// A local tail that lost its index to another writer is dropped (it was
/// never acknowledged), and the node catches up with the winner.
#[test]
fn a_local_tail_that_lost_is_dropped() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(a.put("k1", "v1")));
    a.hold_uploads = true;
    assert_eq!(a.put("lost", "x"), None);
    let (engine, wal) = a.crash();
    let mut other = Rig::start("other", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(other.put("theirs", "y")));
    let a = Rig::start("a", engine, wal, &b);
    assert_eq!(a.node.failure(), None);
    assert_eq!(a.get("lost"), None);
    assert_eq!(a.get("theirs"), Some(b"y".to_vec()));
    assert_eq!(
        a.node.meta().current_revision,
        other.node.meta().current_revision
    );
}

/// A hole in the bucket's WAL refuses the start and names what is missing.
#[test]
fn a_hole_refuses_the_start() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    for i in 0..3 {
        assert!(is_ok(a.put(&format!("k{i}"), "v")));
    }
    b.borrow_mut()
        .execute(ObjectOp::Delete {
            key: layout::wal_key(Index(3)),
        })
        .expect("delete");
    let c = Rig::start("c", MemEngine::new(), Vec::new(), &b);
    let why = c.node.failure().expect("refused");
    assert!(why.contains("hole") && why.contains("3..3"), "{why}");
    assert!(!c.node.is_starting());
}

/// A WAL object that does not decode refuses the start (never skipped).
#[test]
fn a_corrupt_object_refuses_the_start() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(a.put("k", "v")));
    let key = layout::wal_key(Index(2));
    b.borrow_mut()
        .execute(ObjectOp::Put {
            key: key.clone(),
            body: bytes::Bytes::from_static(b"T4WAL\0\r\ngarbage"),
            condition: PutCondition::None,
        })
        .expect("overwrite");
    let c = Rig::start("c", MemEngine::new(), Vec::new(), &b);
    let why = c.node.failure().expect("refused");
    assert!(why.contains(&key), "{why}");
}

/// The engine ahead of the bucket's WAL (it ends early or starts late)
/// refuses the start: fencing would leave a hole.
#[test]
fn state_beyond_the_bucket_end_refuses_the_start() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(a.put("k1", "v")));
    assert!(is_ok(a.put("k2", "v")));
    let (engine, wal) = a.crash();
    b.borrow_mut()
        .execute(ObjectOp::Delete {
            key: layout::wal_key(Index(3)),
        })
        .expect("delete");
    let c = Rig::start("a", engine.clone(), wal.clone(), &b);
    let why = c.node.failure().expect("refused");
    assert!(why.contains("entries 3..3 are missing"), "{why}");
    let c = Rig::start("a", engine, wal, &bucket());
    let why = c.node.failure().expect("refused");
    assert!(why.contains("entries 1..3 are missing"), "{why}");
}

/// The engine ahead of the bucket (another bucket, or the bucket's WAL
/// starts later) refuses the start.
#[test]
fn state_ahead_of_the_bucket_refuses_the_start() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(a.put("k", "v")));
    let (engine, _) = a.crash();
    let empty = bucket();
    // Put a WAL that starts late in the empty bucket.
    let late = wal_object::encode(Term(1), &[Entry::barrier(Term(1), Index(9))]);
    empty
        .borrow_mut()
        .execute(ObjectOp::Put {
            key: layout::wal_key(Index(9)),
            body: late,
            condition: PutCondition::IfAbsent,
        })
        .expect("put");
    let c = Rig::start("a", engine, Vec::new(), &empty);
    let why = c.node.failure().expect("refused");
    assert!(why.contains("missing"), "{why}");
}

// ----- the read lease (see the `read_lease` module) -----

const MS: u64 = 1_000_000;

fn ready(reply: Option<Result<Response, Error>>) -> bool {
    matches!(reply, Some(Ok(Response::ReadReady)))
}

/// Reads in the lease's first half need no lock read; one in its second
/// half is answered at once and renews it; past its end a read waits for
/// the lock read.
#[test]
fn reads_within_the_lease_need_no_lock_read() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    let after_start = a.lock_reads;
    assert_eq!(
        a.node.read_fast_until(),
        None,
        "no lease before a lock read"
    );
    assert!(ready(a.read()), "the lock names a: ready");
    assert_eq!(a.lock_reads, after_start + 1);
    assert_eq!(a.node.read_fast_until(), Some(Time(500 * MS)));
    a.now = Time(400 * MS);
    assert!(ready(a.read()));
    assert_eq!(a.lock_reads, after_start + 1, "first half: no lock read");
    a.now = Time(700 * MS);
    assert!(ready(a.read()));
    assert_eq!(a.lock_reads, after_start + 2, "second half: renewed");
    assert_eq!(a.node.read_fast_until(), Some(Time(1_200 * MS)));
}

/// A bootstrap serves at once; a takeover holds back 3/2 of the lease after
/// its claim, refusing writes meanwhile.
#[test]
fn a_takeover_waits_out_the_previous_read_lease() {
    let b = bucket();
    let a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    assert_eq!(a.now, Time(0), "bootstrap: no hold");
    let engine = MemEngine::new();
    let mut n = Node::new(config(), engine.clone()).expect("open");
    n.recover(Time(0), Vec::new()).expect("recover");
    n.start_bucket(Time(0), me("b"));
    let mut c = Rig {
        node: n,
        engine,
        bucket: Rc::clone(&b),
        wal: Vec::new(),
        replies: BTreeMap::new(),
        hold_uploads: false,
        next_req: 0,
        now: Time(0),
        lock_reads: 0,
        lock_reads_fail: false,
        held: None,
    };
    c.pump();
    assert!(c.node.is_starting(), "caught up, holding");
    assert!(matches!(c.put("k", "v"), Some(Err(Error::Unavailable(_)))));
    assert!(matches!(c.read(), Some(Err(Error::Unavailable(_)))));
    assert_eq!(c.node.poll_timeout(), Some(Time(1_500 * MS)));
    c.advance_to(Time(1_499 * MS));
    assert!(c.node.is_starting());
    c.advance_to(Time(1_500 * MS));
    assert!(!c.node.is_starting());
    assert!(is_ok(c.put("k", "v")));
    assert!(ready(c.read()));
}

/// The zombie: a resumed node whose lease ran out reads the lock, finds
/// the new writer and refuses the read (and is fenced: nothing was in
/// flight).
#[test]
fn a_taken_over_node_refuses_reads() {
    let b = bucket();
    let mut old = Rig::start("old", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(old.put("before", "1")));
    assert!(ready(old.read()));
    let mut new = Rig::start("new", MemEngine::new(), Vec::new(), &b);
    assert!(is_ok(new.put("after", "2")));
    // Within its lease the old node still answers (the new one held back
    // until the lease was over, so that read was current when it arrived).
    old.now = Time(300 * MS);
    assert!(ready(old.read()));
    old.now = Time(2_000 * MS);
    let answer = old.read();
    assert!(
        matches!(&answer, Some(Err(Error::Fenced(why))) if why.contains("new")),
        "{answer:?}"
    );
    assert!(
        old.node.fenced().is_some(),
        "nothing in flight: fenced at once"
    );
    assert_eq!(old.node.read_fast_until(), None);
    assert!(matches!(old.put("x", "3"), Some(Err(Error::Fenced(_)))));
}

/// A sync-mode upload in flight when the lock shows a new writer may still
/// land before its fence: reads are refused, but the node is not fenced
/// until the upload decides.
#[test]
fn an_upload_in_flight_decides_the_fence() {
    let b = bucket();
    let mut old = Rig::start("old", MemEngine::new(), Vec::new(), &b);
    old.hold_uploads = true;
    assert_eq!(old.put("pending", "1"), None, "upload in flight");
    let _new = Rig::start("new", MemEngine::new(), Vec::new(), &b);
    old.now = Time(2_000 * MS);
    assert!(matches!(old.read(), Some(Err(Error::Fenced(_)))));
    assert_eq!(old.node.fenced(), None, "the upload in flight decides");
    assert!(
        matches!(old.read(), Some(Err(Error::Fenced(_)))),
        "and reads stay refused"
    );
}

/// Lock reads that fail are retried while reads wait; a read that waited
/// `unavailable_after` is answered Unavailable; when the store answers
/// again reads flow.
#[test]
fn failed_lock_reads_make_reads_unavailable_then_recover() {
    let b = bucket();
    let mut a = Rig::start("a", MemEngine::new(), Vec::new(), &b);
    a.lock_reads_fail = true;
    assert_eq!(a.read(), None, "waiting for the lock read");
    let first = a.lock_reads;
    a.advance_to(Time(1_000 * MS));
    assert!(a.lock_reads > first, "retried with backoff");
    let unavailable_after = BucketConfig::default().unavailable_after_ns;
    a.advance_to(Time(unavailable_after));
    let answered = std::mem::take(&mut a.replies);
    assert!(
        answered
            .values()
            .all(|r| matches!(r, Err(Error::Unavailable(_))))
            && answered.len() == 1,
        "{answered:?}"
    );
    a.lock_reads_fail = false;
    a.now = Time(unavailable_after + 1);
    assert!(ready(a.read()));
    assert_eq!(a.node.failure(), None, "a store outage is not a failure");
}

/// Local mode: every read is served at once.
#[test]
fn local_mode_reads_need_no_lease() {
    let mut n = Node::new(NodeConfig::default(), MemEngine::new()).expect("open");
    n.recover(Time(0), Vec::new()).expect("recover");
    assert_eq!(n.read_fast_until(), Some(Time(u64::MAX)));
    n.handle_client(Time(0), ReqId(1), ClientRequest::LinearizableRead);
    assert!(matches!(
        n.take_actions().as_slice(),
        [Action::Reply {
            result: Ok(Response::ReadReady),
            ..
        }]
    ));
}
