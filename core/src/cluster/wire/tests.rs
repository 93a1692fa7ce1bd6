//! Codec tests: every variant round-trips, the bytes are the documented
//! ones, and bad input is refused with the error that names it.

use proptest::prelude::*;

use super::*;
use crate::cluster::ClusterConfig;
use crate::kv::{
    AlarmAction, AlarmMember, AlarmRequest, AlarmType, CompactionRequest, Compare, CompareResult,
    CompareTarget, DeleteRangeRequest, KeyValue, LeaseCheckpoint, LeaseCheckpointRequest,
    LeaseGrantRequest, LeaseRevokeRequest, Op, OpResponse, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, TargetUnion, TxnRequest,
};
use crate::log::Barrier;
use crate::NodeConfig;

// ----- fixtures -----

fn kv(key: &str, value: &str, revision: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        create_revision: revision - 1,
        mod_revision: revision,
        version: 2,
        value: value.into(),
        lease: 0,
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        lease: 7,
        prev_kv: true,
        ..PutRequest::default()
    }
}

/// A txn using every op kind, a nested txn and an operand of each form.
fn txn() -> TxnRequest {
    TxnRequest {
        compare: vec![
            Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: b"a".to_vec(),
                target_union: Some(TargetUnion::Value(b"1".to_vec())),
                range_end: Vec::new(),
            },
            Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Mod as i32,
                key: b"b".to_vec(),
                target_union: Some(TargetUnion::ModRevision(4)),
                range_end: b"c".to_vec(),
            },
        ],
        success: vec![
            RequestOp {
                op: Some(Op::Put(put("a", "2"))),
            },
            RequestOp {
                op: Some(Op::Range(RangeRequest {
                    key: b"a".to_vec(),
                    range_end: vec![0],
                    limit: 10,
                    ..RangeRequest::default()
                })),
            },
        ],
        failure: vec![
            RequestOp {
                op: Some(Op::DeleteRange(DeleteRangeRequest {
                    key: b"z".to_vec(),
                    ..DeleteRangeRequest::default()
                })),
            },
            RequestOp {
                op: Some(Op::Txn(TxnRequest::default())),
            },
        ],
    }
}

/// One of each [`WriteRequest`] variant.
fn writes() -> Vec<WriteRequest> {
    vec![
        WriteRequest::Put(put("k", "v")),
        WriteRequest::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            prev_kv: true,
        }),
        WriteRequest::Txn(txn()),
        WriteRequest::Compaction(CompactionRequest {
            revision: 42,
            physical: true,
        }),
        WriteRequest::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 99 }),
        WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 99 }),
        WriteRequest::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: 3,
            alarm: AlarmType::Nospace as i32,
        }),
    ]
}

/// One of each [`ClientRequest`] variant, writes of every kind included.
fn client_requests() -> Vec<ClientRequest> {
    let mut out: Vec<ClientRequest> = writes().into_iter().map(ClientRequest::Write).collect();
    out.extend([
        ClientRequest::LeaseKeepAlive { id: -5 },
        ClientRequest::LeaseTimeToLive { id: 8, keys: true },
        ClientRequest::LeaseTimeToLive { id: 8, keys: false },
        ClientRequest::LeaseLeases,
        ClientRequest::AlarmList,
        ClientRequest::LinearizableRead,
        ClientRequest::MemberRemove { id: "n2".into() },
        ClientRequest::MemberRemove { id: String::new() },
    ]);
    out
}

/// One of each [`Response`] variant, writes of every kind included.
fn responses() -> Vec<Response> {
    let alarms = AlarmResponse {
        revision: 9,
        alarms: vec![AlarmMember {
            member_id: 3,
            alarm: AlarmType::Corrupt as i32,
        }],
    };
    vec![
        Response::Write(WriteResponse::Put(PutResponse {
            revision: 5,
            prev_kv: Some(kv("k", "old", 4)),
        })),
        Response::Write(WriteResponse::DeleteRange(DeleteRangeResponse {
            revision: 6,
            deleted: 2,
            prev_kvs: vec![kv("a", "1", 2), kv("b", "2", 3)],
        })),
        Response::Write(WriteResponse::Txn(TxnResponse {
            revision: 7,
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(OpResponse::Put(PutResponse {
                        revision: 7,
                        prev_kv: None,
                    })),
                },
                ResponseOp {
                    response: Some(OpResponse::Range(RangeResponse {
                        revision: 7,
                        kvs: vec![kv("a", "2", 7)],
                        more: true,
                        count: 3,
                    })),
                },
            ],
        })),
        Response::Write(WriteResponse::Compaction(CompactionResponse {
            revision: 8,
        })),
        Response::Write(WriteResponse::LeaseGrant(LeaseGrantResponse {
            revision: 8,
            id: 99,
            ttl: 10,
        })),
        Response::Write(WriteResponse::LeaseRevoke(LeaseRevokeResponse {
            revision: 9,
        })),
        Response::Write(WriteResponse::Alarm(alarms.clone())),
        Response::Write(WriteResponse::Internal { revision: 0 }),
        Response::Write(WriteResponse::Internal { revision: -1 }),
        Response::LeaseKeepAlive(LeaseKeepAliveResponse {
            revision: 9,
            id: 99,
            ttl: 0,
        }),
        Response::LeaseTimeToLive(LeaseTimeToLiveResponse {
            revision: 9,
            id: 99,
            ttl: -1,
            granted_ttl: 10,
            keys: vec![b"a".to_vec(), Vec::new()],
        }),
        Response::LeaseLeases(LeaseLeasesResponse {
            revision: 9,
            ids: vec![1, 99, i64::MAX],
        }),
        Response::Alarm(alarms),
        Response::Alarm(AlarmResponse::default()),
        Response::ReadReady,
        Response::Members(vec![
            Member {
                id: "n1".into(),
                peer_addr: "10.0.0.1:2380".into(),
            },
            Member {
                id: "n3".into(),
                peer_addr: "[::1]:2380".into(),
            },
        ]),
        Response::Members(Vec::new()),
    ]
}

/// Every [`Invalid`] variant.
fn invalids() -> Vec<Invalid> {
    vec![
        Invalid::EmptyKey,
        Invalid::KeyNotFound,
        Invalid::ValueProvided,
        Invalid::LeaseProvided,
        Invalid::TooManyOps,
        Invalid::DuplicateKey,
        Invalid::RequestTooLarge,
        Invalid::InvalidSortOption,
        Invalid::LeaseTtlTooLarge,
        Invalid::NegativeLeaseTtl,
        Invalid::NegativeLeaseId,
    ]
}

/// Every [`Error`] variant (each [`Invalid`] reason too), with texts that
/// include the empty string and non-ASCII.
fn errors() -> Vec<Error> {
    let mut out = vec![
        Error::Compacted {
            compact_revision: 12,
        },
        Error::Compacted {
            compact_revision: 0,
        },
        Error::FutureRevision,
        Error::LeaseNotFound,
        Error::LeaseExists,
        Error::NoSpace,
        Error::Unavailable("no leader (lock lost); retry".into()),
        Error::Unavailable(String::new()),
        Error::Timeout("waited 5 s — the write may still apply".into()),
        Error::Fenced("node b took over".into()),
        Error::Unimplemented("unknown alarm action"),
        Error::Unimplemented("the reference model has no alarms"),
        Error::Internal("disk on fire".into()),
        Error::MemberNotFound,
        Error::MembershipRefused("the last member cannot be removed".into()),
    ];
    out.extend(invalids().into_iter().map(Error::InvalidArgument));
    out
}

/// Entry `index` of `term` with `payload`.
fn entry(term: u64, index: u64, payload: Option<Payload>) -> Entry {
    Entry {
        term,
        index,
        payload,
    }
}

/// Entries 5..=15: a payload of every kind (and none), terms 2 then 3.
fn mixed_entries() -> Vec<Entry> {
    let mut payloads: Vec<Option<Payload>> = writes()
        .into_iter()
        .map(|w| Some(Payload::from(w)))
        .collect();
    payloads.extend([
        Some(Payload::Barrier(Barrier {})),
        Some(Payload::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint {
                id: 99,
                remaining_ttl: 4,
            }],
        })),
        None,
        Some(Payload::Put(PutRequest {
            key: vec![0, 255],
            value: vec![7; 4000],
            ..PutRequest::default()
        })),
    ]);
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| entry(if i < 7 { 2 } else { 3 }, 5 + i as u64, p))
        .collect()
}

/// A message of every variant, and every nested enum's variants in
/// `Forward` and `Forwarded`.
fn corpus() -> Vec<PeerMsg> {
    let mut out = vec![
        PeerMsg::Prepare { term: Term(4) },
        PeerMsg::Prepare { term: Term(0) },
        PeerMsg::Promise {
            term: Term(4),
            last_term: Term(3),
            last_index: Index(17),
            voter: true,
        },
        PeerMsg::Promise {
            term: Term(5),
            last_term: Term(0),
            last_index: Index(0),
            voter: false,
        },
        PeerMsg::Refuse {
            term: Term(4),
            promised: Term(u64::MAX),
        },
        PeerMsg::Append {
            term: Term(3),
            prev_index: Index(4),
            prev_term: Term(2),
            entries: mixed_entries(),
            commit: Index(9),
            sent_at: Time(1_000_000_000),
            uploaded: Index(3),
        },
        PeerMsg::Append {
            term: Term(3),
            prev_index: Index(17),
            prev_term: Term(3),
            entries: Vec::new(),
            commit: Index(17),
            sent_at: Time(u64::MAX),
            uploaded: Index(u64::MAX),
        },
        PeerMsg::Ack {
            term: Term(3),
            matched: Index(17),
            sent_at: Time(1_000_000_000),
        },
        PeerMsg::Reject {
            term: Term(5),
            hint: Index(2),
            needs_promise: true,
        },
        PeerMsg::Reject {
            term: Term(3),
            hint: Index(0),
            needs_promise: false,
        },
        PeerMsg::Fetch {
            term: Term(4),
            from: Index(10),
            prev_term: None,
        },
        PeerMsg::Fetch {
            term: Term(4),
            from: Index(10),
            prev_term: Some(Term(0)),
        },
        PeerMsg::Fetch {
            term: Term(4),
            from: Index(10),
            prev_term: Some(Term(3)),
        },
        PeerMsg::ReadIndex { id: 0 },
        PeerMsg::ReadIndex { id: u64::MAX },
        PeerMsg::ReadIndexReply { id: 1, index: None },
        PeerMsg::ReadIndexReply {
            id: 1,
            index: Some(Index(0)),
        },
        PeerMsg::ReadIndexReply {
            id: 2,
            index: Some(Index(31)),
        },
        PeerMsg::Join {
            member: Member {
                id: "node-c".into(),
                peer_addr: "10.0.0.3:2380".into(),
            },
        },
        PeerMsg::Join {
            member: Member {
                id: String::new(),
                peer_addr: "ünïcode:1".into(),
            },
        },
        PeerMsg::Removed { term: Term(0) },
        PeerMsg::Removed {
            term: Term(u64::MAX),
        },
        PeerMsg::Behind {
            term: Term(3),
            first: Index(10_001),
        },
        PeerMsg::Behind {
            term: Term(u64::MAX),
            first: Index(0),
        },
    ];
    for (more, gone) in [(false, false), (true, false), (false, true), (true, true)] {
        let entries = if gone { Vec::new() } else { mixed_entries() };
        out.push(PeerMsg::Fetched {
            term: Term(4),
            entries,
            more,
            gone,
            mismatch: false,
        });
    }
    out.push(PeerMsg::Fetched {
        term: Term(4),
        entries: Vec::new(),
        more: false,
        gone: false,
        mismatch: true,
    });
    for (id, request) in client_requests().into_iter().enumerate() {
        out.push(PeerMsg::Forward {
            id: id as u64,
            request,
        });
    }
    for (id, response) in responses().into_iter().enumerate() {
        out.push(PeerMsg::Forwarded {
            id: id as u64,
            result: Ok(response),
        });
    }
    for (id, error) in errors().into_iter().enumerate() {
        out.push(PeerMsg::Forwarded {
            id: 100 + id as u64,
            result: Err(error),
        });
    }
    out
}

/// The variant's name. Exhaustive, so a new variant fails to compile here
/// until the corpus covers it.
fn variant(msg: &PeerMsg) -> &'static str {
    match msg {
        PeerMsg::Prepare { .. } => "Prepare",
        PeerMsg::Promise { .. } => "Promise",
        PeerMsg::Refuse { .. } => "Refuse",
        PeerMsg::Append { .. } => "Append",
        PeerMsg::Ack { .. } => "Ack",
        PeerMsg::Reject { .. } => "Reject",
        PeerMsg::Fetch { .. } => "Fetch",
        PeerMsg::Fetched { .. } => "Fetched",
        PeerMsg::ReadIndex { .. } => "ReadIndex",
        PeerMsg::ReadIndexReply { .. } => "ReadIndexReply",
        PeerMsg::Forward { .. } => "Forward",
        PeerMsg::Forwarded { .. } => "Forwarded",
        PeerMsg::Join { .. } => "Join",
        PeerMsg::Removed { .. } => "Removed",
        PeerMsg::Behind { .. } => "Behind",
    }
}

fn assert_round_trips(msg: &PeerMsg) {
    let bytes = msg.encode();
    assert_eq!(
        PeerMsg::decode(&bytes).as_ref(),
        Ok(msg),
        "{msg:?} as {bytes:02x?}"
    );
}

/// Bytes of an envelope built by hand (to make what `encode` never does).
fn raw(kind: Option<Kind>) -> Vec<u8> {
    Envelope {
        version: PEER_MSG_FORMAT_VERSION,
        kind,
    }
    .encode_to_vec()
}

fn forwarded_err(kind: Option<ErrorKind>) -> Vec<u8> {
    raw(Some(Kind::Forwarded(ForwardedMsg {
        id: 1,
        result: Some(ResultKind::Err(ErrorMsg { kind })),
    })))
}

fn forward_write(payload: Option<Payload>) -> Vec<u8> {
    raw(Some(Kind::Forward(ForwardMsg {
        id: 1,
        request: Some(ClientRequestKind::Write(WriteMsg { payload })),
    })))
}

fn out_of_range_field(result: Result<PeerMsg, WireError>) -> &'static str {
    match result {
        Err(WireError::OutOfRange { field, .. }) => field,
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

// ----- round trips -----

/// The corpus names every `PeerMsg` variant, so the round-trip tests below
/// cover them all.
#[test]
fn corpus_covers_every_variant() {
    let names: std::collections::BTreeSet<_> = corpus().iter().map(variant).collect();
    assert_eq!(names.len(), 15, "{names:?}");
}

/// Every message of the corpus decodes to itself.
#[test]
fn every_variant_round_trips() {
    for msg in corpus() {
        assert_round_trips(&msg);
    }
}

/// The module doc's worked example is the real encoding, byte for byte
/// (this pins the format: a change here breaks mixed-version clusters).
#[test]
fn ack_encodes_as_the_module_doc_shows() {
    let ack = PeerMsg::Ack {
        term: Term(3),
        matched: Index(17),
        sent_at: Time(1_000_000_000),
    };
    let expected = [
        0x08, 0x01, 0x32, 0x0a, 0x08, 0x03, 0x10, 0x11, 0x18, 0x80, 0x94, 0xeb, 0xdc, 0x03,
    ];
    assert_eq!(ack.encode(), expected);
    assert_eq!(PeerMsg::decode(&expected), Ok(ack));
}

/// An append with one entry of every payload kind (and one without) keeps
/// each entry exactly, and a heartbeat (no entries) stays empty.
#[test]
fn append_carries_mixed_payloads_and_heartbeats() {
    let entries = mixed_entries();
    assert_eq!(entries.len(), 11);
    let append = PeerMsg::Append {
        term: Term(3),
        prev_index: Index(4),
        prev_term: Term(2),
        entries: entries.clone(),
        commit: Index(9),
        sent_at: Time(77),
        uploaded: Index(0),
    };
    match PeerMsg::decode(&append.encode()) {
        Ok(PeerMsg::Append { entries: got, .. }) => assert_eq!(got, entries),
        other => panic!("{other:?}"),
    }
    let heartbeat = PeerMsg::Append {
        term: Term(3),
        prev_index: Index(0),
        prev_term: Term(0),
        entries: Vec::new(),
        commit: Index(0),
        sent_at: Time(0),
        uploaded: Index(0),
    };
    assert_round_trips(&heartbeat);
    // Zeros are left out: the version, and an Append holding its term.
    assert_eq!(heartbeat.encode(), [0x08, 0x01, 0x2a, 0x02, 0x08, 0x03]);
}

/// `Fetched` keeps `more`, `gone` and `mismatch` in every combination.
#[test]
fn fetched_keeps_more_gone_and_mismatch() {
    for more in [false, true] {
        for gone in [false, true] {
            for mismatch in [false, true] {
                assert_round_trips(&PeerMsg::Fetched {
                    term: Term(2),
                    entries: if gone || mismatch {
                        Vec::new()
                    } else {
                        vec![entry(2, 3, None)]
                    },
                    more,
                    gone,
                    mismatch,
                });
            }
        }
    }
}

/// `None` and `Some(Index(0))` stay apart (the field is proto3 `optional`).
#[test]
fn read_index_reply_keeps_none_apart_from_zero() {
    let none = PeerMsg::ReadIndexReply { id: 4, index: None };
    let zero = PeerMsg::ReadIndexReply {
        id: 4,
        index: Some(Index(0)),
    };
    assert_ne!(none.encode(), zero.encode());
    assert_round_trips(&none);
    assert_round_trips(&zero);
}

/// A forwarded request of every kind (writes of every kind) round-trips,
/// and a write is the entry payload's encoding.
#[test]
fn forward_carries_every_client_request() {
    assert_eq!(client_requests().len(), 15);
    for request in client_requests() {
        assert_round_trips(&PeerMsg::Forward { id: 9, request });
    }
    // Same bytes as the entry payload: tag 3 (Put) inside the Write member.
    let write = PeerMsg::Forward {
        id: 0,
        request: ClientRequest::Write(WriteRequest::Put(PutRequest::default())),
    };
    assert_eq!(
        write.encode(),
        [0x08, 0x01, 0x62, 0x04, 0x12, 0x02, 0x1a, 0x00]
    );
}

/// A forwarded answer of every response kind round-trips.
#[test]
fn forwarded_carries_every_response() {
    assert_eq!(responses().len(), 17);
    for response in responses() {
        assert_round_trips(&PeerMsg::Forwarded {
            id: 3,
            result: Ok(response),
        });
    }
}

/// A forwarded failure of every error kind, every invalid-argument reason
/// included, round-trips with its text.
#[test]
fn forwarded_carries_every_error_and_invalid_reason() {
    assert_eq!(invalids().len(), 11);
    for error in errors() {
        assert_round_trips(&PeerMsg::Forwarded {
            id: 3,
            result: Err(error),
        });
    }
}

/// An `Unimplemented` text outside the known table keeps its kind and
/// arrives with the fixed fallback text, which then round-trips itself.
#[test]
fn unknown_unimplemented_text_falls_back_to_a_fixed_one() {
    let sent = PeerMsg::Forwarded {
        id: 1,
        result: Err(Error::Unimplemented("some future feature")),
    };
    let fallback = PeerMsg::Forwarded {
        id: 1,
        result: Err(Error::Unimplemented(UNIMPLEMENTED_UNKNOWN)),
    };
    assert_eq!(PeerMsg::decode(&sent.encode()), Ok(fallback.clone()));
    assert_round_trips(&fallback);
    for known in UNIMPLEMENTED_KNOWN {
        assert_round_trips(&PeerMsg::Forwarded {
            id: 1,
            result: Err(Error::Unimplemented(known)),
        });
    }
}

/// A full append at the default limits (256 entries of the largest client
/// write, 1.5 MiB) fits under the bound, so the bound never stalls
/// replication at the defaults.
#[test]
fn a_full_default_append_fits_the_bound() {
    let entries_max = ClusterConfig::new(Member {
        id: "a".into(),
        peer_addr: "a:1".into(),
    })
    .append_entries_max;
    let request_bytes_max = NodeConfig::default().request_bytes_max;
    // The largest put the node admits, in an entry with the widest term and
    // index.
    let mut largest = PutRequest {
        key: b"k".to_vec(),
        value: vec![b'v'; request_bytes_max],
        lease: i64::MIN,
        ..PutRequest::default()
    };
    while largest.encoded_len() > request_bytes_max {
        let over = largest.encoded_len() - request_bytes_max;
        largest.value.truncate(largest.value.len() - over);
    }
    let one = entry(u64::MAX, u64::MAX, Some(Payload::Put(largest))).encoded_len();
    // Field key (1 byte) and length prefix (at most 10) of each entry, and
    // generously 128 bytes for the envelope and the append's other fields.
    let full = entries_max * (1 + 10 + one) + 128;
    assert!(
        full <= PEER_MSG_BYTES_MAX,
        "a full append is {full} bytes, over the bound {PEER_MSG_BYTES_MAX}"
    );
}

// ----- bad input -----

/// Input over the bound is refused before parsing: all-zero bytes would be
/// undecodable, yet the size is what is reported. At the bound, parsing
/// happens.
#[test]
fn oversize_input_is_refused_before_parsing() {
    // calloc'd zero pages: never touched, so cheap in memory.
    let over = vec![0u8; PEER_MSG_BYTES_MAX + 1];
    assert_eq!(
        PeerMsg::decode(&over),
        Err(WireError::TooLarge {
            bytes: PEER_MSG_BYTES_MAX + 1
        })
    );
    drop(over);
    let at = vec![0u8; PEER_MSG_BYTES_MAX];
    assert!(matches!(
        PeerMsg::decode(&at),
        Err(WireError::Undecodable(_))
    ));
}

/// Empty input and garbage are refused with the error that says so.
#[test]
fn empty_and_garbage_input_are_refused() {
    assert_eq!(PeerMsg::decode(&[]), Err(WireError::Empty));
    for garbage in [
        &[0xff; 16][..],
        &[0x00][..],
        b"GET / HTTP/1.1\r\n",
        &[0x08, 0x01, 0x2a, 0x05, 0x08][..],
    ] {
        assert!(
            matches!(PeerMsg::decode(garbage), Err(WireError::Undecodable(_))),
            "{garbage:02x?}: {:?}",
            PeerMsg::decode(garbage)
        );
    }
}

/// A message cut short anywhere is refused, never read as another message.
#[test]
fn every_proper_prefix_of_an_encoding_is_refused() {
    for msg in corpus() {
        let bytes = msg.encode();
        for cut in 0..bytes.len() {
            let decoded = PeerMsg::decode(&bytes[..cut]);
            assert!(
                decoded.is_err(),
                "{msg:?} cut to {cut} of {} bytes decoded as {decoded:?}",
                bytes.len()
            );
        }
    }
}

/// A missing version (0) or another version is refused.
#[test]
fn other_format_versions_are_refused() {
    let ack = PeerMsg::Ack {
        term: Term(3),
        matched: Index(17),
        sent_at: Time(1),
    };
    let mut bytes = ack.encode();
    assert_eq!(bytes[..2], [0x08, 0x01]);
    bytes[1] = 2;
    assert_eq!(
        PeerMsg::decode(&bytes),
        Err(WireError::UnsupportedVersion { version: 2 })
    );
    assert_eq!(
        PeerMsg::decode(&bytes[2..]),
        Err(WireError::UnsupportedVersion { version: 0 })
    );
}

/// An envelope without a kind, or with one a newer node added, is refused
/// as having no kind.
#[test]
fn no_kind_or_an_unknown_kind_is_refused() {
    assert_eq!(PeerMsg::decode(&raw(None)), Err(WireError::MissingKind));
    // Field 17, length-delimited, empty: a kind this node does not know.
    assert_eq!(
        PeerMsg::decode(&[0x08, 0x01, 0x8a, 0x01, 0x00]),
        Err(WireError::MissingKind)
    );
}

/// Fields a newer node adds are skipped (protobuf's rule), so adding one
/// needs no version bump.
#[test]
fn unknown_fields_are_skipped() {
    let ack = PeerMsg::Ack {
        term: Term(3),
        matched: Index(17),
        sent_at: Time(1),
    };
    let mut bytes = ack.encode();
    bytes.extend([0xa0, 0x06, 0x01]); // field 100, varint 1
    assert_eq!(PeerMsg::decode(&bytes), Ok(ack));
}

/// Each required part, when absent, is named in the error.
#[test]
fn missing_required_parts_are_named() {
    let forwarded = |result| raw(Some(Kind::Forwarded(ForwardedMsg { id: 1, result })));
    let cases = [
        (
            raw(Some(Kind::Forward(ForwardMsg {
                id: 1,
                request: None,
            }))),
            "Forward.request",
        ),
        (forward_write(None), "Forward.request.write"),
        (forwarded(None), "Forwarded.result"),
        (
            forwarded(Some(ResultKind::Ok(ResponseMsg { kind: None }))),
            "Forwarded.result.ok",
        ),
        (
            forwarded(Some(ResultKind::Ok(ResponseMsg {
                kind: Some(ResponseKind::Write(WriteResponseMsg { kind: None })),
            }))),
            "Forwarded.result.ok.write",
        ),
        (forwarded_err(None), "Forwarded.result.err"),
    ];
    for (bytes, field) in cases {
        assert_eq!(
            PeerMsg::decode(&bytes),
            Err(WireError::MissingField { field }),
            "{field}"
        );
    }
}

/// An invalid-argument code that is 0 or unknown is out of range.
#[test]
fn unknown_invalid_reasons_are_out_of_range() {
    for code in [0, 12, -1, i32::MAX] {
        let result = PeerMsg::decode(&forwarded_err(Some(ErrorKind::InvalidArgument(code))));
        assert_eq!(
            out_of_range_field(result),
            "Forwarded.result.err.invalid_argument",
            "code {code}"
        );
    }
}

/// A barrier or a lease checkpoint posing as a forwarded client write is
/// out of range: only the node itself writes those.
#[test]
fn node_internal_payloads_are_no_forwarded_write() {
    for payload in [
        Payload::Barrier(Barrier {}),
        Payload::LeaseCheckpoint(LeaseCheckpointRequest::default()),
    ] {
        let result = PeerMsg::decode(&forward_write(Some(payload)));
        assert_eq!(out_of_range_field(result), "Forward.request.write");
    }
}

/// Entry runs the receiver's log would assert on (a gap, a wrong first
/// index, a term going back, an index past `u64::MAX`) are refused, with
/// the reason.
#[test]
fn broken_entry_runs_are_refused() {
    let append = |prev: (u64, u64), entries: Vec<Entry>| {
        raw(Some(Kind::Append(AppendMsg {
            term: 5,
            prev_index: prev.0,
            prev_term: prev.1,
            entries,
            commit: 0,
            sent_at: 0,
            uploaded: 0,
        })))
    };
    let cases = [
        (
            append((4, 2), vec![entry(2, 6, None)]),
            "entry 0 has index 6, expected 5",
        ),
        (
            append((4, 2), vec![entry(2, 5, None), entry(2, 7, None)]),
            "entry 1 has index 7, expected 6",
        ),
        (
            append((4, 3), vec![entry(2, 5, None)]),
            "entry 0 (index 5) has term 2, below the term 3 before it",
        ),
        (
            append((4, 2), vec![entry(3, 5, None), entry(2, 6, None)]),
            "entry 1 (index 6) has term 2, below the term 3 before it",
        ),
        (
            append((u64::MAX, 2), vec![entry(2, 0, None)]),
            "entry 0 would have an index past 18446744073709551615",
        ),
        (
            raw(Some(Kind::Fetched(FetchedMsg {
                term: 5,
                entries: vec![entry(2, 9, None), entry(2, 9, None)],
                more: false,
                gone: false,
                mismatch: false,
            }))),
            "entry 1 has index 9, expected 10",
        ),
    ];
    for (bytes, expected) in cases {
        match PeerMsg::decode(&bytes) {
            Err(WireError::OutOfRange { detail, .. }) => assert_eq!(detail, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    // A `Fetched` run may start anywhere, and may end at `u64::MAX`.
    assert_round_trips(&PeerMsg::Fetched {
        term: Term(5),
        entries: vec![entry(2, u64::MAX - 1, None), entry(2, u64::MAX, None)],
        more: false,
        gone: false,
        mismatch: false,
    });
}

/// Errors read as a sentence naming the problem.
#[test]
fn errors_name_the_problem() {
    assert_eq!(
        WireError::TooLarge { bytes: 7 }.to_string(),
        "peer message of 7 bytes is over the bound of 536870912 bytes"
    );
    assert_eq!(
        WireError::MissingField {
            field: "Forward.request"
        }
        .to_string(),
        "peer message lacks its required `Forward.request`"
    );
    let err = PeerMsg::decode(&[0x08, 0x01, 0x2a, 0x05]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("peer message is not decodable: "),
        "{err}"
    );
}

// ----- properties -----

/// A contiguous run after `(prev_index, prev_term)` with non-decreasing
/// terms and payloads drawn from `mixed_entries`.
fn arb_run() -> impl Strategy<Value = (u64, u64, Vec<Entry>)> {
    let payloads: Vec<Option<Payload>> = mixed_entries().into_iter().map(|e| e.payload).collect();
    (
        0u64..1 << 40,
        0u64..1 << 20,
        proptest::collection::vec((0u64..2, proptest::sample::select(payloads)), 0..12),
    )
        .prop_map(|(prev_index, prev_term, specs)| {
            let mut term = prev_term;
            let entries = specs
                .into_iter()
                .enumerate()
                .map(|(i, (step, payload))| {
                    term += step;
                    entry(term, prev_index + 1 + i as u64, payload)
                })
                .collect();
            (prev_index, prev_term, entries)
        })
}

/// Any message: the scalar variants with arbitrary values, appends and
/// fetches with arbitrary runs, and the corpus's forwards.
fn arb_msg() -> impl Strategy<Value = PeerMsg> {
    let t = || any::<u64>().prop_map(Term);
    let i = || any::<u64>().prop_map(Index);
    prop_oneof![
        t().prop_map(|term| PeerMsg::Prepare { term }),
        (t(), t(), i(), any::<bool>()).prop_map(|(term, last_term, last_index, voter)| {
            PeerMsg::Promise {
                term,
                last_term,
                last_index,
                voter,
            }
        }),
        (t(), t()).prop_map(|(term, promised)| PeerMsg::Refuse { term, promised }),
        (t(), arb_run(), i(), any::<u64>(), i()).prop_map(
            |(term, (prev_index, prev_term, entries), commit, sent_at, uploaded)| {
                PeerMsg::Append {
                    term,
                    prev_index: Index(prev_index),
                    prev_term: Term(prev_term),
                    entries,
                    commit,
                    sent_at: Time(sent_at),
                    uploaded,
                }
            }
        ),
        (t(), i(), any::<u64>()).prop_map(|(term, matched, sent_at)| PeerMsg::Ack {
            term,
            matched,
            sent_at: Time(sent_at)
        }),
        (t(), i(), any::<bool>()).prop_map(|(term, hint, needs_promise)| PeerMsg::Reject {
            term,
            hint,
            needs_promise
        }),
        (t(), i(), proptest::option::of(t())).prop_map(|(term, from, prev_term)| {
            PeerMsg::Fetch {
                term,
                from,
                prev_term,
            }
        }),
        (t(), arb_run(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(term, (_, _, entries), more, gone, mismatch)| PeerMsg::Fetched {
                term,
                entries,
                more,
                gone,
                mismatch,
            }
        ),
        any::<u64>().prop_map(|id| PeerMsg::ReadIndex { id }),
        (any::<u64>(), proptest::option::of(i()))
            .prop_map(|(id, index)| PeerMsg::ReadIndexReply { id, index }),
        (".*", ".*").prop_map(|(id, peer_addr)| PeerMsg::Join {
            member: Member { id, peer_addr }
        }),
        t().prop_map(|term| PeerMsg::Removed { term }),
        (t(), i()).prop_map(|(term, first)| PeerMsg::Behind { term, first }),
        proptest::sample::select(corpus()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever message is encoded decodes back equal.
    #[test]
    fn arbitrary_messages_round_trip(msg in arb_msg()) {
        let bytes = msg.encode();
        prop_assert_eq!(PeerMsg::decode(&bytes), Ok(msg));
    }

    /// Damaged encodings (bytes flipped, cut, or extended with garbage)
    /// never panic the decoder; whatever still decodes re-encodes to a
    /// message that decodes to the same value (decoding is a function of
    /// the value, not of the damage).
    #[test]
    fn damaged_encodings_are_refused_or_decode_stably(
        msg in proptest::sample::select(corpus()),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..4),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = msg.encode();
        for (at, xor) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend(tail);
        if let Ok(decoded) = PeerMsg::decode(&bytes) {
            prop_assert_eq!(PeerMsg::decode(&decoded.encode()), Ok(decoded));
        }
    }
}
