//! One simulated experiment: a topology, a workload, a network, and the
//! strategies to compare on exactly the same purges and failures.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::Duration;

use purgecast_core::{Config, Strategy as CoreStrategy};

use crate::baseline::{Baseline, Kind};
use crate::engines::{EngineCounters, Engines};
use crate::metrics::{latency_samples, report, Dist, Report};
use crate::net::Net;
use crate::topology::{builtin_cities, Topology, TopologyError};
use crate::workload::{Workload, WorkloadParams};
use crate::world::{run, RunParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The shipped protocol: core `Strategy::Topology`.
    Topology,
    /// Core `Strategy::Gossip`: flat random fanout.
    Gossip,
    Direct,
    Core,
    Regional,
}

impl Strategy {
    pub const ALL: [Strategy; 5] =
        [Strategy::Topology, Strategy::Gossip, Strategy::Direct, Strategy::Core, Strategy::Regional];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Topology => "topology",
            Strategy::Gossip => "gossip",
            Strategy::Direct => "direct",
            Strategy::Core => "core",
            Strategy::Regional => "regional",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|x| x.name() == s)
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub topo: Topology,
    pub workload: WorkloadParams,
    pub run: RunParams,
    /// Engine configuration of both engine strategies (the strategy field is
    /// set per run).
    pub config: Config,
    /// PoP of the core baseline.
    pub core_pop: usize,
}

impl Scenario {
    /// The core city is looked up in the full city list, then mapped to
    /// the nearest selected PoP.
    pub fn core_pop_for(topo: &Topology, city: &str) -> Result<usize, TopologyError> {
        let cities = builtin_cities()?;
        let c = cities.iter().chain(topo.pops.iter().map(|p| &p.city)).find(|c| c.name.eq_ignore_ascii_case(city));
        Ok(c.map_or(0, |c| topo.nearest_pop(c.lat, c.lon)))
    }

    pub fn workload(&self) -> Workload {
        Workload::generate(self.topo.len(), &self.workload, self.run.seed)
    }

    pub fn heals(&self) -> Vec<Duration> {
        self.run.net.partitions.iter().map(|p| p.heal()).collect()
    }
}

/// The result of one strategy in one scenario.
pub struct Outcome {
    pub report: Report,
    /// Sorted per-machine delivery latencies (ms), for CDF plots.
    pub samples: Vec<f64>,
    pub engine: Option<EngineCounters>,
}

pub fn run_strategy(scn: &Scenario, wl: &Workload, s: Strategy) -> Outcome {
    let net = Net::new(&scn.topo, scn.run.net.clone(), scn.run.seed);
    let heals = scn.heals();
    let (trace, engine) = match s {
        Strategy::Topology | Strategy::Gossip => {
            let strategy = if s == Strategy::Topology { CoreStrategy::Topology } else { CoreStrategy::Gossip };
            let cfg = Config { strategy, ..scn.config.clone() };
            let mut p = Engines::new(&scn.topo, wl, &cfg, scn.run.seed);
            let t = run(&scn.topo, wl, &scn.run, &mut p);
            let counters = p.counters.clone();
            let origin_completion = Dist::of(&mut std::mem::take(&mut p.origin_completion));
            // Freeing millions of member records takes seconds; do it off
            // the critical path.
            std::thread::spawn(move || drop(p));
            (t, Some((counters, origin_completion)))
        }
        Strategy::Direct | Strategy::Core | Strategy::Regional => {
            let kind = match s {
                Strategy::Direct => Kind::Direct,
                Strategy::Core => Kind::Core,
                _ => Kind::Regional,
            };
            let mut p = Baseline::new(kind, &scn.topo, wl, scn.core_pop, |a, b| net.base_us(a, b));
            (run(&scn.topo, wl, &scn.run, &mut p), None)
        }
    };
    let mut report = report(s.name(), &scn.topo, wl, &net, &heals, &trace);
    report.origin_completion = engine.as_ref().map(|(_, d)| d.clone());
    Outcome { report, samples: latency_samples(wl, &trace), engine: engine.map(|(c, _)| c) }
}

impl Strategy {
    /// Rough relative cost of a run, to balance lanes: flat gossip sends
    /// about five times the topology's messages, baselines a third.
    fn weight(self) -> u32 {
        match self {
            Strategy::Gossip => 12,
            Strategy::Topology => 3,
            Strategy::Direct | Strategy::Core | Strategy::Regional => 1,
        }
    }
}

/// Runs strategies and returns their outcomes in the order asked. Each of
/// up to `threads` lanes runs its strategies one after the other; a
/// strategy goes to the lane with the least work so far, so with two
/// threads flat gossip has a lane to itself and the rest share the other.
/// Output does not depend on the lanes: each run has its own state.
pub fn run_all(scn: &Scenario, strategies: &[Strategy], threads: usize) -> Vec<Outcome> {
    let wl = scn.workload();
    let mut lanes: Vec<Vec<Job>> = vec![Vec::new(); threads.clamp(1, strategies.len().max(1))];
    let mut load = vec![0u32; lanes.len()];
    let mut order: Vec<Job> = strategies.iter().enumerate().map(|(index, s)| Job { index, strategy: *s }).collect();
    // Heaviest first (stable: ties keep the order asked).
    order.sort_by_key(|j| std::cmp::Reverse(j.strategy.weight()));
    for job in order {
        let lane = (0..load.len()).min_by_key(|l| load[*l]).unwrap_or(0);
        load[lane] += job.strategy.weight();
        lanes[lane].push(job);
    }
    let done =
        par_map(&lanes, threads, |lane| lane.iter().map(|j| run_strategy(scn, &wl, j.strategy)).collect::<Vec<_>>());
    let mut slots: Vec<Option<Outcome>> = strategies.iter().map(|_| None).collect();
    for (lane, outcomes) in lanes.iter().zip(done) {
        for (job, o) in lane.iter().zip(outcomes) {
            slots[job.index] = Some(o);
        }
    }
    slots.into_iter().flatten().collect()
}

/// A strategy to run, and its place in the order asked.
#[derive(Debug, Clone, Copy)]
struct Job {
    index: usize,
    strategy: Strategy,
}

/// Maps `f` over `items` on up to `threads` threads, keeping the order of
/// `items` in the result so output never depends on scheduling.
pub fn par_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|sc| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            sc.spawn(|| {
                // Ends once every item has been taken.
                loop {
                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if let Ok(mut g) = slots.lock() {
                        g[i] = Some(r);
                    }
                }
            });
        }
    });
    slots.into_inner().unwrap_or_default().into_iter().flatten().collect()
}
