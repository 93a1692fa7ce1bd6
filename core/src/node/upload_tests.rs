//! Exact action sequences of bucket mode (sync): upload after fsync, the
//! lost-answer and fenced cases, outages.

use super::*;
use crate::bucket::{layout, wal_object};
use crate::engine::MemEngine;
use crate::kv::{PutRequest, PutResponse};
use crate::object::{ETag, ObjectError, ObjectOp, ObjectReply, PutCondition};

const T0: Time = Time(0);
const MS: u64 = 1_000_000;

fn node() -> Node<MemEngine> {
    let config = NodeConfig {
        bucket: Some(BucketConfig {
            unavailable_after_ns: 1_000 * MS,
            retry_backoff_min_ns: 10 * MS,
            retry_backoff_max_ns: 80 * MS,
            checkpoint_every_entries: 0,
            checkpoint_interval_ns: 0,
            gc_keep: 0,
            ..BucketConfig::default()
        }),
        ..NodeConfig::default()
    };
    Node::new(config, MemEngine::new()).expect("open")
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

fn synced(n: &mut Node<MemEngine>, now: Time, io: u64, through: u64) {
    n.handle_io(
        now,
        IoDone::WalSynced {
            io: IoId(io),
            term: Term(1),
            through: Index(through),
        },
    );
}

fn object_done(n: &mut Node<MemEngine>, now: Time, io: u64, result: ObjectResult) {
    n.handle_io(
        now,
        IoDone::Object {
            io: IoId(io),
            term: Term(1),
            result,
        },
    );
}

fn put_etag() -> ObjectResult {
    Ok(ObjectReply::Put {
        etag: ETag("\"e\"".into()),
    })
}

/// The object the node must upload for entries `first..` of `batch`.
fn wal_put(io: u64, batch: &[Entry]) -> Action {
    Action::Object {
        io: IoId(io),
        term: Term(1),
        op: ObjectOp::Put {
            key: layout::wal_key(Index(batch[0].index)),
            body: wal_object::encode(Term(1), batch),
            condition: PutCondition::IfAbsent,
        },
    }
}

/// Starts one put and completes its fsync: the upload is in flight (io 3).
fn one_put_uploading() -> Node<MemEngine> {
    let mut n = node();
    n.handle_client(T0, ReqId(7), put("a", "1"));
    assert_eq!(n.take_actions().len(), 2, "append + sync");
    synced(&mut n, T0, 2, 1);
    assert_eq!(n.take_actions(), vec![wal_put(3, &[entry(1, "a", "1")])]);
    n
}

/// The fsync is not enough: the reply waits for the WAL object.
#[test]
fn reply_waits_for_the_upload() {
    let mut n = one_put_uploading();
    assert_eq!(
        n.meta().current_revision,
        1,
        "not applied before the upload"
    );
    object_done(&mut n, T0, 3, put_etag());
    assert_eq!(
        n.take_actions(),
        vec![Action::Reply {
            req: ReqId(7),
            result: put_ok(2)
        }]
    );
    assert!(n.is_idle());
}

/// Writes arriving during an upload share the next batch and the next object.
#[test]
fn writes_during_an_upload_form_one_object() {
    let mut n = one_put_uploading();
    n.handle_client(T0, ReqId(8), put("b", "2"));
    n.handle_client(T0, ReqId(9), put("c", "3"));
    assert!(n.take_actions().is_empty(), "one batch in flight at a time");
    object_done(&mut n, T0, 3, put_etag());
    let actions = n.take_actions();
    assert_eq!(actions.len(), 3, "reply, append, sync: {actions:?}");
    synced(&mut n, T0, 5, 3);
    assert_eq!(
        n.take_actions(),
        vec![wal_put(6, &[entry(2, "b", "2"), entry(3, "c", "3")])]
    );
}

/// 412 then the same bytes: our own earlier attempt landed (lost answer).
#[test]
fn precondition_failed_on_our_own_object_is_success() {
    let mut n = one_put_uploading();
    object_done(&mut n, T0, 3, Err(ObjectError::PreconditionFailed));
    let key = layout::wal_key(Index(1));
    assert_eq!(
        n.take_actions(),
        vec![Action::Object {
            io: IoId(4),
            term: Term(1),
            op: ObjectOp::Get { key: key.clone() }
        }]
    );
    let body = wal_object::encode(Term(1), &[entry(1, "a", "1")]);
    object_done(
        &mut n,
        T0,
        4,
        Ok(ObjectReply::Got {
            body,
            etag: ETag("\"e\"".into()),
        }),
    );
    assert_eq!(
        n.take_actions(),
        vec![Action::Reply {
            req: ReqId(7),
            result: put_ok(2)
        }]
    );
}

/// 412 then other bytes: another node wrote our index. Nothing pending is
/// applied; every writer, now and later, is told Fenced.
#[test]
fn another_writer_at_our_index_fences_the_node() {
    let mut n = one_put_uploading();
    n.handle_client(T0, ReqId(8), put("b", "2"));
    object_done(&mut n, T0, 3, Err(ObjectError::PreconditionFailed));
    n.take_actions();
    let theirs = wal_object::encode(Term(2), &[Entry::barrier(Term(2), Index(1))]);
    object_done(
        &mut n,
        T0,
        4,
        Ok(ObjectReply::Got {
            body: theirs,
            etag: ETag("\"x\"".into()),
        }),
    );
    let actions = n.take_actions();
    let reqs: Vec<ReqId> = actions
        .iter()
        .map(|a| match a {
            Action::Reply {
                req,
                result: Err(Error::Fenced(_)),
            } => *req,
            other => panic!("only Fenced replies expected, got {other:?}"),
        })
        .collect();
    assert_eq!(reqs, [ReqId(7), ReqId(8)]);
    assert_eq!(n.meta().current_revision, 1, "nothing applied");
    assert!(n.fenced().is_some());
    n.handle_client(T0, ReqId(9), put("c", "3"));
    assert!(matches!(
        n.take_actions().as_slice(),
        [Action::Reply {
            req: ReqId(9),
            result: Err(Error::Fenced(_))
        }]
    ));
}

/// 409 then not found: nobody owns the index; put again after a backoff.
#[test]
fn conflict_then_missing_object_retries_the_put() {
    let mut n = one_put_uploading();
    object_done(&mut n, T0, 3, Err(ObjectError::PreconditionFailed));
    n.take_actions();
    object_done(&mut n, T0, 4, Err(ObjectError::NotFound));
    assert!(n.take_actions().is_empty(), "backing off");
    assert_eq!(n.poll_timeout(), Some(Time(10 * MS)));
    n.handle_timeout(Time(10 * MS));
    assert_eq!(n.take_actions(), vec![wal_put(5, &[entry(1, "a", "1")])]);
}

/// Retryable failures back off (doubling, capped); a stale completion of an
/// abandoned attempt is ignored.
#[test]
fn retryable_failures_back_off() {
    let mut n = one_put_uploading();
    let mut now = T0;
    let mut io = 3;
    for expected_ms in [10, 20, 40, 80, 80] {
        object_done(&mut n, now, io, Err(ObjectError::Retryable("503".into())));
        assert!(n.take_actions().is_empty());
        let at = n.poll_timeout().expect("a retry timer");
        assert_eq!(at.0 - now.0, expected_ms * MS);
        now = at;
        n.handle_timeout(now);
        io += 1;
        assert_eq!(n.take_actions(), vec![wal_put(io, &[entry(1, "a", "1")])]);
    }
    object_done(&mut n, now, 3, put_etag());
    assert!(
        n.take_actions().is_empty(),
        "a stale completion changes nothing"
    );
    object_done(&mut n, now, io, put_etag());
    assert_eq!(n.take_actions().len(), 1, "the reply");
}

/// A long outage: the batch's writer is told Timeout (it may still land),
/// queued and new writes are refused; when the bucket answers again the
/// batch applies without a second reply and writes flow again.
#[test]
fn outage_times_out_writers_and_recovers() {
    let mut n = one_put_uploading();
    n.handle_client(T0, ReqId(8), put("b", "2"));
    let mut now = T0;
    let mut io = Some(3);
    let mut answers = Vec::new();
    // Fail every attempt until the node gives up on answering in time.
    for _ in 0..100 {
        if let Some(current) = io.take() {
            object_done(
                &mut n,
                now,
                current,
                Err(ObjectError::Retryable("timeout".into())),
            );
        }
        if n.bucket_down().is_none() {
            now = n.poll_timeout().expect("a retry or the deadline");
            n.handle_timeout(now);
        }
        for action in n.take_actions() {
            match action {
                Action::Object { io: next, .. } => io = Some(next.0),
                reply => answers.push(reply),
            }
        }
        if n.bucket_down().is_some() {
            break;
        }
    }
    assert!(
        now.0 >= 1_000 * MS,
        "gave up at {now:?}, before the deadline"
    );
    assert!(
        matches!(
            answers.as_slice(),
            [
                Action::Reply {
                    req: ReqId(7),
                    result: Err(Error::Timeout(_))
                },
                Action::Reply {
                    req: ReqId(8),
                    result: Err(Error::Unavailable(_))
                },
            ]
        ),
        "{answers:?}"
    );
    n.handle_client(now, ReqId(9), put("c", "3"));
    assert!(matches!(
        n.take_actions().as_slice(),
        [Action::Reply {
            req: ReqId(9),
            result: Err(Error::Unavailable(_))
        }]
    ));
    if io.is_none() {
        now = n.poll_timeout().expect("still retrying");
        n.handle_timeout(now);
        for action in n.take_actions() {
            if let Action::Object { io: next, .. } = action {
                io = Some(next.0);
            }
        }
    }
    object_done(&mut n, now, io.expect("an attempt"), put_etag());
    assert!(n.take_actions().is_empty(), "no second answer for req 7");
    assert_eq!(
        n.meta().current_revision,
        2,
        "the batch applied when it landed"
    );
    assert!(n.bucket_down().is_none());
    n.handle_client(now, ReqId(10), put("d", "4"));
    assert_eq!(n.take_actions().len(), 2, "accepted: append + sync");
}

/// Local mode never touches a bucket.
#[test]
fn local_mode_emits_no_object_actions() {
    let mut n = Node::new(NodeConfig::default(), MemEngine::new()).expect("open");
    n.handle_client(T0, ReqId(1), put("a", "1"));
    n.take_actions();
    synced(&mut n, T0, 2, 1);
    let actions = n.take_actions();
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Object { .. })),
        "{actions:?}"
    );
}

/// The deadline is a timer: writers hear `Timeout` on time even while an
/// attempt is still running; the late success then applies silently.
#[test]
fn the_deadline_does_not_wait_for_a_hanging_attempt() {
    let mut n = one_put_uploading();
    assert_eq!(
        n.poll_timeout(),
        Some(Time(1_000 * MS)),
        "the deadline timer"
    );
    n.handle_timeout(Time(1_000 * MS));
    assert!(matches!(
        n.take_actions().as_slice(),
        [Action::Reply {
            req: ReqId(7),
            result: Err(Error::Timeout(_))
        }]
    ));
    assert!(n.bucket_down().is_some());
    assert_eq!(n.poll_timeout(), None, "nothing to time any more");
    object_done(&mut n, Time(1_500 * MS), 3, put_etag());
    assert!(n.take_actions().is_empty());
    assert_eq!(n.meta().current_revision, 2);
    assert!(n.bucket_down().is_none());
}
