//! The checks of checkpoints and GC (see [`super`]): GC deleted nothing
//! still needed, and the fresh node restored the newest intact checkpoint.
//!
//! Both judge from the store's own records, not from what the nodes
//! believe: the write log, replayed in landing order, gives the bucket as
//! it was at every deletion; the bucket as it was when the fresh node
//! started gives what its restore had to choose from.

use std::collections::BTreeMap;

use bytes::Bytes;
use t4_core::bucket::layout::{
    parse_checkpoint_manifest_key, parse_wal_key, CHECKPOINT_PREFIX, MANIFEST_LATEST, SST_PREFIX,
};
use t4_core::bucket::manifest::{CheckpointManifest, LatestPointer};
use t4_core::bucket::recovery::checkpoint_candidates;
use t4_core::bucket::wal_object;
use t4_core::object::{MemBucket, ObjectOp};
use t4_io_sim::checkpoint::{load, sha256_hex};
use t4_io_sim::s3::{AppliedWrite, CONTROL_CLIENT};
use t4_io_sim::server::NodeStatus;

use super::damage::DamageFacts;
use super::Kind;

/// Whether the checkpoint under `manifest_key` can be restored from
/// `objects`: its manifest decodes, every file is there with the size and
/// hash it names, the files load, and the engine is at the manifest's
/// index. Returns the manifest.
fn intact(
    objects: &BTreeMap<String, Bytes>,
    manifest_key: &str,
) -> Result<CheckpointManifest, String> {
    let body = objects
        .get(manifest_key)
        .ok_or_else(|| format!("{manifest_key} is missing"))?;
    let manifest = CheckpointManifest::decode(manifest_key, body).map_err(|e| e.to_string())?;
    let mut files = BTreeMap::new();
    for file in manifest.ssts.iter().chain(&manifest.meta_files) {
        let body = objects
            .get(&file.key)
            .ok_or_else(|| format!("{} is missing", file.key))?;
        if body.len() as u64 != file.size_bytes || sha256_hex(body) != file.sha256 {
            return Err(format!("{} does not match its manifest", file.key));
        }
        files.insert(file.name.clone(), body.clone());
    }
    let engine = load(&files)?;
    let meta = t4_core::mvcc::read_meta(&engine).map_err(|e| e.to_string())?;
    if meta.applied_index != manifest.index.0 {
        return Err(format!(
            "the engine is at index {}, the manifest says {}",
            meta.applied_index, manifest.index
        ));
    }
    Ok(manifest)
}

fn listing(bucket: &MemBucket) -> BTreeMap<String, Bytes> {
    bucket
        .iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}

/// What a restore from `bucket` must do: the manifest key of the newest
/// intact checkpoint (`None`: none is), and the candidates newer than it
/// that it must skip as damaged, newest first — [`checkpoint_candidates`]'
/// order, judged by [`intact`].
fn expected_restore(bucket: &MemBucket) -> (Option<String>, Vec<String>) {
    let objects = listing(bucket);
    let keys: Vec<String> = objects.keys().cloned().collect();
    let latest = objects
        .get(MANIFEST_LATEST)
        .and_then(|b| LatestPointer::decode(b).ok());
    let mut damaged = Vec::new();
    for candidate in checkpoint_candidates(&keys, latest.as_ref()) {
        if intact(&objects, &candidate.manifest_key).is_ok() {
            return (Some(candidate.manifest_key), damaged);
        }
        damaged.push(candidate.manifest_key);
    }
    (None, damaged)
}

/// The fresh node's restore: it restored the newest intact checkpoint of
/// `bucket_before` and skipped exactly the damaged ones newer than it;
/// with `damage`, every checkpoint the scenario damaged was among those
/// skipped (the fallback happened, and the scenario did damage them).
/// Counts what it did in `events`.
pub(super) fn check_restore(
    status: &NodeStatus,
    bucket_before: &MemBucket,
    damage: Option<&DamageFacts>,
    events: &mut BTreeMap<&'static str, u64>,
    add: &mut impl FnMut(Kind, String),
) {
    let Some(report) = &status.restore else {
        add(
            Kind::Restore,
            format!("the fresh node on a wiped disk did not restore: {status:?}"),
        );
        return;
    };
    let restored = report.restored.as_ref().map(|c| c.manifest_key.clone());
    *events
        .entry(if restored.is_some() {
            "restored-checkpoint"
        } else {
            "restored-wal-only"
        })
        .or_default() += 1;
    if !report.damaged.is_empty() {
        *events.entry("restore-skipped-damaged").or_default() += report.damaged.len() as u64;
    }
    let (expected, expected_damaged) = expected_restore(bucket_before);
    if restored != expected || report.damaged != expected_damaged {
        add(
            Kind::Restore,
            format!(
                "the fresh node restored {restored:?} skipping {:?}; the newest intact checkpoint is {expected:?}, newer damaged ones {expected_damaged:?} (warnings: {:?})",
                report.damaged, report.warnings
            ),
        );
    }
    let Some(damage) = damage else { return };
    for (key, how) in damage.damaged.iter().zip(&damage.how) {
        if !expected_damaged.contains(key) {
            add(
                Kind::Restore,
                format!("the scenario damaged {key} ({how}) but it is still intact"),
            );
        }
        if restored.as_ref() == Some(key) || !report.damaged.contains(key) {
            add(
                Kind::Restore,
                format!(
                    "the fresh node did not fall back from {key}, damaged ({how}): it restored {restored:?}, skipping {:?}",
                    report.damaged
                ),
            );
        }
    }
}

/// One WAL object ever written: its key, header term and last index.
struct WalObject {
    key: String,
    body: Bytes,
    term: u64,
    last: u64,
}

/// GC never deletes what is needed. Replaying the write log, after every
/// write:
///
/// - **the bucket is restorable**: a restore picks the newest intact
///   checkpoint (or none), and the WAL objects in the bucket continue it,
///   without a hole, through every entry of the log's chain that has
///   landed so far — what a fresh node on a wiped disk needs at that
///   moment;
/// - and no deletion removed a fence (an object whose term is above its
///   predecessor's) or the log's first object (whose predecessor no one
///   can read): the previous writer, resuming, must find them.
///
/// Also counts manifests that landed while a file they name was missing
/// (`damaged-checkpoint-written`: a writer finished a checkpoint whose
/// files GC had taken; harmless while it is older than an intact one).
/// Writes of the control client (the scenario's own damage) are applied
/// but not judged.
pub(super) fn check_gc(
    writes: &[AppliedWrite],
    events: &mut BTreeMap<&'static str, u64>,
    add: &mut impl FnMut(Kind, String),
) {
    let chain = wal_chain(writes);
    let mut objects: BTreeMap<String, Bytes> = BTreeMap::new();
    // The newest intact checkpoint's index, while no checkpoint file or
    // pointer changed since it was found.
    let mut restore_point: Option<u64> = None;
    // The last index of the chain's objects landed so far.
    let mut end = 0;
    for w in writes {
        let judged = &*w.client != CONTROL_CLIENT;
        let key = w.key();
        if !key.starts_with("wal/") {
            restore_point = None;
        }
        match &w.op {
            ObjectOp::Put { body, .. } => {
                // (A pointer that lands late, after its writer gave up on
                // it, may point at a checkpoint GC has taken since: restores
                // skip a dangling pointer, gc-race seed 857 drew one landing
                // 35 s late.)
                if judged && key == MANIFEST_LATEST && !w.late {
                    if let Some(why) = unpublishable(&objects, body) {
                        add(
                            Kind::Gc,
                            format!(
                                "{} pointed {MANIFEST_LATEST} at an incomplete checkpoint at {:?}: {why}",
                                w.client, w.at
                            ),
                        );
                        return;
                    }
                }
                if judged && parse_checkpoint_manifest_key(key).is_some() {
                    if let Ok(m) = CheckpointManifest::decode(key, body) {
                        if m.file_keys().any(|k| !objects.contains_key(k)) {
                            *events.entry("damaged-checkpoint-written").or_default() += 1;
                        }
                    }
                }
                if let Some(first) = parse_wal_key(key) {
                    if let Some(o) = chain.get(&first.0).filter(|o| o.body == *body) {
                        end = end.max(o.last);
                    }
                }
                objects.insert(key.to_owned(), body.clone());
            }
            ObjectOp::Delete { .. } => {
                if judged {
                    if let Some(why) = fence(&chain, key) {
                        add(
                            Kind::Gc,
                            format!("{} deleted {key} at {:?}: {why}", w.client, w.at),
                        );
                        return;
                    }
                    let kind = if key.starts_with("wal/") {
                        "gc-deleted-wal"
                    } else if key.starts_with(SST_PREFIX) {
                        "gc-deleted-sst"
                    } else {
                        "gc-deleted-checkpoint-file"
                    };
                    *events.entry(kind).or_default() += 1;
                }
                objects.remove(key);
            }
            ObjectOp::Get { .. } | ObjectOp::List { .. } => {}
        }
        if !judged {
            continue;
        }
        let point = *restore_point.get_or_insert_with(|| newest_intact(&objects));
        if let Some(hole) = first_hole(&chain, &objects, point, end) {
            add(
                Kind::Gc,
                format!(
                    "after {} {} {key} at {:?} the bucket is not restorable: the newest intact checkpoint is at index {point}, and {hole}",
                    w.client,
                    if w.body().is_some() { "put" } else { "deleted" },
                    w.at
                ),
            );
            return;
        }
    }
}

/// Why the pointer `body` may not be published over `objects`: its
/// manifest, or a file the manifest names, is not in the bucket (the
/// uploader took a file for present that was not: the checkpoint was never
/// complete).
fn unpublishable(objects: &BTreeMap<String, Bytes>, body: &[u8]) -> Option<String> {
    let pointer = LatestPointer::decode(body).ok()?;
    let Some(manifest) = objects.get(&pointer.manifest_key) else {
        return Some(format!("{} is not in the bucket", pointer.manifest_key));
    };
    let manifest = CheckpointManifest::decode(&pointer.manifest_key, manifest).ok()?;
    let missing = manifest
        .file_keys()
        .find(|k| !objects.contains_key(*k))?
        .to_owned();
    Some(format!(
        "{} names {missing}, which is not in the bucket",
        pointer.manifest_key
    ))
}

/// The log's chain of WAL objects from index 1 (each starting right after
/// the one before ends), by first index, from the first bytes written
/// under each key ([`super::checks`] reports everything off the chain).
fn wal_chain(writes: &[AppliedWrite]) -> BTreeMap<u64, WalObject> {
    let mut firsts: BTreeMap<u64, WalObject> = BTreeMap::new();
    for w in writes {
        let (Some(first), Some(body)) = (parse_wal_key(w.key()), w.body()) else {
            continue;
        };
        if firsts.contains_key(&first.0) {
            continue;
        }
        if let Ok((term, entries)) = wal_object::decode(w.key(), first, body) {
            if let Some(last) = entries.last() {
                firsts.insert(
                    first.0,
                    WalObject {
                        key: w.key().to_owned(),
                        body: Bytes::copy_from_slice(body),
                        term: term.0,
                        last: last.index,
                    },
                );
            }
        }
    }
    let mut chain = BTreeMap::new();
    let mut next = 1;
    while let Some(o) = firsts.remove(&next) {
        let first = next;
        next = o.last + 1;
        chain.insert(first, o);
    }
    chain
}

/// Why `key` must never be deleted, if it is a WAL object of the chain
/// that is its first object or a fence.
fn fence(chain: &BTreeMap<u64, WalObject>, key: &str) -> Option<String> {
    let first = parse_wal_key(key)?.0;
    let object = chain.get(&first)?;
    match chain.range(..first).next_back() {
        None => Some("it is the log's first object, which GC keeps".into()),
        Some((_, before)) if before.term < object.term => Some(format!(
            "it is a fence (term {} after term {}), which a paused previous writer must find",
            object.term, before.term
        )),
        Some(_) => None,
    }
}

/// The index of the checkpoint a restore from `bucket` picks (the newest
/// intact candidate), 0 for none.
pub(crate) fn newest_intact_in(bucket: &MemBucket) -> u64 {
    newest_intact(&listing(bucket))
}

/// The index of the checkpoint a restore from `objects` picks (the newest
/// intact candidate), 0 for none.
fn newest_intact(objects: &BTreeMap<String, Bytes>) -> u64 {
    let keys: Vec<String> = objects
        .keys()
        .filter(|k| k.starts_with(CHECKPOINT_PREFIX))
        .cloned()
        .collect();
    let latest = objects
        .get(MANIFEST_LATEST)
        .and_then(|b| LatestPointer::decode(b).ok());
    checkpoint_candidates(&keys, latest.as_ref())
        .into_iter()
        .find_map(|c| intact(objects, &c.manifest_key).ok())
        .map_or(0, |m| m.index.0)
}

/// The first entries after `point` through `end` that no chain object in
/// `objects` holds, if any.
fn first_hole(
    chain: &BTreeMap<u64, WalObject>,
    objects: &BTreeMap<String, Bytes>,
    point: u64,
    end: u64,
) -> Option<String> {
    let mut next = point + 1;
    while next <= end {
        let (first, o) = chain
            .range(..=next)
            .next_back()
            .expect("the chain starts at index 1");
        assert!(*first <= next && next <= o.last, "the chain is contiguous");
        if objects.get(&o.key) != Some(&o.body) {
            return Some(format!(
                "{} (entries {first}..={}) is not in the bucket",
                o.key, o.last
            ));
        }
        next = o.last + 1;
    }
    None
}
