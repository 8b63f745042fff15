//! Same seed, same bytes; another seed, another run.

mod common;

use common::Small;
use purgesim::net::LossModel;
use purgesim::report::{json, Echo};
use purgesim::scenario::{run_all, Scenario, Strategy};

fn echo(scn: &Scenario) -> Echo {
    Echo {
        seed: scn.run.seed,
        pops: scn.topo.pops.len(),
        machines_per_pop: scn.topo.pops[0].machines.len(),
        machines: scn.topo.len(),
        crashed: 0,
        crash_during: 0,
        purges: scn.workload.purges,
        interval_ms: 20.0,
        loss: scn.run.net.loss,
        loss_model: "quic".into(),
        jitter: "5%".into(),
        inflation: 1.5,
        proc_us: 20,
        send_us: 0,
        partitions: vec![],
        core_pop: String::new(),
        fanout: None,
        pop_entry: scn.config.pop_entry,
    }
}

fn run_json(scn: &Scenario, threads: usize) -> String {
    let out = run_all(scn, &Strategy::ALL, threads);
    let reports: Vec<_> = out.into_iter().map(|o| o.report).collect();
    json(&echo(scn), &reports).unwrap()
}

#[test]
fn same_seed_gives_identical_json_whatever_the_thread_count() {
    let small = Small {
        pops: 12,
        per_pop: 4,
        purges: 25,
        loss: 0.05,
        loss_model: LossModel::Quic,
        crashed: 0.1,
        crash_during: 0.05,
        seed: 42,
    };
    let scn = small.scenario();
    let a = run_json(&scn, 1);
    let b = run_json(&scn, 2);
    assert_eq!(a, b, "replay: {}", small.replay());
    assert!(a.contains("\"strategy\": \"topology\""));
    let other = Small { seed: 43, ..small }.scenario();
    assert_ne!(a, run_json(&other, 2), "a different seed must change the run");
}
