//! Prometheus metrics (T4's names where T4 documents them). This issue
//! exports the write path, revision gauges, watch streams/watchers and
//! lease counts; the observability issue adds the rest of T4's list.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Kinds of write, as T4's `op` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Put.
    Put,
    /// DeleteRange.
    Delete,
    /// Txn.
    Txn,
    /// Compaction.
    Compact,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Txn => "txn",
            Op::Compact => "compact",
        }
    }
}

/// The registry and the metrics in it.
pub struct Metrics {
    registry: Registry,
    writes: IntCounterVec,
    write_errors: IntCounterVec,
    write_duration: HistogramVec,
    /// `t4_current_revision`.
    pub current_revision: IntGauge,
    /// `t4_compact_revision`.
    pub compact_revision: IntGauge,
    /// `t4_watch_streams`: open etcd `Watch` gRPC streams.
    pub watch_streams: IntGauge,
    /// `t4_watchers`: watches created and not yet cancelled, over all
    /// streams.
    pub watchers: IntGauge,
    /// `t4_lease_grants_total`: successful `LeaseGrant` calls.
    pub lease_grants: IntCounter,
    /// `t4_lease_revokes_total`: successful `LeaseRevoke` calls (expiries
    /// are not counted: the node revokes those itself).
    pub lease_revokes: IntCounter,
    /// `t4_leases`: live leases, refreshed on each scrape.
    pub leases: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    ///
    /// # Panics
    /// Never in practice: the names are static and distinct.
    #[must_use]
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let writes = IntCounterVec::new(
            Opts::new("t4_writes_total", "Completed write operations"),
            &["op"],
        )
        .expect("valid metric");
        let write_errors = IntCounterVec::new(
            Opts::new(
                "t4_write_errors_total",
                "Write operations that returned an error",
            ),
            &["op"],
        )
        .expect("valid metric");
        let write_duration = HistogramVec::new(
            HistogramOpts::new("t4_write_duration_seconds", "Write latency (WAL + apply)").buckets(
                vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 1.0,
                ],
            ),
            &["op"],
        )
        .expect("valid metric");
        let current_revision =
            IntGauge::new("t4_current_revision", "Latest applied revision").expect("valid metric");
        let compact_revision =
            IntGauge::new("t4_compact_revision", "Compaction watermark").expect("valid metric");
        let watch_streams =
            IntGauge::new("t4_watch_streams", "Open etcd Watch streams").expect("valid metric");
        let watchers = IntGauge::new(
            "t4_watchers",
            "Watches created and not yet cancelled, over all streams",
        )
        .expect("valid metric");
        let lease_grants = IntCounter::new("t4_lease_grants_total", "Leases granted by clients")
            .expect("valid metric");
        let lease_revokes = IntCounter::new(
            "t4_lease_revokes_total",
            "Leases revoked by clients (expiries not counted)",
        )
        .expect("valid metric");
        let leases = IntGauge::new("t4_leases", "Live leases").expect("valid metric");
        let role_single = IntGauge::with_opts(
            Opts::new("t4_role", "1 for the active role (leader/follower/single)")
                .const_label("role", "single"),
        )
        .expect("valid metric");
        for c in [
            Box::new(writes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(write_errors.clone()),
            Box::new(write_duration.clone()),
            Box::new(current_revision.clone()),
            Box::new(compact_revision.clone()),
            Box::new(role_single.clone()),
            Box::new(watch_streams.clone()),
            Box::new(watchers.clone()),
            Box::new(lease_grants.clone()),
            Box::new(lease_revokes.clone()),
            Box::new(leases.clone()),
        ] {
            registry.register(c).expect("metric names are distinct");
        }
        role_single.set(1);
        Metrics {
            registry,
            writes,
            write_errors,
            write_duration,
            current_revision,
            compact_revision,
            watch_streams,
            watchers,
            lease_grants,
            lease_revokes,
            leases,
        }
    }

    /// Records one write's outcome and latency.
    pub fn observe_write(&self, op: Op, elapsed: Duration, ok: bool) {
        let label = [op.label()];
        if ok {
            self.writes.with_label_values(&label).inc();
        } else {
            self.write_errors.with_label_values(&label).inc();
        }
        self.write_duration
            .with_label_values(&label)
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("Prometheus text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
