//! What can be wrong with WAL bytes.

use std::fmt;

use super::frame::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use super::header::{FORMAT_VERSION, SEGMENT_HEADER_BYTES};

/// Why one frame could not be accepted.
///
/// The first four faults are what a torn write leaves behind; the rest are
/// found in a frame whose CRC matched, i.e. bytes that were written exactly
/// as they are, so a torn write cannot explain them ([`FrameFault::may_be_torn`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameFault {
    /// Fewer than the 8 bytes of a frame header remain.
    #[error("frame header cut short: {available} of {FRAME_HEADER_BYTES} bytes")]
    ShortFrameHeader {
        /// Bytes left in the segment.
        available: u64,
    },
    /// The length field runs past the end of the segment.
    #[error("frame length {len} runs past the end of the segment ({available} bytes follow the frame header)")]
    LengthPastEnd {
        /// The length field.
        len: u32,
        /// Bytes after the frame header.
        available: u64,
    },
    /// The length field is over [`FRAME_PAYLOAD_BYTES_MAX`].
    #[error("frame length {len} is over the bound of {FRAME_PAYLOAD_BYTES_MAX} bytes")]
    LengthOverMax {
        /// The length field.
        len: u32,
    },
    /// The CRC does not match the length and payload.
    #[error("frame CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC stored in the frame.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The CRC matched but the payload is not a protobuf `Entry`.
    #[error("frame payload is not a log entry: {error}")]
    UndecodableEntry {
        /// prost's description of the problem.
        error: String,
    },
    /// The CRC matched but the entry is not the next index.
    #[error("entry has index {found}, expected {expected}")]
    WrongIndex {
        /// The index that should come next.
        expected: u64,
        /// The entry's index.
        found: u64,
    },
    /// The CRC matched but the entry's term is below the previous entry's.
    #[error("entry {index} has term {found}, below the previous entry's term {previous}")]
    TermDecreased {
        /// The entry's index.
        index: u64,
        /// Term of the previous entry.
        previous: u64,
        /// The entry's term.
        found: u64,
    },
}

impl FrameFault {
    /// Whether a torn write can explain the fault. A frame whose CRC matched
    /// was written completely, as it is (up to a 2^-32 CRC collision), so an
    /// undecodable entry, a wrong index or a falling term in it is a bug or
    /// corruption wherever it is — never a torn tail to truncate.
    #[must_use]
    pub fn may_be_torn(&self) -> bool {
        match self {
            FrameFault::ShortFrameHeader { .. }
            | FrameFault::LengthPastEnd { .. }
            | FrameFault::LengthOverMax { .. }
            | FrameFault::CrcMismatch { .. } => true,
            FrameFault::UndecodableEntry { .. }
            | FrameFault::WrongIndex { .. }
            | FrameFault::TermDecreased { .. } => false,
        }
    }
}

/// Why a segment's bytes were refused. Every variant means "stop and let an
/// operator look": nothing is skipped. (A torn tail of the last segment is
/// not an error; see [`super::DecodedSegment::torn_tail`].)
///
/// Displays as `at byte offset {offset()}: {reason()}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalError {
    /// The segment is shorter than its header.
    ShortHeader {
        /// Length of the segment.
        len: u64,
    },
    /// The file does not start with the WAL magic: not a t4 WAL segment.
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Written by a different format version (or the version field is damaged).
    UnsupportedVersion {
        /// The version field.
        found: u32,
    },
    /// The header CRC does not match.
    BadHeaderCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the header bytes read.
        computed: u32,
    },
    /// The header's first index is 0; log indexes start at 1.
    ZeroFirstIndex,
    /// A bad frame that cannot be a torn tail: in a sealed segment, followed
    /// by a valid frame, or with a matching CRC.
    Corrupt {
        /// Byte offset of the bad frame in the segment.
        offset: u64,
        /// What is wrong with it.
        reason: FrameFault,
        /// Offset of the first complete valid frame after the bad one, if any
        /// (the evidence that acknowledged data follows).
        valid_frame_after: Option<u64>,
    },
}

impl WalError {
    /// Byte offset in the segment where the problem is.
    #[must_use]
    pub fn offset(&self) -> u64 {
        match self {
            WalError::ShortHeader { .. }
            | WalError::BadMagic { .. }
            | WalError::BadHeaderCrc { .. } => 0,
            WalError::UnsupportedVersion { .. } => 8,
            WalError::ZeroFirstIndex => 20,
            WalError::Corrupt { offset, .. } => *offset,
        }
    }

    /// What is wrong, without the offset (for callers that add the file name
    /// and offset themselves).
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            WalError::ShortHeader { len } => {
                format!("segment header cut short: {len} of {SEGMENT_HEADER_BYTES} bytes")
            }
            WalError::BadMagic { found } => {
                format!("bad segment magic {found:02x?}, not a t4 WAL segment")
            }
            WalError::UnsupportedVersion { found } => format!(
                "unsupported WAL format version {found} (this build reads version \
                 {FORMAT_VERSION}), or a damaged header"
            ),
            WalError::BadHeaderCrc { stored, computed } => format!(
                "segment header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            WalError::ZeroFirstIndex => {
                "segment header names first index 0 (log indexes start at 1)".to_string()
            }
            WalError::Corrupt {
                reason,
                valid_frame_after: None,
                ..
            } => reason.to_string(),
            WalError::Corrupt {
                reason,
                valid_frame_after: Some(after),
                ..
            } => format!(
                "{reason}; a valid frame follows at byte offset {after}, so this is damaged \
                 acknowledged data, not a torn tail"
            ),
        }
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte offset {}: {}", self.offset(), self.reason())
    }
}

impl std::error::Error for WalError {}
