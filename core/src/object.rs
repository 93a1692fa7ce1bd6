//! Object stores as core sees them: plain-data operations and outcomes.
//!
//! Core never talks to S3. When it needs the bucket (upload a WAL batch,
//! read the lock, list checkpoints) it emits an [`ObjectOp`]; the driver runs
//! it against whatever store it was given (S3, a directory, memory, the
//! simulator's fake S3) and feeds back an [`ObjectResult`]. Every store
//! implements the same semantics, checked by one conformance suite
//! (`testkit::object_conformance`):
//!
//! - **Keys** are relative to the store's root prefix (the driver joins them
//!   without doubling slashes) and must pass [`validate_key`]: a store
//!   refuses any other key with [`ObjectError::InvalidKey`] and changes
//!   nothing. Two keys where one is a "directory" of the other (`a/b` and
//!   `a/b/c`) may coexist, as in S3.
//! - **ETags** are opaque strings. A successful put returns the new object's
//!   ETag and a get returns the same one. Rewriting an object with different
//!   bytes changes its ETag.
//! - **Conditional puts**: [`PutCondition::IfAbsent`] (`If-None-Match: *`)
//!   creates only a missing key; [`PutCondition::IfMatch`] replaces only an
//!   object whose current ETag is the given one. A failed condition is
//!   [`ObjectError::PreconditionFailed`] and writes nothing; an `IfMatch` on a
//!   missing key is [`ObjectError::NotFound`]. Among concurrent conditional
//!   writers on one key and one condition at most one wins.
//! - **Deletes** are idempotent: deleting a missing key succeeds.
//! - **Lists** return keys in byte order, only those starting with the
//!   prefix and strictly after `start_after`, at most `max_keys` of them, and
//!   say whether more follow (`truncated`). Paging by passing the last key
//!   back as `start_after` visits every key once.
//!
//! # Outcomes that are not answers
//!
//! A request can fail without an answer from the store: [`ObjectError::Retryable`]
//! (throttled, 5xx, timeout, connection lost) means "the operation may or may
//! not have happened; trying again is reasonable". In particular a put that
//! timed out may land later, and a put whose response was lost has happened.
//! Core's protocols are written for exactly that: conditional writes make a
//! retry safe, and a `PreconditionFailed` after a retry is resolved by
//! reading the object back (see the node's upload pipeline).

use std::collections::BTreeMap;

use bytes::Bytes;

/// An object's entity tag, as the store returned it (S3 includes the quotes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ETag(pub String);

/// When a put may happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutCondition {
    /// Always (plain PUT; replaces any existing object).
    None,
    /// Only if no object exists under the key (`If-None-Match: *`).
    IfAbsent,
    /// Only if the current object's ETag is this one (`If-Match`).
    IfMatch(ETag),
}

/// One operation on an object store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectOp {
    /// Read a whole object: [`ObjectReply::Got`] or [`ObjectError::NotFound`].
    Get {
        /// The key.
        key: String,
    },
    /// Write a whole object: [`ObjectReply::Put`].
    Put {
        /// The key.
        key: String,
        /// The new contents.
        body: Bytes,
        /// The precondition.
        condition: PutCondition,
    },
    /// Delete an object (succeeds if it is missing): [`ObjectReply::Deleted`].
    Delete {
        /// The key.
        key: String,
    },
    /// One page of keys: [`ObjectReply::Listed`].
    List {
        /// Only keys starting with this (may be empty).
        prefix: String,
        /// Only keys strictly after this one (the last key of the previous
        /// page).
        start_after: Option<String>,
        /// At most this many keys (1 ..= [`LIST_KEYS_MAX`]).
        max_keys: usize,
    },
}

impl ObjectOp {
    /// The key the operation is about (the prefix for a list).
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            ObjectOp::Get { key } | ObjectOp::Put { key, .. } | ObjectOp::Delete { key } => key,
            ObjectOp::List { prefix, .. } => prefix,
        }
    }

    /// A short name for logs and metrics (`get`, `put`, `delete`, `list`).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectOp::Get { .. } => "get",
            ObjectOp::Put { .. } => "put",
            ObjectOp::Delete { .. } => "delete",
            ObjectOp::List { .. } => "list",
        }
    }
}

/// The most keys one list page may ask for (S3's limit).
pub const LIST_KEYS_MAX: usize = 1000;

/// The longest key, in bytes (S3's limit).
pub const KEY_BYTES_MAX: usize = 1024;

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key (relative to the store's root prefix).
    pub key: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its ETag.
    pub etag: ETag,
}

/// A successful operation's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectReply {
    /// The object's contents and ETag.
    Got {
        /// Contents.
        body: Bytes,
        /// ETag.
        etag: ETag,
    },
    /// The object was written; its new ETag.
    Put {
        /// ETag.
        etag: ETag,
    },
    /// The object is gone (or was never there).
    Deleted,
    /// One page of a listing.
    Listed {
        /// Keys in byte order.
        objects: Vec<ObjectInfo>,
        /// More keys follow this page.
        truncated: bool,
    },
}

/// Why an operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// No object under the key (get, `IfMatch` put).
    #[error("object not found")]
    NotFound,
    /// The put's condition did not hold (HTTP 412), or a concurrent
    /// conditional write on the key was in progress (AWS's 409
    /// `ConditionalRequestConflict`). Nothing was written by this request.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The key (or a list request) is malformed; nothing was done.
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    /// No answer, or a transient one (throttled, 5xx, timeout, connection
    /// lost): the operation may or may not have taken effect.
    #[error("object store unavailable: {0}")]
    Retryable(String),
    /// Any other failure (access denied, no such bucket …); retrying will
    /// not help without an operator.
    #[error("object store error: {0}")]
    Failed(String),
}

/// What executing an [`ObjectOp`] gives.
pub type ObjectResult = Result<ObjectReply, ObjectError>;

/// Checks that `key` is one every store accepts: 1 ..= [`KEY_BYTES_MAX`]
/// bytes, printable ASCII without `\`, no leading or trailing `/`, no empty,
/// `.` or `..` component. Our layout needs nothing more, and this keeps the
/// directory store free of path tricks.
///
/// # Errors
/// [`ObjectError::InvalidKey`] saying what is wrong.
pub fn validate_key(key: &str) -> Result<(), ObjectError> {
    let bad = |why: &str| Err(ObjectError::InvalidKey(format!("{key:?}: {why}")));
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > KEY_BYTES_MAX {
        return bad("longer than 1024 bytes");
    }
    if let Some(c) = key.chars().find(|c| !c.is_ascii_graphic() || *c == '\\') {
        return bad(&format!("character {c:?} is not allowed"));
    }
    if key
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("empty, '.' or '..' path component");
    }
    Ok(())
}

/// Checks a list request's prefix and page size. An empty prefix lists
/// everything; a non-empty one follows the key rules except that it may end
/// with `/`.
///
/// # Errors
/// [`ObjectError::InvalidKey`] saying what is wrong.
pub fn validate_list(prefix: &str, max_keys: usize) -> Result<(), ObjectError> {
    if max_keys == 0 || max_keys > LIST_KEYS_MAX {
        return Err(ObjectError::InvalidKey(format!(
            "max_keys {max_keys} outside 1..={LIST_KEYS_MAX}"
        )));
    }
    if prefix.is_empty() {
        return Ok(());
    }
    validate_key(prefix.strip_suffix('/').unwrap_or(prefix))
}

/// An in-memory bucket with exact store semantics, synchronous.
///
/// The memory store of io-real and the simulator's fake S3 both keep their
/// objects in one of these, so the conformance suite's semantics are
/// written once. ETags are `"<generation>-<crc32c>"`: every write gets a new
/// generation, so even rewriting the same bytes changes the ETag (S3 keeps
/// it for identical single-part bodies; nothing in t4 depends on either).
#[derive(Clone, Debug, Default)]
pub struct MemBucket {
    objects: BTreeMap<String, (Bytes, ETag)>,
    generation: u64,
}

impl MemBucket {
    /// An empty bucket.
    #[must_use]
    pub fn new() -> MemBucket {
        MemBucket::default()
    }

    /// Executes one operation.
    pub fn execute(&mut self, op: ObjectOp) -> ObjectResult {
        match op {
            ObjectOp::Get { key } => {
                validate_key(&key)?;
                let (body, etag) = self.objects.get(&key).ok_or(ObjectError::NotFound)?;
                Ok(ObjectReply::Got {
                    body: body.clone(),
                    etag: etag.clone(),
                })
            }
            ObjectOp::Put {
                key,
                body,
                condition,
            } => {
                validate_key(&key)?;
                let current = self.objects.get(&key).map(|(_, etag)| etag);
                match (&condition, current) {
                    (PutCondition::None, _) | (PutCondition::IfAbsent, None) => {}
                    (PutCondition::IfAbsent, Some(_)) => {
                        return Err(ObjectError::PreconditionFailed)
                    }
                    (PutCondition::IfMatch(_), None) => return Err(ObjectError::NotFound),
                    (PutCondition::IfMatch(want), Some(have)) => {
                        if want != have {
                            return Err(ObjectError::PreconditionFailed);
                        }
                    }
                }
                self.generation += 1;
                let etag = ETag(format!(
                    "\"{}-{:08x}\"",
                    self.generation,
                    crc32c::crc32c(&body)
                ));
                self.objects.insert(key, (body, etag.clone()));
                Ok(ObjectReply::Put { etag })
            }
            ObjectOp::Delete { key } => {
                validate_key(&key)?;
                self.objects.remove(&key);
                Ok(ObjectReply::Deleted)
            }
            ObjectOp::List {
                prefix,
                start_after,
                max_keys,
            } => {
                validate_list(&prefix, max_keys)?;
                let from = match &start_after {
                    Some(after) if after.as_str() >= prefix.as_str() => {
                        std::ops::Bound::Excluded(after.clone())
                    }
                    _ => std::ops::Bound::Included(prefix.clone()),
                };
                let mut matching = self
                    .objects
                    .range((from, std::ops::Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(key, (body, etag))| ObjectInfo {
                        key: key.clone(),
                        size_bytes: body.len() as u64,
                        etag: etag.clone(),
                    });
                let objects: Vec<ObjectInfo> = matching.by_ref().take(max_keys).collect();
                let truncated = matching.next().is_some();
                Ok(ObjectReply::Listed { objects, truncated })
            }
        }
    }

    /// Every key and its contents, in key order (for checkers and tools).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.objects.iter().map(|(k, (body, _))| (k.as_str(), body))
    }

    /// Number of objects.
    #[must_use]
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the bucket holds no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys that could escape a directory or confuse a listing are refused.
    #[test]
    fn key_validation() {
        for good in [
            "a",
            "wal/00000000000000000001",
            "sst/0123abcd/000012.sst",
            "a-b_c.d~e",
        ] {
            assert_eq!(validate_key(good), Ok(()), "{good}");
        }
        let long = "k".repeat(KEY_BYTES_MAX + 1);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "../a",
            "a/../b",
            "./a",
            "a/.",
            "a b",
            "a\\b",
            "a\nb",
            "é",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_key(bad), Err(ObjectError::InvalidKey(_))),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(validate_list("", 1), Ok(()));
        assert_eq!(validate_list("wal/", 1000), Ok(()));
        assert!(validate_list("wal/", 0).is_err());
        assert!(validate_list("wal/", 1001).is_err());
        assert!(validate_list("../", 10).is_err());
    }
}
