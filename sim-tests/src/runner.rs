//! Running many seeds: which ones (environment), how many at once, and the
//! one-line summary.
//!
//! - `SIM_SEED=N` runs exactly seed N (reproduce a failure);
//! - `SIM_SEEDS=A..B` runs seeds A to B-1; `SIM_SEEDS=N` runs 0..N;
//!   `SIM_SEEDS=a,b,c` runs those;
//! - `SIM_JOBS=J` runs J seeds at once (default: the machine's cores).
//!
//! Without them a test runs its fixed default range: never seeds drawn from
//! the wall clock.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::run::{run, RunConfig, RunReport};

/// The seeds to run: `SIM_SEED` / `SIM_SEEDS`, else `default`.
///
/// # Panics
/// A malformed variable.
#[must_use]
pub fn seeds_from_env(default: std::ops::Range<u64>) -> Vec<u64> {
    seeds_from_vars("SIM_SEED", "SIM_SEEDS", default)
}

/// The seeds to run: variable `one` (exactly that seed), else `many`
/// (`A..B`, `N` for `0..N`, or `a,b,c`), else `default`.
///
/// # Panics
/// A malformed variable.
#[must_use]
pub fn seeds_from_vars(one: &str, many: &str, default: std::ops::Range<u64>) -> Vec<u64> {
    if let Ok(seed) = std::env::var(one) {
        return vec![seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{one} must be a number"))];
    }
    let Ok(spec) = std::env::var(many) else {
        return default.collect();
    };
    let spec = spec.trim();
    if let Some((a, b)) = spec.split_once("..") {
        let a: u64 = a.parse().unwrap_or_else(|_| panic!("{many}=A..B"));
        let b: u64 = b.parse().unwrap_or_else(|_| panic!("{many}=A..B"));
        return (a..b).collect();
    }
    if spec.contains(',') {
        return spec
            .split(',')
            .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{many}=a,b,c")))
            .collect();
    }
    (0..spec.parse().unwrap_or_else(|_| panic!("{many}=N"))).collect()
}

/// `SIM_VERBOSE=1` (or a single `SIM_SEED`) prints one line per seed.
fn verbose() -> bool {
    std::env::var_os("SIM_VERBOSE").is_some() || std::env::var_os("SIM_SEED").is_some()
}

/// `SIM_JOBS`, else the number of cores.
#[must_use]
pub fn jobs_from_env() -> usize {
    std::env::var("SIM_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

/// A seed's outcome: its report, or the panic that ended it.
pub type Outcome = (u64, Result<RunReport, String>);

/// Runs `config(seed)` for every seed on `jobs` threads; outcomes in seed order.
pub fn run_seeds(
    seeds: &[u64],
    jobs: usize,
    config: impl Fn(u64) -> RunConfig + Sync,
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(seeds.len()).max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { return };
                let cfg = config(seed);
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&cfg)))
                    .map_err(|p| panic_message(&p));
                if verbose() {
                    match &outcome {
                        Ok(r) => eprintln!(
                            "seed {seed}: ops={} unknown={} checked={} steps={} watch_events={} faults={:?} sim={:.1}s check={:.1}s violations={}",
                            r.ops, r.unknown, r.checked, r.steps, r.watch_events, r.faults, r.wall_sim_secs, r.wall_check_secs, r.violations.len()
                        ),
                        Err(p) => eprintln!("seed {seed}: panicked: {p}"),
                    }
                }
                results.lock().expect("results lock").push((seed, outcome));
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(seed, _)| *seed);
    results
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "panic".to_owned()
    }
}

/// The run summary line (issue: seeds, simulated time, ops issued / ok /
/// failed / unknown, ops checked, watch events validated, faults by kind,
/// checker unknowns, wall time).
#[must_use]
pub fn summary(name: &str, outcomes: &[Outcome], wall: Instant) -> String {
    let reports: Vec<&RunReport> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    let sum = |f: fn(&RunReport) -> usize| reports.iter().map(|r| f(r)).sum::<usize>();
    let faults = crate::run::faults_line(reports.iter().map(|r| &r.faults));
    format!(
        "sim {name}: seeds={} sim_time={:.0}s ops={} ok={} failed={} unknown={} checked={} resolved={} watch_events={} watches={} leases={} faults[{}] checker_unknown={} panics={} wall={:.1}s",
        outcomes.len(),
        reports.iter().map(|r| r.sim_secs).sum::<f64>(),
        sum(|r| r.ops),
        sum(|r| r.ok),
        sum(|r| r.failed),
        sum(|r| r.unknown),
        sum(|r| r.checked),
        sum(|r| r.resolved),
        sum(|r| r.watch_events),
        sum(|r| r.watches),
        sum(|r| r.leases),
        faults,
        reports.iter().filter(|r| r.checker_unknown).count(),
        outcomes.len() - reports.len(),
        wall.elapsed().as_secs_f64(),
    )
}

/// The failures among `outcomes`, each with the command that reproduces it.
#[must_use]
pub fn failures(test: &str, outcomes: &[Outcome]) -> Vec<String> {
    let mut out = Vec::new();
    for (seed, outcome) in outcomes {
        let what = match outcome {
            Err(panic) => vec![format!("panicked: {panic}")],
            Ok(r) if !r.violations.is_empty() => r.violations.clone(),
            Ok(_) => continue,
        };
        out.push(format!(
            "seed {seed} failed:\n  {}\n  reproduce: SIM_SEED={seed} cargo test -p sim-tests --release --test chaos {test} -- --nocapture",
            what.join("\n  ")
        ));
    }
    out
}
