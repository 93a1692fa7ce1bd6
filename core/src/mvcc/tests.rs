//! Unit tests of the store through its public API, with exact expectations.
//! Most run through the testkit [`Harness`], which also checks every answer
//! against the reference model.

use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message;

use super::keys::{self, MetaRecord, Rev, VersionRecord};
use super::*;
use crate::engine::{BatchOp, KvEngine, MemEngine, MemSnapshot, ScanIter};
use crate::kv::{
    CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue, OpResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp, TargetUnion, TxnResponse,
    WriteRequest,
};
use crate::log::Barrier;
use crate::testkit::req::{
    all_at, cmp, compact, del, exists, get_at, kv, op, put, range as span, txn, txn_w,
};
use crate::testkit::Harness;

fn harness() -> Harness<MemEngine> {
    Harness::new(MemEngine::new(), "unit test")
}

fn put_w(key: &[u8], value: &[u8]) -> WriteRequest {
    WriteRequest::Put(put(key, value))
}

fn del_w(key: &[u8], range_end: &[u8], prev_kv: bool) -> WriteRequest {
    WriteRequest::DeleteRange(DeleteRangeRequest {
        prev_kv,
        ..del(key, range_end)
    })
}

fn get(h: &mut Harness<MemEngine>, req: RangeRequest) -> Vec<KeyValue> {
    h.read(req).expect("range").kvs
}

fn txn_resp(resp: Result<WriteResponse, Error>) -> TxnResponse {
    match resp {
        Ok(WriteResponse::Txn(t)) => t,
        other => panic!("expected a txn answer, got {other:?}"),
    }
}

fn range_op(revision: i64, kvs: Vec<KeyValue>) -> ResponseOp {
    let count = kvs.len() as i64;
    ResponseOp {
        response: Some(OpResponse::Range(RangeResponse {
            revision,
            kvs,
            more: false,
            count,
        })),
    }
}

fn put_op(revision: i64, prev_kv: Option<KeyValue>) -> ResponseOp {
    ResponseOp {
        response: Some(OpResponse::Put(PutResponse { revision, prev_kv })),
    }
}

fn del_op(revision: i64, deleted: i64, prev_kvs: Vec<KeyValue>) -> ResponseOp {
    ResponseOp {
        response: Some(OpResponse::DeleteRange(DeleteRangeResponse {
            revision,
            deleted,
            prev_kvs,
        })),
    }
}

/// An empty engine is a store at revision 1 with nothing in it.
#[test]
fn empty_store_is_at_revision_1() {
    let e = MemEngine::new();
    let s = Store::open(&e).expect("open");
    assert_eq!(
        *s.meta(),
        Meta {
            current_revision: 1,
            compact_revision: -1,
            applied_index: 0,
            applied_term: 0
        }
    );
    assert_eq!(
        range(&e, &all_at(0)),
        Ok(RangeResponse {
            revision: 1,
            kvs: vec![],
            more: false,
            count: 0
        })
    );
    assert_eq!(range(&e, &all_at(1)).map(|r| r.count), Ok(0));
    assert_eq!(range(&e, &all_at(2)), Err(Error::FutureRevision));
}

/// The worked example of the module doc, line by line.
#[test]
fn one_key_worked_example() {
    let mut h = harness();
    assert_eq!(
        h.write(put_w(b"a", b"x")),
        Ok(WriteResponse::Put(PutResponse {
            revision: 2,
            prev_kv: None
        }))
    );
    assert_eq!(
        h.write(WriteRequest::Put(PutRequest {
            prev_kv: true,
            ..put(b"a", b"y")
        })),
        Ok(WriteResponse::Put(PutResponse {
            revision: 3,
            prev_kv: Some(kv(b"a", b"x", 2, 2, 1))
        }))
    );
    assert_eq!(
        h.write(del_w(b"a", b"", false)),
        Ok(WriteResponse::DeleteRange(DeleteRangeResponse {
            revision: 4,
            deleted: 1,
            prev_kvs: vec![]
        }))
    );
    assert_eq!(
        h.write(del_w(b"a", b"", true)),
        Ok(WriteResponse::DeleteRange(DeleteRangeResponse {
            revision: 4,
            deleted: 0,
            prev_kvs: vec![]
        }))
    );
    assert_eq!(
        h.write(WriteRequest::Put(PutRequest {
            prev_kv: true,
            ..put(b"a", b"z")
        })),
        Ok(WriteResponse::Put(PutResponse {
            revision: 5,
            prev_kv: None
        })),
        "no prev_kv after a delete"
    );
    assert_eq!(
        get(&mut h, get_at(b"a", 0)),
        vec![kv(b"a", b"z", 5, 5, 1)],
        "version restarts at 1"
    );
    assert_eq!(
        h.read(get_at(b"a", 3)),
        Ok(RangeResponse {
            revision: 5,
            kvs: vec![kv(b"a", b"y", 2, 3, 2)],
            more: false,
            count: 1
        })
    );
    assert_eq!(
        h.read(get_at(b"a", 4)),
        Ok(RangeResponse {
            revision: 5,
            kvs: vec![],
            more: false,
            count: 0
        })
    );
    assert_eq!(
        h.write(compact(4)),
        Ok(WriteResponse::Compaction(crate::kv::CompactionResponse {
            revision: 5
        }))
    );
    assert_eq!(
        h.read(get_at(b"a", 3)),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(get(&mut h, get_at(b"a", 4)), vec![]);
    assert_eq!(
        h.meta(),
        Meta {
            current_revision: 5,
            compact_revision: 4,
            applied_index: 6,
            applied_term: 1
        }
    );
}

/// The engine holds exactly the records of the keys.rs worked example.
#[test]
fn engine_layout_matches_worked_example() {
    let mut h = harness();
    h.write(put_w(b"a", b"x")).expect("put");
    h.write(txn_w(
        vec![],
        vec![op(put(b"a", b"y")), op(put(b"b\0", b"z"))],
        vec![],
    ))
    .expect("txn");
    h.write(del_w(b"a", b"", false)).expect("delete");
    let rec = |create, modr, version, value: &[u8]| {
        VersionRecord {
            create_revision: create,
            mod_revision: modr,
            version,
            value: value.to_vec(),
            lease: 0,
            tombstone: false,
        }
        .encode_to_vec()
    };
    let tomb = |modr| {
        VersionRecord {
            mod_revision: modr,
            tombstone: true,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let log = |key: &[u8], kind: EventKind| {
        keys::RevLogRecord {
            key: key.to_vec(),
            kind: kind as i32,
        }
        .encode_to_vec()
    };
    let meta = MetaRecord {
        current_revision: 4,
        compact_revision: -1,
        applied_index: 3,
        applied_term: 1,
    }
    .encode_to_vec();
    let r = |main, sub| Rev { main, sub };
    let mut want = vec![
        (keys::current_key(b"b\0"), rec(3, 3, 1, b"z")),
        (keys::history_key(b"a", r(4, 0)), tomb(4)),
        (keys::history_key(b"a", r(3, 0)), rec(2, 3, 2, b"y")),
        (keys::history_key(b"a", r(2, 0)), rec(2, 2, 1, b"x")),
        (keys::history_key(b"b\0", r(3, 1)), rec(3, 3, 1, b"z")),
        (keys::META_KEY.to_vec(), meta),
        (keys::revlog_key(r(2, 0)), log(b"a", EventKind::Put)),
        (keys::revlog_key(r(3, 0)), log(b"a", EventKind::Put)),
        (keys::revlog_key(r(3, 1)), log(b"b\0", EventKind::Put)),
        (keys::revlog_key(r(4, 0)), log(b"a", EventKind::Delete)),
    ];
    want.sort();
    let got: Vec<_> = h
        .engine()
        .scan(b"", None)
        .collect::<Result<_, _>>()
        .expect("scan");
    assert_eq!(got, want);
    assert_eq!(
        key_history(h.engine(), b"a").expect("history"),
        vec![
            KeyVersion {
                rev: r(2, 0),
                kv: Some(kv(b"a", b"x", 2, 2, 1))
            },
            KeyVersion {
                rev: r(3, 0),
                kv: Some(kv(b"a", b"y", 2, 3, 2))
            },
            KeyVersion {
                rev: r(4, 0),
                kv: None
            },
        ]
    );
    let events = revision_log(h.engine(), 3).expect("log");
    assert_eq!(
        events.iter().map(|e| (e.rev, e.kind)).collect::<Vec<_>>(),
        vec![
            (r(3, 0), EventKind::Put),
            (r(3, 1), EventKind::Put),
            (r(4, 0), EventKind::Delete)
        ]
    );
}

/// Delete forms: [a, c) with prev_kvs, from-key, reversed (nothing, no revision).
#[test]
fn delete_range_forms() {
    let mut h = harness();
    for k in [&b"a"[..], b"b", b"c", b"d"] {
        h.write(put_w(k, k)).expect("put"); // revs 2..=5
    }
    assert_eq!(
        h.write(del_w(b"a", b"c", true)),
        Ok(WriteResponse::DeleteRange(DeleteRangeResponse {
            revision: 6,
            deleted: 2,
            prev_kvs: vec![kv(b"a", b"a", 2, 2, 1), kv(b"b", b"b", 3, 3, 1)]
        }))
    );
    assert_eq!(
        h.write(del_w(b"d", b"a", true)),
        Ok(WriteResponse::DeleteRange(DeleteRangeResponse {
            revision: 6,
            deleted: 0,
            prev_kvs: vec![]
        }))
    );
    assert_eq!(
        h.write(del_w(b"c\0", b"\0", false)),
        Ok(WriteResponse::DeleteRange(DeleteRangeResponse {
            revision: 7,
            deleted: 1,
            prev_kvs: vec![]
        }))
    );
    assert_eq!(get(&mut h, all_at(0)), vec![kv(b"c", b"c", 4, 4, 1)]);
    // Both deletes of revision 6 carry sub-revisions 0 and 1.
    let log = revision_log(h.engine(), 6).expect("log");
    assert_eq!(
        log.iter()
            .map(|e| (e.rev.main, e.rev.sub, e.key.clone()))
            .collect::<Vec<_>>(),
        vec![
            (6, 0, b"a".to_vec()),
            (6, 1, b"b".to_vec()),
            (7, 0, b"d".to_vec())
        ]
    );
}

/// Range revision handling: future, compacted, <= 0 is current, header is current.
#[test]
fn range_revisions_and_header() {
    let mut h = harness();
    for v in [&b"1"[..], b"2", b"3", b"4"] {
        h.write(put_w(b"k", v)).expect("put"); // revs 2..=5
    }
    h.write(compact(3)).expect("compact");
    assert_eq!(h.read(get_at(b"k", 6)), Err(Error::FutureRevision));
    assert_eq!(
        h.read(get_at(b"k", 2)),
        Err(Error::Compacted {
            compact_revision: 3
        })
    );
    assert_eq!(
        h.read(get_at(b"k", 3)),
        Ok(RangeResponse {
            revision: 5,
            kvs: vec![kv(b"k", b"2", 2, 3, 2)],
            more: false,
            count: 1
        })
    );
    assert_eq!(get(&mut h, get_at(b"k", -7)), vec![kv(b"k", b"4", 2, 5, 4)]);
    assert_eq!(get(&mut h, get_at(b"k", 5)), vec![kv(b"k", b"4", 2, 5, 4)]);
    // Count ignores limit; keys_only drops values; count_only drops kvs.
    let r = h
        .read(RangeRequest {
            limit: 1,
            keys_only: true,
            revision: 4,
            ..span(b"a", b"z")
        })
        .expect("range");
    assert_eq!(
        r,
        RangeResponse {
            revision: 5,
            kvs: vec![kv(b"k", b"", 2, 4, 3)],
            more: false,
            count: 1
        }
    );
    let r = h
        .read(RangeRequest {
            count_only: true,
            ..span(b"a", b"z")
        })
        .expect("range");
    assert_eq!(
        r,
        RangeResponse {
            revision: 5,
            kvs: vec![],
            more: false,
            count: 1
        }
    );
}

/// Compaction at, below and above the watermark; what it keeps and removes.
#[test]
fn compaction_boundaries() {
    let mut h = harness();
    // "a": put@2 put@3 del@5 put@7; "b": put@4 del@6 (the compact.rs example shape).
    h.write(put_w(b"a", b"1")).expect("put");
    h.write(put_w(b"a", b"2")).expect("put");
    h.write(put_w(b"b", b"1")).expect("put");
    h.write(del_w(b"a", b"", false)).expect("del");
    h.write(del_w(b"b", b"", false)).expect("del");
    h.write(put_w(b"a", b"3")).expect("put");
    assert_eq!(
        h.write(compact(8)),
        Err(Error::FutureRevision),
        "above the current revision"
    );
    // etcd's watermark starts at -1: compact(0) succeeds once, then not again.
    h.write(compact(0))
        .expect("compact(0) on a never-compacted store");
    assert_eq!(
        h.write(compact(0)),
        Err(Error::Compacted {
            compact_revision: 0
        })
    );
    h.write(compact(4)).expect("compact");
    let revs = |h: &Harness<MemEngine>, k: &[u8]| {
        key_history(h.engine(), k)
            .expect("history")
            .iter()
            .map(|v| v.rev.main)
            .collect::<Vec<_>>()
    };
    assert_eq!(revs(&h, b"a"), vec![3, 5, 7]);
    assert_eq!(revs(&h, b"b"), vec![4, 6]);
    assert_eq!(
        revision_log(h.engine(), 0)
            .expect("log")
            .first()
            .map(|e| e.rev.main),
        Some(4)
    );
    assert_eq!(
        h.write(compact(4)),
        Err(Error::Compacted {
            compact_revision: 4
        }),
        "at the watermark"
    );
    assert_eq!(
        h.write(compact(3)),
        Err(Error::Compacted {
            compact_revision: 4
        }),
        "below the watermark"
    );
    h.write(compact(6)).expect("compact");
    assert_eq!(revs(&h, b"a"), vec![7], "newest <= 6 of a is a tombstone");
    assert_eq!(revs(&h, b"b"), Vec::<i64>::new(), "b is gone entirely");
    assert_eq!(get(&mut h, all_at(6)), vec![]);
    assert_eq!(
        h.read(all_at(5)),
        Err(Error::Compacted {
            compact_revision: 6
        })
    );
    h.write(compact(7))
        .expect("compact at the current revision");
    assert_eq!(get(&mut h, all_at(7)), vec![kv(b"a", b"3", 7, 7, 1)]);
    assert_eq!(h.meta().compact_revision, 7);
    assert_eq!(h.meta().current_revision, 7, "compaction takes no revision");
    h.check_state();
}

/// The etcd 3.4.23-verified txn: op header revisions and the nested txn's 0.
#[test]
fn txn_header_revisions_match_etcd() {
    let mut h = harness();
    h.write(put_w(b"a", b"1")).expect("put"); // rev 2
    let t = txn_w(
        vec![],
        vec![
            op(span(b"a", b"")),
            op(del(b"zz", b"")),
            op(span(b"a", b"")),
            op(put(b"b", b"1")),
            op(span(b"a", b"")),
            op(del(b"zz", b"")),
            op(txn(
                vec![],
                vec![op(span(b"a", b"")), op(put(b"c", b"1"))],
                vec![],
            )),
            op(span(b"a", b"")),
        ],
        vec![],
    );
    let a = kv(b"a", b"1", 2, 2, 1);
    let nested = ResponseOp {
        response: Some(OpResponse::Txn(TxnResponse {
            revision: 0,
            succeeded: true,
            responses: vec![range_op(3, vec![a.clone()]), put_op(3, None)],
        })),
    };
    assert_eq!(
        txn_resp(h.write(t)),
        TxnResponse {
            revision: 3,
            succeeded: true,
            responses: vec![
                range_op(2, vec![a.clone()]),
                del_op(2, 0, vec![]),
                range_op(2, vec![a.clone()]),
                put_op(3, None),
                range_op(3, vec![a.clone()]),
                del_op(3, 0, vec![]),
                nested,
                range_op(3, vec![a]),
            ],
        }
    );
    // A read-only txn: every header is the current revision.
    let t = txn_w(
        vec![],
        vec![
            op(del(b"zz", b"")),
            op(txn(vec![], vec![op(span(b"zz", b""))], vec![])),
        ],
        vec![],
    );
    let r = txn_resp(h.write(t));
    assert_eq!((r.revision, h.meta().current_revision), (3, 3));
}

/// Reads inside a txn see its earlier writes; delete's prev_kvs too; compares do not.
#[test]
fn txn_reads_its_own_writes() {
    let mut h = harness();
    h.write(put_w(b"a", b"1")).expect("put"); // 2
    let t = txn_w(
        vec![],
        vec![
            op(txn(
                vec![],
                vec![op(PutRequest {
                    prev_kv: true,
                    ..put(b"a", b"2")
                })],
                vec![],
            )),
            op(span(b"a", b"\0")),
            op(txn(vec![exists(b"n")], vec![], vec![op(put(b"n", b"1"))])),
            op(txn(
                vec![cmp(
                    b"a",
                    CompareTarget::Value,
                    CompareResult::Equal,
                    TargetUnion::Value(b"1".to_vec()),
                )],
                vec![op(DeleteRangeRequest {
                    prev_kv: true,
                    ..del(b"a", b"b")
                })],
                vec![],
            )),
            op(span(b"a", b"\0")),
        ],
        vec![],
    );
    let r = txn_resp(h.write(t));
    let a2 = kv(b"a", b"2", 2, 3, 2);
    let n = kv(b"n", b"1", 3, 3, 1);
    let nested = |ok, responses| ResponseOp {
        response: Some(OpResponse::Txn(TxnResponse {
            revision: 0,
            succeeded: ok,
            responses,
        })),
    };
    assert_eq!(r.revision, 3);
    assert_eq!(
        r.responses,
        vec![
            nested(true, vec![put_op(3, Some(kv(b"a", b"1", 2, 2, 1)))]),
            range_op(3, vec![a2.clone()]),
            nested(false, vec![put_op(3, None)]),
            // The compare saw a = "1" (the start state); the delete saw a = "2".
            nested(true, vec![del_op(3, 1, vec![a2])]),
            range_op(3, vec![n.clone()]),
        ]
    );
    assert_eq!(get(&mut h, all_at(0)), vec![n]);
    let subs: Vec<_> = revision_log(h.engine(), 3)
        .expect("log")
        .into_iter()
        .map(|e| (e.rev.sub, e.key, e.kind))
        .collect();
    assert_eq!(
        subs,
        vec![
            (0, b"a".to_vec(), EventKind::Put),
            (1, b"n".to_vec(), EventKind::Put),
            (2, b"a".to_vec(), EventKind::Delete)
        ]
    );
}

/// Compares over a range must hold for every key; missing keys per target.
#[test]
fn txn_compares_over_ranges_and_missing_keys() {
    let mut h = harness();
    h.write(put_w(b"k1", b"x")).expect("put"); // 2
    h.write(put_w(b"k2", b"y")).expect("put"); // 3
    let ok = |h: &mut Harness<MemEngine>, mut c: crate::kv::Compare, end: &[u8]| {
        c.range_end = end.to_vec();
        txn_resp(h.write(txn_w(vec![c], vec![], vec![]))).succeeded
    };
    let mod_gt = |v| {
        cmp(
            b"k1",
            CompareTarget::Mod,
            CompareResult::Greater,
            TargetUnion::ModRevision(v),
        )
    };
    assert!(ok(&mut h, mod_gt(1), b"k3"));
    assert!(
        !ok(&mut h, mod_gt(2), b"k3"),
        "k1's mod revision 2 is not > 2"
    );
    assert!(!ok(&mut h, mod_gt(2), b"k1\0\0"));
    assert!(ok(&mut h, mod_gt(1), b"\0"));
    // Missing keys: VALUE always fails, others compare a zero KeyValue.
    let missing = |t, r, u| cmp(b"zz", t, r, u);
    assert!(!ok(
        &mut h,
        missing(
            CompareTarget::Value,
            CompareResult::NotEqual,
            TargetUnion::Value(b"x".to_vec())
        ),
        b""
    ));
    assert!(!ok(
        &mut h,
        missing(
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(vec![])
        ),
        b""
    ));
    assert!(ok(
        &mut h,
        missing(
            CompareTarget::Create,
            CompareResult::Equal,
            TargetUnion::CreateRevision(0)
        ),
        b""
    ));
    assert!(ok(
        &mut h,
        missing(
            CompareTarget::Version,
            CompareResult::Less,
            TargetUnion::Version(1)
        ),
        b""
    ));
    assert!(ok(
        &mut h,
        missing(
            CompareTarget::Lease,
            CompareResult::Equal,
            TargetUnion::Lease(0)
        ),
        b""
    ));
    assert!(!ok(
        &mut h,
        missing(
            CompareTarget::Mod,
            CompareResult::Greater,
            TargetUnion::ModRevision(0)
        ),
        b"zzz"
    ));
    // A union of the wrong kind compares against 0 (etcd-verified: version 1 != 0).
    assert!(!ok(
        &mut h,
        cmp(
            b"k1",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Value(b"x".to_vec())
        ),
        b""
    ));
    assert_eq!(
        h.meta().current_revision,
        3,
        "read-only txns take no revision"
    );
}

/// A txn failing a put or range check changes nothing but the applied index.
#[test]
fn failed_txn_changes_only_the_applied_index() {
    let mut h = harness();
    h.write(put_w(b"a", b"1")).expect("put");
    let before: Vec<_> = h
        .engine()
        .scan(b"", Some(b"m"))
        .collect::<Result<_, _>>()
        .expect("scan");
    let leased = PutRequest {
        lease: 42,
        ..put(b"l", b"1")
    };
    let ignore_missing = PutRequest {
        ignore_value: true,
        ..put(b"nokey", b"")
    };
    let cases: Vec<(WriteRequest, Error)> = vec![
        (
            txn_w(
                vec![],
                vec![op(put(b"x", b"1")), op(leased.clone())],
                vec![],
            ),
            Error::LeaseNotFound,
        ),
        (
            txn_w(
                vec![],
                vec![op(txn(vec![], vec![op(leased.clone())], vec![]))],
                vec![],
            ),
            Error::LeaseNotFound,
        ),
        (
            txn_w(
                vec![],
                vec![op(put(b"x", b"1")), op(ignore_missing.clone())],
                vec![],
            ),
            Invalid::KeyNotFound.into(),
        ),
        // In a txn the key check of a put comes before its lease check (etcd-verified).
        (
            txn_w(
                vec![],
                vec![op(PutRequest {
                    lease: 5,
                    ..ignore_missing.clone()
                })],
                vec![],
            ),
            Invalid::KeyNotFound.into(),
        ),
        // Put checks run over the whole path before range checks.
        (
            txn_w(
                vec![],
                vec![op(get_at(b"a", 99)), op(leased.clone())],
                vec![],
            ),
            Error::LeaseNotFound,
        ),
        (
            txn_w(
                vec![],
                vec![op(put(b"x", b"1")), op(get_at(b"a", 3))],
                vec![],
            ),
            Error::FutureRevision,
        ),
        (
            txn_w(vec![], vec![op(get_at(b"a", -2))], vec![]),
            Error::Compacted {
                compact_revision: -1,
            },
        ),
    ];
    for (i, (req, err)) in cases.into_iter().enumerate() {
        assert_eq!(h.write(req), Err(err), "case {i}");
    }
    let after: Vec<_> = h
        .engine()
        .scan(b"", Some(b"m"))
        .collect::<Result<_, _>>()
        .expect("scan");
    assert_eq!(before, after);
    assert_eq!(
        h.meta(),
        Meta {
            current_revision: 2,
            compact_revision: -1,
            applied_index: 8,
            applied_term: 1
        }
    );
    // The lease of the branch not taken is never looked at.
    let t = txn_w(
        vec![exists(b"a")],
        vec![op(put(b"x", b"1"))],
        vec![op(leased)],
    );
    assert_eq!(txn_resp(h.write(t)).revision, 3);
}

/// ignore_value keeps the value, ignore_lease keeps the lease; both need the key.
#[test]
fn ignore_value_and_ignore_lease() {
    let mut h = harness();
    h.write(put_w(b"a", b"v")).expect("put");
    let r = h.write(WriteRequest::Put(PutRequest {
        ignore_value: true,
        prev_kv: true,
        ..put(b"a", b"")
    }));
    assert_eq!(
        r,
        Ok(WriteResponse::Put(PutResponse {
            revision: 3,
            prev_kv: Some(kv(b"a", b"v", 2, 2, 1))
        }))
    );
    h.write(WriteRequest::Put(PutRequest {
        ignore_lease: true,
        ..put(b"a", b"w")
    }))
    .expect("put");
    assert_eq!(get(&mut h, get_at(b"a", 0)), vec![kv(b"a", b"w", 2, 4, 3)]);
    for p in [
        PutRequest {
            ignore_value: true,
            ..put(b"b", b"")
        },
        PutRequest {
            ignore_lease: true,
            ..put(b"b", b"1")
        },
    ] {
        assert_eq!(
            h.write(WriteRequest::Put(p)),
            Err(Error::InvalidArgument(Invalid::KeyNotFound))
        );
    }
    assert_eq!(
        h.write(WriteRequest::Put(PutRequest {
            ignore_value: true,
            ..put(b"a", b"x")
        })),
        Err(Error::InvalidArgument(Invalid::ValueProvided)),
        "static checks run again at apply"
    );
    assert_eq!(
        h.write(WriteRequest::Put(PutRequest {
            lease: 3,
            ..put(b"a", b"x")
        })),
        Err(Error::LeaseNotFound)
    );
    assert_eq!(h.meta().current_revision, 4);
}

/// A barrier takes no revision and answers like an empty txn; an unknown payload stops apply.
#[test]
fn barrier_and_unknown_payload() {
    let e = MemEngine::new();
    let mut s = Store::open(&e).expect("open");
    let barrier = Entry {
        term: 2,
        index: 5,
        payload: Some(crate::log::Payload::Barrier(Barrier {})),
    };
    assert_eq!(
        s.apply(&e, &barrier).expect("apply").result,
        Ok(WriteResponse::Txn(TxnResponse {
            revision: 1,
            succeeded: true,
            responses: vec![]
        }))
    );
    assert_eq!(
        *s.meta(),
        Meta {
            current_revision: 1,
            compact_revision: -1,
            applied_index: 5,
            applied_term: 2
        }
    );
    assert_eq!(read_meta(&e).expect("meta"), *s.meta());
    let unknown = Entry {
        term: 2,
        index: 6,
        payload: None,
    };
    let err = s.apply(&e, &unknown).expect_err("unknown payload");
    assert!(err.0.contains("entry 6 has no payload"), "{err}");
    assert_eq!(s.meta().applied_index, 5);
}

/// Entries apply once, in order.
#[test]
#[should_panic(expected = "entry 3 applied after entry 3")]
fn applying_an_entry_twice_panics() {
    let e = MemEngine::new();
    let mut s = Store::open(&e).expect("open");
    let entry = Entry::write(crate::Term(1), crate::Index(3), put_w(b"a", b"1"));
    s.apply(&e, &entry).expect("apply").result.expect("put");
    let _ = s.apply(&e, &entry);
}

/// An engine whose reads or writes can be made to fail.
#[derive(Default)]
struct FlakyEngine {
    inner: MemEngine,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
}

impl KvRead for FlakyEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(EngineError("injected read failure".into()));
        }
        self.inner.get(key)
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Box::new(std::iter::once(Err(EngineError(
                "injected scan failure".into(),
            ))));
        }
        self.inner.scan(start, end)
    }
}

impl KvEngine for FlakyEngine {
    type Snapshot = MemSnapshot;

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(EngineError("injected write failure".into()));
        }
        self.inner.write(batch)
    }

    fn snapshot(&self) -> MemSnapshot {
        self.inner.snapshot()
    }

    fn persist(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn defragment(&self) -> Result<(), EngineError> {
        self.inner.defragment()
    }
}

/// Storage failures: outer Err from apply (meta unchanged), Internal from range.
#[test]
fn storage_failures() {
    let e = FlakyEngine::default();
    let mut s = Store::open(&e).expect("open");
    let entry = |i| Entry::write(crate::Term(1), crate::Index(i), put_w(b"a", b"1"));
    s.apply(&e, &entry(1)).expect("apply").result.expect("put");
    e.fail_writes.store(true, Ordering::SeqCst);
    assert_eq!(
        s.apply(&e, &entry(2)),
        Err(EngineError("injected write failure".into()))
    );
    assert_eq!(s.meta().applied_index, 1);
    e.fail_writes.store(false, Ordering::SeqCst);
    e.fail_reads.store(true, Ordering::SeqCst);
    assert_eq!(
        s.apply(&e, &entry(2)),
        Err(EngineError("injected read failure".into()))
    );
    let scan_delete = Entry::write(crate::Term(1), crate::Index(2), del_w(b"a", b"\0", false));
    assert_eq!(
        s.apply(&e, &scan_delete),
        Err(EngineError("injected scan failure".into()))
    );
    assert_eq!(
        range(&e, &all_at(0)),
        Err(Error::Internal(
            "storage engine: injected read failure".into()
        ))
    );
    e.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(
        s.apply(&e, &entry(2))
            .expect("apply")
            .result
            .map(|r| matches!(r, WriteResponse::Put(_))),
        Ok(true)
    );
    assert_eq!(
        *s.meta(),
        Meta {
            current_revision: 3,
            compact_revision: -1,
            applied_index: 2,
            applied_term: 1
        }
    );
}

/// Corrupt metadata and records are reported, not trusted.
#[test]
fn corruption_is_reported() {
    let e = MemEngine::new();
    let mut b = WriteBatch::default();
    b.put(keys::META_KEY.to_vec(), vec![0xFF, 0xFF]);
    e.write(b).expect("write");
    assert!(Store::open(&e).is_err());
    let e = MemEngine::new();
    let mut b = WriteBatch::default();
    let bad = MetaRecord {
        current_revision: 3,
        compact_revision: 5,
        applied_index: 1,
        applied_term: 1,
    };
    b.put(keys::META_KEY.to_vec(), bad.encode_to_vec());
    e.write(b).expect("write");
    assert!(read_meta(&e)
        .expect_err("compact above current")
        .0
        .contains("corrupt meta"));
    // A live record claiming to be a tombstone.
    let e = MemEngine::new();
    let mut b = WriteBatch {
        ops: vec![BatchOp::Put(
            keys::current_key(b"a"),
            VersionRecord {
                tombstone: true,
                ..Default::default()
            }
            .encode_to_vec(),
        )],
    };
    b.put(
        keys::META_KEY.to_vec(),
        MetaRecord {
            current_revision: 2,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    e.write(b).expect("write");
    assert!(
        matches!(range(&e, &span(b"a", b"\0")), Err(Error::Internal(m)) if m.contains("corrupt live record"))
    );
}

/// Reading through a snapshot gives the state at the snapshot, meta included.
#[test]
fn snapshot_reads_are_consistent() {
    let mut h = harness();
    h.write(put_w(b"a", b"1")).expect("put");
    let snap = h.engine().snapshot();
    h.write(put_w(b"a", b"2")).expect("put");
    assert_eq!(
        range(&snap, &get_at(b"a", 0)),
        Ok(RangeResponse {
            revision: 2,
            kvs: vec![kv(b"a", b"1", 2, 2, 1)],
            more: false,
            count: 1
        })
    );
    assert_eq!(range(&snap, &get_at(b"a", 3)), Err(Error::FutureRevision));
}
