//! The write-ahead log's segment files (ARCHITECTURE §3.3): `std::fs`,
//! synchronous. The driver owns one [`Wal`] on a dedicated thread and calls it
//! for the `AppendWal` / `SyncWal` actions core emits. The byte format, the
//! torn-tail rule and every decision taken on open (what to replay, what to
//! cut, what to refuse: `t4_core::wal::plan_replay`) live in `t4_core::wal`,
//! shared with the simulator's driver; this module does the file I/O.
//!
//! # Files
//!
//! A directory of segments, each named by its first index zero-padded to 20
//! digits (`00000000000000000001.wal`), so a listing is in log order. Each
//! starts with a header (written under a `.wal.tmp` name, fsynced, renamed,
//! directory fsynced: a `.wal` file always has a whole header) followed by
//! frames. Only the last segment is appended to; it is sealed (cut to its
//! frames and fsynced) and a new one started once it reaches
//! `segment_bytes_max`. A batch is never split across segments, so a segment
//! may exceed the bound by one batch.
//!
//! # Preallocation
//!
//! The current segment is extended with zero bytes
//! [`PREALLOCATE_BYTES`] at a time ahead of the frames, and frames are
//! written over those zeros. On ext4 an fdatasync after a write that grows
//! the file must also commit the new size (a journal transaction); over
//! space already written it flushes only the data: measured here, 126 µs →
//! 86 µs per fdatasync. So a segment may end in zeros: on open they are
//! padding, not a torn write, and are cut off quietly (in any segment: a
//! crash while sealing may leave a sealed one padded).
//!
//! # What the caller must do
//!
//! - Open with `from` = the first index the engine has **not** durably
//!   applied; replay the entries returned (all `>= from`).
//! - Append the next index: [`Wal::last_index`] `+ 1`. That is the last entry
//!   on disk + 1 — or `from` when the WAL held nothing at or after `from`
//!   (empty, or wholly behind the engine). In the second case the next append
//!   removes the old segments (every entry in them is below `from`, already in
//!   the engine, and keeping them would leave a gap before the new segment)
//!   and starts a segment at `from`.
//! - Acknowledge nothing before [`Wal::sync`] returns for it.
//! - After any error from `append`, `sync` or `truncate_after`, stop
//!   writing and reopen (see [`WalError::Poisoned`]).
//! - To replace a conflicting tail (cluster mode), call
//!   [`Wal::truncate_after`] with the last index to keep, then append from
//!   the index after it.
//!
//! # Example (worked)
//!
//! Segments `…001.wal` (entries 1–40) and `…041.wal` (41–57, its last frame
//! torn by a power cut before its fsync, so never acknowledged). The engine
//! durably applied up to 50. `Wal::open(dir, Index(51), term, max)` truncates
//! `…041.wal` after entry 56 (logging file and offset), returns entries
//! 51–56, and `last_index()` is 56; the next append must be entry 57.
//! `remove_segments_before(Index(51))` then deletes `…001.wal` (all of it is
//! below 51) and keeps `…041.wal`.

mod error;
mod files;
mod recover;
mod truncate;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use t4_core::log::Entry;
use t4_core::wal::{
    decode_segment, encode_entries, entry_payload_len, ReplayPlan, SegmentHeader,
    FRAME_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use t4_core::{Index, Term};

pub use error::WalError;
use files::{create_segment, io_error, list_segments, open_for_write, sync_dir, SegmentFile};
use recover::read_segments;

/// The encode buffer is reused across appends; one that grew beyond this
/// (a huge batch) is dropped afterwards rather than kept for good.
const ENCODE_BUFFER_BYTES_KEEP_MAX: usize = 8 << 20;

/// How far ahead of its frames the current segment is filled with zeros
/// (see the module docs). One extension costs one write of this size and
/// one fdatasync that commits the new length, every 1 MiB of log.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// A write-ahead log in one directory. See the module docs for the contract.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// Written into the header of every segment this `Wal` creates.
    term: Term,
    /// A segment this long is sealed before the next append.
    segment_bytes_max: u64,
    /// Segments on disk, oldest first. The last one is the current segment
    /// (unless `stale`). Contiguous: each starts where the previous ends.
    segments: VecDeque<SegmentFile>,
    /// The last segment, open for appending; `None` before the first append
    /// creates one, or while `stale`.
    current: Option<Current>,
    /// The index the next append must start with.
    next_index: Index,
    /// Term of the last entry (terms never decrease along the log).
    last_term: Term,
    /// The segments on disk all end before `next_index - 1`: the next append
    /// removes them before starting a segment at `next_index`.
    stale: bool,
    /// Appended since the last sync.
    unsynced: bool,
    /// Set by a failed write or sync: the file the failure happened on.
    poisoned: Option<PathBuf>,
    /// Frames of the batch being appended (one write call per batch).
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Current {
    file: File,
    path: PathBuf,
    /// Header plus frames written: where the next frame goes.
    bytes: u64,
    /// Length of the file: `bytes` plus preallocated zeros.
    allocated: u64,
}

impl Current {
    /// Makes the file at least `needed` bytes long, extending it with zeros
    /// by at least [`PREALLOCATE_BYTES`].
    fn preallocate(&mut self, needed: u64) -> std::io::Result<()> {
        if needed <= self.allocated {
            return Ok(());
        }
        let target = needed.max(self.allocated + PREALLOCATE_BYTES);
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = self.allocated;
        while at < target {
            let n = usize::try_from((target - at).min(ZEROS.len() as u64)).expect("<= 64 KiB");
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        self.allocated = target;
        Ok(())
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` and returns it with every entry at
    /// index `>= from`, in order.
    ///
    /// Reads every segment and checks it (`t4_core::wal::ReplayPlanner`:
    /// each decodes, its name matches its header, segments are contiguous,
    /// terms do not go down). A torn tail of the last segment is truncated
    /// (and fsynced) with a warning naming the file and offset, zero padding
    /// in any segment quietly; anything else wrong is refused, and a refused
    /// open truncates nothing.
    ///
    /// `term` goes into the headers of segments this `Wal` creates.
    ///
    /// # Errors
    /// [`WalError::Corrupt`] (file and byte offset), [`WalError::Behind`] when
    /// `from` is below the oldest segment, [`WalError::UnexpectedFile`],
    /// [`WalError::Io`].
    ///
    /// # Panics
    /// `from` is 0 (indexes start at 1) or `segment_bytes_max` is 0.
    pub fn open(
        dir: &Path,
        from: Index,
        term: Term,
        segment_bytes_max: u64,
    ) -> Result<(Wal, Vec<Entry>), WalError> {
        assert!(
            from.0 >= 1,
            "WAL open: `from` must be >= 1 (indexes start at 1), got {from}"
        );
        assert!(
            segment_bytes_max > 0,
            "WAL open: segment_bytes_max must be > 0"
        );
        create_dir(dir)?;
        let segments = list_segments(dir)?;

        // Checks every segment and performs the plan's cuts.
        let plan = read_segments(dir, &segments, from)?;
        let stale = plan.is_stale(from);
        let ReplayPlan {
            entries,
            next,
            last_term,
            cuts: _,
            last_len,
        } = plan;

        let mut wal = Wal {
            dir: dir.to_path_buf(),
            term,
            segment_bytes_max,
            segments: segments.into(),
            current: None,
            next_index: from,
            last_term,
            stale: false,
            unsynced: false,
            poisoned: None,
            buf: Vec::new(),
        };
        if stale {
            // Everything on disk is below `from` and already in the engine.
            wal.stale = true;
            wal.last_term = Term(0);
        } else if let Some(next) = next {
            let newest = wal
                .segments
                .back()
                .expect("`next` is known: segments exist");
            let file = open_for_write(&newest.path)?;
            wal.current = Some(Current {
                file,
                path: newest.path.clone(),
                bytes: last_len,
                allocated: last_len,
            });
            wal.next_index = next;
        }
        Ok((wal, entries))
    }

    /// Appends a batch (without syncing it) and returns the bytes written.
    ///
    /// The frames are encoded into one buffer and written with one call. If
    /// the current segment has reached `segment_bytes_max`, it is sealed
    /// first: fdatasynced, then a new segment named by the batch's first
    /// index is created durably. An empty batch does nothing.
    ///
    /// # Errors
    /// [`WalError::EntryTooLarge`] (nothing written, the `Wal` stays usable);
    /// [`WalError::Io`] (the `Wal` is then poisoned); [`WalError::Poisoned`].
    ///
    /// # Panics
    /// The batch does not continue the log: its indexes must be
    /// `last_index() + 1, +2, …` and its terms must not decrease.
    pub fn append(&mut self, entries: &[Entry]) -> Result<u64, WalError> {
        self.check_usable()?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut term = self.last_term;
        for (i, entry) in entries.iter().enumerate() {
            let expected = self.next_index.0 + i as u64;
            assert_eq!(
                entry.index, expected,
                "WAL append must continue the log: batch entry {i} has index {}, expected {expected}",
                entry.index
            );
            assert!(
                entry.term >= term.0,
                "WAL append: entry {} has term {}, below the previous entry's term {term}",
                entry.index,
                entry.term
            );
            term = Term(entry.term);
            let bytes = entry_payload_len(entry);
            if bytes > FRAME_PAYLOAD_BYTES_MAX as usize {
                return Err(WalError::EntryTooLarge {
                    index: entry.index_id(),
                    bytes,
                    bytes_max: FRAME_PAYLOAD_BYTES_MAX,
                });
            }
        }
        self.buf.clear();
        let written = encode_entries(entries, &mut self.buf);
        self.prepare_current()?;
        let current = self
            .current
            .as_mut()
            .expect("prepare_current leaves a current segment");
        let end = current.bytes + written as u64;
        let result = current
            .preallocate(end)
            .and_then(|()| current.file.write_all_at(&self.buf, current.bytes));
        if let Err(source) = result {
            self.poisoned = Some(current.path.clone());
            return Err(WalError::Io {
                path: current.path.clone(),
                source,
            });
        }
        current.bytes += written as u64;
        self.next_index = Index(self.next_index.0 + entries.len() as u64);
        self.last_term = term;
        self.unsynced = true;
        if self.buf.capacity() > ENCODE_BUFFER_BYTES_KEEP_MAX {
            self.buf = Vec::new();
        }
        Ok(written as u64)
    }

    /// Makes every append so far durable (fdatasync of the current segment;
    /// sealed segments were synced when sealed). One sync covers all appends
    /// since the previous one: group commit is the caller's choice. A sync
    /// with nothing appended does nothing.
    ///
    /// # Errors
    /// [`WalError::Io`] (the `Wal` is then poisoned: a failed fsync may have
    /// dropped the data, and a retry could falsely succeed); [`WalError::Poisoned`].
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if !self.unsynced {
            return Ok(());
        }
        let current = self
            .current
            .as_ref()
            .expect("appends since the last sync imply a current segment");
        if let Err(source) = current.file.sync_data() {
            self.poisoned = Some(current.path.clone());
            return Err(WalError::Io {
                path: current.path.clone(),
                source,
            });
        }
        self.unsynced = false;
        Ok(())
    }

    /// Deletes the oldest segments whose entries are all below `index` (the
    /// engine has them durably), oldest first so a crash part-way leaves a
    /// contiguous log, then fsyncs the directory. Never deletes the last
    /// (current) segment. Returns how many were deleted.
    ///
    /// # Errors
    /// [`WalError::Io`]; segments already deleted stay deleted.
    pub fn remove_segments_before(&mut self, index: Index) -> Result<usize, WalError> {
        let mut removed = 0;
        // Segment 0 holds indexes below segment 1's first index.
        while self.segments.len() >= 2 && self.segments[1].first_index <= index {
            let oldest = self.segments.front().expect("len >= 2");
            fs::remove_file(&oldest.path).map_err(io_error(&oldest.path))?;
            tracing::debug!(file = %oldest.path.display(), "WAL: removed segment");
            self.segments.pop_front();
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Deletes every segment and makes `next` the index of the next append
    /// (a new segment with `term` in its header starts there). For a
    /// bucket-mode start-up, which replayed the log from the bucket: the
    /// caller has persisted the engine through `next - 1`, so no local entry
    /// is needed any more, and the local tail may hold entries the bucket
    /// overruled.
    ///
    /// # Errors
    /// [`WalError::Io`] (the `Wal` is then poisoned); [`WalError::Poisoned`].
    pub fn reset(&mut self, next: Index, term: Term) -> Result<(), WalError> {
        self.check_usable()?;
        assert!(next.0 >= 1, "WAL reset: indexes start at 1");
        self.current = None;
        while let Some(old) = self.segments.pop_front() {
            if let Err(e) = fs::remove_file(&old.path) {
                self.poisoned = Some(old.path.clone());
                return Err(io_error(&old.path)(e));
            }
        }
        sync_dir(&self.dir)?;
        self.next_index = next;
        self.last_term = Term(0);
        self.stale = false;
        self.unsynced = false;
        self.set_term(term);
        tracing::info!(
            next = next.0,
            "WAL: reset (the log continues from the bucket)"
        );
        Ok(())
    }

    /// Reads the entries `from..=through` back from the segment files, in
    /// order: for a bucket-mode start-up with asynchronous upload, entries
    /// the engine applied that the bucket lacks (the core's
    /// `Action::ReadWal`). Reads only the segments that can hold them,
    /// one file at a time, including segments wholly below the `from` the
    /// WAL was opened with (they stay until the next append or trim).
    /// Appends not yet synced are not this method's business: call it
    /// before appending.
    ///
    /// # Errors
    /// [`WalError::Behind`] when the oldest segment starts after `from`,
    /// [`WalError::EndsBefore`] when the segments end before `through`,
    /// [`WalError::Corrupt`], [`WalError::Io`].
    ///
    /// # Panics
    /// `from` is 0 or after `through`.
    pub fn read_range(&self, from: Index, through: Index) -> Result<Vec<Entry>, WalError> {
        assert!(
            from.0 >= 1 && from <= through,
            "WAL read_range: bad range {from}..={through}"
        );
        let behind = |first| WalError::Behind {
            dir: self.dir.clone(),
            from,
            first,
        };
        let oldest = self
            .segments
            .front()
            .ok_or_else(|| behind(self.next_index))?;
        if oldest.first_index > from {
            return Err(behind(oldest.first_index));
        }
        let mut entries = Vec::new();
        let count = self.segments.len();
        for (i, segment) in self.segments.iter().enumerate() {
            // Segment i holds indexes below segment i + 1's first index.
            let next_first = self.segments.get(i + 1).map(|s| s.first_index);
            if next_first.is_some_and(|n| n <= from) {
                continue;
            }
            if segment.first_index > through {
                break;
            }
            let bytes = fs::read(&segment.path).map_err(io_error(&segment.path))?;
            // The newest may end in preallocated zeros: a tail, not damage.
            let decoded =
                decode_segment(&bytes, i + 1 == count).map_err(|e| WalError::Corrupt {
                    path: segment.path.clone(),
                    offset: e.offset(),
                    reason: e.reason(),
                })?;
            entries.extend(
                decoded
                    .entries
                    .into_iter()
                    .filter(|e| (from.0..=through.0).contains(&e.index)),
            );
        }
        let last = entries.last().map_or(Index(from.0 - 1), Entry::index_id);
        if last < through {
            return Err(WalError::EndsBefore {
                dir: self.dir.clone(),
                through,
                last,
            });
        }
        debug_assert!(
            entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == from.0 + i as u64),
            "segments are contiguous (checked on open)"
        );
        Ok(entries)
    }

    /// Index of the last entry: the next append must start at
    /// `last_index() + 1`. When the WAL held nothing at or after `from` on
    /// open, this is `from - 1`.
    #[must_use]
    pub fn last_index(&self) -> Index {
        Index(self.next_index.0 - 1)
    }

    /// Number of segment files.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Sets the term written into the headers of segments created from now on.
    ///
    /// # Panics
    /// `term` is below the current one (terms never go back).
    pub fn set_term(&mut self, term: Term) {
        assert!(
            term >= self.term,
            "WAL term must not decrease: {} -> {term}",
            self.term
        );
        self.term = term;
    }

    fn check_usable(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(path) => Err(WalError::Poisoned { path: path.clone() }),
            None => Ok(()),
        }
    }

    /// Makes sure a current segment with room exists: drops stale segments,
    /// seals a full one, creates the next. Poisons the `Wal` on failure.
    fn prepare_current(&mut self) -> Result<(), WalError> {
        let result = self.prepare_current_inner();
        if let Err(WalError::Io { path, .. }) = &result {
            self.poisoned = Some(path.clone());
        }
        result
    }

    fn prepare_current_inner(&mut self) -> Result<(), WalError> {
        if self.stale {
            assert!(self.current.is_none(), "a stale WAL has no current segment");
            while let Some(old) = self.segments.front() {
                tracing::info!(
                    file = %old.path.display(),
                    next_index = self.next_index.0,
                    "WAL: removing a segment wholly below the engine's applied index"
                );
                fs::remove_file(&old.path).map_err(io_error(&old.path))?;
                self.segments.pop_front();
            }
            sync_dir(&self.dir)?;
            self.stale = false;
        }
        if let Some(current) = &self.current {
            let full = current.bytes >= self.segment_bytes_max;
            let has_entries = current.bytes > SEGMENT_HEADER_BYTES as u64;
            if !(full && has_entries) {
                return Ok(());
            }
            // Seal: cut the preallocated zeros, make frames and length durable.
            current
                .file
                .set_len(current.bytes)
                .and_then(|()| current.file.sync_all())
                .map_err(io_error(&current.path))?;
            self.current = None;
            self.unsynced = false;
        }
        let header = SegmentHeader {
            term: self.term,
            first_index: self.next_index,
        };
        let (file, path) = create_segment(&self.dir, header)?;
        if let Some(previous) = self.segments.back() {
            assert!(
                previous.first_index < self.next_index,
                "new segment {} must start after the previous one {}",
                self.next_index,
                previous.first_index
            );
        }
        self.segments.push_back(SegmentFile {
            first_index: self.next_index,
            path: path.clone(),
        });
        self.current = Some(Current {
            file,
            path,
            bytes: SEGMENT_HEADER_BYTES as u64,
            allocated: SEGMENT_HEADER_BYTES as u64,
        });
        Ok(())
    }
}

impl Drop for Wal {
    /// Cuts the current segment's preallocated zeros (best effort, not
    /// synced: after a crash, recovery cuts them instead), so a cleanly
    /// closed WAL leaves files that end with their last frame.
    fn drop(&mut self) {
        if let Some(current) = &self.current {
            if current.allocated > current.bytes {
                if let Err(error) = current.file.set_len(current.bytes) {
                    tracing::debug!(file = %current.path.display(), %error, "WAL: could not cut preallocated space");
                }
            }
        }
    }
}

/// Creates `dir` if missing, and makes its creation durable.
fn create_dir(dir: &Path) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(parent)
}
