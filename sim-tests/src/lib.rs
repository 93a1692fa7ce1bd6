//! Seeded chaos runs of t4 in the simulator (`cargo test -p sim-tests`), and
//! the checkers they feed: linearizability of the client history
//! ([`lincheck`]), watch guarantees ([`watchcheck`]); and the bucket-mode
//! scenarios against the fake S3 ([`bucket`]); cluster mode's 3- and 5-node
//! chaos runs ([`cluster`]).
#[cfg(not(madsim))]
compile_error!("sim-tests only builds with `--cfg madsim` (set for every build by the workspace's .cargo/config.toml)");

pub mod bucket;
pub mod cluster;
pub mod history;
pub mod leasecheck;
pub mod lincheck;
pub mod prefixcheck;
pub mod resolve;
pub mod run;
pub mod runner;
pub mod simlog;
pub mod truth;
pub mod watchcheck;
pub mod workload;
