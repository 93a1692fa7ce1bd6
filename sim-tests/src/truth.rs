//! The revision history a run really produced, derived from the node's final
//! log: every event of every revision, the state of any key at any revision,
//! and the compactions that took effect. [`crate::watchcheck`] checks watch
//! streams against it; the harness uses [`Truth::find_put`] to check that no
//! acknowledged write was lost.
//!
//! The log is replayed through the reference model
//! ([`t4_core::testkit::Model`]), never through the store under test, so a
//! store bug cannot hide in both sides. Two models run side by side: one
//! compacts as the store does and decides which entries succeed (a txn that
//! reads a compacted revision fails); the other never compacts, so all
//! history stays readable, and the events are derived from it. Each
//! compaction that took effect is recorded with the revision current then:
//!
//! ```text
//! entry                        current  watermark  recorded
//! put a=1                      2        -1
//! put a=2                      3        -1
//! compact 2                    3         2         (2, applied at 3)
//! compact 2                    3         2         - (not above the watermark: Compacted)
//! compact 9                    3         2         - (above current: FutureRevision)
//! delete a                     4         2
//! ```
//!
//! Entries that fail at apply time change nothing, exactly as in the store:
//! the model fails them the same way (it shares the store's static checks),
//! and the one apply-time rule the model lacks, a raised NOSPACE alarm
//! refusing space-consuming entries, is tracked here.
//!
//! Leases replay through both models too: a grant fills their lease tables
//! (no revision), a put naming a lease not granted fails, and a revoke
//! deletes the lease's keys at one revision, one delete event per key in key
//! order, each with its `prev_kv` (none: no revision). Checkpoints only
//! record remaining TTLs, which no event shows, so they change nothing here.
//! Lease expiry is no business of the truth: a lease that expires reaches
//! the log as a revoke.
//!
//! Events are shaped as the store emits them (core's `mvcc/txn.rs`): a put's
//! kv is the new version; a delete's kv is `{key, mod_revision}` only;
//! `prev_kv` is the key at `mod_revision - 1` (so when a txn puts a key and
//! then deletes it, both events carry the key as it was before the txn).

use std::collections::{BTreeMap, BTreeSet};

use t4_core::kv::{AlarmAction, AlarmType, Event, EventType, KeyValue, WriteRequest};
use t4_core::log::{Entry, Payload};
use t4_core::mvcc::{consumes_space, KeyVersion};
use t4_core::testkit::Model;

#[cfg(test)]
pub(crate) mod tests;

/// The revision history of one log. See the module documentation.
#[derive(Clone, Debug)]
pub struct Truth {
    /// Every revision from 2 through `final_revision` (dense: a revision
    /// exists only because something changed), with its events in
    /// sub-revision order.
    revisions: Vec<(i64, Vec<Event>)>,
    /// Every version of every key, oldest first (`kv == None`: tombstone).
    versions: BTreeMap<Vec<u8>, Vec<KeyVersion>>,
    final_revision: i64,
    /// Successful compactions in log order (strictly increasing).
    compactions: Vec<i64>,
    /// For each of `compactions`, the current revision when it applied.
    compacted_at: Vec<i64>,
    /// What each entry did, by index.
    outcomes: BTreeMap<u64, EntryOutcome>,
}

/// What applying one log entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryOutcome {
    /// It succeeded (a failed entry changes nothing).
    pub ok: bool,
    /// The revision before it.
    pub before: i64,
    /// The revision after it.
    pub after: i64,
}

/// First revision that can carry events (an empty store is at revision 1).
const FIRST_WRITE_REVISION: i64 = 2;

/// Replays `entries` (the node's final log, in index order, dense from
/// index 1) into a [`Truth`].
///
/// # Errors
/// The log has a gap, does not start at index 1, or has an entry without a
/// payload.
pub fn replay(entries: &[Entry]) -> Result<Truth, String> {
    // `full` keeps all history; `real` compacts as the store does, and so
    // decides which entries fail (a txn reading a compacted revision fails).
    let mut full = Model::new();
    let mut real = Model::new();
    let mut compactions = Vec::new();
    let mut compacted_at = Vec::new();
    // (member, alarm) pairs raised, as the store's alarm list.
    let mut alarms: BTreeSet<(u64, i32)> = BTreeSet::new();
    let mut outcomes = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let index_expected = i as u64 + 1;
        if entry.index != index_expected {
            return Err(format!(
                "truth: log entry #{i} has index {}, expected {index_expected} (the log must be dense from 1)",
                entry.index
            ));
        }
        let Some(payload) = &entry.payload else {
            return Err(format!("truth: entry {} has no payload", entry.index));
        };
        let nospace = alarms
            .iter()
            .any(|&(_, alarm)| alarm == AlarmType::Nospace as i32);
        let before = real.current_revision();
        let mut outcome = |ok: bool, after: i64| {
            outcomes.insert(entry.index, EntryOutcome { ok, before, after });
        };
        if nospace && consumes_space(payload) {
            outcome(false, before);
            continue; // the store refuses it with NoSpace and changes nothing
        }
        let req = match payload {
            Payload::Put(r) => WriteRequest::Put(r.clone()),
            Payload::DeleteRange(r) => WriteRequest::DeleteRange(r.clone()),
            Payload::Txn(r) => WriteRequest::Txn(r.clone()),
            Payload::Compaction(r) => {
                let current = real.current_revision();
                let ok = real.apply(&WriteRequest::Compaction(r.clone())).is_ok();
                if ok {
                    assert_eq!(real.compact_revision(), r.revision, "truth: compacted");
                    compactions.push(r.revision);
                    compacted_at.push(current);
                }
                outcome(ok, current);
                continue;
            }
            Payload::LeaseGrant(r) => WriteRequest::LeaseGrant(r.clone()),
            Payload::LeaseRevoke(r) => WriteRequest::LeaseRevoke(r.clone()),
            // A barrier changes nothing; a checkpoint records remaining
            // TTLs, which neither the models nor the events show.
            Payload::Barrier(_) | Payload::LeaseCheckpoint(_) => continue,
            Payload::Alarm(r) => {
                match AlarmAction::try_from(r.action) {
                    Ok(AlarmAction::Activate) if r.alarm != AlarmType::None as i32 => {
                        alarms.insert((r.member_id, r.alarm));
                    }
                    Ok(AlarmAction::Deactivate) => {
                        alarms.remove(&(r.member_id, r.alarm));
                    }
                    _ => {}
                }
                continue;
            }
        };
        let applied = real.apply(&req);
        outcome(applied.is_ok(), real.current_revision());
        match applied {
            Err(_) => {} // failed at apply time: changes nothing, as in the store
            Ok(resp) => {
                // Reads at retained revisions answer the same with or
                // without compaction, and compaction keeps every live
                // version (so every lease attachment), so the full model
                // agrees.
                let again = full.apply(&req);
                assert_eq!(
                    again.as_ref(),
                    Ok(&resp),
                    "truth: entry {}: the uncompacted model disagrees",
                    entry.index
                );
            }
        }
        assert_eq!(
            full.current_revision(),
            real.current_revision(),
            "truth: entry {}: revisions diverged",
            entry.index
        );
        if matches!(payload, Payload::LeaseGrant(_) | Payload::LeaseRevoke(_)) {
            assert_eq!(
                full.leases(),
                real.leases(),
                "truth: entry {}: lease tables diverged",
                entry.index
            );
        }
    }
    let mut truth = Truth::from_model(&full, compactions, compacted_at);
    truth.outcomes = outcomes;
    Ok(truth)
}

impl Truth {
    /// Derives the events from the model's version lists.
    fn from_model(model: &Model, compactions: Vec<i64>, compacted_at: Vec<i64>) -> Truth {
        let final_revision = model.current_revision();
        assert_eq!(
            model.compact_revision(),
            -1,
            "truth: the model must keep all history"
        );
        let versions: BTreeMap<Vec<u8>, Vec<KeyVersion>> = model
            .keys()
            .into_iter()
            .map(|key| {
                let history = model.history(&key);
                (key, history)
            })
            .collect();
        // ((main, sub), event), sorted below.
        let mut all: Vec<((i64, i64), Event)> = Vec::new();
        for (key, history) in &versions {
            for (i, v) in history.iter().enumerate() {
                assert!(
                    i == 0 || history[i - 1].rev < v.rev,
                    "truth: versions of {key:?} out of order"
                );
                // The key at `main - 1`: the newest version of a lower main
                // revision (not an earlier sub of the same txn).
                let prev_kv = history[..i]
                    .iter()
                    .rev()
                    .find(|p| p.rev.main < v.rev.main)
                    .and_then(|p| p.kv.clone());
                let event = match &v.kv {
                    Some(kv) => Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv.clone()),
                        prev_kv,
                    },
                    None => Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key: key.clone(),
                            mod_revision: v.rev.main,
                            ..KeyValue::default()
                        }),
                        prev_kv,
                    },
                };
                all.push(((v.rev.main, v.rev.sub), event));
            }
        }
        all.sort_by_key(|&(at, _)| at);
        let mut revisions: Vec<(i64, Vec<Event>)> = Vec::new();
        for ((main, _), event) in all {
            match revisions.last_mut() {
                Some((rev, events)) if *rev == main => events.push(event),
                _ => {
                    let expected = revisions.last().map_or(FIRST_WRITE_REVISION, |r| r.0 + 1);
                    assert_eq!(main, expected, "truth: revisions must be dense");
                    revisions.push((main, vec![event]));
                }
            }
        }
        let last = revisions.last().map_or(FIRST_WRITE_REVISION - 1, |r| r.0);
        assert_eq!(
            last, final_revision,
            "truth: the last revision with events is the final revision"
        );
        Truth {
            revisions,
            versions,
            final_revision,
            compactions,
            compacted_at,
            outcomes: BTreeMap::new(),
        }
    }

    /// What log entry `index` did (`None` for entries that are not writes:
    /// barriers, checkpoints, alarms).
    #[must_use]
    pub fn outcome(&self, index: u64) -> Option<EntryOutcome> {
        self.outcomes.get(&index).copied()
    }

    /// Every revision that changed something (2 through
    /// [`Truth::final_revision`], dense), with its events in order.
    #[must_use]
    pub fn events(&self) -> &[(i64, Vec<Event>)] {
        &self.revisions
    }

    /// The events of `revision`, in order (empty outside 2..=final).
    #[must_use]
    pub fn events_at(&self, revision: i64) -> &[Event] {
        let Ok(i) = usize::try_from(revision - FIRST_WRITE_REVISION) else {
            return &[];
        };
        self.revisions.get(i).map_or(&[], |(rev, events)| {
            assert_eq!(*rev, revision, "truth: revisions are dense");
            events.as_slice()
        })
    }

    /// The revision after the last entry (1 for a log that wrote nothing).
    #[must_use]
    pub fn final_revision(&self) -> i64 {
        self.final_revision
    }

    /// Revisions of the compactions that took effect, in log order
    /// (strictly increasing).
    #[must_use]
    pub fn compactions(&self) -> &[i64] {
        &self.compactions
    }

    /// For a compaction to `revision` that took effect: the store's current
    /// revision when it applied (no response made before that revision can
    /// have seen it).
    #[must_use]
    pub fn compaction_applied_at(&self, revision: i64) -> Option<i64> {
        self.compactions
            .binary_search(&revision)
            .ok()
            .map(|i| self.compacted_at[i])
    }

    /// `key` as it was at `revision` (`None`: absent then).
    #[must_use]
    pub fn value_at(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        self.versions
            .get(key)?
            .iter()
            .rev()
            .find(|v| v.rev.main <= revision)
            .and_then(|v| v.kv.clone())
    }

    /// Every key present at `revision`, in key order (what a range over
    /// the whole key space at that revision returns).
    #[must_use]
    pub fn state_at(&self, revision: i64) -> Vec<KeyValue> {
        self.versions
            .keys()
            .filter_map(|key| self.value_at(key, revision))
            .collect()
    }

    /// The revision of the first put that wrote `value` to `key` (values
    /// are unique in our workloads, so this names the write).
    #[must_use]
    pub fn find_put(&self, key: &[u8], value: &[u8]) -> Option<i64> {
        self.versions
            .get(key)?
            .iter()
            .find(|v| v.kv.as_ref().is_some_and(|kv| kv.value == value))
            .map(|v| v.rev.main)
    }
}
