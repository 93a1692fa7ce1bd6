//! The four scenarios' timelines (see [`super`]), and what a run hands to
//! the checks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use madsim::time::sleep;
use t4_core::kv::{PutRequest, RangeResponse, WriteRequest};
use t4_core::object::MemBucket;
use t4_core::ClientRequest;
use t4_io_sim::client::Client;
use t4_io_sim::disk::Disk;
use t4_io_sim::proto::{Request, NODE_PORT};
use t4_io_sim::s3::{AppliedWrite, Outage, S3Faults, S3Stats};

use super::world::{wait_serving, SimNode, World, UNAVAILABLE_AFTER};
use super::{Kind, Scenario, ScenarioConfig, Violation, RECOVERY_MAX};
use crate::workload::Recorded;

const NODE_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const NODE_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Workload clients per node.
const CLIENTS: usize = 6;

/// What a run produced, for the checks.
pub(super) struct Collected {
    /// The clients' history.
    pub(super) recorded: Recorded,
    /// The end of the run (nanoseconds since its start).
    pub(super) end: u64,
    /// Every write the store applied.
    pub(super) writes: Vec<AppliedWrite>,
    /// The store's counters.
    pub(super) stats: S3Stats,
    /// The bucket at the end (the fresh node's fence included).
    pub(super) bucket: MemBucket,
    /// What the fresh node on the bucket serves.
    pub(super) final_state: Result<RangeResponse, String>,
    /// Scenario events by kind.
    pub(super) events: BTreeMap<&'static str, u64>,
    /// Violations found while the run was on.
    pub(super) violations: Vec<Violation>,
    /// Zombie scenario: who was who.
    pub(super) zombie: Option<ZombieFacts>,
    /// Outage scenario: the outages.
    pub(super) outages: Vec<OutageWindow>,
}

/// The zombie scenario's cast.
pub(super) struct ZombieFacts {
    /// Clients of the zombie (node `a`).
    pub(super) zombie_clients: BTreeSet<usize>,
    /// The name under which the node that took over wrote to the store.
    pub(super) taker: &'static str,
    /// When the zombie was paused (nanoseconds since the start of the run).
    pub(super) paused_at: u64,
}

/// One outage, in nanoseconds since the start of the run.
pub(super) struct OutageWindow {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) mode: &'static str,
    /// When the probe write after it succeeded.
    pub(super) recovered_at: Option<u64>,
}

/// Plays `config`'s scenario to its end.
pub(super) async fn play(config: &ScenarioConfig) -> Collected {
    let (faults, client_timeout) = match config.scenario {
        Scenario::LostResponses => (lossy(), Duration::from_secs(3)),
        // Longer than any answer may take (the "no call hangs" bound).
        Scenario::Outage => (outage_faults(), Duration::from_secs(10)),
        Scenario::DiskLoss | Scenario::Zombie => (S3Faults::flaky(), Duration::from_secs(3)),
    };
    let mut world = World::new(faults, config.bugs, client_timeout);
    let mut zombie = None;
    let mut outages = Vec::new();
    let nodes = match config.scenario {
        Scenario::DiskLoss => disk_loss(&mut world).await,
        Scenario::Zombie => {
            let (nodes, facts) = zombie_takeover(&mut world).await;
            zombie = Some(facts);
            nodes
        }
        Scenario::Outage => {
            let (nodes, windows) = outage(&mut world).await;
            outages = windows;
            nodes
        }
        Scenario::LostResponses => lost_responses(&mut world).await,
    };
    for node in &nodes {
        let status = node.status.get();
        if let Some(v) = status.invariant_violation {
            world.violation(Kind::Node, format!("node {}: {v}", node.name));
        }
        if zombie.is_none() {
            if let Some(why) = status.fenced {
                world.violation(
                    Kind::SelfFenced,
                    format!("node {} was fenced with no other writer: {why}", node.name),
                );
            }
        }
    }
    let end = world.rec.now();
    let node_refs: Vec<&SimNode> = nodes.iter().collect();
    let final_state = world.read_back(&node_refs).await;
    Collected {
        recorded: world.rec.take(),
        end,
        writes: world.s3.writes(),
        stats: world.s3.stats(),
        bucket: world.s3.bucket(),
        final_state,
        events: world.events,
        violations: world.violations,
        zombie,
        outages,
    }
}

/// [`S3Faults::flaky`] with answers lost, late landings and 500s after
/// applying at high rates; late requests are held past the driver's
/// object timeout, some for long after the node gave up on the batch.
fn lossy() -> S3Faults {
    S3Faults {
        lost_response_rate: 0.1,
        late_landing_rate: 0.04,
        late_landing_delay: Duration::from_millis(2_500)..Duration::from_secs(20),
        error_after_apply_rate: 0.05,
        ..S3Faults::flaky()
    }
}

/// [`S3Faults::flaky`] with late landings held at most 6 s. A conditional
/// put held by the store blocks its key — every other conditional put on
/// it is answered 409 until it lands — so the time to recover from an
/// outage is bounded by how long the store may hold a request from before
/// it; [`S3Faults::flaky`]'s minute would make the bound meaningless
/// (long holds are [`Scenario::LostResponses`]' business).
fn outage_faults() -> S3Faults {
    S3Faults {
        late_landing_delay: Duration::from_millis(2_500)..Duration::from_secs(6),
        ..S3Faults::flaky()
    }
}

fn millis(range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(thread_rng().gen_range(range))
}

/// Starts a node and waits for it to serve; `None` (and a violation) if
/// it does not.
async fn start_serving(world: &mut World, name: &'static str, ip: Ipv4Addr) -> (SimNode, bool) {
    let node = world.start_node(name, ip, Disk::new());
    match wait_serving(&node.status, 1, &format!("node {name}")).await {
        Ok(()) => (node, true),
        Err(why) => {
            world.violation(Kind::Node, why);
            (node, false)
        }
    }
}

/// Under load, the disk is lost at a random moment; the node restarts
/// empty on the bucket and serves again.
async fn disk_loss(world: &mut World) -> Vec<SimNode> {
    let (a, up) = start_serving(world, "a", NODE_A).await;
    if !up {
        return vec![a];
    }
    world.start_clients(NODE_A, CLIENTS);
    sleep(millis(500..6_000)).await;
    let handle = Handle::current();
    handle.kill(a.handle.id());
    a.disk.lose();
    world.count("disk-loss");
    sleep(millis(0..2_000)).await;
    handle.restart(a.handle.id());
    if let Err(why) = wait_serving(&a.status, 2, "node a after its disk loss").await {
        world.violation(Kind::Node, why);
    }
    sleep(millis(2_000..4_000)).await;
    world.stop_clients().await;
    vec![a]
}

/// Node a is paused under load, node b takes the bucket over and serves
/// its own clients, a resumes with its clients still on it.
async fn zombie_takeover(world: &mut World) -> (Vec<SimNode>, ZombieFacts) {
    let mut facts = ZombieFacts {
        zombie_clients: BTreeSet::new(),
        taker: "b",
        paused_at: u64::MAX,
    };
    let (a, up) = start_serving(world, "a", NODE_A).await;
    if !up {
        return (vec![a], facts);
    }
    facts.zombie_clients = world
        .start_clients(NODE_A, CLIENTS / 2)
        .into_iter()
        .collect();
    sleep(millis(500..3_000)).await;
    let handle = Handle::current();
    facts.paused_at = world.rec.now();
    handle.pause(a.handle.id());
    world.count("pause");
    let (b, up) = start_serving(world, facts.taker, NODE_B).await;
    if !up {
        handle.resume(a.handle.id());
        world.stop_clients().await;
        return (vec![a, b], facts);
    }
    world.start_clients(NODE_B, CLIENTS / 2);
    sleep(millis(500..3_000)).await;
    handle.resume(a.handle.id());
    sleep(Duration::from_secs(4)).await;
    world.stop_clients().await;
    // A write sent to the zombie now is refused as fenced.
    let machine = world.probe_machine("zombie-probe");
    let answer = machine
        .spawn(async move {
            let mut client = Client::bind(SocketAddr::new(IpAddr::V4(NODE_A), NODE_PORT))
                .await
                .expect("bind");
            let put = WriteRequest::Put(PutRequest {
                key: b"probe/zombie".to_vec(),
                value: b"zombie".to_vec(),
                ..PutRequest::default()
            });
            client
                .call(
                    Request::Core(ClientRequest::Write(put)),
                    Duration::from_secs(10),
                )
                .await
        })
        .await
        .expect("the probe machine is never killed");
    match answer {
        Some(Err(t4_core::Error::Fenced(_))) => {}
        Some(Ok(reply)) => world.violation(
            Kind::Zombie,
            format!("the zombie acknowledged a write after b took over: {reply:?}"),
        ),
        other => world.violation(
            Kind::Node,
            format!("a write sent to the zombie was answered {other:?}, not Fenced"),
        ),
    }
    if a.status.get().fenced.is_none() {
        world.violation(
            Kind::Zombie,
            format!("node a was never fenced: {:?}", a.status.get()),
        );
    }
    (vec![a, b], facts)
}

/// One or two S3 outages under load, each longer than `unavailable_after`;
/// after each, a probe write must get through without a restart.
async fn outage(world: &mut World) -> (Vec<SimNode>, Vec<OutageWindow>) {
    let mut windows = Vec::new();
    let (a, up) = start_serving(world, "a", NODE_A).await;
    if !up {
        return (vec![a], windows);
    }
    world.start_clients(NODE_A, CLIENTS);
    sleep(millis(1_000..3_000)).await;
    for _ in 0..thread_rng().gen_range(1..=2) {
        let (outage, mode) = if thread_rng().gen_bool(0.5) {
            let delay = Duration::from_millis(10)..Duration::from_millis(800);
            (Outage::Errors { delay }, "outage-errors")
        } else {
            (Outage::Blackhole, "outage-blackhole")
        };
        // Longer than `unavailable_after`; beyond `2U` in about half the
        // outages, so that the node had to notice.
        let span = UNAVAILABLE_AFTER + millis(500..9_000);
        world.count(mode);
        let start = world.rec.now();
        world.s3.set_outage(Some(outage));
        sleep(span).await;
        world.s3.set_outage(None);
        let end = world.rec.now();
        let recovered_at = world.probe_write(NODE_A, 2 * RECOVERY_MAX).await;
        windows.push(OutageWindow {
            start,
            end,
            mode,
            recovered_at,
        });
        sleep(millis(1_000..3_000)).await;
    }
    world.stop_clients().await;
    let status = a.status.get();
    if status.incarnation != 1 || status.failed.is_some() || !status.serving {
        world.violation(
            Kind::Outage,
            format!("the node did not ride out the outages in one incarnation: {status:?}"),
        );
    }
    (vec![a], windows)
}

/// Lost answers, late landings and 500s after applying at high rates, and
/// the node crashing at random moments (its disk keeps what was synced).
async fn lost_responses(world: &mut World) -> Vec<SimNode> {
    const CHAOS: Duration = Duration::from_secs(15);
    let (a, up) = start_serving(world, "a", NODE_A).await;
    if !up {
        return vec![a];
    }
    world.start_clients(NODE_A, CLIENTS);
    let start = madsim::time::Instant::now();
    let mut crash_at: Vec<Duration> = (0..thread_rng().gen_range(1..=3))
        .map(|_| millis(0..CHAOS.as_millis() as u64))
        .collect();
    crash_at.sort();
    for at in crash_at {
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            sleep(wait).await;
        }
        world.crash(&a, millis(0..1_500)).await;
    }
    if let Some(wait) = CHAOS.checked_sub(start.elapsed()) {
        sleep(wait).await;
    }
    let incarnation = a.status.get().incarnation;
    if let Err(why) = wait_serving(&a.status, incarnation, "node a after its crashes").await {
        world.violation(Kind::Node, why);
    }
    sleep(Duration::from_secs(2)).await;
    world.stop_clients().await;
    vec![a]
}
