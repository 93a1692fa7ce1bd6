//! Property test: random writers (puts, deletes, delete ranges, nested txns),
//! compactions, watchers created at random times from random start revisions
//! with random ranges, filters and `prev_kv`, cancels, progress requests and
//! random consumption delays on tiny stream buffers and history chunks.
//! Every output is checked as it arrives, and every watcher at the end,
//! against the full revision history recorded from the applied events:
//!
//! - **ordered, unique, no gap**: a watcher's events are exactly the history
//!   events of its range (after filters) from its start revision — all of
//!   them if it is alive at the end, a prefix if it was cancelled;
//! - a compaction cancel carries the watermark of the moment, and its
//!   watcher had not been given anything at or above it (its next revision
//!   was compacted);
//! - **atomic**: a revision never spans two outputs;
//! - **prev_kv** equals the key's previous version (absent only for events
//!   at a compaction watermark read back from history, as etcd) and only
//!   for watchers that asked;
//! - **bookmarks**: a progress output at revision R (stream-wide or periodic)
//!   comes only after everything up to R was delivered; every progress
//!   request is answered once the watchers are synced;
//! - headers carry the current revision.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::range::KeyRange;
use super::*;
use crate::engine::MemEngine;
use crate::kv::{CompactionRequest, KeyValue, WriteRequest};
use crate::log::Entry;
use crate::mvcc::Store;
use crate::testkit::gen::Gen;
use crate::types::{Index, Term};

const STREAMS: u64 = 3;

/// What the test knows about one created watcher.
#[derive(Debug)]
struct Tracked {
    stream: StreamId,
    watch_id: i64,
    start: i64,
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    outputs: Vec<WatchOutput>,
    client_cancel: bool,
    ended: Option<WatchOutput>,
}

impl Tracked {
    fn delivered(&self) -> Vec<Event> {
        self.outputs.iter().flat_map(|o| o.events.clone()).collect()
    }
}

struct World {
    gen: Gen,
    engine: MemEngine,
    store: Store,
    hub: WatchHub,
    index: u64,
    now: Time,
    history: BTreeMap<i64, Vec<Event>>,
    /// Every live key, replayed from the events (the model).
    state: BTreeMap<Vec<u8>, KeyValue>,
    compactions: BTreeSet<i64>,
    outstanding: BTreeMap<StreamId, usize>,
    progress_waiting: BTreeMap<StreamId, bool>,
    watchers: Vec<Tracked>,
    alive: BTreeMap<(StreamId, i64), usize>,
}

impl World {
    fn meta(&self) -> Meta {
        *self.store.meta()
    }

    fn current(&self) -> i64 {
        self.meta().current_revision
    }

    fn apply(&mut self, write: WriteRequest) {
        self.index += 1;
        let entry = Entry::write(Term(1), Index(self.index), write);
        let applied = self.store.apply(&self.engine, &entry).expect("apply");
        let meta = self.meta();
        if !applied.events.is_empty() {
            // The model's prev_kv, computed independently: the key as it was
            // at the previous revision (etcd reads it at `mod_revision - 1`).
            let mut events = applied.events.clone();
            for e in &mut events {
                let key = &e.kv.as_ref().expect("kv").key;
                e.prev_kv = self.state.get(key).cloned();
            }
            for e in &events {
                let kv = e.kv.clone().expect("kv");
                if e.r#type == EventType::Put as i32 {
                    self.state.insert(kv.key.clone(), kv);
                } else {
                    self.state.remove(&kv.key);
                }
            }
            let fresh = self.history.insert(meta.current_revision, events);
            assert!(fresh.is_none(), "one entry per revision");
        }
        if meta.compact_revision >= 0 {
            self.compactions.insert(meta.compact_revision);
        }
        self.hub.on_applied(self.now, &meta, &applied.events);
        self.route_all();
    }

    fn input(&mut self, input: WatchInput) -> Vec<WatchOutput> {
        let meta = self.meta();
        self.hub.handle(self.now, input, &self.engine, &meta);
        self.drain()
    }

    fn timeout(&mut self) {
        let meta = self.meta();
        self.hub.handle_timeout(self.now, &self.engine, &meta);
        self.route_all();
    }

    fn drain(&mut self) -> Vec<WatchOutput> {
        let outs: Vec<WatchOutput> = std::iter::from_fn(|| self.hub.poll_output()).collect();
        self.hub.check_invariants();
        for o in &outs {
            *self.outstanding.entry(o.stream).or_default() += 1;
            assert_eq!(
                o.revision,
                self.current(),
                "header revision is current: {o:?}"
            );
        }
        outs
    }

    fn route_all(&mut self) {
        for out in self.drain() {
            self.route(out);
        }
    }

    /// The history events `w` must see, through revision `upto`.
    fn expected(&self, w: &Tracked, upto: i64) -> Vec<Event> {
        let mut out = Vec::new();
        if w.start > upto {
            return out;
        }
        for evs in self.history.range(w.start..=upto).map(|(_, e)| e) {
            for e in evs {
                let kv = e.kv.as_ref().expect("kv");
                let is_put = e.r#type == EventType::Put as i32;
                if !w.range.contains(&kv.key) || (is_put && w.no_put) || (!is_put && w.no_delete) {
                    continue;
                }
                let mut e = e.clone();
                if !w.prev_kv {
                    e.prev_kv = None;
                }
                out.push(e);
            }
        }
        out
    }

    /// `got` is `want`, but for a `prev_kv` that etcd also omits (event at a
    /// compaction watermark, read from history).
    fn same(&self, got: &Event, want: &Event) -> bool {
        if got == want {
            return true;
        }
        let rev = want.kv.as_ref().expect("kv").mod_revision;
        let mut stripped = want.clone();
        stripped.prev_kv = None;
        *got == stripped && self.compactions.contains(&rev)
    }

    /// An expected put that history replay cannot rebuild: at a compaction
    /// watermark, deleted later in the same revision (`Rebuilt::Compacted`;
    /// etcd loses it too).
    fn droppable(&self, e: &Event) -> bool {
        let kv = e.kv.as_ref().expect("kv");
        e.r#type == EventType::Put as i32
            && self.compactions.contains(&kv.mod_revision)
            && self.history[&kv.mod_revision].iter().any(|x| {
                x.r#type == EventType::Delete as i32 && x.kv.as_ref().expect("kv").key == kv.key
            })
    }

    /// `got` is `want` (all of it if `whole`, else a prefix), event by event
    /// as [`World::same`] allows, skipping only [`World::droppable`] puts.
    fn assert_prefix(&self, w: &Tracked, got: &[Event], want: &[Event], whole: bool) {
        let show = || {
            format!(
                "watcher {}/{} from {}\n got {got:?}\nwant {want:?}",
                w.stream.0, w.watch_id, w.start
            )
        };
        let mut j = 0;
        for (i, g) in got.iter().enumerate() {
            while j < want.len() && !self.same(g, &want[j]) && self.droppable(&want[j]) {
                j += 1;
            }
            assert!(
                j < want.len() && self.same(g, &want[j]),
                "event {i} differs: {}",
                show()
            );
            j += 1;
        }
        if whole {
            assert!(
                want[j..].iter().all(|e| self.droppable(e)),
                "events missing: {}",
                show()
            );
        }
    }

    /// A progress at `revision` for watcher `i`: everything through it was sent.
    fn check_bookmark(&self, i: usize, revision: i64) {
        let w = &self.watchers[i];
        let want = self.expected(w, revision);
        self.assert_prefix(w, &w.delivered(), &want, true);
    }

    fn route(&mut self, out: WatchOutput) {
        assert!(!out.created, "created only answers a create: {out:?}");
        if out.watch_id == -1 {
            assert!(out.events.is_empty() && !out.canceled, "{out:?}");
            let waiting = self.progress_waiting.entry(out.stream).or_default();
            assert!(std::mem::take(waiting), "unsolicited progress {out:?}");
            let on_stream: Vec<usize> = self
                .alive
                .range((out.stream, i64::MIN)..=(out.stream, i64::MAX))
                .map(|(_, &i)| i)
                .collect();
            for i in on_stream {
                self.check_bookmark(i, out.revision);
            }
            return;
        }
        let i = *self
            .alive
            .get(&(out.stream, out.watch_id))
            .unwrap_or_else(|| panic!("output for a dead watcher: {out:?}"));
        if out.canceled {
            assert!(out.events.is_empty());
            let w = &self.watchers[i];
            if out.compact_revision == 0 {
                assert!(w.client_cancel, "cancel nobody asked for: {out:?}");
            } else {
                assert_eq!(out.compact_revision, self.meta().compact_revision);
            }
            self.alive.remove(&(out.stream, out.watch_id));
            self.watchers[i].ended = Some(out);
            return;
        }
        if out.events.is_empty() {
            self.check_bookmark(i, out.revision);
            return;
        }
        let last = out.events.last().and_then(|e| e.kv.as_ref()).expect("kv");
        assert!(last.mod_revision <= out.revision);
        self.watchers[i].outputs.push(out);
    }

    fn create(&mut self) {
        let stream = StreamId(self.gen.rng.below(STREAMS));
        let (key, range_end) = self.gen.key_range(3);
        let (current, compact) = (self.current(), self.meta().compact_revision);
        let start_revision = if self.gen.rng.chance(1, 4) {
            0
        } else {
            self.gen.rng.between((compact - 1).max(1), current + 2)
        };
        let mut filters = Vec::new();
        if self.gen.rng.chance(1, 5) {
            filters.push(WatchFilter::Noput as i32);
        }
        if self.gen.rng.chance(1, 5) {
            filters.push(WatchFilter::Nodelete as i32);
        }
        let req = WatchCreateRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            start_revision,
            progress_notify: self.gen.rng.chance(1, 3),
            filters,
            prev_kv: self.gen.rng.chance(1, 2),
            watch_id: 0,
            fragment: false,
        };
        let outs = self.input(WatchInput::Create {
            stream,
            req: req.clone(),
        });
        let mut outs = outs.into_iter();
        let first = outs.next().expect("a create is answered");
        assert!(first.created, "{first:?}");
        let Ok(range) = KeyRange::new(&key, &range_end) else {
            assert_eq!(first.cancel_reason, ERR_EMPTY_RANGE);
            assert!(first.canceled && first.watch_id == -1);
            assert!(outs.next().is_none());
            return;
        };
        assert!(!first.canceled, "{first:?}");
        let start = if start_revision <= 0 {
            current + 1
        } else {
            start_revision
        };
        let i = self.watchers.len();
        self.watchers.push(Tracked {
            stream,
            watch_id: first.watch_id,
            start,
            range,
            no_put: req.filters.contains(&(WatchFilter::Noput as i32)),
            no_delete: req.filters.contains(&(WatchFilter::Nodelete as i32)),
            prev_kv: req.prev_kv,
            outputs: Vec::new(),
            client_cancel: false,
            ended: None,
        });
        let fresh = self.alive.insert((stream, first.watch_id), i);
        assert!(fresh.is_none(), "watch id reused while alive");
        let rest: Vec<WatchOutput> = outs.collect();
        if start < compact {
            assert_eq!(rest.len(), 1, "created then cancelled: {rest:?}");
        }
        for out in rest {
            self.route(out);
        }
    }

    fn step(&mut self) {
        self.now = self.now.plus_nanos(self.gen.rng.below(30));
        match self.gen.rng.below(40) {
            0..=17 => {
                let (current, compact) = (self.current(), self.meta().compact_revision);
                match self.gen.write(current, compact) {
                    // Compactions come from the arm below, lagging behind so
                    // that watchers live long enough to matter.
                    WriteRequest::Compaction(_) => {}
                    write => self.apply(write),
                }
            }
            18 => {
                // Mostly well behind the current revision, sometimes right at it.
                let (current, compact) = (self.current(), self.meta().compact_revision);
                let low = compact.max(1);
                let high = if self.gen.rng.chance(1, 10) {
                    current
                } else {
                    current - 12
                };
                if high >= low {
                    let revision = self.gen.rng.between(low, high);
                    self.apply(WriteRequest::Compaction(CompactionRequest {
                        revision,
                        physical: false,
                    }));
                }
            }
            19..=23 => self.create(),
            24..=30 => {
                let stream = StreamId(self.gen.rng.below(STREAMS));
                let pending = self.outstanding.get(&stream).copied().unwrap_or(0);
                let n = if self.gen.rng.chance(1, 2) {
                    pending
                } else {
                    usize::try_from(self.gen.rng.below(pending as u64 + 1)).expect("small")
                };
                self.outstanding.insert(stream, pending - n);
                let outs = self.input(WatchInput::Consumed { stream, outputs: n });
                assert!(outs.is_empty(), "{outs:?}");
            }
            31..=35 => self.timeout(),
            36 | 37 => {
                let stream = StreamId(self.gen.rng.below(STREAMS));
                self.progress_waiting.insert(stream, true);
                let outs = self.input(WatchInput::Progress { stream });
                for out in outs {
                    self.route(out);
                }
            }
            _ => {
                if self.alive.is_empty() {
                    return;
                }
                let nth =
                    usize::try_from(self.gen.rng.below(self.alive.len() as u64)).expect("small");
                let (&(stream, watch_id), &i) = self.alive.iter().nth(nth).expect("in range");
                self.watchers[i].client_cancel = true;
                let outs = self.input(WatchInput::Cancel { stream, watch_id });
                assert!(outs.first().is_some_and(|o| o.canceled), "{outs:?}");
                for out in outs {
                    self.route(out);
                }
            }
        }
    }

    /// Consumes everything and runs every timeout due until the hub is idle.
    fn drain_all(&mut self) {
        for _ in 0..100_000 {
            let streams: Vec<(StreamId, usize)> =
                self.outstanding.iter().map(|(s, n)| (*s, *n)).collect();
            for (stream, n) in streams {
                if n > 0 {
                    self.outstanding.insert(stream, 0);
                    assert!(self
                        .input(WatchInput::Consumed { stream, outputs: n })
                        .is_empty());
                }
            }
            match self.hub.poll_timeout() {
                Some(at) if at <= self.now => self.timeout(),
                _ if self.outstanding.values().all(|&n| n == 0) => return,
                _ => {}
            }
        }
        panic!("the hub never went idle");
    }

    fn check_end(&self) {
        let current = self.current();
        for (stream, waiting) in &self.progress_waiting {
            assert!(!waiting, "progress request on {stream:?} never answered");
        }
        for w in &self.watchers {
            let got = w.delivered();
            let want = self.expected(w, current);
            match &w.ended {
                None => self.assert_prefix(w, &got, &want, true),
                Some(c) if c.compact_revision == 0 => self.assert_prefix(w, &got, &want, false),
                Some(c) => {
                    self.assert_prefix(w, &got, &want, false);
                    let cut = got
                        .last()
                        .map_or(w.start, |e| e.kv.as_ref().expect("kv").mod_revision + 1);
                    assert!(
                        cut < c.compact_revision,
                        "watcher {}/{} cancelled at {} though delivered up to {cut}",
                        w.stream.0,
                        w.watch_id,
                        c.compact_revision
                    );
                }
            }
            // Atomic: no revision spans two outputs.
            for pair in w.outputs.windows(2) {
                let last = pair[0]
                    .events
                    .last()
                    .and_then(|e| e.kv.as_ref())
                    .expect("kv");
                let first = pair[1]
                    .events
                    .first()
                    .and_then(|e| e.kv.as_ref())
                    .expect("kv");
                assert!(
                    last.mod_revision < first.mod_revision,
                    "revision split across outputs: {pair:?}"
                );
            }
        }
    }
}

/// One scenario; returns how many events were delivered in all.
fn run(seed: u64, steps: usize, buffer: usize, chunk: usize) -> usize {
    let engine = MemEngine::new();
    let store = Store::open(&engine).expect("open");
    let mut world = World {
        gen: Gen::new(seed),
        engine,
        store,
        hub: WatchHub::new(WatchConfig {
            stream_buffer_max: buffer,
            progress_interval_nanos: 50,
            catch_up_events_max: chunk,
        }),
        index: 0,
        now: Time(0),
        history: BTreeMap::new(),
        state: BTreeMap::new(),
        compactions: BTreeSet::new(),
        outstanding: BTreeMap::new(),
        progress_waiting: BTreeMap::new(),
        watchers: Vec::new(),
        alive: BTreeMap::new(),
    };
    for s in 0..STREAMS {
        assert!(world
            .input(WatchInput::OpenStream {
                stream: StreamId(s)
            })
            .is_empty());
    }
    for _ in 0..steps {
        world.step();
    }
    world.drain_all();
    world.check_end();
    world.watchers.iter().map(|w| w.delivered().len()).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Ordered, unique, reliable, atomic, prev_kv, filters and bookmarks
    /// against the recorded history (see the module doc).
    #[test]
    fn watchers_see_exactly_the_history(
        seed in any::<u64>(),
        steps in 20usize..300,
        buffer in 1usize..8,
        chunk in 1usize..6,
    ) {
        let _delivered = run(seed, steps, buffer, chunk);
    }
}

/// A few fixed long runs (the proptest's shrinking works on the seed only),
/// checked not to be vacuous.
#[test]
fn long_fixed_runs() {
    let mut delivered = 0;
    for seed in 0..8u64 {
        let n = usize::try_from(seed).expect("small");
        delivered += run(seed, 1500, 1 + n % 7, 1 + n % 5);
    }
    assert!(delivered > 1000, "only {delivered} events delivered");
}
