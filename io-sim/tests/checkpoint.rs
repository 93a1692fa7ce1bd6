//! Simulated checkpoints against the fake S3: uploaded by core's
//! `CheckpointUpload` (unchanged SSTs reused), restored by
//! `t4_io_sim::checkpoint::restore`, which falls back from a damaged
//! newest checkpoint and refuses path-traversing file names.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use madsim::runtime::{Handle, Runtime};
use t4_core::bucket::checkpoint::{
    CheckpointPoint, CheckpointUpload, Progress, UploadOutcome, UploadStep,
};
use t4_core::bucket::manifest::CheckpointManifest;
use t4_core::engine::KvRead;
use t4_core::kv::PutRequest;
use t4_core::log::{Entry, Payload};
use t4_core::mvcc::Store;
use t4_core::object::{ObjectOp, ObjectReply, PutCondition};
use t4_core::{Index, MemEngine, Revision, Term};
use t4_io_sim::checkpoint::{restore, take, RestoreBugs, RestoreReport};
use t4_io_sim::s3::{FakeS3, S3Faults, S3_IP};

const TIMEOUT: Duration = Duration::from_secs(2);

fn sim<F: Future>(test: impl FnOnce() -> F) -> F::Output {
    Runtime::with_seed_and_config(7, madsim::Config::default()).block_on(test())
}

/// An engine after `n` puts (log entries 1..=n), so its meta says index n.
fn engine_at(n: u64) -> MemEngine {
    let engine = MemEngine::new();
    let mut store = Store::open(&engine).expect("empty engine");
    for i in 1..=n {
        let entry = Entry {
            term: 1,
            index: i,
            payload: Some(Payload::Put(PutRequest {
                key: format!("k/{:02}", i % 7).into_bytes(),
                value: format!("v{i}").into_bytes(),
                ..PutRequest::default()
            })),
        };
        store.apply(&engine, &entry).expect("in memory");
    }
    engine
}

fn pairs(view: &impl KvRead) -> Vec<(Vec<u8>, Vec<u8>)> {
    view.scan(b"", None)
        .map(|i| i.expect("in memory"))
        .collect()
}

/// Uploads a checkpoint of `engine` (at `index`) as a node would, through
/// the control handle. Returns the manifest and how many SSTs were sent.
fn upload(s3: &FakeS3, engine: &MemEngine, index: u64) -> (CheckpointManifest, usize) {
    let files = take(engine);
    let point = CheckpointPoint {
        term: Term(1),
        index: Index(index),
        revision: Revision(i64::try_from(index).expect("small") + 1),
        compact_revision: Revision(0),
    };
    let (mut up, mut step) =
        CheckpointUpload::start(point, &files.local_files(), 0).expect("valid");
    for _ in 0..1_000 {
        let op = match step {
            UploadStep::Object(op) => op,
            UploadStep::File {
                name,
                key,
                condition,
            } => ObjectOp::Put {
                key,
                body: files.get(&name).expect("a file of the folder"),
                condition,
            },
        };
        match up.on_result(s3.apply(op)) {
            Progress::Next(next) | Progress::Retry(next) => step = next,
            Progress::Finished(UploadOutcome::Done {
                manifest,
                ssts_uploaded,
                ..
            }) => return (manifest, ssts_uploaded),
            Progress::Finished(other) => panic!("upload: {other:?}"),
        }
    }
    panic!("the upload did not finish");
}

/// Runs a restore from a machine of its own (`10.0.0.n`).
async fn restore_now(s3: &FakeS3, n: u8, bugs: RestoreBugs) -> (RestoreReport, Option<MemEngine>) {
    let client = s3.client("restorer");
    let machine = Handle::current()
        .create_node()
        .name(format!("restorer-{n}"))
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
        .build();
    let (report, snapshot) = machine
        .spawn(async move { restore(&client, TIMEOUT, bugs).await })
        .await
        .expect("restore task")
        .expect("the store answers");
    let engine = snapshot.map(|s| {
        let e = MemEngine::new();
        let mut batch = t4_core::WriteBatch::default();
        for (k, v) in pairs(&s) {
            batch.put(k, v);
        }
        t4_core::KvEngine::write(&e, batch).expect("in memory");
        e
    });
    (report, engine)
}

fn stored(s3: &FakeS3, key: &str) -> Bytes {
    match s3.apply(ObjectOp::Get { key: key.into() }) {
        Ok(ObjectReply::Got { body, .. }) => body,
        other => panic!("{key}: {other:?}"),
    }
}

fn put(s3: &FakeS3, key: &str, body: Bytes) {
    s3.apply(ObjectOp::Put {
        key: key.into(),
        body,
        condition: PutCondition::None,
    })
    .expect("control put");
}

/// The newest checkpoint is restored as it was taken; a later one reuses
/// the SSTs whose pairs did not change.
#[test]
fn the_newest_checkpoint_is_restored_and_ssts_are_reused() {
    sim(|| async {
        let s3 = FakeS3::start(IpAddr::V4(S3_IP), S3Faults::none());
        let (old, sent_old) = upload(&s3, &engine_at(300), 300);
        let newer = engine_at(310);
        let (new, sent_new) = upload(&s3, &newer, 310);
        assert_eq!(sent_old, old.ssts.len());
        assert!(
            sent_new < new.ssts.len(),
            "unchanged SSTs are not sent again: {sent_new} of {}",
            new.ssts.len()
        );
        let (report, engine) = restore_now(&s3, 1, RestoreBugs::default()).await;
        assert_eq!(
            report.restored.map(|c| c.manifest_key),
            Some(new.key()),
            "{:?}",
            report.warnings
        );
        assert!(report.damaged.is_empty());
        assert_eq!(pairs(&engine.expect("restored")), pairs(&newer));
    });
}

/// A newest checkpoint with a flipped byte in an SST of its own is
/// skipped with a warning; the previous one is restored. Without the
/// check (the deliberate bug) the damaged one would be taken.
#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    sim(|| async {
        let s3 = FakeS3::start(IpAddr::V4(S3_IP), S3Faults::none());
        let older = engine_at(40);
        let (old, _) = upload(&s3, &older, 40);
        let (new, _) = upload(&s3, &engine_at(50), 50);
        let own = new
            .ssts
            .iter()
            .find(|f| !old.ssts.contains(f))
            .expect("the newer checkpoint has an SST of its own");
        let mut bytes = stored(&s3, &own.key).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        put(&s3, &own.key, Bytes::from(bytes));

        let (report, engine) = restore_now(&s3, 1, RestoreBugs::default()).await;
        assert_eq!(report.restored.map(|c| c.manifest_key), Some(old.key()));
        assert_eq!(report.damaged, vec![new.key()]);
        assert!(
            report.warnings[0].contains("sha256"),
            "{:?}",
            report.warnings
        );
        assert_eq!(pairs(&engine.expect("restored")), pairs(&older));

        let bug = RestoreBugs {
            skip_verification: true,
            ..RestoreBugs::default()
        };
        let (report, _) = restore_now(&s3, 2, bug).await;
        assert_eq!(report.restored.map(|c| c.manifest_key), Some(new.key()));
    });
}

/// A manifest naming a file outside the folder (`../`) is refused as
/// damaged; with no older checkpoint the engine starts empty (the WAL
/// from index 1 then carries the state).
#[test]
fn a_path_traversing_manifest_is_refused() {
    sim(|| async {
        let s3 = FakeS3::start(IpAddr::V4(S3_IP), S3Faults::none());
        let (m, _) = upload(&s3, &engine_at(20), 20);
        let body = stored(&s3, &m.key());
        let text = std::str::from_utf8(&body).expect("JSON");
        let name = &m.ssts[0].name;
        let evil = text.replace(
            &format!("\"name\":\"{name}\""),
            &format!("\"name\":\"../../{name}\""),
        );
        assert_ne!(evil, text);
        put(&s3, &m.key(), Bytes::from(evil));
        let (report, engine) = restore_now(&s3, 1, RestoreBugs::default()).await;
        assert!(report.restored.is_none());
        assert!(engine.is_none());
        assert_eq!(report.damaged, vec![m.key()]);
        assert!(
            report.warnings[0].contains("not allowed in a file name"),
            "{:?}",
            report.warnings
        );
    });
}

/// A bucket without checkpoints restores nothing.
#[test]
fn no_checkpoint_no_restore() {
    sim(|| async {
        let s3 = FakeS3::start(IpAddr::V4(S3_IP), S3Faults::none());
        let (report, engine) = restore_now(&s3, 1, RestoreBugs::default()).await;
        assert_eq!(report, RestoreReport::default());
        assert!(engine.is_none());
    });
}
