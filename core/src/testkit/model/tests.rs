//! Leases in the reference model: exact answer sequences on the model alone,
//! then the same sequences and seeded random lease mixes run against the
//! real store ([`Harness`] on a [`MemEngine`]), comparing every answer, the
//! state, the lease table and the attachments.

use super::Model;
use crate::engine::{KvEngine, MemEngine};
use crate::error::{Error, Invalid};
use crate::kv::{
    KeyValue, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    PutRequest, PutResponse, WriteRequest, WriteResponse,
};
use crate::lease::LEASE_TTL_MAX_SECS;
use crate::mvcc::{self, EventKind, KeyVersion, LoggedEvent, Rev};
use crate::testkit::gen::{Gen, Rng};
use crate::testkit::req::{all_at, compact, del, exists, kv, op, put, txn, txn_w};
use crate::testkit::Harness;

type Answer = Result<WriteResponse, Error>;

fn grant(id: i64, ttl: i64) -> WriteRequest {
    WriteRequest::LeaseGrant(LeaseGrantRequest { ttl, id })
}

fn revoke(id: i64) -> WriteRequest {
    WriteRequest::LeaseRevoke(LeaseRevokeRequest { id })
}

/// `put key = value` with `lease` (0: none).
fn put_l(key: &[u8], value: &[u8], lease: i64) -> PutRequest {
    PutRequest {
        lease,
        ..put(key, value)
    }
}

fn lput(key: &[u8], value: &[u8], lease: i64) -> WriteRequest {
    WriteRequest::Put(put_l(key, value, lease))
}

/// `put key = value` keeping the key's lease.
fn keep_lease(key: &[u8], value: &[u8]) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        ignore_lease: true,
        ..put(key, value)
    })
}

fn leased(kv: KeyValue, lease: i64) -> KeyValue {
    KeyValue { lease, ..kv }
}

fn granted(revision: i64, id: i64, ttl: i64) -> Answer {
    Ok(WriteResponse::LeaseGrant(LeaseGrantResponse {
        revision,
        id,
        ttl,
    }))
}

fn revoked(revision: i64) -> Answer {
    Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse { revision }))
}

fn put_at(revision: i64) -> Answer {
    Ok(WriteResponse::Put(PutResponse {
        revision,
        prev_kv: None,
    }))
}

/// Every live key.
fn live(m: &Model) -> Vec<KeyValue> {
    m.range(&all_at(0)).expect("range").kvs
}

fn keys(ks: &[&[u8]]) -> Vec<Vec<u8>> {
    ks.iter().map(|k| k.to_vec()).collect()
}

/// The module doc's worked example: each request and its exact answer.
fn worked_example() -> Vec<(WriteRequest, Answer)> {
    vec![
        (grant(7, 10), granted(1, 7, 10)),
        (grant(7, 5), Err(Error::LeaseExists)),
        (lput(b"a", b"1", 7), put_at(2)),
        (lput(b"b", b"1", 7), put_at(3)),
        (keep_lease(b"b", b"2"), put_at(4)),
        (lput(b"a", b"2", 0), put_at(5)),
        (lput(b"c", b"1", 9), Err(Error::LeaseNotFound)),
        (revoke(7), revoked(6)),
        (revoke(7), Err(Error::LeaseNotFound)),
        (grant(8, 2), granted(6, 8, 2)),
        (revoke(8), revoked(6)),
    ]
}

/// The lease table `(id, ttl)` and the keys of lease 7 after a step.
type Tables = (&'static [(i64, i64)], &'static [&'static [u8]]);

/// The module doc's worked example, with the lease table and attachments after each step.
#[test]
fn worked_example_step_by_step() {
    let mut m = Model::new();
    let tables: [Tables; 11] = [
        (&[(7, 10)], &[]),
        (&[(7, 10)], &[]),
        (&[(7, 10)], &[b"a"]),
        (&[(7, 10)], &[b"a", b"b"]),
        (&[(7, 10)], &[b"a", b"b"]),
        (&[(7, 10)], &[b"b"]),
        (&[(7, 10)], &[b"b"]),
        (&[], &[]),
        (&[], &[]),
        (&[(8, 2)], &[]),
        (&[], &[]),
    ];
    for (step, ((req, want), (leases, attached))) in
        worked_example().into_iter().zip(tables).enumerate()
    {
        assert_eq!(m.apply(&req), want, "step {step}: {req:?}");
        assert_eq!(m.leases(), leases, "step {step}: lease table");
        assert_eq!(
            m.lease_keys(7),
            keys(attached),
            "step {step}: keys of lease 7"
        );
    }
    assert_eq!(m.current_revision(), 6);
    assert_eq!(live(&m), [kv(b"a", b"2", 2, 5, 2)]);
    assert_eq!(
        m.history(b"b"),
        [
            KeyVersion {
                rev: Rev { main: 3, sub: 0 },
                kv: Some(leased(kv(b"b", b"1", 3, 3, 1), 7)),
            },
            KeyVersion {
                rev: Rev { main: 4, sub: 0 },
                kv: Some(leased(kv(b"b", b"2", 3, 4, 2), 7)),
            },
            KeyVersion {
                rev: Rev { main: 6, sub: 0 },
                kv: None,
            },
        ],
        "ignore_lease kept lease 7; the revoke deleted b at 6"
    );
}

/// A grant takes no revision and answers the TTL as logged (the minimum is
/// raised at admission, not at apply); the static checks and a grant
/// without an id fail as in the store; a duplicate id fails.
#[test]
fn grant_answers() {
    let mut m = Model::new();
    m.apply(&lput(b"a", b"1", 0)).expect("put");
    assert_eq!(m.apply(&grant(7, 0)), granted(2, 7, 0));
    assert_eq!(
        m.apply(&grant(0, 10)),
        Err(Error::Internal(
            "lease grant without an id in the log".into()
        ))
    );
    assert_eq!(
        m.apply(&grant(9, -1)),
        Err(Error::InvalidArgument(Invalid::NegativeLeaseTtl))
    );
    assert_eq!(
        m.apply(&grant(-3, 5)),
        Err(Error::InvalidArgument(Invalid::NegativeLeaseId))
    );
    assert_eq!(
        m.apply(&grant(9, LEASE_TTL_MAX_SECS + 1)),
        Err(Error::InvalidArgument(Invalid::LeaseTtlTooLarge))
    );
    assert_eq!(
        m.apply(&grant(9, LEASE_TTL_MAX_SECS)),
        granted(2, 9, LEASE_TTL_MAX_SECS)
    );
    assert_eq!(m.apply(&grant(7, 30)), Err(Error::LeaseExists));
    assert_eq!(m.leases(), [(7, 0), (9, LEASE_TTL_MAX_SECS)]);
    assert_eq!(m.current_revision(), 2, "grants take no revision");
}

/// A revoke deletes every attached key at one revision, with sub-revisions
/// in key order (not attach order), and leaves other leases' keys alone.
#[test]
fn revoke_deletes_all_keys_at_one_revision_in_key_order() {
    let mut m = Model::new();
    m.apply(&grant(7, 10)).expect("grant");
    m.apply(&grant(8, 10)).expect("grant");
    assert_eq!(m.apply(&lput(b"b", b"1", 7)), put_at(2));
    assert_eq!(m.apply(&lput(b"a", b"1", 7)), put_at(3));
    assert_eq!(m.apply(&lput(b"c", b"1", 0)), put_at(4));
    assert_eq!(m.apply(&lput(b"d", b"1", 8)), put_at(5));
    assert_eq!(m.lease_keys(7), keys(&[b"a", b"b"]));
    assert_eq!(m.apply(&revoke(7)), revoked(6));
    assert_eq!(
        m.log()[m.log().len() - 2..],
        [
            LoggedEvent {
                rev: Rev { main: 6, sub: 0 },
                key: b"a".to_vec(),
                kind: EventKind::Delete,
            },
            LoggedEvent {
                rev: Rev { main: 6, sub: 1 },
                key: b"b".to_vec(),
                kind: EventKind::Delete,
            },
        ]
    );
    assert_eq!(
        live(&m),
        [kv(b"c", b"1", 4, 4, 1), leased(kv(b"d", b"1", 5, 5, 1), 8)]
    );
    assert_eq!(m.leases(), [(8, 10)]);
    assert_eq!(m.lease_keys(7), Vec::<Vec<u8>>::new());
    assert_eq!(m.lease_keys(8), keys(&[b"d"]));
}

/// A revoke of a lease without keys takes no revision; a revoke of an
/// unknown lease fails and changes nothing.
#[test]
fn revoke_without_keys_and_of_unknown_lease() {
    let mut m = Model::new();
    m.apply(&lput(b"a", b"1", 0)).expect("put");
    m.apply(&grant(7, 10)).expect("grant");
    assert_eq!(m.apply(&revoke(7)), revoked(2));
    assert_eq!(m.current_revision(), 2);
    assert_eq!(m.leases(), []);
    let before = m.fingerprint();
    assert_eq!(m.apply(&revoke(7)), Err(Error::LeaseNotFound));
    assert_eq!(m.apply(&revoke(42)), Err(Error::LeaseNotFound));
    assert_eq!(m.fingerprint(), before);
    assert_eq!(live(&m), [kv(b"a", b"1", 2, 2, 1)]);
}

/// A put naming an unknown lease fails and changes nothing; outside a txn
/// the lease is checked before `ignore_value` looks for the key.
#[test]
fn put_with_unknown_lease_fails() {
    let mut m = Model::new();
    let before = m.fingerprint();
    assert_eq!(m.apply(&lput(b"a", b"1", 9)), Err(Error::LeaseNotFound));
    assert_eq!(
        m.apply(&WriteRequest::Put(PutRequest {
            ignore_value: true,
            ..put_l(b"a", b"", 9)
        })),
        Err(Error::LeaseNotFound)
    );
    assert_eq!(m.fingerprint(), before);
    assert_eq!(m.current_revision(), 1);
}

/// Attachments follow the live version: `ignore_lease` keeps the lease,
/// lease 0 detaches, another lease moves the key, a delete detaches.
#[test]
fn attachments_follow_the_live_version() {
    let mut m = Model::new();
    m.apply(&grant(7, 10)).expect("grant");
    m.apply(&grant(8, 10)).expect("grant");
    m.apply(&lput(b"a", b"1", 7)).expect("put"); // 2
    m.apply(&keep_lease(b"a", b"2")).expect("put"); // 3
    assert_eq!(live(&m), [leased(kv(b"a", b"2", 2, 3, 2), 7)]);
    assert_eq!(m.lease_keys(7), keys(&[b"a"]));
    m.apply(&lput(b"a", b"3", 8)).expect("put"); // 4: moved to 8
    assert_eq!((m.lease_keys(7), m.lease_keys(8)), (vec![], keys(&[b"a"])));
    m.apply(&lput(b"a", b"4", 0)).expect("put"); // 5: detached
    assert_eq!(m.lease_keys(8), Vec::<Vec<u8>>::new());
    assert_eq!(m.apply(&revoke(8)), revoked(5), "nothing to delete");
    assert_eq!(live(&m), [kv(b"a", b"4", 2, 5, 4)]);

    m.apply(&lput(b"b", b"1", 7)).expect("put"); // 6
    m.apply(&WriteRequest::DeleteRange(del(b"b", b"")))
        .expect("del"); // 7
    m.apply(&lput(b"b", b"2", 0)).expect("put"); // 8: a new b, no lease
    assert_eq!(m.apply(&revoke(7)), revoked(8), "the delete detached b");
    assert_eq!(live(&m), [kv(b"a", b"4", 2, 5, 4), kv(b"b", b"2", 8, 8, 1)]);
}

/// A txn whose path puts with an unknown lease fails whole and changes
/// nothing (nested txns too); the check runs put by put in path order, after
/// `ignore_value`'s key check of the same put; a put in the branch not taken
/// does not matter; a txn put with a granted lease attaches.
#[test]
fn txn_put_with_unknown_lease_fails_the_whole_txn() {
    let mut m = Model::new();
    m.apply(&grant(7, 10)).expect("grant");
    m.apply(&lput(b"a", b"0", 0)).expect("put"); // 2
    let before = m.fingerprint();
    let missing = PutRequest {
        ignore_value: true,
        ..put(b"nokey", b"")
    };
    for (t, want) in [
        (
            txn_w(
                vec![],
                vec![op(put_l(b"b", b"1", 7)), op(put_l(b"c", b"1", 9))],
                vec![],
            ),
            Error::LeaseNotFound,
        ),
        (
            txn_w(
                vec![],
                vec![
                    op(put_l(b"b", b"1", 7)),
                    op(txn(vec![], vec![op(put_l(b"c", b"1", 9))], vec![])),
                ],
                vec![],
            ),
            Error::LeaseNotFound,
        ),
        (
            txn_w(
                vec![],
                vec![op(put_l(b"c", b"1", 9)), op(missing.clone())],
                vec![],
            ),
            Error::LeaseNotFound,
        ),
        (
            txn_w(
                vec![],
                vec![op(missing.clone()), op(put_l(b"c", b"1", 9))],
                vec![],
            ),
            Error::InvalidArgument(Invalid::KeyNotFound),
        ),
        (
            txn_w(vec![exists(b"zz")], vec![], vec![op(put_l(b"c", b"1", 9))]),
            Error::LeaseNotFound,
        ),
    ] {
        assert_eq!(m.apply(&t), Err(want), "{t:?}");
        assert_eq!(m.fingerprint(), before, "{t:?} changed the model");
    }
    let t = txn_w(
        vec![exists(b"a")],
        vec![op(put_l(b"b", b"1", 7))],
        vec![op(put_l(b"c", b"1", 9))],
    );
    m.apply(&t)
        .expect("the unknown lease is in the branch not taken");
    assert_eq!(m.current_revision(), 3);
    assert_eq!(m.lease_keys(7), keys(&[b"b"]));
    // Put then delete in sibling nested txns: the key ends detached.
    let t = txn_w(
        vec![],
        vec![
            op(txn(vec![], vec![op(put_l(b"d", b"1", 7))], vec![])),
            op(txn(vec![], vec![op(del(b"d", b""))], vec![])),
        ],
        vec![],
    );
    m.apply(&t).expect("txn"); // 4
    assert_eq!(m.lease_keys(7), keys(&[b"b"]));
    assert_eq!(m.apply(&revoke(7)), revoked(5));
    assert_eq!(live(&m), [kv(b"a", b"0", 2, 2, 1)]);
}

/// Compaction keeps every live version, so it keeps the attachments.
#[test]
fn compaction_keeps_attachments() {
    let mut m = Model::new();
    m.apply(&grant(7, 10)).expect("grant");
    m.apply(&lput(b"a", b"1", 7)).expect("put"); // 2
    m.apply(&lput(b"b", b"1", 0)).expect("put"); // 3
    m.apply(&compact(3)).expect("compact");
    assert_eq!(m.lease_keys(7), keys(&[b"a"]));
    assert_eq!(m.apply(&revoke(7)), revoked(4));
    assert_eq!(live(&m), [kv(b"b", b"1", 3, 3, 1)]);
}

/// The fingerprint covers the lease table, ids and TTLs, though grants
/// take no revision; a grant undone by a revoke without keys restores it.
#[test]
fn fingerprint_covers_the_lease_table() {
    let mut m = Model::new();
    m.apply(&lput(b"a", b"1", 0)).expect("put");
    let base = m.fingerprint();
    let mut g10 = m.clone();
    g10.apply(&grant(7, 10)).expect("grant");
    let mut g11 = m.clone();
    g11.apply(&grant(7, 11)).expect("grant");
    let mut other = m.clone();
    other.apply(&grant(8, 10)).expect("grant");
    let prints = [
        base,
        g10.fingerprint(),
        g11.fingerprint(),
        other.fingerprint(),
    ];
    for i in 0..prints.len() {
        for j in i + 1..prints.len() {
            assert_ne!(prints[i], prints[j], "states {i} and {j}");
        }
    }
    g10.apply(&revoke(7)).expect("revoke");
    assert_eq!(g10.fingerprint(), base);
}

/// The store's lease table and attachments equal the model's.
fn check_leases<E: KvEngine>(h: &Harness<E>, ids: &[i64]) {
    let store: Vec<(i64, i64)> = mvcc::leases(h.engine())
        .expect("lease table")
        .into_iter()
        .map(|info| (info.id, info.ttl_secs))
        .collect();
    assert_eq!(store, h.model().leases(), "lease tables differ");
    for &id in ids {
        assert_eq!(
            mvcc::lease_keys(h.engine(), id).expect("lease keys"),
            h.model().lease_keys(id),
            "keys of lease {id} differ"
        );
    }
}

/// The worked example and the lease tests' sequences answer the same on the
/// store, across a reopen (which reloads its lease table).
#[test]
fn lease_sequences_match_the_store() {
    let mut h = Harness::new(MemEngine::new(), "model lease worked example");
    for (req, want) in worked_example() {
        assert_eq!(h.write(req.clone()), want, "{req:?}");
        check_leases(&h, &[7, 8, 9]);
    }
    h.check_state();

    let mut h = Harness::new(MemEngine::new(), "model lease sequence");
    for req in [
        grant(7, 10),
        grant(8, 0),
        lput(b"b", b"1", 7),
        lput(b"a", b"1", 7),
        lput(b"c", b"1", 8),
        keep_lease(b"c", b"2"),
        grant(0, 5),
        txn_w(
            vec![],
            vec![op(put_l(b"d", b"1", 7)), op(put_l(b"e", b"1", 9))],
            vec![],
        ),
        txn_w(vec![], vec![op(put_l(b"d", b"1", 7))], vec![]),
        compact(3),
    ] {
        let _ = h.write(req);
        check_leases(&h, &[7, 8, 9]);
    }
    h.reopen();
    for req in [
        grant(7, 1),
        revoke(7),
        revoke(7),
        lput(b"a", b"2", 7),
        WriteRequest::DeleteRange(del(b"c", b"")),
        revoke(8),
    ] {
        let _ = h.write(req);
        check_leases(&h, &[7, 8, 9]);
    }
    h.check_state();
}

/// Lease ids of the random mix: 5 is the conformance generator's own, 9 is
/// never granted.
const LEASE_IDS: [i64; 4] = [5, 6, 7, 9];

/// Gives some puts of `req` (top level and in txns) a lease of
/// [`LEASE_IDS`]. Puts with `ignore_lease` keep theirs (a lease there is a
/// static error).
fn relabel(rng: &mut Rng, req: &mut WriteRequest) {
    fn txn(rng: &mut Rng, t: &mut crate::kv::TxnRequest) {
        for o in t.success.iter_mut().chain(t.failure.iter_mut()) {
            match &mut o.op {
                Some(crate::kv::Op::Put(p)) => put(rng, p),
                Some(crate::kv::Op::Txn(n)) => txn(rng, n),
                _ => {}
            }
        }
    }
    fn put(rng: &mut Rng, p: &mut PutRequest) {
        if p.lease != 0 || (!p.ignore_lease && rng.chance(1, 2)) {
            p.lease = *rng.pick(&LEASE_IDS);
        }
    }
    match req {
        WriteRequest::Put(p) => put(rng, p),
        WriteRequest::Txn(t) => txn(rng, t),
        _ => {}
    }
}

/// Seeded random mixes of the conformance generator's writes (some puts
/// given leases), grants (duplicate, id 0, bad TTLs), revokes, reads,
/// barriers and reopens answer the same on the store as on the model, and
/// leave the same state, lease table and attachments.
#[test]
fn random_lease_mixes_match_the_store() {
    const STEPS: usize = 600;
    let mut revokes_deleting = 0;
    for seed in [1, 2, 3, 0x5EED, 20_250_601] {
        let mut h = Harness::new(
            MemEngine::new(),
            format!("model lease mix, seed {seed} ({STEPS} steps)"),
        );
        let mut g = Gen::new(seed);
        // (grants, revokes that deleted keys, leased puts) that succeeded.
        let mut seen = (0, 0, 0);
        for _ in 0..STEPS {
            let (cur, comp) = (h.model().current_revision(), h.model().compact_revision());
            match g.rng.below(100) {
                0..=9 => {
                    let id = *g.rng.pick(&[0, 5, 5, 6, 6, 7, 7]);
                    let ttl = *g.rng.pick(&[
                        0,
                        1,
                        2,
                        2,
                        60,
                        60,
                        LEASE_TTL_MAX_SECS,
                        LEASE_TTL_MAX_SECS + 1,
                        -1,
                    ]);
                    if h.write(grant(id, ttl)).is_ok() {
                        seen.0 += 1;
                    }
                }
                10..=14 => {
                    let got = h.write(revoke(*g.rng.pick(&[5, 5, 6, 6, 7, 7, 9])));
                    if got.is_ok_and(|r| r.revision() > cur) {
                        seen.1 += 1;
                    }
                }
                15..=59 => {
                    let mut req = g.write(cur, comp);
                    relabel(&mut g.rng, &mut req);
                    let leased = matches!(&req, WriteRequest::Put(p) if p.lease != 0);
                    if h.write(req).is_ok() && leased {
                        seen.2 += 1;
                    }
                }
                60..=86 => {
                    let _ = h.read(g.range(cur, comp));
                }
                87..=88 => h.barrier(),
                89..=90 => h.reopen(),
                _ => {
                    h.check_state();
                    check_leases(&h, &LEASE_IDS);
                }
            }
        }
        h.check_state();
        check_leases(&h, &LEASE_IDS);
        assert!(
            seen.0 >= 5 && seen.1 >= 1 && seen.2 >= 10,
            "seed {seed} exercised little: (grants, revokes deleting, leased puts) = {seen:?}"
        );
        revokes_deleting += seen.1;
    }
    assert!(
        revokes_deleting >= 15,
        "{revokes_deleting} revokes deleted keys"
    );
}
