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
//! # Expiry and the revoke rate
//!
//! A lease expires at `granted/renewed at + ttl` (or, after a restart,
//! `restored at + remaining`). [`Lessor::take_due`] hands out expired
//! leases in expiry order, each **once**; from then on the lease counts as
//! expired (keepalive and time-to-live answer `None`) until its revoke entry
//! applies ([`Lessor::on_revoked`]). The rate limit works on 100 ms windows
//! of the monotonic clock: window `k` may hand out
//! `⌊rate·(k+1)/10⌋ − ⌊rate·k/10⌋` revokes, so every ten consecutive windows
//! (one second aligned to the windows) hand out at most `rate`, smoothly,
//! and any sliding second at most `rate + ⌈rate/10⌉`. While a backlog
//! remains, [`Lessor::poll_timeout`] is the next window with budget.
//!
//! # Checkpoints
//!
//! Every `checkpoint_interval_nanos` the lessor emits, for each lease whose
//! remaining TTL (seconds, rounded up) is below its granted TTL and differs
//! from the value last checkpointed, that remaining TTL, at most
//! [`CHECKPOINT_BATCH_MAX`] per entry (the rest follows at once, in further
//! calls). A keepalive that renews a lease with a checkpoint on record
//! schedules a checkpoint of 0 for it ("none": a restart uses the full TTL),
//! as etcd 3.5 does on renew, so a restart does not cut a renewed lease
//! short.
//!
//! ```text
//! ttl 10, checkpoint every 3 s, rate 1000/s
//! t=0    grant 7                     expires 10
//! t=3    take_due → checkpoint 7: 7  (persisted 7)
//! t=4    keep_alive 7 → 10           expires 14; persisted 7 is stale → reset due
//! t=4    take_due → checkpoint 7: 0  (persisted 0)
//! t=6    take_due → checkpoint 7: 8
//! t=14   take_due → revoke [7]       keep_alive 7 → None from now on
//! t=14.2 on_revoked 7                (the revoke entry applied)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::kv::LeaseCheckpoint;
use crate::types::Time;

/// Most checkpoints in one checkpoint entry (etcd
/// `maxLeaseCheckpointBatchSize`).
pub const CHECKPOINT_BATCH_MAX: usize = 1000;

/// Length of one rate-limit window.
const WINDOW_NANOS: u64 = 100_000_000;
/// Rate-limit windows per second.
const WINDOWS_PER_SEC: u128 = 1_000_000_000 / WINDOW_NANOS as u128;
const NANOS_PER_SEC: u64 = 1_000_000_000;

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

/// One lease as the lessor tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    ttl_secs: i64,
    expiry: Time,
    /// The remaining TTL on record in the lease table (0: none), as far as
    /// this lessor knows: what it last checkpointed or restored.
    persisted_remaining_secs: i64,
    /// Handed out by `take_due`; its revoke entry has not applied yet.
    revoking: bool,
}

/// Expiry tracking for the leases of one node. See the module docs.
#[derive(Debug, Default)]
pub struct Lessor {
    config: LeaseConfig,
    leases: BTreeMap<i64, Tracked>,
    /// `(expiry, id)` of every lease not handed out for revoking.
    by_expiry: BTreeSet<(Time, i64)>,
    /// The rate-limit window `take_due` last ran in, and revokes handed
    /// out in it.
    window: u64,
    window_used: u64,
    /// When the next checkpoint round is due (`None`: no leases, or
    /// checkpoints are off). Stays in the past while a round is unfinished.
    next_checkpoint: Option<Time>,
    /// Where the unfinished checkpoint round resumes.
    checkpoint_cursor: Option<i64>,
    /// Renewed leases whose persisted remaining TTL must be reset to 0.
    reset: BTreeSet<i64>,
    /// When the oldest pending reset was asked for.
    reset_due: Option<Time>,
}

impl Lessor {
    /// A lessor with no leases.
    ///
    /// # Panics
    /// `revoke_per_sec_max` is 0 (no lease would ever be revoked).
    #[must_use]
    pub fn new(config: LeaseConfig) -> Lessor {
        assert!(
            config.revoke_per_sec_max > 0,
            "revoke_per_sec_max must be positive"
        );
        assert!(
            config.checkpoint_interval_nanos != Some(0),
            "checkpoint_interval_nanos must be positive"
        );
        Lessor {
            config,
            ..Lessor::default()
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Starts tracking `leases` (the engine's table after recovery): each
    /// expires at `now` + its remaining TTL (checkpointed) or full TTL.
    /// Anything tracked before is forgotten.
    pub fn restore(&mut self, now: Time, leases: &[LeaseInfo]) {
        let config = self.config.clone();
        *self = Lessor::new(config);
        for info in leases {
            let secs = if info.remaining_ttl_secs > 0 {
                info.remaining_ttl_secs
            } else {
                info.ttl_secs
            };
            self.track(now, info.id, info.ttl_secs, secs, info.remaining_ttl_secs);
        }
    }

    /// A grant entry applied: the lease expires at `now + ttl_secs`, with no
    /// checkpoint on record.
    pub fn on_granted(&mut self, now: Time, id: i64, ttl_secs: i64) {
        self.forget(id);
        self.track(now, id, ttl_secs, ttl_secs, 0);
    }

    /// A revoke entry applied (by a client or by expiry).
    pub fn on_revoked(&mut self, id: i64) {
        self.forget(id);
        if self.leases.is_empty() {
            self.next_checkpoint = None;
            self.checkpoint_cursor = None;
        }
    }

    /// A keepalive: the lease's expiry becomes `now + ttl`. Returns the TTL,
    /// or `None` for an unknown or expired (revoke pending) lease.
    pub fn keep_alive(&mut self, now: Time, id: i64) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        if lease.revoking || lease.expiry <= now {
            return None;
        }
        let removed = self.by_expiry.remove(&(lease.expiry, id));
        assert!(
            removed,
            "lessor: live lease {id} missing from the expiry index"
        );
        lease.expiry = now.plus_nanos(secs_to_nanos(lease.ttl_secs));
        self.by_expiry.insert((lease.expiry, id));
        if lease.persisted_remaining_secs > 0 {
            self.reset.insert(id);
            self.reset_due = Some(self.reset_due.map_or(now, |t| t.min(now)));
        }
        Some(lease.ttl_secs)
    }

    /// `(remaining_secs, granted_ttl_secs)`, or `None` for an unknown or
    /// expired lease. The remaining seconds are truncated, as etcd's
    /// `LeaseTimeToLive` (a fresh 10 s lease reports 9 a moment later).
    #[must_use]
    pub fn time_to_live(&self, now: Time, id: i64) -> Option<(i64, i64)> {
        let lease = self.leases.get(&id)?;
        if lease.revoking || lease.expiry <= now {
            return None;
        }
        let remaining = i64::try_from((lease.expiry.0 - now.0) / NANOS_PER_SEC)
            .expect("remaining seconds fit i64");
        Some((remaining, lease.ttl_secs))
    }

    /// The ids of every lease not yet revoked (expired ones included until
    /// their revoke applies, as etcd's `Leases`), ascending.
    #[must_use]
    pub fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// When [`Lessor::take_due`] has work next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        let revoke = self.by_expiry.first().map(|&(expiry, _)| {
            let mut k = (expiry.0 / WINDOW_NANOS).max(self.window);
            // Some window within the next ten has budget: rate >= 1 per second.
            for _ in 0..=WINDOWS_PER_SEC {
                let used = if k == self.window {
                    self.window_used
                } else {
                    0
                };
                if used < self.window_budget(k) {
                    break;
                }
                k += 1;
            }
            expiry.max(Time(k.saturating_mul(WINDOW_NANOS)))
        });
        [revoke, self.next_checkpoint, self.reset_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// Work due at `now`: expired leases to revoke (rate-limited; the rest
    /// stay due) and checkpoints. A lease handed out for revoking is not
    /// handed out again, and counts as expired for keepalives.
    pub fn take_due(&mut self, now: Time) -> LeaseDue {
        LeaseDue {
            revoke: self.take_expired(now),
            checkpoint: self.take_checkpoints(now),
        }
    }

    // ----- internals -----

    fn track(&mut self, now: Time, id: i64, ttl_secs: i64, secs: i64, persisted: i64) {
        assert!(id > 0, "lessor: lease ids are positive, got {id}");
        let expiry = now.plus_nanos(secs_to_nanos(secs));
        let fresh = self.leases.insert(
            id,
            Tracked {
                ttl_secs,
                expiry,
                persisted_remaining_secs: persisted,
                revoking: false,
            },
        );
        assert!(fresh.is_none(), "lessor: lease {id} tracked twice");
        self.by_expiry.insert((expiry, id));
        if self.next_checkpoint.is_none() {
            self.next_checkpoint = self
                .config
                .checkpoint_interval_nanos
                .map(|interval| now.plus_nanos(interval));
        }
    }

    fn forget(&mut self, id: i64) {
        if let Some(lease) = self.leases.remove(&id) {
            self.by_expiry.remove(&(lease.expiry, id));
        }
        self.reset.remove(&id);
        if self.reset.is_empty() {
            self.reset_due = None;
        }
    }

    /// Revokes window `k` may hand out (see the module docs).
    fn window_budget(&self, k: u64) -> u64 {
        let rate = u128::from(self.config.revoke_per_sec_max);
        let k = u128::from(k);
        let budget = rate * (k + 1) / WINDOWS_PER_SEC - rate * k / WINDOWS_PER_SEC;
        u64::try_from(budget).expect("a window's budget fits u64")
    }

    fn take_expired(&mut self, now: Time) -> Vec<i64> {
        let k = now.0 / WINDOW_NANOS;
        if k > self.window {
            self.window = k;
            self.window_used = 0;
        }
        let mut out = Vec::new();
        while self.window_used < self.window_budget(self.window) {
            let Some(&(expiry, id)) = self.by_expiry.first() else {
                break;
            };
            if expiry > now {
                break;
            }
            self.by_expiry.pop_first();
            let lease = self
                .leases
                .get_mut(&id)
                .expect("indexed leases are tracked");
            assert!(!lease.revoking, "lessor: lease {id} handed out twice");
            lease.revoking = true;
            self.window_used += 1;
            out.push(id);
        }
        out
    }

    fn take_checkpoints(&mut self, now: Time) -> Vec<LeaseCheckpoint> {
        let mut out: BTreeMap<i64, i64> = BTreeMap::new();
        if self.next_checkpoint.is_some_and(|at| at <= now) {
            let start = self.checkpoint_cursor.take().unwrap_or(i64::MIN);
            let mut finished = true;
            for (&id, lease) in self.leases.range_mut(start..) {
                if out.len() == CHECKPOINT_BATCH_MAX {
                    self.checkpoint_cursor = Some(id);
                    finished = false;
                    break;
                }
                if lease.revoking || lease.expiry <= now {
                    continue;
                }
                let remaining = i64::try_from((lease.expiry.0 - now.0).div_ceil(NANOS_PER_SEC))
                    .expect("remaining seconds fit i64");
                if remaining < lease.ttl_secs && remaining != lease.persisted_remaining_secs {
                    lease.persisted_remaining_secs = remaining;
                    out.insert(id, remaining);
                }
            }
            if finished {
                self.next_checkpoint = match self.config.checkpoint_interval_nanos {
                    Some(interval) if !self.leases.is_empty() => Some(now.plus_nanos(interval)),
                    _ => None,
                };
            }
        }
        while out.len() < CHECKPOINT_BATCH_MAX {
            let Some(id) = self.reset.pop_first() else {
                break;
            };
            if let Some(lease) = self.leases.get_mut(&id) {
                // A checkpoint taken above already supersedes the reset.
                if !out.contains_key(&id) && !lease.revoking {
                    lease.persisted_remaining_secs = 0;
                    out.insert(id, 0);
                }
            }
        }
        if self.reset.is_empty() {
            self.reset_due = None;
        }
        out.into_iter()
            .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
            .collect()
    }
}

fn secs_to_nanos(secs: i64) -> u64 {
    u64::try_from(secs)
        .unwrap_or(0)
        .saturating_mul(NANOS_PER_SEC)
}

#[cfg(test)]
mod tests;
