//! The discrete-event driver: a virtual clock, one event queue, per-machine
//! CPU queues, and a [`Protocol`] that decides what each machine does.

use std::time::Duration;

use purgecast_core::Time;

use crate::msg_kind::{MsgKind, SentByKind};
use crate::net::{Net, NetParams};
use crate::queue::Queue;
use crate::topology::Topology;
use crate::workload::Workload;

/// One message a protocol handed to the driver.
struct Outgoing<M> {
    to: usize,
    msg: M,
    kind: MsgKind,
    /// Encoded size.
    bytes: usize,
}

/// What a protocol asks the driver to do on behalf of one machine.
pub struct Io<M> {
    pub now: Time,
    sends: Vec<Outgoing<M>>,
    applies: Vec<usize>,
    refused: Option<usize>,
}

impl<M> Io<M> {
    /// `bytes` is the encoded size.
    pub fn send(&mut self, to: usize, msg: M, kind: MsgKind, bytes: usize) {
        self.sends.push(Outgoing { to, msg, kind, bytes });
    }

    /// This machine has applied purge number `purge`.
    pub fn apply(&mut self, purge: usize) {
        self.applies.push(purge);
    }

    /// The origin turned purge number `purge` down (a node that has not
    /// joined yet does): nobody owes it anything.
    pub fn refuse(&mut self, purge: usize) {
        self.refused = Some(purge);
    }
}

pub trait Protocol {
    type Msg;
    fn originate(&mut self, io: &mut Io<Self::Msg>, m: usize, purge: usize);
    fn on_message(&mut self, io: &mut Io<Self::Msg>, to: usize, from: usize, msg: Self::Msg);
    fn on_timer(&mut self, io: &mut Io<Self::Msg>, m: usize);
    fn next_timer(&self, m: usize) -> Option<Time>;
    /// Machine `m` comes back after a crash. Protocols without state to
    /// restore simply resume.
    fn restart(&mut self, _io: &mut Io<Self::Msg>, _m: usize) {}
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunParams {
    pub net: NetParams,
    /// CPU time per received message, serialised per machine.
    pub proc: Duration,
    /// CPU time per sent message at the sender.
    pub send: Duration,
    pub max_time: Duration,
    /// Run on this long after the last apply (acks, timers).
    pub tail: Duration,
    pub seed: u64,
}

impl Default for RunParams {
    fn default() -> Self {
        RunParams {
            net: NetParams::default(),
            proc: Duration::from_micros(20),
            send: Duration::ZERO,
            max_time: Duration::from_secs(120),
            tail: Duration::from_millis(200),
            seed: 1,
        }
    }
}

/// Raw outcome of one run; `metrics` turns it into a report.
#[derive(Debug, Clone)]
pub struct Trace {
    pub machines: usize,
    pub purges: usize,
    /// Apply time in microseconds per (purge, machine), purge-major;
    /// `u64::MAX` when never applied.
    pub applied_at: Vec<u64>,
    /// How many times each (purge, machine) was applied.
    pub apply_count: Vec<u8>,
    /// Purges their origin turned down, or that found it down.
    pub refused: Vec<bool>,
    /// Counted from the first purge.
    pub sent: SentByKind,
    pub events: u64,
    pub end: Time,
    pub all_applied_at: Option<Time>,
    pub retransmitted: u64,
    pub dropped: u64,
    /// Messages each machine handled, and acks (applied, applied_by) among
    /// them, counted from the first purge.
    pub received: Vec<u64>,
    pub acks_received: Vec<u64>,
    /// The same by kind ([`MsgKind::ALL`] order).
    pub received_kinds: Vec<[u64; MsgKind::ALL.len()]>,
}

/// Messages ride in the queue itself: fetching them from a side slab cost
/// a cache miss per delivery, more than moving a few more bytes per event.
enum Ev<M> {
    Originate(u32),
    Deliver { to: u32, from: u32, kind: MsgKind, msg: M },
    Timer { m: u32 },
    Crash(u32),
    Restart(u32),
}

/// Per-machine driver state, together so that one event touches one line.
#[derive(Clone, Copy)]
struct Mach {
    /// The CPU is busy until then.
    busy: Time,
    timer_at: Option<Time>,
    down: bool,
}

struct Driver<'a, P: Protocol> {
    topo: &'a Topology,
    wl: &'a Workload,
    p: &'a RunParams,
    net: Net,
    proto: &'a mut P,
    queue: Queue<Ev<P::Msg>>,
    mach: Vec<Mach>,
    io: Io<P::Msg>,
    trace: Trace,
    count_from: Time,
    missing: usize,
}

/// Runs one protocol over one workload.
pub fn run<P: Protocol>(topo: &Topology, wl: &Workload, p: &RunParams, proto: &mut P) -> Trace {
    let n = topo.len();
    let purges = wl.purges.len();
    let mut d = Driver {
        topo,
        wl,
        p,
        net: Net::new(topo, p.net.clone(), p.seed),
        // 100 us buckets over a 6.5 s horizon: messages and timers land
        // in the ring, only far-off purges and crashes in the overflow.
        queue: Queue::new(100, 1 << 16),
        mach: wl.crashed.iter().map(|down| Mach { busy: Time::ZERO, timer_at: None, down: *down }).collect(),
        io: Io { now: Time::ZERO, sends: Vec::new(), applies: Vec::new(), refused: None },
        trace: Trace {
            machines: n,
            purges,
            received: vec![0; n],
            acks_received: vec![0; n],
            received_kinds: vec![[0; MsgKind::ALL.len()]; n],
            applied_at: vec![u64::MAX; n * purges],
            apply_count: vec![0; n * purges],
            refused: vec![false; purges],
            sent: SentByKind::default(),
            events: 0,
            end: Time::ZERO,
            all_applied_at: None,
            retransmitted: 0,
            dropped: 0,
        },
        count_from: wl.purges.first().map_or(Time::ZERO, |s| s.at),
        missing: purges * wl.live_count(),
        proto,
    };
    d.start();
    d.run_loop();
    d.trace.retransmitted = d.net.retransmitted;
    d.trace.dropped = d.net.dropped;
    d.trace
}

impl<P: Protocol> Driver<'_, P> {
    fn push(&mut self, at: Time, ev: Ev<P::Msg>) {
        self.queue.push(at, ev);
    }

    fn start(&mut self) {
        for m in 0..self.topo.len() {
            if !self.mach[m].down {
                self.arm_timer(m, Time::ZERO);
            }
            if let Some(at) = self.wl.crash_at[m] {
                self.push(at, Ev::Crash(m as u32));
            }
            if let Some(at) = self.wl.restart_at[m] {
                self.push(at, Ev::Restart(m as u32));
            }
        }
        for b in &self.wl.bounces {
            self.push(b.down, Ev::Crash(b.machine as u32));
            self.push(b.up, Ev::Restart(b.machine as u32));
        }
        for (i, s) in self.wl.purges.iter().enumerate() {
            self.push(s.at, Ev::Originate(i as u32));
        }
    }

    fn run_loop(&mut self) {
        let max = Time::ZERO + self.p.max_time;
        let mut stop_at = max;
        while let Some((at, ev)) = self.queue.pop() {
            if at > stop_at {
                break;
            }
            self.trace.events += 1;
            self.trace.end = at;
            match ev {
                Ev::Originate(i) => {
                    let i = i as usize;
                    let m = self.wl.purges[i].origin;
                    if !self.mach[m].down {
                        self.begin(m, at, self.p.proc);
                        self.proto.originate(&mut self.io, m, i);
                        self.finish(m, false);
                    }
                    if self.mach[m].down || self.io.refused.take().is_some() {
                        self.trace.refused[i] = true;
                        self.missing -= self.wl.live_count();
                    }
                }
                Ev::Deliver { to, from, kind, msg } => {
                    let (to, from) = (to as usize, from as usize);
                    let (pf, pt) = (self.topo.pop_of(from), self.topo.pop_of(to));
                    if self.mach[to].down || self.net.cut(at, pf, pt) {
                        continue;
                    }
                    if at >= self.count_from {
                        self.trace.received[to] += 1;
                        self.trace.received_kinds[to][kind as usize] += 1;
                        if matches!(kind, MsgKind::Applied | MsgKind::AppliedBy) {
                            self.trace.acks_received[to] += 1;
                        }
                    }
                    self.begin(to, at, self.p.proc);
                    self.proto.on_message(&mut self.io, to, from, msg);
                    self.finish(to, false);
                }
                Ev::Timer { m } => {
                    let m = m as usize;
                    if self.mach[m].down || self.mach[m].timer_at != Some(at) {
                        continue;
                    }
                    self.mach[m].timer_at = None;
                    self.begin(m, at, Duration::ZERO);
                    self.proto.on_timer(&mut self.io, m);
                    self.finish(m, true);
                }
                Ev::Crash(m) => self.mach[m as usize].down = true,
                Ev::Restart(m) => {
                    let m = m as usize;
                    self.mach[m].down = false;
                    // Timers armed before the crash died with the machine.
                    self.mach[m].timer_at = None;
                    self.begin(m, at, Duration::ZERO);
                    self.proto.restart(&mut self.io, m);
                    self.finish(m, false);
                }
            }
            if self.missing == 0 && self.trace.all_applied_at.is_none() {
                self.trace.all_applied_at = Some(at);
                stop_at = (at + self.p.tail).min(max);
            }
        }
    }

    /// The machine's CPU takes the work in arrival order: it starts when the
    /// machine is free and the protocol sees the time it finishes.
    fn begin(&mut self, m: usize, at: Time, cost: Duration) {
        let t = self.mach[m].busy.max(at) + cost;
        self.mach[m].busy = t;
        self.io.now = t;
    }

    fn finish(&mut self, m: usize, after_timer: bool) {
        let now = self.io.now;
        let from_pop = self.topo.pop_of(m);
        let mut depart = now;
        // Taken and handed back, so the buffer is allocated once per run.
        let mut sends = std::mem::take(&mut self.io.sends);
        for Outgoing { to, msg, kind, bytes } in sends.drain(..) {
            depart = depart + self.p.send;
            if depart >= self.count_from {
                self.trace.sent.add(kind, bytes);
            }
            if let Some(delay) = self.net.transit(depart, from_pop, self.topo.pop_of(to)) {
                self.push(Time(depart.as_micros() + delay), Ev::Deliver { to: to as u32, from: m as u32, kind, msg });
            }
        }
        self.io.sends = sends;
        self.mach[m].busy = depart;
        let applies = std::mem::take(&mut self.io.applies);
        for &i in &applies {
            let k = i * self.topo.len() + m;
            let c = &mut self.trace.apply_count[k];
            if *c == 0 {
                self.trace.applied_at[k] = now.as_micros();
                if self.wl.is_live(m) {
                    self.missing -= 1;
                }
            }
            *c = c.saturating_add(1);
        }
        self.io.applies = applies;
        self.io.applies.clear();
        // A timer due again at once after firing would spin the clock in
        // place; a microsecond later is harmless.
        let floor = if after_timer { Time(now.as_micros() + 1) } else { now };
        self.arm_timer(m, floor);
    }

    fn arm_timer(&mut self, m: usize, floor: Time) {
        if let Some(t) = self.proto.next_timer(m) {
            let t = t.max(floor);
            if self.mach[m].timer_at != Some(t) {
                self.mach[m].timer_at = Some(t);
                self.push(t, Ev::Timer { m: m as u32 });
            }
        }
    }
}
