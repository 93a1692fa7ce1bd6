//! How long the fake S3 takes and what it does wrong: [`S3Faults`], and the
//! per-request draw that turns it into a [`Plan`].
//!
//! Every random choice is drawn from madsim's seeded RNG, on the S3 node,
//! when a request arrives, in a fixed order (see [`super`]'s "Faults"
//! section). A rate of 0 or 1 draws nothing, so switching a fault fully on
//! or off does not shift the other draws of a run.

use std::ops::Range;
use std::time::Duration;

use madsim::rand::{thread_rng, Rng};
use t4_core::object::{ObjectError, ObjectOp};

/// One operation kind's service time at the store: usually uniform in
/// `base`, with probability `tail_rate` uniform in `tail` instead; plus
/// `per_mib` for every MiB of body moved (the put's request body, the get's
/// response body).
///
/// This is the time from the request reaching the store to the store's
/// decision (the write taking effect, the read being served); the simulated
/// network adds its own latency both ways.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    /// Usual service time.
    pub base: Range<Duration>,
    /// Probability of a tail request.
    pub tail_rate: f64,
    /// Tail service time.
    pub tail: Range<Duration>,
    /// Transfer time per MiB of body.
    pub per_mib: Duration,
}

impl Latency {
    /// No service time at all (the network's latency remains).
    pub const ZERO: Latency = Latency {
        base: Duration::ZERO..Duration::ZERO,
        tail_rate: 0.0,
        tail: Duration::ZERO..Duration::ZERO,
        per_mib: Duration::ZERO,
    };

    /// Always exactly `service` (tests that need known windows).
    #[must_use]
    pub const fn fixed(service: Duration) -> Latency {
        Latency {
            base: service..service,
            tail_rate: 0.0,
            tail: service..service,
            per_mib: Duration::ZERO,
        }
    }

    /// One draw for a request moving `body_bytes`.
    pub(crate) fn draw(&self, body_bytes: usize) -> Duration {
        const MIB: u128 = 1024 * 1024;
        let service = if chance(self.tail_rate) {
            uniform(&self.tail)
        } else {
            uniform(&self.base)
        };
        let transfer_nanos = self.per_mib.as_nanos() * body_bytes as u128 / MIB;
        service + Duration::from_nanos(u64::try_from(transfer_nanos).unwrap_or(u64::MAX))
    }

    fn check(&self, what: &str) -> Result<(), String> {
        check_rate(&format!("{what}.tail_rate"), self.tail_rate)?;
        check_range(&format!("{what}.base"), &self.base)?;
        check_range(&format!("{what}.tail"), &self.tail)
    }
}

/// Service times by operation kind. Deletes take a put's time (both are
/// writes of metadata; S3 answers them alike).
#[derive(Clone, Debug, PartialEq)]
pub struct S3Latency {
    /// Gets.
    pub get: Latency,
    /// Puts and deletes.
    pub put: Latency,
    /// List pages.
    pub list: Latency,
}

impl S3Latency {
    /// No service time for any kind.
    pub const ZERO: S3Latency = S3Latency {
        get: Latency::ZERO,
        put: Latency::ZERO,
        list: Latency::ZERO,
    };

    /// The same distribution for every kind.
    #[must_use]
    pub fn all(latency: Latency) -> S3Latency {
        S3Latency {
            get: latency.clone(),
            put: latency.clone(),
            list: latency,
        }
    }

    /// The distribution for `op`.
    #[must_use]
    pub fn for_op(&self, op: &ObjectOp) -> &Latency {
        match op {
            ObjectOp::Get { .. } => &self.get,
            ObjectOp::Put { .. } | ObjectOp::Delete { .. } => &self.put,
            ObjectOp::List { .. } => &self.list,
        }
    }
}

impl Default for S3Latency {
    /// Roughly S3 Standard seen from EC2 in the same region: gets of small
    /// objects in tens of milliseconds, puts a little slower, about one
    /// request in a hundred in a tail up to a second or more, 10–15 ms per
    /// MiB moved.
    fn default() -> Self {
        let ms = Duration::from_millis;
        S3Latency {
            get: Latency {
                base: ms(10)..ms(40),
                tail_rate: 0.01,
                tail: ms(40)..ms(400),
                per_mib: ms(10),
            },
            put: Latency {
                base: ms(20)..ms(60),
                tail_rate: 0.01,
                tail: ms(60)..ms(1_500),
                per_mib: ms(15),
            },
            list: Latency {
                base: ms(20)..ms(80),
                tail_rate: 0.01,
                tail: ms(80)..ms(800),
                per_mib: Duration::ZERO,
            },
        }
    }
}

/// How the store fails while an outage is on.
#[derive(Clone, Debug, PartialEq)]
pub enum Outage {
    /// Every request is answered `503 ServiceUnavailable` (not applied)
    /// after a delay drawn from this range: a regional outage with the
    /// front end still up.
    Errors {
        /// Time to the error answer.
        delay: Range<Duration>,
    },
    /// Every request vanishes: no answer, nothing applied (the client
    /// times out). DNS or load balancer failure, a black-holed route.
    Blackhole,
}

/// Everything the fake S3 does wrong, and how long it takes. Probabilities
/// are per request and between 0 and 1. Change it at run time with
/// [`super::FakeS3::set_faults`]; a request uses the settings in force when
/// it arrived.
#[derive(Clone, Debug, PartialEq)]
pub struct S3Faults {
    /// Service times (not a fault: real S3 takes time too).
    pub latency: S3Latency,
    /// `503 SlowDown` instead of doing the request.
    pub slow_down_rate: f64,
    /// `500 InternalError` instead of doing the request.
    pub internal_error_rate: f64,
    /// `500 InternalError` *after* a put or delete took effect.
    pub error_after_apply_rate: f64,
    /// The request takes effect; its response is dropped.
    pub lost_response_rate: f64,
    /// The store holds the request for [`Self::late_landing_delay`] instead
    /// of its usual service time, then does it (and answers, to a client
    /// that has usually stopped listening).
    pub late_landing_rate: f64,
    /// How long a late request is held (longer than clients wait).
    pub late_landing_delay: Range<Duration>,
    /// A conditional put that arrives while another conditional put on the
    /// same key is in flight is answered `409 ConditionalRequestConflict`
    /// (as [`ObjectError::PreconditionFailed`]) with this probability,
    /// without being applied.
    pub conflict_rate: f64,
    /// The outage in force, if any.
    pub outage: Option<Outage>,
    /// Requests the store holds at once; beyond this every new request is
    /// answered `503 SlowDown` at once (S3 sheds load the same way).
    pub in_flight_max: usize,
}

impl S3Faults {
    /// Real S3 on a good day: default latencies, no failures, no outage.
    #[must_use]
    pub fn none() -> S3Faults {
        S3Faults {
            latency: S3Latency::default(),
            slow_down_rate: 0.0,
            internal_error_rate: 0.0,
            error_after_apply_rate: 0.0,
            lost_response_rate: 0.0,
            late_landing_rate: 0.0,
            late_landing_delay: Duration::from_secs(10)..Duration::from_secs(60),
            conflict_rate: 0.0,
            outage: None,
            in_flight_max: 4_096,
        }
    }

    /// A bad day, far worse than S3's published error rates so that a
    /// short run meets every fault: a few percent of throttling and 500s,
    /// one request in a hundred that takes effect without a usable answer
    /// or lands after its client gave up, and AWS's 409 on every overlap of
    /// conditional puts.
    #[must_use]
    pub fn flaky() -> S3Faults {
        S3Faults {
            slow_down_rate: 0.03,
            internal_error_rate: 0.02,
            error_after_apply_rate: 0.01,
            lost_response_rate: 0.01,
            late_landing_rate: 0.005,
            conflict_rate: 1.0,
            ..S3Faults::none()
        }
    }

    /// Checks that every rate is a probability and every range is ordered.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn check(&self) -> Result<(), String> {
        self.latency.get.check("latency.get")?;
        self.latency.put.check("latency.put")?;
        self.latency.list.check("latency.list")?;
        for (name, rate) in [
            ("slow_down_rate", self.slow_down_rate),
            ("internal_error_rate", self.internal_error_rate),
            ("error_after_apply_rate", self.error_after_apply_rate),
            ("lost_response_rate", self.lost_response_rate),
            ("late_landing_rate", self.late_landing_rate),
            ("conflict_rate", self.conflict_rate),
        ] {
            check_rate(name, rate)?;
        }
        check_range("late_landing_delay", &self.late_landing_delay)?;
        if let Some(Outage::Errors { delay }) = &self.outage {
            check_range("outage delay", delay)?;
        }
        if self.in_flight_max == 0 {
            return Err("in_flight_max must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for S3Faults {
    fn default() -> Self {
        S3Faults::none()
    }
}

/// The kinds of injected faults, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum S3Fault {
    /// `503 SlowDown`, not applied.
    SlowDown,
    /// `500 InternalError`, not applied.
    InternalError,
    /// `409 ConditionalRequestConflict`, not applied.
    Conflict,
    /// Held past the client's patience, then applied.
    LateLanding,
    /// `500 InternalError` after the write took effect.
    ErrorAfterApply,
    /// Applied, response dropped.
    LostResponse,
    /// Answered `503` by an outage.
    OutageError,
    /// Swallowed by an outage.
    OutageDropped,
    /// Refused with `503 SlowDown` because [`S3Faults::in_flight_max`]
    /// requests were in flight.
    Throttled,
}

impl S3Fault {
    /// Every kind, in counting order.
    pub const ALL: [S3Fault; 9] = [
        S3Fault::SlowDown,
        S3Fault::InternalError,
        S3Fault::Conflict,
        S3Fault::LateLanding,
        S3Fault::ErrorAfterApply,
        S3Fault::LostResponse,
        S3Fault::OutageError,
        S3Fault::OutageDropped,
        S3Fault::Throttled,
    ];

    /// A name for run reports (`s3-slow-down` …).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            S3Fault::SlowDown => "s3-slow-down",
            S3Fault::InternalError => "s3-internal-error",
            S3Fault::Conflict => "s3-conflict-409",
            S3Fault::LateLanding => "s3-late-landing",
            S3Fault::ErrorAfterApply => "s3-error-after-apply",
            S3Fault::LostResponse => "s3-lost-response",
            S3Fault::OutageError => "s3-outage-error",
            S3Fault::OutageDropped => "s3-outage-dropped",
            S3Fault::Throttled => "s3-throttled",
        }
    }
}

/// What the store will do with one request, drawn when it arrives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    /// Time from arrival to the decision (and the answer, if any).
    pub hold: Duration,
    /// The decision.
    pub verdict: Verdict,
    /// Faults this plan injects that are certain at arrival (the ones that
    /// depend on the outcome are counted when they happen).
    pub faults: Vec<S3Fault>,
}

/// The store's decision about one request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// No answer, nothing done (outage black hole).
    Drop,
    /// Answer this error after the hold; nothing done.
    Refuse(ObjectError),
    /// Do the request after the hold, then answer as said.
    Apply {
        /// Held past the usual service time.
        late: bool,
        /// What happens to the answer.
        then: AfterApply,
    },
}

/// What happens to the answer of an applied request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterApply {
    /// The real answer goes back.
    Answer,
    /// If a put or delete took effect, `500` instead of the real answer.
    ErrorIfWritten,
    /// No answer.
    Lose,
}

/// The errors S3 answers, as core sees them.
pub(crate) fn slow_down() -> ObjectError {
    ObjectError::Retryable("503 SlowDown: please reduce your request rate".into())
}

pub(crate) fn internal_error() -> ObjectError {
    ObjectError::Retryable("500 InternalError: we encountered an internal error".into())
}

pub(crate) fn service_unavailable() -> ObjectError {
    ObjectError::Retryable("503 ServiceUnavailable: outage".into())
}

impl S3Faults {
    /// Draws the plan for `op`, arriving while `in_flight` requests are held
    /// and `conditional_in_flight` conditional puts on its key are. The
    /// order of the draws is part of the seed's meaning: change it and every
    /// seed replays differently.
    pub(crate) fn plan(
        &self,
        op: &ObjectOp,
        body_bytes: usize,
        in_flight: usize,
        conditional_in_flight: usize,
    ) -> Plan {
        let refuse = |hold, error, fault| Plan {
            hold,
            verdict: Verdict::Refuse(error),
            faults: vec![fault],
        };
        match &self.outage {
            Some(Outage::Errors { delay }) => {
                return refuse(uniform(delay), service_unavailable(), S3Fault::OutageError)
            }
            Some(Outage::Blackhole) => {
                return Plan {
                    hold: Duration::ZERO,
                    verdict: Verdict::Drop,
                    faults: vec![S3Fault::OutageDropped],
                }
            }
            None => {}
        }
        if in_flight >= self.in_flight_max {
            return refuse(Duration::ZERO, slow_down(), S3Fault::Throttled);
        }
        let hold = self.latency.for_op(op).draw(body_bytes);
        if chance(self.slow_down_rate) {
            return refuse(hold, slow_down(), S3Fault::SlowDown);
        }
        if chance(self.internal_error_rate) {
            return refuse(hold, internal_error(), S3Fault::InternalError);
        }
        if is_conditional_put(op) && conditional_in_flight > 0 && chance(self.conflict_rate) {
            return refuse(hold, ObjectError::PreconditionFailed, S3Fault::Conflict);
        }
        let late = chance(self.late_landing_rate);
        let hold = if late {
            uniform(&self.late_landing_delay)
        } else {
            hold
        };
        let is_write = matches!(op, ObjectOp::Put { .. } | ObjectOp::Delete { .. });
        let then = if is_write && chance(self.error_after_apply_rate) {
            AfterApply::ErrorIfWritten
        } else if chance(self.lost_response_rate) {
            AfterApply::Lose
        } else {
            AfterApply::Answer
        };
        Plan {
            hold,
            verdict: Verdict::Apply { late, then },
            faults: if late {
                vec![S3Fault::LateLanding]
            } else {
                Vec::new()
            },
        }
    }
}

/// Whether `op` is a put with a precondition (the ones S3 serialises per
/// key, and answers 409 when they overlap).
pub(crate) fn is_conditional_put(op: &ObjectOp) -> bool {
    matches!(
        op,
        ObjectOp::Put {
            condition: t4_core::object::PutCondition::IfAbsent
                | t4_core::object::PutCondition::IfMatch(_),
            ..
        }
    )
}

/// `true` with probability `rate`; draws nothing at 0 and 1.
fn chance(rate: f64) -> bool {
    if rate <= 0.0 {
        false
    } else if rate >= 1.0 {
        true
    } else {
        thread_rng().gen_bool(rate)
    }
}

/// Uniform in `range`; its start if it is empty (draws nothing then).
fn uniform(range: &Range<Duration>) -> Duration {
    if range.is_empty() {
        range.start
    } else {
        thread_rng().gen_range(range.clone())
    }
}

fn check_rate(name: &str, rate: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("{name} = {rate} is not a probability"))
    }
}

fn check_range(name: &str, range: &Range<Duration>) -> Result<(), String> {
    if range.start <= range.end {
        Ok(())
    } else {
        Err(format!("{name} = {range:?} ends before it starts"))
    }
}
