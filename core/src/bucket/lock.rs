//! The `leader-lock` object (ARCHITECTURE §3.5): who leads, in which term,
//! and who the voting members are.
//!
//! The lock is JSON, so an operator can read it with any S3 tool:
//!
//! ```json
//! {"format_version":1,"term":7,"leader_id":"n1","leader_peer_addr":"10.0.0.1:3380",
//!  "members":[{"id":"n1","peer_addr":"10.0.0.1:3380"}],"generation":12}
//! ```
//!
//! # Why the term never goes back
//!
//! The lock is only ever written conditionally: created with `If-None-Match`
//! ([`PutCondition::IfAbsent`]) or replaced with `If-Match` on the ETag the
//! writer read ([`PutCondition::IfMatch`]). A writer always builds the new
//! lock from the one it read, with a term at least as high (a takeover adds
//! one), so the term stored under the key can only grow: a stale writer that
//! read an older lock holds an older ETag and its write fails. Terms number
//! leaders; a term that came back would let two leaders share one, and the
//! fence objects in the WAL (which name the writer's term) would stop
//! telling a new writer from a zombie. [`is_successor`] states the rule and
//! every write built here asserts it.
//!
//! # Start-up in single-node mode
//!
//! [`claim`] turns what the driver read into the one conditional put to make:
//!
//! - no lock: create it with term 1, `members = [me]`, generation 1
//!   (bootstrap);
//! - a lock (any leader, **including me**): replace it with `If-Match`,
//!   term + 1, me as leader, `members = [me]`, generation + 1 (takeover). A
//!   restarted node takes over from its own previous incarnation too: that
//!   process may still be alive (paused, partitioned) and must be fenced.
//!
//! Then, by the put's outcome: success means the claim is won;
//! `PreconditionFailed` (or `NotFound` on an `If-Match`) means someone else
//! wrote the lock after our read: read it again and decide again, never
//! retry the same put; `Retryable` means the put may have happened: read the
//! lock back, and the claim is won exactly when the lock read equals
//! [`LockClaim::lock`] (the generation and term make it unique).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::layout::LEADER_LOCK;
use crate::object::{ETag, ObjectOp, PutCondition};
use crate::types::Term;

/// The lock format this code writes and the only one it reads.
pub const LOCK_FORMAT_VERSION: u32 = 1;

/// The longest member id or peer address accepted, in bytes.
pub const LOCK_FIELD_BYTES_MAX: usize = 255;

/// The most members a lock may list.
pub const LOCK_MEMBERS_MAX: usize = 64;

/// One voting member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's id (unique in the cluster; a new incarnation gets a new
    /// one).
    pub id: String,
    /// Where peers reach it (`host:port`).
    pub peer_addr: String,
}

/// The decoded `leader-lock` object.
///
/// The format version is not a field: [`LeaderLock::encode`] always writes
/// [`LOCK_FORMAT_VERSION`] and [`LeaderLock::decode`] refuses any other, so
/// no value of this type can carry a version this code does not understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderLock {
    /// The leader's term (≥ 1).
    pub term: Term,
    /// The leader's member id (one of `members`).
    pub leader_id: String,
    /// The leader's peer address.
    pub leader_peer_addr: String,
    /// The voting members, leader included, ids unique.
    pub members: Vec<Member>,
    /// Bumped by every write of the lock, so every write is distinct.
    pub generation: u64,
}

/// The lock as stored: plain numbers and the format version.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockWire {
    format_version: u32,
    term: u64,
    leader_id: String,
    leader_peer_addr: String,
    members: Vec<Member>,
    generation: u64,
}

/// Just the version, read first so that a newer format is reported as such
/// rather than as "unknown field".
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u64,
}

/// Why a `leader-lock` object cannot be used. Each says what to do: a lock
/// this node cannot read means it must not start (it might not be the
/// leader), so the operator has to look.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Not JSON, or not the shape of the format it claims.
    #[error("leader-lock is not a valid lock: {0}")]
    Malformed(String),
    /// A format version this build does not know (written by a newer t4).
    #[error(
        "leader-lock has format version {found}, this t4 reads only version {LOCK_FORMAT_VERSION}: \
         upgrade t4 before starting it against this bucket"
    )]
    UnknownVersion {
        /// The version found.
        found: u64,
    },
    /// Well-formed JSON whose contents break a rule.
    #[error("leader-lock is invalid: {0}")]
    Invalid(String),
}

impl LeaderLock {
    /// Checks the rules every stored lock obeys: term ≥ 1; a non-empty
    /// leader id among the members; unique, non-empty member ids; fields
    /// and member count within bounds.
    ///
    /// # Errors
    /// [`LockError::Invalid`] saying which rule is broken.
    pub fn validate(&self) -> Result<(), LockError> {
        let invalid = |why: String| Err(LockError::Invalid(why));
        if self.term.0 == 0 {
            return invalid("term is 0 (terms start at 1)".into());
        }
        if self.leader_id.is_empty() {
            return invalid("leader_id is empty".into());
        }
        if self.members.is_empty() || self.members.len() > LOCK_MEMBERS_MAX {
            return invalid(format!(
                "{} members (must be 1..={LOCK_MEMBERS_MAX})",
                self.members.len()
            ));
        }
        let fields = [&self.leader_id, &self.leader_peer_addr]
            .into_iter()
            .chain(self.members.iter().flat_map(|m| [&m.id, &m.peer_addr]));
        for field in fields {
            if field.len() > LOCK_FIELD_BYTES_MAX {
                return invalid(format!(
                    "field {:?}… is longer than {LOCK_FIELD_BYTES_MAX} bytes",
                    field.chars().take(32).collect::<String>()
                ));
            }
        }
        let mut ids: Vec<&str> = self.members.iter().map(|m| m.id.as_str()).collect();
        if ids.contains(&"") {
            return invalid("a member has an empty id".into());
        }
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return invalid(format!("member id {:?} appears twice", pair[0]));
        }
        if !self.members.iter().any(|m| m.id == self.leader_id) {
            return invalid(format!(
                "leader {:?} is not among the members {ids:?}",
                self.leader_id
            ));
        }
        Ok(())
    }

    /// The lock a forced removal writes (`t4 member force-remove`): a
    /// two-member cluster that lost one member's disk cannot elect a
    /// leader (the survivor needs the other's promise, and a member that
    /// lost its disk does not vote until a leader has caught it up), so an
    /// operator removes the lost member through the bucket. The member
    /// left is named leader of the next term: a candidate stuck in the
    /// current term waiting for the lost member's promise steps down on
    /// reading it, and seeing itself named without leading, the member
    /// claims a new term at once, with a promise round of one. The
    /// generation moves on; the caller writes the lock with `If-Match` on
    /// the one it read.
    ///
    /// Safe only from two members to one: a write committed with both
    /// members (any wait mode but the unsafe `none`) is on the survivor,
    /// so it loses nothing, and the lost
    /// member, started again, joins as a new one. From more members a
    /// leader can be elected and removes members itself, one at a time;
    /// removing several at once without one could drop writes only the
    /// removed members held.
    ///
    /// # Errors
    /// The lock does not list exactly two members, or not `id`.
    pub fn forced_removal(&self, id: &str) -> Result<LeaderLock, String> {
        if self.members.len() != 2 {
            return Err(format!(
                "the lock lists {} members: a forced removal only takes a two-member cluster to \
                 one (with more members, remove through a member's endpoint: a leader can be \
                 elected)",
                self.members.len()
            ));
        }
        if !self.members.iter().any(|m| m.id == id) {
            return Err(format!(
                "{id:?} is not a member; the members: {}",
                self.members
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let left = self
            .members
            .iter()
            .find(|m| m.id != id)
            .expect("two members with unique ids");
        Ok(LeaderLock {
            term: Term(self.term.0 + 1),
            leader_id: left.id.clone(),
            leader_peer_addr: left.peer_addr.clone(),
            members: vec![left.clone()],
            generation: self.generation + 1,
        })
    }

    /// The object body.
    ///
    /// # Panics
    /// The lock breaks a rule of [`LeaderLock::validate`]: core never writes
    /// a lock it would refuse to read.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        if let Err(e) = self.validate() {
            panic!("refusing to write an invalid leader-lock: {e}: {self:?}");
        }
        let wire = LockWire {
            format_version: LOCK_FORMAT_VERSION,
            term: self.term.0,
            leader_id: self.leader_id.clone(),
            leader_peer_addr: self.leader_peer_addr.clone(),
            members: self.members.clone(),
            generation: self.generation,
        };
        Bytes::from(serde_json::to_vec(&wire).expect("a lock always serializes to JSON"))
    }

    /// Parses and checks a lock body.
    ///
    /// # Errors
    /// [`LockError::UnknownVersion`] first (so a newer format is named as
    /// such), then [`LockError::Malformed`], then [`LockError::Invalid`].
    pub fn decode(body: &[u8]) -> Result<LeaderLock, LockError> {
        let malformed = |e: serde_json::Error| LockError::Malformed(e.to_string());
        let version: VersionOnly = serde_json::from_slice(body).map_err(malformed)?;
        if version.format_version != u64::from(LOCK_FORMAT_VERSION) {
            return Err(LockError::UnknownVersion {
                found: version.format_version,
            });
        }
        let wire: LockWire = serde_json::from_slice(body).map_err(malformed)?;
        let lock = LeaderLock {
            term: Term(wire.term),
            leader_id: wire.leader_id,
            leader_peer_addr: wire.leader_peer_addr,
            members: wire.members,
            generation: wire.generation,
        };
        lock.validate()?;
        Ok(lock)
    }
}

/// Whether `next` may replace `prev` under the lock key: the term does not
/// go down; within one term the leader stays the same (a term has one
/// leader); and the generation grows (every write is distinct, so a read-back
/// after a lost response identifies the writer).
#[must_use]
pub fn is_successor(prev: &LeaderLock, next: &LeaderLock) -> bool {
    let term_ok =
        next.term > prev.term || (next.term == prev.term && next.leader_id == prev.leader_id);
    term_ok && next.generation > prev.generation
}

/// A conditional write of the lock that makes this node the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockClaim {
    /// The put's precondition.
    pub condition: PutCondition,
    /// The lock to write; when the put succeeds, this node leads in
    /// `lock.term`.
    pub lock: LeaderLock,
}

impl LockClaim {
    /// The object operation to execute.
    #[must_use]
    pub fn op(&self) -> ObjectOp {
        ObjectOp::Put {
            key: LEADER_LOCK.to_owned(),
            body: self.lock.encode(),
            condition: self.condition.clone(),
        }
    }
}

/// The claim a single node makes at start, given the lock it read
/// (`None`: not found) and its own identity. See the module docs for what
/// to do with each outcome of the put.
///
/// # Panics
/// `me` has an empty id; the current term is `u64::MAX`.
#[must_use]
pub fn claim(current: Option<(&LeaderLock, &ETag)>, me: &Member) -> LockClaim {
    assert!(!me.id.is_empty(), "a node claiming the lock needs an id");
    let claim = match current {
        None => LockClaim {
            condition: PutCondition::IfAbsent,
            lock: LeaderLock {
                term: Term(1),
                leader_id: me.id.clone(),
                leader_peer_addr: me.peer_addr.clone(),
                members: vec![me.clone()],
                generation: 1,
            },
        },
        Some((prev, etag)) => {
            let next = LeaderLock {
                term: Term(prev.term.0.checked_add(1).expect("term overflow")),
                leader_id: me.id.clone(),
                leader_peer_addr: me.peer_addr.clone(),
                members: vec![me.clone()],
                generation: prev.generation.checked_add(1).expect("generation overflow"),
            };
            assert!(
                is_successor(prev, &next) && next.term > prev.term,
                "a takeover must raise the term: {prev:?} -> {next:?}"
            );
            LockClaim {
                condition: PutCondition::IfMatch(etag.clone()),
                lock: next,
            }
        }
    };
    debug_assert_eq!(claim.lock.validate(), Ok(()));
    claim
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            peer_addr: format!("{id}.local:3380"),
        }
    }

    fn lock(term: u64, leader: &str, members: &[&str], generation: u64) -> LeaderLock {
        LeaderLock {
            term: Term(term),
            leader_id: leader.into(),
            leader_peer_addr: member(leader).peer_addr,
            members: members.iter().map(|id| member(id)).collect(),
            generation,
        }
    }

    /// A forced removal takes two members to one, naming the one left
    /// leader of the next term; anything else is refused with a reason.
    #[test]
    fn a_forced_removal_takes_two_members_to_one() {
        let two = lock(4, "a", &["a", "b"], 9);
        assert_eq!(two.forced_removal("a"), Ok(lock(5, "b", &["b"], 10)));
        assert_eq!(two.forced_removal("b"), Ok(lock(5, "a", &["a"], 10)));
        let refused = |l: &LeaderLock, id: &str, needle: &str| {
            let why = l.forced_removal(id).expect_err("refused");
            assert!(why.contains(needle), "{why}");
        };
        refused(&two, "c", "not a member");
        refused(&lock(4, "a", &["a"], 9), "a", "1 members");
        refused(&lock(4, "a", &["a", "b", "c"], 9), "c", "3 members");
    }

    /// A lock round-trips through its JSON, which has the documented shape.
    #[test]
    fn round_trip() {
        let l = lock(7, "n1", &["n1", "n2"], 12);
        let body = l.encode();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"format_version":1,"term":7,"leader_id":"n1","leader_peer_addr":"n1.local:3380","members":[{"id":"n1","peer_addr":"n1.local:3380"},{"id":"n2","peer_addr":"n2.local:3380"}],"generation":12}"#
        );
        assert_eq!(LeaderLock::decode(&body), Ok(l));
    }

    /// Each broken rule is refused with a message naming it.
    #[test]
    fn refusals() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"format_version":2,"whatever":true}"#,
                "leader-lock has format version 2, this t4 reads only version 1: upgrade t4 before starting it against this bucket",
            ),
            (
                r#"{"format_version":1,"term":0,"leader_id":"a","leader_peer_addr":"x","members":[{"id":"a","peer_addr":"x"}],"generation":1}"#,
                "leader-lock is invalid: term is 0 (terms start at 1)",
            ),
            (
                r#"{"format_version":1,"term":1,"leader_id":"","leader_peer_addr":"x","members":[{"id":"a","peer_addr":"x"}],"generation":1}"#,
                "leader-lock is invalid: leader_id is empty",
            ),
            (
                r#"{"format_version":1,"term":1,"leader_id":"a","leader_peer_addr":"x","members":[{"id":"a","peer_addr":"x"},{"id":"a","peer_addr":"y"}],"generation":1}"#,
                r#"leader-lock is invalid: member id "a" appears twice"#,
            ),
            (
                r#"{"format_version":1,"term":1,"leader_id":"c","leader_peer_addr":"x","members":[{"id":"a","peer_addr":"x"},{"id":"b","peer_addr":"y"}],"generation":1}"#,
                r#"leader-lock is invalid: leader "c" is not among the members ["a", "b"]"#,
            ),
            (
                r#"{"format_version":1,"term":1,"leader_id":"a","leader_peer_addr":"x","members":[],"generation":1}"#,
                "leader-lock is invalid: 0 members (must be 1..=64)",
            ),
        ];
        for (body, message) in cases {
            let err = LeaderLock::decode(body.as_bytes()).expect_err(body);
            assert_eq!(err.to_string(), *message, "{body}");
        }
        for body in [
            "",
            "{",
            "[]",
            r#"{"format_version":1}"#,
            r#"{"format_version":"1"}"#,
        ] {
            assert!(
                matches!(
                    LeaderLock::decode(body.as_bytes()),
                    Err(LockError::Malformed(_))
                ),
                "{body:?}"
            );
        }
        // An unknown field within version 1 is refused too: a field this
        // build cannot see would be lost on its next rewrite.
        let extra = r#"{"format_version":1,"term":1,"leader_id":"a","leader_peer_addr":"x","members":[{"id":"a","peer_addr":"x"}],"generation":1,"lease":5}"#;
        assert!(matches!(
            LeaderLock::decode(extra.as_bytes()),
            Err(LockError::Malformed(_))
        ));
    }

    /// Core never writes a lock it would refuse to read.
    #[test]
    #[should_panic(expected = "refusing to write an invalid leader-lock")]
    fn encode_refuses_invalid() {
        let _ = lock(1, "n9", &["n1"], 1).encode();
    }

    /// No lock: bootstrap with `If-None-Match`, term 1, members [me].
    #[test]
    fn bootstrap_claim() {
        let me = member("n1");
        let c = claim(None, &me);
        assert_eq!(
            c,
            LockClaim {
                condition: PutCondition::IfAbsent,
                lock: lock(1, "n1", &["n1"], 1),
            }
        );
        assert_eq!(
            c.op(),
            ObjectOp::Put {
                key: "leader-lock".into(),
                body: lock(1, "n1", &["n1"], 1).encode(),
                condition: PutCondition::IfAbsent,
            }
        );
    }

    /// A lock held by anyone, me included: `If-Match` its ETag, term + 1,
    /// generation + 1, single-node membership.
    #[test]
    fn takeover_claim() {
        let me = member("n1");
        let etag = ETag("\"abc\"".into());
        let prev = lock(4, "n2", &["n1", "n2", "n3"], 30);
        assert_eq!(
            claim(Some((&prev, &etag)), &me),
            LockClaim {
                condition: PutCondition::IfMatch(etag.clone()),
                lock: lock(5, "n1", &["n1"], 31),
            }
        );
        let mine = lock(5, "n1", &["n1"], 31);
        assert_eq!(
            claim(Some((&mine, &etag)), &me).lock,
            lock(6, "n1", &["n1"], 32)
        );
    }

    /// Terms never go back; one leader per term; every write is distinct.
    #[test]
    fn successor_rule() {
        let base = lock(4, "n1", &["n1", "n2"], 10);
        assert!(is_successor(&base, &lock(5, "n2", &["n2"], 11)));
        assert!(is_successor(&base, &lock(4, "n1", &["n1"], 11)), "renewal");
        assert!(
            !is_successor(&base, &lock(3, "n1", &["n1"], 11)),
            "term back"
        );
        assert!(
            !is_successor(&base, &lock(4, "n2", &["n2"], 11)),
            "two leaders in a term"
        );
        assert!(
            !is_successor(&base, &lock(5, "n2", &["n2"], 10)),
            "same generation"
        );
    }
}
