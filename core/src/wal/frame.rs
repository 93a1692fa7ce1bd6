//! Frames: `len u32 LE | crc32c u32 LE | payload`, the CRC over the length
//! bytes then the payload.

use prost::Message;

use super::error::FrameFault;
use crate::log::Entry;

/// Bytes before a frame's payload (length and CRC).
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest payload a frame may carry. A length field above it is a bad frame
/// on read (so a damaged length cannot make the reader allocate or scan
/// gigabytes) and a bug on write. 64 MiB is far above any request t4 accepts
/// (`--max-request-bytes` defaults to 1.5 MiB).
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 64 << 20;

/// Bytes a frame with a `payload_len`-byte payload takes.
#[must_use]
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_BYTES + payload_len
}

/// The frame CRC: crc32c over the 4 length bytes, then the payload.
fn frame_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload)
}

/// Appends one frame carrying `payload` to `out`.
///
/// # Panics
/// The payload is over [`FRAME_PAYLOAD_BYTES_MAX`]: the reader would refuse
/// the frame, so writing it would make the WAL unreadable. Callers check the
/// size first and turn it into an error.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = checked_len(payload.len());
    out.reserve(frame_len(payload.len()));
    let len_bytes = len.to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&frame_crc(len_bytes, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one frame per entry to `out` (encoding each entry in place, no
/// intermediate buffer) and returns the bytes written. Does not check index
/// order: the writer asserts that before encoding.
///
/// # Panics
/// An entry encodes to more than [`FRAME_PAYLOAD_BYTES_MAX`] bytes (see
/// [`encode_frame`]).
pub fn encode_entries(entries: &[Entry], out: &mut Vec<u8>) -> usize {
    let start = out.len();
    for entry in entries {
        let payload_len = entry.encoded_len();
        let len_bytes = checked_len(payload_len).to_le_bytes();
        out.reserve(frame_len(payload_len));
        let frame_start = out.len();
        out.extend_from_slice(&len_bytes);
        out.extend_from_slice(&[0u8; 4]); // CRC, filled in below
        entry
            .encode(out)
            .expect("a Vec grows as needed, so encoding cannot run out of room");
        let payload = &out[frame_start + FRAME_HEADER_BYTES..];
        assert_eq!(
            payload.len(),
            payload_len,
            "prost encoded_len disagrees with encode"
        );
        let crc = frame_crc(len_bytes, payload);
        out[frame_start + 4..frame_start + FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    }
    out.len() - start
}

fn checked_len(payload_len: usize) -> u32 {
    assert!(
        payload_len <= FRAME_PAYLOAD_BYTES_MAX as usize,
        "WAL frame payload of {payload_len} bytes is over FRAME_PAYLOAD_BYTES_MAX ({FRAME_PAYLOAD_BYTES_MAX})"
    );
    u32::try_from(payload_len).expect("bounded by FRAME_PAYLOAD_BYTES_MAX, which fits in u32")
}

/// Bytes `entry` takes as a frame payload (for checking it against
/// [`FRAME_PAYLOAD_BYTES_MAX`] before encoding; computes, does not allocate).
#[must_use]
pub fn entry_payload_len(entry: &Entry) -> usize {
    entry.encoded_len()
}

/// Reads the frame starting at `offset` and returns its payload, checking
/// only the frame itself (length bounds and CRC), not what the payload means.
pub(super) fn read_frame(bytes: &[u8], offset: usize) -> Result<&[u8], FrameFault> {
    assert!(
        offset <= bytes.len(),
        "frame offset {offset} past the end of {} bytes",
        bytes.len()
    );
    let rest = &bytes[offset..];
    let Some(header) = rest.get(..FRAME_HEADER_BYTES) else {
        return Err(FrameFault::ShortFrameHeader {
            available: rest.len() as u64,
        });
    };
    let len_bytes: [u8; 4] = header[..4].try_into().expect("slice of 4 bytes");
    let len = u32::from_le_bytes(len_bytes);
    let stored = u32::from_le_bytes(header[4..].try_into().expect("slice of 4 bytes"));
    if len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(FrameFault::LengthOverMax { len });
    }
    let available = rest.len() - FRAME_HEADER_BYTES;
    let Some(payload) = rest[FRAME_HEADER_BYTES..].get(..len as usize) else {
        return Err(FrameFault::LengthPastEnd {
            len,
            available: available as u64,
        });
    };
    let computed = frame_crc(len_bytes, payload);
    if stored != computed {
        return Err(FrameFault::CrcMismatch { stored, computed });
    }
    Ok(payload)
}

/// Offset of the first complete, CRC-valid frame starting at or after `from`.
///
/// Tries every byte offset, because after a bad frame nothing says where the
/// next one would start. Cost: offsets whose length field exceeds what is
/// left are rejected without hashing, so random garbage and zero fill scan in
/// linear time; only offsets whose length fits cost a CRC over that length.
/// Runs only on the error path (once per open at most).
pub(super) fn find_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&offset| read_frame(bytes, offset).is_ok())
}
