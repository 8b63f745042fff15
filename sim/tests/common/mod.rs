//! Small scenarios shared by the integration tests.

#![allow(dead_code)]

use std::time::Duration;

use purgecast_core::Config;
use purgesim::net::{Jitter, LossModel, NetParams};
use purgesim::scenario::Scenario;
use purgesim::topology::{City, Topology};
use purgesim::workload::WorkloadParams;
use purgesim::world::RunParams;

pub struct Small {
    pub pops: usize,
    pub per_pop: usize,
    pub purges: usize,
    pub loss: f64,
    pub loss_model: LossModel,
    pub crashed: f64,
    pub crash_during: f64,
    pub seed: u64,
}

impl Small {
    pub fn scenario(&self) -> Scenario {
        let topo = Topology::world(self.pops, self.per_pop).unwrap();
        Scenario {
            workload: WorkloadParams {
                purges: self.purges,
                interval: Duration::from_millis(20),
                warmup: Duration::from_millis(500),
                crashed: self.crashed,
                crash_during: self.crash_during,
                origins: 0,
            },
            run: RunParams {
                net: NetParams { loss: self.loss, loss_model: self.loss_model, ..NetParams::default() },
                max_time: Duration::from_secs(120),
                seed: self.seed,
                ..RunParams::default()
            },
            config: Config::default(),
            core_pop: 0,
            topo,
        }
    }

    /// The command line that replays this scenario with the binary.
    pub fn replay(&self) -> String {
        format!(
            "purgesim --pops {} --machines-per-pop {} --purges {} --interval 20ms --warmup 500ms --loss {} \
             --loss-model {:?} --crashed {} --crash-during {} --seed {}",
            self.pops,
            self.per_pop,
            self.purges,
            self.loss,
            self.loss_model,
            self.crashed,
            self.crash_during,
            self.seed
        )
        .to_lowercase()
    }
}

/// Three PoPs 10 degrees apart on the equator, two machines each, no
/// jitter, loss or CPU cost: every completion time has a closed form.
pub fn line() -> Scenario {
    let cities =
        vec![City::new("west", "w", 0.0, 0.0), City::new("mid", "e", 0.0, 10.0), City::new("east", "e", 0.0, 20.0)];
    let topo = Topology::from_cities(&cities, 3, 2).unwrap();
    Scenario {
        workload: WorkloadParams { purges: 1, crashed: 0.0, ..WorkloadParams::default() },
        run: RunParams {
            net: NetParams { jitter: Jitter::None, loss: 0.0, ..NetParams::default() },
            proc: Duration::ZERO,
            ..RunParams::default()
        },
        config: Config::default(),
        core_pop: 1,
        topo,
    }
}
