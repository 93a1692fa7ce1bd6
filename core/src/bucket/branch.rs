//! Branch registrations: `branches/<id>` (ARCHITECTURE §3.10).
//!
//! `t4 branch fork` registers a branch of this bucket at one of its
//! checkpoints. The registration pins that checkpoint: GC keeps it, and the
//! SSTs it references, for as long as the registration exists, because the
//! branch node reads them from this bucket instead of copying them.
//! `t4 branch unfork` deletes the registration and releases the pin.
//!
//! The registration is JSON, so an operator can read it with any S3 tool:
//!
//! ```json
//! {"format_version":1,"branch_id":"staging",
//!  "manifest_key":"checkpoint/0000000001/00000000000000000100/manifest.json",
//!  "created_unix_ms":1700000000000}
//! ```
//!
//! A registration that cannot be read pins an unknown checkpoint: GC must
//! then delete no checkpoint at all, and says so.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::layout::{branch_key, parse_checkpoint_manifest_key, BRANCH_PREFIX};

/// The registration format this code writes and the only one it reads.
pub const BRANCH_FORMAT_VERSION: u32 = 1;

/// The longest branch id accepted, in bytes.
pub const BRANCH_ID_BYTES_MAX: usize = 128;

/// One decoded `branches/<id>` object.
///
/// As for the lock and the manifests, the format version lives only in the
/// JSON: encoding writes [`BRANCH_FORMAT_VERSION`], decoding refuses any
/// other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchRegistration {
    /// The branch's id ([`check_branch_id`]); its key is
    /// [`branch_key`]`(branch_id)`.
    pub branch_id: String,
    /// The manifest key of the checkpoint the branch starts from: the pin.
    pub manifest_key: String,
    /// Wall-clock time of the registration (data for operators, never
    /// compared).
    pub created_unix_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BranchWire {
    format_version: u32,
    branch_id: String,
    manifest_key: String,
    created_unix_ms: u64,
}

/// Just the version, read first so that a newer format is reported as such.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u64,
}

/// Why a branch registration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BranchError {
    /// Not JSON, or not the shape of the format it claims.
    #[error("{key}: not a valid branch registration: {why}")]
    Malformed {
        /// The object's key.
        key: String,
        /// The parser's message.
        why: String,
    },
    /// Written by a newer t4.
    #[error(
        "{key}: format version {found}, this t4 reads only version {BRANCH_FORMAT_VERSION}: upgrade t4"
    )]
    UnknownVersion {
        /// The object's key.
        key: String,
        /// The version found.
        found: u64,
    },
    /// Well-formed, but breaks a rule.
    #[error("{key}: {why}")]
    Invalid {
        /// The object's key.
        key: String,
        /// Which rule, with the offending value.
        why: String,
    },
}

impl BranchRegistration {
    /// This registration's key: [`branch_key`]`(branch_id)`.
    #[must_use]
    pub fn key(&self) -> String {
        branch_key(&self.branch_id)
    }

    /// Checks the registration stored under `key`: the branch id is valid
    /// ([`check_branch_id`]), `key` is its [`branch_key`], and the pin is a
    /// checkpoint manifest key.
    ///
    /// # Errors
    /// [`BranchError::Invalid`] naming the first broken rule.
    pub fn validate(&self, key: &str) -> Result<(), BranchError> {
        let invalid = |why: String| {
            Err(BranchError::Invalid {
                key: key.to_owned(),
                why,
            })
        };
        if let Err(why) = check_branch_id(&self.branch_id) {
            return invalid(format!("branch id {:?}: {why}", self.branch_id));
        }
        if key != branch_key(&self.branch_id) {
            return invalid(format!(
                "registers branch {:?}, which belongs under {:?}",
                self.branch_id,
                branch_key(&self.branch_id)
            ));
        }
        if parse_checkpoint_manifest_key(&self.manifest_key).is_none() {
            return invalid(format!(
                "pins {:?}, which is not a checkpoint manifest key",
                self.manifest_key
            ));
        }
        Ok(())
    }

    /// The object body.
    ///
    /// # Panics
    /// The registration breaks a rule of [`BranchRegistration::validate`]
    /// for its own key: core never writes one it would refuse to read.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        if let Err(e) = self.validate(&self.key()) {
            panic!("refusing to write an invalid branch registration: {e}");
        }
        let wire = BranchWire {
            format_version: BRANCH_FORMAT_VERSION,
            branch_id: self.branch_id.clone(),
            manifest_key: self.manifest_key.clone(),
            created_unix_ms: self.created_unix_ms,
        };
        Bytes::from(serde_json::to_vec(&wire).expect("a registration always serializes to JSON"))
    }

    /// Parses the registration stored under `key` and validates it.
    ///
    /// # Errors
    /// [`BranchError`] naming `key`: an unknown version first, then
    /// malformed JSON, then the first broken rule.
    pub fn decode(key: &str, body: &[u8]) -> Result<BranchRegistration, BranchError> {
        let malformed = |e: serde_json::Error| BranchError::Malformed {
            key: key.to_owned(),
            why: e.to_string(),
        };
        let version: VersionOnly = serde_json::from_slice(body).map_err(malformed)?;
        if version.format_version != u64::from(BRANCH_FORMAT_VERSION) {
            return Err(BranchError::UnknownVersion {
                key: key.to_owned(),
                found: version.format_version,
            });
        }
        let wire: BranchWire = serde_json::from_slice(body).map_err(malformed)?;
        let registration = BranchRegistration {
            branch_id: wire.branch_id,
            manifest_key: wire.manifest_key,
            created_unix_ms: wire.created_unix_ms,
        };
        registration.validate(key)?;
        Ok(registration)
    }
}

/// The branch id of a registration key, or `None` if `key` is not directly
/// under `branches/`.
#[must_use]
pub fn parse_branch_key(key: &str) -> Option<&str> {
    key.strip_prefix(BRANCH_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Checks that `id` can name a branch: 1 ..= [`BRANCH_ID_BYTES_MAX`] bytes
/// of ASCII letters, digits, `-`, `_` and `.`, not starting with `.`. It
/// becomes one key component (and one file name in a directory store), so
/// nothing that could be a path separator or a hidden name is allowed.
///
/// # Errors
/// What is wrong with it.
pub fn check_branch_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".into());
    }
    if id.len() > BRANCH_ID_BYTES_MAX {
        return Err(format!("longer than {BRANCH_ID_BYTES_MAX} bytes"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("character {c:?} is not allowed in a branch id"));
    }
    if id.starts_with('.') {
        return Err("starts with '.'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::layout::checkpoint_manifest_key;
    use crate::object::validate_key;
    use crate::types::{Index, Term};

    fn registration() -> BranchRegistration {
        BranchRegistration {
            branch_id: "staging-2".into(),
            manifest_key: checkpoint_manifest_key(Term(1), Index(100)),
            created_unix_ms: 1_700_000_000_000,
        }
    }

    /// A registration round-trips, its key is a valid object key, and the
    /// key parses back to its id.
    #[test]
    fn round_trip() {
        let r = registration();
        assert_eq!(r.key(), "branches/staging-2");
        assert_eq!(validate_key(&r.key()), Ok(()));
        let body = r.encode();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"format_version":1,"branch_id":"staging-2","manifest_key":"checkpoint/0000000001/00000000000000000100/manifest.json","created_unix_ms":1700000000000}"#
        );
        assert_eq!(BranchRegistration::decode(&r.key(), &body), Ok(r.clone()));
        assert_eq!(parse_branch_key(&r.key()), Some("staging-2"));
        for not in ["branches/", "branches/a/b", "branch/a", "sst/a"] {
            assert_eq!(parse_branch_key(not), None, "{not}");
        }
    }

    /// Ids that could escape their key component, a key that names another
    /// branch, a pin that is not a manifest, a newer format and bad JSON are
    /// refused, each with its reason.
    #[test]
    fn refusals() {
        for (id, why) in [
            ("", "empty"),
            ("a/b", "character '/' is not allowed in a branch id"),
            ("..", "starts with '.'"),
            (".hidden", "starts with '.'"),
            ("a b", "character ' ' is not allowed in a branch id"),
            (
                "caf\u{e9}",
                "character '\u{e9}' is not allowed in a branch id",
            ),
        ] {
            let r = BranchRegistration {
                branch_id: id.into(),
                ..registration()
            };
            assert_eq!(
                r.validate(&format!("branches/{id}")),
                Err(BranchError::Invalid {
                    key: format!("branches/{id}"),
                    why: format!("branch id {id:?}: {why}")
                })
            );
        }
        assert_eq!(
            check_branch_id(&"x".repeat(129)),
            Err("longer than 128 bytes".into())
        );
        assert_eq!(check_branch_id(&"x".repeat(128)), Ok(()));

        let r = registration();
        assert_eq!(
            r.validate("branches/other").unwrap_err().to_string(),
            r#"branches/other: registers branch "staging-2", which belongs under "branches/staging-2""#
        );
        let r = BranchRegistration {
            manifest_key: "sst/aaaaaaaaaaaaaaaa/1.sst".into(),
            ..registration()
        };
        assert_eq!(
            r.validate(&r.key()).unwrap_err().to_string(),
            r#"branches/staging-2: pins "sst/aaaaaaaaaaaaaaaa/1.sst", which is not a checkpoint manifest key"#
        );

        let key = registration().key();
        let body = registration().encode();
        let newer = std::str::from_utf8(&body)
            .unwrap()
            .replace("\"format_version\":1", "\"format_version\":2");
        assert_eq!(
            BranchRegistration::decode(&key, newer.as_bytes()),
            Err(BranchError::UnknownVersion {
                key: key.clone(),
                found: 2
            })
        );
        for bad in [&b"not json"[..], b"{\"format_version\":1}", b""] {
            assert!(
                matches!(
                    BranchRegistration::decode(&key, bad),
                    Err(BranchError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        let extra = std::str::from_utf8(&body)
            .unwrap()
            .replace("}", ",\"x\":1}");
        assert!(matches!(
            BranchRegistration::decode(&key, extra.as_bytes()),
            Err(BranchError::Malformed { .. })
        ));
    }

    /// The decoder validates: a registration moved under another id's key is
    /// refused, so a copied object cannot pin under a false name.
    #[test]
    fn decode_validates() {
        let body = registration().encode();
        assert!(matches!(
            BranchRegistration::decode("branches/copy", &body),
            Err(BranchError::Invalid { .. })
        ));
    }
}
