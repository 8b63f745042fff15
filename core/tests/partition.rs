//! A partition longer than SWIM's detection time: each side declares the
//! other dead. Found by `purgesim fuzz` (e.g. schedule seed
//! 3583974858498588681: two machines, cut for 12 s, never reconciled).
//! After the heal both sides must see each other alive again and exchange
//! the purges originated while cut.

use std::time::Duration;

use purgecast_core::testing::{member, Net};
use purgecast_core::{Config, MemberState, Mode, Selector};

const STEP: Duration = Duration::from_millis(10);

fn dead_views(net: &Net) -> usize {
    (0..net.len()).map(|i| net.engine(i).members().iter().filter(|m| m.state == MemberState::Dead).count()).sum()
}

#[test]
fn both_sides_of_a_long_partition_reconcile_after_the_heal() {
    let members = (0..4).map(|i| member(i, i % 2, i % 2)).collect();
    let mut net = Net::new(members, Config::default(), 42);
    net.run_for(Duration::from_secs(1), STEP);
    // Messages between the even and the odd nodes are lost.
    net.partition(|i| i % 2);
    net.run_for(Duration::from_secs(2), STEP);
    let mut purges = Vec::new();
    for i in [0, 1] {
        let sel = vec![Selector::tag(&format!("during-cut-{i}")).unwrap()];
        purges.push(net.originate(i, sel, Mode::Hard).unwrap().id);
    }
    net.run_for(Duration::from_secs(17), STEP);
    // Each node has declared both nodes of the other side dead.
    assert_eq!(dead_views(&net), 4 * 2, "the partition must outlast detection");
    net.heal();
    net.run_for(Duration::from_secs(10), STEP);
    assert_eq!(dead_views(&net), 0, "views still split 10 s after the heal");
    for i in 0..net.len() {
        for p in &purges {
            assert_eq!(net.applied(i, *p), 1, "node {i} and purge {p:?}");
        }
    }
}
