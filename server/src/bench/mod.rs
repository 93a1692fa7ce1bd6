//! `t4 bench`: a load generator that speaks plain etcd v3 gRPC, so the same
//! command measures t4 and any other etcd-compatible server (etcd itself
//! included) under the same workloads.
//!
//! A run has three phases, and only the last is measured:
//!
//! 1. **Connect**: one `etcd-client` connection per worker (and per watcher),
//!    each probed with a read; a server that does not answer within
//!    `--connect-timeout` ends the run with an error.
//! 2. **Populate** (read, range and txn-cas workloads): writes `--keys` keys
//!    with 16 parallel requests, so every read finds its key.
//! 3. **Warm-up**, then the **measured** phase: workers claim operations from
//!    a shared budget (`--total` operations, or `--duration` of wall time)
//!    and record each successful operation's latency in an HDR histogram.
//!
//! Keys are `--prefix` followed by a zero-padded index, `--key-size` bytes in
//! all; writes cycle through the same `--keys` indexes, so a long run
//! overwrites keys instead of growing the key space without bound.

mod kv;
mod lease;
mod report;
mod runner;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;

use report::Report;
use runner::{Amount, Ctx, KeySpace, Kind, Progress, Worker};

/// Flags of `t4 bench`. Each can also come from its `T4_BENCH_*` environment
/// variable; a flag on the command line wins.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// etcd v3 endpoints, comma-separated; worker `i` connects to endpoint
    /// `i mod n`.
    #[arg(
        long,
        env = "T4_BENCH_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3379"
    )]
    endpoints: Vec<String>,
    /// What each operation does, and so what one latency sample covers.
    #[arg(long, env = "T4_BENCH_WORKLOAD", value_enum)]
    workload: Workload,
    /// Concurrent workers, one connection each. Default: 1 for seq-put,
    /// seq-get, watch and watch-fanout (which take exactly one), 16 for the
    /// others; mixed needs at least 2.
    #[arg(long, env = "T4_BENCH_CLIENTS")]
    clients: Option<usize>,
    /// Operations to measure, shared by all workers (default 10000 unless
    /// --duration is given).
    #[arg(long, env = "T4_BENCH_TOTAL", conflicts_with = "duration")]
    total: Option<u64>,
    /// Measure for this long instead of a count (10s, 1m, 500ms).
    #[arg(long, env = "T4_BENCH_DURATION", value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// Unmeasured warm-up before the measured phase: a bare number is a
    /// count of operations, a number with a unit (500ms, 2s) a duration;
    /// 0 turns it off.
    #[arg(long, env = "T4_BENCH_WARMUP", default_value = "1s", value_parser = Amount::parse)]
    warmup: Amount,
    /// Length of every key in bytes, the prefix included.
    #[arg(long, env = "T4_BENCH_KEY_SIZE", default_value_t = 64)]
    key_size: usize,
    /// Length of every written value in bytes.
    #[arg(long, env = "T4_BENCH_VAL_SIZE", default_value_t = 256)]
    val_size: usize,
    /// Prefix of every key the benchmark reads, writes or watches.
    #[arg(long, env = "T4_BENCH_PREFIX", default_value = "/bench/")]
    prefix: String,
    /// Size of the key space: read workloads write these keys first
    /// (unmeasured); writes cycle through them. range-100 needs at least 100.
    #[arg(long, env = "T4_BENCH_KEYS", default_value_t = 10_000)]
    keys: u64,
    /// Watchers of watch-fanout, each on its own connection and stream.
    #[arg(long, env = "T4_BENCH_WATCHERS", default_value_t = 100)]
    watchers: usize,
    /// Result format: a short human block, or one JSON object per run.
    #[arg(long, env = "T4_BENCH_OUTPUT", value_enum, default_value = "text")]
    output: Output,
    /// How long to wait for each endpoint to answer before giving up.
    #[arg(
        long,
        env = "T4_BENCH_CONNECT_TIMEOUT",
        default_value = "5s",
        value_parser = crate::parse_duration
    )]
    connect_timeout: Duration,
    /// An operation that takes longer than this counts as an error.
    #[arg(long, env = "T4_BENCH_OP_TIMEOUT", default_value = "10s", value_parser = crate::parse_duration)]
    op_timeout: Duration,
    /// Seed for the random key choices and the value bytes.
    #[arg(long, env = "T4_BENCH_SEED", default_value_t = 1)]
    seed: u64,
}

/// The workloads. An operation ("op") is what one latency sample covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// One worker putting serially (op: one Put).
    SeqPut,
    /// N workers putting in parallel (op: one Put).
    ParPut,
    /// One worker reading serially (op: one Range of a single random key).
    SeqGet,
    /// N workers reading in parallel (op: one single-key Range).
    ParGet,
    /// Half the workers put, the other half get (op: one Put or one Range).
    Mixed,
    /// N workers reading 100 consecutive keys (op: one Range with range_end).
    #[value(name = "range-100")]
    Range100,
    /// Kubernetes-style optimistic update of a random key (op: a Range, then
    /// a Txn "if mod_revision == seen then Put else Range"); a failed
    /// compare counts as a conflict, not an error.
    TxnCas,
    /// One writer, one watcher on another connection (op: a Put until the
    /// watcher has received its event).
    Watch,
    /// One writer, --watchers watchers on one prefix, each on its own
    /// connection (op: a Put until every watcher has received its event).
    WatchFanout,
    /// N workers churning leases (op: LeaseGrant, Put with the lease,
    /// LeaseRevoke).
    LeaseChurn,
}

impl Workload {
    /// The name on the command line and in reports.
    fn name(self) -> String {
        self.to_possible_value()
            .expect("no workload is skipped")
            .get_name()
            .to_owned()
    }

    /// Whether the workload is defined for exactly one worker.
    fn single_worker(self) -> bool {
        matches!(
            self,
            Workload::SeqPut | Workload::SeqGet | Workload::Watch | Workload::WatchFanout
        )
    }

    /// Whether the key space must exist before the measured phase.
    fn needs_keys(self) -> bool {
        matches!(
            self,
            Workload::SeqGet
                | Workload::ParGet
                | Workload::Mixed
                | Workload::Range100
                | Workload::TxnCas
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Jsonl,
}

/// Operations run when neither `--total` nor `--duration` is given.
const TOTAL_DEFAULT: u64 = 10_000;

/// Keys a range-100 operation reads.
const RANGE_KEYS: u64 = 100;

/// Worker threads of the load generator's runtime: one per connection that
/// carries operations, at most one per core. A serial workload gets one
/// thread, so each answer wakes the task waiting for it on the same thread:
/// with a second thread, tokio hands work across threads and every operation
/// paid for extra wake-ups (measured on seq-put: client CPU 184 → 130 µs per
/// operation, voluntary context switches 4.7 → 1.0 per operation).
fn runtime_threads(args: &BenchArgs, clients: usize) -> usize {
    let connections = match args.workload {
        Workload::Watch => clients + 1,
        Workload::WatchFanout => clients + args.watchers,
        _ => clients,
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    connections.clamp(1, cores)
}

/// Checks the flags against each other and returns the worker count.
fn validate(args: &BenchArgs) -> Result<usize, String> {
    let name = args.workload.name();
    let clients = match (args.clients, args.workload.single_worker()) {
        (None, true) => 1,
        (None, false) => 16,
        (Some(1), true) => 1,
        (Some(n), true) => {
            return Err(format!(
                "--workload {name} runs exactly one client, not {n} (use par-put, par-get or --watchers)"
            ))
        }
        (Some(n), false) => n,
    };
    if clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.workload == Workload::Mixed && clients < 2 {
        return Err(
            "--workload mixed needs --clients of at least 2 (half write, half read)".into(),
        );
    }
    if args.endpoints.iter().all(|e| e.trim().is_empty()) {
        return Err("--endpoints is empty".into());
    }
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if args.workload == Workload::Range100 && args.keys < RANGE_KEYS {
        return Err(format!(
            "--workload range-100 needs --keys of at least {RANGE_KEYS}"
        ));
    }
    if args.workload == Workload::WatchFanout && args.watchers == 0 {
        return Err("--watchers must be at least 1".into());
    }
    if args.total == Some(0) || args.duration == Some(Duration::ZERO) {
        return Err("--total and --duration must be more than zero".into());
    }
    Ok(clients)
}

/// Runs `t4 bench` to completion: prints the report on stdout. Errors are
/// the reasons the run could not happen (bad flags, unreachable endpoint,
/// failed population); failed operations are counted in the report instead.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let clients = validate(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_threads(&args, clients))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(bench(&args, clients))?;
    match args.output {
        Output::Text => print!("{}", report.text()),
        Output::Jsonl => println!("{}", report.json_line()),
    }
    Ok(())
}

async fn bench(args: &BenchArgs, clients: usize) -> Result<Report, String> {
    let endpoints: Vec<String> = args
        .endpoints
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    let keys = KeySpace::new(&args.prefix, args.key_size, args.keys)?;
    let ctx = Arc::new(Ctx::new(keys, args.val_size, args.seed));
    let mut progress = Progress::new();

    let connections = runner::connect_all(&endpoints, clients, args.connect_timeout).await?;
    if args.workload.needs_keys() {
        let bar = progress.phase("populate", Amount::Ops(args.keys));
        runner::populate(&connections, &ctx, args.op_timeout, bar).await?;
    }
    let workers = match args.workload {
        Workload::Watch | Workload::WatchFanout => {
            let watchers = match args.workload {
                Workload::Watch => 1,
                _ => args.watchers,
            };
            let fanout =
                watch::Fanout::start(&endpoints, watchers, &ctx, args.connect_timeout).await?;
            let writer = connections
                .into_iter()
                .next()
                .expect("validated: watch workloads have one client");
            vec![Worker::new(0, writer, Kind::Watch(fanout), &ctx)]
        }
        workload => connections
            .into_iter()
            .enumerate()
            .map(|(w, client)| {
                let kind = match workload {
                    Workload::SeqPut | Workload::ParPut => Kind::Put,
                    Workload::SeqGet | Workload::ParGet => Kind::Get,
                    // The first half writes; with an odd count, readers are one more.
                    Workload::Mixed if w < clients / 2 => Kind::Put,
                    Workload::Mixed => Kind::Get,
                    Workload::Range100 => Kind::Range,
                    Workload::TxnCas => Kind::TxnCas,
                    Workload::LeaseChurn => Kind::LeaseChurn,
                    Workload::Watch | Workload::WatchFanout => unreachable!("matched above"),
                };
                Worker::new(w, client, kind, &ctx)
            })
            .collect(),
    };

    let warm = !matches!(args.warmup, Amount::Ops(0))
        && !matches!(args.warmup, Amount::Time(d) if d.is_zero());
    let workers = if warm {
        let bar = progress.phase("warm-up", args.warmup);
        runner::run_phase(workers, args.warmup, args.op_timeout, bar)
            .await
            .0
    } else {
        workers
    };
    let measured = match args.duration {
        Some(d) => Amount::Time(d),
        None => Amount::Ops(args.total.unwrap_or(TOTAL_DEFAULT)),
    };
    let bar = progress.phase(&args.workload.name(), measured);
    let (workers, tally) = runner::run_phase(workers, measured, args.op_timeout, bar).await;
    progress.finish();
    // Closes the connections and stops the watchers before reporting.
    drop(workers);
    if let Some(first) = &tally.first_error {
        eprintln!(
            "t4 bench: {} of {} operations failed; the first: {first}",
            tally.errors, tally.ops
        );
    }
    Ok(Report::new(
        args.workload.name(),
        endpoints.join(","),
        clients,
        args.key_size,
        args.val_size,
        &tally,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    /// Defaults are those documented in the flags' help.
    #[test]
    fn defaults() {
        let a = parse(&["--workload", "par-put"]).expect("parse");
        assert_eq!(a.endpoints, ["http://127.0.0.1:3379"]);
        assert_eq!((a.key_size, a.val_size, a.keys), (64, 256, 10_000));
        assert_eq!(a.prefix, "/bench/");
        assert_eq!(a.warmup, Amount::Time(Duration::from_secs(1)));
        assert_eq!(a.watchers, 100);
        assert_eq!(validate(&a), Ok(16));
        let a = parse(&["--workload", "seq-get"]).expect("parse");
        assert_eq!(validate(&a), Ok(1));
    }

    /// Every workload name on the command line is the one the report shows.
    #[test]
    fn workload_names() {
        let names: Vec<String> = Workload::value_variants()
            .iter()
            .map(|w| w.name())
            .collect();
        assert_eq!(
            names,
            [
                "seq-put",
                "par-put",
                "seq-get",
                "par-get",
                "mixed",
                "range-100",
                "txn-cas",
                "watch",
                "watch-fanout",
                "lease-churn"
            ]
        );
    }

    /// Contradictory or impossible flags are refused before connecting.
    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--workload", "nope"]).is_err());
        assert!(parse(&["--workload", "seq-put", "--total", "5", "--duration", "1s"]).is_err());
        let refused = |args: &[&str]| validate(&parse(args).expect("parse")).is_err();
        assert!(refused(&["--workload", "seq-put", "--clients", "4"]));
        assert!(refused(&["--workload", "mixed", "--clients", "1"]));
        assert!(refused(&["--workload", "par-get", "--clients", "0"]));
        assert!(refused(&["--workload", "range-100", "--keys", "99"]));
        assert!(refused(&["--workload", "par-put", "--total", "0"]));
        assert!(!refused(&["--workload", "watch", "--clients", "1"]));
    }

    /// Endpoints split on commas.
    #[test]
    fn endpoints_split() {
        let a = parse(&[
            "--workload",
            "par-put",
            "--endpoints",
            "http://a:1,http://b:2",
        ])
        .expect("parse");
        assert_eq!(a.endpoints, ["http://a:1", "http://b:2"]);
    }
}
