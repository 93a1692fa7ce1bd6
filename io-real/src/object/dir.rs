//! The directory store: a local folder acting as a bucket.
//!
//! It backs the embedded default (no S3 configured) and tests without S3,
//! and may be shared by several t4 processes at once, so it implements the
//! store contract for real: atomic puts, conditional puts with at most one
//! winner (also between processes), byte-ordered listing.
//!
//! # Layout
//!
//! A key's components become nested folders: every component but the last
//! gets the suffix `.d` (a folder), the last one `.o` (a file). Keys where
//! one is a "directory" of the other coexist without a clash:
//!
//! ```text
//! wal/00000000000000000001    →  <root>/wal.d/00000000000000000001.o
//! nest/a/b                    →  <root>/nest.d/a.d/b.o
//! nest/a/b/c                  →  <root>/nest.d/a.d/b.d/c.o
//! <root>/.t4-lock                 the lock file (never listed)
//! <root>/.t4-tmp/<random>.tmp     puts being written (never listed)
//! ```
//!
//! Names without one of the two suffixes (temp files, the lock, anything
//! else in the folder) are ignored by listings. A component may be at most
//! [`DIR_KEY_COMPONENT_BYTES_MAX`] bytes (file-name limits); longer ones are refused
//! as [`ObjectError::InvalidKey`]. On a case-insensitive file system keys
//! that differ only in case would collide; t4's keys never do.
//!
//! # Object files and ETags
//!
//! Each `.o` file is a 32-byte header followed by the body:
//!
//! ```text
//! 0..8    magic b"t4obj\0\0\x01"
//! 8..16   write id (u64 LE, random per put)
//! 16..20  CRC32C of the body (u32 LE)
//! 20..24  zero
//! 24..32  body length in bytes (u64 LE)
//! ```
//!
//! The ETag is `"<write id>-<crc32c>"` in hex. Listing reads 32 bytes per
//! object (no hashing); every put gets a new write id, so even rewriting the
//! same bytes changes the ETag (as in `MemBucket`), and a get verifies
//! length and checksum.
//!
//! # Atomicity and conditions
//!
//! A put writes the header and body to a temp file in `.t4-tmp/`, fsyncs it,
//! then takes the store-wide lock (a mutex within the process plus `flock`
//! on `.t4-lock` between processes and between two `DirStore`s in one
//! process), checks the condition against the current file, creates missing
//! folders, renames the temp file over the key's file, fsyncs the folders
//! whose entries changed, and releases the lock. Deletes take the lock too
//! and remove folders they leave empty. Gets and lists take no lock: a
//! rename replaces a file atomically, so they see the old or the new object,
//! never a mix.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use t4_core::object::{
    validate_key, validate_list, ETag, ObjectError, ObjectInfo, ObjectOp, ObjectReply,
    ObjectResult, PutCondition,
};

use super::ObjectStore;

/// The longest key component this store accepts, in bytes (a file name is
/// the component plus a 2-byte suffix; file systems allow 255).
pub const DIR_KEY_COMPONENT_BYTES_MAX: usize = 250;

const OBJECT_SUFFIX: &str = ".o";
const DIR_SUFFIX: &str = ".d";
const TMP_DIR: &str = ".t4-tmp";
const LOCK_FILE: &str = ".t4-lock";
const HEADER_BYTES: usize = 32;
const MAGIC: &[u8; 8] = b"t4obj\0\0\x01";
/// Temp files older than this are left over from a crash and removed when a
/// store opens (a live put finishes its temp file in far less).
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// A local folder acting as a bucket (see the module docs).
#[derive(Clone, Debug)]
pub struct DirStore {
    dir: Arc<Dir>,
}

#[derive(Debug)]
struct Dir {
    root: PathBuf,
    tmp: PathBuf,
    /// The open lock file. The mutex makes one thread of this store the
    /// `flock` holder (a lock belongs to the open file, not to a thread).
    lock: Mutex<File>,
}

impl DirStore {
    /// Opens (creating if needed) the folder `root` as a store, and removes
    /// temp files a crash left there.
    ///
    /// # Errors
    /// The folder, its temp folder or its lock file cannot be created.
    pub fn open(root: impl AsRef<Path>) -> io::Result<DirStore> {
        let root = std::path::absolute(root.as_ref())?;
        fs::create_dir_all(&root)?;
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join(LOCK_FILE))?;
        remove_stale_temps(&tmp);
        Ok(DirStore {
            dir: Arc::new(Dir {
                root,
                tmp,
                lock: Mutex::new(lock),
            }),
        })
    }

    /// The folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.dir.root
    }
}

impl ObjectStore for DirStore {
    fn execute(&self, op: ObjectOp) -> BoxFuture<'_, ObjectResult> {
        if let Err(invalid) = check_request(&op) {
            return Box::pin(std::future::ready(Err(invalid)));
        }
        let dir = Arc::clone(&self.dir);
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || dir.run(op)).await {
                Ok(result) => result,
                Err(e) => Err(ObjectError::Failed(format!(
                    "directory store operation did not finish: {e}"
                ))),
            }
        })
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.dir.root.display())
    }
}

/// The contract's key rules plus this store's component length limit.
fn check_request(op: &ObjectOp) -> Result<(), ObjectError> {
    match op {
        ObjectOp::Get { key } | ObjectOp::Put { key, .. } | ObjectOp::Delete { key } => {
            validate_key(key)?;
            if let Some(long) = key
                .split('/')
                .find(|c| c.len() > DIR_KEY_COMPONENT_BYTES_MAX)
            {
                return Err(ObjectError::InvalidKey(format!(
                    "{key:?}: component of {} bytes; the directory store allows at most {DIR_KEY_COMPONENT_BYTES_MAX}",
                    long.len()
                )));
            }
            Ok(())
        }
        ObjectOp::List {
            prefix, max_keys, ..
        } => validate_list(prefix, *max_keys),
    }
}

/// An object file's header (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    write_id: u64,
    crc32c: u32,
    body_bytes: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        out[8..16].copy_from_slice(&self.write_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.crc32c.to_le_bytes());
        out[24..32].copy_from_slice(&self.body_bytes.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Header, String> {
        let Some(header) = bytes.get(..HEADER_BYTES) else {
            return Err(format!("{} bytes, shorter than the header", bytes.len()));
        };
        if &header[0..8] != MAGIC {
            return Err("not a t4 object file (bad magic)".to_owned());
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        Ok(Header {
            write_id: u64_at(8),
            crc32c: u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")),
            body_bytes: u64_at(24),
        })
    }

    fn etag(&self) -> ETag {
        ETag(format!("\"{:016x}-{:08x}\"", self.write_id, self.crc32c))
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// A file-system error as an outcome. Local file systems answer; a retry
/// helps only with interruptions.
fn io_error(what: &str, path: &Path, e: &io::Error) -> ObjectError {
    let message = format!("{what} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ObjectError::Retryable(message)
        }
        _ => ObjectError::Failed(message),
    }
}

fn corrupt(path: &Path, why: &str) -> ObjectError {
    ObjectError::Failed(format!("corrupt object file {}: {why}", path.display()))
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Removes `.t4-tmp` files older than [`STALE_TMP_AGE`]; best effort.
fn remove_stale_temps(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_TMP_AGE);
        if old {
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::debug!(path = %entry.path().display(), "cannot remove a stale temp file: {e}");
            }
        }
    }
}

/// A temp file that is removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The store-wide lock; released on drop.
struct Locked<'a> {
    file: MutexGuard<'a, File>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too, but the file stays open.
        let _ = rustix::fs::flock(&*self.file, rustix::fs::FlockOperation::Unlock);
    }
}

/// Whether a directory entry name (without its suffix) is a component this
/// store could have written.
fn is_component(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.len() <= DIR_KEY_COMPONENT_BYTES_MAX
        && c.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'/')
}

impl Dir {
    fn run(&self, op: ObjectOp) -> ObjectResult {
        match op {
            ObjectOp::Get { key } => self.get(&key),
            ObjectOp::Put {
                key,
                body,
                condition,
            } => self.put(&key, &body, &condition),
            ObjectOp::Delete { key } => self.delete(&key),
            ObjectOp::List {
                prefix,
                start_after,
                max_keys,
            } => self.list(&prefix, start_after.as_deref(), max_keys),
        }
    }

    /// `<root>/a.d/b.d/c.o` for `a/b/c` (the key is valid).
    fn object_path(&self, key: &str) -> PathBuf {
        let mut path = self.root.clone();
        let mut parts = key.split('/').peekable();
        while let Some(part) = parts.next() {
            let suffix = if parts.peek().is_some() {
                DIR_SUFFIX
            } else {
                OBJECT_SUFFIX
            };
            path.push(format!("{part}{suffix}"));
        }
        path
    }

    fn lock(&self) -> Result<Locked<'_>, ObjectError> {
        // A thread that panicked while holding the mutex released the flock
        // when its `Locked` was dropped during unwinding.
        let file = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match rustix::fs::flock(&*file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(Locked { file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(io_error(
                        "lock",
                        &self.root.join(LOCK_FILE),
                        &io::Error::from(e),
                    ))
                }
            }
        }
    }

    /// The header of the object at `path`, if there is one.
    fn read_header(path: &Path) -> Result<Option<(Header, u64)>, ObjectError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(io_error("open", path, &e)),
        };
        let file_bytes = file
            .metadata()
            .map_err(|e| io_error("stat", path, &e))?
            .len();
        let mut raw = [0u8; HEADER_BYTES];
        match file.read_exact(&mut raw) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(corrupt(
                    path,
                    &format!("{file_bytes} bytes, shorter than the header"),
                ))
            }
            Err(e) => return Err(io_error("read", path, &e)),
        }
        let header = Header::decode(&raw).map_err(|why| corrupt(path, &why))?;
        let body_bytes = file_bytes - HEADER_BYTES as u64;
        if header.body_bytes != body_bytes {
            return Err(corrupt(
                path,
                &format!(
                    "header says {} body bytes, file has {body_bytes}",
                    header.body_bytes
                ),
            ));
        }
        Ok(Some((header, body_bytes)))
    }

    fn get(&self, key: &str) -> ObjectResult {
        let path = self.object_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if is_not_found(&e) => return Err(ObjectError::NotFound),
            Err(e) => return Err(io_error("read", &path, &e)),
        };
        let header = Header::decode(&bytes).map_err(|why| corrupt(&path, &why))?;
        let body = Bytes::from(bytes).slice(HEADER_BYTES..);
        if header.body_bytes != body.len() as u64 {
            return Err(corrupt(
                &path,
                &format!(
                    "header says {} body bytes, file has {}",
                    header.body_bytes,
                    body.len()
                ),
            ));
        }
        if crc32c::crc32c(&body) != header.crc32c {
            return Err(corrupt(&path, "body checksum mismatch"));
        }
        Ok(ObjectReply::Got {
            body,
            etag: header.etag(),
        })
    }

    /// Whether `condition` allows a put over the object at `path` now.
    fn check_condition(path: &Path, condition: &PutCondition) -> Result<(), ObjectError> {
        if *condition == PutCondition::None {
            return Ok(());
        }
        let current = Dir::read_header(path)?.map(|(header, _)| header.etag());
        match (condition, current) {
            (PutCondition::None, _) | (PutCondition::IfAbsent, None) => Ok(()),
            (PutCondition::IfAbsent, Some(_)) => Err(ObjectError::PreconditionFailed),
            (PutCondition::IfMatch(_), None) => Err(ObjectError::NotFound),
            (PutCondition::IfMatch(want), Some(have)) if *want == have => Ok(()),
            (PutCondition::IfMatch(_), Some(_)) => Err(ObjectError::PreconditionFailed),
        }
    }

    fn put(&self, key: &str, body: &Bytes, condition: &PutCondition) -> ObjectResult {
        let path = self.object_path(key);
        // Fail fast (no multi-MB temp file) when the condition already
        // fails; checked again under the lock.
        Dir::check_condition(&path, condition)?;

        let header = Header {
            write_id: fastrand::u64(..),
            crc32c: crc32c::crc32c(body),
            body_bytes: body.len() as u64,
        };
        let mut temp = TempFile {
            path: self.tmp.join(format!("{:016x}.tmp", header.write_id)),
            armed: true,
        };
        let write = |temp: &Path| -> io::Result<()> {
            let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
            file.write_all(&header.encode())?;
            file.write_all(body)?;
            file.sync_data()
        };
        write(&temp.path).map_err(|e| io_error("write", &temp.path, &e))?;

        let _locked = self.lock()?;
        Dir::check_condition(&path, condition)?;
        let changed_dirs = self.create_parents(&path)?;
        fs::rename(&temp.path, &path).map_err(|e| io_error("rename into", &path, &e))?;
        temp.armed = false;
        for dir in changed_dirs {
            fsync_dir(&dir).map_err(|e| io_error("fsync", &dir, &e))?;
        }
        Ok(ObjectReply::Put {
            etag: header.etag(),
        })
    }

    /// Creates the missing folders above `path` (the lock is held) and
    /// returns every folder whose entries this put changes: the object's
    /// folder and the parents of folders created now.
    fn create_parents(&self, path: &Path) -> Result<Vec<PathBuf>, ObjectError> {
        let parent = path.parent().expect("an object path is below the root");
        let relative = parent
            .strip_prefix(&self.root)
            .expect("an object path is below the root");
        let mut changed = vec![parent.to_path_buf()];
        let mut dir = self.root.clone();
        for component in relative.components() {
            let next = dir.join(component);
            match fs::create_dir(&next) {
                Ok(()) => changed.push(dir.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create folder", &next, &e)),
            }
            dir = next;
        }
        Ok(changed)
    }

    fn delete(&self, key: &str) -> ObjectResult {
        let path = self.object_path(key);
        let _locked = self.lock()?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(ObjectReply::Deleted),
            Err(e) => return Err(io_error("delete", &path, &e)),
        }
        // Remove the folders this delete emptied, so deleted prefixes cost
        // listings nothing. Puts create folders under the lock, so none can
        // be filling one of these concurrently.
        let mut dir = path.parent().expect("an object path is below the root");
        while dir != self.root && fs::remove_dir(dir).is_ok() {
            dir = dir.parent().expect("a folder below the root");
        }
        fsync_dir(dir).map_err(|e| io_error("fsync", dir, &e))?;
        Ok(ObjectReply::Deleted)
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> ObjectResult {
        let mut walk = Walk {
            prefix,
            start_after,
            // One more than asked, to know whether more follow.
            want: max_keys + 1,
            found: Vec::with_capacity(max_keys.min(64) + 1),
        };
        walk.dir(&self.root, "")?;
        let truncated = walk.found.len() > max_keys;
        walk.found.truncate(max_keys);
        Ok(ObjectReply::Listed {
            objects: walk.found,
            truncated,
        })
    }
}

/// A listing in progress: a depth-first walk that visits each folder's
/// entries in key byte order.
///
/// Within a folder, an object `c` sorts as the string `c` and a folder `c` as
/// `c/` (every key below it starts with that, and the keys sharing a prefix
/// are contiguous in byte order), so sorting by those strings and descending
/// into folders in place yields keys in global byte order.
struct Walk<'a> {
    prefix: &'a str,
    start_after: Option<&'a str>,
    want: usize,
    found: Vec<ObjectInfo>,
}

/// Whether the walk goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Walk<'_> {
    /// Past every key with the prefix (so everything after is, too).
    fn beyond_prefix(&self, key: &str) -> bool {
        key > self.prefix && !key.starts_with(self.prefix)
    }

    fn dir(&mut self, path: &Path, key_prefix: &str) -> Result<Flow, ObjectError> {
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            // Removed by a concurrent delete: no keys there.
            Err(e) if is_not_found(&e) => return Ok(Flow::Continue),
            Err(e) => return Err(io_error("list", path, &e)),
        };
        let mut children: Vec<(String, bool)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", path, &e))?;
            let name = entry.file_name();
            let Some(name) = OsStr::to_str(&name) else {
                continue;
            };
            if let Some(c) = name.strip_suffix(OBJECT_SUFFIX).filter(|c| is_component(c)) {
                children.push((format!("{key_prefix}{c}"), false));
            } else if let Some(c) = name.strip_suffix(DIR_SUFFIX).filter(|c| is_component(c)) {
                children.push((format!("{key_prefix}{c}/"), true));
            }
        }
        children.sort_unstable();
        for (key, is_dir) in children {
            if self.found.len() >= self.want || self.beyond_prefix(&key) {
                return Ok(Flow::Stop);
            }
            let name = &key[key_prefix.len()..];
            if is_dir {
                // `key` is `…/c/`; every key below it starts with it.
                let related = key.starts_with(self.prefix) || self.prefix.starts_with(key.as_str());
                let all_before_start = self
                    .start_after
                    .is_some_and(|after| after >= key.as_str() && !after.starts_with(key.as_str()));
                if related && !all_before_start {
                    let folder = path.join(format!("{}{DIR_SUFFIX}", &name[..name.len() - 1]));
                    if self.dir(&folder, &key)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
            } else if key.starts_with(self.prefix)
                && self.start_after.is_none_or(|after| key.as_str() > after)
            {
                let file = path.join(format!("{name}{OBJECT_SUFFIX}"));
                // Gone since the folder was read: deleted concurrently.
                if let Some((header, size_bytes)) = Dir::read_header(&file)? {
                    self.found.push(ObjectInfo {
                        key,
                        size_bytes,
                        etag: header.etag(),
                    });
                }
            }
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folder and file names never collide and map back to the key.
    #[test]
    fn layout() {
        let dir = Dir {
            root: PathBuf::from("/r"),
            tmp: PathBuf::from("/r/.t4-tmp"),
            lock: Mutex::new(File::open("/dev/null").expect("open /dev/null")),
        };
        assert_eq!(dir.object_path("a"), Path::new("/r/a.o"));
        assert_eq!(dir.object_path("a/b/c"), Path::new("/r/a.d/b.d/c.o"));
        assert_eq!(dir.object_path("x.d/y.o"), Path::new("/r/x.d.d/y.o.o"));
        let h = Header {
            write_id: 0x0123_4567_89ab_cdef,
            crc32c: 0xdead_beef,
            body_bytes: 7,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        assert_eq!(h.etag().0, "\"0123456789abcdef-deadbeef\"");
        assert!(Header::decode(b"short").is_err());
        assert!(Header::decode(&[0u8; 32]).is_err());
    }
}
