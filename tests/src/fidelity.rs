//! Fidelity: a real cluster on loopback whose QUIC sockets delay every
//! datagram by purgesim's one-way latency for the destination, against
//! purgesim itself on the same topology, purges and origins. The latency
//! matrix and the workload come from the purgesim library, not a copy of
//! its math, so both sides see exactly the same world.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use purgecast_core::Config;
use purgesim::engines::Engines;
use purgesim::metrics::{report, Dist, Report};
use purgesim::net::{Jitter, Net, NetParams};
use purgesim::topology::Topology;
use purgesim::workload::{Workload, WorkloadParams};
use purgesim::world::{run, RunParams};
use serde_json::{json, Value};

use purgecast_client::Client;
use purgecast_proto::api::PurgeMode;

use crate::{metrics, url, Cluster, Opts, POLL};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// One machine per PoP: purgesim picks `nodes` cities spread over its list.
    pub nodes: usize,
    pub purges: usize,
    /// Purges per second.
    pub rate: f64,
    pub seed: u64,
}

/// The world both sides run in.
pub struct Plan {
    pub params: Params,
    pub topo: Topology,
    pub workload: Workload,
    /// purgesim's one-way latency in microseconds, machine-major.
    pub one_way_us: Vec<u64>,
}

/// One purge's outcome, as its origin's status reports it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub origin: usize,
    /// Accept -> the origin holds every member's applied-ack.
    pub completion_us: u64,
    /// Per other member: accept -> its ack reached the origin.
    pub acks_us: Vec<(usize, u64)>,
}

impl Plan {
    pub fn new(params: Params) -> Result<Plan> {
        if params.nodes < 2 || params.purges == 0 || params.rate.is_nan() || params.rate <= 0.0 {
            bail!("need at least 2 nodes, 1 purge and a positive rate");
        }
        let topo = Topology::world(params.nodes, 1)?;
        let wp = WorkloadParams {
            purges: params.purges,
            interval: Duration::from_secs_f64(1.0 / params.rate),
            warmup: Duration::from_secs(1),
            crashed: 0.0,
            crash_during: 0.0,
            origins: 0,
        };
        let workload = Workload::generate(topo.len(), &wp, params.seed);
        let net = Net::new(&topo, net_params(), params.seed);
        let n = topo.len();
        let one_way_us = (0..n * n).map(|k| net.base_us(topo.pop_of(k / n), topo.pop_of(k % n))).collect();
        Ok(Plan { params, topo, workload, one_way_us })
    }

    pub fn len(&self) -> usize {
        self.topo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topo.is_empty()
    }

    pub fn one_way_us(&self, from: usize, to: usize) -> u64 {
        self.one_way_us[from * self.len() + to]
    }

    /// The emulation takes whole milliseconds: at most 0.5 ms off per hop.
    pub fn delay_ms(&self, from: usize, to: usize) -> u64 {
        (self.one_way_us(from, to) + 500) / 1000
    }

    /// Shortest path `from` -> `to` in us over the emulated (whole-ms)
    /// delays, or purgesim's exact ones: whatever relays a push takes, no
    /// delivery can beat it if the delays are really applied.
    pub fn shortest_us(&self, from: usize, to: usize, emulated: bool) -> u64 {
        let n = self.len();
        let w = |a: usize, b: usize| if emulated { self.delay_ms(a, b) * 1000 } else { self.one_way_us(a, b) };
        let mut dist: Vec<u64> = (0..n).map(|j| if j == from { 0 } else { w(from, j) }).collect();
        let mut done = vec![false; n];
        for _ in 0..n {
            let Some(u) = (0..n).filter(|j| !done[*j]).min_by_key(|j| dist[*j]) else { break };
            done[u] = true;
            for v in 0..n {
                dist[v] = dist[v].min(dist[u] + w(u, v));
            }
        }
        dist[to]
    }

    /// Lower bound on an ack-based completion from `origin`: the push out
    /// and the ack back over the slowest member's shortest paths.
    pub fn completion_floor_us(&self, origin: usize, emulated: bool) -> u64 {
        (0..self.len())
            .filter(|m| *m != origin)
            .map(|m| self.shortest_us(origin, m, emulated) + self.shortest_us(m, origin, emulated))
            .max()
            .unwrap_or(0)
    }

    /// `(pop, region)` of each machine, as the simulated engines see them.
    pub fn locations(&self) -> Vec<(String, String)> {
        self.topo
            .machines
            .iter()
            .map(|m| {
                let c = &self.topo.pops[m.pop].city;
                (c.name.clone(), c.region.clone())
            })
            .collect()
    }

    /// The WAN emulation file of node `i`: sender-side delay per destination.
    pub fn rules(&self, i: usize, peers: &[std::net::SocketAddr]) -> Value {
        let rules: Vec<Value> = (0..self.len())
            .filter(|j| *j != i)
            .map(|j| json!({"dest": peers[j].to_string(), "link": {"delay_ms": self.delay_ms(i, j)}}))
            .collect();
        json!({ "rules": rules })
    }
}

/// purgesim's network with the noise off: the matrix is all there is.
pub fn net_params() -> NetParams {
    NetParams { jitter: Jitter::None, loss: 0.0, ..NetParams::default() }
}

/// Runs the real cluster; `say` gets progress lines.
pub async fn run_real(plan: &Plan, say: &dyn Fn(&str)) -> Result<Vec<Outcome>> {
    let n = plan.len();
    // Node defaults (= core `Config::default()`): the harness's fast probe
    // timeouts would take a 300 ms RTT for a dead peer.
    let opts = Opts { pops: n, protocol: Vec::new(), wan: true, locations: plan.locations(), ..Opts::default() };
    say(&format!("starting {n} nodes"));
    let mut c = Cluster::start(n, opts).await?;
    let peers: Vec<_> = c.nodes.iter().map(|x| x.peer).collect();
    for i in 0..n {
        std::fs::write(c.nodes[i].dir.join("wan.json"), plan.rules(i, &peers).to_string())?;
    }
    wait_delaying(&c).await?;
    c.wait_members(n, Duration::from_secs(60)).await?;
    let mut clients: Vec<Client> = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(c.client(i).await?);
    }
    // One purge from every node first: the simulator assumes warm QUIC
    // connections, so the handshakes must not land in the measurement.
    say("warm-up: one purge from every node");
    for (i, cl) in clients.iter().enumerate() {
        let id = purge(cl, &format!("https://fidelity.test/warm/{i}")).await?;
        cl.wait_complete(&id, Duration::from_secs(30), POLL).await?;
    }
    say(&format!("{} purges at {}/s", plan.params.purges, plan.params.rate));
    let first = plan.workload.purges.first().map_or(0, |s| s.at.as_micros());
    let start = Instant::now();
    let mut issued = Vec::with_capacity(plan.workload.purges.len());
    for (k, spec) in plan.workload.purges.iter().enumerate() {
        tokio::time::sleep_until((start + Duration::from_micros(spec.at.as_micros() - first)).into()).await;
        issued.push((spec.origin, purge(&clients[spec.origin], &format!("https://fidelity.test/p/{k}")).await?));
    }
    let names: Vec<String> = c.nodes.iter().map(|x| x.name.clone()).collect();
    let mut out = Vec::with_capacity(issued.len());
    for (origin, id) in issued {
        let s = clients[origin].wait_complete(&id, Duration::from_secs(60), POLL).await?;
        let mut acks = Vec::new();
        for a in &s.applied {
            let m = names.iter().position(|x| *x == a.node).with_context(|| format!("unknown member {}", a.node))?;
            if m != origin {
                acks.push((m, (a.latency_ms * 1000.0).round() as u64));
            }
        }
        out.push(Outcome { origin, completion_us: (s.completion_ms * 1000.0).round() as u64, acks_us: acks });
    }
    Ok(out)
}

async fn purge(c: &Client, u: &str) -> Result<String> {
    Ok(c.purge(vec![url(u)], PurgeMode::Hard).await?.id)
}

/// Waits until every node has delayed a datagram: the rules are loaded.
async fn wait_delaying(c: &Cluster) -> Result<()> {
    for node in &c.nodes {
        let mut ok = false;
        // SWIM probes every second, so a loaded file shows within a few.
        for _ in 0..100 {
            if metrics::value(&metrics::scrape(node.metrics).await?, "purgecast_wan_delayed_total") > 0.0 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ok {
            bail!("{} never applied its WAN emulation rules", node.name);
        }
    }
    Ok(())
}

/// Runs purgesim on the plan: the shipped strategy, `Config::default()`.
/// Returns the origins' ack-based outcomes and purgesim's own report.
pub fn run_sim(plan: &Plan) -> Result<(Vec<Outcome>, Report)> {
    let wl = &plan.workload;
    let span = wl.purges.last().map_or(Duration::ZERO, |s| Duration::from_micros(s.at.as_micros()));
    let rp = RunParams {
        net: net_params(),
        // Long enough for the last acks to cross the world.
        tail: Duration::from_secs(2),
        max_time: span + Duration::from_secs(60),
        seed: plan.params.seed,
        ..RunParams::default()
    };
    let mut engines = Engines::new(&plan.topo, wl, &Config::default(), rp.seed);
    let trace = run(&plan.topo, wl, &rp, &mut engines);
    let net = Net::new(&plan.topo, net_params(), rp.seed);
    let rep = report("topology", &plan.topo, wl, &net, &[], &trace);
    let ids: Vec<_> = plan.topo.machines.iter().map(|m| m.id).collect();
    let mut out = Vec::with_capacity(wl.purges.len());
    for (k, spec) in wl.purges.iter().enumerate() {
        let st = engines.purge_id(k).and_then(|id| engines.engine(spec.origin).status(id));
        let Some(completed) = st.as_ref().and_then(|s| s.completed) else {
            bail!("simulated purge {k} never completed at its origin");
        };
        let acks = st
            .iter()
            .flat_map(|s| s.applied.iter())
            .filter_map(|(id, d)| Some((ids.iter().position(|x| x == id)?, d.as_micros() as u64)))
            .filter(|(m, _)| *m != spec.origin)
            .collect();
        out.push(Outcome { origin: spec.origin, completion_us: completed.as_micros() as u64, acks_us: acks });
    }
    Ok((out, rep))
}

/// Percentiles of one side: completion, per-member ack latency, and
/// delivery estimated as ack latency minus the direct return latency.
pub struct Summary {
    pub completion: Dist,
    pub ack: Dist,
    pub delivery: Dist,
    /// Purges whose completion beat [`Plan::completion_floor_us`].
    pub below_floor: usize,
}

/// `emulated`: the outcomes are the real cluster's, whose delays are whole ms.
pub fn summarize(plan: &Plan, outs: &[Outcome], emulated: bool) -> Summary {
    let mut compl: Vec<u64> = outs.iter().map(|o| o.completion_us).collect();
    let mut ack: Vec<u64> = outs.iter().flat_map(|o| o.acks_us.iter().map(|a| a.1)).collect();
    let mut delivery: Vec<u64> = outs
        .iter()
        .flat_map(|o| o.acks_us.iter().map(move |(m, us)| us.saturating_sub(plan.one_way_us(*m, o.origin))))
        .collect();
    let below_floor = outs.iter().filter(|o| o.completion_us < plan.completion_floor_us(o.origin, emulated)).count();
    Summary {
        completion: Dist::of(&mut compl),
        ack: Dist::of(&mut ack),
        delivery: Dist::of(&mut delivery),
        below_floor,
    }
}

fn dist_json(d: &Dist) -> Value {
    json!({"n": d.n, "p50": d.p50, "p90": d.p90, "p99": d.p99, "max": d.max})
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// Everything a run found, machine-readable.
pub fn to_json(plan: &Plan, real: &Summary, sim: &Summary, rep: &Report) -> Value {
    let p = &plan.params;
    json!({
        "nodes": p.nodes, "purges": p.purges, "rate": p.rate, "seed": p.seed,
        "pops": plan.locations().into_iter().map(|(c, r)| format!("{c} ({r})")).collect::<Vec<_>>(),
        "real": {"completion": dist_json(&real.completion), "ack": dist_json(&real.ack),
                 "delivery": dist_json(&real.delivery), "below_floor": real.below_floor},
        "sim": {"completion": dist_json(&sim.completion), "ack": dist_json(&sim.ack),
                "delivery": dist_json(&sim.delivery), "below_floor": sim.below_floor,
                "delivery_applied": dist_json(&rep.latency), "completion_applied": dist_json(&rep.completion),
                "completion_bound": dist_json(&rep.completion_bound)},
        "ratio": {"completion_p50": ratio(real.completion.p50, sim.completion.p50),
                  "completion_p99": ratio(real.completion.p99, sim.completion.p99),
                  "delivery_p50": ratio(real.delivery.p50, sim.delivery.p50),
                  "delivery_p99": ratio(real.delivery.p99, sim.delivery.p99)},
    })
}

/// The side-by-side table.
pub fn table(real: &Summary, sim: &Summary, rep: &Report) -> String {
    let mut s = format!(
        "{:<40} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6}\n",
        "ms", "real P50", "sim P50", "ratio", "real P99", "sim P99", "ratio"
    );
    for (name, r, m) in [
        ("completion (origin has every ack)", &real.completion, &sim.completion),
        ("ack latency per member", &real.ack, &sim.ack),
        ("delivery (ack - direct return)", &real.delivery, &sim.delivery),
    ] {
        s += &format!(
            "{name:<40} {:>9.1} {:>9.1} {:>6.2} {:>9.1} {:>9.1} {:>6.2}\n",
            r.p50,
            m.p50,
            ratio(r.p50, m.p50),
            r.p99,
            m.p99,
            ratio(r.p99, m.p99)
        );
    }
    for (name, d) in [
        ("sim only: delivery (apply time)", &rep.latency),
        ("sim only: completion (last apply)", &rep.completion),
        ("fibre bound of completion (one way)", &rep.completion_bound),
    ] {
        s += &format!("{name:<40} {:>9} {:>9.1} {:>6} {:>9} {:>9.1}\n", "-", d.p50, "", "-", d.p99);
    }
    s
}
