//! Engines wired together in memory: delivery order, duplicates and loss
//! must not change what every node ends up applying.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use purgecast_core::{
    Config, Engine, Location, Member, MemberState, Message, Mode, NodeId, Output, Profile, PurgeId, Selector, Strategy,
    Time,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Net {
    engines: Vec<Engine>,
    /// (node index, purge) -> times applied.
    applied: BTreeMap<(usize, PurgeId), u32>,
    inflight: Vec<(usize, NodeId, Message)>,
    index: BTreeMap<NodeId, usize>,
    flushes: usize,
}

fn member(i: usize, pops: usize) -> Member {
    let profile = Profile {
        name: format!("n{i}"),
        peer_addr: format!("127.0.0.1:{}", 7000 + i),
        api_addr: String::new(),
        location: Location { pop: format!("p{}", i % pops), region: "r".into() },
    };
    Member::new(NodeId::from_name(&profile.name), profile)
}

impl Net {
    fn new(n: usize, pops: usize, cfg: &Config, seed: u64) -> Net {
        let members: Vec<Member> = (0..n).map(|i| member(i, pops)).collect();
        let mut engines = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let mut e = Engine::new(cfg.clone(), m.clone(), 1, seed ^ (i as u64 * 7919), Time::ZERO);
            for other in &members {
                e.add_member(other.clone());
            }
            engines.push(e);
        }
        let index = members.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        Net { engines, applied: BTreeMap::new(), inflight: Vec::new(), index, flushes: 0 }
    }

    fn drain(&mut self, i: usize, now: Time) {
        while let Some(out) = self.engines[i].poll_output() {
            match out {
                Output::Send { to, msg } => {
                    if let Some(&j) = self.index.get(&to) {
                        self.inflight.push((j, self.engines[i].id(), msg));
                    }
                }
                Output::Apply { purge } => {
                    *self.applied.entry((i, purge.id)).or_default() += 1;
                    self.engines[i].applied(now, purge.id, purge.origin());
                }
                Output::Flush { .. } => self.flushes += 1,
                Output::Event(_) => {}
            }
        }
    }

    /// Delivers in-flight messages in random order, dropping a fraction and
    /// duplicating some, with anti-entropy rounds in between.
    fn run(&mut self, rng: &mut StdRng, loss: f64, dup: f64, rounds: usize) {
        let mut now = Time::ZERO;
        for _ in 0..rounds {
            let mut batch = std::mem::take(&mut self.inflight);
            // Fisher-Yates with our RNG: arbitrary interleavings.
            for k in (1..batch.len()).rev() {
                batch.swap(k, rng.random_range(0..=k));
            }
            for (to, from, msg) in batch {
                if rng.random_bool(loss) {
                    continue;
                }
                let copies = if rng.random_bool(dup) { 2 } else { 1 };
                for _ in 0..copies {
                    self.engines[to].handle_message(now, from, msg.clone());
                    self.drain(to, now);
                }
            }
            now = now + Duration::from_millis(600);
            for i in 0..self.engines.len() {
                self.engines[i].handle_timeout(now);
                self.drain(i, now);
            }
        }
    }
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
        let i = rng.random_range(0..net.engines.len());
        let sel = vec![Selector::tag(&format!("t{k}")).unwrap()];
        let p = net.engines[i].originate(Time::ZERO, sel, Mode::Hard, 0).unwrap();
        ids.insert(p.id);
        net.drain(i, Time::ZERO);
    }
    ids
}

fn check_converged(net: &Net, ids: &BTreeSet<PurgeId>) {
    for i in 0..net.engines.len() {
        for id in ids {
            assert_eq!(net.applied.get(&(i, *id)), Some(&1), "node {i} purge {id}: must apply exactly once");
        }
    }
}

#[test]
fn topology_fanout_reaches_everyone_without_loss_in_one_round() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut net = Net::new(30, 5, &cfg(Strategy::Topology), 1);
    let ids = originate_some(&mut net, &mut rng, 5);
    net.run(&mut rng, 0.0, 0.0, 3);
    check_converged(&net, &ids);
}

#[test]
fn origin_learns_completion_from_acks() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut net = Net::new(8, 2, &cfg(Strategy::Topology), 2);
    let p = net.engines[0].originate(Time::ZERO, vec![Selector::Everything], Mode::Soft, 0).unwrap();
    net.drain(0, Time::ZERO);
    let before = net.engines[0].status(p.id).unwrap();
    assert_eq!(before.expected, 8);
    assert_eq!(before.applied.len(), 1, "only the origin itself so far");
    net.run(&mut rng, 0.0, 0.0, 3);
    let after = net.engines[0].status(p.id).unwrap();
    assert_eq!(after.applied.len(), 8);
    assert!(after.pending.is_empty());
    assert!(after.completed.is_some());
}

#[test]
fn a_peer_sending_an_invalid_purge_is_rejected_not_applied() {
    let mut net = Net::new(2, 1, &cfg(Strategy::Topology), 3);
    let mut rng = StdRng::seed_from_u64(3);
    let mut p = net.engines[0].originate(Time::ZERO, vec![Selector::Everything], Mode::Hard, 0).unwrap();
    p.selectors = vec![Selector::Url("not a url".into())];
    let from = net.engines[0].id();
    net.engines[1].handle_message(
        Time::ZERO,
        from,
        Message::Push { purge: std::sync::Arc::new(p.clone()), stage: purgecast_core::Stage::PopLocal },
    );
    net.drain(1, Time::ZERO);
    assert_eq!(net.applied.get(&(1, p.id)), None);
    assert_eq!(net.engines[1].stats().rejected, 1);
    let _ = &mut rng;
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
        let mut net = Net::new(n, pops, &cfg(strategy), seed);
        let ids = originate_some(&mut net, &mut rng, purges);
        // Lossy phase, then a clean phase in which anti-entropy must repair.
        net.run(&mut rng, loss, dup, 5);
        net.run(&mut rng, 0.0, dup, 40);
        check_converged(&net, &ids);
        prop_assert_eq!(net.flushes, 0);
    }
}

/// Fine-grained clock for failure detection: every message is delivered
/// within one 10 ms step, so only a member that never answers can be late.
#[test]
fn swim_declares_a_silent_member_dead_and_keeps_the_rest_alive() {
    let config = Config::default();
    let mut net = Net::new(6, 2, &config, 9);
    let dead = 5;
    let dead_id = net.engines[dead].id();
    let mut now = Time::ZERO;
    for _ in 0..1000 {
        now = now + Duration::from_millis(10);
        for i in 0..net.engines.len() {
            if i != dead {
                net.engines[i].handle_timeout(now);
                net.drain(i, now);
            }
        }
        let batch = std::mem::take(&mut net.inflight);
        for (to, from, msg) in batch {
            if to != dead {
                net.engines[to].handle_message(now, from, msg);
                net.drain(to, now);
            }
        }
    }
    for i in 0..dead {
        let e = &net.engines[i];
        for m in e.members().iter() {
            let want = if m.id == dead_id { MemberState::Dead } else { MemberState::Alive };
            assert_eq!(m.state, want, "node {i}'s view of {}", m.profile.name);
        }
    }
}

fn restarts(e: &mut Engine) -> Vec<NodeId> {
    let mut out = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::Event(purgecast_core::Event::MemberRestarted(m)) = o {
            out.push(m.id);
        }
    }
    out
}

/// The node drops its connections to a peer that restarted; the engine must
/// tell a new boot apart from ordinary incarnation bumps.
#[test]
fn a_new_boot_epoch_is_reported_as_a_restart() {
    let c = cfg(Strategy::Topology);
    let (a, b) = (member(0, 1), member(1, 1));
    let mut ea = Engine::new(c.clone(), a.clone(), 1, 1, Time::ZERO);
    let b1 = Engine::new(c.clone(), b.clone(), 1, 2, Time::ZERO);
    ea.handle_message(Time::ZERO, b.id, b1.join_message());
    assert!(restarts(&mut ea).is_empty(), "a first join is not a restart");
    // A refutation bumps the incarnation within the same boot.
    let bumped = Member { incarnation: b1.me().incarnation + 1, ..b1.me().clone() };
    ea.handle_message(Time::ZERO, b.id, Message::Members { members: vec![bumped] });
    assert!(restarts(&mut ea).is_empty(), "a refutation is not a restart");
    let b2 = Engine::new(c, b.clone(), 2, 3, Time::ZERO);
    ea.handle_message(Time::ZERO, b.id, b2.join_message());
    assert_eq!(restarts(&mut ea), vec![b.id]);
}
