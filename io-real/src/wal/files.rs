//! Segment file names, directory listing and durable creation.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use t4_core::wal::SegmentHeader;
use t4_core::Index;

use super::error::WalError;

/// Suffix of a segment file.
const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created (renamed to `.wal` once its header is durable).
const TEMP_SUFFIX: &str = ".wal.tmp";
/// Digits in a segment name: enough for any u64, zero-padded so a plain
/// directory listing is in index order.
const NAME_DIGITS: usize = 20;

/// A segment file on disk.
#[derive(Clone, Debug)]
pub(super) struct SegmentFile {
    /// First index, from the file name (checked against the header on open).
    pub(super) first_index: Index,
    pub(super) path: PathBuf,
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `00000000000000000042.wal` for index 42.
pub(super) fn segment_path(dir: &Path, first_index: Index) -> PathBuf {
    dir.join(format!(
        "{:0width$}{SEGMENT_SUFFIX}",
        first_index.0,
        width = NAME_DIGITS
    ))
}

/// The segments in `dir`, oldest first. Removes leftovers of interrupted
/// creations (`*.wal.tmp`: never renamed, so they hold nothing acknowledged).
/// Other files that do not end in `.wal` are left alone.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, WalError> {
    let mut segments = Vec::new();
    let mut removed_temp = false;
    for dirent in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = dirent.map_err(io_error(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(TEMP_SUFFIX) {
            tracing::info!(file = %path.display(), "WAL: removing a segment whose creation was interrupted");
            fs::remove_file(&path).map_err(io_error(&path))?;
            removed_temp = true;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let first_index = (stem.len() == NAME_DIGITS && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<u64>().ok())
            .flatten()
            .filter(|&i| i >= 1)
            .ok_or_else(|| WalError::UnexpectedFile { path: path.clone() })?;
        segments.push(SegmentFile {
            first_index: Index(first_index),
            path,
        });
    }
    if removed_temp {
        sync_dir(dir)?;
    }
    segments.sort_by_key(|s| s.first_index);
    Ok(segments)
}

/// Creates a segment holding just its header, durably: written under a
/// temporary name, fsynced, renamed, then the directory fsynced. So a file
/// with a segment name always has a complete header, and a crash mid-way
/// leaves only a `.tmp` file that the next open removes.
/// Returns the file opened for writing.
pub(super) fn create_segment(
    dir: &Path,
    header: SegmentHeader,
) -> Result<(File, PathBuf), WalError> {
    let path = segment_path(dir, header.first_index);
    let temp = path.with_extension(&TEMP_SUFFIX[1..]);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_error(&temp))?;
        file.write_all(&header.encode()).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
    }
    fs::rename(&temp, &path).map_err(io_error(&path))?;
    sync_dir(dir)?;
    let file = open_for_write(&path)?;
    Ok((file, path))
}

/// Opens an existing segment for writing; the WAL writes at explicit
/// offsets (the file may be longer than its frames: preallocated zeros).
pub(super) fn open_for_write(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))
}

/// Truncates `path` to `len` bytes and makes the new length durable.
pub(super) fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Makes creations, renames and removals in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}
