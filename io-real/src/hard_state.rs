//! The hard state: a few bytes a node must not forget across a crash (in
//! cluster mode, the highest term it promised a leader, recorded before it
//! answers that leader's Prepare). Core encodes them; to this module they
//! are opaque.
//!
//! # File
//!
//! One file, `hard_state`, in the directory the caller names:
//!
//! ```text
//! magic "T4HARD\0\n" (8) | crc32c u32 LE over the payload | payload
//! ```
//!
//! [`save`] replaces it atomically: the new contents go to `hard_state.tmp`,
//! which is fsynced, renamed over `hard_state`, and the directory fsynced.
//! After a crash at any point the file holds either the old contents or the
//! new, whole; once `save` returns, the new ones. The CRC is for what the
//! rename cannot rule out — a damaged disk block: a forgotten promise lets
//! a node vote twice in one term, so [`load`] refuses a damaged file
//! instead of reading it as something else.
//!
//! A leftover `hard_state.tmp` is a save that never reached its rename (so
//! never returned): [`load`] removes it and ignores what it held.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;

/// The file holding the hard state.
pub const FILE_NAME: &str = "hard_state";
/// Where [`save`] writes before renaming over [`FILE_NAME`].
const TEMP_NAME: &str = "hard_state.tmp";
/// First bytes of the file (ends in `\0\n` so that a text-mode transfer or a
/// C-string tool that mangled it is caught).
const MAGIC: [u8; 8] = *b"T4HARD\0\n";
/// Magic and CRC.
const HEADER_BYTES: usize = MAGIC.len() + 4;
/// The hard state is a few numbers; a file larger than this is not ours
/// (and is not read into memory).
pub const PAYLOAD_BYTES_MAX: usize = 64 << 10;

/// Replaces the hard state in `dir` with `bytes`, durably: when this
/// returns, a crash cannot bring back the old contents (see the module docs).
/// `dir` must exist.
///
/// # Errors
/// The file-system error, with the file's path in its message; the old
/// hard state is then still in place (or the new one, if only the final
/// directory fsync failed). An `InvalidInput` error when `bytes` is over
/// [`PAYLOAD_BYTES_MAX`] (nothing written).
pub fn save(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > PAYLOAD_BYTES_MAX {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "hard state of {} bytes is over the bound of {PAYLOAD_BYTES_MAX} bytes",
                bytes.len()
            ),
        ));
    }
    let temp = dir.join(TEMP_NAME);
    let path = dir.join(FILE_NAME);
    let mut contents = Vec::with_capacity(HEADER_BYTES + bytes.len());
    contents.extend_from_slice(&MAGIC);
    contents.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    contents.extend_from_slice(bytes);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(with_path("creating", &temp))?;
        file.write_all(&contents)
            .and_then(|()| file.sync_all())
            .map_err(with_path("writing", &temp))?;
    }
    fs::rename(&temp, &path).map_err(with_path("renaming into place", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(with_path("syncing the directory", dir))
}

/// The hard state last saved in `dir`, or `None` if none was (no file, or
/// no directory). Removes a leftover `hard_state.tmp` (a save that never
/// returned).
///
/// # Errors
/// The file-system error, with the path; an `InvalidData` error when the
/// file is damaged (bad magic, short, over the bound, CRC mismatch): the
/// node must not start as if it had promised nothing.
pub fn load(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    let temp = dir.join(TEMP_NAME);
    match fs::remove_file(&temp) {
        // Not fsynced: should the removal be lost, the next load removes
        // the file again.
        Ok(()) => tracing::info!(file = %temp.display(), "removed an unfinished hard-state save"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(with_path("removing", &temp)(e)),
    }
    let path = dir.join(FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path("opening", &path)(e)),
    };
    let damaged = |what: String| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("hard state file {} is damaged: {what}", path.display()),
        )
    };
    // Read one byte past the bound, to tell "at the bound" from "over it"
    // without reading a stray large file whole.
    let bytes_max = HEADER_BYTES + PAYLOAD_BYTES_MAX;
    let mut contents = Vec::new();
    file.take(bytes_max as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(with_path("reading", &path))?;
    if contents.len() > bytes_max {
        return Err(damaged(format!(
            "more than {bytes_max} bytes, over the bound"
        )));
    }
    let Some((header, payload)) = contents.split_at_checked(HEADER_BYTES) else {
        return Err(damaged(format!(
            "{} bytes, shorter than its {HEADER_BYTES}-byte header",
            contents.len()
        )));
    };
    let (magic, crc) = header.split_at(MAGIC.len());
    if magic != MAGIC.as_slice() {
        return Err(damaged(format!("bad magic {magic:?}")));
    }
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes after the magic"));
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(damaged(format!(
            "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    Ok(Some(payload.to_vec()))
}

/// Adds what was being done and the path to a file-system error, keeping
/// its kind.
fn with_path<'a>(doing: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| {
        io::Error::new(
            e.kind(),
            format!("hard state: {doing} {}: {e}", path.display()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing saved: `load` says so, in an empty directory and a missing one.
    #[test]
    fn load_without_a_save_is_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(tmp.path()).expect("load"), None);
        assert_eq!(load(&tmp.path().join("missing")).expect("load"), None);
    }

    /// What `save` wrote comes back, and a second save replaces it whole
    /// (a shorter one leaves nothing of the longer one behind).
    #[test]
    fn save_then_overwrite_round_trips() {
        let tmp = tempfile::tempdir().expect("tempdir");
        save(tmp.path(), b"term 7, voted for node 2").expect("save");
        assert_eq!(
            load(tmp.path()).expect("load").as_deref(),
            Some(&b"term 7, voted for node 2"[..])
        );
        save(tmp.path(), b"term 9").expect("save");
        assert_eq!(
            load(tmp.path()).expect("load").as_deref(),
            Some(&b"term 9"[..])
        );
        save(tmp.path(), b"").expect("save");
        assert_eq!(
            load(tmp.path()).expect("load").as_deref(),
            Some(&b""[..]),
            "an empty hard state is a saved one, not None"
        );
        let names: Vec<_> = fs::read_dir(tmp.path())
            .expect("read dir")
            .map(|e| e.expect("dirent").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file is left behind");
    }

    /// A crash between writing `hard_state.tmp` and the rename: `load`
    /// returns the previous hard state and removes the leftover.
    #[test]
    fn leftover_temp_file_is_ignored_and_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        save(tmp.path(), b"old").expect("save");
        fs::write(tmp.path().join(TEMP_NAME), b"half a new one").expect("write temp");
        assert_eq!(
            load(tmp.path()).expect("load").as_deref(),
            Some(&b"old"[..])
        );
        assert!(
            !tmp.path().join(TEMP_NAME).exists(),
            "the leftover must be removed"
        );

        let fresh = tempfile::tempdir().expect("tempdir");
        fs::write(fresh.path().join(TEMP_NAME), b"never renamed").expect("write temp");
        assert_eq!(
            load(fresh.path()).expect("load"),
            None,
            "an unfinished first save saved nothing"
        );
    }

    /// A damaged file is refused with `InvalidData` naming the file, never
    /// read as some other hard state.
    #[test]
    fn damaged_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(FILE_NAME);
        save(tmp.path(), b"term 7").expect("save");
        let good = fs::read(&path).expect("read");

        let mut flipped = good.clone();
        *flipped.last_mut().expect("non-empty") ^= 0x01;
        let short = good[..HEADER_BYTES - 1].to_vec();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let oversized = vec![0u8; HEADER_BYTES + PAYLOAD_BYTES_MAX + 1];
        for (what, contents) in [
            ("CRC mismatch", flipped),
            ("shorter than", short),
            ("bad magic", bad_magic),
            ("over the bound", oversized),
        ] {
            fs::write(&path, &contents).expect("write");
            let err = load(tmp.path()).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{what}: {err}");
            let message = err.to_string();
            assert!(message.contains(what), "{what}: {message}");
            assert!(message.contains(FILE_NAME), "names the file: {message}");
        }
    }

    /// An oversized hard state is refused before anything is written.
    #[test]
    fn oversized_save_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        save(tmp.path(), b"kept").expect("save");
        let err = save(tmp.path(), &vec![1u8; PAYLOAD_BYTES_MAX + 1]).expect_err("too large");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert_eq!(
            load(tmp.path()).expect("load").as_deref(),
            Some(&b"kept"[..])
        );
    }

    /// `save` into a directory that does not exist fails, naming the file.
    #[test]
    fn save_into_a_missing_directory_fails() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = save(&tmp.path().join("missing"), b"x").expect_err("no directory");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(TEMP_NAME), "{err}");
    }
}
