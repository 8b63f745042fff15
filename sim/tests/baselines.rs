//! On a toy line of three PoPs with no jitter, loss or CPU cost, every
//! strategy's completion time has a closed form.

mod common;

use purgecast_core::Time;
use purgesim::net::Net;
use purgesim::scenario::{run_strategy, Strategy};
use purgesim::workload::{PurgeSpec, Workload};

fn one_purge_from_machine_0(n: usize) -> Workload {
    Workload {
        purges: vec![PurgeSpec { origin: 0, at: Time::from_millis(1000) }],
        crashed: vec![false; n],
        crash_at: vec![None; n],
        restart_at: vec![None; n],
        bounces: Vec::new(),
    }
}

#[test]
fn completion_times_match_closed_forms() {
    let scn = common::line();
    let wl = one_purge_from_machine_0(scn.topo.len());
    let net = Net::new(&scn.topo, scn.run.net.clone(), 1);
    let ms = |us: u64| us as f64 / 1000.0;
    let (d01, d12, d02, intra) = (net.base_us(0, 1), net.base_us(1, 2), net.base_us(0, 2), net.base_us(0, 0));
    assert_eq!(intra, 200);
    assert!(d01 > 5_000 && d01 == d12, "{d01} {d12}");
    let completion = |s: Strategy| {
        let o = run_strategy(&scn, &wl, s);
        assert!(o.report.invariants.hold(), "{s:?}: {:?}", o.report.invariants);
        assert_eq!(o.report.delivery_ratio, 1.0);
        o.report.completion.max
    };
    // The origin reaches everyone itself: the farthest PoP.
    assert_eq!(completion(Strategy::Direct), ms(d02));
    // Origin -> core in the middle -> back west or on east.
    assert_eq!(completion(Strategy::Core), ms(d01 + d01.max(d12)));
    // Machine 0 is its region's hub; east's hub is the middle PoP (least
    // total distance), which hands the east PoP to its entry, which covers
    // the PoP's other machine.
    assert_eq!(completion(Strategy::Regional), ms(d01 + d12 + intra));
    // pop_entry >= PoP size: the origin reaches every machine directly.
    assert_eq!(completion(Strategy::Topology), ms(d02));
    // Flat gossip cannot beat the direct path.
    assert!(completion(Strategy::Gossip) >= ms(d02));
}
