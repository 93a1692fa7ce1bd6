//! [`Scenario::DamagedCheckpoint`](super::Scenario::DamagedCheckpoint):
//! damaging checkpoints in the bucket, the way a bad disk behind S3, an
//! operator's mistake or a hostile writer would, before the fresh node
//! restores.
//!
//! Only objects the damaged checkpoint does not share with a checkpoint
//! left intact are touched (an SST is shared by content), so the next older
//! checkpoint stays usable and the fallback has somewhere to go.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use madsim::rand::{thread_rng, Rng};
use t4_core::bucket::layout::MANIFEST_LATEST;
use t4_core::bucket::manifest::{CheckpointManifest, LatestPointer};
use t4_core::bucket::recovery::checkpoint_candidates;
use t4_core::object::{ObjectOp, PutCondition};
use t4_io_sim::s3::FakeS3;

/// What was damaged.
#[derive(Clone, Debug)]
pub(super) struct DamageFacts {
    /// Manifest keys of the damaged checkpoints, newest first.
    pub(super) damaged: Vec<String>,
    /// How each was damaged, in the same order.
    pub(super) how: Vec<&'static str>,
}

/// The ways to damage one checkpoint.
const WAYS: [&str; 6] = [
    "sst-flipped",
    "sst-deleted",
    "meta-file-damaged",
    "manifest-garbled",
    "manifest-path-traversal",
    "manifest-deleted",
];

/// Damages the newest checkpoint of `s3`'s bucket (`all`: every one), each
/// in a way drawn from [`WAYS`]. Writes go through [`FakeS3::apply`] (the
/// control client), so the bucket-discipline checks ignore them.
///
/// # Errors
/// The bucket holds no checkpoint.
pub(super) fn damage(s3: &FakeS3, all: bool) -> Result<DamageFacts, String> {
    let bucket = s3.bucket();
    let objects: BTreeMap<&str, &Bytes> = bucket.iter().collect();
    let keys: Vec<String> = objects.keys().map(|k| (*k).to_owned()).collect();
    let latest = objects
        .get(MANIFEST_LATEST)
        .and_then(|b| LatestPointer::decode(b).ok());
    let candidates = checkpoint_candidates(&keys, latest.as_ref());
    let listed: Vec<&str> = candidates
        .iter()
        .map(|c| c.manifest_key.as_str())
        .filter(|k| objects.contains_key(k))
        .collect();
    let Some(newest) = listed.first() else {
        return Err("the bucket holds no checkpoint to damage".into());
    };
    let targets: Vec<&str> = if all { listed.clone() } else { vec![newest] };
    // Files the checkpoints left intact need.
    let mut spared: BTreeSet<String> = BTreeSet::new();
    for key in listed.iter().filter(|k| !targets.contains(k)) {
        if let Some(m) = objects
            .get(key)
            .and_then(|b| CheckpointManifest::decode(key, b).ok())
        {
            spared.extend(m.file_keys().map(str::to_owned));
        }
    }
    let mut facts = DamageFacts {
        damaged: Vec::new(),
        how: Vec::new(),
    };
    for key in targets {
        let body = objects[key];
        let manifest = CheckpointManifest::decode(key, body)
            .map_err(|e| format!("{key} does not decode before the damage: {e}"))?;
        let mut way = WAYS[thread_rng().gen_range(0..WAYS.len())];
        let own_sst = manifest
            .ssts
            .iter()
            .find(|f| !spared.contains(&f.key))
            .map(|f| f.key.clone());
        if way.starts_with("sst") && own_sst.is_none() {
            way = "meta-file-damaged";
        }
        let pointed_at = latest.as_ref().is_some_and(|p| p.manifest_key == key);
        if way == "manifest-deleted" && !pointed_at {
            // Without the pointer naming it, a deleted manifest is no
            // candidate at all: nothing would be skipped.
            way = "manifest-garbled";
        }
        let put = |k: &str, body: Bytes| {
            s3.apply(ObjectOp::Put {
                key: k.to_owned(),
                body,
                condition: PutCondition::None,
            })
            .map(|_| ())
        };
        let delete = |k: &str| s3.apply(ObjectOp::Delete { key: k.to_owned() }).map(|_| ());
        let done = match way {
            "sst-flipped" => {
                let k = own_sst.expect("checked above");
                put(&k, flipped(objects[k.as_str()]))
            }
            "sst-deleted" => delete(&own_sst.expect("checked above")),
            "meta-file-damaged" => {
                let meta = manifest
                    .meta_files
                    .first()
                    .ok_or_else(|| format!("{key} has no meta file"))?;
                if thread_rng().gen_bool(0.5) {
                    delete(&meta.key)
                } else {
                    put(&meta.key, flipped(objects[meta.key.as_str()]))
                }
            }
            "manifest-garbled" => {
                let cut = thread_rng().gen_range(0..body.len());
                put(key, body.slice(..cut))
            }
            "manifest-path-traversal" => {
                let name = &manifest
                    .ssts
                    .first()
                    .unwrap_or(&manifest.meta_files[0])
                    .name;
                let text = std::str::from_utf8(body).expect("a manifest is JSON");
                let from = format!("\"name\":\"{name}\"");
                assert_eq!(text.matches(&from).count(), 1, "{from} once in {text}");
                let evil = text.replace(&from, &format!("\"name\":\"../../{name}\""));
                put(key, Bytes::from(evil))
            }
            "manifest-deleted" => delete(key),
            other => unreachable!("no way {other}"),
        };
        done.map_err(|e| format!("damaging {key} ({way}): {e}"))?;
        facts.damaged.push(key.to_owned());
        facts.how.push(way);
    }
    Ok(facts)
}

/// `body` with one byte flipped (same size: only the hash tells).
fn flipped(body: &Bytes) -> Bytes {
    let mut bytes = body.to_vec();
    let at = thread_rng().gen_range(0..bytes.len());
    bytes[at] ^= 0x5a;
    Bytes::from(bytes)
}
