//! Every live machine applies every purge exactly once, whatever the loss
//! and crashes, with anti-entropy repairing what the drop model loses.

mod common;

use common::Small;
use proptest::prelude::*;
use purgesim::net::LossModel;
use purgesim::scenario::{run_all, Strategy};

fn check(small: &Small) -> Result<(), TestCaseError> {
    let scn = small.scenario();
    for o in run_all(&scn, &[Strategy::Topology, Strategy::Gossip], 2) {
        let r = &o.report;
        let replay = small.replay();
        prop_assert_eq!(r.invariants.applied_twice, 0, "{} applied a purge twice; replay: {}", r.strategy, replay);
        prop_assert_eq!(r.invariants.missing, 0, "{} left purges undelivered; replay: {}", r.strategy, replay);
        prop_assert_eq!(r.delivery_ratio, 1.0);
        let c = o.engine.clone().unwrap_or_default();
        prop_assert_eq!(c.rejected, 0, "{} engines rejected messages; replay: {}", r.strategy, replay);
        prop_assert_eq!(c.unknown, 0);
    }
    Ok(())
}

#[test]
fn quic_loss_and_crashes_on_the_world_map() {
    let small = Small {
        pops: 20,
        per_pop: 5,
        purges: 40,
        loss: 0.05,
        loss_model: LossModel::Quic,
        crashed: 0.05,
        crash_during: 0.05,
        seed: 7,
    };
    check(&small).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn drop_loss_is_repaired_by_anti_entropy(
        pops in 4usize..10,
        per_pop in 3usize..7,
        loss in 0.0f64..0.25,
        crashed in 0.0f64..0.2,
        crash_during in 0.0f64..0.1,
        seed in any::<u64>(),
    ) {
        let small = Small { pops, per_pop, purges: 15, loss, loss_model: LossModel::Drop, crashed, crash_during, seed };
        check(&small)?;
    }
}

#[test]
fn swim_detects_machines_that_crash_during_the_run() {
    let small = Small {
        pops: 10,
        per_pop: 4,
        purges: 20,
        loss: 0.01,
        loss_model: LossModel::Quic,
        crashed: 0.0,
        crash_during: 0.1,
        seed: 3,
    };
    let mut scn = small.scenario();
    // Long enough after the last purge for probes, suspicion and death.
    scn.run.tail = std::time::Duration::from_secs(8);
    let o = purgesim::scenario::run_strategy(&scn, &scn.workload(), Strategy::Topology);
    assert!(o.report.invariants.hold(), "{:?}", o.report.invariants);
    let c = o.engine.unwrap_or_default();
    // 4 crashed machines, each declared dead in up to 35 other views.
    assert!(c.member_down >= 4 * 10, "only {} member-down events; replay: {}", c.member_down, small.replay());
}

#[test]
fn a_partitioned_region_catches_up_after_the_heal() {
    use purgesim::net::{CutDir, Partition};
    use std::time::Duration;
    let small = Small {
        pops: 24,
        per_pop: 3,
        purges: 100,
        loss: 0.01,
        loss_model: LossModel::Quic,
        crashed: 0.0,
        crash_during: 0.0,
        seed: 5,
    };
    let mut scn = small.scenario();
    // Purges run from 0.5 s to 2.5 s; Europe is cut off from 1 s to 5 s,
    // long enough for each side to declare the other dead.
    let p = Partition {
        region: "eu".into(),
        start: Duration::from_secs(1),
        duration: Duration::from_secs(4),
        dir: CutDir::Both,
    };
    scn.run.net.partitions = vec![p];
    for o in run_all(&scn, &[Strategy::Topology, Strategy::Gossip], 2) {
        let r = &o.report;
        assert!(r.invariants.hold(), "{}: {:?}", r.strategy, r.invariants);
        assert!(r.dropped > 0, "the partition must drop messages");
        let heal = r.heal_to_full_ms[0].expect("full delivery after the heal");
        assert!(heal > 0.0 && heal < 30_000.0, "{}: {heal} ms after the heal", r.strategy);
    }
}
