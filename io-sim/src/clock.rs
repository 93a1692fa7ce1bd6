//! Node clocks. The simulator owns time (madsim's virtual clock); each node
//! sees it through a [`SimClock`] with its own origin (its process start),
//! rate error (`drift_ppm`) and wall-clock offset. Core only ever gets the
//! monotonic reading ([`SimClock::now`]); the wall clock is there for the
//! cluster protocols that must *not* trust it.

use std::time::Duration;

use madsim::time::Instant;
use t4_core::Time;

/// How a node's clock deviates from true (simulated) time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockConfig {
    /// Rate error in parts per million: +100 means the node's clock runs
    /// 0.01 % fast.
    pub drift_ppm: i64,
    /// Offset of the node's wall clock from true time, in milliseconds.
    pub wall_offset_ms: i64,
}

/// One node's view of time, from its process start.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    origin: Instant,
    config: ClockConfig,
}

impl SimClock {
    /// A clock whose monotonic zero is now.
    #[must_use]
    pub fn start(config: ClockConfig) -> SimClock {
        SimClock {
            origin: Instant::now(),
            config,
        }
    }

    fn scale(&self, true_nanos: u128) -> u128 {
        let rate = u128::try_from(1_000_000 + self.config.drift_ppm).unwrap_or(1);
        true_nanos * rate / 1_000_000
    }

    /// The node's monotonic time (drifted), for core.
    #[must_use]
    pub fn now(&self) -> Time {
        let nanos = self.scale(self.origin.elapsed().as_nanos());
        Time(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The true instant at which this clock reads `at`.
    #[must_use]
    pub fn instant_at(&self, at: Time) -> Instant {
        let rate = u128::try_from(1_000_000 + self.config.drift_ppm).unwrap_or(1);
        let true_nanos = u128::from(at.0) * 1_000_000 / rate;
        self.origin + Duration::from_nanos(u64::try_from(true_nanos).unwrap_or(u64::MAX))
    }

    /// The node's wall clock: nanoseconds since the Unix epoch, offset and
    /// drifted.
    #[must_use]
    pub fn wall_nanos(&self) -> i128 {
        let since_epoch = madsim::time::TimeHandle::current()
            .now_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let elapsed = self.origin.elapsed().as_nanos();
        let drift =
            i128::try_from(self.scale(elapsed)).unwrap_or(0) - i128::try_from(elapsed).unwrap_or(0);
        i128::try_from(since_epoch).unwrap_or(0)
            + drift
            + i128::from(self.config.wall_offset_ms) * 1_000_000
    }
}
