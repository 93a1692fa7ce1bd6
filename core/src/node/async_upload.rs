//! Bucket mode, asynchronous upload (`--wal-sync-upload=false`, T4's
//! `WALSyncUpload=false`): a write is acknowledged once fsynced and applied,
//! exactly as in local mode; what was applied is uploaded in the background,
//! one WAL object per sealed **segment** (ARCHITECTURE §3.4).
//!
//! ```text
//!  WalSynced(5..=7) ─► apply 5..=7, replies ─► their frames join the open segment
//!  the open segment reaches segment_max_bytes, or its first entry is
//!  segment_max_age_ns old ─► seal it as wal/<its first index>
//!  no upload in flight ─► Object(Put wal/…05, If-None-Match: *)
//!      Ok                ─► the bucket holds the log through 7; next sealed segment
//!      412 / 409         ─► Object(Get wal/…05)      "is it ours?"
//!          same bytes    ─► ours (a lost answer, a late landing): landed
//!          other bytes   ─► another node wrote index 5: FENCED
//!          not found     ─► a 409 against a write that did not land: put again
//!      retryable / other ─► back off (BucketConfig::backoff_ns) and retry, forever
//! ```
//!
//! Only applied entries are uploaded (an entry joins the open segment when it
//! applies), objects are created only with `If-None-Match`, and one upload
//! runs at a time, oldest segment first: objects land in log order, so a
//! crash never leaves a hole in the bucket. While one segment uploads, the
//! next accumulates (and may itself be sealed and queue behind it).
//!
//! # Worked example
//!
//! `segment_max_age_ns` = 10 s, `segment_max_bytes` = 50 MB, the bucket
//! holds the log through 4.
//!
//! - t = 0 s: put `a` is entry 5: fsynced, applied, acknowledged. The open
//!   segment is 5..=5, to be sealed at t = 10 s.
//! - t = 4 s: puts `b`, `c` (6, 7) are acknowledged and join it.
//! - t = 10 s: the timer seals 5..=7 and puts `wal/…05`.
//! - t = 10.05 s: put `d` (8) is acknowledged and opens the next segment
//!   (sealed at t = 20.05 s) while `wal/…05` is still in flight.
//! - t = 10.1 s: `wal/…05` lands: the bucket holds the log through 7, and
//!   the local WAL may be trimmed below 8 (not below 5 before that).
//! - A crash of the machine with its disk at t = 15 s loses `d` (and only
//!   `d`): the window is the open segment, at most `segment_max_age_ns` of
//!   writes plus an upload's time.
//!
//! # Bounds and outages
//!
//! During an outage every attempt fails and is retried with the node's
//! backoff, forever; writes are still acknowledged. The applied entries not
//! yet in the bucket (open and sealed segments, frame bytes) are bounded by
//! [`BucketConfig::async_backlog_bytes_max`]: at the bound new writes are
//! refused with [`Error::Unavailable`] ("upload backlog full") until uploads
//! catch up, without a restart. Writes accepted before the bound was reached
//! still complete, so the backlog may pass its bound by what was pending
//! ([`NodeConfig::pending_max`](super::NodeConfig::pending_max) writes at
//! most), never without bound.
//!
//! # Fenced
//!
//! A 412 whose object holds other bytes means another node took the bucket
//! over and wrote that index. The node is fenced as in sync mode
//! ([`Error::Fenced`] for every pending and later write, reads refused), and
//! everything it applied that was not in the bucket is lost: those writes
//! were acknowledged (a zombie's writes after a takeover are lost; T4 has
//! the same trade-off).
//!
//! # The local WAL, checkpoints, close
//!
//! - `TrimWal`'s `below` never passes the last uploaded index + 1: the
//!   local WAL keeps every entry the bucket lacks, for the next start-up.
//! - A checkpoint names state its manifest says the bucket's WAL backs. In
//!   async mode the engine runs ahead of the bucket, so a taken checkpoint
//!   ([`IoDone::CheckpointTaken`](super::IoDone::CheckpointTaken)) is held
//!   back, and the open segment sealed at once, until the bucket holds the
//!   log through the applied index at that moment (at or past the
//!   checkpoint's). Only then does its upload start. A fenced node's held
//!   checkpoint is abandoned, never uploaded.
//! - [`Node::flush_uploads`] seals the open segment for a graceful stop;
//!   [`Node::is_idle`] is false until the backlog is in the bucket.
//!
//! # Start-up
//!
//! The engine may be ahead of the bucket (applied entries not uploaded when
//! the node stopped): the start-up reads them back from the local WAL and
//! uploads them before its fence (see the `startup` module).
//!
//! # The trade-off
//!
//! A node lost together with its disk loses the acknowledged writes not yet
//! in the bucket: the open segment (up to `segment_max_age_ns`), plus any
//! backlog an outage built up. Sync mode (the default) loses nothing.

use std::collections::VecDeque;

use bytes::Bytes;

use super::checkpoint::TakenCheckpoint;
use super::upload::create_op;
use super::{Action, BucketConfig, Health, Node};
use crate::bucket::layout;
use crate::engine::KvEngine;
use crate::error::Error;
use crate::log::Entry;
use crate::object::{ObjectError, ObjectOp, ObjectReply, ObjectResult};
use crate::types::{Index, IoId, Time};
use crate::wal::{encode_entries, SegmentHeader, SEGMENT_HEADER_BYTES};

/// Async mode's upload state: the open segment, the sealed ones waiting,
/// the upload of the oldest, and how far the bucket holds the log.
#[derive(Debug, Default)]
pub(super) struct AsyncUpload {
    /// Applied entries not sealed yet.
    open: Option<OpenSegment>,
    /// Sealed segments, oldest first; `attempt` uploads the front one.
    sealed: VecDeque<SealedSegment>,
    /// The upload of `sealed[0]`, if started.
    attempt: Option<Attempt>,
    /// The last index known to be in the bucket.
    uploaded_through: Index,
    /// Frame bytes of the open and sealed segments: applied entries the
    /// bucket lacks.
    backlog_bytes: u64,
    /// Whether the backlog reached its bound (for logging the transitions).
    backlog_full: bool,
    /// A checkpoint waiting for the bucket's WAL to cover it.
    held_checkpoint: Option<HeldCheckpoint>,
}

/// Applied entries accumulating into the next WAL object.
#[derive(Debug)]
struct OpenSegment {
    first: Index,
    last: Index,
    /// Room for the segment header, then the entries' WAL frames: sealing
    /// writes the header in place, so the body is never copied.
    bytes: Vec<u8>,
    /// When its first entry applied: it is sealed `segment_max_age_ns` later.
    since: Time,
}

/// A segment ready for upload: the object's key and body.
#[derive(Debug)]
struct SealedSegment {
    last: Index,
    key: String,
    body: Bytes,
    frames_bytes: u64,
}

/// Progress of one segment's upload.
#[derive(Debug)]
struct Attempt {
    step: Step,
    /// The operation in flight, or `None` while backing off.
    io: Option<IoId>,
    /// When to try again (while backing off).
    retry_at: Option<Time>,
    /// Failed attempts so far (for the backoff).
    failures: u32,
}

/// Which operation the upload is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Creating the object with `If-None-Match`.
    Put,
    /// Reading it back after a precondition failure.
    Verify,
}

/// A [`TakenCheckpoint`] held back until the bucket holds the log through
/// `until`.
#[derive(Debug)]
struct HeldCheckpoint {
    io: IoId,
    result: Result<TakenCheckpoint, String>,
    until: Index,
}

impl<E: KvEngine> Node<E> {
    /// Bucket mode: the last log index known to be in the bucket. Every
    /// applied entry in sync mode; in async mode the bucket may lag behind
    /// [`Node::meta`]'s applied index. `None` in local mode.
    #[must_use]
    pub fn wal_uploaded_through(&self) -> Option<Index> {
        match &self.config.bucket {
            None => None,
            Some(b) if b.sync_upload => Some(Index(self.store.meta().applied_index)),
            Some(_) => Some(self.async_upload.uploaded_through),
        }
    }

    /// Async mode: bytes of acknowledged entries not in the bucket yet (0 in
    /// the other modes). Bounded by
    /// [`BucketConfig::async_backlog_bytes_max`].
    #[must_use]
    pub fn upload_backlog_bytes(&self) -> u64 {
        self.async_upload.backlog_bytes
    }

    /// Async mode: seals the open segment now and starts its upload, so
    /// that a graceful stop can wait ([`Node::is_idle`]) until everything
    /// acknowledged is in the bucket. Does nothing in the other modes.
    pub fn flush_uploads(&mut self, now: Time) {
        let _ = now;
        if self.is_async_upload() && !matches!(self.health, Health::Fenced(_)) {
            self.seal_open_segment();
            self.pump_segment_uploads();
        }
    }

    /// Bucket mode with asynchronous upload.
    pub(super) fn is_async_upload(&self) -> bool {
        self.config.bucket.as_ref().is_some_and(|b| !b.sync_upload)
    }

    fn async_config(&self) -> &BucketConfig {
        self.config
            .bucket
            .as_ref()
            .expect("asynchronous upload is a bucket mode")
    }

    /// Whether every applied entry is in the bucket (always outside async
    /// mode).
    pub(super) fn upload_backlog_empty(&self) -> bool {
        self.async_upload.open.is_none() && self.async_upload.sealed.is_empty()
    }

    /// The start-up finished with the log in the bucket through the
    /// fence: uploads continue from there.
    pub(super) fn async_upload_serving(&mut self) {
        assert!(
            self.upload_backlog_empty(),
            "nothing is uploaded in the background before serving"
        );
        self.async_upload.uploaded_through = self.last_index;
    }

    /// Why a new write must wait: the backlog is at its bound.
    pub(super) fn backlog_refusal(&self) -> Option<Error> {
        if !self.is_async_upload() {
            return None;
        }
        let bytes_max = self.async_config().async_backlog_bytes_max;
        let bytes = self.async_upload.backlog_bytes;
        (bytes >= bytes_max).then(|| {
            Error::Unavailable(format!(
                "upload backlog full: {bytes} bytes of acknowledged writes are not in the object \
                 store yet (bound {bytes_max}); retry later"
            ))
        })
    }

    /// The index below which the local WAL may be trimmed, minus one: the
    /// applied index, and in async mode no further than the bucket holds.
    pub(super) fn trim_bound(&self) -> Index {
        let applied = Index(self.store.meta().applied_index);
        if self.is_async_upload() {
            applied.min(self.async_upload.uploaded_through)
        } else if let Some(keep) = self.cluster_buffer_entries() {
            // Cluster mode: the WAL keeps the recent applied entries, so a
            // restarted leader can still serve followers that lag; with
            // the bucket tier, every entry the bucket may lack.
            let recent = Index(applied.0.saturating_sub(keep));
            self.tier_wal_keeps_after()
                .map_or(recent, |uploaded| recent.min(uploaded))
        } else {
            applied
        }
    }

    /// An entry applied in async mode joins the open segment; a segment
    /// that reached `segment_max_bytes` is sealed (its upload starts from
    /// `pump_segment_uploads`, after the batch's replies).
    pub(super) fn segment_append(&mut self, now: Time, entry: &Entry) {
        let config = self.async_config();
        let (segment_bytes_max, backlog_bytes_max) =
            (config.segment_max_bytes, config.async_backlog_bytes_max);
        let up = &mut self.async_upload;
        let index = entry.index_id();
        let end = up
            .open
            .as_ref()
            .map(|o| o.last)
            .or_else(|| up.sealed.back().map(|s| s.last))
            .unwrap_or(up.uploaded_through);
        assert_eq!(
            index,
            end.next(),
            "segments continue the log: entry {index} after {end}"
        );
        let open = up.open.get_or_insert_with(|| OpenSegment {
            first: index,
            last: end,
            bytes: vec![0; SEGMENT_HEADER_BYTES],
            since: now,
        });
        let added = encode_entries(std::slice::from_ref(entry), &mut open.bytes) as u64;
        open.last = index;
        let full = (open.bytes.len() - SEGMENT_HEADER_BYTES) as u64 >= segment_bytes_max;
        up.backlog_bytes += added;
        if up.backlog_bytes >= backlog_bytes_max && !up.backlog_full {
            up.backlog_full = true;
            tracing::warn!(
                backlog_bytes = up.backlog_bytes,
                backlog_bytes_max,
                uploaded_through = up.uploaded_through.0,
                "upload backlog full: refusing writes until uploads catch up"
            );
        }
        if full {
            self.seal_open_segment();
        }
    }

    /// Seals the open segment (if any) under the current term.
    fn seal_open_segment(&mut self) {
        let Some(mut open) = self.async_upload.open.take() else {
            return;
        };
        let header = SegmentHeader {
            term: self.term,
            first_index: open.first,
        };
        // The same bytes as `wal_object::encode(term, entries)`.
        open.bytes[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
        let frames_bytes = (open.bytes.len() - SEGMENT_HEADER_BYTES) as u64;
        assert!(frames_bytes > 0, "a segment holds at least one entry");
        tracing::debug!(
            first = open.first.0,
            last = open.last.0,
            bytes = open.bytes.len(),
            "sealed a WAL segment"
        );
        self.async_upload.sealed.push_back(SealedSegment {
            last: open.last,
            key: layout::wal_key(open.first),
            body: Bytes::from(open.bytes),
            frames_bytes,
        });
    }

    /// Starts uploading the oldest sealed segment unless an upload is under
    /// way (one at a time, so objects land in log order) or the node is
    /// fenced.
    pub(super) fn pump_segment_uploads(&mut self) {
        let up = &self.async_upload;
        if up.attempt.is_some() || up.sealed.is_empty() || matches!(self.health, Health::Fenced(_))
        {
            return;
        }
        self.async_upload.attempt = Some(Attempt {
            step: Step::Put,
            io: None,
            retry_at: None,
            failures: 0,
        });
        self.send_segment_step();
    }

    /// Emits the operation of the upload's current step.
    fn send_segment_step(&mut self) {
        let io = self.io_id();
        let term = self.term;
        let up = &mut self.async_upload;
        let segment = up.sealed.front().expect("an upload has its segment");
        let attempt = up.attempt.as_mut().expect("an upload is under way");
        let op = match attempt.step {
            Step::Put => create_op(&segment.key, &segment.body),
            Step::Verify => ObjectOp::Get {
                key: segment.key.clone(),
            },
        };
        attempt.io = Some(io);
        attempt.retry_at = None;
        self.actions.push_back(Action::Object { io, term, op });
    }

    /// When async mode needs the timer: the open segment's age bound, or
    /// the end of an upload's backoff.
    pub(super) fn segment_timer(&self) -> Option<Time> {
        if !self.is_async_upload() {
            return None;
        }
        let age_ns = self.async_config().segment_max_age_ns;
        let up = &self.async_upload;
        let seal = up.open.as_ref().map(|o| o.since.plus_nanos(age_ns));
        let retry = up.attempt.as_ref().and_then(|a| a.retry_at);
        [seal, retry].into_iter().flatten().min()
    }

    /// Timer: seals an open segment that reached its age, retries an upload
    /// whose backoff is over.
    pub(super) fn on_segment_timer(&mut self, now: Time) {
        if !self.is_async_upload() {
            return;
        }
        let age_ns = self.async_config().segment_max_age_ns;
        let up = &self.async_upload;
        if up
            .open
            .as_ref()
            .is_some_and(|o| o.since.plus_nanos(age_ns) <= now)
        {
            self.seal_open_segment();
        }
        let retry = self
            .async_upload
            .attempt
            .as_ref()
            .and_then(|a| a.retry_at)
            .is_some_and(|at| at <= now);
        if retry {
            self.send_segment_step();
        }
        self.pump_segment_uploads();
    }

    /// Whether `io` is the segment upload's operation in flight.
    pub(super) fn is_segment_io(&self, io: IoId) -> bool {
        self.async_upload
            .attempt
            .as_ref()
            .is_some_and(|a| a.io == Some(io))
    }

    /// The segment upload's operation completed.
    pub(super) fn on_segment_io(&mut self, now: Time, result: ObjectResult) {
        let up = &mut self.async_upload;
        let segment = up.sealed.front().expect("an upload has its segment");
        let attempt = up.attempt.as_mut().expect("matched by is_segment_io");
        attempt.io = None;
        match (attempt.step, result) {
            (Step::Put, Ok(ObjectReply::Put { .. })) => self.segment_landed(now),
            (Step::Put, Err(ObjectError::PreconditionFailed)) => {
                // Our own earlier attempt (a lost answer, a late landing), a
                // concurrent conflict (409), or another node: the bytes tell.
                attempt.step = Step::Verify;
                self.send_segment_step();
            }
            (Step::Verify, Ok(ObjectReply::Got { body, .. })) => {
                if body == segment.body {
                    self.segment_landed(now);
                } else {
                    let key = segment.key.clone();
                    self.fence(
                        now,
                        format!(
                            "another node wrote {key} in the bucket: it has taken over; this node \
                             no longer acknowledges writes, and its acknowledged writes not yet \
                             uploaded are lost (asynchronous upload)"
                        ),
                    );
                }
            }
            (Step::Verify, Err(ObjectError::NotFound)) => {
                // A 409 against a write that did not land: nobody owns the
                // index yet.
                attempt.step = Step::Put;
                self.segment_failed(now, "conditional write conflicted".into());
            }
            (step, Ok(reply)) => {
                panic!("object store answered the segment upload's {step:?} with {reply:?}")
            }
            (_, Err(error)) => {
                if matches!(error, ObjectError::InvalidKey(_) | ObjectError::Failed(_)) {
                    tracing::error!(%error, key = %segment.key, "WAL segment upload failed; retrying");
                }
                self.segment_failed(now, error.to_string());
            }
        }
    }

    /// The oldest sealed segment is in the bucket.
    fn segment_landed(&mut self, now: Time) {
        let backlog_bytes_max = self.async_config().async_backlog_bytes_max;
        let up = &mut self.async_upload;
        let segment = up.sealed.pop_front().expect("an upload has its segment");
        let attempt = up.attempt.take().expect("an upload is under way");
        assert!(
            segment.last > up.uploaded_through,
            "uploads move forward: {} after {}",
            segment.last,
            up.uploaded_through
        );
        up.uploaded_through = segment.last;
        up.backlog_bytes -= segment.frames_bytes;
        if attempt.failures > 0 {
            tracing::info!(
                key = %segment.key,
                failures = attempt.failures,
                "the object store answers again; WAL segment uploaded"
            );
        } else {
            tracing::debug!(key = %segment.key, through = segment.last.0, "WAL segment uploaded");
        }
        if up.backlog_full && up.backlog_bytes < backlog_bytes_max {
            up.backlog_full = false;
            tracing::info!(
                backlog_bytes = up.backlog_bytes,
                "upload backlog below its bound again; accepting writes"
            );
        }
        self.release_held_checkpoint(now);
        self.pump_segment_uploads();
    }

    /// An attempt failed without settling the upload: back off and retry.
    fn segment_failed(&mut self, now: Time, why: String) {
        let attempt = self
            .async_upload
            .attempt
            .as_mut()
            .expect("an upload is under way");
        attempt.failures = attempt.failures.saturating_add(1);
        let failures = attempt.failures;
        let backoff_ns = self.async_config().backoff_ns(failures);
        let up = &mut self.async_upload;
        up.attempt.as_mut().expect("checked above").retry_at = Some(now.plus_nanos(backoff_ns));
        let key = &up.sealed.front().expect("an upload has its segment").key;
        if failures == 1 {
            tracing::warn!(%why, %key, backlog_bytes = up.backlog_bytes,
                "WAL segment upload failed; writes are still acknowledged, retrying");
        } else {
            tracing::debug!(%why, %key, failures, "WAL segment upload failed again; retrying");
        }
    }

    /// A checkpoint was taken. In async mode it may hold entries the
    /// bucket's WAL lacks: its upload (and so its manifest) waits until the
    /// bucket holds the log through the applied index now, which is at or
    /// past the checkpoint's.
    pub(super) fn on_checkpoint_taken_after_upload(
        &mut self,
        now: Time,
        io: IoId,
        result: Result<TakenCheckpoint, String>,
    ) {
        if self.cluster.is_some() && self.is_checkpoint_io(io) {
            // The same rule for the cluster's bucket tier.
            if let Some(result) = self.hold_cluster_checkpoint(now, io, result) {
                self.on_checkpoint_taken(now, io, result);
            }
            return;
        }
        if self.is_async_upload() && self.is_checkpoint_io(io) {
            let until = Index(self.store.meta().applied_index);
            if self.async_upload.uploaded_through < until {
                tracing::debug!(
                    until = until.0,
                    uploaded_through = self.async_upload.uploaded_through.0,
                    "checkpoint taken; its upload waits for the WAL upload"
                );
                assert!(
                    self.async_upload.held_checkpoint.is_none(),
                    "one checkpoint at a time"
                );
                self.async_upload.held_checkpoint = Some(HeldCheckpoint { io, result, until });
                // No need to wait for the segment's age.
                self.seal_open_segment();
                self.pump_segment_uploads();
                return;
            }
        }
        self.on_checkpoint_taken(now, io, result);
    }

    /// Hands a held checkpoint on once the bucket covers it.
    fn release_held_checkpoint(&mut self, now: Time) {
        let up = &mut self.async_upload;
        if up
            .held_checkpoint
            .as_ref()
            .is_some_and(|h| h.until <= up.uploaded_through)
        {
            let held = up.held_checkpoint.take().expect("checked above");
            self.on_checkpoint_taken(now, held.io, held.result);
        }
    }

    /// The node is fenced: the backlog will never be uploaded, and a held
    /// checkpoint is abandoned.
    pub(super) fn async_upload_fenced(&mut self, now: Time) {
        let up = std::mem::take(&mut self.async_upload);
        if up.backlog_bytes > 0 {
            let last = up
                .open
                .as_ref()
                .map(|o| o.last)
                .or_else(|| up.sealed.back().map(|s| s.last))
                .expect("a backlog has segments");
            tracing::error!(
                lost_first = up.uploaded_through.next().0,
                lost_last = last.0,
                lost_bytes = up.backlog_bytes,
                "fenced with acknowledged writes never uploaded: they are lost"
            );
        }
        self.async_upload.uploaded_through = up.uploaded_through;
        if let Some(held) = up.held_checkpoint {
            let why = "fenced: another node took the bucket over".to_owned();
            self.on_checkpoint_taken(now, held.io, Err(why));
        }
    }
}
