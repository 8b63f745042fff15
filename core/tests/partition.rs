//! A partition longer than SWIM's detection time: each side declares the
//! other dead. Found by `purgesim fuzz` (e.g. schedule seed
//! 3583974858498588681: two machines, cut for 12 s, never reconciled).
//! After the heal both sides must see each other alive again and exchange
//! the purges originated while cut.

use std::time::Duration;

use purgecast_core::{
    Config, Engine, Location, Member, MemberState, Message, Mode, NodeId, Output, Profile, Selector, Time,
};

fn member(i: usize) -> Member {
    let profile = Profile {
        name: format!("n{i}"),
        location: Location { pop: format!("p{}", i % 2), region: format!("r{}", i % 2) },
        ..Profile::default()
    };
    Member::new(NodeId::from_name(&profile.name), profile)
}

struct Cluster {
    engines: Vec<Engine>,
    /// (to, from, message), delivered at the next step.
    inflight: Vec<(usize, usize, Message)>,
    applied: Vec<Vec<purgecast_core::PurgeId>>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let members: Vec<Member> = (0..n).map(member).collect();
        let engines = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut e = Engine::new(Config::default(), m.clone(), 1, 42 + i as u64, Time::ZERO);
                for o in &members {
                    e.add_member(o.clone());
                }
                e
            })
            .collect();
        Cluster { engines, inflight: Vec::new(), applied: vec![Vec::new(); n] }
    }

    fn index(&self, id: NodeId) -> Option<usize> {
        self.engines.iter().position(|e| e.id() == id)
    }

    fn drain(&mut self, i: usize, now: Time) {
        while let Some(out) = self.engines[i].poll_output() {
            match out {
                Output::Send { to, msg } => {
                    if let Some(j) = self.index(to) {
                        self.inflight.push((j, i, msg));
                    }
                }
                Output::Apply { purge } => {
                    self.applied[i].push(purge.id);
                    self.engines[i].applied(now, purge.id, purge.origin());
                }
                _ => {}
            }
        }
    }

    /// Runs in 10 ms steps; while `cut`, messages between the even and the
    /// odd nodes are lost.
    fn run(&mut self, from: Time, to: Time, cut: bool) {
        let mut now = from;
        while now < to {
            for (t, f, msg) in std::mem::take(&mut self.inflight) {
                if cut && t % 2 != f % 2 {
                    continue;
                }
                let from_id = self.engines[f].id();
                self.engines[t].handle_message(now, from_id, msg);
                self.drain(t, now);
            }
            for i in 0..self.engines.len() {
                if self.engines[i].poll_timeout().is_some_and(|t| t <= now) {
                    self.engines[i].handle_timeout(now);
                    self.drain(i, now);
                }
            }
            now = now + Duration::from_millis(10);
        }
    }

    fn dead_views(&self) -> usize {
        self.engines.iter().map(|e| e.members().iter().filter(|m| m.state == MemberState::Dead).count()).sum()
    }
}

#[test]
fn both_sides_of_a_long_partition_reconcile_after_the_heal() {
    let mut c = Cluster::new(4);
    c.run(Time::ZERO, Time::from_millis(1_000), false);
    c.run(Time::from_millis(1_000), Time::from_millis(3_000), true);
    let mut purges = Vec::new();
    for i in [0, 1] {
        let sel = vec![Selector::tag(&format!("during-cut-{i}")).unwrap()];
        purges.push(c.engines[i].originate(Time::from_millis(3_000), sel, Mode::Hard, 0).unwrap().id);
        c.drain(i, Time::from_millis(3_000));
    }
    c.run(Time::from_millis(3_000), Time::from_millis(20_000), true);
    // Each node has declared both nodes of the other side dead.
    assert_eq!(c.dead_views(), 4 * 2, "the partition must outlast detection");
    c.run(Time::from_millis(20_000), Time::from_millis(30_000), false);
    assert_eq!(c.dead_views(), 0, "views still split 10 s after the heal");
    for (i, applied) in c.applied.iter().enumerate() {
        for p in &purges {
            assert_eq!(applied.iter().filter(|x| *x == p).count(), 1, "node {i} and purge {p:?}");
        }
    }
}
