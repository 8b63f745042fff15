//! Purge to miss on a real loopback cluster, measured from the purge call
//! on a connection opened beforehand (docs/benchmarks.md, "The edge"):
//! no client process start-up in the figure, unlike
//! tests/bench/purge-to-miss.py.
//!
//! ```sh
//! cargo build --release -p purgecast-node -p purgecast-client -p purgecast-tests --all-targets
//! target/release/edgebench --nodes 16 --rounds 120
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use purgecast_client::stats::LatencySummary;
use purgecast_proto::api as pb;
use purgecast_tests::http::{self, Origin};
use purgecast_tests::{url, Cluster, Opts};

#[derive(Parser)]
#[command(about = "Purge to miss on every edge of a loopback cluster")]
struct Args {
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    #[arg(long, default_value_t = 120)]
    rounds: usize,
    /// Pause between one edge's polls, in microseconds (0: back to back).
    #[arg(long, default_value_t = 0)]
    poll_gap_us: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const HOST: &str = "bench.test";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !(1..=64).contains(&args.nodes) || !(1..=10_000).contains(&args.rounds) {
        bail!("--nodes 1-64, --rounds 1-10000");
    }
    let origin = Origin::start(&[]).await?;
    // The protocol's production defaults, as `purgecast dev` runs.
    let opts = Opts { protocol: Vec::new(), edge_origin: Some(origin.upstream()), ..Opts::default() };
    let c = Cluster::start(args.nodes, opts).await?;
    let edges: Vec<_> = c.nodes.iter().map(|n| n.edge).collect();
    let mut clients = Vec::new();
    for i in 0..args.nodes {
        clients.push(c.client(i).await?);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{} nodes, {} rounds; load {}", args.nodes, args.rounds, load.split(' ').next().unwrap_or("?"));
    let (mut last, mut first, mut call) = (Vec::new(), Vec::new(), Vec::new());
    let gap = Duration::from_micros(args.poll_gap_us);
    for r in 0..args.rounds {
        let path = format!("/obj/{}-{r}", args.seed);
        for &e in &edges {
            http::get(e, HOST, &path, &[]).await?;
            let hit = http::get(e, HOST, &path, &[]).await?;
            if !hit.is_hit() {
                bail!("{path} is not a hit on {e}: {hit:?}");
            }
        }
        let node = (r * 7 + args.seed as usize) % args.nodes;
        let t0 = Instant::now();
        let pollers: Vec<_> = edges
            .iter()
            .map(|&e| {
                let path = path.clone();
                tokio::spawn(async move {
                    while t0.elapsed() < Duration::from_secs(5) {
                        if let Ok(resp) = http::get(e, HOST, &path, &[]).await {
                            if resp.cache().contains("fwd=miss") {
                                return Some(t0.elapsed());
                            }
                        }
                        if !gap.is_zero() {
                            tokio::time::sleep(gap).await;
                        }
                    }
                    None
                })
            })
            .collect();
        clients[node].purge(vec![url(&format!("http://{HOST}{path}"))], pb::PurgeMode::Hard).await?;
        call.push(ms(t0.elapsed()));
        let mut times = Vec::new();
        for p in pollers {
            match p.await? {
                Some(t) => times.push(ms(t)),
                None => bail!("round {r}: an edge still hits {path} after 5 s"),
            }
        }
        last.push(times.iter().copied().fold(0.0, f64::max));
        first.push(times.iter().copied().fold(f64::MAX, f64::min));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, samples) in [
        ("purge -> miss on every edge", &last),
        ("purge -> miss on the first edge", &first),
        ("purge call (accepted)", &call),
    ] {
        if let Some(s) = LatencySummary::from_samples(samples) {
            println!(
                "{name:<32} P50 {:7.2} ms  P90 {:7.2} ms  P99 {:7.2} ms  max {:7.2} ms",
                s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
