//! Connections, the shared operation budget, the worker loop and the
//! latency tally: everything the workloads have in common.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::{kv, lease, watch};

/// An amount of work: a number of operations or a stretch of wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Amount {
    Ops(u64),
    Time(Duration),
}

impl Amount {
    /// A bare integer is a count of operations; anything else is a duration
    /// as `t4 run`'s flags take it (`500ms`, `2s`).
    pub(super) fn parse(text: &str) -> Result<Amount, String> {
        match text.trim().parse::<u64>() {
            Ok(ops) => Ok(Amount::Ops(ops)),
            Err(_) => crate::parse_duration(text).map(Amount::Time),
        }
    }
}

/// Operations handed out to the workers of one phase. Each claim returns a
/// distinct, increasing index; the phase ends when the count is used up or
/// the deadline has passed (operations claimed before it still finish).
struct Budget {
    next: AtomicU64,
    ops_max: Option<u64>,
    deadline: Option<Instant>,
}

impl Budget {
    fn start(amount: Amount, now: Instant) -> Budget {
        let (ops_max, deadline) = match amount {
            Amount::Ops(n) => (Some(n), None),
            Amount::Time(d) => (None, Some(now + d)),
        };
        Budget {
            next: AtomicU64::new(0),
            ops_max,
            deadline,
        }
    }

    fn claim(&self) -> Option<u64> {
        if let Some(deadline) = self.deadline {
            if Instant::now() >= deadline {
                return None;
            }
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        match self.ops_max {
            Some(max) if index >= max => None,
            _ => Some(index),
        }
    }
}

/// Names the keys: `prefix` followed by a zero-padded decimal index, so all
/// keys have the same length and sort in index order.
#[derive(Debug)]
pub(super) struct KeySpace {
    prefix: String,
    digits: usize,
    /// How many keys there are; indexes wrap around at this count.
    pub(super) count: u64,
}

impl KeySpace {
    pub(super) fn new(prefix: &str, key_size: usize, count: u64) -> Result<KeySpace, String> {
        let needed = (count.max(1) - 1).to_string().len();
        let digits = key_size.saturating_sub(prefix.len());
        if digits < needed {
            return Err(format!(
                "--key-size {key_size} leaves {digits} bytes after the prefix {prefix:?}, \
                 but {count} keys need {needed} digits"
            ));
        }
        Ok(KeySpace {
            prefix: prefix.to_owned(),
            digits,
            count,
        })
    }

    /// The key of `index mod count`.
    pub(super) fn key(&self, index: u64) -> Vec<u8> {
        let key = format!(
            "{}{:0width$}",
            self.prefix,
            index % self.count,
            width = self.digits
        );
        debug_assert_eq!(key.len(), self.prefix.len() + self.digits);
        key.into_bytes()
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// What every worker of a run shares.
pub(super) struct Ctx {
    pub(super) keys: KeySpace,
    /// The value of every put: printable, random bytes (from the seed), so
    /// a compressing engine gains no unfair edge over one that does not.
    pub(super) value: Vec<u8>,
    pub(super) seed: u64,
}

impl Ctx {
    pub(super) fn new(keys: KeySpace, val_size: usize, seed: u64) -> Ctx {
        let mut rng = fastrand::Rng::with_seed(seed);
        let value = (0..val_size).map(|_| rng.alphanumeric() as u8).collect();
        Ctx { keys, value, seed }
    }
}

/// How an operation ended when it did not fail.
pub(super) struct Done {
    /// When the operation was complete (for watches: when the last watcher
    /// received the event, which may be before the writer noticed).
    pub(super) at: Instant,
    /// A txn-cas compare that failed.
    pub(super) conflict: bool,
}

impl Done {
    pub(super) fn now() -> Done {
        Done {
            at: Instant::now(),
            conflict: false,
        }
    }
}

/// What a worker does per operation.
pub(super) enum Kind {
    Put,
    Get,
    Range,
    TxnCas,
    LeaseChurn,
    Watch(watch::Fanout),
}

/// One worker: one connection, one operation at a time.
pub(super) struct Worker {
    client: Client,
    kind: Kind,
    rng: fastrand::Rng,
    ctx: Arc<Ctx>,
}

impl Worker {
    pub(super) fn new(id: usize, client: Client, kind: Kind, ctx: &Arc<Ctx>) -> Worker {
        // Distinct, reproducible key choices per worker.
        let rng = fastrand::Rng::with_seed(
            ctx.seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        Worker {
            client,
            kind,
            rng,
            ctx: Arc::clone(ctx),
        }
    }

    async fn op(&mut self, index: u64) -> Result<Done, String> {
        let (c, ctx, rng) = (&mut self.client, &*self.ctx, &mut self.rng);
        match &mut self.kind {
            Kind::Put => kv::put(c, ctx, index).await,
            Kind::Get => kv::get(c, ctx, rng).await,
            Kind::Range => kv::range(c, ctx, rng).await,
            Kind::TxnCas => kv::txn_cas(c, ctx, rng).await,
            Kind::LeaseChurn => lease::churn(c, ctx, index).await,
            Kind::Watch(fanout) => fanout.put_and_wait(c, ctx, index).await,
        }
    }
}

/// Outcome of one phase, merged over its workers.
pub(super) struct Tally {
    /// Latency of each successful operation, in microseconds.
    pub(super) latency_us: Histogram<u64>,
    /// Operations finished, failed ones included.
    pub(super) ops: u64,
    pub(super) errors: u64,
    pub(super) conflicts: u64,
    pub(super) first_error: Option<String>,
    /// From the phase's start until its last operation finished.
    pub(super) elapsed: Duration,
}

/// Largest latency the histogram tells apart; longer ones are clamped.
const LATENCY_US_MAX: u64 = 3_600_000_000;

impl Tally {
    fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("constant bounds are valid"),
            ops: 0,
            errors: 0,
            conflicts: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, outcome: Result<Done, String>, started: Instant) {
        self.ops += 1;
        match outcome {
            Ok(done) => {
                let us = u64::try_from(done.at.saturating_duration_since(started).as_micros())
                    .unwrap_or(u64::MAX);
                self.latency_us.saturating_record(us.max(1));
                self.conflicts += u64::from(done.conflict);
            }
            Err(why) => {
                self.errors += 1;
                self.first_error.get_or_insert(why);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share their bounds");
        self.ops += other.ops;
        self.errors += other.errors;
        self.conflicts += other.conflicts;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Runs `workers` until `amount` is used up, each operation bounded by
/// `op_timeout`; returns the workers for the next phase and the tally.
pub(super) async fn run_phase(
    workers: Vec<Worker>,
    amount: Amount,
    op_timeout: Duration,
    bar: Option<ProgressBar>,
) -> (Vec<Worker>, Tally) {
    let started = Instant::now();
    let budget = Arc::new(Budget::start(amount, started));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let budget = Arc::clone(&budget);
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while let Some(index) = budget.claim() {
                    let op_started = Instant::now();
                    let outcome = tokio::time::timeout(op_timeout, worker.op(index))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {op_timeout:?}")));
                    tally.record(outcome, op_started);
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                }
                (worker, tally)
            })
        })
        .collect();
    let mut workers = Vec::with_capacity(tasks.len());
    let mut tally = Tally::new();
    for task in tasks {
        let (worker, t) = task.await.expect("bench workers do not panic");
        workers.push(worker);
        tally.merge(t);
    }
    tally.elapsed = started.elapsed();
    if let Amount::Ops(n) = amount {
        assert_eq!(tally.ops, n, "a phase of {n} operations ran {}", tally.ops);
    }
    (workers, tally)
}

/// Opens one connection to `endpoint` and checks that it answers a read
/// within `timeout`. (A connection alone proves nothing: etcd-client
/// connects lazily and would wait forever for an unreachable endpoint.)
pub(super) async fn connect(endpoint: &str, timeout: Duration) -> Result<Client, String> {
    let probe = async {
        let options = ConnectOptions::new().with_connect_timeout(timeout);
        let mut client = Client::connect([endpoint], Some(options)).await?;
        client
            .get("/", Some(GetOptions::new().with_count_only()))
            .await?;
        Ok::<_, etcd_client::Error>(client)
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot reach {endpoint}: {e}")),
        Err(_) => Err(format!(
            "cannot reach {endpoint}: no answer within {timeout:?} (is an etcd-compatible server listening there?)"
        )),
    }
}

/// `n` connections, the `i`th to `endpoints[i mod len]`, opened concurrently.
pub(super) async fn connect_all(
    endpoints: &[String],
    n: usize,
    timeout: Duration,
) -> Result<Vec<Client>, String> {
    assert!(!endpoints.is_empty(), "validated: at least one endpoint");
    futures::future::try_join_all((0..n).map(|i| connect(&endpoints[i % endpoints.len()], timeout)))
        .await
}

/// Requests in flight while populating the key space.
const POPULATE_PARALLEL: usize = 16;

/// Writes every key of the key space (unmeasured), `POPULATE_PARALLEL` at a
/// time over the given connections. Any failure ends the run: reads of
/// missing keys would measure nothing.
pub(super) async fn populate(
    connections: &[Client],
    ctx: &Arc<Ctx>,
    op_timeout: Duration,
    bar: Option<ProgressBar>,
) -> Result<(), String> {
    assert!(!connections.is_empty(), "validated: at least one client");
    let tasks: Vec<_> = (0..POPULATE_PARALLEL)
        .map(|t| {
            let mut client = connections[t % connections.len()].clone();
            let ctx = Arc::clone(ctx);
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut index = t as u64;
                while index < ctx.keys.count {
                    let key = ctx.keys.key(index);
                    let put = client.put(key.clone(), ctx.value.clone(), None);
                    match tokio::time::timeout(op_timeout, put).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            return Err(format!("put {}: {e}", String::from_utf8_lossy(&key)))
                        }
                        Err(_) => {
                            return Err(format!(
                                "put {}: no answer within {op_timeout:?}",
                                String::from_utf8_lossy(&key)
                            ))
                        }
                    }
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                    index += POPULATE_PARALLEL as u64;
                }
                Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("populating tasks do not panic")
            .map_err(|e| format!("cannot populate the key space: {e}"))?;
    }
    Ok(())
}

/// The progress line on stderr, shown only when stderr is a terminal.
pub(super) struct Progress {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            enabled: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            bar: None,
        }
    }

    /// Replaces the progress line with one for a phase named `name`;
    /// returns the handle workers advance (None when hidden).
    pub(super) fn phase(&mut self, name: &str, amount: Amount) -> Option<ProgressBar> {
        if let Some(old) = self.bar.take() {
            old.finish_and_clear();
        }
        if !self.enabled {
            return None;
        }
        let template = match amount {
            Amount::Ops(_) => {
                "{prefix:>12} [{bar:30}] {pos}/{len} ops, {rate}, eta {eta}".to_owned()
            }
            Amount::Time(d) => {
                format!("{{prefix:>12}} {{spinner}} {{pos}} ops, {{rate}}, {{elapsed}} of {d:?}")
            }
        };
        let style = ProgressStyle::with_template(&template)
            .expect("constant template")
            .progress_chars("=> ")
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} ops/s", state.per_sec());
                },
            );
        let length = match amount {
            Amount::Ops(n) => Some(n),
            Amount::Time(_) => None,
        };
        let bar =
            ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr()).with_style(style);
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar.clone());
        Some(bar)
    }

    pub(super) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys have exactly --key-size bytes and sort in index order.
    #[test]
    fn keys_have_the_asked_size() {
        let ks = KeySpace::new("/bench/", 64, 10_000).expect("fits");
        let (a, b) = (ks.key(9), ks.key(10));
        assert_eq!(a.len(), 64);
        assert!(a < b);
        assert_eq!(ks.key(10_003), ks.key(3), "indexes wrap at the count");
        assert!(
            KeySpace::new("/bench/", 10, 10_000).is_err(),
            "3 digits < 4"
        );
        assert!(KeySpace::new("/bench/", 11, 10_000).is_ok());
    }

    /// A count budget hands out exactly that many distinct indexes.
    #[test]
    fn ops_budget_is_exact() {
        let b = Budget::start(Amount::Ops(3), Instant::now());
        let got: Vec<_> = std::iter::from_fn(|| b.claim()).collect();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(b.claim(), None);
    }

    /// A bare number is operations, a unit makes it a duration.
    #[test]
    fn amounts_parse() {
        assert_eq!(Amount::parse("500"), Ok(Amount::Ops(500)));
        assert_eq!(
            Amount::parse("500ms"),
            Ok(Amount::Time(Duration::from_millis(500)))
        );
        assert!(Amount::parse("soon").is_err());
    }
}
