//! Compaction: dropping history no read can need any more (etcd
//! `store.Compact` + `keyIndex.compact`).
//!
//! `compact(c)` keeps, for every key, each version newer than `c` and the
//! newest version at or below `c` unless that one is a tombstone; everything
//! else of the key's history goes. Reads at `c` and later therefore see
//! exactly what they saw before; reads below `c` fail with "compacted".
//! Revision-log entries below `c` go too (entries at `c` stay, so a watch
//! from the watermark replays every event of revision `c`).
//!
//! ```text
//! key "a": put@2 put@3 del@5 put@7        key "b": put@2 del@4
//! compact(5): "a" keeps del@5? no — it is a tombstone → keeps put@7 only
//!             "b" keeps nothing (newest <= 5 is the tombstone del@4)
//! compact(4) instead: "a" keeps put@3 (newest <= 4), del@5, put@7; "b" keeps nothing
//! compact(3) instead: "a" keeps put@3, del@5, put@7;  "b" keeps put@2, del@4
//! ```
//!
//! The whole compaction is one engine batch, so it costs one pass over the
//! history and a batch proportional to what it removes.

use prost::Message;

use super::keys::{self, Rev, VersionRecord};
use super::{Fail, Meta};
use crate::engine::{EngineError, KvRead, WriteBatch};
use crate::error::Error;

/// Checks `rev` against `meta` and adds the removals to `batch`.
///
/// # Errors
/// `rev <= compact_revision` → [`Error::Compacted`] (checked first, as etcd);
/// `rev > current_revision` → [`Error::FutureRevision`]; storage failure.
pub(crate) fn compact<R: KvRead>(
    view: &R,
    meta: &Meta,
    rev: i64,
    batch: &mut WriteBatch,
) -> Result<(), Fail> {
    if rev <= meta.compact_revision {
        return Err(Error::Compacted {
            compact_revision: meta.compact_revision,
        }
        .into());
    }
    if rev > meta.current_revision {
        return Err(Error::FutureRevision.into());
    }
    assert!(
        rev >= 0,
        "compaction at {rev} passed the watermark check of {meta:?}"
    );

    // History: records are grouped by key, newest first.
    let mut key_head: Option<Vec<u8>> = None;
    let mut passed_newest_at_or_below = false;
    let (start, end) = ([keys::HISTORY_PREFIX], keys::history_space_end());
    for item in view.scan(&start, Some(&end)) {
        let (hk, hv) = item?;
        let (head, at) = keys::split_history_key(&hk)?;
        if key_head.as_deref() != Some(head) {
            key_head = Some(head.to_vec());
            passed_newest_at_or_below = false;
        }
        if at.main > rev {
            continue;
        }
        if passed_newest_at_or_below {
            batch.delete(hk);
            continue;
        }
        passed_newest_at_or_below = true;
        let record = VersionRecord::decode(hv.as_slice())
            .map_err(|e| EngineError(format!("mvcc: undecodable history record {hk:?}: {e}")))?;
        if record.tombstone {
            batch.delete(hk);
        }
    }

    // Revision log below the watermark.
    let end = keys::revlog_key(Rev { main: rev, sub: 0 });
    for item in view.scan(&[keys::REVLOG_PREFIX], Some(&end)) {
        let (rk, _) = item?;
        let at = keys::parse_revlog_key(&rk)?;
        assert!(
            at.main < rev,
            "revision-log scan below {rev} returned {at:?}"
        );
        batch.delete(rk);
    }
    Ok(())
}
