//! Recovery planners: exact choices, exact refusals, and a property test of
//! the bucket replay over random object splits.

use proptest::prelude::*;

use super::*;
use crate::bucket::layout::checkpoint_manifest_key;
use crate::kv::PutRequest;
use crate::log::Payload;

fn put(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        payload: Some(Payload::Put(PutRequest {
            key: format!("key-{index}").into_bytes(),
            value: format!("value-{index}").into_bytes(),
            ..PutRequest::default()
        })),
    }
}

/// Entries `first..=last`, all of term `term`.
fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last).map(|i| put(term, i)).collect()
}

fn indexes(of: &[Entry]) -> Vec<u64> {
    of.iter().map(|e| e.index).collect()
}

fn mkey(term: u64, index: u64) -> String {
    checkpoint_manifest_key(Term(term), Index(index))
}

fn candidate(term: u64, index: u64) -> CheckpointCandidate {
    CheckpointCandidate {
        manifest_key: mkey(term, index),
        term: Term(term),
        index: Index(index),
    }
}

// --- choosing a checkpoint -------------------------------------------------

/// Candidates are the listed manifests, newest first by (index, term), plus
/// the latest pointer's even when unlisted; other keys are ignored.
#[test]
fn candidates_newest_first() {
    let keys = vec![
        mkey(2, 100),
        format!("{}CURRENT", layout_dir(2, 100)),
        mkey(3, 100),
        mkey(1, 50),
        mkey(4, 90),
        "wal/00000000000000000001".to_owned(),
        "checkpoint/junk".to_owned(),
    ];
    assert_eq!(
        checkpoint_candidates(&keys, None),
        vec![
            candidate(3, 100),
            candidate(2, 100),
            candidate(4, 90),
            candidate(1, 50)
        ]
    );
    let latest = LatestPointer::to_checkpoint(Term(5), Index(120));
    assert_eq!(
        checkpoint_candidates(&keys[..1], Some(&latest)),
        vec![candidate(5, 120), candidate(2, 100)]
    );
    let listed_latest = LatestPointer::to_checkpoint(Term(2), Index(100));
    assert_eq!(
        checkpoint_candidates(&keys[..1], Some(&listed_latest)),
        vec![candidate(2, 100)],
        "the pointer does not duplicate a listed manifest"
    );
    assert_eq!(checkpoint_candidates(&[], None), vec![]);
}

fn layout_dir(term: u64, index: u64) -> String {
    crate::bucket::layout::checkpoint_dir(Term(term), Index(index))
}

/// A checkpoint whose object vanished while it was restored (GC after a
/// newer one superseded it) is worth a new listing, whose untried
/// checkpoints are the next candidates; a checkpoint damaged otherwise, or
/// a listing with nothing new, is not.
#[test]
fn a_vanished_object_lists_again_for_newer_checkpoints() {
    let missing = || CheckpointDamage::Missing {
        key: "sst/aaaaaaaaaaaaaaaa/000012.sst".into(),
    };
    let mut choice = CheckpointChoice::new(&[mkey(1, 50)], None);
    assert!(!choice.worth_relisting(), "a candidate is still left");
    let _ = choice.report_damaged(missing());
    assert!(choice.worth_relisting());
    // The new listing: GC removed 50's manifest, 2/120 is new.
    let mut choice = choice
        .relisted(&[mkey(2, 120)], None)
        .expect("a newer checkpoint appeared");
    assert_eq!(choice.current(), Some(&candidate(2, 120)));
    assert!(!choice.worth_relisting());
    // Damaged in another way: no new listing.
    let _ = choice.report_damaged(CheckpointDamage::Unusable { why: "x".into() });
    assert!(!choice.worth_relisting());
    assert_eq!(
        choice.damaged().len(),
        2,
        "reports are kept across listings"
    );

    // Nothing new in the listing: nothing to try.
    let mut choice = CheckpointChoice::new(&[mkey(1, 50)], None);
    let _ = choice.report_damaged(missing());
    assert!(choice.relisted(&[mkey(1, 50)], None).is_none());

    // At most RELISTS_MAX new listings, however many checkpoints vanish.
    let mut choice = CheckpointChoice::new(&[mkey(1, 10)], None);
    for i in 0..RELISTS_MAX {
        let _ = choice.report_damaged(missing());
        assert!(choice.worth_relisting(), "listing {i}");
        choice = choice
            .relisted(&[mkey(1, 20 + u64::from(i))], None)
            .expect("a new checkpoint");
    }
    let _ = choice.report_damaged(missing());
    assert!(!choice.worth_relisting());
}

/// A damaged newest checkpoint leads to the previous candidate, with a
/// warning naming both; when none is left, the WAL alone.
#[test]
fn damaged_newest_falls_back() {
    let keys = vec![mkey(1, 50), mkey(2, 100)];
    let mut choice = CheckpointChoice::new(&keys, None);
    assert_eq!(choice.current(), Some(&candidate(2, 100)));

    let sst = "sst/aaaaaaaaaaaaaaaa/000012.sst".to_owned();
    let fallback = choice.report_damaged(CheckpointDamage::Missing { key: sst.clone() });
    assert_eq!(
        fallback,
        Fallback::Next {
            candidate: candidate(1, 50),
            warning: format!(
                "checkpoint at index 100 (term 2, {}) is damaged: object {sst} is missing; \
                 falling back to the older checkpoint at index 50 (term 1, {})",
                mkey(2, 100),
                mkey(1, 50)
            ),
        }
    );
    assert_eq!(choice.current(), Some(&candidate(1, 50)));

    let hash = CheckpointDamage::Hash {
        key: "k".into(),
        expected: "a".repeat(64),
        actual: "b".repeat(64),
    };
    assert_eq!(
        choice.report_damaged(hash.clone()),
        Fallback::NoneLeft {
            warning: format!(
                "checkpoint at index 50 (term 1, {}) is damaged: object k has sha256 {}, the manifest says {}; \
                 no older checkpoint is left (2 damaged): restoring from the bucket's WAL alone",
                mkey(1, 50),
                "b".repeat(64),
                "a".repeat(64)
            ),
        }
    );
    assert_eq!(choice.current(), None);
    assert_eq!(
        choice.damaged(),
        &[
            DamagedCheckpoint {
                candidate: candidate(2, 100),
                damage: CheckpointDamage::Missing { key: sst },
            },
            DamagedCheckpoint {
                candidate: candidate(1, 50),
                damage: hash,
            },
        ]
    );
}

/// A downloaded file must have the manifest's size and hash.
#[test]
fn verify_downloaded_file() {
    let file = FileRef::sst("000012.sst", 10, &"ab".repeat(32));
    assert_eq!(verify_file(&file, 10, &"ab".repeat(32)), Ok(()));
    assert_eq!(
        verify_file(&file, 10, &"AB".repeat(32)),
        Ok(()),
        "hex case is not content"
    );
    assert_eq!(
        verify_file(&file, 11, &"ab".repeat(32)),
        Err(CheckpointDamage::Size {
            key: file.key.clone(),
            expected: 10,
            actual: 11
        })
    );
    assert_eq!(
        verify_file(&file, 10, &"cd".repeat(32)),
        Err(CheckpointDamage::Hash {
            key: file.key.clone(),
            expected: "ab".repeat(32),
            actual: "cd".repeat(32)
        })
    );
}

// --- bucket WAL replay -----------------------------------------------------

fn idx(v: &[u64]) -> Vec<Index> {
    v.iter().map(|&i| Index(i)).collect()
}

/// The module's worked example: objects 1–10, 11–20 (term 1), 21–22, 23–30
/// (term 2), local state at 14.
#[test]
fn worked_example() {
    let mut replay = BucketReplay::new(Index(14));
    let listing = idx(&[1, 11, 21, 23]);
    assert_eq!(replay.wanted(&listing), Ok(idx(&[11, 21, 23])));
    let got = replay.push(Index(11), Term(1), entries(11, 20, 1)).unwrap();
    assert_eq!(indexes(&got), (15..=20).collect::<Vec<_>>());
    assert_eq!(got, entries(15, 20, 1));
    let got = replay.push(Index(21), Term(2), entries(21, 22, 2)).unwrap();
    assert_eq!(got, entries(21, 22, 2));
    let got = replay.push(Index(23), Term(2), entries(23, 30, 2)).unwrap();
    assert_eq!(got, entries(23, 30, 2));
    assert_eq!((replay.next(), replay.last_term()), (Index(31), Term(2)));
    // A later listing: only what is new.
    assert_eq!(replay.wanted(&idx(&[1, 11, 21, 23])), Ok(vec![]));
    assert_eq!(replay.wanted(&idx(&[1, 11, 21, 23, 31])), Ok(idx(&[31])));
}

/// Nothing after `after` is fine: no listing, or one wholly before.
#[test]
fn nothing_after() {
    let replay = BucketReplay::new(Index(0));
    assert_eq!(replay.wanted(&[]), Ok(vec![]));
    let mut replay = BucketReplay::new(Index(40));
    assert_eq!(replay.wanted(&idx(&[1, 11])), Ok(idx(&[11])));
    assert_eq!(
        replay.push(Index(11), Term(1), entries(11, 40, 1)),
        Ok(vec![])
    );
    assert_eq!(replay.next(), Index(41));
    assert_eq!(replay.wanted(&idx(&[1, 11])), Ok(vec![]));
    // The bucket ends before the local state: nothing to replay either
    // (whether that is acceptable is `reconcile_local_tail`'s question).
    let mut replay = BucketReplay::new(Index(50));
    assert_eq!(
        replay.push(Index(11), Term(1), entries(11, 40, 1)),
        Ok(vec![])
    );
    assert_eq!(replay.next(), Index(51));
}

/// A bucket whose WAL starts after the local state is a hole at the start.
#[test]
fn hole_at_start() {
    let replay = BucketReplay::new(Index(0));
    let hole = replay.wanted(&idx(&[11, 21])).unwrap_err();
    assert_eq!(
        hole,
        ReplayHole {
            missing_first: Index(1),
            missing_last: Index(10),
            at_start: true
        }
    );
    assert_eq!(
        hole.to_string(),
        "the bucket's WAL starts at index 11 but the local state ends at index 0: entries 1..=10 \
         are missing; restore a checkpoint at index 10 or later"
    );
    let mut replay = BucketReplay::new(Index(4));
    assert_eq!(
        replay.push(Index(6), Term(1), entries(6, 9, 1)),
        Err(BucketReplayError::Hole(ReplayHole {
            missing_first: Index(5),
            missing_last: Index(5),
            at_start: true
        }))
    );
}

/// A hole between objects is refused, naming exactly the missing indexes.
#[test]
fn hole_in_the_middle() {
    let mut replay = BucketReplay::new(Index(0));
    assert_eq!(replay.wanted(&idx(&[1, 11, 21])), Ok(idx(&[1, 11, 21])));
    replay.push(Index(1), Term(1), entries(1, 10, 1)).unwrap();
    // wal/11 holds only 11–15; wal/21 starts at 21.
    replay.push(Index(11), Term(1), entries(11, 15, 1)).unwrap();
    let err = replay
        .push(Index(21), Term(1), entries(21, 25, 1))
        .unwrap_err();
    assert_eq!(
        err,
        BucketReplayError::Hole(ReplayHole {
            missing_first: Index(16),
            missing_last: Index(20),
            at_start: false
        })
    );
    assert_eq!(
        err.to_string(),
        "the bucket's WAL has a hole: entries 16..=20 are missing (the objects before end at index 15, \
         wal/00000000000000000021 starts at index 21)"
    );
    assert_eq!(replay.next(), Index(16), "a refused push changes nothing");
    // The same hole seen from a fresh listing after the pushes.
    assert!(matches!(
        replay.wanted(&idx(&[21])),
        Err(ReplayHole {
            at_start: false,
            ..
        })
    ));
}

/// Overlapping objects are fine when they repeat the same entries, and
/// corruption when they differ.
#[test]
fn overlaps() {
    let mut replay = BucketReplay::new(Index(0));
    replay.push(Index(1), Term(1), entries(1, 10, 1)).unwrap();
    let got = replay.push(Index(6), Term(1), entries(6, 14, 1)).unwrap();
    assert_eq!(
        got,
        entries(11, 14, 1),
        "identical overlap: only the new entries"
    );
    // Wholly inside what is known, identical: nothing new.
    assert_eq!(
        replay.push(Index(12), Term(1), entries(12, 13, 1)),
        Ok(vec![])
    );

    let mut different = entries(13, 16, 1);
    different[1].payload = Some(Payload::Put(PutRequest {
        key: b"other".to_vec(),
        ..PutRequest::default()
    }));
    let err = replay.push(Index(13), Term(1), different).unwrap_err();
    assert_eq!(
        err.to_string(),
        "wal/00000000000000000013 disagrees with the objects before it at index 14: both have term 1, \
         with different contents; the bucket holds two histories"
    );
    let err = replay
        .push(Index(13), Term(2), entries(13, 16, 2))
        .unwrap_err();
    assert_eq!(
        err,
        BucketReplayError::Overlap {
            key: "wal/00000000000000000013".into(),
            index: Index(13),
            why: "it has term 2, an earlier object has term 1".into()
        }
    );
    assert_eq!(replay.next(), Index(15));

    // An overlap reaching back before `after` into the first object is
    // compared too: the first object's older entries are remembered.
    let mut replay = BucketReplay::new(Index(8));
    replay.push(Index(1), Term(1), entries(1, 10, 1)).unwrap();
    let mut changed = entries(5, 12, 1);
    changed[0].term = 0;
    assert!(matches!(
        replay.push(Index(5), Term(1), changed),
        Err(BucketReplayError::Overlap {
            index: Index(5),
            ..
        })
    ));

    // Objects wholly before `after`, with a gap between them below
    // `after`: not a hole for this replay, and later overlaps are still
    // compared against what was read.
    let mut replay = BucketReplay::new(Index(50));
    assert_eq!(
        replay.push(Index(11), Term(1), entries(11, 40, 1)),
        Ok(vec![])
    );
    assert_eq!(
        replay.push(Index(45), Term(1), entries(45, 55, 1)),
        Ok(entries(51, 55, 1))
    );
    assert!(matches!(
        replay.push(Index(48), Term(2), entries(48, 56, 2)),
        Err(BucketReplayError::Overlap {
            index: Index(48),
            ..
        })
    ));
    assert_eq!(
        replay.push(Index(48), Term(1), entries(48, 56, 1)),
        Ok(entries(56, 56, 1))
    );
}

/// Terms never go down: across objects, within one, and between the
/// objects' writers; and no entry is newer than its writer.
#[test]
fn terms_never_go_down() {
    let mut replay = BucketReplay::new(Index(0));
    replay.push(Index(1), Term(3), entries(1, 5, 3)).unwrap();
    assert_eq!(
        replay.push(Index(6), Term(3), entries(6, 8, 2)).unwrap_err().to_string(),
        "wal/00000000000000000006: entry 6 has term 2, below term 3 of entry 5; terms never go down"
    );
    assert_eq!(
        replay.push(Index(6), Term(2), entries(6, 8, 2)).unwrap_err().to_string(),
        "wal/00000000000000000006: written in term 2, after an object written in term 3; terms never go down"
    );
    let mut mixed = entries(6, 8, 4);
    mixed[2].term = 3;
    assert_eq!(
        replay.push(Index(6), Term(4), mixed).unwrap_err().to_string(),
        "wal/00000000000000000006: entry 8 has term 3, below term 4 of entry 7; terms never go down"
    );
    assert_eq!(
        replay
            .push(Index(6), Term(3), entries(6, 8, 4))
            .unwrap_err()
            .to_string(),
        "wal/00000000000000000006: entry 6 has term 4, above the writer's term 3 in the header"
    );
    assert_eq!(
        replay
            .push(Index(6), Term(3), entries(7, 8, 3))
            .unwrap_err()
            .to_string(),
        "wal/00000000000000000006: its first entry is 7, its key says 6"
    );
    assert_eq!(
        replay
            .push(Index(6), Term(3), vec![])
            .unwrap_err()
            .to_string(),
        "wal/00000000000000000006: holds no entry"
    );
    // A fence: a higher writer term with old entries, then new ones.
    let mut fence = entries(6, 7, 3);
    fence.push(put(5, 8));
    assert_eq!(
        indexes(&replay.push(Index(6), Term(5), fence).unwrap()),
        vec![6, 7, 8]
    );
    assert_eq!(replay.last_term(), Term(5));
}

/// Pushing out of listing order is a driver bug.
#[test]
#[should_panic(expected = "WAL objects must be pushed in listing order")]
fn out_of_order_push_panics() {
    let mut replay = BucketReplay::new(Index(0));
    replay.push(Index(1), Term(1), entries(1, 9, 1)).unwrap();
    let _ = replay.push(Index(1), Term(1), entries(1, 9, 1));
}

/// A contiguous log of `len` entries with non-decreasing terms.
fn log_strategy() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(0u64..3, 1..60).prop_map(|bumps| {
        let mut term = 1;
        bumps
            .iter()
            .enumerate()
            .map(|(i, bump)| {
                if *bump == 0 {
                    term += 1;
                }
                put(term, i as u64 + 1)
            })
            .collect()
    })
}

/// Replays `objects` (first index, entries) after `after`; Ok(all replayed).
fn replay_all(after: u64, objects: &[(u64, Vec<Entry>)]) -> Result<Vec<Entry>, String> {
    let mut replay = BucketReplay::new(Index(after));
    let listing: Vec<Index> = objects.iter().map(|o| Index(o.0)).collect();
    let wanted = replay.wanted(&listing).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for first in wanted {
        let (_, es) = objects
            .iter()
            .find(|o| o.0 == first.0)
            .expect("wanted a listed object");
        let term = Term(es.iter().map(|e| e.term).max().expect("non-empty"));
        out.extend(
            replay
                .push(first, term, es.clone())
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

proptest! {
    /// Any split of a contiguous log into objects replays exactly the
    /// entries after `after`.
    #[test]
    fn random_splits_replay_exactly_the_tail(
        log in log_strategy(),
        cuts in prop::collection::btree_set(2u64..60, 0..10),
        after_seed in 0u64..100,
    ) {
        let len = log.len() as u64;
        let after = after_seed % (len + 1);
        let mut starts: Vec<u64> = std::iter::once(1).chain(cuts.into_iter().filter(|&c| c <= len)).collect();
        starts.dedup();
        let objects: Vec<(u64, Vec<Entry>)> = starts
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let end = starts.get(k + 1).map_or(len, |&n| n - 1);
                (s, log[(s - 1) as usize..end as usize].to_vec())
            })
            .collect();
        let got = replay_all(after, &objects);
        prop_assert_eq!(got, Ok(log[after as usize..].to_vec()));
    }

    /// Objects that overlap their predecessor with identical entries change
    /// nothing; dropping an object (not the last: a lost last object just
    /// looks like a shorter log) that alone held a needed index is a hole.
    #[test]
    fn overlapping_objects_and_holes(
        log in log_strategy(),
        cuts in prop::collection::btree_set(2u64..60, 1..10),
        back in prop::collection::vec(0u64..5, 10),
        after_seed in 0u64..100,
        drop_seed in 0usize..10,
    ) {
        let len = log.len() as u64;
        let after = after_seed % (len + 1);
        let mut starts: Vec<u64> = std::iter::once(1).chain(cuts.into_iter().filter(|&c| c <= len)).collect();
        starts.dedup();
        // Each object may start up to `back` entries early, but after the
        // previous object's start.
        let objects: Vec<(u64, Vec<Entry>)> = starts
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let floor = if k == 0 { 1 } else { starts[k - 1] + 1 };
                let s = s.saturating_sub(back[k % back.len()]).max(floor);
                let end = starts.get(k + 1).map_or(len, |&n| n - 1);
                (s, log[(s - 1) as usize..end as usize].to_vec())
            })
            .collect();
        prop_assert_eq!(replay_all(after, &objects), Ok(log[after as usize..].to_vec()));

        if objects.len() >= 2 {
            let drop = drop_seed % (objects.len() - 1);
            let mut fewer = objects.clone();
            let (first, removed) = fewer.remove(drop);
            let last = first + removed.len() as u64 - 1;
            // Indexes the removed object alone held, that the replay needs.
            let still_held = |i: u64| fewer.iter().any(|(f, es)| *f <= i && i < f + es.len() as u64);
            let needed_gone = (first..=last).any(|i| i > after && !still_held(i));
            let got = replay_all(after, &fewer);
            if needed_gone {
                prop_assert!(got.is_err(), "a needed object was dropped but the replay succeeded");
                let err = got.unwrap_err();
                prop_assert!(err.contains("missing"), "{}", err);
            } else {
                prop_assert_eq!(got, Ok(log[after as usize..].to_vec()));
            }
        }
    }
}

// --- local tail against the bucket -----------------------------------------

/// Local and bucket agree and the bucket holds all: in sync.
#[test]
fn local_in_sync() {
    let bucket = entries(10, 20, 1);
    assert_eq!(
        reconcile_local_tail(Index(10), Term(1), &entries(11, 15, 1), &bucket),
        Ok(LocalTail::InSync)
    );
    assert_eq!(
        reconcile_local_tail(Index(10), Term(1), &[], &bucket),
        Ok(LocalTail::InSync)
    );
    assert_eq!(
        reconcile_local_tail(Index(0), Term(0), &[], &[]),
        Ok(LocalTail::InSync)
    );
}

/// Local entries beyond the bucket's end continue it: upload them.
#[test]
fn local_extends_the_bucket() {
    assert_eq!(
        reconcile_local_tail(Index(10), Term(1), &entries(11, 25, 1), &entries(10, 20, 1)),
        Ok(LocalTail::Upload {
            first: Index(21),
            last: Index(25)
        })
    );
    // Fresh bucket, local WAL from 1, nothing applied.
    assert_eq!(
        reconcile_local_tail(Index(0), Term(0), &entries(1, 3, 1), &[]),
        Ok(LocalTail::Upload {
            first: Index(1),
            last: Index(3)
        })
    );
    // The bucket ends exactly at the applied index.
    assert_eq!(
        reconcile_local_tail(Index(10), Term(1), &entries(11, 12, 1), &entries(10, 10, 1)),
        Ok(LocalTail::Upload {
            first: Index(11),
            last: Index(12)
        })
    );
}

/// A local entry after the applied index that the bucket contradicts: the
/// bucket wins, cut there.
#[test]
fn local_conflict_is_cut() {
    let mut bucket = entries(10, 14, 1);
    bucket.extend(entries(15, 18, 2)); // a new writer took over at 15
    assert_eq!(
        reconcile_local_tail(Index(10), Term(1), &entries(11, 22, 1), &bucket),
        Ok(LocalTail::Cut { from: Index(15) })
    );
    // Same term, different bytes.
    let mut local = entries(11, 13, 1);
    local[1].payload = None;
    assert_eq!(
        reconcile_local_tail(Index(10), Term(1), &local, &entries(10, 20, 1)),
        Ok(LocalTail::Cut { from: Index(12) })
    );
}

/// Applied state that contradicts the bucket, or that the bucket lacks,
/// refuses the start.
#[test]
fn applied_state_refusals() {
    let mut bucket = entries(8, 9, 1);
    bucket.extend(entries(10, 20, 2));
    let err = reconcile_local_tail(Index(10), Term(1), &[], &bucket).unwrap_err();
    assert_eq!(
        err.to_string(),
        "local state diverges from the bucket at index 10: the engine applied an entry of term 1 there, \
         the bucket has term 2; restore from a checkpoint (move the local data directory away and start again)"
    );
    // The local WAL still holds applied entries, and one differs earlier.
    let err = reconcile_local_tail(Index(10), Term(1), &entries(8, 12, 1), &bucket).unwrap_err();
    assert_eq!(
        err,
        LocalDivergence::Diverged {
            index: Index(10),
            why: "the local WAL has term 1, the bucket term 2 (the engine has applied up to index 10)".into()
        }
    );
    let err = reconcile_local_tail(Index(10), Term(1), &[], &entries(5, 8, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "local state is ahead of the bucket: the engine applied index 10 but the bucket's WAL ends at index 8; \
         the bucket lost entries or belongs to another history: check the bucket and prefix, or move the \
         local data directory away to restore from the bucket"
    );
    assert_eq!(
        reconcile_local_tail(Index(10), Term(1), &entries(11, 12, 1), &[]),
        Err(LocalDivergence::Ahead {
            applied: Index(10),
            bucket_last: None
        })
    );
}
