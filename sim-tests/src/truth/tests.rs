//! Tests of [`super::replay`], and log builders shared with the watch
//! checker's tests.

use t4_core::engine::MemEngine;
use t4_core::kv::{
    AlarmAction, AlarmRequest, AlarmType, CompactionRequest, Event, EventType, KeyValue,
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RequestOp, WriteResponse,
};
use t4_core::log::{Barrier, Entry, Payload};
use t4_core::mvcc::Store;
use t4_core::testkit::gen::Gen;
use t4_core::testkit::req;

use super::replay;

/// A log of `payloads` at indexes 1, 2, ... (term 1).
pub(crate) fn log(payloads: Vec<Payload>) -> Vec<Entry> {
    payloads
        .into_iter()
        .zip(1..)
        .map(|(payload, index)| Entry {
            term: 1,
            index,
            payload: Some(payload),
        })
        .collect()
}

/// `put key = value`.
pub(crate) fn put(key: &str, value: &str) -> Payload {
    Payload::Put(req::put(key.as_bytes(), value.as_bytes()))
}

/// `delete [key, range_end)` (etcd key forms).
pub(crate) fn del(key: &str, range_end: &str) -> Payload {
    Payload::DeleteRange(req::del(key.as_bytes(), range_end.as_bytes()))
}

/// A txn without compares running `ops`.
pub(crate) fn txn(ops: Vec<RequestOp>) -> Payload {
    Payload::Txn(req::txn(vec![], ops, vec![]))
}

/// A txn op `put key = value`.
pub(crate) fn op_put(key: &str, value: &str) -> RequestOp {
    req::op(req::put(key.as_bytes(), value.as_bytes()))
}

/// A compaction to `revision`.
pub(crate) fn compact(revision: i64) -> Payload {
    Payload::Compaction(CompactionRequest {
        revision,
        physical: false,
    })
}

/// `key = value` as the store reports it.
pub(crate) fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    req::kv(key.as_bytes(), value.as_bytes(), create, modified, version)
}

/// A put event.
pub(crate) fn put_ev(kv: KeyValue, prev_kv: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(kv),
        prev_kv,
    }
}

/// A delete event of `key` at `revision`, as the store emits it.
pub(crate) fn del_ev(key: &str, revision: i64, prev_kv: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            mod_revision: revision,
            ..KeyValue::default()
        }),
        prev_kv,
    }
}

/// `put key = value` attached to `lease`.
fn lput(key: &str, value: &str, lease: i64) -> Payload {
    Payload::Put(PutRequest {
        lease,
        ..req::put(key.as_bytes(), value.as_bytes())
    })
}

/// A grant of lease `id` (as admission logs it: the id chosen, the TTL raised).
fn grant(id: i64) -> Payload {
    Payload::LeaseGrant(LeaseGrantRequest { ttl: 10, id })
}

fn revoke(id: i64) -> Payload {
    Payload::LeaseRevoke(LeaseRevokeRequest { id })
}

fn checkpoint(id: i64, remaining_ttl: i64) -> Payload {
    Payload::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint { id, remaining_ttl }],
    })
}

/// `kv` attached to `lease`.
fn leased(kv: KeyValue, lease: i64) -> KeyValue {
    KeyValue { lease, ..kv }
}

fn alarm(action: AlarmAction) -> Payload {
    Payload::Alarm(AlarmRequest {
        action: action as i32,
        member_id: 1,
        alarm: AlarmType::Nospace as i32,
    })
}

/// A txn's puts are one revision, one event each, in op order (not key order).
#[test]
fn txn_with_two_puts_is_one_revision_in_op_order() {
    let t = replay(&log(vec![
        put("a", "0"),
        txn(vec![op_put("b", "1"), op_put("a", "1")]),
    ]))
    .expect("replays");
    assert_eq!(t.final_revision(), 3);
    assert_eq!(
        t.events_at(3),
        [
            put_ev(kv("b", "1", 3, 3, 1), None),
            put_ev(kv("a", "1", 2, 3, 2), Some(kv("a", "0", 2, 2, 1))),
        ]
    );
    assert_eq!(t.events().len(), 2, "revisions 2 and 3");
    assert_eq!(
        t.events()[0],
        (2, vec![put_ev(kv("a", "0", 2, 2, 1), None)])
    );
}

/// A delete range of 3 keys: 3 delete events `{key, mod_revision}` with the
/// deleted versions as `prev_kv`; keys outside the range stay.
#[test]
fn delete_range_of_three_keys_gives_three_deletes_with_prev_kv() {
    let t = replay(&log(vec![
        put("a", "1"),
        put("b", "2"),
        put("c", "3"),
        put("d", "4"),
        del("a", "d"),
    ]))
    .expect("replays");
    assert_eq!(t.final_revision(), 6);
    assert_eq!(
        t.events_at(6),
        [
            del_ev("a", 6, Some(kv("a", "1", 2, 2, 1))),
            del_ev("b", 6, Some(kv("b", "2", 3, 3, 1))),
            del_ev("c", 6, Some(kv("c", "3", 4, 4, 1))),
        ]
    );
    assert_eq!(t.value_at(b"a", 6), None);
    assert_eq!(t.value_at(b"d", 6), Some(kv("d", "4", 5, 5, 1)));
}

/// Only compactions that the store would apply are recorded (with the
/// revision current when they applied); history stays readable anyway.
#[test]
fn failed_compactions_are_not_recorded() {
    let t = replay(&log(vec![
        put("a", "1"), // @2
        put("a", "2"), // @3
        compact(4),    // future: fails
        compact(2),    // ok
        compact(2),    // not above the watermark: fails
        compact(1),    // below: fails
        put("a", "3"), // @4
        compact(3),    // ok
        compact(5),    // future: fails
        compact(4),    // ok
    ]))
    .expect("replays");
    assert_eq!(t.compactions(), [2, 3, 4]);
    assert_eq!(t.compaction_applied_at(2), Some(3));
    assert_eq!(t.compaction_applied_at(3), Some(4));
    assert_eq!(t.compaction_applied_at(4), Some(4));
    assert_eq!(t.compaction_applied_at(5), None);
    assert_eq!(t.final_revision(), 4);
    assert_eq!(
        t.value_at(b"a", 2),
        Some(kv("a", "1", 2, 2, 1)),
        "not compacted away"
    );
    assert_eq!(t.events().len(), 3);
}

/// etcd's watermark starts at -1, so `compact(0)` succeeds once on a fresh store.
#[test]
fn compaction_to_zero_succeeds_once() {
    let t = replay(&log(vec![compact(0), compact(0), compact(-1)])).expect("replays");
    assert_eq!(t.compactions(), [0]);
    assert_eq!(t.final_revision(), 1);
}

/// `find_put` names the revision of the put of a value; `value_at` reads any revision.
#[test]
fn find_put_and_value_at() {
    let t = replay(&log(vec![
        put("a", "x1"), // @2
        put("a", "x2"), // @3
        del("a", ""),   // @4
        put("b", "y1"), // @5
        put("a", "x3"), // @6
        Payload::Barrier(Barrier {}),
    ]))
    .expect("replays");
    assert_eq!(t.find_put(b"a", b"x1"), Some(2));
    assert_eq!(t.find_put(b"a", b"x2"), Some(3));
    assert_eq!(t.find_put(b"a", b"x3"), Some(6));
    assert_eq!(t.find_put(b"b", b"y1"), Some(5));
    assert_eq!(t.find_put(b"a", b"y1"), None, "value of another key");
    assert_eq!(t.find_put(b"a", b"nope"), None);
    assert_eq!(t.find_put(b"zz", b"x1"), None);
    assert_eq!(t.value_at(b"a", 1), None);
    assert_eq!(t.value_at(b"a", 3), Some(kv("a", "x2", 2, 3, 2)));
    assert_eq!(t.value_at(b"a", 4), None);
    assert_eq!(t.value_at(b"a", 5), None);
    assert_eq!(t.value_at(b"a", 6), Some(kv("a", "x3", 6, 6, 1)));
    assert_eq!(t.value_at(b"a", 100), Some(kv("a", "x3", 6, 6, 1)));
    assert_eq!(t.final_revision(), 6);
    assert_eq!(
        t.events_at(6),
        [put_ev(kv("a", "x3", 6, 6, 1), None)],
        "no prev_kv after a delete"
    );
    assert_eq!(t.events_at(7), []);
    assert_eq!(t.events_at(1), []);
    assert_eq!(t.events_at(-5), []);
}

/// A write that fails at apply time takes no revision and changes nothing.
#[test]
fn failed_writes_take_no_revision() {
    let t = replay(&log(vec![
        Payload::Put(PutRequest {
            key: b"a".to_vec(),
            ignore_value: true, // the key must exist
            ..PutRequest::default()
        }),
        Payload::Put(PutRequest {
            key: b"a".to_vec(),
            value: b"v".to_vec(),
            lease: 7, // no such lease
            ..PutRequest::default()
        }),
        del("nothing", ""), // deletes nothing: no revision either
        put("a", "1"),
    ]))
    .expect("replays");
    assert_eq!(t.final_revision(), 2);
    assert_eq!(t.events_at(2), [put_ev(kv("a", "1", 2, 2, 1), None)]);
}

/// With NOSPACE raised, puts are refused; deletes pass (the store's capped applier).
#[test]
fn nospace_alarm_refuses_puts() {
    let t = replay(&log(vec![
        put("a", "1"), // @2
        alarm(AlarmAction::Activate),
        put("b", "1"),               // refused
        txn(vec![op_put("c", "1")]), // refused
        del("a", ""),                // @3
        alarm(AlarmAction::Deactivate),
        put("d", "1"), // @4
    ]))
    .expect("replays");
    assert_eq!(t.final_revision(), 4);
    assert_eq!(t.find_put(b"b", b"1"), None);
    assert_eq!(t.find_put(b"c", b"1"), None);
    assert_eq!(t.find_put(b"d", b"1"), Some(4));
}

/// A txn that puts a key and then deletes it (in a later nested txn): both
/// events carry the key as it was before the txn (`mod_revision - 1`).
#[test]
fn put_then_delete_in_one_txn_both_have_the_old_prev_kv() {
    let t = replay(&log(vec![
        put("a", "0"),
        txn(vec![
            req::op(req::txn(vec![], vec![op_put("a", "1")], vec![])),
            req::op(req::txn(vec![], vec![req::op(req::del(b"a", b""))], vec![])),
        ]),
    ]))
    .expect("replays");
    let old = kv("a", "0", 2, 2, 1);
    assert_eq!(
        t.events_at(3),
        [
            put_ev(kv("a", "1", 2, 3, 2), Some(old.clone())),
            del_ev("a", 3, Some(old)),
        ]
    );
    assert_eq!(t.value_at(b"a", 3), None);
}

/// Malformed logs are refused with a reason.
#[test]
fn malformed_logs_are_errors() {
    let mut gap = log(vec![put("a", "1"), put("a", "2")]);
    gap[1].index = 3;
    assert!(replay(&gap).unwrap_err().contains("dense"));
    let mut empty = log(vec![put("a", "1")]);
    empty[0].payload = None;
    assert!(replay(&empty).unwrap_err().contains("no payload"));
    assert_eq!(replay(&[]).expect("empty log").final_revision(), 1);
}

/// A revoke of a lease with two keys: two delete events at one revision, in
/// key order (not attach order), each with the deleted version as
/// `prev_kv`; keys without the lease stay; grants and checkpoints take no
/// revision.
#[test]
fn revoke_deletes_the_leases_keys_at_one_revision_in_key_order() {
    let t = replay(&log(vec![
        grant(7),
        lput("b", "1", 7), // @2
        lput("a", "1", 7), // @3
        put("c", "1"),     // @4
        checkpoint(7, 4),
        revoke(7),        // @5
        checkpoint(7, 3), // of a revoked lease: skipped
    ]))
    .expect("replays");
    assert_eq!(t.final_revision(), 5);
    assert_eq!(
        t.events_at(5),
        [
            del_ev("a", 5, Some(leased(kv("a", "1", 3, 3, 1), 7))),
            del_ev("b", 5, Some(leased(kv("b", "1", 2, 2, 1), 7))),
        ]
    );
    assert_eq!(t.value_at(b"a", 5), None);
    assert_eq!(t.value_at(b"b", 4), Some(leased(kv("b", "1", 2, 2, 1), 7)));
    assert_eq!(t.value_at(b"c", 5), Some(kv("c", "1", 4, 4, 1)));
}

/// A put naming a lease never granted (or already revoked) fails and takes
/// no revision; so does a revoke of an unknown lease, and a second grant of
/// one id changes nothing.
#[test]
fn put_with_unknown_lease_fails_and_takes_no_revision() {
    let t = replay(&log(vec![
        grant(7),
        lput("a", "1", 8), // no lease 8: fails
        lput("b", "1", 7), // @2
        revoke(8),         // unknown: fails
        grant(7),          // exists: fails
        revoke(7),         // @3: deletes b
        lput("c", "1", 7), // revoked: fails
        txn(vec![
            op_put("d", "1"),
            req::op(PutRequest {
                lease: 7,
                ..req::put(b"e", b"1")
            }),
        ]), // fails whole
        put("f", "1"),     // @4
    ]))
    .expect("replays");
    assert_eq!(t.final_revision(), 4);
    for (key, value) in [("a", "1"), ("c", "1"), ("d", "1"), ("e", "1")] {
        assert_eq!(t.find_put(key.as_bytes(), value.as_bytes()), None, "{key}");
    }
    assert_eq!(
        t.events_at(3),
        [del_ev("b", 3, Some(leased(kv("b", "1", 2, 2, 1), 7)))]
    );
    assert_eq!(t.events_at(4), [put_ev(kv("f", "1", 4, 4, 1), None)]);
}

/// A later put without a lease detaches the key: the revoke then deletes
/// nothing for it (and, with no keys left, takes no revision).
#[test]
fn a_later_put_without_lease_detaches() {
    let t = replay(&log(vec![
        grant(7),
        lput("a", "1", 7), // @2
        put("a", "2"),     // @3: detached
        revoke(7),         // no keys: no revision
        put("b", "1"),     // @4
    ]))
    .expect("replays");
    assert_eq!(t.final_revision(), 4);
    assert_eq!(
        t.events_at(3),
        [put_ev(
            kv("a", "2", 2, 3, 2),
            Some(leased(kv("a", "1", 2, 2, 1), 7))
        )]
    );
    assert_eq!(t.events_at(4), [put_ev(kv("b", "1", 4, 4, 1), None)]);
    assert_eq!(t.value_at(b"a", 4), Some(kv("a", "2", 2, 3, 2)));
}

/// A store run: the events it emitted per revision, its watermark moves
/// (compaction, current revision then), its final revision, and how many
/// revokes deleted keys.
struct StoreRun {
    entries: Vec<Entry>,
    live: Vec<(i64, Vec<Event>)>,
    watermarks: Vec<(i64, i64)>,
    final_revision: i64,
    revokes_deleting: usize,
}

/// Applies `steps` entries from `next` (given the generator and the store's
/// current and compaction revisions) to a real store on a [`MemEngine`].
fn run_store(
    seed: u64,
    steps: u64,
    mut next: impl FnMut(&mut Gen, i64, i64) -> Payload,
) -> StoreRun {
    let engine = MemEngine::new();
    let mut store = Store::open(&engine).expect("open");
    let mut gen = Gen::new(seed);
    let mut run = StoreRun {
        entries: Vec::new(),
        live: Vec::new(),
        watermarks: Vec::new(),
        final_revision: 0,
        revokes_deleting: 0,
    };
    for index in 1..=steps {
        let meta = *store.meta();
        let entry = Entry {
            term: 1,
            index,
            payload: Some(next(&mut gen, meta.current_revision, meta.compact_revision)),
        };
        let applied = store.apply(&engine, &entry).expect("apply");
        let after = *store.meta();
        if matches!(applied.result, Ok(WriteResponse::LeaseRevoke(_))) && !applied.events.is_empty()
        {
            run.revokes_deleting += 1;
        }
        if !applied.events.is_empty() {
            run.live.push((after.current_revision, applied.events));
        }
        if after.compact_revision != meta.compact_revision {
            run.watermarks
                .push((after.compact_revision, after.current_revision));
        }
        run.entries.push(entry);
    }
    run.final_revision = store.meta().current_revision;
    run
}

/// The truth of `run`'s log equals what the store did.
fn check_truth(seed: u64, run: &StoreRun) {
    let t = replay(&run.entries).expect("replays");
    assert_eq!(t.final_revision(), run.final_revision, "seed {seed}");
    assert_eq!(t.events(), run.live.as_slice(), "seed {seed}");
    let recorded: Vec<(i64, i64)> = t
        .compactions()
        .iter()
        .map(|&c| (c, t.compaction_applied_at(c).expect("recorded")))
        .collect();
    assert_eq!(recorded, run.watermarks, "seed {seed}");
    assert!(
        !run.watermarks.is_empty() && run.live.len() > 50,
        "seed {seed} exercised little"
    );
}

/// The truth's events are exactly the events the real store emits to
/// watchers, revision by revision, and its compactions are the store's
/// watermark moves (random logs of puts, deletes, nested txns, compactions).
#[test]
fn truth_matches_the_store() {
    for seed in 0..20 {
        let run = run_store(seed, 300, |gen, current, compact| {
            Payload::from(gen.write(current, compact))
        });
        check_truth(seed, &run);
    }
}

/// As [`truth_matches_the_store`], with lease grants, revokes, checkpoints
/// and puts with leases (granted or not) mixed in: the revokes' deletes are
/// the store's events too.
#[test]
fn truth_matches_the_store_with_leases() {
    const IDS: [i64; 4] = [5, 6, 7, 9]; // 9 is never granted
    let mut revokes_deleting = 0;
    for seed in 0..20 {
        let run = run_store(seed, 300, |gen, current, compact| match gen.rng.below(20) {
            0 | 1 => grant(*gen.rng.pick(&IDS[..3])),
            2 | 3 => revoke(*gen.rng.pick(&IDS)),
            4 => checkpoint(*gen.rng.pick(&IDS), 3),
            5..=8 => {
                let p = gen.put();
                let lease = if p.ignore_lease {
                    0
                } else {
                    *gen.rng.pick(&IDS)
                };
                Payload::Put(PutRequest { lease, ..p })
            }
            _ => Payload::from(gen.write(current, compact)),
        });
        check_truth(seed, &run);
        revokes_deleting += run.revokes_deleting;
    }
    assert!(
        revokes_deleting >= 40,
        "only {revokes_deleting} revokes deleted keys"
    );
}
