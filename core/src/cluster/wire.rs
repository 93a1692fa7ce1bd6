//! The wire format of [`PeerMsg`]: how one member's message to another
//! becomes bytes and back ([`PeerMsg::encode`], [`PeerMsg::decode`]).
//!
//! Core sends peer messages as Rust values ([`crate::node::Action`]); the
//! real driver carries them between processes as opaque bytes over a gRPC
//! stream, and the simulator can run them through this codec to prove that
//! what one node says is what the other hears. The format is protobuf
//! (prost), like the log entry's (`crate::log`), for the same reason: fields
//! and message kinds can be added later without breaking older nodes.
//!
//! # Format
//!
//! One protobuf message, the *envelope*:
//!
//! | tag | field | meaning |
//! |---|---|---|
//! | 1 | `version` (uint32) | [`PEER_MSG_FORMAT_VERSION`]; any other value is refused |
//! | 2–14 | `kind` (oneof) | exactly one message: 2 Prepare, 3 Promise, 4 Refuse, 5 Append, 6 Ack, 7 Reject, 8 Fetch, 9 Fetched, 10 ReadIndex, 11 ReadIndexReply, 12 Forward, 13 Forwarded, 14 Join, 15 Removed, 16 Behind |
//!
//! Each kind is a small message whose fields are the variant's fields in
//! declaration order from tag 1: terms, indexes and times as `uint64`
//! (their newtypes' inner value), flags as `bool`, ids as `uint64`. Three
//! differ: `Forward` is `id` (1) and a request oneof (2–8), `Forwarded` is
//! `id` (1) and `Ok` (2) or `Err` (3), and `Join` is the member's `id` (1)
//! and `peer_addr` (2).
//! Entries are [`Entry`] itself (the WAL's encoding), the etcd request and
//! response structs of `crate::kv` are embedded as they are, a forwarded
//! write is the entry payload oneof ([`Payload`], same tags as in
//! [`Entry`]), and the remaining enums ([`ClientRequest`], [`Response`],
//! [`WriteResponse`], [`Error`], `Result`) each get a oneof. A
//! [`Member`] travels as its two strings.
//!
//! Worked example, `Ack { term: Term(3), matched: Index(17), sent_at:
//! Time(1_000_000_000) }`, 14 bytes:
//!
//! ```text
//! 08 01                 envelope field 1 (version), varint 1
//! 32 0a                 envelope field 6 (kind = Ack), length-delimited, 10 bytes:
//!    08 03              Ack field 1 (term), varint 3
//!    10 11              Ack field 2 (matched), varint 17
//!    18 80 94 eb dc 03  Ack field 3 (sent_at), varint 1,000,000,000
//! ```
//!
//! Protobuf leaves zero values out, so `Ack { term: Term(0), .. }` has no
//! field 1 and decodes back to 0: every value round-trips. Where zero and
//! "absent" differ (`ReadIndexReply`'s `Option<Index>`), the field is a
//! proto3 `optional`, so `Some(Index(0))` and `None` stay apart.
//!
//! # Compatibility
//!
//! - **Adding** a field or a message kind does not change the version: an
//!   older node skips fields it does not know (protobuf's rule) and answers
//!   a kind it does not know with [`WireError::MissingKind`] (the message is
//!   dropped, as one lost on the network would be, and the protocol
//!   already tolerates lost messages).
//! - **Changing the meaning** of a field bumps [`PEER_MSG_FORMAT_VERSION`];
//!   a node refuses every other version with
//!   [`WireError::UnsupportedVersion`] instead of misreading it.
//!
//! # Bad input
//!
//! [`PeerMsg::decode`] is a pure function: bad bytes get a [`WireError`]
//! naming what is wrong and nothing else happens. It refuses, in this
//! order: input over [`PEER_MSG_BYTES_MAX`] (before parsing anything),
//! empty input, bytes that are not protobuf of this shape, another format
//! version, no message kind, a missing required part (a `Forward` without
//! its request, a `Forwarded` without its result …), and values outside
//! their range: an unknown enum discriminant, a node-internal payload
//! (barrier, lease checkpoint) posing as a client's write, and entry runs
//! the receiver's log could not take (a gap in the indexes, a term going
//! back) — the codec is the trust boundary between processes, and the log
//! tail asserts those invariants, so a garbled append must stop here
//! rather than panic the node.
//!
//! Because the kind is the envelope's last field and is length-delimited,
//! a message cut short anywhere never decodes: every proper prefix of an
//! encoding is refused (the tests check each one).
//!
//! # What is not lossless
//!
//! [`Error::Unimplemented`] carries a `&'static str`, which cannot be
//! rebuilt from bytes. Its text is looked up in a table of the messages
//! the code base uses ([`UNIMPLEMENTED_KNOWN`]); a known text comes back
//! exactly, an unknown one comes back as `Unimplemented` with the fixed
//! text [`UNIMPLEMENTED_UNKNOWN`]. The *kind* survives, which is what tells
//! the client what to do; only the detail is lost. (Decoding it as
//! [`Error::Internal`] instead would keep the text but tell the caller the
//! node broke, which is false. Leaking the string to make it `'static`
//! would let a peer grow this node's memory without bound.)
//!
//! Encoding copies the message into the wire structs before serialising
//! (prost encodes owned structs), so an `Append` costs one extra copy of
//! its entries for the duration of [`PeerMsg::encode`].

use prost::Message;

use super::PeerMsg;
use crate::bucket::lock::Member;
use crate::error::{Error, Invalid};
use crate::kv::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse,
    PutResponse, TxnResponse, WriteRequest, WriteResponse,
};
use crate::log::{Entry, Payload};
use crate::node::{ClientRequest, Response};
use crate::types::{Index, Term, Time};

/// The largest encoded peer message [`PeerMsg::decode`] accepts: 512 MiB.
///
/// The biggest message the protocol sends is an `Append` (or `Fetched`) of
/// [`ClusterConfig::append_entries_max`](super::ClusterConfig::append_entries_max)
/// entries (256 by default), each a client write of up to
/// [`NodeConfig::request_bytes_max`](crate::NodeConfig::request_bytes_max)
/// (1.5 MiB by default, etcd's `--max-request-bytes`): 384 MiB plus a few
/// bytes of framing per entry. The bound must sit above that, or a full
/// append would be refused on every retry and replication would stall for
/// good; 512 MiB leaves room and stays far below protobuf's 2 GiB limit.
/// (A test checks the defaults still fit.) Its job is to refuse a garbled
/// length or a hostile peer before anything is parsed; the transport
/// should cap its frames at the same value.
///
/// The leader slices appends by entry count only, so raising
/// `request_bytes_max` past ~2 MiB can make a full append exceed this
/// bound; slicing by bytes as well would close that gap and let the bound
/// come down.
///
/// Nothing bounds a forwarded *response* (a txn's ranges can return any
/// amount of data), so the sender must compare [`PeerMsg::encode`]'s
/// length with this bound and send an error instead of a reply the
/// receiver would refuse.
pub const PEER_MSG_BYTES_MAX: usize = 512 << 20;

/// The format version [`PeerMsg::encode`] writes and [`PeerMsg::decode`]
/// requires (see the module doc: additions keep it, changes of meaning
/// bump it).
pub const PEER_MSG_FORMAT_VERSION: u32 = 1;

/// The texts of [`Error::Unimplemented`] that cross the wire exactly, found
/// by grepping the code base for `Error::Unimplemented(`: io-real's alarm
/// action check and the testkit's reference model. A new
/// `Error::Unimplemented("…")` should be added here; until it is, it
/// arrives as [`UNIMPLEMENTED_UNKNOWN`].
pub const UNIMPLEMENTED_KNOWN: &[&str] = &[
    "unknown alarm action",
    "the reference model has no alarms",
    UNIMPLEMENTED_UNKNOWN,
];

/// The text an [`Error::Unimplemented`] arrives with when the sender's text
/// is not in [`UNIMPLEMENTED_KNOWN`].
pub const UNIMPLEMENTED_UNKNOWN: &str =
    "a feature the sending node does not implement (its message is not known here)";

/// Why bytes are not a peer message. Decoding is pure: an error changes
/// nothing, and the receiver drops the message (the protocol already
/// tolerates lost messages).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// More than [`PEER_MSG_BYTES_MAX`] bytes; refused before parsing.
    #[error("peer message of {bytes} bytes is over the bound of {PEER_MSG_BYTES_MAX} bytes")]
    TooLarge {
        /// The input's length.
        bytes: usize,
    },
    /// No bytes at all.
    #[error("peer message is empty")]
    Empty,
    /// Not protobuf of the envelope's shape (garbage, cut short, a field of
    /// the wrong wire type …).
    #[error("peer message is not decodable: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// Another format version than [`PEER_MSG_FORMAT_VERSION`] (0: the
    /// field is missing).
    #[error(
        "peer message format version {version} is not supported \
         (this node reads version {PEER_MSG_FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The envelope carries no message kind this node knows: none at all,
    /// or one added by a newer node.
    #[error("peer message has no kind this node knows (none set, or one from a newer node)")]
    MissingKind,
    /// A part the message cannot do without is absent.
    #[error("peer message lacks its required `{field}`")]
    MissingField {
        /// Which part, as `Kind.field.subfield`.
        field: &'static str,
    },
    /// A value outside what the field may hold.
    #[error("peer message's `{field}` is out of range: {detail}")]
    OutOfRange {
        /// Which field, as `Kind.field.subfield`.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl PeerMsg {
    /// The message as bytes, in the format of the module doc.
    ///
    /// Infallible, but not bounded: the receiver refuses more than
    /// [`PEER_MSG_BYTES_MAX`] bytes, which a sender that forwards
    /// arbitrary responses must check (see the constant).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        Envelope {
            version: PEER_MSG_FORMAT_VERSION,
            kind: Some(Kind::from(self)),
        }
        .encode_to_vec()
    }

    /// Parses [`PeerMsg::encode`]'s bytes.
    ///
    /// # Errors
    /// A [`WireError`] naming what is wrong; see the module doc for the
    /// checks and their order.
    pub fn decode(bytes: &[u8]) -> Result<PeerMsg, WireError> {
        if bytes.len() > PEER_MSG_BYTES_MAX {
            return Err(WireError::TooLarge { bytes: bytes.len() });
        }
        if bytes.is_empty() {
            return Err(WireError::Empty);
        }
        let envelope = Envelope::decode(bytes)?;
        if envelope.version != PEER_MSG_FORMAT_VERSION {
            return Err(WireError::UnsupportedVersion {
                version: envelope.version,
            });
        }
        PeerMsg::try_from(envelope.kind.ok_or(WireError::MissingKind)?)
    }
}

// ----- the wire structs -----
//
// Private: the format is the module doc's contract, these are its
// implementation. Tags are part of the format and never reused.

/// The outer message.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(
        oneof = "Kind",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16"
    )]
    kind: Option<Kind>,
}

/// One per [`PeerMsg`] variant.
#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "2")]
    Prepare(PrepareMsg),
    #[prost(message, tag = "3")]
    Promise(PromiseMsg),
    #[prost(message, tag = "4")]
    Refuse(RefuseMsg),
    #[prost(message, tag = "5")]
    Append(AppendMsg),
    #[prost(message, tag = "6")]
    Ack(AckMsg),
    #[prost(message, tag = "7")]
    Reject(RejectMsg),
    #[prost(message, tag = "8")]
    Fetch(FetchMsg),
    #[prost(message, tag = "9")]
    Fetched(FetchedMsg),
    #[prost(message, tag = "10")]
    ReadIndex(ReadIndexMsg),
    #[prost(message, tag = "11")]
    ReadIndexReply(ReadIndexReplyMsg),
    #[prost(message, tag = "12")]
    Forward(ForwardMsg),
    #[prost(message, tag = "13")]
    Forwarded(ForwardedMsg),
    #[prost(message, tag = "14")]
    Join(JoinMsg),
    /// The term.
    #[prost(uint64, tag = "15")]
    Removed(u64),
    #[prost(message, tag = "16")]
    Behind(BehindMsg),
}

/// No fields: a oneof member whose presence is the whole information.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
struct Unit {}

#[derive(Clone, PartialEq, prost::Message)]
struct PrepareMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PromiseMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    last_term: u64,
    #[prost(uint64, tag = "3")]
    last_index: u64,
    /// `!voter` (so that a promise without the field counts, as before
    /// the flag existed).
    #[prost(bool, tag = "4")]
    rejoining: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RefuseMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    promised: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AppendMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    prev_index: u64,
    #[prost(uint64, tag = "3")]
    prev_term: u64,
    #[prost(message, repeated, tag = "4")]
    entries: Vec<Entry>,
    #[prost(uint64, tag = "5")]
    commit: u64,
    #[prost(uint64, tag = "6")]
    sent_at: u64,
    #[prost(uint64, tag = "7")]
    uploaded: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BehindMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    first: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AckMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    matched: u64,
    #[prost(uint64, tag = "3")]
    sent_at: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RejectMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    hint: u64,
    #[prost(bool, tag = "3")]
    needs_promise: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FetchMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(uint64, tag = "2")]
    from: u64,
    #[prost(uint64, optional, tag = "3")]
    prev_term: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FetchedMsg {
    #[prost(uint64, tag = "1")]
    term: u64,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<Entry>,
    #[prost(bool, tag = "3")]
    more: bool,
    #[prost(bool, tag = "4")]
    gone: bool,
    #[prost(bool, tag = "5")]
    mismatch: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadIndexMsg {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReadIndexReplyMsg {
    #[prost(uint64, tag = "1")]
    id: u64,
    /// Absent: `None` (present and 0 is `Some(Index(0))`).
    #[prost(uint64, optional, tag = "2")]
    index: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardMsg {
    #[prost(uint64, tag = "1")]
    id: u64,
    /// Required.
    #[prost(oneof = "ClientRequestKind", tags = "2, 3, 4, 5, 6, 7, 8")]
    request: Option<ClientRequestKind>,
}

/// One per [`ClientRequest`] variant.
#[derive(Clone, PartialEq, prost::Oneof)]
enum ClientRequestKind {
    #[prost(message, tag = "2")]
    Write(WriteMsg),
    /// The lease id.
    #[prost(int64, tag = "3")]
    LeaseKeepAlive(i64),
    #[prost(message, tag = "4")]
    LeaseTimeToLive(LeaseTimeToLiveMsg),
    #[prost(message, tag = "5")]
    LeaseLeases(Unit),
    #[prost(message, tag = "6")]
    AlarmList(Unit),
    #[prost(message, tag = "7")]
    LinearizableRead(Unit),
    /// The member id.
    #[prost(string, tag = "8")]
    MemberRemove(String),
}

/// A forwarded write: the log entry's payload oneof, with the same tags as
/// in [`Entry`], so a write looks the same on the wire as in the WAL. Only
/// the payloads that are client writes are accepted (see
/// `TryFrom<Payload> for WriteRequest` in `crate::log`).
#[derive(Clone, PartialEq, prost::Message)]
struct WriteMsg {
    /// Required.
    #[prost(oneof = "Payload", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
    payload: Option<Payload>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseTimeToLiveMsg {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(bool, tag = "2")]
    keys: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedMsg {
    #[prost(uint64, tag = "1")]
    id: u64,
    /// Required.
    #[prost(oneof = "ResultKind", tags = "2, 3")]
    result: Option<ResultKind>,
}

/// `Result<Response, Error>`.
#[derive(Clone, PartialEq, prost::Oneof)]
enum ResultKind {
    #[prost(message, tag = "2")]
    Ok(ResponseMsg),
    #[prost(message, tag = "3")]
    Err(ErrorMsg),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseMsg {
    /// Required.
    #[prost(oneof = "ResponseKind", tags = "1, 2, 3, 4, 5, 6, 7")]
    kind: Option<ResponseKind>,
}

/// One per [`Response`] variant.
#[derive(Clone, PartialEq, prost::Oneof)]
enum ResponseKind {
    #[prost(message, tag = "1")]
    Write(WriteResponseMsg),
    #[prost(message, tag = "2")]
    LeaseKeepAlive(LeaseKeepAliveResponse),
    #[prost(message, tag = "3")]
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    #[prost(message, tag = "4")]
    LeaseLeases(LeaseLeasesResponse),
    #[prost(message, tag = "5")]
    Alarm(AlarmResponse),
    #[prost(message, tag = "6")]
    ReadReady(Unit),
    #[prost(message, tag = "7")]
    Members(MembersMsg),
}

#[derive(Clone, PartialEq, prost::Message)]
struct MembersMsg {
    #[prost(message, repeated, tag = "1")]
    members: Vec<JoinMsg>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WriteResponseMsg {
    /// Required.
    #[prost(oneof = "WriteResponseKind", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    kind: Option<WriteResponseKind>,
}

/// One per [`WriteResponse`] variant.
#[derive(Clone, PartialEq, prost::Oneof)]
enum WriteResponseKind {
    #[prost(message, tag = "1")]
    Put(PutResponse),
    #[prost(message, tag = "2")]
    DeleteRange(DeleteRangeResponse),
    #[prost(message, tag = "3")]
    Txn(TxnResponse),
    #[prost(message, tag = "4")]
    Compaction(CompactionResponse),
    #[prost(message, tag = "5")]
    LeaseGrant(LeaseGrantResponse),
    #[prost(message, tag = "6")]
    LeaseRevoke(LeaseRevokeResponse),
    #[prost(message, tag = "7")]
    Alarm(AlarmResponse),
    /// `Internal { revision }`.
    #[prost(int64, tag = "8")]
    Internal(i64),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorMsg {
    /// Required.
    #[prost(
        oneof = "ErrorKind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13"
    )]
    kind: Option<ErrorKind>,
}

/// One per [`Error`] variant.
#[derive(Clone, PartialEq, prost::Oneof)]
enum ErrorKind {
    /// `compact_revision`.
    #[prost(int64, tag = "1")]
    Compacted(i64),
    #[prost(message, tag = "2")]
    FutureRevision(Unit),
    #[prost(message, tag = "3")]
    LeaseNotFound(Unit),
    #[prost(message, tag = "4")]
    LeaseExists(Unit),
    #[prost(message, tag = "5")]
    NoSpace(Unit),
    /// An [`InvalidCode`].
    #[prost(enumeration = "InvalidCode", tag = "6")]
    InvalidArgument(i32),
    #[prost(string, tag = "7")]
    Unavailable(String),
    #[prost(string, tag = "8")]
    Timeout(String),
    #[prost(string, tag = "9")]
    Fenced(String),
    /// Looked up in [`UNIMPLEMENTED_KNOWN`] on the way in.
    #[prost(string, tag = "10")]
    Unimplemented(String),
    #[prost(string, tag = "11")]
    Internal(String),
    #[prost(message, tag = "12")]
    MemberNotFound(Unit),
    #[prost(string, tag = "13")]
    MembershipRefused(String),
}

/// [`Invalid`]'s variants. 0 is no variant, so a sender that forgot to set
/// the code is caught rather than read as the first variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum InvalidCode {
    Unspecified = 0,
    EmptyKey = 1,
    KeyNotFound = 2,
    ValueProvided = 3,
    LeaseProvided = 4,
    TooManyOps = 5,
    DuplicateKey = 6,
    RequestTooLarge = 7,
    InvalidSortOption = 8,
    LeaseTtlTooLarge = 9,
    NegativeLeaseTtl = 10,
    NegativeLeaseId = 11,
}

#[derive(Clone, PartialEq, prost::Message)]
/// A [`Member`] (also an element of [`MembersMsg`]).
struct JoinMsg {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    peer_addr: String,
}

// ----- PeerMsg → wire -----

impl From<&Member> for JoinMsg {
    fn from(member: &Member) -> JoinMsg {
        JoinMsg {
            id: member.id.clone(),
            peer_addr: member.peer_addr.clone(),
        }
    }
}

impl From<JoinMsg> for Member {
    fn from(m: JoinMsg) -> Member {
        Member {
            id: m.id,
            peer_addr: m.peer_addr,
        }
    }
}

impl From<&PeerMsg> for Kind {
    fn from(msg: &PeerMsg) -> Kind {
        match msg {
            PeerMsg::Prepare { term } => Kind::Prepare(PrepareMsg { term: term.0 }),
            PeerMsg::Promise {
                term,
                last_term,
                last_index,
                voter,
            } => Kind::Promise(PromiseMsg {
                term: term.0,
                last_term: last_term.0,
                last_index: last_index.0,
                rejoining: !voter,
            }),
            PeerMsg::Refuse { term, promised } => Kind::Refuse(RefuseMsg {
                term: term.0,
                promised: promised.0,
            }),
            PeerMsg::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                sent_at,
                uploaded,
            } => Kind::Append(AppendMsg {
                term: term.0,
                prev_index: prev_index.0,
                prev_term: prev_term.0,
                entries: entries.clone(),
                commit: commit.0,
                sent_at: sent_at.0,
                uploaded: uploaded.0,
            }),
            PeerMsg::Ack {
                term,
                matched,
                sent_at,
            } => Kind::Ack(AckMsg {
                term: term.0,
                matched: matched.0,
                sent_at: sent_at.0,
            }),
            PeerMsg::Reject {
                term,
                hint,
                needs_promise,
            } => Kind::Reject(RejectMsg {
                term: term.0,
                hint: hint.0,
                needs_promise: *needs_promise,
            }),
            PeerMsg::Fetch {
                term,
                from,
                prev_term,
            } => Kind::Fetch(FetchMsg {
                term: term.0,
                from: from.0,
                prev_term: prev_term.map(|t| t.0),
            }),
            PeerMsg::Fetched {
                term,
                entries,
                more,
                gone,
                mismatch,
            } => Kind::Fetched(FetchedMsg {
                term: term.0,
                entries: entries.clone(),
                more: *more,
                gone: *gone,
                mismatch: *mismatch,
            }),
            PeerMsg::ReadIndex { id } => Kind::ReadIndex(ReadIndexMsg { id: *id }),
            PeerMsg::ReadIndexReply { id, index } => Kind::ReadIndexReply(ReadIndexReplyMsg {
                id: *id,
                index: index.map(|i| i.0),
            }),
            PeerMsg::Forward { id, request } => Kind::Forward(ForwardMsg {
                id: *id,
                request: Some(ClientRequestKind::from(request)),
            }),
            PeerMsg::Forwarded { id, result } => Kind::Forwarded(ForwardedMsg {
                id: *id,
                result: Some(match result {
                    Ok(response) => ResultKind::Ok(ResponseMsg {
                        kind: Some(ResponseKind::from(response)),
                    }),
                    Err(error) => ResultKind::Err(ErrorMsg {
                        kind: Some(ErrorKind::from(error)),
                    }),
                }),
            }),
            PeerMsg::Join { member } => Kind::Join(JoinMsg::from(member)),
            PeerMsg::Removed { term } => Kind::Removed(term.0),
            PeerMsg::Behind { term, first } => Kind::Behind(BehindMsg {
                term: term.0,
                first: first.0,
            }),
        }
    }
}

impl From<&ClientRequest> for ClientRequestKind {
    fn from(request: &ClientRequest) -> ClientRequestKind {
        match request {
            ClientRequest::Write(write) => ClientRequestKind::Write(WriteMsg {
                payload: Some(Payload::from(write.clone())),
            }),
            ClientRequest::LeaseKeepAlive { id } => ClientRequestKind::LeaseKeepAlive(*id),
            ClientRequest::LeaseTimeToLive { id, keys } => {
                ClientRequestKind::LeaseTimeToLive(LeaseTimeToLiveMsg {
                    id: *id,
                    keys: *keys,
                })
            }
            ClientRequest::LeaseLeases => ClientRequestKind::LeaseLeases(Unit {}),
            ClientRequest::AlarmList => ClientRequestKind::AlarmList(Unit {}),
            ClientRequest::LinearizableRead => ClientRequestKind::LinearizableRead(Unit {}),
            ClientRequest::MemberRemove { id } => ClientRequestKind::MemberRemove(id.clone()),
        }
    }
}

impl From<&Response> for ResponseKind {
    fn from(response: &Response) -> ResponseKind {
        match response {
            Response::Write(write) => ResponseKind::Write(WriteResponseMsg {
                kind: Some(WriteResponseKind::from(write)),
            }),
            Response::LeaseKeepAlive(r) => ResponseKind::LeaseKeepAlive(r.clone()),
            Response::LeaseTimeToLive(r) => ResponseKind::LeaseTimeToLive(r.clone()),
            Response::LeaseLeases(r) => ResponseKind::LeaseLeases(r.clone()),
            Response::Alarm(r) => ResponseKind::Alarm(r.clone()),
            Response::ReadReady => ResponseKind::ReadReady(Unit {}),
            Response::Members(members) => ResponseKind::Members(MembersMsg {
                members: members.iter().map(JoinMsg::from).collect(),
            }),
        }
    }
}

impl From<&WriteResponse> for WriteResponseKind {
    fn from(write: &WriteResponse) -> WriteResponseKind {
        match write {
            WriteResponse::Put(r) => WriteResponseKind::Put(r.clone()),
            WriteResponse::DeleteRange(r) => WriteResponseKind::DeleteRange(r.clone()),
            WriteResponse::Txn(r) => WriteResponseKind::Txn(r.clone()),
            WriteResponse::Compaction(r) => WriteResponseKind::Compaction(r.clone()),
            WriteResponse::LeaseGrant(r) => WriteResponseKind::LeaseGrant(r.clone()),
            WriteResponse::LeaseRevoke(r) => WriteResponseKind::LeaseRevoke(r.clone()),
            WriteResponse::Alarm(r) => WriteResponseKind::Alarm(r.clone()),
            WriteResponse::Internal { revision } => WriteResponseKind::Internal(*revision),
        }
    }
}

impl From<&Error> for ErrorKind {
    fn from(error: &Error) -> ErrorKind {
        match error {
            Error::Compacted { compact_revision } => ErrorKind::Compacted(*compact_revision),
            Error::FutureRevision => ErrorKind::FutureRevision(Unit {}),
            Error::LeaseNotFound => ErrorKind::LeaseNotFound(Unit {}),
            Error::LeaseExists => ErrorKind::LeaseExists(Unit {}),
            Error::NoSpace => ErrorKind::NoSpace(Unit {}),
            Error::InvalidArgument(invalid) => {
                ErrorKind::InvalidArgument(InvalidCode::from(*invalid).into())
            }
            Error::Unavailable(s) => ErrorKind::Unavailable(s.clone()),
            Error::Timeout(s) => ErrorKind::Timeout(s.clone()),
            Error::Fenced(s) => ErrorKind::Fenced(s.clone()),
            Error::Unimplemented(s) => ErrorKind::Unimplemented((*s).to_owned()),
            Error::Internal(s) => ErrorKind::Internal(s.clone()),
            Error::MemberNotFound => ErrorKind::MemberNotFound(Unit {}),
            Error::MembershipRefused(s) => ErrorKind::MembershipRefused(s.clone()),
        }
    }
}

impl From<Invalid> for InvalidCode {
    fn from(invalid: Invalid) -> InvalidCode {
        match invalid {
            Invalid::EmptyKey => InvalidCode::EmptyKey,
            Invalid::KeyNotFound => InvalidCode::KeyNotFound,
            Invalid::ValueProvided => InvalidCode::ValueProvided,
            Invalid::LeaseProvided => InvalidCode::LeaseProvided,
            Invalid::TooManyOps => InvalidCode::TooManyOps,
            Invalid::DuplicateKey => InvalidCode::DuplicateKey,
            Invalid::RequestTooLarge => InvalidCode::RequestTooLarge,
            Invalid::InvalidSortOption => InvalidCode::InvalidSortOption,
            Invalid::LeaseTtlTooLarge => InvalidCode::LeaseTtlTooLarge,
            Invalid::NegativeLeaseTtl => InvalidCode::NegativeLeaseTtl,
            Invalid::NegativeLeaseId => InvalidCode::NegativeLeaseId,
        }
    }
}

// ----- wire → PeerMsg -----

impl TryFrom<Kind> for PeerMsg {
    type Error = WireError;

    fn try_from(kind: Kind) -> Result<PeerMsg, WireError> {
        Ok(match kind {
            Kind::Prepare(m) => PeerMsg::Prepare { term: Term(m.term) },
            Kind::Promise(m) => PeerMsg::Promise {
                term: Term(m.term),
                last_term: Term(m.last_term),
                last_index: Index(m.last_index),
                voter: !m.rejoining,
            },
            Kind::Refuse(m) => PeerMsg::Refuse {
                term: Term(m.term),
                promised: Term(m.promised),
            },
            Kind::Append(m) => {
                let (prev_index, prev_term) = (Index(m.prev_index), Term(m.prev_term));
                check_run("Append.entries", Some((prev_index, prev_term)), &m.entries)?;
                PeerMsg::Append {
                    term: Term(m.term),
                    prev_index,
                    prev_term,
                    entries: m.entries,
                    commit: Index(m.commit),
                    sent_at: Time(m.sent_at),
                    uploaded: Index(m.uploaded),
                }
            }
            Kind::Ack(m) => PeerMsg::Ack {
                term: Term(m.term),
                matched: Index(m.matched),
                sent_at: Time(m.sent_at),
            },
            Kind::Reject(m) => PeerMsg::Reject {
                term: Term(m.term),
                hint: Index(m.hint),
                needs_promise: m.needs_promise,
            },
            Kind::Fetch(m) => PeerMsg::Fetch {
                term: Term(m.term),
                from: Index(m.from),
                prev_term: m.prev_term.map(Term),
            },
            Kind::Fetched(m) => {
                check_run("Fetched.entries", None, &m.entries)?;
                PeerMsg::Fetched {
                    term: Term(m.term),
                    entries: m.entries,
                    more: m.more,
                    gone: m.gone,
                    mismatch: m.mismatch,
                }
            }
            Kind::ReadIndex(m) => PeerMsg::ReadIndex { id: m.id },
            Kind::ReadIndexReply(m) => PeerMsg::ReadIndexReply {
                id: m.id,
                index: m.index.map(Index),
            },
            Kind::Forward(m) => PeerMsg::Forward {
                id: m.id,
                request: ClientRequest::try_from(m.request.ok_or(WireError::MissingField {
                    field: "Forward.request",
                })?)?,
            },
            Kind::Forwarded(m) => PeerMsg::Forwarded {
                id: m.id,
                result: match m.result.ok_or(WireError::MissingField {
                    field: "Forwarded.result",
                })? {
                    ResultKind::Ok(r) => Ok(Response::try_from(r.kind.ok_or(
                        WireError::MissingField {
                            field: "Forwarded.result.ok",
                        },
                    )?)?),
                    ResultKind::Err(e) => {
                        Err(Error::try_from(e.kind.ok_or(WireError::MissingField {
                            field: "Forwarded.result.err",
                        })?)?)
                    }
                },
            },
            Kind::Join(m) => PeerMsg::Join {
                member: Member::from(m),
            },
            Kind::Removed(term) => PeerMsg::Removed { term: Term(term) },
            Kind::Behind(m) => PeerMsg::Behind {
                term: Term(m.term),
                first: Index(m.first),
            },
        })
    }
}

/// Checks that `entries` is a run the receiver's log can take (it asserts
/// the same in `RecentLog::push`): indexes contiguous, starting right after
/// `after`'s index when given, and terms never going back (from `after`'s
/// term when given).
fn check_run(
    field: &'static str,
    after: Option<(Index, Term)>,
    entries: &[Entry],
) -> Result<(), WireError> {
    let mut expected = after.map(|(index, _)| index.0.checked_add(1));
    let mut term_min = after.map_or(0, |(_, term)| term.0);
    for (i, entry) in entries.iter().enumerate() {
        match expected {
            Some(None) => {
                return Err(WireError::OutOfRange {
                    field,
                    detail: format!("entry {i} would have an index past {}", u64::MAX),
                })
            }
            Some(Some(index)) if entry.index != index => {
                return Err(WireError::OutOfRange {
                    field,
                    detail: format!("entry {i} has index {}, expected {index}", entry.index),
                })
            }
            _ => {}
        }
        if entry.term < term_min {
            return Err(WireError::OutOfRange {
                field,
                detail: format!(
                    "entry {i} (index {}) has term {}, below the term {term_min} before it",
                    entry.index, entry.term
                ),
            });
        }
        expected = Some(entry.index.checked_add(1));
        term_min = entry.term;
    }
    Ok(())
}

impl TryFrom<ClientRequestKind> for ClientRequest {
    type Error = WireError;

    fn try_from(kind: ClientRequestKind) -> Result<ClientRequest, WireError> {
        Ok(match kind {
            ClientRequestKind::Write(w) => {
                let payload = w.payload.ok_or(WireError::MissingField {
                    field: "Forward.request.write",
                })?;
                ClientRequest::Write(WriteRequest::try_from(payload).map_err(|internal| {
                    WireError::OutOfRange {
                        field: "Forward.request.write",
                        detail: format!(
                            "{} is written by the node itself, never by a client",
                            payload_name(&internal)
                        ),
                    }
                })?)
            }
            ClientRequestKind::LeaseKeepAlive(id) => ClientRequest::LeaseKeepAlive { id },
            ClientRequestKind::LeaseTimeToLive(m) => ClientRequest::LeaseTimeToLive {
                id: m.id,
                keys: m.keys,
            },
            ClientRequestKind::LeaseLeases(Unit {}) => ClientRequest::LeaseLeases,
            ClientRequestKind::AlarmList(Unit {}) => ClientRequest::AlarmList,
            ClientRequestKind::LinearizableRead(Unit {}) => ClientRequest::LinearizableRead,
            ClientRequestKind::MemberRemove(id) => ClientRequest::MemberRemove { id },
        })
    }
}

/// A payload's name, for errors.
fn payload_name(payload: &Payload) -> &'static str {
    match payload {
        Payload::Put(_) => "a put",
        Payload::DeleteRange(_) => "a delete",
        Payload::Txn(_) => "a txn",
        Payload::Compaction(_) => "a compaction",
        Payload::Barrier(_) => "a barrier",
        Payload::LeaseGrant(_) => "a lease grant",
        Payload::LeaseRevoke(_) => "a lease revoke",
        Payload::LeaseCheckpoint(_) => "a lease checkpoint",
        Payload::Alarm(_) => "an alarm change",
    }
}

impl TryFrom<ResponseKind> for Response {
    type Error = WireError;

    fn try_from(kind: ResponseKind) -> Result<Response, WireError> {
        Ok(match kind {
            ResponseKind::Write(w) => Response::Write(
                match w.kind.ok_or(WireError::MissingField {
                    field: "Forwarded.result.ok.write",
                })? {
                    WriteResponseKind::Put(r) => WriteResponse::Put(r),
                    WriteResponseKind::DeleteRange(r) => WriteResponse::DeleteRange(r),
                    WriteResponseKind::Txn(r) => WriteResponse::Txn(r),
                    WriteResponseKind::Compaction(r) => WriteResponse::Compaction(r),
                    WriteResponseKind::LeaseGrant(r) => WriteResponse::LeaseGrant(r),
                    WriteResponseKind::LeaseRevoke(r) => WriteResponse::LeaseRevoke(r),
                    WriteResponseKind::Alarm(r) => WriteResponse::Alarm(r),
                    WriteResponseKind::Internal(revision) => WriteResponse::Internal { revision },
                },
            ),
            ResponseKind::LeaseKeepAlive(r) => Response::LeaseKeepAlive(r),
            ResponseKind::LeaseTimeToLive(r) => Response::LeaseTimeToLive(r),
            ResponseKind::LeaseLeases(r) => Response::LeaseLeases(r),
            ResponseKind::Alarm(r) => Response::Alarm(r),
            ResponseKind::ReadReady(Unit {}) => Response::ReadReady,
            ResponseKind::Members(m) => {
                Response::Members(m.members.into_iter().map(Member::from).collect())
            }
        })
    }
}

impl TryFrom<ErrorKind> for Error {
    type Error = WireError;

    fn try_from(kind: ErrorKind) -> Result<Error, WireError> {
        Ok(match kind {
            ErrorKind::Compacted(compact_revision) => Error::Compacted { compact_revision },
            ErrorKind::FutureRevision(Unit {}) => Error::FutureRevision,
            ErrorKind::LeaseNotFound(Unit {}) => Error::LeaseNotFound,
            ErrorKind::LeaseExists(Unit {}) => Error::LeaseExists,
            ErrorKind::NoSpace(Unit {}) => Error::NoSpace,
            ErrorKind::InvalidArgument(code) => Error::InvalidArgument(invalid_from_code(code)?),
            ErrorKind::Unavailable(s) => Error::Unavailable(s),
            ErrorKind::Timeout(s) => Error::Timeout(s),
            ErrorKind::Fenced(s) => Error::Fenced(s),
            ErrorKind::Unimplemented(s) => Error::Unimplemented(
                UNIMPLEMENTED_KNOWN
                    .iter()
                    .copied()
                    .find(|known| *known == s)
                    .unwrap_or(UNIMPLEMENTED_UNKNOWN),
            ),
            ErrorKind::Internal(s) => Error::Internal(s),
            ErrorKind::MemberNotFound(Unit {}) => Error::MemberNotFound,
            ErrorKind::MembershipRefused(s) => Error::MembershipRefused(s),
        })
    }
}

/// The [`Invalid`] an [`InvalidCode`] stands for; 0 and unknown codes are
/// out of range.
fn invalid_from_code(code: i32) -> Result<Invalid, WireError> {
    let out_of_range = || WireError::OutOfRange {
        field: "Forwarded.result.err.invalid_argument",
        detail: format!("{code} is no invalid-argument reason this node knows"),
    };
    Ok(
        match InvalidCode::try_from(code).map_err(|_| out_of_range())? {
            InvalidCode::Unspecified => return Err(out_of_range()),
            InvalidCode::EmptyKey => Invalid::EmptyKey,
            InvalidCode::KeyNotFound => Invalid::KeyNotFound,
            InvalidCode::ValueProvided => Invalid::ValueProvided,
            InvalidCode::LeaseProvided => Invalid::LeaseProvided,
            InvalidCode::TooManyOps => Invalid::TooManyOps,
            InvalidCode::DuplicateKey => Invalid::DuplicateKey,
            InvalidCode::RequestTooLarge => Invalid::RequestTooLarge,
            InvalidCode::InvalidSortOption => Invalid::InvalidSortOption,
            InvalidCode::LeaseTtlTooLarge => Invalid::LeaseTtlTooLarge,
            InvalidCode::NegativeLeaseTtl => Invalid::NegativeLeaseTtl,
            InvalidCode::NegativeLeaseId => Invalid::NegativeLeaseId,
        },
    )
}

#[cfg(test)]
mod tests;
