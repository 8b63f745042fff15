//! Command-line options and their parsing into a [`Scenario`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use purgecast_core::Config;

use crate::net::{CutDir, Jitter, LossModel, NetParams, Partition};
use crate::report::Echo;
use crate::scenario::{Scenario, Strategy};
use crate::topology::{Topology, TopologyError};
use crate::workload::WorkloadParams;
use crate::world::RunParams;

#[derive(Debug, Parser)]
#[command(name = "purgesim", about = "Simulates purgecast and baselines over a world of PoPs", version)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run every strategy on one scenario (the default).
    Run(RunArgs),
    /// Vary gossip fanout and topology pop_entry; chart P99 and cost.
    Sweep(SweepArgs),
    /// Random fault schedules checked against the invariants.
    Fuzz(crate::fuzz::FuzzArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Comma-separated: topology, gossip, direct, core, regional.
    #[arg(long, default_value = "topology,gossip,direct,core,regional", value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Print JSON instead of the text table.
    #[arg(long)]
    pub json: bool,
    /// Write a latency CDF per strategy (cdf.svg) into this directory.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: Common,
    /// Gossip fanouts to try.
    #[arg(long, default_value = "2,3,4,6,8,11,16", value_delimiter = ',')]
    pub fanouts: Vec<usize>,
    /// Topology pop_entry values to try.
    #[arg(long, default_value = "1,2,3,4", value_delimiter = ',')]
    pub pop_entries: Vec<usize>,
    #[arg(long)]
    pub json: bool,
    /// Write sweep.svg into this directory.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LossArg {
    Quic,
    Drop,
}

#[derive(Debug, Args)]
pub struct Common {
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Points of presence, spread over the 357 shipped cities.
    #[arg(long, default_value_t = 330)]
    pub pops: usize,
    #[arg(long, default_value_t = 10)]
    pub machines_per_pop: usize,
    /// Route length over great-circle distance.
    #[arg(long, default_value_t = 1.5)]
    pub inflation: f64,
    /// Per-message extra delay: "5%" of the base latency, a duration such
    /// as "2ms" (uniform up to it), or "0".
    #[arg(long, default_value = "5%", value_parser = parse_jitter)]
    pub jitter: Jitter,
    /// One-way latency inside a PoP.
    #[arg(long, default_value_t = 200)]
    pub intra_us: u64,
    /// CPU per received message, serialised per machine.
    #[arg(long, default_value_t = 20)]
    pub proc_us: u64,
    /// CPU per sent message at the sender.
    #[arg(long, default_value_t = 0)]
    pub send_us: u64,
    /// Per-message loss probability on every link.
    #[arg(long, default_value_t = 0.01)]
    pub loss: f64,
    /// quic: a lost packet is retransmitted (extra delay); drop: lost.
    #[arg(long, value_enum, default_value = "quic")]
    pub loss_model: LossArg,
    /// Fraction of machines dead before the run (known dead).
    #[arg(long, default_value_t = 0.05)]
    pub crashed: f64,
    /// Fraction of machines crashing during the run (SWIM must notice).
    #[arg(long, default_value_t = 0.0)]
    pub crash_during: f64,
    /// "region=eu,start=2s,duration=5s"; repeatable. Times from t=0 (the
    /// first purge starts after --warmup).
    #[arg(long, value_parser = parse_partition)]
    pub partition: Vec<Partition>,
    #[arg(long, default_value_t = 1000)]
    pub purges: usize,
    /// Purges enter through this many machines in turn (0: any machine).
    #[arg(long, default_value_t = 0)]
    pub origins: usize,
    /// Acks travel through PoP entries in batches (core `ack_relay`);
    /// `--ack-relay false`: every member acks the origin directly.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ack_relay: bool,
    /// Least time between two ack batches from one relay to one origin
    /// (core `ack_spacing`; default: the core's).
    #[arg(long, value_parser = parse_duration)]
    pub ack_spacing: Option<Duration>,
    /// How long engines keep applied purges for catch-up (core
    /// `retention`; default: the core's, 24 h). Every engine keeps every
    /// purge that long, about 0.4 MB per purge over 3,300 engines: a few
    /// seconds bounds the memory of a long storm.
    #[arg(long, value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// How long an origin tracks a purge's completion (core `track_for`;
    /// default: the core's, 1 h).
    #[arg(long, value_parser = parse_duration)]
    pub track_for: Option<Duration>,
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub interval: Duration,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub max_time: Duration,
    /// Keep running this long after the last apply.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub tail: Duration,
    /// City of the core baseline (nearest selected PoP).
    #[arg(long, default_value = "Ashburn")]
    pub core_city: String,
    /// Engine fanout (default: ceil(ln n) + 2).
    #[arg(long)]
    pub fanout: Option<usize>,
    #[arg(long)]
    pub pop_entry: Option<usize>,
    #[arg(long)]
    pub pop_direct_max: Option<usize>,
    #[arg(long, value_parser = parse_duration)]
    pub ae_interval: Option<Duration>,
    /// SWIM probe period, direct-ack timeout, suspicion timeout.
    #[arg(long, value_parser = parse_duration)]
    pub probe_interval: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    pub probe_timeout: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    pub suspect_timeout: Option<Duration>,
    /// Membership updates piggybacked per SWIM message.
    #[arg(long)]
    pub piggyback_max: Option<usize>,
    /// Strategies run in parallel on this many threads (output unchanged).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// The human duration syntax of the whole project (`purgecast_core::parse_duration`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    purgecast_core::parse_duration(s).map_err(|e| e.to_string())
}

pub fn parse_jitter(s: &str) -> Result<Jitter, String> {
    let s = s.trim();
    if let Some(pct) = s.strip_suffix('%') {
        let f: f64 = pct.parse().map_err(|_| format!("bad jitter {s:?}"))?;
        if !(0.0..=1000.0).contains(&f) {
            return Err(format!("jitter {s:?} out of range"));
        }
        return Ok(if f == 0.0 { Jitter::None } else { Jitter::Fraction(f / 100.0) });
    }
    let d = parse_duration(s)?;
    Ok(if d.is_zero() { Jitter::None } else { Jitter::Fixed(d) })
}

pub fn parse_partition(s: &str) -> Result<Partition, String> {
    let (mut region, mut start, mut duration, mut dir) = (None, None, None, CutDir::Both);
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("expected key=value in {kv:?}"))?;
        match k.trim() {
            "region" => region = Some(v.trim().to_string()),
            "start" => start = Some(parse_duration(v)?),
            "duration" => duration = Some(parse_duration(v)?),
            "dir" => {
                dir = match v.trim() {
                    "both" => CutDir::Both,
                    "in" => CutDir::In,
                    "out" => CutDir::Out,
                    other => return Err(format!("partition dir must be both, in or out, not {other:?}")),
                }
            }
            other => return Err(format!("unknown partition key {other:?} (region, start, duration, dir)")),
        }
    }
    Ok(Partition {
        region: region.ok_or("partition needs region=")?,
        start: start.ok_or("partition needs start=")?,
        duration: duration.ok_or("partition needs duration=")?,
        dir,
    })
}

pub fn jitter_label(j: Jitter) -> String {
    match j {
        Jitter::None => "0".into(),
        Jitter::Fraction(f) => format!("{}%", f * 100.0),
        Jitter::Fixed(d) => format!("{}us", d.as_micros()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("unknown strategy {0:?} (topology, gossip, direct, core, regional)")]
    Strategy(String),
    #[error("{0} must be between 0 and 1")]
    Fraction(&'static str),
    #[error("partition region {0:?} is not one of {1:?}")]
    Region(String, Vec<String>),
}

pub fn strategies(names: &[String]) -> Result<Vec<Strategy>, CliError> {
    names.iter().map(|n| Strategy::parse(n.trim()).ok_or_else(|| CliError::Strategy(n.clone()))).collect()
}

impl Common {
    pub fn scenario(&self) -> Result<(Scenario, Echo), CliError> {
        let topo = self.topology()?;
        let core_pop = Scenario::core_pop_for(&topo, &self.core_city)?;
        let run = RunParams {
            net: self.net(),
            proc: Duration::from_micros(self.proc_us),
            send: Duration::from_micros(self.send_us),
            max_time: self.max_time,
            tail: self.tail,
            seed: self.seed,
        };
        let scn = Scenario { topo, workload: self.workload(), run, config: self.config(), core_pop };
        let echo = self.echo(&scn);
        Ok((scn, echo))
    }

    /// The world map, once the fractions are in range and every
    /// partition names a region on it.
    fn topology(&self) -> Result<Topology, CliError> {
        for (name, v) in [("--loss", self.loss), ("--crashed", self.crashed), ("--crash-during", self.crash_during)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(CliError::Fraction(name));
            }
        }
        let topo = Topology::world(self.pops, self.machines_per_pop)?;
        for p in &self.partition {
            if topo.region_index(&p.region).is_none() {
                return Err(CliError::Region(p.region.clone(), topo.regions.clone()));
            }
        }
        Ok(topo)
    }

    /// The core defaults, overridden by what was given.
    fn config(&self) -> Config {
        let defaults = Config::default();
        Config {
            fanout: self.fanout,
            pop_entry: self.pop_entry.unwrap_or(defaults.pop_entry),
            pop_direct_max: self.pop_direct_max.unwrap_or(defaults.pop_direct_max),
            ae_interval: self.ae_interval.unwrap_or(defaults.ae_interval),
            probe_interval: self.probe_interval.unwrap_or(defaults.probe_interval),
            probe_timeout: self.probe_timeout.unwrap_or(defaults.probe_timeout),
            suspect_timeout: self.suspect_timeout.unwrap_or(defaults.suspect_timeout),
            piggyback_max: self.piggyback_max.unwrap_or(defaults.piggyback_max),
            ack_relay: self.ack_relay,
            ack_spacing: self.ack_spacing.unwrap_or(defaults.ack_spacing),
            retention: self.retention.unwrap_or(defaults.retention),
            track_for: self.track_for.unwrap_or(defaults.track_for),
            ..defaults
        }
    }

    fn net(&self) -> NetParams {
        NetParams {
            inflation: self.inflation,
            jitter: self.jitter,
            intra: Duration::from_micros(self.intra_us),
            loss: self.loss,
            loss_model: match self.loss_model {
                LossArg::Quic => LossModel::Quic,
                LossArg::Drop => LossModel::Drop,
            },
            partitions: self.partition.clone(),
        }
    }

    fn workload(&self) -> WorkloadParams {
        WorkloadParams {
            purges: self.purges,
            interval: self.interval,
            warmup: self.warmup,
            crashed: self.crashed,
            crash_during: self.crash_during,
            origins: self.origins,
        }
    }

    fn echo(&self, scn: &Scenario) -> Echo {
        let wl = scn.workload();
        Echo {
            seed: self.seed,
            pops: scn.topo.pops.len(),
            machines_per_pop: self.machines_per_pop,
            machines: scn.topo.len(),
            crashed: wl.crashed.iter().filter(|c| **c).count(),
            crash_during: wl.crash_at.iter().filter(|c| c.is_some()).count(),
            purges: self.purges,
            interval_ms: self.interval.as_secs_f64() * 1e3,
            loss: self.loss,
            loss_model: format!("{:?}", scn.run.net.loss_model).to_lowercase(),
            jitter: jitter_label(self.jitter),
            inflation: self.inflation,
            proc_us: self.proc_us,
            send_us: self.send_us,
            partitions: self.partition.iter().map(partition_label).collect(),
            core_pop: scn.topo.pops[scn.core_pop].city.name.clone(),
            fanout: self.fanout,
            pop_entry: scn.config.pop_entry,
        }
    }
}

/// A partition as `--partition` takes it.
fn partition_label(p: &Partition) -> String {
    let dir = match p.dir {
        CutDir::Both => "",
        CutDir::In => ",dir=in",
        CutDir::Out => ",dir=out",
    };
    format!("region={},start={:?},duration={:?}{dir}", p.region, p.start, p.duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_jitter_and_partitions_parse() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_jitter("5%"), Ok(Jitter::Fraction(0.05)));
        assert_eq!(parse_jitter("2ms"), Ok(Jitter::Fixed(Duration::from_millis(2))));
        assert_eq!(parse_jitter("0"), Ok(Jitter::None));
        let p = parse_partition("region=eu,start=2s,duration=5s").unwrap();
        assert_eq!((p.region.as_str(), p.start, p.duration), ("eu", Duration::from_secs(2), Duration::from_secs(5)));
        assert!(parse_partition("region=eu").is_err());
        assert_eq!(parse_partition("region=eu,start=2s,duration=5s,dir=in").map(|p| p.dir), Ok(CutDir::In));
        assert!(parse_partition("region=eu,start=2s,duration=5s,dir=up").is_err());
        assert!(parse_partition("zone=eu,start=1s,duration=1s").is_err());
    }
}
