//! The engine key layout of the MVCC store.
//!
//! Key spaces, told apart by their first byte:
//!
//! | engine key                                  | value                  | what for |
//! |---------------------------------------------|------------------------|----------|
//! | `c` ‖ user key (raw)                        | [`VersionRecord`]      | the live version of every existing key: reads at the current revision never touch history |
//! | `h` ‖ esc(user key) ‖ !main ‖ !sub          | [`VersionRecord`]      | every retained version, tombstones included, **newest first** per key |
//! | `r` ‖ main ‖ sub                            | [`RevLogRecord`]       | the revision log: which key each (main, sub) revision wrote and how (watch replay) |
//! | `a` ‖ lease id (8 bytes BE) ‖ user key      | empty                  | lease attachments of live keys: what a revoke deletes |
//! | `l` ‖ lease id (8 bytes BE)                 | [`LeaseRecord`](super::lease::LeaseRecord) | the lease table: granted TTL and last checkpointed remaining TTL |
//! | `A` ‖ member id (8 bytes BE) ‖ alarm (4 bytes BE) | empty            | raised alarms (etcd's `alarm` bucket) |
//! | `m` ‖ `mvcc`                                | [`MetaRecord`]         | current and compact revision, applied index and term |
//!
//! `main` and `sub` are etcd's revision pair: `main` is the store revision a
//! write took, `sub` orders the writes inside one txn (0, 1, 2 …). They are
//! written as 8-byte big-endian integers; `!x` is the bitwise complement, so
//! bigger revisions sort first. Big-endian keeps numeric order equal to byte
//! order.
//!
//! `esc` makes composite keys parse unambiguously and keeps their order: every
//! `0x00` byte of the user key becomes `0x00 0xFF`, and the key ends with the
//! terminator `0x00 0x01`. A terminator sorts below any escaped byte that can
//! follow a common prefix (`0x01 < 0xFF`, `0x00 0x01 < b` for `b >= 0x01`),
//! so for user keys `a < b` ⇔ `esc(a) < esc(b)`, and `esc(a)` is never a
//! prefix of `esc(b)` for `a != b`. The `c` space needs no escape: nothing
//! follows the user key there.
//!
//! # Worked example
//!
//! ```text
//! rev 2  put   "a" = "x"        c a          → {create 2, mod 2, version 1, value "x"}
//!                               h a 00 01 !2 !0 → same record
//!                               r 2 0        → {key "a", Put}
//! rev 3  txn { put "a" = "y"; put "b\0" = "z" }
//!                               c a          → {create 2, mod 3, version 2, value "y"}
//!                               h a 00 01 !3 !0 → same
//!                               c b 00       → {create 3, mod 3, version 1, value "z"}
//!                               h b 00 FF 00 01 !3 !1 → same
//!                               r 3 0 → {a, Put},  r 3 1 → {b\0, Put}
//! rev 4  delete "a"             c a          removed
//!                               h a 00 01 !4 !0 → tombstone {mod 4}
//!                               r 4 0        → {a, Delete}
//! ```
//!
//! History of `"a"` in engine order: `!4 !0` (tombstone), `!3 !0` (y), `!2 !0`
//! (x). A read of `"a"` at revision 3 seeks to `h a 00 01 !3 00…00` and takes
//! the first record (y, version 2); at revision 4 the first record is the
//! tombstone, so `"a"` does not exist; at revision 1 the seek lands past the
//! key's records, so it did not exist yet. `compact(4)` then keeps, per key,
//! only versions newer than 4 plus the newest version `<= 4` unless it is a
//! tombstone: all three records of `"a"` go, `"b\0"` keeps its rev-3 record.
//! Revision-log entries below 4 are removed too.

use crate::engine::EngineError;

/// First byte of a live-version key.
pub const CURRENT_PREFIX: u8 = b'c';
/// First byte of a history key.
pub const HISTORY_PREFIX: u8 = b'h';
/// First byte of a revision-log key.
pub const REVLOG_PREFIX: u8 = b'r';
/// First byte of a lease-attachment key (`a` ‖ lease id ‖ user key →
/// empty): which keys a lease deletes when revoked.
pub const ATTACH_PREFIX: u8 = b'a';
/// First byte of a lease-table key (`l` ‖ lease id → [`LeaseRecord`](super::lease::LeaseRecord)).
pub const LEASE_PREFIX: u8 = b'l';
/// First byte of an alarm key (`A` ‖ member id ‖ alarm type → empty).
pub const ALARM_PREFIX: u8 = b'A';
/// The engine key of the MVCC metadata.
pub const META_KEY: &[u8] = b"mmvcc";

/// Escape byte and the two bytes that may follow it.
const ESC: u8 = 0x00;
const ESC_ZERO: u8 = 0xFF;
const ESC_END: u8 = 0x01;

/// The attachment key of `key` to lease `lease` (id as 8 big-endian bytes,
/// so one lease's keys are one contiguous, key-ordered run).
#[must_use]
pub fn attach_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut out = attach_prefix(lease);
    out.extend_from_slice(key);
    out
}

/// The prefix of every attachment key of lease `lease`.
#[must_use]
pub fn attach_prefix(lease: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(ATTACH_PREFIX);
    out.extend_from_slice(&lease.to_be_bytes());
    out
}

/// Exclusive end of every attachment key of lease `lease` (the next id's
/// prefix; for the largest id, the end of the `a` space).
#[must_use]
pub fn attach_prefix_end(lease: i64) -> Vec<u8> {
    match lease.checked_add(1) {
        Some(next) => attach_prefix(next),
        None => vec![ATTACH_PREFIX + 1],
    }
}

/// `l` ‖ id (8 bytes big-endian): where lease `id`'s record is stored.
/// Ids are positive, so byte order is id order.
#[must_use]
pub fn lease_key(id: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(LEASE_PREFIX);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Exclusive end of the whole `l` space.
#[must_use]
pub fn lease_space_end() -> Vec<u8> {
    vec![LEASE_PREFIX + 1]
}

/// `A` ‖ member (8 bytes BE) ‖ alarm (4 bytes BE): the key of one raised alarm.
#[must_use]
pub fn alarm_key(member_id: u64, alarm: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(ALARM_PREFIX);
    out.extend_from_slice(&member_id.to_be_bytes());
    out.extend_from_slice(&alarm.to_be_bytes());
    out
}

/// Parses an alarm key into `(member id, alarm type)`.
///
/// # Errors
/// `engine_key` is not a well-formed alarm key.
pub fn parse_alarm_key(engine_key: &[u8]) -> Result<(u64, i32), EngineError> {
    match engine_key.split_first() {
        Some((&ALARM_PREFIX, rest)) if rest.len() == 12 => {
            let member = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let alarm = i32::from_be_bytes(rest[8..].try_into().expect("4 bytes"));
            Ok((member, alarm))
        }
        _ => Err(EngineError(format!(
            "mvcc: not an alarm key: {engine_key:?}"
        ))),
    }
}

/// Exclusive end of the whole `A` space.
#[must_use]
pub fn alarm_space_end() -> Vec<u8> {
    vec![ALARM_PREFIX + 1]
}

/// Length of an encoded `(main, sub)` pair.
const REV_BYTES: usize = 16;

/// etcd's revision pair: `main` is the store revision of a write, `sub` its
/// position among the writes of the same txn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    /// The store revision.
    pub main: i64,
    /// Position inside the revision's txn, from 0.
    pub sub: i64,
}

/// Appends `esc(key)` (see the module doc) to `out`.
pub fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == ESC {
            out.push(ESC_ZERO);
        }
    }
    out.push(ESC);
    out.push(ESC_END);
}

/// Parses one escaped key from the front of `bytes`; returns the user key and
/// the bytes after its terminator.
///
/// # Errors
/// `bytes` does not start with a well-formed escaped key.
pub fn unescape(bytes: &[u8]) -> Result<(Vec<u8>, &[u8]), EngineError> {
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != ESC {
            key.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(&ESC_ZERO) => {
                key.push(ESC);
                i += 2;
            }
            Some(&ESC_END) => return Ok((key, &bytes[i + 2..])),
            other => {
                return Err(EngineError(format!(
                    "mvcc: bad escape {other:?} at byte {i} of {bytes:?}"
                )))
            }
        }
    }
    Err(EngineError(format!(
        "mvcc: unterminated escaped key {bytes:?}"
    )))
}

fn push_rev(out: &mut Vec<u8>, main: u64, sub: u64) {
    out.extend_from_slice(&main.to_be_bytes());
    out.extend_from_slice(&sub.to_be_bytes());
}

fn to_u64(v: i64, what: &str) -> u64 {
    u64::try_from(v).unwrap_or_else(|_| panic!("mvcc: {what} must be >= 0, got {v}"))
}

/// `c` ‖ key: where the live version of `key` is stored.
#[must_use]
pub fn current_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(CURRENT_PREFIX);
    out.extend_from_slice(key);
    out
}

/// The user key of a `c` engine key.
///
/// # Errors
/// `engine_key` is not in the `c` space.
pub fn parse_current_key(engine_key: &[u8]) -> Result<&[u8], EngineError> {
    match engine_key.split_first() {
        Some((&CURRENT_PREFIX, key)) => Ok(key),
        _ => Err(EngineError(format!(
            "mvcc: not a current-version key: {engine_key:?}"
        ))),
    }
}

/// Exclusive end of the whole `c` space.
#[must_use]
pub fn current_space_end() -> Vec<u8> {
    vec![CURRENT_PREFIX + 1]
}

/// `h` ‖ esc(key): the prefix shared by every history record of `key`
/// (also the lower bound of a history scan starting at `key`).
#[must_use]
pub fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + key.len() + REV_BYTES);
    out.push(HISTORY_PREFIX);
    escape_into(&mut out, key);
    out
}

/// The history key of `key` at revision `rev`.
///
/// # Panics
/// A negative revision (revisions start at 1).
#[must_use]
pub fn history_key(key: &[u8], rev: Rev) -> Vec<u8> {
    let mut out = history_prefix(key);
    push_rev(
        &mut out,
        !to_u64(rev.main, "main revision"),
        !to_u64(rev.sub, "sub revision"),
    );
    out
}

/// Where a scan must start to find the newest record of `key` whose main
/// revision is `<= at_main`: the first record at or after this key, if it
/// still belongs to `key` (below [`history_key_end`]), is that record.
#[must_use]
pub fn history_seek(key: &[u8], at_main: i64) -> Vec<u8> {
    let mut out = history_prefix(key);
    // The largest sub of `at_main` has the smallest complement, 0.
    push_rev(&mut out, !to_u64(at_main, "read revision"), 0);
    out
}

/// Exclusive end of the history records of `key`: the terminator `00 01`
/// becomes `00 02`, which no escaped key contains, so this sorts after every
/// record of `key` and before every record of the next key.
#[must_use]
pub fn history_key_end(key: &[u8]) -> Vec<u8> {
    let mut out = history_prefix(key);
    let last = out
        .last_mut()
        .expect("an escaped key ends with its terminator");
    debug_assert_eq!(*last, ESC_END);
    *last = ESC_END + 1;
    out
}

/// Exclusive end of the whole `h` space.
#[must_use]
pub fn history_space_end() -> Vec<u8> {
    vec![HISTORY_PREFIX + 1]
}

/// Splits a history key into `(escaped key part including h, rev)` without
/// unescaping; used to group records by key cheaply.
///
/// # Errors
/// `engine_key` is too short to be a history key.
pub fn split_history_key(engine_key: &[u8]) -> Result<(&[u8], Rev), EngineError> {
    if engine_key.first() != Some(&HISTORY_PREFIX) || engine_key.len() < 3 + REV_BYTES {
        return Err(EngineError(format!(
            "mvcc: not a history key: {engine_key:?}"
        )));
    }
    let (head, rev) = engine_key.split_at(engine_key.len() - REV_BYTES);
    Ok((head, decode_rev(rev, true)?))
}

/// Parses a history key into the user key and the revision.
///
/// # Errors
/// `engine_key` is not a well-formed history key.
pub fn parse_history_key(engine_key: &[u8]) -> Result<(Vec<u8>, Rev), EngineError> {
    let (head, rev) = split_history_key(engine_key)?;
    let (key, rest) = unescape(&head[1..])?;
    if !rest.is_empty() {
        return Err(EngineError(format!(
            "mvcc: trailing bytes in history key {engine_key:?}"
        )));
    }
    Ok((key, rev))
}

/// `r` ‖ main ‖ sub: the revision-log key of `rev`.
///
/// # Panics
/// A negative revision.
#[must_use]
pub fn revlog_key(rev: Rev) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + REV_BYTES);
    out.push(REVLOG_PREFIX);
    push_rev(
        &mut out,
        to_u64(rev.main, "main revision"),
        to_u64(rev.sub, "sub revision"),
    );
    out
}

/// Exclusive end of the whole `r` space.
#[must_use]
pub fn revlog_space_end() -> Vec<u8> {
    vec![REVLOG_PREFIX + 1]
}

/// Parses a revision-log key.
///
/// # Errors
/// `engine_key` is not a well-formed revision-log key.
pub fn parse_revlog_key(engine_key: &[u8]) -> Result<Rev, EngineError> {
    match engine_key.split_first() {
        Some((&REVLOG_PREFIX, rest)) if rest.len() == REV_BYTES => decode_rev(rest, false),
        _ => Err(EngineError(format!(
            "mvcc: not a revision-log key: {engine_key:?}"
        ))),
    }
}

fn decode_rev(bytes: &[u8], complemented: bool) -> Result<Rev, EngineError> {
    let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("slice of 8 bytes"));
    let (mut main, mut sub) = (word(&bytes[..8]), word(&bytes[8..16]));
    if complemented {
        main = !main;
        sub = !sub;
    }
    let main = i64::try_from(main)
        .map_err(|_| EngineError(format!("mvcc: revision out of range in {bytes:?}")))?;
    let sub = i64::try_from(sub)
        .map_err(|_| EngineError(format!("mvcc: sub revision out of range in {bytes:?}")))?;
    Ok(Rev { main, sub })
}

/// A stored version of a key (value of `c` and `h` keys). In `c` records
/// `tombstone` is always false.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct VersionRecord {
    /// Revision of the key's creation.
    #[prost(int64, tag = "1")]
    pub create_revision: i64,
    /// Revision of this version (equals the `main` of its history key).
    #[prost(int64, tag = "2")]
    pub mod_revision: i64,
    /// Writes since creation, from 1.
    #[prost(int64, tag = "3")]
    pub version: i64,
    /// The value.
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
    /// Attached lease, 0 for none.
    #[prost(int64, tag = "5")]
    pub lease: i64,
    /// This version is a deletion: the key does not exist from `mod_revision` on.
    #[prost(bool, tag = "6")]
    pub tombstone: bool,
}

/// What a revision-log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventKind {
    /// The key was written.
    Put = 0,
    /// The key was deleted.
    Delete = 1,
}

/// Value of a revision-log key.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RevLogRecord {
    /// The user key written.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// An [`EventKind`].
    #[prost(enumeration = "EventKind", tag = "2")]
    pub kind: i32,
}

/// Value of [`META_KEY`].
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct MetaRecord {
    /// Current revision.
    #[prost(int64, tag = "1")]
    pub current_revision: i64,
    /// Compaction watermark.
    #[prost(int64, tag = "2")]
    pub compact_revision: i64,
    /// Last applied log index.
    #[prost(uint64, tag = "3")]
    pub applied_index: u64,
    /// Term of the last applied log entry.
    #[prost(uint64, tag = "4")]
    pub applied_term: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<Vec<u8>> {
        let raw: [&[u8]; 12] = [
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"\x00\xff",
            b"\x01",
            b"a",
            b"a\x00",
            b"a\x00\x00",
            b"a\x00b",
            b"a\x01",
            b"ab",
            b"\xff\xff",
        ];
        raw.iter().map(|k| k.to_vec()).collect()
    }

    /// Escaping preserves order, never makes one key a prefix of another, and round-trips.
    #[test]
    fn escape_preserves_order_and_round_trips() {
        let ks = keys();
        for a in &ks {
            let mut ea = Vec::new();
            escape_into(&mut ea, a);
            let (back, rest) = unescape(&ea).expect("unescape");
            assert_eq!(&back, a);
            assert!(rest.is_empty());
            for b in &ks {
                let mut eb = Vec::new();
                escape_into(&mut eb, b);
                assert_eq!(a.cmp(b), ea.cmp(&eb), "order of {a:?} vs {b:?}");
                if a != b {
                    assert!(!eb.starts_with(&ea), "{a:?} escaped is a prefix of {b:?}");
                }
            }
        }
    }

    /// The worked example's encodings, byte for byte.
    #[test]
    fn encodings_are_exact() {
        assert_eq!(current_key(b"b\x00"), b"cb\x00".to_vec());
        let mut want = b"hb\x00\xff\x00\x01".to_vec();
        want.extend_from_slice(&(!3u64).to_be_bytes());
        want.extend_from_slice(&(!1u64).to_be_bytes());
        assert_eq!(history_key(b"b\x00", Rev { main: 3, sub: 1 }), want);
        let mut want = b"r".to_vec();
        want.extend_from_slice(&3u64.to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(revlog_key(Rev { main: 3, sub: 1 }), want);
        assert_eq!(history_key_end(b"a"), b"ha\x00\x02".to_vec());
    }

    /// History keys sort by user key, then newest revision first; the seek
    /// key lands on the newest record at or below the read revision.
    #[test]
    fn history_order_and_seek() {
        let k = |key: &[u8], main, sub| history_key(key, Rev { main, sub });
        let mut ordered = vec![
            k(b"a", 9, 0),
            k(b"a", 4, 1),
            k(b"a", 4, 0),
            k(b"a", 2, 0),
            k(b"a\x00", 5, 0),
            k(b"ab", 1, 0),
        ];
        let sorted = {
            let mut s = ordered.clone();
            s.sort();
            s
        };
        assert_eq!(ordered, sorted);
        let seek = history_seek(b"a", 4);
        assert!(k(b"a", 5, 0) < seek && seek <= k(b"a", 4, 1));
        assert!(k(b"a", 2, 0) < history_key_end(b"a"));
        assert!(history_key_end(b"a") < k(b"a\x00", 5, 0));
        ordered.retain(|x| x >= &seek);
        assert_eq!(
            parse_history_key(&ordered[0]).expect("parse"),
            (b"a".to_vec(), Rev { main: 4, sub: 1 })
        );
        assert_eq!(
            parse_revlog_key(&revlog_key(Rev { main: 7, sub: 2 })).expect("parse"),
            Rev { main: 7, sub: 2 }
        );
    }

    /// Malformed engine keys are reported, not mis-parsed.
    #[test]
    fn malformed_keys_are_errors() {
        assert!(unescape(b"a\x00\x07").is_err());
        assert!(unescape(b"abc").is_err());
        assert!(parse_history_key(b"ha").is_err());
        assert!(parse_revlog_key(b"r123").is_err());
        assert!(parse_current_key(b"hx").is_err());
    }
}
