//! `purgesim fuzz`: many small random fault schedules (loss, crashes before
//! and during the run, machines that crash and come back, partitions), each
//! run with the real engines and checked against the invariants: no purge
//! applied twice on a machine, every machine up at the end has every
//! acknowledged purge, and delivery completes within a bound after the last
//! fault. A failing schedule prints its seed and the command replaying it.

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, ValueEnum};
use purgecast_core::{Config, Strategy as CoreStrategy, Time};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::cli::{Common, LossArg};
use crate::engines::{EngineCounters, Engines};
use crate::metrics::{report, Report};
use crate::net::{Jitter, Net, Partition};
use crate::report::{text, Echo};
use crate::scenario::{par_map, Scenario, Strategy};
use crate::topology::Topology;
use crate::workload::Workload;
use crate::world::run;

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Master seed: the schedule seeds are drawn from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1000)]
    pub schedules: usize,
    /// Run only the schedule with this seed, printing what it generated.
    #[arg(long)]
    pub replay: Option<u64>,
    /// Engine strategies to run each schedule with: topology, gossip.
    #[arg(long, default_value = "topology", value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Schedules run in parallel (output unchanged).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also draw the protocol parameters (pop_entry, pop_direct_max,
    /// fanout, anti-entropy and SWIM timings) instead of the defaults.
    #[arg(long)]
    pub vary_config: bool,
    /// Breaks something on purpose, to check that the fuzzer notices.
    #[arg(long, value_enum, hide = true)]
    pub inject: Option<Inject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Inject {
    /// The first partition never heals, but the checker expects it to.
    NeverHeal,
    /// Restarted machines do not restore what they had applied.
    ForgetOnRestart,
}

impl Inject {
    fn flag(self) -> &'static str {
        match self {
            Inject::NeverHeal => "never-heal",
            Inject::ForgetOnRestart => "forget-on-restart",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub strategies: Vec<Strategy>,
    pub inject: Option<Inject>,
    pub vary_config: bool,
}

impl Options {
    /// The command line that replays one schedule under these options.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut s = format!("purgesim fuzz --replay {seed}");
        if self.strategies != [Strategy::Topology] {
            let names: Vec<&str> = self.strategies.iter().map(|s| s.name()).collect();
            let _ = write!(s, " --strategies {}", names.join(","));
        }
        if self.vary_config {
            s.push_str(" --vary-config");
        }
        if let Some(i) = self.inject {
            let _ = write!(s, " --inject {}", i.flag());
        }
        s
    }
}

/// One generated schedule, ready to run.
pub struct Schedule {
    pub seed: u64,
    pub scn: Scenario,
    pub wl: Workload,
    pub echo: Echo,
    /// The last fault: last purge, crash, restart or partition heal.
    pub quiet: Time,
    /// Delivery must be complete this long after `quiet`.
    pub bound: Duration,
}

/// How long after the last fault every purge may still take to reach every
/// machine. Each term covers one way a purge can be held up once faults stop:
/// - a restarted machine's join can be lost: a few join retries;
/// - a push to a member that died unnoticed is lost: SWIM takes up to two
///   probe periods to pick it, the direct and indirect timeouts, then the
///   suspicion timeout (the pushes themselves are not retried, repair is by
///   anti-entropy, counted next);
/// - anti-entropy pulls a missed purge from one random peer per round; with
///   up to 30% drop loss on digest and catch-up a round succeeds about half
///   the time, and the purge may first have to spread to the peer: 24
///   rounds leave well under 1e-6 per (purge, machine);
/// - a few round trips over the longest link, retransmitted under QUIC.
pub fn settle_bound(cfg: &Config, max_one_way: Duration) -> Duration {
    let join = crate::engines::JOIN_RETRY * 3;
    let swim = cfg.probe_interval * 2 + cfg.probe_interval.max(cfg.probe_timeout * 2) + cfg.suspect_timeout;
    let ae = cfg.ae_interval * 24;
    join + swim + ae + max_one_way * 16
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// Draws a schedule from its seed. Errors only if the shipped city list is
/// broken.
pub fn generate(seed: u64, opts: &Options) -> anyhow::Result<Schedule> {
    let mut rng = StdRng::seed_from_u64(seed);
    let pops = rng.random_range(2..=8);
    let per_pop = rng.random_range(1..=5);
    let topo = Topology::world(pops, per_pop)?;
    // Now and then a burst of more purges than one catch-up message
    // carries (ae_batch, 512), so a node cut off during it must catch up
    // in several batches.
    let burst = rng.random_bool(0.05);
    let purges = if burst { rng.random_range(520..=700) } else { rng.random_range(1..=40) };
    let interval = if burst { ms(&mut rng, 1, 3) } else { ms(&mut rng, 5, 100) };
    let warmup = ms(&mut rng, 200, 1000);
    let pick = |rng: &mut StdRng, p_zero: f64, max: f64| {
        if rng.random_bool(p_zero) {
            0.0
        } else {
            (rng.random_range(0.0..max) * 1000.0).round() / 1000.0
        }
    };
    let loss = pick(&mut rng, 0.2, 0.3);
    let loss_model = if rng.random_bool(0.5) { LossArg::Quic } else { LossArg::Drop };
    let crashed = pick(&mut rng, 0.5, 0.3);
    let crash_during = pick(&mut rng, 0.5, 0.3);
    // Faults land anywhere from the start to a second after the last purge.
    let horizon = (warmup + interval * purges as u32 + Duration::from_secs(1)).as_millis() as u64;
    let n_parts = *[0, 1, 1, 2, 3].choose(&mut rng).unwrap_or(&0);
    let mut partition = Vec::new();
    for _ in 0..n_parts {
        let region = topo.regions.choose(&mut rng).cloned().unwrap_or_default();
        let start = ms(&mut rng, 0, horizon);
        let duration = ms(&mut rng, 100, 20_000);
        partition.push(Partition { region, start, duration });
    }
    let mut common = Common {
        seed,
        pops,
        machines_per_pop: per_pop,
        inflation: 1.5,
        jitter: Jitter::Fraction(0.05),
        intra_us: 200,
        proc_us: 20,
        send_us: 0,
        loss,
        loss_model,
        crashed,
        crash_during,
        partition,
        purges,
        interval,
        warmup,
        max_time: Duration::from_secs(120),
        tail: Duration::from_millis(200),
        core_city: "Ashburn".into(),
        fanout: None,
        pop_entry: None,
        pop_direct_max: None,
        ae_interval: None,
        probe_interval: None,
        probe_timeout: None,
        suspect_timeout: None,
        piggyback_max: None,
        threads: 1,
    };
    if opts.vary_config {
        // Its own stream, so the schedules themselves stay the same.
        let mut c = StdRng::seed_from_u64(seed ^ 0x636f_6e66_6967);
        common.pop_entry = Some(c.random_range(1..=4));
        // Small enough, often, for PoPs to be covered by gossip inside.
        common.pop_direct_max = Some(c.random_range(1..=6));
        common.fanout = if c.random_bool(0.5) { None } else { Some(c.random_range(1..=4)) };
        common.ae_interval = Some(ms(&mut c, 100, 1000));
        let probe = ms(&mut c, 300, 2000);
        common.probe_interval = Some(probe);
        common.probe_timeout = Some(ms(&mut c, 100, probe.as_millis() as u64));
        common.suspect_timeout = Some(ms(&mut c, 500, 5000));
        common.piggyback_max = Some(c.random_range(1..=8));
    }
    let (mut scn, echo) = common.scenario()?;
    let mut wl = scn.workload();
    let n = scn.topo.len();

    // Machines that crash and come back, among those up for the whole run;
    // at least one machine stays up throughout to originate purges.
    let mut steady: Vec<usize> = (0..n).filter(|m| wl.is_live(*m)).collect();
    steady.shuffle(&mut rng);
    let want = if rng.random_bool(0.4) { 0 } else { rng.random_range(1..=3) };
    let forced = usize::from(opts.inject == Some(Inject::ForgetOnRestart));
    let restarts = want.max(forced).min(steady.len().saturating_sub(1));
    let warm = warmup.as_millis() as u64;
    for &m in &steady[..restarts] {
        let down = Time::ZERO + ms(&mut rng, warm, horizon.max(warm));
        wl.crash_at[m] = Some(down);
        wl.restart_at[m] = Some(down + ms(&mut rng, 200, 8_000));
    }
    // Origins: machines up at the end (one that crashes for good may take
    // an acknowledged purge with it, if nothing left it yet). One that is
    // down, or restarted and not rejoined yet, refuses the purge, which is
    // then owed to nobody.
    for i in 0..wl.purges.len() {
        let ok: Vec<usize> = (0..n).filter(|m| wl.is_live(*m)).collect();
        if let Some(&o) = ok.choose(&mut rng) {
            wl.purges[i].origin = o;
        }
    }

    let heals = scn.heals().into_iter().map(|d| Time::ZERO + d);
    let faults = wl.crash_at.iter().chain(&wl.restart_at).flatten().copied();
    let last_purge = wl.purges.iter().map(|p| p.at);
    let quiet = heals.chain(faults).chain(last_purge).max().unwrap_or(Time::ZERO);
    let net = Net::new(&scn.topo, scn.run.net.clone(), seed);
    let pops_n = scn.topo.pops.len();
    let max_us = (0..pops_n).flat_map(|a| (0..pops_n).map(move |b| (a, b))).map(|(a, b)| net.base_us(a, b)).max();
    let bound = settle_bound(&scn.config, Duration::from_micros(max_us.unwrap_or(0)));
    // Run past the bound so a late completion is measured, not cut off; and
    // at least 3 s past the last fault, so a restarted machine has time to
    // apply something twice.
    scn.run.max_time = quiet.since(Time::ZERO) + bound * 3;
    scn.run.tail = quiet.since(Time::ZERO) + Duration::from_secs(3);
    if opts.inject == Some(Inject::NeverHeal) {
        let region = scn.topo.regions[scn.topo.pops[0].region].clone();
        let forever = Duration::from_secs(1_000_000);
        // From the start, so that every purge has to cross it.
        match scn.run.net.partitions.first_mut() {
            Some(p) => (p.start, p.duration) = (Duration::ZERO, forever),
            None => scn.run.net.partitions.push(Partition { region, start: Duration::ZERO, duration: forever }),
        }
    }
    Ok(Schedule { seed, scn, wl, echo, quiet, bound })
}

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
    Run { report, counters: p.counters.clone(), settle, refused, after_restart }
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
    /// Worst time from a partition's heal to full delivery (ms).
    pub worst_heal_ms: Option<f64>,
    pub events: u64,
    pub refused: usize,
    pub after_restart: usize,
}

impl Checked {
    fn new(seed: u64) -> Checked {
        Checked {
            seed,
            problems: Vec::new(),
            worst_settle: None,
            worst_heal_ms: None,
            events: 0,
            refused: 0,
            after_restart: 0,
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
        for h in r.report.heal_to_full_ms.iter().flatten() {
            c.worst_heal_ms = Some(c.worst_heal_ms.map_or(*h, |w: f64| w.max(*h)));
        }
        c.events += r.report.events;
        c.refused += r.refused;
        c.after_restart += r.after_restart;
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
    pub worst_heal_ms: Option<(f64, u64)>,
    pub events: u64,
    pub refused: usize,
    pub after_restart: usize,
}

pub fn fuzz(master: u64, n: usize, opts: &Options, threads: usize) -> Summary {
    let all = par_map(&seeds(master, n), threads, |s| check(*s, opts));
    let mut sum = Summary {
        schedules: n,
        failures: Vec::new(),
        worst_settle: None,
        worst_heal_ms: None,
        events: 0,
        refused: 0,
        after_restart: 0,
    };
    for c in all {
        sum.events += c.events;
        sum.refused += c.refused;
        sum.after_restart += c.after_restart;
        if let Some(d) = c.worst_settle {
            if sum.worst_settle.is_none_or(|(w, _)| d > w) {
                sum.worst_settle = Some((d, c.seed));
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

/// The FAIL lines of a failed schedule.
pub fn fail_text(c: &Checked, opts: &Options) -> String {
    let mut s = String::new();
    for p in &c.problems {
        let _ = writeln!(s, "FAIL schedule seed={}: {p}", c.seed);
    }
    let _ = writeln!(s, "  replay: {}", opts.replay_command(c.seed));
    s
}

pub fn summary_text(master: u64, sum: &Summary, opts: &Options) -> String {
    let names: Vec<&str> = opts.strategies.iter().map(|s| s.name()).collect();
    let mut s = String::new();
    for c in &sum.failures {
        s.push_str(&fail_text(c, opts));
    }
    let _ = writeln!(
        s,
        "fuzz seed {master}: {} schedules x {}, {} failed",
        sum.schedules,
        names.join(","),
        sum.failures.len()
    );
    match sum.worst_settle {
        Some((d, seed)) => {
            let _ = writeln!(s, "worst completion after the last fault: {} ms (schedule seed={seed})", d.as_millis());
        }
        None => {
            let _ = writeln!(s, "worst completion after the last fault: none completed");
        }
    }
    if let Some((h, seed)) = sum.worst_heal_ms {
        let _ = writeln!(s, "worst full delivery after a partition heal: {h:.1} ms (schedule seed={seed})");
    }
    let _ = writeln!(
        s,
        "{} events simulated; purges refused by a down or unjoined origin: {}; accepted by restarted machines: {}",
        sum.events, sum.refused, sum.after_restart
    );
    s
}

/// One schedule in full: what was generated, the report, the verdict.
pub fn replay_text(seed: u64, opts: &Options) -> anyhow::Result<(String, bool)> {
    let sch = generate(seed, opts)?;
    let mut s = String::new();
    let _ =
        writeln!(s, "schedule seed={seed}{}", opts.inject.map_or(String::new(), |i| format!(" (inject {})", i.flag())));
    let wl = &sch.wl;
    for (m, mach) in sch.scn.topo.machines.iter().enumerate() {
        let state = if wl.crashed[m] {
            "dead from the start".to_string()
        } else {
            match (wl.crash_at[m], wl.restart_at[m]) {
                (Some(c), Some(r)) => {
                    format!("crashes at {:.0} ms, restarts at {:.0} ms", c.as_millis_f64(), r.as_millis_f64())
                }
                (Some(c), None) => format!("crashes at {:.0} ms for good", c.as_millis_f64()),
                _ => continue,
            }
        };
        let _ = writeln!(s, "machine {m} ({}): {state}", mach.name);
    }
    for p in &sch.scn.run.net.partitions {
        let _ = writeln!(s, "partition region={} from {:?} to {:?}", p.region, p.start, p.heal());
    }
    let origins: Vec<String> = wl.purges.iter().map(|p| format!("{}@{:.0}", p.origin, p.at.as_millis_f64())).collect();
    let _ = writeln!(s, "purges (origin@ms): {}", origins.join(" "));
    let _ = writeln!(
        s,
        "last fault at {:.0} ms; delivery must be complete {} ms later",
        sch.quiet.as_millis_f64(),
        sch.bound.as_millis()
    );
    let mut reports = Vec::new();
    let mut verdict = Vec::new();
    let mut tail = String::new();
    for &st in &opts.strategies {
        let r = run_schedule(&sch, st, opts);
        let settle = r.settle.map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
        let _ = writeln!(
            tail,
            "{}: complete {settle} after the last fault; {} purges refused, {} accepted by restarted machines; \
             engine counters {:?}",
            st.name(),
            r.refused,
            r.after_restart,
            r.counters
        );
        verdict.extend(problems(&sch, &r));
        reports.push(r.report);
    }
    s.push('\n');
    s.push_str(&text(&sch.echo, &reports));
    s.push('\n');
    s.push_str(&tail);
    let ok = verdict.is_empty();
    let c = Checked { problems: verdict, ..Checked::new(seed) };
    if ok {
        let _ = writeln!(s, "OK schedule seed={seed}");
    } else {
        s.push_str(&fail_text(&c, opts));
    }
    Ok((s, ok))
}
