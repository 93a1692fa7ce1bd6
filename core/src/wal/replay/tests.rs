//! Replay planning on in-memory segment images: exact plans and exact errors.

use super::*;
use crate::kv::PutRequest;
use crate::log::Payload;
use crate::wal::{encode_entries, FrameFault, SegmentHeader};

fn put(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: Some(Payload::Put(PutRequest {
            key: format!("key-{index}").into_bytes(),
            value: vec![b'v'; 10 + index as usize % 5],
            ..PutRequest::default()
        })),
    }
}

/// Entries `first..=last`, all of term `term`.
fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last).map(|i| put(term, i)).collect()
}

/// A segment whose header says `first` and that holds `entries`.
fn segment(first: u64, entries: &[Entry]) -> Vec<u8> {
    let header = SegmentHeader {
        term: Term(1),
        first_index: Index(first),
    };
    let mut bytes = header.encode().to_vec();
    encode_entries(entries, &mut bytes);
    bytes
}

/// Images of `segments`, each named by the first index its header says.
fn images(segments: &[(u64, Vec<u8>)]) -> Vec<SegmentImage<'_>> {
    segments
        .iter()
        .map(|(first, bytes)| SegmentImage {
            first_index: Index(*first),
            bytes,
        })
        .collect()
}

/// Three clean segments: 1–10 (term 1), 11–20 and 21–25 (term 2).
fn three_segments() -> Vec<(u64, Vec<u8>)> {
    vec![
        (1, segment(1, &entries(1, 10, 1))),
        (11, segment(11, &entries(11, 20, 2))),
        (21, segment(21, &entries(21, 25, 2))),
    ]
}

fn corrupt(segment: usize, offset: u64, reason: &str) -> ReplayError {
    ReplayError::Corrupt {
        segment,
        offset,
        reason: reason.to_string(),
    }
}

/// A clean WAL replays every entry from a `from` in a middle segment, and
/// appends continue after the last entry of the last segment.
#[test]
fn clean_segments_replay_from_the_middle() {
    let segments = three_segments();
    let plan = plan_replay(&images(&segments), Index(15)).expect("clean");
    let mut expected = entries(15, 20, 2);
    expected.extend(entries(21, 25, 2));
    assert_eq!(
        plan,
        ReplayPlan {
            entries: expected,
            next: Some(Index(26)),
            last_term: Term(2),
            cuts: vec![],
            last_len: segments[2].1.len() as u64,
        }
    );
    assert!(!plan.is_stale(Index(15)));
    // `from` at a segment boundary and at the very start.
    let plan = plan_replay(&images(&segments), Index(11)).expect("clean");
    assert_eq!(plan.entries.first().map(|e| e.index), Some(11));
    assert_eq!(plan.entries.len(), 15);
    let plan = plan_replay(&images(&segments), Index(1)).expect("clean");
    assert_eq!(plan.entries.len(), 25);
}

/// A last segment cut mid-frame is a torn tail: cut to the last whole
/// frame, with the frame fault and the dropped bytes; nothing else changes.
#[test]
fn torn_tail_of_the_last_segment_is_cut() {
    let mut segments = three_segments();
    let whole = segments[2].1.len();
    let last_frame = segment(21, &entries(21, 24, 2)).len();
    segments[2].1.truncate(whole - 5);
    let payload_len = whole - last_frame - 8;

    let plan = plan_replay(&images(&segments), Index(15)).expect("torn tail");
    let mut expected = entries(15, 20, 2);
    expected.extend(entries(21, 24, 2));
    let reason = FrameFault::LengthPastEnd {
        len: payload_len as u32,
        available: (payload_len - 5) as u64,
    }
    .to_string();
    assert_eq!(
        plan,
        ReplayPlan {
            entries: expected,
            next: Some(Index(25)),
            last_term: Term(2),
            cuts: vec![Cut {
                segment: 2,
                offset: last_frame as u64,
                kind: CutKind::TornTail {
                    reason,
                    dropped_bytes: (whole - 5 - last_frame) as u64,
                },
            }],
            last_len: last_frame as u64,
        }
    );
}

/// Non-zero garbage after the last frame of the last segment is a torn
/// tail too (a write that left stale bytes), cut whole.
#[test]
fn garbage_tail_of_the_last_segment_is_cut() {
    let mut segments = three_segments();
    let good_len = segments[2].1.len() as u64;
    segments[2]
        .1
        .extend((0..777u32).map(|i| (i * 31 % 256) as u8));

    let plan = plan_replay(&images(&segments), Index(1)).expect("torn tail");
    assert_eq!(plan.entries.len(), 25);
    assert_eq!(plan.next, Some(Index(26)));
    assert_eq!(plan.last_len, good_len);
    assert_eq!(plan.cuts.len(), 1, "{:?}", plan.cuts);
    let cut = &plan.cuts[0];
    assert_eq!((cut.segment, cut.offset), (2, good_len));
    assert!(
        matches!(
            cut.kind,
            CutKind::TornTail {
                dropped_bytes: 777,
                ..
            }
        ),
        "{cut:?}"
    );
}

/// Zeros after the last frame are preallocated space, cut quietly in any
/// segment (a sealed one keeps them after a crash mid-seal); nothing is lost.
#[test]
fn zero_padding_is_cut_in_sealed_and_last_segments() {
    let mut segments = three_segments();
    let sealed_len = segments[0].1.len() as u64;
    let last_len = segments[2].1.len() as u64;
    segments[0].1.extend([0u8; 5000]);
    segments[2].1.extend([0u8; 4096]);

    let plan = plan_replay(&images(&segments), Index(1)).expect("padding");
    let mut expected = entries(1, 10, 1);
    expected.extend(entries(11, 20, 2));
    expected.extend(entries(21, 25, 2));
    assert_eq!(
        plan,
        ReplayPlan {
            entries: expected,
            next: Some(Index(26)),
            last_term: Term(2),
            cuts: vec![
                Cut {
                    segment: 0,
                    offset: sealed_len,
                    kind: CutKind::Padding,
                },
                Cut {
                    segment: 2,
                    offset: last_len,
                    kind: CutKind::Padding,
                },
            ],
            last_len,
        }
    );
}

/// A non-zero tail in a sealed segment is corruption (it was fsynced before
/// the next segment was created), even when zeros come first.
#[test]
fn garbage_tail_in_a_sealed_segment_is_refused() {
    let mut segments = three_segments();
    let sealed_len = segments[1].1.len() as u64;
    segments[1].1.extend([0u8; 100]);
    segments[1].1.extend(b"not a frame");

    let err = plan_replay(&images(&segments), Index(1)).expect_err("garbage");
    let fault = FrameFault::CrcMismatch {
        stored: 0,
        computed: crc32c::crc32c(&[0u8; 4]),
    };
    assert_eq!(
        err,
        corrupt(
            1,
            sealed_len,
            &format!("{fault} (in a sealed segment, before the next one)")
        )
    );
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt WAL segment (position 1) at byte offset {sealed_len}: {fault} \
             (in a sealed segment, before the next one)"
        )
    );
}

/// A bad frame followed by a valid one, even in the last segment, is damaged
/// acknowledged data: refused with the decoder's offset and reason.
#[test]
fn damaged_frame_before_a_valid_one_is_refused() {
    let mut segments = three_segments();
    let second_frame = segment(21, &entries(21, 21, 2)).len();
    let third_frame = segment(21, &entries(21, 22, 2)).len();
    segments[2].1[second_frame + 12] ^= 0xff;

    let err = plan_replay(&images(&segments), Index(1)).expect_err("mid-file damage");
    let ReplayError::Corrupt {
        segment,
        offset,
        reason,
    } = err
    else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert_eq!((segment, offset), (2, second_frame as u64));
    assert!(
        reason.ends_with(&format!(
            "; a valid frame follows at byte offset {third_frame}, so this is damaged \
             acknowledged data, not a torn tail"
        )),
        "{reason}"
    );
}

/// A bad header is refused with the header decoder's offset and reason.
#[test]
fn bad_header_is_refused() {
    let mut segments = three_segments();
    segments[1].1[0] = b'X';
    let err = plan_replay(&images(&segments), Index(1)).expect_err("bad magic");
    let expected_reason = crate::wal::WalError::BadMagic {
        found: *b"X4WAL\0\r\n",
    }
    .reason();
    assert_eq!(err, corrupt(1, 0, &expected_reason));
}

/// A header that disagrees with the file name is refused at the first-index field.
#[test]
fn name_header_mismatch_is_refused() {
    let mut segments = three_segments();
    segments[1].0 = 12;
    let err = plan_replay(&images(&segments), Index(1)).expect_err("mismatch");
    assert_eq!(
        err,
        corrupt(
            1,
            20,
            "the file name says first index 12 but the header says 11"
        )
    );
}

/// A missing segment leaves a gap: refused, naming the segment after it.
#[test]
fn missing_segment_is_refused() {
    let mut segments = three_segments();
    segments.remove(1);
    let err = plan_replay(&images(&segments), Index(1)).expect_err("gap");
    assert_eq!(
        err,
        corrupt(
            1,
            20,
            "segment starts at index 21 but the previous segment ends at index 10: \
             a segment is missing"
        )
    );
}

/// Segments that overlap (two histories) are refused.
#[test]
fn overlapping_segments_are_refused() {
    let mut segments = three_segments();
    segments[2] = (18, segment(18, &entries(18, 25, 2)));
    let err = plan_replay(&images(&segments), Index(1)).expect_err("overlap");
    assert_eq!(
        err,
        corrupt(
            2,
            20,
            "segment starts at index 18 but the previous segment ends at index 20: \
             segments overlap"
        )
    );
}

/// A segment whose first entry has a lower term than the previous segment's
/// last entry is refused (terms never decrease along the log).
#[test]
fn decreasing_term_across_segments_is_refused() {
    let mut segments = three_segments();
    segments[2] = (21, segment(21, &entries(21, 25, 1)));
    let err = plan_replay(&images(&segments), Index(1)).expect_err("term went down");
    assert_eq!(
        err,
        corrupt(
            2,
            32,
            "entry 21 has term 1, below the previous segment's last term 2"
        )
    );
}

/// A header-only last segment (crash right after rotation) is clean: the
/// next append goes into it, and the last term is the one before it.
#[test]
fn header_only_last_segment_continues_the_log() {
    let segments = vec![(1, segment(1, &entries(1, 10, 2))), (11, segment(11, &[]))];
    let plan = plan_replay(&images(&segments), Index(3)).expect("header-only last segment");
    assert_eq!(
        plan,
        ReplayPlan {
            entries: entries(3, 10, 2),
            next: Some(Index(11)),
            last_term: Term(2),
            cuts: vec![],
            last_len: 32,
        }
    );
}

/// When `from` is past everything on disk (the engine was restored from a
/// checkpoint ahead of the WAL), nothing is replayed and the plan is stale;
/// at exactly the next index it is not.
#[test]
fn from_beyond_everything_is_stale() {
    let segments = three_segments();
    for from in [27, 1_000] {
        let plan = plan_replay(&images(&segments), Index(from)).expect("stale");
        assert!(plan.entries.is_empty());
        assert_eq!(plan.next, Some(Index(26)));
        assert_eq!(plan.last_term, Term(2));
        assert!(plan.is_stale(Index(from)), "from {from}");
    }
    let plan = plan_replay(&images(&segments), Index(26)).expect("up to date");
    assert!(plan.entries.is_empty());
    assert!(!plan.is_stale(Index(26)));
}

/// `from` below the oldest segment: the entries in between are gone.
#[test]
fn from_below_the_oldest_segment_is_behind() {
    let segments = three_segments();
    let err = plan_replay(&images(&segments[1..]), Index(5)).expect_err("behind");
    assert_eq!(
        err,
        ReplayError::Behind {
            from: Index(5),
            first: Index(11)
        }
    );
    assert_eq!(
        err.to_string(),
        "the WAL no longer holds index 5: its oldest segment starts at index 11"
    );
    // Corruption is reported first.
    let mut segments = segments;
    segments[2].1.truncate(10);
    let err = plan_replay(&images(&segments[1..]), Index(5)).expect_err("corrupt");
    assert!(
        matches!(
            err,
            ReplayError::Corrupt {
                segment: 1,
                offset: 0,
                ..
            }
        ),
        "{err:?}"
    );
}

/// No segments: nothing to replay, nothing to cut, `next` unknown.
#[test]
fn empty_input_plans_nothing() {
    for from in [1, 42] {
        let plan = plan_replay(&[], Index(from)).expect("empty");
        assert_eq!(plan, ReplayPlan::default());
        assert!(!plan.is_stale(Index(from)));
    }
}

/// The planner fed one segment at a time gives the same plan as `plan_replay`.
#[test]
fn planner_matches_plan_replay() {
    let mut segments = three_segments();
    segments[0].1.extend([0u8; 64]);
    let last_len = segments[2].1.len();
    segments[2].1.truncate(last_len - 3);
    let all = plan_replay(&images(&segments), Index(7)).expect("plan");
    let mut planner = ReplayPlanner::new(Index(7), segments.len());
    for image in images(&segments) {
        planner = planner.push(image).expect("push");
    }
    assert_eq!(planner.finish().expect("finish"), all);
}

/// Indexes start at 1.
#[test]
#[should_panic(expected = "`from` must be >= 1")]
fn from_zero_panics() {
    let _ = plan_replay(&[], Index(0));
}
