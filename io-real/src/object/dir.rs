//! The directory store: a local folder acting as a bucket.
//!
//! It backs the embedded default (no S3 configured) and tests without S3,
//! and may be shared by several t4 processes at once, so it implements the
//! store contract for real: atomic puts, conditional puts with at most one
//! winner (also between processes), byte-ordered listing. And it stays
//! live: a process stopped at any point (`SIGSTOP`, a debugger, a VM pause)
//! never blocks another process's creates (on file systems with hard links
//! or `RENAME_NOREPLACE`), and blocks the other operations only on a key it
//! was replacing or deleting at that very moment, and only for a bounded
//! wait per attempt (see
//! [What a stopped process can block](#what-a-stopped-process-can-block)).
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
//! <root>/.t4-tmp/<random>.tmp     puts being written
//! <root>/.t4-locks/<hash>         key locks (see below)
//! <root>/…/<folder>.d/.t4-durable "this folder's entry is on disk"
//! ```
//!
//! Names without one of the two suffixes (temp files, locks, markers, the
//! `.t4-lock` file of earlier versions, anything else in the folder) are
//! ignored by listings. A component may be at most
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
//! length and checksum. A file is never changed once it has its key's name:
//! a put writes a new file and gives it the name.
//!
//! An object file that cannot be read (shorter than its header, bad magic,
//! length not matching the header, no permission) does not fail a listing,
//! as one damaged object would not fail an S3 listing: it is listed with
//! its size on disk and the ETag [`UNREADABLE_ETAG`], which no put returns
//! and no `IfMatch` matches. A get of it (or an `IfMatch` against it) fails
//! with [`ObjectError::Failed`] naming the file and what is wrong; an
//! `IfAbsent` put fails as for any existing object; a plain put or a delete
//! replaces or removes it. A warning is logged for every such file a
//! listing meets.
//!
//! # Writing: which operations lock
//!
//! Every put first writes header and body to a fresh temp file in
//! `.t4-tmp/` and fsyncs it, with no lock held. Then it gives the file the
//! key's name:
//!
//! | operation          | commit                                               | lock             |
//! |--------------------|------------------------------------------------------|------------------|
//! | `IfAbsent` put     | `link(temp, name)`, which fails with `EEXIST` if the name exists | none |
//! | plain put          | the same `link`; if the name exists, `rename(temp, name)` | the key's, for the rename |
//! | `IfMatch` put      | read the current header, compare ETags, `rename(temp, name)` | the key's |
//! | delete             | `unlink(name)` (nothing if it is missing)            | the key's        |
//! | get, list          | read whatever file the name leads to                 | none             |
//!
//! then fsyncs the folder (see [Folders and durability](#folders-and-durability))
//! and removes the temp name. A key's lock is an `flock` on its own file
//! under `.t4-locks/` (module `key_lock`), held only around the check and
//! the rename or unlink — microseconds, no body write, no fsync — and
//! waited for at most [`DirOptions::lock_wait_max`]: an operation that
//! cannot get it in time fails with [`ObjectError::Retryable`] instead of
//! waiting for a holder that may never go on. The retry wrapper
//! (`Retrying`) then retries it within its own attempt budget, and core's
//! protocols treat a final `Retryable` as "may or may not have happened",
//! as for S3.
//!
//! ## Why every pair on one key keeps at most one winner
//!
//! `link`, `rename` and `unlink` each change one name atomically; a
//! `rename` over an existing name never leaves it missing, even for an
//! instant. Readers open the name and see the whole old file, the whole new
//! one, or (only around a delete) nothing.
//!
//! - **create vs create**: the kernel lets exactly one `link` create the
//!   name; the others get `EEXIST` → `PreconditionFailed`.
//! - **create vs delete**: a create succeeds iff the name is missing at its
//!   `link`, so it is ordered after the delete's `unlink` or fails before
//!   it; both orders are valid histories.
//! - **create vs plain put**: the put's own create is the same `link`; its
//!   replacement is a `rename` of an existing name, after which a create
//!   fails; a create that came first is simply replaced.
//! - **create vs `IfMatch`**: an `IfMatch` needs the object at its check,
//!   under the key's lock. Until its `rename`, nobody else may remove the
//!   name (deletes and replacements need the lock), so no create can
//!   succeed in between — the check is still true at the commit.
//! - **`IfMatch` vs `IfMatch`, vs replacement, vs delete**: all hold the
//!   key's lock from check to commit, so they are serialised; a loser sees
//!   the winner's new ETag (`PreconditionFailed`) or no object
//!   (`NotFound`).
//! - **delete vs replacement, delete vs delete**: serialised by the lock;
//!   deletes are idempotent anyway.
//!
//! This is why deletes lock although they check nothing: a delete followed
//! by a create, both inside an `IfMatch`'s check-to-commit window, would
//! let the `IfMatch` overwrite an object it never saw.
//!
//! ## Worked example: a process stopped in the middle of a WAL upload
//!
//! Node A uploads `wal/…0042` (`IfAbsent`); node B takes the bucket over.
//!
//! 1. A writes and fsyncs `.t4-tmp/9f….tmp`. No name in the bucket changed.
//! 2. A `link`s it to `wal.d/…0042.o`. From here the object exists: a get
//!    returns A's bytes, another create of the key fails.
//! 3. A is stopped before it fsyncs `wal.d` and answers.
//!
//! B meanwhile reads `leader-lock`, replaces it with `IfMatch` (taking the
//! lock of `leader-lock`, which A does not hold), lists `wal/`, replays up
//! to …0042 (A's object is complete: it was fsynced before it got its
//! name), and creates its fence object at …0043 with a `link`. Nothing B
//! does waits for A. When A resumes it fsyncs, answers, and its next
//! upload (`IfAbsent` of …0043) fails: A is fenced.
//!
//! ## What a stopped process can block
//!
//! Only the operations that need the lock of a key whose lock it holds,
//! and only for [`DirOptions::lock_wait_max`] per attempt: a process
//! stopped *inside* an `IfMatch`, a replacement or a delete of key `k`
//! makes other processes' `IfMatch`es, replacements and deletes of `k` fail
//! as retryable until it resumes or dies (its locks die with it). Creates,
//! gets, lists and every operation on other keys go on. In t4 that means:
//! a node stopped while swinging `manifest/latest` holds up the next
//! checkpoint pointer, a node stopped inside a gc delete holds up deletes
//! of that one key, and a takeover (an `IfMatch` of `leader-lock`) is held
//! up only by a process stopped inside its own write of `leader-lock`.
//!
//! ## When the file system cannot `link`
//!
//! [`DirStore::open`] probes `.t4-tmp/` once: if hard links work (ext4,
//! XFS, btrfs, tmpfs, ZFS, NFS, overlayfs …) creates use `link`
//! ([`CreateWith::HardLink`]). If the file system refuses them (FAT,
//! exFAT, some FUSE and SMB mounts), Linux's
//! `renameat2(RENAME_NOREPLACE)` gives the same guarantee
//! ([`CreateWith::RenameNoReplace`]). If neither works, creates take the
//! key's lock too and check, then `rename` ([`CreateWith::KeyLock`]), and a
//! process stopped in a create then also blocks creates of that key. A
//! `link` and a `RENAME_NOREPLACE` exclude each other; a locked create
//! excludes neither, so all processes sharing a folder must create the
//! same way. The probe's answer depends only on the file system, which they
//! share; errors other than "not supported" fail the open rather than
//! choose a different way. For the same reason an older t4 (which took one
//! store-wide lock, `.t4-lock`, and created with check + `rename`) must not
//! share a folder with this one.
//!
//! # Folders and durability
//!
//! A put fsyncs its temp file before the file gets a name, and the
//! object's folder before it answers, so an acknowledged object survives a
//! crash. Folders are created with `mkdir` by whichever put needs them and
//! removed with `rmdir` by the delete that empties them, which fails on a
//! folder that is not empty: an object keeps its folders. A `link` or
//! `rename` that finds a folder gone (a delete emptied and removed it just
//! then) creates it again and retries, a bounded number of times.
//!
//! A folder's own entry must be on disk too before a put in it is
//! answered, and the process that created the folder may not have fsynced
//! its parent yet. So every folder below the root holds an empty marker,
//! `.t4-durable`, created only after its parent was fsynced while the
//! parent held a marker itself (or was the root): a marker means the whole
//! path to the root is on disk. A put that finds no marker in its folder
//! fsyncs upwards until it meets one and creates the missing markers on
//! the way down; usually it only checks one. A delete removes a folder's
//! marker before it removes the folder; if a put fills the folder in
//! between, the folder lacks its marker until the next put restores it.

mod key_lock;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use t4_core::object::{
    validate_key, validate_list, ETag, ObjectError, ObjectInfo, ObjectOp, ObjectReply,
    ObjectResult, PutCondition,
};

use self::key_lock::KeyLocks;
use super::ObjectStore;

/// The longest key component this store accepts, in bytes (a file name is
/// the component plus a 2-byte suffix; file systems allow 255).
pub const DIR_KEY_COMPONENT_BYTES_MAX: usize = 250;

/// The ETag listed for an object file that cannot be read (module docs).
/// No put returns it, and an `IfMatch` never matches it.
pub const UNREADABLE_ETAG: &str = "\"unreadable\"";

const OBJECT_SUFFIX: &str = ".o";
const DIR_SUFFIX: &str = ".d";
const TMP_DIR: &str = ".t4-tmp";
const LOCKS_DIR: &str = ".t4-locks";
/// In every folder below the root whose path to the root is on disk.
const DURABLE_MARKER: &str = ".t4-durable";
const HEADER_BYTES: usize = 32;
const MAGIC: &[u8; 8] = b"t4obj\0\0\x01";
/// Temp and lock files older than this are left over from a crash and
/// removed when a store opens (a live put finishes its temp file in far
/// less, and holds a lock for microseconds).
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);
/// How often one put re-creates folders that concurrent deletes keep
/// removing before it gives up (retryably); one retry is already rare.
const FOLDER_RACES_MAX: usize = 16;

/// How creates give a temp file its key's name without a lock (module
/// docs, "When the file system cannot `link`").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateWith {
    /// `link(2)`, then unlink the temp name: POSIX, fails with `EEXIST`.
    HardLink,
    /// `renameat2(RENAME_NOREPLACE)` (Linux): fails with `EEXIST`.
    RenameNoReplace,
    /// Take the key's lock, check that the name is missing, `rename`.
    KeyLock,
}

/// How to open a [`DirStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirOptions {
    /// How long an operation that needs a key's lock (an `IfMatch` put, a
    /// replacement, a delete) waits for a holder before it fails with
    /// [`ObjectError::Retryable`]. A holder keeps it for microseconds, so
    /// this only decides how soon a stopped holder is reported.
    pub lock_wait_max: Duration,
    /// How creates work; `None` (the default) probes the file system, which
    /// is what every process sharing a folder must do. Tests force a way.
    pub create_with: Option<CreateWith>,
}

impl Default for DirOptions {
    fn default() -> DirOptions {
        DirOptions {
            lock_wait_max: Duration::from_secs(2),
            create_with: None,
        }
    }
}

/// A local folder acting as a bucket (see the module docs).
#[derive(Clone, Debug)]
pub struct DirStore {
    dir: Arc<Dir>,
}

#[derive(Debug)]
struct Dir {
    root: PathBuf,
    tmp: PathBuf,
    locks: KeyLocks,
    create_with: CreateWith,
}

impl DirStore {
    /// Opens (creating if needed) the folder `root` as a store with the
    /// default [`DirOptions`], and removes temp and lock files a crash left
    /// there.
    ///
    /// # Errors
    /// The folder or its temp and lock folders cannot be created, or probing
    /// how to create objects failed for another reason than "not supported".
    pub fn open(root: impl AsRef<Path>) -> io::Result<DirStore> {
        DirStore::open_with(root, DirOptions::default())
    }

    /// [`DirStore::open`] with `options`.
    ///
    /// # Errors
    /// As [`DirStore::open`].
    pub fn open_with(root: impl AsRef<Path>, options: DirOptions) -> io::Result<DirStore> {
        let root = std::path::absolute(root.as_ref())?;
        fs::create_dir_all(&root)?;
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp)?;
        let locks_dir = root.join(LOCKS_DIR);
        fs::create_dir_all(&locks_dir)?;
        remove_stale_temps(&tmp);
        let locks = KeyLocks::new(locks_dir, options.lock_wait_max);
        locks.remove_stale(STALE_TMP_AGE);
        let create_with = match options.create_with {
            Some(forced) => forced,
            None => probe_create_with(&tmp)?,
        };
        if create_with == CreateWith::KeyLock {
            tracing::warn!(
                root = %root.display(),
                "directory store: this file system supports neither hard links nor \
                 RENAME_NOREPLACE; creates take the key's lock, so a stopped process \
                 can hold up creates of the key it was creating"
            );
        }
        Ok(DirStore {
            dir: Arc::new(Dir {
                root,
                tmp,
                locks,
                create_with,
            }),
        })
    }

    /// The folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.dir.root
    }

    /// How this store creates objects.
    #[must_use]
    pub fn create_with(&self) -> CreateWith {
        self.dir.create_with
    }

    /// The file whose `flock` guards `key`'s `IfMatch` puts, replacements
    /// and deletes (for tools and tests that need to see or hold it; it
    /// exists only while someone holds or waits for it).
    #[must_use]
    pub fn key_lock_path(&self, key: &str) -> PathBuf {
        self.dir.locks.path(key)
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

/// Whether `e` means "this file system does not do that" (as opposed to a
/// failure worth reporting).
fn is_unsupported(e: &io::Error) -> bool {
    use rustix::io::Errno;
    e.kind() == io::ErrorKind::Unsupported
        || Errno::from_io_error(e).is_some_and(|errno| {
            [
                Errno::PERM,
                Errno::NOTSUP,
                Errno::OPNOTSUPP,
                Errno::NOSYS,
                Errno::INVAL,
            ]
            .contains(&errno)
        })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn rename_noreplace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// How this file system lets creates be atomic without a lock: a name is
/// created once, and a second try on the existing name fails with
/// `EEXIST`. Only "not supported" moves on to the next way.
fn probe_create_with(tmp: &Path) -> io::Result<CreateWith> {
    let name = |what: &str| tmp.join(format!("probe-{what}-{:016x}.tmp", fastrand::u64(..)));
    let (a, b, c) = (name("a"), name("b"), name("c"));
    let cleanup = || {
        for p in [&a, &b, &c] {
            let _ = fs::remove_file(p);
        }
    };
    let result = (|| {
        File::create_new(&a)?;
        File::create_new(&c)?;
        match fs::hard_link(&a, &b) {
            Ok(()) => {
                return match fs::hard_link(&c, &b) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(CreateWith::HardLink),
                    other => Err(io::Error::other(format!(
                        "a second link(2) to an existing name answered {other:?}, not EEXIST"
                    ))),
                };
            }
            Err(e) if is_unsupported(&e) => {}
            Err(e) => return Err(e),
        }
        match rename_noreplace(&a, &b) {
            Ok(()) => match rename_noreplace(&c, &b) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Ok(CreateWith::RenameNoReplace)
                }
                other => Err(io::Error::other(format!(
                    "a second RENAME_NOREPLACE to an existing name answered {other:?}, not EEXIST"
                ))),
            },
            Err(e) if is_unsupported(&e) => Ok(CreateWith::KeyLock),
            Err(e) => Err(e),
        }
    })();
    cleanup();
    result.map_err(|e| io::Error::new(e.kind(), format!("probing how to create objects: {e}")))
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

fn fsync_dir(path: &Path) -> Result<(), ObjectError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error("fsync", path, &e))
}

/// Whether `path` names anything (a missing name is the only "no").
fn exists(path: &Path) -> Result<bool, ObjectError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(io_error("stat", path, &e)),
    }
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

/// A put's temp file: written, fsynced and kept open until the put is over
/// (so a process stopped in the middle of a put visibly holds it); its name
/// is removed on drop unless a rename consumed it.
struct TempFile {
    path: PathBuf,
    header: Header,
    file: File,
    named: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.named {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What reading an object file's header found.
enum HeaderRead {
    /// No file under the name.
    Missing,
    /// The header, and the body's length (which matches it).
    Read(Header, u64),
    /// A file that is not a readable object: its size on disk and why.
    Unreadable(u64, ObjectError),
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

/// Whether a create found the name free (and took it) or taken.
#[derive(Debug, PartialEq, Eq)]
enum Created {
    Yes,
    NameTaken,
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

    /// The header of the object file at `path`, if there is one.
    fn read_header(path: &Path) -> HeaderRead {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return HeaderRead::Missing,
            Err(e) => {
                let size = fs::symlink_metadata(path).map_or(0, |m| m.len());
                return HeaderRead::Unreadable(size, io_error("open", path, &e));
            }
        };
        let file_bytes = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return HeaderRead::Unreadable(0, io_error("stat", path, &e)),
        };
        let unreadable = |e: ObjectError| HeaderRead::Unreadable(file_bytes, e);
        let mut raw = [0u8; HEADER_BYTES];
        match file.read_exact(&mut raw) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return unreadable(corrupt(
                    path,
                    &format!("{file_bytes} bytes, shorter than the header"),
                ))
            }
            Err(e) => return unreadable(io_error("read", path, &e)),
        }
        let header = match Header::decode(&raw) {
            Ok(header) => header,
            Err(why) => return unreadable(corrupt(path, &why)),
        };
        let body_bytes = file_bytes - HEADER_BYTES as u64;
        if header.body_bytes != body_bytes {
            return unreadable(corrupt(
                path,
                &format!(
                    "header says {} body bytes, file has {body_bytes}",
                    header.body_bytes
                ),
            ));
        }
        HeaderRead::Read(header, body_bytes)
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

    /// Whether an `IfMatch(want)` may replace the object at `path` now.
    fn check_match(path: &Path, want: &ETag) -> Result<(), ObjectError> {
        match Dir::read_header(path) {
            HeaderRead::Missing => Err(ObjectError::NotFound),
            HeaderRead::Read(header, _) if header.etag() == *want => Ok(()),
            HeaderRead::Read(..) => Err(ObjectError::PreconditionFailed),
            // Nothing matches a file that has no ETag; say why rather than
            // "precondition failed", which would send the caller to read it.
            HeaderRead::Unreadable(_, why) => Err(why),
        }
    }

    fn put(&self, key: &str, body: &Bytes, condition: &PutCondition) -> ObjectResult {
        let path = self.object_path(key);
        // Fail fast (no multi-MB temp file) when the condition already
        // fails; the commit decides again.
        match condition {
            PutCondition::None => {}
            PutCondition::IfAbsent => {
                if exists(&path)? {
                    return Err(ObjectError::PreconditionFailed);
                }
            }
            PutCondition::IfMatch(want) => Dir::check_match(&path, want)?,
        }
        let mut temp = self.write_temp(body)?;
        match condition {
            PutCondition::IfAbsent => {
                if self.create(key, &path, &mut temp)? == Created::NameTaken {
                    return Err(ObjectError::PreconditionFailed);
                }
            }
            PutCondition::None => {
                if self.create(key, &path, &mut temp)? == Created::NameTaken {
                    let _locked = self.locks.lock(key)?;
                    self.rename_into(&path, &mut temp)?;
                }
            }
            PutCondition::IfMatch(want) => {
                let _locked = self.locks.lock(key)?;
                Dir::check_match(&path, want)?;
                // The object exists and nobody can remove it while we hold
                // its lock, so neither can its folder go.
                fs::rename(&temp.path, &path).map_err(|e| io_error("rename into", &path, &e))?;
                temp.named = false;
            }
        }
        self.make_durable(&path)?;
        Ok(ObjectReply::Put {
            etag: temp.header.etag(),
        })
    }

    /// Writes `body` with its header to a new temp file and fsyncs it.
    fn write_temp(&self, body: &Bytes) -> Result<TempFile, ObjectError> {
        let header = Header {
            write_id: fastrand::u64(..),
            crc32c: crc32c::crc32c(body),
            body_bytes: body.len() as u64,
        };
        let path = self.tmp.join(format!("{:016x}.tmp", header.write_id));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, &e))?;
        let mut temp = TempFile {
            path,
            header,
            file,
            named: true,
        };
        let write = |file: &mut File| -> io::Result<()> {
            file.write_all(&header.encode())?;
            file.write_all(body)?;
            file.sync_data()
        };
        write(&mut temp.file).map_err(|e| io_error("write", &temp.path, &e))?;
        Ok(temp)
    }

    /// Gives `temp` the name `path` if the name is free, atomically with
    /// the check (module docs).
    fn create(&self, key: &str, path: &Path, temp: &mut TempFile) -> Result<Created, ObjectError> {
        if self.create_with == CreateWith::KeyLock {
            let _locked = self.locks.lock(key)?;
            if exists(path)? {
                return Ok(Created::NameTaken);
            }
            self.rename_into(path, temp)?;
            return Ok(Created::Yes);
        }
        for _ in 0..FOLDER_RACES_MAX {
            let result = match self.create_with {
                CreateWith::HardLink => fs::hard_link(&temp.path, path),
                CreateWith::RenameNoReplace => rename_noreplace(&temp.path, path),
                CreateWith::KeyLock => unreachable!("handled above"),
            };
            match result {
                Ok(()) => {
                    // A rename consumed the temp name; a link left it to
                    // be removed on drop.
                    temp.named = self.create_with == CreateWith::HardLink;
                    return Ok(Created::Yes);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Ok(Created::NameTaken)
                }
                Err(e) if is_not_found(&e) => self.create_folders(path)?,
                Err(e) => return Err(io_error("create", path, &e)),
            }
        }
        Err(folder_races(path))
    }

    /// `rename(temp, path)`, creating the folders when a delete removed
    /// them (the caller holds the key's lock).
    fn rename_into(&self, path: &Path, temp: &mut TempFile) -> Result<(), ObjectError> {
        for _ in 0..FOLDER_RACES_MAX {
            match fs::rename(&temp.path, path) {
                Ok(()) => {
                    temp.named = false;
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => self.create_folders(path)?,
                Err(e) => return Err(io_error("rename into", path, &e)),
            }
        }
        Err(folder_races(path))
    }

    /// Creates the missing folders above `path`.
    fn create_folders(&self, path: &Path) -> Result<(), ObjectError> {
        let parent = path.parent().expect("an object path is below the root");
        let relative = parent
            .strip_prefix(&self.root)
            .expect("an object path is below the root");
        let mut dir = self.root.clone();
        for component in relative.components() {
            dir.push(component);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("create folder", &dir, &e)),
            }
        }
        Ok(())
    }

    /// Makes the new name at `path` durable: fsyncs its folder, and the
    /// folders above up to the first with a durable marker, creating the
    /// missing markers top-down (module docs). The object keeps every
    /// folder on its path from being removed meanwhile, unless a concurrent
    /// delete removed the object itself: then there is nothing to keep.
    fn make_durable(&self, path: &Path) -> Result<(), ObjectError> {
        let folder = path.parent().expect("an object path is below the root");
        match File::open(folder).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(io_error("fsync", folder, &e)),
        }
        let mut unmarked = Vec::new();
        let mut dir = folder;
        while dir != self.root && !exists(&dir.join(DURABLE_MARKER))? {
            unmarked.push(dir);
            dir = dir.parent().expect("a folder below the root");
        }
        for dir in unmarked.into_iter().rev() {
            // The marker goes into the folder open now, the one whose entry
            // the parent's fsync below covers: if that folder is removed
            // meanwhile, creating the marker in it fails, rather than
            // landing in a new folder of the same name.
            let handle = match File::open(dir) {
                Ok(handle) => handle,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(io_error("open", dir, &e)),
            };
            fsync_dir(dir.parent().expect("a folder below the root"))?;
            let marker = rustix::fs::openat(
                &handle,
                DURABLE_MARKER,
                rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o644),
            );
            // A missing marker only costs a later put an fsync.
            if let Err(e) = marker {
                tracing::debug!(folder = %dir.display(), "cannot create a durable marker: {e}");
            }
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> ObjectResult {
        let path = self.object_path(key);
        // Missing now: done, without the lock (a valid history whatever
        // comes next).
        if !exists(&path)? {
            return Ok(ObjectReply::Deleted);
        }
        {
            let _locked = self.locks.lock(key)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => return Ok(ObjectReply::Deleted),
                Err(e) => return Err(io_error("delete", &path, &e)),
            }
        }
        // Remove the folders this delete emptied, so deleted prefixes cost
        // listings nothing. `rmdir` fails on a folder a put has just filled;
        // a put that finds a folder gone creates it again.
        let mut dir = path.parent().expect("an object path is below the root");
        while dir != self.root && holds_only_marker(dir) {
            let _ = fs::remove_file(dir.join(DURABLE_MARKER));
            if fs::remove_dir(dir).is_err() {
                break;
            }
            dir = dir.parent().expect("a folder below the root");
        }
        // The folder that lost an entry, or, if a concurrent delete has
        // removed it since, the nearest one still there.
        loop {
            match File::open(dir).and_then(|f| f.sync_all()) {
                Ok(()) => return Ok(ObjectReply::Deleted),
                Err(e) if is_not_found(&e) && dir != self.root => {
                    dir = dir.parent().expect("a folder below the root");
                }
                Err(e) => return Err(io_error("fsync", dir, &e)),
            }
        }
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

fn folder_races(path: &Path) -> ObjectError {
    ObjectError::Retryable(format!(
        "the folders of {} were removed under this put {FOLDER_RACES_MAX} times",
        path.display()
    ))
}

/// Whether `dir` holds nothing but (maybe) its durable marker: reads at most
/// two entries, however large the folder.
fn holds_only_marker(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries
        .take(2)
        .all(|e| e.is_ok_and(|e| e.file_name() == DURABLE_MARKER))
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
                match Dir::read_header(&file) {
                    HeaderRead::Read(header, size_bytes) => self.found.push(ObjectInfo {
                        key,
                        size_bytes,
                        etag: header.etag(),
                    }),
                    // Gone since the folder was read: deleted concurrently.
                    HeaderRead::Missing => {}
                    HeaderRead::Unreadable(size_bytes, why) => {
                        tracing::warn!(%key, "directory store: listing an unreadable object: {why}");
                        self.found.push(ObjectInfo {
                            key,
                            size_bytes,
                            etag: ETag(UNREADABLE_ETAG.to_owned()),
                        });
                    }
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
            locks: KeyLocks::new(PathBuf::from("/r/.t4-locks"), Duration::ZERO),
            create_with: CreateWith::HardLink,
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
