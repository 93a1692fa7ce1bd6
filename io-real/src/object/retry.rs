//! Per-attempt timeouts and bounded retries around any store.
//!
//! Only [`ObjectError::Retryable`] is retried: it means "no answer, or a
//! transient one", and every operation core issues is safe to repeat (gets,
//! lists and deletes are idempotent; puts are either unconditional
//! rewrites of the same bytes or conditional, so a repeat cannot clobber a
//! newer object). What a retry can *not* do is tell whether an earlier,
//! unanswered attempt happened: a conditional put whose first attempt timed
//! out but landed is answered [`ObjectError::PreconditionFailed`] on the
//! second. That answer is passed up as it is — hiding it would need a read
//! that this layer cannot interpret — and the caller resolves it by reading
//! the object back (ARCHITECTURE §3.10, the node's upload pipeline).
//!
//! # Example (worked)
//!
//! Defaults: 5 attempts, backoff 100 ms doubling to at most 5 s with equal
//! jitter, 10 s per attempt plus 1 s per MiB of put body. A 4 MiB
//! `IfAbsent` put of a WAL object to an S3 that drops the first connection:
//! attempt 1 fails at once (`Retryable("dispatch failure …")`), the wrapper
//! sleeps 50–100 ms; attempt 2 gets no answer within 14 s (`Retryable("timed
//! out after 14s")`) — but its request did reach S3 and was written; sleep
//! 100–200 ms; attempt 3 is answered 412: the caller sees
//! `PreconditionFailed`, reads the key, finds its own bytes, and carries on.

use std::time::Duration;

use futures::future::BoxFuture;
use t4_core::object::{ObjectError, ObjectOp, ObjectResult};

use super::ObjectStore;

const MIB: u64 = 1 << 20;

/// How [`Retrying`] retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per operation, the first one included (at least 1).
    pub attempts_max: u32,
    /// Backoff before the second attempt; it doubles after each attempt.
    pub backoff_initial: Duration,
    /// The backoff stops doubling here.
    pub backoff_max: Duration,
    /// How long one attempt may take before it counts as
    /// [`ObjectError::Retryable`] ("timed out").
    pub attempt_timeout: Duration,
    /// Extra time per attempt for each started MiB of a put's body, so a
    /// 64 MiB SST upload is not held to a 1 KiB lock write's deadline.
    pub attempt_timeout_per_mib: Duration,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            attempts_max: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
            attempt_timeout_per_mib: Duration::from_secs(1),
        }
    }
}

impl RetryConfig {
    /// The deadline of one attempt of `op`.
    #[must_use]
    pub fn attempt_timeout_for(&self, op: &ObjectOp) -> Duration {
        let body_bytes = match op {
            ObjectOp::Put { body, .. } => body.len() as u64,
            _ => 0,
        };
        let mibs = u32::try_from(body_bytes.div_ceil(MIB)).unwrap_or(u32::MAX);
        self.attempt_timeout
            .saturating_add(self.attempt_timeout_per_mib.saturating_mul(mibs))
    }

    /// The sleep after failed attempt `attempt` (1 = the first): the
    /// backoff doubled `attempt - 1` times, at most `backoff_max`, with equal
    /// jitter (a random point in its upper half), so clients that failed
    /// together spread out but none retries at once.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self
            .backoff_initial
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max);
        let half = full / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=jitter_ns))
    }
}

/// Any store, with a deadline on every attempt and bounded, jittered
/// retries of [`ObjectError::Retryable`] outcomes (see the module docs for
/// what a retry does and does not hide).
#[derive(Debug)]
pub struct Retrying<S> {
    inner: S,
    config: RetryConfig,
}

impl<S: ObjectStore> Retrying<S> {
    /// Wraps `inner`.
    ///
    /// # Panics
    /// If `config.attempts_max` is 0.
    pub fn new(inner: S, config: RetryConfig) -> Retrying<S> {
        assert!(
            config.attempts_max >= 1,
            "at least one attempt per operation: {config:?}"
        );
        Retrying { inner, config }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn run(&self, op: ObjectOp) -> ObjectResult {
        let timeout = self.config.attempt_timeout_for(&op);
        let mut attempt: u32 = 1;
        loop {
            let result = match tokio::time::timeout(timeout, self.inner.execute(op.clone())).await {
                Ok(result) => result,
                Err(_elapsed) => Err(ObjectError::Retryable(format!(
                    "timed out after {timeout:?}"
                ))),
            };
            let why = match result {
                Err(ObjectError::Retryable(why)) => why,
                done => {
                    if attempt > 1 {
                        let outcome = done.as_ref().map(|_| ()).err();
                        tracing::info!(
                            op = op.kind(),
                            key = op.key(),
                            attempt,
                            ?outcome,
                            "object store: answered after a retry"
                        );
                    }
                    return done;
                }
            };
            if attempt >= self.config.attempts_max {
                return Err(ObjectError::Retryable(format!(
                    "{why} (gave up after {attempt} attempts)"
                )));
            }
            let delay = self.config.backoff(attempt);
            tracing::warn!(
                op = op.kind(),
                key = op.key(),
                attempt,
                attempts_max = self.config.attempts_max,
                delay_ms = delay.as_millis() as u64,
                "object store: {why}; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl<S: ObjectStore> ObjectStore for Retrying<S> {
    fn execute(&self, op: ObjectOp) -> BoxFuture<'_, ObjectResult> {
        Box::pin(self.run(op))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
