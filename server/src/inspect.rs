//! `t4 inspect`: reads a local data directory offline and prints what it
//! holds: the store's metadata and WAL, keys at any retained revision, one
//! key's versions, what changed between two revisions.
//!
//! # Never changes the data directory
//!
//! - The engine is opened with [`RocksEngine::open_read_only`], which creates,
//!   writes and flushes nothing (RocksDB takes no lock for it either).
//! - Nothing is created: a missing data directory, `db/` or `wal/` is
//!   reported, never made.
//! - The WAL is read with plain `fs::read` and checked with core's
//!   [`ReplayPlanner`], the same rules a node applies at start; the cuts the
//!   plan asks for (a torn tail, preallocated zeros) are reported, never
//!   performed, and interrupted `*.wal.tmp` files are counted, not removed.
//!   `io-real`'s `Wal::open` is not used because it does all three.
//!
//! # What it shows
//!
//! The engine as last written to disk. WAL entries beyond the engine's
//! applied index (after a crash, or while a node runs) are counted by `meta`
//! but not applied: a node replays them when it starts.
//!
//! # Worked example (`diff`)
//!
//! ```text
//! rev 2 put a=1   rev 3 put b=2   rev 4 put a=11   rev 5 put c=3   rev 6 delete b
//! rev 7 put d=4   rev 8 delete d
//! diff 4 8: revision log (4, 8] names c (5), b (6), d (7, 8)
//!   c: absent at 4, present at 8  → created
//!   b: present at 4, absent at 8  → deleted
//!   d: absent at 4, absent at 8   → not listed (no net change)
//!   a: not in the log range       → unchanged, never read
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::{json, Value};
use t4_core::engine::KvRead;
use t4_core::kv::{KeyValue, RangeRequest, RangeResponse};
use t4_core::mvcc::keys::{self, Rev, RevLogRecord};
use t4_core::mvcc::{self, EventKind, Meta};
use t4_core::wal::{CutKind, ReplayError, ReplayPlanner, SegmentImage};
use t4_core::Index;
use t4_io_real::engine::RocksOptions;
use t4_io_real::{Config, RocksEngine};

/// Shown after every subcommand's --help: what is read, how values and
/// JSON are printed, and what happens while a node runs.
pub const ABOUT: &str = "\
Reads a local data directory offline (no running node, no network) and never \
changes it: the engine is opened read-only, nothing missing is created, and the \
WAL is only read (a torn tail is reported, not truncated).

Reads show the engine as last written to disk: WAL entries beyond its applied \
index (after a crash) are counted by `meta` but not applied; a node replays \
them when it starts.

A node may be running on the directory: inspect then warns and shows the \
engine as that node last flushed it (recent writes are only in its memory and \
WAL), and a read may fail if the node compacts a file away meanwhile. Stop the \
node for an exact view.

Text output prints keys and values as UTF-8 when they are valid UTF-8 without \
control characters or surrounding spaces, otherwise quoted: \"...\" with \
escapes when valid UTF-8, b\"...\" with \\xNN escapes when not.

--json prints one JSON document. Keys and values are JSON strings; every object \
holding any has an \"encoding\" field, \"utf8\" (all are valid UTF-8, shown as \
text) or \"base64\" (standard base64 with padding), which applies to every key \
and value in that object.";

/// `t4 inspect` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum InspectCommand {
    /// Store metadata (revisions, applied index and term, counts, sizes) and
    /// the local WAL (its range and entries not yet applied).
    #[command(after_long_help = ABOUT)]
    Meta(MetaArgs),
    /// One key at the current (or a given) revision; exits non-zero if it
    /// does not exist there.
    #[command(after_long_help = ABOUT)]
    Get(GetArgs),
    /// Keys (and values) under a prefix, ascending.
    #[command(after_long_help = ABOUT)]
    List(ListArgs),
    /// Number of keys under a prefix.
    #[command(after_long_help = ABOUT)]
    Count(CountArgs),
    /// Every retained version of a key (puts and deletions), oldest first.
    #[command(after_long_help = ABOUT)]
    History(HistoryArgs),
    /// Keys created, modified and deleted between two revisions.
    #[command(after_long_help = ABOUT)]
    Diff(DiffArgs),
}

/// The data directory and the output format, shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The data directory of a node (`t4 run --data-dir`); never created.
    #[arg(long, env = "T4_DATA_DIR")]
    data_dir: PathBuf,
    /// Print one JSON document (encoding of keys and values: see --help).
    #[arg(long)]
    json: bool,
}

/// Flags of `t4 inspect meta`.
#[derive(Debug, clap::Args)]
pub struct MetaArgs {
    #[command(flatten)]
    target: Target,
}

/// Flags of `t4 inspect get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The key (its bytes as given).
    key: std::ffi::OsString,
    /// Read at this revision (default: the current one).
    #[arg(long)]
    rev: Option<i64>,
    #[command(flatten)]
    target: Target,
}

/// Flags of `t4 inspect list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Key prefix; empty or omitted: every key.
    #[arg(default_value = "")]
    prefix: std::ffi::OsString,
    /// Print at most this many keys; 0: all. Without a limit every listed
    /// key is held in memory before printing.
    #[arg(long, default_value_t = 0)]
    limit: u64,
    /// Print keys only.
    #[arg(long)]
    keys_only: bool,
    /// Read at this revision (default: the current one).
    #[arg(long)]
    rev: Option<i64>,
    #[command(flatten)]
    target: Target,
}

/// Flags of `t4 inspect count`.
#[derive(Debug, clap::Args)]
pub struct CountArgs {
    /// Key prefix; empty or omitted: every key.
    #[arg(default_value = "")]
    prefix: std::ffi::OsString,
    /// Count at this revision (default: the current one).
    #[arg(long)]
    rev: Option<i64>,
    #[command(flatten)]
    target: Target,
}

/// Flags of `t4 inspect history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The key (its bytes as given).
    key: std::ffi::OsString,
    #[command(flatten)]
    target: Target,
}

/// Flags of `t4 inspect diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The earlier revision (at or above the compaction watermark).
    rev_a: i64,
    /// The later revision (at most the current one).
    rev_b: i64,
    #[command(flatten)]
    target: Target,
}

/// Why a subcommand stopped.
#[derive(Debug)]
enum Failure {
    /// Bad input, a missing key, unreadable data: the message says which.
    Message(String),
    /// Writing to stdout failed.
    Output(io::Error),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Message(message)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

/// Runs one `t4 inspect` subcommand, printing to stdout (warnings and
/// notes to stderr).
///
/// # Errors
/// The message to print, for a non-zero exit. A closed stdout (`| head`)
/// is not an error.
pub fn run(command: InspectCommand) -> Result<(), String> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match command {
        InspectCommand::Meta(args) => meta(&args, &mut out),
        InspectCommand::Get(args) => get(&args, &mut out),
        InspectCommand::List(args) => list(&args, &mut out),
        InspectCommand::Count(args) => count(&args, &mut out),
        InspectCommand::History(args) => history(&args, &mut out),
        InspectCommand::Diff(args) => diff(&args, &mut out),
    }
    .and_then(|()| out.flush().map_err(Failure::Output));
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Output(e)) => Err(format!("cannot write the output: {e}")),
        Err(Failure::Message(message)) => Err(message),
    }
}

// ---------------------------------------------------------------------------
// Opening the data directory.

/// A data directory opened for reading.
struct Opened {
    data_dir: PathBuf,
    engine_dir: PathBuf,
    wal_dir: PathBuf,
    engine: RocksEngine,
    meta: Meta,
    lock: EngineLock,
}

/// Checks that `data_dir` is a t4 data directory and opens its engine
/// read-only. Creates nothing; warns on stderr when a node holds it.
fn open(data_dir: &Path) -> Result<Opened, String> {
    let shown = data_dir.display();
    match fs::metadata(data_dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return Err(format!("{shown} is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("data directory {shown} does not exist"))
        }
        Err(e) => return Err(format!("cannot read data directory {shown}: {e}")),
    }
    let config = Config::new(data_dir);
    let (engine_dir, wal_dir) = (config.engine_dir(), config.wal_dir());
    if !engine_dir.is_dir() {
        return Err(format!(
            "{shown} is not a t4 data directory: it has no db/ (engine) directory \
             (`t4 run` creates db/ and wal/ on its first start)"
        ));
    }
    if !engine_dir.join("CURRENT").is_file() {
        return Err(format!(
            "{shown} is not a t4 data directory: {} holds no RocksDB database (no CURRENT file)",
            engine_dir.display()
        ));
    }
    let lock = engine_lock(&engine_dir.join("LOCK"));
    if let EngineLock::HeldBy(pid) = lock {
        eprintln!(
            "t4 inspect: warning: process {pid} holds {}: a node is running on this \
             data directory. Showing the engine as that node last flushed it; its \
             recent writes are only in its memory and WAL.",
            engine_dir.join("LOCK").display()
        );
    }
    let engine = RocksEngine::open_read_only(&engine_dir, RocksOptions::default())
        .map_err(|e| format!("cannot open the engine of {shown} read-only: {e}"))?;
    let meta = mvcc::read_meta(&engine)
        .map_err(|e| format!("the engine of {shown} is unreadable (corrupt?): {e}"))?;
    // A store that never applied an entry has no meta record and no keys; a
    // RocksDB database with keys but no meta record is someone else's.
    let has_meta = engine
        .get(keys::META_KEY)
        .map_err(|e| format!("the engine of {shown} is unreadable: {e}"))?
        .is_some();
    let has_keys = match engine.scan(&[], None).next() {
        None => false,
        Some(Ok(_)) => true,
        Some(Err(e)) => return Err(format!("the engine of {shown} is unreadable: {e}")),
    };
    if !has_meta && has_keys {
        return Err(format!(
            "{shown} is not a t4 data directory: {} holds a RocksDB database without \
             t4's metadata",
            engine_dir.display()
        ));
    }
    Ok(Opened {
        data_dir: data_dir.to_path_buf(),
        engine_dir,
        wal_dir,
        engine,
        meta,
        lock,
    })
}

/// Whether a process holds RocksDB's lock on the engine, i.e. a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineLock {
    /// Nobody holds it.
    Free,
    /// This process id holds it.
    HeldBy(u32),
    /// Cannot tell (not Linux, or `/proc/locks` unreadable).
    Unknown,
}

/// Looks `lock_file` up in `/proc/locks`, which lists every POSIX lock as
/// `1: POSIX ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF` (RocksDB
/// locks with `fcntl`). Reading it changes nothing, unlike trying to take
/// the lock. Best effort: a file system whose `stat` device differs from
/// the one the kernel lists (some btrfs subvolumes) reads as free.
fn engine_lock(lock_file: &Path) -> EngineLock {
    use std::os::unix::fs::MetadataExt;
    if !cfg!(target_os = "linux") {
        return EngineLock::Unknown;
    }
    let Ok(md) = fs::metadata(lock_file) else {
        // RocksDB creates LOCK on its first read-write open and never
        // removes it: no file, no holder.
        return EngineLock::Free;
    };
    let Ok(locks) = fs::read_to_string("/proc/locks") else {
        return EngineLock::Unknown;
    };
    // glibc's encoding of `st_dev` (gnu_dev_major / gnu_dev_minor).
    let dev = md.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{}", md.ino());
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Waiters are listed as `1: -> POSIX …`: the holder has no arrow.
        if fields.get(1) != Some(&"POSIX") {
            continue;
        }
        if let Some(at) = fields.iter().position(|f| *f == wanted) {
            if let Some(pid) = at.checked_sub(1).and_then(|i| fields[i].parse().ok()) {
                return EngineLock::HeldBy(pid);
            }
        }
    }
    EngineLock::Free
}

/// The revision to read at: `rev`, or the current one when `None`.
fn resolve_rev(meta: &Meta, rev: Option<i64>) -> Result<i64, String> {
    let Some(rev) = rev else {
        return Ok(meta.current_revision);
    };
    if rev < 1 {
        return Err(format!("revision {rev} is invalid: revisions start at 1"));
    }
    if rev > meta.current_revision {
        return Err(format!(
            "revision {rev} is in the future: the store is at revision {}",
            meta.current_revision
        ));
    }
    if rev < meta.compact_revision {
        return Err(format!(
            "revision {rev} has been compacted: the oldest readable revision is {}",
            meta.compact_revision
        ));
    }
    Ok(rev)
}

/// `mvcc::range` at `rev` (already checked by [`resolve_rev`]).
fn range_at(o: &Opened, mut req: RangeRequest, rev: i64) -> Result<RangeResponse, String> {
    assert!(
        rev >= 1 && rev <= o.meta.current_revision,
        "resolve_rev admits only 1..={}, got {rev}",
        o.meta.current_revision
    );
    req.revision = rev;
    mvcc::range(&o.engine, &req).map_err(|e| format!("cannot read the engine: {e}"))
}

/// The request for every key starting with `prefix` (every key when empty;
/// the empty key cannot be written, so `\0` onwards is all of them).
fn prefix_request(prefix: &[u8]) -> RangeRequest {
    if prefix.is_empty() {
        return RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..RangeRequest::default()
        };
    }
    // etcd's prefix end: the prefix with its last byte below 0xFF increased
    // and what follows dropped; all 0xFF → every key from the prefix on.
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            break;
        }
    }
    if end.is_empty() {
        end.push(0);
    }
    RangeRequest {
        key: prefix.to_vec(),
        range_end: end,
        ..RangeRequest::default()
    }
}

fn key_bytes(key: &std::ffi::OsStr) -> Result<&[u8], String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = key.as_bytes();
    if bytes.is_empty() {
        return Err("the key must not be empty".into());
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// meta

/// What the local WAL holds, read without changing it.
#[derive(Debug, Default)]
struct WalSummary {
    /// The WAL directory exists.
    exists: bool,
    segments: usize,
    wal_bytes: u64,
    /// Index of the first and last entry on disk (`None`: no entries).
    first_index: Option<u64>,
    last_index: Option<u64>,
    /// Entries beyond the engine's applied index: a node replays them at start.
    unapplied_entries: u64,
    /// `*.wal.tmp` files: interrupted segment creations a node removes.
    interrupted_files: usize,
    /// A torn last write a node would truncate at start: (file, offset, bytes).
    torn_tail: Option<(PathBuf, u64, u64)>,
    /// Why a node would refuse this WAL at start, if it would.
    problem: Option<String>,
}

/// Reads the WAL in `dir` (never changing it) against an engine that
/// applied up to `applied_index`, by the rules a node applies at start
/// (`t4_core::wal::ReplayPlanner`). Reads one segment at a time; keeps the
/// entries beyond `applied_index` in memory to count them (a WAL is
/// trimmed once the engine flushes, so they are few unless a node crashed
/// with a large unflushed engine).
fn wal_summary(dir: &Path, applied_index: u64) -> WalSummary {
    let mut summary = WalSummary::default();
    let dirents = match fs::read_dir(dir) {
        Ok(dirents) => dirents,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return summary,
        Err(e) => {
            summary.exists = true;
            summary.problem = Some(format!("cannot list {}: {e}", dir.display()));
            return summary;
        }
    };
    summary.exists = true;
    let mut segments: Vec<(Index, PathBuf)> = Vec::new();
    for dirent in dirents {
        let path = match dirent {
            Ok(dirent) => dirent.path(),
            Err(e) => {
                summary.problem = Some(format!("cannot list {}: {e}", dir.display()));
                return summary;
            }
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".wal.tmp") {
            summary.interrupted_files += 1;
            continue;
        }
        let Some(stem) = name.strip_suffix(".wal") else {
            continue; // a node ignores these too
        };
        // The node's naming rule (io-real `wal/files.rs`): 20 digits, >= 1.
        match (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<u64>().ok())
            .flatten()
            .filter(|&i| i >= 1)
        {
            Some(first) => segments.push((Index(first), path)),
            None => {
                summary.problem = Some(format!(
                    "unexpected file {} in the WAL directory: a node would refuse to start",
                    path.display()
                ));
                return summary;
            }
        }
    }
    segments.sort();
    summary.segments = segments.len();
    let Some(&(oldest, _)) = segments.first() else {
        return summary;
    };
    let needed = Index(applied_index).next();
    if needed < oldest {
        summary.problem = Some(format!(
            "the WAL starts at index {oldest} but the engine needs index {needed} next: \
             a node would refuse to start (entries {needed}..{} are missing)",
            oldest.0 - 1
        ));
    }
    let mut planner = ReplayPlanner::new(needed.max(oldest), segments.len());
    for (first_index, path) in &segments {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                summary.problem = Some(format!("cannot read {}: {e}", path.display()));
                return summary;
            }
        };
        summary.wal_bytes += bytes.len() as u64;
        let image = SegmentImage {
            first_index: *first_index,
            bytes: &bytes,
        };
        planner = match planner.push(image) {
            Ok(planner) => planner,
            Err(e) => {
                summary.problem = Some(replay_problem(&segments, &e));
                return summary;
            }
        };
    }
    let plan = match planner.finish() {
        Ok(plan) => plan,
        Err(e) => {
            summary.problem = Some(replay_problem(&segments, &e));
            return summary;
        }
    };
    let next = plan.next.expect("segments exist, so `next` is known").0;
    if next > oldest.0 {
        summary.first_index = Some(oldest.0);
        summary.last_index = Some(next - 1);
    }
    summary.unapplied_entries = plan
        .entries
        .iter()
        .filter(|e| e.index > applied_index)
        .count() as u64;
    for cut in &plan.cuts {
        if let CutKind::TornTail { dropped_bytes, .. } = cut.kind {
            let path = segments[cut.segment].1.clone();
            summary.torn_tail = Some((path, cut.offset, dropped_bytes));
        }
    }
    summary
}

fn replay_problem(segments: &[(Index, PathBuf)], error: &ReplayError) -> String {
    match error {
        ReplayError::Corrupt {
            segment,
            offset,
            reason,
        } => format!(
            "corrupt WAL segment {} at byte offset {offset}: {reason}; a node would refuse to start",
            segments[*segment].1.display()
        ),
        ReplayError::Behind { .. } => format!("{error}; a node would refuse to start"),
    }
}

/// Bytes of the files directly in `dir` (RocksDB keeps its files flat).
fn dir_bytes(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    let context = |e: io::Error| format!("cannot list {}: {e}", dir.display());
    for dirent in fs::read_dir(dir).map_err(context)? {
        let md = dirent.and_then(|d| d.metadata()).map_err(context)?;
        if md.is_file() {
            total += md.len();
        }
    }
    Ok(total)
}

/// Counts the records in `[start, end)` of the engine.
fn count_records(o: &Opened, start: &[u8], end: &[u8]) -> Result<u64, String> {
    let mut n = 0;
    for item in o.engine.scan(start, Some(end)) {
        item.map_err(|e| format!("cannot read the engine: {e}"))?;
        n += 1;
    }
    Ok(n)
}

/// etcd's alarm names (`AlarmType`).
fn alarm_name(alarm: i32) -> Cow<'static, str> {
    match alarm {
        1 => "NOSPACE".into(),
        2 => "CORRUPT".into(),
        other => format!("alarm type {other}").into(),
    }
}

fn meta(args: &MetaArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let o = open(&args.target.data_dir)?;
    let m = o.meta;
    let engine_err = |e: t4_core::engine::EngineError| format!("cannot read the engine: {e}");
    let live_keys = count_records(&o, &[keys::CURRENT_PREFIX], &keys::current_space_end())?;
    let versions = count_records(&o, &[keys::HISTORY_PREFIX], &keys::history_space_end())?;
    let leases = mvcc::leases(&o.engine).map_err(engine_err)?.len();
    let mut alarms = Vec::new();
    for item in o
        .engine
        .scan(&[keys::ALARM_PREFIX], Some(&keys::alarm_space_end()))
    {
        let (key, _) = item.map_err(engine_err)?;
        let (member, alarm) = keys::parse_alarm_key(&key).map_err(engine_err)?;
        alarms.push((member, alarm_name(alarm)));
    }
    let engine_bytes = dir_bytes(&o.engine_dir)?;
    let wal = wal_summary(&o.wal_dir, m.applied_index);

    if args.target.json {
        let (running, pid) = match o.lock {
            EngineLock::Free => (json!(false), Value::Null),
            EngineLock::HeldBy(pid) => (json!(true), json!(pid)),
            EngineLock::Unknown => (Value::Null, Value::Null),
        };
        let torn_tail = wal.torn_tail.as_ref().map_or(Value::Null, |(file, offset, bytes)| {
            json!({"file": file.display().to_string(), "offset": offset, "bytes": bytes})
        });
        let doc = json!({
            "data_dir": o.data_dir.display().to_string(),
            "current_revision": m.current_revision,
            "compact_revision": m.compact_revision,
            "applied_index": m.applied_index,
            "applied_term": m.applied_term,
            "keys": live_keys,
            "versions": versions,
            "leases": leases,
            "alarms": alarms.iter().map(|(member, alarm)| json!({"member_id": member, "alarm": alarm})).collect::<Vec<_>>(),
            "engine_bytes": engine_bytes,
            "node_running": running,
            "node_pid": pid,
            "wal": {
                "dir": o.wal_dir.display().to_string(),
                "exists": wal.exists,
                "segments": wal.segments,
                "bytes": wal.wal_bytes,
                "first_index": wal.first_index,
                "last_index": wal.last_index,
                "unapplied_entries": wal.unapplied_entries,
                "interrupted_files": wal.interrupted_files,
                "torn_tail": torn_tail,
                "problem": wal.problem,
            },
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }

    let compacted = match m.compact_revision {
        -1 => "never compacted".to_owned(),
        w => format!("compacted at {w}"),
    };
    let alarm_text = match alarms.as_slice() {
        [] => "none".to_owned(),
        raised => {
            let listed: Vec<String> = raised
                .iter()
                .map(|(member, alarm)| format!("{alarm} (member {member:x})"))
                .collect();
            listed.join(", ")
        }
    };
    let wal_text = match (wal.exists, wal.first_index, wal.last_index) {
        (false, _, _) => format!("{} (missing)", o.wal_dir.display()),
        (true, first, last) => format!(
            "{} ({} segment(s), {} bytes, {})",
            o.wal_dir.display(),
            wal.segments,
            wal.wal_bytes,
            first
                .zip(last)
                .map_or("no entries".to_owned(), |(f, l)| format!(
                    "entries {f}..={l}"
                ))
        ),
    };
    let replay_note = if wal.unapplied_entries > 0 {
        " (a node replays them at start; inspect does not show them)"
    } else {
        ""
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("data dir", o.data_dir.display().to_string()),
        ("revision", format!("{} ({compacted})", m.current_revision)),
        (
            "applied",
            format!("index {}, term {}", m.applied_index, m.applied_term),
        ),
        (
            "keys",
            format!("{live_keys} live, {versions} stored versions"),
        ),
        ("leases", leases.to_string()),
        ("alarms", alarm_text),
        (
            "engine",
            format!("{} ({engine_bytes} bytes)", o.engine_dir.display()),
        ),
        ("wal", wal_text),
        (
            "wal unapplied",
            format!(
                "{} entries beyond the applied index{replay_note}",
                wal.unapplied_entries
            ),
        ),
    ];
    if wal.interrupted_files > 0 {
        rows.push((
            "wal leftovers",
            format!(
                "{} interrupted segment creations (*.wal.tmp; a node removes them)",
                wal.interrupted_files
            ),
        ));
    }
    if let Some((file, offset, bytes)) = &wal.torn_tail {
        rows.push((
            "wal torn tail",
            format!(
                "{bytes} bytes at offset {offset} of {} (a write never acknowledged; \
                 a node truncates it at start)",
                file.display()
            ),
        ));
    }
    if let Some(problem) = &wal.problem {
        rows.push(("wal problem", problem.clone()));
    }
    rows.push((
        "node",
        match o.lock {
            EngineLock::Free => "not running (nobody holds db/LOCK)".to_owned(),
            EngineLock::HeldBy(pid) => format!("running (process {pid} holds db/LOCK)"),
            EngineLock::Unknown => "unknown".to_owned(),
        },
    ));
    for (label, value) in rows {
        writeln!(out, "{label:<18}{value}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// get, list, count

fn get(args: &GetArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let key = key_bytes(&args.key)?;
    let o = open(&args.target.data_dir)?;
    let rev = resolve_rev(&o.meta, args.rev)?;
    let req = RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    };
    let resp = range_at(&o, req, rev)?;
    let Some(kv) = resp.kvs.first() else {
        return Err(format!(
            "key {} not found at revision {rev} (current revision {})",
            text(key),
            o.meta.current_revision
        )
        .into());
    };
    if args.target.json {
        writeln!(out, "{}", json!({"revision": rev, "kv": kv_json(kv, true)}))?;
        return Ok(());
    }
    writeln!(out, "key               {}", text(&kv.key))?;
    writeln!(out, "value             {}", text(&kv.value))?;
    writeln!(out, "create_revision   {}", kv.create_revision)?;
    writeln!(out, "mod_revision      {}", kv.mod_revision)?;
    writeln!(out, "version           {}", kv.version)?;
    writeln!(out, "lease             {}", lease_text(kv.lease))?;
    writeln!(out, "read at revision  {rev}")?;
    Ok(())
}

fn list(args: &ListArgs, out: &mut dyn Write) -> Result<(), Failure> {
    use std::os::unix::ffi::OsStrExt;
    let o = open(&args.target.data_dir)?;
    let rev = resolve_rev(&o.meta, args.rev)?;
    let mut req = prefix_request(args.prefix.as_bytes());
    req.limit = i64::try_from(args.limit).unwrap_or(i64::MAX);
    req.keys_only = args.keys_only;
    let resp = range_at(&o, req, rev)?;
    if args.target.json {
        let kvs: Vec<Value> = resp
            .kvs
            .iter()
            .map(|kv| kv_json(kv, !args.keys_only))
            .collect();
        let doc = json!({"revision": rev, "count": resp.count, "more": resp.more, "kvs": kvs});
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    for kv in &resp.kvs {
        if args.keys_only {
            writeln!(out, "{}", text(&kv.key))?;
        } else {
            writeln!(out, "{} = {}", text(&kv.key), text(&kv.value))?;
        }
    }
    if resp.more {
        eprintln!(
            "t4 inspect: {} of {} keys shown (--limit {})",
            resp.kvs.len(),
            resp.count,
            args.limit
        );
    }
    Ok(())
}

fn count(args: &CountArgs, out: &mut dyn Write) -> Result<(), Failure> {
    use std::os::unix::ffi::OsStrExt;
    let o = open(&args.target.data_dir)?;
    let rev = resolve_rev(&o.meta, args.rev)?;
    let mut req = prefix_request(args.prefix.as_bytes());
    req.count_only = true;
    let resp = range_at(&o, req, rev)?;
    if args.target.json {
        writeln!(out, "{}", json!({"revision": rev, "count": resp.count}))?;
    } else {
        writeln!(out, "{}", resp.count)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// history

fn history(args: &HistoryArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let key = key_bytes(&args.key)?;
    let o = open(&args.target.data_dir)?;
    let versions =
        mvcc::key_history(&o.engine, key).map_err(|e| format!("cannot read the engine: {e}"))?;
    if versions.is_empty() {
        return Err(format!(
            "key {} has no stored version (never written, or compacted away: compact revision {})",
            text(key),
            o.meta.compact_revision
        )
        .into());
    }
    if args.target.json {
        let listed: Vec<Value> = versions
            .iter()
            .map(|v| {
                let mut entry = json!({
                    "revision": v.rev.main,
                    "sub_revision": v.rev.sub,
                    "event": if v.kv.is_some() { "put" } else { "delete" },
                });
                if let Some(kv) = &v.kv {
                    let encoding = encoding_of(&[&kv.value]);
                    entry["value"] = bytes_json(&kv.value, encoding);
                    entry["encoding"] = json!(encoding.name());
                    entry["create_revision"] = json!(kv.create_revision);
                    entry["version"] = json!(kv.version);
                    entry["lease"] = json!(kv.lease);
                }
                entry
            })
            .collect();
        let encoding = encoding_of(&[key]);
        let doc = json!({
            "key": bytes_json(key, encoding),
            "encoding": encoding.name(),
            "compact_revision": o.meta.compact_revision,
            "versions": listed,
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    for v in &versions {
        match &v.kv {
            Some(kv) => writeln!(
                out,
                "{:<8}put     create={} version={} lease={}  {}",
                rev_text(v.rev),
                kv.create_revision,
                kv.version,
                lease_text(kv.lease),
                text(&kv.value)
            )?,
            None => writeln!(out, "{:<8}delete", rev_text(v.rev))?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// diff

/// How a key differs between two revisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Created,
    Modified,
    Deleted,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Modified => "modified",
            Change::Deleted => "deleted",
        }
    }
}

/// Keys created, modified or deleted between revisions `a` and `b`.
///
/// Built from the revision log rather than by comparing a range at `a` with
/// a range at `b`: the log names exactly the keys written in `(a, b]`, so
/// the cost is one log scan over those revisions plus two point reads per
/// written key, not two reads of the whole key space (and nothing but the
/// changed keys is held in memory). The log is compacted together with the
/// history, so every revision readable by a range (`>= compact revision`)
/// has its log entries after it. A key written and then deleted inside
/// `(a, b]` (absent at both ends) is not listed; one deleted and created
/// again is "modified" (its `create_revision` tells).
fn diff(args: &DiffArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let o = open(&args.target.data_dir)?;
    let (a, b) = (args.rev_a, args.rev_b);
    if a > b {
        return Err(format!("rev-a ({a}) must not be above rev-b ({b})").into());
    }
    let a = resolve_rev(&o.meta, Some(a))?;
    let b = resolve_rev(&o.meta, Some(b))?;

    // Keys written in (a, b], each with the revision of its last write there.
    let mut written: BTreeMap<Vec<u8>, Rev> = BTreeMap::new();
    let start = keys::revlog_key(Rev {
        main: a + 1,
        sub: 0,
    });
    let end = keys::revlog_key(Rev {
        main: b + 1,
        sub: 0,
    });
    let engine_err = |e: t4_core::engine::EngineError| format!("cannot read the engine: {e}");
    for item in o.engine.scan(&start, Some(&end)) {
        let (log_key, log_value) = item.map_err(engine_err)?;
        let rev = keys::parse_revlog_key(&log_key).map_err(engine_err)?;
        let record = RevLogRecord::decode(log_value.as_slice()).map_err(|e| {
            format!("cannot read the engine: bad revision-log record at {rev:?}: {e}")
        })?;
        EventKind::try_from(record.kind).map_err(|_| {
            format!(
                "cannot read the engine: unknown event kind {} at {rev:?}",
                record.kind
            )
        })?;
        assert!(
            rev.main > a && rev.main <= b,
            "revision-log scan of ({a}, {b}] met {rev:?}"
        );
        written.insert(record.key, rev);
    }

    let read = |key: &[u8], rev: i64| -> Result<Option<KeyValue>, String> {
        let req = RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        };
        Ok(range_at(&o, req, rev)?.kvs.into_iter().next())
    };
    let mut changes = Vec::new();
    for (key, last) in &written {
        let before = read(key, a)?;
        let after = read(key, b)?;
        let change = match (&before, &after) {
            (None, Some(_)) => Change::Created,
            (Some(_), None) => Change::Deleted,
            (Some(_), Some(_)) => Change::Modified,
            (None, None) => continue,
        };
        changes.push((key, *last, change, before, after));
    }

    if args.target.json {
        let listed: Vec<Value> = changes
            .iter()
            .map(|(key, last, change, before, after)| {
                let encoding = encoding_of(&[key]);
                json!({
                    "key": bytes_json(key, encoding),
                    "encoding": encoding.name(),
                    "change": change.name(),
                    "revision": last.main,
                    "before": before.as_ref().map(|kv| kv_json(kv, true)),
                    "after": after.as_ref().map(|kv| kv_json(kv, true)),
                })
            })
            .collect();
        writeln!(out, "{}", json!({"from": a, "to": b, "changes": listed}))?;
        return Ok(());
    }
    let tally = |which: Change| changes.iter().filter(|c| c.2 == which).count();
    writeln!(
        out,
        "diff {a}..{b}: {} created, {} modified, {} deleted",
        tally(Change::Created),
        tally(Change::Modified),
        tally(Change::Deleted)
    )?;
    for (key, last, change, before, after) in &changes {
        let was = |kv: &KeyValue| format!("(was {} at rev {})", text(&kv.value), kv.mod_revision);
        let detail = match (change, before, after) {
            (Change::Created, _, Some(now)) => text(&now.value).into_owned(),
            (Change::Modified, Some(then), Some(now)) => {
                format!("{}  {}", text(&now.value), was(then))
            }
            (Change::Deleted, Some(then), _) => was(then),
            _ => unreachable!("classified above from before/after"),
        };
        writeln!(
            out,
            "{:<9}{}  rev={}  {detail}",
            change.name(),
            text(key),
            last.main
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rendering bytes.

/// How bytes are shown in one JSON object (see `ABOUT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Base64,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }
}

/// `Utf8` when every one of `fields` is valid UTF-8.
fn encoding_of(fields: &[&[u8]]) -> Encoding {
    if fields.iter().all(|f| std::str::from_utf8(f).is_ok()) {
        Encoding::Utf8
    } else {
        Encoding::Base64
    }
}

fn bytes_json(bytes: &[u8], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Utf8 => Value::String(
            std::str::from_utf8(bytes)
                .expect("encoding_of chose utf8: valid")
                .to_owned(),
        ),
        Encoding::Base64 => Value::String(base64(bytes)),
    }
}

/// A key-value as JSON; the value only `with_value`.
fn kv_json(kv: &KeyValue, with_value: bool) -> Value {
    let encoding = if with_value {
        encoding_of(&[&kv.key, &kv.value])
    } else {
        encoding_of(&[&kv.key])
    };
    let mut doc = json!({
        "key": bytes_json(&kv.key, encoding),
        "encoding": encoding.name(),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    });
    if with_value {
        doc["value"] = bytes_json(&kv.value, encoding);
    }
    doc
}

/// Standard base64 with padding (RFC 4648 §4). Written here because the
/// server crate has no base64 dependency and this is its only use; the
/// tests check it against known encodings.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (group >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes for text output: as they are when that is unambiguous, quoted
/// otherwise (see `ABOUT`).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if is_plain(s) => Cow::Borrowed(s),
        Ok(s) => Cow::Owned(format!("\"{}\"", s.escape_debug())),
        Err(_) => Cow::Owned(format!("b\"{}\"", bytes.escape_ascii())),
    }
}

/// Printable without quotes: non-empty, no control characters, no spaces
/// at either end, and not starting like a quoted form.
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().any(char::is_control)
        && s.trim() == s
        && !s.starts_with('"')
        && !s.starts_with("b\"")
}

fn lease_text(lease: i64) -> String {
    if lease == 0 {
        "none".to_owned()
    } else {
        format!("{lease} ({lease:x})")
    }
}

/// `7`, or `7.1` for the second write of a txn at revision 7.
fn rev_text(rev: Rev) -> String {
    if rev.sub == 0 {
        rev.main.to_string()
    } else {
        format!("{}.{}", rev.main, rev.sub)
    }
}
