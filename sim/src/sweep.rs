//! The `sweep` subcommand: one knob at a time, same workload for all.

use std::fmt::Write as _;

use purgecast_core::Config;
use serde::Serialize;

use crate::metrics::Report;
use crate::msg_kind::MsgKind;
use crate::plot::{SweepLine, SweepPoint};
use crate::scenario::{par_map, run_strategy, Scenario, Strategy};

/// The parameter a sweep varies, and the engine strategy it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    /// Flat gossip's fanout.
    Fanout,
    /// Members of each remote PoP the topology origin pushes to.
    PopEntry,
}

impl Knob {
    pub const ALL: [Knob; 2] = [Knob::Fanout, Knob::PopEntry];

    pub fn name(self) -> &'static str {
        match self {
            Knob::Fanout => "fanout",
            Knob::PopEntry => "pop_entry",
        }
    }

    pub fn strategy(self) -> Strategy {
        match self {
            Knob::Fanout => Strategy::Gossip,
            Knob::PopEntry => Strategy::Topology,
        }
    }

    fn set(self, value: usize, config: &Config) -> Config {
        match self {
            Knob::Fanout => Config { fanout: Some(value), ..config.clone() },
            Knob::PopEntry => Config { pop_entry: value, ..config.clone() },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Setting {
    knob: Knob,
    value: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    pub strategy: &'static str,
    pub knob: Knob,
    pub value: usize,
    pub report: Report,
}

pub fn sweep(scn: &Scenario, fanouts: &[usize], pop_entries: &[usize], threads: usize) -> Vec<SweepRow> {
    let wl = scn.workload();
    let mut jobs: Vec<Setting> = Vec::new();
    jobs.extend(fanouts.iter().map(|v| Setting { knob: Knob::Fanout, value: *v }));
    jobs.extend(pop_entries.iter().map(|v| Setting { knob: Knob::PopEntry, value: *v }));
    par_map(&jobs, threads, |&Setting { knob, value }| {
        let scn = Scenario { config: knob.set(value, &scn.config), ..scn.clone() };
        let s = knob.strategy();
        let o = run_strategy(&scn, &wl, s);
        SweepRow { strategy: s.name(), knob, value, report: o.report }
    })
}

/// One chart line per knob, in the order of [`Knob::ALL`].
pub fn lines(rows: &[SweepRow]) -> Vec<SweepLine> {
    Knob::ALL
        .iter()
        .map(|knob| SweepLine {
            name: format!("{} (x = {})", knob.strategy().name(), knob.name()),
            points: rows
                .iter()
                .filter(|r| r.knob == *knob)
                .map(|r| SweepPoint {
                    value: r.value as f64,
                    completion_p99_ms: r.report.completion.p99,
                    msgs_per_purge_machine: r.report.msgs_per_purge_machine,
                })
                .collect(),
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

pub fn text(rows: &[SweepRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:<9} {:>5} | {:>8} {:>8} {:>8} {:>8} | {:>6} {:>6} | {:>8} {:>8} {:>10}",
        "strategy",
        "knob",
        "value",
        "deliv%",
        "lat p50",
        "lat p99",
        "cmp p99",
        "r p50",
        "r p99",
        "msgs",
        "push",
        "incomplete"
    );
    for r in rows {
        let p = &r.report;
        let push = p.by_kind.iter().find(|k| k.kind == MsgKind::Push).map_or(0.0, |k| k.msgs_per_purge_machine);
        let _ = writeln!(
            s,
            "{:<9} {:<9} {:>5} | {:>8.3} {:>8.1} {:>8.1} {:>8.1} | {:>6.3} {:>6.3} | {:>8.3} {:>8.3} {:>10}",
            r.strategy,
            r.knob.name(),
            r.value,
            p.delivery_ratio * 100.0,
            p.latency.p50,
            p.latency.p99,
            p.completion.p99,
            p.completion_ratio_p50,
            p.completion_ratio_p99,
            p.msgs_per_purge_machine,
            push,
            p.incomplete_purges
        );
    }
    s
}
