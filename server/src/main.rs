//! `t4`: an etcd-v3-compatible key-value server (see the README).

mod etcd;
mod http;
mod metrics;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// WAL segment rotation threshold in bytes.
    #[arg(long, env = "T4_SEGMENT_MAX_SIZE", default_value_t = 50_000_000)]
    segment_max_size: u64,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => init_logging(&args.log_level, args.log_format).and_then(|()| {
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
            }))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("t4: {why}");
            ExitCode::FAILURE
        }
    }
}
