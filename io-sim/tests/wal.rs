//! The simulated WAL's `truncate_after` (cluster mode: a follower drops a
//! tail that conflicts with the leader's): the same cases as io-real's
//! `wal_files` tests, plus what only the fake disk can show — a crash right
//! after the call keeps the truncation, and the usual loss of unsynced
//! appends after it.

use std::future::Future;

use madsim::runtime::Runtime;
use t4_core::kv::PutRequest;
use t4_core::log::{Entry, Payload};
use t4_core::{Index, Term};
use t4_io_sim::disk::{Disk, DiskFaults};
use t4_io_sim::wal::{Ledger, SimWal};

/// Small segments, so that 60 entries span several.
const SEGMENT_BYTES_MAX: usize = 1024;

fn sim<F: Future>(test: impl FnOnce() -> F) -> F::Output {
    Runtime::with_seed_and_config(7, madsim::Config::default()).block_on(test())
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: Some(Payload::Put(PutRequest {
            key: format!("key-{index}").into_bytes(),
            value: vec![(index % 251) as u8; 100],
            ..PutRequest::default()
        })),
    }
}

/// Entries `from..=to` of `term`.
fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(term, i)).collect()
}

fn open(disk: &Disk, ledger: &Ledger, from: u64) -> (SimWal, Vec<Entry>) {
    SimWal::open(disk, ledger, Index(from), Term(1), SEGMENT_BYTES_MAX).expect("open WAL")
}

/// Appends `from..=to` of `term` one entry at a time, syncing after each.
fn append_synced(wal: &mut SimWal, from: u64, to: u64, term: u64) {
    for e in entries(from, to, term) {
        wal.append(&[e]).expect("append");
        wal.sync().expect("sync");
    }
}

/// First index of each segment file, from the names.
fn segment_firsts(disk: &Disk) -> Vec<u64> {
    disk.list()
        .iter()
        .filter_map(|n| n.strip_prefix("wal/")?.strip_suffix(".wal")?.parse().ok())
        .collect()
}

/// Offsets where the frames of a segment start (walking the length fields).
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut offset = 32;
    while offset + 8 <= bytes.len() {
        starts.push(offset);
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        offset += 8 + len as usize;
    }
    starts
}

fn segment_name(first: u64) -> String {
    format!("wal/{first:020}.wal")
}

/// Every file's bytes (to check that nothing changed).
fn snapshot(disk: &Disk) -> Vec<(String, Vec<u8>)> {
    disk.list()
        .into_iter()
        .map(|n| {
            let bytes = disk.read(&n).expect("listed");
            (n, bytes)
        })
        .collect()
}

/// `a` followed by `b`.
fn concat(a: Vec<Entry>, b: Vec<Entry>) -> Vec<Entry> {
    a.into_iter().chain(b).collect()
}

/// Mid-segment: the segment is cut where the first removed frame started;
/// entries of a higher term continue the log and a reopen (after a crash)
/// finds exactly the survivors and the new entries. The ledger follows.
#[test]
fn truncate_after_mid_segment_then_higher_term_appends_reopen() {
    sim(|| async {
        let disk = Disk::new();
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 40, 1);
        let firsts = segment_firsts(&disk);
        assert!(firsts.len() >= 3, "{firsts:?}");
        let name = segment_name(firsts[1]);
        let starts = frame_starts(&disk.read(&name).expect("segment"));
        let keep = firsts[1] + 2;

        wal.truncate_after(Index(keep)).expect("truncate");
        assert_eq!(wal.last_index(), Index(keep));
        assert_eq!(segment_firsts(&disk), firsts[..2].to_vec());
        assert_eq!(disk.read(&name).expect("kept").len(), starts[3]);
        assert_eq!(
            ledger.entries(),
            entries(1, keep, 1),
            "the ledger forgets the tail"
        );

        wal.append(&entries(keep + 1, keep + 10, 2))
            .expect("append");
        wal.sync().expect("sync");
        assert_eq!(wal.last_index(), Index(keep + 10));
        let expected = concat(entries(1, keep, 1), entries(keep + 1, keep + 10, 2));
        assert_eq!(ledger.entries(), expected);
        drop(wal);
        disk.crash();
        let (wal, replay) = open(&disk, &ledger, 1);
        assert_eq!(replay, expected);
        assert_eq!(wal.last_index(), Index(keep + 10));
    });
}

/// Exactly at a segment boundary (`index + 1` starts a segment): that
/// segment and every newer one are removed whole, the older ones are kept
/// byte for byte, and appends continue after them.
#[test]
fn truncate_after_at_a_segment_boundary_deletes_whole_segments() {
    sim(|| async {
        let disk = Disk::new();
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 60, 1);
        let firsts = segment_firsts(&disk);
        assert!(firsts.len() >= 4, "{firsts:?}");
        let before = snapshot(&disk);
        let keep = firsts[2] - 1;

        wal.truncate_after(Index(keep)).expect("truncate");
        assert_eq!(wal.last_index(), Index(keep));
        assert_eq!(snapshot(&disk), before[..2].to_vec());

        append_synced(&mut wal, keep + 1, keep + 5, 3);
        drop(wal);
        let (wal, replay) = open(&disk, &ledger, 1);
        assert_eq!(
            replay,
            concat(entries(1, keep, 1), entries(keep + 1, keep + 5, 3))
        );
        assert_eq!(wal.last_index(), Index(keep + 5));
    });
}

/// At or past the last index there is nothing to remove: nothing changes.
#[test]
fn truncate_after_the_last_index_is_a_noop() {
    sim(|| async {
        let disk = Disk::new();
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 20, 1);
        let before = snapshot(&disk);
        wal.truncate_after(Index(20)).expect("at the last index");
        wal.truncate_after(Index(25)).expect("past the last index");
        assert_eq!(wal.last_index(), Index(20));
        assert_eq!(snapshot(&disk), before);
        assert_eq!(ledger.entries(), entries(1, 20, 1));
    });
}

/// Below the oldest index still held (older segments trimmed) is refused
/// with a clear error and changes nothing; one below the oldest removes
/// every segment, and the log continues there.
#[test]
fn truncate_below_the_first_retained_index() {
    sim(|| async {
        let disk = Disk::new();
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 60, 1);
        let firsts = segment_firsts(&disk);
        assert!(firsts.len() >= 4, "{firsts:?}");
        let oldest = firsts[2];
        assert_eq!(wal.remove_segments_before(Index(oldest)), 2);
        let before = snapshot(&disk);

        let err = wal
            .truncate_after(Index(oldest - 2))
            .expect_err("entry oldest - 1 was trimmed");
        assert!(
            err.contains(&format!("after index {}", oldest - 2))
                && err.contains(&format!("nothing below index {oldest}")),
            "{err}"
        );
        assert_eq!(
            snapshot(&disk),
            before,
            "a refused truncation changes nothing"
        );
        append_synced(&mut wal, 61, 61, 1);

        wal.truncate_after(Index(oldest - 1)).expect("truncate");
        assert_eq!(wal.segment_count(), 0);
        assert!(segment_firsts(&disk).is_empty());
        assert_eq!(wal.last_index(), Index(oldest - 1));
        append_synced(&mut wal, oldest, oldest + 2, 4);
        drop(wal);
        assert_eq!(
            open(&disk, &ledger, oldest).1,
            entries(oldest, oldest + 2, 4)
        );
    });
}

/// Raft §5.3: entries of a deposed leader (term 3) are replaced by the new
/// leader's of a *lower* term 2 at the same indexes; replay accepts it,
/// since it checks terms only along what is kept and what follows.
#[test]
fn truncate_after_then_lower_term_appends() {
    sim(|| async {
        let disk = Disk::new();
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 5, 1);
        append_synced(&mut wal, 6, 30, 3);
        wal.truncate_after(Index(5)).expect("truncate");
        append_synced(&mut wal, 6, 8, 2);
        drop(wal);
        let (_, replay) = open(&disk, &ledger, 1);
        assert_eq!(replay, concat(entries(1, 5, 1), entries(6, 8, 2)));
    });
}

/// A crash right after `truncate_after` keeps the truncation; appends after
/// it that were never synced are lost as usual, synced ones are kept.
#[test]
fn crash_right_after_truncate_after_keeps_the_truncation() {
    sim(|| async {
        let disk = Disk::new();
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 40, 1);

        wal.truncate_after(Index(25)).expect("truncate");
        drop(wal);
        disk.crash();
        let (mut wal, replay) = open(&disk, &ledger, 1);
        assert_eq!(replay, entries(1, 25, 1), "the removal survived the crash");
        assert_eq!(wal.last_index(), Index(25));

        wal.truncate_after(Index(20)).expect("truncate");
        append_synced(&mut wal, 21, 22, 2);
        wal.append(&entries(23, 24, 2)).expect("append, not synced");
        drop(wal);
        disk.crash();
        let (wal, replay) = open(&disk, &ledger, 1);
        let expected = concat(entries(1, 20, 1), entries(21, 22, 2));
        assert_eq!(replay, expected, "the unsynced appends are lost");
        assert_eq!(wal.last_index(), Index(22));
        assert_eq!(ledger.entries(), expected);
    });
}

/// Truncating among appends not yet synced: the fsync of the cut segment
/// makes the kept ones durable (as io-real's does), the removed ones are
/// gone, and a crash shows exactly that.
#[test]
fn truncate_after_among_unsynced_appends_makes_the_kept_ones_durable() {
    sim(|| async {
        let disk = Disk::new();
        disk.set_faults(DiskFaults {
            torn_writes: true,
            ..DiskFaults::default()
        });
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 4, 1);
        wal.append(&entries(5, 7, 1)).expect("append, not synced");
        wal.truncate_after(Index(6)).expect("truncate");
        assert_eq!(ledger.entries(), entries(1, 6, 1));
        drop(wal);
        disk.crash();
        let (_, replay) = open(&disk, &ledger, 1);
        assert_eq!(replay, entries(1, 6, 1));
    });
}

/// A failed fsync of the cut segment poisons the WAL; the removal itself
/// was durable, so after a crash the log ends at or before the index asked
/// for, and never below what was synced before.
#[test]
fn failed_fsync_in_truncate_after_poisons_and_keeps_the_removal() {
    sim(|| async {
        let disk = Disk::new();
        let ledger = Ledger::new();
        let (mut wal, _) = open(&disk, &ledger, 1);
        append_synced(&mut wal, 1, 30, 1);
        disk.set_faults(DiskFaults {
            fsync_error_rate: 1.0,
            ..DiskFaults::default()
        });
        let err = wal.truncate_after(Index(12)).expect_err("fsync fails");
        assert!(err.contains("injected fsync error"), "{err}");
        let err = wal.append(&entries(13, 13, 2)).expect_err("poisoned");
        assert!(err.contains("unusable"), "{err}");
        disk.set_faults(DiskFaults::default());
        drop(wal);
        disk.crash();
        let (wal, replay) = open(&disk, &ledger, 1);
        assert_eq!(replay, entries(1, 12, 1));
        assert_eq!(wal.last_index(), Index(12));
    });
}
