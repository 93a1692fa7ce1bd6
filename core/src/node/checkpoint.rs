//! Bucket mode, checkpoints: when to take one, and driving its upload.
//!
//! A checkpoint is due once the node serves, has applied entries since the
//! last one, and either [`BucketConfig::checkpoint_every_entries`] entries
//! were applied or [`BucketConfig::checkpoint_interval_ns`] passed since the
//! last one (or since serving began). Then:
//!
//! 1. [`Action::TakeCheckpoint`] right after an apply: the driver makes the
//!    engine checkpoint **before it hands the node any other input**, so
//!    the checkpoint holds exactly the state at the index named (RocksDB:
//!    hard links after a memtable flush). It hashes the files (in the
//!    background if it likes) and answers [`IoDone::CheckpointTaken`].
//! 2. The upload ([`crate::bucket::checkpoint`]): each step is an
//!    [`Action::Object`] or an [`Action::UploadCheckpointFile`], answered
//!    by [`IoDone::Object`]. Retryable failures back off as uploads do and
//!    give up after [`STEP_FAILURES_MAX`] attempts of one step.
//! 3. [`Action::DropCheckpoint`] frees the local folder, whatever the
//!    outcome.
//! 4. After a completed checkpoint, with [`BucketConfig::gc_keep`] set, a
//!    GC pass ([`crate::bucket::gc_run`]) keeps the newest `gc_keep`
//!    checkpoints and deletes what they no longer need. It runs in the
//!    checkpoint's slot, so this node never checkpoints and collects at the
//!    same time (a checkpoint that found an SST present must not see GC
//!    delete it before its manifest lands). A failed pass is logged and
//!    waits for the next checkpoint.
//!
//! Writes keep flowing the whole time: the checkpoint shares nothing with
//! the commit pipeline but the object store. Only one checkpoint runs at a
//! time. Every entry at or below the checkpoint's index is in the bucket
//! before its manifest is written (sync mode applies nothing before its
//! upload; async mode holds the upload until the bucket caught up), so a
//! manifest never names state the bucket's WAL does not back.
//!
//! A node that is fenced or failed stops where it is: its results are
//! dropped and nothing more is written. An abandoned checkpoint is tried
//! again no sooner than [`RETRY_AFTER_ABANDON_NS`] later.

use super::{Action, Health, Node};
use crate::bucket::checkpoint::{
    CheckpointPoint, CheckpointUpload, LocalFile, Progress, UploadOutcome, UploadStep,
};
use crate::bucket::gc_run::{GcOutcome, GcProgress, GcRun};
use crate::bucket::layout::{self, parse_checkpoint_manifest_key};
use crate::engine::KvEngine;
use crate::object::{ObjectOp, ObjectResult};
use crate::types::{Index, IoId, Term, Time};

/// Attempts of one upload step before the checkpoint is abandoned.
pub const STEP_FAILURES_MAX: u32 = 20;

/// Pause after an abandoned checkpoint before the next one may start.
pub const RETRY_AFTER_ABANDON_NS: u64 = 30_000_000_000;

/// What the driver reports for [`Action::TakeCheckpoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenCheckpoint {
    /// Every file of the local checkpoint folder.
    pub files: Vec<LocalFile>,
    /// Wall-clock time for the manifest (data for operators only).
    pub created_unix_ms: u64,
}

/// The checkpoint in progress.
#[derive(Debug)]
pub(super) struct Checkpointing {
    point: CheckpointPoint,
    /// The operation in flight (`None` while backing off).
    io: Option<IoId>,
    job: Job,
    /// The step to send (again) once the backoff ends.
    step: Option<UploadStep>,
    retry_at: Option<Time>,
    failures: u32,
    /// `step` waits for the read lease (see `send_checkpoint_step`).
    awaiting_lease: bool,
}

#[derive(Debug)]
enum Job {
    /// Waiting for the driver's `CheckpointTaken`.
    Taking,
    Upload(Box<CheckpointUpload>),
    /// The GC pass after a completed checkpoint (its folder is dropped).
    Gc(Box<GcRun>),
}

/// Progress of checkpoints over the node's life (for status and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints abandoned.
    pub abandoned: u64,
    /// The newest checkpoint this node completed.
    pub last: Option<(Term, Index)>,
    /// Why the last abandoned checkpoint was abandoned.
    pub last_abandoned: Option<String>,
    /// GC passes finished (with or without an error).
    pub gc_passes: u64,
    /// Objects the GC passes deleted.
    pub gc_deleted: u64,
    /// Why the last GC pass stopped early, if it did.
    pub gc_last_error: Option<String>,
}

impl<E: KvEngine> Node<E> {
    /// Checkpoint counters.
    #[must_use]
    pub fn checkpoint_stats(&self) -> &CheckpointStats {
        &self.checkpoint_stats
    }

    /// Whether a checkpoint is being taken or uploaded.
    #[must_use]
    pub fn is_checkpointing(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// Starts a checkpoint if one is due (see the module docs).
    pub(super) fn maybe_checkpoint(&mut self, now: Time) {
        let forced = self.checkpoint_forced && self.may_checkpoint();
        if forced
            || self.checkpoint_due_at().is_some_and(|at| at <= now)
            || self.checkpoint_entries_due(now)
        {
            self.checkpoint_forced = false;
            self.start_checkpoint();
        }
    }

    /// The checkpoint settings: bucket mode's, or in cluster mode the
    /// bucket tier's (`None`: no checkpoints).
    fn checkpoint_config(&self) -> Option<&super::BucketConfig> {
        self.config
            .bucket
            .as_ref()
            .or_else(|| self.cluster.as_deref().and_then(|c| c.bucket_tier()))
    }

    fn may_checkpoint(&self) -> bool {
        self.checkpoint_config().is_some()
            // Cluster mode: only the serving leader.
            && self.cluster.as_deref().is_none_or(|c| c.is_serving_leader())
            && matches!(self.health, Health::Serving)
            && self.startup.is_none()
            && self.checkpoint.is_none()
            && self.store.meta().applied_index > self.checkpointed.0 .0
    }

    fn checkpoint_entries_due(&self, now: Time) -> bool {
        let Some(b) = self.checkpoint_config() else {
            return false;
        };
        b.checkpoint_every_entries > 0
            && self.may_checkpoint()
            && self.store.meta().applied_index - self.checkpointed.0 .0
                >= b.checkpoint_every_entries
            && self.checkpoint_not_before.is_none_or(|nb| nb <= now)
    }

    /// When the interval makes a checkpoint due (the timer's deadline).
    pub(super) fn checkpoint_due_at(&self) -> Option<Time> {
        let b = self.checkpoint_config()?;
        if b.checkpoint_interval_ns == 0 || !self.may_checkpoint() {
            return None;
        }
        let due = self.checkpointed.1.plus_nanos(b.checkpoint_interval_ns);
        Some(self.checkpoint_not_before.map_or(due, |nb| due.max(nb)))
    }

    /// When the checkpoint's own timer is needed: its backoff or its
    /// interval.
    pub(super) fn checkpoint_timer(&self) -> Option<Time> {
        let retry = self.checkpoint.as_ref().and_then(|c| c.retry_at);
        [retry, self.checkpoint_due_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The point the engine is at now.
    fn engine_point(&self, term: Term) -> CheckpointPoint {
        let meta = self.store.meta();
        CheckpointPoint {
            term,
            index: Index(meta.applied_index),
            revision: crate::types::Revision(meta.current_revision),
            // The store says -1 before any compaction; the manifest, 0.
            compact_revision: crate::types::Revision(meta.compact_revision.max(0)),
        }
    }

    fn start_checkpoint(&mut self) {
        let io = self.io_id();
        let point = self.engine_point(self.term);
        self.checkpoint = Some(Checkpointing {
            point,
            io: Some(io),
            job: Job::Taking,
            step: None,
            retry_at: None,
            failures: 0,
            awaiting_lease: false,
        });
        self.actions.push_back(Action::TakeCheckpoint {
            io,
            term: point.term,
            index: point.index,
        });
    }

    /// The driver polled the `TakeCheckpoint` of `io` and takes the
    /// checkpoint before its next input: the checkpoint is of the engine
    /// as it is now. Entries applied since the checkpoint was started (a
    /// driver feeds the node inputs while it works through the actions
    /// queued before this one) move the point forward, so the folder, the
    /// manifest and the index the WAL must cover all name what the engine
    /// holds.
    pub(super) fn checkpoint_polled(&mut self, io: IoId) -> Option<Action> {
        let c = self
            .checkpoint
            .as_ref()
            // Abandoned before the driver got to it: nothing to take.
            .filter(|c| c.io == Some(io) && matches!(c.job, Job::Taking))?;
        let point = self.engine_point(c.point.term);
        self.checkpoint.as_mut().expect("checked").point = point;
        tracing::info!(
            term = point.term.0,
            index = point.index.0,
            "taking a checkpoint"
        );
        Some(Action::TakeCheckpoint {
            io,
            term: point.term,
            index: point.index,
        })
    }

    pub(super) fn is_checkpoint_io(&self, io: IoId) -> bool {
        self.checkpoint.as_ref().is_some_and(|c| c.io == Some(io))
    }

    /// The driver took (or failed to take) the local checkpoint.
    pub(super) fn on_checkpoint_taken(
        &mut self,
        now: Time,
        io: IoId,
        result: Result<TakenCheckpoint, String>,
    ) {
        if !self.is_checkpoint_io(io) {
            tracing::debug!(io = io.0, "dropping a stale checkpoint completion");
            return;
        }
        let point = self.checkpoint.as_ref().expect("matched").point;
        let started = result
            .and_then(|taken| CheckpointUpload::start(point, &taken.files, taken.created_unix_ms));
        match started {
            Ok((upload, step)) => {
                let c = self.checkpoint.as_mut().expect("matched");
                c.job = Job::Upload(Box::new(upload));
                self.send_checkpoint_step(now, step);
            }
            Err(why) => self.end_checkpoint(now, UploadOutcome::Abandoned(why)),
        }
    }

    /// An object operation of the upload completed.
    pub(super) fn on_checkpoint_io(&mut self, now: Time, result: ObjectResult) {
        if !matches!(self.health, Health::Serving) {
            // Fenced or failed: write nothing more.
            self.checkpoint_dropped();
            return;
        }
        let c = self.checkpoint.as_mut().expect("a checkpoint is running");
        c.io = None;
        let progress = match &mut c.job {
            Job::Taking => panic!("an object result while taking the local checkpoint"),
            Job::Upload(upload) => {
                let progress = upload.on_result(result);
                for warning in upload.take_warnings() {
                    tracing::warn!(%warning, "checkpoint");
                }
                progress
            }
            Job::Gc(gc) => match gc.on_result(result) {
                GcProgress::Next(op) => Progress::Next(UploadStep::Object(op)),
                GcProgress::Retry(op) => Progress::Retry(UploadStep::Object(op)),
                GcProgress::Finished(outcome) => return self.end_gc(now, outcome),
            },
        };
        let c = self.checkpoint.as_mut().expect("a checkpoint is running");
        match progress {
            Progress::Next(step) => {
                c.failures = 0;
                self.send_checkpoint_step(now, step);
            }
            Progress::Retry(step) => {
                c.failures += 1;
                if c.failures >= STEP_FAILURES_MAX {
                    let why = format!("gave up after {} attempts of {step:?}", c.failures);
                    if matches!(c.job, Job::Gc(_)) {
                        return self.end_gc(
                            now,
                            GcOutcome {
                                plan: None,
                                deleted: 0,
                                error: Some(why),
                                warnings: Vec::new(),
                            },
                        );
                    }
                    return self.end_checkpoint(now, UploadOutcome::Abandoned(why));
                }
                let failures = c.failures;
                let backoff = self
                    .checkpoint_config()
                    .expect("checkpoints are configured")
                    .backoff_ns(failures);
                let c = self.checkpoint.as_mut().expect("a checkpoint is running");
                c.retry_at = Some(now.plus_nanos(backoff));
                c.step = Some(step);
            }
            Progress::Finished(outcome) => self.end_checkpoint(now, outcome),
        }
    }

    /// Timer: resends a step whose backoff ended.
    pub(super) fn retry_checkpoint_if_due(&mut self, now: Time) {
        let Some(c) = self.checkpoint.as_mut() else {
            return;
        };
        if c.retry_at.is_some_and(|at| at <= now) {
            c.retry_at = None;
            let step = c.step.take().expect("a step waits for its retry");
            if matches!(self.health, Health::Serving) {
                self.send_checkpoint_step(now, step);
            } else {
                self.checkpoint_dropped();
            }
        }
    }

    /// Sends `step`; one that deletes or publishes (a GC deletion, a
    /// checkpoint manifest, `manifest/latest`) first needs the read lease:
    /// a writer that was taken over while paused must not delete what the
    /// new writer's checkpoints use, nor publish a checkpoint whose files
    /// GC may have taken (the simulator's GC race found both). Without a
    /// valid lease the step waits for a lock read (`read_lease`).
    fn send_checkpoint_step(&mut self, now: Time, step: UploadStep) {
        if let Some(c) = self.cluster.as_deref() {
            // Cluster mode: the leader's read lease, which no other leader
            // can overlap. Without it, wait a heartbeat interval.
            let leading = c.is_serving_leader();
            let retry_in = c.heartbeat_interval_ns();
            let lease = self
                .cluster_read_fast_until()
                .is_some_and(|until| now < until);
            if !leading {
                return self.checkpoint_dropped();
            }
            if changes_what_restores_read(&step) && !lease {
                let c = self.checkpoint.as_mut().expect("a checkpoint is running");
                c.step = Some(step);
                c.retry_at = Some(now.plus_nanos(retry_in));
                return;
            }
        } else if changes_what_restores_read(&step) && !self.read_lease_holds(now) {
            let c = self.checkpoint.as_mut().expect("a checkpoint is running");
            c.step = Some(step);
            c.awaiting_lease = true;
            self.check_lock(now);
            return;
        }
        let io = self.io_id();
        let term = self.term;
        let c = self.checkpoint.as_mut().expect("a checkpoint is running");
        c.io = Some(io);
        let action = match step {
            UploadStep::Object(op) => Action::Object { io, term, op },
            UploadStep::File {
                name,
                key,
                condition,
            } => Action::UploadCheckpointFile {
                io,
                term: c.point.term,
                index: c.point.index,
                name,
                key,
                condition,
            },
        };
        self.actions.push_back(action);
    }

    fn end_checkpoint(&mut self, now: Time, outcome: UploadOutcome) {
        let c = self.checkpoint.take().expect("a checkpoint is running");
        let point = c.point;
        self.actions.push_back(Action::DropCheckpoint {
            term: point.term,
            index: point.index,
        });
        let gc_keep = self.checkpoint_config().map_or(0, |b| b.gc_keep);
        match outcome {
            UploadOutcome::Done {
                latest_moved,
                ssts_uploaded,
                bytes_uploaded,
                manifest,
            } => {
                tracing::info!(
                    term = point.term.0,
                    index = point.index.0,
                    revision = manifest.revision.0,
                    latest_moved,
                    ssts_uploaded,
                    bytes_uploaded,
                    "checkpoint uploaded"
                );
                self.checkpointed = (point.index, now);
                self.checkpoint_not_before = None;
                self.checkpoint_stats.completed += 1;
                self.checkpoint_stats.last = Some((point.term, point.index));
                if gc_keep > 0 {
                    let (gc, op) = GcRun::start(gc_keep, false);
                    self.checkpoint = Some(Checkpointing {
                        point,
                        io: None,
                        job: Job::Gc(Box::new(gc)),
                        step: None,
                        retry_at: None,
                        failures: 0,
                        awaiting_lease: false,
                    });
                    self.send_checkpoint_step(now, UploadStep::Object(op));
                    return;
                }
            }
            UploadOutcome::Abandoned(why) => {
                tracing::warn!(why = %why, "checkpoint abandoned; the previous one stays the newest");
                self.checkpoint_not_before = Some(now.plus_nanos(RETRY_AFTER_ABANDON_NS));
                self.checkpoint_stats.abandoned += 1;
                self.checkpoint_stats.last_abandoned = Some(why);
            }
        }
        // Entries applied during the upload may have made the next one due.
        self.maybe_checkpoint(now);
    }

    fn end_gc(&mut self, now: Time, outcome: GcOutcome) {
        self.checkpoint = None;
        let stats = &mut self.checkpoint_stats;
        stats.gc_passes += 1;
        stats.gc_deleted += outcome.deleted as u64;
        stats.gc_last_error.clone_from(&outcome.error);
        for warning in outcome
            .warnings
            .iter()
            .chain(outcome.plan.iter().flat_map(|p| &p.warnings))
        {
            tracing::warn!(%warning, "bucket GC");
        }
        match (&outcome.error, &outcome.plan) {
            (Some(why), _) => {
                tracing::warn!(why = %why, deleted = outcome.deleted, "bucket GC stopped early")
            }
            (None, Some(plan)) => tracing::info!(
                deleted = outcome.deleted,
                deleted_bytes = plan.deleted_bytes,
                kept_checkpoints = plan.kept_checkpoints.len(),
                "bucket GC pass done"
            ),
            (None, None) => {}
        }
        // Entries applied during the pass may have made the next one due.
        self.maybe_checkpoint(now);
    }

    /// Whether a checkpoint step waits for the read lease.
    pub(super) fn checkpoint_awaits_lease(&self) -> bool {
        self.checkpoint.as_ref().is_some_and(|c| c.awaiting_lease)
    }

    /// A lock read settled the lease: the waiting step goes on (`ours`) or
    /// the checkpoint stops (another writer holds the bucket).
    pub(super) fn checkpoint_lease_settled(&mut self, now: Time, ours: bool) {
        if !self.checkpoint_awaits_lease() {
            return;
        }
        if !ours || !matches!(self.health, Health::Serving) {
            return self.checkpoint_dropped();
        }
        let c = self.checkpoint.as_mut().expect("awaiting");
        c.awaiting_lease = false;
        let step = c.step.take().expect("a step waits for the lease");
        self.send_checkpoint_step(now, step);
    }

    /// The node stopped serving mid-checkpoint: free the folder (a GC pass
    /// has already dropped it), nothing more.
    pub(super) fn checkpoint_dropped(&mut self) {
        if let Some(c) = self.checkpoint.take() {
            if !matches!(c.job, Job::Gc(_)) {
                self.actions.push_back(Action::DropCheckpoint {
                    term: c.point.term,
                    index: c.point.index,
                });
            }
        }
    }
}

/// Whether `step` deletes from the bucket or publishes a checkpoint.
fn changes_what_restores_read(step: &UploadStep) -> bool {
    match step {
        UploadStep::Object(ObjectOp::Delete { .. }) => true,
        UploadStep::Object(ObjectOp::Put { key, .. }) => {
            key == layout::MANIFEST_LATEST || parse_checkpoint_manifest_key(key).is_some()
        }
        _ => false,
    }
}
