//! Decoding a whole segment, and the torn-tail rule.

use super::error::{FrameFault, WalError};
use super::frame::{find_valid_frame, read_frame, FRAME_HEADER_BYTES};
use super::header::{SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::log::Entry;

/// A decoded segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedSegment {
    /// The segment's header.
    pub header: SegmentHeader,
    /// Its entries, in order: indexes `header.first_index, +1, +2, …`, terms
    /// non-decreasing.
    pub entries: Vec<Entry>,
    /// Only for the last segment: the tail left by a write that never
    /// completed. Truncate the file to `torn_tail.offset` before appending.
    pub torn_tail: Option<TornTail>,
}

/// Where a torn tail starts and what gave it away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset of the first bad frame: the length to truncate the file to.
    pub offset: u64,
    /// What is wrong with the frame there.
    pub reason: FrameFault,
}

/// Decodes a whole segment: its header, then frames until the end.
///
/// Every frame must hold an `Entry` whose index is the next one (starting at
/// `header.first_index`) and whose term is not below the previous entry's.
///
/// A bad frame is a **torn tail** — reported in
/// [`DecodedSegment::torn_tail`], with the entries before it — only when all
/// of these hold:
/// - `is_last_segment` (sealed segments were fdatasynced before the next one
///   was created, so all their bytes were durable);
/// - the fault is one a torn write leaves ([`FrameFault::may_be_torn`]: a
///   short header, a length past the end or over the bound, a CRC mismatch);
/// - no complete valid frame starts at any later offset. Acknowledged data
///   was fsynced, and an fsync makes everything written before it durable, so
///   only the unsynced tail — the final batch — can be torn; it leaves zeros
///   or garbage after the last good frame, never a good frame after a bad one.
///
/// Otherwise it is [`WalError::Corrupt`] with the bad frame's offset: the
/// reader stops, never skips. See the module docs for a worked example and
/// the rule's limits.
///
/// # Errors
/// Header errors ([`SegmentHeader::decode`]) and [`WalError::Corrupt`].
pub fn decode_segment(bytes: &[u8], is_last_segment: bool) -> Result<DecodedSegment, WalError> {
    let header = SegmentHeader::decode(bytes)?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    // Each frame takes at least FRAME_HEADER_BYTES, which bounds the loop.
    let frames_max = bytes.len() / FRAME_HEADER_BYTES;
    for _ in 0..=frames_max {
        if offset == bytes.len() {
            return Ok(DecodedSegment {
                header,
                entries,
                torn_tail: None,
            });
        }
        let expected = header.first_index.0 + entries.len() as u64;
        let previous_term = entries.last().map(|e| e.term);
        match check_frame(bytes, offset, expected, previous_term) {
            Ok((entry, frame_bytes)) => {
                entries.push(entry);
                offset += frame_bytes;
                assert!(
                    offset <= bytes.len(),
                    "frame ran past the segment: {offset} > {}",
                    bytes.len()
                );
            }
            Err(reason) => {
                let valid_frame_after = find_valid_frame(bytes, offset + 1);
                if is_last_segment && reason.may_be_torn() && valid_frame_after.is_none() {
                    let torn_tail = Some(TornTail {
                        offset: offset as u64,
                        reason,
                    });
                    return Ok(DecodedSegment {
                        header,
                        entries,
                        torn_tail,
                    });
                }
                return Err(WalError::Corrupt {
                    offset: offset as u64,
                    reason,
                    valid_frame_after: valid_frame_after.map(|o| o as u64),
                });
            }
        }
    }
    unreachable!(
        "decode loop exceeded its bound of {frames_max} frames for {} bytes",
        bytes.len()
    )
}

/// Reads the frame at `offset` and checks its entry; returns the entry and the
/// frame's length in bytes.
fn check_frame(
    bytes: &[u8],
    offset: usize,
    expected_index: u64,
    previous_term: Option<u64>,
) -> Result<(Entry, usize), FrameFault> {
    let payload = read_frame(bytes, offset)?;
    let entry = Entry::decode_from(payload).map_err(|e| FrameFault::UndecodableEntry {
        error: e.to_string(),
    })?;
    if entry.index != expected_index {
        return Err(FrameFault::WrongIndex {
            expected: expected_index,
            found: entry.index,
        });
    }
    if let Some(previous) = previous_term {
        if entry.term < previous {
            return Err(FrameFault::TermDecreased {
                index: entry.index,
                previous,
                found: entry.term,
            });
        }
    }
    Ok((entry, FRAME_HEADER_BYTES + payload.len()))
}
