//! Cluster mode in the simulator (`sim_tests::cluster`): 3- and 5-node
//! clusters on one fake bucket under crashes, a majority losing power,
//! disk loss of one member at a time, isolation, partial and one-way
//! partitions, bucket cuts, long pauses, message loss, drifting and offset
//! clocks and a flaky S3; checked end to end (one leader per term, every
//! node's log agrees, no acknowledged write lost, the client history is
//! linearizable, convergence after the faults stop); and deliberately
//! broken protocols the checks must catch.
//!
//! - `SIM_CLUSTER_SEED=N`: only seed N, in every test;
//! - `SIM_CLUSTER_SEEDS=A..B` (or `N` for `0..N`, or `a,b,c`): those seeds
//!   instead of each test's default range;
//! - `SIM_VERBOSE=1`: one line per seed;
//! - `SIM_CLUSTER_TIER=0|1`: the bucket tier off or on for every seed
//!   (default: on for odd seeds);
//! - `SIM_LOG=<filter>`: the nodes' logs (e.g. `info`), for one seed.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use sim_tests::cluster::{run, summary, ClusterReport, ClusterRunConfig};
use sim_tests::runner::seeds_from_vars;
use t4_core::cluster::ClusterMutants;

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    seeds_from_vars("SIM_CLUSTER_SEED", "SIM_CLUSTER_SEEDS", default)
}

fn verbose() -> bool {
    std::env::var_os("SIM_VERBOSE").is_some() || std::env::var_os("SIM_CLUSTER_SEED").is_some()
}

/// Runs `config(seed)` for each seed; the reports and the panics by seed.
fn play(
    test: &str,
    seeds: &[u64],
    config: impl Fn(u64) -> ClusterRunConfig,
) -> (Vec<ClusterReport>, Vec<(u64, String)>) {
    let wall = Instant::now();
    let mut reports = Vec::new();
    let mut panics = Vec::new();
    for &seed in seeds {
        let cfg = config(seed);
        match std::panic::catch_unwind(AssertUnwindSafe(|| run(&cfg))) {
            Ok(r) => {
                if verbose() || !r.violations.is_empty() {
                    println!(
                        "{test} seed {seed}: ops={} acked={} checked={} terms={} failovers={:?} faults={:?} violations={:?} wall={:.1}s",
                        r.ops, r.acked_writes, r.checked, r.leader_terms, r.failovers_ms, r.faults, r.violations, r.wall_secs
                    );
                }
                reports.push(r);
            }
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panics.push((seed, why));
            }
        }
    }
    println!("{}", summary(test, &reports, panics.len(), wall));
    (reports, panics)
}

fn assert_clean(test: &str, reports: &[ClusterReport], panics: &[(u64, String)]) {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| format!("seed {}: {}", r.seed, r.violations.join(" | ")))
        .chain(
            panics
                .iter()
                .map(|(s, why)| format!("seed {s} panicked: {why}")),
        )
        .collect();
    assert!(failed.is_empty(), "{test}: {}", failed.join("\n"));
}

#[test]
fn three_nodes() {
    let (reports, panics) = play("3 nodes", &seeds(0..100), |seed| {
        ClusterRunConfig::new(seed, 3)
    });
    assert_clean("3 nodes", &reports, &panics);
}

#[test]
fn five_nodes() {
    let (reports, panics) = play("5 nodes", &seeds(1_000..1_050), |seed| {
        ClusterRunConfig::new(seed, 5)
    });
    assert_clean("5 nodes", &reports, &panics);
}

/// Runs seeds of `range` one at a time until one breaks a check (the
/// mutant is caught): that seed, or `None`. Mutants take particular
/// interleavings, so a fixed seed stops catching them whenever the protocol
/// or the workload changes the random sequence; searching keeps the test
/// honest without picking seeds by hand.
fn first_caught(
    test: &str,
    range: std::ops::Range<u64>,
    config: impl Fn(u64) -> ClusterRunConfig,
) -> Option<u64> {
    for seed in seeds(range) {
        let (reports, panics) = play(test, &[seed], &config);
        if !panics.is_empty() || reports.iter().any(|r| !r.violations.is_empty()) {
            return Some(seed);
        }
    }
    None
}

/// Committing on the followers that are connected instead of a majority
/// of members (T4's rule) must be caught. It takes a rare interleaving
/// (about 1 seed in 70).
#[test]
fn committing_on_connected_followers_is_caught() {
    let caught = first_caught("mutant commit-on-connected", 0..500, |seed| {
        ClusterRunConfig {
            mutants: ClusterMutants {
                commit_on_connected: true,
                ..ClusterMutants::default()
            },
            ..ClusterRunConfig::new(seed, 3)
        }
    });
    assert!(caught.is_some(), "the mutant went unnoticed");
}

/// A follower applying entries before they are committed must be caught
/// (its serializable reads show states no committed prefix had, or its
/// log must be cut below what it applied).
#[test]
fn applying_uncommitted_entries_is_caught() {
    let caught = first_caught("mutant apply-uncommitted", 0..200, |seed| {
        ClusterRunConfig {
            mutants: ClusterMutants {
                apply_uncommitted: true,
                ..ClusterMutants::default()
            },
            ..ClusterRunConfig::new(seed, 3)
        }
    });
    assert!(caught.is_some(), "the mutant went unnoticed");
}

/// Seed 2,205 (5 nodes), found by the 400-seed run after the cluster
/// simulation landed: the simulator gave every process start the same core
/// seed, so a follower that restarted reused its forwarded-request ids, and
/// the leader's late answer to the previous incarnation's put reached
/// another client's put. Fixed in the simulator (the core's exact scenario
/// is `a_late_answer_to_a_previous_incarnation_is_ignored`); kept with the
/// fault sequence of its time (no removals, serializable reads or
/// watchers).
#[test]
fn regression_seeds() {
    let (reports, panics) = play("regressions", &[2_205], |seed| ClusterRunConfig {
        removals: false,
        serializable_rate: 0.0,
        watchers: 0,
        lease_clients: 0,
        tier: false,
        peer_buffer: ClusterRunConfig::new(0, 5).peer_buffer,
        ..ClusterRunConfig::new(seed, 5)
    });
    assert_clean("regressions", &reports, &panics);
}

/// Seeds found when GC came to the tier runs (a member behind the bucket's
/// GC starts over from the newest checkpoint), each kept with its
/// configuration:
///
/// - 107 (CI settings, GC keeping 1): n2, away since the start, started
///   over while n1 was rejoining after its disk loss; moving n2's hard
///   state aside made it a non-voter too, and with two of three members
///   unable to vote no leader could be elected. A member whose whole log
///   the checkpoint covers now keeps its hard state (and its vote).
/// - 44 (tier and GC on for every seed): a candidate behind the best
///   promiser's memory, with the bucket lacking the entries too, gave up
///   its round and, holding the lock, claimed the next term at once, term
///   after term (193 of them), so the member with the best log never took
///   over. A candidate that gives up now claims nothing for two lock TTLs.
/// - 100 (likewise): the new leader's followers were behind its memory
///   and the entries were in no WAL object; the leader uploaded only once
///   serving, which needed their acknowledgements: it now uploads its
///   applied entries as soon as it leads.
/// - 25 (likewise): a follower's catch-up from the bucket found a hole
///   the leader had already brought it past, and asked to start over; a
///   stale catch-up now starts again from the applied index.
/// - 16 (likewise): a candidate restarted with a long log it did not know
///   committed fetched the best log from its committed prefix, which
///   neither the best promiser's memory nor the bucket (after GC) held; it
///   started over and lost its vote, and with the third member rejoining
///   after a lost disk no leader could be elected. A candidate now fetches
///   only what follows its own log when the best promiser's entry there
///   has the same term.
/// - 276 (likewise): a start-over picked the newest checkpoint, whose SSTs
///   GC deleted while they downloaded (a newer checkpoint had superseded
///   it); the member started from an empty engine and never caught up. A
///   restore whose checkpoint vanished now lists the bucket again.
/// - 417 (likewise): a member started over with a log reaching past the
///   checkpoint, so it lost its vote, and with another member rejoining
///   after a lost disk no leader could be elected. A start-over now keeps
///   the hard state whenever the old log allows it, and the log after the
///   checkpoint when it continues the checkpoint
///   (`t4_core::cluster::start_over_keeps`).
/// - 511 (likewise): a member crashed while its start-over restored the
///   checkpoint; the next start no longer knew the hard state set aside
///   was its own, and it rejoined as a non-voter. An interrupted start-over
///   now resumes as the same start-over.
/// - 1254 (likewise, a checker fix): every ledger holding a lease's revoke
///   was cleared by a start-over or a lost disk, and the lease check took
///   the lease for never revoked; a cleared ledger now keeps what it held
///   for that check.
#[test]
fn gc_regression_seeds() {
    let (reports, panics) = play("gc regressions", &[107], |seed| {
        ClusterRunConfig::new(seed, 3)
    });
    assert_clean("gc regressions", &reports, &panics);
    let (reports, panics) = play(
        "gc regressions",
        &[44, 100, 25, 16, 276, 417, 511, 1254, 5791],
        |seed| {
            let keep_all = ClusterRunConfig::new(seed, 3);
            ClusterRunConfig {
                tier: true,
                gc_keep: 1,
                peer_buffer: 16 + usize::try_from(seed % 32).expect("fits"),
                ..keep_all
            }
        },
    );
    assert_clean("gc regressions", &reports, &panics);
}
