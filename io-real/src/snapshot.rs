//! Whole-database snapshots: the t4 snapshot format, the stream that
//! produces one ([`crate::Node::snapshot`]) and [`restore_snapshot`].
//!
//! # Format (`T4SNAP01`)
//!
//! A snapshot is every key-value pair of the engine — MVCC data, metadata
//! (revisions, applied index and term), leases, alarms: the engine's whole
//! contents — read from **one** consistent engine snapshot, in ascending
//! byte order of the keys:
//!
//! ```text
//! magic      8 bytes   "T4SNAP01" (ASCII)
//! record*              one per engine key-value, keys strictly ascending:
//!   key_len  4 bytes   u32 big-endian, < 0xFFFF_FFFF
//!   key      key_len bytes
//!   val_len  4 bytes   u32 big-endian, < 0xFFFF_FFFF
//!   value    val_len bytes
//! end        4 bytes   0xFFFF_FFFF (where the next key_len would be)
//! padding    0..511    zero bytes, up to a multiple of 512 bytes
//! sha256    32 bytes   SHA-256 of every byte before it (magic .. padding)
//! ```
//!
//! Nothing may follow the digest. The padding is there for etcd's client:
//! `etcdctl snapshot save` refuses a file whose size is not a multiple of
//! 512 plus a 32-byte SHA-256 (bbolt files are made of pages). Worked
//! example: an engine holding only `a → 1` is
//! `"T4SNAP01" 00000001 61 00000001 31 FFFFFFFF`, 490 zero bytes, then the
//! 32-byte SHA-256 of those 512 bytes: 544 bytes in all.
//!
//! The stream cuts this byte sequence into chunks of at most
//! [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes; chunk boundaries carry no meaning
//! (a record may span chunks). Concatenated, the chunks are the file.
//!
//! # Restoring
//!
//! [`restore_snapshot`] checks the whole file (magic, record framing, key
//! order, end marker, zero padding, digest, nothing trailing) while writing the records
//! into a new engine in a temporary directory next to the target, and only
//! renames that directory into place once everything checked out: a
//! corrupt or truncated snapshot leaves the target untouched. Because the
//! restored engine carries the metadata record, a node opened on it resumes
//! at the snapshot's revision and applied index, with an empty WAL that
//! starts after that index.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use t4_core::engine::{EngineError, KvEngine, KvRead, WriteBatch};
use t4_core::kv::RangeRequest;
use t4_core::{mvcc, Error};

use crate::config::{engine_dir_of, wal_dir_of};
use crate::engine::{RocksEngine, RocksOptions, RocksSnapshot};

/// The first 8 bytes of every t4 snapshot (format version 1).
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"T4SNAP01";

/// Stands where a key length would, after the last record.
pub const SNAPSHOT_END_MARKER: u32 = 0xFFFF_FFFF;

/// Largest chunk a [`SnapshotStream`] yields.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1 << 20;

/// Chunks produced ahead of the consumer (bounds the producer's memory to
/// this many MiB).
const CHUNKS_AHEAD_MAX: usize = 4;

/// Records written to the engine per batch while restoring.
const RESTORE_BATCH_ENTRIES_MAX: usize = 1024;

/// Bytes of records written to the engine per batch while restoring.
const RESTORE_BATCH_BYTES_MAX: usize = 4 << 20;

const DIGEST_BYTES: usize = 32;

/// The hashed part of a snapshot is padded to a multiple of this.
const PAD_TO_BYTES: u64 = 512;

/// A snapshot being produced: a `Stream` of byte chunks (each at most
/// [`SNAPSHOT_CHUNK_BYTES_MAX`]) that together form one snapshot in the
/// format of the [module docs](self). A storage failure ends the stream
/// with one `Err` item; dropping the stream stops the producer.
#[derive(Debug)]
pub struct SnapshotStream {
    chunks: mpsc::Receiver<Result<Vec<u8>, Error>>,
}

impl SnapshotStream {
    /// Starts producing from `snapshot` on a thread of its own (reading the
    /// engine blocks).
    pub(crate) fn spawn(snapshot: RocksSnapshot) -> Result<SnapshotStream, Error> {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD_MAX);
        std::thread::Builder::new()
            .name("t4-snapshot".into())
            .spawn(move || {
                let mut sink = |chunk: Vec<u8>| tx.blocking_send(Ok(chunk)).is_ok();
                match encode(&snapshot, &mut sink) {
                    Ok(_) | Err(EncodeError::ConsumerGone) => {}
                    Err(EncodeError::Engine(e)) => {
                        tracing::warn!(error = %e, "snapshot failed");
                        let _ = tx.blocking_send(Err(Error::Internal(e.to_string())));
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the snapshot thread: {e}")))?;
        Ok(SnapshotStream { chunks: rx })
    }

    /// The next chunk; `None` at the end (`Stream::poll_next` as a method).
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, Error>> {
        self.chunks.recv().await
    }
}

impl tokio_stream::Stream for SnapshotStream {
    type Item = Result<Vec<u8>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.poll_recv(cx)
    }
}

/// Why encoding stopped early.
#[derive(Debug)]
enum EncodeError {
    /// The sink refused a chunk (the stream was dropped).
    ConsumerGone,
    Engine(EngineError),
}

/// Writes the snapshot of `view` to `sink` in chunks of at most
/// [`SNAPSHOT_CHUNK_BYTES_MAX`]; `sink` returns `false` to stop. Returns
/// the number of records.
fn encode<R: KvRead>(view: &R, sink: &mut dyn FnMut(Vec<u8>) -> bool) -> Result<u64, EncodeError> {
    let mut out = ChunkWriter {
        written: 0,
        hasher: Sha256::new(),
        buf: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES_MAX),
        sink,
    };
    out.write(SNAPSHOT_MAGIC)?;
    let mut records = 0u64;
    for pair in view.scan(&[], None) {
        let (key, value) = pair.map_err(EncodeError::Engine)?;
        out.write(&frame_len(&key)?)?;
        out.write(&key)?;
        out.write(&frame_len(&value)?)?;
        out.write(&value)?;
        records += 1;
    }
    out.write(&SNAPSHOT_END_MARKER.to_be_bytes())?;
    let pad = (PAD_TO_BYTES - out.written % PAD_TO_BYTES) % PAD_TO_BYTES;
    out.write(&vec![0u8; usize::try_from(pad).expect("pad < 512")])?;
    let digest = out.hasher.clone().finalize();
    out.write_unhashed(&digest)?;
    out.flush()?;
    Ok(records)
}

/// A record field's length prefix.
fn frame_len(bytes: &[u8]) -> Result<[u8; 4], EncodeError> {
    match u32::try_from(bytes.len()) {
        Ok(len) if len != SNAPSHOT_END_MARKER => Ok(len.to_be_bytes()),
        _ => Err(EncodeError::Engine(EngineError(format!(
            "snapshot: an engine key or value of {} bytes does not fit the format",
            bytes.len()
        )))),
    }
}

/// Hashes what it is given and cuts it into chunks.
struct ChunkWriter<'a> {
    /// Bytes written so far.
    written: u64,
    hasher: Sha256,
    buf: Vec<u8>,
    sink: &'a mut dyn FnMut(Vec<u8>) -> bool,
}

impl ChunkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.hasher.update(bytes);
        self.write_unhashed(bytes)
    }

    fn write_unhashed(&mut self, mut bytes: &[u8]) -> Result<(), EncodeError> {
        self.written += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = SNAPSHOT_CHUNK_BYTES_MAX - self.buf.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = rest;
            if self.buf.len() == SNAPSHOT_CHUNK_BYTES_MAX {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EncodeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        assert!(
            self.buf.len() <= SNAPSHOT_CHUNK_BYTES_MAX,
            "chunk of {} bytes exceeds {SNAPSHOT_CHUNK_BYTES_MAX}",
            self.buf.len()
        );
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES_MAX));
        if (self.sink)(chunk) {
            Ok(())
        } else {
            Err(EncodeError::ConsumerGone)
        }
    }
}

/// What [`restore_snapshot`] restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The restored store's current revision.
    pub revision: i64,
    /// Live keys at that revision.
    pub keys: u64,
    /// Engine key-values written (records in the snapshot).
    pub engine_entries: u64,
    /// The restored applied log index (the WAL starts after it).
    pub applied_index: u64,
}

/// Why a snapshot could not be restored. In every case the target directory
/// was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file does not start with [`SNAPSHOT_MAGIC`].
    #[error("{path} is not a t4 snapshot: it does not start with \"T4SNAP01\"")]
    BadMagic {
        /// The snapshot file.
        path: PathBuf,
    },
    /// The file ends before the snapshot does (or a length field is
    /// corrupt and points past the end).
    #[error("snapshot {path} is truncated or corrupt: {what} at byte {offset}")]
    Truncated {
        /// The snapshot file.
        path: PathBuf,
        /// Where reading stopped.
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// The contents do not match the stored SHA-256, or the framing is
    /// broken (keys out of order, bytes after the digest).
    #[error("snapshot {path} is corrupt: {what}")]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The target data directory exists and is not empty. Restore only into
    /// a new (or empty) directory.
    #[error("restore target {path} is not empty; restore into a new directory")]
    TargetNotEmpty {
        /// The target.
        path: PathBuf,
    },
    /// Reading the snapshot or writing the new data directory failed.
    #[error("restore: {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The new engine could not be written.
    #[error("restore: {0}")]
    Engine(#[from] EngineError),
}

/// Restores the snapshot in `snapshot_file` into a new data directory
/// `data_dir` (which must not exist, or be empty), so that
/// [`crate::Node::open`] on it serves the snapshot's state. See the
/// [module docs](self) for what is checked; on any error nothing is left
/// behind and `data_dir` is untouched.
///
/// # Errors
/// See [`RestoreError`].
pub fn restore_snapshot(
    snapshot_file: &Path,
    data_dir: &Path,
) -> Result<RestoreReport, RestoreError> {
    check_target_empty(data_dir)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Io { path, source }
    };
    let file = File::open(snapshot_file).map_err(io(snapshot_file))?;
    let file_bytes = file.metadata().map_err(io(snapshot_file))?.len();

    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = data_dir
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    let temp = tempfile_dir(&parent, &name).map_err(io(&parent))?;

    let reader = SnapshotReader {
        path: snapshot_file.to_path_buf(),
        input: BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        offset: 0,
        file_bytes,
    };
    let result = restore_into(reader, &temp).and_then(|report| {
        // Re-checked: the target may have been filled meanwhile.
        check_target_empty(data_dir)?;
        if data_dir.exists() {
            std::fs::remove_dir(data_dir).map_err(io(data_dir))?;
        }
        std::fs::rename(&temp, data_dir).map_err(io(data_dir))?;
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io(&parent))?;
        Ok(report)
    });
    if result.is_err() {
        if let Err(e) = std::fs::remove_dir_all(&temp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %temp.display(), error = %e, "cannot remove a failed restore's directory");
            }
        }
    }
    result
}

/// Refuses a target that exists and is not an empty directory.
fn check_target_empty(data_dir: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::TargetNotEmpty {
                    path: data_dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if data_dir.exists() => {
            // Exists but is not a readable directory (e.g. a file).
            tracing::debug!(error = %e, "restore target is not a readable directory");
            Err(RestoreError::TargetNotEmpty {
                path: data_dir.to_path_buf(),
            })
        }
        Err(source) => Err(RestoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        }),
    }
}

/// Creates a new, uniquely named directory in `parent` for a restore.
fn tempfile_dir(parent: &Path, name: &str) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let dir = parent.join(format!(
            ".{name}.restore-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "no free name for a restore directory",
    ))
}

/// Writes the snapshot into a new engine and an empty WAL dir in `temp`.
fn restore_into(mut reader: SnapshotReader, temp: &Path) -> Result<RestoreReport, RestoreError> {
    let magic = reader.read_exact_vec(SNAPSHOT_MAGIC.len(), "the magic")?;
    if magic != SNAPSHOT_MAGIC {
        return Err(RestoreError::BadMagic { path: reader.path });
    }
    let engine = RocksEngine::open(&engine_dir_of(temp), RocksOptions::default())?;
    let mut batch = WriteBatch::default();
    let mut batch_entries = 0usize;
    let mut batch_bytes = 0usize;
    let mut engine_entries = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        let key_len = reader.read_u32("a key length")?;
        if key_len == SNAPSHOT_END_MARKER {
            break;
        }
        let key = reader.read_exact_vec(len_usize(key_len), "a key")?;
        let value_len = reader.read_u32("a value length")?;
        if value_len == SNAPSHOT_END_MARKER {
            return Err(reader.corrupt("a value length is the end marker"));
        }
        let value = reader.read_exact_vec(len_usize(value_len), "a value")?;
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(reader.corrupt(format!(
                "keys out of order at record {} (byte {})",
                engine_entries + 1,
                reader.offset
            )));
        }
        batch_bytes += key.len() + value.len();
        batch_entries += 1;
        last_key = Some(key.clone());
        batch.put(key, value);
        engine_entries += 1;
        if batch_entries >= RESTORE_BATCH_ENTRIES_MAX || batch_bytes >= RESTORE_BATCH_BYTES_MAX {
            engine.write(std::mem::take(&mut batch))?;
            batch_entries = 0;
            batch_bytes = 0;
        }
    }
    engine.write(batch)?;
    let pad = (PAD_TO_BYTES - reader.offset % PAD_TO_BYTES) % PAD_TO_BYTES;
    let padding = reader.read_exact_vec(usize::try_from(pad).expect("pad < 512"), "the padding")?;
    if padding.iter().any(|b| *b != 0) {
        return Err(reader.corrupt("non-zero bytes in the padding after the end marker"));
    }
    let computed = reader.hasher.clone().finalize();
    let stored = reader.read_exact_unhashed(DIGEST_BYTES, "the SHA-256")?;
    if computed.as_slice() != stored.as_slice() {
        return Err(reader.corrupt(format!(
            "SHA-256 mismatch: stored {}, computed {}",
            hex(&stored),
            hex(&computed)
        )));
    }
    if reader.offset != reader.file_bytes {
        return Err(reader.corrupt(format!(
            "{} unexpected bytes after the SHA-256",
            reader.file_bytes - reader.offset
        )));
    }

    let meta = mvcc::read_meta(&engine)?;
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..RangeRequest::default()
    };
    let keys = mvcc::range(&engine, &all)
        .map_err(|e| EngineError(format!("counting restored keys: {e}")))?
        .count;
    engine.persist()?;
    engine.close()?;
    let wal_dir = wal_dir_of(temp);
    std::fs::create_dir_all(&wal_dir).map_err(|source| RestoreError::Io {
        path: wal_dir.clone(),
        source,
    })?;
    File::open(temp)
        .and_then(|d| d.sync_all())
        .map_err(|source| RestoreError::Io {
            path: temp.to_path_buf(),
            source,
        })?;
    Ok(RestoreReport {
        revision: meta.current_revision,
        keys: u64::try_from(keys).unwrap_or(0),
        engine_entries,
        applied_index: meta.applied_index,
    })
}

fn len_usize(len: u32) -> usize {
    usize::try_from(len).expect("u32 fits usize on supported platforms")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a snapshot file front to back, hashing what it reads.
struct SnapshotReader {
    path: PathBuf,
    input: BufReader<File>,
    hasher: Sha256,
    /// Bytes read so far.
    offset: u64,
    /// Size of the file, so a corrupt length cannot make us allocate more
    /// than the file could hold.
    file_bytes: u64,
}

impl SnapshotReader {
    fn read_u32(&mut self, what: &str) -> Result<u32, RestoreError> {
        let bytes = self.read_exact_vec(4, what)?;
        Ok(u32::from_be_bytes(
            bytes.try_into().expect("read exactly 4 bytes"),
        ))
    }

    fn read_exact_vec(&mut self, len: usize, what: &str) -> Result<Vec<u8>, RestoreError> {
        let bytes = self.read_exact_unhashed(len, what)?;
        self.hasher.update(&bytes);
        Ok(bytes)
    }

    fn read_exact_unhashed(&mut self, len: usize, what: &str) -> Result<Vec<u8>, RestoreError> {
        let len_u64 = len as u64;
        if self.file_bytes.saturating_sub(self.offset) < len_u64 {
            return Err(self.truncated(format!(
                "reading {what} ({len} bytes, {} left in the file)",
                self.file_bytes.saturating_sub(self.offset)
            )));
        }
        let mut bytes = vec![0; len];
        match self.input.read_exact(&mut bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(self.truncated(format!("reading {what} (the file shrank)")));
            }
            Err(source) => {
                return Err(RestoreError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        self.offset += len_u64;
        Ok(bytes)
    }

    fn truncated(&self, what: String) -> RestoreError {
        RestoreError::Truncated {
            path: self.path.clone(),
            offset: self.offset,
            what,
        }
    }

    fn corrupt(&self, what: impl Into<String>) -> RestoreError {
        RestoreError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use t4_core::MemEngine;

    use super::*;

    /// The worked example of the module docs, byte for byte.
    #[test]
    fn encodes_the_documented_example() {
        let engine = MemEngine::new();
        let mut batch = WriteBatch::default();
        batch.put(b"a".to_vec(), b"1".to_vec());
        engine.write(batch).expect("write");
        let mut chunks = Vec::new();
        let records = encode(&engine, &mut |c| {
            chunks.push(c);
            true
        })
        .expect("encode");
        assert_eq!(records, 1);
        let bytes: Vec<u8> = chunks.concat();
        let mut body = b"T4SNAP01".to_vec();
        body.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 1, b'1', 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(body.len(), 22);
        body.resize(512, 0);
        assert_eq!(&bytes[..512], body.as_slice());
        assert_eq!(&bytes[512..], Sha256::digest(&body).as_slice());
        assert_eq!(bytes.len(), 544);
    }

    /// Chunks never exceed the bound, and a value larger than a chunk spans
    /// several.
    #[test]
    fn chunks_are_bounded() {
        let engine = MemEngine::new();
        let mut batch = WriteBatch::default();
        batch.put(b"big".to_vec(), vec![7; SNAPSHOT_CHUNK_BYTES_MAX * 2 + 5]);
        batch.put(b"small".to_vec(), b"x".to_vec());
        engine.write(batch).expect("write");
        let mut chunks = Vec::new();
        encode(&engine, &mut |c| {
            chunks.push(c);
            true
        })
        .expect("encode");
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        assert!(chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= SNAPSHOT_CHUNK_BYTES_MAX));
    }

    /// A consumer that goes away stops the producer.
    #[test]
    fn stops_when_the_consumer_is_gone() {
        let engine = MemEngine::new();
        let mut batch = WriteBatch::default();
        batch.put(b"big".to_vec(), vec![7; SNAPSHOT_CHUNK_BYTES_MAX * 3]);
        engine.write(batch).expect("write");
        let mut taken = 0;
        let result = encode(&engine, &mut |_| {
            taken += 1;
            false
        });
        assert!(matches!(result, Err(EncodeError::ConsumerGone)));
        assert_eq!(taken, 1);
    }
}
