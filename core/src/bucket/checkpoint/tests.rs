//! The checkpoint upload against an in-memory bucket, step by step.

use bytes::Bytes;

use super::*;
use crate::bucket::layout::{checkpoint_manifest_key, sst_key, MANIFEST_FILE};
use crate::object::MemBucket;

fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

fn point(term: u64, index: u64) -> CheckpointPoint {
    CheckpointPoint {
        term: Term(term),
        index: Index(index),
        revision: Revision(40),
        compact_revision: Revision(3),
    }
}

fn files() -> Vec<LocalFile> {
    vec![
        LocalFile {
            name: "000009.sst".into(),
            size_bytes: 3,
            sha256: sha('a'),
        },
        LocalFile {
            name: "000010.sst".into(),
            size_bytes: 4,
            sha256: sha('b'),
        },
        LocalFile {
            name: "MANIFEST-000012".into(),
            size_bytes: 5,
            sha256: sha('c'),
        },
        LocalFile {
            name: "CURRENT".into(),
            size_bytes: 6,
            sha256: sha('d'),
        },
    ]
}

/// The body the driver would send for a file: its name, so the test can
/// tell which file landed where.
fn file_body(name: &str) -> Bytes {
    Bytes::from(format!("file:{name}"))
}

/// The operation a step asks for, as the driver would run it.
fn op_of(step: &UploadStep) -> ObjectOp {
    match step {
        UploadStep::Object(op) => op.clone(),
        UploadStep::File {
            name,
            key,
            condition,
        } => ObjectOp::Put {
            key: key.clone(),
            body: file_body(name),
            condition: condition.clone(),
        },
    }
}

/// Runs the upload to the end against `bucket`; `fault` may replace the
/// answer to the n-th step (0-based). Returns the outcome and every step.
fn run(
    bucket: &mut MemBucket,
    p: CheckpointPoint,
    mut fault: impl FnMut(usize, &UploadStep, ObjectResult) -> ObjectResult,
) -> (UploadOutcome, Vec<UploadStep>) {
    let (mut up, mut step) = CheckpointUpload::start(p, &files(), 1_700_000_000_000).unwrap();
    let mut steps = Vec::new();
    for n in 0..200 {
        steps.push(step.clone());
        let op = op_of(&step);
        let result = fault(n, &step, bucket.execute(op));
        match up.on_result(result) {
            Progress::Next(s) | Progress::Retry(s) => step = s,
            Progress::Finished(outcome) => return (outcome, steps),
        }
    }
    panic!("the upload did not finish in 200 steps");
}

fn latest(bucket: &mut MemBucket) -> LatestPointer {
    match bucket.execute(ObjectOp::Get {
        key: MANIFEST_LATEST.into(),
    }) {
        Ok(ObjectReply::Got { body, .. }) => LatestPointer::decode(&body).unwrap(),
        other => panic!("no latest pointer: {other:?}"),
    }
}

fn has(bucket: &MemBucket, key: &str) -> bool {
    bucket.iter().any(|(k, _)| k == key)
}

#[test]
fn a_first_checkpoint_writes_every_file_then_the_manifest_then_the_pointer() {
    let mut bucket = MemBucket::new();
    let (outcome, steps) = run(&mut bucket, point(2, 100), |_, _, r| r);
    let UploadOutcome::Done {
        manifest,
        latest_moved,
        ssts_uploaded,
        bytes_uploaded,
    } = outcome
    else {
        panic!("abandoned: {outcome:?}")
    };
    assert!(latest_moved);
    assert_eq!((ssts_uploaded, bytes_uploaded), (2, 18));
    assert_eq!(manifest.ssts.len(), 2);
    assert_eq!(manifest.meta_files.len(), 2);
    assert_eq!(
        (manifest.revision, manifest.compact_revision),
        (Revision(40), Revision(3))
    );
    assert_eq!(
        latest(&mut bucket),
        LatestPointer::to_checkpoint(Term(2), Index(100))
    );
    assert!(has(&bucket, &sst_key(&sha('a'), "000009.sst")));
    assert!(has(
        &bucket,
        "checkpoint/0000000002/00000000000000000100/CURRENT"
    ));
    // Order: list, 4 files, manifest, read latest, write latest.
    let kinds: Vec<String> = steps
        .iter()
        .map(|s| match s {
            UploadStep::Object(op) => format!("{} {}", op.kind(), op.key()),
            UploadStep::File { key, .. } => format!("file {key}"),
        })
        .collect();
    assert_eq!(kinds.len(), 8, "{kinds:#?}");
    assert!(kinds[0].starts_with("list"));
    assert!(kinds[5].contains("manifest.json"), "{kinds:#?}");
    assert!(kinds[6].starts_with("get manifest/latest"));
    assert!(kinds[7].starts_with("put manifest/latest"));
    // The manifest in the bucket decodes to what the upload reports.
    let key = checkpoint_manifest_key(Term(2), Index(100));
    let body = bucket.iter().find(|(k, _)| *k == key).unwrap().1.clone();
    assert_eq!(CheckpointManifest::decode(&key, &body).unwrap(), manifest);
}

#[test]
fn ssts_already_in_the_bucket_are_not_sent_again() {
    let mut bucket = MemBucket::new();
    run(&mut bucket, point(2, 100), |_, _, r| r);
    let (outcome, steps) = run(&mut bucket, point(2, 200), |_, _, r| r);
    let UploadOutcome::Done {
        ssts_uploaded,
        latest_moved,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(ssts_uploaded, 0);
    assert!(latest_moved);
    assert!(!steps
        .iter()
        .any(|s| matches!(s, UploadStep::File { key, .. } if key.starts_with("sst/"))));
    assert_eq!(latest(&mut bucket).index, Index(200));
}

#[test]
fn the_pointer_never_moves_backwards() {
    let mut bucket = MemBucket::new();
    run(&mut bucket, point(3, 500), |_, _, r| r);
    // A slow, older checkpoint finishes later.
    let (outcome, _) = run(&mut bucket, point(3, 400), |_, _, r| r);
    assert!(matches!(
        outcome,
        UploadOutcome::Done {
            latest_moved: false,
            ..
        }
    ));
    assert_eq!(latest(&mut bucket).index, Index(500));
    // Its manifest is still written (a complete, older checkpoint).
    assert!(has(&bucket, &checkpoint_manifest_key(Term(3), Index(400))));
}

#[test]
fn retryable_failures_repeat_the_same_step() {
    let mut bucket = MemBucket::new();
    let mut retried = Vec::new();
    let (outcome, steps) = run(&mut bucket, point(1, 10), |n, step, r| {
        if n % 2 == 0 && n < 14 {
            retried.push(step.clone());
            Err(ObjectError::Retryable("503".into()))
        } else {
            r
        }
    });
    assert!(matches!(outcome, UploadOutcome::Done { .. }), "{outcome:?}");
    // Each failed step is followed by the same step.
    for (i, w) in steps.windows(2).enumerate() {
        if i % 2 == 0 && i < 14 {
            assert_eq!(w[0], w[1]);
        }
    }
    assert_eq!(latest(&mut bucket).index, Index(10));
}

/// A 412 on an SST is settled by listing its key: present (our earlier
/// attempt landed), the upload goes on; absent (a 409 against a put still
/// in flight, which may fail), the put is sent again after a backoff, never
/// taken for presence — a manifest must not name an SST the bucket lacks.
#[test]
fn a_conflict_on_an_sst_is_settled_by_listing_it() {
    let sst = sst_key(&sha('a'), "000009.sst");
    // Present: our own earlier attempt landed, its answer was lost.
    let mut bucket = MemBucket::new();
    let (mut up, mut step) = CheckpointUpload::start(point(1, 10), &files(), 0).unwrap();
    let mut verified = false;
    let outcome = loop {
        let op = op_of(&step);
        let result = match &op {
            ObjectOp::Put { key, .. } if *key == sst && !verified => {
                bucket.execute(op.clone()).unwrap();
                Err(ObjectError::PreconditionFailed)
            }
            _ => bucket.execute(op.clone()),
        };
        match up.on_result(result) {
            Progress::Retry(s) => {
                assert!(!verified, "one check settles it");
                assert_eq!(
                    s,
                    UploadStep::Object(ObjectOp::List {
                        prefix: sst.clone(),
                        start_after: None,
                        max_keys: 1
                    })
                );
                verified = true;
                step = s;
            }
            Progress::Next(s) => step = s,
            Progress::Finished(outcome) => break outcome,
        }
    };
    assert!(verified);
    assert!(matches!(outcome, UploadOutcome::Done { .. }), "{outcome:?}");

    // Absent: a 409 while another attempt is held; the put is sent again
    // and the manifest waits for it.
    let mut bucket = MemBucket::new();
    let (mut up, mut step) = CheckpointUpload::start(point(1, 10), &files(), 0).unwrap();
    let mut conflicts = 0;
    let mut retried_put = false;
    let outcome = loop {
        let op = op_of(&step);
        if let ObjectOp::Put { key, .. } = &op {
            if key.ends_with(MANIFEST_FILE) {
                assert!(has(&bucket, &sst), "the manifest is written after the SST");
            }
        }
        let result = match &op {
            ObjectOp::Put { key, .. } if *key == sst && conflicts < 2 => {
                conflicts += 1;
                Err(ObjectError::PreconditionFailed)
            }
            _ => bucket.execute(op.clone()),
        };
        match up.on_result(result) {
            Progress::Retry(s) => {
                retried_put |= matches!(&s, UploadStep::File { key, .. } if *key == sst);
                step = s;
            }
            Progress::Next(s) => step = s,
            Progress::Finished(outcome) => break outcome,
        }
    };
    assert!(retried_put);
    assert!(matches!(outcome, UploadOutcome::Done { .. }), "{outcome:?}");
}

#[test]
fn a_lost_answer_to_the_manifest_put_is_settled_by_reading_it_back() {
    let mut bucket = MemBucket::new();
    let mut lost = false;
    let (outcome, _) = run(&mut bucket, point(1, 10), |_, step, r| match step {
        UploadStep::Object(ObjectOp::Put { key, .. }) if key.ends_with("manifest.json") => {
            if lost {
                r
            } else {
                lost = true;
                // It landed, but the answer was lost: the retry meets a 412.
                Err(ObjectError::Retryable("timeout".into()))
            }
        }
        _ => r,
    });
    assert!(
        matches!(
            outcome,
            UploadOutcome::Done {
                latest_moved: true,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[test]
fn another_writers_manifest_at_our_key_abandons() {
    let mut bucket = MemBucket::new();
    let key = checkpoint_manifest_key(Term(1), Index(10));
    bucket
        .execute(ObjectOp::Put {
            key,
            body: Bytes::from_static(b"{}"),
            condition: PutCondition::None,
        })
        .unwrap();
    let (outcome, _) = run(&mut bucket, point(1, 10), |_, _, r| r);
    let UploadOutcome::Abandoned(why) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(why.contains("another writer"), "{why}");
    assert!(!has(&bucket, MANIFEST_LATEST));
}

#[test]
fn a_pointer_moved_between_read_and_write_is_read_again() {
    let mut bucket = MemBucket::new();
    run(&mut bucket, point(1, 10), |_, _, r| r);
    let mut raced = false;
    // Our write meets a 412 (someone moved the pointer after our read; here
    // the put itself also landed, so the re-read finds our own pointer).
    let (outcome, steps) = run(&mut bucket, point(1, 20), |_, step, r| match step {
        UploadStep::Object(ObjectOp::Put { key, .. }) if key == MANIFEST_LATEST && !raced => {
            raced = true;
            Err(ObjectError::PreconditionFailed)
        }
        _ => r,
    });
    assert!(
        matches!(
            outcome,
            UploadOutcome::Done {
                latest_moved: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    let reads = steps
        .iter()
        .filter(
            |s| matches!(s, UploadStep::Object(ObjectOp::Get { key }) if key == MANIFEST_LATEST),
        )
        .count();
    assert_eq!(reads, 2);
}

#[test]
fn a_newer_checkpoint_landing_during_the_race_wins() {
    let mut bucket = MemBucket::new();
    let newer = LatestPointer::to_checkpoint(Term(1), Index(90));
    let (mut up, mut step) = CheckpointUpload::start(point(1, 30), &files(), 0).unwrap();
    let mut raced = false;
    let outcome = loop {
        let op = op_of(&step);
        if matches!(&op, ObjectOp::Put { key, .. } if key == MANIFEST_LATEST) && !raced {
            // We read no pointer; another checkpointer's newer one lands
            // just before our If-None-Match create.
            raced = true;
            bucket
                .execute(ObjectOp::Put {
                    key: MANIFEST_LATEST.into(),
                    body: newer.encode(),
                    condition: PutCondition::None,
                })
                .unwrap();
        }
        match up.on_result(bucket.execute(op)) {
            Progress::Next(s) | Progress::Retry(s) => step = s,
            Progress::Finished(o) => break o,
        }
    };
    assert!(raced);
    assert!(matches!(
        outcome,
        UploadOutcome::Done {
            latest_moved: false,
            ..
        }
    ));
    assert_eq!(latest(&mut bucket), newer, "ours (30) does not replace 90");
}

#[test]
fn an_unreadable_pointer_is_replaced_with_a_warning() {
    let mut bucket = MemBucket::new();
    bucket
        .execute(ObjectOp::Put {
            key: MANIFEST_LATEST.into(),
            body: Bytes::from_static(b"garbage"),
            condition: PutCondition::None,
        })
        .unwrap();
    let (mut up, mut step) = CheckpointUpload::start(point(1, 5), &files(), 0).unwrap();
    loop {
        let op = op_of(&step);
        match up.on_result(bucket.execute(op)) {
            Progress::Next(s) | Progress::Retry(s) => step = s,
            Progress::Finished(o) => {
                assert!(matches!(
                    o,
                    UploadOutcome::Done {
                        latest_moved: true,
                        ..
                    }
                ));
                break;
            }
        }
    }
    let warnings = up.take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(latest(&mut bucket).index, Index(5));
}

#[test]
fn a_failure_abandons_without_touching_the_pointer() {
    let mut bucket = MemBucket::new();
    let (outcome, _) = run(&mut bucket, point(1, 10), |_, step, r| match step {
        UploadStep::File { name, .. } if name == "CURRENT" => {
            Err(ObjectError::Failed("access denied".into()))
        }
        _ => r,
    });
    let UploadOutcome::Abandoned(why) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(why.contains("access denied"), "{why}");
    assert!(!has(&bucket, MANIFEST_LATEST));
    assert!(!has(&bucket, &checkpoint_manifest_key(Term(1), Index(10))));
}

#[test]
fn unsafe_file_names_are_refused_before_anything_is_written() {
    for name in ["../escape.sst", ".hidden", "a/b", ""] {
        let bad = vec![LocalFile {
            name: name.into(),
            size_bytes: 1,
            sha256: sha('e'),
        }];
        assert!(
            CheckpointUpload::start(point(1, 1), &bad, 0).is_err(),
            "{name:?}"
        );
    }
    let bad_hash = vec![LocalFile {
        name: "x.sst".into(),
        size_bytes: 1,
        sha256: "nothex".into(),
    }];
    assert!(CheckpointUpload::start(point(1, 1), &bad_hash, 0).is_err());
}

#[test]
fn listing_pages_are_followed() {
    let mut bucket = MemBucket::new();
    for i in 0..(LIST_KEYS_MAX + 5) {
        bucket
            .execute(ObjectOp::Put {
                key: format!("sst/{:016x}/{i:06}.sst", i),
                body: Bytes::from_static(b"x"),
                condition: PutCondition::None,
            })
            .unwrap();
    }
    let (outcome, steps) = run(&mut bucket, point(1, 10), |_, _, r| r);
    assert!(matches!(outcome, UploadOutcome::Done { .. }));
    let lists = steps
        .iter()
        .filter(|s| matches!(s, UploadStep::Object(ObjectOp::List { .. })))
        .count();
    assert_eq!(lists, 2);
}
