//! The shipped protocol: one real `purgecast_core::Engine` per machine.

use std::sync::Arc;

use purgecast_core::wire::encoded_len;
use purgecast_core::{
    mix64, Config, Engine, Event, KeyedMap, Member, MemberState, Message, Mode, NodeId, OriginateError, Output, Purge,
    PurgeId, Selector, Stage, Time,
};

use crate::msg_kind::MsgKind;
use crate::topology::Topology;
use crate::workload::Workload;
use crate::world::{Io, Protocol};

fn varint_len(v: u64) -> u8 {
    (1 + (63 - (v | 1).leading_zeros()) / 7) as u8
}

/// A message in flight, kept small because the event queue holds it:
/// nearly all are pushes (a shared purge and a stage); the rest wait in a
/// box. Acks stay boxed too: inline, their 128-bit id would make every
/// queued event half as large again.
pub enum InFlight {
    Push(Arc<Purge>, Stage),
    Other(Box<Message>),
}

impl From<Message> for InFlight {
    fn from(msg: Message) -> InFlight {
        match msg {
            Message::Push { purge, stage } => InFlight::Push(purge, stage),
            other => InFlight::Other(Box::new(other)),
        }
    }
}

impl From<InFlight> for Message {
    fn from(msg: InFlight) -> Message {
        match msg {
            InFlight::Push(purge, stage) => Message::Push { purge, stage },
            InFlight::Other(m) => *m,
        }
    }
}

/// The driver's own lookup tables (ids to machine numbers, push sizes) are
/// hit on every message sent: SipHash showed up in profiles. Nothing
/// iterates them, so the hash cannot change any output.
type FastMap<K, V> = KeyedMap<K, V>;

/// All a push's encoded size depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PushKey {
    purge: PurgeId,
    stage: Stage,
    /// Varint length of the sender's id.
    sender_len: u8,
}

/// Things the engines reported that a correct run should never see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub rejected: u64,
    pub flushes: u64,
    pub unknown: u64,
    pub member_down: u64,
    pub completed: u64,
}

pub struct Engines {
    engines: Vec<Engine>,
    cfg: Config,
    seed: u64,
    members: Vec<Member>,
    /// Boot counter per machine: a restart starts a new purge stream.
    epoch: Vec<u64>,
    /// What each machine applied, as the node's store keeps it; only kept
    /// when the workload restarts machines.
    log: Option<Vec<Vec<Arc<Purge>>>>,
    /// Off only to check that the fuzzer catches a node that forgets what
    /// it applied.
    pub restore_on_restart: bool,
    ids: Vec<NodeId>,
    by_id: FastMap<NodeId, usize>,
    by_purge: FastMap<PurgeId, usize>,
    /// Encoded push sizes, computed once per key: exact counts without
    /// re-encoding every copy.
    push_len: FastMap<PushKey, usize>,
    pub counters: EngineCounters,
    /// Per purge completed at its origin: accept -> complete, in us.
    pub origin_completion: Vec<u64>,
}

impl Engines {
    /// Every engine starts knowing the full member list; machines crashed
    /// before the run are dead in every view (steady state after SWIM).
    pub fn new(topo: &Topology, wl: &Workload, cfg: &Config, seed: u64) -> Engines {
        let n = topo.len();
        let members: Vec<_> = (0..n)
            .map(|m| topo.member(m, if wl.crashed[m] { MemberState::Dead } else { MemberState::Alive }))
            .collect();
        // Added in id order, each view's sorted member list only appends.
        let mut sorted: Vec<&Member> = members.iter().collect();
        sorted.sort_by_key(|m| m.id);
        let mut engines = Vec::with_capacity(n);
        for (m, me) in members.iter().enumerate() {
            let mut e = Engine::new(cfg.clone(), me.clone(), 1, mix64(seed ^ m as u64), Time::ZERO);
            for other in &sorted {
                e.add_member((*other).clone());
            }
            engines.push(e);
        }
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        let by_id = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let restarts = wl.restart_at.iter().any(Option::is_some);
        Engines {
            engines,
            cfg: cfg.clone(),
            seed,
            members,
            epoch: vec![1; n],
            log: restarts.then(|| vec![Vec::new(); n]),
            restore_on_restart: true,
            ids,
            by_id,
            by_purge: FastMap::default(),
            push_len: FastMap::default(),
            counters: EngineCounters::default(),
            origin_completion: Vec::new(),
        }
    }

    pub fn engine(&self, m: usize) -> &Engine {
        &self.engines[m]
    }

    /// The core id workload purge `purge` got when it was originated, so a
    /// caller can read its origin's [`Engine::status`] (ack-based
    /// completion, as the node reports it). A linear scan: for reports.
    pub fn purge_id(&self, purge: usize) -> Option<PurgeId> {
        self.by_purge.iter().find(|(_, i)| **i == purge).map(|(id, _)| *id)
    }

    fn size(&mut self, from: NodeId, msg: &Message) -> usize {
        if let Message::Push { purge, stage } = msg {
            let key = PushKey { purge: purge.id, stage: *stage, sender_len: varint_len(from.0) };
            if let Some(n) = self.push_len.get(&key) {
                return *n;
            }
            let n = encoded_len(from, msg);
            self.push_len.insert(key, n);
            return n;
        }
        encoded_len(from, msg)
    }

    fn drain(&mut self, io: &mut Io<InFlight>, m: usize) {
        // Bounded: each apply adds at most one ack; a runaway engine would
        // show up as a stuck run, not a hang here.
        for _ in 0..10_000_000 {
            let Some(out) = self.engines[m].poll_output() else { return };
            match out {
                Output::Send { to, msg } => match self.by_id.get(&to) {
                    Some(&t) => {
                        let bytes = self.size(self.ids[m], &msg);
                        let kind = MsgKind::of(&msg);
                        io.send(t, msg.into(), kind, bytes);
                    }
                    None => self.counters.unknown += 1,
                },
                Output::SendSeed { seed, msg } => {
                    let t = seed.index();
                    let bytes = self.size(self.ids[m], &msg);
                    let kind = MsgKind::of(&msg);
                    io.send(t, msg.into(), kind, bytes);
                }
                Output::Apply { purge, ticket } => {
                    match self.by_purge.get(&purge.id) {
                        Some(&i) => io.apply(i),
                        None => self.counters.unknown += 1,
                    }
                    self.engines[m].applied(io.now, ticket);
                    if let Some(log) = &mut self.log {
                        log[m].push(purge);
                    }
                }
                Output::Flush { .. } => self.counters.flushes += 1,
                Output::Event(Event::Rejected { .. }) => self.counters.rejected += 1,
                Output::Event(Event::MemberDown { .. }) => self.counters.member_down += 1,
                Output::Event(Event::PurgeComplete { after, .. }) => {
                    self.counters.completed += 1;
                    self.origin_completion.push(after.as_micros() as u64);
                }
                Output::Event(Event::MemberUp(_) | Event::MemberRestarted(_) | Event::CaughtUp { .. }) => {}
            }
        }
    }
}

impl Protocol for Engines {
    type Msg = InFlight;

    fn originate(&mut self, io: &mut Io<InFlight>, m: usize, purge: usize) {
        let url = format!("https://www.example.com/assets/{purge}/app.js");
        let Ok(sel) = Selector::url(&url) else {
            self.counters.rejected += 1;
            return;
        };
        match self.engines[m].originate(io.now, vec![sel], Mode::Hard, io.now.as_micros() / 1000) {
            Ok(p) => {
                self.by_purge.insert(p.id, purge);
            }
            // One that knows nobody could only apply the purge itself: the
            // client retries elsewhere.
            Err(OriginateError::NotJoined) => io.refuse(purge),
            Err(OriginateError::Invalid(_)) => self.counters.rejected += 1,
        }
        self.drain(io, m);
    }

    fn on_message(&mut self, io: &mut Io<InFlight>, to: usize, from: usize, msg: InFlight) {
        self.engines[to].handle_message(io.now, self.ids[from], msg.into());
        self.drain(io, to);
    }

    fn on_timer(&mut self, io: &mut Io<InFlight>, m: usize) {
        self.engines[m].handle_timeout(io.now);
        self.drain(io, m);
    }

    fn next_timer(&self, m: usize) -> Option<Time> {
        Some(self.engines[m].poll_timeout())
    }

    /// As the node does: a new engine with the next boot epoch, taught what
    /// the store holds (`Engine::restore`), knowing nobody until a seed
    /// answers its join. Every other machine is a seed (a small cluster's
    /// config lists them all).
    fn restart(&mut self, io: &mut Io<InFlight>, m: usize) {
        self.epoch[m] += 1;
        let epoch = self.epoch[m];
        let me = Member { state: MemberState::Alive, ..self.members[m].clone() };
        let seed = mix64(self.seed ^ m as u64 ^ (epoch << 40));
        let mut e = Engine::new(self.cfg.clone(), me, epoch, seed, io.now);
        if self.restore_on_restart {
            for p in self.log.as_ref().map(|l| &l[m][..]).unwrap_or_default() {
                e.restore(io.now, Arc::clone(p));
            }
        }
        // Seed `t` is machine `t`. Profiles carry no addresses here (they
        // would change every message size), so the machine's own entry is
        // its own empty address, which the engine skips.
        let seeds: Vec<&str> = (0..self.ids.len()).map(|t| if t == m { "" } else { "seed" }).collect();
        e.set_seeds(io.now, &seeds);
        self.engines[m] = e;
        self.drain(io, m);
    }
}
