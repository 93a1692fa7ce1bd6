//! One seeded run: a node, its clients and watchers, a fault schedule, then
//! the checks.
//!
//! # Timeline
//!
//! ```text
//! 0 ─────── chaos (faults on) ─────── duration-quiet ─── quiet ─── duration ─ drain ─ end
//!                                      faults healed,     clients   clients    watchers
//!                                      node (re)started   go on     stop       stop; probe
//! ```
//!
//! # Faults (swarm testing)
//!
//! Each seed draws which fault kinds are on and how often ([`Swarm`]), so
//! that some seeds hammer one fault and others mix several: crashes (kill
//! the process, the disk loses unsynced bytes, restart after a random
//! downtime), torn writes, fsync and write errors (the node exits; a
//! supervisor restarts it), process pauses, packet loss, latency spread
//! (reordering), client↔node partitions, duplicated replies, short client
//! timeouts, clock drift. Disk loss is a separate kind of run
//! ([`RunConfig::disk_loss`]): in local mode it loses data by definition,
//! so the run checks the history before it and that the node comes back
//! empty, never half a state.
//!
//! # Checks
//!
//! - per node: applied ≤ last index, revisions never go back (the server
//!   publishes violations), recovery never refuses a disk the node wrote;
//! - no acknowledged write lost: every acknowledged put's value is in the
//!   final log at the acknowledged revision;
//! - linearizability of the client history ([`crate::lincheck`]);
//! - watch guarantees against the final log ([`crate::watchcheck`]);
//! - liveness: after the faults stop, a probe write and read succeed within
//!   a bound and the node has nothing pending.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::sleep;
use t4_core::kv::{Op as TxnOp, RangeRequest, WriteRequest, WriteResponse};
use t4_io_sim::client::Client;
use t4_io_sim::clock::ClockConfig;
use t4_io_sim::disk::{Disk, DiskFaults};
use t4_io_sim::proto::NODE_PORT;
use t4_io_sim::server::{serve, Bugs, Phase, ServerConfig, ServerContext, StatusCell};
use t4_io_sim::wal::Ledger;

use crate::history::{Call, Op, Return};
use crate::leasecheck::{check_leases, NodeEvents, Outage};
use crate::lincheck::{self, CheckConfig, Verdict};
use crate::truth::Truth;
use crate::watchcheck;
use crate::workload::{
    self, recorded_call, ClientConfig, LeaseClientConfig, Mix, Recorder, WatcherConfig,
};

/// What a run does. [`RunConfig::for_seed`] gives the CI settings.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The seed (madsim's RNG and every choice below).
    pub seed: u64,
    /// Simulated length of the run, quiet period included.
    pub duration: Duration,
    /// Fault-free time at the end of the run.
    pub quiet: Duration,
    /// etcd-mix clients.
    pub etcd_clients: usize,
    /// Kubernetes-mix clients.
    pub kube_clients: usize,
    /// List+watch watchers.
    pub watchers: usize,
    /// Lease clients (grant, attach, keep alive, revoke or let expire).
    pub lease_clients: usize,
    /// Deliberate bugs (for the tests that prove the checkers bite).
    pub bugs: Bugs,
    /// A fake disk whose fsync lies (same purpose).
    pub fsync_lies: bool,
    /// Lose the disk once, mid-run.
    pub disk_loss: bool,
    /// Linearizability checker budget.
    pub check: CheckConfig,
}

impl RunConfig {
    /// The default run for `seed`.
    #[must_use]
    pub fn for_seed(seed: u64) -> RunConfig {
        RunConfig {
            seed,
            duration: Duration::from_secs(60),
            quiet: Duration::from_secs(8),
            etcd_clients: 4,
            kube_clients: 3,
            watchers: 2,
            lease_clients: 1,
            bugs: Bugs::default(),
            fsync_lies: false,
            disk_loss: false,
            check: CheckConfig {
                max_steps: std::env::var("SIM_CHECK_STEPS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(2_000_000),
            },
        }
    }
}

/// Which faults a seed turns on, and how often (per simulated second).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Swarm {
    /// Process crashes per second.
    pub crash_rate: f64,
    /// Process pauses per second.
    pub pause_rate: f64,
    /// Client↔node partitions per second.
    pub partition_rate: f64,
    /// Disk faults.
    pub disk: DiskFaults,
    /// Datagram loss probability.
    pub packet_loss: f64,
    /// Datagram latency range.
    pub latency: (Duration, Duration),
    /// Probability a reply is duplicated.
    pub duplicate_reply_rate: f64,
    /// Client timeout.
    pub client_timeout: Duration,
    /// Node clock drift.
    pub drift_ppm: i64,
}

impl Swarm {
    /// Draws the fault mix of a seed (from madsim's seeded RNG).
    #[must_use]
    pub fn draw() -> Swarm {
        let mut rng = thread_rng();
        let mut on = |p: f64| rng.gen_bool(p);
        let crash = on(0.6);
        let pause = on(0.3);
        let partition = on(0.3);
        let torn = on(0.5);
        let fsync_err = on(0.25);
        let write_err = on(0.15);
        let loss = on(0.3);
        let spread = on(0.5);
        let dup = on(0.3);
        let short_timeouts = on(0.3);
        let drift = on(0.3);
        let mut rng = thread_rng();
        Swarm {
            crash_rate: if crash { rng.gen_range(0.02..0.3) } else { 0.0 },
            pause_rate: if pause { rng.gen_range(0.02..0.2) } else { 0.0 },
            partition_rate: if partition {
                rng.gen_range(0.02..0.2)
            } else {
                0.0
            },
            disk: DiskFaults {
                torn_writes: torn,
                fsync_error_rate: if fsync_err {
                    rng.gen_range(0.0005..0.01)
                } else {
                    0.0
                },
                write_error_rate: if write_err {
                    rng.gen_range(0.0005..0.005)
                } else {
                    0.0
                },
                fsync_lies: false,
            },
            packet_loss: if loss {
                rng.gen_range(0.001..0.05)
            } else {
                0.0
            },
            latency: if spread {
                (
                    Duration::from_micros(50),
                    Duration::from_millis(rng.gen_range(2..40)),
                )
            } else {
                (Duration::from_micros(20), Duration::from_micros(200))
            },
            duplicate_reply_rate: if dup { rng.gen_range(0.01..0.2) } else { 0.0 },
            client_timeout: if short_timeouts {
                Duration::from_millis(rng.gen_range(20..200))
            } else {
                Duration::from_secs(2)
            },
            drift_ppm: if drift { rng.gen_range(-500..500) } else { 0 },
        }
    }
}

/// Counts of injected faults by kind.
pub type FaultCounts = BTreeMap<&'static str, u64>;

/// Several runs' faults summed by kind, as a summary line shows them
/// (`kind=n`, space-separated, kinds in order).
pub fn faults_line<'a>(runs: impl IntoIterator<Item = &'a FaultCounts>) -> String {
    let mut total = FaultCounts::new();
    for faults in runs {
        for (kind, n) in faults {
            *total.entry(kind).or_default() += n;
        }
    }
    total
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Simulated time, in seconds.
    pub sim_secs: f64,
    /// Client operations issued.
    pub ops: usize,
    /// … answered with success.
    pub ok: usize,
    /// … answered with a definite failure.
    pub failed: usize,
    /// … whose outcome is unknown.
    pub unknown: usize,
    /// Operations the linearizability checker placed.
    pub checked: usize,
    /// Checker steps.
    pub steps: u64,
    /// The checker ran out of budget.
    pub checker_unknown: bool,
    /// Unknown writes the final log settled (took effect / did not).
    pub resolved: usize,
    /// Leases whose expiry was checked.
    pub leases: usize,
    /// Lease revokes of expired leases added to the history.
    pub internal_revokes: usize,
    /// Watch events validated.
    pub watch_events: usize,
    /// Watches checked.
    pub watches: usize,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// The trace hash (same seed, same hash).
    pub trace: u64,
    /// What went wrong, if anything (one entry per failed check).
    pub violations: Vec<String>,
    /// The fault mix.
    pub swarm: Swarm,
    /// Wall time of the simulation and of the linearizability check, in seconds.
    pub wall_sim_secs: f64,
    /// Wall time of the linearizability check, in seconds.
    pub wall_check_secs: f64,
}

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn client_ip(n: usize) -> IpAddr {
    let n = u8::try_from(n + 1).expect("fewer than 255 clients");
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

/// Runs one seed to completion inside a fresh madsim runtime.
#[must_use]
pub fn run(config: &RunConfig) -> RunReport {
    let _log = crate::simlog::install();
    let mut rt =
        madsim::runtime::Runtime::with_seed_and_config(config.seed, madsim::Config::default());
    rt.set_time_limit(config.duration + Duration::from_secs(120));
    let wall = std::time::Instant::now();
    let cfg = config.clone();
    let (mut report, ops) = rt.block_on(async move { run_in_sim(cfg).await });
    report.wall_sim_secs = wall.elapsed().as_secs_f64();
    let wall = std::time::Instant::now();
    let result = lincheck::check(&ops, &config.check);
    report.wall_check_secs = wall.elapsed().as_secs_f64();
    report.checked = result.ops_checked;
    report.steps = result.steps;
    match result.verdict {
        Verdict::Linearizable => {}
        Verdict::Unknown => report.checker_unknown = true,
        Verdict::NotLinearizable(why) => {
            report.violations.push(format!("not linearizable:\n{why}"))
        }
    }
    report
}

struct World {
    node: NodeHandle,
    disk: Disk,
    status: StatusCell,
    swarm: Swarm,
    faults: FaultCounts,
    rec: Arc<Recorder>,
    violations: Vec<String>,
    events: NodeEvents,
}

impl World {
    fn count(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
        self.rec.trace(("fault", kind));
    }

    async fn crash_and_restart(&mut self, downtime: Duration) {
        self.crash_and_restart_since(self.rec.now(), downtime).await;
    }

    /// Kills, crashes the disk, restarts after `downtime`; the node has not
    /// been acting since `since`.
    async fn crash_and_restart_since(&mut self, since: u64, downtime: Duration) {
        match self.status.get().phase {
            Phase::Fsync => self.count("crash-during-fsync"),
            Phase::Replying => self.count("crash-while-replying"),
            Phase::Idle => {}
        }
        let handle = Handle::current();
        handle.kill(self.node.id());
        self.disk.crash();
        sleep(downtime).await;
        handle.restart(self.node.id());
        self.events.outages.push(Outage {
            start: since,
            end: self.rec.now(),
            restart: true,
        });
        // Let the new process start (and reset its status) before anyone
        // looks at it again.
        sleep(Duration::from_millis(1)).await;
    }
}

async fn run_in_sim(config: RunConfig) -> (RunReport, Vec<Op>) {
    let swarm = Swarm::draw();
    let net = NetSim::current();
    net.update_config(|c| {
        c.packet_loss_rate = swarm.packet_loss;
        c.send_latency = swarm.latency.0..swarm.latency.1;
    });
    let ledger = Ledger::new();
    let rec = Recorder::new();
    let mut world = start_node(&config, &swarm, &ledger, &rec);
    let clients = start_clients(&config, &swarm, &rec);

    let chaos_until = config.duration.saturating_sub(config.quiet);
    let disk_loss_at = config.disk_loss.then(|| {
        Duration::from_millis(thread_rng().gen_range(5_000..chaos_until.as_millis() as u64))
    });
    let ids: Vec<_> = clients.iter().map(NodeHandle::id).collect();
    let truth_before_loss = chaos(&mut world, chaos_until, disk_loss_at, &ids, &ledger).await;
    let mut violations = std::mem::take(&mut world.violations);
    quiesce(&config, &mut world, &ids, &mut violations).await;

    let end = rec.now();
    let recorded = rec.take();
    let mut report = RunReport {
        seed: config.seed,
        sim_secs: end as f64 / 1e9,
        swarm,
        trace: recorded.trace,
        ..RunReport::default()
    };
    let mut ops = recorded.ops;
    let mut watches = recorded.watches;
    let entries = match truth_before_loss {
        Some((entries, lost_at)) => {
            // Only what happened before the loss can be checked.
            ops.retain(|op| op.call_at < lost_at);
            for op in &mut ops {
                if op.return_at.is_some_and(|r| r >= lost_at) {
                    op.return_at = None;
                    op.ret = Return::Unknown;
                }
            }
            watches.clear();
            entries
        }
        None => {
            let mut revoked = BTreeMap::new();
            for (entry, at) in ledger.entries_with_time() {
                if let Some(t4_core::log::Payload::LeaseRevoke(r)) = &entry.payload {
                    revoked.entry(r.id).or_insert(rec.since_start(at));
                }
            }
            match check_leases(&recorded.leases, &revoked, &world.events, end) {
                Ok(n) => report.leases = n,
                Err(e) => violations.push(format!("lease: {e}")),
            }
            ledger.entries()
        }
    };
    for op in &ops {
        report.ops += 1;
        match &op.ret {
            Return::Unknown | Return::Applied { .. } => report.unknown += 1,
            Return::Range(Ok(_)) | Return::Write(Ok(_)) => report.ok += 1,
            _ => report.failed += 1,
        }
    }
    check_against_log(&entries, &mut ops, &watches, &mut report, &mut violations);
    count_faults(&world, &mut report);
    report.violations = violations;
    (report, ops)
}

/// The node (its disk, the run's ledger, its status), started.
fn start_node(config: &RunConfig, swarm: &Swarm, ledger: &Ledger, rec: &Arc<Recorder>) -> World {
    let disk = Disk::new();
    disk.set_faults(DiskFaults {
        fsync_lies: config.fsync_lies,
        ..swarm.disk.clone()
    });
    let status = StatusCell::default();
    let ctx = ServerContext {
        disk: disk.clone(),
        ledger: ledger.clone(),
        config: ServerConfig {
            clock: ClockConfig {
                drift_ppm: swarm.drift_ppm,
                wall_offset_ms: 0,
            },
            duplicate_reply_rate: swarm.duplicate_reply_rate,
            bugs: config.bugs,
            ..ServerConfig::default()
        },
        status: status.clone(),
        bucket: None,
    };
    let node = Handle::current()
        .create_node()
        .name("t4")
        .ip(IpAddr::V4(NODE_IP))
        .init(move || serve(ctx.clone()))
        .build();
    World {
        node,
        disk,
        status,
        swarm: swarm.clone(),
        faults: FaultCounts::new(),
        rec: Arc::clone(rec),
        violations: Vec::new(),
        events: NodeEvents::default(),
    }
}

/// Every client on a madsim node of its own (so partitions can cut one
/// off): the etcd and Kubernetes mixes, the watchers, the lease clients.
fn start_clients(config: &RunConfig, swarm: &Swarm, rec: &Arc<Recorder>) -> Vec<NodeHandle> {
    let node = SocketAddr::new(IpAddr::V4(NODE_IP), NODE_PORT);
    let spawn = |name: String, id: usize| {
        Handle::current()
            .create_node()
            .name(name)
            .ip(client_ip(id))
            .build()
    };
    let mut clients = Vec::new();
    let mixes = config.etcd_clients + config.kube_clients;
    for id in 0..mixes {
        let mix = if id < config.etcd_clients {
            Mix::Etcd
        } else {
            Mix::Kubernetes
        };
        let cfg = ClientConfig {
            id,
            node,
            mix,
            timeout: swarm.client_timeout,
            think: Duration::from_millis(1_200),
            compact_rate: 0.01,
            serializable_rate: 0.0,
        };
        let c = spawn(format!("client-{id}"), id);
        c.spawn(workload::run_client(cfg, Arc::clone(rec)));
        clients.push(c);
    }
    for w in 0..config.watchers {
        let id = mixes + w;
        let cfg = WatcherConfig {
            id,
            node,
            timeout: Duration::from_secs(2),
        };
        let c = spawn(format!("watcher-{w}"), id);
        c.spawn(workload::run_watcher(cfg, Arc::clone(rec)));
        clients.push(c);
    }
    for l in 0..config.lease_clients {
        let id = mixes + config.watchers + l;
        let cfg = LeaseClientConfig {
            id,
            node,
            timeout: swarm.client_timeout,
        };
        let c = spawn(format!("leases-{l}"), id);
        c.spawn(workload::run_lease_client(cfg, Arc::clone(rec)));
        clients.push(c);
    }
    clients
}

/// After the chaos: heal everything, let the clients run through the quiet
/// period, stop them, probe liveness, let the watchers catch up, and check
/// the node's own state.
async fn quiesce(
    config: &RunConfig,
    world: &mut World,
    clients: &[madsim::task::NodeId],
    violations: &mut Vec<String>,
) {
    let net = NetSim::current();
    for id in clients {
        net.unclog_node(*id);
    }
    net.unclog_node(world.node.id());
    net.update_config(|c| c.packet_loss_rate = 0.0);
    ensure_up(world).await;
    sleep(config.quiet).await;
    let rec = Arc::clone(&world.rec);
    rec.stop.store(true, Ordering::Relaxed);
    // Clients finish their last call (at most one timeout).
    sleep(world.swarm.client_timeout + Duration::from_millis(500)).await;
    let node = SocketAddr::new(IpAddr::V4(NODE_IP), NODE_PORT);
    if let Err(e) = liveness_probe(node, Arc::clone(&rec)).await {
        violations.push(format!("liveness: {e}"));
    }
    sleep(Duration::from_secs(2)).await;
    rec.end.store(true, Ordering::Relaxed);
    sleep(Duration::from_secs(1)).await;

    // Whatever is in flight now (an expiry's revoke, say) completes within
    // a bound.
    let mut status = world.status.get();
    for _ in 0..500 {
        if status.pending == 0 {
            break;
        }
        sleep(Duration::from_millis(10)).await;
        status = world.status.get();
    }
    if let Some(v) = &status.invariant_violation {
        violations.push(format!("node invariant: {v}"));
    }
    if let Some(r) = &status.refused {
        violations.push(format!("the node refused to start on its own disk: {r}"));
    }
    if status.pending != 0 {
        violations.push(format!(
            "liveness: {} writes still pending 5 s after the quiet period ({status:?})",
            status.pending
        ));
    }
}

/// The checks against the final log: no acknowledged write lost, the watch
/// guarantees, and (after settling what the log settles) the history for
/// the linearizability checker in `ops`.
fn check_against_log(
    entries: &[t4_core::log::Entry],
    ops: &mut Vec<Op>,
    watches: &[crate::history::WatchRecord],
    report: &mut RunReport,
    violations: &mut Vec<String>,
) {
    let truth = match crate::truth::replay(entries) {
        Ok(truth) => truth,
        Err(e) => return violations.push(format!("the final log does not replay: {e}")),
    };
    check_acknowledged(&truth, ops, violations);
    let resolved = crate::resolve::resolve(ops, entries, &truth);
    report.resolved = resolved.applied + resolved.dropped;
    report.internal_revokes = resolved.internal;
    if std::env::var_os("SIM_DEBUG").is_some() {
        for e in entries {
            let line = format!("{:?} -> {:?}", e.payload, truth.outcome(e.index));
            eprintln!("log {}: {}", e.index, &line[..line.len().min(300)]);
        }
        for (i, op) in ops.iter().enumerate() {
            eprintln!("op {i}: {op:?}");
        }
    }
    match watchcheck::check_all(&truth, watches) {
        Ok(stats) => {
            report.watch_events = stats.events_validated;
            report.watches = stats.watches;
        }
        Err(v) => violations.push(format!("watch: {v}")),
    }
}

/// Faults the node, disk and network counted, added to the run's own.
fn count_faults(world: &World, report: &mut RunReport) {
    report.faults.clone_from(&world.faults);
    let mut add = |kind: &'static str, n: u64| {
        if n > 0 {
            *report.faults.entry(kind).or_default() += n;
        }
    };
    let disk = world.disk.stats();
    add("fsync-error", disk.fsync_errors);
    add("write-error", disk.write_errors);
    add("torn-write", disk.torn);
    add("duplicate-reply", world.status.get().duplicated_replies);
    // madsim counts datagrams but not the ones it drops: an estimate.
    add(
        "datagram-loss~",
        (NetSim::current().stat().msg_count as f64 * report.swarm.packet_loss).round() as u64,
    );
    add("unanswered", report.unknown as u64);
}

/// The chaos phase. Returns the ledger and time of a disk loss, if one
/// happened.
async fn chaos(
    world: &mut World,
    until: Duration,
    disk_loss_at: Option<Duration>,
    clients: &[madsim::task::NodeId],
    ledger: &Ledger,
) -> Option<(Vec<t4_core::log::Entry>, u64)> {
    let swarm = world.swarm.clone();
    let rate = swarm.crash_rate + swarm.pause_rate + swarm.partition_rate;
    let start = madsim::time::Instant::now();
    let mut lost = None;
    loop {
        // Supervisor: a node that exited after a failed write path is
        // restarted (its disk crashes with it: the exit loses the page cache
        // as far as we are concerned).
        let tick = Duration::from_millis(100);
        let elapsed = start.elapsed();
        if elapsed >= until {
            return lost;
        }
        if let Some(at) = world.status.get().failed_at {
            world.count("node-exit");
            let downtime = Duration::from_millis(thread_rng().gen_range(10..1_000));
            let since = world.rec.since_start(at);
            world.crash_and_restart_since(since, downtime).await;
            continue;
        }
        if lost.is_none() && disk_loss_at.is_some_and(|at| elapsed >= at) {
            let lost_at = world.rec.now();
            let handle = Handle::current();
            handle.kill(world.node.id());
            let entries = ledger.entries();
            world.disk.lose();
            ledger.clear();
            world.count("disk-loss");
            sleep(Duration::from_millis(500)).await;
            let before = world.status.get().incarnation;
            handle.restart(world.node.id());
            for _ in 0..1_000 {
                let s = world.status.get();
                if s.incarnation > before && (s.serving || s.refused.is_some()) {
                    break;
                }
                sleep(Duration::from_millis(1)).await;
            }
            // It starts empty and serves nothing of the old state (or
            // refuses to start, saying why) — never half a state.
            let s = world.status.get();
            if s.refused.is_none() && (s.applied_index != 0 || s.revision != 1) {
                world.violations.push(format!(
                    "after disk loss the node started with applied index {} at revision {}, not empty",
                    s.applied_index, s.revision
                ));
            }
            lost = Some((entries, lost_at));
            continue;
        }
        if rate > 0.0 && thread_rng().gen_bool((rate * tick.as_secs_f64()).min(1.0)) {
            let pick = thread_rng().gen_range(0.0..rate);
            if pick < swarm.crash_rate {
                world.count("crash");
                // Half the crashes aim at the write path: during an fsync
                // (appended, not yet durable) or between the fsync and the
                // replies (durable, not yet acknowledged).
                if thread_rng().gen_bool(0.5) {
                    let want = if thread_rng().gen_bool(0.5) {
                        Phase::Fsync
                    } else {
                        Phase::Replying
                    };
                    let give_up = madsim::time::Instant::now() + Duration::from_secs(2);
                    while madsim::time::Instant::now() < give_up {
                        let s = world.status.get();
                        if s.phase == want || !s.serving {
                            break;
                        }
                        sleep(Duration::from_micros(50)).await;
                    }
                }
                let downtime = Duration::from_millis(thread_rng().gen_range(1..3_000));
                world.crash_and_restart(downtime).await;
            } else if pick < swarm.crash_rate + swarm.pause_rate {
                world.count("pause");
                let handle = Handle::current();
                let since = world.rec.now();
                handle.pause(world.node.id());
                sleep(Duration::from_millis(thread_rng().gen_range(10..3_000))).await;
                handle.resume(world.node.id());
                world.events.outages.push(Outage {
                    start: since,
                    end: world.rec.now(),
                    restart: false,
                });
            } else {
                world.count("partition");
                let net = NetSim::current();
                let victim = clients[thread_rng().gen_range(0..clients.len())];
                net.clog_node(victim);
                sleep(Duration::from_millis(thread_rng().gen_range(10..3_000))).await;
                net.unclog_node(victim);
            }
            continue;
        }
        sleep(tick).await;
    }
}

/// After the chaos: the node is running (restarted if it exited).
async fn ensure_up(world: &mut World) {
    for _ in 0..50 {
        let s = world.status.get();
        if let Some(at) = s.failed_at {
            // Stop injecting disk faults, then restart.
            world.disk.set_faults(DiskFaults {
                fsync_lies: world.disk.faults().fsync_lies,
                ..DiskFaults::default()
            });
            let since = world.rec.since_start(at);
            world
                .crash_and_restart_since(since, Duration::from_millis(100))
                .await;
        }
        if world.status.get().serving {
            world.disk.set_faults(DiskFaults {
                fsync_lies: world.disk.faults().fsync_lies,
                ..DiskFaults::default()
            });
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// A write and a read from a fresh client must succeed within a bound once
/// the faults stopped.
async fn liveness_probe(node: SocketAddr, rec: Arc<Recorder>) -> Result<(), String> {
    const PROBE: usize = 250;
    let handle = Handle::current();
    let probe = handle
        .create_node()
        .name("probe")
        .ip(client_ip(PROBE))
        .build();
    let task = probe.spawn(async move {
        let mut client = Client::bind(node).await.map_err(|e| e.to_string())?;
        let timeout = Duration::from_secs(10);
        // Recorded like any client's calls: the probe's write takes a revision.
        let put = Call::Write(WriteRequest::Put(t4_core::kv::PutRequest {
            key: b"probe".to_vec(),
            value: b"probe".to_vec(),
            ..Default::default()
        }));
        match recorded_call(&mut client, &rec, PROBE, put, timeout).await {
            Return::Write(Ok(_)) => {}
            other => return Err(format!("probe put: {other:?}")),
        }
        let get = Call::Range(RangeRequest {
            key: b"probe".to_vec(),
            ..RangeRequest::default()
        });
        match recorded_call(&mut client, &rec, PROBE, get, timeout).await {
            Return::Range(Ok(r)) if r.kvs.len() == 1 => Ok(()),
            other => Err(format!("probe get: {other:?}")),
        }
    });
    task.await.map_err(|e| format!("probe task: {e:?}"))?
}

/// Every acknowledged put (alone or in a txn's success branch) is in the
/// final log at the acknowledged revision.
pub(crate) fn check_acknowledged(truth: &Truth, ops: &[Op], violations: &mut Vec<String>) {
    for op in ops {
        let (Call::Write(req), Return::Write(Ok(resp))) = (&op.call, &op.ret) else {
            continue;
        };
        let puts: Vec<_> = match (req, resp) {
            (WriteRequest::Put(p), WriteResponse::Put(r)) => vec![(p, r.revision)],
            (WriteRequest::Txn(t), WriteResponse::Txn(r)) => {
                let branch = if r.succeeded { &t.success } else { &t.failure };
                branch
                    .iter()
                    .filter_map(|o| match &o.op {
                        Some(TxnOp::Put(p)) => Some((p, r.revision)),
                        _ => None,
                    })
                    .collect()
            }
            _ => continue,
        };
        for (put, revision) in puts {
            if truth.find_put(&put.key, &put.value) != Some(revision) {
                violations.push(format!(
                    "acknowledged write lost: client {} put {}={} acknowledged at revision {revision}, the final log has it at {:?}",
                    op.client,
                    String::from_utf8_lossy(&put.key),
                    String::from_utf8_lossy(&put.value),
                    truth.find_put(&put.key, &put.value)
                ));
                return;
            }
        }
    }
}
