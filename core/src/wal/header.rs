//! The fixed-length header at the start of every segment.

use super::error::WalError;
use crate::types::{Index, Term};

/// First 8 bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"T4WAL\0\r\n";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Length of the segment header: magic 8, version 4, term 8, first index 8, CRC 4.
pub const SEGMENT_HEADER_BYTES: usize = 32;

/// Offset of the header CRC (it covers every byte before it).
const CRC_OFFSET: usize = SEGMENT_HEADER_BYTES - 4;

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Term of the node when it created the segment. Entries inside may carry
    /// lower terms (written by earlier leaders) or, after a term change
    /// mid-segment, higher ones; it is a record, not a check.
    pub term: Term,
    /// Index of the first entry the segment holds (or will hold: a segment
    /// may be just a header). Never 0.
    pub first_index: Index,
}

impl SegmentHeader {
    /// The header's bytes.
    ///
    /// # Panics
    /// `first_index` is 0 (the reader would refuse it).
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        assert!(
            self.first_index.0 >= 1,
            "segment first index must be >= 1, got {}",
            self.first_index
        );
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.term.0.to_le_bytes());
        out[20..28].copy_from_slice(&self.first_index.0.to_le_bytes());
        let crc = crc32c::crc32c(&out[..CRC_OFFSET]);
        out[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads the header at the start of `bytes` (which may continue with frames).
    ///
    /// Checks, in this order: length, magic (is this a WAL file at all?),
    /// version (a newer format may lay out the rest differently, so its CRC
    /// would not mean anything to us), CRC, first index.
    ///
    /// # Errors
    /// [`WalError::ShortHeader`], [`WalError::BadMagic`],
    /// [`WalError::UnsupportedVersion`], [`WalError::BadHeaderCrc`],
    /// [`WalError::ZeroFirstIndex`].
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, WalError> {
        let Some(h) = bytes.get(..SEGMENT_HEADER_BYTES) else {
            return Err(WalError::ShortHeader {
                len: bytes.len() as u64,
            });
        };
        let magic: [u8; 8] = h[0..8].try_into().expect("slice of 8 bytes");
        if magic != SEGMENT_MAGIC {
            return Err(WalError::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes(h[8..12].try_into().expect("slice of 4 bytes"));
        if version != FORMAT_VERSION {
            return Err(WalError::UnsupportedVersion { found: version });
        }
        let stored = u32::from_le_bytes(h[CRC_OFFSET..].try_into().expect("slice of 4 bytes"));
        let computed = crc32c::crc32c(&h[..CRC_OFFSET]);
        if stored != computed {
            return Err(WalError::BadHeaderCrc { stored, computed });
        }
        let term = u64::from_le_bytes(h[12..20].try_into().expect("slice of 8 bytes"));
        let first_index = u64::from_le_bytes(h[20..28].try_into().expect("slice of 8 bytes"));
        if first_index == 0 {
            return Err(WalError::ZeroFirstIndex);
        }
        Ok(SegmentHeader {
            term: Term(term),
            first_index: Index(first_index),
        })
    }
}
