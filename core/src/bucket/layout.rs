//! Key names in the bucket, and parsing them back.

use crate::types::{Index, Term};

/// The election lock.
pub const LEADER_LOCK: &str = "leader-lock";
/// Prefix of WAL objects.
pub const WAL_PREFIX: &str = "wal/";
/// Prefix of checkpoints.
pub const CHECKPOINT_PREFIX: &str = "checkpoint/";
/// Prefix of content-addressed SSTs.
pub const SST_PREFIX: &str = "sst/";
/// The pointer to the newest checkpoint.
pub const MANIFEST_LATEST: &str = "manifest/latest";
/// Prefix of branch registrations.
pub const BRANCH_PREFIX: &str = "branches/";
/// File name of a checkpoint's manifest inside its folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Digits of an index in a key (`u64::MAX` has 20).
const INDEX_DIGITS: usize = 20;
/// Digits of a term in a key.
const TERM_DIGITS: usize = 10;

/// The key of the WAL object whose first entry is `first`.
#[must_use]
pub fn wal_key(first: Index) -> String {
    assert!(first.0 >= 1, "WAL objects start at index 1 or later");
    format!("{WAL_PREFIX}{:0width$}", first.0, width = INDEX_DIGITS)
}

/// The first index of a WAL object key, or `None` if `key` is not one.
#[must_use]
pub fn parse_wal_key(key: &str) -> Option<Index> {
    let digits = key.strip_prefix(WAL_PREFIX)?;
    parse_number(digits, INDEX_DIGITS)
        .filter(|&i| i >= 1)
        .map(Index)
}

/// The folder of the checkpoint taken at `index` in `term` (ends with `/`).
#[must_use]
pub fn checkpoint_dir(term: Term, index: Index) -> String {
    format!(
        "{CHECKPOINT_PREFIX}{:0tw$}/{:0iw$}/",
        term.0,
        index.0,
        tw = TERM_DIGITS,
        iw = INDEX_DIGITS
    )
}

/// The manifest key of the checkpoint taken at `index` in `term`.
#[must_use]
pub fn checkpoint_manifest_key(term: Term, index: Index) -> String {
    format!("{}{MANIFEST_FILE}", checkpoint_dir(term, index))
}

/// `(term, index)` of a checkpoint manifest key, or `None` if `key` is not
/// one.
#[must_use]
pub fn parse_checkpoint_manifest_key(key: &str) -> Option<(Term, Index)> {
    let rest = key.strip_prefix(CHECKPOINT_PREFIX)?;
    let rest = rest.strip_suffix(MANIFEST_FILE)?.strip_suffix('/')?;
    let (term, index) = rest.split_once('/')?;
    Some((
        Term(parse_number(term, TERM_DIGITS)?),
        Index(parse_number(index, INDEX_DIGITS)?),
    ))
}

/// The key of an SST stored by content: `sst/<first 16 hex of its
/// sha256>/<name>`.
#[must_use]
pub fn sst_key(sha256_hex: &str, name: &str) -> String {
    assert!(
        sha256_hex.len() >= 16 && sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "an SST key needs a hex sha256, got {sha256_hex:?}"
    );
    format!("{SST_PREFIX}{}/{name}", &sha256_hex[..16])
}

/// The key of branch `id`'s registration.
#[must_use]
pub fn branch_key(id: &str) -> String {
    format!("{BRANCH_PREFIX}{id}")
}

/// A zero-padded decimal of exactly `width` digits.
fn parse_number(s: &str, width: usize) -> Option<u64> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::validate_key;

    /// Keys round-trip, sort in log order and are valid object keys.
    #[test]
    fn keys_round_trip_and_sort() {
        let a = wal_key(Index(9));
        let b = wal_key(Index(10));
        assert_eq!(a, "wal/00000000000000000009");
        assert!(a < b, "listing order is log order");
        assert_eq!(parse_wal_key(&b), Some(Index(10)));
        assert_eq!(
            parse_wal_key(&wal_key(Index(u64::MAX))),
            Some(Index(u64::MAX))
        );
        for bad in [
            "wal/9",
            "wal/0000000000000000000x",
            "wal/00000000000000000000",
            "wal/",
            "x",
        ] {
            assert_eq!(parse_wal_key(bad), None, "{bad}");
        }
        let m = checkpoint_manifest_key(Term(1), Index(100));
        assert_eq!(
            m,
            "checkpoint/0000000001/00000000000000000100/manifest.json"
        );
        assert_eq!(
            parse_checkpoint_manifest_key(&m),
            Some((Term(1), Index(100)))
        );
        assert_eq!(
            parse_checkpoint_manifest_key("checkpoint/1/100/manifest.json"),
            None
        );
        assert_eq!(
            sst_key("0123456789abcdef0123", "000042.sst"),
            "sst/0123456789abcdef/000042.sst"
        );
        for key in [a, m, sst_key(&"f".repeat(64), "1.sst"), branch_key("b1")] {
            assert_eq!(validate_key(&key), Ok(()), "{key}");
        }
    }
}
