//! WAL objects: the bytes of one uploaded batch (or sealed segment).
//!
//! A WAL object is a WAL segment ([`crate::wal`]) holding at least one
//! entry: the header records the writer's term and the first index, which
//! must equal the index in the object's key. Unlike a local segment it is
//! never appended to and never torn (a put is atomic), so **any** bad frame
//! is corruption, and so is a header that disagrees with the key: a
//! download that does not decode is refused, never half-used.

use bytes::Bytes;

use crate::log::Entry;
use crate::types::{Index, Term};
use crate::wal::{decode_segment, encode_entries, SegmentHeader, WalError, SEGMENT_HEADER_BYTES};

/// Why a WAL object could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalObjectError {
    /// The bytes are not a valid segment (bad magic, header or frame).
    #[error("WAL object {key}: {source}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What the segment decoder found.
        source: WalError,
    },
    /// The object decodes but does not say what its key says.
    #[error("WAL object {key}: {why}")]
    Mismatch {
        /// The object's key.
        key: String,
        /// What disagrees.
        why: String,
    },
}

/// The object body for `entries` (contiguous, at least one) written by a
/// node in `term`.
///
/// # Panics
/// `entries` is empty or not contiguous.
#[must_use]
pub fn encode(term: Term, entries: &[Entry]) -> Bytes {
    let first = entries
        .first()
        .expect("a WAL object holds at least one entry");
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1].index,
            pair[0].index + 1,
            "WAL object entries must be contiguous"
        );
    }
    let header = SegmentHeader {
        term,
        first_index: Index(first.index),
    };
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES + entries.len() * 64);
    out.extend_from_slice(&header.encode());
    encode_entries(entries, &mut out);
    Bytes::from(out)
}

/// The entries of the object stored under a key naming `first`, checked:
/// the header's first index is `first`, there is at least one entry, every
/// frame is intact, indexes are contiguous and terms never go back.
///
/// # Errors
/// [`WalObjectError`] naming `key`.
pub fn decode(key: &str, first: Index, body: &[u8]) -> Result<(Term, Vec<Entry>), WalObjectError> {
    let corrupt = |source| WalObjectError::Corrupt {
        key: key.to_owned(),
        source,
    };
    // Not the last segment: every frame was written whole, so none may be bad.
    let segment = decode_segment(body, false).map_err(corrupt)?;
    let mismatch = |why: String| WalObjectError::Mismatch {
        key: key.to_owned(),
        why,
    };
    if segment.header.first_index != first {
        return Err(mismatch(format!(
            "header says first index {}, the key says {first}",
            segment.header.first_index
        )));
    }
    if segment.entries.is_empty() {
        return Err(mismatch("holds no entry".into()));
    }
    debug_assert!(
        segment.torn_tail.is_none(),
        "sealed segments have no torn tail"
    );
    Ok((segment.header.term, segment.entries))
}

/// The writer's term, from the header of the object stored under a key
/// naming `first`, without reading its frames: what GC needs to tell a fence
/// object (a higher term than the object before it) from the others.
/// `body` may be the whole object or just its first
/// [`SEGMENT_HEADER_BYTES`].
///
/// This checks the header only (magic, version, CRC, first index); a body
/// whose frames are damaged still gives its term. Use [`decode`] before
/// trusting any entry.
///
/// # Errors
/// [`WalObjectError::Corrupt`] for a bad header,
/// [`WalObjectError::Mismatch`] when it names another first index.
pub fn decode_term(key: &str, first: Index, body: &[u8]) -> Result<Term, WalObjectError> {
    let header = SegmentHeader::decode(body).map_err(|source| WalObjectError::Corrupt {
        key: key.to_owned(),
        source,
    })?;
    if header.first_index != first {
        return Err(WalObjectError::Mismatch {
            key: key.to_owned(),
            why: format!(
                "header says first index {}, the key says {first}",
                header.first_index
            ),
        });
    }
    Ok(header.term)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Barrier, Payload};

    fn entries(first: u64, n: u64, term: u64) -> Vec<Entry> {
        (first..first + n)
            .map(|index| Entry {
                term,
                index,
                payload: Some(Payload::Barrier(Barrier {})),
            })
            .collect()
    }

    /// Encode then decode gives the entries back; damage anywhere is refused.
    #[test]
    fn round_trip_and_damage() {
        let batch = entries(5, 3, 2);
        let body = encode(Term(2), &batch);
        let key = crate::bucket::layout::wal_key(Index(5));
        assert_eq!(decode(&key, Index(5), &body), Ok((Term(2), batch)));

        assert!(matches!(
            decode(&key, Index(6), &body),
            Err(WalObjectError::Mismatch { .. })
        ));
        for cut in [body.len() - 1, SEGMENT_HEADER_BYTES + 3, 10] {
            assert!(
                matches!(
                    decode(&key, Index(5), &body[..cut]),
                    Err(WalObjectError::Corrupt { .. })
                ),
                "a body cut at {cut} is corrupt"
            );
        }
        let mut flipped = body.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            decode(&key, Index(5), &flipped),
            Err(WalObjectError::Corrupt { .. })
        ));
        let header_only = SegmentHeader {
            term: Term(2),
            first_index: Index(5),
        }
        .encode();
        assert!(matches!(
            decode(&key, Index(5), &header_only),
            Err(WalObjectError::Mismatch { .. })
        ));
    }

    /// The term comes from the header alone, agrees with `decode`, and a
    /// damaged header or one naming another index is refused.
    #[test]
    fn term_from_header() {
        let body = encode(Term(7), &entries(40, 2, 6));
        let key = crate::bucket::layout::wal_key(Index(40));
        assert_eq!(decode_term(&key, Index(40), &body), Ok(Term(7)));
        assert_eq!(
            decode_term(&key, Index(40), &body[..SEGMENT_HEADER_BYTES]),
            Ok(Term(7)),
            "the header is enough"
        );
        assert_eq!(
            decode(&key, Index(40), &body).map(|(term, _)| term),
            Ok(Term(7))
        );
        assert_eq!(
            decode_term(&key, Index(41), &body),
            Err(WalObjectError::Mismatch {
                key: key.clone(),
                why: "header says first index 40, the key says 41".into()
            })
        );
        assert!(matches!(
            decode_term(&key, Index(40), &body[..SEGMENT_HEADER_BYTES - 1]),
            Err(WalObjectError::Corrupt { .. })
        ));
        let mut flipped = body.to_vec();
        flipped[13] ^= 1; // inside the term: the header CRC no longer matches
        assert!(matches!(
            decode_term(&key, Index(40), &flipped),
            Err(WalObjectError::Corrupt { .. })
        ));
        // Damage after the header is not this function's business.
        let mut tail = body.to_vec();
        let last = tail.len() - 1;
        tail[last] ^= 1;
        assert_eq!(decode_term(&key, Index(40), &tail), Ok(Term(7)));
    }
}
