//! `t4 status`: what a bucket holds, read directly (no node needed).
//!
//! Reads the listing, `manifest/latest` and the manifest it names,
//! `leader-lock`, the branch registrations and the newest WAL object (for
//! the last index). Anything missing or damaged is reported as such.

use serde::Serialize;
use t4_core::bucket::layout::{
    parse_checkpoint_manifest_key, parse_wal_key, BRANCH_PREFIX, CHECKPOINT_PREFIX, LEADER_LOCK,
    MANIFEST_LATEST, SST_PREFIX,
};
use t4_core::bucket::wal_object;
use t4_core::object::ObjectInfo;

use super::read::{Bucket, Read};
use super::{print_json, rfc3339_utc, ManifestReport, Totals};
use crate::bucket_args::BucketArgs;

#[derive(Debug, Serialize)]
struct StatusReport {
    bucket: String,
    latest_checkpoint: LatestReport,
    checkpoints: CheckpointTotals,
    wal: WalReport,
    ssts: Totals,
    /// Objects outside the layout.
    other: Totals,
    leader_lock: LockReport,
    branches: Vec<BranchReport>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum LatestReport {
    /// No `manifest/latest`.
    None,
    /// `manifest/latest` could not be read.
    Unreadable { error: String },
    /// The pointer, and what the manifest it names says.
    Ok {
        manifest_key: String,
        term: u64,
        index: u64,
        manifest: ManifestReport,
    },
}

#[derive(Debug, Default, Serialize)]
struct CheckpointTotals {
    /// Checkpoint manifests (complete checkpoints).
    count: u64,
    /// Every object under `checkpoint/` (manifests and meta files).
    objects: u64,
    bytes: u64,
    /// Folders with files but no manifest (an upload in progress or cut
    /// short).
    without_manifest: u64,
}

#[derive(Debug, Default, Serialize)]
struct WalReport {
    count: u64,
    bytes: u64,
    /// The first index of the oldest object.
    first_index: Option<u64>,
    /// The last entry's index in the newest object.
    last_index: Option<u64>,
    /// Why `last_index` is unknown, when there are objects.
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum LockReport {
    None,
    Unreadable {
        error: String,
    },
    Held {
        term: u64,
        leader_id: String,
        leader_peer_addr: String,
        members: Vec<String>,
        generation: u64,
    },
}

#[derive(Debug, Serialize)]
struct BranchReport {
    key: String,
    #[serde(flatten)]
    state: BranchState,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum BranchState {
    Ok {
        branch_id: String,
        manifest_key: String,
        created_unix_ms: u64,
        created: String,
    },
    Unreadable {
        error: String,
    },
}

/// `t4 status`.
pub async fn run(args: &BucketArgs, json: bool) -> Result<(), String> {
    let bucket = Bucket::open(args).await?;
    let listing = bucket.list_all().await?;

    let latest_checkpoint = match bucket.latest().await? {
        Read::Missing => LatestReport::None,
        Read::Bad(error) => LatestReport::Unreadable { error },
        Read::Ok(pointer) => LatestReport::Ok {
            manifest: ManifestReport::from_read(&bucket.manifest(&pointer.manifest_key).await?),
            manifest_key: pointer.manifest_key,
            term: pointer.term.0,
            index: pointer.index.0,
        },
    };
    let leader_lock = match bucket.lock().await? {
        Read::Missing => LockReport::None,
        Read::Bad(error) => LockReport::Unreadable { error },
        Read::Ok(lock) => LockReport::Held {
            term: lock.term.0,
            leader_id: lock.leader_id,
            leader_peer_addr: lock.leader_peer_addr,
            members: lock.members.into_iter().map(|m| m.id).collect(),
            generation: lock.generation,
        },
    };
    let branches = bucket
        .branches(&listing)
        .await?
        .into_iter()
        .map(|(key, read)| BranchReport {
            key,
            state: match read {
                Read::Ok(b) => BranchState::Ok {
                    created: rfc3339_utc(b.created_unix_ms),
                    branch_id: b.branch_id,
                    manifest_key: b.manifest_key,
                    created_unix_ms: b.created_unix_ms,
                },
                Read::Missing => BranchState::Unreadable {
                    error: "deleted while this status was read".to_owned(),
                },
                Read::Bad(error) => BranchState::Unreadable { error },
            },
        })
        .collect();

    let (checkpoints, ssts, other) = totals(&listing);
    let wal = wal_report(&bucket, &listing).await?;
    let report = StatusReport {
        bucket: bucket.describe().to_owned(),
        latest_checkpoint,
        checkpoints,
        wal,
        ssts,
        other,
        leader_lock,
        branches,
    };
    if json {
        print_json(&report);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Counts by kind (WAL objects are counted by [`wal_report`]).
fn totals(listing: &[ObjectInfo]) -> (CheckpointTotals, Totals, Totals) {
    let mut checkpoints = CheckpointTotals::default();
    let mut ssts = Totals::default();
    let mut other = Totals::default();
    let mut folders = std::collections::BTreeMap::<&str, bool>::new();
    for object in listing {
        let key = object.key.as_str();
        if let Some(rest) = key.strip_prefix(CHECKPOINT_PREFIX) {
            checkpoints.objects += 1;
            checkpoints.bytes += object.size_bytes;
            let is_manifest = parse_checkpoint_manifest_key(key).is_some();
            checkpoints.count += u64::from(is_manifest);
            // The folder: `<term>/<index>` (two components under the prefix).
            let folder_len = rest
                .match_indices('/')
                .nth(1)
                .map_or(rest.len(), |(at, _)| at);
            *folders.entry(&rest[..folder_len]).or_default() |= is_manifest;
        } else if key.starts_with(SST_PREFIX) {
            ssts.add(object.size_bytes);
        } else if parse_wal_key(key).is_none()
            && key != LEADER_LOCK
            && key != MANIFEST_LATEST
            && !key.starts_with(BRANCH_PREFIX)
        {
            other.add(object.size_bytes);
        }
    }
    checkpoints.without_manifest = folders.values().filter(|has| !**has).count() as u64;
    (checkpoints, ssts, other)
}

/// WAL counts, and the last index from the newest object.
async fn wal_report(bucket: &Bucket, listing: &[ObjectInfo]) -> Result<WalReport, String> {
    let mut report = WalReport::default();
    let mut newest = None;
    for object in listing {
        if let Some(first) = parse_wal_key(&object.key) {
            report.count += 1;
            report.bytes += object.size_bytes;
            report.first_index = Some(report.first_index.map_or(first.0, |f| f.min(first.0)));
            if newest.is_none_or(|(n, _)| first > n) {
                newest = Some((first, object.key.as_str()));
            }
        }
    }
    if let Some((first, key)) = newest {
        let read = bucket
            .read(key, |body| wal_object::decode(key, first, body))
            .await?;
        match read {
            Read::Ok((_, entries)) => report.last_index = entries.last().map(|e| e.index),
            Read::Missing => {
                report.last_error = Some(format!("{key} was deleted while it was read"));
            }
            Read::Bad(why) => report.last_error = Some(why),
        }
    }
    Ok(report)
}

fn print_text(r: &StatusReport) {
    println!("Bucket status {}", r.bucket);
    println!("Latest checkpoint");
    match &r.latest_checkpoint {
        LatestReport::None => println!("  (none: {MANIFEST_LATEST} does not exist)"),
        LatestReport::Unreadable { error } => {
            println!("  {MANIFEST_LATEST} unreadable: {error}");
        }
        LatestReport::Ok {
            manifest_key,
            term,
            index,
            manifest,
        } => {
            println!("  key: {manifest_key}");
            println!("  term: {term}");
            println!("  index: {index}");
            match manifest {
                ManifestReport::Valid {
                    revision,
                    compact_revision,
                    created,
                    sst_count,
                    sst_bytes,
                    ..
                } => {
                    println!("  revision: {revision}");
                    println!("  compact revision: {compact_revision}");
                    println!("  created: {created}");
                    println!("  SSTs: {sst_count} ({sst_bytes} bytes)");
                }
                ManifestReport::Missing => {
                    println!("  manifest: missing ({MANIFEST_LATEST} points at a checkpoint that is not in the bucket)");
                }
                ManifestReport::Unreadable { error } => println!("  manifest unreadable: {error}"),
            }
        }
    }
    println!("Storage objects");
    let c = &r.checkpoints;
    println!(
        "  checkpoints: {} ({} objects, {} bytes)",
        c.count, c.objects, c.bytes
    );
    if c.without_manifest > 0 {
        println!(
            "  checkpoint folders without a manifest: {}",
            c.without_manifest
        );
    }
    let w = &r.wal;
    print!("  WAL objects: {} ({} bytes)", w.count, w.bytes);
    match (w.first_index, w.last_index, &w.last_error) {
        (Some(first), Some(last), _) => println!(", indexes {first} to {last}"),
        (Some(first), None, Some(why)) => {
            println!(", from index {first}; newest object unreadable: {why}");
        }
        _ => println!(),
    }
    println!("  SSTs: {} ({} bytes)", r.ssts.count, r.ssts.bytes);
    if r.other.count > 0 {
        println!(
            "  other objects: {} ({} bytes)",
            r.other.count, r.other.bytes
        );
    }
    println!("Leader lock");
    match &r.leader_lock {
        LockReport::None => println!("  none"),
        LockReport::Unreadable { error } => println!("  {LEADER_LOCK} unreadable: {error}"),
        LockReport::Held {
            term,
            leader_id,
            leader_peer_addr,
            members,
            ..
        } => {
            let peer = if leader_peer_addr.is_empty() {
                "(none)"
            } else {
                leader_peer_addr
            };
            println!("  term {term}, member {leader_id}, peer address {peer}");
            if members.len() > 1 {
                println!("  members: {}", members.join(", "));
            }
        }
    }
    println!("Branch forks");
    if r.branches.is_empty() {
        println!("  (none)");
    }
    for b in &r.branches {
        match &b.state {
            BranchState::Ok {
                branch_id,
                manifest_key,
                created,
                ..
            } => println!("  {branch_id} -> {manifest_key} (registered {created})"),
            BranchState::Unreadable { error } => println!("  {} unreadable: {error}", b.key),
        }
    }
}
