//! The network model: fibre latency between PoPs, jitter, loss (repaired by
//! QUIC or dropped), and partitions of a region.

use std::time::Duration;

use purgecast_core::Time;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::topology::{great_circle_km, Topology};

/// Light in fibre: about two thirds of c.
pub const FIBRE_KM_PER_S: f64 = 200_000.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    None,
    /// Uniform in [0, f x base latency).
    Fraction(f64),
    /// Uniform in [0, d).
    Fixed(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LossModel {
    /// Each message rides its own QUIC stream on a persistent connection: a
    /// lost packet is retransmitted, so loss shows up as delay.
    Quic,
    /// A lost message is gone; only anti-entropy brings the purge.
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub region: String,
    pub start: Duration,
    pub duration: Duration,
    pub dir: CutDir,
}

/// Which way a partition cuts. One-way cuts happen in real networks (an
/// asymmetric firewall rule, a broken return route) and are the hard case
/// for failure detection: the region can still talk but not hear, or the
/// reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CutDir {
    #[default]
    Both,
    /// Nothing reaches the region; what it sends gets out.
    In,
    /// Nothing leaves the region; what is sent to it arrives.
    Out,
}

impl Partition {
    pub fn heal(&self) -> Duration {
        self.start + self.duration
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetParams {
    pub inflation: f64,
    pub jitter: Jitter,
    /// One-way latency between two machines of the same PoP.
    pub intra: Duration,
    pub loss: f64,
    pub loss_model: LossModel,
    pub partitions: Vec<Partition>,
}

impl Default for NetParams {
    fn default() -> Self {
        NetParams {
            inflation: 1.5,
            jitter: Jitter::Fraction(0.05),
            intra: Duration::from_micros(200),
            loss: 0.0,
            loss_model: LossModel::Quic,
            partitions: Vec::new(),
        }
    }
}

/// A partition with its region resolved to an index.
#[derive(Debug, Clone)]
struct Cut {
    region: usize,
    start: u64,
    end: u64,
    dir: CutDir,
}

pub struct Net {
    n_pops: usize,
    /// One-way latency in microseconds without jitter, pops x pops.
    base: Vec<u64>,
    pop_region: Vec<usize>,
    cuts: Vec<Cut>,
    params: NetParams,
    rng: StdRng,
    /// Messages that needed at least one retransmission / that were dropped.
    pub retransmitted: u64,
    pub dropped: u64,
}

impl Net {
    /// Partitions naming a region absent from the topology cut nothing.
    pub fn new(topo: &Topology, params: NetParams, seed: u64) -> Net {
        let n = topo.pops.len();
        let mut base = vec![0u64; n * n];
        for a in 0..n {
            for b in 0..n {
                base[a * n + b] = if a == b {
                    params.intra.as_micros() as u64
                } else {
                    let (ca, cb) = (&topo.pops[a].city, &topo.pops[b].city);
                    let km = great_circle_km(ca.lat, ca.lon, cb.lat, cb.lon);
                    // At least the intra-PoP latency: two PoPs are never closer
                    // than two racks.
                    ((km / FIBRE_KM_PER_S * params.inflation * 1e6).round() as u64).max(params.intra.as_micros() as u64)
                };
            }
        }
        let cuts = params
            .partitions
            .iter()
            .filter_map(|p| {
                Some(Cut {
                    region: topo.region_index(&p.region)?,
                    start: p.start.as_micros() as u64,
                    end: p.heal().as_micros() as u64,
                    dir: p.dir,
                })
            })
            .collect();
        Net {
            n_pops: n,
            base,
            pop_region: topo.pops.iter().map(|p| p.region).collect(),
            cuts,
            params,
            rng: StdRng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00),
            retransmitted: 0,
            dropped: 0,
        }
    }

    pub fn params(&self) -> &NetParams {
        &self.params
    }

    /// The physical bound: one-way fibre latency, no jitter, no loss.
    pub fn base_us(&self, from_pop: usize, to_pop: usize) -> u64 {
        self.base[from_pop * self.n_pops + to_pop]
    }

    /// Is the way from PoP `from` to PoP `to` cut at `now`?
    pub fn cut(&self, now: Time, from: usize, to: usize) -> bool {
        let t = now.as_micros();
        self.cuts.iter().any(|c| {
            let (out, inside) = (self.pop_region[from] == c.region, self.pop_region[to] == c.region);
            t >= c.start
                && t < c.end
                && match c.dir {
                    CutDir::Both => out != inside,
                    CutDir::In => inside && !out,
                    CutDir::Out => out && !inside,
                }
        })
    }

    /// Transit time of one message sent at `now`, or None if it is lost for
    /// good. Crashed destinations are the driver's business.
    pub fn transit(&mut self, now: Time, from_pop: usize, to_pop: usize) -> Option<u64> {
        if self.cut(now, from_pop, to_pop) {
            self.dropped += 1;
            return None;
        }
        let base = self.base_us(from_pop, to_pop);
        let mut delay = base + self.jitter(base);
        if self.params.loss > 0.0 && self.rng.random_bool(self.params.loss.min(1.0)) {
            match self.params.loss_model {
                LossModel::Drop => {
                    self.dropped += 1;
                    return None;
                }
                LossModel::Quic => {
                    self.retransmitted += 1;
                    // Per loss: the time for a later packet's ack to come back
                    // (1 RTT) plus QUIC's loss-time threshold, 9/8 RTT with a
                    // 1 ms timer granularity (RFC 9002 6.1.2). The stream is
                    // retransmitted until it gets through; bounded for sanity.
                    let rtt = 2 * base;
                    let per_loss = rtt + (rtt * 9 / 8).max(1000);
                    delay += per_loss;
                    for _ in 0..64 {
                        if !self.rng.random_bool(self.params.loss.min(0.99)) {
                            break;
                        }
                        delay += per_loss;
                    }
                }
            }
        }
        Some(delay)
    }

    fn jitter(&mut self, base: u64) -> u64 {
        match self.params.jitter {
            Jitter::None => 0,
            Jitter::Fraction(f) if f > 0.0 => (self.rng.random::<f64>() * f * base as f64) as u64,
            Jitter::Fixed(d) if !d.is_zero() => self.rng.random_range(0..d.as_micros() as u64),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::City;

    fn line() -> Topology {
        // On the equator one degree of longitude is ~111.2 km.
        let cities = vec![City::new("a", "west", 0.0, 0.0), City::new("b", "mid", 0.0, 10.0)];
        Topology::from_cities(&cities, 2, 2).unwrap()
    }

    #[test]
    fn latency_is_distance_over_fibre_speed_times_inflation() {
        let t = line();
        let net = Net::new(&t, NetParams { jitter: Jitter::None, ..NetParams::default() }, 1);
        let km = great_circle_km(0.0, 0.0, 0.0, 10.0);
        let expect = (km / 200_000.0 * 1.5 * 1e6).round() as u64;
        assert_eq!(net.base_us(0, 1), expect);
        assert_eq!(net.base_us(0, 0), 200);
    }

    #[test]
    fn quic_loss_delays_and_drop_loss_drops() {
        let t = line();
        let quic = NetParams { jitter: Jitter::None, loss: 1.0, ..NetParams::default() };
        let mut net = Net::new(&t, quic.clone(), 1);
        let d = net.transit(Time::ZERO, 0, 1).unwrap();
        assert!(d > 3 * net.base_us(0, 1), "{d}");
        let mut net = Net::new(&t, NetParams { loss_model: LossModel::Drop, ..quic }, 1);
        assert_eq!(net.transit(Time::ZERO, 0, 1), None);
    }

    #[test]
    fn partitions_cut_only_across_the_region_and_only_while_active() {
        let t = line();
        let p = Partition {
            region: "mid".into(),
            start: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            dir: CutDir::Both,
        };
        let net = Net::new(&t, NetParams { partitions: vec![p.clone()], ..NetParams::default() }, 1);
        assert!(!net.cut(Time::from_millis(500), 0, 1));
        assert!(net.cut(Time::from_millis(1500), 0, 1));
        assert!(net.cut(Time::from_millis(1500), 1, 0));
        assert!(!net.cut(Time::from_millis(1500), 1, 1));
        assert!(!net.cut(Time::from_millis(3000), 0, 1));
        // Pop 1 is in "mid": one-way cuts block one direction only.
        let at = Time::from_millis(1500);
        for (dir, into, out_of) in [(CutDir::In, true, false), (CutDir::Out, false, true)] {
            let p = Partition { dir, ..p.clone() };
            let net = Net::new(&t, NetParams { partitions: vec![p], ..NetParams::default() }, 1);
            assert_eq!((net.cut(at, 0, 1), net.cut(at, 1, 0)), (into, out_of), "{dir:?}");
            assert!(!net.cut(at, 1, 1) && !net.cut(at, 0, 0));
        }
    }
}
