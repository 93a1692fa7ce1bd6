//! `SIM_LOG=<filter>` (a `tracing` env filter, e.g. `info` or
//! `t4_core=debug`): the nodes' logs of a run on stderr, stamped with the
//! simulated time and the node (io-sim runs each node in a span named by
//! it). Meant for one seed at a time; off when the variable is unset.

use std::fmt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Simulated time since the runtime started, in seconds.
struct SimTime;

impl FormatTime for SimTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match madsim::time::TimeHandle::try_current() {
            Some(time) => write!(w, "{:>10.3}s", time.elapsed().as_secs_f64()),
            None => write!(w, "{:>11}", "-"),
        }
    }
}

/// Installs the log for the calling thread (each run plays on a thread of
/// its own) when `SIM_LOG` is set; keep the guard for the run.
#[must_use]
pub fn install() -> Option<tracing::subscriber::DefaultGuard> {
    let filter = std::env::var("SIM_LOG").ok()?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_timer(SimTime)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .finish();
    Some(tracing::subscriber::set_default(subscriber))
}
