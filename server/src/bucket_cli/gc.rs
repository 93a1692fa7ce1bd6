//! `t4 gc`: prune a bucket with core's GC plan ([`t4_core::bucket::gc`]).
//!
//! Reads the whole listing, `manifest/latest`, every checkpoint manifest,
//! every branch registration and the WAL headers the plan needs, and plans,
//! through core's GC pass ([`GcRun`], as a dry run); then deletes [`GcPlan::deletions`] one at a time **in plan
//! order** (manifests of dropped checkpoints first, WAL objects oldest
//! first), which is what keeps a pass that stops half-way harmless: no
//! listed manifest ever loses its files, and a fence object stays
//! recognizable. So the first failed delete stops the run, says how far it
//! got, and the next run simply carries on.
//!
//! Inputs that cannot be read are handled as core's rules expect: a
//! manifest that does not read or validate is passed as absent (GC keeps
//! what it cannot judge), a WAL header that does not read leaves that
//! object's term unknown (kept as a possible fence), and an unreadable
//! `manifest/latest` pins nothing (it is reported). A branch registration
//! that cannot be read stops GC before any deletion: it pins a checkpoint
//! nobody can name.

use std::collections::BTreeSet;

use serde::Serialize;
use t4_core::bucket::gc::{DeleteReason, GcPlan, KeepReason};
use t4_core::bucket::gc_run::{GcProgress, GcRun};
use t4_core::bucket::layout::{wal_key, LEADER_LOCK, SST_PREFIX};
use t4_core::object::ObjectError;

use super::print_json;
use super::read::{Bucket, Read};
use crate::bucket_args::BucketArgs;

#[derive(Debug, Serialize)]
struct GcReport {
    bucket: String,
    keep: usize,
    dry_run: bool,
    /// The plan's deletions, in the order they run.
    deletions: Vec<DeletionReport>,
    /// How many of `deletions` were done (0 for a dry run).
    deleted: usize,
    kept_checkpoints: Vec<KeptReport>,
    /// Covered WAL objects kept because they are, or may be, fences.
    fences_kept: Vec<String>,
    warnings: Vec<String>,
    /// Counts of `deletions` (for a dry run: what would be deleted).
    summary: Summary,
    /// Why the run stopped early, if it did.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct DeletionReport {
    key: String,
    size_bytes: u64,
    /// `checkpoint`, `incomplete_checkpoint`, `sst` or `wal`.
    kind: &'static str,
    reason: String,
}

#[derive(Debug, Serialize)]
struct KeptReport {
    manifest_key: String,
    term: u64,
    index: u64,
    /// `newest`, `latest`, `pinned`, `unreadable`.
    reasons: Vec<&'static str>,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    checkpoints_deleted: usize,
    incomplete_checkpoints_deleted: usize,
    orphan_ssts_deleted: usize,
    wal_objects_deleted: usize,
    objects_deleted: u64,
    bytes_freed: u64,
    objects_kept: u64,
    bytes_kept: u64,
}

/// `t4 gc`.
pub async fn run(args: &BucketArgs, keep: usize, dry_run: bool, json: bool) -> Result<(), String> {
    assert!(keep >= 1, "--keep is checked when parsed: {keep}");
    let bucket = Bucket::open(args).await?;
    let (plan, lock_holder) = plan(&bucket, keep).await?;
    let mut report = GcReport {
        bucket: bucket.describe().to_owned(),
        keep,
        dry_run,
        deletions: plan
            .deletions
            .iter()
            .map(|d| DeletionReport {
                key: d.key.clone(),
                size_bytes: d.size_bytes,
                kind: kind(&d.reason),
                reason: d.reason.to_string(),
            })
            .collect(),
        deleted: 0,
        kept_checkpoints: plan
            .kept_checkpoints
            .iter()
            .map(|k| KeptReport {
                manifest_key: k.manifest_key.clone(),
                term: k.term.0,
                index: k.index.0,
                reasons: k.reasons.iter().map(|r| keep_reason(*r)).collect(),
            })
            .collect(),
        fences_kept: plan.fences_kept.iter().map(|i| wal_key(*i)).collect(),
        warnings: plan.warnings.clone(),
        summary: summary(&plan),
        error: None,
    };
    if let Some(holder) = lock_holder {
        if report.summary.orphan_ssts_deleted > 0 {
            // gc.rs: a checkpoint upload running now may have found one of
            // these SSTs present and skipped uploading it.
            report.warnings.push(format!(
                "{LEADER_LOCK} names {holder}: if that node is uploading a checkpoint right now, \
                 an SST it reuses could be deleted before its manifest lands; run gc while no \
                 checkpoint is being written"
            ));
        }
    }

    if !json {
        print_header(&report);
    }
    if !dry_run {
        for (done, deletion) in plan.deletions.iter().enumerate() {
            if let Err(e) = bucket.delete(&deletion.key).await {
                let why = format!(
                    "gc stopped after deleting {done} of {} objects: deleting {} failed: {e}. \
                     What is left is consistent (deletions run in a safe order); run t4 gc again",
                    plan.deletions.len(),
                    deletion.key
                );
                report.deleted = done;
                report.error = Some(why.clone());
                if json {
                    print_json(&report);
                }
                return Err(why);
            }
            if !json {
                println!(
                    "deleted {} ({} bytes): {}",
                    deletion.key, deletion.size_bytes, deletion.reason
                );
            }
        }
        report.deleted = plan.deletions.len();
    }
    if json {
        print_json(&report);
    } else {
        print_summary(&report);
    }
    Ok(())
}

/// Reads what the plan needs and makes it, with core's own GC pass
/// ([`GcRun`], the one the node runs after each checkpoint) as a dry run:
/// the same reads and the same rules; the deletions are done by [`run`] so
/// it can report each one. The store already retried what was worth
/// retrying, so a retryable answer here ends the run. Also returns who
/// holds the leader lock, if anyone (for the warning about concurrent
/// checkpoints).
async fn plan(bucket: &Bucket, keep: usize) -> Result<(GcPlan, Option<String>), String> {
    let (mut pass, mut op) = GcRun::start(keep, true);
    let outcome = loop {
        let result = bucket.store().execute(op.clone()).await;
        if let Err(ObjectError::Retryable(why)) = &result {
            return Err(format!("{} {}: {why}", op.kind(), op.key()));
        }
        match pass.on_result(result) {
            GcProgress::Next(next) | GcProgress::Retry(next) => op = next,
            GcProgress::Finished(outcome) => break outcome,
        }
    };
    let mut plan = match (outcome.plan, outcome.error) {
        (Some(plan), None) => plan,
        (_, Some(why)) => return Err(why),
        (None, None) => unreachable!("a dry run that did not stop has a plan"),
    };
    plan.warnings.splice(0..0, outcome.warnings);
    let lock_holder = match bucket.lock().await? {
        Read::Ok(lock) => Some(format!("member {} (term {})", lock.leader_id, lock.term)),
        Read::Bad(_) => Some("a leader (the lock does not decode)".to_owned()),
        Read::Missing => None,
    };
    Ok((plan, lock_holder))
}

fn kind(reason: &DeleteReason) -> &'static str {
    match reason {
        DeleteReason::OldCheckpoint { .. } => "checkpoint",
        DeleteReason::IncompleteCheckpoint { .. } => "incomplete_checkpoint",
        DeleteReason::UnreferencedSst => "sst",
        DeleteReason::CoveredWal { .. } => "wal",
    }
}

fn keep_reason(reason: KeepReason) -> &'static str {
    match reason {
        KeepReason::Newest => "newest",
        KeepReason::Latest => "latest",
        KeepReason::Pinned => "pinned",
        KeepReason::Unreadable => "unreadable",
        KeepReason::Incomplete => "incomplete",
    }
}

fn summary(plan: &GcPlan) -> Summary {
    let mut checkpoints = BTreeSet::new();
    let mut incomplete = BTreeSet::new();
    let mut s = Summary {
        objects_deleted: plan.deleted_objects,
        bytes_freed: plan.deleted_bytes,
        objects_kept: plan.kept_objects,
        bytes_kept: plan.kept_bytes,
        ..Summary::default()
    };
    for d in &plan.deletions {
        match d.reason {
            DeleteReason::OldCheckpoint { index, term } => {
                checkpoints.insert((term, index));
            }
            DeleteReason::IncompleteCheckpoint { index, term } => {
                incomplete.insert((term, index));
            }
            DeleteReason::UnreferencedSst => {
                debug_assert!(d.key.starts_with(SST_PREFIX), "{}", d.key);
                s.orphan_ssts_deleted += 1;
            }
            DeleteReason::CoveredWal { .. } => s.wal_objects_deleted += 1,
        }
    }
    s.checkpoints_deleted = checkpoints.len();
    s.incomplete_checkpoints_deleted = incomplete.len();
    s
}

fn print_header(r: &GcReport) {
    if r.dry_run {
        println!(
            "GC dry run of {} (keep {}): nothing is deleted",
            r.bucket, r.keep
        );
    } else {
        println!("GC of {} (keep {})", r.bucket, r.keep);
    }
    println!("kept checkpoints:");
    if r.kept_checkpoints.is_empty() {
        println!("  (none)");
    }
    for k in &r.kept_checkpoints {
        println!(
            "  {} (term {}, index {}): {}",
            k.manifest_key,
            k.term,
            k.index,
            k.reasons.join(", ")
        );
    }
    if !r.fences_kept.is_empty() {
        println!("WAL objects kept as (possible) fences:");
        for key in &r.fences_kept {
            println!("  {key}");
        }
    }
    if !r.warnings.is_empty() {
        println!("warnings:");
        for w in &r.warnings {
            println!("  {w}");
        }
    }
    if r.deletions.is_empty() {
        println!("nothing to delete");
    }
    if r.dry_run {
        for d in &r.deletions {
            println!(
                "would delete {} ({} bytes): {}",
                d.key, d.size_bytes, d.reason
            );
        }
    }
}

fn print_summary(r: &GcReport) {
    let s = &r.summary;
    let (title, verb) = if r.dry_run {
        ("GC dry run complete", "to delete")
    } else {
        ("GC complete", "deleted")
    };
    println!("{title}");
    println!("checkpoints {verb}: {}", s.checkpoints_deleted);
    if s.incomplete_checkpoints_deleted > 0 {
        println!(
            "incomplete checkpoint folders {verb}: {}",
            s.incomplete_checkpoints_deleted
        );
    }
    println!("orphan SSTs {verb}: {}", s.orphan_ssts_deleted);
    println!("WAL objects {verb}: {}", s.wal_objects_deleted);
    println!("fence WAL objects kept: {}", r.fences_kept.len());
    println!(
        "objects {verb}: {}, bytes {}: {}",
        s.objects_deleted,
        if r.dry_run { "to free" } else { "freed" },
        s.bytes_freed
    );
    println!("objects kept: {} ({} bytes)", s.objects_kept, s.bytes_kept);
}
