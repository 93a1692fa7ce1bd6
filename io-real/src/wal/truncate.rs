//! Dropping the tail of the log: [`Wal::truncate_after`]. In cluster mode a
//! follower whose last entries conflict with the leader's removes them
//! before appending the leader's (Raft §5.3); the entries removed were never
//! committed, so no acknowledged write is lost.
//!
//! # Steps, and why a crash part-way is harmless
//!
//! 1. Read and decode the segment holding `index` (the last entry kept) and
//!    find where that entry's frame ends. Nothing has changed yet, so a
//!    damaged segment refuses the truncation without touching any file.
//! 2. Delete every later segment, **newest first**, fsyncing the directory
//!    after each removal. A crash part-way leaves a contiguous log that is
//!    merely longer than asked (the call had not returned, so nobody relied
//!    on the removal). Deleting in another order, or fsyncing the directory
//!    once at the end, could let a crash persist a later removal but not an
//!    earlier one: a gap between segments, which makes the WAL refuse to
//!    open. Truncation is rare (a leader change), so the extra fsyncs cost
//!    nothing that matters.
//! 3. Cut the kept segment at the end of `index`'s frame and fsync it. This
//!    comes last: cut first, a crash before step 2 finished would leave the
//!    cut segment followed by segments that start after a gap.
//!
//! The kept segment becomes the current one: the next append continues it
//! at `index + 1` (or seals it first if it is full).
//!
//! # Example (worked)
//!
//! Segments `…001.wal` (entries 1–40, term 2) and `…041.wal` (41–57, term
//! 3; 44–57 appended but not synced). `truncate_after(Index(45))`: decodes
//! `…041.wal`, cuts it after the frame of 45, fsyncs it (which also makes
//! 44 and 45 durable); `last_index()` is 45 and the last term 3. The leader's
//! entries 46–50 of term 4 are appended next, into `…041.wal`.
//! `truncate_after(Index(40))` instead: deletes `…041.wal`, fsyncs the
//! directory, and cuts `…001.wal` at its end (a no-op); the next append goes
//! into `…001.wal`. `truncate_after(Index(30))` after
//! `remove_segments_before(Index(41))` deleted `…001.wal`:
//! [`WalError::TruncateBelowFirst`] — entries 31–40 are in the engine and
//! can no longer be removed from the log.

use std::fs;

use t4_core::wal::{decode_segment, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use t4_core::{Index, Term};

use super::error::WalError;
use super::files::{io_error, open_for_write, sync_dir};
use super::{Current, Wal};

impl Wal {
    /// Removes every entry after `index`, durably: when this returns, the
    /// WAL holds no entry above `index` and a crash cannot bring one back.
    /// The entries through `index` are durable afterwards too (the kept
    /// segment is fsynced). [`Wal::last_index`] becomes `index`; the next
    /// append must start at `index + 1` and may carry any term not below
    /// that of the entry at `index` (higher or lower than the removed
    /// entries': a new leader's entries may have either).
    ///
    /// `index >= last_index()` removes nothing and does nothing.
    /// `index` may be one below the oldest index the WAL holds: every
    /// segment is then deleted, and the log continues at `index + 1`.
    /// The steps and why a crash part-way is harmless are described in
    /// `wal/truncate.rs`.
    ///
    /// # Errors
    /// [`WalError::TruncateBelowFirst`] when entries between `index` and the
    /// oldest the WAL holds were trimmed (nothing changed);
    /// [`WalError::Corrupt`] when a segment to read does not decode (nothing
    /// changed); [`WalError::Io`] (the `Wal` is then poisoned: reopening it
    /// finds a contiguous log, with some or all of the removal done);
    /// [`WalError::Poisoned`].
    pub fn truncate_after(&mut self, index: Index) -> Result<(), WalError> {
        self.check_usable()?;
        if index >= self.last_index() {
            return Ok(());
        }
        let first = self.first_index();
        if index.0 + 1 < first.0 {
            return Err(WalError::TruncateBelowFirst {
                dir: self.dir.clone(),
                after: index,
                first,
            });
        }
        let result = self.truncate_after_inner(index);
        if let Err(WalError::Io { path, .. }) = &result {
            self.poisoned = Some(path.clone());
        }
        result
    }

    /// The oldest index the WAL holds, or the next index to append when it
    /// holds none (no segments, or only stale ones that the next append
    /// removes).
    fn first_index(&self) -> Index {
        match self.segments.front() {
            Some(oldest) if !self.stale => oldest.first_index,
            _ => self.next_index,
        }
    }

    fn truncate_after_inner(&mut self, index: Index) -> Result<(), WalError> {
        // `index < last_index()`, and `index + 1 >= first_index()`: the
        // segments exist and are not stale, and at least one entry goes.
        assert!(
            !self.stale && !self.segments.is_empty(),
            "WAL truncate after {index}: a WAL without live segments has no entry to remove"
        );
        // The segment holding `index` (kept), if any: the newest one that
        // starts at or before it. None when `index` is one below the oldest.
        let kept = self.segments.iter().rposition(|s| s.first_index <= index);
        // Step 1: where `index`'s frame ends, and its term.
        let cut = kept
            .map(|position| self.find_end_of(position, index))
            .transpose()?;

        // Step 2: delete every later segment, newest first.
        self.current = None;
        let keep_count = kept.map_or(0, |position| position + 1);
        while self.segments.len() > keep_count {
            let newest = self.segments.back().expect("len > keep_count >= 0");
            fs::remove_file(&newest.path).map_err(io_error(&newest.path))?;
            sync_dir(&self.dir)?;
            tracing::info!(
                file = %newest.path.display(),
                after = index.0,
                "WAL: removed a segment holding only entries after the truncation point"
            );
            self.segments.pop_back();
        }

        // Step 3: cut the kept segment after `index`, durably; it becomes
        // the current one.
        self.last_term = Term(0);
        if let Some((offset, term)) = cut {
            let segment = self.segments.back().expect("the kept segment");
            let file = open_for_write(&segment.path)?;
            file.set_len(offset)
                .and_then(|()| file.sync_all())
                .map_err(io_error(&segment.path))?;
            tracing::info!(
                file = %segment.path.display(),
                offset,
                after = index.0,
                "WAL: truncated the log after an index"
            );
            self.current = Some(Current {
                file,
                path: segment.path.clone(),
                bytes: offset,
                allocated: offset,
            });
            self.last_term = term;
        }
        self.next_index = Index(index.0 + 1);
        // Everything kept is durable: the kept segment was just fsynced,
        // and the ones before it were fsynced when sealed.
        self.unsynced = false;
        assert_eq!(
            self.last_index(),
            index,
            "WAL truncate: the log must end at the index asked for"
        );
        Ok(())
    }

    /// Reads the segment at `position` (which holds `index`) and returns the
    /// byte offset where the frame of `index` ends, and that entry's term.
    /// Reads only; changes nothing.
    fn find_end_of(&self, position: usize, index: Index) -> Result<(u64, Term), WalError> {
        let segment = &self.segments[position];
        let path = &segment.path;
        let bytes = fs::read(path).map_err(io_error(path))?;
        // The newest segment may end in preallocated zeros or a torn tail:
        // decode it as the last. A sealed one must decode whole.
        let is_last = position + 1 == self.segments.len();
        let decoded = decode_segment(&bytes, is_last).map_err(|e| WalError::Corrupt {
            path: path.clone(),
            offset: e.offset(),
            reason: e.reason(),
        })?;
        let decoded_end = decoded
            .torn_tail
            .as_ref()
            .map_or(bytes.len() as u64, |t| t.offset);
        let keep = usize::try_from(index.0 - segment.first_index.0 + 1)
            .expect("entries in one in-memory segment fit in usize");
        let Some(last_kept) = decoded.entries.get(keep - 1) else {
            return Err(WalError::Corrupt {
                path: path.clone(),
                offset: decoded_end,
                reason: format!(
                    "the segment ends at index {} but the log says it holds index {index}",
                    segment.first_index.0 + decoded.entries.len() as u64 - 1
                ),
            });
        };
        assert_eq!(
            last_kept.index, index.0,
            "decode_segment checks the indexes"
        );

        // Walk the frames' length fields (format: t4_core::wal). They are the
        // lengths the decoder just checked, so the walk must end where the
        // decoder did; re-encoding the entries instead could differ from the
        // bytes on disk (an older build may have written fields this one
        // drops) and cut in the middle of a frame.
        let mut end = SEGMENT_HEADER_BYTES as u64;
        let mut cut = None;
        for i in 0..decoded.entries.len() {
            let at = usize::try_from(end).expect("offset within an in-memory segment");
            let len_bytes: [u8; 4] = bytes[at..at + 4]
                .try_into()
                .expect("a decoded frame has a whole length field");
            end += (FRAME_HEADER_BYTES + u32::from_le_bytes(len_bytes) as usize) as u64;
            if i + 1 == keep {
                cut = Some(end);
            }
        }
        assert_eq!(
            end,
            decoded_end,
            "WAL truncate: walking the frames of {} must end where decoding did",
            path.display()
        );
        let cut = cut.expect("keep <= the number of decoded entries");
        Ok((cut, Term(last_kept.term)))
    }
}
