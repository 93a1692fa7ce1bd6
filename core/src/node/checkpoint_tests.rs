//! Bucket mode, checkpoints: when they are taken, that writes keep flowing
//! while one uploads, abandons, and a fenced node stopping.

use super::checkpoint::{TakenCheckpoint, RETRY_AFTER_ABANDON_NS};
use super::*;
use crate::bucket::checkpoint::LocalFile;
use crate::bucket::layout::{self, MANIFEST_LATEST};
use crate::bucket::lock::Member;
use crate::bucket::manifest::{CheckpointManifest, LatestPointer};
use crate::engine::MemEngine;
use crate::kv::PutRequest;
use crate::object::{MemBucket, ObjectOp, ObjectReply, PutCondition};

const SEC: u64 = 1_000_000_000;

/// One node on an in-memory bucket; actions run at once, except
/// checkpoint file uploads while `hold_files` (they wait in `held`) and
/// the local checkpoint while `fail_take`.
struct Rig {
    node: Node<MemEngine>,
    bucket: MemBucket,
    now: Time,
    replies: Vec<(ReqId, Result<Response, Error>)>,
    taken: Vec<(Term, Index)>,
    dropped: Vec<(Term, Index)>,
    hold_files: bool,
    /// Keep object deletes (GC) back too.
    hold_deletes: bool,
    held: Vec<Action>,
    fail_take: bool,
    next_req: u64,
}

impl Rig {
    fn new(every_entries: u64, interval_ns: u64) -> Rig {
        let config = NodeConfig {
            bucket: Some(BucketConfig {
                checkpoint_every_entries: every_entries,
                checkpoint_interval_ns: interval_ns,
                ..BucketConfig::default()
            }),
            ..NodeConfig::default()
        };
        let mut node = Node::new(config, MemEngine::new()).expect("open");
        node.recover(Time(0), Vec::new()).expect("recover");
        node.start_bucket(
            Time(0),
            Member {
                id: "a".into(),
                peer_addr: String::new(),
            },
        );
        let mut rig = Rig {
            node,
            bucket: MemBucket::new(),
            now: Time(0),
            replies: Vec::new(),
            taken: Vec::new(),
            dropped: Vec::new(),
            hold_files: false,
            hold_deletes: false,
            held: Vec::new(),
            fail_take: false,
            next_req: 0,
        };
        rig.pump();
        assert!(!rig.node.is_starting());
        rig
    }

    /// One action at a time, as the drivers poll them: `TakeCheckpoint`
    /// names the engine's index when it is polled.
    fn pump(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.execute(action);
        }
    }

    fn execute(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::AppendWal { .. } | Action::Watch(_) => {}
            Action::SyncWal { io, term, through } => {
                self.node
                    .handle_io(now, IoDone::WalSynced { io, term, through });
            }
            action @ Action::Object {
                op: ObjectOp::Delete { .. },
                ..
            } if self.hold_deletes => self.held.push(action),
            Action::Object { io, term, op } => {
                let result = self.bucket.execute(op);
                self.node
                    .handle_io(now, IoDone::Object { io, term, result });
            }
            Action::ResetWal { io, .. } => {
                self.node
                    .handle_io(now, IoDone::WalReset { io, error: None });
            }
            Action::TrimWal { io, .. } => {
                self.node
                    .handle_io(now, IoDone::WalTrimmed { io, error: None });
            }
            Action::Reply { req, result } => self.replies.push((req, result)),
            Action::TakeCheckpoint { io, term, index } => {
                // The engine is at `index` right now.
                assert_eq!(self.node.meta().applied_index, index.0);
                self.taken.push((term, index));
                let result = if self.fail_take {
                    Err("disk full".to_owned())
                } else {
                    Ok(TakenCheckpoint {
                        files: vec![
                            LocalFile {
                                name: format!("{:06}.sst", index.0),
                                size_bytes: 5,
                                sha256: format!("{:064x}", index.0),
                            },
                            LocalFile {
                                name: "CURRENT".into(),
                                size_bytes: 3,
                                sha256: "c".repeat(64),
                            },
                        ],
                        created_unix_ms: 7,
                    })
                };
                self.node
                    .handle_io(now, IoDone::CheckpointTaken { io, result });
            }
            action @ Action::UploadCheckpointFile { .. } if self.hold_files => {
                self.held.push(action);
            }
            Action::UploadCheckpointFile {
                io,
                term,
                name,
                key,
                condition,
                ..
            } => {
                let result = self.bucket.execute(ObjectOp::Put {
                    key,
                    body: name.into_bytes().into(),
                    condition,
                });
                self.node
                    .handle_io(now, IoDone::Object { io, term, result });
            }
            Action::DropCheckpoint { term, index } => self.dropped.push((term, index)),
            Action::ReadWal { .. } => panic!("sync mode never reads its WAL back"),
            Action::Send { .. }
            | Action::TruncateWal { .. }
            | Action::SaveHardState { .. }
            | Action::StartOver { .. } => {
                panic!("no cluster runs in these tests: {action:?}")
            }
        }
    }

    fn release_held(&mut self) {
        self.hold_files = false;
        self.hold_deletes = false;
        for action in std::mem::take(&mut self.held) {
            self.execute(action);
        }
        self.pump();
    }

    fn put(&mut self, key: &str) {
        self.next_req += 1;
        let write = WriteRequest::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        self.node
            .handle_client(self.now, ReqId(self.next_req), ClientRequest::Write(write));
        self.pump();
    }

    fn tick_to(&mut self, at: Time) {
        self.now = at;
        self.node.handle_timeout(at);
        self.pump();
    }

    fn latest(&mut self) -> Option<LatestPointer> {
        match self.bucket.execute(ObjectOp::Get {
            key: MANIFEST_LATEST.into(),
        }) {
            Ok(ObjectReply::Got { body, .. }) => Some(LatestPointer::decode(&body).unwrap()),
            _ => None,
        }
    }

    fn manifest(&mut self, term: Term, index: Index) -> CheckpointManifest {
        let key = layout::checkpoint_manifest_key(term, index);
        match self.bucket.execute(ObjectOp::Get { key: key.clone() }) {
            Ok(ObjectReply::Got { body, .. }) => CheckpointManifest::decode(&key, &body).unwrap(),
            other => panic!("no manifest {key}: {other:?}"),
        }
    }

    fn no_abandon(&self) {
        assert_eq!(self.node.checkpoint_stats().last_abandoned, None);
    }

    fn all_ok(&self) -> bool {
        self.replies.iter().all(|(_, r)| r.is_ok())
    }
}

#[test]
fn a_checkpoint_is_taken_after_the_configured_number_of_entries() {
    // The start-up's barrier is entry 1 (it counts); puts are 2, 3 …
    let mut r = Rig::new(5, 0);
    for k in ["a", "b", "c"] {
        r.put(k);
    }
    assert!(r.taken.is_empty(), "4 entries: not yet");
    r.put("d");
    let term = r.node.term();
    assert_eq!(r.taken, vec![(term, Index(5))]);
    assert_eq!(
        r.dropped,
        vec![(term, Index(5))],
        "the local folder is freed"
    );
    assert_eq!(
        r.latest(),
        Some(LatestPointer::to_checkpoint(term, Index(5)))
    );
    let m = r.manifest(term, Index(5));
    assert_eq!(m.revision.0, r.node.meta().current_revision);
    assert_eq!(m.ssts.len(), 1);
    assert_eq!(m.meta_files.len(), 1);
    assert_eq!(m.created_unix_ms, 7);
    assert_eq!(r.node.checkpoint_stats().completed, 1);
    assert_eq!(r.node.checkpoint_stats().last, Some((term, Index(5))));
    assert!(r.all_ok());
    // The next one comes five entries later.
    for k in ["f", "g", "h", "i", "j"] {
        r.put(k);
    }
    assert_eq!(r.taken.len(), 2);
    assert_eq!(r.latest().unwrap().index, Index(10));
}

#[test]
fn writes_keep_flowing_while_a_checkpoint_uploads_and_only_one_runs() {
    let mut r = Rig::new(2, 0);
    r.hold_files = true;
    r.put("a");
    r.put("b");
    assert_eq!(r.taken.len(), 1, "due at entry 2 (the barrier is 1)");
    assert!(!r.held.is_empty(), "its first file waits");
    for i in 0..10 {
        r.put(&format!("k{i}"));
    }
    assert_eq!(r.replies.len(), 12, "every write answered meanwhile");
    assert!(r.all_ok());
    assert_eq!(r.taken.len(), 1, "no second checkpoint while one runs");
    assert!(r.node.is_checkpointing());
    r.release_held();
    // Far more than 2 entries were applied meanwhile: the next checkpoint
    // starts as soon as the first one is done (and here completes at once).
    assert!(!r.node.is_checkpointing());
    assert_eq!(r.taken.len(), 2);
    assert_eq!(r.latest().unwrap().index, Index(13));
    r.put("y");
    assert_eq!(r.taken.len(), 2, "one entry since: not due");
    r.put("z");
    assert_eq!(r.taken.len(), 3);
    assert_eq!(r.latest().unwrap().index, Index(15));
}

#[test]
fn the_interval_starts_a_checkpoint_only_if_something_was_applied() {
    let mut r = Rig::new(0, 60 * SEC);
    // The barrier was applied at start: the first interval has work.
    let due = r.node.poll_timeout().expect("a checkpoint timer");
    assert_eq!(due, Time(60 * SEC));
    r.tick_to(Time(30 * SEC));
    assert!(r.taken.is_empty());
    r.tick_to(due);
    assert_eq!(r.taken.len(), 1);
    r.no_abandon();
    // Nothing new applied: no timer for checkpoints any more.
    assert_eq!(r.node.poll_timeout(), None);
    r.tick_to(Time(100 * SEC));
    assert_eq!(r.taken.len(), 1);
    // A write makes the next interval (from the last checkpoint) due.
    r.put("a");
    assert_eq!(r.node.poll_timeout(), Some(Time(120 * SEC)));
    r.tick_to(Time(120 * SEC));
    assert_eq!(r.taken.len(), 2);
    r.no_abandon();
}

#[test]
fn an_abandoned_checkpoint_is_retried_only_after_a_pause() {
    let mut r = Rig::new(1, 0);
    r.fail_take = true;
    r.put("a");
    assert_eq!(r.taken.len(), 1);
    assert_eq!(r.node.checkpoint_stats().abandoned, 1);
    assert_eq!(r.dropped.len(), 1, "a failed folder is freed too");
    assert_eq!(r.latest(), None);
    r.fail_take = false;
    r.put("b");
    assert_eq!(r.taken.len(), 1, "not again right away");
    r.now = Time(RETRY_AFTER_ABANDON_NS);
    r.put("c");
    assert_eq!(r.taken.len(), 2);
    assert_eq!(r.node.checkpoint_stats().completed, 1);
    assert!(r.latest().is_some());
    assert!(r.all_ok());
}

#[test]
fn a_fenced_node_writes_nothing_more_for_its_checkpoint() {
    let mut r = Rig::new(1, 0);
    r.hold_files = true;
    r.put("a");
    assert_eq!(r.taken.len(), 1);
    // Another node takes over and writes the next WAL object first.
    let next = Index(r.node.last_index().0 + 1);
    r.bucket
        .execute(ObjectOp::Put {
            key: layout::wal_key(next),
            body: b"someone else".to_vec().into(),
            condition: PutCondition::IfAbsent,
        })
        .unwrap();
    r.put("b");
    assert!(r.node.fenced().is_some());
    r.release_held();
    assert!(!r.node.is_checkpointing());
    assert_eq!(r.dropped.len(), 1);
    assert_eq!(
        r.latest(),
        None,
        "no manifest or pointer from a fenced node"
    );
    let (term, index) = r.taken[0];
    let manifest_key = layout::checkpoint_manifest_key(term, index);
    assert!(r.bucket.iter().all(|(k, _)| k != manifest_key));
}

/// A takeover while the checkpoint's files upload, before any WAL object
/// collides: the lease check before the manifest finds the other writer in
/// the lock, so neither the manifest nor `manifest/latest` is written (a
/// zombie must not publish a checkpoint whose reused SSTs GC may take).
#[test]
fn a_checkpoint_is_not_published_after_the_lock_changed() {
    let mut r = Rig::new(1, 0);
    r.hold_files = true;
    r.put("a");
    assert_eq!(r.taken.len(), 1);
    let (etag, current) = match r.bucket.execute(ObjectOp::Get {
        key: layout::LEADER_LOCK.into(),
    }) {
        Ok(ObjectReply::Got { body, etag }) => (
            etag,
            crate::bucket::lock::LeaderLock::decode(&body).unwrap(),
        ),
        other => panic!("no lock: {other:?}"),
    };
    let other = Member {
        id: "b".into(),
        peer_addr: String::new(),
    };
    let claim = crate::bucket::lock::claim(Some((&current, &etag)), &other);
    r.bucket.execute(claim.op()).expect("b claims the lock");
    // Past the lease, the files finish uploading.
    r.now = Time(r.now.0 + 10 * SEC);
    r.release_held();
    assert!(!r.node.is_checkpointing(), "the checkpoint stopped");
    assert_eq!(r.dropped.len(), 1);
    assert_eq!(r.latest(), None, "no pointer");
    let (term, index) = r.taken[0];
    let manifest_key = layout::checkpoint_manifest_key(term, index);
    assert!(
        r.bucket.iter().all(|(k, _)| k != manifest_key),
        "no manifest"
    );
}

#[test]
fn each_checkpoint_is_followed_by_a_gc_pass_keeping_the_newest() {
    // Default gc_keep: 3.
    let mut r = Rig::new(3, 0);
    for i in 0..30 {
        r.put(&format!("k{i}"));
    }
    let stats = r.node.checkpoint_stats().clone();
    assert_eq!(stats.completed, 10, "{stats:?}");
    assert_eq!(stats.gc_passes, 10);
    assert_eq!(stats.gc_last_error, None);
    assert!(stats.gc_deleted > 0);
    let manifests: Vec<String> = r
        .bucket
        .iter()
        .map(|(k, _)| k.to_owned())
        .filter(|k| layout::parse_checkpoint_manifest_key(k).is_some())
        .collect();
    assert_eq!(manifests.len(), 3, "{manifests:?}");
    // WAL objects covered by the oldest kept checkpoint are gone, except
    // the first (it may be a fence); the rest are there.
    let oldest = manifests
        .iter()
        .filter_map(|k| layout::parse_checkpoint_manifest_key(k))
        .map(|(_, i)| i.0)
        .min()
        .unwrap();
    let wal: Vec<u64> = r
        .bucket
        .iter()
        .filter_map(|(k, _)| layout::parse_wal_key(k))
        .map(|i| i.0)
        .collect();
    assert_eq!(wal[0], 1, "the first object (the start-up fence) stays");
    assert!(
        wal[1] >= oldest,
        "covered objects are deleted: {wal:?}, oldest {oldest}"
    );
    assert_eq!(*wal.last().unwrap(), r.node.last_index().0);
    assert!(r.all_ok());
}

#[test]
fn no_checkpoint_starts_while_the_gc_pass_runs() {
    let mut r = Rig::new(1, 0);
    for k in ["a", "b", "c"] {
        r.put(k);
    }
    assert_eq!(r.taken.len(), 3);
    // The fourth checkpoint's pass has something to delete: hold it there.
    r.hold_deletes = true;
    r.put("d");
    assert_eq!(r.taken.len(), 4);
    assert!(!r.held.is_empty(), "the pass waits on a delete");
    assert!(r.node.is_checkpointing());
    r.put("e");
    r.put("f");
    assert_eq!(r.taken.len(), 4, "no checkpoint during the pass");
    assert!(r.all_ok() && r.replies.len() == 6, "writes flow meanwhile");
    r.release_held();
    // The pass ends; "e" and "f" made the next checkpoint due: it runs now.
    assert!(!r.node.is_checkpointing());
    assert_eq!(r.taken.len(), 5);
    assert_eq!(r.node.checkpoint_stats().gc_passes, 5);
    r.put("g");
    assert_eq!(r.taken.len(), 6);
}

#[test]
fn a_checkpoint_names_the_index_the_engine_is_at_when_the_driver_gets_to_it() {
    // A driver works through its actions in order and feeds the node an
    // input for some of them (a WAL sync, an upload's answer) before it
    // reaches a TakeCheckpoint queued behind them; entries may apply
    // meanwhile. The checkpoint is of the engine as the driver finds it.
    let mut r = Rig::new(5, 0);
    for k in ["a", "b", "c"] {
        r.put(k);
    }
    let submit = |r: &mut Rig, key: &str| {
        r.next_req += 1;
        let write = WriteRequest::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        r.node
            .handle_client(r.now, ReqId(r.next_req), ClientRequest::Write(write));
    };
    // Entry 5 applies and makes a checkpoint due.
    submit(&mut r, "d");
    let take = loop {
        let queued = r.node.actions.iter();
        if let Some(i) = queued
            .clone()
            .position(|a| matches!(a, Action::TakeCheckpoint { .. }))
        {
            break r.node.actions.remove(i).expect("found");
        }
        let action = r.node.poll_action().expect("entry 5 applies");
        r.execute(action);
    };
    // Entry 6 applies before the driver gets to the checkpoint.
    submit(&mut r, "e");
    r.pump();
    assert_eq!(r.node.meta().applied_index, 6);
    r.node.actions.push_front(take);
    // The rig checks that the engine is at the index the action names.
    r.pump();
    let term = r.node.term();
    assert_eq!(r.taken, vec![(term, Index(6))]);
    assert_eq!(
        r.latest(),
        Some(LatestPointer::to_checkpoint(term, Index(6)))
    );
    let m = r.manifest(term, Index(6));
    assert_eq!(m.revision.0, r.node.meta().current_revision);
    r.no_abandon();
}
