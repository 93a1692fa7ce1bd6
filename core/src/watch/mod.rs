//! Watches (ARCHITECTURE §3.9): the sans-I/O watch hub of one node.
//!
//! A driver opens watch *streams* (one per etcd `Watch` gRPC call) and feeds
//! the hub what clients ask ([`WatchInput`]); the hub answers with
//! [`WatchOutput`]s, each one etcd `WatchResponse` for one stream.
//!
//! Events come from two places:
//! - **live**: after each applied entry the node hands the hub that entry's
//!   events ([`crate::mvcc::Applied::events`], read once however many
//!   watchers match). [`WatchHub::on_applied`] takes no engine view at all:
//!   matching is an in-memory index lookup (`range::RangeIndex`), so a put
//!   seen by a thousand watchers costs a thousand clones, not a read;
//! - **history**: a watcher whose start revision is in the past, or which
//!   fell behind, is served from the engine's revision log, a bounded chunk
//!   at a time ([`WatchConfig::catch_up_events_max`]), until it reaches the
//!   current revision and turns live.
//!
//! Guarantees (etcd's): ordered, unique, reliable (no gap: a watcher whose
//! history was compacted away is cancelled with `compact_revision`, never
//! skipped), atomic (all events of one revision in one output), resumable,
//! bookmarkable (progress notifications).
//!
//! # Watcher states
//!
//! Every watcher has a `next_rev`: the first revision it has not been given.
//!
//! - **synced**: indexed by key range; gets live events of revisions
//!   `>= next_rev` (a start revision in the future waits here, as etcd's
//!   `minRev`). One output per revision with matching events, after filters.
//! - **unsynced**: not indexed; `next_rev <= current`. Served by catch-up
//!   steps in [`WatchHub::handle_timeout`]: one step reads one chunk of whole
//!   revisions from the smallest `next_rev` among the watchers that may
//!   proceed, and gives each of them, in one output, its events of the chunk
//!   from its own `next_rev` on. A watcher that reaches the current revision
//!   turns synced; nothing can be applied in between (the node applies and
//!   catches up on one thread), so no revision falls between history and
//!   live.
//!
//! # Flow control
//!
//! A stream counts the outputs emitted and not yet reported
//! [`WatchInput::Consumed`]. When that count reaches
//! [`WatchConfig::stream_buffer_max`] the stream **stalls**: no event output
//! goes to it; a synced watcher with events for it turns unsynced at the
//! first revision it missed. The stall ends when the count is back to half
//! the bound; the stream's unsynced watchers then catch up from history (not
//! from memory). If compaction passed a watcher's `next_rev` in the meantime,
//! it is cancelled with `compact_revision` (the compaction is seen in
//! [`WatchHub::on_applied`] and checked again before each history read).
//!
//! Control outputs (created, canceled, progress) are emitted even to a
//! stalled stream: they are few (one per client request, plus at most one
//! periodic progress per watcher and interval, which is skipped while
//! stalled), so the bound is exceeded by at most that much.
//!
//! ```text
//! stream_buffer_max = 2, watcher w on "a" (synced, its `created` consumed)
//! put a @5  → out#1 w [a@5]                 outstanding 1
//! put a @6  → out#2 w [a@6]                 outstanding 2 → stalled
//! put a @7  → (no room) w unsynced, next_rev 7
//! put a @8  → (w not indexed)               nothing
//! Consumed 1 → outstanding 1 = 2/2: stall ends, catch-up due
//! timeout   → history [7, 8]: out#3 w [a@7, a@8]; w synced (current 8)
//! ```
//!
//! # Bounds
//!
//! Streams ([`STREAMS_MAX`]) and watchers ([`WATCHERS_MAX`]) are capped by
//! generous constants; a create beyond them is refused with a cancel. Event
//! outputs per stream are bounded as above; a history read is bounded by
//! [`WatchConfig::catch_up_events_max`] rounded up to a whole revision (a
//! revision's size is bounded by the request limits). Work per
//! [`WatchHub::handle_timeout`] call is one history chunk, so other inputs
//! are served between chunks ([`WatchHub::poll_timeout`] answers "now" while
//! a catch-up is due).
//!
//! # etcd details kept
//!
//! - Watch ids are per stream; id 0 asks for one, assigned like etcd's
//!   `nextID`: a per-stream counter from 0 that skips ids in use and never
//!   goes back (a cancelled auto id is not handed out again by the counter).
//! - Refusals (empty range, duplicate id) answer `created` and `canceled`
//!   with watch id -1 and etcd's error text as `cancel_reason`.
//! - Cancelling an unknown id sends nothing.
//! - A progress request is answered with watch id -1 at the current revision
//!   once every watcher of the stream is synced (etcd 3.5; a stream without
//!   watchers is answered at once, like etcd 3.4, where 3.5 sends nothing).
//! - Headers carry the current revision when the output is made; for live
//!   events that is the events' revision.
//! - `prev_kv` is the key at `mod_revision - 1`, as etcd reads it: absent for
//!   events at the compaction watermark replayed from history, and, when a
//!   txn puts a key and then deletes it, the delete's `prev_kv` is the key
//!   before the txn (live events are normalized to this).
//! - Replay from the watermark revision skips a put that the same revision
//!   then deleted (compaction dropped its version; etcd loses it too). Delete
//!   events at the watermark are still sent (the revision log keeps them,
//!   where etcd's backend does not).
//!
//! Beyond etcd: a storage failure while reading history cancels the
//! watchers that needed the read, with `cancel_reason` saying so (the client
//! re-watches); a create on a stream that is not open, or beyond
//! [`WATCHERS_MAX`], is refused like an empty range, with t4's own reason.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::engine::KvRead;
use crate::kv::{Event, EventType, WatchCreateRequest, WatchFilter};
use crate::mvcc::Meta;
use crate::types::Time;

mod history;
mod range;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

use history::Rebuilt;
pub use range::ERR_EMPTY_RANGE;
use range::{KeyRange, RangeIndex};

/// etcd's answer to a client-chosen watch id already in use on the stream.
pub const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// Answer to a create beyond [`WATCHERS_MAX`].
pub const ERR_TOO_MANY_WATCHERS: &str = "t4: too many watchers";
/// Answer to a create on a stream that is not open (never opened, closed, or
/// refused because [`STREAMS_MAX`] streams were open).
pub const ERR_STREAM_NOT_OPEN: &str = "t4: watch stream is not open";

/// Most streams open at once; an `OpenStream` beyond it is ignored, so the
/// stream's creates are refused with [`ERR_STREAM_NOT_OPEN`].
pub const STREAMS_MAX: usize = 1 << 16;
/// Most watchers at once over all streams.
pub const WATCHERS_MAX: usize = 1 << 20;

/// Identifies one watch stream; chosen by the driver, unique while open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// Hub configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Outputs a stream may have outstanding (emitted, not yet reported
    /// consumed with [`WatchInput::Consumed`]). Beyond it the stream's
    /// watchers stop receiving live events and later catch up from history.
    pub stream_buffer_max: usize,
    /// Progress notification interval for watchers that asked for them
    /// (etcd: 10 minutes).
    pub progress_interval_nanos: u64,
    /// Most events read from history in one step (the step continues at
    /// once, but other inputs are served in between).
    pub catch_up_events_max: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            stream_buffer_max: 1024,
            progress_interval_nanos: 600 * 1_000_000_000,
            catch_up_events_max: 1024,
        }
    }
}

/// What a client asks of the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchInput {
    /// A stream opened.
    OpenStream {
        /// The stream.
        stream: StreamId,
    },
    /// etcd `WatchCreateRequest` on a stream.
    Create {
        /// The stream.
        stream: StreamId,
        /// The request.
        req: WatchCreateRequest,
    },
    /// etcd `WatchCancelRequest`. An unknown id is ignored (as etcd).
    Cancel {
        /// The stream.
        stream: StreamId,
        /// The watch.
        watch_id: i64,
    },
    /// etcd `WatchProgressRequest`.
    Progress {
        /// The stream.
        stream: StreamId,
    },
    /// The driver handed `outputs` of the stream's outputs to the client
    /// (flow control).
    Consumed {
        /// The stream.
        stream: StreamId,
        /// How many outputs.
        outputs: usize,
    },
    /// The stream closed; its watchers go.
    CloseStream {
        /// The stream.
        stream: StreamId,
    },
}

/// One etcd `WatchResponse` for one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOutput {
    /// The stream it goes to.
    pub stream: StreamId,
    /// The watch (-1 for a stream-wide progress response).
    pub watch_id: i64,
    /// Header revision.
    pub revision: i64,
    /// Answer to a create.
    pub created: bool,
    /// The watch ended.
    pub canceled: bool,
    /// Why it was cancelled (empty when not, or compacted).
    pub cancel_reason: String,
    /// Set with `canceled` when the watcher's history was compacted away.
    pub compact_revision: i64,
    /// The events, of whole revisions, in order.
    pub events: Vec<Event>,
}

/// A watcher's identity inside the hub (creation order). Watch ids are only
/// unique per stream; this one is unique for the hub's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WatcherId(u64);

/// One watcher. See the module documentation for the states.
#[derive(Debug)]
struct Watcher {
    stream: StreamId,
    watch_id: i64,
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    /// Synced: the first revision it may receive (above the current one for
    /// a future start). Unsynced: the next revision to read from history,
    /// `<= current` and `>=` the compaction watermark.
    next_rev: i64,
    synced: bool,
    /// When the next periodic progress notification is due (only watchers
    /// created with `progress_notify`); mirrored in [`WatchHub::notify`].
    notify_at: Option<Time>,
}

impl Watcher {
    /// Whether the filters let an event of etcd type `r#type` through.
    fn wants(&self, r#type: i32) -> bool {
        if r#type == EventType::Put as i32 {
            !self.no_put
        } else {
            !self.no_delete
        }
    }

    /// The event as this watcher gets it: `prev_kv` only if asked for.
    fn shape(&self, event: &Event) -> Event {
        Event {
            r#type: event.r#type,
            kv: event.kv.clone(),
            prev_kv: if self.prev_kv {
                event.prev_kv.clone()
            } else {
                None
            },
        }
    }
}

/// One open stream.
#[derive(Debug, Default)]
struct Stream {
    /// Watch id → watcher.
    watchers: BTreeMap<i64, WatcherId>,
    /// etcd's `nextID`: where the search for a free automatic id starts.
    next_auto_id: i64,
    /// The stream's watchers that are not synced.
    unsynced: BTreeSet<WatcherId>,
    /// Outputs emitted and not yet reported consumed.
    outstanding: usize,
    /// Set when `outstanding` reached the bound; cleared at half of it. No
    /// event output goes to a stalled stream. Invariant: `!stalled` implies
    /// `outstanding < stream_buffer_max`.
    stalled: bool,
    /// A progress request waits for every watcher to be synced.
    progress_pending: bool,
}

/// The watch hub. See the module documentation.
#[derive(Debug)]
pub struct WatchHub {
    config: WatchConfig,
    streams: BTreeMap<StreamId, Stream>,
    watchers: BTreeMap<WatcherId, Watcher>,
    next_watcher: u64,
    /// Synced watchers by key range (live fan-out).
    synced: RangeIndex,
    /// Streams with unsynced watchers that may catch up now (not stalled).
    ready: BTreeSet<StreamId>,
    /// Periodic progress notifications, by due time.
    notify: BTreeSet<(Time, WatcherId)>,
    outputs: VecDeque<WatchOutput>,
    /// The latest `now` seen (time never goes back here).
    now: Time,
    /// The compaction watermark last seen.
    compact_revision: i64,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub::new(WatchConfig::default())
    }
}

impl WatchHub {
    /// An empty hub.
    ///
    /// # Panics
    /// A zero `stream_buffer_max`, `catch_up_events_max` or
    /// `progress_interval_nanos`.
    #[must_use]
    pub fn new(config: WatchConfig) -> WatchHub {
        assert!(
            config.stream_buffer_max > 0,
            "watch: stream_buffer_max must be positive"
        );
        assert!(
            config.catch_up_events_max > 0,
            "watch: catch_up_events_max must be positive"
        );
        assert!(
            config.progress_interval_nanos > 0,
            "watch: progress_interval_nanos must be positive"
        );
        WatchHub {
            config,
            streams: BTreeMap::new(),
            watchers: BTreeMap::new(),
            next_watcher: 0,
            synced: RangeIndex::default(),
            ready: BTreeSet::new(),
            notify: BTreeSet::new(),
            outputs: VecDeque::new(),
            now: Time(0),
            compact_revision: -1,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// Watchers alive, over all streams.
    #[must_use]
    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Streams open.
    #[must_use]
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// A client input; `view` and `meta` are the store as applied so far.
    ///
    /// Inputs never read history: a create whose start revision is in the
    /// past answers `created` here and is served by the catch-up steps of
    /// [`WatchHub::handle_timeout`] (which [`WatchHub::poll_timeout`] then
    /// asks for at once).
    pub fn handle<R: KvRead>(&mut self, now: Time, input: WatchInput, view: &R, meta: &Meta) {
        let _ = view;
        self.advance(now, meta);
        let current = meta.current_revision;
        match input {
            WatchInput::OpenStream { stream } => self.open(stream),
            WatchInput::Create { stream, req } => self.create(stream, &req, meta),
            WatchInput::Cancel { stream, watch_id } => self.cancel(stream, watch_id, current),
            WatchInput::Progress { stream } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.progress_pending = true;
                    self.answer_deferred_progress(stream, current);
                }
            }
            WatchInput::Consumed { stream, outputs } => self.consumed(stream, outputs),
            WatchInput::CloseStream { stream } => self.close(stream),
        }
    }

    /// An entry applied: `events` (possibly empty) at `meta.current_revision`;
    /// `meta` may also carry a new compaction watermark.
    ///
    /// Needs no engine: the events are matched in memory against the synced
    /// watchers; each gets one output with its events of the revision (after
    /// filters, `prev_kv` stripped unless asked for), or, if its stream is
    /// stalled, turns unsynced at this revision.
    ///
    /// # Panics
    /// An event without a kv or at another revision than
    /// `meta.current_revision`.
    pub fn on_applied(&mut self, now: Time, meta: &Meta, events: &[Event]) {
        self.advance(now, meta);
        if events.is_empty() {
            return;
        }
        let rev = meta.current_revision;
        // (watcher, event index) for every match, then grouped by watcher
        // with the events in sub-revision order.
        let mut pairs: Vec<(WatcherId, usize)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let kv = event.kv.as_ref().expect("an applied event carries its key");
            assert_eq!(
                kv.mod_revision, rev,
                "watch: event of {:?} at {} applied at revision {rev}",
                kv.key, kv.mod_revision
            );
            self.synced
                .for_each_match(&kv.key, |wid| pairs.push((wid, i)));
        }
        pairs.sort_unstable();
        let mut start = 0;
        while start < pairs.len() {
            let wid = pairs[start].0;
            let end = start + pairs[start..].partition_point(|&(w, _)| w == wid);
            let w = self.watchers.get(&wid).expect("indexed watchers exist");
            debug_assert!(w.synced, "only synced watchers are indexed");
            let batch: Vec<Event> = if rev < w.next_rev {
                Vec::new() // starts at a future revision (etcd minRev)
            } else {
                pairs[start..end]
                    .iter()
                    .map(|&(_, i)| &events[i])
                    .filter(|e| w.wants(e.r#type))
                    .map(|e| w.shape(e))
                    .collect()
            };
            start = end;
            if batch.is_empty() {
                continue;
            }
            let (sid, watch_id) = (w.stream, w.watch_id);
            if self
                .streams
                .get(&sid)
                .expect("a watcher's stream is open")
                .stalled
            {
                self.unsync(wid, rev);
                continue;
            }
            self.watchers.get_mut(&wid).expect("exists").next_rev = rev + 1;
            self.emit(WatchOutput {
                stream: sid,
                watch_id,
                revision: rev,
                events: batch,
                ..WatchOutput::default()
            });
            self.touch(wid);
        }
    }

    /// When [`WatchHub::handle_timeout`] has work (progress notifications,
    /// or history catch-up to continue: then `now` itself).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let catch_up = (!self.ready.is_empty()).then_some(self.now);
        let notify = self.notify.first().map(|&(at, _)| at);
        catch_up.into_iter().chain(notify).min()
    }

    /// Timed work: progress notifications that are due, then one catch-up
    /// step (one bounded history chunk for every watcher that may proceed).
    pub fn handle_timeout<R: KvRead>(&mut self, now: Time, view: &R, meta: &Meta) {
        self.advance(now, meta);
        self.notify_progress(meta.current_revision);
        self.catch_up(view, meta);
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<WatchOutput> {
        self.outputs.pop_front()
    }

    // ----- inputs -----

    fn open(&mut self, sid: StreamId) {
        if self.streams.contains_key(&sid) {
            tracing::warn!(stream = sid.0, "watch stream opened twice; ignored");
            return;
        }
        if self.streams.len() >= STREAMS_MAX {
            tracing::warn!(stream = sid.0, "too many watch streams; stream refused");
            return;
        }
        self.streams.insert(sid, Stream::default());
    }

    fn create(&mut self, sid: StreamId, req: &WatchCreateRequest, meta: &Meta) {
        let current = meta.current_revision;
        let refusal = |reason: &str| WatchOutput {
            stream: sid,
            watch_id: -1,
            revision: current,
            created: true,
            canceled: true,
            cancel_reason: reason.to_owned(),
            ..WatchOutput::default()
        };
        if !self.streams.contains_key(&sid) {
            // Not counted against any stream: there is none.
            self.outputs.push_back(refusal(ERR_STREAM_NOT_OPEN));
            return;
        }
        let range = match KeyRange::new(&req.key, &req.range_end) {
            Ok(range) => range,
            Err(reason) => return self.emit(refusal(reason)),
        };
        if self.watchers.len() >= WATCHERS_MAX {
            return self.emit(refusal(ERR_TOO_MANY_WATCHERS));
        }
        let stream = self.streams.get_mut(&sid).expect("checked above");
        let watch_id = if req.watch_id == 0 {
            while stream.watchers.contains_key(&stream.next_auto_id) {
                stream.next_auto_id += 1;
            }
            stream.next_auto_id += 1;
            stream.next_auto_id - 1
        } else if stream.watchers.contains_key(&req.watch_id) {
            return self.emit(refusal(ERR_DUPLICATE_ID));
        } else {
            req.watch_id
        };
        self.emit(WatchOutput {
            stream: sid,
            watch_id,
            revision: current,
            created: true,
            ..WatchOutput::default()
        });
        let start = if req.start_revision <= 0 {
            current + 1
        } else {
            req.start_revision
        };
        if start < meta.compact_revision {
            // etcd: created, then cancelled by the sync loop.
            return self.emit(WatchOutput {
                stream: sid,
                watch_id,
                revision: current,
                canceled: true,
                compact_revision: meta.compact_revision,
                ..WatchOutput::default()
            });
        }
        let wid = WatcherId(self.next_watcher);
        self.next_watcher += 1;
        let has = |f: WatchFilter| req.filters.contains(&(f as i32));
        let watcher = Watcher {
            stream: sid,
            watch_id,
            range,
            no_put: has(WatchFilter::Noput),
            no_delete: has(WatchFilter::Nodelete),
            prev_kv: req.prev_kv,
            next_rev: start,
            synced: start > current,
            notify_at: req
                .progress_notify
                .then(|| self.now.plus_nanos(self.config.progress_interval_nanos)),
        };
        let stream = self.streams.get_mut(&sid).expect("checked above");
        stream.watchers.insert(watch_id, wid);
        if watcher.synced {
            self.synced.insert(&watcher.range, wid);
        } else {
            stream.unsynced.insert(wid);
        }
        if let Some(at) = watcher.notify_at {
            self.notify.insert((at, wid));
        }
        self.watchers.insert(wid, watcher);
        self.refresh(sid);
    }

    fn cancel(&mut self, sid: StreamId, watch_id: i64, current: i64) {
        let Some(&wid) = self
            .streams
            .get(&sid)
            .and_then(|s| s.watchers.get(&watch_id))
        else {
            return; // etcd ignores an unknown id
        };
        self.remove_watcher(wid);
        self.emit(WatchOutput {
            stream: sid,
            watch_id,
            revision: current,
            canceled: true,
            ..WatchOutput::default()
        });
        self.answer_deferred_progress(sid, current);
    }

    fn consumed(&mut self, sid: StreamId, outputs: usize) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        if outputs > s.outstanding {
            tracing::warn!(
                stream = sid.0,
                outputs,
                outstanding = s.outstanding,
                "watch stream reports more outputs consumed than emitted"
            );
        }
        s.outstanding = s.outstanding.saturating_sub(outputs);
        if s.stalled && s.outstanding <= self.config.stream_buffer_max / 2 {
            s.stalled = false;
        }
        self.refresh(sid);
    }

    fn close(&mut self, sid: StreamId) {
        let Some(s) = self.streams.remove(&sid) else {
            return;
        };
        for wid in s.watchers.values() {
            let w = self
                .watchers
                .remove(wid)
                .expect("a stream's watchers exist");
            if w.synced {
                self.synced.remove(&w.range, *wid);
            }
            if let Some(at) = w.notify_at {
                self.notify.remove(&(at, *wid));
            }
        }
        self.ready.remove(&sid);
        self.outputs.retain(|o| o.stream != sid);
    }

    // ----- timed work -----

    /// Periodic progress for synced watchers of non-stalled streams that
    /// sent nothing for an interval; every due watcher is rescheduled.
    fn notify_progress(&mut self, current: i64) {
        let due: Vec<(Time, WatcherId)> = self
            .notify
            .range(..=(self.now, WatcherId(u64::MAX)))
            .copied()
            .collect();
        let next = self.now.plus_nanos(self.config.progress_interval_nanos);
        for (at, wid) in due {
            self.notify.remove(&(at, wid));
            self.notify.insert((next, wid));
            let w = self
                .watchers
                .get_mut(&wid)
                .expect("scheduled watchers exist");
            w.notify_at = Some(next);
            let (sid, watch_id, synced) = (w.stream, w.watch_id, w.synced);
            if synced && !self.streams.get(&sid).expect("open").stalled {
                self.emit(WatchOutput {
                    stream: sid,
                    watch_id,
                    revision: current,
                    ..WatchOutput::default()
                });
            }
        }
    }

    /// One catch-up step: reads one chunk of history from the smallest
    /// `next_rev` among the unsynced watchers of ready streams and gives each
    /// of them its events of the chunk in one output.
    fn catch_up<R: KvRead>(&mut self, view: &R, meta: &Meta) {
        if self.ready.is_empty() {
            return;
        }
        let current = meta.current_revision;
        let mut eligible: Vec<WatcherId> = self
            .ready
            .iter()
            .flat_map(|sid| self.streams[sid].unsynced.iter().copied())
            .collect();
        eligible.sort_unstable();
        let mut index = RangeIndex::default();
        let mut from = i64::MAX;
        for wid in &eligible {
            let w = &self.watchers[wid];
            assert!(
                !w.synced && self.compact_revision <= w.next_rev && w.next_rev <= current,
                "watch: unsynced watcher {wid:?} at {} (compacted {}, current {current})",
                w.next_rev,
                self.compact_revision
            );
            index.insert(&w.range, *wid);
            from = from.min(w.next_rev);
        }
        let chunk = match history::read_chunk(view, from, current, self.config.catch_up_events_max)
        {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::error!(error = %e, from, "watch history read failed");
                for wid in eligible {
                    self.fail(wid, &e.to_string(), current);
                }
                return;
            }
        };
        assert!(
            chunk.through >= from,
            "a chunk covers at least its first revision"
        );
        let mut pairs: Vec<(WatcherId, usize)> = Vec::new();
        for (i, logged) in chunk.events.iter().enumerate() {
            let r#type = match logged.kind {
                crate::mvcc::EventKind::Put => EventType::Put,
                crate::mvcc::EventKind::Delete => EventType::Delete,
            } as i32;
            index.for_each_match(&logged.key, |wid| {
                let w = &self.watchers[&wid];
                debug_assert!(
                    w.range.contains(&logged.key),
                    "index match outside the range"
                );
                if logged.rev.main >= w.next_rev && w.wants(r#type) {
                    pairs.push((wid, i));
                }
            });
        }
        pairs.sort_unstable();
        let mut resolved: Vec<Option<Rebuilt>> = vec![None; chunk.events.len()];
        let mut touched = BTreeSet::new();
        let mut next_pair = 0;
        for wid in eligible {
            let end = next_pair + pairs[next_pair..].partition_point(|&(w, _)| w == wid);
            let mine = &pairs[next_pair..end];
            next_pair = end;
            let w = &self.watchers[&wid];
            let (sid, watch_id, with_prev) = (w.stream, w.watch_id, w.prev_kv);
            touched.insert(sid);
            if w.next_rev > chunk.through {
                debug_assert!(mine.is_empty(), "no events below next_rev were matched");
                continue;
            }
            let mut batch = Vec::with_capacity(mine.len());
            let mut failure = None;
            for &(_, i) in mine {
                if resolved[i].is_none() {
                    match history::resolve(view, &chunk.events[i], self.compact_revision) {
                        Ok(r) => resolved[i] = Some(r),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                let Some(Rebuilt::Event { event, prev }) = &resolved[i] else {
                    continue; // compacted away at the watermark (see `Rebuilt`)
                };
                let mut event = event.clone();
                if with_prev {
                    event.prev_kv.clone_from(prev);
                }
                batch.push(event);
            }
            if let Some(e) = failure {
                tracing::error!(error = %e, "watch history read failed");
                self.fail(wid, &e.to_string(), current);
                continue;
            }
            if !batch.is_empty() {
                if self.streams[&sid].stalled {
                    continue; // waits for the stream to drain
                }
                self.emit(WatchOutput {
                    stream: sid,
                    watch_id,
                    revision: current,
                    events: batch,
                    ..WatchOutput::default()
                });
                self.touch(wid);
            }
            let w = self.watchers.get_mut(&wid).expect("exists");
            w.next_rev = chunk.through + 1;
            if w.next_rev > current {
                self.mark_synced(wid);
            }
        }
        debug_assert_eq!(
            next_pair,
            pairs.len(),
            "every match belongs to an eligible watcher"
        );
        for sid in touched {
            self.answer_deferred_progress(sid, current);
            self.refresh(sid);
        }
    }

    // ----- state changes -----

    /// Time and the compaction watermark: a watermark above an unsynced
    /// watcher's `next_rev` cancels it with `compact_revision` (its history
    /// is gone; skipping it would be a silent gap).
    fn advance(&mut self, now: Time, meta: &Meta) {
        self.now = self.now.max(now);
        if meta.compact_revision <= self.compact_revision {
            return;
        }
        self.compact_revision = meta.compact_revision;
        let doomed: Vec<WatcherId> = self
            .streams
            .values()
            .flat_map(|s| s.unsynced.iter().copied())
            .filter(|wid| self.watchers[wid].next_rev < self.compact_revision)
            .collect();
        for wid in doomed {
            let w = self.remove_watcher(wid);
            self.emit(WatchOutput {
                stream: w.stream,
                watch_id: w.watch_id,
                revision: meta.current_revision,
                canceled: true,
                compact_revision: self.compact_revision,
                ..WatchOutput::default()
            });
            self.answer_deferred_progress(w.stream, meta.current_revision);
        }
    }

    /// Cancels a watcher whose history could not be read.
    fn fail(&mut self, wid: WatcherId, why: &str, current: i64) {
        let w = self.remove_watcher(wid);
        self.emit(WatchOutput {
            stream: w.stream,
            watch_id: w.watch_id,
            revision: current,
            canceled: true,
            cancel_reason: format!("t4: watch history read failed: {why}"),
            ..WatchOutput::default()
        });
        self.answer_deferred_progress(w.stream, current);
    }

    /// Queues an output and counts it against its stream.
    fn emit(&mut self, out: WatchOutput) {
        let sid = out.stream;
        if let Some(s) = self.streams.get_mut(&sid) {
            s.outstanding += 1;
            if s.outstanding >= self.config.stream_buffer_max {
                s.stalled = true;
            }
        }
        self.outputs.push_back(out);
        self.refresh(sid);
    }

    /// Sends the stream's pending progress response once every watcher of
    /// it is synced.
    fn answer_deferred_progress(&mut self, sid: StreamId, current: i64) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        if !s.progress_pending || !s.unsynced.is_empty() {
            return;
        }
        s.progress_pending = false;
        self.emit(WatchOutput {
            stream: sid,
            watch_id: -1,
            revision: current,
            ..WatchOutput::default()
        });
    }

    /// Keeps [`WatchHub::ready`] in step with the stream's state.
    fn refresh(&mut self, sid: StreamId) {
        let ready = self.streams.get(&sid).is_some_and(|s| {
            assert!(
                s.stalled || s.outstanding < self.config.stream_buffer_max,
                "watch: stream {sid:?} full ({}) but not stalled",
                s.outstanding
            );
            !s.stalled && !s.unsynced.is_empty()
        });
        if ready {
            self.ready.insert(sid);
        } else {
            self.ready.remove(&sid);
        }
    }

    /// A watcher sent something: its periodic progress restarts.
    fn touch(&mut self, wid: WatcherId) {
        let next = self.now.plus_nanos(self.config.progress_interval_nanos);
        let w = self.watchers.get_mut(&wid).expect("exists");
        if let Some(at) = w.notify_at {
            if at != next {
                self.notify.remove(&(at, wid));
                self.notify.insert((next, wid));
                w.notify_at = Some(next);
            }
        }
    }

    /// A synced watcher missed revision `rev` (its stream is stalled): it
    /// leaves the index and will catch up from `rev`.
    fn unsync(&mut self, wid: WatcherId, rev: i64) {
        let w = self.watchers.get_mut(&wid).expect("exists");
        assert!(
            w.synced && w.next_rev <= rev,
            "watch: unsync of {wid:?} at {rev} (synced {}, next {})",
            w.synced,
            w.next_rev
        );
        w.synced = false;
        w.next_rev = rev;
        self.synced.remove(&w.range, wid);
        let sid = w.stream;
        let s = self
            .streams
            .get_mut(&sid)
            .expect("a watcher's stream is open");
        assert!(s.unsynced.insert(wid), "unsynced twice");
        self.refresh(sid);
    }

    /// An unsynced watcher reached the current revision: it joins the index.
    fn mark_synced(&mut self, wid: WatcherId) {
        let w = self.watchers.get_mut(&wid).expect("exists");
        assert!(!w.synced, "watch: {wid:?} synced twice");
        w.synced = true;
        self.synced.insert(&w.range, wid);
        let s = self
            .streams
            .get_mut(&w.stream)
            .expect("a watcher's stream is open");
        assert!(s.unsynced.remove(&wid), "an unsynced watcher is listed");
    }

    /// Forgets a watcher everywhere.
    fn remove_watcher(&mut self, wid: WatcherId) -> Watcher {
        let w = self.watchers.remove(&wid).expect("exists");
        let s = self
            .streams
            .get_mut(&w.stream)
            .expect("a watcher's stream is open");
        assert_eq!(
            s.watchers.remove(&w.watch_id),
            Some(wid),
            "stream lists its watcher"
        );
        if w.synced {
            self.synced.remove(&w.range, wid);
        } else {
            assert!(s.unsynced.remove(&wid), "an unsynced watcher is listed");
        }
        if let Some(at) = w.notify_at {
            assert!(
                self.notify.remove(&(at, wid)),
                "a scheduled watcher is listed"
            );
        }
        self.refresh(w.stream);
        w
    }
}

#[cfg(test)]
impl WatchHub {
    /// Cross-checks the bookkeeping; tests call it after every step.
    pub(crate) fn check_invariants(&self) {
        let unsynced: usize = self.streams.values().map(|s| s.unsynced.len()).sum();
        assert_eq!(
            self.synced.len() + unsynced,
            self.watchers.len(),
            "every watcher is either indexed or listed unsynced"
        );
        for (wid, w) in &self.watchers {
            let s = &self.streams[&w.stream];
            assert_eq!(s.watchers.get(&w.watch_id), Some(wid));
            assert_eq!(s.unsynced.contains(wid), !w.synced);
            if let Some(at) = w.notify_at {
                assert!(self.notify.contains(&(at, *wid)));
            }
        }
        assert_eq!(
            self.notify.len(),
            self.watchers
                .values()
                .filter(|w| w.notify_at.is_some())
                .count()
        );
        for (sid, s) in &self.streams {
            assert_eq!(
                self.ready.contains(sid),
                !s.stalled && !s.unsynced.is_empty(),
                "ready set of {sid:?}"
            );
            assert!(s.stalled || s.outstanding < self.config.stream_buffer_max);
        }
    }
}
