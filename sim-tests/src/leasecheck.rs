//! The lease expiry check (ARCHITECTURE §5, invariant 11): a lease's keys
//! never outlive it by more than its TTL plus a bounded slack, and a lease
//! kept alive is never revoked early.
//!
//! For each lease a client granted (and did not revoke itself before the
//! question arises), the time its revoke entry became durable in the log
//! (`revoked`, from the ledger) must satisfy:
//!
//! - **not late**: `revoked ≤ deadline + slack`, where `deadline` starts at
//!   `max(grant answered, last keepalive sent + network delay) + TTL` and is
//!   pushed out by each outage that began before it (plus slack): after a
//!   crash the restarted node restores leases with a fresh TTL, after a
//!   pause it serves the keepalives that queued during it — either way
//!   `deadline = max(deadline, outage end + TTL)`. A lease whose deadline
//!   passed before the end of the run must have been revoked.
//! - **not early**: `revoked ≥ max(grant sent, last acknowledged keepalive
//!   sent) + TTL × (1 − drift bound)`, unless the node restarted during the
//!   lease's life (recovery restarts TTLs from checkpoints of the remaining
//!   time, which etcd also does).
//!
//! All times are simulated nanoseconds since the start of the run.

use std::collections::BTreeMap;

use crate::workload::LeaseRecord;

/// A time the node could not act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// When it began (at the latest).
    pub start: u64,
    /// When the node ran again.
    pub end: u64,
    /// It was a crash or exit (leases restored at restart), not a pause.
    pub restart: bool,
}

/// Node events that move lease deadlines.
#[derive(Clone, Debug, Default)]
pub struct NodeEvents {
    /// Crashes, exits and pauses, in time order.
    pub outages: Vec<Outage>,
}

/// Slack on top of the TTL: revoke pacing (100 ms windows), the batch and
/// its fsync, timer granularity.
const SLACK_NANOS: u64 = 1_500_000_000;
/// Longest a datagram takes (the swarm's latency bound, rounded up).
const NETWORK_NANOS: u64 = 100_000_000;
/// Clock rate error tolerated (the swarm draws at most 500 ppm).
const DRIFT_PPM: u64 = 1_000;

/// Checks every lease; returns how many were checked.
///
/// # Errors
/// The first violation, described.
pub fn check_leases(
    leases: &[LeaseRecord],
    revoked: &BTreeMap<i64, u64>,
    events: &NodeEvents,
    end: u64,
) -> Result<usize, String> {
    let mut checked = 0;
    for lease in leases {
        let ttl = u64::try_from(lease.ttl).unwrap_or(0) * 1_000_000_000;
        let revoked_at = revoked.get(&lease.id).copied();
        let by_client = |t: u64| lease.revoked_at.is_some_and(|c| c <= t);

        // Not late.
        let last_sent = lease
            .keepalive_calls
            .last()
            .map_or(0, |c| c + NETWORK_NANOS);
        let mut deadline = lease.granted_at.max(last_sent) + ttl;
        for o in &events.outages {
            if o.end >= lease.grant_call_at && o.start <= deadline + SLACK_NANOS {
                deadline = deadline.max(o.end + ttl);
            }
        }
        let limit = deadline + SLACK_NANOS;
        match revoked_at {
            Some(at) if at > limit && !by_client(at) => {
                return Err(format!(
                    "lease {} (client {}, TTL {} s) revoked at {:.3} s, after its deadline {:.3} s + slack",
                    lease.id,
                    lease.client,
                    lease.ttl,
                    secs(at),
                    secs(deadline)
                ));
            }
            None if limit < end && !by_client(end) => {
                return Err(format!(
                    "lease {} (client {}, TTL {} s) never revoked; its deadline was {:.3} s, the run ended at {:.3} s",
                    lease.id,
                    lease.client,
                    lease.ttl,
                    secs(deadline),
                    secs(end)
                ));
            }
            _ => {}
        }

        // Not early.
        let restarted = events.outages.iter().any(|o| {
            o.restart && o.end >= lease.grant_call_at && revoked_at.is_none_or(|r| o.end <= r)
        });
        if let Some(at) = revoked_at {
            if !restarted && !by_client(at) {
                let from = lease
                    .keepalive_acked_calls
                    .last()
                    .copied()
                    .unwrap_or(lease.grant_call_at)
                    .max(lease.grant_call_at);
                let earliest = from + ttl - ttl / 1_000_000 * DRIFT_PPM;
                if at < earliest {
                    return Err(format!(
                        "lease {} (client {}, TTL {} s) revoked early at {:.3} s: kept alive at {:.3} s, so not before {:.3} s",
                        lease.id,
                        lease.client,
                        lease.ttl,
                        secs(at),
                        secs(from),
                        secs(earliest)
                    ));
                }
            }
        }
        checked += 1;
    }
    Ok(checked)
}

fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn lease(ttl: i64) -> LeaseRecord {
        LeaseRecord {
            client: 0,
            id: 7,
            ttl,
            grant_call_at: 10 * S,
            granted_at: 10 * S + 1_000,
            keepalive_calls: Vec::new(),
            keepalive_acked_calls: Vec::new(),
            revoked_at: None,
        }
    }

    fn revoked(at: u64) -> BTreeMap<i64, u64> {
        BTreeMap::from([(7, at)])
    }

    #[test]
    fn on_time_expiry_passes() {
        let l = lease(3);
        assert_eq!(
            check_leases(
                &[l],
                &revoked(13 * S + S / 10),
                &NodeEvents::default(),
                60 * S
            ),
            Ok(1)
        );
    }

    #[test]
    fn late_expiry_fails() {
        let l = lease(3);
        let err = check_leases(&[l], &revoked(16 * S), &NodeEvents::default(), 60 * S).unwrap_err();
        assert!(err.contains("after its deadline"), "{err}");
    }

    #[test]
    fn never_revoked_fails_only_after_the_deadline() {
        let l = lease(3);
        let none = BTreeMap::new();
        assert!(check_leases(
            std::slice::from_ref(&l),
            &none,
            &NodeEvents::default(),
            60 * S
        )
        .is_err());
        assert_eq!(
            check_leases(&[l], &none, &NodeEvents::default(), 14 * S),
            Ok(1)
        );
    }

    #[test]
    fn early_expiry_fails() {
        let mut l = lease(3);
        l.keepalive_calls = vec![12 * S];
        l.keepalive_acked_calls = vec![12 * S];
        let err = check_leases(&[l], &revoked(14 * S), &NodeEvents::default(), 60 * S).unwrap_err();
        assert!(err.contains("early"), "{err}");
    }

    #[test]
    fn a_restart_moves_the_deadline_and_waives_the_early_check() {
        let l = lease(3);
        let events = NodeEvents {
            outages: vec![Outage {
                start: 11 * S,
                end: 12 * S,
                restart: true,
            }],
        };
        // Late without the restart, on time with it.
        assert!(check_leases(
            std::slice::from_ref(&l),
            &revoked(15 * S),
            &NodeEvents::default(),
            60 * S
        )
        .is_err());
        assert_eq!(
            check_leases(std::slice::from_ref(&l), &revoked(15 * S), &events, 60 * S),
            Ok(1)
        );
        // Early without it, accepted with it (TTLs restart from checkpoints).
        assert_eq!(
            check_leases(&[l], &revoked(12 * S + S / 2), &events, 60 * S),
            Ok(1)
        );
    }

    #[test]
    fn an_outage_over_the_deadline_moves_it() {
        let l = lease(3);
        // Down from 12 s (before the deadline, 13 s) to 20 s: due at 23 s.
        let events = NodeEvents {
            outages: vec![Outage {
                start: 12 * S,
                end: 20 * S,
                restart: true,
            }],
        };
        assert_eq!(
            check_leases(std::slice::from_ref(&l), &revoked(23 * S), &events, 60 * S),
            Ok(1)
        );
        assert!(check_leases(std::slice::from_ref(&l), &revoked(25 * S), &events, 60 * S).is_err());
        // An outage that began after the deadline (plus slack) moves nothing.
        let late = NodeEvents {
            outages: vec![Outage {
                start: 16 * S,
                end: 20 * S,
                restart: true,
            }],
        };
        assert!(check_leases(&[l], &revoked(23 * S), &late, 60 * S).is_err());
    }

    #[test]
    fn a_client_revoke_is_not_an_expiry() {
        let mut l = lease(3);
        l.revoked_at = Some(11 * S);
        assert_eq!(
            check_leases(
                &[l],
                &revoked(11 * S + 1_000),
                &NodeEvents::default(),
                60 * S
            ),
            Ok(1)
        );
    }
}
