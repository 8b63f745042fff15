//! SWIM failure detection: one probe per period, indirect probes through
//! helpers when the direct ack is late, suspicion before death, and
//! membership news piggybacked on probe traffic.
//!
//! Kept apart from the engine so it can be read (and tested) on its own;
//! the engine owns the member table and merges what this module learns.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use crate::config::Config;
use crate::id::NodeId;
use crate::member::{Member, MemberState, Members};
use crate::message::Message;
use crate::time::Time;

pub struct Input {
    pub now: Time,
    pub from: NodeId,
    pub msg: Message,
}

#[derive(Default)]
pub struct Effects {
    pub send: Vec<(NodeId, Message)>,
    pub learned: Vec<(Time, Member)>,
}

struct Probe {
    target: NodeId,
    id: u64,
    deadline: Time,
    indirect: bool,
}

pub struct Swim {
    probe_interval: Duration,
    probe_timeout: Duration,
    helpers: usize,
    suspect_timeout: Duration,
    piggyback_max: usize,
    next_probe: Time,
    next_id: u64,
    probe: Option<Probe>,
    /// Probes we relay for others: our probe id -> (requester, their id, expiry).
    relays: BTreeMap<u64, (NodeId, u64, Time)>,
    /// Suspects: id -> (incarnation suspected, when it turns dead).
    suspects: BTreeMap<NodeId, (u64, Time)>,
    /// News to piggyback, each with how many more times to send it.
    news: VecDeque<(Member, u32)>,
    order: Vec<NodeId>,
}

impl Swim {
    pub fn new(cfg: &Config, now: Time, rng: &mut StdRng) -> Swim {
        let first = rng.random_range(0..=cfg.probe_interval.as_micros().max(1) as u64);
        Swim {
            probe_interval: cfg.probe_interval,
            probe_timeout: cfg.probe_timeout,
            helpers: cfg.probe_helpers,
            suspect_timeout: cfg.suspect_timeout,
            piggyback_max: cfg.piggyback_max,
            next_probe: now + Duration::from_micros(first),
            next_id: rng.random(),
            probe: None,
            relays: BTreeMap::new(),
            suspects: BTreeMap::new(),
            news: VecDeque::new(),
            order: Vec::new(),
        }
    }

    pub fn next_timeout(&self) -> Time {
        // The next probe waits for the one in flight (see `tick`).
        let mut t = self.probe.as_ref().map_or(self.next_probe, |p| p.deadline);
        if let Some((_, at)) = self.suspects.values().min_by_key(|(_, at)| *at) {
            t = t.min(*at);
        }
        t
    }

    /// Queues news about a member for piggybacking, and starts the
    /// suspicion timer of a new suspect.
    pub fn gossip(&mut self, now: Time, m: Member, cluster: usize) {
        match m.state {
            MemberState::Suspect => {
                self.suspects.entry(m.id).or_insert((m.incarnation, now + self.suspect_timeout));
            }
            _ => {
                self.suspects.remove(&m.id);
            }
        }
        // λ·log2(n) retransmissions: enough to reach everyone w.h.p.
        let times = 3 * (usize::BITS - cluster.max(2).leading_zeros());
        self.news.retain(|(x, _)| x.id != m.id);
        self.news.push_back((m, times));
    }

    /// Drops what is queued about a member the engine forgot.
    pub fn forget(&mut self, id: NodeId) {
        self.news.retain(|(m, _)| m.id != id);
        self.suspects.remove(&id);
        self.order.retain(|x| *x != id);
    }

    fn updates(&mut self) -> Vec<Member> {
        let mut out = Vec::new();
        let n = self.news.len().min(self.piggyback_max);
        for _ in 0..n {
            if let Some((m, left)) = self.news.pop_front() {
                out.push(m.clone());
                if left > 1 {
                    self.news.push_back((m, left - 1));
                }
            }
        }
        out
    }

    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    pub fn handle(&mut self, input: Input, members: &Members, fx: &mut Effects) {
        let Input { now, from, msg } = input;
        match msg {
            Message::Ping { probe, updates } => {
                fx.learned.extend(updates.into_iter().map(|m| (now, m)));
                let updates = self.updates();
                fx.send.push((from, Message::PingAck { probe, updates }));
            }
            Message::PingAck { probe, updates } => {
                fx.learned.extend(updates.into_iter().map(|m| (now, m)));
                if self.probe.as_ref().is_some_and(|p| p.id == probe) {
                    self.probe = None;
                }
                if let Some((requester, their, _)) = self.relays.remove(&probe) {
                    let updates = self.updates();
                    fx.send.push((requester, Message::PingAck { probe: their, updates }));
                }
            }
            Message::PingReq { probe, target, updates } => {
                fx.learned.extend(updates.into_iter().map(|m| (now, m)));
                if members.get(target).is_some() {
                    let id = self.next_id();
                    self.relays.insert(id, (from, probe, now + self.probe_interval));
                    let updates = self.updates();
                    fx.send.push((target, Message::Ping { probe: id, updates }));
                }
            }
            _ => {}
        }
    }

    pub fn tick(&mut self, now: Time, me: &Member, members: &Members, rng: &mut StdRng, fx: &mut Effects) {
        self.relays.retain(|_, (_, _, exp)| *exp > now);
        self.check_probe(now, me.id, members, rng, fx);
        self.check_suspects(now, members, fx);
        // A probe still waiting on helpers finishes first: replacing it
        // would drop its verdict, and a dead member would never be
        // suspected whenever the indirect phase outlasts the period.
        if now >= self.next_probe && self.probe.is_none() {
            self.next_probe = now + self.probe_interval;
            self.start_probe(now, me, members, rng, fx);
        }
    }

    fn check_probe(&mut self, now: Time, me: NodeId, members: &Members, rng: &mut StdRng, fx: &mut Effects) {
        let Some(p) = &mut self.probe else { return };
        if now < p.deadline {
            return;
        }
        let target = p.target;
        if !p.indirect {
            // Direct ack is late: ask helpers to probe for us.
            p.indirect = true;
            p.deadline = now + self.probe_interval.saturating_sub(self.probe_timeout).max(self.probe_timeout);
            let id = p.id;
            let helpers: Vec<NodeId> = members.reachable().map(|m| m.id).filter(|n| *n != target && *n != me).collect();
            let chosen: Vec<NodeId> = helpers.choose_multiple(rng, self.helpers).copied().collect();
            for h in chosen {
                let updates = self.updates();
                fx.send.push((h, Message::PingReq { probe: id, target, updates }));
            }
            return;
        }
        self.probe = None;
        if let Some(m) = members.get(target) {
            if m.state == MemberState::Alive {
                fx.learned.push((now, Member { state: MemberState::Suspect, ..m.clone() }));
            }
        }
    }

    fn check_suspects(&mut self, now: Time, members: &Members, fx: &mut Effects) {
        let due: Vec<(NodeId, u64)> =
            self.suspects.iter().filter(|(_, (_, at))| *at <= now).map(|(id, (inc, _))| (*id, *inc)).collect();
        for (id, inc) in due {
            self.suspects.remove(&id);
            if let Some(m) = members.get(id) {
                if m.state == MemberState::Suspect && m.incarnation == inc {
                    fx.learned.push((now, Member { state: MemberState::Dead, ..m.clone() }));
                }
            }
        }
    }

    fn start_probe(&mut self, now: Time, me: &Member, members: &Members, rng: &mut StdRng, fx: &mut Effects) {
        // Round-robin over a shuffled order bounds the time to first probe
        // of a failed member (SWIM's "time-bounded completeness").
        let target = loop {
            match self.order.pop() {
                Some(id) if id != me.id && members.get(id).is_some_and(|m| m.state.is_reachable()) => break Some(id),
                Some(_) => continue,
                None => {
                    self.order = members.reachable().map(|m| m.id).filter(|id| *id != me.id).collect();
                    if self.order.is_empty() {
                        break None;
                    }
                    self.order.shuffle(rng);
                }
            }
        };
        let Some(target) = target else { return };
        let id = self.next_id();
        self.probe = Some(Probe { target, id, deadline: now + self.probe_timeout, indirect: false });
        let updates = self.updates();
        fx.send.push((target, Message::Ping { probe: id, updates }));
    }
}
