//! The world of a bucket scenario: the fake S3, the t4 nodes on it, the
//! recorded clients, and the end of every run (settle the bucket, start a
//! fresh node on it, read its state back).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};
use madsim::time::sleep;
use t4_core::kv::{RangeRequest, RangeResponse};
use t4_core::node::BucketConfig;
use t4_core::object::MemBucket;
use t4_core::NodeConfig;
use t4_io_sim::client::Client;
use t4_io_sim::disk::Disk;
use t4_io_sim::proto::{Reply, Request, NODE_PORT};
use t4_io_sim::s3::{FakeS3, S3Faults, S3_IP};
use t4_io_sim::server::{serve, Bugs, NodeStatus, ServerConfig, ServerContext, StatusCell};
use t4_io_sim::wal::Ledger;

use super::{CheckpointPlan, Kind, Violation};
use crate::history::{Call, Return};
use crate::workload::{self, recorded_call, ClientConfig, Mix, Recorder};

/// The nodes' `unavailable_after`: an upload failing this long answers its
/// writers `Timeout` and refuses new writes until the bucket answers.
pub const UNAVAILABLE_AFTER: Duration = Duration::from_secs(3);
/// How long the driver waits for one object-store operation.
pub const OBJECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the fresh node of the final check runs.
const FINAL_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
/// Pause between a client's operations (uniform in 0..THINK).
const THINK: Duration = Duration::from_millis(400);

/// One t4 node process and what outlives it.
pub(super) struct SimNode {
    pub(super) name: &'static str,
    pub(super) ip: Ipv4Addr,
    pub(super) handle: NodeHandle,
    pub(super) disk: Disk,
    pub(super) status: StatusCell,
}

/// Everything a scenario plays with.
pub(super) struct World {
    pub(super) s3: FakeS3,
    pub(super) rec: Arc<Recorder>,
    pub(super) bugs: Bugs,
    pub(super) checkpoints: CheckpointPlan,
    /// Scenario events (crashes, outages …) by kind.
    pub(super) events: BTreeMap<&'static str, u64>,
    /// Found while the run was on.
    pub(super) violations: Vec<Violation>,
    /// How long clients wait for an answer.
    pub(super) client_timeout: Duration,
    next_client: usize,
    next_probe: u8,
}

/// What the fresh node at the end of a run found and served.
pub(super) struct FinalRead {
    /// Its whole state, or why it could not be read.
    pub(super) state: Result<RangeResponse, String>,
    /// Its status (what its restore did).
    pub(super) status: NodeStatus,
    /// The bucket just before it started (what its restore chose from).
    pub(super) bucket_before: MemBucket,
}

/// A node's configuration in every scenario. Checkpoints are taken by
/// entries only (the interval is longer than any run).
fn node_config(bugs: Bugs, checkpoints: CheckpointPlan) -> ServerConfig {
    ServerConfig {
        core: NodeConfig {
            bucket: Some(BucketConfig {
                unavailable_after_ns: u64::try_from(UNAVAILABLE_AFTER.as_nanos())
                    .expect("a few seconds"),
                checkpoint_every_entries: checkpoints.every_entries,
                gc_keep: checkpoints.gc_keep,
                ..BucketConfig::default()
            }),
            trim_every_entries: 200,
            ..ServerConfig::default().core
        },
        object_timeout: OBJECT_TIMEOUT,
        bugs,
        checkpoint_failure_rate: checkpoints.take_failure_rate,
        ..ServerConfig::default()
    }
}

impl World {
    /// The fake S3 with `faults`, no node yet. Call inside the runtime.
    pub(super) fn new(
        faults: S3Faults,
        bugs: Bugs,
        checkpoints: CheckpointPlan,
        client_timeout: Duration,
    ) -> World {
        World {
            s3: FakeS3::start(IpAddr::V4(S3_IP), faults),
            rec: Recorder::new(),
            bugs,
            checkpoints,
            events: BTreeMap::new(),
            violations: Vec::new(),
            client_timeout,
            next_client: 0,
            next_probe: 1,
        }
    }

    pub(super) fn count(&mut self, kind: &'static str) {
        *self.events.entry(kind).or_default() += 1;
        self.rec.trace(("event", kind));
    }

    pub(super) fn violation(&mut self, kind: Kind, detail: String) {
        self.violations.push(Violation { kind, detail });
    }

    /// Starts a t4 node named `name` at `ip` on `disk` and the bucket.
    pub(super) fn start_node(&self, name: &'static str, ip: Ipv4Addr, disk: Disk) -> SimNode {
        let status = StatusCell::default();
        let ctx = ServerContext {
            disk: disk.clone(),
            ledger: Ledger::new(),
            config: node_config(self.bugs, self.checkpoints),
            status: status.clone(),
            bucket: Some((self.s3.client(name), name.to_owned())),
        };
        let handle = Handle::current()
            .create_node()
            .name(name)
            .ip(IpAddr::V4(ip))
            .init(move || serve(ctx.clone()))
            .build();
        SimNode {
            name,
            ip,
            handle,
            disk,
            status,
        }
    }

    /// Starts `n` recorded clients on machines of their own, talking to
    /// the node at `ip` until the recorder says stop; half run the etcd
    /// mix, half the Kubernetes one. Returns their ids.
    pub(super) fn start_clients(&mut self, ip: Ipv4Addr, n: usize) -> Vec<usize> {
        let node = SocketAddr::new(IpAddr::V4(ip), NODE_PORT);
        (0..n)
            .map(|i| {
                let id = self.next_client;
                self.next_client += 1;
                let cfg = ClientConfig {
                    id,
                    node,
                    mix: if i % 2 == 0 {
                        Mix::Etcd
                    } else {
                        Mix::Kubernetes
                    },
                    timeout: self.client_timeout,
                    think: THINK,
                    compact_rate: 0.01,
                    serializable_rate: 0.0,
                };
                let machine = Handle::current()
                    .create_node()
                    .name(format!("client-{id}"))
                    .ip(client_ip(id))
                    .build();
                machine.spawn(workload::run_client(cfg, Arc::clone(&self.rec)));
                id
            })
            .collect()
    }

    /// A machine of its own for a probe or a check (its own IP).
    pub(super) fn probe_machine(&mut self, name: &str) -> NodeHandle {
        let n = self.next_probe;
        self.next_probe += 1;
        Handle::current()
            .create_node()
            .name(format!("{name}-{n}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, n)))
            .build()
    }

    /// A client id for a probe's recorded calls (after every workload
    /// client's).
    pub(super) fn probe_client_id(&mut self) -> usize {
        1_000 + usize::from(self.next_probe)
    }

    /// Kills `node`, crashes its disk (unsynced bytes are lost), restarts
    /// it after `downtime`.
    pub(super) async fn crash(&mut self, node: &SimNode, downtime: Duration) {
        self.count("crash");
        let handle = Handle::current();
        handle.kill(node.handle.id());
        node.disk.crash();
        sleep(downtime).await;
        handle.restart(node.handle.id());
        // Let the new process start (and reset its status).
        sleep(Duration::from_millis(1)).await;
    }

    /// Stops the clients and lets them finish their last call.
    pub(super) async fn stop_clients(&self) {
        self.rec.stop.store(true, Ordering::Relaxed);
        sleep(self.client_timeout + Duration::from_secs(1)).await;
    }

    /// The end of every run, first half: kills `nodes` and lets every
    /// request the store still holds land or fail.
    pub(super) async fn settle(&mut self, nodes: &[&SimNode]) -> Result<(), String> {
        let handle = Handle::current();
        for node in nodes {
            handle.kill(node.handle.id());
        }
        self.s3.set_faults(S3Faults::none());
        // A request a node sent just before it died may still be on the
        // network, not yet counted as in flight: let it arrive (zombie seed
        // 199 snapshotted the bucket before a manifest put landed).
        sleep(Duration::from_secs(1)).await;
        // Late landings are held for up to a minute.
        for _ in 0..1_200 {
            if self.s3.in_flight() == 0 {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        if self.s3.in_flight() != 0 {
            return Err(format!(
                "the fake S3 still holds {} requests 2 minutes after the nodes died",
                self.s3.in_flight()
            ));
        }
        Ok(())
    }

    /// The end of every run, second half: starts a fresh node on a wiped
    /// disk on the bucket and reads its whole state.
    pub(super) async fn read_fresh(&mut self) -> FinalRead {
        let bucket_before = self.s3.bucket();
        let fresh = self.start_node("final", FINAL_IP, Disk::new());
        let state = self.read_whole(&fresh).await;
        Handle::current().kill(fresh.handle.id());
        FinalRead {
            state,
            status: fresh.status.get(),
            bucket_before,
        }
    }

    async fn read_whole(&mut self, fresh: &SimNode) -> Result<RangeResponse, String> {
        wait_serving(&fresh.status, 1, "a fresh node on the bucket").await?;
        let checker = self.probe_machine("checker");
        let ip = fresh.ip;
        checker
            .spawn(async move {
                let mut client = Client::bind(SocketAddr::new(IpAddr::V4(ip), NODE_PORT))
                    .await
                    .expect("bind");
                let everything = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..RangeRequest::default()
                };
                let mut last = None;
                for _ in 0..20 {
                    last = client
                        .call(Request::Range(everything.clone()), Duration::from_secs(3))
                        .await;
                    if let Some(Ok(Reply::Range(r))) = last {
                        return Ok(r);
                    }
                }
                Err(format!("the fresh node did not answer a read: {last:?}"))
            })
            .await
            .map_err(|e| format!("checker task: {e}"))?
    }

    /// A probe on a machine of its own: puts unique values to the node at
    /// `ip` (recorded like any client's calls) until one succeeds or
    /// `give_up` passes. Returns when the successful put was answered
    /// (nanoseconds since the start of the run).
    pub(super) async fn probe_write(&mut self, ip: Ipv4Addr, give_up: Duration) -> Option<u64> {
        let id = self.probe_client_id();
        let machine = self.probe_machine("probe");
        let rec = Arc::clone(&self.rec);
        let timeout = self.client_timeout;
        machine
            .spawn(async move {
                let mut client = Client::bind(SocketAddr::new(IpAddr::V4(ip), NODE_PORT))
                    .await
                    .expect("bind");
                let until = madsim::time::Instant::now() + give_up;
                let mut n = 0;
                while madsim::time::Instant::now() < until {
                    n += 1;
                    let put =
                        Call::Write(t4_core::kv::WriteRequest::Put(t4_core::kv::PutRequest {
                            key: format!("probe/{id}").into_bytes(),
                            value: format!("p{id}-{n}").into_bytes(),
                            ..Default::default()
                        }));
                    if let Return::Write(Ok(_)) =
                        recorded_call(&mut client, &rec, id, put, timeout).await
                    {
                        return Some(rec.now());
                    }
                    sleep(Duration::from_millis(50)).await;
                }
                None
            })
            .await
            .expect("the probe machine is never killed")
    }
}

fn client_ip(id: usize) -> IpAddr {
    let n = u8::try_from(id + 1).expect("fewer than 255 clients");
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

/// Waits until incarnation `incarnation` (or a later one) of a node
/// serves, for at most 150 s: the start-up may wait for a request of a dead
/// predecessor that the store holds (late landings, up to a minute) — its
/// conditional puts on that key are answered 409 until it lands — and then
/// for its own fence, which the store may hold as long (zombie seed 177
/// drew 47 s then 52 s).
pub(super) async fn wait_serving(
    status: &StatusCell,
    incarnation: u64,
    what: &str,
) -> Result<(), String> {
    for _ in 0..1_500 {
        let s = status.get();
        if let Some(why) = s.refused {
            return Err(format!("{what} refused to start: {why}"));
        }
        if s.serving && s.incarnation >= incarnation {
            return Ok(());
        }
        sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{what} did not serve within 150 s: {:?}",
        status.get()
    ))
}
