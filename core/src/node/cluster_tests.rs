//! Cluster mode, whole clusters inside one test: several [`Node`]s over
//! `MemEngine`s, an in-memory lock bucket, a WAL per node that loses its
//! unsynced tail on a crash, and a network whose links can be cut. Time is
//! simulated: the rig runs events (message deliveries, I/O completions,
//! timers) in time order. The seeded chaos runs live in sim-tests; these
//! are the protocol's exact scenarios.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::bucket::lock::{LeaderLock, Member};
use crate::bucket::recovery::BucketReplay;
use crate::bucket::{layout, wal_object};
use crate::cluster::{ClusterConfig, ClusterMutants, HardState, PeerMsg};
use crate::engine::MemEngine;
use crate::kv::{PutRequest, RangeRequest};
use crate::object::{MemBucket, ObjectOp, ObjectReply, PutCondition};
use bytes::Bytes;

const MS: u64 = 1_000_000;
const NET_NS: u64 = MS;
const FSYNC_NS: u64 = MS / 2;
const OBJECT_NS: u64 = 4 * MS;

fn member(id: &str) -> Member {
    Member {
        id: id.into(),
        peer_addr: format!("{id}:3380"),
    }
}

/// One node's machine: its durable state survives a crash.
struct Machine {
    member: Member,
    node: Option<Node<MemEngine>>,
    /// The WAL: entries, of which the first `durable` survive a crash.
    wal: Vec<Entry>,
    durable: usize,
    hard: HardState,
    /// Paused: no input reaches it (its timers and messages wait).
    paused: bool,
}

enum Event {
    Deliver {
        from: Member,
        to: String,
        msg: PeerMsg,
    },
    Io {
        node: String,
        incarnation: u64,
        done: IoDone,
    },
    Synced {
        node: String,
        incarnation: u64,
        io: IoId,
        term: Term,
        through: Index,
    },
    Saved {
        node: String,
        incarnation: u64,
        io: IoId,
        state: HardState,
    },
    Object {
        node: String,
        incarnation: u64,
        io: IoId,
        term: Term,
        op: ObjectOp,
    },
}

struct Rig {
    now: Time,
    bucket: MemBucket,
    machines: BTreeMap<String, Machine>,
    incarnations: BTreeMap<String, u64>,
    events: BTreeMap<(Time, u64), Event>,
    seq: u64,
    /// Cut links (from, to): messages are dropped.
    cut: BTreeSet<(String, String)>,
    /// Nodes cut from the bucket: their object operations fail.
    no_bucket: BTreeSet<String>,
    /// `StartOver` actions: (node, why). The rig does not act on them.
    start_overs: Vec<(String, String)>,
    replies: BTreeMap<ReqId, Result<Response, Error>>,
    next_req: u64,
    /// Timers that fired without moving (a bug if it keeps happening).
    spins: u64,
    /// Random message loss and delay (the chaos test).
    chaos: Option<Chaos>,
    /// What every node applied: index → (term, payload), the first time
    /// any node applied it.
    applied: BTreeMap<u64, Entry>,
    /// Per node: the applied index already checked.
    checked: BTreeMap<String, u64>,
    /// Term → the node that led it.
    leaders: BTreeMap<Term, String>,
    /// Safety violations seen.
    violations: Vec<String>,
    /// When each reply was released.
    reply_times: BTreeMap<ReqId, Time>,
    /// Deliberate bugs every node started from now on runs with.
    mutants: ClusterMutants,
    /// Per node: how far its monotonic clock is ahead of the rig's.
    clock_offsets: BTreeMap<String, u64>,
    /// Chaos: fsyncs take up to this long.
    fsync_max_ns: u64,
    /// Nodes whose fsyncs take `slow_fsync_ns` (10 s unless a test says).
    slow_fsync: BTreeSet<String>,
    slow_fsync_ns: u64,
    /// A driver bug: every start of a node gets the same seed.
    same_seed: bool,
    /// `ClusterConfig::request_timeout_ns` of nodes started from now on.
    request_timeout_ns: u64,
    /// `ClusterConfig::peer_buffer_entries` of nodes started from now on.
    peer_buffer_entries: usize,
    /// `ClusterConfig::bucket` of nodes started from now on.
    tier: Option<BucketConfig>,
}

/// A tiny deterministic generator (xorshift*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Chaos {
    rng: Rng,
    drop_percent: u64,
    delay_max_ns: u64,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            now: Time(1_000 * MS),
            bucket: MemBucket::new(),
            machines: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            events: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            no_bucket: BTreeSet::new(),
            start_overs: Vec::new(),
            replies: BTreeMap::new(),
            next_req: 0,
            spins: 0,
            chaos: None,
            applied: BTreeMap::new(),
            checked: BTreeMap::new(),
            leaders: BTreeMap::new(),
            violations: Vec::new(),
            reply_times: BTreeMap::new(),
            mutants: ClusterMutants::default(),
            clock_offsets: BTreeMap::new(),
            fsync_max_ns: FSYNC_NS,
            slow_fsync: BTreeSet::new(),
            slow_fsync_ns: 10_000 * MS,
            same_seed: false,
            request_timeout_ns: ClusterConfig::new(member("n1")).request_timeout_ns,
            peer_buffer_entries: ClusterConfig::new(member("n1")).peer_buffer_entries,
            tier: None,
        }
    }

    /// A rig whose nodes use the bucket tier (segments sealed after 200 ms,
    /// no checkpoints) and keep `buffer` applied entries in memory.
    fn with_tier(buffer: usize) -> Rig {
        Rig {
            peer_buffer_entries: buffer,
            tier: Some(BucketConfig {
                segment_max_age_ns: 200 * MS,
                checkpoint_interval_ns: 0,
                checkpoint_every_entries: 0,
                gc_keep: 0,
                ..BucketConfig::default()
            }),
            ..Rig::new()
        }
    }

    /// A cluster whose nodes started one after the other and all joined.
    fn cluster(n: usize) -> Rig {
        Rig::new().formed(n)
    }

    /// Starts `n` nodes one after the other; each joins.
    fn formed(mut self, n: usize) -> Rig {
        let rig = &mut self;
        for i in 1..=n {
            let id = format!("n{i}");
            rig.start(&id);
            // The leader, too, knows its lock write landed.
            let joined = rig.run_until(20_000, |r| {
                r.try_lock().is_some_and(|l| l.members.len() == i)
                    && r.all_caught_up()
                    && r.node(&r.serving_leaders()[0]).members().len() == i
            });
            assert!(joined, "{id} joins");
        }
        self
    }

    /// Three nodes restarted with `mutants` (the cluster formed without
    /// them), once one leads and all agree; and the leader.
    fn settled_with(mutants: ClusterMutants) -> (Rig, String) {
        let mut rig = Rig::cluster(3);
        rig.mutants = mutants;
        for id in ["n1", "n2", "n3"] {
            rig.crash(id);
            rig.start(id);
        }
        assert!(rig.run_until(30_000, |r| r.serving_leaders().len() == 1 && r.converged()));
        let leader = rig.serving_leaders()[0].clone();
        (rig, leader)
    }

    fn config(&self, id: &str) -> NodeConfig {
        NodeConfig {
            cluster: Some(ClusterConfig {
                mutants: self.mutants,
                request_timeout_ns: self.request_timeout_ns,
                peer_buffer_entries: self.peer_buffer_entries,
                bucket: self.tier.clone(),
                ..ClusterConfig::new(member(id))
            }),
            ..NodeConfig::default()
        }
    }

    fn start(&mut self, id: &str) {
        let mut config = self.config(id);
        // Drivers draw a seed per process start.
        config.seed = if self.same_seed {
            7
        } else {
            self.seq ^ (self.now.0 << 8) ^ (self.incarnations.get(id).copied().unwrap_or(0) << 56)
        };
        let m = self.machines.entry(id.to_owned()).or_insert(Machine {
            member: member(id),
            node: None,
            wal: Vec::new(),
            durable: 0,
            hard: HardState::default(),
            paused: false,
        });
        let mut node = Node::new(config, MemEngine::new()).expect("open");
        let now = self
            .now
            .plus_nanos(self.clock_offsets.get(id).copied().unwrap_or(0));
        node.recover(now, m.wal.clone()).expect("recover");
        node.start_cluster(now, m.hard);
        m.node = Some(node);
        *self.incarnations.entry(id.to_owned()).or_default() += 1;
        self.pump(id);
    }

    fn crash(&mut self, id: &str) {
        // The next incarnation starts from an empty engine and applies again.
        self.checked.remove(id);
        let m = self.machines.get_mut(id).expect("machine");
        m.node = None;
        m.paused = false;
        m.wal.truncate(m.durable);
        *self.incarnations.get_mut(id).expect("started") += 1;
    }

    /// `id` crashes and loses its disk: WAL, engine and hard state.
    fn wipe(&mut self, id: &str) {
        self.crash(id);
        let m = self.machines.get_mut(id).expect("machine");
        m.wal.clear();
        m.durable = 0;
        m.hard = HardState::default();
    }

    fn lock(&self) -> LeaderLock {
        self.try_lock().expect("a lock")
    }

    fn try_lock(&self) -> Option<LeaderLock> {
        let body = self
            .bucket
            .iter()
            .find(|(k, _)| *k == crate::bucket::layout::LEADER_LOCK)
            .map(|(_, b)| b.clone())?;
        Some(LeaderLock::decode(&body).expect("lock"))
    }

    fn node(&self, id: &str) -> &Node<MemEngine> {
        self.machines[id].node.as_ref().expect("running")
    }

    fn running(&self) -> impl Iterator<Item = (&String, &Node<MemEngine>)> {
        self.machines
            .iter()
            .filter_map(|(id, m)| m.node.as_ref().map(|n| (id, n)))
    }

    fn serving_leaders(&self) -> Vec<String> {
        self.running()
            .filter(|(_, n)| n.cluster_role() == Some(ClusterRole::Leader { serving: true }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn all_caught_up(&self) -> bool {
        let applied: BTreeSet<u64> = self
            .running()
            .map(|(_, n)| n.meta().applied_index)
            .collect();
        applied.len() == 1 && self.serving_leaders().len() == 1
    }

    fn push(&mut self, at: Time, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn incarnation(&self, id: &str) -> u64 {
        self.incarnations[id]
    }

    /// Checks what `id` applied and whether it leads.
    fn observe(&mut self, id: &str) {
        let m = &self.machines[id];
        let Some(node) = m.node.as_ref() else { return };
        let applied = node.meta().applied_index;
        let from = self.checked.get(id).copied().unwrap_or(0);
        for index in (from + 1)..=applied {
            let Some(entry) = m.wal.get(usize::try_from(index - 1).expect("fits")) else {
                self.violations
                    .push(format!("{id} applied {index}, which is not in its WAL"));
                continue;
            };
            match self.applied.get(&index) {
                Some(seen) if seen != entry => self.violations.push(format!(
                    "{id} applied {entry:?} at {index}, another node applied {seen:?}"
                )),
                Some(_) => {}
                None => {
                    self.applied.insert(index, entry.clone());
                }
            }
        }
        self.checked.insert(id.to_owned(), applied);
        if let Some(ClusterRole::Leader { .. }) = node.cluster_role() {
            let term = node.term();
            match self.leaders.get(&term) {
                Some(other) if other != id => self
                    .violations
                    .push(format!("two leaders in term {term}: {other} and {id}")),
                _ => {
                    self.leaders.insert(term, id.to_owned());
                }
            }
        }
    }

    /// Executes every action `id` emitted.
    fn pump(&mut self, id: &str) {
        let inc = self.incarnation(id);
        loop {
            let m = self.machines.get_mut(id).expect("machine");
            let Some(node) = m.node.as_mut() else { return };
            let Some(action) = node.poll_action() else {
                return self.observe(id);
            };
            let now = self.now;
            match action {
                Action::AppendWal { entries, .. } => {
                    let m = self.machines.get_mut(id).expect("machine");
                    for e in entries {
                        assert_eq!(e.index as usize, m.wal.len() + 1, "{id}: WAL continues");
                        m.wal.push(e);
                    }
                }
                Action::TruncateWal { after, .. } => {
                    let m = self.machines.get_mut(id).expect("machine");
                    let keep = usize::try_from(after.0).expect("fits");
                    m.wal.truncate(keep);
                    m.durable = m.durable.min(keep);
                }
                Action::SyncWal { io, term, through } => {
                    let at = if self.slow_fsync.contains(id) {
                        now.plus_nanos(self.slow_fsync_ns)
                    } else {
                        now.plus_nanos(self.fsync_ns())
                    };
                    self.push(
                        at,
                        Event::Synced {
                            node: id.into(),
                            incarnation: inc,
                            io,
                            term,
                            through,
                        },
                    );
                }
                Action::SaveHardState { io, state } => self.push(
                    now.plus_nanos(FSYNC_NS),
                    Event::Saved {
                        node: id.into(),
                        incarnation: inc,
                        io,
                        state,
                    },
                ),
                Action::Object { io, term, op } => self.push(
                    now.plus_nanos(OBJECT_NS / 2),
                    Event::Object {
                        node: id.into(),
                        incarnation: inc,
                        io,
                        term,
                        op,
                    },
                ),
                Action::Send { to, msg } => {
                    let from = self.machines[id].member.clone();
                    let (lost, delay) = match &mut self.chaos {
                        Some(c) => {
                            let lost = c.rng.chance(c.drop_percent);
                            (lost, NET_NS / 2 + c.rng.below(c.delay_max_ns))
                        }
                        None => (false, NET_NS),
                    };
                    if !lost && !self.cut.contains(&(id.to_owned(), to.id.clone())) {
                        self.push(
                            now.plus_nanos(delay),
                            Event::Deliver {
                                from,
                                to: to.id,
                                msg,
                            },
                        );
                    }
                }
                Action::Reply { req, result } => {
                    assert!(
                        self.replies.insert(req, result).is_none(),
                        "one reply per request"
                    );
                    self.reply_times.insert(req, now);
                }
                Action::TrimWal { io, .. } => self.push(
                    now,
                    Event::Io {
                        node: id.into(),
                        incarnation: inc,
                        done: IoDone::WalTrimmed { io, error: None },
                    },
                ),
                Action::ReadWal { io, from, through } => {
                    let wal = &self.machines[id].wal;
                    let result = (from.0..=through.0)
                        .map(|i| {
                            wal.get(usize::try_from(i).expect("fits") - 1)
                                .cloned()
                                .ok_or_else(|| format!("the WAL ends before {i}"))
                        })
                        .collect();
                    self.push(
                        now,
                        Event::Io {
                            node: id.into(),
                            incarnation: inc,
                            done: IoDone::WalRead { io, result },
                        },
                    );
                }
                Action::Watch(_) | Action::DropCheckpoint { .. } => {}
                Action::StartOver { why, .. } => self.start_overs.push((id.to_owned(), why)),
                // The rig's engines take no checkpoints.
                Action::TakeCheckpoint { io, .. } => self.push(
                    now,
                    Event::Io {
                        node: id.into(),
                        incarnation: inc,
                        done: IoDone::CheckpointTaken {
                            io,
                            result: Err("the rig takes no checkpoints".into()),
                        },
                    },
                ),
                other => panic!("{id}: unexpected action {other:?}"),
            }
        }
    }

    /// Runs one event (or timer); `false` when nothing is left before
    /// `until`.
    fn step(&mut self, until: Time) -> bool {
        let timer = self
            .machines
            .iter()
            .filter(|(_, m)| !m.paused)
            .filter_map(|(id, m)| {
                let offset = self.offset(id);
                m.node
                    .as_ref()?
                    .poll_timeout()
                    .map(|t| (Time(t.0.saturating_sub(offset)).max(self.now), id.clone()))
            })
            .min();
        let event = self.events.keys().next().copied();
        let next = match (event, &timer) {
            (Some((t, _)), Some((tt, _))) => t.min(*tt),
            (Some((t, _)), None) => t,
            (None, Some((tt, _))) => *tt,
            (None, None) => return false,
        };
        if next > until {
            return false;
        }
        self.now = self.now.max(next);
        let timer_first = match (&timer, event) {
            (Some((tt, _)), Some((t, _))) => *tt < t,
            (Some(_), None) => true,
            _ => false,
        };
        if timer_first {
            let id = timer.expect("timer first").1;
            let now = self.local(&id);
            let node = self.machines.get_mut(&id).unwrap().node.as_mut().unwrap();
            node.handle_timeout(now);
            if node.poll_timeout().is_some_and(|t| t <= now) {
                self.spins += 1;
                assert!(
                    self.spins < 10_000,
                    "{id}'s timer does not move: {:#?}",
                    node.cluster
                );
            } else {
                self.spins = 0;
            }
            self.pump(&id);
            return true;
        }
        let key = event.expect("an event is next");
        // A paused node's events wait until it resumes.
        let target = match &self.events[&key] {
            Event::Deliver { to, .. } => to.clone(),
            Event::Io { node, .. }
            | Event::Synced { node, .. }
            | Event::Saved { node, .. }
            | Event::Object { node, .. } => node.clone(),
        };
        if self.machines.get(&target).is_some_and(|m| m.paused) {
            let ev = self.events.remove(&key).expect("present");
            self.push(Time(key.0 .0 + MS), ev);
            return true;
        }
        let ev = self.events.remove(&key).expect("present");
        let now = self.local(&target);
        match ev {
            Event::Deliver { from, to, msg } => {
                if let Some(node) = self.machines.get_mut(&to).and_then(|m| m.node.as_mut()) {
                    node.handle_peer(now, &from, msg);
                    self.pump(&to);
                }
            }
            Event::Io {
                node: id,
                incarnation,
                done,
            } => {
                if self.incarnation(&id) == incarnation {
                    if let Some(node) = self.machines.get_mut(&id).and_then(|m| m.node.as_mut()) {
                        node.handle_io(now, done);
                        self.pump(&id);
                    }
                }
            }
            Event::Synced {
                node: id,
                incarnation,
                io,
                term,
                through,
            } => {
                if self.incarnation(&id) == incarnation {
                    let m = self.machines.get_mut(&id).expect("machine");
                    let through_len = usize::try_from(through.0).expect("fits").min(m.wal.len());
                    m.durable = m.durable.max(through_len);
                    if let Some(node) = m.node.as_mut() {
                        node.handle_io(now, IoDone::WalSynced { io, term, through });
                        self.pump(&id);
                    }
                }
            }
            Event::Saved {
                node: id,
                incarnation,
                io,
                state,
            } => {
                if self.incarnation(&id) == incarnation {
                    let m = self.machines.get_mut(&id).expect("machine");
                    m.hard = state;
                    if let Some(node) = m.node.as_mut() {
                        node.handle_io(now, IoDone::HardStateSaved { io, error: None });
                        self.pump(&id);
                    }
                }
            }
            Event::Object {
                node: id,
                incarnation,
                io,
                term,
                op,
            } => {
                let now = self.now;
                let result = if self.no_bucket.contains(&id) {
                    Err(crate::object::ObjectError::Retryable(
                        "cut from the bucket".into(),
                    ))
                } else {
                    self.bucket.execute(op)
                };
                self.push(
                    now.plus_nanos(OBJECT_NS / 2),
                    Event::Io {
                        node: id,
                        incarnation,
                        done: IoDone::Object { io, term, result },
                    },
                );
            }
        }
        true
    }

    /// Runs for `ms` of simulated time.
    fn run_ms(&mut self, ms: u64) {
        let until = self.now.plus_nanos(ms * MS);
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// Runs until `done` holds (checked after every step) or `ms` passed.
    fn run_until(&mut self, ms: u64, done: impl Fn(&Rig) -> bool) -> bool {
        let until = self.now.plus_nanos(ms * MS);
        while !done(self) {
            if !self.step(until) {
                return done(self);
            }
        }
        true
    }

    fn request(&mut self, id: &str, request: ClientRequest) -> ReqId {
        self.next_req += 1;
        let req = ReqId(self.next_req);
        let now = self.local(id);
        self.machines
            .get_mut(id)
            .unwrap()
            .node
            .as_mut()
            .expect("running")
            .handle_client(now, req, request);
        self.pump(id);
        req
    }

    fn put(&mut self, id: &str, key: &str, value: &str) -> ReqId {
        self.request(
            id,
            ClientRequest::Write(WriteRequest::Put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..PutRequest::default()
            })),
        )
    }

    /// Waits for `req`'s answer.
    fn answer(&mut self, req: ReqId, ms: u64) -> Option<Result<Response, Error>> {
        self.run_until(ms, |r| r.replies.contains_key(&req));
        self.replies.remove(&req)
    }

    fn value(&self, id: &str, key: &str) -> Option<Vec<u8>> {
        let resp = mvcc::range(
            self.node(id).engine(),
            &RangeRequest {
                key: key.into(),
                ..RangeRequest::default()
            },
        )
        .expect("range");
        resp.kvs.first().map(|kv| kv.value.clone())
    }

    fn state_hashes(&self) -> BTreeMap<String, (u64, u32)> {
        self.running()
            .map(|(id, n)| {
                (
                    id.clone(),
                    (
                        n.meta().applied_index,
                        mvcc::hash_all(n.engine()).expect("hash"),
                    ),
                )
            })
            .collect()
    }

    fn converged(&self) -> bool {
        let states: BTreeSet<(u64, u32)> = self.state_hashes().into_values().collect();
        states.len() == 1
    }

    /// One line per node, for failure messages.
    fn dump(&self) -> String {
        self.machines
            .iter()
            .map(|(id, m)| match &m.node {
                None => format!("{id}: down"),
                Some(n) => format!(
                    "{id}: {:?} term {} commit {:?} applied {} last {} wal {}/{}",
                    n.cluster_role(),
                    n.term(),
                    n.commit_index(),
                    n.meta().applied_index,
                    n.last_index(),
                    m.durable,
                    m.wal.len()
                ),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn isolate(&mut self, id: &str) {
        let others: Vec<String> = self.machines.keys().filter(|o| *o != id).cloned().collect();
        for o in others {
            self.cut.insert((id.to_owned(), o.clone()));
            self.cut.insert((o, id.to_owned()));
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
        self.no_bucket.clear();
    }
}

impl Rig {
    /// Replays the bucket's WAL from the start ([`BucketReplay`]: no
    /// holes, no overlaps that disagree, terms never go back) and checks
    /// each entry against what the nodes applied. Returns its last index.
    fn bucket_wal_checked(&self) -> Result<u64, String> {
        let objects: BTreeMap<Index, Bytes> = self
            .bucket
            .iter()
            .filter_map(|(key, body)| Some((layout::parse_wal_key(key)?, body.clone())))
            .collect();
        let listing: Vec<Index> = objects.keys().copied().collect();
        let mut replay = BucketReplay::new(Index(0));
        for first in replay.wanted(&listing).map_err(|e| e.to_string())? {
            let key = layout::wal_key(first);
            let (term, entries) =
                wal_object::decode(&key, first, &objects[&first]).map_err(|e| e.to_string())?;
            for e in replay
                .push(first, term, entries)
                .map_err(|e| e.to_string())?
            {
                match self.applied.get(&e.index) {
                    Some(seen) if *seen == e => {}
                    Some(seen) => {
                        return Err(format!("{key}: {e:?} differs from applied {seen:?}"))
                    }
                    None => return Err(format!("{key}: {e:?} was never applied")),
                }
            }
        }
        Ok(replay.next().0 - 1)
    }

    fn put_many(&mut self, via: &str, prefix: &str, n: usize) {
        for i in 0..n {
            let req = self.put(via, &format!("{prefix}{i}"), "v");
            assert!(
                is_ok_put(&self.answer(req, 500)),
                "put {i}: {}",
                self.dump()
            );
        }
    }

    fn others(&self, than: &str) -> Vec<String> {
        self.machines
            .keys()
            .filter(|id| *id != than)
            .cloned()
            .collect()
    }
}

fn is_ok_put(answer: &Option<Result<Response, Error>>) -> bool {
    matches!(answer, Some(Ok(Response::Write(WriteResponse::Put(_)))))
}

/// A node alone bootstraps the lock and serves after its barrier.
#[test]
fn a_single_node_bootstraps_and_serves() {
    let mut rig = Rig::new();
    rig.start("n1");
    assert!(rig.run_until(2_000, |r| !r.serving_leaders().is_empty()));
    let lock = rig.lock();
    assert_eq!(
        (lock.term, lock.leader_id.as_str(), lock.members.len()),
        (Term(1), "n1", 1)
    );
    let req = rig.put("n1", "a", "1");
    assert!(is_ok_put(&rig.answer(req, 100)));
    assert_eq!(rig.value("n1", "a"), Some(b"1".to_vec()));
    // Barrier at 1, the put at 2.
    assert_eq!(rig.node("n1").meta().applied_index, 2);
}

/// Three nodes: two join the first; writes commit on a majority and every
/// node applies the same state.
#[test]
fn three_nodes_join_and_replicate() {
    let mut rig = Rig::cluster(3);
    let lock = rig.lock();
    assert_eq!(
        lock.members
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>(),
        ["n1", "n2", "n3"]
    );
    for i in 0..20 {
        let req = rig.put("n1", &format!("k{i}"), &format!("v{i}"));
        assert!(is_ok_put(&rig.answer(req, 100)), "put {i}");
    }
    rig.run_ms(500);
    assert!(rig.converged(), "{:?}", rig.state_hashes());
    assert_eq!(rig.value("n3", "k19"), Some(b"v19".to_vec()));
}

/// A write to a follower is forwarded to the leader and answered.
#[test]
fn a_follower_forwards_writes() {
    let mut rig = Rig::cluster(3);
    let req = rig.put("n2", "f", "1");
    assert!(is_ok_put(&rig.answer(req, 100)));
    rig.run_ms(300);
    assert_eq!(rig.value("n3", "f"), Some(b"1".to_vec()));
}

/// A leader that cannot reach a majority acknowledges nothing.
#[test]
fn a_leader_without_a_majority_acknowledges_nothing() {
    let mut rig = Rig::cluster(3);
    rig.cut.insert(("n1".into(), "n2".into()));
    rig.cut.insert(("n1".into(), "n3".into()));
    let req = rig.put("n1", "x", "1");
    rig.run_ms(500);
    assert!(
        !rig.replies.contains_key(&req),
        "not acknowledged without a majority"
    );
    // One follower back: the write commits.
    rig.cut.remove(&("n1".to_string(), "n2".to_string()));
    assert!(is_ok_put(&rig.answer(req, 1_000)));
}

/// The leader crashes: a follower takes the lock over after the TTL, wins
/// the promise round and serves; every acknowledged write survives; the old
/// leader restarts, follows and converges.
#[test]
fn leader_crash_fails_over_without_losing_writes() {
    let mut rig = Rig::cluster(3);
    let mut acked = Vec::new();
    for i in 0..10 {
        let req = rig.put("n1", &format!("k{i}"), "v");
        if is_ok_put(&rig.answer(req, 100)) {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 10);
    // In flight when it dies: may or may not survive.
    let _ = rig.put("n1", "late", "v");
    rig.crash("n1");
    let start = rig.now;
    assert!(
        rig.run_until(30_000, |r| r.serving_leaders().len() == 1),
        "a new leader"
    );
    let failover_ms = (rig.now.0 - start.0) / MS;
    let leader = rig.serving_leaders()[0].clone();
    assert_ne!(leader, "n1");
    assert!(rig.lock().term > Term(1));
    assert!(failover_ms < 10_000, "failover took {failover_ms} ms");
    for i in &acked {
        assert_eq!(
            rig.value(&leader, &format!("k{i}")),
            Some(b"v".to_vec()),
            "k{i} survived"
        );
    }
    let req = rig.put(&leader, "after", "1");
    assert!(is_ok_put(&rig.answer(req, 200)));
    rig.start("n1");
    assert!(rig.run_until(10_000, |r| r.converged() && r.running().count() == 3));
    assert_eq!(rig.value("n1", "after"), Some(b"1".to_vec()));
}

/// A partitioned leader is replaced; when the partition heals it steps
/// down (no restart), its unacknowledged write is answered with an
/// outcome-unknown error, and all nodes converge.
#[test]
fn a_partitioned_leader_steps_down_after_healing() {
    let mut rig = Rig::cluster(3);
    rig.isolate("n1");
    rig.no_bucket.insert("n1".into());
    let stale = rig.put("n1", "stale", "1");
    assert!(rig.run_until(30_000, |r| r.serving_leaders().iter().any(|l| l != "n1")));
    let leader = rig
        .serving_leaders()
        .into_iter()
        .find(|l| l != "n1")
        .unwrap();
    let req = rig.put(&leader, "new", "1");
    assert!(is_ok_put(&rig.answer(req, 200)));
    assert!(
        !rig.replies.contains_key(&stale),
        "the old leader acknowledged nothing"
    );
    rig.heal();
    let ok = rig.run_until(10_000, |r| r.converged() && r.serving_leaders().len() == 1);
    assert!(ok, "{}", rig.dump());
    assert!(
        matches!(rig.replies.get(&stale), Some(Err(Error::Timeout(_)))),
        "{:?}",
        rig.replies.get(&stale)
    );
    assert!(!matches!(
        rig.node("n1").cluster_role(),
        Some(ClusterRole::Leader { .. })
    ));
    assert_eq!(rig.value("n1", "new"), Some(b"1".to_vec()));
}

/// Linearizable reads: on the leader within its lease at once; on a
/// follower after the leader's read index is applied.
#[test]
fn linearizable_reads_on_leader_and_follower() {
    let mut rig = Rig::cluster(3);
    let req = rig.put("n1", "r", "1");
    assert!(is_ok_put(&rig.answer(req, 100)));
    let read = rig.request("n1", ClientRequest::LinearizableRead);
    assert_eq!(
        rig.answer(read, 0),
        Some(Ok(Response::ReadReady)),
        "inside the lease: at once"
    );
    let read = rig.request("n3", ClientRequest::LinearizableRead);
    assert_eq!(rig.answer(read, 100), Some(Ok(Response::ReadReady)));
    assert_eq!(rig.value("n3", "r"), Some(b"1".to_vec()));
    // A leader cut from everyone cannot confirm a read once its lease ran
    // out.
    rig.isolate("n1");
    rig.run_ms(2_000);
    let read = rig.request("n1", ClientRequest::LinearizableRead);
    let answer = rig.answer(read, 10_000);
    assert!(!matches!(answer, Some(Ok(_))), "{answer:?}");
}

/// A follower whose log has an uncommitted suffix from a deposed leader
/// truncates it when the new leader's log conflicts.
#[test]
fn a_conflicting_uncommitted_suffix_is_truncated() {
    let mut rig = Rig::cluster(3);
    // n1 gets an entry only to n2 (n3 cut): it is not committed? It is
    // (n1 + n2 is a majority). Cut both, so it stays on n1 alone.
    rig.isolate("n1");
    rig.no_bucket.insert("n1".into());
    let lost = rig.put("n1", "lost", "1");
    rig.run_ms(100);
    assert!(rig.run_until(30_000, |r| r.serving_leaders().iter().any(|l| l != "n1")));
    let leader = rig
        .serving_leaders()
        .into_iter()
        .find(|l| l != "n1")
        .unwrap();
    for i in 0..3 {
        let req = rig.put(&leader, &format!("n{i}"), "1");
        assert!(is_ok_put(&rig.answer(req, 200)));
    }
    rig.heal();
    assert!(rig.run_until(10_000, |r| r.converged()));
    assert_eq!(
        rig.value("n1", "lost"),
        None,
        "the uncommitted entry was dropped"
    );
    assert!(matches!(
        rig.replies.get(&lost),
        Some(Err(Error::Timeout(_)))
    ));
    let wal_terms: Vec<u64> = rig.machines["n1"].wal.iter().map(|e| e.term).collect();
    assert!(wal_terms.windows(2).all(|w| w[0] <= w[1]), "{wal_terms:?}");
}

/// What one chaos run saw.
#[derive(Debug, Default)]
struct ChaosReport {
    acked: usize,
    failed: usize,
    leader_terms: usize,
    faults: BTreeMap<&'static str, u32>,
    reads: usize,
}

/// One seeded run: 3 or 5 nodes, writes and linearizable reads to random
/// nodes, message loss and reordering, crashes with restarts, isolated
/// nodes, one-way link cuts, nodes cut from the bucket, pauses longer than
/// every timeout. Then everything heals and the cluster must converge.
/// Checks: one leader per term; every node applies the same entry at each
/// index; every acknowledged put is in the final state exactly once; a
/// linearizable read sees every put acknowledged before it was sent.
fn chaos_run(seed: u64, nodes: usize, seconds: u64) -> ChaosReport {
    let (report, violations) = chaos_run_with(seed, nodes, seconds, ClusterMutants::default());
    assert!(
        violations.is_empty(),
        "seed {seed}: {violations:#?}\n{report:?}"
    );
    report
}

/// [`chaos_run`] with deliberate bugs: the report and the violations.
fn chaos_run_with(
    seed: u64,
    nodes: usize,
    seconds: u64,
    mutants: ClusterMutants,
) -> (ChaosReport, Vec<String>) {
    let mut rng = Rng(seed | 1);
    // Odd seeds: the bucket tier, with a leader memory small enough that
    // followers (and candidates) often catch up from the bucket.
    let tier = seed % 2 == 1;
    let mut rig = if tier {
        let buffer = usize::try_from(4 + rng.below(60)).expect("fits");
        Rig::with_tier(buffer).formed(nodes)
    } else {
        Rig::cluster(nodes)
    };
    rig.mutants = mutants;
    for id in rig.machines.keys().cloned().collect::<Vec<_>>() {
        // Restart each with the mutants (the cluster formed without them)
        // and a clock hours away from the others.
        rig.clock_offsets
            .insert(id.clone(), rng.below(10) * 3_600_000 * MS);
        rig.crash(&id);
        rig.start(&id);
    }
    rig.fsync_max_ns = 5 * MS;
    rig.chaos = Some(Chaos {
        rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        drop_percent: 2,
        delay_max_ns: 3 * MS,
    });
    let ids: Vec<String> = rig.machines.keys().cloned().collect();
    let mut report = ChaosReport::default();
    // (req, value, sent at)
    let mut puts: Vec<(ReqId, String, Time)> = Vec::new();
    // (req, node, sent at)
    let mut reads: Vec<(ReqId, String, Time)> = Vec::new();
    // Read answers: req → the node's applied index when it answered.
    let mut read_applied: BTreeMap<ReqId, u64> = BTreeMap::new();
    let mut restarts: Vec<(Time, String)> = Vec::new();
    let mut resumes: Vec<(Time, String)> = Vec::new();
    let end = rig.now.plus_nanos(seconds * 1_000 * MS);
    let mut value = 0u64;
    // A removal may land well after it was asked for (its answer lost, a
    // lock write read back later): no disk loss or other removal until
    // this long after one, so that both never meet.
    let mut quiet_until = rig.now;
    while rig.now < end {
        let quiet = rig.now >= quiet_until;
        let rng = &mut rig.chaos.as_mut().expect("chaos").rng;
        let pick = usize::try_from(rng.below(ids.len() as u64)).expect("fits");
        let id = ids[pick].clone();
        let roll = rng.below(1_000);
        let running = rig.machines[&id].node.is_some() && !rig.machines[&id].paused;
        match roll {
            0..=599 if running => {
                value += 1;
                let key = format!("k{}", value % 7);
                let v = format!("v{value}");
                let req = rig.put(&id, &key, &v);
                puts.push((req, v, rig.now));
            }
            600..=799 if running => {
                let req = rig.request(&id, ClientRequest::LinearizableRead);
                reads.push((req, id.clone(), rig.now));
            }
            800..=803 if running => {
                rig.crash(&id);
                let back = rig.now.plus_nanos((500 + rig.rng().below(3_000)) * MS);
                restarts.push((back, id.clone()));
                *report.faults.entry("crash").or_default() += 1;
            }
            804..=806 => {
                rig.isolate(&id);
                *report.faults.entry("isolate").or_default() += 1;
            }
            807..=809 => {
                let other =
                    ids[usize::try_from(rig.rng().below(ids.len() as u64)).expect("fits")].clone();
                rig.cut.insert((id.clone(), other));
                *report.faults.entry("one-way cut").or_default() += 1;
            }
            810..=811 => {
                rig.no_bucket.insert(id.clone());
                *report.faults.entry("bucket cut").or_default() += 1;
            }
            812..=813 if running => {
                rig.machines.get_mut(&id).expect("machine").paused = true;
                let back = rig.now.plus_nanos((500 + rig.rng().below(8_000)) * MS);
                resumes.push((back, id.clone()));
                *report.faults.entry("pause").or_default() += 1;
            }
            814..=816 => {
                // A majority loses power at once.
                for other in ids.iter().take(nodes / 2 + 1) {
                    if rig.machines[other].node.is_some() {
                        rig.crash(other);
                        let back = rig.now.plus_nanos((500 + rig.rng().below(2_000)) * MS);
                        restarts.push((back, other.clone()));
                    }
                }
                *report.faults.entry("majority crash").or_default() += 1;
            }
            817..=819 => rig.heal(),
            // A disk is lost, while every other member has its whole
            // disk (none is still rejoining after a loss of its own): at
            // most one disk at a time is gone, so a majority survives.
            820..=821 if quiet && rig.whole(&ids, &id, nodes) => {
                rig.wipe(&id);
                restarts.retain(|(_, r)| *r != id);
                let back = rig.now.plus_nanos((500 + rig.rng().below(3_000)) * MS);
                restarts.push((back, id.clone()));
                *report.faults.entry("disk loss").or_default() += 1;
            }
            // A member is removed (through any node), under the same rule:
            // at most one member short of the whole cluster at a time. It
            // is started again below, and joins again.
            822..=823 if running && quiet && rig.whole(&ids, "", nodes) => {
                let gone =
                    ids[usize::try_from(rig.rng().below(ids.len() as u64)).expect("fits")].clone();
                rig.request(&id, ClientRequest::MemberRemove { id: gone });
                quiet_until = rig.now.plus_nanos(10_000 * MS);
                *report.faults.entry("removal").or_default() += 1;
            }
            _ => {}
        }
        let step = rig.rng().below(20) + 1;
        rig.run_ms(step);
        for (at, id) in std::mem::take(&mut restarts) {
            if at <= rig.now {
                rig.start(&id);
            } else {
                restarts.push((at, id));
            }
        }
        for (at, id) in std::mem::take(&mut resumes) {
            if at <= rig.now {
                if let Some(m) = rig.machines.get_mut(&id) {
                    m.paused = false;
                }
            } else {
                resumes.push((at, id));
            }
        }
        for (req, id, _) in &reads {
            if !read_applied.contains_key(req) {
                if let Some(Ok(Response::ReadReady)) = rig.replies.get(req) {
                    let applied = rig.machines[id]
                        .node
                        .as_ref()
                        .map_or(0, |n| n.meta().applied_index);
                    read_applied.insert(*req, applied);
                }
            }
        }
        // After the reads are looked at: a crash loses the applied state.
        for gone in rig.removed_nodes() {
            rig.crash(&gone);
            restarts.retain(|(_, r)| *r != gone);
            let back = rig.now.plus_nanos((500 + rig.rng().below(3_000)) * MS);
            restarts.push((back, gone));
        }
    }
    // Heal everything; the cluster must settle.
    rig.heal();
    for (_, id) in std::mem::take(&mut resumes) {
        rig.machines.get_mut(&id).expect("machine").paused = false;
    }
    for (_, id) in std::mem::take(&mut restarts) {
        rig.start(&id);
    }
    rig.chaos.as_mut().expect("chaos").drop_percent = 0;
    // A removal still in flight may land meanwhile: its node is started
    // again, to join again.
    let mut settled = false;
    for _ in 0..120 {
        for id in rig.removed_nodes() {
            rig.crash(&id);
            rig.start(&id);
        }
        if rig.run_until(1_000, |r| {
            r.serving_leaders().len() == 1 && r.converged() && r.removed_nodes().is_empty()
        }) {
            settled = true;
            break;
        }
    }
    if !settled {
        rig.violations
            .push(format!("no convergence after healing:\n{}", rig.dump()));
    }
    if tier && settled {
        // The bucket's WAL is the committed log, whole, once uploads catch up.
        let leader = rig.serving_leaders()[0].clone();
        let applied = rig.node(&leader).meta().applied_index;
        let uploaded = rig.run_until(5_000, |r| {
            r.node(&leader).cluster_uploaded_through() >= Some(Index(applied))
        });
        match rig.bucket_wal_checked() {
            Ok(end) if uploaded && end >= applied => {}
            other => rig.violations.push(format!(
                "the bucket's WAL after healing: {other:?}, applied {applied}, uploaded {uploaded}"
            )),
        }
    }
    // Every write a node answered must be in the final state's log once.
    rig.run_ms(1_000);
    let mut index_of: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for (index, entry) in &rig.applied {
        if let Some(Payload::Put(p)) = &entry.payload {
            index_of.entry(p.value.clone()).or_default().push(*index);
        }
    }
    let mut acked_index: Vec<(Time, u64)> = Vec::new();
    for (req, v, _) in &puts {
        let positions = index_of.get(v.as_bytes()).cloned().unwrap_or_default();
        if positions.len() > 1 {
            rig.violations
                .push(format!("{v} applied {} times", positions.len()));
        }
        match rig.replies.get(req) {
            Some(Ok(_)) => {
                report.acked += 1;
                match positions.first() {
                    Some(&i) => acked_index.push((rig.reply_times[req], i)),
                    None => rig.violations.push(format!("acknowledged {v} is lost")),
                }
            }
            Some(Err(Error::Unavailable(_))) if !positions.is_empty() => {
                rig.violations
                    .push(format!("{v} was refused as unavailable but applied"));
            }
            _ => report.failed += 1,
        }
    }
    for (req, _, sent) in &reads {
        let Some(&applied) = read_applied.get(req) else {
            continue;
        };
        report.reads += 1;
        if let Some((_, index)) = acked_index
            .iter()
            .filter(|(at, _)| at < sent)
            .max_by_key(|(_, i)| *i)
        {
            if applied < *index {
                rig.violations.push(format!(
                    "a read sent at {sent:?} saw applied index {applied}, below {index} acknowledged before"
                ));
            }
        }
    }
    report.leader_terms = rig.leaders.len();
    (report, rig.violations)
}

impl Rig {
    /// Every member but `except` has its whole disk (none is still
    /// rejoining after a loss of its own) and the lock lists all `nodes`:
    /// losing one more disk, or one member, leaves a majority that holds
    /// everything.
    fn whole(&self, ids: &[String], except: &str, nodes: usize) -> bool {
        self.try_lock().is_some_and(|l| l.members.len() == nodes)
            && ids.iter().filter(|o| *o != except).all(|o| {
                let m = &self.machines[o];
                !m.hard.rejoining && !m.wal.is_empty()
            })
    }

    /// Running nodes that know they were removed.
    fn removed_nodes(&self) -> Vec<String> {
        self.running()
            .filter(|(_, n)| n.cluster_role() == Some(ClusterRole::Removed))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn fsync_ns(&mut self) -> u64 {
        let max = self.fsync_max_ns;
        match &mut self.chaos {
            Some(c) if max > FSYNC_NS => FSYNC_NS / 2 + c.rng.below(max),
            _ => FSYNC_NS,
        }
    }

    fn offset(&self, id: &str) -> u64 {
        self.clock_offsets.get(id).copied().unwrap_or(0)
    }

    /// The rig's time on `id`'s clock.
    fn local(&self, id: &str) -> Time {
        self.now.plus_nanos(self.offset(id))
    }

    fn rng(&mut self) -> &mut Rng {
        &mut self.chaos.as_mut().expect("chaos").rng
    }
}

#[test]
fn chaos_three_nodes() {
    let seeds: u64 = std::env::var("CLUSTER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let from: u64 = std::env::var("CLUSTER_SEED_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut total = ChaosReport::default();
    for seed in from..from + seeds {
        let r = chaos_run(seed, 3, 20);
        total.acked += r.acked;
        total.failed += r.failed;
        total.reads += r.reads;
        total.leader_terms += r.leader_terms;
        for (k, v) in r.faults {
            *total.faults.entry(k).or_default() += v;
        }
    }
    println!("chaos 3 nodes: seeds={seeds} {total:?}");
}

#[test]
fn chaos_five_nodes() {
    let seeds: u64 = std::env::var("CLUSTER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let from: u64 = std::env::var("CLUSTER_SEED_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in from..from + seeds {
        chaos_run(1_000 + seed, 5, 20);
    }
}

/// Runs chaos seeds with `mutants` until a violation shows; the seed that
/// caught it.
fn caught(mutants: ClusterMutants, seeds: u64) -> Option<(u64, String)> {
    (0..seeds).find_map(|seed| {
        let (_, violations) = chaos_run_with(seed, 3, 20, mutants);
        violations.into_iter().next().map(|v| (seed, v))
    })
}

#[test]
fn mutant_commit_on_connected_followers_is_caught() {
    let found = caught(
        ClusterMutants {
            commit_on_connected: true,
            ..ClusterMutants::default()
        },
        40,
    );
    assert!(
        found.is_some(),
        "committing on connected followers went unnoticed"
    );
    println!("caught: {found:?}");
}

// ----- T4's cluster-mode weaknesses, each a scenario -----

/// T4 can elect a node that lacks acknowledged writes (its lock's
/// committed revision is stale). Here a follower that missed writes wins
/// the lock, and the promise round makes it adopt the log that has them.
#[test]
fn t4_weakness_a_lagging_node_that_wins_the_lock_loses_nothing() {
    assert_eq!(
        lagging_node_wins_the_lock(ClusterMutants::default()),
        Vec::<String>::new()
    );
}

/// Skipping the promise round, the lagging node leads with its own log:
/// acknowledged writes are lost.
#[test]
fn mutant_skipping_the_promise_round_is_caught() {
    let lost = lagging_node_wins_the_lock(ClusterMutants {
        skip_promise_round: true,
        ..ClusterMutants::default()
    });
    assert!(
        !lost.is_empty(),
        "skipping the promise round went unnoticed"
    );
}

/// A candidate whose log is a prefix of the best promiser's, past what it
/// knows committed, fetches only the entries it lacks (the best promiser
/// checks the term of the entry before them): it leads even when the best
/// promiser's memory no longer holds the entries just after the
/// candidate's committed prefix, and no bucket tier holds them either.
/// (Fetching from its committed prefix, it gave up its round instead.)
#[test]
fn a_candidate_fetches_only_the_entries_it_lacks() {
    let mut rig = Rig {
        peer_buffer_entries: 5,
        ..Rig::new()
    }
    .formed(3);
    let leader = rig.serving_leaders()[0].clone();
    let others = rig.others(&leader);
    let (lagger, other) = (others[0].clone(), others[1].clone());
    let mut acked = Vec::new();
    let mut put = |rig: &mut Rig, key: String| {
        let req = rig.put(&leader, &key, "1");
        assert!(is_ok_put(&rig.answer(req, 500)), "{key}");
        acked.push(key);
    };
    for i in 0..10 {
        put(&mut rig, format!("a{i}"));
    }
    let last = rig.machines[&leader].wal.len();
    assert!(rig.run_until(1_000, |r| r.machines[&lagger].wal.len() == last));
    // The lagger restarts cut from the leader: its log is whole, but it
    // knows none of it committed (a restart forgets the commit index).
    rig.cut.insert((leader.clone(), lagger.clone()));
    rig.run_ms(100); // (what was on its way arrives before the crash)
    rig.crash(&lagger);
    rig.start(&lagger);
    // A few more commit on the leader and the other follower, which keeps
    // only a few applied entries in memory.
    for i in 0..3 {
        put(&mut rig, format!("b{i}"));
    }
    // The leader dies; the other follower is paused so that the lagger
    // wins the lock.
    rig.crash(&leader);
    rig.machines.get_mut(&other).unwrap().paused = true;
    rig.run_until(30_000, |r| {
        r.try_lock().is_some_and(|l| l.leader_id == lagger)
    });
    assert_eq!(rig.lock().leader_id, lagger);
    rig.machines.get_mut(&other).unwrap().paused = false;
    rig.heal();
    assert!(
        rig.run_until(3_000, |r| r.serving_leaders() == [lagger.clone()]),
        "the lagger leads at once: {}",
        rig.dump()
    );
    for key in acked {
        assert_eq!(rig.value(&lagger, &key), Some(b"1".to_vec()), "{key}");
    }
}

/// A candidate whose uncommitted tail differs from the best log (a deposed
/// leader's entry the next leader overwrote) is told `mismatch` when it
/// asks for only what follows its tail, fetches again from its committed
/// prefix, and drops the stale entry instead of splicing the best log
/// onto it.
#[test]
fn a_candidate_with_a_stale_tail_fetches_from_its_committed_prefix() {
    let mut rig = Rig::cluster(3);
    let old = rig.serving_leaders()[0].clone();
    // The leader, cut from everyone, appends an entry nobody else gets.
    rig.isolate(&old);
    rig.no_bucket.insert(old.clone());
    let lost = rig.put(&old, "lost", "1");
    assert!(rig.run_until(30_000, |r| r.serving_leaders().iter().any(|l| *l != old)));
    let next = rig
        .serving_leaders()
        .into_iter()
        .find(|l| *l != old)
        .unwrap();
    let other = rig.others(&old).into_iter().find(|o| *o != next).unwrap();
    let mut acked = Vec::new();
    for i in 0..3 {
        let key = format!("w{i}");
        let req = rig.put(&next, &key, "1");
        assert!(is_ok_put(&rig.answer(req, 500)), "{key}");
        acked.push(key);
    }
    // The new leader dies; the old one takes the lock over (the other
    // follower is paused until it has), with its stale entry where the
    // new leader's first entry is.
    rig.crash(&next);
    rig.heal();
    rig.machines.get_mut(&other).unwrap().paused = true;
    rig.run_until(30_000, |r| r.try_lock().is_some_and(|l| l.leader_id == old));
    assert_eq!(rig.lock().leader_id, old);
    rig.machines.get_mut(&other).unwrap().paused = false;
    assert!(
        rig.run_until(5_000, |r| r.serving_leaders() == [old.clone()]),
        "{}",
        rig.dump()
    );
    assert_eq!(rig.value(&old, "lost"), None, "the stale entry went");
    assert!(!is_ok_put(&rig.replies.get(&lost).cloned()));
    for key in acked {
        assert_eq!(rig.value(&old, &key), Some(b"1".to_vec()), "{key}");
    }
    assert!(rig.run_until(5_000, |r| r.converged()), "{}", rig.dump());
}

/// A two-member cluster whose leader lost its disk elects no one: the
/// survivor needs the other's promise, and the other does not vote until a
/// leader has caught it up. A forced removal (`t4 member force-remove`,
/// one conditional write of `LeaderLock::forced_removal`) lets the survivor
/// lead alone with every acknowledged write; the wiped member, started
/// again, joins as a new one and the two converge.
#[test]
fn a_forced_removal_unblocks_a_two_member_cluster_that_lost_a_disk() {
    let mut rig = Rig::cluster(2);
    let lost = rig.serving_leaders()[0].clone();
    let survivor = rig.others(&lost)[0].clone();
    let mut acked = Vec::new();
    for i in 0..5 {
        let key = format!("k{i}");
        let req = rig.put(&lost, &key, "1");
        assert!(is_ok_put(&rig.answer(req, 500)), "{key}");
        acked.push(key);
    }
    rig.wipe(&lost);
    rig.start(&lost);
    assert!(
        !rig.run_until(20_000, |r| !r.serving_leaders().is_empty()),
        "no leader without the forced removal: {}",
        rig.dump()
    );
    let Ok(ObjectReply::Got { body, etag }) = rig.bucket.execute(ObjectOp::Get {
        key: layout::LEADER_LOCK.into(),
    }) else {
        panic!("the lock");
    };
    let lock = LeaderLock::decode(&body).expect("lock");
    assert!(lock.forced_removal("nobody").is_err());
    let forced = lock.forced_removal(&lost).expect("two members");
    assert_eq!(forced.members.len(), 1);
    assert!(
        forced.forced_removal(&survivor).is_err(),
        "never the last one"
    );
    rig.bucket
        .execute(ObjectOp::Put {
            key: layout::LEADER_LOCK.into(),
            body: forced.encode(),
            condition: PutCondition::IfMatch(etag),
        })
        .expect("the forced write");
    assert!(
        rig.run_until(10_000, |r| r.serving_leaders() == [survivor.clone()]),
        "{}",
        rig.dump()
    );
    for key in &acked {
        assert_eq!(rig.value(&survivor, key), Some(b"1".to_vec()), "{key}");
    }
    // The lost member learns it was removed and stops (its driver ends the
    // process); started again, it joins as a new member.
    assert!(rig.run_until(10_000, |r| r.node(&lost).cluster_role()
        == Some(ClusterRole::Removed)));
    rig.crash(&lost);
    rig.start(&lost);
    assert!(
        rig.run_until(30_000, |r| r.lock().members.len() == 2 && r.converged()),
        "the wiped member joins again: {}",
        rig.dump()
    );
    for key in &acked {
        assert_eq!(rig.value(&lost, key), Some(b"1".to_vec()), "{key}");
    }
}

/// The lagging-winner scenario: the acknowledged keys missing on the new
/// leader.
fn lagging_node_wins_the_lock(mutants: ClusterMutants) -> Vec<String> {
    let (mut rig, leader) = Rig::settled_with(mutants);
    let (lagger, other) = if leader == "n3" {
        ("n2", "n1")
    } else if leader == "n2" {
        ("n3", "n1")
    } else {
        ("n3", "n2")
    };
    // The lagger stops hearing the leader: the writes commit on the
    // leader and the other follower only.
    rig.cut.insert((leader.clone(), lagger.into()));
    let mut acked = Vec::new();
    for i in 0..5 {
        let req = rig.put(&leader, &format!("w{i}"), "1");
        assert!(is_ok_put(&rig.answer(req, 200)));
        acked.push(format!("w{i}"));
    }
    // The leader dies; the other follower is paused so that only the
    // lagger can win the lock.
    rig.crash(&leader);
    rig.machines.get_mut(other).unwrap().paused = true;
    rig.run_until(30_000, |r| {
        r.try_lock().is_some_and(|l| l.leader_id == lagger)
    });
    assert_eq!(rig.lock().leader_id, lagger);
    rig.machines.get_mut(other).unwrap().paused = false;
    rig.heal();
    rig.run_until(20_000, |r| r.serving_leaders() == [lagger]);
    acked
        .into_iter()
        .filter(|key| rig.value(lagger, key) != Some(b"1".to_vec()))
        .collect()
}

/// T4 keeps a deposed leader acknowledging in a partial partition (its
/// liveness polling stops while any follower is connected). Here a leader
/// cut from the bucket and from one follower keeps its majority, so it
/// may keep serving; once another node's promise round completes, it can
/// acknowledge nothing.
#[test]
fn t4_weakness_a_deposed_leader_in_a_partial_partition_acknowledges_nothing() {
    let mut rig = Rig::cluster(3);
    rig.no_bucket.insert("n1".into());
    rig.cut.insert(("n1".into(), "n3".into()));
    rig.cut.insert(("n3".into(), "n1".into()));
    // n3 hears nothing from n1: it takes the lock over, but n2 still hears
    // n1 and refuses to promise, so n1 keeps leading with n2.
    rig.run_ms(10_000);
    let req = rig.put("n1", "still", "1");
    let answer = rig.answer(req, 1_000);
    assert!(is_ok_put(&answer) || answer.is_none(), "{answer:?}");
    // Now n1 is cut from n2 too: n3 gets n2's promise and leads.
    rig.isolate("n1");
    let stale = rig.put("n1", "stale", "1");
    assert!(
        rig.run_until(30_000, |r| r.serving_leaders().contains(&"n3".to_string())
            || r.serving_leaders().contains(&"n2".to_string())),
        "{}",
        rig.dump()
    );
    rig.run_ms(5_000);
    assert!(
        !matches!(rig.replies.get(&stale), Some(Ok(_))),
        "the deposed leader acknowledged"
    );
}

/// T4 decides liveness by comparing one node's wall clock with another's.
/// Here every node's clock is offset by hours from the others: elections,
/// leases and reads do not care.
#[test]
fn t4_weakness_clock_offsets_do_not_matter() {
    let mut rig = Rig::new();
    rig.clock_offsets.insert("n2".into(), 3_600_000 * MS);
    rig.clock_offsets.insert("n3".into(), 7 * 3_600_000 * MS);
    for (i, id) in ["n1", "n2", "n3"].into_iter().enumerate() {
        rig.start(id);
        assert!(rig.run_until(20_000, |r| r
            .try_lock()
            .is_some_and(|l| l.members.len() == i + 1)
            && r.all_caught_up()));
    }
    rig.crash("n1");
    assert!(rig.run_until(30_000, |r| r.serving_leaders().len() == 1));
    let leader = rig.serving_leaders()[0].clone();
    let req = rig.put(&leader, "k", "v");
    assert!(is_ok_put(&rig.answer(req, 200)));
    let read = rig.request("n2", ClientRequest::LinearizableRead);
    assert_eq!(rig.answer(read, 200), Some(Ok(Response::ReadReady)));
}

/// A leader cut from everyone (peers and bucket) is replaced; a write is
/// acknowledged by the new leader; then the old one is asked to read.
/// Returns whether it answered `ReadReady` without the new write applied.
fn deposed_leader_reads(mutants: ClusterMutants) -> bool {
    let (mut rig, old) = Rig::settled_with(mutants);
    rig.isolate(&old);
    rig.no_bucket.insert(old.clone());
    assert!(rig.run_until(30_000, |r| r.serving_leaders().iter().any(|l| *l != old)));
    let new = rig
        .serving_leaders()
        .into_iter()
        .find(|l| *l != old)
        .unwrap();
    let req = rig.put(&new, "fresh", "1");
    assert!(is_ok_put(&rig.answer(req, 500)));
    let read = rig.request(&old, ClientRequest::LinearizableRead);
    let answer = rig.answer(read, 10_000);
    matches!(answer, Some(Ok(Response::ReadReady))) && rig.value(&old, "fresh").is_none()
}

#[test]
fn a_deposed_leader_serves_no_stale_read() {
    assert!(!deposed_leader_reads(ClusterMutants::default()));
}

#[test]
fn mutant_reads_without_lease_is_caught() {
    assert!(
        deposed_leader_reads(ClusterMutants {
            reads_without_lease: true,
            ..ClusterMutants::default()
        }),
        "a read without the lease went unnoticed"
    );
}

/// A write acknowledged with the help of a follower whose fsync had not
/// finished, then that follower loses power and the leader is lost with
/// its disk: returns the acknowledged keys the surviving majority lacks.
fn ack_then_power_loss(mutants: ClusterMutants) -> Vec<String> {
    let (mut rig, leader) = Rig::settled_with(mutants);
    let others: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|s| s.to_string())
        .filter(|s| *s != leader)
        .collect();
    let (slow, lagger) = (others[0].clone(), others[1].clone());
    rig.cut.insert((leader.clone(), lagger.clone()));
    rig.slow_fsync.insert(slow.clone());
    let req = rig.put(&leader, "acked", "1");
    let answer = rig.answer(req, 2_000);
    // Power loss on the slow follower; the leader is gone for good (its
    // disk with it): a majority of disks survives, so must the write.
    rig.crash(&leader);
    rig.crash(&slow);
    rig.slow_fsync.clear();
    rig.heal();
    rig.start(&slow);
    rig.run_until(30_000, |r| r.serving_leaders().len() == 1 && r.converged());
    let survivor = rig.serving_leaders().first().cloned().unwrap_or(lagger);
    if is_ok_put(&answer) && rig.value(&survivor, "acked").is_none() {
        vec!["acked".into()]
    } else {
        Vec::new()
    }
}

#[test]
fn mutant_acking_before_fsync_is_caught() {
    assert!(ack_then_power_loss(ClusterMutants::default()).is_empty());
    let lost = ack_then_power_loss(ClusterMutants {
        ack_before_fsync: true,
        ..ClusterMutants::default()
    });
    assert!(
        !lost.is_empty(),
        "acknowledging before fsync went unnoticed"
    );
}

/// Seeds that found a candidate adopting a log shorter than promised (the
/// best promiser lost its unsynced tail in a power loss after promising,
/// and the candidate had already dropped its own copy of committed
/// entries). Promises now report the durable tail, and a candidate keeps
/// its entries until a fetched one conflicts.
///
/// Seed 2,272 (5 nodes) found the best promiser losing its disk after
/// promising: the candidate's fetch came back empty and it truncated its
/// own log, committed entries included, to the promiser's. A candidate now
/// gives the round up when the source holds less than it promised, and a
/// node that lost its disk answers no fetch.
#[test]
fn chaos_regressions() {
    chaos_run(268, 3, 20);
    chaos_run(1_107, 5, 20);
    chaos_run(2_272, 5, 20);
}

/// A member whose disk is lost restarts empty. Writes committed on the
/// leader and on that member only (the third member lagged) must survive
/// the leader's crash: the emptied member does not count toward a
/// majority until it has caught up, so the lagger cannot be elected with
/// it, and once the old leader returns everything converges.
fn member_loses_its_disk(mutants: ClusterMutants) -> Vec<String> {
    let (mut rig, leader) = Rig::settled_with(mutants);
    let others: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|s| (*s).to_string())
        .filter(|id| *id != leader)
        .collect();
    let (lagger, wiped) = (others[0].clone(), others[1].clone());
    rig.cut.insert((leader.clone(), lagger.clone()));
    let mut acked = Vec::new();
    for i in 0..5 {
        let req = rig.put(&leader, &format!("d{i}"), "1");
        assert!(is_ok_put(&rig.answer(req, 200)), "{}", rig.dump());
        acked.push(format!("d{i}"));
    }
    rig.wipe(&wiped);
    rig.start(&wiped);
    rig.crash(&leader);
    rig.heal();
    rig.run_ms(30_000);
    let lost_early: Vec<String> = acked
        .iter()
        .filter(|key| {
            rig.serving_leaders()
                .first()
                .is_some_and(|l| rig.value(l, key) != Some(b"1".to_vec()))
        })
        .cloned()
        .collect();
    if mutants == ClusterMutants::default() {
        assert!(
            rig.serving_leaders().is_empty(),
            "no majority may form without the old leader: {}",
            rig.dump()
        );
    }
    rig.start(&leader);
    assert!(
        rig.run_until(60_000, |r| r.serving_leaders().len() == 1 && r.converged()),
        "{}",
        rig.dump()
    );
    rig.run_ms(1_000);
    let rejoined = rig.machines[&wiped].hard;
    assert!(!rejoined.rejoining, "{rejoined:?}");
    let now = rig.serving_leaders()[0].clone();
    let mut lost: Vec<String> = acked
        .into_iter()
        .filter(|key| rig.value(&now, key) != Some(b"1".to_vec()))
        .collect();
    lost.extend(lost_early);
    lost
}

#[test]
fn a_member_that_lost_its_disk_does_not_count_until_caught_up() {
    assert_eq!(
        member_loses_its_disk(ClusterMutants::default()),
        Vec::<String>::new()
    );
}

#[test]
fn mutant_voting_after_disk_loss_is_caught() {
    let lost = member_loses_its_disk(ClusterMutants {
        vote_after_disk_loss: true,
        ..ClusterMutants::default()
    });
    assert!(!lost.is_empty(), "the mutant must lose acknowledged writes");
}

// ----- membership: removal -----

fn member_ids(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.id.as_str()).collect()
}

fn remove(rig: &mut Rig, via: &str, id: &str) -> Option<Result<Response, Error>> {
    let req = rig.request(via, ClientRequest::MemberRemove { id: id.into() });
    rig.answer(req, 2_000)
}

/// A follower is removed through another follower (forwarded): the answer
/// lists the members left, the lock has them, the removed node notices once
/// the leader stops talking to it and refuses clients; the two left need
/// each other to commit; started again, the removed node joins again.
#[test]
fn removing_a_follower_shrinks_the_majority() {
    let mut rig = Rig::cluster(3);
    let answer = remove(&mut rig, "n2", "n3");
    let Some(Ok(Response::Members(left))) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(member_ids(&left), ["n1", "n2"]);
    assert_eq!(member_ids(&rig.lock().members), ["n1", "n2"]);
    assert!(rig.run_until(10_000, |r| r.node("n3").cluster_role()
        == Some(ClusterRole::Removed)));
    let req = rig.put("n3", "x", "1");
    assert!(
        matches!(rig.answer(req, 100), Some(Err(Error::Unavailable(_)))),
        "a removed member refuses clients"
    );
    // n3 gone for good changes nothing; n2 gone stops commits (2 of 2).
    rig.crash("n3");
    let req = rig.put("n1", "a", "1");
    assert!(is_ok_put(&rig.answer(req, 200)));
    rig.isolate("n2");
    let req = rig.put("n1", "b", "1");
    rig.run_ms(1_000);
    assert!(!rig.replies.contains_key(&req), "needs n2 now");
    rig.heal();
    assert!(is_ok_put(&rig.answer(req, 5_000)));
    // Started again (its disk intact), it joins as a new member.
    rig.start("n3");
    assert!(rig.run_until(20_000, |r| r.lock().members.len() == 3 && r.converged()));
    assert_eq!(rig.value("n3", "b"), Some(b"1".to_vec()));
    assert!(rig.violations.is_empty(), "{:?}", rig.violations);
}

/// The leader removes itself: it answers, steps aside and stays out; the
/// two left elect a leader between them once the lock expires, with every
/// acknowledged write.
#[test]
fn removing_the_leader_elects_another() {
    let mut rig = Rig::cluster(3);
    for i in 0..5 {
        let req = rig.put("n2", &format!("k{i}"), "v");
        assert!(is_ok_put(&rig.answer(req, 200)));
    }
    let answer = remove(&mut rig, "n3", "n1");
    assert!(
        matches!(answer, Some(Ok(Response::Members(_)))),
        "{answer:?}"
    );
    assert_eq!(rig.node("n1").cluster_role(), Some(ClusterRole::Removed));
    assert!(
        rig.run_until(30_000, |r| r.serving_leaders().len() == 1),
        "a new leader\n{}",
        rig.dump()
    );
    let leader = rig.serving_leaders()[0].clone();
    assert_ne!(leader, "n1");
    let lock = rig.lock();
    assert_eq!(member_ids(&lock.members), ["n2", "n3"]);
    assert_eq!(lock.leader_id, leader);
    for i in 0..5 {
        assert_eq!(rig.value(&leader, &format!("k{i}")), Some(b"v".to_vec()));
    }
    let req = rig.put("n2", "after", "1");
    assert!(is_ok_put(&rig.answer(req, 500)));
    assert_eq!(rig.node("n1").cluster_role(), Some(ClusterRole::Removed));
    assert!(rig.violations.is_empty(), "{:?}", rig.violations);
}

/// Bad removals change nothing: an unknown id, the last member, a second
/// removal while one is pending.
#[test]
fn bad_removals_are_refused() {
    let mut rig = Rig::cluster(1);
    let before = rig.lock();
    assert_eq!(
        remove(&mut rig, "n1", "n9"),
        Some(Err(Error::MemberNotFound))
    );
    assert!(matches!(
        remove(&mut rig, "n1", "n1"),
        Some(Err(Error::MembershipRefused(_)))
    ));
    assert_eq!(rig.lock(), before);

    let mut rig = Rig::cluster(3);
    // The lock write of the first is in flight when the second arrives.
    rig.no_bucket.insert("n1".into());
    let first = rig.request("n1", ClientRequest::MemberRemove { id: "n3".into() });
    let second = rig.request("n1", ClientRequest::MemberRemove { id: "n2".into() });
    assert!(matches!(
        rig.answer(second, 100),
        Some(Err(Error::Unavailable(_)))
    ));
    rig.heal();
    let answer = rig.answer(first, 10_000);
    assert!(
        matches!(answer, Some(Ok(Response::Members(_)))),
        "{answer:?}"
    );
    assert_eq!(member_ids(&rig.lock().members), ["n1", "n2"]);
}

/// Not in cluster mode: refused.
#[test]
fn a_single_node_refuses_member_removal() {
    let mut node = Node::new(NodeConfig::default(), MemEngine::new()).expect("open");
    node.recover(Time(0), Vec::new()).expect("recover");
    node.handle_client(
        Time(0),
        ReqId(1),
        ClientRequest::MemberRemove { id: "n1".into() },
    );
    let replies = node.take_actions();
    assert!(
        replies.iter().any(|a| matches!(
            a,
            Action::Reply {
                result: Err(Error::MembershipRefused(_)),
                ..
            }
        )),
        "{replies:?}"
    );
}

// ----- forwarded requests across a follower's restart -----

/// A follower forwards put `a` and restarts before the answer comes back
/// (the leader's fsync takes 2 s), then forwards put `b`; the leader
/// answers `a`, then `b`. Returns `b`'s answer and the revision `b` really
/// has.
fn late_answer_across_restart(same_seed: bool) -> (Option<Result<Response, Error>>, i64) {
    let mut rig = Rig::cluster(3);
    rig.same_seed = same_seed;
    rig.crash("n2");
    rig.start("n2");
    assert!(rig.run_until(2_000, |r| r.node("n2").leader().is_some()));
    rig.slow_fsync_ns = 2_000 * MS;
    rig.slow_fsync.insert("n1".into());
    rig.put("n2", "a", "1");
    rig.run_ms(5);
    rig.crash("n2");
    rig.start("n2");
    assert!(rig.run_until(1_000, |r| r.node("n2").leader().is_some()));
    let b = rig.put("n2", "b", "2");
    rig.run_ms(5);
    rig.slow_fsync.clear();
    let answer = rig.answer(b, 4_000);
    let rev = mvcc::range(
        rig.node("n1").engine(),
        &RangeRequest {
            key: b"b".to_vec(),
            ..RangeRequest::default()
        },
    )
    .expect("range")
    .kvs
    .first()
    .map_or(0, |kv| kv.mod_revision);
    (answer, rev)
}

/// Seed 2,205 of the 5-node simulation: the answer to a previous
/// incarnation's forwarded request must not be taken for a new one's.
/// Drivers draw a seed per process start, from which request ids start.
#[test]
fn a_late_answer_to_a_previous_incarnation_is_ignored() {
    let (answer, rev) = late_answer_across_restart(false);
    let Some(Ok(Response::Write(WriteResponse::Put(put)))) = answer else {
        panic!("{answer:?}")
    };
    assert!(rev > 0);
    assert_eq!(put.revision, rev, "b's answer is b's");
}

/// The same with a driver that gives every start the same seed: `b` gets
/// `a`'s answer (the simulation's seed 2,205).
#[test]
fn the_same_seed_at_every_start_mixes_answers_up() {
    let (answer, rev) = late_answer_across_restart(true);
    let Some(Ok(Response::Write(WriteResponse::Put(put)))) = answer else {
        panic!("{answer:?}")
    };
    assert_ne!(put.revision, rev, "b got a's answer");
}

/// Followers that hear their leader still read the lock now and then, so
/// every member's view of the members (etcd `MemberList`) catches up.
#[test]
fn followers_learn_members_added_after_them() {
    let mut rig = Rig::cluster(3);
    assert!(rig.run_until(6_000, |r| r.running().all(|(_, n)| n.members().len() == 3)));
}

/// A follower's read whose read-index answer is lost asks again (half an
/// election timeout later) instead of waiting out the request timeout.
#[test]
fn a_lost_read_index_answer_is_asked_again() {
    let mut rig = Rig::cluster(3);
    rig.cut.insert(("n1".into(), "n2".into()));
    let req = rig.request("n2", ClientRequest::LinearizableRead);
    rig.run_ms(50);
    assert!(!rig.replies.contains_key(&req));
    rig.heal();
    let start = rig.now;
    assert_eq!(rig.answer(req, 2_000), Some(Ok(Response::ReadReady)));
    assert!(
        rig.now.0 - start.0 <= 600 * MS,
        "answered after {} ms",
        (rig.now.0 - start.0) / MS
    );
}

/// A follower whose leader changes fails the requests it forwarded to the
/// old one at once (outcome unknown), instead of waiting out the request
/// timeout.
#[test]
fn forwarded_requests_fail_fast_when_the_leader_changes() {
    let mut rig = Rig::cluster(3);
    rig.request_timeout_ns = 60_000 * MS;
    for id in ["n1", "n2", "n3"] {
        rig.crash(id);
        rig.start(id);
    }
    assert!(rig.run_until(30_000, |r| r.serving_leaders().len() == 1 && r.converged()));
    let leader = rig.serving_leaders()[0].clone();
    let follower = if leader == "n2" { "n3" } else { "n2" };
    rig.machines.get_mut(&leader).unwrap().paused = true;
    // Cut from the bucket, the follower cannot take over itself (which
    // fails what it forwarded anyway): it learns the new leader from its
    // first append.
    rig.no_bucket.insert(follower.to_owned());
    let req = rig.put(follower, "x", "1");
    let start = rig.now;
    let answer = rig.answer(req, 30_000);
    let Some(Err(Error::Timeout(why))) = &answer else {
        panic!("{answer:?} {follower} {leader}\n{}", rig.dump())
    };
    assert!(why.contains("leader changed"), "{why}");
    assert_ne!(rig.node(follower).leader().map(|m| m.id), Some(leader));
    assert!(rig.now.0 - start.0 < 20_000 * MS);
}

// ----- the bucket tier -----

/// The leader uploads the committed log; a follower that was down while the
/// leader's memory moved past its next entry gets `Behind`, reads the
/// missing entries from the bucket, and converges.
#[test]
fn a_follower_behind_the_leaders_memory_catches_up_from_the_bucket() {
    let mut rig = Rig::with_tier(8).formed(3);
    let leader = rig.serving_leaders()[0].clone();
    let lagger = rig.others(&leader)[0].clone();
    rig.crash(&lagger);
    rig.put_many(&leader, "k", 40);
    let applied = rig.node(&leader).meta().applied_index;
    assert!(
        rig.run_until(2_000, |r| r.node(&leader).cluster_uploaded_through()
            == Some(Index(applied))),
        "the leader uploads what it applied: {:?}",
        rig.node(&leader).cluster_uploaded_through()
    );
    assert_eq!(rig.bucket_wal_checked(), Ok(applied));
    rig.start(&lagger);
    assert!(
        rig.run_until(5_000, |r| r.converged()
            && r.node(&lagger).meta().applied_index == applied),
        "{}",
        rig.dump()
    );
    assert_eq!(rig.value(&lagger, "k39"), Some(b"v".to_vec()));
    // It takes part again: the leader's appends reach it.
    rig.put_many(&leader, "after", 3);
    assert!(rig.run_until(1_000, Rig::converged), "{}", rig.dump());
    assert_eq!(rig.violations, Vec::<String>::new());
}

/// Without the tier the same follower cannot catch up (and says so); the
/// others go on.
#[test]
fn without_the_tier_a_follower_behind_the_leaders_memory_stays_behind() {
    let mut rig = Rig::new();
    rig.peer_buffer_entries = 8;
    let mut rig = rig.formed(3);
    let leader = rig.serving_leaders()[0].clone();
    let lagger = rig.others(&leader)[0].clone();
    rig.crash(&lagger);
    rig.put_many(&leader, "k", 40);
    rig.start(&lagger);
    rig.run_ms(3_000);
    assert!(rig.node(&lagger).meta().applied_index < rig.node(&leader).meta().applied_index);
    assert!(rig
        .bucket
        .iter()
        .all(|(key, _)| layout::parse_wal_key(key).is_none()));
}

/// A follower whose next entry neither the leader's memory nor the bucket
/// holds (GC collected the object after a checkpoint; here it is deleted)
/// asks its driver to start it over, and only it; the others go on.
#[test]
fn a_follower_that_cannot_catch_up_asks_to_start_over() {
    let mut rig = Rig::with_tier(8).formed(3);
    let leader = rig.serving_leaders()[0].clone();
    let lagger = rig.others(&leader)[0].clone();
    rig.crash(&lagger);
    let lagger_next = rig.node(&leader).meta().applied_index + 1;
    for round in 0..4 {
        rig.put_many(&leader, &format!("r{round}-"), 10);
        rig.run_ms(1_000);
    }
    let applied = rig.node(&leader).meta().applied_index;
    assert!(
        rig.run_until(2_000, |r| r.node(&leader).cluster_uploaded_through()
            == Some(Index(applied)))
    );
    // Collect the object holding the lagger's next entry (not the last).
    let firsts: Vec<Index> = rig
        .bucket
        .iter()
        .filter_map(|(key, _)| layout::parse_wal_key(key))
        .collect();
    let holder = firsts
        .iter()
        .copied()
        .filter(|first| first.0 <= lagger_next)
        .max()
        .expect("an object holds it");
    assert!(firsts.iter().any(|f| *f > holder), "objects: {firsts:?}");
    rig.bucket
        .execute(ObjectOp::Delete {
            key: layout::wal_key(holder),
        })
        .expect("delete");
    assert_eq!(rig.start_overs, Vec::<(String, String)>::new());
    rig.start(&lagger);
    assert!(
        rig.run_until(5_000, |r| !r.start_overs.is_empty()),
        "{}",
        rig.dump()
    );
    assert!(rig.start_overs.iter().all(|(id, _)| *id == lagger));
    assert!(rig.node(&lagger).meta().applied_index < applied);
    // The others go on without it.
    rig.put_many(&leader, "after", 3);
    let other = rig
        .others(&leader)
        .into_iter()
        .find(|id| *id != lagger)
        .expect("a third");
    assert!(rig.run_until(1_000, |r| r.value(&other, "after2") == Some(b"v".to_vec())));
    assert_eq!(rig.violations, Vec::<String>::new());
}

/// A member that lost its disk after the leader's memory moved on rejoins
/// from the bucket's WAL, then counts again.
#[test]
fn a_wiped_member_rejoins_from_the_bucket() {
    let mut rig = Rig::with_tier(8).formed(3);
    let leader = rig.serving_leaders()[0].clone();
    let wiped = rig.others(&leader)[0].clone();
    rig.put_many(&leader, "k", 30);
    rig.wipe(&wiped);
    rig.put_many(&leader, "m", 10);
    rig.start(&wiped);
    assert!(rig.run_until(10_000, Rig::converged), "{}", rig.dump());
    assert!(
        rig.run_until(5_000, |r| !r.machines[&wiped].hard.rejoining),
        "{:?}",
        rig.machines[&wiped].hard
    );
    assert_eq!(rig.value(&wiped, "m9"), Some(b"v".to_vec()));
    assert_eq!(rig.violations, Vec::<String>::new());
}

/// A new leader finds where the bucket's WAL ends and continues it; the
/// deposed leader's uploads (it may still run) never contradict it.
#[test]
fn a_new_leader_continues_the_buckets_wal() {
    let mut rig = Rig::with_tier(8).formed(3);
    for round in 0..3 {
        let leader = rig.serving_leaders()[0].clone();
        rig.put_many(&leader, &format!("r{round}-"), 15);
        rig.crash(&leader);
        assert!(
            rig.run_until(20_000, |r| r.serving_leaders().len() == 1),
            "{}",
            rig.dump()
        );
        rig.start(&leader);
    }
    let leader = rig.serving_leaders()[0].clone();
    assert!(rig.run_until(10_000, |r| r.converged()), "{}", rig.dump());
    let applied = rig.node(&leader).meta().applied_index;
    assert!(
        rig.run_until(2_000, |r| r.node(&leader).cluster_uploaded_through()
            == Some(Index(applied)))
    );
    assert_eq!(rig.bucket_wal_checked(), Ok(applied));
    assert_eq!(rig.violations, Vec::<String>::new());
}

#[test]
fn a_leader_whose_memory_let_go_uploads_from_its_wal() {
    // Cut from the bucket, the leader keeps un-uploaded entries in memory
    // only up to the backlog bound (small here); once the bucket answers
    // again it reads the rest back from its WAL: the bucket's WAL has no
    // hole.
    let mut rig = Rig::with_tier(8);
    rig.tier.as_mut().expect("tier").async_backlog_bytes_max = 500;
    let mut rig = rig.formed(3);
    let leader = rig.serving_leaders()[0].clone();
    for id in ["n1", "n2", "n3"] {
        rig.no_bucket.insert(id.into());
    }
    rig.put_many(&leader, "cut-", 60);
    let applied = rig.node(&leader).meta().applied_index;
    let held_from = rig.node(&leader).log_first_index();
    assert!(
        held_from.0
            > rig
                .node(&leader)
                .cluster_uploaded_through()
                .expect("tier")
                .0
                + 1,
        "memory let go of entries the bucket lacks: holds from {held_from}"
    );
    rig.no_bucket.clear();
    assert!(
        rig.run_until(5_000, |r| r.node(&leader).cluster_uploaded_through()
            >= Some(Index(applied))),
        "{}",
        rig.dump()
    );
    assert!(rig.bucket_wal_checked().expect("the bucket's WAL replays") >= applied);
    assert_eq!(rig.violations, Vec::<String>::new());
}
