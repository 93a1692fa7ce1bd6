//! Checkpoint manifests and the `manifest/latest` pointer (ARCHITECTURE
//! §3.10).
//!
//! A checkpoint taken at applied index `I` in term `T` is a folder
//! `checkpoint/<T>/<I>/` holding the engine's small meta files, plus SSTs
//! stored once by content under `sst/`. Its `manifest.json` lists every file
//! with its size and sha256, and is written **last**, so a listed manifest
//! means a complete upload. `manifest/latest` then points at it.
//!
//! A manifest comes from the bucket, which a restore trusts only so far:
//! every file name becomes a local path, so [`CheckpointManifest::validate`]
//! refuses anything but a plain file name (a manifest must never make a
//! restore write outside its folder), and every key must be the one the
//! layout gives for that file, so a manifest cannot point a restore at
//! another checkpoint's folder or an unrelated object. The same rules are
//! asserted when a manifest is encoded: core never writes a manifest it
//! would refuse to read.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::layout::{
    checkpoint_dir, checkpoint_manifest_key, parse_checkpoint_manifest_key, sst_key, MANIFEST_FILE,
};
use crate::types::{Index, Revision, Term};

/// The manifest and pointer format this code writes and the only one it
/// reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// The longest file name accepted, in bytes (the usual file-system limit).
pub const FILE_NAME_BYTES_MAX: usize = 255;

/// Hex digits of a sha256.
const SHA256_HEX_LEN: usize = 64;

/// One file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// The file's name in the restored checkpoint folder (a plain name).
    pub name: String,
    /// Where it is in the bucket.
    pub key: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its sha256, 64 lowercase hex digits.
    pub sha256: String,
}

impl FileRef {
    /// An SST, stored by content: its key is [`sst_key`]`(sha256, name)`.
    ///
    /// # Panics
    /// `sha256` is not 64 hex digits.
    #[must_use]
    pub fn sst(name: &str, size_bytes: u64, sha256: &str) -> FileRef {
        assert!(is_sha256_hex(sha256), "not a sha256: {sha256:?}");
        FileRef {
            name: name.to_owned(),
            key: sst_key(sha256, name),
            size_bytes,
            sha256: sha256.to_owned(),
        }
    }

    /// A meta file of the checkpoint at `(term, index)`: its key is
    /// [`checkpoint_dir`]`(term, index)` followed by its name.
    ///
    /// # Panics
    /// `sha256` is not 64 hex digits.
    #[must_use]
    pub fn meta(term: Term, index: Index, name: &str, size_bytes: u64, sha256: &str) -> FileRef {
        assert!(is_sha256_hex(sha256), "not a sha256: {sha256:?}");
        FileRef {
            name: name.to_owned(),
            key: format!("{}{name}", checkpoint_dir(term, index)),
            size_bytes,
            sha256: sha256.to_owned(),
        }
    }
}

/// The decoded `manifest.json` of one checkpoint.
///
/// As for the lock, the format version lives only in the JSON: encoding
/// writes [`MANIFEST_FORMAT_VERSION`], decoding refuses any other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointManifest {
    /// The term the checkpoint was taken in (the writer's term).
    pub term: Term,
    /// The applied index the engine state is at.
    pub index: Index,
    /// The store's revision at `index`.
    pub revision: Revision,
    /// The compact revision at `index`.
    pub compact_revision: Revision,
    /// The SSTs, stored under `sst/`.
    pub ssts: Vec<FileRef>,
    /// The other engine files (MANIFEST, OPTIONS, CURRENT …), stored in the
    /// checkpoint's folder.
    pub meta_files: Vec<FileRef>,
    /// Wall-clock time of the upload (data for operators, never compared).
    pub created_unix_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestWire {
    format_version: u32,
    term: u64,
    index: u64,
    revision: i64,
    compact_revision: i64,
    ssts: Vec<FileRef>,
    meta_files: Vec<FileRef>,
    created_unix_ms: u64,
}

/// Just the version, read first so that a newer format is reported as such.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u64,
}

/// Why a manifest or the latest pointer cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not the shape of the format it claims.
    #[error("{key}: not a valid manifest: {why}")]
    Malformed {
        /// The object's key.
        key: String,
        /// The parser's message.
        why: String,
    },
    /// Written by a newer t4.
    #[error(
        "{key}: format version {found}, this t4 reads only version {MANIFEST_FORMAT_VERSION}: upgrade t4"
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

impl CheckpointManifest {
    /// This manifest's key: [`checkpoint_manifest_key`]`(term, index)`.
    #[must_use]
    pub fn key(&self) -> String {
        checkpoint_manifest_key(self.term, self.index)
    }

    /// Checks the manifest stored under `manifest_key`:
    /// - the key is a checkpoint manifest key naming this term and index
    ///   (term and index ≥ 1);
    /// - `0 ≤ compact_revision ≤ revision` and `revision ≥ 1`;
    /// - every file name is a plain file name ([`check_file_name`]) and
    ///   names are unique across SSTs and meta files (they land in one
    ///   folder); no meta file is called `manifest.json`;
    /// - every sha256 is 64 lowercase hex digits;
    /// - every SST's key is [`sst_key`]`(sha256, name)`, every meta file's
    ///   key is the checkpoint's folder followed by its name.
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] naming the first broken rule.
    pub fn validate(&self, manifest_key: &str) -> Result<(), ManifestError> {
        let invalid = |why: String| {
            Err(ManifestError::Invalid {
                key: manifest_key.to_owned(),
                why,
            })
        };
        let Some((term, index)) = parse_checkpoint_manifest_key(manifest_key) else {
            return invalid("not a checkpoint manifest key".into());
        };
        if (term, index) != (self.term, self.index) {
            return invalid(format!(
                "the manifest says term {} index {}, its key says term {term} index {index}",
                self.term, self.index
            ));
        }
        if term.0 == 0 || index.0 == 0 {
            return invalid(format!(
                "term {term} and index {index} must both be at least 1"
            ));
        }
        if self.revision.0 < 1
            || self.compact_revision.0 < 0
            || self.compact_revision > self.revision
        {
            return invalid(format!(
                "revision {} and compact revision {} must satisfy 0 <= compact <= revision, revision >= 1",
                self.revision, self.compact_revision
            ));
        }
        let dir = checkpoint_dir(term, index);
        let mut names = BTreeSet::new();
        let files = self
            .ssts
            .iter()
            .map(|f| (f, true))
            .chain(self.meta_files.iter().map(|f| (f, false)));
        for (file, is_sst) in files {
            if let Err(why) = check_file_name(&file.name) {
                return invalid(format!("file name {:?}: {why}", file.name));
            }
            if !names.insert(file.name.as_str()) {
                return invalid(format!("file name {:?} appears twice", file.name));
            }
            if !is_sha256_hex(&file.sha256) {
                return invalid(format!(
                    "file {:?}: sha256 {:?} is not 64 lowercase hex digits",
                    file.name, file.sha256
                ));
            }
            let want = if is_sst {
                sst_key(&file.sha256, &file.name)
            } else {
                if file.name == MANIFEST_FILE {
                    return invalid(format!("a meta file may not be called {MANIFEST_FILE:?}"));
                }
                format!("{dir}{}", file.name)
            };
            if file.key != want {
                let what = if is_sst { "SST" } else { "meta file" };
                return invalid(format!(
                    "{what} {:?} is stored under {:?}, expected {want:?}",
                    file.name, file.key
                ));
            }
        }
        Ok(())
    }

    /// The object body.
    ///
    /// # Panics
    /// The manifest breaks a rule of [`CheckpointManifest::validate`] for
    /// its own key.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        if let Err(e) = self.validate(&self.key()) {
            panic!("refusing to write an invalid checkpoint manifest: {e}");
        }
        let wire = ManifestWire {
            format_version: MANIFEST_FORMAT_VERSION,
            term: self.term.0,
            index: self.index.0,
            revision: self.revision.0,
            compact_revision: self.compact_revision.0,
            ssts: self.ssts.clone(),
            meta_files: self.meta_files.clone(),
            created_unix_ms: self.created_unix_ms,
        };
        Bytes::from(serde_json::to_vec(&wire).expect("a manifest always serializes to JSON"))
    }

    /// Parses the manifest stored under `manifest_key` and validates it: a
    /// manifest is never handed out unchecked.
    ///
    /// # Errors
    /// [`ManifestError`] naming `manifest_key`: an unknown version first,
    /// then malformed JSON, then the first broken rule.
    pub fn decode(manifest_key: &str, body: &[u8]) -> Result<CheckpointManifest, ManifestError> {
        check_version(manifest_key, body)?;
        let wire: ManifestWire =
            serde_json::from_slice(body).map_err(|e| malformed(manifest_key, &e))?;
        let manifest = CheckpointManifest {
            term: Term(wire.term),
            index: Index(wire.index),
            revision: Revision(wire.revision),
            compact_revision: Revision(wire.compact_revision),
            ssts: wire.ssts,
            meta_files: wire.meta_files,
            created_unix_ms: wire.created_unix_ms,
        };
        manifest.validate(manifest_key)?;
        Ok(manifest)
    }

    /// Every key the checkpoint needs: its SSTs and meta files (not the
    /// manifest itself).
    pub fn file_keys(&self) -> impl Iterator<Item = &str> {
        self.ssts
            .iter()
            .chain(&self.meta_files)
            .map(|f| f.key.as_str())
    }
}

/// The decoded `manifest/latest`: which checkpoint is the newest.
///
/// It is replaced only with `If-Match` and only by a newer checkpoint
/// ([`may_replace`]), so it never goes backwards: a slow checkpointer that
/// finishes an older checkpoint late cannot hide a newer one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestPointer {
    /// The manifest's key.
    pub manifest_key: String,
    /// The checkpoint's term (as in the key).
    pub term: Term,
    /// The checkpoint's index (as in the key).
    pub index: Index,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatestWire {
    format_version: u32,
    manifest_key: String,
    term: u64,
    index: u64,
}

impl LatestPointer {
    /// The pointer to the checkpoint taken at `index` in `term`.
    #[must_use]
    pub fn to_checkpoint(term: Term, index: Index) -> LatestPointer {
        LatestPointer {
            manifest_key: checkpoint_manifest_key(term, index),
            term,
            index,
        }
    }

    /// Checks that the key is a manifest key naming the pointer's term and
    /// index.
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] (the key in the message is
    /// `manifest/latest`).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if parse_checkpoint_manifest_key(&self.manifest_key) != Some((self.term, self.index)) {
            return Err(ManifestError::Invalid {
                key: super::layout::MANIFEST_LATEST.to_owned(),
                why: format!(
                    "points at {:?} but says term {} index {}",
                    self.manifest_key, self.term, self.index
                ),
            });
        }
        Ok(())
    }

    /// The object body.
    ///
    /// # Panics
    /// The pointer is invalid ([`LatestPointer::validate`]).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        if let Err(e) = self.validate() {
            panic!("refusing to write an invalid latest pointer: {e}");
        }
        let wire = LatestWire {
            format_version: MANIFEST_FORMAT_VERSION,
            manifest_key: self.manifest_key.clone(),
            term: self.term.0,
            index: self.index.0,
        };
        Bytes::from(serde_json::to_vec(&wire).expect("a pointer always serializes to JSON"))
    }

    /// Parses and checks `manifest/latest`.
    ///
    /// # Errors
    /// [`ManifestError`] naming `manifest/latest`.
    pub fn decode(body: &[u8]) -> Result<LatestPointer, ManifestError> {
        let key = super::layout::MANIFEST_LATEST;
        check_version(key, body)?;
        let wire: LatestWire = serde_json::from_slice(body).map_err(|e| malformed(key, &e))?;
        let pointer = LatestPointer {
            manifest_key: wire.manifest_key,
            term: Term(wire.term),
            index: Index(wire.index),
        };
        pointer.validate()?;
        Ok(pointer)
    }
}

/// Whether `next` may replace `current` as `manifest/latest`: only if it
/// is strictly newer by `(index, term)`. Equal is `false` (nothing to do);
/// older is `false` (never backwards). A missing pointer may always be
/// created.
#[must_use]
pub fn may_replace(current: Option<&LatestPointer>, next: &LatestPointer) -> bool {
    current.is_none_or(|c| (next.index, next.term) > (c.index, c.term))
}

/// Checks that `name` is a plain file name, safe to join to a folder:
/// 1 ..= [`FILE_NAME_BYTES_MAX`] bytes of printable ASCII, no `/` or `\`,
/// not starting with `.` (which also excludes `.` and `..`).
///
/// # Errors
/// What is wrong with it.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > FILE_NAME_BYTES_MAX {
        return Err(format!("longer than {FILE_NAME_BYTES_MAX} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || *c == '/' || *c == '\\')
    {
        return Err(format!("character {c:?} is not allowed in a file name"));
    }
    if name.starts_with('.') {
        return Err("starts with '.'".into());
    }
    Ok(())
}

/// Whether `s` is a sha256 as we write it: 64 lowercase hex digits.
#[must_use]
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == SHA256_HEX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_version(key: &str, body: &[u8]) -> Result<(), ManifestError> {
    let version: VersionOnly = serde_json::from_slice(body).map_err(|e| malformed(key, &e))?;
    if version.format_version != u64::from(MANIFEST_FORMAT_VERSION) {
        return Err(ManifestError::UnknownVersion {
            key: key.to_owned(),
            found: version.format_version,
        });
    }
    Ok(())
}

fn malformed(key: &str, e: &serde_json::Error) -> ManifestError {
    ManifestError::Malformed {
        key: key.to_owned(),
        why: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn manifest() -> CheckpointManifest {
        CheckpointManifest {
            term: Term(3),
            index: Index(120),
            revision: Revision(80),
            compact_revision: Revision(40),
            ssts: vec![
                FileRef::sst("000012.sst", 4096, &sha('a')),
                FileRef::sst("000013.sst", 100, &sha('b')),
            ],
            meta_files: vec![
                FileRef::meta(Term(3), Index(120), "CURRENT", 16, &sha('c')),
                FileRef::meta(Term(3), Index(120), "MANIFEST-000005", 300, &sha('d')),
            ],
            created_unix_ms: 1_700_000_000_000,
        }
    }

    fn key() -> String {
        checkpoint_manifest_key(Term(3), Index(120))
    }

    /// A manifest round-trips and its keys follow the layout.
    #[test]
    fn round_trip() {
        let m = manifest();
        assert_eq!(m.key(), key());
        assert_eq!(m.ssts[0].key, "sst/aaaaaaaaaaaaaaaa/000012.sst");
        assert_eq!(
            m.meta_files[0].key,
            "checkpoint/0000000003/00000000000000000120/CURRENT"
        );
        assert_eq!(
            CheckpointManifest::decode(&key(), &m.encode()),
            Ok(m.clone())
        );
        assert_eq!(m.file_keys().count(), 4);
    }

    fn refused(m: &CheckpointManifest) -> String {
        match m.validate(&key()) {
            Err(ManifestError::Invalid { why, .. }) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Names that could make a restore write outside its folder are refused.
    #[test]
    fn path_traversal_names() {
        for (name, why) in [
            (
                "../../etc/passwd",
                "character '/' is not allowed in a file name",
            ),
            ("..", "starts with '.'"),
            (".", "starts with '.'"),
            (".hidden", "starts with '.'"),
            ("a/b.sst", "character '/' is not allowed in a file name"),
            ("..\\evil", "character '\\\\' is not allowed in a file name"),
            ("/abs", "character '/' is not allowed in a file name"),
            ("", "empty"),
            ("a b", "character ' ' is not allowed in a file name"),
            (
                "caf\u{e9}",
                "character '\u{e9}' is not allowed in a file name",
            ),
        ] {
            let mut m = manifest();
            m.meta_files[0].name = name.into();
            m.meta_files[0].key = format!("{}{name}", checkpoint_dir(Term(3), Index(120)));
            assert_eq!(
                refused(&m),
                format!("file name {name:?}: {why}"),
                "meta {name:?}"
            );
            let mut m = manifest();
            m.ssts[0].name = name.into();
            assert_eq!(
                refused(&m),
                format!("file name {name:?}: {why}"),
                "sst {name:?}"
            );
        }
        let long = "x".repeat(256);
        assert_eq!(check_file_name(&long), Err("longer than 255 bytes".into()));
        assert_eq!(check_file_name(&"x".repeat(255)), Ok(()));
    }

    /// Keys that do not follow the layout, duplicate names, bad hashes and
    /// a term or index that disagree with the key are refused.
    #[test]
    fn other_refusals() {
        let mut m = manifest();
        m.ssts[0].key = "sst/bbbbbbbbbbbbbbbb/000012.sst".into();
        assert_eq!(
            refused(&m),
            r#"SST "000012.sst" is stored under "sst/bbbbbbbbbbbbbbbb/000012.sst", expected "sst/aaaaaaaaaaaaaaaa/000012.sst""#
        );

        let mut m = manifest();
        m.meta_files[0].key = "checkpoint/0000000003/00000000000000000119/CURRENT".into();
        assert_eq!(
            refused(&m),
            r#"meta file "CURRENT" is stored under "checkpoint/0000000003/00000000000000000119/CURRENT", expected "checkpoint/0000000003/00000000000000000120/CURRENT""#
        );

        let mut m = manifest();
        m.meta_files.push(FileRef::meta(
            Term(3),
            Index(120),
            "000013.sst",
            1,
            &sha('e'),
        ));
        assert_eq!(refused(&m), r#"file name "000013.sst" appears twice"#);

        let mut m = manifest();
        m.meta_files.push(FileRef::meta(
            Term(3),
            Index(120),
            MANIFEST_FILE,
            1,
            &sha('e'),
        ));
        assert_eq!(
            refused(&m),
            r#"a meta file may not be called "manifest.json""#
        );

        let mut m = manifest();
        m.ssts[1].sha256 = "B".repeat(64);
        assert_eq!(
            refused(&m),
            format!(
                r#"file "000013.sst": sha256 "{}" is not 64 lowercase hex digits"#,
                "B".repeat(64)
            )
        );
        m.ssts[1].sha256 = "b".repeat(63);
        assert!(refused(&m).contains("is not 64 lowercase hex digits"));

        let m = manifest();
        let other = checkpoint_manifest_key(Term(3), Index(121));
        assert_eq!(
            m.validate(&other),
            Err(ManifestError::Invalid {
                key: other.clone(),
                why: "the manifest says term 3 index 120, its key says term 3 index 121".into()
            })
        );
        assert!(matches!(
            m.validate("checkpoint/x/manifest.json"),
            Err(ManifestError::Invalid { .. })
        ));

        let mut m = manifest();
        m.compact_revision = Revision(81);
        assert!(refused(&m).starts_with("revision 80 and compact revision 81"));

        let body = manifest().encode();
        let text = std::str::from_utf8(&body)
            .unwrap()
            .replace("\"format_version\":1", "\"format_version\":9");
        assert_eq!(
            CheckpointManifest::decode(&key(), text.as_bytes())
                .unwrap_err()
                .to_string(),
            format!(
                "{}: format version 9, this t4 reads only version 1: upgrade t4",
                key()
            )
        );
        assert!(matches!(
            CheckpointManifest::decode(&key(), b"{\"format_version\":1}"),
            Err(ManifestError::Malformed { .. })
        ));
    }

    /// The decoder validates: a traversal smuggled into the JSON is refused.
    #[test]
    fn decode_validates() {
        let body = manifest().encode();
        let text = std::str::from_utf8(&body)
            .unwrap()
            .replace("\"name\":\"CURRENT\"", "\"name\":\"../CURRENT\"");
        assert!(matches!(
            CheckpointManifest::decode(&key(), text.as_bytes()),
            Err(ManifestError::Invalid { why, .. }) if why.starts_with("file name \"../CURRENT\"")
        ));
    }

    /// The pointer round-trips and never goes backwards.
    #[test]
    fn latest_pointer() {
        let p = LatestPointer::to_checkpoint(Term(3), Index(120));
        assert_eq!(LatestPointer::decode(&p.encode()), Ok(p.clone()));
        let bad = r#"{"format_version":1,"manifest_key":"checkpoint/0000000003/00000000000000000120/manifest.json","term":3,"index":121}"#;
        assert_eq!(
            LatestPointer::decode(bad.as_bytes()).unwrap_err().to_string(),
            "manifest/latest: points at \"checkpoint/0000000003/00000000000000000120/manifest.json\" but says term 3 index 121"
        );

        let at = |t, i| LatestPointer::to_checkpoint(Term(t), Index(i));
        assert!(may_replace(None, &p));
        assert!(may_replace(Some(&p), &at(3, 121)));
        assert!(may_replace(Some(&p), &at(4, 120)), "same index, newer term");
        assert!(may_replace(Some(&p), &at(2, 130)), "index first");
        assert!(!may_replace(Some(&p), &p), "equal is a no-op");
        assert!(!may_replace(Some(&p), &at(3, 119)));
        assert!(!may_replace(Some(&p), &at(9, 100)));
    }
}
