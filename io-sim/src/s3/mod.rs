//! The fake S3: one bucket on a madsim node of its own, reached over the
//! simulated network, that behaves like S3 — and worse, on demand.
//!
//! ```text
//!  t4 node (10.0.0.x)                           S3 node (S3_IP, port 9000)
//!  ┌────────────────────────────┐   datagram    ┌───────────────────────────────┐
//!  │ task: s3.execute(op, 2 s)  │ ──request───▶ │ receive loop                  │
//!  │  fresh endpoint per call,  │               │  └ one task per request:      │
//!  │  waits for its request id  │ ◀──answer──── │    draw its fate, hold it,    │
//!  └────────────────────────────┘               │    decide against the bucket, │
//!                                               │    answer (or not)            │
//!                                               └───────────────────────────────┘
//!      FakeS3, the control handle (outside every node): faults, outages,
//!      bucket snapshot, counters, the log of applied writes
//! ```
//!
//! # Why a node of its own
//!
//! The store's state (a [`MemBucket`], so its semantics are exactly those
//! of [`t4_core::object`], checked by the conformance suite) lives in the
//! control handle, and each request is worked on by a task of the S3 node.
//! Killing a t4 node cancels its own tasks only: a request that reached the
//! store still takes effect on the store's schedule, as with real S3, where
//! a PUT whose client died mid-flight may well land. And requests and
//! answers are datagrams through madsim's network, so its packet loss,
//! latency and partitions apply: `NetSim::clog_node(s3.node_id())` or
//! `clog_link(t4, s3.node_id())` cut a node from its bucket, and the node
//! sees timeouts.
//!
//! Do not kill the S3 node: S3 does not lose acknowledged writes, and the
//! faults below model everything else. (Killed anyway, requests in flight
//! at the store are dropped unapplied, and a restart — `kill` then
//! `restart`, as for any madsim node — serves the same bucket.)
//!
//! # Time
//!
//! A request reaches the store, is held for its service time (drawn per
//! kind from [`S3Latency`], with a long tail and a per-MiB transfer time),
//! then decided: the write takes effect, or the read sees the bucket, at
//! that instant. The answer leaves at once; the network adds its own latency
//! both ways. Requests held together are decided in the order their holds
//! end, not the order they arrived, as in S3.
//!
//! # Faults
//!
//! Drawn per request when it arrives, from madsim's seeded RNG, in this
//! order; the first that hits decides (see [`S3Faults`] for the knobs):
//!
//! | fault | the store … | the client sees | models |
//! |---|---|---|---|
//! | outage, errors | does nothing, answers after a delay | `Retryable("503 …")` | a regional outage with the front end up |
//! | outage, black hole | does nothing, never answers | timeout | DNS or routing failure |
//! | throttled | refuses at once (more than `in_flight_max` held) | `Retryable("503 SlowDown …")` | S3 shedding load |
//! | `slow_down_rate` | does nothing | `Retryable("503 SlowDown …")` | per-prefix request-rate limits |
//! | `internal_error_rate` | does nothing | `Retryable("500 …")` | S3's ordinary 500s, to be retried |
//! | `conflict_rate` | does nothing: another conditional put on the key is in flight | `PreconditionFailed` | AWS's `409 ConditionalRequestConflict` |
//! | `late_landing_rate` | holds the request past any client timeout, then does it | timeout; the write lands later | a request stuck in S3's front end |
//! | `error_after_apply_rate` | does the put or delete, then answers 500 | `Retryable("500 …")` although it happened | S3 failing after the commit point |
//! | `lost_response_rate` | does the request, drops the answer | timeout although it happened | a connection reset after the commit point |
//!
//! Each models a reason core's object protocols must treat `Retryable` as
//! "may or may not have happened": a retried conditional put can fail its
//! own precondition (the first attempt landed), a fence can be overtaken by
//! a late zombie write that S3 accepted seconds earlier, an upload declared
//! failed can be in the bucket. The 409 is why an `IfAbsent` or `IfMatch`
//! loser is not always a 412: with two conditional puts on a key in flight,
//! AWS refuses the newcomer without looking at the object, so *both* may
//! fail if the first then fails for another reason.
//!
//! A rate of 0 or 1 draws nothing, so switching a fault fully on or off
//! does not shift the other draws of a run. All randomness, all timing and
//! all delivery come from madsim, and everything that reaches an output is
//! kept in ordered collections, so one seed replays one run exactly.
//!
//! # What checkers see
//!
//! [`FakeS3`] gives a copy of the bucket ([`FakeS3::bucket`]), counts of
//! requests by kind and of every injected fault ([`FakeS3::stats`]), and the
//! log of every write that took effect ([`FakeS3::writes`]): the operation
//! with its key, body and condition, the new ETag, when it arrived and when
//! it landed (simulated time), which client sent it, and what became of its
//! answer. "WAL object 42 landed at T, from node 2, whose client was told
//! 500" is one `filter` away.
//!
//! # Use
//!
//! ```ignore
//! // In the test, inside the madsim runtime:
//! let s3 = FakeS3::start(S3_IP.into(), S3Faults::none());
//! let client = s3.client("t4-1");           // goes into the node's context
//! // In a task of the t4 node:
//! let result = client.execute(op, Duration::from_secs(2)).await;
//! // In the chaos loop:
//! s3.set_outage(Some(Outage::Blackhole));
//! s3.update_faults(|f| f.lost_response_rate = 0.05);
//! ```

mod client;
mod faults;
mod server;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use madsim::runtime::Handle;
use madsim::task::NodeId;
use madsim::time::Instant;
use t4_core::object::{ETag, MemBucket, ObjectOp, ObjectReply, ObjectResult};

pub use client::S3Client;
pub use faults::{Latency, Outage, S3Fault, S3Faults, S3Latency};

use faults::{internal_error, is_conditional_put, AfterApply, Plan, Verdict};

/// The S3 node's IP: outside the t4 nodes' `10.0.0.x` and the clients'
/// `10.0.1.x`.
pub const S3_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 100, 1);
/// The S3 node's port (MinIO's).
pub const S3_PORT: u16 = 9000;
/// Datagram tag of a request to the store (`"S3"` and 1; distinct from the
/// node API's tags).
pub const S3_REQUEST_TAG: u64 = 0x5333_0001;
/// Datagram tag of the store's answer.
pub const S3_REPLY_TAG: u64 = 0x5333_0002;

/// The name [`FakeS3::apply`] logs as the client.
pub const CONTROL_CLIENT: &str = "control";

/// A request datagram. `id` is unique in the run and echoed.
#[derive(Debug)]
struct S3Request {
    id: u64,
    client: Arc<str>,
    op: ObjectOp,
}

/// An answer datagram.
#[derive(Debug)]
struct S3Reply {
    id: u64,
    result: ObjectResult,
}

/// Requests received, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Gets.
    pub get: u64,
    /// Puts.
    pub put: u64,
    /// Deletes.
    pub delete: u64,
    /// List pages.
    pub list: u64,
}

impl OpCounts {
    fn count(&mut self, op: &ObjectOp) {
        let n = match op {
            ObjectOp::Get { .. } => &mut self.get,
            ObjectOp::Put { .. } => &mut self.put,
            ObjectOp::Delete { .. } => &mut self.delete,
            ObjectOp::List { .. } => &mut self.list,
        };
        *n += 1;
    }

    /// All requests.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.get + self.put + self.delete + self.list
    }
}

/// What the store has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Stats {
    /// Requests that reached the store, by kind (whatever became of them).
    pub ops: OpCounts,
    /// Injected faults by kind (kinds that never happened are absent).
    pub faults: BTreeMap<S3Fault, u64>,
    /// Writes that took effect (the length of the write log).
    pub writes_applied: u64,
    /// Calls whose client gave up waiting (counted by the clients).
    pub client_timeouts: u64,
}

impl S3Stats {
    /// How many times `fault` was injected.
    #[must_use]
    pub fn fault(&self, fault: S3Fault) -> u64 {
        self.faults.get(&fault).copied().unwrap_or(0)
    }
}

/// What became of the answer to a write that took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFate {
    /// The real answer was sent (the network or a departed client may
    /// still have lost it).
    Answered,
    /// `500 InternalError` was sent instead.
    ErrorAfterApply,
    /// No answer was sent.
    ResponseLost,
    /// Done through [`FakeS3::apply`], not over the network.
    Direct,
}

/// One write (put or delete) that took effect in the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedWrite {
    /// The request's run-wide id (0 for [`FakeS3::apply`]).
    pub request_id: u64,
    /// The sending client's name ([`CONTROL_CLIENT`] for [`FakeS3::apply`]).
    pub client: Arc<str>,
    /// The sender's address (`None` for [`FakeS3::apply`]).
    pub from: Option<SocketAddr>,
    /// When the request reached the store.
    pub arrived_at: Instant,
    /// When it took effect.
    pub at: Instant,
    /// The operation: [`ObjectOp::Put`] (key, body, condition) or
    /// [`ObjectOp::Delete`].
    pub op: ObjectOp,
    /// The new object's ETag (puts).
    pub etag: Option<ETag>,
    /// Held past the usual service time (late landing).
    pub late: bool,
    /// What became of the answer.
    pub fate: WriteFate,
}

impl AppliedWrite {
    /// The written key.
    #[must_use]
    pub fn key(&self) -> &str {
        self.op.key()
    }

    /// The body of a put (`None` for a delete).
    #[must_use]
    pub fn body(&self) -> Option<&[u8]> {
        match &self.op {
            ObjectOp::Put { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// The store and its bookkeeping, shared by the control handle, the S3
/// node's tasks and the clients (for request ids and timeout counts).
#[derive(Debug)]
struct State {
    bucket: MemBucket,
    faults: S3Faults,
    stats: S3Stats,
    writes: Vec<AppliedWrite>,
    /// Requests held by the store (refusals waiting to be answered
    /// included).
    in_flight: usize,
    /// Conditional puts held, by key (for the 409).
    conditional_in_flight: BTreeMap<String, usize>,
    /// The last request id handed out.
    last_request_id: u64,
}

#[derive(Clone, Debug)]
struct Shared(Arc<Mutex<State>>);

/// A request's place in the store's in-flight set; leaving it (drop) is
/// the end of its window, even if the S3 node is killed mid-request.
struct InFlight {
    shared: Shared,
    conditional_key: Option<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Never panic in drop: a poisoned lock means a test already failed.
        let mut s = self.shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        debug_assert!(s.in_flight > 0, "a request leaves an empty in-flight set");
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some(key) = self.conditional_key.take() {
            if let Some(n) = s.conditional_in_flight.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    s.conditional_in_flight.remove(&key);
                }
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("fake S3 state lock poisoned")
    }

    fn next_request_id(&self) -> u64 {
        let mut s = self.lock();
        s.last_request_id += 1;
        s.last_request_id
    }

    fn count_timeout(&self) {
        self.lock().stats.client_timeouts += 1;
    }

    /// A request arrives: count it, draw its plan, enter the in-flight set.
    /// `None`: swallowed (no answer, nothing done).
    fn admit(&self, op: &ObjectOp) -> Option<(Plan, InFlight)> {
        let mut s = self.lock();
        s.stats.ops.count(op);
        let body_bytes = match op {
            ObjectOp::Put { body, .. } => body.len(),
            ObjectOp::Get { key } => match s.bucket.execute(ObjectOp::Get { key: key.clone() }) {
                Ok(ObjectReply::Got { body, .. }) => body.len(),
                _ => 0,
            },
            ObjectOp::Delete { .. } | ObjectOp::List { .. } => 0,
        };
        let conditional_key = is_conditional_put(op).then(|| op.key().to_owned());
        let conditional_in_flight = conditional_key
            .as_ref()
            .and_then(|key| s.conditional_in_flight.get(key))
            .copied()
            .unwrap_or(0);
        let plan = s
            .faults
            .plan(op, body_bytes, s.in_flight, conditional_in_flight);
        for fault in &plan.faults {
            s.count(*fault);
        }
        let conditional_key = match plan.verdict {
            Verdict::Drop => return None,
            Verdict::Refuse(_) => None,
            Verdict::Apply { .. } => conditional_key,
        };
        s.in_flight += 1;
        if let Some(key) = &conditional_key {
            *s.conditional_in_flight.entry(key.clone()).or_default() += 1;
        }
        let in_flight = InFlight {
            shared: self.clone(),
            conditional_key,
        };
        Some((plan, in_flight))
    }

    /// The hold of an admitted request is over: do it, log it if it wrote,
    /// and say what to answer (`None`: nothing).
    fn decide(
        &self,
        req: &S3Request,
        from: SocketAddr,
        arrived_at: Instant,
        late: bool,
        then: AfterApply,
    ) -> Option<ObjectResult> {
        let mut s = self.lock();
        let result = s.bucket.execute(req.op.clone());
        let written =
            result.is_ok() && matches!(req.op, ObjectOp::Put { .. } | ObjectOp::Delete { .. });
        let (answer, fate) = match then {
            AfterApply::ErrorIfWritten if written => {
                (Some(Err(internal_error())), WriteFate::ErrorAfterApply)
            }
            AfterApply::Lose => (None, WriteFate::ResponseLost),
            AfterApply::Answer | AfterApply::ErrorIfWritten => {
                (Some(result.clone()), WriteFate::Answered)
            }
        };
        match fate {
            WriteFate::ErrorAfterApply => s.count(S3Fault::ErrorAfterApply),
            WriteFate::ResponseLost => s.count(S3Fault::LostResponse),
            WriteFate::Answered | WriteFate::Direct => {}
        }
        if written {
            s.log_write(AppliedWrite {
                request_id: req.id,
                client: Arc::clone(&req.client),
                from: Some(from),
                arrived_at,
                at: Instant::now(),
                op: req.op.clone(),
                etag: put_etag(&result),
                late,
                fate,
            });
        }
        answer
    }
}

impl State {
    fn count(&mut self, fault: S3Fault) {
        *self.stats.faults.entry(fault).or_default() += 1;
    }

    fn log_write(&mut self, write: AppliedWrite) {
        assert!(
            matches!(write.op, ObjectOp::Put { .. } | ObjectOp::Delete { .. }),
            "only puts and deletes are writes: {:?}",
            write.op.kind()
        );
        assert!(
            write.at >= write.arrived_at,
            "a write lands after it arrives ({:?} < {:?})",
            write.at,
            write.arrived_at
        );
        self.stats.writes_applied += 1;
        self.writes.push(write);
    }
}

fn put_etag(result: &ObjectResult) -> Option<ETag> {
    match result {
        Ok(ObjectReply::Put { etag }) => Some(etag.clone()),
        _ => None,
    }
}

/// The control handle of a fake S3: start it, hand out clients, switch
/// faults, look at the bucket. Cheap to clone; every clone sees the same
/// store. Its methods never yield, so a chaos loop can call them between
/// two sleeps, and they keep working after the simulation ended (to read
/// the final bucket and log).
#[derive(Clone)]
pub struct FakeS3 {
    shared: Shared,
    node: NodeId,
    addr: SocketAddr,
}

impl std::fmt::Debug for FakeS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeS3")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeS3 {
    /// Creates the S3 node (named `s3`, at `ip`) with an empty bucket and
    /// starts serving. Call inside the madsim runtime; the store is
    /// listening a few simulated microseconds later.
    ///
    /// # Panics
    /// `faults` fails [`S3Faults::check`], or `ip` is already taken.
    #[must_use]
    pub fn start(ip: IpAddr, faults: S3Faults) -> FakeS3 {
        if let Err(why) = faults.check() {
            panic!("fake S3 faults: {why}");
        }
        let shared = Shared(Arc::new(Mutex::new(State {
            bucket: MemBucket::new(),
            faults,
            stats: S3Stats::default(),
            writes: Vec::new(),
            in_flight: 0,
            conditional_in_flight: BTreeMap::new(),
            last_request_id: 0,
        })));
        let serving = shared.clone();
        let node = Handle::current()
            .create_node()
            .name("s3")
            .ip(ip)
            .init(move || server::serve(serving.clone()))
            .build();
        FakeS3 {
            shared,
            node: node.id(),
            addr: SocketAddr::new(ip, S3_PORT),
        }
    }

    /// The S3 node (for `NetSim::clog_node` / `clog_link`).
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// Where the store listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client whose writes the log attributes to `name` (say `t4-2`).
    #[must_use]
    pub fn client(&self, name: &str) -> S3Client {
        S3Client {
            server: self.addr,
            name: Arc::from(name),
            shared: self.shared.clone(),
        }
    }

    /// The faults in force.
    #[must_use]
    pub fn faults(&self) -> S3Faults {
        self.shared.lock().faults.clone()
    }

    /// Replaces the faults; requests arriving from now on use them
    /// (requests already held keep their plans).
    ///
    /// # Panics
    /// `faults` fails [`S3Faults::check`].
    pub fn set_faults(&self, faults: S3Faults) {
        if let Err(why) = faults.check() {
            panic!("fake S3 faults: {why}");
        }
        self.shared.lock().faults = faults;
    }

    /// Changes some of the faults (see [`FakeS3::set_faults`]).
    ///
    /// # Panics
    /// The result fails [`S3Faults::check`].
    pub fn update_faults(&self, change: impl FnOnce(&mut S3Faults)) {
        let mut faults = self.faults();
        change(&mut faults);
        self.set_faults(faults);
    }

    /// Starts (`Some`) or ends (`None`) an outage.
    ///
    /// # Panics
    /// The outage's delay range is reversed.
    pub fn set_outage(&self, outage: Option<Outage>) {
        self.update_faults(|f| f.outage = outage);
    }

    /// A copy of the bucket as it is now (bodies are shared, not copied).
    #[must_use]
    pub fn bucket(&self) -> MemBucket {
        self.shared.lock().bucket.clone()
    }

    /// Counts of requests and faults so far.
    #[must_use]
    pub fn stats(&self) -> S3Stats {
        self.shared.lock().stats.clone()
    }

    /// Every write that took effect, in the order it did. The log grows
    /// with the run, like the WAL ledger: it is the truth checkers compare
    /// the nodes' beliefs with.
    #[must_use]
    pub fn writes(&self) -> Vec<AppliedWrite> {
        self.shared.lock().writes.clone()
    }

    /// Requests the store holds right now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Executes `op` on the bucket at once, without network or faults (to
    /// seed a bucket, or for a checker's reads). Writes are logged with
    /// [`WriteFate::Direct`] and client [`CONTROL_CLIENT`]. Not counted in
    /// [`S3Stats::ops`].
    pub fn apply(&self, op: ObjectOp) -> ObjectResult {
        let mut s = self.shared.lock();
        let result = s.bucket.execute(op.clone());
        if result.is_ok() && matches!(op, ObjectOp::Put { .. } | ObjectOp::Delete { .. }) {
            let now = Instant::now();
            let etag = put_etag(&result);
            s.log_write(AppliedWrite {
                request_id: 0,
                client: Arc::from(CONTROL_CLIENT),
                from: None,
                arrived_at: now,
                at: now,
                op,
                etag,
                late: false,
                fate: WriteFate::Direct,
            });
        }
        result
    }
}
