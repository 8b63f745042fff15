//! A deterministic in-memory network of engines, for tests (cargo feature
//! `testing`): the one place that drains outputs, delivers messages and
//! fires timers, with loss, duplication, reordering, partitions, crashes,
//! restarts and a clock that only moves when told.
//!
//! Each step delivers every message sent before it, then advances the
//! clock and fires the timers that are due. Messages sent during a step
//! wait for the next one, so a step is one network hop. Node `i` is known
//! to the others by its member's id and to a restarted node as seed `i`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::engine::{ApplyTicket, Engine, Event, OriginateError, Output};
use crate::hash::mix64;
use crate::id::{NodeId, PurgeId};
use crate::member::{Location, Member, Profile};
use crate::message::Message;
use crate::purge::{Mode, Purge};
use crate::selector::Selector;
use crate::time::Time;

/// A member for node `i` of a test network: named `n{i}`, with a distinct
/// loopback address, in PoP `p{pop}` of region `r{region}`.
pub fn member(i: usize, pop: usize, region: usize) -> Member {
    let profile = Profile {
        name: format!("n{i}"),
        peer_addr: format!("127.0.0.1:{}", 7000 + i),
        api_addr: String::new(),
        location: Location { pop: format!("p{pop}"), region: format!("r{region}") },
    };
    Member::new(NodeId::from_name(&profile.name), profile)
}

struct Node {
    member: Member,
    engine: Engine,
    up: bool,
    epoch: u64,
    /// What the node applied, in order, as its store would keep it.
    store: Vec<Arc<Purge>>,
    applies: BTreeMap<PurgeId, u32>,
    flushes: usize,
    events: Vec<Event>,
    /// While set, applies are stored but not acked, as when an external
    /// cache has not confirmed them yet (see [`Net::hold_acks`]).
    holding: bool,
    /// Tickets of purges stored but not confirmed, oldest first.
    held: Vec<ApplyTicket>,
    /// Messages handled, by kind ([`Message::kind`]).
    received: BTreeMap<&'static str, u64>,
}

struct Envelope {
    to: usize,
    from: usize,
    msg: Message,
}

/// The network: engines, the messages between them, and the clock.
pub struct Net {
    nodes: Vec<Node>,
    index: BTreeMap<NodeId, usize>,
    addrs: Vec<String>,
    inflight: Vec<Envelope>,
    now: Time,
    cfg: Config,
    seed: u64,
    rng: StdRng,
    loss: f64,
    dup: f64,
    shuffle: bool,
    /// Side of each node while partitioned: messages between sides are lost.
    sides: Option<Vec<usize>>,
}

impl Net {
    /// Every engine starts knowing every member (as from configuration),
    /// with no seeds.
    pub fn new(members: Vec<Member>, cfg: Config, seed: u64) -> Net {
        let mut net = Net::empty(members, cfg, seed);
        let members: Vec<Member> = net.nodes.iter().map(|n| n.member.clone()).collect();
        for node in &mut net.nodes {
            for m in &members {
                node.engine.add_member(m.clone());
            }
        }
        net
    }

    /// Every engine starts alone, with every node's address as its seeds:
    /// the cluster forms through joins.
    pub fn joining(members: Vec<Member>, cfg: Config, seed: u64) -> Net {
        let mut net = Net::empty(members, cfg, seed);
        for i in 0..net.nodes.len() {
            net.nodes[i].engine.set_seeds(net.now, &net.addrs);
            net.drain(i);
        }
        net
    }

    fn empty(members: Vec<Member>, cfg: Config, seed: u64) -> Net {
        let nodes: Vec<Node> = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| Node {
                engine: Engine::new(cfg.clone(), m.clone(), 1, mix64(seed ^ i as u64), Time::ZERO),
                member: m,
                up: true,
                epoch: 1,
                store: Vec::new(),
                applies: BTreeMap::new(),
                flushes: 0,
                events: Vec::new(),
                holding: false,
                held: Vec::new(),
                received: BTreeMap::new(),
            })
            .collect();
        let index = nodes.iter().enumerate().map(|(i, n)| (n.member.id, i)).collect();
        let addrs = nodes.iter().map(|n| n.member.profile.peer_addr.clone()).collect();
        Net {
            nodes,
            index,
            addrs,
            inflight: Vec::new(),
            now: Time::ZERO,
            cfg,
            seed,
            rng: StdRng::seed_from_u64(mix64(seed)),
            loss: 0.0,
            dup: 0.0,
            shuffle: false,
            sides: None,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Node `i`'s engine (its latest run).
    pub fn engine(&self, i: usize) -> &Engine {
        &self.nodes[i].engine
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].member.id
    }

    /// Each delivery is lost with probability `p`.
    pub fn set_loss(&mut self, p: f64) {
        self.loss = p.clamp(0.0, 1.0);
    }

    /// Each delivery is doubled with probability `p`.
    pub fn set_duplicates(&mut self, p: f64) {
        self.dup = p.clamp(0.0, 1.0);
    }

    /// Delivers each step's messages in a random order instead of the order
    /// they were sent.
    pub fn set_shuffle(&mut self, on: bool) {
        self.shuffle = on;
    }

    /// Cuts the network: messages between nodes on different sides are lost.
    pub fn partition(&mut self, side: impl Fn(usize) -> usize) {
        self.sides = Some((0..self.nodes.len()).map(side).collect());
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.sides = None;
    }

    /// Node `i` stops: it receives nothing and its timers stop; messages to
    /// it are lost. Its store survives for [`Net::restart`].
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Node `i` starts again as the node daemon does: a new engine with the
    /// next boot epoch, taught what its store holds, knowing only its seeds
    /// (every node's address).
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.epoch += 1;
        let seed = mix64(self.seed ^ i as u64 ^ (node.epoch << 40));
        let mut e = Engine::new(self.cfg.clone(), node.member.clone(), node.epoch, seed, self.now);
        let unfinished: Vec<PurgeId> = node.held.drain(..).map(|t| t.purge_id()).collect();
        for p in &node.store {
            if unfinished.contains(&p.id) {
                node.held.push(e.restore_unfinished(self.now, Arc::clone(p)));
            } else {
                e.restore(self.now, Arc::clone(p));
            }
        }
        e.set_seeds(self.now, &self.addrs);
        node.engine = e;
        node.up = true;
        self.drain(i);
    }

    /// While `hold` is set, node `i` stores what it applies but acks
    /// nothing, like a node whose external cache is down; the tickets are
    /// kept, across restarts too, until [`Net::release_acks`].
    pub fn hold_acks(&mut self, i: usize, hold: bool) {
        self.nodes[i].holding = hold;
    }

    /// Node `i`'s external cache confirms everything held: ack it all.
    pub fn release_acks(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        for ticket in node.held.drain(..) {
            node.engine.applied(self.now, ticket);
        }
        self.drain(i);
    }

    /// Originates a purge of `selectors` at node `i`.
    pub fn originate(&mut self, i: usize, selectors: Vec<Selector>, mode: Mode) -> Result<Purge, OriginateError> {
        let ms = self.now.as_micros() / 1000;
        let p = self.nodes[i].engine.originate(self.now, selectors, mode, ms);
        self.drain(i);
        p
    }

    /// Messages of `kind` ([`Message::kind`]) node `i` has handled.
    pub fn received(&self, i: usize, kind: &str) -> u64 {
        self.nodes[i].received.get(kind).copied().unwrap_or(0)
    }

    /// Hands node `to` a message as if node `from` had sent it, now.
    pub fn inject(&mut self, to: usize, from: usize, msg: Message) {
        let from = self.nodes[from].member.id;
        self.nodes[to].engine.handle_message(self.now, from, msg);
        self.drain(to);
    }

    /// One hop: delivers what is in flight, then advances the clock by `dt`
    /// and fires the timers due.
    pub fn step(&mut self, dt: Duration) {
        self.deliver();
        self.now = self.now + dt;
        for i in 0..self.nodes.len() {
            if self.nodes[i].up && self.nodes[i].engine.poll_timeout() <= self.now {
                self.nodes[i].engine.handle_timeout(self.now);
                self.drain(i);
            }
        }
    }

    /// Steps of `dt` until `d` has passed.
    pub fn run_for(&mut self, d: Duration, dt: Duration) {
        let end = self.now + d;
        // Bounded by the clock: every step advances it.
        while self.now < end && !dt.is_zero() {
            self.step(dt);
        }
    }

    fn deliver(&mut self) {
        let mut batch = std::mem::take(&mut self.inflight);
        if self.shuffle {
            // Fisher-Yates with the network's RNG: arbitrary interleavings.
            for k in (1..batch.len()).rev() {
                batch.swap(k, self.rng.random_range(0..=k));
            }
        }
        for Envelope { to, from, msg } in batch {
            let cut = self.sides.as_ref().is_some_and(|s| s[to] != s[from]);
            if cut || !self.nodes[to].up || (self.loss > 0.0 && self.rng.random_bool(self.loss)) {
                continue;
            }
            let copies = if self.dup > 0.0 && self.rng.random_bool(self.dup) { 2 } else { 1 };
            let from = self.nodes[from].member.id;
            for _ in 0..copies {
                *self.nodes[to].received.entry(msg.kind()).or_default() += 1;
                self.nodes[to].engine.handle_message(self.now, from, msg.clone());
                self.drain(to);
            }
        }
    }

    fn drain(&mut self, i: usize) {
        // Bounded: an engine's outputs are finite per input.
        for _ in 0..10_000_000 {
            let Some(out) = self.nodes[i].engine.poll_output() else { return };
            match out {
                Output::Send { to, msg } => {
                    if let Some(&to) = self.index.get(&to) {
                        self.inflight.push(Envelope { to, from: i, msg });
                    }
                }
                Output::SendSeed { seed, msg } => {
                    self.inflight.push(Envelope { to: seed.index(), from: i, msg });
                }
                Output::Apply { purge, ticket } => {
                    let node = &mut self.nodes[i];
                    *node.applies.entry(purge.id).or_default() += 1;
                    node.store.push(purge);
                    if node.holding {
                        node.held.push(ticket);
                    } else {
                        node.engine.applied(self.now, ticket);
                    }
                }
                Output::Flush { .. } => self.nodes[i].flushes += 1,
                Output::Event(e) => self.nodes[i].events.push(e),
            }
        }
    }

    /// How many times node `i` applied purge `id`, over all its runs.
    pub fn applied(&self, i: usize, id: PurgeId) -> u32 {
        self.nodes[i].applies.get(&id).copied().unwrap_or(0)
    }

    /// How many index flushes node `i` was asked for.
    pub fn flushes(&self, i: usize) -> usize {
        self.nodes[i].flushes
    }

    /// Takes the events node `i` reported since the last call.
    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[i].events)
    }
}
