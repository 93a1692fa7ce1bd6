//! Reading the segments on open: decode, check the order across segments,
//! truncate a torn tail.

use std::fs;
use std::path::Path;

use t4_core::log::Entry;
use t4_core::wal::{decode_segment, DecodedSegment, TornTail, SEGMENT_HEADER_BYTES};
use t4_core::{Index, Term};

use super::error::WalError;
use super::files::{io_error, truncate, SegmentFile};

/// Byte offset of the first-index field in a segment header.
const HEADER_FIRST_INDEX_OFFSET: u64 = 20;

/// What the segments on disk hold.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// Entries at index `>= from`, in order.
    pub(super) entries: Vec<Entry>,
    /// The index after the last entry on disk; `None` when there are no segments.
    pub(super) next: Option<Index>,
    /// Term of the last entry on disk (0 if none).
    pub(super) last_term: Term,
    /// Length of the last segment, after any truncation.
    pub(super) last_len: u64,
}

/// Reads `segments` (oldest first) and keeps the entries at or after `from`.
///
/// Each segment must decode (`decode_segment`, the last one allowing a torn
/// tail), carry the first index its name says, start right after the
/// previous one, and not lower the term. A torn tail is truncated and
/// fsynced, with a warning naming the file and offset. A tail of zero bytes
/// is preallocated space (see the module docs of `wal`), in any segment: it
/// is cut off quietly.
pub(super) fn read_segments(segments: &[SegmentFile], from: Index) -> Result<Recovered, WalError> {
    let mut recovered = Recovered::default();
    for (i, segment) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let path = &segment.path;
        let bytes = fs::read(path).map_err(io_error(path))?;
        // Decoded as if last, so that a zero tail (padding) is not an error
        // in a sealed segment; any other tail there is corruption.
        let decoded = decode_segment(&bytes, true).map_err(|e| WalError::Corrupt {
            path: path.clone(),
            offset: e.offset(),
            reason: e.reason(),
        })?;
        check_order(segment, &decoded, &recovered)?;
        recovered.last_len = bytes.len() as u64;
        if let Some(torn) = &decoded.torn_tail {
            let offset = usize::try_from(torn.offset).expect("offset within a read file");
            let padding = bytes[offset..].iter().all(|b| *b == 0);
            if !is_last && !padding {
                let reason = format!("{} (in a sealed segment, before the next one)", torn.reason);
                return Err(corrupt(path, torn.offset, reason));
            }
            if padding {
                tracing::debug!(
                    file = %path.display(),
                    offset = torn.offset,
                    "WAL: cutting preallocated zero bytes"
                );
                truncate(path, torn.offset)?;
            } else {
                truncate_torn_tail(path, recovered.last_len, torn)?;
            }
            recovered.last_len = torn.offset;
        }
        let first = decoded.header.first_index;
        recovered.next = Some(Index(first.0 + decoded.entries.len() as u64));
        if let Some(entry) = decoded.entries.last() {
            recovered.last_term = Term(entry.term);
        }
        let kept = decoded.entries.into_iter().filter(|e| e.index >= from.0);
        recovered.entries.extend(kept);
    }
    Ok(recovered)
}

/// Checks `decoded` against its file name and against the segments before it.
fn check_order(
    segment: &SegmentFile,
    decoded: &DecodedSegment,
    before: &Recovered,
) -> Result<(), WalError> {
    let path = &segment.path;
    let first = decoded.header.first_index;
    if first != segment.first_index {
        let reason = format!(
            "the file name says first index {} but the header says {first}",
            segment.first_index
        );
        return Err(corrupt(path, HEADER_FIRST_INDEX_OFFSET, reason));
    }
    if let Some(expected) = before.next {
        if first != expected {
            let what = if first > expected {
                "a segment is missing"
            } else {
                "segments overlap"
            };
            let reason = format!(
                "segment starts at index {first} but the previous segment ends at index {}: {what}",
                expected.0 - 1
            );
            return Err(corrupt(path, HEADER_FIRST_INDEX_OFFSET, reason));
        }
    }
    if let Some(entry) = decoded.entries.first() {
        if entry.term < before.last_term.0 {
            let reason = format!(
                "entry {} has term {}, below the previous segment's last term {}",
                entry.index, entry.term, before.last_term
            );
            return Err(corrupt(path, SEGMENT_HEADER_BYTES as u64, reason));
        }
    }
    Ok(())
}

fn truncate_torn_tail(path: &Path, len: u64, torn: &TornTail) -> Result<(), WalError> {
    tracing::warn!(
        file = %path.display(),
        offset = torn.offset,
        dropped_bytes = len - torn.offset,
        reason = %torn.reason,
        "WAL: truncating the torn tail of the last segment (a write that never completed, so never acknowledged)"
    );
    truncate(path, torn.offset)
}

fn corrupt(path: &Path, offset: u64, reason: String) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}
