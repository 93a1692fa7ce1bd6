//! Checkpoints in the simulator: taking one of the [`SimEngine`](crate::engine::SimEngine)
//! for core's upload (`t4_core::node::checkpoint`), and restoring one into
//! a node whose disk has no engine (ARCHITECTURE §3.10). The behaviour is
//! io-real's (`io-real/src/checkpoint.rs`); only the files differ.
//!
//! # The files of a simulated checkpoint
//!
//! RocksDB's checkpoint is a folder of immutable SSTs (hard links, shared
//! with the next checkpoint while their data does not change) and a few
//! meta files. The simulated one imitates exactly what the bucket protocol
//! cares about — several SSTs, most of them byte-identical to the previous
//! checkpoint's, plus a meta file of its own:
//!
//! - **SSTs by content-defined chunks.** The engine's pairs, in key order,
//!   are cut into chunks; a chunk ends after a key whose FNV-1a hash is a
//!   multiple of [`SST_KEYS_AVG`] (or once it holds [`SST_BYTES_MAX`]
//!   bytes). Where a chunk ends depends on its own keys only, so a chunk
//!   whose pairs did not change since the last checkpoint has the same
//!   bytes, the same sha256 and the same name — the upload finds it under
//!   `sst/` and does not send it again, as with RocksDB's unchanged SSTs.
//!   MVCC's revision log only grows at its end, so most of it is reused;
//!   the chunks holding current values and the meta key change.
//!   An SST is named after its content (`<sha256, first 16 hex>.sst`) and
//!   holds `SST_MAGIC` then, per pair, the key's and the value's lengths
//!   (u32, big-endian) and bytes.
//! - **One meta file**, [`META_FILE`] (RocksDB's MANIFEST): `META_MAGIC`
//!   then the SSTs' names in key order, one per line. It goes to the
//!   checkpoint's own folder in the bucket.
//!
//! Taking one first persists the engine (RocksDB flushes its memtables
//! into the checkpoint's SSTs), so a crash never takes the engine back
//! behind a checkpoint whose WAL objects GC may then delete. A folder
//! lives in the node process's memory ([`LocalCheckpoints`]) from
//! `TakeCheckpoint` to `DropCheckpoint`; a process that dies loses it, as
//! io-real deletes the folders a crash left behind when it opens. The
//! answer to `TakeCheckpoint` comes after a simulated hashing time (io-real
//! hashes on a thread), while the node goes on serving.
//!
//! # Restoring
//!
//! [`restore`] lists `checkpoint/`, reads `manifest/latest` and lets core's
//! [`CheckpointChoice`] pick the newest candidate. It downloads the
//! candidate's manifest and every file it names, checks each file's size
//! and sha256 against the manifest (core's [`verify_file`]; file names were
//! validated against path traversal by the manifest's decoder), loads the
//! files into an engine image ([`load`]) and checks that it is at the
//! manifest's index. Any damage moves on to the next older candidate with a
//! warning; none left means an empty engine (the bucket's WAL from index 1
//! must then carry the state). Retryable store errors are retried here
//! (io-real's store retries them itself); one that persists fails the
//! restore, which says nothing about the checkpoint's integrity.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use madsim::time::sleep;
use sha2::{Digest, Sha256};
use t4_core::bucket::checkpoint::LocalFile;
use t4_core::bucket::layout::{parse_checkpoint_manifest_key, CHECKPOINT_PREFIX, MANIFEST_LATEST};
use t4_core::bucket::manifest::{CheckpointManifest, LatestPointer};
use t4_core::bucket::recovery::{
    verify_file, CheckpointCandidate, CheckpointChoice, CheckpointDamage, Fallback,
};
use t4_core::engine::{KvRead, MemSnapshot};
use t4_core::object::{ObjectError, ObjectOp, ObjectReply, ObjectResult, LIST_KEYS_MAX};
use t4_core::{Index, KvEngine, MemEngine, Term, WriteBatch};

use crate::s3::S3Client;

/// A chunk (SST) ends after a key whose hash is a multiple of this: about
/// this many pairs per SST.
pub const SST_KEYS_AVG: u64 = 16;
/// A chunk also ends once it holds this many bytes (keys and values).
pub const SST_BYTES_MAX: usize = 64 * 1024;
/// The checkpoint's meta file (RocksDB's MANIFEST).
pub const META_FILE: &str = "MANIFEST-000001";
/// Local checkpoint folders one process holds at most: core runs one
/// checkpoint at a time and drops its folder when it ends.
pub const LOCAL_CHECKPOINTS_MAX: usize = 1;
/// Attempts of one store operation during a restore before it fails.
pub const RESTORE_ATTEMPTS_MAX: u32 = 20;

const SST_MAGIC: &[u8] = b"t4-sim-sst 1\n";
const META_MAGIC: &str = "t4-sim-checkpoint 1";

/// Lowercase hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The sha256 of `bytes`, lowercase hex.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// 64-bit FNV-1a: a fixed, portable hash for the chunk boundaries.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The files of one checkpoint folder, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointFiles {
    files: BTreeMap<String, Bytes>,
}

impl CheckpointFiles {
    /// Every file with its size and sha256, by name (what core's
    /// `TakenCheckpoint` lists).
    #[must_use]
    pub fn local_files(&self) -> Vec<LocalFile> {
        self.files
            .iter()
            .map(|(name, body)| LocalFile {
                name: name.clone(),
                size_bytes: body.len() as u64,
                sha256: sha256_hex(body),
            })
            .collect()
    }

    /// One file's bytes.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<Bytes> {
        self.files.get(name).cloned()
    }

    /// The files, by name.
    #[must_use]
    pub fn files(&self) -> &BTreeMap<String, Bytes> {
        &self.files
    }
}

/// Makes the checkpoint files of `view` (see the module docs).
///
/// # Panics
/// Two different chunks hash to the same name (a sha256 prefix collision).
#[must_use]
pub fn take<R: KvRead>(view: &R) -> CheckpointFiles {
    let mut files = BTreeMap::new();
    let mut names = Vec::new();
    let mut chunk: Vec<u8> = SST_MAGIC.to_vec();
    let mut pairs = 0usize;
    let mut flush = |chunk: &mut Vec<u8>, pairs: &mut usize| {
        if *pairs == 0 {
            return;
        }
        let body = Bytes::from(std::mem::replace(chunk, SST_MAGIC.to_vec()));
        let name = format!("{}.sst", &sha256_hex(&body)[..16]);
        let previous = files.insert(name.clone(), body.clone());
        assert!(
            previous.is_none(),
            "two different chunks are both named {name}: {} and {} bytes",
            previous.map_or(0, |p| p.len()),
            body.len()
        );
        names.push(name);
        *pairs = 0;
    };
    for item in view.scan(b"", None) {
        let (key, value) = item.expect("scanning an in-memory engine cannot fail");
        for part in [&key, &value] {
            let len = u32::try_from(part.len()).expect("keys and values are far below 4 GiB");
            chunk.extend_from_slice(&len.to_be_bytes());
            chunk.extend_from_slice(part);
        }
        pairs += 1;
        if fnv1a(&key).is_multiple_of(SST_KEYS_AVG) || chunk.len() >= SST_BYTES_MAX {
            flush(&mut chunk, &mut pairs);
        }
    }
    flush(&mut chunk, &mut pairs);
    let mut meta = format!("{META_MAGIC}\n");
    for name in &names {
        meta.push_str(name);
        meta.push('\n');
    }
    files.insert(META_FILE.to_owned(), Bytes::from(meta));
    CheckpointFiles { files }
}

/// Reads checkpoint files back into an engine image: the meta file names
/// every SST (no more, no fewer), each SST decodes whole, and keys rise
/// strictly across them.
///
/// # Errors
/// What is wrong, for [`CheckpointDamage::Unusable`].
pub fn load(files: &BTreeMap<String, Bytes>) -> Result<MemSnapshot, String> {
    let meta = files
        .get(META_FILE)
        .ok_or_else(|| format!("no {META_FILE}"))?;
    let meta = std::str::from_utf8(meta).map_err(|_| format!("{META_FILE} is not UTF-8"))?;
    let mut lines = meta.lines();
    if lines.next() != Some(META_MAGIC) {
        return Err(format!("{META_FILE} does not start with {META_MAGIC:?}"));
    }
    let listed: Vec<&str> = lines.collect();
    let present = files.keys().filter(|n| n.ends_with(".sst")).count();
    if listed.len() != present {
        return Err(format!(
            "{META_FILE} lists {} SSTs, the folder holds {present}",
            listed.len()
        ));
    }
    let mut batch = WriteBatch::default();
    let mut last: Option<Vec<u8>> = None;
    for name in listed {
        let sst = files
            .get(name)
            .ok_or_else(|| format!("{META_FILE} lists {name}, which is not in the folder"))?;
        let mut rest = sst
            .strip_prefix(SST_MAGIC)
            .ok_or_else(|| format!("{name} is not an SST"))?;
        while !rest.is_empty() {
            let key = take_part(&mut rest).ok_or_else(|| format!("{name} is cut short"))?;
            let value = take_part(&mut rest).ok_or_else(|| format!("{name} is cut short"))?;
            if last.as_deref().is_some_and(|l| l >= key) {
                return Err(format!("{name}: keys out of order"));
            }
            last = Some(key.to_vec());
            batch.put(key.to_vec(), value.to_vec());
        }
    }
    let engine = MemEngine::new();
    engine.write(batch).map_err(|e| e.to_string())?;
    Ok(engine.snapshot())
}

fn take_part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, after) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if after.len() < len {
        return None;
    }
    let (part, after) = after.split_at(len);
    *rest = after;
    Some(part)
}

/// The checkpoint folders of one node process, by `(term, index)`.
#[derive(Debug, Default)]
pub struct LocalCheckpoints {
    folders: BTreeMap<(Term, Index), CheckpointFiles>,
}

impl LocalCheckpoints {
    /// Keeps the folder of the checkpoint `(term, index)`.
    ///
    /// # Panics
    /// [`LOCAL_CHECKPOINTS_MAX`] folders are held already (core dropped
    /// none of them), or this one exists.
    pub fn insert(&mut self, term: Term, index: Index, files: CheckpointFiles) {
        assert!(
            self.folders.len() < LOCAL_CHECKPOINTS_MAX,
            "taking checkpoint {term}/{index} while holding {:?}: core runs one at a time and drops each",
            self.folders.keys().collect::<Vec<_>>()
        );
        let previous = self.folders.insert((term, index), files);
        assert!(previous.is_none(), "checkpoint {term}/{index} taken twice");
    }

    /// One file of a folder.
    #[must_use]
    pub fn file(&self, term: Term, index: Index, name: &str) -> Option<Bytes> {
        self.folders.get(&(term, index))?.get(name)
    }

    /// Frees a folder (no error if absent: a failed take left none).
    pub fn drop_folder(&mut self, term: Term, index: Index) {
        self.folders.remove(&(term, index));
    }

    /// Folders held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.folders.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.folders.is_empty()
    }
}

/// What a start-up restore did (none ran when the disk had an engine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The checkpoint restored; `None`: the bucket had no usable one, and
    /// the engine starts empty.
    pub restored: Option<CheckpointCandidate>,
    /// Manifest keys of the candidates found damaged, newest first.
    pub damaged: Vec<String>,
    /// The warnings logged for them.
    pub warnings: Vec<String>,
    /// Bytes downloaded for the checkpoint restored.
    pub bytes: u64,
}

/// Deliberate restore bugs, to prove the checks catch them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreBugs {
    /// Sizes and hashes are not checked.
    pub skip_verification: bool,
    /// A damaged candidate ends the restore with an empty engine instead
    /// of falling back to the next older one.
    pub no_fallback: bool,
}

enum Attempt {
    Damaged(CheckpointDamage),
    Fatal(String),
}

/// Restores the newest usable checkpoint of the bucket behind `s3` (see
/// the module docs). Returns what it did and the engine image (`None`:
/// start empty).
///
/// # Errors
/// The store kept failing (after [`RESTORE_ATTEMPTS_MAX`] attempts of one
/// operation) or answered nonsense: nothing was decided.
pub async fn restore(
    s3: &S3Client,
    timeout: Duration,
    bugs: RestoreBugs,
) -> Result<(RestoreReport, Option<MemSnapshot>), String> {
    let keys = list_manifest_keys(s3, timeout).await?;
    let latest = read_latest(s3, timeout).await?;
    let mut choice = CheckpointChoice::new(&keys, latest.as_ref());
    let mut report = RestoreReport::default();
    loop {
        let Some(candidate) = choice.current().cloned() else {
            // A checkpoint collected while we restored it: a newer one
            // superseded it (`CheckpointChoice`).
            if !choice.worth_relisting() {
                break;
            }
            let keys = list_manifest_keys(s3, timeout).await?;
            let latest = read_latest(s3, timeout).await?;
            match choice.relisted(&keys, latest.as_ref()) {
                Some(next) => {
                    tracing::info!("a checkpoint vanished while it was restored: trying the bucket's newer ones");
                    choice = next;
                    continue;
                }
                None => break,
            }
        };
        match restore_one(s3, timeout, &candidate, bugs).await {
            Ok((snapshot, bytes)) => {
                report.restored = Some(candidate);
                report.bytes = bytes;
                return Ok((report, Some(snapshot)));
            }
            Err(Attempt::Fatal(why)) => return Err(why),
            Err(Attempt::Damaged(damage)) => {
                report.damaged.push(candidate.manifest_key.clone());
                if bugs.no_fallback {
                    let warning = format!("{candidate} is damaged: {damage}; (bug) no fallback");
                    tracing::warn!(%warning, "checkpoint damaged");
                    report.warnings.push(warning);
                    return Ok((report, None));
                }
                match choice.report_damaged(damage) {
                    Fallback::Next { warning, .. } => {
                        tracing::warn!(%warning, "checkpoint damaged");
                        report.warnings.push(warning);
                    }
                    Fallback::NoneLeft { warning } => {
                        tracing::error!(%warning, "no usable checkpoint");
                        report.warnings.push(warning);
                    }
                }
            }
        }
    }
    Ok((report, None))
}

async fn restore_one(
    s3: &S3Client,
    timeout: Duration,
    candidate: &CheckpointCandidate,
    bugs: RestoreBugs,
) -> Result<(MemSnapshot, u64), Attempt> {
    let key = &candidate.manifest_key;
    let body = get(s3, timeout, key).await?;
    let manifest = CheckpointManifest::decode(key, &body)
        .map_err(|e| Attempt::Damaged(CheckpointDamage::Manifest(e)))?;
    let mut files = BTreeMap::new();
    let mut bytes = 0;
    for file in manifest.ssts.iter().chain(&manifest.meta_files) {
        let body = get(s3, timeout, &file.key).await?;
        if !bugs.skip_verification {
            verify_file(file, body.len() as u64, &sha256_hex(&body)).map_err(Attempt::Damaged)?;
        }
        bytes += body.len() as u64;
        files.insert(file.name.clone(), body);
    }
    let unusable = |why: String| Attempt::Damaged(CheckpointDamage::Unusable { why });
    let snapshot = load(&files).map_err(unusable)?;
    let meta = t4_core::mvcc::read_meta(&snapshot).map_err(|e| unusable(e.to_string()))?;
    if meta.applied_index != manifest.index.0 {
        return Err(unusable(format!(
            "the engine is at index {}, the manifest says {}",
            meta.applied_index, manifest.index.0
        )));
    }
    Ok((snapshot, bytes))
}

async fn get(s3: &S3Client, timeout: Duration, key: &str) -> Result<Bytes, Attempt> {
    let op = ObjectOp::Get {
        key: key.to_owned(),
    };
    match execute_retrying(s3, op, timeout).await {
        Ok(ObjectReply::Got { body, .. }) => Ok(body),
        Err(ObjectError::NotFound) => Err(Attempt::Damaged(CheckpointDamage::Missing {
            key: key.to_owned(),
        })),
        Ok(other) => Err(Attempt::Fatal(format!("get {key} answered {other:?}"))),
        Err(e) => Err(Attempt::Fatal(format!("get {key}: {e}"))),
    }
}

/// Every checkpoint manifest key under `checkpoint/`.
async fn list_manifest_keys(s3: &S3Client, timeout: Duration) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut start_after = None;
    // Bounded: each page moves `start_after` forward or ends the listing.
    loop {
        let op = ObjectOp::List {
            prefix: CHECKPOINT_PREFIX.to_owned(),
            start_after: start_after.clone(),
            max_keys: LIST_KEYS_MAX,
        };
        let reply = execute_retrying(s3, op, timeout)
            .await
            .map_err(|e| format!("listing {CHECKPOINT_PREFIX}: {e}"))?;
        let ObjectReply::Listed { objects, truncated } = reply else {
            return Err(format!("list answered {reply:?}"));
        };
        start_after = objects.last().map(|o| o.key.clone());
        keys.extend(
            objects
                .into_iter()
                .map(|o| o.key)
                .filter(|k| parse_checkpoint_manifest_key(k).is_some()),
        );
        if !truncated || start_after.is_none() {
            return Ok(keys);
        }
    }
}

/// `manifest/latest`; `None` if absent or unreadable (with a warning: the
/// listing still finds the checkpoints).
async fn read_latest(s3: &S3Client, timeout: Duration) -> Result<Option<LatestPointer>, String> {
    let op = ObjectOp::Get {
        key: MANIFEST_LATEST.to_owned(),
    };
    match execute_retrying(s3, op, timeout).await {
        Ok(ObjectReply::Got { body, .. }) => match LatestPointer::decode(&body) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable {MANIFEST_LATEST}");
                Ok(None)
            }
        },
        Err(ObjectError::NotFound) => Ok(None),
        Ok(other) => Err(format!("get {MANIFEST_LATEST} answered {other:?}")),
        Err(e) => Err(format!("get {MANIFEST_LATEST}: {e}")),
    }
}

/// Runs `op`, retrying retryable failures with a doubling backoff (10 ms
/// to 1 s), at most [`RESTORE_ATTEMPTS_MAX`] times.
async fn execute_retrying(s3: &S3Client, op: ObjectOp, timeout: Duration) -> ObjectResult {
    let mut backoff = Duration::from_millis(10);
    let mut attempt = 1;
    loop {
        match s3.execute(op.clone(), timeout).await {
            Err(ObjectError::Retryable(why)) if attempt < RESTORE_ATTEMPTS_MAX => {
                tracing::debug!(%why, attempt, key = op.key(), "restore: retrying");
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(pairs: impl IntoIterator<Item = (String, String)>) -> MemEngine {
        let engine = MemEngine::new();
        let mut batch = WriteBatch::default();
        for (k, v) in pairs {
            batch.put(k.into_bytes(), v.into_bytes());
        }
        engine.write(batch).expect("in memory");
        engine
    }

    fn pairs(view: &impl KvRead) -> Vec<(Vec<u8>, Vec<u8>)> {
        view.scan(b"", None)
            .map(|i| i.expect("in memory"))
            .collect()
    }

    /// A checkpoint loads back to exactly the engine it was taken of.
    #[test]
    fn take_then_load_round_trips() {
        let e = engine((0..500).map(|i| (format!("k{i:04}"), format!("v{i}"))));
        let files = take(&e);
        let ssts = files.files().keys().filter(|n| n.ends_with(".sst")).count();
        assert!(ssts > 5, "500 pairs make several SSTs, got {ssts}");
        let loaded = load(files.files()).expect("intact");
        assert_eq!(pairs(&loaded), pairs(&e));
        for f in files.local_files() {
            assert_eq!(f.sha256.len(), 64);
            assert_eq!(
                f.size_bytes,
                files.get(&f.name).expect("listed").len() as u64
            );
        }
    }

    /// Changing one pair changes one SST; the others keep their names and
    /// bytes (so the upload reuses them) — and the meta file changes.
    #[test]
    fn unchanged_chunks_are_byte_identical() {
        let before = engine((0..500).map(|i| (format!("k{i:04}"), format!("v{i}"))));
        let after = engine((0..500).map(|i| {
            let v = if i == 250 {
                "changed".into()
            } else {
                format!("v{i}")
            };
            (format!("k{i:04}"), v)
        }));
        let (a, b) = (take(&before), take(&after));
        let names = |f: &CheckpointFiles| -> std::collections::BTreeSet<String> {
            f.files()
                .keys()
                .filter(|n| n.ends_with(".sst"))
                .cloned()
                .collect()
        };
        let (na, nb) = (names(&a), names(&b));
        assert_eq!(na.difference(&nb).count(), 1, "one SST replaced");
        assert_eq!(nb.difference(&na).count(), 1, "by one new SST");
        assert_ne!(a.get(META_FILE), b.get(META_FILE));
    }

    /// Damage is found: a missing SST, an unlisted SST, a cut SST, keys out
    /// of order, a meta file that is not ours.
    #[test]
    fn load_refuses_damaged_folders() {
        let e = engine((0..200).map(|i| (format!("k{i:04}"), format!("v{i}"))));
        let files = take(&e).files().clone();
        let sst = files
            .keys()
            .find(|n| n.ends_with(".sst"))
            .expect("an SST")
            .clone();

        let mut missing = files.clone();
        missing.remove(&sst);
        assert!(load(&missing).is_err());

        let mut extra = files.clone();
        extra.insert("0000000000000000.sst".into(), Bytes::from_static(SST_MAGIC));
        assert!(load(&extra).is_err());

        let mut cut = files.clone();
        let body = cut[&sst].slice(..cut[&sst].len() - 1);
        cut.insert(sst.clone(), body);
        assert!(load(&cut).is_err());

        let mut bad_meta = files.clone();
        bad_meta.insert(META_FILE.into(), Bytes::from_static(b"RocksDB MANIFEST\n"));
        assert!(load(&bad_meta).is_err());

        let mut reordered = files;
        let meta = std::str::from_utf8(&reordered[META_FILE])
            .expect("utf-8")
            .to_owned();
        let mut lines: Vec<&str> = meta.lines().collect();
        lines[1..].reverse();
        reordered.insert(META_FILE.into(), Bytes::from(lines.join("\n")));
        assert!(load(&reordered).is_err());
    }
}
