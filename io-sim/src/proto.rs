//! Messages between simulated clients and a simulated node.
//!
//! Unary calls travel as datagrams through madsim's network (tag
//! [`REQUEST_TAG`] / [`REPLY_TAG`]), so loss, delay, reordering and
//! partitions apply to them; a client that hears nothing times out. Watch
//! streams travel over a reliable, ordered madsim connection per stream, as
//! gRPC streams do over TCP: they break when either side dies.

use t4_core::kv::{RangeRequest, RangeResponse, WatchCreateRequest};
use t4_core::{ClientRequest, Error, Response};

/// Datagram tag of a [`RequestMsg`].
pub const REQUEST_TAG: u64 = 1;
/// Datagram tag of a [`ReplyMsg`].
pub const REPLY_TAG: u64 = 2;
/// The node's port.
pub const NODE_PORT: u16 = 2379;
/// Datagram tag of a [`PeerDatagram`].
pub const PEER_TAG: u64 = 3;
/// Cluster mode: the port peers send to.
pub const PEER_PORT: u16 = 2380;

/// Cluster mode: a message from one member to another, as datagrams (so
/// loss, delay, reordering and partitions apply; core tolerates them all).
/// The message travels encoded with core's wire codec, as io-real sends it,
/// so the simulator exercises the codec too.
#[derive(Clone, Debug)]
pub struct PeerDatagram {
    /// The sender.
    pub from: t4_core::bucket::lock::Member,
    /// `PeerMsg::encode`'s bytes.
    pub bytes: Vec<u8>,
}

/// A unary request.
#[derive(Clone, Debug)]
pub enum Request {
    /// A range read, served from the applied state.
    Range(RangeRequest),
    /// Anything the core node decides (writes, lease and alarm queries).
    Core(ClientRequest),
}

/// A unary answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// To [`Request::Range`].
    Range(RangeResponse),
    /// To [`Request::Core`].
    Core(Response),
}

/// A request datagram; `id` is chosen by the client and echoed.
#[derive(Clone, Debug)]
pub struct RequestMsg {
    /// The client's id for this request.
    pub id: u64,
    /// The request.
    pub req: Request,
}

/// A reply datagram.
#[derive(Clone, Debug)]
pub struct ReplyMsg {
    /// The request's id.
    pub id: u64,
    /// The answer.
    pub result: Result<Reply, Error>,
}

/// What a client sends on a watch stream.
#[derive(Clone, Debug)]
pub enum WatchUp {
    /// Create a watch.
    Create(WatchCreateRequest),
    /// Cancel a watch.
    Cancel(i64),
    /// Ask for a progress notification.
    Progress,
    /// The client has read this many responses (flow control: the node
    /// stops sending live events to a stream that falls too far behind).
    Consumed(usize),
}
