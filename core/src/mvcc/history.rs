//! Reading what the store retains beyond the live keys: one key's versions
//! and the revision log. For inspection tools, tests and (later) watch
//! replay; the serving path does not use these.

use prost::Message;

use super::keys::{self, EventKind, Rev, RevLogRecord};
use super::range::decode_history;
use crate::engine::{EngineError, KvRead};
use crate::kv::KeyValue;

/// One retained version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersion {
    /// The revision that wrote it.
    pub rev: Rev,
    /// The key-value written, `None` for a deletion (tombstone).
    pub kv: Option<KeyValue>,
}

/// Every retained version of `key`, oldest first.
///
/// # Errors
/// Storage failure or a malformed record.
pub fn key_history<R: KvRead>(view: &R, key: &[u8]) -> Result<Vec<KeyVersion>, EngineError> {
    let (start, end) = (keys::history_prefix(key), keys::history_key_end(key));
    let mut out = Vec::new();
    for item in view.scan(&start, Some(&end)) {
        let (hk, hv) = item?;
        let (parsed_key, rev) = keys::parse_history_key(&hk)?;
        if parsed_key != key {
            return Err(EngineError(format!(
                "mvcc: history scan of {key:?} met {parsed_key:?}"
            )));
        }
        out.push(KeyVersion {
            rev,
            kv: decode_history(key, rev, &hv)?,
        });
    }
    out.reverse();
    Ok(out)
}

/// One entry of the revision log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The revision of the write.
    pub rev: Rev,
    /// The key written.
    pub key: Vec<u8>,
    /// Put or delete.
    pub kind: EventKind,
}

/// The revision log from main revision `from` on, in revision order.
///
/// # Errors
/// Storage failure or a malformed record.
pub fn revision_log<R: KvRead>(view: &R, from: i64) -> Result<Vec<LoggedEvent>, EngineError> {
    let start = keys::revlog_key(Rev {
        main: from.max(0),
        sub: 0,
    });
    let end = keys::revlog_space_end();
    let mut out = Vec::new();
    for item in view.scan(&start, Some(&end)) {
        let (rk, rv) = item?;
        out.push(decode_revlog(&rk, &rv)?);
    }
    Ok(out)
}

/// Decodes one revision-log entry (engine key and value).
///
/// # Errors
/// A malformed key or record.
pub(crate) fn decode_revlog(key: &[u8], value: &[u8]) -> Result<LoggedEvent, EngineError> {
    let rev = keys::parse_revlog_key(key)?;
    let record = RevLogRecord::decode(value).map_err(|e| {
        EngineError(format!(
            "mvcc: undecodable revision-log record at {rev:?}: {e}"
        ))
    })?;
    let kind = EventKind::try_from(record.kind).map_err(|_| {
        EngineError(format!(
            "mvcc: unknown event kind {} at {rev:?}",
            record.kind
        ))
    })?;
    Ok(LoggedEvent {
        rev,
        key: record.key,
        kind,
    })
}
