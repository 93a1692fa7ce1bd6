//! Start-up from a bucket: which checkpoint to restore, which WAL objects to
//! replay after it, and what to do with a local WAL that the bucket
//! disagrees with (ARCHITECTURE §3.4, §3.10).
//!
//! Pure, like the local WAL replay ([`crate::wal::ReplayPlanner`]): the
//! driver lists and downloads; these planners decide. Three pieces, used in this order:
//!
//! 1. [`CheckpointChoice`]: the checkpoint candidates newest first. The
//!    driver restores the current one; if it is damaged (a file missing or
//!    with the wrong hash, an invalid manifest, an engine that will not open
//!    it) it reports a [`CheckpointDamage`] and is told what to try next,
//!    with the warning to log.
//! 2. [`BucketReplay`]: continue the log from the restored (or local)
//!    state's last index through the bucket's `wal/` objects, refusing holes,
//!    overlaps that disagree, and terms that go back.
//! 3. [`reconcile_local_tail`]: with a local engine and WAL present (sync
//!    mode), keep local entries that extend the bucket, cut those the
//!    bucket contradicts, and refuse when the applied state itself
//!    contradicts the bucket.
//!
//! Every refusal says which indexes or objects are involved, so an operator
//! reading the log knows what happened and what to restore.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use super::layout::{parse_checkpoint_manifest_key, wal_key};
use super::manifest::{FileRef, LatestPointer, ManifestError};
use crate::log::Entry;
use crate::types::{Index, Term};

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------
// Choosing a checkpoint
// ---------------------------------------------------------------------------

/// A checkpoint that may be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointCandidate {
    /// Its manifest's key.
    pub manifest_key: String,
    /// The term in its key.
    pub term: Term,
    /// The index in its key.
    pub index: Index,
}

impl fmt::Display for CheckpointCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint at index {} (term {}, {})",
            self.index, self.term, self.manifest_key
        )
    }
}

/// The checkpoints worth trying, newest first by `(index, term)`.
///
/// `keys` is any listing of the bucket (keys that are not checkpoint
/// manifests are ignored; a manifest is written last, so a listed one marks
/// a complete upload). The latest pointer's checkpoint is included even if
/// the listing lacks it (it then fails as missing and the next is tried);
/// manifests newer than the pointer are included too, since the pointer is
/// updated after the manifest and may lag behind a crash.
#[must_use]
pub fn checkpoint_candidates(
    keys: &[String],
    latest: Option<&LatestPointer>,
) -> Vec<CheckpointCandidate> {
    let mut found: Vec<CheckpointCandidate> = keys
        .iter()
        .filter_map(|key| {
            parse_checkpoint_manifest_key(key).map(|(term, index)| CheckpointCandidate {
                manifest_key: key.clone(),
                term,
                index,
            })
        })
        .collect();
    if let Some(p) = latest {
        found.push(CheckpointCandidate {
            manifest_key: p.manifest_key.clone(),
            term: p.term,
            index: p.index,
        });
    }
    found.sort_by_key(|c| std::cmp::Reverse((c.index, c.term)));
    found.dedup_by(|a, b| a.manifest_key == b.manifest_key);
    found
}

/// Why a checkpoint cannot be restored. Report only permanent damage: a
/// [`crate::object::ObjectError::Retryable`] is retried by the driver, not
/// reported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointDamage {
    /// The manifest is not valid.
    #[error("{0}")]
    Manifest(ManifestError),
    /// An object the checkpoint needs (its manifest, an SST, a meta file)
    /// is not in the bucket.
    #[error("object {key} is missing")]
    Missing {
        /// The missing key.
        key: String,
    },
    /// A downloaded file does not have the size the manifest says.
    #[error("object {key} has {actual} bytes, the manifest says {expected}")]
    Size {
        /// The file's key.
        key: String,
        /// Size in the manifest.
        expected: u64,
        /// Size downloaded.
        actual: u64,
    },
    /// A downloaded file does not have the hash the manifest says.
    #[error("object {key} has sha256 {actual}, the manifest says {expected}")]
    Hash {
        /// The file's key.
        key: String,
        /// Hash in the manifest.
        expected: String,
        /// Hash of the bytes downloaded.
        actual: String,
    },
    /// The files are intact but the engine would not open them.
    #[error("the engine cannot open it: {why}")]
    Unusable {
        /// The engine's message.
        why: String,
    },
}

/// Checks a downloaded file against its manifest entry. The driver hashes
/// (core has no sha256); core decides.
///
/// # Errors
/// [`CheckpointDamage::Size`] or [`CheckpointDamage::Hash`].
pub fn verify_file(
    file: &FileRef,
    size_bytes: u64,
    sha256_hex: &str,
) -> Result<(), CheckpointDamage> {
    if size_bytes != file.size_bytes {
        return Err(CheckpointDamage::Size {
            key: file.key.clone(),
            expected: file.size_bytes,
            actual: size_bytes,
        });
    }
    if !sha256_hex.eq_ignore_ascii_case(&file.sha256) {
        return Err(CheckpointDamage::Hash {
            key: file.key.clone(),
            expected: file.sha256.clone(),
            actual: sha256_hex.to_owned(),
        });
    }
    Ok(())
}

/// A candidate found damaged, as reported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{candidate} is damaged: {damage}")]
pub struct DamagedCheckpoint {
    /// Which.
    pub candidate: CheckpointCandidate,
    /// Why.
    pub damage: CheckpointDamage,
}

/// What to do after a damaged checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Try this older checkpoint. Log `warning`.
    Next {
        /// The candidate to restore now.
        candidate: CheckpointCandidate,
        /// What to log (at warn level).
        warning: String,
    },
    /// No candidate is left: restore from the bucket's WAL alone (an empty
    /// engine, [`BucketReplay::new`]`(Index(0))`), which works only while
    /// the WAL still starts at index 1; otherwise the replay refuses with
    /// a hole, and `warning` plus [`CheckpointChoice::damaged`] explain why
    /// no checkpoint could be used.
    NoneLeft {
        /// What to log (at error level).
        warning: String,
    },
}

/// The fall-back decision over [`checkpoint_candidates`]: restore
/// [`CheckpointChoice::current`]; on damage, [`CheckpointChoice::report_damaged`]
/// says what next.
///
/// Once every candidate failed, [`CheckpointChoice::worth_relisting`] says
/// whether to list the bucket again and try [`CheckpointChoice::relisted`]:
/// a checkpoint whose object vanished while it was being restored was most
/// likely collected by another node's GC because a newer checkpoint
/// superseded it meanwhile, and that newer one is the one to restore.
#[derive(Clone, Debug)]
pub struct CheckpointChoice {
    remaining: VecDeque<CheckpointCandidate>,
    damaged: Vec<DamagedCheckpoint>,
    /// Manifest keys tried since the first listing.
    tried: BTreeSet<String>,
    /// An object went missing since the last listing.
    vanished: bool,
    /// Listings after the first.
    relists: u32,
}

/// How many times a restore lists the bucket again after checkpoints
/// vanished under it ([`CheckpointChoice::worth_relisting`]).
const RELISTS_MAX: u32 = 3;

impl CheckpointChoice {
    /// Candidates from a listing and the latest pointer
    /// ([`checkpoint_candidates`]).
    #[must_use]
    pub fn new(keys: &[String], latest: Option<&LatestPointer>) -> CheckpointChoice {
        CheckpointChoice {
            remaining: checkpoint_candidates(keys, latest).into(),
            damaged: Vec::new(),
            tried: BTreeSet::new(),
            vanished: false,
            relists: 0,
        }
    }

    /// Every candidate failed, and one of them because an object was
    /// missing: a new listing may hold a newer checkpoint (at most
    /// [`RELISTS_MAX`] new listings).
    #[must_use]
    pub fn worth_relisting(&self) -> bool {
        self.remaining.is_empty() && self.vanished && self.relists < RELISTS_MAX
    }

    /// The candidates of a new listing not tried yet (keeping what was
    /// reported damaged); `None` if there are none.
    #[must_use]
    pub fn relisted(
        self,
        keys: &[String],
        latest: Option<&LatestPointer>,
    ) -> Option<CheckpointChoice> {
        let remaining: VecDeque<CheckpointCandidate> = checkpoint_candidates(keys, latest)
            .into_iter()
            .filter(|c| !self.tried.contains(&c.manifest_key))
            .collect();
        if remaining.is_empty() {
            return None;
        }
        Some(CheckpointChoice {
            remaining,
            vanished: false,
            relists: self.relists + 1,
            ..self
        })
    }

    /// The checkpoint to restore now; `None` when there is none (a bucket
    /// without checkpoints, or all were damaged): replay the WAL from index
    /// 1.
    #[must_use]
    pub fn current(&self) -> Option<&CheckpointCandidate> {
        self.remaining.front()
    }

    /// Records that the current candidate is damaged and moves to the next.
    ///
    /// # Panics
    /// No current candidate.
    pub fn report_damaged(&mut self, damage: CheckpointDamage) -> Fallback {
        let candidate = self
            .remaining
            .pop_front()
            .expect("report_damaged: no checkpoint is being tried");
        self.tried.insert(candidate.manifest_key.clone());
        self.vanished |= matches!(damage, CheckpointDamage::Missing { .. });
        let damaged = DamagedCheckpoint { candidate, damage };
        let fallback = match self.remaining.front() {
            Some(next) => Fallback::Next {
                candidate: next.clone(),
                warning: format!("{damaged}; falling back to the older {next}"),
            },
            None => Fallback::NoneLeft {
                warning: format!(
                    "{damaged}; no older checkpoint is left ({} damaged): restoring from the bucket's WAL alone",
                    self.damaged.len() + 1
                ),
            },
        };
        self.damaged.push(damaged);
        fallback
    }

    /// Every damaged candidate reported so far, newest first.
    #[must_use]
    pub fn damaged(&self) -> &[DamagedCheckpoint] {
        &self.damaged
    }
}

// ---------------------------------------------------------------------------
// Replaying the bucket's WAL
// ---------------------------------------------------------------------------

/// Entries the log needs that no WAL object holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ReplayHole {
    /// The first missing index.
    pub missing_first: Index,
    /// The last missing index (the object after the hole starts at the
    /// next one).
    pub missing_last: Index,
    /// Whether the hole is between the local state and the bucket's first
    /// usable object (rather than between two objects).
    pub at_start: bool,
}

impl fmt::Display for ReplayHole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let after = self.missing_first.0 - 1;
        let resumes = self.missing_last.next();
        if self.at_start {
            write!(
                f,
                "the bucket's WAL starts at index {resumes} but the local state ends at index {after}: \
                 entries {}..={} are missing; restore a checkpoint at index {} or later",
                self.missing_first, self.missing_last, self.missing_last
            )
        } else {
            write!(
                f,
                "the bucket's WAL has a hole: entries {}..={} are missing (the objects before end at \
                 index {after}, {} starts at index {resumes})",
                self.missing_first,
                self.missing_last,
                wal_key(resumes)
            )
        }
    }
}

/// Why the bucket's WAL cannot continue the log. Each names the object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BucketReplayError {
    /// Entries are missing.
    #[error("{0}")]
    Hole(ReplayHole),
    /// An object repeats indexes read from earlier objects, with different
    /// contents: the bucket holds two histories.
    #[error(
        "{key} disagrees with the objects before it at index {index}: {why}; the bucket holds two histories"
    )]
    Overlap {
        /// The later object.
        key: String,
        /// The first index where they differ.
        index: Index,
        /// How.
        why: String,
    },
    /// A term goes down.
    #[error("{key}: {why}; terms never go down")]
    TermBackwards {
        /// The object.
        key: String,
        /// Which terms.
        why: String,
    },
    /// The object's entries do not fit its key and header.
    #[error("{key}: {why}")]
    Malformed {
        /// The object.
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// Continues the log from a local state that ends at `after` through the
/// bucket's WAL objects.
///
/// The driver lists `wal/`, asks [`BucketReplay::wanted`] which objects to
/// download, decodes each ([`super::wal_object::decode`]) and pushes it
/// ([`BucketReplay::push`]) in listing order, replaying what each push
/// returns. It may list again later (more objects may have appeared) and
/// ask `wanted` again: it starts from where the pushes got to.
///
/// Memory: the planner keeps the entries of the span from the last pushed
/// object's first index to the end (to check the next object's overlap),
/// so one object's worth.
///
/// # Worked example
///
/// Objects `wal/1` (1–10, term 1), `wal/11` (11–20, term 1), `wal/21`
/// (21–22, term 2, a fence), `wal/23` (23–30, term 2); `after` = 14.
/// `wanted` = `[11, 21, 23]` (`wal/1` ends before 15). Pushing 11 returns
/// 15–20, 21 returns 21–22, 23 returns 23–30; then `next()` = 31. Had
/// `wal/21` been lost: pushing 23 after 11 is a hole, "entries 21..=22 are
/// missing". With `after` = 0 and `wal/1` lost: `wanted` refuses, "the
/// bucket's WAL starts at index 11 but the local state ends at index 0".
#[derive(Clone, Debug)]
pub struct BucketReplay {
    after: Index,
    /// The next index the log needs.
    next: Index,
    /// Term of the entry at `next - 1`, when read from the bucket (0 before).
    last_term: Term,
    /// Header term of the last pushed object (0 before).
    last_object_term: Term,
    /// First index of the last pushed object.
    last_first: Option<Index>,
    /// Entries read from pushed objects (including ones at or before
    /// `after`), contiguous, starting at `last_first`, ending before `next`:
    /// what a later object that overlaps must repeat.
    window: VecDeque<Entry>,
}

impl BucketReplay {
    /// A replay for a local state holding every entry up to `after`
    /// (`Index(0)`: empty).
    #[must_use]
    pub fn new(after: Index) -> BucketReplay {
        BucketReplay {
            after,
            next: after.next(),
            last_term: Term(0),
            last_object_term: Term(0),
            last_first: None,
            window: VecDeque::new(),
        }
    }

    /// The next index the log needs: one past the last entry read.
    #[must_use]
    pub fn next(&self) -> Index {
        self.next
    }

    /// The term of the last entry read from the bucket (0 before any).
    #[must_use]
    pub fn last_term(&self) -> Term {
        self.last_term
    }

    /// Which objects to download, in order, given the first indexes of the
    /// `wal/` objects (sorted, as listed): the last one starting at or
    /// before [`BucketReplay::next`] (it holds `next`, unless there is a
    /// hole) and every later one. An empty listing, or one wholly before
    /// `next`, asks for what may still hold `next` and nothing else: there
    /// being nothing after `after` is fine.
    ///
    /// # Errors
    /// A [`ReplayHole`] when the first listed object starts after `next`.
    ///
    /// # Panics
    /// `listing` is not strictly increasing.
    pub fn wanted(&self, listing: &[Index]) -> Result<Vec<Index>, ReplayHole> {
        assert!(
            listing.windows(2).all(|w| w[0] < w[1]),
            "the WAL listing must be sorted and unique: {listing:?}"
        );
        let Some(&first) = listing.first() else {
            return Ok(Vec::new());
        };
        if first > self.next {
            return Err(ReplayHole {
                missing_first: self.next,
                missing_last: Index(first.0 - 1),
                at_start: self.last_first.is_none(),
            });
        }
        let holding_next = listing.partition_point(|&f| f <= self.next) - 1;
        // The last pushed object ends at `next - 1`, so it never holds
        // `next`: do not download it again.
        let from = if Some(listing[holding_next]) == self.last_first {
            holding_next + 1
        } else {
            holding_next
        };
        Ok(listing[from..].to_vec())
    }

    /// Checks the next object (its key's first index, its header term, its
    /// entries) and returns the entries to replay: those from
    /// [`BucketReplay::next`] on, possibly none.
    ///
    /// Checks: the entries start at `first`, are contiguous and have terms
    /// that never go down and never exceed the writer's `term`; object
    /// terms never go down; the object starts no later than `next` (else a
    /// hole); entries it repeats from earlier objects are identical (else two
    /// histories). Entries it repeats from before the bucket replay began
    /// (at or before `after`) are the local state's business
    /// ([`reconcile_local_tail`]).
    ///
    /// # Errors
    /// [`BucketReplayError`] naming the object. The planner is unchanged.
    ///
    /// # Panics
    /// Objects pushed out of listing order (`first` not above the previous
    /// push).
    pub fn push(
        &mut self,
        first: Index,
        term: Term,
        entries: Vec<Entry>,
    ) -> Result<Vec<Entry>, BucketReplayError> {
        if let Some(prev) = self.last_first {
            assert!(
                first > prev,
                "WAL objects must be pushed in listing order: {first} after {prev}"
            );
        }
        let key = wal_key(first);
        self.check_object(&key, first, term, &entries)?;
        let last = Index(first.0 + entries.len() as u64 - 1);
        if first > self.next {
            return Err(BucketReplayError::Hole(ReplayHole {
                missing_first: self.next,
                missing_last: Index(first.0 - 1),
                at_start: self.last_first.is_none(),
            }));
        }
        // Entries earlier objects also hold: they must be identical.
        for entry in &entries {
            let Some(known) = self.known(entry.index) else {
                continue; // not read from the bucket (at or before `after`)
            };
            if known != entry {
                let why = if known.term == entry.term {
                    format!("both have term {}, with different contents", entry.term)
                } else {
                    format!(
                        "it has term {}, an earlier object has term {}",
                        entry.term, known.term
                    )
                };
                return Err(BucketReplayError::Overlap {
                    key,
                    index: Index(entry.index),
                    why,
                });
            }
        }
        let new: Vec<Entry> = entries
            .iter()
            .filter(|e| e.index >= self.next.0)
            .cloned()
            .collect();
        if let Some(e) = new.first() {
            if e.term < self.last_term.0 {
                return Err(BucketReplayError::TermBackwards {
                    key,
                    why: format!(
                        "entry {} has term {}, below term {} of entry {}",
                        e.index,
                        e.term,
                        self.last_term,
                        e.index - 1
                    ),
                });
            }
        }

        // Accepted: update the state. The window becomes this object's span
        // (joined to the old window when they touch, so a nested object
        // keeps what the longer one said), starting at `first`.
        self.last_object_term = term;
        self.last_first = Some(first);
        let append_from = match self.window.back().map(|e| e.index) {
            Some(window_last) if window_last + 1 >= first.0 => {
                while self.window.front().is_some_and(|e| e.index < first.0) {
                    self.window.pop_front();
                }
                window_last + 1
            }
            _ => {
                self.window.clear();
                first.0
            }
        };
        self.window
            .extend(entries.into_iter().filter(|e| e.index >= append_from));
        if let Some(e) = new.last() {
            self.next = Index(e.index).next();
            self.last_term = Term(e.term);
            assert_eq!(
                Index(e.index),
                last,
                "the object's new entries end where it ends"
            );
        }
        debug_assert!(
            self.window
                .iter()
                .zip(self.window.iter().skip(1))
                .all(|(a, b)| a.index + 1 == b.index),
            "the window is contiguous"
        );
        debug_assert!(self.window.front().is_some_and(|e| e.index == first.0));
        debug_assert!(self.window.back().is_some_and(|e| e.index < self.next.0));
        debug_assert!(new.first().is_none_or(|e| e.index > self.after.0));
        Ok(new)
    }

    /// The entry at `index` as read from an earlier object, if the window
    /// holds it.
    fn known(&self, index: u64) -> Option<&Entry> {
        let front = self.window.front()?.index;
        self.window
            .get(usize::try_from(index.checked_sub(front)?).ok()?)
    }

    /// The checks on one object by itself and against the previous object's
    /// term.
    fn check_object(
        &self,
        key: &str,
        first: Index,
        term: Term,
        entries: &[Entry],
    ) -> Result<(), BucketReplayError> {
        let malformed = |why: String| {
            Err(BucketReplayError::Malformed {
                key: key.to_owned(),
                why,
            })
        };
        let Some(head) = entries.first() else {
            return malformed("holds no entry".into());
        };
        if head.index != first.0 {
            return malformed(format!(
                "its first entry is {}, its key says {first}",
                head.index
            ));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return malformed(format!(
                    "entry {} follows entry {}",
                    pair[1].index, pair[0].index
                ));
            }
            if pair[1].term < pair[0].term {
                return Err(BucketReplayError::TermBackwards {
                    key: key.to_owned(),
                    why: format!(
                        "entry {} has term {}, below term {} of entry {}",
                        pair[1].index, pair[1].term, pair[0].term, pair[0].index
                    ),
                });
            }
        }
        if let Some(e) = entries.iter().find(|e| e.term > term.0) {
            return malformed(format!(
                "entry {} has term {}, above the writer's term {term} in the header",
                e.index, e.term
            ));
        }
        if term < self.last_object_term {
            return Err(BucketReplayError::TermBackwards {
                key: key.to_owned(),
                why: format!(
                    "written in term {term}, after an object written in term {}",
                    self.last_object_term
                ),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// A local WAL against the bucket
// ---------------------------------------------------------------------------

/// What to do with the local WAL, given the bucket (sync mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalTail {
    /// Every local entry is in the bucket (the bucket may hold more, which
    /// the bucket replay applies).
    InSync,
    /// Local entries `first..=last` extend the bucket. In sync mode they
    /// were never acknowledged (an acknowledgement waits for the upload),
    /// but they are a valid continuation: keep them, replay them, and
    /// upload them (from `first`, with `If-None-Match`) before anything new.
    Upload {
        /// The first local entry the bucket lacks (the bucket's last + 1).
        first: Index,
        /// The last local entry.
        last: Index,
    },
    /// The local WAL from `from` on contradicts the bucket (a different
    /// term or different bytes at the same index): those entries were
    /// never acknowledged, and the bucket wins. Truncate the local WAL
    /// before `from` (and make that durable) and replay the bucket's
    /// entries instead. `from` is above the applied index.
    Cut {
        /// The first local index to drop.
        from: Index,
    },
}

/// Why a local engine cannot continue from the bucket. Applied state cannot
/// be undone, so the node must not start on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocalDivergence {
    /// The engine applied an entry the bucket contradicts.
    #[error(
        "local state diverges from the bucket at index {index}: {why}; restore from a checkpoint \
         (move the local data directory away and start again)"
    )]
    Diverged {
        /// The first index where they differ (at or before the applied
        /// index).
        index: Index,
        /// How.
        why: String,
    },
    /// The engine applied entries the bucket does not have. In sync mode
    /// every applied entry was uploaded first, so the bucket lost them or
    /// belongs to another history.
    #[error(
        "local state is ahead of the bucket: the engine applied index {applied} but {}; \
         the bucket lost entries or belongs to another history: check the bucket and prefix, \
         or move the local data directory away to restore from the bucket",
        match bucket_last { Some(l) => format!("the bucket's WAL ends at index {l}"), None => "the bucket's WAL holds nothing at or after it".to_owned() }
    )]
    Ahead {
        /// The engine's applied index.
        applied: Index,
        /// The bucket's last index among those given (none: nothing at or
        /// after `applied`).
        bucket_last: Option<Index>,
    },
}

/// Decides, in sync mode, what to do with a local engine and WAL given the
/// bucket's WAL.
///
/// - `applied`, `applied_term`: the engine's applied index and the term of
///   that entry (`Index(0)` for an empty engine);
/// - `local`: the local WAL's entries (contiguous; starting at or before
///   `applied + 1`; they may start earlier);
/// - `bucket`: the bucket's entries from `applied` on, all of them
///   (contiguous, starting at or before `max(applied, 1)`), e.g. from a
///   [`BucketReplay`] begun at `applied - 1`, so the entry the engine
///   applied last is compared too.
///
/// Rules, in order:
/// 1. The first index where `local` and `bucket` differ (term or bytes),
///    or `applied` if the bucket's term there is not `applied_term`, at or
///    before `applied`: [`LocalDivergence::Diverged`].
/// 2. The bucket holds nothing at `applied` (it ends before):
///    [`LocalDivergence::Ahead`].
/// 3. A difference after `applied`: [`LocalTail::Cut`] there.
/// 4. Local entries after the bucket's last: [`LocalTail::Upload`].
/// 5. Otherwise [`LocalTail::InSync`].
///
/// Async mode (`--wal-sync-upload=false`) does not use this: there the
/// local disk is ahead of the bucket by design.
///
/// # Errors
/// [`LocalDivergence`].
///
/// # Panics
/// The inputs break their contract (not contiguous, or starting too late).
pub fn reconcile_local_tail(
    applied: Index,
    applied_term: Term,
    local: &[Entry],
    bucket: &[Entry],
) -> Result<LocalTail, LocalDivergence> {
    for (name, entries) in [("local", local), ("bucket", bucket)] {
        assert!(
            entries.windows(2).all(|w| w[0].index + 1 == w[1].index),
            "{name} entries must be contiguous"
        );
    }
    if let Some(e) = local.first() {
        assert!(
            e.index <= applied.0 + 1,
            "the local WAL must continue the engine: starts at {}, applied {applied}",
            e.index
        );
    }
    if let Some(e) = bucket.first() {
        assert!(
            e.index <= applied.0.max(1),
            "bucket entries must start at or before the applied index: start at {}, applied {applied}",
            e.index
        );
    }
    fn at(entries: &[Entry], index: u64) -> Option<&Entry> {
        let first = entries.first()?.index;
        entries.get(usize::try_from(index.checked_sub(first)?).ok()?)
    }

    // The first local/bucket difference.
    let conflict = local.iter().find_map(|l| {
        let b = at(bucket, l.index)?;
        (b != l).then(|| {
            let why = if b.term == l.term {
                format!("both have term {}, with different contents", l.term)
            } else {
                format!(
                    "the local WAL has term {}, the bucket term {}",
                    l.term, b.term
                )
            };
            (Index(l.index), why)
        })
    });
    if let Some((index, why)) = &conflict {
        if *index <= applied {
            return Err(LocalDivergence::Diverged {
                index: *index,
                why: format!("{why} (the engine has applied up to index {applied})"),
            });
        }
    }
    let bucket_last = bucket.last().map(|e| Index(e.index));
    if applied.0 >= 1 {
        let Some(b) = at(bucket, applied.0) else {
            return Err(LocalDivergence::Ahead {
                applied,
                bucket_last,
            });
        };
        if b.term != applied_term.0 {
            return Err(LocalDivergence::Diverged {
                index: applied,
                why: format!(
                    "the engine applied an entry of term {applied_term} there, the bucket has term {}",
                    b.term
                ),
            });
        }
    }
    if let Some((from, _)) = conflict {
        debug_assert!(from > applied);
        return Ok(LocalTail::Cut { from });
    }
    let bucket_end = bucket_last.unwrap_or(Index(0));
    match local.last() {
        Some(l) if l.index > bucket_end.0 => {
            let first = bucket_end.next();
            assert!(
                local.first().is_some_and(|e| e.index <= first.0),
                "the local WAL must reach back to the bucket's end {bucket_end}"
            );
            Ok(LocalTail::Upload {
                first,
                last: Index(l.index),
            })
        }
        _ => Ok(LocalTail::InSync),
    }
}
