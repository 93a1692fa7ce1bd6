//! `t4 restore list`: the checkpoints a node could restore from, newest
//! first, in the order start-up tries them
//! ([`t4_core::bucket::recovery::checkpoint_candidates`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use t4_core::bucket::layout::MANIFEST_LATEST;
use t4_core::bucket::recovery::checkpoint_candidates;

use super::read::{Bucket, Read};
use super::{print_json, ManifestReport};
use crate::bucket_args::BucketArgs;

#[derive(Debug, Serialize)]
struct RestoreListReport {
    bucket: String,
    latest: LatestState,
    /// Newest first by (index, term).
    checkpoints: Vec<CheckpointEntry>,
    /// Branch registrations that could not be read (what they pin is
    /// unknown).
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum LatestState {
    None,
    Unreadable { error: String },
    Ok { manifest_key: String },
}

#[derive(Debug, Serialize)]
struct CheckpointEntry {
    manifest_key: String,
    term: u64,
    index: u64,
    /// `manifest/latest` points at it.
    latest: bool,
    /// Its manifest is in the listing (a pointer may name a missing one).
    listed: bool,
    manifest: ManifestReport,
    /// Files the manifest lists that are not in the bucket (`None` when
    /// the manifest was not read). A checkpoint with missing files cannot
    /// be restored.
    missing_files: Option<Vec<String>>,
    /// Branches whose registration pins it.
    pinned_by: Vec<String>,
}

/// `t4 restore list`.
pub async fn list(args: &BucketArgs, json: bool) -> Result<(), String> {
    let bucket = Bucket::open(args).await?;
    let listing = bucket.list_all().await?;
    let present: BTreeSet<&str> = listing.iter().map(|o| o.key.as_str()).collect();

    let latest_read = bucket.latest().await?;
    let latest = match &latest_read {
        Read::Missing => LatestState::None,
        Read::Bad(error) => LatestState::Unreadable {
            error: error.clone(),
        },
        Read::Ok(p) => LatestState::Ok {
            manifest_key: p.manifest_key.clone(),
        },
    };
    let mut pins: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (key, read) in bucket.branches(&listing).await? {
        match read {
            Read::Ok(b) => pins.entry(b.manifest_key).or_default().push(b.branch_id),
            Read::Missing => {}
            Read::Bad(why) => {
                warnings.push(format!("branch registration {key} cannot be read: {why}"))
            }
        }
    }

    let keys: Vec<String> = listing.iter().map(|o| o.key.clone()).collect();
    let mut checkpoints = Vec::new();
    for candidate in checkpoint_candidates(&keys, latest_read.ok()) {
        let key = candidate.manifest_key;
        let read = bucket.manifest(&key).await?;
        let missing_files = read.ok().map(|m| {
            m.file_keys()
                .filter(|k| !present.contains(k))
                .map(str::to_owned)
                .collect()
        });
        checkpoints.push(CheckpointEntry {
            term: candidate.term.0,
            index: candidate.index.0,
            latest: latest_read.ok().is_some_and(|p| p.manifest_key == key),
            listed: present.contains(key.as_str()),
            manifest: ManifestReport::from_read(&read),
            missing_files,
            pinned_by: pins.remove(&key).unwrap_or_default(),
            manifest_key: key,
        });
    }
    for (manifest_key, ids) in pins {
        warnings.push(format!(
            "branch {} pins {manifest_key}, which is not in the bucket",
            ids.join(", ")
        ));
    }
    let report = RestoreListReport {
        bucket: bucket.describe().to_owned(),
        latest,
        checkpoints,
        warnings,
    };
    if json {
        print_json(&report);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(r: &RestoreListReport) {
    println!("Checkpoints in {} (newest first)", r.bucket);
    match &r.latest {
        LatestState::None => println!("{MANIFEST_LATEST}: none"),
        LatestState::Unreadable { error } => println!("{MANIFEST_LATEST}: unreadable: {error}"),
        LatestState::Ok { manifest_key } => println!("{MANIFEST_LATEST}: {manifest_key}"),
    }
    if r.checkpoints.is_empty() {
        println!("(no checkpoints)");
    }
    for c in &r.checkpoints {
        println!(
            "{}{}",
            c.manifest_key,
            if c.latest { "  [latest]" } else { "" }
        );
        print!("  term {}, index {}", c.term, c.index);
        match &c.manifest {
            ManifestReport::Valid {
                revision,
                compact_revision,
                created,
                sst_count,
                sst_bytes,
                ..
            } => {
                println!(
                    ", revision {revision}, compact revision {compact_revision}, created {created}"
                );
                println!("  SSTs: {sst_count} ({sst_bytes} bytes); manifest valid");
            }
            ManifestReport::Missing => println!("; manifest missing"),
            ManifestReport::Unreadable { error } => println!("; manifest unreadable: {error}"),
        }
        if let Some(missing) = c.missing_files.as_ref().filter(|m| !m.is_empty()) {
            println!(
                "  files missing from the bucket ({}): {}",
                missing.len(),
                missing.join(", ")
            );
        }
        if !c.pinned_by.is_empty() {
            println!("  pinned by: {}", c.pinned_by.join(", "));
        }
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
}

/// `t4 restore checkpoint`: a new data directory holding a checkpoint's
/// engine (and no WAL: the node replays the bucket's WAL after the
/// checkpoint when it starts). Refuses a data directory that has anything
/// in it; a failed restore leaves no engine behind.
pub async fn checkpoint(
    args: &BucketArgs,
    data_dir: &std::path::Path,
    only: Option<&str>,
) -> Result<(), String> {
    if let Some(key) = only {
        if t4_core::bucket::layout::parse_checkpoint_manifest_key(key).is_none() {
            return Err(format!(
                "{key:?} is not a checkpoint manifest key (checkpoint/<term>/<index>/manifest.json)"
            ));
        }
    }
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty; refusing to overwrite it",
                    data_dir.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", data_dir.display())),
    }
    let bucket = Bucket::open(args).await?;
    let engine_dir = t4_io_real::Config::new(data_dir).engine_dir();
    let started = std::time::Instant::now();
    let restored = t4_io_real::checkpoint::restore(bucket.store(), &engine_dir, only)
        .await
        .map_err(|e| format!("cannot restore from {}: {e}", bucket.describe()))?
        .ok_or_else(|| {
            format!(
                "{} holds no usable checkpoint; `t4 run` on an empty data directory replays its WAL instead",
                bucket.describe()
            )
        })?;
    for warning in &restored.skipped {
        eprintln!("warning: {warning}");
    }
    let m = &restored.manifest;
    println!(
        "restored {} into {} in {:.1} s: term {}, index {}, revision {}, {} bytes",
        m.key(),
        data_dir.display(),
        started.elapsed().as_secs_f64(),
        m.term.0,
        m.index.0,
        m.revision.0,
        restored.bytes
    );
    println!(
        "start it with `t4 run --data-dir {}` and the same bucket flags: it replays the bucket's WAL after index {}",
        data_dir.display(),
        m.index.0
    );
    Ok(())
}
