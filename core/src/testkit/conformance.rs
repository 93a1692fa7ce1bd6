//! The engine conformance suite: fixed scenarios and seeded random op
//! sequences, run through the public API ([`crate::mvcc::Store::apply`],
//! [`crate::mvcc::range`], [`crate::mvcc::key_history`],
//! [`crate::mvcc::revision_log`]) and compared at every step with the
//! reference [`Model`](super::Model). Any engine that implements
//! [`KvEngine`] correctly must pass it.

use super::gen::{Gen, KEYS};
use super::harness::Harness;
use super::req::{all_at, cmp, compact, del, exists, get_at, kv, op, put, range, txn, txn_w};
use crate::engine::KvEngine;
use crate::error::{Error, Invalid};
use crate::kv::{
    CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, OpResponse, PutRequest,
    PutResponse, RangeRequest, ResponseOp, TargetUnion, TxnResponse, WriteRequest, WriteResponse,
};

/// Seeds of the random part of [`run_conformance`].
pub const SEEDS: [u64; 3] = [1, 0x5EED, 20_250_601];
/// Steps per seed.
pub const STEPS: usize = 400;

/// Runs every scenario and the seeded random sequences, each on a fresh
/// engine from `make`. Panics with the scenario or seed and the last steps on
/// the first difference from the model.
pub fn run_conformance<E: KvEngine>(make: impl Fn() -> E) {
    for (name, scenario) in scenarios::<E>() {
        let mut h = Harness::new(make(), format!("scenario {name}"));
        scenario(&mut h);
        h.check_state();
    }
    for seed in SEEDS {
        run_random(make(), seed, STEPS);
    }
}

/// One seeded random sequence of `steps` steps on `engine` (fresh). A failure
/// message names the seed; rerun this function with it to reproduce.
pub fn run_random<E: KvEngine>(engine: E, seed: u64, steps: usize) {
    let mut h = Harness::new(
        engine,
        format!("seed {seed}; reproduce with testkit::run_random(engine, {seed}, {steps})"),
    );
    let mut g = Gen::new(seed);
    for _ in 0..steps {
        let (cur, comp) = (h.model().current_revision(), h.model().compact_revision());
        match g.rng.below(100) {
            0..=54 => {
                let _ = h.write(g.write(cur, comp));
            }
            55..=89 => {
                let _ = h.read(g.range(cur, comp));
            }
            90..=91 => h.barrier(),
            92..=93 => h.reopen(),
            _ => h.check_state(),
        }
    }
    h.check_state();
}

type Scenario<E> = fn(&mut Harness<E>);

fn scenarios<E: KvEngine>() -> Vec<(&'static str, Scenario<E>)> {
    vec![
        ("one key's life", one_key_life::<E>),
        ("key forms and escaping", key_forms::<E>),
        ("range options", range_options::<E>),
        ("txn", txn_semantics::<E>),
        ("compaction", compaction::<E>),
        ("failures, barriers, restart", failures_and_restart::<E>),
    ]
}

fn put_w(key: &[u8], value: &[u8]) -> WriteRequest {
    WriteRequest::Put(put(key, value))
}

fn revision_of(resp: &WriteResponse) -> i64 {
    resp.revision()
}

fn kvs<E: KvEngine>(h: &mut Harness<E>, req: RangeRequest) -> Vec<KeyValue> {
    h.read(req).expect("range").kvs
}

/// Revisions, versions, prev_kv, delete and re-create of one key (the mvcc module's worked example).
fn one_key_life<E: KvEngine>(h: &mut Harness<E>) {
    assert_eq!(revision_of(&h.write(put_w(b"a", b"x")).expect("put")), 2);
    let r = h
        .write(WriteRequest::Put(PutRequest {
            prev_kv: true,
            ..put(b"a", b"y")
        }))
        .expect("put");
    assert_eq!(
        r,
        WriteResponse::Put(PutResponse {
            revision: 3,
            prev_kv: Some(kv(b"a", b"x", 2, 2, 1))
        })
    );
    let r = h
        .write(WriteRequest::DeleteRange(DeleteRangeRequest {
            prev_kv: true,
            ..del(b"a", b"")
        }))
        .expect("del");
    assert_eq!(revision_of(&r), 4);
    let r = h
        .write(WriteRequest::DeleteRange(del(b"a", b"")))
        .expect("del");
    assert_eq!(revision_of(&r), 4, "deleting nothing takes no revision");
    h.write(put_w(b"a", b"z")).expect("put");
    assert_eq!(kvs(h, get_at(b"a", 0)), vec![kv(b"a", b"z", 5, 5, 1)]);
    assert_eq!(kvs(h, get_at(b"a", 3)), vec![kv(b"a", b"y", 2, 3, 2)]);
    assert_eq!(kvs(h, get_at(b"a", 4)), vec![]);
    assert_eq!(kvs(h, get_at(b"a", 1)), vec![]);
    assert_eq!(h.read(get_at(b"a", 6)), Err(Error::FutureRevision));
    assert_eq!(
        h.read(get_at(b"a", 3)).expect("range").revision,
        5,
        "header is the current revision"
    );
}

/// Every key form over keys with 0x00 and 0xFF bytes, at the current and past revisions.
fn key_forms<E: KvEngine>(h: &mut Harness<E>) {
    for (i, k) in KEYS.iter().enumerate() {
        h.write(put_w(k, format!("v{i}").as_bytes())).expect("put");
    }
    h.write(WriteRequest::DeleteRange(del(b"a\x00", b"a\x01")))
        .expect("del");
    h.write(put_w(b"a\x00", b"again")).expect("put");
    let cur = h.model().current_revision();
    for rev in [0, 2, 5, 7, cur - 1, cur] {
        for &k in &KEYS {
            for end in [
                &b""[..],
                b"\x00",
                b"a\x00",
                b"a\x01",
                b"b",
                b"\xff",
                b"\xff\xff",
                k,
            ] {
                let _ = h.read(RangeRequest {
                    revision: rev,
                    ..range(k, end)
                });
            }
        }
    }
    // The delete took "a\0" and "a\0\0"; "a\0" came back.
    assert_eq!(
        h.read(all_at(0)).expect("range").count,
        KEYS.len() as i64 - 1
    );
    assert_eq!(
        kvs(h, range(b"b", b"a")),
        vec![],
        "range_end < key is empty, not an error"
    );
    assert_eq!(
        kvs(h, range(b"a\x00", b"a\x01")),
        vec![kv(b"a\x00", b"again", cur, cur, 1)]
    );
    assert_eq!(
        kvs(
            h,
            RangeRequest {
                revision: cur - 2,
                ..range(b"a\x00", b"a\x01")
            }
        )
        .len(),
        2
    );
}

/// limit, more, count, sort, filters, keys_only and count_only, now and in the past.
fn range_options<E: KvEngine>(h: &mut Harness<E>) {
    for (k, n) in [
        (&b"k1"[..], 3),
        (b"k2", 1),
        (b"k3", 2),
        (b"k4", 1),
        (b"k5", 3),
    ] {
        for i in 0..n {
            h.write(put_w(
                k,
                format!("{}v{i}", String::from_utf8_lossy(k)).as_bytes(),
            ))
            .expect("put");
        }
    }
    let cur = h.model().current_revision();
    let base = range(b"k", b"l");
    let sorted = h
        .read(RangeRequest {
            limit: 2,
            sort_target: 1,
            ..base.clone()
        })
        .expect("range");
    assert_eq!(
        sorted
            .kvs
            .iter()
            .map(|kv| kv.key.as_slice())
            .collect::<Vec<_>>(),
        vec![b"k2", b"k3"]
    );
    assert!(sorted.more);
    for rev in [0, 4, 8, cur] {
        for limit in [-1, 0, 1, 2, 5, 6] {
            for (order, target) in [
                (0, 0),
                (0, 1),
                (1, 0),
                (2, 0),
                (1, 2),
                (2, 3),
                (2, 4),
                (1, 1),
            ] {
                for (min_mod, max_mod, min_create, max_create) in
                    [(0, 0, 0, 0), (5, 0, 0, 0), (0, 7, 0, 0), (0, 0, 4, 9)]
                {
                    for (keys_only, count_only) in [(false, false), (true, false), (false, true)] {
                        let _ = h.read(RangeRequest {
                            limit,
                            revision: rev,
                            sort_order: order,
                            sort_target: target,
                            keys_only,
                            count_only,
                            min_mod_revision: min_mod,
                            max_mod_revision: max_mod,
                            min_create_revision: min_create,
                            max_create_revision: max_create,
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    assert_eq!(
        h.read(RangeRequest {
            sort_order: 3,
            ..base.clone()
        }),
        Err(Error::InvalidArgument(Invalid::InvalidSortOption))
    );
    assert_eq!(
        h.read(range(b"", b"")),
        Err(Error::InvalidArgument(Invalid::EmptyKey))
    );
}

/// Compares at the txn's start, nested txns, reads of own writes, header revisions.
fn txn_semantics<E: KvEngine>(h: &mut Harness<E>) {
    h.write(put_w(b"a", b"1")).expect("put"); // rev 2
                                              // The etcd-verified example of the txn module doc.
    let t = txn_w(
        vec![],
        vec![
            op(range(b"a", b"")),
            op(del(b"zz", b"")),
            op(put(b"b", b"1")),
            op(range(b"b", b"")),
            op(txn(
                vec![],
                vec![op(range(b"a", b"")), op(put(b"c", b"1"))],
                vec![],
            )),
        ],
        vec![],
    );
    let WriteResponse::Txn(r) = h.write(t).expect("txn") else {
        panic!("txn answer")
    };
    let revs: Vec<i64> = r
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(OpResponse::Range(x)) => x.revision,
            Some(OpResponse::Put(x)) => x.revision,
            Some(OpResponse::DeleteRange(x)) => x.revision,
            Some(OpResponse::Txn(x)) => x.revision,
            None => -1,
        })
        .collect();
    assert_eq!((r.revision, revs), (3, vec![2, 2, 3, 3, 0]));
    let Some(OpResponse::Range(own)) = &r.responses[3].response else {
        panic!("range")
    };
    assert_eq!(
        own.kvs,
        vec![kv(b"b", b"1", 3, 3, 1)],
        "a txn reads its own writes"
    );

    // A nested txn's compare sees the start state, not the put before it.
    let t = txn_w(
        vec![],
        vec![
            op(put(b"x", b"1")),
            op(txn(
                vec![exists(b"x")],
                vec![op(put(b"y", b"1"))],
                vec![op(put(b"z", b"1"))],
            )),
        ],
        vec![],
    );
    h.write(t).expect("txn");
    assert_eq!(kvs(h, get_at(b"z", 0)).len(), 1);
    assert_eq!(kvs(h, get_at(b"y", 0)).len(), 0);

    // Sibling nested txns may put then delete the same key at one revision.
    let t = txn_w(
        vec![],
        vec![
            op(txn(vec![], vec![op(put(b"s", b"1"))], vec![])),
            op(txn(vec![], vec![op(del(b"s", b""))], vec![])),
            op(range(b"s", b"")),
        ],
        vec![],
    );
    let r = h.write(t).expect("txn");
    let rev = revision_of(&r);
    assert_eq!(kvs(h, get_at(b"s", rev)), vec![]);

    // Every compare target and result, on a key and on a range.
    for target in 0..5 {
        for result in 0..4 {
            for (key, end) in [
                (&b"a"[..], &b""[..]),
                (b"a", b"c"),
                (b"q", b""),
                (b"a", b"\0"),
            ] {
                for union in [
                    TargetUnion::Version(1),
                    TargetUnion::CreateRevision(2),
                    TargetUnion::ModRevision(3),
                    TargetUnion::Value(b"1".to_vec()),
                    TargetUnion::Lease(0),
                ] {
                    let mut c = cmp(key, CompareTarget::Version, CompareResult::Equal, union);
                    (c.target, c.result, c.range_end) = (target, result, end.to_vec());
                    let t = txn_w(
                        vec![c],
                        vec![op(range(b"a", b"\0"))],
                        vec![op(range(b"b", b""))],
                    );
                    h.write(t).expect("read-only txn");
                }
            }
        }
    }

    // ignore_value, ignore_lease, prev_kv inside a txn; a failing check changes nothing.
    let before = h.model().current_revision();
    let missing = PutRequest {
        ignore_value: true,
        ..put(b"nokey", b"")
    };
    let t = txn_w(vec![], vec![op(put(b"p", b"1")), op(missing)], vec![]);
    assert_eq!(
        h.write(t),
        Err(Error::InvalidArgument(Invalid::KeyNotFound))
    );
    let t = txn_w(
        vec![],
        vec![
            op(put(b"p", b"1")),
            op(PutRequest {
                lease: 7,
                ..put(b"q", b"1")
            }),
        ],
        vec![],
    );
    assert_eq!(h.write(t), Err(Error::LeaseNotFound));
    let t = txn_w(
        vec![exists(b"a")],
        vec![op(put(b"p", b"1"))],
        vec![op(PutRequest {
            lease: 7,
            ..put(b"q", b"1")
        })],
    );
    h.write(t).expect("lease only in the branch not taken");
    assert_eq!(h.model().current_revision(), before + 1);
    let t = txn_w(
        vec![],
        vec![
            op(PutRequest {
                ignore_value: true,
                prev_kv: true,
                ..put(b"a", b"")
            }),
            op(PutRequest {
                ignore_lease: true,
                ..put(b"p", b"2")
            }),
        ],
        vec![],
    );
    let WriteResponse::Txn(r) = h.write(t).expect("txn") else {
        panic!("txn answer")
    };
    assert_eq!(
        r.responses[0],
        ResponseOp {
            response: Some(OpResponse::Put(PutResponse {
                revision: before + 2,
                prev_kv: Some(kv(b"a", b"1", 2, 2, 1))
            }))
        }
    );
    assert_eq!(
        kvs(h, get_at(b"a", 0)),
        vec![kv(b"a", b"1", 2, before + 2, 2)]
    );

    // Ranges inside a txn: explicit revisions are checked against the start.
    let cur = h.model().current_revision();
    let t = |rev| {
        txn_w(
            vec![],
            vec![
                op(put(b"n", b"1")),
                op(RangeRequest {
                    revision: rev,
                    ..range(b"a", b"\0")
                }),
            ],
            vec![],
        )
    };
    assert_eq!(h.write(t(cur + 1)), Err(Error::FutureRevision));
    assert_eq!(
        h.write(t(-2)),
        Err(Error::Compacted {
            compact_revision: -1
        })
    );
    h.write(t(-1))
        .expect("-1 passes etcd's never-compacted watermark");
    h.write(t(cur))
        .expect("the start revision is readable after a write");
    // Empty txn: no revision.
    let cur = h.model().current_revision();
    assert_eq!(
        h.write(txn_w(vec![], vec![], vec![])),
        Ok(WriteResponse::Txn(TxnResponse {
            revision: cur,
            succeeded: true,
            responses: vec![]
        }))
    );
}

/// Compaction at, below and above the watermark; reads around it.
fn compaction<E: KvEngine>(h: &mut Harness<E>) {
    h.write(put_w(b"a", b"1")).expect("put"); // 2
    h.write(put_w(b"a", b"2")).expect("put"); // 3
    h.write(put_w(b"b", b"1")).expect("put"); // 4
    h.write(WriteRequest::DeleteRange(del(b"b", b"")))
        .expect("del"); // 5
    h.write(WriteRequest::DeleteRange(del(b"a", b"")))
        .expect("del"); // 6
    h.write(put_w(b"a", b"3")).expect("put"); // 7
    assert_eq!(h.write(compact(8)), Err(Error::FutureRevision));
    // etcd's watermark starts at -1: compact(0) succeeds once, then not again.
    h.write(compact(0))
        .expect("compact(0) on a never-compacted store");
    assert_eq!(
        h.write(compact(0)),
        Err(Error::Compacted {
            compact_revision: 0
        })
    );
    assert_eq!(revision_of(&h.write(compact(3)).expect("compact")), 7);
    h.check_state();
    assert_eq!(
        h.read(get_at(b"a", 2)),
        Err(Error::Compacted {
            compact_revision: 3
        })
    );
    assert_eq!(kvs(h, get_at(b"a", 3)), vec![kv(b"a", b"2", 2, 3, 2)]);
    assert_eq!(
        h.write(compact(3)),
        Err(Error::Compacted {
            compact_revision: 3
        })
    );
    assert_eq!(
        h.write(compact(2)),
        Err(Error::Compacted {
            compact_revision: 3
        })
    );
    h.write(compact(5)).expect("compact"); // b's tombstone at 5 goes, and b with it
    h.check_state();
    assert!(h.model().history(b"b").is_empty());
    h.write(compact(7))
        .expect("compact at the current revision");
    h.check_state();
    assert_eq!(kvs(h, get_at(b"a", 7)), vec![kv(b"a", b"3", 7, 7, 1)]);
    // Txn ranges with negative revisions fail once compacted (etcd quirk).
    let t = txn_w(
        vec![],
        vec![op(RangeRequest {
            revision: -1,
            ..range(b"a", b"")
        })],
        vec![],
    );
    assert_eq!(
        h.write(t),
        Err(Error::Compacted {
            compact_revision: 7
        })
    );
    h.write(put_w(b"a", b"4")).expect("put");
    assert_eq!(kvs(h, get_at(b"a", 0)), vec![kv(b"a", b"4", 7, 8, 2)]);
}

/// Failed writes and barriers advance only the applied index; a reopened store continues.
fn failures_and_restart<E: KvEngine>(h: &mut Harness<E>) {
    h.write(put_w(b"a", b"1")).expect("put");
    assert_eq!(
        h.write(WriteRequest::Put(PutRequest {
            lease: 9,
            ..put(b"a", b"2")
        })),
        Err(Error::LeaseNotFound)
    );
    assert_eq!(
        h.write(WriteRequest::Put(PutRequest {
            ignore_lease: true,
            ..put(b"zz", b"2")
        })),
        Err(Error::InvalidArgument(Invalid::KeyNotFound))
    );
    assert_eq!(
        h.write(WriteRequest::Put(PutRequest {
            ignore_value: true,
            lease: 9,
            ..put(b"zz", b"")
        })),
        Err(Error::LeaseNotFound),
        "outside a txn the lease is looked up first"
    );
    assert_eq!(
        h.write(put_w(b"", b"1")),
        Err(Error::InvalidArgument(Invalid::EmptyKey))
    );
    assert_eq!(
        h.write(txn_w(
            vec![],
            vec![op(put(b"d", b"1")), op(put(b"d", b"2"))],
            vec![]
        )),
        Err(Error::InvalidArgument(Invalid::DuplicateKey))
    );
    h.barrier();
    h.reopen();
    let r = h
        .write(WriteRequest::Put(PutRequest {
            ignore_value: true,
            ..put(b"a", b"")
        }))
        .expect("put");
    assert_eq!(revision_of(&r), 3);
    assert_eq!(h.meta().applied_index, 8);
    h.barrier();
    h.reopen();
    assert_eq!(kvs(h, get_at(b"a", 0)), vec![kv(b"a", b"1", 2, 3, 2)]);
}
