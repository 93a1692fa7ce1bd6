//! Exact action sequences of the local-mode commit pipeline.

use super::*;
use crate::engine::MemEngine;
use crate::kv::{PutRequest, PutResponse, RangeRequest, TxnRequest};

fn node() -> Node<MemEngine> {
    Node::new(NodeConfig::default(), MemEngine::new()).expect("open")
}

fn put(key: &str, value: &str) -> ClientRequest {
    ClientRequest::Write(WriteRequest::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }))
}

fn entry(index: u64, key: &str, value: &str) -> Entry {
    let ClientRequest::Write(w) = put(key, value) else {
        unreachable!("put() builds a write")
    };
    Entry::write(Term(1), Index(index), w)
}

fn put_ok(revision: i64) -> Result<Response, Error> {
    Ok(Response::Write(WriteResponse::Put(PutResponse {
        revision,
        prev_kv: None,
    })))
}

const T0: Time = Time(0);

/// One put: append, sync, and nothing else until the sync completes.
#[test]
fn single_put_waits_for_fsync_before_reply() {
    let mut n = node();
    n.handle_client(T0, ReqId(7), put("a", "1"));
    assert_eq!(
        n.take_actions(),
        vec![
            Action::AppendWal {
                io: IoId(1),
                term: Term(1),
                entries: vec![entry(1, "a", "1")]
            },
            Action::SyncWal {
                io: IoId(2),
                term: Term(1),
                through: Index(1)
            },
        ]
    );
    // Not applied before durability: the engine is still at revision 1.
    assert_eq!(n.meta().current_revision, 1);
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(2),
            term: Term(1),
            through: Index(1),
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Reply {
            req: ReqId(7),
            result: put_ok(2)
        }]
    );
    assert_eq!(n.meta().applied_index, 1);
    assert!(n.is_idle());
}

/// Group commit: writes arriving during an fsync share the next one.
#[test]
fn writes_during_a_sync_form_one_batch() {
    let mut n = node();
    n.handle_client(T0, ReqId(1), put("a", "1"));
    assert_eq!(n.take_actions().len(), 2);
    n.handle_client(T0, ReqId(2), put("b", "2"));
    n.handle_client(T0, ReqId(3), put("c", "3"));
    assert_eq!(
        n.take_actions(),
        vec![],
        "nothing is written while a sync is in flight"
    );
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(2),
            term: Term(1),
            through: Index(1),
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Reply {
                req: ReqId(1),
                result: put_ok(2)
            },
            Action::AppendWal {
                io: IoId(3),
                term: Term(1),
                entries: vec![entry(2, "b", "2"), entry(3, "c", "3")],
            },
            Action::SyncWal {
                io: IoId(4),
                term: Term(1),
                through: Index(3)
            },
        ]
    );
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(4),
            term: Term(1),
            through: Index(3),
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Reply {
                req: ReqId(2),
                result: put_ok(3)
            },
            Action::Reply {
                req: ReqId(3),
                result: put_ok(4)
            },
        ]
    );
}

/// A batch never exceeds `batch_entries_max`; the rest waits for the next sync.
#[test]
fn batches_are_bounded() {
    let config = NodeConfig {
        batch_entries_max: 2,
        ..NodeConfig::default()
    };
    let mut n = Node::new(config, MemEngine::new()).expect("open");
    n.handle_client(T0, ReqId(1), put("a", "1"));
    n.take_actions();
    for (i, k) in ["b", "c", "d"].iter().enumerate() {
        n.handle_client(T0, ReqId(2 + i as u64), put(k, "x"));
    }
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(2),
            term: Term(1),
            through: Index(1),
        },
    );
    let actions = n.take_actions();
    assert_eq!(
        actions[1..],
        [
            Action::AppendWal {
                io: IoId(3),
                term: Term(1),
                entries: vec![entry(2, "b", "x"), entry(3, "c", "x")],
            },
            Action::SyncWal {
                io: IoId(4),
                term: Term(1),
                through: Index(3)
            },
        ]
    );
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(4),
            term: Term(1),
            through: Index(3),
        },
    );
    let actions = n.take_actions();
    assert_eq!(
        actions[2..],
        [
            Action::AppendWal {
                io: IoId(5),
                term: Term(1),
                entries: vec![entry(4, "d", "x")]
            },
            Action::SyncWal {
                io: IoId(6),
                term: Term(1),
                through: Index(4)
            },
        ]
    );
}

/// Invalid requests are answered at once and never reach the log.
#[test]
fn invalid_requests_never_reach_the_log() {
    let mut n = node();
    n.handle_client(T0, ReqId(1), put("", "v"));
    let too_big = "x".repeat(NodeConfig::default().request_bytes_max + 1);
    n.handle_client(T0, ReqId(2), put("k", &too_big));
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Reply {
                req: ReqId(1),
                result: Err(Error::InvalidArgument(Invalid::EmptyKey))
            },
            Action::Reply {
                req: ReqId(2),
                result: Err(Error::InvalidArgument(Invalid::RequestTooLarge)),
            },
        ]
    );
    assert_eq!(n.last_index(), Index(0));
}

/// A request that fails at apply time keeps its log index and changes nothing.
#[test]
fn apply_time_failure_takes_an_index_but_no_revision() {
    let mut n = node();
    let with_lease = ClientRequest::Write(WriteRequest::Put(PutRequest {
        key: "k".into(),
        lease: 99,
        ..PutRequest::default()
    }));
    n.handle_client(T0, ReqId(1), with_lease);
    n.take_actions();
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(2),
            term: Term(1),
            through: Index(1),
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Reply {
            req: ReqId(1),
            result: Err(Error::LeaseNotFound)
        }]
    );
    assert_eq!(n.meta().applied_index, 1);
    assert_eq!(n.meta().current_revision, 1);
}

/// A completion that does not match the batch in flight is dropped.
#[test]
fn stale_completions_are_dropped() {
    let mut n = node();
    n.handle_client(T0, ReqId(1), put("a", "1"));
    n.take_actions();
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(99),
            term: Term(1),
            through: Index(1),
        },
    );
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(2),
            term: Term(0),
            through: Index(1),
        },
    );
    n.handle_io(
        T0,
        IoDone::WalFailed {
            io: IoId(2),
            term: Term(0),
            error: "old".into(),
        },
    );
    assert_eq!(n.take_actions(), vec![]);
    assert_eq!(n.meta().applied_index, 0);
    assert_eq!(n.failure(), None);
}

/// A WAL failure fails every pending write and stops the write path.
#[test]
fn wal_failure_fails_pending_writes_and_stops_writes() {
    let mut n = node();
    n.handle_client(T0, ReqId(1), put("a", "1"));
    n.take_actions();
    n.handle_client(T0, ReqId(2), put("b", "2"));
    n.handle_io(
        T0,
        IoDone::WalFailed {
            io: IoId(2),
            term: Term(1),
            error: "EIO".into(),
        },
    );
    let actions = n.take_actions();
    let reqs: Vec<ReqId> = actions
        .iter()
        .map(|a| match a {
            Action::Reply {
                req,
                result: Err(Error::Internal(_)),
            } => *req,
            other => panic!("unexpected action {other:?}"),
        })
        .collect();
    assert_eq!(reqs, vec![ReqId(1), ReqId(2)]);
    assert!(n.failure().is_some());
    n.handle_client(T0, ReqId(3), put("c", "3"));
    assert!(matches!(
        n.take_actions().as_slice(),
        [Action::Reply {
            req: ReqId(3),
            result: Err(Error::Internal(_))
        }]
    ));
    assert!(n.is_idle());
}

/// Beyond `pending_max` writes are refused with back-pressure, not queued.
#[test]
fn pending_writes_are_bounded() {
    let config = NodeConfig {
        pending_max: 2,
        ..NodeConfig::default()
    };
    let mut n = Node::new(config, MemEngine::new()).expect("open");
    n.handle_client(T0, ReqId(1), put("a", "1"));
    n.handle_client(T0, ReqId(2), put("b", "1"));
    n.take_actions();
    n.handle_client(T0, ReqId(3), put("c", "1"));
    assert!(matches!(
        n.take_actions().as_slice(),
        [Action::Reply {
            req: ReqId(3),
            result: Err(Error::Unavailable(_))
        }]
    ));
}

/// After `trim_every_entries` applied entries the node asks for a WAL trim,
/// one at a time.
#[test]
fn trim_is_requested_after_enough_applied_entries() {
    let config = NodeConfig {
        trim_every_entries: 2,
        ..NodeConfig::default()
    };
    let mut n = Node::new(config, MemEngine::new()).expect("open");
    n.handle_client(T0, ReqId(1), put("a", "1"));
    n.handle_client(T0, ReqId(2), put("b", "1"));
    n.take_actions();
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(2),
            term: Term(1),
            through: Index(1),
        },
    );
    let actions = n.take_actions();
    assert!(!actions.iter().any(|a| matches!(a, Action::TrimWal { .. })));
    n.handle_io(
        T0,
        IoDone::WalSynced {
            io: IoId(4),
            term: Term(1),
            through: Index(2),
        },
    );
    assert_eq!(
        n.take_actions(),
        vec![
            Action::Reply {
                req: ReqId(2),
                result: put_ok(3)
            },
            Action::TrimWal {
                io: IoId(5),
                below: Index(3)
            },
        ]
    );
    assert!(!n.is_idle(), "a trim in flight keeps the node busy");
    n.handle_io(
        T0,
        IoDone::WalTrimmed {
            io: IoId(5),
            error: None,
        },
    );
    assert!(n.is_idle());
}

/// Recovery replays WAL entries after the engine's applied index, in order,
/// and new writes continue the log after them.
#[test]
fn recovery_replays_and_continues_the_log() {
    let engine = MemEngine::new();
    let mut n = Node::new(NodeConfig::default(), engine.clone()).expect("open");
    n.recover(Time(0), vec![entry(1, "a", "1"), entry(2, "b", "2")])
        .expect("recover");
    assert_eq!(n.meta().current_revision, 3);
    assert_eq!(n.last_index(), Index(2));
    // A second node over the same engine resumes at the applied index.
    let mut again = Node::new(NodeConfig::default(), engine.clone()).expect("reopen");
    assert_eq!(again.last_index(), Index(2));
    again.recover(Time(0), vec![]).expect("nothing to replay");
    again.handle_client(T0, ReqId(1), put("c", "3"));
    assert_eq!(
        again.take_actions()[0],
        Action::AppendWal {
            io: IoId(1),
            term: Term(1),
            entries: vec![entry(3, "c", "3")]
        }
    );
    let got = mvcc::range(
        &engine,
        &RangeRequest {
            key: "b".into(),
            ..RangeRequest::default()
        },
    )
    .expect("range");
    assert_eq!(got.kvs[0].value, b"2".to_vec());
}

/// Recovery refuses a gap between the engine and the WAL.
#[test]
#[should_panic(expected = "without a gap")]
fn recovery_refuses_a_gap() {
    let mut n = node();
    let _ = n.recover(Time(0), vec![entry(2, "a", "1")]);
}

/// A txn is logged even when it turns out read-only: which branch runs is
/// only known when it applies.
#[test]
fn txns_go_through_the_log() {
    let mut n = node();
    n.handle_client(
        T0,
        ReqId(1),
        ClientRequest::Write(WriteRequest::Txn(TxnRequest::default())),
    );
    assert!(matches!(n.take_actions()[0], Action::AppendWal { .. }));
}
