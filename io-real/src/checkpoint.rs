//! Checkpoints on disk and in the bucket: taking one for the core's upload
//! (`t4_core::node::checkpoint`), and restoring one into an empty data
//! directory (at start-up, and for `t4 restore checkpoint`).
//!
//! # Local folders
//!
//! A checkpoint being uploaded lives in `<data dir>/checkpoints/<term>-<index>/`
//! (a RocksDB checkpoint: SSTs hard-linked, meta files copied). The folder
//! is deleted when the core says so ([`t4_core::Action::DropCheckpoint`]),
//! and every folder left by a crash is deleted when the node opens.
//!
//! # Restoring
//!
//! [`restore`] lists `checkpoint/`, reads `manifest/latest` and lets core's
//! [`CheckpointChoice`] pick the newest candidate. For each candidate it
//! downloads every file into a temporary folder next to the target,
//! checking each one's size and sha256 against the manifest (core's
//! [`verify_file`]; file names were already validated against path
//! traversal by the manifest's decoder), then opens the folder as an engine
//! and checks that it is at the manifest's index. Any damage moves on to
//! the next older candidate with a warning. Only a complete, verified
//! folder is renamed into place, so a failed restore leaves the target
//! absent. Transient store errors are retried by the store itself
//! ([`crate::object::Retrying`]); one that persists fails the restore
//! (it says nothing about the checkpoint's integrity).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use t4_core::bucket::checkpoint::LocalFile;
use t4_core::bucket::layout::{CHECKPOINT_PREFIX, MANIFEST_LATEST};
use t4_core::bucket::manifest::{CheckpointManifest, LatestPointer};
use t4_core::bucket::recovery::{
    verify_file, CheckpointCandidate, CheckpointChoice, CheckpointDamage, Fallback,
};
use t4_core::object::{
    ObjectError, ObjectOp, ObjectReply, ObjectResult, PutCondition, LIST_KEYS_MAX,
};
use t4_core::{Index, Term};

use crate::engine::{RocksEngine, RocksOptions};
use crate::object::ObjectStore;

/// The folder holding checkpoints being uploaded, under a data directory.
#[must_use]
pub fn local_root(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoints")
}

/// The local folder of the checkpoint `(term, index)`.
#[must_use]
pub fn local_dir(root: &Path, term: Term, index: Index) -> PathBuf {
    root.join(format!("{}-{}", term.0, index.0))
}

/// Makes the engine checkpoint for `(term, index)` (the engine must be at
/// that index: call before the node sees any other input). A folder left
/// from an earlier attempt is replaced.
///
/// # Errors
/// The folder cannot be made or RocksDB refuses.
pub fn take(engine: &RocksEngine, dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    engine.checkpoint(dir).map_err(|e| e.to_string())
}

/// Every file of a checkpoint folder with its size and sha256, by name.
///
/// # Errors
/// A file cannot be read, or the folder holds something but plain files.
pub fn hash_folder(dir: &Path) -> Result<Vec<LocalFile>, String> {
    let read = |e: std::io::Error| format!("reading {}: {e}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let path = entry.path();
        if !entry.file_type().map_err(read)?.is_file() {
            return Err(format!("{} is not a plain file", path.display()));
        }
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| format!("file name {n:?} is not UTF-8"))?;
        let (size_bytes, sha256) = hash_file(&path)?;
        files.push(LocalFile {
            name,
            size_bytes,
            sha256,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Size and sha256 (lowercase hex) of a file, streamed.
///
/// # Errors
/// It cannot be read.
pub fn hash_file(path: &Path) -> Result<(u64, String), String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Uploads one file of a local checkpoint folder.
pub async fn upload_file(
    store: &dyn ObjectStore,
    dir: &Path,
    name: &str,
    key: String,
    condition: PutCondition,
) -> ObjectResult {
    let path = dir.join(name);
    let body = match tokio::fs::read(&path).await {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            return Err(ObjectError::Failed(format!(
                "reading {}: {e}",
                path.display()
            )))
        }
    };
    store
        .execute(ObjectOp::Put {
            key,
            body,
            condition,
        })
        .await
}

/// What [`restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The checkpoint restored.
    pub manifest: CheckpointManifest,
    /// Newer checkpoints that were damaged and skipped, with why (already
    /// logged as warnings).
    pub skipped: Vec<String>,
    /// Bytes downloaded for the one restored.
    pub bytes: u64,
}

/// Why [`restore`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store did not answer (after its retries): nothing was decided.
    #[error("object store: {0}")]
    Store(ObjectError),
    /// Local file trouble.
    #[error("{0}")]
    Local(String),
    /// `target` exists already.
    #[error("{0} exists already; refusing to overwrite it")]
    Exists(PathBuf),
    /// The named checkpoint cannot be used.
    #[error("checkpoint {key}: {damage}")]
    Damaged {
        /// Its manifest key.
        key: String,
        /// Why.
        damage: CheckpointDamage,
    },
}

/// Lists every checkpoint manifest key under `checkpoint/`.
///
/// # Errors
/// The store fails.
pub async fn list_manifest_keys(store: &dyn ObjectStore) -> Result<Vec<String>, ObjectError> {
    let mut keys = Vec::new();
    let mut start_after = None;
    loop {
        let reply = store
            .execute(ObjectOp::List {
                prefix: CHECKPOINT_PREFIX.to_owned(),
                start_after: start_after.clone(),
                max_keys: LIST_KEYS_MAX,
            })
            .await?;
        let ObjectReply::Listed { objects, truncated } = reply else {
            return Err(ObjectError::Failed(format!("list answered {reply:?}")));
        };
        start_after = objects.last().map(|o| o.key.clone());
        keys.extend(
            objects
                .into_iter()
                .map(|o| o.key)
                .filter(|k| t4_core::bucket::layout::parse_checkpoint_manifest_key(k).is_some()),
        );
        if !truncated || start_after.is_none() {
            return Ok(keys);
        }
    }
}

/// Reads `manifest/latest`; `None` if absent or unreadable (a warning is
/// logged: the listing still finds the checkpoints).
///
/// # Errors
/// The store fails.
pub async fn read_latest(store: &dyn ObjectStore) -> Result<Option<LatestPointer>, ObjectError> {
    match store
        .execute(ObjectOp::Get {
            key: MANIFEST_LATEST.to_owned(),
        })
        .await
    {
        Ok(ObjectReply::Got { body, .. }) => match LatestPointer::decode(&body) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable {MANIFEST_LATEST}");
                Ok(None)
            }
        },
        Err(ObjectError::NotFound) => Ok(None),
        Ok(other) => Err(ObjectError::Failed(format!("get answered {other:?}"))),
        Err(e) => Err(e),
    }
}

/// Restores the newest usable checkpoint into `engine_dir` (which must
/// not exist), falling back to older ones when the newest is damaged.
/// `only`: restore exactly this manifest key, no fallback.
///
/// Returns `None` when the bucket holds no checkpoint at all (or none
/// usable, and `only` is `None`): the caller starts from an empty engine
/// and the bucket's WAL.
///
/// # Errors
/// See [`RestoreError`].
pub async fn restore(
    store: &dyn ObjectStore,
    engine_dir: &Path,
    only: Option<&str>,
) -> Result<Option<Restored>, RestoreError> {
    if engine_dir.exists() {
        return Err(RestoreError::Exists(engine_dir.to_path_buf()));
    }
    let (keys, latest) = match only {
        Some(key) => (vec![key.to_owned()], None),
        None => (
            list_manifest_keys(store)
                .await
                .map_err(RestoreError::Store)?,
            read_latest(store).await.map_err(RestoreError::Store)?,
        ),
    };
    let mut choice = CheckpointChoice::new(&keys, latest.as_ref());
    let mut skipped = Vec::new();
    let tmp = temp_dir_for(engine_dir)?;
    loop {
        let Some(candidate) = choice.current().cloned() else {
            // A checkpoint collected while we restored it: a newer one
            // superseded it (`CheckpointChoice`). (Never with `only`: its
            // damage is an error at once.)
            if !choice.worth_relisting() {
                break;
            }
            let keys = list_manifest_keys(store)
                .await
                .map_err(RestoreError::Store)?;
            let latest = read_latest(store).await.map_err(RestoreError::Store)?;
            match choice.relisted(&keys, latest.as_ref()) {
                Some(next) => {
                    tracing::info!("a checkpoint vanished while it was restored: trying the bucket's newer ones");
                    choice = next;
                    continue;
                }
                None => break,
            }
        };
        let attempt = restore_one(store, &candidate, &tmp).await;
        match attempt {
            Ok((manifest, bytes)) => {
                std::fs::rename(&tmp, engine_dir).map_err(|e| {
                    RestoreError::Local(format!(
                        "renaming {} to {}: {e}",
                        tmp.display(),
                        engine_dir.display()
                    ))
                })?;
                sync_parent(engine_dir);
                return Ok(Some(Restored {
                    manifest,
                    skipped,
                    bytes,
                }));
            }
            Err(Attempt::Fatal(e)) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            Err(Attempt::Damaged(damage)) => {
                let _ = std::fs::remove_dir_all(&tmp);
                if only.is_some() {
                    return Err(RestoreError::Damaged {
                        key: candidate.manifest_key,
                        damage,
                    });
                }
                match choice.report_damaged(damage) {
                    Fallback::Next { warning, .. } => {
                        tracing::warn!(%warning, "checkpoint damaged");
                        skipped.push(warning);
                    }
                    Fallback::NoneLeft { warning } => {
                        tracing::error!(%warning, "no usable checkpoint");
                        skipped.push(warning);
                    }
                }
            }
        }
    }
    Ok(None)
}

enum Attempt {
    Damaged(CheckpointDamage),
    Fatal(RestoreError),
}

/// A fresh temporary folder next to `target` (same file system, so the
/// final rename is atomic).
fn temp_dir_for(target: &Path) -> Result<PathBuf, RestoreError> {
    let parent = target
        .parent()
        .ok_or_else(|| RestoreError::Local(format!("{} has no parent", target.display())))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| RestoreError::Local(format!("creating {}: {e}", parent.display())))?;
    let name = target
        .file_name()
        .map_or_else(|| "engine".into(), |n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(".{name}.restoring"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| RestoreError::Local(format!("removing {}: {e}", tmp.display())))?;
    }
    Ok(tmp)
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

async fn restore_one(
    store: &dyn ObjectStore,
    candidate: &CheckpointCandidate,
    tmp: &Path,
) -> Result<(CheckpointManifest, u64), Attempt> {
    let key = &candidate.manifest_key;
    let body = get(store, key).await?;
    let manifest = CheckpointManifest::decode(key, &body)
        .map_err(|e| Attempt::Damaged(CheckpointDamage::Manifest(e)))?;
    std::fs::create_dir_all(tmp).map_err(|e| {
        Attempt::Fatal(RestoreError::Local(format!(
            "creating {}: {e}",
            tmp.display()
        )))
    })?;
    let mut bytes = 0;
    for file in manifest.ssts.iter().chain(&manifest.meta_files) {
        let body = get(store, &file.key).await?;
        let sha = hex(&Sha256::digest(&body));
        verify_file(file, body.len() as u64, &sha).map_err(Attempt::Damaged)?;
        bytes += body.len() as u64;
        let path = tmp.join(&file.name);
        write_synced(&path, &body).map_err(|e| {
            Attempt::Fatal(RestoreError::Local(format!(
                "writing {}: {e}",
                path.display()
            )))
        })?;
    }
    // The files are intact; does the engine open them at the right index?
    let engine = RocksEngine::open_read_only(tmp, RocksOptions::default())
        .map_err(|e| Attempt::Damaged(CheckpointDamage::Unusable { why: e.to_string() }))?;
    let meta = t4_core::mvcc::read_meta(&engine)
        .map_err(|e| Attempt::Damaged(CheckpointDamage::Unusable { why: e.to_string() }))?;
    drop(engine);
    if meta.applied_index != manifest.index.0 {
        return Err(Attempt::Damaged(CheckpointDamage::Unusable {
            why: format!(
                "the engine is at index {}, the manifest says {}",
                meta.applied_index, manifest.index.0
            ),
        }));
    }
    Ok((manifest, bytes))
}

async fn get(store: &dyn ObjectStore, key: &str) -> Result<Bytes, Attempt> {
    match store
        .execute(ObjectOp::Get {
            key: key.to_owned(),
        })
        .await
    {
        Ok(ObjectReply::Got { body, .. }) => Ok(body),
        Err(ObjectError::NotFound) => Err(Attempt::Damaged(CheckpointDamage::Missing {
            key: key.to_owned(),
        })),
        Ok(other) => Err(Attempt::Fatal(RestoreError::Store(ObjectError::Failed(
            format!("get {key} answered {other:?}"),
        )))),
        Err(e) => Err(Attempt::Fatal(RestoreError::Store(e))),
    }
}

fn write_synced(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(body)?;
    f.sync_all()
}
