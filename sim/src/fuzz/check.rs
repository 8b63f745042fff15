//! Running a schedule and checking the invariants; many in parallel.

use std::collections::BTreeMap;
use std::time::Duration;

use purgecast_core::{Config, Strategy as CoreStrategy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{generate, Inject, Options, Schedule};
use crate::engines::{EngineCounters, Engines};
use crate::metrics::{report, Report};
use crate::net::Net;
use crate::scenario::{par_map, Strategy};
use crate::world::run;
use purgecast_core::{NodeId, Time};

/// What one strategy did on one schedule.
pub struct Run {
    pub report: Report,
    pub counters: EngineCounters,
    /// From the last fault until every machine had every purge; None if
    /// that never happened within the run.
    pub settle: Option<Duration>,
    /// Purges refused by their origin (down, or restarted and alone).
    pub refused: usize,
    /// Purges accepted by a restarted machine (on its new stream).
    pub after_restart: usize,
    /// Dead members dropped from views (`forget_dead_after`), over the
    /// engines up at the end.
    pub forgotten: u64,
    /// The origins' view: see [`StatusView`].
    pub status: StatusView,
    /// Live machines whose view still holds a machine dead for good long
    /// after `forget_dead_after` (knocked on forever), as (viewer, dead).
    pub unforgotten: Vec<(usize, usize)>,
}

/// What the origins report about their purges at the end of the run, as
/// `purgectl status` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusView {
    /// From the last fault until the last purge was reported complete by
    /// its origin from acks and digests (not by declaring a member dead);
    /// None if some purge owed by a machine that is up never was.
    pub settle: Option<Duration>,
    /// Purges whose origin never reported them complete while a machine
    /// that is up owes them.
    pub incomplete: usize,
    /// Purges whose origin, at the end, still lists a machine that is up as
    /// owing an apply.
    pub pending: usize,
    /// Purges whose origin, at the end, still waits only on machines down
    /// for good that it has not heard are dead (slow failure detection).
    pub undetected: usize,
    /// Purges checked: those whose origin stayed up from accepting them to
    /// the end (a restart loses the tracker).
    pub checked: usize,
}

pub fn run_schedule(s: &Schedule, strategy: Strategy, opts: &Options) -> Run {
    let core = if strategy == Strategy::Gossip { CoreStrategy::Gossip } else { CoreStrategy::Topology };
    let cfg = Config { strategy: core, ..s.scn.config.clone() };
    let mut p = Engines::new(&s.scn.topo, &s.wl, &cfg, s.seed);
    p.restore_on_restart = opts.inject != Some(Inject::ForgetOnRestart);
    let t = run(&s.scn.topo, &s.wl, &s.scn.run, &mut p);
    let net = Net::new(&s.scn.topo, s.scn.run.net.clone(), s.seed);
    let report = report(strategy.name(), &s.scn.topo, &s.wl, &net, &s.scn.heals(), &t);
    let settle = t.all_applied_at.map(|at| if at > s.quiet { at.since(s.quiet) } else { Duration::ZERO });
    let restarted = |i: usize| {
        let spec = &s.wl.purges[i];
        s.wl.restart_at[spec.origin].is_some_and(|r| spec.at >= r) && !t.refused[i]
    };
    let after_restart = (0..t.purges).filter(|i| restarted(*i)).count();
    let refused = t.refused.iter().filter(|r| **r).count();
    let status = status_view(s, &p, &t.refused);
    let unforgotten = unforgotten(s, &p, t.end);
    let forgotten = (0..s.wl.crashed.len()).map(|m| p.engine(m).stats().forgotten).sum();
    Run { report, counters: p.counters.clone(), settle, refused, after_restart, forgotten, status, unforgotten }
}

fn status_view(s: &Schedule, p: &Engines, refused: &[bool]) -> StatusView {
    let mut v = StatusView { settle: Some(Duration::ZERO), ..StatusView::default() };
    let n = s.wl.crashed.len();
    let machine: BTreeMap<NodeId, usize> = (0..n).map(|m| (p.engine(m).id(), m)).collect();
    // Pending on a machine that is down for good only means the origin has
    // not heard of its death yet: failure detection, not acks.
    let up = |id: &NodeId| machine.get(id).is_some_and(|m| s.wl.is_live(*m));
    for (i, spec) in s.wl.purges.iter().enumerate() {
        let o = spec.origin;
        if refused[i] || s.wl.downs(o).any(|d| d >= spec.at) {
            continue;
        }
        let Some(st) = p.purge_id(i).and_then(|id| p.engine(o).status(id)) else { continue };
        v.checked += 1;
        let owed_by_up = st.pending.iter().any(up);
        v.pending += usize::from(owed_by_up);
        v.undetected += usize::from(!st.pending.is_empty() && !owed_by_up);
        match st.completed {
            // Completed by a death verdict: as late as failure detection.
            Some(_) if !st.dead.is_empty() => {}
            Some(d) => {
                let at = st.accepted + d;
                let late = if at > s.quiet { at.since(s.quiet) } else { Duration::ZERO };
                v.settle = v.settle.map(|w| w.max(late));
            }
            None if owed_by_up => {
                v.incomplete += 1;
                v.settle = None;
            }
            None => {}
        }
    }
    v
}

/// Machines down for good since long enough to be forgotten (detection,
/// then `forget_dead_after`, twice over for news of the death still in flight)
/// must be gone from every live view.
fn unforgotten(s: &Schedule, p: &Engines, end: Time) -> Vec<(usize, usize)> {
    let cfg = &s.scn.config;
    let n = s.wl.crashed.len();
    let detect = super::detect_alone(cfg, n);
    let gone = |m: usize| {
        let down = if s.wl.crashed[m] { Some(Time::ZERO) } else { s.wl.crash_at[m] };
        s.wl.restart_at[m].is_none() && down.is_some_and(|d| d + detect + cfg.forget_dead_after * 2 < end)
    };
    let mut out = Vec::new();
    for dead in (0..n).filter(|m| gone(*m)) {
        let id = p.engine(dead).id();
        for viewer in (0..n).filter(|m| s.wl.is_live(*m)) {
            if p.engine(viewer).members().get(id).is_some() {
                out.push((viewer, dead));
            }
        }
    }
    out
}

/// The invariants, as one line per violation.
pub fn problems(s: &Schedule, r: &Run) -> Vec<String> {
    let mut out = Vec::new();
    let (inv, c, name) = (&r.report.invariants, &r.counters, &r.report.strategy);
    if inv.applied_twice > 0 {
        out.push(format!("{name}: {} (purge, machine) pairs applied more than once", inv.applied_twice));
    }
    match r.settle {
        None => out.push(format!(
            "{name}: {} (purge, live machine) pairs never applied ({} ms after the last fault)",
            inv.missing,
            (s.bound * 3).as_millis()
        )),
        Some(d) if d > s.bound => out.push(format!(
            "{name}: delivery complete {} ms after the last fault, bound {} ms",
            d.as_millis(),
            s.bound.as_millis()
        )),
        Some(_) => {}
    }
    let st = &r.status;
    match st.settle {
        None => out.push(format!(
            "{name}: {} of {} purges owed by machines that are up never reported complete by their origin",
            st.incomplete, st.checked
        )),
        Some(d) if d > s.bound => out.push(format!(
            "{name}: origins reported every purge complete {} ms after the last fault, bound {} ms",
            d.as_millis(),
            s.bound.as_millis()
        )),
        Some(_) => {}
    }
    if st.pending > 0 {
        out.push(format!(
            "{name}: {} of {} purges still list a reachable member as pending at the end",
            st.pending, st.checked
        ));
    }
    if let Some((viewer, dead)) = r.unforgotten.first() {
        out.push(format!(
            "{name}: {} views still hold machines dead for good (machine {viewer} knows {dead}) after forget_dead_after {} ms",
            r.unforgotten.len(),
            s.scn.config.forget_dead_after.as_millis()
        ));
    }
    if c.rejected > 0 || c.unknown > 0 || c.flushes > 0 {
        out.push(format!("{name}: engine counters {c:?}"));
    }
    out
}

/// The outcome of one schedule over every strategy asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub seed: u64,
    pub problems: Vec<String>,
    pub worst_settle: Option<Duration>,
    /// Worst time from the last fault until every origin reported every
    /// purge complete.
    pub worst_status: Option<Duration>,
    /// Worst time from a partition's heal to full delivery (ms).
    pub worst_heal_ms: Option<f64>,
    pub events: u64,
    pub refused: usize,
    pub after_restart: usize,
    pub forgotten: u64,
}

impl Checked {
    pub(super) fn new(seed: u64) -> Checked {
        Checked {
            seed,
            problems: Vec::new(),
            worst_settle: None,
            worst_status: None,
            worst_heal_ms: None,
            events: 0,
            refused: 0,
            after_restart: 0,
            forgotten: 0,
        }
    }
}

pub fn check(seed: u64, opts: &Options) -> Checked {
    let s = match generate(seed, opts) {
        Ok(s) => s,
        Err(e) => return Checked { problems: vec![format!("cannot build the schedule: {e}")], ..Checked::new(seed) },
    };
    let mut c = Checked::new(seed);
    for &st in &opts.strategies {
        let r = run_schedule(&s, st, opts);
        c.problems.extend(problems(&s, &r));
        c.worst_settle = c.worst_settle.max(r.settle);
        c.worst_status = c.worst_status.max(r.status.settle);
        for h in r.report.heal_to_full_ms.iter().flatten() {
            c.worst_heal_ms = Some(c.worst_heal_ms.map_or(*h, |w: f64| w.max(*h)));
        }
        c.events += r.report.events;
        c.refused += r.refused;
        c.after_restart += r.after_restart;
        c.forgotten += r.forgotten;
    }
    c
}

/// Schedule seeds drawn from the master seed.
pub fn seeds(master: u64, n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(master);
    (0..n).map(|_| rng.random()).collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub schedules: usize,
    pub failures: Vec<Checked>,
    /// Worst settle time and its schedule.
    pub worst_settle: Option<(Duration, u64)>,
    pub worst_status: Option<(Duration, u64)>,
    pub worst_heal_ms: Option<(f64, u64)>,
    pub events: u64,
    pub refused: usize,
    pub after_restart: usize,
    pub forgotten: u64,
}

pub fn fuzz(master: u64, n: usize, opts: &Options, threads: usize) -> Summary {
    let all = par_map(&seeds(master, n), threads, |s| check(*s, opts));
    let mut sum = Summary {
        schedules: n,
        failures: Vec::new(),
        worst_settle: None,
        worst_status: None,
        worst_heal_ms: None,
        events: 0,
        refused: 0,
        after_restart: 0,
        forgotten: 0,
    };
    for c in all {
        sum.events += c.events;
        sum.refused += c.refused;
        sum.after_restart += c.after_restart;
        sum.forgotten += c.forgotten;
        if let Some(d) = c.worst_settle {
            if sum.worst_settle.is_none_or(|(w, _)| d > w) {
                sum.worst_settle = Some((d, c.seed));
            }
        }
        if let Some(d) = c.worst_status {
            if sum.worst_status.is_none_or(|(w, _)| d > w) {
                sum.worst_status = Some((d, c.seed));
            }
        }
        if let Some(h) = c.worst_heal_ms {
            if sum.worst_heal_ms.is_none_or(|(w, _)| h > w) {
                sum.worst_heal_ms = Some((h, c.seed));
            }
        }
        if !c.problems.is_empty() {
            sum.failures.push(c);
        }
    }
    sum
}
