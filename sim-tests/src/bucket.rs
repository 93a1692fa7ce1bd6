//! Bucket mode — one node whose writes are acknowledged after the local
//! fsync **and** the creation of their WAL object in the bucket — in the
//! simulator, against the fake S3 (`t4_io_sim::s3`), in six seeded
//! scenarios, each checked end to end with the chaos suite's checkers.
//!
//! | scenario | what happens | what must hold besides the common checks |
//! |---|---|---|
//! | [`Scenario::DiskLoss`] | under load, the node's disk is lost at a random moment; the node restarts empty on the bucket | — |
//! | [`Scenario::Zombie`] | node `a` is paused, node `b` takes the bucket over and serves its own clients, `a` resumes and its clients go on | `a` ends fenced; every write `a` acknowledged is in the log before `b`'s fence barrier; a write sent to `a` at the end is refused; `a`'s reads after its pause are linearizable with everything else (its read lease has run out, so it reads the lock and learns it was taken over) |
//! | [`Scenario::Outage`] | one or two S3 outages (503s or a black hole, drawn per outage) longer than `unavailable_after`, under load | no call hangs; writes called during an outage and answered before its end fail with `Timeout` / `Unavailable`, at once once the node noticed; after each outage a probe write succeeds within a bound; the node never restarted |
//! | [`Scenario::LostResponses`] | lost answers, late landings and 500s after applying at high rates, and crashes of the node at random moments | the node is never fenced (by its own late landings) |
//! | [`Scenario::DamagedCheckpoint`] | under load with frequent checkpoints, then the newest checkpoint is damaged in the bucket (an SST's bytes flipped or the SST deleted, its meta file damaged, its manifest garbled, made path-traversing or deleted; with GC off sometimes every checkpoint) | the fresh node skipped every damaged checkpoint and restored the next older one (or the WAL from index 1 when none is left) |
//! | [`Scenario::GcRace`] | like the zombie, with frequent checkpoints and GC keeping one: `a` is paused (often mid-checkpoint or mid-GC), `b` restores from the bucket, takes it over and checkpoints and collects; in half the seeds `b` then stops and a `t4 gc --keep 1` pass runs before `a` resumes | the zombie's rules; the fresh node restores |
//!
//! Checkpoints: in the four first scenarios three seeds in four take them
//! (every 5, 10 or 20 entries, GC keeping 1 or 2, 5 % of the takes failing;
//! [`CheckpointPlan::for_seed`]), the last two always; so the fresh node
//! at the end usually restores a checkpoint and replays the WAL after it,
//! and background GC deletes old checkpoints, SSTs and covered WAL objects
//! throughout.
//!
//! The fake S3 is [`t4_io_sim::s3::S3Faults::flaky`] throughout (throttling, 500s, 409s on
//! overlapping conditional puts, some lost answers and late landings), with
//! the rates raised in [`Scenario::LostResponses`].
//!
//! # The common checks
//!
//! Clients run the chaos suite's etcd and Kubernetes mixes (every value
//! unique) and record every call ([`crate::workload::Recorder`]). At the
//! end every node is killed, the store's late requests are let land, and a
//! **fresh node on a wiped disk** starts on the bucket. Then:
//!
//! - **the bucket**: every WAL object ever written (from the store's write
//!   log: GC deletes covered ones) decodes, no key was written twice with
//!   different bytes, and together they form one chain from index 1 (each
//!   object starts right after the previous one ends, terms never go back);
//!   an object off the chain is a duplicate or contradictory object; no put
//!   appears twice in the log; every WAL object was created with
//!   `If-None-Match` and the lock only ever written conditionally;
//! - **GC** (replaying the write log): no fence object was ever deleted; a
//!   WAL object was deleted only while an intact checkpoint (manifest and
//!   every file present) at or after its last index was in the bucket; an
//!   SST only while no manifest in the bucket named it;
//! - **the restore**: the fresh node restored the newest intact checkpoint
//!   of the bucket as it was when the node started (or none when there is
//!   none), having skipped exactly the damaged ones newer than it;
//! - **no acknowledged write lost**: every acknowledged put is in that log
//!   at the acknowledged revision ([`crate::run`]'s check);
//! - **the fresh node** serves exactly the log's final state (a range over
//!   the whole key space equals the reference model's, revision included);
//! - **linearizability** of the whole client history, both nodes' clients
//!   together in the zombie scenario ([`crate::lincheck`], after
//!   [`crate::resolve`] settled what the log settles): a write answered
//!   `Timeout`, or not at all, may or may not have happened; one answered
//!   `Unavailable` or `Fenced` did not.
//!
//! The truth is the log from index 1 rebuilt from the write log, so it
//! stays whole while GC deletes what checkpoints cover; the fresh node,
//! which restores a checkpoint and replays only the WAL after it, must
//! still serve exactly its final state.
//!
//! # Bounds (outage)
//!
//! With `U` = [`UNAVAILABLE_AFTER`]: a write waits for at most one batch
//! ahead of it (whose upload lands or is given up within `U` of its start,
//! and then the queue is answered), then for its own batch's upload (given
//! up within `U`): **every call is answered within `2U` plus
//! [`ANSWER_SLACK`]**. The driver's [`OBJECT_TIMEOUT`] does not add to it —
//! the node gives up on a late upload by its own timer, even mid-attempt.
//! Once `2U` have passed since the outage began the node refuses new writes
//! at once (and an outage that long has made some call fail). A
//! linearizable read waits for a read of the lock (the read lease) for at
//! most `U`, then is refused `Unavailable`. After the outage a write
//! succeeds within [`RECOVERY_MAX`].

mod checkpoints;
mod checks;
mod damage;
mod scenarios;
mod world;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use t4_io_sim::server::Bugs;

use crate::lincheck::CheckConfig;

pub(crate) use checkpoints::newest_intact_in;
pub(crate) use checks::wal_objects_ever;
pub use world::{OBJECT_TIMEOUT, UNAVAILABLE_AFTER};

/// Slack on top of `2U` for "every call is answered": fsyncs, network
/// latency, timer granularity.
pub const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// After an outage ends, a probe write must succeed within this. The node
/// first finishes the attempt in flight (at most [`OBJECT_TIMEOUT`]) or
/// its backoff (at most 1 s), then lands the batch it held through the
/// outage, then the probe's. The store stays flaky, so either upload may
/// fail again; the slowest failure is a late landing, which holds its key
/// for up to 6 s here (every other conditional put on the key is answered
/// 409 until it lands). Two of those in a row take about 16 s; 2,000 seeds
/// saw at most 12 s.
pub const RECOVERY_MAX: Duration = Duration::from_secs(20);

/// Which scenario a run plays (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// The node's disk is lost under load.
    DiskLoss,
    /// A paused node is taken over, then resumes.
    Zombie,
    /// S3 outages, then recovery without a restart.
    Outage,
    /// Lost answers, late landings and crashes.
    LostResponses,
    /// The newest checkpoint is damaged before the fresh node starts.
    DamagedCheckpoint,
    /// GC runs while a writer is paused, then it resumes.
    GcRace,
}

impl Scenario {
    /// Its name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Scenario::DiskLoss => "disk-loss",
            Scenario::Zombie => "zombie",
            Scenario::Outage => "outage",
            Scenario::LostResponses => "lost-responses",
            Scenario::DamagedCheckpoint => "damaged-checkpoint",
            Scenario::GcRace => "gc-race",
        }
    }
}

/// How the nodes of a run take checkpoints and collect garbage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckpointPlan {
    /// [`t4_core::node::BucketConfig::checkpoint_every_entries`] (0: none).
    pub every_entries: u64,
    /// [`t4_core::node::BucketConfig::gc_keep`] (0: no background GC).
    pub gc_keep: usize,
    /// Probability that taking a checkpoint fails.
    pub take_failure_rate: f64,
}

impl CheckpointPlan {
    /// No checkpoints (the bucket's WAL alone carries the state).
    pub const OFF: CheckpointPlan = CheckpointPlan {
        every_entries: 0,
        gc_keep: 0,
        take_failure_rate: 0.0,
    };

    /// The CI settings of `scenario` for `seed` (from the seed alone, so a
    /// seed replays). A run writes about 50 entries, so checkpoints are
    /// frequent.
    #[must_use]
    pub fn for_seed(scenario: Scenario, seed: u64) -> CheckpointPlan {
        match scenario {
            Scenario::DiskLoss | Scenario::Zombie | Scenario::Outage | Scenario::LostResponses => {
                match seed % 4 {
                    0 => CheckpointPlan::OFF,
                    k => CheckpointPlan {
                        every_entries: [5, 10, 20][usize::try_from(k - 1).expect("small")],
                        gc_keep: 1 + usize::from(seed / 4 % 2 == 1),
                        take_failure_rate: 0.05,
                    },
                }
            }
            // Newest damaged: keep two (or no GC, where the WAL from
            // index 1 is the last fallback).
            Scenario::DamagedCheckpoint => CheckpointPlan {
                every_entries: [4, 6, 8][usize::try_from(seed / 3 % 3).expect("small")],
                gc_keep: [0, 2, 3][usize::try_from(seed % 3).expect("small")],
                take_failure_rate: 0.0,
            },
            Scenario::GcRace => CheckpointPlan {
                every_entries: [4, 6, 8][usize::try_from(seed % 3).expect("small")],
                gc_keep: 1,
                take_failure_rate: 0.0,
            },
        }
    }
}

/// One run.
#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    /// The seed (madsim's RNG, so every choice of the run).
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// Deliberate bugs (for the tests that prove the checks bite).
    pub bugs: Bugs,
    /// Linearizability checker budget.
    pub check: CheckConfig,
    /// Checkpoints and background GC.
    pub checkpoints: CheckpointPlan,
    /// [`Scenario::GcRace`]: always run the `t4 gc` pass, and (the
    /// deliberate bug) let it also delete the covered WAL objects the plan
    /// kept as possible fences.
    pub gc_deletes_fences: bool,
}

impl ScenarioConfig {
    /// The CI settings for `scenario` and `seed`.
    #[must_use]
    pub fn new(scenario: Scenario, seed: u64) -> ScenarioConfig {
        ScenarioConfig {
            seed,
            scenario,
            bugs: Bugs::default(),
            checkpoints: CheckpointPlan::for_seed(scenario, seed),
            gc_deletes_fences: false,
            check: CheckConfig {
                max_steps: std::env::var("SIM_CHECK_STEPS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(2_000_000),
            },
        }
    }
}

/// What kind of guarantee a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An acknowledged write is not in the bucket's log at its revision.
    Lost,
    /// The client history is not linearizable.
    NotLinearizable,
    /// The bucket breaks the WAL-object rules (an object off the chain, an
    /// entry twice, an unconditional write).
    Bucket,
    /// A fresh node on the bucket does not serve the log's final state.
    FinalState,
    /// The zombie acknowledged a write after the fence, or was never fenced.
    Zombie,
    /// A single writer was fenced (by its own late landing).
    SelfFenced,
    /// Outage behaviour: a call hung, a write succeeded during the outage or
    /// failed with the wrong error, or no recovery within the bound.
    Outage,
    /// A node did not start or serve in time, or broke a per-node
    /// invariant.
    Node,
    /// GC deleted something still needed: a fence, a WAL object no intact
    /// checkpoint covered, an SST a manifest in the bucket named.
    Gc,
    /// The fresh node did not restore the newest intact checkpoint, or
    /// did not skip a damaged one.
    Restore,
}

impl Kind {
    /// Whether it is about the data clients saw or the bucket holds (what a
    /// broken durability protocol shows), as opposed to timing and
    /// availability.
    #[must_use]
    pub fn is_data(self) -> bool {
        matches!(
            self,
            Kind::Lost
                | Kind::NotLinearizable
                | Kind::Bucket
                | Kind::FinalState
                | Kind::Zombie
                | Kind::Gc
                | Kind::Restore
        )
    }
}

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee.
    pub kind: Kind,
    /// What exactly.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct ScenarioReport {
    /// The seed.
    pub seed: u64,
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
    /// Writes acknowledged (each checked against the bucket's log).
    pub acked_writes: usize,
    /// Operations the linearizability checker placed.
    pub checked: usize,
    /// Unknown writes the final log settled.
    pub resolved: usize,
    /// The checker ran out of budget.
    pub checker_unknown: bool,
    /// Entries in the bucket's log at the end.
    pub log_entries: usize,
    /// Injected faults and scenario events (crashes, outages …) by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Outage: the slowest answer to any call, in milliseconds.
    pub slowest_answer_ms: u64,
    /// Outage: the longest time from an outage's end to a probe write's
    /// success, in milliseconds.
    pub slowest_recovery_ms: u64,
    /// Hash of the clients' history and the store's write log (same seed,
    /// same hash).
    pub trace: u64,
    /// What failed.
    pub violations: Vec<Violation>,
    /// Wall time (simulation and checks), in seconds.
    pub wall_secs: f64,
}

/// Plays one run and checks it.
///
/// The simulation runs on a thread of its own: a thread that has run a
/// madsim runtime keeps reading simulated time from `Instant::now`, and
/// the caller's wall-clock measurements must stay real.
///
/// # Panics
/// The run panicked (the panic is passed on).
#[must_use]
pub fn run(config: &ScenarioConfig) -> ScenarioReport {
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
                let collected = rt.block_on(async move { scenarios::play(&playing).await });
                checks::check(&cfg, collected)
            })
            .join()
    });
    let mut report = played.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    report.wall_secs = wall.elapsed().as_secs_f64();
    report
}

/// The summary line of a set of runs.
#[must_use]
pub fn summary(name: &str, reports: &[ScenarioReport], panics: usize, wall: Instant) -> String {
    let sum = |f: fn(&ScenarioReport) -> usize| reports.iter().map(f).sum::<usize>();
    let faults = crate::run::faults_line(reports.iter().map(|r| &r.faults));
    let max = |f: fn(&ScenarioReport) -> u64| reports.iter().map(f).max().unwrap_or(0);
    format!(
        "sim bucket {name}: seeds={} sim_time={:.0}s ops={} ok={} failed={} unknown={} acked_writes={} checked={} resolved={} log_entries={} slowest_answer={}ms slowest_recovery={}ms faults[{}] checker_unknown={} violations={} panics={panics} wall={:.1}s",
        reports.len() + panics,
        reports.iter().map(|r| r.sim_secs).sum::<f64>(),
        sum(|r| r.ops),
        sum(|r| r.ok),
        sum(|r| r.failed),
        sum(|r| r.unknown),
        sum(|r| r.acked_writes),
        sum(|r| r.checked),
        sum(|r| r.resolved),
        sum(|r| r.log_entries),
        max(|r| r.slowest_answer_ms),
        max(|r| r.slowest_recovery_ms),
        faults,
        reports.iter().filter(|r| r.checker_unknown).count(),
        sum(|r| r.violations.len()),
        wall.elapsed().as_secs_f64(),
    )
}
