//! Text tables and JSON for a set of strategy reports.

use std::fmt::Write as _;

use serde::Serialize;

use crate::metrics::Report;

/// The parameters echoed at the top of every report, so a table or JSON
/// file says how to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Echo {
    pub seed: u64,
    pub pops: usize,
    pub machines_per_pop: usize,
    pub machines: usize,
    pub crashed: usize,
    pub crash_during: usize,
    pub purges: usize,
    pub interval_ms: f64,
    pub loss: f64,
    pub loss_model: String,
    pub jitter: String,
    pub inflation: f64,
    pub proc_us: u64,
    pub send_us: u64,
    pub partitions: Vec<String>,
    pub core_pop: String,
    pub fanout: Option<usize>,
    pub pop_entry: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Full<'a> {
    pub params: &'a Echo,
    pub strategies: &'a [Report],
}

pub fn json(echo: &Echo, reports: &[Report]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&Full { params: echo, strategies: reports })
}

pub fn text(echo: &Echo, reports: &[Report]) -> String {
    let mut s = scenario_lines(echo);
    for p in &echo.partitions {
        let _ = writeln!(s, "partition: {p}");
    }
    latency_table(&mut s, reports);
    completion_table(&mut s, reports);
    cost_table(&mut s, reports);
    run_table(&mut s, reports);
    s
}

/// The scenario in two lines, partitions aside: how to rerun it.
pub fn scenario_lines(echo: &Echo) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "purgesim seed {}: {} PoPs x {} = {} machines ({} crashed before, {} during), {} purges every {} ms",
        echo.seed,
        echo.pops,
        echo.machines_per_pop,
        echo.machines,
        echo.crashed,
        echo.crash_during,
        echo.purges,
        echo.interval_ms
    );
    let _ = writeln!(
        s,
        "network: loss {}% ({}), jitter {}, inflation {}, proc {} us/msg, send {} us/msg, core PoP {}, pop_entry {}, fanout {}",
        echo.loss * 100.0,
        echo.loss_model,
        echo.jitter,
        echo.inflation,
        echo.proc_us,
        echo.send_us,
        echo.core_pop,
        echo.pop_entry,
        echo.fanout.map_or("auto".to_string(), |f| f.to_string())
    );
    s
}

fn latency_table(s: &mut String, reports: &[Report]) {
    let _ = writeln!(s, "\nper-machine delivery latency (ms); bound = direct one-way fibre latency from the origin");
    let _ = writeln!(
        s,
        "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} | {:>6} {:>6}",
        "strategy", "deliv%", "p50", "p90", "p99", "p99.9", "max", "bnd p50", "bnd p99", "r p50", "r p99"
    );
    for r in reports {
        let l = &r.latency;
        let _ = writeln!(
            s,
            "{:<10} {:>8.3} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} | {:>6.3} {:>6.3}",
            r.strategy,
            r.delivery_ratio * 100.0,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.latency_bound.p50,
            r.latency_bound.p99,
            r.latency_ratio_p50,
            r.latency_ratio_p99
        );
    }
}

fn completion_table(s: &mut String, reports: &[Report]) {
    let _ =
        writeln!(s, "\nper-purge completion (ms, until the last live machine applied); bound = max over live machines");
    let _ = writeln!(
        s,
        "{:<10} {:>8} {:>8} {:>8} | {:>8} {:>8} | {:>6} {:>6} {:>6} | {:>10}",
        "strategy", "p50", "p99", "max", "bnd p50", "bnd p99", "r p50", "r p99", "r med", "incomplete"
    );
    for r in reports {
        let c = &r.completion;
        let _ = writeln!(
            s,
            "{:<10} {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} | {:>6.3} {:>6.3} {:>6.3} | {:>10}",
            r.strategy,
            c.p50,
            c.p99,
            c.max,
            r.completion_bound.p50,
            r.completion_bound.p99,
            r.completion_ratio_p50,
            r.completion_ratio_p99,
            r.completion_ratio_median,
            r.incomplete_purges
        );
    }
    for r in reports {
        if let Some(c) = &r.origin_completion {
            let _ = writeln!(
                s,
                "{:<10} as its origin sees it (accept -> every ack): p50 {:.1}, p99 {:.1}, max {:.1} ms, {} purges",
                r.strategy, c.p50, c.p99, c.max, c.n
            );
        }
    }
}

fn cost_table(s: &mut String, reports: &[Report]) {
    let _ = writeln!(s, "\ncost per purge per machine (all messages, incl. acks, anti-entropy and SWIM)");
    let _ = writeln!(s, "{:<10} {:>8} {:>10}  by kind (msgs / bytes)", "strategy", "msgs", "bytes");
    for r in reports {
        let kinds: Vec<String> = r
            .by_kind
            .iter()
            .map(|k| format!("{} {:.3}/{:.0}", k.kind, k.msgs_per_purge_machine, k.bytes_per_purge_machine))
            .collect();
        let _ = writeln!(
            s,
            "{:<10} {:>8.3} {:>10.1}  {}",
            r.strategy,
            r.msgs_per_purge_machine,
            r.bytes_per_purge_machine,
            kinds.join(", ")
        );
    }
}

/// Run sizes and the invariants (both must be zero), with heal times.
fn run_table(s: &mut String, reports: &[Report]) {
    let _ = writeln!(s, "\nrun: events, simulated end, retransmitted / dropped messages, invariants, partition heal");
    for r in reports {
        let heals: Vec<String> =
            r.heal_to_full_ms.iter().map(|h| h.map_or("never".to_string(), |ms| format!("{ms:.1} ms"))).collect();
        let _ = writeln!(
            s,
            "{:<10} {:>10} events, end {:.1} ms, retx {}, dropped {}, busiest machine {:.0} msgs/s and {:.1} acks/purge, applied twice {}, missing {}{}",
            r.strategy,
            r.events,
            r.sim_end_ms,
            r.retransmitted,
            r.dropped,
            r.busiest_msgs_per_s,
            r.busiest_acks_per_purge,
            r.invariants.applied_twice,
            r.invariants.missing,
            if heals.is_empty() { String::new() } else { format!(", full delivery after heal: {}", heals.join(", ")) }
        );
        let kinds: Vec<String> = r.busiest_by_kind.iter().map(|k| format!("{} {:.0}", k.kind, k.msgs_per_s)).collect();
        let _ = writeln!(s, "{:<10} busiest machine by kind (msgs/s): {}", "", kinds.join(", "));
    }
}
