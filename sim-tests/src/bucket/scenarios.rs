//! The scenarios' timelines (see [`super`]), and what a run hands to the
//! checks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use madsim::time::sleep;
use t4_core::bucket::gc_run::{GcOutcome, GcProgress, GcRun};
use t4_core::bucket::layout::wal_key;
use t4_core::kv::{PutRequest, WriteRequest};
use t4_core::object::{MemBucket, ObjectError, ObjectOp, ObjectReply};
use t4_core::ClientRequest;
use t4_io_sim::client::Client;
use t4_io_sim::disk::Disk;
use t4_io_sim::proto::{Request, NODE_PORT};
use t4_io_sim::s3::{AppliedWrite, Outage, S3Faults, S3Stats};

use super::damage::{damage, DamageFacts};
use super::world::{wait_serving, FinalRead, SimNode, World, OBJECT_TIMEOUT, UNAVAILABLE_AFTER};
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
    /// What the fresh node on the bucket restored and serves.
    pub(super) final_read: FinalRead,
    /// [`Scenario::DamagedCheckpoint`]: what was damaged.
    pub(super) damage: Option<DamageFacts>,
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
        Scenario::DiskLoss | Scenario::Zombie | Scenario::DamagedCheckpoint | Scenario::GcRace => {
            (S3Faults::flaky(), Duration::from_secs(3))
        }
    };
    let mut world = World::new(faults, config.bugs, config.checkpoints, client_timeout);
    let mut zombie = None;
    let mut outages = Vec::new();
    let nodes = match config.scenario {
        Scenario::DiskLoss => disk_loss(&mut world).await,
        Scenario::Zombie => {
            let (nodes, facts) = zombie_takeover(&mut world).await;
            zombie = Some(facts);
            nodes
        }
        Scenario::GcRace => {
            let (nodes, facts) = gc_race(&mut world, config.gc_deletes_fences).await;
            zombie = Some(facts);
            nodes
        }
        Scenario::DamagedCheckpoint => damaged_checkpoint(&mut world).await,
        Scenario::Outage => {
            let (nodes, windows) = outage(&mut world).await;
            outages = windows;
            nodes
        }
        Scenario::LostResponses => lost_responses(&mut world).await,
    };
    for node in &nodes {
        let status = node.status.get();
        let counts = status.checkpoints;
        for (kind, n) in [
            ("checkpoints", counts.completed),
            ("checkpoints-abandoned", counts.abandoned),
            ("checkpoint-take-failed", counts.take_failures),
            ("gc-passes", counts.gc_passes),
        ] {
            if n > 0 {
                *world.events.entry(kind).or_default() += n;
            }
        }
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
    let settled = world.settle(&node_refs).await;
    let mut damaged = None;
    if settled.is_ok() && config.scenario == Scenario::DamagedCheckpoint {
        // With GC off the WAL still starts at index 1: sometimes damage
        // every checkpoint, so that the restore falls back to it.
        let all = config.checkpoints.gc_keep == 0 && thread_rng().gen_bool(0.25);
        match damage(&world.s3, all) {
            Ok(facts) => {
                for how in &facts.how {
                    world.count(how);
                }
                damaged = Some(facts);
            }
            Err(why) => world.violation(Kind::Node, why),
        }
    }
    let final_read = match settled {
        Ok(()) => world.read_fresh().await,
        Err(why) => FinalRead {
            state: Err(why),
            status: t4_io_sim::server::NodeStatus::default(),
            bucket_before: world.s3.bucket(),
        },
    };
    Collected {
        recorded: world.rec.take(),
        end,
        writes: world.s3.writes(),
        stats: world.s3.stats(),
        bucket: world.s3.bucket(),
        final_read,
        damage: damaged,
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

/// Node a serving, with half the clients on it (the zombie-to-be); `false`
/// when it did not come up (then no client was started).
async fn start_zombie(world: &mut World) -> (SimNode, ZombieFacts, bool) {
    let mut facts = ZombieFacts {
        zombie_clients: BTreeSet::new(),
        taker: "b",
        paused_at: u64::MAX,
    };
    let (a, up) = start_serving(world, "a", NODE_A).await;
    if up {
        facts.zombie_clients = world
            .start_clients(NODE_A, CLIENTS / 2)
            .into_iter()
            .collect();
    }
    (a, facts, up)
}

/// Pauses `a` and starts the taker serving with the other half of the
/// clients; `false` when it did not come up (then `a` is resumed and the
/// clients are stopped).
async fn pause_and_take_over(
    world: &mut World,
    a: &SimNode,
    facts: &mut ZombieFacts,
) -> (SimNode, bool) {
    facts.paused_at = world.rec.now();
    Handle::current().pause(a.handle.id());
    world.count("pause");
    let (b, up) = start_serving(world, facts.taker, NODE_B).await;
    if up {
        world.start_clients(NODE_B, CLIENTS / 2);
    } else {
        Handle::current().resume(a.handle.id());
        world.stop_clients().await;
    }
    (b, up)
}

/// Node a is paused under load, node b takes the bucket over and serves
/// its own clients, a resumes with its clients still on it.
async fn zombie_takeover(world: &mut World) -> (Vec<SimNode>, ZombieFacts) {
    let (a, mut facts, up) = start_zombie(world).await;
    if !up {
        return (vec![a], facts);
    }
    sleep(millis(500..3_000)).await;
    let handle = Handle::current();
    let (b, up) = pause_and_take_over(world, &a, &mut facts).await;
    if !up {
        return (vec![a, b], facts);
    }
    sleep(millis(500..3_000)).await;
    handle.resume(a.handle.id());
    sleep(Duration::from_secs(4)).await;
    world.stop_clients().await;
    check_zombie_refuses(world, &a).await;
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

/// Waits until `node` has completed `n` checkpoints (over all its
/// incarnations), for at most `give_up`; whether it did.
async fn wait_checkpoints(node: &SimNode, n: u64, give_up: Duration) -> bool {
    let until = madsim::time::Instant::now() + give_up;
    while madsim::time::Instant::now() < until {
        if node.status.get().checkpoints.completed >= n {
            return true;
        }
        sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Under load with frequent checkpoints, until the bucket holds a few;
/// [`play`] then damages the newest (or every one) before the fresh node
/// starts.
async fn damaged_checkpoint(world: &mut World) -> Vec<SimNode> {
    let (a, up) = start_serving(world, "a", NODE_A).await;
    if !up {
        return vec![a];
    }
    world.start_clients(NODE_A, CLIENTS);
    // Two to fall back between, with GC keeping two; more sometimes, so
    // that GC has deleted older ones.
    let want = thread_rng().gen_range(2..=4);
    // Long enough for a late landing that holds the WAL upload for a
    // minute, and for abandoned checkpoints' 30 s pauses: a pointer put
    // held for up to a minute makes every later conditional put of
    // `manifest/latest` meet a 409 until it lands, which abandons one or
    // two checkpoints (seeds 916 and 1137 of 1,500 needed more than 180 s).
    const WAIT: Duration = Duration::from_secs(360);
    if !wait_checkpoints(&a, want, WAIT).await {
        world.violation(
            Kind::Node,
            format!(
                "node a completed fewer than {want} checkpoints in {WAIT:?}: {:?}",
                a.status.get()
            ),
        );
    }
    sleep(millis(0..2_000)).await;
    world.stop_clients().await;
    vec![a]
}

/// GC racing a paused writer: node a (checkpointing, GC keeping one) is
/// paused — in half the runs while a checkpoint or its GC pass is running
/// — node b restores from the bucket, takes it over, serves its own
/// clients and checkpoints and collects; then either b goes on, or b stops
/// and a `t4 gc --keep 1` pass runs (core's [`GcRun`] from a machine of its
/// own); then a resumes with its clients still on it.
async fn gc_race(world: &mut World, gc_deletes_fences: bool) -> (Vec<SimNode>, ZombieFacts) {
    let (a, mut facts, up) = start_zombie(world).await;
    if !up {
        return (vec![a], facts);
    }
    wait_checkpoints(&a, 1, Duration::from_secs(30)).await;
    sleep(millis(0..2_000)).await;
    if thread_rng().gen_bool(0.5) {
        let until = madsim::time::Instant::now() + Duration::from_secs(10);
        while !a.status.get().checkpointing && madsim::time::Instant::now() < until {
            sleep(Duration::from_millis(5)).await;
        }
        if a.status.get().checkpointing {
            world.count("paused-mid-checkpoint");
        }
    }
    let handle = Handle::current();
    let (b, up) = pause_and_take_over(world, &a, &mut facts).await;
    if !up {
        return (vec![a, b], facts);
    }
    wait_checkpoints(&b, 2, Duration::from_secs(30)).await;
    sleep(millis(0..2_000)).await;
    if gc_deletes_fences || thread_rng().gen_bool(0.5) {
        // `t4 gc` must not run while the leader checkpoints (gc.rs): stop
        // b first. The paused zombie may be mid-checkpoint: that race is
        // the point.
        handle.kill(b.handle.id());
        world.count("taker-stopped");
        match external_gc(world, 1, gc_deletes_fences).await {
            Ok(outcome) => {
                world.count("external-gc");
                if let Some(why) = outcome.error {
                    world.violation(Kind::Node, format!("the t4 gc pass stopped: {why}"));
                }
            }
            Err(why) => world.violation(Kind::Node, why),
        }
    }
    handle.resume(a.handle.id());
    sleep(Duration::from_secs(4)).await;
    world.stop_clients().await;
    check_zombie_refuses(world, &a).await;
    (vec![a, b], facts)
}

/// A write sent to the zombie now is refused as fenced, and the zombie
/// knows it was. The zombie learns it from its next upload, which the
/// store may hold for up to a minute (a late landing; gc-race seed 229
/// held a resumed zombie's retry 45 s): until then a write is answered
/// `Unavailable` or not at all, and the probe asks again, for at most
/// 90 s. An acknowledgement is a violation at once.
async fn check_zombie_refuses(world: &mut World, a: &SimNode) {
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
            let until = madsim::time::Instant::now() + Duration::from_secs(90);
            loop {
                let answer = client
                    .call(
                        Request::Core(ClientRequest::Write(put.clone())),
                        Duration::from_secs(10),
                    )
                    .await;
                let settled = matches!(answer, Some(Ok(_) | Err(t4_core::Error::Fenced(_))));
                if settled || madsim::time::Instant::now() >= until {
                    return answer;
                }
                sleep(Duration::from_secs(1)).await;
            }
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
            format!("a write sent to the zombie was answered {other:?} for 90 s, not Fenced"),
        ),
    }
    if a.status.get().fenced.is_none() {
        world.violation(
            Kind::Zombie,
            format!("node a was never fenced: {:?}", a.status.get()),
        );
    }
}

/// One `t4 gc --keep <keep>` pass over the bucket, as the CLI runs it:
/// core's [`GcRun`], each operation retried on retryable failures. With
/// `delete_fences` (the deliberate bug) it also deletes the covered WAL
/// objects the plan kept as possible fences.
async fn external_gc(
    world: &mut World,
    keep: usize,
    delete_fences: bool,
) -> Result<GcOutcome, String> {
    const ATTEMPTS_MAX: u32 = 20;
    let s3 = world.s3.client("t4-gc");
    let machine = world.probe_machine("gc");
    machine
        .spawn(async move {
            let run = |op: ObjectOp| {
                let s3 = s3.clone();
                async move {
                    let mut failures = 0;
                    loop {
                        match s3.execute(op.clone(), OBJECT_TIMEOUT).await {
                            Err(ObjectError::Retryable(why)) => {
                                failures += 1;
                                if failures >= ATTEMPTS_MAX {
                                    return Err(ObjectError::Retryable(why));
                                }
                                sleep(Duration::from_millis(50 * u64::from(failures))).await;
                            }
                            result => return result,
                        }
                    }
                }
            };
            let (mut pass, mut op) = GcRun::start(keep, false);
            let outcome = loop {
                match pass.on_result(run(op.clone()).await) {
                    GcProgress::Next(next) | GcProgress::Retry(next) => op = next,
                    GcProgress::Finished(outcome) => break outcome,
                }
            };
            if delete_fences {
                for first in outcome.plan.iter().flat_map(|p| &p.fences_kept) {
                    let key = wal_key(*first);
                    match run(ObjectOp::Delete { key: key.clone() }).await {
                        Ok(ObjectReply::Deleted) | Err(ObjectError::NotFound) => {}
                        other => return Err(format!("(bug) deleting {key}: {other:?}")),
                    }
                }
            }
            Ok(outcome)
        })
        .await
        .map_err(|e| format!("gc task: {e}"))?
}
