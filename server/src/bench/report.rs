//! The result of a run, as text for people or as one JSON line for scripts.

use serde::Serialize;

use super::runner::Tally;

/// One run's result. The field names and their order are the `jsonl`
/// contract that comparison scripts read: change them only with those.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    workload: String,
    /// The endpoints, comma-separated as given.
    endpoint: String,
    /// Workers, each with its own connection (watchers not included).
    clients: usize,
    /// Measured operations, failed ones included.
    ops: u64,
    /// Measured operations that failed or timed out.
    errors: u64,
    /// Wall time of the measured phase.
    duration_s: f64,
    /// Successful operations per second: `(ops - errors) / duration_s`.
    ops_per_sec: f64,
    /// Latency percentiles of successful operations, in microseconds.
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    key_size: usize,
    val_size: usize,
    /// txn-cas operations whose compare failed (0 for other workloads).
    conflicts: u64,
}

impl Report {
    pub(super) fn new(
        workload: String,
        endpoint: String,
        clients: usize,
        key_size: usize,
        val_size: usize,
        tally: &Tally,
    ) -> Report {
        let duration_s = tally.elapsed.as_secs_f64();
        assert!(
            tally.errors <= tally.ops,
            "errors {} > ops {}",
            tally.errors,
            tally.ops
        );
        let succeeded = tally.ops - tally.errors;
        let quantile = |q: f64| {
            if tally.latency_us.is_empty() {
                0
            } else {
                tally.latency_us.value_at_quantile(q)
            }
        };
        Report {
            workload,
            endpoint,
            clients,
            ops: tally.ops,
            errors: tally.errors,
            duration_s,
            ops_per_sec: if duration_s > 0.0 {
                succeeded as f64 / duration_s
            } else {
                0.0
            },
            p50_us: quantile(0.50),
            p90_us: quantile(0.90),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            key_size,
            val_size,
            conflicts: tally.conflicts,
        }
    }

    /// One JSON object, no newline.
    pub(super) fn json_line(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// A short block for people, ending with a newline.
    pub(super) fn text(&self) -> String {
        format!(
            "workload   {} ({} clients, {})\n\
             ops        {} in {:.3} s: {:.0} ops/s\n\
             errors     {} (conflicts {})\n\
             latency    p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs\n\
             sizes      key {} B, value {} B\n",
            self.workload,
            self.clients,
            self.endpoint,
            self.ops,
            self.duration_s,
            self.ops_per_sec,
            self.errors,
            self.conflicts,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.key_size,
            self.val_size,
        )
    }
}
