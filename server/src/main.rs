//! `t4`: an etcd-v3-compatible key-value server (see the README).

mod bench;
mod bucket_args;
mod bucket_cli;
mod etcd;
mod http;
mod inspect;
mod metrics;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// t4: an embeddable, S3-durable key-value store speaking the etcd v3 API.
#[derive(Debug, Parser)]
#[command(name = "t4", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node serving the etcd v3 gRPC API.
    Run(RunArgs),
    /// Work with snapshots taken by `etcdctl snapshot save` (Maintenance
    /// Snapshot) from a t4 node.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Load any etcd v3 server (t4, etcd, ...) with one workload and report
    /// throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Read a bucket (no node needed): latest checkpoint, object counts,
    /// leader lock, branches.
    Status(bucket_cli::StatusArgs),
    /// Delete old checkpoints, unreferenced SSTs and WAL objects covered by
    /// the kept checkpoints from a bucket.
    Gc(bucket_cli::GcArgs),
    /// The checkpoints a bucket can restore from.
    #[command(subcommand)]
    Restore(bucket_cli::RestoreCommand),
    /// Read a local data directory offline (no node, no network; never
    /// changes it): metadata and WAL, keys, history, diffs.
    #[command(subcommand, after_long_help = inspect::ABOUT)]
    Inspect(inspect::InspectCommand),
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Create a new data directory from a snapshot file; then `t4 run
    /// --data-dir DIR` serves the snapshot's keys and revisions.
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// The data directory to create; it must not exist or be empty.
    #[arg(long, env = "T4_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Flags of `t4 run`. Every flag can also come from its `T4_*` environment
/// variable; a flag on the command line wins.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Directory for the engine and the WAL (created if missing). The default
    /// is relative to the working directory, so it works for any user.
    #[arg(long, env = "T4_DATA_DIR", default_value = "t4-data")]
    data_dir: PathBuf,
    /// Address of the etcd gRPC API. Loopback by default, like etcd; use
    /// 0.0.0.0:3379 to serve other machines (e.g. in a container).
    #[arg(long, env = "T4_LISTEN", default_value = "127.0.0.1:3379")]
    listen: SocketAddr,
    /// Address for /metrics, /healthz and /readyz (off unless given).
    #[arg(long, env = "T4_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, env = "T4_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "T4_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Largest write request accepted, in bytes (etcd's default 1.5 MiB).
    #[arg(long, env = "T4_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Stable, unique node name (default: the hostname).
    #[arg(long, env = "T4_NODE_ID")]
    node_id: Option<String>,
    /// WAL segment rotation threshold in bytes; with
    /// `--wal-sync-upload=false`, also the size at which a segment is
    /// uploaded (one knob, as T4's SegmentMaxSize).
    #[arg(long, env = "T4_SEGMENT_MAX_SIZE", default_value_t = 50_000_000)]
    segment_max_size: u64,
    /// Database size in bytes above which writes that need space fail and
    /// the NOSPACE alarm is raised (etcd's flag and default, 2 GiB).
    #[arg(long, env = "T4_QUOTA_BACKEND_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    quota_backend_bytes: u64,
    /// How often watches that asked for progress notifications get one
    /// while idle: seconds, or a duration such as 10m, 30s, 500ms.
    #[arg(
        long,
        env = "T4_WATCH_PROGRESS_NOTIFY_INTERVAL",
        alias = "experimental-watch-progress-notify-interval",
        default_value = "10m",
        value_parser = parse_duration
    )]
    watch_progress_notify_interval: Duration,
    /// How often remaining lease TTLs are checkpointed, so a restart does
    /// not renew every lease to its full TTL: seconds or a duration such
    /// as 5m; 0 turns checkpoints off.
    #[arg(
        long,
        env = "T4_LEASE_CHECKPOINT_INTERVAL",
        alias = "experimental-lease-checkpoint-interval",
        default_value = "5m",
        value_parser = parse_duration
    )]
    lease_checkpoint_interval: Duration,
    /// Bucket mode: upload a checkpoint of the engine this often, in
    /// minutes, if anything was written since the last one (0: not by time).
    #[arg(long, env = "T4_CHECKPOINT_INTERVAL_MIN", default_value_t = 15)]
    checkpoint_interval_min: u64,
    /// Bucket mode: also upload a checkpoint once this many log entries
    /// were applied since the last one (0: not by count).
    #[arg(long, env = "T4_CHECKPOINT_ENTRIES", default_value_t = 0)]
    checkpoint_entries: u64,
    /// Bucket mode: after each checkpoint, delete what only checkpoints
    /// older than the newest N need (as `t4 gc --keep N`; 0: never, leave it
    /// to `t4 gc`).
    #[arg(long, env = "T4_GC_KEEP", default_value_t = 3)]
    gc_keep: usize,
    #[command(flatten)]
    bucket: bucket_args::BucketArgs,
    /// Bucket mode: acknowledge a write only once its WAL object is in the
    /// bucket (`true`, the default), or once fsynced, uploading in the
    /// background every --segment-max-age-sec or --segment-max-size
    /// (`false`: faster; losing the machine with its disk loses the writes
    /// not uploaded yet). Needs a bucket.
    #[arg(long, env = "T4_WAL_SYNC_UPLOAD", default_value_t = true, action = clap::ArgAction::Set)]
    wal_sync_upload: bool,
    /// With --wal-sync-upload=false: the longest, in seconds, a write waits
    /// before its segment is uploaded.
    #[arg(long, env = "T4_SEGMENT_MAX_AGE_SEC", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    segment_max_age_sec: u64,
}

/// Why the upload flags cannot be used together with the bucket flags
/// given (`has_bucket`), if they cannot.
fn check_upload_flags(args: &RunArgs, has_bucket: bool) -> Result<(), String> {
    if !args.wal_sync_upload && !has_bucket {
        return Err("--wal-sync-upload=false needs a bucket (--s3-bucket or \
                    --object-store-dir): without one there is nothing to upload"
            .into());
    }
    Ok(())
}

/// A duration as etcd's flags take it (Go's `time.ParseDuration`: `10m`,
/// `1h30m`, `500ms`, `1.5s`), or a bare number of seconds. Written here
/// rather than with a duration crate because neither form alone covers
/// both, and the grammar is a few lines.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {text:?}: use seconds (30) or units ns, us, ms, s, m, h (10m, 1h30m, 500ms)")
    };
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * unit_secs).map_err(|_| bad())?;
    }
    Ok(total)
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| format!("cannot initialise logging: {e}"))
}

fn restore(args: &RestoreArgs) -> Result<(), String> {
    let report = t4_io_real::restore_snapshot(&args.file, &args.data_dir).map_err(|e| {
        format!(
            "cannot restore {} into {}: {e}",
            args.file.display(),
            args.data_dir.display()
        )
    })?;
    println!(
        "restored {} into {}: revision {}, {} keys; start it with `t4 run --data-dir {}`",
        args.file.display(),
        args.data_dir.display(),
        report.revision,
        report.keys,
        args.data_dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => init_logging(&args.log_level, args.log_format).and_then(|()| {
            let object_store = args.bucket.store_config();
            check_upload_flags(&args, object_store.is_some())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            runtime.block_on(run::run(run::RunOptions {
                data_dir: args.data_dir,
                listen: args.listen,
                metrics_addr: args.metrics_addr,
                max_request_bytes: args.max_request_bytes,
                node_id: args.node_id,
                segment_max_size: args.segment_max_size,
                quota_backend_bytes: args.quota_backend_bytes,
                watch_progress_notify_interval: args.watch_progress_notify_interval,
                lease_checkpoint_interval: Some(args.lease_checkpoint_interval)
                    .filter(|d| !d.is_zero()),
                object_store,
                checkpoint_interval: Some(Duration::from_secs(
                    args.checkpoint_interval_min.saturating_mul(60),
                ))
                .filter(|d| !d.is_zero()),
                checkpoint_entries: args.checkpoint_entries,
                gc_keep: args.gc_keep,
                wal_sync_upload: args.wal_sync_upload,
                segment_max_age: Duration::from_secs(args.segment_max_age_sec),
            }))
        }),
        Command::Snapshot(SnapshotCommand::Restore(args)) => restore(&args),
        Command::Bench(args) => bench::run(args),
        Command::Status(args) => bucket_cli::status(&args),
        Command::Gc(args) => bucket_cli::gc(&args),
        Command::Restore(command) => bucket_cli::restore(&command),
        Command::Inspect(command) => inspect::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("t4: {why}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations parse as etcd's flags do, plus bare seconds.
    #[test]
    fn durations_parse_like_etcd_flags() {
        let ok = |s: &str| parse_duration(s).expect(s);
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        for bad in ["", "10x", "m", "-5", "1h-3m", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    /// Every flag of `t4 run` parses with its default.
    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["t4", "run"]).expect("defaults parse");
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.quota_backend_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(
            args.watch_progress_notify_interval,
            Duration::from_secs(600)
        );
        assert_eq!(args.lease_checkpoint_interval, Duration::from_secs(300));
        assert!(args.wal_sync_upload);
        assert_eq!(args.segment_max_age_sec, 10);
    }

    /// `--wal-sync-upload=false` works with a bucket and is refused
    /// without one (it would silently mean nothing).
    #[test]
    fn async_upload_needs_a_bucket() {
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["t4", "run"].iter().chain(extra)).expect("flags parse");
            let Command::Run(args) = cli.command else {
                panic!("run expected")
            };
            let has_bucket = args.bucket.store_config().is_some();
            check_upload_flags(&args, has_bucket)
        };
        let why = parse(&["--wal-sync-upload=false"]).expect_err("no bucket");
        assert!(why.contains("needs a bucket"), "{why}");
        parse(&["--wal-sync-upload=false", "--object-store-dir", "b"]).expect("a bucket");
        parse(&[
            "--wal-sync-upload=false",
            "--segment-max-age-sec",
            "2",
            "--s3-bucket",
            "b",
        ])
        .expect("an S3 bucket");
        parse(&[]).expect("sync mode, local");
        assert!(
            Cli::try_parse_from(["t4", "run", "--segment-max-age-sec", "0"]).is_err(),
            "an age of 0 would seal every entry alone"
        );
    }
}
