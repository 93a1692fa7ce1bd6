//! What the WAL files can fail with. Every message names the file (and, for
//! damaged data, the byte offset), so an operator can go and look.

use std::path::PathBuf;

use t4_core::Index;

/// A WAL failure.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file-system call failed. After a failed write, sync or truncation
    /// the `Wal` is poisoned (see [`WalError::Poisoned`]).
    #[error("WAL I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Damaged or inconsistent data that cannot be a torn tail: a bad frame in
    /// a sealed segment or before a valid frame, a bad header, a segment whose
    /// name disagrees with its header, a gap or overlap between segments.
    /// Nothing was skipped or truncated; the node must not start on this WAL.
    #[error("corrupt WAL segment {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the problem in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The caller asked for entries from `from`, but the oldest segment
    /// starts later: those entries were removed, so this WAL cannot bring the
    /// engine up to date (restore from a checkpoint instead).
    #[error("WAL in {} no longer holds index {from}: its oldest segment starts at index {first}", dir.display())]
    Behind {
        /// The WAL directory.
        dir: PathBuf,
        /// The first index the caller needs.
        from: Index,
        /// The oldest index the WAL holds.
        first: Index,
    },
    /// [`crate::wal::Wal::read_range`] was asked for entries through
    /// `through`, but the segments end at `last`.
    #[error("WAL in {} ends at index {last}, before index {through}", dir.display())]
    EndsBefore {
        /// The WAL directory.
        dir: PathBuf,
        /// The last index asked for.
        through: Index,
        /// The last index the WAL holds in the range (one before the range
        /// when it holds none of it).
        last: Index,
    },
    /// [`crate::wal::Wal::truncate_after`] was asked to keep entries only
    /// through `after`, but the WAL holds entries only from `first` on: the
    /// entries `after + 1 ..= first - 1` were trimmed (the engine has applied
    /// them), so they can no longer be removed. Nothing was changed. A
    /// caller that asks this wants to drop applied entries: a bug above the
    /// WAL, not something to retry.
    #[error(
        "cannot truncate the WAL in {} after index {after}: it holds nothing below index {first} (entries trimmed once applied cannot be removed)",
        dir.display()
    )]
    TruncateBelowFirst {
        /// The WAL directory.
        dir: PathBuf,
        /// The last index the caller wanted to keep.
        after: Index,
        /// The oldest index the WAL holds (or would append next, when it
        /// holds none).
        first: Index,
    },
    /// A `*.wal` file whose name is not a 20-digit index.
    #[error("unexpected file {} in the WAL directory (segments are named <first index, 20 digits>.wal)", path.display())]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
    },
    /// An entry too large for one frame; nothing was written.
    #[error(
        "log entry {index} encodes to {bytes} bytes, over the WAL frame bound of {bytes_max} bytes"
    )]
    EntryTooLarge {
        /// The entry's index.
        index: Index,
        /// Its encoded size.
        bytes: usize,
        /// `t4_core::wal::FRAME_PAYLOAD_BYTES_MAX`.
        bytes_max: u32,
    },
    /// An earlier write or sync failed, so what reached the disk is unknown
    /// (a failed fsync may have dropped dirty pages; retrying it can report
    /// success for data that is gone). The `Wal` refuses further writes;
    /// reopening it re-reads the files and truncates any torn tail.
    #[error("WAL unusable after an earlier I/O error on {}; reopen it to recover", path.display())]
    Poisoned {
        /// The file the failure happened on.
        path: PathBuf,
    },
}
