//! Engines wired together in memory: delivery order, duplicates and loss
//! must not change what every node ends up applying.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use purgecast_core::testing::{member, Net};
use purgecast_core::{
    Config, Event, Member, MemberState, Message, Mode, OriginateError, PurgeId, Selector, Stage, Strategy,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One anti-entropy-sized hop: every round delivers what is in flight.
const ROUND: Duration = Duration::from_millis(600);

fn members(n: usize, pops: usize) -> Vec<Member> {
    (0..n).map(|i| member(i, i % pops, 0)).collect()
}

fn cfg(strategy: Strategy) -> Config {
    // Failure detection off the table here: loss must not kill members.
    Config {
        strategy,
        suspect_timeout: Duration::from_secs(3600),
        probe_interval: Duration::from_secs(3600),
        ..Config::default()
    }
}

fn originate_some(net: &mut Net, rng: &mut StdRng, purges: usize) -> BTreeSet<PurgeId> {
    let mut ids = BTreeSet::new();
    for k in 0..purges {
        let i = rng.random_range(0..net.len());
        let sel = vec![Selector::tag(&format!("t{k}")).unwrap()];
        ids.insert(net.originate(i, sel, Mode::Hard).unwrap().id);
    }
    ids
}

fn check_converged(net: &Net, ids: &BTreeSet<PurgeId>) {
    for i in 0..net.len() {
        for id in ids {
            assert_eq!(net.applied(i, *id), 1, "node {i} purge {id}: must apply exactly once");
        }
    }
}

#[test]
fn topology_fanout_reaches_everyone_without_loss_in_one_round() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut net = Net::new(members(30, 5), cfg(Strategy::Topology), 1);
    let ids = originate_some(&mut net, &mut rng, 5);
    net.run_for(3 * ROUND, ROUND);
    check_converged(&net, &ids);
}

#[test]
fn origin_learns_completion_from_acks() {
    let mut net = Net::new(members(8, 2), cfg(Strategy::Topology), 2);
    let p = net.originate(0, vec![Selector::Everything], Mode::Soft).unwrap();
    let before = net.engine(0).status(p.id).unwrap();
    assert_eq!(before.expected, 8);
    assert_eq!(before.applied.len(), 1, "only the origin itself so far");
    // Push to the PoP entry, on to its members, their acks to the entry,
    // the entry's batch to the origin: four hops.
    net.run_for(4 * ROUND, ROUND);
    let after = net.engine(0).status(p.id).unwrap();
    assert_eq!(after.applied.len(), 8);
    assert!(after.pending.is_empty());
    assert!(after.completed.is_some());
    let completions = net.take_events(0).into_iter().filter(|e| matches!(e, Event::PurgeComplete { .. })).count();
    assert_eq!(completions, 1);
}

#[test]
fn a_peer_sending_an_invalid_purge_is_rejected_not_applied() {
    let mut net = Net::new(members(2, 1), cfg(Strategy::Topology), 3);
    let mut p = net.originate(0, vec![Selector::Everything], Mode::Hard).unwrap();
    p.selectors = vec![Selector::Url("not a url".into())];
    net.inject(1, 0, Message::Push { purge: Arc::new(p.clone()), stage: Stage::PopLocal });
    assert_eq!(net.applied(1, p.id), 0);
    assert_eq!(net.engine(1).stats().rejected, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_order_duplicates_and_loss_converge(
        seed in any::<u64>(),
        n in 3usize..14,
        pops in 1usize..4,
        purges in 1usize..8,
        loss in 0.0f64..0.4,
        dup in 0.0f64..0.5,
        gossip in any::<bool>(),
    ) {
        let strategy = if gossip { Strategy::Gossip } else { Strategy::Topology };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut net = Net::new(members(n, pops), cfg(strategy), seed);
        net.set_shuffle(true);
        net.set_duplicates(dup);
        let ids = originate_some(&mut net, &mut rng, purges);
        // Lossy phase, then a clean phase in which anti-entropy must repair.
        net.set_loss(loss);
        net.run_for(5 * ROUND, ROUND);
        net.set_loss(0.0);
        net.run_for(40 * ROUND, ROUND);
        check_converged(&net, &ids);
        prop_assert_eq!((0..n).map(|i| net.flushes(i)).sum::<usize>(), 0);
    }
}

/// Fine-grained clock for failure detection: every message is delivered
/// within one 10 ms step, so only a member that never answers can be late.
#[test]
fn swim_declares_a_silent_member_dead_and_keeps_the_rest_alive() {
    let mut net = Net::new(members(6, 2), Config::default(), 9);
    let dead = 5;
    net.crash(dead);
    net.run_for(Duration::from_secs(10), Duration::from_millis(10));
    for i in 0..dead {
        for m in net.engine(i).members().iter() {
            let want = if m.id == net.id(dead) { MemberState::Dead } else { MemberState::Alive };
            assert_eq!(m.state, want, "node {i}'s view of {}", m.profile.name);
        }
    }
}

fn restarts(net: &mut Net, i: usize) -> Vec<purgecast_core::NodeId> {
    let events = net.take_events(i);
    events.into_iter().filter_map(|e| if let Event::MemberRestarted(m) = e { Some(m.id) } else { None }).collect()
}

/// The node drops its connections to a peer that restarted; the engine must
/// tell a new boot apart from first joins and ordinary incarnation bumps.
#[test]
fn a_new_boot_epoch_is_reported_as_a_restart() {
    let mut net = Net::joining(members(2, 1), cfg(Strategy::Topology), 4);
    net.run_for(3 * ROUND, ROUND);
    assert_eq!(net.engine(0).members().len(), 2, "joined through the seeds");
    assert!(restarts(&mut net, 0).is_empty(), "a first join is not a restart");
    // A refutation bumps the incarnation within the same boot.
    let b = net.engine(1).me().clone();
    net.inject(0, 1, Message::Members { members: vec![Member { incarnation: b.incarnation + 1, ..b }] });
    assert!(restarts(&mut net, 0).is_empty(), "a refutation is not a restart");
    net.crash(1);
    net.restart(1);
    net.run_for(3 * ROUND, ROUND);
    assert_eq!(restarts(&mut net, 0), vec![net.id(1)]);
}

/// A node with seeds refuses purges until a seed answers, knocks once a
/// second while alone, and stops knocking once joined.
#[test]
fn a_node_alone_with_seeds_refuses_purges_and_knocks_until_it_joins() {
    let mut net = Net::joining(members(3, 1), cfg(Strategy::Topology), 5);
    let refused = net.originate(0, vec![Selector::Everything], Mode::Hard);
    assert_eq!(refused.unwrap_err(), OriginateError::NotJoined);
    assert!(!net.engine(0).is_joined());
    // Every seed is cut off: the first knocks are lost, the node stays
    // alone, and only knocking again can get it in after the heal.
    net.partition(|i| i);
    net.run_for(Duration::from_secs(5), Duration::from_millis(100));
    assert_eq!(net.engine(0).members().len(), 1);
    net.heal();
    net.run_for(Duration::from_secs(2), Duration::from_millis(100));
    for i in 0..3 {
        assert_eq!(net.engine(i).members().len(), 3, "node {i} knows everyone");
        assert!(net.engine(i).is_joined());
    }
    let p = net.originate(0, vec![Selector::Everything], Mode::Hard).unwrap();
    net.run_for(3 * ROUND, ROUND);
    assert!((0..3).all(|i| net.applied(i, p.id) == 1));
}

/// A restarted node learns what it missed by anti-entropy; it reports being
/// caught up only once every purge its peer had is applied, and only once.
#[test]
fn a_restarted_node_is_caught_up_only_after_applying_what_it_missed() {
    let mut net = Net::joining(members(3, 1), cfg(Strategy::Topology), 9);
    net.run_for(3 * ROUND, ROUND);
    net.crash(2);
    let missed: Vec<PurgeId> = (0..5)
        .map(|k| net.originate(0, vec![Selector::tag(&format!("m{k}")).unwrap()], Mode::Hard).unwrap().id)
        .collect();
    net.run_for(ROUND, ROUND);
    net.take_events(2);
    net.restart(2);
    assert!(!net.engine(2).is_caught_up(), "a restart starts behind");
    let mut caught_up = 0;
    for _ in 0..50 {
        net.step(ROUND / 6);
        let events = net.take_events(2);
        if events.iter().any(|e| matches!(e, Event::CaughtUp { .. })) {
            caught_up += 1;
            for id in &missed {
                assert_eq!(net.applied(2, *id), 1, "caught up before applying {id}");
            }
        }
    }
    assert_eq!(caught_up, 1, "reported exactly once");
    assert!(net.engine(2).is_caught_up());
}

/// A purge a node stored but whose external cache has not confirmed it is
/// pending at its origin, also after that node restarts (its store has the
/// purge, so a plain restore would let the next digest credit it), and
/// done once the cache confirms.
#[test]
fn an_unconfirmed_apply_stays_pending_across_a_restart() {
    let mut net = Net::joining(members(3, 1), cfg(Strategy::Topology), 11);
    net.run_for(3 * ROUND, ROUND);
    net.hold_acks(2, true);
    let id = net.originate(0, vec![Selector::tag("held").unwrap()], Mode::Hard).unwrap().id;
    net.run_for(5 * ROUND, ROUND);
    let pending = |net: &Net| net.engine(0).status(id).map(|s| s.pending).unwrap_or_default();
    assert_eq!(net.applied(2, id), 1, "node 2 applied it to its store");
    assert_eq!(pending(&net), vec![net.id(2)], "but has not confirmed it");

    net.crash(2);
    net.run_for(ROUND, ROUND);
    net.restart(2);
    // Several anti-entropy periods: the origin asks node 2 for its digest.
    net.run_for(10 * ROUND, ROUND);
    assert_eq!(net.applied(2, id), 1, "a restored purge is not applied again");
    assert_eq!(pending(&net), vec![net.id(2)], "a digest must not credit an unconfirmed purge");
    assert!(!net.engine(2).is_caught_up(), "not caught up while an apply is unfinished");

    net.hold_acks(2, false);
    net.release_acks(2);
    net.run_for(3 * ROUND, ROUND);
    let status = net.engine(0).status(id).expect("tracked");
    assert!(status.pending.is_empty(), "confirmed: {:?}", status.pending);
    assert!(status.completed.is_some());
}
