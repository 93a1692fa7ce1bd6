//! The fake disk: files whose unsynced bytes a crash throws away.
//!
//! madsim's own file system does not model lost writes, so this one is ours.
//! A [`Disk`] belongs to one simulated machine and lives *outside* the
//! madsim node that uses it (the test keeps the handle), so a restarted node
//! finds what was durable.
//!
//! # Model
//!
//! The only file operations the WAL needs are: create a file with initial
//! contents durably (header written, fsynced, renamed, directory fsynced —
//! one atomic step here), append, fsync, truncate (at recovery, followed by
//! an fsync: modelled as durable at once), remove (durable at once), list
//! and read. For each file the disk keeps the bytes the process sees and how
//! many of them are durable:
//!
//! - `append` adds bytes past `durable_len`: *pending*;
//! - `sync` makes every pending byte durable — unless an fsync error is
//!   injected: the call fails, and the pending bytes become *in doubt* (the
//!   kernel may or may not have written them; Linux may even drop the dirty
//!   pages). A crash then keeps a random prefix of them;
//! - `crash` truncates every file to its durable length, or — with torn
//!   writes on — to a random length between the durable length and the
//!   visible one (a torn last write keeps a random prefix);
//! - `lose` (disk loss) removes everything, files and engine image alike.
//!
//! Faults are drawn from madsim's deterministic RNG.
//!
//! The engine's durable image ([`crate::engine::EngineImage`]) lives here
//! too, so that "the disk" is everything a node keeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use madsim::rand::{thread_rng, Rng};

use crate::engine::EngineImage;

/// Fault knobs of one disk. Probabilities are per call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskFaults {
    /// A crash keeps a random prefix of the unsynced bytes (torn write)
    /// instead of none of them.
    pub torn_writes: bool,
    /// Probability that an fsync fails.
    pub fsync_error_rate: f64,
    /// Probability that an append fails (nothing written).
    pub write_error_rate: f64,
    /// A deliberately broken disk for checking the checkers: fsync reports
    /// success without making anything durable.
    pub fsync_lies: bool,
}

/// Counters of what the disk did, for the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Successful fsyncs.
    pub syncs: u64,
    /// Injected fsync failures.
    pub fsync_errors: u64,
    /// Injected append failures.
    pub write_errors: u64,
    /// Crashes that tore a write (kept some unsynced bytes).
    pub torn: u64,
    /// Crashes.
    pub crashes: u64,
    /// Disk losses.
    pub losses: u64,
}

/// An I/O error of the fake disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskError(pub String);

impl std::fmt::Display for DiskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Default)]
struct File {
    data: Vec<u8>,
    durable_len: usize,
    /// An fsync of the pending bytes failed: whether they reached the
    /// platter is unknown.
    in_doubt: bool,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, File>,
    engine: EngineImage,
    /// Engines put aside ([`Disk::put_engine_aside`]), oldest first.
    engines_aside: Vec<EngineImage>,
    faults: DiskFaults,
    stats: DiskStats,
}

/// One machine's disk. Cloning gives another handle to the same disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    state: Arc<Mutex<State>>,
}

impl Disk {
    /// An empty disk without faults.
    #[must_use]
    pub fn new() -> Disk {
        Disk::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("disk lock poisoned")
    }

    /// Sets the fault knobs.
    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    /// The fault knobs.
    #[must_use]
    pub fn faults(&self) -> DiskFaults {
        self.lock().faults.clone()
    }

    /// What the disk did so far.
    #[must_use]
    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }

    /// File names, in order.
    #[must_use]
    pub fn list(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// A file's visible contents.
    #[must_use]
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().files.get(name).map(|f| f.data.clone())
    }

    /// Creates (or replaces) `name` with `contents`, durably and atomically.
    pub fn create_durable(&self, name: &str, contents: Vec<u8>) {
        let durable_len = contents.len();
        self.lock().files.insert(
            name.to_owned(),
            File {
                data: contents,
                durable_len,
                in_doubt: false,
            },
        );
    }

    /// Appends to `name` (pending until the next successful sync).
    ///
    /// # Errors
    /// An injected write error (nothing written) or a missing file.
    pub fn append(&self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let mut state = self.lock();
        if state.faults.write_error_rate > 0.0
            && thread_rng().gen_bool(state.faults.write_error_rate)
        {
            state.stats.write_errors += 1;
            return Err(DiskError(format!("injected write error on {name}")));
        }
        let file = state
            .files
            .get_mut(name)
            .ok_or_else(|| DiskError(format!("{name}: no such file")))?;
        file.data.extend_from_slice(bytes);
        Ok(())
    }

    /// Makes every pending byte of `name` durable.
    ///
    /// # Errors
    /// An injected fsync error: the pending bytes are then in doubt (a later
    /// crash keeps a random prefix of them), or a missing file.
    pub fn sync(&self, name: &str) -> Result<(), DiskError> {
        let mut state = self.lock();
        if state.faults.fsync_error_rate > 0.0
            && thread_rng().gen_bool(state.faults.fsync_error_rate)
        {
            state.stats.fsync_errors += 1;
            if let Some(file) = state.files.get_mut(name) {
                file.in_doubt = true;
            }
            return Err(DiskError(format!("injected fsync error on {name}")));
        }
        let lies = state.faults.fsync_lies;
        let file = state
            .files
            .get_mut(name)
            .ok_or_else(|| DiskError(format!("{name}: no such file")))?;
        if !lies {
            file.durable_len = file.data.len();
        }
        state.stats.syncs += 1;
        Ok(())
    }

    /// Cuts `name` to `len` bytes, durably.
    ///
    /// # Errors
    /// A missing file.
    pub fn truncate(&self, name: &str, len: usize) -> Result<(), DiskError> {
        let mut state = self.lock();
        let file = state
            .files
            .get_mut(name)
            .ok_or_else(|| DiskError(format!("{name}: no such file")))?;
        file.data.truncate(len);
        file.durable_len = file.durable_len.min(len);
        Ok(())
    }

    /// Removes `name`, durably (no error if absent).
    pub fn remove(&self, name: &str) {
        self.lock().files.remove(name);
    }

    /// The engine's durable image.
    #[must_use]
    pub fn engine_image(&self) -> EngineImage {
        self.lock().engine.clone()
    }

    /// Whether the disk holds an engine (one was created, and the disk was
    /// not lost since).
    #[must_use]
    pub fn has_engine(&self) -> bool {
        self.lock().engine.exists()
    }

    /// Puts a restored engine in place, durably and atomically (io-real
    /// renames the verified folder into place).
    ///
    /// # Panics
    /// The disk has an engine already.
    pub fn install_engine(&self, snapshot: t4_core::engine::MemSnapshot) {
        let mut state = self.lock();
        assert!(
            !state.engine.exists(),
            "restoring an engine over an existing one"
        );
        state.engine = EngineImage::restored(snapshot);
    }

    /// Moves the engine aside, durably: the disk then has none, and the
    /// next start restores one (a member starting over from a checkpoint;
    /// io-real renames the engine's folder aside, never deletes it, so
    /// the image is kept here too).
    pub fn put_engine_aside(&self) {
        let mut state = self.lock();
        let engine = std::mem::take(&mut state.engine);
        state.engines_aside.push(engine);
    }

    /// Renames `from` to `to`, durably (no error if absent); the file
    /// keeps its durable and pending bytes.
    pub fn rename(&self, from: &str, to: &str) {
        let mut state = self.lock();
        if let Some(file) = state.files.remove(from) {
            state.files.insert(to.to_owned(), file);
        }
    }

    pub(crate) fn with_engine_image<T>(&self, f: impl FnOnce(&mut EngineImage) -> T) -> T {
        f(&mut self.lock().engine)
    }

    /// A power loss / process crash: every file loses its unsynced bytes
    /// (keeps a random prefix of them with torn writes on), and the engine
    /// keeps its persisted image plus a random prefix of the writes since
    /// (RocksDB flushes memtables on its own, in order).
    pub fn crash(&self) {
        let mut state = self.lock();
        let mut rng = thread_rng();
        let torn_writes = state.faults.torn_writes;
        let mut torn = false;
        for file in state.files.values_mut() {
            let pending = file.data.len() - file.durable_len;
            let keep = if (torn_writes || file.in_doubt) && pending > 0 {
                rng.gen_range(0..=pending)
            } else {
                0
            };
            torn |= keep > 0;
            file.data.truncate(file.durable_len + keep);
            file.durable_len = file.data.len();
            file.in_doubt = false;
        }
        state.engine.crash(&mut rng);
        state.stats.crashes += 1;
        state.stats.torn += u64::from(torn);
    }

    /// The disk is gone: a new, empty one takes its place.
    pub fn lose(&self) {
        let mut state = self.lock();
        state.files.clear();
        state.engine = EngineImage::default();
        state.engines_aside.clear();
        state.stats.losses += 1;
    }
}
