//! The `sweep` subcommand: one knob at a time, same workload for all.

use std::fmt::Write as _;

use purgecast_core::Config;
use serde::Serialize;

use crate::metrics::Report;
use crate::plot::SweepLine;
use crate::scenario::{par_map, run_strategy, Scenario, Strategy};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    pub strategy: &'static str,
    pub knob: &'static str,
    pub value: usize,
    pub report: Report,
}

pub fn sweep(scn: &Scenario, fanouts: &[usize], pop_entries: &[usize], threads: usize) -> Vec<SweepRow> {
    let wl = scn.workload();
    let mut jobs: Vec<(Strategy, &'static str, usize)> = Vec::new();
    jobs.extend(fanouts.iter().map(|f| (Strategy::Gossip, "fanout", *f)));
    jobs.extend(pop_entries.iter().map(|e| (Strategy::Topology, "pop_entry", *e)));
    par_map(&jobs, threads, |(s, knob, v)| {
        let config = if *knob == "fanout" {
            Config { fanout: Some(*v), ..scn.config.clone() }
        } else {
            Config { pop_entry: *v, ..scn.config.clone() }
        };
        let scn = Scenario { config, ..scn.clone() };
        let o = run_strategy(&scn, &wl, *s);
        SweepRow { strategy: s.name(), knob, value: *v, report: o.report }
    })
}

pub fn lines(rows: &[SweepRow]) -> Vec<SweepLine> {
    ["gossip", "topology"]
        .iter()
        .map(|name| SweepLine {
            name: format!("{name} ({})", if *name == "gossip" { "x = fanout" } else { "x = pop_entry" }),
            points: rows
                .iter()
                .filter(|r| r.strategy == *name)
                .map(|r| (r.value as f64, r.report.completion.p99, r.report.msgs_per_purge_machine))
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
        let push = p.by_kind.iter().find(|k| k.kind == "push").map_or(0.0, |k| k.msgs_per_purge_machine);
        let _ = writeln!(
            s,
            "{:<9} {:<9} {:>5} | {:>8.3} {:>8.1} {:>8.1} {:>8.1} | {:>6.3} {:>6.3} | {:>8.3} {:>8.3} {:>10}",
            r.strategy,
            r.knob,
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
