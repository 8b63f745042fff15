//! Membership: joins, news about members from any source (SWIM, joins,
//! leaves, anti-entropy knocks), and what the engine does when a member
//! comes up, goes down or restarts.

use std::collections::BTreeMap;

use rand::seq::IndexedRandom;

use super::{Engine, Event};
use crate::id::NodeId;
use crate::member::{Member, MemberState, Merge};
use crate::message::Message;
use crate::time::Time;

/// When each unreachable member went down (dead or left), so that one down
/// for `forget_dead_after` can be forgotten. Oldest first.
#[derive(Debug, Default)]
pub(super) struct Downs {
    since: BTreeMap<NodeId, Time>,
}

impl Downs {
    fn down(&mut self, id: NodeId, now: Time) {
        self.since.entry(id).or_insert(now);
    }

    fn up(&mut self, id: NodeId) {
        self.since.remove(&id);
    }

    /// Members down since before `cutoff`.
    fn due(&self, cutoff: Time) -> Vec<NodeId> {
        self.since.iter().filter(|(_, t)| **t <= cutoff).map(|(id, _)| *id).collect()
    }
}

impl Engine {
    pub(super) fn on_join(&mut self, now: Time, from: NodeId, member: Member) {
        if member.id != from {
            return self.reject(from, "join", "joins on behalf of another node".into());
        }
        self.members.heard_from(from);
        self.learn(now, member.clone());
        let all: Vec<Member> = self.members.iter().cloned().collect();
        self.send(from, Message::Members { members: all });
        let others: Vec<NodeId> =
            self.members.reachable().map(|m| m.id).filter(|n| *n != self.me.id && *n != from).collect();
        for id in others {
            self.send(id, Message::Members { members: vec![member.clone()] });
        }
    }

    /// Merges membership news from any source.
    pub(crate) fn learn(&mut self, now: Time, m: Member) {
        if m.id == self.me.id {
            // Someone thinks I am suspect or dead: refute with a higher
            // incarnation, which spreads with the next probes.
            if m.state != MemberState::Alive && self.me.state == MemberState::Alive {
                if m.incarnation >= self.me.incarnation {
                    self.me.incarnation = m.incarnation + 1;
                    self.members.merge(self.me.clone());
                }
                // Even when the news is older than my incarnation, peers may
                // not know that incarnation (they learnt of me from config,
                // at 0): spread my record, which supersedes the news.
                let me = self.me.clone();
                let n = self.members.len();
                self.swim.gossip(now, me, n);
            }
            return;
        }
        let prev = self.members.get(m.id).map(|x| x.state);
        // News that a member I do not know (never did, or forgot) is dead
        // or gone tells me nothing to act on; taking it would bring a
        // forgotten member back to be knocked on, each time a node that has
        // not forgotten it yet passes the news on. Only a member that is
        // up again is learned again (memberlist does the same).
        if prev.is_none() && !m.state.is_reachable() {
            return;
        }
        let prev_boot = self.members.get(m.id).map(Member::boot);
        let moved = self.members.get(m.id).is_none_or(|x| x.profile.location != m.profile.location);
        match self.members.merge(m.clone()) {
            Merge::Stale => return,
            Merge::New | Merge::Changed(_) => {}
        }
        // Suspicions come and go all the time in a large cluster; the peer
        // caches only depend on who is reachable and where.
        if moved || prev.map(MemberState::is_reachable) != Some(m.state.is_reachable()) {
            self.targets.invalidate();
        }
        let n = self.members.len();
        self.swim.gossip(now, m.clone(), n);
        if prev_boot.is_some_and(|b| m.boot() > b) {
            self.event(Event::MemberRestarted(m.clone()));
        }
        let was_up = prev.is_some_and(MemberState::is_reachable);
        let is_up = m.state.is_reachable();
        if is_up {
            self.downs.up(m.id);
        } else {
            self.downs.down(m.id, now);
        }
        if is_up && !was_up {
            self.event(Event::MemberUp(m));
        } else if !is_up && was_up {
            let state = m.state;
            self.event(Event::MemberDown { member: m, state });
            for (id, after) in self.tracker.recheck(now, &self.members) {
                self.stats.completed += 1;
                self.event(Event::PurgeComplete { id, after });
            }
        }
    }

    /// After a partition longer than SWIM's detection time, each side
    /// believes the other dead and, since nothing is sent to dead members,
    /// would stay split for good. So each round one random dead member is
    /// told how I see it and me (Serf's reconnect, at anti-entropy pace):
    /// if it is alive it refutes straight back (see `Members` above), and
    /// its own reconnect revives me on its side.
    pub(super) fn reconnect(&mut self) {
        let Some(&id) = self.targets.dead(&self.members).choose(&mut self.rng) else { return };
        // The cache survives a dead member leaving for good.
        let Some(target) = self.members.get(id).filter(|m| m.state == MemberState::Dead).cloned() else { return };
        self.send(id, Message::Members { members: vec![self.me.clone(), target] });
    }

    /// Drops members down for `forget_dead_after` from the table: nothing
    /// knocks on them any more. A member that was only cut off and comes
    /// back is learned again from its own knocks or join, as news that it
    /// is alive.
    pub(super) fn forget_dead(&mut self, now: Time) {
        // Members known dead from the start (configuration) never went down
        // here: their time starts now.
        if self.members.len() - self.members.reachable_count() > self.downs.since.len() {
            for m in self.members.iter().filter(|m| !m.state.is_reachable()) {
                self.downs.down(m.id, now);
            }
        }
        if now.since(Time::ZERO) < self.cfg.forget_dead_after {
            return;
        }
        let cutoff = now - self.cfg.forget_dead_after;
        for id in self.downs.due(cutoff) {
            self.downs.up(id);
            if self.members.get(id).is_some_and(|m| !m.state.is_reachable()) {
                self.members.forget(id);
                self.swim.forget(id);
                self.targets.invalidate();
                self.stats.forgotten += 1;
            }
        }
    }

    /// Announces a graceful leave to every reachable member.
    pub fn leave(&mut self) {
        self.me.state = MemberState::Left;
        self.me.incarnation += 1;
        let me = self.me.clone();
        let peers: Vec<NodeId> = self.members.reachable().map(|m| m.id).filter(|n| *n != self.me.id).collect();
        for id in peers {
            self.send(id, Message::Leave { member: me.clone() });
        }
    }

    pub(super) fn swim_input(&mut self, input: crate::swim::Input) {
        let mut fx = crate::swim::Effects::default();
        self.swim.handle(input, &self.members, &mut fx);
        self.swim_effects(fx);
    }

    pub(super) fn swim_tick(&mut self, now: Time) {
        let mut fx = crate::swim::Effects::default();
        self.swim.tick(now, &self.me, &self.members, &mut self.rng, &mut fx);
        self.swim_effects(fx);
    }

    fn swim_effects(&mut self, fx: crate::swim::Effects) {
        for (to, msg) in fx.send {
            self.send(to, msg);
        }
        for (now, m) in fx.learned {
            self.learn(now, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::engine::{Engine, Output};
    use crate::id::NodeId;
    use crate::member::{Member, MemberState};
    use crate::message::Message;
    use crate::time::Time;
    use crate::Config;

    /// A test network's member (`core::testing`), in one PoP.
    fn member(i: u64) -> Member {
        crate::testing::member(i as usize, 0, 0)
    }

    fn sends_to(e: &mut Engine, id: NodeId) -> usize {
        std::iter::from_fn(|| e.poll_output()).filter(|o| matches!(o, Output::Send { to, .. } if *to == id)).count()
    }

    /// Runs `e`'s timers from `from` to `to`, 100 ms apart; how many
    /// messages went to `id`.
    fn tick(e: &mut Engine, from: Duration, to: Duration, id: NodeId) -> usize {
        let mut n = 0;
        let mut t = from;
        while t <= to {
            e.handle_timeout(Time::ZERO + t);
            n += sends_to(e, id);
            t += Duration::from_millis(100);
        }
        n
    }

    #[test]
    fn a_dead_member_is_knocked_on_then_forgotten_and_learned_again_when_it_comes_back() {
        let cfg = Config { forget_dead_after: Duration::from_secs(10), ..Config::default() };
        let (a, b, c) = (member(1), member(2), member(3));
        // c only passes news on: kept out of the table, where nobody would
        // answer its probes and it would die and be forgotten too.
        let mut e = Engine::new(cfg, a.clone(), 1, 7, Time::ZERO);
        let dead = Member { state: MemberState::Dead, incarnation: 5, ..b.clone() };
        e.handle_message(Time::ZERO, c.id, Message::Members { members: vec![dead.clone()] });
        assert!(e.members().get(b.id).is_none(), "news of an unknown member's death is not learned");
        e.add_member(dead.clone());

        let knocks = tick(&mut e, Duration::ZERO, Duration::from_secs(9), b.id);
        assert!(knocks > 0, "a dead member is knocked on (it may be alive behind a partition)");
        assert!(e.members().get(b.id).is_some());
        tick(&mut e, Duration::from_secs(9), Duration::from_secs(21), b.id);
        assert!(e.members().get(b.id).is_none(), "forgotten after forget_dead_after");
        assert_eq!(e.stats().forgotten, 1);
        assert_eq!(tick(&mut e, Duration::from_secs(21), Duration::from_secs(40), b.id), 0, "and no longer knocked on");

        // Stale news, still in flight, of its death or of it alive before
        // it died, does not bring it back.
        let now = Time::ZERO + Duration::from_secs(41);
        let before = Member { state: MemberState::Alive, ..dead.clone() };
        e.handle_message(now, c.id, Message::Members { members: vec![dead, before] });
        assert!(e.members().get(b.id).is_none());

        // It comes back (a new boot epoch) and joins: learned again, and
        // told who is there.
        let back = Member { incarnation: 2 << crate::member::EPOCH_SHIFT, ..b.clone() };
        e.handle_message(now, b.id, Message::Join { member: back });
        assert!(e.members().get(b.id).is_some_and(|m| m.state == MemberState::Alive));
        assert!(sends_to(&mut e, b.id) > 0, "the join is answered");
    }

    #[test]
    fn a_forgotten_member_that_knocks_is_learned_again() {
        // The other way back: b was only cut off, still knows a (as dead)
        // and knocks on it with its reconnect message.
        let cfg = Config { forget_dead_after: Duration::from_secs(1), ..Config::default() };
        let (a, b) = (member(1), member(2));
        let mut e = Engine::new(cfg, a.clone(), 1, 7, Time::ZERO);
        e.add_member(Member { state: MemberState::Dead, incarnation: 3, ..b.clone() });
        tick(&mut e, Duration::ZERO, Duration::from_secs(3), b.id);
        assert!(e.members().get(b.id).is_none());
        // At the incarnation it was declared dead at: it never heard of its
        // death. Stale from anyone else, but it speaks for itself.
        let knock = vec![Member { incarnation: 3, ..b.clone() }, Member { state: MemberState::Dead, ..a.clone() }];
        e.handle_message(Time::ZERO + Duration::from_secs(4), b.id, Message::Members { members: knock });
        assert!(e.members().get(b.id).is_some_and(|m| m.state == MemberState::Alive));
        assert!(sends_to(&mut e, b.id) > 0, "and my refutation goes straight back");
    }
}
