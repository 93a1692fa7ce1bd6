//! The watch checker: every recorded watch stream ([`WatchRecord`]) against
//! the revision history the run really produced ([`Truth`]), by etcd's
//! documented guarantees (see core's `watch` module docs):
//!
//! - **created first**: the first response answers the create; its header
//!   revision existed. The first revision owed is `start_revision` if
//!   positive, else the created header + 1.
//! - **ordered, unique, reliable**: the events of all responses, concatenated,
//!   are exactly the truth's matching events (range, filters, `prev_kv` only
//!   if asked for and then the truth's, values, kinds) of every revision from
//!   the first owed up to the last one delivered or promised. A **progress**
//!   response (no events, neither created nor canceled, or watch id -1)
//!   promises everything up to its header revision was delivered before it.
//! - **atomic**: a revision's events come in one response.
//! - **headers**: never decrease, never exceed the final revision, and are
//!   at least the revision of the response's last event.
//! - **compaction cancels**: `compact_revision` names a compaction that took
//!   effect (no later than the response's header revision), and the watcher
//!   still needed a revision below it. A cancel without `compact_revision`
//!   needs a reason, or a client-requested cancel ([`WatchEnd::Canceled`]).
//!   Nothing follows a cancel.
//! - **end**: a watch left [`WatchEnd::OpenCaughtUp`] must have everything up
//!   to the final revision; other ends are checked as prefixes.
//!
//! One documented leniency, from etcd: a watcher replayed from history at the
//! compaction watermark `c` gets events of revision `c` without `prev_kv` (the
//! older versions are gone), and not a put that revision `c` itself then
//! overwrote (a txn put then deleted the key; compaction kept only the
//! tombstone). Both are accepted at revision `c` only, and only in responses
//! whose header revision shows compaction `c` had applied.
//!
//! Worked example: watch `"a"` from revision 3 with `prev_kv`; the truth is
//! `put a=1 @2, put a=2 @3, put b=x @4, delete a @5`.
//!
//! ```text
//! response                          next owed  verdict
//! created, header 4                 3          ok (start_revision 3)
//! [a=2 @3 prev a=1]  header 4       4          ok
//! progress, header 4                5          ok: nothing of "a" at 4
//! [delete a @5 prev a=2] header 5   6          ok
//! -- end OpenCaughtUp, final 5: ok. Without the @3 response: "missing
//!    revision 3"; with prev_kv absent at @3: "revision 3 differs".
//! ```

use std::fmt;

use t4_core::kv::{Event, EventType, KeyValue, WatchCreateRequest, WatchFilter};
use t4_core::watch::WatchOutput;

use crate::history::{WatchEnd, WatchRecord};
use crate::truth::Truth;

#[cfg(test)]
mod tests;

/// Events listed at most in one violation message.
const EVENTS_SHOWN_MAX: usize = 8;

/// What the checker looked at (summed over watches by [`check_all`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Watch records checked.
    pub watches: usize,
    /// Responses checked.
    pub responses: usize,
    /// Delivered events compared with the truth.
    pub events_validated: usize,
    /// Progress responses whose promise was checked.
    pub progress_responses: usize,
    /// Legal compaction cancels seen.
    pub compaction_cancels: usize,
}

impl std::ops::AddAssign for WatchStats {
    fn add_assign(&mut self, other: WatchStats) {
        self.watches += other.watches;
        self.responses += other.responses;
        self.events_validated += other.events_validated;
        self.progress_responses += other.progress_responses;
        self.compaction_cancels += other.compaction_cancels;
    }
}

/// A broken watch guarantee, with where it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchViolation {
    /// The client that opened the watch.
    pub client: usize,
    /// The watch: range, start revision, options, how it ended.
    pub watch: String,
    /// Index of the offending response in the record; `None` for the checks
    /// made at the end of the record.
    pub response: Option<usize>,
    /// Responses in the record.
    pub responses: usize,
    /// Header revision of the offending response (the final revision for end
    /// checks).
    pub revision: i64,
    /// What is wrong (may span lines).
    pub what: String,
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "watch violation: client {}, watch {}",
            self.client, self.watch
        )?;
        match self.response {
            Some(i) => write!(
                f,
                "  at response #{i} of {} (header revision {}): ",
                self.responses, self.revision
            )?,
            None => write!(
                f,
                "  at the end, after {} responses (final revision {}): ",
                self.responses, self.revision
            )?,
        }
        for (i, line) in self.what.lines().enumerate() {
            if i > 0 {
                write!(f, "\n    ")?;
            }
            write!(f, "{line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WatchViolation {}

/// Checks every record; the stats are summed. Stops at the first violation.
///
/// # Errors
/// The first violation found, in record order.
pub fn check_all(truth: &Truth, records: &[WatchRecord]) -> Result<WatchStats, WatchViolation> {
    let mut stats = WatchStats::default();
    for w in records {
        stats += check_watch(truth, w)?;
    }
    Ok(stats)
}

/// Checks one watch against the truth. See the module documentation.
///
/// # Errors
/// The first violation found.
pub fn check_watch(truth: &Truth, w: &WatchRecord) -> Result<WatchStats, WatchViolation> {
    let mut c = Checker {
        truth,
        w,
        spec: Spec::of(&w.create),
        watch_id: None,
        created_revision: None,
        first: None,
        next: 0,
        last_header: 0,
        canceled_at: None,
        stats: WatchStats {
            watches: 1,
            ..WatchStats::default()
        },
    };
    for (i, resp) in w.responses.iter().enumerate() {
        c.response(i, resp)
            .map_err(|what| c.violation(Some(i), resp.revision, what))?;
        c.stats.responses += 1;
    }
    c.end()
        .map_err(|what| c.violation(None, truth.final_revision(), what))?;
    Ok(c.stats)
}

/// What the watch matches, from its create request.
#[derive(Clone, Debug)]
struct Spec {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Spec {
    fn of(create: &WatchCreateRequest) -> Spec {
        let has = |f: WatchFilter| create.filters.contains(&(f as i32));
        Spec {
            key: create.key.clone(),
            range_end: create.range_end.clone(),
            no_put: has(WatchFilter::Noput),
            no_delete: has(WatchFilter::Nodelete),
            prev_kv: create.prev_kv,
        }
    }

    /// etcd's range rules: empty end → the key; `[0]` → every key from
    /// `key` on; else `[key, range_end)`.
    fn contains(&self, k: &[u8]) -> bool {
        match self.range_end.as_slice() {
            [] => k == self.key.as_slice(),
            [0] => k >= self.key.as_slice(),
            end => self.key.as_slice() <= k && k < end,
        }
    }

    /// Whether the filters let an event of this type through.
    fn wants(&self, r#type: i32) -> bool {
        if r#type == EventType::Put as i32 {
            !self.no_put
        } else {
            !self.no_delete
        }
    }

    fn matches(&self, e: &Event) -> bool {
        e.kv.as_ref().is_some_and(|kv| self.contains(&kv.key)) && self.wants(e.r#type)
    }
}

/// One event the watcher is owed.
struct Owed {
    /// As the watcher must get it (`prev_kv` only if asked for).
    event: Event,
    /// A put that a later event of the same revision overwrote: a replay
    /// from a watermark at this revision skips it.
    superseded: bool,
}

struct Checker<'a> {
    truth: &'a Truth,
    w: &'a WatchRecord,
    spec: Spec,
    /// From the created response (absent for a refusal, id -1).
    watch_id: Option<i64>,
    created_revision: Option<i64>,
    /// The first revision owed (known once created).
    first: Option<i64>,
    /// The first revision neither delivered nor promised.
    next: i64,
    last_header: i64,
    /// The response that canceled the watch.
    canceled_at: Option<usize>,
    stats: WatchStats,
}

impl Checker<'_> {
    fn violation(&self, response: Option<usize>, revision: i64, what: String) -> WatchViolation {
        WatchViolation {
            client: self.w.client,
            watch: describe(&self.w.create, self.created_revision, self.w.end),
            response,
            responses: self.w.responses.len(),
            revision,
            what,
        }
    }

    /// The events of `rev` owed to this watcher.
    fn owed_at(&self, rev: i64) -> Vec<Owed> {
        let all = self.truth.events_at(rev);
        all.iter()
            .enumerate()
            .filter(|(_, e)| self.spec.matches(e))
            .map(|(i, e)| {
                let key = &e.kv.as_ref().expect("truth events carry a kv").key;
                let superseded = e.r#type == EventType::Put as i32
                    && all[i + 1..]
                        .iter()
                        .any(|later| later.kv.as_ref().is_some_and(|kv| &kv.key == key));
                let mut event = e.clone();
                if !self.spec.prev_kv {
                    event.prev_kv = None;
                }
                Owed { event, superseded }
            })
            .collect()
    }

    /// Whether a response with header `header` may have been served from
    /// history with the watermark at `rev` (see the module doc's leniency).
    fn at_watermark(&self, rev: i64, header: i64) -> bool {
        self.truth
            .compaction_applied_at(rev)
            .is_some_and(|applied_at| applied_at <= header)
    }

    /// Compares the events delivered for revision `rev` with those owed.
    fn match_revision(&self, rev: i64, got: &[Event], header: i64) -> Result<(), String> {
        let owed = self.owed_at(rev);
        let lenient = self.at_watermark(rev, header);
        let mut gi = 0;
        let mut ok = true;
        for o in &owed {
            if got.get(gi) == Some(&o.event) {
                gi += 1;
                continue;
            }
            if lenient {
                let stripped = Event {
                    prev_kv: None,
                    ..o.event.clone()
                };
                if got.get(gi) == Some(&stripped) {
                    gi += 1;
                    continue;
                }
                if o.superseded {
                    continue;
                }
            }
            ok = false;
            break;
        }
        if ok && gi == got.len() {
            return Ok(());
        }
        let owed: Vec<Event> = owed.into_iter().map(|o| o.event).collect();
        let expected = fmt_events(&owed);
        if got.is_empty() {
            return Err(format!(
                "missing revision {rev} (a gap): events owed {expected}"
            ));
        }
        let partial = got.len() < owed.len() && got.iter().all(|g| owed.contains(g));
        let what = if partial {
            format!(
                "revision {rev} incomplete: {} of its {} events in this response (atomicity: a revision comes whole)",
                got.len(),
                owed.len()
            )
        } else {
            format!("revision {rev} differs from the truth")
        };
        Err(format!(
            "{what}\nexpected {expected}\ngot      {}",
            fmt_events(got)
        ))
    }

    /// Every revision in `[self.next, through]` must owe nothing (a
    /// response with header `header` shows they were passed over).
    fn check_nothing_owed(&self, through: i64, header: i64, why: &str) -> Result<(), String> {
        for rev in self.next..=through.min(self.truth.final_revision()) {
            if !self
                .truth
                .events_at(rev)
                .iter()
                .any(|e| self.spec.matches(e))
            {
                continue;
            }
            self.match_revision(rev, &[], header)
                .map_err(|e| format!("{why}: {e}"))?;
        }
        Ok(())
    }

    fn response(&mut self, i: usize, r: &WatchOutput) -> Result<(), String> {
        if let Some(at) = self.canceled_at {
            return Err(format!(
                "a response after the watch was canceled (by response #{at})"
            ));
        }
        // Headers.
        if r.revision < 1 {
            return Err(format!("header revision {} below 1", r.revision));
        }
        if r.revision > self.truth.final_revision() {
            return Err(format!(
                "header revision {} above the final revision {} (a revision the log does not have)",
                r.revision,
                self.truth.final_revision()
            ));
        }
        if r.revision < self.last_header {
            return Err(format!(
                "header revision went backwards: {} after {}",
                r.revision, self.last_header
            ));
        }
        self.last_header = r.revision;
        if !r.canceled && (r.compact_revision != 0 || !r.cancel_reason.is_empty()) {
            return Err(format!(
                "not canceled, yet compact_revision {} / cancel_reason {:?}",
                r.compact_revision, r.cancel_reason
            ));
        }

        // The created response.
        if i == 0 {
            if !r.created {
                return Err("the first response is not `created`".into());
            }
            self.created(r)?;
        } else if r.created {
            return Err("a second `created` response".into());
        } else {
            let own = self.watch_id.is_some_and(|id| id == r.watch_id);
            let stream_progress = r.watch_id == -1 && !r.canceled && r.events.is_empty();
            if !(own || stream_progress) {
                return Err(format!(
                    "response for watch id {} (this watch is {:?}); only progress may come with id -1",
                    r.watch_id, self.watch_id
                ));
            }
        }

        if !r.events.is_empty() {
            if r.created || r.canceled {
                return Err(format!(
                    "{} events in a created/canceled response",
                    r.events.len()
                ));
            }
            self.events(r)?;
        } else if !r.created && !r.canceled {
            self.check_nothing_owed(
                r.revision,
                r.revision,
                &format!(
                    "progress at revision {} before every event up to it",
                    r.revision
                ),
            )?;
            self.next = self.next.max(r.revision + 1);
            self.stats.progress_responses += 1;
        }

        if r.canceled {
            self.canceled(r)?;
            self.canceled_at = Some(i);
        }
        Ok(())
    }

    fn created(&mut self, r: &WatchOutput) -> Result<(), String> {
        self.created_revision = Some(r.revision);
        if r.watch_id == -1 {
            // A refusal: created and canceled at once, with a reason.
            if !r.canceled || r.cancel_reason.is_empty() {
                return Err(format!(
                    "created with watch id -1 must be a refusal (canceled with a reason); canceled {}, reason {:?}",
                    r.canceled, r.cancel_reason
                ));
            }
        } else {
            if self.w.create.watch_id != 0 && r.watch_id != self.w.create.watch_id {
                return Err(format!(
                    "created with watch id {}, but the client asked for {}",
                    r.watch_id, self.w.create.watch_id
                ));
            }
            self.watch_id = Some(r.watch_id);
        }
        let first = if self.w.create.start_revision > 0 {
            self.w.create.start_revision
        } else {
            r.revision + 1
        };
        self.first = Some(first);
        self.next = first;
        Ok(())
    }

    fn events(&mut self, r: &WatchOutput) -> Result<(), String> {
        for (j, e) in r.events.iter().enumerate() {
            let Some(kv) = &e.kv else {
                return Err(format!("event #{j} has no kv"));
            };
            if e.r#type != EventType::Put as i32 && e.r#type != EventType::Delete as i32 {
                return Err(format!("event #{j} has unknown type {}", e.r#type));
            }
            if !self.spec.contains(&kv.key) {
                return Err(format!(
                    "event #{j} is of key {} outside the watched range: {}",
                    fmt_bytes(&kv.key),
                    fmt_event(e)
                ));
            }
            if !self.spec.wants(e.r#type) {
                return Err(format!(
                    "event #{j} should have been filtered out: {}",
                    fmt_event(e)
                ));
            }
            if e.prev_kv.is_some() && !self.spec.prev_kv {
                return Err(format!(
                    "event #{j} carries prev_kv, which the watch did not ask for: {}",
                    fmt_event(e)
                ));
            }
        }
        let last_rev = r
            .events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(0, |kv| kv.mod_revision);
        if r.revision < last_rev {
            return Err(format!(
                "header revision {} below its last event's revision {last_rev}",
                r.revision
            ));
        }
        let first = self.first.expect("events come after created");
        for group in r.events.chunk_by(|a, b| mod_revision(a) == mod_revision(b)) {
            let rev = mod_revision(&group[0]);
            if rev < first {
                return Err(format!(
                    "event at revision {rev}, before the first revision owed {first}: {}",
                    fmt_event(&group[0])
                ));
            }
            if rev < self.next {
                return Err(format!(
                    "event at revision {rev}, but everything up to {} was already delivered or promised (duplicate or out of order): {}",
                    self.next - 1,
                    fmt_event(&group[0])
                ));
            }
            self.check_nothing_owed(rev - 1, r.revision, "events skipped")?;
            self.match_revision(rev, group, r.revision)?;
            self.stats.events_validated += group.len();
            self.next = rev + 1;
        }
        Ok(())
    }

    fn canceled(&mut self, r: &WatchOutput) -> Result<(), String> {
        if r.compact_revision < 0 {
            return Err(format!("negative compact_revision {}", r.compact_revision));
        }
        if r.compact_revision == 0 {
            if r.cancel_reason.is_empty() && self.w.end != WatchEnd::Canceled {
                return Err(
                    "canceled with neither a reason nor a compact_revision, and the client did not cancel it"
                        .into(),
                );
            }
            return Ok(());
        }
        let c = r.compact_revision;
        let Some(applied_at) = self.truth.compaction_applied_at(c) else {
            return Err(format!(
                "canceled as compacted at {c}, which is not a compaction that took effect (those: {:?})",
                self.truth.compactions()
            ));
        };
        if applied_at > r.revision {
            return Err(format!(
                "canceled as compacted at {c} with header revision {}, but that compaction applied only at revision {applied_at}",
                r.revision
            ));
        }
        if self.next >= c {
            return Err(format!(
                "canceled as compacted at {c}, but the watcher was not behind: it needed revision {} next",
                self.next
            ));
        }
        self.stats.compaction_cancels += 1;
        Ok(())
    }

    fn end(&self) -> Result<(), String> {
        let open = matches!(self.w.end, WatchEnd::Open | WatchEnd::OpenCaughtUp);
        match self.canceled_at {
            Some(at) if open => {
                return Err(format!(
                    "recorded as {:?}, but response #{at} canceled it",
                    self.w.end
                ));
            }
            None if self.w.end == WatchEnd::Canceled => {
                return Err("recorded as Canceled, but no response canceled it".into());
            }
            _ => {}
        }
        if self.w.end != WatchEnd::OpenCaughtUp {
            return Ok(());
        }
        if self.first.is_none() {
            return Err("recorded as OpenCaughtUp, but never created".into());
        }
        let final_revision = self.truth.final_revision();
        self.check_nothing_owed(
            final_revision,
            final_revision,
            &format!("missed events at the end (caught up to {final_revision} expected)"),
        )
    }
}

fn mod_revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// The watch, for messages: range, start, options, end.
fn describe(create: &WatchCreateRequest, created_revision: Option<i64>, end: WatchEnd) -> String {
    let range = match create.range_end.as_slice() {
        [] => format!("key {}", fmt_bytes(&create.key)),
        [0] if create.key == [0] => "every key".to_owned(),
        [0] => format!("keys >= {}", fmt_bytes(&create.key)),
        e => format!("keys [{}, {})", fmt_bytes(&create.key), fmt_bytes(e)),
    };
    let start = match (create.start_revision, created_revision) {
        (s, _) if s > 0 => format!("from revision {s}"),
        (_, Some(c)) => format!("from now (created at {c}, so from {})", c + 1),
        (_, None) => "from now".to_owned(),
    };
    let mut opts = Vec::new();
    if create.prev_kv {
        opts.push("prev_kv".to_owned());
    }
    for f in &create.filters {
        opts.push(match WatchFilter::try_from(*f) {
            Ok(WatchFilter::Noput) => "no puts".to_owned(),
            Ok(WatchFilter::Nodelete) => "no deletes".to_owned(),
            Err(_) => format!("filter {f}"),
        });
    }
    if create.progress_notify {
        opts.push("progress_notify".to_owned());
    }
    if create.watch_id != 0 {
        opts.push(format!("id {}", create.watch_id));
    }
    let opts = if opts.is_empty() {
        String::new()
    } else {
        format!(" ({})", opts.join(", "))
    };
    format!("{range} {start}{opts}, ended {end:?}")
}

fn fmt_bytes(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

fn fmt_kv(kv: &KeyValue) -> String {
    let lease = if kv.lease != 0 {
        format!(" lease {}", kv.lease)
    } else {
        String::new()
    };
    format!(
        "{}={}@{} c{} v{}{lease}",
        fmt_bytes(&kv.key),
        fmt_bytes(&kv.value),
        kv.mod_revision,
        kv.create_revision,
        kv.version
    )
}

fn fmt_event(e: &Event) -> String {
    let kind = match EventType::try_from(e.r#type) {
        Ok(EventType::Put) => "PUT".to_owned(),
        Ok(EventType::Delete) => "DEL".to_owned(),
        Err(_) => format!("type{}", e.r#type),
    };
    let kv = e.kv.as_ref().map_or("<no kv>".to_owned(), fmt_kv);
    match &e.prev_kv {
        Some(p) => format!("{kind} {kv} [prev {}]", fmt_kv(p)),
        None => format!("{kind} {kv}"),
    }
}

fn fmt_events(events: &[Event]) -> String {
    let mut out: Vec<String> = events
        .iter()
        .take(EVENTS_SHOWN_MAX)
        .map(fmt_event)
        .collect();
    if events.len() > EVENTS_SHOWN_MAX {
        out.push(format!("... and {} more", events.len() - EVENTS_SHOWN_MAX));
    }
    format!("[{}]", out.join(", "))
}
