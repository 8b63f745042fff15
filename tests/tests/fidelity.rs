//! The fidelity runner works: a small cluster really runs under the
//! simulator's latency matrix, and the runner's JSON parses. No upper
//! bounds on time; the comparison itself is in docs/sim.md.

use std::process::Command;

use purgecast_tests::fidelity::{Params, Plan};

#[test]
fn the_matrix_comes_from_purgesim_and_floors_follow_it() {
    let plan = Plan::new(Params { nodes: 4, purges: 3, rate: 10.0, seed: 1 }).unwrap();
    assert_eq!(plan.len(), 4);
    for a in 0..4 {
        for b in 0..4 {
            // Four PoPs spread over the world: every hop is tens of ms.
            assert!(a == b || plan.delay_ms(a, b) >= 10, "{a}->{b}: {} ms", plan.delay_ms(a, b));
            assert!(plan.shortest_us(a, b, true) <= plan.delay_ms(a, b) * 1000);
            assert!(plan.shortest_us(a, b, false) <= plan.one_way_us(a, b) || a == b);
        }
        assert!(plan.completion_floor_us(a, true) >= 20_000);
    }
    let rules = plan.rules(0, &["127.0.0.1:1".parse().unwrap(); 4]);
    assert_eq!(rules["rules"].as_array().unwrap().len(), 3);
}

#[test]
fn four_nodes_run_under_the_emulated_wan_and_report_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_fidelity"))
        .args(["--nodes", "4", "--purges", "5", "--rate", "10", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fidelity failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = Plan::new(Params { nodes: 4, purges: 5, rate: 10.0, seed: 1 }).unwrap();
    for side in ["real", "sim"] {
        let floor = (0..4).map(|o| plan.completion_floor_us(o, side == "real")).min().unwrap() as f64 / 1000.0;
        assert_eq!(v[side]["completion"]["n"], 5, "{side}: {v}");
        assert_eq!(v[side]["below_floor"], 0, "{side}: the delay was not applied: {v}");
        // Per purge the floor is its origin's; the median also clears the lowest one.
        let p50 = v[side]["completion"]["p50"].as_f64().unwrap();
        assert!(p50 >= floor, "{side}: {p50} ms < floor {floor} ms");
    }
    assert!(v["ratio"]["completion_p50"].as_f64().unwrap() > 0.0);
}
