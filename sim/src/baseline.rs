//! Baselines that exist only in the simulator, on the same network and CPU
//! model as the engines: no acks, no anti-entropy, no failure detection.

use purgecast_core::wire::encoded_len;
use purgecast_core::Stage;
use purgecast_core::{Message, Mode, NodeId, Purge, PurgeId, Selector, StreamId, Time};

use crate::msg_kind::MsgKind;
use crate::topology::Topology;
use crate::workload::Workload;
use crate::world::{Io, Protocol};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The origin sends to every machine.
    Direct,
    /// Origin -> one machine in a central PoP -> every machine.
    Core,
    /// Origin -> one hub per region -> one entry per PoP -> its machines.
    Regional,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Core => "core",
            Kind::Regional => "regional",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Apply only.
    Leaf,
    /// Apply, then send to every machine.
    Core,
    /// Apply, then send to one entry in every PoP of my region.
    Hub,
    /// Apply, then send to the rest of my PoP.
    Entry,
}

#[derive(Debug, Clone, Copy)]
pub struct BMsg {
    pub purge: u32,
    pub hop: Hop,
}

pub struct Baseline {
    kind: Kind,
    /// Machines believed up at the start (crashed ones are known dead).
    up: Vec<bool>,
    pop_machines: Vec<Vec<usize>>,
    region_pops: Vec<Vec<usize>>,
    pop_of: Vec<usize>,
    pop_region: Vec<usize>,
    /// The core machine, and the hub machine of each region.
    core: usize,
    hubs: Vec<usize>,
    done: Vec<Vec<bool>>,
    /// Encoded size of the equivalent engine push, per purge.
    sizes: Vec<usize>,
}

impl Baseline {
    /// `core_pop` hosts the core; each region's hub sits in its PoP with the
    /// smallest total fibre distance to the other PoPs of the region.
    pub fn new(
        kind: Kind,
        topo: &Topology,
        wl: &Workload,
        core_pop: usize,
        base_us: impl Fn(usize, usize) -> u64,
    ) -> Self {
        let up: Vec<bool> = wl.crashed.iter().map(|c| !c).collect();
        let pop_machines: Vec<Vec<usize>> =
            topo.pops.iter().map(|p| p.machines.iter().copied().filter(|m| up[*m]).collect()).collect();
        let mut region_pops = vec![Vec::new(); topo.regions.len()];
        for (i, p) in topo.pops.iter().enumerate() {
            region_pops[p.region].push(i);
        }
        let first_up = |pop: usize| pop_machines[pop].first().copied();
        let core = first_up(core_pop).or_else(|| (0..topo.len()).find(|m| up[*m])).unwrap_or(0);
        let hubs = region_pops
            .iter()
            .map(|pops| {
                let centre = pops
                    .iter()
                    .filter(|p| !pop_machines[**p].is_empty())
                    .min_by_key(|a| (pops.iter().map(|b| base_us(**a, *b)).sum::<u64>(), **a));
                centre.and_then(|p| first_up(*p)).unwrap_or(core)
            })
            .collect();
        let sizes = (0..wl.purges.len()).map(|i| push_size(i, topo.machines[wl.purges[i].origin].id)).collect();
        Baseline {
            kind,
            up,
            pop_machines,
            region_pops,
            pop_of: topo.machines.iter().map(|m| m.pop).collect(),
            pop_region: topo.pops.iter().map(|p| p.region).collect(),
            core,
            hubs,
            done: vec![vec![false; wl.purges.len()]; topo.len()],
            sizes,
        }
    }

    pub fn core_machine(&self) -> usize {
        self.core
    }

    pub fn hubs(&self) -> &[usize] {
        &self.hubs
    }

    fn send(&mut self, io: &mut Io<BMsg>, me: usize, to: usize, purge: usize, hop: Hop) {
        if to == me {
            self.act(io, me, purge, hop);
        } else {
            io.send(to, BMsg { purge: purge as u32, hop }, MsgKind::Push, self.sizes[purge]);
        }
    }

    fn act(&mut self, io: &mut Io<BMsg>, me: usize, purge: usize, hop: Hop) {
        if !self.done[me][purge] {
            self.done[me][purge] = true;
            io.apply(purge);
        }
        match hop {
            Hop::Leaf => {}
            Hop::Core => self.send_to_all(io, me, purge),
            Hop::Hub => {
                let my_pop = self.pop_of[me];
                let pops = self.region_pops[self.pop_region[my_pop]].clone();
                for pop in pops {
                    let Some(&entry) = self.pop_machines[pop].first() else { continue };
                    // The hub covers its own PoP itself.
                    if pop == my_pop {
                        self.cover_pop(io, me, pop, purge);
                    } else {
                        self.send(io, me, entry, purge, Hop::Entry);
                    }
                }
            }
            Hop::Entry => {
                self.cover_pop(io, me, self.pop_of[me], purge);
            }
        }
    }

    fn send_to_all(&mut self, io: &mut Io<BMsg>, me: usize, purge: usize) {
        for to in 0..self.up.len() {
            if self.up[to] && to != me {
                self.send(io, me, to, purge, Hop::Leaf);
            }
        }
    }

    fn cover_pop(&mut self, io: &mut Io<BMsg>, me: usize, pop: usize, purge: usize) {
        let ms = self.pop_machines[pop].clone();
        for to in ms {
            if to != me {
                self.send(io, me, to, purge, Hop::Leaf);
            }
        }
    }
}

/// The size of the engine push that carries the same purge, so baselines
/// and engines are charged the same bytes per copy.
fn push_size(i: usize, origin: NodeId) -> usize {
    let url = format!("https://www.example.com/assets/{i}/app.js");
    let selectors = Selector::url(&url).map(|s| vec![s]).unwrap_or_default();
    let purge = Purge {
        id: PurgeId(u128::MAX - i as u128),
        stream: StreamId { origin, epoch: 1 },
        seq: i as u64 + 1,
        selectors,
        mode: Mode::Hard,
        issued_at_ms: 1_000,
        zone: String::new(),
        requested_by: String::new(),
    };
    encoded_len(origin, &Message::Push { purge: std::sync::Arc::new(purge), stage: Stage::PopLocal })
}

impl Protocol for Baseline {
    type Msg = BMsg;

    fn originate(&mut self, io: &mut Io<BMsg>, m: usize, purge: usize) {
        match self.kind {
            Kind::Direct => self.act(io, m, purge, Hop::Core),
            Kind::Core => {
                self.act(io, m, purge, Hop::Leaf);
                self.send(io, m, self.core, purge, Hop::Core);
            }
            Kind::Regional => {
                self.act(io, m, purge, Hop::Leaf);
                for h in self.hubs.clone() {
                    self.send(io, m, h, purge, Hop::Hub);
                }
            }
        }
    }

    fn on_message(&mut self, io: &mut Io<BMsg>, to: usize, _from: usize, msg: BMsg) {
        self.act(io, to, msg.purge as usize, msg.hop);
    }

    fn on_timer(&mut self, _io: &mut Io<BMsg>, _m: usize) {}

    fn next_timer(&self, _m: usize) -> Option<Time> {
        None
    }
}
