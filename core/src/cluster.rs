//! Cluster mode's vocabulary: configuration, peer messages (and their wire
//! format, [`wire`]), the durable promise and the in-memory tail of the
//! log. The protocol itself (roles, election, promise round, replication,
//! reads) is a part of the node state machine: see the `cluster` module of
//! [`crate::node`].
//!
//! # The protocol in one page (ARCHITECTURE §3.5–3.7)
//!
//! - **S3 picks the leader.** `leader-lock` names the leader, its term and
//!   the voting members; it is only written conditionally, so each term has
//!   one lock winner.
//! - **A quorum makes it safe.** Winning the lock lets a node *try* to lead
//!   in its new term `T`. It first asks every member for a promise
//!   ([`PeerMsg::Prepare`]); a member that promises records `T` durably
//!   ([`HardState`]) and from then on refuses appends of lower terms. With
//!   promises from a majority (itself included) the new leader adopts the
//!   most up-to-date log among them (highest last term, then index),
//!   fetching what it lacks, appends a barrier entry of its own term and
//!   serves once the barrier is committed.
//! - **Commit** = durable (fsynced) on a majority of the lock's members, the
//!   leader included, and of the current term (older entries commit with
//!   the barrier). Followers apply committed entries only.
//! - **Why it is safe**: an acknowledged write is on a majority; the next
//!   leader heard from a majority before it acted; the two share a member,
//!   whose log the adoption rule carries over (the rule is Raft's vote
//!   restriction applied by adoption instead of by vote), and whose promise
//!   stops the old leader from committing anything new. Clocks and S3
//!   timing only decide *when* someone tries, never what is safe.
//!
//! Where this deviates from ARCHITECTURE and why:
//! - Appends go only to members that promised the leader's term; a member
//!   that has not answers an append with a rejection asking for a promise,
//!   and the leader sends `Prepare` again. So a member never needs to adopt
//!   a term from an append (which would need a durable write before it
//!   could answer), and the only durable term change is the promise.
//! - A candidate fetches the missing entries from the best promiser
//!   starting after its own known-committed index (entries up to there are
//!   committed, so they are the same in every log that has them). If the
//!   best promiser no longer holds that far back, the candidate gives up
//!   its attempt (catching a candidate up from the bucket is not built
//!   yet).

use std::collections::VecDeque;

use crate::bucket::lock::Member;
use crate::log::Entry;
use crate::node::{ClientRequest, Response};
use crate::types::{Index, Term, Time};
use crate::Error;

pub mod wire;
pub use wire::{WireError, PEER_MSG_BYTES_MAX};

/// How a node takes part in a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's identity in `leader-lock` (`--node-id`, `--advertise-peer`).
    pub me: Member,
    /// A follower that hears nothing from its leader for this long starts
    /// watching the lock; members refuse promises to a new term within this
    /// long of hearing from their leader (which is what makes the leader's
    /// read lease sound). Default 1 s (`--election-timeout-ms`).
    pub election_timeout_ns: u64,
    /// How often the leader sends heartbeats. Default 100 ms.
    pub heartbeat_interval_ns: u64,
    /// A lock whose ETag did not change for this long (by the watcher's own
    /// clock) while the leader is silent means the leader is gone
    /// (`--lock-ttl-ms`). Default 5 s.
    pub lock_ttl_ns: u64,
    /// How often a follower that lost its leader reads the lock
    /// (`--leader-watch-interval-sec`). Default 1 s.
    pub lock_watch_interval_ns: u64,
    /// The leader rewrites the lock this often while any member is
    /// unreachable, so that member's watch does not expire. Must be well
    /// under `lock_ttl_ns`. Default 1 s.
    pub lock_refresh_interval_ns: u64,
    /// The leader's read lease is shortened by `1/lease_drift_divisor` of
    /// the election timeout to allow for clock-rate differences. Default 4
    /// (25 %).
    pub lease_drift_divisor: u64,
    /// Entries kept in memory for followers that fall behind
    /// (`--peer-buffer-size`). Default 10,000.
    pub peer_buffer_entries: usize,
    /// Most entries in one append message.
    pub append_entries_max: usize,
    /// A request forwarded to the leader, or a read waiting for the
    /// leader's read index, fails after this long. Default 5 s.
    pub request_timeout_ns: u64,
    /// Who must have a write before it is acknowledged.
    pub wait_mode: FollowerWaitMode,
    /// `Some`: the bucket is the cluster's disaster-recovery tier (the
    /// `cluster_bucket` module of `node`): the leader uploads committed
    /// entries by segment (`segment_max_age_ns`, `segment_max_bytes`) and
    /// takes checkpoints (`checkpoint_*`, `gc_keep`); a follower the
    /// leader's memory no longer reaches catches up from it. Failed object
    /// operations back off with its `retry_backoff_*`; its other fields
    /// are for single-node bucket mode. `None`: the bucket holds only the
    /// lock.
    pub bucket: Option<crate::node::BucketConfig>,
    /// Deliberate bugs, to prove the checkers catch them. Never set
    /// outside tests.
    pub mutants: ClusterMutants,
}

/// Deliberate protocol bugs (each one a weakness of T4's cluster mode or a
/// classic mistake). The simulations must catch every one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterMutants {
    /// Commit on a majority of the members *heard from lately* instead of
    /// a majority of all members (T4: "all followers disconnected" is a
    /// quorum of one).
    pub commit_on_connected: bool,
    /// Lead as soon as the lock is won, without promises or adopting the
    /// best log.
    pub skip_promise_round: bool,
    /// A follower acknowledges entries before they are fsynced.
    pub ack_before_fsync: bool,
    /// The leader serves linearizable reads without a lease or a
    /// heartbeat round.
    pub reads_without_lease: bool,
    /// A member that lost its disk votes at once (no rejoin).
    pub vote_after_disk_loss: bool,
    /// A follower applies what it appended without waiting for the leader
    /// to say it is committed (so its reads can show a state no committed
    /// prefix had).
    pub apply_uncommitted: bool,
}

impl ClusterConfig {
    /// Defaults for `me`.
    #[must_use]
    pub fn new(me: Member) -> ClusterConfig {
        ClusterConfig {
            me,
            election_timeout_ns: 1_000_000_000,
            heartbeat_interval_ns: 100_000_000,
            lock_ttl_ns: 5_000_000_000,
            lock_watch_interval_ns: 1_000_000_000,
            lock_refresh_interval_ns: 1_000_000_000,
            lease_drift_divisor: 4,
            peer_buffer_entries: 10_000,
            append_entries_max: 256,
            request_timeout_ns: 5_000_000_000,
            wait_mode: FollowerWaitMode::Quorum,
            bucket: None,
            mutants: ClusterMutants::default(),
        }
    }
}

/// `--follower-wait-mode`: which members must have an entry before it is
/// committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerWaitMode {
    /// A majority of the members, the leader included (default; safe).
    Quorum,
    /// Every member (safe, but one slow member stalls writes).
    All,
    /// The leader alone. **Unsafe**: a leader lost with its disk loses
    /// acknowledged writes, and a new leader may lack them. Kept for T4
    /// compatibility.
    None,
}

/// What a member that starts over from a checkpoint keeps of its log and
/// its hard state ([`start_over_keeps`]; the driver's part of
/// [`crate::Action::StartOver`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOverKeep {
    /// The log continues the checkpoint: the entries after it stay (the
    /// node replays them as its unapplied tail), and so does the hard
    /// state.
    LogAndHardState,
    /// The log goes (it ends within the checkpoint, or it left the
    /// committed log at or before the checkpoint's index); the hard state
    /// stays.
    HardState,
    /// Nothing is known of the log: it goes, and so does the hard state
    /// (the member rejoins as a new one that does not vote until caught
    /// up).
    Nothing,
}

/// What a member starting over from a checkpoint keeps, given the
/// checkpoint's applied `(index, term)`, what its old log holds — its last
/// index and the term of its entry at the checkpoint's index, or `None` if
/// it cannot be read — and, as a fallback, the last index the member had
/// when it asked to start over.
///
/// Why keeping the hard state (the promises, and so the vote) is safe: a
/// member must not lose a committed entry it acknowledged, or a promise
/// round could pick a log without it. Committed entries are never removed
/// from a log that holds them, so every committed entry the member
/// acknowledged is in its old log at its index. The checkpoint holds the
/// committed log up to its index `c`.
///
/// - The old log ends at or before `c`: all of it is in the checkpoint.
/// - Its entry at `c` has the checkpoint's term: by log matching it equals
///   the committed log up to `c`, so checkpoint plus the old entries after
///   `c` is the old log, entry for entry: the entries after `c` stay.
/// - Its entry at `c` has another term: it left the committed log at some
///   index at or before `c`, and by log matching no entry of it from there
///   on is (or can ever be) committed; those before are in the checkpoint.
///   The entries after `c` go.
/// - The log cannot be read: only the fallback, the last index the member
///   had, can show that the checkpoint covers it.
#[must_use]
pub fn start_over_keeps(
    checkpoint: (Index, Term),
    log: Option<(Index, Option<Term>)>,
    last_index_before: Index,
) -> StartOverKeep {
    let (c, term) = checkpoint;
    match log {
        Some((last, _)) if last <= c => StartOverKeep::HardState,
        Some((_, Some(t))) if t == term => StartOverKeep::LogAndHardState,
        Some((_, Some(_))) => StartOverKeep::HardState,
        // A log past `c` that does not hold `c`: not the contiguous log
        // this member acknowledged from.
        Some((_, None)) => StartOverKeep::Nothing,
        None if last_index_before <= c => StartOverKeep::HardState,
        None => StartOverKeep::Nothing,
    }
}

/// What a node keeps durable apart from its log: the highest term it
/// promised, and whether it is rejoining after losing its disk. Saved
/// (fsynced) before a promise is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The highest term this node promised (it refuses appends of lower
    /// terms).
    pub promised: Term,
    /// The node found itself a member of the lock with an empty disk: what
    /// it acknowledged before may be lost, so its promises do not count
    /// toward a candidate's majority until it has caught up (see
    /// `node::cluster`, "Rejoining with an empty disk"). Kept durable so
    /// that a crash half-way through the catch-up cannot make a partial
    /// log count.
    pub rejoining: bool,
}

impl HardState {
    const MAGIC: &'static [u8; 4] = b"T4HS";
    /// Version 1 (20 bytes) had no flags; version 2 adds a flags word.
    const VERSION: u32 = 2;
    const REJOINING: u32 = 1;

    /// The file's bytes: magic, version 2, term, flags, CRC32C of what
    /// precedes (24 bytes).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(Self::MAGIC);
        out.extend_from_slice(&Self::VERSION.to_le_bytes());
        out.extend_from_slice(&self.promised.0.to_le_bytes());
        let flags = if self.rejoining { Self::REJOINING } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses [`HardState::encode`]'s bytes (and version 1's, which had no
    /// flags).
    ///
    /// # Errors
    /// A wrong size, magic, version, flag or checksum, named.
    pub fn decode(bytes: &[u8]) -> Result<HardState, String> {
        if bytes.len() < 8 || &bytes[..4] != Self::MAGIC {
            return Err("hard state has a wrong magic".into());
        }
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let len = match version {
            1 => 20,
            2 => 24,
            v => return Err(format!("hard state version {v} is not supported")),
        };
        if bytes.len() != len {
            return Err(format!(
                "hard state version {version} is {} bytes, expected {len}",
                bytes.len()
            ));
        }
        let crc = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[..len - 4]) != crc {
            return Err("hard state checksum mismatch".into());
        }
        let term = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let flags = if version == 2 {
            u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"))
        } else {
            0
        };
        if flags & !Self::REJOINING != 0 {
            return Err(format!("hard state has unknown flags {flags:#x}"));
        }
        Ok(HardState {
            promised: Term(term),
            rejoining: flags & Self::REJOINING != 0,
        })
    }
}

/// A message between two members. `term` is always the sender's view of
/// the term the message belongs to. Times in messages are the *leader's*
/// own clock readings, echoed back unchanged: no node ever compares its
/// clock with another's. Between processes it travels as
/// [`PeerMsg::encode`]'s bytes (format: [`wire`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// A new leader asks for a promise.
    Prepare {
        /// The leader's new term.
        term: Term,
    },
    /// The promise, sent once it is durable: the sender's log tail.
    Promise {
        /// The promised term.
        term: Term,
        /// Term of the sender's last log entry.
        last_term: Term,
        /// Index of the sender's last log entry.
        last_index: Index,
        /// The promise counts toward a candidate's majority: false while
        /// the sender rejoins after losing its disk (its log may lack
        /// entries it acknowledged before). A leader still replicates to
        /// it.
        voter: bool,
    },
    /// A `Prepare` refused: the sender promised `promised` (higher), or
    /// heard from its leader within the election timeout (`promised` is
    /// then the term it follows).
    Refuse {
        /// The refused term.
        term: Term,
        /// The term the sender is bound to.
        promised: Term,
    },
    /// Entries (none: a heartbeat) continuing the log after
    /// `(prev_index, prev_term)`.
    Append {
        /// The leader's term.
        term: Term,
        /// Index of the entry before `entries`.
        prev_index: Index,
        /// Its term.
        prev_term: Term,
        /// The entries, contiguous.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
        /// When the leader sent this (its clock), echoed in the answer.
        sent_at: Time,
        /// The bucket holds the log through here, as far as the leader
        /// knows (0 without the bucket tier): members keep the applied
        /// entries after it in memory, so that a next leader can upload
        /// them.
        uploaded: Index,
    },
    /// The sender's log matches the leader's through `matched`, durably.
    Ack {
        /// The leader's term.
        term: Term,
        /// Highest index known to match the leader's log and be fsynced.
        matched: Index,
        /// `sent_at` of the append answered.
        sent_at: Time,
    },
    /// An append that does not fit: the sender's log does not hold
    /// `prev_index` with `prev_term`. `hint` is an index it does match
    /// through (or its last index), where the leader should restart.
    Reject {
        /// The sender's promised term (higher than the append's: the
        /// leader is stale).
        term: Term,
        /// Restart after this index.
        hint: Index,
        /// The sender has not promised the append's term yet.
        needs_promise: bool,
    },
    /// A new leader asks the best promiser for entries `from..`.
    Fetch {
        /// The leader's term.
        term: Term,
        /// The first entry wanted.
        from: Index,
        /// The term of the asker's entry `from - 1` when the asker does
        /// not know it committed: the sender serves `from..` only if its
        /// own entry there has this term (so, by log matching, both logs
        /// agree up to it), and answers `mismatch` otherwise.
        prev_term: Option<Term>,
    },
    /// Entries answering a `Fetch` (the first is `from`), `more` if they
    /// do not reach the sender's last entry; empty with `gone` if the
    /// sender no longer holds `from`, empty with `mismatch` if its entry
    /// `from - 1` does not have the `prev_term` asked for (or it no longer
    /// holds it).
    Fetched {
        /// The leader's term.
        term: Term,
        /// The entries.
        entries: Vec<Entry>,
        /// More follow (fetch again after the last one).
        more: bool,
        /// `from` is below what the sender holds.
        gone: bool,
        /// The logs may differ before `from`: ask again from the asker's
        /// committed prefix.
        mismatch: bool,
    },
    /// A follower asks the leader for a read index.
    ReadIndex {
        /// The follower's id for the request.
        id: u64,
    },
    /// The leader's commit index, current as of after the request arrived
    /// (`None`: the sender is not a serving leader).
    ReadIndexReply {
        /// The request's id.
        id: u64,
        /// The index to wait for.
        index: Option<Index>,
    },
    /// A client request a follower forwards to the leader.
    Forward {
        /// The follower's id for it.
        id: u64,
        /// The request.
        request: ClientRequest,
    },
    /// The leader's answer to a forwarded request.
    Forwarded {
        /// The request's id.
        id: u64,
        /// The answer.
        result: Result<Response, Error>,
    },
    /// A node that is not a member asks the leader to add it.
    Join {
        /// Who joins.
        member: Member,
    },
    /// The leader removed the receiver from the members. A hint only: the
    /// receiver reads the lock, which decides.
    Removed {
        /// The leader's term.
        term: Term,
    },
    /// The leader no longer holds the entries the receiver needs next: its
    /// log starts at `first`. The receiver reads what comes before from
    /// the bucket's WAL (entries there are committed), then acknowledges
    /// as usual. Counts as hearing from the leader.
    Behind {
        /// The leader's term.
        term: Term,
        /// The first index the leader still holds.
        first: Index,
    },
}

impl PeerMsg {
    /// The term the message belongs to (0 for messages outside terms).
    #[must_use]
    pub fn term(&self) -> Term {
        match self {
            PeerMsg::Prepare { term }
            | PeerMsg::Promise { term, .. }
            | PeerMsg::Refuse { term, .. }
            | PeerMsg::Append { term, .. }
            | PeerMsg::Ack { term, .. }
            | PeerMsg::Reject { term, .. }
            | PeerMsg::Fetch { term, .. }
            | PeerMsg::Fetched { term, .. }
            | PeerMsg::Removed { term }
            | PeerMsg::Behind { term, .. } => *term,
            _ => Term(0),
        }
    }
}

/// The tail of the log in memory: every entry after the applied index (the
/// uncommitted and committed-but-unapplied ones) plus up to
/// `peer_buffer_entries` applied ones, for followers that lag. Below it,
/// only the last applied `(index, term)` is known.
#[derive(Clone, Debug, Default)]
pub struct RecentLog {
    /// Index and term of the entry just before `entries` (0, 0 if none).
    base: (Index, Term),
    entries: VecDeque<Entry>,
}

impl RecentLog {
    /// An empty tail after `(index, term)`.
    #[must_use]
    pub fn after(index: Index, term: Term) -> RecentLog {
        RecentLog {
            base: (index, term),
            entries: VecDeque::new(),
        }
    }

    /// The index of the last entry.
    #[must_use]
    pub fn last_index(&self) -> Index {
        Index(self.base.0 .0 + self.entries.len() as u64)
    }

    /// The term of the last entry.
    #[must_use]
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.base.1, Entry::term_id)
    }

    /// The first index held in memory.
    #[must_use]
    pub fn first_index(&self) -> Index {
        self.base.0.next()
    }

    /// The term of entry `index`, if known (the base or a held entry).
    #[must_use]
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base.0 {
            return Some(self.base.1);
        }
        self.get(index).map(Entry::term_id)
    }

    /// Entry `index`, if held.
    #[must_use]
    pub fn get(&self, index: Index) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.first_index().0)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Up to `max` entries from `from` (empty if `from` is not held).
    #[must_use]
    pub fn slice(&self, from: Index, max: usize) -> Vec<Entry> {
        let Some(offset) = from.0.checked_sub(self.first_index().0) else {
            return Vec::new();
        };
        let Ok(offset) = usize::try_from(offset) else {
            return Vec::new();
        };
        self.entries
            .iter()
            .skip(offset)
            .take(max)
            .cloned()
            .collect()
    }

    /// Appends `entry`, which must continue the log.
    ///
    /// # Panics
    /// If it does not.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index_id(),
            self.last_index().next(),
            "the log tail grows without gaps"
        );
        assert!(
            entry.term_id() >= self.last_term(),
            "terms never go back in the log"
        );
        self.entries.push_back(entry);
    }

    /// Drops every entry after `index` (which must be ≥ the base).
    ///
    /// # Panics
    /// If `index` is below the base.
    pub fn truncate_after(&mut self, index: Index) {
        assert!(index >= self.base.0, "cannot truncate below the base");
        let keep = usize::try_from(index.0 - self.base.0 .0).expect("fits");
        self.entries.truncate(keep);
    }

    /// Forgets applied entries beyond `keep` of them (`applied` is the
    /// applied index: nothing after it is ever dropped).
    pub fn forget_applied(&mut self, applied: Index, keep: usize) {
        while let Some(front) = self.entries.front() {
            let held_applied = applied.0.saturating_sub(self.base.0 .0);
            if front.index > applied.0 || held_applied <= keep as u64 {
                break;
            }
            self.base = (front.index_id(), front.term_id());
            self.entries.pop_front();
        }
    }

    /// Puts applied entries back in front (read back from the WAL after a
    /// restart, so that followers lagging behind the applied index can
    /// still be served). They must end right at the base, with its term;
    /// the term of the entry before them is unknown (0) unless they start
    /// at index 1. Returns whether they fit (nothing changes otherwise).
    pub fn prepend_applied(&mut self, entries: Vec<Entry>) -> bool {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return false;
        };
        let contiguous = entries
            .windows(2)
            .all(|w| w[1].index == w[0].index + 1 && w[1].term >= w[0].term);
        if !contiguous || last.index_id() != self.base.0 || last.term_id() != self.base.1 {
            return false;
        }
        let before = Index(first.index - 1);
        self.base = (before, Term(0));
        for e in entries.into_iter().rev() {
            self.entries.push_front(e);
        }
        true
    }

    /// Replaces everything with an empty tail after `(index, term)`.
    pub fn reset(&mut self, index: Index, term: Term) {
        *self = RecentLog::after(index, term);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            payload: None,
        }
    }

    /// Each case of the start-over rule: a log within the checkpoint, one
    /// that continues it, one that left the committed log before it, one
    /// that does not hold its index, and an unreadable one (the fallback).
    #[test]
    fn start_over_keeps_what_the_checkpoint_and_the_log_allow() {
        use StartOverKeep::{HardState, LogAndHardState, Nothing};
        let ckpt = (Index(100), Term(3));
        let keeps = |log, before| start_over_keeps(ckpt, log, Index(before));
        assert_eq!(keeps(Some((Index(90), None)), 200), HardState);
        assert_eq!(keeps(Some((Index(100), Some(Term(3)))), 200), HardState);
        assert_eq!(keeps(Some((Index(140), Some(Term(3)))), 0), LogAndHardState);
        assert_eq!(keeps(Some((Index(140), Some(Term(2)))), 0), HardState);
        assert_eq!(keeps(Some((Index(140), Some(Term(4)))), 0), HardState);
        assert_eq!(keeps(Some((Index(140), None)), 0), Nothing);
        assert_eq!(keeps(None, 100), HardState);
        assert_eq!(keeps(None, 101), Nothing);
    }

    #[test]
    fn hard_state_round_trips_and_rejects_damage() {
        for hs in [
            HardState {
                promised: Term(7),
                rejoining: false,
            },
            HardState {
                promised: Term(9),
                rejoining: true,
            },
        ] {
            let bytes = hs.encode();
            assert_eq!(bytes.len(), 24);
            assert_eq!(HardState::decode(&bytes), Ok(hs));
            let mut bad = bytes.clone();
            bad[9] ^= 1;
            assert!(HardState::decode(&bad).unwrap_err().contains("checksum"));
            assert!(HardState::decode(&bytes[..10])
                .unwrap_err()
                .contains("10 bytes"));
        }
        assert!(HardState::decode(b"XXHS").unwrap_err().contains("magic"));
        // Version 1 (no flags word) still reads.
        let mut v1 = b"T4HS".to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            HardState::decode(&v1),
            Ok(HardState {
                promised: Term(5),
                rejoining: false
            })
        );
        // Unknown flags and versions are refused.
        let mut flagged = b"T4HS".to_vec();
        flagged.extend_from_slice(&2u32.to_le_bytes());
        flagged.extend_from_slice(&5u64.to_le_bytes());
        flagged.extend_from_slice(&6u32.to_le_bytes());
        let crc = crc32c::crc32c(&flagged);
        flagged.extend_from_slice(&crc.to_le_bytes());
        assert!(HardState::decode(&flagged).unwrap_err().contains("flags"));
        let mut v3 = flagged.clone();
        v3[4] = 3;
        assert!(HardState::decode(&v3).unwrap_err().contains("version 3"));
    }

    #[test]
    fn recent_log_tracks_terms_truncates_and_forgets() {
        let mut log = RecentLog::after(Index(3), Term(1));
        assert_eq!(log.last_index(), Index(3));
        assert_eq!(log.term_at(Index(3)), Some(Term(1)));
        assert_eq!(log.term_at(Index(2)), None);
        for i in 4..=8 {
            log.push(e(if i < 6 { 1 } else { 2 }, i));
        }
        assert_eq!((log.last_index(), log.last_term()), (Index(8), Term(2)));
        assert_eq!(log.slice(Index(7), 10), vec![e(2, 7), e(2, 8)]);
        assert_eq!(log.slice(Index(2), 10), vec![]);
        log.truncate_after(Index(5));
        assert_eq!((log.last_index(), log.last_term()), (Index(5), Term(1)));
        log.push(e(3, 6));
        // Applied through 6, keep one applied entry: 4 and 5 go.
        log.forget_applied(Index(6), 1);
        assert_eq!(log.first_index(), Index(6));
        assert_eq!(log.term_at(Index(5)), Some(Term(1)));
        assert_eq!(log.get(Index(6)), Some(&e(3, 6)));
    }
}
