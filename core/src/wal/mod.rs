//! WAL codec (ARCHITECTURE §3.3): the bytes of a write-ahead-log segment and
//! the rule that tells a torn tail from corruption.
//!
//! Pure: this module never touches a file. The driver (io-real's `wal`) reads
//! a whole segment into memory and hands it to [`decode_segment`], and writes
//! what [`SegmentHeader::encode`] and [`encode_entries`] produce.
//!
//! # Format
//!
//! ```text
//! segment = header frame*
//! header  = magic "T4WAL\0\r\n" (8) | version u32 LE | writer term u64 LE
//!         | first index u64 LE | crc32c u32 LE over the 28 bytes before it   (32 bytes)
//! frame   = len u32 LE | crc32c u32 LE over the 4 len bytes then the payload | payload (len bytes)
//! payload = protobuf `Entry` (crate::log), len <= FRAME_PAYLOAD_BYTES_MAX
//! ```
//!
//! The CRC covers the length so a damaged length is caught by the CRC rather
//! than sending the reader to a random offset; the magic ends in `\0\r\n` so
//! a text-mode transfer or a C-string tool that mangled the file is spotted
//! on the first read.
//!
//! # Torn tail or corruption (worked example)
//!
//! A segment holds frames for entries 7, 8, 9 (offsets 32, 90, 151, end 212).
//! Entries 7 and 8 were fsynced and acknowledged; 9 was written but the node
//! lost power before its fsync.
//!
//! - After the crash the file ends at byte 180 (the write of 9 was cut short).
//!   Frame 9 claims more bytes than remain: it is bad, no valid frame starts
//!   after byte 151, and this is the last segment → torn tail, truncate to 151.
//!   Entry 9 was never acknowledged, so nothing acknowledged is lost.
//! - The file is 212 bytes but the disk left zeros or stale bytes in 151..212:
//!   frame 9's CRC fails, nothing valid follows → the same torn tail.
//! - A bit flipped in frame 7 (offset 32) while 8 is intact: frame 7 is bad
//!   but a complete valid frame starts at 90. Frame 8 could only have reached
//!   the disk after frame 7 was written, and acknowledged data was fsynced,
//!   so frame 7 was acknowledged: this is corruption, reported as
//!   `Corrupt { offset: 32, .. }`, never skipped.
//! - Any bad frame in a segment that is not the last one is corruption: a
//!   segment is fdatasynced before the next one is created, so every byte of
//!   a sealed segment was durable.
//!
//! Limits of the rule, stated so nobody relies on more: bit rot inside the
//! final frame of the last segment looks exactly like a torn write and is
//! truncated (no format can tell them apart without a second copy); and if
//! the disk persisted a later page of an unsynced batch but not an earlier
//! one, the valid frame after the bad one makes the reader refuse to open —
//! a false alarm, but a safe one (it never drops data silently).

mod error;
mod frame;
mod header;
mod replay;
mod segment;

#[cfg(test)]
mod tests;

pub use error::{FrameFault, WalError};
pub use frame::{
    encode_entries, encode_frame, entry_payload_len, frame_len, FRAME_HEADER_BYTES,
    FRAME_PAYLOAD_BYTES_MAX,
};
pub use header::{SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC};
pub use replay::{plan_replay, Cut, CutKind, ReplayError, ReplayPlan, ReplayPlanner, SegmentImage};
pub use segment::{decode_segment, DecodedSegment, TornTail};
