//! Bucket mode, sync: a batch is durable once fsynced **and** in the bucket.
//!
//! ```text
//!  WalSynced(batch 5..=7) ─► Object(Put wal/…05, If-None-Match: *)
//!      Ok                  ─► apply 5..=7, replies, next batch
//!      412 / 409           ─► Object(Get wal/…05)      "is it ours?"
//!          same bytes      ─► ours: our earlier attempt landed and its answer
//!                             was lost (or a retry raced it) → apply
//!          other bytes     ─► someone else wrote index 5: we are FENCED
//!          not found       ─► the 409 was a conflict with a write that did not
//!                             land → put again
//!      retryable / other   ─► back off (doubling, bounded) and try again
//! ```
//!
//! One object per batch (group commit applies: while one upload is in flight
//! the next batch accumulates in the queue). Keys carry the first index and
//! objects are only ever created with `If-None-Match`, so two writers can
//! never both extend the log at one index: the one that loses learns it
//! from the precondition failure and never acknowledges (ARCHITECTURE §3.5).
//!
//! # Outages
//!
//! The driver bounds every operation with a timeout, so each attempt ends.
//! When a batch has been failing for [`BucketConfig::unavailable_after_ns`]
//! its writers are answered [`Error::Timeout`] (the entries stay in the log
//! and will still be applied when the upload lands: there are no holes),
//! queued writes and new ones get [`Error::Unavailable`] (they never reached
//! the log), and the node keeps retrying. When the bucket answers again the
//! batch applies and writes flow again, without a restart.
//!
//! # Fenced
//!
//! Another node took the bucket over and wrote the next index. Nothing of
//! this batch or the queue was applied or ever will be: their writers get
//! [`Error::Fenced`], a definite failure, and so does every later write. The
//! fenced node also stops serving reads (see [`Node::fenced`]).

use bytes::Bytes;

use super::{BucketConfig, Health, Node};
use crate::bucket::{layout, wal_object};
use crate::engine::KvEngine;
use crate::error::Error;
use crate::node::Action;
use crate::object::{ObjectError, ObjectOp, ObjectReply, ObjectResult, PutCondition};
use crate::types::{Index, IoId, Term, Time};

/// The upload of the batch in flight.
#[derive(Debug)]
pub(super) struct Upload {
    key: String,
    body: Bytes,
    /// When the first attempt started.
    started: Time,
    step: Step,
    /// The operation in flight, or `None` while backing off.
    io: Option<IoId>,
    /// When to try again (while backing off).
    retry_at: Option<Time>,
    /// Failed attempts so far (for the backoff).
    failures: u32,
    /// The batch's writers were answered `Timeout`.
    gave_up: bool,
}

/// Which operation the upload is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Creating the object with `If-None-Match`.
    Put,
    /// Reading it back after a precondition failure.
    Verify,
}

/// The only way t4 writes a WAL object: create it, never overwrite.
pub(super) fn create_op(key: &str, body: &Bytes) -> ObjectOp {
    ObjectOp::Put {
        key: key.to_owned(),
        body: body.clone(),
        condition: PutCondition::IfAbsent,
    }
}

impl<E: KvEngine> Node<E> {
    fn bucket_config(&self) -> &BucketConfig {
        self.config
            .bucket
            .as_ref()
            .expect("uploads happen in bucket mode only")
    }

    /// The in-flight batch is fsynced: start its upload.
    pub(super) fn start_upload(&mut self, now: Time) {
        let term = self.term;
        let batch = self.in_flight.as_mut().expect("a batch is in flight");
        let first = batch
            .entries
            .first()
            .expect("batches are not empty")
            .1
            .index_id();
        let entries: Vec<_> = batch.entries.iter().map(|(_, e)| e.clone()).collect();
        batch.upload = Some(Upload {
            key: layout::wal_key(first),
            body: wal_object::encode(term, &entries),
            started: now,
            step: Step::Put,
            io: None,
            retry_at: None,
            failures: 0,
            gave_up: false,
        });
        self.send_upload_step();
    }

    /// Emits the operation of the upload's current step.
    fn send_upload_step(&mut self) {
        let io = self.io_id();
        let term = self.term;
        let upload = self.upload_mut().expect("an upload is in flight");
        let op = match upload.step {
            Step::Put => create_op(&upload.key, &upload.body),
            Step::Verify => ObjectOp::Get {
                key: upload.key.clone(),
            },
        };
        upload.io = Some(io);
        upload.retry_at = None;
        self.actions.push_back(Action::Object { io, term, op });
    }

    fn upload_mut(&mut self) -> Option<&mut Upload> {
        self.in_flight.as_mut().and_then(|b| b.upload.as_mut())
    }

    /// When the upload next needs the timer: its backoff ends, or its
    /// deadline for answering the writers passes.
    pub(super) fn upload_retry_at(&self) -> Option<Time> {
        let upload = self.in_flight.as_ref()?.upload.as_ref()?;
        let deadline = (!upload.gave_up).then(|| {
            upload
                .started
                .plus_nanos(self.bucket_config().unavailable_after_ns)
        });
        [upload.retry_at, deadline].into_iter().flatten().min()
    }

    /// Timer: retries the upload if its backoff is over; gives up on
    /// answering its writers once it is overdue, even while an attempt is
    /// still running (the driver's own retries may take long).
    pub(super) fn retry_upload_if_due(&mut self, now: Time) {
        let deadline_ns = match &self.config.bucket {
            Some(b) => b.unavailable_after_ns,
            None => return,
        };
        let Some(upload) = self.in_flight.as_ref().and_then(|b| b.upload.as_ref()) else {
            return;
        };
        let overdue = !upload.gave_up && now >= upload.started.plus_nanos(deadline_ns);
        let retry = upload.retry_at.is_some_and(|at| at <= now);
        if overdue {
            self.give_up_upload("no answer from the object store in time".into());
        }
        if retry {
            self.send_upload_step();
        }
    }

    /// An object operation completed.
    pub(super) fn on_object_done(&mut self, now: Time, io: IoId, term: Term, result: ObjectResult) {
        let current = self
            .in_flight
            .as_ref()
            .and_then(|b| b.upload.as_ref())
            .is_some_and(|u| u.io == Some(io));
        if term != self.term || !current {
            tracing::debug!(io = io.0, term = term.0, "dropping stale object completion");
            return;
        }
        let upload = self.upload_mut().expect("matched above");
        upload.io = None;
        match (upload.step, result) {
            (Step::Put, Ok(ObjectReply::Put { .. })) => self.upload_landed(now),
            (Step::Put, Err(ObjectError::PreconditionFailed)) => {
                // Either our own earlier attempt landed (its answer was lost
                // or it landed late), a concurrent write conflicted (409),
                // or another node wrote this index. Only the bytes tell.
                upload.step = Step::Verify;
                self.send_upload_step();
            }
            (Step::Verify, Ok(ObjectReply::Got { body, .. })) => {
                if body == upload.body {
                    self.upload_landed(now);
                } else {
                    let key = upload.key.clone();
                    self.fence(
                        now,
                        format!(
                            "another node wrote {key} in the bucket: it has taken over; \
                             this node no longer acknowledges writes"
                        ),
                    );
                }
            }
            (Step::Verify, Err(ObjectError::NotFound)) => {
                // A 409 against a write that did not land: nobody owns the
                // index yet.
                upload.step = Step::Put;
                self.upload_failed(now, "conditional write conflicted".into());
            }
            (step, Ok(reply)) => {
                panic!("object store answered {step:?} with {reply:?}")
            }
            (_, Err(error)) => {
                if matches!(error, ObjectError::InvalidKey(_) | ObjectError::Failed(_)) {
                    tracing::error!(%error, "WAL upload failed; retrying");
                }
                self.upload_failed(now, error.to_string());
            }
        }
    }

    /// The batch is in the bucket: apply it. Writers already told `Timeout`
    /// get no second answer.
    fn upload_landed(&mut self, now: Time) {
        let batch = self.in_flight.as_mut().expect("a batch is in flight");
        let upload = batch.upload.as_ref().expect("an upload is in flight");
        if upload.gave_up {
            for (req, _) in &mut batch.entries {
                *req = None;
            }
        }
        if let Some(why) = self.bucket_down.take() {
            tracing::info!(%why, "the object store answers again; accepting writes");
        }
        self.apply_batch(now);
        // The read lease saw another writer while this upload was in
        // flight: it landed (before that writer's fence), so it applied and
        // was acknowledged; nothing more is written.
        if let Some(why) = self.superseded_by() {
            if matches!(self.health, Health::Serving) {
                self.fence(now, why);
            }
        }
    }

    /// An attempt failed without an answer that settles the batch: back
    /// off, and past the deadline answer its writers and refuse new writes.
    fn upload_failed(&mut self, now: Time, why: String) {
        let config = self.bucket_config().clone();
        let upload = self.upload_mut().expect("an upload is in flight");
        upload.failures = upload.failures.saturating_add(1);
        upload.retry_at = Some(now.plus_nanos(config.backoff_ns(upload.failures)));
        let overdue = now.0.saturating_sub(upload.started.0) >= config.unavailable_after_ns;
        if overdue && !upload.gave_up {
            self.give_up_upload(why);
        }
    }

    /// The upload is overdue: its writers are told `Timeout` (the batch
    /// still applies when it lands), queued writes `Unavailable`, and new
    /// writes are refused until the bucket answers.
    fn give_up_upload(&mut self, why: String) {
        let upload = self.upload_mut().expect("an upload is in flight");
        upload.gave_up = true;
        let first = upload.key.clone();
        tracing::warn!(%why, key = %first, "the object store is unreachable; refusing writes until it answers");
        let waiting: Vec<_> = self
            .in_flight
            .as_mut()
            .expect("an upload is in flight")
            .entries
            .iter()
            .filter_map(|(req, _)| *req)
            .collect();
        for req in waiting {
            self.reply(
                req,
                Err(Error::Timeout(format!(
                    "the object store is unreachable ({why}); the write is durable locally and \
                     will be applied if its upload succeeds"
                ))),
            );
        }
        let queued: Vec<_> = self.queued.iter().filter_map(|p| p.req).collect();
        self.queued.retain(|p| p.req.is_none());
        for req in queued {
            self.reply(
                req,
                Err(Error::Unavailable(format!(
                    "object store unreachable ({why}); retry later"
                ))),
            );
        }
        self.bucket_down = Some(why);
    }

    /// Another node owns the bucket: fail everything pending, for good.
    /// In sync mode a batch is in flight (its upload found the other
    /// writer); in async mode there may be none, and the backlog of applied
    /// entries is dropped (`async_upload`).
    pub(super) fn fence(&mut self, now: Time, why: String) {
        tracing::error!(%why, "fenced");
        let batch = self.in_flight.take();
        let gave_up = batch
            .as_ref()
            .and_then(|b| b.upload.as_ref())
            .is_some_and(|u| u.gave_up);
        let reqs: Vec<_> = batch
            .iter()
            .flat_map(|b| b.entries.iter())
            .filter(|_| !gave_up)
            .filter_map(|(req, _)| *req)
            .chain(self.queued.drain(..).filter_map(|p| p.req))
            .collect();
        for req in reqs {
            self.reply(req, Err(Error::Fenced(why.clone())));
        }
        // The unapplied batch is not part of the log any more.
        self.last_index = Index(self.store.meta().applied_index);
        self.bucket_down = None;
        self.refuse_waiting_reads(&why);
        self.health = Health::Fenced(why);
        self.async_upload_fenced(now);
    }
}
