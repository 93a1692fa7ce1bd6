//! A GC pass driven against an in-memory bucket: what it reads, that it
//! deletes what the plan says in order, dry runs, and where it stops.

use bytes::Bytes;

use super::*;
use crate::bucket::gc::tests::{manifest, sha};
use crate::bucket::layout::{branch_key, checkpoint_dir, checkpoint_manifest_key, LEADER_LOCK};
use crate::bucket::manifest::FileRef;
use crate::log::Entry;
use crate::object::{MemBucket, PutCondition};
use crate::types::Term;

fn put(b: &mut MemBucket, key: &str, body: Bytes) {
    b.execute(ObjectOp::Put {
        key: key.to_owned(),
        body,
        condition: PutCondition::None,
    })
    .unwrap();
}

/// Checkpoints at 10 (term 1), 20 (term 1), 30 (term 2); WAL objects at
/// 1, 6, 13 (term 1), 20 (term 2: a fence), 26, 32 (term 2); latest → 30.
fn bucket() -> MemBucket {
    let mut b = MemBucket::new();
    put(&mut b, LEADER_LOCK, Bytes::from_static(b"{}"));
    for (term, index, ssts) in [
        (1, 10, vec![1, 2]),
        (1, 20, vec![2, 3]),
        (2, 30, vec![3, 4]),
    ] {
        let m = manifest(term, index, &ssts);
        for f in m.ssts.iter().chain(&m.meta_files) {
            put(&mut b, &f.key, Bytes::from_static(b"x"));
        }
        put(&mut b, &m.key(), m.encode());
    }
    put(
        &mut b,
        MANIFEST_LATEST,
        LatestPointer::to_checkpoint(Term(2), Index(30)).encode(),
    );
    for (first, last, term) in [
        (1, 5, 1),
        (6, 12, 1),
        (13, 19, 1),
        (20, 25, 2),
        (26, 31, 2),
        (32, 33, 2),
    ] {
        let entries: Vec<Entry> = (first..=last)
            .map(|i| Entry::barrier(Term(term), Index(i)))
            .collect();
        put(
            &mut b,
            &wal_key(Index(first)),
            wal_object::encode(Term(term), &entries),
        );
    }
    b
}

/// Drives a pass to the end; `fault` may replace the n-th result.
fn run(
    b: &mut MemBucket,
    keep: usize,
    dry_run: bool,
    mut fault: impl FnMut(usize, &ObjectOp, ObjectResult) -> ObjectResult,
) -> (GcOutcome, Vec<ObjectOp>) {
    let (mut gc, mut op) = GcRun::start(keep, dry_run);
    let mut ops = Vec::new();
    for n in 0..1000 {
        ops.push(op.clone());
        let result = fault(n, &op, b.execute(op.clone()));
        match gc.on_result(result) {
            GcProgress::Next(next) | GcProgress::Retry(next) => op = next,
            GcProgress::Finished(outcome) => return (outcome, ops),
        }
    }
    panic!("the pass did not end");
}

fn keys(b: &MemBucket) -> Vec<String> {
    b.iter().map(|(k, _)| k.to_owned()).collect()
}

#[test]
fn a_pass_deletes_what_the_plan_says_and_nothing_else() {
    let mut b = bucket();
    let before = keys(&b);
    let (dry, _) = run(&mut b, 1, true, |_, _, r| r);
    assert_eq!(keys(&b), before, "a dry run deletes nothing");
    let planned: Vec<String> = dry
        .plan
        .as_ref()
        .unwrap()
        .deletions
        .iter()
        .map(|d| d.key.clone())
        .collect();
    assert!(!planned.is_empty());
    let (outcome, ops) = run(&mut b, 1, false, |_, _, r| r);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.deleted, planned.len());
    let deletes: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            ObjectOp::Delete { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deletes, planned, "in the plan's order");
    let after = keys(&b);
    // Kept: the newest checkpoint, its SSTs, the fence at 20, the lock.
    assert!(after.contains(&checkpoint_manifest_key(Term(2), Index(30))));
    assert!(!after.contains(&checkpoint_manifest_key(Term(1), Index(10))));
    assert!(!after.contains(&checkpoint_manifest_key(Term(1), Index(20))));
    assert!(after.contains(&wal_key(Index(20))), "the fence stays");
    assert!(!after.contains(&wal_key(Index(6))), "covered, not a fence");
    assert!(after.contains(&LEADER_LOCK.to_owned()));
    assert!(after.contains(&FileRef::sst("000003.sst", 1, &sha(3)).key));
    assert!(!after.contains(&FileRef::sst("000001.sst", 1, &sha(1)).key));
    // A second pass finds nothing to do.
    let (again, _) = run(&mut b, 1, false, |_, _, r| r);
    assert_eq!(again.deleted, 0);
    assert_eq!(keys(&b), after);
}

#[test]
fn it_reads_the_listing_pointer_manifests_and_needed_headers() {
    let mut b = bucket();
    let (_, ops) = run(&mut b, 1, true, |_, _, r| r);
    let gets: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            ObjectOp::Get { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert!(matches!(ops[0], ObjectOp::List { .. }));
    assert_eq!(gets[0], MANIFEST_LATEST);
    assert_eq!(
        gets.iter().filter(|k| k.ends_with("manifest.json")).count(),
        3
    );
    assert!(gets.iter().any(|k| k.starts_with("wal/")), "{gets:?}");
}

#[test]
fn retryable_failures_repeat_and_a_hard_failure_stops_deleting() {
    let mut b = bucket();
    let mut failed_once = false;
    let (outcome, ops) = run(&mut b, 1, false, |n, _, r| {
        if n == 3 && !failed_once {
            failed_once = true;
            Err(ObjectError::Retryable("slow down".into()))
        } else {
            r
        }
    });
    assert_eq!(ops[3], ops[4], "the same operation again");
    assert_eq!(outcome.error, None);

    let mut b = bucket();
    let mut deletes = 0;
    let (outcome, _) = run(&mut b, 1, false, |_, op, r| {
        if matches!(op, ObjectOp::Delete { .. }) {
            deletes += 1;
            if deletes == 2 {
                return Err(ObjectError::Failed("access denied".into()));
            }
        }
        r
    });
    assert_eq!(outcome.deleted, 1);
    assert!(outcome.error.unwrap().contains("access denied"));
}

#[test]
fn an_unreadable_branch_registration_stops_the_pass_before_deleting() {
    let mut b = bucket();
    put(&mut b, &branch_key("b1"), Bytes::from_static(b"not json"));
    let before = keys(&b);
    let (outcome, ops) = run(&mut b, 1, false, |_, _, r| r);
    assert!(outcome.plan.is_none());
    assert!(outcome.error.unwrap().contains("branches/b1"));
    assert!(!ops.iter().any(|op| matches!(op, ObjectOp::Delete { .. })));
    assert_eq!(keys(&b), before);
}

#[test]
fn a_branch_pin_keeps_its_checkpoint() {
    let mut b = bucket();
    let reg = BranchRegistration {
        branch_id: "b1".into(),
        manifest_key: checkpoint_manifest_key(Term(1), Index(10)),
        created_unix_ms: 0,
    };
    put(&mut b, &branch_key("b1"), reg.encode());
    let (outcome, _) = run(&mut b, 1, false, |_, _, r| r);
    assert_eq!(outcome.error, None);
    let after = keys(&b);
    assert!(after.contains(&checkpoint_manifest_key(Term(1), Index(10))));
    assert!(!after.contains(&checkpoint_manifest_key(Term(1), Index(20))));
    assert!(after.contains(&FileRef::sst("000001.sst", 1, &sha(1)).key));
    let _ = checkpoint_dir(Term(1), Index(10));
}

#[test]
fn an_unreadable_pointer_is_a_warning_not_a_stop() {
    let mut b = bucket();
    put(&mut b, MANIFEST_LATEST, Bytes::from_static(b"??"));
    let (outcome, _) = run(&mut b, 2, false, |_, _, r| r);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(keys(&b).contains(&checkpoint_manifest_key(Term(1), Index(20))));
    assert!(!keys(&b).contains(&checkpoint_manifest_key(Term(1), Index(10))));
}
