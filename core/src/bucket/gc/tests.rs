//! GC planning: the exact deletions, in order, for each rule.

use super::*;
use crate::bucket::layout::{branch_key, checkpoint_dir, checkpoint_manifest_key, wal_key};
use crate::bucket::manifest::FileRef;
use crate::object::ETag;
use crate::types::Revision;

/// A sha256 in hex made of `n` (also used by the GC-run tests).
pub(crate) fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// The key of SST number `n` (`00000n.sst`, hash made of `n`).
fn sst(n: u8) -> String {
    FileRef::sst(&format!("00000{n}.sst"), 1, &sha(n)).key
}

/// Checkpoint `(term, index)` with SSTs numbered `ssts` and one meta file
/// (also used by the GC-run tests).
pub(crate) fn manifest(term: u64, index: u64, ssts: &[u8]) -> CheckpointManifest {
    CheckpointManifest {
        term: Term(term),
        index: Index(index),
        revision: Revision(5),
        compact_revision: Revision(0),
        ssts: ssts
            .iter()
            .map(|&n| FileRef::sst(&format!("00000{n}.sst"), 1, &sha(n)))
            .collect(),
        meta_files: vec![FileRef::meta(
            Term(term),
            Index(index),
            "CURRENT",
            1,
            &sha(99),
        )],
        created_unix_ms: 0,
    }
}

fn obj(key: &str, size_bytes: u64) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        size_bytes,
        etag: ETag("\"e\"".into()),
    }
}

fn ckpt(term: u64, index: u64) -> String {
    checkpoint_manifest_key(Term(term), Index(index))
}

fn current(term: u64, index: u64) -> String {
    format!("{}CURRENT", checkpoint_dir(Term(term), Index(index)))
}

/// A bucket with three checkpoints and a WAL that changes writer at 20:
///
/// - checkpoints A (term 1, index 10; SSTs 1, 2), B (term 1, index 20;
///   SSTs 2, 3), C (term 2, index 30; SSTs 3, 4); SST 5 referenced by
///   none; `manifest/latest` → C; one branch registration (pinning
///   nothing);
/// - WAL objects 1–5, 6–12, 13–19 (term 1), 20–25 (term 2: a fence),
///   26–31, 32– (term 2).
fn bucket() -> GcInput {
    let mut listing = vec![
        obj(LEADER_LOCK, 100),
        obj(MANIFEST_LATEST, 50),
        obj(&branch_key("b1"), 60),
    ];
    let mut manifests = BTreeMap::new();
    for (term, index, ssts) in [
        (1, 10, vec![1, 2]),
        (1, 20, vec![2, 3]),
        (2, 30, vec![3, 4]),
    ] {
        listing.push(obj(&ckpt(term, index), 200));
        listing.push(obj(&current(term, index), 16));
        manifests.insert(ckpt(term, index), manifest(term, index, &ssts));
    }
    for n in 1..=5 {
        listing.push(obj(&sst(n), 1000 * u64::from(n)));
    }
    let mut wal_terms = BTreeMap::new();
    for (first, term) in [(1, 1), (6, 1), (13, 1), (20, 2), (26, 2), (32, 2)] {
        listing.push(obj(&wal_key(Index(first)), 10 + first));
        wal_terms.insert(Index(first), Term(term));
    }
    GcInput {
        listing,
        manifests,
        latest: Some(LatestPointer::to_checkpoint(Term(2), Index(30))),
        pinned: BTreeSet::new(),
        keep: 1,
        wal_terms,
    }
}

fn del(key: &str, size_bytes: u64, reason: DeleteReason) -> Deletion {
    Deletion {
        key: key.to_owned(),
        size_bytes,
        reason,
    }
}

fn old(term: u64, index: u64) -> DeleteReason {
    DeleteReason::OldCheckpoint {
        index: Index(index),
        term: Term(term),
    }
}

fn covered(last: u64, checkpoint: u64) -> DeleteReason {
    DeleteReason::CoveredWal {
        last: Index(last),
        checkpoint: Index(checkpoint),
    }
}

fn kept(term: u64, index: u64, reasons: &[KeepReason]) -> KeptCheckpoint {
    KeptCheckpoint {
        manifest_key: ckpt(term, index),
        term: Term(term),
        index: Index(index),
        reasons: reasons.to_vec(),
    }
}

/// keep = 1: older checkpoints go (manifests first), SSTs only they
/// reference go, covered WAL objects go — except the oldest and the fence
/// at 20, which stays while its neighbours 13 and 26 are treated by the
/// rules (13 deleted, 26 not covered).
#[test]
fn keep_newest_and_the_fence() {
    let input = bucket();
    assert_eq!(
        wal_headers_needed(&input),
        vec![Index(1), Index(6), Index(13), Index(20)]
    );
    let plan = plan_gc(&input);
    assert_eq!(
        plan.deletions,
        vec![
            del(&ckpt(1, 10), 200, old(1, 10)),
            del(&ckpt(1, 20), 200, old(1, 20)),
            del(&current(1, 10), 16, old(1, 10)),
            del(&current(1, 20), 16, old(1, 20)),
            del(&sst(1), 1000, DeleteReason::UnreferencedSst),
            del(&sst(2), 2000, DeleteReason::UnreferencedSst),
            del(&sst(5), 5000, DeleteReason::UnreferencedSst),
            del(&wal_key(Index(6)), 16, covered(12, 30)),
            del(&wal_key(Index(13)), 23, covered(19, 30)),
        ]
    );
    assert_eq!(
        plan.kept_checkpoints,
        vec![kept(2, 30, &[KeepReason::Newest, KeepReason::Latest])]
    );
    assert_eq!(plan.fences_kept, vec![Index(1), Index(20)]);
    assert_eq!(plan.warnings, Vec::<String>::new());
    assert_eq!(
        (plan.deleted_objects, plan.deleted_bytes),
        (9, 400 + 32 + 8000 + 39)
    );
    let total: u64 = input.listing.iter().map(|o| o.size_bytes).sum();
    assert_eq!(plan.kept_objects, input.listing.len() as u64 - 9);
    assert_eq!(plan.kept_bytes, total - plan.deleted_bytes);
    assert_eq!(
        plan.deletions[7].reason.to_string(),
        "WAL object ends by index 12, covered by the oldest kept checkpoint at index 30"
    );
}

/// A fence is recognised by its term against the previous object, so it is
/// kept again in the next pass, after its predecessors went.
#[test]
fn fence_survives_the_next_pass() {
    let mut input = bucket();
    let first_pass: BTreeSet<String> = plan_gc(&input)
        .deletions
        .into_iter()
        .map(|d| d.key)
        .collect();
    input.listing.retain(|o| !first_pass.contains(&o.key));
    let wal_left: Vec<Index> = input
        .listing
        .iter()
        .filter_map(|o| parse_wal_key(&o.key))
        .collect();
    assert_eq!(wal_left, vec![Index(1), Index(20), Index(26), Index(32)]);
    let plan = plan_gc(&input);
    assert_eq!(plan.deletions, vec![]);
    assert_eq!(plan.fences_kept, vec![Index(1), Index(20)]);
}

/// keep = 2 keeps B too: its folder and SST 2 stay, and the WAL bound is
/// B's index.
#[test]
fn keep_two() {
    let input = GcInput {
        keep: 2,
        ..bucket()
    };
    let plan = plan_gc(&input);
    assert_eq!(
        plan.deletions,
        vec![
            del(&ckpt(1, 10), 200, old(1, 10)),
            del(&current(1, 10), 16, old(1, 10)),
            del(&sst(1), 1000, DeleteReason::UnreferencedSst),
            del(&sst(5), 5000, DeleteReason::UnreferencedSst),
            del(&wal_key(Index(6)), 16, covered(12, 20)),
            del(&wal_key(Index(13)), 23, covered(19, 20)),
        ]
    );
    assert_eq!(
        plan.kept_checkpoints,
        vec![
            kept(2, 30, &[KeepReason::Newest, KeepReason::Latest]),
            kept(1, 20, &[KeepReason::Newest])
        ]
    );
}

/// A checkpoint pinned by a branch is kept with its SSTs, and holds the WAL
/// from its index on.
#[test]
fn pinned_checkpoint_is_kept() {
    let mut input = bucket();
    input.pinned.insert(ckpt(1, 10));
    input.pinned.insert(ckpt(9, 99));
    assert_eq!(wal_headers_needed(&input), vec![]);
    let plan = plan_gc(&input);
    assert_eq!(
        plan.deletions,
        vec![
            del(&ckpt(1, 20), 200, old(1, 20)),
            del(&current(1, 20), 16, old(1, 20)),
            del(&sst(5), 5000, DeleteReason::UnreferencedSst),
        ]
    );
    assert_eq!(
        plan.kept_checkpoints,
        vec![
            kept(2, 30, &[KeepReason::Newest, KeepReason::Latest]),
            kept(1, 10, &[KeepReason::Pinned])
        ]
    );
    assert_eq!(plan.fences_kept, vec![Index(1)]);
    assert_eq!(
        plan.warnings,
        vec![format!(
            "a branch pins {}, which is not in the bucket",
            ckpt(9, 99)
        )]
    );
}

/// `manifest/latest` pointing at an older checkpoint keeps it.
#[test]
fn latest_is_kept() {
    let mut input = bucket();
    input.latest = Some(LatestPointer::to_checkpoint(Term(1), Index(20)));
    let plan = plan_gc(&input);
    assert_eq!(
        plan.kept_checkpoints,
        vec![
            kept(2, 30, &[KeepReason::Newest]),
            kept(1, 20, &[KeepReason::Latest])
        ]
    );
    assert!(!plan.deletions.iter().any(|d| d.key == sst(2)));
    assert!(plan.deletions.iter().any(|d| d.key == sst(1)));
}

/// An unreadable newest manifest does not count toward `keep` (the good
/// one before it stays) and stops every SST deletion.
#[test]
fn unreadable_manifest_is_conservative() {
    let mut input = bucket();
    input.manifests.remove(&ckpt(2, 30));
    let plan = plan_gc(&input);
    assert_eq!(
        plan.kept_checkpoints,
        vec![
            kept(2, 30, &[KeepReason::Latest, KeepReason::Unreadable]),
            kept(1, 20, &[KeepReason::Newest])
        ]
    );
    assert_eq!(
        plan.deletions,
        vec![
            del(&ckpt(1, 10), 200, old(1, 10)),
            del(&current(1, 10), 16, old(1, 10)),
            del(&wal_key(Index(6)), 16, covered(12, 20)),
            del(&wal_key(Index(13)), 23, covered(19, 20)),
        ]
    );
    assert_eq!(
        plan.warnings,
        vec![
            format!("checkpoint manifest {} could not be read", ckpt(2, 30)),
            "a kept checkpoint's manifest could not be read: no SST is deleted".to_owned(),
        ]
    );

    // A manifest that decodes but does not validate counts as unreadable.
    let mut input = bucket();
    let bad = input.manifests.get_mut(&ckpt(2, 30)).unwrap();
    bad.meta_files[0].name = "../CURRENT".into();
    assert_eq!(
        plan_gc(&input).kept_checkpoints[0].reasons,
        vec![KeepReason::Latest, KeepReason::Unreadable]
    );
}

/// With no checkpoint, or none readable, nothing is deleted.
#[test]
fn nothing_without_a_checkpoint() {
    let mut input = bucket();
    input
        .listing
        .retain(|o| !o.key.starts_with(CHECKPOINT_PREFIX));
    input.latest = None;
    assert_eq!(wal_headers_needed(&input), vec![]);
    let plan = plan_gc(&input);
    assert_eq!(plan.deletions, vec![]);
    assert_eq!(plan.kept_objects, input.listing.len() as u64);
    assert_eq!(plan.warnings, Vec::<String>::new());

    let mut input = bucket();
    input.manifests.clear();
    let plan = plan_gc(&input);
    assert_eq!(plan.deletions, vec![]);
    assert_eq!(plan.kept_checkpoints.len(), 3, "all unreadable, all kept");
    assert_eq!(
        plan.warnings.last().unwrap(),
        "no checkpoint manifest could be read: nothing is deleted"
    );
}

/// A covered WAL object whose term (or its predecessor's) was not read is
/// kept; so is one whose term goes down.
#[test]
fn unknown_or_backwards_terms_keep_wal() {
    let mut input = bucket();
    input.wal_terms.remove(&Index(6));
    let plan = plan_gc(&input);
    let wal_deleted: Vec<&str> = plan
        .deletions
        .iter()
        .filter(|d| d.key.starts_with("wal/"))
        .map(|d| d.key.as_str())
        .collect();
    assert_eq!(wal_deleted, Vec::<&str>::new());
    assert_eq!(
        plan.fences_kept,
        vec![Index(1), Index(6), Index(13), Index(20)]
    );
    assert_eq!(
        plan.warnings,
        vec![
            "the term of wal/00000000000000000006 or of the object before it is unknown: kept"
                .to_owned(),
            "the term of wal/00000000000000000013 or of the object before it is unknown: kept"
                .to_owned(),
        ]
    );

    let mut input = bucket();
    input.wal_terms.insert(Index(13), Term(0));
    let plan = plan_gc(&input);
    assert!(plan.warnings.contains(
        &"wal/00000000000000000013 was written in term 0, below term 1 of the object before it: kept".to_owned()
    ));
}

/// Folders without a manifest: older than every kept checkpoint, deleted;
/// newer (maybe being uploaded now), kept. Keys outside the layout are
/// never touched.
#[test]
fn incomplete_checkpoints_and_unknown_keys() {
    let mut input = bucket();
    input.listing.push(obj(&current(1, 5), 7));
    input.listing.push(obj(&current(2, 25), 8));
    input.listing.push(obj(&current(3, 40), 9));
    input.listing.push(obj("checkpoint/junk", 1));
    input.listing.push(obj("notes.txt", 1));
    input.listing.push(obj("wal/12", 1));
    let plan = plan_gc(&input);
    let incomplete: Vec<&Deletion> = plan
        .deletions
        .iter()
        .filter(|d| matches!(d.reason, DeleteReason::IncompleteCheckpoint { .. }))
        .collect();
    assert_eq!(
        incomplete,
        vec![
            &del(
                &current(1, 5),
                7,
                DeleteReason::IncompleteCheckpoint {
                    index: Index(5),
                    term: Term(1)
                }
            ),
            &del(
                &current(2, 25),
                8,
                DeleteReason::IncompleteCheckpoint {
                    index: Index(25),
                    term: Term(2)
                }
            ),
        ]
    );
    for key in [
        current(3, 40).as_str(),
        "checkpoint/junk",
        "notes.txt",
        "wal/12",
    ] {
        assert!(
            !plan.deletions.iter().any(|d| d.key == key),
            "{key} is kept"
        );
    }
    assert_eq!(plan.deletions.len(), 11);
}

/// A newest checkpoint whose SST is gone cannot be restored: it does not
/// count toward `keep`, so the one before it is kept too (with its SSTs
/// and the WAL after it), and both problems are reported.
#[test]
fn an_incomplete_checkpoint_does_not_count_as_newest() {
    let mut input = bucket();
    input.listing.retain(|o| o.key != sst(4));
    let plan = plan_gc(&input);
    assert_eq!(
        plan.kept_checkpoints,
        vec![
            kept(2, 30, &[KeepReason::Latest, KeepReason::Incomplete]),
            kept(1, 20, &[KeepReason::Newest])
        ]
    );
    assert_eq!(
        plan.warnings,
        vec![
            format!(
                "checkpoint {} cannot be restored: {} is not in the bucket",
                ckpt(2, 30),
                sst(4)
            ),
            format!(
                "kept checkpoint {} references {}, which is not in the bucket: it cannot be restored",
                ckpt(2, 30),
                sst(4)
            ),
        ]
    );
    let deleted: Vec<&str> = plan.deletions.iter().map(|d| d.key.as_str()).collect();
    for needed in [sst(2), sst(3), ckpt(1, 20), wal_key(Index(20))] {
        assert!(
            !deleted.contains(&needed.as_str()),
            "{needed} is needed: {deleted:?}"
        );
    }
    assert!(deleted.contains(&ckpt(1, 10).as_str()), "{deleted:?}");
}

/// The last WAL object is never deleted, even when a checkpoint covers it.
#[test]
fn last_wal_object_is_never_deleted() {
    let mut input = bucket();
    input.listing.push(obj(&ckpt(2, 99), 1));
    input
        .manifests
        .insert(ckpt(2, 99), manifest(2, 99, &[3, 4]));
    input.listing.push(obj(&current(2, 99), 1));
    input.latest = Some(LatestPointer::to_checkpoint(Term(2), Index(99)));
    let plan = plan_gc(&input);
    let wal_deleted: Vec<String> = plan
        .deletions
        .iter()
        .filter(|d| d.key.starts_with("wal/"))
        .map(|d| d.key.clone())
        .collect();
    assert_eq!(
        wal_deleted,
        vec![wal_key(Index(6)), wal_key(Index(13)), wal_key(Index(26))]
    );
}

/// `keep` must be at least 1.
#[test]
#[should_panic(expected = "keep must be at least 1")]
fn keep_zero_panics() {
    let _ = plan_gc(&GcInput {
        keep: 0,
        ..bucket()
    });
}
