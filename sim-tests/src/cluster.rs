//! Cluster mode in the simulator: 3 or 5 t4 nodes (the real core and the
//! io-sim driver loop) sharing one fake S3 bucket for the leader lock,
//! talking over madsim's network, under seeded chaos, checked end to end.
//!
//! # A run
//!
//! 1. `n1` starts alone and bootstraps the cluster (it creates the lock);
//!    the others start one by one and join (the leader adds each to the
//!    lock's members once it has caught up).
//! 2. Recorded clients (half etcd mix, half Kubernetes mix, every value
//!    unique) talk to nodes drawn at random, followers included (their
//!    writes are forwarded to the leader, their linearizable reads go
//!    through the leader's read index).
//! 3. For [`ClusterRunConfig::chaos_secs`] the fault loop draws, every
//!    200–1,500 ms, one of:
//!    - a **crash** of one node (its unsynced bytes are lost), restarted
//!      0.5–3 s later;
//!    - a **majority losing power** at once;
//!    - a **disk loss** (the node restarts on an empty disk), only while
//!      every other node's disk is whole (none is still rejoining after a
//!      loss of its own): a majority of disks always survives;
//!    - a node **isolated** from everyone, for 1–6 s;
//!    - a **partial partition** (two nodes cut from each other, both ways)
//!      or a **one-way cut**, for 1–6 s;
//!    - a node **cut from the bucket** but not from its peers, for 1–8 s;
//!    - a **pause** of 0.5–8.5 s (past every timeout: the election timeout
//!      is 1 s, the lock TTL 5 s);
//!    - a **member removal** (`MemberRemove` of any member, the leader
//!      included, sent to any node), under the disk-loss rule and only with
//!      every member in the lock; no other removal or disk loss for 10 s,
//!      nor until the member was seen removed (a leader may retry the lock
//!      write for long on a flaky bucket; a disk lost meanwhile would leave
//!      two members, one without its disk, which by design elect no
//!      leader). A node that learns it was removed is stopped and started
//!      again 0.5–3 s later, and joins again (so the cluster is back to
//!      full size).
//!
//!    Throughout: 1 % message loss with madsim's random latency (so
//!    reordering), the fake S3's flaky faults (throttling, 500s, 409s on
//!    racing conditional puts, lost answers, late landings), and every
//!    node's clock with its own drift (±200 ppm) and a wall-clock offset of
//!    up to an hour (safety must not depend on either).
//! 4. Everything heals; the run waits (at most [`CONVERGE_WITHIN`]) for one
//!    serving leader and every node applied through its commit index;
//!    clients stop; the run waits again.
//!
//! # The checks
//!
//! - **one leader per term**: a monitor samples every node every 10 ms; two
//!   nodes serving as leader of the same term is a violation;
//! - **agreement**: every node's durable log (its [`Ledger`]) holds the same
//!   entry at every index up to the commit index, and no gap;
//! - **no acknowledged write lost**: every acknowledged put is in that log
//!   at the acknowledged revision;
//! - **linearizability** of the whole client history (all nodes' clients),
//!   after the log settled the unknown writes ([`crate::resolve`]);
//! - **per node**: no per-node invariant broken (applied index above the
//!   log, revision going back), no node failing its write path (a
//!   truncation below the applied index is one), no undecodable peer
//!   message;
//! - **liveness**: convergence after the faults stop;
//! - **lease expiry across failover** ([`crate::leasecheck`]): a lease
//!   client (on a node drawn at random, so keepalives are often forwarded)
//!   grants leases with keys, keeps some alive, lets them lapse; each lapsed
//!   lease's revoke must be durable on some node within its TTL plus slack,
//!   a deadline pushed out by every fault (until it is undone) and every
//!   gap without a serving leader (a new leader restarts every TTL, as
//!   etcd's does); a lease is never revoked before its TTL ran out since
//!   its last acknowledged keepalive, unless a restart or leader change
//!   came between;
//! - **the bucket tier** (when on): the leader uploads its whole log within
//!   [`UPLOADED_WITHIN`] after the clients stop, and the bucket's WAL then
//!   replays without a hole from index 1 (from the newest intact
//!   checkpoint with GC) through what the leader uploaded; every WAL
//!   object ever written (GC deletes what checkpoints cover) holds only
//!   the committed log's entries;
//! - **start-overs** (with GC): a member that asks to start over has a
//!   checkpoint ahead of it in the bucket ([`StartOvers`]) and none is
//!   still asking at the end.
//!
//! - **watches** (three watchers on nodes drawn at random, resuming from
//!   the next revision when their stream breaks, a third of them slow
//!   consumers): every event in order, none missing or extra, progress
//!   notifications honest ([`crate::watchcheck`]), across failovers;
//! - **serializable reads** (a fifth of the reads, answered from the
//!   node's own applied state) show some committed prefix: exactly what the
//!   committed log held at their revision ([`crate::prefixcheck`]); they
//!   are left out of the linearizability check.
//!
//! The report counts faults by kind, leader terms seen, and the failover
//! gaps (from the moment no node served as leader to the moment one did,
//! after the cluster formed), in simulated time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::sleep;
use t4_core::bucket::lock::Member;
use t4_core::cluster::{ClusterConfig, ClusterMutants, HardState};
use t4_core::log::Entry;
use t4_core::node::ClientRequest;
use t4_core::node::{BucketConfig, ClusterRole};
use t4_core::object::MemBucket;
use t4_core::types::{Index, Term};
use t4_core::NodeConfig;
use t4_io_sim::client::Client;
use t4_io_sim::clock::ClockConfig;
use t4_io_sim::disk::Disk;
use t4_io_sim::proto::{Request, NODE_PORT, PEER_PORT};
use t4_io_sim::s3::{AppliedWrite, FakeS3, S3Faults, S3_IP};
use t4_io_sim::server::{serve, Bugs, NodeStatus, ServerConfig, ServerContext, StatusCell};
use t4_io_sim::wal::Ledger;

use crate::history::Return;
use crate::leasecheck::{check_leases, NodeEvents, Outage};
use crate::lincheck::{self, CheckConfig, Verdict};
use crate::workload::{self, ClientConfig, Mix, Recorded, Recorder, WatcherConfig};

/// After the faults stop, the cluster must settle within this.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(90);

/// With the tier: how soon after the clients stopped the leader must have
/// uploaded its whole log: segments seal after 1 s, but a put the fake S3
/// holds to land late (up to 60 s) makes every other conditional put of
/// its key a 409 until it lands.
pub const UPLOADED_WITHIN: Duration = Duration::from_secs(90);
/// How long clients wait for an answer (a forwarded request times out
/// after 5 s in the follower).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause between a client's operations (uniform in 0..THINK).
const THINK: Duration = Duration::from_millis(100);

/// One run.
#[derive(Clone, Debug)]
pub struct ClusterRunConfig {
    /// The seed (every choice of the run).
    pub seed: u64,
    /// Members: 3 or 5.
    pub nodes: usize,
    /// How long the faults go on.
    pub chaos_secs: u64,
    /// Recorded clients.
    pub clients: usize,
    /// Deliberate protocol bugs (for the tests that prove the checks bite).
    pub mutants: ClusterMutants,
    /// Deliberate driver bugs (likewise).
    pub bugs: Bugs,
    /// Member removals among the faults (off: the fault sequence of runs
    /// from before they existed, for regression seeds found then).
    pub removals: bool,
    /// The share of client reads made serializable (0: none, the random
    /// sequence of runs from before they existed).
    pub serializable_rate: f64,
    /// Watchers (each on a node drawn at random, resuming across breaks;
    /// 0: the random sequence of runs from before they existed).
    pub watchers: usize,
    /// Lease clients (each on a node drawn at random: grants, keepalives
    /// through followers too, revokes; 0: the random sequence of runs from
    /// before they existed).
    pub lease_clients: usize,
    /// The bucket as the disaster-recovery tier: the leader uploads the
    /// log (1 s segments) and checkpoints every 100 entries; members keep
    /// only `peer_buffer` applied entries in memory, so followers and
    /// candidates often catch up from the bucket, and a member with a lost
    /// disk restores the newest checkpoint (every 20 entries with GC; on
    /// for odd seeds: see
    /// [`ClusterRunConfig::new`]).
    pub tier: bool,
    /// With the tier: the checkpoints GC keeps (0: no GC). With GC, a
    /// member away for a few checkpoints finds the WAL objects it needs
    /// deleted and asks to start over from the newest checkpoint; the run
    /// plays the driver's part ([`StartOvers`]). On for every other tier
    /// seed (keeping 1 or 2); `SIM_CLUSTER_GC=N` sets it for every seed.
    pub gc_keep: usize,
    /// `ClusterConfig::peer_buffer_entries`.
    pub peer_buffer: usize,
    /// Linearizability checker budget.
    pub check: CheckConfig,
}

impl ClusterRunConfig {
    /// The CI settings for `seed` and `nodes`.
    #[must_use]
    pub fn new(seed: u64, nodes: usize) -> ClusterRunConfig {
        // Odd seeds run with the tier; `SIM_CLUSTER_TIER=0` or `=1` sets
        // it for every seed.
        let tier = match std::env::var("SIM_CLUSTER_TIER").as_deref() {
            Ok("0") => false,
            Ok(_) => true,
            Err(_) => seed % 2 == 1,
        };
        let gc_keep = match std::env::var("SIM_CLUSTER_GC") {
            Ok(keep) => keep
                .parse()
                .expect("SIM_CLUSTER_GC: a number of checkpoints"),
            Err(_) if tier && seed / 2 % 2 == 1 => 1 + usize::from(seed / 4 % 2 == 1),
            Err(_) => 0,
        };
        // With GC, a memory short enough that a member away for a second
        // or two needs the bucket, whose objects GC may have deleted.
        let peer_buffer = match (tier, gc_keep) {
            (false, _) => ClusterConfig::new(member(1).2).peer_buffer_entries,
            (true, 0) => 16 + usize::try_from(seed % 200).expect("fits"),
            (true, _) => 16 + usize::try_from(seed % 32).expect("fits"),
        };
        ClusterRunConfig {
            seed,
            nodes,
            chaos_secs: 30,
            clients: 10,
            mutants: ClusterMutants::default(),
            bugs: Bugs::default(),
            removals: true,
            serializable_rate: 0.2,
            watchers: 3,
            lease_clients: 1,
            tier,
            gc_keep,
            peer_buffer,
            check: CheckConfig {
                max_steps: std::env::var("SIM_CHECK_STEPS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(2_000_000),
            },
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct ClusterReport {
    /// The seed.
    pub seed: u64,
    /// Members.
    pub nodes: usize,
    /// Simulated time, in seconds.
    pub sim_secs: f64,
    /// Client calls recorded.
    pub ops: usize,
    /// … answered with success.
    pub ok: usize,
    /// … answered with a definite failure.
    pub failed: usize,
    /// … whose outcome is unknown.
    pub unknown: usize,
    /// Writes acknowledged (each checked against the log).
    pub acked_writes: usize,
    /// Operations the linearizability checker placed.
    pub checked: usize,
    /// Serializable reads checked against the committed prefix.
    pub serializable_checked: usize,
    /// Watch streams checked, and the events in them.
    pub watches: usize,
    pub watch_events: usize,
    /// Leases whose expiry was checked.
    pub leases: usize,
    /// Unknown writes the final log settled.
    pub resolved: usize,
    /// The checker ran out of budget.
    pub checker_unknown: bool,
    /// Committed entries at the end.
    pub log_entries: usize,
    /// Distinct terms some node served as leader in.
    pub leader_terms: usize,
    /// Gaps without a serving leader after the cluster formed, in ms.
    pub failovers_ms: Vec<u64>,
    /// With the tier: entries the bucket's WAL replayed at the end (after
    /// the newest checkpoint, with GC), and the checkpoint manifests in
    /// the bucket.
    pub bucket_wal_entries: usize,
    pub bucket_checkpoints: usize,
    /// Members started over from a checkpoint (behind the bucket's GC).
    pub start_overs: usize,
    /// Faults by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// What failed.
    pub violations: Vec<String>,
    /// Wall time, in seconds.
    pub wall_secs: f64,
}

/// One member and what outlives its process.
struct SimMember {
    name: String,
    ip: Ipv4Addr,
    handle: NodeHandle,
    disk: Disk,
    ledger: Ledger,
    status: StatusCell,
}

impl SimMember {
    fn id(&self) -> madsim::task::NodeId {
        self.handle.id()
    }

    /// Whether its disk holds a whole copy: it has promised (every member
    /// has) and is not rejoining after a loss or a start-over.
    fn disk_is_whole(&self) -> bool {
        self.disk.has_engine()
            && t4_io_sim::hard_state::load(&self.disk)
                .and_then(|bytes| HardState::decode(&bytes).ok())
                .is_some_and(|h| !h.rejoining && h.promised.0 > 0)
    }
}

/// What the monitor saw.
#[derive(Debug, Default)]
struct Watch {
    /// term → the node that served as its leader.
    leaders: BTreeMap<u64, String>,
    violations: Vec<String>,
    /// Since when no node serves as leader (after formation).
    gap_since: Option<madsim::time::Instant>,
    gaps_ms: Vec<u64>,
    formed: bool,
    /// When each term's leader was first seen serving.
    serving_from: Vec<madsim::time::Instant>,
    /// The gaps without a serving leader (after formation).
    gaps: Vec<(madsim::time::Instant, madsim::time::Instant)>,
}

/// Plays one run and checks it (on a thread of its own, as
/// [`crate::bucket::run`] does).
///
/// # Panics
/// The run panicked (the panic is passed on).
#[must_use]
pub fn run(config: &ClusterRunConfig) -> ClusterReport {
    let wall = Instant::now();
    let cfg = config.clone();
    let played = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let _log = crate::simlog::install();
                let mut rt = madsim::runtime::Runtime::with_seed_and_config(
                    cfg.seed,
                    madsim::Config::default(),
                );
                rt.set_time_limit(Duration::from_secs(900));
                let playing = cfg.clone();
                let collected = rt.block_on(async move { play(&playing).await });
                check(&cfg, collected)
            })
            .join()
    });
    let mut report = played.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    report.wall_secs = wall.elapsed().as_secs_f64();
    report
}

/// The bucket at the end of a run with the tier.
struct TierEnd {
    bucket: MemBucket,
    /// Every write that landed (GC deleted what checkpoints cover).
    writes: Vec<AppliedWrite>,
    /// The index the leader said it uploaded through.
    uploaded: u64,
}

/// The driver's part of a start-over, which the run plays (io-real's node
/// thread does it in-process): a member up and running that asked to
/// start over ([`NodeStatus::start_over`]) is checked against the bucket
/// (its newest intact checkpoint must be ahead of the member's applied
/// index, or the request is a violation: the core asks only when neither
/// the leader's memory nor the bucket's WAL can bring it up to date), then
/// stopped, its engine put aside ([`t4_io_sim::server::prepare_start_over`])
/// and started again; the start-up moves its WAL aside and restores the
/// checkpoint, and the member keeps its hard state (and its vote) when the
/// checkpoint covers its whole log, or rejoins as a new member otherwise
/// ([`t4_core::node::Action::StartOver`]).
#[derive(Default)]
struct StartOvers {
    /// Member → the incarnation already handled (its status keeps the
    /// request until the new process starts).
    handled: BTreeMap<usize, u64>,
    done: usize,
    violations: Vec<String>,
}

impl StartOvers {
    /// Starts over every member that asked, is not in `skip` (down or
    /// paused) and was not handled yet; returns them.
    fn poll(
        &mut self,
        members: &[SimMember],
        handle: &Handle,
        s3: &FakeS3,
        skip: &BTreeSet<usize>,
    ) -> Vec<usize> {
        let mut started = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let s = m.status.get();
            let Some((why, last_index)) = &s.start_over else {
                continue;
            };
            if skip.contains(&i) || self.handled.get(&i) == Some(&s.incarnation) {
                continue;
            }
            self.handled.insert(i, s.incarnation);
            let checkpoint = crate::bucket::newest_intact_in(&s3.bucket());
            if checkpoint <= s.applied_index {
                self.violations.push(format!(
                    "{} asked to start over, but the newest intact checkpoint (index \
                     {checkpoint}) is not ahead of its applied index {}: {why}",
                    m.name, s.applied_index
                ));
                continue;
            }
            tracing::info!(node = %m.name, checkpoint, applied = s.applied_index, last_index, %why,
                "starting a member over from the newest checkpoint");
            handle.kill(m.id());
            m.disk.crash();
            t4_io_sim::server::prepare_start_over(&m.disk, *last_index);
            // Its log is put aside with the engine; the new one starts
            // after the checkpoint.
            m.ledger.clear();
            handle.restart(m.id());
            self.done += 1;
            started.push(i);
        }
        started
    }
}

struct Collected {
    recorded: Recorded,
    sim_secs: f64,
    ledgers: Vec<(String, Vec<Entry>)>,
    /// With the tier: the bucket at the end.
    bucket: Option<TierEnd>,
    start_overs: StartOvers,
    statuses: Vec<(String, NodeStatus)>,
    faults: BTreeMap<&'static str, u64>,
    watch: Watch,
    /// Times a node could not act, or might have been the leader that
    /// could not (every node fault), and every new leader's first serving
    /// moment (its lease TTLs restart).
    outages: Vec<Outage>,
    /// Every revoke entry any node ever held (a lost disk's and a log put
    /// aside included): which lease, the entry, when it became durable.
    revokes: Vec<(i64, Entry, u64)>,
    /// When the run ended (nanoseconds since its start).
    end: u64,
    violations: Vec<String>,
}

fn member(i: usize) -> (String, Ipv4Addr, Member) {
    let name = format!("n{i}");
    let ip = Ipv4Addr::new(10, 0, 2, u8::try_from(i).expect("few nodes"));
    let member = Member {
        id: name.clone(),
        peer_addr: SocketAddr::new(IpAddr::V4(ip), PEER_PORT).to_string(),
    };
    (name, ip, member)
}

fn start_member(s3: &FakeS3, i: usize, cfg: &ClusterRunConfig, clock: ClockConfig) -> SimMember {
    let (name, ip, me) = member(i);
    let disk = Disk::new();
    let ledger = Ledger::new();
    let status = StatusCell::default();
    let config = ServerConfig {
        core: NodeConfig {
            cluster: Some(ClusterConfig {
                mutants: cfg.mutants,
                peer_buffer_entries: cfg.peer_buffer,
                bucket: cfg.tier.then(|| BucketConfig {
                    segment_max_age_ns: 1_000_000_000,
                    // With GC, often enough that a member away for a few
                    // seconds finds the objects it needs deleted.
                    checkpoint_every_entries: if cfg.gc_keep > 0 { 20 } else { 100 },
                    checkpoint_interval_ns: 0,
                    gc_keep: cfg.gc_keep,
                    ..BucketConfig::default()
                }),
                ..ClusterConfig::new(me)
            }),
            trim_every_entries: 200,
            ..ServerConfig::default().core
        },
        clock,
        bugs: cfg.bugs,
        ..ServerConfig::default()
    };
    let ctx = ServerContext {
        disk: disk.clone(),
        ledger: ledger.clone(),
        config,
        status: status.clone(),
        bucket: Some((s3.client(&name), name.clone())),
    };
    let handle = Handle::current()
        .create_node()
        .name(name.clone())
        .ip(IpAddr::V4(ip))
        .init(move || serve(ctx.clone()))
        .build();
    SimMember {
        name,
        ip,
        handle,
        disk,
        ledger,
        status,
    }
}

fn serving_leader(s: &NodeStatus) -> bool {
    s.role == Some(ClusterRole::Leader { serving: true })
}

/// Waits until `done` holds for the statuses, at most `within`.
async fn wait_for(
    members: &[SimMember],
    within: Duration,
    done: impl Fn(&[NodeStatus]) -> bool,
) -> bool {
    let until = madsim::time::Instant::now() + within;
    while madsim::time::Instant::now() < until {
        let statuses: Vec<NodeStatus> = members.iter().map(|m| m.status.get()).collect();
        if done(&statuses) {
            return true;
        }
        sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Nodes that know they were removed and are not down yet: stopped (to be
/// started again, to join again).
fn restart_removed(members: &[SimMember], handle: &Handle, down: &BTreeSet<usize>) -> Vec<usize> {
    let mut stopped = Vec::new();
    for (i, m) in members.iter().enumerate() {
        if !down.contains(&i) && m.status.get().role == Some(ClusterRole::Removed) {
            handle.kill(m.id());
            m.disk.crash();
            stopped.push(i);
        }
    }
    stopped
}

/// A serving leader's lock lists all `n` nodes and none is removed.
fn whole_membership(members: &[SimMember], n: usize) -> bool {
    let statuses: Vec<NodeStatus> = members.iter().map(|m| m.status.get()).collect();
    statuses
        .iter()
        .any(|s| serving_leader(s) && s.members.len() == n)
        && statuses
            .iter()
            .all(|s| s.role != Some(ClusterRole::Removed))
}

/// Waits (at most [`CONVERGE_WITHIN`]) for [`converged`], starting again
/// any node that learns it was removed (a removal may land late), and
/// starting over any that asks to.
async fn settle(
    members: &[SimMember],
    handle: &Handle,
    s3: &FakeS3,
    start_overs: &mut StartOvers,
    n: usize,
) -> bool {
    let until = madsim::time::Instant::now() + CONVERGE_WITHIN;
    while madsim::time::Instant::now() < until {
        for i in restart_removed(members, handle, &BTreeSet::new()) {
            handle.restart(members[i].id());
        }
        start_overs.poll(members, handle, s3, &BTreeSet::new());
        if wait_for(members, Duration::from_millis(500), |st| converged(st, n)).await {
            return true;
        }
    }
    false
}

/// One serving leader, every member in its lock, every node applied
/// through the leader's commit index.
fn converged(statuses: &[NodeStatus], n: usize) -> bool {
    let leaders: Vec<&NodeStatus> = statuses.iter().filter(|s| serving_leader(s)).collect();
    let [leader] = leaders.as_slice() else {
        return false;
    };
    leader.members.len() == n
        && statuses
            .iter()
            .all(|s| s.serving && s.applied_index == leader.commit_index)
}

/// Undoing a temporary fault.
enum Undo {
    Restart(usize),
    Resume(usize),
    Unclog(usize),
    UnclogLink(madsim::task::NodeId, madsim::task::NodeId),
}

async fn play(cfg: &ClusterRunConfig) -> Collected {
    let s3 = FakeS3::start(IpAddr::V4(S3_IP), S3Faults::flaky());
    let net = NetSim::current();
    let handle = Handle::current();
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    let clocks: Vec<ClockConfig> = (0..cfg.nodes)
        .map(|_| ClockConfig {
            drift_ppm: thread_rng().gen_range(-200..=200),
            wall_offset_ms: thread_rng().gen_range(-3_600_000..=3_600_000),
        })
        .collect();
    let mut members: Vec<SimMember> = Vec::new();
    // Form the cluster: n1 bootstraps, the others join one at a time.
    for i in 1..=cfg.nodes {
        members.push(start_member(&s3, i, cfg, clocks[i - 1]));
        let n = i;
        let joined = wait_for(&members, Duration::from_secs(120), |st| {
            st.iter().filter(|s| serving_leader(s)).count() == 1
                && st.iter().any(|s| serving_leader(s) && s.members.len() == n)
        })
        .await;
        if !joined {
            violations.push(format!("n{i} did not join within 120 s"));
        }
    }
    let watch = Arc::new(Mutex::new(Watch::default()));
    let monitor = {
        let statuses: Vec<(String, StatusCell)> = members
            .iter()
            .map(|m| (m.name.clone(), m.status.clone()))
            .collect();
        let watch = Arc::clone(&watch);
        madsim::task::spawn(async move {
            loop {
                sample(&statuses, &watch);
                sleep(Duration::from_millis(10)).await;
            }
        })
    };
    watch.lock().expect("watch lock").formed = true;

    // Clients on machines of their own, each talking to a node drawn at
    // random.
    let rec = Recorder::new();
    for id in 0..cfg.clients {
        let target = &members[thread_rng().gen_range(0..members.len())];
        let client = ClientConfig {
            id,
            node: SocketAddr::new(IpAddr::V4(target.ip), NODE_PORT),
            mix: if id % 2 == 0 {
                Mix::Etcd
            } else {
                Mix::Kubernetes
            },
            timeout: CLIENT_TIMEOUT,
            think: THINK,
            compact_rate: 0.005,
            serializable_rate: cfg.serializable_rate,
        };
        client_machine(&handle, format!("client-{id}"), 1, id)
            .spawn(workload::run_client(client, Arc::clone(&rec)));
    }

    // Membership changes go through a client machine of their own.
    let removals: Arc<Mutex<Vec<(SocketAddr, String)>>> = Arc::default();
    if cfg.removals {
        let removals = Arc::clone(&removals);
        let admin = handle
            .create_node()
            .name("admin")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1)))
            .build();
        admin.spawn(async move {
            loop {
                let due = std::mem::take(&mut *removals.lock().expect("removals"));
                for (node, id) in due {
                    madsim::task::spawn(async move {
                        if let Ok(mut client) = Client::bind(node).await {
                            let req = Request::Core(ClientRequest::MemberRemove { id });
                            let _ = client.call(req, CLIENT_TIMEOUT).await;
                        }
                    });
                }
                sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let mut removal_quiet_until = madsim::time::Instant::now();
    // A requested removal until its member was seen removed: a leader may
    // retry its lock write for a long time (a flaky bucket), and a disk
    // lost meanwhile would leave two members, one without its disk: a
    // cluster that by design cannot elect a leader (see the README).
    let mut removal_pending: Option<usize> = None;

    for w in 0..cfg.watchers {
        let target = &members[thread_rng().gen_range(0..members.len())];
        let watcher = WatcherConfig {
            id: cfg.clients + w,
            node: SocketAddr::new(IpAddr::V4(target.ip), NODE_PORT),
            timeout: Duration::from_secs(2),
        };
        client_machine(&handle, format!("watcher-{w}"), 4, w)
            .spawn(workload::run_watcher(watcher, Arc::clone(&rec)));
    }
    for l in 0..cfg.lease_clients {
        let target = &members[thread_rng().gen_range(0..members.len())];
        let lessee = workload::LeaseClientConfig {
            id: cfg.clients + cfg.watchers + l,
            node: SocketAddr::new(IpAddr::V4(target.ip), NODE_PORT),
            timeout: CLIENT_TIMEOUT,
        };
        client_machine(&handle, format!("leases-{l}"), 5, l)
            .spawn(workload::run_lease_client(lessee, Arc::clone(&rec)));
    }

    if std::env::var_os("SIM_DEBUG").is_some() {
        println!("formed: {}", describe(&members));
    }
    // The faults.
    net.update_config(|c| c.packet_loss_rate = 0.01);
    let n = members.len();
    let mut undo: Vec<(madsim::time::Instant, Undo)> = Vec::new();
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let mut paused: BTreeSet<usize> = BTreeSet::new();
    // No faults on a cluster that did not form (already a violation): a
    // disk loss in a cluster of two stalls it by design.
    let chaos_secs = if violations.is_empty() {
        cfg.chaos_secs
    } else {
        0
    };
    let end = madsim::time::Instant::now() + Duration::from_secs(chaos_secs);
    let mut next_fault =
        madsim::time::Instant::now() + Duration::from_millis(thread_rng().gen_range(200..1_500));
    let count = |faults: &mut BTreeMap<&'static str, u64>, kind: &'static str| {
        *faults.entry(kind).or_default() += 1;
        rec.trace(("fault", kind));
    };
    let mut outages: Vec<Outage> = Vec::new();
    let mut start_overs = StartOvers::default();
    while madsim::time::Instant::now() < end {
        let now = madsim::time::Instant::now();
        for (_, u) in extract_due(&mut undo, now) {
            apply_undo(u, &members, &net, &handle, &mut down, &mut paused);
        }
        let away: BTreeSet<usize> = down.union(&paused).copied().collect();
        for _ in start_overs.poll(&members, &handle, &s3, &away) {
            // A restart (its lease TTLs restart).
            let at = rec.since_start(now);
            outages.push(Outage {
                start: at,
                end: at,
                restart: true,
            });
        }
        let undone_from = undo.len();
        for i in restart_removed(&members, &handle, &down) {
            if removal_pending == Some(i) {
                removal_pending = None;
            }
            down.insert(i);
            let back = Duration::from_millis(thread_rng().gen_range(500..3_000));
            undo.push((now + back, Undo::Restart(i)));
        }
        let full = now >= removal_quiet_until
            && removal_pending.is_none()
            && whole_membership(&members, n);
        if now >= next_fault {
            next_fault = now + Duration::from_millis(thread_rng().gen_range(200..1_500));
            let victim = thread_rng().gen_range(0..n);
            let other = (victim + thread_rng().gen_range(1..n)) % n;
            let up = !down.contains(&victim) && !paused.contains(&victim);
            let ms = |lo: u64, hi: u64| Duration::from_millis(thread_rng().gen_range(lo..hi));
            match thread_rng().gen_range(0..100) {
                0..=17 if up => {
                    handle.kill(members[victim].id());
                    members[victim].disk.crash();
                    down.insert(victim);
                    undo.push((now + ms(500, 3_000), Undo::Restart(victim)));
                    count(&mut faults, "crash");
                }
                18..=23 => {
                    // A majority loses power at once.
                    let mut picked: Vec<usize> = (0..n).collect();
                    for i in (1..n).rev() {
                        picked.swap(i, thread_rng().gen_range(0..=i));
                    }
                    for &i in picked.iter().take(n / 2 + 1) {
                        if down.contains(&i) || paused.contains(&i) {
                            continue;
                        }
                        handle.kill(members[i].id());
                        members[i].disk.crash();
                        down.insert(i);
                        undo.push((now + ms(500, 2_500), Undo::Restart(i)));
                    }
                    count(&mut faults, "majority crash");
                }
                24..=33
                    if up
                        && full
                        && (0..n)
                            .filter(|&i| i != victim)
                            .all(|i| members[i].disk_is_whole()) =>
                {
                    handle.kill(members[victim].id());
                    members[victim].disk.lose();
                    members[victim].ledger.clear();
                    down.insert(victim);
                    undo.push((now + ms(500, 3_000), Undo::Restart(victim)));
                    count(&mut faults, "disk loss");
                }
                34..=47 => {
                    net.clog_node(members[victim].id());
                    undo.push((now + ms(1_000, 6_000), Undo::Unclog(victim)));
                    count(&mut faults, "isolate");
                }
                48..=59 => {
                    let (a, b) = (members[victim].id(), members[other].id());
                    net.clog_link(a, b);
                    net.clog_link(b, a);
                    let at = now + ms(1_000, 6_000);
                    undo.push((at, Undo::UnclogLink(a, b)));
                    undo.push((at, Undo::UnclogLink(b, a)));
                    count(&mut faults, "partial partition");
                }
                60..=71 => {
                    let (a, b) = (members[victim].id(), members[other].id());
                    net.clog_link(a, b);
                    undo.push((now + ms(1_000, 6_000), Undo::UnclogLink(a, b)));
                    count(&mut faults, "one-way cut");
                }
                72..=81 => {
                    let (a, b) = (members[victim].id(), s3.node_id());
                    net.clog_link(a, b);
                    net.clog_link(b, a);
                    let at = now + ms(1_000, 8_000);
                    undo.push((at, Undo::UnclogLink(a, b)));
                    undo.push((at, Undo::UnclogLink(b, a)));
                    count(&mut faults, "bucket cut");
                }
                82..=89 if up => {
                    handle.pause(members[victim].id());
                    paused.insert(victim);
                    undo.push((now + ms(500, 8_500), Undo::Resume(victim)));
                    count(&mut faults, "pause");
                }
                90..=92
                    if cfg.removals && up && full && (0..n).all(|i| members[i].disk_is_whole()) =>
                {
                    let via = SocketAddr::new(IpAddr::V4(members[victim].ip), NODE_PORT);
                    removals
                        .lock()
                        .expect("removals")
                        .push((via, members[other].name.clone()));
                    removal_quiet_until = now + Duration::from_secs(10);
                    removal_pending = Some(other);
                    count(&mut faults, "removal");
                }
                _ => {}
            }
        }
        // Every fault started now lasts until its undo: a crash restarts
        // the node (its lease TTLs restart); a pause or a cut may keep
        // the leader from committing revokes.
        for (at, u) in &undo[undone_from..] {
            outages.push(Outage {
                start: rec.since_start(now),
                end: rec.since_start(*at),
                restart: matches!(u, Undo::Restart(_)),
            });
        }
        sleep(Duration::from_millis(20)).await;
    }
    // Heal everything.
    for (_, u) in std::mem::take(&mut undo) {
        apply_undo(u, &members, &net, &handle, &mut down, &mut paused);
    }
    for a in &members {
        net.unclog_node(a.id());
        net.unclog_link(a.id(), s3.node_id());
        net.unclog_link(s3.node_id(), a.id());
        for b in &members {
            net.unclog_link(a.id(), b.id());
        }
    }
    net.update_config(|c| c.packet_loss_rate = 0.0);
    if !settle(&members, &handle, &s3, &mut start_overs, n).await {
        violations.push(format!(
            "no convergence within {CONVERGE_WITHIN:?} after the faults stopped: {}",
            describe(&members)
        ));
    }
    rec.stop.store(true, Ordering::Relaxed);
    sleep(CLIENT_TIMEOUT + Duration::from_secs(1)).await;
    if !settle(&members, &handle, &s3, &mut start_overs, n).await {
        violations.push(format!(
            "no convergence after the clients stopped: {}",
            describe(&members)
        ));
    }
    // With the tier, the leader uploads its whole log within a few
    // segment ages once nothing is written.
    let uploaded_at_end = if cfg.tier {
        let uploaded = |st: &[NodeStatus]| {
            st.iter()
                .find(|s| serving_leader(s))
                .and_then(|s| s.uploaded.filter(|u| *u >= s.applied_index))
        };
        if !wait_for(&members, UPLOADED_WITHIN, |st| uploaded(st).is_some()).await {
            violations.push(format!(
                "the leader did not upload its log within {UPLOADED_WITHIN:?} of the end: {}",
                describe(&members)
            ));
        }
        let statuses: Vec<NodeStatus> = members.iter().map(|m| m.status.get()).collect();
        uploaded(&statuses).unwrap_or(0)
    } else {
        0
    };
    // Watchers see everything through the final revision, then close.
    sleep(Duration::from_secs(3)).await;
    rec.end.store(true, Ordering::Relaxed);
    sleep(Duration::from_secs(1)).await;
    monitor.abort();
    if std::env::var_os("SIM_DEBUG").is_some() {
        println!("final: {}", describe(&members));
    }
    let end = rec.now();
    let sim_secs = end as f64 / 1e9;
    // Nobody expires leases while no leader serves; a new leader restarts
    // every lease's TTL (etcd does too).
    {
        let w = watch.lock().expect("watch lock");
        let gaps = w.gaps.iter().copied().chain(
            w.gap_since
                .map(|since| (since, madsim::time::Instant::now())),
        );
        for (since, until) in gaps {
            outages.push(Outage {
                start: rec.since_start(since),
                end: rec.since_start(until),
                restart: true,
            });
        }
        for at in &w.serving_from {
            let at = rec.since_start(*at);
            outages.push(Outage {
                start: at,
                end: at,
                restart: true,
            });
        }
    }
    let mut revokes = Vec::new();
    for m in &members {
        for (entry, at) in m.ledger.ever_with_time() {
            if let Some(t4_core::log::Payload::LeaseRevoke(r)) = &entry.payload {
                revokes.push((r.id, entry.clone(), rec.since_start(at)));
            }
        }
    }
    let watched = std::mem::take(&mut *watch.lock().expect("watch lock"));
    Collected {
        recorded: rec.take(),
        outages,
        revokes,
        end,
        sim_secs,
        ledgers: members
            .iter()
            .map(|m| (m.name.clone(), m.ledger.entries()))
            .collect(),
        bucket: cfg.tier.then(|| TierEnd {
            bucket: s3.bucket(),
            writes: s3.writes(),
            uploaded: uploaded_at_end,
        }),
        start_overs,
        statuses: members
            .iter()
            .map(|m| (m.name.clone(), m.status.get()))
            .collect(),
        faults,
        watch: watched,
        violations,
    }
}

/// The monitor's look at every node: who serves as leader of which term,
/// and the gaps without one.
fn sample(statuses: &[(String, StatusCell)], watch: &Mutex<Watch>) {
    let now = madsim::time::Instant::now();
    let mut any = false;
    let mut w = watch.lock().expect("watch lock");
    for (name, cell) in statuses {
        let s = cell.get();
        if !serving_leader(&s) {
            continue;
        }
        any = true;
        match w.leaders.get(&s.term) {
            Some(other) if other != name => {
                let v = format!("two leaders in term {}: {other} and {name}", s.term);
                if !w.violations.contains(&v) {
                    w.violations.push(v);
                }
            }
            Some(_) => {}
            None => {
                w.leaders.insert(s.term, name.clone());
                w.serving_from.push(now);
            }
        }
    }
    if w.formed {
        match (any, w.gap_since) {
            (false, None) => w.gap_since = Some(now),
            (true, Some(since)) => {
                let ms = u64::try_from((now - since).as_millis()).unwrap_or(u64::MAX);
                w.gaps_ms.push(ms);
                w.gaps.push((since, now));
                w.gap_since = None;
            }
            _ => {}
        }
    }
}

/// A machine for client number `i` of a kind (its own subnet `10.0.net.*`).
fn client_machine(handle: &Handle, name: String, net: u8, i: usize) -> NodeHandle {
    let host = u8::try_from(i + 1).expect("a few clients of a kind");
    handle
        .create_node()
        .name(name)
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, net, host)))
        .build()
}

fn extract_due(
    undo: &mut Vec<(madsim::time::Instant, Undo)>,
    now: madsim::time::Instant,
) -> Vec<(madsim::time::Instant, Undo)> {
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(undo)
        .into_iter()
        .partition(|(at, _)| *at <= now);
    *undo = later;
    due
}

fn apply_undo(
    u: Undo,
    members: &[SimMember],
    net: &NetSim,
    handle: &Handle,
    down: &mut BTreeSet<usize>,
    paused: &mut BTreeSet<usize>,
) {
    match u {
        Undo::Restart(i) => {
            if down.remove(&i) {
                handle.restart(members[i].id());
            }
        }
        Undo::Resume(i) => {
            if paused.remove(&i) {
                handle.resume(members[i].id());
            }
        }
        Undo::Unclog(i) => net.unclog_node(members[i].id()),
        Undo::UnclogLink(a, b) => net.unclog_link(a, b),
    }
}

fn describe(members: &[SimMember]) -> String {
    members
        .iter()
        .map(|m| {
            let s = m.status.get();
            format!(
                "{} (incarnation {}): {:?} term {} commit {} uploaded {:?} applied {} last {} members {:?} serving {} failed {:?} refused {:?}",
                m.name,
                s.incarnation,
                s.role,
                s.term,
                s.commit_index,
                s.uploaded,
                s.applied_index,
                s.last_index,
                s.members,
                s.serving,
                s.failed,
                s.refused
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn check(cfg: &ClusterRunConfig, c: Collected) -> ClusterReport {
    let mut report = ClusterReport {
        seed: cfg.seed,
        nodes: cfg.nodes,
        sim_secs: c.sim_secs,
        faults: c.faults,
        leader_terms: c.watch.leaders.len(),
        failovers_ms: c.watch.gaps_ms.clone(),
        ..ClusterReport::default()
    };
    let mut v = c.violations;
    v.extend(c.watch.violations);
    v.extend(c.start_overs.violations);
    report.start_overs = c.start_overs.done;
    for (name, s) in &c.statuses {
        if let Some(why) = &s.invariant_violation {
            v.push(format!("{name}: {why}"));
        }
        if let Some(why) = &s.failed {
            v.push(format!("{name} failed its write path: {why}"));
        }
        if let Some(why) = &s.refused {
            v.push(format!("{name} refused to start: {why}"));
        }
        if let Some((why, _)) = &s.start_over {
            v.push(format!(
                "{name} cannot catch up at the end (it asked to start over from a checkpoint): \
                 {why}"
            ));
        }
        if s.undecodable_peer_msgs > 0 {
            v.push(format!(
                "{name} received {} undecodable peer messages",
                s.undecodable_peer_msgs
            ));
        }
    }
    // The log through the leader's commit index: the leader's durable
    // entries; below them (a leader that started from a checkpoint), the
    // other nodes' and then every WAL object the bucket ever held (GC
    // deletes what checkpoints cover). Every copy must agree.
    let commit = c
        .statuses
        .iter()
        .find(|(_, s)| serving_leader(s))
        .map_or(0, |(_, s)| s.commit_index);
    let leader = c
        .statuses
        .iter()
        .find(|(_, s)| serving_leader(s))
        .map(|(name, _)| name.clone());
    let mut log: Vec<Entry> = Vec::new();
    if let Some(leader) = &leader {
        let ever = match c.bucket.as_ref().map(|t| bucket_wal_ever(&t.writes)) {
            Some(Ok(entries)) => entries,
            Some(Err(why)) => {
                v.push(format!(
                    "the bucket's WAL (every object ever written): {why}"
                ));
                Vec::new()
            }
            None => Vec::new(),
        };
        let copies = c
            .ledgers
            .iter()
            .filter(|(n, _)| n == leader)
            .chain(c.ledgers.iter().filter(|(n, _)| n != leader))
            .map(|(n, entries)| (format!("{n}'s WAL"), entries))
            .chain(std::iter::once(("the bucket's WAL".to_owned(), &ever)));
        let mut held: BTreeMap<u64, (Entry, String)> = BTreeMap::new();
        for (source, entries) in copies {
            for e in entries.iter().filter(|e| e.index <= commit) {
                match held.get(&e.index) {
                    None => {
                        held.insert(e.index, (e.clone(), source.clone()));
                    }
                    Some((first, from)) if first != e => {
                        v.push(format!(
                            "{source} holds a different entry at committed index {}: term {} vs \
                             term {} in {from}",
                            e.index, e.term, first.term
                        ));
                        break;
                    }
                    Some(_) => {}
                }
            }
        }
        log = held.into_values().map(|(e, _)| e).collect();
        if let Some((i, e)) = log
            .iter()
            .enumerate()
            .find(|(i, e)| e.index != *i as u64 + 1)
        {
            v.push(format!(
                "the committed log has a gap: entry {} at position {}",
                e.index,
                i + 1
            ));
        }
        // What a restore needs: from the checkpoint it picks (with GC; the
        // whole WAL without) to what the leader said it uploaded.
        if let Some(tier) = &c.bucket {
            let after = if cfg.gc_keep > 0 {
                crate::bucket::newest_intact_in(&tier.bucket)
            } else {
                0
            };
            match bucket_wal(&tier.bucket, after) {
                Ok(entries) => {
                    report.bucket_wal_entries = entries.len();
                    let end = entries.last().map_or(after, |e| e.index);
                    if end < tier.uploaded {
                        v.push(format!(
                            "the bucket's WAL after index {after} ends at {end}, but the leader \
                             said it uploaded through {}",
                            tier.uploaded
                        ));
                    }
                }
                Err(why) => v.push(format!("the bucket's WAL after index {after}: {why}")),
            }
        }
    }
    report.log_entries = log.len();
    let events = NodeEvents {
        outages: {
            let mut o = c.outages.clone();
            o.sort_by_key(|o| o.start);
            o
        },
    };
    // Lease id → when its revoke was first durable on some node. A revoke
    // off the committed log never took effect (an uncommitted suffix that
    // a lost disk or a start-over took along): the lease lived on.
    let mut revoked: BTreeMap<i64, u64> = BTreeMap::new();
    for (id, entry, at) in &c.revokes {
        let off_log = entry.index <= commit
            && log
                .binary_search_by_key(&entry.index, |e| e.index)
                .is_ok_and(|at| log[at] != *entry);
        if off_log {
            continue;
        }
        revoked
            .entry(*id)
            .and_modify(|t| *t = (*t).min(*at))
            .or_insert(*at);
    }
    match check_leases(&c.recorded.leases, &revoked, &events, c.end) {
        Ok(n) => report.leases = n,
        Err(e) => v.push(format!("lease: {e}")),
    }
    if let Some(TierEnd { bucket, .. }) = &c.bucket {
        report.bucket_checkpoints = bucket
            .iter()
            .filter(|(key, _)| {
                t4_core::bucket::layout::parse_checkpoint_manifest_key(key).is_some()
            })
            .count();
    }
    let mut ops = c.recorded.ops;
    if std::env::var_os("SIM_DEBUG").is_some() {
        let mut by: BTreeMap<(usize, String), usize> = BTreeMap::new();
        for op in &ops {
            let what = match &op.ret {
                Return::Unknown => "unknown".to_owned(),
                Return::Applied { .. } => "applied".to_owned(),
                Return::Range(Ok(_)) | Return::Write(Ok(_)) => "ok".to_owned(),
                Return::Range(Err(e)) | Return::Write(Err(e)) => {
                    format!("{e}").chars().take(60).collect()
                }
            };
            *by.entry((op.client, what)).or_default() += 1;
        }
        for ((client, what), n) in by {
            println!("client {client}: {what} x{n}");
        }
    }
    let tally = crate::history::Tally::of(&ops);
    report.ops = tally.ops;
    report.ok = tally.ok;
    report.failed = tally.failed;
    report.unknown = tally.unknown;
    report.acked_writes = tally.acked_writes;
    let truth = match crate::truth::replay(&log) {
        Ok(truth) => truth,
        Err(e) => {
            v.push(format!("the committed log does not replay: {e}"));
            report.violations = v;
            return report;
        }
    };
    crate::run::check_acknowledged(&truth, &ops, &mut v);
    let resolved = crate::resolve::resolve(&mut ops, &log, &truth);
    report.resolved = resolved.applied + resolved.dropped;
    report.serializable_checked = crate::prefixcheck::check(&truth, &ops, &mut v);
    match crate::watchcheck::check_all(&truth, &c.recorded.watches) {
        Ok(stats) => {
            report.watch_events = stats.events_validated;
            report.watches = stats.watches;
        }
        Err(e) => v.push(format!("watch: {e}")),
    }
    ops.retain(|op| !crate::prefixcheck::is_serializable(op));
    let result = lincheck::check(&ops, &cfg.check);
    report.checked = result.ops_checked;
    match result.verdict {
        Verdict::Linearizable => {}
        Verdict::Unknown => report.checker_unknown = true,
        Verdict::NotLinearizable(why) => v.push(format!("not linearizable: {why}")),
    }
    report.violations = v;
    report
}

/// Replays the bucket's WAL after index `after` (the checkpoint a restore
/// picks; 0 without GC): it must have no hole (the replay refuses holes,
/// overlaps that disagree and terms that go back).
fn bucket_wal(bucket: &MemBucket, after: u64) -> Result<Vec<Entry>, String> {
    use t4_core::bucket::{layout, wal_object};
    let objects: BTreeMap<Index, &bytes::Bytes> = bucket
        .iter()
        .filter_map(|(key, body)| Some((layout::parse_wal_key(key)?, body)))
        .collect();
    let listing: Vec<Index> = objects.keys().copied().collect();
    replay_wal(after, &listing, |first| {
        wal_object::decode(&layout::wal_key(first), first, objects[&first])
            .map_err(|e| e.to_string())
    })
}

/// Replays every WAL object the bucket ever held (from the store's write
/// log) from index 1: the committed log's copy that GC does not shorten.
fn bucket_wal_ever(writes: &[AppliedWrite]) -> Result<Vec<Entry>, String> {
    let (objects, problems) = crate::bucket::wal_objects_ever(writes);
    if let Some(problem) = problems.first() {
        return Err(problem.clone());
    }
    let listing: Vec<Index> = objects.keys().map(|&first| Index(first)).collect();
    replay_wal(0, &listing, |first| {
        let (_, term, entries) = &objects[&first.0];
        Ok((Term(*term), entries.clone()))
    })
}

/// Replays the WAL objects of `listing` (their first indexes, sorted) after
/// index `after`, as a restore does; `fetch` gives an object's header term
/// and entries.
fn replay_wal(
    after: u64,
    listing: &[Index],
    fetch: impl Fn(Index) -> Result<(Term, Vec<Entry>), String>,
) -> Result<Vec<Entry>, String> {
    use t4_core::bucket::recovery::BucketReplay;
    let mut replay = BucketReplay::new(Index(after));
    let mut replayed = Vec::new();
    for first in replay.wanted(listing).map_err(|e| e.to_string())? {
        let (term, entries) = fetch(first)?;
        replayed.extend(
            replay
                .push(first, term, entries)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(replayed)
}

/// The summary line of a set of runs.
#[must_use]
pub fn summary(name: &str, reports: &[ClusterReport], panics: usize, wall: Instant) -> String {
    let sum = |f: fn(&ClusterReport) -> usize| reports.iter().map(f).sum::<usize>();
    let faults = crate::run::faults_line(reports.iter().map(|r| &r.faults));
    let mut gaps: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.failovers_ms.clone())
        .collect();
    gaps.sort_unstable();
    let pct = |p: usize| {
        if gaps.is_empty() {
            0
        } else {
            gaps[(gaps.len() * p / 100).min(gaps.len() - 1)]
        }
    };
    format!(
        "sim cluster {name}: seeds={} sim_time={:.0}s ops={} ok={} failed={} unknown={} acked_writes={} checked={} serializable_checked={} watches={} watch_events={} leases={} resolved={} log_entries={} bucket_wal_entries={} bucket_checkpoints={} start_overs={} leader_terms={} failovers={} failover_p50={}ms failover_p99={}ms failover_max={}ms faults[{}] checker_unknown={} violations={} panics={panics} wall={:.1}s",
        reports.len() + panics,
        reports.iter().map(|r| r.sim_secs).sum::<f64>(),
        sum(|r| r.ops),
        sum(|r| r.ok),
        sum(|r| r.failed),
        sum(|r| r.unknown),
        sum(|r| r.acked_writes),
        sum(|r| r.checked),
        sum(|r| r.serializable_checked),
        sum(|r| r.watches),
        sum(|r| r.watch_events),
        sum(|r| r.leases),
        sum(|r| r.resolved),
        sum(|r| r.log_entries),
        sum(|r| r.bucket_wal_entries),
        sum(|r| r.bucket_checkpoints),
        sum(|r| r.start_overs),
        sum(|r| r.leader_terms),
        gaps.len(),
        pct(50),
        pct(99),
        gaps.last().copied().unwrap_or(0),
        faults,
        reports.iter().filter(|r| r.checker_unknown).count(),
        sum(|r| r.violations.len()),
        wall.elapsed().as_secs_f64(),
    )
}
