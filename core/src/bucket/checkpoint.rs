//! Uploading one checkpoint: which objects to write, in which order, and
//! what each answer means (ARCHITECTURE §3.10).
//!
//! Pure, like the rest of `bucket`: the driver took the engine checkpoint
//! (a folder of files at one applied index) and hashed its files; a
//! [`CheckpointUpload`] then hands out one [`UploadStep`] at a time and is
//! told each step's [`ObjectResult`]:
//!
//! 1. **List `sst/`** (every page): SSTs are stored by content, so one
//!    already there (from an earlier checkpoint or a branch) is not sent
//!    again.
//! 2. **Upload each missing SST** with `If-None-Match`. A 412 is settled by
//!    listing the key: there, the same content is under it (a lost answer
//!    or a concurrent uploader), which is what we wanted; absent, the put
//!    met a 409 from another conditional put on the key still in flight
//!    (perhaps our own earlier attempt, held by the store), which may yet
//!    fail: back off and put again. Taking that 409 for presence would
//!    write a manifest naming an SST the bucket does not hold.
//! 3. **Upload the meta files** (`MANIFEST-*`, `CURRENT`, `OPTIONS-*` …) to
//!    the checkpoint's own folder with a plain put: the folder is named by
//!    our term and index, which no other writer uses.
//! 4. **Create `manifest.json`** with `If-None-Match`, **last** among the
//!    checkpoint's objects: a listed manifest means a complete checkpoint.
//!    A 412 is settled by reading it back: our bytes (a lost answer) are
//!    success; other bytes cannot come from a correct writer (terms are
//!    unique) and abandon the checkpoint.
//! 5. **Move `manifest/latest`**: read it with its ETag; if
//!    [`may_replace`] says ours is newer, replace it with `If-Match` (or
//!    create it with `If-None-Match`); a 412 means someone moved it since
//!    we read it: read again. The check comes before the conditional write,
//!    so the pointer never goes backwards. A pointer that does not decode
//!    is replaced (with `If-Match` on its ETag) and reported as a warning.
//!
//! Retryable failures repeat the same step (the caller backs off); any
//! other failure abandons the checkpoint, which costs nothing but the
//! objects already written: GC removes a folder without a manifest once a
//! newer checkpoint exists. SSTs are written before anything references
//! them, and the manifest before the pointer, so a crash at any point leaves
//! the bucket restorable from the previous checkpoint.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;

use super::layout::{checkpoint_dir, MANIFEST_LATEST, SST_PREFIX};
use super::manifest::{may_replace, CheckpointManifest, FileRef, LatestPointer};
use crate::object::{
    ObjectError, ObjectOp, ObjectReply, ObjectResult, PutCondition, LIST_KEYS_MAX,
};
use crate::types::{Index, Revision, Term};

/// How often `manifest/latest` may change under us before we give up (each
/// time someone else moved it between our read and our write).
const LATEST_RACES_MAX: u32 = 8;

/// One file of the local checkpoint folder, as the driver found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    /// Its plain file name in the folder.
    pub name: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its sha256, 64 lowercase hex digits.
    pub sha256: String,
}

impl LocalFile {
    /// Whether it is an SST (stored by content under `sst/`); every other
    /// file is a meta file of this checkpoint.
    #[must_use]
    pub fn is_sst(&self) -> bool {
        self.name.ends_with(".sst")
    }
}

/// What the engine state of the checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPoint {
    /// The writer's term.
    pub term: Term,
    /// The applied index the engine is at.
    pub index: Index,
    /// The store's revision at `index`.
    pub revision: Revision,
    /// The compact revision at `index`.
    pub compact_revision: Revision,
}

/// What the caller must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadStep {
    /// Run this operation and report its result.
    Object(ObjectOp),
    /// Upload the local checkpoint file `name` to `key` with `condition`
    /// (the driver reads the bytes) and report the result.
    File {
        /// The file in the local checkpoint folder.
        name: String,
        /// Where it goes.
        key: String,
        /// The put's condition.
        condition: PutCondition,
    },
}

/// How an upload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The checkpoint is complete in the bucket; `latest_moved` says
    /// whether `manifest/latest` now points at it (`false` when a newer
    /// checkpoint was already there).
    Done {
        /// The manifest written.
        manifest: CheckpointManifest,
        /// Whether the pointer was moved to it.
        latest_moved: bool,
        /// SSTs sent (the others were in the bucket already).
        ssts_uploaded: usize,
        /// Bytes of files sent.
        bytes_uploaded: u64,
    },
    /// The checkpoint was abandoned; the reason is for the log.
    Abandoned(String),
}

/// What [`CheckpointUpload::on_result`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Do this next.
    Next(UploadStep),
    /// The step failed in a way worth retrying: back off, then send this
    /// (the same step again, or the check that settles it).
    Retry(UploadStep),
    /// Finished.
    Finished(UploadOutcome),
}

#[derive(Clone, Debug)]
enum Phase {
    ListSsts,
    Files,
    /// An SST's put met a 412/409: is the SST there?
    VerifySst,
    CreateManifest,
    VerifyManifest,
    ReadLatest,
    WriteLatest,
}

/// One checkpoint's upload; see the module docs.
#[derive(Clone, Debug)]
pub struct CheckpointUpload {
    manifest: CheckpointManifest,
    manifest_body: Bytes,
    /// SSTs then meta files, each with its size.
    files: Vec<(FileRef, bool)>,
    /// Files still to send (indexes into `files`), front first.
    to_send: VecDeque<usize>,
    /// SST keys found in the bucket.
    present: BTreeSet<String>,
    phase: Phase,
    step: UploadStep,
    warnings: Vec<String>,
    latest_races: u32,
    ssts_uploaded: usize,
    bytes_uploaded: u64,
}

impl CheckpointUpload {
    /// Starts the upload of the checkpoint `point` made of `files`;
    /// returns it and the first step.
    ///
    /// # Errors
    /// A file name that is not a plain name, a bad hash, or the same name
    /// twice: the manifest would be refused on restore, so it is never
    /// written.
    pub fn start(
        point: CheckpointPoint,
        files: &[LocalFile],
        created_unix_ms: u64,
    ) -> Result<(CheckpointUpload, UploadStep), String> {
        let mut ssts = Vec::new();
        let mut meta_files = Vec::new();
        for f in files {
            super::manifest::check_file_name(&f.name)
                .map_err(|why| format!("checkpoint file {:?}: {why}", f.name))?;
            if !super::manifest::is_sha256_hex(&f.sha256) {
                return Err(format!("checkpoint file {:?}: bad sha256", f.name));
            }
            if f.is_sst() {
                ssts.push(FileRef::sst(&f.name, f.size_bytes, &f.sha256));
            } else {
                meta_files.push(FileRef::meta(
                    point.term,
                    point.index,
                    &f.name,
                    f.size_bytes,
                    &f.sha256,
                ));
            }
        }
        let manifest = CheckpointManifest {
            term: point.term,
            index: point.index,
            revision: point.revision,
            compact_revision: point.compact_revision,
            ssts,
            meta_files,
            created_unix_ms,
        };
        manifest
            .validate(&manifest.key())
            .map_err(|e| format!("checkpoint manifest: {e}"))?;
        let files: Vec<(FileRef, bool)> = manifest
            .ssts
            .iter()
            .map(|f| (f.clone(), true))
            .chain(manifest.meta_files.iter().map(|f| (f.clone(), false)))
            .collect();
        let step = list_step(None);
        let upload = CheckpointUpload {
            manifest_body: manifest.encode(),
            manifest,
            files,
            to_send: VecDeque::new(),
            present: BTreeSet::new(),
            phase: Phase::ListSsts,
            step: step.clone(),
            warnings: Vec::new(),
            latest_races: 0,
            ssts_uploaded: 0,
            bytes_uploaded: 0,
        };
        Ok((upload, step))
    }

    /// The manifest this upload writes.
    #[must_use]
    pub fn manifest(&self) -> &CheckpointManifest {
        &self.manifest
    }

    /// Things worth a warning in the log, gathered so far.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The result of the step last handed out.
    pub fn on_result(&mut self, result: ObjectResult) -> Progress {
        if let Err(ObjectError::Retryable(_)) = &result {
            return Progress::Retry(self.step.clone());
        }
        match (self.phase.clone(), result) {
            (Phase::ListSsts, Ok(ObjectReply::Listed { objects, truncated })) => {
                let last_key = objects.last().map(|o| o.key.clone());
                self.present.extend(objects.into_iter().map(|o| o.key));
                if truncated && last_key.is_some() {
                    return self.next(list_step(last_key));
                }
                self.to_send = (0..self.files.len())
                    .filter(|&i| {
                        let (file, is_sst) = &self.files[i];
                        !is_sst || !self.present.contains(&file.key)
                    })
                    .collect();
                self.phase = Phase::Files;
                self.next_file()
            }
            (Phase::Files, Ok(ObjectReply::Put { .. })) => self.file_sent(),
            (Phase::Files, Err(ObjectError::PreconditionFailed)) => {
                // Only an SST's If-None-Match: settle it by listing the key
                // (a retry counts as a failure of the step, so a 409 that
                // never clears ends in abandoning the checkpoint).
                let i = *self.to_send.front().expect("a file was being sent");
                let prefix = self.files[i].0.key.clone();
                self.phase = Phase::VerifySst;
                self.step = UploadStep::Object(ObjectOp::List {
                    prefix,
                    start_after: None,
                    max_keys: 1,
                });
                Progress::Retry(self.step.clone())
            }
            (Phase::VerifySst, Ok(ObjectReply::Listed { objects, .. })) => {
                let i = *self.to_send.front().expect("a file was being sent");
                self.phase = Phase::Files;
                if objects.iter().any(|o| o.key == self.files[i].0.key) {
                    self.file_sent()
                } else {
                    let Progress::Next(put) = self.next_file() else {
                        unreachable!("a file is left to send")
                    };
                    Progress::Retry(put)
                }
            }
            (Phase::CreateManifest, Ok(ObjectReply::Put { .. })) => self.read_latest(),
            (Phase::CreateManifest, Err(ObjectError::PreconditionFailed)) => {
                self.phase = Phase::VerifyManifest;
                self.next(UploadStep::Object(ObjectOp::Get {
                    key: self.manifest.key(),
                }))
            }
            (Phase::VerifyManifest, Ok(ObjectReply::Got { body, .. })) => {
                if body == self.manifest_body {
                    self.read_latest()
                } else {
                    self.abandon(format!(
                        "{} exists with other contents: another writer used our term",
                        self.manifest.key()
                    ))
                }
            }
            (Phase::VerifyManifest, Err(ObjectError::NotFound)) => {
                // The 412 came from a put that has since vanished (GC of
                // an unfinished folder?): create it again.
                self.create_manifest()
            }
            (Phase::ReadLatest, Ok(ObjectReply::Got { body, etag })) => {
                let ours = LatestPointer::to_checkpoint(self.manifest.term, self.manifest.index);
                match LatestPointer::decode(&body) {
                    // Ours already (our own put whose answer was lost).
                    Ok(current) if current == ours => self.finish(true),
                    Ok(current) if !may_replace(Some(&current), &ours) => self.finish(false),
                    Ok(_) => self.write_latest(PutCondition::IfMatch(etag)),
                    Err(e) => {
                        self.warnings
                            .push(format!("replacing an unreadable {MANIFEST_LATEST}: {e}"));
                        self.write_latest(PutCondition::IfMatch(etag))
                    }
                }
            }
            (Phase::ReadLatest, Err(ObjectError::NotFound)) => {
                self.write_latest(PutCondition::IfAbsent)
            }
            (Phase::WriteLatest, Ok(ObjectReply::Put { .. })) => self.finish(true),
            (Phase::WriteLatest, Err(ObjectError::PreconditionFailed | ObjectError::NotFound)) => {
                self.latest_races += 1;
                if self.latest_races > LATEST_RACES_MAX {
                    return self.abandon(format!(
                        "{MANIFEST_LATEST} changed under us {LATEST_RACES_MAX} times"
                    ));
                }
                // Read it again after a pause: besides another pointer, a
                // 412 here is AWS's 409 (a conditional put overlapping
                // ours, or our own earlier attempt landing late), which
                // retrying at once tends to meet again.
                let Progress::Next(read) = self.read_latest() else {
                    unreachable!("read_latest sends a step")
                };
                Progress::Retry(read)
            }
            (phase, Err(e)) => self.abandon(format!("{phase:?}: {e}")),
            (phase, Ok(reply)) => self.abandon(format!("{phase:?}: unexpected answer {reply:?}")),
        }
    }

    /// The file at the front of the queue is in the bucket.
    fn file_sent(&mut self) -> Progress {
        let i = self.to_send.pop_front().expect("a file was being sent");
        let (file, is_sst) = &self.files[i];
        self.bytes_uploaded += file.size_bytes;
        self.ssts_uploaded += usize::from(*is_sst);
        self.next_file()
    }

    fn next(&mut self, step: UploadStep) -> Progress {
        self.step = step.clone();
        Progress::Next(step)
    }

    fn next_file(&mut self) -> Progress {
        let Some(&i) = self.to_send.front() else {
            return self.create_manifest();
        };
        let (file, is_sst) = &self.files[i];
        let step = UploadStep::File {
            name: file.name.clone(),
            key: file.key.clone(),
            condition: if *is_sst {
                PutCondition::IfAbsent
            } else {
                PutCondition::None
            },
        };
        self.next(step)
    }

    fn create_manifest(&mut self) -> Progress {
        self.phase = Phase::CreateManifest;
        self.next(UploadStep::Object(ObjectOp::Put {
            key: self.manifest.key(),
            body: self.manifest_body.clone(),
            condition: PutCondition::IfAbsent,
        }))
    }

    fn read_latest(&mut self) -> Progress {
        self.phase = Phase::ReadLatest;
        self.next(UploadStep::Object(ObjectOp::Get {
            key: MANIFEST_LATEST.to_owned(),
        }))
    }

    fn write_latest(&mut self, condition: PutCondition) -> Progress {
        self.phase = Phase::WriteLatest;
        let ours = LatestPointer::to_checkpoint(self.manifest.term, self.manifest.index);
        self.next(UploadStep::Object(ObjectOp::Put {
            key: MANIFEST_LATEST.to_owned(),
            body: ours.encode(),
            condition,
        }))
    }

    fn finish(&mut self, latest_moved: bool) -> Progress {
        Progress::Finished(UploadOutcome::Done {
            manifest: self.manifest.clone(),
            latest_moved,
            ssts_uploaded: self.ssts_uploaded,
            bytes_uploaded: self.bytes_uploaded,
        })
    }

    fn abandon(&mut self, why: String) -> Progress {
        Progress::Finished(UploadOutcome::Abandoned(format!(
            "checkpoint {}: {why}",
            checkpoint_dir(self.manifest.term, self.manifest.index)
        )))
    }
}

fn list_step(start_after: Option<String>) -> UploadStep {
    UploadStep::Object(ObjectOp::List {
        prefix: SST_PREFIX.to_owned(),
        start_after,
        max_keys: LIST_KEYS_MAX,
    })
}

#[cfg(test)]
#[path = "checkpoint/tests.rs"]
mod tests;
