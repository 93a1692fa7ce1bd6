//! WAL segment files: durability round trips, rotation, torn tails,
//! corruption refusal, `from` filtering, segment removal and truncation of
//! the log's tail.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use t4_core::kv::PutRequest;
use t4_core::log::{Entry, Payload};
use t4_core::{Index, Term};
use t4_io_real::wal::{Wal, WalError};

const SEGMENT_BYTES_MAX: u64 = 64 << 20;

fn entry(term: u64, index: u64, value_bytes: usize) -> Entry {
    Entry {
        term,
        index,
        payload: Some(Payload::Put(PutRequest {
            key: format!("key-{index}").into_bytes(),
            value: vec![(index % 251) as u8; value_bytes],
            ..PutRequest::default()
        })),
    }
}

/// Entries `from..=to`, term 1, 100-byte values.
fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(1, i, 100)).collect()
}

fn open(dir: &Path, from: u64, segment_bytes_max: u64) -> (Wal, Vec<Entry>) {
    Wal::open(dir, Index(from), Term(1), segment_bytes_max).expect("open WAL")
}

/// Appends `from..=to` in batches of `batch` and syncs after each.
fn append_synced(wal: &mut Wal, from: u64, to: u64, batch: usize) {
    for chunk in entries(from, to).chunks(batch) {
        wal.append(chunk).expect("append");
        wal.sync().expect("sync");
    }
}

/// Segment files in `dir`, sorted by name.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dirent").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// Offsets at which each frame of a segment file starts (walking the length fields).
fn frame_starts(path: &Path) -> Vec<usize> {
    let bytes = fs::read(path).expect("read segment");
    let mut starts = Vec::new();
    let mut offset = 32;
    while offset + 8 <= bytes.len() {
        starts.push(offset);
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        offset += 8 + len as usize;
    }
    starts
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).expect("read segment");
    bytes[at] ^= 0xff;
    fs::write(path, bytes).expect("write segment");
}

fn expect_corrupt(result: Result<(Wal, Vec<Entry>), WalError>, file: &Path, at: u64) -> String {
    let err = result.expect_err("a corrupt WAL must be refused");
    let message = err.to_string();
    match err {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, file, "{message}");
            assert_eq!(offset, at, "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let name = file
        .file_name()
        .expect("file name")
        .to_str()
        .expect("utf-8");
    assert!(
        message.contains(name),
        "the message must name the file: {message}"
    );
    assert!(
        message.contains(&format!("byte offset {at}")),
        "the message must name the offset: {message}"
    );
    message
}

/// Everything appended and synced comes back on reopen, and appends continue after it.
#[test]
fn append_sync_reopen_returns_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wal"); // created by open
    let (mut wal, replay) = open(&dir, 1, SEGMENT_BYTES_MAX);
    assert!(replay.is_empty());
    assert_eq!(wal.last_index(), Index(0));
    assert_eq!(
        wal.segment_count(),
        0,
        "the first append creates the first segment"
    );

    let bytes = wal.append(&entries(1, 3)).expect("append");
    assert!(
        bytes > 3 * 100,
        "three 100-byte values take more than 300 bytes, got {bytes}"
    );
    wal.sync().expect("sync");
    append_synced(&mut wal, 4, 10, 2);
    assert_eq!(wal.last_index(), Index(10));
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(
        segment_files(&dir),
        vec![dir.join("00000000000000000001.wal")]
    );
    drop(wal);

    let (mut wal, replay) = open(&dir, 1, SEGMENT_BYTES_MAX);
    assert_eq!(replay, entries(1, 10));
    assert_eq!(wal.last_index(), Index(10));
    append_synced(&mut wal, 11, 12, 2);
    drop(wal);
    let (_, replay) = open(&dir, 1, SEGMENT_BYTES_MAX);
    assert_eq!(replay, entries(1, 12));
}

/// Segments rotate by size, are named by their first index, and reopen reads across them.
#[test]
fn rotation_by_size_and_reopen_across_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 100, 3);
    let count = wal.segment_count();
    assert!(
        count >= 10,
        "100 entries of ~130 bytes at 1 KiB per segment: got {count} segments"
    );
    drop(wal);

    let files = segment_files(dir);
    assert_eq!(files.len(), count);
    let (mut wal, replay) = open(dir, 1, 1024);
    assert_eq!(replay, entries(1, 100));
    // Each file is named by the index of its first entry, and a batch is never split.
    let mut expected_first = 1;
    for file in &files {
        let name = file.file_stem().expect("stem").to_str().expect("utf-8");
        assert_eq!(name.len(), 20, "{name}");
        assert_eq!(
            name.parse::<u64>().expect("digits"),
            expected_first,
            "{}",
            file.display()
        );
        let bytes = fs::read(file).expect("read");
        let decoded =
            t4_core::wal::decode_segment(&bytes, false).expect("sealed segments are clean");
        assert_eq!(decoded.header.first_index, Index(expected_first));
        expected_first += decoded.entries.len() as u64;
        if file != files.last().expect("non-empty") {
            assert_eq!(
                decoded.entries.len() % 3,
                0,
                "a batch of 3 is never split: {}",
                file.display()
            );
            let len = bytes.len() as u64;
            assert!(
                len >= 1024,
                "a sealed segment reached the bound: {len} bytes"
            );
            assert!(
                len < 1024 + 3 * 200,
                "it exceeds the bound by at most one batch: {len} bytes"
            );
        }
    }
    assert_eq!(expected_first, 101);
    append_synced(&mut wal, 101, 101, 1);
    assert_eq!(wal.last_index(), Index(101));
}

/// A last segment cut mid-frame is truncated to the last whole frame, and
/// appends continue at the right index.
#[test]
fn torn_tail_cut_mid_frame_is_truncated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, SEGMENT_BYTES_MAX);
    append_synced(&mut wal, 1, 10, 1);
    drop(wal);

    let file = segment_files(dir).pop().expect("one segment");
    let starts = frame_starts(&file);
    let last_frame = starts[9];
    let file_len = fs::metadata(&file).expect("stat").len();
    OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .set_len(file_len - 5)
        .expect("cut");

    let (mut wal, replay) = open(dir, 1, SEGMENT_BYTES_MAX);
    assert_eq!(replay, entries(1, 9));
    assert_eq!(wal.last_index(), Index(9));
    assert_eq!(
        fs::metadata(&file).expect("stat").len(),
        last_frame as u64,
        "truncated to the torn frame"
    );
    append_synced(&mut wal, 10, 11, 2);
    drop(wal);
    let (_, replay) = open(dir, 1, SEGMENT_BYTES_MAX);
    assert_eq!(replay, entries(1, 11));
}

/// Garbage or zeros after the last frame are truncated; nothing synced is lost.
#[test]
fn garbage_and_zero_tails_are_truncated() {
    for tail in [
        vec![0u8; 4096],
        (0..777u32)
            .map(|i| (i * 31 % 256) as u8)
            .collect::<Vec<u8>>(),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let (mut wal, _) = open(dir, 1, 2048);
        append_synced(&mut wal, 1, 40, 4);
        drop(wal);

        let file = segment_files(dir).pop().expect("segments");
        let good_len = fs::metadata(&file).expect("stat").len();
        OpenOptions::new()
            .append(true)
            .open(&file)
            .expect("open")
            .write_all(&tail)
            .expect("append tail");

        let (mut wal, replay) = open(dir, 1, 2048);
        assert_eq!(replay, entries(1, 40));
        assert_eq!(fs::metadata(&file).expect("stat").len(), good_len);
        append_synced(&mut wal, 41, 44, 4);
        drop(wal);
        assert_eq!(open(dir, 1, 2048).1, entries(1, 44));
    }
}

/// The current segment is preallocated with zeros ahead of its frames (so
/// an fdatasync does not have to commit a new file length); a crash leaves
/// that padding, in the last segment or, mid-seal, in a sealed one, and
/// open cuts it without losing or refusing anything. A non-zero tail in a
/// sealed segment is still corruption.
#[test]
fn preallocated_padding_is_cut_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 2048);
    append_synced(&mut wal, 1, 40, 4);
    let files = segment_files(dir);
    let last = files.last().expect("segments").clone();
    let live_len = fs::metadata(&last).expect("stat").len();
    assert!(
        live_len >= t4_io_real::wal::PREALLOCATE_BYTES,
        "the current segment is preallocated: {live_len} bytes"
    );
    // A crash keeps the padding (simulated: forget the Wal without Drop).
    std::mem::forget(wal);
    // And a sealed segment padded as if the crash came mid-seal.
    let sealed = files.first().expect("segments").clone();
    assert_ne!(sealed, last, "40 entries of 2 KiB segments make several");
    let sealed_len = fs::metadata(&sealed).expect("stat").len();
    OpenOptions::new()
        .append(true)
        .open(&sealed)
        .expect("open")
        .write_all(&[0u8; 5000])
        .expect("pad");

    let (mut wal, replay) = open(dir, 1, 2048);
    assert_eq!(replay, entries(1, 40), "padding loses nothing");
    assert_eq!(fs::metadata(&sealed).expect("stat").len(), sealed_len);
    append_synced(&mut wal, 41, 44, 4);
    drop(wal);
    assert_eq!(open(dir, 1, 2048).1, entries(1, 44));

    // Zeros then garbage in a sealed segment: corruption, named.
    let mut tail = vec![0u8; 100];
    tail.extend_from_slice(b"not a frame");
    OpenOptions::new()
        .append(true)
        .open(&sealed)
        .expect("open")
        .write_all(&tail)
        .expect("garbage");
    let err = Wal::open(dir, Index(1), Term(1), 2048).expect_err("garbage in a sealed segment");
    assert!(
        matches!(err, WalError::Corrupt { ref path, .. } if *path == sealed),
        "{err}"
    );
}

/// A damaged frame in a sealed (earlier) segment is refused with the file and offset.
#[test]
fn flipped_byte_in_an_earlier_segment_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 30, 1);
    drop(wal);
    let files = segment_files(dir);
    assert!(files.len() >= 3, "{files:?}");

    // The last frame of a sealed segment: corruption, even though nothing valid follows it there.
    let sealed = &files[1];
    let last_frame = *frame_starts(sealed).last().expect("frames");
    flip_byte(sealed, last_frame + 12);
    let message = expect_corrupt(
        Wal::open(dir, Index(1), Term(1), 1024),
        sealed,
        last_frame as u64,
    );
    assert!(message.contains("CRC mismatch"), "{message}");
    // Refusing changed nothing: the file is still there, at full length.
    assert_eq!(segment_files(dir), files);
}

/// A damaged frame in the middle of the last segment is refused, not truncated.
#[test]
fn flipped_byte_mid_file_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, SEGMENT_BYTES_MAX);
    append_synced(&mut wal, 1, 10, 2);
    drop(wal);
    let file = segment_files(dir).pop().expect("segment");
    let len_before = fs::metadata(&file).expect("stat").len();
    let starts = frame_starts(&file);
    flip_byte(&file, starts[4] + 20);

    let message = expect_corrupt(
        Wal::open(dir, Index(1), Term(1), SEGMENT_BYTES_MAX),
        &file,
        starts[4] as u64,
    );
    assert!(
        message.contains(&format!(
            "a valid frame follows at byte offset {}",
            starts[5]
        )),
        "{message}"
    );
    assert_eq!(
        fs::metadata(&file).expect("stat").len(),
        len_before,
        "a refused WAL is not truncated"
    );
}

/// A missing segment in the middle is a gap: refused, naming the segment after it.
#[test]
fn missing_segment_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 30, 1);
    drop(wal);
    let files = segment_files(dir);
    fs::remove_file(&files[1]).expect("remove");
    let message = expect_corrupt(Wal::open(dir, Index(1), Term(1), 1024), &files[2], 20);
    assert!(message.contains("a segment is missing"), "{message}");
}

/// Replay returns only entries at or after `from`; a WAL behind the engine
/// restarts at `from` and drops its old segments on the next append.
#[test]
fn from_filters_replay_and_sets_the_next_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 20, 2);
    drop(wal);

    let (wal, replay) = open(dir, 15, 1024);
    assert_eq!(replay, entries(15, 20));
    assert_eq!(wal.last_index(), Index(20));
    drop(wal);

    // The engine applied everything: nothing to replay, append continues at 21.
    let (mut wal, replay) = open(dir, 21, 1024);
    assert!(replay.is_empty());
    assert_eq!(wal.last_index(), Index(20));
    append_synced(&mut wal, 21, 22, 2);
    drop(wal);

    // The engine is ahead of the WAL (restored from a checkpoint): start at `from`.
    let (mut wal, replay) = open(dir, 31, 1024);
    assert!(replay.is_empty());
    assert_eq!(wal.last_index(), Index(30));
    let old_segments = wal.segment_count();
    assert!(old_segments > 1);
    append_synced(&mut wal, 31, 32, 2);
    assert_eq!(
        wal.segment_count(),
        1,
        "segments wholly below `from` are dropped"
    );
    drop(wal);
    assert_eq!(
        segment_files(dir),
        vec![dir.join("00000000000000000031.wal")]
    );
    assert_eq!(open(dir, 31, 1024).1, entries(31, 32));

    // The engine is behind what the WAL still holds: refuse.
    let err = Wal::open(dir, Index(5), Term(1), 1024).expect_err("entries 5..30 are gone");
    assert!(
        matches!(
            err,
            WalError::Behind {
                from: Index(5),
                first: Index(31),
                ..
            }
        ),
        "{err:?}"
    );
}

/// `remove_segments_before` deletes only sealed segments wholly below the
/// index, oldest first, and never the current segment.
#[test]
fn remove_segments_before_keeps_the_current_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 60, 3);
    let files = segment_files(dir);
    let firsts: Vec<u64> = files
        .iter()
        .map(|f| {
            f.file_stem()
                .expect("stem")
                .to_str()
                .expect("utf-8")
                .parse()
                .expect("digits")
        })
        .collect();
    assert!(firsts.len() >= 4, "{firsts:?}");

    // An index inside segment 2 removes segments 0 and 1 only.
    let inside = firsts[2] + 1;
    assert_eq!(
        wal.remove_segments_before(Index(inside)).expect("remove"),
        2
    );
    assert_eq!(segment_files(dir), files[2..].to_vec());
    // Exactly the first index of the next segment removes the one before it.
    assert_eq!(
        wal.remove_segments_before(Index(firsts[3]))
            .expect("remove"),
        1
    );
    assert_eq!(
        wal.remove_segments_before(Index(firsts[3]))
            .expect("remove"),
        0
    );
    // Everything: the current segment stays.
    let removed = wal.remove_segments_before(Index(1_000)).expect("remove");
    assert_eq!(removed, firsts.len() - 4);
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(
        segment_files(dir),
        vec![files.last().expect("files").clone()]
    );
    append_synced(&mut wal, 61, 61, 1);
    drop(wal);

    let current_first = *firsts.last().expect("firsts");
    assert_eq!(open(dir, current_first, 1024).1, entries(current_first, 61));
}

/// A segment that is only a header (crash right after rotation) reopens
/// clean and the next append goes into it.
#[test]
fn header_only_segment_reopens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 20, 1);
    drop(wal);
    let files = segment_files(dir);
    let last = files.last().expect("segments");
    let first: u64 = last
        .file_stem()
        .expect("stem")
        .to_str()
        .expect("utf-8")
        .parse()
        .expect("digits");
    OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open")
        .set_len(32)
        .expect("cut to header");

    let (mut wal, replay) = open(dir, 1, 1024);
    assert_eq!(replay, entries(1, first - 1));
    append_synced(&mut wal, first, 20, 1);
    assert_eq!(
        segment_files(dir),
        files,
        "appends go into the header-only segment"
    );
    drop(wal);
    assert_eq!(open(dir, 1, 1024).1, entries(1, 20));
}

/// Leftovers of an interrupted segment creation are removed; a stray
/// `.wal` name is refused; other files are ignored.
#[test]
fn directory_hygiene() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, SEGMENT_BYTES_MAX);
    append_synced(&mut wal, 1, 3, 3);
    drop(wal);
    let temp = dir.join("00000000000000000004.wal.tmp");
    fs::write(&temp, b"T4WAL").expect("write tmp");
    fs::write(dir.join("README"), b"not a segment").expect("write other");
    let (_, replay) = open(dir, 1, SEGMENT_BYTES_MAX);
    assert_eq!(replay, entries(1, 3));
    assert!(!temp.exists(), "the .tmp leftover is removed");

    let stray = dir.join("backup.wal");
    fs::write(&stray, b"").expect("write stray");
    let err = Wal::open(dir, Index(1), Term(1), SEGMENT_BYTES_MAX).expect_err("stray .wal");
    assert!(
        matches!(&err, WalError::UnexpectedFile { path } if *path == stray),
        "{err:?}"
    );
}

/// An entry over the frame bound is refused before anything is written.
#[test]
fn oversized_entry_is_refused_and_the_wal_stays_usable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, SEGMENT_BYTES_MAX);
    append_synced(&mut wal, 1, 1, 1);
    let huge = entry(1, 2, t4_core::wal::FRAME_PAYLOAD_BYTES_MAX as usize);
    let err = wal.append(&[huge]).expect_err("too large");
    assert!(
        matches!(
            err,
            WalError::EntryTooLarge {
                index: Index(2),
                ..
            }
        ),
        "{err:?}"
    );
    append_synced(&mut wal, 2, 2, 1);
    drop(wal);
    assert_eq!(open(dir, 1, SEGMENT_BYTES_MAX).1, entries(1, 2));
}

/// Appending anything but the next index is a bug in the caller.
#[test]
#[should_panic(expected = "WAL append must continue the log")]
fn append_out_of_order_panics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open(tmp.path(), 1, SEGMENT_BYTES_MAX);
    wal.append(&entries(1, 2)).expect("append");
    wal.append(&entries(4, 4)).expect("append");
}

// ---- truncate_after: dropping a conflicting tail (cluster mode) ----

/// Entries `from..=to` of `term`, 100-byte values.
fn entries_of_term(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(term, i, 100)).collect()
}

/// First index of each segment file in `dir`, from the file names.
fn segment_firsts(dir: &Path) -> Vec<u64> {
    segment_files(dir)
        .iter()
        .map(|f| {
            f.file_stem()
                .expect("stem")
                .to_str()
                .expect("utf-8")
                .parse()
                .expect("digits")
        })
        .collect()
}

/// Every segment file's bytes, by path (to check that nothing changed).
fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segment_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).expect("read segment");
            (p, bytes)
        })
        .collect()
}

/// Mid-segment: the file is cut exactly where the first removed frame
/// started, and entries of a higher term continue the log; a reopen finds
/// the survivors followed by the new entries.
#[test]
fn truncate_after_mid_segment_then_higher_term_appends_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, SEGMENT_BYTES_MAX);
    append_synced(&mut wal, 1, 10, 4);
    let file = segment_files(dir).pop().expect("one segment");
    // The file may end in preallocated zeros: only the first 10 starts are frames.
    let starts = frame_starts(&file);

    wal.truncate_after(Index(6)).expect("truncate");
    assert_eq!(wal.last_index(), Index(6));
    assert_eq!(
        fs::metadata(&file).expect("stat").len(),
        starts[6] as u64,
        "cut where the frame of entry 7 started"
    );
    wal.set_term(Term(2));
    wal.append(&entries_of_term(7, 9, 2)).expect("append");
    wal.sync().expect("sync");
    assert_eq!(wal.last_index(), Index(9));
    drop(wal);

    let (wal, replay) = open(dir, 1, SEGMENT_BYTES_MAX);
    let mut expected = entries(1, 6);
    expected.extend(entries_of_term(7, 9, 2));
    assert_eq!(replay, expected);
    assert_eq!(wal.last_index(), Index(9));
    assert_eq!(segment_files(dir), vec![file], "still one segment");
}

/// Mid-way through a sealed segment: every newer segment is deleted, the
/// sealed one is cut and becomes the current one.
#[test]
fn truncate_after_in_a_sealed_segment_removes_the_newer_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 60, 1);
    let firsts = segment_firsts(dir);
    assert!(firsts.len() >= 5, "{firsts:?}");
    let files = segment_files(dir);
    // Two entries into segment 2.
    let keep = firsts[2] + 1;
    let starts = frame_starts(&files[2]);

    wal.truncate_after(Index(keep)).expect("truncate");
    assert_eq!(wal.last_index(), Index(keep));
    assert_eq!(wal.segment_count(), 3);
    assert_eq!(segment_files(dir), files[..3].to_vec());
    assert_eq!(
        fs::metadata(&files[2]).expect("stat").len(),
        starts[2] as u64
    );

    wal.append(&entries_of_term(keep + 1, keep + 12, 5))
        .expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (_, replay) = open(dir, 1, 1024);
    let mut expected = entries(1, keep);
    expected.extend(entries_of_term(keep + 1, keep + 12, 5));
    assert_eq!(replay, expected);
}

/// Exactly at a segment boundary (`index + 1` starts a segment): that
/// segment and all newer ones are deleted whole, the one before is kept
/// byte for byte, and appends continue after it.
#[test]
fn truncate_after_at_a_segment_boundary_deletes_whole_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 60, 1);
    let firsts = segment_firsts(dir);
    assert!(firsts.len() >= 4, "{firsts:?}");
    let before = snapshot_files(dir);
    let keep = firsts[2] - 1;

    wal.truncate_after(Index(keep)).expect("truncate");
    assert_eq!(wal.last_index(), Index(keep));
    assert_eq!(
        snapshot_files(dir),
        before[..2].to_vec(),
        "segments 0 and 1 untouched, the rest deleted"
    );

    wal.set_term(Term(3));
    wal.append(&entries_of_term(keep + 1, keep + 5, 3))
        .expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (wal, replay) = open(dir, 1, 1024);
    let mut expected = entries(1, keep);
    expected.extend(entries_of_term(keep + 1, keep + 5, 3));
    assert_eq!(replay, expected);
    assert_eq!(wal.last_index(), Index(keep + 5));
}

/// At or past the last index there is nothing to remove: no file changes.
#[test]
fn truncate_after_the_last_index_is_a_noop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 20, 2);
    let before = snapshot_files(dir);

    wal.truncate_after(Index(20)).expect("at the last index");
    wal.truncate_after(Index(25)).expect("past the last index");
    assert_eq!(wal.last_index(), Index(20));
    assert_eq!(snapshot_files(dir), before);
    append_synced(&mut wal, 21, 22, 2);
    drop(wal);
    assert_eq!(open(dir, 1, 1024).1, entries(1, 22));
}

/// Below the oldest index still held (the segments before were trimmed)
/// is refused with a clear error and changes nothing; one below the oldest
/// is allowed and deletes every segment.
#[test]
fn truncate_below_the_first_retained_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 60, 1);
    let firsts = segment_firsts(dir);
    assert!(firsts.len() >= 4, "{firsts:?}");
    let oldest = firsts[2];
    assert_eq!(wal.remove_segments_before(Index(oldest)).expect("trim"), 2);
    let before = snapshot_files(dir);

    let err = wal
        .truncate_after(Index(oldest - 2))
        .expect_err("entry oldest - 1 was trimmed");
    let message = err.to_string();
    assert!(
        matches!(
            err,
            WalError::TruncateBelowFirst { after, first, .. }
                if after == Index(oldest - 2) && first == Index(oldest)
        ),
        "{err:?}"
    );
    assert!(
        message.contains(&format!("after index {}", oldest - 2))
            && message.contains(&format!("nothing below index {oldest}")),
        "{message}"
    );
    assert_eq!(
        snapshot_files(dir),
        before,
        "a refused truncation changes nothing"
    );
    assert_eq!(wal.last_index(), Index(60));

    // The WAL stays usable...
    append_synced(&mut wal, 61, 61, 1);
    // ...and keeping only what the engine has (everything before `oldest`)
    // removes every segment.
    wal.truncate_after(Index(oldest - 1)).expect("truncate");
    assert_eq!(wal.segment_count(), 0);
    assert!(segment_files(dir).is_empty());
    assert_eq!(wal.last_index(), Index(oldest - 1));
    wal.set_term(Term(4));
    wal.append(&entries_of_term(oldest, oldest + 2, 4))
        .expect("append");
    wal.sync().expect("sync");
    drop(wal);
    assert_eq!(
        open(dir, oldest, 1024).1,
        entries_of_term(oldest, oldest + 2, 4)
    );
}

/// A WAL opened behind the engine (stale) or empty holds nothing to
/// truncate: below its next index is refused, at `next - 1` is a no-op.
#[test]
fn truncate_after_on_a_wal_that_holds_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 10, 1);
    drop(wal);
    // The engine is at 20: every segment on disk is stale.
    let (mut wal, replay) = open(dir, 21, 1024);
    assert!(replay.is_empty());
    let err = wal.truncate_after(Index(5)).expect_err("stale entries");
    assert!(
        matches!(
            err,
            WalError::TruncateBelowFirst {
                first: Index(21),
                ..
            }
        ),
        "{err:?}"
    );
    wal.truncate_after(Index(20)).expect("nothing to remove");
    append_synced(&mut wal, 21, 22, 1);
    drop(wal);
    assert_eq!(open(dir, 21, 1024).1, entries(21, 22));
}

/// Raft §5.3 (Figure 7-like): a follower drops entries of term 3 from a
/// deposed leader and takes the new leader's entries of a *lower* term 2
/// at the same indexes; the term check of `append` and of the replay on
/// open only compare with the entries kept.
#[test]
fn truncate_after_then_lower_term_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 5, 1);
    for deposed in entries_of_term(6, 30, 3) {
        wal.append(&[deposed]).expect("append");
    }
    wal.sync().expect("sync");
    assert!(wal.segment_count() >= 2, "term-3 entries span segments");

    wal.truncate_after(Index(5)).expect("truncate");
    wal.append(&entries_of_term(6, 8, 2))
        .expect("lower term after the cut");
    wal.sync().expect("sync");
    drop(wal);
    let (_, replay) = open(dir, 1, 1024);
    let mut expected = entries(1, 5);
    expected.extend(entries_of_term(6, 8, 2));
    assert_eq!(replay, expected);
}

/// Truncating among appends not yet synced, in a segment with preallocated
/// space: the cut drops the zeros too, a later `sync` works, and the kept
/// unsynced entries come back on reopen.
#[test]
fn truncate_after_among_unsynced_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, SEGMENT_BYTES_MAX);
    append_synced(&mut wal, 1, 4, 4);
    wal.append(&entries(5, 10)).expect("append, not synced");
    let file = segment_files(dir).pop().expect("one segment");
    assert!(
        fs::metadata(&file).expect("stat").len() >= t4_io_real::wal::PREALLOCATE_BYTES,
        "preallocated"
    );
    // Only the first 10 starts are frames; the rest walks the zeros.
    let starts = frame_starts(&file);

    wal.truncate_after(Index(7)).expect("truncate");
    assert_eq!(fs::metadata(&file).expect("stat").len(), starts[7] as u64);
    wal.sync().expect("nothing left to sync, and no panic");
    wal.append(&entries_of_term(8, 8, 2)).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let mut expected = entries(1, 7);
    expected.extend(entries_of_term(8, 8, 2));
    assert_eq!(open(dir, 1, SEGMENT_BYTES_MAX).1, expected);
}

/// A damaged segment refuses the truncation before any file changes (and
/// does not poison the WAL).
#[test]
fn truncate_after_a_corrupt_segment_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (mut wal, _) = open(dir, 1, 1024);
    append_synced(&mut wal, 1, 40, 1);
    let files = segment_files(dir);
    assert!(files.len() >= 3, "{files:?}");
    let starts = frame_starts(&files[1]);
    flip_byte(&files[1], starts[1] + 9);
    let before = snapshot_files(dir);

    let first_of_1 = segment_firsts(dir)[1];
    let err = wal
        .truncate_after(Index(first_of_1 + 2))
        .expect_err("segment 1 is damaged");
    assert!(
        matches!(&err, WalError::Corrupt { path, offset, .. }
            if *path == files[1] && *offset == starts[1] as u64),
        "{err:?}"
    );
    assert_eq!(snapshot_files(dir), before);
}

/// Hand measurement, not a regression test: append + fdatasync latency of a
/// 4 KiB batch. Run with
/// `cargo test --release -p t4-io-real --test wal_files -- --ignored --nocapture`
/// (set `T4_WAL_BENCH_DIR` to measure on another disk).
#[test]
#[ignore = "measurement; run by hand"]
fn measure_append_sync_4k() {
    let tmp = match std::env::var_os("T4_WAL_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let (mut wal, _) = open(tmp.path(), 1, SEGMENT_BYTES_MAX);
    // 16 entries of ~256 bytes: about 4 KiB of frames per batch.
    let batch_entries = 16u64;
    let rounds = 2_000u64;
    let mut total_us = Vec::with_capacity(rounds as usize);
    let mut append_us = Vec::with_capacity(rounds as usize);
    let mut batch_bytes = 0;
    for round in 0..rounds {
        let first = round * batch_entries + 1;
        let batch: Vec<Entry> = (first..first + batch_entries)
            .map(|i| entry(1, i, 230))
            .collect();
        let start = std::time::Instant::now();
        batch_bytes = wal.append(&batch).expect("append");
        append_us.push(start.elapsed().as_secs_f64() * 1e6);
        wal.sync().expect("sync");
        total_us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let quantile = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    };
    println!(
        "{batch_bytes}-byte batches, {rounds} rounds in {}: append+fdatasync p50 {:.1} us, p90 {:.1} us, \
         p99 {:.1} us; append alone p50 {:.1} us",
        tmp.path().display(),
        quantile(&mut total_us, 0.5),
        quantile(&mut total_us, 0.9),
        quantile(&mut total_us, 0.99),
        quantile(&mut append_us, 0.5),
    );
}
