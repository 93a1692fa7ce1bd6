//! What a simulation run records for the checkers: the client operations
//! (for [`crate::lincheck`]), the watch streams (for [`crate::watchcheck`])
//! and the log the node ended up with (the truth both are checked against).
//!
//! Times are simulated nanoseconds since the start of the run, as seen by the
//! clients (one global simulated clock; node clocks may drift, client clocks
//! do not).

use t4_core::kv::{RangeRequest, RangeResponse, WatchCreateRequest, WriteRequest, WriteResponse};
use t4_core::watch::WatchOutput;
use t4_core::Error;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A range read (linearizable: served from the node's applied state).
    Range(RangeRequest),
    /// A state change (put, delete range, txn, compaction).
    Write(WriteRequest),
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Return {
    /// The answer to a [`Call::Range`].
    Range(Result<RangeResponse, Error>),
    /// The answer to a [`Call::Write`]. An `Err` here is definite: the write
    /// changed nothing (it was refused, or it failed when applied — a failed
    /// apply changes nothing either).
    Write(Result<WriteResponse, Error>),
    /// No answer (timeout, broken connection) or an answer that does not say
    /// whether the write happened (an internal error after the write reached
    /// the log). A write with this return may or may not have taken effect,
    /// at any moment after its call.
    Unknown,
    /// A write whose client got no answer (or an internal write, such as a
    /// lease expiry's revoke) which the final log proves took effect and
    /// wrote `revision` (see `crate::resolve`): it must be linearized
    /// somewhere after its call, as the write of that revision; its answer
    /// is not checked.
    Applied {
        /// The revision it wrote.
        revision: i64,
    },
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The client that issued it (a client has at most one op outstanding).
    pub client: usize,
    /// When it was issued.
    pub call_at: u64,
    /// When its answer arrived; `None` for [`Return::Unknown`].
    pub return_at: Option<u64>,
    /// What was asked.
    pub call: Call,
    /// What came back.
    pub ret: Return,
}

/// When and how one call was answered, whatever the answer means for the
/// linearizability checker. [`Op`] keeps only what the checker needs (an
/// answer that does not settle a write's outcome, such as a `Timeout`, is
/// recorded there as [`Return::Unknown`] without a return time); timing
/// checks ("no call hangs", "writes fail fast during an outage") need the
/// answer itself and when it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The client that made the call.
    pub client: usize,
    /// Whether it was a write.
    pub write: bool,
    /// When it was issued.
    pub call_at: u64,
    /// When an answer arrived; `None`: none did before the client gave up.
    pub answered_at: Option<u64>,
    /// `Ok(())` or the error answered; `None` when no answer came.
    pub result: Option<Result<(), Error>>,
}

/// How a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// Still open when the run ended, after a quiet period in which no fault
    /// was active: it must have received everything up to the final revision.
    OpenCaughtUp,
    /// Still open when the run ended, without the quiet-period promise.
    Open,
    /// The stream broke (node crash, connection lost, client gave up).
    Broken,
    /// The node cancelled it (the last response has `canceled`).
    Canceled,
}

/// One watch as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRecord {
    /// The client that opened it.
    pub client: usize,
    /// The create request as sent.
    pub create: WatchCreateRequest,
    /// Every response of this watch, in arrival order, starting with the
    /// `created` one (`stream` is meaningless here). Stream-wide progress
    /// responses (watch id -1) that arrived on the watch's stream while the
    /// watch was open are included too.
    pub responses: Vec<WatchOutput>,
    /// How it ended.
    pub end: WatchEnd,
}

/// How a history's calls ended, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls recorded.
    pub ops: usize,
    /// … answered with success.
    pub ok: usize,
    /// … answered with a definite failure.
    pub failed: usize,
    /// … whose outcome is unknown.
    pub unknown: usize,
    /// Writes acknowledged.
    pub acked_writes: usize,
}

impl Tally {
    /// Counts `ops`.
    #[must_use]
    pub fn of(ops: &[Op]) -> Tally {
        let mut t = Tally {
            ops: ops.len(),
            ..Tally::default()
        };
        for op in ops {
            match &op.ret {
                Return::Unknown | Return::Applied { .. } => t.unknown += 1,
                Return::Range(Ok(_)) => t.ok += 1,
                Return::Write(Ok(_)) => {
                    t.ok += 1;
                    t.acked_writes += 1;
                }
                Return::Range(Err(_)) | Return::Write(Err(_)) => t.failed += 1,
            }
        }
        t
    }
}
