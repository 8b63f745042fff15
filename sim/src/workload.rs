//! What happens to the cluster during a run: which machines are dead from
//! the start, which crash midway, and which purges start where and when.

use std::time::Duration;

use purgecast_core::Time;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadParams {
    pub purges: usize,
    pub interval: Duration,
    /// Time before the first purge, so SWIM and anti-entropy timers are in
    /// their steady state when purges start.
    pub warmup: Duration,
    /// Fraction of machines dead before the run (and known dead).
    pub crashed: f64,
    /// Fraction of machines that crash during the purge window.
    pub crash_during: f64,
    /// Purges enter through the first this many live machines, in turn
    /// (one API region, one load balancer); 0 = a random live machine each.
    pub origins: usize,
}

impl Default for WorkloadParams {
    fn default() -> Self {
        WorkloadParams {
            purges: 1000,
            interval: Duration::from_millis(10),
            warmup: Duration::from_secs(1),
            crashed: 0.05,
            crash_during: 0.0,
            origins: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeSpec {
    pub origin: usize,
    pub at: Time,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub purges: Vec<PurgeSpec>,
    /// Dead from the start, in everyone's view.
    pub crashed: Vec<bool>,
    /// Crash times of machines that die during the run.
    pub crash_at: Vec<Option<Time>>,
    /// Restart times of machines that crash during the run and come back
    /// (with what they had applied, as a node reloads its store), or that
    /// were dead from the start and join.
    pub restart_at: Vec<Option<Time>>,
    /// Earlier crash-and-restart cycles of machines that crash during the
    /// run, before the one in `crash_at`/`restart_at`.
    pub bounces: Vec<Bounce>,
}

/// A machine down from `down` until `up`, restarted with what it had
/// applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounce {
    pub machine: usize,
    pub down: Time,
    pub up: Time,
}

impl Workload {
    /// The same seed gives the same workload whatever the strategy, so
    /// strategies are compared on identical purges and failures.
    pub fn generate(machines: usize, p: &WorkloadParams, seed: u64) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x776f_726b_6c6f_6164);
        let mut order: Vec<usize> = (0..machines).collect();
        order.shuffle(&mut rng);
        let n_dead = ((machines as f64 * p.crashed.clamp(0.0, 1.0)).round() as usize).min(machines.saturating_sub(1));
        let n_crash = ((machines as f64 * p.crash_during.clamp(0.0, 1.0)).round() as usize)
            .min(machines.saturating_sub(1 + n_dead));
        let mut crashed = vec![false; machines];
        for &m in &order[..n_dead] {
            crashed[m] = true;
        }
        let start = Time::ZERO + p.warmup;
        let window = (p.interval.as_micros() as u64).saturating_mul(p.purges as u64).max(1);
        let mut crash_at = vec![None; machines];
        for &m in &order[n_dead..n_dead + n_crash] {
            crash_at[m] = Some(Time(start.as_micros() + rng.random_range(0..window)));
        }
        let live: Vec<usize> = (0..machines).filter(|m| !crashed[*m] && crash_at[*m].is_none()).collect();
        let purges = (0..p.purges)
            .map(|i| {
                let origin = if p.origins == 0 {
                    live[rng.random_range(0..live.len())]
                } else {
                    live[i % p.origins.min(live.len())]
                };
                PurgeSpec { origin, at: start + p.interval * i as u32 }
            })
            .collect();
        Workload { purges, crashed, crash_at, restart_at: vec![None; machines], bounces: Vec::new() }
    }

    /// Machines up at the end of the run (never crashed, or restarted):
    /// the ones that must apply every purge.
    pub fn is_live(&self, m: usize) -> bool {
        self.restart_at[m].is_some() || (!self.crashed[m] && self.crash_at[m].is_none())
    }

    /// Times machine `m` goes down during the run, in any order.
    pub fn downs(&self, m: usize) -> impl Iterator<Item = Time> + '_ {
        let bounces = self.bounces.iter().filter(move |b| b.machine == m).map(|b| b.down);
        self.crash_at[m].into_iter().chain(bounces)
    }

    pub fn live_count(&self) -> usize {
        (0..self.crashed.len()).filter(|m| self.is_live(*m)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_live_and_fractions_are_respected() {
        let p = WorkloadParams { purges: 50, crashed: 0.1, crash_during: 0.1, ..WorkloadParams::default() };
        let w = Workload::generate(100, &p, 7);
        assert_eq!(w.crashed.iter().filter(|c| **c).count(), 10);
        assert_eq!(w.crash_at.iter().filter(|c| c.is_some()).count(), 10);
        assert_eq!(w.live_count(), 80);
        assert!(w.purges.iter().all(|s| w.is_live(s.origin)));
        assert_eq!(w, Workload::generate(100, &p, 7));
        assert_ne!(w, Workload::generate(100, &p, 8));
    }
}
