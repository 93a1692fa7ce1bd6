//! Watches (ARCHITECTURE §3.9): the sans-I/O watch hub of one node.
//!
//! A driver opens watch *streams* (one per etcd `Watch` gRPC call) and feeds
//! the hub what clients ask ([`WatchInput`]); the hub answers with
//! [`WatchOutput`]s, each one etcd `WatchResponse` for one stream.
//!
//! Events come from two places:
//! - **live**: after each applied entry the node hands the hub that entry's
//!   events ([`crate::mvcc::Applied::events`], read once however many
//!   watchers match);
//! - **history**: a watcher whose start revision is in the past, or which
//!   fell behind, is served from the engine's revision log, a bounded chunk
//!   at a time, until it reaches the current revision and turns live.
//!
//! Guarantees (etcd's): ordered, unique, reliable (no gap: a watcher whose
//! history was compacted away is cancelled with `compact_revision`, never
//! skipped), atomic (all events of one revision in one output), resumable,
//! bookmarkable (progress notifications).
//!
//! STATUS: interface only; the implementation lands with the Watch work.

use crate::engine::KvRead;
use crate::kv::{Event, WatchCreateRequest};
use crate::mvcc::Meta;
use crate::types::Time;

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

/// The watch hub. See the module documentation.
#[derive(Debug, Default)]
pub struct WatchHub {
    config: WatchConfig,
}

impl WatchHub {
    /// An empty hub.
    #[must_use]
    pub fn new(config: WatchConfig) -> WatchHub {
        WatchHub { config }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// A client input; `view` and `meta` are the store as applied so far.
    pub fn handle<R: KvRead>(&mut self, now: Time, input: WatchInput, view: &R, meta: &Meta) {
        let _ = (now, input, view, meta);
    }

    /// An entry applied: `events` (possibly empty) at `meta.current_revision`;
    /// `meta` may also carry a new compaction watermark.
    pub fn on_applied(&mut self, now: Time, meta: &Meta, events: &[Event]) {
        let _ = (now, meta, events);
    }

    /// When [`WatchHub::handle_timeout`] has work (progress notifications,
    /// or history catch-up to continue: then `now` itself).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        None
    }

    /// Timed work: catch-up steps and progress notifications.
    pub fn handle_timeout<R: KvRead>(&mut self, now: Time, view: &R, meta: &Meta) {
        let _ = (now, view, meta);
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<WatchOutput> {
        None
    }
}
