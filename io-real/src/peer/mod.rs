//! The peer transport (cluster mode): carries core's [`PeerMsg`]s between
//! members over gRPC (`t4.peer.Peer/Stream`, see `t4_proto::peer`).
//!
//! # Shape
//!
//! - **Sending** ([`Outbox`], owned by the node thread): one tokio task per
//!   destination member, fed by a bounded queue. The node thread only
//!   `try_send`s into it, so it never blocks on the network. The task keeps
//!   one long-lived client stream open to its destination and writes each
//!   message as a [`PeerFrame`] (sender id and address, destination id, the
//!   [`PeerMsg::encode`] bytes). A full queue drops the message; a broken
//!   stream is reopened (what is queued meanwhile waits for the new one),
//!   and what is queued for a destination that cannot be connected to is
//!   dropped.
//! - **Receiving** ([`serve`]): the `t4.peer.Peer` service on the peer
//!   listener. Each incoming stream is read frame by frame on its own task,
//!   decoded there (not on the node thread), and handed to a sink (the
//!   node thread's event channel). A frame that does not decode, names no
//!   sender, or is meant for another member is logged and dropped; the
//!   stream goes on. Nothing a peer sends can panic the node: the codec
//!   is core's trust boundary (`t4_core::cluster::wire`).
//!
//! Dropping is always allowed: core treats the transport as a lossy
//! network (replication and elections re-send by timer; a lost forwarded
//! write or read-index exchange fails its client after the request
//! timeout), so a lost message costs latency, never safety. Still, drop
//! only what cannot be delivered. What core relies on is only that a
//! message, when it arrives, arrives whole and from the member it names.
//!
//! # Why a pair of one-way streams instead of one bidirectional stream
//!
//! ARCHITECTURE §3.6 speaks of "a bidirectional gRPC stream per
//! follower". We open one client stream per *(sender, destination)*
//! instead, so a pair of members talks over two streams, one each way:
//!
//! - **Roles change, the transport does not.** With a bidi stream someone
//!   must open it — the leader to each follower — but followers also speak
//!   first (forwarded writes, read-index requests, joins), candidates send
//!   `Prepare` to every member, and who leads changes at every election.
//!   With one-way streams, who opens a stream depends only on who has
//!   something to send, and nothing is torn down or re-bound when the
//!   leader changes.
//! - **No routing of answers.** Every [`PeerMsg`] is a datagram to a
//!   member; core matches answers by term and ids, not by the stream they
//!   came on. A bidi stream would add a second way to reach a member (the
//!   stream it opened to us) that the outbox would have to look up and
//!   keep consistent with the first.
//! - **Failures are per direction.** A broken stream is reopened by its
//!   sender, the only side that has something to lose on it; the receiver
//!   holds no state about it.
//!
//! The cost is a second HTTP/2 connection per pair of members, which is
//! nothing at cluster sizes (3–7), and per-destination ordering is kept:
//! the frames of one stream arrive in order.
//!
//! # Bounds
//!
//! - Per destination: [`PeerOptions::queue_max`] messages queued (drop on
//!   overflow), [`STREAM_WINDOW_FRAMES`] frames handed to the HTTP/2 stream
//!   and not yet written.
//! - Destinations with a task: [`DESTINATIONS_MAX`]; the least recently
//!   used link is closed to make room.
//! - A frame: [`PEER_MSG_BYTES_MAX`] plus the frame's own fields, enforced
//!   by the receiver's decoder (tonic's 4 MiB default is raised: one append
//!   carries up to `append_entries_max` entries of up to a request each).
//! - Inbound messages waiting for the node thread: the sink's business
//!   (the driver bounds them).

mod tls;

pub use tls::{PeerTlsConfig, TlsError, HANDSHAKES_MAX, HANDSHAKE_TIMEOUT};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use t4_core::bucket::lock::Member;
use t4_core::cluster::{PeerMsg, PEER_MSG_BYTES_MAX};
use t4_proto::peer::{PeerClient, PeerFrame, PeerServer, PeerService, StreamClosed};

/// Room for a frame's own fields (ids, address) on top of the message.
const FRAME_OVERHEAD_BYTES: usize = 64 << 10;
/// The largest frame a receiver decodes.
pub const FRAME_BYTES_MAX: usize = PEER_MSG_BYTES_MAX + FRAME_OVERHEAD_BYTES;
/// Frames handed to one HTTP/2 stream and not yet written to it.
pub const STREAM_WINDOW_FRAMES: usize = 16;
/// Destinations with an open link at a time (a cluster has a handful; the
/// bound only matters against a flood of joins from ever new ids).
pub const DESTINATIONS_MAX: usize = 64;
/// First pause before reconnecting to an unreachable destination.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on idle links, so a peer that vanished without closing its
/// socket (power loss, partition) is noticed within interval + timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// At most one warning per this long per link or stream (dropped
/// messages, bad frames); the rest are counted into the next one.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// How the transport behaves.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Messages queued per destination before new ones are dropped.
    /// Default: 1024.
    pub queue_max: usize,
    /// mTLS ([`PeerTlsConfig`]); `None`: plaintext. Default: `None`.
    pub tls: Option<PeerTlsConfig>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            queue_max: 1024,
            tls: None,
        }
    }
}

/// The sending side: one link (queue + task) per destination.
pub struct Outbox {
    me: Member,
    options: PeerOptions,
    runtime: tokio::runtime::Handle,
    links: BTreeMap<(String, String), Link>,
}

struct Link {
    queue: mpsc::Sender<PeerMsg>,
    used_at: Instant,
    dropped: u64,
    warned_at: Option<Instant>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("me", &self.me)
            .field("links", &self.links.len())
            .finish()
    }
}

impl Outbox {
    /// An outbox sending as `me`, its tasks on `runtime`.
    #[must_use]
    pub fn new(me: Member, options: PeerOptions, runtime: tokio::runtime::Handle) -> Outbox {
        assert!(options.queue_max > 0, "peer queue_max must be positive");
        Outbox {
            me,
            options,
            runtime,
            links: BTreeMap::new(),
        }
    }

    /// Queues `msg` for `to`; never blocks. Dropped (and counted into a
    /// rate-limited warning) if `to`'s queue is full.
    pub fn send(&mut self, to: &Member, msg: PeerMsg) {
        let key = (to.id.clone(), to.peer_addr.clone());
        if !self.links.contains_key(&key) {
            self.open_link(to);
        }
        let link = self.links.get_mut(&key).expect("opened above");
        link.used_at = Instant::now();
        match link.queue.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                link.dropped += 1;
                if link.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        to = %to.id, addr = %to.peer_addr, dropped = link.dropped,
                        queue_max = self.options.queue_max,
                        "peer queue full: dropping messages (the peer is slow or unreachable)"
                    );
                    link.warned_at = Some(Instant::now());
                    link.dropped = 0;
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The task ended (it never does on its own; the runtime is
                // shutting down): forget the link, the next send reopens it.
                self.links.remove(&key);
            }
        }
    }

    fn open_link(&mut self, to: &Member) {
        // Another address for the same id replaces the old one.
        self.links.retain(|(id, _), _| *id != to.id);
        if self.links.len() >= DESTINATIONS_MAX {
            let oldest = self
                .links
                .iter()
                .min_by_key(|(_, l)| l.used_at)
                .map(|(k, _)| k.clone())
                .expect("at the bound, so not empty");
            self.links.remove(&oldest);
        }
        let (queue, rx) = mpsc::channel(self.options.queue_max);
        self.runtime.spawn(run_link(
            self.me.clone(),
            to.clone(),
            self.options.tls.clone(),
            rx,
        ));
        self.links.insert(
            (to.id.clone(), to.peer_addr.clone()),
            Link {
                queue,
                used_at: Instant::now(),
                dropped: 0,
                warned_at: None,
            },
        );
    }
}

/// One destination's task: (re)connects, streams what is queued, drops
/// what is queued while the destination is unreachable. Ends when the
/// outbox drops the queue's sender.
async fn run_link(
    me: Member,
    to: Member,
    tls: Option<PeerTlsConfig>,
    mut queue: mpsc::Receiver<PeerMsg>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        let client = match connect(&to.peer_addr, tls.as_ref()).await {
            Ok(client) => client,
            Err(why) => {
                failures += 1;
                // A peer that is down for long is logged now and then, not
                // at every attempt.
                if failures == 1 || failures % 60 == 0 {
                    tracing::info!(to = %to.id, addr = %to.peer_addr, failures, %why, "cannot reach peer; retrying");
                }
                if !sleep_dropping(&mut queue, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(to = %to.id, addr = %to.peer_addr, "connected to peer");
        }
        failures = 0;
        backoff = BACKOFF_MIN;
        match stream_queue(&me, &to, client, &mut queue).await {
            StreamEnd::OutboxGone => return,
            StreamEnd::Broken(why) => {
                tracing::info!(to = %to.id, addr = %to.peer_addr, %why, "peer stream ended; reconnecting");
                // Keep what is queued meanwhile: a stream that just broke
                // does not say the peer is gone. A member resuming from a
                // pause longer than the keep-alive timeout closes every
                // connection it serves at once, yet is reachable, and
                // answers core never re-sends (to forwarded writes, to
                // read-index requests) queued in this pause would be lost;
                // their clients would wait the whole request timeout. If
                // the peer is gone, the failed connect below drops them.
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

enum StreamEnd {
    OutboxGone,
    Broken(String),
}

async fn connect(addr: &str, tls: Option<&PeerTlsConfig>) -> Result<PeerClient, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .http2_adaptive_window(true);
    let channel = match tls {
        // The scheme stays http: the connector does the TLS itself.
        Some(tls) => endpoint.connect_with_connector(tls.connector()).await,
        None => endpoint.connect().await,
    };
    let channel = channel.map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        why
    })?;
    Ok(PeerClient::new(channel, FRAME_BYTES_MAX))
}

/// Streams queued messages on one call until it breaks.
async fn stream_queue(
    me: &Member,
    to: &Member,
    mut client: PeerClient,
    queue: &mut mpsc::Receiver<PeerMsg>,
) -> StreamEnd {
    let (frames, rx) = mpsc::channel::<PeerFrame>(STREAM_WINDOW_FRAMES);
    let call = client.stream(ReceiverStream::new(rx));
    tokio::pin!(call);
    loop {
        let msg = tokio::select! {
            ended = &mut call => return StreamEnd::Broken(ended_why(ended)),
            msg = queue.recv() => msg,
        };
        let Some(msg) = msg else {
            return StreamEnd::OutboxGone;
        };
        let bytes = msg.encode();
        if bytes.len() > PEER_MSG_BYTES_MAX {
            tracing::error!(to = %to.id, bytes = bytes.len(), max = PEER_MSG_BYTES_MAX,
                "peer message over the size bound; dropped");
            continue;
        }
        let frame = PeerFrame {
            from_id: me.id.clone(),
            from_addr: me.peer_addr.clone(),
            to_id: to.id.clone(),
            msg: bytes,
        };
        tokio::select! {
            sent = frames.send(frame) => {
                if sent.is_err() {
                    // The transport dropped the stream: the call is over.
                    return StreamEnd::Broken(ended_why(call.await));
                }
            }
            ended = &mut call => return StreamEnd::Broken(ended_why(ended)),
        }
    }
}

fn ended_why(ended: Result<Response<StreamClosed>, Status>) -> String {
    match ended {
        Ok(_) => "the peer closed the stream".to_owned(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// Waits `pause`, dropping whatever is queued meanwhile (it was meant for
/// a peer that is unreachable now; core re-sends what matters). `false`
/// once the outbox is gone.
async fn sleep_dropping(queue: &mut mpsc::Receiver<PeerMsg>, pause: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            msg = queue.recv() => if msg.is_none() { return false },
        }
    }
    loop {
        match queue.try_recv() {
            Ok(_) => {}
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

/// Where received messages go: `(sender, message)`. `false` when the
/// receiver is gone (the incoming stream is then ended).
pub type Sink = Arc<dyn Fn(Member, PeerMsg) -> bool + Send + Sync>;

/// The receiving side of one member: the `t4.peer.Peer` service.
pub struct Inbox {
    me_id: String,
    sink: Sink,
    /// Set by [`serve_limited`]: ends every incoming stream when the
    /// listener stops (they never end by themselves).
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Inbox {
    /// An inbox for member `me_id`, delivering to `sink`.
    #[must_use]
    pub fn new(me_id: impl Into<String>, sink: Sink) -> Inbox {
        Inbox {
            me_id: me_id.into(),
            sink,
            stop: None,
        }
    }

    /// Checks and decodes one frame.
    ///
    /// # Errors
    /// What is wrong with it (the frame is then dropped).
    pub fn accept(&self, frame: PeerFrame) -> Result<(Member, PeerMsg), FrameError> {
        if frame.from_id.is_empty() {
            return Err(FrameError::NoSender);
        }
        if frame.to_id != self.me_id {
            return Err(FrameError::NotForMe {
                to: frame.to_id,
                me: self.me_id.clone(),
            });
        }
        let msg = PeerMsg::decode(&frame.msg).map_err(|e| FrameError::Message {
            from: frame.from_id.clone(),
            error: e.to_string(),
        })?;
        let from = Member {
            id: frame.from_id,
            peer_addr: frame.from_addr,
        };
        Ok((from, msg))
    }
}

/// Why a received frame was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame names no sender.
    #[error("frame names no sender")]
    NoSender,
    /// The frame is for another member (an address now used by another
    /// node, or a misconfigured peer list).
    #[error("frame is for member {to:?}, this is {me:?}")]
    NotForMe {
        /// The member named.
        to: String,
        /// This member.
        me: String,
    },
    /// The message bytes do not decode.
    #[error("undecodable message from {from:?}: {error}")]
    Message {
        /// The sender named in the frame.
        from: String,
        /// The codec's error.
        error: String,
    },
}

#[tonic::async_trait]
impl PeerService for Inbox {
    async fn stream(
        &self,
        request: Request<Streaming<PeerFrame>>,
    ) -> Result<Response<StreamClosed>, Status> {
        let remote = request.remote_addr();
        let mut frames = request.into_inner();
        let mut bad: u64 = 0;
        let mut warned_at: Option<Instant> = None;
        let mut stop = self.stop.clone();
        let stopped = async move {
            match &mut stop {
                Some(stop) => {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        loop {
            let next = tokio::select! {
                next = frames.message() => next,
                () = &mut stopped => return Err(Status::unavailable("the peer listener stopped")),
            };
            let frame = match next {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(Response::new(StreamClosed {})),
                Err(status) => {
                    tracing::debug!(?remote, %status, "incoming peer stream broke");
                    return Err(status);
                }
            };
            match self.accept(frame) {
                Ok((from, msg)) => {
                    if !(self.sink)(from, msg) {
                        return Err(Status::unavailable("the node is closed"));
                    }
                }
                Err(error) => {
                    bad += 1;
                    if warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        tracing::warn!(?remote, %error, dropped = bad, "dropping bad peer frame");
                        warned_at = Some(Instant::now());
                        bad = 0;
                    }
                }
            }
        }
    }
}

/// A running peer listener; stopped by [`Listener::stop`] or when dropped.
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Listener {
    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends every incoming stream (their senders see
    /// the stream break and reconnect elsewhere or later) and closes the
    /// connections. Returns at once; the port is released as soon as the
    /// accept loop sees the signal.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `inbox` on `listener` (already bound, so a taken port fails at
/// bind time) on the current runtime; with `tls`, only to peers that
/// complete an mTLS handshake.
///
/// # Errors
/// The listener's address cannot be read.
pub fn serve(
    listener: tokio::net::TcpListener,
    inbox: Inbox,
    tls: Option<&PeerTlsConfig>,
) -> std::io::Result<Listener> {
    serve_limited(listener, inbox, tls, FRAME_BYTES_MAX)
}

/// [`serve`] with another bound on a frame's size (tests use a small one).
///
/// # Errors
/// The listener's address cannot be read.
pub fn serve_limited(
    listener: tokio::net::TcpListener,
    mut inbox: Inbox,
    tls: Option<&PeerTlsConfig>,
    frame_bytes_max: usize,
) -> std::io::Result<Listener> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    inbox.stop = Some(stop.subscribe());
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_adaptive_window(Some(true))
        .add_service(PeerServer::new(inbox).max_decoding_message_size(frame_bytes_max));
    // Graceful: stop accepting, then wait for the connections, whose
    // streams the inbox ends on the same signal.
    let signal = async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
    };
    let report = |result: Result<(), tonic::transport::Error>| {
        if let Err(e) = result {
            tracing::error!(error = %e, "peer listener failed");
        }
    };
    match tls {
        Some(tls) => {
            let incoming = tls.incoming(listener);
            let server = router.serve_with_incoming_shutdown(incoming, signal);
            tokio::spawn(async move { report(server.await) });
        }
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let server = router.serve_with_incoming_shutdown(incoming, signal);
            tokio::spawn(async move { report(server.await) });
        }
    }
    Ok(Listener { addr, stop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use t4_core::{Index, Term, Time};

    fn inbox() -> Inbox {
        Inbox::new("b", Arc::new(|_, _| true))
    }

    fn frame(from: &str, to: &str, msg: Vec<u8>) -> PeerFrame {
        PeerFrame {
            from_id: from.into(),
            from_addr: "a:1".into(),
            to_id: to.into(),
            msg,
        }
    }

    /// A good frame becomes (sender, message); each kind of bad frame is
    /// refused with an error naming what is wrong.
    #[test]
    fn frames_are_checked_before_they_reach_the_node() {
        let msg = PeerMsg::Prepare { term: Term(4) };
        assert_eq!(
            inbox().accept(frame("a", "b", msg.encode())),
            Ok((
                Member {
                    id: "a".into(),
                    peer_addr: "a:1".into()
                },
                msg.clone()
            ))
        );
        assert_eq!(
            inbox().accept(frame("", "b", msg.encode())),
            Err(FrameError::NoSender)
        );
        assert_eq!(
            inbox().accept(frame("a", "c", msg.encode())),
            Err(FrameError::NotForMe {
                to: "c".into(),
                me: "b".into()
            })
        );
        for bad in [Vec::new(), vec![0xff; 9], msg.encode()[..1].to_vec()] {
            let err = inbox().accept(frame("a", "b", bad)).expect_err("garbage");
            assert!(
                matches!(err, FrameError::Message { ref from, .. } if from == "a"),
                "{err}"
            );
        }
        let ack = PeerMsg::Ack {
            term: Term(1),
            matched: Index(2),
            sent_at: Time(3),
        };
        assert_eq!(
            inbox()
                .accept(frame("a", "b", ack.encode()))
                .map(|(_, m)| m),
            Ok(ack)
        );
    }
}
