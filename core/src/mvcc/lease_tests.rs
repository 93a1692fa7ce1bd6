//! The lease table and alarms at apply time, with exact answers: grant,
//! attach, revoke (one revision, events in key order), checkpoint, alarm
//! activate/deactivate and the NOSPACE rule, and reloading both at open.

use super::*;
use crate::engine::MemEngine;
use crate::kv::{
    AlarmAction, AlarmRequest, AlarmType, Event, EventType, KeyValue, LeaseCheckpoint,
    LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, PutResponse,
};
use crate::testkit::req::{compact, del, exists, kv, op, put, txn};

/// A store over a fresh engine that numbers its own entries.
struct Fixture {
    engine: MemEngine,
    store: Store,
    index: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let engine = MemEngine::new();
        let store = Store::open(&engine).expect("open");
        Fixture {
            engine,
            store,
            index: 0,
        }
    }

    /// The store reopened over the same engine (a restart).
    fn reopen(&self) -> Fixture {
        Fixture {
            engine: self.engine.clone(),
            store: Store::open(&self.engine).expect("reopen"),
            index: self.index,
        }
    }

    fn apply(&mut self, payload: Payload) -> Applied {
        self.index += 1;
        let entry = Entry {
            term: 1,
            index: self.index,
            payload: Some(payload),
        };
        self.store.apply(&self.engine, &entry).expect("apply")
    }

    fn write(&mut self, payload: Payload) -> Result<WriteResponse, Error> {
        self.apply(payload).result
    }

    fn rev(&self) -> i64 {
        self.store.meta().current_revision
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        range(&self.engine, &crate::testkit::req::all_at(0))
            .expect("range")
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }
}

fn grant(id: i64, ttl: i64) -> Payload {
    Payload::LeaseGrant(LeaseGrantRequest { ttl, id })
}

fn revoke(id: i64) -> Payload {
    Payload::LeaseRevoke(LeaseRevokeRequest { id })
}

fn put_lease(key: &[u8], lease: i64) -> Payload {
    Payload::Put(PutRequest {
        lease,
        ..put(key, b"v")
    })
}

fn alarm(action: AlarmAction, member_id: u64, alarm: AlarmType) -> Payload {
    Payload::Alarm(AlarmRequest {
        action: action as i32,
        member_id,
        alarm: alarm as i32,
    })
}

fn member(member_id: u64, alarm: AlarmType) -> AlarmMember {
    AlarmMember {
        member_id,
        alarm: alarm as i32,
    }
}

fn info(id: i64, ttl_secs: i64, remaining_ttl_secs: i64) -> LeaseInfo {
    LeaseInfo {
        id,
        ttl_secs,
        remaining_ttl_secs,
    }
}

/// A grant records the lease without taking a revision; a second grant of
/// the same id fails and changes nothing.
#[test]
fn grant_records_the_lease_without_a_revision() {
    let mut f = Fixture::new();
    assert_eq!(
        f.write(grant(7, 10)),
        Ok(WriteResponse::LeaseGrant(LeaseGrantResponse {
            revision: 1,
            id: 7,
            ttl: 10
        }))
    );
    assert_eq!(f.rev(), 1);
    assert!(f.store.lease_exists(7));
    assert!(!f.store.lease_exists(8));
    assert_eq!(leases(&f.engine).expect("leases"), vec![info(7, 10, 0)]);
    assert_eq!(f.write(grant(7, 99)), Err(Error::LeaseExists));
    assert_eq!(leases(&f.engine).expect("leases"), vec![info(7, 10, 0)]);
    assert_eq!(f.store.meta().applied_index, 2);
}

/// Grants that must never be logged still fail deterministically at apply.
#[test]
fn bad_grants_fail_at_apply() {
    let mut f = Fixture::new();
    assert!(matches!(f.write(grant(0, 10)), Err(Error::Internal(_))));
    assert_eq!(
        f.write(grant(5, -1)),
        Err(Error::InvalidArgument(Invalid::NegativeLeaseTtl))
    );
    assert_eq!(
        f.write(grant(-5, 1)),
        Err(Error::InvalidArgument(Invalid::NegativeLeaseId))
    );
    assert_eq!(
        f.write(grant(5, crate::lease::LEASE_TTL_MAX_SECS + 1)),
        Err(Error::InvalidArgument(Invalid::LeaseTtlTooLarge))
    );
    assert_eq!(leases(&f.engine).expect("leases"), vec![]);
}

/// A put with a granted lease attaches the key; with an unknown lease it
/// fails and changes nothing, in a txn too.
#[test]
fn puts_attach_to_granted_leases_only() {
    let mut f = Fixture::new();
    f.write(grant(7, 10)).expect("grant");
    assert_eq!(
        f.write(put_lease(b"a", 7)),
        Ok(WriteResponse::Put(PutResponse {
            revision: 2,
            prev_kv: None
        }))
    );
    assert_eq!(lease_keys(&f.engine, 7).expect("keys"), vec![b"a".to_vec()]);
    assert_eq!(f.write(put_lease(b"b", 8)), Err(Error::LeaseNotFound));
    let t = txn(
        vec![],
        vec![
            op(put(b"c", b"1")),
            op(PutRequest {
                lease: 8,
                ..put(b"d", b"2")
            }),
        ],
        vec![],
    );
    assert_eq!(f.write(Payload::Txn(t)), Err(Error::LeaseNotFound));
    assert_eq!(f.rev(), 2);
    assert_eq!(f.keys(), vec![b"a".to_vec()]);
    let t = txn(
        vec![],
        vec![op(PutRequest {
            lease: 7,
            ..put(b"c", b"1")
        })],
        vec![],
    );
    f.write(Payload::Txn(t))
        .expect("txn put with a granted lease");
    assert_eq!(
        lease_keys(&f.engine, 7).expect("keys"),
        vec![b"a".to_vec(), b"c".to_vec()]
    );
}

/// A revoke deletes every attached key at one revision, sub-revisions and
/// events in key order, and removes the lease; a second revoke fails.
#[test]
fn revoke_deletes_attached_keys_at_one_revision() {
    let mut f = Fixture::new();
    f.write(grant(7, 10)).expect("grant");
    f.write(grant(8, 10)).expect("grant");
    for key in [&b"c"[..], b"a", b"b"] {
        f.write(put_lease(key, 7)).expect("put");
    }
    f.write(put_lease(b"z", 8)).expect("put");
    f.write(Payload::Put(put(b"free", b"v"))).expect("put");
    assert_eq!(f.rev(), 6);
    let applied = f.apply(revoke(7));
    assert_eq!(
        applied.result,
        Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse {
            revision: 7
        }))
    );
    let prev = |key: &[u8], rev: i64| KeyValue {
        lease: 7,
        ..kv(key, b"v", rev, rev, 1)
    };
    let deleted = |key: &[u8], at: i64| Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.to_vec(),
            mod_revision: 7,
            ..KeyValue::default()
        }),
        prev_kv: Some(prev(key, at)),
    };
    assert_eq!(
        applied.events,
        vec![deleted(b"a", 3), deleted(b"b", 4), deleted(b"c", 2)]
    );
    let log = revision_log(&f.engine, 7).expect("revision log");
    assert_eq!(
        log.iter()
            .map(|e| (e.rev, e.key.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Rev { main: 7, sub: 0 }, b"a".to_vec()),
            (Rev { main: 7, sub: 1 }, b"b".to_vec()),
            (Rev { main: 7, sub: 2 }, b"c".to_vec()),
        ]
    );
    assert_eq!(f.keys(), vec![b"free".to_vec(), b"z".to_vec()]);
    assert!(!f.store.lease_exists(7));
    assert_eq!(
        lease_keys(&f.engine, 7).expect("keys"),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(leases(&f.engine).expect("leases"), vec![info(8, 10, 0)]);
    assert_eq!(f.write(revoke(7)), Err(Error::LeaseNotFound));
    assert_eq!(f.write(put_lease(b"a", 7)), Err(Error::LeaseNotFound));
    assert_eq!(f.rev(), 7);
}

/// A lease without keys is revoked without a new revision or events.
#[test]
fn revoke_without_keys_takes_no_revision() {
    let mut f = Fixture::new();
    f.write(grant(7, 10)).expect("grant");
    let applied = f.apply(revoke(7));
    assert_eq!(
        applied.result,
        Ok(WriteResponse::LeaseRevoke(LeaseRevokeResponse {
            revision: 1
        }))
    );
    assert_eq!(applied.events, vec![]);
    assert_eq!(f.rev(), 1);
    assert_eq!(leases(&f.engine).expect("leases"), vec![]);
    assert_eq!(f.write(revoke(99)), Err(Error::LeaseNotFound));
}

/// Re-putting a key without its lease, or deleting it, detaches it: the
/// revoke no longer touches it.
#[test]
fn reput_and_delete_detach_keys() {
    let mut f = Fixture::new();
    f.write(grant(7, 10)).expect("grant");
    f.write(put_lease(b"a", 7)).expect("put");
    f.write(put_lease(b"b", 7)).expect("put");
    f.write(put_lease(b"c", 7)).expect("put");
    f.write(Payload::Put(put(b"a", b"plain"))).expect("re-put");
    f.write(Payload::DeleteRange(del(b"b", b"")))
        .expect("delete");
    // ignore_lease keeps the attachment.
    f.write(Payload::Put(PutRequest {
        ignore_lease: true,
        ..put(b"c", b"kept")
    }))
    .expect("put ignore_lease");
    assert_eq!(lease_keys(&f.engine, 7).expect("keys"), vec![b"c".to_vec()]);
    let applied = f.apply(revoke(7));
    assert_eq!(applied.events.len(), 1);
    assert_eq!(f.keys(), vec![b"a".to_vec()]);
}

/// A checkpoint records remaining TTLs of existing leases and skips
/// unknown ones; it takes no revision.
#[test]
fn checkpoint_records_remaining_ttls() {
    let mut f = Fixture::new();
    f.write(grant(7, 10)).expect("grant");
    f.write(grant(8, 60)).expect("grant");
    let cp = Payload::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![
            LeaseCheckpoint {
                id: 7,
                remaining_ttl: 4,
            },
            LeaseCheckpoint {
                id: 99,
                remaining_ttl: 1,
            },
        ],
    });
    assert_eq!(f.write(cp), Ok(WriteResponse::Internal { revision: 1 }));
    assert_eq!(
        leases(&f.engine).expect("leases"),
        vec![info(7, 10, 4), info(8, 60, 0)]
    );
    // A later grant of another lease does not disturb it; a reopen sees it.
    let g = f.reopen();
    assert!(g.store.lease_exists(7) && g.store.lease_exists(8) && !g.store.lease_exists(99));
}

/// The lease table survives a reopen: puts may still attach, revokes still
/// delete.
#[test]
fn lease_table_is_reloaded_at_open() {
    let mut f = Fixture::new();
    f.write(grant(7, 10)).expect("grant");
    f.write(put_lease(b"a", 7)).expect("put");
    let mut g = f.reopen();
    g.write(put_lease(b"b", 7)).expect("put after reopen");
    assert_eq!(g.apply(revoke(7)).events.len(), 2);
    assert_eq!(g.keys(), Vec::<Vec<u8>>::new());
}

/// Alarm entries answer as etcd: activate → the alarm (also when already
/// raised), NONE is ignored, deactivate → the removed pair if it existed.
#[test]
fn alarms_activate_and_deactivate() {
    use AlarmAction::{Activate, Deactivate, Get};
    use AlarmType::{Corrupt, None as NoAlarm, Nospace};
    let mut f = Fixture::new();
    let answer = |alarms: Vec<AlarmMember>| {
        Ok(WriteResponse::Alarm(AlarmResponse {
            revision: 1,
            alarms,
        }))
    };
    assert_eq!(
        f.write(alarm(Activate, 2, Nospace)),
        answer(vec![member(2, Nospace)])
    );
    assert_eq!(
        f.write(alarm(Activate, 2, Nospace)),
        answer(vec![member(2, Nospace)])
    );
    assert_eq!(
        f.write(alarm(Activate, 1, Corrupt)),
        answer(vec![member(1, Corrupt)])
    );
    assert_eq!(f.write(alarm(Activate, 3, NoAlarm)), answer(vec![]));
    assert_eq!(
        f.store.alarms(),
        &[member(1, Corrupt), member(2, Nospace)][..]
    );
    assert_eq!(
        f.write(alarm(Get, 0, Nospace)),
        answer(vec![member(2, Nospace)])
    );
    assert_eq!(
        f.write(alarm(Get, 0, NoAlarm)),
        answer(vec![member(1, Corrupt), member(2, Nospace)])
    );
    assert_eq!(f.write(alarm(Deactivate, 1, Nospace)), answer(vec![]));
    assert_eq!(
        f.write(alarm(Deactivate, 2, Nospace)),
        answer(vec![member(2, Nospace)])
    );
    assert_eq!(f.store.alarms(), &[member(1, Corrupt)][..]);
    assert_eq!(f.reopen().store.alarms(), &[member(1, Corrupt)][..]);
    assert_eq!(f.rev(), 1, "alarms take no revision");
}

/// While NOSPACE is raised, puts, txns with a put (in any branch) and
/// grants fail and change nothing; deletes, read-only txns, compactions,
/// revokes and checkpoints pass. The alarm survives a reopen.
#[test]
fn nospace_refuses_space_consuming_entries() {
    let mut f = Fixture::new();
    f.write(grant(7, 10)).expect("grant");
    f.write(put_lease(b"a", 7)).expect("put");
    f.write(Payload::Put(put(b"b", b"v"))).expect("put");
    f.write(alarm(AlarmAction::Activate, 1, AlarmType::Nospace))
        .expect("activate");
    let mut f = f.reopen();
    assert_eq!(f.write(Payload::Put(put(b"c", b"v"))), Err(Error::NoSpace));
    let put_in_failure = txn(vec![exists(b"b")], vec![], vec![op(put(b"c", b"v"))]);
    assert_eq!(f.write(Payload::Txn(put_in_failure)), Err(Error::NoSpace));
    let nested = txn(
        vec![],
        vec![op(txn(vec![], vec![op(put(b"c", b"v"))], vec![]))],
        vec![],
    );
    assert_eq!(f.write(Payload::Txn(nested)), Err(Error::NoSpace));
    assert_eq!(f.write(grant(8, 10)), Err(Error::NoSpace));
    assert_eq!(f.rev(), 3);
    let read_only = txn(
        vec![],
        vec![op(crate::testkit::req::range(b"a", b""))],
        vec![],
    );
    f.write(Payload::Txn(read_only)).expect("read-only txn");
    let delete_txn = txn(vec![], vec![op(del(b"b", b""))], vec![]);
    f.write(Payload::Txn(delete_txn))
        .expect("txn with a delete");
    f.write(revoke(7)).expect("revoke");
    f.write(Payload::from(compact(4))).expect("compact");
    assert_eq!(f.rev(), 5);
    assert_eq!(f.keys(), Vec::<Vec<u8>>::new());
    f.write(alarm(AlarmAction::Deactivate, 1, AlarmType::Nospace))
        .expect("deactivate");
    f.write(Payload::Put(put(b"c", b"v")))
        .expect("put after disarm");
}
