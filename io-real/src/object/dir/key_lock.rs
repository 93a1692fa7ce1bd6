//! The directory store's per-key locks: an exclusive `flock` on
//! `<root>/.t4-locks/<hash of the key>`, waited for at most a bounded time.
//!
//! Only the operations that must check and commit as one step take a key's
//! lock (If-Match, replacing an existing object, delete; see the store's
//! module docs), and only around the check and the rename or unlink, never
//! around writing or fsyncing a body. Locks of different keys are different
//! files, so a process stopped while holding one key's lock delays only
//! the operations on that key that need it.
//!
//! # Lock files come and go
//!
//! The holder unlinks the lock file just before it unlocks, so the folder
//! does not fill up with one file per key ever deleted. That makes the
//! textbook race possible: a waiter opened the file, the holder unlinked
//! and unlocked it, the waiter's `flock` succeeds on a file that no longer
//! has a name while a third process creates a new file under the name and
//! locks that. So a lock counts only if, *after* `flock` succeeded, the
//! name still leads to the locked file (same device and inode); otherwise
//! the acquirer closes it and starts again. Only a holder unlinks the name,
//! and only the file it holds, so while a valid holder holds the lock the
//! name leads to its file and no second acquirer can pass the check.
//!
//! # Bounded wait
//!
//! `flock` is tried without blocking, with short growing pauses in between,
//! until [`KeyLocks::wait_max`] has passed; then the operation fails with
//! [`ObjectError::Retryable`]. A critical section takes microseconds, so a
//! lock held that long belongs to a process that is stopped or stuck, and
//! waiting longer helps nobody: the caller's retry policy decides what next.
//! A process that dies releases its locks with its open files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use t4_core::object::ObjectError;

/// The first pause between two tries of a held lock.
const PAUSE_INITIAL: Duration = Duration::from_millis(1);
/// The pause between tries stops doubling here.
const PAUSE_MAX: Duration = Duration::from_millis(25);

/// The lock files of one store.
#[derive(Debug)]
pub(super) struct KeyLocks {
    /// `<root>/.t4-locks`.
    dir: PathBuf,
    /// How long an operation waits for a key's lock before it fails.
    pub(super) wait_max: Duration,
}

/// A held key lock; released on drop (the file is unlinked first).
#[derive(Debug)]
pub(super) struct KeyLock {
    file: File,
    path: PathBuf,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock (module docs), then unlock;
        // closing the file would unlock it too.
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), "cannot remove a lock file: {e}");
        }
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }
}

/// Whether `file` is the file `path` names now.
fn is_named(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Outcome of one non-blocking `flock`.
enum Try {
    Held,
    Busy,
}

fn try_flock(file: &File) -> io::Result<Try> {
    loop {
        match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Try::Held),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(Try::Busy),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

impl KeyLocks {
    /// The locks under `dir` (which exists).
    pub(super) fn new(dir: PathBuf, wait_max: Duration) -> KeyLocks {
        KeyLocks { dir, wait_max }
    }

    /// The lock file of `key`: the first 8 bytes of its SHA-256, in hex. Two
    /// keys sharing a file would only wait for each other.
    pub(super) fn path(&self, key: &str) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// Takes `key`'s lock, waiting at most [`KeyLocks::wait_max`].
    ///
    /// # Errors
    /// [`ObjectError::Retryable`] if another holder kept it that long;
    /// [`ObjectError::Failed`] if the lock file cannot be opened or locked.
    pub(super) fn lock(&self, key: &str) -> Result<KeyLock, ObjectError> {
        let path = self.path(key);
        let failed = |what: &str, e: &io::Error| {
            ObjectError::Failed(format!("{what} {} (lock of {key:?}): {e}", path.display()))
        };
        let started = Instant::now();
        let deadline = started + self.wait_max;
        let mut pause = PAUSE_INITIAL;
        // Each turn either waits (bounded by the deadline) or finds the
        // name moved to a new file, which happens once per release by
        // another holder; the deadline bounds the loop.
        loop {
            let open = || {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
            };
            let file = match open() {
                // Someone removed the lock folder (it holds nothing durable).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(&self.dir).and_then(|()| open())
                }
                other => other,
            }
            .map_err(|e| failed("open", &e))?;
            loop {
                match try_flock(&file).map_err(|e| failed("flock", &e))? {
                    Try::Held => break,
                    Try::Busy => {}
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(ObjectError::Retryable(format!(
                        "the lock of {key:?} ({}) is held by another writer: \
                         waited {:?} (a stopped or stuck process?)",
                        path.display(),
                        now - started
                    )));
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(PAUSE_MAX);
            }
            if is_named(&file, &path).map_err(|e| failed("stat", &e))? {
                return Ok(KeyLock { file, path });
            }
            // A released (unlinked) file: try the one the name leads to now.
        }
    }

    /// Removes lock files at least `age` old that nobody holds (left by a
    /// process that died holding them; live holders unlink their own).
    /// Best effort.
    pub(super) fn remove_stale(&self, age: Duration) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|elapsed| elapsed >= age);
            if !old {
                continue;
            }
            // Removing a file someone holds would let a second holder in:
            // take it first, as a holder would.
            let path = entry.path();
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            if matches!(try_flock(&file), Ok(Try::Held)) && is_named(&file, &path).unwrap_or(false)
            {
                drop(KeyLock { file, path });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock of one key waits, then fails as retryable; after the
    /// release it succeeds, and no lock file is left behind.
    #[test]
    fn bounded_wait_and_release() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let locks = KeyLocks::new(tmp.path().to_path_buf(), Duration::from_millis(50));
        let held = locks.lock("a/b").expect("free");
        let other = locks.lock("a/c").expect("another key is another lock");
        let started = Instant::now();
        match locks.lock("a/b") {
            Err(ObjectError::Retryable(why)) => assert!(why.contains("held"), "{why}"),
            other => panic!("a held lock: {other:?}"),
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(2),
            "waited {waited:?}"
        );
        drop(held);
        drop(other);
        assert_eq!(fs::read_dir(tmp.path()).expect("read").count(), 0);
        drop(locks.lock("a/b").expect("released"));
    }

    /// A lock file a dead holder left is neither a lock nor kept forever.
    #[test]
    fn stale_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let locks = KeyLocks::new(tmp.path().to_path_buf(), Duration::from_millis(50));
        fs::write(locks.path("k"), "").expect("a leftover lock file");
        drop(locks.lock("k").expect("a leftover file is not held"));
        fs::write(locks.path("k"), "").expect("a leftover lock file");
        let held = locks.lock("k2").expect("free");
        locks.remove_stale(Duration::ZERO);
        assert!(!locks.path("k").exists(), "an unheld leftover is removed");
        assert!(locks.path("k2").exists(), "a held lock file is kept");
        drop(held);
    }
}
