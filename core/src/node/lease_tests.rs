//! Leases and alarms through the node: exact action sequences for grants,
//! expiry, checkpoints and the quota, and driver-loop scenarios on fake time
//! (keepalive, restart, an expiry storm).

use std::collections::BTreeMap;

use super::*;
use crate::engine::MemEngine;
use crate::kv::{
    AlarmAction, AlarmMember, AlarmRequest, AlarmType, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpoint, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RequestOp, TxnRequest,
};
use crate::lease::{LeaseInfo, LEASE_TTL_MAX_SECS};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn at(secs: u64) -> Time {
    Time(secs * SEC)
}

fn config() -> NodeConfig {
    NodeConfig {
        lease: LeaseConfig {
            min_ttl_secs: 2,
            revoke_per_sec_max: 1000,
            checkpoint_interval_nanos: None,
        },
        seed: 42,
        ..NodeConfig::default()
    }
}

fn grant(id: i64, ttl: i64) -> ClientRequest {
    ClientRequest::Write(WriteRequest::LeaseGrant(LeaseGrantRequest { ttl, id }))
}

fn revoke(id: i64) -> ClientRequest {
    ClientRequest::Write(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id }))
}

fn put(key: &str, lease: i64) -> ClientRequest {
    ClientRequest::Write(WriteRequest::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        ..PutRequest::default()
    }))
}

fn delete(key: &str) -> ClientRequest {
    ClientRequest::Write(WriteRequest::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        ..DeleteRangeRequest::default()
    }))
}

fn alarm(action: AlarmAction, member_id: u64) -> ClientRequest {
    ClientRequest::Write(WriteRequest::Alarm(AlarmRequest {
        action: action as i32,
        member_id,
        alarm: AlarmType::Nospace as i32,
    }))
}

fn nospace(member_id: u64) -> AlarmMember {
    AlarmMember {
        member_id,
        alarm: AlarmType::Nospace as i32,
    }
}

fn entry(index: u64, payload: Payload) -> Entry {
    Entry {
        term: 1,
        index,
        payload: Some(payload),
    }
}

fn grant_ok(id: i64, ttl: i64, revision: i64) -> Result<Response, Error> {
    Ok(Response::Write(WriteResponse::LeaseGrant(
        LeaseGrantResponse { revision, id, ttl },
    )))
}

fn synced(io: u64, through: u64) -> IoDone {
    IoDone::WalSynced {
        io: IoId(io),
        term: Term(1),
        through: Index(through),
    }
}

/// Every key in the engine, ascending.
fn keys(engine: &MemEngine) -> Vec<Vec<u8>> {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    mvcc::range(engine, &all)
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

/// A driver on fake time: WAL syncs complete `sync_nanos` after they are
/// asked for, timers fire when due, replies are collected.
struct Sim {
    node: Node<MemEngine>,
    engine: MemEngine,
    now: Time,
    sync_nanos: u64,
    next_req: u64,
    /// Every entry appended, with the time it was appended.
    log: Vec<(Time, Entry)>,
    replies: BTreeMap<ReqId, Result<Response, Error>>,
    /// The sync in flight: when it completes, and its completion.
    sync: Option<(Time, IoDone)>,
}

impl Sim {
    fn new(config: NodeConfig) -> Sim {
        Sim::over(config, MemEngine::new(), Time(0))
    }

    /// A node (re)started over `engine` at `now`.
    fn over(config: NodeConfig, engine: MemEngine, now: Time) -> Sim {
        let mut node = Node::new(config, engine.clone()).expect("open");
        node.recover(now, Vec::new()).expect("recover");
        Sim {
            node,
            engine,
            now,
            sync_nanos: 0,
            next_req: 1,
            log: Vec::new(),
            replies: BTreeMap::new(),
            sync: None,
        }
    }

    /// A restart at `now` over the same engine (everything was applied).
    fn restart(&self, config: NodeConfig, now: Time) -> Sim {
        assert!(self.node.is_idle(), "restart only when idle");
        Sim::over(config, self.engine.clone(), now)
    }

    /// Executes actions (and sync completions due) until nothing is left.
    fn pump(&mut self) {
        loop {
            for action in self.node.take_actions() {
                match action {
                    Action::AppendWal { entries, .. } => {
                        self.log.extend(entries.into_iter().map(|e| (self.now, e)));
                    }
                    Action::SyncWal { io, term, through } => {
                        assert!(self.sync.is_none(), "one sync at a time");
                        let done = IoDone::WalSynced { io, term, through };
                        self.sync = Some((self.now.plus_nanos(self.sync_nanos), done));
                    }
                    Action::Reply { req, result } => {
                        assert!(
                            self.replies.insert(req, result).is_none(),
                            "one reply per request"
                        );
                    }
                    Action::TrimWal { io, .. } => {
                        self.node
                            .handle_io(self.now, IoDone::WalTrimmed { io, error: None });
                    }
                    Action::Watch(_) => {}
                    Action::Object { .. }
                    | Action::ResetWal { .. }
                    | Action::TakeCheckpoint { .. }
                    | Action::UploadCheckpointFile { .. }
                    | Action::DropCheckpoint { .. }
                    | Action::ReadWal { .. }
                    | Action::Send { .. }
                    | Action::TruncateWal { .. }
                    | Action::SaveHardState { .. }
                    | Action::StartOver { .. } => {
                        unreachable!("these tests run in local mode")
                    }
                }
            }
            match self.sync.take() {
                Some((due, done)) if due <= self.now => self.node.handle_io(self.now, done),
                other => {
                    self.sync = other;
                    return;
                }
            }
        }
    }

    /// Sends `request` now; returns its id.
    fn send(&mut self, request: ClientRequest) -> ReqId {
        let req = ReqId(self.next_req);
        self.next_req += 1;
        self.node.handle_client(self.now, req, request);
        self.pump();
        req
    }

    /// Sends `request` and runs until it is answered.
    fn call(&mut self, request: ClientRequest) -> Result<Response, Error> {
        let req = self.send(request);
        for _ in 0..1000 {
            if let Some(answer) = self.replies.remove(&req) {
                return answer;
            }
            let due = self
                .sync
                .as_ref()
                .map(|(t, _)| *t)
                .expect("a sync is pending");
            self.advance(due);
        }
        panic!("request {req:?} never answered");
    }

    /// Runs timers and syncs up to `to`, then sets the clock to `to`.
    fn advance(&mut self, to: Time) {
        for _ in 0..10_000_000 {
            let timer = self.node.poll_timeout();
            let sync = self.sync.as_ref().map(|(t, _)| *t);
            let Some(next) = [timer, sync].into_iter().flatten().min() else {
                break;
            };
            if next > to {
                break;
            }
            self.now = self.now.max(next);
            if timer.is_some_and(|t| t <= self.now) {
                self.node.handle_timeout(self.now);
            }
            self.pump();
        }
        self.now = self.now.max(to);
        self.pump();
    }

    fn grant(&mut self, id: i64, ttl: i64) -> i64 {
        match self.call(grant(id, ttl)) {
            Ok(Response::Write(WriteResponse::LeaseGrant(g))) => g.id,
            other => panic!("grant failed: {other:?}"),
        }
    }

    fn keep_alive(&mut self, id: i64) -> i64 {
        match self.call(ClientRequest::LeaseKeepAlive { id }) {
            Ok(Response::LeaseKeepAlive(r)) => r.ttl,
            other => panic!("keepalive: {other:?}"),
        }
    }

    fn ttl(&mut self, id: i64, with_keys: bool) -> LeaseTimeToLiveResponse {
        match self.call(ClientRequest::LeaseTimeToLive {
            id,
            keys: with_keys,
        }) {
            Ok(Response::LeaseTimeToLive(r)) => r,
            other => panic!("time to live: {other:?}"),
        }
    }

    /// The payloads appended so far, in log order.
    fn payloads(&self) -> Vec<Payload> {
        self.log
            .iter()
            .map(|(_, e)| e.payload.clone().expect("payload"))
            .collect()
    }
}

/// A grant is raised to the minimum TTL before it is logged; the reply
/// carries the logged TTL and takes no revision.
#[test]
fn grant_with_id_is_logged_with_the_minimum_ttl() {
    let mut n = Node::new(config(), MemEngine::new()).expect("open");
    n.handle_client(Time(0), ReqId(1), grant(7, 1));
    let logged = Payload::LeaseGrant(LeaseGrantRequest { ttl: 2, id: 7 });
    assert_eq!(
        n.take_actions(),
        vec![
            Action::AppendWal {
                io: IoId(1),
                term: Term(1),
                entries: vec![entry(1, logged)]
            },
            Action::SyncWal {
                io: IoId(2),
                term: Term(1),
                through: Index(1)
            },
        ]
    );
    n.handle_io(Time(0), synced(2, 1));
    assert_eq!(
        n.take_actions(),
        vec![Action::Reply {
            req: ReqId(1),
            result: grant_ok(7, 2, 1)
        }]
    );
    assert_eq!(n.meta().current_revision, 1);
    // A TTL of 0 is raised too, and a larger one is kept.
    n.handle_client(Time(0), ReqId(2), grant(8, 0));
    n.handle_client(Time(0), ReqId(3), grant(9, 30));
    n.handle_io(Time(0), synced(4, 2));
    n.handle_io(Time(0), synced(6, 3));
    let replies: Vec<_> = n
        .take_actions()
        .into_iter()
        .filter(|a| matches!(a, Action::Reply { .. }))
        .collect();
    assert_eq!(
        replies,
        vec![
            Action::Reply {
                req: ReqId(2),
                result: grant_ok(8, 2, 1)
            },
            Action::Reply {
                req: ReqId(3),
                result: grant_ok(9, 30, 1)
            },
        ]
    );
}

/// Generated ids are positive, distinct, and a function of the seed and
/// the log position only.
#[test]
fn generated_lease_ids_are_deterministic() {
    let ids = |seed: u64| {
        let mut sim = Sim::new(NodeConfig { seed, ..config() });
        // Two grants in one batch, one after it.
        sim.sync_nanos = MS;
        let a = sim.send(grant(0, 10));
        let b = sim.send(grant(0, 10));
        let c = sim.send(grant(0, 10));
        sim.advance(Time(10 * MS));
        [a, b, c].map(|r| match sim.replies.remove(&r) {
            Some(Ok(Response::Write(WriteResponse::LeaseGrant(g)))) => g.id,
            other => panic!("grant: {other:?}"),
        })
    };
    let first = ids(42);
    assert_eq!(first, ids(42), "same seed, same ids");
    assert!(first.iter().all(|&id| id > 0));
    assert!(first[0] != first[1] && first[1] != first[2] && first[0] != first[2]);
    assert_ne!(first, ids(43));
}

/// Bad grants are refused at once and never logged; a grant of an existing
/// id is refused at once with LeaseExists.
#[test]
fn bad_grants_are_refused_before_the_log() {
    let mut sim = Sim::new(config());
    sim.grant(7, 10);
    let logged = sim.log.len();
    assert_eq!(
        sim.call(grant(8, LEASE_TTL_MAX_SECS + 1)),
        Err(Error::InvalidArgument(Invalid::LeaseTtlTooLarge))
    );
    assert_eq!(
        sim.call(grant(8, -1)),
        Err(Error::InvalidArgument(Invalid::NegativeLeaseTtl))
    );
    assert_eq!(
        sim.call(grant(-8, 10)),
        Err(Error::InvalidArgument(Invalid::NegativeLeaseId))
    );
    assert_eq!(sim.call(grant(7, 10)), Err(Error::LeaseExists));
    assert_eq!(sim.log.len(), logged, "nothing more was logged");
}

/// A put attaches its key to a granted lease; time-to-live lists the keys;
/// a put or txn naming an unknown lease fails and changes nothing.
#[test]
fn puts_attach_and_unknown_leases_fail() {
    let mut sim = Sim::new(config());
    sim.grant(7, 10);
    sim.call(put("b", 7)).expect("put b");
    sim.call(put("a", 7)).expect("put a");
    let ttl = sim.ttl(7, true);
    assert_eq!(
        ttl,
        LeaseTimeToLiveResponse {
            revision: 3,
            id: 7,
            ttl: 10,
            granted_ttl: 10,
            keys: vec![b"a".to_vec(), b"b".to_vec()],
        }
    );
    assert_eq!(sim.ttl(7, false).keys, Vec::<Vec<u8>>::new());
    assert_eq!(sim.call(put("c", 8)), Err(Error::LeaseNotFound));
    let txn = TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            op: Some(crate::kv::Op::Put(PutRequest {
                key: b"c".to_vec(),
                lease: 8,
                ..PutRequest::default()
            })),
        }],
        failure: vec![],
    };
    assert_eq!(
        sim.call(ClientRequest::Write(WriteRequest::Txn(txn))),
        Err(Error::LeaseNotFound)
    );
    assert_eq!(sim.node.meta().current_revision, 3);
    assert_eq!(keys(&sim.engine), vec![b"a".to_vec(), b"b".to_vec()]);
}

/// Keepalive renews to now + TTL; an unknown lease answers TTL 0;
/// time-to-live of an unknown lease answers -1; the list shows every lease.
#[test]
fn keepalive_time_to_live_and_list() {
    let mut sim = Sim::new(config());
    sim.grant(7, 10);
    sim.grant(3, 20);
    sim.advance(at(8));
    assert_eq!(sim.ttl(7, false).ttl, 2);
    assert_eq!(sim.keep_alive(7), 10);
    assert_eq!(sim.ttl(7, false).ttl, 10);
    assert_eq!(
        sim.call(ClientRequest::LeaseKeepAlive { id: 99 }),
        Ok(Response::LeaseKeepAlive(LeaseKeepAliveResponse {
            revision: 1,
            id: 99,
            ttl: 0
        }))
    );
    assert_eq!(
        sim.ttl(99, true),
        LeaseTimeToLiveResponse {
            revision: 1,
            id: 99,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        }
    );
    assert_eq!(
        sim.call(ClientRequest::LeaseLeases),
        Ok(Response::LeaseLeases(LeaseLeasesResponse {
            revision: 1,
            ids: vec![3, 7]
        }))
    );
    // 7 was renewed at 8 s, so it expires at 18 s; 3 lives until 20 s.
    sim.advance(at(18).plus_nanos(1));
    assert_eq!(sim.ttl(7, false).ttl, -1);
    assert_eq!(sim.keep_alive(7), 0, "expired");
    assert_eq!(sim.ttl(3, false).ttl, 1);
}

/// Expiry: at the lease's deadline the node logs a revoke entry, which
/// deletes every attached key at one revision and answers nobody.
#[test]
fn expiry_logs_a_revoke_that_deletes_the_keys() {
    let mut n = Node::new(config(), MemEngine::new()).expect("open");
    n.handle_client(Time(0), ReqId(1), grant(7, 5));
    n.handle_io(Time(0), synced(2, 1));
    n.handle_client(Time(0), ReqId(2), put("b", 7));
    n.handle_io(Time(0), synced(4, 2));
    n.handle_client(Time(0), ReqId(3), put("a", 7));
    n.handle_io(Time(0), synced(6, 3));
    n.take_actions();
    assert_eq!(n.poll_timeout(), Some(at(5)));
    n.handle_timeout(Time(5 * SEC - 1));
    assert_eq!(n.take_actions(), vec![], "not yet");
    n.handle_timeout(at(5));
    assert_eq!(
        n.take_actions(),
        vec![
            Action::AppendWal {
                io: IoId(7),
                term: Term(1),
                entries: vec![entry(4, Payload::LeaseRevoke(LeaseRevokeRequest { id: 7 }))]
            },
            Action::SyncWal {
                io: IoId(8),
                term: Term(1),
                through: Index(4)
            },
        ]
    );
    assert_eq!(n.poll_timeout(), None, "handed out once");
    n.handle_io(at(5), synced(8, 4));
    assert_eq!(n.take_actions(), vec![], "an internal entry has no reply");
    assert_eq!(n.meta().current_revision, 4, "both keys at one revision");
    assert_eq!(keys(n.engine()), Vec::<Vec<u8>>::new());
    assert_eq!(mvcc::leases(n.engine()).expect("leases"), vec![]);
    n.handle_client(at(5), ReqId(4), ClientRequest::LeaseLeases);
    assert_eq!(
        n.take_actions(),
        vec![Action::Reply {
            req: ReqId(4),
            result: Ok(Response::LeaseLeases(LeaseLeasesResponse {
                revision: 4,
                ids: vec![]
            }))
        }]
    );
}

/// A client revoke deletes the keys, answers with the new revision and
/// stops the lease's clock; revoking again fails.
#[test]
fn client_revoke_deletes_keys_and_forgets_the_lease() {
    let mut sim = Sim::new(config());
    sim.grant(7, 10);
    sim.call(put("a", 7)).expect("put");
    sim.call(put("a", 0))
        .expect("re-put without the lease detaches");
    sim.call(put("b", 7)).expect("put");
    assert_eq!(
        sim.call(revoke(7)),
        Ok(Response::Write(WriteResponse::LeaseRevoke(
            LeaseRevokeResponse { revision: 5 }
        )))
    );
    assert_eq!(keys(&sim.engine), vec![b"a".to_vec()]);
    assert_eq!(sim.keep_alive(7), 0);
    assert_eq!(sim.call(revoke(7)), Err(Error::LeaseNotFound));
    // grant, put, put, put, revoke, revoke (failed at apply); nothing on expiry.
    assert_eq!(sim.log.len(), 6);
    sim.advance(at(20));
    assert_eq!(sim.log.len(), 6, "the revoked lease never expires");
}

/// Checkpoints: every interval one entry with the remaining TTLs of the
/// leases whose remaining TTL dropped below their TTL.
#[test]
fn checkpoint_entries_appear_on_schedule() {
    let cfg = NodeConfig {
        lease: LeaseConfig {
            checkpoint_interval_nanos: Some(3 * SEC),
            ..config().lease
        },
        ..config()
    };
    let mut sim = Sim::new(cfg);
    sim.grant(7, 10);
    sim.advance(Time(2900 * MS));
    sim.grant(8, 60);
    assert_eq!(sim.node.poll_timeout(), Some(at(3)));
    sim.advance(at(3));
    let checkpoints = |sim: &Sim| -> Vec<(Time, Vec<LeaseCheckpoint>)> {
        sim.log
            .iter()
            .filter_map(|(t, e)| match &e.payload {
                Some(Payload::LeaseCheckpoint(c)) => Some((*t, c.checkpoints.clone())),
                _ => None,
            })
            .collect()
    };
    let cp = |id, remaining_ttl| LeaseCheckpoint { id, remaining_ttl };
    assert_eq!(checkpoints(&sim), vec![(at(3), vec![cp(7, 7)])]);
    sim.advance(at(7));
    assert_eq!(
        checkpoints(&sim),
        vec![(at(3), vec![cp(7, 7)]), (at(6), vec![cp(7, 4), cp(8, 57)])]
    );
    assert_eq!(
        mvcc::leases(&sim.engine).expect("leases"),
        vec![
            LeaseInfo {
                id: 7,
                ttl_secs: 10,
                remaining_ttl_secs: 4
            },
            LeaseInfo {
                id: 8,
                ttl_secs: 60,
                remaining_ttl_secs: 57
            },
        ]
    );
    // A renewal resets the checkpoint on record at once (at the wakeup the
    // keepalive asked for).
    assert_eq!(sim.keep_alive(7), 10);
    assert_eq!(sim.node.poll_timeout(), Some(at(7)));
    sim.advance(at(7));
    assert_eq!(checkpoints(&sim).last(), Some(&(at(7), vec![cp(7, 0)])));
    assert_eq!(
        mvcc::leases(&sim.engine).expect("leases")[0].remaining_ttl_secs,
        0
    );
}

/// A node re-created over the same engine restores the leases: TTLs restart
/// from the checkpointed remaining TTL, or in full; expiry still revokes.
#[test]
fn restart_restores_leases_from_checkpoints() {
    let cfg = NodeConfig {
        lease: LeaseConfig {
            checkpoint_interval_nanos: Some(3 * SEC),
            ..config().lease
        },
        ..config()
    };
    let mut sim = Sim::new(cfg.clone());
    sim.grant(7, 10);
    sim.call(put("a", 7)).expect("put");
    sim.advance(Time(2900 * MS));
    sim.grant(8, 60);
    sim.call(put("b", 8)).expect("put");
    sim.advance(at(4));
    assert_eq!(
        mvcc::leases(&sim.engine).expect("leases"),
        vec![
            LeaseInfo {
                id: 7,
                ttl_secs: 10,
                remaining_ttl_secs: 7
            },
            LeaseInfo {
                id: 8,
                ttl_secs: 60,
                remaining_ttl_secs: 0
            },
        ]
    );
    // The driver's clock has another origin after the restart.
    let mut sim = sim.restart(cfg, at(100));
    assert_eq!(sim.ttl(7, true).ttl, 7);
    assert_eq!(sim.ttl(8, false).ttl, 60, "no checkpoint: full TTL");
    assert_eq!(
        sim.call(ClientRequest::LeaseLeases),
        Ok(Response::LeaseLeases(LeaseLeasesResponse {
            revision: 3,
            ids: vec![7, 8]
        }))
    );
    sim.advance(at(107));
    assert_eq!(
        sim.payloads().last(),
        Some(&Payload::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
    );
    assert_eq!(keys(&sim.engine), vec![b"b".to_vec()]);
    assert_eq!(sim.keep_alive(8), 60);
}

/// The quota: the first write past it raises NOSPACE (an alarm entry in the
/// log) and fails; later space-consuming writes fail at once; deletes and
/// alarm queries work.
#[test]
fn quota_raises_nospace() {
    let cfg = NodeConfig {
        quota_bytes: 1000,
        ..config()
    };
    let mut sim = Sim::new(cfg);
    let mut accepted = 0;
    let value = "x".repeat(100);
    let big_put = |key: String| {
        ClientRequest::Write(WriteRequest::Put(PutRequest {
            key: key.into_bytes(),
            value: value.clone().into_bytes(),
            ..PutRequest::default()
        }))
    };
    while sim.call(big_put(format!("k{accepted}"))).is_ok() {
        accepted += 1;
        assert!(accepted < 100, "the quota never triggered");
    }
    assert!(accepted >= 1, "puts below the quota pass");
    let raise = Payload::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: 1,
        alarm: AlarmType::Nospace as i32,
    });
    let payloads = sim.payloads();
    assert_eq!(
        payloads[payloads.len() - 2],
        raise,
        "the alarm is logged right before the put that crossed the quota"
    );
    assert!(matches!(payloads.last(), Some(Payload::Put(_))));
    assert_eq!(sim.node.store.alarms(), &[nospace(1)][..]);
    let logged = sim.log.len();
    // Refused at once, nothing logged.
    let req = ReqId(sim.next_req);
    sim.node.handle_client(sim.now, req, put("small", 0));
    assert_eq!(
        sim.node.take_actions(),
        vec![Action::Reply {
            req,
            result: Err(Error::NoSpace)
        }]
    );
    assert_eq!(sim.call(grant(0, 10)), Err(Error::NoSpace));
    assert_eq!(sim.log.len(), logged);
    assert_eq!(
        sim.call(delete("k0")),
        Ok(Response::Write(WriteResponse::DeleteRange(
            DeleteRangeResponse {
                revision: i64::from(accepted) + 2,
                deleted: 1,
                prev_kvs: vec![],
            }
        )))
    );
    let list = Ok(Response::Alarm(AlarmResponse {
        revision: i64::from(accepted) + 2,
        alarms: vec![nospace(1)],
    }));
    assert_eq!(sim.call(ClientRequest::AlarmList), list);
    assert_eq!(
        sim.call(alarm(AlarmAction::Get, 0)),
        list,
        "a Get is not logged"
    );
    assert_eq!(sim.log.len(), logged + 1, "only the delete was logged");
}

/// The alarm entry is queued once while writes keep failing before it
/// applies: exact actions with the sync in flight.
#[test]
fn nospace_alarm_is_queued_once() {
    let cfg = NodeConfig {
        quota_bytes: 0,
        ..config()
    };
    let mut n = Node::new(cfg, MemEngine::new()).expect("open");
    n.handle_client(Time(0), ReqId(1), put("a", 0));
    let raise = Payload::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: 1,
        alarm: AlarmType::Nospace as i32,
    });
    let ClientRequest::Write(put_a) = put("a", 0) else {
        unreachable!("put() builds a write")
    };
    assert_eq!(
        n.take_actions(),
        vec![
            Action::AppendWal {
                io: IoId(1),
                term: Term(1),
                entries: vec![entry(1, raise), entry(2, Payload::from(put_a))]
            },
            Action::SyncWal {
                io: IoId(2),
                term: Term(1),
                through: Index(2)
            },
        ],
        "the alarm is logged first, then the put that crossed the quota"
    );
    n.handle_client(Time(0), ReqId(2), put("b", 0));
    n.handle_client(Time(0), ReqId(3), delete("a"));
    assert_eq!(
        n.take_actions(),
        vec![],
        "no second alarm entry; b and the delete wait for the sync"
    );
    n.handle_io(Time(0), synced(2, 2));
    assert_eq!(n.store.alarms(), &[nospace(1)][..]);
    let actions = n.take_actions();
    assert_eq!(
        actions[0],
        Action::Reply {
            req: ReqId(1),
            result: Err(Error::NoSpace)
        },
        "the put fails when it applies, after the alarm is raised"
    );
    assert!(matches!(&actions[1], Action::AppendWal { entries, .. }
        if entries.len() == 2 && matches!(entries[1].payload, Some(Payload::DeleteRange(_)))));
}

/// The alarm survives a restart; disarming it (with room under a larger
/// quota) lets puts through again.
#[test]
fn nospace_persists_until_disarmed() {
    let tiny = NodeConfig {
        quota_bytes: 0,
        ..config()
    };
    let mut sim = Sim::new(tiny);
    assert_eq!(sim.call(put("a", 0)), Err(Error::NoSpace));
    let roomy = config();
    let mut sim = sim.restart(roomy, at(1));
    assert_eq!(
        sim.call(put("a", 0)),
        Err(Error::NoSpace),
        "the alarm persisted"
    );
    assert_eq!(
        sim.call(alarm(AlarmAction::Deactivate, 1)),
        Ok(Response::Write(WriteResponse::Alarm(AlarmResponse {
            revision: 1,
            alarms: vec![nospace(1)]
        })))
    );
    assert_eq!(
        sim.call(put("a", 0)),
        Ok(Response::Write(WriteResponse::Put(PutResponse {
            revision: 2,
            prev_kv: None
        })))
    );
    assert_eq!(
        sim.call(ClientRequest::AlarmList),
        Ok(Response::Alarm(AlarmResponse {
            revision: 2,
            alarms: vec![]
        }))
    );
}

/// An expiry storm: 5,000 leases (one key each) expire at the same instant.
/// Revokes are handed out at no more than `revoke_per_sec_max` per second,
/// and client writes issued throughout the storm keep completing promptly.
#[test]
fn expiry_storm_is_rate_limited_and_writes_get_through() {
    const LEASES: i64 = 5000;
    const RATE: u32 = 1000;
    // Build the state directly in the engine: granting through the node
    // would only make the test slower.
    let engine = MemEngine::new();
    let mut store = Store::open(&engine).expect("open");
    let mut index = 0;
    let mut apply = |payload: Payload| {
        index += 1;
        let applied = store.apply(&engine, &entry(index, payload)).expect("apply");
        assert!(applied.result.is_ok(), "{:?}", applied.result);
    };
    for id in 1..=LEASES {
        apply(Payload::LeaseGrant(LeaseGrantRequest { ttl: 10, id }));
        apply(Payload::Put(PutRequest {
            key: format!("lease/{id:05}").into_bytes(),
            value: b"v".to_vec(),
            lease: id,
            ..PutRequest::default()
        }));
    }
    let cfg = NodeConfig {
        lease: LeaseConfig {
            revoke_per_sec_max: RATE,
            ..config().lease
        },
        ..config()
    };
    // Restarted at 0: every lease expires at 10 s.
    let mut sim = Sim::over(cfg, engine, Time(0));
    sim.sync_nanos = MS;
    sim.advance(Time(9990 * MS));
    assert!(sim.log.is_empty());
    // A client writes every 2 ms from 9.99 s on.
    let mut sent: Vec<(Time, ReqId)> = Vec::new();
    let mut done: Vec<(Time, Time)> = Vec::new();
    let mut t = sim.now;
    let end = Time(16 * SEC);
    let mut i = 0;
    let collect = |sim: &mut Sim, sent: &mut Vec<(Time, ReqId)>, done: &mut Vec<(Time, Time)>| {
        sent.retain(|&(at, req)| match sim.replies.remove(&req) {
            Some(result) => {
                assert!(result.is_ok(), "client write failed: {result:?}");
                done.push((at, sim.now));
                false
            }
            None => true,
        });
    };
    while t < end {
        // Answers released on the way to `t` are timed at the sync that
        // released them, at most 1 ms late: close enough at 2 ms steps.
        sim.advance(t);
        collect(&mut sim, &mut sent, &mut done);
        sent.push((t, sim.send(put(&format!("client/{i:05}"), 0))));
        i += 1;
        t = t.plus_nanos(MS);
        sim.advance(t);
        collect(&mut sim, &mut sent, &mut done);
        t = t.plus_nanos(MS);
    }
    sim.advance(end.plus_nanos(SEC));
    collect(&mut sim, &mut sent, &mut done);
    // Revokes per aligned second, by the time they were appended.
    let mut per_sec: BTreeMap<u64, u32> = BTreeMap::new();
    let mut storm_end = Time(0);
    for (t, e) in &sim.log {
        if matches!(e.payload, Some(Payload::LeaseRevoke(_))) {
            *per_sec.entry(t.0 / SEC).or_default() += 1;
            storm_end = storm_end.max(*t);
        }
    }
    assert_eq!(
        per_sec.values().sum::<u32>(),
        5000,
        "every lease revoked once"
    );
    assert!(
        per_sec.values().all(|&n| n <= RATE),
        "rate exceeded: {per_sec:?}"
    );
    assert_eq!(
        per_sec.keys().copied().collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(
        keys(&sim.engine)
            .iter()
            .filter(|k| k.starts_with(b"lease/"))
            .count(),
        0
    );
    let during: Vec<u64> = done
        .iter()
        .filter(|(sent_at, _)| *sent_at >= at(10) && *sent_at <= storm_end)
        .map(|(sent_at, answered)| answered.0 - sent_at.0)
        .collect();
    let latency_max = during
        .iter()
        .copied()
        .max()
        .expect("writes during the storm");
    println!(
        "expiry storm: {} revokes over {:?} s; {} client writes completed during the storm \
         ({:.1} s), max latency {} µs",
        LEASES,
        per_sec,
        during.len(),
        (storm_end.0 - 10 * SEC) as f64 / SEC as f64,
        latency_max / 1000
    );
    assert!(sent.is_empty(), "every client write was answered");
    assert!(during.len() >= 2000, "writes got through: {}", during.len());
    assert!(latency_max <= 3 * MS, "a write waited {latency_max} ns");
}
