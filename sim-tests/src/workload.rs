//! The simulated clients: an etcd-like mix, a Kubernetes-like mix, and
//! list+watch watchers. Every client records what it asked and learned in
//! the run's [`Recorder`]; every written value is unique.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::time::{sleep, Instant};
use t4_core::kv::{
    CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Op as TxnOp,
    PutRequest, RangeRequest, RequestOp, TargetUnion, TxnRequest, WatchCreateRequest, WatchFilter,
    WriteRequest, WriteResponse,
};
use t4_core::{ClientRequest, Error, Response};
use t4_io_sim::client::Client;
use t4_io_sim::proto::{Reply, Request, WatchUp};

use crate::history::{Answer, Call, Op, Return, WatchEnd, WatchRecord};

/// What every client shares: the history, the watch records, the trace hash.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    inner: Mutex<Recorded>,
    /// Clients stop issuing new operations.
    pub stop: AtomicBool,
    /// Watchers stop; the run was quiet long enough that every open watch
    /// must have caught up with the final revision.
    pub end: AtomicBool,
}

/// The recorded run.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Client operations, in completion order.
    pub ops: Vec<Op>,
    /// Watches.
    pub watches: Vec<WatchRecord>,
    /// Leases granted by lease clients.
    pub leases: Vec<LeaseRecord>,
    /// Every recorded call's answer and its time, in completion order (not
    /// part of the trace hash: [`Recorded::ops`] already is).
    pub answers: Vec<Answer>,
    /// Hash of every event in order (determinism check).
    pub trace: u64,
}

impl Recorder {
    /// A recorder whose time zero is now.
    #[must_use]
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            inner: Mutex::new(Recorded::default()),
            stop: AtomicBool::new(false),
            end: AtomicBool::new(false),
        })
    }

    /// Nanoseconds since the start of the run.
    #[must_use]
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `at` in nanoseconds since the start of the run.
    #[must_use]
    pub fn since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Mixes an event into the trace hash.
    pub fn trace(&self, what: impl std::fmt::Debug) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut inner = self.inner.lock().expect("recorder lock");
        inner.trace.hash(&mut h);
        self.now().hash(&mut h);
        format!("{what:?}").hash(&mut h);
        inner.trace = h.finish();
    }

    fn push_op(&self, op: Op) {
        self.trace(("op", &op));
        self.inner.lock().expect("recorder lock").ops.push(op);
    }

    fn push_answer(&self, answer: Answer) {
        self.inner
            .lock()
            .expect("recorder lock")
            .answers
            .push(answer);
    }

    fn push_watch(&self, w: WatchRecord) {
        self.trace(("watch", w.responses.len(), w.end));
        self.inner.lock().expect("recorder lock").watches.push(w);
    }

    fn push_lease(&self, l: LeaseRecord) {
        self.trace(("lease", &l));
        self.inner.lock().expect("recorder lock").leases.push(l);
    }

    /// Takes the recording out.
    #[must_use]
    pub fn take(&self) -> Recorded {
        std::mem::take(&mut self.inner.lock().expect("recorder lock"))
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn ended(&self) -> bool {
        self.end.load(Ordering::Relaxed)
    }
}

/// Which operation mix a client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Gets, ranges (with limits, at old revisions), puts, deletes, delete
    /// ranges, txns with compares, compactions.
    Etcd,
    /// Optimistic updates by txn on mod_revision, create-if-absent, deletes
    /// on mod_revision, paged lists.
    Kubernetes,
}

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Its number (also in its values).
    pub id: usize,
    /// The node.
    pub node: SocketAddr,
    /// Its mix.
    pub mix: Mix,
    /// How long it waits for an answer.
    pub timeout: Duration,
    /// Pause between operations (uniform in 0..think).
    pub think: Duration,
    /// Compactions per operation (etcd mix).
    pub compact_rate: f64,
    /// The share of reads made serializable (served from the node's own
    /// applied state; checked as "some committed prefix", not by the
    /// linearizability checker).
    pub serializable_rate: f64,
}

const ETCD_PREFIX: &[u8] = b"k/";
const ETCD_KEYS: u32 = 12;
/// The Kubernetes mix's prefix (what watchers watch).
pub const PODS_PREFIX: &[u8] = b"/registry/pods/";
const PODS: u32 = 6;

/// etcd's prefix end: the prefix with its last byte incremented.
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

fn key(prefix: &[u8], n: u32) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{n:02}").as_bytes());
    k
}

/// Issues `call` from `client`, records it as an operation of client `id`
/// and returns what came back.
pub(crate) async fn recorded_call(
    client: &mut Client,
    rec: &Recorder,
    id: usize,
    call: Call,
    timeout: Duration,
) -> Return {
    let call_at = rec.now();
    let req = match &call {
        Call::Range(r) => Request::Range(r.clone()),
        Call::Write(w) => Request::Core(ClientRequest::Write(w.clone())),
    };
    let answer = client.call(req, timeout).await;
    rec.push_answer(Answer {
        client: id,
        write: matches!(call, Call::Write(_)),
        call_at,
        answered_at: answer.is_some().then(|| rec.now()),
        result: answer
            .as_ref()
            .map(|a| a.as_ref().map(|_| ()).map_err(Clone::clone)),
    });
    let ret = match (answer, &call) {
        (None, _) => Return::Unknown,
        (Some(Ok(Reply::Range(r))), Call::Range(_)) => Return::Range(Ok(r)),
        // A read refused because the node cannot serve (starting, fenced,
        // failed) says nothing about the state, and the model never gives
        // such an answer: it constrains nothing.
        (
            Some(Err(
                Error::Unavailable(_) | Error::Fenced(_) | Error::Internal(_) | Error::Timeout(_),
            )),
            Call::Range(_),
        ) => Return::Unknown,
        (Some(Err(e)), Call::Range(_)) => Return::Range(Err(e)),
        (Some(Ok(Reply::Core(Response::Write(w)))), Call::Write(_)) => Return::Write(Ok(w)),
        // An internal error or a timeout may come after the write reached
        // the log.
        (Some(Err(Error::Internal(_) | Error::Timeout(_))), Call::Write(_)) => Return::Unknown,
        (Some(Err(e)), Call::Write(_)) => Return::Write(Err(e)),
        (Some(other), _) => panic!("mismatched answer {other:?} to {call:?}"),
    };
    let return_at = (!matches!(ret, Return::Unknown)).then(|| rec.now());
    rec.push_op(Op {
        client: id,
        call_at,
        return_at,
        call,
        ret: ret.clone(),
    });
    ret
}

struct Worker {
    cfg: ClientConfig,
    client: Client,
    rec: Arc<Recorder>,
    seq: u64,
    /// Highest revision seen in any answer.
    seen_rev: i64,
}

/// Runs a workload client until the recorder says stop.
pub async fn run_client(cfg: ClientConfig, rec: Arc<Recorder>) {
    let client = Client::bind(cfg.node)
        .await
        .expect("bind a client endpoint");
    let mut w = Worker {
        cfg,
        client,
        rec,
        seq: 0,
        seen_rev: 1,
    };
    while !w.rec.stopped() {
        match w.cfg.mix {
            Mix::Etcd => w.etcd_op().await,
            Mix::Kubernetes => w.kube_op().await,
        }
        let think = w.cfg.think.as_nanos() as u64;
        sleep(Duration::from_nanos(thread_rng().gen_range(0..=think))).await;
    }
}

impl Worker {
    fn value(&mut self) -> Vec<u8> {
        self.seq += 1;
        format!("c{}-{}", self.cfg.id, self.seq).into_bytes()
    }

    /// Issues one call and records it.
    async fn call(&mut self, mut call: Call) -> Return {
        if let Call::Range(r) = &mut call {
            // Drawn only when asked for, so runs without serializable
            // reads keep their random sequence.
            if self.cfg.serializable_rate > 0.0 {
                r.serializable = thread_rng().gen_bool(self.cfg.serializable_rate);
            }
        }
        let ret = recorded_call(
            &mut self.client,
            &self.rec,
            self.cfg.id,
            call,
            self.cfg.timeout,
        )
        .await;
        let rev = match &ret {
            Return::Range(Ok(r)) => r.revision,
            Return::Write(Ok(w)) => w.revision(),
            _ => 0,
        };
        self.seen_rev = self.seen_rev.max(rev);
        ret
    }

    async fn etcd_op(&mut self) {
        let mut rng = thread_rng();
        let k = key(ETCD_PREFIX, rng.gen_range(0..ETCD_KEYS));
        let dice = rng.gen_range(0..100);
        let call = if rng.gen_bool(self.cfg.compact_rate) {
            let back = rng.gen_range(0..40);
            Call::Write(WriteRequest::Compaction(CompactionRequest {
                revision: (self.seen_rev - back).max(1),
                physical: false,
            }))
        } else if dice < 25 {
            Call::Range(RangeRequest {
                key: k,
                ..RangeRequest::default()
            })
        } else if dice < 35 {
            let back = rng.gen_range(0..30);
            Call::Range(RangeRequest {
                key: ETCD_PREFIX.to_vec(),
                range_end: prefix_end(ETCD_PREFIX),
                limit: rng.gen_range(0..5),
                revision: if rng.gen_bool(0.5) {
                    (self.seen_rev - back).max(0)
                } else {
                    0
                },
                ..RangeRequest::default()
            })
        } else if dice < 70 {
            Call::Write(WriteRequest::Put(PutRequest {
                key: k,
                value: self.value(),
                prev_kv: rng.gen_bool(0.3),
                ..PutRequest::default()
            }))
        } else if dice < 78 {
            Call::Write(WriteRequest::DeleteRange(DeleteRangeRequest {
                key: k,
                prev_kv: rng.gen_bool(0.5),
                ..DeleteRangeRequest::default()
            }))
        } else if dice < 81 {
            let lo = rng.gen_range(0..ETCD_KEYS);
            Call::Write(WriteRequest::DeleteRange(DeleteRangeRequest {
                key: key(ETCD_PREFIX, lo),
                range_end: key(ETCD_PREFIX, lo + 3),
                prev_kv: rng.gen_bool(0.5),
            }))
        } else {
            self.etcd_txn(k)
        };
        self.call(call).await;
    }

    /// A txn comparing one key against a recently seen revision / version,
    /// writing two keys on success, reading on failure.
    fn etcd_txn(&mut self, k: Vec<u8>) -> Call {
        let mut rng = thread_rng();
        let target = rng.gen_range(0..3);
        let (target, target_union) = match target {
            0 => (
                CompareTarget::Mod,
                TargetUnion::ModRevision(rng.gen_range(0..=self.seen_rev)),
            ),
            1 => (
                CompareTarget::Version,
                TargetUnion::Version(rng.gen_range(0..4)),
            ),
            _ => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        };
        let result = [
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
        ][rng.gen_range(0..3)];
        let other = key(ETCD_PREFIX, rng.gen_range(0..ETCD_KEYS));
        let mut success = vec![put_op(k.clone(), self.value())];
        if other != k {
            success.push(put_op(other, self.value()));
        }
        Call::Write(WriteRequest::Txn(TxnRequest {
            compare: vec![Compare {
                result: result as i32,
                target: target as i32,
                key: k.clone(),
                range_end: Vec::new(),
                target_union: Some(target_union),
            }],
            success,
            failure: vec![RequestOp {
                op: Some(TxnOp::Range(RangeRequest {
                    key: k,
                    ..RangeRequest::default()
                })),
            }],
        }))
    }

    async fn kube_op(&mut self) {
        let mut rng = thread_rng();
        let k = key(PODS_PREFIX, rng.gen_range(0..PODS));
        match rng.gen_range(0..10) {
            0..=1 => {
                // A paged list at one revision.
                let mut start = PODS_PREFIX.to_vec();
                let mut revision = 0;
                for _ in 0..4 {
                    let ret = self
                        .call(Call::Range(RangeRequest {
                            key: start.clone(),
                            range_end: prefix_end(PODS_PREFIX),
                            limit: 2,
                            revision,
                            ..RangeRequest::default()
                        }))
                        .await;
                    let Return::Range(Ok(page)) = ret else { return };
                    let Some(last) = page.kvs.last() else { return };
                    if !page.more {
                        return;
                    }
                    revision = page.revision;
                    start = last.key.clone();
                    start.push(0);
                }
            }
            2..=3 => {
                // Create if absent.
                let value = self.value();
                let txn = cas(
                    &k,
                    CompareTarget::Create,
                    TargetUnion::CreateRevision(0),
                    put_op(k.clone(), value),
                );
                self.call(Call::Write(WriteRequest::Txn(txn))).await;
            }
            4..=8 => {
                // Optimistic update (or delete): read, then txn on mod_revision.
                let ret = self
                    .call(Call::Range(RangeRequest {
                        key: k.clone(),
                        ..RangeRequest::default()
                    }))
                    .await;
                let Return::Range(Ok(got)) = ret else { return };
                let Some(kv) = got.kvs.first() else { return };
                let then = if rng.gen_bool(0.2) {
                    RequestOp {
                        op: Some(TxnOp::DeleteRange(DeleteRangeRequest {
                            key: k.clone(),
                            ..DeleteRangeRequest::default()
                        })),
                    }
                } else {
                    put_op(k.clone(), self.value())
                };
                let txn = cas(
                    &k,
                    CompareTarget::Mod,
                    TargetUnion::ModRevision(kv.mod_revision),
                    then,
                );
                let ret = self.call(Call::Write(WriteRequest::Txn(txn))).await;
                if let Return::Write(Ok(WriteResponse::Txn(r))) = ret {
                    if !r.succeeded {
                        // Conflict: a real controller re-reads and retries.
                        self.rec.trace(("conflict", self.cfg.id));
                    }
                }
            }
            _ => {
                self.call(Call::Range(RangeRequest {
                    key: k,
                    ..RangeRequest::default()
                }))
                .await;
            }
        }
    }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        op: Some(TxnOp::Put(PutRequest {
            key,
            value,
            ..PutRequest::default()
        })),
    }
}

/// `if key's target == value then op else get key`.
fn cas(key: &[u8], target: CompareTarget, union: TargetUnion, then: RequestOp) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: key.to_vec(),
            range_end: Vec::new(),
            target_union: Some(union),
        }],
        success: vec![then],
        failure: vec![RequestOp {
            op: Some(TxnOp::Range(RangeRequest {
                key: key.to_vec(),
                ..RangeRequest::default()
            })),
        }],
    }
}

/// How a watcher behaves.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Its number.
    pub id: usize,
    /// The node.
    pub node: SocketAddr,
    /// How long a list waits.
    pub timeout: Duration,
}

/// A Kubernetes-style informer: list the pods prefix, watch from the list's
/// revision + 1, resume from the last seen revision + 1 when the stream
/// breaks, re-list when the watch is cancelled (compacted). Randomly asks
/// for prev_kv, filters, progress notifications.
pub async fn run_watcher(cfg: WatcherConfig, rec: Arc<Recorder>) {
    let mut client = Client::bind(cfg.node)
        .await
        .expect("bind a watcher endpoint");
    let mut resume_from: Option<i64> = None;
    while !rec.ended() {
        let start = match resume_from {
            Some(rev) => rev,
            None => {
                let list = Call::Range(RangeRequest {
                    key: PODS_PREFIX.to_vec(),
                    range_end: prefix_end(PODS_PREFIX),
                    ..RangeRequest::default()
                });
                match recorded_call(&mut client, &rec, cfg.id, list, cfg.timeout).await {
                    Return::Range(Ok(r)) => r.revision + 1,
                    _ => {
                        sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let Ok(mut stream) = client.watch_stream().await else {
            sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut rng = thread_rng();
        let mut filters = Vec::new();
        if rng.gen_bool(0.1) {
            filters.push(WatchFilter::Nodelete as i32);
        }
        let create = WatchCreateRequest {
            key: PODS_PREFIX.to_vec(),
            range_end: prefix_end(PODS_PREFIX),
            start_revision: start,
            progress_notify: rng.gen_bool(0.3),
            filters,
            prev_kv: rng.gen_bool(0.5),
            ..WatchCreateRequest::default()
        };
        let mut record = WatchRecord {
            client: cfg.id,
            create: create.clone(),
            responses: Vec::new(),
            end: WatchEnd::Open,
        };
        if stream.send(WatchUp::Create(create)).await.is_err() {
            continue;
        }
        let mut next = start;
        // A slow consumer reads with pauses, so that its stream stalls and
        // the node resyncs it from history (until the workload stops).
        let slow = thread_rng().gen_bool(0.3);
        loop {
            if rec.ended() {
                record.end = WatchEnd::OpenCaughtUp;
                break;
            }
            if slow && !rec.stopped() {
                sleep(Duration::from_millis(thread_rng().gen_range(0..1_500))).await;
            }
            let got = madsim::time::timeout(Duration::from_millis(500), stream.recv()).await;
            match got {
                Err(_elapsed) => {
                    if thread_rng().gen_bool(0.2) && stream.send(WatchUp::Progress).await.is_err() {
                        record.end = WatchEnd::Broken;
                        break;
                    }
                }
                Ok(Err(_broken)) => {
                    record.end = WatchEnd::Broken;
                    break;
                }
                Ok(Ok(out)) => {
                    if let Some(last) = out.events.last() {
                        next = last.kv.as_ref().map_or(next, |kv| kv.mod_revision + 1);
                    }
                    let canceled = out.canceled;
                    record.responses.push(out);
                    if canceled {
                        record.end = WatchEnd::Canceled;
                        break;
                    }
                }
            }
        }
        resume_from = match record.end {
            WatchEnd::Broken => Some(next),
            _ => None,
        };
        rec.push_watch(record);
    }
}

/// One lease as its client saw it (for the lease expiry check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The client.
    pub client: usize,
    /// The lease id (chosen by the client).
    pub id: i64,
    /// The TTL the grant answered, in seconds.
    pub ttl: i64,
    /// When the grant was sent and answered.
    pub grant_call_at: u64,
    /// When the grant was answered.
    pub granted_at: u64,
    /// Every keepalive sent (answered or not).
    pub keepalive_calls: Vec<u64>,
    /// Keepalives answered with a TTL > 0: when they were sent.
    pub keepalive_acked_calls: Vec<u64>,
    /// The client revoked the lease itself (sent at this time).
    pub revoked_at: Option<u64>,
}

/// How a lease client behaves.
#[derive(Clone, Debug)]
pub struct LeaseClientConfig {
    /// Its number.
    pub id: usize,
    /// The node.
    pub node: SocketAddr,
    /// How long it waits for an answer.
    pub timeout: Duration,
}

/// The lease prefix.
pub const LEASE_PREFIX: &[u8] = b"lease/";

/// Grants leases with explicit ids, attaches a key or two, keeps them
/// alive for a while, then revokes them or lets them expire. Puts are
/// client operations like any other (checked for linearizability); the
/// lease records feed the expiry check.
pub async fn run_lease_client(cfg: LeaseClientConfig, rec: Arc<Recorder>) {
    let client = Client::bind(cfg.node)
        .await
        .expect("bind a lease client endpoint");
    let mut w = Worker {
        cfg: ClientConfig {
            id: cfg.id,
            node: cfg.node,
            mix: Mix::Etcd,
            timeout: cfg.timeout,
            think: Duration::ZERO,
            compact_rate: 0.0,
            serializable_rate: 0.0,
        },
        client,
        rec: Arc::clone(&rec),
        seq: 0,
        seen_rev: 1,
    };
    let mut n: i64 = 0;
    while !rec.stopped() {
        n += 1;
        let id = ((cfg.id as i64 + 1) << 32) | n;
        let ttl = thread_rng().gen_range(2..=5);
        let grant_call_at = rec.now();
        let ret = w
            .call(Call::Write(WriteRequest::LeaseGrant(
                t4_core::kv::LeaseGrantRequest { ttl, id },
            )))
            .await;
        let Return::Write(Ok(WriteResponse::LeaseGrant(granted))) = ret else {
            sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut record = LeaseRecord {
            client: cfg.id,
            id,
            ttl: granted.ttl,
            grant_call_at,
            granted_at: rec.now(),
            keepalive_calls: Vec::new(),
            keepalive_acked_calls: Vec::new(),
            revoked_at: None,
        };
        for k in 0..thread_rng().gen_range(1..=2) {
            let mut key = LEASE_PREFIX.to_vec();
            key.extend_from_slice(format!("{}/{n}/{k}", cfg.id).as_bytes());
            let value = w.value();
            w.call(Call::Write(WriteRequest::Put(PutRequest {
                key,
                value,
                lease: id,
                ..PutRequest::default()
            })))
            .await;
        }
        // Keep it alive for up to two TTLs.
        let keep_until =
            rec.now() + thread_rng().gen_range(0..=2 * granted.ttl as u64) * 1_000_000_000;
        while rec.now() < keep_until && !rec.stopped() {
            sleep(Duration::from_millis(granted.ttl as u64 * 1000 / 3)).await;
            let call_at = rec.now();
            record.keepalive_calls.push(call_at);
            let answer = w
                .client
                .call(
                    Request::Core(ClientRequest::LeaseKeepAlive { id }),
                    cfg.timeout,
                )
                .await;
            rec.trace(("keepalive", id, &answer));
            if let Some(Ok(Reply::Core(Response::LeaseKeepAlive(r)))) = answer {
                if r.ttl > 0 {
                    record.keepalive_acked_calls.push(call_at);
                }
            }
        }
        if thread_rng().gen_bool(0.4) {
            record.revoked_at = Some(rec.now());
            w.call(Call::Write(WriteRequest::LeaseRevoke(
                t4_core::kv::LeaseRevokeRequest { id },
            )))
            .await;
        }
        rec.push_lease(record);
        sleep(Duration::from_millis(granted.ttl as u64 * 1000 + 500)).await;
    }
}
