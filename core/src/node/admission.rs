//! What a valid client write needs before it is queued for the log, beyond
//! the static checks: lease grants get their final TTL and id, writes that
//! consume space pass the quota (etcd's `quotaKVServer`), and an alarm
//! `Get` is answered from memory instead of being logged.
//!
//! # The quota
//!
//! ```text
//! NOSPACE raised (applied)                         → NoSpace at once
//! engine size + request size <= quota_bytes        → queued
//! otherwise                                        → an internal "activate
//!     NOSPACE for this member" entry is queued (unless one is already queued
//!     or in flight), then the write, which fails with NoSpace when it
//!     applies after the alarm
//! ```
//!
//! The over-quota write goes through the log rather than being answered at
//! once so that, as with etcd, the alarm is visible (alarm list, status)
//! by the time its writer hears NoSpace.
//!
//! Only puts, txns with a put anywhere and lease grants consume space
//! ([`mvcc::consumes_space`]); deletes and compactions always pass, so space
//! can be freed. The apply step refuses space-consuming entries too while the
//! alarm is raised, so a write queued just before the alarm applied fails
//! the same way on every node.

use super::{Node, Pending, Response};
use crate::engine::KvEngine;
use crate::error::Error;
use crate::kv::{
    AlarmAction, AlarmRequest, AlarmResponse, AlarmType, LeaseGrantRequest, WriteRequest,
};
use crate::log::Payload;
use crate::mvcc;

/// Attempts at drawing a free lease id before giving up (each attempt
/// collides with probability about `leases / 2^63`).
const LEASE_ID_ATTEMPTS_MAX: u64 = 64;

impl<E: KvEngine> Node<E> {
    /// Turns a valid write into the payload to log, or answers it at once.
    pub(super) fn admit(
        &mut self,
        write: WriteRequest,
    ) -> Result<Payload, Result<Response, Error>> {
        let payload = match write {
            WriteRequest::Alarm(a) if a.action == AlarmAction::Get as i32 => {
                return Err(Ok(Response::Alarm(self.alarm_get(a.alarm))));
            }
            other => Payload::from(other),
        };
        self.check_quota(&payload).map_err(Err)?;
        match payload {
            Payload::LeaseGrant(grant) => self
                .prepare_grant(grant)
                .map(Payload::LeaseGrant)
                .map_err(Err),
            other => Ok(other),
        }
    }

    /// etcd's alarm `Get`: the alarms of type `alarm` (`NONE`: every alarm).
    fn alarm_get(&self, alarm: i32) -> AlarmResponse {
        AlarmResponse {
            revision: self.store.meta().current_revision,
            alarms: self
                .store
                .alarms()
                .iter()
                .filter(|a| alarm == AlarmType::None as i32 || a.alarm == alarm)
                .cloned()
                .collect(),
        }
    }

    /// The quota check of the module docs.
    fn check_quota(&mut self, payload: &Payload) -> Result<(), Error> {
        if !mvcc::consumes_space(payload) {
            return Ok(());
        }
        if mvcc::alarm::nospace(self.store.alarms()) {
            return Err(Error::NoSpace);
        }
        let request_bytes = u64::try_from(super::payload_len(payload)).expect("usize fits u64");
        if self.db_size_bytes.saturating_add(request_bytes) <= self.config.quota_bytes {
            return Ok(());
        }
        if !self.nospace_pending() {
            tracing::warn!(
                quota_bytes = self.config.quota_bytes,
                "database space exceeded; raising the NOSPACE alarm"
            );
            self.queue_internal(Payload::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.config.node_id.0,
                alarm: AlarmType::Nospace as i32,
            }));
        }
        // Queued behind the alarm: it fails with NoSpace when it applies.
        Ok(())
    }

    /// Whether an entry raising NOSPACE is queued or in flight.
    fn nospace_pending(&self) -> bool {
        self.pending_payloads().any(|p| {
            matches!(p, Payload::Alarm(a)
                if a.action == AlarmAction::Activate as i32 && a.alarm == AlarmType::Nospace as i32)
        })
    }

    /// Raises the TTL to the minimum (etcd's lessor does, 0 included) and
    /// picks an id when the client gave none. The log holds the final grant,
    /// so applying it is the same on every node.
    fn prepare_grant(&self, mut grant: LeaseGrantRequest) -> Result<LeaseGrantRequest, Error> {
        grant.ttl = grant.ttl.max(self.config.lease.min_ttl_secs);
        if grant.id != 0 {
            // A duplicate pending grant fails when it applies.
            if self.store.lease_exists(grant.id) {
                return Err(Error::LeaseExists);
            }
            return Ok(grant);
        }
        // The index the grant will take: never reused, so ids drawn from it
        // differ across the node's whole life, restarts included.
        let index = self.last_index.0 + u64::try_from(self.queued.len()).expect("fits u64") + 1;
        for attempt in 0..LEASE_ID_ATTEMPTS_MAX {
            let id = lease_id_candidate(self.config.seed, index, attempt);
            if id > 0 && !self.store.lease_exists(id) && !self.grant_pending(id) {
                grant.id = id;
                return Ok(grant);
            }
        }
        Err(Error::Unavailable("no free lease id found".into()))
    }

    /// Whether a grant of `id` is queued or in flight.
    fn grant_pending(&self, id: i64) -> bool {
        self.pending_payloads()
            .any(|p| matches!(p, Payload::LeaseGrant(g) if g.id == id))
    }

    /// Payloads queued or in flight, in log order.
    fn pending_payloads(&self) -> impl Iterator<Item = &Payload> {
        let in_flight = self
            .in_flight
            .iter()
            .flat_map(|b| b.entries.iter().filter_map(|(_, e)| e.payload.as_ref()));
        in_flight.chain(self.queued.iter().map(|p: &Pending| &p.payload))
    }
}

/// A lease id for the grant at log `index`: splitmix64 over the seed, the
/// index and the attempt, made positive (may be 0: the caller retries).
fn lease_id_candidate(seed: u64, index: u64, attempt: u64) -> i64 {
    let x = splitmix64(
        seed ^ splitmix64(index.wrapping_add(attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
    );
    i64::try_from(x >> 1).expect("63 bits fit i64")
}

/// Sebastiano Vigna's splitmix64 finaliser: a bijection on `u64` that
/// spreads consecutive inputs over the whole range.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
