//! Garbage collection of a bucket: which objects `t4 gc --keep N` (and the
//! leader's background pass) may delete, and why (ARCHITECTURE §3.10).
//!
//! Pure: the driver lists the whole bucket, reads the checkpoint manifests
//! and `manifest/latest`, collects the branch pins, asks
//! [`wal_headers_needed`] which WAL objects' headers to read, reads them,
//! and calls [`plan_gc`]. It then deletes [`GcPlan::deletions`] in order
//! (or prints them for `--dry-run`).
//!
//! # Rules
//!
//! Checkpoints (ordered by `(index, term)`):
//! - kept: the newest `keep` that can be restored (the manifest could be
//!   read and validated, and every file it names is listed); the one
//!   `manifest/latest` points to; every one pinned by a branch; and any
//!   unreadable or incomplete one newer than the oldest of the newest
//!   `keep` (or all of them while fewer than `keep` are restorable): such a
//!   checkpoint is left for an operator, and does not count toward `keep`,
//!   so a damaged newest checkpoint never costs the good one before it (the
//!   simulator's GC race found a zombie finishing its GC pass after a
//!   takeover and deleting an SST the new writer's newest checkpoint
//!   reused, and the next pass then deleting the only restorable one);
//! - every other checkpoint's folder is deleted, manifest first;
//! - a folder without a manifest is an upload that never finished or one
//!   still in progress: deleted only when older than the oldest kept
//!   checkpoint (a newer one may be being written right now).
//!
//! SSTs: one not referenced by any kept checkpoint is deleted, but only when
//! every kept checkpoint's manifest was read; otherwise no SST is deleted
//! (never delete what cannot be proven unneeded).
//!
//! WAL objects: with `C` the lowest index among kept checkpoints (and at
//! least one kept checkpoint readable), an object is *wholly covered* when
//! the next object's first index − 1 ≤ `C`: every entry in it is in every
//! kept checkpoint. A covered object is deleted unless it is
//! - the last object (never a candidate: it has no next);
//! - the oldest listed object (there is no earlier one to compare its term
//!   with, so it may be a fence; keeping it costs one object);
//! - a **fence**: its header term is above the previous object's. See
//!   below;
//! - one whose term, or whose predecessor's term, was not read.
//!
//! # Why fence objects are never deleted
//!
//! A writer uploads the WAL object for index `i` with `If-None-Match`. A
//! node that takes over in term `T` replays the bucket up to `f - 1` and
//! writes a fence object at `f` in term `T`. The previous writer (term
//! `< T`) may still be alive, paused, with its next upload aimed at
//! exactly `f`: that upload fails with 412 because the fence exists, and
//! the zombie learns it is fenced and never acknowledges the write. If GC
//! deleted the fence, the zombie's retry would **succeed**, putting an
//! entry of the old term into the new writer's log, acknowledged to its
//! client, and then overwritten by nothing (the new writer's objects are at
//! `f + 1…`): an acknowledged write lost or two histories in one bucket.
//! A zombie only ever aims at the index after its last success, which is
//! a fence (the new writer fenced right after it); so non-fence objects are
//! safe to delete: their writer already wrote them, and only that writer
//! (retrying the same put, same bytes) could aim at them again.
//!
//! Deleting non-fences keeps fences recognizable: a deleted object has the
//! same term as its predecessor, so a fence's nearest surviving predecessor
//! still has a lower term in the next pass.
//!
//! Never deleted: `leader-lock`, `manifest/latest`, `branches/*`, and keys
//! outside the layout. With no checkpoint (or no readable one), nothing is
//! deleted.
//!
//! A checkpoint upload that runs while GC runs could find an SST present,
//! skip uploading it, and have GC delete it before its manifest lands. The
//! leader serialises its own checkpoints and GC passes; running `t4 gc`
//! against a bucket whose leader is checkpointing at that moment is not
//! safe and must be excluded by the caller (for example by holding the
//! leader lock's term).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::layout::{
    parse_checkpoint_manifest_key, parse_wal_key, BRANCH_PREFIX, CHECKPOINT_PREFIX, LEADER_LOCK,
    MANIFEST_FILE, MANIFEST_LATEST, SST_PREFIX,
};
use super::manifest::{CheckpointManifest, LatestPointer};
use crate::object::ObjectInfo;
use crate::types::{Index, Term};

#[cfg(test)]
pub(crate) mod tests;

/// What GC looks at.
#[derive(Clone, Debug)]
pub struct GcInput {
    /// Every object in the bucket (any order).
    pub listing: Vec<ObjectInfo>,
    /// The checkpoint manifests that could be read and decoded, by key. A
    /// listed manifest missing here is treated as unreadable.
    pub manifests: BTreeMap<String, CheckpointManifest>,
    /// `manifest/latest`, if it exists and decodes.
    pub latest: Option<LatestPointer>,
    /// Manifest keys pinned by branch registrations.
    pub pinned: BTreeSet<String>,
    /// How many readable checkpoints to keep (≥ 1).
    pub keep: usize,
    /// Header term of the WAL objects, by first index: those
    /// [`wal_headers_needed`] asked for (empty for that first call).
    pub wal_terms: BTreeMap<Index, Term>,
}

/// Why a checkpoint is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeepReason {
    /// Among the newest `keep` readable checkpoints.
    Newest,
    /// `manifest/latest` points to it.
    Latest,
    /// A branch pins it.
    Pinned,
    /// Its manifest could not be read; left for an operator.
    Unreadable,
    /// Its manifest names a file the bucket lacks (a writer that was taken
    /// over finished it after GC took a file it reused, or a GC racing it
    /// took one): it cannot be restored, so it does not count among the
    /// newest, and is kept for an operator while it is newer than those.
    Incomplete,
}

/// A checkpoint GC keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptCheckpoint {
    /// Its manifest key.
    pub manifest_key: String,
    /// Its term.
    pub term: Term,
    /// Its index.
    pub index: Index,
    /// Why (at least one).
    pub reasons: Vec<KeepReason>,
}

/// Why an object is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Part of a checkpoint that is not kept.
    OldCheckpoint {
        /// The checkpoint's index.
        index: Index,
        /// The checkpoint's term.
        term: Term,
    },
    /// Part of a folder without a manifest, older than every kept
    /// checkpoint.
    IncompleteCheckpoint {
        /// The folder's index.
        index: Index,
        /// The folder's term.
        term: Term,
    },
    /// An SST no kept checkpoint references.
    UnreferencedSst,
    /// A WAL object whose entries are all in every kept checkpoint.
    CoveredWal {
        /// The last index it can hold (the next object's first − 1).
        last: Index,
        /// The oldest kept checkpoint's index.
        checkpoint: Index,
    },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::OldCheckpoint { index, term } => write!(
                f,
                "checkpoint at index {index} (term {term}) is not among those kept, nor latest, nor pinned"
            ),
            DeleteReason::IncompleteCheckpoint { index, term } => write!(
                f,
                "checkpoint folder at index {index} (term {term}) has no manifest and is older than every kept checkpoint"
            ),
            DeleteReason::UnreferencedSst => write!(f, "SST referenced by no kept checkpoint"),
            DeleteReason::CoveredWal { last, checkpoint } => write!(
                f,
                "WAL object ends by index {last}, covered by the oldest kept checkpoint at index {checkpoint}"
            ),
        }
    }
}

/// One object to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// Its key.
    pub key: String,
    /// Its size.
    pub size_bytes: u64,
    /// Why.
    pub reason: DeleteReason,
}

/// What GC will do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Objects to delete, **in this order**: manifests of dropped
    /// checkpoints first (so a pass cut short never leaves a listed
    /// manifest whose files are gone), then the rest of their folders and
    /// incomplete folders, then SSTs, then WAL objects oldest first.
    pub deletions: Vec<Deletion>,
    /// The checkpoints kept, newest first.
    pub kept_checkpoints: Vec<KeptCheckpoint>,
    /// Covered WAL objects kept because they are (or may be) fences.
    pub fences_kept: Vec<Index>,
    /// Things an operator should know (unreadable manifests, dangling
    /// references, missing pins).
    pub warnings: Vec<String>,
    /// Objects left in place.
    pub kept_objects: u64,
    /// Their bytes.
    pub kept_bytes: u64,
    /// Objects deleted.
    pub deleted_objects: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
}

/// The checkpoint decisions both phases share.
struct Checkpoints {
    /// Kept checkpoints, newest first.
    kept: Vec<KeptCheckpoint>,
    /// Every listed checkpoint folder with a manifest: (term, index) → kept.
    listed: BTreeMap<(Term, Index), bool>,
    /// Whether every kept checkpoint's manifest was read.
    all_kept_readable: bool,
    /// The lowest index among kept checkpoints, when one of them is
    /// readable: WAL objects wholly at or below it may go.
    wal_bound: Option<Index>,
    /// Oldest kept (index, term), for incomplete folders.
    oldest_kept: Option<(Index, Term)>,
    warnings: Vec<String>,
}

fn choose_checkpoints(input: &GcInput) -> Checkpoints {
    assert!(input.keep >= 1, "gc: keep must be at least 1");
    let mut all: Vec<(Index, Term, &str)> = input
        .listing
        .iter()
        .filter_map(|o| parse_checkpoint_manifest_key(&o.key).map(|(t, i)| (i, t, o.key.as_str())))
        .collect();
    all.sort_unstable_by_key(|c| std::cmp::Reverse((c.0, c.1)));
    all.dedup();

    let mut warnings = Vec::new();
    let readable = |key: &str| match input.manifests.get(key) {
        Some(m) => m.validate(key).is_ok(),
        None => false,
    };
    let readable_count = all.iter().filter(|c| readable(c.2)).count();
    let present: BTreeSet<&str> = input.listing.iter().map(|o| o.key.as_str()).collect();
    let missing_file = |key: &str| {
        input.manifests.get(key).and_then(|m| {
            m.file_keys()
                .find(|f| !present.contains(f))
                .map(str::to_owned)
        })
    };
    // Restorable checkpoints still to keep as the newest; while some are,
    // an unreadable or incomplete one is newer than the oldest of the
    // newest `keep`.
    let mut newest_left = input.keep;
    let mut reasons: BTreeMap<&str, BTreeSet<KeepReason>> = BTreeMap::new();
    for &(_, _, key) in &all {
        if readable(key) {
            if let Some(missing) = missing_file(key) {
                warnings.push(format!(
                    "checkpoint {key} cannot be restored: {missing} is not in the bucket"
                ));
                if newest_left > 0 {
                    reasons
                        .entry(key)
                        .or_default()
                        .insert(KeepReason::Incomplete);
                }
            } else if newest_left > 0 {
                newest_left -= 1;
                reasons.entry(key).or_default().insert(KeepReason::Newest);
            }
        } else {
            warnings.push(format!("checkpoint manifest {key} could not be read"));
            if newest_left > 0 {
                reasons
                    .entry(key)
                    .or_default()
                    .insert(KeepReason::Unreadable);
            }
        }
    }
    let listed_keys: BTreeSet<&str> = all.iter().map(|c| c.2).collect();
    if let Some(p) = &input.latest {
        if listed_keys.contains(p.manifest_key.as_str()) {
            reasons
                .entry(p.manifest_key.as_str())
                .or_default()
                .insert(KeepReason::Latest);
        } else {
            warnings.push(format!(
                "{MANIFEST_LATEST} points at {}, which is not in the bucket",
                p.manifest_key
            ));
        }
    }
    for pin in &input.pinned {
        if listed_keys.contains(pin.as_str()) {
            reasons
                .entry(pin.as_str())
                .or_default()
                .insert(KeepReason::Pinned);
        } else {
            warnings.push(format!("a branch pins {pin}, which is not in the bucket"));
        }
    }

    let kept: Vec<KeptCheckpoint> = all
        .iter()
        .filter_map(|&(index, term, key)| {
            reasons.get(key).map(|r| KeptCheckpoint {
                manifest_key: key.to_owned(),
                term,
                index,
                reasons: r.iter().copied().collect(),
            })
        })
        .collect();
    let listed = all
        .iter()
        .map(|&(index, term, key)| ((term, index), reasons.contains_key(key)))
        .collect();
    let all_kept_readable = kept.iter().all(|k| readable(&k.manifest_key));
    let any_kept_readable = kept.iter().any(|k| readable(&k.manifest_key));
    let oldest_kept = kept.iter().map(|k| (k.index, k.term)).min();
    let wal_bound = if any_kept_readable {
        kept.iter().map(|k| k.index).min()
    } else {
        None
    };
    if !all.is_empty() && readable_count == 0 {
        warnings.push("no checkpoint manifest could be read: nothing is deleted".to_owned());
    }
    Checkpoints {
        kept,
        listed,
        all_kept_readable,
        wal_bound,
        oldest_kept,
        warnings,
    }
}

/// WAL objects sorted by first index, with their sizes.
fn wal_objects(listing: &[ObjectInfo]) -> Vec<(Index, &ObjectInfo)> {
    let mut wal: Vec<(Index, &ObjectInfo)> = listing
        .iter()
        .filter_map(|o| parse_wal_key(&o.key).map(|first| (first, o)))
        .collect();
    wal.sort_unstable_by_key(|w| w.0);
    wal.dedup_by_key(|w| w.0);
    wal
}

/// How many of `wal` (sorted) are wholly covered by `bound`: a prefix,
/// never including the last object.
fn covered_count(wal: &[(Index, &ObjectInfo)], bound: Option<Index>) -> usize {
    let Some(bound) = bound else { return 0 };
    wal.windows(2)
        .take_while(|w| w[1].0 .0 - 1 <= bound.0)
        .count()
}

/// The WAL objects whose header term [`plan_gc`] needs (in
/// [`GcInput::wal_terms`]): every wholly covered object (none when fewer
/// than two are covered). Call it with
/// `wal_terms` empty, read those headers, then call [`plan_gc`].
///
/// # Panics
/// `keep` is 0.
#[must_use]
pub fn wal_headers_needed(input: &GcInput) -> Vec<Index> {
    let checkpoints = choose_checkpoints(input);
    let wal = wal_objects(&input.listing);
    let covered = covered_count(&wal, checkpoints.wal_bound);
    // The oldest object is kept without a look; its term matters only as
    // the predecessor of a second covered object.
    if covered < 2 {
        return Vec::new();
    }
    wal[..covered].iter().map(|w| w.0).collect()
}

/// The folder `(term, index)` a key under `checkpoint/` belongs to.
fn checkpoint_folder(key: &str) -> Option<(Term, Index)> {
    let mut parts = key.splitn(4, '/');
    let (_, term, index, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if rest.is_empty() {
        return None;
    }
    parse_checkpoint_manifest_key(&format!(
        "{CHECKPOINT_PREFIX}{term}/{index}/{MANIFEST_FILE}"
    ))
}

/// Plans a GC pass. See the module docs for the rules.
///
/// # Panics
/// `keep` is 0.
#[must_use]
pub fn plan_gc(input: &GcInput) -> GcPlan {
    let checkpoints = choose_checkpoints(input);
    let mut plan = GcPlan {
        kept_checkpoints: checkpoints.kept.clone(),
        warnings: checkpoints.warnings.clone(),
        ..GcPlan::default()
    };
    let deleting = checkpoints.wal_bound.is_some();

    // What kept checkpoints reference.
    let present: BTreeSet<&str> = input.listing.iter().map(|o| o.key.as_str()).collect();
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    for kept in &checkpoints.kept {
        if let Some(m) = input.manifests.get(&kept.manifest_key) {
            for key in m.file_keys() {
                referenced.insert(key);
                if !present.contains(key) {
                    plan.warnings.push(format!(
                        "kept checkpoint {} references {key}, which is not in the bucket: it cannot be restored",
                        kept.manifest_key
                    ));
                }
            }
        }
    }
    let delete_ssts = deleting && checkpoints.all_kept_readable;
    if deleting && !delete_ssts {
        plan.warnings
            .push("a kept checkpoint's manifest could not be read: no SST is deleted".to_owned());
    }

    let mut manifests_out = Vec::new();
    let mut folders_out = Vec::new();
    let mut ssts_out = Vec::new();
    let mut listing: Vec<&ObjectInfo> = input.listing.iter().collect();
    listing.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    listing.dedup_by(|a, b| a.key == b.key);
    for object in &listing {
        let key = object.key.as_str();
        let deletion = |reason| Deletion {
            key: key.to_owned(),
            size_bytes: object.size_bytes,
            reason,
        };
        if !deleting
            || key == LEADER_LOCK
            || key == MANIFEST_LATEST
            || key.starts_with(BRANCH_PREFIX)
        {
            continue;
        }
        if key.starts_with(CHECKPOINT_PREFIX) {
            let Some((term, index)) = checkpoint_folder(key) else {
                continue;
            };
            match checkpoints.listed.get(&(term, index)) {
                Some(true) => {}
                Some(false) => {
                    let out = deletion(DeleteReason::OldCheckpoint { index, term });
                    if key.ends_with(MANIFEST_FILE) && parse_checkpoint_manifest_key(key).is_some()
                    {
                        manifests_out.push(out);
                    } else {
                        folders_out.push(out);
                    }
                }
                None => {
                    if checkpoints
                        .oldest_kept
                        .is_some_and(|oldest| (index, term) < oldest)
                    {
                        folders_out
                            .push(deletion(DeleteReason::IncompleteCheckpoint { index, term }));
                    }
                }
            }
        } else if key.starts_with(SST_PREFIX) && delete_ssts && !referenced.contains(key) {
            ssts_out.push(deletion(DeleteReason::UnreferencedSst));
        }
    }

    // WAL objects.
    let wal = wal_objects(&input.listing);
    let covered = covered_count(&wal, checkpoints.wal_bound);
    let mut wal_out = Vec::new();
    for i in 0..covered {
        let (first, object) = wal[i];
        if i == 0 {
            plan.fences_kept.push(first);
            continue;
        }
        let prev = wal[i - 1].0;
        match (input.wal_terms.get(&prev), input.wal_terms.get(&first)) {
            (Some(p), Some(t)) if t == p => wal_out.push(Deletion {
                key: object.key.clone(),
                size_bytes: object.size_bytes,
                reason: DeleteReason::CoveredWal {
                    last: Index(wal[i + 1].0 .0 - 1),
                    checkpoint: checkpoints
                        .wal_bound
                        .expect("covered objects imply a bound"),
                },
            }),
            (Some(p), Some(t)) => {
                if t < p {
                    plan.warnings.push(format!(
                        "{} was written in term {t}, below term {p} of the object before it: kept",
                        object.key
                    ));
                }
                plan.fences_kept.push(first);
            }
            _ => {
                plan.warnings.push(format!(
                    "the term of {} or of the object before it is unknown: kept",
                    object.key
                ));
                plan.fences_kept.push(first);
            }
        }
    }

    plan.deletions = manifests_out
        .into_iter()
        .chain(folders_out)
        .chain(ssts_out)
        .chain(wal_out)
        .collect();

    // Totals, and the promises this plan keeps.
    let deleted: BTreeSet<&str> = plan.deletions.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(deleted.len(), plan.deletions.len(), "each key deleted once");
    for kept in &checkpoints.kept {
        assert!(
            !deleted.contains(kept.manifest_key.as_str()),
            "gc must not delete kept manifest {}",
            kept.manifest_key
        );
    }
    for key in &referenced {
        assert!(
            !deleted.contains(key),
            "gc must not delete {key}, referenced by a kept checkpoint"
        );
    }
    for d in &plan.deletions {
        assert!(
            d.key != LEADER_LOCK && d.key != MANIFEST_LATEST && !d.key.starts_with(BRANCH_PREFIX),
            "gc must never delete {}",
            d.key
        );
    }
    if let Some(last) = wal.last() {
        assert!(
            !deleted.contains(last.1.key.as_str()),
            "gc must never delete the last WAL object"
        );
    }
    for object in listing {
        if deleted.contains(object.key.as_str()) {
            plan.deleted_objects += 1;
            plan.deleted_bytes += object.size_bytes;
        } else {
            plan.kept_objects += 1;
            plan.kept_bytes += object.size_bytes;
        }
    }
    plan
}
