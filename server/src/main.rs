//! `t4`: an etcd-v3-compatible key-value server (see the README).

mod bench;
mod bucket_args;
mod bucket_cli;
mod etcd;
mod http;
mod inspect;
mod member;
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
    Run(Box<RunArgs>),
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
    /// Cluster mode: list the voting members, or remove one, through any
    /// member's etcd API.
    #[command(subcommand)]
    Member(member::MemberCommand),
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
    /// Bucket and cluster mode: upload a checkpoint of the engine this
    /// often, in minutes, if anything was written since the last one (0:
    /// not by time). In a cluster the leader takes them.
    #[arg(long, env = "T4_CHECKPOINT_INTERVAL_MIN", default_value_t = 15)]
    checkpoint_interval_min: u64,
    /// Bucket and cluster mode: also upload a checkpoint once this many
    /// log entries were applied since the last one (0: not by count).
    #[arg(long, env = "T4_CHECKPOINT_ENTRIES", default_value_t = 0)]
    checkpoint_entries: u64,
    /// Bucket and cluster mode: after each checkpoint, delete what only
    /// checkpoints older than the newest N need (as `t4 gc --keep N`; 0:
    /// never, leave it to `t4 gc`).
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
    /// With --wal-sync-upload=false, and in cluster mode (where the leader
    /// uploads the committed log in the background): the longest, in
    /// seconds, an applied entry waits before its segment is uploaded.
    #[arg(long, env = "T4_SEGMENT_MAX_AGE_SEC", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    segment_max_age_sec: u64,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Cluster mode's flags (T4's names). `--peer-listen` turns it on.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Cluster mode: listen for peers on this address. Every member shares
    /// one bucket (--s3-bucket or --object-store-dir), where `leader-lock`
    /// names the leader; a write is acknowledged once a majority of the
    /// members have it on disk.
    #[arg(long, env = "T4_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// The address peers reach this node at, `host:port` (default: the
    /// --peer-listen address, which must then not be a wildcard).
    #[arg(long, env = "T4_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
    /// A follower that hears nothing from the leader this long, in
    /// milliseconds, starts watching the lock.
    #[arg(long, env = "T4_ELECTION_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    election_timeout_ms: u64,
    /// A lock unchanged this long, in milliseconds, while the leader is
    /// silent means the leader is gone: a follower takes over.
    #[arg(long, env = "T4_LOCK_TTL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    lock_ttl_ms: u64,
    /// Who must have a write before it is acknowledged: `quorum` (a
    /// majority of the members), `all`, or `none` (the leader alone:
    /// UNSAFE, losing the leader with its disk loses acknowledged writes).
    #[arg(
        long,
        env = "T4_FOLLOWER_WAIT_MODE",
        value_enum,
        default_value = "quorum"
    )]
    follower_wait_mode: WaitMode,
    /// Applied log entries the leader keeps in memory for followers that
    /// fall behind.
    #[arg(long, env = "T4_PEER_BUFFER_SIZE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    peer_buffer_size: u64,
    /// Peer mTLS (TLS 1.3; each side verifies the other): the CA
    /// certificate (PEM) that signs every member's certificate. Needs
    /// --peer-tls-cert and --peer-tls-key.
    #[arg(long, env = "T4_PEER_TLS_CA", requires_all = ["peer_tls_cert", "peer_tls_key"])]
    peer_tls_ca: Option<PathBuf>,
    /// Peer mTLS: this member's certificate chain (PEM), valid for client
    /// and server use and naming the host of --advertise-peer (DNS or IP
    /// subject alternative name).
    #[arg(long, env = "T4_PEER_TLS_CERT", requires_all = ["peer_tls_ca", "peer_tls_key"])]
    peer_tls_cert: Option<PathBuf>,
    /// Peer mTLS: this member's private key (PEM).
    #[arg(long, env = "T4_PEER_TLS_KEY", requires_all = ["peer_tls_ca", "peer_tls_cert"])]
    peer_tls_key: Option<PathBuf>,
}

/// `--follower-wait-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WaitMode {
    /// A majority of the members (safe).
    Quorum,
    /// Every member (safe; one slow member stalls writes).
    All,
    /// The leader alone (unsafe).
    None,
}

impl ClusterArgs {
    /// The cluster options these flags give; `None` without
    /// `--peer-listen`.
    ///
    /// # Errors
    /// Cluster flags without `--peer-listen`, cluster mode without a
    /// bucket, or a wildcard listen address without `--advertise-peer`.
    fn options(&self, has_bucket: bool) -> Result<Option<t4_io_real::ClusterOptions>, String> {
        let Some(listen) = self.peer_listen else {
            if self.advertise_peer.is_some() || self.peer_tls_ca.is_some() {
                return Err("--advertise-peer and --peer-tls-* need --peer-listen \
                            (they configure cluster mode)"
                    .into());
            }
            return Ok(None);
        };
        if !has_bucket {
            return Err(
                "cluster mode (--peer-listen) needs a bucket shared by every \
                        member for its leader-lock: --s3-bucket or --object-store-dir"
                    .into(),
            );
        }
        let advertise = match &self.advertise_peer {
            Some(addr) => {
                if addr
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
                {
                    return Err(format!("--advertise-peer {addr:?} is not host:port"));
                }
                addr.clone()
            }
            None if listen.ip().is_unspecified() => {
                return Err(format!(
                    "--peer-listen {listen} is a wildcard address peers cannot connect \
                     to: give --advertise-peer host:port"
                ));
            }
            None => listen.to_string(),
        };
        let mut options = t4_io_real::ClusterOptions::new(listen);
        options.advertise_peer = advertise;
        options.election_timeout = Duration::from_millis(self.election_timeout_ms);
        options.lock_ttl = Duration::from_millis(self.lock_ttl_ms);
        options.follower_wait_mode = match self.follower_wait_mode {
            WaitMode::Quorum => t4_io_real::FollowerWaitMode::Quorum,
            WaitMode::All => t4_io_real::FollowerWaitMode::All,
            WaitMode::None => t4_io_real::FollowerWaitMode::None,
        };
        options.peer_buffer_entries = usize::try_from(self.peer_buffer_size).unwrap_or(usize::MAX);
        options.peer_tls = match (&self.peer_tls_ca, &self.peer_tls_cert, &self.peer_tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(t4_io_real::PeerTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Ok(Some(options))
    }
}

/// Why the upload flags cannot be used together with the bucket flags
/// given (`has_bucket`), if they cannot.
fn check_upload_flags(args: &RunArgs, has_bucket: bool) -> Result<(), String> {
    if !args.wal_sync_upload && args.cluster.peer_listen.is_some() {
        return Err(
            "--wal-sync-upload=false does not apply in cluster mode: the log is \
                    durable on a majority of the members' disks, not uploaded"
                .into(),
        );
    }
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
            let cluster = args.cluster.options(object_store.is_some())?;
            if cluster
                .as_ref()
                .is_some_and(|c| c.follower_wait_mode == t4_io_real::FollowerWaitMode::None)
            {
                tracing::warn!(
                    "--follower-wait-mode none is UNSAFE: writes are acknowledged before \
                     any follower has them, and a leader lost with its disk loses them"
                );
            }
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
                cluster,
            }))
        }),
        Command::Snapshot(SnapshotCommand::Restore(args)) => restore(&args),
        Command::Bench(args) => bench::run(args),
        Command::Status(args) => bucket_cli::status(&args),
        Command::Gc(args) => bucket_cli::gc(&args),
        Command::Restore(command) => bucket_cli::restore(&command),
        Command::Inspect(command) => inspect::run(command),
        Command::Member(command) => member::run(command),
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

    /// Cluster flags: T4's defaults, `--peer-listen` turns cluster mode
    /// on, and every combination that cannot work is refused with a
    /// message saying what to change.
    #[test]
    fn cluster_flags() {
        let args = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["t4", "run"].iter().chain(extra)).expect("flags parse");
            let Command::Run(args) = cli.command else {
                panic!("run expected")
            };
            args
        };
        let options = |extra: &[&str]| {
            let a = args(extra);
            let has_bucket = a.bucket.store_config().is_some();
            a.cluster.options(has_bucket)
        };
        assert_eq!(options(&[]), Ok(None), "single node by default");
        let c = options(&["--peer-listen", "127.0.0.1:3380", "--object-store-dir", "b"])
            .expect("valid")
            .expect("cluster mode");
        assert_eq!(c.advertise_peer, "127.0.0.1:3380");
        assert_eq!(c.election_timeout, Duration::from_millis(1000));
        assert_eq!(c.lock_ttl, Duration::from_millis(5000));
        assert_eq!(c.follower_wait_mode, t4_io_real::FollowerWaitMode::Quorum);
        assert_eq!(c.peer_buffer_entries, 10_000);
        assert_eq!(c.peer_tls, None);
        let c = options(&[
            "--peer-listen",
            "0.0.0.0:3380",
            "--advertise-peer",
            "n1.example:3380",
            "--election-timeout-ms",
            "300",
            "--lock-ttl-ms",
            "900",
            "--follower-wait-mode",
            "all",
            "--peer-buffer-size",
            "5",
            "--s3-bucket",
            "b",
        ])
        .expect("valid")
        .expect("cluster mode");
        assert_eq!(c.advertise_peer, "n1.example:3380");
        assert_eq!(c.election_timeout, Duration::from_millis(300));
        assert_eq!(c.follower_wait_mode, t4_io_real::FollowerWaitMode::All);
        assert_eq!(c.peer_buffer_entries, 5);

        let why = options(&["--peer-listen", "127.0.0.1:3380"]).expect_err("no bucket");
        assert!(why.contains("needs a bucket"), "{why}");
        let why = options(&["--peer-listen", "0.0.0.0:3380", "--object-store-dir", "b"])
            .expect_err("wildcard");
        assert!(why.contains("--advertise-peer"), "{why}");
        for bad in ["no-port", ":3380", "host:port", "host:99999"] {
            let why = options(&[
                "--peer-listen",
                "127.0.0.1:3380",
                "--advertise-peer",
                bad,
                "--object-store-dir",
                "b",
            ])
            .expect_err(bad);
            assert!(why.contains("not host:port"), "{why}");
        }
        let why = options(&["--advertise-peer", "h:1"]).expect_err("no --peer-listen");
        assert!(why.contains("need --peer-listen"), "{why}");
        for bad in [
            &["--election-timeout-ms", "0"][..],
            &["--lock-ttl-ms", "0"],
            &["--peer-buffer-size", "0"],
            &["--follower-wait-mode", "some"],
            &["--peer-tls-ca", "ca.pem"],
        ] {
            assert!(
                Cli::try_parse_from(["t4", "run"].iter().chain(bad)).is_err(),
                "{bad:?} must be refused"
            );
        }
        let a = args(&[
            "--peer-listen",
            "127.0.0.1:3380",
            "--object-store-dir",
            "b",
            "--wal-sync-upload=false",
        ]);
        let why = check_upload_flags(&a, true).expect_err("no async upload in cluster mode");
        assert!(why.contains("cluster mode"), "{why}");
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
