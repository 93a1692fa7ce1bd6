//! Replaying the WAL on open: which entries to hand back, which segment tails
//! to cut, and when to refuse to start.
//!
//! Pure, like the rest of this module: the driver lists the segment files
//! (io-real from a directory, io-sim from its simulated disk), hands their
//! bytes here oldest first, and then does what the [`ReplayPlan`] says —
//! truncates (and fsyncs) each [`Cut`], replays the entries. So both drivers
//! take the same decisions on the same bytes.
//!
//! # Rules
//!
//! Every segment must:
//! - decode ([`decode_segment`]); a bad tail is judged here, not there (each
//!   segment is decoded as if it were the last, so a zero tail in a sealed
//!   one is not refused before it is seen to be zeros);
//! - carry in its header the first index its name says;
//! - start right after the previous segment ends (a gap means a segment is
//!   missing; an overlap means segments from two histories);
//! - not lower the term: its first entry's term is at least the previous
//!   segment's last one (within a segment [`decode_segment`] checks it).
//!
//! A bad tail (the first bad frame, with no valid frame after it) is:
//! - all zero bytes: preallocated space that was never written, in **any**
//!   segment (a crash while sealing may leave a sealed segment padded):
//!   [`CutKind::Padding`], cut quietly;
//! - otherwise, in the last segment: a write that never completed, so never
//!   acknowledged: [`CutKind::TornTail`], cut with a warning;
//! - otherwise (garbage in a sealed segment, which was fsynced before the
//!   next one was created): [`ReplayError::Corrupt`].
//!
//! Finally `from` (the first index the engine has not durably applied) must
//! not be below the oldest segment, or the entries in between are gone:
//! [`ReplayError::Behind`]. Corruption is reported before `Behind`.
//!
//! On any error the plan is not returned, so the driver cuts nothing:
//! refusing to open changes no file.
//!
//! # Worked example
//!
//! Segment 0 is named `…001` and holds entries 1–40 (term 2), followed by
//! 3000 zero bytes: the node crashed while sealing it, before cutting its
//! preallocated space. Segment 1 is named `…041` and holds entries 41–57
//! (term 3), but the frame of 57 is half written (power cut before its
//! fsync); it ends at byte 1234 of a 1300-byte file.
//!
//! - `from` = 51: entries 51–56; `next` = 57 (the next append); `last_term`
//!   = 3; cuts: segment 0 at its last frame's end ([`CutKind::Padding`]),
//!   segment 1 at 1234 ([`CutKind::TornTail`], 66 bytes dropped);
//!   `last_len` = 1234.
//! - `from` = 57: the same, with no entries to replay.
//! - `from` = 60 (the engine was restored from a checkpoint ahead of the
//!   WAL): no entries, `next` = 57, and [`ReplayPlan::is_stale`] says so:
//!   the driver appends at 60 after removing every segment.
//! - After segment 0 is removed, `from` = 30: [`ReplayError::Behind`]
//!   `{ from: 30, first: 41 }`.
//! - Had segment 0 ended in `"garbage"` rather than zeros: `Corrupt` at
//!   segment 0, at the offset where the garbage starts.

use super::header::SEGMENT_HEADER_BYTES;
use super::segment::{decode_segment, DecodedSegment};
use crate::log::Entry;
use crate::types::{Index, Term};

#[cfg(test)]
mod tests;

/// Byte offset of the first-index field in a segment header (reported for
/// a name/header mismatch and a gap or overlap between segments).
const HEADER_FIRST_INDEX_OFFSET: u64 = 20;

/// One segment as found on disk, oldest first.
#[derive(Clone, Copy, Debug)]
pub struct SegmentImage<'a> {
    /// The first index from the file name (checked against the header).
    pub first_index: Index,
    /// The whole file.
    pub bytes: &'a [u8],
}

/// What to do to the files and what to replay: the result of
/// [`plan_replay`] / [`ReplayPlanner::finish`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Entries with index `>= from`, in order: `from, from + 1, …`.
    pub entries: Vec<Entry>,
    /// The index after the last entry on disk; `None` when there are no
    /// segments. With a header-only last segment, that segment's first index.
    pub next: Option<Index>,
    /// Term of the last entry on disk (0 if none).
    pub last_term: Term,
    /// Truncations the driver must perform (and make durable) before it
    /// appends, in segment order, at most one per segment.
    pub cuts: Vec<Cut>,
    /// Length of the last segment after the cuts: where the next frame goes
    /// if the driver appends to it (0 when there are no segments).
    pub last_len: u64,
}

impl ReplayPlan {
    /// Whether every entry on disk is below `from` (the `from` this plan was
    /// made with) and at least one segment exists: the engine is ahead of
    /// the WAL (restored from a checkpoint). The driver then appends at
    /// `from`, not at [`ReplayPlan::next`], and must first remove every
    /// segment (all their entries are in the engine; keeping them would
    /// leave a gap before the new segment). [`ReplayPlan::last_term`] then
    /// says nothing about the entries before `from`.
    #[must_use]
    pub fn is_stale(&self, from: Index) -> bool {
        self.next.is_some_and(|next| next < from)
    }
}

/// A truncation: cut the segment at position `segment` (in the input) to
/// `offset` bytes, and make the new length durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Position of the segment in the input slice.
    pub segment: usize,
    /// The new length: the end of the last good frame (at least the header).
    pub offset: u64,
    /// Why, which decides how loudly the driver reports it.
    pub kind: CutKind,
}

/// Why a segment is cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CutKind {
    /// Zero bytes after the last frame: preallocated space never written.
    /// Nothing is lost; cut quietly.
    Padding,
    /// The tail of the last segment left by a write that never completed
    /// (so never acknowledged). Cut, with a warning.
    TornTail {
        /// What is wrong with the first bad frame.
        reason: String,
        /// Bytes after `offset` that are dropped.
        dropped_bytes: u64,
    },
}

/// Why the WAL cannot be replayed. Nothing was cut.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Damaged or inconsistent data that cannot be a torn tail: a bad frame
    /// in a sealed segment or before a valid frame, a bad header, a header
    /// that disagrees with the file name, a gap or overlap between segments,
    /// a term that goes down.
    #[error("corrupt WAL segment (position {segment}) at byte offset {offset}: {reason}")]
    Corrupt {
        /// Position of the segment in the input slice.
        segment: usize,
        /// Byte offset of the problem in the segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// `from` is below the oldest segment: the entries in between were
    /// removed, so this WAL cannot bring the engine up to date.
    #[error("the WAL no longer holds index {from}: its oldest segment starts at index {first}")]
    Behind {
        /// The first index the caller needs.
        from: Index,
        /// The oldest index the WAL holds.
        first: Index,
    },
}

/// Plans the replay of `segments` (oldest first, as listed) for an engine
/// that has durably applied everything before `from`. See the module docs
/// for the rules and a worked example; [`ReplayPlanner`] does the same one
/// segment at a time.
///
/// # Errors
/// [`ReplayError::Corrupt`] (the first problem found, in segment order) and
/// [`ReplayError::Behind`].
///
/// # Panics
/// `from` is 0 (indexes start at 1).
pub fn plan_replay(segments: &[SegmentImage<'_>], from: Index) -> Result<ReplayPlan, ReplayError> {
    let mut planner = ReplayPlanner::new(from, segments.len());
    for &image in segments {
        planner = planner.push(image)?;
    }
    planner.finish()
}

/// [`plan_replay`] one segment at a time, so a driver need not hold every
/// segment's bytes at once (only the entries at or after `from` are kept).
///
/// `push` each segment oldest first, then `finish`. `push` and `finish`
/// consume the planner: after an error there is nothing left to misuse.
#[derive(Debug)]
pub struct ReplayPlanner {
    from: Index,
    /// How many segments the caller will push (the last one may be torn).
    segment_count: usize,
    /// How many were pushed: the position of the next one.
    pushed: usize,
    /// First index of the oldest segment (for the `Behind` check).
    oldest: Option<Index>,
    plan: ReplayPlan,
}

impl ReplayPlanner {
    /// A planner for `segment_count` segments and an engine that needs the
    /// entries from `from` on.
    ///
    /// # Panics
    /// `from` is 0 (indexes start at 1).
    #[must_use]
    pub fn new(from: Index, segment_count: usize) -> ReplayPlanner {
        assert!(
            from.0 >= 1,
            "WAL replay: `from` must be >= 1 (indexes start at 1), got {from}"
        );
        ReplayPlanner {
            from,
            segment_count,
            pushed: 0,
            oldest: None,
            plan: ReplayPlan::default(),
        }
    }

    /// Checks the next segment against the rules (module docs), plans its
    /// cut if it has a bad tail, and keeps its entries at or after `from`.
    ///
    /// # Errors
    /// [`ReplayError::Corrupt`], naming this segment's position.
    ///
    /// # Panics
    /// More segments pushed than `segment_count`.
    pub fn push(mut self, image: SegmentImage<'_>) -> Result<ReplayPlanner, ReplayError> {
        assert!(
            self.pushed < self.segment_count,
            "WAL replay: segment {} pushed, but only {} announced",
            self.pushed,
            self.segment_count
        );
        let segment = self.pushed;
        let is_last = segment + 1 == self.segment_count;
        let corrupt = |offset, reason| ReplayError::Corrupt {
            segment,
            offset,
            reason,
        };
        // Decoded as if last, so that a zero tail (padding) is not an error
        // in a sealed segment; any other tail there is refused below.
        let decoded =
            decode_segment(image.bytes, true).map_err(|e| corrupt(e.offset(), e.reason()))?;
        self.check_order(segment, image.first_index, &decoded)?;

        let len = image.bytes.len() as u64;
        let mut kept_len = len;
        if let Some(torn) = &decoded.torn_tail {
            let offset = usize::try_from(torn.offset).expect("offset within an in-memory segment");
            let padding = image.bytes[offset..].iter().all(|b| *b == 0);
            let kind = if padding {
                CutKind::Padding
            } else if is_last {
                CutKind::TornTail {
                    reason: torn.reason.to_string(),
                    dropped_bytes: len - torn.offset,
                }
            } else {
                let reason = format!("{} (in a sealed segment, before the next one)", torn.reason);
                return Err(corrupt(torn.offset, reason));
            };
            assert!(
                torn.offset >= SEGMENT_HEADER_BYTES as u64 && torn.offset < len,
                "a cut must keep the header and drop something: {} of {len} bytes",
                torn.offset
            );
            self.plan.cuts.push(Cut {
                segment,
                offset: torn.offset,
                kind,
            });
            kept_len = torn.offset;
        }

        let first = decoded.header.first_index;
        self.oldest.get_or_insert(first);
        self.plan.next = Some(Index(first.0 + decoded.entries.len() as u64));
        self.plan.last_len = kept_len;
        if let Some(entry) = decoded.entries.last() {
            self.plan.last_term = Term(entry.term);
        }
        let from = self.from;
        let kept = decoded.entries.into_iter().filter(|e| e.index >= from.0);
        self.plan.entries.extend(kept);
        self.pushed += 1;
        Ok(self)
    }

    /// The plan, once every segment was pushed.
    ///
    /// # Errors
    /// [`ReplayError::Behind`] when segments exist and `from` is below the
    /// oldest.
    ///
    /// # Panics
    /// Fewer segments pushed than `segment_count`.
    pub fn finish(self) -> Result<ReplayPlan, ReplayError> {
        assert_eq!(
            self.pushed, self.segment_count,
            "WAL replay: finished after {} of {} segments",
            self.pushed, self.segment_count
        );
        let from = self.from;
        if let Some(first) = self.oldest {
            if from < first {
                return Err(ReplayError::Behind { from, first });
            }
        }
        let plan = self.plan;
        assert_eq!(
            plan.next.is_some(),
            self.segment_count > 0,
            "`next` is known exactly when segments exist"
        );
        assert!(
            plan.entries.first().is_none_or(|e| e.index == from.0),
            "replay must start at `from` {from}, starts at {:?}",
            plan.entries.first().map(|e| e.index)
        );
        if let (Some(last), Some(next)) = (plan.entries.last(), plan.next) {
            assert_eq!(
                last.index + 1,
                next.0,
                "replay must end with the last entry on disk"
            );
        }
        assert!(
            plan.cuts.windows(2).all(|w| w[0].segment < w[1].segment),
            "cuts in segment order, at most one per segment: {:?}",
            plan.cuts
        );
        Ok(plan)
    }

    /// Checks a decoded segment against its file name and against the
    /// segments before it.
    fn check_order(
        &self,
        segment: usize,
        named_first: Index,
        decoded: &DecodedSegment,
    ) -> Result<(), ReplayError> {
        let corrupt = |offset, reason| ReplayError::Corrupt {
            segment,
            offset,
            reason,
        };
        let first = decoded.header.first_index;
        if first != named_first {
            let reason =
                format!("the file name says first index {named_first} but the header says {first}");
            return Err(corrupt(HEADER_FIRST_INDEX_OFFSET, reason));
        }
        if let Some(expected) = self.plan.next {
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
                return Err(corrupt(HEADER_FIRST_INDEX_OFFSET, reason));
            }
        }
        if let Some(entry) = decoded.entries.first() {
            if entry.term < self.plan.last_term.0 {
                let reason = format!(
                    "entry {} has term {}, below the previous segment's last term {}",
                    entry.index, entry.term, self.plan.last_term
                );
                return Err(corrupt(SEGMENT_HEADER_BYTES as u64, reason));
            }
        }
        Ok(())
    }
}
