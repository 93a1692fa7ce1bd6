//! Hand-built histories the checker must accept or reject, tests that the
//! search's reductions stay exact, a budget test, and generated histories
//! (up to 2,000 operations, 16 clients, 30% unknown writes) that must be
//! accepted, and rejected once a bug is planted.
//!
//! Answers come from running a [`Model`] in the order the test intends, so
//! legal histories are legal by construction; illegal ones mutate an answer
//! or move an operation in time.

use std::collections::BTreeMap;

use t4_core::kv::{
    CompareResult, CompareTarget, DeleteRangeResponse, OpResponse, RangeRequest, RangeResponse,
    TargetUnion, WriteRequest, WriteResponse,
};
use t4_core::testkit::gen::Rng;
use t4_core::testkit::req;
use t4_core::testkit::Model;
use t4_core::Error;

use super::{check, CheckConfig, CheckResult, Explanation, Verdict};
use crate::history::{Call, Op, Return};

// ---- builders ----

fn get(key: &[u8]) -> RangeRequest {
    req::range(key, b"")
}

fn put(key: &[u8], value: &[u8]) -> WriteRequest {
    WriteRequest::Put(req::put(key, value))
}

/// A read over `[call_at, return_at]` answered by `model` as it is now.
fn read(client: usize, call_at: u64, return_at: u64, r: RangeRequest, model: &Model) -> Op {
    let ret = Return::Range(model.range(&r));
    Op {
        client,
        call_at,
        return_at: Some(return_at),
        call: Call::Range(r),
        ret,
    }
}

/// A write over `[call_at, return_at]`, applied to `model` now.
fn write(client: usize, call_at: u64, return_at: u64, w: WriteRequest, model: &mut Model) -> Op {
    let ret = Return::Write(model.apply(&w));
    assert!(
        matches!(ret, Return::Write(Ok(_))),
        "test setup: {w:?} failed: {ret:?}"
    );
    Op {
        client,
        call_at,
        return_at: Some(return_at),
        call: Call::Write(w),
        ret,
    }
}

/// A write called at `call_at` whose answer never came.
fn unknown(client: usize, call_at: u64, w: WriteRequest) -> Op {
    Op {
        client,
        call_at,
        return_at: None,
        call: Call::Write(w),
        ret: Return::Unknown,
    }
}

/// `op` with its range answer edited by `edit`.
fn edit_range(mut op: Op, edit: impl FnOnce(&mut RangeResponse)) -> Op {
    let Return::Range(Ok(resp)) = &mut op.ret else {
        panic!("not an Ok range: {op:?}")
    };
    edit(resp);
    op
}

/// `op` with its write answer edited by `edit`.
fn edit_write(mut op: Op, edit: impl FnOnce(&mut WriteResponse)) -> Op {
    let Return::Write(Ok(resp)) = &mut op.ret else {
        panic!("not an Ok write: {op:?}")
    };
    edit(resp);
    op
}

/// `op` moved to `[call_at, return_at]`.
fn at(mut op: Op, call_at: u64, return_at: u64) -> Op {
    op.call_at = call_at;
    op.return_at = op.return_at.map(|_| return_at);
    op
}

fn assert_linearizable(history: &[Op]) -> CheckResult {
    let result = check(history, &CheckConfig::default());
    if let Verdict::NotLinearizable(why) = &result.verdict {
        panic!("expected linearizable, got:\n{why}");
    }
    assert_eq!(result.verdict, Verdict::Linearizable, "{result:?}");
    result
}

fn assert_not_linearizable(history: &[Op]) -> Explanation {
    let result = check(history, &CheckConfig::default());
    let Verdict::NotLinearizable(why) = result.verdict else {
        panic!("expected not linearizable, got {result:?}");
    };
    let text = why.to_string();
    println!("{text}");
    assert!(
        text.lines().count() <= 40,
        "explanation too long: {} lines",
        text.lines().count()
    );
    why
}

// ---- 1. sequential ----

/// A sequential history whose read sees the last completed put is linearizable.
#[test]
fn sequential_history_is_linearizable() {
    let mut m = Model::new();
    let h = vec![
        write(0, 0, 1, put(b"k", b"v1"), &mut m),
        write(0, 2, 3, put(b"k", b"v2"), &mut m),
        read(0, 4, 5, get(b"k"), &m),
    ];
    let result = assert_linearizable(&h);
    assert_eq!(result.ops_checked, 3);
}

/// An empty history is linearizable.
#[test]
fn empty_history_is_linearizable() {
    let result = assert_linearizable(&[]);
    assert_eq!((result.ops_checked, result.steps), (0, 0));
}

/// A read after a completed put that returns the value from before it
/// (a stale read) is rejected, with its header revision as served or forged
/// to the current one.
#[test]
fn stale_read_is_rejected() {
    let mut m = Model::new();
    let p1 = write(0, 0, 1, put(b"k", b"v1"), &mut m);
    let stale = read(1, 4, 5, get(b"k"), &m);
    let p2 = write(0, 2, 3, put(b"k", b"v2"), &mut m);
    let why = assert_not_linearizable(&[p1.clone(), p2.clone(), stale.clone()]);
    assert_eq!(why.stuck.len(), 1);
    assert_eq!(why.stuck[0].op, 2, "the stale read is what does not fit");
    let forged = edit_range(stale, |r| r.revision = 3);
    assert_not_linearizable(&[p1, p2, forged]);
}

// ---- 2. concurrent put and get ----

/// A get overlapping a put may see the old or the new value, but not a value
/// nobody wrote.
#[test]
fn overlapping_get_sees_old_or_new_value() {
    let mut m = Model::new();
    let p1 = write(0, 0, 1, put(b"k", b"v1"), &mut m);
    let old = read(1, 12, 18, get(b"k"), &m);
    let p2 = write(0, 10, 20, put(b"k", b"v2"), &mut m);
    let new = read(1, 12, 18, get(b"k"), &m);
    assert_linearizable(&[p1.clone(), p2.clone(), old.clone()]);
    assert_linearizable(&[p1.clone(), p2.clone(), new.clone()]);
    let bogus = edit_range(new, |r| r.kvs[0].value = b"never".to_vec());
    assert_not_linearizable(&[p1.clone(), p2.clone(), bogus]);
    // The old value once the put returned is stale.
    assert_not_linearizable(&[p1, p2, at(old, 21, 22)]);
}

// ---- 3. two overlapping puts ----

/// Two overlapping puts may apply in either order, and later reads must agree
/// with the order the put revisions say.
#[test]
fn overlapping_puts_in_either_order() {
    for (first, second) in [(&b"A"[..], &b"B"[..]), (b"B", b"A")] {
        let mut m = Model::new();
        let w1 = write(0, 0, 10, put(b"k", first), &mut m);
        let w2 = write(1, 5, 15, put(b"k", second), &mut m);
        let r = read(2, 20, 21, get(b"k"), &m);
        assert_linearizable(&[w1.clone(), w2.clone(), r]);
        // The reader seeing the first-applied value contradicts the revisions.
        let mut m = Model::new();
        m.apply(&put(b"k", second)).expect("put");
        m.apply(&put(b"k", first)).expect("put");
        let wrong = read(2, 20, 21, get(b"k"), &m);
        assert_not_linearizable(&[w1, w2, wrong]);
    }
}

/// Sequential reads during two long overlapping puts that see A, then B,
/// then A again are rejected (reads must be monotonic), whether the puts
/// were acknowledged or their answers were lost.
#[test]
fn non_monotonic_reads_are_rejected() {
    let mut m = Model::new();
    let a = write(0, 0, 100, put(b"k", b"A"), &mut m);
    let r1 = read(2, 10, 11, get(b"k"), &m);
    let b = write(1, 0, 100, put(b"k", b"B"), &mut m);
    let r2 = read(2, 20, 21, get(b"k"), &m);
    let r3 = at(r1.clone(), 30, 31);
    assert_linearizable(&[a.clone(), b.clone(), r1.clone(), r2.clone()]);
    assert_not_linearizable(&[a.clone(), b.clone(), r1.clone(), r2.clone(), r3.clone()]);
    let (ua, ub) = (unknown(0, 0, a.call.write()), unknown(1, 0, b.call.write()));
    assert_linearizable(&[ua.clone(), ub.clone(), r1.clone(), r2.clone()]);
    assert_not_linearizable(&[ua, ub, r1, r2, r3]);
}

// ---- 4. unknown writes ----

/// An unknown write may have taken effect (a later read sees it) or not,
/// but not before it was called, and not undone once seen.
#[test]
fn unknown_write_may_or_may_not_take_effect() {
    let mut m = Model::new();
    let p1 = write(0, 0, 1, put(b"k", b"v1"), &mut m);
    let without = read(2, 10, 11, get(b"k"), &m);
    m.apply(&put(b"k", b"v2")).expect("put");
    let with = read(2, 10, 11, get(b"k"), &m);
    let u = unknown(1, 2, put(b"k", b"v2"));

    assert_linearizable(&[p1.clone(), u.clone(), with.clone()]);
    assert_linearizable(&[p1.clone(), u.clone(), without.clone()]);
    // Seen, then gone.
    assert_not_linearizable(&[
        p1.clone(),
        u.clone(),
        with.clone(),
        at(without.clone(), 12, 13),
    ]);
    // Seen by a read that returned before the write was called.
    let early = at(with.clone(), 2, 3);
    assert_not_linearizable(&[p1.clone(), at(u.clone(), 5, 0), early.clone()]);
    // ... but a read concurrent with the call may see it.
    assert_linearizable(&[p1, at(u, 3, 0), early]);
}

// ---- 5. definite failures ----

/// A write that returned an error changed nothing: a read that sees its
/// value is rejected.
#[test]
fn failed_write_is_never_seen() {
    let mut m = Model::new();
    let p1 = write(0, 0, 1, put(b"k", b"v1"), &mut m);
    let failed = Op {
        client: 1,
        call_at: 2,
        return_at: Some(3),
        call: Call::Write(put(b"k", b"v2")),
        ret: Return::Write(Err(Error::Unavailable("leader lost".to_owned()))),
    };
    let old = read(2, 4, 5, get(b"k"), &m);
    m.apply(&put(b"k", b"v2")).expect("put");
    let seen = read(2, 4, 5, get(b"k"), &m);
    assert_linearizable(&[p1.clone(), failed.clone(), old]);
    assert_not_linearizable(&[p1, failed, seen]);
}

// ---- 6. header revisions ----

/// Two acknowledged puts cannot share a revision.
#[test]
fn two_puts_with_one_revision_are_rejected() {
    let a = write(0, 0, 10, put(b"a", b"1"), &mut Model::new());
    let b = write(1, 0, 10, put(b"b", b"2"), &mut Model::new());
    assert_not_linearizable(&[a, b]);
}

/// A put acknowledged at revision 5 after only two earlier writes is
/// rejected, unless an unknown write called in time fills the gap.
#[test]
fn revision_gaps_need_an_unknown_write() {
    let mut m = Model::new();
    let p2 = write(0, 0, 1, put(b"x", b"1"), &mut m);
    let p3 = write(0, 2, 3, put(b"x", b"2"), &mut m);
    m.apply(&put(b"y", b"gap")).expect("put");
    let p5 = write(0, 6, 7, put(b"z", b"3"), &mut m);
    let r = read(1, 8, 9, req::range(b"x", b"\xff"), &m);
    assert_not_linearizable(&[p2.clone(), p3.clone(), p5.clone()]);
    let u = unknown(2, 4, put(b"y", b"gap"));
    assert_linearizable(&[p2.clone(), p3.clone(), p5.clone(), u.clone(), r.clone()]);
    // Called after the put at 5 returned: too late to fill the gap.
    assert_not_linearizable(&[p2, p3, p5, at(u, 8, 0), r]);
}

// ---- 7. lost acknowledged write ----

/// A read after an acknowledged put that finds the key missing is rejected
/// (a lost write), whatever header it claims; concurrent with the put it is
/// fine.
#[test]
fn lost_acknowledged_write_is_rejected() {
    let mut m = Model::new();
    let missing = read(1, 2, 3, get(b"k"), &m);
    let p = write(0, 0, 1, put(b"k", b"v"), &mut m);
    assert_not_linearizable(&[p.clone(), missing.clone()]);
    let forged = edit_range(missing.clone(), |r| r.revision = 2);
    assert_not_linearizable(&[p.clone(), forged]);
    assert_linearizable(&[at(p, 0, 10), missing]);
}

// ---- 8. compare-and-swap txns ----

/// Kubernetes-style optimistic updates (txn if mod_revision(k) == 2 then
/// put else get): of two concurrent ones exactly one succeeds, and a later
/// one cannot succeed where an earlier one failed.
#[test]
fn compare_and_swap_txns_follow_the_order() {
    let cas = |value: &[u8]| {
        req::txn_w(
            vec![req::cmp(
                b"k",
                CompareTarget::Mod,
                CompareResult::Equal,
                TargetUnion::ModRevision(2),
            )],
            vec![req::op(req::put(b"k", value))],
            vec![req::op(get(b"k"))],
        )
    };
    let mut m = Model::new();
    let p = write(0, 0, 1, put(b"k", b"v0"), &mut m);
    let base = m.clone();

    // t1 then t2: t1 succeeds, t2 fails and reads t1's value.
    let t1 = write(1, 10, 20, cas(b"v1"), &mut m);
    let t2 = write(2, 12, 22, cas(b"v2"), &mut m);
    let Return::Write(Ok(WriteResponse::Txn(ref r1))) = t1.ret else {
        panic!("txn")
    };
    let Return::Write(Ok(WriteResponse::Txn(ref r2))) = t2.ret else {
        panic!("txn")
    };
    assert!(r1.succeeded && !r2.succeeded, "test setup");
    assert_linearizable(&[p.clone(), t1.clone(), t2.clone()]);
    // Sequential: fine too.
    assert_linearizable(&[p.clone(), at(t1.clone(), 10, 20), at(t2.clone(), 30, 40)]);
    // t2 failing before t1 was called: nothing changed k yet, so it must
    // have succeeded.
    assert_not_linearizable(&[p.clone(), at(t1.clone(), 30, 40), at(t2.clone(), 10, 20)]);

    // Both succeed: two writes at revision 3.
    let t2_won = write(2, 12, 22, cas(b"v2"), &mut base.clone());
    assert_not_linearizable(&[p.clone(), t1.clone(), t2_won]);

    // t2 fails but its failure branch read the value from before t1.
    let t2_stale = edit_write(t2, |w| {
        let WriteResponse::Txn(t) = w else {
            panic!("txn")
        };
        let Some(OpResponse::Range(r)) = &mut t.responses[0].response else {
            panic!("range")
        };
        *r = base.range(&get(b"k")).expect("range");
        r.revision = 3;
    });
    assert_not_linearizable(&[p, t1, t2_stale]);
}

// ---- 9. compaction ----

/// After a completed compaction, a read below it must fail with
/// `Compacted`; an `Ok` there is rejected. Concurrent with the compaction,
/// or with an unknown one, either answer is fine.
#[test]
fn reads_below_a_completed_compaction_fail() {
    let mut m = Model::new();
    let mut h = vec![
        write(0, 0, 1, put(b"k", b"v1"), &mut m),
        write(0, 2, 3, put(b"k", b"v2"), &mut m),
        write(0, 4, 5, put(b"k", b"v3"), &mut m),
    ];
    let old_ok = read(1, 8, 9, req::get_at(b"k", 2), &m);
    let before = h.clone();
    h.push(write(0, 6, 7, req::compact(3), &mut m));
    let compacted = read(1, 8, 9, req::get_at(b"k", 2), &m);
    assert_eq!(
        compacted.ret,
        Return::Range(Err(Error::Compacted {
            compact_revision: 3
        }))
    );
    assert_linearizable(&[h.clone(), vec![compacted.clone()]].concat());
    assert_not_linearizable(&[h.clone(), vec![old_ok.clone()]].concat());
    assert_linearizable(&[h, vec![at(old_ok.clone(), 6, 7)]].concat());

    let u = unknown(0, 6, req::compact(3));
    for r in [old_ok, compacted] {
        assert_linearizable(&[before.clone(), vec![u.clone(), r]].concat());
    }
}

// ---- 10. delete range and range options ----

/// A delete with `prev_kv` and a range with `limit` must report exactly what
/// the model does: deleted count, previous kvs, `more`, `count`.
#[test]
fn delete_range_and_limited_range_are_exact() {
    let mut m = Model::new();
    let mut h = vec![
        write(0, 0, 1, put(b"a", b"1"), &mut m),
        write(0, 2, 3, put(b"b", b"2"), &mut m),
        write(0, 4, 5, put(b"c", b"3"), &mut m),
    ];
    let limited = RangeRequest {
        limit: 2,
        ..req::range(b"a", b"d")
    };
    let r1 = read(1, 6, 7, limited, &m);
    let mut del = req::del(b"a", b"c");
    del.prev_kv = true;
    let d = write(0, 8, 9, WriteRequest::DeleteRange(del), &mut m);
    let r2 = read(1, 10, 11, req::range(b"a", b"d"), &m);
    {
        let Return::Range(Ok(r)) = &r1.ret else {
            panic!("range")
        };
        assert!(r.more && r.count == 3 && r.kvs.len() == 2, "{r:?}");
    }
    h.extend([r1.clone(), d.clone(), r2.clone()]);
    assert_linearizable(&h);

    let with = |i: usize, op: Op| {
        let mut h = h.clone();
        h[i] = op;
        h
    };
    let del_edit = |edit: fn(&mut DeleteRangeResponse)| {
        edit_write(d.clone(), |w| {
            let WriteResponse::DeleteRange(r) = w else {
                panic!("delete")
            };
            edit(r);
        })
    };
    assert_not_linearizable(&with(4, del_edit(|r| r.deleted = 1)));
    assert_not_linearizable(&with(4, del_edit(|r| r.prev_kvs.truncate(1))));
    assert_not_linearizable(&with(4, del_edit(|r| r.prev_kvs[0].version = 2)));
    assert_not_linearizable(&with(3, edit_range(r1.clone(), |r| r.more = false)));
    assert_not_linearizable(&with(3, edit_range(r1, |r| r.count = 2)));
    assert_not_linearizable(&with(
        5,
        edit_range(r2, |r| {
            r.kvs.insert(0, req::kv(b"a", b"1", 2, 2, 1));
            r.count = 2;
        }),
    ));
}

// ---- 11. budget ----

/// Thirty concurrent unknown writes and a contradiction at the end make the
/// search exponential: a small budget ends it with `Unknown`, not a hang.
#[test]
fn budget_ends_a_pathological_search() {
    let mut h: Vec<Op> = (0..30u8)
        .map(|i| unknown(usize::from(i), u64::from(i), put(&[b'k', i], &[b'v', i])))
        .collect();
    h.push(Op {
        client: 30,
        call_at: 1000,
        return_at: Some(1001),
        call: Call::Range(get(b"z")),
        ret: Return::Range(Ok(RangeResponse {
            revision: 31,
            kvs: vec![req::kv(b"z", b"never", 31, 31, 1)],
            more: false,
            count: 1,
        })),
    });
    let config = CheckConfig { max_steps: 20_000 };
    let result = check(&h, &config);
    assert_eq!(result.verdict, Verdict::Unknown, "{result:?}");
    assert_eq!(result.steps, config.max_steps);
    assert_eq!(result.ops_checked, 1);
}

// ---- the reductions stay exact ----

/// Lost puts on one key whose values no answer shows are interchangeable,
/// unless something compares values: then the order of the two lost puts
/// matters, and the checker must try both.
#[test]
fn lost_puts_are_not_interchangeable_when_values_are_compared() {
    let compare_value = |value: &[u8]| {
        req::txn_w(
            vec![req::cmp(
                b"k",
                CompareTarget::Value,
                CompareResult::Equal,
                TargetUnion::Value(value.to_vec()),
            )],
            vec![req::op(req::put(b"x", b"yes"))],
            vec![req::op(req::put(b"x", b"no"))],
        )
    };
    let mut m = Model::new();
    m.apply(&put(b"k", b"b")).expect("put");
    m.apply(&put(b"k", b"a")).expect("put");
    let t = write(2, 10, 11, compare_value(b"a"), &mut m);
    let Return::Write(Ok(WriteResponse::Txn(ref r))) = t.ret else {
        panic!("txn")
    };
    assert!(r.succeeded, "test setup");
    let (ua, ub) = (
        unknown(0, 0, put(b"k", b"a")),
        unknown(1, 0, put(b"k", b"b")),
    );
    // Only b-then-a explains the txn's success at revision 4.
    assert_linearizable(&[ua.clone(), ub.clone(), t.clone()]);
    assert_linearizable(&[ub, ua, t]);
}

/// A value two unknown writes could have written pins neither: here the
/// one called after the read returned cannot be the writer, the other is.
#[test]
fn duplicate_values_pin_nothing() {
    let mut m = Model::new();
    m.apply(&put(b"k", b"same")).expect("put");
    let r = read(2, 10, 11, get(b"k"), &m);
    let early = unknown(0, 0, put(b"k", b"same"));
    let late = unknown(1, 100, put(b"k", b"same"));
    assert_linearizable(&[late.clone(), early, r.clone()]);
    assert_not_linearizable(&[late, r]);
}

/// The model fingerprint is equal for equal states, however reached, and
/// differs when a value, a version or the compaction watermark differs.
#[test]
fn model_fingerprints_tell_states_apart() {
    let build = |writes: &[WriteRequest]| {
        let mut m = Model::new();
        for w in writes {
            m.apply(w).expect("write");
        }
        m
    };
    let base = [put(b"k", b"1"), put(b"j", b"2")];
    let a = build(&base);
    assert_eq!(a.fingerprint(), build(&base).fingerprint());
    assert_eq!(a.fingerprint(), a.clone().fingerprint());
    assert_ne!(
        a.fingerprint(),
        build(&[put(b"k", b"1"), put(b"j", b"3")]).fingerprint()
    );
    assert_ne!(
        a.fingerprint(),
        build(&[put(b"j", b"2"), put(b"k", b"1")]).fingerprint(),
        "same keys and values, other revisions"
    );
    assert_ne!(
        a.fingerprint(),
        build(&[put(b"k", b"1"), put(b"k", b"1"), put(b"j", b"2")]).fingerprint()
    );
    let mut compacted = a.clone();
    compacted.apply(&req::compact(2)).expect("compact");
    assert_ne!(a.fingerprint(), compacted.fingerprint());
}

// ---- 12. a generated history ----

/// A legal history: `clients` clients issue `ops` operations on eight keys,
/// each taking effect (on one shared model) at a random moment between its
/// call and its return. `lost_percent` of the writes lose their answer;
/// those take effect inside their interval, later, or never.
fn generated_history(seed: u64, clients: usize, ops: usize, lost_percent: u64) -> Vec<Op> {
    struct InFlight {
        index: usize,
        applied: bool,
        lost: bool,
    }
    let mut rng = Rng::new(seed);
    let mut model = Model::new();
    let mut history: Vec<Op> = Vec::new();
    let mut in_flight: Vec<Option<InFlight>> = (0..clients).map(|_| None).collect();
    let mut lingering: Vec<WriteRequest> = Vec::new();
    // The mod revision each client last saw per key, for its CAS txns.
    let mut seen: Vec<BTreeMap<Vec<u8>, i64>> = vec![BTreeMap::new(); clients];
    let mut now = 0_u64;
    let mut unique = 0_u64;
    // Bounded: every iteration advances one op's life or a lingering write.
    for _ in 0..ops * 40 {
        if history.len() == ops && in_flight.iter().all(Option::is_none) {
            break;
        }
        now += 1 + rng.below(5);
        if !lingering.is_empty() && rng.chance(1, 20) {
            let i = usize::try_from(rng.below(lingering.len() as u64)).expect("fits");
            let w = lingering.swap_remove(i);
            if rng.chance(1, 2) {
                let _ = model.apply(&w);
            }
            continue;
        }
        let c = usize::try_from(rng.below(clients as u64)).expect("fits");
        match &mut in_flight[c] {
            None if history.len() < ops => {
                let key = format!("k{}", rng.below(8)).into_bytes();
                unique += 1;
                let value = format!("v{unique}").into_bytes();
                let roll = rng.below(100);
                let back = i64::try_from(rng.below(30)).expect("fits");
                let old = (model.current_revision() - back).max(1);
                let cas = |expected: i64, failure: RangeRequest| {
                    Call::Write(req::txn_w(
                        vec![req::cmp(
                            &key,
                            CompareTarget::Mod,
                            CompareResult::Equal,
                            TargetUnion::ModRevision(expected),
                        )],
                        vec![req::op(req::put(&key, &value))],
                        vec![req::op(failure)],
                    ))
                };
                let call = if roll < 40 {
                    Call::Range(get(&key))
                } else if roll < 44 {
                    Call::Range(RangeRequest {
                        limit: 3,
                        ..req::range(b"k", b"l")
                    })
                } else if roll < 47 {
                    Call::Range(req::get_at(&key, old))
                } else if roll < 72 {
                    Call::Write(put(&key, &value))
                } else if roll < 76 {
                    let mut d = req::del(&key, b"");
                    d.prev_kv = true;
                    Call::Write(WriteRequest::DeleteRange(d))
                } else if roll < 77 {
                    Call::Write(WriteRequest::DeleteRange(req::del(b"k3", b"k6")))
                } else if roll < 95 {
                    cas(seen[c].get(&key).copied().unwrap_or(0), get(&key))
                } else if roll < 97 {
                    // The failure branch reads an old revision: its answer
                    // depends on compactions.
                    cas(
                        seen[c].get(&key).copied().unwrap_or(0),
                        req::get_at(&key, old),
                    )
                } else if roll < 98 {
                    let mut other = value.clone();
                    other.push(b'b');
                    Call::Write(req::txn_w(
                        vec![],
                        vec![
                            req::op(req::put(&key, &value)),
                            req::op(req::put(b"k7", &other)),
                        ],
                        vec![],
                    ))
                } else {
                    Call::Write(req::compact((model.current_revision() - 20).max(1)))
                };
                let lost = matches!(call, Call::Write(_)) && rng.chance(lost_percent, 100);
                in_flight[c] = Some(InFlight {
                    index: history.len(),
                    applied: false,
                    lost,
                });
                history.push(Op {
                    client: c,
                    call_at: now,
                    return_at: None,
                    call,
                    ret: Return::Unknown,
                });
            }
            None => {}
            Some(f) if !f.applied => {
                // The linearization point.
                f.applied = true;
                let op = &mut history[f.index];
                match &op.call {
                    Call::Range(r) => {
                        let got = model.range(r);
                        if let (Ok(resp), true) = (&got, r.revision == 0) {
                            for kv in &resp.kvs {
                                seen[c].insert(kv.key.clone(), kv.mod_revision);
                            }
                        }
                        op.ret = Return::Range(got);
                    }
                    Call::Write(w) if f.lost => match rng.below(3) {
                        0 => {
                            let _ = model.apply(w);
                        }
                        1 => lingering.push(w.clone()),
                        _ => {}
                    },
                    Call::Write(w) => op.ret = Return::Write(model.apply(w)),
                }
            }
            Some(f) => {
                if !f.lost {
                    history[f.index].return_at = Some(now);
                }
                in_flight[c] = None;
            }
        }
    }
    assert!(
        history.len() == ops && in_flight.iter().all(Option::is_none),
        "generator bound too small"
    );
    history
}

fn describe(history: &[Op]) -> String {
    let unknown = history
        .iter()
        .filter(|op| op.ret == Return::Unknown)
        .count();
    let writes = history
        .iter()
        .filter(|op| matches!(op.call, Call::Write(_)))
        .count();
    let failed = history
        .iter()
        .filter(|op| matches!(op.ret, Return::Write(Err(_)) | Return::Range(Err(_))))
        .count();
    format!(
        "{} ops, {writes} writes, {unknown} unknown, {failed} errors",
        history.len()
    )
}

/// A generated legal history of 2,000 operations from 8 clients with ~5%
/// unknown writes is accepted within the default budget (and quickly).
#[test]
fn generated_history_is_accepted() {
    for seed in [1, 2, 3] {
        let h = generated_history(seed, 8, 2000, 5);
        let started = std::time::Instant::now();
        let result = assert_linearizable(&h);
        println!(
            "seed {seed}: {}: {} required, {} steps, {:?}",
            describe(&h),
            result.ops_checked,
            result.steps,
            started.elapsed()
        );
    }
}

/// The generated history with one read answer changed to a value nobody
/// wrote is rejected, and the explanation names that read.
#[test]
fn generated_history_with_a_bad_read_is_rejected() {
    let mut h = generated_history(4, 8, 2000, 5);
    let victim = h
        .iter()
        .enumerate()
        .skip(1000)
        .find_map(|(i, op)| match &op.ret {
            Return::Range(Ok(r)) if !r.kvs.is_empty() => Some(i),
            _ => None,
        })
        .expect("a read with a kv");
    h[victim] = edit_range(h[victim].clone(), |r| r.kvs[0].value = b"never".to_vec());
    let started = std::time::Instant::now();
    let result = check(&h, &CheckConfig::default());
    println!("{} steps, {:?}", result.steps, started.elapsed());
    let Verdict::NotLinearizable(why) = result.verdict else {
        panic!("expected not linearizable, got {result:?}");
    };
    println!("{why}");
    let named = why
        .stuck
        .iter()
        .chain(&why.misfit_ahead)
        .any(|s| s.op == victim);
    assert!(named, "{why}");
    assert!(why.to_string().lines().count() <= 40, "{why}");
}

/// The same history and budget give the same verdict and step count.
#[test]
fn checking_is_deterministic() {
    let h = generated_history(5, 6, 500, 5);
    let a = check(&h, &CheckConfig::default());
    let b = check(&h, &CheckConfig::default());
    assert_eq!(a, b);
}

/// `Call::write` for tests: the write request of a write call.
trait CallExt {
    fn write(&self) -> WriteRequest;
}

impl CallExt for Call {
    fn write(&self) -> WriteRequest {
        match self {
            Call::Write(w) => w.clone(),
            Call::Range(_) => panic!("not a write"),
        }
    }
}

/// Four kinds of store bug planted in a generated history after its middle:
/// a value nobody wrote, a stale read (an earlier answer for the same key
/// replayed later), a lost write (a key read as missing), a duplicate
/// revision (a put acknowledged at the previous put's revision).
fn plant_bugs(h: &[Op]) -> Vec<(&'static str, Vec<Op>)> {
    let mid = h.len() / 2;
    let is_get =
        |op: &Op| matches!(&op.call, Call::Range(r) if r.range_end.is_empty() && r.revision == 0);
    let with_kv = |op: &Op| matches!(&op.ret, Return::Range(Ok(r)) if !r.kvs.is_empty());
    let mut out = Vec::new();
    let victim = (mid..h.len())
        .find(|&i| is_get(&h[i]) && with_kv(&h[i]))
        .expect("a get with a kv");
    let mut bad = h.to_vec();
    bad[victim] = edit_range(bad[victim].clone(), |r| r.kvs[0].value = b"never".to_vec());
    out.push(("never-written value", bad));

    // Stale: a later get of the same key answered with an older answer,
    // although a write between the two answers' revisions returned before
    // the later get was called.
    let revision = |op: &Op| match &op.ret {
        Return::Range(Ok(r)) => Some(r.revision),
        Return::Write(Ok(w)) => Some(w.revision()),
        _ => None,
    };
    let stale = (mid..h.len()).find_map(|i| {
        if !(is_get(&h[i]) && with_kv(&h[i])) {
            return None;
        }
        (0..i)
            .rev()
            .find(|&j| {
                is_get(&h[j])
                    && h[j].call == h[i].call
                    && with_kv(&h[j])
                    && h[j].return_at < Some(h[i].call_at)
                    && h.iter().any(|w| {
                        matches!(w.call, Call::Write(_))
                            && w.return_at < Some(h[i].call_at)
                            && revision(w) > revision(&h[j])
                            && revision(w) <= revision(&h[i])
                    })
            })
            .map(|j| (i, j))
    });
    if let Some((i, j)) = stale {
        let mut bad = h.to_vec();
        bad[i].ret = h[j].ret.clone();
        out.push(("stale read", bad));
    }

    let mut bad = h.to_vec();
    bad[victim] = edit_range(bad[victim].clone(), |r| {
        r.kvs.clear();
        r.count = 0;
    });
    out.push(("lost write", bad));

    let puts: Vec<usize> = (mid..h.len())
        .filter(|&i| matches!(h[i].ret, Return::Write(Ok(WriteResponse::Put(_)))))
        .take(2)
        .collect();
    if let [a, b] = puts[..] {
        let mut bad = h.to_vec();
        let Return::Write(Ok(WriteResponse::Put(pa))) = &h[a].ret else {
            unreachable!()
        };
        let rev = pa.revision;
        bad[b] = edit_write(bad[b].clone(), |w| {
            if let WriteResponse::Put(p) = w {
                p.revision = rev;
            }
        });
        out.push(("duplicate revision", bad));
    }
    out
}

/// Generated legal histories with up to 16 clients and 30% unknown writes
/// are accepted, and each of four planted bugs is rejected, all well within
/// the default budget (the steps are printed).
#[test]
fn generated_histories_with_planted_bugs() {
    for (clients, lost) in [(4, 5), (12, 20), (16, 30)] {
        for seed in 20..22 {
            let h = generated_history(seed, clients, 1500, lost);
            let ok = check(&h, &CheckConfig::default());
            let mut line = format!(
                "{clients} clients, {lost}% lost, seed {seed} ({}): legal {} steps",
                describe(&h),
                ok.steps
            );
            assert_eq!(ok.verdict, Verdict::Linearizable, "{line}: {ok:?}");
            for (kind, bad) in plant_bugs(&h) {
                let ko = check(&bad, &CheckConfig::default());
                line += &format!("; {kind}: {} steps", ko.steps);
                assert!(
                    matches!(ko.verdict, Verdict::NotLinearizable(_)),
                    "{line}: {:?}",
                    ko.verdict
                );
            }
            println!("{line}");
        }
    }
}
