//! Codec tests: round trip, torn tails, corruption, headers.

use proptest::prelude::*;

use super::*;
use crate::kv::PutRequest;
use crate::log::{Barrier, Entry, Payload};
use crate::types::{Index, Term};

fn put(term: u64, index: u64, value_bytes: usize) -> Entry {
    Entry {
        term,
        index,
        payload: Some(Payload::Put(PutRequest {
            key: format!("key-{index}").into_bytes(),
            value: vec![b'v'; value_bytes],
            ..PutRequest::default()
        })),
    }
}

/// A segment starting at `first` with entries `first..first+count`, term 3,
/// and the offset where each frame starts (plus the end offset last).
fn segment(first: u64, count: u64) -> (Vec<u8>, Vec<usize>) {
    let header = SegmentHeader {
        term: Term(3),
        first_index: Index(first),
    };
    let mut bytes = header.encode().to_vec();
    let mut offsets = vec![bytes.len()];
    for index in first..first + count {
        encode_entries(&[put(3, index, 20 + index as usize % 7)], &mut bytes);
        offsets.push(bytes.len());
    }
    (bytes, offsets)
}

fn entries_of(first: u64, count: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|i| put(3, i, 20 + i as usize % 7))
        .collect()
}

/// A frame whose CRC is right but whose payload is `payload` (for faults a
/// torn write cannot produce).
fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out);
    out
}

fn arb_payload() -> impl Strategy<Value = Option<Payload>> {
    prop_oneof![
        Just(None),
        Just(Some(Payload::Barrier(Barrier {}))),
        (
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<i64>()
        )
            .prop_map(|(key, value, lease)| Some(Payload::Put(PutRequest {
                key,
                value,
                lease,
                ..PutRequest::default()
            }))),
    ]
}

/// Contiguous entries from `first`, terms non-decreasing.
fn arb_entries() -> impl Strategy<Value = (u64, Vec<Entry>)> {
    (
        1u64..1 << 40,
        1u64..1 << 20,
        proptest::collection::vec((0u64..3, arb_payload()), 0..40),
    )
        .prop_map(|(first, mut term, specs)| {
            let entries = specs
                .into_iter()
                .enumerate()
                .map(|(i, (term_step, payload))| {
                    term += term_step;
                    Entry {
                        term,
                        index: first + i as u64,
                        payload,
                    }
                })
                .collect();
            (first, entries)
        })
}

fn encode_segment(first: u64, entries: &[Entry]) -> Vec<u8> {
    let mut bytes = SegmentHeader {
        term: Term(9),
        first_index: Index(first),
    }
    .encode()
    .to_vec();
    let written = encode_entries(entries, &mut bytes);
    assert_eq!(written, bytes.len() - SEGMENT_HEADER_BYTES);
    bytes
}

proptest! {
    /// Whatever entries are encoded decode back equal, last segment or not.
    #[test]
    fn round_trip((first, entries) in arb_entries(), is_last in any::<bool>()) {
        let bytes = encode_segment(first, &entries);
        let decoded = decode_segment(&bytes, is_last).expect("a freshly encoded segment decodes");
        prop_assert_eq!(decoded.header, SegmentHeader { term: Term(9), first_index: Index(first) });
        prop_assert_eq!(decoded.entries, entries);
        prop_assert_eq!(decoded.torn_tail, None);
    }

    /// Random garbage after the last good frame of the last segment is a torn
    /// tail ending at that frame.
    #[test]
    fn garbage_tail_is_torn((first, entries) in arb_entries(), garbage in proptest::collection::vec(any::<u8>(), 1..600)) {
        let mut bytes = encode_segment(first, &entries);
        let good_len = bytes.len();
        bytes.extend_from_slice(&garbage);
        let decoded = decode_segment(&bytes, true).expect("garbage at the tail is torn, not corrupt");
        prop_assert_eq!(decoded.entries, entries);
        prop_assert_eq!(decoded.torn_tail.map(|t| t.offset), Some(good_len as u64));
    }

    /// Zeros after the last good frame (a file extended but never written) are a torn tail.
    #[test]
    fn zero_tail_is_torn((first, entries) in arb_entries(), zeros in 1usize..10_000) {
        let mut bytes = encode_segment(first, &entries);
        let good_len = bytes.len();
        bytes.resize(good_len + zeros, 0);
        let decoded = decode_segment(&bytes, true).expect("zeros at the tail are torn, not corrupt");
        prop_assert_eq!(decoded.entries, entries);
        prop_assert_eq!(decoded.torn_tail.map(|t| t.offset), Some(good_len as u64));
        // The same bytes in a sealed segment are corruption.
        let err = decode_segment(&bytes, false).expect_err("a sealed segment has no torn tail");
        prop_assert_eq!(err.offset(), good_len as u64);
    }
}

/// Cutting the last segment anywhere inside its last frame is a torn tail at
/// that frame's start; in a sealed segment the same cut is corruption there.
#[test]
fn every_cut_of_the_last_frame_is_a_torn_tail() {
    let (bytes, offsets) = segment(5, 4);
    let last_start = offsets[3];
    let end = offsets[4];
    for cut in last_start + 1..end {
        let decoded =
            decode_segment(&bytes[..cut], true).expect("cut inside the last frame is torn");
        assert_eq!(decoded.entries, entries_of(5, 3), "cut at {cut}");
        let torn = decoded.torn_tail.expect("a torn tail is reported");
        assert_eq!(torn.offset, last_start as u64, "cut at {cut}");
        assert!(torn.reason.may_be_torn(), "cut at {cut}: {:?}", torn.reason);

        let err = decode_segment(&bytes[..cut], false).expect_err("sealed segments are never torn");
        assert!(
            matches!(err, WalError::Corrupt { offset, valid_frame_after: None, .. } if offset == last_start as u64),
            "cut at {cut}: {err:?}"
        );
    }
    // Cutting exactly at a frame boundary leaves a clean, shorter segment.
    for (frames, &boundary) in offsets.iter().enumerate() {
        let decoded = decode_segment(&bytes[..boundary], true).expect("a frame boundary is clean");
        assert_eq!(decoded.entries, entries_of(5, frames as u64));
        assert_eq!(decoded.torn_tail, None);
    }
}

/// A damaged byte anywhere in a frame that has a valid frame after it is
/// corruption at that frame, even in the last segment.
#[test]
fn flipped_byte_in_a_middle_frame_is_corrupt() {
    let (bytes, offsets) = segment(1, 3);
    let (start, next) = (offsets[1], offsets[2]);
    for at in start..next {
        for is_last in [true, false] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            let err = decode_segment(&damaged, is_last)
                .expect_err("damage before a valid frame is corruption");
            let WalError::Corrupt {
                offset,
                reason,
                valid_frame_after,
            } = &err
            else {
                panic!("byte {at}: expected Corrupt, got {err:?}");
            };
            assert_eq!(*offset, start as u64, "byte {at}");
            assert!(reason.may_be_torn(), "byte {at}: {reason:?}");
            assert_eq!(*valid_frame_after, Some(next as u64), "byte {at}");
            assert!(
                err.to_string().contains(&format!("at byte offset {start}")),
                "{err}"
            );
        }
    }
}

/// Bit rot in the final frame of the last segment looks like a torn write and
/// is truncated: the documented limit of the rule (no second copy to tell).
#[test]
fn flipped_byte_in_the_final_frame_is_torn() {
    let (bytes, offsets) = segment(1, 3);
    let mut damaged = bytes.clone();
    damaged[offsets[2] + 10] ^= 0x01;
    let decoded = decode_segment(&damaged, true).expect("indistinguishable from a torn write");
    assert_eq!(decoded.torn_tail.map(|t| t.offset), Some(offsets[2] as u64));
    assert_eq!(decoded.entries.len(), 2);
    // ... but in a sealed segment it is corruption.
    let err = decode_segment(&damaged, false).expect_err("sealed");
    assert_eq!(err.offset(), offsets[2] as u64);
}

/// A frame whose CRC matches but whose entry is wrong cannot be torn: corrupt
/// even at the very end of the last segment.
#[test]
fn crc_valid_but_wrong_frames_are_corrupt_at_the_tail() {
    let (bytes, offsets) = segment(10, 2);
    let end = offsets[2] as u64;
    type FaultCheck = fn(&FrameFault) -> bool;
    let cases: Vec<(Vec<u8>, FaultCheck)> = vec![
        (raw_frame(&put(3, 13, 5).encode_to_bytes()), |f| {
            matches!(
                f,
                FrameFault::WrongIndex {
                    expected: 12,
                    found: 13
                }
            )
        }),
        (raw_frame(&put(3, 11, 5).encode_to_bytes()), |f| {
            matches!(
                f,
                FrameFault::WrongIndex {
                    expected: 12,
                    found: 11
                }
            )
        }),
        (raw_frame(&put(2, 12, 5).encode_to_bytes()), |f| {
            matches!(
                f,
                FrameFault::TermDecreased {
                    index: 12,
                    previous: 3,
                    found: 2
                }
            )
        }),
        (raw_frame(&[0xff, 0xff]), |f| {
            matches!(f, FrameFault::UndecodableEntry { .. })
        }),
    ];
    for (frame, expected) in cases {
        let mut damaged = bytes.clone();
        damaged.extend_from_slice(&frame);
        let err = decode_segment(&damaged, true).expect_err("a complete frame is never torn");
        let WalError::Corrupt { offset, reason, .. } = &err else {
            panic!("expected Corrupt, got {err:?}")
        };
        assert_eq!(*offset, end);
        assert!(expected(reason), "{reason:?}");
        assert!(!reason.may_be_torn());
    }
}

/// The first entry must carry the header's first index.
#[test]
fn first_entry_must_match_header() {
    let mut bytes = SegmentHeader {
        term: Term(1),
        first_index: Index(7),
    }
    .encode()
    .to_vec();
    encode_entries(&[put(1, 8, 3)], &mut bytes);
    let err = decode_segment(&bytes, true).expect_err("index 8 in a segment starting at 7");
    assert!(
        matches!(
            err,
            WalError::Corrupt {
                offset: 32,
                reason: FrameFault::WrongIndex {
                    expected: 7,
                    found: 8
                },
                ..
            }
        ),
        "{err:?}"
    );
}

/// A length field over the bound is a bad frame: torn at the tail, corrupt before a valid frame.
#[test]
fn length_over_max_is_a_bad_frame() {
    let (bytes, offsets) = segment(1, 2);
    let mut tail = bytes.clone();
    tail.extend_from_slice(&(FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes());
    tail.extend_from_slice(&[0u8; 12]);
    let torn = decode_segment(&tail, true)
        .expect("torn")
        .torn_tail
        .expect("torn tail");
    assert_eq!(
        torn,
        TornTail {
            offset: offsets[2] as u64,
            reason: FrameFault::LengthOverMax {
                len: FRAME_PAYLOAD_BYTES_MAX + 1
            }
        }
    );

    let mut middle = bytes.clone();
    middle[offsets[0]..offsets[0] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_segment(&middle, true).expect_err("a valid frame follows");
    assert!(
        matches!(
            err,
            WalError::Corrupt {
                offset: 32,
                reason: FrameFault::LengthOverMax { len: u32::MAX },
                valid_frame_after: Some(_)
            }
        ),
        "{err:?}"
    );
}

/// A header-only segment holds no entries and is clean.
#[test]
fn header_only_segment_is_empty() {
    let header = SegmentHeader {
        term: Term(4),
        first_index: Index(100),
    };
    for is_last in [true, false] {
        let decoded = decode_segment(&header.encode(), is_last).expect("header only");
        assert_eq!(
            decoded,
            DecodedSegment {
                header,
                entries: vec![],
                torn_tail: None
            }
        );
    }
}

/// Each header fault has its own error.
#[test]
fn bad_headers() {
    let good = SegmentHeader {
        term: Term(2),
        first_index: Index(1),
    }
    .encode();
    assert_eq!(
        SegmentHeader::decode(&good),
        Ok(SegmentHeader {
            term: Term(2),
            first_index: Index(1)
        })
    );

    for len in 0..SEGMENT_HEADER_BYTES {
        assert_eq!(
            decode_segment(&good[..len], true),
            Err(WalError::ShortHeader { len: len as u64 })
        );
    }

    let mut magic = good;
    magic[0] = b'X';
    assert!(
        matches!(decode_segment(&magic, true), Err(WalError::BadMagic { found }) if &found[1..] == b"4WAL\0\r\n")
    );

    let mut version = good;
    version[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        decode_segment(&version, true),
        Err(WalError::UnsupportedVersion { found: 2 })
    );

    for at in 12..SEGMENT_HEADER_BYTES {
        let mut crc = good;
        crc[at] ^= 0x40;
        assert!(
            matches!(
                decode_segment(&crc, true),
                Err(WalError::BadHeaderCrc { .. })
            ),
            "byte {at}"
        );
    }

    let mut zero = good;
    zero[20..28].copy_from_slice(&0u64.to_le_bytes());
    let crc = crc32c::crc32c(&zero[..28]);
    zero[28..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(decode_segment(&zero, true), Err(WalError::ZeroFirstIndex));
    assert_eq!(WalError::ZeroFirstIndex.offset(), 20);
}

/// `encode_entries` reports the bytes it wrote, `frame_len` each frame's
/// length, and `encode_frame` writes the same bytes for the same payload.
#[test]
fn encoding_helpers_agree() {
    let entries = entries_of(1, 5);
    let mut out = vec![0xAA]; // appends, does not overwrite
    let written = encode_entries(&entries, &mut out);
    for e in &entries {
        assert_eq!(entry_payload_len(e), e.encode_to_bytes().len());
    }
    let expected: usize = entries
        .iter()
        .map(|e| frame_len(entry_payload_len(e)))
        .sum();
    assert_eq!(written, expected);
    assert_eq!(out.len(), 1 + expected);

    let mut by_frame = vec![0xAA];
    for e in &entries {
        encode_frame(&e.encode_to_bytes(), &mut by_frame);
    }
    assert_eq!(out, by_frame);
    assert_eq!(frame_len(0), FRAME_HEADER_BYTES);
}

/// An oversized payload is refused at write time, not discovered at read time.
#[test]
#[should_panic(expected = "over FRAME_PAYLOAD_BYTES_MAX")]
fn oversized_frame_panics() {
    let payload = vec![0u8; FRAME_PAYLOAD_BYTES_MAX as usize + 1];
    encode_frame(&payload, &mut Vec::new());
}

/// The error message names the offset and, when present, the valid frame
/// that proves the damage is not a torn tail.
#[test]
fn corrupt_message_names_offset_and_evidence() {
    let err = WalError::Corrupt {
        offset: 120,
        reason: FrameFault::CrcMismatch {
            stored: 1,
            computed: 2,
        },
        valid_frame_after: Some(4200),
    };
    assert_eq!(
        err.to_string(),
        "at byte offset 120: frame CRC mismatch: stored 0x00000001, computed 0x00000002; \
         a valid frame follows at byte offset 4200, so this is damaged acknowledged data, not a torn tail"
    );
}
