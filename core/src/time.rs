//! Protocol time: microseconds since an epoch chosen by the driver.
//!
//! The engine only compares and adds times, so any monotonic origin works:
//! the node uses process start, the simulator uses zero.

use std::ops::{Add, Sub};
use std::time::Duration;

/// Microseconds since an epoch chosen by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// A time `us` microseconds after the epoch.
    pub fn from_micros(us: u64) -> Self {
        Time(us)
    }

    /// A time `ms` milliseconds after the epoch.
    pub fn from_millis(ms: u64) -> Self {
        Time(ms.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch, for reports.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(us))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_sub(us))
    }
}
