//! `purgesim fuzz`: many small random fault schedules (loss, crashes before
//! and during the run, machines that crash and come back, partitions), each
//! run with the real engines and checked against the invariants: no purge
//! applied twice on a machine, every machine up at the end has every
//! acknowledged purge, and delivery completes within a bound after the last
//! fault. A failing schedule prints its seed and the command replaying it.

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, ValueEnum};
use purgecast_core::{Config, Time};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::cli::{Common, LossArg};
use crate::net::{CutDir, Jitter, Net, Partition};
use crate::report::Echo;
use crate::scenario::{Scenario, Strategy};
use crate::topology::Topology;
use crate::workload::{Bounce, Workload};

mod check;
mod text;

pub use check::{check, fuzz, problems, run_schedule, seeds, Checked, Run, StatusView, Summary};
pub use text::{fail_text, replay_text, summary_text};

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
    let join = purgecast_core::JOIN_RETRY * 3;
    let swim = cfg.probe_interval * 2 + cfg.probe_interval.max(cfg.probe_timeout * 2) + cfg.suspect_timeout;
    let ae = cfg.ae_interval * 24;
    join + swim + ae + max_one_way * 16
}

/// How long a view may take to find a silent member dead by its own
/// probes alone, without news from others: SWIM's round-robin probes every
/// member within two rounds of `n` periods, then the indirect phase and the
/// suspicion timeout. News of deaths usually comes much sooner, but a node
/// that forgot a member no longer passes on news about it.
pub(crate) fn detect_alone(cfg: &Config, n: usize) -> Duration {
    cfg.probe_interval * (2 * n as u32 + 3) + cfg.suspect_timeout
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// Draws a schedule from its seed. Errors only if the shipped city list is
/// broken.
pub fn generate(seed: u64, opts: &Options) -> anyhow::Result<Schedule> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (common, horizon) = draw_common(&mut rng, seed, opts)?;
    let (mut scn, echo) = common.scenario()?;
    let mut wl = scn.workload();
    draw_restarts(&mut rng, &mut wl, opts, horizon, common.warmup);
    // Drawn from their own stream, so the schedules above stay what they
    // were before these were added.
    let mut more = StdRng::seed_from_u64(seed ^ 0x626f_756e_6365);
    draw_bounces(&mut more, &mut wl, horizon);
    draw_origins(&mut rng, &mut wl);
    let forget = draw_forget(&mut more, &scn);
    if let Some(f) = forget {
        scn.config.forget_dead_after = f;
    }

    let heals = scn.heals().into_iter().map(|d| Time::ZERO + d);
    let bounces = wl.bounces.iter().flat_map(|b| [b.down, b.up]);
    let faults = wl.crash_at.iter().chain(&wl.restart_at).flatten().copied().chain(bounces);
    let last_purge = wl.purges.iter().map(|p| p.at);
    let quiet = heals.chain(faults).chain(last_purge).max().unwrap_or(Time::ZERO);
    let net = Net::new(&scn.topo, scn.run.net.clone(), seed);
    let pops_n = scn.topo.pops.len();
    let max_us = (0..pops_n).flat_map(|a| (0..pops_n).map(move |b| (a, b))).map(|(a, b)| net.base_us(a, b)).max();
    let bound = settle_bound(&scn.config, Duration::from_micros(max_us.unwrap_or(0)));
    // Run past the bound so a late completion is measured, not cut off; and
    // past the bound after the last fault once everything is applied, so
    // that a restarted machine has time to apply something twice and the
    // origins' completion status has time to converge.
    scn.run.max_time = quiet.since(Time::ZERO) + bound * 3;
    scn.run.tail = quiet.since(Time::ZERO) + bound;
    if let Some(f) = forget {
        // Long enough for every view to forget the machines dead for good
        // (see `check::unforgotten`).
        let last_down = wl.crash_at.iter().flatten().max().map_or(Duration::ZERO, |t| t.since(Time::ZERO));
        let forgotten = last_down + detect_alone(&scn.config, wl.crashed.len()) + f * 2 + Duration::from_secs(1);
        scn.run.tail = scn.run.tail.max(forgotten);
        scn.run.max_time = scn.run.max_time.max(forgotten * 2);
    }
    if opts.inject == Some(Inject::NeverHeal) {
        never_heal(&mut scn);
    }
    Ok(Schedule { seed, scn, wl, echo, quiet, bound })
}

/// Topology, workload size, loss, crash fractions and partitions; and the
/// time by which faults have landed (ms).
fn draw_common(rng: &mut StdRng, seed: u64, opts: &Options) -> anyhow::Result<(Common, u64)> {
    let pops = rng.random_range(2..=8);
    let per_pop = rng.random_range(1..=5);
    let topo = Topology::world(pops, per_pop)?;
    // Now and then a burst of more purges than one catch-up message
    // carries (ae_batch, 512), so a node cut off during it must catch up
    // in several batches.
    let burst = rng.random_bool(0.05);
    let purges = if burst { rng.random_range(520..=700) } else { rng.random_range(1..=40) };
    let interval = if burst { ms(rng, 1, 3) } else { ms(rng, 5, 100) };
    let warmup = ms(rng, 200, 1000);
    let pick = |rng: &mut StdRng, p_zero: f64, max: f64| {
        if rng.random_bool(p_zero) {
            0.0
        } else {
            (rng.random_range(0.0..max) * 1000.0).round() / 1000.0
        }
    };
    let loss = pick(rng, 0.2, 0.3);
    let loss_model = if rng.random_bool(0.5) { LossArg::Quic } else { LossArg::Drop };
    let crashed = pick(rng, 0.5, 0.3);
    let crash_during = pick(rng, 0.5, 0.3);
    // Faults land anywhere from the start to a second after the last purge.
    let horizon = (warmup + interval * purges as u32 + Duration::from_secs(1)).as_millis() as u64;
    let partition = draw_partitions(rng, &topo, horizon);
    let mut common = Common {
        loss,
        loss_model,
        crashed,
        crash_during,
        partition,
        purges,
        interval,
        warmup,
        ..base_common(seed, pops, per_pop)
    };
    if opts.vary_config {
        vary_config(&mut common, seed);
    }
    Ok((common, horizon))
}

/// The fixed part of every schedule: a world map of `pops` x `per_pop`, no
/// faults, default protocol parameters.
fn base_common(seed: u64, pops: usize, per_pop: usize) -> Common {
    Common {
        seed,
        pops,
        machines_per_pop: per_pop,
        inflation: 1.5,
        jitter: Jitter::Fraction(0.05),
        intra_us: 200,
        proc_us: 20,
        send_us: 0,
        loss: 0.0,
        loss_model: LossArg::Quic,
        crashed: 0.0,
        crash_during: 0.0,
        partition: Vec::new(),
        purges: 1,
        origins: 0,
        ack_relay: true,
        ack_spacing: None,
        retention: None,
        track_for: None,
        interval: Duration::from_millis(10),
        warmup: Duration::from_secs(1),
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
    }
}

/// Issue 10's repro as a schedule: `nodes` machines in one PoP, `purges`
/// purges `interval` apart from the first `origins` machines in turn; the
/// last `killed` crash at a third of the purges and restart at two thirds.
/// Messages are dropped with probability `loss` and never retransmitted:
/// the simulator's stand-in for what a killed process or a cut connection
/// loses (frames queued for a peer, an ack for a purge just applied).
pub fn restart_storm(
    nodes: usize,
    purges: usize,
    interval: Duration,
    origins: usize,
    killed: usize,
    loss: f64,
) -> anyhow::Result<Schedule> {
    let common = Common { purges, interval, loss, loss_model: LossArg::Drop, ..base_common(1, 1, nodes) };
    let (mut scn, echo) = common.scenario()?;
    let mut wl = scn.workload();
    for (i, p) in wl.purges.iter_mut().enumerate() {
        p.origin = i % origins.max(1);
    }
    let at = |k: usize| wl.purges.get(k).map_or(Time::ZERO, |p| p.at);
    let (down, up) = (at(purges / 3), at(purges * 2 / 3));
    for m in nodes.saturating_sub(killed)..nodes {
        wl.crash_at[m] = Some(down);
        wl.restart_at[m] = Some(up);
    }
    let quiet = wl.purges.iter().map(|p| p.at).max().unwrap_or(Time::ZERO).max(up);
    let bound = settle_bound(&scn.config, Duration::from_millis(1));
    scn.run.max_time = quiet.since(Time::ZERO) + bound * 3;
    scn.run.tail = quiet.since(Time::ZERO) + bound;
    Ok(Schedule { seed: 1, scn, wl, echo, quiet, bound })
}

fn draw_partitions(rng: &mut StdRng, topo: &Topology, horizon: u64) -> Vec<Partition> {
    let n_parts = *[0, 1, 1, 2, 3].choose(rng).unwrap_or(&0);
    let mut partition = Vec::new();
    for _ in 0..n_parts {
        let region = topo.regions.choose(rng).cloned().unwrap_or_default();
        let start = ms(rng, 0, horizon);
        let duration = ms(rng, 100, 20_000);
        let dir = *[CutDir::Both, CutDir::Both, CutDir::In, CutDir::Out].choose(rng).unwrap_or(&CutDir::Both);
        partition.push(Partition { region, start, duration, dir });
    }
    partition
}

/// The protocol parameters, from their own stream so that the schedules
/// themselves stay the same.
fn vary_config(common: &mut Common, seed: u64) {
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
    // Drawn last: the draws above stay what they were for every seed.
    common.ack_relay = c.random_bool(0.5);
    // Zero half the time (batches after `ack_flush` alone), else up to
    // what the drawn anti-entropy period allows (`Config::validate`).
    let room = common.ae_interval.map_or(0, |ae| ae.as_millis() as u64).saturating_sub(2);
    common.ack_spacing = Some(if c.random_bool(0.5) { Duration::ZERO } else { ms(&mut c, 1, room.clamp(1, 100)) });
}

/// Machines that crash and come back, among those up for the whole run
/// (at least one stays up throughout to originate purges); and machines
/// dead from the start that come back: a node joining a cluster in which
/// every view has it dead.
fn draw_restarts(rng: &mut StdRng, wl: &mut Workload, opts: &Options, horizon: u64, warmup: Duration) {
    let n = wl.crashed.len();
    let mut steady: Vec<usize> = (0..n).filter(|m| wl.is_live(*m)).collect();
    steady.shuffle(rng);
    let want = if rng.random_bool(0.4) { 0 } else { rng.random_range(1..=3) };
    let forced = usize::from(opts.inject == Some(Inject::ForgetOnRestart));
    let restarts = want.max(forced).min(steady.len().saturating_sub(1));
    let warm = warmup.as_millis() as u64;
    for &m in &steady[..restarts] {
        let down = Time::ZERO + ms(rng, warm, horizon.max(warm));
        wl.crash_at[m] = Some(down);
        wl.restart_at[m] = Some(down + ms(rng, 200, 8_000));
    }
    let dead: Vec<usize> = (0..n).filter(|m| wl.crashed[*m]).collect();
    let joiners = if dead.is_empty() || rng.random_bool(0.7) { 0 } else { rng.random_range(1..=dead.len().min(2)) };
    for m in dead.choose_multiple(rng, joiners).copied().collect::<Vec<_>>() {
        wl.restart_at[m] = Some(Time::ZERO + ms(rng, 0, horizon));
    }
}

/// Half the machines that crash and come back do so several times: up to
/// three more short cycles after the first restart, the last one being the
/// `crash_at`/`restart_at` pair. Each restart is a new boot epoch and a new
/// purge stream, and the origins must still see every purge complete.
fn draw_bounces(rng: &mut StdRng, wl: &mut Workload, horizon: u64) {
    for m in 0..wl.crashed.len() {
        let (Some(down), Some(up)) = (wl.crash_at[m], wl.restart_at[m]) else { continue };
        if rng.random_bool(0.5) {
            continue;
        }
        let (mut down, mut up) = (down, up);
        for _ in 0..rng.random_range(1..=3) {
            wl.bounces.push(Bounce { machine: m, down, up });
            let from = up.as_millis_f64() as u64 + 100;
            down = Time::ZERO + ms(rng, from, from.max(horizon) + 2_000);
            up = down + ms(rng, 100, 4_000);
        }
        wl.crash_at[m] = Some(down);
        wl.restart_at[m] = Some(up);
    }
}

/// Origins: machines up at the end (one that crashes for good may take an
/// acknowledged purge with it, if nothing left it yet). One that is down,
/// or restarted and not rejoined yet, refuses the purge, which is then owed
/// to nobody.
fn draw_origins(rng: &mut StdRng, wl: &mut Workload) {
    let n = wl.crashed.len();
    for i in 0..wl.purges.len() {
        let ok: Vec<usize> = (0..n).filter(|m| wl.is_live(*m)).collect();
        if let Some(&o) = ok.choose(rng) {
            wl.purges[i].origin = o;
        }
    }
}

/// In a third of the schedules, dead members are forgotten within the run
/// (`forget_dead_after` of a few seconds): machines dead for good must stop being
/// knocked on, and machines that come back after being forgotten must be
/// learned again. Longer than any partition plus its detection, so the two
/// sides of a partition never forget each other (which, as in Serf, only a
/// restart or a new join would heal).
fn draw_forget(rng: &mut StdRng, scn: &Scenario) -> Option<Duration> {
    if !rng.random_bool(1.0 / 3.0) {
        return None;
    }
    let cfg = &scn.config;
    let detect = cfg.probe_interval * 3 + cfg.suspect_timeout;
    let longest = scn.run.net.partitions.iter().map(|p| p.duration).max().unwrap_or_default();
    Some(longest + detect + ms(rng, 1_000, 6_000))
}

fn never_heal(scn: &mut Scenario) {
    let region = scn.topo.regions[scn.topo.pops[0].region].clone();
    let forever = Duration::from_secs(1_000_000);
    // From the start, so that every purge has to cross it.
    match scn.run.net.partitions.first_mut() {
        Some(p) => (p.start, p.duration) = (Duration::ZERO, forever),
        None => scn.run.net.partitions.push(Partition {
            region,
            start: Duration::ZERO,
            duration: forever,
            dir: CutDir::Both,
        }),
    }
}
