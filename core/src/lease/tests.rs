//! The lessor alone: expiry, keepalive, the revoke rate and checkpoints, on
//! fake time.

use super::*;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn at(secs: u64) -> Time {
    Time(secs * SEC)
}

fn lessor(rate: u32, checkpoint_secs: Option<u64>) -> Lessor {
    Lessor::new(LeaseConfig {
        min_ttl_secs: 1,
        revoke_per_sec_max: rate,
        checkpoint_interval_nanos: checkpoint_secs.map(|s| s * SEC),
    })
}

fn cps(pairs: &[(i64, i64)]) -> Vec<LeaseCheckpoint> {
    pairs
        .iter()
        .map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
        .collect()
}

/// A lease expires ttl seconds after its grant; until then it is live, and
/// from the expiry on it is handed out once and counts as expired.
#[test]
fn expiry_hands_out_once_and_then_counts_as_expired() {
    let mut l = lessor(1000, None);
    l.on_granted(at(0), 7, 10);
    assert_eq!(l.poll_timeout(), Some(at(10)));
    assert_eq!(l.time_to_live(at(0), 7), Some((10, 10)));
    assert_eq!(
        l.time_to_live(Time(SEC / 2), 7),
        Some((9, 10)),
        "truncated, as etcd"
    );
    assert_eq!(l.take_due(Time(10 * SEC - 1)), LeaseDue::default());
    assert_eq!(
        l.take_due(at(10)),
        LeaseDue {
            revoke: vec![7],
            checkpoint: vec![]
        }
    );
    assert_eq!(l.take_due(at(11)), LeaseDue::default(), "never twice");
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(l.keep_alive(at(10), 7), None);
    assert_eq!(l.time_to_live(at(10), 7), None);
    assert_eq!(l.ids(), vec![7], "listed until the revoke applies");
    l.on_revoked(7);
    assert_eq!(l.ids(), Vec::<i64>::new());
    assert_eq!(l.keep_alive(at(11), 7), None);
}

/// A keepalive moves the expiry to now + ttl; an expired lease cannot be
/// renewed even before it is handed out.
#[test]
fn keep_alive_renews_and_expired_leases_stay_expired() {
    let mut l = lessor(1000, None);
    l.on_granted(at(0), 7, 10);
    assert_eq!(l.keep_alive(at(6), 7), Some(10));
    assert_eq!(l.poll_timeout(), Some(at(16)));
    assert_eq!(l.take_due(at(10)), LeaseDue::default());
    assert_eq!(l.keep_alive(at(16), 7), None, "expired at 16");
    assert_eq!(l.keep_alive(at(1), 99), None, "unknown");
    assert_eq!(l.take_due(at(17)).revoke, vec![7]);
}

/// Window k of 100 ms hands out floor(rate(k+1)/10) - floor(rate k/10)
/// revokes: exactly `rate` per aligned second, also for rates below 10.
#[test]
fn revokes_are_rate_limited_per_window() {
    let mut l = lessor(25, None);
    for id in 1..=100 {
        l.on_granted(at(0), id, 1);
    }
    let mut handed = Vec::new();
    let mut per_sec = [0usize; 5];
    let mut now = at(1);
    while let Some(next) = l.poll_timeout() {
        assert!(next >= now || handed.len() < 100, "time goes forward");
        now = now.max(next);
        let got = l.take_due(now).revoke;
        assert!(!got.is_empty(), "a wakeup at {now:?} had work");
        per_sec[usize::try_from((now.0 - SEC) / SEC).expect("fits")] += got.len();
        handed.extend(got);
        if handed.len() == 100 {
            break;
        }
    }
    assert_eq!(
        handed,
        (1..=100).collect::<Vec<i64>>(),
        "expiry order, each once"
    );
    assert_eq!(per_sec, [25, 25, 25, 25, 0]);
    // Budgets per window for 25/s: 2, 3, 2, 3, ...
    let l = lessor(25, None);
    let budgets: Vec<u64> = (0..10).map(|k| l.window_budget(k)).collect();
    assert_eq!(budgets, vec![2, 3, 2, 3, 2, 3, 2, 3, 2, 3]);
    let l = lessor(3, None);
    let budgets: Vec<u64> = (0..10).map(|k| l.window_budget(k)).collect();
    assert_eq!(budgets.iter().sum::<u64>(), 3);
}

/// While a backlog remains in an exhausted window, the next wakeup is the
/// next window's start.
#[test]
fn backlog_wakes_at_the_next_window() {
    let mut l = lessor(10, None);
    for id in 1..=3 {
        l.on_granted(at(0), id, 1);
    }
    assert_eq!(l.take_due(Time(SEC + 50 * MS)).revoke, vec![1]);
    assert_eq!(l.poll_timeout(), Some(Time(SEC + 100 * MS)));
    assert_eq!(l.take_due(Time(SEC + 99 * MS)).revoke, Vec::<i64>::new());
    assert_eq!(l.take_due(Time(SEC + 100 * MS)).revoke, vec![2]);
    assert_eq!(l.take_due(Time(SEC + 250 * MS)).revoke, vec![3]);
    assert_eq!(l.poll_timeout(), None);
}

/// Checkpoints: every interval, the leases whose remaining TTL (rounded up)
/// is below their TTL and changed since the last checkpoint.
#[test]
fn checkpoints_follow_the_interval() {
    let mut l = lessor(1000, Some(3));
    l.on_granted(at(0), 7, 10);
    l.on_granted(Time(2 * SEC + 500 * MS), 8, 100);
    assert_eq!(l.poll_timeout(), Some(at(3)));
    // 7 has 7 s left; 8 has 99.5 s, rounded up to 100 = its TTL: nothing.
    assert_eq!(l.take_due(at(3)).checkpoint, cps(&[(7, 7)]));
    assert_eq!(l.poll_timeout(), Some(at(6)));
    assert_eq!(l.take_due(at(6)).checkpoint, cps(&[(7, 4), (8, 97)]));
    // A renewal of a checkpointed lease resets its record at once.
    assert_eq!(l.keep_alive(Time(6 * SEC + 1), 7), Some(10));
    assert_eq!(l.poll_timeout(), Some(Time(6 * SEC + 1)));
    assert_eq!(l.take_due(Time(6 * SEC + 1)).checkpoint, cps(&[(7, 0)]));
    assert_eq!(l.poll_timeout(), Some(at(9)));
    assert_eq!(l.take_due(at(9)).checkpoint, cps(&[(7, 8), (8, 94)]));
}

/// A checkpoint entry holds at most CHECKPOINT_BATCH_MAX leases; the rest
/// follow in further calls at once.
#[test]
fn checkpoints_are_batched() {
    let mut l = lessor(1000, Some(1));
    let n = i64::try_from(CHECKPOINT_BATCH_MAX).expect("fits") + 5;
    for id in 1..=n {
        l.on_granted(at(0), id, 60);
    }
    let first = l.take_due(Time(1500 * MS)).checkpoint;
    assert_eq!(first.len(), CHECKPOINT_BATCH_MAX);
    assert_eq!(
        first[0],
        LeaseCheckpoint {
            id: 1,
            remaining_ttl: 59
        }
    );
    assert_eq!(l.poll_timeout(), Some(at(1)), "the round is unfinished");
    let rest = l.take_due(Time(1500 * MS)).checkpoint;
    assert_eq!(
        rest.iter().map(|c| c.id).collect::<Vec<_>>(),
        (n - 4..=n).collect::<Vec<_>>()
    );
    assert_eq!(l.poll_timeout(), Some(Time(2500 * MS)));
}

/// Restore: each lease expires after its checkpointed remaining TTL, or its
/// full TTL without one.
#[test]
fn restore_uses_checkpointed_remaining_ttl() {
    let mut l = lessor(1000, None);
    l.on_granted(at(0), 99, 5);
    l.restore(
        at(100),
        &[
            LeaseInfo {
                id: 1,
                ttl_secs: 60,
                remaining_ttl_secs: 4,
            },
            LeaseInfo {
                id: 2,
                ttl_secs: 30,
                remaining_ttl_secs: 0,
            },
        ],
    );
    assert_eq!(l.ids(), vec![1, 2], "what was tracked before is forgotten");
    assert_eq!(l.time_to_live(at(100), 1), Some((4, 60)));
    assert_eq!(l.time_to_live(at(100), 2), Some((30, 30)));
    assert_eq!(l.poll_timeout(), Some(at(104)));
    // Renewing the checkpointed lease schedules its reset.
    assert_eq!(l.keep_alive(at(101), 1), Some(60));
    assert_eq!(l.take_due(at(101)).checkpoint, cps(&[(1, 0)]));
}
