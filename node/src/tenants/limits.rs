//! Per-zone purge rate limits: one token bucket (GCRA, the `governor`
//! crate) per zone, on this node only. A reload keeps the bucket of a zone
//! whose limit did not change, so reloading never hands out a fresh burst.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

type Bucket = (u32, u32, Arc<DefaultDirectRateLimiter>);

#[derive(Default)]
pub struct Limits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    /// Takes one request from `zone`'s bucket (`rate`/s, `burst` deep), or
    /// says how long until one is available.
    pub fn take(&self, zone: &str, rate: u32, burst: u32) -> Result<(), Duration> {
        let limiter = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let b = buckets.entry(zone.to_string()).or_insert_with(|| new_bucket(rate, burst));
            if (b.0, b.1) != (rate, burst) {
                *b = new_bucket(rate, burst);
            }
            b.2.clone()
        };
        limiter.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets the buckets of zones that no longer exist.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.retain(|z, _| z.is_empty() || keep(z));
    }
}

fn new_bucket(rate: u32, burst: u32) -> Bucket {
    let quota = Quota::per_second(nz(rate)).allow_burst(nz(burst));
    (rate, burst, Arc::new(RateLimiter::direct(quota)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_the_bucket_is_refused_with_a_wait_and_zones_are_apart() {
        let l = Limits::default();
        for _ in 0..3 {
            assert!(l.take("a", 1, 3).is_ok());
        }
        let wait = l.take("a", 1, 3).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.take("b", 1, 3).is_ok(), "another zone has its own bucket");
        assert!(l.take("a", 1, 3).is_err(), "the same limit keeps the bucket");
        assert!(l.take("a", 2, 3).is_ok(), "a changed limit starts a new bucket");
    }
}
