//! From a run's trace to the numbers we report: latency percentiles, the
//! physical bound and the ratio to it, delivery, cost, and invariants.

use std::time::Duration;

use serde::Serialize;

use crate::msg_kind::{MsgKind, SentByKind};
use crate::net::Net;
use crate::topology::Topology;
use crate::workload::Workload;
use crate::world::Trace;

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dist {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Dist {
    /// Nearest-rank percentiles of microsecond samples (sorted in place).
    pub fn of(samples: &mut [u64]) -> Dist {
        samples.sort_unstable();
        let ms = |q: f64| pct(samples, q) as f64 / 1000.0;
        Dist { n: samples.len(), p50: ms(0.50), p90: ms(0.90), p99: ms(0.99), p999: ms(0.999), max: ms(1.0) }
    }
}

/// Nearest-rank percentile of a sorted slice; 0 when empty.
pub fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        round3(a / b)
    } else {
        0.0
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindCost {
    pub kind: MsgKind,
    pub msgs_per_purge_machine: f64,
    pub bytes_per_purge_machine: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub strategy: String,
    /// Per (purge, live machine other than the origin).
    pub latency: Dist,
    pub latency_bound: Dist,
    pub latency_ratio_p50: f64,
    pub latency_ratio_p99: f64,
    /// Per purge: until the last live machine applied it.
    pub completion: Dist,
    pub completion_bound: Dist,
    pub completion_ratio_p50: f64,
    pub completion_ratio_p99: f64,
    pub completion_ratio_median: f64,
    pub incomplete_purges: usize,
    /// Applied (purge, live machine) pairs over all such pairs.
    pub delivery_ratio: f64,
    pub msgs_per_purge_machine: f64,
    pub bytes_per_purge_machine: f64,
    pub by_kind: Vec<KindCost>,
    /// Per healed partition: ms from the heal until every purge started
    /// before it had reached every live machine (None: never).
    pub heal_to_full_ms: Vec<Option<f64>>,
    pub events: u64,
    pub sim_end_ms: f64,
    pub retransmitted: u64,
    pub dropped: u64,
    /// Messages per second the busiest machine handled, from the first
    /// purge to the end of the run.
    pub busiest_msgs_per_s: f64,
    /// Acks (`applied`, `applied_by` messages) per accepted purge at the
    /// machine that handled the most: an origin's ack load.
    pub busiest_acks_per_purge: f64,
    /// What the busiest machine handled, by kind, per second.
    pub busiest_by_kind: Vec<KindRate>,
    /// Engines only: per purge, accept -> its origin holds every ack (or
    /// has the missing members dead), as `Engine::status` reports it.
    pub origin_completion: Option<Dist>,
    pub invariants: Invariants,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindRate {
    pub kind: MsgKind,
    pub msgs_per_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Invariants {
    /// (purge, machine) pairs applied more than once, any machine.
    pub applied_twice: usize,
    /// (purge, live machine) pairs never applied.
    pub missing: usize,
}

impl Invariants {
    pub fn hold(&self) -> bool {
        self.applied_twice == 0 && self.missing == 0
    }
}

/// What one pass over every (accepted purge, live machine) pair collects,
/// in microseconds.
struct Samples {
    /// Per machine other than the origin: apply latency and its bound.
    lat: Vec<u64>,
    lat_bound: Vec<u64>,
    /// Per purge every live machine applied: until the last one did, its
    /// bound, and their ratio (where the bound is not zero).
    compl: Vec<u64>,
    compl_bound: Vec<u64>,
    compl_ratio: Vec<f64>,
    inv: Invariants,
    /// Applied (purge, live machine) pairs.
    applied_live: usize,
}

fn samples(topo: &Topology, wl: &Workload, net: &Net, live: &[usize], t: &Trace) -> Samples {
    let n = t.machines;
    let mut s = Samples {
        lat: Vec::with_capacity(t.purges * live.len()),
        lat_bound: Vec::with_capacity(t.purges * live.len()),
        compl: Vec::new(),
        compl_bound: Vec::new(),
        compl_ratio: Vec::new(),
        inv: Invariants::default(),
        applied_live: 0,
    };
    for (p, spec) in wl.purges.iter().enumerate() {
        if t.refused[p] {
            continue;
        }
        let row = &t.applied_at[p * n..(p + 1) * n];
        s.inv.applied_twice += t.apply_count[p * n..(p + 1) * n].iter().filter(|c| **c > 1).count();
        let o_pop = topo.pop_of(spec.origin);
        let t0 = spec.at.as_micros();
        let (mut last, mut bound, mut all) = (0u64, 0u64, true);
        for &m in live {
            let b = if m == spec.origin { 0 } else { net.base_us(o_pop, topo.pop_of(m)) };
            bound = bound.max(b);
            if row[m] == u64::MAX {
                all = false;
                s.inv.missing += 1;
                continue;
            }
            s.applied_live += 1;
            let l = row[m].saturating_sub(t0);
            last = last.max(l);
            if m != spec.origin {
                s.lat.push(l);
                s.lat_bound.push(b);
            }
        }
        if all {
            s.compl.push(last);
            s.compl_bound.push(bound);
            if bound > 0 {
                s.compl_ratio.push(last as f64 / bound as f64);
            }
        }
    }
    s
}

/// The kinds sent at all, in the order of [`MsgKind::ALL`].
fn by_kind(sent: &SentByKind, denom: f64) -> Vec<KindCost> {
    sent.iter()
        .filter(|(_, t)| t.msgs > 0)
        .map(|(kind, t)| KindCost {
            kind,
            msgs_per_purge_machine: round3(t.msgs as f64 / denom),
            bytes_per_purge_machine: round3(t.bytes as f64 / denom),
        })
        .collect()
}

pub fn report(name: &str, topo: &Topology, wl: &Workload, net: &Net, heals: &[Duration], t: &Trace) -> Report {
    let n = t.machines;
    let live: Vec<usize> = (0..n).filter(|m| wl.is_live(*m)).collect();
    let mut s = samples(topo, wl, net, &live, t);
    // Refused purges were never acknowledged: nobody owes them anything.
    let accepted = t.purges - t.refused.iter().filter(|r| **r).count();
    let incomplete = accepted - s.compl.len();
    let latency = Dist::of(&mut s.lat);
    let latency_bound = Dist::of(&mut s.lat_bound);
    let completion = Dist::of(&mut s.compl);
    let completion_bound = Dist::of(&mut s.compl_bound);
    s.compl_ratio.sort_by(f64::total_cmp);
    let median_ratio = s.compl_ratio.get(s.compl_ratio.len().saturating_sub(1) / 2).copied().unwrap_or(0.0);
    let denom = (accepted * (n - wl.crashed.iter().filter(|c| **c).count())).max(1) as f64;
    let total = t.sent.total();
    Report {
        strategy: name.to_string(),
        latency_ratio_p50: ratio(latency.p50, latency_bound.p50),
        latency_ratio_p99: ratio(latency.p99, latency_bound.p99),
        completion_ratio_p50: ratio(completion.p50, completion_bound.p50),
        completion_ratio_p99: ratio(completion.p99, completion_bound.p99),
        completion_ratio_median: round3(median_ratio),
        latency,
        latency_bound,
        completion,
        completion_bound,
        incomplete_purges: incomplete,
        delivery_ratio: round3(s.applied_live as f64 / (accepted * live.len()).max(1) as f64 * 100.0) / 100.0,
        msgs_per_purge_machine: round3(total.msgs as f64 / denom),
        bytes_per_purge_machine: round3(total.bytes as f64 / denom),
        by_kind: by_kind(&t.sent, denom),
        heal_to_full_ms: heals.iter().map(|h| heal_to_full(wl, &live, t, *h)).collect(),
        events: t.events,
        sim_end_ms: t.end.as_millis_f64(),
        retransmitted: t.retransmitted,
        dropped: t.dropped,
        busiest_msgs_per_s: round3(busiest(&t.received) as f64 / window_s(wl, t)),
        busiest_acks_per_purge: round3(busiest(&t.acks_received) as f64 / accepted.max(1) as f64),
        busiest_by_kind: busiest_by_kind(t, window_s(wl, t)),
        origin_completion: None,
        invariants: s.inv,
    }
}

fn busiest(counts: &[u64]) -> u64 {
    counts.iter().copied().max().unwrap_or(0)
}

/// The kinds the machine that handled the most messages handled (the
/// first such machine).
fn busiest_by_kind(t: &Trace, secs: f64) -> Vec<KindRate> {
    let top = busiest(&t.received);
    let Some(m) = t.received.iter().position(|c| *c == top) else { return Vec::new() };
    MsgKind::ALL
        .iter()
        .zip(t.received_kinds[m])
        .filter(|(_, c)| *c > 0)
        .map(|(kind, c)| KindRate { kind: *kind, msgs_per_s: round3(c as f64 / secs) })
        .collect()
}

/// Seconds from the first purge to the end of the run.
fn window_s(wl: &Workload, t: &Trace) -> f64 {
    let first = wl.purges.first().map_or(0, |p| p.at.as_micros());
    (t.end.as_micros().saturating_sub(first) as f64 / 1e6).max(1e-6)
}

fn heal_to_full(wl: &Workload, live: &[usize], t: &Trace, heal: Duration) -> Option<f64> {
    let heal = heal.as_micros() as u64;
    let mut last = heal;
    for (p, spec) in wl.purges.iter().enumerate() {
        if spec.at.as_micros() >= heal || t.refused[p] {
            continue;
        }
        for &m in live {
            let at = t.applied_at[p * t.machines + m];
            if at == u64::MAX {
                return None;
            }
            last = last.max(at);
        }
    }
    Some((last - heal) as f64 / 1000.0)
}

/// Raw per-machine latency samples in ms, sorted, for CDF plots.
pub fn latency_samples(wl: &Workload, t: &Trace) -> Vec<f64> {
    let n = t.machines;
    let mut out = Vec::new();
    for (p, spec) in wl.purges.iter().enumerate().filter(|(p, _)| !t.refused[*p]) {
        for m in (0..n).filter(|m| wl.is_live(*m) && *m != spec.origin) {
            let at = t.applied_at[p * n + m];
            if at != u64::MAX {
                out.push(at.saturating_sub(spec.at.as_micros()) as f64 / 1000.0);
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|x| x * 1000).collect();
        let d = Dist::of(&mut v);
        assert_eq!((d.p50, d.p90, d.p99, d.p999, d.max), (500.0, 900.0, 990.0, 999.0, 1000.0));
        assert_eq!(pct(&[], 0.5), 0);
        assert_eq!(pct(&[7], 0.999), 7);
    }
}
