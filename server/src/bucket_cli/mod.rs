//! The commands that read a bucket directly, with no node running
//! (ARCHITECTURE §3.10, §4): `t4 status`, `t4 gc`, `t4 restore list`.
//!
//! Each opens the store the bucket flags name (a directory store must
//! already exist: these commands never create a bucket), reads what it
//! needs, and prints a report as text or, with `--json`, as one JSON
//! document. Only `t4 gc` without `--dry-run` changes the bucket, and only
//! by deleting what core's GC plan ([`t4_core::bucket::gc`]) lists, in its
//! order. A store that does not answer, or bad flags, stop a command before
//! it changes anything.

mod gc;
pub(crate) mod read;
mod restore;
mod status;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use t4_core::bucket::manifest::CheckpointManifest;

use crate::bucket_args::BucketArgs;
use read::Read;

/// Flags of `t4 status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    /// Print one JSON document instead of text.
    #[arg(long, env = "T4_OUTPUT_JSON")]
    json: bool,
}

/// Flags of `t4 gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    /// How many of the newest readable checkpoints to keep (at least 1).
    /// Checkpoints pinned by a branch or named by `manifest/latest` are
    /// kept as well.
    #[arg(
        long,
        env = "T4_GC_KEEP",
        value_name = "N",
        default_value = "3",
        value_parser = parse_keep
    )]
    keep: usize,
    /// Print what would be deleted, and why, without deleting anything.
    #[arg(long, env = "T4_GC_DRY_RUN")]
    dry_run: bool,
    /// Print one JSON document instead of text.
    #[arg(long, env = "T4_OUTPUT_JSON")]
    json: bool,
}

/// `t4 restore …`.
#[derive(Debug, clap::Subcommand)]
pub enum RestoreCommand {
    /// List the bucket's checkpoints, newest first.
    List(RestoreListArgs),
    /// Prepare a new data directory from a checkpoint (the newest usable
    /// one, or `--checkpoint`): files downloaded and checked against the
    /// manifest's sizes and hashes. `t4 run --data-dir D` with the same
    /// bucket flags then replays the bucket's WAL after it.
    Checkpoint(RestoreCheckpointArgs),
}

/// Flags of `t4 restore checkpoint`.
#[derive(Debug, clap::Args)]
pub struct RestoreCheckpointArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    /// The data directory to create; it must not exist or be empty.
    #[arg(long, env = "T4_DATA_DIR")]
    data_dir: std::path::PathBuf,
    /// The manifest key of the checkpoint to restore (as `t4 restore list`
    /// prints it); default: the newest usable one, falling back to older
    /// ones when it is damaged.
    #[arg(long, value_name = "MANIFEST_KEY")]
    checkpoint: Option<String>,
}

/// Flags of `t4 restore list`.
#[derive(Debug, clap::Args)]
pub struct RestoreListArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    /// Print one JSON document instead of text.
    #[arg(long, env = "T4_OUTPUT_JSON")]
    json: bool,
}

fn parse_keep(text: &str) -> Result<usize, String> {
    let keep: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of checkpoints"))?;
    if keep == 0 {
        return Err("must be at least 1: gc always keeps the newest readable checkpoint".into());
    }
    Ok(keep)
}

/// `t4 status`.
pub fn status(args: &StatusArgs) -> Result<(), String> {
    block_on(status::run(&args.bucket, args.json))
}

/// `t4 gc`.
pub fn gc(args: &GcArgs) -> Result<(), String> {
    block_on(gc::run(&args.bucket, args.keep, args.dry_run, args.json))
}

/// `t4 restore …`.
pub fn restore(command: &RestoreCommand) -> Result<(), String> {
    match command {
        RestoreCommand::List(args) => block_on(restore::list(&args.bucket, args.json)),
        RestoreCommand::Checkpoint(args) => block_on(restore::checkpoint(
            &args.bucket,
            &args.data_dir,
            args.checkpoint.as_deref(),
        )),
    }
}

/// How long a finished command waits for store operations that timed out
/// but are still running (a directory store's blocking file operation)
/// before it exits anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Runs one command on a small runtime of its own: these commands do one
/// thing at a time, so one thread is enough.
fn block_on(command: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(command);
    // Dropping the runtime would wait for every blocking task; one stuck in
    // the file system (its attempt already timed out and was reported) must
    // not keep the command from exiting.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    result
}

/// Prints `report` as one pretty JSON document.
fn print_json(report: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(report).expect("a report always serializes to JSON")
    );
}

/// What a checkpoint manifest says, or why it cannot be read.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum ManifestReport {
    /// Read and valid.
    Valid {
        revision: i64,
        compact_revision: i64,
        created_unix_ms: u64,
        /// `created_unix_ms` as RFC 3339 UTC.
        created: String,
        sst_count: usize,
        sst_bytes: u64,
        meta_file_count: usize,
    },
    /// Not in the bucket.
    Missing,
    /// There, but not readable or not valid.
    Unreadable { error: String },
}

impl ManifestReport {
    fn from_read(read: &Read<CheckpointManifest>) -> ManifestReport {
        match read {
            Read::Ok(m) => ManifestReport::Valid {
                revision: m.revision.0,
                compact_revision: m.compact_revision.0,
                created_unix_ms: m.created_unix_ms,
                created: rfc3339_utc(m.created_unix_ms),
                sst_count: m.ssts.len(),
                sst_bytes: m.ssts.iter().map(|f| f.size_bytes).sum(),
                meta_file_count: m.meta_files.len(),
            },
            Read::Missing => ManifestReport::Missing,
            Read::Bad(error) => ManifestReport::Unreadable {
                error: error.clone(),
            },
        }
    }
}

/// A count of objects and their bytes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Totals {
    count: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, size_bytes: u64) {
        self.count += 1;
        self.bytes += size_bytes;
    }
}

/// `unix_ms` as an RFC 3339 UTC timestamp with milliseconds
/// (`2023-11-14T22:13:20.000Z`).
///
/// By hand (Howard Hinnant's `civil_from_days`) because the server crate
/// has no date crate and this is the only date it prints; the arithmetic
/// is on non-negative numbers only, so every `u64` input is valid.
fn rfc3339_utc(unix_ms: u64) -> String {
    const SECS_PER_DAY: u64 = 86_400;
    // Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
    const EPOCH_SHIFT_DAYS: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    let (days, day_secs) = (secs / SECS_PER_DAY, secs % SECS_PER_DAY);
    let z = days + EPOCH_SHIFT_DAYS;
    let era = z / DAYS_PER_ERA;
    let doe = z - era * DAYS_PER_ERA;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}
