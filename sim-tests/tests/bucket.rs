//! Bucket mode in the simulator (`sim_tests::bucket`): disk loss, a zombie,
//! S3 outages, lost responses and late landings, a damaged checkpoint, GC
//! racing a paused writer, each over a fixed range
//! of seeds and checked end to end (no acknowledged write lost, the
//! bucket's WAL objects form one log, a fresh node serves it, the client
//! history is linearizable, plus each scenario's own rules); and
//! deliberately broken variants the checks must catch.
//!
//! - `SIM_BUCKET_SEED=N`: only seed N, in every test (reproduce a failure);
//! - `SIM_BUCKET_SEEDS=A..B` (or `N` for `0..N`, or `a,b,c`): those seeds
//!   instead of each test's default range;
//! - `SIM_VERBOSE=1`: one line per seed; `SIM_DEBUG=1` (with one seed):
//!   the bucket, the store's write log, the log and the history.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use sim_tests::bucket::{run, summary, Scenario, ScenarioConfig, ScenarioReport};
use sim_tests::runner::seeds_from_vars;
use t4_io_sim::server::Bugs;

/// Seeds that once found a bug, by scenario; always run (with
/// `SIM_BUCKET_SEEDS` too). Zombie seed 0 found the one product bug these
/// scenarios found: a resumed zombie served reads from its stale state
/// (its client read revision 7 at 4.25 s after b acknowledged revision 10
/// at 3.79 s), fixed by the read lease (core's `read_lease`); 15 of seeds
/// 0..20 showed it, and `reads_without_the_lease_are_caught` keeps the
/// check honest. While the scenarios were
/// written, seeds found bugs in the harness itself, since fixed: zombie
/// seeds 0..4 (reads refused `Unavailable` / `Fenced` were recorded as
/// answers the model must give), outage seeds 9, 10, 13, 17 and 20 (the
/// recovery bound ignored requests the store held from before the outage)
/// and 300, 776, 1435, 1804 (an outage shorter than `2U` need not make any
/// write fail) — the draws have changed since, so they replay differently.
///
/// Merging the read lease with simulated checkpoints found, beyond core bugs
/// fixed then: gc-race 857 (a pointer landing 35 s late after `t4 gc` took
/// its checkpoint: the pointer rule now skips late landings) and
/// damaged-checkpoint 916 and 1137 (a held pointer put blocked the key long
/// enough to abandon checkpoints past the scenario's wait) — outside the
/// default ranges, so listed here.
const REGRESSIONS: &[(Scenario, u64)] = &[
    (Scenario::Zombie, 0),
    (Scenario::GcRace, 857),
    (Scenario::DamagedCheckpoint, 916),
    (Scenario::DamagedCheckpoint, 1137),
];

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    seeds_from_vars("SIM_BUCKET_SEED", "SIM_BUCKET_SEEDS", default)
}

fn verbose() -> bool {
    std::env::var_os("SIM_VERBOSE").is_some() || std::env::var_os("SIM_BUCKET_SEED").is_some()
}

/// Runs `config(seed)` for each seed; the reports, and the panics by seed.
fn play(
    test: &str,
    seeds: &[u64],
    config: impl Fn(u64) -> ScenarioConfig,
    until_caught: impl Fn(&ScenarioReport) -> bool,
) -> (Vec<ScenarioReport>, Vec<(u64, String)>) {
    let mut reports = Vec::new();
    let mut panics = Vec::new();
    for &seed in seeds {
        let cfg = config(seed);
        match std::panic::catch_unwind(AssertUnwindSafe(|| run(&cfg))) {
            Ok(report) => {
                if verbose() {
                    println!(
                        "{test} seed {seed}: ops={} acked={} unknown={} checked={} log={} slowest_answer={}ms slowest_recovery={}ms faults={:?} violations={} wall={:.2}s",
                        report.ops,
                        report.acked_writes,
                        report.unknown,
                        report.checked,
                        report.log_entries,
                        report.slowest_answer_ms,
                        report.slowest_recovery_ms,
                        report.faults,
                        report.violations.len(),
                        report.wall_secs
                    );
                }
                let stop = until_caught(&report);
                reports.push(report);
                if stop {
                    break;
                }
            }
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".to_owned());
                panics.push((seed, what));
            }
        }
    }
    (reports, panics)
}

fn failures(test: &str, reports: &[ScenarioReport], panics: &[(u64, String)]) -> Vec<String> {
    let reproduce = |seed: u64| {
        format!(
            "reproduce: SIM_BUCKET_SEED={seed} cargo test -p sim-tests --release --test bucket {test} -- --include-ignored --nocapture"
        )
    };
    let mut out: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| {
            let what: Vec<String> = r.violations.iter().map(ToString::to_string).collect();
            format!(
                "seed {} failed:\n  {}\n  {}",
                r.seed,
                what.join("\n  "),
                reproduce(r.seed)
            )
        })
        .collect();
    out.extend(
        panics
            .iter()
            .map(|(seed, p)| format!("seed {seed} panicked: {p}\n  {}", reproduce(*seed))),
    );
    out
}

/// Plays `scenario` over `default` seeds (and its regression seeds); every
/// run must pass every check.
fn scenario_seeds(test: &str, scenario: Scenario, default: std::ops::Range<u64>) {
    let wall = Instant::now();
    let mut all = seeds(default);
    for (s, seed) in REGRESSIONS {
        if *s == scenario && !all.contains(seed) {
            all.push(*seed);
        }
    }
    let (reports, panics) = play(
        test,
        &all,
        |seed| ScenarioConfig::new(scenario, seed),
        |_| false,
    );
    println!("{}", summary(test, &reports, panics.len(), wall));
    let failed = failures(test, &reports, &panics);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Plays `scenario` with `bugs` until a run shows a data violation (an
/// acknowledged write lost, a history that is not linearizable, a bucket or
/// final state that contradicts the acknowledgements, a zombie that
/// acknowledged after the fence); panics if none does.
fn expect_caught(test: &str, scenario: Scenario, bugs: Bugs, default: std::ops::Range<u64>) {
    expect_caught_with(test, default, |seed| ScenarioConfig {
        bugs,
        ..ScenarioConfig::new(scenario, seed)
    });
}

/// [`expect_caught`] with any broken configuration.
fn expect_caught_with(
    test: &str,
    default: std::ops::Range<u64>,
    config: impl Fn(u64) -> ScenarioConfig,
) {
    let wall = Instant::now();
    let caught = |r: &ScenarioReport| r.violations.iter().any(|v| v.kind.is_data());
    let (reports, panics) = play(test, &seeds(default), config, caught);
    println!("{}", summary(test, &reports, panics.len(), wall));
    assert!(
        panics.is_empty(),
        "{test}: runs panicked instead of reporting: {panics:?}"
    );
    let first = reports.iter().find(|r| caught(r)).unwrap_or_else(|| {
        panic!(
            "{test}: the deliberately broken variant was not caught in {} seeds",
            reports.len()
        )
    });
    println!(
        "{test}: caught after {} seeds; seed {}:\n  {}",
        reports.len(),
        first.seed,
        first
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// Disk loss in sync mode never loses an acknowledged write.
#[test]
fn disk_loss_keeps_every_acknowledged_write() {
    scenario_seeds(
        "disk_loss_keeps_every_acknowledged_write",
        Scenario::DiskLoss,
        0..500,
    );
}

/// A paused-then-resumed previous node is fenced and acknowledges nothing
/// after the fence; both nodes' histories together, reads included, are
/// linearizable.
#[test]
fn a_zombie_is_fenced_and_loses_nothing() {
    scenario_seeds(
        "a_zombie_is_fenced_and_loses_nothing",
        Scenario::Zombie,
        0..500,
    );
}

/// S3 outages fail writes within a bound, never hang them, never
/// acknowledge one the bucket lacks; writes resume without a restart.
#[test]
fn s3_outage_fails_fast_and_recovers_without_restart() {
    scenario_seeds(
        "s3_outage_fails_fast_and_recovers_without_restart",
        Scenario::Outage,
        0..500,
    );
}

/// Lost answers, late landings and crashes lose nothing, duplicate
/// nothing, and never fence the node by its own late writes.
#[test]
fn lost_responses_and_late_landings_lose_nothing() {
    scenario_seeds(
        "lost_responses_and_late_landings_lose_nothing",
        Scenario::LostResponses,
        0..500,
    );
}

/// A damaged newest checkpoint (bytes flipped, a file or the manifest
/// deleted, a garbled or path-traversing manifest) is skipped with a
/// warning and the previous one restored (or the WAL from index 1 when
/// none is left); nothing acknowledged is lost.
#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one() {
    scenario_seeds(
        "a_damaged_checkpoint_falls_back_to_the_previous_one",
        Scenario::DamagedCheckpoint,
        0..300,
    );
}

/// GC (the new writer's, or a `t4 gc` pass) running while the previous
/// writer is paused, often mid-checkpoint, deletes nothing anyone needs:
/// the zombie is fenced, a fresh node restores, nothing acknowledged is
/// lost.
#[test]
fn gc_racing_a_paused_writer_deletes_nothing_needed() {
    scenario_seeds(
        "gc_racing_a_paused_writer_deletes_nothing_needed",
        Scenario::GcRace,
        0..500,
    );
}

/// The checks bite: a restore that does not fall back from a damaged
/// checkpoint (it starts empty instead) is caught.
#[test]
fn a_restore_without_fallback_is_caught() {
    let bugs = Bugs {
        restore_without_fallback: true,
        ..Bugs::default()
    };
    expect_caught(
        "a_restore_without_fallback_is_caught",
        Scenario::DamagedCheckpoint,
        bugs,
        0..20,
    );
}

/// The checks bite: a restore that does not check sizes and hashes takes
/// a checkpoint with flipped bytes for a good one.
#[test]
fn a_restore_without_verification_is_caught() {
    let bugs = Bugs {
        restore_skips_verification: true,
        ..Bugs::default()
    };
    expect_caught(
        "a_restore_without_verification_is_caught",
        Scenario::DamagedCheckpoint,
        bugs,
        0..50,
    );
}

/// The checks bite: a `t4 gc` pass that also deletes the fence objects
/// its plan kept lets the resumed zombie write into the new writer's log.
#[test]
fn gc_deleting_fences_is_caught() {
    expect_caught_with("gc_deleting_fences_is_caught", 0..20, |seed| {
        ScenarioConfig {
            gc_deletes_fences: true,
            ..ScenarioConfig::new(Scenario::GcRace, seed)
        }
    });
}

/// The checks bite: a checkpoint upload that takes a 409 on an SST for
/// its presence (core before it listed the key to check) writes manifests
/// naming SSTs still in flight; GC then keeps only such a checkpoint and
/// deletes the WAL it covers, and the bucket is not restorable.
#[test]
fn a_conflict_taken_for_an_uploaded_sst_is_caught() {
    let bugs = Bugs {
        sst_conflict_is_presence: true,
        ..Bugs::default()
    };
    expect_caught(
        "a_conflict_taken_for_an_uploaded_sst_is_caught",
        Scenario::GcRace,
        bugs,
        0..100,
    );
}

/// The checks bite: uploading with a plain PUT lets the zombie overwrite
/// the new node's log.
#[test]
fn plain_put_uploads_are_caught() {
    let bugs = Bugs {
        upload_without_condition: true,
        ..Bugs::default()
    };
    expect_caught(
        "plain_put_uploads_are_caught",
        Scenario::Zombie,
        bugs,
        0..50,
    );
}

/// The checks bite: a driver that serves linearizable reads without the
/// read lease lets the resumed zombie answer from stale state.
#[test]
fn reads_without_the_lease_are_caught() {
    let bugs = Bugs {
        read_without_lease: true,
        ..Bugs::default()
    };
    expect_caught(
        "reads_without_the_lease_are_caught",
        Scenario::Zombie,
        bugs,
        0..50,
    );
}

/// The checks bite: a driver that takes a timed-out or failed upload for a
/// landed one acknowledges writes the bucket lacks during an outage.
#[test]
fn failed_uploads_taken_for_success_are_caught() {
    let bugs = Bugs {
        upload_failure_is_success: true,
        ..Bugs::default()
    };
    expect_caught(
        "failed_uploads_taken_for_success_are_caught",
        Scenario::Outage,
        bugs,
        0..50,
    );
}

/// Same seed, same run (history and the store's write log), in every
/// scenario.
#[test]
fn same_seed_same_trace() {
    let seed = seeds(3..4)[0];
    for scenario in [
        Scenario::DiskLoss,
        Scenario::Zombie,
        Scenario::Outage,
        Scenario::LostResponses,
        Scenario::DamagedCheckpoint,
        Scenario::GcRace,
    ] {
        let config = ScenarioConfig::new(scenario, seed);
        let (a, b) = (run(&config), run(&config));
        assert_eq!(
            a.trace, b.trace,
            "{scenario:?} seed {seed} is not deterministic"
        );
        assert!(a.acked_writes > 5, "the run did something: {a:?}");
    }
}
