//! Leases: the in-memory half of etcd's lessor (ARCHITECTURE §3.8).
//!
//! Leases are replicated state: a grant and a revoke are log entries, and
//! the lease table (id, granted TTL, last checkpointed remaining TTL) and
//! the key ↔ lease attachments live in the engine, written by
//! [`crate::mvcc::Store::apply`]. That half decides, deterministically,
//! whether a put may attach to a lease.
//!
//! This module is the other half, which only the serving node has: **when
//! each lease expires**, on the node's monotonic clock. Keepalives touch
//! only this half (they are not logged). Expiry is executed by appending a
//! revoke entry; the [`Lessor`] hands the node the ids that are due, at
//! most [`LeaseConfig::revoke_per_sec_max`] per second, so an expiry storm
//! cannot starve client writes.
//!
//! After a restart every lease's TTL restarts (etcd's behaviour), from its
//! last checkpointed remaining TTL when there is one.
//!
//! STATUS: interface only; the implementation lands with the Lease work.

use crate::kv::LeaseCheckpoint;
use crate::types::Time;

/// etcd's largest TTL (`MaxLeaseTTL`), seconds.
pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;

/// Lessor configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Smallest TTL granted, seconds; smaller requests are raised to it
    /// (etcd: 1.5 × election timeout rounded up = 2 s by default).
    pub min_ttl_secs: i64,
    /// Most expired leases revoked per second (etcd: 1000).
    pub revoke_per_sec_max: u32,
    /// How often remaining TTLs are checkpointed into the log; `None`: never.
    pub checkpoint_interval_nanos: Option<u64>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            min_ttl_secs: 2,
            revoke_per_sec_max: 1000,
            checkpoint_interval_nanos: Some(300 * 1_000_000_000),
        }
    }
}

/// One persisted lease, as the engine holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The id.
    pub id: i64,
    /// The granted TTL, seconds.
    pub ttl_secs: i64,
    /// Remaining TTL at the last checkpoint, seconds (0: none).
    pub remaining_ttl_secs: i64,
}

/// What the node should append because time passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseDue {
    /// Expired leases to revoke now (each becomes one revoke entry).
    pub revoke: Vec<i64>,
    /// Remaining TTLs to checkpoint (one checkpoint entry), possibly empty.
    pub checkpoint: Vec<LeaseCheckpoint>,
}

/// Expiry tracking for the leases of one node. See the module docs.
#[derive(Debug, Default)]
pub struct Lessor {
    config: LeaseConfig,
}

impl Lessor {
    /// A lessor with no leases.
    #[must_use]
    pub fn new(config: LeaseConfig) -> Lessor {
        Lessor { config }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Starts tracking `leases` (the engine's table after recovery): each
    /// expires at `now` + its remaining TTL (checkpointed) or full TTL.
    pub fn restore(&mut self, now: Time, leases: &[LeaseInfo]) {
        let _ = (now, leases);
    }

    /// A grant entry applied.
    pub fn on_granted(&mut self, now: Time, id: i64, ttl_secs: i64) {
        let _ = (now, id, ttl_secs);
    }

    /// A revoke entry applied (by a client or by expiry).
    pub fn on_revoked(&mut self, id: i64) {
        let _ = id;
    }

    /// A keepalive: the lease's expiry becomes `now + ttl`. Returns the TTL,
    /// or `None` for an unknown or expired (revoke pending) lease.
    pub fn keep_alive(&mut self, now: Time, id: i64) -> Option<i64> {
        let _ = (now, id);
        None
    }

    /// `(remaining_secs, granted_ttl_secs)`, or `None` for an unknown or
    /// expired lease.
    #[must_use]
    pub fn time_to_live(&self, now: Time, id: i64) -> Option<(i64, i64)> {
        let _ = (now, id);
        None
    }

    /// The ids of every live lease, ascending.
    #[must_use]
    pub fn ids(&self) -> Vec<i64> {
        Vec::new()
    }

    /// When [`Lessor::take_due`] has work next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        None
    }

    /// Work due at `now`: expired leases to revoke (rate-limited; the rest
    /// stay due) and checkpoints. A lease handed out for revoking is not
    /// handed out again, and counts as expired for keepalives.
    pub fn take_due(&mut self, now: Time) -> LeaseDue {
        let _ = now;
        LeaseDue::default()
    }
}
