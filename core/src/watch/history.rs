//! Reading watch events back from the engine, for watchers that start in the
//! past or fell behind: the revision log (`r` ‖ main ‖ sub, see
//! [`crate::mvcc::keys`]) names each write's key and kind; the key's history
//! record at that revision gives the key-value, and the record after it (one
//! seek, same scan) the previous version.
//!
//! Reads are bounded: [`read_chunk`] stops after about `events_max` entries,
//! but only at a revision boundary, so a revision is never split (atomic
//! delivery). The revision log below the compaction watermark is gone; the
//! caller never reads below it.
//!
//! etcd parity for `prev_kv`: etcd reads the previous version at
//! `mod_revision - 1`, which fails when that revision is compacted, and then
//! sends the event without `prev_kv`. Here the same happens naturally: for an
//! event at the watermark itself, compaction removed every older version of
//! the key, so no previous version is found.

use crate::engine::{EngineError, KvRead};
use crate::kv::{Event, EventType, KeyValue};
use crate::mvcc::keys;
use crate::mvcc::{self, EventKind, LoggedEvent, Rev};

/// Whole revisions of the revision log.
#[derive(Debug)]
pub(super) struct Chunk {
    /// The last revision covered completely (revisions in `[from, through]`
    /// without an entry here wrote nothing).
    pub(super) through: i64,
    /// The entries, in revision order.
    pub(super) events: Vec<LoggedEvent>,
}

/// Revision-log entries from revision `from` on, through `current` at most:
/// every entry of each revision included, stopping at the first revision
/// boundary once `events_max` entries were read.
///
/// # Errors
/// Storage failure or a malformed record.
///
/// # Panics
/// `from` outside `[1, current]` or `events_max == 0`.
pub(super) fn read_chunk<R: KvRead>(
    view: &R,
    from: i64,
    current: i64,
    events_max: usize,
) -> Result<Chunk, EngineError> {
    assert!(
        1 <= from && from <= current,
        "watch: history read from {from} with current revision {current}"
    );
    assert!(
        events_max > 0,
        "watch: catch_up_events_max must be positive"
    );
    let start = keys::revlog_key(Rev { main: from, sub: 0 });
    let end = keys::revlog_key(Rev {
        main: current + 1,
        sub: 0,
    });
    let mut events: Vec<LoggedEvent> = Vec::new();
    for item in view.scan(&start, Some(&end)) {
        let (rk, rv) = item?;
        let logged = mvcc::decode_revlog(&rk, &rv)?;
        let rev = logged.rev;
        if let Some(last) = events.last() {
            assert!(
                last.rev < rev && rev.main <= current,
                "watch: revision log out of order: {:?} then {rev:?}",
                last.rev
            );
            if events.len() >= events_max && last.rev.main != rev.main {
                return Ok(Chunk {
                    through: last.rev.main,
                    events,
                });
            }
        }
        events.push(logged);
    }
    Ok(Chunk {
        through: current,
        events,
    })
}

/// A revision-log entry rebuilt as an etcd event.
// Nearly every value is the large variant; boxing it would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(super) enum Rebuilt {
    /// The event (without `prev_kv`) and the key's previous version.
    Event {
        /// The event.
        event: Event,
        /// The newest version at a lower main revision, if the key existed
        /// and that version is retained.
        prev: Option<KeyValue>,
    },
    /// A put at the compaction watermark that the same revision overwrote
    /// (a txn put the key, then deleted it): compaction kept only the key's
    /// newest version at the watermark, a tombstone, and dropped both. etcd
    /// loses it the same way (its backend keeps only that newest version),
    /// so the event is skipped.
    Compacted,
}

/// The etcd event for one revision-log entry, read at or above the
/// compaction watermark `compact_revision`.
///
/// A delete event's kv is `{key, mod_revision}` only, as etcd.
///
/// # Errors
/// Storage failure, a malformed record, or a put whose history record is
/// missing other than as [`Rebuilt::Compacted`] explains (compaction keeps
/// every version above the watermark, and at it the newest of each key).
pub(super) fn resolve<R: KvRead>(
    view: &R,
    logged: &LoggedEvent,
    compact_revision: i64,
) -> Result<Rebuilt, EngineError> {
    assert!(
        logged.rev.main >= compact_revision,
        "watch: history read of {:?} below the watermark {compact_revision}",
        logged.rev
    );
    let key = &logged.key;
    // The newest record of `key` at `main` (largest sub first), then older.
    let start = keys::history_seek(key, logged.rev.main);
    let end = keys::history_key_end(key);
    // `Some(None)`: a tombstone.
    let mut own: Option<Option<KeyValue>> = None;
    let mut prev: Option<KeyValue> = None;
    for item in view.scan(&start, Some(&end)) {
        let (hk, hv) = item?;
        let (_, rev) = keys::split_history_key(&hk)?;
        let version = mvcc::decode_history(key, rev, &hv)?;
        if rev.main == logged.rev.main {
            // Other subs of the same revision cannot be this key (a txn
            // writes a key once) but are skipped rather than trusted.
            if rev == logged.rev {
                own = Some(version);
            }
            continue;
        }
        assert!(
            rev.main < logged.rev.main,
            "watch: history seek of {key:?} at {:?} met the newer {rev:?}",
            logged.rev
        );
        prev = version;
        break;
    }
    let kv = match logged.kind {
        EventKind::Put => match own {
            Some(Some(kv)) => kv,
            None if logged.rev.main == compact_revision => return Ok(Rebuilt::Compacted),
            other => {
                return Err(EngineError(format!(
                    "watch: put of {key:?} at {:?} has history record {other:?}",
                    logged.rev
                )))
            }
        },
        EventKind::Delete => {
            if matches!(own, Some(Some(_))) {
                return Err(EngineError(format!(
                    "watch: delete of {key:?} at {:?} has a live history record",
                    logged.rev
                )));
            }
            KeyValue {
                key: key.clone(),
                mod_revision: logged.rev.main,
                ..KeyValue::default()
            }
        }
    };
    let r#type = match logged.kind {
        EventKind::Put => EventType::Put,
        EventKind::Delete => EventType::Delete,
    };
    let event = Event {
        r#type: r#type as i32,
        kv: Some(kv),
        prev_kv: None,
    };
    Ok(Rebuilt::Event { event, prev })
}
