//! etcd's Watch service: one bidirectional gRPC stream per `Watch` call,
//! carried by one core watch stream ([`t4_io_real::WatchStream`]).
//!
//! Each incoming `WatchRequest` becomes one stream input: a create, a
//! cancel or a progress request. Each core [`WatchOutput`] becomes one
//! `WatchResponse` — or, for a watch created with `fragment: true` whose
//! response is bigger than the request size limit, several responses with
//! `fragment = true` on all but the last, which the client joins back
//! together (etcd's `sendFragments`). Without `fragment` a response is sent
//! whole, however big: one revision's events are never split (atomicity).
//!
//! One task serves a stream: it waits on the client's next request, the
//! core's next output and the client going away, whichever comes first.
//! The stream ends when the client disconnects or its request stream
//! fails; dropping the core stream then removes every watcher on it. A
//! client that only half-closes (stops sending requests) keeps receiving
//! events, as with etcd.

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;

use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use t4_core::kv;
use t4_core::watch::WatchOutput;
use t4_io_real::{Node, WatchStream};
use t4_proto::etcd::{
    PbResponseHeader, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService,
};

use super::convert;
use super::errors::status;
use super::Ctx;

/// Responses buffered between the stream task and the gRPC transport. The
/// core stream has its own, larger flow-control bound
/// (`watch_stream_buffer_max`); this one only smooths the hand-over.
const OUTBOUND_BUFFER: usize = 16;

/// The watch id of responses that belong to no watch (a refused create, a
/// stream-wide progress notification), as etcd's `clientv3.InvalidWatchID`.
pub const INVALID_WATCH_ID: i64 = -1;

/// etcd's cancel reason for a negative start revision (etcd answers it as
/// if the revision were compacted).
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Protobuf tag of `WatchResponse.events`.
const EVENTS_TAG: u32 = 11;

/// The Watch service.
#[derive(Clone)]
pub struct WatchService {
    node: Node,
    ctx: Ctx,
    fragment_bytes_max: usize,
}

impl WatchService {
    /// The service over `node`. Responses of watches that asked for
    /// fragmentation are split once bigger than `fragment_bytes_max` (etcd
    /// uses its `--max-request-bytes`).
    #[must_use]
    pub fn new(node: Node, ctx: Ctx, fragment_bytes_max: usize) -> Self {
        WatchService {
            node,
            ctx,
            fragment_bytes_max,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = BoxStream<PbWatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner();
        let core = self.node.watch_stream().map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let session = Session {
            node: self.node.clone(),
            ctx: self.ctx.clone(),
            fragment_bytes_max: self.fragment_bytes_max,
            tx,
            creates: VecDeque::new(),
            fragmented: BTreeSet::new(),
            active: BTreeSet::new(),
        };
        tokio::spawn(session.run(inbound, core));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The state of one gRPC watch stream, owned by its task.
struct Session {
    node: Node,
    ctx: Ctx,
    fragment_bytes_max: usize,
    tx: mpsc::Sender<Result<PbWatchResponse, Status>>,
    /// Creates not answered yet, oldest first. The core answers creates in
    /// the order it receives them, so the next `created` output belongs to
    /// the front entry; refusals made here wait behind the creates sent
    /// before them, so answers reach the client in request order (etcd
    /// clients pair answers with requests by order).
    creates: VecDeque<PendingCreate>,
    /// Watches that asked for fragmentation.
    fragmented: BTreeSet<i64>,
    /// Watches created and not yet cancelled (for the `t4_watchers` gauge).
    active: BTreeSet<i64>,
}

/// A create waiting for its answer.
enum PendingCreate {
    /// Handed to the core; `fragment` as the client asked.
    Core { fragment: bool },
    /// Refused here; sent once every earlier create is answered.
    Refused(PbWatchResponse),
}

/// Why a stream task stops.
struct Closed;

impl Session {
    async fn run(mut self, mut inbound: Streaming<PbWatchRequest>, mut core: WatchStream) {
        let metrics = std::sync::Arc::clone(&self.ctx.metrics);
        metrics.watch_streams.inc();
        let mut inbound_open = true;
        loop {
            // Every branch is cancel-safe: `Streaming::message`, the core
            // stream's `next` and `Sender::closed` keep no state in their
            // futures, so losing a race drops nothing.
            tokio::select! {
                req = inbound.message(), if inbound_open => match req {
                    Ok(Some(req)) => {
                        if self.request(&core, req).await.is_err() {
                            break;
                        }
                    }
                    // Half-close: the client sends no more requests but
                    // still reads events.
                    Ok(None) => inbound_open = false,
                    Err(e) => {
                        tracing::debug!(error = %e, "watch request stream failed; closing it");
                        break;
                    }
                },
                out = core.next() => match out {
                    Some(out) => {
                        if self.output(out).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                () = self.tx.closed() => break,
            }
        }
        // Dropping the core stream (end of this function) removes its
        // watchers.
        metrics.watch_streams.dec();
        metrics
            .watchers
            .sub(i64::try_from(self.active.len()).unwrap_or(i64::MAX));
    }

    /// Hands one client request to the core stream.
    async fn request(&mut self, core: &WatchStream, req: PbWatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let create = kv::WatchCreateRequest {
                    // etcd: an empty key means the smallest key, "\0".
                    key: if c.key.is_empty() { vec![0] } else { c.key },
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    progress_notify: c.progress_notify,
                    filters: c.filters,
                    prev_kv: c.prev_kv,
                    watch_id: c.watch_id,
                    fragment: c.fragment,
                };
                let fragment = create.fragment;
                // etcd's watch server refuses a negative start revision
                // itself, as if compacted; every other check is the core's.
                let outcome = if create.start_revision < 0 {
                    Err(COMPACTED.to_owned())
                } else {
                    core.create(create)
                        .map_err(|e| status(&e).message().to_owned())
                };
                match outcome {
                    Ok(()) => self.creates.push_back(PendingCreate::Core { fragment }),
                    Err(reason) if self.creates.is_empty() => {
                        return self.send(self.refused(reason)).await;
                    }
                    Err(reason) => {
                        let refused = self.refused(reason);
                        self.creates.push_back(PendingCreate::Refused(refused));
                    }
                }
            }
            // Only a closed node refuses these; its stream ends anyway.
            Some(PbWatchRequestUnion::CancelRequest(c)) => {
                core.cancel(c.watch_id).map_err(|_| Closed)?;
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                core.request_progress().map_err(|_| Closed)?;
            }
            // etcd ignores a request without a body rather than ending the
            // stream.
            None => tracing::debug!("watch request without a body ignored"),
        }
        Ok(())
    }

    /// A create answered without reaching the core (etcd: created and
    /// cancelled at once, with watch id -1).
    fn refused(&self, cancel_reason: String) -> PbWatchResponse {
        PbWatchResponse {
            header: self.header(self.node.current_revision()),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason,
            ..PbWatchResponse::default()
        }
    }

    /// Sends one core output, fragmented if its watch asked for it, then
    /// any refusals that were waiting for it.
    async fn output(&mut self, out: WatchOutput) -> Result<(), Closed> {
        let created = out.created;
        self.track(&out);
        let fragment = self.fragmented.contains(&out.watch_id);
        if out.canceled && !out.created {
            self.fragmented.remove(&out.watch_id);
        }
        let resp = PbWatchResponse {
            header: self.header(out.revision),
            watch_id: out.watch_id,
            created: out.created,
            canceled: out.canceled,
            compact_revision: out.compact_revision,
            cancel_reason: out.cancel_reason,
            fragment: false,
            events: out.events.into_iter().map(convert::event).collect(),
        };
        if fragment {
            for part in fragments(resp, self.fragment_bytes_max) {
                self.send(part).await?;
            }
        } else {
            self.send(resp).await?;
        }
        if created {
            while matches!(self.creates.front(), Some(PendingCreate::Refused(_))) {
                if let Some(PendingCreate::Refused(refused)) = self.creates.pop_front() {
                    self.send(refused).await?;
                }
            }
        }
        Ok(())
    }

    /// Follows which watches exist on this stream, for fragmentation and
    /// the watcher gauge.
    fn track(&mut self, out: &WatchOutput) {
        if out.created {
            // Refusals never lead the queue once the previous answer went
            // out, so the front is the core create this answers.
            let fragment = match self.creates.pop_front() {
                Some(PendingCreate::Core { fragment }) => fragment,
                Some(PendingCreate::Refused(_)) => {
                    unreachable!("refusals are flushed after each created answer")
                }
                None => false,
            };
            if !out.canceled && out.watch_id != INVALID_WATCH_ID {
                if fragment {
                    self.fragmented.insert(out.watch_id);
                }
                if self.active.insert(out.watch_id) {
                    self.ctx.metrics.watchers.inc();
                }
            }
        } else if out.canceled && self.active.remove(&out.watch_id) {
            self.ctx.metrics.watchers.dec();
        }
    }

    fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        self.ctx.ids(&self.node).header(revision)
    }

    async fn send(&self, resp: PbWatchResponse) -> Result<(), Closed> {
        self.tx.send(Ok(resp)).await.map_err(|_| Closed)
    }
}

/// Splits `resp` into responses smaller than `bytes_max`, as etcd's
/// `sendFragments`: every part but the last has `fragment = true`, each
/// carries the same header and watch fields, and each holds at least one
/// event (a single event bigger than the limit goes alone). A response
/// already under the limit, or with fewer than two events, is returned
/// whole.
///
/// Worked example: `bytes_max` = 100, a 20-byte shell (header, watch
/// fields, fragment flag) and five events of 32 bytes each with framing.
/// The whole response is 20 + 5·32 = 180 ≥ 100, so it is split. Part one
/// takes event 1 (52 bytes), event 2 (84 < 100) and refuses event 3 (116 ≥
/// 100); part two takes events 3 and 4 the same way; part three takes
/// event 5 and, being the last, has `fragment = false`: `[1,2] [3,4] [5]`.
#[must_use]
pub fn fragments(resp: PbWatchResponse, bytes_max: usize) -> Vec<PbWatchResponse> {
    if resp.encoded_len() < bytes_max || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut events = resp.events;
    let shell = PbWatchResponse {
        events: Vec::new(),
        fragment: true,
        ..resp
    };
    let shell_bytes = shell.encoded_len();
    let mut parts = Vec::new();
    let mut rest = events.drain(..).peekable();
    while rest.peek().is_some() {
        let mut part = shell.clone();
        let mut part_bytes = shell_bytes;
        while let Some(ev) = rest.peek() {
            let ev_bytes = prost::encoding::message::encoded_len(EVENTS_TAG, ev);
            if !part.events.is_empty() && part_bytes + ev_bytes >= bytes_max {
                break;
            }
            part_bytes += ev_bytes;
            part.events.push(rest.next().expect("peeked"));
        }
        assert!(!part.events.is_empty(), "every fragment carries an event");
        parts.push(part);
    }
    parts
        .last_mut()
        .expect("at least two events make at least one part")
        .fragment = false;
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use t4_proto::etcd::{PbEvent, PbKeyValue};

    fn event(key: &str, value_bytes: usize) -> PbEvent {
        PbEvent {
            r#type: 0,
            kv: Some(PbKeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'x'; value_bytes],
                mod_revision: 7,
                create_revision: 7,
                version: 1,
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    fn response(events: Vec<PbEvent>) -> PbWatchResponse {
        PbWatchResponse {
            header: Some(PbResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 7,
                raft_term: 1,
            }),
            watch_id: 3,
            events,
            ..PbWatchResponse::default()
        }
    }

    /// A response under the limit goes whole, unmarked.
    #[test]
    fn small_response_is_not_fragmented() {
        let resp = response(vec![event("a", 10), event("b", 10)]);
        let parts = fragments(resp.clone(), 1024);
        assert_eq!(parts, vec![resp]);
    }

    /// A single event bigger than the limit cannot be split and goes whole.
    #[test]
    fn single_big_event_goes_whole() {
        let resp = response(vec![event("a", 4096)]);
        let parts = fragments(resp.clone(), 1024);
        assert_eq!(parts, vec![resp]);
    }

    /// Fragments: all but the last marked, each under the limit, same
    /// header and watch id, and together exactly the original events in
    /// order.
    #[test]
    fn big_response_splits_into_ordered_fragments_under_the_limit() {
        let events: Vec<PbEvent> = (0..10).map(|i| event(&format!("k{i}"), 300)).collect();
        let resp = response(events.clone());
        let limit = 1000;
        let parts = fragments(resp.clone(), limit);
        assert!(parts.len() > 1, "{} parts", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len(), "fragment flag of part {i}");
            assert!(
                p.encoded_len() < limit,
                "part {i} is {} bytes",
                p.encoded_len()
            );
            assert!(!p.events.is_empty());
            assert_eq!((p.header, p.watch_id), (resp.header, resp.watch_id));
        }
        let joined: Vec<PbEvent> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
    }

    /// An event bigger than the limit inside a big response gets a part of
    /// its own; nothing is lost.
    #[test]
    fn oversized_event_gets_its_own_fragment() {
        let events = vec![event("a", 100), event("b", 5000), event("c", 100)];
        let parts = fragments(response(events.clone()), 1000);
        let sizes: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        let joined: Vec<PbEvent> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
    }
}
